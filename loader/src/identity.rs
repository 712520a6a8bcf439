//! Which host uid/gid a jail's processes are.

use uuid::Uuid;

/// Which host uid/gid the jail's processes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HostIdentity {
    /// Host uid of the jail (and of the app's home files).
    pub uid: u32,
    /// Host gid.
    pub gid: u32,
    /// Launched by root: the jail gets its own unprivileged uid rather than root's.
    pub launched_by_root: bool,
}

/// First host uid of the range from which a root launcher gives each app its own uid.
pub const ROOT_MODE_UID_BASE: u32 = 0x5000_0000;

impl HostIdentity {
    /// The identity for `app_id` when launched by the current user. As root, each app gets a
    /// dedicated unprivileged host uid/gid derived from its id (FNV-1a, 24 bits), so apps never
    /// run as host root and two apps rarely share a uid; otherwise the caller's uid/gid.
    pub fn for_app(app_id: &Uuid) -> HostIdentity {
        let uid = nix::unistd::getuid().as_raw();
        if uid == 0 {
            let hash = app_id.as_bytes().iter().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
            });
            let id = ROOT_MODE_UID_BASE + (hash & 0x00ff_ffff);
            HostIdentity {
                uid: id,
                gid: id,
                launched_by_root: true,
            }
        } else {
            HostIdentity {
                uid,
                gid: nix::unistd::getgid().as_raw(),
                launched_by_root: false,
            }
        }
    }
}
