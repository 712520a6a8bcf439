//! The broker commands: the daemon (`elastos broker`) and its clients (`install`, `uninstall`,
//! `list`, `ps`, `stop`, `services`).

use anyhow::{bail, Context, Result};
use elastos_host::activator::StoreHelper;
use elastos_host::control::{ControlClient, ControlError, ControlRequest};
use elastos_host::logging::LogFormat;
use elastos_host::paths::{companion_binary, StateDirs};

use crate::cli::{BrokerArgs, Format};
use crate::commands::print_json;

/// `elastos broker`: becomes `elastos-broker daemon` (the one program that links RocksDB), with
/// the log level (as `ELASTOS_LOG`) and format given to `elastos`.
pub fn daemon(args: BrokerArgs, log_level: Option<&str>, log_format: LogFormat) -> Result<u8> {
    use std::os::unix::process::CommandExt;
    let broker = broker_binary()?;
    let mut command = std::process::Command::new(&broker.executable);
    command
        .arg("daemon")
        .arg("--idle-stop")
        .arg(args.idle_stop.to_string())
        .arg("--log-format")
        .arg(match log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        });
    if let Some(address) = args.metrics_addr {
        command.arg("--metrics-addr").arg(address.to_string());
    }
    if args.metrics_allow_non_loopback {
        command.arg("--metrics-allow-non-loopback");
    }
    command
        .arg("--log-max-size")
        .arg(args.log_max_size.to_string())
        .arg("--log-max-files")
        .arg(args.log_max_files.to_string())
        .arg("--warm-jails")
        .arg(args.warm_jails.to_string());
    if let Some(level) = log_level {
        command.env("ELASTOS_LOG", level);
    }
    let error = command.exec();
    Err(error).with_context(|| format!("cannot run {}", broker.executable.display()))
}

/// The `elastos-broker` binary (next to `elastos`, or `ELASTOS_BROKER`).
pub fn broker_binary() -> Result<StoreHelper> {
    let executable = companion_binary("ELASTOS_BROKER", "elastos-broker")?;
    let index = StateDirs::from_env()
        .ok()
        .map(|state| elastos_host::installed_index::index_path(&state.broker_db));
    Ok(StoreHelper { executable, index })
}

/// `install`, `uninstall`, `list`: through the daemon when it runs (it holds the database),
/// else on the database directly.
pub fn store_command(request: ControlRequest, state: &StateDirs, format: Format) -> Result<u8> {
    let value = match ControlClient::connect(&state.control_socket) {
        Some(client) => client.request(&request, &[])?,
        None => broker_binary()?.request(&request)?,
    };
    match format {
        Format::Json => print_json(&value)?,
        Format::Text => print_text(&request, &value),
    }
    Ok(0)
}

/// `services`: only a daemon has running apps to show.
pub fn daemon_command(request: ControlRequest, state: &StateDirs, format: Format) -> Result<u8> {
    let value = daemon_request(&request, state)?;
    match format {
        Format::Json => print_json(&value)?,
        Format::Text => print_text(&request, &value),
    }
    Ok(0)
}

/// Sends `request` to the daemon, which must run.
pub fn daemon_request(request: &ControlRequest, state: &StateDirs) -> Result<serde_json::Value> {
    match ControlClient::ask(&state.control_socket, request, &[]) {
        Err(ControlError::NotRunning { .. }) => bail!(
            "no broker daemon is running (control socket {}); apps started by `elastos run` \
             without a daemon use a broker embedded in their own `elastos run` process. Hint: \
             start one with `elastos broker`",
            state.control_socket.display()
        ),
        answer => Ok(answer?),
    }
}

/// Columns (header, JSON field) of each listing, for people.
fn columns(request: &ControlRequest) -> &'static [(&'static str, &'static str)] {
    match request {
        ControlRequest::Services => &[
            ("SERVICE", "service"),
            ("STATE", "state"),
            ("PROVIDER", "provider_name"),
            ("CONNECTION", "connection"),
            ("METHODS", "methods"),
            ("TOPICS", "topics"),
            ("SUBSCRIBERS", "subscribers"),
        ],
        _ => &[
            ("APP ID", "app_id"),
            ("NAME", "name"),
            ("VERSION", "version"),
            ("PROVIDES", "provides"),
            ("USES", "uses"),
        ],
    }
}

/// A table for people, podman style: a header and aligned columns.
fn print_text(request: &ControlRequest, value: &serde_json::Value) {
    let rows: Vec<&serde_json::Value> = match value {
        serde_json::Value::Array(rows) => rows.iter().collect(),
        other => vec![other],
    };
    print_table(columns(request), &rows);
}

/// A table for people, podman style: a header and aligned columns of `rows`' fields (header,
/// JSON field); null and empty fields show as `-`, arrays comma-separated.
pub fn print_table(columns: &[(&str, &str)], rows: &[&serde_json::Value]) {
    let cell = |row: &serde_json::Value, field: &str| match &row[field] {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) if items.is_empty() => "-".to_string(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let header = columns.iter().map(|(h, _)| h.to_string()).collect();
    let table: Vec<Vec<String>> = std::iter::once(header)
        .chain(
            rows.iter()
                .map(|row| columns.iter().map(|(_, f)| cell(row, f)).collect()),
        )
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
