//! A running jail and its supervision: waiting for the app, relaying signals, stopping it.
//! Every signal to a jail goes through a pidfd ([`JailHandle`]): a pid stays in a table for a
//! moment after its process is reaped, and may name another process by then.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use elastos_handoff::Report;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recv, MsgFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::cgroup::{AppCgroup, LimitMechanism};
use crate::error::LaunchError;
use crate::identity::HostIdentity;
use crate::spawn::parse_report;
use crate::stdio::{CapturedOutput, Relay};
use crate::sys;

/// Signals the launcher forwards to the app.
const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Signals the supervisor takes without forwarding them: SIGCHLD (a wake-up) and SIGWINCH (the
/// launcher's terminal was resized: the app's terminal follows, which signals the app itself).
const TAKEN: [Signal; 2] = [Signal::SIGCHLD, Signal::SIGWINCH];

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
    /// The app's stdio, relayed while the supervisor waits.
    relay: Relay,
    reaped: bool,
    /// The loader's report pipe; after `Ready`, init reports how the app ended.
    reports: Option<BufReader<File>>,
    // Declared last: dropped after the app is killed and reaped.
    signals: BlockedSignals,
}

/// SIGINT, SIGTERM, SIGHUP, SIGCHLD and SIGWINCH blocked in this thread (so none is lost between
/// clone and `wait`); unblocked on drop. A multi-threaded supervisor (the embedded broker) takes
/// this before starting its other threads, which inherit the mask, so that these signals reach
/// only [`RunningJail::wait`].
#[derive(Debug)]
pub struct BlockedSignals(SigSet);

impl BlockedSignals {
    /// Blocks the supervisor's signals in the calling thread.
    pub fn block() -> Result<BlockedSignals, LaunchError> {
        let mut set = SigSet::empty();
        for signal in FORWARDED.iter().chain(&TAKEN) {
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
        loop {
            match self.0.wait().map_err(LaunchError::Signals)? {
                // Blocked for the stdio relay only; to anyone else a resize means nothing.
                Signal::SIGWINCH => {}
                signal => return Ok(signal),
            }
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = self.0.thread_unblock();
    }
}

/// How [`RunningJail::supervise`] returned.
enum Supervised {
    Ended(AppExit),
    Readable,
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
        relay: Relay,
        signals: BlockedSignals,
    ) -> RunningJail {
        RunningJail {
            facts,
            handle,
            cgroup,
            relay,
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
        self.relay.start();
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

    /// The read ends of the app's stdout and stderr, once, when it was launched with
    /// [`LaunchOptions::capture_output`](crate::LaunchOptions::capture_output).
    pub fn take_output(&mut self) -> Option<CapturedOutput> {
        self.relay.take_captured()
    }

    /// Waits for the app to end, relaying its stdio and forwarding SIGINT, SIGTERM and SIGHUP to
    /// the jail's init, which relays them to the app (see `init`). For the thread that owns the
    /// process's signals (see [`BlockedSignals`]).
    pub fn wait(mut self) -> Result<AppExit, LaunchError> {
        let signals = self.signal_fd()?;
        match self.supervise(Some(&signals), None)? {
            Supervised::Ended(exit) => Ok(exit),
            Supervised::Readable => unreachable!("no fd was watched"),
        }
    }

    /// Like [`RunningJail::wait`], but returns the still running jail as soon as `fd` has data to
    /// read: for a supervisor that acts only once the app speaks on its IPC socket (`elastos
    /// run` starts its embedded broker then). EOF on `fd` (the app closed it) is not data; the
    /// wait then goes on for the app's end.
    pub fn wait_until_readable(mut self, fd: BorrowedFd<'_>) -> Result<FirstEvent, LaunchError> {
        let signals = self.signal_fd()?;
        Ok(match self.supervise(Some(&signals), Some(fd))? {
            Supervised::Ended(exit) => FirstEvent::Ended(exit),
            Supervised::Readable => FirstEvent::Readable(Box::new(self)),
        })
    }

    /// Waits for the app to end, relaying its stdio, without handling signals: for supervisor
    /// threads of a multi-threaded process (the broker's activated providers). Stop the app
    /// through its [`RunningJail::handle`].
    pub fn wait_blocking(mut self) -> Result<AppExit, LaunchError> {
        match self.supervise(None, None)? {
            Supervised::Ended(exit) => Ok(exit),
            Supervised::Readable => unreachable!("no fd was watched"),
        }
    }

    /// The supervisor's signals (see [`BlockedSignals`]) as an fd to poll.
    fn signal_fd(&self) -> Result<SignalFd, LaunchError> {
        SignalFd::with_flags(
            &self.signals.0,
            SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
        )
        .map_err(LaunchError::Signals)
    }

    /// The supervisor's one loop, a poll(2) on: the jail's pidfd (readable once init, and with
    /// it every process of the jail, has ended), `signals` (forwarded to init; SIGWINCH resizes
    /// the app's terminal), `watched` and the stdio relay's fds. Once the app has ended, its
    /// output is drained to EOF before init is reaped (a terminating signal then cuts the drain
    /// short: a reader of the launcher's stdout that never reads must not keep it forever).
    fn supervise(
        &mut self,
        signals: Option<&SignalFd>,
        mut watched: Option<BorrowedFd<'_>>,
    ) -> Result<Supervised, LaunchError> {
        let pollfd = |fd: Option<RawFd>| libc::pollfd {
            fd: fd.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        };
        let mut app_ended = false;
        let mut fds: Vec<libc::pollfd> = Vec::new();
        while !(app_ended && self.relay.finished()) {
            fds.clear();
            fds.push(pollfd(
                (!app_ended).then(|| self.handle.as_fd().as_raw_fd()),
            ));
            fds.push(pollfd(signals.map(|s| s.as_fd().as_raw_fd())));
            fds.push(pollfd(watched.map(|w| w.as_raw_fd())));
            self.relay.poll_fds(&mut fds);
            match sys::poll(&mut fds, -1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    return Err(LaunchError::Wait(nix::Error::from_raw(
                        e.raw_os_error().unwrap_or(libc::EIO),
                    )))
                }
            }
            let ready = |i: usize| fds[i].revents != 0;
            if ready(0) {
                app_ended = true;
                self.relay.app_ended();
            }
            if ready(1) {
                let signals = signals.expect("polled only when given");
                while let Some(info) = signals.read_signal().map_err(LaunchError::Signals)? {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGCHLD) => {}
                        Ok(Signal::SIGWINCH) => self.relay.window_changed(),
                        // Nobody left to tell: stop draining the output.
                        Ok(_) if app_ended => return Ok(Supervised::Ended(self.reap()?)),
                        Ok(signal) => {
                            let _ = self.handle.signal(signal);
                        }
                        Err(_) => {}
                    }
                }
            }
            if let Some(fd) = watched.filter(|_| ready(2)) {
                let mut byte = [0u8; 1];
                let peeked = recv(
                    fd.as_raw_fd(),
                    &mut byte,
                    MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
                );
                if matches!(peeked, Ok(n) if n > 0) {
                    return Ok(Supervised::Readable);
                }
                // EOF or an error: nothing will ever be read; wait for the end alone.
                watched = None;
            }
            self.relay.advance(&fds[3..]);
        }
        Ok(Supervised::Ended(self.reap()?))
    }

    /// Reaps init, which has ended (its pidfd said so), and says how the app ended.
    fn reap(&mut self) -> Result<AppExit, LaunchError> {
        let init = Pid::from_raw(self.facts.pid);
        let init_exit = loop {
            match exit_of(waitpid(init, None)) {
                Ok(Some(exit)) => break exit,
                Ok(None) | Err(LaunchError::Wait(nix::Error::EINTR)) => {}
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
