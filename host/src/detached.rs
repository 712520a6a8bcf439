//! Detached runs (`elastos run -d`): what the CLI asks the daemon for, what the daemon answers
//! about its instances (`ps`, `inspect`), and the restart policy with its backoff. The daemon's
//! side (supervisor threads, states) is `host/daemon/src/supervisor.rs`; the logs are
//! [`crate::applog`].

use std::fmt;
use std::path::PathBuf;
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
    /// Whatever the exit code.
    Always,
}

impl RestartPolicy {
    /// Whether a run that ended with `exit_code` (128+N for signal N), after `restarts`
    /// restarts so far, is started again.
    pub fn restarts_after(self, exit_code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure { max } => {
                exit_code != 0 && max.is_none_or(|max| restarts < max)
            }
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("restart policy {text:?}: expected no, on-failure[:N] or always");
        match text.split_once(':') {
            None => match text {
                "no" => Ok(RestartPolicy::No),
                "on-failure" => Ok(RestartPolicy::OnFailure { max: None }),
                "always" => Ok(RestartPolicy::Always),
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
    /// The exit code of the last run that ended (128+N: signal N).
    pub exit_code: Option<i32>,
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
        for text in ["no", "on-failure", "on-failure:3", "always"] {
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
