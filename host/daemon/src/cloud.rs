//! Continuous sync of the app homes while the daemon runs (docs/cloud.md, "With the broker
//! daemon").
//!
//! - **Which homes:** every home this machine knows (`elastos_host::cloud::app_homes`) whose
//!   manifest says `[home] sync = true`, with the store in force (`cloud set`, else the local
//!   directory standing in for the cloud disk); `elastos run` adds a new one when it asks for
//!   its first sync.
//! - **Start-up scan:** each home is synced once at start. The engine's index (per file: path,
//!   inode, size, mtime, chunk list; per home: the last synced version) makes an unchanged home
//!   cost a `stat` per file and one listing of the store, no hashing.
//! - **Local changes:** one inotify instance for the whole daemon, one watch per directory of
//!   every home (recursive: directories made later are watched as they appear). A home syncs
//!   [`DEBOUNCE`] after its last change, or [`MAX_DELAY`] after its first unsynced one when
//!   changes never pause. Past the kernel's watch limit (`fs.inotify.max_user_watches`), a
//!   home that cannot be watched whole is not watched at all but scanned at every pull instead,
//!   and its status says so.
//! - **Remote changes:** every [`PULL_INTERVAL`] (or `ELASTOS_CLOUD_PULL_SECS`), one listing of
//!   each home's snapshots in the store; only a home with a new version is synced.
//! - **Failures:** a failed sync is retried after 5 s, doubling up to [`MAX_BACKOFF`], while the
//!   app keeps running on its local copy; nothing is lost (the home stays as it is, and the
//!   engine's commit is atomic). The last error and the next attempt are in `elastos sync
//!   status`. A safety stop (mass delete) is not retried: it waits for `elastos sync now APP
//!   --confirm-mass-delete`.
//! - **Garbage collection:** once every [`GC_INTERVAL`], with the default retention (30 days)
//!   and grace period (1 day): `elastos cloud gc`'s rules (docs/cloud.md).
//! - **`elastos run`** asks for a sync before the app starts and after it exits, and waits at
//!   most [`RUN_WAIT`] when the home has files here (a missing or empty home waits for its
//!   restore).
//! - **Events:** after a sync that changed a home from the store, the app (only that app) gets
//!   a `HomeChanged` event on the broker's built-in cloud service (`proto/cloud.proto`).
//!
//! The engine is blocking, and a network store drives a runtime of its own that may not run
//! inside the broker's: syncs run on one thread of their own, and a second thread reads inotify.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use elastos_broker::Broker;
use elastos_cloudsync::{
    EvictReport, FetchReport, GcOptions, SyncEngine, SyncError, SyncOptions, SyncReport,
};
use elastos_host::cloud::{self, AppHome};
use elastos_host::paths::StateDirs;
use elastos_proto::cloud::{v1 as wire, CHANGES_TOPIC, CLOUD_SYNC_SERVICE};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use prost::Message as _;
use serde::Serialize;
use uuid::Uuid;

use crate::ondemand::OnDemand;

/// A home syncs this long after its last local change: an editor's save (write, rename,
/// chmod) or a burst of writes becomes one sync.
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// ... and at the latest this long after its first unsynced change, when changes never pause.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// How often the store is asked for other devices' changes (one listing per home).
pub const PULL_INTERVAL: Duration = Duration::from_secs(60);
/// How long `elastos run` waits for the daemon's sync of a home that has files here before it
/// starts (or leaves) the app on its local copy; the sync goes on in the background.
pub const RUN_WAIT: Duration = Duration::from_secs(10);
/// How often the daemon collects garbage in the store (old snapshots, unreferenced chunks),
/// the first time this long after it started.
pub const GC_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The first retry of a failed sync; each further failure doubles it up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What the watcher reports on: directories' entries changing, files written or closed after
/// writing, modes, and the watched directory itself going away.
const WATCH_MASK: AddWatchFlags = AddWatchFlags::IN_MODIFY
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR)
    .union(AddWatchFlags::IN_DONT_FOLLOW);

/// The pull interval: `ELASTOS_CLOUD_PULL_SECS` (whole seconds, at least 1) or
/// [`PULL_INTERVAL`].
fn pull_interval() -> Duration {
    std::env::var("ELASTOS_CLOUD_PULL_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(PULL_INTERVAL, Duration::from_secs)
}

enum Message {
    /// Something changed under a watched directory of this home (by key).
    Changed(String),
    /// The kernel's event queue overflowed: any home may have changed.
    Overflow,
    /// Sync this home now and answer.
    Sync {
        app: AppHome,
        reply: mpsc::Sender<Result<SyncReport, String>>,
    },
    /// Evict files of this home (all when `paths` is empty) and answer.
    Evict {
        app: AppHome,
        paths: Vec<PathBuf>,
        reply: mpsc::Sender<Result<EvictReport, String>>,
    },
    /// Pin or unpin paths of this home and answer.
    Pin {
        app: AppHome,
        paths: Vec<PathBuf>,
        pin: bool,
        reply: mpsc::Sender<Result<FetchReport, String>>,
    },
}

/// How a home's local changes are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Watching {
    /// inotify watches every directory of it.
    Watched,
    /// Past the inotify watch limit (or without inotify): scanned at every pull instead.
    Polled,
    /// Not yet (the home does not exist yet, or has not synced since the daemon started).
    No,
}

/// One home as the daemon syncs it, for `elastos sync status`.
#[derive(Debug, Clone, Serialize)]
pub struct HomeView {
    /// The home.
    #[serde(flatten)]
    pub app: AppHome,
    /// How its local changes are noticed.
    pub watching: Watching,
    /// Whether local changes wait for their sync (debounce, or a retry).
    pub pending: bool,
    /// The last successful sync by the daemon, RFC 3339.
    pub last_sync: Option<String>,
    /// The last sync's error, if it failed; cleared by the next success.
    pub last_error: Option<String>,
    /// Failed syncs in a row.
    pub failures: u32,
    /// Milliseconds until the next attempt after a failure.
    pub retry_in_ms: Option<u64>,
}

/// The daemon's continuous sync: a handle for the control requests.
pub struct CloudSync {
    /// Where the homes are (`homes/<publisher>/<app id>`).
    homes: PathBuf,
    sender: mpsc::Sender<Message>,
    views: Arc<Mutex<Vec<HomeView>>>,
}

impl CloudSync {
    /// Starts the sync thread (and the inotify thread, when inotify is available). With
    /// `on_demand`, placeholders the engine makes are marked for its fanotify group, and each
    /// home's recorded placeholders are marked at its first sync.
    pub fn start(state: StateDirs, broker: Broker, on_demand: Option<Arc<OnDemand>>) -> CloudSync {
        let (sender, receiver) = mpsc::channel();
        let views = Arc::new(Mutex::new(Vec::new()));
        let watcher = match Inotify::init(InitFlags::IN_CLOEXEC) {
            Ok(inotify) => {
                let watcher = Arc::new(Watcher {
                    inotify,
                    table: Mutex::default(),
                });
                let reading = Arc::clone(&watcher);
                let sending = sender.clone();
                let spawned = std::thread::Builder::new()
                    .name("cloud-inotify".into())
                    .spawn(move || reading.read_loop(&sending));
                match spawned {
                    Ok(_) => Some(watcher),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start the inotify thread; homes are scanned at every pull");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no inotify instance; homes are scanned at every pull");
                None
            }
        };
        let homes = state.apps.homes.clone();
        let syncer = Syncer {
            state,
            broker,
            watcher,
            engine: None,
            settings_stamp: None,
            homes: BTreeMap::new(),
            views: Arc::clone(&views),
            pull_every: pull_interval(),
            on_demand,
        };
        let spawned = std::thread::Builder::new()
            .name("cloud-sync".into())
            .spawn(move || syncer.run(&receiver));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the cloud sync thread; homes are not synced");
        }
        CloudSync {
            homes,
            sender,
            views,
        }
    }

    /// Syncs one app's home now (queued behind a sync under way) and answers with what it did.
    /// The home is watched from then on. `publisher` is the hex key that owns the app id.
    pub fn sync_now(
        &self,
        publisher: &str,
        app_id: Uuid,
        name: Option<String>,
    ) -> Result<SyncReport, String> {
        let app = self.app(publisher, app_id, name)?;
        // A home with files here can start on them; a missing or empty one waits for its
        // restore, however long it takes.
        let has_files = std::fs::read_dir(&app.home).is_ok_and(|mut d| d.next().is_some());
        let stopped = || STOPPED.to_owned();
        let (reply, answer) = mpsc::channel();
        self.sender
            .send(Message::Sync { app, reply })
            .map_err(|_| stopped())?;
        if !has_files {
            return answer.recv().map_err(|_| stopped())?;
        }
        match answer.recv_timeout(RUN_WAIT) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "the cloud disk did not answer within {} s (the daemon goes on syncing the home \
                 in the background)",
                RUN_WAIT.as_secs()
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(stopped()),
        }
    }

    /// The home of app `app_id` of `publisher` (hex key).
    fn app(&self, publisher: &str, app_id: Uuid, name: Option<String>) -> Result<AppHome, String> {
        if publisher.len() != 64 || !publisher.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "publisher {publisher:?} is not a publisher key (64 hex digits)"
            ));
        }
        Ok(AppHome {
            name,
            app_id,
            home: self
                .homes
                .join(publisher.to_ascii_lowercase())
                .join(app_id.to_string()),
            publisher: publisher.to_ascii_lowercase(),
            sync: true,
        })
    }

    /// Files on demand: evicts files of an app's home on the sync thread (between syncs, with
    /// the engine whose placeholders are marked for fanotify).
    pub fn evict(
        &self,
        publisher: &str,
        app_id: Uuid,
        name: Option<String>,
        paths: Vec<PathBuf>,
    ) -> Result<EvictReport, String> {
        let app = self.app(publisher, app_id, name)?;
        let (reply, answer) = mpsc::channel();
        self.sender
            .send(Message::Evict { app, paths, reply })
            .map_err(|_| STOPPED.to_owned())?;
        answer.recv().map_err(|_| STOPPED.to_owned())?
    }

    /// Pins or unpins paths of an app's home on the sync thread; pinning fetches them.
    pub fn pin(
        &self,
        publisher: &str,
        app_id: Uuid,
        paths: Vec<PathBuf>,
        pin: bool,
    ) -> Result<FetchReport, String> {
        let app = self.app(publisher, app_id, None)?;
        let (reply, answer) = mpsc::channel();
        self.sender
            .send(Message::Pin {
                app,
                paths,
                pin,
                reply,
            })
            .map_err(|_| STOPPED.to_owned())?;
        answer.recv().map_err(|_| STOPPED.to_owned())?
    }

    /// Every home the daemon syncs, as of the end of its last sync or pull.
    pub fn status(&self) -> Vec<HomeView> {
        self.views.lock().expect("not poisoned").clone()
    }
}

/// The inotify instance and what each of its watches is.
struct Watcher {
    inotify: Inotify,
    table: Mutex<WatchTable>,
}

#[derive(Default)]
struct WatchTable {
    /// Watch -> (home key, directory).
    dirs: HashMap<WatchDescriptor, (String, PathBuf)>,
    /// Home key -> the watch of its root directory.
    roots: HashMap<String, WatchDescriptor>,
    /// Homes that hit the watch limit since they were last watched whole.
    over_limit: BTreeSet<String>,
}

/// Adding a watch hit `fs.inotify.max_user_watches`.
struct WatchLimit;

impl Watcher {
    /// Watches `dir` and every directory below it (symlinks are not followed) as part of home
    /// `key`. Directories that vanish meanwhile are skipped.
    fn watch_tree(&self, key: &str, dir: &Path) -> Result<(), WatchLimit> {
        let mut stack = vec![dir.to_owned()];
        while let Some(dir) = stack.pop() {
            match self.inotify.add_watch(&dir, WATCH_MASK) {
                Ok(wd) => {
                    self.table
                        .lock()
                        .expect("not poisoned")
                        .dirs
                        .insert(wd, (key.to_owned(), dir.clone()));
                }
                Err(Errno::ENOSPC) => {
                    self.table
                        .lock()
                        .expect("not poisoned")
                        .over_limit
                        .insert(key.to_owned());
                    return Err(WatchLimit);
                }
                Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a directory of a home");
                    continue;
                }
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(entry.path());
                    }
                }
            }
        }
        Ok(())
    }

    /// Watches home `key` whole, or not at all (at the watch limit: its watches are given back
    /// for other homes, and it is scanned at every pull).
    fn watch_home(&self, key: &str, root: &Path) -> Watching {
        if self.is_watched(key) {
            return Watching::Watched;
        }
        if !root.is_dir() {
            return Watching::No;
        }
        self.table
            .lock()
            .expect("not poisoned")
            .over_limit
            .remove(key);
        match self.watch_tree(key, root) {
            Ok(()) => {
                let mut table = self.table.lock().expect("not poisoned");
                let root_wd = table
                    .dirs
                    .iter()
                    .find(|(_, (k, dir))| k == key && dir == root)
                    .map(|(wd, _)| *wd);
                match root_wd {
                    Some(wd) => {
                        table.roots.insert(key.to_owned(), wd);
                        Watching::Watched
                    }
                    None => Watching::No,
                }
            }
            Err(WatchLimit) => {
                let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|_| "?".into());
                tracing::warn!(home = %root.display(), limit, "inotify watch limit reached (fs.inotify.max_user_watches); this home is scanned at every pull instead");
                self.unwatch_home(key);
                Watching::Polled
            }
        }
    }

    fn unwatch_home(&self, key: &str) {
        let mut table = self.table.lock().expect("not poisoned");
        let ours: Vec<WatchDescriptor> = table
            .dirs
            .iter()
            .filter(|(_, (k, _))| k == key)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in ours {
            table.dirs.remove(&wd);
            let _ = self.inotify.rm_watch(wd);
        }
        table.roots.remove(key);
    }

    fn is_watched(&self, key: &str) -> bool {
        let table = self.table.lock().expect("not poisoned");
        table.roots.contains_key(key) && !table.over_limit.contains(key)
    }

    fn watching(&self, key: &str) -> Watching {
        let table = self.table.lock().expect("not poisoned");
        if table.over_limit.contains(key) {
            Watching::Polled
        } else if table.roots.contains_key(key) {
            Watching::Watched
        } else {
            Watching::No
        }
    }

    /// Reads events until the daemon ends, and tells the sync thread which homes changed (once
    /// per read, however many events it held).
    fn read_loop(&self, sender: &mpsc::Sender<Message>) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "reading inotify failed; local changes are noticed at the next pull only");
                    return;
                }
            };
            let mut changed = BTreeSet::new();
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    if sender.send(Message::Overflow).is_err() {
                        return;
                    }
                    continue;
                }
                let Some((key, dir)) = self
                    .table
                    .lock()
                    .expect("not poisoned")
                    .dirs
                    .get(&event.wd)
                    .cloned()
                else {
                    continue;
                };
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The directory is gone (or was moved out): its watch is.
                    let mut table = self.table.lock().expect("not poisoned");
                    table.dirs.remove(&event.wd);
                    if table.roots.get(&key) == Some(&event.wd) {
                        table.roots.remove(&key);
                    }
                } else if event.mask.contains(AddWatchFlags::IN_ISDIR)
                    && event
                        .mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                {
                    if let Some(name) = &event.name {
                        // A directory that appears may already hold files: the sync scans it.
                        if self.watch_tree(&key, &dir.join(name)).is_err() {
                            tracing::warn!(home = %key, "inotify watch limit reached; this home is scanned at every pull instead");
                        }
                    }
                }
                changed.insert(key);
            }
            for key in changed {
                if sender.send(Message::Changed(key)).is_err() {
                    return;
                }
            }
        }
    }
}

const STOPPED: &str = "the daemon's cloud sync thread has stopped";

/// How long to wait after `failures` failed syncs in a row: [`FIRST_BACKOFF`], doubling up to
/// [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

/// One home on the sync thread.
struct Home {
    app: AppHome,
    /// First and last local change not yet synced.
    dirty: Option<(Instant, Instant)>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    last_sync: Option<SystemTime>,
    /// Stopped by the safety stop until a confirmed `sync now`.
    stopped: bool,
}

impl Home {
    /// When this home is due to sync (`None`: nothing to do).
    fn due(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let (first, last) = self.dirty?;
        let debounced = (last + DEBOUNCE).min(first + MAX_DELAY);
        Some(
            self.retry_at
                .map_or(debounced, |retry| retry.max(debounced)),
        )
    }

    fn mark_dirty(&mut self, now: Instant) {
        let first = self.dirty.map_or(now, |(first, _)| first);
        self.dirty = Some((first, now));
    }
}

struct Syncer {
    state: StateDirs,
    broker: Broker,
    watcher: Option<Arc<Watcher>>,
    engine: Option<SyncEngine>,
    /// `cloud.toml`'s (mtime, size) when the engine was opened: a `cloud set` reopens it.
    settings_stamp: Option<(SystemTime, u64)>,
    homes: BTreeMap<String, Home>,
    views: Arc<Mutex<Vec<HomeView>>>,
    pull_every: Duration,
    on_demand: Option<Arc<OnDemand>>,
}

impl Syncer {
    fn run(mut self, receiver: &mpsc::Receiver<Message>) {
        // The start-up scan: every known home, at once.
        self.refresh_homes();
        let start = Instant::now();
        for home in self.homes.values_mut() {
            home.dirty = Some((start - MAX_DELAY, start - DEBOUNCE));
        }
        let mut next_pull = start + self.pull_every;
        let mut next_gc = start + GC_INTERVAL;
        loop {
            self.sync_due();
            let now = Instant::now();
            if now >= next_pull {
                self.pull();
                next_pull = Instant::now() + self.pull_every;
            }
            if now >= next_gc {
                self.collect_garbage();
                next_gc = Instant::now() + GC_INTERVAL;
            }
            self.publish_views();
            let wake = self
                .homes
                .values()
                .filter_map(Home::due)
                .min()
                .map_or(next_pull, |due| due.min(next_pull));
            let message =
                match receiver.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                    Ok(message) => message,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                };
            let now = Instant::now();
            match message {
                Message::Changed(key) => {
                    if let Some(home) = self.homes.get_mut(&key) {
                        home.mark_dirty(now);
                    }
                }
                Message::Overflow => {
                    for home in self.homes.values_mut() {
                        home.mark_dirty(now);
                    }
                }
                Message::Sync { app, reply } => {
                    let key = app.key();
                    let home = self.homes.entry(key.clone()).or_insert_with(|| Home {
                        app: app.clone(),
                        dirty: None,
                        failures: 0,
                        retry_at: None,
                        last_error: None,
                        last_sync: None,
                        stopped: false,
                    });
                    if app.name.is_some() {
                        home.app.name = app.name;
                    }
                    home.app.sync = true;
                    let _ = reply.send(self.sync(&key));
                }
                Message::Evict { app, paths, reply } => {
                    let _ = reply.send(self.evict(&app, &paths));
                }
                Message::Pin {
                    app,
                    paths,
                    pin,
                    reply,
                } => {
                    let result = self.engine().and_then(|engine| {
                        let done = if pin {
                            engine.pin(&app.home_ref(), &app.home, &paths, app.owner())
                        } else {
                            engine.unpin(&app.home_ref(), &paths)
                        };
                        done.map_err(|e| elastos_host::describe_error(&e))
                    });
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Adds the homes this machine knows now and drops those that stopped syncing.
    fn refresh_homes(&mut self) {
        let apps = match cloud::app_homes(&self.state) {
            Ok(apps) => apps,
            Err(e) => {
                tracing::warn!(error = %elastos_host::describe_error(&e), "cannot list the app homes");
                return;
            }
        };
        for app in apps {
            let key = app.key();
            if !app.sync {
                if self.homes.remove(&key).is_some() {
                    if let Some(watcher) = &self.watcher {
                        watcher.unwatch_home(&key);
                    }
                }
                continue;
            }
            self.homes.entry(key).or_insert_with(|| Home {
                app,
                dirty: None,
                failures: 0,
                retry_at: None,
                last_error: None,
                last_sync: None,
                stopped: false,
            });
        }
    }

    fn sync_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .homes
            .iter()
            .filter(|(_, home)| home.due().is_some_and(|due| due <= now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            let _ = self.sync(&key);
        }
    }

    /// The engine, opened (again, after `cloud set`) when needed.
    fn engine(&mut self) -> Result<&SyncEngine, String> {
        let stamp = std::fs::metadata(&self.state.cloud_config)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp != self.settings_stamp {
            self.engine = None;
        }
        if self.engine.is_none() {
            let opened = cloud::store(&self.state).and_then(|store| {
                let engine = cloud::engine(&self.state, &store)?;
                tracing::info!(store = %store.config.url, device = engine.device(), "syncing app homes continuously");
                Ok(engine)
            });
            let mut engine = opened.map_err(|e| elastos_host::describe_error(&e))?;
            if let Some(on_demand) = &self.on_demand {
                engine.set_placeholder_hook(on_demand.hook());
                on_demand.reopen();
            }
            self.engine = Some(engine);
            self.settings_stamp = stamp;
        }
        Ok(self.engine.as_ref().expect("just opened"))
    }

    /// Syncs one home, records how it went, tells the app what changed, and watches the home.
    fn sync(&mut self, key: &str) -> Result<SyncReport, String> {
        let Some(app) = self.homes.get(key).map(|h| h.app.clone()) else {
            return Err(format!("no home {key}"));
        };
        let options = SyncOptions {
            owner: app.owner(),
            ..SyncOptions::default()
        };
        // The error for people, and whether it is the safety stop (not retried).
        let result =
            self.engine().map_err(|e| (e, false)).and_then(|engine| {
                engine
                    .sync(&app.home_ref(), &app.home, &options)
                    .map_err(|e| match e {
                        SyncError::MassDelete { .. } => (
                            format!(
                            "{}; run `elastos sync now {} --confirm-mass-delete` if it is intended",
                            elastos_host::describe_error(&e),
                            app.name.as_deref().map_or(app.app_id.to_string(), str::to_owned)
                        ),
                            true,
                        ),
                        e => (elastos_host::describe_error(&e), false),
                    })
            });
        let home = self.homes.get_mut(key).expect("checked");
        let now = Instant::now();
        match &result {
            Ok(report) => {
                home.dirty = None;
                home.failures = 0;
                home.retry_at = None;
                home.last_error = None;
                home.stopped = false;
                home.last_sync = Some(SystemTime::now());
                tracing::debug!(home = %app.label(), version = report.version, up = report.uploaded.len(), down = report.downloaded.len(), "synced");
                notify_app(&self.broker, &app, report);
            }
            Err((error, safety_stop)) => {
                home.failures += 1;
                home.last_error = Some(error.clone());
                if *safety_stop {
                    home.stopped = true;
                    home.dirty = None;
                } else {
                    home.retry_at = Some(now + backoff(home.failures));
                    // A failed sync is retried whether or not the home changes again.
                    if home.dirty.is_none() {
                        home.dirty = Some((now, now));
                    }
                }
                tracing::warn!(home = %app.label(), failures = home.failures, error = %error, "sync failed; the app keeps its local copy");
            }
        }
        if let Some(watcher) = &self.watcher {
            watcher.watch_home(key, &app.home);
        }
        if result.is_ok() {
            self.mark_placeholders(&app);
        }
        result.map_err(|(error, _)| error)
    }

    /// Marks the home's recorded placeholders for fanotify after each sync: the daemon's own are
    /// marked as they are made, but `elastos sync now` may have made some (marking twice is
    /// harmless; it costs an `open` per evicted file).
    fn mark_placeholders(&self, app: &AppHome) {
        if let (Some(on_demand), Some(engine)) = (&self.on_demand, &self.engine) {
            on_demand.mark_home(engine, &app.home_ref(), &app.home);
        }
    }

    /// Evicts files of a home (files on demand needs the fanotify group).
    fn evict(&mut self, app: &AppHome, paths: &[PathBuf]) -> Result<EvictReport, String> {
        if self.on_demand.is_none() {
            return Err("files on demand are not available in this daemon (its log says why:                         fanotify pre-content events need root and Linux 6.14 or later); nothing                         was evicted"
                .to_owned());
        }
        let engine = self.engine()?;
        engine
            .evict(&app.home_ref(), &app.home, paths)
            .map_err(|e| elastos_host::describe_error(&e))
    }

    /// Asks the store whether another device changed a home (one listing each) and syncs those
    /// that changed, and every home that is not watched.
    fn pull(&mut self) {
        self.refresh_homes();
        let now = Instant::now();
        let keys: Vec<String> = self
            .homes
            .iter()
            .filter(|(_, home)| home.retry_at.is_none_or(|at| at <= now) && !home.stopped)
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            let watched = self.watcher.as_ref().is_some_and(|w| w.is_watched(&key));
            let app = self.homes[&key].app.clone();
            let changed = if watched {
                // On an error the sync below says what failed and sets the retry.
                self.engine()
                    .and_then(|engine| {
                        engine
                            .remote_changed(&app.home_ref())
                            .map_err(|e| elastos_host::describe_error(&e))
                    })
                    .unwrap_or(true)
            } else {
                true
            };
            if changed {
                let _ = self.sync(&key);
            }
        }
    }

    fn collect_garbage(&mut self) {
        let collected = self.engine().and_then(|engine| {
            engine
                .gc(&GcOptions::default())
                .map_err(|e| elastos_host::describe_error(&e))
        });
        match collected {
            Ok(report) => tracing::info!(?report, "collected garbage in the cloud disk"),
            Err(error) => {
                tracing::warn!(%error, "garbage collection of the cloud disk failed; trying again tomorrow")
            }
        }
    }

    fn publish_views(&self) {
        let now = Instant::now();
        let views = self
            .homes
            .values()
            .map(|home| HomeView {
                app: home.app.clone(),
                watching: match &self.watcher {
                    Some(watcher) => watcher.watching(&home.app.key()),
                    None => Watching::Polled,
                },
                pending: home.dirty.is_some(),
                last_sync: home.last_sync.map(elastos_cloudsync::time::format_rfc3339),
                last_error: home.last_error.clone(),
                failures: home.failures,
                retry_in_ms: home
                    .retry_at
                    .map(|at| at.saturating_duration_since(now).as_millis() as u64),
            })
            .collect();
        *self.views.lock().expect("not poisoned") = views;
    }
}

/// Tells the app what a sync changed in its home from the store, if anything.
fn notify_app(broker: &Broker, app: &AppHome, report: &SyncReport) {
    if report.downloaded.is_empty()
        && report.deleted_locally.is_empty()
        && report.conflicts.is_empty()
    {
        return;
    }
    let Some(publisher) = hex::decode(&app.publisher)
        .ok()
        .and_then(|key| <[u8; 32]>::try_from(key).ok())
    else {
        return;
    };
    let bytes = |path: &Path| path.as_os_str().as_bytes().to_vec();
    let mut changed: Vec<Vec<u8>> = report.downloaded.iter().map(|p| bytes(p)).collect();
    let mut deleted: Vec<Vec<u8>> = report.deleted_locally.iter().map(|p| bytes(p)).collect();
    changed.sort();
    deleted.sort();
    let event = wire::HomeChanged {
        version: report.version,
        changed,
        deleted,
        conflicts: report
            .conflicts
            .iter()
            .map(|c| wire::Conflict {
                path: bytes(&c.path),
                copy: bytes(&c.copy),
            })
            .collect(),
        synced_at_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let told = broker.notify_app(
        app.app_id,
        publisher,
        Uuid::from_bytes(CLOUD_SYNC_SERVICE),
        CHANGES_TOPIC,
        event.encode_to_vec(),
    );
    tracing::debug!(home = %app.label(), connections = told, "told the app what changed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> Home {
        Home {
            app: AppHome {
                name: None,
                app_id: Uuid::nil(),
                publisher: "00".repeat(32),
                home: PathBuf::from("/nonexistent"),
                sync: true,
            },
            dirty: None,
            failures: 0,
            retry_at: None,
            last_error: None,
            last_sync: None,
            stopped: false,
        }
    }

    #[test]
    fn a_home_syncs_after_the_debounce_or_at_the_longest_delay() {
        let mut h = home();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(h.due(), None, "nothing changed");
        h.mark_dirty(t0);
        assert_eq!(h.due(), Some(t0 + DEBOUNCE));
        h.mark_dirty(t0 + s(1));
        assert_eq!(
            h.due(),
            Some(t0 + s(1) + DEBOUNCE),
            "a new change restarts it"
        );
        h.mark_dirty(t0 + s(29));
        assert_eq!(h.due(), Some(t0 + MAX_DELAY), "changes that never pause");
        h.retry_at = Some(t0 + s(60));
        assert_eq!(h.due(), Some(t0 + s(60)), "a retry waits for its time");
        h.stopped = true;
        assert_eq!(h.due(), None, "a safety stop waits for the user");
    }

    #[test]
    fn retries_back_off_from_5_s_to_5_min() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
