//! The kernel side of elastos on the host: the launcher that creates an app's namespaces, hands
//! the plan to the loader and supervises the app.
//!
//! With the loader (`loader/exe`), this is the only code that talks to the kernel to build a
//! jail; this crate's `unsafe` code and raw syscalls are all in [`sys`]. Modules: `spawn`
//! (creating the jail's first process and handing it the plan), `join` (adding a process to a
//! running jail: `elastos oci exec`), `input` (the plan flattened
//! for the loader: pure, unit-tested without root), `supervise` (waiting, signals through
//! pidfds, the app's stdio relayed in the same poll loop), `stdio` (the app's pipes or
//! pseudo-terminal: never the launcher's own fds), [`cgroup`] (limits), [`home_quota`] (the
//! home as an image of the quota's size), `identity` (the host uid an app runs as),
//! [`subordinate`] (a user's subordinate ids, which its apps run as), [`holder`] (the user
//! namespace those ids are mapped in once, which the user's jails are nested in), `error`. The policy (what
//! to mount, which syscalls, which Landlock rules) is
//! decided by `elastos-policy`; this crate and the loader only carry it out:
//!
//! 1. launcher ([`spawn`], then [`PendingJail::start`]): clone()s the jail's first process into
//!    new user, mount, pid, ipc and uts namespaces (it makes its network namespace itself, the
//!    app's fd 3 in it, and closes every fd it was not given), writes the id maps, sends it the
//!    host paths to open, the loader's input and makes the cgroup; that process execs the
//!    loader;
//! 2. loader (the `elastos-loader` binary, crate `loader/exe`, steps in the order of its
//!    `jail::Step`): private mounts, hostname, filesystem on a tmpfs, cgroup join, pivot_root,
//!    cgroup namespace, rlimits and kernel counter limits, a nested user namespace for the
//!    app's uid, capabilities dropped, no_new_privs, Landlock, seccomp (last), execve of the
//!    entry. It links neither libc nor std, so its start costs an exec and nothing more; it
//!    shares `elastos-handoff` (what crosses the exec) with this crate.
//!
//! Non-features: no network inside the jail (an empty net namespace is the point), no setuid
//! helper of our own (unprivileged users rely on user namespaces, and on the system's
//! `newuidmap`/`newgidmap` for their subordinate ids, run once per holder), no seccomp
//! user-notification.

#![deny(unsafe_code)]

pub mod cgroup;
mod error;
pub mod holder;
pub mod home_quota;
mod identity;
mod input;
mod join;
mod spawn;
mod stdio;
pub mod subordinate;
mod supervise;
// The one module with `unsafe`: clone() and the raw syscalls of the pre-exec child, pidfd
// signals, fcntl. Each block says why it is sound.
#[allow(unsafe_code)]
pub mod sys;

pub use cgroup::LimitMechanism;
pub use error::LaunchError;
pub use identity::{HostIdentity, ROOT_MODE_UID_BASE};
pub use input::MAX_MOUNT_SOURCES;
pub use join::{exec_in_jail, JailToJoin};
pub use spawn::{spawn, LaunchOptions, PendingJail, StartStep};
pub use stdio::CapturedOutput;
pub use subordinate::{NoSubordinateIds, SubordinateIds};
pub use supervise::{AppExit, BlockedSignals, FirstEvent, JailFacts, JailHandle, RunningJail};
pub use sys::release_free_heap;
