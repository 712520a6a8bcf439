//! elastos-policy: what an app's jail is, as data. Pure: no syscalls, no I/O, no unsafe; it
//! builds and is tested on any machine.
//!
//! It owns:
//! - [`manifest`]: parsing and checking `manifest.toml` ([`Manifest`]).
//! - [`ceilings`]: the host's ceilings on a manifest's limits ([`Ceilings`]), parsed from the
//!   text of the administrator's and the user's `limits.toml` (the host reads the files).
//! - [`syscalls`]: THE seccomp allow-list, one table of (syscall, argument check, reason).
//! - [`seccomp`]: compiling that table to BPF ([`SeccompProgram`]).
//! - [`linkage`]: how the entry is linked ([`EntryLinkage`], from bytes of its ELF header that
//!   the host reads), which decides whether the dynamic loader is executable in the jail.
//! - [`oci_plan`]: the [`JailPlan`] of an OCI container (`elastos oci`): its image as `/`.
//! - [`plan`]: the [`JailPlan`], the contract between the launcher and the loader: mounts,
//!   Landlock rules, seccomp program, limits, environment, entry and argv. It renders as text
//!   for `elastos policy show` ([`JailPlan::render_text`]) and serializes to JSON.
//!
//! Non-features, on purpose:
//! - It applies nothing. Namespaces, mounts, Landlock and seccomp are the loader's job (the only
//!   crate with `unsafe`); this crate only says what they must be, so the policy can be reviewed
//!   and snapshot-tested without a kernel.
//! - It verifies no signatures: a [`Manifest`] is checked for shape, not for origin
//!   (`elastos-bundle` does that before parsing it).
//! - No per-app syscall or filesystem tuning: every app gets the same allow-list and the same
//!   filesystem; the manifest can only lower limits and add environment variables.
//! - x86_64 and aarch64 only: the allow-list is reviewed for those two.

#![forbid(unsafe_code)]

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("elastos-policy supports x86_64 and aarch64 only: the syscall table is per arch");

use std::path::PathBuf;

mod bpf;
pub mod ceilings;
pub mod linkage;
pub mod manifest;
pub mod oci_plan;
pub mod plan;
mod render;
pub mod seccomp;
pub mod syscalls;

pub use ceilings::{
    Ceilings, CeilingsError, Excess, ExcessError, LimitOverrides, OnExcess, OverrideError,
};
pub use linkage::EntryLinkage;
pub use manifest::{Manifest, ManifestError};
pub use oci_plan::{ContainerJail, ContainerMount, Masked};
pub use plan::{
    jail_paths, Guest, HostEnv, JailPlan, KernelFs, LandlockRule, MountEntry, PathAccess,
    ResourceLimits, Rlimit, CPU_PERIOD_US, DEVPTS_MAX_PTYS, IPC_FD, JAIL_GID, JAIL_HOSTNAME,
    JAIL_UID, SYSFS_READABLE,
};
pub use seccomp::{BpfInstruction, IoctlRow, SeccompProgram, SyscallRow};

/// Why a jail could not be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The manifest was rejected.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A host path given to [`JailPlan::build`] is relative.
    #[error("the {what} path {} is not absolute; hint: pass absolute host paths", path.display())]
    NotAbsolute {
        /// `bundle` or `home`.
        what: &'static str,
        /// The relative path.
        path: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_variant_formats() {
        let manifest = PolicyError::from(ManifestError::MissingKey { key: "app.id" });
        assert!(manifest.to_string().starts_with("`app.id` is missing"));
        let relative = PolicyError::NotAbsolute {
            what: "home",
            path: "h".into(),
        };
        assert_eq!(
            relative.to_string(),
            "the home path h is not absolute; hint: pass absolute host paths"
        );
    }
}
