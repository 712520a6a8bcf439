//! `elastos-broker`: the broker daemon and the one program that opens the broker's RocksDB
//! database (a crate of its own so that nothing else links RocksDB, whose static initializers
//! would slow every `elastos` start). The `elastos` CLI runs it for `elastos broker` and, when no daemon runs, for the
//! database requests of `install`, `uninstall`, `list` and of on-demand activation.
//!
//! ```text
//! elastos-broker daemon [--idle-stop SECONDS]
//! elastos-broker request '{"op":"list"}'     # one ControlRequest; prints the JSON result
//! ```
//! Exit codes: 0 success, 125 failure (the message on stderr), 2 bad arguments.

#![deny(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

mod daemon;
mod install;
mod store;

use elastos_host::control::ControlRequest;
use elastos_host::paths::StateDirs;

use crate::store::Store;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ELASTOS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["daemon"] => daemon(None),
        ["daemon", "--idle-stop", seconds] => match seconds.parse::<u64>() {
            Ok(0) => daemon(Some(None)),
            Ok(s) => daemon(Some(Some(Duration::from_secs(s)))),
            Err(_) => usage(&format!(
                "--idle-stop takes whole seconds, found {seconds:?}"
            )),
        },
        ["request", json] => request(json),
        _ => usage("expected `daemon [--idle-stop SECONDS]` or `request JSON`"),
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
        format!("{message}; this program is normally run by `elastos`"),
    ))
}

fn failed(error: impl std::error::Error) -> (u8, String) {
    (125, elastos_host::describe_error(&error))
}

fn daemon(idle_stop: Option<Option<Duration>>) -> Outcome {
    let state = StateDirs::from_env().map_err(failed)?;
    let idle_stop = idle_stop.unwrap_or(elastos_broker::BrokerConfig::default().idle_stop_after);
    daemon::run(&state, idle_stop).map_err(failed)
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
