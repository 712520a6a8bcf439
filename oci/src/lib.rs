//! elastos-oci: an OCI runtime spec (an engine's `config.json`) translated into an elastos jail.
//!
//! Pure: no I/O of its own, no privileges. The host reads the bundle (the spec's bytes, the
//! rootfs's top-level names, whether a program exists in it) and hands them over; this crate
//! decides, field by field, what the jail does with the spec:
//!
//! - **refused** (an [`OciError::Refused`] naming the field): whatever would give the container
//!   more than the jail gives any app: a privilege-granting capability (`CAP_SYS_ADMIN`,
//!   `CAP_SYS_PTRACE`, ...), a host namespace (`linux.namespaces[].path` naming one of pid 1's,
//!   or an isolating namespace left out, which means the host's), a device beyond the stateless ones, a bind of
//!   the host's /proc, /sys or /dev, a filesystem type other than bind and tmpfs, host hooks;
//! - **dropped with a warning** ([`Warning`]): what engines ask for by default and the jail
//!   cannot give without weakening itself: the ordinary capabilities (podman asks for 11, docker
//!   and containerd for 14: the jail grants none), cgroupfs mounts (and sysfs, devpts and mqueue
//!   anywhere but their usual places), the engine's /etc/hosts-style files inside the read-only
//!   image, another container's namespace
//!   (a Kubernetes pod's sandbox: the jail makes its own instead, never joining one), sysctls, LSM labels, limits it
//!   does not enforce (CPU shares and sets, block I/O);
//! - **mapped**: the process (argv, environment, working directory, a terminal: a
//!   pseudo-terminal the runtime makes; also a process `elastos oci exec` adds, through
//!   [`translate_process`]), its `user` ids and the `hostname` inside the jail's namespaces,
//!   masked paths (under an empty tmpfs or /dev/null), read-only paths (accepted where nothing
//!   is writable, refused inside a writable mount), the other rlimits (only ever lowered), the rootfs (read-only as
//!   `/`), volumes (binds: read-only, or writable and never executable) and tmpfs mounts, the
//!   jail's /proc and /dev where the spec places them and the kernel filesystems engines ask
//!   for as the jail's own ([`elastos_policy::KernelFs`]: /dev/shm, devpts, mqueue, a
//!   read-only sysfs), the
//!   memory, pids, open-file and CPU quota (`--cpus`) limits, and the spec's seccomp profile, which only ever removes
//!   syscalls from the jail's allow-list ([`elastos_policy::SeccompProgram::compile_without`]).
//!
//! The outcome is an [`elastos_policy::ContainerJail`], planned by
//! [`elastos_policy::JailPlan::for_container`].

#![forbid(unsafe_code)]

mod translate;
mod update;

use std::path::PathBuf;

pub use oci_spec::runtime::{self, Spec};
pub use translate::{translate, translate_process, Command, Host, PathKind, Translation};
pub use update::ResourceUpdate;

/// The OCI runtime-spec version this runtime implements (`elastos oci state`, `features`).
pub const OCI_VERSION: &str = "1.2.0";

/// The capabilities engines ask for by default (podman's 11, docker's and containerd's 14):
/// dropped with a warning. Every other capability refuses the container.
pub const ORDINARY_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Why a spec cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// `config.json` is not a valid runtime spec.
    #[error("config.json is not a valid OCI runtime spec: {0}")]
    Parse(#[source] serde_json::Error),
    /// The spec asks for something the jail forbids.
    #[error("config.json {field} = {value}: refused: {reason}")]
    Refused {
        /// The spec's field, e.g. `process.capabilities.bounding`.
        field: String,
        /// What it asked for, e.g. `CAP_SYS_ADMIN`.
        value: String,
        /// Why the jail refuses it.
        reason: String,
    },
    /// The spec is incomplete or inconsistent.
    #[error("config.json {field}: {reason}")]
    Invalid {
        /// The spec's field.
        field: String,
        /// What is wrong, and what was expected.
        reason: String,
    },
    /// `process.args[0]` is not in the rootfs.
    #[error(
        "config.json process.args[0] = {program:?}: executable file not found in the rootfs \
         (searched {searched})"
    )]
    ProgramNotFound {
        /// The program as the spec names it.
        program: String,
        /// Where it was looked for.
        searched: String,
    },
    /// The container id cannot be used.
    #[error(
        "invalid container id {id:?}: expected 1 to 1024 characters of letters, digits, \
         `_`, `+`, `-` and `.`, not `.` or `..`"
    )]
    InvalidId {
        /// The id given.
        id: String,
    },
}

/// Something of the spec the jail does not do, named so the operator can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The spec's field.
    pub field: String,
    /// What happens instead.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config.json {}: {}", self.field, self.message)
    }
}

/// Parses an engine's `config.json`.
pub fn parse_spec(bytes: &[u8]) -> Result<Spec, OciError> {
    serde_json::from_slice(bytes).map_err(OciError::Parse)
}

/// Checks a container id the engine gave: it names a directory of the runtime's state.
pub fn validate_id(id: &str) -> Result<(), OciError> {
    let valid = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(OciError::InvalidId { id: id.to_owned() })
    }
}

/// The jail's app id for a container: a stable UUID from its id, so the host uid and the cgroup
/// of one container are the same at every start and differ between containers.
pub fn app_id(container_id: &str) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("elastos-oci:{container_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// A container's status, as `state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created: the jail waits for `start`.
    Created,
    /// Its process runs.
    Running,
    /// Its jail is frozen (`pause`; runc's state name for it).
    Paused,
    /// Its process has ended.
    Stopped,
}

/// The OCI state of a container (`elastos oci state`), as the runtime spec defines it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// [`OCI_VERSION`].
    pub oci_version: String,
    /// The container's id.
    pub id: String,
    /// Its status.
    pub status: Status,
    /// The pid the engine waits for (0 once stopped).
    pub pid: i32,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The spec's annotations.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for good in ["abc", "a.b-c_d+e", &"x".repeat(1024)] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(1025), "é"] {
            let err = validate_id(bad).unwrap_err();
            assert!(err.to_string().contains("invalid container id"), "{err}");
        }
    }

    #[test]
    fn app_ids_are_stable_and_distinct() {
        assert_eq!(app_id("a"), app_id("a"));
        assert_ne!(app_id("a"), app_id("b"));
    }

    #[test]
    fn the_state_serializes_as_the_spec_says() {
        let state = State {
            oci_version: OCI_VERSION.into(),
            id: "c".into(),
            status: Status::Created,
            pid: 42,
            bundle: "/b".into(),
            annotations: Default::default(),
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["ociVersion"], OCI_VERSION);
        assert_eq!(json["status"], "created");
        assert_eq!(json["pid"], 42);
        assert_eq!(json["bundle"], "/b");
    }
}
