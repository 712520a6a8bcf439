//! The user's cloud disk as this machine is set up for it: the store in force (`cloud.toml`,
//! else the local directory standing in for the cloud disk), the sync engine opened with the
//! user's key, and the app homes this machine knows. The `elastos` commands (`cloud`, `sync`,
//! the sync around `run`) and the broker daemon's continuous sync both start from here, so they
//! always sync the same homes with the same store and the same per-device state.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use elastos_cloudsync::{
    HomeRef, S3Credentials, StoreConfig, StoreUrl, SyncEngine, SyncError, UserSecret,
};
use elastos_identity::fsutil::{create_private_dir, write_atomically, Replace};
use elastos_identity::{KeyError, UserKey};
use elastos_loader::HostIdentity;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::paths::StateDirs;

/// The HKDF context of the cloud disk's root secret ([`UserKey::derive_key`]); every key of
/// the store is derived from that secret by `elastos-cloudsync` (docs/cloud.md).
const CLOUD_SECRET_CONTEXT: &str = "elastos/cloud-disk/encryption/v1";

/// Why the cloud disk could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// A settings or state file could not be read or written.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A settings or state file holds something this version does not write.
    #[error("{} is not {what}: {message}; hint: {hint}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What it should be.
        what: &'static str,
        /// The parser's description.
        message: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// An S3 store was chosen without credentials.
    #[error(
        "no S3 credentials for {store}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
         AWS_SHARED_CREDENTIALS_FILE, or give a 0600 file with `elastos cloud set URL \
         --credentials FILE`"
    )]
    NoCredentials {
        /// The store as given.
        store: String,
    },
    /// `--endpoint` was given for a store that is not S3.
    #[error("--endpoint is for s3:// stores only; {store} is not one")]
    EndpointNotS3 {
        /// The store as given.
        store: String,
    },
    /// The user key could not be loaded or made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store address or its credentials are not usable.
    #[error(transparent)]
    Store(Box<SyncError>),
    /// The store could not be opened.
    #[error("cannot open your cloud disk at {url}")]
    Open {
        /// The store.
        url: String,
        /// Why.
        #[source]
        source: Box<SyncError>,
    },
}

/// `cloud.toml`, written by `elastos cloud set`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSettings {
    /// The store, as given to `cloud set` (DIR, file://DIR, s3://..., webdav+http(s)://...).
    pub store: String,
    /// S3: the endpoint of an S3-compatible server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3: a 0600 file of credentials, used when AWS_ACCESS_KEY_ID is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
}

/// The store in force.
#[derive(Debug)]
pub struct CloudStore {
    /// Where it is, with its credentials.
    pub config: StoreConfig,
    /// Whether it is the default (no `cloud set` yet).
    pub default: bool,
}

/// `cloud.toml`, if `elastos cloud set` wrote one.
pub fn settings(state: &StateDirs) -> Result<Option<CloudSettings>, CloudError> {
    let path = &state.cloud_config;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CloudError::Io {
                op: "read",
                path: path.clone(),
                source,
            })
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| CloudError::Damaged {
            path: path.clone(),
            what: "a valid cloud settings file",
            message: e.to_string(),
            hint: "write it again with `elastos cloud set`",
        })
}

/// The store named by `settings`, with its credentials.
pub fn store_config(settings: &CloudSettings) -> Result<StoreConfig, CloudError> {
    let mut url: StoreUrl = settings
        .store
        .parse()
        .map_err(|e| CloudError::Store(Box::new(e)))?;
    let mut s3_credentials = None;
    match &mut url {
        StoreUrl::S3 { endpoint, .. } => {
            endpoint.clone_from(&settings.endpoint);
            let from_file = |file: &Path| {
                S3Credentials::from_file(file).map_err(|e| CloudError::Store(Box::new(e)))
            };
            s3_credentials = Some(match (S3Credentials::from_env(), &settings.credentials) {
                (Some(credentials), _) => credentials,
                (None, Some(file)) => from_file(file)?,
                (None, None) => match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
                    Some(file) => from_file(Path::new(&file))?,
                    None => {
                        return Err(CloudError::NoCredentials {
                            store: settings.store.clone(),
                        })
                    }
                },
            });
        }
        _ if settings.endpoint.is_some() => {
            return Err(CloudError::EndpointNotS3 {
                store: settings.store.clone(),
            })
        }
        _ => {}
    }
    let mut config = StoreConfig::new(url);
    config.s3_credentials = s3_credentials;
    Ok(config)
}

/// The store in force: `cloud.toml`, else the local directory standing in for the cloud disk.
pub fn store(state: &StateDirs) -> Result<CloudStore, CloudError> {
    match settings(state)? {
        Some(settings) => Ok(CloudStore {
            config: store_config(&settings)?,
            default: false,
        }),
        None => Ok(CloudStore {
            config: StoreConfig::new(StoreUrl::LocalDir(state.cloud.join("store"))),
            default: true,
        }),
    }
}

/// The engine for `store`, with the user key (made on first use). The engine's state (index,
/// versions seen) is kept per user and store, so that switching stores or keys never mixes their
/// histories.
pub fn engine(state: &StateDirs, store: &CloudStore) -> Result<SyncEngine, CloudError> {
    let (key, created) = UserKey::load_or_create(&state.apps.user_keys)?;
    if created {
        tracing::warn!(user = %key.user_id(), "created your user key (elastos id); it encrypts your cloud disk");
    }
    let secret = UserSecret::from_bytes(key.derive_key(CLOUD_SECRET_CONTEXT));
    let name = Sha256::digest(format!("{}\n{}", key.user_id(), store.config.url));
    let state_dir = state.cloud.join("state").join(&hex::encode(name)[..16]);
    SyncEngine::open(&store.config, &secret, &state_dir).map_err(|source| CloudError::Open {
        url: store.config.url.to_string(),
        source: Box::new(source),
    })
}

/// What this machine knows of one app's home: its name and whether it syncs, as `elastos run`
/// last saw its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownApp {
    /// `app.name` of its manifest.
    pub name: String,
    /// `[home] sync` of its manifest.
    pub sync: bool,
}

/// `cloud/apps.json`: `"<publisher>/<app id>"` -> [`KnownApp`]. Written by `elastos run` only
/// when an entry changes, read by the commands that take an app by name and by the daemon.
fn known_apps_file(state: &StateDirs) -> PathBuf {
    state.cloud.join("apps.json")
}

fn read_known_apps(state: &StateDirs) -> Result<BTreeMap<String, KnownApp>, CloudError> {
    let path = known_apps_file(state);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CloudError::Damaged {
            path,
            what: "a list of apps",
            message: e.to_string(),
            hint: "delete it, the next runs write it again",
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(CloudError::Io {
            op: "read",
            path,
            source,
        }),
    }
}

/// Records `app` under `key` ([`home_key`]) in `cloud/apps.json` if it is new or changed.
pub fn remember_app(state: &StateDirs, key: &str, app: KnownApp) -> Result<(), CloudError> {
    let mut apps = read_known_apps(state)?;
    if apps.get(key) == Some(&app) {
        return Ok(());
    }
    apps.insert(key.to_owned(), app);
    create_private_dir(&state.cloud).map_err(|source| CloudError::Io {
        op: "create",
        path: state.cloud.clone(),
        source,
    })?;
    let json = serde_json::to_vec_pretty(&apps).expect("the list of apps serializes");
    let path = known_apps_file(state);
    write_atomically(&path, &json, 0o600, Replace::Yes).map_err(|source| CloudError::Io {
        op: "write",
        path,
        source,
    })
}

/// One app home the commands and the daemon can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppHome {
    /// Its name, when an `elastos run` here recorded it.
    pub name: Option<String>,
    /// Its app id.
    pub app_id: Uuid,
    /// The publisher that owns its id (hex; homes are keyed by it).
    pub publisher: String,
    /// Its home on this machine (it may not exist: a lost cache).
    pub home: PathBuf,
    /// Whether its manifest lets it sync (`[home] sync`); true when not known.
    pub sync: bool,
}

impl AppHome {
    /// The home as the engine names it.
    pub fn home_ref(&self) -> HomeRef {
        HomeRef {
            publisher: self.publisher.clone(),
            app_id: self.app_id.to_string(),
        }
    }

    /// `name (id)`, or the id, for messages.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.app_id),
            None => self.app_id.to_string(),
        }
    }

    /// The owner its restored files get: as root, the app's own host uid.
    pub fn owner(&self) -> Option<(u32, u32)> {
        if in_user_namespace() {
            // Run through `elastos unshare` (or `elastos run`'s sync of an app that runs as a
            // subordinate id): restored files are the home's, which is the app's there.
            use std::os::unix::fs::MetadataExt;
            return std::fs::metadata(&self.home)
                .ok()
                .map(|meta| (meta.uid(), meta.gid()));
        }
        let identity = HostIdentity::for_app(&self.app_id);
        identity
            .launched_by_root
            .then_some((identity.uid, identity.gid))
    }

    /// Its key in `cloud/apps.json`.
    pub fn key(&self) -> String {
        home_key(&self.publisher, self.app_id)
    }
}

/// `"<publisher>/<app id>"`, the key of a home in `cloud/apps.json`.
pub fn home_key(publisher: &str, app_id: Uuid) -> String {
    format!("{publisher}/{app_id}")
}

/// Every home this machine knows: the homes on disk (`homes/<publisher>/<app id>`) and the apps
/// `elastos run` recorded (whose home may be gone: a lost cache to restore).
pub fn app_homes(state: &StateDirs) -> Result<Vec<AppHome>, CloudError> {
    let known = read_known_apps(state)?;
    let mut homes: BTreeMap<String, AppHome> = BTreeMap::new();
    let home_of =
        |publisher: &str, app_id: Uuid| state.apps.homes.join(publisher).join(app_id.to_string());
    for (key, app) in &known {
        let Some((publisher, id)) = key.split_once('/') else {
            continue;
        };
        let Ok(app_id) = id.parse::<Uuid>() else {
            continue;
        };
        homes.insert(
            key.clone(),
            AppHome {
                name: Some(app.name.clone()),
                app_id,
                publisher: publisher.to_owned(),
                home: home_of(publisher, app_id),
                sync: app.sync,
            },
        );
    }
    let publishers = match std::fs::read_dir(&state.apps.homes) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(homes.into_values().collect()),
        Err(source) => {
            return Err(CloudError::Io {
                op: "list",
                path: state.apps.homes.clone(),
                source,
            })
        }
    };
    for publisher in publishers.flatten() {
        let name = publisher.file_name();
        let Some(publisher_hex) = name.to_str().filter(|n| n.len() == 64) else {
            continue;
        };
        let Ok(apps) = std::fs::read_dir(publisher.path()) else {
            continue;
        };
        for app in apps.flatten() {
            let Some(app_id) = app
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Uuid>().ok())
            else {
                continue;
            };
            homes
                .entry(home_key(publisher_hex, app_id))
                .or_insert_with(|| AppHome {
                    name: None,
                    app_id,
                    publisher: publisher_hex.to_owned(),
                    home: home_of(publisher_hex, app_id),
                    sync: true,
                });
        }
    }
    Ok(homes.into_values().collect())
}

/// Whether this process runs in a user namespace other than the host's (as `elastos unshare`'s
/// commands do), where uid 0 is not the host's root.
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|map| map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}
