//! `elastos-loader`: exec'd by the launcher inside the new namespaces; builds the jail around
//! itself (see `elastos_loader::jail`) and execs the app's entry. Not meant to be run by hand.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};

use elastos_loader::handoff::{fds, LoaderInput, Report};
use elastos_loader::jail::{self, JailError, Step};
use elastos_loader::sys;

fn main() {
    // The launcher put the report pipe's write end here; close-on-exec, so a successful exec of
    // the entry reaches the launcher as EOF.
    let mut report = sys::take_inherited_fd(fds::REPORT, true);
    let report_line = match run(&mut report) {
        Err(e) => Report::Failed {
            step: e.step.name().into(),
            message: e.what.clone(),
            errno: e.source.raw_os_error(),
        },
        Ok((entry, exec_error)) => Report::ExecFailed {
            entry,
            errno: exec_error.raw_os_error().unwrap_or(libc::EIO),
        },
    };
    send(&mut report, &report_line);
    std::process::exit(125);
}

fn send(report: &mut File, message: &Report) {
    let mut line = serde_json::to_vec(message).expect("reports serialize");
    line.push(b'\n');
    // If the launcher is gone there is nobody to tell; the loader exits right after anyway.
    let _ = report.write_all(&line);
}

/// Builds the jail and execs the entry; returns the entry and the exec error if exec fails.
fn run(report: &mut File) -> Result<(std::path::PathBuf, std::io::Error), JailError> {
    let input = read_input()?;
    jail::build_jail(&input)?;
    let dropped = jail::drop_privileges()?;
    let waive = input.allow_without_kernel_sandbox;
    let landlock = jail::enforce_landlock(&input.plan, &dropped, waive)?;
    jail::enter_home()?;
    send(
        report,
        &Report::Ready {
            landlock_abi: landlock.abi,
            landlock_fully_enforced: landlock.fully,
        },
    );
    let seccomp = jail::install_seccomp(&input.plan, &landlock, waive)?;
    let error = jail::exec_entry(&input.plan, seccomp);
    Ok((input.plan.entry, error))
}

fn read_input() -> Result<LoaderInput, JailError> {
    let fail = |what: &str, source: std::io::Error| JailError {
        step: Step::ReadInput,
        what: what.into(),
        source,
    };
    let mut bytes = Vec::new();
    sys::take_inherited_fd(fds::INPUT, false)
        .read_to_end(&mut bytes)
        .map_err(|e| fail("reading the plan", e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| fail("decoding the plan", std::io::Error::other(e.to_string())))
}
