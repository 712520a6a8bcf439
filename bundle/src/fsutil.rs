//! Small filesystem helpers shared by key saving, packing and unpacking.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Eight random bytes in hex, to name temporary files and directories that nobody can predict.
pub(crate) fn random_suffix() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Whether [`write_atomically`] may replace an existing file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replace {
    Yes,
    /// Fail with [`io::ErrorKind::AlreadyExists`] if the file exists.
    No,
}

/// Writes `data` to `path` so that readers see either the old file or the complete new one.
///
/// The data goes to a temporary file in the same directory (created with `mode`, subject to the
/// umask), is synced, and then takes the final name: by `rename` when replacing, by `link`
/// otherwise, because `link` fails atomically if the name is taken.
pub(crate) fn write_atomically(
    path: &Path,
    data: &[u8],
    mode: u32,
    replace: Replace,
) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", random_suffix()?));
    let tmp = path.with_file_name(tmp_name);

    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()
    })();
    let placed = written.and_then(|()| match replace {
        Replace::Yes => fs::rename(&tmp, path),
        Replace::No => fs::hard_link(&tmp, path),
    });
    if placed.is_err() || replace == Replace::No {
        // Best effort: the temporary name is random, a leftover does no harm beyond clutter.
        let _ = fs::remove_file(&tmp);
    }
    placed
}
