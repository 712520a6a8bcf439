//! Subordinate ids (`/etc/subuid`, `/etc/subgid`): the host uid and gid an unprivileged user's
//! app runs as, the way rootless podman maps a container.
//!
//! Why: the kernel charges pipe pages (`fs.pipe-user-pages-soft`), RLIMIT_NPROC's process count,
//! mqueue bytes and pending signals to the host uid a process runs as, not to its user namespace.
//! Mapped to its launcher's own uid, an app holding 235 pipes of 1 MiB made every new pipe of
//! that user 8 KiB. Mapped to an id of the user's subordinate range, it uses up only its own.
//!
//! One id per app, stable: its home must stay its own from run to run, and two apps of one
//! user must not share counters. The home's owner records the choice ([`SubordinateIds::ids_for`]),
//! so nothing else is stored. The user's whole range is mapped once, in the namespace of its
//! holder ([`crate::holder`]), by the setuid `newuidmap`/`newgidmap` (Debian package `uidmap`),
//! which check the range against the same files; without a range or the tools, the launch
//! falls back to the launcher's own uid and says so (`elastos info`).

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::Serialize;
use uuid::Uuid;

use crate::error::LaunchError;
use crate::holder::UserNamespace;

/// Where a user's subordinate uids are listed.
pub const SUBUID_FILE: &str = "/etc/subuid";
/// Where a user's subordinate gids are listed.
pub const SUBGID_FILE: &str = "/etc/subgid";

/// Where the id-map helpers are looked for (never `$PATH`: they are setuid programs of the
/// system, and nothing of the caller's environment should choose them).
const HELPER_DIRS: [&str; 4] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

/// `chown`, which moves a home's files to the app's ids (`migrate_home`).
const CHOWN: &str = "/bin/chown";

/// A range of ids: `first` and the `count` ids after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdRange {
    /// The first id.
    pub first: u32,
    /// How many.
    pub count: u32,
}

impl IdRange {
    pub(crate) fn contains(&self, id: u32) -> bool {
        id >= self.first && id - self.first < self.count
    }
}

/// The first range of the user `name`, whose uid is `id`, in a subid file's `text`
/// (`owner:first:count` lines, the owner a user name or a uid in decimal, as `newuidmap` reads
/// them); malformed lines are skipped.
pub fn range_in(text: &str, name: &str, id: u32) -> Option<IdRange> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (owner, first, count) = (fields.next()?, fields.next()?, fields.next()?);
        if fields.next().is_some() || (owner != name && owner.parse::<u32>().ok() != Some(id)) {
            return None;
        }
        let (first, count) = (first.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
        (count > 0 && first.checked_add(count - 1).is_some()).then_some(IdRange { first, count })
    })
}

/// Why an unprivileged launch maps the app to its launcher's own uid.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NoSubordinateIds {
    /// The user has no range in one of the files (or the file is missing or unreadable).
    #[error("user {user} has no subordinate {kind} range in {file}")]
    NoRange {
        /// The user's name (or uid, without a name).
        user: String,
        /// `uid` or `gid`.
        kind: &'static str,
        /// The file.
        file: &'static str,
    },
    /// `newuidmap` or `newgidmap` is not installed.
    #[error("{tool} is not installed (Debian package uidmap)")]
    NoHelper {
        /// The missing program.
        tool: &'static str,
    },
}

/// The current user's subordinate ranges and the helpers that map them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubordinateIds {
    /// From [`SUBUID_FILE`].
    pub uids: IdRange,
    /// From [`SUBGID_FILE`].
    pub gids: IdRange,
    newuidmap: PathBuf,
    newgidmap: PathBuf,
}

impl SubordinateIds {
    /// The calling user's ranges, when it has both and the helpers are installed.
    pub fn of_current_user() -> Result<SubordinateIds, NoSubordinateIds> {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |user| user.name);
        let range = |file: &'static str, kind: &'static str| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|text| range_in(&text, &user, uid.as_raw()))
                .ok_or_else(|| NoSubordinateIds::NoRange {
                    user: user.clone(),
                    kind,
                    file,
                })
        };
        let (uids, gids) = (range(SUBUID_FILE, "uid")?, range(SUBGID_FILE, "gid")?);
        let helper = |tool: &'static str| {
            HELPER_DIRS
                .iter()
                .map(|dir| Path::new(dir).join(tool))
                .find(|path| path.is_file())
                .ok_or(NoSubordinateIds::NoHelper { tool })
        };
        Ok(SubordinateIds {
            uids,
            gids,
            newuidmap: helper("newuidmap")?,
            newgidmap: helper("newgidmap")?,
        })
    }

    /// The host uid and gid of app `app_id`, whose home is `home` (`homes/<publisher>/<app>`):
    /// the home's owner when that is one of the range (the choice of an earlier run); otherwise
    /// an id picked from the app's id (FNV-1a), moved on past any id that owns another app's home
    /// beside it, so that no two apps of this user share one. The gid has the uid's offset in
    /// the gid range (wrapped when that range is smaller).
    pub fn ids_for(&self, app_id: &Uuid, home: &Path) -> (u32, u32) {
        let offset = match std::fs::symlink_metadata(home) {
            Ok(meta) if self.uids.contains(meta.uid()) => meta.uid() - self.uids.first,
            _ => {
                let taken = self.offsets_taken_beside(home);
                let start = crate::identity::uid_offset(app_id.as_bytes()) % self.uids.count;
                (0..self.uids.count)
                    .map(|step| {
                        ((u64::from(start) + u64::from(step)) % u64::from(self.uids.count)) as u32
                    })
                    .find(|offset| !taken.contains(offset))
                    .unwrap_or(start)
            }
        };
        (
            self.uids.first + offset,
            self.gids.first + offset % self.gids.count,
        )
    }

    /// The offsets in the uid range that own the other homes of the homes tree `home` is in.
    fn offsets_taken_beside(&self, home: &Path) -> BTreeSet<u32> {
        let Some(homes) = home.parent().and_then(Path::parent) else {
            return BTreeSet::new();
        };
        let children = |dir: &Path| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
                .collect::<Vec<_>>()
        };
        children(homes)
            .iter()
            .flat_map(|publisher| children(publisher))
            .filter(|other| other != home)
            .filter_map(|other| std::fs::symlink_metadata(other).ok())
            .map(|meta| meta.uid())
            .filter(|uid| self.uids.contains(*uid))
            .map(|uid| uid - self.uids.first)
            .collect()
    }

    /// Writes the id maps of the user namespace of process `pid` (a new holder's, see
    /// [`crate::holder`]): this user is uid/gid 0 there and all of its subordinate ids are
    /// mapped from 1 up, as `podman unshare` does. Both helpers run at once (each is an exec of
    /// a setuid program).
    pub(crate) fn write_holder_maps(&self, pid: i32) -> Result<(), LaunchError> {
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        let start = |tool: &Path, own: u32, range: IdRange| {
            let map = [0, own, 1, 1, range.first, range.count].map(|n| n.to_string());
            Command::new(tool)
                .arg(pid.to_string())
                .args(map)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map(|child| (tool.to_path_buf(), child))
                .map_err(|source| LaunchError::IdMapHelper {
                    tool: tool.to_path_buf(),
                    message: source.to_string(),
                })
        };
        let mut writers = MapWriters(Vec::with_capacity(2));
        writers
            .0
            .push(start(&self.newuidmap, uid.as_raw(), self.uids)?);
        writers
            .0
            .push(start(&self.newgidmap, gid.as_raw(), self.gids)?);
        writers.wait()
    }
}

/// Gives the files of `home` owned by this user (a home an older elastos made, run as the
/// user's own uid, or one just created) to the app's `uid` and `gid`, through the user's
/// `namespace`, where this user is 0 and the app's ids are mapped (the user cannot chown to
/// them otherwise). `chown -R -P` never follows a symbolic link, so nothing outside the home
/// changes hands; files of any other owner are left alone. `chown -R` changes a directory
/// after its contents, so the home itself is the last to change in each pass: an
/// interrupted move leaves it with the user's uid or gid, and the next launch moves again.
pub(crate) fn migrate_home(
    home: &Path,
    uid: u32,
    gid: u32,
    namespace: &UserNamespace,
) -> Result<(), LaunchError> {
    let (inner_uid, inner_gid) =
        namespace
            .inner_ids(uid, gid)
            .ok_or_else(|| LaunchError::Home {
                path: home.to_path_buf(),
                source: io::Error::other(format!(
                    "{uid}:{gid} is not mapped in the user's namespace"
                )),
            })?;
    for (from, to) in [
        ("--from=0".to_owned(), inner_uid.to_string()),
        ("--from=:0".to_owned(), format!(":{inner_gid}")),
    ] {
        let mut chown = Command::new(CHOWN);
        chown.args(["-R", "-P", "-h", &from, &to]).arg(home);
        crate::sys::join_user_namespace(&mut chown, namespace.as_fd());
        run(&mut chown).map_err(|source| LaunchError::Home {
            path: home.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Runs `command` to its end; its stderr is the error when it fails.
fn run(command: &mut Command) -> io::Result<()> {
    let out = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{} {}: {}",
        command.get_program().to_string_lossy(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// `newuidmap` and `newgidmap`, running; reaped when dropped.
#[derive(Debug)]
struct MapWriters(Vec<(PathBuf, Child)>);

impl Drop for MapWriters {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.wait();
        }
    }
}

impl MapWriters {
    /// Waits for both; the first failure, with what the helper said.
    fn wait(mut self) -> Result<(), LaunchError> {
        let mut first_failure = None;
        for (tool, child) in std::mem::take(&mut self.0) {
            let failure = match child.wait_with_output() {
                Ok(out) if out.status.success() => continue,
                Ok(out) => format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => e.to_string(),
            };
            first_failure.get_or_insert(LaunchError::IdMapHelper {
                tool,
                message: failure,
            });
        }
        first_failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_found_by_name_or_uid_and_malformed_lines_are_skipped() {
        let text = "# comment\nalice:100000:65536\nbob:x:1\n1001:200000:10\ncarol:5:0\n";
        assert_eq!(
            range_in(text, "alice", 1000),
            Some(IdRange {
                first: 100000,
                count: 65536
            })
        );
        assert_eq!(range_in(text, "bob", 1001).map(|r| r.first), Some(200000));
        assert_eq!(
            range_in(text, "carol", 1002),
            None,
            "an empty range is none"
        );
        assert_eq!(range_in("dave:4294967295:2\n", "dave", 7), None, "past u32");
        assert_eq!(range_in("", "alice", 1000), None);
    }

    fn ids(first: u32, count: u32) -> SubordinateIds {
        SubordinateIds {
            uids: IdRange { first, count },
            gids: IdRange { first, count: 3 },
            newuidmap: "/nonexistent".into(),
            newgidmap: "/nonexistent".into(),
        }
    }

    #[test]
    fn a_new_home_gets_an_id_no_other_home_beside_it_owns() {
        let dir = tempfile::tempdir().unwrap();
        let own = nix::unistd::getuid().as_raw();
        let app = Uuid::from_u128(7);
        let home = dir.path().join("publisher").join(app.to_string());
        // A range of two ids, the first of which owns another home beside this one.
        std::fs::create_dir_all(dir.path().join("publisher").join("other")).unwrap();
        let range = ids(own, 2);
        let (uid, gid) = range.ids_for(&app, &home);
        assert_eq!(uid, own + 1, "the id of the other home is skipped");
        assert_eq!(gid, own + 1);
        std::fs::create_dir_all(&home).unwrap();
        assert_eq!(
            range.ids_for(&app, &home).0,
            own,
            "an existing home keeps its owner's id"
        );
    }
}
