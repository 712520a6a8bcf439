//! Garbage collection: the store shrinks once versions pass the retention period, a deleted
//! chunk is uploaded again when content needs it, another device's sync under way is not broken
//! (the grace period), and `kill -9` during a collection leaves a store every device reads.
//!
//! The collecting process of the crash trials is this test binary itself, re-run with
//! `CLOUDSYNC_GC_CHILD` set: then `gc_child` runs one collection and exits.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use elastos_cloudsync::{
    GcOptions, Phase, StoreConfig, StoreUrl, SyncEngine, SyncError, SyncOptions, UserSecret,
};

/// Retention and grace of zero: everything but the newest snapshot (and the one before it, the
/// state at the start of the empty period) goes, and the second run deletes what the first
/// marked.
const NOW: GcOptions = GcOptions {
    retention: Duration::ZERO,
    grace: Duration::ZERO,
};

fn store_bytes(store: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![store.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

fn engine(store: &Path, state: &Path) -> SyncEngine {
    SyncEngine::open(
        &StoreConfig::new(StoreUrl::LocalDir(store.to_owned())),
        &UserSecret::from_bytes(SECRET),
        state,
    )
    .unwrap()
}

#[test]
fn the_store_shrinks_once_old_versions_pass_the_retention_period() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let a = device(root.path(), "a", &store);
    std::fs::create_dir_all(&a.home).unwrap();
    let old_big = random_bytes(3 << 20, 1);
    std::fs::write(a.home.join("big.bin"), &old_big).unwrap();
    std::fs::write(a.home.join("small.txt"), "small").unwrap();
    a.sync().unwrap();
    std::fs::write(a.home.join("big.bin"), random_bytes(3 << 20, 2)).unwrap();
    a.sync().unwrap();
    std::fs::remove_file(a.home.join("small.txt")).unwrap();
    a.sync().unwrap();
    // Past the retention period, the state at its start (version 2, a delta on version 1)
    // keeps its chain: nothing goes yet, and every version reads.
    let kept = a.engine.gc(&NOW).unwrap();
    assert_eq!(
        (
            kept.snapshots_kept,
            kept.snapshots_deleted,
            kept.chunks_marked
        ),
        (3, 0, 0),
        "{kept:?}"
    );
    let fresh = device(root.path(), "fresh", &store);
    assert_eq!(
        fresh
            .engine
            .versions(&home_ref(), "big.bin".as_ref())
            .unwrap()
            .len(),
        2
    );
    // Version 2 is a delta on version 1 (which alone holds the old content), version 3 a full
    // snapshot (the deltas would have passed half the tree), version 4 a delta on it. A kept
    // delta keeps its chain: with version 4 written, the state at the start of the period is
    // version 3, whose chain starts at itself, so versions 1 and 2 can go.
    std::fs::write(a.home.join("note.txt"), "note").unwrap();
    a.sync().unwrap();
    let before = store_bytes(&store);

    // Within the retention period (the default 30 days) nothing goes, however often it runs.
    for _ in 0..2 {
        let report = a
            .engine
            .gc(&GcOptions {
                grace: Duration::ZERO,
                ..GcOptions::default()
            })
            .unwrap();
        assert_eq!(
            (report.snapshots_deleted, report.chunks_deleted),
            (0, 0),
            "{report:?}"
        );
    }
    assert_eq!(
        a.engine
            .versions(&home_ref(), "big.bin".as_ref())
            .unwrap()
            .len(),
        2
    );

    // Past it: the first run deletes the two oldest snapshots and marks the old content's
    // chunks, the second deletes them.
    let first = a.engine.gc(&NOW).unwrap();
    assert_eq!(first.snapshots_deleted, 2, "{first:?}");
    assert_eq!(first.chunks_deleted, 0, "{first:?}");
    assert!(first.chunks_marked >= 1, "{first:?}");
    let second = a.engine.gc(&NOW).unwrap();
    assert_eq!(second.chunks_deleted, first.chunks_marked, "{second:?}");
    let after = store_bytes(&store);
    assert!(
        after + (3 << 20) - (256 << 10) < before,
        "the store did not shrink by the old content: {before} -> {after} bytes"
    );

    // Consistent: a new device gets exactly the current tree.
    let b = device(root.path(), "b", &store);
    b.sync().unwrap();
    let devices = Default::default();
    assert_eq!(listing(&a.home, &devices), listing(&b.home, &devices));

    // The old content comes back on device a, which uploaded its chunks once: it must upload
    // them again (a collection ran since), and b reads it.
    std::fs::write(a.home.join("again.bin"), &old_big).unwrap();
    let report = a.sync().unwrap();
    assert!(report.chunks_uploaded >= 1, "{report:?}");
    b.sync().unwrap();
    assert_eq!(std::fs::read(b.home.join("again.bin")).unwrap(), old_big);
}

#[test]
fn a_collection_during_another_devices_upload_keeps_its_young_chunks() {
    // The upload of `b` has sent its chunks and is about to commit when `a` collects twice:
    // with a grace period the chunks stay; without one (the negative control) they would go
    // and the committed snapshot would name missing chunks.
    for (grace, survives) in [(Duration::from_secs(3600), true), (Duration::ZERO, false)] {
        let root = tempfile::tempdir().unwrap();
        let store = root.path().join("store");
        let collector = Arc::new(engine(&store, &root.path().join("state-gc")));
        let b = device(root.path(), "b", &store);
        std::fs::create_dir_all(&b.home).unwrap();
        let content = random_bytes(2 << 20, 7);
        std::fs::write(b.home.join("upload.bin"), &content).unwrap();
        let collecting = Arc::clone(&collector);
        let collected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let once = Arc::clone(&collected);
        let options = SyncOptions {
            progress: Some(Box::new(move |progress| {
                if progress.phase == Phase::Commit
                    && !once.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    let options = GcOptions {
                        retention: Duration::ZERO,
                        grace,
                    };
                    collecting.gc(&options).unwrap();
                    collecting.gc(&options).unwrap();
                }
            })),
            ..SyncOptions::default()
        };
        b.engine.sync(&home_ref(), &b.home, &options).unwrap();
        assert!(collected.load(std::sync::atomic::Ordering::SeqCst));
        let c = device(root.path(), "c", &store);
        match c.sync() {
            Ok(_) if survives => {
                assert_eq!(std::fs::read(c.home.join("upload.bin")).unwrap(), content)
            }
            Err(SyncError::MissingObject { .. }) if !survives => {}
            other => panic!("grace {grace:?}: {other:?}"),
        }
    }
}

/// The child: one collection of `store|state`, retention and grace zero.
#[test]
fn gc_child() {
    let Ok(spec) = std::env::var("CLOUDSYNC_GC_CHILD") else {
        return;
    };
    let (store, state) = spec.split_once('|').unwrap();
    engine(Path::new(store), Path::new(state)).gc(&NOW).unwrap();
}

/// Runs `gc_child` on `store`, killing it after `kill_after` (`None`: let it finish); how long
/// it ran, and whether it was killed (false: it had ended on its own, successfully).
fn child_gc(store: &Path, state: &Path, kill_after: Option<Duration>) -> (Duration, bool) {
    let start = std::time::Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "gc_child", "--nocapture", "--test-threads=1"])
        .env(
            "CLOUDSYNC_GC_CHILD",
            format!("{}|{}", store.display(), state.display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut killed = false;
    if let Some(after) = kill_after {
        std::thread::sleep(after);
        if child.try_wait().unwrap().is_none() {
            killed = child.kill().is_ok(); // SIGKILL
        }
    }
    let status = child.wait().unwrap();
    assert!(killed || status.success(), "a collection failed: {status}");
    (start.elapsed(), killed)
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[test]
fn kill_9_during_a_collection_leaves_a_store_every_device_reads() {
    if std::env::var("CLOUDSYNC_GC_CHILD").is_ok() {
        return;
    }
    const TRIALS: u64 = 30;
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let a = device(root.path(), "a", &store);
    std::fs::create_dir_all(&a.home).unwrap();
    let collector_state = root.path().join("state-gc");
    // Changes that leave garbage: new content for a few files, one file gone.
    let change = |trial: u64| {
        for i in 0..6 {
            std::fs::write(
                a.home.join(format!("f{i}.bin")),
                random_bytes(300 << 10, trial * 10 + i),
            )
            .unwrap();
        }
        let _ = std::fs::remove_file(a.home.join(format!("f{}.bin", trial % 6)));
        a.sync().unwrap();
    };
    for trial in 0..3 {
        change(trial);
    }
    // How long a whole collection takes here. The kills then bisect for the middle of one:
    // between the latest kill that came before the mark and the earliest that found it done
    // (a fixed spread over the measured time missed it: the time varies with the load).
    let (full, _) = child_gc(&store, &collector_state, None);
    let (mut early, mut late) = (Duration::ZERO, full * 2);
    let mut interrupted = 0;
    let mut trial = 3;
    while trial < 3 + TRIALS || (interrupted < 3 && trial < 3 + 10 * TRIALS) {
        change(trial);
        let started = std::time::SystemTime::now();
        // Jitter of ±3% around the middle, so the kills land at different steps.
        let after = ((early + late) / 2).mul_f64(0.97 + ((trial * 37) % 7) as f64 / 100.0);
        let (_, killed) = child_gc(&store, &collector_state, Some(after));
        // Killed after the mark and before the candidates: in the middle.
        let marked = modified(&store.join("gc/mark")).is_some_and(|t| t >= started);
        let finished = modified(&store.join("gc/candidates")).is_some_and(|t| t >= started);
        if killed && marked && !finished {
            interrupted += 1;
        } else if killed && !marked {
            early = after;
        } else {
            late = after;
        }
        if early >= late {
            // The machine's pace changed: look again over a wider range.
            (early, late) = (late / 2, early * 2);
        }
        // Every device still reads the whole current tree.
        let fresh = device(root.path(), &format!("fresh{trial}"), &store);
        fresh.sync().unwrap();
        let devices = Default::default();
        assert_eq!(
            listing(&a.home, &devices),
            listing(&fresh.home, &devices),
            "trial {trial}"
        );
        std::fs::remove_dir_all(&fresh.home).unwrap();
        std::fs::remove_dir_all(&fresh.state).unwrap();
        trial += 1;
    }
    let kills = trial - 3;
    eprintln!(
        "{interrupted} of {kills} kills hit a collection in the middle (a whole one: {full:?})"
    );
    // The middle of a collection is a millisecond or two on a quiet machine: the bisection
    // finds it, but not always three times.
    assert!(
        interrupted >= 1,
        "only {interrupted} of {kills} kills hit a collection in the middle (a whole one took {full:?})"
    );
    // The next collections finish the work, and the store stays whole.
    engine(&store, &collector_state).gc(&NOW).unwrap();
    engine(&store, &collector_state).gc(&NOW).unwrap();
    let b = device(root.path(), "b", &store);
    b.sync().unwrap();
    let devices = Default::default();
    assert_eq!(listing(&a.home, &devices), listing(&b.home, &devices));
}
