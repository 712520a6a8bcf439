//! The broker daemon under systemd, with the test playing systemd's part for real: a notify
//! socket (a path, and an abstract `@` one), listening sockets passed as fd 3 and up with
//! `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` (by `systemd-socket-activate`, Debian's
//! systemd's own tool, and by hand), every sd_notify message checked, and the first `elastos`
//! command activating the broker. Then dist/'s hardening against jail creation, the metrics port,
//! and `elastos info` against what a run actually enforces.
//!
//! No systemd runs as PID 1 here: the hardening test emulates the unit's directives with the
//! kernel features systemd uses for them (a private mount namespace, read-only remounts, a
//! capability bounding set, no_new_privs). Everything a test starts is ended by a guard, and
//! its sockets and state live in the harness's temp dir.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{binaries, eventually, unique_token, Harness, Running, User};

/// How long any one notification may take to come (generous: a loaded 2-core VM).
const NOTIFY_WAIT: Duration = Duration::from_secs(30);

fn broker_binary() -> PathBuf {
    binaries().elastos.with_file_name("elastos-broker")
}

/// The directory of the control socket under the harness's `ELASTOS_HOME`, private like the
/// daemon makes it.
fn control_socket(harness: &Harness) -> PathBuf {
    let run = harness.mkdir("elastos-home/run");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    run.join("broker.sock")
}

/// The service manager's end of sd_notify: a datagram socket, and every message it got.
struct NotifySocket {
    socket: UnixDatagram,
    /// The value of `NOTIFY_SOCKET` that reaches it.
    address: String,
    received: Vec<String>,
}

impl NotifySocket {
    fn at_path(path: &Path) -> NotifySocket {
        NotifySocket::new(
            UnixDatagram::bind(path).unwrap(),
            path.display().to_string(),
        )
    }

    fn abstract_named(name: &str) -> NotifySocket {
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        NotifySocket::new(
            UnixDatagram::bind_addr(&address).unwrap(),
            format!("@{name}"),
        )
    }

    fn new(socket: UnixDatagram, address: String) -> NotifySocket {
        NotifySocket {
            socket,
            address,
            received: Vec::new(),
        }
    }

    /// The next message within `limit`, if one comes.
    fn next(&mut self, limit: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(limit)).unwrap();
        let mut buffer = [0u8; 4096];
        let n = self.socket.recv(&mut buffer).ok()?;
        let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
        self.received.push(message.clone());
        Some(message)
    }

    /// Waits (up to [`NOTIFY_WAIT`]) for a message with the assignment `line`; that message.
    #[track_caller]
    fn wait_for(&mut self, line: &str) -> String {
        let deadline = Instant::now() + NOTIFY_WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(message) if message.lines().any(|l| l == line) => return message,
                Some(_) => {}
                None => break,
            }
        }
        panic!(
            "no {line} within {NOTIFY_WAIT:?}; received {:?}",
            self.received
        );
    }
}

/// The executable a process runs now.
fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

/// `elastos ps --format json` as JSON.
#[track_caller]
fn ps_json(harness: &Harness) -> serde_json::Value {
    let out = harness.elastos().args(["ps", "--format", "json"]).output();
    out.assert_code(0);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_first_connection_activates_the_broker_which_reports_to_systemd() {
    let harness = Harness::new(User::Root);
    let socket = control_socket(&harness);
    let name = unique_token("elastos-notify-");
    let mut notify = NotifySocket::abstract_named(&name);
    let activator = harness
        .program("systemd-socket-activate")
        .arg(format!("--listen={}", socket.display()))
        .arg("--fdname=control")
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify.address))
        // 1 s: the daemon pings every 0.5 s.
        .arg("--setenv=WATCHDOG_USEC=1000000")
        .args(["--setenv=ELASTOS_HOME", "--setenv=HOME", "--setenv=PATH"])
        .arg("--setenv=ELASTOS_LOG=info")
        .arg(broker_binary())
        .arg("daemon")
        .spawn();
    assert!(
        eventually(NOTIFY_WAIT, || socket.exists()),
        "systemd-socket-activate did not listen"
    );
    // Listening is systemd's: the broker has not started, and says nothing.
    assert!(notify.next(Duration::from_millis(500)).is_none());
    assert!(exe_of(activator.pid()).ends_with("systemd-socket-activate"));

    // The first command that connects starts it, and is answered by it: the daemon's pid is the
    // one systemd-socket-activate had (it execs the daemon, so LISTEN_PID is the daemon's).
    let ps = ps_json(&harness);
    assert_eq!(ps["daemon"]["pid"], activator.pid());
    assert!(exe_of(activator.pid()).ends_with("elastos-broker"));
    let ready = notify.wait_for("READY=1");
    assert!(
        ready.contains("STATUS=serving 0 apps"),
        "READY comes with a status: {ready:?}"
    );
    // Watchdog pings keep coming, and commands keep reaching the daemon through the socket
    // systemd-socket-activate listens on.
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1");
    }
    let metrics = harness.elastos().arg("metrics").output();
    metrics.assert_code(0);
    assert!(metrics
        .stdout_text()
        .contains("elastos_apps_running{origin=\"launched\"} 0"));

    activator.signal("TERM");
    let stopping = notify.wait_for("STOPPING=1");
    assert!(
        stopping.contains("STATUS=stopping (SIGTERM)"),
        "{stopping:?}"
    );
    let out = activator.wait();
    out.assert_code(0);
    // A pipe, not a terminal: no colour codes in the log.
    let log = out.stderr_text();
    assert!(!log.contains('\x1b'), "escape codes in the log:\n{log}");
    assert!(log.contains("socket_activated=true"), "{log}");
    // The socket is the service manager's: the daemon leaves it in place for the next start.
    assert!(socket.exists());
}

/// A process started by the test itself, killed and reaped on drop.
struct Started {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Started {
    fn new(mut command: Command) -> Started {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        Started {
            child,
            stderr: Some(stderr),
        }
    }

    /// SIGTERM, then its exit code and stderr (SIGKILL after 30 s fails the test).
    fn terminate(mut self) -> (Option<i32>, String) {
        common::send_signal(self.child.id(), "TERM");
        let deadline = Instant::now() + NOTIFY_WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the daemon ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status.code(), stderr)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_daemon_takes_the_socket_named_control_from_those_passed_and_logs_json() {
    let harness = Harness::new(User::Root);
    let socket = control_socket(&harness);
    let listener = UnixListener::bind(&socket).unwrap();
    let mut notify = NotifySocket::at_path(&harness.path().join("notify.sock"));
    let other = harness.write("other-fd", "not a socket", 0o644);
    // As systemd passes them: fd 3 "other" (a file), fd 4 "control" (the listening socket),
    // LISTEN_PID the daemon's own (the shell execs it, keeping its pid).
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(
            "exec 3<\"$1\" 4<&0 0</dev/null; export LISTEN_PID=$$; \
             exec \"$0\" daemon --log-format json",
        )
        .arg(broker_binary())
        .arg(&other)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", harness.host_home())
        .env("ELASTOS_HOME", harness.elastos_home())
        .env("ELASTOS_LOG", "info")
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "other:control")
        .env("NOTIFY_SOCKET", &notify.address)
        .stdin(Stdio::from(OwnedFd::from(listener)))
        .stdout(Stdio::null());
    let daemon = Started::new(command);
    let ready = notify.wait_for("READY=1");
    assert!(ready.contains("STATUS=serving 0 apps"), "{ready:?}");
    assert_eq!(ps_json(&harness)["daemon"]["pid"], daemon.child.id());
    // It closed what was not its control socket.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id())).unwrap();
    for fd in fds.flatten() {
        assert_ne!(std::fs::read_link(fd.path()).unwrap_or_default(), other);
    }
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    notify.wait_for("STOPPING=1");
    // No watchdog was asked for, so none was sent.
    assert!(!notify.received.iter().any(|m| m.contains("WATCHDOG=1")));
    // JSON lines only, among them the daemon's start on the passed socket.
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["socket_activated"] == true && e["level"] == "INFO"),
        "{log}"
    );
    assert!(socket.exists());
}

/// A free loopback port (bound, read, released: another process could take it meanwhile, which
/// only fails the test).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` from the metrics port; the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(NOTIFY_WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// `elastos broker ARGS`, once its control socket answers.
fn start_broker(harness: &Harness, args: &[&str]) -> Running {
    let mut daemon = harness.elastos().arg("broker").args(args).spawn();
    let socket = harness.elastos_home().join("run/broker.sock");
    let up = eventually(NOTIFY_WAIT, || {
        !daemon.is_running() || std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    assert!(up && daemon.is_running(), "the daemon did not come up");
    daemon
}

/// SIGTERM must reach the daemon's wait, never a thread where it takes the default action:
/// every thread of a running daemon blocks SIGINT and SIGTERM. RocksDB's background threads,
/// started when the store opened, once did not, and a stop killed the daemon without its
/// clean-up (seen in CI as a daemon that "ended with" signal 15).
#[test]
fn every_thread_of_the_daemon_blocks_the_stop_signals() {
    let harness = Harness::new(User::Root);
    let daemon = start_broker(&harness, &[]);
    let tasks = || -> Vec<PathBuf> {
        std::fs::read_dir(format!("/proc/{}/task", daemon.pid()))
            .unwrap()
            .map(|task| task.unwrap().path())
            .collect()
    };
    // The thread waiting for them (sigwait) has them unblocked while it waits, as the kernel
    // does for sigtimedwait(2); it is the only one, and it gets there soon after the socket
    // answers.
    let waits = |task: &PathBuf| {
        std::fs::read_to_string(task.join("wchan"))
            .is_ok_and(|wchan| wchan.starts_with("do_sigtimedwait"))
    };
    assert!(
        eventually(Duration::from_secs(10), || tasks().iter().any(waits)),
        "no thread of the daemon waits for its signals"
    );
    let tasks = tasks();
    assert!(tasks.len() > 2, "a daemon with its runtime: {tasks:?}");
    let waiting: Vec<&PathBuf> = tasks.iter().filter(|task| waits(task)).collect();
    assert_eq!(waiting.len(), 1, "one thread waits for the signals");
    for task in tasks.iter().filter(|task| !waiting.contains(task)) {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let blocked = status
            .lines()
            .find_map(|line| line.strip_prefix("SigBlk:"))
            .map(|mask| u64::from_str_radix(mask.trim(), 16).unwrap())
            .unwrap();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        for signal in [libc_signal::SIGINT, libc_signal::SIGTERM] {
            assert!(
                blocked & (1 << (signal - 1)) != 0,
                "thread {} ({}) does not block signal {signal}",
                task.display(),
                name.trim()
            );
        }
    }
    daemon.terminate(Duration::from_secs(10)).assert_code(0);
}

/// The signal numbers of x86-64 Linux the test above checks.
mod libc_signal {
    pub const SIGINT: u32 = 2;
    pub const SIGTERM: u32 = 15;
}

#[test]
fn metrics_are_served_on_a_loopback_port_only_unless_forced() {
    let harness = Harness::new(User::Unprivileged);
    let refused = harness
        .elastos()
        .args(["broker", "--metrics-addr", "0.0.0.0:9464"])
        .output();
    assert_eq!(refused.code, Some(2), "{}", refused.stderr_text());
    assert!(refused
        .stderr_text()
        .contains("0.0.0.0:9464 is not a loopback address"));

    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let daemon = start_broker(&harness, &["--metrics-addr", &address]);
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("# TYPE elastos_call_duration_seconds histogram"));
    assert!(body.contains("elastos_call_duration_seconds_bucket{le=\"+Inf\"} 0"));
    // The same text as on the control socket, but for the figures that move: the process's, and
    // the warm jails' while the pool fills.
    let control = harness.elastos().arg("metrics").output();
    control.assert_code(0);
    let stable = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| {
                line.starts_with("elastos_")
                    && !line.starts_with("elastos_warm_jails_parked")
                    && !line.starts_with("elastos_warm_jails_idle")
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(stable(&body), stable(&control.stdout_text()));
    assert_eq!(http_get(port, "/").0, "HTTP/1.1 404 Not Found");
    daemon.terminate(Duration::from_secs(10)).assert_code(0);

    // Forced: served on every address, loopback included.
    let port = free_port();
    let address = format!("0.0.0.0:{port}");
    let daemon = start_broker(
        &harness,
        &["--metrics-addr", &address, "--metrics-allow-non-loopback"],
    );
    assert_eq!(http_get(port, "/metrics").0, "HTTP/1.1 200 OK");
    daemon.terminate(Duration::from_secs(10)).assert_code(0);
}

// ---------------------------------------------------------------------------------------------
// dist/'s hardening and jail creation

const SERVICE: &str = "0e5c3f7a-2b41-4d6e-9a8b-7c6d5e4f3a21";
const HARDENED_PROVIDER_ID: &str = "4f0a2c6e-8b1d-4e3f-a5c7-9d2b4f6a8c0e";

/// The provider and client probe bundles: the provider serves [`SERVICE`] when activated.
fn probe_apps(harness: &Harness) -> (PathBuf, PathBuf) {
    let probe = binaries().elastos.with_file_name("elastos-broker-probe");
    let app = |name: &str, id: &str, services: &str| {
        let manifest = format!(
            "[app]\nid = \"{id}\"\nname = \"{name}\"\nversion = \"0.1.0\"\n\
             entry = \"elastos-broker-probe\"\n\n[services]\n{services}\n\n\
             [limits]\nmemory = \"64MiB\"\nthreads = 8\n"
        );
        harness.stage(name, &manifest, &[("elastos-broker-probe", &probe)])
    };
    let provider = app(
        "hardened-provider",
        HARDENED_PROVIDER_ID,
        &format!("provides = [\"{SERVICE}\"]"),
    );
    harness.write(
        "hardened-provider/activate.args",
        format!("serve\n{SERVICE}"),
        0o644,
    );
    let client = app(
        "hardened-client",
        "5a1b3d7f-9c2e-4f4a-b6d8-0e3c5a7b9d1f",
        &format!("uses = [\"{SERVICE}\"]"),
    );
    (harness.pack(&provider), harness.pack(&client))
}

/// The value of `key=` in the unit file `text`.
fn directive<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

/// A shell script that sets up, in the private mount namespace it runs in, what systemd sets
/// up for the unit's directives that change the filesystem, then execs its arguments:
/// ProtectSystem=strict (every mount read-only but /dev, /proc and /sys; `state` writable, as
/// StateDirectory= makes it), PrivateTmp=yes (a new /tmp, with `state` mounted back where it
/// was),
/// PrivateDevices=yes (a /dev of the pseudo devices), ProtectProc=invisible with ProcSubset=pid
/// (a procfs mounted with those options, over the host's). With `protect_kernel_tunables`, /sys
/// is read-only too, as ProtectKernelTunables=yes makes it.
fn emulation(state: &Path, protect_kernel_tunables: bool) -> String {
    let state = state.display();
    // ProtectKernelTunables= makes /sys read-only, cgroup hierarchies included.
    let tunables = if protect_kernel_tunables {
        "for m in $(awk '$5 ~ \"^/sys\" {print $5}' /proc/self/mountinfo); do\n\
           mount -o remount,bind,ro \"$m\"\n\
         done\n"
    } else {
        ""
    };
    // Scratch mounts go under `state` (inside the harness's temp dir); the ones below the new
    // /tmp are out of sight once it is mounted, as the host's are.
    let mut script = format!(
        "set -e\n\
         scratch='{state}/.emulated-unit'\n\
         mkdir -p \"$scratch\"\n\
         mount -t tmpfs -o mode=755 tmpfs \"$scratch\"\n\
         for n in null zero full random urandom tty; do\n\
           touch \"$scratch/$n\"; mount --bind /dev/$n \"$scratch/$n\"\n\
         done\n\
         mkdir \"$scratch/shm\" \"$scratch/pts\"\n\
         mount --move \"$scratch\" /dev\n\
         mkdir /dev/.state\n\
         mount --bind '{state}' /dev/.state\n\
         mount -t tmpfs -o mode=1777 tmpfs /tmp\n\
         mkdir -p '{state}'\n\
         mount --move /dev/.state '{state}'\n\
         rmdir /dev/.state\n\
         mount -t proc -o hidepid=invisible,subset=pid proc /proc\n\
         for m in $(awk '{{print $5}}' /proc/self/mountinfo | sort -u); do\n\
           case $m in /tmp|/dev|/dev/*|/proc|/proc/*|/sys|/sys/*) continue;; esac\n\
           mount -o remount,bind,ro \"$m\" 2>/dev/null || true\n\
         done\n\
         mount -o remount,bind,rw '{state}'\n\
         [ -w '{state}' ] && ! [ -w /usr ] && ! [ -w / ]\n\
         {tunables}"
    );
    script.push_str("exec \"$@\"\n");
    script
}

/// The cgroup directories of the hardened provider, under any hierarchy.
fn provider_cgroups() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let elastos = hierarchy.path().join("elastos");
        for entry in std::fs::read_dir(elastos).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(HARDENED_PROVIDER_ID)
            {
                found.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn the_system_units_hardening_lets_the_daemon_build_jails() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/system/elastos-broker.service"),
    )
    .unwrap();
    // What the emulation below reproduces; a change of the unit must come with one here.
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateNetwork", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
    ] {
        assert_eq!(directive(&unit, key), Some(value), "{key}= in the unit");
    }
    for absent in [
        "ProtectKernelTunables",
        "ProtectKernelLogs",
        "ProtectControlGroups",
    ] {
        assert_eq!(directive(&unit, absent), None, "{absent}= breaks jails");
    }
    let capabilities: Vec<String> = directive(&unit, "CapabilityBoundingSet")
        .expect("the unit bounds capabilities")
        .split_whitespace()
        .map(|cap| format!("+{}", cap.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let bounding_set = format!("--bounding-set=-all,{}", capabilities.join(","));

    let harness = Harness::new(User::Root);
    let (provider, client) = probe_apps(&harness);
    harness
        .elastos()
        .arg("install")
        .arg(&provider)
        .output()
        .assert_code(0);
    let call = format!("call:{SERVICE}:echo:hardened");
    for (tunables_protected, outcome) in [(false, "OK"), (true, "UNAVAILABLE")] {
        let script = emulation(&harness.path().canonicalize().unwrap(), tunables_protected);
        let daemon = harness
            .program("unshare")
            .args(["--mount", "--net", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .arg("emulated-unit")
            .args([
                "setpriv",
                &bounding_set,
                "--inh-caps=-all",
                "--no-new-privs",
            ])
            .arg(broker_binary())
            .arg("daemon")
            .env("ELASTOS_LOG", "info")
            .spawn();
        let socket = harness.elastos_home().join("run/broker.sock");
        let mut daemon = daemon;
        let up = eventually(NOTIFY_WAIT, || {
            !daemon.is_running() || std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        if !up || !daemon.is_running() {
            let out = daemon.terminate(Duration::from_secs(1));
            panic!("the hardened daemon did not start:\n{}", out.stderr_text());
        }
        let run = harness
            .run(&client, &["client", &format!("{call}={outcome}")])
            .output();
        let log = daemon.terminate(Duration::from_secs(20));
        assert_eq!(
            run.code,
            Some(0),
            "ProtectKernelTunables emulated: {tunables_protected}; expected {outcome}:\n{}\n\
             daemon:\n{}",
            run.stdout_text(),
            log.stderr_text()
        );
        log.assert_code(0);
        if tunables_protected {
            // Why the unit leaves it out: the jails' cgroups cannot be made.
            assert!(
                log.stderr_text().contains("/sys/fs/cgroup/"),
                "{}",
                log.stderr_text()
            );
        } else {
            assert!(
                run.stdout_text().contains("\"detail\":\"hardened\""),
                "{}",
                run.stdout_text()
            );
            // The provider still ran when the daemon got SIGTERM: the daemon stopped it and
            // removed its cgroups before exiting.
            assert_eq!(provider_cgroups(), Vec::<PathBuf>::new());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// elastos info

#[test]
fn info_names_the_kernel_features_and_what_a_run_then_enforces() {
    for user in [User::Root, User::Unprivileged] {
        let harness = Harness::new(user);
        let out = harness
            .elastos()
            .args(["info", "--format", "json"])
            .output();
        out.assert_code(0);
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let kernel = &info["kernel"];
        assert_eq!(kernel["root"], user == User::Root);
        assert_eq!(
            kernel["seccomp"]["filter"],
            Path::new("/proc/sys/kernel/seccomp/actions_avail").exists()
        );
        let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap();
        assert_eq!(
            kernel["user_namespaces"]["max"],
            max.trim().parse::<u64>().unwrap()
        );
        let layout = kernel["cgroups"]["layout"].as_str().unwrap();
        let v1_memory = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
        assert_eq!(v1_memory, layout == "hybrid" || layout == "v1", "{info}");
        let layer = |name: &str| {
            info["run"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["layer"] == name)
                .unwrap_or_else(|| panic!("no {name} layer in {info}"))
                .clone()
        };

        // What a run here reports it enforced, in the JSON log of `elastos run`.
        let app_id = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
        let bundle = harness.probe_bundle("info-probe", app_id.trim(), "memory = \"64MiB\"");
        let run = harness
            .elastos()
            .args(["--log-level", "info", "--log-format", "json", "run"])
            .arg(&bundle)
            .args(["--", "exit", "0"])
            .output();
        run.assert_code(0);
        let started: serde_json::Value = run
            .stderr_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|event| event["message"] == "app started")
            .unwrap_or_else(|| panic!("no app started event:\n{}", run.stderr_text()));
        let abi = started["landlock_abi"].as_u64().unwrap();
        let landlock = layer("landlock");
        match landlock["state"].as_str().unwrap() {
            "enforced" => {
                assert_eq!(started["landlock_fully_enforced"], true);
                assert!(landlock["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("path rules at ABI {abi} ")));
                assert!(kernel["landlock"]["abi"].as_u64().unwrap() >= abi);
            }
            "partial" => {
                assert_eq!(started["landlock_fully_enforced"], false);
                assert_eq!(kernel["landlock"]["abi"], abi);
            }
            other => panic!("a run succeeded with Landlock {other}: {info}"),
        }
        let limits = started["limits"].as_str().unwrap();
        let detail = layer("limits")["detail"].as_str().unwrap().to_owned();
        let (said, used) = (
            detail
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
            limits.split([' ', '{']).next().unwrap(),
        );
        let expected = match used {
            "CgroupV2" => "cgroup v2",
            "CgroupV1" => "cgroup v1",
            _ => "no usable",
        };
        assert_eq!(
            said, expected,
            "info says {detail:?}, the run used {limits}"
        );
        for name in ["namespaces", "seccomp", "privileges"] {
            assert_eq!(layer(name)["state"], "enforced", "{info}");
        }
        // The host ids: root's apps get their own; the test user has a subordinate range
        // (scripts/dev.sh), which info reads as newuidmap does.
        assert_eq!(layer("ids")["state"], "enforced", "{info}");
        if user == User::Unprivileged {
            let (first, count) = common::test_user_subordinate_range("uid");
            assert_eq!(kernel["subordinate_ids"]["uids"]["first"], first, "{info}");
            assert_eq!(kernel["subordinate_ids"]["uids"]["count"], count, "{info}");
            // Where the holder of its namespace, which its jails are nested in, is recorded.
            let record = harness.elastos_home().join("run/userns");
            assert_eq!(
                info["user_namespace_holder"]["record"],
                record.to_string_lossy().as_ref(),
                "{info}"
            );
        } else {
            assert!(info["user_namespace_holder"].is_null(), "{info}");
        }
        // And for people: one line per layer.
        let text = harness.elastos().arg("info").output();
        text.assert_code(0);
        assert!(text.stdout_text().contains("A run here:"));
    }
}

// ---------------------------------------------------------------------------------------------
// Logs under journald

/// Runs the daemon with stderr on a pipe and `JOURNAL_STREAM` naming that pipe (as systemd names
/// the journal's stream) or, with `matching` false, another one; its log once it has started and
/// stopped.
fn daemon_log_with_journal_stream(matching: bool) -> String {
    let harness = Harness::new(User::Root);
    let (mut reader, writer) = std::io::pipe().unwrap();
    let stream = {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let pipe = std::fs::metadata(format!("/proc/self/fd/{}", reader.as_raw_fd())).unwrap();
        if matching {
            format!("{}:{}", pipe.dev(), pipe.ino())
        } else {
            format!("{}:{}", pipe.dev(), pipe.ino() + 1)
        }
    };
    let mut command = Command::new(broker_binary());
    command
        .arg("daemon")
        .env_clear()
        .env("HOME", harness.host_home())
        .env("ELASTOS_HOME", harness.elastos_home())
        .env("JOURNAL_STREAM", stream)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer);
    // Its stderr is the pipe above; the guard kills it should the test fail.
    let mut daemon = Started {
        child: command.spawn().unwrap(),
        stderr: None,
    };
    // The test's copy of the write end is gone with `command`: the pipe ends with the daemon.
    drop(command);
    let socket = harness.elastos_home().join("run/broker.sock");
    let up = eventually(NOTIFY_WAIT, || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    common::send_signal(daemon.child.id(), "TERM");
    let mut log = String::new();
    reader.read_to_string(&mut log).unwrap();
    assert!(daemon.child.wait().unwrap().success(), "{log}");
    assert!(up, "the daemon did not come up:\n{log}");
    log
}

#[test]
fn under_journald_log_lines_carry_their_priority_and_no_timestamp() {
    let log = daemon_log_with_journal_stream(true);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        // <6> info, <4> warning, ...: what journald reads as the entry's priority.
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .unwrap_or_else(|| panic!("no priority prefix: {line:?}"));
        assert!(priority.0.parse::<u8>().is_ok_and(|p| p <= 7), "{line:?}");
        assert!(
            !priority.1.starts_with("20"),
            "a timestamp of its own: {line:?}"
        );
        assert!(!line.contains('\x1b'), "{line:?}");
    }
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("<6> INFO elastos broker: listening")),
        "{log}"
    );
    // A JOURNAL_STREAM inherited by a process whose stderr is elsewhere changes nothing.
    let elsewhere = daemon_log_with_journal_stream(false);
    assert!(
        elsewhere
            .lines()
            .all(|line| !line.starts_with('<') && line.starts_with("20")),
        "{elsewhere}"
    );
}
