//! Memory and thread limits on the host side: a cgroup for the app when one can be used, else the
//! loader falls back to rlimits. Which one was used is reported ([`LimitMechanism`]).
//!
//! Order of preference: cgroup v2 (root: under `/sys/fs/cgroup/elastos`; unprivileged: next to
//! our own cgroup when systemd delegated its parent to us), cgroup v1 `memory` + `pids`
//! controllers (root, hybrid hosts), rlimits (RLIMIT_AS for memory: address space, not resident
//! memory, so it is the coarsest of the three; RLIMIT_NPROC counts the threads of the jail's own
//! user namespace only).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use elastos_policy::ResourceLimits;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// How the app's memory and thread limits are enforced.
///
/// `swap_limited` says whether the memory limit also covers swap. Without it, a memory limit
/// only bounds what is resident: once the app reaches it, the kernel swaps its pages out and it
/// goes on growing in swap (and tmpfs pages go to swap too). cgroup v2: `memory.swap.max` is set
/// to 0; v1: `memory.memsw.limit_in_bytes` (memory plus swap) to the memory limit. It is false
/// where the kernel keeps no swap accounting (built without it or booted with
/// `swapaccount=0`): the file is absent, and a host with swap enabled then lets the app use as
/// much swap as it likes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "mechanism", rename_all = "snake_case")]
pub enum LimitMechanism {
    /// A cgroup v2 leaf (memory.max, memory.swap.max, pids.max).
    CgroupV2 { path: PathBuf, swap_limited: bool },
    /// cgroup v1 memory and pids controllers (memory.limit_in_bytes,
    /// memory.memsw.limit_in_bytes, pids.max).
    CgroupV1 {
        memory: PathBuf,
        pids: PathBuf,
        swap_limited: bool,
    },
    /// No usable cgroup: RLIMIT_AS and RLIMIT_NPROC inside the jail. RLIMIT_AS counts address
    /// space, so it bounds swap too.
    Rlimits,
}

/// cgroup v2: the app's swap limit, in the leaf and present in every non-root cgroup when the
/// kernel accounts swap.
const V2_SWAP_MAX: &str = "memory.swap.max";
/// cgroup v1: the app's memory plus swap limit, present in every memory cgroup (the root
/// included) when the kernel accounts swap.
const V1_MEMSW_LIMIT: &str = "memory.memsw.limit_in_bytes";

/// A cgroup could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// Creating, writing or removing a cgroup file failed.
    #[error("cgroup file {path} (hint: set ELASTOS_CGROUP=none to use rlimits)")]
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

/// The app's cgroup(s); removed on drop.
#[derive(Debug)]
pub struct AppCgroup {
    mechanism: LimitMechanism,
}

impl AppCgroup {
    /// Chooses how the limits are enforced and where the app's cgroup(s) go, creating nothing yet
    /// (see [`AppCgroup::apply`]), so that the launcher can create them while the jail is being
    /// built. `disabled` forces rlimits.
    pub fn choose(name: &str, disabled: bool) -> AppCgroup {
        let root = Path::new(CGROUP_ROOT);
        let is_root = nix::unistd::geteuid().is_root();
        let mechanism = if disabled {
            LimitMechanism::Rlimits
        } else if is_cgroup2(root) {
            match v2_parent(root, is_root) {
                Some(parent) => LimitMechanism::CgroupV2 {
                    swap_limited: parent.join(V2_SWAP_MAX).exists(),
                    path: parent.join(name),
                },
                None => LimitMechanism::Rlimits,
            }
        } else if is_root && root.join("memory").is_dir() && root.join("pids").is_dir() {
            LimitMechanism::CgroupV1 {
                memory: root.join("memory/elastos").join(name),
                pids: root.join("pids/elastos").join(name),
                swap_limited: root.join("memory").join(V1_MEMSW_LIMIT).exists(),
            }
        } else {
            LimitMechanism::Rlimits
        };
        AppCgroup { mechanism }
    }

    /// The `tasks` files through which the jail's first process joins the cgroups itself (cgroup
    /// v1): writing "0" there moves only the writing thread, which the kernel does without the
    /// global threadgroup lock that a write of a pid to `cgroup.procs` takes. That lock waits
    /// for an RCU grace period, 5-15 ms in one launch of ten on this machine.
    pub fn self_join_files(&self) -> Vec<PathBuf> {
        match &self.mechanism {
            LimitMechanism::CgroupV1 { memory, pids, .. } => {
                vec![memory.join("tasks"), pids.join("tasks")]
            }
            LimitMechanism::CgroupV2 { .. } | LimitMechanism::Rlimits => Vec::new(),
        }
    }

    /// Creates the cgroup(s) with `limits`. cgroup v2: moves `pid` in; v1: lets the jail's host
    /// uid `owner` write the [`AppCgroup::self_join_files`], through which `pid` joins itself.
    pub fn apply(&self, limits: &ResourceLimits, pid: i32, owner: u32) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        match &self.mechanism {
            LimitMechanism::CgroupV2 { path, swap_limited } => {
                make_dir(path)?;
                write(&path.join("memory.max"), &limits.memory_bytes.to_string())?;
                if *swap_limited {
                    write(&path.join(V2_SWAP_MAX), "0")?;
                }
                write(&path.join("pids.max"), &tasks_max(limits))?;
                write(&path.join("cgroup.procs"), &pid)
            }
            LimitMechanism::CgroupV1 {
                memory,
                pids,
                swap_limited,
            } => {
                for leaf in [memory, pids] {
                    if let Some(parent) = leaf.parent() {
                        make_dir(parent)?;
                    }
                    make_dir(leaf)?;
                }
                let memory_bytes = limits.memory_bytes.to_string();
                // In this order: memsw may never be set below limit_in_bytes, and both start
                // unlimited in a new cgroup.
                write(&memory.join("memory.limit_in_bytes"), &memory_bytes)?;
                if *swap_limited {
                    write(&memory.join(V1_MEMSW_LIMIT), &memory_bytes)?;
                }
                write(&pids.join("pids.max"), &tasks_max(limits))?;
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

    fn dirs(&self) -> Vec<&Path> {
        match &self.mechanism {
            LimitMechanism::CgroupV2 { path, .. } => vec![path],
            LimitMechanism::CgroupV1 { memory, pids, .. } => vec![memory, pids],
            LimitMechanism::Rlimits => vec![],
        }
    }
}

impl Drop for AppCgroup {
    fn drop(&mut self) {
        for dir in self.dirs() {
            // The app has been reaped by now; a just-exited task can keep a cgroup busy for a
            // moment, so retry briefly instead of leaking the directory.
            for _ in 0..50 {
                match fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
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

/// pids.max: the app's threads plus the jail's init.
fn tasks_max(limits: &ResourceLimits) -> String {
    (limits.threads + 1).to_string()
}

fn is_cgroup2(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The v2 cgroup under which the app's leaf goes, if memory and pids can be controlled there.
fn v2_parent(root: &Path, is_root: bool) -> Option<PathBuf> {
    let parent = if is_root {
        let parent = root.join("elastos");
        make_dir(&parent).ok()?;
        // Controllers must be enabled on every level down to the leaf's parent.
        write(&root.join("cgroup.subtree_control"), "+memory +pids").ok()?;
        write(&parent.join("cgroup.subtree_control"), "+memory +pids").ok()?;
        parent
    } else {
        // Unprivileged: only if systemd delegated our cgroup's parent to us (writable, with memory
        // and pids enabled for its children).
        let own = fs::read_to_string("/proc/self/cgroup").ok()?;
        let own = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        let parent = root
            .join(own.trim_start_matches('/'))
            .parent()?
            .to_path_buf();
        nix::unistd::access(&parent, nix::unistd::AccessFlags::W_OK).ok()?;
        parent
    };
    let enabled = fs::read_to_string(parent.join("cgroup.subtree_control")).ok()?;
    let has = |c: &str| enabled.split_whitespace().any(|e| e == c);
    (has("memory") && has("pids")).then_some(parent)
}
