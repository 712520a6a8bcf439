//! The jail of an OCI container (`elastos oci`): the same jail as a bundle's, with the
//! container's root filesystem in place of the host's /usr and the bundle.
//!
//! The loader assembles every jail on an empty tmpfs that becomes read-only after pivot_root.
//! An OCI rootfs is laid on it entry by entry: each name at the rootfs's top level is bound
//! read-only at the same place (a symlink such as `bin -> usr/bin` is recreated), so the
//! container sees its image as `/` while the jail keeps its own /tmp, /dev and /proc. Nothing of
//! the host's filesystem is mounted: no /usr, no /etc. The rootfs is the only executable tree,
//! as the bundle is for a bundle's app; what the container writes (/tmp, writable volumes) can
//! never be executed.
//!
//! The spec's translation (what is refused, dropped or mapped) is `elastos-oci`'s; this module
//! only turns its outcome into a [`JailPlan`].

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::plan::{dev_mounts, proc_mount, scratch_rules, shm_bytes, tmp_mount};
use crate::{
    jail_paths, EntryLinkage, Guest, JailPlan, KernelFs, LandlockRule, MountEntry, PathAccess,
    PolicyError, ResourceLimits, Rlimit, SeccompProgram, SYSFS_READABLE,
};

/// Top-level names of a rootfs that the jail provides itself (see `plan::scratch_mounts`).
pub const JAIL_OWNED_TOP_LEVEL: &[&str] = &["dev", "proc", "tmp"];

/// A mount the container's spec asks for beyond its rootfs, already vetted by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContainerMount {
    /// A host file or directory (a volume): read-only, or writable and then never executable.
    Bind {
        host: PathBuf,
        jail: PathBuf,
        writable: bool,
    },
    /// A fresh tmpfs (nosuid, nodev, noexec), writable.
    Tmpfs { jail: PathBuf, size_bytes: u64 },
    /// The jail's own procfs, at `/proc`, where the spec has its proc mount.
    Proc,
    /// The jail's own `/dev` (its stateless devices and symlinks; its /dev/shm unless the spec
    /// mounts one), where the spec has its `/dev`.
    Dev,
    /// A kernel filesystem of the jail's own namespaces (see [`KernelFs`]), at `jail`; a
    /// [`KernelFs::Tmpfs`] is bounded by the jail's /dev/shm size whatever the spec's.
    Kernel {
        fs: KernelFs,
        source: String,
        jail: PathBuf,
    },
}

impl ContainerMount {
    /// Where it is mounted in the jail.
    pub fn jail(&self) -> &Path {
        match self {
            ContainerMount::Bind { jail, .. }
            | ContainerMount::Tmpfs { jail, .. }
            | ContainerMount::Kernel { jail, .. } => jail,
            ContainerMount::Proc => Path::new("/proc"),
            ContainerMount::Dev => Path::new("/dev"),
        }
    }
}

/// Everything about one container that decides its jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerJail {
    /// The container's id, as the engine named it.
    pub container_id: String,
    /// An id for the jail's identity (its host uid, its cgroup's name), derived from the
    /// container's id by the caller.
    pub app_id: Uuid,
    /// The rootfs on the host (absolute).
    pub rootfs: PathBuf,
    /// The names at the rootfs's top level (the host reads the directory).
    pub rootfs_entries: Vec<String>,
    /// The spec's other mounts, in the spec's order (the jail's /proc and /dev where the spec
    /// has them: engines and `runtimetest` expect mountinfo in the spec's order).
    pub mounts: Vec<ContainerMount>,
    /// Limits: the spec's, else the jail's defaults.
    pub limits: ResourceLimits,
    /// The process's environment, complete.
    pub env: Vec<(String, String)>,
    /// The absolute jail path of the program to execute.
    pub entry: PathBuf,
    /// Its argv, `argv[0]` as the spec gives it.
    pub argv: Vec<String>,
    /// The working directory (absolute).
    pub workdir: PathBuf,
    /// Syscalls the spec's seccomp profile denies: removed from the jail's allow-list, which
    /// the spec can narrow but never widen.
    pub seccomp_denied: BTreeSet<String>,
    /// The spec's hostname and `process.user` ids, inside the jail's namespaces.
    pub guest: Guest,
    /// The spec's masked paths that exist, after every other mount (see [`Masked`]).
    pub masked: Vec<Masked>,
    /// The spec's rlimits beyond open files and processes (see [`JailPlan::extra_rlimits`]).
    pub extra_rlimits: Vec<Rlimit>,
}

/// A path of the spec's `linux.maskedPaths`, hidden: a directory under an empty tmpfs, anything
/// else under the host's /dev/null (reads as empty, writes vanish). Neither can be written to
/// or executed: Landlock's rule for the place it is in (the image's read-and-execute, /proc's
/// read-only) still covers it, and the mounts are noexec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    /// The path in the jail.
    pub jail: PathBuf,
    /// It is a directory.
    pub directory: bool,
}

/// The size of a masked directory's tmpfs: it holds nothing.
const MASKED_DIR_BYTES: u64 = 4096;

impl JailPlan {
    /// Plans the jail of an OCI container (see the module doc).
    pub fn for_container(container: &ContainerJail) -> Result<JailPlan, PolicyError> {
        for (what, path) in [
            ("rootfs", container.rootfs.as_path()),
            ("entry", container.entry.as_path()),
            ("working directory", container.workdir.as_path()),
        ] {
            if !path.is_absolute() {
                return Err(PolicyError::NotAbsolute {
                    what,
                    path: path.to_owned(),
                });
            }
        }
        let top_level_of = |path: &Path| -> Option<String> {
            path.components().find_map(|c| match c {
                Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
                _ => None,
            })
        };
        // A spec mount whose destination is a top-level name replaces that entry of the rootfs
        // (e.g. containerd's tmpfs on /run).
        let replaced: BTreeSet<String> = container
            .mounts
            .iter()
            .filter(|m| m.jail().components().count() == 2)
            .filter_map(|m| top_level_of(m.jail()))
            .collect();
        let mut kept: Vec<&String> = container
            .rootfs_entries
            .iter()
            .filter(|name| {
                valid_entry_name(name)
                    && !JAIL_OWNED_TOP_LEVEL.contains(&name.as_str())
                    && !replaced.contains(*name)
            })
            .collect();
        kept.sort();
        kept.dedup();

        let mut mounts: Vec<MountEntry> = kept
            .iter()
            .map(|name| MountEntry::Host {
                host: container.rootfs.join(name),
                jail: Path::new("/").join(name),
                writable: false,
                optional: false,
            })
            .collect();
        let memory = container.limits.memory_bytes;
        let spec_has =
            |wanted: &dyn Fn(&ContainerMount) -> bool| container.mounts.iter().any(wanted);
        let own_shm = !spec_has(
            &|m| matches!(m, ContainerMount::Kernel { jail, .. } if jail == Path::new(jail_paths::SHM)),
        );
        // The jail's own mounts the spec does not place come first.
        mounts.push(tmp_mount(memory));
        if !spec_has(&|m| *m == ContainerMount::Dev) {
            mounts.extend(dev_mounts(memory, own_shm));
        }
        if !spec_has(&|m| *m == ContainerMount::Proc) {
            mounts.push(proc_mount());
        }
        let mut landlock: Vec<LandlockRule> = kept
            .iter()
            .map(|name| LandlockRule {
                path: Path::new("/").join(name),
                access: PathAccess::ReadExecute,
                // A symlink whose target is not in the image (a dangling `lib64`) is skipped.
                optional: true,
                reason: "the container's image, read-only: its programs run".to_owned(),
            })
            .collect();
        landlock.extend(scratch_rules());
        for mount in &container.mounts {
            match mount {
                ContainerMount::Bind {
                    host,
                    jail,
                    writable,
                } => {
                    mounts.push(MountEntry::Bind {
                        host: host.clone(),
                        jail: jail.clone(),
                        writable: *writable,
                    });
                    landlock.push(LandlockRule {
                        path: jail.clone(),
                        access: if *writable {
                            PathAccess::ReadWrite
                        } else {
                            PathAccess::ReadOnly
                        },
                        optional: false,
                        reason: if *writable {
                            "a writable volume of the spec; what is written there never runs"
                        } else {
                            "a read-only volume of the spec"
                        }
                        .to_owned(),
                    });
                }
                ContainerMount::Tmpfs { jail, size_bytes } => {
                    mounts.push(MountEntry::Tmpfs {
                        jail: jail.clone(),
                        size_bytes: *size_bytes,
                        mode: 0o1777,
                    });
                    landlock.push(LandlockRule {
                        path: jail.clone(),
                        access: PathAccess::ReadWrite,
                        optional: false,
                        reason: "a tmpfs of the spec; what is written there never runs".to_owned(),
                    });
                }
                ContainerMount::Proc => mounts.push(proc_mount()),
                ContainerMount::Dev => mounts.extend(dev_mounts(memory, own_shm)),
                ContainerMount::Kernel { fs, source, jail } => {
                    let fs = match *fs {
                        KernelFs::Tmpfs { size_bytes, mode } => KernelFs::Tmpfs {
                            size_bytes: size_bytes.min(shm_bytes(memory)),
                            mode,
                        },
                        other => other,
                    };
                    mounts.push(MountEntry::Kernel {
                        fs,
                        source: source.clone(),
                        jail: jail.clone(),
                    });
                    match fs {
                        // Where every devpts user looks for the multiplexer (nodev: it cannot
                        // be opened).
                        KernelFs::Devpts => mounts.push(MountEntry::Symlink {
                            target: "pts/ptmx".into(),
                            jail: "/dev/ptmx".into(),
                        }),
                        KernelFs::Sysfs => landlock.extend(SYSFS_READABLE.iter().map(|path| {
                            LandlockRule {
                                path: path.into(),
                                access: PathAccess::ReadOnly,
                                optional: true,
                                reason: "the CPUs in sysfs (glibc's sysconf reads them); the \
                                         rest of sysfs is not readable"
                                    .to_owned(),
                            }
                        })),
                        KernelFs::Tmpfs { .. } | KernelFs::Mqueue => {}
                    }
                }
            }
        }
        mounts.extend(container.masked.iter().map(|masked| {
            if masked.directory {
                MountEntry::Tmpfs {
                    jail: masked.jail.clone(),
                    size_bytes: MASKED_DIR_BYTES,
                    mode: 0o555,
                }
            } else {
                MountEntry::Device {
                    host: "/dev/null".into(),
                    jail: masked.jail.clone(),
                }
            }
        }));
        Ok(JailPlan {
            app_id: container.app_id,
            app_name: container.container_id.clone(),
            mounts,
            landlock,
            landlock_net_deny_tcp: true,
            landlock_scoped: true,
            seccomp: SeccompProgram::compile_without(&container.seccomp_denied),
            limits: container.limits,
            // A container keeps nothing between runs: it has no home (volumes are the spec's).
            home_quota: None,
            env: container.env.clone(),
            entry: container.entry.clone(),
            // The whole image is executable, its own dynamic loader included: the host's loader
            // is not in the jail at all.
            entry_linkage: EntryLinkage::Static,
            argv: container.argv.clone(),
            workdir: container.workdir.clone(),
            guest: container.guest.clone(),
            extra_rlimits: container.extra_rlimits.clone(),
        })
    }
}

/// A name the host can bind at `/NAME`: one path component, not `.` or `..`.
fn valid_entry_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::DEFAULT_LIMITS;

    fn container(mounts: Vec<ContainerMount>) -> ContainerJail {
        ContainerJail {
            container_id: "c1".into(),
            app_id: Uuid::nil(),
            rootfs: "/b/rootfs".into(),
            rootfs_entries: [
                "bin", "etc", "usr", "dev", "proc", "tmp", "run", "..", "a/b",
            ]
            .map(String::from)
            .to_vec(),
            mounts,
            limits: DEFAULT_LIMITS,
            env: vec![("PATH".into(), "/bin".into())],
            entry: "/bin/sh".into(),
            argv: vec!["sh".into()],
            workdir: "/".into(),
            seccomp_denied: ["getpid".to_owned()].into(),
            guest: Guest::default(),
            masked: Vec::new(),
            extra_rlimits: Vec::new(),
        }
    }

    fn binds(plan: &JailPlan) -> Vec<(&Path, &Path, bool)> {
        plan.mounts
            .iter()
            .filter_map(|m| match m {
                MountEntry::Host {
                    host,
                    jail,
                    writable,
                    ..
                }
                | MountEntry::Bind {
                    host,
                    jail,
                    writable,
                } => Some((host.as_path(), jail.as_path(), *writable)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_rootfs_is_laid_read_only_at_the_root_less_what_the_jail_owns() {
        let plan = JailPlan::for_container(&container(vec![])).unwrap();
        assert_eq!(
            binds(&plan),
            [
                (Path::new("/b/rootfs/bin"), Path::new("/bin"), false),
                (Path::new("/b/rootfs/etc"), Path::new("/etc"), false),
                (Path::new("/b/rootfs/run"), Path::new("/run"), false),
                (Path::new("/b/rootfs/usr"), Path::new("/usr"), false),
            ]
        );
        // No host system path at all.
        assert!(!plan.mounts.iter().any(|m| matches!(m,
            MountEntry::Host { host, .. } if !host.starts_with("/b/rootfs"))));
        let executable: Vec<&Path> = plan
            .landlock
            .iter()
            .filter(|r| r.access == PathAccess::ReadExecute)
            .map(|r| r.path.as_path())
            .collect();
        assert_eq!(executable, ["/bin", "/etc", "/run", "/usr"].map(Path::new));
        assert!(plan.mounts.contains(&MountEntry::Proc {
            jail: "/proc".into()
        }));
        assert_eq!(plan.workdir, Path::new("/"));
        assert!(plan.seccomp.rows.iter().all(|r| r.name != "getpid"));
        assert!(plan.seccomp.rows.iter().any(|r| r.name == "read"));
    }

    #[test]
    fn spec_mounts_replace_top_level_entries_and_writable_ones_are_not_executable() {
        let plan = JailPlan::for_container(&container(vec![
            ContainerMount::Tmpfs {
                jail: "/run".into(),
                size_bytes: 1 << 20,
            },
            ContainerMount::Bind {
                host: "/srv/data".into(),
                jail: "/data".into(),
                writable: true,
            },
        ]))
        .unwrap();
        assert!(!binds(&plan)
            .iter()
            .any(|(_, jail, _)| *jail == Path::new("/run")));
        let access = |path: &str| {
            plan.landlock
                .iter()
                .filter(|r| r.path == Path::new(path))
                .map(|r| r.access)
                .collect::<Vec<_>>()
        };
        assert_eq!(access("/run"), [PathAccess::ReadWrite]);
        assert_eq!(access("/data"), [PathAccess::ReadWrite]);
        assert!(plan.mounts.contains(&MountEntry::Bind {
            host: "/srv/data".into(),
            jail: "/data".into(),
            writable: true
        }));
    }

    #[test]
    fn masked_paths_come_last_and_add_no_landlock_rule() {
        let mut masked = container(vec![]);
        masked.masked = vec![
            Masked {
                jail: "/proc/kcore".into(),
                directory: false,
            },
            Masked {
                jail: "/etc/secret".into(),
                directory: true,
            },
        ];
        let plan = JailPlan::for_container(&masked).unwrap();
        let last = &plan.mounts[plan.mounts.len() - 2..];
        assert_eq!(
            last,
            [
                MountEntry::Device {
                    host: "/dev/null".into(),
                    jail: "/proc/kcore".into()
                },
                MountEntry::Tmpfs {
                    jail: "/etc/secret".into(),
                    size_bytes: MASKED_DIR_BYTES,
                    mode: 0o555
                }
            ]
        );
        // The image's /etc is still bound (a mask is not a replacement of its entry).
        assert!(binds(&plan).contains(&(Path::new("/b/rootfs/etc"), Path::new("/etc"), false)));
        let unmasked = JailPlan::for_container(&container(vec![])).unwrap();
        assert_eq!(plan.landlock, unmasked.landlock);
    }

    /// The jail's /proc and /dev go where the spec has them (runtimetest reads mountinfo in the
    /// spec's order); the spec's /dev/shm replaces the jail's, within its bound; devpts brings
    /// the /dev/ptmx link, sysfs only a read rule on the CPUs.
    #[test]
    fn kernel_filesystems_follow_the_specs_order() {
        let kernel = |fs, jail: &str| ContainerMount::Kernel {
            fs,
            source: "src".into(),
            jail: jail.into(),
        };
        let plan = JailPlan::for_container(&container(vec![
            ContainerMount::Proc,
            ContainerMount::Dev,
            kernel(KernelFs::Devpts, "/dev/pts"),
            kernel(
                KernelFs::Tmpfs {
                    size_bytes: 1 << 40,
                    mode: 0o1777,
                },
                "/dev/shm",
            ),
            kernel(KernelFs::Mqueue, "/dev/mqueue"),
            kernel(KernelFs::Sysfs, "/sys"),
        ]))
        .unwrap();
        let after_image: Vec<String> = plan
            .mounts
            .iter()
            .skip_while(|m| matches!(m, MountEntry::Host { .. }))
            .map(|m| match m {
                MountEntry::Tmpfs { jail, .. } => format!("tmpfs {}", jail.display()),
                MountEntry::Device { jail, .. } => format!("device {}", jail.display()),
                MountEntry::Symlink { jail, target } => {
                    format!("{} -> {}", jail.display(), target.display())
                }
                MountEntry::Proc { jail } => format!("proc {}", jail.display()),
                MountEntry::Kernel {
                    fs: KernelFs::Tmpfs { size_bytes, .. },
                    jail,
                    ..
                } => format!("shm {} {size_bytes}", jail.display()),
                MountEntry::Kernel { fs, jail, .. } => format!("{fs:?} {}", jail.display()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            after_image,
            [
                "tmpfs /tmp",
                "proc /proc",
                "tmpfs /dev",
                "device /dev/null",
                "device /dev/zero",
                "device /dev/full",
                "device /dev/random",
                "device /dev/urandom",
                "/dev/fd -> /proc/self/fd",
                "/dev/stdin -> /proc/self/fd/0",
                "/dev/stdout -> /proc/self/fd/1",
                "/dev/stderr -> /proc/self/fd/2",
                "Devpts /dev/pts",
                "/dev/ptmx -> pts/ptmx",
                // The jail's /dev/shm bound, whatever the spec asked.
                "shm /dev/shm 67108864",
                "Mqueue /dev/mqueue",
                "Sysfs /sys",
            ]
        );
        let sys_rules: Vec<(&Path, PathAccess)> = plan
            .landlock
            .iter()
            .filter(|r| r.path.starts_with("/sys"))
            .map(|r| (r.path.as_path(), r.access))
            .collect();
        assert_eq!(
            sys_rules,
            [(Path::new("/sys/devices/system/cpu"), PathAccess::ReadOnly)]
        );
        // Without them in the spec: the jail's own, first, as for any app.
        let plain = JailPlan::for_container(&container(vec![])).unwrap();
        let own: Vec<&MountEntry> = plain
            .mounts
            .iter()
            .skip_while(|m| matches!(m, MountEntry::Host { .. }))
            .collect();
        let scratch = crate::plan::scratch_mounts(DEFAULT_LIMITS.memory_bytes);
        assert_eq!(own.len(), scratch.len());
        assert!(scratch.iter().all(|m| own.contains(&m)));
        assert!(!plain.landlock.iter().any(|r| r.path.starts_with("/sys")));
    }

    #[test]
    fn relative_paths_are_refused() {
        let mut relative = container(vec![]);
        relative.workdir = "work".into();
        assert!(matches!(
            JailPlan::for_container(&relative),
            Err(PolicyError::NotAbsolute {
                what: "working directory",
                ..
            })
        ));
    }
}
