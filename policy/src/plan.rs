//! The jail plan: everything the loader needs to build one app's jail, as plain data.
//!
//! The launcher builds a [`JailPlan`] from a verified manifest, `elastos policy show` prints it,
//! and the loader executes it step by step. Keeping it data (serde) means the whole jail can be
//! reviewed and snapshot-tested without a kernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::linkage::EntryLinkage;
use crate::manifest::Manifest;
use crate::seccomp::SeccompProgram;
use crate::PolicyError;

/// Where things live inside every jail.
pub mod jail_paths {
    /// The unpacked bundle, mounted read-only.
    pub const APP: &str = "/app";
    /// The app's persistent home, mounted read-write; `HOME` points here.
    pub const HOME: &str = "/home/app";
    /// Private scratch space.
    pub const TMP: &str = "/tmp";
    /// POSIX shared memory (shm_open) for the app alone.
    pub const SHM: &str = "/dev/shm";
}

/// The uid and gid the app runs as inside its user namespace (never 0).
pub const JAIL_UID: u32 = 1000;
/// See [`JAIL_UID`].
pub const JAIL_GID: u32 = 1000;
/// Hostname inside the UTS namespace.
pub const JAIL_HOSTNAME: &str = "elastos";
/// The fd of the app's IPC socket (`ELASTOS_IPC_FD`).
pub const IPC_FD: i32 = 3;

/// Who the app is inside its jail: the hostname of its UTS namespace, its uid and gid in its own
/// user namespace. A bundle's app is elastos's [`JAIL_UID`], [`JAIL_GID`] and [`JAIL_HOSTNAME`];
/// an OCI container takes its spec's `process.user` and `hostname`. No value grants anything:
/// the ids are mapped to the jail's one host uid and gid whatever their number, and the app
/// holds no capability whatever its uid (0 included: its bounding set is empty, so even an exec
/// as uid 0 gains none, and no_new_privs is set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    /// The UTS namespace's hostname.
    pub hostname: String,
    /// The app's uid in its user namespace.
    pub uid: u32,
    /// The app's gid in its user namespace.
    pub gid: u32,
}

impl Default for Guest {
    fn default() -> Guest {
        Guest {
            hostname: JAIL_HOSTNAME.to_owned(),
            uid: JAIL_UID,
            gid: JAIL_GID,
        }
    }
}

/// The complete, reviewable description of one jail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailPlan {
    /// The app's UUID (from the verified manifest).
    pub app_id: Uuid,
    /// The app's human name (from the verified manifest).
    pub app_name: String,
    /// The jail's filesystem, built in this order on an empty tmpfs root.
    pub mounts: Vec<MountEntry>,
    /// Landlock path rules, in jail paths (after pivot_root).
    pub landlock: Vec<LandlockRule>,
    /// Landlock scopes and network restrictions requested (applied as far as the kernel's ABI allows).
    pub landlock_net_deny_tcp: bool,
    /// Abstract-unix-socket and signal scoping (Landlock ABI >= 6).
    pub landlock_scoped: bool,
    /// The seccomp allow-list table and its compiled BPF.
    pub seccomp: SeccompProgram,
    /// Resource limits from the manifest.
    pub limits: ResourceLimits,
    /// `home.quota` of the manifest, in bytes: the home is an image of that size (root only).
    pub home_quota: Option<u64>,
    /// Environment of the entry, already scrubbed and complete (name, value).
    pub env: Vec<(String, String)>,
    /// Absolute jail path of the entry executable (under [`jail_paths::APP`]).
    pub entry: PathBuf,
    /// How the entry is linked: whether the jail lets the app execute the dynamic loader.
    pub entry_linkage: EntryLinkage,
    /// argv of the entry; `argv[0]` is the entry's file name.
    pub argv: Vec<String>,
    /// The directory the entry starts in: the home for a bundle, the spec's `process.cwd` for an
    /// OCI container (see [`crate::oci_plan`]).
    #[serde(default = "default_workdir")]
    pub workdir: PathBuf,
    /// Who the app is inside the jail (see [`Guest`]).
    #[serde(default)]
    pub guest: Guest,
    /// rlimits beyond the jail's own (an OCI spec's `process.rlimits`): the loader applies each
    /// only where it is lower than what the jail leaves.
    #[serde(default)]
    pub extra_rlimits: Vec<Rlimit>,
}

/// One rlimit of [`JailPlan::extra_rlimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_*` as Linux numbers them (RLIMIT_CPU 0 to RLIMIT_RTTIME 15).
    pub resource: u32,
    /// The soft limit.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

fn default_workdir() -> PathBuf {
    jail_paths::HOME.into()
}

/// One step of building the jail's filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MountEntry {
    /// Mirror a host path at the same place: a directory or file is bind-mounted (read-only unless
    /// `writable`), a symlink is recreated as the same symlink, an absent path is skipped when
    /// `optional`.
    Host {
        host: PathBuf,
        jail: PathBuf,
        writable: bool,
        optional: bool,
    },
    /// Bind-mount a host path at a different jail path (the bundle, the home).
    Bind {
        host: PathBuf,
        jail: PathBuf,
        writable: bool,
    },
    /// Bind-mount a host device node (read-write, nosuid, noexec).
    Device { host: PathBuf, jail: PathBuf },
    /// A fresh tmpfs (nosuid, nodev, noexec).
    Tmpfs {
        jail: PathBuf,
        size_bytes: u64,
        mode: u32,
    },
    /// An empty directory created in the root tmpfs.
    Dir { jail: PathBuf, mode: u32 },
    /// A symlink created in the jail.
    Symlink { target: PathBuf, jail: PathBuf },
    /// A procfs instance of the jail's own pid namespace (nosuid, nodev, noexec).
    Proc { jail: PathBuf },
    /// A filesystem of the jail's own kernel namespaces that an OCI spec asks for by name
    /// (see [`KernelFs`]); `source` is only the name `/proc/self/mountinfo` shows (the spec's).
    Kernel {
        fs: KernelFs,
        source: String,
        jail: PathBuf,
    },
}

/// The kernel filesystems a container's spec may ask for: each is the jail's own instance,
/// nosuid, nodev and noexec, never one of the host's (see docs/security.md, "Containers run by
/// an engine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KernelFs {
    /// A tmpfs bounded like the jail's own (size and inodes): the spec's `/dev/shm`, which
    /// mountinfo shows under the spec's source name.
    Tmpfs { size_bytes: u64, mode: u32 },
    /// A new devpts instance (`newinstance`, `ptmxmode=0666`, at most
    /// [`DEVPTS_MAX_PTYS`] terminals): none of the host's terminals is in it, and `nodev` keeps
    /// its `ptmx` from being opened (the jail gives no terminal device; a container's terminal
    /// is the runtime's).
    Devpts,
    /// The POSIX message queues of the jail's own IPC namespace.
    Mqueue,
    /// sysfs, read-only, as the jail's network namespace shows it (only its own `lo` under
    /// `/sys/class/net`); Landlock lets the app read only [`SYSFS_READABLE`] of it.
    Sysfs,
}

/// The most terminals a container's devpts instance may hold (its `max=`): none can be opened
/// (`nodev`), so this only bounds what a mistake could cost.
pub const DEVPTS_MAX_PTYS: u32 = 16;

/// What of a container's sysfs the app may read (Landlock, read-only): the CPUs, which glibc's
/// `sysconf(_SC_NPROCESSORS_ONLN)` and runtimes sizing their thread pools read. The rest (the
/// host's firmware and DMI tables, its devices, loaded modules, kernel settings, power
/// counters) is denied: a deny-list of masks like runc's would miss what a newer kernel adds.
pub const SYSFS_READABLE: &[&str] = &["/sys/devices/system/cpu"];

/// Landlock rights on one jail path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathAccess {
    /// Read files and list directories.
    ReadOnly,
    /// Read files, list directories, and execute files (the bundle, the dynamic loader).
    ReadExecute,
    /// Every filesystem right except execute (the home, /tmp): written files can never run.
    ReadWrite,
    /// Read and write existing files only, no create/remove (device nodes).
    ReadWriteFiles,
}

/// One Landlock rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockRule {
    /// Jail path (after pivot_root). Missing optional paths are skipped by the loader.
    pub path: PathBuf,
    /// The rights granted beneath `path`.
    pub access: PathAccess,
    /// Skip silently when the path does not exist in the jail (e.g. /lib32).
    pub optional: bool,
    /// Why this rule exists, printed by `elastos policy show`.
    pub reason: String,
}

/// Limits taken from the manifest's `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// Memory for the whole app, in bytes.
    pub memory_bytes: u64,
    /// Maximum number of threads (tasks) in the app, including the main thread.
    pub threads: u64,
    /// Maximum number of open file descriptors.
    pub open_files: u64,
    /// CPU time per unit of wall-clock time, in thousandths of a CPU (1500: one and a half
    /// CPUs): cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`, over [`CPU_PERIOD_US`].
    pub cpu_millis: u64,
}

/// The period of the app's CPU quota, in microseconds (the kernel's default CFS period): its
/// quota is `cpu_millis * CPU_PERIOD_US / 1000` of CPU time in every such period.
pub const CPU_PERIOD_US: u64 = 100_000;

impl ResourceLimits {
    /// The CPU time the app may use in each [`CPU_PERIOD_US`], in microseconds.
    pub fn cpu_quota_us(&self) -> u64 {
        self.cpu_millis * CPU_PERIOD_US / 1000
    }
}

/// The parts of the launching user's environment that carry into the jail; everything else of
/// the host environment is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostEnv {
    /// `LANG`, so messages use the user's language (`C.UTF-8` when unset or empty).
    pub lang: Option<String>,
    /// `TERM`, so terminal programs draw correctly (left unset when unset or empty).
    pub term: Option<String>,
}

/// Host directories mirrored read-only at the same place: the system's programs and libraries.
/// Merged-/usr hosts have symlinks for some of them, which the loader recreates.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin",
];
/// Of the host's /etc, only what the dynamic loader and libc's time functions read.
const ETC_FILES: &[&str] = &["/etc/ld.so.cache", "/etc/localtime"];
/// Device nodes that hold no state and reach no hardware.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];
/// The dynamic loader: the kernel executes it for every dynamically linked program, so Landlock
/// must allow executing it.
#[cfg(target_arch = "x86_64")]
const DYNAMIC_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
#[cfg(target_arch = "aarch64")]
const DYNAMIC_LOADER: &str = "/lib/ld-linux-aarch64.so.1";

/// `PATH` in the jail. Only /app is executable, the rest is for scripts that look things up.
const JAIL_PATH_ENV: &str = "/app/bin:/usr/local/bin:/usr/bin:/bin";
const DEFAULT_LANG: &str = "C.UTF-8";

const MIB: u64 = 1 << 20;
/// Upper bound of /tmp. tmpfs pages are memory that RLIMIT_AS does not count (a memory cgroup
/// does), so /tmp gets its own bound: the app's memory limit, at most 256 MiB.
const TMP_MAX_BYTES: u64 = 256 * MIB;
/// Upper bound of /dev/shm, like /tmp but smaller: shared memory segments are rarely large.
const SHM_MAX_BYTES: u64 = 64 * MIB;
/// /dev holds only mount points and symlinks.
const DEV_BYTES: u64 = 64 * 1024;

impl JailPlan {
    /// Plans the jail for a verified manifest.
    ///
    /// `bundle_root` is the host directory of the unpacked bundle (mounted read-only at /app),
    /// `home` the app's persistent host directory (read-write at /home/app); both must be
    /// absolute. `args` follow the entry's file name in argv. `entry_linkage` is read by the
    /// host from the entry's first bytes ([`EntryLinkage::from_elf_prefix`]).
    pub fn build(
        manifest: &Manifest,
        bundle_root: &Path,
        home: &Path,
        args: &[String],
        host: &HostEnv,
        entry_linkage: EntryLinkage,
    ) -> Result<JailPlan, PolicyError> {
        for (what, path) in [("bundle", bundle_root), ("home", home)] {
            if !path.is_absolute() {
                return Err(PolicyError::NotAbsolute {
                    what,
                    path: path.to_owned(),
                });
            }
        }
        let limits = manifest.limits();
        let entry = Path::new(jail_paths::APP).join(manifest.entry());
        let entry_name = entry
            .file_name()
            .expect("Manifest::from_toml rejects entries without a file name")
            .to_string_lossy()
            .into_owned();
        Ok(JailPlan {
            app_id: manifest.id(),
            app_name: manifest.name().to_owned(),
            mounts: mounts(bundle_root, home, limits.memory_bytes),
            landlock: landlock_rules(&entry_linkage),
            landlock_net_deny_tcp: true,
            landlock_scoped: true,
            seccomp: SeccompProgram::compile(),
            limits,
            home_quota: manifest.home_quota(),
            env: environment(manifest, host),
            entry,
            entry_linkage,
            argv: std::iter::once(entry_name)
                .chain(args.iter().cloned())
                .collect(),
            workdir: default_workdir(),
            guest: Guest::default(),
            extra_rlimits: Vec::new(),
        })
    }
}

fn mounts(bundle_root: &Path, home: &Path, memory_bytes: u64) -> Vec<MountEntry> {
    let host_ro = |path: &str| MountEntry::Host {
        host: path.into(),
        jail: path.into(),
        writable: false,
        optional: true,
    };
    let mut mounts: Vec<MountEntry> = SYSTEM_DIRS.iter().map(|dir| host_ro(dir)).collect();
    mounts.push(MountEntry::Dir {
        jail: "/etc".into(),
        mode: 0o755,
    });
    mounts.extend(ETC_FILES.iter().map(|file| host_ro(file)));
    mounts.extend([
        MountEntry::Bind {
            host: bundle_root.into(),
            jail: jail_paths::APP.into(),
            writable: false,
        },
        MountEntry::Dir {
            jail: "/home".into(),
            mode: 0o755,
        },
        MountEntry::Bind {
            host: home.into(),
            jail: jail_paths::HOME.into(),
            writable: true,
        },
    ]);
    mounts.extend(scratch_mounts(memory_bytes));
    mounts
}

/// What every jail has besides its programs: a private /tmp, a /dev of stateless devices with
/// its own /dev/shm, and a procfs of its own pid namespace.
pub(crate) fn scratch_mounts(memory_bytes: u64) -> Vec<MountEntry> {
    let mut mounts = vec![tmp_mount(memory_bytes)];
    mounts.extend(dev_mounts(memory_bytes, true));
    mounts.push(proc_mount());
    mounts
}

/// The jail's private /tmp.
pub(crate) fn tmp_mount(memory_bytes: u64) -> MountEntry {
    MountEntry::Tmpfs {
        jail: jail_paths::TMP.into(),
        size_bytes: memory_bytes.min(TMP_MAX_BYTES),
        mode: 0o1777,
    }
}

/// The jail's /dev: its stateless devices, the standard symlinks, and (`with_shm`) its own
/// /dev/shm.
pub(crate) fn dev_mounts(memory_bytes: u64, with_shm: bool) -> Vec<MountEntry> {
    let symlink = |jail: &str, target: &str| MountEntry::Symlink {
        target: target.into(),
        jail: jail.into(),
    };
    let mut mounts = vec![MountEntry::Tmpfs {
        jail: "/dev".into(),
        size_bytes: DEV_BYTES,
        mode: 0o755,
    }];
    mounts.extend(DEVICES.iter().map(|dev| MountEntry::Device {
        host: dev.into(),
        jail: dev.into(),
    }));
    mounts.extend([
        symlink("/dev/fd", "/proc/self/fd"),
        symlink("/dev/stdin", "/proc/self/fd/0"),
        symlink("/dev/stdout", "/proc/self/fd/1"),
        symlink("/dev/stderr", "/proc/self/fd/2"),
    ]);
    if with_shm {
        mounts.push(MountEntry::Tmpfs {
            jail: jail_paths::SHM.into(),
            size_bytes: shm_bytes(memory_bytes),
            mode: 0o1777,
        });
    }
    mounts
}

/// The size of the jail's /dev/shm: its memory, at most [`SHM_MAX_BYTES`].
pub(crate) fn shm_bytes(memory_bytes: u64) -> u64 {
    memory_bytes.min(SHM_MAX_BYTES)
}

/// The jail's procfs, of its own pid namespace.
pub(crate) fn proc_mount() -> MountEntry {
    MountEntry::Proc {
        jail: "/proc".into(),
    }
}

fn landlock_rules(entry_linkage: &EntryLinkage) -> Vec<LandlockRule> {
    let rule = |path: &str, access, optional, reason: &str| LandlockRule {
        path: path.into(),
        access,
        optional,
        reason: reason.to_owned(),
    };
    let mut rules: Vec<LandlockRule> = SYSTEM_DIRS
        .iter()
        .map(|dir| {
            rule(
                dir,
                PathAccess::ReadOnly,
                true,
                "system libraries and data: read, never execute",
            )
        })
        .collect();
    rules.push(rule(
        "/etc",
        PathAccess::ReadOnly,
        false,
        "only ld.so.cache and localtime are there",
    ));
    if entry_linkage.needs_host_loader(jail_paths::APP) {
        // Executable as a program too: it then runs any host file it can read (see
        // `crate::linkage`). Only a static entry (or one with its own loader) can do without.
        rules.push(rule(
            DYNAMIC_LOADER,
            PathAccess::ReadExecute,
            true,
            "the dynamic loader, which the kernel executes for every dynamically linked \
             program; run directly, it runs any host program in /usr",
        ));
    }
    rules.extend([
        rule(
            jail_paths::APP,
            PathAccess::ReadExecute,
            false,
            "the signed bundle: the only programs the app can execute",
        ),
        rule(
            jail_paths::HOME,
            PathAccess::ReadWrite,
            false,
            "the app's persistent home; what it writes can never be executed",
        ),
    ]);
    rules.extend(scratch_rules());
    rules
}

/// The Landlock rules of [`scratch_mounts`].
pub(crate) fn scratch_rules() -> Vec<LandlockRule> {
    let rule = |path: &str, access, optional, reason: &str| LandlockRule {
        path: path.into(),
        access,
        optional,
        reason: reason.to_owned(),
    };
    vec![
        rule(
            jail_paths::TMP,
            PathAccess::ReadWrite,
            false,
            "private scratch space; what it writes can never be executed",
        ),
        rule(
            jail_paths::SHM,
            PathAccess::ReadWrite,
            false,
            "the app's own POSIX shared memory",
        ),
        rule(
            "/dev",
            PathAccess::ReadWriteFiles,
            false,
            "null, zero, full, random, urandom: use them, create nothing",
        ),
        rule(
            "/proc",
            PathAccess::ReadOnly,
            false,
            "procfs of its own pid namespace: only itself",
        ),
    ]
}

/// The complete environment of the entry, sorted by name. Nothing of the host's leaks in except
/// `LANG` and `TERM`, which the manifest may override.
fn environment(manifest: &Manifest, host: &HostEnv) -> Vec<(String, String)> {
    let non_empty = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
    let mut env = BTreeMap::new();
    env.insert(
        "LANG".to_owned(),
        non_empty(&host.lang).unwrap_or_else(|| DEFAULT_LANG.to_owned()),
    );
    if let Some(term) = non_empty(&host.term) {
        env.insert("TERM".to_owned(), term);
    }
    env.extend(manifest.env().clone());
    // Reserved names (the manifest cannot set them), so these always win.
    env.extend([
        ("HOME".to_owned(), jail_paths::HOME.to_owned()),
        ("PATH".to_owned(), JAIL_PATH_ENV.to_owned()),
        ("ELASTOS_IPC_FD".to_owned(), IPC_FD.to_string()),
        ("ELASTOS_APP_ID".to_owned(), manifest.id().to_string()),
        ("ELASTOS_APP_NAME".to_owned(), manifest.name().to_owned()),
    ]);
    env.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Manifest {
        Manifest::from_toml(&format!(
            "[app]\nid = \"0b8e1f7c-3c1d-4a55-9d0e-5f7f5e2a9c11\"\nname = \"hello\"\n\
             version = \"0.1.0\"\nentry = \"bin/hello\"\n{extra}"
        ))
        .unwrap()
    }

    fn dynamic() -> EntryLinkage {
        EntryLinkage::Dynamic {
            interpreter: DYNAMIC_LOADER.into(),
        }
    }

    fn build(manifest: &Manifest, host: &HostEnv) -> JailPlan {
        let args = ["--greet".to_owned(), "world".to_owned()];
        JailPlan::build(
            manifest,
            Path::new("/cache/b1"),
            Path::new("/homes/h1"),
            &args,
            host,
            dynamic(),
        )
        .unwrap()
    }

    fn jail_path(entry: &MountEntry) -> &Path {
        match entry {
            MountEntry::Host { jail, .. }
            | MountEntry::Bind { jail, .. }
            | MountEntry::Device { jail, .. }
            | MountEntry::Tmpfs { jail, .. }
            | MountEntry::Dir { jail, .. }
            | MountEntry::Symlink { jail, .. }
            | MountEntry::Proc { jail }
            | MountEntry::Kernel { jail, .. } => jail,
        }
    }

    #[test]
    fn mounts_come_in_order_with_parents_first() {
        let plan = build(&manifest(""), &HostEnv::default());
        let order: Vec<&str> = plan
            .mounts
            .iter()
            .map(|m| jail_path(m).to_str().unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "/usr",
                "/lib",
                "/lib32",
                "/lib64",
                "/libx32",
                "/bin",
                "/sbin",
                "/etc",
                "/etc/ld.so.cache",
                "/etc/localtime",
                "/app",
                "/home",
                "/home/app",
                "/tmp",
                "/dev",
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/fd",
                "/dev/stdin",
                "/dev/stdout",
                "/dev/stderr",
                "/dev/shm",
                "/proc",
            ]
        );
        assert!(plan.mounts.contains(&MountEntry::Bind {
            host: "/cache/b1".into(),
            jail: "/app".into(),
            writable: false
        }));
        assert!(plan.mounts.contains(&MountEntry::Bind {
            host: "/homes/h1".into(),
            jail: "/home/app".into(),
            writable: true
        }));
        let writable_host = plan
            .mounts
            .iter()
            .any(|m| matches!(m, MountEntry::Host { writable: true, .. }));
        assert!(!writable_host, "no host system path is writable");
    }

    #[test]
    fn tmpfs_sizes_follow_the_memory_limit() {
        let sizes = |plan: &JailPlan| -> Vec<(PathBuf, u64, u32)> {
            plan.mounts
                .iter()
                .filter_map(|m| match m {
                    MountEntry::Tmpfs {
                        jail,
                        size_bytes,
                        mode,
                    } => Some((jail.clone(), *size_bytes, *mode)),
                    _ => None,
                })
                .collect()
        };
        let default = build(&manifest(""), &HostEnv::default());
        assert_eq!(
            sizes(&default),
            [
                ("/tmp".into(), 256 * MIB, 0o1777),
                ("/dev".into(), 64 * 1024, 0o755),
                ("/dev/shm".into(), 64 * MIB, 0o1777)
            ]
        );
        let small = build(
            &manifest("[limits]\nmemory = \"32MiB\"\n"),
            &HostEnv::default(),
        );
        assert_eq!(sizes(&small)[0].1, 32 * MIB);
        assert_eq!(sizes(&small)[2].1, 32 * MIB);
    }

    #[test]
    fn only_the_bundle_and_the_dynamic_loader_are_executable() {
        let plan = build(&manifest(""), &HostEnv::default());
        let executable: Vec<&Path> = plan
            .landlock
            .iter()
            .filter(|r| r.access == PathAccess::ReadExecute)
            .map(|r| r.path.as_path())
            .collect();
        assert_eq!(executable, [Path::new(DYNAMIC_LOADER), Path::new("/app")]);
        let writable: Vec<&Path> = plan
            .landlock
            .iter()
            .filter(|r| r.access == PathAccess::ReadWrite)
            .map(|r| r.path.as_path())
            .collect();
        assert_eq!(
            writable,
            [
                Path::new("/home/app"),
                Path::new("/tmp"),
                Path::new("/dev/shm")
            ]
        );
        assert!(plan.landlock.iter().all(|r| !r.reason.is_empty()));
        assert!(plan.landlock_net_deny_tcp && plan.landlock_scoped);
    }

    #[test]
    fn a_static_entry_may_execute_nothing_but_its_bundle() {
        let plan = JailPlan::build(
            &manifest(""),
            Path::new("/cache/b1"),
            Path::new("/homes/h1"),
            &[],
            &HostEnv::default(),
            EntryLinkage::Static,
        )
        .unwrap();
        let executable: Vec<&Path> = plan
            .landlock
            .iter()
            .filter(|r| r.access == PathAccess::ReadExecute)
            .map(|r| r.path.as_path())
            .collect();
        assert_eq!(executable, [Path::new("/app")]);
        assert_eq!(plan.entry_linkage, EntryLinkage::Static);
    }

    #[test]
    fn environment_is_scrubbed_complete_and_sorted() {
        let plan = build(&manifest("[env]\nGREETING = \"hi\"\n"), &HostEnv::default());
        let env: Vec<(&str, &str)> = plan
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("ELASTOS_APP_ID", "0b8e1f7c-3c1d-4a55-9d0e-5f7f5e2a9c11"),
                ("ELASTOS_APP_NAME", "hello"),
                ("ELASTOS_IPC_FD", "3"),
                ("GREETING", "hi"),
                ("HOME", "/home/app"),
                ("LANG", "C.UTF-8"),
                ("PATH", "/app/bin:/usr/local/bin:/usr/bin:/bin"),
            ]
        );
    }

    #[test]
    fn host_lang_and_term_carry_over_unless_the_manifest_sets_them() {
        let host = HostEnv {
            lang: Some("fr_FR.UTF-8".into()),
            term: Some("xterm".into()),
        };
        let value = |plan: &JailPlan, name: &str| {
            plan.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let plan = build(&manifest(""), &host);
        assert_eq!(value(&plan, "LANG").as_deref(), Some("fr_FR.UTF-8"));
        assert_eq!(value(&plan, "TERM").as_deref(), Some("xterm"));
        let plan = build(&manifest("[env]\nTERM = \"dumb\"\n"), &host);
        assert_eq!(value(&plan, "TERM").as_deref(), Some("dumb"));
        let empty = HostEnv {
            lang: Some(String::new()),
            term: Some(String::new()),
        };
        let plan = build(&manifest(""), &empty);
        assert_eq!(value(&plan, "LANG").as_deref(), Some("C.UTF-8"));
        assert_eq!(value(&plan, "TERM"), None);
    }

    #[test]
    fn entry_and_argv() {
        let plan = build(&manifest(""), &HostEnv::default());
        assert_eq!(plan.entry, Path::new("/app/bin/hello"));
        assert_eq!(plan.argv, ["hello", "--greet", "world"]);
        assert_eq!(plan.app_name, "hello");
        assert_eq!(plan.limits, crate::manifest::DEFAULT_LIMITS);
        assert!(!plan.seccomp.bpf.is_empty());
    }

    #[test]
    fn host_paths_must_be_absolute() {
        let err = JailPlan::build(
            &manifest(""),
            Path::new("rel"),
            Path::new("/h"),
            &[],
            &HostEnv::default(),
            dynamic(),
        )
        .unwrap_err();
        assert!(
            matches!(err, PolicyError::NotAbsolute { what: "bundle", .. }),
            "{err:?}"
        );
        let err = JailPlan::build(
            &manifest(""),
            Path::new("/b"),
            Path::new("h"),
            &[],
            &HostEnv::default(),
            dynamic(),
        )
        .unwrap_err();
        assert!(
            matches!(err, PolicyError::NotAbsolute { what: "home", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn json_round_trips() {
        let plan = build(&manifest(""), &HostEnv::default());
        let json = serde_json::to_string(&plan).unwrap();
        assert!(json.contains(r#""kind":"tmpfs""#) && json.contains(r#""access":"read_execute""#));
        assert_eq!(serde_json::from_str::<JailPlan>(&json).unwrap(), plan);
    }
}
