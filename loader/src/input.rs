//! The pure half of a launch: the plan flattened into what the loader carries out
//! ([`loader_input`]) and the host paths it binds ([`resolve_mounts`]). No process is created
//! here; the only I/O is reading the metadata of the host paths to bind, so this is unit-tested
//! without root.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use elastos_handoff::{LandlockRule, LoaderInput, ResolvedMount, RuleAccess, SockFilter};
use elastos_policy::{JailPlan, KernelFs, MountEntry, PathAccess};

use crate::error::LaunchError;

/// Turns the plan's mount list into the loader's, and lists the host paths to bind (the child
/// opens them; see `ChildSetup::mount_sources`).
pub(crate) fn resolve_mounts(
    plan: &JailPlan,
) -> Result<(Vec<ResolvedMount>, Vec<PathBuf>), LaunchError> {
    let mut resolved = Vec::with_capacity(plan.mounts.len());
    let mut sources: Vec<PathBuf> = Vec::new();
    let mut bind = |host: &Path, jail: &Path, writable: bool, device: bool| {
        let is_dir = fs::metadata(host)
            .map_err(|source| LaunchError::MountSource {
                path: host.into(),
                source,
            })?
            .is_dir();
        sources.push(host.into());
        Ok::<_, LaunchError>(ResolvedMount::Bind {
            source: (sources.len() - 1) as u32,
            jail: bytes(jail),
            is_dir,
            writable,
            device,
        })
    };
    for entry in &plan.mounts {
        let step = match entry {
            MountEntry::Host {
                host,
                jail,
                writable,
                optional,
            } => match fs::symlink_metadata(host) {
                Err(e) if *optional && e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(LaunchError::MountSource {
                        path: host.clone(),
                        source,
                    })
                }
                Ok(m) if m.file_type().is_symlink() => ResolvedMount::Symlink {
                    target: bytes(&fs::read_link(host).map_err(|source| {
                        LaunchError::MountSource {
                            path: host.clone(),
                            source,
                        }
                    })?),
                    jail: bytes(jail),
                },
                Ok(_) => bind(host, jail, *writable, false)?,
            },
            MountEntry::Bind {
                host,
                jail,
                writable,
            } => bind(host, jail, *writable, false)?,
            MountEntry::Device { host, jail } => bind(host, jail, true, true)?,
            MountEntry::Tmpfs {
                jail,
                size_bytes,
                mode,
            } => ResolvedMount::Tmpfs {
                jail: bytes(jail),
                size_bytes: *size_bytes,
                mode: *mode,
            },
            MountEntry::Dir { jail, mode } => ResolvedMount::Dir {
                jail: bytes(jail),
                mode: *mode,
            },
            MountEntry::Symlink { target, jail } => ResolvedMount::Symlink {
                target: bytes(target),
                jail: bytes(jail),
            },
            MountEntry::Proc { jail } => ResolvedMount::Proc { jail: bytes(jail) },
            MountEntry::Kernel { fs, source, jail } => ResolvedMount::Kernel {
                fs: match *fs {
                    KernelFs::Tmpfs { size_bytes, mode } => {
                        elastos_handoff::KernelFs::Tmpfs { size_bytes, mode }
                    }
                    KernelFs::Devpts => elastos_handoff::KernelFs::Devpts {
                        max: elastos_policy::DEVPTS_MAX_PTYS,
                    },
                    KernelFs::Mqueue => elastos_handoff::KernelFs::Mqueue,
                    KernelFs::Sysfs => elastos_handoff::KernelFs::Sysfs,
                },
                source: source.as_bytes().to_vec(),
                jail: bytes(jail),
            },
        };
        resolved.push(step);
    }
    Ok((resolved, sources))
}

fn bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

/// The loader's input: `plan` flattened to what the loader carries out.
pub(crate) fn loader_input(
    plan: &JailPlan,
    mounts: Vec<ResolvedMount>,
    cgroup_tasks: Vec<PathBuf>,
    memory_rlimit: bool,
    allow_without_kernel_sandbox: bool,
) -> LoaderInput {
    LoaderInput {
        mounts,
        cgroup_tasks: cgroup_tasks.iter().map(|path| bytes(path)).collect(),
        hostname: plan.guest.hostname.clone().into_bytes(),
        home: bytes(&plan.workdir),
        jail_uid: plan.guest.uid,
        jail_gid: plan.guest.gid,
        landlock: plan
            .landlock
            .iter()
            .map(|rule| LandlockRule {
                path: bytes(&rule.path),
                access: match rule.access {
                    PathAccess::ReadOnly => RuleAccess::ReadOnly,
                    PathAccess::ReadExecute => RuleAccess::ReadExecute,
                    PathAccess::ReadWrite => RuleAccess::ReadWrite,
                    PathAccess::ReadWriteFiles => RuleAccess::ReadWriteFiles,
                },
                optional: rule.optional,
            })
            .collect(),
        landlock_net_deny_tcp: plan.landlock_net_deny_tcp,
        landlock_scoped: plan.landlock_scoped,
        seccomp: plan
            .seccomp
            .bpf
            .iter()
            .map(|insn| SockFilter {
                code: insn.code,
                jt: insn.jt,
                jf: insn.jf,
                k: insn.k,
            })
            .collect(),
        env: plan
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}").into_bytes())
            .collect(),
        entry: bytes(&plan.entry),
        argv: plan.argv.iter().map(|a| a.clone().into_bytes()).collect(),
        threads: plan.limits.threads,
        open_files: plan.limits.open_files,
        memory_bytes: plan.limits.memory_bytes,
        memory_rlimit,
        allow_without_kernel_sandbox,
        extra_rlimits: plan
            .extra_rlimits
            .iter()
            .map(|limit| elastos_handoff::Rlimit {
                resource: limit.resource,
                soft: limit.soft,
                hard: limit.hard,
            })
            .collect(),
    }
}

/// The most host paths a jail may bind (a plan has ~15): their fds sit between
/// `fds::FIRST_SOURCE` and the launcher's hand-off fds, all under 64 (see [`crate::spawn`]).
pub const MAX_MOUNT_SOURCES: usize = 40;
#[cfg(test)]
mod tests {
    use super::*;
    use elastos_policy::{HostEnv, Manifest, JAIL_GID, JAIL_HOSTNAME, JAIL_UID};

    fn plan(root: &Path) -> JailPlan {
        let manifest = Manifest::from_toml(
            "[app]\nid = \"a4500225-9b34-4761-b1e5-ffbe4d611966\"\nname = \"t\"\n\
             version = \"1.0.0\"\nentry = \"bin/t\"\n\n[limits]\nmemory = \"64MiB\"\n\
             threads = 16\n",
        )
        .expect("a valid manifest");
        let host = HostEnv {
            lang: Some("C.UTF-8".into()),
            term: None,
        };
        JailPlan::build(
            &manifest,
            &root.join("bundle"),
            &root.join("home"),
            &["one".into()],
            &host,
            elastos_policy::EntryLinkage::Static,
        )
        .expect("a plan")
    }

    #[test]
    fn host_paths_become_binds_symlinks_or_are_skipped_and_sources_are_numbered_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        fs::create_dir(root.join("usr")).unwrap();
        fs::write(root.join("file"), b"x").unwrap();
        std::os::unix::fs::symlink("usr", root.join("lib")).unwrap();
        let mut plan = plan(root);
        plan.mounts = vec![
            MountEntry::Host {
                host: root.join("usr"),
                jail: "/usr".into(),
                writable: false,
                optional: false,
            },
            MountEntry::Host {
                host: root.join("lib"),
                jail: "/lib".into(),
                writable: false,
                optional: false,
            },
            MountEntry::Host {
                host: root.join("missing"),
                jail: "/lib64".into(),
                writable: false,
                optional: true,
            },
            MountEntry::Bind {
                host: root.join("file"),
                jail: "/etc/f".into(),
                writable: true,
            },
            MountEntry::Device {
                host: root.join("file"),
                jail: "/dev/null".into(),
            },
            MountEntry::Tmpfs {
                jail: "/tmp".into(),
                size_bytes: 4096,
                mode: 0o1777,
            },
            MountEntry::Proc {
                jail: "/proc".into(),
            },
        ];
        let (resolved, sources) = resolve_mounts(&plan).expect("resolved");
        assert_eq!(
            sources,
            vec![root.join("usr"), root.join("file"), root.join("file")]
        );
        assert_eq!(
            resolved,
            vec![
                ResolvedMount::Bind {
                    source: 0,
                    jail: b"/usr".to_vec(),
                    is_dir: true,
                    writable: false,
                    device: false,
                },
                ResolvedMount::Symlink {
                    target: b"usr".to_vec(),
                    jail: b"/lib".to_vec(),
                },
                ResolvedMount::Bind {
                    source: 1,
                    jail: b"/etc/f".to_vec(),
                    is_dir: false,
                    writable: true,
                    device: false,
                },
                ResolvedMount::Bind {
                    source: 2,
                    jail: b"/dev/null".to_vec(),
                    is_dir: false,
                    writable: true,
                    device: true,
                },
                ResolvedMount::Tmpfs {
                    jail: b"/tmp".to_vec(),
                    size_bytes: 4096,
                    mode: 0o1777,
                },
                ResolvedMount::Proc {
                    jail: b"/proc".to_vec(),
                },
            ]
        );
    }

    #[test]
    fn a_missing_required_host_path_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut plan = plan(dir.path());
        plan.mounts = vec![MountEntry::Host {
            host: dir.path().join("nowhere"),
            jail: "/usr".into(),
            writable: false,
            optional: false,
        }];
        match resolve_mounts(&plan) {
            Err(LaunchError::MountSource { path, source }) => {
                assert_eq!(path, dir.path().join("nowhere"));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected MountSource, got {other:?}"),
        }
    }

    #[test]
    fn the_loader_input_carries_the_plan() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plan = plan(dir.path());
        let input = loader_input(
            &plan,
            Vec::new(),
            vec![PathBuf::from("/sys/fs/cgroup/pids/elastos/x/tasks")],
            true,
            false,
        );
        assert_eq!(input.entry, b"/app/bin/t");
        assert_eq!(input.argv, vec![b"t".to_vec(), b"one".to_vec()]);
        assert_eq!(input.hostname, JAIL_HOSTNAME.as_bytes());
        assert_eq!(input.home, elastos_policy::jail_paths::HOME.as_bytes());
        assert_eq!((input.jail_uid, input.jail_gid), (JAIL_UID, JAIL_GID));
        assert_eq!(input.seccomp.len(), plan.seccomp.bpf.len());
        assert_eq!(input.seccomp[0].k, plan.seccomp.bpf[0].k);
        assert_eq!(input.landlock.len(), plan.landlock.len());
        for (rule, planned) in input.landlock.iter().zip(&plan.landlock) {
            assert_eq!(rule.path, planned.path.as_os_str().as_bytes());
            assert_eq!(rule.optional, planned.optional);
        }
        assert!(input.env.contains(&b"LANG=C.UTF-8".to_vec()));
        assert_eq!(input.memory_bytes, 64 << 20);
        assert_eq!(input.threads, 16);
        assert!(input.memory_rlimit);
        assert!(!input.allow_without_kernel_sandbox);
        assert_eq!(
            input.cgroup_tasks,
            vec![b"/sys/fs/cgroup/pids/elastos/x/tasks".to_vec()]
        );
        // What the launcher encodes, the loader decodes unchanged.
        assert_eq!(LoaderInput::decode(&input.encode()), Ok(input));
    }
}
