//! The commands on the apps the broker daemon runs, podman style: `run -d`, `ps`, `logs`,
//! `stop`, `kill`, `restart`, `rm`, `prune`, `inspect`. The daemon keeps the instances
//! (`host/daemon/src/supervisor.rs`); `logs` reads their log files itself.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use elastos_host::applog::{self, LogRecord, Stream};
use elastos_host::control::{ControlClient, ControlError, ControlRequest};
use elastos_host::detached::{DetachedRun, InstanceState, InstanceView};
use elastos_host::paths::StateDirs;

use crate::broker_cmd::{daemon_request, print_table};
use crate::cli::{DetachedCommand, RunArgs};
use crate::commands::print_json;
use crate::exit;
use crate::template::OutputFormat;

/// How often `logs -f` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How often `logs -f` asks the daemon whether the app has exited for good.
const FOLLOW_STATE_POLL: Duration = Duration::from_millis(500);

/// `elastos run -d`: the daemon starts the app and supervises it; prints its instance id.
pub fn run_detached(args: RunArgs) -> Result<u8> {
    let state = StateDirs::from_env()?;
    let bundle = std::fs::canonicalize(&args.bundle)
        .with_context(|| format!("cannot find bundle {}", args.bundle.display()))?;
    let request = ControlRequest::Run(DetachedRun {
        bundle,
        args: args.args,
        restart: args.restart,
        overrides: args.limits.overrides(),
    });
    // One connection, the request sent at once: no check before it that a daemon listens.
    let answer = match ControlClient::ask(&state.control_socket, &request, &[]) {
        Err(ControlError::NotRunning { .. }) => bail!(
            "`elastos run -d` needs a broker daemon to supervise the app, and none is running \
             (control socket {}). Hint: start one with `elastos broker` (or its systemd unit, see \
             docs/operations.md)",
            state.control_socket.display()
        ),
        answer => answer?,
    };
    let instance: InstanceView =
        serde_json::from_value(answer).context("the daemon's answer to run is not an instance")?;
    println!("{}", instance.id);
    Ok(0)
}

/// A `ps --filter KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsFilter {
    key: FilterKey,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterKey {
    Status,
    Name,
    Id,
    App,
}

impl FilterKey {
    const ALL: [(&'static str, FilterKey); 4] = [
        ("status", FilterKey::Status),
        ("name", FilterKey::Name),
        ("id", FilterKey::Id),
        ("app", FilterKey::App),
    ];
}

impl std::str::FromStr for PsFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<PsFilter, String> {
        let keys: Vec<&str> = FilterKey::ALL.iter().map(|(name, _)| *name).collect();
        let (key, value) = text.split_once('=').ok_or_else(|| {
            format!(
                "filter {text:?}: expected KEY=VALUE with KEY one of {}",
                keys.join(", ")
            )
        })?;
        let key = FilterKey::ALL
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, key)| *key)
            .ok_or_else(|| {
                format!(
                    "filter {text:?}: unknown key {key:?}; expected one of {}",
                    keys.join(", ")
                )
            })?;
        let states = ["running", "restarting", "exited"];
        if key == FilterKey::Status && !states.contains(&value) {
            return Err(format!(
                "filter {text:?}: unknown status {value:?}; expected one of {}",
                states.join(", ")
            ));
        }
        if value.is_empty() {
            return Err(format!("filter {text:?}: the value is empty"));
        }
        Ok(PsFilter {
            key,
            value: value.to_string(),
        })
    }
}

/// Whether `row` (a [`row`] of `ps`) passes `filters`: each key given must match one of its
/// values.
fn passes(row: &serde_json::Value, filters: &[PsFilter]) -> bool {
    let text = |field: &str| match &row[field] {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    FilterKey::ALL.iter().all(|(_, key)| {
        let mut wanted = filters.iter().filter(|f| f.key == *key).peekable();
        wanted.peek().is_none()
            || wanted.any(|f| match key {
                FilterKey::Status => text("state") == f.value,
                FilterKey::Name => text("name") == f.value,
                FilterKey::Id => text("full_id").starts_with(&f.value),
                FilterKey::App => text("app_id") == f.value,
            })
    })
}

/// What `ps` shows besides the format.
pub struct PsOptions {
    /// Exited instances too.
    pub all: bool,
    /// `--filter`s.
    pub filters: Vec<PsFilter>,
    /// Ids only.
    pub quiet: bool,
    /// Whole instance ids.
    pub no_trunc: bool,
}

/// The columns of `ps` (and `inspect --format table`): header and field of [`row`].
const PS_COLUMNS: [(&str, &str); 9] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("ORIGIN", "origin"),
    ("STATE", "status"),
    ("RESTARTS", "restarts"),
    ("PID", "pid"),
    ("MEMORY", "memory"),
    ("UPTIME", "uptime"),
    ("SERVICES", "services"),
];

/// `elastos ps`: the detached instances, then the other apps connected to the daemon.
pub fn ps(options: PsOptions, format: &OutputFormat) -> Result<u8> {
    let state = StateDirs::from_env()?;
    let by_status = options.filters.iter().any(|f| f.key == FilterKey::Status);
    let mut value = daemon_request(
        &ControlRequest::Ps {
            all: options.all || by_status,
        },
        &state,
    )?;
    let connections = value["apps"].as_array().cloned().unwrap_or_default();
    let services_of = |connection: &serde_json::Value| {
        connections
            .iter()
            .find(|app| app["id"] == *connection)
            .map_or(serde_json::Value::Null, |app| app["services"].clone())
    };
    let mut instances = Vec::new();
    let mut rows = Vec::new();
    for instance in value["instances"].as_array().into_iter().flatten() {
        let shown = row(
            instance,
            services_of(&instance["connection"]),
            options.no_trunc,
        );
        if passes(&shown, &options.filters) {
            instances.push(instance.clone());
            rows.push(shown);
        }
    }
    let mut apps = Vec::new();
    for app in connections.iter().filter(|app| app["instance"].is_null()) {
        let shown = serde_json::json!({
            "id": app["id"],
            "full_id": app["id"],
            "name": app["name"],
            "app_id": app["app_id"],
            "origin": app["origin"],
            "state": "running",
            "status": "running",
            "pid": app["pid"],
            "uptime": app["uptime_secs"].as_u64().map(human_duration),
            "uptime_secs": app["uptime_secs"],
            "services": app["services"],
        });
        if passes(&shown, &options.filters) {
            apps.push(app.clone());
            rows.push(shown);
        }
    }
    if options.quiet {
        for row in &rows {
            println!(
                "{}",
                row["id"]
                    .as_str()
                    .map_or_else(|| row["id"].to_string(), String::from)
            );
        }
        return Ok(0);
    }
    if !options.filters.is_empty() {
        // The daemon's document, with only what passed the filters.
        value["instances"] = instances.into();
        value["apps"] = apps.into();
    }
    print_rows(format, &value, &rows)?;
    Ok(0)
}

/// `rows` (or, as JSON, `json`) in `format`.
fn print_rows(
    format: &OutputFormat,
    json: &serde_json::Value,
    rows: &[serde_json::Value],
) -> Result<()> {
    match format {
        OutputFormat::Json => print_json(json)?,
        OutputFormat::Table => print_table(&PS_COLUMNS, &rows.iter().collect::<Vec<_>>()),
        OutputFormat::Template(template) => {
            for line in template.lines(rows).map_err(anyhow::Error::msg)? {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// An instance (as the daemon shows it in `ps` or `inspect`) as a row of `ps`: its fields for
/// people (`status`, `memory`, `uptime`, times in RFC 3339) beside the raw ones.
fn row(
    instance: &serde_json::Value,
    services: serde_json::Value,
    no_trunc: bool,
) -> serde_json::Value {
    let full_id = instance["id"].as_str().unwrap_or_default();
    let id = if no_trunc {
        full_id
    } else {
        &full_id[..full_id.len().min(12)]
    };
    let ended_by = instance["ended_by"].as_str();
    let status = match (instance["state"].as_str(), instance["exit_code"].as_i64()) {
        (Some("exited"), code) => {
            let code = code.map(|code| format!("({code})"));
            let cause = ended_by
                .filter(|cause| cause.starts_with("daemon"))
                .map(|cause| cause.replace('_', " "));
            std::iter::once("exited".to_string())
                .chain(code)
                .chain(cause.map(|cause| format!("({cause})")))
                .collect::<Vec<_>>()
                .join(" ")
        }
        (Some(state), _) => state.to_string(),
        (None, _) => "-".into(),
    };
    let time = |ms: Option<u64>| {
        ms.map(|ms| {
            elastos_host::applog::timestamp(std::time::UNIX_EPOCH + Duration::from_millis(ms))
        })
    };
    serde_json::json!({
        "id": id,
        "full_id": full_id,
        "name": instance["name"],
        "app_id": instance["app_id"],
        "origin": "detached",
        "state": instance["state"],
        "status": status,
        "exit_code": instance["exit_code"],
        "ended_by": ended_by,
        "restarts": instance["restarts"],
        "restart_policy": instance["restart_policy"],
        "pid": instance["pid"],
        "memory": instance["memory_bytes"].as_u64().map(human_bytes),
        "memory_bytes": instance["memory_bytes"],
        "uptime": instance["uptime_secs"].as_u64().map(human_duration),
        "uptime_secs": instance["uptime_secs"],
        "created_at": time(instance["created_at"].as_u64().map(|s| s * 1000)),
        "started_at": time(instance["started_at_ms"].as_u64()),
        "finished_at": time(instance["finished_at_ms"].as_u64()),
        "services": services,
    })
}

/// `request(id)` for each of `ids`, all at once (stopping ten apps takes one timeout, not ten):
/// prints each id done, and each failure on stderr; 125 if any failed.
fn for_each_id(ids: &[String], request: impl Fn(&str) -> ControlRequest + Sync) -> Result<u8> {
    let state = StateDirs::from_env()?;
    let results: Vec<Result<serde_json::Value>> = std::thread::scope(|scope| {
        let pending: Vec<_> = ids
            .iter()
            .map(|id| scope.spawn(|| daemon_request(&request(id), &state)))
            .collect();
        pending
            .into_iter()
            .map(|request| request.join().expect("a request thread does not panic"))
            .collect()
    });
    let mut failed = false;
    for (id, result) in ids.iter().zip(results) {
        match result {
            Ok(_) => println!("{id}"),
            Err(e) => {
                eprintln!("elastos: {id}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { exit::ELASTOS_FAILED } else { 0 })
}

/// `elastos stop`: detached instances or attached apps; prints each id it was given.
pub fn stop(ids: &[String], timeout_secs: u64) -> Result<u8> {
    for_each_id(ids, |id| ControlRequest::Stop {
        id: id.into(),
        timeout_secs: Some(timeout_secs),
    })
}

/// `logs`, `kill`, `restart`, `rm`, `prune`, `inspect`.
pub fn detached(command: DetachedCommand) -> Result<u8> {
    let state = StateDirs::from_env()?;
    match command {
        DetachedCommand::Logs {
            id,
            follow,
            tail,
            timestamps,
            since,
            until,
        } => logs(
            &state,
            &id,
            &LogsOptions {
                follow,
                tail,
                timestamps,
                since,
                until,
            },
        ),
        DetachedCommand::Inspect { ids, format } => inspect(&state, &ids, &format),
        DetachedCommand::Kill { ids, signal } => for_each_id(&ids, |id| ControlRequest::Kill {
            id: id.into(),
            signal,
        }),
        DetachedCommand::Restart { ids, timeout } => {
            for_each_id(&ids, |id| ControlRequest::Restart {
                id: id.into(),
                timeout_secs: Some(timeout),
            })
        }
        DetachedCommand::Rm { ids, force } => for_each_id(&ids, |id| ControlRequest::Rm {
            id: id.into(),
            force,
        }),
        DetachedCommand::Prune { force: _ } => {
            let removed = daemon_request(&ControlRequest::Prune, &state)?;
            for instance in removed.as_array().into_iter().flatten() {
                println!("{}", instance["id"].as_str().unwrap_or_default());
            }
            Ok(0)
        }
    }
}

/// `elastos inspect`: each instance `ids` names, in `format`; those not found are reported on
/// stderr (exit 125), the others shown all the same, as podman does.
fn inspect(state: &StateDirs, ids: &[String], format: &OutputFormat) -> Result<u8> {
    let mut found = Vec::new();
    let mut failed = false;
    for id in ids {
        match daemon_request(&ControlRequest::Inspect { id: id.clone() }, state) {
            Ok(instance) => found.push(instance),
            Err(e) => {
                eprintln!("elastos: {id}: {e:#}");
                failed = true;
            }
        }
    }
    if !found.is_empty() {
        let rows: Vec<serde_json::Value> = match format {
            OutputFormat::Table => found
                .iter()
                .map(|instance| row(instance, serde_json::Value::Null, false))
                .collect(),
            _ => found.clone(),
        };
        print_rows(format, &serde_json::Value::Array(found), &rows)?;
    }
    Ok(if failed { exit::ELASTOS_FAILED } else { 0 })
}

/// The instance `id` names, as the daemon shows it (from `inspect`).
fn instance(state: &StateDirs, id: &str) -> Result<InstanceView> {
    let value = daemon_request(&ControlRequest::Inspect { id: id.into() }, state)?;
    serde_json::from_value(value).context("the daemon's answer to inspect is not an instance")
}

/// A time of `logs --since/--until`: RFC 3339, or a duration before now (`10m`, `1h30m`,
/// `45s`, `500ms`), as podman takes them.
pub fn parse_log_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(time) = elastos_cloudsync::time::parse_rfc3339(text) {
        return Ok(time);
    }
    let bad = || {
        format!(
            "time {text:?}: expected RFC 3339 (2026-12-07T15:00:00Z) or a duration before now \
             (10m, 1h30m, 45s)"
        )
    };
    let mut ago = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            _ => return Err(bad()),
        };
        ago += unit
            .checked_mul(u32::try_from(number).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        rest = &rest[unit_end..];
    }
    SystemTime::now().checked_sub(ago).ok_or_else(bad)
}

/// What `elastos logs` prints.
struct LogsOptions {
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
}

impl LogsOptions {
    /// Whether `record` was read within --since and --until.
    fn shows(&self, record: &LogRecord) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Ok(time) = elastos_cloudsync::time::parse_rfc3339(&record.time) else {
            return false;
        };
        self.since.is_none_or(|since| time >= since) && self.until.is_none_or(|until| time < until)
    }
}

/// `elastos logs`: the records of the instance's log files; with `follow`, then what is
/// appended, until the instance has exited for good (or is removed, or the daemon stops, or
/// --until passes).
fn logs(state: &StateDirs, id: &str, options: &LogsOptions) -> Result<u8> {
    let view = instance(state, id)?;
    let (records, mut follower) = applog::read_records(&view.log_dir)
        .with_context(|| format!("cannot read the logs of instance {}", view.id))?;
    let mut records: Vec<LogRecord> = records.into_iter().filter(|r| options.shows(r)).collect();
    if let Some(n) = options.tail {
        records = applog::tail(records, n);
    }
    print_records(&records, options.timestamps)?;
    if !options.follow {
        return Ok(0);
    }
    let mut last_state_poll = std::time::Instant::now();
    let mut ended = view.state == InstanceState::Exited;
    let mut lost_reported = false;
    loop {
        let records = follower.poll()?;
        if follower.lost_lines() && !lost_reported {
            eprintln!(
                "elastos: logs -f fell more than {} files behind the app; lines in between \
                 were rotated away",
                applog::FOLLOWED_EXTRA_FILES
            );
            lost_reported = true;
        }
        let shown: Vec<LogRecord> = records
            .iter()
            .filter(|r| options.shows(r))
            .cloned()
            .collect();
        print_records(&shown, options.timestamps)?;
        if ended
            || options
                .until
                .is_some_and(|until| SystemTime::now() >= until)
        {
            return Ok(0);
        }
        // While the app writes, read on at once: a follower that keeps up never depends on the
        // writer's extra retention.
        if records.is_empty() {
            std::thread::sleep(FOLLOW_POLL);
        }
        if last_state_poll.elapsed() >= FOLLOW_STATE_POLL {
            last_state_poll = std::time::Instant::now();
            ended = match instance(state, &view.id) {
                Ok(now) => now.state == InstanceState::Exited,
                // Removed, or the daemon stopped: nothing more will be written.
                Err(e) if is_gone(&e) => true,
                Err(e) => return Err(e),
            };
            if ended {
                // The daemon writes the app's last output as it reads it: give it a moment.
                std::thread::sleep(FOLLOW_POLL);
            }
        }
    }
}

/// Whether `error` says the instance or the daemon is gone.
fn is_gone(error: &anyhow::Error) -> bool {
    match error.downcast_ref::<ControlError>() {
        Some(ControlError::Refused(message)) => message.contains("no detached app"),
        Some(ControlError::NotRunning { .. }) => true,
        _ => error.to_string().contains("no broker daemon is running"),
    }
}

/// Prints `records`: stdout's to stdout, stderr's to stderr, pieces of lines without a newline.
fn print_records(records: &[LogRecord], timestamps: bool) -> Result<()> {
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    for record in records {
        let target: &mut dyn Write = match record.stream {
            Stream::Stdout => &mut out,
            Stream::Stderr => &mut err,
        };
        if timestamps {
            write!(target, "{} ", record.time)?;
        }
        target.write_all(&record.content)?;
        if !record.partial {
            target.write_all(b"\n")?;
        }
    }
    out.flush()?;
    err.flush()?;
    Ok(())
}

/// 1536 -> `1.5KiB`.
fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", units[unit])
    }
}

/// 3725 -> `1h2m`.
fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_podmans() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(3 << 20), "3.0MiB");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(3725), "1h2m");
        assert_eq!(human_duration(90_000), "1d1h");
    }
}
