//! How long the ownership decision adds to `elastos run` when warm: load the user key, open the
//! ledger from its index, check a bundle and a service. Not a test: it prints numbers.
//!
//! `cargo run --release -p elastos-identity --example check_bench [APPS]`

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use elastos_identity::{Ledger, Offer, PublisherId, UserKey};
use uuid::Uuid;

fn main() {
    let apps: u128 = std::env::args()
        .nth(1)
        .map_or(200, |n| n.parse().expect("APPS is a number"));
    let tmp = tempfile::tempdir().expect("temporary directory");
    let keys = tmp.path().join("keys");
    let dir = tmp.path().join("ledger");
    let (key, _) = UserKey::load_or_create(&keys).expect("user key");
    let mut ledger = Ledger::create(&dir, key).expect("ledger");
    let publisher = PublisherId(SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes());
    let offer = |n: u128| Offer {
        app_id: Uuid::from_u128(n),
        publisher,
        version: "1.0.0".to_owned(),
        digest: [7; 32],
        signed_at: None,
    };
    let fill = Instant::now();
    for n in 0..apps {
        ledger.record_run(&offer(n)).expect("record run");
        ledger
            .record_service(
                Uuid::from_u128((1 << 64) | n),
                Uuid::from_u128(n),
                publisher,
            )
            .expect("record service");
    }
    println!(
        "filled: {apps} apps and {apps} services ({} records) in {:.2?}",
        ledger.size(),
        fill.elapsed()
    );

    let probe = offer(apps / 2);
    let service = Uuid::from_u128((1 << 64) | (apps / 2));
    let mut open_and_check = Vec::new();
    let mut check_only = Vec::new();
    for _ in 0..2000 {
        let start = Instant::now();
        let key = UserKey::load(&keys.join(UserKey::FILE_NAME)).expect("user key");
        let ledger = Ledger::open(&dir, key).expect("open");
        ledger.check_bundle(&probe, false).expect("owned");
        ledger
            .check_service(service, probe.app_id, publisher)
            .expect("owned");
        open_and_check.push(start.elapsed());

        let start = Instant::now();
        ledger.check_bundle(&probe, false).expect("owned");
        check_only.push(start.elapsed());
    }
    report(
        "load key + open from index + check bundle and service",
        open_and_check,
    );
    let mut key_only = Vec::new();
    for _ in 0..2000 {
        let start = Instant::now();
        UserKey::load(&keys.join(UserKey::FILE_NAME)).expect("user key");
        key_only.push(start.elapsed());
    }
    report("of which loading the user key", key_only);
    println!(
        "index size: {} bytes",
        std::fs::metadata(dir.join(elastos_identity::STATE_FILE))
            .unwrap()
            .len()
    );
    report("check_bundle on an open ledger", check_only);

    let start = Instant::now();
    std::fs::remove_file(dir.join(elastos_identity::STATE_FILE)).expect("remove index");
    let key = UserKey::load(&keys.join(UserKey::FILE_NAME)).expect("user key");
    Ledger::open(&dir, key).expect("open");
    println!(
        "cold: open with the index missing (full replay and verification): {:.2?}",
        start.elapsed()
    );
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{what}: median {:.1?}, p90 {:.1?}, p99 {:.1?} ({} runs)",
        at(0.5),
        at(0.9),
        at(0.99),
        samples.len()
    );
}
