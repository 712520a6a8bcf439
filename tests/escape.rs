//! The escape suite: every probe of `elastos-probe` runs twice, unjailed on the host and jailed
//! through `elastos run`, with the same arguments, as root and as an unprivileged user.
//!
//! Each probe's expected jailed answer is data ([`EXPECTATIONS`]). A probe passes when the jailed
//! answer matches it. Run unjailed, the same probe must *not* match it: that shows the answer came
//! from the jail, not from the kernel's own argument checks, and that the test would fail if the
//! jail were off. Where the host itself already gives the expected answer (a kernel built
//! without the call, a file the host lacks, a right an unprivileged user never had), the probe is
//! inconclusive on this host; the suite names those and still demands at least
//! [`MIN_CONCLUSIVE`] conclusive probes per run.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::Path;

use common::{parse_probe_lines, Harness, ProbeResult, Sacrificial, User, EXTRA_FD};
use libc::{
    EACCES, EBADF, EINVAL, ENOENT, ENOPROTOOPT, ENOSPC, ENOSYS, ENOTTY, EPERM, EROFS, ESRCH, EXDEV,
};

/// Staging dir (and bundle name) of the probe app; also its `/app` when probing unjailed.
const PROBE_STAGING: &str = "probe";

/// App id of the probe bundle.
const PROBE_APP_ID: &str = "6f1c8a3e-2b4d-4e5f-9a7b-1c2d3e4f5a6b";

/// What `elastos-probe exec-marker` prints: the exec'd copy of the probe ran.
const EXEC_MARKER: &str = "EXEC-MARKER: a copy of elastos-probe that the app wrote was executed";

/// The fewest probes that must discriminate (jail on vs off) in each run.
const MIN_CONCLUSIVE: usize = 50;

/// What a probe is about (for the report; the probe name says exactly what it tries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Category {
    ProcessCreation,
    Sockets,
    KernelSurface,
    Filesystem,
    HostProcesses,
    Privilege,
    HostLeaks,
}

/// The jailed answer a probe must get.
#[derive(Debug)]
enum Expect {
    /// The call failed with one of these errnos. ENOSYS alone means "our seccomp filter said no".
    Errno(&'static [i32]),
    /// The call succeeded and returned this value (a count, an id, a flag).
    Ret(i64),
    /// The call succeeded and its detail, a comma-separated list, holds exactly these items.
    Exactly(&'static [&'static str]),
    /// The call succeeded and its detail, a comma-separated list, holds only these items.
    Subset(&'static [&'static str]),
}

impl Expect {
    fn matches(&self, result: &ProbeResult) -> bool {
        let items = || result.detail.split(',').filter(|item| !item.is_empty());
        match self {
            Expect::Errno(errnos) => result.ret < 0 && errnos.contains(&result.errno),
            Expect::Ret(ret) => result.errno == 0 && result.ret == *ret,
            Expect::Exactly(wanted) => {
                let mut found: Vec<&str> = items().collect();
                found.sort_unstable();
                let mut wanted = wanted.to_vec();
                wanted.sort_unstable();
                result.errno == 0 && found == wanted
            }
            Expect::Subset(allowed) => {
                result.errno == 0 && items().all(|item| allowed.contains(&item))
            }
        }
    }
}

struct Expectation {
    probe: &'static str,
    category: Category,
    jailed: Expect,
}

const fn expect(probe: &'static str, category: Category, jailed: Expect) -> Expectation {
    Expectation {
        probe,
        category,
        jailed,
    }
}

use Category::*;
use Expect::*;

/// Seccomp's answer: the call is not in the allow-list.
const FILTERED: Expect = Errno(&[ENOSYS]);
/// Seccomp's answer to an allowed call with refused arguments: a set-id mode, MSG_OOB.
const REFUSED_ARGUMENTS: Expect = Errno(&[EPERM]);
/// Seccomp's answer to an ioctl request not in its allow-list. The kernel gives the same answer
/// for a request the fd does not support, so a probe whose unjailed run gets it too (a terminal
/// request on a stdin that is no terminal) is inconclusive; the BPF unit tests prove those.
const IOCTL_REFUSED: Expect = Errno(&[ENOTTY]);
/// A host path that must not exist in the jail, or that Landlock hides.
const ABSENT: Expect = Errno(&[ENOENT, EACCES]);
/// A write into a read-only place: Landlock (EACCES/EPERM) or a read-only mount (EROFS).
const READ_ONLY: Expect = Errno(&[EACCES, EPERM, EROFS]);
/// Exec of something outside /app: Landlock (EACCES), noexec (EACCES), or seccomp.
const NOT_EXECUTABLE: Expect = Errno(&[EACCES, EPERM, ENOSYS]);
/// A host process seen from the jail's pid namespace: not there, or not permitted.
const NO_SUCH_PROCESS: Expect = Errno(&[ESRCH, EPERM, ENOSYS]);
/// A privilege the app may not gain: no capability in its namespace (EPERM), uid 0 not mapped
/// (EINVAL), or seccomp.
const NOT_PERMITTED: Expect = Errno(&[EPERM, EINVAL, ENOSYS]);

/// The environment the jail gives an app whose manifest has no `[env]`.
const ALLOWED_ENV: &[&str] = &[
    "ELASTOS_APP_ID",
    "ELASTOS_APP_NAME",
    "ELASTOS_IPC_FD",
    "HOME",
    "LANG",
    "PATH",
    "TERM",
];

/// Every probe of `elastos-probe list`, with its expected jailed answer.
const EXPECTATIONS: &[Expectation] = &[
    expect("fds-open", HostLeaks, Exactly(&["0", "1", "2", "3"])),
    expect("fd3-is-unix-socket", HostLeaks, Ret(1)),
    expect("extra-fd", HostLeaks, Errno(&[EBADF])),
    expect("env-canary", HostLeaks, Ret(0)),
    expect("env-names", HostLeaks, Subset(ALLOWED_ENV)),
    expect("hostname-is-elastos", HostLeaks, Ret(1)),
    expect("network-interfaces", HostLeaks, Ret(0)),
    expect("visible-processes", HostLeaks, Ret(0)),
    expect("uid", Privilege, Ret(1000)),
    expect("cap-eff", Privilege, Ret(0)),
    expect("cap-prm", Privilege, Ret(0)),
    expect("cap-bnd", Privilege, Ret(0)),
    expect("no-new-privs", Privilege, Ret(1)),
    expect("seccomp-mode", Privilege, Ret(2)),
    expect("read-etc-passwd", Filesystem, ABSENT),
    expect("read-etc-shadow", Filesystem, ABSENT),
    expect("read-etc-hosts", Filesystem, ABSENT),
    expect("read-host-canary", Filesystem, ABSENT),
    expect("read-host-home-canary", Filesystem, ABSENT),
    expect("read-host-proc-environ", Filesystem, ABSENT),
    expect("open-dev-kmsg", Filesystem, ABSENT),
    expect("list-root-home", Filesystem, ABSENT),
    expect("list-run", Filesystem, ABSENT),
    expect("list-sys", Filesystem, ABSENT),
    expect("list-var", Filesystem, ABSENT),
    expect("write-usr", Filesystem, READ_ONLY),
    expect("write-etc", Filesystem, READ_ONLY),
    expect("write-root-dir", Filesystem, READ_ONLY),
    expect("write-app", Filesystem, READ_ONLY),
    expect(
        "open-sysrq-trigger",
        Filesystem,
        Errno(&[EACCES, EPERM, EROFS, ENOENT]),
    ),
    expect("open-proc-hostname", Filesystem, READ_ONLY),
    expect("home-symlink-to-canary", Filesystem, ABSENT),
    expect(
        "hardlink-app-into-home",
        Filesystem,
        Errno(&[EXDEV, EACCES, EPERM, EROFS]),
    ),
    expect(
        "rename-app-into-home",
        Filesystem,
        Errno(&[EXDEV, EACCES, EPERM, EROFS]),
    ),
    expect(
        "mknod-home-chardev",
        Filesystem,
        Errno(&[EPERM, EACCES, ENOSYS]),
    ),
    expect("fchmod-setuid-home", Filesystem, REFUSED_ARGUMENTS),
    expect("fchmodat-setgid-proc-fd", Filesystem, REFUSED_ARGUMENTS),
    expect("open-creat-setuid-home", Filesystem, REFUSED_ARGUMENTS),
    expect("tmp-inode-limit", Filesystem, Errno(&[ENOSPC])),
    expect("inet-tcp-connect", Sockets, FILTERED),
    expect("inet-udp", Sockets, FILTERED),
    expect("inet6-tcp", Sockets, FILTERED),
    expect("unix-stream-connect", Sockets, FILTERED),
    expect("unix-dgram", Sockets, FILTERED),
    expect("netlink-route", Sockets, FILTERED),
    expect("packet-raw", Sockets, FILTERED),
    expect("socketpair-unix", Sockets, FILTERED),
    expect("send-msg-oob-fd3", Sockets, REFUSED_ARGUMENTS),
    expect("recv-msg-oob-fd3", Sockets, REFUSED_ARGUMENTS),
    expect(
        "getsockopt-so-peerpidfd-fd3",
        Sockets,
        Errno(&[ENOPROTOOPT]),
    ),
    expect("reboot", KernelSurface, FILTERED),
    expect("kexec-load", KernelSurface, FILTERED),
    expect("init-module", KernelSurface, FILTERED),
    expect("finit-module", KernelSurface, FILTERED),
    expect("delete-module", KernelSurface, FILTERED),
    expect("swapon", KernelSurface, FILTERED),
    expect("swapoff", KernelSurface, FILTERED),
    expect("acct", KernelSurface, FILTERED),
    expect("syslog", KernelSurface, FILTERED),
    expect("settimeofday", KernelSurface, FILTERED),
    expect("clock-settime", KernelSurface, FILTERED),
    expect("adjtimex", KernelSurface, FILTERED),
    expect("iopl", KernelSurface, FILTERED),
    expect("ioperm", KernelSurface, FILTERED),
    expect("mount", KernelSurface, FILTERED),
    expect("umount2", KernelSurface, FILTERED),
    expect("pivot-root", KernelSurface, FILTERED),
    expect("chroot", KernelSurface, FILTERED),
    expect("unshare", KernelSurface, FILTERED),
    expect("setns", KernelSurface, FILTERED),
    expect("open-by-handle-at", KernelSurface, FILTERED),
    expect("name-to-handle-at", KernelSurface, FILTERED),
    expect("bpf", KernelSurface, FILTERED),
    expect("perf-event-open", KernelSurface, FILTERED),
    expect("userfaultfd", KernelSurface, FILTERED),
    expect("keyctl", KernelSurface, FILTERED),
    expect("add-key", KernelSurface, FILTERED),
    expect("request-key", KernelSurface, FILTERED),
    expect("ptrace", KernelSurface, FILTERED),
    expect("process-vm-readv", KernelSurface, FILTERED),
    expect("io-uring-setup", KernelSurface, FILTERED),
    expect("fsopen", KernelSurface, FILTERED),
    expect("open-tree", KernelSurface, FILTERED),
    expect("move-mount", KernelSurface, FILTERED),
    expect("quotactl", KernelSurface, FILTERED),
    expect("sethostname", KernelSurface, FILTERED),
    expect("modify-ldt", KernelSurface, FILTERED),
    expect("fanotify-init", KernelSurface, FILTERED),
    expect("ioctl-tiocsti", KernelSurface, IOCTL_REFUSED),
    expect("ioctl-tiocsti-high-bits", KernelSurface, IOCTL_REFUSED),
    expect("ioctl-tioclinux", KernelSurface, IOCTL_REFUSED),
    expect("ioctl-siocgifconf-fd3", KernelSurface, IOCTL_REFUSED),
    expect("ioctl-siocethtool", KernelSurface, IOCTL_REFUSED),
    expect("ioctl-fs-getflags", KernelSurface, IOCTL_REFUSED),
    expect("kill-host-pid", HostProcesses, NO_SUCH_PROCESS),
    expect("kill-everyone", HostProcesses, NO_SUCH_PROCESS),
    expect("getpriority-host-pid", HostProcesses, NO_SUCH_PROCESS),
    expect("prlimit-host-pid", HostProcesses, NO_SUCH_PROCESS),
    expect("pidfd-open-host-pid", HostProcesses, NO_SUCH_PROCESS),
    expect("setuid-root", Privilege, NOT_PERMITTED),
    expect("setgid-root", Privilege, NOT_PERMITTED),
    expect("setgroups-empty", Privilege, NOT_PERMITTED),
    expect("capset-sys-admin", Privilege, NOT_PERMITTED),
    expect("capbset-drop", Privilege, NOT_PERMITTED),
    expect("fork", ProcessCreation, FILTERED),
    expect("vfork", ProcessCreation, FILTERED),
    expect("clone-process", ProcessCreation, FILTERED),
    expect("clone-thread-newuser", ProcessCreation, FILTERED),
    expect("clone3", ProcessCreation, FILTERED),
    expect("posix-spawn", ProcessCreation, FILTERED),
    expect("system", ProcessCreation, FILTERED),
    expect("exec-usr-bin-true", ProcessCreation, NOT_EXECUTABLE),
    // The probe app is a static executable: its jail gives no execute right on the dynamic
    // loader (for a dynamic entry, see `a_dynamic_entry_runs_host_programs_only_inside_the_jail`).
    expect("exec-ld-so-usr-bin-true", ProcessCreation, NOT_EXECUTABLE),
    expect("exec-home-file", ProcessCreation, NOT_EXECUTABLE),
    expect("exec-tmp-file", ProcessCreation, NOT_EXECUTABLE),
    expect("setuid-bit-home", ProcessCreation, NOT_EXECUTABLE),
    expect("exec-memfd-proc", ProcessCreation, NOT_EXECUTABLE),
    expect("execveat-memfd", ProcessCreation, NOT_EXECUTABLE),
];

/// The targets the probes aim at, all created by this test and removed with it.
struct Targets {
    harness: Harness,
    tcp: TcpListener,
    unix_path: std::path::PathBuf,
    _unix: UnixListener,
    sacrificial: Sacrificial,
    canary: std::path::PathBuf,
    home_canary: std::path::PathBuf,
    env_canary: String,
}

impl Targets {
    fn new(user: User) -> Targets {
        let harness = Harness::new(user);
        let canary = harness.write("host-canary.txt", "host canary\n", 0o644);
        let home_canary = harness.host_home().join("canary.txt");
        std::fs::write(&home_canary, "host home canary\n").unwrap();
        harness.own(&home_canary);
        let unix_path = harness.path().join("listener.sock");
        let unix = UnixListener::bind(&unix_path).expect("bind a unix listener");
        // Let the unprivileged user's unjailed probe connect too, so the comparison is fair.
        harness.own(&unix_path);
        std::fs::set_permissions(
            &unix_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        Targets {
            tcp: TcpListener::bind("127.0.0.1:0").expect("bind a tcp listener"),
            unix_path,
            _unix: unix,
            sacrificial: Sacrificial::start(),
            canary,
            home_canary,
            env_canary: common::unique_token("ELASTOS_TEST_CANARY_"),
            harness,
        }
    }

    /// The `key=value` arguments both runs get (the unjailed one also gets `app=`).
    fn probe_args(&self) -> Vec<String> {
        vec![
            format!("canary={}", self.canary.display()),
            format!("home_canary={}", self.home_canary.display()),
            format!("port={}", self.tcp.local_addr().unwrap().port()),
            format!("unix={}", self.unix_path.display()),
            format!("pid={}", self.sacrificial.pid()),
            format!("env={}", self.env_canary),
            format!("fd={EXTRA_FD}"),
        ]
    }
}

fn by_name(results: Vec<ProbeResult>) -> BTreeMap<String, ProbeResult> {
    results.into_iter().map(|r| (r.probe.clone(), r)).collect()
}

/// What the jailed probes reported.
struct JailedResults {
    results: BTreeMap<String, ProbeResult>,
    /// Probes whose exec of a program the app wrote itself succeeded (it printed the marker).
    escaped_exec: Vec<&'static str>,
}

/// Runs every probe through `elastos run`: all at once, then each probe missing from that run
/// alone (a probe whose exec succeeds in-process ends the run it is in).
fn run_jailed(targets: &Targets, bundle: &Path) -> JailedResults {
    let args = targets.probe_args();
    let run = |words: &[&str]| {
        let words: Vec<&str> = words
            .iter()
            .copied()
            .chain(args.iter().map(String::as_str))
            .collect();
        let out = targets
            .harness
            .run(bundle, &words)
            .env(&targets.env_canary, "leaked")
            .extra_fd(&targets.canary)
            .output();
        out.assert_code(0);
        out.stdout_text()
    };
    let mut results = by_name(parse_probe_lines(&run(&["all"])));
    let missing: Vec<&'static str> = EXPECTATIONS
        .iter()
        .map(|e| e.probe)
        .filter(|probe| !results.contains_key(*probe))
        .collect();
    let mut escaped_exec = Vec::new();
    for probe in missing {
        let stdout = run(&["run", probe]);
        if stdout.contains(EXEC_MARKER) {
            escaped_exec.push(probe);
        }
        results.extend(by_name(parse_probe_lines(&stdout)));
    }
    JailedResults {
        results,
        escaped_exec,
    }
}

/// Runs every probe directly on the host, with the same arguments, environment and fds.
fn run_unjailed(targets: &Targets) -> BTreeMap<String, ProbeResult> {
    let harness = &targets.harness;
    let out = harness
        .unjailed_probe(&harness.mkdir("unjailed-home"))
        .arg("all")
        .args(targets.probe_args())
        .arg(format!(
            "app={}",
            harness.path().join(PROBE_STAGING).display()
        ))
        .env(&targets.env_canary, "leaked")
        .extra_fd(&targets.canary)
        .output();
    out.assert_code(0);
    by_name(parse_probe_lines(&out.stdout_text()))
}

/// How one probe fared.
enum Verdict {
    Pass,
    /// Passed, but the host gives the same answer unjailed, so it proves nothing here.
    Inconclusive(String),
    Fail(String),
}

fn judge(expectation: &Expectation, jailed: &JailedResults, host: &ProbeResult) -> Verdict {
    let name = expectation.probe;
    let category = expectation.category;
    if jailed.escaped_exec.contains(&name) {
        return Verdict::Fail(format!(
            "{name} ({category:?}): the exec SUCCEEDED in the jail: a program the app wrote itself \
             ran (it printed {EXEC_MARKER:?})\n    unjailed: {host}"
        ));
    }
    let Some(jail) = jailed.results.get(name) else {
        return Verdict::Fail(format!(
            "{name} ({category:?}): the jailed probe printed no result"
        ));
    };
    if !expectation.jailed.matches(jail) {
        Verdict::Fail(format!(
            "{name} ({category:?}): expected {:?}\n    jailed:   {jail}\n    unjailed: {host}",
            expectation.jailed
        ))
    } else if expectation.jailed.matches(host) {
        Verdict::Inconclusive(format!("{name}: unjailed too: {host}"))
    } else {
        Verdict::Pass
    }
}

/// Runs every probe unjailed and jailed as `user` and checks them against [`EXPECTATIONS`].
fn escape_suite(user: User) {
    let targets = Targets::new(user);
    let bundle = targets
        .harness
        .probe_bundle(PROBE_STAGING, PROBE_APP_ID, "");
    let jailed = run_jailed(&targets, &bundle);
    let unjailed = run_unjailed(&targets);

    let mut failures = Vec::new();
    let mut inconclusive = Vec::new();
    for expectation in EXPECTATIONS {
        let name = expectation.probe;
        let host = unjailed
            .get(name)
            .unwrap_or_else(|| panic!("unjailed run printed no result for {name}"));
        assert_ne!(
            host.errno,
            ProbeResult::SETUP_FAILED,
            "unjailed {name} could not run: {}",
            host.detail
        );
        match judge(expectation, &jailed, host) {
            Verdict::Pass => {}
            Verdict::Inconclusive(note) => inconclusive.push(note),
            Verdict::Fail(message) => failures.push(message),
        }
    }
    let conclusive = EXPECTATIONS.len() - inconclusive.len();
    eprintln!(
        "escape suite as {user:?}: {} probes, {conclusive} conclusive, {} failed; \
         inconclusive on this host:\n  {}",
        EXPECTATIONS.len(),
        failures.len(),
        inconclusive.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} escape probes failed as {user:?}:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert!(
        conclusive >= MIN_CONCLUSIVE,
        "only {conclusive} probes told jailed from unjailed apart as {user:?} (need {MIN_CONCLUSIVE})"
    );
}

#[test]
fn no_probe_escapes_when_launched_by_root() {
    escape_suite(User::Root);
}

#[test]
fn no_probe_escapes_when_launched_by_an_unprivileged_user() {
    escape_suite(User::Unprivileged);
}

#[test]
fn expectations_cover_every_probe_in_order() {
    let harness = Harness::new(User::Root);
    let listed = harness
        .unjailed_probe(&harness.host_home())
        .arg("list")
        .output();
    let listed = listed.assert_code(0).stdout_text();
    let table: Vec<&str> = EXPECTATIONS.iter().map(|e| e.probe).collect();
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        table,
        "EXPECTATIONS vs `elastos-probe list`"
    );
}

#[test]
fn expectations_tell_denial_from_success() {
    // The comparison itself must be able to fail: a successful call never matches an errno
    // expectation, and a wrong count never matches a value.
    let ok = ProbeResult {
        probe: "p".into(),
        ret: 3,
        errno: 0,
        detail: "0,1,2,3,9".into(),
    };
    assert!(!FILTERED.matches(&ok));
    assert!(!Ret(0).matches(&ok));
    assert!(!Exactly(&["0", "1", "2", "3"]).matches(&ok));
    assert!(!Subset(ALLOWED_ENV).matches(&ok));
    let denied = ProbeResult {
        probe: "p".into(),
        ret: -1,
        errno: ENOSYS,
        detail: String::new(),
    };
    assert!(FILTERED.matches(&denied));
    assert!(!READ_ONLY.matches(&denied));
}

// Kernel counters charged to the app, not to its launcher (issue #14, part 2).
//
// The kernel counts inotify instances and watches, pending signals and namespaces per user, at
// every level of the user-namespace tree. The jail's app holds as much of each as it can, and a
// process of the launching user must still get its own meanwhile. Before the fix, launched by
// root, the app held root's 128 inotify instances and 96,369 pending signals, and root's
// `inotify_init1` failed with EMFILE and its `sigqueue` with EAGAIN.

/// App id of the bundle that holds the counters.
const COUNTERS_APP_ID: &str = "2c7d9e41-6a3b-4f58-8e1d-0b9c4a7f3e25";

/// `key=value` words of a line, as numbers.
fn numbers(line: &str) -> BTreeMap<String, i64> {
    key_values(line)
        .into_iter()
        .map(|(key, value)| {
            let number = value
                .parse()
                .unwrap_or_else(|_| panic!("{key}={value:?} in {line:?} is not a number"));
            (key, number)
        })
        .collect()
}

/// `key=value` words of a line.
fn key_values(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Lets the holding app go when dropped, also when an assertion failed first.
struct Release(std::path::PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

fn kernel_counters_are_charged_to_the_app(user: User) {
    use elastos_handoff::kernel_counters::{PENDING_SIGNALS, USER_NAMESPACE_LIMITS};
    let limit = |name: &str| {
        USER_NAMESPACE_LIMITS
            .iter()
            .find(|limit| limit.name == name)
            .map(|limit| limit.value as i64)
            .unwrap_or_else(|| panic!("no limit {name}"))
    };
    let harness = Harness::new(user);
    // More open files than inotify instances a user may have, so that the instance limit, not
    // the fd limit, is what stops the app.
    let bundle = harness.probe_bundle("counters", COUNTERS_APP_ID, "open_files = 256");
    let holder = harness.run(&bundle, &["hold-counters"]).spawn();
    let homes = harness.elastos_home().join("homes");
    let home = || {
        std::fs::read_dir(&homes)
            .ok()?
            .flatten()
            .map(|publisher| publisher.path().join(COUNTERS_APP_ID))
            .find(|home| home.join("held").is_file())
    };
    assert!(
        common::eventually(std::time::Duration::from_secs(60), || home().is_some()),
        "the app never said it holds the counters:\n{}",
        holder.wait().stderr_text()
    );
    let home = home().expect("found above");
    let release = Release(home.join("release"));
    let held = numbers(&std::fs::read_to_string(home.join("held")).unwrap());
    let check = harness
        .unjailed_probe(&harness.host_home())
        .arg("counters-check")
        .output();
    let check = numbers(&check.assert_code(0).stdout_text());
    drop(release);
    holder.wait().assert_code(0);
    eprintln!("as {user:?}: the app held {held:?}; the launching user then got {check:?}");

    assert_eq!(
        (held["instances"], held["instances_errno"]),
        (limit("max_inotify_instances"), i64::from(libc::EMFILE)),
        "the app's inotify instances stop at its own limit"
    );
    assert_eq!(
        (held["watches"], held["watches_errno"]),
        (limit("max_inotify_watches"), i64::from(libc::ENOSPC)),
        "the app's inotify watches stop at its own limit"
    );
    assert_eq!(
        held["signals"], PENDING_SIGNALS as i64,
        "the app's pending signals stop at its RLIMIT_SIGPENDING"
    );
    assert_eq!(
        check["inotify"], 0,
        "the launching user gets an inotify instance"
    );
    assert_eq!(
        check["watch"], 0,
        "the launching user gets an inotify watch"
    );
    assert_eq!(
        check["sigqueue"], 0,
        "the launching user can queue a signal to itself"
    );
    // Pipe pages are counted per host uid, not per namespace: the app runs as a uid of its own
    // (launched by root: its per-app uid; by a user: a subordinate id of the user's, see
    // loader/src/subordinate.rs), so it fills its own soft limit and the launching user's new
    // pipes keep their full size. (Before subordinate ids, a user's app made them 8 KiB.)
    let soft: i64 = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        soft > 0 && held["pipe_pages"] >= soft,
        "the app did not reach its pipe-user-pages-soft of {soft}: {held:?}"
    );
    assert_eq!(
        check["pipe_size"], 65536,
        "the launching user gets a full-size pipe"
    );
    if user == User::Root {
        // Its namespace is not root's either: none of its pending signals counts as root's.
        assert!(
            check["user_pending_signals"] < PENDING_SIGNALS as i64,
            "the app's {} pending signals are counted as root's: {check:?}",
            held["signals"]
        );
    }
}

#[test]
fn kernel_counters_are_charged_to_the_app_when_launched_by_root() {
    kernel_counters_are_charged_to_the_app(User::Root);
}

#[test]
fn kernel_counters_are_charged_to_the_app_when_launched_by_an_unprivileged_user() {
    kernel_counters_are_charged_to_the_app(User::Unprivileged);
}

// The dynamic loader (issue #14, part 5). Run as a program, `ld.so FILE` runs any file it can
// read, and Landlock sees only the loader's execution. A static entry's jail has no execute
// right on it (the escape probe `exec-ld-so-usr-bin-true`, the probe app being static); a
// dynamic entry needs it, so for one the guarantee is weaker, and `policy show` says which.

/// App id of the bundle whose entry is the host's (dynamically linked) `dash`.
const DYNAMIC_APP_ID: &str = "8e4b1f2a-5c6d-4e7f-a0b1-c2d3e4f5a6b7";

#[test]
fn a_dynamic_entry_runs_host_programs_through_the_loader_only_inside_its_jail() {
    let harness = Harness::new(User::Root);
    let manifest = common::probe_manifest(DYNAMIC_APP_ID, "sh", "");
    let dir = harness.stage("dynamic", &manifest, &[("sh", Path::new("/bin/dash"))]);
    let dynamic = harness.pack(&dir);
    // `exec` replaces the shell (no fork, which the jail refuses) by the loader running cat.
    let out = harness
        .run(
            &dynamic,
            &[
                "-c",
                "exec /lib64/ld-linux-x86-64.so.2 /usr/bin/cat /proc/self/status",
            ],
        )
        .output();
    let status = out.assert_code(0).stdout_text();
    for jailed in [
        "Uid:\t1000\t1000\t1000\t1000",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(
            status.lines().any(|line| line == jailed),
            "the host program ran outside the jail's rules ({jailed:?} missing):\n{status}"
        );
    }
    let shown = |bundle: &Path| {
        let out = harness
            .elastos()
            .args(["policy", "show"])
            .arg(bundle)
            .output();
        let text = out.assert_code(0).stdout_text();
        text.lines()
            .find(|line| line.starts_with("  programs it can execute: "))
            .unwrap_or_else(|| panic!("policy show says nothing about programs:\n{text}"))
            .to_owned()
    };
    let dynamic_says = shown(&dynamic);
    assert!(
        dynamic_says.contains("any host program it can read")
            && dynamic_says.contains("/lib64/ld-linux-x86-64.so.2"),
        "{dynamic_says}"
    );
    let probe = harness.probe_bundle("static", PROBE_APP_ID, "");
    let static_says = shown(&probe);
    assert!(
        static_says.contains("only the files of its bundle (the entry is statically linked"),
        "{static_says}"
    );
}

// The app's fd 3 belongs to the jail's network namespace (issue #14, part 4). A socket answers
// network requests (SIOCGIFCONF, SIOCETHTOOL, ...) about the namespace it was created in; made
// by the launcher, fd 3 was a socket of the host's, and listed the host's `lo,eth0` from the
// jail (the ioctl allow-list refuses those requests now; this takes the socket itself out of
// the host's namespace).

fn the_apps_socket_belongs_to_the_jails_network_namespace(user: User) {
    use std::os::unix::fs::MetadataExt;
    let harness = Harness::new(user);
    let bundle = harness.probe_bundle(PROBE_STAGING, PROBE_APP_ID, "");
    let token = common::unique_token("netns");
    let running = harness.run(&bundle, &["sleep", "30", &token]).spawn();
    let launcher = running.pid();
    let mut app = Vec::new();
    // The app, not the jail's first process before it execs the loader (a copy of the
    // launcher, with its command line): argv[0] is the entry's name.
    let started = common::eventually(std::time::Duration::from_secs(10), || {
        app = common::processes_with(&token, &[launcher])
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.starts_with(b"elastos-probe\0"))
            })
            .collect();
        app.len() == 1
    });
    assert!(started, "the app never showed up in /proc: {app:?}");
    let app = app[0];
    let namespace = |path: String| {
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("stat {path}: {e}"))
            .ino()
    };
    let jail = namespace(format!("/proc/{app}/ns/net"));
    let host = namespace("/proc/self/ns/net".to_owned());
    assert_ne!(jail, host, "the app runs in a network namespace of its own");
    // Root takes a copy of the app's fd 3 (pidfd_getfd) and asks the kernel whose it is.
    let root = Harness::new(User::Root);
    let out = root
        .unjailed_probe(&root.host_home())
        .args(["socket-netns", &app.to_string(), "3"])
        .output();
    let socket = key_values(&out.assert_code(0).stdout_text());
    drop(running);
    assert_eq!(
        socket["socket_netns"],
        jail.to_string(),
        "fd 3 belongs to the jail's network namespace (the host's is {host})"
    );
    // The jail's namespace has only `lo`, down and so without an address: nothing is listed.
    assert_eq!(socket["interfaces"], "", "{socket:?}");
}

#[test]
fn the_apps_socket_belongs_to_the_jails_network_namespace_when_launched_by_root() {
    the_apps_socket_belongs_to_the_jails_network_namespace(User::Root);
}

#[test]
fn the_apps_socket_belongs_to_the_jails_network_namespace_when_launched_by_an_unprivileged_user() {
    the_apps_socket_belongs_to_the_jails_network_namespace(User::Unprivileged);
}

// ---------------------------------------------------------------------------------------------
// Stdio: the app never holds a host file or the user's terminal (issue 14, part 1). These need
// stdio the escape suite cannot give its probes (a host file as stdout, a terminal), so they run
// the probe app's `stdio-host` and `tty` modes themselves, jailed and unjailed alike.

/// `stdio-host` as `user` with stdout a fresh host file of the user's (mode 0644) while the
/// test holds a shared lock on it; (what the probe reported, the file's mode after, whether the
/// test's own description of the file got O_NONBLOCK).
fn stdio_host_probe(harness: &Harness, name: &str, jailed: Option<&Path>) -> (String, u32, bool) {
    use std::os::unix::fs::PermissionsExt;
    let path = harness.write(name, "", 0o644);
    harness.own(&path);
    let lock = std::fs::File::open(&path).unwrap();
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockSharedNonblock)
        .unwrap_or_else(|(_, e)| panic!("lock {}: {e}", path.display()));
    let stdout = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let out = match jailed {
        Some(bundle) => harness
            .run(bundle, &["stdio-host"])
            .stdout_to(&stdout)
            .output(),
        None => harness
            .unjailed_probe(&harness.mkdir("unjailed-home"))
            .arg("stdio-host")
            .stdout_to(&stdout)
            .output(),
    };
    out.assert_code(0);
    let report = out
        .stderr_text()
        .lines()
        .find(|line| line.starts_with("stdout="))
        .unwrap_or_else(|| panic!("no report on stderr: {}", out.stderr_text()))
        .to_owned();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    let flags = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&stdout),
        nix::fcntl::FcntlArg::F_GETFL,
    )
    .unwrap();
    drop(lock);
    (report, mode, flags & libc::O_NONBLOCK != 0)
}

fn stdout_is_never_a_host_file(user: User) {
    let harness = Harness::new(user);
    let bundle = harness.probe_bundle(PROBE_STAGING, PROBE_APP_ID, "");
    let (jailed, mode, nonblocking) = stdio_host_probe(&harness, "jailed-out.txt", Some(&bundle));
    // The app's stdout is a pipe of the launcher's: its mode, lock and flags are the pipe's.
    assert!(jailed.starts_with("stdout=fifo "), "{jailed}");
    assert!(jailed.contains(" flock=ok "), "{jailed}");
    assert_eq!(
        mode, 0o644,
        "the jailed app changed its host stdout's mode: {jailed}"
    );
    assert!(
        !nonblocking,
        "the jailed app flagged the host's open file: {jailed}"
    );
    // Unjailed, the same probe on the same kind of file changes the file (as the user owns it),
    // meets the test's lock and flags the shared description: the checks above can fail.
    let (unjailed, mode, nonblocking) = stdio_host_probe(&harness, "unjailed-out.txt", None);
    assert!(unjailed.starts_with("stdout=regular "), "{unjailed}");
    assert!(
        unjailed.contains(&format!(" flock=errno {} ", libc::EWOULDBLOCK)),
        "{unjailed}"
    );
    assert_ne!(mode, 0o644, "{unjailed}");
    assert!(nonblocking, "{unjailed}");
}

#[test]
fn stdout_is_never_a_host_file_when_launched_by_root() {
    stdout_is_never_a_host_file(User::Root);
}

#[test]
fn stdout_is_never_a_host_file_when_launched_by_an_unprivileged_user() {
    stdout_is_never_a_host_file(User::Unprivileged);
}

/// The `tty` probe in the user's terminal (a pty the test opened); what it reported.
fn tty_probe(harness: &Harness, user: User, jailed: Option<&Path>) -> (String, common::Pty) {
    let pty = common::Pty::open(user, 24, 80);
    let running = match jailed {
        Some(bundle) => harness.run(bundle, &["tty"]).terminal(&pty.slave).spawn(),
        None => harness
            .unjailed_probe(&harness.mkdir("unjailed-home"))
            .arg("tty")
            .terminal(&pty.slave)
            .spawn(),
    };
    let shown = pty.wait_for("ready");
    pty.type_bytes(b"exit\r");
    running.wait().assert_code(0);
    (shown, pty)
}

fn the_terminal_is_never_the_users(user: User) {
    let harness = Harness::new(user);
    let bundle = harness.probe_bundle(PROBE_STAGING, PROBE_APP_ID, "");
    let (jailed, pty) = tty_probe(&harness, user, Some(&bundle));
    let users = format!("rdev={} ", pty.rdev());
    // A terminal, but another one: the launcher's pty, whose foreground group and settings are
    // the app's to change (TIOCSPGRP, TIOCSTI and the like reach only that one).
    assert!(jailed.contains("isatty=1,1,1 "), "{jailed}");
    assert!(
        !jailed.contains(&users),
        "the app holds the user's terminal: {jailed}"
    );
    let (unjailed, pty) = tty_probe(&harness, user, None);
    assert!(
        unjailed.contains(&format!("rdev={} ", pty.rdev())),
        "{unjailed}"
    );
}

#[test]
fn the_terminal_is_never_the_users_when_launched_by_root() {
    the_terminal_is_never_the_users(User::Root);
}

#[test]
fn the_terminal_is_never_the_users_when_launched_by_an_unprivileged_user() {
    the_terminal_is_never_the_users(User::Unprivileged);
}
