//! Benchmark of a 64-byte request/response call through the elastos broker, side by side with
//! its floor (a raw two-hop unix socket relay) and with D-Bus (dbus-daemon), as issue #3 §6 asks.
//!
//! One binary plays every part, each in its own process: `run` (the orchestrator, started by
//! scripts/bench-broker.sh with a broker daemon and a dbus-daemon already up) starts servers and
//! clients as children (`current_exe() ROLE ...`), which talk to it by lines: a server prints
//! `ready` once it serves; a client connects, warms up, prints `ready`, waits for `go` on stdin,
//! measures, and prints one JSON result line.
//!
//! Paths, each client -> middle -> server -> middle -> client, three processes:
//! - `relay`: the floor. A thread-per-direction byte relay between a blocking client and an echo
//!   server; frames are a 4-byte length prefix and the 64-byte payload.
//! - `elastos`: the real `elastos broker` daemon; client and service use elastos-sdk on a tokio
//!   `current_thread` runtime, attached through the daemon's control socket like `elastos run`
//!   attaches a jailed app (not jailed: the jail does not change what a call costs).
//! - `dbus`: a private dbus-daemon; zbus (tokio, `current_thread`) client and server, a method
//!   call with one `ay` argument of 64 bytes answered with the same bytes.

mod client;
mod dbus;
mod elastos;
mod orchestrate;
mod placement;
mod relay;

use std::process::ExitCode;

/// Size of every request and reply payload.
pub const PAYLOAD_LEN: usize = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((role, rest)) = args.split_first() else {
        eprintln!("usage: elastos-broker-bench run [OPTIONS] (see scripts/bench-broker.sh)");
        return ExitCode::from(2);
    };
    if role != "run" {
        // Children die with the orchestrator, however it ends.
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    }
    let result = match role.as_str() {
        "run" => orchestrate::run(rest),
        "relay-server" => relay::server(rest),
        "relay" => relay::relay(rest),
        "elastos-service" => elastos::service(rest),
        "elastos-idle" => elastos::idle(rest),
        "dbus-server" => dbus::server(rest),
        "client" => client::run(rest),
        other => Err(format!("unknown role {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("elastos-broker-bench {role}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Returns `args[index]`, or an error naming what was expected there.
pub fn arg<'a>(args: &'a [String], index: usize, what: &str) -> Result<&'a str, String> {
    args.get(index)
        .map(String::as_str)
        .ok_or_else(|| format!("missing argument {}: {what}", index + 1))
}

/// Parses `args[index]` as a number.
pub fn num_arg<T: std::str::FromStr>(
    args: &[String],
    index: usize,
    what: &str,
) -> Result<T, String> {
    let text = arg(args, index, what)?;
    text.parse()
        .map_err(|_| format!("argument {} ({what}) is not a number: {text:?}", index + 1))
}

/// Tells the orchestrator this process is ready (a server serves; a client is warmed up).
pub fn say_ready() {
    println!("ready");
}

/// A current-thread tokio runtime with I/O (and, for zbus's timeouts, time) enabled.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))
}
