//! Files on demand: the daemon's fanotify pre-content group fetches an evicted file's content
//! on its first read (docs/cloud.md, "Files on demand").
//!
//! - **The group:** one `FAN_CLASS_PRE_CONTENT` group (Linux 6.14+, `CAP_SYS_ADMIN`), event
//!   descriptors opened read-write. Every placeholder gets an inode mark for `FAN_PRE_ACCESS`
//!   before it is renamed into place (the engine's placeholder hook); marks do not outlive the
//!   group, so at start the daemon marks every file under the homes that carries a marker
//!   (before it serves anything or opens a store), and after each sync of a home the
//!   placeholders the engine records (`elastos sync now` may have made some).
//! - **An event** (a read, `mmap`, exec, write or `ftruncate` of a placeholder, by anyone but
//!   this daemon's own event descriptors) holds the caller in the kernel until it is answered.
//!   A worker thread finds the home from the file's path, and the engine writes the content
//!   through the event's descriptor (its writes raise no event), gives the file back its mtime
//!   and removes the marker; the mark is removed and the caller allowed. The content of a
//!   renamed placeholder is found by its marker.
//! - **Bounded:** when the content is not there within [`FETCH_TIMEOUT`]
//!   (`ELASTOS_FETCH_TIMEOUT_SECS`), the caller gets `EIO` and the daemon logs which file; the
//!   fetch goes on, and a later read that finds the content filled succeeds.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use elastos_cloudsync::{Filled, HomeRef, PlaceholderHook, SyncEngine};
use elastos_host::cloud;
use elastos_host::paths::StateDirs;
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags,
    Response,
};

/// How long a read of an evicted file waits for its content before it fails with `EIO`.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// `FAN_PRE_ACCESS` (Linux 6.14; not in this libc's headers yet).
const FAN_PRE_ACCESS: u64 = 0x0010_0000;

fn fetch_timeout() -> Duration {
    std::env::var("ELASTOS_FETCH_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(FETCH_TIMEOUT, Duration::from_secs)
}

/// The fanotify group and what it needs to serve events.
pub struct OnDemand {
    group: Fanotify,
    state: StateDirs,
    /// Marked placeholders by (device, inode): the path it had here when marked. An event's
    /// descriptor cannot name it: opened by a jailed app, its path is the one in the app's mount
    /// namespace.
    marked: Mutex<HashMap<(u64, u64), PathBuf>>,
    /// An engine of its own for fills (the sync thread's may be busy with a long sync).
    engine: Mutex<Option<Arc<SyncEngine>>>,
    timeout: Duration,
}

/// Why files on demand are not available here.
#[derive(Debug, thiserror::Error)]
#[error("files on demand are not available: {reason}")]
pub struct Unavailable {
    /// What failed, with a hint.
    pub reason: String,
}

impl OnDemand {
    /// Makes the group, checks that this kernel has pre-content events (by marking a scratch
    /// file in `scratch_dir`), and starts the thread that serves them.
    pub fn start(state: StateDirs, scratch_dir: &Path) -> Result<Arc<OnDemand>, Unavailable> {
        let group = Fanotify::init(
            InitFlags::FAN_CLASS_PRE_CONTENT | InitFlags::FAN_CLOEXEC,
            EventFFlags::O_RDWR | EventFFlags::O_LARGEFILE,
        )
        .map_err(|e| Unavailable {
            reason: format!(
                "fanotify_init(FAN_CLASS_PRE_CONTENT): {e} (needs root with CAP_SYS_ADMIN and a \
                 kernel with CONFIG_FANOTIFY_ACCESS_PERMISSIONS)"
            ),
        })?;
        let on_demand = Arc::new(OnDemand {
            group,
            state,
            marked: Mutex::default(),
            engine: Mutex::new(None),
            timeout: fetch_timeout(),
        });
        let probe = scratch_dir.join(format!(".ondemand-probe.{}", std::process::id()));
        let probed = File::create(&probe).and_then(|file| {
            on_demand.mark(&file, None)?;
            on_demand.unmark(&file)
        });
        let _ = std::fs::remove_file(&probe);
        probed.map_err(|e| Unavailable {
            reason: format!(
                "marking a file for FAN_PRE_ACCESS: {e} (pre-content events need Linux 6.14 or \
                 later and a file system that supports them, such as ext4, xfs or btrfs)"
            ),
        })?;
        // Placeholders made before this start: watched before the daemon serves anything, and
        // before any store is opened (which may not answer).
        let found = elastos_cloudsync::placeholders_under(&on_demand.state.apps.homes);
        let marked = on_demand.mark_paths(found.into_iter());
        if marked > 0 {
            tracing::info!(marked, "evicted files are fetched on first use");
        }
        let serving = Arc::clone(&on_demand);
        std::thread::Builder::new()
            .name("cloud-ondemand".into())
            .spawn(move || serving.read_loop())
            .map_err(|e| Unavailable {
                reason: format!("cannot start its thread: {e}"),
            })?;
        Ok(on_demand)
    }

    fn mark_flags(&self, file: &impl AsFd, flags: MarkFlags) -> std::io::Result<()> {
        self.group
            .mark::<Path>(
                flags,
                MaskFlags::from_bits_retain(FAN_PRE_ACCESS),
                Some(file.as_fd().as_raw_fd()),
                None,
            )
            .map_err(std::io::Error::from)
    }

    /// Puts the pre-content mark on an open file's inode, remembering it as `path` (a
    /// placeholder in a home).
    fn mark(&self, file: &impl AsFd, path: Option<&Path>) -> std::io::Result<()> {
        self.mark_flags(file, MarkFlags::FAN_MARK_ADD)?;
        if let Some(path) = path {
            let st = nix::sys::stat::fstat(file.as_fd().as_raw_fd())?;
            self.marked
                .lock()
                .expect("not poisoned")
                .insert((st.st_dev, st.st_ino), path.to_owned());
        }
        Ok(())
    }

    /// Removes the pre-content mark of an open file's inode.
    fn unmark(&self, file: &impl AsFd) -> std::io::Result<()> {
        if let Ok(st) = nix::sys::stat::fstat(file.as_fd().as_raw_fd()) {
            self.marked
                .lock()
                .expect("not poisoned")
                .remove(&(st.st_dev, st.st_ino));
        }
        self.mark_flags(file, MarkFlags::FAN_MARK_REMOVE)
    }

    /// The engine's placeholder hook: marks each placeholder before it is renamed into place.
    pub fn hook(self: &Arc<Self>) -> PlaceholderHook {
        let me = Arc::clone(self);
        Box::new(move |file: &File, path: &Path| me.mark(file, Some(path)))
    }

    /// Marks the recorded placeholders of one home (a sync by `elastos sync now` may have
    /// made new ones, unmarked). Returns how many were marked.
    pub fn mark_home(&self, engine: &SyncEngine, home: &HomeRef, dir: &Path) -> usize {
        let evicted = match engine.evicted(home) {
            Ok(paths) => paths,
            Err(e) => {
                tracing::warn!(home = %dir.display(), error = %e, "cannot list the evicted files");
                return 0;
            }
        };
        self.mark_paths(evicted.iter().map(|rel| dir.join(rel)))
    }

    /// Marks the placeholders at `paths` (those that vanished meanwhile are skipped); returns
    /// how many were marked.
    fn mark_paths(&self, paths: impl Iterator<Item = PathBuf>) -> usize {
        let mut marked = 0;
        for path in paths {
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(&path);
            match opened.and_then(|file| self.mark(&file, Some(&path))) {
                Ok(()) => marked += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot watch an evicted file; reading it fails with zeros until it is marked")
                }
            }
        }
        marked
    }

    fn read_loop(self: Arc<Self>) {
        loop {
            let events = match self.group.read_events() {
                Ok(events) => events,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "reading the fanotify group failed; reads of evicted files hang until the daemon stops");
                    return;
                }
            };
            for event in events {
                if event.fd().is_none() {
                    tracing::warn!("the fanotify queue overflowed");
                    continue;
                }
                let me = Arc::clone(&self);
                let spawned = std::thread::Builder::new()
                    .name("cloud-fetch".into())
                    .spawn(move || me.serve(&event));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a fetch thread");
                }
            }
        }
    }

    /// Answers one event: fills the placeholder (within the timeout) and allows the access,
    /// or denies it with `EIO`.
    fn serve(self: Arc<Self>, event: &FanotifyEvent) {
        let fd = event.fd().expect("checked by the caller");
        let started = Instant::now();
        let known = nix::sys::stat::fstat(fd.as_raw_fd()).ok().and_then(|st| {
            self.marked
                .lock()
                .expect("not poisoned")
                .get(&(st.st_dev, st.st_ino))
                .cloned()
        });
        // As the reader named it, for the log (in a jail, a path of its mount namespace).
        let path = known.clone().unwrap_or_else(|| {
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .unwrap_or_else(|_| PathBuf::from("?"))
        });
        let outcome = match (known.and_then(|p| self.locate(&p)), fd.try_clone_to_owned()) {
            (Some((home, rel)), Ok(dup)) => {
                let (sender, receiver) = mpsc::channel();
                let file = File::from(dup);
                let me = Arc::clone(&self);
                // The fill goes on after a timeout (opening the store included): its content
                // then serves the next read.
                let spawned =
                    std::thread::Builder::new()
                        .name("cloud-fill".into())
                        .spawn(move || {
                            let filled = me.engine().and_then(|e| {
                                e.fill(&home, &file, &rel)
                                    .map_err(|e| elastos_host::describe_error(&e))
                            });
                            let _ = sender.send(filled);
                        });
                match spawned {
                    Ok(_) => match receiver.recv_timeout(self.timeout) {
                        Ok(result) => result,
                        Err(_) => Err(format!(
                            "the cloud disk did not deliver it within {} s",
                            self.timeout.as_secs()
                        )),
                    },
                    Err(e) => Err(format!("cannot start a fetch: {e}")),
                }
            }
            (None, _) => Err("it is no placeholder this daemon marked in an app home".to_owned()),
            (_, Err(e)) => Err(format!("cannot duplicate the event's descriptor: {e}")),
        };
        let response = match &outcome {
            Ok(filled) => {
                if let Err(e) = self.unmark(&fd) {
                    tracing::debug!(path = %path.display(), error = %e, "removing the pre-content mark");
                }
                if let Filled::Fetched(bytes) = filled {
                    tracing::info!(path = %path.display(), bytes, ms = started.elapsed().as_millis() as u64, pid = event.pid(), "fetched an evicted file on first use");
                }
                Response::FAN_ALLOW
            }
            Err(reason) => {
                tracing::warn!(path = %path.display(), pid = event.pid(), %reason, "cannot fetch an evicted file; the access fails with EIO");
                // FAN_DENY_ERRNO(EIO): the errno goes in the response's top byte.
                Response::from_bits_retain(
                    Response::FAN_DENY.bits() | (nix::libc::EIO as u32) << 24,
                )
            }
        };
        if let Err(e) = self
            .group
            .write_response(FanotifyResponse::new(fd, response))
        {
            tracing::error!(path = %path.display(), error = %e, "cannot answer a fanotify event");
        }
    }

    /// The home and the path in it of a file under `homes/<publisher>/<app id>/`.
    fn locate(&self, path: &Path) -> Option<(HomeRef, PathBuf)> {
        let inside = path.strip_prefix(&self.state.apps.homes).ok()?;
        let mut parts = inside.components();
        let publisher = parts.next()?.as_os_str().to_str()?.to_owned();
        let app_id = parts.next()?.as_os_str().to_str()?.to_owned();
        let rel = parts.as_path().to_owned();
        (!rel.as_os_str().is_empty()).then_some((HomeRef { publisher, app_id }, rel))
    }

    /// The fill engine, opened on first use (and again after a failure to open).
    fn engine(&self) -> Result<Arc<SyncEngine>, String> {
        let mut slot = self.engine.lock().expect("not poisoned");
        if let Some(engine) = slot.as_ref() {
            return Ok(Arc::clone(engine));
        }
        let engine = cloud::store(&self.state)
            .and_then(|store| cloud::engine(&self.state, &store))
            .map_err(|e| elastos_host::describe_error(&e))?;
        let engine = Arc::new(engine);
        *slot = Some(Arc::clone(&engine));
        Ok(engine)
    }

    /// Forgets the fill engine (after `cloud set`, the next fill opens the new store).
    pub fn reopen(&self) {
        *self.engine.lock().expect("not poisoned") = None;
    }
}
