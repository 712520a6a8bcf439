//! The holder of a user's namespace: one user namespace per user in which the user is uid 0 and
//! its whole subordinate range is mapped from 1 up (as in `podman unshare`), kept alive by a
//! tiny process (`elastos-loader hold`, like podman's rootless "pause process"). Every jail of
//! the user is nested in it, and `elastos unshare`, the run's home sync and the move of a home
//! to its app's ids run in it.
//!
//! Why: the setuid helpers `newuidmap`/`newgidmap` are the only way for a user to map ids other
//! than its own, and each exec of them (dynamically linked, setuid: ~1-2 ms each here) was most
//! of an unprivileged launch's cost: two per jail, two more per sync. Made once, the namespace
//! maps the whole range; each jail's own namespace, nested in it, is then mapped by the launcher
//! itself (it owns the holder's namespace, so it has `CAP_SETUID` there), with the app's one id.
//!
//! Found through a record in the user's runtime directory (`$XDG_RUNTIME_DIR/elastos/userns`,
//! or `$ELASTOS_HOME/run/userns`): the holder's pid, its start time and its namespace's inode.
//! A record is trusted only once the process it names is verified ([`Record::verify`]): the
//! same start time (not a reused pid), a live pidfd, the namespace recorded, owned by this
//! user, a child of this process's own namespace, mapping exactly this user's ids. Anything
//! else is never joined: a new holder is made and the record replaced (under a lock, so that
//! concurrent launches make one). See `elastos-loader`'s `hold` for how a holder ends.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::Serialize;

use crate::error::LaunchError;
use crate::subordinate::{IdRange, SubordinateIds};
use crate::sys;

/// The record's name in the runtime directory.
const RECORD: &str = "userns";
/// Held (flock) while a holder is made, so that concurrent launches make one.
const LOCK: &str = "userns.lock";
/// A record being made; renamed to [`RECORD`] once its holder is verified.
const NEW_RECORD: &str = "userns.new";

/// Why the user's namespace holder cannot be used or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HolderError {
    /// The runtime directory, the record or its lock cannot be used.
    #[error("cannot use {path}, where the holder of your user namespace is recorded")]
    Record {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The holder process could not be started.
    #[error("cannot start {} hold, the holder of your user namespace", loader.display())]
    Start {
        /// The loader executable.
        loader: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `newuidmap` or `newgidmap` could not map the user's ids in the holder's namespace.
    #[error("cannot map your subordinate ids in the holder's user namespace")]
    Maps(#[source] Box<LaunchError>),
    /// The holder just made does not pass its own verification.
    #[error("the new holder of your user namespace (pid {pid}) is not usable")]
    NotUsable {
        /// Its pid.
        pid: i32,
        /// What its verification found.
        #[source]
        why: Stale,
    },
    /// Stopping the holder failed.
    #[error("cannot stop the holder of your user namespace (pid {pid})")]
    Stop {
        /// Its pid.
        pid: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Why a record's holder is not joined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Stale {
    /// There is no record.
    #[error("no holder is recorded")]
    NoRecord,
    /// The record is not `PID START DEV INODE`.
    #[error("the record is not one elastos wrote")]
    Malformed,
    /// The process is gone.
    #[error("process {pid} has exited")]
    Gone {
        /// The recorded pid.
        pid: i32,
    },
    /// The pid names a process started at another time than the holder recorded.
    #[error("pid {pid} is now another process than the holder recorded")]
    OtherProcess {
        /// The recorded pid.
        pid: i32,
    },
    /// The process's user namespace is not the recorded one.
    #[error("process {pid} is in another user namespace than the one recorded")]
    OtherNamespace {
        /// The recorded pid.
        pid: i32,
    },
    /// The namespace belongs to another user.
    #[error("its user namespace belongs to uid {owner}, not to uid {expected}")]
    Foreign {
        /// The namespace's owner.
        owner: u32,
        /// This user.
        expected: u32,
    },
    /// The namespace is not a child of this process's own.
    #[error("its user namespace is not a child of this process's")]
    NotAChild,
    /// The namespace maps other ids than this user's.
    #[error("its user namespace maps {found:?}, not this user's ids ({expected:?})")]
    WrongMaps {
        /// The uid and gid maps found, whitespace-normalized.
        found: String,
        /// The maps expected.
        expected: String,
    },
}

/// A holder as its record names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Record {
    /// The holder's pid.
    pub pid: i32,
    /// Its start time (`/proc/PID/stat`, clock ticks since boot): a reused pid has another.
    pub started: u64,
    /// Device and inode of its user namespace (`/proc/PID/ns/user`).
    pub namespace: (u64, u64),
}

/// The ids a holder's namespace must map: `0 OWN 1` then `1 FIRST COUNT`, for uids and gids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedMaps {
    /// The user's uid (0 in the namespace), and its subordinate uids (from 1).
    pub uid: (u32, IdRange),
    /// The user's gid, and its subordinate gids.
    pub gid: (u32, IdRange),
}

impl ExpectedMaps {
    /// This user's.
    pub fn of_current_user(ids: &SubordinateIds) -> ExpectedMaps {
        ExpectedMaps {
            uid: (nix::unistd::getuid().as_raw(), ids.uids),
            gid: (nix::unistd::getgid().as_raw(), ids.gids),
        }
    }

    fn text((own, range): (u32, IdRange)) -> String {
        format!("0 {own} 1 1 {} {}", range.first, range.count)
    }
}

impl Record {
    fn parse(text: &str) -> Option<Record> {
        let mut fields = text.split_whitespace().map(str::parse::<u64>);
        let mut next = || fields.next()?.ok();
        let record = Record {
            pid: i32::try_from(next()?).ok()?,
            started: next()?,
            namespace: (next()?, next()?),
        };
        (record.pid > 0).then_some(record)
    }

    fn text(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.pid, self.started, self.namespace.0, self.namespace.1
        )
    }

    /// The record in `dir`, if there is a readable one.
    pub fn read(dir: &Path) -> Result<Record, Stale> {
        let text = std::fs::read_to_string(dir.join(RECORD)).map_err(|_| Stale::NoRecord)?;
        Record::parse(&text).ok_or(Stale::Malformed)
    }

    /// Of the live process `pid`, as it is now.
    fn of_process(pid: i32) -> Result<Record, Stale> {
        let started = start_time(pid).ok_or(Stale::Gone { pid })?;
        let meta =
            std::fs::metadata(format!("/proc/{pid}/ns/user")).map_err(|_| Stale::Gone { pid })?;
        Ok(Record {
            pid,
            started,
            namespace: (meta.dev(), meta.ino()),
        })
    }

    /// The user namespace of the process this record names, if that process is still the
    /// holder recorded and its namespace is one this user may nest its jails in (see the module
    /// doc): owned by `uid`, a child of this process's namespace, mapping exactly `maps`.
    pub fn verify(&self, uid: u32, maps: &ExpectedMaps) -> Result<UserNamespace, Stale> {
        let pid = self.pid;
        // From here on the pidfd names one process whatever its pid becomes; it is that
        // process's files that are read below if it is still alive after them.
        let process = sys::pidfd_open(pid).map_err(|_| Stale::Gone { pid })?;
        if start_time(pid) != Some(self.started) {
            return Err(Stale::OtherProcess { pid });
        }
        let namespace = File::open(format!("/proc/{pid}/ns/user"))
            .map(OwnedFd::from)
            .map_err(|_| Stale::Gone { pid })?;
        let found = (|| {
            let meta = File::from(namespace.try_clone()?).metadata()?;
            let maps = |name: &str| {
                std::fs::read_to_string(format!("/proc/{pid}/{name}"))
                    .map(|text| text.split_whitespace().collect::<Vec<_>>().join(" "))
            };
            Ok::<_, io::Error>(((meta.dev(), meta.ino()), maps("uid_map")?, maps("gid_map")?))
        })();
        // Alive after the reads: the pid was this process's all along. (Not a signal of 0,
        // which a zombie also takes: a killed holder whose reaper has not reaped it yet still
        // has its namespace, and would pass everything else.)
        if sys::has_exited(process.as_fd()) {
            return Err(Stale::Gone { pid });
        }
        let (inode, uid_map, gid_map) = found.map_err(|_| Stale::Gone { pid })?;
        if inode != self.namespace {
            return Err(Stale::OtherNamespace { pid });
        }
        let owner = sys::namespace_owner(namespace.as_fd()).map_err(|_| Stale::NotAChild)?;
        if owner != uid {
            return Err(Stale::Foreign {
                owner,
                expected: uid,
            });
        }
        let own = std::fs::metadata("/proc/self/ns/user").map_err(|_| Stale::NotAChild)?;
        let parent = sys::namespace_parent(namespace.as_fd())
            .and_then(|parent| File::from(parent).metadata())
            .map_err(|_| Stale::NotAChild)?;
        if (parent.dev(), parent.ino()) != (own.dev(), own.ino()) {
            return Err(Stale::NotAChild);
        }
        let expected = [ExpectedMaps::text(maps.uid), ExpectedMaps::text(maps.gid)];
        if [&uid_map, &gid_map] != [&expected[0], &expected[1]] {
            return Err(Stale::WrongMaps {
                found: format!("uid {uid_map}; gid {gid_map}"),
                expected: format!("uid {}; gid {}", expected[0], expected[1]),
            });
        }
        Ok(UserNamespace {
            fd: namespace,
            maps: *maps,
        })
    }
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, after the parenthesized
/// command name, which may itself hold spaces and parentheses).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The user namespace of this user, held by its holder (see the module doc), as an fd: it
/// stays usable after the holder ends. Ids of the host's `first + N` of a range are `N + 1` in
/// it, this user's own are 0.
#[derive(Debug)]
pub struct UserNamespace {
    fd: OwnedFd,
    /// The user's ids and ranges, as the namespace maps them.
    maps: ExpectedMaps,
}

impl UserNamespace {
    /// This user's namespace, recorded in the runtime directory `dir`: the recorded holder's
    /// once verified, else that of a new holder (`loader hold`) whose ids `ids` maps.
    pub fn of_current_user(
        dir: &Path,
        ids: &SubordinateIds,
        loader: &Path,
    ) -> Result<UserNamespace, HolderError> {
        let uid = nix::unistd::getuid().as_raw();
        let maps = ExpectedMaps::of_current_user(ids);
        let recorded = || Record::read(dir).and_then(|record| record.verify(uid, &maps));
        if let Ok(namespace) = recorded() {
            namespace.touch(dir);
            return Ok(namespace);
        }
        let _lock = lock(dir)?;
        // Another launch may have made one while this one waited for the lock.
        match recorded() {
            Ok(namespace) => {
                namespace.touch(dir);
                Ok(namespace)
            }
            Err(why) => {
                tracing::debug!(dir = %dir.display(), "making a holder of this user's namespace: {why}");
                create(dir, ids, loader, uid, &maps)
            }
        }
    }

    /// Marks the holder as used (its record's mtime), which keeps it from ending idle.
    fn touch(&self, dir: &Path) {
        let _ = File::open(dir.join(RECORD))
            .and_then(|record| record.set_modified(std::time::SystemTime::now()));
    }

    /// The namespace's fd.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The ids in this namespace of the host uid and gid of this user or of its ranges.
    pub(crate) fn inner_ids(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        let inner = |id: u32, (own, range): (u32, IdRange)| {
            if id == own {
                Some(0)
            } else {
                range.contains(id).then(|| id - range.first + 1)
            }
        };
        Some((inner(uid, self.maps.uid)?, inner(gid, self.maps.gid)?))
    }

    /// Spawns `command` as uid and gid 0 of this namespace (this user), with every capability
    /// in it and no supplementary groups: there it reaches this user's files and every app's.
    pub fn spawn(&self, mut command: Command) -> Result<Child, LaunchError> {
        sys::join_user_namespace(&mut command, self.fd.as_fd());
        command.spawn().map_err(|source| LaunchError::Join {
            what: format!(
                "running {} in your user namespace",
                command.get_program().to_string_lossy()
            ),
            source,
        })
    }

    /// Makes this process uid and gid 0 of this namespace, as [`UserNamespace::spawn`] makes a
    /// command. The kernel allows it only to a single-threaded process (EINVAL otherwise), and
    /// there is no way back: for the end of a process's life (`elastos run`'s last sync, once
    /// the app has exited).
    pub fn enter(&self) -> io::Result<()> {
        sys::enter_user_namespace(self.fd.as_fd())
    }
}

/// Holds the lock of `dir`'s holder record until dropped (flock; released when the fd closes).
fn lock(dir: &Path) -> Result<File, HolderError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HolderError::Record { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed(dir))?;
    let path = dir.join(LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(failed(&path))?;
    file.lock().map_err(failed(&path))?;
    Ok(file)
}

/// Starts a holder, maps its namespace and records it in `dir` (the caller holds the lock).
fn create(
    dir: &Path,
    ids: &SubordinateIds,
    loader: &Path,
    uid: u32,
    maps: &ExpectedMaps,
) -> Result<UserNamespace, HolderError> {
    let new = dir.join(NEW_RECORD);
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HolderError::Record { path, source }
    };
    // A holder still holding an older new record ends once it is unlinked.
    match std::fs::remove_file(&new) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(&new)(e)),
    }
    let mut record = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&new)
        .map_err(failed(&new))?;
    let pid = (|| {
        let mut command = Command::new(loader);
        command
            .arg("hold")
            .stdin(record.try_clone()?)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        sys::unshare_user_namespace(&mut command);
        let mut child = command.spawn()?;
        let mut told = String::new();
        // EOF once the holder told its pid and the process it forked from exited.
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_string(&mut told)?;
        let status = child.wait()?;
        match told.trim().parse::<i32>() {
            Ok(pid) if status.success() && pid > 0 => Ok(pid),
            _ => Err(io::Error::other(format!("{status}, said {told:?}"))),
        }
    })()
    .map_err(|source| HolderError::Start {
        loader: loader.to_path_buf(),
        source,
    })?;
    let kill = || {
        if let Ok(process) = sys::pidfd_open(pid) {
            let _ = sys::pidfd_send_signal(process.as_fd(), libc::SIGKILL);
        }
        let _ = std::fs::remove_file(&new);
    };
    let made = (|| {
        ids.write_holder_maps(pid)
            .map_err(|e| HolderError::Maps(Box::new(e)))?;
        let recorded =
            Record::of_process(pid).map_err(|why| HolderError::NotUsable { pid, why })?;
        let namespace = recorded
            .verify(uid, maps)
            .map_err(|why| HolderError::NotUsable { pid, why })?;
        record
            .write_all(recorded.text().as_bytes())
            .map_err(failed(&new))?;
        std::fs::rename(&new, dir.join(RECORD)).map_err(failed(&dir.join(RECORD)))?;
        Ok(namespace)
    })();
    if made.is_err() {
        kill();
    }
    made
}

/// What `elastos info` says of the holder recorded in `dir`.
#[derive(Debug, Clone, Serialize)]
pub struct HolderStatus {
    /// The record's path.
    pub record: PathBuf,
    /// The holder, when the record names one that passes verification.
    pub running: Option<Record>,
    /// Why none is used, otherwise (the next launch makes one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
}

/// The state of the holder recorded in `dir` for this user (`ids`), without making one.
pub fn status(dir: &Path, ids: &SubordinateIds) -> HolderStatus {
    let uid = nix::unistd::getuid().as_raw();
    let maps = ExpectedMaps::of_current_user(ids);
    let checked = Record::read(dir).and_then(|record| record.verify(uid, &maps).map(|_| record));
    HolderStatus {
        record: dir.join(RECORD),
        running: checked.as_ref().ok().copied(),
        stale: checked.err().map(|why| why.to_string()),
    }
}

/// Stops the holder recorded in `dir`, if it passes verification (a process the record names
/// that does not is never signalled), and removes the record. The stopped holder's pid.
/// Jails running in its namespace keep it, and run on.
pub fn stop(dir: &Path, ids: &SubordinateIds) -> Result<Option<i32>, HolderError> {
    let _lock = lock(dir)?;
    let uid = nix::unistd::getuid().as_raw();
    let maps = ExpectedMaps::of_current_user(ids);
    let record = match Record::read(dir) {
        Ok(record) => record,
        Err(_) => return Ok(None),
    };
    let verified = record.verify(uid, &maps).is_ok();
    match std::fs::remove_file(dir.join(RECORD)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(HolderError::Record {
                path: dir.join(RECORD),
                source,
            })
        }
    }
    if !verified {
        return Ok(None);
    }
    let pid = record.pid;
    let stop = |source| HolderError::Stop { pid, source };
    let process = sys::pidfd_open(pid).map_err(stop)?;
    // The same process as verified: its start time is checked again through the pidfd's pid.
    if start_time(pid) != Some(record.started) {
        return Ok(None);
    }
    sys::pidfd_send_signal(process.as_fd(), libc::SIGTERM).map_err(stop)?;
    Ok(Some(pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_record_reads_back_and_anything_else_is_malformed() {
        let record = Record {
            pid: 42,
            started: 7,
            namespace: (3, 4026531837),
        };
        assert_eq!(Record::parse(&record.text()), Some(record));
        for text in ["", "42 7 3", "-1 7 3 4", "x 7 3 4", "0 7 3 4"] {
            assert_eq!(Record::parse(text), None, "{text:?}");
        }
        assert!(start_time(std::process::id() as i32).is_some());
    }

    /// A `sleep` in a new user namespace, made as `uid` (the test runs as root), killed when
    /// dropped.
    struct Sleeper(Child);

    impl Sleeper {
        fn start(uid: u32) -> Sleeper {
            let mut command = Command::new("sleep");
            // The uid changes before the namespace is made (pre_exec runs after it).
            command.arg("60").uid(uid);
            sys::unshare_user_namespace(&mut command);
            Sleeper(command.spawn().expect("start sleep in a user namespace"))
        }

        fn pid(&self) -> i32 {
            self.0.id() as i32
        }

        fn map(&self, uid_map: &str, gid_map: &str) {
            for (name, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
                std::fs::write(format!("/proc/{}/{name}", self.pid()), map)
                    .unwrap_or_else(|e| panic!("writing {name}: {e}"));
            }
        }

        fn record(&self) -> Record {
            // The child may not have unshared yet when spawn returned: it has once exec'd.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::fs::read_to_string(format!("/proc/{}/comm", self.pid()))
                .is_ok_and(|comm| comm.trim() != "sleep")
            {
                assert!(std::time::Instant::now() < deadline, "sleep never ran");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Record::of_process(self.pid()).expect("a live process")
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    const RANGE: IdRange = IdRange {
        first: 300_000,
        count: 1000,
    };

    fn expected() -> ExpectedMaps {
        ExpectedMaps {
            uid: (0, RANGE),
            gid: (0, RANGE),
        }
    }

    fn verify(record: &Record) -> Result<(), Stale> {
        record.verify(0, &expected()).map(drop)
    }

    // These make user namespaces and write their maps as root, which `cargo test` runs as.
    #[test]
    fn only_the_recorded_process_in_a_child_namespace_of_ours_with_our_maps_is_joined() {
        if !nix::unistd::getuid().is_root() {
            eprintln!("skipped: needs root to map ids freely");
            return;
        }
        let holder = Sleeper::start(0);
        holder.map("0 0 1\n1 300000 1000\n", "0 0 1\n1 300000 1000\n");
        let record = holder.record();
        let joined = record.verify(0, &expected()).expect("the holder verifies");
        assert_eq!(joined.inner_ids(300_009, 300_009), Some((10, 10)));
        assert_eq!(joined.inner_ids(1, 1), None, "an id of no range");

        let reused = Record {
            started: record.started + 1,
            ..record
        };
        assert_eq!(
            verify(&reused),
            Err(Stale::OtherProcess { pid: record.pid })
        );
        let other_namespace = Record {
            namespace: (record.namespace.0, record.namespace.1 + 1),
            ..record
        };
        assert_eq!(
            verify(&other_namespace),
            Err(Stale::OtherNamespace { pid: record.pid })
        );
        assert_eq!(
            record
                .verify(
                    0,
                    &ExpectedMaps {
                        uid: (
                            0,
                            IdRange {
                                first: 300_000,
                                count: 999
                            }
                        ),
                        gid: (0, RANGE),
                    }
                )
                .map(drop),
            Err(Stale::WrongMaps {
                found: "uid 0 0 1 1 300000 1000; gid 0 0 1 1 300000 1000".into(),
                expected: "uid 0 0 1 1 300000 999; gid 0 0 1 1 300000 1000".into(),
            })
        );
        // Killed but not yet reaped (a zombie keeps its namespace): gone all the same.
        let mut holder = holder;
        holder.0.kill().unwrap();
        let zombie = || {
            std::fs::read_to_string(format!("/proc/{}/stat", record.pid)).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, s)| s.starts_with('Z'))
            })
        };
        while !zombie() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(verify(&record), Err(Stale::Gone { pid: record.pid }));
        drop(holder);
        assert!(matches!(
            verify(&record),
            Err(Stale::Gone { .. } | Stale::OtherProcess { .. })
        ));
    }

    #[test]
    fn a_namespace_of_another_user_or_not_our_child_or_mapping_less_is_never_joined() {
        if !nix::unistd::getuid().is_root() {
            eprintln!("skipped: needs root to make another user's namespace");
            return;
        }
        let foreign = Sleeper::start(65534);
        assert_eq!(
            verify(&foreign.record()),
            Err(Stale::Foreign {
                owner: 65534,
                expected: 0
            })
        );
        // Only its owner's own id mapped: what any user can make without newuidmap.
        let own_only = Sleeper::start(0);
        own_only.map("0 0 1\n", "0 0 1\n");
        assert!(matches!(
            verify(&own_only.record()),
            Err(Stale::WrongMaps { .. })
        ));
        // This process: its namespace is its own, not a child of it.
        let ours = Record::of_process(std::process::id() as i32).unwrap();
        assert_eq!(verify(&ours), Err(Stale::NotAChild));
    }

    #[test]
    fn every_error_formats() {
        let errors: Vec<Box<dyn std::error::Error>> = vec![
            Box::new(HolderError::Record {
                path: "/run/user/1000/elastos/userns".into(),
                source: io::Error::from_raw_os_error(libc::EACCES),
            }),
            Box::new(HolderError::NotUsable {
                pid: 7,
                why: Stale::NotAChild,
            }),
            Box::new(HolderError::Stop {
                pid: 7,
                source: io::Error::from_raw_os_error(libc::ESRCH),
            }),
            Box::new(Stale::NoRecord),
            Box::new(Stale::Malformed),
            Box::new(Stale::Gone { pid: 7 }),
            Box::new(Stale::OtherProcess { pid: 7 }),
            Box::new(Stale::OtherNamespace { pid: 7 }),
            Box::new(Stale::Foreign {
                owner: 1,
                expected: 2,
            }),
        ];
        for error in errors {
            let text = error.to_string();
            assert!(!text.is_empty());
            if let Some(source) = error.source() {
                assert!(!text.contains(&source.to_string()), "{text}");
            }
        }
    }
}
