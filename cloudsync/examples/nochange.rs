//! The cost of a sync that finds nothing to do, the fast path `elastos run` takes around every
//! launch. `nochange setup DIR FILES` makes a home of FILES files under DIR and syncs it with a
//! local store there until settled; `nochange sync DIR [ITERATIONS]` then opens the engine and
//! syncs ITERATIONS times (default 1, for `strace -c`), printing the median and minimum µs of
//! open + sync. `nochange change DIR [ITERATIONS]` rewrites one file before each sync (the
//! incremental sync of `scripts/bench-sync.sh`, in-process, on a local store), printing the
//! median and minimum and the peak RSS. `nochange noop` exits at once: the start-up cost of a
//! binary linking the engine. Run it from a release build: `cargo run --release -p
//! elastos-cloudsync --example nochange -- ...`.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use elastos_cloudsync::{HomeRef, StoreConfig, SyncEngine, SyncOptions, UserSecret};

fn engine(dir: &Path) -> SyncEngine {
    let store = StoreConfig::new(
        dir.join("store")
            .to_str()
            .expect("a UTF-8 directory")
            .parse()
            .expect("an absolute directory"),
    );
    SyncEngine::open(&store, &UserSecret::from_bytes([7; 32]), &dir.join("state")).unwrap()
}

fn home() -> HomeRef {
    HomeRef {
        publisher: "ed25519:bench".into(),
        app_id: "nochange".into(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("noop") {
        return;
    }
    let usage =
        "usage: nochange setup DIR FILES | nochange sync|change DIR [ITERATIONS] | nochange noop";
    let dir = Path::new(args.get(1).expect(usage));
    let homedir = dir.join("home");
    match args.first().map(String::as_str) {
        Some("setup") => {
            let files: usize = args.get(2).expect(usage).parse().expect(usage);
            // An mtime a minute ago: the first sync's stats are settled at once (not racy).
            let past = SystemTime::now() - Duration::from_secs(60);
            for i in 0..files {
                let sub = homedir.join(format!("d{}", i % 10));
                std::fs::create_dir_all(&sub).unwrap();
                let path = sub.join(format!("f{i}.txt"));
                std::fs::write(&path, format!("file {i}\n").repeat(1 + i % 50)).unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(past)
                    .unwrap();
            }
            let engine = engine(dir);
            for _ in 0..2 {
                engine
                    .sync(&home(), &homedir, &SyncOptions::default())
                    .unwrap();
            }
        }
        Some(mode @ ("sync" | "change")) => {
            let iterations: usize = args.get(2).map_or(1, |n| n.parse().expect(usage));
            let change = mode == "change";
            let mut times: Vec<Duration> = (0..iterations)
                .map(|i| {
                    if change {
                        // New content every time, also across runs of this example.
                        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
                        std::fs::write(homedir.join("d3/f3.txt"), format!("edit {i} {now:?}\n"))
                            .unwrap();
                    }
                    let start = Instant::now();
                    let report = engine(dir)
                        .sync(&home(), &homedir, &SyncOptions::default())
                        .unwrap();
                    let took = start.elapsed();
                    assert!(
                        report.committed == change && report.downloaded.is_empty(),
                        "{report:?}"
                    );
                    took
                })
                .collect();
            times.sort();
            println!(
                "{iterations} {} syncs (open + sync): median {} µs, min {} µs; peak RSS {} KiB",
                if change { "one-change" } else { "no-change" },
                times[times.len() / 2].as_micros(),
                times[0].as_micros(),
                peak_rss_kib()
            );
        }
        _ => panic!("{usage}"),
    }
}

/// This process's peak resident set size (`VmHWM`).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
