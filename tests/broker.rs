//! End-to-end tests of the broker: real jailed apps (bundles of `elastos-broker-probe`, whose
//! manifests' `[services]` fit each case) talking through the real broker, either the one
//! embedded in `elastos run` or the `elastos broker` daemon a test starts with its own
//! `ELASTOS_HOME` (and ends with a guard, also when the test fails).
//!
//! The probe reports one JSON line per step and exits 0 only when every step's expected outcome
//! (`STEP=OUTCOME`) came, so a failing assertion shows the whole conversation. Hostile steps only
//! write to the app's own broker socket (fd 3), and the one fd they try to pass is their stdin:
//! harmless even if the jail failed.

mod common;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{binaries, eventually, json, Daemon, Harness, Output, Running, User};

/// The service the provider bundle provides and the client bundle uses.
const SERVICE: &str = "5e4f3a2b-1c0d-4e9f-8a7b-6c5d4e3f2a10";
/// Provided by another installed bundle, in nobody's `uses`.
const OTHER: &str = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c21";
/// In the client's `uses`, provided by nobody.
const NOBODY: &str = "9c8b7a6d-5e4f-4d3c-8b2a-1f0e9d8c7b32";

const PROVIDER_ID: &str = "1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9";
const OTHER_PROVIDER_ID: &str = "2c3d4e5f-6071-4829-93a4-b5c6d7e8f90a";
const CLIENT_ID: &str = "3d4e5f60-7182-493a-a4b5-c6d7e8f90a1b";

/// Who runs `elastos` in these tests: the unprivileged user, as a desktop user would.
const USER: User = User::Unprivileged;

/// How long a well-behaved call may take while hostile apps hammer the broker.
const CALL_BOUND: Duration = Duration::from_secs(1);

/// `elastos-broker-probe`, built beside `elastos`.
fn broker_probe() -> PathBuf {
    let path = binaries().elastos.with_file_name("elastos-broker-probe");
    assert!(
        path.is_file(),
        "{} is missing; build every binary first: cargo build --release --workspace --bins",
        path.display()
    );
    path
}

/// One probe app: its manifest's identity and `[services]`, and the arguments an activated
/// instance (started by the broker, without argv) reads from `/app/activate.args`.
struct App<'a> {
    name: &'a str,
    id: &'a str,
    provides: &'a [&'a str],
    uses: &'a [&'a str],
    activate: &'a [&'a str],
}

impl App<'_> {
    /// Stages and packs the app; the bundle's path.
    fn pack(&self, harness: &Harness) -> PathBuf {
        let list = |ids: &[&str]| {
            let quoted: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
            quoted.join(", ")
        };
        let manifest = format!(
            "[app]\nid = \"{}\"\nname = \"{}\"\nversion = \"0.1.0\"\nentry = \"elastos-broker-probe\"\n\n\
             [services]\nprovides = [{}]\nuses = [{}]\n\n\
             [limits]\nmemory = \"64MiB\"\nthreads = 8\n",
            self.id,
            self.name,
            list(self.provides),
            list(self.uses)
        );
        let dir = harness.stage(
            self.name,
            &manifest,
            &[("elastos-broker-probe", &broker_probe())],
        );
        if !self.activate.is_empty() {
            harness.write(
                &format!("{}/activate.args", self.name),
                self.activate.join("\n"),
                0o644,
            );
        }
        harness.pack(&dir)
    }
}

/// Provides [`SERVICE`]; serves it when activated.
const PROVIDER: App = App {
    name: "probe-provider",
    id: PROVIDER_ID,
    provides: &[SERVICE],
    uses: &[],
    activate: &["serve", SERVICE],
};

/// Provides [`OTHER`], which no client may use.
const OTHER_PROVIDER: App = App {
    name: "other-provider",
    id: OTHER_PROVIDER_ID,
    provides: &[OTHER],
    uses: &[],
    activate: &["serve", OTHER],
};

/// Uses [`SERVICE`] and [`NOBODY`]; provides nothing.
const CLIENT: App = App {
    name: "probe-client",
    id: CLIENT_ID,
    provides: &[],
    uses: &[SERVICE, NOBODY],
    activate: &[],
};

/// A harness with the provider and the client packed.
fn setup() -> (Harness, PathBuf, PathBuf) {
    let harness = Harness::new(USER);
    let provider = PROVIDER.pack(&harness);
    let client = CLIENT.pack(&harness);
    (harness, provider, client)
}

/// One step the probe reported.
#[derive(Debug, Clone)]
struct Step {
    step: String,
    outcome: String,
    detail: String,
    ms: u64,
}

/// The steps in the probe's stdout (its JSON lines; other lines are an activated provider's).
fn steps_of(out: &Output) -> Vec<Step> {
    out.stdout_text()
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad probe line {line:?}: {e}"));
            let text = |name: &str| {
                value[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("probe line {line:?} lacks {name}"))
                    .to_owned()
            };
            Step {
                step: text("step"),
                outcome: text("outcome"),
                detail: text("detail"),
                ms: value["ms"].as_u64().expect("ms is a number"),
            }
        })
        .collect()
}

/// `steps` as probe arguments: `role` first.
fn probe_args(role: &str, steps: &[String]) -> Vec<String> {
    std::iter::once(role.to_owned())
        .chain(steps.iter().cloned())
        .collect()
}

/// Runs `bundle -- ROLE STEPS`, asserts that every expectation held (exit 0) and that every
/// step reported; the steps.
#[track_caller]
fn run_steps(harness: &Harness, bundle: &Path, role: &str, steps: &[String]) -> Vec<Step> {
    let out = harness.run(bundle, &probe_args(role, steps)).output();
    checked_steps(&out, steps.len())
}

/// The steps of a finished probe run that met every expectation.
#[track_caller]
fn checked_steps(out: &Output, count: usize) -> Vec<Step> {
    out.assert_code(0);
    let steps = steps_of(out);
    assert_eq!(
        steps.len(),
        count,
        "expected {count} step lines:\n{}",
        out.stdout_text()
    );
    steps
}

/// The reported step whose text starts with `prefix`.
#[track_caller]
fn step<'a>(steps: &'a [Step], prefix: &str) -> &'a Step {
    steps
        .iter()
        .find(|s| s.step.starts_with(prefix))
        .unwrap_or_else(|| panic!("no step {prefix:?} in {steps:#?}"))
}

/// The value of `key=value` in a step's detail.
#[track_caller]
fn detail_value<'a>(step: &'a Step, key: &str) -> &'a str {
    step.detail
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {step:?}"))
}

/// The value of `key=value` in a step's detail, as a number.
#[track_caller]
fn detail_number(step: &Step, key: &str) -> u64 {
    let value = detail_value(step, key);
    value
        .parse()
        .unwrap_or_else(|_| panic!("{key}={value} is not a number in {step:?}"))
}

fn s(text: impl Into<String>) -> String {
    text.into()
}

/// `elastos ARGS --format json`.
#[track_caller]
fn elastos_json(harness: &Harness, args: &[&str]) -> serde_json::Value {
    json(
        &harness
            .elastos()
            .args(args)
            .args(["--format", "json"])
            .output(),
    )
}

/// The running apps of `elastos ps --format json`, after checking what it says of the daemon.
#[track_caller]
fn running_apps(harness: &Harness) -> serde_json::Value {
    let mut ps = elastos_json(harness, &["ps"]);
    let daemon = &ps["daemon"];
    assert!(daemon["pid"].as_u64().is_some(), "{ps:#}");
    assert!(
        daemon["rss_bytes"].as_u64().is_some_and(|rss| rss > 0),
        "{ps:#}"
    );
    assert_eq!(
        daemon["connections"].as_u64(),
        ps["apps"].as_array().map(|apps| apps.len() as u64),
        "{ps:#}"
    );
    ps["apps"].take()
}

/// The rows of `elastos ps` / `services` / `list` whose `key` is `value`.
fn rows_with<'a>(
    rows: &'a serde_json::Value,
    key: &str,
    value: &str,
) -> Vec<&'a serde_json::Value> {
    rows.as_array()
        .expect("an array")
        .iter()
        .filter(|row| row[key] == value)
        .collect()
}

/// `elastos install BUNDLE --format json`; the installed app's record.
#[track_caller]
fn install(harness: &Harness, bundle: &Path) -> serde_json::Value {
    let out = harness
        .elastos()
        .arg("install")
        .arg(bundle)
        .args(["--format", "json"])
        .output();
    json(&out)
}

// ---------------------------------------------------------------------------------------------
// Through the broker embedded in `elastos run`

#[test]
fn an_installed_provider_is_activated_on_demand_and_payloads_round_trip() {
    let (harness, provider, client) = setup();
    let installed = install(&harness, &provider);
    assert_eq!(installed["app_id"], PROVIDER_ID);
    assert_eq!(installed["provides"], serde_json::json!([SERVICE]));

    let steps = run_steps(
        &harness,
        &client,
        "client",
        &[
            format!("lookup:{SERVICE}=OK"),
            format!("call:{SERVICE}:echo:hello=OK"),
            format!("big:{SERVICE}:0=OK"),
            format!("big:{SERVICE}:64=OK"),
            format!("big:{SERVICE}:65536=OK"),
            format!("big:{SERVICE}:1000000=OK"),
            format!("call:{SERVICE}:caller=OK"),
            format!("call:{SERVICE}:fail:INVALID_ARGUMENT=INVALID_ARGUMENT"),
            format!("call:{SERVICE}:fail:INTERNAL=INTERNAL"),
            format!("call:{SERVICE}:nosuch=NOT_FOUND"),
            format!("subscribe:{SERVICE}=OK"),
            format!("call:{SERVICE}:publish:tock=OK"),
            format!("event:{SERVICE}:5000=OK"),
        ],
    );
    assert_eq!(
        step(&steps, "lookup").detail,
        PROVIDER.name,
        "the provider's attested name"
    );
    assert_eq!(
        step(&steps, &format!("call:{SERVICE}:echo")).detail,
        "hello"
    );
    // The broker, not the client, says who calls: the provider sees the client's manifest id.
    assert_eq!(
        step(&steps, &format!("call:{SERVICE}:caller")).detail,
        format!("{} {CLIENT_ID}", CLIENT.name)
    );
    // A provider's own failure reaches the caller with its code and message.
    assert!(step(&steps, &format!("call:{SERVICE}:fail"))
        .detail
        .contains("probe failure"));
    assert!(step(&steps, &format!("call:{SERVICE}:nosuch"))
        .detail
        .contains("nosuch"));
    assert_eq!(step(&steps, "event").detail, "tock");
}

/// cgroups `/sys/fs/cgroup/*/elastos/<app_id>-<launcher pid>-<instance>` whose launcher is gone:
/// leaked.
fn stale_cgroups_of(app_id: &str) -> Vec<PathBuf> {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    controllers
        .flatten()
        .filter_map(|controller| std::fs::read_dir(controller.path().join("elastos")).ok())
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.strip_prefix(&format!("{app_id}-"))
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _instance)| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect()
}

#[test]
fn providers_of_an_embedded_broker_end_with_their_run_and_leave_no_cgroup() {
    // As root, so that the provider gets cgroups (v1 here) that someone must remove.
    let harness = Harness::new(User::Root);
    let provider = PROVIDER.pack(&harness);
    let client = CLIENT.pack(&harness);
    install(&harness, &provider);
    let steps = run_steps(
        &harness,
        &client,
        "client",
        &[format!("call:{SERVICE}:echo:hi=OK")],
    );
    assert_eq!(step(&steps, &format!("call:{SERVICE}:echo")).detail, "hi");
    // `elastos run` has exited: its provider was stopped and reaped, its cgroups removed.
    let stale = stale_cgroups_of(PROVIDER_ID);
    for cgroup in &stale {
        let _ = std::fs::remove_dir(cgroup);
    }
    assert!(stale.is_empty(), "cgroups left behind: {stale:?}");
}

// ---------------------------------------------------------------------------------------------
// Many starts at once: every jail's first process is a clone() of a (possibly multi-threaded)
// launcher and starts with a copy of every fd it has open; two overlapping launches once held
// each other's pipe ends and waited for each other's EOF forever.

/// Jails started at once in each round, and rounds.
const AT_ONCE: usize = 16;
const ROUNDS: usize = 50;

/// `count` installed providers, each of a service of its own, and a client that uses them all,
/// with fresh ids (their processes and cgroups are told apart from any other test's by them).
struct Fleet {
    /// (app id, service, bundle) of each provider.
    providers: Vec<(String, String, PathBuf)>,
    client: PathBuf,
}

fn fresh_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("a random uuid from the kernel")
        .trim()
        .to_owned()
}

fn fleet(harness: &Harness, count: usize) -> Fleet {
    let providers: Vec<(String, String, PathBuf)> = (0..count)
        .map(|i| {
            let (id, service, name) = (fresh_uuid(), fresh_uuid(), format!("fleet-provider-{i}"));
            let bundle = App {
                name: &name,
                id: &id,
                provides: &[&service],
                uses: &[],
                activate: &["serve", &service],
            }
            .pack(harness);
            (id, service, bundle)
        })
        .collect();
    for (_, _, bundle) in &providers {
        install(harness, bundle);
    }
    let uses: Vec<&str> = providers.iter().map(|(_, s, _)| s.as_str()).collect();
    let client_id = fresh_uuid();
    let client = App {
        name: "fleet-client",
        id: &client_id,
        provides: &[],
        uses: &uses,
        activate: &[],
    }
    .pack(harness);
    Fleet { providers, client }
}

impl Fleet {
    fn app_ids(&self) -> Vec<&str> {
        self.providers
            .iter()
            .map(|(id, _, _)| id.as_str())
            .collect()
    }
}

/// The children of `pid` that are apps, not warm jails parked by its pool (clones of the pool's
/// threads, named after them).
fn app_children_of(pid: u32) -> Vec<u32> {
    children_of(pid)
        .into_iter()
        .filter(|child| {
            !std::fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|comm| comm.starts_with("elastos-warm"))
        })
        .collect()
}

/// The children of `pid` (of all its threads).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// How many fds `pid` has open.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| fds.count())
        .unwrap_or(0)
}

/// Host processes in a cgroup named after one of `app_ids` (as root, every jail is in one).
fn processes_of_apps(app_ids: &[&str]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|cgroups| app_ids.iter().any(|id| cgroups.contains(id)))
        })
        .collect()
}

#[test]
fn concurrent_activations_by_the_daemon_all_succeed_and_leave_nothing_behind() {
    // As root: jails get cgroups, and the daemon's clones carry every fd it has.
    let harness = Harness::new(User::Root);
    let fleet = fleet(&harness, AT_ONCE);
    let ids = fleet.app_ids();
    let mut daemon = Daemon::start(&harness);
    let daemon_pid = daemon.running_mut().pid();
    let mut fds_after_first_round = None;
    for round in 0..ROUNDS {
        // AT_ONCE clients at once, each starting another provider: AT_ONCE activations at once.
        let clients: Vec<Running> = fleet
            .providers
            .iter()
            .map(|(_, service, _)| {
                let steps = [
                    format!("lookup:{service}=OK"),
                    format!("call:{service}:echo:round{round}=OK"),
                ];
                harness
                    .run(&fleet.client, &probe_args("client", &steps))
                    .spawn()
            })
            .collect();
        for client in clients {
            let steps = checked_steps(&client.wait(), 2);
            assert_eq!(
                step(&steps, "call").detail,
                format!("round{round}"),
                "round {round}"
            );
        }
        for id in &ids {
            harness.elastos().args(["stop", id]).output().assert_code(0);
        }
        // Every provider's jail is reaped, and no half-started process stays behind.
        // (The daemon's other children are its parked warm jails: tests/warm.rs.)
        let ended = eventually(Duration::from_secs(10), || {
            app_children_of(daemon_pid).is_empty() && processes_of_apps(&ids).is_empty()
        });
        assert!(
            ended,
            "round {round}: the daemon still has children {:?}, apps' processes {:?}",
            app_children_of(daemon_pid),
            processes_of_apps(&ids)
        );
        // And the daemon holds no more descriptors than after the first round (those of the
        // last control connections may take a moment to close).
        match fds_after_first_round {
            None => fds_after_first_round = Some(fd_count(daemon_pid)),
            Some(first) => assert!(
                eventually(Duration::from_secs(5), || fd_count(daemon_pid) <= first),
                "round {round}: the daemon holds {:?}, {first} fds after the first round",
                std::fs::read_dir(format!("/proc/{daemon_pid}/fd"))
                    .map(|fds| fds
                        .flatten()
                        .map(|fd| std::fs::read_link(fd.path()).unwrap_or_default())
                        .collect::<Vec<_>>())
                    .unwrap_or_default()
            ),
        }
    }
    assert!(daemon.is_serving());
    drop(daemon);
    for id in &ids {
        assert!(
            stale_cgroups_of(id).is_empty(),
            "cgroups of {id} left behind"
        );
    }
}

#[test]
fn the_daemon_activates_a_provider_from_a_warm_jail() {
    let (harness, provider, client) = setup();
    let mut daemon = Daemon::with_args(&harness, &["--warm-jails", "1"]);
    let daemon_pid = daemon.running_mut().pid();
    install(&harness, &provider);
    let warm_parked = || children_of(daemon_pid).len() - app_children_of(daemon_pid).len() == 2;
    assert!(eventually(Duration::from_secs(10), warm_parked));
    let steps = run_steps(
        &harness,
        &client,
        "client",
        &[
            format!("lookup:{SERVICE}=OK"),
            format!("call:{SERVICE}:echo:warm=OK"),
        ],
    );
    assert_eq!(step(&steps, &format!("call:{SERVICE}:echo")).detail, "warm");
    // The pool parks another one for the next activation.
    assert!(eventually(Duration::from_secs(10), warm_parked));
    let log = daemon.stop().stderr_text();
    let activated = log
        .lines()
        .find(|line| line.contains("activated") && line.contains(PROVIDER_ID))
        .unwrap_or_else(|| panic!("no activation in the daemon's log:\n{log}"));
    assert!(activated.contains("warm=true"), "{activated}");
    assert!(
        stale_cgroups_of(PROVIDER_ID).is_empty(),
        "cgroups of the provider left behind"
    );
}

#[test]
fn concurrent_activations_by_embedded_brokers_all_succeed_and_leave_nothing_behind() {
    let harness = Harness::new(User::Root);
    let fleet = fleet(&harness, AT_ONCE);
    let ids = fleet.app_ids();
    let all = fleet
        .providers
        .iter()
        .map(|(_, service, _)| service.as_str())
        .collect::<Vec<_>>()
        .join(":");
    for round in 0..ROUNDS {
        // Two `elastos run`s at once, each of whose embedded brokers starts every provider at
        // once (from as many supervisor threads).
        let runs: Vec<Running> = (0..2)
            .map(|_| {
                harness
                    .run(
                        &fleet.client,
                        &probe_args("client", &[format!("lookupall:{all}=OK")]),
                    )
                    .spawn()
            })
            .collect();
        let pids: Vec<u32> = runs.iter().map(Running::pid).collect();
        for run in runs {
            checked_steps(&run.wait(), 1);
        }
        // `elastos run` has exited: its providers are gone, and so is every clone of it (a
        // clone that never exec'd the loader still shows the client's command line).
        let ended = eventually(Duration::from_secs(10), || {
            processes_of_apps(&ids).is_empty()
                && common::processes_with(&fleet.client.to_string_lossy(), &pids).is_empty()
        });
        assert!(
            ended,
            "round {round}: left behind: apps' processes {:?}, clones of elastos run {:?}",
            processes_of_apps(&ids),
            common::processes_with(&fleet.client.to_string_lossy(), &pids)
        );
    }
    for id in &ids {
        assert!(
            stale_cgroups_of(id).is_empty(),
            "cgroups of {id} left behind"
        );
    }
}

/// A provider that exits before it registers: the client hears UNAVAILABLE, with the exit code,
/// long before the 10 s activation timeout.
#[test]
fn a_provider_that_exits_before_registering_is_unavailable_at_once() {
    let harness = Harness::new(USER);
    let quitter = App {
        name: "probe-quitter",
        activate: &["exit", "3"],
        ..PROVIDER
    };
    install(&harness, &quitter.pack(&harness));
    let steps = run_steps(
        &harness,
        &CLIENT.pack(&harness),
        "client",
        &[format!("lookup:{SERVICE}=UNAVAILABLE")],
    );
    assert!(
        steps[0]
            .detail
            .contains("exited with code 3 before it registered"),
        "{steps:?}"
    );
    assert!(steps[0].ms < 5000, "{steps:?}");
}

#[test]
fn unknown_services_are_not_found_and_permissions_hold_both_ways() {
    let (harness, _, client) = setup();
    // OTHER is installed, so its denials cannot be mistaken for its absence.
    install(&harness, &OTHER_PROVIDER.pack(&harness));
    let out = harness
        .run(
            &client,
            &probe_args(
                "client",
                &[
                    format!("lookup:{NOBODY}=NOT_FOUND"),
                    format!("call:{NOBODY}:echo=NOT_FOUND"),
                    format!("subscribe:{NOBODY}=NOT_FOUND"),
                    // A watch starts nothing and waits: fine for a service nobody provides.
                    format!("watch:{NOBODY}=OK"),
                    format!("lookup:{OTHER}=PERMISSION_DENIED"),
                    format!("call:{OTHER}:echo=PERMISSION_DENIED"),
                    format!("subscribe:{OTHER}=PERMISSION_DENIED"),
                    format!("watch:{OTHER}=PERMISSION_DENIED"),
                    // Registering: outside `provides`, whether or not the app uses it.
                    format!("register:{OTHER}=PERMISSION_DENIED"),
                    format!("register:{NOBODY}=PERMISSION_DENIED"),
                ],
            ),
        )
        .output();
    let steps = checked_steps(&out, 10);
    assert!(
        step(&steps, &format!("lookup:{OTHER}"))
            .detail
            .contains("services.uses"),
        "the denial says why: {steps:#?}"
    );
    assert!(
        step(&steps, &format!("register:{OTHER}"))
            .detail
            .contains("services.provides"),
        "the denial says why: {steps:#?}"
    );
    let log = out.stderr_text();
    assert!(
        !log.contains("elastos-broker-probe: serving"),
        "a denied lookup must not activate the installed provider:\n{log}"
    );
    assert!(
        log.contains("permission denied") && log.contains(OTHER) && log.contains(CLIENT_ID),
        "denials are logged with the app and the service:\n{log}"
    );
}

#[test]
fn a_provider_dying_mid_call_is_unavailable_and_its_clients_are_told() {
    let (harness, provider, client) = setup();
    install(&harness, &provider);
    let steps = run_steps(
        &harness,
        &client,
        "client",
        &[
            format!("lookup:{SERVICE}=OK"),
            format!("call:{SERVICE}:die=UNAVAILABLE"),
            format!("gone:{SERVICE}:5000=DISCONNECTED"),
            // The next lookup starts a new instance.
            format!("lookup:{SERVICE}=OK"),
            format!("call:{SERVICE}:echo:again=OK"),
        ],
    );
    assert!(step(&steps, "gone").ms < 5000);
    assert_eq!(
        step(&steps, &format!("call:{SERVICE}:echo")).detail,
        "again"
    );
}

#[test]
fn deadlines_cancellation_limits_and_malformed_requests() {
    let (harness, provider, client) = setup();
    install(&harness, &provider);
    let steps = run_steps(
        &harness,
        &client,
        "client",
        &[
            format!("lookup:{SERVICE}=OK"),
            format!("call:{SERVICE}:sleep:5000:200=DEADLINE_EXCEEDED"),
            // Dropping the call's future cancels it.
            format!("drop:{SERVICE}:100=DROPPED"),
            // 256 calls in flight is the limit: the 257th is refused at once.
            format!("inflight:{SERVICE}:257:1000=OK=256,RESOURCE_EXHAUSTED=1"),
            s("sleep:100"),
            format!("call:{SERVICE}:stats=OK"),
        ],
    );
    let deadline = step(&steps, &format!("call:{SERVICE}:sleep"));
    assert!(
        (190..2000).contains(&deadline.ms),
        "a 200 ms deadline ended the call after {} ms",
        deadline.ms
    );
    // The provider saw both: the deadline and the drop cancelled its handlers.
    assert_eq!(
        step(&steps, &format!("call:{SERVICE}:stats")).detail,
        "cancelled=2"
    );

    let steps = run_steps(
        &harness,
        &client,
        "raw",
        &[
            s("hello=OK"),
            format!("call:{SERVICE}:echo:raw=OK"),
            format!("cancel:{SERVICE}=CANCELLED"),
            s("badid=INVALID_ARGUMENT"),
            format!("call:{SERVICE}:no!such=INVALID_ARGUMENT"),
            format!("dupcall:{SERVICE}=INVALID_ARGUMENT"),
            // None of it cost the connection.
            format!("call:{SERVICE}:echo:still=OK"),
        ],
    );
    assert!(
        step(&steps, "badid").detail.contains("16-byte"),
        "{steps:#?}"
    );
    assert!(
        step(&steps, "dupcall").detail.contains("already in use"),
        "{steps:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Through the daemon

#[test]
fn the_daemon_serves_a_hundred_clients_at_once() {
    let (harness, provider, client) = setup();
    let daemon = Daemon::start(&harness);
    install(&harness, &provider);
    let started = Instant::now();
    let clients: Vec<Running> = (0..100)
        .map(|_| {
            harness
                .run(
                    &client,
                    &probe_args(
                        "client",
                        &[
                            format!("lookup:{SERVICE}=OK"),
                            format!("load:{SERVICE}:4:40=OK"),
                        ],
                    ),
                )
                .spawn()
        })
        .collect();
    // And one client with many calls in flight at once.
    let busy = harness
        .run(
            &client,
            &probe_args("client", &[format!("load:{SERVICE}:64:5000=OK")]),
        )
        .spawn();
    for client in clients {
        let steps = checked_steps(&client.wait(), 2);
        assert_eq!(detail_number(step(&steps, "load"), "calls"), 40);
    }
    let steps = checked_steps(&busy.wait(), 1);
    assert_eq!(detail_number(&steps[0], "calls"), 5000);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "101 clients took {:?}",
        started.elapsed()
    );
    // One provider served them all: activations of one service are shared.
    let ps = running_apps(&harness);
    let providers = rows_with(&ps, "name", PROVIDER.name);
    assert_eq!(providers.len(), 1, "{ps:#}");
    assert_eq!(rows_with(&ps, "name", CLIENT.name).len(), 0, "{ps:#}");
    drop(daemon);
}

/// Runs the `hostile` raw clients (name, steps) at once while a well-behaved client calls the
/// provider one call after another; asserts that each hostile client saw what it expected and
/// returns the well-behaved client's `steady` step.
fn under_attack(harness: &Harness, client: &Path, hostile: &[(&str, Vec<String>)]) -> Step {
    let steady = harness
        .run(
            client,
            &probe_args(
                "client",
                &[
                    format!("lookup:{SERVICE}=OK"),
                    format!("steady:{SERVICE}:2000"),
                ],
            ),
        )
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let runs: Vec<(&str, usize, Running)> = hostile
        .iter()
        .map(|(what, steps)| {
            (
                *what,
                steps.len(),
                harness.run(client, &probe_args("raw", steps)).spawn(),
            )
        })
        .collect();
    for (what, count, run) in runs {
        let out = run.wait();
        assert_eq!(
            out.code,
            Some(0),
            "hostile client {what}:\n{}\n{}",
            out.stdout_text(),
            out.stderr_text()
        );
        checked_steps(&out, count);
    }
    let steps = checked_steps(&steady.wait(), 2);
    let steady = step(&steps, "steady").clone();
    assert!(detail_number(&steady, "calls") > 20, "{steady:?}");
    assert!(
        detail_number(&steady, "max_ms") < CALL_BOUND.as_millis() as u64,
        "a well-behaved call waited too long: {steady:?}"
    );
    steady
}

/// Hostile clients, run while a well-behaved client keeps calling: each is disconnected with a
/// logged reason, and the others are still served.
#[test]
fn hostile_clients_are_disconnected_while_others_keep_being_served() {
    let (harness, provider, client) = setup();
    let mut daemon = Daemon::start(&harness);
    // A provider started by hand (not installed): the daemon serves launched apps too.
    let _provider = harness.run(&provider, &["serve", SERVICE]).spawn();
    assert!(
        eventually(Duration::from_secs(10), || {
            let services = elastos_json(&harness, &["services"]);
            rows_with(&services, "state", "registered").len() == 1
        }),
        "the provider never registered"
    );

    let closed = |status: &str| format!("closed:5000=GOODBYE:{status}");
    let steady = under_attack(
        &harness,
        &client,
        &[
            (
                "garbage",
                vec![s("hello=OK"), s("garbage=SENT"), closed("INVALID_ARGUMENT")],
            ),
            (
                "oversize",
                vec![
                    s("hello=OK"),
                    s("oversize=SENT"),
                    closed("INVALID_ARGUMENT"),
                ],
            ),
            (
                "empty",
                vec![s("hello=OK"), s("empty=SENT"), closed("INVALID_ARGUMENT")],
            ),
            (
                "unknown",
                vec![s("hello=OK"), s("unknown=SENT"), closed("INVALID_ARGUMENT")],
            ),
            (
                "fdpass",
                vec![
                    s("hello=OK"),
                    format!("fdpass:{SERVICE}=SENT"),
                    closed("INVALID_ARGUMENT"),
                ],
            ),
            (
                "no hello",
                vec![format!("lookup:{SERVICE}=GOODBYE:INVALID_ARGUMENT")],
            ),
            // Small calls the broker answers itself (NOT_FOUND), never reading the answers:
            // closed once its queue passes the bound.
            (
                "flood",
                vec![
                    s("hello=OK"),
                    format!("flood:{NOBODY}:10000:0=CLOSED"),
                    s("closed:5000"),
                ],
            ),
        ],
    );
    assert_eq!(
        steady.outcome, "OK",
        "a well-behaved call failed: {steady:?}"
    );

    // A flood of large calls to the provider the well-behaved client uses, never reading the
    // replies: closed too. While the provider's queue is full (1 MiB), calls to it from anyone
    // are refused RESOURCE_EXHAUSTED (docs/protocol.md, "Limits"); nothing else may go wrong.
    let steady = under_attack(
        &harness,
        &client,
        &[(
            "flood of the provider",
            vec![
                s("hello=OK"),
                format!("flood:{SERVICE}:10000:32768=CLOSED"),
                s("closed:5000"),
            ],
        )],
    );
    let failures = detail_value(&steady, "failures");
    assert!(
        failures == "none"
            || failures
                .strip_prefix("RESOURCE_EXHAUSTED:")
                .is_some_and(|n| !n.contains(',')),
        "a well-behaved call failed otherwise than RESOURCE_EXHAUSTED: {steady:?}"
    );

    // The daemon lives on and serves new clients.
    assert!(daemon.is_serving(), "the daemon died");
    run_steps(
        &harness,
        &client,
        "client",
        &[format!("call:{SERVICE}:echo:after=OK")],
    );

    // A client that exits while its call runs: the provider is told to stop working on it.
    // (Alone: while the flood fills the provider's queue, its call may be refused instead. And
    // it waits a moment before exiting: a call cancelled before its handler ever ran leaves no
    // trace in the provider to count.)
    run_steps(
        &harness,
        &client,
        "raw",
        &[
            s("hello=OK"),
            format!("midcall:{SERVICE}=SENT"),
            s("closed:300=OPEN"),
        ],
    );
    let mut stats = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            stats = run_steps(
                &harness,
                &client,
                "client",
                &[format!("call:{SERVICE}:stats=OK")],
            );
            stats[0].detail == "cancelled=1"
        }),
        "the abandoned call was not cancelled: {stats:#?}"
    );
    let mut ps = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(5), || {
            ps = running_apps(&harness);
            ps.as_array().expect("an array").len() == 1
        }),
        "only the provider should be left: {ps:#}"
    );

    let log = daemon.stop().stderr_text();
    for reason in [
        "not a valid ClientFrame",
        "larger than the maximum",
        "zero-length frame",
        "no body",
        "SCM_RIGHTS",
        "the first frame is lookup",
        "not reading",
    ] {
        assert!(
            log.contains(reason),
            "no logged reason {reason:?} in:\n{log}"
        );
    }
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn cli_manages_installed_and_running_apps() {
    let (harness, provider, client) = setup();
    let daemon = Daemon::start(&harness);
    assert_eq!(elastos_json(&harness, &["list"]), serde_json::json!([]));
    install(&harness, &provider);
    let list = elastos_json(&harness, &["list"]);
    let installed = rows_with(&list, "app_id", PROVIDER_ID);
    assert_eq!(installed.len(), 1, "{list:#}");
    assert_eq!(installed[0]["name"], PROVIDER.name);
    let services = elastos_json(&harness, &["services"]);
    let service = rows_with(&services, "service", SERVICE);
    assert_eq!(service.len(), 1, "{services:#}");
    assert_eq!(service[0]["state"], "installed");

    // A client that holds on to the provider until it is stopped.
    let holder = harness
        .run(
            &client,
            &probe_args(
                "client",
                &[
                    format!("lookup:{SERVICE}=OK"),
                    format!("gone:{SERVICE}:20000=STOPPED"),
                ],
            ),
        )
        .spawn();
    let mut ps = serde_json::Value::Null;
    // Both are listed once attached; the provider's service once it has registered it.
    assert!(
        eventually(Duration::from_secs(10), || {
            ps = running_apps(&harness);
            ps.as_array().expect("an array").len() == 2
                && rows_with(&ps, "name", PROVIDER.name)
                    .first()
                    .is_some_and(|row| row["services"] == serde_json::json!([SERVICE]))
        }),
        "expected the client and its provider, with its service, in {ps:#}"
    );
    let provider_row = rows_with(&ps, "name", PROVIDER.name)[0].clone();
    assert_eq!(provider_row["origin"], "activated");
    assert_eq!(provider_row["app_id"], PROVIDER_ID);
    assert_eq!(provider_row["services"], serde_json::json!([SERVICE]));
    assert!(provider_row["pid"].as_u64().is_some(), "{provider_row:#}");
    let client_row = rows_with(&ps, "name", CLIENT.name)[0].clone();
    assert_eq!(client_row["origin"], "launched");
    assert_eq!(client_row["app_id"], CLIENT_ID);
    let services = elastos_json(&harness, &["services"]);
    let service = rows_with(&services, "service", SERVICE)[0].clone();
    assert_eq!(service["state"], "registered");
    assert_eq!(service["provider_name"], PROVIDER.name);
    assert_eq!(service["connection"], provider_row["id"]);

    // Stopping the provider tells its client why.
    harness
        .elastos()
        .args(["stop", PROVIDER_ID])
        .output()
        .assert_code(0);
    let steps = checked_steps(&holder.wait(), 2);
    assert_eq!(step(&steps, "gone").outcome, "STOPPED");
    assert!(
        eventually(Duration::from_secs(5), || {
            running_apps(&harness)
                .as_array()
                .expect("an array")
                .is_empty()
        }),
        "the stopped provider is still listed"
    );
    let out = harness.elastos().args(["stop", "12345"]).output();
    out.assert_code(125);
    assert!(
        out.stderr_text().contains("no running app"),
        "{}",
        out.stderr_text()
    );

    let removed = elastos_json(&harness, &["uninstall", PROVIDER_ID]);
    assert_eq!(removed["app_id"], PROVIDER_ID);
    assert_eq!(elastos_json(&harness, &["list"]), serde_json::json!([]));
    run_steps(
        &harness,
        &client,
        "client",
        &[format!("lookup:{SERVICE}=NOT_FOUND")],
    );
    drop(daemon);

    // Without a daemon there is nothing running to show.
    for command in ["ps", "services"] {
        let out = harness.elastos().arg(command).output();
        out.assert_code(125);
        assert!(
            out.stderr_text().contains("elastos broker"),
            "{}",
            out.stderr_text()
        );
    }
}

/// Control connections that never send a request (more than the daemon's blocking thread pool
/// has threads) do not keep `elastos ps` waiting, and are closed after the request timeout (5 s).
#[test]
fn idle_control_connections_do_not_block_the_daemon_and_are_closed() {
    use std::io::Read;
    let harness = Harness::new(USER);
    let daemon = Daemon::start(&harness);
    let idle: Vec<UnixStream> = (0..530)
        .map(|_| UnixStream::connect(&daemon.socket).expect("connect to the control socket"))
        .collect();
    let opened = Instant::now();
    // Bounded here rather than by the harness's long command timeout, and ended by the guard.
    for what in ["ps", "services"] {
        let mut running = harness.elastos().args([what, "--format", "json"]).spawn();
        let answered = eventually(Duration::from_secs(3), || !running.is_running());
        let out = running.terminate(Duration::ZERO);
        assert!(answered, "`elastos {what}` hung:\n{}", out.stderr_text());
        json(&out);
    }
    // Every idle connection is closed: the oldest to make room, the rest after the timeout.
    for mut stream in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut answer = String::new();
        let read = stream.read_to_string(&mut answer);
        assert!(read.is_ok(), "still open after {:?}", opened.elapsed());
        assert!(answer.contains("\"error\""), "{answer:?}");
    }
    assert!(
        opened.elapsed() < Duration::from_secs(9),
        "{:?}",
        opened.elapsed()
    );
}

#[test]
fn an_idle_activated_provider_is_stopped_and_its_clients_are_told() {
    let (harness, provider, client) = setup();
    let _daemon = Daemon::stopping_idle_after(&harness, 1);
    install(&harness, &provider);
    let steps = run_steps(
        &harness,
        &client,
        "client",
        &[
            format!("lookup:{SERVICE}=OK"),
            format!("call:{SERVICE}:echo:busy=OK"),
            format!("gone:{SERVICE}:10000=STOPPED"),
        ],
    );
    let idle = step(&steps, "gone").ms;
    assert!(
        (900..5000).contains(&idle),
        "stopped after {idle} ms without calls; expected about 1 s"
    );
    let ps = running_apps(&harness);
    assert!(rows_with(&ps, "name", PROVIDER.name).is_empty(), "{ps:#}");
}

#[test]
fn a_watcher_hears_of_a_provider_started_later() {
    let (harness, provider, client) = setup();
    let _daemon = Daemon::start(&harness);
    let watcher = harness
        .run(
            &client,
            &probe_args(
                "client",
                &[
                    format!("watch:{SERVICE}=OK"),
                    format!("available:{SERVICE}:20000=OK"),
                ],
            ),
        )
        .spawn();
    // The watch starts nothing: the service stays unprovided until someone runs a provider.
    std::thread::sleep(Duration::from_millis(300));
    let services = elastos_json(&harness, &["services"]);
    assert!(
        rows_with(&services, "service", SERVICE).is_empty(),
        "{services:#}"
    );
    let _provider = harness.run(&provider, &["serve", SERVICE]).spawn();
    let steps = checked_steps(&watcher.wait(), 2);
    assert_eq!(step(&steps, "available").detail, PROVIDER.name);
}

#[test]
fn installed_apps_survive_a_daemon_restart() {
    let (harness, provider, client) = setup();
    let daemon = Daemon::start(&harness);
    install(&harness, &provider);
    let out = daemon.stop();
    assert_eq!(
        out.code,
        Some(0),
        "the daemon's exit on SIGTERM:\n{}",
        out.stderr_text()
    );

    let _daemon = Daemon::start(&harness);
    let list = elastos_json(&harness, &["list"]);
    assert_eq!(rows_with(&list, "app_id", PROVIDER_ID).len(), 1, "{list:#}");
    run_steps(
        &harness,
        &client,
        "client",
        &[
            format!("lookup:{SERVICE}=OK"),
            format!("call:{SERVICE}:echo:back=OK"),
        ],
    );
}

#[test]
fn a_corrupt_database_is_a_clear_error() {
    let (harness, provider, client) = setup();
    install(&harness, &provider);
    let current = harness.elastos_home().join("broker.db/CURRENT");
    assert!(current.is_file(), "no {}", current.display());
    std::fs::write(&current, b"\x00garbage\xff\n").expect("corrupt the database");

    for args in [
        &["list"][..],
        &["install", provider.to_str().unwrap()],
        &["broker"],
    ] {
        let out = harness.elastos().args(args).output();
        out.assert_code(125);
        let stderr = out.stderr_text();
        assert!(
            stderr.contains("broker.db") && !stderr.contains("panicked"),
            "elastos {args:?} should name the database and not panic:\n{stderr}"
        );
    }
    // Apps still run, and activation too, from the installed-apps index the database's writer
    // kept (host/src/installed_index.rs): nothing could change the database since.
    run_steps(
        &harness,
        &client,
        "client",
        &[format!("lookup:{SERVICE}=OK")],
    );
    // Without the index, activation asks the database: unavailable, naming it.
    std::fs::remove_file(harness.elastos_home().join("installed.json")).expect("the index");
    let steps = run_steps(
        &harness,
        &client,
        "client",
        &[format!("lookup:{SERVICE}=UNAVAILABLE")],
    );
    assert!(
        step(&steps, "lookup").detail.contains("broker.db"),
        "{steps:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// `elastos metrics --format json`: each sample's value by `name{label="value",...}`.
fn metrics(harness: &Harness) -> std::collections::HashMap<String, f64> {
    let samples = elastos_json(harness, &["metrics"]);
    samples
        .as_array()
        .expect("an array of samples")
        .iter()
        .map(|sample| {
            let name = sample["name"].as_str().expect("a name");
            let labels: Vec<String> = sample["labels"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", value.as_str().unwrap_or_default()))
                .collect();
            let key = if labels.is_empty() {
                name.to_owned()
            } else {
                format!("{name}{{{}}}", labels.join(","))
            };
            (key, sample["value"].as_f64().expect("a number"))
        })
        .collect()
}

#[test]
fn metrics_count_the_calls_denials_activations_and_restarts_of_jailed_apps() {
    let (harness, provider, client) = setup();
    install(&harness, &provider);
    let _daemon = Daemon::start(&harness);
    let before = metrics(&harness);
    for name in [
        "elastos_calls_total",
        "elastos_call_duration_seconds_count",
        "elastos_activations_total",
        "elastos_app_restarts_total",
        "elastos_connections_total",
    ] {
        assert_eq!(before[name], 0.0, "{name} of a fresh daemon");
    }

    checked_steps(
        &harness
            .run(
                &client,
                &probe_args(
                    "client",
                    &[
                        format!("call:{SERVICE}:echo:one=OK"),
                        format!("call:{SERVICE}:echo:two=OK"),
                        format!("call:{SERVICE}:fail:INTERNAL=INTERNAL"),
                        format!("call:{OTHER}:echo:no=PERMISSION_DENIED"),
                        format!("lookup:{OTHER}=PERMISSION_DENIED"),
                    ],
                ),
            )
            .output(),
        5,
    );
    let after = metrics(&harness);
    // Four call frames, three answered by the provider (its failure too), one denied.
    assert_eq!(after["elastos_calls_total"], 4.0);
    assert_eq!(after["elastos_call_duration_seconds_count"], 3.0);
    assert_eq!(
        after["elastos_call_duration_seconds_bucket{le=\"+Inf\"}"],
        3.0
    );
    assert!(after["elastos_call_duration_seconds_sum"] > 0.0);
    // Cumulative buckets (`+Inf` last), the last bound (30 s) holding every call.
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(key, count)| {
            let bound = key
                .strip_prefix("elastos_call_duration_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            Some((bound.parse().ok()?, *count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(
        buckets[buckets.len() - 2..],
        [(30.0, 3.0), (f64::INFINITY, 3.0)]
    );
    assert_eq!(after["elastos_denials_total{action=\"call\"}"], 1.0);
    assert_eq!(after["elastos_denials_total{action=\"lookup\"}"], 1.0);
    assert_eq!(after["elastos_activations_total"], 1.0);
    assert_eq!(after["elastos_activation_failures_total"], 0.0);
    assert_eq!(after["elastos_connections_total"], 2.0);
    assert_eq!(after["elastos_apps_running{origin=\"activated\"}"], 1.0);
    assert_eq!(after["elastos_app_restarts_total"], 0.0);

    // Stopped, then needed again: the provider is started a second time, a restart.
    harness
        .elastos()
        .args(["stop", PROVIDER_ID])
        .output()
        .assert_code(0);
    assert!(eventually(Duration::from_secs(10), || {
        running_apps(&harness).as_array().is_some_and(Vec::is_empty)
    }));
    run_steps(
        &harness,
        &client,
        "client",
        &[format!("call:{SERVICE}:echo:again=OK")],
    );
    let restarted = metrics(&harness);
    assert_eq!(restarted["elastos_activations_total"], 2.0);
    assert_eq!(restarted["elastos_app_restarts_total"], 1.0);
    assert_eq!(restarted["elastos_calls_total"], 5.0);
    assert_eq!(restarted["elastos_call_duration_seconds_count"], 4.0);
}
