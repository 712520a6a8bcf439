//! Adding a process to a running jail ([`exec_in_jail`], for `elastos oci exec`): created by the
//! runtime from outside the jail, never by the app (which cannot create processes at all), and
//! confined exactly as the app is: its namespaces, cgroups, rlimits, user namespace and ids, no
//! capability, no_new_privs, the plan's Landlock rules and seccomp program.
//!
//! ```text
//! runtime (host root)                      the new process
//! a pidfd of the jail's init, an fd of
//! the app's user namespace; children go
//! to the jail's pid namespace
//! spawn --------------------------------->  its fds in place; no supplementary group;
//!                                           setns(init's pidfd: user, mnt, net, ipc, uts,
//!                                           cgroup); uid/gid 0 of the jail's user namespace;
//!                                           execveat(loader, "join")
//! its pid -> the jail's cgroups
//! the plan's input, then EOF ------------>  loader: waits for EOF, rlimits, setns into the
//!                                           app's user namespace (the app's uid), capabilities
//!                                           dropped, no_new_privs, Landlock, seccomp, exec
//! reports until EOF (close-on-exec) <-----
//! ```
//!
//! Its parent is the runtime's process, not the jail's init: it stays a process of the jail's
//! pid namespace, so it ends with the jail (the kernel kills what is left in a pid namespace
//! whose init exits).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use elastos_handoff::{fds, Report};
use elastos_policy::JailPlan;

use crate::error::LaunchError;
use crate::input::loader_input;
use crate::spawn::cloexec_pipe;
use crate::spawn::{exec_outcome, parse_report};
use crate::sys;

/// A running jail, as the runtime that made it knows it.
#[derive(Debug)]
pub struct JailToJoin<'a> {
    /// A pidfd of the jail's init, which the caller has checked is that process.
    pub init: BorrowedFd<'a>,
    /// The init's pid on the host.
    pub init_pid: i32,
    /// The jail's cgroup directories (none: its limits are rlimits).
    pub cgroups: &'a [PathBuf],
}

/// Starts `plan`'s entry (the command to add: the jail's plan with its entry, argv, environment
/// and working directory replaced) in the running `jail`, with `stdio`, through the loader
/// `loader`; returns once the entry runs (the caller waits for it, or leaves it to its own
/// parent's reaper).
pub fn exec_in_jail(
    jail: &JailToJoin<'_>,
    plan: &JailPlan,
    loader: &Path,
    stdio: [Stdio; 3],
) -> Result<Child, LaunchError> {
    let join_error = |what: &str| {
        let what = what.to_owned();
        move |source| LaunchError::Join { what, source }
    };
    let app_namespace = app_user_namespace(jail.init_pid)
        .map_err(join_error("finding the app's user namespace"))?;
    let loader_file = File::open(loader).map_err(|source| LaunchError::Loader {
        path: loader.to_owned(),
        source,
    })?;
    let (input_read, input_write) = cloexec_pipe()?;
    let (report_read, report_write) = cloexec_pipe()?;
    // Moved above every fixed number (the original closed: a copy of the report pipe's write
    // end left open here would keep its EOF from ever coming), so that moving one into place
    // overwrites none of the others; the child closes fd 3 and replaces 4-6, so the init's
    // pidfd and the loader, which it uses after that, are moved too.
    let above =
        |fd: OwnedFd| sys::dup_above(fd.as_raw_fd(), sys::FIXED_FDS_END).map_err(LaunchError::Fds);
    let (input_read, report_write, app_namespace) = (
        above(input_read)?,
        above(report_write)?,
        above(app_namespace)?,
    );
    let init =
        sys::dup_above(jail.init.as_raw_fd(), sys::FIXED_FDS_END).map_err(LaunchError::Fds)?;
    let loader_file = above(loader_file.into())?;
    let [stdin, stdout, stderr] = stdio;
    let mut command = Command::new(loader);
    command.stdin(stdin).stdout(stdout).stderr(stderr);
    sys::exec_loader_in_jail(
        &mut command,
        init.as_fd(),
        loader_file.as_fd(),
        [
            (input_read.as_raw_fd(), fds::INPUT),
            (report_write.as_raw_fd(), fds::REPORT),
            (app_namespace.as_raw_fd(), fds::APP_USER_NAMESPACE),
        ],
    );
    let mut child = {
        let _children_in_jail = sys::ChildrenInPidNamespace::enter(jail.init)
            .map_err(join_error("setns into the jail's pid namespace"))?;
        command.spawn().map_err(join_error(
            "setns into the jail's namespaces, or exec of the loader",
        ))?
    };
    drop((input_read, report_write, app_namespace, loader_file, init));
    let started = (|| {
        for cgroup in jail.cgroups {
            let procs = cgroup.join("cgroup.procs");
            std::fs::write(&procs, child.id().to_string()).map_err(|source| {
                crate::cgroup::CgroupError::Io {
                    path: procs,
                    source,
                }
            })?;
        }
        let input =
            loader_input(plan, Vec::new(), Vec::new(), jail.cgroups.is_empty(), false).encode();
        let mut framed = (input.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(&input);
        // Closed after writing: EOF tells the loader that it is in the jail's cgroups.
        File::from(input_write)
            .write_all(&framed)
            .map_err(LaunchError::HandOff)?;
        let mut reports = String::new();
        File::from(report_read)
            .read_to_string(&mut reports)
            .map_err(LaunchError::HandOff)?;
        // `ready`, then `exec-failed` if the exec failed after it; or the failed step.
        let last = reports
            .lines()
            .last()
            .ok_or_else(|| LaunchError::LoaderVanished("no report".into()))?;
        match parse_report(last)? {
            Report::Ready { .. } => Ok(()),
            report => exec_outcome(report, last).map(drop),
        }
    })();
    if let Err(e) = started {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(child)
}

/// An fd of the user namespace of the jail's app: the one child of the jail's init (host pid
/// `init`), checked to be its child through the /proc directory the fd is opened from, so a pid
/// reused meanwhile is never taken for it.
fn app_user_namespace(init: i32) -> std::io::Result<OwnedFd> {
    let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))?;
    let not_running = || std::io::Error::from_raw_os_error(libc::ESRCH);
    let app: i32 = children
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(not_running)?;
    // Opened once; its files are read through this fd's /proc/self/fd link, which names this
    // process's directory even if the pid is reused meanwhile (then reading fails).
    let dir = File::open(format!("/proc/{app}"))?;
    let at = |name: &str| format!("/proc/self/fd/{}/{name}", dir.as_raw_fd());
    let stat = std::fs::read_to_string(at("stat"))?;
    // The parent pid is the second field after the command name, which ends at the last ')'.
    let parent = stat
        .rfind(')')
        .and_then(|end| stat.get(end + 2..)?.split(' ').nth(1))
        .and_then(|pid| pid.parse::<i32>().ok());
    if parent != Some(init) {
        return Err(not_running());
    }
    Ok(File::open(at("ns/user"))?.into())
}
