//! What the launcher hands the loader across `execve`, and what the loader reports back.
//!
//! The loader starts with a fixed fd layout (see [`fds`]); it reads one JSON [`LoaderInput`] from
//! [`fds::INPUT`] until EOF and writes JSON lines of [`Report`] to [`fds::REPORT`]: `Ready` once
//! the entry runs (or `Failed`/`ExecFailed` instead), later `Exited`/`Killed` when it ends.

use std::path::PathBuf;

use elastos_policy::JailPlan;
use serde::{Deserialize, Serialize};

/// The loader's file descriptors at start.
pub mod fds {
    /// The app's IPC socket; stays open in the app as `ELASTOS_IPC_FD=3`.
    pub const IPC: i32 = 3;
    /// Read end of the pipe carrying the [`super::LoaderInput`]; closed after reading.
    pub const INPUT: i32 = 4;
    /// Write end of the report pipe; close-on-exec.
    pub const REPORT: i32 = 5;
    /// The first of the host mount sources (`O_PATH`), in [`super::LoaderInput::mounts`] order;
    /// closed as soon as the jail's filesystem is built.
    pub const FIRST_SOURCE: i32 = 6;
}

/// The loader's whole input.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoaderInput {
    /// The jail to build.
    pub plan: JailPlan,
    /// `plan.mounts`, with every host source resolved by the launcher.
    pub mounts: Vec<ResolvedMount>,
    /// Set the rlimit-based memory cap (no cgroup could be used).
    pub memory_rlimit: bool,
    /// Run even where the kernel has no Landlock or seccomp (the CLI's loudly named override).
    pub allow_without_kernel_sandbox: bool,
}

/// A mount step whose host source the launcher has already opened (as the launcher's user, which
/// may be able to reach paths the jail's uid cannot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResolvedMount {
    /// Bind the source fd (`fds::FIRST_SOURCE + source`) onto `jail`.
    Bind {
        source: u32,
        jail: PathBuf,
        is_dir: bool,
        writable: bool,
        device: bool,
    },
    /// Create a symlink.
    Symlink { target: PathBuf, jail: PathBuf },
    /// A fresh tmpfs.
    Tmpfs {
        jail: PathBuf,
        size_bytes: u64,
        mode: u32,
    },
    /// An empty directory.
    Dir { jail: PathBuf, mode: u32 },
    /// procfs of the jail's pid namespace.
    Proc { jail: PathBuf },
}

/// One line on the report pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    /// The jail is complete and the entry is running (the app side sends it to init just before
    /// execve; init passes it on only once the exec succeeded).
    Ready {
        /// The Landlock ABI that was enforced (0: none).
        landlock_abi: u32,
        /// Whether every requested Landlock restriction was enforced.
        landlock_fully_enforced: bool,
    },
    /// A jail step failed; the app never ran.
    Failed {
        /// The step (see `jail::STEPS`).
        step: String,
        /// What went wrong.
        message: String,
        /// The errno, when the failure came from the kernel.
        errno: Option<i32>,
    },
    /// execve of the entry failed (everything else had succeeded).
    ExecFailed { entry: PathBuf, errno: i32 },
    /// The app exited with this code (sent by the jail's init when the app is gone).
    Exited { code: i32 },
    /// The app was killed by this signal.
    Killed { signal: i32 },
}
