//! The jail's init: after the shared jail steps the loader forks; the child becomes the app and
//! the loader stays behind as pid 1 of the jail's pid namespace.
//!
//! Why not exec the app as pid 1: the kernel drops every signal sent to a pid namespace's init
//! that it has no handler for, from inside the namespace too, so `raise(SIGABRT)` and `abort()`
//! would not end the app, and SIGTERM from the launcher would be ignored. As pid 2 the app gets
//! the ordinary signal semantics, and init relays SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and
//! SIGUSR2 from the launcher to it and reports how it ended.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::handoff::{LoaderInput, Report};
use crate::jail::{self, JailError, Step};
use crate::sys;

/// Signals init relays to the app.
pub const RELAYED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Writes one report line; if the reader is gone there is nobody left to tell.
pub fn send(to: &mut File, message: &Report) {
    let mut line = serde_json::to_vec(message).expect("reports serialize");
    line.push(b'\n');
    let _ = to.write_all(&line);
}

/// The report for a failed jail step.
pub fn failed(error: &JailError) -> Report {
    Report::Failed {
        step: error.step.name().into(),
        message: error.what.clone(),
        errno: error.source.raw_os_error(),
    }
}

/// Forks the app and supervises it; returns init's exit code. `report` goes to the launcher.
pub fn run(input: LoaderInput, mut report: File) -> i32 {
    let mut signals = SigSet::empty();
    for signal in RELAYED.iter().chain([&Signal::SIGCHLD]) {
        signals.add(*signal);
    }
    // Blocked before fork so none is lost; blocked signals reach init even without handlers.
    let pipe = signals
        .thread_block()
        .and_then(|()| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC))
        .map_err(std::io::Error::from)
        .and_then(|pipe| Ok((pipe, sys::fork()?)));
    let ((status_read, status_write), app) = match pipe {
        Err(source) => {
            let error = JailError {
                step: Step::Fork,
                what: "forking the app".into(),
                source,
            };
            send(&mut report, &failed(&error));
            return 125;
        }
        Ok(((read, write), app)) => ((read, write), app),
    };
    let Some(app) = app else {
        drop((report, status_read));
        let _ = signals.thread_unblock();
        let mut status = File::from(status_write);
        let line = match start_app(&input, &mut status) {
            Err(e) => failed(&e),
            Ok((entry, exec_error)) => Report::ExecFailed {
                entry,
                errno: exec_error.raw_os_error().unwrap_or(libc::EIO),
            },
        };
        send(&mut status, &line);
        std::process::exit(125);
    };
    drop((status_write, input));
    // Init needs none of the app's fds (stdio, IPC): holding them would keep pipes open.
    for fd in 0..=crate::handoff::fds::IPC {
        let _ = nix::unistd::close(fd);
    }
    let _ = jail::drop_privileges();
    let _ = sys::set_not_dumpable();

    // EOF: the app exec'd its entry (close-on-exec) or exited. Its last line says which: `Ready`
    // only if nothing failed after it (an exec failure comes after `Ready`).
    let mut lines = String::new();
    let _ = File::from(status_read).read_to_string(&mut lines);
    if let Some(last) = lines.lines().last() {
        let _ = writeln!(report, "{last}");
    }
    let app = Pid::from_raw(app);
    loop {
        match waitpid(app, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                send(&mut report, &Report::Exited { code });
                return code;
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                send(
                    &mut report,
                    &Report::Killed {
                        signal: signal as i32,
                    },
                );
                return 128 + signal as i32;
            }
            Ok(_) => {}
            Err(_) => return 125,
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(signal) => {
                let _ = kill(app, signal);
            }
        }
    }
}

/// The app's side: its own steps, then exec. Returns only on failure.
fn start_app(
    input: &LoaderInput,
    status: &mut File,
) -> Result<(PathBuf, std::io::Error), JailError> {
    jail::apply_rlimits(input)?;
    jail::enter_app_user_namespace()?;
    let dropped = jail::drop_privileges()?;
    let waive = input.allow_without_kernel_sandbox;
    let landlock = jail::enforce_landlock(&input.plan, &dropped, waive)?;
    jail::enter_home()?;
    // If init dies, so does the app (the pid namespace would go anyway; this is immediate).
    sys::set_parent_death_kill().map_err(|source| JailError {
        step: Step::Exec,
        what: "PR_SET_PDEATHSIG".into(),
        source,
    })?;
    send(
        status,
        &Report::Ready {
            landlock_abi: landlock.abi,
            landlock_fully_enforced: landlock.fully,
        },
    );
    let seccomp = jail::install_seccomp(&input.plan, &landlock, waive)?;
    Ok((
        input.plan.entry.clone(),
        jail::exec_entry(&input.plan, seccomp),
    ))
}
