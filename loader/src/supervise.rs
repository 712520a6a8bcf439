//! A running jail and its supervision: waiting for the app, relaying signals, stopping it.
//! Every signal to a jail goes through a pidfd ([`JailHandle`]): a pid stays in a table for a
//! moment after its process is reaped, and may name another process by then.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use elastos_handoff::Report;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cgroup::{AppCgroup, LimitMechanism};
use crate::error::LaunchError;
use crate::identity::HostIdentity;
use crate::spawn::parse_report;
use crate::sys;

/// Signals the launcher forwards to the app.
const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// What the loader reported once the jail was complete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JailFacts {
    /// The host pid of the app (pid 1 of its namespace).
    pub pid: i32,
    /// The host identity the app runs as.
    pub identity: HostIdentity,
    /// The Landlock ABI enforced (0: none).
    pub landlock_abi: u32,
    /// Whether every Landlock restriction asked for is enforced.
    pub landlock_fully_enforced: bool,
    /// How memory and thread limits are enforced.
    pub limits: LimitMechanism,
}

/// A pidfd of a jail's init, cheap to clone: signals sent through it reach that process or
/// nobody (ESRCH once it has exited), never a process that got its pid later. What the broker's
/// supervisors and the daemon keep to stop apps, and what crosses the control socket with an
/// attach request.
#[derive(Clone)]
pub struct JailHandle(Arc<OwnedFd>);

impl fmt::Debug for JailHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JailHandle(pidfd {})", self.0.as_raw_fd())
    }
}

impl JailHandle {
    /// A handle from a pidfd (from CLONE_PIDFD, or received over the control socket).
    pub fn new(pidfd: OwnedFd) -> JailHandle {
        JailHandle(Arc::new(pidfd))
    }

    /// Sends `signal` to the jail's init, which relays SIGINT, SIGTERM and SIGHUP to the app.
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        sys::pidfd_send_signal(self.0.as_fd(), signal as i32)
    }

    /// Asks the jail to stop: SIGTERM to its init, which relays it to the app. A jail that has
    /// ended already is not an error.
    pub fn stop(&self) {
        let _ = self.signal(Signal::SIGTERM);
    }

    /// Kills the jail at once: SIGKILL to its init (the app dies with its pid namespace).
    pub fn kill(&self) {
        let _ = self.signal(Signal::SIGKILL);
    }
}

impl AsFd for JailHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A running jail. Dropping it kills the app.
#[derive(Debug)]
pub struct RunningJail {
    facts: JailFacts,
    handle: JailHandle,
    cgroup: AppCgroup,
    reaped: bool,
    /// The loader's report pipe; after `Ready`, init reports how the app ended.
    reports: Option<BufReader<File>>,
    // Declared last: dropped after the app is killed and reaped.
    signals: BlockedSignals,
}

/// SIGINT, SIGTERM, SIGHUP and SIGCHLD blocked in this thread (so none is lost between clone and
/// `wait`); unblocked on drop. A multi-threaded supervisor (the embedded broker) takes this
/// before starting its other threads, which inherit the mask, so that these signals reach only
/// [`RunningJail::wait`].
#[derive(Debug)]
pub struct BlockedSignals(SigSet);

impl BlockedSignals {
    /// Blocks the supervisor's signals in the calling thread.
    pub fn block() -> Result<BlockedSignals, LaunchError> {
        let mut set = SigSet::empty();
        for signal in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
            set.add(*signal);
        }
        set.thread_block().map_err(LaunchError::Signals)?;
        Ok(BlockedSignals(set))
    }
}

impl BlockedSignals {
    /// Waits for the next of the blocked signals (for a supervisor that has no jail to wait for,
    /// such as the broker daemon waiting for SIGTERM).
    pub fn next(&self) -> Result<Signal, LaunchError> {
        self.0.wait().map_err(LaunchError::Signals)
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = self.0.thread_unblock();
    }
}

/// What [`RunningJail::wait_until_readable`] saw first.
#[derive(Debug)]
pub enum FirstEvent {
    /// The app ended.
    Ended(AppExit),
    /// The fd has data; the app runs on.
    Readable(Box<RunningJail>),
}

/// How the app ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppExit {
    /// exit(code).
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl AppExit {
    /// The shell convention: the code, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            AppExit::Exited(code) => code,
            AppExit::Signaled(signal) => 128 + signal,
        }
    }
}

impl RunningJail {
    /// A jail whose init (`facts.pid`, `handle`) runs; its entry does not yet.
    pub(crate) fn new(
        facts: JailFacts,
        handle: JailHandle,
        cgroup: AppCgroup,
        signals: BlockedSignals,
    ) -> RunningJail {
        RunningJail {
            facts,
            handle,
            cgroup,
            reaped: false,
            reports: None,
            signals,
        }
    }

    /// The app's entry runs: what the loader reported, and its report pipe, on which init says
    /// how the app ended.
    pub(crate) fn started(&mut self, landlock_abi: u32, fully: bool, reports: BufReader<File>) {
        self.facts.landlock_abi = landlock_abi;
        self.facts.landlock_fully_enforced = fully;
        self.reports = Some(reports);
    }

    pub(crate) fn cgroup(&self) -> &AppCgroup {
        &self.cgroup
    }

    /// Facts about the running jail.
    pub fn facts(&self) -> &JailFacts {
        &self.facts
    }

    /// A handle that signals this jail through its pidfd, valid after the jail is reaped (it
    /// then reaches nobody).
    pub fn handle(&self) -> JailHandle {
        self.handle.clone()
    }

    /// Waits for the app to end, forwarding SIGINT, SIGTERM and SIGHUP to the jail's init, which
    /// relays them to the app (see `init`). For the thread that owns the process's signals (see
    /// [`BlockedSignals`]).
    pub fn wait(mut self) -> Result<AppExit, LaunchError> {
        let init = Pid::from_raw(self.facts.pid);
        let waiting_for = self.signals.0;
        let init_exit = loop {
            if let Some(exit) = exit_of(waitpid(init, Some(WaitPidFlag::WNOHANG)))? {
                break exit;
            }
            relay(
                &self.handle,
                waiting_for.wait().map_err(LaunchError::Signals)?,
            );
        };
        Ok(self.ended(init_exit))
    }

    /// Like [`RunningJail::wait`], but returns the still running jail as soon as `fd` has data to
    /// read: for a supervisor that acts only once the app speaks on its IPC socket (`elastos
    /// run` starts its embedded broker then). EOF on `fd` (the app closed it) is not data; the
    /// wait then goes on for the app's end.
    pub fn wait_until_readable(self, fd: BorrowedFd<'_>) -> Result<FirstEvent, LaunchError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        use nix::sys::socket::{recv, MsgFlags};
        let init = Pid::from_raw(self.facts.pid);
        let signals = SignalFd::with_flags(&self.signals.0, SfdFlags::SFD_CLOEXEC)
            .map_err(LaunchError::Signals)?;
        loop {
            if let Some(exit) = exit_of(waitpid(init, Some(WaitPidFlag::WNOHANG)))? {
                let mut jail = self;
                return Ok(FirstEvent::Ended(jail.ended(exit)));
            }
            let mut ready = [
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(fd, PollFlags::POLLIN),
            ];
            match poll(&mut ready, PollTimeout::NONE) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(LaunchError::Signals(e)),
            }
            let has = |i: usize, flags: PollFlags| {
                ready[i].revents().is_some_and(|r| r.intersects(flags))
            };
            let fd_ready = has(
                1,
                PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR,
            );
            let signal_ready = has(0, PollFlags::POLLIN);
            if fd_ready {
                let mut byte = [0u8; 1];
                let peeked = recv(
                    fd.as_raw_fd(),
                    &mut byte,
                    MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
                );
                if matches!(peeked, Ok(n) if n > 0) {
                    return Ok(FirstEvent::Readable(Box::new(self)));
                }
                // EOF or an error: nothing will ever be read; wait for the end alone.
                drop(signals);
                return self.wait().map(FirstEvent::Ended);
            }
            if signal_ready {
                let info = signals.read_signal().map_err(LaunchError::Signals)?;
                if let Some(signal) = info.and_then(|i| Signal::try_from(i.ssi_signo as i32).ok()) {
                    relay(&self.handle, signal);
                }
            }
        }
    }

    /// Waits for the app to end without handling signals: for supervisor threads of a
    /// multi-threaded process (the broker's activated providers). Stop the app through its
    /// [`RunningJail::handle`].
    pub fn wait_blocking(mut self) -> Result<AppExit, LaunchError> {
        let init = Pid::from_raw(self.facts.pid);
        let init_exit = loop {
            match exit_of(waitpid(init, None)) {
                Ok(Some(exit)) => break exit,
                Ok(None) | Err(LaunchError::Wait(nix::Error::EINTR)) => continue,
                Err(e) => return Err(e),
            }
        };
        Ok(self.ended(init_exit))
    }

    /// After init was reaped: init's last report says how the app ended; without it (init was
    /// killed), init's own status.
    fn ended(&mut self, init_exit: AppExit) -> AppExit {
        self.reaped = true;
        let mut rest = String::new();
        if let Some(mut reports) = self.reports.take() {
            let _ = reports.read_to_string(&mut rest);
        }
        rest.lines()
            .rev()
            .find_map(|line| match parse_report(line) {
                Ok(Report::Exited { code }) => Some(AppExit::Exited(code)),
                Ok(Report::Killed { signal }) => Some(AppExit::Signaled(signal)),
                _ => None,
            })
            .unwrap_or(init_exit)
    }
}

/// A blocked signal the supervisor received: SIGCHLD only wakes it; the others go to the jail's
/// init, which relays them to the app.
fn relay(init: &JailHandle, signal: Signal) {
    if signal != Signal::SIGCHLD {
        let _ = init.signal(signal);
    }
}

fn exit_of(status: nix::Result<WaitStatus>) -> Result<Option<AppExit>, LaunchError> {
    match status.map_err(LaunchError::Wait)? {
        WaitStatus::Exited(_, code) => Ok(Some(AppExit::Exited(code))),
        WaitStatus::Signaled(_, signal, _) => Ok(Some(AppExit::Signaled(signal as i32))),
        _ => Ok(None),
    }
}

impl Drop for RunningJail {
    fn drop(&mut self) {
        if !self.reaped {
            self.handle.kill();
            let _ = waitpid(Pid::from_raw(self.facts.pid), None);
        }
    }
}
