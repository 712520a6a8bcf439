//! Memory, thread and CPU limits on the host side: a cgroup for the app when one can be used,
//! else the loader falls back to rlimits. Which one was used is reported ([`LimitMechanism`]).
//!
//! Order of preference: cgroup v2 (root: under `/sys/fs/cgroup/elastos`; unprivileged: under a
//! cgroup delegated to us, see [`CgroupFs`]), cgroup v1 `memory`, `pids` and `cpu` controllers
//! (root, hybrid hosts), rlimits (RLIMIT_AS for memory: address space, not resident memory, so
//! it is the coarsest of the three; RLIMIT_NPROC counts the threads of the jail's own user
//! namespace only; nothing limits the CPU rate).
//!
//! On cgroup v2 the leaf is made before the jail's first process exists, which is cloned
//! straight into it (`clone3` with `CLONE_INTO_CGROUP`, see [`AppCgroup::before_clone`]): it never
//! runs outside its cgroup, and nothing writes its pid to `cgroup.procs` (whose global lock
//! waits for an RCU grace period). Since the bundle is not verified yet at that point, a v2 leaf
//! is named after the launcher and the instance (`<launcher pid>-<n>`), not the app; a v1 leaf
//! is made later and named `<app id>-<launcher pid>-<n>`.
//!
//! Every file is reached through a [`CgroupFs`]: the real one is [`CgroupFs::detect`]; the unit
//! tests build one over a temporary directory laid out like a cgroup2 mount and check every
//! file the v2 path writes, its content, and what is left after cleanup.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use elastos_policy::{ResourceLimits, CPU_PERIOD_US};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// How the app's memory, thread and CPU limits are enforced.
///
/// `swap_limited` says whether the memory limit also covers swap. Without it, a memory limit
/// only bounds what is resident: once the app reaches it, the kernel swaps its pages out and it
/// goes on growing in swap (and tmpfs pages go to swap too). cgroup v2: `memory.swap.max` is set
/// to 0; v1: `memory.memsw.limit_in_bytes` (memory plus swap) to the memory limit. It is false
/// where the kernel keeps no swap accounting (built without it or booted with
/// `swapaccount=0`): the file is absent, and a host with swap enabled then lets the app use as
/// much swap as it likes.
///
/// `cpu_limited` (v2) and `cpu` (v1) say whether the CPU rate is limited: not where the cpu
/// controller is not offered to us (a v2 parent that does not delegate it, a v1 host without
/// it mounted).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mechanism", rename_all = "snake_case")]
pub enum LimitMechanism {
    /// A cgroup v2 leaf (memory.max, memory.swap.max, pids.max, cpu.max).
    CgroupV2 {
        path: PathBuf,
        swap_limited: bool,
        cpu_limited: bool,
    },
    /// cgroup v1 memory, pids and cpu controllers (memory.limit_in_bytes,
    /// memory.memsw.limit_in_bytes, pids.max, cpu.cfs_quota_us and cpu.cfs_period_us). On a
    /// hybrid host, `unified` is the app's leaf in the cgroup2 tree beside them: no limits
    /// there, but the app is cloned into it, cannot leave it, and the kernel counts its CPU
    /// time there (`cpu.stat`).
    CgroupV1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
        unified: Option<PathBuf>,
        swap_limited: bool,
    },
    /// No usable cgroup: RLIMIT_AS and RLIMIT_NPROC inside the jail. RLIMIT_AS counts address
    /// space, so it bounds swap too. The CPU rate is not limited.
    Rlimits,
}

impl LimitMechanism {
    /// Whether the app's CPU rate is limited.
    /// Every cgroup directory the app has (for whoever must remove them after it).
    pub fn dirs(&self) -> Vec<&Path> {
        match self {
            LimitMechanism::CgroupV2 { path, .. } => vec![path],
            LimitMechanism::CgroupV1 {
                memory,
                pids,
                cpu,
                unified,
                ..
            } => [Some(memory), Some(pids), cpu.as_ref(), unified.as_ref()]
                .into_iter()
                .flatten()
                .map(PathBuf::as_path)
                .collect(),
            LimitMechanism::Rlimits => vec![],
        }
    }

    pub fn cpu_limited(&self) -> bool {
        match self {
            LimitMechanism::CgroupV2 { cpu_limited, .. } => *cpu_limited,
            LimitMechanism::CgroupV1 { cpu, .. } => cpu.is_some(),
            LimitMechanism::Rlimits => false,
        }
    }

    /// One line for a reviewer: which mechanism, which files, and what it leaves unlimited.
    pub fn describe(&self) -> String {
        let swap = |limited: bool| {
            if limited {
                "swap included"
            } else {
                "swap not accounted by this kernel: the app may grow in swap"
            }
        };
        let cpu = if self.cpu_limited() {
            "CPU rate limited"
        } else {
            "CPU rate NOT limited (no cpu controller here)"
        };
        match self {
            LimitMechanism::CgroupV2 {
                path, swap_limited, ..
            } => format!(
                "cgroup v2 under {} (memory.max, pids.max, cpu.max; {}; {cpu})",
                path.parent().unwrap_or(Path::new("/")).display(),
                swap(*swap_limited)
            ),
            LimitMechanism::CgroupV1 {
                memory,
                swap_limited,
                ..
            } => format!(
                "cgroup v1 memory, pids and cpu controllers under {}/*/elastos \
                 (memory.limit_in_bytes, pids.max, cpu.cfs_quota_us; {}; {cpu})",
                memory
                    .ancestors()
                    .nth(3)
                    .unwrap_or(Path::new("/"))
                    .display(),
                swap(*swap_limited)
            ),
            LimitMechanism::Rlimits => "no usable cgroup for this user: RLIMIT_AS (address \
                space, not resident memory) and RLIMIT_NPROC instead; CPU rate NOT limited"
                .to_owned(),
        }
    }
}

/// cgroup v2: the app's swap limit, in the leaf and present in every non-root cgroup when the
/// kernel accounts swap.
const V2_SWAP_MAX: &str = "memory.swap.max";
/// cgroup v1: the app's memory plus swap limit, present in every memory cgroup (the root
/// included) when the kernel accounts swap.
const V1_MEMSW_LIMIT: &str = "memory.memsw.limit_in_bytes";
/// cgroup v2 controllers the app's leaf gets: memory and pids are needed for a v2 leaf to be
/// used at all; cpu where it is offered.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
/// The leaf an unprivileged launcher moves itself to when it was given a cgroup of its own to
/// manage (a unit with `Delegate=yes`): cgroup v2 lets a cgroup hand controllers to its
/// children only while no process sits in it ("no internal processes").
const LAUNCHER_LEAF: &str = "elastos-launcher";

/// A cgroup could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// Creating, writing or removing a cgroup file failed.
    #[error("cgroup file {path} (hint: `elastos run --no-cgroup` limits with rlimits instead)")]
    Io {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Io {
        path: path.into(),
        source,
    })
}

fn make_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(CgroupError::Io {
            path: path.into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The cgroup filesystem as the launcher finds it: where it is mounted, what kind it is, who we
/// are and where we are in it. [`CgroupFs::detect`] asks the kernel; tests describe a simulated
/// tree instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFs {
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub root: PathBuf,
    /// Whether `root` is a cgroup2 mount (the unified layout); else v1 controllers may be
    /// mounted under it, one directory each.
    pub unified: bool,
    /// Whether the launcher runs as root (root makes its cgroups under `root/elastos` or the v1
    /// controllers; anyone else needs a delegated v2 cgroup).
    pub privileged: bool,
    /// The launcher's own v2 cgroup, relative to `root` (the `0::` line of /proc/self/cgroup).
    pub own: Option<PathBuf>,
    /// The launcher's pid, written to a `cgroup.procs` when it moves itself into its leaf
    /// `elastos-launcher`.
    pub pid: u32,
    /// On a hybrid host, as root: the cgroup2 mount beside the v1 controllers
    /// (`/sys/fs/cgroup/unified`), where the app gets a leaf without limits (see
    /// [`LimitMechanism::CgroupV1`]).
    pub hybrid_v2: Option<PathBuf>,
}

impl CgroupFs {
    /// The real cgroup filesystem, as this process sees it.
    pub fn detect() -> CgroupFs {
        let root = PathBuf::from(CGROUP_ROOT);
        let is_cgroup2 = |path: &Path| {
            nix::sys::statfs::statfs(path)
                .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
                .unwrap_or(false)
        };
        let unified = is_cgroup2(&root);
        let privileged = nix::unistd::geteuid().is_root();
        let hybrid_v2 =
            Some(root.join("unified")).filter(|mount| !unified && privileged && is_cgroup2(mount));
        let own = fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .map(|own| PathBuf::from(own.trim_start_matches('/')))
            });
        CgroupFs {
            root,
            unified,
            privileged,
            own,
            pid: std::process::id(),
            hybrid_v2,
        }
    }

    /// Chooses how the limits are enforced and where the app's cgroup(s) go; creates nothing
    /// of the app's yet (see [`AppCgroup::before_clone`], [`AppCgroup::apply`]), but may prepare
    /// the v2 parent (controllers enabled, the launcher moved out of a delegated cgroup).
    fn mechanism(&self, name: &str) -> LimitMechanism {
        let root = &self.root;
        if self.unified {
            return match self.v2_parent() {
                Some((parent, cpu_limited)) => LimitMechanism::CgroupV2 {
                    swap_limited: parent.join(V2_SWAP_MAX).exists(),
                    path: parent.join(name),
                    cpu_limited,
                },
                None => LimitMechanism::Rlimits,
            };
        }
        if self.privileged && root.join("memory").is_dir() && root.join("pids").is_dir() {
            let leaf = |controller: &str| root.join(controller).join("elastos").join(name);
            return LimitMechanism::CgroupV1 {
                memory: leaf("memory"),
                pids: leaf("pids"),
                cpu: root.join("cpu").is_dir().then(|| leaf("cpu")),
                unified: self
                    .hybrid_v2
                    .as_ref()
                    .map(|v2| v2.join("elastos").join(name)),
                swap_limited: root.join("memory").join(V1_MEMSW_LIMIT).exists(),
            };
        }
        LimitMechanism::Rlimits
    }

    /// The v2 cgroup under which the app's leaf goes, if memory and pids can be controlled
    /// there, and whether cpu can too.
    fn v2_parent(&self) -> Option<(PathBuf, bool)> {
        let (parent, offered) = if self.privileged {
            let parent = self.root.join("elastos");
            // Controllers must be enabled on every level down to the leaf's parent; what the
            // root enables for its children is what `elastos` is offered.
            let offered = words(&self.root.join("cgroup.controllers"))?;
            if !offers_memory_and_pids(&offered) {
                return None;
            }
            let offered = enable_controllers(&self.root, &offered)?;
            make_dir(&parent).ok()?;
            (parent, offered)
        } else {
            self.delegated_parent()?
        };
        let enabled = enable_controllers(&parent, &offered)?;
        let has = |c: &str| enabled.iter().any(|e| e == c);
        (has("memory") && has("pids")).then_some((parent, has("cpu")))
    }

    /// Unprivileged: the cgroup delegated to us (writable) under which our leaves go, with the
    /// controllers it is offered. Either the parent of our own cgroup (we are already in a leaf
    /// of a delegated subtree), or our own cgroup, out of which we then move into a leaf of our
    /// own ([`LAUNCHER_LEAF`]) so that it may hand controllers to its children.
    fn delegated_parent(&self) -> Option<(PathBuf, Vec<String>)> {
        let own = self.root.join(self.own.as_ref()?);
        let writable = |dir: &Path| {
            nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
                && nix::unistd::access(
                    &dir.join("cgroup.subtree_control"),
                    nix::unistd::AccessFlags::W_OK,
                )
                .is_ok()
        };
        if let Some(parent) = own.parent().filter(|p| *p != self.root && writable(p)) {
            return Some((
                parent.to_owned(),
                words(&parent.join("cgroup.controllers"))?,
            ));
        }
        if !writable(&own) || own == self.root {
            return None;
        }
        let offered = words(&own.join("cgroup.controllers"))?;
        if !offers_memory_and_pids(&offered) {
            return None;
        }
        let leaf = own.join(LAUNCHER_LEAF);
        make_dir(&leaf).ok()?;
        write(&leaf.join("cgroup.procs"), &self.pid.to_string()).ok()?;
        Some((own, offered))
    }
}

fn offers_memory_and_pids(offered: &[String]) -> bool {
    ["memory", "pids"]
        .iter()
        .all(|wanted| offered.iter().any(|o| o == wanted))
}

/// The whitespace-separated words of a cgroup file.
fn words(path: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(path).ok()?;
    Some(text.split_whitespace().map(str::to_owned).collect())
}

/// Enables for the children of `dir` those of [`V2_CONTROLLERS`] that `dir` is `offered` and
/// has not enabled yet (one write of its `cgroup.subtree_control`, none when nothing is
/// missing); returns the controllers its children then get, or `None` if the write failed.
fn enable_controllers(dir: &Path, offered: &[String]) -> Option<Vec<String>> {
    let control = dir.join("cgroup.subtree_control");
    let mut enabled = words(&control)?;
    let missing: Vec<&str> = V2_CONTROLLERS
        .into_iter()
        .filter(|c| offered.iter().any(|o| o == c) && !enabled.iter().any(|e| e == c))
        .collect();
    if !missing.is_empty() {
        let line: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
        write(&control, &line.join(" ")).ok()?;
        enabled.extend(missing.into_iter().map(str::to_owned));
    }
    Some(enabled)
}

/// The app's cgroup(s); removed on drop.
///
/// Made in two steps around the clone of the jail's first process: [`AppCgroup::before_clone`]
/// makes the cgroup2 leaf the process is cloned into (on a v2 host the app's cgroup, on a hybrid
/// one its leaf in the cgroup2 tree); [`AppCgroup::name_after_app`] chooses the v1 leaves once
/// the app is known, and [`AppCgroup::apply`] writes the limits.
#[derive(Debug)]
pub struct AppCgroup {
    mechanism: LimitMechanism,
    /// The cgroup2 leaf made before the clone, if any.
    clone_leaf: Option<PathBuf>,
    /// The jail's first process was cloned into `clone_leaf` (`CLONE_INTO_CGROUP`), so its pid
    /// need not be written to `cgroup.procs`.
    cloned_into: bool,
}

impl AppCgroup {
    /// Chooses how the limits are enforced and where the app's cgroup(s) go in `cgroups`
    /// (see [`LimitMechanism`]), creating none of the app's: what a launch would do (`elastos
    /// info`, `policy show`). `disabled` forces rlimits.
    pub fn choose(cgroups: &CgroupFs, name: &str, disabled: bool) -> AppCgroup {
        let mechanism = if disabled {
            LimitMechanism::Rlimits
        } else {
            cgroups.mechanism(name)
        };
        AppCgroup {
            mechanism,
            clone_leaf: None,
            cloned_into: false,
        }
    }

    /// Before the jail's first process exists: makes the cgroup2 leaf `name` to clone it into
    /// and returns it with an `O_PATH` fd of the leaf for `clone3(CLONE_INTO_CGROUP)`. On a v2
    /// host that leaf is the app's cgroup; on a hybrid host (as root) a leaf of the cgroup2
    /// tree, best effort (the v1 controllers hold the limits, see
    /// [`AppCgroup::name_after_app`]); elsewhere there is none.
    pub fn before_clone(
        cgroups: &CgroupFs,
        name: &str,
        disabled: bool,
    ) -> Result<(AppCgroup, Option<OwnedFd>), CgroupError> {
        let mut cgroup = AppCgroup::choose(cgroups, name, disabled || !cgroups.unified);
        cgroup.clone_leaf = match &cgroup.mechanism {
            LimitMechanism::CgroupV2 { path, .. } => Some(path.clone()),
            _ if disabled => None,
            _ => cgroups.hybrid_v2.as_ref().and_then(|v2| {
                let parent = v2.join("elastos");
                match make_dir(&parent) {
                    Ok(()) => Some(parent.join(name)),
                    Err(error) => {
                        tracing::debug!(%error, "no leaf in the cgroup2 tree beside v1");
                        None
                    }
                }
            }),
        };
        let Some(leaf) = &cgroup.clone_leaf else {
            return Ok((cgroup, None));
        };
        let opened = make_dir(leaf).and_then(|()| {
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(leaf)
                .map_err(|source| CgroupError::Io {
                    path: leaf.clone(),
                    source,
                })
        });
        match opened {
            Ok(fd) => Ok((cgroup, Some(fd.into()))),
            Err(e) if cgroups.unified => Err(e),
            Err(error) => {
                tracing::debug!(%error, "no leaf in the cgroup2 tree beside v1");
                cgroup.clone_leaf = None;
                Ok((cgroup, None))
            }
        }
    }

    /// Records that the jail's first process was cloned into the leaf of
    /// [`AppCgroup::before_clone`].
    pub fn cloned_into(&mut self) {
        self.cloned_into = true;
    }

    /// Once the app is known: on a host without cgroup v2 at its root, chooses the v1 leaves
    /// (named `name`, after the app), or rlimits; the hybrid leaf made before the clone is kept
    /// beside them. Does nothing on a v2 host, whose leaf is the app's cgroup already.
    pub fn name_after_app(&mut self, cgroups: &CgroupFs, name: &str, disabled: bool) {
        if cgroups.unified {
            return;
        }
        self.mechanism = match AppCgroup::choose(cgroups, name, disabled).mechanism.clone() {
            LimitMechanism::CgroupV1 {
                memory,
                pids,
                cpu,
                swap_limited,
                ..
            } => LimitMechanism::CgroupV1 {
                memory,
                pids,
                cpu,
                unified: self.clone_leaf.clone().filter(|_| self.cloned_into),
                swap_limited,
            },
            other => other,
        };
    }

    /// The `tasks` files through which the jail's first process joins the cgroups itself (cgroup
    /// v1): writing "0" there moves only the writing thread, which the kernel does without the
    /// global threadgroup lock that a write of a pid to `cgroup.procs` takes. That lock waits
    /// for an RCU grace period, 5-15 ms in one launch of ten on this machine.
    pub fn self_join_files(&self) -> Vec<PathBuf> {
        match &self.mechanism {
            LimitMechanism::CgroupV1 {
                memory, pids, cpu, ..
            } => [Some(memory), Some(pids), cpu.as_ref()]
                .into_iter()
                .flatten()
                .map(|leaf| leaf.join("tasks"))
                .collect(),
            LimitMechanism::CgroupV2 { .. } | LimitMechanism::Rlimits => Vec::new(),
        }
    }

    /// Creates the cgroup(s) (v2: if [`AppCgroup::before_clone`] did not) with `limits`. cgroup
    /// v2: moves `pid` in unless it was cloned into the leaf; v1: lets the jail's host uid
    /// `owner` write the [`AppCgroup::self_join_files`], through which `pid` joins itself.
    pub fn apply(&self, limits: &ResourceLimits, pid: i32, owner: u32) -> Result<(), CgroupError> {
        match &self.mechanism {
            LimitMechanism::CgroupV2 { path, .. } => {
                make_dir(path)?;
                self.mechanism.set_limits(limits)?;
                if self.cloned_into {
                    return Ok(());
                }
                write(&path.join("cgroup.procs"), &pid.to_string())
            }
            LimitMechanism::CgroupV1 {
                memory, pids, cpu, ..
            } => {
                for leaf in [Some(memory), Some(pids), cpu.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    if let Some(parent) = leaf.parent() {
                        make_dir(parent)?;
                    }
                    make_dir(leaf)?;
                }
                self.mechanism.set_limits(limits)?;
                for tasks in self.self_join_files() {
                    std::os::unix::fs::chown(&tasks, Some(owner), None).map_err(|source| {
                        CgroupError::Io {
                            path: tasks,
                            source,
                        }
                    })?;
                }
                Ok(())
            }
            LimitMechanism::Rlimits => Ok(()),
        }
    }

    /// How the limits are enforced.
    pub fn mechanism(&self) -> &LimitMechanism {
        &self.mechanism
    }

    /// Every directory of the app's, the leaf made before the clone included (once).
    fn dirs(&self) -> Vec<&Path> {
        let mut dirs = self.mechanism.dirs();
        if let Some(leaf) = self
            .clone_leaf
            .as_deref()
            .filter(|leaf| !dirs.contains(leaf))
        {
            dirs.push(leaf);
        }
        dirs
    }
}

impl Drop for AppCgroup {
    fn drop(&mut self) {
        // The app has been reaped by now; a just-exited task can keep a cgroup busy for a
        // moment (its css_set is released after an RCU grace period), so retry instead of
        // leaking the directory. Bounded by time, not by tries: 50 tries 2 ms apart were the
        // likely cause of 2 empty clone leaves left by ~200 `elastos run`s at a load average of
        // ~20 on 2 vCPUs, where a grace period can outlast them.
        let deadline = std::time::Instant::now() + CGROUP_BUSY_FOR;
        for dir in self.dirs() {
            loop {
                match fs::remove_dir(dir) {
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(2))
                    }
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        tracing::warn!(cgroup = %dir.display(), error = %e, "could not remove cgroup");
                        break;
                    }
                    _ => break,
                }
            }
        }
    }
}

/// How long [`AppCgroup`]'s removal waits, in all, for its cgroups to stop being busy.
const CGROUP_BUSY_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// pids.max: the app's threads plus the jail's init.
impl LimitMechanism {
    /// The app's cgroup2 leaf, whose `cgroup.freeze` stops and resumes all of the jail at once
    /// (`elastos oci pause`): the v2 leaf, or on a hybrid host the unified one beside the v1
    /// controllers. `None` without a cgroup2 leaf (no freezer for the jail then).
    fn freezer(&self) -> Option<&Path> {
        match self {
            LimitMechanism::CgroupV2 { path, .. } => Some(path),
            LimitMechanism::CgroupV1 { unified, .. } => unified.as_deref(),
            LimitMechanism::Rlimits => None,
        }
    }

    /// Freezes (`true`) or thaws the app's cgroup2 leaf; waits until the kernel reports it
    /// done (`cgroup.events`), at most 5 s. `Ok(false)` when there is no leaf to freeze.
    pub fn freeze(&self, frozen: bool) -> Result<bool, CgroupError> {
        let Some(leaf) = self.freezer() else {
            return Ok(false);
        };
        write(&leaf.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let wanted = if frozen { "frozen 1" } else { "frozen 0" };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let events = leaf.join("cgroup.events");
        loop {
            let now = fs::read_to_string(&events).map_err(|source| CgroupError::Io {
                path: events.clone(),
                source,
            })?;
            if now.lines().any(|line| line == wanted) {
                return Ok(true);
            }
            if std::time::Instant::now() > deadline {
                return Err(CgroupError::Io {
                    path: events,
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("not `{wanted}` within 5 s"),
                    ),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Whether the app's cgroup2 leaf is frozen (asked to be: `cgroup.freeze` reads 1).
    pub fn frozen(&self) -> bool {
        self.freezer()
            .and_then(|leaf| fs::read_to_string(leaf.join("cgroup.freeze")).ok())
            .is_some_and(|value| value.trim() == "1")
    }

    /// Writes `limits` to the app's cgroups, which exist: at its start, and again for
    /// `elastos oci update` while it runs. Without a cgroup (rlimits) there is nothing to
    /// change from outside.
    pub fn set_limits(&self, limits: &ResourceLimits) -> Result<(), CgroupError> {
        let quota = limits.cpu_quota_us().to_string();
        match self {
            LimitMechanism::CgroupV2 {
                path,
                swap_limited,
                cpu_limited,
            } => {
                write(&path.join("memory.max"), &limits.memory_bytes.to_string())?;
                if *swap_limited {
                    write(&path.join(V2_SWAP_MAX), "0")?;
                }
                write(&path.join("pids.max"), &tasks_max(limits))?;
                if *cpu_limited {
                    write(&path.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                }
                Ok(())
            }
            LimitMechanism::CgroupV1 {
                memory,
                pids,
                cpu,
                swap_limited,
                ..
            } => {
                let memory_bytes = limits.memory_bytes.to_string();
                let limit = memory.join("memory.limit_in_bytes");
                // memsw may never be below limit_in_bytes: a raised limit goes after memsw, a
                // lowered one before (both start unlimited in a new cgroup).
                let raised = fs::read_to_string(&limit)
                    .ok()
                    .and_then(|current| current.trim().parse::<u64>().ok())
                    .is_some_and(|current| limits.memory_bytes > current);
                if *swap_limited && raised {
                    write(&memory.join(V1_MEMSW_LIMIT), &memory_bytes)?;
                }
                write(&limit, &memory_bytes)?;
                if *swap_limited && !raised {
                    write(&memory.join(V1_MEMSW_LIMIT), &memory_bytes)?;
                }
                write(&pids.join("pids.max"), &tasks_max(limits))?;
                if let Some(cpu) = cpu {
                    // The period first: the quota is checked against it.
                    write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&cpu.join("cpu.cfs_quota_us"), &quota)?;
                }
                Ok(())
            }
            LimitMechanism::Rlimits => Ok(()),
        }
    }
}

fn tasks_max(limits: &ResourceLimits) -> String {
    (limits.threads + 1).to_string()
}

#[cfg(test)]
mod tests {
    //! The cgroup v2 path against a simulated cgroup2 tree in a temporary directory (after
    //! youki's libcgroups tests). The simulation is passive: it holds the files the kernel
    //! would show, and every file the code writes is checked, with its content. Where the kernel
    //! would act on its own (making a new cgroup's interface files at mkdir, dropping them at
    //! rmdir), the fixture does it: a cgroup the code only joins is laid out beforehand, and
    //! the interface files of the app's leaf are removed before the cleanup is checked.

    use std::collections::BTreeMap;

    use super::*;

    const MIB: u64 = 1 << 20;

    /// Every file under `root` and its content; directories map to `None`.
    fn tree(root: &Path) -> BTreeMap<String, Option<String>> {
        let mut found = BTreeMap::new();
        let mut dirs = vec![root.to_owned()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.strip_prefix(root).unwrap().display().to_string();
                if path.is_dir() {
                    dirs.push(path);
                    found.insert(name, None);
                } else {
                    found.insert(name, Some(fs::read_to_string(&path).unwrap()));
                }
            }
        }
        found
    }

    /// What changed from `before` to `after`: (path, new content), deletions as `<gone>`.
    fn changes(
        before: &BTreeMap<String, Option<String>>,
        after: &BTreeMap<String, Option<String>>,
    ) -> Vec<(String, String)> {
        let mut changed: Vec<(String, String)> = after
            .iter()
            .filter(|(path, content)| before.get(*path) != Some(content))
            .map(|(path, content)| (path.clone(), content.clone().unwrap_or("<dir>".into())))
            .collect();
        changed.extend(
            before
                .keys()
                .filter(|path| !after.contains_key(*path))
                .map(|path| (path.clone(), "<gone>".to_owned())),
        );
        changed.sort();
        changed
    }

    fn cgroup(root: &Path, dir: &str, files: &[(&str, &str)]) {
        let dir = root.join(dir);
        fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            fs::write(dir.join(name), content).unwrap();
        }
    }

    fn simulated(root: &Path, privileged: bool, own: &str) -> CgroupFs {
        CgroupFs {
            root: root.to_owned(),
            unified: true,
            privileged,
            own: Some(own.into()),
            pid: 4242,
            hybrid_v2: None,
        }
    }

    fn limits() -> ResourceLimits {
        ResourceLimits {
            memory_bytes: 64 * MIB,
            threads: 32,
            open_files: 64,
            cpu_millis: 200,
        }
    }

    /// Removes what the kernel would remove with the leaf at rmdir: its interface files.
    fn kernel_drops_interface_files(leaf: &Path) {
        for entry in fs::read_dir(leaf).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
    }

    fn v2(leaf: PathBuf, swap_limited: bool, cpu_limited: bool) -> LimitMechanism {
        LimitMechanism::CgroupV2 {
            path: leaf,
            swap_limited,
            cpu_limited,
        }
    }

    fn change(path: &str, content: &str) -> (String, String) {
        (path.to_owned(), content.to_owned())
    }

    /// `elastos oci pause` and `update` against a simulated leaf: pause writes only
    /// `cgroup.freeze` and returns once `cgroup.events` says frozen (the simulation holds what
    /// the kernel would show by then); an update rewrites the limits in place; without a
    /// cgroup2 leaf there is no freezer.
    #[test]
    fn v2_pause_writes_cgroup_freeze_and_an_update_rewrites_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        cgroup(
            root,
            "elastos/app",
            &[
                ("cgroup.freeze", "0\n"),
                ("cgroup.events", "populated 1\nfrozen 1\n"),
                ("memory.max", "max\n"),
                ("pids.max", "max\n"),
            ],
        );
        let mechanism = v2(root.join("elastos/app"), false, false);
        assert!(!mechanism.frozen());
        let before = tree(root);
        assert!(mechanism.freeze(true).unwrap());
        assert_eq!(
            changes(&before, &tree(root)),
            [change("elastos/app/cgroup.freeze", "1")]
        );
        assert!(mechanism.frozen());
        let before = tree(root);
        mechanism.set_limits(&limits()).unwrap();
        assert_eq!(
            changes(&before, &tree(root)),
            [
                change("elastos/app/memory.max", &(64 * MIB).to_string()),
                change("elastos/app/pids.max", "33"),
            ]
        );
        assert!(!LimitMechanism::Rlimits.freeze(true).unwrap());
        assert!(!LimitMechanism::Rlimits.frozen());
    }

    #[test]
    fn v2_as_root_enables_controllers_on_every_level_and_writes_each_limit_into_the_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let controllers = "cpuset cpu io memory hugetlb pids rdma misc";
        cgroup(
            root,
            "",
            &[
                ("cgroup.controllers", controllers),
                ("cgroup.subtree_control", ""),
                ("cgroup.procs", "1\n4242\n"),
            ],
        );
        // `elastos` as the kernel shows it right after the root enabled cpu, memory and pids.
        cgroup(
            root,
            "elastos",
            &[
                ("cgroup.controllers", "cpu memory pids"),
                ("cgroup.subtree_control", ""),
                ("memory.swap.max", "max"),
            ],
        );
        let before = tree(root);
        let fs = simulated(root, true, "init.scope");
        let (mut cgroup, fd) = AppCgroup::before_clone(&fs, "app-1", false).unwrap();
        let leaf = root.join("elastos/app-1");
        assert_eq!(cgroup.mechanism(), &v2(leaf.clone(), true, true));
        let chosen = tree(root);
        assert_eq!(
            changes(&before, &chosen),
            [
                change("cgroup.subtree_control", "+cpu +memory +pids"),
                change("elastos/app-1", "<dir>"),
                change("elastos/cgroup.subtree_control", "+cpu +memory +pids"),
            ],
            "controllers enabled down to the leaf's parent, the leaf made before the clone"
        );
        assert!(fd.is_some(), "an fd of the leaf for CLONE_INTO_CGROUP");
        assert!(
            cgroup.self_join_files().is_empty(),
            "v2: nothing to join by hand"
        );
        cgroup.cloned_into();
        cgroup.name_after_app(&fs, "app-with-its-id", false);
        assert_eq!(
            cgroup.mechanism(),
            &v2(leaf.clone(), true, true),
            "v2: named already"
        );
        cgroup.apply(&limits(), 777, 1234).unwrap();
        assert_eq!(
            changes(&chosen, &tree(root)),
            [
                change("elastos/app-1/cpu.max", "20000 100000"),
                change("elastos/app-1/memory.max", "67108864"),
                change("elastos/app-1/memory.swap.max", "0"),
                change("elastos/app-1/pids.max", "33"),
            ],
            "cloned into the leaf: no pid written to cgroup.procs"
        );

        kernel_drops_interface_files(&leaf);
        drop(cgroup);
        let mut left = chosen.clone();
        left.remove("elastos/app-1");
        assert_eq!(tree(root), left, "the leaf is gone, its parents stay");
    }

    #[test]
    fn v2_without_clone_into_cgroup_moves_the_pid_and_enables_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let enabled = "cpu memory pids";
        cgroup(
            root,
            "",
            &[
                ("cgroup.controllers", enabled),
                ("cgroup.subtree_control", enabled),
            ],
        );
        cgroup(
            root,
            "elastos",
            &[
                ("cgroup.controllers", enabled),
                ("cgroup.subtree_control", enabled),
            ],
        );
        let before = tree(root);
        let cgroup = AppCgroup::choose(&simulated(root, true, "init.scope"), "app-2", false);
        assert_eq!(tree(root), before, "already enabled: no write");
        // A kernel without clone3: the leaf is made and the pid moved in by `apply`.
        cgroup.apply(&limits(), 777, 1234).unwrap();
        let leaf = root.join("elastos/app-2");
        assert_eq!(
            changes(&before, &tree(root)),
            [
                change("elastos/app-2", "<dir>"),
                change("elastos/app-2/cgroup.procs", "777"),
                change("elastos/app-2/cpu.max", "20000 100000"),
                change("elastos/app-2/memory.max", "67108864"),
                change("elastos/app-2/pids.max", "33"),
            ],
            "no swap accounting (no memory.swap.max in the parent): no swap limit written"
        );
        assert_eq!(cgroup.mechanism(), &v2(leaf.clone(), false, true));
        kernel_drops_interface_files(&leaf);
        drop(cgroup);
        assert_eq!(tree(root), before);
    }

    #[test]
    fn v2_unprivileged_uses_the_delegated_parent_of_its_own_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        cgroup(root, "", &[("cgroup.controllers", "cpu memory pids")]);
        let slice = "user.slice/user-1000.slice/user@1000.service/app.slice";
        // systemd delegated memory and pids, not cpu yet.
        cgroup(
            root,
            slice,
            &[
                ("cgroup.controllers", "cpu memory pids"),
                ("cgroup.subtree_control", "memory pids"),
                ("memory.swap.max", "max"),
            ],
        );
        cgroup(
            root,
            &format!("{slice}/term.scope"),
            &[("cgroup.procs", "4242\n")],
        );
        let before = tree(root);
        let own = format!("{slice}/term.scope");
        let cgroup = AppCgroup::choose(&simulated(root, false, &own), "app-3", false);
        let leaf = root.join(slice).join("app-3");
        assert_eq!(cgroup.mechanism(), &v2(leaf.clone(), true, true));
        let chosen = tree(root);
        assert_eq!(
            changes(&before, &chosen),
            [change(&format!("{slice}/cgroup.subtree_control"), "+cpu")],
            "only the missing controller is enabled; the launcher stays where it is"
        );
        cgroup.apply(&limits(), 777, 1000).unwrap();
        let written: Vec<String> = changes(&chosen, &tree(root))
            .into_iter()
            .map(|(path, content)| format!("{path}={content}"))
            .collect();
        assert_eq!(
            written,
            [
                format!("{slice}/app-3=<dir>"),
                format!("{slice}/app-3/cgroup.procs=777"),
                format!("{slice}/app-3/cpu.max=20000 100000"),
                format!("{slice}/app-3/memory.max=67108864"),
                format!("{slice}/app-3/memory.swap.max=0"),
                format!("{slice}/app-3/pids.max=33"),
            ]
        );
        kernel_drops_interface_files(&leaf);
        drop(cgroup);
        assert_eq!(tree(root), chosen);
    }

    #[test]
    fn v2_unprivileged_in_its_own_delegated_cgroup_moves_itself_into_a_leaf_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        cgroup(root, "", &[("cgroup.controllers", "cpu memory pids")]);
        // A unit with Delegate=yes whose only process is the launcher; cpu is not delegated.
        cgroup(
            root,
            "elastos.service",
            &[
                ("cgroup.controllers", "memory pids"),
                ("cgroup.subtree_control", ""),
                ("cgroup.procs", "4242\n"),
            ],
        );
        let before = tree(root);
        let cgroup = AppCgroup::choose(&simulated(root, false, "elastos.service"), "app-4", false);
        let leaf = root.join("elastos.service/app-4");
        assert_eq!(
            cgroup.mechanism(),
            &v2(leaf.clone(), false, false),
            "cpu not offered: memory and pids only, and it says so"
        );
        assert!(!cgroup.mechanism().cpu_limited());
        let chosen = tree(root);
        assert_eq!(
            changes(&before, &chosen),
            [
                change("elastos.service/cgroup.subtree_control", "+memory +pids"),
                change("elastos.service/elastos-launcher", "<dir>"),
                change("elastos.service/elastos-launcher/cgroup.procs", "4242"),
            ],
            "no internal processes: the launcher leaves the cgroup it hands controllers from"
        );
        cgroup.apply(&limits(), 777, 1000).unwrap();
        assert_eq!(
            changes(&chosen, &tree(root)),
            [
                change("elastos.service/app-4", "<dir>"),
                change("elastos.service/app-4/cgroup.procs", "777"),
                change("elastos.service/app-4/memory.max", "67108864"),
                change("elastos.service/app-4/pids.max", "33"),
            ],
            "no cpu.max without the cpu controller"
        );
        kernel_drops_interface_files(&leaf);
        drop(cgroup);
        assert_eq!(
            tree(root),
            chosen,
            "the launcher's own leaf stays: it lives there"
        );
    }

    #[test]
    fn v2_without_memory_and_pids_falls_back_to_rlimits_and_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // This machine's cgroup2 mount: only hugetlb.
        cgroup(
            root,
            "",
            &[
                ("cgroup.controllers", "hugetlb"),
                ("cgroup.subtree_control", ""),
            ],
        );
        cgroup(root, "delegated", &[("cgroup.controllers", "cpu")]);
        let before = tree(root);
        for (privileged, own) in [(true, "init.scope"), (false, "delegated"), (false, "")] {
            let cgroup = AppCgroup::choose(&simulated(root, privileged, own), "app-5", false);
            assert_eq!(cgroup.mechanism(), &LimitMechanism::Rlimits, "{own}");
            drop(cgroup);
            let fs = simulated(root, privileged, own);
            let (cgroup, fd) = AppCgroup::before_clone(&fs, "app-5", false).unwrap();
            assert!(fd.is_none(), "{own}");
            drop(cgroup);
            assert_eq!(tree(root), before, "{own}");
        }
        let disabled = AppCgroup::choose(&simulated(root, true, "x"), "app-5", true);
        assert_eq!(disabled.mechanism(), &LimitMechanism::Rlimits);
    }

    #[test]
    fn a_hybrid_host_clones_into_a_cgroup2_leaf_and_limits_with_v1_controllers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for controller in ["memory", "pids", "cpu"] {
            cgroup(root, controller, &[("tasks", "")]);
        }
        cgroup(root, "unified", &[("cgroup.controllers", "hugetlb")]);
        let fs = CgroupFs {
            root: root.to_owned(),
            unified: false,
            privileged: true,
            own: Some("".into()),
            pid: 4242,
            hybrid_v2: Some(root.join("unified")),
        };
        let before = tree(root);
        let (mut cgroup, fd) = AppCgroup::before_clone(&fs, "4242-1", false).unwrap();
        assert!(fd.is_some());
        assert_eq!(
            cgroup.mechanism(),
            &LimitMechanism::Rlimits,
            "not chosen yet"
        );
        let cloned = tree(root);
        assert_eq!(
            changes(&before, &cloned),
            [
                change("unified/elastos", "<dir>"),
                change("unified/elastos/4242-1", "<dir>")
            ],
            "no controller enabled in the cgroup2 tree: it only holds the process"
        );
        cgroup.cloned_into();
        cgroup.name_after_app(&fs, "app-1-4242-1", false);
        let leaf = |controller: &str| root.join(controller).join("elastos/app-1-4242-1");
        assert_eq!(
            cgroup.mechanism(),
            &LimitMechanism::CgroupV1 {
                memory: leaf("memory"),
                pids: leaf("pids"),
                cpu: Some(leaf("cpu")),
                unified: Some(root.join("unified/elastos/4242-1")),
                swap_limited: false,
            }
        );
        assert_eq!(
            cgroup.self_join_files(),
            [leaf("memory"), leaf("pids"), leaf("cpu")].map(|leaf| leaf.join("tasks"))
        );
        // What the kernel makes in each new v1 cgroup and the launcher hands to the jail.
        for controller in ["memory", "pids", "cpu"] {
            self::cgroup(
                root,
                &format!("{controller}/elastos/app-1-4242-1"),
                &[("tasks", "")],
            );
        }
        let cloned = tree(root);
        // The jail's host uid; run unprivileged (dev.sh runs these tests as a user too), only
        // our own uid can be given away to.
        let owner = if nix::unistd::geteuid().is_root() {
            1234
        } else {
            nix::unistd::geteuid().as_raw()
        };
        cgroup.apply(&limits(), 777, owner).unwrap();
        for tasks in cgroup.self_join_files() {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                fs::metadata(&tasks).unwrap().uid(),
                owner,
                "{}",
                tasks.display()
            );
        }
        let applied = tree(root);
        assert_eq!(
            changes(&cloned, &applied),
            [
                change("cpu/elastos/app-1-4242-1/cpu.cfs_period_us", "100000"),
                change("cpu/elastos/app-1-4242-1/cpu.cfs_quota_us", "20000"),
                change(
                    "memory/elastos/app-1-4242-1/memory.limit_in_bytes",
                    "67108864"
                ),
                change("pids/elastos/app-1-4242-1/pids.max", "33"),
            ]
        );
        for controller in ["memory", "pids", "cpu"] {
            kernel_drops_interface_files(&leaf(controller));
        }
        drop(cgroup);
        let left: Vec<String> = changes(&before, &tree(root))
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(
            left,
            [
                "cpu/elastos",
                "memory/elastos",
                "pids/elastos",
                "unified/elastos"
            ],
            "every leaf removed, the cgroup2 one too; the parents stay"
        );
    }

    #[test]
    fn every_mechanism_says_whether_the_cpu_is_limited() {
        let v1 = |cpu: Option<PathBuf>| LimitMechanism::CgroupV1 {
            memory: "/c/memory/elastos/a".into(),
            pids: "/c/pids/elastos/a".into(),
            cpu,
            unified: None,
            swap_limited: true,
        };
        assert!(v1(Some("/c/cpu/elastos/a".into()))
            .describe()
            .contains("CPU rate limited"));
        assert!(v1(None).describe().contains("CPU rate NOT limited"));
        assert!(
            v1(None).describe().contains("under /c/*/elastos ("),
            "{}",
            v1(None).describe()
        );
        assert!(LimitMechanism::Rlimits
            .describe()
            .contains("CPU rate NOT limited"));
        let leaf = v2("/c/elastos/a".into(), true, true);
        assert!(leaf
            .describe()
            .starts_with("cgroup v2 under /c/elastos (memory.max"));
    }
}
