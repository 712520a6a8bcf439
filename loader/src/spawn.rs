//! Creating a jail's first process ([`spawn`]) and building the plan around it
//! ([`PendingJail::start`]).
//!
//! ```text
//! launcher (host)                       child / loader (new user, mount, pid, net, ipc, uts ns)
//! spawn: pipes, the app's stdio,        close every fd it was not given (the launcher's
//!        a cgroup2 leaf (v2, hybrid)    stdio is replaced by the app's at 0-2),
//!        clone3(CLONE_NEW*,        ---> unshare(CLONE_NEWNET), socketpair (the app's fd 3),
//!        CLONE_PIDFD, INTO_CGROUP)
//!                                       its other end <---- over the channel (SCM_RIGHTS),
//!                                       wait on the channel
//! (elastos run: verify, plan the bundle)
//! start: write the LoaderInput,
//! uid_map/gid_map
//! go-ahead, the host paths -------------> restore CPU affinity, open the host paths at fds 6+,
//!                                        become uid 0 of the namespace, PDEATHSIG,
//!                                        execveat(loader)
//! the limits (v1: its cgroups)          loader reads the input, builds the filesystem;
//! close the input pipe ----------------> on EOF: joins the v1 cgroups, pivot_root, cgroup
//!                                        namespace, fork the app
//! read reports until `ready` <---------- ... exec entry (report pipe closes on exec)
//! take the broker's end of fd 3 (waiting on the channel since the child sent it)
//! wait: relay stdio, forward signals <--> the app
//! ```
//!
//! A user with subordinate ids: the child is cloned inside the user's namespace
//! ([`crate::holder`]) by an intermediate process that joins it (`sys::spawn_jailed_child`), and
//! its id maps are written through the map files that process opened there: no setuid helper.
//!
//! The limits are written while the loader builds the filesystem (each takes ~0.2-0.4 ms here);
//! the loader waits for them only before it goes on to the app (v1: joins its cgroups, see
//! `AppCgroup::self_join_files`). On cgroup v2, and in the cgroup2 tree of a hybrid host, the
//! process is created in its leaf (`AppCgroup::before_clone`), so no pid is ever moved.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use elastos_handoff::{fds, Report};
use elastos_policy::{jail_paths, JailPlan, MountEntry};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::cgroup::{AppCgroup, CgroupFs, LimitMechanism};
use crate::error::LaunchError;
use crate::holder::UserNamespace;
use crate::identity::HostIdentity;
use crate::input::{loader_input, resolve_mounts, MAX_MOUNT_SOURCES};
use crate::stdio::{self, Relay};
use crate::subordinate::{migrate_home, SubordinateIds};
use crate::supervise::{BlockedSignals, JailFacts, JailHandle, RunningJail};
use crate::sys::{self, ChildSetup, ChildStep, ClonedChild, CHILD_FAILURE_MAGIC};

/// How to launch.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The `elastos-loader` executable.
    pub loader: PathBuf,
    /// Run even without Landlock or seccomp in the kernel (loudly named at the CLI).
    pub allow_without_kernel_sandbox: bool,
    /// Never use a cgroup (rlimits only).
    pub no_cgroup: bool,
    /// The app is the one the user runs (`elastos run`): it reads the launcher's stdin and gets a
    /// terminal of its own where the launcher's stdio is one. Otherwise (a service started on
    /// demand) its stdin is empty and its stdout and stderr are pipes. Either way the app never
    /// holds the launcher's own fds (see `stdio`).
    pub attached: bool,
    /// A detached app (`elastos run -d`, never `attached`): its stdout and stderr are not
    /// relayed to the launcher's but handed to the supervisor
    /// ([`RunningJail::take_output`](crate::RunningJail::take_output)), which logs them.
    pub capture_output: bool,
    /// The user's runtime directory (the broker's control socket's), where the holder of its
    /// user namespace is recorded (see [`crate::holder`]; a user with subordinate ids only).
    pub runtime_dir: PathBuf,
}

/// The app's home on the host, if the plan mounts one.
fn home_of(plan: &JailPlan) -> Option<&Path> {
    plan.mounts.iter().find_map(|m| match m {
        MountEntry::Bind { host, jail, .. } if jail == Path::new(jail_paths::HOME) => {
            Some(host.as_path())
        }
        _ => None,
    })
}

/// Makes the home the app's: as root, by chown (root created it); as a user with subordinate
/// ids, by moving whatever of it is still the user's own (a new home, or one an older elastos
/// used as the user's uid) to the app's ids, once: afterwards its owner already is the app's.
fn prepare_home(
    home: Option<&Path>,
    identity: &HostIdentity,
    user_namespace: Option<&UserNamespace>,
) -> Result<(), LaunchError> {
    let Some(home) = home else {
        return Ok(());
    };
    if identity.launched_by_root {
        return std::os::unix::fs::chown(home, Some(identity.uid), Some(identity.gid)).map_err(
            |source| LaunchError::Home {
                path: home.to_path_buf(),
                source,
            },
        );
    }
    let Some(user_namespace) = user_namespace.filter(|_| identity.subordinate) else {
        return Ok(());
    };
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(home).map_err(|source| LaunchError::Home {
        path: home.to_path_buf(),
        source,
    })?;
    if (meta.uid(), meta.gid()) != (identity.uid, identity.gid) {
        tracing::info!(
            home = %home.display(),
            uid = identity.uid,
            gid = identity.gid,
            "giving the app's home to its subordinate ids"
        );
        migrate_home(home, identity.uid, identity.gid, user_namespace)?;
    }
    Ok(())
}

/// A jail's first process, in its new namespaces, waiting for its plan. Dropping it kills it.
#[derive(Debug)]
pub struct PendingJail(Option<Pending>);

/// What a [`PendingJail`] holds until [`PendingJail::start`] takes it.
#[derive(Debug)]
struct Pending {
    pid: i32,
    /// The uid that owns the jail's user namespace, when it is not this process's (a root
    /// launcher; see [`HostIdentity::namespace_owner`]).
    namespace_owner: Option<u32>,
    /// The launching user's subordinate ids, which the app runs as (None: root, or a user
    /// without them, whose app runs as its own uid).
    subordinate: Option<SubordinateIds>,
    /// That user's namespace, which the jail's is nested in (with `subordinate` only).
    user_namespace: Option<UserNamespace>,
    /// The jail's `uid_map` and `gid_map`, opened in `user_namespace` (see [`ClonedChild`]).
    id_maps: Option<[File; 2]>,
    handle: JailHandle,
    options: LaunchOptions,
    /// Our end of the channel: the child sends the broker's end of fd 3 on it, we send it the
    /// go-ahead byte once the id maps are written.
    channel: OwnedFd,
    sources_write: OwnedFd,
    input_write: OwnedFd,
    report_read: OwnedFd,
    relay: Relay,
    signals: BlockedSignals,
    /// The cgroup filesystem, as found at spawn.
    cgroups: CgroupFs,
    /// The app's cgroup as far as it is known before the app is: the cgroup2 leaf the process
    /// was cloned into, if any (v1 leaves are chosen in [`PendingJail::start`], named after
    /// the app).
    cgroup: AppCgroup,
    /// This instance's number, in the names of its cgroups.
    instance: u64,
}

/// Creates a jail's first process in new user, mount, pid, net, ipc and uts namespaces, before
/// the plan is known: `elastos run` verifies and plans the bundle while the kernel builds the
/// namespaces (the network namespace alone costs ~0.25 ms here, made by the child itself). Nothing of any bundle reaches the process before
/// [`PendingJail::start`].
///
/// The app's fd 3 is made by that process, in the jail's network namespace (see
/// [`PendingJail::start`], which returns the broker's end): a socket belongs to the network
/// namespace it was created in, and one of the host's would answer network requests about the
/// host's interfaces.
///
/// Blocks SIGINT, SIGTERM, SIGHUP and SIGCHLD in the calling thread (they are handled by
/// [`RunningJail::wait`]); call it from the thread that will wait, and keep that thread alive as
/// long as the app: the app is killed when the thread that started it exits (PR_SET_PDEATHSIG).
pub fn spawn(options: &LaunchOptions) -> Result<PendingJail, LaunchError> {
    let loader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&options.loader)
        .map_err(|source| LaunchError::Loader {
            path: options.loader.clone(),
            source,
        })?;
    let (input_read, input_write) = cloexec_pipe()?;
    let (report_read, report_write) = cloexec_pipe()?;
    let (channel, child_channel) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| LaunchError::Fds(e.into()))?;
    let (sources_read, sources_write) = cloexec_pipe()?;

    // Everything the child keeps is first moved above the fixed numbers (3, 4, 5, then one per
    // mount source), so that moving it into place never overwrites one of them. Just above, not
    // at some round number: growing the fd table past its initial 64 slots makes the kernel wait
    // for an RCU grace period when the process has threads (the embedded broker), ~8 ms here.
    let floor = sys::FIXED_FDS_END;
    let above = |fd: &OwnedFd| sys::dup_above(fd.as_raw_fd(), floor).map_err(LaunchError::Fds);
    // The app's stdio replaces the launcher's own at 0, 1 and 2 (which the child closes only by
    // placing these there): pipes or a pty of ours, never a host file.
    let (app_stdio, relay) = stdio::connect(options.attached, options.capture_output)?;
    let [app_stdin, app_stdout, app_stderr] = &app_stdio;
    let handed: Vec<(OwnedFd, RawFd)> = vec![
        (above(app_stdin)?, 0),
        (above(app_stdout)?, 1),
        (above(app_stderr)?, 2),
        (above(&input_read)?, fds::INPUT),
        (above(&report_write)?, fds::REPORT),
    ];
    let (child_channel, sources_read, loader) = (
        above(&child_channel)?,
        above(&sources_read)?,
        above(&loader.into())?,
    );
    drop((input_read, app_stdio));

    let root = nix::unistd::getuid().is_root();
    // Known before clone: the child may drop the launcher's groups only if its gid map is
    // written with privilege (root's, or this user's over its namespace: setgroups stays allowed).
    let subordinate = if root {
        None
    } else {
        SubordinateIds::of_current_user()
            .inspect_err(|why| tracing::debug!("the app runs as this user's own uid: {why}"))
            .ok()
    };
    // Its whole range is mapped once, in its namespace, which the jail's is nested in: this
    // jail's maps then need no setuid helper (see `holder`).
    let user_namespace = match &subordinate {
        Some(ids) => Some(UserNamespace::of_current_user(
            &options.runtime_dir,
            ids,
            &options.loader,
        )?),
        None => None,
    };
    let mut setup = ChildSetup::new(
        child_channel.as_raw_fd(),
        sources_read.as_raw_fd(),
        report_write.as_raw_fd(),
        handed
            .iter()
            .map(|(fd, to)| (fd.as_raw_fd(), *to))
            .collect(),
        root || subordinate.is_some(),
        loader.as_raw_fd(),
        vec![CString::from(c"elastos-loader")],
    );
    let signals = BlockedSignals::block()?;
    // CLONE_NEWNET is left to the child (see ChildStep::NetNamespace).
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    let cgroups = CgroupFs::detect();
    static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);
    let instance = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
    // The cgroup2 leaf exists before the process, which is cloned into it.
    let (mut cgroup, leaf) = AppCgroup::before_clone(
        &cgroups,
        &format!("{}-{instance}", std::process::id()),
        options.no_cgroup,
    )?;
    let namespace_owner = HostIdentity::namespace_owner();
    let mut clone = |into: Option<&OwnedFd>| {
        let nested_in = user_namespace.as_ref().map(UserNamespace::as_fd);
        let mut clone =
            || sys::spawn_jailed_child(flags, &mut setup, into.map(|fd| fd.as_fd()), nested_in);
        match namespace_owner {
            Some(owner) => sys::as_namespace_owner(owner, clone).and_then(|cloned| cloned),
            None => clone(),
        }
    };
    let cloned = match clone(leaf.as_ref()) {
        // No clone3 here (ENOSYS: before Linux 5.3, or a seccomp filter around us), or no
        // CLONE_INTO_CGROUP (E2BIG: before 5.7, which does not know the `cgroup` field): a plain
        // clone, and the launcher moves the process into its leaf (`cgroup.procs`) before it
        // goes on.
        Err(e)
            if leaf.is_some() && matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::E2BIG)) =>
        {
            clone(None)
        }
        cloned => {
            if cloned.is_ok() && leaf.is_some() {
                cgroup.cloned_into();
            }
            cloned
        }
    };
    let ClonedChild {
        pid,
        pidfd,
        id_maps,
    } = cloned.map_err(|source| LaunchError::Namespaces { source })?;
    drop((
        handed,
        child_channel,
        sources_read,
        loader,
        report_write,
        setup,
    ));
    Ok(PendingJail(Some(Pending {
        pid,
        namespace_owner,
        subordinate,
        user_namespace,
        id_maps,
        handle: JailHandle::new(pidfd),
        options: options.clone(),
        channel,
        sources_write,
        input_write,
        report_read,
        relay,
        signals,
        cgroups,
        cgroup,
        instance,
    })))
}

/// Moments of [`PendingJail::start_observed`] at which a launcher may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartStep {
    /// The app's home exists and belongs to the ids the app runs as; the loader is about to get
    /// the go-ahead and mount it. Files written into it from now on are the app's to see.
    HomeReady,
    /// The last moment before the app's entry may run: the loader has everything but the
    /// EOF that lets it exec the entry, which follows when the observer returns.
    EntryNext,
}

impl PendingJail {
    /// The waiting process's pid (host's view).
    pub fn pid(&self) -> i32 {
        self.0.as_ref().map_or(0, |pending| pending.pid)
    }

    /// Builds `plan` around the waiting process: id maps, mount sources, the loader's input, the
    /// cgroup; returns once the app's entry runs, with the broker's end of the app's fd 3 (a
    /// socket of the jail's network namespace, like the app's end).
    pub fn start(self, plan: &JailPlan) -> Result<(RunningJail, OwnedFd), LaunchError> {
        self.start_observed(plan, &mut |_| {})
    }

    /// [`PendingJail::start`], telling `observe` when each [`StartStep`] is reached, so that a
    /// launcher can work on the app's home while the loader builds the jail.
    pub fn start_observed(
        mut self,
        plan: &JailPlan,
        observe: &mut dyn FnMut(StartStep),
    ) -> Result<(RunningJail, OwnedFd), LaunchError> {
        let Pending {
            pid,
            namespace_owner,
            subordinate,
            user_namespace,
            id_maps,
            handle,
            options,
            channel,
            sources_write,
            input_write,
            report_read,
            relay,
            signals,
            cgroups,
            mut cgroup,
            instance,
        } = self.0.take().expect("a PendingJail is started once");
        let began = std::time::Instant::now();
        // From here on the process belongs to `jail`, whose Drop kills and reaps it.
        let home = home_of(plan);
        let identity = HostIdentity::for_app_home(&plan.app_id, home, subordinate.as_ref());
        // Two instances of one app started by one process (the daemon) never share a cgroup.
        let name = format!("{}-{}-{instance}", plan.app_id, std::process::id());
        cgroup.name_after_app(&cgroups, &name, options.no_cgroup);
        let mut jail = RunningJail::new(
            JailFacts {
                pid,
                identity,
                landlock_abi: 0,
                landlock_fully_enforced: false,
                limits: cgroup.mechanism().clone(),
            },
            handle,
            cgroup,
            relay,
            signals,
        );
        prepare_home(home, &identity, user_namespace.as_ref())?;
        observe(StartStep::HomeReady);
        let (mounts, sources) = resolve_mounts(plan)?;
        if sources.len() > MAX_MOUNT_SOURCES {
            return Err(LaunchError::TooManyMountSources {
                count: sources.len(),
                max: MAX_MOUNT_SOURCES,
            });
        }
        let input = loader_input(
            plan,
            mounts,
            jail.cgroup().self_join_files(),
            jail.facts().limits == LimitMechanism::Rlimits,
            options.allow_without_kernel_sandbox,
        )
        .encode();
        let mut framed = Vec::with_capacity(4 + input.len());
        framed.extend_from_slice(&(input.len() as u32).to_le_bytes());
        framed.extend_from_slice(&input);
        let mut source_list = Vec::new();
        for path in &sources {
            source_list.extend_from_slice(path.as_os_str().as_bytes());
            source_list.push(0);
        }

        let mut reports = BufReader::new(File::from(report_read));
        let channel = File::from(channel);
        let handed_over = (|| {
            // Written before the loader runs when the pipe can hold it, so it never waits for us.
            let (input_write, pending_input) =
                write_if_it_fits(input_write, framed).map_err(LaunchError::HandOff)?;
            let maps_began = std::time::Instant::now();
            match (id_maps, &user_namespace) {
                (Some(files), Some(namespace)) => {
                    write_nested_id_maps(files, namespace, &identity)?
                }
                _ => write_id_maps(pid, namespace_owner, &identity)?,
            }
            let maps = maps_began.elapsed();
            (&channel).write_all(&[1]).map_err(LaunchError::HandOff)?;
            // Closed after writing: EOF ends the list.
            File::from(sources_write)
                .write_all(&source_list)
                .map_err(LaunchError::HandOff)?;
            Ok::<_, LaunchError>((input_write, pending_input, maps))
        })();
        let (input_write, pending_input, maps) = match handed_over {
            Ok(handed) => handed,
            // The child's own failure record, if it wrote one, says more than our error.
            Err(e) => return Err(child_failure_record(&mut reports, &sources).unwrap_or(e)),
        };
        let mut input_write = File::from(input_write);
        if let Some(bytes) = pending_input {
            // The input did not fit in the pipe: the loader reads it all before doing anything else.
            let _ = input_write.write_all(&bytes);
        }
        let go_ahead = began.elapsed();
        jail.cgroup().apply(&plan.limits, pid, identity.uid)?;
        let limits = began.elapsed() - go_ahead;
        // The loader builds the jail meanwhile, and waits for the EOF below before the entry.
        observe(StartStep::EntryNext);
        // EOF tells the loader that its cgroup is ready (see the module doc).
        drop(input_write);
        let (abi, fully) = read_until_started(&mut reports, &sources)?;
        // Where the jail's own start goes (scripts/bench-launch.sh and bench-activation.sh
        // print it): before the go-ahead (the input, the mount sources' list, the id maps, of
        // which `id_maps_us`), the limits written meanwhile, then the child and the loader up
        // to the app's exec.
        tracing::debug!(
            pid,
            to_go_ahead_us = go_ahead.as_micros() as u64,
            id_maps_us = maps.as_micros() as u64,
            limits_us = limits.as_micros() as u64,
            loader_us = (began.elapsed() - go_ahead - limits).as_micros() as u64,
            "jail started"
        );
        // Sent by the child right after it made its network namespace, before it waited for the
        // id maps: there since long before the app started, so taking it only now never waits.
        let broker_end = sys::receive_fd(channel.as_fd()).map_err(LaunchError::HandOff)?;
        jail.started(abi, fully, reports);
        Ok((jail, broker_end))
    }
}

impl Drop for PendingJail {
    fn drop(&mut self) {
        if let Some(pending) = &self.0 {
            pending.handle.kill();
            let _ = waitpid(Pid::from_raw(pending.pid), None);
        }
    }
}

/// The child's failure record, if one is already on the report pipe (the child is gone).
fn child_failure_record(reports: &mut BufReader<File>, sources: &[PathBuf]) -> Option<LaunchError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut ready = [PollFd::new(reports.get_ref().as_fd(), PollFlags::POLLIN)];
    poll(&mut ready, PollTimeout::ZERO)
        .ok()
        .filter(|n| *n > 0)?;
    take_child_failure(reports, sources).ok()?
}

/// Waits for the first report; if it is the pre-exec child's failure record, decodes it.
fn take_child_failure(
    reports: &mut BufReader<File>,
    sources: &[PathBuf],
) -> Result<Option<LaunchError>, LaunchError> {
    let buffered = reports.fill_buf().map_err(LaunchError::HandOff)?;
    if buffered.first() != Some(&CHILD_FAILURE_MAGIC) {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    reports
        .read_to_end(&mut bytes)
        .map_err(LaunchError::HandOff)?;
    Ok(Some(child_failure(&bytes, sources)))
}

/// Writes `bytes` to the pipe if the pipe can be made large enough to take them without blocking;
/// otherwise hands them back, to be written once a reader runs.
fn write_if_it_fits(pipe: OwnedFd, bytes: Vec<u8>) -> io::Result<(OwnedFd, Option<Vec<u8>>)> {
    use nix::fcntl::{fcntl, FcntlArg};
    let fits = match fcntl(pipe.as_raw_fd(), FcntlArg::F_GETPIPE_SZ) {
        Ok(size) if size as usize >= bytes.len() => true,
        _ => fcntl(
            pipe.as_raw_fd(),
            FcntlArg::F_SETPIPE_SZ(bytes.len() as libc::c_int),
        )
        .is_ok(),
    };
    if !fits {
        return Ok((pipe, Some(bytes)));
    }
    let mut file = File::from(pipe);
    file.write_all(&bytes)?;
    Ok((file.into(), None))
}

/// Maps uid and gid 0 of a nested jail's namespace to the app's ids, through its map files
/// (`files`: uid_map, gid_map, opened in the user's `namespace`, where the ids are the user's
/// own or its subordinate ones). The launcher owns that namespace, which gives it the
/// `CAP_SETUID`/`CAP_SETGID` over it the kernel asks of a writer of other ids than its own.
fn write_nested_id_maps(
    files: [File; 2],
    namespace: &UserNamespace,
    identity: &HostIdentity,
) -> Result<(), LaunchError> {
    let (uid, gid) = namespace
        .inner_ids(identity.uid, identity.gid)
        .ok_or_else(|| LaunchError::IdMap {
            file: "uid_map".into(),
            source: io::Error::other(format!(
                "{}:{} is not mapped in the user's namespace",
                identity.uid, identity.gid
            )),
        })?;
    for ((mut file, name), id) in files
        .into_iter()
        .zip(["uid_map", "gid_map"])
        .zip([uid, gid])
    {
        file.write_all(format!("0 {id} 1\n").as_bytes())
            .map_err(|source| LaunchError::IdMap {
                file: name.into(),
                source,
            })?;
    }
    Ok(())
}

fn write_id_maps(pid: i32, owner: Option<u32>, identity: &HostIdentity) -> Result<(), LaunchError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let write = |name: &str, value: String| {
        let file = proc.join(name);
        let opened = match owner {
            // Root without CAP_SYS_ADMIN (a hardened unit) may write the maps of a namespace it
            // does not own only through a file opened as that namespace's owner.
            Some(owner) if name != "setgroups" => sys::open_as_namespace_owner(owner, &file),
            _ => OpenOptions::new().write(true).open(&file),
        };
        opened
            .and_then(|mut opened| opened.write_all(value.as_bytes()))
            .map_err(|source| LaunchError::IdMap { file, source })
    };
    if !identity.launched_by_root {
        // Required before an unprivileged gid_map; also keeps the jail from dropping groups to
        // gain access to files denied to one of them.
        write("setgroups", "deny".into())?;
    }
    write("uid_map", format!("0 {} 1\n", identity.uid))?;
    write("gid_map", format!("0 {} 1\n", identity.gid))
}

/// Reads what the child and the loader say until the app runs: Ok((landlock ABI, fully
/// enforced)) once the entry was exec'd.
fn read_until_started(
    reports: &mut BufReader<File>,
    sources: &[PathBuf],
) -> Result<(u32, bool), LaunchError> {
    if let Some(failure) = take_child_failure(reports, sources)? {
        return Err(failure);
    }
    let mut line = String::new();
    if reports.read_line(&mut line).map_err(LaunchError::HandOff)? == 0 {
        return Err(LaunchError::LoaderVanished("no report".into()));
    }
    exec_outcome(parse_report(&line)?, &line)
}

/// What a report about the entry's exec means: Ok((landlock ABI, fully enforced)) once it runs,
/// else the failure it names (`line` is the report as read).
pub(crate) fn exec_outcome(report: Report, line: &str) -> Result<(u32, bool), LaunchError> {
    match report {
        Report::Ready {
            landlock_abi,
            landlock_fully_enforced,
        } => Ok((landlock_abi, landlock_fully_enforced)),
        Report::Failed {
            step,
            message,
            errno,
        } => Err(LaunchError::Jail {
            step,
            message,
            errno,
        }),
        Report::ExecFailed { entry, errno } => {
            let entry = PathBuf::from(entry);
            let source = io::Error::from_raw_os_error(errno);
            Err(if errno == libc::ENOENT {
                LaunchError::EntryNotFound { entry, source }
            } else {
                LaunchError::EntryNotExecutable { entry, source }
            })
        }
        Report::Exited { .. } | Report::Killed { .. } => Err(LaunchError::LoaderVanished(format!(
            "unexpected report {line:?}"
        ))),
    }
}

pub(crate) fn parse_report(line: &str) -> Result<Report, LaunchError> {
    Report::from_line(line).map_err(|e| {
        LaunchError::LoaderVanished(format!("unreadable report {:?}: {e}", line.trim_end()))
    })
}

/// Decodes the pre-exec child's 8-byte failure record.
fn child_failure(bytes: &[u8], sources: &[PathBuf]) -> LaunchError {
    {
        if bytes.len() < 8 {
            return LaunchError::LoaderVanished("truncated failure record".into());
        }
        let index = u16::from_le_bytes(bytes[2..4].try_into().expect("2 bytes"));
        let errno = i32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let step = ChildStep::from_byte(bytes[1]).unwrap_or(ChildStep::ExecLoader);
        let source = io::Error::from_raw_os_error(errno);
        match sources.get(usize::from(index)) {
            Some(path) if step == ChildStep::OpenMountSource => LaunchError::MountSource {
                path: path.clone(),
                source,
            },
            _ => LaunchError::Child { step, source },
        }
    }
}

/// A pipe whose ends close on exec (each is handed on explicitly where a child needs it).
pub(crate) fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| LaunchError::Fds(e.into()))
}
