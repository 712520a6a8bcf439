//! Positive end-to-end tests of `elastos run`: what an ordinary app needs works in the jail,
//! exit codes and signals carry through, the launcher and the app live and die together, and
//! the limits hold.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    binaries, eventually, probe_manifest, processes_with, unique_token, Harness, Output, User,
};

const APP_ID: &str = "0c5d2f7e-8a41-4b6e-9f3a-2d1c0b9a8e7f";
const OTHER_APP_ID: &str = "9e8d7c6b-5a49-4382-b716-a5f4e3d2c1b0";

/// Limits small enough that the bombs hit them quickly.
const SMALL_LIMITS: &str = "memory = \"64MiB\"\nthreads = 16";

/// A harness for `user` with the probe app (default limits) packed.
fn probe_app(user: User) -> (Harness, PathBuf) {
    let harness = Harness::new(user);
    let bundle = harness.probe_bundle("probe", APP_ID, "");
    (harness, bundle)
}

/// Runs the probe app once with `args`.
fn run_probe(harness: &Harness, bundle: &Path, args: &[&str]) -> Output {
    harness.run(bundle, args).output()
}

/// `Cpus_allowed_list` from a /proc/PID/status text.
fn cpus_allowed(status: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(|list| list.trim().to_string())
        .unwrap_or_else(|| panic!("no Cpus_allowed_list in {status:?}"))
}

#[test]
fn the_app_may_run_on_every_cpu_its_launcher_may() {
    // The jail's first process starts on another CPU than the launcher's (to build its
    // namespaces in parallel); the app must not inherit that.
    let (harness, bundle) = probe_app(User::Root);
    let out = run_probe(&harness, &bundle, &["status"]);
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(
        cpus_allowed(&out.assert_code(0).stdout_text()),
        cpus_allowed(&ours)
    );
}

#[test]
fn threads_run() {
    let (harness, bundle) = probe_app(User::Root);
    let out = run_probe(&harness, &bundle, &["threads", "8"]);
    assert_eq!(out.assert_code(0).stdout_text(), "threads 8 ok\n");
}

#[test]
fn anonymous_memory_can_be_mapped_and_protected() {
    let (harness, bundle) = probe_app(User::Root);
    let out = run_probe(&harness, &bundle, &["mmap"]);
    assert_eq!(out.assert_code(0).stdout_text(), "mmap ok\n");
}

#[test]
fn home_and_tmp_are_writable() {
    let (harness, bundle) = probe_app(User::Root);
    let home = run_probe(&harness, &bundle, &["home-io"]);
    assert_eq!(home.assert_code(0).stdout_text(), "io ok in /home/app\n");
    let tmp = run_probe(&harness, &bundle, &["tmp-io"]);
    assert_eq!(tmp.assert_code(0).stdout_text(), "io ok in /tmp\n");
}

#[test]
fn an_ordinary_app_works_when_launched_by_an_unprivileged_user() {
    let (harness, bundle) = probe_app(User::Unprivileged);
    for (args, expected) in [
        (&["threads", "8"][..], "threads 8 ok\n"),
        (&["mmap"][..], "mmap ok\n"),
        (&["home-io"][..], "io ok in /home/app\n"),
        (&["tmp-io"][..], "io ok in /tmp\n"),
    ] {
        let out = run_probe(&harness, &bundle, args);
        assert_eq!(out.assert_code(0).stdout_text(), expected, "{args:?}");
    }
}

#[test]
fn home_persists_across_runs_and_is_private_to_the_app() {
    let (harness, bundle) = probe_app(User::Root);
    let value = unique_token("value");
    run_probe(&harness, &bundle, &["home-put", "kept.txt", &value]).assert_code(0);
    let again = run_probe(&harness, &bundle, &["home-get", "kept.txt"]);
    assert_eq!(again.assert_code(0).stdout_text(), format!("{value}\n"));

    let other = harness.probe_bundle("other", OTHER_APP_ID, "");
    let out = run_probe(&harness, &other, &["home-get", "kept.txt"]);
    out.assert_code(1);
    assert!(
        out.stderr_text().contains("No such file"),
        "another app saw the home: {}",
        out.stderr_text()
    );
}

/// The home of app `app_id` in `harness`'s state (`homes/<publisher>/<app id>`).
fn home_of(harness: &Harness, app_id: &str) -> PathBuf {
    let homes = harness.elastos_home().join("homes");
    std::fs::read_dir(&homes)
        .unwrap_or_else(|e| panic!("read {}: {e}", homes.display()))
        .flatten()
        .map(|publisher| publisher.path().join(app_id))
        .find(|home| home.is_dir())
        .unwrap_or_else(|| panic!("no home of {app_id} under {}", homes.display()))
}

/// The host owner (uid, gid) of `path`.
fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (meta.uid(), meta.gid())
}

/// Every path under `dir`, `dir` included.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut paths = vec![dir.to_path_buf()];
    if dir.is_dir() && !dir.is_symlink() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            paths.extend(tree(&entry.path()));
        }
    }
    paths
}

/// The holder of `harness`'s user namespace as its record names it: (pid, namespace inode).
fn recorded_holder(harness: &Harness) -> (u32, u64) {
    let record = harness.elastos_home().join("run/userns");
    let text = std::fs::read_to_string(&record)
        .unwrap_or_else(|e| panic!("no holder record at {}: {e}", record.display()));
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    (fields[0] as u32, fields[3])
}

/// The inode of a namespace (`ns` under /proc/PID).
fn namespace_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .ino()
}

/// The inode of the user namespace two levels above process `pid`'s (the app's namespace is
/// nested in the jail's, which is nested in its user's).
fn grandparent_user_namespace(pid: u32) -> u64 {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const NS_GET_PARENT: libc::c_ulong = 0xb702;
    let mut namespace = OwnedFd::from(
        std::fs::File::open(format!("/proc/{pid}/ns/user")).expect("the app's namespace"),
    );
    for _ in 0..2 {
        // SAFETY: NS_GET_PARENT on a live fd returns a new fd or -1.
        let parent = unsafe { libc::ioctl(namespace.as_raw_fd(), NS_GET_PARENT) };
        assert!(
            parent >= 0,
            "NS_GET_PARENT: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the kernel just made `parent`; nothing else owns it.
        namespace = unsafe { OwnedFd::from_raw_fd(parent) };
    }
    namespace_inode(&format!("/proc/self/fd/{}", namespace.as_raw_fd()))
}

/// Whether process `pid` is alive (not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

// An unprivileged user's jails are nested in one user namespace of the user's, in which its
// subordinate ids are mapped once (by newuidmap/newgidmap) and which a small holder process
// keeps (loader/src/holder.rs): every launch joins it instead of exec'ing the two setuid
// helpers. A holder that died is replaced; a record that names anything but a verified holder
// of this user (here: a namespace the user made itself, mapping only its own uid) is never
// joined.
#[test]
fn an_unprivileged_users_jails_are_nested_in_one_namespace_holder_which_is_remade_when_gone() {
    let (harness, bundle) = probe_app(User::Unprivileged);
    run_probe(&harness, &bundle, &["exit", "0"]).assert_code(0);
    let (holder, inode) = recorded_holder(&harness);
    assert_eq!(namespace_inode(&format!("/proc/{holder}/ns/user")), inode);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{holder}/comm"))
            .unwrap()
            .trim(),
        "elastos-loader"
    );

    // The next launch joins it: the same holder, and the app's namespaces are nested in its.
    let sleeping = harness.run(&bundle, &["sleep", "30"]).spawn();
    let (first_uid, uids) = common::test_user_subordinate_range("uid");
    let app = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                use std::os::unix::fs::MetadataExt;
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "elastos-probe")
                    && std::fs::metadata(format!("/proc/{pid}"))
                        .is_ok_and(|meta| (first_uid..first_uid + uids).contains(&meta.uid()))
            })
    };
    assert!(eventually(Duration::from_secs(20), || app().is_some()));
    assert_eq!(grandparent_user_namespace(app().unwrap()), inode);
    drop(sleeping);
    assert_eq!(
        recorded_holder(&harness),
        (holder, inode),
        "a second holder"
    );
    // `elastos unshare` runs its command there too.
    let shown = harness
        .elastos()
        .args(["unshare", "readlink", "/proc/self/ns/user"])
        .output();
    assert_eq!(
        shown.assert_code(0).stdout_text().trim(),
        format!("user:[{inode}]")
    );

    // Killed, it is replaced by the next launch.
    common::send_signal(holder, "KILL");
    assert!(eventually(Duration::from_secs(5), || !alive(holder)));
    run_probe(&harness, &bundle, &["exit", "0"]).assert_code(0);
    let (second, _) = recorded_holder(&harness);
    assert_ne!(second, holder);
    assert!(alive(second));

    // A record naming a namespace the user made itself (`unshare -U`: its own uid only) with
    // the right start time and inode is not joined: the launch (which could not map the app's
    // ids there) makes a holder of its own, and the process named is left alone.
    let mut own = harness.program("/usr/bin/unshare");
    own.args(["-U", "--map-current-user", "sleep", "60"]);
    let decoy = own.spawn();
    let decoy_pid = decoy.pid();
    assert!(eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{decoy_pid}/comm"))
            .is_ok_and(|c| c.trim() == "sleep")
    }));
    let stat = std::fs::read_to_string(format!("/proc/{decoy_pid}/stat")).unwrap();
    let started: u64 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let meta = std::fs::metadata(format!("/proc/{decoy_pid}/ns/user")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let record = harness.elastos_home().join("run/userns");
    std::fs::write(
        &record,
        format!("{decoy_pid} {started} {} {}\n", meta.dev(), meta.ino()),
    )
    .unwrap();
    run_probe(&harness, &bundle, &["exit", "0"]).assert_code(0);
    let (third, _) = recorded_holder(&harness);
    assert!(third != decoy_pid && alive(third) && alive(decoy_pid));
    drop(decoy);
    // The holder the decoy's record replaced ends once its own record is gone (within 10 s).
    assert!(
        eventually(Duration::from_secs(15), || !alive(second)),
        "a holder whose record was replaced still runs"
    );

    // `elastos unshare --stop` ends it and removes the record.
    harness
        .elastos()
        .args(["unshare", "--stop"])
        .output()
        .assert_code(0);
    assert!(eventually(Duration::from_secs(5), || !alive(third)));
    assert!(!record.exists());
}

// Launched by a user with subordinate ids (scripts/dev.sh gives the test user a range), each app
// runs as one of them, so that the kernel's per-uid counters are the app's (tests/escape.rs,
// `kernel_counters_are_charged_to_the_app_*`). Its home must then be that id's, from run to
// run, also when an older elastos left it owned by the user's own uid; and the user still
// reaches it through `elastos unshare`.
#[test]
fn an_unprivileged_apps_home_belongs_to_its_subordinate_ids_across_runs() {
    let (harness, bundle) = probe_app(User::Unprivileged);
    let (first_uid, uids) = common::test_user_subordinate_range("uid");
    let (first_gid, gids) = common::test_user_subordinate_range("gid");
    let user = User::Unprivileged.ids();
    let value = unique_token("value");
    run_probe(&harness, &bundle, &["home-put", "kept.txt", &value]).assert_code(0);
    let home = home_of(&harness, APP_ID);
    let (uid, gid) = owner(&home);
    assert!(
        (first_uid..first_uid + uids).contains(&uid)
            && (first_gid..first_gid + gids).contains(&gid),
        "the home belongs to {uid}:{gid}, not to a subordinate id of the user"
    );
    for path in tree(&home) {
        assert_eq!(owner(&path), (uid, gid), "{}", path.display());
    }
    let again = run_probe(&harness, &bundle, &["home-get", "kept.txt"]);
    assert_eq!(again.assert_code(0).stdout_text(), format!("{value}\n"));
    assert_eq!(
        owner(&home),
        (uid, gid),
        "the second run keeps the app's ids"
    );

    // Another app of the same user gets other ids.
    let other = harness.probe_bundle("other", OTHER_APP_ID, "");
    run_probe(&harness, &other, &["home-io"]).assert_code(0);
    let other_ids = owner(&home_of(&harness, OTHER_APP_ID));
    assert_ne!(other_ids.0, uid, "two apps of one user share a host uid");

    // A home as an older elastos left it: everything the user's own, a private file and
    // directory among it. The next run gives it all to the app, which still reads its files.
    std::fs::create_dir(home.join("old-dir")).unwrap();
    std::fs::write(home.join("old-dir").join("private.txt"), "older").unwrap();
    std::fs::set_permissions(
        home.join("old-dir").join("private.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", home.join("link")).unwrap();
    for path in tree(&home) {
        std::os::unix::fs::lchown(&path, Some(user.uid), Some(user.gid)).unwrap();
    }
    let passwd_owner = owner(Path::new("/etc/passwd"));
    let out = run_probe(&harness, &bundle, &["home-get", "old-dir/private.txt"]);
    assert_eq!(out.assert_code(0).stdout_text(), "older\n");
    for path in tree(&home) {
        assert_eq!(owner(&path), (uid, gid), "{} was not moved", path.display());
    }
    assert_eq!(
        owner(Path::new("/etc/passwd")),
        passwd_owner,
        "a symbolic link in the home was followed"
    );
    let out = run_probe(&harness, &bundle, &["home-get", "kept.txt"]);
    assert_eq!(out.assert_code(0).stdout_text(), format!("{value}\n"));

    // The user reads and deletes the app's files through `elastos unshare`, where the app's
    // host uid FIRST+N shows as N+1.
    let shown = harness
        .elastos()
        .args(["unshare", "stat", "-c", "%u:%g"])
        .arg(&home)
        .output();
    assert_eq!(
        shown.assert_code(0).stdout_text(),
        format!("{}:{}\n", uid - first_uid + 1, gid - first_gid + 1)
    );
    let read = harness
        .elastos()
        .args(["unshare", "cat"])
        .arg(home.join("old-dir").join("private.txt"))
        .output();
    assert_eq!(read.assert_code(0).stdout_text(), "older");
    harness
        .elastos()
        .args(["unshare", "rm", "-r"])
        .arg(&home)
        .output()
        .assert_code(0);
    assert!(!home.exists(), "elastos unshare rm -r left the home");
    // The next run brings the lost home back from the cloud disk (the default store), synced in
    // a namespace where the user is root over the app's ids; the files are the app's again.
    let out = run_probe(&harness, &bundle, &["home-get", "kept.txt"]);
    assert_eq!(out.assert_code(0).stdout_text(), format!("{value}\n"));
    assert!(
        !out.stderr_text().contains("cannot sync"),
        "{}",
        out.stderr_text()
    );
    for path in tree(&home) {
        assert_eq!(
            owner(&path),
            (uid, gid),
            "{} was restored as",
            path.display()
        );
    }

    // The user's own cloud commands reach the home too (they run again in that namespace).
    let out = harness.elastos().args(["sync", "now", APP_ID]).output();
    assert!(
        !out.stderr_text().contains("ermission denied"),
        "{}",
        out.stderr_text()
    );
    out.assert_code(0);
    harness
        .elastos()
        .args(["sync", "status"])
        .output()
        .assert_code(0);

    // `policy show` says which ids the app runs as.
    let policy = harness
        .elastos()
        .args(["policy", "show", "--format", "json"])
        .arg(&bundle)
        .output();
    let policy: serde_json::Value =
        serde_json::from_str(&policy.assert_code(0).stdout_text()).unwrap();
    assert_eq!(policy["host_ids"]["kind"], "subordinate", "{policy}");
    assert_eq!(policy["host_ids"]["uid"], uid, "{policy}");
}

#[test]
fn clocks_tell_the_time() {
    let (harness, bundle) = probe_app(User::Root);
    let out = run_probe(&harness, &bundle, &["time"]);
    let text = out.assert_code(0).stdout_text();
    let value = |name: &str| -> u64 {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text:?}"));
        line.trim().parse().unwrap()
    };
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        host.abs_diff(value("realtime")) < 120,
        "jail clock {} vs host {host}",
        value("realtime")
    );
    assert!(
        value("monotonic-elapsed-ms") >= 10,
        "a 10 ms sleep took {} ms",
        value("monotonic-elapsed-ms")
    );
}

#[test]
fn randomness_is_available_and_differs_between_runs() {
    let (harness, bundle) = probe_app(User::Root);
    let draw = || {
        let out = run_probe(&harness, &bundle, &["random"]);
        let text = out.assert_code(0).stdout_text();
        let mut words: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
            .collect();
        assert_eq!(words.len(), 2, "{text:?}");
        for word in &words {
            assert_eq!(word.len(), 64);
            assert_ne!(word.as_str(), "0".repeat(64));
        }
        assert_ne!(
            words[0], words[1],
            "getrandom and /dev/urandom gave the same bytes"
        );
        words.remove(0)
    };
    assert_ne!(draw(), draw(), "two runs drew the same random bytes");
}

/// Builds tests/apps/hello.c with gcc (`-static` or not), runs it jailed and returns its stdout;
/// also says whether the binary names the dynamic loader as its ELF interpreter.
fn run_c_hello(linkage: &[&str]) -> (String, bool) {
    let harness = Harness::new(User::Root);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/hello.c");
    let binary = harness.path().join("hello-from-gcc");
    let gcc = Command::new("gcc")
        .args(linkage)
        .args(["-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("gcc is required for this test (apt-get install gcc libc6-dev)");
    assert!(
        gcc.status.success(),
        "gcc {linkage:?} failed: {}",
        String::from_utf8_lossy(&gcc.stderr)
    );
    let interpreter = b"/lib64/ld-linux-x86-64.so.2";
    let image = std::fs::read(&binary).unwrap();
    let dynamic = image.windows(interpreter.len()).any(|w| w == interpreter);
    let manifest = probe_manifest(APP_ID, "hello", "");
    let dir = harness.stage("hello", &manifest, &[("hello", &binary)]);
    let bundle = harness.pack(&dir);
    let out = harness.run::<&str>(&bundle, &[]).output();
    (out.assert_code(0).stdout_text(), dynamic)
}

#[test]
fn a_dynamically_linked_app_runs() {
    let (stdout, dynamic) = run_c_hello(&[]);
    assert!(
        dynamic,
        "gcc without -static should name an ELF interpreter"
    );
    assert_eq!(stdout, "hello from C\n");
}

#[test]
fn a_statically_linked_app_runs() {
    let (stdout, dynamic) = run_c_hello(&["-static"]);
    assert!(!dynamic, "gcc -static should name no ELF interpreter");
    assert_eq!(stdout, "hello from C\n");
}

#[test]
fn large_stdout_arrives_byte_exact() {
    const BYTES: usize = 20 << 20;
    let (harness, bundle) = probe_app(User::Root);
    let out = run_probe(&harness, &bundle, &["stdout", &BYTES.to_string()]);
    out.assert_code(0);
    assert_eq!(out.stdout.len(), BYTES);
    assert!(out.stdout.iter().all(|&b| b == b'x'), "stdout was altered");
}

/// A short digest of `bytes` for failure messages (the assertion compares the bytes themselves).
fn digest(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{} bytes, hash {:016x}", bytes.len(), hasher.finish())
}

fn stdin_passes_through(user: User) {
    // 8 MiB: many times the pipes' capacity, so the relay's both directions fill and wait.
    let input: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (harness, bundle) = probe_app(user);
    let out = harness.run(&bundle, &["cat"]).stdin(input.clone()).output();
    out.assert_code(0);
    assert!(
        out.stdout == input,
        "stdin came out altered: {} in, {} out",
        digest(&input),
        digest(&out.stdout)
    );
}

#[test]
fn stdin_passes_through_byte_exact_when_launched_by_root() {
    stdin_passes_through(User::Root);
}

#[test]
fn stdin_passes_through_byte_exact_when_launched_by_an_unprivileged_user() {
    stdin_passes_through(User::Unprivileged);
}

#[test]
fn stdout_and_stderr_stay_apart() {
    const LINES: usize = 2000;
    for user in [User::Root, User::Unprivileged] {
        let (harness, bundle) = probe_app(user);
        let out = run_probe(&harness, &bundle, &["split", &LINES.to_string()]);
        out.assert_code(0);
        let wanted =
            |stream: &str| -> Vec<String> { (0..LINES).map(|i| format!("{stream} {i}")).collect() };
        let stdout: Vec<String> = out.stdout_text().lines().map(str::to_owned).collect();
        assert_eq!(stdout, wanted("out"), "stdout as {user:?}");
        // stderr also carries the launcher's own messages (first-run warnings).
        let stderr: Vec<String> = out
            .stderr_text()
            .lines()
            .filter(|line| line.starts_with("err ") || line.starts_with("out "))
            .map(str::to_owned)
            .collect();
        assert_eq!(stderr, wanted("err"), "stderr as {user:?}");
    }
}

#[test]
fn the_app_closing_its_stdout_leaves_its_stderr_and_exit_code_intact() {
    let (harness, bundle) = probe_app(User::Root);
    let out = run_probe(&harness, &bundle, &["close-stdout"]);
    out.assert_code(0);
    assert_eq!(out.stdout_text(), "before\n");
    assert!(
        out.stderr_text().contains("after\n"),
        "{}",
        out.stderr_text()
    );
}

/// An interactive session in a terminal the test owns: the app sees a terminal of its own with
/// the user's window size, follows a resize, is interrupted by Ctrl-C typed as a byte, and the
/// user's terminal gets its settings back.
fn interactive_terminal(user: User) {
    let (harness, bundle) = probe_app(user);
    let pty = common::Pty::open(user, 24, 80);
    let before = pty.settings();
    let running = harness.run(&bundle, &["tty"]).terminal(&pty.slave).spawn();
    let shown = pty.wait_for("ready");
    assert!(shown.contains("isatty=1,1,1 "), "{shown}");
    assert!(shown.contains("size=24x80"), "{shown}");
    // Raw mode while the app runs: the user's terminal no longer echoes or makes signals itself.
    assert_ne!(
        pty.settings(),
        before,
        "the launcher did not put the terminal in raw mode"
    );
    // Ctrl-Z: SIGTSTP, which the kernel ignores for the app's orphaned process group (nothing in
    // the jail could continue it); the app still answers the resizes that follow (two: the
    // launcher may pass on the first before the byte).
    pty.type_bytes(&[0x1a]);
    pty.resize(30, 100);
    pty.wait_for("size=30x100");
    pty.resize(31, 101);
    pty.wait_for("size=31x101");
    pty.type_bytes(&[0x03]);
    let out = running.wait();
    out.assert_code(128 + libc::SIGINT);
    assert_eq!(
        pty.settings(),
        before,
        "the launcher left the terminal's settings changed"
    );
}

#[test]
fn an_interactive_app_gets_a_terminal_when_launched_by_root() {
    interactive_terminal(User::Root);
}

#[test]
fn an_interactive_app_gets_a_terminal_when_launched_by_an_unprivileged_user() {
    interactive_terminal(User::Unprivileged);
}

#[test]
fn typed_input_and_eof_reach_the_app_through_its_terminal() {
    let (harness, bundle) = probe_app(User::Root);
    let pty = common::Pty::open(User::Root, 24, 80);
    let before = pty.settings();
    let running = harness.run(&bundle, &["cat"]).terminal(&pty.slave).spawn();
    // Typed once the launcher relays (its raw mode is the sign): the app's terminal is in
    // canonical mode with echo, so a line comes back twice (the echo and cat's copy), and Ctrl-D
    // at the start of a line is EOF.
    assert!(
        eventually(common::COMMAND_TIMEOUT, || pty.settings() != before),
        "the launcher never put the terminal in raw mode"
    );
    pty.type_bytes(b"hello jail\r");
    let shown = pty.wait_for("hello jail\r\nhello jail\r\n");
    pty.type_bytes(&[0x04]);
    running.wait().assert_code(0);
    assert!(shown.matches("hello jail").count() >= 2, "{shown}");
}

#[test]
fn arguments_after_double_dash_reach_the_app_unchanged() {
    let (harness, bundle) = probe_app(User::Root);
    let out = run_probe(
        &harness,
        &bundle,
        &["args", "a b", "--flag", "", "ünï", "-- x"],
    );
    assert_eq!(
        out.assert_code(0).stdout_text(),
        "a b\n--flag\n\nünï\n-- x\n"
    );
}

#[test]
fn the_exit_code_is_the_apps() {
    let (harness, bundle) = probe_app(User::Root);
    run_probe(&harness, &bundle, &["exit", "42"]).assert_code(42);
    run_probe(&harness, &bundle, &["exit", "0"]).assert_code(0);
}

#[test]
fn raising_sigabrt_exits_134() {
    let (harness, bundle) = probe_app(User::Root);
    let out = run_probe(&harness, &bundle, &["raise", &libc::SIGABRT.to_string()]);
    out.assert_code(128 + libc::SIGABRT);
}

#[test]
fn raising_sigsegv_exits_139() {
    let (harness, bundle) = probe_app(User::Root);
    let out = run_probe(&harness, &bundle, &["raise", &libc::SIGSEGV.to_string()]);
    out.assert_code(128 + libc::SIGSEGV);
}

#[test]
fn a_segmentation_fault_exits_139() {
    let (harness, bundle) = probe_app(User::Root);
    run_probe(&harness, &bundle, &["segv"]).assert_code(128 + libc::SIGSEGV);
}

/// Starts `sleep 30 TOKEN` in the jail and waits until the app (not just the launcher) runs.
fn start_sleeper(harness: &Harness, bundle: &Path, token: &str) -> common::Running {
    let running = harness.run(bundle, &["sleep", "30", token]).spawn();
    let launcher = running.pid();
    let started = eventually(Duration::from_secs(10), || app_alive(token, launcher));
    assert!(started, "the app never showed up in /proc");
    running
}

/// Whether a process other than the launcher has `token` in its argv.
fn app_alive(token: &str, launcher: u32) -> bool {
    !processes_with(token, &[launcher]).is_empty()
}

#[test]
fn sigterm_to_elastos_run_ends_the_app_with_143() {
    let (harness, bundle) = probe_app(User::Root);
    let token = unique_token("sigterm");
    let running = start_sleeper(&harness, &bundle, &token);
    let launcher = running.pid();
    running.signal("TERM");
    running.wait().assert_code(128 + libc::SIGTERM);
    let gone = eventually(Duration::from_secs(5), || !app_alive(&token, launcher));
    assert!(gone, "the app outlived `elastos run`");
}

#[test]
fn killing_the_launcher_kills_the_app() {
    let (harness, bundle) = probe_app(User::Root);
    let token = unique_token("sigkill");
    let running = start_sleeper(&harness, &bundle, &token);
    let launcher = running.pid();
    running.signal("KILL");
    let out = running.wait();
    assert_eq!(out.code, None, "the launcher should have died of SIGKILL");
    let gone = eventually(Duration::from_secs(5), || !app_alive(&token, launcher));
    // `elastos run` starts one instance: the first of its process (its v1 leaves are named
    // after the app, its leaf in a cgroup2 tree after the launcher alone).
    remove_app_cgroups(&format!("{APP_ID}-{launcher}-1"));
    remove_app_cgroups(&format!("{launcher}-1"));
    assert!(gone, "the app survived SIGKILL of its launcher");
}

/// Removes the cgroups `/sys/fs/cgroup/*/elastos/NAME` that a SIGKILLed launcher could not
/// remove itself (NAME is its `<app id>-<launcher pid>-<instance>`, or `<launcher
/// pid>-<instance>` in a cgroup2 tree), waiting for the killed app to be reaped.
fn remove_app_cgroups(name: &str) {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let cgroups: Vec<PathBuf> = controllers
        .flatten()
        .map(|controller| controller.path().join("elastos").join(name))
        .filter(|cgroup| cgroup.is_dir())
        .collect();
    // rmdir succeeds only once a cgroup has no process left: nothing else can be removed here.
    eventually(Duration::from_secs(5), || {
        cgroups
            .iter()
            .all(|cgroup| std::fs::remove_dir(cgroup).is_ok() || !cgroup.exists())
    });
}

#[test]
fn a_second_run_reuses_the_unpacked_bundle() {
    let (harness, bundle) = probe_app(User::Root);
    let first = harness
        .run(&bundle, &["exit", "0"])
        .env("ELASTOS_LOG", "debug")
        .output();
    assert!(
        first
            .assert_code(0)
            .stderr_text()
            .contains("unpacked bundle"),
        "first run: {}",
        first.stderr_text()
    );
    let second = harness
        .run(&bundle, &["exit", "0"])
        .env("ELASTOS_LOG", "debug")
        .output();
    let log = second.assert_code(0).stderr_text();
    assert!(
        !log.contains("unpacked bundle"),
        "the second run unpacked again:\n{log}"
    );
    assert!(
        log.contains("bundle already unpacked"),
        "the second run did not say it reused the cache:\n{log}"
    );
}

/// The memory bomb must stop short (allocation failure or SIGKILL), and the host stays usable.
fn memory_limit_holds(user: User) {
    let harness = Harness::new(user);
    let bundle = harness.probe_bundle("small", APP_ID, SMALL_LIMITS);
    let out = harness
        .run(&bundle, &["mem-bomb", &(1u64 << 30).to_string()])
        .output();
    let text = out.stdout_text();
    assert!(
        common::memory_bomb_stopped(&out),
        "a 1 GiB bomb under a 64 MiB limit was not stopped: {:?}\n{text}\n{}",
        out.status,
        out.stderr_text()
    );
    // The machine is unharmed: the next app runs normally.
    run_probe(&harness, &bundle, &["exit", "0"]).assert_code(0);
}

#[test]
fn the_memory_limit_holds_when_launched_by_root() {
    memory_limit_holds(User::Root);
}

#[test]
fn the_memory_limit_holds_when_launched_by_an_unprivileged_user() {
    memory_limit_holds(User::Unprivileged);
}

/// The memory limit covers swap where the host accounts it (a limit on resident memory alone
/// lets the app grow on in swap), and `elastos run --log-level info` says whether it does.
#[test]
fn the_memory_limit_covers_swap_where_the_host_accounts_it() {
    let harness = Harness::new(User::Root);
    let bundle = harness.probe_bundle("small", APP_ID, SMALL_LIMITS);
    let token = unique_token("swap");
    let running = harness
        .run(&bundle, &["sleep", "30", &token])
        .env("ELASTOS_LOG", "info")
        .spawn();
    let launcher = running.pid();
    let started = eventually(Duration::from_secs(10), || app_alive(&token, launcher));
    // Read while the app runs: the launcher removes its cgroup when the app ends. `elastos run`
    // starts one instance, the first of its process.
    let name = format!("{APP_ID}-{launcher}-1");
    let (v1, v2) = (
        Path::new("/sys/fs/cgroup/memory"),
        Path::new("/sys/fs/cgroup"),
    );
    let (accounted, limit) = if v1.is_dir() {
        (
            v1.join("memory.memsw.limit_in_bytes").exists(),
            v1.join("elastos")
                .join(&name)
                .join("memory.memsw.limit_in_bytes"),
        )
    } else {
        let leaf = v2.join("elastos").join(&name);
        (
            leaf.join("memory.swap.max").exists(),
            leaf.join("memory.swap.max"),
        )
    };
    // The jail's first process (a clone of the launcher, with its argv) shows up before the
    // launcher has made the cgroup: wait for the file.
    eventually(Duration::from_secs(10), || !accounted || limit.exists());
    let limit = std::fs::read_to_string(&limit);
    running.signal("TERM");
    let out = running.wait();
    assert!(started, "the app never showed up in /proc");
    let log = out.stderr_text();
    assert!(
        log.contains(&format!("swap_limited: {accounted}")),
        "the log does not say whether swap is limited (host accounts swap: {accounted}):\n{log}"
    );
    if accounted {
        let limit =
            limit.unwrap_or_else(|e| panic!("the app's cgroup has no swap limit: {e}\n{log}"));
        let expected = if v1.is_dir() {
            (64u64 << 20).to_string()
        } else {
            "0".to_owned()
        };
        assert_eq!(limit.trim(), expected, "swap limit of the app's cgroup");
    }
}

/// The thread bomb must stop below the limit of 16 threads.
fn thread_limit_holds(user: User) {
    let harness = Harness::new(user);
    let bundle = harness.probe_bundle("small", APP_ID, SMALL_LIMITS);
    let out = harness.run(&bundle, &["thread-bomb", "64"]).output();
    let text = out.assert_code(0).stdout_text();
    let started: u32 = text
        .strip_prefix("thread-bomb: started ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected thread-bomb output {text:?}"));
    assert!(
        started < 16,
        "{started} threads started besides the main one under a limit of 16"
    );
}

#[test]
fn the_thread_limit_holds_when_launched_by_root() {
    thread_limit_holds(User::Root);
}

#[test]
fn the_thread_limit_holds_when_launched_by_an_unprivileged_user() {
    thread_limit_holds(User::Unprivileged);
}

/// Offset of the manifest length in a version-1 bundle (see elastos_bundle's format table).
const MANIFEST_LEN_OFFSET: usize = 138;

/// A validly signed bundle with `manifest` around the payload of `bundle`: how a bundle that
/// `bundle pack` would refuse (e.g. an entry that is missing) can still be made.
fn reseal(bundle: &Path, manifest: &str, output: &Path) {
    let bytes = std::fs::read(bundle).unwrap();
    let manifest_len =
        u32::from_le_bytes(bytes[MANIFEST_LEN_OFFSET..][..4].try_into().unwrap()) as usize;
    let payload_start = MANIFEST_LEN_OFFSET + 4 + manifest_len + 8;
    let key = elastos_bundle::PublisherKey::generate().unwrap();
    let sealed = elastos_bundle::seal(manifest.as_bytes(), &bytes[payload_start..], &key).unwrap();
    std::fs::write(output, sealed).unwrap();
}

/// Packs the probe app plus a non-executable `data.txt`, then reseals it naming `entry`.
fn bundle_with_entry(harness: &Harness, entry: &str) -> PathBuf {
    let data = harness.write("data.txt", "not a program\n", 0o644);
    let manifest = probe_manifest(APP_ID, "elastos-probe", "");
    let dir = harness.stage(
        "entries",
        &manifest,
        &[("elastos-probe", &binaries().probe), ("data.txt", &data)],
    );
    let packed = harness.pack(&dir);
    let resealed = harness.path().join(format!("entry-{entry}.bundle"));
    reseal(&packed, &probe_manifest(APP_ID, entry, ""), &resealed);
    harness.own(&resealed);
    resealed
}

/// A validly signed bundle naming `entry` (which `bundle pack` would refuse) runs to `code`.
fn entry_exits_with(entry: &str, code: i32) {
    let harness = Harness::new(User::Root);
    let bundle = bundle_with_entry(&harness, entry);
    harness
        .elastos()
        .arg("bundle")
        .arg("verify")
        .arg(&bundle)
        .output()
        .assert_code(0);
    harness.run::<&str>(&bundle, &[]).output().assert_code(code);
}

#[test]
fn a_missing_entry_exits_127() {
    entry_exits_with("no-such-program", 127);
}

#[test]
fn a_non_executable_entry_exits_126() {
    entry_exits_with("data.txt", 126);
}

/// A bundle whose entry is an executable file with `contents`: it passes every bundle check, so
/// only the kernel's execve in the jail can refuse it.
fn bundle_with_executable(harness: &Harness, contents: &str) -> PathBuf {
    let program = harness.write("program", contents, 0o755);
    let dir = harness.stage(
        "exec-check",
        &probe_manifest(APP_ID, "program", ""),
        &[("program", &program)],
    );
    harness.pack(&dir)
}

#[test]
fn an_entry_the_kernel_cannot_execute_exits_126() {
    let harness = Harness::new(User::Root);
    let bundle = bundle_with_executable(&harness, "not an ELF file, not a script\n");
    let out = harness.run::<&str>(&bundle, &[]).output();
    out.assert_code(126);
    assert!(
        out.stderr_text().contains("cannot be executed"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn an_entry_whose_interpreter_is_missing_exits_127() {
    let harness = Harness::new(User::Root);
    let bundle = bundle_with_executable(&harness, "#!/no/such/interpreter\n");
    let out = harness.run::<&str>(&bundle, &[]).output();
    out.assert_code(127);
    assert!(
        out.stderr_text().contains("not found"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn the_jail_is_a_session_of_its_own_and_cannot_take_the_users_terminal() {
    let (harness, bundle) = probe_app(User::Root);
    // `script` runs a command in a new session whose controlling terminal is a pty, as a user's
    // shell in a terminal would; the app's stdin is that terminal.
    let in_terminal = |command: String| {
        let out = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", harness.host_home())
            .env("ELASTOS_HOME", harness.elastos_home())
            .env("TMPDIR", harness.mkdir("unjailed-tmp"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script (util-linux) runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{command}: {:?}\n{text}", out.status);
        text
    };
    let jailed = in_terminal(format!(
        "{} run {} -- terminal",
        binaries().elastos.display(),
        bundle.display()
    ));
    // The app leads a session of its own (pid 2 in the jail, under its init)...
    assert!(jailed.contains("sid=2 pgrp=2 "), "{jailed}");
    // ...whose terminal is the launcher's pty, not the user's; it cannot make itself any
    // terminal's foreground group.
    assert!(
        jailed.contains(&format!("tiocspgrp=errno {}", libc::ENOTTY)),
        "{jailed}"
    );
    // Unjailed, in the same kind of terminal, the same call succeeds.
    let unjailed = in_terminal(format!("{} terminal", binaries().probe.display()));
    assert!(unjailed.contains("tiocspgrp=ok"), "{unjailed}");
}

/// A manifest may not ask for more than the host's ceilings: refused with the field, the value
/// and the ceiling; the user's own ceilings file (beside the state, `ELASTOS_HOME/limits.toml`)
/// can lower them, and a broken one is an error naming its line.
#[test]
fn limits_above_the_hosts_ceilings_are_refused_naming_the_field_and_the_ceiling() {
    let harness = Harness::new(User::Root);
    let greedy = harness.probe_bundle("greedy", APP_ID, "memory = \"1024GiB\"\nthreads = 16");
    let out = harness.run(&greedy, &["exit", "0"]).output();
    out.assert_code(125);
    let said = out.stderr_text();
    assert!(
        said.contains("`limits.memory` = 1099511627776 is above this host's ceiling of"),
        "{said}"
    );
    // Within the defaults, but above what this user allows.
    let modest = harness.probe_bundle("modest", APP_ID, "memory = \"64MiB\"\nthreads = 100");
    harness.run(&modest, &["exit", "0"]).output().assert_code(0);
    let limits = harness.elastos_home().join("limits.toml");
    std::fs::write(&limits, "threads = 32\n").expect("user ceilings");
    harness.own(&limits);
    let out = harness.run(&modest, &["exit", "0"]).output();
    out.assert_code(125);
    assert!(
        out.stderr_text()
            .contains("`limits.threads` = 100 is above this host's ceiling of 32"),
        "{}",
        out.stderr_text()
    );
    std::fs::write(&limits, "treads = 32\n").expect("user ceilings");
    let out = harness.run(&modest, &["exit", "0"]).output();
    out.assert_code(125);
    assert!(
        out.stderr_text().contains("unknown key `treads` at line 1"),
        "{}",
        out.stderr_text()
    );
}
