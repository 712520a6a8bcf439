//! The logs of detached apps: what an app writes to its stdout and stderr, kept by the daemon
//! per instance in `<logs>/<instance id>/` with a size cap and rotation ([`LogWriter`]), and
//! read back by `elastos logs` ([`read_records`], [`Follower`]).
//!
//! The format is podman's `k8s-file` (one record per line: `TIME STREAM F|P CONTENT`), so that
//! a person can read the file with `less` and tools that know the format can parse it: TIME is
//! RFC 3339 in UTC with nanoseconds, STREAM `stdout` or `stderr`, `F` a full line and `P` a
//! piece of one (a line longer than [`MAX_RECORD_CONTENT`], or the app's last bytes without a
//! newline). CONTENT is the app's bytes without the newline.
//!
//! Rotation: the current file is `app.log`; when a record would take it past
//! [`LogLimits::max_file_bytes`], it becomes `app.log.1` (the older ones shift up to
//! `app.log.<max_files - 1>`, the oldest is deleted) and a new `app.log` starts. So an
//! instance's logs never take more than `max_file_bytes * max_files` bytes, except while
//! `logs -f` follows them: a [`Follower`] holds a shared lock on [`FOLLOW_LOCK`], and while
//! one does, the writer keeps up to [`FOLLOWED_EXTRA_FILES`] more rotated files, so that a
//! follower that fell behind (descheduled, or reading slower than the app writes) still
//! finds every file it has not opened yet. A follower holds each file open from the moment
//! it sees it, and goes from one file to the next by inode, not by name: a file renamed or
//! deleted under it is read to its end all the same.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The current log file of an instance.
pub const CURRENT: &str = "app.log";
/// The longest CONTENT of one record, in bytes: a longer line is split into `P` records.
pub const MAX_RECORD_CONTENT: usize = 16 * 1024;
/// The smallest [`LogLimits::max_file_bytes`] accepted: several of the longest records.
pub const MIN_FILE_BYTES: u64 = 64 * 1024;
/// The lock file of an instance's log directory that followers hold shared.
pub const FOLLOW_LOCK: &str = "follow.lock";
/// Rotated files kept beyond [`LogLimits::max_files`] while a follower holds [`FOLLOW_LOCK`]:
/// a follower loses lines only if it falls this many files behind (one stopped with Ctrl-Z
/// while the app writes on); it costs at most this many files more disk while followed.
pub const FOLLOWED_EXTRA_FILES: u32 = 64;

/// How much log an instance keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// A file is rotated before it would grow past this, in bytes.
    pub max_file_bytes: u64,
    /// Files kept, the current one included (at least 1).
    pub max_files: u32,
}

impl Default for LogLimits {
    /// 1 MiB per file, 2 files: at most 2 MiB per instance, 400 MiB for 200 apps.
    fn default() -> Self {
        LogLimits {
            max_file_bytes: 1 << 20,
            max_files: 2,
        }
    }
}

impl LogLimits {
    /// The limits, checked: at least [`MIN_FILE_BYTES`] per file and one file.
    pub fn new(max_file_bytes: u64, max_files: u32) -> Result<LogLimits, String> {
        if max_file_bytes < MIN_FILE_BYTES {
            return Err(format!(
                "a log file must be allowed at least {MIN_FILE_BYTES} bytes, found \
                 {max_file_bytes}"
            ));
        }
        if max_files == 0 {
            return Err("at least 1 log file must be kept, found 0".into());
        }
        Ok(LogLimits {
            max_file_bytes,
            max_files,
        })
    }

    /// The most bytes an instance's logs take.
    pub fn cap_bytes(&self) -> u64 {
        self.max_file_bytes
            .saturating_mul(u64::from(self.max_files))
    }
}

/// Which of the app's outputs a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Its fd 1.
    Stdout,
    /// Its fd 2.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A log could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A log file or directory failed.
    #[error("log file {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.into(),
        source,
    }
}

/// Writes one instance's log (see the module doc). Bytes of a line not yet ended wait in the
/// writer, per stream, until its newline, [`MAX_RECORD_CONTENT`] or [`LogWriter::finish`].
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    limits: LogLimits,
    file: File,
    size: u64,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (creating it and its directory, mode 0700, if missing) the log in `dir`, appending.
    pub fn open(dir: &Path, limits: LogLimits) -> Result<LogWriter, LogError> {
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_error(dir))?;
        }
        let (file, size) = open_current(dir)?;
        let lock = dir.join(FOLLOW_LOCK);
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&lock)
            .map_err(io_error(&lock))?;
        let writer = LogWriter {
            dir: dir.into(),
            limits,
            file,
            size,
            pending: [Vec::new(), Vec::new()],
        };
        // A previous daemon may have stopped while a follower kept more.
        writer.drop_extra_files()?;
        Ok(writer)
    }

    /// What the app wrote to `stream`: its complete lines become records.
    pub fn write(&mut self, stream: Stream, mut bytes: &[u8]) -> Result<(), LogError> {
        while !bytes.is_empty() {
            let room = MAX_RECORD_CONTENT - self.pending[stream as usize].len();
            match bytes[..bytes.len().min(room)]
                .iter()
                .position(|b| *b == b'\n')
            {
                Some(newline) => {
                    let mut line = std::mem::take(&mut self.pending[stream as usize]);
                    line.extend_from_slice(&bytes[..newline]);
                    self.record(stream, false, &line)?;
                    bytes = &bytes[newline + 1..];
                }
                None if bytes.len() >= room => {
                    let mut piece = std::mem::take(&mut self.pending[stream as usize]);
                    piece.extend_from_slice(&bytes[..room]);
                    self.record(stream, true, &piece)?;
                    bytes = &bytes[room..];
                }
                None => {
                    self.pending[stream as usize].extend_from_slice(bytes);
                    bytes = &[];
                }
            }
        }
        Ok(())
    }

    /// The stream ended: what it wrote after its last newline becomes a `P` record, and the
    /// files a follower made it keep beyond the limit go if none follows any more.
    pub fn finish(&mut self, stream: Stream) -> Result<(), LogError> {
        let rest = std::mem::take(&mut self.pending[stream as usize]);
        if !rest.is_empty() {
            self.record(stream, true, &rest)?;
        }
        self.drop_extra_files()
    }

    /// Deletes the rotated files beyond [`LogLimits::max_files`], unless followed.
    fn drop_extra_files(&self) -> Result<(), LogError> {
        if self.followed() {
            return Ok(());
        }
        for (n, path) in rotated_files(&self.dir) {
            if n >= self.limits.max_files {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_error(&path)(e))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, stream: Stream, partial: bool, content: &[u8]) -> Result<(), LogError> {
        let mut line = format!(
            "{} {} {} ",
            timestamp(SystemTime::now()),
            stream.name(),
            if partial { 'P' } else { 'F' }
        )
        .into_bytes();
        line.extend_from_slice(content);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.limits.max_file_bytes {
            self.rotate()?;
        }
        let path = self.dir.join(CURRENT);
        self.file.write_all(&line).map_err(io_error(&path))?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `app.log` becomes `app.log.1`, the older files shift up, the oldest goes (see the
    /// module doc; more are kept while followed, and those beyond the limit go once not).
    fn rotate(&mut self) -> Result<(), LogError> {
        let keep = if self.followed() {
            self.limits.max_files.saturating_add(FOLLOWED_EXTRA_FILES)
        } else {
            self.limits.max_files
        };
        let numbered = |n: u32| self.dir.join(format!("{CURRENT}.{n}"));
        // Newest last, so the oldest is handled first: no rename lands on a file not moved yet.
        for (n, path) in rotated_files(&self.dir) {
            let result = if n.saturating_add(1) >= keep {
                fs::remove_file(&path)
            } else {
                fs::rename(&path, numbered(n + 1))
            };
            match result {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(&path)(e)),
                _ => {}
            }
        }
        let current = self.dir.join(CURRENT);
        if keep > 1 {
            fs::rename(&current, numbered(1)).map_err(io_error(&current))?;
        } else {
            fs::remove_file(&current).map_err(io_error(&current))?;
        }
        (self.file, self.size) = open_current(&self.dir)?;
        Ok(())
    }

    /// Whether a follower holds [`FOLLOW_LOCK`] (an exclusive lock cannot be taken now).
    fn followed(&self) -> bool {
        File::open(self.dir.join(FOLLOW_LOCK))
            .is_ok_and(|lock| matches!(lock.try_lock(), Err(fs::TryLockError::WouldBlock)))
    }
}

/// `app.log` in `dir`, opened to append (created 0600; close-on-exec, as std opens every
/// file, so no jail inherits it), and its size.
fn open_current(dir: &Path) -> Result<(File, u64), LogError> {
    let path = dir.join(CURRENT);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error(&path))?;
    let size = file.metadata().map_err(io_error(&path))?.len();
    Ok((file, size))
}

/// `t` as RFC 3339 in UTC with nanoseconds, e.g. `2026-12-07T15:30:00.000000123Z`.
pub fn timestamp(t: SystemTime) -> String {
    let seconds = elastos_cloudsync::time::format_rfc3339(t);
    let nanos = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}.{nanos:09}Z", seconds.trim_end_matches('Z'))
}

/// One record of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// When the daemon read it (RFC 3339).
    pub time: String,
    /// Which output.
    pub stream: Stream,
    /// A piece of a line (no newline after it).
    pub partial: bool,
    /// The bytes, without the newline.
    pub content: Vec<u8>,
}

/// A record from one line of a log file (without its newline); `None` if it is not one.
pub fn parse_record(line: &[u8]) -> Option<LogRecord> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?.to_string();
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match fields.next()? {
        b"F" => false,
        b"P" => true,
        _ => return None,
    };
    Some(LogRecord {
        time,
        stream,
        partial,
        content: fields.next().unwrap_or_default().to_vec(),
    })
}

/// The rotated log files of an instance (`app.log.N`), oldest (highest N) first.
fn rotated_files(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let n = name
                .to_str()?
                .strip_prefix(CURRENT)?
                .strip_prefix('.')?
                .parse()
                .ok()?;
            Some((n, entry.path()))
        })
        .collect();
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    rotated
}

/// The log files of an instance, oldest first (`app.log.N` ... `app.log.1`, `app.log`).
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = rotated_files(dir)
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    files.push(dir.join(CURRENT));
    files
}

/// Every record of an instance's log, oldest first, and a [`Follower`] positioned after them.
pub fn read_records(dir: &Path) -> Result<(Vec<LogRecord>, Follower), LogError> {
    let mut follower = Follower::new(dir);
    let records = follower.poll()?;
    Ok((records, follower))
}

/// Complete lines of `reader` as records; an incomplete last line stays in `partial_line`.
fn read_lines(reader: &mut impl BufRead, partial_line: &mut Vec<u8>) -> io::Result<Vec<LogRecord>> {
    let mut records = Vec::new();
    loop {
        let read = reader.read_until(b'\n', partial_line)?;
        if read == 0 || !partial_line.ends_with(b"\n") {
            return Ok(records);
        }
        partial_line.pop();
        records.extend(parse_record(partial_line));
        partial_line.clear();
    }
}

/// Reads an instance's log files in order and then what is appended, across rotations
/// (`logs -f`; see the module doc for why it loses nothing).
#[derive(Debug)]
pub struct Follower {
    dir: PathBuf,
    /// The files opened, oldest first, with their inodes; the first is the one being read.
    open: VecDeque<(u64, BufReader<File>)>,
    partial_line: Vec<u8>,
    /// [`FOLLOW_LOCK`], held shared while following (none if it cannot be opened: the logs are
    /// read all the same, without the writer's extra retention).
    _lock: Option<File>,
    /// Rotated files found gone before they were opened.
    lost: bool,
}

impl Follower {
    /// A follower of the log in `dir` that has read nothing yet.
    pub fn new(dir: &Path) -> Follower {
        let lock = File::open(dir.join(FOLLOW_LOCK))
            .ok()
            .filter(|lock| lock.lock_shared().is_ok());
        Follower {
            dir: dir.into(),
            open: VecDeque::new(),
            partial_line: Vec::new(),
            _lock: lock,
            lost: false,
        }
    }

    /// Whether files were rotated away before this follower could open them (it fell more
    /// than [`FOLLOWED_EXTRA_FILES`] files behind): their lines are missing.
    pub fn lost_lines(&self) -> bool {
        self.lost
    }

    /// The records written since the last poll (on the first, all of them).
    pub fn poll(&mut self) -> Result<Vec<LogRecord>, LogError> {
        let mut records = Vec::new();
        loop {
            self.open_newer()?;
            self.read_front(&mut records)?;
            if self.open.len() < 2 {
                return Ok(records);
            }
            // A newer file existed before that read, so the writer had left the first one for
            // good: it has been read to its end; go on with the next.
            self.open.pop_front();
            self.partial_line.clear();
        }
    }

    fn read_front(&mut self, records: &mut Vec<LogRecord>) -> Result<(), LogError> {
        if let Some((_, file)) = self.open.front_mut() {
            let path = self.dir.join(CURRENT);
            records.extend(read_lines(file, &mut self.partial_line).map_err(io_error(&path))?);
        }
        Ok(())
    }

    /// The log files with their inodes, oldest first, as one state of the directory: the names
    /// are listed first and stat'ed one by one, and a rotation between two stats shifts every
    /// name by one, so a listing that spans it has a gap (a file that existed throughout is
    /// missing from it). Every rotation changes the inode behind every name, so two listings
    /// in a row that agree saw no rotation complete between them.
    fn stable_listing(&self) -> Vec<(u64, PathBuf)> {
        let list = || -> Vec<(u64, PathBuf)> {
            log_files(&self.dir)
                .into_iter()
                .filter_map(|path| Some((fs::metadata(&path).ok()?.ino(), path)))
                .collect()
        };
        let mut listed = list();
        loop {
            let again = list();
            if again == listed {
                return listed;
            }
            listed = again;
        }
    }

    /// Opens the files newer than the newest one held, oldest first, checking by inode that
    /// each is the file listed (a rotation between the listing and the open moves names).
    fn open_newer(&mut self) -> Result<(), LogError> {
        'listing: loop {
            let listed = self.stable_listing();
            let newer = match self.open.back() {
                None => &listed[..],
                Some((newest, _)) => match listed.iter().position(|(ino, _)| ino == newest) {
                    Some(at) => &listed[at + 1..],
                    None => {
                        // Ours was rotated out: every file listed came after it, unless the
                        // writer kept the most it keeps, in which case some went unread.
                        let kept = u32::try_from(listed.len()).unwrap_or(u32::MAX);
                        self.lost |= kept > FOLLOWED_EXTRA_FILES;
                        &listed[..]
                    }
                },
            };
            for (ino, path) in newer {
                let file = match File::open(path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue 'listing,
                    Err(e) => return Err(io_error(path)(e)),
                };
                if file.metadata().map_err(io_error(path))?.ino() != *ino {
                    continue 'listing;
                }
                self.open.push_back((*ino, BufReader::new(file)));
            }
            return Ok(());
        }
    }
}

/// The last `n` records of `records` (all when `n` is larger).
pub fn tail(records: Vec<LogRecord>, n: usize) -> Vec<LogRecord> {
    let skip = records.len().saturating_sub(n);
    records.into_iter().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(file: u64, files: u32) -> LogLimits {
        LogLimits::new(file, files).unwrap()
    }

    fn contents(records: &[LogRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.content).into_owned())
            .collect()
    }

    #[test]
    fn lines_become_records_per_stream_and_pieces_wait_for_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        log.write(Stream::Stdout, b"one\ntw").unwrap();
        log.write(Stream::Stderr, b"err\n").unwrap();
        log.write(Stream::Stdout, b"o\nthree").unwrap();
        log.finish(Stream::Stdout).unwrap();
        let (records, _) = read_records(dir.path()).unwrap();
        assert_eq!(contents(&records), ["one", "err", "two", "three"]);
        let streams: Vec<Stream> = records.iter().map(|r| r.stream).collect();
        use Stream::*;
        assert_eq!(streams, [Stdout, Stderr, Stdout, Stdout]);
        assert!(records[3].partial && !records[2].partial);
        assert!(records[0].time.ends_with('Z') && records[0].time.len() == 30);
    }

    #[test]
    fn long_lines_are_split_into_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogWriter::open(dir.path(), LogLimits::default()).unwrap();
        let line = vec![b'x'; MAX_RECORD_CONTENT * 2 + 10];
        log.write(Stream::Stdout, &line).unwrap();
        log.write(Stream::Stdout, b"\n").unwrap();
        let (records, _) = read_records(dir.path()).unwrap();
        let lengths: Vec<(usize, bool)> = records
            .iter()
            .map(|r| (r.content.len(), r.partial))
            .collect();
        assert_eq!(
            lengths,
            [
                (MAX_RECORD_CONTENT, true),
                (MAX_RECORD_CONTENT, true),
                (10, false)
            ]
        );
    }

    #[test]
    fn rotation_keeps_the_newest_records_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let limits = limits(MIN_FILE_BYTES, 3);
        let mut log = LogWriter::open(dir.path(), limits).unwrap();
        for i in 0..20_000 {
            log.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let total: u64 = log_files(dir.path())
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum();
        assert!(
            total <= limits.cap_bytes(),
            "{total} > {}",
            limits.cap_bytes()
        );
        assert_eq!(log_files(dir.path()).len(), 3);
        let (records, _) = read_records(dir.path()).unwrap();
        assert_eq!(contents(&records).last().unwrap(), "line 19999");
        // Oldest first and contiguous: nothing is lost inside what is kept.
        let numbers: Vec<u32> = records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.content)[5..].parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(numbers[0] > 0);
    }

    #[test]
    fn a_follower_sees_appends_and_goes_on_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogWriter::open(dir.path(), limits(MIN_FILE_BYTES, 2)).unwrap();
        log.write(Stream::Stdout, b"before\n").unwrap();
        let (records, mut follower) = read_records(dir.path()).unwrap();
        assert_eq!(contents(&records), ["before"]);
        assert!(follower.poll().unwrap().is_empty());
        log.write(Stream::Stderr, b"after\n").unwrap();
        assert_eq!(contents(&follower.poll().unwrap()), ["after"]);
        // Enough to rotate once: the follower reads the old file's end, then the new file.
        let mut seen = Vec::new();
        for i in 0..2000 {
            log.write(Stream::Stdout, format!("r{i}\n").as_bytes())
                .unwrap();
            if i % 500 == 0 {
                seen.extend(contents(&follower.poll().unwrap()));
            }
        }
        seen.extend(contents(&follower.poll().unwrap()));
        let expected: Vec<String> = (0..2000).map(|i| format!("r{i}")).collect();
        assert_eq!(seen, expected);
        assert!(dir.path().join("app.log.1").exists());
    }

    #[test]
    fn a_follower_many_rotations_behind_loses_nothing_and_the_extra_files_go_after() {
        let dir = tempfile::tempdir().unwrap();
        let limits = limits(MIN_FILE_BYTES, 2);
        let mut log = LogWriter::open(dir.path(), limits).unwrap();
        let (records, mut follower) = read_records(dir.path()).unwrap();
        assert!(records.is_empty());
        // About 20 rotations before the follower looks again.
        let lines = 25_000;
        for i in 0..lines {
            log.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let files = log_files(dir.path()).len() as u32;
        assert!(
            files > limits.max_files + 10,
            "kept while followed: {files}"
        );
        let seen = contents(&follower.poll().unwrap());
        let expected: Vec<String> = (0..lines).map(|i| format!("line {i}")).collect();
        assert_eq!(seen.len(), expected.len());
        assert!(seen == expected, "lines lost or out of order");
        assert!(!follower.lost_lines());
        drop(follower);
        // A process another test of this binary forks at this moment holds a copy of the
        // follower's lock until its exec closes it: the extra files go at the first end of a
        // stream (or rotation) after that.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            log.finish(Stream::Stdout).unwrap();
            let files = log_files(dir.path()).len() as u32;
            if files == limits.max_files || std::time::Instant::now() > deadline {
                assert_eq!(files, limits.max_files);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Unfollowed, the cap holds at every rotation.
        for i in 0..20_000 {
            log.write(Stream::Stdout, format!("more {i}\n").as_bytes())
                .unwrap();
        }
        assert_eq!(log_files(dir.path()).len() as u32, limits.max_files);
    }

    /// The follower lists the files by name and then stats each: a rotation between two stats
    /// shifts every name by one, and a listing that spans it skips a file (CI lost one 64 KiB
    /// file of `logs -f` this way under load). Many rounds of a writer rotating as fast as it
    /// can against a follower polling as fast as it can.
    #[test]
    fn a_follower_racing_the_rotations_loses_nothing() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let mut log = LogWriter::open(dir.path(), limits(MIN_FILE_BYTES, 2)).unwrap();
            let (_, mut follower) = read_records(dir.path()).unwrap();
            let lines = 20_000;
            let writer = std::thread::spawn(move || {
                for i in 0..lines {
                    log.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                        .unwrap();
                }
            });
            let mut seen = Vec::new();
            while !writer.is_finished() {
                seen.extend(contents(&follower.poll().unwrap()));
            }
            writer.join().unwrap();
            seen.extend(contents(&follower.poll().unwrap()));
            assert!(!follower.lost_lines(), "round {round}");
            let expected: Vec<String> = (0..lines).map(|i| format!("line {i}")).collect();
            assert!(
                seen == expected,
                "round {round}: {} of {lines} lines seen, first gap after {:?}",
                seen.len(),
                seen.iter()
                    .zip(&expected)
                    .find(|(a, b)| a != b)
                    .map(|(a, _)| a)
            );
        }
    }

    #[test]
    fn bad_limits_are_refused() {
        assert!(LogLimits::new(1024, 2).unwrap_err().contains("at least"));
        assert!(LogLimits::new(MIN_FILE_BYTES, 0).is_err());
    }

    #[test]
    fn tail_takes_the_last_records() {
        let record = |c: &str| parse_record(format!("t stdout F {c}").as_bytes()).unwrap();
        let records = vec![record("a"), record("b"), record("c")];
        assert_eq!(contents(&tail(records.clone(), 2)), ["b", "c"]);
        assert_eq!(contents(&tail(records, 10)).len(), 3);
        assert!(parse_record(b"garbage").is_none());
    }
}
