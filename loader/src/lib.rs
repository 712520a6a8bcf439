//! The kernel side of elastos: the launcher that creates an app's namespaces and supervises it,
//! and the loader that builds the jail around itself and execs the app.
//!
//! This is the only crate that talks to the kernel to build a jail, and all of its `unsafe` code
//! and raw syscalls are in [`sys`]. The policy (what to mount, which syscalls, which Landlock
//! rules) is decided by `elastos-policy`; this crate only carries it out, in the order of
//! [`jail::Step::ORDER`]:
//!
//! 1. launcher ([`launch`]): opens host sources, sets up the cgroup, clone()s into new user,
//!    mount, pid, net, ipc and uts namespaces, writes the id maps, execs the loader;
//! 2. loader (the `elastos-loader` binary, crate `loader/exe`): private mounts, cgroup
//!    namespace, hostname, filesystem on a tmpfs, pivot_root, rlimits, a nested user namespace
//!    for the app's uid, capabilities dropped, no_new_privs, Landlock, seccomp (last), execve of
//!    the entry. It links neither libc nor std, so its start costs an exec and nothing more; it
//!    shares [`handoff`] (what crosses the exec) with this crate.
//!
//! Non-features: no network inside the jail (an empty net namespace is the point), no setuid
//! helper (unprivileged users rely on user namespaces), no seccomp user-notification.

extern crate alloc;

pub mod cgroup;
pub mod handoff;
pub mod launch;
pub mod sys;

pub use cgroup::LimitMechanism;
pub use launch::{
    kill_jail, launch, spawn, stop_jail, AppExit, BlockedSignals, FirstEvent, HostIdentity,
    JailFacts, LaunchError, LaunchOptions, PendingJail, RunningJail,
};
pub use sys::release_free_heap;
