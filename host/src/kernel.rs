//! What this host's kernel offers the jail, and what `elastos run` would therefore enforce and
//! what it would have to skip (`elastos info`). Each feature is asked of the kernel the way the
//! launcher and the loader use it: Landlock through its syscall (securityfs may not be
//! mounted), seccomp's filter actions from procfs, user namespaces from their sysctls, cgroups
//! from this process's mount table, and the limit mechanism by the launcher's own choice
//! ([`AppCgroup::choose`]).

use std::fs;
use std::path::PathBuf;

use elastos_handoff::landlock_fs::ABI_WANTED as LANDLOCK_ABI_WANTED;
use elastos_loader::cgroup::{AppCgroup, CgroupFs};
use elastos_loader::LimitMechanism;
use serde::Serialize;

/// The kernel's features and what a run would make of them.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// What the kernel offers.
    pub kernel: KernelFeatures,
    /// What `elastos run` would do with it, one entry per layer of the jail.
    pub run: Vec<Layer>,
}

/// The kernel features the jail is built from.
#[derive(Debug, Clone, Serialize)]
pub struct KernelFeatures {
    /// `uname -r`.
    pub release: Option<String>,
    /// Whether elastos runs as root here (root and users get different cgroups and id maps).
    pub root: bool,
    /// Landlock.
    pub landlock: Landlock,
    /// seccomp.
    pub seccomp: Seccomp,
    /// User namespaces.
    pub user_namespaces: UserNamespaces,
    /// cgroups.
    pub cgroups: Cgroups,
    /// This user's subordinate ids, which its apps run as (not looked up for root, whose apps
    /// get uids of their own).
    pub subordinate_ids: Option<elastos_loader::SubordinateIds>,
    /// Why there are none, for a user without them: its apps run as its own uid.
    pub subordinate_ids_missing: Option<String>,
}

/// Landlock, as its syscall answers.
#[derive(Debug, Clone, Serialize)]
pub struct Landlock {
    /// The kernel's ABI version; `None` without Landlock.
    pub abi: Option<u32>,
    /// Why there is none (the syscall's error), when there is none.
    pub unavailable: Option<String>,
}

/// seccomp filter mode.
#[derive(Debug, Clone, Serialize)]
pub struct Seccomp {
    /// Whether filters can be installed (`/proc/sys/kernel/seccomp/actions_avail` exists).
    pub filter: bool,
    /// The filter actions the kernel offers.
    pub actions: Vec<String>,
}

/// User namespaces, from their sysctls.
#[derive(Debug, Clone, Serialize)]
pub struct UserNamespaces {
    /// `user.max_user_namespaces` (0 disables them for everyone).
    pub max: Option<u64>,
    /// `kernel.unprivileged_userns_clone` (Debian's switch for unprivileged users), when the
    /// kernel has it.
    pub unprivileged_clone: Option<bool>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu), when the kernel has it.
    pub apparmor_restricted: Option<bool>,
    /// Whether this user can create one, by the above.
    pub usable: bool,
}

/// The cgroup hierarchies mounted.
#[derive(Debug, Clone, Serialize)]
pub struct Cgroups {
    /// `v2` (unified at /sys/fs/cgroup), `hybrid` (v1 controllers and a cgroup2 mount),
    /// `v1` or `none`.
    pub layout: &'static str,
    /// Where cgroup2 is mounted.
    pub v2_mount: Option<PathBuf>,
    /// The controllers of the cgroup2 root (`cgroup.controllers`).
    pub v2_controllers: Vec<String>,
    /// The v1 controllers mounted, each in its own hierarchy.
    pub v1_controllers: Vec<String>,
}

/// One layer of the jail and what a run would do with it.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    /// `namespaces`, `landlock`, `seccomp`, `limits`, `privileges`.
    pub layer: &'static str,
    /// What happens to it.
    pub state: LayerState,
    /// How, or why not.
    pub detail: String,
}

/// What a run does with a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerState {
    /// In force as designed.
    Enforced,
    /// In force with less than the design asks (named in the detail).
    Partial,
    /// The run refuses to start without it (unless told to skip it, where it can be).
    Refused,
}

/// What Landlock adds at each ABI past the first, as the jail uses it.
const LANDLOCK_ADDITIONS: [(u32, &str); 5] = [
    (2, "REFER (linking and renaming across directories)"),
    (3, "TRUNCATE"),
    (4, "TCP bind and connect rules"),
    (5, "IOCTL_DEV (ioctl on devices)"),
    (6, "scoping of abstract unix sockets and signals"),
];

impl HostReport {
    /// Detects the features of this host.
    pub fn detect() -> HostReport {
        let kernel = KernelFeatures::detect();
        let run = kernel
            .layers(AppCgroup::choose(&CgroupFs::detect(), "elastos-info", false).mechanism());
        HostReport { kernel, run }
    }
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn flag(path: &str) -> Option<bool> {
    read(path).map(|value| value != "0")
}

impl KernelFeatures {
    fn detect() -> KernelFeatures {
        let root = nix::unistd::geteuid().is_root();
        let landlock = match elastos_loader::sys::landlock_abi() {
            Ok(abi) => Landlock {
                abi: Some(abi),
                unavailable: None,
            },
            Err(error) => Landlock {
                abi: None,
                unavailable: Some(error.to_string()),
            },
        };
        let actions = read("/proc/sys/kernel/seccomp/actions_avail");
        let max = read("/proc/sys/user/max_user_namespaces").and_then(|v| v.parse().ok());
        let unprivileged_clone = flag("/proc/sys/kernel/unprivileged_userns_clone");
        let apparmor_restricted = flag("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
        let allowed_unprivileged =
            unprivileged_clone != Some(false) && apparmor_restricted != Some(true);
        let (subordinate_ids, subordinate_ids_missing) = match root {
            true => (None, None),
            false => match elastos_loader::SubordinateIds::of_current_user() {
                Ok(ids) => (Some(ids), None),
                Err(why) => (None, Some(why.to_string())),
            },
        };
        KernelFeatures {
            release: read("/proc/sys/kernel/osrelease"),
            root,
            landlock,
            seccomp: Seccomp {
                filter: actions.is_some(),
                actions: actions
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            },
            user_namespaces: UserNamespaces {
                max,
                unprivileged_clone,
                apparmor_restricted,
                usable: max != Some(0) && (root || allowed_unprivileged),
            },
            cgroups: fs::read_to_string("/proc/self/mountinfo")
                .map(|table| Cgroups::from_mountinfo(&table))
                .unwrap_or_else(|_| Cgroups::from_mountinfo("")),
            subordinate_ids,
            subordinate_ids_missing,
        }
    }

    fn layers(&self, limits: &LimitMechanism) -> Vec<Layer> {
        let layer = |layer, state, detail: String| Layer {
            layer,
            state,
            detail,
        };
        let skip_hint = "`elastos run` refuses to start; --dangerously-run-without-kernel-sandbox \
                         would run without it";
        let ids = match (&self.subordinate_ids, &self.subordinate_ids_missing) {
            _ if self.root => layer(
                "ids",
                LayerState::Enforced,
                "each app runs as a host uid and gid of its own, never root's".into(),
            ),
            (Some(ids), _) => layer(
                "ids",
                LayerState::Enforced,
                format!(
                    "each app runs as a subordinate uid and gid of yours (of {}+{} in /etc/subuid, \
                     {}+{} in /etc/subgid, mapped once by newuidmap/newgidmap in your user \
                     namespace, which a holder process keeps): its pipe pages, processes, \
                     pending signals and mqueue bytes count against it, not you",
                    ids.uids.first, ids.uids.count, ids.gids.first, ids.gids.count
                ),
            ),
            (None, why) => layer(
                "ids",
                LayerState::Partial,
                format!(
                    "apps run as your own uid ({}): their pipe pages, processes, pending signals \
                     and mqueue bytes count against you; give yourself subordinate ids \
                     (usermod --add-subuids/--add-subgids) and install newuidmap (uidmap)",
                    why.as_deref().unwrap_or("no subordinate ids")
                ),
            ),
        };
        let mut layers = vec![if self.user_namespaces.usable {
            layer(
                "namespaces",
                LayerState::Enforced,
                "new user, mount, pid, ipc, uts and network namespaces".into(),
            )
        } else {
            layer(
                "namespaces",
                LayerState::Refused,
                "user namespaces are disabled for this user (see kernel.user_namespaces); \
                 `elastos run` cannot build a jail"
                    .into(),
            )
        }];
        layers.push(match self.landlock.abi {
            Some(abi) if abi >= LANDLOCK_ABI_WANTED => layer(
                "landlock",
                LayerState::Enforced,
                format!("path rules at ABI {LANDLOCK_ABI_WANTED} (the kernel has {abi})"),
            ),
            Some(abi) => {
                let missing: Vec<&str> = LANDLOCK_ADDITIONS
                    .iter()
                    .filter(|(since, _)| *since > abi)
                    .map(|(_, what)| *what)
                    .collect();
                layer(
                    "landlock",
                    LayerState::Partial,
                    format!(
                        "path rules at ABI {abi}, below the {LANDLOCK_ABI_WANTED} the jail asks \
                         for; not enforced: {}",
                        missing.join(", ")
                    ),
                )
            }
            None => layer(
                "landlock",
                LayerState::Refused,
                format!(
                    "no Landlock ({}); {skip_hint}",
                    self.landlock.unavailable.as_deref().unwrap_or("unknown")
                ),
            ),
        });
        layers.push(if self.seccomp.filter {
            layer(
                "seccomp",
                LayerState::Enforced,
                "the allow-list of `elastos policy show`, installed last".into(),
            )
        } else {
            layer(
                "seccomp",
                LayerState::Refused,
                format!("no seccomp filter mode (CONFIG_SECCOMP_FILTER); {skip_hint}"),
            )
        });
        let complete = match limits {
            LimitMechanism::CgroupV2 { swap_limited, .. }
            | LimitMechanism::CgroupV1 { swap_limited, .. } => {
                *swap_limited && limits.cpu_limited()
            }
            LimitMechanism::Rlimits => false,
        };
        layers.push(layer(
            "limits",
            if complete {
                LayerState::Enforced
            } else {
                LayerState::Partial
            },
            limits.describe(),
        ));
        layers.push(ids);
        layers.push(layer(
            "privileges",
            LayerState::Enforced,
            "every capability dropped, no_new_privs set".into(),
        ));
        layers
    }
}

impl Cgroups {
    /// The cgroup mounts of a `/proc/self/mountinfo` table.
    fn from_mountinfo(table: &str) -> Cgroups {
        let mut v2_mount = None;
        let mut v1_controllers = Vec::new();
        for line in table.lines() {
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let (Some(mount_point), mut fields) = (before.split(' ').nth(4), after.split(' '))
            else {
                continue;
            };
            match (fields.next(), fields.nth(1)) {
                // The unified root wins over another cgroup2 mount.
                (Some("cgroup2"), _) if v2_mount.is_none() || mount_point == "/sys/fs/cgroup" => {
                    v2_mount = Some(PathBuf::from(mount_point));
                }
                (Some("cgroup"), Some(options)) => v1_controllers.extend(
                    options
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("name="))
                        .map(str::to_owned),
                ),
                _ => {}
            }
        }
        v1_controllers.sort();
        let layout = match (&v2_mount, v1_controllers.is_empty()) {
            (Some(_), true) => "v2",
            (Some(_), false) => "hybrid",
            (None, false) => "v1",
            (None, true) => "none",
        };
        let v2_controllers = v2_mount
            .as_ref()
            .and_then(|mount| fs::read_to_string(mount.join("cgroup.controllers")).ok())
            .map(|list| list.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        Cgroups {
            layout,
            v2_mount,
            v2_controllers,
            v1_controllers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_tables_give_the_cgroup_layout() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        let cgroups = Cgroups::from_mountinfo(hybrid);
        assert_eq!(cgroups.layout, "hybrid");
        assert_eq!(cgroups.v1_controllers, ["cpu", "memory"]);
        assert_eq!(
            cgroups.v2_mount.as_deref(),
            Some(std::path::Path::new("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";
        assert_eq!(Cgroups::from_mountinfo(unified).layout, "v2");
        let legacy = "32 31 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids";
        assert_eq!(Cgroups::from_mountinfo(legacy).layout, "v1");
        assert_eq!(Cgroups::from_mountinfo("").layout, "none");
    }
}
