//! On-demand activation: the broker's [`Activator`] that starts installed providers in jails
//! (through [`start_app`], like every start), supervises them and stops them; and where it finds
//! the installed apps.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use elastos_broker::{
    ActivationError, Activator, AppIdentity, BoxFuture, Broker, ConnectionId, InstanceExit,
    InstanceId, Origin,
};
use elastos_loader::{AppExit, JailHandle, LaunchOptions, RunningJail};
use elastos_policy::HostEnv;
use std::os::unix::net::UnixStream as StdUnixStream;
use uuid::Uuid;

use crate::apps::{
    start_app, AppDirs, AppError, InstalledApp, PreparedApp, StartPhase, StartRequest,
};
use crate::control::ControlRequest;
use crate::pool::{JailPool, StartJob};

/// Where an [`AppLauncher`] finds the installed apps.
///
/// A trait so that `elastos run` never links RocksDB (its static initializers alone add ~1-2 ms
/// to every start of a program that links it): the daemon (`elastos-broker`, crate
/// `elastos-broker-daemon`) passes its database; `elastos run` passes a [`StoreHelper`], which
/// asks that binary.
pub trait InstalledApps: Send + Sync + 'static {
    /// The installed app that provides `service`, if any.
    fn provider_of(&self, service: Uuid) -> Result<Option<InstalledApp>, AppError>;
    /// Counts an activation (best effort).
    fn record_activation(&self, app_id: Uuid);
}

/// Reads the installed apps through the `elastos-broker` binary (`elastos-broker request`), which
/// opens the database read-only next to any writer.
#[derive(Debug, Clone)]
pub struct StoreHelper {
    /// The `elastos-broker` executable.
    pub executable: PathBuf,
    /// The installed-apps index beside the database ([`crate::installed_index`]): asked first,
    /// the helper only when it is missing or unreadable.
    pub index: Option<PathBuf>,
}

impl StoreHelper {
    /// Runs one [`ControlRequest`] on the database; its JSON result.
    pub fn request(&self, request: &ControlRequest) -> Result<serde_json::Value, AppError> {
        let failed = |message: String| AppError::Helper {
            executable: self.executable.clone(),
            message,
        };
        let output = std::process::Command::new(&self.executable)
            .arg("request")
            .arg(serde_json::to_string(request).expect("requests serialize"))
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| failed(e.to_string()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(failed(
                stderr
                    .trim()
                    .trim_start_matches("elastos-broker: ")
                    .to_string(),
            ));
        }
        serde_json::from_slice(&output.stdout)
            .map_err(|e| failed(format!("unreadable answer: {e}")))
    }
}

impl InstalledApps for StoreHelper {
    fn provider_of(&self, service: Uuid) -> Result<Option<InstalledApp>, AppError> {
        if let Some(index) = &self.index {
            match crate::installed_index::provider_of(index, service) {
                Ok(found) => return Ok(found),
                Err(e @ crate::installed_index::IndexError::Missing(_)) => {
                    tracing::debug!(error = %e, "asking the database")
                }
                Err(e) => tracing::warn!(error = %e, "asking the database"),
            }
        }
        let value = self.request(&ControlRequest::ProviderOf { service })?;
        serde_json::from_value(value).map_err(|e| AppError::Helper {
            executable: self.executable.clone(),
            message: format!("unreadable answer: {e}"),
        })
    }

    fn record_activation(&self, _app_id: Uuid) {
        // Only the daemon keeps activation records: several `elastos run` processes cannot
        // share the database's single writer.
    }
}

/// Starts installed apps in jails when the broker needs one of their services, and stops them.
///
/// Each activated app is launched and supervised by a thread of its own: the kernel kills a
/// jail when the thread that started it ends (PR_SET_PDEATHSIG), so that thread lives exactly
/// as long as the app.
#[derive(Clone)]
pub struct AppLauncher(Arc<LauncherState>);

/// What an [`AppLauncher`] and its clones share.
struct LauncherState {
    dirs: AppDirs,
    installed: Arc<dyn InstalledApps>,
    options: LaunchOptions,
    host: HostEnv,
    next_instance: AtomicU64,
    running: Mutex<HashMap<InstanceId, JailHandle>>,
    /// Services recently found not installed, and when: an app asking again and again for such
    /// a service must not cost a database lookup (a process, for a [`StoreHelper`]) each time.
    not_installed: Mutex<HashMap<Uuid, std::time::Instant>>,
    /// The daemon's warm jails ([`AppLauncher::use_pool`]); none in `elastos run`.
    pool: std::sync::OnceLock<JailPool>,
}

/// How long "no installed app provides it" is remembered.
const NOT_INSTALLED_TTL: std::time::Duration = std::time::Duration::from_secs(2);

impl AppLauncher {
    /// A launcher for the `installed` apps, with the launch `options` of `elastos run`; the
    /// services it starts are never attached to its stdin or terminal (see
    /// [`LaunchOptions::attached`]).
    pub fn new(
        dirs: AppDirs,
        installed: Arc<dyn InstalledApps>,
        options: LaunchOptions,
        host: HostEnv,
    ) -> AppLauncher {
        AppLauncher(Arc::new(LauncherState {
            dirs,
            installed,
            options: LaunchOptions {
                attached: false,
                ..options
            },
            host,
            next_instance: AtomicU64::new(1),
            running: Mutex::new(HashMap::new()),
            not_installed: Mutex::new(HashMap::new()),
            pool: std::sync::OnceLock::new(),
        }))
    }

    /// The installed provider of `service`, looked up off the async threads (it may read a
    /// database or run a helper process), with negative answers remembered for a moment.
    async fn find_provider(&self, service: Uuid) -> Result<Option<InstalledApp>, AppError> {
        {
            let mut recent = self.0.not_installed.lock().expect("not poisoned");
            recent.retain(|_, at| at.elapsed() < NOT_INSTALLED_TTL);
            if recent.contains_key(&service) {
                return Ok(None);
            }
        }
        let launcher = self.clone();
        let found = tokio::task::spawn_blocking(move || launcher.0.installed.provider_of(service))
            .await
            .map_err(|e| AppError::InstalledApps(e.to_string()))??;
        if found.is_none() {
            let now = std::time::Instant::now();
            self.0
                .not_installed
                .lock()
                .expect("not poisoned")
                .insert(service, now);
        }
        Ok(found)
    }
}

/// What the supervisor thread hands back once the jail runs.
type Started = Result<(StdUnixStream, AppIdentity, u32), String>;

impl Activator for AppLauncher {
    fn activate(
        &self,
        broker: Broker,
        service: Uuid,
    ) -> BoxFuture<'static, Result<ConnectionId, ActivationError>> {
        let launcher = self.clone();
        Box::pin(async move {
            let failed = |reason: String| ActivationError::Failed { service, reason };
            let app = launcher
                .find_provider(service)
                .await
                .map_err(|e| failed(crate::describe_error(&e)))?
                .ok_or(ActivationError::NotInstalled { service })?;
            let instance = launcher.next_instance();
            let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Started>();
            let (supervisor, exits_to) = (launcher.clone(), broker.clone());
            let name = format!("elastos-app-{}", app.name);
            launcher
                .spawn_supervisor(
                    false,
                    name,
                    Box::new(move || supervisor.supervise(app, instance, started_tx, exits_to)),
                )
                .map_err(|e| failed(format!("cannot start a supervisor thread: {e}")))?;
            let (stream, identity, pid) = started_rx
                .await
                .map_err(|_| failed("the supervisor thread ended".into()))?
                .map_err(failed)?;
            let stream = stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(stream))
                .map_err(|e| failed(format!("cannot use the app's socket: {e}")))?;
            Ok(broker.attach(
                stream,
                identity,
                Origin::Activated {
                    instance,
                    pid: Some(pid),
                },
            ))
        })
    }

    fn stop(&self, instance: InstanceId) {
        if let Some(jail) = self.0.running.lock().expect("not poisoned").get(&instance) {
            jail.stop();
        }
    }
}

impl AppLauncher {
    /// Starts apps from `pool`'s warm jails from now on (the daemon; once).
    pub fn use_pool(&self, pool: JailPool) {
        if self.0.pool.set(pool).is_err() {
            tracing::warn!("the launcher already has a pool of warm jails");
        }
    }

    /// The pool of warm jails, if the launcher has one.
    pub fn pool(&self) -> Option<&JailPool> {
        self.0.pool.get()
    }

    /// Runs `supervise` (which calls [`AppLauncher::run_supervised`]) on a thread of its own:
    /// a parked thread with a warm jail for its kind of start when the pool has one (so its
    /// first start skips the clone), else a new thread named `name`. `capture_output` as in
    /// [`SupervisedRun::capture_output`].
    pub fn spawn_supervisor(
        &self,
        capture_output: bool,
        name: String,
        supervise: StartJob,
    ) -> std::io::Result<()> {
        match self.0.pool.get() {
            Some(pool) => {
                let options = LaunchOptions {
                    capture_output,
                    ..self.0.options.clone()
                };
                pool.run(&options, name, supervise)
            }
            None => std::thread::Builder::new()
                .name(name)
                .spawn(supervise)
                .map(drop),
        }
    }

    /// Stops every app this launcher activated (SIGTERM, SIGKILL after `grace`) and returns once
    /// their supervisors have reaped them and removed their cgroups: for `elastos run`, whose
    /// embedded broker's providers would otherwise die with it (PR_SET_PDEATHSIG) with nobody
    /// left to remove their cgroups.
    pub fn stop_all(&self, grace: std::time::Duration) {
        let signal_all = |signal: fn(&JailHandle)| {
            for jail in self.0.running.lock().expect("not poisoned").values() {
                signal(jail);
            }
        };
        let all_gone = |within: std::time::Duration| {
            let deadline = std::time::Instant::now() + within;
            while !self.0.running.lock().expect("not poisoned").is_empty() {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            true
        };
        signal_all(JailHandle::stop);
        if !all_gone(grace) {
            signal_all(JailHandle::kill);
            all_gone(grace);
        }
    }

    /// A new instance id, unique among this launcher's runs (activations and detached runs).
    pub fn next_instance(&self) -> InstanceId {
        InstanceId(self.0.next_instance.fetch_add(1, Ordering::Relaxed))
    }

    /// Starts one run of an app (through [`start_app`], like every start) as `instance` and
    /// supervises it on the calling thread until it ends: the one supervision of the apps a
    /// daemon runs, activated providers and detached runs alike. While it runs, it is what
    /// [`Activator::stop`] and [`AppLauncher::stop_all`] reach. `started` gets the running jail
    /// (to take its output), the broker's end of its fd 3, its identity and its prepared app
    /// (manifest and plan) before the wait; when it returns false the app is stopped at once. Call it from a thread that lives as
    /// long as the app (see [`start_app`]). An error before `started` was called is a failed
    /// start.
    pub fn run_supervised(
        &self,
        instance: InstanceId,
        run: &SupervisedRun<'_>,
        started: impl FnOnce(RunStarted<'_>) -> bool,
    ) -> Result<AppExit, AppError> {
        let options = LaunchOptions {
            capture_output: run.capture_output,
            ..self.0.options.clone()
        };
        let request = StartRequest {
            bundle: run.bundle,
            args: run.args,
            dirs: &self.0.dirs,
            host: &self.0.host,
            options: &options,
            allow_downgrade: false,
            overrides: run.overrides,
        };
        let mut prepared = None;
        let started_app = start_app(&request, &mut |phase| {
            if let StartPhase::Ready(app) = phase {
                prepared = Some(app.clone());
            }
        })?;
        let mut jail = started_app.jail;
        self.0
            .running
            .lock()
            .expect("not poisoned")
            .insert(instance, jail.handle());
        let keep = started(RunStarted {
            warm: started_app.warm,
            jail: &mut jail,
            broker_end: started_app.broker_end,
            identity: started_app.identity,
            prepared: prepared.expect("start_app reports Ready before it starts the entry"),
        });
        if !keep {
            jail.handle().stop();
        }
        let exit = jail.wait_blocking();
        self.0
            .running
            .lock()
            .expect("not poisoned")
            .remove(&instance);
        Ok(exit?)
    }

    /// The supervisor thread of one activated app: launch, report, wait, and tell `broker` how
    /// it ended (requests waiting for it to register are answered with that).
    fn supervise(
        &self,
        app: InstalledApp,
        instance: InstanceId,
        started: tokio::sync::oneshot::Sender<Started>,
        broker: Broker,
    ) {
        let run = SupervisedRun {
            bundle: &app.bundle,
            args: &[],
            capture_output: false,
            overrides: elastos_policy::LimitOverrides::default(),
        };
        let mut started = Some(started);
        let ended = self.run_supervised(instance, &run, |run| {
            let (stream, identity, pid) = (run.broker_end, run.identity, run.jail.facts().pid);
            self.0.installed.record_activation(app.app_id);
            let warm = run.warm;
            tracing::info!(app = %app.app_id, name = %app.name, pid, %instance, warm, "activated");
            let waiting = started.take().expect("started once");
            // Nobody waits any more (the activation timed out): do not leave it running.
            waiting.send(Ok((stream, identity, pid as u32))).is_ok()
        });
        match ended {
            Err(e) if started.is_some() => {
                tracing::warn!(app = %app.app_id, error = %crate::describe_error(&e), "activation failed");
                if let Some(waiting) = started.take() {
                    let _ = waiting.send(Err(crate::describe_error(&e)));
                }
            }
            Ok(exit) => {
                tracing::info!(app = %app.app_id, %instance, code = exit.code(), "activated app ended");
                broker.instance_exited(
                    instance,
                    match exit {
                        AppExit::Exited(code) => InstanceExit::Exited(code),
                        AppExit::Signaled(signal) => InstanceExit::Signaled(signal),
                    },
                );
            }
            Err(e) => {
                tracing::warn!(app = %app.app_id, %instance, error = %crate::describe_error(&e), "waiting for activated app")
            }
        }
    }
}

/// What [`AppLauncher::run_supervised`] hands its caller once the app runs.
pub struct RunStarted<'a> {
    /// The jail (its facts, its handle, its captured output).
    pub jail: &'a mut RunningJail,
    /// The broker's end of the app's fd 3.
    pub broker_end: StdUnixStream,
    /// Who the app is, from its verified bundle.
    pub identity: AppIdentity,
    /// The verified manifest and the plan of the jail it runs in.
    pub prepared: PreparedApp,
    /// It started from a warm jail of the pool.
    pub warm: bool,
}

/// One run for [`AppLauncher::run_supervised`]: what differs between an activation and a
/// detached run.
#[derive(Debug, Clone, Copy)]
pub struct SupervisedRun<'a> {
    /// The bundle file (verified again at every start).
    pub bundle: &'a std::path::Path,
    /// Arguments for the app's entry.
    pub args: &'a [String],
    /// Hand the app's stdout and stderr to the caller ([`RunningJail::take_output`]) instead of
    /// relaying them to this process's.
    pub capture_output: bool,
    /// Limits given on the command line (`run -d --memory ...`), over the manifest's.
    pub overrides: elastos_policy::LimitOverrides,
}
