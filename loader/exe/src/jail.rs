//! The jail steps: turn a [`LoaderInput`] into a jail around the current process, then exec the
//! entry.
//!
//! Runs in the freshly exec'd loader, pid 1 of the jail's pid namespace and uid 0 of its first
//! user namespace (full capabilities there, none on the host). [`Step`] lists the steps in the
//! order the loader performs them; the types enforce the end of it: [`exec_entry`] needs a [`SeccompInstalled`], which
//! only [`install_seccomp`] makes, from a [`LandlockEnforced`], which only [`enforce_landlock`]
//! makes, from a [`PrivilegesDropped`], which only [`drop_privileges`] makes.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use linux_raw_sys::general as k;
use linux_raw_sys::landlock as ll;

use crate::sys::{self, CPath, Errno};
use elastos_handoff::{
    fds, kernel_counters, landlock_fs, tmpfs_inodes, KernelFs, LoaderInput, ResolvedMount,
};

/// Where the new root is assembled before pivot_root. Any directory works: every host source was
/// opened by the launcher's child before, so hiding the host's /tmp in this private mount
/// namespace hides nothing the jail needs.
const STAGING_ROOT: &[u8] = b"/tmp";

use elastos_handoff::landlock_fs::ABI_WANTED as LANDLOCK_ABI_WANTED;

/// The steps of building a jail, declared in the order the loader performs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read the plan from the launcher.
    ReadInput,
    /// Make every mount recursively private, so nothing we mount propagates to the host. The
    /// loader aborts if this fails.
    PrivateMounts,
    /// Hostname of the UTS namespace.
    Hostname,
    /// Build the jail's filesystem on a tmpfs.
    Filesystem,
    /// Wait until the launcher has made the app's cgroup (EOF on the input pipe; it does so
    /// while we build the filesystem), then join it (cgroup v1: "0" to its `tasks` files).
    JoinCgroup,
    /// pivot_root into it and detach the host's tree.
    PivotRoot,
    /// A new cgroup namespace, rooted at the app's cgroup.
    CgroupNamespace,
    /// fork: the loader stays pid 1 of the jail as its init (the kernel shields a pid namespace's
    /// init from signals it has no handler for, which would break `raise()` and `abort()` in the
    /// app); the app continues as pid 2.
    Fork,
    /// rlimits of the app (threads, open files, no core dumps, pending signals, no message
    /// queues, memory when no cgroup could be used) and the `user.max_*` limits of the jail's
    /// user namespace (`elastos_handoff::kernel_counters`).
    Limits,
    /// A second, nested user namespace in which the app is uid 1000: capabilities held there
    /// own nothing (the mount, pid and net namespaces belong to the first one).
    UserNamespace,
    /// Drop every capability, bounding and ambient sets included.
    Capabilities,
    /// PR_SET_NO_NEW_PRIVS.
    NoNewPrivs,
    /// Landlock: filesystem, TCP and scope rules.
    Landlock,
    /// seccomp-bpf allow-list, last: it also forbids the syscalls the steps above needed.
    Seccomp,
    /// execve of the entry.
    Exec,
}

impl Step {
    /// The step's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Step::ReadInput => "read-input",
            Step::PrivateMounts => "private-mounts",
            Step::JoinCgroup => "join-cgroup",
            Step::CgroupNamespace => "cgroup-namespace",
            Step::Hostname => "hostname",
            Step::Filesystem => "filesystem",
            Step::PivotRoot => "pivot-root",
            Step::Limits => "limits",
            Step::Fork => "fork",
            Step::UserNamespace => "user-namespace",
            Step::Capabilities => "capabilities",
            Step::NoNewPrivs => "no-new-privs",
            Step::Landlock => "landlock",
            Step::Seccomp => "seccomp",
            Step::Exec => "exec",
        }
    }
}

/// A jail step failed.
#[derive(Debug)]
pub struct JailError {
    /// Which step.
    pub step: Step,
    /// What it was doing (with the path involved).
    pub what: String,
    /// The kernel's answer, when the failure came from a syscall.
    pub errno: Option<Errno>,
}

fn fail(step: Step, what: impl ToString) -> impl FnOnce(Errno) -> JailError {
    move |errno| JailError {
        step,
        what: what.to_string(),
        errno: Some(errno),
    }
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Proof that capabilities are gone and no_new_privs is set.
pub struct PrivilegesDropped(());
/// Proof that Landlock was enforced (or explicitly, loudly waived).
pub struct LandlockEnforced {
    /// The ABI enforced (0: waived).
    pub abi: u32,
    /// Whether every rule we asked for is enforced at that ABI.
    pub fully: bool,
}
/// Proof that the seccomp filter is installed (or explicitly, loudly waived).
pub struct SeccompInstalled(());

/// The largest input record the loader accepts (a plan is a few KiB).
const MAX_INPUT_BYTES: usize = 16 << 20;

/// Reads and decodes the input record on [`fds::INPUT`] (its length, then the record); the pipe
/// stays open until the launcher has made the cgroup (see [`Step::JoinCgroup`]).
pub fn read_input() -> Result<LoaderInput, JailError> {
    let step = Step::ReadInput;
    let mut len = [0u8; 4];
    sys::read_exact(fds::INPUT, &mut len).map_err(fail(step, "reading the plan's length"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_INPUT_BYTES {
        return Err(JailError {
            step,
            what: format!("the plan is {len} bytes, more than the {MAX_INPUT_BYTES} accepted"),
            errno: None,
        });
    }
    let mut bytes = alloc::vec![0u8; len];
    sys::read_exact(fds::INPUT, &mut bytes).map_err(fail(step, "reading the plan"))?;
    LoaderInput::decode(&bytes).map_err(|e| JailError {
        step,
        what: format!("decoding the plan: {e}"),
        errno: None,
    })
}

/// The steps shared by init and the app: up to and including the cgroup namespace.
pub fn build_jail(input: &LoaderInput) -> Result<(), JailError> {
    sys::mount(
        None,
        &CPath::new(b"/"),
        None,
        k::MS_REC | k::MS_PRIVATE,
        None,
    )
    .map_err(fail(Step::PrivateMounts, "making / recursively private"))?;
    sys::sethostname(&input.hostname).map_err(fail(Step::Hostname, "sethostname"))?;
    build_filesystem(&input.mounts)?;
    join_cgroup(&input.cgroup_tasks)?;
    enter_root()?;
    sys::unshare(k::CLONE_NEWCGROUP)
        .map_err(fail(Step::CgroupNamespace, "unshare(CLONE_NEWCGROUP)"))
}

/// Waits for EOF on the input pipe (the launcher has made the app's cgroup), then joins it.
pub fn join_cgroup(tasks_files: &[Vec<u8>]) -> Result<(), JailError> {
    let step = Step::JoinCgroup;
    let mut more = [0u8; 1];
    match sys::read(fds::INPUT, &mut more) {
        Ok(0) => {}
        Ok(_) => {
            return Err(JailError {
                step,
                what: "the launcher sent more than the plan".into(),
                errno: None,
            })
        }
        Err(e) => return Err(fail(step, "waiting for the launcher's cgroup")(e)),
    }
    sys::close(fds::INPUT);
    for tasks in tasks_files {
        sys::write_file(&CPath::new(tasks), b"0").map_err(fail(
            step,
            format!("joining the cgroup through {}", show(tasks)),
        ))?;
    }
    Ok(())
}

/// The root tmpfs holds only mount points, symlinks and /etc's two files.
const ROOT_TMPFS_BYTES: u64 = 1 << 20;

/// tmpfs mount options: its size, its inode limit (see [`tmpfs_inodes`] for why a size alone
/// does not bound it), the mode of its root.
fn tmpfs_options(size_bytes: u64, mode: u32) -> String {
    format!(
        "size={size_bytes},nr_inodes={},mode={mode:o}",
        tmpfs_inodes(size_bytes)
    )
}

fn build_filesystem(mounts: &[ResolvedMount]) -> Result<(), JailError> {
    let step = Step::Filesystem;
    sys::mount(
        Some(&CPath::new(b"tmpfs")),
        &CPath::new(STAGING_ROOT),
        Some(&CPath::new(b"tmpfs")),
        k::MS_NOSUID | k::MS_NODEV,
        Some(&CPath::new(
            tmpfs_options(ROOT_TMPFS_BYTES, 0o755).as_bytes(),
        )),
    )
    .map_err(fail(step, "mounting the root tmpfs"))?;
    for entry in mounts {
        mount_entry(entry)?;
    }
    // The host sources are O_PATH fds to host directories: a way back out. Close them all now.
    sys::close_from(fds::FIRST_SOURCE).map_err(fail(step, "closing host source fds"))
}

/// `jail` (absolute) under the staging root.
fn in_staging(jail: &[u8]) -> Vec<u8> {
    let mut path = STAGING_ROOT.to_vec();
    if !jail.starts_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(jail);
    path
}

/// mkdir -p: every missing component of `path`, the last with `mode`, the others 0755.
fn make_dir_all(path: &[u8], mode: u32) -> Result<(), Errno> {
    let ends = path
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, b)| **b == b'/')
        .map(|(i, _)| i)
        .chain([path.len()]);
    for end in ends {
        let last = end == path.len();
        match sys::mkdir(&CPath::new(&path[..end]), if last { mode } else { 0o755 }) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(0) | None => b"/",
        Some(i) => &path[..i],
    }
}

fn mount_entry(entry: &ResolvedMount) -> Result<(), JailError> {
    let step = Step::Filesystem;
    let no_suid_dev_exec = k::MS_NOSUID | k::MS_NODEV | k::MS_NOEXEC;
    match entry {
        ResolvedMount::Dir { jail, mode } => make_dir_all(&in_staging(jail), *mode)
            .map_err(fail(step, format!("creating {}", show(jail)))),
        ResolvedMount::Symlink { target, jail } => {
            let link = in_staging(jail);
            make_dir_all(parent(&link), 0o755)
                .map_err(fail(step, format!("creating parent of {}", show(jail))))?;
            sys::symlink(&CPath::new(target), &CPath::new(&link))
                .map_err(fail(step, format!("symlink {}", show(jail))))
        }
        ResolvedMount::Tmpfs {
            jail,
            size_bytes,
            mode,
        } => {
            let target = in_staging(jail);
            make_dir_all(&target, 0o755).map_err(fail(step, format!("creating {}", show(jail))))?;
            let data = tmpfs_options(*size_bytes, *mode);
            sys::mount(
                Some(&CPath::new(b"tmpfs")),
                &CPath::new(&target),
                Some(&CPath::new(b"tmpfs")),
                no_suid_dev_exec,
                Some(&CPath::new(data.as_bytes())),
            )
            .map_err(fail(step, format!("tmpfs on {}", show(jail))))
        }
        ResolvedMount::Proc { jail } => {
            let target = in_staging(jail);
            make_dir_all(&target, 0o555).map_err(fail(step, format!("creating {}", show(jail))))?;
            sys::mount(
                Some(&CPath::new(b"proc")),
                &CPath::new(&target),
                Some(&CPath::new(b"proc")),
                no_suid_dev_exec,
                None,
            )
            .map_err(fail(step, format!("procfs on {}", show(jail))))
        }
        ResolvedMount::Kernel { fs, source, jail } => {
            let target = in_staging(jail);
            make_dir_all(&target, 0o755).map_err(fail(step, format!("creating {}", show(jail))))?;
            let (fstype, flags, data): (&[u8], _, _) = match fs {
                KernelFs::Tmpfs { size_bytes, mode } => (
                    b"tmpfs",
                    no_suid_dev_exec,
                    Some(tmpfs_options(*size_bytes, *mode)),
                ),
                // A private instance: none of the host's terminals; nodev keeps its ptmx shut.
                KernelFs::Devpts { max } => (
                    b"devpts",
                    no_suid_dev_exec,
                    Some(format!("newinstance,ptmxmode=0666,mode=0620,max={max}")),
                ),
                KernelFs::Mqueue => (b"mqueue", no_suid_dev_exec, None),
                // Read-only from the start: the kernel lets a user namespace mount sysfs only
                // as restricted as the host's visible one, and the jail never writes it.
                KernelFs::Sysfs => (b"sysfs", no_suid_dev_exec | k::MS_RDONLY, None),
            };
            let data = data.map(|d| CPath::new(d.as_bytes()));
            sys::mount(
                Some(&CPath::new(source)),
                &CPath::new(&target),
                Some(&CPath::new(fstype)),
                flags,
                data.as_ref(),
            )
            .map_err(fail(step, format!("{} on {}", show(fstype), show(jail))))
        }
        ResolvedMount::Bind {
            source,
            jail,
            is_dir,
            writable,
            device,
        } => {
            let target = in_staging(jail);
            let what = format!("bind mount on {}", show(jail));
            if *is_dir {
                make_dir_all(&target, 0o755).map_err(fail(step, &what))?;
            } else {
                make_dir_all(parent(&target), 0o755).map_err(fail(step, &what))?;
                // A file that exists is the mount point as it is (a masked path: in the
                // read-only image, or in /proc, where neither could be opened for writing).
                let file = sys::open(&CPath::new(&target), k::O_PATH | k::O_CLOEXEC, 0)
                    .or_else(|_| {
                        sys::open(
                            &CPath::new(&target),
                            k::O_WRONLY | k::O_CREAT | k::O_CLOEXEC,
                            0o644,
                        )
                    })
                    .map_err(fail(step, &what))?;
                sys::close(file);
            }
            let fd = fds::FIRST_SOURCE + *source as i32;
            let source = CPath::new(format!("/proc/self/fd/{fd}").as_bytes());
            let target = CPath::new(&target);
            sys::mount(Some(&source), &target, None, k::MS_BIND | k::MS_REC, None)
                .map_err(fail(step, &what))?;
            let mut attrs = k::MOUNT_ATTR_NOSUID;
            if *device {
                attrs |= k::MOUNT_ATTR_NOEXEC;
            } else {
                attrs |= k::MOUNT_ATTR_NODEV;
                if *writable {
                    // Written files never run: the home is noexec at the mount and in Landlock.
                    attrs |= k::MOUNT_ATTR_NOEXEC;
                } else {
                    attrs |= k::MOUNT_ATTR_RDONLY;
                }
            }
            sys::mount_setattr(&target, attrs, true).map_err(fail(step, what))
        }
    }
}

fn enter_root() -> Result<(), JailError> {
    let step = Step::PivotRoot;
    sys::chdir(&CPath::new(STAGING_ROOT)).map_err(fail(step, "chdir to the new root"))?;
    sys::pivot_root_here().map_err(fail(step, "pivot_root"))?;
    sys::chdir(&CPath::new(b"/")).map_err(fail(step, "chdir /"))?;
    // The root tmpfs itself (/, /etc, /home, /dev's directory) becomes read-only; the mounts on it
    // keep their own flags.
    sys::mount_setattr(
        &CPath::new(b"/"),
        k::MOUNT_ATTR_RDONLY | k::MOUNT_ATTR_NOSUID | k::MOUNT_ATTR_NODEV,
        false,
    )
    .map_err(fail(step, "making the root read-only"))
}

/// The app's rlimits (see [`Step::Limits`]).
pub fn apply_rlimits(input: &LoaderInput) -> Result<(), JailError> {
    let step = Step::Limits;
    let mut wanted = Vec::with_capacity(4);
    wanted.push((k::RLIMIT_NPROC, input.threads, "RLIMIT_NPROC (threads)"));
    wanted.push((k::RLIMIT_NOFILE, input.open_files, "RLIMIT_NOFILE"));
    wanted.push((k::RLIMIT_CORE, 0, "RLIMIT_CORE"));
    if input.memory_rlimit {
        wanted.push((k::RLIMIT_AS, input.memory_bytes, "RLIMIT_AS (memory)"));
    }
    wanted.push((
        k::RLIMIT_SIGPENDING,
        kernel_counters::PENDING_SIGNALS,
        "RLIMIT_SIGPENDING",
    ));
    wanted.push((
        k::RLIMIT_MSGQUEUE,
        kernel_counters::MESSAGE_QUEUE_BYTES,
        "RLIMIT_MSGQUEUE",
    ));
    for (resource, value, name) in wanted {
        // Never above the current hard limit: raising it needs CAP_SYS_RESOURCE on the host.
        let (_, hard) = sys::rlimit(resource, None).map_err(fail(step, name))?;
        sys::rlimit(resource, Some(value.min(hard))).map_err(fail(step, name))?;
    }
    // The hard limit only ever lower than what the jail left: a spec narrows, never widens.
    // The soft one is the spec's below that (the process could raise it that far itself).
    for limit in &input.extra_rlimits {
        let what = || format!("rlimit {} of the spec", limit.resource);
        let (_, hard) = sys::rlimits(limit.resource, None).map_err(fail(step, what()))?;
        let hard = hard.min(limit.hard);
        sys::rlimits(limit.resource, Some((limit.soft.min(hard), hard)))
            .map_err(fail(step, what()))?;
    }
    limit_user_namespace_counters()
}

/// Writes the `user.max_*` limits of the jail's outer user namespace (see
/// [`kernel_counters`]): the app's namespace, nested in it, is charged to this level for every
/// inotify instance, watch and namespace. Called as uid 0 of that namespace, before the nested
/// one exists (`max_user_namespaces` leaves room for exactly it).
fn limit_user_namespace_counters() -> Result<(), JailError> {
    for limit in kernel_counters::USER_NAMESPACE_LIMITS {
        let path = format!("/proc/sys/user/{}", limit.name);
        match sys::write_file(
            &CPath::new(path.as_bytes()),
            format!("{}", limit.value).as_bytes(),
        ) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(fail(Step::Limits, format!("writing {path}"))(e)),
        }
    }
    Ok(())
}

/// The app's own user namespace (see [`Step::UserNamespace`]).
pub fn enter_app_user_namespace(input: &LoaderInput) -> Result<(), JailError> {
    let step = Step::UserNamespace;
    sys::unshare(k::CLONE_NEWUSER).map_err(fail(step, "unshare(CLONE_NEWUSER)"))?;
    // We are uid/gid 0 of the parent namespace; map exactly that id to the app's.
    sys::write_file(
        &CPath::new(b"/proc/self/uid_map"),
        format!("{} 0 1\n", input.jail_uid).as_bytes(),
    )
    .map_err(fail(step, "writing /proc/self/uid_map"))?;
    sys::write_file(&CPath::new(b"/proc/self/setgroups"), b"deny")
        .map_err(fail(step, "writing /proc/self/setgroups"))?;
    sys::write_file(
        &CPath::new(b"/proc/self/gid_map"),
        format!("{} 0 1\n", input.jail_gid).as_bytes(),
    )
    .map_err(fail(step, "writing /proc/self/gid_map"))
}

/// Joins the running app's user namespace (`namespace`, an fd of it; closed after), in which
/// this process then is the app's uid and gid: the launcher made it uid 0 of the jail's user
/// namespace, the id the app's maps to them. The app's namespace is nested in the jail's, whose
/// `max_user_namespaces` of 1 leaves no room for another.
pub fn join_app_user_namespace(namespace: i32) -> Result<(), JailError> {
    let joined = sys::setns(namespace, k::CLONE_NEWUSER);
    sys::close(namespace);
    joined.map_err(fail(
        Step::UserNamespace,
        "setns(CLONE_NEWUSER) into the app's",
    ))
}

/// Drops every capability (bounding and ambient included) and sets no_new_privs.
pub fn drop_privileges() -> Result<PrivilegesDropped, JailError> {
    sys::drop_all_capabilities().map_err(fail(Step::Capabilities, "dropping every capability"))?;
    sys::prctl(linux_raw_sys::prctl::PR_SET_NO_NEW_PRIVS, 1)
        .map_err(fail(Step::NoNewPrivs, "prctl(PR_SET_NO_NEW_PRIVS)"))?;
    Ok(PrivilegesDropped(()))
}

/// Enforces the input's Landlock rules, as far as the kernel's ABI allows.
pub fn enforce_landlock(
    input: &LoaderInput,
    _dropped: &PrivilegesDropped,
) -> Result<LandlockEnforced, JailError> {
    let step = Step::Landlock;
    let waive = input.allow_without_kernel_sandbox;
    let kernel_abi = sys::landlock_abi();
    if kernel_abi == 0 {
        return if waive {
            Ok(LandlockEnforced {
                abi: 0,
                fully: false,
            })
        } else {
            Err(JailError {
                step,
                what: "this kernel has no Landlock (CONFIG_SECURITY_LANDLOCK and lsm=landlock \
                       are needed)"
                    .into(),
                errno: Some(Errno(linux_raw_sys::errno::ENOSYS as i32)),
            })
        };
    }
    let abi = kernel_abi.min(LANDLOCK_ABI_WANTED);
    let handled = landlock_fs::all_at(abi);
    let attr = ll::landlock_ruleset_attr {
        handled_access_fs: handled,
        handled_access_net: if input.landlock_net_deny_tcp && abi >= 4 {
            u64::from(ll::LANDLOCK_ACCESS_NET_BIND_TCP | ll::LANDLOCK_ACCESS_NET_CONNECT_TCP)
        } else {
            0
        },
        scoped: if input.landlock_scoped && abi >= 6 {
            u64::from(ll::LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | ll::LANDLOCK_SCOPE_SIGNAL)
        } else {
            0
        },
    };
    let ruleset =
        sys::landlock_create_ruleset(&attr).map_err(fail(step, "creating the ruleset"))?;
    for rule in &input.landlock {
        let what = || format!("rule for {}", show(&rule.path));
        let fd = match sys::open(&CPath::new(&rule.path), k::O_PATH | k::O_CLOEXEC, 0) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if rule.optional => continue,
            Err(e) => return Err(fail(step, what())(e)),
        };
        let added =
            sys::is_dir(fd).and_then(
                |is_dir| match rule.access.landlock_rights(handled, is_dir) {
                    0 => Ok(()),
                    rights => sys::landlock_add_path_rule(ruleset, fd, rights),
                },
            );
        sys::close(fd);
        added.map_err(fail(step, what()))?;
    }
    let restricted = sys::landlock_restrict_self(ruleset);
    sys::close(ruleset);
    restricted.map_err(fail(step, "restrict_self"))?;
    Ok(LandlockEnforced {
        abi,
        fully: kernel_abi >= LANDLOCK_ABI_WANTED,
    })
}

/// Installs the seccomp allow-list. After this the loader can only do what the app can.
pub fn install_seccomp(
    input: &LoaderInput,
    _landlock: &LandlockEnforced,
) -> Result<SeccompInstalled, JailError> {
    match sys::seccomp_filter(&input.seccomp) {
        Ok(()) => Ok(SeccompInstalled(())),
        Err(_) if input.allow_without_kernel_sandbox => Ok(SeccompInstalled(())),
        Err(e) => Err(fail(
            Step::Seccomp,
            "installing the seccomp filter (is CONFIG_SECCOMP_FILTER enabled?)",
        )(e)),
    }
}

/// execve of the entry. Returns only on failure.
pub fn exec_entry(input: &LoaderInput, _seccomp: SeccompInstalled) -> Errno {
    let strings = |list: &[Vec<u8>]| list.iter().map(|s| CPath::new(s)).collect::<Vec<_>>();
    sys::execve(
        &CPath::new(&input.entry),
        &strings(&input.argv),
        &strings(&input.env),
    )
}

/// chdir to the app's home (before seccomp; chdir stays allowed, but this is the app's start).
pub fn enter_home(input: &LoaderInput) -> Result<(), JailError> {
    sys::chdir(&CPath::new(&input.home)).map_err(fail(Step::Exec, "chdir to the home"))
}
