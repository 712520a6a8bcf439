//! Which host uid/gid a jail's processes are.

use std::path::Path;

use uuid::Uuid;

use crate::subordinate::SubordinateIds;

/// Which host uid/gid the jail's processes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HostIdentity {
    /// Host uid of the jail (and of the app's home files).
    pub uid: u32,
    /// Host gid.
    pub gid: u32,
    /// Launched by root: the jail gets its own unprivileged uid rather than root's.
    pub launched_by_root: bool,
    /// Launched by a user, as one of its subordinate ids (see `crate::subordinate`) rather than
    /// its own uid.
    pub subordinate: bool,
}

/// First host uid of the range from which a root launcher gives each app its own uid.
pub const ROOT_MODE_UID_BASE: u32 = 0x5000_0000;

/// First host uid of the range from which a root launcher picks the owner of each jail's user
/// namespace ([`HostIdentity::namespace_owner`]).
pub const NAMESPACE_OWNER_UID_BASE: u32 = 0x5100_0000;

/// FNV-1a, 24 bits: an offset into a uid range.
pub(crate) fn uid_offset(bytes: &[u8]) -> u32 {
    let hash = bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    hash & 0x00ff_ffff
}

impl HostIdentity {
    /// The host uid that owns the next jail's user namespace when launched by root (None
    /// otherwise: an unprivileged launcher's namespaces are its own).
    ///
    /// The kernel charges the jail's inotify instances, pending signals and namespaces to this
    /// uid at the host's level (see `elastos_handoff::kernel_counters`), so it must not be root.
    /// It is picked before the bundle, and so the app, is known (the jail's first process is
    /// made while the bundle is verified), so it cannot be the app's uid: it is one per launch
    /// (launcher pid and a sequence number), from a range of its own that no process runs as,
    /// so no jail shares these counters with root or anyone else, and two jails rarely do.
    pub fn namespace_owner() -> Option<u32> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if !nix::unistd::getuid().is_root() {
            return None;
        }
        let launch = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut key = std::process::id().to_le_bytes().to_vec();
        key.extend_from_slice(&launch.to_le_bytes());
        Some(NAMESPACE_OWNER_UID_BASE + uid_offset(&key))
    }

    /// The identity for `app_id` when launched by the current user. As root, each app gets a
    /// dedicated unprivileged host uid/gid derived from its id (FNV-1a, 24 bits), so apps never
    /// run as host root and two apps rarely share a uid; otherwise the caller's uid/gid.
    pub fn for_app(app_id: &Uuid) -> HostIdentity {
        let uid = nix::unistd::getuid().as_raw();
        if uid == 0 {
            let id = ROOT_MODE_UID_BASE + uid_offset(app_id.as_bytes());
            HostIdentity {
                uid: id,
                gid: id,
                launched_by_root: true,
                subordinate: false,
            }
        } else {
            HostIdentity {
                uid,
                gid: nix::unistd::getgid().as_raw(),
                launched_by_root: false,
                subordinate: false,
            }
        }
    }

    /// The identity of `app_id`, whose home is `home`, when launched by the current user with
    /// `subordinate` ids (or without, see [`HostIdentity::for_app`]): one of them, stable per
    /// app ([`SubordinateIds::ids_for`]). A jail without a home (whose files are all the
    /// launcher's, such as a container's root filesystem) keeps the launcher's own uid: the
    /// home is what records the app's id, and what it must own.
    pub fn for_app_home(
        app_id: &Uuid,
        home: Option<&Path>,
        subordinate: Option<&SubordinateIds>,
    ) -> HostIdentity {
        match (subordinate, home) {
            (Some(ids), Some(home)) if !nix::unistd::getuid().is_root() => {
                let (uid, gid) = ids.ids_for(app_id, home);
                HostIdentity {
                    uid,
                    gid,
                    launched_by_root: false,
                    subordinate: true,
                }
            }
            _ => HostIdentity::for_app(app_id),
        }
    }
}
