//! Small filesystem helpers, shared with `elastos-bundle` (publisher keys, packed bundles, its
//! cache): atomic whole-file writes, private directories, and the one-line key files of elastos
//! (user and publisher keys: `<tag> <64 hex digits of the Ed25519 seed>`, mode 0600).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Eight random bytes in hex, to name temporary files and directories that nobody can predict.
pub fn random_suffix() -> io::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Whether [`write_atomically`] may replace an existing file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Replace an existing file.
    Yes,
    /// Fail with [`io::ErrorKind::AlreadyExists`] if the file exists.
    No,
}

/// Writes `data` to `path` so that readers see either the old file or the complete new one.
///
/// The data goes to a temporary file in the same directory (created with `mode`, subject to the
/// umask), is synced, and then takes the final name: by `rename` when replacing, by `link`
/// otherwise, because `link` fails atomically if the name is taken.
pub fn write_atomically(path: &Path, data: &[u8], mode: u32, replace: Replace) -> io::Result<()> {
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

/// Creates `dir` and its missing parents with mode 0700 (the user's private state).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Longest key file read: one line of a short tag and 64 hex digits.
const MAX_KEY_FILE_LEN: u64 = 256;

/// Why a key file could not be read.
#[derive(Debug)]
pub enum KeyFileError {
    /// Opening or reading it failed.
    Io(io::Error),
    /// Other users can access it (its permission bits).
    PermissionsTooOpen(u32),
    /// It is not one line `<tag> <64 hex digits>` (what is wrong).
    Malformed(&'static str),
}

/// Reads the Ed25519 seed of the key file at `path`, one line `<tag> <64 hex digits>`. Refuses a
/// file that other users can access, like ssh does: whoever reads it holds the key.
pub fn read_key_file(path: &Path, tag: &str) -> Result<[u8; 32], KeyFileError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let file = fs::File::open(path).map_err(KeyFileError::Io)?;
    let mode = file
        .metadata()
        .map_err(KeyFileError::Io)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::PermissionsTooOpen(mode));
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(KeyFileError::Io)?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let seed_hex = line
        .strip_prefix(tag)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or(KeyFileError::Malformed(
            "it does not start with its tag and a space",
        ))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(seed_hex, &mut seed)
        .map_err(|_| KeyFileError::Malformed("the seed is not 64 hex digits"))?;
    Ok(seed)
}

/// The text of a key file: `<tag> <64 hex digits of seed>` and a newline.
pub fn key_file_text(tag: &str, seed: &[u8; 32]) -> String {
    format!("{tag} {}\n", hex::encode(seed))
}
