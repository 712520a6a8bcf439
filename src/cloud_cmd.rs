//! The cloud disk commands: `elastos cloud set|status|versions|restore`, `elastos sync
//! now|status`, and the sync around `elastos run` when no broker daemon runs. The sync itself is
//! `elastos-cloudsync`'s; this module finds the store, the key and the homes.

use std::collections::BTreeMap;
use std::io::{ErrorKind, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use elastos_cloudsync::{
    HomeRef, HomeStatus, Progress, S3Credentials, StoreConfig, StoreUrl, SyncEngine, SyncError,
    SyncOptions, SyncReport, UserSecret,
};
use elastos_host::apps::PreparedApp;
use elastos_host::paths::StateDirs;
use elastos_identity::fsutil::{create_private_dir, write_atomically, Replace};
use elastos_identity::UserKey;
use elastos_loader::subordinate::UserNamespace;
use elastos_loader::{HostIdentity, SubordinateIds};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cli::{CloudCommand, Format, SyncCommand};
use crate::commands::print_json;

/// The HKDF context of the cloud disk's root secret ([`UserKey::derive_key`]); every key of
/// the store is derived from that secret by `elastos-cloudsync` (docs/cloud.md).
const CLOUD_SECRET_CONTEXT: &str = "elastos/cloud-disk/encryption/v1";

/// `cloud.toml`, written by `elastos cloud set`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudSettings {
    /// The store, as given to `cloud set` (DIR, file://DIR, s3://..., webdav+http(s)://...).
    store: String,
    /// S3: the endpoint of an S3-compatible server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    /// S3: a 0600 file of credentials, used when AWS_ACCESS_KEY_ID is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credentials: Option<PathBuf>,
}

/// The store in force: `cloud.toml`, else the local directory standing in for the cloud disk.
struct Store {
    config: StoreConfig,
    /// Whether it is the default (no `cloud set` yet).
    default: bool,
}

fn settings(state: &StateDirs) -> Result<Option<CloudSettings>> {
    let path = &state.cloud_config;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    toml::from_str(&text).map(Some).with_context(|| {
        format!(
            "{} is not a valid cloud settings file; hint: write it again with `elastos cloud set`",
            path.display()
        )
    })
}

/// The store named by `settings`, with its credentials.
fn store_config(settings: &CloudSettings) -> Result<StoreConfig> {
    let mut url: StoreUrl = settings.store.parse()?;
    let mut s3_credentials = None;
    match &mut url {
        StoreUrl::S3 { endpoint, .. } => {
            endpoint.clone_from(&settings.endpoint);
            s3_credentials = Some(match (S3Credentials::from_env(), &settings.credentials) {
                (Some(credentials), _) => credentials,
                (None, Some(file)) => S3Credentials::from_file(file)?,
                (None, None) => match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
                    Some(file) => S3Credentials::from_file(Path::new(&file))?,
                    None => bail!(
                        "no S3 credentials for {}: set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY, or AWS_SHARED_CREDENTIALS_FILE, or give a 0600 \
                         file with `elastos cloud set URL --credentials FILE`",
                        settings.store
                    ),
                },
            });
        }
        _ if settings.endpoint.is_some() => bail!(
            "--endpoint is for s3:// stores only; {} is not one",
            settings.store
        ),
        _ => {}
    }
    let mut config = StoreConfig::new(url);
    config.s3_credentials = s3_credentials;
    Ok(config)
}

fn store(state: &StateDirs) -> Result<Store> {
    match settings(state)? {
        Some(settings) => Ok(Store {
            config: store_config(&settings)?,
            default: false,
        }),
        None => Ok(Store {
            config: StoreConfig::new(StoreUrl::LocalDir(default_store_dir(state))),
            default: true,
        }),
    }
}

/// The local directory that stands in for the cloud disk until `cloud set`.
fn default_store_dir(state: &StateDirs) -> PathBuf {
    state.cloud.join("store")
}

/// The user key and the engine for `store`. The engine's state (index, versions seen) is kept
/// per user and store, so that switching stores or keys never mixes their histories.
fn engine(state: &StateDirs, store: &Store) -> Result<SyncEngine> {
    use sha2::{Digest, Sha256};
    let (key, created) = UserKey::load_or_create(&state.apps.user_keys)?;
    if created {
        tracing::warn!(user = %key.user_id(), "created your user key (elastos id); it encrypts your cloud disk");
    }
    let secret = UserSecret::from_bytes(key.derive_key(CLOUD_SECRET_CONTEXT));
    let name = Sha256::digest(format!("{}\n{}", key.user_id(), store.config.url));
    let state_dir = state.cloud.join("state").join(&hex::encode(name)[..16]);
    SyncEngine::open(&store.config, &secret, &state_dir)
        .with_context(|| format!("cannot open your cloud disk at {}", store.config.url))
}

/// What this machine knows of one app's home: its name and whether it syncs, as `elastos run`
/// last saw its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownApp {
    name: String,
    sync: bool,
}

/// `cloud/apps.json`: `"<publisher>/<app id>"` -> [`KnownApp`]. Written by `elastos run` only
/// when an entry changes, read by the commands that take an app by name.
fn known_apps_file(state: &StateDirs) -> PathBuf {
    state.cloud.join("apps.json")
}

fn read_known_apps(state: &StateDirs) -> Result<BTreeMap<String, KnownApp>> {
    let path = known_apps_file(state);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a list of apps; delete it, the next runs write it again",
                path.display()
            )
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Records `app` in `cloud/apps.json` if it is new or changed.
fn remember_app(state: &StateDirs, key: &str, app: KnownApp) -> Result<()> {
    let mut apps = read_known_apps(state)?;
    if apps.get(key) == Some(&app) {
        return Ok(());
    }
    apps.insert(key.to_owned(), app);
    create_private_dir(&state.cloud)
        .with_context(|| format!("cannot create {}", state.cloud.display()))?;
    let json = serde_json::to_vec_pretty(&apps).expect("the list of apps serializes");
    let path = known_apps_file(state);
    write_atomically(&path, &json, 0o600, Replace::Yes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// One app home the commands can act on.
#[derive(Debug, Clone, Serialize)]
struct AppHome {
    /// Its name, when an `elastos run` here recorded it.
    name: Option<String>,
    app_id: Uuid,
    /// The publisher that owns its id (homes are keyed by it).
    publisher: String,
    /// Its home on this machine (it may not exist: a lost cache).
    home: PathBuf,
    /// Whether its manifest lets it sync (`[home] sync`); true when not known.
    sync: bool,
}

impl AppHome {
    fn home_ref(&self) -> HomeRef {
        HomeRef {
            publisher: self.publisher.clone(),
            app_id: self.app_id.to_string(),
        }
    }

    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.app_id),
            None => self.app_id.to_string(),
        }
    }

    /// The owner its restored files get: as root, the app's own host uid.
    fn owner(&self) -> Option<(u32, u32)> {
        owner_of(self.app_id, &self.home)
    }
}

fn owner_of(app_id: Uuid, home: &Path) -> Option<(u32, u32)> {
    if in_user_namespace() {
        // Run through `elastos unshare` (or `elastos run`'s sync of an app that runs as a
        // subordinate id): restored files are the home's, which is the app's there.
        use std::os::unix::fs::MetadataExt;
        return std::fs::metadata(home)
            .ok()
            .map(|meta| (meta.uid(), meta.gid()));
    }
    let identity = HostIdentity::for_app(&app_id);
    identity
        .launched_by_root
        .then_some((identity.uid, identity.gid))
}

fn home_key(publisher: &str, app_id: Uuid) -> String {
    format!("{publisher}/{app_id}")
}

/// Every home this machine knows: the homes on disk (`homes/<publisher>/<app id>`) and the apps
/// `elastos run` recorded (whose home may be gone: a lost cache to restore).
fn app_homes(state: &StateDirs) -> Result<Vec<AppHome>> {
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
        Err(e) => {
            return Err(e).with_context(|| format!("cannot list {}", state.apps.homes.display()))
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

/// The app `wanted` names: an app id, or a name only one known app has. An app id that never
/// ran here is found through the ledger (imported from another machine), so a new machine can
/// restore it.
fn resolve_app(state: &StateDirs, wanted: &str) -> Result<AppHome> {
    let homes = app_homes(state)?;
    let matches: Vec<&AppHome> = match wanted.parse::<Uuid>() {
        Ok(id) => homes.iter().filter(|h| h.app_id == id).collect(),
        Err(_) => homes
            .iter()
            .filter(|h| h.name.as_deref() == Some(wanted))
            .collect(),
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            if let Ok(app_id) = wanted.parse::<Uuid>() {
                if let Some(home) = app_from_ledger(state, app_id)? {
                    return Ok(home);
                }
            }
            let names: Vec<String> = homes.iter().map(AppHome::label).collect();
            bail!(
                "no app {wanted:?} here; expected an app id or the name of an app that ran on \
                 this machine{}",
                if names.is_empty() {
                    " (none has yet)".to_owned()
                } else {
                    format!(": {}", names.join(", "))
                }
            )
        }
        several => bail!(
            "{wanted:?} names {} apps: {}; give its app id instead",
            several.len(),
            several
                .iter()
                .map(|h| format!("{} of publisher {}", h.app_id, h.publisher))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The home of `app_id` as the ledger knows it (the publisher it was bound to), if bound.
fn app_from_ledger(state: &StateDirs, app_id: Uuid) -> Result<Option<AppHome>> {
    use elastos_identity::{Claim, Ledger};
    if !Ledger::exists(&state.apps.ledger) {
        return Ok(None);
    }
    let mut ledger = elastos_host::ownership::open_ledger(&state.apps)?;
    let publisher = ledger
        .records()?
        .iter()
        .find_map(|record| match &record.claim {
            Claim::Bind {
                app_id: bound,
                publisher,
                ..
            } if *bound == app_id => Some(publisher.to_string()),
            _ => None,
        });
    Ok(publisher.map(|publisher| AppHome {
        name: None,
        app_id,
        home: state.apps.homes.join(&publisher).join(app_id.to_string()),
        publisher,
        sync: true,
    }))
}

/// A progress bar on stderr when it is a terminal; the sync calls it as it advances.
fn progress_bar(label: &str) -> (Option<indicatif::ProgressBar>, SyncOptions) {
    let mut options = SyncOptions::default();
    if !std::io::stderr().is_terminal() {
        return (None, options);
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} {msg:8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    let shown = bar.clone();
    options.progress = Some(Box::new(move |progress: Progress| {
        shown.set_message(format!("{:?}", progress.phase).to_lowercase());
        shown.set_length(progress.total_bytes);
        shown.set_position(progress.done_bytes);
    }));
    (Some(bar), options)
}

/// Syncs one home both ways, with a progress bar on a terminal.
fn sync_home(
    engine: &SyncEngine,
    app: &AppHome,
    confirm_mass_delete: bool,
) -> Result<SyncReport, SyncError> {
    let (bar, mut options) = progress_bar(&app.label());
    options.confirm_mass_delete = confirm_mass_delete;
    options.owner = app.owner();
    let result = engine.sync(&app.home_ref(), &app.home, &options);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

/// The command that confirms a mass delete of `app`, for the safety stop's message.
fn confirm_command(app: &AppHome) -> String {
    let name = app.name.clone().unwrap_or_else(|| app.app_id.to_string());
    format!("elastos sync now {name} --confirm-mass-delete")
}

/// An error of syncing `app`, with what to do about it.
fn sync_failure(app: &AppHome, error: SyncError) -> anyhow::Error {
    match error {
        SyncError::MassDelete { .. } => anyhow::Error::from(error).context(format!(
            "{} stopped; if the deletions are intended, run `{}`",
            app.label(),
            confirm_command(app)
        )),
        error => anyhow::Error::from(error).context(format!("cannot sync {}", app.label())),
    }
}

/// `elastos cloud ...`.
pub fn cloud(command: CloudCommand) -> Result<u8> {
    let state = StateDirs::from_env()?;
    match command {
        CloudCommand::Set {
            url,
            endpoint,
            credentials,
            format,
        } => {
            let credentials = credentials
                .map(|file| std::path::absolute(&file))
                .transpose()
                .context("cannot make the credentials path absolute")?;
            let settings = CloudSettings {
                store: url,
                endpoint,
                credentials,
            };
            // Checked before it is written: a store that cannot be opened is never saved.
            let config = store_config(&settings)?;
            let store = Store {
                config,
                default: false,
            };
            engine(&state, &store)?;
            let text = toml::to_string(&settings).expect("the settings serialize");
            if let Some(dir) = state.cloud_config.parent() {
                create_private_dir(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            write_atomically(&state.cloud_config, text.as_bytes(), 0o600, Replace::Yes)
                .with_context(|| format!("cannot write {}", state.cloud_config.display()))?;
            #[derive(Serialize)]
            struct Set {
                store: String,
                settings: PathBuf,
            }
            let report = Set {
                store: store.config.url.to_string(),
                settings: state.cloud_config.clone(),
            };
            match format.format {
                Format::Json => print_json(&report)?,
                Format::Text => println!(
                    "your cloud disk is now {} (saved in {}); `elastos sync now` uploads every \
                     app's home to it",
                    report.store,
                    report.settings.display()
                ),
            }
            Ok(0)
        }
        CloudCommand::Status { format } => {
            let store = store(&state)?;
            let engine = engine(&state, &store)?;
            let key = UserKey::load(&state.user_key())?;
            let apps = statuses(&state, &engine)?;
            #[derive(Serialize)]
            struct CloudStatus {
                store: String,
                default_store: bool,
                user: String,
                device: String,
                apps: Vec<AppStatus>,
            }
            let report = CloudStatus {
                store: store.config.url.to_string(),
                default_store: store.default,
                user: key.user_id().to_string(),
                device: engine.device().to_owned(),
                apps,
            };
            match format.format {
                Format::Json => print_json(&report)?,
                Format::Text => {
                    println!(
                        "store:  {}{}",
                        report.store,
                        if report.default_store {
                            " (the default: a local directory; choose your cloud disk with `elastos cloud set`)"
                        } else {
                            ""
                        }
                    );
                    println!("user:   {}\ndevice: {}", report.user, report.device);
                    print_statuses(&report.apps);
                }
            }
            Ok(0)
        }
        CloudCommand::Versions { app, path, format } => {
            let app = resolve_app(&state, &app)?;
            let engine = engine(&state, &store(&state)?)?;
            let versions = engine
                .versions(&app.home_ref(), Path::new(&path))
                .with_context(|| {
                    format!("cannot list the versions of {path} of {}", app.label())
                })?;
            match format.format {
                Format::Json => print_json(&versions)?,
                Format::Text => {
                    if versions.is_empty() {
                        println!("no version of {path} of {} on your cloud disk", app.label());
                    }
                    for version in &versions {
                        println!(
                            "{:>6}  {}  {:<8} {:>12}  {:04o}  {}",
                            version.version,
                            elastos_cloudsync::time::format_rfc3339(version.time),
                            format!("{:?}", version.kind).to_lowercase(),
                            version.size,
                            version.mode,
                            version.device
                        );
                    }
                }
            }
            Ok(0)
        }
        CloudCommand::Restore {
            app,
            path,
            at,
            format,
        } => {
            let at = at
                .map(|text| elastos_cloudsync::time::parse_rfc3339(&text))
                .transpose()
                .map_err(|reason| anyhow::anyhow!("--at: {reason}"))?;
            let app = resolve_app(&state, &app)?;
            let engine = engine(&state, &store(&state)?)?;
            let (bar, mut options) = progress_bar(&app.label());
            options.owner = app.owner();
            let result = engine.restore(
                &app.home_ref(),
                &app.home,
                path.as_deref().map(Path::new),
                at,
                &options,
            );
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let report = result.map_err(|error| sync_failure(&app, error))?;
            match format.format {
                Format::Json => print_json(&report)?,
                Format::Text => println!(
                    "restored {} of {}: {} files written, {} removed; now version {}",
                    path.as_deref().unwrap_or("the home"),
                    app.label(),
                    report.downloaded.len(),
                    report.deleted_locally.len(),
                    report.version
                ),
            }
            Ok(0)
        }
    }
}

/// One app in `sync status` and `cloud status`.
#[derive(Serialize)]
struct AppStatus {
    #[serde(flatten)]
    app: AppHome,
    /// The engine's status, when the home syncs and it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<HomeStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn statuses(state: &StateDirs, engine: &SyncEngine) -> Result<Vec<AppStatus>> {
    Ok(app_homes(state)?
        .into_iter()
        .map(|app| {
            if !app.sync {
                return AppStatus {
                    app,
                    status: None,
                    error: None,
                };
            }
            match engine.status(&app.home_ref(), &app.home) {
                Ok(status) => AppStatus {
                    app,
                    status: Some(status),
                    error: None,
                },
                Err(error) => AppStatus {
                    error: Some(format!("{:#}", anyhow::Error::from(error))),
                    app,
                    status: None,
                },
            }
        })
        .collect())
}

fn print_statuses(apps: &[AppStatus]) {
    if apps.is_empty() {
        println!("no app homes yet");
        return;
    }
    println!(
        "{:<44} {:>5} {:>5} {:>9} {:>12}  {:<20}  VERSION",
        "APP", "UP", "DOWN", "CONFLICTS", "BYTES", "LAST SYNC"
    );
    for entry in apps {
        let label = entry.app.label();
        match (&entry.status, &entry.error) {
            (Some(status), _) => println!(
                "{:<44} {:>5} {:>5} {:>9} {:>12}  {:<20}  {}/{}",
                label,
                status.pending_up.len(),
                status.pending_down.len(),
                status.conflicts.len(),
                status.bytes,
                status
                    .last_sync
                    .map(elastos_cloudsync::time::format_rfc3339)
                    .unwrap_or_else(|| "never".into()),
                status.synced_version,
                status.remote_version
            ),
            (None, Some(error)) => println!("{label:<44} error: {error}"),
            (None, None) => println!("{label:<44} not synced ([home] sync = false)"),
        }
    }
}

/// `elastos sync ...`.
pub fn sync(command: SyncCommand) -> Result<u8> {
    let state = StateDirs::from_env()?;
    match command {
        SyncCommand::Status { format } => {
            let engine = engine(&state, &store(&state)?)?;
            let apps = statuses(&state, &engine)?;
            match format.format {
                Format::Json => print_json(&apps)?,
                Format::Text => print_statuses(&apps),
            }
            Ok(0)
        }
        SyncCommand::Now {
            app,
            confirm_mass_delete,
            format,
        } => {
            let apps = match app {
                Some(app) => {
                    let app = resolve_app(&state, &app)?;
                    if !app.sync {
                        bail!(
                            "{} does not sync: its manifest says [home] sync = false",
                            app.label()
                        );
                    }
                    vec![app]
                }
                None => app_homes(&state)?.into_iter().filter(|a| a.sync).collect(),
            };
            let engine = engine(&state, &store(&state)?)?;
            #[derive(Serialize)]
            struct Synced {
                #[serde(flatten)]
                app: AppHome,
                #[serde(skip_serializing_if = "Option::is_none")]
                report: Option<SyncReport>,
                #[serde(skip_serializing_if = "Option::is_none")]
                error: Option<String>,
            }
            let mut results = Vec::new();
            let mut failed = false;
            for app in apps {
                match sync_home(&engine, &app, confirm_mass_delete) {
                    Ok(report) => results.push(Synced {
                        app,
                        report: Some(report),
                        error: None,
                    }),
                    Err(error) => {
                        failed = true;
                        let error = format!("{:#}", sync_failure(&app, error));
                        results.push(Synced {
                            app,
                            report: None,
                            error: Some(error),
                        });
                    }
                }
            }
            match format.format {
                Format::Json => print_json(&results)?,
                Format::Text => {
                    if results.is_empty() {
                        println!("no app home syncs yet");
                    }
                    for result in &results {
                        match (&result.report, &result.error) {
                            (Some(report), _) => {
                                println!("{}", describe_report(&result.app, report))
                            }
                            (None, Some(error)) => eprintln!("elastos: {error}"),
                            (None, None) => {}
                        }
                    }
                }
            }
            Ok(if failed {
                crate::exit::ELASTOS_FAILED
            } else {
                0
            })
        }
    }
}

/// One line for people of what a sync did.
fn describe_report(app: &AppHome, report: &SyncReport) -> String {
    let mut line = format!(
        "{}: {} up ({} bytes), {} down ({} bytes), {} deleted here, {} deleted in the cloud",
        app.label(),
        report.uploaded.len(),
        report.bytes_uploaded,
        report.downloaded.len(),
        report.bytes_downloaded,
        report.deleted_locally.len(),
        report.deleted_remotely.len()
    );
    if report.restored_lost_cache {
        line.push_str("; the home was missing here and was restored");
    }
    for conflict in &report.conflicts {
        line.push_str(&format!(
            "\n  conflict: {} changed on two devices; this device's version is kept as {}",
            conflict.path.display(),
            conflict.copy.display()
        ));
    }
    if !report.busy.is_empty() {
        line.push_str(&format!(
            "\n  {} files changed while they were read; the next sync takes them",
            report.busy.len()
        ));
    }
    line.push_str(&format!("; version {}", report.version));
    line
}

/// Whether this process runs in a user namespace other than the host's (as `elastos unshare`'s
/// commands do), where uid 0 is not the host's root.
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|map| map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

/// Runs this command again in `elastos unshare`'s namespace when this user's apps run as its
/// subordinate ids: their homes are theirs, which the user cannot read or write, and there the
/// user is root over all of them (restored files get each home's owner, see `owner_of`). The
/// command's exit code; None when it runs here (root, no subordinate ids, or already in a
/// namespace).
pub fn rerun_over_subordinate_homes() -> Result<Option<u8>> {
    use std::os::unix::process::ExitStatusExt;
    if nix::unistd::getuid().is_root() || in_user_namespace() {
        return Ok(None);
    }
    let Ok(ids) = SubordinateIds::of_current_user() else {
        return Ok(None);
    };
    let mut command =
        std::process::Command::new(std::env::current_exe().context("cannot find elastos")?);
    command.args(std::env::args_os().skip(1));
    let status = ids
        .unshare(command)?
        .wait()
        .context("waiting for elastos in the namespace of your subordinate ids")?;
    Ok(Some(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(125),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(125),
        (None, None) => 125,
    }))
}

/// The sync around one `elastos run` without a broker daemon: brought up to date before the app
/// starts, pushed after it exits. Failures never stop the app: it runs on its local copy and the
/// failure is reported.
pub struct RunSync {
    engine: SyncEngine,
    app: AppHome,
    /// When the app runs as subordinate ids of the user: its home is theirs, which this user
    /// cannot read, so both syncs run in one user namespace where the user is root over them
    /// (or why it could not be made).
    through: Option<Result<UserNamespace, String>>,
}

impl RunSync {
    /// Before the app starts: records its name and whether it syncs, and, when its home syncs,
    /// brings the home up to date (restoring a lost one).
    pub fn before_run(state: &StateDirs, prepared: &PreparedApp) -> Option<RunSync> {
        let manifest = &prepared.manifest;
        let publisher = hex::encode(prepared.home_owner);
        let app = AppHome {
            name: Some(manifest.name().to_owned()),
            app_id: manifest.id(),
            home: prepared.home.clone(),
            sync: manifest.home_sync(),
            publisher,
        };
        let known = KnownApp {
            name: manifest.name().to_owned(),
            sync: app.sync,
        };
        if let Err(error) = remember_app(state, &home_key(&app.publisher, app.app_id), known) {
            tracing::warn!("{error:#}");
        }
        if !app.sync {
            return None;
        }
        let engine = match store(state).and_then(|store| engine(state, &store)) {
            Ok(engine) => engine,
            Err(error) => {
                eprintln!(
                    "elastos: {error:#}; {} runs on its local copy, unsynced",
                    app.label()
                );
                return None;
            }
        };
        let through = SubordinateIds::of_current_user().ok().and_then(|ids| {
            let identity = HostIdentity::for_app_home(&app.app_id, Some(&app.home), Some(&ids));
            identity.subordinate.then(|| {
                ids.app_namespace(identity.uid, identity.gid)
                    .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
            })
        });
        let run = RunSync {
            engine,
            app,
            through,
        };
        run.sync("before the app starts");
        Some(run)
    }

    /// After the app exited: sends its changes to the cloud disk.
    pub fn after_run(self) {
        self.sync("after the app exited");
    }

    /// The sync as `elastos sync now APP`, run in a user namespace where this user is root and
    /// the app's ids are mapped (an exec of elastos; the engine cannot enter the namespace in
    /// this process, which may have threads, and could not leave it).
    fn sync_as_the_apps_ids(&self, namespace: &Result<UserNamespace, String>, when: &str) {
        let synced = std::env::current_exe()
            .context("cannot find the elastos executable")
            .and_then(|exe| {
                let mut command = std::process::Command::new(exe);
                command
                    .args(["sync", "now", &self.app.app_id.to_string()])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null());
                let namespace = namespace.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                let status = namespace
                    .spawn(command)?
                    .wait()
                    .context("waiting for elastos sync now")?;
                anyhow::ensure!(status.success(), "elastos sync now {status}");
                Ok(())
            });
        if let Err(error) = synced {
            eprintln!(
                "elastos: cannot sync {}: {error:#} ({when}); the app's home stays as it is here",
                self.app.label()
            );
        }
    }

    fn sync(&self, when: &str) {
        if let Some(namespace) = &self.through {
            return self.sync_as_the_apps_ids(namespace, when);
        }
        match sync_home(&self.engine, &self.app, false) {
            Ok(report) => {
                if report.restored_lost_cache {
                    eprintln!(
                        "elastos: {}'s home was missing here: restored {} files from your cloud disk",
                        self.app.label(),
                        report.downloaded.len()
                    );
                }
                for conflict in &report.conflicts {
                    eprintln!(
                        "elastos: conflict in {}: {} changed on two devices; this device's version is kept as {}",
                        self.app.label(),
                        conflict.path.display(),
                        conflict.copy.display()
                    );
                }
                tracing::debug!(when, ?report, "synced the home");
            }
            Err(error) => eprintln!(
                "elastos: {:#} ({when}); the app's home stays as it is here",
                sync_failure(&self.app, error)
            ),
        }
    }
}
