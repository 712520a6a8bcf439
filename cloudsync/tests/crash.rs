//! Crash safety: `kill -9` of a syncing process at random moments of uploads and downloads, 50
//! trials. After each kill the sync runs again; it must succeed, and both homes must equal the
//! tree that was written (compared by hash of every path, kind, mode and content).
//!
//! The syncing process is this test binary itself, re-run with `CLOUDSYNC_CRASH_CHILD` set:
//! then `crash_child` runs one sync and exits.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use elastos_cloudsync::{StoreConfig, StoreUrl, SyncEngine, SyncOptions, UserSecret};

const TRIALS: u64 = 50;

/// The child: one sync of `store|state|home`.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var("CLOUDSYNC_CRASH_CHILD") else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let engine = SyncEngine::open(
        &StoreConfig::new(StoreUrl::LocalDir(parts[0].into())),
        &UserSecret::from_bytes(SECRET),
        Path::new(parts[1]),
    )
    .unwrap();
    engine
        .sync(
            &home_ref(),
            Path::new(parts[2]),
            &SyncOptions {
                confirm_mass_delete: true,
                ..Default::default()
            },
        )
        .unwrap();
}

/// Runs the child on `dev`, killing it after `kill_after` (`None`: let it finish); how long it ran.
fn child_sync(store: &Path, dev: &Device, kill_after: Option<Duration>) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(
            "CLOUDSYNC_CRASH_CHILD",
            format!(
                "{}|{}|{}",
                store.display(),
                dev.state.display(),
                dev.home.display()
            ),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    match kill_after {
        Some(after) => {
            std::thread::sleep(after);
            let _ = child.kill(); // SIGKILL; it may have finished already
            child.wait().unwrap();
        }
        None => assert!(
            child.wait().unwrap().success(),
            "an uninterrupted child sync failed"
        ),
    }
    start.elapsed()
}

/// A small random home: files of 0 bytes to 1.2 MB (some several chunks), dirs, a symlink.
fn populate(home: &Path, seed: u64) {
    let mut x = seed * 7919 + 1;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    std::fs::create_dir_all(home.join("sub/deeper")).unwrap();
    for i in 0..16 {
        let size = match next() % 10 {
            0 => 600_000 + (next() % 600_000) as usize,
            1 => 0,
            _ => (next() % 40_000) as usize,
        };
        let dir = ["", "sub/", "sub/deeper/"][(next() % 3) as usize];
        std::fs::write(
            home.join(format!("{dir}file-{i}.bin")),
            random_bytes(size, seed * 100 + i),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("file-0.bin", home.join("link")).unwrap();
}

/// Changes some files, deletes one, adds one.
fn mutate(home: &Path, seed: u64) {
    for entry in std::fs::read_dir(home).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let n = path.file_name().unwrap().len() as u64;
            match (seed + n) % 3 {
                0 => std::fs::write(&path, random_bytes(30_000, seed + n)).unwrap(),
                1 => std::fs::remove_file(&path).unwrap(),
                _ => {}
            }
        }
    }
    std::fs::write(home.join("added.bin"), random_bytes(700_000, seed + 999)).unwrap();
}

#[test]
fn kill_9_during_upload_and_download_loses_nothing() {
    if std::env::var("CLOUDSYNC_CRASH_CHILD").is_ok() {
        return;
    }
    // How long a whole child sync takes here, to spread the kills over it.
    let probe = tempfile::tempdir().unwrap();
    let probe_store = probe.path().join("store");
    let p = device(probe.path(), "P", &probe_store);
    populate(&p.home, 0);
    let full = child_sync(&probe_store, &p, None).max(Duration::from_millis(20));
    drop(p);

    let mut kills = 0;
    for trial in 1..=TRIALS {
        let root = tempfile::tempdir().unwrap();
        let store = root.path().join("store");
        let a = device(root.path(), "A", &store);
        let b = device(root.path(), "B", &store);
        populate(&a.home, trial);
        let written = tree_hash(&a.home);
        let delay = |salt: u64| full.mul_f64(((trial * 37 + salt * 11) % 100) as f64 / 100.0);

        // Upload interrupted, then resumed.
        kills += (child_sync(&store, &a, Some(delay(1))) < full) as u32;
        a.sync()
            .unwrap_or_else(|e| panic!("trial {trial}: resume after a killed upload: {e}"));
        assert_eq!(
            tree_hash(&a.home),
            written,
            "trial {trial}: the uploading home changed"
        );

        // Download interrupted, then resumed.
        child_sync(&store, &b, Some(delay(2)));
        b.sync()
            .unwrap_or_else(|e| panic!("trial {trial}: resume after a killed download: {e}"));
        assert_eq!(
            tree_hash(&b.home),
            written,
            "trial {trial}: the downloaded home differs"
        );

        // A change set: interrupted upload, interrupted download, both resumed.
        mutate(&a.home, trial);
        let changed = tree_hash(&a.home);
        child_sync(&store, &a, Some(delay(3)));
        a.sync()
            .unwrap_or_else(|e| panic!("trial {trial}: resume of a killed change upload: {e}"));
        child_sync(&store, &b, Some(delay(4)));
        b.sync()
            .unwrap_or_else(|e| panic!("trial {trial}: resume of a killed change download: {e}"));
        a.sync().unwrap();
        assert_eq!(
            tree_hash(&a.home),
            changed,
            "trial {trial}: the changed home was altered"
        );
        assert_eq!(
            tree_hash(&b.home),
            changed,
            "trial {trial}: the second device did not converge"
        );
        // No stray temporary files, and a final sync has nothing to do.
        let again = b.sync().unwrap();
        assert!(
            !again.committed && again.downloaded.is_empty(),
            "trial {trial}: not converged: {again:?}"
        );
    }
    eprintln!(
        "{TRIALS} trials, {kills} uploads killed before they finished (a full sync took {full:?})"
    );
}

/// The kind byte (3: full snapshot, 5: delta) of every snapshot object in the store.
fn snapshot_kinds(store: &Path) -> Vec<u8> {
    store_objects(store)
        .into_iter()
        .filter(|(name, _)| name.starts_with("homes/"))
        .map(|(_, bytes)| bytes[4])
        .collect()
}

#[test]
fn kill_9_mid_commit_of_a_delta_loses_nothing() {
    if std::env::var("CLOUDSYNC_CRASH_CHILD").is_ok() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let a = device(root.path(), "A", &store);
    let b = device(root.path(), "B", &store);
    // 400 small files: a change of a few is committed as a delta.
    for i in 0..400 {
        let dir = a.home.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), format!("file {i}")).unwrap();
    }
    a.sync().unwrap();
    b.sync().unwrap();
    std::fs::write(a.home.join("d0/f0"), "probe").unwrap();
    let full = child_sync(&store, &a, None).max(Duration::from_millis(20));
    b.sync().unwrap();

    const DELTA_TRIALS: u64 = 30;
    for trial in 1..=DELTA_TRIALS {
        // Two files changed, one added, one deleted.
        std::fs::write(
            a.home.join(format!("d1/f{}", trial * 10 + 1)),
            format!("v{trial}"),
        )
        .unwrap();
        std::fs::write(
            a.home.join(format!("d3/f{}", trial * 10 + 3)),
            random_bytes(5000, trial),
        )
        .unwrap();
        std::fs::write(
            a.home.join(format!("d5/new{trial}")),
            format!("new {trial}"),
        )
        .unwrap();
        let _ = std::fs::remove_file(a.home.join(format!("d7/f{}", trial * 10 + 7)));
        let written = tree_hash(&a.home);
        let delay = |salt: u64| full.mul_f64(((trial * 37 + salt * 11) % 100) as f64 / 100.0);

        child_sync(&store, &a, Some(delay(1)));
        a.sync()
            .unwrap_or_else(|e| panic!("trial {trial}: resume after a killed commit: {e}"));
        assert_eq!(
            tree_hash(&a.home),
            written,
            "trial {trial}: the home changed"
        );
        child_sync(&store, &b, Some(delay(2)));
        b.sync()
            .unwrap_or_else(|e| panic!("trial {trial}: resume after a killed download: {e}"));
        assert_eq!(tree_hash(&b.home), written, "trial {trial}: B differs");
        // A new device reads the same tree from the chain.
        let c = device(root.path(), &format!("C{trial}"), &store);
        c.sync().unwrap();
        assert_eq!(
            tree_hash(&c.home),
            written,
            "trial {trial}: a new device differs"
        );
        let again = a.sync().unwrap();
        assert!(
            !again.committed && again.downloaded.is_empty(),
            "trial {trial}: not converged: {again:?}"
        );
    }
    let kinds = snapshot_kinds(&store);
    let deltas = kinds.iter().filter(|&&k| k == 5).count();
    assert!(deltas >= DELTA_TRIALS as usize / 2, "{kinds:?}");
}
