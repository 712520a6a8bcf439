//! The installed apps as a small JSON file beside the broker's database, so that `elastos run`'s
//! embedded broker finds a provider to activate without RocksDB: asking the `elastos-broker
//! request` helper (a process that opens the database read-only) cost ~20 ms per lookup here,
//! more than the rest of the activation, while reading this file costs tens of µs.
//!
//! The database stays the record: its single writer (`elastos-broker`, `host/daemon/src/store.rs`)
//! rewrites the index from it after every install and uninstall and when it opens the database,
//! replacing the file atomically (rename), so a reader sees the apps before or after a change,
//! never half of one. A missing or unreadable index is never guessed around: the lookup falls back
//! to the helper.

use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::apps::InstalledApp;

/// The index beside the database at `broker_db`.
pub fn index_path(broker_db: &Path) -> PathBuf {
    broker_db.with_file_name("installed.json")
}

/// Replaces the index at `path` with `apps` (write a private temporary file, fsync-free: the
/// database is the record and rewrites the index at its next open; then rename).
pub fn write(path: &Path, apps: &[InstalledApp]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension(format!("json.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(&serde_json::to_vec(apps).expect("installed apps serialize"))
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Removes the index, so that readers ask the database (after a change the index could not
/// follow).
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(index = %path.display(), error = %e, "cannot remove the installed-apps index")
        }
    }
}

/// Why the index could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// There is none (no app was installed since the database had one).
    #[error("no installed-apps index at {}", .0.display())]
    Missing(PathBuf),
    /// It could not be read or parsed.
    #[error("unreadable installed-apps index {}: {message}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The installed app that provides `service`, by the index at `path`.
pub fn provider_of(path: &Path, service: Uuid) -> Result<Option<InstalledApp>, IndexError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(IndexError::Missing(path.into()))
        }
        Err(e) => {
            return Err(IndexError::Unreadable {
                path: path.into(),
                message: e.to_string(),
            })
        }
    };
    let apps: Vec<InstalledApp> =
        serde_json::from_slice(&bytes).map_err(|e| IndexError::Unreadable {
            path: path.into(),
            message: e.to_string(),
        })?;
    Ok(apps.into_iter().find(|app| app.provides.contains(&service)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: u128, provides: &[u128]) -> InstalledApp {
        InstalledApp {
            app_id: Uuid::from_u128(id),
            name: format!("app{id}"),
            version: "1.0.0".into(),
            publisher: "00".repeat(32),
            digest: "11".repeat(32),
            bundle: PathBuf::from(format!("/bundles/{id}.bundle")),
            provides: provides.iter().copied().map(Uuid::from_u128).collect(),
            uses: Vec::new(),
            installed_at: 1,
        }
    }

    #[test]
    fn finds_the_provider_and_says_when_it_cannot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = index_path(&dir.path().join("broker.db"));
        assert!(matches!(
            provider_of(&path, Uuid::from_u128(7)),
            Err(IndexError::Missing(_))
        ));
        write(&path, &[app(1, &[7, 8]), app(2, &[9])]).expect("written");
        let found = provider_of(&path, Uuid::from_u128(9)).expect("read");
        assert_eq!(found.map(|a| a.app_id), Some(Uuid::from_u128(2)));
        assert_eq!(provider_of(&path, Uuid::from_u128(5)).expect("read"), None);
        // Replaced whole: the old providers are gone.
        write(&path, &[app(3, &[5])]).expect("rewritten");
        assert_eq!(provider_of(&path, Uuid::from_u128(9)).expect("read"), None);
        std::fs::write(&path, b"{not json").expect("damaged");
        assert!(matches!(
            provider_of(&path, Uuid::from_u128(5)),
            Err(IndexError::Unreadable { .. })
        ));
        remove(&path);
        assert!(!path.exists());
    }
}
