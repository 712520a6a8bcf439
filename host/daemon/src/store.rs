//! The broker's persistent state in RocksDB: installed bundles, which app provides which
//! service, and per-app records. It survives restarts; a damaged or locked database is reported
//! with what to do, never panicked over.
//!
//! Layout: column family `apps` (app UUID, 16 bytes -> JSON [`InstalledApp`]), `services`
//! (service UUID -> providing app UUID), `records` (app UUID -> JSON [`AppRecord`]); the default
//! column family holds `schema` = [`SCHEMA_VERSION`].

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use elastos_host::apps::InstalledApp;
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, DB};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

/// Version of the layout above; a database of another version is refused, not misread.
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema";
const APPS: &str = "apps";
const SERVICES: &str = "services";
const RECORDS: &str = "records";

/// What the broker remembers about an app across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    /// How often the broker launched it on demand.
    pub activations: u64,
    /// The last activation, in seconds since the Unix epoch.
    pub last_activated_at: Option<u64>,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened.
    #[error(
        "cannot open the broker database {}: {message}; hint: {hint}",
        path.display()
    )]
    Open {
        /// The database directory.
        path: PathBuf,
        /// RocksDB's description.
        message: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The database was written by another layout version.
    #[error(
        "the broker database {} has schema version {found}, this elastos reads version \
         {SCHEMA_VERSION}; hint: move it away to start empty (then install the apps again)",
        path.display()
    )]
    Schema {
        /// The database directory.
        path: PathBuf,
        /// The version found.
        found: String,
    },
    /// A read or write failed.
    #[error("broker database {what} failed: {message}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// RocksDB's description.
        message: String,
    },
    /// A stored value is not what this version writes.
    #[error("broker database entry {key} in {table} is damaged: {message}")]
    Corrupt {
        /// The column family.
        table: &'static str,
        /// The key (hex).
        key: String,
        /// The decoding error.
        message: String,
    },
    /// Another installed app already provides a service.
    #[error(
        "service {service} is already provided by installed app {provider}; hint: uninstall it \
         first (elastos uninstall {provider})"
    )]
    ServiceTaken {
        /// The contested service.
        service: Uuid,
        /// The app that provides it.
        provider: Uuid,
    },
    /// No such app is installed.
    #[error("no installed app {0}; hint: `elastos list` shows what is installed")]
    NotInstalled(Uuid),
}

fn io(what: &'static str) -> impl Fn(rocksdb::Error) -> StoreError {
    move |e| StoreError::Io {
        what,
        message: e.into_string(),
    }
}

/// The broker's database.
pub struct Store {
    db: DB,
    /// The installed-apps index this writer keeps ([`elastos_host::installed_index`]); None
    /// when opened read-only.
    index: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.db.path())
            .finish()
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if missing) the database at `path` for reading and writing. Only one
    /// process can: the broker daemon when it runs, else the command that needs to write.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Small: the broker's state is a few records per app.
        options.set_max_open_files(64);
        options.set_keep_log_file_num(2);
        let families = [APPS, SERVICES, RECORDS]
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db =
            DB::open_cf_descriptors(&options, path, families).map_err(|e| open_error(path, e))?;
        let store = Store {
            db,
            index: Some(elastos_host::installed_index::index_path(path)),
        };
        match store
            .db
            .get(SCHEMA_KEY)
            .map_err(io("reading the schema version"))?
        {
            None => store
                .db
                .put(SCHEMA_KEY, SCHEMA_VERSION.to_string())
                .map_err(io("writing the schema version"))?,
            Some(found) if found == SCHEMA_VERSION.to_string().as_bytes() => {}
            Some(found) => {
                return Err(StoreError::Schema {
                    path: path.into(),
                    found: String::from_utf8_lossy(&found).into_owned(),
                })
            }
        }
        store.refresh_index();
        Ok(store)
    }

    /// Rewrites the installed-apps index from the database; removes it when that fails, so
    /// that no reader trusts a stale one.
    fn refresh_index(&self) {
        let Some(index) = &self.index else { return };
        let written = self
            .installed()
            .map_err(|e| e.to_string())
            .and_then(|apps| {
                elastos_host::installed_index::write(index, &apps).map_err(|e| e.to_string())
            });
        if let Err(error) = written {
            tracing::warn!(index = %index.display(), %error, "cannot write the installed-apps index");
            elastos_host::installed_index::remove(index);
        }
    }

    /// Opens an existing database for reading only, without taking its lock, so that any
    /// number of `elastos run` processes can look up installed apps next to a writer. A missing
    /// database reads as empty.
    pub fn open_read_only(path: &Path) -> Result<Option<Store>, StoreError> {
        if !path.join("CURRENT").exists() {
            return Ok(None);
        }
        let families = [APPS, SERVICES, RECORDS];
        let db = DB::open_cf_for_read_only(&Options::default(), path, families, false)
            .map_err(|e| open_error(path, e))?;
        Ok(Some(Store { db, index: None }))
    }

    fn family(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or(StoreError::Io {
            what: "opening a table",
            message: format!("column family {name} is missing"),
        })
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self
            .db
            .get_cf(self.family(table)?, key)
            .map_err(io("reading"))?
        else {
            return Ok(None);
        };
        decode(table, key, &bytes).map(Some)
    }

    /// Records an installed app and the services it provides (replacing an earlier install of
    /// the same app). Refused if another app already provides one of its services.
    pub fn install(&self, app: &InstalledApp) -> Result<(), StoreError> {
        let services = self.family(SERVICES)?;
        let mut batch = WriteBatch::default();
        if let Some(previous) = self.get::<InstalledApp>(APPS, app.app_id.as_bytes())? {
            for service in &previous.provides {
                batch.delete_cf(services, service.as_bytes());
            }
        }
        for service in &app.provides {
            if let Some(provider) = self
                .db
                .get_cf(services, service.as_bytes())
                .map_err(io("reading"))?
            {
                let provider = Uuid::from_slice(&provider).map_err(|e| StoreError::Corrupt {
                    table: SERVICES,
                    key: hex(service.as_bytes()),
                    message: e.to_string(),
                })?;
                if provider != app.app_id {
                    return Err(StoreError::ServiceTaken {
                        service: *service,
                        provider,
                    });
                }
            }
            batch.put_cf(services, service.as_bytes(), app.app_id.as_bytes());
        }
        let value = serde_json::to_vec(app).expect("InstalledApp serializes");
        batch.put_cf(self.family(APPS)?, app.app_id.as_bytes(), value);
        self.db.write(batch).map_err(io("installing"))?;
        self.refresh_index();
        Ok(())
    }

    /// Removes an installed app and its services; returns what was installed.
    pub fn uninstall(&self, app_id: Uuid) -> Result<InstalledApp, StoreError> {
        let app = self
            .get::<InstalledApp>(APPS, app_id.as_bytes())?
            .ok_or(StoreError::NotInstalled(app_id))?;
        let mut batch = WriteBatch::default();
        for service in &app.provides {
            batch.delete_cf(self.family(SERVICES)?, service.as_bytes());
        }
        batch.delete_cf(self.family(APPS)?, app_id.as_bytes());
        batch.delete_cf(self.family(RECORDS)?, app_id.as_bytes());
        self.db.write(batch).map_err(io("uninstalling"))?;
        self.refresh_index();
        Ok(app)
    }

    /// Every installed app, ordered by app UUID.
    pub fn installed(&self) -> Result<Vec<InstalledApp>, StoreError> {
        let mut apps = Vec::new();
        for item in self.db.iterator_cf(self.family(APPS)?, IteratorMode::Start) {
            let (key, value) = item.map_err(io("listing installed apps"))?;
            apps.push(decode(APPS, &key, &value)?);
        }
        Ok(apps)
    }

    /// The installed app, if any.
    pub fn app(&self, app_id: Uuid) -> Result<Option<InstalledApp>, StoreError> {
        self.get(APPS, app_id.as_bytes())
    }

    /// The installed app that provides `service`, if any.
    pub fn provider_of(&self, service: Uuid) -> Result<Option<InstalledApp>, StoreError> {
        let services = self.family(SERVICES)?;
        let Some(app_id) = self
            .db
            .get_cf(services, service.as_bytes())
            .map_err(io("reading"))?
        else {
            return Ok(None);
        };
        let app_id = Uuid::from_slice(&app_id).map_err(|e| StoreError::Corrupt {
            table: SERVICES,
            key: hex(service.as_bytes()),
            message: e.to_string(),
        })?;
        self.app(app_id)
    }

    /// Counts one on-demand activation of `app_id`.
    pub fn record_activation(&self, app_id: Uuid) -> Result<AppRecord, StoreError> {
        let mut record = self.record(app_id)?;
        record.activations += 1;
        record.last_activated_at = Some(now_secs());
        let value = serde_json::to_vec(&record).expect("AppRecord serializes");
        self.db
            .put_cf(self.family(RECORDS)?, app_id.as_bytes(), value)
            .map_err(io("recording an activation"))?;
        Ok(record)
    }

    /// What is remembered about `app_id` (default if nothing).
    pub fn record(&self, app_id: Uuid) -> Result<AppRecord, StoreError> {
        Ok(self.get(RECORDS, app_id.as_bytes())?.unwrap_or_default())
    }
}

fn open_error(path: &Path, error: rocksdb::Error) -> StoreError {
    let message = error.into_string();
    let hint = if message.contains("lock") {
        "another process holds it: is `elastos broker` running? Then commands go through it"
    } else if message.contains("Corruption") || message.contains("CURRENT") {
        "the database is damaged; move the directory away to start with an empty one (then \
         install the apps again)"
    } else {
        "check that the directory exists and is writable by this user"
    };
    StoreError::Open {
        path: path.into(),
        message,
        hint,
    }
}

fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        key: hex(key),
        message: e.to_string(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: u128, provides: &[u128]) -> InstalledApp {
        InstalledApp {
            app_id: Uuid::from_u128(id),
            name: format!("app{id}"),
            version: "1".into(),
            publisher: "00".repeat(32),
            digest: "11".repeat(32),
            bundle: PathBuf::from(format!("/nowhere/{id}.bundle")),
            provides: provides.iter().map(|s| Uuid::from_u128(*s)).collect(),
            uses: vec![],
            installed_at: 1,
        }
    }

    #[test]
    fn the_installed_apps_index_follows_every_install_and_uninstall() {
        use elastos_host::installed_index::{index_path, provider_of, IndexError};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let index = index_path(&path);
        let store = Store::open(&path).unwrap();
        assert_eq!(provider_of(&index, Uuid::from_u128(10)).unwrap(), None);
        store.install(&app(1, &[10])).unwrap();
        let found = provider_of(&index, Uuid::from_u128(10)).unwrap();
        assert_eq!(found.map(|a| a.app_id), Some(Uuid::from_u128(1)));
        store.uninstall(Uuid::from_u128(1)).unwrap();
        assert_eq!(provider_of(&index, Uuid::from_u128(10)).unwrap(), None);
        // A lost index is made again from the database when the writer opens it.
        store.install(&app(2, &[12])).unwrap();
        drop(store);
        std::fs::remove_file(&index).unwrap();
        assert!(matches!(
            provider_of(&index, Uuid::from_u128(12)),
            Err(IndexError::Missing(_))
        ));
        drop(Store::open(&path).unwrap());
        let found = provider_of(&index, Uuid::from_u128(12)).unwrap();
        assert_eq!(found.map(|a| a.app_id), Some(Uuid::from_u128(2)));
    }

    #[test]
    fn installs_survive_reopening_and_map_services_to_providers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = Store::open(&path).unwrap();
            store.install(&app(1, &[10, 11])).unwrap();
            store.install(&app(2, &[12])).unwrap();
            store.record_activation(Uuid::from_u128(1)).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.installed().unwrap().len(), 2);
        assert_eq!(
            store
                .provider_of(Uuid::from_u128(11))
                .unwrap()
                .unwrap()
                .app_id,
            Uuid::from_u128(1)
        );
        assert_eq!(store.provider_of(Uuid::from_u128(99)).unwrap(), None);
        assert_eq!(store.record(Uuid::from_u128(1)).unwrap().activations, 1);
        let removed = store.uninstall(Uuid::from_u128(1)).unwrap();
        assert_eq!(removed.provides.len(), 2);
        assert_eq!(store.provider_of(Uuid::from_u128(10)).unwrap(), None);
        assert!(matches!(
            store.uninstall(Uuid::from_u128(1)),
            Err(StoreError::NotInstalled(_))
        ));
    }

    #[test]
    fn a_service_has_one_installed_provider() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.install(&app(1, &[10])).unwrap();
        let err = store.install(&app(2, &[10])).unwrap_err();
        assert!(
            matches!(err, StoreError::ServiceTaken { provider, .. } if provider == Uuid::from_u128(1))
        );
        // Reinstalling the same app (new version) is fine and may change its services.
        store.install(&app(1, &[11])).unwrap();
        assert_eq!(store.provider_of(Uuid::from_u128(10)).unwrap(), None);
        store.install(&app(2, &[10])).unwrap();
    }

    #[test]
    fn a_second_writer_is_told_who_holds_the_lock_and_readers_are_not_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        store.install(&app(1, &[10])).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(err.to_string().contains("elastos broker"), "{err}");
        let reader = Store::open_read_only(&path).unwrap().unwrap();
        assert_eq!(reader.installed().unwrap().len(), 1);
        assert!(Store::open_read_only(&dir.path().join("absent"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_damaged_database_is_reported_not_panicked_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(Store::open(&path).unwrap());
        std::fs::write(path.join("CURRENT"), "MANIFEST-999999\n").unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        assert!(err.to_string().contains("hint"), "{err}");
    }

    #[test]
    fn a_damaged_record_names_its_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let apps = store.family(APPS).unwrap();
        store
            .db
            .put_cf(apps, Uuid::from_u128(5).as_bytes(), b"{not json")
            .unwrap();
        let err = store.installed().unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { table: APPS, .. }),
            "{err}"
        );
    }
}
