//! `elastos`: the command-line interface. Argument parsing, output and exit codes; the work is
//! done by the library crates (`elastos-host`, `elastos-bundle`, `elastos-policy`,
//! `elastos-loader`).

#![forbid(unsafe_code)]

mod apps_cmd;
mod broker_cmd;
mod cli;
mod cloud_cmd;
mod commands;
mod identity_cmd;
mod oci_cmd;
mod ops_cmd;
mod template;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

/// Exit codes decided in one place (podman's convention for our own failures).
pub mod exit {
    /// elastos itself failed (bad arguments, bad bundle, jail could not be built).
    pub const ELASTOS_FAILED: u8 = 125;
    /// `bundle verify`: the bundle is invalid.
    pub const INVALID: u8 = 1;
}

fn main() -> ExitCode {
    // `elastos oci` and `elastos-runc` take runc's global options (`--log`, `--log-format`,
    // `--root`), which clash with ours: they are parsed apart.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(oci_args) = oci_cmd::invocation(&args) {
        return oci_cmd::main(oci_args);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(exit::ELASTOS_FAILED),
            };
        }
    };
    elastos_host::logging::init(
        elastos_host::logging::filter(cli.log_level.as_deref(), "warn"),
        cli.log_format,
    );
    match commands::try_main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("elastos: {}", describe(&failure.error));
            ExitCode::from(failure.code)
        }
    }
}

/// The error and its causes on one line, `outer: cause: root cause` (no message of ours repeats
/// its source).
fn describe(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
