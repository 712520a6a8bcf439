//! Host processes: the app must not see or reach any process outside its jail.
//!
//! Only signal 0 (an existence and permission check) is ever sent; the target is a sacrificial
//! process the harness started, or -1 ("everyone I may signal"), which must find nobody.

use crate::report::{Outcome, ProbeArgs};

fn host_pid(args: &ProbeArgs) -> Result<libc::pid_t, Outcome> {
    let pid = args.get("pid")?;
    pid.parse()
        .map_err(|_| Outcome::setup_failed(format!("pid={pid} is not a pid")))
}

/// Runs `call` on the sacrificial host process named by `pid=`.
fn on_host_pid(args: &ProbeArgs, call: impl FnOnce(libc::pid_t) -> Outcome) -> Outcome {
    match host_pid(args) {
        Ok(pid) => call(pid),
        Err(outcome) => outcome,
    }
}

pub fn kill_host_pid(args: &ProbeArgs) -> Outcome {
    on_host_pid(args, |pid| {
        // SAFETY: signal 0 delivers nothing.
        Outcome::of(
            i64::from(unsafe { libc::kill(pid, 0) }),
            format!("kill({pid}, 0)"),
        )
    })
}

pub fn kill_everyone(_: &ProbeArgs) -> Outcome {
    // Signal 0 only: -1 with a real signal would hit every process we may signal.
    // SAFETY: signal 0 delivers nothing.
    Outcome::of(i64::from(unsafe { libc::kill(-1, 0) }), "kill(-1, 0)")
}

pub fn getpriority_host_pid(args: &ProbeArgs) -> Outcome {
    on_host_pid(args, |pid| {
        // The raw call returns 20 - nice (never negative), so failure is unambiguous.
        // SAFETY: no pointers.
        let ret = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, pid) };
        Outcome::of(ret, format!("getpriority(PRIO_PROCESS, {pid})"))
    })
}

pub fn prlimit_host_pid(args: &ProbeArgs) -> Outcome {
    on_host_pid(args, |pid| {
        let mut old = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // Read-only: no new limit is passed.
        // SAFETY: `old` is a valid out-pointer.
        let ret = unsafe { libc::prlimit64(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
        Outcome::of(
            i64::from(ret),
            format!("prlimit64({pid}, RLIMIT_NOFILE, NULL, &old)"),
        )
    })
}

pub fn pidfd_open_host_pid(args: &ProbeArgs) -> Outcome {
    on_host_pid(args, |pid| {
        // SAFETY: no pointers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let outcome = Outcome::of(fd, format!("pidfd_open({pid})"));
        if fd >= 0 {
            crate::probes::close_fd(fd as i32);
        }
        outcome
    })
}
