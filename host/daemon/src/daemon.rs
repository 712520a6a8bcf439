//! The broker daemon: serves apps attached through its control socket, activates installed
//! providers on demand, answers the control requests, and stops on SIGINT/SIGTERM.

use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use elastos_loader::{BlockedSignals, JailHandle, LaunchError};
use nix::sys::signal::Signal;
use serde::Serialize;

use elastos_broker::{AppIdentity, Broker, BrokerConfig, ConnectionId, Origin};
use elastos_host::activator::AppLauncher;
use elastos_host::apps::{self, AppDirs, AppError};
use elastos_host::control::{self, into_tokio, ControlClient, ControlError, ControlRequest};
use elastos_host::paths::StateDirs;
use elastos_host::pool::JailPool;

use crate::install::{install, uninstall, InstallError};
use crate::store::{Store, StoreError};
use crate::supervisor::Supervisor;
use crate::{cloud, metrics, ondemand, systemd};
use elastos_host::applog::LogLimits;
use elastos_host::detached::DEFAULT_STOP_TIMEOUT_SECS;

/// The daemon could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Preparing directories or launch options failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// Another daemon already serves this state directory.
    #[error("a broker daemon already listens on {}", .0.display())]
    AlreadyRunning(std::path::PathBuf),
    /// The control socket or the runtime could not be set up.
    #[error("cannot {what}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Signal handling failed.
    #[error(transparent)]
    Signals(#[from] LaunchError),
    /// The sockets systemd passed cannot be used.
    #[error("socket activation: {0}")]
    Activation(String),
}

/// How the daemon runs.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Stop activated providers idle this long (`None`: never).
    pub idle_stop: Option<Duration>,
    /// Serve the Prometheus metrics over HTTP here too (checked by
    /// [`metrics::check_address`](crate::metrics::check_address)).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How much log each detached app keeps.
    pub log_limits: LogLimits,
    /// Warm jails kept parked per kind of start (detached runs, activations); 0: none.
    pub warm_jails: usize,
}

/// How long activated providers get to end after SIGTERM when the daemon stops, before
/// SIGKILL (then as long again to be reaped). The units' TimeoutStopSec= allows for both.
const PROVIDER_STOP_GRACE: Duration = Duration::from_secs(5);

/// How often the daemon tells systemd its status (and pings the watchdog, at least twice per
/// `WATCHDOG_USEC`).
const STATUS_PERIOD: Duration = Duration::from_secs(5);

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// Serves until SIGINT or SIGTERM, on the control socket systemd passed (socket activation)
/// or on one it makes at `state.control_socket`.
pub fn run(state: &StateDirs, options: &DaemonOptions) -> Result<(), DaemonError> {
    // Read (and unset) systemd's variables before any thread exists.
    let notifier = Arc::new(systemd::Notifier::from_env());
    let watchdog = systemd::watchdog_from_env();
    let socket = &state.control_socket;
    let activated = systemd::listener_from_env(socket)?;
    // Blocked before any other thread exists, so that every thread inherits it: SIGINT and
    // SIGTERM reach only the wait at the end. That is before RocksDB's open, which starts its
    // own background threads (a SIGTERM the kernel gave one of those had the default action:
    // the daemon died of it, seen once in CI), and before the runtime's. (No tokio signal
    // driver: it needs a socketpair, and apps linking the same tokio build run where socketpair
    // is refused.) And before the control socket is bound: a client that connects and at once
    // sends SIGTERM (a stop right after a start) got the default action when it came between.
    let signals = BlockedSignals::block()?;
    let store = Arc::new(Store::open(&state.broker_db)?);
    let metrics_listener = options
        .metrics_addr
        .map(|address| {
            std::net::TcpListener::bind(address)
                .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
                .map_err(io(format!("serve the metrics on {address}")))
        })
        .transpose()?;
    let socket_activated = activated.is_some();
    let listener = match activated {
        Some(listener) => listener,
        None => bind_control_socket(socket)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("elastos-broker")
        .enable_all()
        .build()
        .map_err(io("start the broker's runtime"))?;
    let launcher = AppLauncher::new(
        state.apps.clone(),
        store.clone(),
        apps::launch_options(&state.runtime, false, false)?,
        apps::host_env(),
    );
    let pool = JailPool::new(
        options.warm_jails,
        apps::launch_options(&state.runtime, false, false)?,
    );
    launcher.use_pool(pool.clone());
    let config = BrokerConfig {
        idle_stop_after: options.idle_stop,
        ..BrokerConfig::default()
    };
    let broker = Broker::new(config, Some(Arc::new(launcher.clone())));
    crate::supervisor::remove_cgroups_of_dead_launchers();
    let supervisor = Supervisor::new(
        launcher.clone(),
        broker.clone(),
        runtime.handle().clone(),
        state.app_logs.clone(),
        options.log_limits,
    );
    let serving_supervisor = supervisor.clone();
    // The probe file goes where homes are (their file system must support pre-content events).
    let scratch = match &state.apps.homes {
        homes if homes.is_dir() => homes.clone(),
        homes => homes.parent().unwrap_or(homes).to_owned(),
    };
    let on_demand = match ondemand::OnDemand::start(state.clone(), &scratch) {
        Ok(on_demand) => Some(on_demand),
        Err(e) => {
            tracing::warn!("{e}; `elastos cloud evict` is refused");
            None
        }
    };
    let cloud = Arc::new(cloud::CloudSync::start(
        state.clone(),
        broker.clone(),
        on_demand,
    ));
    listener
        .set_nonblocking(true)
        .map_err(io("configure the control socket"))?;
    let started = std::time::SystemTime::now();
    if let Some(listener) = metrics_listener {
        let _guard = runtime.enter();
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(io("serve the metrics"))?;
        tracing::info!(address = ?listener.local_addr().ok(), "serving metrics at /metrics");
        runtime.spawn(metrics::serve_http(
            listener,
            broker.clone(),
            started,
            pool.clone(),
        ));
    }
    tracing::info!(
        socket = %socket.display(),
        socket_activated,
        "elastos broker: listening"
    );
    let incomplete = control::Incomplete::default();
    runtime.spawn(release_memory_after_bursts(
        broker.clone(),
        incomplete.clone(),
    ));
    let dirs = state.apps.clone();
    let jails = Arc::new(LaunchedJails::default());
    if notifier.enabled() {
        runtime.spawn(report_to_systemd(
            Arc::clone(&notifier),
            watchdog,
            broker.clone(),
        ));
    }
    let serving = broker.clone();
    runtime.spawn(async move {
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the control socket");
                return;
            }
        };
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: let some close before trying again.
                    tracing::warn!(error = %e, "accepting a control connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let waiting = incomplete.admit();
            tokio::spawn(serve_control(
                stream,
                waiting,
                serving.clone(),
                started,
                jails.clone(),
                store.clone(),
                dirs.clone(),
                serving_supervisor.clone(),
                cloud.clone(),
            ));
        }
    });
    // Only now: a restarted app's first call may need the control socket served.
    supervisor.resume();
    loop {
        let signal = signals.next()?;
        if signal != Signal::SIGCHLD {
            tracing::info!(%signal, "elastos broker: stopping");
            notifier.notify(&format!("STOPPING=1\nSTATUS=stopping ({signal})"));
            break;
        }
    }
    // The apps it runs go first, and their supervisors remove their cgroups: ending the process
    // with them running left their cgroup directories behind. Detached ones first, so that
    // none is restarted meanwhile.
    // No warm jail is parked any more, none is made: nothing of the pool outlives the daemon.
    pool.shutdown(PROVIDER_STOP_GRACE);
    supervisor.shutdown(PROVIDER_STOP_GRACE);
    launcher.stop_all(PROVIDER_STOP_GRACE);
    runtime.shutdown_timeout(Duration::from_secs(2));
    // A socket systemd passed stays: it is systemd's, and the next connection starts us again.
    if !socket_activated {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}

/// Makes the control socket at `socket`, in a private directory, unless a daemon answers there.
fn bind_control_socket(socket: &Path) -> Result<StdUnixListener, DaemonError> {
    if let Some(dir) = socket.parent() {
        apps::create_private_dir(dir)?;
    }
    if ControlClient::connect(socket).is_some() {
        return Err(DaemonError::AlreadyRunning(socket.into()));
    }
    let _ = std::fs::remove_file(socket);
    StdUnixListener::bind(socket).map_err(io(format!("listen on {}", socket.display())))
}

/// Tells systemd the daemon is ready, then its status every [`STATUS_PERIOD`] when it changed,
/// and pings the watchdog (when `WATCHDOG_USEC` set one) at least twice per its interval. A task
/// of the broker's runtime: if the runtime stops making progress, the pings stop.
async fn report_to_systemd(
    notifier: Arc<systemd::Notifier>,
    watchdog: Option<Duration>,
    broker: Broker,
) {
    let period = watchdog.map_or(STATUS_PERIOD, |interval| (interval / 2).min(STATUS_PERIOD));
    let status = |broker: &Broker| {
        let apps = broker.apps().len();
        let calls = broker.metrics().calls;
        format!("serving {apps} apps, {calls} calls so far")
    };
    let mut last = status(&broker);
    notifier.notify(&format!("READY=1\nSTATUS={last}"));
    loop {
        tokio::time::sleep(period).await;
        let now = status(&broker);
        let mut message = String::new();
        if watchdog.is_some() {
            message.push_str("WATCHDOG=1\n");
        }
        if now != last {
            message.push_str(&format!("STATUS={now}\n"));
            last = now;
        }
        if !message.is_empty() {
            notifier.notify(&message);
        }
    }
}

/// The jails of the apps `elastos run` attached, by connection: their pidfds, through which
/// `elastos stop` signals them. An entry lives exactly as long as its jail's init (see
/// [`LaunchedJails::watch`]), so the daemon holds no descriptor of an app that has ended.
#[derive(Default)]
struct LaunchedJails(Mutex<HashMap<ConnectionId, JailHandle>>);

impl LaunchedJails {
    /// Keeps `jail` for `connection` until the jail's init exits: its pidfd turns readable then,
    /// which a task of the runtime waits for.
    #[allow(unsafe_code)]
    fn watch(self: &Arc<Self>, connection: ConnectionId, jail: JailHandle) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        let pidfd = jail.as_fd().try_clone_to_owned()?;
        // SAFETY: the AsyncFd owns `pidfd`, an OwnedFd: it stays open and names the same file
        // description until the AsyncFd is dropped, which is what registering it requires.
        let exited = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        }?;
        self.0
            .lock()
            .expect("not poisoned")
            .insert(connection, jail);
        let jails = Arc::clone(self);
        tokio::spawn(async move {
            let _ = exited.readable().await;
            jails.take(connection);
        });
        Ok(())
    }

    fn take(&self, connection: ConnectionId) -> Option<JailHandle> {
        self.0.lock().expect("not poisoned").remove(&connection)
    }
}

/// Whether the jail of `handle` ended before `deadline` (its pidfd turns readable then).
fn wait_for_exit(handle: &JailHandle, deadline: std::time::Instant) -> bool {
    use std::os::fd::AsFd;
    let timeout = deadline.saturating_duration_since(std::time::Instant::now());
    let timeout =
        nix::poll::PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(nix::poll::PollTimeout::MAX);
    let mut fds = [nix::poll::PollFd::new(
        handle.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(nix::poll::poll(&mut fds, timeout), Ok(n) if n > 0)
}

/// The first 12 digits of an instance id, as `elastos ps` shows it.
fn instance_prefix(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// How often the daemon looks whether a burst of connections has ended.
const TRIM_PERIOD: Duration = Duration::from_secs(5);

/// Gives freed heap memory back to the kernel once a burst of connections is over. glibc keeps
/// what a burst freed in its arenas (one per thread that allocated, up to 8 per core): after an
/// attack of a few hundred connections the daemon kept ~46 MiB it no longer used. Trimming
/// after a period in which app connections ended or control connections came returns it (a
/// trim costs about a millisecond), and nothing is done while the daemon is idle or steady.
async fn release_memory_after_bursts(broker: Broker, control: control::Incomplete) {
    let (mut peak, mut admitted) = (0, control.admitted());
    loop {
        tokio::time::sleep(TRIM_PERIOD).await;
        let (apps, now_admitted) = (broker.apps().len(), control.admitted());
        if apps < peak || now_admitted != admitted {
            // malloc_trim walks and locks every arena: off the async workers.
            let _ = tokio::task::spawn_blocking(elastos_loader::release_free_heap).await;
        }
        (peak, admitted) = (apps, now_admitted);
    }
}

/// One control connection: its request is read on the runtime, bounded by
/// [`control::REQUEST_TIMEOUT`] and [`control::MAX_INCOMPLETE`] (`waiting`), and only a whole
/// request takes a blocking thread (it may read the database or unpack a bundle).
// The daemon's shared handles, each connection's task gets a clone of every one.
#[allow(clippy::too_many_arguments)]
async fn serve_control(
    stream: tokio::net::UnixStream,
    waiting: control::Waiting,
    broker: Broker,
    started: std::time::SystemTime,
    jails: Arc<LaunchedJails>,
    store: Arc<Store>,
    dirs: AppDirs,
    supervisor: Supervisor,
    cloud: Arc<cloud::CloudSync>,
) {
    let answer = |result| async {
        // A peer that does not read its answer is not waited for either.
        let _ = tokio::time::timeout(
            control::REQUEST_TIMEOUT,
            control::write_response(&stream, result),
        )
        .await;
    };
    if !control::peer_allowed(&stream) {
        tracing::warn!("control connection from another user refused");
        return answer(Err("permission denied".into())).await;
    }
    let read = tokio::select! {
        read = tokio::time::timeout(control::REQUEST_TIMEOUT, control::read_request(&stream)) => {
            read.unwrap_or_else(|_| {
                Err(ControlError::Protocol(format!(
                    "no request within {:?}; closing",
                    control::REQUEST_TIMEOUT
                )))
            })
        }
        () = waiting.evicted() => Err(ControlError::Protocol(format!(
            "closed to make room: more than {} control connections were waiting for their \
             request",
            control::MAX_INCOMPLETE
        ))),
    };
    drop(waiting);
    let result = match read {
        Err(e) => Err(elastos_host::describe_error(&e)),
        Ok((request, fds)) => {
            let handle = tokio::runtime::Handle::current();
            // A detached run's start as the daemon sees it, request read -> answer ready (the
            // app's entry exec'd): the jail's own start, apart from the CLI's process and its
            // round trip (scripts/bench-launch.sh prints it).
            let run = matches!(request, ControlRequest::Run(_)).then(std::time::Instant::now);
            let result = tokio::task::spawn_blocking(move || {
                let daemon = Serving {
                    broker: &broker,
                    started,
                    jails: &jails,
                    store: &store,
                    dirs: &dirs,
                    cloud: &cloud,
                    runtime: &handle,
                    supervisor: &supervisor,
                };
                handle_request(request, fds, &daemon)
            })
            .await
            .unwrap_or_else(|e| Err(format!("the request failed: {e}")));
            if let Some(began) = run {
                tracing::debug!(
                    request_to_exec_us = began.elapsed().as_micros() as u64,
                    ok = result.is_ok(),
                    "detached run answered"
                );
            }
            result
        }
    };
    answer(result).await;
}

fn to_json(value: impl Serialize) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

/// What a control request may use of the daemon.
struct Serving<'a> {
    broker: &'a Broker,
    started: std::time::SystemTime,
    jails: &'a Arc<LaunchedJails>,
    store: &'a Store,
    dirs: &'a AppDirs,
    cloud: &'a cloud::CloudSync,
    runtime: &'a tokio::runtime::Handle,
    supervisor: &'a Supervisor,
}

fn handle_request(
    request: ControlRequest,
    fds: Vec<OwnedFd>,
    daemon: &Serving<'_>,
) -> Result<serde_json::Value, String> {
    let Serving {
        broker,
        jails,
        store,
        dirs,
        runtime: handle,
        supervisor,
        ..
    } = *daemon;
    let timeout =
        |secs: Option<u64>| Duration::from_secs(secs.unwrap_or(DEFAULT_STOP_TIMEOUT_SECS));
    match request {
        ControlRequest::Attach { identity, pid } => {
            // The app's socket, then its jail's pidfd: without one (a client that is no jail,
            // such as the broker benchmark's), `elastos stop` only closes the connection.
            let mut fds = fds.into_iter();
            let socket = fds
                .next()
                .ok_or("attach needs the app's socket passed along (SCM_RIGHTS)")?;
            let identity = AppIdentity::try_from(identity).map_err(|e| e.to_string())?;
            let _guard = handle.enter();
            let stream = into_tokio(StdUnixStream::from(socket)).map_err(|e| e.to_string())?;
            let id = broker.attach(stream, identity, Origin::Launched { pid });
            if let Some(pidfd) = fds.next() {
                jails
                    .watch(id, JailHandle::new(pidfd))
                    .map_err(|e| format!("cannot watch the app's jail: {e}"))?;
            }
            to_json(id.0)
        }
        ControlRequest::Ps { all } => {
            let mut apps: Vec<control::AppView> =
                broker.apps().iter().map(control::AppView::from).collect();
            supervisor.mark_connections(&mut apps);
            to_json(control::PsView {
                daemon: control::DaemonView {
                    pid: std::process::id(),
                    rss_bytes: control::resident_bytes(),
                    connections: apps.len(),
                },
                apps,
                instances: supervisor.views(all),
            })
        }
        ControlRequest::Run(spec) => to_json(supervisor.run(spec)?),
        ControlRequest::Kill { id, signal } => to_json(supervisor.kill(&id, signal)?),
        ControlRequest::Restart { id, timeout_secs } => {
            to_json(supervisor.restart(&id, timeout(timeout_secs))?)
        }
        ControlRequest::Rm { id, force } => to_json(supervisor.remove(&id, force)?),
        ControlRequest::Prune => to_json(supervisor.prune()),
        ControlRequest::Inspect { id } => supervisor.inspect(&id),
        ControlRequest::Services => {
            let installed = store
                .installed()
                .map_err(|e| elastos_host::describe_error(&e))?;
            to_json(control::service_views(broker, &installed))
        }
        ControlRequest::Stop { id, timeout_secs } => {
            let matching: Vec<_> = broker
                .apps()
                .into_iter()
                .filter(|app| app.id.to_string() == id || app.app_id.to_string() == id)
                .filter(|app| !supervisor.owns_connection(app.id))
                .collect();
            if let Some(instance) = supervisor.find(&id)? {
                if !matching.is_empty() {
                    return Err(format!(
                        "{id:?} is ambiguous: it names detached instance {} and connection {}; \
                         give more of the instance id",
                        instance_prefix(&supervisor.view(&instance).id),
                        matching[0].id
                    ));
                }
                return to_json(vec![supervisor.stop(&instance, timeout(timeout_secs))?]);
            }
            if matching.is_empty() {
                return Err(format!(
                    "no running app with instance id, id prefix, app name, connection id or app \
                     id {id:?}; `elastos ps` lists them"
                ));
            }
            let mut stopped = Vec::new();
            for app in &matching {
                // The broker closes the connection first, so its peers hear STOPPED rather than
                // see the app's socket close; then its jail ends the app (SIGKILL after the
                // timeout).
                broker.disconnect(app.id);
                if let Some(jail) = jails.take(app.id) {
                    jail.stop();
                    stopped.push(jail);
                }
            }
            let deadline = std::time::Instant::now() + timeout(timeout_secs);
            for jail in stopped {
                if !wait_for_exit(&jail, deadline) {
                    jail.kill();
                }
            }
            to_json(
                matching
                    .iter()
                    .map(control::AppView::from)
                    .collect::<Vec<_>>(),
            )
        }
        ControlRequest::Metrics => to_json(metrics::exposition(
            broker,
            daemon.started,
            supervisor.pool_stats(),
        )),
        ControlRequest::CloudSync {
            publisher,
            app_id,
            name,
        } => to_json(daemon.cloud.sync_now(&publisher, app_id, name)?),
        ControlRequest::CloudStatus => to_json(daemon.cloud.status()),
        ControlRequest::CloudEvict {
            publisher,
            app_id,
            name,
            paths,
        } => to_json(daemon.cloud.evict(&publisher, app_id, name, paths)?),
        ControlRequest::CloudPin {
            publisher,
            app_id,
            paths,
            pin,
        } => to_json(daemon.cloud.pin(&publisher, app_id, paths, pin)?),
        other => store_request(other, store, dirs).map_err(|e| elastos_host::describe_error(&e)),
    }
}

/// The requests answered from the database alone: by the daemon, or by `elastos-broker request`
/// when no daemon runs.
pub fn store_request(
    request: ControlRequest,
    store: &Store,
    dirs: &AppDirs,
) -> Result<serde_json::Value, InstallError> {
    let json =
        |value: serde_json::Result<serde_json::Value>| Ok(value.expect("installed apps serialize"));
    match request {
        ControlRequest::Install {
            bundle,
            allow_downgrade,
        } => json(serde_json::to_value(install(
            &bundle,
            allow_downgrade,
            dirs,
            store,
        )?)),
        ControlRequest::Uninstall { app_id } => {
            json(serde_json::to_value(uninstall(app_id, store)?))
        }
        ControlRequest::List => json(serde_json::to_value(store.installed()?)),
        ControlRequest::ProviderOf { service } => {
            json(serde_json::to_value(store.provider_of(service)?))
        }
        ControlRequest::Attach { .. }
        | ControlRequest::Ps { .. }
        | ControlRequest::Stop { .. }
        | ControlRequest::Run(_)
        | ControlRequest::Kill { .. }
        | ControlRequest::Restart { .. }
        | ControlRequest::Rm { .. }
        | ControlRequest::Prune
        | ControlRequest::Inspect { .. }
        | ControlRequest::Metrics
        | ControlRequest::CloudSync { .. }
        | ControlRequest::CloudStatus
        | ControlRequest::CloudEvict { .. }
        | ControlRequest::CloudPin { .. }
        | ControlRequest::Services => Err(InstallError::App(AppError::InstalledApps(
            "running apps are only known to a broker daemon (`elastos broker`)".into(),
        ))),
    }
}
