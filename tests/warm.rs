//! Warm jails (`elastos broker --warm-jails N`): detached runs start from jails the daemon built
//! ahead of time, still get the whole jail, the pool refills, and nothing of it outlives the
//! daemon; with 0 every start is cold, as before. (Activations from the pool: tests/broker.rs.)
//!
//! Every test starts its own daemon (a [`Daemon`] guard) in its own `ELASTOS_HOME`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{assert_no_cgroups_of, eventually, json, Daemon, Harness, Output, User};

const APP_ID: &str = "2a7c1e0b-5d94-4f6e-8b3a-c1d2e3f4a5b6";

#[track_caller]
fn ok(out: &Output) -> String {
    out.assert_code(0);
    out.stdout_text()
}

fn run_detached(harness: &Harness, bundle: &Path, args: &[&str]) -> String {
    let out = harness
        .elastos()
        .args(["run", "-d"])
        .arg(bundle)
        .arg("--")
        .args(args)
        .output();
    ok(&out).trim().to_string()
}

fn inspect(harness: &Harness, id: &str) -> serde_json::Value {
    json(
        &harness
            .elastos()
            .args(["inspect", id, "--format", "json"])
            .output(),
    )[0]
    .clone()
}

/// The value of metric `line_start` (a name with its labels) in `elastos metrics`.
fn metric(harness: &Harness, line_start: &str) -> Option<u64> {
    let out = harness.elastos().arg("metrics").output();
    let text = ok(&out);
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{line_start} ")))
        .map(|value| value.trim().parse().expect("a whole number"))
}

fn daemon_pid(harness: &Harness) -> u32 {
    let ps = json(&harness.elastos().args(["ps", "--format", "json"]).output());
    ps["daemon"]["pid"].as_u64().expect("the daemon's pid") as u32
}

/// The daemon's children that are parked warm jails (named after the pool's threads, whose
/// clones they are).
fn warm_children(daemon: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{daemon}/task")).into_iter();
    tasks
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with("elastos-warm"))
        })
        .collect()
}

/// The probe's JSON line for `probe` in the instance's log.
fn probe_result(harness: &Harness, id: &str, probe: &str) -> serde_json::Value {
    let mut line = None;
    let found = eventually(Duration::from_secs(10), || {
        let out = harness.elastos().args(["logs", id]).output();
        line = out
            .stdout_text()
            .lines()
            .find(|line| line.contains(&format!("\"probe\":\"{probe}\"")))
            .map(str::to_owned);
        line.is_some()
    });
    assert!(found, "no {probe} result in the log of {id}");
    serde_json::from_str(&line.expect("found")).expect("a probe line is JSON")
}

/// No process of `pids` exists any more.
fn all_gone(pids: &[u32]) -> bool {
    pids.iter()
        .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

#[test]
fn detached_runs_start_from_warm_jails_which_refill_and_go_with_the_daemon() {
    for user in [User::Root, User::Unprivileged] {
        let harness = Harness::new(user);
        let bundle = harness.probe_bundle("probe", APP_ID, "");
        let daemon = Daemon::with_args(&harness, &["--warm-jails", "1"]);
        let pid = daemon_pid(&harness);
        // One per kind of start: detached runs and activations.
        let parked = |count| {
            eventually(Duration::from_secs(10), || {
                metric(&harness, "elastos_warm_jails_parked") == Some(count)
                    && warm_children(pid).len() == count as usize
            })
        };
        assert!(parked(2), "{user:?}: {:?}", warm_children(pid));
        assert_eq!(metric(&harness, "elastos_warm_jails_size"), Some(1));
        let idle = metric(&harness, "elastos_warm_jails_idle_pss_bytes").expect("idle cost");
        assert!(idle > 0 && idle < 64 << 20, "{user:?}: idle Pss {idle}");
        let first_pool = warm_children(pid);

        // The whole jail still holds: no process creation, no socket.
        for probe in ["fork", "inet-udp", "socketpair-unix"] {
            let id = run_detached(&harness, &bundle, &["run", probe]);
            let result = probe_result(&harness, &id, probe);
            // Filtered by seccomp (ENOSYS), as in tests/escape.rs.
            assert_eq!(
                (&result["ret"], &result["errno"]),
                (&serde_json::json!(-1), &serde_json::json!(libc::ENOSYS)),
                "{user:?} {probe} in a warm jail: {result}"
            );
            let run = &inspect(&harness, &id)["runs"][0];
            assert_eq!(run["warm"], true, "{user:?} {probe}: {run:#}");
            // Its replacement is parked again.
            assert!(parked(2), "{user:?}: the pool did not refill");
        }
        assert_eq!(
            metric(&harness, "elastos_starts_total{jail=\"warm\"}"),
            Some(3)
        );
        assert_eq!(
            metric(&harness, "elastos_starts_total{jail=\"cold\"}"),
            Some(0)
        );
        let id = run_detached(&harness, &bundle, &["sleep", "60"]);
        assert_eq!(inspect(&harness, &id)["runs"][0]["warm"], true);
        assert!(parked(2));
        let pool = warm_children(pid);
        // The detached kind's jail was taken and replaced; the activations' one still waits.
        assert_eq!(
            pool.iter().filter(|p| first_pool.contains(p)).count(),
            1,
            "{user:?}: parked jails {first_pool:?}, then {pool:?}"
        );

        let out = daemon.stop();
        assert!(
            out.stderr_text().contains("warm=true"),
            "{user:?}: {}",
            out.stderr_text()
        );
        assert!(
            eventually(Duration::from_secs(5), || all_gone(&pool)),
            "{user:?}: parked jails {pool:?} outlived the daemon"
        );
        assert_no_cgroups_of(pid);
    }
}

#[test]
fn with_no_warm_jails_every_start_is_cold() {
    let harness = Harness::new(User::Root);
    let bundle = harness.probe_bundle("probe", APP_ID, "");
    let daemon = Daemon::with_args(&harness, &["--warm-jails", "0"]);
    let pid = daemon_pid(&harness);
    let id = run_detached(&harness, &bundle, &["run", "fork"]);
    assert_eq!(probe_result(&harness, &id, "fork")["errno"], libc::ENOSYS);
    assert_eq!(inspect(&harness, &id)["runs"][0]["warm"], false);
    assert_eq!(metric(&harness, "elastos_warm_jails_parked"), Some(0));
    assert_eq!(
        metric(&harness, "elastos_starts_total{jail=\"cold\"}"),
        Some(1)
    );
    assert!(warm_children(pid).is_empty());
    drop(daemon);
    assert_no_cgroups_of(pid);
}

#[test]
fn a_bad_pool_size_is_refused_by_name() {
    let harness = Harness::new(User::Root);
    let out = harness
        .elastos()
        .args(["broker", "--warm-jails", "two"])
        .output();
    // clap's refusal, in elastos's exit code for bad input.
    out.assert_code(125);
    assert!(
        out.stderr_text().contains("--warm-jails"),
        "{}",
        out.stderr_text()
    );
}
