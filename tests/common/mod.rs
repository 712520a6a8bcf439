//! The end-to-end harness: runs the real `elastos` binary (and `elastos-probe`, the test app, from
//! the same target directory), as root or as the unprivileged user `elastos-test`.
//!
//! Everything a test creates lives in one [`Harness`] temp dir, removed on drop; processes the
//! harness starts are ended by guards, also when a test fails. Build the binaries first:
//! `cargo build --release --workspace --bins`.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The dedicated unprivileged user the tests run `elastos` as.
pub const TEST_USER: &str = "elastos-test";

/// How long any one command may take before the harness kills it and fails the test.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The fd number of the inheritable fd [`Invocation::extra_fd`] opens.
pub const EXTRA_FD: i32 = 9;

/// The binaries under test.
pub struct Binaries {
    pub elastos: PathBuf,
    pub probe: PathBuf,
}

/// `elastos` (from cargo) and `elastos-probe` beside it; panics with a hint when the probe or
/// the loader was not built.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let elastos = PathBuf::from(env!("CARGO_BIN_EXE_elastos"));
        let dir = elastos
            .parent()
            .expect("the elastos binary has a directory");
        for name in ["elastos-probe", "elastos-loader"] {
            assert!(
                dir.join(name).is_file(),
                "{} is missing; build every binary first: cargo build --release --workspace --bins",
                dir.join(name).display()
            );
        }
        Binaries {
            probe: dir.join("elastos-probe"),
            elastos,
        }
    })
}

/// Who runs `elastos` (and the unjailed probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    Root,
    /// [`TEST_USER`], created on first use.
    Unprivileged,
}

/// uid and gid of a user.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// The uid/gid this user runs as.
    pub fn ids(self) -> Ids {
        match self {
            User::Root => Ids { uid: 0, gid: 0 },
            User::Unprivileged => test_user(),
        }
    }
}

/// The first subordinate range of [`TEST_USER`] in `/etc/subuid` or `/etc/subgid` (`kind` is
/// `uid` or `gid`): (first, count). `scripts/dev.sh` gives it one; a test of subordinate ids
/// fails without it rather than passing for nothing.
pub fn test_user_subordinate_range(kind: &str) -> (u32, u32) {
    let file = format!("/etc/sub{kind}");
    let uid = test_user().uid.to_string();
    std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.trim().split(':').collect();
            match fields[..] {
                [owner, first, count] if owner == TEST_USER || owner == uid => {
                    Some((first.parse().ok()?, count.parse().ok()?))
                }
                _ => None,
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "{TEST_USER} has no range in {file}; `bash scripts/dev.sh test` gives it one \
                 (usermod --add-sub{kind}s 100000-165535 {TEST_USER})"
            )
        })
}

fn id_of(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, TEST_USER]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// The ids of [`TEST_USER`], creating it (a system user without home or shell) if missing.
fn test_user() -> Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    *IDS.get_or_init(|| {
        if id_of("-u").is_none() {
            // Another test binary may create it at the same moment: only the result counts.
            let _ = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    TEST_USER,
                ])
                .status();
        }
        Ids {
            uid: id_of("-u")
                .unwrap_or_else(|| panic!("cannot create the test user {TEST_USER} with useradd")),
            gid: id_of("-g").expect("the test user has a group"),
        }
    })
}

/// One test's private world: a temp dir (mode 0755, owned by the user) holding its
/// `ELASTOS_HOME`, a host home, staging dirs and bundles.
pub struct Harness {
    pub user: User,
    dir: tempfile::TempDir,
}

impl Harness {
    pub fn new(user: User) -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("elastos-e2e-")
            .tempdir()
            .expect("create a temp dir");
        let harness = Harness { user, dir };
        harness.own(harness.path());
        for sub in ["elastos-home", "host-home"] {
            harness.mkdir(sub);
        }
        harness
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `$ELASTOS_HOME` of this test's `elastos` runs.
    pub fn elastos_home(&self) -> PathBuf {
        self.path().join("elastos-home")
    }

    /// `$HOME` of this test's `elastos` runs: the host home the jail must not see.
    pub fn host_home(&self) -> PathBuf {
        self.path().join("host-home")
    }

    /// Gives `path` (not recursively) to the test's user, world-readable.
    pub fn own(&self, path: &Path) {
        let Ids { uid, gid } = self.user.ids();
        chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        let mode = if path.is_dir() {
            0o755
        } else {
            std::fs::metadata(path).unwrap().permissions().mode() | 0o444
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }

    /// Creates `name` in the test dir, owned by the user.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        self.own(&path);
        path
    }

    /// Writes `name` in the test dir, owned by the user.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>, mode: u32) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        self.own(&path);
        path
    }

    /// A staging dir `name` holding `manifest.toml` and `files` (bundle name, host source).
    pub fn stage(&self, name: &str, manifest: &str, files: &[(&str, &Path)]) -> PathBuf {
        let dir = self.mkdir(name);
        self.write(&format!("{name}/manifest.toml"), manifest, 0o644);
        for (in_bundle, source) in files {
            let target = dir.join(in_bundle);
            std::fs::copy(source, &target).unwrap_or_else(|e| {
                panic!("copy {} to {}: {e}", source.display(), target.display())
            });
            self.own(&target);
        }
        dir
    }

    /// `elastos bundle pack DIR -o NAME.bundle` as the test's user; the bundle's path.
    pub fn pack(&self, dir: &Path) -> PathBuf {
        let bundle = dir.with_extension("bundle");
        let out = self
            .elastos()
            .args(["bundle", "pack"])
            .arg(dir)
            .arg("-o")
            .arg(&bundle)
            .output();
        assert_eq!(
            out.code,
            Some(0),
            "bundle pack {} failed:\n{}",
            dir.display(),
            out.stderr_text()
        );
        bundle
    }

    /// Stages and packs the probe app with `id` and optional `[limits]` lines.
    pub fn probe_bundle(&self, name: &str, id: &str, limits: &str) -> PathBuf {
        let manifest = probe_manifest(id, "elastos-probe", limits);
        let dir = self.stage(name, &manifest, &[("elastos-probe", &binaries().probe)]);
        self.pack(&dir)
    }

    /// An `elastos` invocation as the test's user.
    pub fn elastos(&self) -> Invocation<'_> {
        Invocation::new(self, binaries().elastos.clone())
    }

    /// Another program (a peer tool, or one of our binaries), as the test's user, with the same
    /// clean environment as `elastos`.
    pub fn program(&self, program: impl Into<PathBuf>) -> Invocation<'_> {
        Invocation::new(self, program.into())
    }

    /// `elastos run BUNDLE -- ARGS` as the test's user.
    pub fn run<S: AsRef<str>>(&self, bundle: &Path, args: &[S]) -> Invocation<'_> {
        let mut invocation = self.elastos();
        invocation.arg("run").arg(bundle).arg("--");
        invocation.args(args.iter().map(AsRef::as_ref));
        invocation
    }

    /// The probe binary itself, unjailed, as the test's user, with `HOME` set to `home`.
    pub fn unjailed_probe(&self, home: &Path) -> Invocation<'_> {
        let mut invocation = Invocation::new(self, binaries().probe.clone());
        invocation.env("HOME", home);
        // Probes that write to "/tmp" write to the test's own temp dir when unjailed.
        invocation.env("TMPDIR", self.mkdir("unjailed-tmp"));
        invocation
    }
}

/// A manifest for the probe binary (or another entry) with app id `id`.
pub fn probe_manifest(id: &str, entry: &str, limits: &str) -> String {
    format!(
        "[app]\nid = \"{id}\"\nname = \"probe\"\nversion = \"0.1.0\"\nentry = \"{entry}\"\n{}",
        if limits.is_empty() {
            String::new()
        } else {
            format!("\n[limits]\n{limits}\n")
        }
    )
}

/// A command run by the harness: clean environment, optional stdin, an optional inheritable
/// extra fd, as the test's user, with a timeout.
pub struct Invocation<'a> {
    harness: &'a Harness,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    extra_fd: Option<PathBuf>,
    stdout_file: Option<std::fs::File>,
    terminal: Option<std::os::fd::OwnedFd>,
}

impl<'a> Invocation<'a> {
    fn new(harness: &'a Harness, program: PathBuf) -> Self {
        Invocation {
            harness,
            program,
            args: Vec::new(),
            env: vec![
                (
                    "PATH".into(),
                    "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
                ),
                ("HOME".into(), harness.host_home().into()),
                ("ELASTOS_HOME".into(), harness.elastos_home().into()),
            ],
            stdin: None,
            extra_fd: None,
            stdout_file: None,
            terminal: None,
        }
    }

    pub fn arg(&mut self, arg: impl Into<OsString>) -> &mut Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(&mut self, args: I) -> &mut Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(&mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> &mut Self {
        let name = name.into();
        self.env.retain(|(n, _)| *n != name);
        self.env.push((name, value.into()));
        self
    }

    pub fn stdin(&mut self, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Opens `file` (read-only, inheritable) as fd [`EXTRA_FD`] of the command.
    pub fn extra_fd(&mut self, file: &Path) -> &mut Self {
        self.extra_fd = Some(file.to_owned());
        self
    }

    /// The command's stdout is `file` (an open file description the caller may share).
    pub fn stdout_to(&mut self, file: &std::fs::File) -> &mut Self {
        self.stdout_file = Some(file.try_clone().expect("dup the stdout file"));
        self
    }

    /// The command runs in a session of its own whose controlling terminal is the pty `slave`
    /// (`setsid -c`), its stdin, stdout and stderr: as in a user's terminal. Its output is then
    /// on the pty's master, not in [`Output`].
    pub fn terminal(&mut self, slave: &std::os::fd::OwnedFd) -> &mut Self {
        self.terminal = Some(slave.try_clone().expect("dup the pty slave"));
        self
    }

    /// The full command: `sh` opening the extra fd (as root, so the fd is one the user could
    /// not open itself), then `setpriv` to the user, then the program.
    fn command(&self) -> Command {
        let mut words: Vec<OsString> = Vec::new();
        if self.terminal.is_some() {
            words.extend(["setsid".into(), "-c".into()]);
        }
        if let Some(file) = &self.extra_fd {
            words.extend([
                "sh".into(),
                "-c".into(),
                format!("exec {EXTRA_FD}<\"$0\"; exec \"$@\"").into(),
            ]);
            words.push(file.into());
        }
        if self.harness.user == User::Unprivileged {
            let Ids { uid, gid } = test_user();
            words.extend([
                "setpriv".into(),
                format!("--reuid={uid}").into(),
                format!("--regid={gid}").into(),
                "--clear-groups".into(),
                "--".into(),
            ]);
        }
        words.push(self.program.clone().into());
        words.extend(self.args.iter().cloned());
        let mut command = Command::new(&words[0]);
        command
            .args(&words[1..])
            .env_clear()
            .envs(self.env.iter().map(|(n, v)| (n, v)));
        command.current_dir(self.harness.path());
        command
    }

    /// Starts the command with piped stdio; stdout and stderr are collected by threads.
    pub fn spawn(&self) -> Running {
        let mut command = self.command();
        command.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(file) = &self.stdout_file {
            command.stdout(file.try_clone().expect("dup the stdout file"));
        }
        if let Some(slave) = &self.terminal {
            let slave = || slave.try_clone().expect("dup the pty slave");
            command.stdin(slave()).stdout(slave()).stderr(slave());
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.describe()));
        let collect = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = child.stdout.take().map(|p| collect(Box::new(p)));
        let stderr = child.stderr.take().map(|p| collect(Box::new(p)));
        let stdin = child
            .stdin
            .take()
            .zip(self.stdin.clone())
            .map(|(mut pipe, bytes)| {
                std::thread::spawn(move || {
                    // The app may exit without reading it all; a broken pipe is its business.
                    let _ = pipe.write_all(&bytes);
                })
            });
        Running {
            child: Some(child),
            stdout,
            stderr,
            stdin,
            what: self.describe(),
        }
    }

    /// Runs the command to its end (killing it after the timeout, which fails the test).
    pub fn output(&self) -> Output {
        self.spawn().wait()
    }

    fn describe(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!(
            "{} {} (as {:?})",
            self.program.display(),
            args.join(" "),
            self.harness.user
        )
    }
}

/// A started command. Dropping it kills (SIGKILL) and reaps it if it is still running.
pub struct Running {
    child: Option<Child>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    stdin: Option<JoinHandle<()>>,
    what: String,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not yet waited for").id()
    }

    /// Sends `signal` (a name such as TERM or KILL) to the command's own process.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Whether the command is still running (it has not been waited for).
    pub fn is_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not yet waited for");
        matches!(child.try_wait(), Ok(None))
    }

    /// Ends the command: SIGTERM, up to `grace` to exit, then SIGKILL; how it ended. For
    /// daemons, which should shut down cleanly on SIGTERM.
    pub fn terminate(mut self, grace: Duration) -> Output {
        stop(self.child.as_mut().expect("not yet waited for"), grace);
        self.wait()
    }

    /// Waits for the end (at most the timeout: then kills it and panics).
    pub fn wait(mut self) -> Output {
        let mut child = self.child.take().expect("waited for once");
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = self
                    .stderr
                    .take()
                    .map(|h| h.join().unwrap_or_default())
                    .unwrap_or_default();
                panic!(
                    "{} did not finish within {:?}; killed it. stderr:\n{}",
                    self.what,
                    COMMAND_TIMEOUT,
                    String::from_utf8_lossy(&stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(stdin) = self.stdin.take() {
            let _ = stdin.join();
        }
        Output {
            status,
            code: status.code(),
            stdout: self
                .stdout
                .take()
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default(),
            stderr: self
                .stderr
                .take()
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default(),
            what: std::mem::take(&mut self.what),
        }
    }
}

/// SIGTERM, then SIGKILL if `child` still runs after `grace`. SIGTERM first: a launcher killed
/// outright cannot remove its app's cgroup, which would outlive the test.
fn stop(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(None)) {
        send_signal(child.id(), "TERM");
        let deadline = Instant::now() + grace;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Still running after the grace period: no more asking.
        let _ = child.kill();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            stop(child, Duration::from_secs(10));
            let _ = child.wait();
        }
    }
}

/// How a command ended and what it printed.
pub struct Output {
    pub status: ExitStatus,
    /// The exit code; None when the command itself died of a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    what: String,
}

impl Output {
    /// The output of a command run some other way (its stdio in files).
    pub fn of(status: ExitStatus, stdout: Vec<u8>, stderr: Vec<u8>, what: String) -> Output {
        Output {
            code: status.code(),
            status,
            stdout,
            stderr,
            what,
        }
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Asserts exit code `code`, showing the command's output otherwise.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{} ended with {:?}, expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.status,
            truncated(&self.stdout_text()),
            self.stderr_text()
        );
        self
    }
}

fn truncated(text: &str) -> &str {
    let end = text.char_indices().nth(4000).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

/// `kill -s SIGNAL PID` (the shell's builtin: no unsafe code in the tests).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("sh")
        .args(["-c", "kill -s \"$0\" \"$1\"", signal, &pid.to_string()])
        .status()
        .expect("run sh");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

/// The `elastos broker` daemon of one harness. Dropping it ends it (SIGTERM, then SIGKILL after
/// 10 s: the daemon gives its apps 5 s after SIGTERM, then SIGKILLs them and removes their
/// cgroups), which also ends the apps it runs.
pub struct Daemon {
    running: Option<Running>,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts the daemon, never stopping idle providers, and waits until its control socket
    /// answers.
    pub fn start(harness: &Harness) -> Daemon {
        Daemon::stopping_idle_after(harness, 0)
    }

    /// Starts the daemon, stopping providers idle for `seconds` (0: never), and waits until its
    /// control socket answers.
    pub fn stopping_idle_after(harness: &Harness, seconds: u64) -> Daemon {
        Daemon::with_args(harness, &["--idle-stop", &seconds.to_string()])
    }

    /// Starts `elastos broker ARGS` and waits until its control socket answers.
    pub fn with_args(harness: &Harness, args: &[&str]) -> Daemon {
        let running = harness
            .elastos()
            .arg("broker")
            .args(args)
            .env("ELASTOS_LOG", "info")
            .spawn();
        let mut daemon = Daemon {
            running: Some(running),
            socket: harness.elastos_home().join("run/broker.sock"),
        };
        let up = eventually(Duration::from_secs(10), || {
            !daemon.running_mut().is_running()
                || std::os::unix::net::UnixStream::connect(&daemon.socket).is_ok()
        });
        if !up || !daemon.running_mut().is_running() {
            let out = daemon.stop();
            panic!(
                "the broker daemon did not come up (exit {:?}):\n{}",
                out.code,
                out.stderr_text()
            );
        }
        daemon
    }

    pub fn running_mut(&mut self) -> &mut Running {
        self.running.as_mut().expect("not stopped")
    }

    /// Whether the daemon process still runs and its control socket accepts connections.
    pub fn is_serving(&mut self) -> bool {
        self.running_mut().is_running()
            && std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
    }

    /// SIGTERM (SIGKILL after 5 s); how it ended, with its log.
    pub fn stop(mut self) -> Output {
        self.running
            .take()
            .expect("not stopped")
            .terminate(Duration::from_secs(5))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.terminate(Duration::from_secs(10));
        }
    }
}

/// A process started only to be a target (`sleep`); ended with SIGTERM on drop.
pub struct Sacrificial(Child);

impl Sacrificial {
    pub fn start() -> Sacrificial {
        Sacrificial(
            Command::new("sleep")
                .arg("300")
                .stdin(Stdio::null())
                .spawn()
                .expect("start sleep"),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sacrificial {
    fn drop(&mut self) {
        send_signal(self.0.id(), "TERM");
        let _ = self.0.wait();
    }
}

/// Host processes whose command line contains `token`, except `except`.
pub fn processes_with(token: &str, except: &[u32]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !except.contains(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| {
                    cmdline
                        .split(|b| *b == 0)
                        .any(|word| word == token.as_bytes())
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; whether it held.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A token unique to this test run, for marking argv, env names and files.
pub fn unique_token(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{what}{}x{nanos}", std::process::id())
}

/// One line of `elastos-probe` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub probe: String,
    pub ret: i64,
    pub errno: i32,
    pub detail: String,
}

impl ProbeResult {
    /// errno reported when the probe could not even attempt its call.
    pub const SETUP_FAILED: i32 = -1;
}

impl std::fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.errno == 0 {
            write!(f, "ok, returned {} ({})", self.ret, self.detail)
        } else if self.errno == Self::SETUP_FAILED {
            write!(f, "probe could not run: {}", self.detail)
        } else {
            let name = std::io::Error::from_raw_os_error(self.errno);
            write!(
                f,
                "failed with errno {} [{name}] ({})",
                self.errno, self.detail
            )
        }
    }
}

/// Parses every probe line (JSON objects) of `stdout`; other lines are ignored.
pub fn parse_probe_lines(stdout: &str) -> Vec<ProbeResult> {
    stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad probe line {line:?}: {e}"));
            let field = |name: &str| {
                value
                    .get(name)
                    .unwrap_or_else(|| panic!("probe line {line:?} lacks {name}"))
            };
            ProbeResult {
                probe: field("probe")
                    .as_str()
                    .expect("probe is a string")
                    .to_owned(),
                ret: field("ret").as_i64().expect("ret is an integer"),
                errno: field("errno").as_i64().expect("errno is an integer") as i32,
                detail: field("detail")
                    .as_str()
                    .expect("detail is a string")
                    .to_owned(),
            }
        })
        .collect()
}

/// A pseudo-terminal the test opens, standing for a user's terminal: the command under test gets
/// its slave ([`Invocation::terminal`]); the test reads what it shows and types on the master.
pub struct Pty {
    master: std::fs::File,
    pub slave: std::os::fd::OwnedFd,
    shown: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Pty {
    /// A new pty of `rows` x `cols`, its slave owned by `user` (a user owns the terminal they
    /// log in on).
    pub fn open(user: User, rows: u16, cols: u16) -> Pty {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let path = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&pty.slave)
        ))
        .expect("the slave's path");
        let Ids { uid, gid } = user.ids();
        chown(&path, Some(uid), Some(gid)).expect("chown the pty slave");
        let master = std::fs::File::from(pty.master);
        let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup the master");
        let collected = std::sync::Arc::clone(&shown);
        // Reads until EIO (no slave fd left open) or the test process ends.
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                collected.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Pty {
            master,
            slave: pty.slave,
            shown,
        }
    }

    /// Everything shown on the terminal so far.
    pub fn shown(&self) -> String {
        String::from_utf8_lossy(&self.shown.lock().unwrap()).into_owned()
    }

    /// Waits (up to the command timeout) until the terminal has shown `text`; returns all shown.
    #[track_caller]
    pub fn wait_for(&self, text: &str) -> String {
        assert!(
            eventually(COMMAND_TIMEOUT, || self.shown().contains(text)),
            "the terminal never showed {text:?}; it showed:\n{}",
            self.shown()
        );
        self.shown()
    }

    /// Types `bytes` on the terminal.
    pub fn type_bytes(&self, bytes: &[u8]) {
        (&self.master).write_all(bytes).expect("write to the pty");
    }

    /// Resizes the terminal (as a terminal emulator does: SIGWINCH to its foreground group).
    pub fn resize(&self, rows: u16, cols: u16) {
        let status = Command::new("stty")
            .args(["rows", &rows.to_string(), "cols", &cols.to_string()])
            .stdin(self.slave.try_clone().expect("dup the slave"))
            .status()
            .expect("stty runs");
        assert!(status.success(), "stty failed");
    }

    /// The terminal's settings (line discipline flags and control characters).
    pub fn settings(&self) -> String {
        let settings = nix::sys::termios::tcgetattr(&self.slave).expect("tcgetattr");
        format!(
            "{:?} {:?} {:?} {:?} {:?}",
            settings.input_flags,
            settings.output_flags,
            settings.control_flags,
            settings.local_flags,
            settings.control_chars
        )
    }

    /// The terminal's device number.
    pub fn rdev(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::File::from(self.slave.try_clone().expect("dup the slave"))
            .metadata()
            .expect("fstat the slave")
            .rdev()
    }
}

/// No cgroup of this test's daemon is left once it has stopped (cgroup v1 and v2 places).
pub fn assert_no_cgroups_of(pid: u32) {
    let marker = format!("-{pid}-");
    for parent in [
        "/sys/fs/cgroup/memory/elastos",
        "/sys/fs/cgroup/pids/elastos",
        "/sys/fs/cgroup/elastos",
    ] {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(&marker),
                "cgroup {parent}/{name} of daemon {pid} left behind"
            );
        }
    }
}

/// Whether the probe's `mem-bomb` was stopped by its memory limit: its allocation failed (it
/// then says `then:`) or the kernel killed it.
pub fn memory_bomb_stopped(out: &Output) -> bool {
    match out.code {
        Some(0) => out.stdout_text().contains("then:"),
        Some(code) => code == 128 + libc::SIGKILL,
        None => false,
    }
}

/// The JSON document an `elastos ... --format json` printed, after checking it exited 0.
#[track_caller]
pub fn json(out: &Output) -> serde_json::Value {
    out.assert_code(0);
    serde_json::from_str(&out.stdout_text())
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.stdout_text()))
}
