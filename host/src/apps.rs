//! Apps from bundles: verify, unpack and plan them ([`prepare`]), and the one function every
//! start of an app goes through ([`start_app`]): `elastos run`, the broker's on-demand
//! activation and the daemon's detached runs, so an activated provider is jailed exactly like an
//! app started by hand.

use std::fs;
use std::io;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

use elastos_broker::AppIdentity;
use elastos_bundle::{open_verified_cached, BundleError, UnpackLimits};
use elastos_identity::{KeyError, OwnershipError, TrustError};
use elastos_loader::{LaunchError, LaunchOptions, RunningJail, StartStep};
use elastos_policy::{
    Ceilings, CeilingsError, EntryLinkage, ExcessError, HostEnv, JailPlan, LimitOverrides,
    Manifest, OverrideError, PolicyError,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ownership::{self, Admission, ForeignServices};
use crate::paths::companion_binary;

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
    /// Per-app homes, by the publisher that owns the app id, then app id
    /// ([`crate::ownership::home_dir`]).
    pub homes: PathBuf,
    /// The broker's copies of installed bundles.
    pub installed: PathBuf,
    /// Where the user key (`user.key`) lives: beside the publisher keys.
    pub user_keys: PathBuf,
    /// The ID ledger: who owns which app id and service.
    pub ledger: PathBuf,
    /// The trust list and publisher policy (`elastos trust`, `elastos config`).
    pub trust: PathBuf,
    /// The user's own ceilings on manifests' limits, which may only lower the administrator's
    /// (`/etc/elastos/limits.toml`).
    pub user_limits: PathBuf,
}

/// Preparing or launching an app failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The bundle is invalid, or could not be read or unpacked.
    #[error("bundle {}", path.display())]
    Bundle {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: BundleError,
    },
    /// A directory of the app (home, installed copy) could not be prepared.
    #[error("cannot prepare {}", path.display())]
    Dir {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A companion executable of elastos could not be located.
    #[error("cannot locate {name} (hint: it belongs next to elastos, or set {env})")]
    Companion {
        /// The executable's name.
        name: &'static str,
        /// The variable that overrides where it is.
        env: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The jail's policy could not be built.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A ceilings file on manifests' limits could not be read or is wrong.
    #[error("ceilings file {}", path.display())]
    Ceilings {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: CeilingsSource,
    },
    /// The manifest asks for more than a ceiling allows.
    #[error(transparent)]
    Excess(#[from] ExcessError),
    /// A limit given on the command line is above its ceiling.
    #[error(transparent)]
    Override(#[from] OverrideError),
    /// The jail could not be started.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The manifest's home quota could not be put in place.
    #[error(transparent)]
    HomeQuota(#[from] elastos_loader::home_quota::HomeQuotaError),
    /// The installed apps could not be read.
    #[error("cannot read the installed apps: {0}")]
    InstalledApps(String),
    /// The ID ledger refused the bundle: another publisher owns its app id or one of its
    /// services, its key is revoked or rotated away, or it is a downgrade.
    #[error("refusing bundle {}", bundle.display())]
    Ownership {
        /// The bundle file.
        bundle: PathBuf,
        /// Why (boxed: it is large, and refusals are rare).
        #[source]
        source: Box<OwnershipError>,
    },
    /// The ID ledger could not be opened, or is missing beside existing app state.
    #[error("cannot use the ID ledger")]
    Ledger(#[source] Box<OwnershipError>),
    /// The user key could not be loaded or made.
    #[error(transparent)]
    UserKey(#[from] KeyError),
    /// The trust list could not be read, or the policy refuses the publisher.
    #[error(transparent)]
    Trust(#[from] TrustError),
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
    /// The services of its manifest it owns: what its broker identity lets it register.
    pub provides: Vec<Uuid>,
    /// The publisher that owns its app id, by which its home is keyed (the signer, or a key the
    /// signer rotated away from).
    pub home_owner: [u8; 32],
    /// Its home on the host ([`ownership::home_dir`]).
    pub home: PathBuf,
    /// Its home was mounted (its quota image) by this preparation: a jail's first process
    /// cloned before does not see that mount.
    pub home_mounted_now: bool,
    /// The jail.
    pub plan: JailPlan,
}

fn bundle_error(path: &Path) -> impl FnOnce(BundleError) -> AppError + '_ {
    move |source| AppError::Bundle {
        path: path.into(),
        source,
    }
}

fn dir_error(path: &Path) -> impl FnOnce(io::Error) -> AppError + '_ {
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
/// asks the ID ledger whether its publisher may use its app id ([`ownership::admit`]), creates
/// the app's home (keyed by the publisher that owns the id) and builds the plan of its jail.
/// With [`Admission::CheckOnly`] nothing is recorded and the home is not created. The
/// manifest's limits are replaced by `overrides` (the command line's), then held to the
/// ceilings.
pub fn prepare(
    bundle: &Path,
    args: &[String],
    dirs: &AppDirs,
    host: &HostEnv,
    admission: Admission,
    overrides: &LimitOverrides,
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
    let mut manifest = verified.manifest().clone();
    let ceilings = ceilings(dirs)?;
    // The command line first: a limit it sets is the user's choice, checked against its
    // ceiling under the flag's name, and what the manifest asked for it no longer matters.
    manifest.apply_overrides(&ceilings, overrides)?;
    for capped in manifest.apply_ceilings(&ceilings)? {
        tracing::warn!(app = %manifest.id(), "{capped}");
    }
    let admitted = ownership::admit(
        dirs,
        bundle,
        &manifest,
        verified.publisher(),
        verified.digest(),
        admission,
    )?;
    let home = ownership::home_dir(dirs, admitted.home_owner, manifest.id());
    let mut home_mounted_now = false;
    if admission != Admission::CheckOnly {
        create_private_dir(&home)?;
        home_mounted_now = enforce_home_quota(&manifest, &home)?;
    }
    let entry = unpacked.root().join(manifest.entry());
    let plan = JailPlan::build(
        &manifest,
        unpacked.root(),
        &home,
        args,
        host,
        entry_linkage(&entry)?,
    )?;
    Ok(PreparedApp {
        manifest,
        publisher: *verified.publisher().as_bytes(),
        digest: verified.digest().to_string(),
        provides: admitted.provides,
        home_owner: *admitted.home_owner.as_bytes(),
        home,
        home_mounted_now,
        plan,
    })
}

/// Puts the manifest's `[home] quota` in place (see `elastos_loader::home_quota`): as root, the
/// home becomes the mount of its image; launched by another user it cannot be, and is not
/// enforced (said in the log and by `elastos policy show`). Whether the home was mounted now.
fn enforce_home_quota(manifest: &Manifest, home: &Path) -> Result<bool, AppError> {
    use elastos_loader::home_quota::{ensure_mounted, HomeMount};
    let Some(quota) = manifest.home_quota() else {
        return Ok(false);
    };
    let identity = elastos_loader::HostIdentity::for_app(&manifest.id());
    if !identity.launched_by_root {
        tracing::warn!(app = %manifest.id(), quota, "the home quota is not enforced: it needs root");
        return Ok(false);
    }
    let mounted = ensure_mounted(home, quota, (identity.uid, identity.gid))?;
    Ok(mounted == HomeMount::MountedNow)
}

/// How the bundle's entry is linked, from its first bytes (see [`EntryLinkage`]).
fn entry_linkage(entry: &Path) -> Result<EntryLinkage, AppError> {
    use std::io::Read;
    let mut prefix = Vec::with_capacity(elastos_policy::linkage::ELF_PREFIX_BYTES);
    fs::File::open(entry)
        .and_then(|file| {
            file.take(elastos_policy::linkage::ELF_PREFIX_BYTES as u64)
                .read_to_end(&mut prefix)
        })
        .map_err(dir_error(entry))?;
    Ok(EntryLinkage::from_elf_prefix(&prefix))
}

/// The ceilings on manifests' limits in force: the administrator's file
/// ([`elastos_policy::ceilings::SYSTEM_FILE`], or the defaults without one), lowered by the
/// user's ([`AppDirs::user_limits`]) when there is one.
pub fn ceilings(dirs: &AppDirs) -> Result<Ceilings, AppError> {
    let read = |path: &Path| match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AppError::Ceilings {
            path: path.into(),
            source: CeilingsSource::Read(source),
        }),
    };
    fn parsed(path: &Path) -> impl FnOnce(CeilingsError) -> AppError + '_ {
        move |source| AppError::Ceilings {
            path: path.into(),
            source: CeilingsSource::Parse(source),
        }
    }
    let system = Path::new(elastos_policy::ceilings::SYSTEM_FILE);
    let mut ceilings = match read(system)? {
        Some(text) => Ceilings::parse(&text).map_err(parsed(system))?,
        None => Ceilings::default(),
    };
    if let Some(text) = read(&dirs.user_limits)? {
        ceilings = ceilings
            .lowered_by(&text)
            .map_err(parsed(&dirs.user_limits))?;
    }
    Ok(ceilings)
}

impl PreparedApp {
    /// The identity the broker gives the app's connection: all of it from the verified bundle,
    /// its services narrowed to those the ledger says it owns.
    pub fn identity(&self) -> AppIdentity {
        AppIdentity {
            app_id: self.manifest.id(),
            name: self.manifest.name().to_string(),
            publisher: self.publisher,
            provides: self.provides.clone(),
            uses: self.manifest.uses().to_vec(),
            pins: self
                .manifest
                .pinned()
                .iter()
                .map(|(service, publisher)| (*service, *publisher))
                .collect(),
        }
    }
}

/// The launch options of this installation (`elastos-loader` next to the running executable,
/// or `ELASTOS_LOADER`), for a user whose runtime directory is `runtime_dir`
/// ([`crate::paths::StateDirs::runtime`]).
pub fn launch_options(
    runtime_dir: &Path,
    allow_without_kernel_sandbox: bool,
    no_cgroup: bool,
) -> Result<LaunchOptions, AppError> {
    let loader = companion_binary("ELASTOS_LOADER", "elastos-loader")?;
    Ok(LaunchOptions {
        loader,
        allow_without_kernel_sandbox,
        no_cgroup,
        attached: true,
        capture_output: false,
        runtime_dir: runtime_dir.to_path_buf(),
    })
}

/// What a jail takes from the host's environment (LANG, TERM).
pub fn host_env() -> HostEnv {
    HostEnv {
        lang: std::env::var("LANG").ok(),
        term: std::env::var("TERM").ok(),
    }
}

/// Why a ceilings file was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeilingsSource {
    /// It could not be read.
    #[error("cannot read it")]
    Read(#[source] io::Error),
    /// It is not a valid ceilings file.
    #[error(transparent)]
    Parse(#[from] CeilingsError),
}

/// What [`start_app`] is doing, for a caller that shows progress or prepares the home.
#[derive(Debug, Clone, Copy)]
pub enum StartPhase<'a> {
    /// Verifying (and, the first time, unpacking) the bundle: long for a large bundle.
    Verifying,
    /// Done with the bundle (successfully or not).
    Verified,
    /// The app is admitted; its jail is built next.
    Ready(&'a PreparedApp),
    /// Its home exists and belongs to the ids it runs as, while the loader builds the jail
    /// (`elastos run` starts bringing a synced home up to date here).
    HomeReady(&'a PreparedApp),
    /// Its entry runs when the observer returns (`elastos run` waits here for the home's sync).
    EntryNext,
}

/// What to start.
#[derive(Debug, Clone, Copy)]
pub struct StartRequest<'a> {
    /// The bundle file.
    pub bundle: &'a Path,
    /// Arguments for the app's entry.
    pub args: &'a [String],
    /// Where apps' files live.
    pub dirs: &'a AppDirs,
    /// What the jail takes from the host's environment.
    pub host: &'a HostEnv,
    /// How to launch.
    pub options: &'a LaunchOptions,
    /// Accept a version older than the highest one seen (`--allow-downgrade`).
    pub allow_downgrade: bool,
    /// The command line's limits, replacing the manifest's (`--memory`, `--cpus`, `--pids`).
    pub overrides: LimitOverrides,
}

/// An app whose entry runs in its jail.
#[derive(Debug)]
pub struct StartedApp {
    /// The jail; dropping it kills the app.
    pub jail: RunningJail,
    /// Who the app is, from its verified bundle: what the broker serves its connection as.
    pub identity: AppIdentity,
    /// The broker's end of the app's fd 3, made with it in the jail's network namespace (see
    /// `elastos_loader::spawn`). What the app writes waits in the socket until a broker serves
    /// it.
    pub broker_end: StdUnixStream,
    /// Whether it started from a warm jail of the daemon's pool ([`crate::pool`]).
    pub warm: bool,
}

/// Starts an app: the one path of every start (`elastos run`, on-demand activation, detached
/// runs).
///
/// The jail's first process is created before the bundle is read, so that the kernel builds its
/// namespaces while this thread verifies and plans the bundle; it gets nothing of the bundle
/// before [`elastos_loader::PendingJail::start`], and is killed if the bundle is refused. Call it
/// from the thread that will supervise the app, before that process starts other threads if it
/// can (see [`elastos_loader::spawn`]): the app dies with that thread.
pub fn start_app(
    request: &StartRequest<'_>,
    observe: &mut dyn FnMut(StartPhase<'_>),
) -> Result<StartedApp, AppError> {
    let began = std::time::Instant::now();
    // A warm jail parked ahead of time by the daemon's pool, when this is a pooled thread. Its
    // replacement is parked once this start is over, when `_refill` drops.
    let (parked, _refill) = crate::pool::take_parked(request.options).unzip();
    let warm = parked.is_some();
    let spawn = || {
        // No cache file is open for writing while the jail's first process is cloned (it
        // copies every fd of this process until it closes what it was not given).
        let _no_writers = elastos_bundle::exec_fork_lock()
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        elastos_loader::spawn(request.options)
    };
    let mut pending = match parked {
        Some(parked) => parked,
        None => spawn()?,
    };
    let cloned = began.elapsed();
    observe(StartPhase::Verifying);
    let admission = Admission::Record {
        allow_downgrade: request.allow_downgrade,
        foreign_services: ForeignServices::Withhold,
    };
    let prepared = prepare(
        request.bundle,
        request.args,
        request.dirs,
        request.host,
        admission,
        &request.overrides,
    );
    observe(StartPhase::Verified);
    let prepared = prepared?;
    if prepared.home_mounted_now {
        // The home's quota image was mounted after the clone (its first start since boot): the
        // process waiting in its copy of the mount namespace would see the empty directory
        // beneath, so a new one takes its place.
        drop(pending);
        pending = spawn()?;
    }
    let planned = began.elapsed();
    observe(StartPhase::Ready(&prepared));
    let ready = began.elapsed();
    let (jail, broker_end) = pending.start_observed(&prepared.plan, &mut |step| match step {
        StartStep::HomeReady => observe(StartPhase::HomeReady(&prepared)),
        StartStep::EntryNext => observe(StartPhase::EntryNext),
    })?;
    // Where a start's time goes (scripts/bench-activation.sh and docs/benchmarks.md use it).
    tracing::debug!(
        app = %prepared.manifest.id(),
        warm,
        clone_us = cloned.as_micros() as u64,
        verify_plan_us = (planned - cloned).as_micros() as u64,
        observer_us = (ready - planned).as_micros() as u64,
        loader_to_exec_us = (began.elapsed() - ready).as_micros() as u64,
        "app started"
    );
    Ok(StartedApp {
        jail,
        identity: prepared.identity(),
        broker_end: broker_end.into(),
        warm,
    })
}
