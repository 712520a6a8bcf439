//! Installing bundles: the broker keeps its own verified copy and records the app in the
//! database; and the database as the broker core's source of installed apps.

use std::fs;
use std::path::Path;

use elastos_bundle::VerifiedBundle;
use elastos_host::activator::InstalledApps;
use elastos_host::apps::{create_private_dir, AppDirs, AppError, InstalledApp};
use elastos_host::ownership::{self, Admission, ForeignServices};
use uuid::Uuid;

use crate::store::{now_secs, Store, StoreError};

/// Installing or uninstalling failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The bundle or a directory.
    #[error(transparent)]
    App(#[from] AppError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Verifies `bundle`, asks the ID ledger whether its publisher owns its app id and every
/// service it provides (binding them on first use; an older version than the highest seen only
/// with `allow_downgrade`), keeps a copy of it in `dirs.installed` and records it in `store`, so
/// the broker can start it when one of its services is looked up. A refused bundle changes
/// nothing of the installed app.
pub fn install(
    bundle: &Path,
    allow_downgrade: bool,
    dirs: &AppDirs,
    store: &Store,
) -> Result<InstalledApp, InstallError> {
    let verified = VerifiedBundle::open(bundle).map_err(|source| AppError::Bundle {
        path: bundle.into(),
        source,
    })?;
    let manifest = verified.manifest();
    let admission = Admission::Record {
        allow_downgrade,
        foreign_services: ForeignServices::Refuse,
    };
    ownership::admit(
        dirs,
        bundle,
        manifest,
        verified.publisher(),
        verified.digest(),
        admission,
    )?;
    let digest = verified.digest().to_string();
    create_private_dir(&dirs.installed)?;
    let copy = dirs.installed.join(format!("{digest}.bundle"));
    if !copy.exists() {
        // Copy then rename: a crash never leaves a partial bundle under the final name.
        let partial = dirs.installed.join(format!(".{digest}.partial"));
        fs::copy(bundle, &partial).map_err(|source| AppError::Dir {
            path: partial.clone(),
            source,
        })?;
        fs::rename(&partial, &copy).map_err(|source| AppError::Dir {
            path: copy.clone(),
            source,
        })?;
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
pub fn uninstall(app_id: Uuid, store: &Store) -> Result<InstalledApp, InstallError> {
    let app = store.uninstall(app_id)?;
    if let Err(e) = fs::remove_file(&app.bundle) {
        tracing::warn!(bundle = %app.bundle.display(), error = %e, "could not delete installed bundle copy");
    }
    Ok(app)
}

impl InstalledApps for Store {
    fn provider_of(&self, service: Uuid) -> Result<Option<InstalledApp>, AppError> {
        Store::provider_of(self, service).map_err(|e| AppError::InstalledApps(e.to_string()))
    }

    fn record_activation(&self, app_id: Uuid) {
        if let Err(e) = Store::record_activation(self, app_id) {
            tracing::warn!(app = %app_id, error = %e, "could not record the activation");
        }
    }
}
