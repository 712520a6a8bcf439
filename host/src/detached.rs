//! Detached runs (`elastos run -d`): what the CLI asks the daemon for, what the daemon answers
//! about its instances (`ps`, `inspect`), and the restart policy with its backoff. The daemon's
//! side (supervisor threads, states) is `host/daemon/src/supervisor.rs`; the logs are
//! [`crate::applog`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The first delay before a restart; each further restart in a row doubles it, up to
/// [`BACKOFF_CAP`]. A crash loop therefore costs one start per 30 s once it has failed 8 times.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// The longest delay between two restarts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A run that lasted at least this long starts the backoff over (docker's rule too): an app that
/// crashes once a day is restarted at once, not after the delay its previous crash earned.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// How long `elastos stop` waits after SIGTERM before SIGKILL, by default (docker's and
/// podman's default too).
pub const DEFAULT_STOP_TIMEOUT_SECS: u64 = 10;

/// The delay before restart number `consecutive` + 1 of a run of restarts:
/// [`BACKOFF_BASE`] * 2^`consecutive`, at most [`BACKOFF_CAP`].
pub fn backoff_delay(consecutive: u32) -> Duration {
    BACKOFF_BASE
        .checked_mul(1u32.checked_shl(consecutive).unwrap_or(u32::MAX))
        .map_or(BACKOFF_CAP, |delay| delay.min(BACKOFF_CAP))
}

/// When the daemon starts a detached app again after it ended (docker's `--restart`). A stop
/// asked for (`elastos stop`, `kill`, `restart`, the daemon stopping) never restarts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RestartPolicy {
    /// Never (the default).
    #[default]
    No,
    /// When it exits with a code other than 0 or dies of a signal; at most `max` times when set
    /// (`on-failure:3`: at most 3 restarts, 4 runs in all).
    OnFailure {
        /// The most restarts.
        max: Option<u32>,
    },
    /// Whatever the exit code; also when a new daemon starts, even after `elastos stop`
    /// (docker's `always`).
    Always,
    /// As `always`, except that a new daemon leaves it stopped if `elastos stop` ended it
    /// (docker's `unless-stopped`).
    UnlessStopped,
}

impl RestartPolicy {
    /// Whether a run that ended with `exit_code` (128+N for signal N), after `restarts`
    /// restarts so far, is started again.
    pub fn restarts_after(self, exit_code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max } => {
                exit_code != 0 && max.is_none_or(|max| restarts < max)
            }
        }
    }

    /// Whether a new daemon starts again an instance it finds in its record, docker's rule for
    /// a daemon restart: `always` whatever ended it, `unless-stopped` unless `elastos stop` did,
    /// `on-failure` when the daemon ended its run (stopping or dying: no failure of the app's,
    /// not counted against N) or while it waited out a backoff, never `no`. An instance that
    /// ended for good by itself under `on-failure` (exit 0, or N restarts made) stays exited.
    pub fn restarts_on_daemon_start(self, ended_by: Option<EndCause>) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => ended_by != Some(EndCause::Stopped),
            RestartPolicy::OnFailure { .. } => matches!(
                ended_by,
                Some(EndCause::DaemonStopped | EndCause::DaemonDied)
            ),
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "restart policy {text:?}: expected no, on-failure[:N], always or unless-stopped"
            )
        };
        match text.split_once(':') {
            None => match text {
                "no" => Ok(RestartPolicy::No),
                "on-failure" => Ok(RestartPolicy::OnFailure { max: None }),
                "always" => Ok(RestartPolicy::Always),
                "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
                _ => Err(bad()),
            },
            Some(("on-failure", count)) => count
                .parse::<u32>()
                .map(|max| RestartPolicy::OnFailure { max: Some(max) })
                .map_err(|_| {
                    format!(
                        "restart policy {text:?}: the most restarts after on-failure: must be a \
                         whole number, found {count:?}"
                    )
                }),
            Some(_) => Err(bad()),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max: Some(max) } => write!(f, "on-failure:{max}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl TryFrom<String> for RestartPolicy {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<RestartPolicy> for String {
    fn from(policy: RestartPolicy) -> String {
        policy.to_string()
    }
}

/// What `elastos run -d` asks the daemon to run. New fields come with `#[serde(default)]`, so
/// that older clients' requests still parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachedRun {
    /// The bundle file, absolute (the daemon reads it, and again at every restart).
    pub bundle: PathBuf,
    /// Arguments for the app's entry.
    #[serde(default)]
    pub args: Vec<String>,
    /// When to start it again after it ends.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// `--memory`, `--cpus`, `--pids`: over the manifest's limits, within the daemon's
    /// ceilings (checked again at every start).
    #[serde(default)]
    pub overrides: elastos_policy::LimitOverrides,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Its app runs.
    Running,
    /// Its app ended and the restart policy starts it again after a delay.
    Restarting,
    /// Its app ended for good (kept for `ps -a`, `logs` and `inspect` until `elastos rm`).
    Exited,
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceState::Running => "running",
            InstanceState::Restarting => "restarting",
            InstanceState::Exited => "exited",
        })
    }
}

/// What ended an instance's latest run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndCause {
    /// The app exited or died of a signal (`elastos kill` included).
    Exited,
    /// `elastos stop` (or `rm --force`).
    Stopped,
    /// The daemon stopped it on its way out (SIGTERM to the daemon, `systemctl stop`).
    DaemonStopped,
    /// The daemon died while it ran (SIGKILL, a crash): the kernel killed the app with it
    /// (PR_SET_PDEATHSIG of its supervisor thread); found by the next daemon in its record.
    DaemonDied,
}

impl fmt::Display for EndCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndCause::Exited => "exited",
            EndCause::Stopped => "stopped",
            EndCause::DaemonStopped => "daemon stopped",
            EndCause::DaemonDied => "daemon died",
        })
    }
}

/// A detached instance as `elastos ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The instance id: 32 hex digits, unique (commands take any unique prefix of it).
    pub id: String,
    /// The app's UUID.
    pub app_id: Uuid,
    /// The app's name.
    pub name: String,
    /// `running`, `restarting` or `exited`.
    pub state: InstanceState,
    /// The restart policy.
    pub restart_policy: RestartPolicy,
    /// Restarts made by the policy (not by `elastos restart`).
    pub restarts: u32,
    /// Host pid of the jail's init while it runs.
    pub pid: Option<u32>,
    /// Memory in use while it runs, in bytes: the cgroup's usage (memory.current on v2,
    /// memory.usage_in_bytes on v1, page cache included), else the resident memory of the
    /// jail's processes from /proc.
    pub memory_bytes: Option<u64>,
    /// Seconds since the current run started (while it runs).
    pub uptime_secs: Option<u64>,
    /// When the first run started, in seconds since the Unix epoch.
    pub created_at: u64,
    /// When the latest run started, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    /// When the latest run ended, if it has and that is known (not after the daemon died).
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// The exit code of the last run that ended (128+N: signal N); unknown after the daemon
    /// died.
    pub exit_code: Option<i32>,
    /// What ended the latest run, once it has ended.
    #[serde(default)]
    pub ended_by: Option<EndCause>,
    /// The SHA-256 of the bundle the latest run started from (hex).
    #[serde(default)]
    pub bundle_digest: Option<String>,
    /// The broker connection of the current run.
    pub connection: Option<u64>,
    /// The directory of its log files (`elastos logs` reads them).
    pub log_dir: PathBuf,
}

/// One run of an instance, for `elastos inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When it ended, if it did.
    pub ended_at_ms: Option<u64>,
    /// Its exit code (128+N: signal N), once ended.
    pub exit_code: Option<i32>,
    /// The backoff the daemon waited before this run, in milliseconds (0: the first run, a
    /// manual restart, or after a run long enough to reset the backoff).
    pub delay_ms: u64,
    /// It started from a warm jail of the daemon's pool (see `elastos broker --warm-jails`).
    #[serde(default)]
    pub warm: bool,
}

/// The most runs `inspect` lists (the latest ones): a crash loop must not grow the daemon.
pub const MAX_RUN_RECORDS: usize = 32;

/// The version of [`InstanceRecord`]'s format. A daemon skips (naming the file) a record of
/// another version rather than guess at it.
pub const RECORD_VERSION: u32 = 1;
/// An instance's record, in its directory beside its logs (`<logs>/<instance id>/`): `rm`
/// deletes both at once.
pub const RECORD_FILE: &str = "instance.json";

/// What the daemon keeps of an instance on disk, so that the next daemon lists it, keeps its
/// logs, and restarts it if its policy says so. Written whole (a temporary file renamed over
/// the old one) at every change of state: a crash leaves the previous record or the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The instance id (also its directory's name).
    pub id: String,
    /// What `run -d` asked for: bundle, arguments, restart policy, limits of the command line.
    pub spec: DetachedRun,
    /// The app's UUID, once a run has started (nil before).
    pub app_id: Uuid,
    /// The app's name, once a run has started (empty before).
    pub name: String,
    /// The SHA-256 of the bundle of the latest run (hex).
    pub bundle_digest: Option<String>,
    /// The state when written: `running` or `restarting` in a record that a new daemon reads
    /// means the daemon died.
    pub state: InstanceState,
    /// The exit code of the last run that ended, as in [`InstanceView`].
    pub exit_code: Option<i32>,
    /// What ended the latest run.
    pub ended_by: Option<EndCause>,
    /// Restarts made by the policy.
    pub restarts: u32,
    /// When the first run started, in seconds since the Unix epoch.
    pub created_at: u64,
    /// The latest runs, oldest first.
    pub runs: Vec<RunRecord>,
    /// The cgroup directories of the running app: a daemon that died could not remove them,
    /// the next one does.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}

/// An instance's record could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Reading or writing the file failed.
    #[error("instance record {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is no record.
    #[error("instance record {} is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A record of another version of elastos.
    #[error(
        "instance record {} has format version {found}, this daemon reads version \
         {RECORD_VERSION}",
        path.display()
    )]
    UnknownVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u64,
    },
    /// The record names another instance than its directory.
    #[error("instance record {} is of instance {id:?}, not of its directory", path.display())]
    Misplaced {
        /// The file.
        path: PathBuf,
        /// The id it holds.
        id: String,
    },
}

/// A record file's I/O error, with its path.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError {
    let path = path.to_path_buf();
    move |source| RecordError::Io { path, source }
}

impl InstanceRecord {
    /// Writes the record into `dir` atomically and durably: [`InstanceRecord::save_unsynced`],
    /// then [`InstanceRecord::sync`].
    pub fn save(&self, dir: &Path) -> Result<(), RecordError> {
        self.save_unsynced(dir)?;
        InstanceRecord::sync(dir)
    }

    /// Writes the record into `dir` atomically (a temporary file renamed over [`RECORD_FILE`]:
    /// a reader, or a daemon started after this one died, finds the old record or the new one),
    /// without waiting for the disk: a power loss before the next [`InstanceRecord::sync`] may
    /// lose it. For a start's critical path: the two syncs of a durable save were ~2-30 ms
    /// here (most of a `run -d`, whose jail starts in less), so the daemon answers first and
    /// syncs after.
    pub fn save_unsynced(&self, dir: &Path) -> Result<(), RecordError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(RECORD_FILE);
        let temporary = dir.join(format!("{RECORD_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(self).expect("records serialize");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io_error(&temporary))?;
        file.write_all(&json).map_err(io_error(&temporary))?;
        std::fs::rename(&temporary, &path).map_err(io_error(&path))
    }

    /// Waits until the record in `dir`, as last written, is on disk: the file synced, then the
    /// directory (so that its rename survives a power loss).
    pub fn sync(dir: &Path) -> Result<(), RecordError> {
        let path = dir.join(RECORD_FILE);
        std::fs::File::open(&path)
            .and_then(|file| file.sync_all())
            .map_err(io_error(&path))?;
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(dir))
    }

    /// The record in `dir`, which must be the instance's own directory (named by its id).
    pub fn load(dir: &Path) -> Result<InstanceRecord, RecordError> {
        let path = dir.join(RECORD_FILE);
        let bytes = std::fs::read(&path).map_err(|source| RecordError::Io {
            path: path.clone(),
            source,
        })?;
        let corrupt = |source| RecordError::Corrupt {
            path: path.clone(),
            source,
        };
        // The version first: a record of another version may not parse as this one.
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(corrupt)?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(version) if version == u64::from(RECORD_VERSION) => {}
            found => {
                return Err(RecordError::UnknownVersion {
                    path,
                    found: found.unwrap_or(0),
                })
            }
        }
        let record: InstanceRecord = serde_json::from_value(value).map_err(corrupt)?;
        if dir.file_name() != Some(std::ffi::OsStr::new(&record.id)) {
            return Err(RecordError::Misplaced {
                path,
                id: record.id,
            });
        }
        Ok(record)
    }
}

/// Whether `name` is an instance id (32 hex digits), as its directory is named.
pub fn is_instance_id(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Signals `elastos kill` can deliver: what the jail's init relays to the app, and KILL, which
/// ends the jail with its init.
pub const KILLABLE: [(&str, i32); 7] = [
    ("KILL", Signal::SIGKILL as i32),
    ("TERM", Signal::SIGTERM as i32),
    ("INT", Signal::SIGINT as i32),
    ("HUP", Signal::SIGHUP as i32),
    ("QUIT", Signal::SIGQUIT as i32),
    ("USR1", Signal::SIGUSR1 as i32),
    ("USR2", Signal::SIGUSR2 as i32),
];

/// A signal of [`KILLABLE`] from its name (`TERM`, `SIGTERM`, any case) or number.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    KILLABLE
        .iter()
        .find(|(known, number)| *known == name || number.to_string() == name)
        .map(|(_, number)| *number)
        .ok_or_else(|| {
            let names: Vec<&str> = KILLABLE.iter().map(|(name, _)| *name).collect();
            format!(
                "signal {text:?} cannot be sent to a jailed app; expected one of {} (or its \
                 number): the jail's init relays only these",
                names.join(", ")
            )
        })
}

/// A new instance id: 128 random bits, 32 hex digits.
pub fn new_instance_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_and_print_like_docker() {
        for text in [
            "no",
            "on-failure",
            "on-failure:3",
            "always",
            "unless-stopped",
        ] {
            assert_eq!(text.parse::<RestartPolicy>().unwrap().to_string(), text);
        }
        for bad in [
            "",
            "sometimes",
            "on-failure:",
            "on-failure:-1",
            "always:2",
            "no:1",
        ] {
            let error = bad.parse::<RestartPolicy>().unwrap_err();
            assert!(error.contains("restart policy"), "{bad}: {error}");
        }
    }

    #[test]
    fn on_failure_n_allows_at_most_n_restarts() {
        let policy: RestartPolicy = "on-failure:2".parse().unwrap();
        assert!(policy.restarts_after(1, 0));
        assert!(policy.restarts_after(137, 1));
        assert!(!policy.restarts_after(1, 2));
        assert!(!policy.restarts_after(0, 0), "exit 0 is no failure");
        assert!(RestartPolicy::Always.restarts_after(0, 1000));
        assert!(!RestartPolicy::No.restarts_after(1, 0));
    }

    #[test]
    fn a_daemon_restart_restarts_by_dockers_rules() {
        use EndCause::*;
        let policy = |text: &str| text.parse::<RestartPolicy>().unwrap();
        let cases = [
            // (policy, what ended it, restarted)
            ("no", Some(DaemonStopped), false),
            ("no", Some(DaemonDied), false),
            ("always", Some(Stopped), true),
            ("always", Some(Exited), true),
            ("unless-stopped", Some(Stopped), false),
            ("unless-stopped", Some(DaemonDied), true),
            ("unless-stopped", Some(Exited), true),
            ("on-failure:2", Some(DaemonStopped), true),
            ("on-failure", Some(DaemonDied), true),
            ("on-failure", Some(Exited), false),
            ("on-failure", Some(Stopped), false),
            ("on-failure", None, false),
        ];
        for (text, ended_by, restarted) in cases {
            assert_eq!(
                policy(text).restarts_on_daemon_start(ended_by),
                restarted,
                "{text} after {ended_by:?}"
            );
        }
    }

    fn record(id: &str) -> InstanceRecord {
        InstanceRecord {
            version: RECORD_VERSION,
            id: id.into(),
            spec: DetachedRun {
                bundle: "/b.bundle".into(),
                args: vec!["sleep".into(), "60".into()],
                restart: RestartPolicy::OnFailure { max: Some(3) },
                overrides: elastos_policy::LimitOverrides::default(),
            },
            app_id: Uuid::nil(),
            name: "probe".into(),
            bundle_digest: Some("ab".repeat(32)),
            state: InstanceState::Running,
            exit_code: None,
            ended_by: None,
            restarts: 2,
            created_at: 1_700_000_000,
            runs: vec![RunRecord {
                started_at_ms: 1,
                ended_at_ms: None,
                exit_code: None,
                delay_ms: 0,
                warm: true,
            }],
            cgroups: vec!["/sys/fs/cgroup/memory/elastos/x".into()],
        }
    }

    #[test]
    fn a_record_is_written_atomically_and_read_back() {
        let logs = tempfile::tempdir().unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        let dir = logs.path().join(id);
        std::fs::create_dir(&dir).unwrap();
        let mut written = record(id);
        written.save(&dir).unwrap();
        assert_eq!(InstanceRecord::load(&dir).unwrap(), written);
        written.state = InstanceState::Exited;
        written.save(&dir).unwrap();
        assert_eq!(
            InstanceRecord::load(&dir).unwrap().state,
            InstanceState::Exited
        );
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [RECORD_FILE], "no temporary file is left");
    }

    #[test]
    fn unreadable_records_say_which_file_and_why() {
        let logs = tempfile::tempdir().unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        let dir = logs.path().join(id);
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join(RECORD_FILE);
        let error = |contents: &str| {
            std::fs::write(&file, contents).unwrap();
            let error = InstanceRecord::load(&dir).unwrap_err();
            let text = crate::describe_error(&error);
            assert!(text.contains(file.to_str().unwrap()), "{text}");
            error
        };
        assert!(matches!(error("{nope"), RecordError::Corrupt { .. }));
        assert!(matches!(
            error(r#"{"version": 7}"#),
            RecordError::UnknownVersion { found: 7, .. }
        ));
        assert!(matches!(
            error("[]"),
            RecordError::UnknownVersion { found: 0, .. }
        ));
        let mut wrong_state = serde_json::to_value(record(id)).unwrap();
        wrong_state["state"] = "paused".into();
        assert!(matches!(
            error(&wrong_state.to_string()),
            RecordError::Corrupt { .. }
        ));
        let other = serde_json::to_string(&record("ffffffffffffffffffffffffffffffff")).unwrap();
        assert!(matches!(error(&other), RecordError::Misplaced { .. }));
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            InstanceRecord::load(&dir),
            Err(RecordError::Io { .. })
        ));
        assert!(is_instance_id(id) && !is_instance_id("logs") && !is_instance_id(&id[1..]));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff_delay(0), BACKOFF_BASE);
        assert_eq!(backoff_delay(1), BACKOFF_BASE * 2);
        assert_eq!(backoff_delay(3), BACKOFF_BASE * 8);
        assert_eq!(backoff_delay(20), BACKOFF_CAP);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn only_relayed_signals_are_accepted() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigusr1"), Ok(10));
        assert_eq!(parse_signal("9"), Ok(9));
        assert!(parse_signal("STOP")
            .unwrap_err()
            .contains("expected one of KILL"));
        assert!(parse_signal("64").is_err());
    }
}
