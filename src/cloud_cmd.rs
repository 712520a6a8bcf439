//! The cloud disk commands: `elastos cloud set|status|versions|restore`, `elastos sync
//! now|status`, and the sync around `elastos run` when no broker daemon runs. The sync itself is
//! `elastos-cloudsync`'s; this module finds the store, the key and the homes.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use elastos_cloudsync::{
    EvictReport, FetchReport, GcOptions, HomeStatus, Progress, StoreWait, SyncEngine, SyncError,
    SyncOptions, SyncReport,
};
use elastos_host::apps::PreparedApp;
use elastos_host::cloud::{self, AppHome, CloudSettings, CloudStore, KnownApp};
use elastos_host::control::{ControlClient, ControlRequest};
use elastos_host::paths::StateDirs;
use elastos_identity::fsutil::{create_private_dir, write_atomically, Replace};
use elastos_identity::UserKey;
use elastos_loader::holder::UserNamespace;
use elastos_loader::{HostIdentity, SubordinateIds};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cli::{CloudCommand, Format, SyncCommand};
use crate::commands::print_json;

/// The store in force, for the commands.
fn store(state: &StateDirs) -> Result<CloudStore> {
    Ok(cloud::store(state)?)
}

/// The engine for `store`, for the commands.
fn engine(state: &StateDirs, store: &CloudStore) -> Result<SyncEngine> {
    Ok(cloud::engine(state, store)?)
}

fn app_homes(state: &StateDirs) -> Result<Vec<AppHome>> {
    Ok(cloud::app_homes(state)?)
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
            let config = cloud::store_config(&settings)?;
            let store = CloudStore {
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
            let apps = statuses(&state, Ok(&engine))?;
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
        CloudCommand::Evict { app, paths, format } => {
            let app = resolve_app(&state, &app)?;
            let Some(daemon) = ControlClient::connect(&state.control_socket) else {
                bail!(
                    "files on demand need the broker daemon (`elastos broker`, as root): it fetches                      an evicted file when it is read; without it the file would read as zeros.                      Nothing was evicted"
                );
            };
            let request = ControlRequest::CloudEvict {
                publisher: app.publisher.clone(),
                app_id: app.app_id,
                name: app.name.clone(),
                paths,
            };
            let report: EvictReport = serde_json::from_value(
                daemon
                    .request(&request, &[])
                    .with_context(|| format!("cannot evict files of {}", app.label()))?,
            )
            .context("the broker daemon's eviction report is not understood")?;
            match format.format {
                Format::Json => print_json(&report)?,
                Format::Text => {
                    println!(
                        "evicted {} files of {} ({} bytes now only on your cloud disk; fetched                          back when read){}{}",
                        report.evicted.len(),
                        app.label(),
                        report.bytes,
                        if report.pinned.is_empty() {
                            String::new()
                        } else {
                            format!("; {} pinned files kept", report.pinned.len())
                        },
                        if report.already.is_empty() {
                            String::new()
                        } else {
                            format!("; {} already evicted", report.already.len())
                        }
                    );
                }
            }
            Ok(0)
        }
        CloudCommand::Pin { app, paths, format } => pin(&state, &app, paths, true, format.format),
        CloudCommand::Unpin { app, paths, format } => {
            pin(&state, &app, paths, false, format.format)
        }
        CloudCommand::Gc {
            retention,
            grace,
            format,
        } => {
            let options = GcOptions {
                retention: parse_duration("--retention", &retention)?,
                grace: parse_duration("--grace", &grace)?,
            };
            let store = store(&state)?;
            let report = engine(&state, &store)?
                .gc(&options)
                .with_context(|| format!("cannot collect garbage in {}", store.config.url))?;
            match format.format {
                Format::Json => print_json(&report)?,
                Format::Text => println!(
                    "{} homes: {} snapshots kept, {} deleted; {} chunks referenced, {} deleted, {} \
                     unreferenced kept for a later run; {} bytes freed",
                    report.homes,
                    report.snapshots_kept,
                    report.snapshots_deleted,
                    report.chunks_referenced,
                    report.chunks_deleted,
                    report.chunks_marked,
                    report.bytes_deleted
                ),
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

/// `elastos cloud pin|unpin`: through the daemon when one runs (its fanotify group serves the
/// files being fetched), else with this process's engine.
fn pin(state: &StateDirs, app: &str, paths: Vec<PathBuf>, pin: bool, format: Format) -> Result<u8> {
    let app = resolve_app(state, app)?;
    let what = if pin { "pin" } else { "unpin" };
    let report: FetchReport = match ControlClient::connect(&state.control_socket) {
        Some(daemon) => {
            let request = ControlRequest::CloudPin {
                publisher: app.publisher.clone(),
                app_id: app.app_id,
                paths,
                pin,
            };
            serde_json::from_value(
                daemon
                    .request(&request, &[])
                    .with_context(|| format!("cannot {what} files of {}", app.label()))?,
            )
            .context("the broker daemon's report is not understood")?
        }
        None => {
            let engine = engine(state, &store(state)?)?;
            let done = if pin {
                engine.pin(&app.home_ref(), &app.home, &paths, app.owner())
            } else {
                engine.unpin(&app.home_ref(), &paths)
            };
            done.with_context(|| format!("cannot {what} files of {}", app.label()))?
        }
    };
    match format {
        Format::Json => print_json(&report)?,
        Format::Text => {
            let pinned: Vec<String> = report
                .pinned
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            println!(
                "{}; fetched {} evicted files ({} bytes); pinned in {}: {}",
                if pin { "pinned" } else { "unpinned" },
                report.fetched.len(),
                report.bytes,
                app.label(),
                if pinned.is_empty() {
                    "nothing".to_owned()
                } else {
                    pinned.join(", ")
                }
            );
        }
    }
    Ok(0)
}

/// A duration as `gc` takes it: a whole number and a unit, `s`, `m`, `h` or `d`.
fn parse_duration(flag: &str, text: &str) -> Result<std::time::Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => bail!("{flag} {text:?}: expected a whole number and a unit, s, m, h or d (e.g. 30d)"),
    };
    let number: u64 = number
        .parse()
        .with_context(|| format!("{flag} {text:?}: expected a whole number before the unit"))?;
    Ok(std::time::Duration::from_secs(
        number.saturating_mul(seconds),
    ))
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
    /// The broker daemon's continuous sync of the home, when a daemon runs: `watching`,
    /// `pending`, `last_sync`, `last_error`, `failures`, `retry_in_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon: Option<serde_json::Value>,
}

/// The daemon's view of each home it syncs, by home key (empty when no daemon runs).
fn daemon_views(state: &StateDirs) -> BTreeMap<String, serde_json::Value> {
    let Some(daemon) = ControlClient::connect(&state.control_socket) else {
        return BTreeMap::new();
    };
    let views = match daemon.request(&ControlRequest::CloudStatus, &[]) {
        Ok(serde_json::Value::Array(views)) => views,
        Ok(_) => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!(error = %e, "the broker daemon did not say how it syncs");
            return BTreeMap::new();
        }
    };
    views
        .into_iter()
        .filter_map(|view| {
            let publisher = view.get("publisher")?.as_str()?;
            let app_id = view.get("app_id")?.as_str()?.parse().ok()?;
            Some((cloud::home_key(publisher, app_id), view))
        })
        .collect()
}

fn statuses(
    state: &StateDirs,
    engine: Result<&SyncEngine, &anyhow::Error>,
) -> Result<Vec<AppStatus>> {
    let mut daemon = daemon_views(state);
    Ok(app_homes(state)?
        .into_iter()
        .map(|app| {
            let daemon = daemon.remove(&app.key());
            if !app.sync {
                return AppStatus {
                    app,
                    status: None,
                    error: None,
                    daemon,
                };
            }
            let status = engine.map_err(|e| format!("{e:#}")).and_then(|engine| {
                engine
                    .status(&app.home_ref(), &app.home)
                    .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
            });
            match status {
                Ok(status) => AppStatus {
                    app,
                    status: Some(status),
                    error: None,
                    daemon,
                },
                Err(error) => AppStatus {
                    error: Some(error),
                    app,
                    status: None,
                    daemon,
                },
            }
        })
        .collect())
}

/// One line of how the daemon syncs a home, for people.
fn describe_daemon_view(view: &serde_json::Value) -> String {
    let watching = view["watching"].as_str().unwrap_or("?");
    let how = match watching {
        "watched" => "watched for changes".to_owned(),
        "polled" => "scanned at every pull (past the inotify watch limit)".to_owned(),
        _ => "not watched yet".to_owned(),
    };
    match view["last_error"].as_str() {
        Some(error) => format!(
            "daemon: {how}; the last {} syncs failed, next try in {} s: {error}",
            view["failures"].as_u64().unwrap_or(0),
            view["retry_in_ms"].as_u64().unwrap_or(0).div_ceil(1000)
        ),
        None => format!(
            "daemon: {how}; last sync {}{}",
            view["last_sync"].as_str().unwrap_or("not yet"),
            if view["pending"].as_bool() == Some(true) {
                "; local changes pending"
            } else {
                ""
            }
        ),
    }
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
        if let Some(od) = entry.status.as_ref().map(|s| &s.on_demand) {
            if od.evicted_files > 0 || od.pinned_files > 0 {
                println!(
                    "  on demand: {} files evicted ({} bytes only on the cloud disk); {} pinned                      ({} bytes)",
                    od.evicted_files, od.evicted_bytes, od.pinned_files, od.pinned_bytes
                );
            }
        }
        if let Some(view) = &entry.daemon {
            println!("  {}", describe_daemon_view(view));
        }
    }
}

/// One app's line of `elastos sync now --format json`.
#[derive(Serialize, Deserialize)]
struct Synced {
    #[serde(flatten)]
    app: AppHome,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<SyncReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `elastos sync ...`.
pub fn sync(command: SyncCommand) -> Result<u8> {
    let state = StateDirs::from_env()?;
    match command {
        SyncCommand::Status { format } => {
            // A store that cannot be reached is every home's error, beside what the daemon says.
            let engine = store(&state).and_then(|store| engine(&state, &store));
            let apps = statuses(&state, engine.as_ref())?;
            match format.format {
                Format::Json => print_json(&apps)?,
                Format::Text => print_statuses(&apps),
            }
            Ok(0)
        }
        SyncCommand::Now {
            app,
            confirm_mass_delete,
            store_timeout,
            first_answer,
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
            let mut store = store(&state)?;
            store.config.wait = match store_timeout {
                None => StoreWait::Unbounded,
                Some(bound) if first_answer => StoreWait::first_answer_within(bound),
                Some(bound) => StoreWait::within(bound),
            };
            let engine = engine(&state, &store)?;
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

/// The sync around one `elastos run`: the home is brought up to date before the app starts and
/// pushed after it exits, by this process when no broker daemon runs, else by the daemon (which
/// also syncs it continuously while the app runs). Failures never stop the app: it runs on its
/// local copy and the failure is reported.
///
/// The first sync runs on a thread of its own while the loader builds the jail, and the app's
/// entry waits for it ([`RunSync::wait_before_entry`]): the two took turns before, and an
/// unprivileged launch's sync (a user namespace and an `elastos sync now` process) was most of
/// its time.
pub struct RunSync {
    app: AppHome,
    by: SyncerState,
    state: StateDirs,
}

/// Where the sync around a run stands.
enum SyncerState {
    /// The first sync is running on this thread, which returns the syncer for the last one
    /// (None: there is none, the reason was reported).
    First(std::thread::JoinHandle<Option<Syncer>>),
    /// The first sync is done.
    Done(Option<Syncer>),
}

/// How long `elastos run` without a daemon waits for a network store that does not answer,
/// before the app starts (the whole sync, when the home has files here: the app then starts on
/// its local copy) and after it exits (the store's first answer: one that answers gets the time
/// a large upload needs). What was not synced stays pending for the next run, `elastos sync
/// now` or the daemon.
const RUN_STORE_WAIT: std::time::Duration = std::time::Duration::from_millis(2500);

/// Who syncs the home around a run.
enum Syncer {
    /// This process, with an engine opened for each of the two syncs (no daemon runs): none
    /// is held while the app runs (the known chunks in memory, a network store's helper
    /// process and its connections).
    Engine(CloudStore),
    /// `elastos sync now APP`, in this user's namespace, where it is root over its apps' ids
    /// (no daemon runs, and the app runs as subordinate ids of the user: its home is theirs,
    /// which this user cannot read; the engine cannot enter the namespace in this process while
    /// it has threads, and could not leave it). The sync after the app, once this process is
    /// single-threaded again, enters it here instead ([`RunSync::after_run`]).
    Namespace(AppNamespace),
    /// The broker daemon, asked through its control socket.
    Daemon(ControlClient),
}

impl RunSync {
    /// Once the app's home is ready: records its name and whether it syncs, and, when its home
    /// syncs, starts bringing it up to date (restoring a lost one) on a thread, through `daemon`
    /// when one runs; [`RunSync::wait_before_entry`] waits for it.
    pub fn before_run(
        state: &StateDirs,
        prepared: &PreparedApp,
        daemon: Option<ControlClient>,
    ) -> Option<RunSync> {
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
        if let Err(error) = cloud::remember_app(state, &app.key(), known) {
            tracing::warn!("{error:#}");
        }
        if !app.sync {
            return None;
        }
        let first = {
            let (state, app) = (state.clone(), app.clone());
            std::thread::Builder::new()
                .name("home-sync".into())
                .spawn(move || {
                    let mut by = Syncer::for_app(&state, &app, daemon)?;
                    // A namespace and a process cost an unprivileged run more than its jail:
                    // asked in this process first (one listing of the store), most runs skip it.
                    if matches!(by, Syncer::Namespace(_)) && nothing_to_bring(&state, &app) {
                        tracing::debug!("nothing to bring to the home: no sync before the app");
                        return Some(by);
                    }
                    // A home with files here runs on them if the store is slow; a missing or
                    // empty one waits for its restore once the store answers.
                    let has_files =
                        std::fs::read_dir(&app.home).is_ok_and(|mut d| d.next().is_some());
                    let wait = if has_files {
                        StoreWait::within(RUN_STORE_WAIT)
                    } else {
                        StoreWait::first_answer_within(RUN_STORE_WAIT)
                    };
                    sync_around_run(&state, &app, &mut by, "before the app starts", wait);
                    fetch_evicted(&state, &app, &by);
                    Some(by)
                })
        };
        let by = match first {
            Ok(first) => SyncerState::First(first),
            Err(error) => {
                eprintln!(
                    "elastos: cannot start syncing {}: {error}; it runs on its local copy, unsynced",
                    app.label()
                );
                SyncerState::Done(None)
            }
        };
        Some(RunSync {
            app,
            by,
            state: state.clone(),
        })
    }

    /// Right before the app's entry runs: waits for the first sync.
    pub fn wait_before_entry(&mut self) {
        if let SyncerState::First(_) = self.by {
            let SyncerState::First(first) =
                std::mem::replace(&mut self.by, SyncerState::Done(None))
            else {
                unreachable!("matched above")
            };
            // A panic of the sync thread has been printed; the app runs unsynced.
            self.by = SyncerState::Done(first.join().ok().flatten());
        }
    }

    /// After the app exited: sends its changes to the cloud disk. The last thing this process
    /// does (see [`Syncer::Namespace`]).
    pub fn after_run(mut self) {
        self.wait_before_entry();
        if let SyncerState::Done(Some(by)) = &mut self.by {
            if let Syncer::Namespace(namespace) = by {
                if let Some(here) = namespace.enter_for_last_sync(&self.state) {
                    *by = here;
                }
            }
            let wait = StoreWait::first_answer_within(RUN_STORE_WAIT);
            sync_around_run(&self.state, &self.app, by, "after the app exited", wait);
        }
    }
}

/// This user's namespace (its holder's, see `elastos_loader::holder`), where it is root over its
/// apps' ids, found at its first use: a run whose sync before the app has nothing to bring
/// needs it only after.
struct AppNamespace {
    /// [`StateDirs::runtime`].
    runtime: PathBuf,
    ids: SubordinateIds,
    /// The namespace, or why it could not be had.
    found: std::cell::OnceCell<Result<UserNamespace, String>>,
}

impl AppNamespace {
    fn get(&self) -> &Result<UserNamespace, String> {
        self.found.get_or_init(|| {
            crate::commands::user_namespace(&self.runtime, &self.ids).map_err(|e| format!("{e:#}"))
        })
    }

    /// This process, once the app has exited, enters the namespace itself: the sync after the
    /// app then runs here, as without subordinate ids, instead of in an `elastos sync now`
    /// process (an exec of elastos). The kernel lets only a single-threaded process enter a
    /// user namespace; with another thread left (the embedded broker's, after an app that
    /// used its fd 3), None, and the sync runs in its own process.
    fn enter_for_last_sync(&self, state: &StateDirs) -> Option<Syncer> {
        let namespace = self.get().as_ref().ok()?;
        // Found before: once in the namespace, this process could not spawn the other way.
        let store = store(state).ok()?;
        match namespace.enter() {
            Ok(()) => Some(Syncer::Engine(store)),
            Err(error) => {
                tracing::debug!("the sync after the app runs in its own process: {error}");
                None
            }
        }
    }
}

impl Syncer {
    /// Who syncs `app`'s home: the daemon when one answers, else this process (in a namespace
    /// of the app's ids when it runs as subordinate ids of this user). None, reported, when no
    /// one can.
    fn for_app(state: &StateDirs, app: &AppHome, daemon: Option<ControlClient>) -> Option<Self> {
        let subordinate = || {
            let ids = SubordinateIds::of_current_user().ok()?;
            let identity = HostIdentity::for_app_home(&app.app_id, Some(&app.home), Some(&ids));
            identity.subordinate.then(|| AppNamespace {
                runtime: state.runtime.clone(),
                ids,
                found: std::cell::OnceCell::new(),
            })
        };
        Some(match daemon {
            Some(daemon) => Syncer::Daemon(daemon),
            None => match subordinate() {
                Some(namespace) => Syncer::Namespace(namespace),
                None => match store(state) {
                    Ok(store) => Syncer::Engine(store),
                    Err(error) => {
                        eprintln!(
                            "elastos: {error:#}; {} runs on its local copy, unsynced",
                            app.label()
                        );
                        return None;
                    }
                },
            },
        })
    }
}

/// Brings `app`'s home and the cloud disk up to date through `by`, waiting for the store as
/// `wait` says; failures are reported and leave the home as it is.
fn sync_around_run(state: &StateDirs, app: &AppHome, by: &mut Syncer, when: &str, wait: StoreWait) {
    let result = match by {
        Syncer::Namespace(namespace) => sync_in(app, namespace, wait)
            .map_err(|e| e.context(format!("cannot sync {}", app.label()))),
        Syncer::Engine(store) => {
            store.config.wait = wait;
            engine(state, store)
                .and_then(|engine| sync_home(&engine, app, false).map_err(|e| sync_failure(app, e)))
        }
        Syncer::Daemon(daemon) => {
            let request = ControlRequest::CloudSync {
                publisher: app.publisher.clone(),
                app_id: app.app_id,
                name: app.name.clone(),
            };
            daemon
                .request(&request, &[])
                .map_err(|e| {
                    anyhow::Error::from(e)
                        .context(format!("the broker daemon cannot sync {}", app.label()))
                })
                .and_then(|json| {
                    serde_json::from_value::<SyncReport>(json)
                        .context("the broker daemon's sync report is not understood")
                })
        }
    };
    match result {
        Ok(report) => {
            if report.restored_lost_cache {
                eprintln!(
                    "elastos: {}'s home was missing here: restored {} files from your cloud disk",
                    app.label(),
                    report.downloaded.len()
                );
            }
            for conflict in &report.conflicts {
                eprintln!(
                    "elastos: conflict in {}: {} changed on two devices; this device's version is kept as {}",
                    app.label(),
                    conflict.path.display(),
                    conflict.copy.display()
                );
            }
            tracing::debug!(when, ?report, "synced the home");
        }
        Err(error) if timed_out(&error) => eprintln!(
            "elastos: {error:#} ({when}); {} runs on its local copy, and its changes go to \
             the cloud disk at the next sync (the next run, `elastos sync now`, or the daemon)",
            app.label()
        ),
        Err(error) => eprintln!("elastos: {error:#} ({when}); the app's home stays as it is here"),
    }
}

/// Without a daemon nothing serves a read of an evicted file (it would read as zeros), so every
/// evicted file of the home is fetched before the app starts; when that fails the app does not
/// start (exit code 69, EX_UNAVAILABLE): this runs while the jail is being built, and nothing of
/// the launch can be failed from here.
fn fetch_evicted(state: &StateDirs, app: &AppHome, by: &Syncer) {
    let Syncer::Engine(store) = by else {
        return;
    };
    let engine = match engine(state, store) {
        Ok(engine) => engine,
        // The sync before has said why the store cannot be opened; that matters here only
        // when the home has placeholders (one `lgetxattr` per file to tell).
        Err(error) if elastos_cloudsync::placeholders_under(&app.home).is_empty() => {
            tracing::debug!("{error:#}; no evicted file to fetch");
            return;
        }
        Err(error) => refuse_evicted(app, &error),
    };
    match engine
        .fetch_evicted(&app.home_ref(), &app.home)
        .map_err(anyhow::Error::from)
    {
        Ok(report) if !report.fetched.is_empty() => eprintln!(
            "elastos: fetched {} evicted files of {} ({} bytes) before it starts: no broker \
             daemon runs to fetch them when they are read",
            report.fetched.len(),
            app.label(),
            report.bytes
        ),
        Ok(_) => {}
        Err(error) => refuse_evicted(app, &error),
    }
}

/// Ends `elastos run` before the app starts: files of its home are evicted and cannot be fetched.
fn refuse_evicted(app: &AppHome, error: &anyhow::Error) -> ! {
    eprintln!(
        "elastos: cannot start {}: files of its home are evicted and cannot be fetched from your \
         cloud disk: {error:#}; hint: start the broker daemon, or run it again when the cloud \
         disk is reachable",
        app.label()
    );
    std::process::exit(69);
}

/// Whether a sync gave up on a store that did not answer in time.
fn timed_out(error: &anyhow::Error) -> bool {
    // Opening the store wraps the engine's error in a box (`CloudError::Open`).
    error.chain().any(|e| {
        matches!(
            e.downcast_ref::<SyncError>(),
            Some(SyncError::StoreTimeout { .. })
        ) || matches!(
            e.downcast_ref::<cloud::CloudError>(),
            Some(cloud::CloudError::Open { source, .. })
                if matches!(**source, SyncError::StoreTimeout { .. })
        )
    })
}

/// Whether the store has nothing for `app`'s home that this device has not synced, and the home
/// is the directory it last synced ([`SyncEngine::nothing_to_bring`]); false when that cannot be
/// told (the sync then runs and reports why).
fn nothing_to_bring(state: &StateDirs, app: &AppHome) -> bool {
    let Ok(mut store) = store(state) else {
        return false;
    };
    store.config.wait = StoreWait::within(RUN_STORE_WAIT);
    engine(state, &store)
        .ok()
        .and_then(|engine| engine.nothing_to_bring(&app.home_ref(), &app.home).ok())
        .unwrap_or(false)
}

/// `elastos sync now APP --format json` in `namespace` (see [`Syncer::Namespace`]), bounded by
/// `wait`: its report.
fn sync_in(app: &AppHome, namespace: &AppNamespace, wait: StoreWait) -> Result<SyncReport> {
    let namespace = namespace
        .get()
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut command = std::process::Command::new(
        std::env::current_exe().context("cannot find the elastos executable")?,
    );
    command
        .args(["sync", "now", &app.app_id.to_string(), "--format", "json"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    match wait {
        StoreWait::Unbounded => {}
        StoreWait::Until { budget, .. } => {
            command.arg(format!("--store-timeout={}", budget.as_secs_f64()));
        }
        StoreWait::FirstAnswerBy { budget, .. } => {
            command.arg(format!("--store-timeout={}", budget.as_secs_f64()));
            command.arg("--first-answer");
        }
    }
    let out = namespace
        .spawn(command)?
        .wait_with_output()
        .context("waiting for elastos sync now")?;
    // One result, for this app: its report, or why it failed.
    match serde_json::from_slice::<Vec<Synced>>(&out.stdout)
        .ok()
        .and_then(|results| results.into_iter().next())
    {
        Some(Synced {
            report: Some(report),
            ..
        }) => Ok(report),
        Some(Synced {
            error: Some(error), ..
        }) => Err(anyhow::anyhow!("{error}")),
        _ => Err(anyhow::anyhow!(
            "elastos sync now {} without a report",
            out.status
        )),
    }
}

/// Runs this command again in `elastos unshare`'s namespace when this user's apps run as its
/// subordinate ids: their homes are theirs, which the user cannot read or write, and there the
/// user is root over all of them (restored files get each home's owner, see
/// [`AppHome::owner`]). The command's exit code; None when it runs here (root, no subordinate
/// ids, or already in a namespace).
pub fn rerun_over_subordinate_homes(state: &StateDirs) -> Result<Option<u8>> {
    use std::os::unix::process::ExitStatusExt;
    if nix::unistd::getuid().is_root() || cloud::in_user_namespace() {
        return Ok(None);
    }
    let Ok(ids) = SubordinateIds::of_current_user() else {
        return Ok(None);
    };
    let mut command =
        std::process::Command::new(std::env::current_exe().context("cannot find elastos")?);
    command.args(std::env::args_os().skip(1));
    let status = crate::commands::user_namespace(&state.runtime, &ids)?
        .spawn(command)?
        .wait()
        .context("waiting for elastos in the namespace of your subordinate ids")?;
    Ok(Some(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(125),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(125),
        (None, None) => 125,
    }))
}
