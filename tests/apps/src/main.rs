//! `elastos-probe`: the test app for elastos's escape suite and positive tests.
//!
//! It is the hostile app (escape probes: every way out of the jail we know of, each reporting
//! the kernel's answer as one JSON line) and the ordinary app (benign modes: threads, files,
//! stdio, exit codes) in one binary, so one bundle serves both suites.
//!
//! ```text
//! elastos-probe list                 probe names, one per line
//! elastos-probe run NAME [KEY=VAL..] one probe: {"probe":..,"ret":..,"errno":..,"detail":..}
//! elastos-probe all [KEY=VAL..]      every probe, one line each
//! elastos-probe MODE [ARGS..]        a benign mode (see modes.rs)
//! ```
//!
//! Probes are harmless even when nothing confines them: a harness also runs them unjailed to
//! show that the jail, not the kernel's own argument checks, gave the answer. Kernel calls use
//! invalid arguments, created processes exit at once, signals are signal 0, file probes touch
//! only canaries and files they create and remove themselves.
//!
//! This crate is a test fixture: it makes raw system calls on purpose, hence `unsafe`, allowed
//! only in the modules that make them.

#![deny(unsafe_code)]

#[cfg(not(target_arch = "x86_64"))]
compile_error!("elastos-probe makes x86_64 system calls by number (vfork, iopl, modify_ldt, ...)");

// The probes and the benign modes make raw system calls on purpose; each block says why it is
// harmless.
#[allow(unsafe_code)]
mod counters;
#[allow(unsafe_code)]
mod modes;
#[allow(unsafe_code)]
mod probes;
mod report;

use report::ProbeArgs;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match dispatch(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("elastos-probe: {message}");
            1
        }
    };
    std::process::exit(code);
}

fn dispatch(args: &[String]) -> modes::ModeResult {
    let Some((mode, rest)) = args.split_first() else {
        return Err(
            "missing mode; try `elastos-probe list`, `run NAME`, `all` or a benign mode".to_owned(),
        );
    };
    match mode.as_str() {
        "list" => {
            for probe in probes::PROBES {
                println!("{}", probe.name);
            }
            Ok(0)
        }
        "run" => {
            let (name, words) = rest.split_first().ok_or("missing probe name after `run`")?;
            let probe = probes::find(name)
                .ok_or_else(|| format!("no probe named {name:?}; see `elastos-probe list`"))?;
            let probe_args = ProbeArgs::parse(words)?;
            println!("{}", (probe.run)(&probe_args).to_json(probe.name));
            Ok(0)
        }
        "all" => {
            let probe_args = ProbeArgs::parse(rest)?;
            for probe in probes::PROBES {
                println!("{}", (probe.run)(&probe_args).to_json(probe.name));
            }
            Ok(0)
        }
        "exit" => modes::exit(rest),
        "terminal" => modes::terminal(),
        "exec-marker" => modes::exec_marker(),
        "raise" => modes::raise(rest),
        "segv" => modes::segv(),
        "threads" => modes::threads(rest),
        "mmap" => modes::mmap(),
        "home-io" => modes::home_io(),
        "tmp-io" => modes::tmp_io(),
        "home-put" => modes::home_put(rest),
        "home-get" => modes::home_get(rest),
        "home-digest" => modes::home_digest(rest),
        "home-marker" => modes::home_marker(rest),
        "time" => modes::time(),
        "random" => modes::random(),
        "stdout" => modes::stdout(rest),
        "cat" => modes::cat(),
        "read" => modes::read(rest),
        "sleep" => modes::sleep(rest),
        "ignore-term" => modes::ignore_term(rest),
        "ticker" => modes::ticker(rest),
        "env" => modes::env(),
        "fds" => modes::fds(),
        "status" => modes::status(),
        "args" => modes::args(rest),
        "thread-bomb" => modes::thread_bomb(rest),
        "mem-bomb" => modes::mem_bomb(rest),
        "spin" => modes::spin(rest),
        "fill-home" => modes::fill_home(rest),
        "hold-counters" => counters::hold_counters(),
        "counters-check" => counters::counters_check(),
        "socket-netns" => counters::socket_netns(rest),
        "stdio-host" => modes::stdio_host(),
        "tty" => modes::tty(),
        "split" => modes::split(rest),
        "close-stdout" => modes::close_stdout(),
        other => Err(format!("unknown mode {other:?}")),
    }
}
