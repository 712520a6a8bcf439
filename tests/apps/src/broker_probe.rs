//! `elastos-broker-probe`: the test app of the broker's end-to-end tests (tests/broker.rs). One
//! binary plays every part, chosen by its first argument:
//!
//! ```text
//! elastos-broker-probe serve SERVICE..   provide each SERVICE (methods below) until the broker
//!                                        closes the connection; logs to stderr only
//! elastos-broker-probe client STEP..     steps through the SDK, in order
//! elastos-broker-probe raw STEP..        steps speaking the wire protocol by hand on fd 3,
//!                                        including hostile ones (garbage, fd passing, floods)
//! elastos-broker-probe exit CODE         exits with CODE at once: a provider that ends before
//!                                        it registers
//! (no arguments)                         the arguments are the lines of /app/activate.args: how
//!                                        a provider the broker activates (with no argv) knows
//!                                        what to serve
//! ```
//!
//! Every step prints one JSON line on stdout:
//! `{"step":..,"outcome":..,"detail":..,"ms":..,"us":..,"expected":..,"pass":..}`. `outcome` is `OK`, a
//! status name (`NOT_FOUND`, `PERMISSION_DENIED`, ..) or a word the step documents (`TIMEOUT`,
//! `CLOSED`, ..); `ms` is how long the step took (`us` the same in µs). A step written `STEP=OUTCOME` expects that
//! outcome (`pass` says whether it came). Exit code: 0 every expectation was met, 1 one was not,
//! 2 bad arguments, 3 no connection to the broker.
//!
//! The served service answers the methods `echo` (the payload back), `sleep` (the payload is a
//! number of milliseconds; counts the calls cancelled before they end), `stats`
//! (`cancelled=N`), `fail` (the payload names the status to fail with), `caller` (the caller's
//! attested name and app id), `publish` (publishes the payload on topic `tick`) and `die` (the
//! provider exits at once, mid-call, with code 42).
//!
//! Harmless even when nothing confines it: it only talks on fd 3 (the broker socket), and the
//! one fd it tries to pass along is its own stdin.

#![deny(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use elastos_proto::v1::broker_frame::Body as BrokerBody;
use elastos_proto::v1::client_frame::Body as ClientBody;
use elastos_proto::v1::{self, BrokerFrame, ClientFrame};
use elastos_proto::{encode_frame, FrameDecoder};
use elastos_sdk::{
    Code, Context, Error, GoneReason, IncomingCall, Service, ServiceHandler, Status, Subscription,
    Uuid, Watch,
};

/// Methods of the served service.
const METHODS: &[&str] = &["echo", "sleep", "stats", "fail", "caller", "publish", "die"];
/// Its one event topic.
const TOPIC: &str = "tick";
/// Exit code of a provider told to `die`.
const DIED: i32 = 42;
/// Where an activated instance finds its arguments.
const ACTIVATE_ARGS: &str = "/app/activate.args";
/// Every status code, to fail with one by name.
const CODES: &[Code] = &[
    Code::NotFound,
    Code::PermissionDenied,
    Code::Unavailable,
    Code::DeadlineExceeded,
    Code::Cancelled,
    Code::InvalidArgument,
    Code::Internal,
    Code::ResourceExhausted,
];

/// Exit codes.
const EXPECTATION_UNMET: i32 = 1;
const USAGE: i32 = 2;
const NO_BROKER: i32 = 3;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        match std::fs::read_to_string(ACTIVATE_ARGS) {
            Ok(text) => args = text.lines().map(str::to_owned).collect(),
            Err(e) => fail(USAGE, &format!("no arguments and no {ACTIVATE_ARGS}: {e}")),
        }
    }
    let Some((role, rest)) = args.split_first() else {
        fail(USAGE, "missing role: serve, client or raw");
    };
    let code = match role.as_str() {
        "serve" => runtime().block_on(serve(rest)),
        "client" => runtime().block_on(client(rest)),
        "raw" => raw(rest),
        "exit" => match rest.first().map(|code| code.parse::<i32>()) {
            Some(Ok(code)) => code,
            _ => fail(USAGE, "exit: expected the exit code"),
        },
        other => fail(
            USAGE,
            &format!("unknown role {other:?}; expected serve, client, raw or exit"),
        ),
    };
    std::process::exit(code);
}

fn fail(code: i32, message: &str) -> ! {
    eprintln!("elastos-broker-probe: {message}");
    std::process::exit(code);
}

/// A `current_thread` runtime: the SDK needs no more, and the jail bounds threads.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(NO_BROKER, &format!("cannot start a tokio runtime: {e}")))
}

fn uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).unwrap_or_else(|e| fail(USAGE, &format!("bad UUID {text:?}: {e}")))
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> T {
    text.parse()
        .unwrap_or_else(|_| fail(USAGE, &format!("bad {what} {text:?}: expected a number")))
}

// ---------------------------------------------------------------------------------------------
// Reporting

/// The steps' record: prints each as it ends, remembers whether every expectation held.
#[derive(Default)]
struct Report {
    unmet: bool,
}

impl Report {
    fn line(&mut self, step: &Step, outcome: &str, detail: &str, started: Instant) {
        let pass = step.expected.as_deref().is_none_or(|e| e == outcome);
        self.unmet |= !pass;
        let line = serde_json::json!({
            "step": step.text,
            "outcome": outcome,
            "detail": detail,
            "ms": started.elapsed().as_millis() as u64,
            "us": started.elapsed().as_micros() as u64,
            "expected": step.expected,
            "pass": pass,
        });
        println!("{line}");
    }

    fn exit_code(&self) -> i32 {
        if self.unmet {
            EXPECTATION_UNMET
        } else {
            0
        }
    }
}

/// One `op:arg:arg[=EXPECTED]` word.
struct Step {
    text: String,
    op: String,
    args: Vec<String>,
    expected: Option<String>,
}

impl Step {
    fn parse(word: &str) -> Step {
        let (text, expected) = match word.split_once('=') {
            Some((text, expected)) => (text, Some(expected.to_owned())),
            None => (word, None),
        };
        let mut parts = text.split(':').map(str::to_owned);
        Step {
            op: parts.next().unwrap_or_default(),
            args: parts.collect(),
            text: text.to_owned(),
            expected,
        }
    }

    /// Argument `i`, or a usage error naming the step.
    fn arg(&self, i: usize) -> &str {
        self.args.get(i).unwrap_or_else(|| {
            fail(
                USAGE,
                &format!("step {:?} lacks argument {}", self.text, i + 1),
            )
        })
    }

    fn service(&self) -> Uuid {
        uuid(self.arg(0))
    }
}

/// The outcome word of an SDK error: its status name, else `DISCONNECTED` or `ERROR`.
fn outcome_of(error: &Error) -> String {
    match (error.code(), error) {
        (Some(code), _) => code.as_str().to_owned(),
        (None, Error::Disconnected(_)) => "DISCONNECTED".to_owned(),
        (None, _) => "ERROR".to_owned(),
    }
}

fn gone_name(reason: GoneReason) -> &'static str {
    match reason {
        GoneReason::Unregistered => "UNREGISTERED",
        GoneReason::Disconnected => "DISCONNECTED",
        GoneReason::Stopped => "STOPPED",
        _ => "OTHER",
    }
}

/// At most 200 characters of a payload, as text.
fn shown(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).chars().take(200).collect()
}

// ---------------------------------------------------------------------------------------------
// serve

/// The served service. `cancelled` counts `sleep` calls whose handler was dropped before it
/// finished (the broker cancelled them: deadline, caller's cancel, caller gone).
struct Probe {
    ctx: Context,
    cancelled: Arc<AtomicU64>,
}

/// Counts a cancellation when dropped while still armed.
struct CancelCounter(Option<Arc<AtomicU64>>);

impl Drop for CancelCounter {
    fn drop(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl ServiceHandler for Probe {
    fn handle(
        &self,
        call: IncomingCall,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, Status>> + Send {
        let ctx = self.ctx.clone();
        let cancelled = Arc::clone(&self.cancelled);
        async move {
            match call.method.as_str() {
                "echo" => Ok(call.payload),
                "sleep" => {
                    let millis: u64 = String::from_utf8_lossy(&call.payload)
                        .parse()
                        .map_err(|_| Status::invalid_argument("sleep wants milliseconds"))?;
                    let mut counter = CancelCounter(Some(cancelled));
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    counter.0 = None;
                    Ok(b"slept".to_vec())
                }
                "stats" => {
                    Ok(format!("cancelled={}", cancelled.load(Ordering::SeqCst)).into_bytes())
                }
                "fail" => {
                    let name = String::from_utf8_lossy(&call.payload);
                    let code = CODES
                        .iter()
                        .find(|code| code.as_str() == name)
                        .ok_or_else(|| Status::invalid_argument(format!("no status {name}")))?;
                    Err(Status::new(*code, "probe failure"))
                }
                "caller" => {
                    Ok(format!("{} {}", call.caller.app_name, call.caller.app_id).into_bytes())
                }
                "publish" => {
                    ctx.publish(call.service, TOPIC, call.payload)
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?;
                    Ok(b"published".to_vec())
                }
                "die" => std::process::exit(DIED),
                other => Err(Status::internal(format!(
                    "the broker routed method {other:?}, which was not registered"
                ))),
            }
        }
    }
}

async fn serve(services: &[String]) -> i32 {
    if services.is_empty() {
        fail(USAGE, "serve: no service to provide");
    }
    let ctx = match Context::from_env().await {
        Ok(ctx) => ctx,
        Err(e) => fail(NO_BROKER, &format!("serve: {e}")),
    };
    let cancelled = Arc::new(AtomicU64::new(0));
    for service in services {
        let probe = Probe {
            ctx: ctx.clone(),
            cancelled: Arc::clone(&cancelled),
        };
        if let Err(e) = ctx.register(uuid(service), METHODS, &[TOPIC], probe).await {
            eprintln!("elastos-broker-probe: serve: register {service}: {e}");
            return EXPECTATION_UNMET;
        }
    }
    eprintln!("elastos-broker-probe: serving {}", services.join(" "));
    let reason = ctx.closed().await;
    eprintln!("elastos-broker-probe: serve: done ({reason})");
    0
}

// ---------------------------------------------------------------------------------------------
// client

/// What earlier steps left for later ones: looked-up services (for `gone`), subscriptions (for
/// `event`) and watches (for `available`).
struct Client {
    ctx: Context,
    services: HashMap<Uuid, Service>,
    subscriptions: HashMap<Uuid, Subscription>,
    watches: HashMap<Uuid, Watch>,
}

/// Client steps (`S` a service UUID, times in milliseconds):
///
/// | step | does | outcome, detail |
/// |------|------|-----------------|
/// | `lookup:S` | looks S up (kept for `gone`) | provider name |
/// | `call:S:METHOD[:PAYLOAD[:DEADLINE]]` | one call | reply as text |
/// | `big:S:BYTES` | echoes BYTES patterned bytes | `MISMATCH` if they differ |
/// | `register:S` | registers S (method `echo`) | |
/// | `subscribe:S[:TOPIC]` / `event:S:WAIT` | subscribes to TOPIC (default `tick`) / waits for an event | payload; `TIMEOUT`, `ENDED` |
/// | `cloudevent:WAIT` | waits for an event of the broker's cloud service (after `subscribe:CLOUD:Changes`) | the `HomeChanged` as JSON (`version`, `changed`, `deleted`, `conflicts` as `[path, copy]`, paths as text); `TIMEOUT`, `ENDED` |
/// | `watch:S` / `available:S:WAIT` | watches S / waits for a provider | provider name; `TIMEOUT`, `ENDED` |
/// | `gone:S:WAIT` | waits for the provider of the last lookup of S to go | reason; `TIMEOUT` |
/// | `drop:S:AFTER` | calls `sleep` 10 s, drops the call after AFTER | `DROPPED` |
/// | `inflight:S:N:SLEEP` | N `sleep` calls at once | `OK=n,CODE=m..` (sorted) |
/// | `load:S:CONCURRENCY:TOTAL` | TOTAL echo calls, CONCURRENCY at a time | `OK` if all were; `calls=.. failed=.. max_ms=.. failures=CODE:n,..` |
/// | `steady:S:FOR` | echo calls one after another for FOR | same as `load` |
/// | `lookupall:S1:S2:..` | looks every service up at once (concurrent activations) | `OK` if all were; else the first failure |
/// | `sleep:FOR` | waits | `OK` |
/// | `hold` | waits until the broker closes the connection | `CLOSED`, reason |
async fn client(words: &[String]) -> i32 {
    let ctx = match Context::from_env().await {
        Ok(ctx) => ctx,
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"step": "connect", "outcome": outcome_of(&e), "detail": e.to_string()})
            );
            fail(NO_BROKER, &format!("client: {e}"))
        }
    };
    let mut client = Client {
        ctx,
        services: HashMap::new(),
        subscriptions: HashMap::new(),
        watches: HashMap::new(),
    };
    let mut report = Report::default();
    for word in words {
        let step = Step::parse(word);
        let started = Instant::now();
        let (outcome, detail) = client.step(&step).await;
        report.line(&step, &outcome, &detail, started);
    }
    let Client { ctx, .. } = client;
    ctx.close().await;
    report.exit_code()
}

type StepResult = (String, String);

fn ok(detail: impl Into<String>) -> StepResult {
    ("OK".to_owned(), detail.into())
}

fn failed(error: &Error) -> StepResult {
    (outcome_of(error), error.to_string())
}

impl Client {
    async fn step(&mut self, step: &Step) -> StepResult {
        match step.op.as_str() {
            "lookup" => match self.ctx.lookup(step.service()).await {
                Ok(service) => {
                    let name = service.info().provider.app_name.clone();
                    self.services.insert(step.service(), service);
                    ok(name)
                }
                Err(e) => failed(&e),
            },
            "lookupall" => {
                let mut lookups = tokio::task::JoinSet::new();
                for word in &step.args {
                    let (ctx, service) = (self.ctx.clone(), uuid(word));
                    lookups.spawn(async move { (service, ctx.lookup(service).await) });
                }
                let mut names = Vec::new();
                while let Some(joined) = lookups.join_next().await {
                    match joined {
                        Ok((service, Ok(found))) => {
                            names.push(found.info().provider.app_name.clone());
                            self.services.insert(service, found);
                        }
                        Ok((_, Err(e))) => return failed(&e),
                        Err(e) => return ("ERROR".to_owned(), e.to_string()),
                    }
                }
                names.sort();
                ok(names.join(","))
            }
            "call" => {
                let deadline = step
                    .args
                    .get(3)
                    .map(|ms| Duration::from_millis(number(ms, "deadline")));
                let payload = step.args.get(2).cloned().unwrap_or_default().into_bytes();
                match self
                    .ctx
                    .call(step.service(), step.arg(1), payload, deadline)
                    .await
                {
                    Ok(reply) => ok(shown(&reply)),
                    Err(e) => failed(&e),
                }
            }
            "big" => {
                let len: usize = number(step.arg(1), "size");
                let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                match self
                    .ctx
                    .call(step.service(), "echo", payload.clone(), None)
                    .await
                {
                    Ok(reply) if reply == payload => ok(format!("{len} bytes came back")),
                    Ok(reply) => (
                        "MISMATCH".to_owned(),
                        format!("sent {len} bytes, got {} others", reply.len()),
                    ),
                    Err(e) => failed(&e),
                }
            }
            "register" => {
                let probe = Probe {
                    ctx: self.ctx.clone(),
                    cancelled: Arc::default(),
                };
                match self
                    .ctx
                    .register(step.service(), &["echo"], &[], probe)
                    .await
                {
                    Ok(()) => ok(""),
                    Err(e) => failed(&e),
                }
            }
            "subscribe" => match self
                .ctx
                .subscribe(
                    step.service(),
                    step.args.get(1).map_or(TOPIC, String::as_str),
                )
                .await
            {
                Ok(subscription) => {
                    self.subscriptions.insert(step.service(), subscription);
                    ok("")
                }
                Err(e) => failed(&e),
            },
            "event" => {
                let wait = Duration::from_millis(number(step.arg(1), "wait"));
                let Some(subscription) = self.subscriptions.get_mut(&step.service()) else {
                    fail(
                        USAGE,
                        &format!("{}: no subscribe step before it", step.text),
                    );
                };
                match tokio::time::timeout(wait, subscription.next()).await {
                    Ok(Some(event)) => ok(shown(&event.payload)),
                    Ok(None) => ("ENDED".to_owned(), String::new()),
                    Err(_) => ("TIMEOUT".to_owned(), String::new()),
                }
            }
            "cloudevent" => {
                let wait = Duration::from_millis(number(step.arg(0), "wait"));
                let service = Uuid::from_bytes(elastos_proto::cloud::CLOUD_SYNC_SERVICE);
                let Some(subscription) = self.subscriptions.get_mut(&service) else {
                    fail(
                        USAGE,
                        &format!(
                            "{}: no subscribe step to the cloud service before it",
                            step.text
                        ),
                    );
                };
                match tokio::time::timeout(wait, subscription.next()).await {
                    Ok(Some(event)) => {
                        use prost::Message as _;
                        match elastos_proto::cloud::v1::HomeChanged::decode(&event.payload[..]) {
                            Ok(changed) => {
                                let text = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
                                let detail = serde_json::json!({
                                    "version": changed.version,
                                    "changed": changed.changed.iter().map(|p| text(p)).collect::<Vec<_>>(),
                                    "deleted": changed.deleted.iter().map(|p| text(p)).collect::<Vec<_>>(),
                                    "conflicts": changed.conflicts.iter().map(|c| [text(&c.path), text(&c.copy)]).collect::<Vec<_>>(),
                                    "dropped": event.dropped,
                                });
                                ok(detail.to_string())
                            }
                            Err(e) => ("UNDECODABLE".to_owned(), e.to_string()),
                        }
                    }
                    Ok(None) => ("ENDED".to_owned(), String::new()),
                    Err(_) => ("TIMEOUT".to_owned(), String::new()),
                }
            }
            "watch" => match self.ctx.watch(step.service()).await {
                Ok(watch) => {
                    self.watches.insert(step.service(), watch);
                    ok("")
                }
                Err(e) => failed(&e),
            },
            "available" => {
                let wait = Duration::from_millis(number(step.arg(1), "wait"));
                let Some(watch) = self.watches.get_mut(&step.service()) else {
                    fail(USAGE, &format!("{}: no watch step before it", step.text));
                };
                match tokio::time::timeout(wait, watch.next()).await {
                    Ok(Some(info)) => ok(info.provider.app_name),
                    Ok(None) => ("ENDED".to_owned(), String::new()),
                    Err(_) => ("TIMEOUT".to_owned(), String::new()),
                }
            }
            "gone" => {
                let wait = Duration::from_millis(number(step.arg(1), "wait"));
                let Some(service) = self.services.get(&step.service()) else {
                    fail(USAGE, &format!("{}: no lookup step before it", step.text));
                };
                match tokio::time::timeout(wait, service.gone()).await {
                    Ok(Ok(reason)) => (gone_name(reason).to_owned(), String::new()),
                    Ok(Err(e)) => failed(&e),
                    Err(_) => ("TIMEOUT".to_owned(), String::new()),
                }
            }
            "drop" => {
                let after = Duration::from_millis(number(step.arg(1), "time"));
                let call = self
                    .ctx
                    .call(step.service(), "sleep", b"10000".to_vec(), None);
                match tokio::time::timeout(after, call).await {
                    Ok(Ok(reply)) => ok(shown(&reply)),
                    Ok(Err(e)) => failed(&e),
                    Err(_) => ("DROPPED".to_owned(), String::new()),
                }
            }
            "inflight" => {
                let count: usize = number(step.arg(1), "count");
                let sleep = step.arg(2).to_owned().into_bytes();
                let mut calls = tokio::task::JoinSet::new();
                for _ in 0..count {
                    let (ctx, service, sleep) = (self.ctx.clone(), step.service(), sleep.clone());
                    calls.spawn(async move { ctx.call(service, "sleep", sleep, None).await });
                }
                let mut tally: std::collections::BTreeMap<String, usize> = Default::default();
                while let Some(result) = calls.join_next().await {
                    let outcome = match result {
                        Ok(Ok(_)) => "OK".to_owned(),
                        Ok(Err(e)) => outcome_of(&e),
                        Err(_) => "PANIC".to_owned(),
                    };
                    *tally.entry(outcome).or_default() += 1;
                }
                let outcome: Vec<String> = tally.iter().map(|(k, v)| format!("{k}={v}")).collect();
                (outcome.join(","), String::new())
            }
            "load" => {
                let concurrency: usize = number(step.arg(1), "concurrency");
                let total: usize = number(step.arg(2), "total");
                self.load(step.service(), concurrency, Load::Calls(total))
                    .await
            }
            "steady" => {
                let until = Instant::now() + Duration::from_millis(number(step.arg(1), "time"));
                self.load(step.service(), 1, Load::Until(until)).await
            }
            "sleep" => {
                tokio::time::sleep(Duration::from_millis(number(step.arg(0), "time"))).await;
                ok("")
            }
            "hold" => ("CLOSED".to_owned(), self.ctx.closed().await.to_string()),
            other => fail(USAGE, &format!("unknown client step {other:?}")),
        }
    }

    /// Echo calls of 64 bytes from `concurrency` workers; `OK` if every call succeeded.
    async fn load(&self, service: Uuid, concurrency: usize, load: Load) -> StepResult {
        let left = Arc::new(AtomicU64::new(match load {
            Load::Calls(total) => total as u64,
            Load::Until(_) => u64::MAX,
        }));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let ctx = self.ctx.clone();
            let left = Arc::clone(&left);
            workers.spawn(async move {
                let mut tally = Tally::default();
                let payload = vec![0x5a; 64];
                loop {
                    if let Load::Until(until) = load {
                        if Instant::now() >= until {
                            break;
                        }
                    }
                    if left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_err()
                    {
                        break;
                    }
                    let started = Instant::now();
                    let result = ctx.call(service, "echo", payload.clone(), None).await;
                    tally.max = tally.max.max(started.elapsed());
                    tally.calls += 1;
                    match result {
                        Ok(reply) if reply == payload => {}
                        Ok(_) => tally.note_failure("MISMATCH".to_owned(), "a different reply"),
                        Err(e) => tally.note_failure(outcome_of(&e), e),
                    }
                }
                tally
            });
        }
        let mut total = Tally::default();
        while let Some(tally) = workers.join_next().await {
            match tally {
                Ok(tally) => total.add(tally),
                Err(e) => total.note_failure("PANIC".to_owned(), e),
            }
        }
        let failed: u64 = total.failures.values().sum();
        let failures: Vec<String> = total
            .failures
            .iter()
            .map(|(code, n)| format!("{code}:{n}"))
            .collect();
        let detail = format!(
            "calls={} failed={failed} max_ms={} failures={} first_failure={}",
            total.calls,
            total.max.as_millis(),
            if failures.is_empty() {
                "none".to_owned()
            } else {
                failures.join(",")
            },
            total.first_failure.as_deref().unwrap_or("none")
        );
        let outcome = if failed == 0 { "OK" } else { "FAILED" };
        (outcome.to_owned(), detail)
    }
}

#[derive(Clone, Copy)]
enum Load {
    Calls(usize),
    Until(Instant),
}

/// What a `load` worker saw: calls made, the slowest, failures by outcome, the first failure's
/// message.
#[derive(Default)]
struct Tally {
    calls: u64,
    max: Duration,
    failures: std::collections::BTreeMap<String, u64>,
    first_failure: Option<String>,
}

impl Tally {
    fn note_failure(&mut self, outcome: String, message: impl std::fmt::Display) {
        *self.failures.entry(outcome).or_default() += 1;
        self.first_failure
            .get_or_insert_with(|| message.to_string());
    }

    fn add(&mut self, other: Tally) {
        self.calls += other.calls;
        self.max = self.max.max(other.max);
        for (outcome, n) in other.failures {
            *self.failures.entry(outcome).or_default() += n;
        }
        self.first_failure = self.first_failure.take().or(other.first_failure);
    }
}

// ---------------------------------------------------------------------------------------------
// raw

/// How a raw read ended without a frame.
enum End {
    Timeout,
    /// End of stream (or a reset, which a closed unix socket also means).
    Closed,
    /// The broker sent bytes that are not a frame.
    Bad(String),
}

/// The broker socket spoken by hand, blocking.
struct Raw {
    stream: UnixStream,
    decoder: FrameDecoder<BrokerFrame>,
    /// A goodbye the reader passed on its way.
    goodbye: Option<String>,
}

/// How long a raw step waits for the broker's answer.
const RAW_WAIT: Duration = Duration::from_secs(10);

/// Raw steps (`S` a service UUID; a step that waits for an answer waits up to 10 s):
///
/// | step | sends | outcome |
/// |------|-------|---------|
/// | `hello` | the handshake | `OK` on a welcome |
/// | `lookup:S` | a lookup | the response's status or `OK` |
/// | `call:S:METHOD:PAYLOAD` | a call (id 1) | the reply's status or `OK` |
/// | `cancel:S` | a `sleep` call (id 2), then its cancel | the reply's status (`CANCELLED`) |
/// | `badid` | a call with a 3-byte service id | the reply's status |
/// | `dupcall:S` | two `sleep` calls with one id | the second reply's status |
/// | `garbage` | a 16-byte body that is not protobuf | `SENT` |
/// | `oversize` | a length prefix of 4 GiB - 1 and nothing else | `SENT` |
/// | `empty` | a length prefix of 0 | `SENT` |
/// | `unknown` | a frame with only an unknown field (a future message type) | `SENT` |
/// | `fdpass:S` | a lookup with its stdin attached (`SCM_RIGHTS`) | `SENT` |
/// | `flood:S:FOR:BYTES` | echo calls with BYTES of payload, never reading, for up to FOR ms | `CLOSED` once the broker hangs up, else `OPEN` |
/// | `midcall:S` | a `sleep` call of 10 s (then the app exits: a disconnect mid-call) | `SENT` |
/// | `closed:WAIT` | nothing; reads until the broker closes | `GOODBYE:STATUS`, `CLOSED`, `OPEN` (still open after WAIT) |
#[allow(unsafe_code)]
fn raw(words: &[String]) -> i32 {
    let fd: RawFd = std::env::var(elastos_sdk::IPC_FD_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(elastos_sdk::DEFAULT_IPC_FD);
    let mut is_socket = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer we own; it touches nothing else.
    let stat_ok = unsafe { libc::fstat(fd, is_socket.as_mut_ptr()) } == 0;
    // SAFETY: fstat succeeded, so it initialised the buffer.
    if !stat_ok || unsafe { is_socket.assume_init() }.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        fail(NO_BROKER, &format!("raw: fd {fd} is not the broker socket"));
    }
    // SAFETY: fd is an open socket (checked above) that nothing else in this process uses: the
    // SDK is not started in the raw role. The stream becomes its only owner.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // Non-blocking, waits by poll: every wait of a step is bounded.
    // SAFETY: fcntl on an fd this process owns, changing only its status flags.
    let nonblocking = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if !nonblocking {
        fail(
            NO_BROKER,
            &format!(
                "raw: fcntl O_NONBLOCK on fd {fd}: {}",
                io::Error::last_os_error()
            ),
        );
    }
    let mut raw = Raw {
        stream,
        decoder: FrameDecoder::new(),
        goodbye: None,
    };
    let mut report = Report::default();
    for word in words {
        let step = Step::parse(word);
        let started = Instant::now();
        let (outcome, detail) = raw.step(&step);
        report.line(&step, &outcome, &detail, started);
    }
    report.exit_code()
}

fn status_name(error: &v1::Error) -> String {
    match v1::Status::try_from(error.status) {
        Ok(status) => status
            .as_str_name()
            .trim_start_matches("STATUS_")
            .to_owned(),
        Err(_) => format!("STATUS_{}", error.status),
    }
}

fn error_result(error: Option<&v1::Error>) -> StepResult {
    match error {
        None => ok(""),
        Some(error) => (status_name(error), error.message.clone()),
    }
}

fn sent(result: io::Result<()>) -> StepResult {
    match result {
        Ok(()) => ("SENT".to_owned(), String::new()),
        Err(e) => ("WRITE_FAILED".to_owned(), e.to_string()),
    }
}

fn call_frame(call_id: u64, service: &[u8], method: &str, payload: Vec<u8>) -> ClientBody {
    ClientBody::Call(v1::Call {
        call_id,
        service_id: service.to_vec(),
        method: method.to_owned(),
        payload,
        deadline_ms: 0,
    })
}

impl Raw {
    fn step(&mut self, step: &Step) -> StepResult {
        match step.op.as_str() {
            "hello" => {
                if let Err(e) = self.send(ClientBody::Hello(v1::ClientHello::supported())) {
                    return ("WRITE_FAILED".to_owned(), e.to_string());
                }
                match self.next_frame(RAW_WAIT) {
                    Ok(BrokerFrame {
                        body: Some(BrokerBody::Welcome(welcome)),
                    }) => ok(format!("version {}", welcome.version)),
                    Ok(other) => ("UNEXPECTED".to_owned(), format!("{other:?}")),
                    Err(end) => self.ended(end),
                }
            }
            "lookup" => {
                let lookup = ClientBody::Lookup(v1::Lookup {
                    request_id: 1,
                    service_id: step.service().as_bytes().to_vec(),
                });
                if let Err(e) = self.send(lookup) {
                    return ("WRITE_FAILED".to_owned(), e.to_string());
                }
                self.response(1)
            }
            "call" => {
                let payload = step.args.get(2).cloned().unwrap_or_default().into_bytes();
                let call = call_frame(1, step.service().as_bytes(), step.arg(1), payload);
                if let Err(e) = self.send(call) {
                    return ("WRITE_FAILED".to_owned(), e.to_string());
                }
                self.reply(1)
            }
            "cancel" => {
                let call = call_frame(2, step.service().as_bytes(), "sleep", b"10000".to_vec());
                let cancel = ClientBody::Cancel(v1::Cancel { call_id: 2 });
                if let Err(e) = self.send(call).and_then(|()| self.send(cancel)) {
                    return ("WRITE_FAILED".to_owned(), e.to_string());
                }
                self.reply(2)
            }
            "badid" => {
                if let Err(e) = self.send(call_frame(3, &[1, 2, 3], "echo", vec![])) {
                    return ("WRITE_FAILED".to_owned(), e.to_string());
                }
                self.reply(3)
            }
            "dupcall" => {
                let service = step.service();
                let first = call_frame(4, service.as_bytes(), "sleep", b"10000".to_vec());
                let second = call_frame(4, service.as_bytes(), "sleep", b"10000".to_vec());
                if let Err(e) = self.send(first).and_then(|()| self.send(second)) {
                    return ("WRITE_FAILED".to_owned(), e.to_string());
                }
                let result = self.reply(4);
                // The first call is still running: end it, and drain its answer.
                let cancel = ClientBody::Cancel(v1::Cancel { call_id: 4 });
                if self.send(cancel).is_ok() {
                    let _ = self.reply(4);
                }
                result
            }
            "garbage" => {
                let mut bytes = 16u32.to_le_bytes().to_vec();
                bytes.extend([0xff; 16]);
                sent(self.write_all(&bytes))
            }
            "oversize" => sent(self.write_all(&u32::MAX.to_le_bytes())),
            "empty" => sent(self.write_all(&0u32.to_le_bytes())),
            "unknown" => {
                // Field 99, varint 1: a message type from a protocol version nobody speaks.
                let body = [0x98, 0x06, 0x01];
                let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
                bytes.extend(body);
                sent(self.write_all(&bytes))
            }
            "fdpass" => {
                let lookup = ClientBody::Lookup(v1::Lookup {
                    request_id: 5,
                    service_id: step.service().as_bytes().to_vec(),
                });
                let mut bytes = Vec::new();
                encode_frame(&ClientFrame { body: Some(lookup) }, &mut bytes)
                    .expect("a lookup fits in a frame");
                sent(send_with_fd(
                    self.stream.as_raw_fd(),
                    &bytes,
                    libc::STDIN_FILENO,
                ))
            }
            "flood" => {
                let until = Instant::now() + Duration::from_millis(number(step.arg(1), "time"));
                self.flood(step.service(), until, number(step.arg(2), "size"))
            }
            "midcall" => {
                let call = call_frame(6, step.service().as_bytes(), "sleep", b"10000".to_vec());
                sent(self.send(call))
            }
            "closed" => {
                let wait = Duration::from_millis(number(step.arg(0), "wait"));
                let deadline = Instant::now() + wait;
                loop {
                    match self.next_frame(deadline.saturating_duration_since(Instant::now())) {
                        Ok(_) => continue,
                        Err(End::Timeout) => return ("OPEN".to_owned(), String::new()),
                        Err(end) => return self.ended(end),
                    }
                }
            }
            other => fail(USAGE, &format!("unknown raw step {other:?}")),
        }
    }

    fn send(&mut self, body: ClientBody) -> io::Result<()> {
        let mut bytes = Vec::new();
        encode_frame(&ClientFrame { body: Some(body) }, &mut bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.write_all(&bytes)
    }

    /// Writes all of `bytes` within [`RAW_WAIT`] (the socket is non-blocking).
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + RAW_WAIT;
        let mut written = 0;
        while written < bytes.len() {
            if !self.ready(libc::POLLOUT, deadline) {
                return Err(io::ErrorKind::TimedOut.into());
            }
            match self.stream.write(&bytes[written..]) {
                Ok(n) => written += n,
                Err(e) if retryable(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits until the socket is ready for `events` (or hung up), at most until `deadline`;
    /// whether it is. (No read or write timeouts: the jail refuses `setsockopt`.)
    #[allow(unsafe_code)]
    fn ready(&self, events: libc::c_short, deadline: Instant) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut poll = libc::pollfd {
                fd: self.stream.as_raw_fd(),
                events,
                revents: 0,
            };
            let millis = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd, which poll only writes `revents` of.
            match unsafe { libc::poll(&mut poll, 1, millis) } {
                n if n > 0 => return true,
                0 => return false,
                _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                // A poll that fails outright: let the read or write report the problem.
                _ => return true,
            }
        }
    }

    /// The next frame within `wait`. Goodbyes are remembered and skipped.
    fn next_frame(&mut self, wait: Duration) -> Result<BrokerFrame, End> {
        let deadline = Instant::now() + wait;
        let mut buffer = [0u8; 64 * 1024];
        loop {
            match self.decoder.next_frame() {
                Ok(Some(BrokerFrame {
                    body: Some(BrokerBody::Goodbye(goodbye)),
                })) => {
                    self.goodbye = Some(match &goodbye.reason {
                        Some(reason) => format!("{}: {}", status_name(reason), reason.message),
                        None => "no reason".to_owned(),
                    });
                    continue;
                }
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(End::Bad(e.to_string())),
            }
            if !self.ready(libc::POLLIN, deadline) {
                return Err(End::Timeout);
            }
            match self.stream.read(&mut buffer) {
                Ok(0) => return Err(End::Closed),
                Ok(n) => self.decoder.push(&buffer[..n]),
                Err(e) if retryable(&e) => {}
                Err(_) => return Err(End::Closed),
            }
        }
    }

    /// The outcome of a read that found no frame.
    fn ended(&self, end: End) -> StepResult {
        match (end, &self.goodbye) {
            (End::Timeout, _) => ("TIMEOUT".to_owned(), String::new()),
            (End::Closed, Some(goodbye)) => {
                let status = goodbye.split(':').next().unwrap_or_default();
                (format!("GOODBYE:{status}"), goodbye.clone())
            }
            (End::Closed, None) => ("CLOSED".to_owned(), String::new()),
            (End::Bad(e), _) => ("BAD_FRAME".to_owned(), e),
        }
    }

    /// The reply to call `call_id`, skipping other frames.
    fn reply(&mut self, call_id: u64) -> StepResult {
        let deadline = Instant::now() + RAW_WAIT;
        loop {
            match self.next_frame(deadline.saturating_duration_since(Instant::now())) {
                Ok(BrokerFrame {
                    body: Some(BrokerBody::Reply(reply)),
                }) if reply.call_id == call_id => {
                    return match reply.outcome {
                        Some(v1::reply::Outcome::Error(error)) => error_result(Some(&error)),
                        Some(v1::reply::Outcome::Payload(payload)) => ok(shown(&payload)),
                        None => ok(""),
                    }
                }
                Ok(_) => {}
                Err(end) => return self.ended(end),
            }
        }
    }

    /// The response to request `request_id`, skipping other frames.
    fn response(&mut self, request_id: u64) -> StepResult {
        let deadline = Instant::now() + RAW_WAIT;
        loop {
            match self.next_frame(deadline.saturating_duration_since(Instant::now())) {
                Ok(BrokerFrame {
                    body: Some(BrokerBody::Response(response)),
                }) if response.request_id == request_id => {
                    return error_result(response.error.as_ref())
                }
                Ok(_) => {}
                Err(end) => return self.ended(end),
            }
        }
    }

    /// Writes echo calls with `size` bytes of payload and never reads, until the broker hangs
    /// up or `until`. Whole frames only: a write that would block is resumed where it stopped.
    fn flood(&mut self, service: Uuid, until: Instant, size: usize) -> StepResult {
        let mut frame = Vec::new();
        let mut written = 0;
        let mut frames = 0u64;
        let mut call_id = 1000;
        while Instant::now() < until {
            if written == frame.len() {
                frame.clear();
                written = 0;
                call_id += 1;
                let call = call_frame(call_id, service.as_bytes(), "echo", vec![0xab; size]);
                if let Err(e) = encode_frame(&ClientFrame { body: Some(call) }, &mut frame) {
                    fail(USAGE, &format!("flood: {e}"));
                }
            }
            if !self.ready(libc::POLLOUT, until) {
                break;
            }
            match self.stream.write(&frame[written..]) {
                Ok(n) => {
                    written += n;
                    if written == frame.len() {
                        frames += 1;
                    }
                }
                Err(e) if retryable(&e) => {}
                Err(e) => return ("CLOSED".to_owned(), format!("after {frames} frames: {e}")),
            }
        }
        ("OPEN".to_owned(), format!("{frames} frames sent"))
    }
}

/// A failed read or write worth trying again after the next poll.
fn retryable(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// `sendmsg` of `data` with `passed` attached as `SCM_RIGHTS`: what the broker must refuse.
#[allow(unsafe_code)]
fn send_with_fd(socket: RawFd, data: &[u8], passed: RawFd) -> io::Result<()> {
    let fd_len = std::mem::size_of::<RawFd>() as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    // u64 elements: the control buffer must be aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message; the fields are set below.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = space as _;
    // SAFETY: `message` points at `control`, which has room for one header and one fd
    // (CMSG_SPACE); CMSG_FIRSTHDR returns a pointer inside it, and CMSG_DATA the fd's place in
    // it. `iov` and `data` outlive the sendmsg call, which only reads them.
    let sent = unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), passed);
        libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL)
    };
    match sent {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if n as usize == data.len() => Ok(()),
        n => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sendmsg sent {n} of {} bytes", data.len()),
        )),
    }
}
