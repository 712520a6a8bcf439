//! The field-by-field translation of a spec (see the crate doc for the rules).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use elastos_policy::manifest::DEFAULT_LIMITS;
use elastos_policy::oci_plan::JAIL_OWNED_TOP_LEVEL;
use elastos_policy::{
    ContainerJail, ContainerMount, Guest, KernelFs, Masked, ResourceLimits, Rlimit,
};
use oci_spec::runtime::{
    Capabilities, LinuxNamespaceType, LinuxSeccomp, LinuxSeccompAction, PosixRlimitType, Process,
    Spec,
};

use crate::{app_id, OciError, Warning, ORDINARY_CAPABILITIES};

/// What the host tells about the container's rootfs and its other containers.
pub trait Host {
    /// The names at the rootfs's top level.
    fn top_level(&self) -> Vec<String>;
    /// Whether `path` (absolute, as the container sees it) is a file in the rootfs.
    fn is_file(&self, path: &Path) -> bool;
    /// Whether `path` (`/proc/PID/ns/KIND`, a bind-mounted namespace file) names one of the
    /// host's own namespaces (those of pid 1), or cannot be told apart from one; a process of
    /// another container of this runtime (a pod's sandbox) is not the host.
    fn is_host_namespace(&self, path: &Path) -> bool;
    /// What `path` (absolute, as the container sees it, before the spec's mounts) is: in the
    /// rootfs, or under /proc in the host's procfs, whose kernel-wide entries the jail's has
    /// too. `None` when it does not exist.
    fn kind(&self, path: &Path) -> Option<PathKind>;
}

/// What a path of the container is (see [`Host::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// A directory.
    Directory,
    /// A file, device or other non-directory.
    File,
    /// One of its components is a symbolic link: masking it could mount over its target.
    Symlink,
}

/// A spec translated: the jail to build and what of the spec it does not do.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The jail.
    pub jail: ContainerJail,
    /// `process.terminal`: the process's stdio is a pseudo-terminal (see [`Command::terminal`]).
    pub terminal: bool,
    /// `process.oomScoreAdj`: the jail's OOM score adjustment, which the runtime applies only
    /// where it makes the container no less likely to be killed than the runtime itself (a
    /// lower one would protect it at the host's expense).
    pub oom_score_adj: Option<i32>,
    /// What was dropped, each with its field.
    pub warnings: Vec<Warning>,
}

/// The devices the jail gives every app (`elastos_policy::plan`'s stateless devices).
const JAIL_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];
/// Devices engines list that the jail leaves out: a terminal of the host's would be a way out.
const DROPPED_DEVICES: &[&str] = &["/dev/tty", "/dev/console", "/dev/ptmx"];
/// Files engines bind into the image's /etc and /run: harmless to leave out of a jail without
/// a network, and impossible to add to a read-only image.
const ENGINE_FILES: &[&str] = &[
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/run/.containerenv",
    "/run/secrets",
];
/// The namespaces an engine makes for a container, and the jail for every app: a spec without
/// one asks to share the host's.
const ISOLATING_NAMESPACES: &[LinuxNamespaceType] = &[
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Mount,
];
/// `PATH` when the spec's environment has none (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MIB: u64 = 1 << 20;
/// A tmpfs of the spec without `size=`: like the jail's own /tmp, bounded.
const DEFAULT_TMPFS_BYTES: u64 = 64 * MIB;

/// Translates `spec` for the container `container_id`, whose bundle directory is `bundle`
/// (absolute).
pub fn translate(
    spec: &Spec,
    container_id: &str,
    bundle: &Path,
    host: &dyn Host,
) -> Result<Translation, OciError> {
    crate::validate_id(container_id)?;
    check_version(spec.version())?;
    let mut warnings = Vec::new();
    let mut warn = |field: &str, message: String| {
        warnings.push(Warning {
            field: field.to_owned(),
            message,
        })
    };
    if let Some(hooks) = spec.hooks() {
        let named = serde_json::to_value(hooks).unwrap_or_default();
        if let Some((kind, _)) = named
            .as_object()
            .into_iter()
            .flatten()
            .find(|(_, list)| list.as_array().is_some_and(|l| !l.is_empty()))
        {
            return Err(refused(
                format!("hooks.{kind}"),
                "(hooks)",
                "elastos oci runs no programs on the host for a container",
            ));
        }
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing"))?;
    let rootfs_path = bundle.join(root.path());
    if root.readonly() != Some(true) {
        warn(
            "root.readonly",
            "false asked for: the image is mounted read-only all the same (write to /tmp, a \
             tmpfs or a volume)"
                .into(),
        );
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "missing: nothing to run"))?;
    let mut command = translate_process(process, host, &mut warn)?;
    command
        .env
        .entry("ELASTOS_IPC_FD".to_owned())
        .or_insert_with(|| elastos_policy::IPC_FD.to_string());

    let guest = guest(spec, process)?;
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid(
                "process.oomScoreAdj",
                &format!("{adj} is out of the kernel's range, -1000 to 1000"),
            ));
        }
    }
    let mut limits = DEFAULT_LIMITS;
    let mut seccomp_denied = BTreeSet::new();
    let mut masked = Vec::new();
    let top_level: BTreeSet<String> = host.top_level().into_iter().collect();
    let mut mounts = Vec::new();
    for (i, mount) in spec.mounts().iter().flatten().enumerate() {
        if let Some(m) = translate_mount(i, mount, &top_level, &mut warn)? {
            mounts.push(m);
        }
    }

    if let Some(linux) = spec.linux() {
        for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
            if let Some(path) = ns.path() {
                // The jail never joins a namespace: another container's (a Kubernetes pod's
                // sandbox, a CNI network namespace) is replaced by the jail's own, a narrowing;
                // the host's is refused, since the container expects the host's resources.
                if !host.is_host_namespace(path) {
                    warn(
                        &format!("linux.namespaces[{i}].path"),
                        format!(
                            "{} not joined: the jail makes its own {} namespace (shared with \
                             no other container)",
                            path.display(),
                            ns.typ()
                        ),
                    );
                    continue;
                }
                return Err(refused(
                    format!("linux.namespaces[{i}].path"),
                    &path.display().to_string(),
                    &format!(
                        "joining the host's {} namespace is not allowed: the jail always makes \
                         its own",
                        ns.typ()
                    ),
                ));
            }
        }
        let asked: BTreeSet<String> = linux
            .namespaces()
            .iter()
            .flatten()
            .map(|ns| ns.typ().to_string())
            .collect();
        if let Some(kind) = ISOLATING_NAMESPACES
            .iter()
            .find(|kind| !asked.contains(&kind.to_string()))
        {
            return Err(refused(
                "linux.namespaces",
                &format!("no {kind} namespace"),
                &format!(
                    "without one the container would share the host's {kind} namespace, which \
                     the jail never does (podman --network host, --pid host, ...)"
                ),
            ));
        }
        if linux.uid_mappings().iter().flatten().next().is_some()
            || linux.gid_mappings().iter().flatten().next().is_some()
        {
            warn(
                "linux.uidMappings",
                "not applied: the jail maps the process's uid and gid (process.user) to a host \
                 uid and gid of its own, never to host ids a spec names"
                    .into(),
            );
        }
        for (i, device) in linux.devices().iter().flatten().enumerate() {
            let path = device.path().to_string_lossy();
            if JAIL_DEVICES.contains(&path.as_ref()) {
                continue;
            }
            if DROPPED_DEVICES.contains(&path.as_ref()) {
                warn(
                    &format!("linux.devices[{i}]"),
                    format!("{path} left out: the jail gives no terminal device"),
                );
                continue;
            }
            return Err(refused(
                format!("linux.devices[{i}]"),
                &path,
                "the jail gives only /dev/null, zero, full, random and urandom",
            ));
        }
        if let Some(path) = linux.cgroups_path() {
            warn(
                "linux.cgroupsPath",
                format!(
                    "{} not used: the jail's cgroups are elastos's own (under elastos/ of each \
                     hierarchy), with the spec's limits",
                    path.display()
                ),
            );
        }
        if linux.sysctl().as_ref().is_some_and(|s| !s.is_empty()) {
            let names: BTreeSet<&String> =
                linux.sysctl().iter().flatten().map(|(k, _)| k).collect();
            warn(
                "linux.sysctl",
                format!("not applied: {names:?} (the jail changes no kernel setting)"),
            );
        }
        if let Some(resources) = linux.resources() {
            if let Some(memory) = resources.memory().as_ref().and_then(|m| m.limit()) {
                if memory > 0 {
                    limits.memory_bytes = memory as u64;
                }
            }
            if let Some(pids) = resources.pids() {
                if pids.limit() > 0 {
                    limits.threads = pids.limit() as u64;
                }
            }
            let mut cpu_unenforced = false;
            if let Some(cpu) = resources.cpu() {
                // `--cpus N`: quota/period is the CPUs' worth the container may use, which is
                // what the jail's `limits.cpus` is (a quota of 0 or less is no limit).
                if let (Some(quota), Some(period)) = (cpu.quota(), cpu.period()) {
                    if quota > 0 && period > 0 {
                        limits.cpu_millis = cpu_millis(quota as u64, period);
                    }
                }
                cpu_unenforced = cpu.shares().is_some()
                    || cpu.cpus().is_some()
                    || cpu.mems().is_some()
                    || cpu.realtime_runtime().is_some()
                    || cpu.realtime_period().is_some()
                    || cpu.idle().is_some()
                    || cpu.burst().is_some();
            }
            let unenforced = [
                ("cpu", cpu_unenforced),
                ("blockIO", resources.block_io().is_some()),
                ("hugepageLimits", resources.hugepage_limits().is_some()),
                ("network", resources.network().is_some()),
                ("rdma", resources.rdma().is_some()),
                ("unified", resources.unified().is_some()),
            ];
            for (name, set) in unenforced {
                if set {
                    warn(
                        &format!("linux.resources.{name}"),
                        "not enforced by elastos oci (memory, pids, open files and the CPU quota are)".into(),
                    );
                }
            }
        }
        if let Some(seccomp) = linux.seccomp() {
            seccomp_denied = narrowing(seccomp, &mut warn);
        }
        for (i, path) in linux.masked_paths().iter().flatten().enumerate() {
            let field = format!("linux.maskedPaths[{i}]");
            let path = absolute_below_root(&field, path)?;
            match host.kind(&path) {
                Some(kind @ (PathKind::Directory | PathKind::File)) => masked.push(Masked {
                    jail: path,
                    directory: kind == PathKind::Directory,
                }),
                // runc's rule: what is not there needs no hiding.
                None => {}
                Some(PathKind::Symlink) => warn(
                    &field,
                    format!(
                        "{} not masked: a path through a symbolic link (mask its target)",
                        path.display()
                    ),
                ),
            }
        }
        for (i, path) in linux.readonly_paths().iter().flatten().enumerate() {
            let field = format!("linux.readonlyPaths[{i}]");
            let path = absolute_below_root(&field, path)?;
            if let Some(writable) = writable_places(&mounts)
                .into_iter()
                .find(|place| path.starts_with(place))
            {
                return Err(refused(
                    field,
                    &path.display().to_string(),
                    &format!(
                        "inside {}, which the jail mounts writable; elastos makes no read-only \
                         mount inside a writable one (the image and /proc are read-only already)",
                        writable.display()
                    ),
                ));
            }
        }
    }
    let mut extra_rlimits = Vec::new();
    for rlimit in process.rlimits().iter().flatten() {
        match rlimit.typ() {
            PosixRlimitType::RlimitNproc => limits.threads = limits.threads.min(rlimit.soft()),
            typ => {
                // The jail's open-file limit is the spec's hard one; its soft one, below it,
                // is passed on like the other rlimits.
                if typ == PosixRlimitType::RlimitNofile {
                    limits.open_files = rlimit.hard();
                }
                extra_rlimits.push(Rlimit {
                    resource: rlimit_number(typ),
                    soft: rlimit.soft(),
                    hard: rlimit.hard(),
                })
            }
        }
    }
    check_limits(&limits)?;

    Ok(Translation {
        jail: ContainerJail {
            container_id: container_id.to_owned(),
            app_id: app_id(container_id),
            rootfs: rootfs_path,
            rootfs_entries: top_level.into_iter().collect(),
            mounts,
            limits,
            env: command.env.into_iter().collect(),
            entry: command.entry,
            argv: command.argv,
            workdir: command.workdir,
            seccomp_denied,
            guest,
            masked,
            extra_rlimits,
        },
        terminal: command.terminal,
        oom_score_adj: process.oom_score_adj(),
        warnings,
    })
}

/// A spec's `process` (a container's, or one `elastos oci exec` adds), translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The absolute path of the program in the container.
    pub entry: PathBuf,
    /// Its argv, `argv[0]` as the spec gives it.
    pub argv: Vec<String>,
    /// Its environment, as the spec gives it.
    pub env: BTreeMap<String, String>,
    /// Its working directory (absolute).
    pub workdir: PathBuf,
    /// `process.terminal`: its stdio is a pseudo-terminal the runtime makes, whose master goes
    /// to the engine's console socket.
    pub terminal: bool,
}

/// Translates a `process` (the rules of the crate doc: capabilities beyond the ordinary ones
/// refused, the ordinary ones dropped, LSM labels and `user` not applied), its program looked
/// up in the container's rootfs through `host`.
pub fn translate_process(
    process: &Process,
    host: &dyn Host,
    warn: &mut dyn FnMut(&str, String),
) -> Result<Command, OciError> {
    let args = process
        .args()
        .as_ref()
        .filter(|args| !args.is_empty())
        .ok_or_else(|| invalid("process.args", "empty: nothing to run"))?;
    let workdir = process.cwd().clone();
    if !workdir.is_absolute() {
        return Err(invalid(
            "process.cwd",
            &format!("{} is not an absolute path", workdir.display()),
        ));
    }
    check_capabilities(process.capabilities().as_ref(), warn)?;
    for (field, label) in [
        (process.apparmor_profile(), "process.apparmorProfile"),
        (process.selinux_label(), "process.selinuxLabel"),
    ] {
        if field.as_deref().is_some_and(|v| !v.is_empty()) {
            warn(
                label,
                "not applied: elastos confines with Landlock and seccomp, not LSM labels".into(),
            );
        }
    }
    let mut env = BTreeMap::new();
    for (i, entry) in process.env().iter().flatten().enumerate() {
        match entry.split_once('=') {
            Some((name, value)) if !name.is_empty() => {
                env.insert(name.to_owned(), value.to_owned());
            }
            _ => warn(
                &format!("process.env[{i}]"),
                format!("{entry:?} is not NAME=VALUE; left out"),
            ),
        }
    }
    if process
        .user()
        .additional_gids()
        .as_ref()
        .is_some_and(|gids| !gids.is_empty())
    {
        warn(
            "process.user.additionalGids",
            "not applied: the jail's user namespace denies setgroups".into(),
        );
    }
    let entry = resolve_program(&args[0], &workdir, &env, host)?;
    Ok(Command {
        entry,
        argv: args.clone(),
        env,
        workdir,
        terminal: process.terminal() == Some(true),
    })
}

/// The spec's `hostname` (the jail's UTS namespace is always its own) and `process.user`'s
/// uid and gid, which the process has inside its own user namespace: mapped to the jail's one
/// host uid and gid, without capabilities whatever their number (see `elastos_policy::Guest`).
/// Supplementary groups are not: the jail's user namespace denies setgroups.
fn guest(spec: &Spec, process: &Process) -> Result<Guest, OciError> {
    let mut guest = Guest::default();
    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        // sethostname(2)'s limit (HOST_NAME_MAX); a NUL would end it early.
        if hostname.len() > 64 || hostname.contains('\0') {
            return Err(invalid(
                "hostname",
                &format!("{hostname:?} is not a hostname: expected at most 64 bytes, no NUL"),
            ));
        }
        guest.hostname = hostname.to_owned();
    }
    let user = process.user();
    // (uid_t)-1 means "unchanged" to setresuid and cannot be mapped.
    for (field, id) in [
        ("process.user.uid", user.uid()),
        ("process.user.gid", user.gid()),
    ] {
        if id == u32::MAX {
            return Err(invalid(
                field,
                "4294967295 is not an id: expected 0 to 4294967294",
            ));
        }
    }
    guest.uid = user.uid();
    guest.gid = user.gid();
    Ok(guest)
}

/// Linux's number of an rlimit (asm-generic/resource.h, what x86_64 uses).
fn rlimit_number(typ: PosixRlimitType) -> u32 {
    use PosixRlimitType as R;
    match typ {
        R::RlimitCpu => 0,
        R::RlimitFsize => 1,
        R::RlimitData => 2,
        R::RlimitStack => 3,
        R::RlimitCore => 4,
        R::RlimitRss => 5,
        R::RlimitNproc => 6,
        R::RlimitNofile => 7,
        R::RlimitMemlock => 8,
        R::RlimitAs => 9,
        R::RlimitLocks => 10,
        R::RlimitSigpending => 11,
        R::RlimitMsgqueue => 12,
        R::RlimitNice => 13,
        R::RlimitRtprio => 14,
        R::RlimitRttime => 15,
    }
}

/// `path` of `field` as an absolute path below / without `..`.
fn absolute_below_root(field: &str, path: &str) -> Result<PathBuf, OciError> {
    let path = PathBuf::from(path);
    let normal = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !normal || path == Path::new("/") {
        return Err(invalid(
            field,
            &format!(
                "{:?} is not an absolute path below / without `..`",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// Where the container can write: the jail's /tmp and /dev, and the spec's writable mounts.
/// The rest (the image, /proc, read-only volumes) is read-only to it.
fn writable_places(mounts: &[ContainerMount]) -> Vec<PathBuf> {
    let mut places: Vec<PathBuf> = vec!["/tmp".into(), "/dev".into()];
    places.extend(mounts.iter().filter_map(|mount| match mount {
        ContainerMount::Bind {
            jail,
            writable: true,
            ..
        }
        | ContainerMount::Tmpfs { jail, .. } => Some(jail.clone()),
        // /dev, its shm and mqueue are writable, and under /dev already; sysfs is read-only.
        ContainerMount::Bind { .. }
        | ContainerMount::Proc
        | ContainerMount::Dev
        | ContainerMount::Kernel { .. } => None,
    }));
    places
}

pub(crate) fn refused(field: impl Into<String>, value: &str, reason: &str) -> OciError {
    OciError::Refused {
        field: field.into(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

pub(crate) fn invalid(field: &str, reason: &str) -> OciError {
    OciError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Refuses any capability beyond [`ORDINARY_CAPABILITIES`]; warns that the ordinary ones are
/// dropped.
fn check_capabilities(
    capabilities: Option<&oci_spec::runtime::LinuxCapabilities>,
    warn: &mut dyn FnMut(&str, String),
) -> Result<(), OciError> {
    let Some(caps) = capabilities else {
        return Ok(());
    };
    let sets: [(&str, &Option<Capabilities>); 5] = [
        ("bounding", caps.bounding()),
        ("effective", caps.effective()),
        ("permitted", caps.permitted()),
        ("inheritable", caps.inheritable()),
        ("ambient", caps.ambient()),
    ];
    let mut dropped = BTreeSet::new();
    for (set, list) in sets {
        let names: BTreeSet<String> = list
            .iter()
            .flatten()
            .map(|cap| format!("CAP_{cap}"))
            .collect();
        if let Some(privileged) = names
            .iter()
            .find(|name| !ORDINARY_CAPABILITIES.contains(&name.as_str()))
        {
            return Err(refused(
                format!("process.capabilities.{set}"),
                privileged,
                "a privilege-granting capability: the jail never grants a capability, and a \
                 container that needs this one cannot run in it (only the ordinary ones engines \
                 ask for by default are dropped instead)",
            ));
        }
        dropped.extend(names);
    }
    if !dropped.is_empty() {
        let list: Vec<String> = dropped.into_iter().collect();
        warn(
            "process.capabilities",
            format!(
                "dropped: {} (the jail grants no capability)",
                list.join(", ")
            ),
        );
    }
    Ok(())
}

/// One mount of the spec: `Ok(None)` when the jail provides it itself or leaves it out.
fn translate_mount(
    i: usize,
    mount: &oci_spec::runtime::Mount,
    top_level: &BTreeSet<String>,
    warn: &mut dyn FnMut(&str, String),
) -> Result<Option<ContainerMount>, OciError> {
    let field = format!("mounts[{i}]");
    let destination = mount.destination();
    let shown = destination.display().to_string();
    let normal = destination.is_absolute()
        && destination
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !normal || destination == Path::new("/") {
        return Err(invalid(
            &format!("{field}.destination"),
            &format!("{shown:?} is not an absolute path below / without `..`"),
        ));
    }
    let options: Vec<&str> = mount
        .options()
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let typ = mount.typ().as_deref().unwrap_or("");
    let is_bind = typ == "bind" || options.iter().any(|o| *o == "bind" || *o == "rbind");
    // The jail's own /proc and /dev stand in for the engine's, where the spec places them.
    match shown.as_str() {
        "/proc" => return Ok(Some(ContainerMount::Proc)),
        "/dev" => return Ok(Some(ContainerMount::Dev)),
        _ => {}
    }
    if let Some(fs) = kernel_fs(&field, typ, &shown, &options, is_bind, warn)? {
        let source = mount
            .source()
            .as_ref()
            .map(|s| s.display().to_string())
            .filter(|s| !s.is_empty() && !s.contains('\0'))
            .unwrap_or_else(|| typ.to_owned());
        return Ok(Some(ContainerMount::Kernel {
            fs,
            source,
            jail: destination.clone(),
        }));
    }
    // A bind on /dev/shm (podman's) is replaced by the jail's own: shared memory with a host
    // directory is what the jail keeps out.
    if shown == "/dev/shm" {
        return Ok(None);
    }
    if matches!(typ, "sysfs" | "cgroup" | "cgroup2" | "devpts" | "mqueue") && !is_bind {
        warn(
            &field,
            format!("{typ} on {shown} left out: the jail has no {typ} there"),
        );
        return Ok(None);
    }
    let top = destination
        .components()
        .find_map(|c| match c {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .expect("a normal path below / has a first component");
    let depth = destination.components().count() - 1;
    if top == "proc" {
        return Err(refused(
            format!("{field}.destination"),
            &shown,
            "/proc is the jail's own procfs",
        ));
    }
    // Below a top-level entry of the read-only image, a mount point cannot be made.
    if depth > 1 && top_level.contains(&top) && !JAIL_OWNED_TOP_LEVEL.contains(&top.as_str()) {
        if ENGINE_FILES.iter().any(|f| destination.starts_with(f)) {
            warn(&field, format!("{shown} left out: the image is read-only"));
            return Ok(None);
        }
        return Err(refused(
            format!("{field}.destination"),
            &shown,
            &format!(
                "inside the read-only image (/{top} is the image's); mount volumes at a path the \
                 image does not have"
            ),
        ));
    }
    let jail: PathBuf = destination.clone();
    if is_bind {
        let source = mount
            .source()
            .as_ref()
            .filter(|s| s.is_absolute())
            .ok_or_else(|| {
                invalid(
                    &format!("{field}.source"),
                    "a bind needs an absolute source",
                )
            })?;
        if ["/proc", "/sys", "/dev"]
            .iter()
            .any(|p| source.starts_with(p))
        {
            return Err(refused(
                format!("{field}.source"),
                &source.display().to_string(),
                "the host's kernel interfaces and devices never enter the jail",
            ));
        }
        return Ok(Some(ContainerMount::Bind {
            host: source.clone(),
            jail,
            writable: !options.contains(&"ro"),
        }));
    }
    if typ == "tmpfs" {
        let size_bytes = tmpfs_size(&field, &options)?;
        return Ok(Some(ContainerMount::Tmpfs { jail, size_bytes }));
    }
    Err(refused(
        format!("{field}.type"),
        typ,
        "the jail mounts only binds and tmpfs",
    ))
}

/// Where the jail mounts a kernel filesystem of its own namespaces, the only place each can be:
/// (destination, type).
const KERNEL_MOUNTS: &[(&str, &str)] = &[
    ("/dev/shm", "tmpfs"),
    ("/dev/pts", "devpts"),
    ("/dev/mqueue", "mqueue"),
    ("/sys", "sysfs"),
];

/// A mount the jail makes as a kernel filesystem of its own namespaces: the spec's /dev/shm
/// tmpfs, devpts, mqueue and sysfs at their usual places (see [`KernelFs`]). `None` for any
/// other mount.
fn kernel_fs(
    field: &str,
    typ: &str,
    destination: &str,
    options: &[&str],
    is_bind: bool,
    warn: &mut dyn FnMut(&str, String),
) -> Result<Option<KernelFs>, OciError> {
    if is_bind || !KERNEL_MOUNTS.contains(&(destination, typ)) {
        return Ok(None);
    }
    Ok(Some(match typ {
        "tmpfs" => KernelFs::Tmpfs {
            size_bytes: tmpfs_size(field, options)?,
            // Permission bits only: a set-id bit on a directory grants nothing but is not asked
            // for by any engine either.
            mode: options
                .iter()
                .find_map(|o| o.strip_prefix("mode="))
                .and_then(|mode| u32::from_str_radix(mode, 8).ok())
                .map_or(0o1777, |mode| mode & 0o1777),
        },
        "devpts" => KernelFs::Devpts,
        "mqueue" => KernelFs::Mqueue,
        _ => {
            if !options.contains(&"ro") {
                warn(
                    field,
                    "sysfs on /sys mounted read-only all the same (the jail never writes to \
                     the kernel's settings)"
                        .into(),
                );
            }
            KernelFs::Sysfs
        }
    }))
}

/// The `size=` of a tmpfs mount's options, else [`DEFAULT_TMPFS_BYTES`].
fn tmpfs_size(field: &str, options: &[&str]) -> Result<u64, OciError> {
    options
        .iter()
        .find_map(|o| o.strip_prefix("size="))
        .map(|size| {
            parse_size(size).ok_or_else(|| {
                invalid(
                    &format!("{field}.options"),
                    &format!("size={size} is not a size (e.g. 65536k, 64m)"),
                )
            })
        })
        .transpose()
        .map(|size| size.unwrap_or(DEFAULT_TMPFS_BYTES))
}

/// A tmpfs size: bytes, or with a k, m or g suffix.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 1 << 10),
        (i, 'm' | 'M') => (&text[..i], 1 << 20),
        (i, 'g' | 'G') => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// The syscalls the spec's profile denies, to remove from the jail's allow-list.
fn narrowing(seccomp: &LinuxSeccomp, warn: &mut dyn FnMut(&str, String)) -> BTreeSet<String> {
    let allows = |action: LinuxSeccompAction| {
        matches!(
            action,
            LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
        )
    };
    let rules = seccomp.syscalls().iter().flatten();
    let conditional = rules
        .clone()
        .filter(|rule| rule.args().as_ref().is_some_and(|a| !a.is_empty()))
        .count();
    if seccomp.listener_path().is_some() {
        warn(
            "linux.seccomp.listenerPath",
            "not applied: the jail has no seccomp notifications".into(),
        );
    }
    if allows(seccomp.default_action()) {
        // An allow-list-by-default profile: its unconditional denials are removed from ours.
        if conditional > 0 {
            warn(
                "linux.seccomp.syscalls",
                format!(
                    "{conditional} rule(s) conditional on arguments not applied (the jail's own \
                     argument checks stay)"
                ),
            );
        }
        return rules
            .filter(|rule| !allows(rule.action()))
            .filter(|rule| rule.args().as_ref().is_none_or(|a| a.is_empty()))
            .flat_map(|rule| rule.names().iter().cloned())
            .collect();
    }
    // A deny-by-default profile (podman's, docker's): what it never allows, ours loses. A call
    // it allows only with some arguments keeps the jail's own check for those.
    let allowed: BTreeSet<&str> = rules
        .clone()
        .filter(|rule| allows(rule.action()))
        .flat_map(|rule| rule.names().iter().map(String::as_str))
        .collect();
    elastos_policy::syscalls::allowed_syscalls()
        .map(|(_, syscall)| syscall.name())
        .filter(|name| !allowed.contains(name))
        .map(str::to_owned)
        .collect()
}

/// `ociVersion`: a runtime-spec version of major 1 (`1.0.0` to `1.3.0`, and later minor ones:
/// what they add that this runtime does not know is not applied, as for any unknown field).
fn check_version(version: &str) -> Result<(), OciError> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 3 && parts.iter().all(numeric) && parts[0] == "1" {
        return Ok(());
    }
    Err(invalid(
        "ociVersion",
        &format!("{version:?} is not a runtime-spec version: expected 1.MINOR.PATCH"),
    ))
}

/// A CPU quota of `quota_us` in every `period_us` (both above 0) as the jail's thousandths of
/// a CPU, within what the jail takes.
pub(crate) fn cpu_millis(quota_us: u64, period_us: u64) -> u64 {
    (quota_us.saturating_mul(1000) / period_us).clamp(
        *elastos_policy::manifest::CPU_MILLIS_RANGE.start(),
        *elastos_policy::manifest::CPU_MILLIS_RANGE.end(),
    )
}

/// Limits the jail cannot take.
pub(crate) fn check_limits(limits: &ResourceLimits) -> Result<(), OciError> {
    if limits.memory_bytes < elastos_policy::manifest::MIN_MEMORY_BYTES {
        return Err(invalid(
            "linux.resources.memory.limit",
            &format!(
                "{} bytes is below the jail's minimum of {} MiB",
                limits.memory_bytes,
                elastos_policy::manifest::MIN_MEMORY_BYTES / MIB
            ),
        ));
    }
    Ok(())
}

/// `process.args[0]` as a path in the container: as given when it has a `/`, else the first
/// match in the spec's `PATH` (runc's rule).
fn resolve_program(
    program: &str,
    workdir: &Path,
    env: &BTreeMap<String, String>,
    rootfs: &dyn Host,
) -> Result<PathBuf, OciError> {
    if program.contains('/') {
        let path = workdir.join(program);
        return if rootfs.is_file(&path) {
            Ok(path)
        } else {
            Err(OciError::ProgramNotFound {
                program: program.to_owned(),
                searched: path.display().to_string(),
            })
        };
    }
    let path_var = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    path_var
        .split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| rootfs.is_file(candidate))
        .ok_or_else(|| OciError::ProgramNotFound {
            program: program.to_owned(),
            searched: format!("PATH={path_var}"),
        })
}

#[cfg(test)]
mod tests;
