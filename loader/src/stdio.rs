//! The app's stdin, stdout and stderr: never the launcher's own fds.
//!
//! Handed the launcher's stdio, an app would hold host files: `elastos run app > out.txt` gave it
//! `out.txt` itself, which it could `fchmod` (a setuid program of the launching user), `flock`
//! or re-flag (`F_SETFL` on a description the user's shell shares), and the user's terminal,
//! whose foreground group and settings it could change. Instead the launcher creates what the
//! app gets ([`connect`]) and relays the bytes ([`Relay`], driven by the supervisor's poll loop
//! in `supervise`, no thread of its own):
//!
//! - a stdio fd of the launcher that is not a terminal becomes a pipe; bytes move between it and
//!   the host fd with splice(2), without passing through user space (a copy through a buffer
//!   where the host fd cannot splice, e.g. an `O_APPEND` file);
//! - where the launcher's stdio is a terminal, the app gets the slave of a new pseudo-terminal
//!   the launcher owns (its controlling terminal: the loader makes the app a session leader and
//!   takes it, see `loader/exe` `take_terminal`). The launcher puts its own terminal in raw
//!   mode while it relays (Ctrl-C then reaches the app's terminal as a byte, whose line
//!   discipline signals the app's foreground group), copies the window size on SIGWINCH, and
//!   restores its terminal's settings when the relay is dropped: on every exit path but SIGKILL.
//!
//! A service started on demand (not attached) gets an empty stdin and never a terminal: the
//! launcher's terminal belongs to the app the user started. A detached app (`elastos run -d`)
//! gets the same, and its stdout and stderr are not relayed at all: the read ends of its pipes
//! go to the supervisor ([`CapturedOutput`]), which keeps them in the app's log.

use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::termios::{self, SetArg, Termios};

use crate::error::LaunchError;
use crate::sys;

/// The most bytes one splice(2) moves (a pipe holds 64 KiB unless resized; more is not waited
/// for, splice moves what there is).
const SPLICE_CHUNK: usize = 1 << 20;

/// The capacity of the app's stdin and stdout pipes. With the default 64 KiB, 1 GiB through
/// the relay cost the kernel 2.3x the system time of 256 KiB (a wake-up of the app, the launcher
/// and the reader per 64 KiB); 1 MiB saved little more. Pipe pages count against the launching
/// user's pipe-user-pages-soft (64 MiB): 512 KiB per app leaves room for 128 running apps
/// before that user's new pipes shrink.
const BULK_PIPE_BYTES: libc::c_int = 256 * 1024;

/// The buffer of a channel that copies (terminals): a terminal line holds 4 KiB.
const COPY_BUFFER: usize = 64 * 1024;

/// How many transfers one channel makes per wake-up before the others get their turn.
const BATCH: usize = 16;

/// The launcher's stdio numbers, which are also the app's.
const STDIN: RawFd = 0;
const STDOUT: RawFd = 1;
const STDERR: RawFd = 2;

/// What one launcher stdio fd is: a terminal (relayed through the pty) or not (a pipe).
fn is_terminal(fd: RawFd) -> bool {
    sys::stdio(fd).is_terminal()
}

/// Creates the app's stdin, stdout and stderr (to be placed at its fds 0, 1 and 2) and the relay
/// that connects them to the launcher's. `attached`: the app is the one the user runs (`elastos
/// run`); otherwise a service started on demand (see the module doc). `capture` (never with
/// `attached`): the output pipes' read ends are kept in the relay for
/// [`Relay::take_captured`] instead of being relayed.
pub(crate) fn connect(attached: bool, capture: bool) -> Result<([OwnedFd; 3], Relay), LaunchError> {
    let capture = capture && !attached;
    let mut captured = Vec::new();
    let terminal_fds: Vec<RawFd> = [STDIN, STDOUT, STDERR]
        .into_iter()
        .filter(|&fd| attached && is_terminal(fd))
        .collect();
    let mut channels = Vec::new();
    let (terminal, slave_end) = match terminal_fds.first() {
        Some(&host) => {
            let (terminal, slave) = Terminal::open(host, terminal_fds.contains(&STDIN))?;
            (Some(terminal), Some(slave))
        }
        None => (None, None),
    };
    // The app's copies of the slave; the launcher's own closes at the end of this function (the
    // master reports EIO only once no slave fd is open: that is how the relay sees the app
    // gone).
    let slave = || {
        slave_end
            .as_ref()
            .expect("a slave exists with the terminal")
            .try_clone()
            .map_err(stdio_error("duplicating the terminal's slave"))
    };
    let app_stdin = match &terminal {
        Some(terminal) if terminal_fds.contains(&STDIN) => {
            channels.push(Channel::new(
                STDIN,
                Arc::clone(&terminal.master),
                Direction::ToApp,
            ));
            slave()?
        }
        _ => {
            let (read, write) = pipe(PipeEnd::Write, attached)?;
            if attached {
                channels.push(Channel::new(STDIN, Arc::new(write), Direction::ToApp));
            }
            // Not attached: the write end closes here, the app reads EOF.
            read
        }
    };
    let mut output = |fd: RawFd| match &terminal {
        Some(_) if terminal_fds.contains(&fd) => slave(),
        _ => {
            let (read, write) = pipe(PipeEnd::Read, fd == STDOUT)?;
            if capture {
                captured.push(read);
            } else {
                channels.push(Channel::new(fd, Arc::new(read), Direction::FromApp));
            }
            Ok(write)
        }
    };
    let app_stdout = output(STDOUT)?;
    let app_stderr = output(STDERR)?;
    if let Some(terminal) = &terminal {
        // What the app writes to its terminal, and the terminal's echo, go to the launcher's
        // terminal: its stdout if that is one, else its stderr, else its stdin (opened for
        // reading and writing, as terminals are).
        let shown_on = [STDOUT, STDERR, STDIN]
            .into_iter()
            .find(|fd| terminal_fds.contains(fd))
            .expect("a terminal exists only when one stdio fd is a terminal");
        channels.push(Channel::new(
            shown_on,
            Arc::clone(&terminal.master),
            Direction::FromApp,
        ));
    }
    let captured = match <[OwnedFd; 2]>::try_from(captured) {
        Ok([stdout, stderr]) => Some(CapturedOutput { stdout, stderr }),
        Err(_) => None,
    };
    Ok((
        [app_stdin, app_stdout, app_stderr],
        Relay {
            channels,
            terminal,
            captured,
        },
    ))
}

/// The read ends of a detached app's stdout and stderr pipes (non-blocking), for its supervisor
/// to keep in a log. EOF on both once every process of the jail has closed them.
#[derive(Debug)]
pub struct CapturedOutput {
    /// What the app writes to its fd 1.
    pub stdout: OwnedFd,
    /// What the app writes to its fd 2.
    pub stderr: OwnedFd,
}

fn stdio_error(what: &'static str) -> impl FnOnce(io::Error) -> LaunchError {
    move |source| LaunchError::Stdio { what, source }
}

/// Which end of a new pipe the launcher keeps.
#[derive(Clone, Copy)]
enum PipeEnd {
    Read,
    Write,
}

/// A pipe (read, write), both close-on-exec; the end the launcher keeps is non-blocking (the
/// app's end is a separate open file description and stays blocking, as stdio is expected to
/// be). A `bulk` pipe (stdin, stdout) holds [`BULK_PIPE_BYTES`].
fn pipe(ours: PipeEnd, bulk: bool) -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| LaunchError::Stdio {
        what: "creating a pipe",
        source: e.into(),
    })?;
    let kept = match ours {
        PipeEnd::Read => &read,
        PipeEnd::Write => &write,
    };
    fcntl(kept.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| {
        LaunchError::Stdio {
            what: "making the launcher's end of a pipe non-blocking",
            source: e.into(),
        }
    })?;
    if bulk {
        // Best effort: past the user's pipe-user-pages-soft the kernel refuses, and the default
        // size only costs throughput.
        let _ = fcntl(read.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(BULK_PIPE_BYTES));
    }
    Ok((read, write))
}

/// The pseudo-terminal the app gets where the launcher's stdio is a terminal.
#[derive(Debug)]
struct Terminal {
    master: Arc<OwnedFd>,
    /// The launcher's terminal whose settings and window size the app's terminal starts with.
    host: RawFd,
    /// The launcher's stdin is a terminal: it is put in raw mode while the relay runs.
    raw_input: bool,
    /// The launcher's terminal settings before raw mode, restored when the relay is dropped.
    saved: Option<Termios>,
}

impl Terminal {
    /// A new pty whose settings and window size are those of the launcher's terminal `host`;
    /// (the terminal, its slave).
    fn open(host: RawFd, raw_input: bool) -> Result<(Terminal, OwnedFd), LaunchError> {
        let (master, slave) = sys::open_pty().map_err(stdio_error("opening a pseudo-terminal"))?;
        // The app's terminal behaves like the user's: same line discipline settings (erase
        // and interrupt characters, echo, output processing) and window size.
        if let Ok(settings) = termios::tcgetattr(sys::stdio(host)) {
            termios::tcsetattr(&slave, SetArg::TCSANOW, &settings).map_err(|e| {
                LaunchError::Stdio {
                    what: "copying the terminal's settings",
                    source: e.into(),
                }
            })?;
        }
        let terminal = Terminal {
            master: Arc::new(master),
            host,
            raw_input,
            saved: None,
        };
        terminal.copy_window_size();
        Ok((terminal, slave))
    }

    /// The launcher's terminal's window size onto the app's (SIGWINCH to the app's foreground
    /// group when it changed).
    fn copy_window_size(&self) {
        if let Some(size) = sys::window_size(self.host) {
            let _ = sys::set_window_size(self.master.as_fd(), &size);
        }
    }
}

/// Whether a channel carries the app's input or its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Launcher to app: given up when the app ends (nobody reads it any more).
    ToApp,
    /// App to launcher: drained to EOF when the app ends, so no output is lost.
    FromApp,
}

/// How a channel moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// splice(2): pipe pages move, nothing is copied through the launcher.
    Splice,
    /// read(2) and write(2) through a buffer: terminals, and host fds that cannot splice.
    Copy,
}

/// What a channel waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Its source to become readable.
    Source,
    /// Its destination to become writable.
    Destination,
    /// Nothing: EOF, or an end went away.
    Done,
}

/// One direction between one host stdio fd and the app's pipe or terminal.
#[derive(Debug)]
struct Channel {
    source: RawFd,
    destination: RawFd,
    /// The host side's own non-blocking description, for a terminal (see
    /// [`sys::reopen_nonblocking`]); otherwise the host stdio fd itself is used.
    host: Option<OwnedFd>,
    /// Our end (the app's pipe's other end, or the pty master): closed when the channel ends, so
    /// that the app reads EOF on a stdin whose host side ended.
    ours: Option<Arc<OwnedFd>>,
    direction: Direction,
    mode: Mode,
    /// Copy mode: bytes read and not yet written (`buffer[pending.0..pending.1]`).
    buffer: Vec<u8>,
    pending: (usize, usize),
    wait: Wait,
}

/// What one transfer did.
enum Transfer {
    Moved,
    /// EAGAIN, on this end if the call says which (a splice does not).
    Blocked(Option<Wait>),
    End,
}

impl Channel {
    /// A channel between the host stdio fd `host` and `ours`. A terminal is copied (it cannot
    /// splice) through a description of its own; everything else is spliced.
    fn new(host: RawFd, ours: Arc<OwnedFd>, direction: Direction) -> Channel {
        let (mode, reopened) = if is_terminal(host) {
            // Without a description of our own (the terminal cannot be opened again: another
            // user's), the shared one is used as it is.
            (Mode::Copy, sys::reopen_nonblocking(host).ok())
        } else {
            (Mode::Splice, None)
        };
        let host_fd = reopened.as_ref().map_or(host, AsRawFd::as_raw_fd);
        let (source, destination) = match direction {
            Direction::ToApp => (host_fd, ours.as_raw_fd()),
            Direction::FromApp => (ours.as_raw_fd(), host_fd),
        };
        Channel {
            source,
            destination,
            host: reopened,
            ours: Some(ours),
            direction,
            mode,
            buffer: Vec::new(),
            pending: (0, 0),
            wait: Wait::Source,
        }
    }

    /// The pollfd for what the channel waits for (fd -1, which poll skips, when done).
    fn poll_fd(&self) -> libc::pollfd {
        let (fd, events) = match self.wait {
            Wait::Source => (self.source, libc::POLLIN),
            Wait::Destination => (self.destination, libc::POLLOUT),
            Wait::Done => (-1, 0),
        };
        libc::pollfd {
            fd,
            events,
            revents: 0,
        }
    }

    /// Moves bytes after poll said the awaited end is ready (or hung up), until one end would
    /// block or [`BATCH`] transfers were made.
    fn advance(&mut self) {
        for transfers in 0..BATCH {
            match self.transfer() {
                Transfer::Moved => {}
                Transfer::Blocked(wait) => {
                    self.wait = wait.unwrap_or(if transfers == 0 {
                        // The end poll reported ready was not the one that would block.
                        match self.wait {
                            Wait::Source => Wait::Destination,
                            _ => Wait::Source,
                        }
                    } else {
                        // After moving bytes: most likely the source ran dry; if it was the
                        // destination that filled, the source polls ready at once and the
                        // next splice, the first of its wake-up, tells.
                        Wait::Source
                    });
                    return;
                }
                Transfer::End => {
                    self.finish();
                    return;
                }
            }
        }
    }

    fn finish(&mut self) {
        self.wait = Wait::Done;
        self.ours = None;
        self.host = None;
        self.buffer = Vec::new();
    }

    fn transfer(&mut self) -> Transfer {
        match self.mode {
            Mode::Splice => match sys::splice(self.source, self.destination, SPLICE_CHUNK) {
                Ok(0) => Transfer::End,
                Ok(_) => Transfer::Moved,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => Transfer::Blocked(None),
                    Some(libc::EINTR) => Transfer::Moved,
                    // This host fd cannot splice (a terminal, an O_APPEND file, some devices).
                    Some(libc::EINVAL) => {
                        self.mode = Mode::Copy;
                        Transfer::Moved
                    }
                    _ => self.ended_by(e),
                },
            },
            Mode::Copy => self.copy(),
        }
    }

    fn copy(&mut self) -> Transfer {
        if self.pending.0 == self.pending.1 {
            if self.buffer.is_empty() {
                self.buffer = vec![0; COPY_BUFFER];
            }
            match sys::read(self.source, &mut self.buffer) {
                Ok(0) => return Transfer::End,
                Ok(n) => self.pending = (0, n),
                Err(e) => {
                    return match e.raw_os_error() {
                        Some(libc::EAGAIN) => Transfer::Blocked(Some(Wait::Source)),
                        Some(libc::EINTR) => Transfer::Moved,
                        // EIO on a pty master: the app's terminal has no process left.
                        _ => self.ended_by(e),
                    };
                }
            }
        }
        match sys::write(
            self.destination,
            &self.buffer[self.pending.0..self.pending.1],
        ) {
            Ok(n) => {
                self.pending.0 += n;
                Transfer::Moved
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) => Transfer::Blocked(Some(Wait::Destination)),
                Some(libc::EINTR) => Transfer::Moved,
                _ => self.ended_by(e),
            },
        }
    }

    /// An end failed: EPIPE (the app closed its stdin, or the launcher's reader went away), EIO
    /// (the app's terminal has nobody left). Not the app's failure: its exit code says that.
    fn ended_by(&self, error: io::Error) -> Transfer {
        if error.raw_os_error() != Some(libc::EIO) {
            tracing::debug!(
                source = self.source,
                destination = self.destination,
                %error,
                "stdio relay channel ended"
            );
        }
        Transfer::End
    }
}

/// The relay between the launcher's stdio and the app's (see the module doc). Dropping it
/// restores the launcher's terminal settings.
#[derive(Debug)]
pub struct Relay {
    channels: Vec<Channel>,
    terminal: Option<Terminal>,
    /// A detached app's output, until its supervisor takes it.
    captured: Option<CapturedOutput>,
}

impl Relay {
    /// The app runs: the launcher's terminal goes in raw mode if the app reads from it (every
    /// key then reaches the app's terminal, whose own settings decide what it means).
    pub(crate) fn start(&mut self) {
        let Some(terminal) = self.terminal.as_mut().filter(|t| t.raw_input) else {
            return;
        };
        let host = sys::stdio(STDIN);
        if let Ok(saved) = termios::tcgetattr(host) {
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            if termios::tcsetattr(host, SetArg::TCSADRAIN, &raw).is_ok() {
                terminal.saved = Some(saved);
            }
        }
    }

    /// A detached app's output pipes (once; `None` unless the launch asked to capture them).
    pub(crate) fn take_captured(&mut self) -> Option<CapturedOutput> {
        self.captured.take()
    }

    /// The launcher's terminal was resized: the app's follows.
    pub(crate) fn window_changed(&self) {
        if let Some(terminal) = &self.terminal {
            terminal.copy_window_size();
        }
    }

    /// Appends the pollfds the relay waits on (one per channel), to poll with the supervisor's
    /// own; hand them back polled to [`Relay::advance`].
    pub(crate) fn poll_fds(&self, into: &mut Vec<libc::pollfd>) {
        into.extend(self.channels.iter().map(Channel::poll_fd));
    }

    /// Moves bytes on every channel whose pollfd (from [`Relay::poll_fds`], polled) is ready.
    pub(crate) fn advance(&mut self, polled: &[libc::pollfd]) {
        for (channel, polled) in self.channels.iter_mut().zip(polled) {
            if polled.fd >= 0 && polled.revents != 0 {
                channel.advance();
            }
        }
    }

    /// The app ended: its input goes nowhere now; its output is drained until EOF.
    pub(crate) fn app_ended(&mut self) {
        for channel in &mut self.channels {
            if channel.direction == Direction::ToApp {
                channel.finish();
            }
        }
    }

    /// Every channel is done (after [`Relay::app_ended`]: all output delivered).
    pub(crate) fn finished(&self) -> bool {
        self.channels.iter().all(|c| c.wait == Wait::Done)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(saved) = self.terminal.as_ref().and_then(|t| t.saved.as_ref()) {
            let _ = termios::tcsetattr(sys::stdio(STDIN), SetArg::TCSADRAIN, saved);
        }
    }
}
