//! Detached apps under the broker daemon, operated like podman containers: `run -d`, `ps`,
//! `logs`, `stop`, `kill`, `restart`, `rm`, `prune`, `inspect`, restart policies, log rotation,
//! and instances kept across daemon restarts.
//!
//! Every test starts its own daemon (a [`Daemon`] guard: SIGTERM on drop, which stops the apps
//! it runs and removes their cgroups) in its own `ELASTOS_HOME`; apps that ignore SIGTERM are
//! stopped by the test itself before the guard runs.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{assert_no_cgroups_of, eventually, json, Daemon, Harness, Output, User};

const APP_ID: &str = "6f1f52c4-1d0b-4f43-9e55-0b7a1e5d3c21";

/// A harness with a running daemon (`daemon_args` for `elastos broker`) and the probe bundle.
fn setup(user: User, daemon_args: &[&str]) -> (Harness, Daemon, PathBuf) {
    let harness = Harness::new(user);
    let bundle = harness.probe_bundle("probe", APP_ID, "");
    let daemon = Daemon::with_args(&harness, daemon_args);
    (harness, daemon, bundle)
}

#[track_caller]
fn ok(out: &Output) -> String {
    out.assert_code(0);
    out.stdout_text()
}

/// `elastos run -d [OPTIONS] BUNDLE -- ARGS`; the instance id it printed.
#[track_caller]
fn run_detached(harness: &Harness, options: &[&str], bundle: &Path, args: &[&str]) -> String {
    let out = harness
        .elastos()
        .args(["run", "-d"])
        .args(options)
        .arg(bundle)
        .arg("--")
        .args(args)
        .output();
    let id = ok(&out).trim().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "run -d printed {id:?}, not an instance id"
    );
    id
}

/// `elastos COMMAND ARGS`, which must succeed.
#[track_caller]
fn elastos(harness: &Harness, args: &[&str]) -> String {
    ok(&harness.elastos().args(args).output())
}

/// `elastos COMMAND ARGS`, which must fail with 125; its stderr.
#[track_caller]
fn refused(harness: &Harness, args: &[&str]) -> String {
    let out = harness.elastos().args(args).output();
    out.assert_code(125);
    out.stderr_text()
}

/// `inspect ID --format json`: an array of one, as podman's.
fn inspect(harness: &Harness, id: &str) -> serde_json::Value {
    let all = json(
        &harness
            .elastos()
            .args(["inspect", id, "--format", "json"])
            .output(),
    );
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all:#}");
    all[0].clone()
}

/// The instance `id` in `ps -a --format json`.
fn ps_row(harness: &Harness, id: &str) -> Option<serde_json::Value> {
    let ps = json(
        &harness
            .elastos()
            .args(["ps", "-a", "--format", "json"])
            .output(),
    );
    ps["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|row| row["id"] == id)
        .cloned()
}

#[track_caller]
fn wait_for_state(harness: &Harness, id: &str, state: &str) -> serde_json::Value {
    let mut last = None;
    let reached = eventually(Duration::from_secs(20), || {
        last = ps_row(harness, id);
        last.as_ref().is_some_and(|row| row["state"] == state)
    });
    assert!(reached, "instance {id} never became {state}: {last:#?}");
    last.expect("a row")
}

/// `elastos logs ARGS` as (stdout, stderr).
fn logs(harness: &Harness, args: &[&str]) -> (String, String) {
    let out = harness.elastos().arg("logs").args(args).output();
    out.assert_code(0);
    (out.stdout_text(), out.stderr_text())
}

#[track_caller]
fn wait_for_log(harness: &Harness, id: &str, text: &str) {
    let mut seen = (String::new(), String::new());
    let found = eventually(Duration::from_secs(20), || {
        seen = logs(harness, &[id]);
        seen.0.contains(text) || seen.1.contains(text)
    });
    assert!(found, "the log of {id} never showed {text:?}: {seen:?}");
}

fn daemon_pid(harness: &Harness) -> u32 {
    let ps = json(&harness.elastos().args(["ps", "--format", "json"]).output());
    ps["daemon"]["pid"].as_u64().expect("the daemon's pid") as u32
}

#[test]
fn run_detached_then_ps_shows_it_running_with_memory() {
    for user in [User::Root, User::Unprivileged] {
        let (harness, daemon, bundle) = setup(user, &[]);
        let pid = daemon_pid(&harness);
        let id = run_detached(&harness, &[], &bundle, &["sleep", "60"]);
        let row = wait_for_state(&harness, &id, "running");
        assert_eq!(row["app_id"], APP_ID);
        assert_eq!(row["name"], "probe");
        assert_eq!(row["restarts"], 0);
        assert_eq!(row["restart_policy"], "no");
        assert!(row["pid"].as_u64().is_some(), "{row:#}");
        let memory = row["memory_bytes"].as_u64().expect("memory while running");
        // The probe and the jail's init: more than a page, less than the default limit.
        assert!(memory > 4096 && memory < 512 << 20, "{user:?}: {memory}");
        assert!(row["uptime_secs"].as_u64().is_some());
        // Its connection is listed once, as the instance's.
        let ps = json(&harness.elastos().args(["ps", "--format", "json"]).output());
        let connections = ps["apps"].as_array().expect("apps");
        assert_eq!(connections.len(), 1, "{ps:#}");
        assert_eq!(connections[0]["instance"], id.as_str());
        let table = elastos(&harness, &["ps"]);
        let line = table
            .lines()
            .find(|line| line.starts_with(&id[..12]))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(
            line.contains("detached") && line.contains("running"),
            "{line}"
        );
        assert!(line.contains("iB"), "no memory column: {line}");
        assert_eq!(
            table.lines().count(),
            2,
            "the connection is listed twice:\n{table}"
        );

        assert_eq!(elastos(&harness, &["stop", &id[..8]]).trim(), &id[..8]);
        // `ps` lists running apps only; `ps -a` keeps the exited one, like podman's.
        let ps = json(&harness.elastos().args(["ps", "--format", "json"]).output());
        assert_eq!(ps["instances"], serde_json::json!([]), "{ps:#}");
        let row = ps_row(&harness, &id).expect("ps -a lists it");
        assert_eq!(row["state"], "exited");
        assert_eq!(row["exit_code"], 128 + 15, "stopped by SIGTERM");
        assert!(row["pid"].is_null() && row["memory_bytes"].is_null());
        assert!(elastos(&harness, &["ps", "-a"]).contains("exited (143)"));
        drop(daemon);
        assert_no_cgroups_of(pid);
    }
}

#[test]
fn logs_tail_and_follow_see_the_output() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    // 30 lines on each stream, 100 ms apart: `logs -f` starts while it runs and must end when
    // it exits.
    let id = run_detached(&harness, &[], &bundle, &["ticker", "30", "100"]);
    let follow = harness.elastos().args(["logs", "-f", &id]).spawn();
    let started = Instant::now();
    let out = follow.wait();
    out.assert_code(0);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "logs -f ended before the app did"
    );
    let ticks: Vec<String> = (0..30).map(|i| format!("tick {i}")).collect();
    let tocks: Vec<String> = (0..30).map(|i| format!("tock {i}")).collect();
    assert_eq!(out.stdout_text().lines().collect::<Vec<_>>(), ticks);
    assert_eq!(out.stderr_text().lines().collect::<Vec<_>>(), tocks);
    wait_for_state(&harness, &id, "exited");

    let (all, errors) = logs(&harness, &[&id]);
    assert_eq!(all.lines().collect::<Vec<_>>(), ticks);
    assert_eq!(errors.lines().collect::<Vec<_>>(), tocks);
    // --tail counts lines of both streams.
    let (tail_out, tail_err) = logs(&harness, &["--tail", "2", &id]);
    assert_eq!(
        (tail_out.as_str(), tail_err.as_str()),
        ("tick 29\n", "tock 29\n")
    );
    let (stamped, _) = logs(&harness, &["--timestamps", "--tail", "2", &id]);
    let (time, line) = stamped.trim_end().split_once(' ').expect("a timestamp");
    assert_eq!(line, "tick 29");
    assert!(time.len() == 30 && time.ends_with('Z'), "{time}");
    // By app name and app id too, when unique.
    assert_eq!(logs(&harness, &["probe"]).0, all);
    assert_eq!(logs(&harness, &[APP_ID]).0, all);
    drop(daemon);
}

#[test]
fn log_rotation_caps_the_size() {
    let (harness, daemon, bundle) = setup(
        User::Root,
        &["--log-max-size", "64K", "--log-max-files", "2"],
    );
    // 1 MiB of output, sixteen times the cap.
    let id = run_detached(&harness, &[], &bundle, &["stdout", "1048576"]);
    wait_for_state(&harness, &id, "exited");
    let dir = PathBuf::from(inspect(&harness, &id)["log_dir"].as_str().expect("log_dir"));
    let files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .expect("the log dir")
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    let total: u64 = files
        .iter()
        .filter(|(name, _)| name.starts_with("app.log"))
        .map(|(_, size)| size)
        .sum();
    assert!(total <= 128 * 1024, "{files:?}");
    let mut names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    names.sort();
    // Beside the logs: the instance's record and the lock its followers hold.
    assert_eq!(
        names,
        ["app.log", "app.log.1", "follow.lock", "instance.json"]
    );
    // What is kept is the end of the output, whole.
    let (kept, _) = logs(&harness, &[&id]);
    assert!(
        kept.len() >= 64 * 1024 && kept.bytes().all(|b| b == b'x'),
        "{}",
        kept.len()
    );
    let inspected = inspect(&harness, &id);
    assert_eq!(inspected["log_limits"]["cap_bytes"], 128 * 1024);
    drop(daemon);
}

#[test]
fn stop_sends_term_then_kill_after_the_timeout() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    let pid = daemon_pid(&harness);
    let id = run_detached(&harness, &[], &bundle, &["ignore-term", "120"]);
    wait_for_log(&harness, &id, "ready");
    let started = Instant::now();
    elastos(&harness, &["stop", "-t", "2", &id]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "stop -t 2 took {took:?}"
    );
    let (_, errors) = logs(&harness, &[&id]);
    assert!(
        errors.contains("TERM ignored"),
        "SIGTERM never reached it: {errors:?}"
    );
    let row = ps_row(&harness, &id).expect("listed");
    assert_eq!(row["state"], "exited");
    assert_eq!(row["exit_code"], 128 + 9, "ended by SIGKILL");
    drop(daemon);
    assert_no_cgroups_of(pid);
}

#[test]
fn kill_sends_the_signal_it_is_given() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    let ignoring = run_detached(&harness, &[], &bundle, &["ignore-term", "120"]);
    wait_for_log(&harness, &ignoring, "ready");
    elastos(&harness, &["kill", "-s", "TERM", &ignoring]);
    wait_for_log(&harness, &ignoring, "TERM ignored");
    assert_eq!(ps_row(&harness, &ignoring).unwrap()["state"], "running");
    // The default is KILL.
    elastos(&harness, &["kill", &ignoring]);
    let row = wait_for_state(&harness, &ignoring, "exited");
    assert_eq!(row["exit_code"], 128 + 9);

    let sleeper = run_detached(&harness, &[], &bundle, &["sleep", "60"]);
    wait_for_state(&harness, &sleeper, "running");
    elastos(&harness, &["kill", "-s", "sigusr1", &sleeper]);
    let row = wait_for_state(&harness, &sleeper, "exited");
    assert_eq!(row["exit_code"], 128 + 10, "died of SIGUSR1");
    drop(daemon);
}

#[test]
fn restart_starts_a_new_run() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    let id = run_detached(&harness, &[], &bundle, &["sleep", "60"]);
    let before = wait_for_state(&harness, &id, "running");
    elastos(&harness, &["restart", "-t", "1", &id]);
    let after = wait_for_state(&harness, &id, "running");
    assert_ne!(before["pid"], after["pid"]);
    assert_eq!(
        after["restarts"], 0,
        "a restart asked for is not the policy's"
    );
    let runs = inspect(&harness, &id)["runs"].clone();
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs:#}");
    assert_eq!(runs[0]["exit_code"], 128 + 15);
    // An exited instance restarts too.
    elastos(&harness, &["stop", &id]);
    elastos(&harness, &["restart", &id]);
    wait_for_state(&harness, &id, "running");
    drop(daemon);
}

#[test]
fn on_failure_2_restarts_exactly_twice_with_growing_delays_then_stays_exited() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    let id = run_detached(
        &harness,
        &["--restart", "on-failure:2"],
        &bundle,
        &["exit", "3"],
    );
    let row = wait_for_state(&harness, &id, "exited");
    assert_eq!(row["restarts"], 2);
    assert_eq!(row["exit_code"], 3);
    let inspected = inspect(&harness, &id);
    assert_eq!(inspected["restart_policy"], "on-failure:2");
    let runs = inspected["runs"].as_array().expect("runs").clone();
    assert_eq!(runs.len(), 3, "{runs:#?}");
    let delays: Vec<u64> = runs
        .iter()
        .map(|r| r["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(delays, [0, 250, 500], "250 ms doubling");
    // Each restart really waited its delay after the run before ended.
    for pair in runs.windows(2) {
        let waited =
            pair[1]["started_at_ms"].as_u64().unwrap() - pair[0]["ended_at_ms"].as_u64().unwrap();
        let delay = pair[1]["delay_ms"].as_u64().unwrap();
        assert!(
            waited >= delay,
            "waited {waited} ms for a {delay} ms backoff"
        );
    }
    // And it stays exited.
    std::thread::sleep(Duration::from_millis(1500));
    let row = ps_row(&harness, &id).unwrap();
    assert_eq!(
        (row["state"].as_str(), row["restarts"].as_u64()),
        (Some("exited"), Some(2))
    );
    // Exit 0 is no failure: no restart.
    let fine = run_detached(
        &harness,
        &["--restart", "on-failure"],
        &bundle,
        &["exit", "0"],
    );
    let row = wait_for_state(&harness, &fine, "exited");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ps_row(&harness, &fine).unwrap()["restarts"], 0, "{row:#}");
    drop(daemon);
}

#[test]
fn always_restarts_until_stopped() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    let pid = daemon_pid(&harness);
    let id = run_detached(&harness, &["--restart", "always"], &bundle, &["exit", "0"]);
    let restarted = eventually(Duration::from_secs(10), || {
        ps_row(&harness, &id).is_some_and(|row| row["restarts"].as_u64() >= Some(2))
    });
    assert!(restarted, "{:#?}", ps_row(&harness, &id));
    elastos(&harness, &["stop", &id]);
    let row = wait_for_state(&harness, &id, "exited");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        ps_row(&harness, &id).unwrap()["restarts"],
        row["restarts"],
        "restarted after stop"
    );
    // `rm` forgets it and deletes its logs.
    let dir = PathBuf::from(inspect(&harness, &id)["log_dir"].as_str().unwrap());
    assert!(dir.is_dir());
    elastos(&harness, &["rm", &id]);
    assert!(ps_row(&harness, &id).is_none());
    assert!(!dir.exists(), "its logs are left");
    drop(daemon);
    assert_no_cgroups_of(pid);
}

#[test]
fn inspect_shows_manifest_jail_limits_cgroup_and_runs() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    let id = run_detached(
        &harness,
        &["--restart", "on-failure:3"],
        &bundle,
        &["sleep", "60", "marker-word"],
    );
    wait_for_state(&harness, &id, "running");
    let inspected = inspect(&harness, &id);
    assert_eq!(inspected["id"], id.as_str());
    assert_eq!(inspected["state"], "running");
    assert_eq!(inspected["restart_policy"], "on-failure:3");
    assert_eq!(inspected["restarts"], 0);
    assert_eq!(
        inspected["bundle"],
        bundle.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(
        inspected["args"],
        serde_json::json!(["sleep", "60", "marker-word"])
    );
    assert_eq!(inspected["manifest"]["id"], APP_ID);
    // The jail as `policy show --format json` renders it.
    let policy = json(
        &harness
            .elastos()
            .args(["policy", "show", "--format", "json"])
            .arg(&bundle)
            .args(["--", "sleep", "60", "marker-word"])
            .output(),
    );
    for field in [
        "mounts", "landlock", "seccomp", "limits", "env", "entry", "argv",
    ] {
        assert_eq!(inspected["jail"][field], policy[field], "jail.{field}");
    }
    assert_eq!(inspected["limits"], policy["limits"]);
    assert!(inspected["limits"]["memory_bytes"].as_u64().unwrap() > 0);
    // What the kernel enforces: the pid, Landlock, and the cgroups, which exist while it runs.
    assert_eq!(inspected["enforced"]["pid"], inspected["pid"]);
    assert!(inspected["enforced"]["landlock_abi"].as_u64().unwrap() > 0);
    let cgroups = inspected["cgroup"]
        .as_array()
        .expect("cgroup paths as root");
    assert!(!cgroups.is_empty());
    for cgroup in cgroups {
        assert!(Path::new(cgroup.as_str().unwrap()).is_dir(), "{cgroup}");
    }
    assert!(inspected["uptime_secs"].as_u64().is_some());
    assert_eq!(inspected["runs"].as_array().unwrap().len(), 1);
    assert!(inspected["log_limits"]["cap_bytes"].as_u64().unwrap() >= 64 * 1024);
    elastos(&harness, &["stop", "-t", "0", &id]);
    for cgroup in cgroups {
        assert!(
            !Path::new(cgroup.as_str().unwrap()).exists(),
            "{cgroup} left after stop"
        );
    }
    drop(daemon);
}

#[test]
fn bad_ids_and_flags_get_clear_errors() {
    let harness = Harness::new(User::Root);
    let bundle = harness.probe_bundle("probe", APP_ID, "");
    // No daemon: run -d says how to start one.
    let error = refused(&harness, &["run", "-d", bundle.to_str().unwrap()]);
    assert!(error.contains("elastos broker"), "{error}");
    let daemon = Daemon::start(&harness);

    let error = refused(&harness, &["run", "-d", "/nonexistent.bundle"]);
    assert!(error.contains("cannot find bundle"), "{error}");
    // A bundle the daemon refuses: the error comes back, and no instance is kept.
    let garbage = harness.write("garbage.bundle", "not a bundle", 0o644);
    let error = refused(&harness, &["run", "-d", garbage.to_str().unwrap()]);
    assert!(error.contains("garbage.bundle"), "{error}");
    let ps = json(
        &harness
            .elastos()
            .args(["ps", "-a", "--format", "json"])
            .output(),
    );
    assert_eq!(ps["instances"], serde_json::json!([]));

    for command in ["logs", "kill", "inspect", "rm", "restart"] {
        let error = refused(&harness, &[command, "nosuchapp"]);
        assert!(
            error.contains("no detached app") && error.contains("nosuchapp"),
            "{command}: {error}"
        );
    }
    let error = refused(&harness, &["stop", "nosuchapp"]);
    assert!(error.contains("no running app"), "{error}");

    // Two instances of one app: its name and app id are ambiguous, their ids are not.
    let first = run_detached(&harness, &[], &bundle, &["sleep", "60"]);
    let second = run_detached(&harness, &[], &bundle, &["sleep", "60"]);
    for name in ["probe", APP_ID] {
        let error = refused(&harness, &["inspect", name]);
        assert!(
            error.contains("ambiguous")
                && error.contains(&first[..12])
                && error.contains(&second[..12]),
            "{error}"
        );
    }
    let error = refused(&harness, &["inspect", ""]);
    assert!(error.contains("empty id"), "{error}");
    let error = refused(&harness, &["rm", &first]);
    assert!(
        error.contains("stop it first") && error.contains("--force"),
        "{error}"
    );
    elastos(&harness, &["rm", "--force", &first]);
    assert!(ps_row(&harness, &first).is_none());

    // Flags the command line refuses: exit 125 (podman's code for its own failures), naming the
    // value and what is expected.
    for (args, expected) in [
        (
            vec!["run", "-d", "--restart", "sometimes", "x.bundle"],
            "expected no, on-failure[:N], always or unless-stopped",
        ),
        (
            vec!["run", "-d", "--restart", "on-failure:x", "x.bundle"],
            "whole number",
        ),
        (vec!["run", "--restart", "always", "x.bundle"], "--detach"),
        (vec!["kill", "-s", "STOP", &second], "expected one of KILL"),
        (vec!["stop", "-t", "soon", &second], "soon"),
        (vec!["logs", "--tail", "-1", &second], "-1"),
        (vec!["broker", "--log-max-size", "lots"], "not a size"),
        (vec!["broker", "--log-max-files", "0"], "0"),
    ] {
        let out = harness.elastos().args(&args).output();
        out.assert_code(125);
        assert!(
            out.stderr_text().contains(expected),
            "{args:?}: {}",
            out.stderr_text()
        );
    }
    // A log cap too small for the daemon.
    let out = harness
        .elastos()
        .args(["broker", "--log-max-size", "1K"])
        .output();
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr_text().contains("at least 65536 bytes"),
        "{}",
        out.stderr_text()
    );
    drop(daemon);
}

/// `run -d --memory --cpus --pids` reach the daemon's start of the app (and every restart): the
/// jail it reports and the cgroup it made hold the overrides, not the manifest's limits.
#[test]
fn run_detached_with_limit_flags_gets_those_limits() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    let id = run_detached(
        &harness,
        &["--memory", "48MiB", "--cpus", "0.5", "--pids", "9"],
        &bundle,
        &["sleep", "60"],
    );
    wait_for_state(&harness, &id, "running");
    let limits = &inspect(&harness, &id)["limits"];
    assert_eq!(limits["memory_bytes"], 48 << 20, "{limits}");
    assert_eq!(limits["cpu_millis"], 500, "{limits}");
    assert_eq!(limits["threads"], 9, "{limits}");
    let cgroups = inspect(&harness, &id)["cgroup"].clone();
    let memory_file = cgroups
        .as_array()
        .expect("cgroup paths as root")
        .iter()
        .map(|path| Path::new(path.as_str().unwrap()).to_path_buf())
        .flat_map(|dir| [dir.join("memory.max"), dir.join("memory.limit_in_bytes")])
        .find(|file| file.exists())
        .expect("a memory cgroup of the app");
    let limit = std::fs::read_to_string(&memory_file).unwrap();
    assert_eq!(
        limit.trim(),
        (48u64 << 20).to_string(),
        "{}",
        memory_file.display()
    );
    elastos(&harness, &["stop", "-t", "0", &id]);
    drop(daemon);
}

/// The directory of an instance's record and logs.
fn instance_dir(harness: &Harness, id: &str) -> PathBuf {
    harness.elastos_home().join("logs").join(id)
}

/// The jail cgroups of daemon `pid` (v1 memory, pids and cpu, the cgroup2 tree) still there.
fn leftover_cgroups(pid: u32) -> Vec<String> {
    let marker = format!("-{pid}-");
    let prefix = format!("{pid}-");
    [
        "/sys/fs/cgroup/memory/elastos",
        "/sys/fs/cgroup/pids/elastos",
        "/sys/fs/cgroup/cpu/elastos",
        "/sys/fs/cgroup/unified/elastos",
        "/sys/fs/cgroup/elastos",
    ]
    .iter()
    .flat_map(|parent| {
        std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .map(move |entry| format!("{parent}/{}", entry.file_name().to_string_lossy()))
    })
    .filter(|path| {
        let name = path.rsplit('/').next().unwrap_or_default();
        name.contains(&marker) || name.starts_with(&prefix)
    })
    .collect()
}

/// Whether host process `pid` exists (a zombie counts as gone: it runs nothing).
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A daemon stopped cleanly (SIGTERM) and started again: every instance is listed again with its
/// logs, those that ran are shown ended by the daemon, and the restart policies decide as
/// docker's do after a daemon restart.
#[test]
fn instances_outlive_a_daemon_restart_and_restart_by_docker_rules() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    let first_pid = daemon_pid(&harness);
    let finished = run_detached(&harness, &[], &bundle, &["ticker", "3", "0"]);
    let plain = run_detached(&harness, &[], &bundle, &["sleep", "60"]);
    let always = run_detached(
        &harness,
        &["--restart", "always"],
        &bundle,
        &["sleep", "60"],
    );
    let on_failure = run_detached(
        &harness,
        &["--restart", "on-failure:1"],
        &bundle,
        &["sleep", "60"],
    );
    let unless_stopped = run_detached(
        &harness,
        &["--restart", "unless-stopped", "--memory", "40MiB"],
        &bundle,
        &["sleep", "60"],
    );
    let always_stopped = run_detached(
        &harness,
        &["--restart", "always"],
        &bundle,
        &["sleep", "60"],
    );
    wait_for_state(&harness, &finished, "exited");
    let before = wait_for_state(&harness, &always, "running");
    elastos(&harness, &["stop", &unless_stopped, &always_stopped]);
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(instance_dir(&harness, &unless_stopped).join("instance.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["spec"]["restart"], "unless-stopped");
    assert_eq!(
        record["spec"]["overrides"]["memory_bytes"],
        40 << 20,
        "{record:#}"
    );
    assert_eq!(record["ended_by"], "stopped");

    let stopped = daemon.stop();
    assert_eq!(stopped.code, Some(0), "{}", stopped.stderr_text());
    assert_no_cgroups_of(first_pid);

    let daemon = Daemon::start(&harness);
    let second_pid = daemon_pid(&harness);
    // Exited by itself: as it was, logs and all.
    let row = ps_row(&harness, &finished).expect("listed after the restart");
    assert_eq!(
        (row["state"].as_str(), row["exit_code"].as_i64()),
        (Some("exited"), Some(0))
    );
    assert_eq!(row["ended_by"], "exited");
    assert_eq!(logs(&harness, &[&finished]).0, "tick 0\ntick 1\ntick 2\n");
    // No policy: ended by the daemon, and left so.
    let row = ps_row(&harness, &plain).expect("listed");
    assert_eq!(row["state"], "exited", "{row:#}");
    assert_eq!(row["ended_by"], "daemon_stopped");
    assert_eq!(row["exit_code"], 128 + 15);
    assert!(row["finished_at_ms"].as_u64() >= row["started_at_ms"].as_u64());
    assert!(elastos(&harness, &["ps", "-a"]).contains("exited (143) (daemon stopped)"));
    // always, on-failure (ended by the daemon, not by a failure of its own), and always even
    // after `stop` (docker's rule): started again.
    for id in [&always, &on_failure, &always_stopped] {
        let row = wait_for_state(&harness, id, "running");
        assert_eq!(
            row["restarts"], 0,
            "a daemon restart is not the policy's: {row:#}"
        );
    }
    let after = ps_row(&harness, &always).unwrap();
    assert_ne!(before["pid"], after["pid"]);
    let runs = inspect(&harness, &always)["runs"].clone();
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs:#}");
    assert_eq!(runs[0]["exit_code"], 128 + 15);
    // unless-stopped after `stop`: left stopped, with its command-line limits kept for the next
    // run.
    let row = ps_row(&harness, &unless_stopped).expect("listed");
    assert_eq!(
        (row["state"].as_str(), row["ended_by"].as_str()),
        (Some("exited"), Some("stopped"))
    );
    elastos(&harness, &["restart", &unless_stopped]);
    wait_for_state(&harness, &unless_stopped, "running");
    assert_eq!(
        inspect(&harness, &unless_stopped)["limits"]["memory_bytes"],
        40 << 20
    );

    // `rm` deletes record and logs: a third daemon does not list it.
    elastos(&harness, &["rm", &finished]);
    assert!(!instance_dir(&harness, &finished).exists());
    elastos(
        &harness,
        &[
            "stop",
            &always,
            &on_failure,
            &always_stopped,
            &unless_stopped,
        ],
    );
    drop(daemon);
    assert_no_cgroups_of(second_pid);
    let daemon = Daemon::start(&harness);
    assert!(ps_row(&harness, &finished).is_none());
    assert!(ps_row(&harness, &plain).is_some());
    // `always` again (docker restarts it whatever stopped it), the others not.
    wait_for_state(&harness, &always, "running");
    assert_eq!(ps_row(&harness, &on_failure).unwrap()["state"], "exited");
    elastos(&harness, &["stop", &always, &always_stopped]);
    drop(daemon);
}

/// A daemon killed with SIGKILL takes its apps with it (the kernel kills each jail when its
/// supervisor thread dies) and leaves their cgroups; the next daemon removes those, lists the
/// instances as ended by the daemon's death, and restarts the `always` one.
#[test]
fn after_a_daemon_is_killed_the_next_one_cleans_up_and_restarts() {
    let (harness, mut daemon, bundle) = setup(User::Root, &[]);
    let first_pid = daemon_pid(&harness);
    let always = run_detached(
        &harness,
        &["--restart", "always"],
        &bundle,
        &["sleep", "60"],
    );
    let plain = run_detached(&harness, &[], &bundle, &["ticker", "1000", "50"]);
    let apps: Vec<u64> = [&always, &plain]
        .iter()
        .map(|id| {
            wait_for_state(&harness, id, "running")["pid"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let cgroups: Vec<PathBuf> = inspect(&harness, &plain)["cgroup"]
        .as_array()
        .expect("cgroups as root")
        .iter()
        .map(|path| PathBuf::from(path.as_str().unwrap()))
        .collect();
    wait_for_log(&harness, &plain, "tick 2");
    daemon.running_mut().signal("KILL");
    let killed = daemon.stop();
    assert_eq!(killed.code, None, "the daemon died of SIGKILL");
    assert!(
        eventually(Duration::from_secs(5), || !apps
            .iter()
            .any(|pid| alive(*pid))),
        "apps outlived their daemon: {apps:?}"
    );
    assert!(
        cgroups.iter().all(|dir| dir.is_dir()),
        "nobody removed them yet: {cgroups:?}"
    );
    for id in [&always, &plain] {
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(instance_dir(&harness, id).join("instance.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(record["state"], "running", "{record:#}");
        assert!(
            !record["cgroups"].as_array().unwrap().is_empty(),
            "{record:#}"
        );
    }

    let daemon = Daemon::start(&harness);
    // Answered once the daemon has restored its instances (the socket accepts before).
    let row = ps_row(&harness, &plain).expect("listed after the daemon died");
    let left = leftover_cgroups(first_pid);
    if !left.is_empty() {
        panic!("left: {left:?}\n{}", daemon.stop().stderr_text());
    }
    assert_eq!(row["state"], "exited");
    assert_eq!(row["ended_by"], "daemon_died");
    assert!(row["exit_code"].is_null(), "nobody saw it end: {row:#}");
    assert!(elastos(&harness, &["ps", "-a"]).contains("exited (daemon died)"));
    let (kept, _) = logs(&harness, &[&plain]);
    assert!(kept.starts_with("tick 0\ntick 1\ntick 2\n"), "{kept}");
    let row = wait_for_state(&harness, &always, "running");
    assert_ne!(row["pid"].as_u64(), Some(apps[0]));
    let second_pid = daemon_pid(&harness);
    elastos(&harness, &["stop", "-t", "1", &always]);
    drop(daemon);
    assert_no_cgroups_of(second_pid);
}

/// A record the daemon cannot read is reported by its file's name and skipped; the daemon
/// serves the others.
#[test]
fn corrupt_and_unknown_records_are_named_and_skipped() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    let good = run_detached(&harness, &[], &bundle, &["exit", "0"]);
    wait_for_state(&harness, &good, "exited");
    drop(daemon);
    let logs_dir = harness.elastos_home().join("logs");
    let garbage = logs_dir.join("0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(garbage.join("instance.json"), "{not json").unwrap();
    let future = logs_dir.join("fedcba9876543210fedcba9876543210");
    std::fs::create_dir_all(&future).unwrap();
    std::fs::write(
        future.join("instance.json"),
        r#"{"version": 99, "id": "x"}"#,
    )
    .unwrap();
    let misplaced = logs_dir.join("00000000000000000000000000000000");
    std::fs::create_dir_all(&misplaced).unwrap();
    std::fs::copy(
        instance_dir(&harness, &good).join("instance.json"),
        misplaced.join("instance.json"),
    )
    .unwrap();

    let mut daemon = Daemon::start(&harness);
    let ps = json(
        &harness
            .elastos()
            .args(["ps", "-a", "--format", "json"])
            .output(),
    );
    let ids: Vec<&str> = ps["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [good.as_str()]);
    assert!(daemon.is_serving());
    let log = daemon.stop().stderr_text();
    for (dir, why) in [
        (&garbage, "corrupt"),
        (&future, "version 99"),
        (&misplaced, "not of its directory"),
    ] {
        let file = dir.join("instance.json");
        assert!(
            log.lines()
                .any(|line| line.contains(file.to_str().unwrap()) && line.contains(why)),
            "{} ({why}) not reported:\n{log}",
            file.display()
        );
        assert!(file.exists(), "a record it cannot read is left as it is");
    }
}

/// `logs -f` reads every line while the app writes far faster than the log rotates: 40,000
/// records through 64 KiB files, two kept; what it prints is exactly the app's lines from the
/// first it saw to the last.
#[test]
fn logs_follow_loses_no_line_across_fast_rotations() {
    let (harness, daemon, bundle) = setup(
        User::Root,
        &["--log-max-size", "64K", "--log-max-files", "2"],
    );
    let lines = 20_000;
    let id = run_detached(&harness, &[], &bundle, &["ticker", &lines.to_string(), "0"]);
    let out = harness.elastos().args(["logs", "-f", &id]).spawn().wait();
    out.assert_code(0);
    let text = out.stdout_text();
    let first: usize = text
        .strip_prefix("tick ")
        .and_then(|rest| rest.split('\n').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tick line first: {:?}", &text[..text.len().min(200)]));
    let expected: String = (first..lines).map(|i| format!("tick {i}\n")).collect();
    assert!(
        text == expected,
        "lines lost or out of order: {} bytes printed, {} expected from tick {first}",
        text.len(),
        expected.len()
    );
    assert!(!out.stderr_text().contains("fell"), "{}", out.stderr_text());
    // It rotated: ~2 MB went through 64 KiB files.
    let dir = PathBuf::from(inspect(&harness, &id)["log_dir"].as_str().unwrap());
    assert!(dir.join("app.log.1").is_file());
    drop(daemon);
}

#[test]
fn logs_since_and_until_select_by_time() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    let id = run_detached(&harness, &[], &bundle, &["ticker", "10", "100"]);
    wait_for_state(&harness, &id, "exited");
    let (stamped, _) = logs(&harness, &["--timestamps", &id]);
    let times: Vec<&str> = stamped
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(times.len(), 10);
    let (since, _) = logs(&harness, &["--since", times[4], &id]);
    assert_eq!(
        since,
        (4..10).map(|i| format!("tick {i}\n")).collect::<String>()
    );
    let (until, _) = logs(&harness, &["--until", times[4], &id]);
    assert_eq!(
        until,
        (0..4).map(|i| format!("tick {i}\n")).collect::<String>()
    );
    let (both, _) = logs(&harness, &["--since", times[2], "--until", times[4], &id]);
    assert_eq!(both, "tick 2\ntick 3\n");
    assert_eq!(
        logs(&harness, &["--since", "1h", &id]).0.lines().count(),
        10
    );
    assert_eq!(logs(&harness, &["--until", "1h", &id]).0, "");
    let error = refused(&harness, &["logs", "--since", "yesterday", &id]);
    assert!(
        error.contains("yesterday") && error.contains("RFC 3339"),
        "{error}"
    );
    drop(daemon);
}

/// `ps` as a podman user drives it: filters, `-q`, `--no-trunc`, Go templates; `inspect` of
/// several ids in each format; `stop`, `rm` of several; `rm -f`; `prune`.
#[test]
fn ps_inspect_and_the_commands_on_several_apps_work_like_podmans() {
    let (harness, daemon, bundle) = setup(User::Root, &[]);
    let running = run_detached(&harness, &[], &bundle, &["sleep", "60"]);
    let failed = run_detached(&harness, &[], &bundle, &["exit", "3"]);
    let stopped = run_detached(&harness, &[], &bundle, &["sleep", "60"]);
    wait_for_state(&harness, &failed, "exited");
    elastos(&harness, &["stop", &stopped]);
    let lines = |args: &[&str]| -> Vec<String> {
        let mut lines: Vec<String> = elastos(&harness, args).lines().map(String::from).collect();
        lines.sort();
        lines
    };
    let sorted = |ids: &[&String]| -> Vec<String> {
        let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(lines(&["ps", "-q"]), [running[..12].to_string()]);
    assert_eq!(
        lines(&["ps", "-a", "-q", "--no-trunc"]),
        sorted(&[&running, &failed, &stopped])
    );
    // A status filter lists exited ones without -a; one key twice: either; two keys: both.
    assert_eq!(
        lines(&["ps", "--filter", "status=exited", "-q", "--no-trunc"]),
        sorted(&[&failed, &stopped])
    );
    assert_eq!(
        lines(&[
            "ps",
            "-f",
            "status=exited",
            "-f",
            "status=running",
            "-q",
            "--no-trunc"
        ]),
        sorted(&[&running, &failed, &stopped])
    );
    assert_eq!(
        lines(&[
            "ps",
            "-f",
            "status=exited",
            "-f",
            &format!("id={}", &failed[..6]),
            "-q"
        ]),
        [failed[..12].to_string()]
    );
    assert_eq!(lines(&["ps", "-a", "-f", "name=probe", "-q"]).len(), 3);
    assert_eq!(lines(&["ps", "-a", "-f", "name=other", "-q"]).len(), 0);
    let ps = json(
        &harness
            .elastos()
            .args(["ps", "-f", "status=exited", "--format", "json"])
            .output(),
    );
    assert_eq!(ps["instances"].as_array().unwrap().len(), 2, "{ps:#}");
    for (bad, expected) in [
        ("bogus=1", "unknown key \"bogus\""),
        (
            "status=sleeping",
            "expected one of running, restarting, exited",
        ),
        ("status", "KEY=VALUE"),
    ] {
        let error = refused(&harness, &["ps", "--filter", bad]);
        assert!(error.contains(expected), "{bad}: {error}");
    }
    // Templates, with podman's field names.
    let shown = lines(&[
        "ps",
        "-a",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Status}} {{.ExitCode}}",
    ]);
    assert!(
        shown.contains(&format!("{failed} exited (3) 3")),
        "{shown:?}"
    );
    assert!(shown.contains(&format!("{running} running ")), "{shown:?}");
    let table = elastos(
        &harness,
        &[
            "ps",
            "--format",
            "table {{.ID}}\\t{{.State}}\\t{{.RestartPolicy}}",
        ],
    );
    let table: Vec<&str> = table.lines().collect();
    assert_eq!(table.len(), 2, "{table:?}");
    assert_eq!(
        table[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "STATE", "RESTART", "POLICY"]
    );
    assert_eq!(
        table[1].split_whitespace().collect::<Vec<_>>(),
        [&running[..12], "running", "no"]
    );
    let error = refused(&harness, &["ps", "--format", "{{.Colour}}"]);
    assert!(
        error.contains(".Colour does not exist") && error.contains(".RestartPolicy"),
        "{error}"
    );

    // inspect: several ids, json (an array), a template, a table; an unknown field; an unknown id.
    let both = json(
        &harness
            .elastos()
            .args(["inspect", &running, &failed])
            .output(),
    );
    assert_eq!(both.as_array().map(Vec::len), Some(2));
    assert_eq!(
        (both[0]["id"].as_str(), both[1]["id"].as_str()),
        (Some(running.as_str()), Some(failed.as_str()))
    );
    assert_eq!(
        elastos(
            &harness,
            &[
                "inspect",
                &running,
                &failed,
                "--format",
                "{{.State}} {{.ExitCode}}"
            ]
        ),
        "running \nexited 3\n"
    );
    let memory = elastos(
        &harness,
        &["inspect", "-f", "{{.Limits.MemoryBytes}}", &running],
    );
    assert_eq!(
        memory.trim(),
        inspect(&harness, &running)["limits"]["memory_bytes"].to_string()
    );
    let table = elastos(&harness, &["inspect", "--format", "table", &running]);
    assert!(
        table.starts_with("ID") && table.contains(&running[..12]) && table.contains("running"),
        "{table}"
    );
    let error = refused(&harness, &["inspect", "--format", "{{.Bogus}}", &running]);
    assert!(error.contains(".Bogus does not exist"), "{error}");
    let error = refused(&harness, &["inspect", "--format", "yaml", &running]);
    assert!(error.contains("expected json, table"), "{error}");
    let out = harness
        .elastos()
        .args(["inspect", &running, "nosuchapp"])
        .output();
    out.assert_code(125);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out.stdout_text()).unwrap()[0]["id"],
        running.as_str()
    );
    assert!(
        out.stderr_text().contains("nosuchapp"),
        "{}",
        out.stderr_text()
    );

    // Several at once: stop, rm (one running: refused, the other removed), rm -f, prune.
    let other = run_detached(&harness, &[], &bundle, &["sleep", "60"]);
    wait_for_state(&harness, &other, "running");
    assert_eq!(
        lines(&["stop", "-t", "1", &running[..10], &other]),
        sorted(&[&running[..10].to_string(), &other])
    );
    assert_eq!(ps_row(&harness, &other).unwrap()["state"], "exited");
    assert_eq!(
        lines(&["restart", "-t", "1", &running, &other]),
        sorted(&[&running, &other])
    );
    for id in [&running, &other] {
        wait_for_state(&harness, id, "running");
    }
    elastos(&harness, &["stop", "-t", "1", &running, &other]);
    let again = run_detached(&harness, &[], &bundle, &["sleep", "60"]);
    wait_for_state(&harness, &again, "running");
    let out = harness.elastos().args(["rm", &again, &other]).output();
    out.assert_code(125);
    assert_eq!(out.stdout_text(), format!("{other}\n"));
    assert!(
        out.stderr_text().contains("stop it first"),
        "{}",
        out.stderr_text()
    );
    assert!(ps_row(&harness, &other).is_none());
    elastos(&harness, &["rm", "-f", &again]);
    assert!(ps_row(&harness, &again).is_none());
    let kept = run_detached(&harness, &[], &bundle, &["sleep", "60"]);
    assert_eq!(lines(&["prune"]), sorted(&[&running, &failed, &stopped]));
    assert_eq!(
        lines(&["ps", "-a", "-q", "--no-trunc"]),
        std::slice::from_ref(&kept)
    );
    for id in [&running, &failed, &stopped] {
        assert!(
            !instance_dir(&harness, id).exists(),
            "{id}: its files are left"
        );
    }
    elastos(&harness, &["stop", "-t", "0", &kept]);
    drop(daemon);
}
