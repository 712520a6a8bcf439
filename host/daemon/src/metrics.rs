//! The daemon's Prometheus metrics: the broker core's counters ([`Broker::metrics`]) and the
//! running apps in the text exposition format, answered on the control socket (`elastos
//! metrics`) and, when `--metrics-addr` asks for it, over HTTP on a loopback port.
//!
//! The HTTP side is the least a scraper needs: `GET /metrics`, one request per connection,
//! the request head bounded in size ([`MAX_REQUEST_HEAD`]) and time ([`REQUEST_TIMEOUT`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use elastos_broker::{Broker, Origin};
use elastos_host::pool::{JailPool, PoolStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest HTTP request head read, in bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a scrape connection may take to send its request and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `--metrics-addr` may listen on `address`: loopback only, unless `allow_any`. The
/// endpoint has no authentication, and the metrics show what the broker is doing.
pub fn check_address(address: SocketAddr, allow_any: bool) -> Result<(), String> {
    if address.ip().is_loopback() || allow_any {
        return Ok(());
    }
    Err(format!(
        "--metrics-addr {address} is not a loopback address; the metrics endpoint has no \
         authentication (hint: use 127.0.0.1:PORT, or add --metrics-allow-non-loopback to \
         serve it beyond this machine anyway)"
    ))
}

/// The metrics in Prometheus' text exposition format (version 0.0.4).
pub fn exposition(broker: &Broker, started: SystemTime, pool: Option<PoolStats>) -> String {
    let metrics = broker.metrics();
    let apps = broker.apps();
    let activated = apps
        .iter()
        .filter(|app| matches!(app.origin, Origin::Activated { .. }))
        .count();
    let mut out = String::new();
    let name = "elastos_apps_running";
    let _ = writeln!(
        out,
        "# HELP {name} Apps connected to the broker, by how they were started.\n# TYPE {name} \
         gauge\n{name}{{origin=\"launched\"}} {}\n{name}{{origin=\"activated\"}} {activated}",
        apps.len() - activated
    );
    let counters: [(&str, &str, u64); 5] = [
        (
            "elastos_calls_total",
            "Calls received from apps (denied and refused ones included).",
            metrics.calls,
        ),
        (
            "elastos_activations_total",
            "Activations of installed providers begun.",
            metrics.activations,
        ),
        (
            "elastos_activation_failures_total",
            "Activations that ended without the provider registering its service.",
            metrics.activation_failures,
        ),
        (
            "elastos_app_restarts_total",
            "Providers activated again after an earlier instance ended.",
            metrics.restarts,
        ),
        (
            "elastos_connections_total",
            "App connections attached to the broker.",
            metrics.connections,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let name = "elastos_denials_total";
    let _ = writeln!(
        out,
        "# HELP {name} Requests denied by the app's manifest (or its publisher pins), by \
         action.\n# TYPE {name} counter"
    );
    for (action, count) in metrics.denials {
        let _ = writeln!(out, "{name}{{action=\"{action}\"}} {count}");
    }
    let name = "elastos_call_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Calls answered by their provider: from routing the call to queueing the \
         reply for the caller.\n# TYPE {name} histogram"
    );
    for (bound_us, count) in metrics.latency_buckets {
        let bound = bound_us as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {answered}\n{name}_sum {sum}\n{name}_count {answered}",
        answered = metrics.answered,
        sum = metrics.latency_sum.as_secs_f64()
    );
    if let Some(pool) = pool {
        let gauges = [
            (
                "elastos_warm_jails_size",
                "Warm jails kept per kind of start (detached runs, activations).",
                pool.size as u64,
            ),
            (
                "elastos_warm_jails_parked",
                "Warm jails parked now, ready for a start.",
                pool.parked as u64,
            ),
            (
                "elastos_warm_jails_idle_pss_bytes",
                "Proportional set size of the parked warm jails' processes.",
                pool.idle_pss_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let name = "elastos_starts_total";
        let _ = writeln!(
            out,
            "# HELP {name} Detached runs and activations dispatched, by whether a warm jail was \
             free.\n# TYPE {name} counter\n{name}{{jail=\"warm\"}} {}\n{name}{{jail=\"cold\"}} {}",
            pool.warm_starts, pool.cold_starts
        );
        let name = "elastos_warm_jail_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Warm jails that could not be made.\n# TYPE {name} counter\n{name} {}",
            pool.spawn_failures
        );
    }
    if let Some(resident) = elastos_host::control::resident_bytes() {
        let name = "process_resident_memory_bytes";
        let _ = writeln!(
            out,
            "# HELP {name} Resident memory of the daemon.\n# TYPE {name} gauge\n{name} {resident}"
        );
    }
    if let Ok(since_epoch) = started.duration_since(SystemTime::UNIX_EPOCH) {
        let name = "process_start_time_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} When the daemon started, in seconds since the Unix epoch.\n# TYPE \
             {name} gauge\n{name} {}",
            since_epoch.as_secs()
        );
    }
    out
}

/// Serves `GET /metrics` on `listener` until the runtime stops.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    broker: Broker,
    started: SystemTime,
    pool: JailPool,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (broker, pool) = (broker.clone(), pool.clone());
        tokio::spawn(async move {
            let answered =
                tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &broker, started, &pool))
                    .await;
            if let Ok(Err(error)) = answered {
                tracing::debug!(%error, "metrics connection");
            }
        });
    }
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    broker: &Broker,
    started: SystemTime,
    pool: &JailPool,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = request_line.split(|&b| b == b' ');
    let (status, content_type, body) = match (words.next(), words.next()) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            exposition(broker, started, Some(pool.stats())),
        ),
        (Some(b"GET"), _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "the metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics is served\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
