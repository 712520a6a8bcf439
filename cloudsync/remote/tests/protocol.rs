//! The engine's side of the pipe to `elastos-cloud-remote` is as careful as the helper's: a
//! helper that breaks the protocol is an error naming it. Its own test binary: it points the
//! engine at fake helpers through a process-wide environment variable.

use std::time::{Duration, Instant};

use elastos_cloudsync::{
    S3Credentials, StoreConfig, StoreUrl, StoreWait, SyncEngine, SyncError, UserSecret, HELPER_ENV,
};

/// A helper that sends garbage, a frame claiming more than the limit, a frame cut short, or
/// nothing: an error naming the helper, never a panic, a hang past the bound or a huge
/// allocation.
#[test]
fn a_helper_that_breaks_the_protocol_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let cases = [
        ("garbage", r"printf '\003\000\000\000\377\377\377'"),
        ("huge header", r"printf '\377\377\377\377'"),
        // A well-formed `Objects { present: [true] }` where Open expects `Done`, whose blob
        // claims 2^60 bytes.
        (
            "huge blob",
            r"printf '\003\000\000\000\001\001\001\000\000\000\000\000\000\000\020'",
        ),
        ("cut short", r"printf '\010\000\000'"),
        ("silence", "exec sleep 30"),
    ];
    for (what, script) in cases {
        let helper = root
            .path()
            .join(format!("helper-{}", what.replace(' ', "-")));
        std::fs::write(&helper, format!("#!/bin/sh\ncat >/dev/null &\n{script}\n")).unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::env::set_var(HELPER_ENV, &helper);
        let mut config = StoreConfig::new(StoreUrl::S3 {
            bucket: "bucket".into(),
            prefix: String::new(),
            endpoint: Some("http://127.0.0.1:9".into()),
        });
        config.s3_credentials = Some(S3Credentials {
            access_key_id: "key".into(),
            secret_access_key: "secret".into(),
            region: "us-east-1".into(),
        });
        config.wait = StoreWait::within(Duration::from_secs(2));
        let started = Instant::now();
        let error = SyncEngine::open(
            &config,
            &UserSecret::from_bytes([1; 32]),
            &root.path().join(what),
        )
        .unwrap_err();
        let took = started.elapsed();
        eprintln!("{what}: {error} (after {took:?})");
        assert!(took < Duration::from_secs(4), "{what}: {took:?}");
        let expected = match what {
            "silence" => matches!(error, SyncError::StoreTimeout { .. }),
            _ => matches!(error, SyncError::RemoteHelper { .. }),
        };
        assert!(expected, "{what}: {error}");
    }
}
