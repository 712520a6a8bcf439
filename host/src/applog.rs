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
//! instance's logs never take more than `max_file_bytes * max_files` bytes.

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
        Ok(LogWriter {
            dir: dir.into(),
            limits,
            file,
            size,
            pending: [Vec::new(), Vec::new()],
        })
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

    /// The stream ended: what it wrote after its last newline becomes a `P` record.
    pub fn finish(&mut self, stream: Stream) -> Result<(), LogError> {
        let rest = std::mem::take(&mut self.pending[stream as usize]);
        if rest.is_empty() {
            return Ok(());
        }
        self.record(stream, true, &rest)
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
    /// module doc).
    fn rotate(&mut self) -> Result<(), LogError> {
        let numbered = |n: u32| self.dir.join(format!("{CURRENT}.{n}"));
        let oldest = numbered(self.limits.max_files.saturating_sub(1).max(1));
        match fs::remove_file(&oldest) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(&oldest)(e)),
            _ => {}
        }
        for n in (1..self.limits.max_files.saturating_sub(1)).rev() {
            match fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_error(&numbered(n))(e))
                }
                _ => {}
            }
        }
        let current = self.dir.join(CURRENT);
        if self.limits.max_files > 1 {
            fs::rename(&current, numbered(1)).map_err(io_error(&current))?;
        } else {
            fs::remove_file(&current).map_err(io_error(&current))?;
        }
        (self.file, self.size) = open_current(&self.dir)?;
        Ok(())
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

/// The log files of an instance, oldest first (`app.log.N` ... `app.log.1`, `app.log`).
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
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
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, path)| path).collect();
    files.push(dir.join(CURRENT));
    files
}

/// Every record of an instance's log, oldest first, and a [`Follower`] positioned after them.
pub fn read_records(dir: &Path) -> Result<(Vec<LogRecord>, Follower), LogError> {
    let mut records = Vec::new();
    let files = log_files(dir);
    let (rotated, current) = files.split_at(files.len() - 1);
    for path in rotated {
        match File::open(path) {
            Ok(file) => records.extend(
                read_lines(&mut BufReader::new(file), &mut Vec::new()).map_err(io_error(path))?,
            ),
            // Rotated away while we read: its records are gone.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(path)(e)),
        }
    }
    let mut follower = Follower {
        path: current[0].clone(),
        file: None,
        partial_line: Vec::new(),
    };
    records.extend(follower.poll()?);
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

/// Reads what is appended to an instance's current log file, across rotations (`logs -f`).
/// Two rotations between two polls lose the file in between (docker's `json-file` has the same
/// gap): the default limits make that take megabytes within one poll.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<BufReader<File>>,
    partial_line: Vec<u8>,
}

impl Follower {
    /// The records appended since the last poll.
    pub fn poll(&mut self) -> Result<Vec<LogRecord>, LogError> {
        let mut records = Vec::new();
        if let Some(file) = &mut self.file {
            records.extend(read_lines(file, &mut self.partial_line).map_err(io_error(&self.path))?);
            // Rotated: what was written to the old file before is read above; go on with the
            // new one.
            let rotated = match fs::metadata(&self.path) {
                Ok(now) => now.ino() != file.get_ref().metadata().map_or(0, |m| m.ino()),
                Err(_) => false,
            };
            if !rotated {
                return Ok(records);
            }
            self.file = None;
            self.partial_line.clear();
        }
        match File::open(&self.path) {
            Ok(file) => {
                let mut file = BufReader::new(file);
                records.extend(
                    read_lines(&mut file, &mut self.partial_line).map_err(io_error(&self.path))?,
                );
                self.file = Some(file);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&self.path)(e)),
        }
        Ok(records)
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
