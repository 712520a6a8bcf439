//! Apps from bundles: verify, unpack, plan and launch them in jails, and install them for
//! on-demand activation. `elastos run` and the broker's activation of installed providers share
//! this one path, so an activated provider is jailed exactly like an app started by hand.

use std::fs;
use std::path::{Path, PathBuf};

use elastos_bundle::{BundleError, UnpackLimits, VerifiedBundle};
use elastos_loader::LaunchError;
use elastos_policy::{HostEnv, JailPlan, Manifest, PolicyError};

use crate::store::{now_secs, InstalledApp, Store, StoreError};

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
    /// The broker's database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppError {
    /// The podman-style exit code: 127 entry not found, 126 entry not executable, 125 else.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Bundle { source: BundleError::EntryMissing { .. }, .. } => 127,
            AppError::Bundle { source: BundleError::EntryNotExecutable { .. }, .. } => 126,
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
    move |source| AppError::Bundle { path: path.into(), source }
}

fn dir_error(path: &Path) -> impl FnOnce(std::io::Error) -> AppError + '_ {
    move |source| AppError::Dir { path: path.into(), source }
}

/// Creates `dir` (and parents), the last component with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), AppError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(dir_error(dir))
}

/// Verifies `bundle` (digest and signature, before anything of it is used), unpacks it once into
/// the cache, creates the app's home and builds the plan of its jail.
pub fn prepare(
    bundle: &Path,
    args: &[String],
    dirs: &AppDirs,
    host: &HostEnv,
) -> Result<PreparedApp, AppError> {
    let verified = VerifiedBundle::open(bundle).map_err(bundle_error(bundle))?;
    let unpacked = verified
        .unpack_into_cache(&dirs.bundles, &UnpackLimits::default())
        .map_err(bundle_error(bundle))?;
    tracing::debug!(
        root = %unpacked.root().display(),
        fresh = unpacked.freshly_unpacked(),
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

/// Verifies `bundle`, keeps a copy of it in `dirs.installed` and records it in `store`, so the
/// broker can start it when one of its services is looked up.
pub fn install(bundle: &Path, dirs: &AppDirs, store: &Store) -> Result<InstalledApp, AppError> {
    let verified = VerifiedBundle::open(bundle).map_err(bundle_error(bundle))?;
    let manifest = verified.manifest();
    let digest = verified.digest().to_string();
    create_private_dir(&dirs.installed)?;
    let copy = dirs.installed.join(format!("{digest}.bundle"));
    if !copy.exists() {
        // Copy then rename: a crash never leaves a partial bundle under the final name.
        let partial = dirs.installed.join(format!(".{digest}.partial"));
        fs::copy(bundle, &partial).map_err(dir_error(&partial))?;
        fs::rename(&partial, &copy).map_err(dir_error(&copy))?;
    }
    let app = InstalledApp {
        app_id: manifest.id(),
        name: manifest.name().to_string(),
        version: manifest.version().to_string(),
        publisher: verified.publisher().to_string(),
        digest,
        bundle: copy,
        provides: manifest.provides().to_vec(),
        uses: manifest.uses().to_vec(),
        installed_at: now_secs(),
    };
    store.install(&app)?;
    Ok(app)
}

/// Removes an installed app from `store` and deletes the broker's copy of its bundle.
pub fn uninstall(app_id: uuid::Uuid, store: &Store) -> Result<InstalledApp, AppError> {
    let app = store.uninstall(app_id)?;
    if let Err(e) = fs::remove_file(&app.bundle) {
        tracing::warn!(bundle = %app.bundle.display(), error = %e, "could not delete installed bundle copy");
    }
    Ok(app)
}
