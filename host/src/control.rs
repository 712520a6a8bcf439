//! The broker daemon's control socket: how `elastos run` hands a jailed app's connection to a
//! running broker, and how the `install`, `uninstall`, `list`, `ps`, `stop`, `services` and the
//! detached-run commands (`run -d`, `logs`, `kill`, `restart`, `rm`, `inspect`) talk to it.
//!
//! One JSON [`ControlRequest`] per connection, one line; the answer is one JSON line,
//! `{"ok": ...}` or `{"error": "..."}`. An `attach` request carries, as `SCM_RIGHTS` in the same
//! `sendmsg`, the broker's end of the app's fd-3 socket and a pidfd of the app's jail, through
//! which the daemon signals it (`elastos stop`): never a bare pid, which may name another process
//! by the time it is used. Only the daemon's own uid (or root) may connect
//! (`SO_PEERCRED`): whoever can attach connections can claim any app identity, which is exactly
//! the launcher's trusted role. The socket's directory is 0700 as well.
//!
//! The daemon reads requests asynchronously, without a thread per connection, under the bounds
//! dbus-daemon puts on connections that have not authenticated yet: [`REQUEST_TIMEOUT`] (its
//! `auth_timeout`) and [`MAX_INCOMPLETE`] (its `max_incomplete_connections`). Connections that
//! never send a request once pinned the daemon's blocking thread pool, so `elastos ps` timed out
//! and `elastos run` hung until they closed.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::apps::InstalledApp;
use crate::detached::{DetachedRun, InstanceView};
use elastos_broker::{AppIdentity, AppSnapshot, Broker, Origin, ServiceState};

/// Longest request line accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// How long a control connection may take to send its whole request line; it is closed after.
/// The CLI sends its request as soon as it connects, so this only bounds peers that do not.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most control connections waiting for their request at once. A new connection beyond it
/// closes the one that has waited longest rather than being refused itself, so that idle
/// connections can never lock `elastos ps` or `elastos run` out for longer than it takes to
/// connect.
pub const MAX_INCOMPLETE: usize = 64;

/// The identity of an app as the launcher verified it (wire form of `AppIdentity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityWire {
    /// The app's UUID.
    pub app_id: Uuid,
    /// The app's name.
    pub name: String,
    /// Publisher key, hex.
    pub publisher: String,
    /// Services it may register.
    pub provides: Vec<Uuid>,
    /// Services it may look up, call and subscribe to.
    pub uses: Vec<Uuid>,
    /// Services of `uses` pinned to a publisher: service -> publisher key, hex.
    #[serde(default)]
    pub pins: Vec<(Uuid, String)>,
}

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Serve the app connection passed along (SCM_RIGHTS, with the jail's pidfd after it) as
    /// `identity`; `pid` is its jail's, for display.
    Attach {
        identity: IdentityWire,
        pid: Option<u32>,
    },
    /// Install the bundle at this path (the daemon reads it); an older version than the
    /// highest seen only with `allow_downgrade`.
    Install {
        bundle: PathBuf,
        #[serde(default)]
        allow_downgrade: bool,
    },
    /// Uninstall an app.
    Uninstall { app_id: Uuid },
    /// Installed apps.
    List,
    /// Running apps (their connections), and the detached instances: those running or
    /// restarting, and with `all` the exited ones too.
    Ps {
        #[serde(default)]
        all: bool,
    },
    /// Stop a running app: a detached instance (by instance id, a unique prefix of it, app id or
    /// unique app name: SIGTERM, then SIGKILL after `timeout_secs`, default
    /// [`DEFAULT_STOP_TIMEOUT_SECS`](crate::detached::DEFAULT_STOP_TIMEOUT_SECS)), or an app
    /// `elastos run` attached (by connection id or app id). Answered once it has ended.
    Stop {
        id: String,
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
    /// Run a bundle detached, supervised by the daemon; answered once it runs (or failed to
    /// start), with its [`InstanceView`].
    Run(DetachedRun),
    /// Send a signal (one of [`KILLABLE`](crate::detached::KILLABLE)) to a detached instance.
    /// The restart policy then decides as after any end.
    Kill { id: String, signal: i32 },
    /// Stop a detached instance (as [`ControlRequest::Stop`]) and start it again.
    Restart {
        id: String,
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
    /// Forget an exited detached instance and delete its logs; with `force`, stop it first
    /// (SIGKILL).
    Rm {
        id: String,
        #[serde(default)]
        force: bool,
    },
    /// Forget every exited detached instance and delete its logs; answered with their views.
    Prune,
    /// Everything about a detached instance: manifest, the jail in force, limits, cgroup,
    /// runs.
    Inspect { id: String },
    /// Services and their providers.
    Services,
    /// The installed app providing a service (`null` if none); answered from the database.
    ProviderOf { service: Uuid },
    /// The broker's metrics: one string, Prometheus' text exposition format.
    Metrics,
    /// Sync the home of app `app_id` of publisher `publisher` (hex key) with the cloud disk now,
    /// and watch it from then on (`elastos run` asks before the app starts and after it exits);
    /// answered with the engine's report. Its `name` is for messages.
    CloudSync {
        publisher: String,
        app_id: Uuid,
        #[serde(default)]
        name: Option<String>,
    },
    /// The daemon's continuous sync of each home: watched or polled, pending, last sync, last
    /// error and next retry.
    CloudStatus,
    /// Files on demand: drop the content of `paths` of an app's home (files or directories
    /// relative to it; all of it when empty), leaving placeholders the daemon fetches on first
    /// read; answered with the engine's `EvictReport`. Refused, evicting nothing, when a file
    /// has changes not yet on the cloud disk.
    CloudEvict {
        publisher: String,
        app_id: Uuid,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        paths: Vec<std::path::PathBuf>,
    },
    /// Pin (`pin`: never evicted, fetched back now) or unpin `paths` of an app's home;
    /// answered with the engine's `FetchReport`.
    CloudPin {
        publisher: String,
        app_id: Uuid,
        paths: Vec<std::path::PathBuf>,
        pin: bool,
    },
}

/// The answer: exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlResponse {
    /// The result, on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<serde_json::Value>,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No daemon listens at the socket.
    #[error("no broker daemon at {}", path.display())]
    NotRunning {
        /// The control socket.
        path: PathBuf,
    },
    /// The socket failed mid-request.
    #[error("broker control socket {}", path.display())]
    Io {
        /// The control socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The daemon's answer was not understood.
    #[error("broker daemon answered nonsense: {0}")]
    Protocol(String),
    /// The daemon refused the request.
    #[error("broker daemon: {0}")]
    Refused(String),
}

/// A client of the daemon (blocking; used by the CLI).
#[derive(Debug)]
pub struct ControlClient {
    path: PathBuf,
    /// The connection [`ControlClient::connect`] opened to see that a daemon listens, and when:
    /// the first request made within [`KEPT_FOR`] goes on it, so that checking and asking cost
    /// one connection (each one the daemon accepts and serves), not two.
    kept: Mutex<Option<(StdUnixStream, Instant)>>,
}

/// How long a kept connection is used for the first request: well within [`REQUEST_TIMEOUT`],
/// after which the daemon closes a connection that sent nothing.
const KEPT_FOR: Duration = Duration::from_secs(1);

/// A request sent, its answer not read yet ([`PendingAnswer::wait`]); readable (for a poll)
/// once the daemon answered.
#[derive(Debug)]
pub struct PendingAnswer {
    path: PathBuf,
    stream: StdUnixStream,
}

impl AsFd for PendingAnswer {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl ControlClient {
    /// A client for the daemon at `path`, if one is listening there.
    pub fn connect(path: &Path) -> Option<ControlClient> {
        StdUnixStream::connect(path)
            .ok()
            .map(|stream| ControlClient {
                path: path.into(),
                kept: Mutex::new(Some((stream, Instant::now()))),
            })
    }

    /// Another client of the same daemon, without a connection of its own until it asks: no
    /// second check that the daemon listens.
    pub fn same_daemon(&self) -> ControlClient {
        ControlClient {
            path: self.path.clone(),
            kept: Mutex::new(None),
        }
    }

    /// Sends `request` (with `fds` as SCM_RIGHTS, if any) and returns the daemon's result.
    pub fn request(
        &self,
        request: &ControlRequest,
        fds: &[RawFd],
    ) -> Result<serde_json::Value, ControlError> {
        self.send(request, fds)?.wait()
    }

    /// Sends `request` (with `fds` as SCM_RIGHTS, if any); the answer is read later, so that
    /// the caller can wait for it and for something else at once.
    pub fn send(
        &self,
        request: &ControlRequest,
        fds: &[RawFd],
    ) -> Result<PendingAnswer, ControlError> {
        let kept = self.kept.lock().expect("not poisoned").take();
        let stream = match kept {
            Some((stream, at)) if at.elapsed() < KEPT_FOR => stream,
            _ => open(&self.path)?,
        };
        send_on(&self.path, stream, request, fds)
    }

    /// [`ControlClient::request`] on one new connection to the daemon at `path`, without
    /// first checking that one listens: [`ControlError::NotRunning`] says none does. For a
    /// command whose whole work is one request (`elastos run -d`).
    pub fn ask(
        path: &Path,
        request: &ControlRequest,
        fds: &[RawFd],
    ) -> Result<serde_json::Value, ControlError> {
        send_on(path, open(path)?, request, fds)?.wait()
    }
}

/// A new connection to the daemon at `path`.
fn open(path: &Path) -> Result<StdUnixStream, ControlError> {
    StdUnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ControlError::NotRunning {
            path: path.to_path_buf(),
        },
        _ => ControlError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

/// Writes `request`'s line on `stream`, with `fds` in the same `sendmsg`.
fn send_on(
    path: &Path,
    stream: StdUnixStream,
    request: &ControlRequest,
    fds: &[RawFd],
) -> Result<PendingAnswer, ControlError> {
    let io_error = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    let control: Vec<ControlMessage> = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[io::IoSlice::new(&line)],
        &control,
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| io_error(e.into()))?;
    if sent < line.len() {
        (&stream).write_all(&line[sent..]).map_err(io_error)?;
    }
    Ok(PendingAnswer {
        path: path.to_path_buf(),
        stream,
    })
}

impl PendingAnswer {
    /// Reads the daemon's answer (blocking until it comes).
    pub fn wait(self) -> Result<serde_json::Value, ControlError> {
        let mut answer = String::new();
        BufReader::new(&self.stream)
            .read_line(&mut answer)
            .map_err(|source| ControlError::Io {
                path: self.path.clone(),
                source,
            })?;
        let response: ControlResponse = serde_json::from_str(&answer)
            .map_err(|e| ControlError::Protocol(format!("{e}: {answer:?}")))?;
        match (response.ok, response.error) {
            (_, Some(error)) => Err(ControlError::Refused(error)),
            (Some(ok), None) => Ok(ok),
            (None, None) => Err(ControlError::Protocol("empty answer".into())),
        }
    }
}

/// The most file descriptors a request may pass; more are closed and refused.
pub const MAX_REQUEST_FDS: usize = 2;

/// Reads one request line and the fds passed with it, in order. Not bounded in time: the
/// caller puts [`REQUEST_TIMEOUT`] on it.
pub async fn read_request(
    stream: &tokio::net::UnixStream,
) -> Result<(ControlRequest, Vec<OwnedFd>), ControlError> {
    let io_error = |source| ControlError::Io {
        path: PathBuf::from("(peer)"),
        source,
    };
    let mut line = Vec::new();
    let mut received: Vec<OwnedFd> = Vec::new();
    let mut buffer = [0u8; 4096];
    while !line.ends_with(b"\n") {
        if line.len() > MAX_REQUEST_BYTES {
            return Err(ControlError::Protocol(format!(
                "request longer than {MAX_REQUEST_BYTES} bytes"
            )));
        }
        stream.readable().await.map_err(io_error)?;
        let n = match stream.try_io(tokio::io::Interest::READABLE, || {
            receive(stream, &mut buffer, &mut received)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(io_error(e)),
        };
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buffer[..n]);
    }
    if received.len() > MAX_REQUEST_FDS {
        return Err(ControlError::Protocol(format!(
            "{} file descriptors passed; a request passes at most {MAX_REQUEST_FDS}",
            received.len()
        )));
    }
    let request = serde_json::from_slice(&line)
        .map_err(|e| ControlError::Protocol(format!("bad request: {e}")))?;
    Ok((request, received))
}

/// One non-blocking `recvmsg` into `buffer`; the descriptors passed are appended to
/// `received` (each owned, so closed if the request is refused). Returns the bytes read (0 at
/// end of stream).
fn receive(
    stream: &tokio::net::UnixStream,
    buffer: &mut [u8],
    received: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )?;
    for control in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = control {
            received.extend(fds.into_iter().map(owned_fd));
        }
    }
    Ok(message.bytes)
}

/// The control connections waiting for their request, oldest first, bounded by
/// [`MAX_INCOMPLETE`].
#[derive(Clone, Default)]
pub struct Incomplete(Arc<Mutex<IncompleteState>>);

#[derive(Default)]
struct IncompleteState {
    next: u64,
    waiting: VecDeque<(u64, Arc<tokio::sync::Notify>)>,
}

/// A connection's place among the [`Incomplete`] ones, given up when dropped.
pub struct Waiting {
    id: u64,
    evict: Arc<tokio::sync::Notify>,
    all: Incomplete,
}

impl Incomplete {
    /// Counts a new connection in; when [`MAX_INCOMPLETE`] already wait, the oldest is told to
    /// close ([`Waiting::evicted`]).
    pub fn admit(&self) -> Waiting {
        let mut state = self.0.lock().expect("not poisoned");
        if state.waiting.len() >= MAX_INCOMPLETE {
            if let Some((_, oldest)) = state.waiting.pop_front() {
                // Stored as a permit if its task is not waiting yet: it still closes.
                oldest.notify_one();
            }
        }
        let id = state.next;
        state.next += 1;
        let evict = Arc::new(tokio::sync::Notify::new());
        state.waiting.push_back((id, Arc::clone(&evict)));
        Waiting {
            id,
            evict,
            all: self.clone(),
        }
    }

    /// How many connections were ever admitted.
    pub fn admitted(&self) -> u64 {
        self.0.lock().expect("not poisoned").next
    }
}

impl Waiting {
    /// Resolves when newer connections pushed this one out.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut state = self.all.0.lock().expect("not poisoned");
        state.waiting.retain(|(id, _)| *id != self.id);
    }
}

/// Writes the answer line. Not bounded in time: the caller bounds it.
pub async fn write_response(
    stream: &tokio::net::UnixStream,
    result: Result<serde_json::Value, String>,
) -> io::Result<()> {
    let response = match result {
        Ok(ok) => ControlResponse {
            ok: Some(ok),
            error: None,
        },
        Err(error) => ControlResponse {
            ok: None,
            error: Some(error),
        },
    };
    let mut line = serde_json::to_vec(&response).expect("responses serialize");
    line.push(b'\n');
    let mut rest = &line[..];
    while !rest.is_empty() {
        stream.writable().await?;
        match stream.try_write(rest) {
            Ok(written) => rest = &rest[written..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn owned_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just installed in this process by the kernel as part of an SCM_RIGHTS
    // message we received; nothing else refers to it, so the OwnedFd is its only owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Whether the peer of `stream` may use the control socket: our own uid, or root.
pub fn peer_allowed(stream: &impl AsFd) -> bool {
    let Ok(credentials) =
        nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
    else {
        return false;
    };
    let peer = credentials.uid();
    peer == 0 || peer == nix::unistd::geteuid().as_raw()
}

impl From<AppIdentity> for IdentityWire {
    fn from(identity: AppIdentity) -> Self {
        IdentityWire {
            app_id: identity.app_id,
            name: identity.name,
            publisher: hex(&identity.publisher),
            provides: identity.provides,
            uses: identity.uses,
            pins: identity
                .pins
                .iter()
                .map(|(service, key)| (*service, hex(key)))
                .collect(),
        }
    }
}

/// A publisher key from its 64 hex digits.
fn publisher_key(text: &str) -> Result<[u8; 32], ControlError> {
    let bad = || ControlError::Protocol(format!("publisher must be 64 hex digits, found {text:?}"));
    if text.len() != 64 {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(key)
}

impl TryFrom<IdentityWire> for AppIdentity {
    type Error = ControlError;

    fn try_from(wire: IdentityWire) -> Result<Self, Self::Error> {
        Ok(AppIdentity {
            app_id: wire.app_id,
            name: wire.name,
            publisher: publisher_key(&wire.publisher)?,
            provides: wire.provides,
            uses: wire.uses,
            pins: wire
                .pins
                .iter()
                .map(|(service, key)| Ok((*service, publisher_key(key)?)))
                .collect::<Result<_, ControlError>>()?,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running app as `elastos ps` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppView {
    /// Connection id (what `elastos stop` takes, as does the app id).
    pub id: u64,
    /// The app's UUID.
    pub app_id: Uuid,
    /// The app's name.
    pub name: String,
    /// Host pid of the jail's init, when known.
    pub pid: Option<u32>,
    /// `launched` (elastos run) or `activated` (on demand).
    pub origin: String,
    /// Seconds since it connected.
    pub uptime_secs: u64,
    /// Services it has registered.
    pub services: Vec<Uuid>,
    /// The detached instance this connection is the current run of, if any.
    #[serde(default)]
    pub instance: Option<String>,
}

impl From<&AppSnapshot> for AppView {
    fn from(app: &AppSnapshot) -> Self {
        AppView {
            id: app.id.0,
            app_id: app.app_id,
            name: app.name.clone(),
            pid: app.origin.pid(),
            origin: match app.origin {
                Origin::Launched { .. } => "launched".into(),
                Origin::Activated { .. } => "activated".into(),
            },
            uptime_secs: app.since.elapsed().map(|d| d.as_secs()).unwrap_or(0),
            services: app.services.clone(),
            instance: None,
        }
    }
}

/// The daemon itself, as `elastos ps --format json` shows it beside its apps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonView {
    /// The daemon's pid.
    pub pid: u32,
    /// Its resident memory (`VmRSS` of /proc/self/status), in bytes; `None` if unreadable.
    pub rss_bytes: Option<u64>,
    /// App connections it serves.
    pub connections: usize,
}

/// What `elastos ps` gets from the daemon: the daemon and its running apps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PsView {
    /// The daemon.
    pub daemon: DaemonView,
    /// The running apps, by connection id.
    pub apps: Vec<AppView>,
    /// The detached instances (exited ones only when asked for), oldest first.
    #[serde(default)]
    pub instances: Vec<InstanceView>,
}

/// This process's resident memory in bytes, from `VmRSS` in /proc/self/status.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// A service as `elastos services` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    /// The service UUID.
    pub service: Uuid,
    /// `registered`, `activating` or `installed` (not running; started on first use).
    pub state: String,
    /// The providing app's UUID.
    pub provider_app: Option<Uuid>,
    /// The providing app's name.
    pub provider_name: Option<String>,
    /// The provider's connection id, when registered.
    pub connection: Option<u64>,
    /// Methods registered.
    pub methods: Vec<String>,
    /// Topics registered.
    pub topics: Vec<String>,
    /// Subscriptions to its topics.
    pub subscribers: usize,
}

/// The services a broker knows, plus the installed ones it would activate.
pub fn service_views(broker: &Broker, installed: &[InstalledApp]) -> Vec<ServiceView> {
    let mut views: Vec<ServiceView> = broker
        .services()
        .into_iter()
        .map(|s| match s.state {
            ServiceState::Registered {
                provider,
                app_id,
                name,
                methods,
                topics,
                subscribers,
            } => ServiceView {
                service: s.service,
                state: "registered".into(),
                provider_app: Some(app_id),
                provider_name: Some(name),
                connection: Some(provider.0),
                methods,
                topics,
                subscribers,
            },
            _ => ServiceView {
                service: s.service,
                state: "activating".into(),
                provider_app: None,
                provider_name: None,
                connection: None,
                methods: vec![],
                topics: vec![],
                subscribers: 0,
            },
        })
        .collect();
    for app in installed {
        for service in &app.provides {
            if !views.iter().any(|v| v.service == *service) {
                views.push(ServiceView {
                    service: *service,
                    state: "installed".into(),
                    provider_app: Some(app.app_id),
                    provider_name: Some(app.name.clone()),
                    connection: None,
                    methods: vec![],
                    topics: vec![],
                    subscribers: 0,
                });
            }
        }
    }
    views.sort_by_key(|v| v.service);
    views
}

/// A tokio stream from a blocking one (inside a runtime).
pub fn into_tokio(stream: StdUnixStream) -> io::Result<tokio::net::UnixStream> {
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A daemon stand-in at a new socket: answers each request line with `{"ok": N}`, N the
    /// number of the connection it came on (from 1); returns how many it accepted.
    fn fake_daemon(dir: &Path) -> (PathBuf, std::thread::JoinHandle<usize>) {
        let path = dir.join("broker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let served = std::thread::spawn(move || {
            let mut accepted = 0;
            for stream in listener.incoming() {
                let stream = stream.unwrap();
                accepted += 1;
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).unwrap() == 0 {
                    continue;
                }
                writeln!(&stream, "{{\"ok\":{accepted}}}").unwrap();
                // Anything but `ps` ends the fake daemon, once answered.
                if !line.contains(r#""op":"ps""#) {
                    return accepted;
                }
            }
            accepted
        });
        (path, served)
    }

    #[test]
    fn a_request_right_after_connect_goes_on_the_checking_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (path, served) = fake_daemon(dir.path());
        let client = ControlClient::connect(&path).expect("the fake daemon listens");
        let first = client
            .request(&ControlRequest::Ps { all: false }, &[])
            .unwrap();
        assert_eq!(
            first,
            serde_json::json!(1),
            "a second connection was opened"
        );
        // The kept connection is used once; the next request opens its own.
        let second = client
            .request(&ControlRequest::Ps { all: false }, &[])
            .unwrap();
        assert_eq!(second, serde_json::json!(2));
        // A client for the same daemon opens nothing until it asks.
        let other = client.same_daemon();
        let third = other.request(&ControlRequest::Metrics, &[]).unwrap();
        assert_eq!(third, serde_json::json!(3));
        assert_eq!(served.join().unwrap(), 3);
    }

    #[test]
    fn ask_uses_one_connection_and_names_a_missing_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let missing =
            ControlClient::ask(&dir.path().join("none.sock"), &ControlRequest::Metrics, &[]);
        assert!(
            matches!(missing, Err(ControlError::NotRunning { .. })),
            "{missing:?}"
        );
        let (path, served) = fake_daemon(dir.path());
        let answer = ControlClient::ask(&path, &ControlRequest::Metrics, &[]).unwrap();
        assert_eq!(answer, serde_json::json!(1));
        assert_eq!(served.join().unwrap(), 1);
    }
}
