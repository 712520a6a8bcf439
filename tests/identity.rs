//! The ID ledger wired into `elastos run`, `install`, activation and the broker (issue 13), end
//! to end through the real binaries: each attack on an app id, its home, its installed copy or
//! its services is refused with its own error, nothing of the owner's is touched, and the
//! ledger's own commands (`id`, `key rotate|revoke`, `ledger`, `trust`, `config`) do what they
//! say.

mod common;

use std::path::{Path, PathBuf};

use common::{binaries, json, probe_manifest, Harness, Output, User};

const APP_ID: &str = "6a1f0b2c-3d4e-4f50-8a61-7b8c9d0e1f23";
const OTHER_APP_ID: &str = "7b2a1c3d-4e5f-4061-9b72-8c9d0e1f2a34";
const SERVICE: &str = "8c3b2d4e-5f60-4172-8c83-9d0e1f2a3b45";

/// A second publisher key, outside the state dir.
fn other_key(harness: &Harness, name: &str) -> PathBuf {
    let path = harness.path().join(name);
    harness
        .elastos()
        .args(["key", "generate", "--output"])
        .arg(&path)
        .output()
        .assert_code(0);
    path
}

/// The publisher ID of `key` (default: the state dir's key).
fn publisher_of(harness: &Harness, key: Option<&Path>) -> String {
    let mut show = harness.elastos();
    show.args(["key", "show", "--format", "json"]);
    if let Some(key) = key {
        show.arg("--key").arg(key);
    }
    json(&show.output())["publisher"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Packs the staging dir `dir` with `key` (default: the state dir's key) into `dir.bundle`.
fn pack_with(harness: &Harness, dir: &Path, key: Option<&Path>) -> PathBuf {
    let bundle = dir.with_extension("bundle");
    let mut pack = harness.elastos();
    pack.args(["bundle", "pack"])
        .arg(dir)
        .arg("-o")
        .arg(&bundle);
    if let Some(key) = key {
        pack.arg("--key").arg(key);
    }
    pack.output().assert_code(0);
    bundle
}

/// The probe app `id` at `version`, with `[services]` lines, signed by `key`.
fn probe_app(
    harness: &Harness,
    name: &str,
    id: &str,
    version: &str,
    services: &str,
    key: Option<&Path>,
) -> PathBuf {
    let manifest = probe_manifest(id, "elastos-probe", "")
        .replace("version = \"0.1.0\"", &format!("version = \"{version}\""));
    let manifest = format!("{manifest}{services}");
    let dir = harness.stage(name, &manifest, &[("elastos-probe", &binaries().probe)]);
    pack_with(harness, &dir, key)
}

/// The broker probe app `id` providing (and serving, when activated) `provides`, signed by `key`.
fn broker_app(
    harness: &Harness,
    name: &str,
    id: &str,
    provides: &[&str],
    uses: &[&str],
    key: Option<&Path>,
) -> PathBuf {
    // A UUID is quoted; an entry already written as a table (`{ service = .., publisher = .. }`)
    // is taken as is.
    let list = |ids: &[&str]| {
        ids.iter()
            .map(|id| {
                if id.starts_with('{') {
                    id.to_string()
                } else {
                    format!("\"{id}\"")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let manifest = format!(
        "[app]\nid = \"{id}\"\nname = \"{name}\"\nversion = \"0.1.0\"\nentry = \
         \"elastos-broker-probe\"\n\n[services]\nprovides = [{}]\nuses = [{}]\n\n[limits]\nmemory \
         = \"64MiB\"\nthreads = 8\n",
        list(provides),
        list(uses)
    );
    let probe = binaries().elastos.with_file_name("elastos-broker-probe");
    let dir = harness.stage(name, &manifest, &[("elastos-broker-probe", &probe)]);
    if !provides.is_empty() {
        let mut args = vec!["serve"];
        args.extend(provides);
        harness.write(&format!("{name}/activate.args"), args.join("\n"), 0o644);
    }
    pack_with(harness, &dir, key)
}

/// `elastos install BUNDLE [EXTRA..]`.
fn install(harness: &Harness, bundle: &Path, extra: &[&str]) -> Output {
    harness
        .elastos()
        .arg("install")
        .args(extra)
        .arg(bundle)
        .args(["--format", "json"])
        .output()
}

/// Asserts that `out` failed with 125 and its stderr holds every one of `needles`.
#[track_caller]
fn assert_refused(out: &Output, needles: &[&str]) {
    out.assert_code(125);
    let stderr = out.stderr_text();
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "expected {needle:?} in the refusal:\n{stderr}"
        );
    }
}

fn home_of(harness: &Harness, publisher: &str, app_id: &str) -> PathBuf {
    harness
        .elastos_home()
        .join("homes")
        .join(publisher)
        .join(app_id)
}

fn ledger_dir(harness: &Harness) -> PathBuf {
    harness.elastos_home().join("ledger")
}

// ---------------------------------------------------------------------------------------------
// Ownership of app ids and their homes

#[test]
fn run_refuses_an_app_id_owned_by_another_publisher_and_leaves_the_owners_home_alone() {
    let harness = Harness::new(User::Root);
    let mine = probe_app(&harness, "mine", APP_ID, "0.1.0", "", None);
    let first = harness
        .run(&mine, &["home-put", "secret.txt", "the owner's data"])
        .output();
    first.assert_code(0);
    assert!(
        first.stderr_text().contains("not on your trust list"),
        "the first run of an unknown publisher says so:\n{}",
        first.stderr_text()
    );
    let owner = publisher_of(&harness, None);
    let key = other_key(&harness, "other.key");
    let offered = publisher_of(&harness, Some(&key));
    let theirs = probe_app(&harness, "theirs", APP_ID, "0.2.0", "", Some(&key));

    let out = harness.run(&theirs, &["home-get", "secret.txt"]).output();
    assert_refused(
        &out,
        &[
            APP_ID,
            &owner,
            &offered,
            "belongs to publisher",
            "refusing bundle",
        ],
    );
    assert!(!out.stdout_text().contains("owner's data"));
    let owners_home = home_of(&harness, &owner, APP_ID);
    assert_eq!(
        std::fs::read_to_string(owners_home.join("secret.txt")).unwrap(),
        "the owner's data"
    );
    assert!(!harness.elastos_home().join("homes").join(&offered).exists());

    // The owner still runs, its home as it was, and without a second notice.
    let again = harness.run(&mine, &["home-get", "secret.txt"]).output();
    assert_eq!(again.assert_code(0).stdout_text(), "the owner's data\n");
    assert!(!again.stderr_text().contains("not on your trust list"));
}

#[test]
fn install_refuses_an_app_id_owned_by_another_publisher_and_keeps_the_installed_app() {
    let harness = Harness::new(User::Root);
    let mine = probe_app(&harness, "mine", APP_ID, "0.1.0", "", None);
    let installed = json(&install(&harness, &mine, &[]));
    let owner = publisher_of(&harness, None);
    let key = other_key(&harness, "other.key");
    let theirs = probe_app(&harness, "theirs", APP_ID, "0.2.0", "", Some(&key));

    let out = install(&harness, &theirs, &[]);
    assert_refused(&out, &[APP_ID, &owner, &publisher_of(&harness, Some(&key))]);
    let list = json(
        &harness
            .elastos()
            .args(["list", "--format", "json"])
            .output(),
    );
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["publisher"], owner.as_str());
    assert_eq!(list[0]["digest"], installed["digest"]);
    assert!(Path::new(installed["bundle"].as_str().unwrap()).is_file());
}

#[test]
fn activation_refuses_an_installed_provider_replaced_by_another_publishers_bundle() {
    let harness = Harness::new(User::Unprivileged);
    let provider = broker_app(&harness, "provider", APP_ID, &[SERVICE], &[], None);
    let client = broker_app(&harness, "client", OTHER_APP_ID, &[], &[SERVICE], None);
    let installed = json(&install(&harness, &provider, &[]));
    let key = other_key(&harness, "other.key");
    let theirs = broker_app(&harness, "theirs", APP_ID, &[SERVICE], &[], Some(&key));
    // Someone with the user's rights swaps the installed copy for their own bundle.
    std::fs::copy(&theirs, installed["bundle"].as_str().unwrap()).unwrap();

    let out = harness
        .run(&client, &["client", &format!("lookup:{SERVICE}")])
        .output();
    let log = out.stderr_text();
    assert!(
        !out.stdout_text().contains("\"outcome\":\"OK\""),
        "the replaced provider must not serve:\n{}\n{log}",
        out.stdout_text()
    );
    assert!(
        log.contains("belongs to publisher") && log.contains(&publisher_of(&harness, Some(&key))),
        "the activation refusal names both publishers:\n{log}"
    );
    assert!(!log.contains("elastos-broker-probe: serving"), "{log}");
}

#[test]
fn a_deleted_ledger_with_homes_left_refuses_every_run_and_no_home_changes_hands() {
    let harness = Harness::new(User::Root);
    let mine = probe_app(&harness, "mine", APP_ID, "0.1.0", "", None);
    harness
        .run(&mine, &["home-put", "secret.txt", "mine"])
        .output()
        .assert_code(0);
    let owner = publisher_of(&harness, None);
    std::fs::remove_dir_all(ledger_dir(&harness)).unwrap();

    let key = other_key(&harness, "other.key");
    let theirs = probe_app(&harness, "theirs", APP_ID, "0.1.0", "", Some(&key));
    let out = harness.run(&theirs, &["home-get", "secret.txt"]).output();
    assert_refused(&out, &["ledger", "is missing but app state exists"]);
    assert!(!out.stdout_text().contains("mine"));
    // Not even the owner runs until the ledger is restored: nothing binds anew over old state.
    assert_refused(
        &harness.run(&mine, &["exit", "0"]).output(),
        &["is missing"],
    );
    assert!(!ledger_dir(&harness).join("records.jsonl").exists());
    assert_eq!(
        std::fs::read_to_string(home_of(&harness, &owner, APP_ID).join("secret.txt")).unwrap(),
        "mine"
    );
    // Homes are keyed by publisher: the other publisher's home could never be this one.
    assert_ne!(
        home_of(&harness, &owner, APP_ID),
        home_of(&harness, &publisher_of(&harness, Some(&key)), APP_ID)
    );
}

// ---------------------------------------------------------------------------------------------
// Services

#[test]
fn install_refuses_a_service_another_publishers_app_owns() {
    let harness = Harness::new(User::Root);
    let services = format!("\n[services]\nprovides = [\"{SERVICE}\"]\n");
    let owner_app = probe_app(&harness, "owner", APP_ID, "0.1.0", &services, None);
    json(&install(&harness, &owner_app, &[]));
    let key = other_key(&harness, "other.key");
    let hijack = probe_app(
        &harness,
        "hijack",
        OTHER_APP_ID,
        "0.1.0",
        &services,
        Some(&key),
    );

    let out = install(&harness, &hijack, &[]);
    assert_refused(
        &out,
        &[
            SERVICE,
            APP_ID,
            OTHER_APP_ID,
            &publisher_of(&harness, None),
            "belongs to app",
        ],
    );
    let list = json(
        &harness
            .elastos()
            .args(["list", "--format", "json"])
            .output(),
    );
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["app_id"], APP_ID);
}

#[test]
fn registration_of_a_service_another_publishers_app_owns_is_permission_denied() {
    let harness = Harness::new(User::Unprivileged);
    let owner_app = broker_app(&harness, "owner", APP_ID, &[SERVICE], &[], None);
    let first = harness
        .run(&owner_app, &["client", &format!("register:{SERVICE}=OK")])
        .output();
    first.assert_code(0);
    let key = other_key(&harness, "other.key");
    let hijack = broker_app(
        &harness,
        "hijack",
        OTHER_APP_ID,
        &[SERVICE],
        &[],
        Some(&key),
    );

    let out = harness
        .run(
            &hijack,
            &["client", &format!("register:{SERVICE}=PERMISSION_DENIED")],
        )
        .output();
    out.assert_code(0);
    let log = out.stderr_text();
    assert!(
        log.contains("service withheld") && log.contains(SERVICE),
        "the host says why the service was withheld:\n{log}"
    );
    // The owner keeps registering it.
    harness
        .run(&owner_app, &["client", &format!("register:{SERVICE}=OK")])
        .output()
        .assert_code(0);
}

/// A client whose manifest pins a service to a publisher reaches a provider of it only when that
/// provider's bundle was signed by that publisher.
#[test]
fn a_client_pinning_a_services_publisher_reaches_only_that_publishers_provider() {
    let harness = Harness::new(User::Unprivileged);
    let provider = broker_app(&harness, "pinned-provider", APP_ID, &[SERVICE], &[], None);
    install(&harness, &provider, &[]).assert_code(0);
    let owner = publisher_of(&harness, None);
    let pin =
        |publisher: &str| format!("{{ service = \"{SERVICE}\", publisher = \"{publisher}\" }}");
    let elsewhere = pin(&"ab".repeat(32));
    let pinned_elsewhere = broker_app(
        &harness,
        "pins-elsewhere",
        OTHER_APP_ID,
        &[],
        &[&elsewhere],
        None,
    );
    let out = harness
        .run(
            &pinned_elsewhere,
            &["client", &format!("lookup:{SERVICE}=PERMISSION_DENIED")],
        )
        .output();
    out.assert_code(0);
    assert!(
        out.stdout_text().contains("pins it to publisher"),
        "{}",
        out.stdout_text()
    );
    let here = pin(&owner);
    let pinned_here = broker_app(&harness, "pins-here", OTHER_APP_ID, &[], &[&here], None);
    harness
        .run(
            &pinned_here,
            &[
                "client",
                &format!("lookup:{SERVICE}=OK"),
                &format!("call:{SERVICE}:echo:pinned=OK"),
            ],
        )
        .output()
        .assert_code(0);
}

// ---------------------------------------------------------------------------------------------
// Versions and keys

#[test]
fn a_downgrade_is_refused_by_run_and_install_unless_allowed() {
    let harness = Harness::new(User::Root);
    let newer = probe_app(&harness, "newer", APP_ID, "0.2.0", "", None);
    let older = probe_app(&harness, "older", APP_ID, "0.1.0", "", None);
    harness.run(&newer, &["exit", "0"]).output().assert_code(0);

    let out = harness.run(&older, &["exit", "0"]).output();
    assert_refused(&out, &[APP_ID, "0.1.0", "older than", "0.2.0"]);
    assert_refused(&install(&harness, &older, &[]), &["older than"]);

    harness
        .elastos()
        .args(["run", "--allow-downgrade"])
        .arg(&older)
        .args(["--", "exit", "0"])
        .output()
        .assert_code(0);
    let installed = json(&install(&harness, &older, &["--allow-downgrade"]));
    assert_eq!(installed["version"], "0.1.0");
    // The highest version seen stays the bar.
    assert_refused(
        &harness.run(&older, &["exit", "0"]).output(),
        &["older than"],
    );
}

#[test]
fn a_bundle_signed_by_a_revoked_key_is_refused() {
    let harness = Harness::new(User::Root);
    let bundle = probe_app(&harness, "app", APP_ID, "0.1.0", "", None);
    harness.run(&bundle, &["exit", "0"]).output().assert_code(0);
    let publisher = publisher_of(&harness, None);
    let revoked = json(
        &harness
            .elastos()
            .args(["key", "revoke", "--format", "json"])
            .output(),
    );
    assert_eq!(revoked["publisher"], publisher.as_str());

    let out = harness.run(&bundle, &["exit", "0"]).output();
    assert_refused(&out, &[&publisher, "is revoked"]);
    let other = probe_app(&harness, "other", OTHER_APP_ID, "0.1.0", "", None);
    assert_refused(&install(&harness, &other, &[]), &["is revoked"]);
}

#[test]
fn two_rotations_hand_the_app_and_its_home_to_the_third_key_and_retire_the_others() {
    let harness = Harness::new(User::Root);
    let v1 = probe_app(&harness, "v1", APP_ID, "0.1.0", "", None);
    harness
        .run(&v1, &["home-put", "kept.txt", "across keys"])
        .output()
        .assert_code(0);
    let first = publisher_of(&harness, None);

    let rotate = || {
        json(
            &harness
                .elastos()
                .args(["key", "rotate", "--format", "json"])
                .output(),
        )
    };
    let one = rotate();
    let second = publisher_of(&harness, None);
    assert_eq!(one["publisher"], second.as_str());
    assert_ne!(first, second);
    let first_key = PathBuf::from(one["old_key_kept_at"].as_str().unwrap());
    assert_eq!(publisher_of(&harness, Some(&first_key)), first);
    let v2 = probe_app(&harness, "v2", APP_ID, "0.2.0", "", None);
    let out = harness.run(&v2, &["home-get", "kept.txt"]).output();
    assert_eq!(out.assert_code(0).stdout_text(), "across keys\n");

    let two = rotate();
    let third = publisher_of(&harness, None);
    assert_eq!(two["publisher"], third.as_str());
    let v3 = probe_app(&harness, "v3", APP_ID, "0.3.0", "", None);
    let out = harness.run(&v3, &["home-get", "kept.txt"]).output();
    assert_eq!(out.assert_code(0).stdout_text(), "across keys\n");
    // The home stays where the id was first bound.
    assert!(home_of(&harness, &first, APP_ID).join("kept.txt").is_file());

    // The retired keys sign nothing any more, whatever the version.
    let second_key = PathBuf::from(two["old_key_kept_at"].as_str().unwrap());
    for (name, key) in [("old1", &first_key), ("old2", &second_key)] {
        let old = probe_app(&harness, name, APP_ID, "0.9.0", "", Some(key));
        assert_refused(
            &harness.run(&old, &["exit", "0"]).output(),
            &["was rotated to", &third],
        );
    }
    let show = json(
        &harness
            .elastos()
            .args(["ledger", "show", "--format", "json"])
            .output(),
    );
    let kinds: Vec<&str> = show["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["claim"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["bind", "rotate", "version", "rotate", "version"],
        "{show}"
    );
    harness
        .elastos()
        .args(["ledger", "verify"])
        .output()
        .assert_code(0);
}

// ---------------------------------------------------------------------------------------------
// The ledger's integrity

/// A harness whose ledger holds the binds of two apps.
fn ledger_with_two_apps() -> Harness {
    let harness = Harness::new(User::Root);
    for (name, id) in [("a", APP_ID), ("b", OTHER_APP_ID)] {
        let bundle = probe_app(&harness, name, id, "0.1.0", "", None);
        harness.run(&bundle, &["exit", "0"]).output().assert_code(0);
    }
    harness
        .elastos()
        .args(["ledger", "verify"])
        .output()
        .assert_code(0);
    harness
}

fn verify_fails_with(harness: &Harness, needles: &[&str]) {
    let out = harness.elastos().args(["ledger", "verify"]).output();
    out.assert_code(1);
    let stderr = out.stderr_text();
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
    }
}

#[test]
fn ledger_verify_names_a_tampered_record_and_runs_refuse_the_ledger() {
    let harness = ledger_with_two_apps();
    let records = ledger_dir(&harness).join("records.jsonl");
    let text = std::fs::read_to_string(&records).unwrap();
    let tampered = text.replacen(OTHER_APP_ID, APP_ID, 1);
    assert_ne!(text, tampered);
    std::fs::write(&records, tampered).unwrap();

    verify_fails_with(&harness, &["INVALID", "record 1", "does not verify"]);
    let bundle = harness.path().join("a.bundle");
    assert_refused(
        &harness.run(&bundle, &["exit", "0"]).output(),
        &["failed verification"],
    );
}

#[test]
fn ledger_verify_names_a_truncated_log() {
    let harness = ledger_with_two_apps();
    let records = ledger_dir(&harness).join("records.jsonl");
    let text = std::fs::read_to_string(&records).unwrap();
    let first_line = text.lines().next().unwrap();
    std::fs::write(&records, format!("{first_line}\n")).unwrap();

    verify_fails_with(&harness, &["INVALID", "truncated", "the log has only 1"]);
}

#[test]
fn a_forked_log_fails_verification_and_its_import_is_refused_as_a_fork() {
    let harness = Harness::new(User::Root);
    let a = probe_app(&harness, "a", APP_ID, "0.1.0", "", None);
    harness.run(&a, &["exit", "0"]).output().assert_code(0);
    // A second machine with the same user key and another history.
    let twin = Harness::new(User::Root);
    let twin_keys = twin.elastos_home().join("keys");
    std::fs::create_dir_all(&twin_keys).unwrap();
    std::fs::set_permissions(
        &twin_keys,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::fs::copy(
        harness.elastos_home().join("keys/user.key"),
        twin.elastos_home().join("keys/user.key"),
    )
    .unwrap();
    let b = probe_app(&twin, "b", OTHER_APP_ID, "0.1.0", "", None);
    twin.run(&b, &["exit", "0"]).output().assert_code(0);
    let export = twin.path().join("twin.json");
    twin.elastos()
        .args(["ledger", "export"])
        .arg(&export)
        .output()
        .assert_code(0);

    let out = harness
        .elastos()
        .args(["ledger", "import"])
        .arg(&export)
        .output();
    out.assert_code(125);
    assert!(
        out.stderr_text().contains("fork") && out.stderr_text().contains("differ at record 0"),
        "{}",
        out.stderr_text()
    );

    // The twin's records in place of ours: our tree heads contradict them.
    std::fs::copy(
        twin.elastos_home().join("ledger/records.jsonl"),
        ledger_dir(&harness).join("records.jsonl"),
    )
    .unwrap();
    verify_fails_with(&harness, &["INVALID", "not consistent with the log"]);
}

#[test]
fn an_import_binding_an_owned_app_id_to_another_publisher_is_refused_with_both_records() {
    let harness = Harness::new(User::Root);
    let mine = probe_app(&harness, "mine", APP_ID, "0.1.0", "", None);
    harness.run(&mine, &["exit", "0"]).output().assert_code(0);
    let other = Harness::new(User::Root);
    let theirs = probe_app(&other, "theirs", APP_ID, "0.1.0", "", None);
    other.run(&theirs, &["exit", "0"]).output().assert_code(0);
    let export = other.path().join("other.json");
    other
        .elastos()
        .args(["ledger", "export"])
        .arg(&export)
        .output()
        .assert_code(0);

    let before = std::fs::read(ledger_dir(&harness).join("records.jsonl")).unwrap();
    let out = harness
        .elastos()
        .args(["ledger", "import"])
        .arg(&export)
        .output();
    assert_refused(
        &out,
        &[
            "split view",
            APP_ID,
            &publisher_of(&harness, None),
            &publisher_of(&other, None),
        ],
    );
    assert_eq!(
        std::fs::read(ledger_dir(&harness).join("records.jsonl")).unwrap(),
        before,
        "nothing is appended"
    );
}

// ---------------------------------------------------------------------------------------------
// The user's commands

#[test]
fn id_is_made_once_and_stays() {
    let harness = Harness::new(User::Root);
    let first = json(&harness.elastos().args(["id", "--format", "json"]).output());
    assert_eq!(first["created"], true);
    let second = json(&harness.elastos().args(["id", "--format", "json"]).output());
    assert_eq!(second["created"], false);
    assert_eq!(first["user"], second["user"]);
    assert_eq!(second["user"].as_str().unwrap().len(), 64);
}

#[test]
fn trusted_only_runs_trusted_publishers_and_policy_show_says_so() {
    let harness = Harness::new(User::Root);
    let bundle = probe_app(&harness, "app", APP_ID, "0.1.0", "", None);
    let publisher = publisher_of(&harness, None);
    harness
        .elastos()
        .args(["config", "set", "policy.publishers", "trusted-only"])
        .output()
        .assert_code(0);
    let out = harness.run(&bundle, &["exit", "0"]).output();
    assert_refused(&out, &[&publisher, "not trusted"]);
    let policy = harness
        .elastos()
        .args(["policy", "show"])
        .arg(&bundle)
        .output();
    assert!(policy
        .assert_code(0)
        .stdout_text()
        .contains("publishers: trusted-only"));

    harness
        .elastos()
        .args(["trust", "add", &publisher, "--name", "me"])
        .output()
        .assert_code(0);
    let list = json(
        &harness
            .elastos()
            .args(["trust", "list", "--format", "json"])
            .output(),
    );
    assert_eq!(list["policy"], "trusted_only");
    assert_eq!(list["publishers"][0]["name"], "me");
    harness.run(&bundle, &["exit", "0"]).output().assert_code(0);
    harness
        .elastos()
        .args(["trust", "remove", &publisher])
        .output()
        .assert_code(0);
    assert_refused(
        &harness.run(&bundle, &["exit", "0"]).output(),
        &["not trusted"],
    );
}

#[test]
fn bundle_inspect_shows_who_owns_the_app_id() {
    let harness = Harness::new(User::Root);
    let mine = probe_app(&harness, "mine", APP_ID, "0.1.0", "", None);
    let key = other_key(&harness, "other.key");
    let theirs = probe_app(&harness, "theirs", APP_ID, "0.1.0", "", Some(&key));
    let inspect = |bundle: &Path| {
        json(
            &harness
                .elastos()
                .args(["bundle", "inspect", "--format", "json"])
                .arg(bundle)
                .output(),
        )["ownership"]
            .clone()
    };
    assert_eq!(inspect(&mine)["status"], "new");
    harness.run(&mine, &["exit", "0"]).output().assert_code(0);
    let owned = inspect(&mine);
    assert_eq!(owned["status"], "owned by this publisher");
    assert!(owned["entry"].as_str().unwrap().starts_with("record 0"));
    let other = inspect(&theirs);
    assert_eq!(other["status"], "owned by another publisher");
    assert!(other["detail"]
        .as_str()
        .unwrap()
        .contains(&publisher_of(&harness, None)));
    // Inspecting binds nothing: the other publisher's bundle is still refused.
    assert_refused(
        &harness.run(&theirs, &["exit", "0"]).output(),
        &["belongs to publisher"],
    );
}
