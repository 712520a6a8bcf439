//! The daemon's side of systemd's service protocols, all optional: without the variables the
//! daemon runs as it does from a terminal.
//!
//! - Readiness and state (`Type=notify`, sd_notify(3)): `READY=1` once the control socket is
//!   served, `STATUS=` lines, `WATCHDOG=1` every half `WATCHDOG_USEC` (sent from the broker's
//!   runtime, so a wedged runtime stops them and systemd restarts the daemon), `STOPPING=1`.
//!   `NOTIFY_SOCKET` may be a path or, with a leading `@`, an abstract socket (what systemd
//!   uses for user managers and in containers). The `sd-notify` crate connects to the variable's
//!   value as a path, which misses the abstract case, so the datagram is sent here; the crate
//!   reads the watchdog and socket-activation variables.
//! - Socket activation (sd_listen_fds(3)): the control socket is taken from systemd when
//!   `LISTEN_PID` is ours; the one named `control` (`FileDescriptorName=`), or the only one.
//!
//! Every variable is removed once read, so nothing the daemon starts inherits them.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};

use crate::daemon::DaemonError;

/// The `FileDescriptorName=` of the control socket in `elastos-broker.socket`.
pub const CONTROL_FD_NAME: &str = "control";

/// Where state notifications go: the service manager's socket, when there is one.
pub struct Notifier {
    socket: Option<UnixDatagram>,
}

impl Notifier {
    /// Connects to `NOTIFY_SOCKET`, when set (and unsets it). A socket that cannot be reached
    /// is logged and the daemon runs on without notifications: systemd then times its start
    /// out, which names the cause better than a daemon that refuses to start.
    pub fn from_env() -> Notifier {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { socket: None };
        };
        std::env::remove_var("NOTIFY_SOCKET");
        match connect(&path) {
            Ok(socket) => Notifier {
                socket: Some(socket),
            },
            Err(error) => {
                tracing::warn!(socket = ?path, %error, "cannot reach the service manager's notification socket");
                Notifier { socket: None }
            }
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state`: newline-separated `KEY=VALUE` assignments, in one datagram.
    pub fn notify(&self, state: &str) {
        if let Some(socket) = &self.socket {
            if let Err(error) = socket.send(state.as_bytes()) {
                tracing::warn!(%error, state, "cannot notify the service manager");
            }
        }
    }
}

/// A datagram socket connected to `path`: `@NAME` is the abstract socket NAME, else an absolute
/// path.
fn connect(path: &OsStr) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    match path.as_bytes().strip_prefix(b"@") {
        Some(name) => socket.connect_addr(&SocketAddr::from_abstract_name(name)?)?,
        None if Path::new(path).is_absolute() => socket.connect(path)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "expected an absolute path or @ and an abstract socket name",
            ))
        }
    }
    Ok(socket)
}

/// `WATCHDOG_USEC` when the watchdog is ours (`WATCHDOG_PID` unset or our pid); unsets both.
pub fn watchdog_from_env() -> Option<Duration> {
    let interval = sd_notify::watchdog_enabled().filter(|interval| !interval.is_zero());
    std::env::remove_var("WATCHDOG_USEC");
    std::env::remove_var("WATCHDOG_PID");
    interval
}

/// The control socket systemd passed (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), if it
/// passed one to us; unsets the variables. Passed descriptors that are not the control socket
/// are closed. A passed socket bound elsewhere than `expected` (where `elastos` looks) is
/// served all the same, with a warning, since the unit says so.
#[allow(unsafe_code)]
pub fn listener_from_env(expected: &Path) -> Result<Option<UnixListener>, DaemonError> {
    let passed = sd_notify::listen_fds_with_names().map_err(|source| DaemonError::Io {
        what: "read the sockets systemd passed (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES)".into(),
        source,
    });
    for variable in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(variable);
    }
    let passed: Vec<(RawFd, String)> = passed?.collect();
    let count = passed.len();
    let mut control = None;
    for (fd, name) in passed {
        // SAFETY: systemd passed `fd` to this process (LISTEN_PID is ours) for it to own, and
        // `listen_fds_with_names` hands each one out exactly once; nothing else in the daemon
        // refers to these numbers.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if control.is_none() && (name == CONTROL_FD_NAME || count == 1) {
            control = Some(fd);
        } else {
            tracing::warn!(
                name,
                "closing a socket systemd passed that is not the control socket"
            );
        }
    }
    let Some(fd) = control else {
        return if count == 0 {
            Ok(None)
        } else {
            Err(DaemonError::Activation(format!(
                "systemd passed {count} sockets and none is named {CONTROL_FD_NAME:?} \
                 (FileDescriptorName= in the .socket unit)"
            )))
        };
    };
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    let stream = getsockopt(&fd, sockopt::SockType).ok() == Some(SockType::Stream);
    let bound = getsockname::<UnixAddr>(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok();
    let path = bound.as_ref().and_then(|address| address.path());
    if !(listening && stream && bound.is_some()) {
        return Err(DaemonError::Activation(
            "the socket systemd passed is not a listening unix stream socket (ListenStream= \
             with a path in the .socket unit)"
                .into(),
        ));
    }
    if path != Some(expected) {
        tracing::warn!(
            passed = ?path,
            expected = %expected.display(),
            "the control socket systemd passed is not where `elastos` looks for the daemon"
        );
    }
    Ok(Some(UnixListener::from(fd)))
}
