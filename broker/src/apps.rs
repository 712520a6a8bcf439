//! Apps from bundles: verify, unpack, plan and launch them in jails, and install them for
//! on-demand activation. `elastos run` and the broker's activation of installed providers share
//! this one path, so an activated provider is jailed exactly like an app started by hand.

use std::collections::HashMap;
use std::fs;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use elastos_bundle::{open_verified_cached, BundleError, UnpackLimits};
use elastos_loader::{kill_jail, stop_jail, LaunchError, LaunchOptions};
use elastos_policy::{HostEnv, JailPlan, Manifest, PolicyError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::control::ControlRequest;
use crate::paths::companion_binary;
use crate::{ActivationError, Activator, AppIdentity, BoxFuture, Broker, InstanceId, Origin};

/// An app installed with `elastos install`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledApp {
    /// The app's UUID (from its verified manifest).
    pub app_id: Uuid,
    /// The app's name.
    pub name: String,
    /// The app's version.
    pub version: String,
    /// Publisher ID (hex of the Ed25519 key that signed the bundle).
    pub publisher: String,
    /// Digest of the bundle (hex).
    pub digest: String,
    /// The broker's own copy of the bundle, verified again before every launch.
    pub bundle: PathBuf,
    /// Services it provides: the broker starts it when one of them is looked up.
    pub provides: Vec<Uuid>,
    /// Services it may use.
    pub uses: Vec<Uuid>,
    /// When it was installed, in seconds since the Unix epoch.
    pub installed_at: u64,
}

/// Where apps' files live on the host.
#[derive(Debug, Clone)]
pub struct AppDirs {
    /// Unpacked bundles, by digest (a cache).
    pub bundles: PathBuf,
    /// Per-app homes, by app id.
    pub homes: PathBuf,
    /// The broker's copies of installed bundles.
    pub installed: PathBuf,
}

/// Preparing or launching an app failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The bundle is invalid, or could not be read or unpacked.
    #[error("bundle {}: {source}", path.display())]
    Bundle {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: BundleError,
    },
    /// A directory of the app (home, installed copy) could not be prepared.
    #[error("cannot prepare {}: {source}", path.display())]
    Dir {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The jail's policy could not be built.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The jail could not be started.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The installed apps could not be read.
    #[error("cannot read the installed apps: {0}")]
    InstalledApps(String),
    /// The `elastos-broker` helper could not answer.
    #[error("{}: {message}", executable.display())]
    Helper {
        /// The helper executable.
        executable: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl AppError {
    /// The podman-style exit code: 127 entry not found, 126 entry not executable, 125 else.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Bundle {
                source: BundleError::EntryMissing { .. },
                ..
            } => 127,
            AppError::Bundle {
                source: BundleError::EntryNotExecutable { .. },
                ..
            } => 126,
            AppError::Launch(launch) => launch.exit_code(),
            _ => 125,
        }
    }
}

/// A verified, unpacked app and the plan of its jail.
#[derive(Debug, Clone)]
pub struct PreparedApp {
    /// The verified manifest.
    pub manifest: Manifest,
    /// The publisher's Ed25519 key.
    pub publisher: [u8; 32],
    /// The bundle's digest (hex).
    pub digest: String,
    /// The jail.
    pub plan: JailPlan,
}

fn bundle_error(path: &Path) -> impl FnOnce(BundleError) -> AppError + '_ {
    move |source| AppError::Bundle {
        path: path.into(),
        source,
    }
}

fn dir_error(path: &Path) -> impl FnOnce(std::io::Error) -> AppError + '_ {
    move |source| AppError::Dir {
        path: path.into(),
        source,
    }
}

/// Creates `dir` (and parents), the last component with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), AppError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(dir_error(dir))
}

/// Verifies `bundle` (digest and signature, before anything of it is used; or, for a file
/// unchanged since it was verified, its verification record), unpacks it once into the cache,
/// creates the app's home and builds the plan of its jail.
pub fn prepare(
    bundle: &Path,
    args: &[String],
    dirs: &AppDirs,
    host: &HostEnv,
) -> Result<PreparedApp, AppError> {
    let (verified, unpacked) =
        open_verified_cached(bundle, &dirs.bundles, &UnpackLimits::default())
            .map_err(bundle_error(bundle))?;
    tracing::debug!(
        root = %unpacked.root().display(),
        fresh = unpacked.freshly_unpacked(),
        verified_by = ?verified.verified_by(),
        "{}",
        if unpacked.freshly_unpacked() { "unpacked bundle" } else { "bundle already unpacked" }
    );
    let manifest = verified.manifest().clone();
    create_private_dir(&dirs.homes)?;
    let home = dirs.homes.join(manifest.id().to_string());
    create_private_dir(&home)?;
    let plan = JailPlan::build(&manifest, unpacked.root(), &home, args, host)?;
    Ok(PreparedApp {
        manifest,
        publisher: *verified.publisher().as_bytes(),
        digest: verified.digest().to_string(),
        plan,
    })
}

impl PreparedApp {
    /// The identity the broker gives the app's connection: all of it from the verified bundle.
    pub fn identity(&self) -> AppIdentity {
        AppIdentity {
            app_id: self.manifest.id(),
            name: self.manifest.name().to_string(),
            publisher: self.publisher,
            provides: self.manifest.provides().to_vec(),
            uses: self.manifest.uses().to_vec(),
        }
    }
}

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

/// The launch options of this installation (`elastos-loader` next to the running executable,
/// or `ELASTOS_LOADER`).
pub fn launch_options(
    allow_without_kernel_sandbox: bool,
    no_cgroup: bool,
) -> Result<LaunchOptions, AppError> {
    let loader =
        companion_binary("ELASTOS_LOADER", "elastos-loader").map_err(|source| AppError::Dir {
            path: PathBuf::from("elastos-loader"),
            source,
        })?;
    Ok(LaunchOptions {
        loader,
        allow_without_kernel_sandbox,
        no_cgroup,
    })
}

/// What a jail takes from the host's environment (LANG, TERM).
pub fn host_env() -> HostEnv {
    HostEnv {
        lang: std::env::var("LANG").ok(),
        term: std::env::var("TERM").ok(),
    }
}

/// Starts installed apps in jails when the broker needs one of their services, and stops them.
///
/// Each activated app is launched and supervised by a thread of its own: the kernel kills a
/// jail when the thread that started it ends (PR_SET_PDEATHSIG), so that thread lives exactly
/// as long as the app.
pub struct AppLauncher {
    dirs: AppDirs,
    installed: Arc<dyn InstalledApps>,
    options: LaunchOptions,
    host: HostEnv,
    next_instance: AtomicU64,
    running: Mutex<HashMap<InstanceId, i32>>,
    /// Services recently found not installed, and when: an app asking again and again for such
    /// a service must not cost a database lookup (a process, for a [`StoreHelper`]) each time.
    not_installed: Mutex<HashMap<Uuid, std::time::Instant>>,
}

/// How long "no installed app provides it" is remembered.
const NOT_INSTALLED_TTL: std::time::Duration = std::time::Duration::from_secs(2);

impl AppLauncher {
    /// A launcher for the `installed` apps, with the launch `options` of `elastos run`.
    pub fn new(
        dirs: AppDirs,
        installed: Arc<dyn InstalledApps>,
        options: LaunchOptions,
        host: HostEnv,
    ) -> AppLauncher {
        AppLauncher {
            dirs,
            installed,
            options,
            host,
            next_instance: AtomicU64::new(1),
            running: Mutex::new(HashMap::new()),
            not_installed: Mutex::new(HashMap::new()),
        }
    }

    /// The installed provider of `service`, looked up off the async threads (it may read a
    /// database or run a helper process), with negative answers remembered for a moment.
    async fn find_provider(
        self: &Arc<Self>,
        service: Uuid,
    ) -> Result<Option<InstalledApp>, AppError> {
        {
            let mut recent = self.not_installed.lock().expect("not poisoned");
            recent.retain(|_, at| at.elapsed() < NOT_INSTALLED_TTL);
            if recent.contains_key(&service) {
                return Ok(None);
            }
        }
        let launcher = Arc::clone(self);
        let found = tokio::task::spawn_blocking(move || launcher.installed.provider_of(service))
            .await
            .map_err(|e| AppError::InstalledApps(e.to_string()))??;
        if found.is_none() {
            let now = std::time::Instant::now();
            self.not_installed
                .lock()
                .expect("not poisoned")
                .insert(service, now);
        }
        Ok(found)
    }
}

/// What the supervisor thread hands back once the jail runs.
type Started = Result<(StdUnixStream, AppIdentity, u32), String>;

impl Activator for Arc<AppLauncher> {
    fn activate(
        &self,
        broker: Broker,
        service: Uuid,
    ) -> BoxFuture<'static, Result<(), ActivationError>> {
        let launcher = Arc::clone(self);
        Box::pin(async move {
            let failed = |reason: String| ActivationError::Failed { service, reason };
            let app = launcher
                .find_provider(service)
                .await
                .map_err(|e| failed(e.to_string()))?
                .ok_or(ActivationError::NotInstalled { service })?;
            let instance = InstanceId(launcher.next_instance.fetch_add(1, Ordering::Relaxed));
            let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Started>();
            let supervisor = Arc::clone(&launcher);
            let name = format!("elastos-app-{}", app.name);
            std::thread::Builder::new()
                .name(name)
                .spawn(move || supervisor.supervise(app, instance, started_tx))
                .map_err(|e| failed(format!("cannot start a supervisor thread: {e}")))?;
            let (stream, identity, pid) = started_rx
                .await
                .map_err(|_| failed("the supervisor thread ended".into()))?
                .map_err(failed)?;
            let stream = stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(stream))
                .map_err(|e| failed(format!("cannot use the app's socket: {e}")))?;
            broker.attach(
                stream,
                identity,
                Origin::Activated {
                    instance,
                    pid: Some(pid),
                },
            );
            Ok(())
        })
    }

    fn stop(&self, instance: InstanceId) {
        if let Some(pid) = self.running.lock().expect("not poisoned").get(&instance) {
            stop_jail(*pid);
        }
    }
}

impl AppLauncher {
    /// Stops every app this launcher activated (SIGTERM, SIGKILL after `grace`) and returns once
    /// their supervisors have reaped them and removed their cgroups: for `elastos run`, whose
    /// embedded broker's providers would otherwise die with it (PR_SET_PDEATHSIG) with nobody
    /// left to remove their cgroups.
    pub fn stop_all(&self, grace: std::time::Duration) {
        let signal_all = |signal: fn(i32)| {
            for pid in self.running.lock().expect("not poisoned").values() {
                signal(*pid);
            }
        };
        let all_gone = |within: std::time::Duration| {
            let deadline = std::time::Instant::now() + within;
            while !self.running.lock().expect("not poisoned").is_empty() {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            true
        };
        signal_all(stop_jail);
        if !all_gone(grace) {
            signal_all(kill_jail);
            all_gone(grace);
        }
    }

    /// The supervisor thread of one activated app: prepare, launch, report, wait.
    fn supervise(
        &self,
        app: InstalledApp,
        instance: InstanceId,
        started: tokio::sync::oneshot::Sender<Started>,
    ) {
        let launched = (|| {
            let prepared = prepare(&app.bundle, &[], &self.dirs, &self.host)?;
            let (broker_end, app_end) = StdUnixStream::pair().map_err(|source| AppError::Dir {
                path: app.bundle.clone(),
                source,
            })?;
            let jail = elastos_loader::launch(&prepared.plan, app_end.into(), &self.options)?;
            Ok::<_, AppError>((broker_end, prepared.identity(), jail))
        })();
        let jail = match launched {
            Err(e) => {
                tracing::warn!(app = %app.app_id, error = %e, "activation failed");
                let _ = started.send(Err(e.to_string()));
                return;
            }
            Ok((stream, identity, jail)) => {
                let pid = jail.facts().pid;
                self.running
                    .lock()
                    .expect("not poisoned")
                    .insert(instance, pid);
                self.installed.record_activation(app.app_id);
                tracing::info!(app = %app.app_id, name = %app.name, pid, %instance, "activated");
                if started.send(Ok((stream, identity, pid as u32))).is_err() {
                    // Nobody waits any more (the activation timed out): do not leave it running.
                    stop_jail(pid);
                }
                jail
            }
        };
        match jail.wait_blocking() {
            Ok(exit) => {
                tracing::info!(app = %app.app_id, %instance, code = exit.code(), "activated app ended")
            }
            Err(e) => {
                tracing::warn!(app = %app.app_id, %instance, error = %e, "waiting for activated app")
            }
        }
        self.running.lock().expect("not poisoned").remove(&instance);
    }
}
