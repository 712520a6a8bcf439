//! The jail's init: after the shared jail steps the loader forks; the child becomes the app and
//! the loader stays behind as pid 1 of the jail's pid namespace.
//!
//! Why not exec the app as pid 1: the kernel drops every signal sent to a pid namespace's init
//! that it has no handler for, from inside the namespace too, so `raise(SIGABRT)` and `abort()`
//! would not end the app, and SIGTERM from the launcher would be ignored. As pid 2 the app gets
//! the ordinary signal semantics, and init relays SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and
//! SIGUSR2 from the launcher to it and reports how it ended.

use alloc::string::String;

use linux_raw_sys::general as k;

use crate::jail::{self, JailError, Step};
use crate::sys::{self, ChildEnd, SignalSet};
use elastos_handoff::{fds, LoaderInput, Report};

/// Signals init relays to the app.
const RELAYED: [u32; 6] = [
    k::SIGINT,
    k::SIGTERM,
    k::SIGHUP,
    k::SIGQUIT,
    k::SIGUSR1,
    k::SIGUSR2,
];

/// Writes one report line; if the reader is gone there is nobody left to tell.
pub fn send(to: i32, report: &Report) {
    let _ = sys::write_all(to, report.to_line().as_bytes());
}

/// The report for a failed jail step.
pub fn failed(error: &JailError) -> Report {
    Report::Failed {
        step: error.step.name().into(),
        message: error.what.clone(),
        errno: error.errno.map(|e| e.0),
    }
}

/// Forks the app and supervises it; returns init's exit code. `report` goes to the launcher.
pub fn run(input: &LoaderInput, report: i32) -> i32 {
    let mut signals = [0u32; RELAYED.len() + 1];
    signals[..RELAYED.len()].copy_from_slice(&RELAYED);
    signals[RELAYED.len()] = k::SIGCHLD;
    let signals = SignalSet::of(&signals);
    // Blocked before fork so none is lost; blocked signals reach init even without handlers.
    let forked = sys::mask_signals(signals, true)
        .and_then(|()| sys::pipe())
        .and_then(|pipe| Ok((pipe, sys::fork()?)));
    let ((status_read, status_write), app) = match forked {
        Err(errno) => {
            send(
                report,
                &failed(&JailError {
                    step: Step::Fork,
                    what: "forking the app".into(),
                    errno: Some(errno),
                }),
            );
            return 125;
        }
        Ok(forked) => forked,
    };
    let Some(app) = app else {
        sys::close(report);
        sys::close(status_read);
        let _ = sys::mask_signals(signals, false);
        let line = match start_app(input, status_write, AppUser::New) {
            Err(e) => failed(&e),
            Ok(exec_error) => Report::ExecFailed {
                entry: String::from_utf8_lossy(&input.entry).into_owned(),
                errno: exec_error.0,
            },
        };
        send(status_write, &line);
        return 125;
    };
    sys::close(status_write);
    // Init reads nothing of the app's: its stdin and IPC socket close here (the launcher then
    // sees the app close them itself). Its stdout and stderr stay open in init until init exits:
    // the launcher relaying them then sees their EOF together with init's end, and wakes once
    // when the app ends instead of up to three times (each wake-up of a launcher competing for a
    // loaded CPU delays the end it waits for).
    sys::close(0);
    sys::close(fds::IPC);
    let _ = jail::drop_privileges();
    let _ = sys::prctl(linux_raw_sys::prctl::PR_SET_DUMPABLE, 0);

    // EOF: the app exec'd its entry (close-on-exec) or exited. Its last line says which: `ready`
    // only if nothing failed after it (an exec failure comes after `ready`).
    let lines = sys::read_to_end(status_read).unwrap_or_default();
    sys::close(status_read);
    let lines = String::from_utf8_lossy(&lines);
    if let Some(last) = lines.lines().last() {
        let _ = sys::write_all(report, last.as_bytes());
        let _ = sys::write_all(report, b"\n");
    }
    loop {
        match sys::try_wait(app) {
            Ok(Some(ChildEnd::Exited(code))) => {
                send(report, &Report::Exited { code });
                return code;
            }
            Ok(Some(ChildEnd::Killed(signal))) => {
                send(report, &Report::Killed { signal });
                return 128 + signal;
            }
            Ok(None) => {}
            Err(_) => return 125,
        }
        match sys::wait_signal(signals) {
            Ok(k::SIGCHLD) | Err(_) => {}
            Ok(signal) => sys::kill(app, signal),
        }
    }
}

/// The app leads a session of its own whose controlling terminal is its stdio's terminal, if it
/// has one: the pseudo-terminal the launcher made for it (it never gets the user's own, see the
/// launcher's `stdio`). The terminal's signals (Ctrl-C, Ctrl-\) then reach the app's process
/// group and not init, which would relay them a second time; and that group is orphaned (its
/// parent, init, is in another session), so the kernel ignores Ctrl-Z, which would stop the app
/// where no shell can continue it. Without a terminal the session is merely the app's own.
fn take_terminal() {
    // The app (pid 2) is not a process group leader, so setsid cannot fail.
    if sys::setsid().is_err() {
        return;
    }
    for fd in 0..=2 {
        if sys::take_controlling_terminal(fd).is_ok() {
            return;
        }
    }
}

/// A process the runtime adds to a running jail ([`crate::Mode::Join`]): once the launcher has
/// moved it into the jail's cgroups (EOF on the input pipe), the app's own steps, in the app's
/// user namespace, then exec. Its reports go straight to `report` (close-on-exec: EOF once the
/// entry runs). Returns only on failure (125).
pub fn run_joined(input: &LoaderInput, report: i32) -> i32 {
    let line = match jail::join_cgroup(&input.cgroup_tasks)
        .and_then(|()| start_app(input, report, AppUser::Joined))
    {
        Err(e) => failed(&e),
        Ok(exec_error) => Report::ExecFailed {
            entry: String::from_utf8_lossy(&input.entry).into_owned(),
            errno: exec_error.0,
        },
    };
    send(report, &line);
    125
}

/// Where the app's process gets its user namespace.
#[derive(Clone, Copy)]
enum AppUser {
    /// A new one, nested in the jail's (the jail's app).
    New,
    /// The running app's, at [`fds::APP_USER_NAMESPACE`] (a process added to its jail).
    Joined,
}

/// The app's side: its own steps, then exec. Returns only on failure, with exec's errno.
fn start_app(input: &LoaderInput, status: i32, user: AppUser) -> Result<sys::Errno, JailError> {
    take_terminal();
    jail::apply_rlimits(input)?;
    match user {
        AppUser::New => jail::enter_app_user_namespace(input)?,
        AppUser::Joined => jail::join_app_user_namespace(fds::APP_USER_NAMESPACE)?,
    }
    let dropped = jail::drop_privileges()?;
    let landlock = jail::enforce_landlock(input, &dropped)?;
    jail::enter_home(input)?;
    // If init dies, so does the app (the pid namespace would go anyway; this is immediate). A
    // joined process's parent is the runtime's `exec`, which may leave before it (`--detach`):
    // it ends with the jail's pid namespace instead.
    if let AppUser::New = user {
        sys::prctl(linux_raw_sys::prctl::PR_SET_PDEATHSIG, k::SIGKILL as usize).map_err(
            |errno| JailError {
                step: Step::Exec,
                what: "PR_SET_PDEATHSIG".into(),
                errno: Some(errno),
            },
        )?;
    }
    send(
        status,
        &Report::Ready {
            landlock_abi: landlock.abi,
            landlock_fully_enforced: landlock.fully,
        },
    );
    let seccomp = jail::install_seccomp(input, &landlock)?;
    Ok(jail::exec_entry(input, seccomp))
}
