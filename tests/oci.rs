//! `elastos oci` as the OCI runtime of podman and containerd (Debian's packages), end to end:
//! the engine calls `elastos-runc` (a symlink to `elastos`) as it would call runc, with an
//! image made from a local rootfs holding only the static `elastos-probe`.
//!
//! Each engine runs the way ../shared/MACHINE.md says it must on this machine: podman inside a
//! private mount namespace with a tmpfs on /run and /var/lib and without the hybrid cgroup2
//! mount, its storage and run roots in the harness's temp dir; containerd on a private socket,
//! state and root dir, in a mount namespace with its own /run, stopped by a guard. The tests
//! prove that the process ran jailed (no fork, no socket, no capability, seccomp filtering),
//! that its stdout and exit code come back through the engine, that a spec asking for
//! CAP_SYS_ADMIN or the host's network is refused with a message naming the field, and that
//! nothing is left behind (jail cgroups, mounts, shims, state).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{binaries, eventually, parse_probe_lines, processes_with, Harness, Output, User};

/// One engine test at a time: each checks that the jail cgroups it caused are gone, which a
/// concurrent one would blur.
static ENGINE: Mutex<()> = Mutex::new(());

/// The cgroup hierarchies the jail uses here (cgroup v1 memory and pids; see
/// `elastos_loader::cgroup`).
const JAIL_CGROUPS: &[&str] = &[
    "/sys/fs/cgroup/memory/elastos",
    "/sys/fs/cgroup/pids/elastos",
];

fn jail_cgroups() -> BTreeSet<PathBuf> {
    JAIL_CGROUPS
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect()
}

/// What a test must leave as it found it.
struct Leftovers {
    cgroups: BTreeSet<PathBuf>,
}

impl Leftovers {
    fn before() -> Leftovers {
        Leftovers {
            cgroups: jail_cgroups(),
        }
    }

    /// No new jail cgroup, no process or mount naming `token`, an empty runtime state root.
    #[track_caller]
    fn assert_none(&self, token: &str, state_root: Option<&Path>) {
        let gone = eventually(Duration::from_secs(10), || {
            jail_cgroups().is_subset(&self.cgroups)
        });
        assert!(
            gone,
            "jail cgroups left behind: {:?}",
            jail_cgroups().difference(&self.cgroups).collect::<Vec<_>>()
        );
        assert!(
            eventually(Duration::from_secs(10), || processes_with(token, &[])
                .is_empty()),
            "processes left behind: {:?}",
            processes_with(token, &[])
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(token),
            "mounts left behind:\n{}",
            mounts
                .lines()
                .filter(|l| l.contains(token))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let states: Vec<_> = state_root
            .into_iter()
            .flat_map(std::fs::read_dir)
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(states.is_empty(), "runtime state left behind: {states:?}");
    }
}

/// The runtime binary as engines call it, and a rootfs of the static probe.
struct Fixture {
    harness: Harness,
    runtime: PathBuf,
    rootfs: PathBuf,
    /// The runtime's `--root`.
    state_root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let harness = Harness::new(User::Root);
        let runtime = harness.path().join("elastos-runc");
        std::os::unix::fs::symlink(&binaries().elastos, &runtime).unwrap();
        let rootfs = harness.mkdir("rootfs");
        std::fs::create_dir(rootfs.join("bin")).unwrap();
        std::fs::copy(&binaries().probe, rootfs.join("bin/elastos-probe")).unwrap();
        let state_root = harness.mkdir("oci-root");
        Fixture {
            harness,
            runtime,
            rootfs,
            state_root,
        }
    }

    /// The harness's temp dir: in every path of the test, so in the command line of every
    /// process it starts.
    fn token(&self) -> String {
        self.harness.path().display().to_string()
    }
}

fn require(tool: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success(),
        "{tool} is missing: install the Debian packages of scripts/dev.sh (podman, containerd)"
    );
}

/// podman as MACHINE.md says it runs here, with its roots in the fixture's temp dir.
struct Podman<'a> {
    fixture: &'a Fixture,
}

impl Podman<'_> {
    fn command(&self, args: &[&str]) -> Output {
        let dir = self.fixture.harness.path();
        // /run is the fixture's own directory, the same for every call of one test: a detached
        // container's runtime state (in /run/elastos-oci) must outlive the call that made it.
        let run = dir.join("p/run");
        std::fs::create_dir_all(&run).unwrap();
        let mut invocation = self.fixture.harness.program("unshare");
        invocation.args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$0\" /run && mount -t tmpfs tmpfs /var/lib && \
             { umount -l /sys/fs/cgroup/unified 2>/dev/null; true; } && exec \"$@\"",
        ]);
        invocation.arg(&run).arg("podman");
        for (flag, sub) in [
            ("--root", "p/root"),
            ("--runroot", "p/rr"),
            ("--tmpdir", "p/tmp"),
            ("--network-config-dir", "p/net"),
        ] {
            invocation.arg(flag).arg(dir.join(sub));
        }
        invocation.args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]);
        invocation.args(args);
        invocation.output()
    }

    /// `podman run --rm` of the probe image with elastos as the runtime.
    fn run(&self, options: &[&str], command: &[&str]) -> Output {
        let runtime = self.fixture.runtime.display().to_string();
        let mut args = vec![
            "--runtime",
            runtime.as_str(),
            "run",
            "--rm",
            "--pull",
            "never",
            "--cgroup-parent",
            "/elastos-oci-test",
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
        ];
        if !options.iter().any(|o| o.starts_with("--network")) {
            args.extend(["--network", "none"]);
        }
        args.extend(options);
        args.push("localhost/elastos-probe:test");
        args.extend(command);
        self.command(&args)
    }
}

/// The cgroups conmon makes under `--cgroup-parent` (the engine's, not the jail's): removed
/// deepest first.
fn remove_engine_cgroups(parent: &str) {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|controller| controller.path().join(parent.trim_start_matches('/')))
        .filter(|dir| dir.is_dir())
        .flat_map(|dir| {
            let mut all = vec![dir.clone()];
            all.extend(
                std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir()),
            );
            all
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    // conmon may still be on its way out when the engine returns: its cgroup empties shortly.
    for dir in dirs {
        eventually(Duration::from_secs(5), || {
            std::fs::remove_dir(&dir).is_ok() || !dir.exists()
        });
    }
}

struct EngineCgroups(&'static str);

impl Drop for EngineCgroups {
    fn drop(&mut self) {
        remove_engine_cgroups(self.0);
    }
}

fn probe_line(output: &Output, probe: &str) -> common::ProbeResult {
    parse_probe_lines(&output.stdout_text())
        .into_iter()
        .find(|r| r.probe == probe)
        .unwrap_or_else(|| {
            panic!(
                "no {probe} line in stdout:\n{}\nstderr:\n{}",
                output.stdout_text(),
                output.stderr_text()
            )
        })
}

impl Podman<'_> {
    /// `podman import` of the fixture's rootfs as `localhost/elastos-probe:test`.
    fn import_probe_image(&self) {
        let tar = self.fixture.harness.path().join("rootfs.tar");
        let packed = Command::new("tar")
            .arg("-C")
            .arg(&self.fixture.rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(packed.success());
        self.command(&[
            "import",
            &tar.display().to_string(),
            "localhost/elastos-probe:test",
        ])
        .assert_code(0);
    }
}

#[test]
fn podman_runs_containers_in_the_jail() {
    require("podman");
    let _one = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let _engine_cgroups = EngineCgroups("/elastos-oci-test");
    let leftovers = Leftovers::before();
    let fixture = Fixture::new();
    let podman = Podman { fixture: &fixture };
    podman.import_probe_image();

    // Jailed: no process creation (the child would _exit(0) at once), no socket.
    let fork = podman.run(&[], &["/bin/elastos-probe", "run", "fork"]);
    fork.assert_code(0);
    let fork = probe_line(&fork, "fork");
    assert_eq!((fork.ret, fork.errno), (-1, libc::ENOSYS), "{fork:?}");
    let udp = podman.run(&[], &["/bin/elastos-probe", "run", "inet-udp"]);
    let udp = probe_line(&udp, "inet-udp");
    assert_eq!((udp.ret, udp.errno), (-1, libc::ENOSYS), "{udp:?}");
    // No capability (podman asked for 11), seccomp filtering, no_new_privs.
    let status = podman.run(&[], &["/bin/elastos-probe", "status"]);
    status.assert_code(0);
    let text = status.stdout_text();
    for line in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }

    // Exit codes and stdout come back through the engine.
    podman
        .run(&[], &["/bin/elastos-probe", "exit", "7"])
        .assert_code(7);
    let args = podman.run(&[], &["/bin/elastos-probe", "args", "through", "podman"]);
    args.assert_code(0);
    assert_eq!(args.stdout_text(), "through\npodman\n");

    // Refused, with the field named.
    let admin = podman.run(
        &["--cap-add", "SYS_ADMIN"],
        &["/bin/elastos-probe", "exit", "0"],
    );
    assert_refused(
        &admin,
        "config.json process.capabilities.bounding = CAP_SYS_ADMIN: refused",
    );
    let host_net = podman.run(&["--network", "host"], &["/bin/elastos-probe", "exit", "0"]);
    assert_refused(
        &host_net,
        "config.json linux.namespaces = no net namespace: refused",
    );

    // The runtime's state lived under the private /run of each podman call (podman's cleanup
    // calls the runtime without its `--runtime-flag`s, so it runs with the default root).
    // The test's own network namespace: the host's (pid 1's may be unreadable here).
    let own_net = format!("ns:/proc/{}/ns/net", std::process::id());
    let host_net_path = podman.run(
        &["--network", &own_net],
        &["/bin/elastos-probe", "exit", "0"],
    );
    assert_refused(
        &host_net_path,
        &format!(
            "config.json linux.namespaces[1].path = {}: refused: joining the host's",
            own_net.trim_start_matches("ns:")
        ),
    );

    leftovers.assert_none(&fixture.token(), None);
}

/// The namespaces and jail cgroups of a host process, to compare two processes' (`ns/*` links,
/// the cgroup v1 memory, pids and cpu lines of `/proc/PID/cgroup`: the hierarchies the jail
/// limits with here; the others are the engine's).
fn namespaces_and_cgroups(pid: u32) -> Vec<String> {
    let mut all: Vec<String> = ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"]
        .iter()
        .map(|ns| {
            std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
                .map(|link| link.display().to_string())
                .unwrap_or_else(|e| format!("{ns}: {e}"))
        })
        .collect();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    all.extend(
        cgroups
            .lines()
            .filter(|line| {
                line.split(':').nth(1).is_some_and(|controllers| {
                    controllers
                        .split(',')
                        .any(|c| matches!(c, "memory" | "pids" | "cpu"))
                })
            })
            .map(str::to_owned),
    );
    all
}

/// Host pids of the processes whose command line is exactly `words`.
fn processes_running(words: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = words
        .iter()
        .flat_map(|w| [w.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

/// `podman exec` into a container running under elastos: the runtime adds the process to the
/// jail from outside, exactly as confined as the first (its namespaces and cgroups, no process
/// creation, no socket, no capability, no_new_privs, seccomp filtering), its stdout and exit
/// code come back through podman, a privileged exec is refused with the field named, and a
/// terminal (`-t`) is a pseudo-terminal the runtime made, for `run` as for `exec`.
#[test]
fn podman_exec_and_terminals_are_jailed_like_the_container() {
    require("podman");
    let _one = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let _engine_cgroups = EngineCgroups("/elastos-oci-test");
    let leftovers = Leftovers::before();
    let fixture = Fixture::new();
    let podman = Podman { fixture: &fixture };
    podman.import_probe_image();
    // The container's name is unique to this run: podman's own state is in the fixture.
    struct RemoveOnDrop<'a>(&'a Podman<'a>);
    impl Drop for RemoveOnDrop<'_> {
        fn drop(&mut self) {
            self.0.command(&["rm", "--force", "--time", "0", "jailed"]);
        }
    }
    podman
        .run(
            &["-d", "--name", "jailed"],
            &["/bin/elastos-probe", "sleep", "61"],
        )
        .assert_code(0);
    let _remove = RemoveOnDrop(&podman);
    let exec = |options: &[&str], command: &[&str]| {
        let mut args = vec!["exec"];
        args.extend(options);
        args.push("jailed");
        args.extend(command);
        podman.command(&args)
    };

    let status = exec(&[], &["/bin/elastos-probe", "status"]);
    status.assert_code(0);
    let text = status.stdout_text();
    for line in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    // The container's uid in its user namespace (podman's process.user, 0: root of an
    // namespace that owns nothing, without capabilities), as the container's first process.
    assert!(text.contains("Uid:\t0\t0\t0\t0"), "{text}");
    let fork = exec(&[], &["/bin/elastos-probe", "run", "fork"]);
    fork.assert_code(0);
    let fork = probe_line(&fork, "fork");
    assert_eq!((fork.ret, fork.errno), (-1, libc::ENOSYS), "{fork:?}");
    let udp = exec(&[], &["/bin/elastos-probe", "run", "inet-udp"]);
    let udp = probe_line(&udp, "inet-udp");
    assert_eq!((udp.ret, udp.errno), (-1, libc::ENOSYS), "{udp:?}");
    exec(&[], &["/bin/elastos-probe", "exit", "9"]).assert_code(9);
    let args = exec(&[], &["/bin/elastos-probe", "args", "through", "exec"]);
    args.assert_code(0);
    assert_eq!(args.stdout_text(), "through\nexec\n");

    // Same namespaces and cgroups as the container's process, seen from the host.
    exec(&["-d"], &["/bin/elastos-probe", "sleep", "62"]).assert_code(0);
    let first = processes_running(&["/bin/elastos-probe", "sleep", "61"]);
    let mut added = Vec::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            added = processes_running(&["/bin/elastos-probe", "sleep", "62"]);
            !added.is_empty()
        }),
        "the detached exec is not running"
    );
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        namespaces_and_cgroups(added[0]),
        namespaces_and_cgroups(first[0])
    );

    // A privileged exec is refused, with the field named.
    let privileged = exec(&["--privileged"], &["/bin/elastos-probe", "exit", "0"]);
    assert_refused(&privileged, "process.capabilities.bounding = CAP_");

    // A terminal (`-t`), for exec as for run: the process's stdout is a pseudo-terminal the
    // runtime made (its line discipline turns "\n" into "\r\n"), and the process leads a
    // session of its own whose terminal it cannot take over: TIOCSPGRP is ENOTTY in the jail, as
    // under `elastos run` (tests/run.rs).
    for terminal in [
        exec(&["-t"], &["/bin/elastos-probe", "terminal"]),
        podman.run(&["-t"], &["/bin/elastos-probe", "terminal"]),
    ] {
        terminal.assert_code(0);
        let text = terminal.stdout_text();
        assert!(
            text.contains(&format!("tiocspgrp=errno {}\r\n", libc::ENOTTY)),
            "{text:?}"
        );
    }

    drop(_remove);
    leftovers.assert_none(&fixture.token(), None);
}

/// containerd on a private socket, root and state dir, in a mount namespace with its own /run
/// (where its shims keep the runtime's state); killed with its shims on drop.
struct Containerd {
    child: Child,
    socket: PathBuf,
    token: String,
}

impl Containerd {
    fn start(fixture: &Fixture) -> Containerd {
        let dir = fixture.harness.mkdir("containerd");
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{socket}\"\n[ttrpc]\n  address = \"{ttrpc}\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            socket = socket.display(),
            ttrpc = dir.join("ttrpc.sock").display(),
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs -o mode=755 tmpfs /run && exec containerd --config \"$0\"",
            ])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let containerd = Containerd {
            child,
            socket,
            token: fixture.token(),
        };
        assert!(
            eventually(Duration::from_secs(30), || containerd.socket.exists()),
            "containerd did not listen on {}: see {}",
            containerd.socket.display(),
            dir.join("containerd.log").display()
        );
        containerd
    }

    fn ctr(&self, fixture: &Fixture, args: &[&str]) -> Output {
        let mut invocation = fixture.harness.program("ctr");
        invocation.arg("--address").arg(&self.socket);
        invocation.args(args);
        invocation.output()
    }

    /// `ctr run --rm` of the fixture's rootfs with elastos as the runtime.
    fn run(&self, fixture: &Fixture, id: &str, options: &[&str], command: &[&str]) -> Output {
        let runtime = fixture.runtime.display().to_string();
        let rootfs = fixture.rootfs.display().to_string();
        let fifos = fixture
            .harness
            .mkdir("containerd/fifo")
            .display()
            .to_string();
        let mut args = vec![
            "run",
            "--rm",
            "--fifo-dir",
            &fifos,
            "--runc-binary",
            runtime.as_str(),
        ];
        // ctr's options come before the rootfs (`--rootfs` is a flag: the path is the first
        // positional argument, where an image's name would be).
        args.extend(options);
        args.extend(["--rootfs", rootfs.as_str(), id]);
        args.extend(command);
        self.ctr(fixture, &args)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Its shims outlive it by design: they name its socket on their command lines.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = eventually(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in processes_with(&self.socket.display().to_string(), &[]) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = eventually(Duration::from_secs(10), || {
            processes_with(&self.token, &[]).is_empty()
        });
    }
}

#[test]
fn containerd_runs_containers_in_the_jail() {
    require("containerd");
    require("ctr");
    let _one = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let leftovers = Leftovers::before();
    let fixture = Fixture::new();
    {
        let containerd = Containerd::start(&fixture);

        let fork = containerd.run(
            &fixture,
            "c-fork",
            &[],
            &["/bin/elastos-probe", "run", "fork"],
        );
        fork.assert_code(0);
        let fork = probe_line(&fork, "fork");
        assert_eq!((fork.ret, fork.errno), (-1, libc::ENOSYS), "{fork:?}");
        let socket = containerd.run(
            &fixture,
            "c-socket",
            &[],
            &["/bin/elastos-probe", "run", "unix-stream-connect"],
        );
        let socket = probe_line(&socket, "unix-stream-connect");
        assert_eq!(socket.ret, -1, "{socket:?}");

        containerd
            .run(
                &fixture,
                "c-exit",
                &[],
                &["/bin/elastos-probe", "exit", "5"],
            )
            .assert_code(5);

        // Refused with the field named: ctr's --privileged asks for every capability, and
        // --net-host for the host's network namespace.
        let privileged = containerd.run(
            &fixture,
            "c-privileged",
            &["--privileged"],
            &["/bin/elastos-probe", "exit", "0"],
        );
        assert_refused(
            &privileged,
            "config.json process.capabilities.bounding = CAP_",
        );
        let host_net = containerd.run(
            &fixture,
            "c-host-net",
            &["--net-host"],
            &["/bin/elastos-probe", "exit", "0"],
        );
        assert_refused(
            &host_net,
            "config.json linux.namespaces = no net namespace: refused",
        );

        // Detached, then killed through the runtime (SIGTERM relayed to the process by the
        // jail's init) and deleted: its exit status is the signal's.
        let rootfs = fixture.rootfs.display().to_string();
        let runtime = fixture.runtime.display().to_string();
        containerd
            .ctr(
                &fixture,
                &[
                    "run",
                    "-d",
                    "--fifo-dir",
                    &fixture
                        .harness
                        .mkdir("containerd/fifo")
                        .display()
                        .to_string(),
                    "--runc-binary",
                    &runtime,
                    "--rootfs",
                    &rootfs,
                    "c-sleep",
                    "/bin/elastos-probe",
                    "sleep",
                    "60",
                ],
            )
            .assert_code(0);
        let listed = containerd.ctr(&fixture, &["task", "ls"]);
        assert!(
            listed
                .stdout_text()
                .lines()
                .any(|l| l.starts_with("c-sleep") && l.contains("RUNNING")),
            "{}",
            listed.stdout_text()
        );
        containerd
            .ctr(
                &fixture,
                &["task", "kill", "--signal", "SIGTERM", "c-sleep"],
            )
            .assert_code(0);
        assert!(
            eventually(Duration::from_secs(20), || {
                containerd
                    .ctr(&fixture, &["task", "ls"])
                    .stdout_text()
                    .lines()
                    .any(|l| l.starts_with("c-sleep") && l.contains("STOPPED"))
            }),
            "c-sleep did not stop on SIGTERM"
        );
        containerd
            .ctr(&fixture, &["task", "delete", "c-sleep"])
            .assert_code(0);
        containerd
            .ctr(&fixture, &["container", "delete", "c-sleep"])
            .assert_code(0);
    }
    // The runtime's state lived under the engine's private /run: the shims' and jails' ends
    // are what is left to check.
    leftovers.assert_none(&fixture.token(), None);
}

#[test]
fn the_runtime_alone_creates_starts_reports_and_deletes() {
    let _one = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let leftovers = Leftovers::before();
    let fixture = Fixture::new();
    let bundle = fixture.harness.mkdir("bundle");
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": fixture.rootfs, "readonly": true},
        "process": {
            "cwd": "/",
            "args": ["/bin/elastos-probe", "sleep", "60"],
            "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0}
        },
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "resources": {"memory": {"limit": 67108864}, "pids": {"limit": 16}}
        }
    });
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let calls = Calls::new(&fixture, &["r1", "r2"]);
    let runtime = |args: &[&str]| calls.run(args);
    let state = |id: &str| calls.state(id);
    let pid_file = fixture.harness.path().join("pid");
    let bundle_arg = bundle.display().to_string();
    let pid_arg = pid_file.display().to_string();
    runtime(&[
        "create",
        "--bundle",
        &bundle_arg,
        "--pid-file",
        &pid_arg,
        "r1",
    ])
    .assert_code(0);
    let created = state("r1");
    assert_eq!(created["status"], "created");
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_eq!(created["pid"], pid);
    assert_eq!(created["bundle"], bundle_arg.as_str());
    // The same id twice is refused.
    let again = runtime(&["create", "--bundle", &bundle_arg, "r1"]);
    assert!(again.stderr_text().contains("container r1 already exists"));

    runtime(&["start", "r1"]).assert_code(0);
    assert_eq!(state("r1")["status"], "running");
    // The spec's limits are the jail's: 64 MiB, and 16 tasks plus the jail's init.
    let cgroups: Vec<PathBuf> = jail_cgroups()
        .difference(&leftovers.cgroups)
        .cloned()
        .collect();
    let limit = |file: &str| -> Option<String> {
        cgroups
            .iter()
            .find_map(|dir| std::fs::read_to_string(dir.join(file)).ok())
            .map(|s| s.trim().to_owned())
    };
    assert_eq!(limit("memory.limit_in_bytes").as_deref(), Some("67108864"));
    assert_eq!(limit("pids.max").as_deref(), Some("17"));
    // update: new limits in the same cgroups, raised and lowered (runc's flags); what the jail
    // does not enforce is refused with its flag named.
    runtime(&["update", "--memory", "100663296", "--pids-limit", "8", "r1"]).assert_code(0);
    assert_eq!(limit("memory.limit_in_bytes").as_deref(), Some("100663296"));
    assert_eq!(limit("pids.max").as_deref(), Some("9"));
    runtime(&["update", "--memory", "50331648", "r1"]).assert_code(0);
    assert_eq!(limit("memory.limit_in_bytes").as_deref(), Some("50331648"));
    assert_eq!(
        limit("pids.max").as_deref(),
        Some("9"),
        "kept from the last update"
    );
    assert_refused(
        &runtime(&["update", "--cpu-share", "512", "r1"]),
        "--cpu-share",
    );
    // pause and resume: the jail's cgroup2 leaf frozen and thawed; exec needs it running.
    runtime(&["pause", "r1"]).assert_code(0);
    assert_eq!(state("r1")["status"], "paused");
    let frozen = runtime(&["exec", "r1", "/bin/elastos-probe", "exit", "0"]);
    assert_refused(&frozen, "container r1 is paused");
    assert_refused(
        &runtime(&["pause", "r1"]),
        "pause needs a running container",
    );
    runtime(&["resume", "r1"]).assert_code(0);
    assert_eq!(state("r1")["status"], "running");
    // list and ps, as runc gives them: the container, and its jail's init and process.
    let listed = runtime(&["list", "--format", "json"]);
    listed.assert_code(0);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["id"], "r1", "{listed}");
    assert_eq!(listed[0]["status"], "running", "{listed}");
    assert_eq!(listed[0]["pid"], pid, "{listed}");
    let processes = runtime(&["ps", "--format", "json", "r1"]);
    processes.assert_code(0);
    let processes: Vec<u32> = serde_json::from_slice(&processes.stdout).unwrap();
    assert_eq!(processes.len(), 2, "{processes:?}");
    // exec without --detach: the runtime waits and exits with the process's code; the process
    // is the container's user, jailed.
    runtime(&["exec", "r1", "/bin/elastos-probe", "exit", "4"]).assert_code(4);
    let status = runtime(&["exec", "--env", "X=1", "r1", "/bin/elastos-probe", "status"]);
    status.assert_code(0);
    for line in [
        "Uid:\t0\t0\t0\t0",
        "CapEff:\t0000000000000000",
        "Seccomp:\t2",
    ] {
        assert!(
            status.stdout_text().contains(line),
            "{}",
            status.stdout_text()
        );
    }
    // exec into what is not running is refused with its state named.
    let missing = runtime(&["exec", "nothere", "/bin/elastos-probe", "exit", "0"]);
    assert_refused(&missing, "container nothere does not exist");

    // Running: delete without --force is refused.
    let busy = runtime(&["delete", "r1"]);
    assert_refused(&busy, "container r1 is running");

    runtime(&["kill", "r1", "KILL"]).assert_code(0);
    assert!(eventually(Duration::from_secs(10), || state("r1")
        ["status"]
        == "stopped"));
    runtime(&["delete", "r1"]).assert_code(0);
    let gone = runtime(&["state", "r1"]);
    assert!(gone.stderr_text().contains("container r1 does not exist"));
    runtime(&["delete", "--force", "r1"]).assert_code(0);

    // A created container deleted with --force: the jail waiting for `start` goes too. exec
    // needs it running.
    runtime(&["create", "--bundle", &bundle_arg, "r2"]).assert_code(0);
    let early = runtime(&["exec", "r2", "/bin/elastos-probe", "exit", "0"]);
    assert_refused(
        &early,
        "container r2 is created: exec needs a running container",
    );
    assert_refused(
        &runtime(&["update", "--memory", "50331648", "r2"]),
        "container r2 is created: update needs a running container",
    );
    runtime(&["delete", "--force", "r2"]).assert_code(0);

    let features = runtime(&["features"]);
    features.assert_code(0);
    let features: serde_json::Value = serde_json::from_slice(&features.stdout).unwrap();
    assert_eq!(features["linux"]["capabilities"], serde_json::json!([]));
    leftovers.assert_none(&fixture.token(), Some(&fixture.state_root));
}

#[test]
fn a_running_broker_daemon_gets_the_containers_fd_3() {
    let _one = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let leftovers = Leftovers::before();
    let fixture = Fixture::new();
    let harness = &fixture.harness;
    let socket = harness.elastos_home().join("run/broker.sock");
    let daemon = harness.elastos().arg("broker").spawn();
    assert!(
        eventually(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }),
        "the broker daemon did not come up"
    );
    let bundle = harness.mkdir("bundle");
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": fixture.rootfs, "readonly": true},
        "process": {
            "cwd": "/",
            "args": ["/bin/elastos-probe", "sleep", "60"],
            "user": {"uid": 0, "gid": 0}
        },
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                                 {"type": "uts"}, {"type": "mount"}]}
    });
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    // As an engine calls it, but with the harness's ELASTOS_HOME: that is where the daemon is.
    let runtime = |args: &[&str]| -> bool {
        let log = harness.path().join("runtime.log");
        let status = Command::new(&fixture.runtime)
            .arg("--root")
            .arg(&fixture.state_root)
            .args(args)
            .env("ELASTOS_HOME", harness.elastos_home())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .status()
            .unwrap();
        if !status.success() {
            eprintln!(
                "{args:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        status.success()
    };
    let bundle_arg = bundle.display().to_string();
    assert!(runtime(&["create", "--bundle", &bundle_arg, "b1"]));
    assert!(runtime(&["start", "b1"]));
    let listed = eventually(Duration::from_secs(10), || {
        harness
            .elastos()
            .args(["ps", "--format", "json"])
            .output()
            .stdout_text()
            .contains("oci:b1")
    });
    let deleted = runtime(&["delete", "--force", "b1"]);
    drop(daemon);
    assert!(listed, "the container's connection is not in `elastos ps`");
    assert!(deleted);
    leftovers.assert_none(&fixture.token(), Some(&fixture.state_root));
}

/// The runtime called alone, as plain commands with their output in files: `create` leaves the
/// shim holding its stdio, as runc leaves the container's process (an engine hands it the
/// container's stdio). Dropped, it deletes the containers it names, also when a test fails.
struct Calls<'a> {
    fixture: &'a Fixture,
    count: std::cell::Cell<u32>,
    ids: &'a [&'a str],
}

impl<'a> Calls<'a> {
    fn new(fixture: &'a Fixture, ids: &'a [&'a str]) -> Calls<'a> {
        Calls {
            fixture,
            count: std::cell::Cell::new(0),
            ids,
        }
    }

    /// `elastos-runc --root ROOT ARGS...`; the files of its stdout and stderr stay, numbered.
    fn run(&self, args: &[&str]) -> Output {
        self.count.set(self.count.get() + 1);
        let out = self.stdout_of(self.count.get());
        let err = out.with_extension("err");
        let status = Command::new(&self.fixture.runtime)
            .arg("--root")
            .arg(&self.fixture.state_root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        Output::of(
            status,
            std::fs::read(&out).unwrap(),
            std::fs::read(&err).unwrap(),
            format!("elastos-runc {}", args.join(" ")),
        )
    }

    /// Where call number `n` (from 1) wrote its stdout: for `create`, the container's too.
    fn stdout_of(&self, n: u32) -> PathBuf {
        self.fixture.harness.path().join(format!("call-{n}.out"))
    }

    fn state(&self, id: &str) -> serde_json::Value {
        let output = self.run(&["state", id]);
        output.assert_code(0);
        serde_json::from_slice(&output.stdout).expect("state is JSON")
    }
}

impl Drop for Calls<'_> {
    fn drop(&mut self) {
        for id in self.ids {
            let _ = Command::new(&self.fixture.runtime)
                .arg("--root")
                .arg(&self.fixture.state_root)
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The mounts runtime-tools' default spec asks for (runc's and containerd's too), in its
/// order: the jail's /proc and /dev where the spec has them, a private devpts (nodev: no
/// terminal can be opened), the spec's /dev/shm tmpfs within the jail's bound, mqueue of the
/// jail's IPC namespace, and a read-only sysfs of its network namespace of which only the CPUs
/// can be read. runtimetest checks mountinfo in the spec's order, which is what this pins. Also
/// the spec's rlimits (hard ones were lowered to the soft ones) and a higher OOM score
/// adjustment (it was not applied).
#[test]
fn the_specs_kernel_filesystems_rlimits_and_oom_score_in_the_jail() {
    let _one = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let leftovers = Leftovers::before();
    let fixture = Fixture::new();
    let bundle = fixture.harness.mkdir("bundle");
    let paths = [
        "/proc/self/mountinfo",
        "/sys/devices/system/cpu/online",
        "/sys/firmware",
        "/sys/kernel/notes",
        "/sys/class/net",
        "/dev/ptmx",
        "/dev/pts",
        "/dev/mqueue",
        "/proc/self/oom_score_adj",
        "/proc/self/limits",
    ];
    let mut args = vec!["/bin/elastos-probe", "read"];
    args.extend(paths);
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": fixture.rootfs, "readonly": true},
        "process": {"cwd": "/", "args": args, "user": {"uid": 0, "gid": 0},
                    "oomScoreAdj": 500,
                    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 300, "hard": 400},
                                {"type": "RLIMIT_STACK", "soft": 16777216, "hard": 33554432}]},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=1g"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "resources": {"memory": {"limit": 67108864}}
        }
    });
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let calls = Calls::new(&fixture, &["k1"]);
    let bundle_arg = bundle.display().to_string();
    calls
        .run(&["create", "--bundle", &bundle_arg, "k1"])
        .assert_code(0);
    calls.run(&["start", "k1"]).assert_code(0);
    assert!(eventually(Duration::from_secs(10), || calls.state("k1")
        ["status"]
        == "stopped"));
    let seen = std::fs::read_to_string(calls.stdout_of(1)).unwrap();
    let result = |path: &str| -> String {
        seen.lines()
            .find_map(|line| line.strip_prefix(&format!("{path} ")))
            .unwrap_or_else(|| panic!("no line for {path} in:\n{seen}"))
            .to_owned()
    };
    // Readable: the CPUs; not: the rest of sysfs (Landlock's EACCES), the devpts multiplexer
    // (nodev: EACCES).
    assert!(
        result("/sys/devices/system/cpu/online").starts_with("ok"),
        "{seen}"
    );
    for denied in [
        "/sys/firmware",
        "/sys/kernel/notes",
        "/sys/class/net",
        "/dev/ptmx",
    ] {
        assert_eq!(result(denied), "errno 13", "{denied}: {seen}");
    }
    // The devpts instance holds none of the host's terminals: only its multiplexer.
    let pts = seen
        .split("== /dev/pts\n")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_default();
    assert_eq!(pts, "ptmx", "{seen}");
    // mountinfo: each of the spec's mounts, in the spec's order, of its type and source.
    let mountinfo: Vec<(String, String, String, String)> = seen
        .split("== /proc/self/mountinfo\n")
        .nth(1)
        .expect("mountinfo was read")
        .lines()
        .take_while(|line| !line.starts_with("== "))
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?.to_owned();
            let options = left.split(' ').nth(5)?.to_owned();
            let mut right = right.split(' ');
            let fstype = right.next()?.to_owned();
            let source = right.next()?.to_owned();
            let super_options = right.next().unwrap_or_default();
            Some((point, fstype, source, format!("{options},{super_options}")))
        })
        .collect();
    let wanted = [
        ("/proc", "proc", "proc"),
        ("/dev", "tmpfs", "tmpfs"),
        ("/dev/pts", "devpts", "devpts"),
        ("/dev/shm", "tmpfs", "shm"),
        ("/dev/mqueue", "mqueue", "mqueue"),
        ("/sys", "sysfs", "sysfs"),
    ];
    let positions: Vec<usize> = wanted
        .iter()
        .map(|(point, fstype, source)| {
            mountinfo
                .iter()
                .position(|(p, t, s, _)| p == point && t == fstype && s == source)
                .unwrap_or_else(|| panic!("{point} ({fstype}, {source}) not in {mountinfo:#?}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "not in the spec's order: {positions:?} in {mountinfo:#?}"
    );
    let options =
        |point: &str| &mountinfo[positions[wanted.iter().position(|w| w.0 == point).unwrap()]].3;
    assert!(options("/sys").starts_with("ro,"), "{}", options("/sys"));
    assert!(
        options("/dev/pts").contains("nodev"),
        "{}",
        options("/dev/pts")
    );
    // The spec asked for 1 GiB of /dev/shm: the jail's bound (its memory, at most 64 MiB).
    assert!(
        options("/dev/shm").contains("size=65536k"),
        "{}",
        options("/dev/shm")
    );
    // The spec's rlimits, soft and hard (the stack's soft limit above the host's 8 MiB: below
    // the hard one, the process could raise it itself).
    for (name, soft, hard) in [
        ("Max open files", "300", "400"),
        ("Max stack size", "16777216", "33554432"),
    ] {
        let line = seen
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {seen}"));
        let values: Vec<&str> = line[name.len()..].split_whitespace().collect();
        assert_eq!(values[..2], [soft, hard], "{line}");
    }
    // A higher OOM score adjustment than the runtime's is the spec's.
    assert!(
        seen.contains("== /proc/self/oom_score_adj\n500\n"),
        "{seen}"
    );
    calls.run(&["delete", "k1"]).assert_code(0);
    leftovers.assert_none(&fixture.token(), Some(&fixture.state_root));
}

/// The command failed, and its message names why (`what`).
fn assert_refused(out: &Output, what: &str) {
    assert_ne!(out.code, Some(0), "started: {}", out.stdout_text());
    assert!(out.stderr_text().contains(what), "{}", out.stderr_text());
}
