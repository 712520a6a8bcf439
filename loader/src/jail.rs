//! The loader's side: turns a [`LoaderInput`] into a jail around the current process, then execs
//! the entry.
//!
//! Runs in the freshly exec'd loader, pid 1 of the jail's pid namespace and uid 0 of its first
//! user namespace (full capabilities there, none on the host). [`Step::ORDER`] is the order of
//! the steps; the types enforce the end of it: [`exec_entry`] needs a [`SeccompInstalled`], which
//! only [`install_seccomp`] makes, from a [`LandlockEnforced`], which only [`enforce_landlock`]
//! makes, from a [`PrivilegesDropped`], which only [`drop_privileges`] makes.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Path, PathBuf};

use elastos_policy::{jail_paths, JailPlan, LandlockRule, PathAccess, JAIL_GID, JAIL_UID};
use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::handoff::{fds, LoaderInput, ResolvedMount};
use crate::sys;

/// Where the new root is assembled before pivot_root. Any directory works: every host source was
/// opened by the launcher before, so hiding the host's /tmp in this private mount namespace
/// hides nothing the jail needs.
const STAGING_ROOT: &str = "/tmp";

/// The steps of building a jail, in the order the loader performs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read the plan from the launcher.
    ReadInput,
    /// Make every mount recursively private, so nothing we mount propagates to the host. The
    /// loader aborts if this fails.
    PrivateMounts,
    /// New cgroup namespace, rooted at the app's cgroup (the launcher placed us there first).
    CgroupNamespace,
    /// Hostname of the UTS namespace.
    Hostname,
    /// Build the jail's filesystem on a tmpfs.
    Filesystem,
    /// pivot_root into it and detach the host's tree.
    PivotRoot,
    /// fork: the loader stays pid 1 of the jail as its init (the kernel shields a pid namespace's
    /// init from signals it has no handler for, which would break `raise()` and `abort()` in the
    /// app); the app continues as pid 2.
    Fork,
    /// rlimits of the app (threads, open files, no core dumps, memory when no cgroup could be
    /// used).
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
    /// The documented order.
    pub const ORDER: [Step; 14] = [
        Step::ReadInput,
        Step::PrivateMounts,
        Step::CgroupNamespace,
        Step::Hostname,
        Step::Filesystem,
        Step::PivotRoot,
        Step::Fork,
        Step::Limits,
        Step::UserNamespace,
        Step::Capabilities,
        Step::NoNewPrivs,
        Step::Landlock,
        Step::Seccomp,
        Step::Exec,
    ];

    /// The step's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Step::ReadInput => "read-input",
            Step::PrivateMounts => "private-mounts",
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
#[derive(Debug, thiserror::Error)]
#[error("jail step {step} failed: {what}: {source}", step = .step.name())]
pub struct JailError {
    /// Which step.
    pub step: Step,
    /// What it was doing (with the path involved).
    pub what: String,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

fn fail(step: Step, what: impl Into<String>) -> impl FnOnce(io::Error) -> JailError {
    move |source| JailError {
        step,
        what: what.into(),
        source,
    }
}

fn cpath(path: &Path) -> CString {
    // Jail paths come from our own plan and host paths from the filesystem: neither holds NUL.
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
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

/// The steps shared by init and the app: up to and including pivot_root.
pub fn build_jail(input: &LoaderInput) -> Result<(), JailError> {
    let root = c"/";
    sys::mount(None, root, None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(fail(Step::PrivateMounts, "making / recursively private"))?;
    sys::unshare(libc::CLONE_NEWCGROUP)
        .map_err(fail(Step::CgroupNamespace, "unshare(CLONE_NEWCGROUP)"))?;
    sys::sethostname(elastos_policy::JAIL_HOSTNAME).map_err(fail(Step::Hostname, "sethostname"))?;
    build_filesystem(&input.mounts)?;
    enter_root()
}

fn build_filesystem(mounts: &[ResolvedMount]) -> Result<(), JailError> {
    let step = Step::Filesystem;
    let staging = Path::new(STAGING_ROOT);
    sys::mount(
        Some(c"tmpfs"),
        &cpath(staging),
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(c"size=1m,mode=0755"),
    )
    .map_err(fail(step, "mounting the root tmpfs"))?;
    for entry in mounts {
        mount_entry(staging, entry)?;
    }
    // The host sources are O_PATH fds to host directories: a way back out. Close them all now.
    sys::close_fds_from(fds::FIRST_SOURCE).map_err(fail(step, "closing host source fds"))
}

fn in_staging(staging: &Path, jail: &Path) -> PathBuf {
    staging.join(jail.strip_prefix("/").unwrap_or(jail))
}

fn make_dir_all(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

fn mount_entry(staging: &Path, entry: &ResolvedMount) -> Result<(), JailError> {
    let step = Step::Filesystem;
    const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    match entry {
        ResolvedMount::Dir { jail, mode } => {
            let target = in_staging(staging, jail);
            make_dir_all(&target, *mode).map_err(fail(step, format!("creating {}", jail.display())))
        }
        ResolvedMount::Symlink { target, jail } => {
            let link = in_staging(staging, jail);
            if let Some(parent) = link.parent() {
                make_dir_all(parent, 0o755)
                    .map_err(fail(step, format!("creating parent of {}", jail.display())))?;
            }
            symlink(target, &link).map_err(fail(step, format!("symlink {}", jail.display())))
        }
        ResolvedMount::Tmpfs {
            jail,
            size_bytes,
            mode,
        } => {
            let target = in_staging(staging, jail);
            make_dir_all(&target, 0o755)
                .map_err(fail(step, format!("creating {}", jail.display())))?;
            let data = CString::new(format!("size={size_bytes},mode={mode:o}")).expect("no NUL");
            sys::mount(
                Some(c"tmpfs"),
                &cpath(&target),
                Some(c"tmpfs"),
                NOSUID_NODEV_NOEXEC,
                Some(&data),
            )
            .map_err(fail(step, format!("tmpfs on {}", jail.display())))
        }
        ResolvedMount::Proc { jail } => {
            let target = in_staging(staging, jail);
            make_dir_all(&target, 0o555)
                .map_err(fail(step, format!("creating {}", jail.display())))?;
            sys::mount(
                Some(c"proc"),
                &cpath(&target),
                Some(c"proc"),
                NOSUID_NODEV_NOEXEC,
                None,
            )
            .map_err(fail(step, format!("procfs on {}", jail.display())))
        }
        ResolvedMount::Bind {
            source,
            jail,
            is_dir,
            writable,
            device,
        } => {
            let target = in_staging(staging, jail);
            let what = format!("bind mount on {}", jail.display());
            if *is_dir {
                make_dir_all(&target, 0o755).map_err(fail(step, what.clone()))?;
            } else {
                if let Some(parent) = target.parent() {
                    make_dir_all(parent, 0o755).map_err(fail(step, what.clone()))?;
                }
                fs::File::create(&target).map_err(fail(step, what.clone()))?;
            }
            let fd = fds::FIRST_SOURCE + *source as i32;
            let source = CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
            let target = cpath(&target);
            sys::mount(
                Some(&source),
                &target,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(fail(step, what.clone()))?;
            let mut attrs = libc::MOUNT_ATTR_NOSUID;
            if *device {
                attrs |= libc::MOUNT_ATTR_NOEXEC;
            } else {
                attrs |= libc::MOUNT_ATTR_NODEV;
                if *writable {
                    // Written files never run: the home is noexec at the mount and in Landlock.
                    attrs |= libc::MOUNT_ATTR_NOEXEC;
                } else {
                    attrs |= libc::MOUNT_ATTR_RDONLY;
                }
            }
            sys::mount_setattr(&target, attrs, true).map_err(fail(step, what))
        }
    }
}

fn enter_root() -> Result<(), JailError> {
    let step = Step::PivotRoot;
    std::env::set_current_dir(STAGING_ROOT).map_err(fail(step, "chdir to the new root"))?;
    sys::pivot_root_here().map_err(fail(step, "pivot_root"))?;
    std::env::set_current_dir("/").map_err(fail(step, "chdir /"))?;
    // The root tmpfs itself (/, /etc, /home, /dev's directory) becomes read-only; the mounts on it
    // keep their own flags.
    sys::mount_setattr(
        c"/",
        libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        false,
    )
    .map_err(fail(step, "making the root read-only"))
}

/// The app's rlimits (see [`Step::Limits`]).
pub fn apply_rlimits(input: &LoaderInput) -> Result<(), JailError> {
    let step = Step::Limits;
    let limits = &input.plan.limits;
    let mut wanted = vec![
        (libc::RLIMIT_NPROC, limits.threads, "RLIMIT_NPROC (threads)"),
        (libc::RLIMIT_NOFILE, limits.open_files, "RLIMIT_NOFILE"),
        (libc::RLIMIT_CORE, 0, "RLIMIT_CORE"),
    ];
    if input.memory_rlimit {
        wanted.push((libc::RLIMIT_AS, limits.memory_bytes, "RLIMIT_AS (memory)"));
    }
    for (resource, value, name) in wanted {
        // Never above the current hard limit: raising it needs CAP_SYS_RESOURCE on the host.
        let current = sys::get_rlimit(resource).map_err(fail(step, name))?;
        sys::set_rlimit(resource, value.min(current.rlim_max)).map_err(fail(step, name))?;
    }
    Ok(())
}

/// The app's own user namespace (see [`Step::UserNamespace`]).
pub fn enter_app_user_namespace() -> Result<(), JailError> {
    let step = Step::UserNamespace;
    sys::unshare(libc::CLONE_NEWUSER).map_err(fail(step, "unshare(CLONE_NEWUSER)"))?;
    // We are uid/gid 0 of the parent namespace; map exactly that id to the app's.
    fs::write("/proc/self/uid_map", format!("{JAIL_UID} 0 1\n"))
        .map_err(fail(step, "writing /proc/self/uid_map"))?;
    fs::write("/proc/self/setgroups", "deny")
        .map_err(fail(step, "writing /proc/self/setgroups"))?;
    fs::write("/proc/self/gid_map", format!("{JAIL_GID} 0 1\n"))
        .map_err(fail(step, "writing /proc/self/gid_map"))
}

/// Drops every capability (bounding and ambient included) and sets no_new_privs.
pub fn drop_privileges() -> Result<PrivilegesDropped, JailError> {
    let step = Step::Capabilities;
    let caps_err = |what: &'static str| {
        move |e: caps::errors::CapsError| JailError {
            step,
            what: what.into(),
            source: io::Error::other(e.to_string()),
        }
    };
    caps::clear(None, caps::CapSet::Ambient).map_err(caps_err("clearing the ambient set"))?;
    caps::clear(None, caps::CapSet::Bounding).map_err(caps_err("clearing the bounding set"))?;
    caps::clear(None, caps::CapSet::Inheritable)
        .map_err(caps_err("clearing the inheritable set"))?;
    caps::clear(None, caps::CapSet::Effective).map_err(caps_err("clearing the effective set"))?;
    caps::clear(None, caps::CapSet::Permitted).map_err(caps_err("clearing the permitted set"))?;
    sys::set_no_new_privs().map_err(fail(Step::NoNewPrivs, "prctl(PR_SET_NO_NEW_PRIVS)"))?;
    Ok(PrivilegesDropped(()))
}

fn fs_access(access: PathAccess, abi: ABI, is_dir: bool) -> landlock::BitFlags<AccessFs> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let rights = match access {
        PathAccess::ReadOnly => read,
        PathAccess::ReadExecute => read | AccessFs::Execute,
        // Device nodes cannot be made here anyway (no CAP_MKNOD, nodev), but say so twice.
        PathAccess::ReadWrite => {
            AccessFs::from_all(abi)
                & !(AccessFs::Execute | AccessFs::MakeChar | AccessFs::MakeBlock)
        }
        PathAccess::ReadWriteFiles => {
            read | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev
        }
    };
    if is_dir {
        rights
    } else {
        rights & AccessFs::from_file(abi)
    }
}

/// Enforces the plan's Landlock rules, as far as the kernel's ABI allows.
pub fn enforce_landlock(
    plan: &JailPlan,
    _dropped: &PrivilegesDropped,
    allow_without: bool,
) -> Result<LandlockEnforced, JailError> {
    let step = Step::Landlock;
    let kernel_abi = sys::landlock_abi();
    if kernel_abi == 0 {
        return if allow_without {
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
                source: io::Error::from_raw_os_error(libc::ENOSYS),
            })
        };
    }
    let abi = ABI::V6;
    let ll = |what: &str| {
        let what = what.to_string();
        move |e: landlock::RulesetError| JailError {
            step,
            what: what.clone(),
            source: io::Error::other(e.to_string()),
        }
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(ll("handling filesystem rights"))?;
    if plan.landlock_net_deny_tcp {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(ll("handling TCP rights"))?;
    }
    if plan.landlock_scoped {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(ll("scoping signals and abstract sockets"))?;
    }
    let mut created = ruleset.create().map_err(ll("creating the ruleset"))?;
    for LandlockRule {
        path,
        access,
        optional,
        ..
    } in &plan.landlock
    {
        let metadata = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if *optional && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fail(step, format!("rule for {}", path.display()))(e)),
        };
        let fd = PathFd::new(path).map_err(|e| JailError {
            step,
            what: format!("opening {} for a rule", path.display()),
            source: io::Error::other(e.to_string()),
        })?;
        created = created
            .add_rule(PathBeneath::new(
                fd,
                fs_access(*access, abi, metadata.is_dir()),
            ))
            .map_err(ll(&format!("rule for {}", path.display())))?;
    }
    let status = created.restrict_self().map_err(ll("restrict_self"))?;
    let enforced_abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi as u32,
        _ => 0,
    };
    if status.ruleset == RulesetStatus::NotEnforced && !allow_without {
        return Err(JailError {
            step,
            what: "Landlock is built in but could not be enforced".into(),
            source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        });
    }
    Ok(LandlockEnforced {
        abi: enforced_abi.min(kernel_abi),
        fully: status.ruleset == RulesetStatus::FullyEnforced,
    })
}

/// Installs the seccomp allow-list. After this the loader can only do what the app can.
pub fn install_seccomp(
    plan: &JailPlan,
    _landlock: &LandlockEnforced,
    allow_without: bool,
) -> Result<SeccompInstalled, JailError> {
    let program: Vec<seccompiler::sock_filter> = plan
        .seccomp
        .bpf
        .iter()
        .map(|i| seccompiler::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    match seccompiler::apply_filter(&program) {
        Ok(()) => Ok(SeccompInstalled(())),
        Err(_) if allow_without => Ok(SeccompInstalled(())),
        Err(e) => Err(JailError {
            step: Step::Seccomp,
            what: format!("installing the seccomp filter (is CONFIG_SECCOMP_FILTER enabled?): {e}"),
            source: io::Error::last_os_error(),
        }),
    }
}

/// execve of the entry. Returns only on failure.
pub fn exec_entry(plan: &JailPlan, _seccomp: SeccompInstalled) -> io::Error {
    let env: Vec<CString> = plan
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")).expect("env without NUL"))
        .collect();
    let argv: Vec<CString> = plan
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_else(|_| CString::from(c"?")))
        .collect();
    sys::execve(&cpath(&plan.entry), &argv, &env)
}

/// chdir to the app's home (before seccomp; chdir stays allowed, but this is the app's start).
pub fn enter_home() -> Result<(), JailError> {
    std::env::set_current_dir(jail_paths::HOME).map_err(fail(Step::Exec, "chdir to the home"))
}
