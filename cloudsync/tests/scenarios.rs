//! Golden scenario tests in the style of rclone bisync's test data: each scenario in
//! `tests/scenarios.txt` sets up two devices (A and B, each with its own state directory and
//! home) on one local-directory store, changes each side, syncs in a given order, and states
//! the expected trees on both sides and what the store's history holds. After every scenario
//! the store is searched for every file name and file content written: none may appear.
//!
//! The language, one command per line (`#` comments):
//! - `=== NAME` starts a scenario.
//! - `A write PATH TEXT` (TEXT `@rand(SIZE,SEED)`: pseudo-random bytes), `A append PATH TEXT`,
//!   `A patch PATH OFFSET TEXT` (overwrite in place), `A rm PATH`, `A rmrf PATH`,
//!   `A mkdir PATH`, `A mv FROM TO`, `A chmod MODE PATH`, `A ln TARGET PATH`, `A touch PATH`,
//!   `A wipe` (the whole home is gone: a lost cache), `A empty` (the home is emptied).
//! - `sync A`, `sync A confirm` (confirms a mass delete), `sync A fails KIND` (the error's
//!   variant name), `restore A [PATH] [at VERSION]`.
//! - `expect A [B]` followed by indented lines: the canonical listing of the home(s)
//!   (`dir/`, `file = content`, `link -> target`, `(mode NNN)` when not 755/644; conflict names
//!   as `name.conflict-A-T.ext`, A or B being the device that made the copy).
//! - `last A FIELD OP N`: a field of A's last sync report (`uploaded`, `downloaded`,
//!   `deleted_locally`, `deleted_remotely`, `conflicts`, `chunks_uploaded`, `busy`,
//!   `committed`, `restored_lost_cache`, `version`), OP one of `=`, `<=`, `>=`.
//! - `versions PATH KIND,KIND,...`: the kinds of PATH's versions in the store, newest first.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use elastos_cloudsync::{SyncOptions, SyncReport};

struct World {
    root: tempfile::TempDir,
    store: std::path::PathBuf,
    devices: BTreeMap<String, Device>,
    labels: BTreeMap<String, String>,
    last: BTreeMap<String, SyncReport>,
    /// Names and contents written, which the store must never show.
    secrets: Vec<Vec<u8>>,
}

fn content(text: &str) -> Vec<u8> {
    if let Some(args) = text
        .strip_prefix("@rand(")
        .and_then(|t| t.strip_suffix(')'))
    {
        let (size, seed) = args.split_once(',').expect("@rand(SIZE,SEED)");
        return random_bytes(size.trim().parse().unwrap(), seed.trim().parse().unwrap());
    }
    text.as_bytes().to_vec()
}

/// Expected lines may name generated content: `big = @rand(3000000,1)`.
fn expected_line(line: &str) -> String {
    match line.split_once(" = @rand(") {
        Some((path, rest)) => {
            let (args, mode) = rest.split_once(')').unwrap();
            format!(
                "{path} = {}{mode}",
                show_content(&content(&format!("@rand({args})")))
            )
        }
        None => line.to_owned(),
    }
}

impl World {
    fn new() -> World {
        let root = tempfile::tempdir().unwrap();
        let store = root.path().join("store");
        let mut devices = BTreeMap::new();
        let mut labels = BTreeMap::new();
        for name in ["A", "B"] {
            let d = device(root.path(), name, &store);
            labels.insert(d.engine.device().to_owned(), name.to_owned());
            std::fs::create_dir_all(&d.home).unwrap();
            devices.insert(name.to_owned(), d);
        }
        World {
            root,
            store,
            devices,
            labels,
            last: BTreeMap::new(),
            secrets: Vec::new(),
        }
    }

    fn home(&self, dev: &str) -> &Path {
        &self.devices[dev].home
    }

    fn run(&mut self, line: &str, block: &[String]) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["sync", dev, rest @ ..] => {
                let opts = SyncOptions {
                    confirm_mass_delete: rest.first() == Some(&"confirm"),
                    ..Default::default()
                };
                let result = self.devices[*dev]
                    .engine
                    .sync(&home_ref(), self.home(dev), &opts);
                match (result, rest) {
                    (Ok(report), ["fails", kind]) => {
                        return Err(format!("expected {kind}, got success {report:?}"))
                    }
                    (Err(e), ["fails", kind]) => {
                        let debug = format!("{e:?}");
                        if !debug.starts_with(kind) {
                            return Err(format!("expected {kind}, got {debug}"));
                        }
                    }
                    (Ok(report), _) => {
                        self.last.insert(dev.to_string(), report);
                    }
                    (Err(e), _) => return Err(format!("sync {dev}: {e}")),
                }
            }
            ["restore", dev, rest @ ..] => {
                let (path, at) = match rest {
                    [] => (None, None),
                    ["at", v] => (None, Some(*v)),
                    [p] => (Some(*p), None),
                    [p, "at", v] => (Some(*p), Some(*v)),
                    _ => return Err(format!("bad restore: {line}")),
                };
                let engine = &self.devices[*dev].engine;
                let at = match at {
                    None => None,
                    Some(v) => {
                        let v: u64 = v.parse().unwrap();
                        // The time of snapshot v, from the versions of the home's root entry
                        // of any path: use the path's own versions.
                        let p = path.ok_or("restore at needs a path")?;
                        let versions = engine
                            .versions(&home_ref(), Path::new(p))
                            .map_err(|e| e.to_string())?;
                        Some(
                            versions
                                .iter()
                                .find(|fv| fv.version <= v)
                                .ok_or("no such version")?
                                .time,
                        )
                    }
                };
                let report = engine
                    .restore(
                        &home_ref(),
                        self.home(dev),
                        path.map(Path::new),
                        at,
                        &SyncOptions::default(),
                    )
                    .map_err(|e| format!("restore: {e}"))?;
                self.last.insert(dev.to_string(), report);
            }
            ["expect", devs @ ..] => {
                let want: Vec<String> = {
                    let mut w: Vec<String> =
                        block.iter().map(|l| expected_line(l.trim())).collect();
                    w.sort();
                    w
                };
                for dev in devs {
                    let got = listing(self.home(dev), &self.labels);
                    if got != want {
                        return Err(format!(
                            "home {dev}:\n  got:\n    {}\n  want:\n    {}",
                            got.join("\n    "),
                            want.join("\n    ")
                        ));
                    }
                }
            }
            ["last", dev, field, op, n] => {
                let r = self.last.get(*dev).ok_or("no sync yet")?;
                let v = match *field {
                    "uploaded" => r.uploaded.len() as u64,
                    "downloaded" => r.downloaded.len() as u64,
                    "deleted_locally" => r.deleted_locally.len() as u64,
                    "deleted_remotely" => r.deleted_remotely.len() as u64,
                    "conflicts" => r.conflicts.len() as u64,
                    "chunks_uploaded" => r.chunks_uploaded,
                    "busy" => r.busy.len() as u64,
                    "committed" => r.committed as u64,
                    "restored_lost_cache" => r.restored_lost_cache as u64,
                    "version" => r.version,
                    other => return Err(format!("unknown field {other}")),
                };
                let n: u64 = n.parse().unwrap();
                let ok = match *op {
                    "=" => v == n,
                    "<=" => v <= n,
                    ">=" => v >= n,
                    _ => return Err(format!("bad op {op}")),
                };
                if !ok {
                    return Err(format!(
                        "last {dev} {field} is {v}, want {op} {n}; report {r:?}"
                    ));
                }
            }
            ["versions", dev, path, kinds] => {
                let got = self.devices[*dev]
                    .engine
                    .versions(&home_ref(), Path::new(path))
                    .map_err(|e| e.to_string())?;
                let got: Vec<String> = got
                    .iter()
                    .map(|v| format!("{:?}", v.kind).to_lowercase())
                    .collect();
                if got.join(",") != *kinds {
                    return Err(format!(
                        "versions of {path}: got {}, want {kinds}",
                        got.join(",")
                    ));
                }
            }
            [dev, op, args @ ..] if self.devices.contains_key(*dev) => {
                self.change(dev, op, args)?
            }
            _ => return Err(format!("unknown command: {line}")),
        }
        Ok(())
    }

    fn change(&mut self, dev: &str, op: &str, args: &[&str]) -> Result<(), String> {
        let home = self.home(dev).to_owned();
        let p = |i: usize| home.join(args[i]);
        for a in args
            .iter()
            .skip(if op == "chmod" || op == "patch" { 1 } else { 0 })
        {
            for part in a.split('/') {
                if part.len() >= 5
                    && !part.starts_with('@')
                    && !part.starts_with('.')
                    && !part.contains("conflict")
                {
                    self.secrets.push(part.as_bytes().to_vec());
                }
            }
        }
        let io = |e: std::io::Error| format!("{dev} {op} {args:?}: {e}");
        match op {
            "write" | "append" => {
                let data = content(&args[1..].join(" "));
                if data.len() >= 6 {
                    self.secrets.push(data[..data.len().min(64)].to_vec());
                }
                if let Some(parent) = p(0).parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(op == "append")
                    .write(true)
                    .truncate(op == "write")
                    .open(p(0))
                    .map_err(io)?;
                std::io::Write::write_all(&mut f, &data).map_err(io)?;
                std::fs::set_permissions(p(0), std::fs::Permissions::from_mode(0o644))
                    .map_err(io)?;
            }
            "patch" => {
                use std::io::{Seek, Write};
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(p(0))
                    .map_err(io)?;
                f.seek(std::io::SeekFrom::Start(args[1].parse().unwrap()))
                    .map_err(io)?;
                f.write_all(args[2..].join(" ").as_bytes()).map_err(io)?;
            }
            "rm" => std::fs::remove_file(p(0)).map_err(io)?,
            "rmrf" => std::fs::remove_dir_all(p(0)).map_err(io)?,
            "mkdir" => {
                std::fs::create_dir_all(p(0)).map_err(io)?;
                std::fs::set_permissions(p(0), std::fs::Permissions::from_mode(0o755))
                    .map_err(io)?;
            }
            "mv" => std::fs::rename(p(0), p(1)).map_err(io)?,
            "chmod" => std::fs::set_permissions(
                p(1),
                std::fs::Permissions::from_mode(u32::from_str_radix(args[0], 8).unwrap()),
            )
            .map_err(io)?,
            "ln" => std::os::unix::fs::symlink(args[0], p(1)).map_err(io)?,
            "touch" => {
                let f = std::fs::File::options()
                    .write(true)
                    .open(p(0))
                    .map_err(io)?;
                f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
                    .map_err(io)?;
            }
            "wipe" => std::fs::remove_dir_all(&home).map_err(io)?,
            "empty" => {
                std::fs::remove_dir_all(&home).map_err(io)?;
                std::fs::create_dir(&home).map_err(io)?;
            }
            _ => return Err(format!("unknown change {op}")),
        }
        Ok(())
    }

    /// The store must show none of the names and contents written.
    fn check_store_is_opaque(&self) -> Result<(), String> {
        for (name, bytes) in store_objects(&self.store) {
            for secret in &self.secrets {
                let s = String::from_utf8_lossy(secret);
                if name.contains(&*s) {
                    return Err(format!("store object name {name} shows {s:?}"));
                }
                if bytes.windows(secret.len()).any(|w| w == &secret[..]) {
                    return Err(format!(
                        "store object {name} contains plaintext {:?}",
                        &s[..s.len().min(20)]
                    ));
                }
            }
        }
        let _ = self.root.path();
        Ok(())
    }
}

struct Scenario {
    name: String,
    lines: Vec<(usize, String, Vec<String>)>,
}

fn parse(text: &str) -> Vec<Scenario> {
    let mut out: Vec<Scenario> = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap().trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("=== ") {
            out.push(Scenario {
                name: name.trim().to_owned(),
                lines: Vec::new(),
            });
        } else if line.starts_with(' ') || line.starts_with('\t') {
            let last = out
                .last_mut()
                .and_then(|s| s.lines.last_mut())
                .expect("indented line after a command");
            last.2.push(line.trim().to_owned());
        } else {
            out.last_mut()
                .expect("a scenario header first")
                .lines
                .push((number + 1, line.to_owned(), Vec::new()));
        }
    }
    out
}

#[test]
fn golden_scenarios() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios.txt"))
            .unwrap();
    let scenarios = parse(&text);
    assert!(
        scenarios.len() >= 30,
        "at least 30 scenarios, found {}",
        scenarios.len()
    );
    let only = std::env::var("SCENARIO").ok();
    let mut failures = Vec::new();
    for scenario in &scenarios {
        if only.as_ref().is_some_and(|o| o != &scenario.name) {
            continue;
        }
        let mut world = World::new();
        let mut failed = false;
        for (number, line, block) in &scenario.lines {
            if let Err(e) = world.run(line, block) {
                failures.push(format!(
                    "{} (scenarios.txt:{number} `{line}`): {e}",
                    scenario.name
                ));
                failed = true;
                break;
            }
        }
        if !failed {
            if let Err(e) = world.check_store_is_opaque() {
                failures.push(format!("{}: {e}", scenario.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        scenarios.len(),
        failures.join("\n\n")
    );
}
