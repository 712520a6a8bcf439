//! The commands on the apps the broker daemon runs, podman style: `run -d`, `ps`, `logs`,
//! `stop`, `kill`, `restart`, `rm`, `inspect`. The daemon keeps the instances
//! (`host/daemon/src/supervisor.rs`); `logs` reads their log files itself.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use elastos_host::applog::{self, LogRecord, Stream};
use elastos_host::control::{ControlClient, ControlError, ControlRequest};
use elastos_host::detached::{DetachedRun, InstanceState, InstanceView};
use elastos_host::paths::StateDirs;

use crate::broker_cmd::{daemon_request, print_table};
use crate::cli::{DetachedCommand, Format, RunArgs};
use crate::commands::print_json;

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

/// `elastos ps`: the detached instances, then the other apps connected to the daemon.
pub fn ps(all: bool, format: Format) -> Result<u8> {
    let state = StateDirs::from_env()?;
    let value = daemon_request(&ControlRequest::Ps { all }, &state)?;
    if format == Format::Json {
        print_json(&value)?;
        return Ok(0);
    }
    let connections = value["apps"].as_array().cloned().unwrap_or_default();
    let services_of = |connection: &serde_json::Value| {
        connections
            .iter()
            .find(|app| app["id"] == *connection)
            .map_or(serde_json::Value::Null, |app| app["services"].clone())
    };
    let mut rows = Vec::new();
    for instance in value["instances"].as_array().into_iter().flatten() {
        let state = match (instance["state"].as_str(), instance["exit_code"].as_i64()) {
            (Some("exited"), Some(code)) => format!("exited ({code})"),
            (Some(state), _) => state.to_string(),
            (None, _) => "-".into(),
        };
        rows.push(serde_json::json!({
            "id": instance["id"].as_str().map(|id| &id[..id.len().min(12)]),
            "name": instance["name"],
            "origin": "detached",
            "state": state,
            "restarts": instance["restarts"],
            "pid": instance["pid"],
            "memory": instance["memory_bytes"].as_u64().map(human_bytes),
            "uptime": instance["uptime_secs"].as_u64().map(human_duration),
            "services": services_of(&instance["connection"]),
        }));
    }
    for app in connections.iter().filter(|app| app["instance"].is_null()) {
        rows.push(serde_json::json!({
            "id": app["id"],
            "name": app["name"],
            "origin": app["origin"],
            "state": "running",
            "pid": app["pid"],
            "uptime": app["uptime_secs"].as_u64().map(human_duration),
            "services": app["services"],
        }));
    }
    let columns = [
        ("ID", "id"),
        ("NAME", "name"),
        ("ORIGIN", "origin"),
        ("STATE", "state"),
        ("RESTARTS", "restarts"),
        ("PID", "pid"),
        ("MEMORY", "memory"),
        ("UPTIME", "uptime"),
        ("SERVICES", "services"),
    ];
    print_table(&columns, &rows.iter().collect::<Vec<_>>());
    Ok(0)
}

/// `elastos stop`: a detached instance or an attached app; prints the id it was given.
pub fn stop(id: String, timeout_secs: u64) -> Result<u8> {
    let state = StateDirs::from_env()?;
    daemon_request(
        &ControlRequest::Stop {
            id: id.clone(),
            timeout_secs: Some(timeout_secs),
        },
        &state,
    )?;
    println!("{id}");
    Ok(0)
}

/// `logs`, `kill`, `restart`, `rm`, `inspect`.
pub fn detached(command: DetachedCommand) -> Result<u8> {
    let state = StateDirs::from_env()?;
    let (request, id) = match command {
        DetachedCommand::Logs {
            id,
            follow,
            tail,
            timestamps,
        } => return logs(&state, &id, follow, tail, timestamps),
        DetachedCommand::Inspect { id, format: _ } => {
            print_json(&daemon_request(&ControlRequest::Inspect { id }, &state)?)?;
            return Ok(0);
        }
        DetachedCommand::Kill { id, signal } => (
            ControlRequest::Kill {
                id: id.clone(),
                signal,
            },
            id,
        ),
        DetachedCommand::Restart { id, timeout } => (
            ControlRequest::Restart {
                id: id.clone(),
                timeout_secs: Some(timeout),
            },
            id,
        ),
        DetachedCommand::Rm { id, force } => (
            ControlRequest::Rm {
                id: id.clone(),
                force,
            },
            id,
        ),
    };
    daemon_request(&request, &state)?;
    println!("{id}");
    Ok(0)
}

/// The instance `id` names, as the daemon shows it (from `inspect`).
fn instance(state: &StateDirs, id: &str) -> Result<InstanceView> {
    let value = daemon_request(&ControlRequest::Inspect { id: id.into() }, state)?;
    serde_json::from_value(value).context("the daemon's answer to inspect is not an instance")
}

/// `elastos logs`: the records of the instance's log files; with `follow`, then what is
/// appended, until the instance has exited for good (or is removed, or the daemon stops).
fn logs(
    state: &StateDirs,
    id: &str,
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
) -> Result<u8> {
    let view = instance(state, id)?;
    let (mut records, mut follower) = applog::read_records(&view.log_dir)
        .with_context(|| format!("cannot read the logs of instance {}", view.id))?;
    if let Some(n) = tail {
        records = applog::tail(records, n);
    }
    print_records(&records, timestamps)?;
    if !follow {
        return Ok(0);
    }
    let mut last_state_poll = std::time::Instant::now();
    let mut ended = view.state == InstanceState::Exited;
    loop {
        print_records(&follower.poll()?, timestamps)?;
        if ended {
            return Ok(0);
        }
        std::thread::sleep(FOLLOW_POLL);
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
