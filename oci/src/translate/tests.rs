use super::*;
use crate::parse_spec;

/// The spec podman 4.3.1 gave its runtime for `podman run --network none --ulimit
/// nofile=20000:20000 --ulimit nproc=32768:32768 IMAGE /bin/hello` (host paths shortened).
const PODMAN: &str = include_str!("../../tests/specs/podman-4.3.1.json");

/// A rootfs with `bin/hello` and `bin/sh`, and the given top-level names.
struct FakeRootfs(Vec<&'static str>);

impl Host for FakeRootfs {
    fn is_host_namespace(&self, path: &Path) -> bool {
        path.starts_with("/proc/1/")
    }
    fn top_level(&self) -> Vec<String> {
        self.0.iter().map(|s| s.to_string()).collect()
    }
    fn is_file(&self, path: &Path) -> bool {
        ["/bin/hello", "/usr/bin/sh", "/bin/elastos-probe"]
            .iter()
            .any(|p| path == Path::new(p))
    }
    fn kind(&self, path: &Path) -> Option<PathKind> {
        if self.is_file(path) || path == Path::new("/proc/kcore") {
            return Some(PathKind::File);
        }
        if path == Path::new("/usr/lib64") {
            return Some(PathKind::Symlink);
        }
        ["/bin", "/usr", "/proc/acpi"]
            .iter()
            .any(|p| path == Path::new(p))
            .then_some(PathKind::Directory)
    }
}

fn podman_spec() -> serde_json::Value {
    serde_json::from_str(PODMAN).unwrap()
}

fn run(spec: &serde_json::Value) -> Result<Translation, OciError> {
    let spec = parse_spec(spec.to_string().as_bytes())?;
    translate(
        &spec,
        "c1",
        Path::new("/bundle"),
        &FakeRootfs(vec!["bin", "usr"]),
    )
}

fn refused_field(spec: &serde_json::Value) -> (String, String) {
    match run(spec) {
        Err(OciError::Refused { field, value, .. }) => (field, value),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn podmans_default_spec_runs_with_its_capabilities_dropped() {
    let translation = run(&podman_spec()).expect("podman's default spec is accepted");
    let jail = &translation.jail;
    assert_eq!(jail.entry, Path::new("/bin/hello"));
    assert_eq!(jail.argv, ["/bin/hello"]);
    assert_eq!(jail.workdir, Path::new("/"));
    assert!(jail
        .rootfs
        .starts_with("/var/lib/containers/storage/vfs/dir"));
    assert_eq!(jail.limits.threads, 2048, "pids.limit, under RLIMIT_NPROC");
    assert_eq!(jail.limits.open_files, 20000);
    assert_eq!(jail.limits.memory_bytes, DEFAULT_LIMITS.memory_bytes);
    let env: BTreeMap<&str, &str> = jail
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env["container"], "podman");
    assert_eq!(env["ELASTOS_IPC_FD"], "3");
    // In the spec's order: the jail's /proc and /dev (its own /dev/shm in place of podman's
    // bind), sysfs, devpts and mqueue of the jail's namespaces, the engine's files bound where
    // the image has no /etc or /run; the cgroup mount is left out.
    let destinations: Vec<&Path> = jail.mounts.iter().map(ContainerMount::jail).collect();
    assert_eq!(
        destinations,
        [
            "/proc",
            "/dev",
            "/sys",
            "/dev/pts",
            "/dev/mqueue",
            "/run/.containerenv",
            "/etc/hostname",
            "/etc/hosts"
        ]
        .map(Path::new)
    );
    assert_eq!(
        jail.mounts[2..5],
        [
            ContainerMount::Kernel {
                fs: KernelFs::Sysfs,
                source: "sysfs".into(),
                jail: "/sys".into()
            },
            ContainerMount::Kernel {
                fs: KernelFs::Devpts,
                source: "devpts".into(),
                jail: "/dev/pts".into()
            },
            ContainerMount::Kernel {
                fs: KernelFs::Mqueue,
                source: "mqueue".into(),
                jail: "/dev/mqueue".into()
            },
        ]
    );
    assert!(jail.mounts[5..]
        .iter()
        .all(|m| matches!(m, ContainerMount::Bind { writable: true, .. })));
    let fields: Vec<&str> = translation
        .warnings
        .iter()
        .map(|w| w.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "root.readonly",
            "process.capabilities",
            "mounts[9]",
            "linux.cgroupsPath",
            "linux.sysctl"
        ]
    );
    let caps = &translation.warnings[1].message;
    assert!(
        caps.contains("CAP_CHOWN") && caps.contains("CAP_SYS_CHROOT"),
        "{caps}"
    );
    // Its seccomp profile allows fork and socket, so ours stays as it is for those; it never
    // allows what ours denies.
    assert!(!jail.seccomp_denied.contains("read"));
    assert!(!jail.seccomp_denied.contains("clone"));
}

#[test]
fn the_images_own_etc_keeps_the_engines_files_out() {
    let spec = parse_spec(PODMAN.as_bytes()).unwrap();
    let translation = translate(
        &spec,
        "c1",
        Path::new("/bundle"),
        &FakeRootfs(vec!["bin", "etc", "run"]),
    )
    .unwrap();
    assert!(!translation
        .jail
        .mounts
        .iter()
        .any(|m| matches!(m, ContainerMount::Bind { .. })));
    assert_eq!(
        translation
            .warnings
            .iter()
            .filter(|w| w.message.contains("the image is read-only"))
            .count(),
        3
    );
}

#[test]
fn privilege_granting_capabilities_are_refused_with_their_field() {
    for (set, cap) in [
        ("bounding", "CAP_SYS_ADMIN"),
        ("effective", "CAP_SYS_PTRACE"),
        ("ambient", "CAP_NET_ADMIN"),
        ("permitted", "CAP_SYS_MODULE"),
    ] {
        let mut spec = podman_spec();
        let list = spec["process"]["capabilities"][set]
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut list = list;
        list.push(cap.into());
        spec["process"]["capabilities"][set] = list.into();
        assert_eq!(
            refused_field(&spec),
            (format!("process.capabilities.{set}"), cap.to_owned())
        );
    }
    let mut spec = podman_spec();
    spec["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_SYS_ADMIN"]);
    let message = run(&spec).unwrap_err().to_string();
    assert!(
        message.starts_with("config.json process.capabilities.bounding = CAP_SYS_ADMIN: refused"),
        "{message}"
    );
}

#[test]
fn joining_a_host_namespace_is_refused() {
    let mut spec = podman_spec();
    spec["linux"]["namespaces"][1] =
        serde_json::json!({"type": "network", "path": "/proc/1/ns/net"});
    assert_eq!(
        refused_field(&spec),
        ("linux.namespaces[1].path".into(), "/proc/1/ns/net".into())
    );
    let message = run(&spec).unwrap_err().to_string();
    assert!(message.contains("the host's net namespace"), "{message}");
}

#[test]
fn a_missing_namespace_is_the_hosts_and_refused() {
    let mut spec = podman_spec();
    spec["linux"]["namespaces"] =
        serde_json::json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    assert_eq!(
        refused_field(&spec),
        ("linux.namespaces".into(), "no net namespace".into())
    );
}

#[test]
fn another_containers_namespace_is_not_joined() {
    let mut spec = podman_spec();
    spec["linux"]["namespaces"][1] =
        serde_json::json!({"type": "network", "path": "/proc/4242/ns/net"});
    let translation = run(&spec).unwrap();
    assert!(translation
        .warnings
        .iter()
        .any(|w| w.field == "linux.namespaces[1].path" && w.message.contains("not joined")));
}

#[test]
fn devices_beyond_the_stateless_ones_are_refused() {
    let mut spec = podman_spec();
    spec["linux"]["devices"] = serde_json::json!([
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
        {"path": "/dev/tty", "type": "c", "major": 5, "minor": 0},
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}
    ]);
    assert_eq!(
        refused_field(&spec),
        ("linux.devices[2]".into(), "/dev/fuse".into())
    );
}

#[test]
fn mounts_of_host_kernel_interfaces_or_other_types_are_refused() {
    let mut spec = podman_spec();
    spec["mounts"] = serde_json::json!([
        {"destination": "/host-sys", "type": "bind", "source": "/sys", "options": ["rbind"]}
    ]);
    assert_eq!(
        refused_field(&spec),
        ("mounts[0].source".into(), "/sys".into())
    );
    spec["mounts"] = serde_json::json!([
        {"destination": "/data", "type": "overlay", "source": "overlay", "options": []}
    ]);
    assert_eq!(
        refused_field(&spec),
        ("mounts[0].type".into(), "overlay".into())
    );
    spec["mounts"] = serde_json::json!([
        {"destination": "/usr/share/data", "type": "bind", "source": "/srv", "options": ["ro"]}
    ]);
    assert_eq!(
        refused_field(&spec),
        ("mounts[0].destination".into(), "/usr/share/data".into())
    );
    spec["mounts"] = serde_json::json!([
        {"destination": "/data/../etc", "type": "bind", "source": "/srv"}
    ]);
    assert!(
        matches!(run(&spec), Err(OciError::Invalid { field, .. }) if field == "mounts[0].destination")
    );
}

#[test]
fn volumes_and_tmpfs_are_mapped() {
    let mut spec = podman_spec();
    spec["mounts"] = serde_json::json!([
        {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]},
        {"destination": "/cache", "type": "bind", "source": "/srv/cache", "options": ["rbind", "rw"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/dev/termination-log", "type": "bind", "source": "/srv/t", "options": ["rbind"]}
    ]);
    let jail = run(&spec).unwrap().jail;
    assert_eq!(
        jail.mounts,
        [
            ContainerMount::Bind {
                host: "/srv/data".into(),
                jail: "/data".into(),
                writable: false
            },
            ContainerMount::Bind {
                host: "/srv/cache".into(),
                jail: "/cache".into(),
                writable: true
            },
            ContainerMount::Tmpfs {
                jail: "/run".into(),
                size_bytes: 1 << 20
            },
            ContainerMount::Bind {
                host: "/srv/t".into(),
                jail: "/dev/termination-log".into(),
                writable: true
            },
        ]
    );
}

#[test]
fn limits_come_from_the_spec() {
    let mut spec = podman_spec();
    spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": 64 << 20});
    spec["linux"]["resources"]["pids"] = serde_json::json!({"limit": 32});
    spec["linux"]["resources"]["cpu"] = serde_json::json!({"quota": 50000, "period": 100000});
    let translation = run(&spec).unwrap();
    assert_eq!(translation.jail.limits.memory_bytes, 64 << 20);
    assert_eq!(translation.jail.limits.threads, 32);
    assert_eq!(translation.jail.limits.cpu_millis, 500, "quota / period");
    assert!(!translation
        .warnings
        .iter()
        .any(|w| w.field == "linux.resources.cpu"));
    spec["linux"]["resources"]["cpu"] = serde_json::json!({"shares": 512});
    let translation = run(&spec).unwrap();
    assert!(translation
        .warnings
        .iter()
        .any(|w| w.field == "linux.resources.cpu"));
    spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": 4096});
    assert!(
        matches!(run(&spec), Err(OciError::Invalid { field, .. }) if field == "linux.resources.memory.limit")
    );
}

#[test]
fn a_seccomp_profile_only_narrows() {
    let mut spec = podman_spec();
    // Deny by default, allow only read and write (and a call the jail never allows).
    spec["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read", "write", "reboot"], "action": "SCMP_ACT_ALLOW"}]
    });
    let denied = run(&spec).unwrap().jail.seccomp_denied;
    assert!(!denied.contains("read") && !denied.contains("write"));
    assert!(denied.contains("getpid") && denied.contains("openat"));
    let plan = elastos_policy::JailPlan::for_container(&run(&spec).unwrap().jail).unwrap();
    let names: BTreeSet<&str> = plan.seccomp.rows.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains("read") && !names.contains("reboot") && !names.contains("getpid"));

    // Allow by default, deny getpid unconditionally and kill conditionally.
    spec["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    let translation = run(&spec).unwrap();
    assert_eq!(
        translation.jail.seccomp_denied,
        BTreeSet::from(["getpid".to_owned()])
    );
    assert!(translation
        .warnings
        .iter()
        .any(|w| w.field == "linux.seccomp.syscalls"));
}

#[test]
fn the_program_is_looked_up_in_the_specs_path() {
    let mut spec = podman_spec();
    spec["process"]["args"] = serde_json::json!(["sh", "-c", "true"]);
    assert_eq!(run(&spec).unwrap().jail.entry, Path::new("/usr/bin/sh"));
    spec["process"]["args"] = serde_json::json!(["nothere"]);
    let message = run(&spec).unwrap_err().to_string();
    assert!(
        message.contains("\"nothere\": executable file not found"),
        "{message}"
    );
    spec["process"]["args"] = serde_json::json!([]);
    assert!(matches!(run(&spec), Err(OciError::Invalid { field, .. }) if field == "process.args"));
}

#[test]
fn a_terminal_is_the_runtimes_and_hooks_are_refused() {
    let mut spec = podman_spec();
    assert!(!run(&spec).unwrap().terminal);
    spec["process"]["terminal"] = true.into();
    assert!(run(&spec).unwrap().terminal);
    let mut spec = podman_spec();
    spec["hooks"] = serde_json::json!({"prestart": [{"path": "/usr/bin/true"}]});
    assert_eq!(refused_field(&spec).0, "hooks.prestart");
}

/// `podman exec`'s process.json: the container's rules, without the jail's fd 3 variable.
#[test]
fn an_exec_process_is_translated_by_the_same_rules() {
    let process = |value: serde_json::Value| -> oci_spec::runtime::Process {
        serde_json::from_value(value).unwrap()
    };
    let mut warnings = Vec::new();
    let mut warn = |field: &str, _: String| warnings.push(field.to_owned());
    let host = FakeRootfs(vec!["bin", "usr"]);
    let exec = translate_process(
        &process(serde_json::json!({
            "args": ["hello", "x"], "cwd": "/tmp", "terminal": true,
            "env": ["PATH=/usr/bin:/bin", "TERM=xterm"], "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]}
        })),
        &host,
        &mut warn,
    )
    .unwrap();
    assert_eq!(exec.entry, Path::new("/bin/hello"));
    assert_eq!(exec.argv, ["hello", "x"]);
    assert_eq!(exec.workdir, Path::new("/tmp"));
    assert!(exec.terminal);
    assert_eq!(exec.env.get("TERM").map(String::as_str), Some("xterm"));
    assert!(!exec.env.contains_key("ELASTOS_IPC_FD"));
    assert_eq!(warnings, ["process.capabilities"]);
    let refused = translate_process(
        &process(serde_json::json!({
            "args": ["hello"], "cwd": "/", "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_SYS_PTRACE"]}
        })),
        &host,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(&refused, OciError::Refused { field, value, .. }
            if field == "process.capabilities.bounding" && value == "CAP_SYS_PTRACE"),
        "{refused}"
    );
}

#[test]
fn a_broken_spec_is_a_parse_error() {
    let err = parse_spec(b"{\"process\": 3}").unwrap_err();
    assert!(err
        .to_string()
        .starts_with("config.json is not a valid OCI runtime spec"));
}

#[test]
fn a_bad_container_id_is_refused_before_anything_else() {
    let spec = parse_spec(PODMAN.as_bytes()).unwrap();
    assert!(matches!(
        translate(&spec, "../x", Path::new("/b"), &FakeRootfs(vec![])),
        Err(OciError::InvalidId { .. })
    ));
}

/// The spec containerd 1.6.20 gave its runtime for `ctr run --rootfs DIR ID /bin/elastos-probe
/// run fork`.
const CONTAINERD: &str = include_str!("../../tests/specs/containerd-1.6.20.json");

#[test]
fn containerds_default_spec_runs_with_its_14_capabilities_dropped() {
    let spec = parse_spec(CONTAINERD.as_bytes()).unwrap();
    let translation = translate(
        &spec,
        "c1",
        Path::new("/state/c1"),
        &FakeRootfs(vec!["bin", "run"]),
    )
    .unwrap();
    let jail = &translation.jail;
    assert_eq!(jail.rootfs, Path::new("/state/c1/rootfs"));
    assert_eq!(jail.argv, ["/bin/elastos-probe", "run", "fork"]);
    // Its mounts in its order: /dev/shm a tmpfs of the jail's bounds under containerd's
    // source name; its tmpfs on /run replaces the image's /run.
    let kernel = |fs, source: &str, jail: &str| ContainerMount::Kernel {
        fs,
        source: source.into(),
        jail: jail.into(),
    };
    assert_eq!(
        jail.mounts,
        [
            ContainerMount::Proc,
            ContainerMount::Dev,
            kernel(KernelFs::Devpts, "devpts", "/dev/pts"),
            kernel(
                KernelFs::Tmpfs {
                    size_bytes: 64 << 20,
                    mode: 0o1777
                },
                "shm",
                "/dev/shm"
            ),
            kernel(KernelFs::Mqueue, "mqueue", "/dev/mqueue"),
            kernel(KernelFs::Sysfs, "sysfs", "/sys"),
            ContainerMount::Tmpfs {
                jail: "/run".into(),
                size_bytes: DEFAULT_TMPFS_BYTES
            }
        ]
    );
    let caps = translation
        .warnings
        .iter()
        .find(|w| w.field == "process.capabilities")
        .expect("the capabilities are dropped with a warning");
    assert_eq!(caps.message.matches("CAP_").count(), 14, "{}", caps.message);
    // No seccomp profile in the spec: the jail's own, whole.
    assert!(jail.seccomp_denied.is_empty());
}

/// Masked paths that exist are hidden (a directory under a tmpfs, a file under /dev/null),
/// those that do not are skipped, one through a symlink is left with a warning; read-only paths
/// are accepted where the container cannot write anyway and refused inside a writable mount.
#[test]
fn masked_and_read_only_paths() {
    let mut spec = podman_spec();
    spec["linux"]["maskedPaths"] = serde_json::json!([
        "/proc/acpi",
        "/proc/kcore",
        "/proc/nothere",
        "/bin/hello",
        "/usr/lib64"
    ]);
    spec["linux"]["readonlyPaths"] = serde_json::json!(["/proc/sys", "/usr"]);
    let translation = run(&spec).unwrap();
    assert_eq!(
        translation.jail.masked,
        [
            Masked {
                jail: "/proc/acpi".into(),
                directory: true
            },
            Masked {
                jail: "/proc/kcore".into(),
                directory: false
            },
            Masked {
                jail: "/bin/hello".into(),
                directory: false
            },
        ]
    );
    assert!(translation
        .warnings
        .iter()
        .any(|w| w.field == "linux.maskedPaths[4]" && w.message.contains("symbolic link")));
    spec["linux"]["readonlyPaths"] = serde_json::json!(["/proc/sys", "/tmp/x"]);
    assert_eq!(
        refused_field(&spec),
        ("linux.readonlyPaths[1]".into(), "/tmp/x".into())
    );
    spec["linux"]["readonlyPaths"] = serde_json::json!(["relative"]);
    assert!(matches!(run(&spec), Err(OciError::Invalid { field, .. })
        if field == "linux.readonlyPaths[0]"));
}

/// The spec's hostname and process.user ids are the container's, inside its namespaces.
#[test]
fn hostname_and_user_are_the_specs() {
    let mut spec = podman_spec();
    spec["hostname"] = "box".into();
    spec["process"]["user"] = serde_json::json!({"uid": 0, "gid": 42});
    let guest = run(&spec).unwrap().jail.guest;
    assert_eq!(
        (guest.hostname.as_str(), guest.uid, guest.gid),
        ("box", 0, 42)
    );
    spec["hostname"] = "x".repeat(65).into();
    assert!(matches!(run(&spec), Err(OciError::Invalid { field, .. }) if field == "hostname"));
}

/// `process.oomScoreAdj` is passed on for the runtime (which never lowers its own), within the
/// kernel's range.
#[test]
fn the_oom_score_adjustment_is_passed_on() {
    let mut spec = podman_spec();
    assert_eq!(run(&spec).unwrap().oom_score_adj, None);
    spec["process"]["oomScoreAdj"] = 500.into();
    assert_eq!(run(&spec).unwrap().oom_score_adj, Some(500));
    spec["process"]["oomScoreAdj"] = 1001.into();
    assert!(
        matches!(run(&spec), Err(OciError::Invalid { field, .. }) if field == "process.oomScoreAdj")
    );
}

/// rlimits beyond open files and processes go to the loader, which only ever lowers them.
#[test]
fn the_other_rlimits_are_passed_on() {
    let mut spec = podman_spec();
    spec["process"]["rlimits"] = serde_json::json!([
        {"type": "RLIMIT_CPU", "soft": 60, "hard": 120},
        {"type": "RLIMIT_NOFILE", "soft": 3000, "hard": 4000}
    ]);
    let jail = run(&spec).unwrap().jail;
    // The hard limit is the jail's; the soft one stays below it (runtimetest's
    // process_rlimits: hard limits were lowered to the soft ones).
    assert_eq!(jail.limits.open_files, 4000);
    assert_eq!(
        jail.extra_rlimits,
        [
            elastos_policy::Rlimit {
                resource: 0,
                soft: 60,
                hard: 120
            },
            elastos_policy::Rlimit {
                resource: 7,
                soft: 3000,
                hard: 4000
            }
        ]
    );
}

/// The spec's /dev/shm tmpfs, devpts, mqueue and sysfs are the jail's own instances, each only
/// at its usual place; sysfs is read-only whatever the spec says.
#[test]
fn kernel_filesystems_are_the_jails_own_at_their_places() {
    let mut spec = podman_spec();
    spec["mounts"] = serde_json::json!([
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["mode=41777", "size=1g"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["rw"]},
        {"destination": "/mnt/pts", "type": "devpts", "source": "devpts"},
        {"destination": "/dev/mqueue", "type": "mqueue"},
        {"destination": "/dev/shm2", "type": "tmpfs", "source": "shm"}
    ]);
    let translation = run(&spec).unwrap();
    assert_eq!(
        translation.jail.mounts,
        [
            ContainerMount::Kernel {
                // Only the permission bits; the size is bounded when the jail is planned.
                fs: KernelFs::Tmpfs {
                    size_bytes: 1 << 30,
                    mode: 0o1777
                },
                source: "shm".into(),
                jail: "/dev/shm".into()
            },
            ContainerMount::Kernel {
                fs: KernelFs::Sysfs,
                source: "sysfs".into(),
                jail: "/sys".into()
            },
            // No source: the type names it.
            ContainerMount::Kernel {
                fs: KernelFs::Mqueue,
                source: "mqueue".into(),
                jail: "/dev/mqueue".into()
            },
            // Elsewhere a tmpfs is the spec's own tmpfs.
            ContainerMount::Tmpfs {
                jail: "/dev/shm2".into(),
                size_bytes: DEFAULT_TMPFS_BYTES
            },
        ]
    );
    let warned: Vec<(&str, &str)> = translation
        .warnings
        .iter()
        .map(|w| (w.field.as_str(), w.message.as_str()))
        .filter(|(field, _)| field.starts_with("mounts"))
        .collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned[0].0 == "mounts[1]" && warned[0].1.contains("read-only"));
    assert!(warned[1].0 == "mounts[2]" && warned[1].1.contains("left out"));
}

/// runtime-tools' `misc_props`: an invalid `ociVersion` is an error; any 1.x is taken.
#[test]
fn the_spec_version_is_checked() {
    let mut spec = podman_spec();
    for good in ["1.0.0", "1.2.1", "1.3.0-rc.1", "1.10.0+dev"] {
        spec["ociVersion"] = good.into();
        assert!(run(&spec).is_ok(), "{good}");
    }
    for bad in ["invalid", "", "2.0.0", "1.0", "1.x.0"] {
        spec["ociVersion"] = bad.into();
        assert!(
            matches!(run(&spec), Err(OciError::Invalid { ref field, .. }) if field == "ociVersion"),
            "{bad}"
        );
    }
}
