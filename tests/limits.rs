//! End-to-end tests of the app's resource limits beyond memory and threads (tests/run.rs): the
//! CPU rate (`limits.cpus`, cgroup `cpu.max` / v1 `cpu.cfs_quota_us`), the command line's
//! overrides of the manifest's limits (`elastos run --memory --cpus --pids`), the cgroup2 leaf
//! the jail is cloned into (`CLONE_INTO_CGROUP`), and the per-app home quota.
//!
//! Safety: the busy loop and the disk filler run only under their limit, for a few seconds at
//! most, and the harness kills any command after its timeout. Every cgroup a test's launcher
//! made is gone when the test ends (the launcher removes them; a test that kills a launcher
//! removes them itself).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{eventually, Harness, User};

const APP_ID: &str = "4b1f0c2e-7d3a-4e59-8a6b-1c2d3e4f5a6b";

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup2 leaf `elastos run` (pid `launcher`, first instance) clones its jail into: the
/// app's cgroup on a v2 host, its leaf in the cgroup2 tree beside the v1 controllers on a
/// hybrid one (`/sys/fs/cgroup/unified`).
fn cgroup2_leaf(launcher: u32) -> PathBuf {
    let name = format!("elastos/{launcher}-1");
    let unified = Path::new(CGROUP_ROOT).join("unified");
    if unified.join("cgroup.procs").exists() {
        unified.join(name)
    } else {
        Path::new(CGROUP_ROOT).join(name)
    }
}

/// `usage_usec` of a cgroup2 `cpu.stat` (kept in every cgroup2 cgroup, with or without the cpu
/// controller).
fn cpu_usage_usec(leaf: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(leaf.join("cpu.stat")).ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|value| value.trim().parse().ok())
}

/// The pids in a cgroup.
fn members(leaf: &Path) -> Vec<u32> {
    std::fs::read_to_string(leaf.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// A busy loop under `cpus = 0.2` gets about a fifth of one CPU: its CPU time, as the kernel
/// counts it in the app's cgroup2 leaf, over 1.5 s of wall-clock time. Every process of the
/// jail (its init and the app) is in that leaf from its start: on this hybrid host no code
/// writes a pid to that tree, so being there shows that the jail's first process was cloned
/// into it (`clone3` with `CLONE_INTO_CGROUP`) and its children followed.
#[test]
fn a_busy_loop_under_cpus_0_2_gets_about_a_fifth_of_a_cpu() {
    let harness = Harness::new(User::Root);
    let bundle = harness.probe_bundle("spin", APP_ID, "cpus = \"0.2\"");
    let running = harness
        .run(&bundle, &["spin", "4"])
        .env("ELASTOS_LOG", "info")
        .spawn();
    let launcher = running.pid();
    let leaf = cgroup2_leaf(launcher);
    // The jail's init and the app, both in the leaf.
    let both_in = eventually(Duration::from_secs(10), || members(&leaf).len() >= 2);
    let in_leaf = members(&leaf);
    let zero_lines: Vec<String> = in_leaf
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok())
        .filter_map(|text| {
            text.lines()
                .find(|l| l.starts_with("0::"))
                .map(String::from)
        })
        .collect();
    // Let the quota settle (the first period may be a full one), then measure.
    std::thread::sleep(Duration::from_millis(300));
    let (start, used_before) = (Instant::now(), cpu_usage_usec(&leaf));
    std::thread::sleep(Duration::from_millis(1500));
    let (elapsed, used_after) = (start.elapsed(), cpu_usage_usec(&leaf));
    let quota = std::fs::read_to_string(Path::new(CGROUP_ROOT).join(format!(
        "cpu/elastos/{APP_ID}-{launcher}-1/cpu.cfs_quota_us"
    )))
    .or_else(|_| std::fs::read_to_string(leaf.join("cpu.max")));
    let out = running.wait();
    let log = out.stderr_text();
    out.assert_code(0);
    assert!(
        both_in,
        "the jail's processes never showed up in {}: {in_leaf:?}\n{log}",
        leaf.display()
    );
    let expected_line = format!("0::/elastos/{launcher}-1");
    assert!(
        !zero_lines.is_empty() && zero_lines.iter().all(|line| *line == expected_line),
        "every process of the jail is in {expected_line}: {zero_lines:?}"
    );
    let quota = quota.expect("the app's cpu limit file");
    assert!(
        quota.trim() == "20000" || quota.trim() == "20000 100000",
        "cpu quota {quota:?}"
    );
    let (Some(before), Some(after)) = (used_before, used_after) else {
        panic!("no usage_usec in {}/cpu.stat", leaf.display());
    };
    let share = (after - before) as f64 / elapsed.as_micros() as f64;
    println!("CPU share of a busy loop under cpus = 0.2: {share:.3}");
    // 0.2 of a CPU, give or take what a busy machine and the period's rounding make of it.
    assert!(
        (0.12..=0.28).contains(&share),
        "the busy loop got {share:.3} of a CPU under cpus = 0.2"
    );
    assert!(
        log.contains("cpu: Some(") || log.contains("cpu_limited: true"),
        "the log says the CPU is limited:\n{log}"
    );
    assert!(!leaf.exists(), "the launcher removed {}", leaf.display());
}

/// `--memory`, `--cpus` and `--pids` replace the manifest's limits for one run, within the
/// ceilings; one above its ceiling is refused naming the flag, its value and the ceiling, and a
/// malformed one naming the flag and what it expects.
#[test]
fn command_line_limits_override_the_manifest_within_the_ceilings() {
    let harness = Harness::new(User::Root);
    let bundle = harness.probe_bundle("plain", APP_ID, "");
    let run = |flags: &[&str], args: &[&str]| {
        let mut invocation = harness.elastos();
        invocation
            .arg("run")
            .args(flags.iter().copied())
            .arg(&bundle)
            .arg("--")
            .args(args.iter().copied());
        invocation.output()
    };
    // --pids: the manifest's default is 256 threads; 8 stops the bomb short.
    let out = run(&["--pids", "8"], &["thread-bomb", "64"]);
    let text = out.assert_code(0).stdout_text();
    let started: u32 = text
        .strip_prefix("thread-bomb: started ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected thread-bomb output {text:?}"));
    assert!(started < 8, "{started} threads started under --pids 8");
    // --memory: a 256 MiB bomb under the default 512 MiB would pass; under 32 MiB it stops.
    let out = run(
        &["--memory", "32MiB"],
        &["mem-bomb", &(256u64 << 20).to_string()],
    );
    assert!(
        common::memory_bomb_stopped(&out),
        "a 256 MiB bomb under --memory 32MiB: {:?} {}",
        out.code,
        out.stdout_text()
    );
    // What policy show says a run with these flags would get.
    let shown = harness
        .elastos()
        .args(["policy", "show", "--cpus", "0.5", "--memory", "1GiB"])
        .arg(&bundle)
        .output();
    let text = shown.assert_code(0).stdout_text();
    assert!(
        text.contains("  cpu         0.5 CPUs (50000 us of CPU time every 100000 us)\n"),
        "{text}"
    );
    assert!(
        text.contains("  memory      1 GiB (1073741824 bytes)\n"),
        "{text}"
    );
    assert!(text.contains("limits in force here: cgroup v"), "{text}");

    // Above the user's own ceilings: refused, naming the flag, the value and the ceiling.
    let limits = harness.elastos_home().join("limits.toml");
    std::fs::write(&limits, "cpus = 1\nthreads = 32\n").expect("user ceilings");
    harness.own(&limits);
    for (flags, said) in [
        (
            ["--cpus", "1.5"],
            "`--cpus 1.5` is above this host's ceiling of 1",
        ),
        (
            ["--pids", "64"],
            "`--pids 64` is above this host's ceiling of 32",
        ),
        (
            ["--memory", "64GiB"],
            "`--memory 68719476736 bytes` is above this host's ceiling of",
        ),
    ] {
        let out = run(&flags, &["exit", "0"]);
        out.assert_code(125);
        assert!(
            out.stderr_text().contains(said),
            "{flags:?}: {}",
            out.stderr_text()
        );
    }
    // The manifest's own 256 threads are above the user's 32: refused under the manifest's
    // name, unless the command line lowers them.
    let out = run(&[], &["exit", "0"]);
    out.assert_code(125);
    assert!(
        out.stderr_text()
            .contains("`limits.threads` = 256 is above this host's ceiling of 32"),
        "{}",
        out.stderr_text()
    );
    // Within them: runs.
    run(&["--cpus", "0.5", "--pids", "32"], &["exit", "0"]).assert_code(0);
    // Malformed: clap names the flag and what it expects; nothing runs.
    for (flags, expected) in [
        (["--cpus", "0"], "0.01 to 1024"),
        (["--cpus", "lots"], "0.01 to 1024"),
        (["--memory", "8MiB"], "at least 16MiB"),
        (["--pids", "0"], "from 1 to 65536"),
    ] {
        let out = run(&flags, &["exit", "0"]);
        let said = out.stderr_text();
        assert_ne!(out.code, Some(0), "{flags:?}");
        assert!(
            said.contains(flags[0]) && said.contains(expected),
            "{flags:?}: {said}"
        );
    }
}

/// Launched by an unprivileged user without a delegated cgroup, nothing limits the CPU rate,
/// and `policy show` says so rather than showing a limit that is not enforced.
#[test]
fn policy_show_says_when_the_cpu_rate_is_not_limited() {
    let harness = Harness::new(User::Unprivileged);
    let bundle = harness.probe_bundle("plain", APP_ID, "cpus = 2");
    let out = harness
        .elastos()
        .args(["policy", "show"])
        .arg(&bundle)
        .output();
    let text = out.assert_code(0).stdout_text();
    assert!(text.contains("  cpu         2 CPUs"), "{text}");
    assert!(text.contains("CPU rate NOT limited"), "{text}");
    let json = harness
        .elastos()
        .args(["policy", "show", "--format", "json"])
        .arg(&bundle)
        .output();
    let value: serde_json::Value =
        serde_json::from_str(&json.assert_code(0).stdout_text()).expect("JSON");
    assert_eq!(value["limits"]["cpu_millis"], 2000);
    assert_eq!(value["limit_mechanism"]["mechanism"], "rlimits");
}

/// Unmounts, when dropped, every mount under a directory (the homes' quota images a test's
/// launches mounted), deepest first, before the harness removes the directory.
struct UnmountUnder(PathBuf);

impl Drop for UnmountUnder {
    fn drop(&mut self) {
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
            .filter(|point| Path::new(point).starts_with(&self.0))
            .collect();
        mounts.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in mounts {
            let _ = std::process::Command::new("umount").arg(&point).status();
        }
    }
}

/// The home of the app `APP_ID` under a harness's `ELASTOS_HOME` (one publisher).
fn home_of(harness: &Harness) -> PathBuf {
    let mut found = Vec::new();
    let mut dirs = vec![harness.elastos_home()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|name| name == APP_ID) {
                found.push(path);
            } else if path.is_dir() && !path.is_symlink() {
                dirs.push(path);
            }
        }
    }
    assert_eq!(found.len(), 1, "one home of {APP_ID}: {found:?}");
    found.remove(0)
}

/// An app writing past its `[home] quota` (4 MiB) gets ENOSPC, what it wrote stays within the
/// quota, and the host's disk holds no more of it than the quota: the home is a 4 MiB ext4 image
/// (sparse) mounted at the home. Its files persist across runs and across an unmount (a reboot).
#[test]
fn an_app_writing_past_its_home_quota_gets_enospc_and_the_disk_no_more() {
    let harness = Harness::new(User::Root);
    let _unmount = UnmountUnder(harness.path().to_owned());
    let manifest = format!(
        "{}\n[home]\nquota = \"4MiB\"\n",
        common::probe_manifest(APP_ID, "elastos-probe", "")
    );
    let dir = harness.stage(
        "quota",
        &manifest,
        &[("elastos-probe", &common::binaries().probe)],
    );
    let bundle = harness.pack(&dir);
    let out = harness
        .run(&bundle, &["fill-home", &(16u64 << 20).to_string()])
        .output();
    let text = out.assert_code(0).stdout_text();
    let written: u64 = text
        .strip_prefix("fill-home: wrote ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected fill-home output {text:?}"));
    assert!(
        text.contains("No space left on device") || text.contains("Disk quota exceeded"),
        "{text}"
    );
    assert!(
        (1u64 << 20..=4 << 20).contains(&written),
        "{written} bytes written under a 4 MiB quota"
    );
    println!("{}", text.trim_end());
    let home = harness_home_checked(&harness);
    let image = home.with_file_name(format!("{APP_ID}.img"));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&image).expect("the home's image");
    assert_eq!(meta.len(), 4 << 20, "the image is the quota's size");
    assert!(
        meta.blocks() * 512 <= 4 << 20,
        "the host's disk holds {} bytes of it",
        meta.blocks() * 512
    );
    // The next run finds the home mounted, and its files.
    harness
        .run(&bundle, &["home-put", "note", "kept"])
        .output()
        .assert_code(0);
    // As after a reboot: unmounted, mounted again at the next start.
    let status = std::process::Command::new("umount")
        .arg(&home)
        .status()
        .unwrap();
    assert!(status.success(), "umount {}", home.display());
    let out = harness.run(&bundle, &["home-get", "note"]).output();
    assert_eq!(out.assert_code(0).stdout_text(), "kept\n");
}

/// The app's home, checked to be a mount of its own (the quota image).
fn harness_home_checked(harness: &Harness) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let home = home_of(harness);
    let device = |path: &Path| std::fs::metadata(path).unwrap().dev();
    assert_ne!(
        device(&home),
        device(home.parent().unwrap()),
        "{} is a mount of its own",
        home.display()
    );
    home
}

/// Launched by an unprivileged user, a home quota cannot be enforced (no loop devices, no ext4
/// mounts): the app runs, the launch log says the quota is not enforced, and no image is made.
#[test]
fn a_home_quota_launched_unprivileged_is_reported_not_enforced() {
    let harness = Harness::new(User::Unprivileged);
    let manifest = format!(
        "{}\n[home]\nquota = \"4MiB\"\n",
        common::probe_manifest(APP_ID, "elastos-probe", "")
    );
    let dir = harness.stage(
        "quota",
        &manifest,
        &[("elastos-probe", &common::binaries().probe)],
    );
    let bundle = harness.pack(&dir);
    let out = harness.run(&bundle, &["home-put", "note", "kept"]).output();
    let log = out.assert_code(0).stderr_text();
    assert!(
        log.contains("the home quota is not enforced: it needs root"),
        "{log}"
    );
    let home = home_of(&harness);
    assert!(!home.with_file_name(format!("{APP_ID}.img")).exists());
    let shown = harness
        .elastos()
        .args(["policy", "show"])
        .arg(&bundle)
        .output();
    let text = shown.assert_code(0).stdout_text();
    assert!(
        text.contains("launched by another user, NOT enforced"),
        "{text}"
    );
}

/// The host's `home_quota` ceiling is the quota of an app whose manifest asks for none: saying
/// nothing does not let an app fill the disk.
#[test]
fn the_hosts_home_quota_holds_an_app_that_asks_for_none() {
    let harness = Harness::new(User::Root);
    let _unmount = UnmountUnder(harness.path().to_owned());
    let limits = harness.elastos_home().join("limits.toml");
    std::fs::write(&limits, "home_quota = \"4MiB\"\n").expect("user ceilings");
    harness.own(&limits);
    let bundle = harness.probe_bundle("silent", APP_ID, "");
    let out = harness
        .run(&bundle, &["fill-home", &(16u64 << 20).to_string()])
        .output();
    let text = out.assert_code(0).stdout_text();
    assert!(text.contains("No space left on device"), "{text}");
    harness_home_checked(&harness);
    // A manifest asking for more than the ceiling is refused, naming both.
    let manifest = format!(
        "{}\n[home]\nquota = \"1GiB\"\n",
        common::probe_manifest(APP_ID, "elastos-probe", "")
    );
    let dir = harness.stage(
        "greedy",
        &manifest,
        &[("elastos-probe", &common::binaries().probe)],
    );
    let out = harness.run(&harness.pack(&dir), &["exit", "0"]).output();
    out.assert_code(125);
    assert!(
        out.stderr_text()
            .contains("`home.quota` = 1073741824 is above this host's ceiling of 4194304"),
        "{}",
        out.stderr_text()
    );
}
