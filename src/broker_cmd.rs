//! The broker commands: the daemon (`elastos broker`) and its clients (`install`, `uninstall`,
//! `list`, `ps`, `stop`, `services`), plus how `elastos run` connects an app to a broker: the
//! daemon when one runs, else a broker embedded in the `elastos run` process.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use elastos_broker::apps::{AppLauncher, StoreHelper};
use elastos_broker::control::{into_tokio, ControlClient, ControlRequest};
use elastos_broker::paths::{companion_binary, StateDirs};
use elastos_broker::{AppIdentity, Broker, BrokerConfig, Origin};

use crate::cli::{BrokerArgs, Format};
use crate::commands::print_json;

/// Where an app's connection goes.
pub enum BrokerLink {
    /// A running daemon; the app's end is handed over its control socket.
    Daemon(ControlClient),
    /// A broker embedded in this process (no daemon runs), on a thread of its own; it lives as
    /// long as the `elastos run` process.
    Embedded(tokio::sync::mpsc::UnboundedSender<(StdUnixStream, AppIdentity, u32)>),
}

impl BrokerLink {
    /// The daemon, if one listens.
    pub fn daemon(state: &StateDirs) -> Option<BrokerLink> {
        ControlClient::connect(&state.control_socket).map(BrokerLink::Daemon)
    }

    /// A new broker embedded in this process, which can activate installed apps. Its runtime
    /// runs on a thread of its own.
    pub fn embedded(launcher: Arc<AppLauncher>) -> Result<BrokerLink> {
        tracing::debug!("no broker daemon: using an embedded broker");
        let (attach_tx, mut attach_rx) =
            tokio::sync::mpsc::unbounded_channel::<(StdUnixStream, AppIdentity, u32)>();
        std::thread::Builder::new()
            .name("elastos-broker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the embedded broker");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let broker = Broker::new(BrokerConfig::default(), Some(Arc::new(launcher)));
                    while let Some((stream, identity, pid)) = attach_rx.recv().await {
                        match into_tokio(stream) {
                            Ok(stream) => {
                                broker.attach(
                                    stream,
                                    identity,
                                    Origin::Launched { pid: Some(pid) },
                                );
                            }
                            Err(e) => tracing::error!(error = %e, "cannot serve the app's socket"),
                        }
                    }
                    // The launcher is done with its app; keep serving activated providers until
                    // the process exits.
                    std::future::pending::<()>().await;
                });
            })
            .context("cannot start the embedded broker's thread")?;
        Ok(BrokerLink::Embedded(attach_tx))
    }

    /// Serves `stream` (the broker's end of an app's fd 3) as `identity`.
    pub fn attach(&self, stream: StdUnixStream, identity: AppIdentity, pid: u32) -> Result<()> {
        match self {
            BrokerLink::Daemon(client) => {
                let request = ControlRequest::Attach {
                    identity: identity.into(),
                    pid: Some(pid),
                };
                client
                    .request(&request, Some(stream.as_raw_fd()))
                    .context("attaching the app")?;
            }
            BrokerLink::Embedded(attach) => {
                attach
                    .send((stream, identity, pid))
                    .map_err(|_| anyhow::anyhow!("the embedded broker stopped"))?;
            }
        }
        Ok(())
    }
}

/// `elastos broker`: becomes `elastos-broker daemon` (the one program that links RocksDB).
pub fn daemon(args: BrokerArgs) -> Result<u8> {
    use std::os::unix::process::CommandExt;
    let broker = broker_binary()?;
    let error = std::process::Command::new(&broker.executable)
        .arg("daemon")
        .arg("--idle-stop")
        .arg(args.idle_stop.to_string())
        .exec();
    Err(error).with_context(|| format!("cannot run {}", broker.executable.display()))
}

/// The `elastos-broker` binary (next to `elastos`, or `ELASTOS_BROKER`).
pub fn broker_binary() -> Result<StoreHelper> {
    let executable = companion_binary("ELASTOS_BROKER", "elastos-broker")
        .context("cannot locate elastos-broker")?;
    Ok(StoreHelper { executable })
}

/// `install`, `uninstall`, `list`: through the daemon when it runs (it holds the database),
/// else on the database directly.
pub fn store_command(request: ControlRequest, state: &StateDirs, format: Format) -> Result<u8> {
    let value = match ControlClient::connect(&state.control_socket) {
        Some(client) => client.request(&request, None)?,
        None => broker_binary()?.request(&request)?,
    };
    match format {
        Format::Json => print_json(&value)?,
        Format::Text => print_text(&request, &value),
    }
    Ok(0)
}

/// `ps`, `stop`, `services`: only a daemon has running apps to show.
pub fn daemon_command(request: ControlRequest, state: &StateDirs, format: Format) -> Result<u8> {
    let Some(client) = ControlClient::connect(&state.control_socket) else {
        bail!(
            "no broker daemon is running (control socket {}); apps started by `elastos run` \
             without a daemon use a broker embedded in their own `elastos run` process. Hint: \
             start one with `elastos broker`",
            state.control_socket.display()
        );
    };
    let value = client.request(&request, None)?;
    match format {
        Format::Json => print_json(&value)?,
        Format::Text => print_text(&request, &value),
    }
    Ok(0)
}

/// Columns (header, JSON field) of each listing, for people.
fn columns(request: &ControlRequest) -> &'static [(&'static str, &'static str)] {
    match request {
        ControlRequest::Ps | ControlRequest::Stop { .. } => &[
            ("ID", "id"),
            ("APP ID", "app_id"),
            ("NAME", "name"),
            ("PID", "pid"),
            ("ORIGIN", "origin"),
            ("UPTIME", "uptime_secs"),
            ("SERVICES", "services"),
        ],
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
    let columns = columns(request);
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
