//! The measuring client, the same harness for every path:
//! `client PATH MODE CALLS TARGET...` with PATH `relay` (TARGET: the relay's socket), `elastos`
//! (the daemon's control socket, a client number) or `dbus` (the bus address), the elastos and
//! dbus TARGETs followed by `slow` to call the slow service instead of the echo service; MODE
//! `seq` (one call at a time, each timed), `flight:K` (K calls in flight, throughput only) or
//! `flood:K` (K calls in flight until killed; CALLS is ignored).
//!
//! It connects, makes [`WARMUP_CALLS`] calls, prints `ready`, waits for a line on stdin, makes
//! CALLS calls and prints a [`Outcome`] as one JSON line.

use std::cell::Cell;
use std::future::Future;
use std::io::BufRead;
use std::rc::Rc;
use std::time::Instant;

use crate::{arg, num_arg, PAYLOAD_LEN};

/// Calls made before measuring: connections, caches, allocator and scheduler settle.
pub const WARMUP_CALLS: u64 = 2_000;
/// The same against the slow service, whose calls take 0.5 ms or more each (and, for a client
/// that joins a flood of D-Bus calls, ~130 ms): the connection is what needs warming up.
pub const SLOW_WARMUP_CALLS: u64 = 20;

/// How calls are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One at a time; each call's round trip is recorded.
    Sequential,
    /// This many calls unanswered at any time; only the total time is recorded.
    InFlight(usize),
    /// This many calls unanswered at any time, a refused one sent again after 1 ms, until the
    /// process is killed: the flooder of the flood scenario.
    Flood(usize),
}

impl Mode {
    pub fn parse(text: &str) -> Result<Mode, String> {
        let in_flight = |k: &str| match k.parse() {
            Ok(k) if k > 0 => Ok(k),
            _ => Err(format!(
                "calls in flight must be a positive number, found {k:?}"
            )),
        };
        match text.split_once(':') {
            None if text == "seq" => Ok(Mode::Sequential),
            Some(("flight", k)) => in_flight(k).map(Mode::InFlight),
            Some(("flood", k)) => in_flight(k).map(Mode::Flood),
            _ => Err(format!(
                "mode must be `seq`, `flight:K` or `flood:K`, found {text:?}"
            )),
        }
    }

    pub fn to_arg(self) -> String {
        match self {
            Mode::Sequential => "seq".into(),
            Mode::InFlight(k) => format!("flight:{k}"),
            Mode::Flood(k) => format!("flood:{k}"),
        }
    }
}

/// What one client measured. Times are CLOCK_MONOTONIC nanoseconds, comparable between
/// processes, so that concurrent clients' spans can be merged.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub calls: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Round-trip percentiles, in sequential mode.
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    /// Calls answered with an error (RESOURCE_EXHAUSTED, a D-Bus error) instead of the echo, in
    /// sequential mode; they count in `calls` and their round trips in the percentiles.
    pub refused: u64,
}

impl Outcome {
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "calls": self.calls, "start_ns": self.start_ns, "end_ns": self.end_ns,
            "p50_ns": self.p50_ns, "p99_ns": self.p99_ns, "refused": self.refused,
        })
    }

    pub fn from_json(line: &str) -> Result<Outcome, String> {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("bad result line {line:?}: {e}"))?;
        let field = |name: &str| value.get(name).and_then(serde_json::Value::as_u64);
        let need = |name: &str| field(name).ok_or_else(|| format!("result without {name}: {line}"));
        Ok(Outcome {
            calls: need("calls")?,
            start_ns: need("start_ns")?,
            end_ns: need("end_ns")?,
            p50_ns: field("p50_ns"),
            p99_ns: field("p99_ns"),
            refused: need("refused")?,
        })
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// The `q` quantile (0 < q <= 1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn run(args: &[String]) -> Result<(), String> {
    let path = arg(args, 0, "path: relay, elastos or dbus")?;
    let mode = Mode::parse(arg(args, 1, "mode: seq or flight:K")?)?;
    let calls: u64 = num_arg(args, 2, "number of calls")?;
    let target = &args[3..];
    let outcome = match path {
        "relay" => crate::relay::client(target, mode, calls)?,
        "elastos" => crate::elastos::client(target, mode, calls)?,
        "dbus" => crate::dbus::client(target, mode, calls)?,
        other => return Err(format!("unknown path {other:?}")),
    };
    println!("{}", outcome.to_json());
    Ok(())
}

/// Says `ready` and blocks until the orchestrator's `go`.
pub fn ready_then_wait_for_go() -> Result<(), String> {
    crate::say_ready();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("waiting for go: {e}"))?;
    if line.trim() != "go" {
        return Err(format!("expected `go` from the orchestrator, got {line:?}"));
    }
    Ok(())
}

/// The request payload: 64 bytes, distinct enough to notice a wrong echo.
pub fn payload() -> Vec<u8> {
    (0..PAYLOAD_LEN as u8).collect()
}

/// Checks an echoed payload.
pub fn check_echo(reply: &[u8]) -> Result<(), String> {
    if reply.len() == PAYLOAD_LEN
        && reply[0] == 0
        && reply[PAYLOAD_LEN - 1] == PAYLOAD_LEN as u8 - 1
    {
        Ok(())
    } else {
        Err(format!(
            "the reply is not the echo of the request: {reply:?}"
        ))
    }
}

/// Warms up with `warmup` calls, waits for `go`, then measures, with `call` issuing one call (a
/// future per call, run on the current thread: the client's runtime is `current_thread`).
pub fn measure_async<F, Fut>(
    runtime: &tokio::runtime::Runtime,
    mode: Mode,
    (warmup, calls): (u64, u64),
    call: F,
) -> Result<Outcome, String>
where
    F: Fn(Vec<u8>) -> Fut + Clone + 'static,
    Fut: Future<Output = Result<Vec<u8>, String>> + 'static,
{
    let local = tokio::task::LocalSet::new();
    local.block_on(runtime, async {
        for _ in 0..warmup {
            check_echo(&call(payload()).await?)?;
        }
        Ok::<_, String>(())
    })?;
    ready_then_wait_for_go()?;
    local.block_on(runtime, async move {
        match mode {
            Mode::Sequential => {
                let mut samples = Vec::with_capacity(calls as usize);
                let mut refused = 0;
                let start_ns = monotonic_ns();
                for _ in 0..calls {
                    let started = Instant::now();
                    let reply = call(payload()).await;
                    samples.push(started.elapsed().as_nanos() as u64);
                    match reply {
                        Ok(reply) => check_echo(&reply)?,
                        Err(_) => refused += 1,
                    }
                }
                let mut outcome = sequential_outcome(start_ns, samples);
                outcome.refused = refused;
                Ok(outcome)
            }
            Mode::Flood(k) => {
                let workers: Vec<_> = (0..k)
                    .map(|_| {
                        let call = call.clone();
                        tokio::task::spawn_local(async move {
                            loop {
                                if call(payload()).await.is_err() {
                                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                                }
                            }
                        })
                    })
                    .collect();
                for worker in workers {
                    worker
                        .await
                        .map_err(|e| format!("a flooding task failed: {e}"))?;
                }
                Err("the flood ended".into())
            }
            Mode::InFlight(k) => {
                let left = Rc::new(Cell::new(calls));
                let start_ns = monotonic_ns();
                let workers: Vec<_> = (0..k)
                    .map(|_| {
                        let (left, call) = (Rc::clone(&left), call.clone());
                        tokio::task::spawn_local(async move {
                            while left.get() > 0 {
                                left.set(left.get() - 1);
                                check_echo(&call(payload()).await?)?;
                            }
                            Ok::<_, String>(())
                        })
                    })
                    .collect();
                for worker in workers {
                    worker
                        .await
                        .map_err(|e| format!("a caller task failed: {e}"))??;
                }
                Ok(Outcome {
                    calls,
                    start_ns,
                    end_ns: monotonic_ns(),
                    p50_ns: None,
                    p99_ns: None,
                    refused: 0,
                })
            }
        }
    })
}

/// The outcome of a sequential run that started at `start_ns` and recorded `samples`.
pub fn sequential_outcome(start_ns: u64, mut samples: Vec<u64>) -> Outcome {
    let end_ns = monotonic_ns();
    samples.sort_unstable();
    Outcome {
        calls: samples.len() as u64,
        start_ns,
        end_ns,
        p50_ns: Some(quantile(&samples, 0.50)),
        p99_ns: Some(quantile(&samples, 0.99)),
        refused: 0,
    }
}
