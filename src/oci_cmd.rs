//! `elastos oci` (also `elastos-runc`, a symlink to `elastos`): the runc-compatible command line
//! with which podman, containerd and through it Kubernetes run a container's process in the
//! elastos jail.
//!
//! ```text
//! engine: RUNTIME create --bundle B --pid-file P ID
//!   create: config.json -> elastos_oci::translate (refuse, drop with a warning, map)
//!           -> JailPlan::for_container -> ROOT/ID/plan.json; starts the shim; waits for it
//!   shim (`elastos oci shim ID`, its own session; the pid in P, the pid the engine waits for):
//!           elastos_loader::spawn: the jail's first process, in its new namespaces, waits;
//!           tells create "created"; listens on ROOT/ID/shim.sock
//!   create: writes P, exits 0 (state "created")
//! engine: RUNTIME start ID  -> "start" on shim.sock -> the shim builds the jail from the plan
//!           (filesystem, cgroup, Landlock, seccomp), execs the process, answers "ok"
//!           (state "running"); then relays its stdio and waits; exits with the process's code
//! engine: RUNTIME kill ID SIG  -> through a /proc/PID fd (a pidfd) to the jail's init, which
//!           relays it to the process (to the shim while "created")
//! engine: RUNTIME delete [--force] ID  -> kills what is left, removes cgroups and ROOT/ID
//! ```
//!
//! Why a shim: the engine waits for the pid it reads from the pid file, and a jail needs a
//! supervisor that outlives `create` (its stdio relay, its cgroup, the signals it forwards). The
//! shim is that supervisor, and its exit code is the process's, so conmon and containerd's shim
//! read the container's exit status from the pid they were given.
//!
//! State and the broker are found from `--root` and the defaults, never from inherited fds:
//! engines call the runtime with pipes of their own on fds 3 and 4, which the shim never keeps.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use elastos_oci::{Host, State, Status, OCI_VERSION};
use elastos_policy::JailPlan;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

/// The OCI runtime: runs containers' processes in the elastos jail (for podman, containerd
/// and Kubernetes; see docs/operations.md).
#[derive(Debug, Parser)]
#[command(name = "elastos oci", version, max_term_width = 100)]
struct OciCli {
    #[command(flatten)]
    global: liboci_cli::GlobalOpts,
    #[command(subcommand)]
    command: OciCommand,
}

#[derive(Debug, Subcommand)]
enum OciCommand {
    #[command(flatten)]
    Standard(liboci_cli::StandardCmd),
    /// What this runtime supports, as the runtime spec's features document (JSON).
    Features(liboci_cli::Features),
    /// Runs a new process in a running container's jail, confined as its first one.
    Exec(Box<liboci_cli::Exec>),
    /// The containers of `--root`: a table, or runc's JSON with `--format json`.
    List(liboci_cli::List),
    /// The processes of a container's jail: a table, or their host pids with `--format json`.
    Ps(liboci_cli::Ps),
    /// New limits for a running container: memory, tasks and the CPU quota (runc's flags).
    Update(liboci_cli::Update),
    /// Freezes every process of a running container's jail.
    Pause(liboci_cli::Pause),
    /// Thaws a paused container's jail.
    Resume(liboci_cli::Resume),
    /// The supervisor of one container (started by `create`; not for people).
    #[command(hide = true)]
    Shim {
        /// The container's id.
        container_id: String,
    },
}

/// The default `--root` as root: the runtime's state, like runc's /run/runc.
const DEFAULT_ROOT: &str = "/run/elastos-oci";
/// How long `create` waits for the shim's jail, and `start` for the process to run.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The shim's socket in the container's directory: `start` asks on it.
const SHIM_SOCKET: &str = "shim.sock";
/// `create`'s socket in the container's directory, on which the shim says its jail exists.
const NOTIFY_SOCKET: &str = "notify.sock";

/// `name` in the container's directory `dir`, as a path relative to this process's working
/// directory, made `dir`: a socket's path must fit in 108 bytes, and an engine's state root and
/// 64-character ids do not.
fn in_dir(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    std::env::set_current_dir(dir)?;
    Ok(PathBuf::from(name))
}

/// Whether this invocation is the OCI runtime: the program is called `elastos-runc`, or its
/// first argument is `oci`. Returns the arguments for [`main`] (program name first).
pub fn invocation(args: &[OsString]) -> Option<Vec<OsString>> {
    let program = args.first().map(Path::new)?;
    if program
        .file_name()
        .is_some_and(|name| name == "elastos-runc")
    {
        return Some(args.to_vec());
    }
    if args.get(1).is_some_and(|arg| arg == "oci") {
        let mut rest = vec![OsString::from("elastos oci")];
        rest.extend_from_slice(&args[2..]);
        return Some(rest);
    }
    None
}

/// Runs one OCI runtime command; errors go to stderr and to `--log`, with exit code 1 (runc's).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let cli = match OciCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::FAILURE,
            };
        }
    };
    let log = Log::open(&cli.global);
    match run(cli, &log) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let message = error
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            log.error(&message);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: OciCli, log: &Log) -> Result<u8> {
    let root = state_root(&cli.global)?;
    if cli.global.systemd_cgroup {
        log.warn("--systemd-cgroup: ignored; the jail's cgroup is elastos's own (cgroupfs)");
    }
    use liboci_cli::StandardCmd as S;
    match cli.command {
        OciCommand::Standard(S::Create(args)) => create(&root, &cli.global, &args, log),
        OciCommand::Standard(S::Start(args)) => start(&root, &args.container_id),
        OciCommand::Standard(S::State(args)) => {
            let state = Container::open(&root, &args.container_id)?.oci_state();
            println!("{}", serde_json::to_string_pretty(&state)?);
            Ok(0)
        }
        OciCommand::Standard(S::Kill(args)) => {
            kill(&root, &args.container_id, &args.signal)?;
            Ok(0)
        }
        OciCommand::Standard(S::Delete(args)) => delete(&root, &args.container_id, args.force),
        OciCommand::Exec(args) => exec(&root, &args, log),
        OciCommand::List(args) => list(&root, &args),
        OciCommand::Ps(args) => ps(&root, &args),
        OciCommand::Update(args) => update(&root, &args, log),
        OciCommand::Pause(args) => freeze(&root, &args.container_id, true),
        OciCommand::Resume(args) => freeze(&root, &args.container_id, false),
        OciCommand::Features(_) => {
            println!("{}", serde_json::to_string_pretty(&features())?);
            Ok(0)
        }
        OciCommand::Shim { container_id } => Ok(shim(&root, &container_id, log)),
    }
}

/// `--root`, else [`DEFAULT_ROOT`] as root, else `$XDG_RUNTIME_DIR/elastos-oci`.
fn state_root(global: &liboci_cli::GlobalOpts) -> Result<PathBuf> {
    if let Some(root) = &global.root {
        return Ok(std::path::absolute(root)?);
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(DEFAULT_ROOT.into());
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => Ok(Path::new(&dir).join("elastos-oci")),
        None => bail!("XDG_RUNTIME_DIR is not set: pass --root DIR for the runtime's state"),
    }
}

/// Where diagnostics go: `--log` (in `--log-format` text or json, runc's formats) and stderr
/// for errors; warnings to stderr only without `--log`.
struct Log {
    file: Option<File>,
    json: bool,
}

impl Log {
    fn open(global: &liboci_cli::GlobalOpts) -> Log {
        let file = global.log.as_ref().and_then(|path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| eprintln!("elastos oci: cannot open the log {}: {e}", path.display()))
                .ok()
        });
        Log {
            file,
            json: global.log_format.as_deref() == Some("json"),
        }
    }

    fn write(&self, level: &str, message: &str) {
        if let Some(mut file) = self.file.as_ref() {
            let line = if self.json {
                serde_json::json!({"level": level, "msg": message, "time": rfc3339_now()})
                    .to_string()
            } else {
                format!("time=\"{}\" level={level} msg={message:?}", rfc3339_now())
            };
            let _ = writeln!(file, "{line}");
        }
    }

    fn warn(&self, message: &str) {
        self.write("warning", message);
        if self.file.is_none() {
            eprintln!("elastos oci: warning: {message}");
        }
    }

    /// What of a spec the jail does not do: each in the log; without one, a single line on
    /// stderr naming the fields (an engine shows the runtime's stderr at every run).
    fn warnings(&self, warnings: &[elastos_oci::Warning]) {
        if warnings.is_empty() {
            return;
        }
        if self.file.is_some() {
            for warning in warnings {
                self.write("warning", &warning.to_string());
            }
            return;
        }
        let fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
        eprintln!(
            "elastos oci: warning: config.json fields not applied as asked (the jail does less): \
             {} (details with --log FILE)",
            fields.join(", ")
        );
    }

    fn error(&self, message: &str) {
        self.write("error", message);
        eprintln!("elastos oci: {message}");
    }
}

/// Now, as RFC 3339 UTC with seconds (the log's `time`).
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// What the runtime keeps about one container (ROOT/ID/container.json), written by `create`
/// and then only by its shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    bundle: PathBuf,
    status: Status,
    /// The shim: the pid in the engine's pid file.
    shim_pid: i32,
    /// Its start time (/proc/PID/stat), so a reused pid is never taken for it.
    shim_started: u64,
    /// The jail's init, once started.
    jail_pid: Option<i32>,
    jail_started: Option<u64>,
    /// The jail's cgroup directories, removed by `delete` if the shim could not.
    cgroups: Vec<PathBuf>,
    annotations: std::collections::BTreeMap<String, String>,
    /// When `create` made it (RFC 3339 UTC), for `list`.
    #[serde(default)]
    created: String,
    /// The spec's `process.oomScoreAdj`, which the shim gives the jail (see
    /// [`apply_oom_score_adj`]).
    #[serde(default)]
    oom_score_adj: Option<i32>,
    /// How the jail's limits are enforced, once started: where `update` writes new ones.
    #[serde(default)]
    limits: Option<elastos_loader::LimitMechanism>,
}

/// One container's state directory.
struct Container {
    dir: PathBuf,
    record: Record,
}

impl Container {
    fn dir(root: &Path, id: &str) -> Result<PathBuf> {
        elastos_oci::validate_id(id)?;
        Ok(root.join(id))
    }

    fn open(root: &Path, id: &str) -> Result<Container> {
        let dir = Container::dir(root, id)?;
        let path = dir.join("container.json");
        let bytes = match fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("container {id} does not exist (no {})", path.display())
            }
            read => read.with_context(|| format!("reading {}", path.display()))?,
        };
        let record = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a container record", path.display()))?;
        Ok(Container { dir, record })
    }

    fn save(&self) -> Result<()> {
        let path = self.dir.join("container.json");
        let temporary = self.dir.join(".container.json.tmp");
        fs::write(&temporary, serde_json::to_vec_pretty(&self.record)?)
            .and_then(|()| fs::rename(&temporary, &path))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The status as it is now: a created or running container whose shim is gone has stopped;
    /// a running one whose jail is frozen is paused.
    fn status(&self) -> Status {
        match self.record.status {
            Status::Created | Status::Running | Status::Creating | Status::Paused
                if !alive(self.record.shim_pid, self.record.shim_started) =>
            {
                Status::Stopped
            }
            Status::Running
                if self
                    .record
                    .limits
                    .as_ref()
                    .is_some_and(elastos_loader::LimitMechanism::frozen) =>
            {
                Status::Paused
            }
            status => status,
        }
    }

    fn oci_state(&self) -> State {
        let status = self.status();
        State {
            oci_version: OCI_VERSION.into(),
            id: self.record.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.record.shim_pid
            },
            bundle: self.record.bundle.clone(),
            annotations: self.record.annotations.clone(),
        }
    }
}

/// A process's start time in clock ticks since boot, and whether it is a zombie.
fn start_time(pid: i32) -> Option<(u64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let zombie = fields.first() == Some(&"Z") || fields.first() == Some(&"X");
    Some((fields.get(19)?.parse().ok()?, zombie))
}

/// Whether `pid` is still the process that started at `started`, and not a zombie.
fn alive(pid: i32, started: u64) -> bool {
    pid > 0 && matches!(start_time(pid), Some((time, false)) if time == started)
}

/// A signal for `process` (pid and start time) through a pidfd: a /proc/PID directory fd, taken
/// before its start time is checked, so a reused pid is never signalled.
fn signal_process(pid: i32, started: u64, signal: Signal) -> Result<bool> {
    let Ok(proc_dir) = File::open(format!("/proc/{pid}")) else {
        return Ok(false);
    };
    if !alive(pid, started) {
        return Ok(false);
    }
    match elastos_loader::sys::pidfd_send_signal(proc_dir.as_fd(), signal as i32) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("sending {signal} to pid {pid}")),
    }
}

/// The rootfs, the host's namespaces and the runtime's other containers, as the host sees
/// them, for [`elastos_oci::translate`].
struct HostView {
    rootfs: PathBuf,
    /// The runtime's state root.
    root: PathBuf,
}

impl HostView {
    /// Whether `pid` is the shim or the jail's init of a container of this runtime: what an
    /// engine names as a pod sandbox's process (containerd's CRI passes the pid of the sandbox's
    /// pid file, our shim, which runs in the host's namespaces).
    fn is_our_container(&self, pid: i32) -> bool {
        fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| Container::open(&self.root, entry.file_name().to_str()?).ok())
            .any(|c| {
                let r = &c.record;
                (r.shim_pid == pid && alive(pid, r.shim_started))
                    || (r.jail_pid == Some(pid) && r.jail_started.is_some_and(|t| alive(pid, t)))
            })
    }
}

impl HostView {
    /// `path` (absolute, as the container sees it) resolved inside the rootfs: symlinks are
    /// followed with the rootfs as their `/`, never out of it.
    fn resolve(&self, path: &Path) -> Option<PathBuf> {
        let mut pending: Vec<OsString> = path
            .components()
            .rev()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let mut resolved: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                resolved.pop();
                continue;
            }
            let host = resolved
                .iter()
                .fold(self.rootfs.clone(), |p, n| p.join(n))
                .join(&name);
            let meta = fs::symlink_metadata(&host).ok()?;
            if !meta.file_type().is_symlink() {
                resolved.push(name);
                continue;
            }
            links += 1;
            if links > 40 {
                return None;
            }
            let target = fs::read_link(&host).ok()?;
            if target.is_absolute() {
                resolved.clear();
            }
            pending.extend(target.components().rev().filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            }));
        }
        Some(resolved.iter().fold(self.rootfs.clone(), |p, n| p.join(n)))
    }
}

impl Host for HostView {
    fn top_level(&self) -> Vec<String> {
        fs::read_dir(&self.rootfs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn is_file(&self, path: &Path) -> bool {
        self.resolve(path).is_some_and(|p| p.is_file())
    }

    fn kind(&self, path: &Path) -> Option<elastos_oci::PathKind> {
        use elastos_oci::PathKind;
        let (mut host, rest) = match path.strip_prefix("/proc") {
            Ok(rest) => (PathBuf::from("/proc"), rest),
            Err(_) => (self.rootfs.clone(), path.strip_prefix("/").ok()?),
        };
        let mut kind = PathKind::Directory;
        for name in rest.components() {
            if kind != PathKind::Directory {
                return None;
            }
            host.push(name);
            let meta = fs::symlink_metadata(&host).ok()?;
            kind = if meta.file_type().is_symlink() {
                return Some(PathKind::Symlink);
            } else if meta.is_dir() {
                PathKind::Directory
            } else {
                PathKind::File
            };
        }
        Some(kind)
    }

    fn is_host_namespace(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let pid = path
            .strip_prefix("/proc")
            .ok()
            .and_then(|rest| rest.components().next())
            .and_then(|pid| pid.as_os_str().to_str()?.parse::<i32>().ok());
        if pid.is_some_and(|pid| self.is_our_container(pid)) {
            return false;
        }
        let Ok(named) = fs::metadata(path) else {
            // Unreadable: it cannot be told apart from the host's.
            return true;
        };
        // pid 1's, and the runtime's own: it runs where the engine runs, on the host (pid 1's
        // may be unreadable to a root without CAP_SYS_PTRACE).
        let host: Vec<(u64, u64)> = ["/proc/1/ns", "/proc/self/ns"]
            .iter()
            .flat_map(fs::read_dir)
            .flatten()
            .flatten()
            .filter_map(|entry| fs::metadata(entry.path()).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        host.is_empty() || host.contains(&(named.dev(), named.ino()))
    }
}

/// `create`: translate the spec, plan the jail, start the shim and wait until its jail exists.
fn create(
    root: &Path,
    global: &liboci_cli::GlobalOpts,
    args: &liboci_cli::Create,
    log: &Log,
) -> Result<u8> {
    let id = &args.container_id;
    let dir = Container::dir(root, id)?;
    if args.preserve_fds > 0 {
        log.warn(&format!(
            "--preserve-fds {}: not passed on (the jail's fd 3 is its broker socket)",
            args.preserve_fds
        ));
    }
    let bundle = std::path::absolute(&args.bundle)?;
    // Absolute now: the sockets are made from inside the container's directory (see `in_dir`).
    let pid_file = args
        .pid_file
        .as_deref()
        .map(std::path::absolute)
        .transpose()?;
    let spec_path = bundle.join("config.json");
    let spec_bytes =
        fs::read(&spec_path).with_context(|| format!("reading {}", spec_path.display()))?;
    let spec = elastos_oci::parse_spec(&spec_bytes)?;
    let root_path = spec.root().as_ref().map(|r| bundle.join(r.path()));
    let host = HostView {
        rootfs: root_path.unwrap_or_else(|| bundle.join("rootfs")),
        root: root.to_owned(),
    };
    if !host.rootfs.is_dir() {
        bail!("the rootfs {} is not a directory", host.rootfs.display());
    }
    let translation = elastos_oci::translate(&spec, id, &bundle, &host)?;
    log.warnings(&translation.warnings);
    let plan = JailPlan::for_container(&translation.jail)?;
    let terminal = console(translation.terminal, args.console_socket.as_deref(), log)?;

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("creating the state root {}", root.display()))?;
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("container {id} already exists ({})", dir.display())
        }
        made => made.with_context(|| format!("creating {}", dir.display()))?,
    }
    let made = (|| {
        fs::write(dir.join("plan.json"), serde_json::to_vec(&plan)?)?;
        let notify = UnixListener::bind(in_dir(&dir, NOTIFY_SOCKET)?)?;
        // The shim fills in its own pid and start time.
        let record = Record {
            id: id.clone(),
            bundle: bundle.clone(),
            status: Status::Creating,
            shim_pid: 0,
            shim_started: 0,
            jail_pid: None,
            jail_started: None,
            cgroups: Vec::new(),
            created: rfc3339_now(),
            oom_score_adj: translation.oom_score_adj,
            limits: None,
            annotations: spec
                .annotations()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        };
        Container {
            dir: dir.clone(),
            record,
        }
        .save()?;
        let shim = start_shim(root, global, id, terminal)?;
        let answer = handshake(&notify, shim as i32)?;
        let _ = fs::remove_file(dir.join(NOTIFY_SOCKET));
        if answer != "created" {
            bail!("{}", answer.strip_prefix("error: ").unwrap_or(&answer));
        }
        if let Some(pid_file) = &pid_file {
            write_atomically(pid_file, shim.to_string().as_bytes())
                .with_context(|| format!("writing the pid file {}", pid_file.display()))?;
        }
        Ok::<_, anyhow::Error>(())
    })();
    if let Err(e) = made {
        let _ = force_remove(&dir);
        return Err(e);
    }
    Ok(0)
}

/// `process.terminal` and `--console-socket`: with a terminal, a new pseudo-terminal whose
/// master goes to the engine over the socket (runc's protocol: one SCM_RIGHTS message whose data
/// is the terminal's name) and whose slave is returned, for the container's stdio. The terminal
/// is the runtime's, never one of the host's.
fn console(
    terminal: bool,
    socket: Option<&Path>,
    log: &Log,
) -> Result<Option<std::os::fd::OwnedFd>> {
    match (terminal, socket) {
        (false, None) => Ok(None),
        (false, Some(_)) => {
            log.warn("--console-socket: ignored (process.terminal is not true)");
            Ok(None)
        }
        (true, None) => bail!(
            "config.json process.terminal = true: expected --console-socket SOCKET, where the              engine receives the terminal's master (podman and ctr pass one with -t)"
        ),
        (true, Some(socket)) => {
            use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
            let (master, slave) =
                elastos_loader::sys::open_pty().context("opening a pseudo-terminal")?;
            let name = fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
                .context("naming the pseudo-terminal")?;
            let stream = UnixStream::connect(socket)
                .with_context(|| format!("connecting to --console-socket {}", socket.display()))?;
            let fds = [master.as_raw_fd()];
            let name = name.as_os_str().as_encoded_bytes();
            sendmsg::<()>(
                stream.as_raw_fd(),
                &[std::io::IoSlice::new(name)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .with_context(|| {
                format!(
                    "sending the terminal to --console-socket {}",
                    socket.display()
                )
            })?;
            Ok(Some(slave))
        }
    }
}

/// Starts `elastos oci shim ID` with this process's stdio (the engine's, for the container), or
/// the slave of the container's `terminal` on all three, and nothing else: every other
/// inherited fd (an engine's pipes) is close-on-exec first.
fn start_shim(
    root: &Path,
    global: &liboci_cli::GlobalOpts,
    id: &str,
    terminal: Option<std::os::fd::OwnedFd>,
) -> Result<u32> {
    close_inherited_on_exec();
    let exe = std::env::current_exe().context("finding the elastos executable")?;
    let mut command = std::process::Command::new(exe);
    command.arg("oci").arg("--root").arg(root);
    if let Some(log) = &global.log {
        command.arg("--log").arg(log);
    }
    if let Some(format) = &global.log_format {
        command.arg("--log-format").arg(format);
    }
    command.arg("shim").arg(id);
    if let Some(slave) = terminal {
        command
            .stdin(slave.try_clone()?)
            .stdout(slave.try_clone()?)
            .stderr(slave);
    }
    let child = command.spawn().context("starting the container's shim")?;
    Ok(child.id())
}

/// Marks every fd above 2 close-on-exec.
fn close_inherited_on_exec() {
    let fds: Vec<i32> = fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        // The directory's own fd is in the list, closed by now: EBADF, harmless.
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
}

/// Waits for the shim's one line on `listener`, or for its end.
fn handshake(listener: &UnixListener, shim: i32) -> Result<String> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
                let mut line = String::new();
                BufReader::new(stream).read_line(&mut line)?;
                return Ok(line.trim_end().to_owned());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if start_time(shim).is_none_or(|(_, zombie)| zombie) {
            bail!("the container's shim ended before its jail was created (see the log)");
        }
        if Instant::now() > deadline {
            bail!("the container's shim did not answer within {HANDSHAKE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".elastos-tmp");
    fs::write(&temporary, bytes)?;
    fs::rename(&temporary, path)
}

/// The shim's life (see the module doc); returns its exit code: the process's.
fn shim(root: &Path, id: &str, log: &Log) -> u8 {
    match shim_run(root, id, log) {
        Ok(code) => code,
        Err(error) => {
            let message = error
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            log.error(&message);
            // `create` waits for this answer while the jail is being made.
            if let Ok(dir) = Container::dir(root, id) {
                if let Ok(mut notify) = in_dir(&dir, NOTIFY_SOCKET).and_then(UnixStream::connect) {
                    let _ = writeln!(notify, "error: {message}");
                }
            }
            125
        }
    }
}

fn shim_run(root: &Path, id: &str, log: &Log) -> Result<u8> {
    // Out of the engine's process group and terminal session: the engine signals the pid it
    // was given, not the group.
    let _ = nix::unistd::setsid();
    // With a terminal (its stdio is the slave `create` made), it becomes the session's
    // controlling terminal: the engine's window size changes then reach the shim (SIGWINCH),
    // which copies them to the container's own terminal (see `elastos_loader`'s stdio).
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        elastos_loader::sys::take_controlling_terminal(elastos_loader::sys::stdio(0))
            .context("taking the console as the shim's terminal")?;
    }
    let mut container = Container::open(root, id)?;
    let dir = container.dir.clone();
    let plan: JailPlan = serde_json::from_slice(&fs::read(dir.join("plan.json"))?)
        .context("reading the container's plan")?;
    if let Some(asked) = container.record.oom_score_adj {
        apply_oom_score_adj(asked, log)?;
    }
    // The OCI state root is this user's runtime directory as the engine chose it.
    let mut options = elastos_host::apps::launch_options(root, false, false)?;
    options.attached = true;
    let pending = elastos_loader::spawn(&options)?;
    let control = UnixListener::bind(in_dir(&dir, SHIM_SOCKET)?)?;
    container.record.status = Status::Created;
    container.record.shim_pid = std::process::id() as i32;
    container.record.shim_started = start_time(container.record.shim_pid).map_or(0, |(t, _)| t);
    container.save()?;
    let mut notify = UnixStream::connect(in_dir(&dir, NOTIFY_SOCKET)?)
        .context("telling create that the jail exists")?;
    writeln!(notify, "created")?;
    drop(notify);

    // Created: wait for `start`, or for a signal (kill while created; SIGKILL needs none).
    let Some(mut starter) = wait_for_start(&control)? else {
        container.record.status = Status::Stopped;
        container.save()?;
        return Ok(128 + Signal::SIGTERM as u8);
    };
    let started = pending.start(&plan);
    let (jail, broker_end) = match started {
        Ok(started) => started,
        Err(e) => {
            let error = anyhow::Error::from(e).context("starting the container's process");
            let message = error
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            let _ = writeln!(starter, "error: {message}");
            container.record.status = Status::Stopped;
            container.save()?;
            log.error(&message);
            return Ok(125);
        }
    };
    let facts = jail.facts().clone();
    container.record.status = Status::Running;
    container.record.jail_pid = Some(facts.pid);
    container.record.jail_started = start_time(facts.pid).map(|(t, _)| t);
    container.record.cgroups = facts
        .limits
        .dirs()
        .into_iter()
        .map(Path::to_owned)
        .collect();
    container.record.limits = Some(facts.limits.clone());
    container.save()?;
    let _ = writeln!(starter, "ok");
    drop(starter);
    attach_to_broker(broker_end, &plan, &jail, log);
    let exit = jail.wait()?;
    container.record.status = Status::Stopped;
    container.save()?;
    Ok(u8::try_from(exit.code()).unwrap_or(125))
}

/// The shim's own OOM score adjustment, which the jail it spawns inherits: the spec's, where it
/// is not lower than the shim's (a lower one would make the container the last the kernel's OOM
/// killer picks, at the host's expense; the spec narrows, never widens).
fn apply_oom_score_adj(asked: i32, log: &Log) -> Result<()> {
    const PATH: &str = "/proc/self/oom_score_adj";
    let current: i32 = fs::read_to_string(PATH)
        .with_context(|| format!("reading {PATH}"))?
        .trim()
        .parse()
        .with_context(|| format!("{PATH} is not a number"))?;
    if asked < current {
        log.warn(&format!(
            "config.json process.oomScoreAdj = {asked}: kept at the runtime's {current} (a lower \
             one would protect the container from the OOM killer at the host's expense)"
        ));
        return Ok(());
    }
    fs::write(PATH, asked.to_string()).with_context(|| format!("writing {asked} to {PATH}"))
}

/// Hands the container's fd 3 (the broker's end) to the broker daemon, when one runs: found from
/// the default state directories (`$ELASTOS_HOME`, else the user's), never from an inherited fd.
/// An image is signed by no publisher: its connection may use and provide no service (an
/// all-zero publisher key, which no bundle has). Without a daemon the end is closed: the
/// process reads EOF on fd 3.
fn attach_to_broker(
    broker_end: std::os::fd::OwnedFd,
    plan: &JailPlan,
    jail: &elastos_loader::RunningJail,
    log: &Log,
) {
    use elastos_host::control::{ControlClient, ControlRequest, IdentityWire};
    let Some(client) = elastos_host::paths::StateDirs::from_env()
        .ok()
        .and_then(|state| ControlClient::connect(&state.control_socket))
    else {
        return;
    };
    let request = ControlRequest::Attach {
        identity: IdentityWire {
            app_id: plan.app_id,
            name: format!("oci:{}", plan.app_name),
            publisher: "0".repeat(64),
            provides: Vec::new(),
            uses: Vec::new(),
            pins: Vec::new(),
        },
        pid: Some(jail.facts().pid as u32),
    };
    let handle = jail.handle();
    if let Err(e) = client.request(
        &request,
        &[broker_end.as_raw_fd(), handle.as_fd().as_raw_fd()],
    ) {
        log.warn(&format!(
            "the broker daemon did not take the container's fd 3: {e}"
        ));
    }
}

/// Waits until `fd` is readable (true) or a signal of `signals` is pending (false; a signal
/// wins when both are).
fn readable_before_a_signal(
    fd: std::os::fd::BorrowedFd<'_>,
    signals: &nix::sys::signalfd::SignalFd,
) -> std::io::Result<bool> {
    loop {
        let mut fds = [fd.as_raw_fd(), signals.as_fd().as_raw_fd()].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        match elastos_loader::sys::poll(&mut fds, -1) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => other?,
        };
        return Ok(fds[1].revents == 0);
    }
}

/// Waits on the shim's socket for `start`; `None` when SIGTERM, SIGINT or SIGHUP came first.
fn wait_for_start(control: &UnixListener) -> Result<Option<UnixStream>> {
    use nix::sys::signal::SigSet;
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut set = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(signal);
    }
    // Blocked already by `elastos_loader::spawn` in this thread.
    let signals = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)?;
    loop {
        if !readable_before_a_signal(control.as_fd(), &signals)? {
            return Ok(None);
        }
        let (mut stream, _) = control.accept()?;
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        if line.trim_end() == "start" {
            return Ok(Some(stream));
        }
        let _ = writeln!(stream, "error: unknown request {:?}", line.trim_end());
    }
}

/// `exec`: a new process in the running container's jail, made by the runtime from outside it
/// (see `elastos_loader::exec_in_jail`): the container's namespaces, cgroups, user and ids,
/// Landlock rules and seccomp program, no capability. Its process is `--process FILE` (a
/// runtime spec `process`, what engines pass) or the arguments with `--env`, `--cwd` and
/// `--tty` over the container's own environment and directory; the same rules as the
/// container's translate it. Without `--detach`, waits for it (relaying signals) and exits with
/// its code; with it, leaves it to this process's parent (conmon and containerd's shim are
/// subreapers). `--pid-file` gets its host pid.
fn exec(root: &Path, args: &liboci_cli::Exec, log: &Log) -> Result<u8> {
    let id = &args.container_id;
    let container = Container::open(root, id)?;
    let record = &container.record;
    let (Status::Running, Some(pid), Some(started)) =
        (container.status(), record.jail_pid, record.jail_started)
    else {
        bail!(
            "container {id} is {}: exec needs a running container",
            status_name(container.status())
        );
    };
    // The pidfd first, then the check that the pid is still the jail's init: from then on the
    // pidfd names that process, whatever its pid becomes.
    let init = elastos_loader::sys::pidfd_open(pid)
        .ok()
        .filter(|_| alive(pid, started))
        .ok_or_else(|| anyhow!("container {id} is not running"))?;
    for (set, what) in [
        (args.user.is_some(), "--user"),
        (!args.additional_gids.is_empty(), "--additional-gids"),
        (args.process_label.is_some(), "--process-label"),
        (args.apparmor.is_some(), "--apparmor"),
        (args.cgroup.is_some(), "--cgroup"),
        (args.preserve_fds > 0, "--preserve-fds"),
    ] {
        if set {
            log.warn(&format!(
                "{what}: not applied; the process runs as the container's, with its ids, labels,                  cgroup and no inherited fds"
            ));
        }
    }
    let mut plan: JailPlan = serde_json::from_slice(&fs::read(container.dir.join("plan.json"))?)
        .context("reading the container's plan")?;
    let process = exec_process(args, &plan)?;
    let spec = elastos_oci::parse_spec(&fs::read(record.bundle.join("config.json"))?)?;
    let host = HostView {
        rootfs: record.bundle.join(
            spec.root()
                .as_ref()
                .map_or(Path::new("rootfs"), |r| r.path()),
        ),
        root: root.to_owned(),
    };
    let mut warnings = Vec::new();
    let command = elastos_oci::translate_process(&process, &host, &mut |field, message| {
        warnings.push(elastos_oci::Warning {
            field: field.to_owned(),
            message,
        })
    })?;
    log.warnings(&warnings);
    plan.entry = command.entry;
    plan.argv = command.argv;
    plan.env = command.env.into_iter().collect();
    plan.workdir = command.workdir;
    let stdio = match console(command.terminal, args.console_socket.as_deref(), log)? {
        Some(slave) => [
            slave.try_clone()?.into(),
            slave.try_clone()?.into(),
            slave.into(),
        ],
        None => [
            std::process::Stdio::inherit(),
            std::process::Stdio::inherit(),
            std::process::Stdio::inherit(),
        ],
    };
    let loader = elastos_host::apps::launch_options(root, false, false)?.loader;
    let child = elastos_loader::exec_in_jail(
        &elastos_loader::JailToJoin {
            init: init.as_fd(),
            init_pid: pid,
            cgroups: &record.cgroups,
        },
        &plan,
        &loader,
        stdio,
    )
    .with_context(|| format!("exec in container {id}"))?;
    if let Some(pid_file) = &args.pid_file {
        write_atomically(pid_file, child.id().to_string().as_bytes())
            .with_context(|| format!("writing the pid file {}", pid_file.display()))?;
    }
    if args.detach {
        return Ok(0);
    }
    wait_relaying_signals(child)
}

/// The process `exec` runs: `--process FILE`, else the arguments over the container's own
/// process (its environment without the jail's fd 3, which an exec'd process does not get; its
/// working directory), with `--env`, `--cwd` and `--tty`.
fn exec_process(args: &liboci_cli::Exec, plan: &JailPlan) -> Result<elastos_oci::runtime::Process> {
    if let Some(path) = &args.process {
        let bytes =
            fs::read(path).with_context(|| format!("reading --process {}", path.display()))?;
        return serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "--process {}: expected a runtime spec `process` object (JSON)",
                path.display()
            )
        });
    }
    if args.command.is_empty() {
        bail!("nothing to run: expected the command after the container id, or --process FILE");
    }
    let mut env: std::collections::BTreeMap<String, String> = plan
        .env
        .iter()
        .filter(|(name, _)| name != "ELASTOS_IPC_FD")
        .cloned()
        .collect();
    env.extend(args.env.iter().cloned());
    let mut process = elastos_oci::runtime::Process::default();
    process
        .set_args(Some(args.command.clone()))
        .set_env(Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()))
        .set_cwd(args.cwd.clone().unwrap_or_else(|| plan.workdir.clone()))
        .set_terminal(Some(args.tty))
        .set_capabilities(if args.cap.is_empty() {
            None
        } else {
            let caps = args
                .cap
                .iter()
                .map(|cap| {
                    let upper = cap.to_ascii_uppercase();
                    let name = upper.trim_start_matches("CAP_");
                    name.parse::<elastos_oci::runtime::Capability>()
                        .map_err(|_| anyhow!("--cap {cap}: not a capability (e.g. CAP_CHOWN)"))
                })
                .collect::<Result<std::collections::HashSet<_>>>()?;
            Some(
                elastos_oci::runtime::LinuxCapabilitiesBuilder::default()
                    .bounding(caps)
                    .build()?,
            )
        });
    Ok(process)
}

/// Waits for `child`, relaying SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH
/// to it; its exit code, or 128+N if signal N ended it (runc's).
fn wait_relaying_signals(mut child: std::process::Child) -> Result<u8> {
    use nix::sys::signal::{SigSet, SigmaskHow};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::unix::process::ExitStatusExt;
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(signal);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    let signals = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)?;
    let process = elastos_loader::sys::pidfd_open(child.id() as i32)?;
    loop {
        if readable_before_a_signal(process.as_fd(), &signals)? {
            break;
        }
        if let Some(info) = signals.read_signal()? {
            // ESRCH: it ended meanwhile, which the next poll sees.
            let _ = elastos_loader::sys::pidfd_send_signal(process.as_fd(), info.ssi_signo as i32);
        }
    }
    let status = child.wait()?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(125),
        (None, Some(signal)) => (128 + signal) as u8,
        _ => 125,
    })
}

/// `list`: every container under `root`, as runc lists them (`--format json`: id, pid, status,
/// bundle, rootfs, created, owner, annotations; `-q`: the ids).
fn list(root: &Path, args: &liboci_cli::List) -> Result<u8> {
    let mut containers: Vec<Container> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Container::open(root, entry.file_name().to_str()?).ok())
        .collect();
    containers.sort_by(|a, b| a.record.id.cmp(&b.record.id));
    let rows: Vec<serde_json::Value> = containers
        .iter()
        .map(|container| {
            let state = container.oci_state();
            let rootfs = fs::read(container.record.bundle.join("config.json"))
                .ok()
                .and_then(|bytes| elastos_oci::parse_spec(&bytes).ok())
                .and_then(|spec| {
                    spec.root()
                        .as_ref()
                        .map(|r| container.record.bundle.join(r.path()))
                })
                .unwrap_or_default();
            serde_json::json!({
                "ociVersion": state.oci_version,
                "id": state.id,
                "pid": state.pid,
                "status": status_name(state.status),
                "bundle": state.bundle,
                "rootfs": rootfs,
                "created": container.record.created,
                "owner": "root",
                "annotations": state.annotations,
            })
        })
        .collect();
    match (args.quiet, args.format.as_str()) {
        (true, _) => rows
            .iter()
            .for_each(|row| println!("{}", row["id"].as_str().unwrap_or(""))),
        (false, "json") => println!("{}", serde_json::Value::Array(rows)),
        (false, "table") => {
            println!(
                "{:<24} {:<8} {:<10} {:<40} {:<22} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for row in &rows {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} {:<22} {}",
                    row["id"].as_str().unwrap_or(""),
                    row["pid"],
                    row["status"].as_str().unwrap_or(""),
                    row["bundle"].as_str().unwrap_or(""),
                    row["created"].as_str().unwrap_or(""),
                    row["owner"].as_str().unwrap_or("")
                );
            }
        }
        (false, other) => bail!("--format {other}: expected table or json"),
    }
    Ok(0)
}

/// `ps`: the processes of a running container's jail (its pid namespace: the jail's init, the
/// container's process, what `exec` added), as host pids.
fn ps(root: &Path, args: &liboci_cli::Ps) -> Result<u8> {
    let id = &args.container_id;
    let container = Container::open(root, id)?;
    let record = &container.record;
    let pids: Vec<i32> = match (container.status(), record.jail_pid, record.jail_started) {
        (Status::Running | Status::Paused, Some(init), Some(started)) if alive(init, started) => {
            let namespace = fs::read_link(format!("/proc/{init}/ns/pid"))?;
            let mut pids: Vec<i32> = fs::read_dir("/proc")?
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|ns| ns == namespace)
                })
                .collect();
            pids.sort_unstable();
            pids
        }
        _ => Vec::new(),
    };
    if !args.ps_options.is_empty() {
        bail!(
            "ps options {:?}: not supported (elastos oci ps lists pids and commands)",
            args.ps_options
        );
    }
    match args.format.as_str() {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => {
            println!("{:<8} CMD", "PID");
            for pid in pids {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let words: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .filter(|w| !w.is_empty())
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                println!("{pid:<8} {}", words.join(" "));
            }
        }
        other => bail!("--format {other}: expected table or json"),
    }
    Ok(0)
}

/// `update`: new memory, task and CPU-quota limits for a running container, written to its
/// cgroups and to its plan (so a later `exec` and `update` start from them), from runc's flags
/// or `--resources FILE` (a runtime spec `linux.resources`, `-` for stdin). What the jail does
/// not enforce (CPU shares and sets, block I/O, ...) is refused, naming the flag: an engine
/// must not believe it applied.
fn update(root: &Path, args: &liboci_cli::Update, log: &Log) -> Result<u8> {
    let id = &args.container_id;
    let container = Container::open(root, id)?;
    let (Status::Running | Status::Paused, Some(mechanism)) =
        (container.status(), &container.record.limits)
    else {
        bail!(
            "container {id} is {}: update needs a running container",
            status_name(container.status())
        );
    };
    let plan_path = container.dir.join("plan.json");
    let mut plan: JailPlan =
        serde_json::from_slice(&fs::read(&plan_path)?).context("reading the container's plan")?;
    let asked = match &args.resources {
        Some(path) => {
            let bytes = if path == Path::new("-") {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)?;
                bytes
            } else {
                fs::read(path).with_context(|| format!("reading --resources {}", path.display()))?
            };
            let resources: elastos_oci::runtime::LinuxResources = serde_json::from_slice(&bytes)
                .context("--resources: expected a runtime spec `linux.resources` object (JSON)")?;
            elastos_oci::ResourceUpdate::from_resources(&resources)
        }
        None => elastos_oci::ResourceUpdate {
            memory_bytes: args.memory,
            tasks: args.pids_limit,
            cpu_quota_us: args.cpu_quota,
            cpu_period_us: args.cpu_period,
            unenforced: [
                ("--blkio-weight", args.blkio_weight.is_some()),
                ("--cpu-rt-period", args.cpu_rt_period.is_some()),
                ("--cpu-rt-runtime", args.cpu_rt_runtime.is_some()),
                ("--cpu-share", args.cpu_share.is_some()),
                ("--cpuset-cpus", args.cpuset_cpus.is_some()),
                ("--cpuset-mems", args.cpuset_mems.is_some()),
                ("--memory-reservation", args.memory_reservation.is_some()),
                ("--memory-swap", args.memory_swap.is_some()),
                ("--l3-cache-schema", args.l3_cache_schema.is_some()),
                ("--mem-bw-schema", args.mem_bw_schema.is_some()),
            ]
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(flag, _)| flag.to_owned())
            .collect(),
        },
    };
    plan.limits = asked.apply(plan.limits)?;
    if !mechanism.cpu_limited() && (args.cpu_quota.is_some() || args.cpu_period.is_some()) {
        log.warn("--cpu-quota: not enforced here (no cpu controller for the jail)");
    }
    mechanism
        .set_limits(&plan.limits)
        .with_context(|| format!("updating the limits of container {id}"))?;
    write_atomically(&plan_path, &serde_json::to_vec(&plan)?)
        .with_context(|| format!("writing {}", plan_path.display()))?;
    Ok(0)
}

/// `pause` (`frozen`) and `resume`: the jail's cgroup2 leaf frozen or thawed, every process of
/// it at once (the cgroup v2 freezer; on a hybrid host, the unified leaf the jail is cloned into).
fn freeze(root: &Path, id: &str, frozen: bool) -> Result<u8> {
    let container = Container::open(root, id)?;
    let (verb, from) = if frozen {
        ("pause", Status::Running)
    } else {
        ("resume", Status::Paused)
    };
    let status = container.status();
    let Some(mechanism) = container.record.limits.as_ref().filter(|_| status == from) else {
        bail!(
            "container {id} is {}: {verb} needs a {} container",
            status_name(status),
            status_name(from)
        );
    };
    if !mechanism
        .freeze(frozen)
        .with_context(|| format!("{verb} container {id}"))?
    {
        bail!("container {id} has no cgroup2 leaf to freeze (no cgroup2 mount here): {verb} is not available");
    }
    Ok(0)
}

/// `start`: asks the shim to run the process, waits until it runs.
fn start(root: &Path, id: &str) -> Result<u8> {
    let container = Container::open(root, id)?;
    let status = container.status();
    if status != Status::Created {
        bail!("container {id} is {}, not created", status_name(status));
    }
    let mut stream = UnixStream::connect(in_dir(&container.dir, SHIM_SOCKET)?)
        .with_context(|| format!("reaching the shim of container {id}"))?;
    writeln!(stream, "start")?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    match line.trim_end() {
        "ok" => Ok(0),
        "" => bail!("the shim of container {id} ended before its process ran (see the log)"),
        answer => bail!("{}", answer.strip_prefix("error: ").unwrap_or(answer)),
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Creating => "creating",
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Stopped => "stopped",
    }
}

/// A signal as engines name it: `SIGTERM`, `TERM` or `15`.
fn parse_signal(text: &str) -> Result<Signal> {
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| anyhow!("unknown signal number {number}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow!("unknown signal {text:?} (expected a name like TERM or a number)"))
}

/// `kill`: to the jail's init, which relays it to the process (SIGKILL ends the whole jail);
/// while created, to the shim.
fn kill(root: &Path, id: &str, signal: &str) -> Result<()> {
    let signal = parse_signal(signal)?;
    let container = Container::open(root, id)?;
    let record = &container.record;
    let delivered = match (container.status(), record.jail_pid, record.jail_started) {
        // A paused jail gets it when resumed (SIGKILL at once).
        (Status::Running | Status::Paused, Some(pid), Some(started)) => {
            signal_process(pid, started, signal)?
        }
        (Status::Created | Status::Creating, ..) => {
            signal_process(record.shim_pid, record.shim_started, signal)?
        }
        _ => false,
    };
    if !delivered {
        bail!("container {id} is not running");
    }
    Ok(())
}

/// `delete`: a stopped container's state and cgroups; with `--force`, a live one is killed first.
fn delete(root: &Path, id: &str, force: bool) -> Result<u8> {
    let container = match Container::open(root, id) {
        Ok(container) => container,
        // runc's rule: deleting what is already gone is no error with --force.
        Err(_) if force && !Container::dir(root, id)?.join("container.json").exists() => {
            let _ = force_remove(&Container::dir(root, id)?);
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    let record = &container.record;
    if container.status() != Status::Stopped {
        if !force {
            bail!(
                "container {id} is {}: stop it first, or delete --force",
                status_name(container.status())
            );
        }
        // The shim's death takes the jail with it (its init has PR_SET_PDEATHSIG).
        signal_process(record.shim_pid, record.shim_started, Signal::SIGKILL)?;
        if let (Some(pid), Some(started)) = (record.jail_pid, record.jail_started) {
            signal_process(pid, started, Signal::SIGKILL)?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(record.shim_pid, record.shim_started)
            || record
                .jail_pid
                .zip(record.jail_started)
                .is_some_and(|(pid, started)| alive(pid, started))
        {
            if Instant::now() > deadline {
                bail!("container {id} did not end within 10 s of SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    remove_cgroups(&record.cgroups)?;
    remove_clone_leaves(record.shim_pid);
    force_remove(&container.dir)?;
    Ok(0)
}

/// Removes the cgroup2 leaves the dead shim `shim_pid` cloned its jail into
/// (`elastos/<launcher pid>-<n>`, made before the jail exists, so in no record when a created
/// container is deleted or its shim was killed). Best effort: a leaf that is busy belongs to a
/// live process that reused the pid, and stays.
fn remove_clone_leaves(shim_pid: i32) {
    let prefix = format!("{shim_pid}-");
    for parent in ["/sys/fs/cgroup/unified/elastos", "/sys/fs/cgroup/elastos"] {
        for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_dir(entry.path());
            }
        }
    }
}

/// Removes the jail's cgroup directories (the shim removes them itself when it ends normally).
fn remove_cgroups(cgroups: &[PathBuf]) -> Result<()> {
    for cgroup in cgroups {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::remove_dir(cgroup) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                // Tasks that just died may keep it busy for a moment.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("removing cgroup {}", cgroup.display()))
                }
            }
        }
    }
    Ok(())
}

fn force_remove(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// The runtime spec's features document: what a spec may ask of this runtime.
fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": [],
        "mountOptions": ["bind", "rbind", "ro", "rw", "size", "nosuid", "nodev", "noexec"],
        "linux": {
            "namespaces": ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"],
            "capabilities": [],
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                            "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                            "SCMP_ACT_TRAP"],
                "operators": []
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {
            "org.elastos.jail": "seccomp allow-list, Landlock, no capabilities, new namespaces; \
                                 a spec's seccomp only narrows it",
            "org.elastos.capabilities": "none granted: the ordinary ones are dropped with a \
                                         warning, privilege-granting ones refuse the container"
        }
    })
}
