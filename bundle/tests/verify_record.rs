//! The verification record: `open_verified_cached` skips hashing a bundle file that is unchanged
//! since it was verified, and never trusts a record for a file that changed, a record that is
//! malformed, or a cache entry that is not complete.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use common::{sample_app, write_file};
use elastos_bundle::{
    open_verified_cached, pack, BundleError, PublisherKey, UnpackLimits, UnpackedBundle,
    VerifiedBy, VerifiedFacts, RECORD_MIN_AGE,
};
use tempfile::TempDir;

/// A bundle of the sample app whose data file holds `data`, signed by `key`.
fn packed(key: &PublisherKey, data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    sample_app(dir.path());
    write_file(&dir.path().join("share/data.txt"), data, 0o644);
    pack(dir.path(), key, &UnpackLimits::default()).unwrap()
}

/// A bundle file and a cache, in one temporary directory.
struct Setup {
    dir: TempDir,
    bundle: PathBuf,
    cache: PathBuf,
}

impl Setup {
    /// Writes `bytes` as the bundle file, then waits until a record may be written for it: a
    /// file that changed less than `RECORD_MIN_AGE` ago is never recorded.
    fn settled(bytes: &[u8]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("app.bundle");
        let cache = dir.path().join("cache");
        fs::write(&bundle, bytes).unwrap();
        sleep(RECORD_MIN_AGE + Duration::from_millis(100));
        Self { dir, bundle, cache }
    }

    fn open(&self) -> Result<(VerifiedFacts, UnpackedBundle), BundleError> {
        open_verified_cached(&self.bundle, &self.cache, &UnpackLimits::default())
    }

    /// Opens the bundle and returns how it was verified, failing the test on an error.
    fn verified_by(&self) -> VerifiedBy {
        self.open().unwrap().0.verified_by()
    }

    /// Replaces the bundle file by renaming a new file with `bytes` over it.
    fn replace_with(&self, bytes: &[u8]) {
        let new = self.dir.path().join("new.bundle");
        fs::write(&new, bytes).unwrap();
        fs::rename(&new, &self.bundle).unwrap();
    }

    fn entry(&self, facts: &VerifiedFacts) -> PathBuf {
        self.cache.join(facts.digest().to_string())
    }

    fn record_path(&self, facts: &VerifiedFacts) -> PathBuf {
        self.entry(facts).join("verified")
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn an_unchanged_bundle_is_verified_once_then_taken_from_the_record() {
    let key = PublisherKey::generate().unwrap();
    let setup = Setup::settled(&packed(&key, b"data\n"));

    let (first, first_tree) = setup.open().unwrap();
    assert_eq!(first.verified_by(), VerifiedBy::Signature);
    assert!(first_tree.freshly_unpacked());
    assert!(setup.record_path(&first).is_file());

    let (second, second_tree) = setup.open().unwrap();
    assert_eq!(second.verified_by(), VerifiedBy::Record);
    assert_eq!(second.manifest(), first.manifest());
    assert_eq!(second.manifest_text(), first.manifest_text());
    assert_eq!(second.publisher(), key.publisher_id());
    assert_eq!(second.digest(), first.digest());
    assert_eq!(second_tree.root(), first_tree.root());
    assert!(!second_tree.freshly_unpacked());
    assert!(second_tree.root().join(common::ENTRY).is_file());
}

#[test]
fn a_recently_changed_bundle_gets_no_record() {
    let key = PublisherKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("app.bundle");
    let cache = dir.path().join("cache");
    fs::write(&bundle, packed(&key, b"data\n")).unwrap();

    // Opened at once: a write within the same timestamp tick could go unseen, so no record.
    for _ in 0..2 {
        let (facts, _) = open_verified_cached(&bundle, &cache, &UnpackLimits::default()).unwrap();
        assert_eq!(facts.verified_by(), VerifiedBy::Signature);
        let record = cache.join(facts.digest().to_string()).join("verified");
        assert!(!record.exists(), "{record:?} written for a fresh file");
    }
}

#[test]
fn tampering_in_place_with_the_same_size_and_mtime_is_caught_by_the_digest() {
    let key = PublisherKey::generate().unwrap();
    let setup = Setup::settled(&packed(&key, b"data\n"));
    setup.open().unwrap();
    assert_eq!(setup.verified_by(), VerifiedBy::Record);

    let before = fs::metadata(&setup.bundle).unwrap();
    let last = fs::read(&setup.bundle).unwrap().last().copied().unwrap();
    let mut file = OpenOptions::new().write(true).open(&setup.bundle).unwrap();
    // The last byte is part of the payload (the gzip trailer). No sleep is needed for the ctime
    // to change: `Setup::settled` waited longer than any timestamp granularity since the file
    // was written, so this write's ctime is surely newer.
    file.seek(SeekFrom::End(-1)).unwrap();
    file.write_all(&[!last]).unwrap();
    // Put the mtime back, as anyone who can write the file can: only the ctime tells.
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    let after = fs::metadata(&setup.bundle).unwrap();
    assert_eq!(after.len(), before.len());
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());

    let err = setup.open().unwrap_err();
    assert!(matches!(err, BundleError::DigestMismatch { .. }), "{err}");
}

#[test]
fn a_bundle_renamed_over_the_file_is_verified_not_taken_from_the_record() {
    let key = PublisherKey::generate().unwrap();
    let original = packed(&key, b"data\n");
    let setup = Setup::settled(&original);
    let (first, _) = setup.open().unwrap();
    assert_eq!(setup.verified_by(), VerifiedBy::Record);

    // Another bundle: another digest, so another cache entry.
    setup.replace_with(&packed(&key, b"other data\n"));
    let (other, tree) = setup.open().unwrap();
    assert_eq!(other.verified_by(), VerifiedBy::Signature);
    assert_ne!(other.digest(), first.digest());
    assert!(tree.freshly_unpacked());

    // The same contents signed by another key: the same cache entry and its record, but
    // another publisher, who must be the one reported.
    let other_key = PublisherKey::generate().unwrap();
    let resigned = packed(&other_key, b"data\n");
    setup.replace_with(&resigned);
    let (facts, _) = setup.open().unwrap();
    assert_eq!(facts.digest(), first.digest());
    assert_eq!(facts.verified_by(), VerifiedBy::Signature);
    assert_eq!(facts.publisher(), other_key.publisher_id());

    // Identical bytes in a new file: the header matches the record (the re-signed file was too
    // fresh to be recorded), only the identity differs.
    let record = json(&setup.record_path(&first));
    assert_eq!(
        record["header"].as_str(),
        Some(&*hex::encode(&original[..138]))
    );
    setup.replace_with(&original);
    let (facts, _) = setup.open().unwrap();
    assert_eq!(facts.verified_by(), VerifiedBy::Signature);
    assert_eq!(facts.publisher(), key.publisher_id());
}

#[test]
fn a_malformed_or_mismatched_record_is_ignored_and_rewritten() {
    let key = PublisherKey::generate().unwrap();
    let setup = Setup::settled(&packed(&key, b"data\n"));
    let (facts, _) = setup.open().unwrap();
    let record_path = setup.record_path(&facts);
    let valid = fs::read(&record_path).unwrap();
    assert_eq!(setup.verified_by(), VerifiedBy::Record);

    let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut record: serde_json::Value = serde_json::from_slice(&valid).unwrap();
        edit(&mut record);
        serde_json::to_vec(&record).unwrap()
    };
    let bad_records = [
        ("garbage", b"\x00\xffnot json".to_vec()),
        ("empty", Vec::new()),
        ("truncated", valid[..valid.len() / 2].to_vec()),
        ("another version", edited(&|r| r["version"] = 2.into())),
        ("an unknown field", edited(&|r| r["trusted"] = true.into())),
        (
            "another inode",
            edited(&|r| r["file"]["ino"] = (r["file"]["ino"].as_u64().unwrap() + 1).into()),
        ),
        (
            "another ctime",
            edited(&|r| {
                r["file"]["ctime_nsec"] =
                    ((r["file"]["ctime_nsec"].as_i64().unwrap() + 1) % 1_000_000_000).into()
            }),
        ),
        (
            "another header",
            edited(&|r| {
                let header = r["header"].as_str().unwrap();
                let last = if header.ends_with('0') { "1" } else { "0" };
                r["header"] = format!("{}{last}", &header[..header.len() - 1]).into();
            }),
        ),
    ];
    for (what, bad) in bad_records {
        fs::write(&record_path, &bad).unwrap();
        assert_eq!(
            setup.verified_by(),
            VerifiedBy::Signature,
            "record with {what}"
        );
        assert_eq!(fs::read(&record_path).unwrap(), valid, "record with {what}");
        assert_eq!(
            setup.verified_by(),
            VerifiedBy::Record,
            "record with {what}"
        );
    }
}

#[test]
fn a_record_whose_cache_entry_is_not_complete_is_not_trusted() {
    let key = PublisherKey::generate().unwrap();
    let setup = Setup::settled(&packed(&key, b"data\n"));
    let (facts, _) = setup.open().unwrap();
    assert_eq!(setup.verified_by(), VerifiedBy::Record);

    // Full verification then finds the unfinished entry, as it would without a record.
    fs::remove_file(setup.entry(&facts).join("complete")).unwrap();
    let err = setup.open().unwrap_err();
    assert!(
        matches!(err, BundleError::CacheEntryIncomplete { .. }),
        "{err}"
    );
}
