//! `elastos-broker`: the broker daemon and the one program that opens the broker's RocksDB
//! database (a crate of its own so that nothing else links RocksDB, whose static initializers
//! would slow every `elastos` start). The `elastos` CLI runs it for `elastos broker` and, when no daemon runs, for the
//! database requests of `install`, `uninstall`, `list` and of on-demand activation.
//!
//! ```text
//! elastos-broker daemon [--idle-stop SECONDS] [--log-format text|json]
//!                       [--metrics-addr ADDRESS:PORT [--metrics-allow-non-loopback]]
//!                       [--log-max-size BYTES] [--log-max-files N] [--warm-jails N]
//! elastos-broker request '{"op":"list"}'     # one ControlRequest; prints the JSON result
//! ```
//! Under systemd (dist/), the daemon speaks sd_notify and takes its control socket from socket
//! activation ([`systemd`]). Logs: `ELASTOS_LOG` (default `info` for the daemon, `warn` for
//! `request`).
//! Exit codes: 0 success, 125 failure (the message on stderr), 2 bad arguments.

#![deny(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

mod cloud;
mod daemon;
mod install;
mod metrics;
mod ondemand;
mod store;
mod supervisor;
mod systemd;

use elastos_host::applog::LogLimits;
use elastos_host::control::ControlRequest;
use elastos_host::logging::{self, LogFormat};
use elastos_host::paths::StateDirs;

use crate::daemon::DaemonOptions;
use crate::store::Store;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["daemon", options @ ..] => parse_daemon(options).and_then(|(options, format)| {
            logging::init(logging::filter(None, "info"), format);
            daemon(&options)
        }),
        ["request", json] => {
            logging::init(logging::filter(None, "warn"), LogFormat::Text);
            request(json)
        }
        _ => usage("expected `daemon [OPTIONS]` or `request JSON`"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("elastos-broker: {message}");
            ExitCode::from(code)
        }
    }
}

type Outcome = Result<(), (u8, String)>;

fn usage(message: &str) -> Outcome {
    Err((
        2,
        format!("{message}; this program is normally run by `elastos` or by systemd"),
    ))
}

/// The daemon's options and log format from its arguments.
fn parse_daemon(args: &[&str]) -> Result<(DaemonOptions, LogFormat), (u8, String)> {
    let bad = |message: String| (2, message);
    let mut options = DaemonOptions {
        idle_stop: elastos_broker::BrokerConfig::default().idle_stop_after,
        metrics_addr: None,
        log_limits: LogLimits::default(),
        warm_jails: elastos_host::pool::DEFAULT_POOL_SIZE,
    };
    let (mut log_file_bytes, mut log_files) = (
        options.log_limits.max_file_bytes,
        options.log_limits.max_files,
    );
    let mut format = LogFormat::Text;
    let mut allow_non_loopback = false;
    let mut args = args.iter();
    while let Some(&option) = args.next() {
        let mut value = || {
            args.next()
                .copied()
                .ok_or_else(|| bad(format!("{option} needs a value")))
        };
        match option {
            "--idle-stop" => {
                let seconds = value()?;
                options.idle_stop = match seconds.parse::<u64>() {
                    Ok(0) => None,
                    Ok(s) => Some(Duration::from_secs(s)),
                    Err(_) => {
                        return Err(bad(format!(
                            "--idle-stop takes whole seconds, found {seconds:?}"
                        )))
                    }
                }
            }
            "--log-format" => format = value()?.parse().map_err(bad)?,
            "--metrics-addr" => {
                let address = value()?;
                options.metrics_addr = Some(address.parse().map_err(|_| {
                    bad(format!(
                        "--metrics-addr takes ADDRESS:PORT (e.g. 127.0.0.1:9464), found \
                         {address:?}"
                    ))
                })?)
            }
            "--metrics-allow-non-loopback" => allow_non_loopback = true,
            "--warm-jails" => {
                let count = value()?;
                options.warm_jails = count.parse().map_err(|_| {
                    bad(format!(
                        "--warm-jails takes a whole number (0: none), found {count:?}"
                    ))
                })?
            }
            "--log-max-size" => {
                let bytes = value()?;
                log_file_bytes = bytes
                    .parse()
                    .map_err(|_| bad(format!("--log-max-size takes bytes, found {bytes:?}")))?
            }
            "--log-max-files" => {
                let count = value()?;
                log_files = count.parse().map_err(|_| {
                    bad(format!(
                        "--log-max-files takes a whole number, found {count:?}"
                    ))
                })?
            }
            other => {
                return Err(bad(format!(
                    "unknown daemon option {other:?}; expected --idle-stop, --log-format, \
                     --metrics-addr, --metrics-allow-non-loopback, --log-max-size, \
                     --log-max-files or --warm-jails"
                )))
            }
        }
    }
    options.log_limits = LogLimits::new(log_file_bytes, log_files).map_err(bad)?;
    if let Some(address) = options.metrics_addr {
        metrics::check_address(address, allow_non_loopback).map_err(bad)?;
    }
    Ok((options, format))
}

fn failed(error: impl std::error::Error) -> (u8, String) {
    (125, elastos_host::describe_error(&error))
}

fn daemon(options: &DaemonOptions) -> Outcome {
    let state = StateDirs::from_env().map_err(failed)?;
    daemon::run(&state, options).map_err(failed)
}

fn request(json: &str) -> Outcome {
    let request: ControlRequest =
        serde_json::from_str(json).map_err(|e| (2, format!("not a control request: {e}")))?;
    let state = StateDirs::from_env().map_err(failed)?;
    let result = match request {
        // Read-only requests never take the writer's lock, so they work next to a daemon.
        ControlRequest::ProviderOf { .. } | ControlRequest::List => {
            match Store::open_read_only(&state.broker_db).map_err(failed)? {
                Some(store) => daemon::store_request(request, &store, &state.apps),
                None => Ok(match request {
                    ControlRequest::List => serde_json::json!([]),
                    _ => serde_json::Value::Null,
                }),
            }
        }
        _ => {
            let store = Store::open(&state.broker_db).map_err(failed)?;
            daemon::store_request(request, &store, &state.apps)
        }
    }
    .map_err(failed)?;
    println!("{result}");
    Ok(())
}
