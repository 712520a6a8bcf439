//! Shared by the integration tests: devices on one store, canonical tree listings.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use elastos_cloudsync::{HomeRef, StoreConfig, StoreUrl, SyncEngine, SyncOptions, UserSecret};

pub const SECRET: [u8; 32] = [42; 32];

pub fn home_ref() -> HomeRef {
    HomeRef {
        publisher: "ed25519:publisher-of-test".into(),
        app_id: "0b4a6f1e-4a3c-4c1e-9d55-5d1b1e6f0c42".into(),
    }
}

/// One device: its own state directory and home, on a shared store.
pub struct Device {
    pub engine: SyncEngine,
    pub home: PathBuf,
    pub state: PathBuf,
}

pub fn device(root: &Path, name: &str, store: &Path) -> Device {
    let state = root.join(format!("state-{name}"));
    let home = root.join(format!("home-{name}"));
    let engine = SyncEngine::open(
        &StoreConfig::new(StoreUrl::LocalDir(store.to_owned())),
        &UserSecret::from_bytes(SECRET),
        &state,
    )
    .expect("open engine");
    Device {
        engine,
        home,
        state,
    }
}

impl Device {
    pub fn sync(&self) -> Result<elastos_cloudsync::SyncReport, elastos_cloudsync::SyncError> {
        self.engine
            .sync(&home_ref(), &self.home, &SyncOptions::default())
    }
}

/// Deterministic pseudo-random bytes (xorshift), for large files.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// How a file's content is shown: the text when short and printable, else its size and hash.
pub fn show_content(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok("") => "<empty>".to_owned(),
        Ok(s) if s.len() <= 60 && s.chars().all(|c| !c.is_control()) => s.to_owned(),
        _ => format!("<{} bytes {}>", data.len(), &sha256_hex(data)[..12]),
    }
}

/// A canonical listing of a home, one line per path: `dir/`, `file = content`, `link -> target`,
/// with `(mode NNN)` when not 755 (dirs) / 644 (files). Conflict names are normalized with
/// `devices` (device id -> label) and the time replaced by `T`.
pub fn listing(home: &Path, devices: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    if home.exists() {
        walk(home, home, devices, &mut out);
    }
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, devices: &BTreeMap<String, String>, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = normalize(&path.strip_prefix(root).unwrap().to_string_lossy(), devices);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            out.push(format!(
                "{rel} -> {}",
                std::fs::read_link(&path).unwrap().display()
            ));
        } else if meta.is_dir() {
            out.push(if mode == 0o755 {
                format!("{rel}/")
            } else {
                format!("{rel}/ (mode {mode:o})")
            });
            walk(root, &path, devices, out);
        } else {
            let content = show_content(&std::fs::read(&path).unwrap());
            out.push(if mode == 0o644 {
                format!("{rel} = {content}")
            } else {
                format!("{rel} = {content} (mode {mode:o})")
            });
        }
    }
}

/// `x.conflict-3fa2b19c-20261207T153000Z.txt` -> `x.conflict-A-T.txt`.
pub fn normalize(name: &str, devices: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = name;
    while let Some(i) = rest.find(".conflict-") {
        let (head, tail) = rest.split_at(i + ".conflict-".len());
        out.push_str(head);
        let device = &tail[..8.min(tail.len())];
        out.push_str(devices.get(device).map_or(device, String::as_str));
        let tail = &tail[8.min(tail.len())..];
        // "-YYYYMMDDTHHMMSSZ"
        if tail.len() >= 17 && tail.as_bytes()[0] == b'-' && tail.as_bytes()[16] == b'Z' {
            out.push_str("-T");
            rest = &tail[17..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// Every file's bytes in the store, with its name.
pub fn store_objects(store: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![store.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((
                    path.strip_prefix(store)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    out
}

/// A hash of a whole home (paths, kinds, modes, contents, link targets).
pub fn tree_hash(home: &Path) -> String {
    sha256_hex(listing_exact(home).join("\n").as_bytes())
}

fn listing_exact(home: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![home.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(home)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.push(format!(
                    "L {rel} {}",
                    std::fs::read_link(&path).unwrap().display()
                ));
            } else if meta.is_dir() {
                out.push(format!("D {rel} {:o}", meta.mode() & 0o7777));
                stack.push(path);
            } else {
                out.push(format!(
                    "F {rel} {:o} {}",
                    meta.mode() & 0o7777,
                    sha256_hex(&std::fs::read(&path).unwrap())
                ));
            }
        }
    }
    out.sort();
    out
}
