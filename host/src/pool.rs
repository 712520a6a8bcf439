//! Warm jails: supervisor threads parked ahead of time, each holding a jail's first process
//! already in its new namespaces ([`elastos_loader::spawn`]), so that a daemon's detached run or
//! activation skips the clone and the namespaces at start and does only what depends on the app
//! ([`elastos_loader::PendingJail::start`]: id maps, bundle and home mounts, Landlock, seccomp,
//! exec).
//!
//! A pending jail belongs to the thread that cloned it: its signals are blocked there and it dies
//! with that thread (PR_SET_PDEATHSIG). So the pool parks threads, not processes: a start job
//! ([`JailPool::run`]) is handed to a parked thread, which runs it with its pending jail in
//! reach of [`take_parked`] (called by [`crate::apps::start_app`]); a replacement is parked in
//! the background once that start is over ([`Refill`]). With no parked thread (pool size 0, or
//! all taken) the job runs on a new thread and starts cold, as before.
//!
//! What a parked jail costs while it waits is in [`JailPool::stats`]. [`JailPool::shutdown`]
//! kills and reaps every parked jail, which removes what it holds (its limits' cgroups are the
//! app's, made at start).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use elastos_loader::{LaunchOptions, PendingJail};
use serde::Serialize;

/// The default number of warm jails of each kind (detached runs, activations).
pub const DEFAULT_POOL_SIZE: usize = 2;

/// A start job: runs on the thread that will supervise the app, for the app's whole life.
pub type StartJob = Box<dyn FnOnce() + Send + 'static>;

/// Which launches a parked jail serves: its stdio is made at spawn and differs between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailKind {
    /// A detached run (`elastos run -d`): stdout and stderr captured for the app's log.
    Detached,
    /// An activated provider: stdin empty, stdout and stderr relayed to the daemon's.
    Activation,
}

impl JailKind {
    const ALL: [JailKind; 2] = [JailKind::Detached, JailKind::Activation];

    fn of(options: &LaunchOptions) -> Option<JailKind> {
        match (options.attached, options.capture_output) {
            (false, true) => Some(JailKind::Detached),
            (false, false) => Some(JailKind::Activation),
            (true, _) => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn options(self, base: &LaunchOptions) -> LaunchOptions {
        LaunchOptions {
            attached: false,
            capture_output: self == JailKind::Detached,
            ..base.clone()
        }
    }
}

thread_local! {
    /// The pending jail of a pooled thread, between taking a job and the job's start, with the
    /// refill of its place.
    static PARKED: RefCell<Option<(JailKind, PendingJail, Refill)>> = const { RefCell::new(None) };
}

/// Parks a replacement for a taken warm jail when dropped. The start that took the jail holds
/// it until it is over: cloning the replacement copies the whole daemon's address space (its
/// page tables, ~0.5 ms here, with the daemon's memory map locked meanwhile) and leaves every
/// page of the daemon to fault once more on its next write, so done at once it competed with
/// the very start it replaced for the two CPUs and the memory map (a warm start on a quiet
/// machine was slower than a cold one, its verify-and-plan step 3.0 ms against 1.3).
#[must_use = "dropping it refills the pool at once"]
pub struct Refill(JailPool, JailKind);

impl Drop for Refill {
    fn drop(&mut self) {
        self.0.refill(self.1);
    }
}

/// The calling thread's warm jail, if it is a pooled thread running its job and its jail was
/// made for `options` (same stdio) and still waits, with the [`Refill`] to drop once its start
/// is over; otherwise None and the caller spawns one. (A parked process killed from outside is
/// a zombie until its jail is dropped: starting it would fail the start, so it is dropped, its
/// place refilled, and the start goes cold.)
pub fn take_parked(options: &LaunchOptions) -> Option<(PendingJail, Refill)> {
    let kind = JailKind::of(options)?;
    PARKED.with(|parked| {
        let mut parked = parked.borrow_mut();
        match parked.take() {
            Some((parked_kind, jail, refill)) if parked_kind == kind => {
                if waiting(jail.pid()) {
                    Some((jail, refill))
                } else {
                    tracing::warn!(pid = jail.pid(), "a parked warm jail died; starting cold");
                    None
                }
            }
            other => {
                *parked = other;
                None
            }
        }
    })
}

/// Parked supervisor threads with their warm jails. Cloning shares the pool.
#[derive(Clone)]
pub struct JailPool(Arc<PoolState>);

struct PoolState {
    size: usize,
    options: LaunchOptions,
    slots: Mutex<Slots>,
    changed: Condvar,
    warm_starts: AtomicU64,
    cold_starts: AtomicU64,
    spawn_failures: AtomicU64,
    /// Parked threads alive (cloning, or waiting for a job).
    live: AtomicUsize,
}

#[derive(Default)]
struct Slots {
    /// Parked threads ready for a job, by kind.
    parked: [Vec<Parked>; 2],
    /// Threads cloning their jail, not yet parked, by kind.
    warming: [usize; 2],
    stopping: bool,
}

struct Parked {
    /// The job, or a closed channel to end (the jail is killed and reaped).
    jobs: mpsc::Sender<StartJob>,
    /// The jail's first process, for its idle cost.
    pid: i32,
}

/// How many warm jails there are and what they cost, for `elastos metrics`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PoolStats {
    /// Configured warm jails per kind.
    pub size: usize,
    /// Warm jails parked now (all kinds).
    pub parked: usize,
    /// Starts that took a warm jail.
    pub warm_starts: u64,
    /// Starts that found none and cloned their own.
    pub cold_starts: u64,
    /// Warm jails that could not be made.
    pub spawn_failures: u64,
    /// Proportional set size of the parked jails' processes, in bytes (the parked threads
    /// themselves: their touched stack only, a few KiB each, within the daemon's own memory).
    /// Bounded: a parked process drops its copy of the daemon's heaps and other threads'
    /// stacks as soon as it is cloned (`release_parent_memory` in `elastos_loader`'s `sys`),
    /// so the daemon's later writes copy nothing for it; what it keeps (its thread's stack and
    /// arena, the program's data) is ~0.5 MiB of Pss here, shared pages of the binary included.
    pub idle_pss_bytes: u64,
}

/// After this many failed spawns in a row the pool stops refilling a kind: a kernel refusing
/// namespaces would otherwise be asked again at every start.
const MAX_FAILED_REFILLS: u64 = 8;

impl JailPool {
    /// A pool of `size` warm jails of each kind, launched with `options` (those of the daemon's
    /// launcher); filled in the background. `size` 0: no pool, every start is cold.
    pub fn new(size: usize, options: LaunchOptions) -> JailPool {
        let pool = JailPool(Arc::new(PoolState {
            size,
            options,
            slots: Mutex::new(Slots::default()),
            changed: Condvar::new(),
            warm_starts: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
            spawn_failures: AtomicU64::new(0),
            live: AtomicUsize::new(0),
        }));
        for kind in JailKind::ALL {
            pool.refill(kind);
        }
        pool
    }

    /// Runs `job` on a parked thread whose warm jail fits `options` (see [`take_parked`]), or on
    /// a new thread named `name` when none is parked.
    pub fn run(&self, options: &LaunchOptions, name: String, job: StartJob) -> std::io::Result<()> {
        let mut job = job;
        if let Some(kind) = JailKind::of(options) {
            loop {
                let parked = self.lock().parked[kind.index()].pop();
                let Some(parked) = parked else { break };
                match parked.jobs.send(job) {
                    // Refilled once its start is over (see `Refill`).
                    Ok(()) => {
                        self.0.warm_starts.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    // That thread is gone (its jail died): try the next one.
                    Err(mpsc::SendError(returned)) => job = returned,
                }
            }
        }
        self.0.cold_starts.fetch_add(1, Ordering::Relaxed);
        std::thread::Builder::new().name(name).spawn(job).map(drop)
    }

    /// What the pool holds now and what it costs idle.
    pub fn stats(&self) -> PoolStats {
        let pids: Vec<i32> = {
            let slots = self.lock();
            slots.parked.iter().flatten().map(|p| p.pid).collect()
        };
        PoolStats {
            size: self.0.size,
            parked: pids.len(),
            warm_starts: self.0.warm_starts.load(Ordering::Relaxed),
            cold_starts: self.0.cold_starts.load(Ordering::Relaxed),
            spawn_failures: self.0.spawn_failures.load(Ordering::Relaxed),
            idle_pss_bytes: pids.iter().filter_map(|pid| pss_bytes(*pid)).sum(),
        }
    }

    /// Ends every parked thread (its jail killed and reaped) and parks no more; waits up to
    /// `within` for threads still cloning their jail. Jobs already taken are the launcher's to
    /// stop.
    pub fn shutdown(&self, within: Duration) {
        let mut slots = self.lock();
        slots.stopping = true;
        // Dropping the senders wakes each parked thread with a closed channel.
        let parked: Vec<Parked> = slots.parked.iter_mut().flat_map(std::mem::take).collect();
        drop(parked);
        let deadline = Instant::now() + within;
        while slots.warming.iter().sum::<usize>() > 0 || slots.parked.iter().any(|p| !p.is_empty())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("warm jails still being made when the daemon stopped");
                break;
            }
            slots = self
                .0
                .changed
                .wait_timeout(slots, left)
                .expect("not poisoned")
                .0;
        }
        drop(slots);
        // Each parked thread reaps its jail as it ends; wait for those ends.
        while self.0.live_threads() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.0.slots.lock().expect("not poisoned")
    }

    /// Parks new threads of `kind` until there are `size` (parked or warming).
    fn refill(&self, kind: JailKind) {
        if self.0.spawn_failures.load(Ordering::Relaxed) >= MAX_FAILED_REFILLS {
            return;
        }
        let mut slots = self.lock();
        while !slots.stopping
            && slots.parked[kind.index()].len() + slots.warming[kind.index()] < self.0.size
        {
            slots.warming[kind.index()] += 1;
            let pool = self.clone();
            let spawned = std::thread::Builder::new()
                .name("elastos-warm-jail".into())
                .spawn(move || pool.park(kind));
            if let Err(e) = spawned {
                slots.warming[kind.index()] -= 1;
                tracing::warn!(error = %e, "cannot start a warm jail's thread");
                return;
            }
        }
    }

    /// The body of a parked thread: clone the jail, wait for a job, run it with the jail.
    fn park(&self, kind: JailKind) {
        let live = LiveThread::enter(&self.0);
        let began = Instant::now();
        let spawned = {
            let _no_writers = elastos_bundle::exec_fork_lock()
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            elastos_loader::spawn(&kind.options(&self.0.options))
        };
        let (jobs, job) = mpsc::channel::<StartJob>();
        let jail = {
            let mut slots = self.lock();
            slots.warming[kind.index()] -= 1;
            self.0.changed.notify_all();
            match spawned {
                Ok(jail) if !slots.stopping => {
                    self.0.spawn_failures.store(0, Ordering::Relaxed);
                    slots.parked[kind.index()].push(Parked {
                        jobs,
                        pid: jail.pid(),
                    });
                    jail
                }
                Ok(_) => return,
                Err(e) => {
                    self.0.spawn_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %crate::describe_error(&e), "cannot make a warm jail");
                    return;
                }
            }
        };
        tracing::debug!(?kind, pid = jail.pid(), took = ?began.elapsed(), "warm jail parked");
        match job.recv() {
            Ok(job) => {
                let refill = Refill(self.clone(), kind);
                PARKED.with(|parked| *parked.borrow_mut() = Some((kind, jail, refill)));
                drop(live);
                job();
                // A job that did not start an app (it failed before) leaves the jail: kill it,
                // and refill its place.
                PARKED.with(|parked| drop(parked.borrow_mut().take()));
            }
            // The pool stops: the jail is killed and reaped before the thread counts as gone.
            Err(mpsc::RecvError) => drop((jail, live)),
        }
    }
}

impl PoolState {
    fn live_threads(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

/// Counts a parked thread until it took a job or ended (with its jail reaped).
struct LiveThread<'a>(&'a PoolState);

impl<'a> LiveThread<'a> {
    fn enter(state: &'a PoolState) -> LiveThread<'a> {
        state.live.fetch_add(1, Ordering::SeqCst);
        LiveThread(state)
    }
}

impl Drop for LiveThread<'_> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether process `pid` exists and has not exited (its state in /proc/PID/stat, after the
/// command name, is not Z or X).
fn waiting(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// The proportional set size of process `pid` (`Pss:` of /proc/PID/smaps_rollup), in bytes.
fn pss_bytes(pid: i32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib = rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Options whose loader is never run: a parked jail execs it only at start.
    fn options() -> LaunchOptions {
        LaunchOptions {
            loader: "/bin/true".into(),
            allow_without_kernel_sandbox: false,
            no_cgroup: true,
            attached: false,
            capture_output: true,
            runtime_dir: "/nonexistent".into(),
        }
    }

    fn parked_pids(pool: &JailPool) -> Vec<i32> {
        pool.lock().parked.iter().flatten().map(|p| p.pid).collect()
    }

    fn eventually(mut condition: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if condition() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn parked_jails_are_reaped_at_shutdown() {
        let pool = JailPool::new(1, options());
        assert!(eventually(|| parked_pids(&pool).len() == 2));
        let stats = pool.stats();
        assert_eq!((stats.size, stats.parked), (1, 2));
        assert!(stats.idle_pss_bytes > 0, "{stats:?}");
        let last = parked_pids(&pool);
        pool.shutdown(Duration::from_secs(5));
        assert_eq!(pool.0.live_threads(), 0);
        assert!(last
            .iter()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists()));
        // A stopped pool parks no more, and a start runs cold.
        let (done, finished) = mpsc::channel();
        let detached = options();
        pool.run(
            &detached,
            "cold".into(),
            Box::new(move || done.send(take_parked(&options()).is_none()).unwrap()),
        )
        .unwrap();
        assert!(finished.recv().unwrap(), "a stopped pool handed out a jail");
        assert_eq!(pool.stats().cold_starts, 1);
    }

    /// A taken jail's replacement is cloned once the start that took it is over, not while it
    /// runs: the clone competed with it (see [`Refill`]).
    #[test]
    fn a_taken_jail_is_replaced_after_its_start() {
        let pool = JailPool::new(1, options());
        assert!(eventually(|| parked_pids(&pool).len() == 2));
        let detached = |pool: &JailPool| pool.lock().parked[JailKind::Detached.index()].len();
        let (started, start) = mpsc::channel();
        let (finish, finished) = mpsc::channel::<()>();
        pool.run(
            &options(),
            "job".into(),
            Box::new(move || {
                let taken = take_parked(&options());
                started.send(taken.is_some()).unwrap();
                // The start runs until told to finish; the jail and the refill drop after it.
                finished.recv().unwrap();
                drop(taken);
            }),
        )
        .unwrap();
        assert!(start.recv().unwrap(), "no warm jail");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(detached(&pool), 0, "refilled during the start");
        finish.send(()).unwrap();
        assert!(eventually(|| detached(&pool) == 1), "not refilled after it");
        pool.shutdown(Duration::from_secs(5));
    }

    /// The parked jail's process drops its copy of the daemon's memory
    /// (`elastos_loader::sys::release_parent_memory`): the daemon's writes afterwards copy
    /// nothing for it, and its Pss stays that of the little it keeps. Before, a parked jail held
    /// a copy-on-write image of the whole daemon, and each page the daemon wrote was copied for
    /// it: 64 MiB here.
    #[test]
    fn a_parked_jail_keeps_no_copy_of_the_daemons_memory() {
        const BALLAST: usize = 64 << 20;
        // Written before the jail is cloned, so shared with its copy...
        let mut ballast = vec![1u8; BALLAST];
        let pool = JailPool::new(1, options());
        assert!(eventually(|| parked_pids(&pool).len() == 2));
        // ...and again after: a page still shared is copied, the copy counted to the jail.
        for page in ballast.chunks_mut(4096) {
            page[0] = 2;
        }
        std::hint::black_box(&ballast);
        let small = |stats: &PoolStats| stats.idle_pss_bytes < (BALLAST / 8) as u64;
        assert!(
            eventually(|| small(&pool.stats())),
            "parked jails' Pss {} bytes with {BALLAST} bytes written by their parent",
            pool.stats().idle_pss_bytes
        );
        pool.shutdown(Duration::from_secs(5));
    }

    #[test]
    fn a_parked_jail_killed_from_outside_is_not_handed_out() {
        let pool = JailPool::new(1, options());
        assert!(eventually(|| parked_pids(&pool).len() == 2));
        let detached = pool.lock().parked[JailKind::Detached.index()][0].pid;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(detached),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        assert!(eventually(|| !waiting(detached)));
        let (sent, received) = mpsc::channel();
        pool.run(
            &options(),
            "job".into(),
            Box::new(move || sent.send(take_parked(&options()).is_none()).unwrap()),
        )
        .unwrap();
        assert!(received.recv().unwrap(), "a dead jail was handed out");
        // Reaped when its thread dropped it.
        assert!(eventually(
            || !Path::new(&format!("/proc/{detached}")).exists()
        ));
        pool.shutdown(Duration::from_secs(5));
    }

    #[test]
    fn a_job_gets_the_jail_of_its_kind_only() {
        let pool = JailPool::new(1, options());
        assert!(eventually(|| parked_pids(&pool).len() == 2));
        let (sent, received) = mpsc::channel();
        let activation = LaunchOptions {
            capture_output: false,
            ..options()
        };
        let asked = activation.clone();
        pool.run(
            &activation,
            "job".into(),
            Box::new(move || {
                let wrong_kind = take_parked(&options()).is_some();
                let right_kind = take_parked(&asked).map(|(jail, _refill)| jail.pid());
                sent.send((wrong_kind, right_kind)).unwrap();
            }),
        )
        .unwrap();
        let (wrong_kind, right_kind) = received.recv().unwrap();
        assert!(!wrong_kind);
        assert!(right_kind.is_some_and(|pid| pid > 0));
        assert_eq!(pool.stats().warm_starts, 1);
        // Refilled.
        assert!(eventually(|| parked_pids(&pool).len() == 2));
        pool.shutdown(Duration::from_secs(5));
    }
}
