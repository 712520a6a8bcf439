//! `elastos bundle` and the bundle checks of `elastos run`, end to end through the real binary:
//! each malformed, tampered or hostile bundle is refused with its own error, before anything of
//! it is used, and nothing is left in the cache.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{binaries, probe_manifest, Harness, User};
use elastos_bundle::PublisherKey;

const APP_ID: &str = "3f2b1a09-7c6d-4e5f-8a9b-0c1d2e3f4a5b";

fn probe_dir(harness: &Harness, manifest: &str) -> PathBuf {
    harness.stage("app", manifest, &[("elastos-probe", &binaries().probe)])
}

/// The cache directory of `harness` holds no unpacked bundle.
fn assert_cache_empty(harness: &Harness) {
    let cache = harness.elastos_home().join("bundles");
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        entries.is_empty(),
        "refused bundle left {entries:?} in {}",
        cache.display()
    );
}

#[test]
fn pack_verify_and_inspect_agree_on_publisher_and_digest() {
    let harness = Harness::new(User::Root);
    let dir = probe_dir(&harness, &probe_manifest(APP_ID, "elastos-probe", ""));
    let bundle = harness.path().join("probe.bundle");
    let packed = harness
        .elastos()
        .args(["bundle", "pack", "--format", "json"])
        .arg(&dir)
        .arg("-o")
        .arg(&bundle)
        .output();
    packed.assert_code(0);
    assert!(
        packed.stderr_text().contains("created a publisher key at"),
        "first pack must say where the new key went: {}",
        packed.stderr_text()
    );
    let packed: serde_json::Value = serde_json::from_str(&packed.stdout_text()).unwrap();

    let key = harness
        .elastos()
        .args(["key", "show", "--format", "json"])
        .output();
    key.assert_code(0);
    let key: serde_json::Value = serde_json::from_str(&key.stdout_text()).unwrap();
    assert_eq!(key["publisher"], packed["publisher"]);
    assert!(Path::new(key["path"].as_str().unwrap()).starts_with(harness.elastos_home()));

    harness
        .elastos()
        .args(["bundle", "verify"])
        .arg(&bundle)
        .output()
        .assert_code(0);
    let inspect = harness
        .elastos()
        .args(["bundle", "inspect", "--format", "json"])
        .arg(&bundle)
        .output();
    inspect.assert_code(0);
    let inspect: serde_json::Value = serde_json::from_str(&inspect.stdout_text()).unwrap();
    assert_eq!(inspect["signature"]["status"], "valid");
    assert_eq!(inspect["publisher"], packed["publisher"]);
    assert_eq!(inspect["digest"], packed["digest"]);
    assert_eq!(inspect["manifest"]["id"], APP_ID);
}

#[test]
fn a_tampered_bundle_is_refused_before_use() {
    let harness = Harness::new(User::Root);
    let bundle = harness.pack(&probe_dir(
        &harness,
        &probe_manifest(APP_ID, "elastos-probe", ""),
    ));
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x01;
    let tampered = harness.write("tampered.bundle", &bytes, 0o644);

    let verify = harness
        .elastos()
        .args(["bundle", "verify"])
        .arg(&tampered)
        .output();
    verify.assert_code(1);
    assert!(
        verify.stderr_text().contains("tampered"),
        "{}",
        verify.stderr_text()
    );
    let inspect = harness
        .elastos()
        .args(["bundle", "inspect", "--format", "json"])
        .arg(&tampered)
        .output();
    inspect.assert_code(0);
    assert!(
        inspect.stdout_text().contains("digest_mismatch"),
        "{}",
        inspect.stdout_text()
    );

    assert_run_refused(&harness, &tampered, "tampered");
}

/// `elastos run` refuses `bundle` with exit 125 and an error containing `error`, unpacks
/// nothing, and leaves no process behind (the jail's first process, created before the bundle
/// was read, has the launcher's command line until it execs the loader).
fn assert_run_refused(harness: &Harness, bundle: &Path, error: &str) {
    let run = harness.run::<&str>(bundle, &[]).output();
    run.assert_code(125);
    assert!(
        run.stderr_text().contains(error),
        "expected {error:?}: {}",
        run.stderr_text()
    );
    assert_cache_empty(harness);
    let survivors = Command::new("pgrep")
        .arg("-f")
        .arg(bundle)
        .output()
        .expect("pgrep (procps) is required for this test");
    assert!(
        survivors.stdout.is_empty(),
        "processes left behind: {}",
        String::from_utf8_lossy(&survivors.stdout)
    );
}

#[test]
fn a_signature_by_another_key_over_a_changed_digest_is_refused() {
    let harness = Harness::new(User::Root);
    let bundle = harness.pack(&probe_dir(
        &harness,
        &probe_manifest(APP_ID, "elastos-probe", ""),
    ));
    let mut bytes = std::fs::read(&bundle).unwrap();
    // Signature field: bytes 42..106 (see elastos_bundle's format table).
    bytes[50] ^= 0xff;
    let forged = harness.write("forged.bundle", &bytes, 0o644);
    assert_run_refused(&harness, &forged, "signature");
}

#[test]
fn manifest_mistakes_name_the_key_or_field() {
    let harness = Harness::new(User::Root);
    let cases = [
        (
            probe_manifest(APP_ID, "elastos-probe", "memroy = \"64MiB\""),
            "memroy",
        ),
        (
            probe_manifest(APP_ID, "elastos-probe", "memory = \"lots\""),
            "limits.memory",
        ),
        (probe_manifest("not-a-uuid", "elastos-probe", ""), "app.id"),
        (probe_manifest(APP_ID, "../escape", ""), "app.entry"),
    ];
    for (manifest, named) in cases {
        let dir = probe_dir(&harness, &manifest);
        let out = harness
            .elastos()
            .args(["bundle", "pack"])
            .arg(&dir)
            .arg("-o")
            .arg(harness.path().join("bad.bundle"))
            .output();
        out.assert_code(125);
        assert!(
            out.stderr_text().contains(named),
            "error must name {named}: {}",
            out.stderr_text()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// One hostile tar entry.
enum Hostile {
    Traversal,
    Absolute,
    SymlinkOutside,
    HardLink,
    Device,
    Fifo,
    Setuid,
}

/// A validly signed bundle whose payload holds the probe as entry plus one hostile entry.
fn hostile_bundle(harness: &Harness, kind: &Hostile) -> PathBuf {
    let mut tar = tar::Builder::new(Vec::new());
    let probe = std::fs::read(&binaries().probe).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(probe.len() as u64);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "elastos-probe", probe.as_slice())
        .unwrap();

    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(0o644);
    let name: &[u8] = match kind {
        Hostile::Traversal => b"../../outside",
        Hostile::Absolute => b"/etc/evil",
        Hostile::SymlinkOutside => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_link_name("../../../etc").unwrap();
            b"link"
        }
        Hostile::HardLink => {
            header.set_entry_type(tar::EntryType::Link);
            header.set_link_name("elastos-probe").unwrap();
            b"hard"
        }
        Hostile::Device => {
            header.set_entry_type(tar::EntryType::Char);
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
            b"null"
        }
        Hostile::Fifo => {
            header.set_entry_type(tar::EntryType::Fifo);
            b"fifo"
        }
        Hostile::Setuid => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o4755);
            b"suid"
        }
    };
    // Raw name bytes: the tar crate's path setters refuse `..` and absolute paths themselves.
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_cksum();
    tar.append(&header, std::io::empty()).unwrap();
    let payload = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&payload).unwrap();
    let payload = gz.finish().unwrap();

    let key = PublisherKey::generate().unwrap();
    let manifest = probe_manifest(APP_ID, "elastos-probe", "");
    let sealed = elastos_bundle::seal(manifest.as_bytes(), &payload, &key).unwrap();
    harness.write("hostile.bundle", sealed, 0o644)
}

#[test]
fn hostile_archives_are_refused_each_with_its_own_error() {
    let harness = Harness::new(User::Root);
    let cases = [
        (Hostile::Traversal, "`..` components"),
        (Hostile::Absolute, "absolute entry path"),
        (Hostile::SymlinkOutside, "resolves outside the bundle"),
        (Hostile::HardLink, "hard link"),
        (Hostile::Device, "character device"),
        (Hostile::Fifo, "FIFO"),
        (Hostile::Setuid, "setuid and setgid"),
    ];
    for (kind, error) in &cases {
        let bundle = hostile_bundle(&harness, kind);
        harness
            .elastos()
            .args(["bundle", "verify"])
            .arg(&bundle)
            .output()
            .assert_code(0);
        assert_run_refused(&harness, &bundle, error);
    }
}

#[test]
fn a_decompression_bomb_is_refused() {
    let harness = Harness::new(User::Root);
    // 1 GiB + 1 MiB of zeros compress to about 1 MiB; the default limit is 1 GiB unpacked.
    let size: u64 = (1 << 30) + (1 << 20);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, "elastos-probe", std::io::repeat(0).take(size))
            .unwrap();
        tar.finish().unwrap();
    }
    let payload = gz.finish().unwrap();
    let key = PublisherKey::generate().unwrap();
    let manifest = probe_manifest(APP_ID, "elastos-probe", "");
    let sealed = elastos_bundle::seal(manifest.as_bytes(), &payload, &key).unwrap();
    let bomb = harness.write("bomb.bundle", sealed, 0o644);
    assert_run_refused(&harness, &bomb, "decompressed");
}
