//! The local home, reached only through directory file descriptors: every path component is
//! opened with `O_NOFOLLOW`, so neither a symlink in the home nor one swapped in while the sync
//! runs can make it read or write outside the home (the broker runs as root; the app owns the
//! home and may race it).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use crate::tree::{as_path, RelPath};
use crate::SyncError;

/// Names of the sync's own temporary files: never synced, removed when found.
pub(crate) const TEMP_PREFIX: &str = ".cloudsync-tmp.";
/// Permission bits kept: no set-uid or set-gid bit ever comes back from the store.
pub(crate) const MODE_MASK: u32 = 0o1777;

/// What a path looks like on disk: enough to tell whether it changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LocalStat {
    pub kind: LocalKind,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum LocalKind {
    File,
    Dir,
    Symlink,
    /// FIFOs, sockets, devices: never synced.
    Other,
}

impl LocalStat {
    fn from_stat(st: &rustix::fs::Stat) -> Self {
        let kind = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile => LocalKind::File,
            rustix::fs::FileType::Directory => LocalKind::Dir,
            rustix::fs::FileType::Symlink => LocalKind::Symlink,
            _ => LocalKind::Other,
        };
        LocalStat {
            kind,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64,
            mode: st.st_mode & MODE_MASK,
        }
    }

    /// The same file, unmodified (for directories: still a directory).
    pub(crate) fn unchanged(&self, now: &LocalStat) -> bool {
        match self.kind {
            LocalKind::Dir => now.kind == LocalKind::Dir,
            _ => self == now,
        }
    }
}

/// The home directory, held open.
pub(crate) struct HomeDir {
    root: OwnedFd,
    path: PathBuf,
    owner: Option<(u32, u32)>,
}

fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[][..], rel),
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl HomeDir {
    /// Opens `dir`; creates it (and its parents, mode 0700 for the home itself) when `create`.
    /// `None`: it does not exist and `create` is false.
    pub(crate) fn open(
        dir: &Path,
        create: bool,
        owner: Option<(u32, u32)>,
    ) -> Result<Option<HomeDir>, SyncError> {
        let open = || rustix::fs::open(dir, DIR_FLAGS, Mode::empty());
        let root = match open() {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) if create => {
                if let Some(parent) = dir.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| SyncError::io("create", parent, e))?;
                }
                match rustix::fs::mkdir(dir, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(SyncError::io("create home", dir, e.into())),
                }
                let fd = open().map_err(|e| SyncError::io("open home", dir, e.into()))?;
                if let Some((uid, gid)) = owner {
                    chown(&fd, uid, gid).map_err(|e| SyncError::io("chown home", dir, e))?;
                }
                fd
            }
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(SyncError::io("open home", dir, e.into())),
        };
        Ok(Some(HomeDir {
            root,
            path: dir.to_owned(),
            owner,
        }))
    }

    /// Which directory this is: inode and birth time (when the file system records one). A home
    /// that was deleted and made again has another identity, so an empty home tells "the cache
    /// was lost" (restore it) from "the user deleted every file" (sync the deletions).
    pub(crate) fn identity(&self) -> Result<(u64, Option<i64>), SyncError> {
        statx_identity(&self.root, "", AtFlags::EMPTY_PATH)
            .map_err(|e| SyncError::io("stat home", &self.path, e.into()))
    }

    pub(crate) fn full(&self, rel: &[u8]) -> PathBuf {
        self.path.join(as_path(rel))
    }

    fn err(&self, op: &'static str, rel: &[u8], e: impl Into<io::Error>) -> SyncError {
        SyncError::io(op, self.full(rel), e.into())
    }

    /// Opens directory `rel` one component at a time, never through a symlink; creates missing
    /// directories (mode 0755, the sync's owner) when `create`.
    fn dir(&self, rel: &[u8], create: bool) -> io::Result<OwnedFd> {
        let mut fd = self.root.try_clone()?;
        if rel.is_empty() {
            return Ok(fd);
        }
        for name in rel.split(|&b| b == b'/') {
            let name = as_path(name);
            let next = match rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty()) {
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    let next = rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty())?;
                    if let Some((uid, gid)) = self.owner {
                        chown(&next, uid, gid)?;
                    }
                    next
                }
                other => other?,
            };
            fd = next;
        }
        Ok(fd)
    }

    /// What `rel` is now, without following a final symlink; `None` when absent.
    pub(crate) fn stat(&self, rel: &[u8]) -> Result<Option<LocalStat>, SyncError> {
        let (dir, name) = split(rel);
        let dirfd = match self.dir(dir, false) {
            Ok(fd) => fd,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(self.err("open", dir, e)),
        };
        match rustix::fs::statat(&dirfd, as_path(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(LocalStat::from_stat(&st))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(self.err("stat", rel, e)),
        }
    }

    /// Opens regular file `rel` for reading (never a symlink, never a FIFO: `O_NONBLOCK` and a
    /// type check after opening).
    pub(crate) fn open_file(&self, rel: &[u8]) -> Result<(File, LocalStat), SyncError> {
        let (dir, name) = split(rel);
        let dirfd = self.dir(dir, false).map_err(|e| self.err("open", dir, e))?;
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(&dirfd, as_path(name), flags, Mode::empty())
            .map_err(|e| self.err("open", rel, e))?;
        let st =
            LocalStat::from_stat(&rustix::fs::fstat(&fd).map_err(|e| self.err("stat", rel, e))?);
        if st.kind != LocalKind::File {
            return Err(self.err("open", rel, io::Error::other("not a regular file any more")));
        }
        Ok((File::from(fd), st))
    }

    /// Opens regular file `rel` for writing in place (never a symlink): filling a placeholder.
    pub(crate) fn open_file_for_fill(&self, rel: &[u8]) -> Result<File, SyncError> {
        let (dir, name) = split(rel);
        let dirfd = self.dir(dir, false).map_err(|e| self.err("open", dir, e))?;
        let flags =
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(&dirfd, as_path(name), flags, Mode::empty())
            .map_err(|e| self.err("open", rel, e))?;
        if fstat(&fd).map_err(|e| self.err("stat", rel, e))?.kind != LocalKind::File {
            return Err(self.err("open", rel, io::Error::other("not a regular file any more")));
        }
        Ok(File::from(fd))
    }

    pub(crate) fn read_link(&self, rel: &[u8]) -> Result<Vec<u8>, SyncError> {
        let (dir, name) = split(rel);
        let dirfd = self.dir(dir, false).map_err(|e| self.err("open", dir, e))?;
        let target = rustix::fs::readlinkat(&dirfd, as_path(name), Vec::new())
            .map_err(|e| self.err("readlink", rel, e))?;
        Ok(target.into_bytes())
    }

    /// Whether `rel` still looks as `expect` says (`None`: absent).
    fn still(&self, rel: &[u8], expect: Option<&LocalStat>) -> Result<bool, SyncError> {
        let now = self.stat(rel)?;
        Ok(match (expect, now) {
            (None, None) => true,
            (Some(e), Some(n)) => e.unchanged(&n),
            _ => false,
        })
    }

    /// Writes regular file `rel` through a temporary file renamed into place, with `mode`,
    /// `mtime_ns` and the sync's owner. Returns `None` (and changes nothing) when the path no
    /// longer looks as `expect` says: the app changed it meanwhile, the next sync decides.
    pub(crate) fn write_file(
        &self,
        rel: &[u8],
        mode: u32,
        mtime_ns: i64,
        expect: Option<&LocalStat>,
        fill: impl FnOnce(&mut File) -> Result<(), SyncError>,
    ) -> Result<Option<LocalStat>, SyncError> {
        let (dir, _) = split(rel);
        let dirfd = self
            .dir(dir, true)
            .map_err(|e| self.err("create directory", dir, e))?;
        let tmp = temp_name()?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(
            &dirfd,
            as_path(tmp.as_bytes()),
            flags,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.err("create", rel, e))?;
        let mut file = File::from(fd);
        let result = (|| {
            fill(&mut file)?;
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode & MODE_MASK))
                .map_err(|e| self.err("chmod", rel, e))?;
            if let Some((uid, gid)) = self.owner {
                chown(&file, uid, gid).map_err(|e| self.err("chown", rel, e))?;
            }
            set_mtime(&file, mtime_ns).map_err(|e| self.err("set mtime", rel, e))?;
            if !self.still(rel, expect)? {
                return Ok(None);
            }
            self.replace(&dirfd, &tmp, rel, expect)?;
            Ok(Some(LocalStat::from_stat(
                &rustix::fs::fstat(&file).map_err(|e| self.err("stat", rel, e))?,
            )))
        })();
        if !matches!(result, Ok(Some(_))) {
            let _ = rustix::fs::unlinkat(&dirfd, as_path(tmp.as_bytes()), AtFlags::empty());
        }
        result
    }

    /// Renames `tmp` (in `dirfd`) onto `rel`; an empty directory in the way is removed first
    /// (a non-empty one means the plan was wrong, and the rename fails).
    fn replace(
        &self,
        dirfd: &OwnedFd,
        tmp: &str,
        rel: &[u8],
        expect: Option<&LocalStat>,
    ) -> Result<(), SyncError> {
        let (_, name) = split(rel);
        if expect.is_some_and(|e| e.kind == LocalKind::Dir) {
            rustix::fs::unlinkat(dirfd, as_path(name), AtFlags::REMOVEDIR)
                .map_err(|e| self.err("remove directory", rel, e))?;
        }
        rustix::fs::renameat(dirfd, as_path(tmp.as_bytes()), dirfd, as_path(name))
            .map_err(|e| self.err("rename into place", rel, e))
    }

    /// Creates symlink `rel` -> `target` (never followed), replacing what `expect` describes.
    pub(crate) fn write_symlink(
        &self,
        rel: &[u8],
        target: &[u8],
        expect: Option<&LocalStat>,
    ) -> Result<Option<LocalStat>, SyncError> {
        let (dir, _) = split(rel);
        let dirfd = self
            .dir(dir, true)
            .map_err(|e| self.err("create directory", dir, e))?;
        let tmp = temp_name()?;
        rustix::fs::symlinkat(as_path(target), &dirfd, as_path(tmp.as_bytes()))
            .map_err(|e| self.err("symlink", rel, e))?;
        if let Some((uid, gid)) = self.owner {
            rustix::fs::chownat(
                &dirfd,
                as_path(tmp.as_bytes()),
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.err("chown", rel, e))?;
        }
        let result = (|| {
            if !self.still(rel, expect)? {
                return Ok(None);
            }
            self.replace(&dirfd, &tmp, rel, expect)?;
            self.stat(rel)
        })();
        if !matches!(result, Ok(Some(_))) {
            let _ = rustix::fs::unlinkat(&dirfd, as_path(tmp.as_bytes()), AtFlags::empty());
        }
        result
    }

    /// Changes the permission bits of regular file `rel` if it still looks as `expect` says.
    pub(crate) fn set_mode(
        &self,
        rel: &[u8],
        mode: u32,
        expect: Option<&LocalStat>,
    ) -> Result<Option<LocalStat>, SyncError> {
        let (file, now) = self.open_file(rel)?;
        if !expect.is_some_and(|e| e.unchanged(&now)) {
            return Ok(None);
        }
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode & MODE_MASK))
            .map_err(|e| self.err("chmod", rel, e))?;
        Ok(Some(fstat(&file).map_err(|e| self.err("stat", rel, e))?))
    }

    /// Makes `rel` a directory with `mode` (creating it or changing its mode). A file or link in
    /// the way is replaced only if it still looks as `expect` says.
    pub(crate) fn make_dir(
        &self,
        rel: &[u8],
        mode: u32,
        expect: Option<&LocalStat>,
    ) -> Result<Option<LocalStat>, SyncError> {
        let now = self.stat(rel)?;
        if let Some(now) = now.filter(|n| n.kind != LocalKind::Dir) {
            if !expect.is_some_and(|e| e.unchanged(&now)) || !self.remove(rel, Some(&now))? {
                return Ok(None);
            }
        }
        let fd = self
            .dir(rel, true)
            .map_err(|e| self.err("create directory", rel, e))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & MODE_MASK))
            .map_err(|e| self.err("chmod", rel, e))?;
        Ok(Some(LocalStat::from_stat(
            &rustix::fs::fstat(&fd).map_err(|e| self.err("stat", rel, e))?,
        )))
    }

    /// Removes `rel` if it still looks as `expect` says (a directory only when empty). `false`:
    /// it changed (or a directory is not empty), nothing removed.
    pub(crate) fn remove(&self, rel: &[u8], expect: Option<&LocalStat>) -> Result<bool, SyncError> {
        let Some(expect) = expect else {
            return Ok(true);
        };
        if !self.still(rel, Some(expect))? {
            return Ok(false);
        }
        let (dir, name) = split(rel);
        let dirfd = self.dir(dir, false).map_err(|e| self.err("open", dir, e))?;
        let flags = if expect.kind == LocalKind::Dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(&dirfd, as_path(name), flags) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(true),
            Err(rustix::io::Errno::NOTEMPTY) | Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(self.err("remove", rel, e)),
        }
    }

    /// Renames `from` to `to` (same home), if `from` still looks as `expect` says and `to` is
    /// free.
    pub(crate) fn rename(
        &self,
        from: &[u8],
        to: &[u8],
        expect: &LocalStat,
    ) -> Result<bool, SyncError> {
        if !self.still(from, Some(expect))? || self.stat(to)?.is_some() {
            return Ok(false);
        }
        let (from_dir, from_name) = split(from);
        let (to_dir, to_name) = split(to);
        let from_fd = self
            .dir(from_dir, false)
            .map_err(|e| self.err("open", from_dir, e))?;
        let to_fd = self
            .dir(to_dir, true)
            .map_err(|e| self.err("create directory", to_dir, e))?;
        rustix::fs::renameat(&from_fd, as_path(from_name), &to_fd, as_path(to_name))
            .map_err(|e| self.err("rename", from, e))?;
        Ok(true)
    }

    /// Every path in the home (sorted, directories before their contents), without following
    /// symlinks. Leftover temporary files of an interrupted sync are removed.
    pub(crate) fn scan(&self) -> Result<Vec<(RelPath, LocalStat)>, SyncError> {
        let mut out = Vec::new();
        let mut stack: Vec<RelPath> = vec![Vec::new()];
        while let Some(dir) = stack.pop() {
            let fd = match self.dir(&dir, false) {
                Ok(fd) => fd,
                // Replaced by a file or removed while we walked: the next sync sees it.
                Err(e) if !dir.is_empty() => {
                    tracing::debug!(dir = %self.full(&dir).display(), error = %e, "directory vanished during scan");
                    continue;
                }
                Err(e) => return Err(self.err("open", &dir, e)),
            };
            let mut names = Vec::new();
            let reader =
                rustix::fs::Dir::read_from(&fd).map_err(|e| self.err("read directory", &dir, e))?;
            for entry in reader {
                let entry = entry.map_err(|e| self.err("read directory", &dir, e))?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                names.push(name.to_vec());
            }
            for name in names {
                if name.starts_with(TEMP_PREFIX.as_bytes()) {
                    let _ = rustix::fs::unlinkat(&fd, as_path(&name), AtFlags::empty());
                    continue;
                }
                let st = match rustix::fs::statat(&fd, as_path(&name), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => LocalStat::from_stat(&st),
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(self.err("stat", &name, e)),
                };
                let rel = if dir.is_empty() {
                    name
                } else {
                    [&dir[..], b"/", &name[..]].concat()
                };
                match st.kind {
                    LocalKind::Other => {
                        tracing::debug!(path = %self.full(&rel).display(), "not synced: not a file, directory or symlink");
                        continue;
                    }
                    LocalKind::Dir => stack.push(rel.clone()),
                    _ => {}
                }
                out.push((rel, st));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// [`HomeDir::identity`] of the directory at `dir` without opening it (a home that belongs to an
/// app's own ids can be looked at by a user who cannot read it); None when there is none.
pub(crate) fn identity_at(dir: &Path) -> Result<Option<(u64, Option<i64>)>, SyncError> {
    match statx_identity(rustix::fs::CWD, dir, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(identity) => Ok(Some(identity)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(SyncError::io("stat home", dir, e.into())),
    }
}

fn statx_identity(
    dirfd: impl AsFd,
    path: impl rustix::path::Arg,
    flags: AtFlags,
) -> rustix::io::Result<(u64, Option<i64>)> {
    use rustix::fs::StatxFlags;
    let stx = rustix::fs::statx(dirfd, path, flags, StatxFlags::INO | StatxFlags::BTIME)?;
    let btime = (stx.stx_mask & StatxFlags::BTIME.bits() != 0)
        .then(|| stx.stx_btime.tv_sec * 1_000_000_000 + i64::from(stx.stx_btime.tv_nsec));
    Ok((stx.stx_ino, btime))
}

/// What an open file looks like now.
pub(crate) fn fstat(fd: impl AsFd) -> io::Result<LocalStat> {
    Ok(LocalStat::from_stat(&rustix::fs::fstat(fd)?))
}

/// A path component is missing or is no longer a directory.
fn gone(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::NOENT, Errno::NOTDIR, Errno::LOOP]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

fn chown(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?;
    Ok(())
}

pub(crate) fn set_mtime(fd: impl AsFd, mtime_ns: i64) -> io::Result<()> {
    let mtime = Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    // UTIME_OMIT leaves the access time alone.
    let omit = Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_OMIT,
    };
    rustix::fs::futimens(
        fd,
        &Timestamps {
            last_access: omit,
            last_modification: mtime,
        },
    )?;
    Ok(())
}

fn temp_name() -> Result<String, SyncError> {
    let mut r = [0u8; 8];
    getrandom::getrandom(&mut r)
        .map_err(|e| SyncError::io("random", PathBuf::new(), io::Error::other(e)))?;
    Ok(format!("{TEMP_PREFIX}{}", hex::encode(r)))
}
