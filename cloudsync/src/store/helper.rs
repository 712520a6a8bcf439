//! A network store (S3, WebDAV) through `elastos-cloud-remote`, a helper process exec'd for it:
//! the engine, and every binary that links it, carries no HTTP, TLS or `object_store` code (a
//! binary that links them pays ~0.3 ms and ~70 page faults at every start, used or not;
//! docs/benchmarks.md). Requests go one at a time over the helper's stdin and stdout
//! ([`crate::remote_protocol`]); the helper retries like the in-process backend did.
//!
//! Waiting is bounded by the engine's [`StoreWait`]: past it the helper is killed, the request
//! fails with [`SyncError::StoreTimeout`], and so does every later request of this engine
//! (nothing is committed; the next sync resumes).
//!
//! Where the process has no network (the system unit's `PrivateNetwork=yes`), the helper is not
//! exec'd but reached on a unix socket named by [`HELPER_SOCKET_ENV`]: a socket-activated service
//! of its own with the network and nothing else (`dist/*/elastos-cloud-remote.socket`), started per
//! connection with the connection as its stdin and stdout, so the protocol is the same bytes.

use std::io::{BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Listed;
use crate::remote_protocol::{
    self as wire, FailureKind, ListedObject, OpenStore, ProtocolError, Request, Response,
};
use crate::{StoreConfig, StoreWait, SyncError};

/// The helper's name, found next to the running executable unless [`HELPER_ENV`] names it.
pub const HELPER_NAME: &str = "elastos-cloud-remote";
/// The environment variable that overrides where the helper is.
pub const HELPER_ENV: &str = "ELASTOS_CLOUD_REMOTE";
/// The environment variable naming a unix socket to reach the helper on instead of exec'ing it.
pub const HELPER_SOCKET_ENV: &str = "ELASTOS_CLOUD_REMOTE_SOCKET";

pub(super) struct HelperRemote {
    conn: Mutex<Conn>,
    url: String,
}

struct Conn {
    helper: Helper,
    /// `None` once closed (end of input: the helper exits).
    stdin: Option<Box<dyn Write + Send>>,
    stdout: BufReader<Patient>,
    wait: StoreWait,
    /// Why the helper is gone (it timed out or broke the protocol): every request fails so.
    broken: Option<Broken>,
}

/// How the helper runs: a child of ours, or a service at the other end of a unix socket.
enum Helper {
    Child(Child),
    Socket(UnixStream),
}

impl Helper {
    /// Ends the helper mid-frame: the child is killed, the connection shut down (the service's
    /// instance then reads end of input and exits).
    fn kill(&mut self) {
        match self {
            Helper::Child(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Helper::Socket(stream) => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Ends a helper that was told to exit by the end of its input: waits for the child; shuts
    /// the connection's writing side (our other copies of the socket close with us).
    fn reap(&mut self) {
        match self {
            Helper::Child(child) => {
                let _ = child.wait();
            }
            Helper::Socket(stream) => {
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
        }
    }
}

#[derive(Clone)]
enum Broken {
    Timeout(Duration),
    Helper(String),
}

impl Broken {
    fn error(&self, url: &str) -> SyncError {
        match self {
            Broken::Timeout(waited) => SyncError::StoreTimeout {
                url: url.to_owned(),
                waited: *waited,
            },
            Broken::Helper(reason) => SyncError::RemoteHelper {
                url: url.to_owned(),
                reason: reason.clone(),
            },
        }
    }
}

/// The helper's stdout, read with `poll` so that a wait ends at the deadline.
struct Patient {
    fd: OwnedFd,
    deadline: Option<Instant>,
}

impl Read for Patient {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(deadline) = self.deadline {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                let timeout = rustix::event::Timespec::try_from(left)
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
                let mut fds = [rustix::event::PollFd::new(
                    &self.fd,
                    rustix::event::PollFlags::IN,
                )];
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                    Ok(_) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(rustix::io::read(&self.fd, buf)?)
    }
}

fn helper_path() -> PathBuf {
    if let Some(path) = std::env::var_os(HELPER_ENV) {
        return path.into();
    }
    std::env::current_exe()
        .map(|exe| exe.with_file_name(HELPER_NAME))
        .unwrap_or_else(|_| PathBuf::from(HELPER_NAME))
}

/// The helper's two ends: what the engine writes to and reads from.
type HelperEnds = (Helper, Box<dyn Write + Send>, OwnedFd);

/// Execs the helper with pipes on its stdin and stdout.
fn spawn(url: &str) -> Result<HelperEnds, SyncError> {
    let path = helper_path();
    let mut child = Command::new(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| SyncError::StoreConfig {
            url: url.to_owned(),
            reason: format!(
                "cannot start the network store helper {}: {e}; install {HELPER_NAME} next to \
                 this program or name it in {HELPER_ENV}",
                path.display()
            ),
        })?;
    let stdin: ChildStdin = child.stdin.take().expect("piped");
    let stdout = OwnedFd::from(child.stdout.take().expect("piped"));
    Ok((Helper::Child(child), Box::new(stdin), stdout))
}

/// Connects to the helper's service on `socket`.
fn connect(socket: &std::path::Path, url: &str) -> Result<HelperEnds, SyncError> {
    let cannot = |e: std::io::Error| SyncError::StoreConfig {
        url: url.to_owned(),
        reason: format!(
            "cannot reach the network store helper's service at {} ({HELPER_SOCKET_ENV}): {e}; \
             is elastos-cloud-remote.socket enabled?",
            socket.display()
        ),
    };
    let stream = UnixStream::connect(socket).map_err(cannot)?;
    let writer = stream.try_clone().map_err(cannot)?;
    let reader = OwnedFd::from(stream.try_clone().map_err(cannot)?);
    Ok((Helper::Socket(stream), Box::new(writer), reader))
}

impl HelperRemote {
    pub(super) fn open(config: &StoreConfig, url: &str) -> Result<Self, SyncError> {
        let (helper, stdin, stdout) = match std::env::var_os(HELPER_SOCKET_ENV) {
            Some(socket) => connect(&PathBuf::from(socket), url)?,
            None => spawn(url)?,
        };
        let remote = HelperRemote {
            conn: Mutex::new(Conn {
                helper,
                stdin: Some(stdin),
                stdout: BufReader::with_capacity(
                    1 << 16,
                    Patient {
                        fd: stdout,
                        deadline: None,
                    },
                ),
                wait: config.wait,
                broken: None,
            }),
            url: url.to_owned(),
        };
        let open = Request::Open(OpenStore::from_config(config));
        match remote.call(&open, &[])?.0 {
            Response::Done => Ok(remote),
            other => Err(remote.unexpected("open", other)),
        }
    }

    fn unexpected(&self, op: &str, response: Response) -> SyncError {
        match response {
            Response::Failed {
                kind,
                op,
                object,
                attempts,
                message,
            } => match kind {
                FailureKind::Config => SyncError::StoreConfig {
                    url: self.url.clone(),
                    reason: message,
                },
                FailureKind::Credentials => SyncError::Credentials { reason: message },
                FailureKind::Store => SyncError::Store {
                    op,
                    object,
                    attempts,
                    message,
                },
            },
            other => SyncError::RemoteHelper {
                url: self.url.clone(),
                reason: format!("answered {other:?} to {op}"),
            },
        }
    }

    /// Sends one request and reads its (first) response with its blobs.
    fn call(
        &self,
        request: &Request,
        blobs: &[&[u8]],
    ) -> Result<(Response, Vec<Vec<u8>>), SyncError> {
        let mut conn = self.conn.lock().expect("not poisoned");
        conn.exchange(&self.url, Some((request, blobs)))
    }

    pub(super) fn get_many(&self, names: &[String]) -> Result<Vec<Option<Bytes>>, SyncError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let request = Request::Get {
            names: names.to_vec(),
        };
        match self.call(&request, &[])? {
            (Response::Objects { present }, blobs) if present.len() == names.len() => {
                let mut blobs = blobs.into_iter();
                Ok(present
                    .into_iter()
                    .map(|p| p.then(|| Bytes::from(blobs.next().expect("counted"))))
                    .collect())
            }
            (other, _) => Err(self.unexpected("get", other)),
        }
    }

    pub(super) fn get(&self, name: &str) -> Result<Option<Bytes>, SyncError> {
        Ok(self.get_many(&[name.to_owned()])?.pop().flatten())
    }

    pub(super) fn put_many(&self, objects: Vec<(String, Bytes)>) -> Result<(), SyncError> {
        let names = objects.iter().map(|(n, _)| n.clone()).collect();
        let blobs: Vec<&[u8]> = objects.iter().map(|(_, b)| &b[..]).collect();
        match self.call(&Request::Put { names }, &blobs)?.0 {
            Response::Done => Ok(()),
            other => Err(self.unexpected("put", other)),
        }
    }

    pub(super) fn create(&self, name: &str, bytes: Bytes) -> Result<bool, SyncError> {
        let request = Request::Create {
            name: name.to_owned(),
        };
        match self.call(&request, &[&bytes])?.0 {
            Response::Created(created) => Ok(created),
            other => Err(self.unexpected("create", other)),
        }
    }

    pub(super) fn delete(&self, name: &str) -> Result<(), SyncError> {
        let request = Request::Delete {
            name: name.to_owned(),
        };
        match self.call(&request, &[])?.0 {
            Response::Done => Ok(()),
            other => Err(self.unexpected("delete", other)),
        }
    }

    /// Objects under `dir/` at any depth (object stores have no directories) whose names sort
    /// after `after`, sorted.
    pub(super) fn list(&self, dir: &str, after: Option<&str>) -> Result<Vec<Listed>, SyncError> {
        let request = Request::List {
            dir: dir.to_owned(),
            after: after.map(str::to_owned),
        };
        let mut conn = self.conn.lock().expect("not poisoned");
        let mut out = Vec::new();
        let mut next = Some((&request, &[][..]));
        loop {
            match conn.exchange(&self.url, next.take())?.0 {
                Response::Listed { entries, more } => {
                    out.extend(entries.into_iter().map(listed));
                    if !more {
                        break;
                    }
                }
                other => return Err(self.unexpected("list", other)),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

fn listed(entry: ListedObject) -> Listed {
    Listed {
        name: entry.name,
        size: entry.size,
        e_tag: entry.e_tag,
        modified: entry
            .modified_ms
            .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms)),
    }
}

impl Conn {
    /// Writes `request` (when given) and reads one response, within the wait.
    fn exchange(
        &mut self,
        url: &str,
        request: Option<(&Request, &[&[u8]])>,
    ) -> Result<(Response, Vec<Vec<u8>>), SyncError> {
        if let Some(broken) = &self.broken {
            return Err(broken.error(url));
        }
        let (deadline, waited) = match self.wait {
            StoreWait::Unbounded => (None, Duration::ZERO),
            StoreWait::Until { deadline, budget }
            | StoreWait::FirstAnswerBy { deadline, budget } => (Some(deadline), budget),
        };
        self.stdout.get_mut().deadline = deadline;
        let result = (|| -> Result<(Response, Vec<Vec<u8>>), ProtocolError> {
            if let Some((request, blobs)) = request {
                let stdin = self
                    .stdin
                    .as_mut()
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
                wire::write_frame(stdin, request, blobs)?;
            }
            let response: Response = wire::read_header(&mut self.stdout, "response")?
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
            let blobs = wire::read_blobs(&mut self.stdout, response.blobs())?;
            Ok((response, blobs))
        })();
        match result {
            Ok(answer) => {
                // The helper answers Open itself; any other answer came from the store.
                let from_store = !matches!(request, Some((Request::Open(_), _)));
                if from_store && matches!(self.wait, StoreWait::FirstAnswerBy { .. }) {
                    self.wait = StoreWait::Unbounded;
                }
                Ok(answer)
            }
            Err(e) => {
                let broken = match &e {
                    ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                        Broken::Timeout(waited)
                    }
                    _ => Broken::Helper(e.to_string()),
                };
                // Mid-frame the pipe cannot be trusted any more: the helper goes.
                self.helper.kill();
                let error = broken.error(url);
                self.broken = Some(broken);
                Err(error)
            }
        }
    }
}

impl Drop for HelperRemote {
    fn drop(&mut self) {
        // No request is under way (they hold the lock): end of input makes the helper exit.
        if let Ok(conn) = self.conn.get_mut() {
            if conn.broken.is_none() {
                conn.stdin = None;
                conn.helper.reap();
            }
        }
    }
}
