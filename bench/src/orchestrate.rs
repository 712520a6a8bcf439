//! `run`: the whole benchmark in one process tree, every path side by side in the same run.
//!
//! 1. Broker memory per idle app: Rss and Pss of the daemon (`/proc/PID/smaps_rollup`) before
//!    and while `--idle` N apps are attached and idle; (with - before) / N.
//! 2. Starts the servers: relay server and relay; elastos service; zbus server.
//! 3. `--rounds` rounds, each: sequential latency (one client, `--calls` calls) in each
//!    [`Placement`], then throughput with `--flight` calls in flight (one client,
//!    `--flight-calls` calls) and with `--clients` clients of `--flight` in flight each
//!    (`--flight-calls` in total), both unpinned; every path in turn, so that the machine's drift
//!    spreads over all of them.
//! 4. The flood scenario (issue 12), `--flood-rounds` rounds, for elastos and D-Bus in turn: a
//!    slow service serving one call at a time in `--service-us` µs; a well-behaved client's
//!    `--flood-calls` sequential calls unloaded, then again after a flooder has kept
//!    `--flood-in-flight` calls in flight for `--flood-ramp-ms`, while it still does.
//! 5. Prints a markdown report of the medians over the rounds, and the ratios the targets are
//!    stated in; `--json FILE` keeps every round's numbers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::client::{Mode, Outcome};
use crate::placement::{self, Placement};

/// The long-running processes of one path: the middle hop and the server.
#[derive(Debug, Clone, Copy)]
struct Hops {
    middle: u32,
    server: u32,
}

struct Options {
    control: String,
    broker_pid: u32,
    dbus: String,
    dbus_pid: u32,
    dir: String,
    rounds: usize,
    calls: u64,
    flight: usize,
    flight_calls: u64,
    clients: u64,
    idle: u32,
    flood_rounds: usize,
    flood_calls: u64,
    flood_in_flight: usize,
    service_us: u64,
    flood_ramp_ms: u64,
    json: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut given = BTreeMap::new();
        let mut rest = args.iter();
        while let Some(key) = rest.next() {
            let name = key
                .strip_prefix("--")
                .ok_or_else(|| format!("expected an --option, found {key:?}"))?;
            let value = rest.next().ok_or_else(|| format!("{key} needs a value"))?;
            given.insert(name.to_owned(), value.clone());
        }
        let mut take = |name: &str, default: Option<&str>| {
            given
                .remove(name)
                .or(default.map(str::to_owned))
                .ok_or_else(|| format!("--{name} is required"))
        };
        fn num<T: std::str::FromStr>(name: &str, text: String) -> Result<T, String> {
            text.parse()
                .map_err(|_| format!("--{name} must be a number, found {text:?}"))
        }
        let options = Options {
            control: take("control", None)?,
            broker_pid: num("broker-pid", take("broker-pid", None)?)?,
            dbus: take("dbus", None)?,
            dbus_pid: num("dbus-pid", take("dbus-pid", None)?)?,
            dir: take("dir", None)?,
            rounds: num("rounds", take("rounds", Some("5"))?)?,
            calls: num("calls", take("calls", Some("20000"))?)?,
            flight: num("flight", take("flight", Some("32"))?)?,
            flight_calls: num("flight-calls", take("flight-calls", Some("200000"))?)?,
            clients: num("clients", take("clients", Some("4"))?)?,
            idle: num("idle", take("idle", Some("1000"))?)?,
            flood_rounds: num("flood-rounds", take("flood-rounds", Some("3"))?)?,
            flood_calls: num("flood-calls", take("flood-calls", Some("300"))?)?,
            flood_in_flight: num("flood-in-flight", take("flood-in-flight", Some("256"))?)?,
            service_us: num("service-us", take("service-us", Some("500"))?)?,
            flood_ramp_ms: num("flood-ramp-ms", take("flood-ramp-ms", Some("1000"))?)?,
            json: take("json", Some("")).ok().filter(|path| !path.is_empty()),
        };
        if let Some(unknown) = given.keys().next() {
            return Err(format!("unknown option --{unknown}"));
        }
        if options.rounds == 0
            || options.calls == 0
            || options.flight == 0
            || options.clients == 0
            || options.flood_calls == 0
            || options.flood_in_flight == 0
        {
            return Err("--rounds, --calls, --flight, --clients, --flood-calls and \
                        --flood-in-flight must be positive"
                .into());
        }
        Ok(options)
    }
}

/// A child process of this binary in some role; killed when dropped.
struct Proc {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(what: impl Into<String>, args: &[&str]) -> Result<Proc, String> {
        let what = what.into();
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Proc {
            what,
            child,
            stdin,
            stdout,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err(format!("{} exited early (its error is above)", self.what)),
            Ok(_) => Ok(line.trim_end().to_owned()),
            Err(e) => Err(format!("reading from {}: {e}", self.what)),
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        match self.line()? {
            line if line == "ready" => Ok(()),
            line => Err(format!("{} said {line:?}, expected ready", self.what)),
        }
    }

    fn go(&mut self) -> Result<(), String> {
        let stdin = self.stdin.as_mut().expect("stdin is kept until the end");
        writeln!(stdin, "go").map_err(|e| format!("telling {} to go: {e}", self.what))
    }

    fn outcome(&mut self) -> Result<Outcome, String> {
        let outcome = Outcome::from_json(&self.line()?)?;
        let _ = self.child.wait();
        Ok(outcome)
    }

    /// Closes its stdin (an idle app's signal to leave) and waits for it to exit.
    fn finish(mut self) -> Result<(), String> {
        drop(self.stdin.take());
        let status = self.child.wait().map_err(|e| e.to_string())?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("{} ended with {status}", self.what))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client arguments after `client PATH MODE CALLS`; `slow` for the slow service.
fn target(options: &Options, path: &str, number: u64, slow: bool) -> Vec<String> {
    let mut target = match path {
        "relay" => vec![format!("{}/relay.sock", options.dir)],
        "elastos" => vec![options.control.clone(), number.to_string()],
        _ => vec![options.dbus.clone()],
    };
    if slow {
        target.push("slow".into());
    }
    target
}

/// The client number (elastos app identity) of the flooder.
const FLOODER: u64 = 1000;

/// One measurement: `clients` clients of `path` together, `calls` calls in all, run where
/// `placement` says; their outcomes merged: calls over the span from the first start to the
/// last end.
struct Run<'a> {
    options: &'a Options,
    path: &'static str,
    hops: Hops,
    /// Calls go to the slow service (and `hops.server` is its provider).
    slow: bool,
}

impl Run<'_> {
    fn measure(
        &self,
        mode: Mode,
        clients: u64,
        calls: u64,
        placement: Placement,
    ) -> Result<Outcome, String> {
        let (options, path) = (self.options, self.path);
        let mode_arg = mode.to_arg();
        let mut procs = Vec::new();
        for number in 0..clients {
            let each = calls / clients + u64::from(number < calls % clients);
            let mut args = vec![
                "client".to_owned(),
                path.to_owned(),
                mode_arg.clone(),
                each.to_string(),
            ];
            args.extend(target(options, path, number, self.slow));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            procs.push(Proc::spawn(format!("{path} client {number}"), &args)?);
        }
        for proc in &mut procs {
            proc.wait_ready()?;
        }
        let pids: Vec<u32> = procs.iter().map(Proc::pid).collect();
        placement::apply(placement, self.hops.middle, self.hops.server, &pids)?;
        for proc in &mut procs {
            proc.go()?;
        }
        let outcomes: Vec<Outcome> = procs
            .iter_mut()
            .map(Proc::outcome)
            .collect::<Result<_, _>>()?;
        Ok(Outcome {
            calls: outcomes.iter().map(|o| o.calls).sum(),
            start_ns: outcomes
                .iter()
                .map(|o| o.start_ns)
                .min()
                .expect("clients > 0"),
            end_ns: outcomes
                .iter()
                .map(|o| o.end_ns)
                .max()
                .expect("clients > 0"),
            p50_ns: outcomes[0].p50_ns,
            p99_ns: outcomes[0].p99_ns,
            refused: outcomes.iter().map(|o| o.refused).sum(),
        })
    }

    /// [`Run::measure`] of the echo service, where every call must succeed.
    fn measure_echo(
        &self,
        mode: Mode,
        clients: u64,
        calls: u64,
        placement: Placement,
    ) -> Result<Outcome, String> {
        let outcome = self.measure(mode, clients, calls, placement)?;
        if outcome.refused > 0 {
            return Err(format!(
                "{} of the {} echo calls failed",
                outcome.refused, self.path
            ));
        }
        Ok(outcome)
    }

    /// One round of the flood scenario: the steady client unloaded, then under a flood.
    fn flood(&self) -> Result<(Outcome, Outcome), String> {
        let options = self.options;
        let unloaded = self.measure(Mode::Sequential, 1, options.flood_calls, Placement::Unpinned)?;
        let mut args = vec![
            "client".to_owned(),
            self.path.to_owned(),
            Mode::Flood(options.flood_in_flight).to_arg(),
            "0".to_owned(),
        ];
        args.extend(target(options, self.path, FLOODER, true));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut flooder = Proc::spawn(format!("{} flooder", self.path), &args)?;
        flooder.wait_ready()?;
        flooder.go()?;
        std::thread::sleep(Duration::from_millis(options.flood_ramp_ms));
        let flooded = self.measure(Mode::Sequential, 1, options.flood_calls, Placement::Unpinned);
        drop(flooder);
        // The flood's calls already at the provider drain (D-Bus: up to all of them).
        std::thread::sleep(
            Duration::from_micros(options.service_us) * options.flood_in_flight as u32
                + Duration::from_millis(200),
        );
        Ok((unloaded, flooded?))
    }
}

fn per_second(outcome: &Outcome) -> f64 {
    outcome.calls as f64 * 1e9 / (outcome.end_ns - outcome.start_ns).max(1) as f64
}

/// `Rss` and `Pss` of a process, in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{path} has no {name}"))
    };
    Ok((field("Rss:")?, field("Pss:")?))
}

struct Memory {
    idle: u32,
    before: (u64, u64),
    with: (u64, u64),
}

fn measure_memory(options: &Options) -> Result<Memory, String> {
    let before = memory_kib(options.broker_pid)?;
    let idle = options.idle.to_string();
    let mut apps = Proc::spawn("idle apps", &["elastos-idle", &options.control, &idle])?;
    apps.wait_ready()?;
    // Let the daemon finish the last attach.
    std::thread::sleep(Duration::from_secs(1));
    let with = memory_kib(options.broker_pid)?;
    apps.finish()?;
    Ok(Memory {
        idle: options.idle,
        before,
        with,
    })
}

/// One path's numbers, a value per round.
#[derive(Default)]
struct Samples {
    /// By placement: p50 µs, p99 µs, calls/s.
    latency: BTreeMap<&'static str, [Vec<f64>; 3]>,
    flight_per_s: Vec<f64>,
    clients_per_s: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn run(args: &[String]) -> Result<(), String> {
    let options = Options::parse(args)?;
    eprintln!("==> broker memory with {} idle apps", options.idle);
    let memory = measure_memory(&options)?;

    eprintln!("==> starting the servers");
    let relay_server = format!("{}/relay-server.sock", options.dir);
    let relay_listen = format!("{}/relay.sock", options.dir);
    let service_us = options.service_us.to_string();
    let mut servers = vec![
        Proc::spawn("relay server", &["relay-server", &relay_server])?,
        Proc::spawn("relay", &["relay", &relay_listen, &relay_server])?,
        Proc::spawn("elastos service", &["elastos-service", &options.control])?,
        Proc::spawn("zbus server", &["dbus-server", &options.dbus])?,
        Proc::spawn(
            "elastos slow service",
            &["elastos-service", &options.control, "slow", &service_us],
        )?,
        Proc::spawn(
            "zbus slow server",
            &["dbus-server", &options.dbus, "slow", &service_us],
        )?,
    ];
    for server in &mut servers {
        server.wait_ready()?;
    }
    let runs = [
        Run {
            options: &options,
            path: "relay",
            hops: Hops {
                middle: servers[1].pid(),
                server: servers[0].pid(),
            },
            slow: false,
        },
        Run {
            options: &options,
            path: "elastos",
            hops: Hops {
                middle: options.broker_pid,
                server: servers[2].pid(),
            },
            slow: false,
        },
        Run {
            options: &options,
            path: "dbus",
            hops: Hops {
                middle: options.dbus_pid,
                server: servers[3].pid(),
            },
            slow: false,
        },
    ];
    let flood_runs = [
        Run {
            options: &options,
            path: "elastos",
            hops: Hops {
                middle: options.broker_pid,
                server: servers[4].pid(),
            },
            slow: true,
        },
        Run {
            options: &options,
            path: "dbus",
            hops: Hops {
                middle: options.dbus_pid,
                server: servers[5].pid(),
            },
            slow: true,
        },
    ];

    let mut samples: BTreeMap<&str, Samples> = BTreeMap::new();
    let mut rounds_json = Vec::new();
    let rounds = options.rounds;
    for round in 1..=rounds {
        let mut round_json = serde_json::Map::new();
        for placement in Placement::ALL {
            for run in &runs {
                eprintln!(
                    "==> round {round}/{rounds}: {}, sequential, {}",
                    run.path,
                    placement.describe()
                );
                let seq = run.measure_echo(Mode::Sequential, 1, options.calls, placement)?;
                let [p50, p99, rate] = samples
                    .entry(run.path)
                    .or_default()
                    .latency
                    .entry(placement.key())
                    .or_default();
                p50.push(seq.p50_ns.unwrap_or(0) as f64 / 1e3);
                p99.push(seq.p99_ns.unwrap_or(0) as f64 / 1e3);
                rate.push(per_second(&seq));
                round_json.insert(
                    format!("{}_sequential_{}", run.path, placement.key()),
                    seq.to_json(),
                );
            }
        }
        let mode = Mode::InFlight(options.flight);
        for run in &runs {
            eprintln!(
                "==> round {round}/{rounds}: {}, {} in flight",
                run.path, options.flight
            );
            let one = run.measure_echo(mode, 1, options.flight_calls, Placement::Unpinned)?;
            samples
                .entry(run.path)
                .or_default()
                .flight_per_s
                .push(per_second(&one));
            round_json.insert(format!("{}_in_flight", run.path), one.to_json());
        }
        for run in &runs {
            eprintln!(
                "==> round {round}/{rounds}: {}, {} clients x {} in flight",
                run.path, options.clients, options.flight
            );
            let many = run.measure_echo(
                mode,
                options.clients,
                options.flight_calls,
                Placement::Unpinned,
            )?;
            samples
                .entry(run.path)
                .or_default()
                .clients_per_s
                .push(per_second(&many));
            round_json.insert(format!("{}_clients", run.path), many.to_json());
        }
        rounds_json.push(serde_json::Value::Object(round_json));
    }
    let mut floods: BTreeMap<&str, Flood> = BTreeMap::new();
    let mut floods_json = Vec::new();
    for round in 1..=options.flood_rounds {
        let mut round_json = serde_json::Map::new();
        for run in &flood_runs {
            eprintln!(
                "==> flood round {round}/{}: {}, a steady client unloaded, then with {} calls \
                 in flight from a flooder",
                options.flood_rounds, run.path, options.flood_in_flight
            );
            let (unloaded, flooded) = run.flood()?;
            floods.entry(run.path).or_default().push(&unloaded, &flooded);
            round_json.insert(format!("{}_unloaded", run.path), unloaded.to_json());
            round_json.insert(format!("{}_flooded", run.path), flooded.to_json());
        }
        floods_json.push(serde_json::Value::Object(round_json));
    }
    for run in &runs {
        // The daemons outlive this process; leave them as they were.
        placement::apply(Placement::Unpinned, run.hops.middle, run.hops.server, &[])?;
    }
    drop(servers);

    println!("{}", report(&options, &samples, &memory));
    if options.flood_rounds > 0 {
        println!("{}", flood_report(&options, &floods));
    }
    if let Some(path) = &options.json {
        let json = serde_json::json!({
            "payload_bytes": crate::PAYLOAD_LEN,
            "calls": options.calls, "flight": options.flight,
            "flight_calls": options.flight_calls, "clients": options.clients,
            "memory": { "idle_apps": memory.idle, "before_kib": [memory.before.0, memory.before.1],
                        "with_kib": [memory.with.0, memory.with.1] },
            "rounds": rounds_json,
            "flood": { "service_us": options.service_us, "in_flight": options.flood_in_flight,
                       "calls": options.flood_calls, "ramp_ms": options.flood_ramp_ms,
                       "rounds": floods_json },
        });
        std::fs::write(path, format!("{json:#}\n")).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

fn report(options: &Options, samples: &BTreeMap<&str, Samples>, memory: &Memory) -> String {
    let latency = |path: &str, placement: Placement, which: usize| {
        median(&samples[path].latency[placement.key()][which])
    };
    let p50 = |path: &str, placement: Placement| latency(path, placement, 0);
    let flight = |path: &str| median(&samples[path].flight_per_s);
    let clients = |path: &str| median(&samples[path].clients_per_s);
    let (k, c) = (options.flight, options.clients);
    let names = [
        ("relay", "raw 2-hop unix socket relay"),
        ("elastos", "elastos broker (elastos-sdk client and service)"),
        ("dbus", "D-Bus, dbus-daemon (zbus client and server)"),
    ];
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "A 64-byte call (64-byte request payload, 64-byte reply payload), client → middle → \
         server → middle → client, each in its own process; medians over {} rounds.\n",
        options.rounds
    ));
    line(format!(
        "Latency: {} sequential calls after {} warm-up calls, per placement (unpinned: the \
         scheduler decides; one CPU: all three processes on CPU 0, so the round trip is the \
         CPU work of the path; cross-CPU: the middle on CPU 1, client and server on CPU 0, so \
         every hop is a cross-CPU wake-up).\n",
        options.calls,
        crate::client::WARMUP_CALLS
    ));
    line("| placement | path | p50 µs | p99 µs | calls/s sequential |".into());
    line("|---|---|---:|---:|---:|".into());
    for placement in Placement::ALL {
        for (path, name) in names {
            line(format!(
                "| {} | {name} | {:.1} | {:.1} | {} |",
                placement.describe(),
                p50(path, placement),
                latency(path, placement, 1),
                thousands(latency(path, placement, 2)),
            ));
        }
    }
    line(String::new());
    line(format!(
        "Throughput, unpinned (both CPUs shared by all processes): {} calls in all per \
         measurement, {k} calls in flight per client.\n",
        options.flight_calls
    ));
    line(format!(
        "| path | calls/s, 1 client × {k} in flight | calls/s, {c} clients × {k} in flight |"
    ));
    line("|---|---:|---:|".into());
    for (path, name) in names {
        line(format!(
            "| {name} | {} | {} |",
            thousands(flight(path)),
            thousands(clients(path))
        ));
    }
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    line(String::new());
    line("| ratio | unpinned | one CPU | cross-CPU | target |".into());
    line("|---|---:|---:|---:|---|".into());
    let per_placement = |f: &dyn Fn(Placement) -> f64| {
        Placement::ALL
            .map(|placement| format!("{:.2}x", f(placement)))
            .join(" | ")
    };
    let elastos_over_relay = |pl| p50("elastos", pl) / p50("relay", pl);
    let dbus_over_elastos = |pl| p50("dbus", pl) / p50("elastos", pl);
    let verdicts = |f: &dyn Fn(Placement) -> bool| {
        Placement::ALL
            .map(|pl| format!("{} {}", verdict(f(pl)), pl.describe()))
            .join(", ")
    };
    line(format!(
        "| elastos p50 / relay p50 | {} | ≤ 2x: {} |",
        per_placement(&elastos_over_relay),
        verdicts(&|pl| elastos_over_relay(pl) <= 2.0)
    ));
    let below_floor: Vec<String> = Placement::ALL
        .iter()
        .filter(|&&pl| p50("dbus", pl) / 10.0 < p50("relay", pl))
        .map(|&pl| {
            format!(
                "{}: 10x faster than D-Bus is {:.1} µs, under the relay's {:.1} µs",
                pl.describe(),
                p50("dbus", pl) / 10.0,
                p50("relay", pl)
            )
        })
        .collect();
    line(format!(
        "| D-Bus p50 / elastos p50 | {} | ≥ 10x: {}{} |",
        per_placement(&dbus_over_elastos),
        verdicts(&|pl| dbus_over_elastos(pl) >= 10.0),
        if below_floor.is_empty() {
            String::new()
        } else {
            format!(
                " (below the floor, so out of reach of any broker: {})",
                below_floor.join("; ")
            )
        }
    ));
    line(String::new());
    line("| throughput | value | target |".into());
    line("|---|---:|---|".into());
    line(format!(
        "| elastos calls/s, {c} clients × {k} in flight | {} | ≥ 100,000: {} |",
        thousands(clients("elastos")),
        verdict(clients("elastos") >= 100_000.0)
    ));
    line(format!(
        "| elastos calls/s, 1 client × {k} in flight | {} | ≥ 100,000: {} |",
        thousands(flight("elastos")),
        verdict(flight("elastos") >= 100_000.0)
    ));
    line(format!(
        "| elastos / D-Bus calls/s, 1 client × {k} in flight | {:.1}x | |",
        flight("elastos") / flight("dbus")
    ));
    line(format!(
        "| elastos / D-Bus calls/s, {c} clients × {k} in flight | {:.1}x | |",
        clients("elastos") / clients("dbus")
    ));
    line(format!(
        "| elastos / relay calls/s, 1 client × {k} in flight | {:.2}x | |",
        flight("elastos") / flight("relay")
    ));
    let per_app =
        |before: u64, with: u64| (with as f64 - before as f64) / f64::from(memory.idle.max(1));
    line(String::new());
    line(format!(
        "Broker daemon memory per idle connected app ({} apps attached, handshake done, \
         /proc/PID/smaps_rollup of the daemon): Rss {:.1} KiB, Pss {:.1} KiB per app \
         (Rss {} → {} KiB, Pss {} → {} KiB).",
        memory.idle,
        per_app(memory.before.0, memory.with.0),
        per_app(memory.before.1, memory.with.1),
        memory.before.0,
        memory.with.0,
        memory.before.1,
        memory.with.1
    ));
    out
}

/// The flood scenario's numbers of one path, a value per round: the steady client's p50 and p99
/// in ms, unloaded and flooded, and its refusals.
#[derive(Default)]
struct Flood {
    unloaded: [Vec<f64>; 2],
    flooded: [Vec<f64>; 2],
    refused: u64,
}

impl Flood {
    fn push(&mut self, unloaded: &Outcome, flooded: &Outcome) {
        let ms = |ns: Option<u64>| ns.unwrap_or(0) as f64 / 1e6;
        self.unloaded[0].push(ms(unloaded.p50_ns));
        self.unloaded[1].push(ms(unloaded.p99_ns));
        self.flooded[0].push(ms(flooded.p50_ns));
        self.flooded[1].push(ms(flooded.p99_ns));
        self.refused += unloaded.refused + flooded.refused;
    }
}

fn flood_report(options: &Options, floods: &BTreeMap<&str, Flood>) -> String {
    let service_ms = options.service_us as f64 / 1e3;
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "Flood (issue 12): a provider that serves one call at a time, {service_ms} ms each (a \
         thread sleep); a well-behaved client's {} sequential 64-byte calls, unloaded, then while \
         a flooder keeps {} calls in flight against the same provider (measured after {} ms of \
         flood); medians over {} rounds. Target: flooded p99 ≤ 2 × unloaded p99 + {service_ms} \
         ms, and no call refused.\n",
        options.flood_calls, options.flood_in_flight, options.flood_ramp_ms, options.flood_rounds
    ));
    line(
        "| path | unloaded p50 ms | unloaded p99 ms | flooded p50 ms | flooded p99 ms | \
         flooded p99 / unloaded p99 | target | refused |"
            .into(),
    );
    line("|---|---:|---:|---:|---:|---:|---|---:|".into());
    let names = [
        ("elastos", "elastos broker"),
        ("dbus", "D-Bus, dbus-daemon"),
    ];
    for (path, name) in names {
        let Some(flood) = floods.get(path) else {
            continue;
        };
        let [u50, u99] = flood.unloaded.each_ref().map(|v| median(v));
        let [f50, f99] = flood.flooded.each_ref().map(|v| median(v));
        let target = 2.0 * u99 + service_ms;
        let met = f99 <= target && flood.refused == 0;
        line(format!(
            "| {name} | {u50:.2} | {u99:.2} | {f50:.2} | {f99:.2} | {:.1}x | ≤ {target:.2} ms: {} \
             | {} |",
            f99 / u99,
            if met { "met" } else { "missed" },
            flood.refused
        ));
    }
    if let (Some(elastos), Some(dbus)) = (floods.get("elastos"), floods.get("dbus")) {
        line(String::new());
        line(format!(
            "Under the flood, D-Bus / elastos: p50 {:.1}x, p99 {:.1}x.",
            median(&dbus.flooded[0]) / median(&elastos.flooded[0]),
            median(&dbus.flooded[1]) / median(&elastos.flooded[1]),
        ));
    }
    out
}
