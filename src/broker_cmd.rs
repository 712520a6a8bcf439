//! The broker commands: the daemon (`elastos broker`) and its clients (`install`, `uninstall`,
//! `list`, `ps`, `stop`, `services`), plus how `elastos run` connects an app to a broker: the
//! daemon when one runs, else a broker embedded in the `elastos run` process.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use elastos_broker::apps::{self, AppLauncher, StoreAccess};
use elastos_broker::control::{self, ControlClient, ControlRequest};
use elastos_broker::store::Store;
use elastos_broker::{AppIdentity, Broker, BrokerConfig, Origin};
use elastos_loader::BlockedSignals;
use serde::Serialize;

use crate::cli::{BrokerArgs, Format};
use crate::commands::print_json;
use crate::state::StateDirs;

/// Where an app's connection goes.
pub enum BrokerLink {
    /// A running daemon; the app's end is handed over its control socket.
    Daemon(ControlClient),
    /// A broker embedded in this process (no daemon runs), on a thread of its own; it lives as
    /// long as the `elastos run` process.
    Embedded(tokio::sync::mpsc::UnboundedSender<(StdUnixStream, AppIdentity, u32)>),
}

impl BrokerLink {
    /// The daemon if one listens, else a new embedded broker that can activate installed apps.
    /// The embedded broker's runtime starts on its own thread, in parallel with the jail.
    pub fn connect(state: &StateDirs, launcher: Arc<AppLauncher>) -> Result<BrokerLink> {
        if let Some(client) = ControlClient::connect(&state.control_socket) {
            return Ok(BrokerLink::Daemon(client));
        }
        tracing::debug!("no broker daemon: using an embedded broker");
        let (attach_tx, mut attach_rx) =
            tokio::sync::mpsc::unbounded_channel::<(StdUnixStream, AppIdentity, u32)>();
        std::thread::Builder::new()
            .name("elastos-broker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build()
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
                        match tokio_stream(stream) {
                            Ok(stream) => {
                                broker.attach(stream, identity, Origin::Launched { pid: Some(pid) });
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
                let request = ControlRequest::Attach { identity: identity.into(), pid: Some(pid) };
                client.request(&request, Some(stream.as_raw_fd())).context("attaching the app")?;
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

fn tokio_stream(stream: StdUnixStream) -> std::io::Result<tokio::net::UnixStream> {
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

/// `elastos broker`: serves apps and control requests until SIGINT/SIGTERM.
pub fn daemon(args: BrokerArgs, state: &StateDirs) -> Result<u8> {
    let store = Arc::new(Store::open(&state.broker_db)?);
    let socket = &state.control_socket;
    let dir = socket.parent().context("control socket path has no directory")?;
    apps::create_private_dir(dir)?;
    if ControlClient::connect(socket).is_some() {
        bail!("a broker daemon already listens on {}", socket.display());
    }
    let _ = std::fs::remove_file(socket);
    // Blocked before the runtime's threads exist, so they inherit it: SIGINT and SIGTERM reach
    // only the wait at the end (no tokio signal driver: it needs a socketpair, which a jailed app
    // linking the same tokio could not create).
    let signals = BlockedSignals::block()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("elastos-broker")
        .enable_all()
        .build()
        .context("cannot start the broker's runtime")?;
    let launcher = Arc::new(AppLauncher::new(
        state.apps.clone(),
        StoreAccess::Shared(store.clone()),
        crate::commands::launch_options(false, false)?,
        crate::commands::host_env(),
    ));
    let config = BrokerConfig {
        idle_stop_after: (args.idle_stop > 0).then(|| Duration::from_secs(args.idle_stop)),
        ..BrokerConfig::default()
    };
    let broker = Broker::new(config, Some(Arc::new(launcher)));
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    listener.set_nonblocking(true)?;
    eprintln!("elastos broker: listening on {}", socket.display());
    let dirs = state.apps.clone();
    runtime.spawn(async move {
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the control socket");
                return;
            }
        };
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (broker, store, dirs) = (broker.clone(), store.clone(), dirs.clone());
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                serve_control(stream, &broker, &store, &dirs, &handle)
            });
        }
    });
    loop {
        let signal = signals.next()?;
        if signal != nix::sys::signal::Signal::SIGCHLD {
            eprintln!("elastos broker: {signal}, stopping");
            break;
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_file(socket);
    Ok(0)
}

/// One control connection (blocking; the requests are rare and short).
fn serve_control(
    stream: tokio::net::UnixStream,
    broker: &Broker,
    store: &Store,
    dirs: &apps::AppDirs,
    handle: &tokio::runtime::Handle,
) {
    let Ok(stream) = stream.into_std() else { return };
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    if !control::peer_allowed(&stream) {
        tracing::warn!("control connection from another user refused");
        let _ = control::write_response(&stream, Err("permission denied".into()));
        return;
    }
    let result = match control::read_request(&stream) {
        Err(e) => Err(e.to_string()),
        Ok((request, fd)) => handle_request(request, fd, broker, store, dirs, handle),
    };
    let _ = control::write_response(&stream, result);
}

fn to_json(value: impl Serialize) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

fn handle_request(
    request: ControlRequest,
    fd: Option<std::os::fd::OwnedFd>,
    broker: &Broker,
    store: &Store,
    dirs: &apps::AppDirs,
    handle: &tokio::runtime::Handle,
) -> Result<serde_json::Value, String> {
    match request {
        ControlRequest::Attach { identity, pid } => {
            let fd = fd.ok_or("attach needs the app's socket passed along (SCM_RIGHTS)")?;
            let identity = AppIdentity::try_from(identity).map_err(|e| e.to_string())?;
            let _guard = handle.enter();
            let stream = tokio_stream(StdUnixStream::from(fd)).map_err(|e| e.to_string())?;
            let id = broker.attach(stream, identity, Origin::Launched { pid });
            to_json(id.0)
        }
        ControlRequest::Install { bundle } => {
            to_json(apps::install(&bundle, dirs, store).map_err(|e| e.to_string())?)
        }
        ControlRequest::Uninstall { app_id } => {
            to_json(apps::uninstall(app_id, store).map_err(|e| e.to_string())?)
        }
        ControlRequest::List => to_json(store.installed().map_err(|e| e.to_string())?),
        ControlRequest::Ps => {
            to_json(broker.apps().iter().map(control::AppView::from).collect::<Vec<_>>())
        }
        ControlRequest::Services => {
            let installed = store.installed().map_err(|e| e.to_string())?;
            to_json(control::service_views(broker, &installed))
        }
        ControlRequest::Stop { id } => {
            let matching: Vec<_> = broker
                .apps()
                .into_iter()
                .filter(|app| app.id.to_string() == id || app.app_id.to_string() == id)
                .collect();
            if matching.is_empty() {
                return Err(format!(
                    "no running app with connection id or app id {id}; `elastos ps` lists them"
                ));
            }
            for app in &matching {
                // Its jail ends its app; the broker closes the connection (and an activated
                // app's supervisor is told through the activator).
                if let Some(pid) = app.origin.pid() {
                    elastos_loader::stop_jail(pid as i32);
                }
                broker.disconnect(app.id);
            }
            to_json(matching.iter().map(control::AppView::from).collect::<Vec<_>>())
        }
    }
}

/// `install`, `uninstall`, `list`: through the daemon when it runs (it holds the database),
/// else on the database directly.
pub fn store_command(request: ControlRequest, state: &StateDirs, format: Format) -> Result<u8> {
    let value = match ControlClient::connect(&state.control_socket) {
        Some(client) => client.request(&request, None)?,
        None => {
            let request = request.clone();
            let store = Store::open(&state.broker_db)?;
            let dirs = &state.apps;
            match request {
                ControlRequest::Install { bundle } => {
                    serde_json::to_value(apps::install(&bundle, dirs, &store)?)?
                }
                ControlRequest::Uninstall { app_id } => {
                    serde_json::to_value(apps::uninstall(app_id, &store)?)?
                }
                ControlRequest::List => serde_json::to_value(store.installed()?)?,
                _ => unreachable!("only store requests come here"),
            }
        }
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
        .chain(rows.iter().map(|row| columns.iter().map(|(_, f)| cell(row, f)).collect()))
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| table.iter().map(|row| row[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &table {
        let line: Vec<String> =
            row.iter().zip(&widths).map(|(text, width)| format!("{text:<width$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}
