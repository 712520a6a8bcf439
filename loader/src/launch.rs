//! The launcher: creates the jail's namespaces, hands the plan to the loader, supervises the app.
//!
//! ```text
//! launcher (host)                       child / loader (new user, mount, pid, net, ipc, uts ns)
//! spawn: pipes, clone(CLONE_NEW*) -----> unshare(CLONE_NEWNET), wait on the sync pipe
//! (elastos run: verify, plan the bundle)
//! start: write the LoaderInput,
//! uid_map/gid_map
//! sync, the host paths ----------------> restore CPU affinity, open the host paths at fds 6+,
//!                                        become uid 0 of the namespace, PDEATHSIG,
//!                                        execveat(loader)
//! create the cgroup                      loader reads the input, builds the filesystem;
//! close the input pipe ----------------> on EOF: joins the cgroup, pivot_root, cgroup
//!                                        namespace, fork the app
//! read reports until `ready` <---------- ... exec entry (report pipe closes on exec)
//! wait, forwarding SIGINT/SIGTERM/SIGHUP
//! ```
//!
//! The cgroup is made while the loader builds the filesystem (each takes ~0.2-0.4 ms here); the
//! loader waits for it only before it joins it (see `AppCgroup::self_join_files`).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use elastos_policy::{
    jail_paths, JailPlan, MountEntry, PathAccess, JAIL_GID, JAIL_HOSTNAME, JAIL_UID,
};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use uuid::Uuid;

use crate::cgroup::{AppCgroup, CgroupError, LimitMechanism};
use crate::sys::{self, ChildSetup, ChildStep, CHILD_FAILURE_MAGIC};
use elastos_handoff::{
    fds, LandlockRule, LoaderInput, Report, ResolvedMount, RuleAccess, SockFilter,
};

/// Signals the launcher forwards to the app.
const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Starting or supervising a jail failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The loader binary could not be opened.
    #[error(
        "cannot open the loader {path}: {source} (hint: install elastos-loader next to \
             elastos, or set ELASTOS_LOADER)"
    )]
    Loader {
        /// Where we looked.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A host path the jail mounts could not be opened.
    #[error("cannot open {path} to mount it in the jail: {source}")]
    MountSource {
        /// The host path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Preparing the app's home (ownership) failed.
    #[error("cannot prepare the app's home {path}: {source}")]
    Home {
        /// The host path of the home.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Creating a pipe or moving an fd failed.
    #[error("cannot set up the jail's file descriptors: {0}")]
    Fds(#[source] io::Error),
    /// clone() into new namespaces failed.
    #[error(
        "cannot create the jail's namespaces: {source} (hint: unprivileged user namespaces \
             must be enabled: sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces \
             > 0, and no AppArmor restrict_unprivileged_userns)"
    )]
    Namespaces {
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Writing the child's uid/gid map failed.
    #[error("cannot write {file} of the jail: {source}")]
    IdMap {
        /// The /proc file.
        file: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The cgroup for the limits could not be set up.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The child failed between clone and exec of the loader.
    #[error("the jail's first process failed at {step:?}: {source}")]
    Child {
        /// The step.
        step: ChildStep,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The loader failed at a jail step; the app never ran.
    #[error("building the jail failed at step {step}: {message}{}", errno_text(*.errno))]
    Jail {
        /// The jail step (see `jail::Step`).
        step: String,
        /// What failed.
        message: String,
        /// The kernel's answer, if any.
        errno: Option<i32>,
    },
    /// The entry does not exist (or its ELF interpreter does not, in the jail).
    #[error(
        "entry {entry} not found in the jail: {source} (if it exists in the bundle, it is \
             dynamically linked against a loader or library the host does not have)"
    )]
    EntryNotFound {
        /// The entry's jail path.
        entry: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The entry exists but cannot be executed.
    #[error(
        "entry {entry} cannot be executed: {source} (is it an executable for this \
             architecture, with its x bit set?)"
    )]
    EntryNotExecutable {
        /// The entry's jail path.
        entry: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The plan binds more host paths than a jail can take.
    #[error("the jail would bind {count} host paths; at most {max} are supported")]
    TooManyMountSources {
        /// How many the plan has.
        count: usize,
        /// The limit ([`MAX_MOUNT_SOURCES`]).
        max: usize,
    },
    /// The loader went away without saying why.
    #[error("the loader exited before starting the app ({0})")]
    LoaderVanished(String),
    /// Waiting for the app failed.
    #[error("waiting for the app failed: {0}")]
    Wait(#[source] nix::Error),
}

fn errno_text(errno: Option<i32>) -> String {
    errno
        .map(|e| format!(": {}", io::Error::from_raw_os_error(e)))
        .unwrap_or_default()
}

impl LaunchError {
    /// The podman-style exit code for this failure: 127 entry not found, 126 entry not
    /// executable, 125 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::EntryNotFound { .. } => 127,
            LaunchError::EntryNotExecutable { .. } => 126,
            _ => 125,
        }
    }
}

/// Which host uid/gid the jail's processes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HostIdentity {
    /// Host uid of the jail (and of the app's home files).
    pub uid: u32,
    /// Host gid.
    pub gid: u32,
    /// Launched by root: the jail gets its own unprivileged uid rather than root's.
    pub launched_by_root: bool,
}

/// First host uid of the range from which a root launcher gives each app its own uid.
pub const ROOT_MODE_UID_BASE: u32 = 0x5000_0000;

impl HostIdentity {
    /// The identity for `app_id` when launched by the current user. As root, each app gets a
    /// dedicated unprivileged host uid/gid derived from its id (FNV-1a, 24 bits), so apps never
    /// run as host root and two apps rarely share a uid; otherwise the caller's uid/gid.
    pub fn for_app(app_id: &Uuid) -> HostIdentity {
        let uid = nix::unistd::getuid().as_raw();
        if uid == 0 {
            let hash = app_id.as_bytes().iter().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
            });
            let id = ROOT_MODE_UID_BASE + (hash & 0x00ff_ffff);
            HostIdentity {
                uid: id,
                gid: id,
                launched_by_root: true,
            }
        } else {
            HostIdentity {
                uid,
                gid: nix::unistd::getgid().as_raw(),
                launched_by_root: false,
            }
        }
    }
}

/// How to launch.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The `elastos-loader` executable.
    pub loader: PathBuf,
    /// Run even without Landlock or seccomp in the kernel (loudly named at the CLI).
    pub allow_without_kernel_sandbox: bool,
    /// Never use a cgroup (rlimits only).
    pub no_cgroup: bool,
}

/// What the loader reported once the jail was complete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JailFacts {
    /// The host pid of the app (pid 1 of its namespace).
    pub pid: i32,
    /// The host identity the app runs as.
    pub identity: HostIdentity,
    /// The Landlock ABI enforced (0: none).
    pub landlock_abi: u32,
    /// Whether every Landlock restriction asked for is enforced.
    pub landlock_fully_enforced: bool,
    /// How memory and thread limits are enforced.
    pub limits: LimitMechanism,
}

/// A running jail. Dropping it kills the app.
#[derive(Debug)]
pub struct RunningJail {
    facts: JailFacts,
    cgroup: AppCgroup,
    reaped: bool,
    /// The loader's report pipe; after `Ready`, init reports how the app ended.
    reports: Option<BufReader<File>>,
    // Declared last: dropped after the app is killed and reaped.
    signals: BlockedSignals,
}

/// SIGINT, SIGTERM, SIGHUP and SIGCHLD blocked in this thread (so none is lost between clone and
/// `wait`); unblocked on drop. A multi-threaded supervisor (the embedded broker) takes this
/// before starting its other threads, which inherit the mask, so that these signals reach only
/// [`RunningJail::wait`].
#[derive(Debug)]
pub struct BlockedSignals(SigSet);

impl BlockedSignals {
    /// Blocks the supervisor's signals in the calling thread.
    pub fn block() -> Result<BlockedSignals, LaunchError> {
        let mut set = SigSet::empty();
        for signal in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
            set.add(*signal);
        }
        set.thread_block().map_err(|e| LaunchError::Fds(e.into()))?;
        Ok(BlockedSignals(set))
    }
}

impl BlockedSignals {
    /// Waits for the next of the blocked signals (for a supervisor that has no jail to wait for,
    /// such as the broker daemon waiting for SIGTERM).
    pub fn next(&self) -> Result<Signal, LaunchError> {
        self.0.wait().map_err(LaunchError::Wait)
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = self.0.thread_unblock();
    }
}

/// What [`RunningJail::wait_until_readable`] saw first.
#[derive(Debug)]
pub enum FirstEvent {
    /// The app ended.
    Ended(AppExit),
    /// The fd has data; the app runs on.
    Readable(Box<RunningJail>),
}

/// How the app ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppExit {
    /// exit(code).
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl AppExit {
    /// The shell convention: the code, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            AppExit::Exited(code) => code,
            AppExit::Signaled(signal) => 128 + signal,
        }
    }
}

/// Turns the plan's mount list into the loader's, and lists the host paths to bind (the child
/// opens them; see `ChildSetup::mount_sources`).
fn resolve_mounts(plan: &JailPlan) -> Result<(Vec<ResolvedMount>, Vec<PathBuf>), LaunchError> {
    let mut resolved = Vec::with_capacity(plan.mounts.len());
    let mut sources: Vec<PathBuf> = Vec::new();
    let mut bind = |host: &Path, jail: &Path, writable: bool, device: bool| {
        let is_dir = fs::metadata(host)
            .map_err(|source| LaunchError::MountSource {
                path: host.into(),
                source,
            })?
            .is_dir();
        sources.push(host.into());
        Ok::<_, LaunchError>(ResolvedMount::Bind {
            source: (sources.len() - 1) as u32,
            jail: bytes(jail),
            is_dir,
            writable,
            device,
        })
    };
    for entry in &plan.mounts {
        let step = match entry {
            MountEntry::Host {
                host,
                jail,
                writable,
                optional,
            } => match fs::symlink_metadata(host) {
                Err(e) if *optional && e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(LaunchError::MountSource {
                        path: host.clone(),
                        source,
                    })
                }
                Ok(m) if m.file_type().is_symlink() => ResolvedMount::Symlink {
                    target: bytes(&fs::read_link(host).map_err(|source| {
                        LaunchError::MountSource {
                            path: host.clone(),
                            source,
                        }
                    })?),
                    jail: bytes(jail),
                },
                Ok(_) => bind(host, jail, *writable, false)?,
            },
            MountEntry::Bind {
                host,
                jail,
                writable,
            } => bind(host, jail, *writable, false)?,
            MountEntry::Device { host, jail } => bind(host, jail, true, true)?,
            MountEntry::Tmpfs {
                jail,
                size_bytes,
                mode,
            } => ResolvedMount::Tmpfs {
                jail: bytes(jail),
                size_bytes: *size_bytes,
                mode: *mode,
            },
            MountEntry::Dir { jail, mode } => ResolvedMount::Dir {
                jail: bytes(jail),
                mode: *mode,
            },
            MountEntry::Symlink { target, jail } => ResolvedMount::Symlink {
                target: bytes(target),
                jail: bytes(jail),
            },
            MountEntry::Proc { jail } => ResolvedMount::Proc { jail: bytes(jail) },
        };
        resolved.push(step);
    }
    Ok((resolved, sources))
}

fn bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

/// The loader's input: `plan` flattened to what the loader carries out.
fn loader_input(
    plan: &JailPlan,
    mounts: Vec<ResolvedMount>,
    cgroup_tasks: Vec<PathBuf>,
    memory_rlimit: bool,
    allow_without_kernel_sandbox: bool,
) -> LoaderInput {
    LoaderInput {
        mounts,
        cgroup_tasks: cgroup_tasks.iter().map(|path| bytes(path)).collect(),
        hostname: JAIL_HOSTNAME.into(),
        home: jail_paths::HOME.into(),
        jail_uid: JAIL_UID,
        jail_gid: JAIL_GID,
        landlock: plan
            .landlock
            .iter()
            .map(|rule| LandlockRule {
                path: bytes(&rule.path),
                access: match rule.access {
                    PathAccess::ReadOnly => RuleAccess::ReadOnly,
                    PathAccess::ReadExecute => RuleAccess::ReadExecute,
                    PathAccess::ReadWrite => RuleAccess::ReadWrite,
                    PathAccess::ReadWriteFiles => RuleAccess::ReadWriteFiles,
                },
                optional: rule.optional,
            })
            .collect(),
        landlock_net_deny_tcp: plan.landlock_net_deny_tcp,
        landlock_scoped: plan.landlock_scoped,
        seccomp: plan
            .seccomp
            .bpf
            .iter()
            .map(|insn| SockFilter {
                code: insn.code,
                jt: insn.jt,
                jf: insn.jf,
                k: insn.k,
            })
            .collect(),
        env: plan
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}").into_bytes())
            .collect(),
        entry: bytes(&plan.entry),
        argv: plan.argv.iter().map(|a| a.clone().into_bytes()).collect(),
        threads: plan.limits.threads,
        open_files: plan.limits.open_files,
        memory_bytes: plan.limits.memory_bytes,
        memory_rlimit,
        allow_without_kernel_sandbox,
    }
}

/// As root, the home belongs to the app's own uid (it was created by root).
fn prepare_home(plan: &JailPlan, identity: &HostIdentity) -> Result<(), LaunchError> {
    if !identity.launched_by_root {
        return Ok(());
    }
    let home = plan.mounts.iter().find_map(|m| match m {
        MountEntry::Bind { host, jail, .. } if jail == Path::new(jail_paths::HOME) => Some(host),
        _ => None,
    });
    if let Some(home) = home {
        std::os::unix::fs::chown(home, Some(identity.uid), Some(identity.gid)).map_err(
            |source| LaunchError::Home {
                path: home.clone(),
                source,
            },
        )?;
    }
    Ok(())
}

/// The most host paths a jail may bind (a plan has ~15): their fds sit between
/// `fds::FIRST_SOURCE` and the launcher's hand-off fds, all under 64 (see [`spawn`]).
pub const MAX_MOUNT_SOURCES: usize = 40;

/// Starts `plan` in a new jail, with `ipc` as the app's fd 3: [`spawn`], then
/// [`PendingJail::start`].
pub fn launch(
    plan: &JailPlan,
    ipc: OwnedFd,
    options: &LaunchOptions,
) -> Result<RunningJail, LaunchError> {
    spawn(ipc, options)?.start(plan)
}

/// A jail's first process, in its new namespaces, waiting for its plan. Dropping it kills it.
#[derive(Debug)]
pub struct PendingJail(Option<Pending>);

/// What a [`PendingJail`] holds until [`PendingJail::start`] takes it.
#[derive(Debug)]
struct Pending {
    pid: i32,
    options: LaunchOptions,
    sync_write: OwnedFd,
    sources_write: OwnedFd,
    input_write: OwnedFd,
    report_read: OwnedFd,
    signals: BlockedSignals,
}

/// Creates a jail's first process in new user, mount, pid, net, ipc and uts namespaces, with
/// `ipc` as the app's fd 3, before the plan is known: `elastos run` verifies and plans the bundle
/// while the kernel builds the namespaces (the network namespace alone costs ~0.25 ms here, made
/// by the child itself). Nothing of any bundle reaches the process before
/// [`PendingJail::start`].
///
/// Blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD in the calling thread (they are handled by
/// [`RunningJail::wait`]); call it from the thread that will wait, and keep that thread alive as
/// long as the app: the app is killed when the thread that started it exits (PR_SET_PDEATHSIG).
pub fn spawn(ipc: OwnedFd, options: &LaunchOptions) -> Result<PendingJail, LaunchError> {
    let loader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&options.loader)
        .map_err(|source| LaunchError::Loader {
            path: options.loader.clone(),
            source,
        })?;
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| LaunchError::Fds(e.into()));
    let (input_read, input_write) = pipe()?;
    let (report_read, report_write) = pipe()?;
    let (sync_read, sync_write) = pipe()?;
    let (sources_read, sources_write) = pipe()?;

    // Everything the child keeps is first moved above the fixed numbers (3, 4, 5, then one per
    // mount source), so that moving it into place never overwrites one of them. Just above, not
    // at some round number: growing the fd table past its initial 64 slots makes the kernel wait
    // for an RCU grace period when the process has threads (the embedded broker), ~8 ms here.
    let floor = fds::FIRST_SOURCE + MAX_MOUNT_SOURCES as RawFd;
    let above = |fd: &OwnedFd| sys::dup_above(fd.as_raw_fd(), floor).map_err(LaunchError::Fds);
    let handed: Vec<(OwnedFd, RawFd)> = vec![
        (above(&ipc)?, fds::IPC),
        (above(&input_read)?, fds::INPUT),
        (above(&report_write)?, fds::REPORT),
    ];
    let (sync_read, sources_read, loader) = (
        above(&sync_read)?,
        above(&sources_read)?,
        above(&loader.into())?,
    );
    drop((ipc, input_read));

    let mut setup = ChildSetup::new(
        (sync_read.as_raw_fd(), sync_write.as_raw_fd()),
        (sources_read.as_raw_fd(), sources_write.as_raw_fd()),
        report_write.as_raw_fd(),
        handed
            .iter()
            .map(|(fd, to)| (fd.as_raw_fd(), *to))
            .collect(),
        nix::unistd::getuid().is_root(),
        loader.as_raw_fd(),
        vec![CString::from(c"elastos-loader")],
        Vec::new(),
    );
    let signals = BlockedSignals::block()?;
    // CLONE_NEWNET is left to the child (see ChildStep::NetNamespace).
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    let pid = sys::spawn_jailed_child(flags, &mut setup)
        .map_err(|source| LaunchError::Namespaces { source })?;
    drop((handed, sync_read, sources_read, loader, report_write, setup));
    Ok(PendingJail(Some(Pending {
        pid,
        options: options.clone(),
        sync_write,
        sources_write,
        input_write,
        report_read,
        signals,
    })))
}

impl PendingJail {
    /// Builds `plan` around the waiting process: id maps, mount sources, the loader's input, the
    /// cgroup; returns once the app's entry runs.
    pub fn start(mut self, plan: &JailPlan) -> Result<RunningJail, LaunchError> {
        let Pending {
            pid,
            options,
            sync_write,
            sources_write,
            input_write,
            report_read,
            signals,
        } = self.0.take().expect("a PendingJail is started once");
        // From here on the process belongs to `jail`, whose Drop kills and reaps it.
        let identity = HostIdentity::for_app(&plan.app_id);
        let mut jail = RunningJail {
            facts: JailFacts {
                pid,
                identity,
                landlock_abi: 0,
                landlock_fully_enforced: false,
                limits: LimitMechanism::Rlimits,
            },
            cgroup: AppCgroup::choose(
                &format!("{}-{}", plan.app_id, std::process::id()),
                options.no_cgroup,
            ),
            reaped: false,
            reports: None,
            signals,
        };
        jail.facts.limits = jail.cgroup.mechanism().clone();
        prepare_home(plan, &identity)?;
        let (mounts, sources) = resolve_mounts(plan)?;
        if sources.len() > MAX_MOUNT_SOURCES {
            return Err(LaunchError::TooManyMountSources {
                count: sources.len(),
                max: MAX_MOUNT_SOURCES,
            });
        }
        let input = loader_input(
            plan,
            mounts,
            jail.cgroup.self_join_files(),
            jail.facts.limits == LimitMechanism::Rlimits,
            options.allow_without_kernel_sandbox,
        )
        .encode();
        let mut framed = Vec::with_capacity(4 + input.len());
        framed.extend_from_slice(&(input.len() as u32).to_le_bytes());
        framed.extend_from_slice(&input);
        let mut source_list = Vec::new();
        for path in &sources {
            source_list.extend_from_slice(path.as_os_str().as_bytes());
            source_list.push(0);
        }

        let mut reports = BufReader::new(File::from(report_read));
        let handed_over = (|| {
            // Written before the loader runs when the pipe can hold it, so it never waits for us.
            let (input_write, pending_input) =
                write_if_it_fits(input_write, framed).map_err(LaunchError::Fds)?;
            write_id_maps(pid, &identity)?;
            File::from(sync_write)
                .write_all(&[1])
                .map_err(LaunchError::Fds)?;
            // Closed after writing: EOF ends the list.
            File::from(sources_write)
                .write_all(&source_list)
                .map_err(LaunchError::Fds)?;
            Ok::<_, LaunchError>((input_write, pending_input))
        })();
        let (input_write, pending_input) = match handed_over {
            Ok(handed) => handed,
            // The child's own failure record, if it wrote one, says more than our error.
            Err(e) => return Err(child_failure_record(&mut reports, &sources).unwrap_or(e)),
        };
        let mut input_write = File::from(input_write);
        if let Some(bytes) = pending_input {
            // The input did not fit in the pipe: the loader reads it all before doing anything else.
            let _ = input_write.write_all(&bytes);
        }
        jail.cgroup.apply(&plan.limits, pid, identity.uid)?;
        // EOF tells the loader that its cgroup is ready (see the module doc).
        drop(input_write);
        let (abi, fully) = read_until_started(&mut reports, &sources)?;
        jail.facts.landlock_abi = abi;
        jail.facts.landlock_fully_enforced = fully;
        jail.reports = Some(reports);
        Ok(jail)
    }
}

impl Drop for PendingJail {
    fn drop(&mut self) {
        if let Some(pending) = &self.0 {
            let pid = Pid::from_raw(pending.pid);
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// The child's failure record, if one is already on the report pipe (the child is gone).
fn child_failure_record(reports: &mut BufReader<File>, sources: &[PathBuf]) -> Option<LaunchError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut ready = [PollFd::new(reports.get_ref().as_fd(), PollFlags::POLLIN)];
    poll(&mut ready, PollTimeout::ZERO)
        .ok()
        .filter(|n| *n > 0)?;
    take_child_failure(reports, sources).ok()?
}

/// Waits for the first report; if it is the pre-exec child's failure record, decodes it.
fn take_child_failure(
    reports: &mut BufReader<File>,
    sources: &[PathBuf],
) -> Result<Option<LaunchError>, LaunchError> {
    let buffered = reports.fill_buf().map_err(LaunchError::Fds)?;
    if buffered.first() != Some(&CHILD_FAILURE_MAGIC) {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    reports.read_to_end(&mut bytes).map_err(LaunchError::Fds)?;
    Ok(Some(child_failure(&bytes, sources)))
}

/// Writes `bytes` to the pipe if the pipe can be made large enough to take them without blocking;
/// otherwise hands them back, to be written once a reader runs.
fn write_if_it_fits(pipe: OwnedFd, bytes: Vec<u8>) -> io::Result<(OwnedFd, Option<Vec<u8>>)> {
    use nix::fcntl::{fcntl, FcntlArg};
    let fits = match fcntl(pipe.as_raw_fd(), FcntlArg::F_GETPIPE_SZ) {
        Ok(size) if size as usize >= bytes.len() => true,
        _ => fcntl(
            pipe.as_raw_fd(),
            FcntlArg::F_SETPIPE_SZ(bytes.len() as libc::c_int),
        )
        .is_ok(),
    };
    if !fits {
        return Ok((pipe, Some(bytes)));
    }
    let mut file = File::from(pipe);
    file.write_all(&bytes)?;
    Ok((file.into(), None))
}

fn write_id_maps(pid: i32, identity: &HostIdentity) -> Result<(), LaunchError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let write = |name: &str, value: String| {
        let file = proc.join(name);
        fs::write(&file, value).map_err(|source| LaunchError::IdMap { file, source })
    };
    if !identity.launched_by_root {
        // Required before an unprivileged gid_map; also keeps the jail from dropping groups to
        // gain access to files denied to one of them.
        write("setgroups", "deny".into())?;
    }
    write("uid_map", format!("0 {} 1\n", identity.uid))?;
    write("gid_map", format!("0 {} 1\n", identity.gid))
}

/// Reads what the child and the loader say until the app runs: Ok((landlock ABI, fully
/// enforced)) once the entry was exec'd.
fn read_until_started(
    reports: &mut BufReader<File>,
    sources: &[PathBuf],
) -> Result<(u32, bool), LaunchError> {
    if let Some(failure) = take_child_failure(reports, sources)? {
        return Err(failure);
    }
    let mut line = String::new();
    if reports.read_line(&mut line).map_err(LaunchError::Fds)? == 0 {
        return Err(LaunchError::LoaderVanished("no report".into()));
    }
    match parse_report(&line)? {
        Report::Ready {
            landlock_abi,
            landlock_fully_enforced,
        } => Ok((landlock_abi, landlock_fully_enforced)),
        Report::Failed {
            step,
            message,
            errno,
        } => Err(LaunchError::Jail {
            step,
            message,
            errno,
        }),
        Report::ExecFailed { entry, errno } => {
            let entry = PathBuf::from(entry);
            let source = io::Error::from_raw_os_error(errno);
            Err(if errno == libc::ENOENT {
                LaunchError::EntryNotFound { entry, source }
            } else {
                LaunchError::EntryNotExecutable { entry, source }
            })
        }
        Report::Exited { .. } | Report::Killed { .. } => Err(LaunchError::LoaderVanished(format!(
            "unexpected report {line:?}"
        ))),
    }
}

fn parse_report(line: &str) -> Result<Report, LaunchError> {
    Report::from_line(line).map_err(|e| {
        LaunchError::LoaderVanished(format!("unreadable report {:?}: {e}", line.trim_end()))
    })
}

/// Decodes the pre-exec child's 8-byte failure record.
fn child_failure(bytes: &[u8], sources: &[PathBuf]) -> LaunchError {
    {
        if bytes.len() < 8 {
            return LaunchError::LoaderVanished("truncated failure record".into());
        }
        let index = u16::from_le_bytes(bytes[2..4].try_into().expect("2 bytes"));
        let errno = i32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let step = ChildStep::from_byte(bytes[1]).unwrap_or(ChildStep::ExecLoader);
        let source = io::Error::from_raw_os_error(errno);
        match sources.get(usize::from(index)) {
            Some(path) if step == ChildStep::OpenMountSource => LaunchError::MountSource {
                path: path.clone(),
                source,
            },
            _ => LaunchError::Child { step, source },
        }
    }
}

impl RunningJail {
    /// Facts about the running jail.
    pub fn facts(&self) -> &JailFacts {
        &self.facts
    }

    /// Waits for the app to end, forwarding SIGINT, SIGTERM and SIGHUP to the jail's init, which
    /// relays them to the app (see `init`). For the thread that owns the process's signals (see
    /// [`BlockedSignals`]).
    pub fn wait(mut self) -> Result<AppExit, LaunchError> {
        let init = Pid::from_raw(self.facts.pid);
        let waiting_for = self.signals.0;
        let init_exit = loop {
            if let Some(exit) = exit_of(waitpid(init, Some(WaitPidFlag::WNOHANG)))? {
                break exit;
            }
            relay(init, waiting_for.wait().map_err(LaunchError::Wait)?);
        };
        Ok(self.ended(init_exit))
    }

    /// Like [`RunningJail::wait`], but returns the still running jail as soon as `fd` has data to
    /// read: for a supervisor that acts only once the app speaks on its IPC socket (`elastos
    /// run` starts its embedded broker then). EOF on `fd` (the app closed it) is not data; the
    /// wait then goes on for the app's end.
    pub fn wait_until_readable(self, fd: BorrowedFd<'_>) -> Result<FirstEvent, LaunchError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        use nix::sys::socket::{recv, MsgFlags};
        let init = Pid::from_raw(self.facts.pid);
        let signals = SignalFd::with_flags(&self.signals.0, SfdFlags::SFD_CLOEXEC)
            .map_err(LaunchError::Wait)?;
        loop {
            if let Some(exit) = exit_of(waitpid(init, Some(WaitPidFlag::WNOHANG)))? {
                let mut jail = self;
                return Ok(FirstEvent::Ended(jail.ended(exit)));
            }
            let mut ready = [
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(fd, PollFlags::POLLIN),
            ];
            match poll(&mut ready, PollTimeout::NONE) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(LaunchError::Wait(e)),
            }
            let has = |i: usize, flags: PollFlags| {
                ready[i].revents().is_some_and(|r| r.intersects(flags))
            };
            let fd_ready = has(
                1,
                PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR,
            );
            let signal_ready = has(0, PollFlags::POLLIN);
            if fd_ready {
                let mut byte = [0u8; 1];
                let peeked = recv(
                    fd.as_raw_fd(),
                    &mut byte,
                    MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
                );
                if matches!(peeked, Ok(n) if n > 0) {
                    return Ok(FirstEvent::Readable(Box::new(self)));
                }
                // EOF or an error: nothing will ever be read; wait for the end alone.
                drop(signals);
                return self.wait().map(FirstEvent::Ended);
            }
            if signal_ready {
                let info = signals.read_signal().map_err(LaunchError::Wait)?;
                if let Some(signal) = info.and_then(|i| Signal::try_from(i.ssi_signo as i32).ok()) {
                    relay(init, signal);
                }
            }
        }
    }

    /// Waits for the app to end without handling signals: for supervisor threads of a
    /// multi-threaded process (the broker's activated providers). Stop the app with
    /// [`stop_jail`].
    pub fn wait_blocking(mut self) -> Result<AppExit, LaunchError> {
        let init = Pid::from_raw(self.facts.pid);
        let init_exit = loop {
            match exit_of(waitpid(init, None)) {
                Ok(Some(exit)) => break exit,
                Ok(None) | Err(LaunchError::Wait(nix::Error::EINTR)) => continue,
                Err(e) => return Err(e),
            }
        };
        Ok(self.ended(init_exit))
    }

    /// After init was reaped: init's last report says how the app ended; without it (init was
    /// killed), init's own status.
    fn ended(&mut self, init_exit: AppExit) -> AppExit {
        self.reaped = true;
        let mut rest = String::new();
        if let Some(mut reports) = self.reports.take() {
            let _ = reports.read_to_string(&mut rest);
        }
        rest.lines()
            .rev()
            .find_map(|line| match parse_report(line) {
                Ok(Report::Exited { code }) => Some(AppExit::Exited(code)),
                Ok(Report::Killed { signal }) => Some(AppExit::Signaled(signal)),
                _ => None,
            })
            .unwrap_or(init_exit)
    }
}

/// A blocked signal the supervisor received: SIGCHLD only wakes it; the others go to the jail's
/// init, which relays them to the app.
fn relay(init: Pid, signal: Signal) {
    if signal != Signal::SIGCHLD {
        let _ = kill(init, signal);
    }
}

fn exit_of(status: nix::Result<WaitStatus>) -> Result<Option<AppExit>, LaunchError> {
    match status.map_err(LaunchError::Wait)? {
        WaitStatus::Exited(_, code) => Ok(Some(AppExit::Exited(code))),
        WaitStatus::Signaled(_, signal, _) => Ok(Some(AppExit::Signaled(signal as i32))),
        _ => Ok(None),
    }
}

/// Asks a jail to stop: SIGTERM to its init, which relays it to the app. `pid` is
/// [`JailFacts::pid`].
pub fn stop_jail(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
}

/// Kills a jail at once: SIGKILL to its init (the app dies with its pid namespace).
pub fn kill_jail(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

impl Drop for RunningJail {
    fn drop(&mut self) {
        if !self.reaped {
            let pid = Pid::from_raw(self.facts.pid);
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}
