//! Detached runs (`elastos run -d`): the daemon's instances, each supervised by a thread of its
//! own through the activator's supervision ([`AppLauncher::run_supervised`], the same as an
//! activated provider's), restarted by its policy with exponential backoff, its output kept in
//! a capped, rotated log ([`elastos_host::applog`]).
//!
//! Each instance's record ([`InstanceRecord`]) is kept beside its logs and rewritten at every
//! change of state, so that the next daemon lists it, keeps its logs and restarts it when its
//! policy says so ([`Supervisor::new`], [`Supervisor::resume`]). A daemon that stops stops its
//! instances first; one that dies (SIGKILL, a crash) takes them with it (the kernel kills each
//! jail when its supervisor thread ends, PR_SET_PDEATHSIG), and the next daemon removes the
//! cgroups their records name.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use elastos_broker::{Broker, ConnectionId, Origin};
use elastos_host::activator::{AppLauncher, RunStarted, SupervisedRun};
use elastos_host::applog::{LogLimits, LogWriter, Stream};
use elastos_host::control::{self, AppView};
use elastos_host::detached::{
    self, backoff_delay, DetachedRun, EndCause, InstanceRecord, InstanceState, InstanceView,
    RunRecord, BACKOFF_RESET_AFTER, MAX_RUN_RECORDS, RECORD_VERSION,
};
use elastos_host::pool::{JailPool, PoolStats};
use elastos_loader::{CapturedOutput, JailFacts, JailHandle, LimitMechanism};
use elastos_policy::{JailPlan, Manifest};
use nix::sys::signal::Signal;
use serde::Serialize;
use uuid::Uuid;

/// How long a stop waits for the app to be gone after SIGKILL (it only has to be reaped).
const KILL_GRACE: Duration = Duration::from_secs(10);

/// The daemon's detached instances.
#[derive(Clone)]
pub struct Supervisor(Arc<Shared>);

struct Shared {
    launcher: AppLauncher,
    broker: Broker,
    runtime: tokio::runtime::Handle,
    logs: PathBuf,
    log_limits: LogLimits,
    /// Oldest first.
    instances: Mutex<Vec<Arc<Instance>>>,
    shutting_down: AtomicBool,
}

/// One detached instance: its fixed facts, and its life under a lock with a condition variable
/// that every change of state notifies (stops and restarts wait on it).
pub struct Instance {
    id: String,
    spec: DetachedRun,
    created_at: u64,
    log_dir: PathBuf,
    log: Arc<Mutex<LogWriter>>,
    live: Mutex<Live>,
    changed: Condvar,
}

struct Live {
    app_id: Uuid,
    name: String,
    state: InstanceState,
    /// Restarts made by the policy.
    restarts: u32,
    /// Restarts in a row since a run lasted [`BACKOFF_RESET_AFTER`]: the backoff's exponent.
    consecutive: u32,
    current: Option<CurrentRun>,
    exit_code: Option<i32>,
    /// A stop was asked for: the policy does not restart it, a pending restart is cancelled.
    stop_requested: bool,
    /// The supervisor thread has ended (the state is `Exited` for good unless restarted).
    supervised: bool,
    runs: VecDeque<RunRecord>,
    /// The manifest and plan of the latest run (none for an instance restored from its record
    /// until it runs again).
    prepared: Option<(Manifest, JailPlan)>,
    facts: Option<JailFacts>,
    /// What ended the latest run.
    ended_by: Option<EndCause>,
    /// The SHA-256 of the bundle of the latest run.
    bundle_digest: Option<String>,
}

struct CurrentRun {
    handle: JailHandle,
    pid: u32,
    since: Instant,
    connection: Option<ConnectionId>,
}

/// A request about instances failed; the message is the control socket's answer.
pub type Answer<T> = Result<T, String>;

impl Supervisor {
    /// Instances started through `launcher`, attached to `broker` on `runtime`, logged under
    /// `logs` with `log_limits`; with the instances a previous daemon left there, none running
    /// ([`restore`]). [`Supervisor::resume`] then restarts those whose policy says so.
    pub fn new(
        launcher: AppLauncher,
        broker: Broker,
        runtime: tokio::runtime::Handle,
        logs: PathBuf,
        log_limits: LogLimits,
    ) -> Supervisor {
        let instances = restore(&logs, log_limits);
        Supervisor(Arc::new(Shared {
            launcher,
            broker,
            runtime,
            logs,
            log_limits,
            instances: Mutex::new(instances),
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// Starts again, on a thread of their own, the restored instances whose restart policy
    /// says so after a daemon restart ([`detached::RestartPolicy::restarts_on_daemon_start`]).
    /// They are `restarting` (and supervised) from now on, so that a stop asked for before
    /// their turn comes is not undone by it.
    pub fn resume(&self) {
        let resumed: Vec<Arc<Instance>> = self
            .0
            .instances
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|i| i.spec.restart.restarts_on_daemon_start(i.lock().ended_by))
            .cloned()
            .collect();
        if resumed.is_empty() {
            return;
        }
        for instance in &resumed {
            ready_to_start(instance, InstanceState::Restarting);
        }
        let supervisor = self.clone();
        let spawned = std::thread::Builder::new()
            .name("elastos-resume".into())
            .spawn(move || {
                for instance in resumed {
                    tracing::info!(instance = %instance.id, policy = %instance.spec.restart, "restarting a detached app after the daemon restarted");
                    if let Err(error) = supervisor.start_ready(&instance) {
                        tracing::warn!(instance = %instance.id, %error, "could not restart a detached app after the daemon restarted");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot restart the detached apps of the previous daemon");
        }
    }

    /// Starts an instance that is not supervised (exited) again: its first run's result.
    fn start_again(&self, instance: &Arc<Instance>) -> Answer<()> {
        ready_to_start(instance, InstanceState::Running);
        self.start_ready(instance)
    }

    /// Starts the supervisor of an instance [`ready_to_start`]; if it cannot start, the
    /// instance is exited again.
    fn start_ready(&self, instance: &Arc<Instance>) -> Answer<()> {
        let started = self.start_supervisor(instance);
        if started.is_err() {
            let mut live = instance.lock();
            live.supervised = false;
            live.state = InstanceState::Exited;
            instance.changed.notify_all();
        }
        started
    }

    /// The warm jails of the launcher's pool, if it has one.
    pub fn pool_stats(&self) -> Option<PoolStats> {
        self.0.launcher.pool().map(JailPool::stats)
    }

    /// `elastos run -d`: starts `spec` and answers once its first run is up (its view) or
    /// failed to start (the error; no instance is kept then).
    pub fn run(&self, spec: DetachedRun) -> Answer<InstanceView> {
        if !spec.bundle.is_absolute() {
            return Err(format!(
                "the bundle path must be absolute, found {}",
                spec.bundle.display()
            ));
        }
        let id = detached::new_instance_id().map_err(|e| format!("no instance id: {e}"))?;
        let log_dir = self.0.logs.join(&id);
        let log = LogWriter::open(&log_dir, self.0.log_limits)
            .map_err(|e| elastos_host::describe_error(&e))?;
        let instance = Arc::new(Instance {
            id,
            spec,
            created_at: detached::now_ms() / 1000,
            log_dir,
            log: Arc::new(Mutex::new(log)),
            live: Mutex::new(Live {
                app_id: Uuid::nil(),
                name: String::new(),
                state: InstanceState::Running,
                restarts: 0,
                consecutive: 0,
                current: None,
                exit_code: None,
                stop_requested: false,
                supervised: true,
                runs: VecDeque::new(),
                prepared: None,
                facts: None,
                ended_by: None,
                bundle_digest: None,
            }),
            changed: Condvar::new(),
        });
        // Made durable with the first run's record, after the answer (see `supervise`).
        instance.save_unsynced(&instance.lock());
        self.0
            .instances
            .lock()
            .expect("not poisoned")
            .push(Arc::clone(&instance));
        match self.start_supervisor(&instance) {
            Ok(()) => Ok(self.view(&instance)),
            Err(e) => {
                self.forget(&instance);
                Err(e)
            }
        }
    }

    /// Starts the supervisor thread of `instance` and waits for its first run to be up.
    fn start_supervisor(&self, instance: &Arc<Instance>) -> Answer<()> {
        if self.0.shutting_down.load(Ordering::SeqCst) {
            return Err("the broker daemon is stopping".into());
        }
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let (supervisor, supervised) = (self.clone(), Arc::clone(instance));
        self.0
            .launcher
            .spawn_supervisor(
                true,
                format!("elastos-run-{}", &instance.id[..12]),
                Box::new(move || supervisor.supervise(&supervised, first_tx)),
            )
            .map_err(|e| format!("cannot start a supervisor thread: {e}"))?;
        first_rx
            .recv()
            .unwrap_or_else(|_| Err("the supervisor thread ended".into()))
    }

    /// The supervisor thread of one instance: runs, restarts by the policy after the backoff,
    /// until it ends for good or is stopped. `first` hears how the first run started.
    fn supervise(&self, instance: &Arc<Instance>, first: std::sync::mpsc::Sender<Answer<()>>) {
        let mut first = Some(first);
        let mut delay = Duration::ZERO;
        loop {
            let run = SupervisedRun {
                bundle: &instance.spec.bundle,
                args: &instance.spec.args,
                capture_output: true,
                overrides: instance.spec.overrides,
            };
            let began = Instant::now();
            let ended =
                self.0
                    .launcher
                    .run_supervised(self.0.launcher.next_instance(), &run, |started| {
                        // The first run's record goes to the disk after `elastos run -d` has
                        // its answer, not before (InstanceRecord::save_unsynced says why).
                        let keep = self.started(instance, started, delay, first.is_none());
                        if let Some(first) = first.take() {
                            let _ = first.send(Ok(()));
                            instance.sync_record();
                        }
                        keep
                    });
            let exit_code = match ended {
                Ok(exit) => exit.code(),
                Err(e) => {
                    let message = elastos_host::describe_error(&e);
                    if let Some(first) = first.take() {
                        let mut live = instance.lock();
                        live.supervised = false;
                        live.state = InstanceState::Exited;
                        live.exit_code = Some(e.exit_code());
                        live.ended_by = Some(EndCause::Exited);
                        instance.save(&live);
                        let _ = first.send(Err(message));
                        return;
                    }
                    // A restart that cannot start (the bundle changed or went away) is a failed
                    // run like any other: the policy and its backoff decide.
                    tracing::warn!(instance = %instance.id, error = %message, "restart failed");
                    e.exit_code()
                }
            };
            let mut live = instance.lock();
            live.current = None;
            live.exit_code = Some(exit_code);
            live.ended_by = Some(self.end_cause(&live));
            let now = detached::now_ms();
            match live.runs.back_mut() {
                Some(run) if run.ended_at_ms.is_none() => {
                    run.ended_at_ms = Some(now);
                    run.exit_code = Some(exit_code);
                }
                // It never ran: a record of the failed start.
                _ => push_run(
                    &mut live.runs,
                    RunRecord {
                        started_at_ms: now,
                        ended_at_ms: Some(now),
                        exit_code: Some(exit_code),
                        delay_ms: delay.as_millis() as u64,
                        warm: false,
                    },
                ),
            }
            tracing::info!(instance = %instance.id, app = %live.app_id, code = exit_code, "detached app ended");
            if began.elapsed() >= BACKOFF_RESET_AFTER {
                live.consecutive = 0;
            }
            let stopping = live.stop_requested || self.0.shutting_down.load(Ordering::SeqCst);
            if stopping
                || !instance
                    .spec
                    .restart
                    .restarts_after(exit_code, live.restarts)
            {
                live.state = InstanceState::Exited;
                live.supervised = false;
                instance.save(&live);
                instance.changed.notify_all();
                return;
            }
            delay = backoff_delay(live.consecutive);
            live.consecutive = live.consecutive.saturating_add(1);
            live.state = InstanceState::Restarting;
            instance.save(&live);
            instance.changed.notify_all();
            let deadline = Instant::now() + delay;
            // The backoff, cut short by a stop: a crash loop sleeps here, it does not spin.
            while !live.stop_requested && !self.0.shutting_down.load(Ordering::SeqCst) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                live = instance
                    .changed
                    .wait_timeout(live, left)
                    .expect("not poisoned")
                    .0;
            }
            if live.stop_requested || self.0.shutting_down.load(Ordering::SeqCst) {
                live.state = InstanceState::Exited;
                live.supervised = false;
                live.ended_by = Some(self.end_cause(&live));
                instance.save(&live);
                instance.changed.notify_all();
                return;
            }
            live.restarts += 1;
            tracing::info!(instance = %instance.id, restart = live.restarts, ?delay, "restarting detached app");
        }
    }

    /// Why a run ends now: a stop asked for, the daemon stopping, else the app itself.
    fn end_cause(&self, live: &Live) -> EndCause {
        if self.0.shutting_down.load(Ordering::SeqCst) {
            EndCause::DaemonStopped
        } else if live.stop_requested {
            EndCause::Stopped
        } else {
            EndCause::Exited
        }
    }

    /// A run of `instance` is up: its output goes to the log, its connection to the broker, its
    /// record to the disk (`durable`: synced before this returns; otherwise the caller syncs
    /// it). Whether it may go on (not when a stop came meanwhile).
    fn started(
        &self,
        instance: &Instance,
        started: RunStarted<'_>,
        delay: Duration,
        durable: bool,
    ) -> bool {
        let RunStarted {
            jail,
            broker_end,
            identity,
            prepared,
            warm,
        } = started;
        let facts = jail.facts().clone();
        if let Some(output) = jail.take_output() {
            self.0
                .runtime
                .spawn(pump_output(output, Arc::clone(&instance.log)));
        }
        let pid = facts.pid as u32;
        let connection = {
            let _guard = self.0.runtime.enter();
            match control::into_tokio(broker_end) {
                Ok(stream) => Some(self.0.broker.attach(
                    stream,
                    identity.clone(),
                    Origin::Launched { pid: Some(pid) },
                )),
                Err(e) => {
                    tracing::warn!(instance = %instance.id, error = %e, "cannot serve the app's fd 3");
                    None
                }
            }
        };
        let mut live = instance.lock();
        live.app_id = identity.app_id;
        live.name = identity.name;
        live.state = InstanceState::Running;
        live.current = Some(CurrentRun {
            handle: jail.handle(),
            pid,
            since: Instant::now(),
            connection,
        });
        push_run(
            &mut live.runs,
            RunRecord {
                started_at_ms: detached::now_ms(),
                ended_at_ms: None,
                exit_code: None,
                delay_ms: delay.as_millis() as u64,
                warm,
            },
        );
        live.ended_by = None;
        live.bundle_digest = Some(prepared.digest);
        live.prepared = Some((prepared.manifest, prepared.plan));
        live.facts = Some(facts);
        if durable {
            instance.save(&live);
        } else {
            instance.save_unsynced(&live);
        }
        tracing::info!(instance = %instance.id, app = %live.app_id, pid, warm, "detached app started");
        instance.changed.notify_all();
        !(live.stop_requested || self.0.shutting_down.load(Ordering::SeqCst))
    }

    /// The instance `id` names: its instance id, a unique prefix of it, its app id or (when
    /// unique) its app name. `Ok(None)`: none does.
    pub fn find(&self, id: &str) -> Answer<Option<Arc<Instance>>> {
        let instances = self.0.instances.lock().expect("not poisoned");
        if id.is_empty() {
            return Err("an empty id names no app".into());
        }
        if let Some(exact) = instances.iter().find(|i| i.id == id) {
            return Ok(Some(Arc::clone(exact)));
        }
        type Matcher = fn(&Instance, &str) -> bool;
        let by: [(&str, Matcher); 3] = [
            ("instance id prefix", |i, id| i.id.starts_with(id)),
            ("app id", |i, id| i.lock().app_id.to_string() == id),
            ("app name", |i, id| i.lock().name == id),
        ];
        for (what, matches) in by {
            let found: Vec<&Arc<Instance>> = instances.iter().filter(|i| matches(i, id)).collect();
            match found.as_slice() {
                [] => continue,
                [one] => return Ok(Some(Arc::clone(one))),
                many => {
                    let ids: Vec<String> = many
                        .iter()
                        .map(|i| format!("{} ({})", &i.id[..12], i.lock().state))
                        .collect();
                    return Err(format!(
                        "{id:?} is ambiguous: the {what} of {} instances ({}); give more of the \
                         instance id",
                        many.len(),
                        ids.join(", ")
                    ));
                }
            }
        }
        Ok(None)
    }

    /// [`Supervisor::find`], which must find one.
    pub fn get(&self, id: &str) -> Answer<Arc<Instance>> {
        self.find(id)?.ok_or_else(|| {
            format!(
                "no detached app with instance id, id prefix, app id or name {id:?}; `elastos ps \
                 -a` lists them"
            )
        })
    }

    /// `elastos stop`: SIGTERM, SIGKILL after `timeout`; returns once the instance's supervisor
    /// has ended (a pending restart is cancelled).
    pub fn stop(&self, instance: &Instance, timeout: Duration) -> Answer<InstanceView> {
        let mut live = instance.lock();
        live.stop_requested = true;
        instance.changed.notify_all();
        if let Some(current) = &live.current {
            current.handle.stop();
        }
        let deadline = Instant::now() + timeout;
        live = wait_until(instance, live, deadline, |live| !live.supervised);
        if live.supervised {
            if let Some(current) = &live.current {
                tracing::info!(instance = %instance.id, ?timeout, "still running after SIGTERM: SIGKILL");
                current.handle.kill();
            }
            live = wait_until(instance, live, Instant::now() + KILL_GRACE, |live| {
                !live.supervised
            });
        }
        if live.supervised {
            return Err(format!(
                "instance {} did not end within {:?} of SIGKILL",
                instance.id, KILL_GRACE
            ));
        }
        drop(live);
        Ok(self.view(instance))
    }

    /// `elastos kill`: `signal` to the running app's jail (init relays it to the app).
    pub fn kill(&self, id: &str, signal: i32) -> Answer<InstanceView> {
        let instance = self.get(id)?;
        detached::KILLABLE
            .iter()
            .find(|(_, number)| *number == signal)
            .ok_or_else(|| format!("signal {signal} cannot be sent to a jailed app"))?;
        let signal = Signal::try_from(signal).map_err(|e| e.to_string())?;
        {
            let live = instance.lock();
            let current = live.current.as_ref().ok_or_else(|| {
                format!(
                    "instance {} is {}, not running",
                    &instance.id[..12],
                    live.state
                )
            })?;
            current
                .handle
                .signal(signal)
                .map_err(|e| format!("cannot signal instance {}: {e}", instance.id))?;
        }
        Ok(self.view(&instance))
    }

    /// `elastos restart`: stop (as `elastos stop`) and start again; the policy's restart
    /// count and backoff start over.
    pub fn restart(&self, id: &str, timeout: Duration) -> Answer<InstanceView> {
        let instance = self.get(id)?;
        self.stop(&instance, timeout)?;
        self.start_again(&instance)?;
        Ok(self.view(&instance))
    }

    /// `elastos rm`: forgets an exited instance and deletes its logs; `force` stops it first
    /// (SIGKILL at once).
    pub fn remove(&self, id: &str, force: bool) -> Answer<InstanceView> {
        let instance = self.get(id)?;
        if force {
            self.stop(&instance, Duration::ZERO)?;
        }
        let view = self.view(&instance);
        if instance.lock().supervised {
            return Err(format!(
                "instance {} is {}: stop it first (`elastos stop`), or remove it with `elastos rm \
                 --force`",
                &instance.id[..12],
                view.state
            ));
        }
        self.forget(&instance);
        Ok(view)
    }

    /// `elastos prune`: forgets every exited instance and deletes its logs.
    pub fn prune(&self) -> Vec<InstanceView> {
        let instances: Vec<Arc<Instance>> = self.0.instances.lock().expect("not poisoned").clone();
        instances
            .iter()
            .filter(|instance| !instance.lock().supervised)
            .map(|instance| {
                let view = self.view(instance);
                self.forget(instance);
                view
            })
            .collect()
    }

    fn forget(&self, instance: &Arc<Instance>) {
        self.0
            .instances
            .lock()
            .expect("not poisoned")
            .retain(|i| !Arc::ptr_eq(i, instance));
        if let Err(e) = std::fs::remove_dir_all(&instance.log_dir) {
            tracing::warn!(dir = %instance.log_dir.display(), error = %e, "cannot delete an instance's logs");
        }
    }

    /// The instances for `elastos ps` (exited ones only with `all`), oldest first.
    pub fn views(&self, all: bool) -> Vec<InstanceView> {
        let instances: Vec<Arc<Instance>> = self.0.instances.lock().expect("not poisoned").clone();
        instances
            .iter()
            .map(|i| self.view(i))
            .filter(|view| all || view.state != InstanceState::Exited)
            .collect()
    }

    /// Whether `connection` is the current run of an instance.
    pub fn owns_connection(&self, connection: ConnectionId) -> bool {
        let instances = self.0.instances.lock().expect("not poisoned").clone();
        instances.iter().any(|instance| {
            instance.lock().current.as_ref().and_then(|c| c.connection) == Some(connection)
        })
    }

    /// Marks the connections of `apps` that are runs of instances.
    pub fn mark_connections(&self, apps: &mut [AppView]) {
        let instances = self.0.instances.lock().expect("not poisoned").clone();
        for instance in instances {
            let live = instance.lock();
            let Some(connection) = live.current.as_ref().and_then(|c| c.connection) else {
                continue;
            };
            for app in apps.iter_mut().filter(|app| app.id == connection.0) {
                app.instance = Some(instance.id.clone());
            }
        }
    }

    /// How `elastos ps` shows `instance`.
    pub fn view(&self, instance: &Instance) -> InstanceView {
        let live = instance.lock();
        let current = live.current.as_ref();
        InstanceView {
            id: instance.id.clone(),
            app_id: live.app_id,
            name: live.name.clone(),
            state: live.state,
            restart_policy: instance.spec.restart,
            restarts: live.restarts,
            pid: current.map(|c| c.pid),
            memory_bytes: current.and_then(|c| {
                let limits = live.facts.as_ref().map(|f| &f.limits);
                memory_bytes(limits, c.pid)
            }),
            uptime_secs: current.map(|c| c.since.elapsed().as_secs()),
            created_at: instance.created_at,
            started_at_ms: live.runs.back().map(|run| run.started_at_ms),
            finished_at_ms: live.runs.back().and_then(|run| run.ended_at_ms),
            exit_code: live.exit_code,
            ended_by: live.ended_by,
            bundle_digest: live.bundle_digest.clone(),
            connection: current.and_then(|c| c.connection).map(|c| c.0),
            log_dir: instance.log_dir.clone(),
        }
    }

    /// `elastos inspect`.
    pub fn inspect(&self, id: &str) -> Answer<serde_json::Value> {
        let instance = self.get(id)?;
        let view = self.view(&instance);
        let live = instance.lock();
        let (manifest, plan) = match &live.prepared {
            Some((manifest, plan)) => (Some(manifest), Some(plan)),
            None => (None, None),
        };
        let inspected = Inspected {
            instance: view,
            bundle: &instance.spec.bundle,
            args: &instance.spec.args,
            limit_overrides: &instance.spec.overrides,
            manifest,
            limits: plan.map(|p| &p.limits),
            cgroup: live.facts.as_ref().and_then(|f| cgroup_paths(&f.limits)),
            enforced: live.facts.as_ref(),
            jail: plan,
            runs: &live.runs,
            log_limits: LogLimitsView {
                max_file_bytes: self.0.log_limits.max_file_bytes,
                max_files: self.0.log_limits.max_files,
                cap_bytes: self.0.log_limits.cap_bytes(),
            },
        };
        serde_json::to_value(&inspected).map_err(|e| e.to_string())
    }

    /// The daemon stops: no more restarts, every instance stopped (SIGTERM to all, SIGKILL to
    /// those still running after `grace`), and their supervisors waited for (each removes its
    /// app's cgroup).
    pub fn shutdown(&self, grace: Duration) {
        self.0.shutting_down.store(true, Ordering::SeqCst);
        let instances = self.0.instances.lock().expect("not poisoned").clone();
        let signal_all = |signal: fn(&JailHandle)| {
            for instance in &instances {
                // Not a stop asked for: the record says the daemon stopped it, and the next
                // daemon's restart policy decides.
                let live = instance.lock();
                instance.changed.notify_all();
                if let Some(current) = &live.current {
                    signal(&current.handle);
                }
            }
        };
        let wait_all = |deadline: Instant| {
            instances.iter().all(|instance| {
                !wait_until(instance, instance.lock(), deadline, |live| !live.supervised).supervised
            })
        };
        signal_all(JailHandle::stop);
        if !wait_all(Instant::now() + grace) {
            signal_all(JailHandle::kill);
            wait_all(Instant::now() + KILL_GRACE);
        }
    }
}

impl Instance {
    fn lock(&self) -> MutexGuard<'_, Live> {
        self.live.lock().expect("not poisoned")
    }

    /// Its record as `live` has it.
    fn record(&self, live: &Live) -> InstanceRecord {
        InstanceRecord {
            version: RECORD_VERSION,
            id: self.id.clone(),
            spec: self.spec.clone(),
            app_id: live.app_id,
            name: live.name.clone(),
            bundle_digest: live.bundle_digest.clone(),
            state: live.state,
            exit_code: live.exit_code,
            ended_by: live.ended_by,
            restarts: live.restarts,
            created_at: self.created_at,
            runs: live.runs.iter().cloned().collect(),
            cgroups: match (&live.current, &live.facts) {
                (Some(_), Some(facts)) => facts.limits.dirs().into_iter().map(Into::into).collect(),
                _ => Vec::new(),
            },
        }
    }

    /// Writes its record (called with its lock held, so records are written in the order of
    /// the changes). A failure is logged: the instance runs on, and a new daemon would find an
    /// older record.
    fn save(&self, live: &Live) {
        self.saved(self.record(live).save(&self.log_dir));
    }

    /// [`Instance::save`] without waiting for the disk ([`InstanceRecord::save_unsynced`]); a
    /// [`Instance::sync_record`] follows.
    fn save_unsynced(&self, live: &Live) {
        self.saved(self.record(live).save_unsynced(&self.log_dir));
    }

    /// Waits until its record, as last written, is on disk.
    fn sync_record(&self) {
        self.saved(InstanceRecord::sync(&self.log_dir));
    }

    fn saved(&self, result: Result<(), detached::RecordError>) {
        if let Err(e) = result {
            tracing::warn!(instance = %self.id, error = %elastos_host::describe_error(&e), "cannot write an instance's record");
        }
    }
}

/// Marks `instance` supervised again, in `state`, with a new backoff and no stop pending.
fn ready_to_start(instance: &Instance, state: InstanceState) {
    let mut live = instance.lock();
    live.stop_requested = false;
    live.supervised = true;
    live.consecutive = 0;
    live.state = state;
}

/// Waits on `instance`'s changes until `done` or `deadline`.
fn wait_until<'a>(
    instance: &'a Instance,
    mut live: MutexGuard<'a, Live>,
    deadline: Instant,
    done: impl Fn(&Live) -> bool,
) -> MutexGuard<'a, Live> {
    while !done(&live) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        live = instance
            .changed
            .wait_timeout(live, left)
            .expect("not poisoned")
            .0;
    }
    live
}

fn push_run(runs: &mut VecDeque<RunRecord>, run: RunRecord) {
    if runs.len() == MAX_RUN_RECORDS {
        runs.pop_front();
    }
    runs.push_back(run);
}

/// What `elastos inspect` shows.
#[derive(Serialize)]
struct Inspected<'a> {
    #[serde(flatten)]
    instance: InstanceView,
    bundle: &'a Path,
    args: &'a [String],
    /// `--memory`, `--cpus`, `--pids` of `run -d`.
    limit_overrides: &'a elastos_policy::LimitOverrides,
    /// The verified manifest of the latest run.
    manifest: Option<&'a Manifest>,
    /// The limits in force (the manifest's, after the host's ceilings).
    limits: Option<&'a elastos_policy::ResourceLimits>,
    /// The app's cgroup directories (none with rlimits).
    cgroup: Option<Vec<&'a Path>>,
    /// What the kernel enforced at the latest start: pid, Landlock ABI, how limits are held.
    enforced: Option<&'a JailFacts>,
    /// The jail's plan, as `elastos policy show --format json` renders it.
    jail: Option<&'a JailPlan>,
    /// The latest runs, oldest first.
    runs: &'a VecDeque<RunRecord>,
    log_limits: LogLimitsView,
}

#[derive(Serialize)]
struct LogLimitsView {
    max_file_bytes: u64,
    max_files: u32,
    cap_bytes: u64,
}

/// The cgroup directories of a jail, if it has any.
fn cgroup_paths(limits: &LimitMechanism) -> Option<Vec<&Path>> {
    match limits {
        LimitMechanism::CgroupV2 { path, .. } => Some(vec![path]),
        LimitMechanism::CgroupV1 { memory, pids, .. } => Some(vec![memory, pids]),
        _ => None,
    }
}

/// The memory a running jail uses: its cgroup's figure (memory.current on v2,
/// memory.usage_in_bytes on v1), else the resident memory of init and its descendants.
fn memory_bytes(limits: Option<&LimitMechanism>, pid: u32) -> Option<u64> {
    let read = |path: PathBuf| std::fs::read_to_string(path).ok()?.trim().parse().ok();
    let from_cgroup = match limits {
        Some(LimitMechanism::CgroupV2 { path, .. }) => read(path.join("memory.current")),
        Some(LimitMechanism::CgroupV1 { memory, .. }) => read(memory.join("memory.usage_in_bytes")),
        _ => None,
    };
    from_cgroup.or_else(|| resident_tree_bytes(pid))
}

/// `VmRSS` of `pid` and its descendants (at most [`MAX_TREE`] processes), from /proc.
fn resident_tree_bytes(pid: u32) -> Option<u64> {
    const MAX_TREE: usize = 4096;
    let mut pending = vec![pid];
    let mut total = 0;
    let mut seen = 0;
    while let Some(pid) = pending.pop() {
        seen += 1;
        if seen > MAX_TREE {
            break;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        total += status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kib| kib.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024;
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pending.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    Some(total)
}

/// The instances whose records a previous daemon left in `logs`, oldest first, none running:
/// one that was running or restarting is marked ended by the daemon's death, and the cgroups
/// its record names are removed. A record that cannot be read is reported by name and skipped
/// (left as it is, with its logs).
fn restore(logs: &Path, log_limits: LogLimits) -> Vec<Arc<Instance>> {
    let Ok(entries) = std::fs::read_dir(logs) else {
        return Vec::new();
    };
    let mut instances = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry
            .file_name()
            .to_str()
            .is_some_and(detached::is_instance_id)
        {
            continue;
        }
        let mut record = match InstanceRecord::load(&dir) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(error = %elastos_host::describe_error(&e), "skipped a detached app's record: its instance is not listed, its files are left as they are");
                continue;
            }
        };
        if record.state != InstanceState::Exited {
            remove_leftover_cgroups(&record.id, &record.cgroups);
            record.state = InstanceState::Exited;
            record.ended_by = Some(EndCause::DaemonDied);
            record.exit_code = None;
        }
        record.cgroups.clear();
        let log = match LogWriter::open(&dir, log_limits) {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(error = %elastos_host::describe_error(&e), "skipped a detached app: its log cannot be opened");
                continue;
            }
        };
        let instance = Instance {
            id: record.id,
            spec: record.spec,
            created_at: record.created_at,
            log_dir: dir,
            log: Arc::new(Mutex::new(log)),
            live: Mutex::new(Live {
                app_id: record.app_id,
                name: record.name,
                state: InstanceState::Exited,
                restarts: record.restarts,
                consecutive: 0,
                current: None,
                exit_code: record.exit_code,
                stop_requested: false,
                supervised: false,
                runs: record
                    .runs
                    .into_iter()
                    .rev()
                    .take(MAX_RUN_RECORDS)
                    .rev()
                    .collect(),
                prepared: None,
                facts: None,
                ended_by: record.ended_by,
                bundle_digest: record.bundle_digest,
            }),
            changed: Condvar::new(),
        };
        instance.save(&instance.lock());
        tracing::info!(instance = %instance.id, ended_by = ?instance.lock().ended_by, "restored a detached app from its record");
        instances.push(Arc::new(instance));
    }
    instances.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    instances
}

/// How long a new daemon waits for the cgroups of apps that died with the previous daemon to
/// empty (the kernel kills them as that daemon's threads exit, which may still be under way).
const LEFTOVER_CGROUP_WAIT: Duration = Duration::from_secs(2);

/// The pid of the launcher that named a jail cgroup `name`, as the loader names them
/// (`[APP-ID-]PID-N`, loader/src/spawn.rs); `None` for any other name.
fn launcher_pid(name: &str) -> Option<u32> {
    let mut parts = name.rsplit('-');
    let number = |part: Option<&str>| -> Option<u64> {
        part.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?
            .parse()
            .ok()
    };
    number(parts.next())?;
    u32::try_from(number(parts.next())?).ok()
}

/// Removes the cgroup directories a dead daemon's record names for instance `id`. Only jail
/// cgroups are touched, directories under /sys/fs/cgroup named as the launcher names them,
/// since a record is a file anyone with the daemon's uid could edit; and `rmdir` removes only
/// an empty cgroup.
fn remove_leftover_cgroups(id: &str, dirs: &[PathBuf]) {
    let deadline = Instant::now() + LEFTOVER_CGROUP_WAIT;
    for dir in dirs {
        let ours = dir
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(launcher_pid)
            .is_some()
            && dir.starts_with("/sys/fs/cgroup")
            && !dir
                .components()
                .any(|c| c == std::path::Component::ParentDir);
        if !ours {
            tracing::warn!(instance = %id, cgroup = %dir.display(), "not removing a directory that a record names but is no jail's cgroup");
            continue;
        }
        remove_dead_cgroup(dir, deadline);
    }
}

/// Where root's launchers make jail cgroups (loader/src/cgroup.rs): the v1 controllers, the
/// cgroup2 tree beside them on a hybrid host, the cgroup2 root.
const ROOT_JAIL_CGROUPS: [&str; 5] = [
    "/sys/fs/cgroup/memory/elastos",
    "/sys/fs/cgroup/pids/elastos",
    "/sys/fs/cgroup/cpu/elastos",
    "/sys/fs/cgroup/unified/elastos",
    "/sys/fs/cgroup/elastos",
];

/// As root: removes the jail cgroups of launchers that no longer run, which no record names
/// (warm jails parked by a daemon killed with SIGKILL, its activated providers, a jail killed
/// between its cgroup's making and its record). A launcher is gone when no process has its
/// pid; a reused pid only spares its cgroups, and `rmdir` removes only an empty cgroup.
pub fn remove_cgroups_of_dead_launchers() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let deadline = Instant::now() + LEFTOVER_CGROUP_WAIT;
    for parent in ROOT_JAIL_CGROUPS {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(launcher_pid) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                remove_dead_cgroup(&entry.path(), deadline);
            }
        }
    }
}

/// Removes `dir`, the cgroup of an app whose launcher died, waiting until `deadline` for the
/// app to leave it.
fn remove_dead_cgroup(dir: &Path, deadline: Instant) {
    loop {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove the cgroup of an app whose daemon died");
                return;
            }
            Ok(()) => {
                tracing::info!(cgroup = %dir.display(), "removed the cgroup of an app whose daemon died");
                return;
            }
        }
    }
}

/// Bytes read from an output pipe at a time: small, since every running detached app has two
/// such reads pending (200 apps: 1.6 MiB).
const PUMP_BUFFER: usize = 4096;

/// Copies a detached app's stdout and stderr into its log until both end.
async fn pump_output(output: CapturedOutput, log: Arc<Mutex<LogWriter>>) {
    let CapturedOutput { stdout, stderr } = output;
    tokio::join!(
        pump(stdout, Stream::Stdout, &log),
        pump(stderr, Stream::Stderr, &log)
    );
}

async fn pump(pipe: OwnedFd, stream: Stream, log: &Mutex<LogWriter>) {
    let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) {
        Ok(pipe) => pipe,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a detached app's output");
            return;
        }
    };
    let mut buffer = [0u8; PUMP_BUFFER];
    let mut failed = false;
    loop {
        if pipe.readable().await.is_err() {
            break;
        }
        match pipe.try_read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = log
                    .lock()
                    .expect("not poisoned")
                    .write(stream, &buffer[..n])
                {
                    // Said once; the app's output is still drained, so it never blocks on it.
                    if !failed {
                        tracing::warn!(error = %elastos_host::describe_error(&e), "cannot write a detached app's log");
                        failed = true;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = log.lock().expect("not poisoned").finish(stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jail_cgroups_are_removed_for_a_record() {
        assert_eq!(
            launcher_pid("6f1f52c4-1d0b-4f43-9e55-0b7a1e5d3c21-4242-7"),
            Some(4242)
        );
        assert_eq!(launcher_pid("4242-7"), Some(4242));
        for other in [
            "elastos",
            "4242",
            "user.slice",
            "a-b-7",
            "4242-",
            "-7",
            "x-99999999999-1",
        ] {
            assert_eq!(launcher_pid(other), None, "{other}");
        }
        // Named in a record but no jail cgroup: left alone (rmdir would remove an empty one).
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("4242-7");
        std::fs::create_dir(&victim).unwrap();
        let elsewhere = dir.path().join("cgroup").join("elastos");
        std::fs::create_dir_all(&elsewhere).unwrap();
        remove_leftover_cgroups(
            "test",
            &[
                victim.clone(),
                elsewhere.clone(),
                PathBuf::from("/sys/fs/cgroup/memory/elastos/../../../tmp/4242-7"),
            ],
        );
        assert!(victim.is_dir() && elsewhere.is_dir());
    }
}
