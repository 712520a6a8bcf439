//! The ID commands: `elastos id`, `key rotate|revoke`, `ledger show|verify|export|import`,
//! `trust add|remove|list`, `config set`, and the ownership part of `bundle inspect`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use elastos_bundle::{InspectReport, PublisherKey};
use elastos_host::ownership;
use elastos_host::paths::StateDirs;
use elastos_identity::fsutil::Replace;
use elastos_identity::{
    Claim, Ledger, Ownership, OwnershipError, Policy, PublisherId, Record, TrustList, UserId,
    UserKey, DEFAULT_KDF,
};
use serde::Serialize;

use crate::cli::{
    ConfigCommand, ConfigKey, Format, IdCommand, LedgerCommand, PassphraseArg, TrustCommand,
};
use crate::commands::print_json;
use crate::exit;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `elastos id`.
pub fn id(format: Format) -> Result<u8> {
    let state = StateDirs::from_env()?;
    let (key, created) = UserKey::load_or_create(&state.apps.user_keys)?;
    #[derive(Serialize)]
    struct Id {
        user: String,
        key: PathBuf,
        created: bool,
    }
    let report = Id {
        user: key.user_id().to_string(),
        key: state.user_key(),
        created,
    };
    match format {
        Format::Json => print_json(&report)?,
        Format::Text => {
            if created {
                eprintln!("elastos: created your user key at {}", report.key.display());
            }
            println!("{}", report.user);
        }
    }
    Ok(0)
}

/// The environment variable a passphrase is read from when no `--passphrase-file` is given.
const PASSPHRASE_ENV: &str = "ELASTOS_PASSPHRASE";

/// The passphrase of `id export|import`: `--passphrase-file` (its first line), else
/// `ELASTOS_PASSPHRASE`, else a prompt on the terminal without echo (twice when `confirm`).
fn passphrase(source: &PassphraseArg, what: &str, confirm: bool) -> Result<String> {
    if let Some(file) = &source.passphrase_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the passphrase file {}", file.display()))?;
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            bail!(
                "the passphrase file {} has an empty first line; expected the passphrase on it",
                file.display()
            );
        }
        return Ok(line.to_owned());
    }
    if let Some(value) = std::env::var_os(PASSPHRASE_ENV) {
        let value = value
            .into_string()
            .map_err(|_| anyhow::anyhow!("{PASSPHRASE_ENV} is not valid UTF-8"))?;
        if value.is_empty() {
            bail!("{PASSPHRASE_ENV} is set but empty; expected the passphrase");
        }
        return Ok(value);
    }
    let prompt = |text: &str| {
        rpassword::prompt_password(text).with_context(|| {
            format!(
                "no passphrase: cannot prompt on a terminal; expected --passphrase-file FILE or \
                 {PASSPHRASE_ENV}"
            )
        })
    };
    let first = prompt(&format!("Passphrase {what}: "))?;
    if first.is_empty() {
        bail!("the passphrase is empty; expected at least one character");
    }
    if confirm && prompt("Same passphrase again: ")? != first {
        bail!("the two passphrases differ; nothing was written");
    }
    Ok(first)
}

/// `elastos id export|import`.
pub fn id_move(command: IdCommand) -> Result<u8> {
    let state = StateDirs::from_env()?;
    match command {
        IdCommand::Export {
            file,
            passphrase: source,
            format,
        } => {
            let (key, _) = UserKey::load_or_create(&state.apps.user_keys)?;
            let secret = passphrase(&source, "to seal your user key with", true)?;
            let sealed = key.seal_with_passphrase(secret.as_bytes(), DEFAULT_KDF)?;
            elastos_identity::fsutil::write_atomically(&file, &sealed, 0o600, Replace::No)
                .with_context(|| {
                    format!(
                        "cannot write {} (an existing file is never replaced)",
                        file.display()
                    )
                })?;
            #[derive(Serialize)]
            struct Exported {
                user: UserId,
                file: PathBuf,
            }
            let report = Exported {
                user: key.user_id(),
                file,
            };
            match format.format {
                Format::Json => print_json(&report)?,
                Format::Text => println!(
                    "exported user {} to {}; import it on another machine with `elastos id \
                     import {}`",
                    report.user,
                    report.file.display(),
                    report.file.display()
                ),
            }
            Ok(0)
        }
        IdCommand::Import {
            file,
            passphrase: source,
            force,
            format,
        } => {
            let bytes = UserKey::read_export(&file)?;
            let incoming = UserKey::exported_user(&bytes)
                .with_context(|| format!("cannot import {}", file.display()))?;
            // Refused before the passphrase is asked for: the file names its user in clear.
            if let Some(existing) = existing_user_key(&state)? {
                if existing.user_id() != incoming && !force {
                    return Err(replacing_refused(existing.user_id(), incoming));
                }
            }
            let secret = passphrase(&source, &format!("of {}", file.display()), false)?;
            let key =
                UserKey::open_with_passphrase(&bytes, secret.as_bytes()).with_context(|| {
                    format!("cannot import {}; nothing was changed", file.display())
                })?;
            let report = install_user_key(&state, key, force)?;
            match format.format {
                Format::Json => print_json(&report)?,
                Format::Text => {
                    match &report.replaced {
                        None if !report.changed => {
                            println!("user {incoming} is already this machine's user key")
                        }
                        None => println!("imported user {incoming}"),
                        Some(old) => println!("imported user {incoming}, replacing {old}"),
                    }
                    if let Some(kept) = &report.old_key_kept_at {
                        println!("old key:    {}", kept.display());
                    }
                    if let Some(kept) = &report.old_ledger_kept_at {
                        println!(
                            "old ledger: {} ({} records re-signed by the new key)",
                            kept.display(),
                            report.ledger_records
                        );
                    }
                }
            }
            Ok(0)
        }
    }
}

/// What `elastos id import` did.
#[derive(Serialize)]
struct Imported {
    user: UserId,
    /// Whether the key file changed (false: the same key was already here).
    changed: bool,
    /// The different user key it replaced (`--force`).
    replaced: Option<UserId>,
    old_key_kept_at: Option<PathBuf>,
    old_ledger_kept_at: Option<PathBuf>,
    /// Records in the ledger afterwards.
    ledger_records: u64,
}

/// This machine's user key, if it has one.
fn existing_user_key(state: &StateDirs) -> Result<Option<UserKey>> {
    match UserKey::load(&state.user_key()) {
        Ok(existing) => Ok(Some(existing)),
        Err(elastos_identity::KeyError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(error) => Err(anyhow::Error::from(error)
            .context("cannot read this machine's user key; nothing was changed")),
    }
}

/// The refusal to replace user key `existing` by `incoming` without `--force`.
fn replacing_refused(existing: UserId, incoming: UserId) -> anyhow::Error {
    anyhow::anyhow!(
        "this machine already has user key {existing}, and the export holds {incoming}: \
         importing would replace it (your ledger would be re-signed by the new key, and whatever \
         the old key encrypted on your cloud disk would stay readable only with it). Nothing was \
         changed; to replace it, run again with --force (the old key and ledger are kept beside \
         the new ones)"
    )
}

/// Makes `key` this machine's user key. Over a different key only with `force`: the old key and
/// ledger are moved aside (never deleted) and the old ledger's records are imported into a new
/// ledger signed by the new key, so every app id keeps its owner. The old ledger is exported
/// before anything moves, so a failure there changes nothing.
fn install_user_key(state: &StateDirs, key: UserKey, force: bool) -> Result<Imported> {
    let dir = &state.apps.user_keys;
    let path = state.user_key();
    let existing = existing_user_key(state)?;
    let mut report = Imported {
        user: key.user_id(),
        changed: true,
        replaced: None,
        old_key_kept_at: None,
        old_ledger_kept_at: None,
        ledger_records: 0,
    };
    let Some(existing) = existing else {
        key.save(dir, Replace::No)?;
        if Ledger::exists(&state.apps.ledger) {
            // A ledger without its key: it cannot be re-signed; `ledger verify` tells the rest.
            tracing::warn!(ledger = %state.apps.ledger.display(), "a ledger exists but its user key was missing");
        }
        return Ok(report);
    };
    if existing.user_id() == key.user_id() {
        report.changed = false;
        return Ok(report);
    }
    if !force {
        return Err(replacing_refused(existing.user_id(), key.user_id()));
    }
    let time = now();
    report.replaced = Some(existing.user_id());
    let ledger_dir = &state.apps.ledger;
    let pending_export = ledger_dir.with_file_name(format!("ledger.rekey-{time}.json"));
    let had_ledger = Ledger::exists(ledger_dir);
    if had_ledger {
        let mut old = Ledger::open(ledger_dir, UserKey::from_secret_seed(existing.export_secret_seed()))
            .context("cannot open the ledger with the old user key to carry its records over; nothing was changed")?;
        old.export(&pending_export)
            .context("cannot export the old ledger; nothing was changed")?;
    }
    let kept_key = path.with_file_name(format!("{}.replaced-{time}", UserKey::FILE_NAME));
    std::fs::rename(&path, &kept_key)
        .with_context(|| format!("cannot move the old key to {}", kept_key.display()))?;
    report.old_key_kept_at = Some(kept_key);
    key.save(dir, Replace::No)?;
    if had_ledger {
        let kept_ledger = ledger_dir.with_file_name(format!("ledger.replaced-{time}"));
        std::fs::rename(ledger_dir, &kept_ledger)
            .with_context(|| format!("cannot move the old ledger to {}", kept_ledger.display()))?;
        report.old_ledger_kept_at = Some(kept_ledger.clone());
        let mut ledger = Ledger::create(
            ledger_dir,
            UserKey::from_secret_seed(key.export_secret_seed()),
        )?;
        ledger.import(&pending_export).with_context(|| {
            format!(
                "cannot carry the old ledger's records over to the new key; the old ledger is \
                 at {} and its export at {}",
                kept_ledger.display(),
                pending_export.display()
            )
        })?;
        report.ledger_records = ledger.size();
        let _ = std::fs::remove_file(&pending_export);
    }
    Ok(report)
}

#[derive(Serialize)]
struct KeyChange {
    record: String,
    ledger_size: u64,
    publisher: PublisherId,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_key_kept_at: Option<PathBuf>,
}

fn print_key_change(change: &KeyChange, what: &str, format: Format) -> Result<()> {
    match format {
        Format::Json => print_json(change),
        Format::Text => {
            println!("{what}\nrecord:    {}", change.record);
            if let Some(old) = &change.old_key_kept_at {
                println!("old key:   {}", old.display());
            }
            Ok(())
        }
    }
}

fn load_key(path: &Path) -> Result<PublisherKey> {
    PublisherKey::load(path)
        .with_context(|| format!("cannot load publisher key {}", path.display()))
}

/// `elastos key rotate`: the new key is written beside the old one first, the rotation record
/// appended, then the old key moved aside and the new one put in its place, so a failure at any
/// step loses no key.
pub fn rotate(key: Option<PathBuf>, format: Format) -> Result<u8> {
    let state = StateDirs::from_env()?;
    let path = key.unwrap_or_else(|| state.publisher_key());
    let old = load_key(&path)?;
    let new = PublisherKey::generate()?;
    let time = now();
    let pending = PathBuf::from(format!("{}.new-{time}", path.display()));
    new.save(&pending, false)
        .with_context(|| format!("cannot write the new key to {}", pending.display()))?;
    let mut ledger = ownership::open_ledger(&state.apps)?;
    let record = Record::rotate(old.signing_key(), new.signing_key(), time);
    let id = record.id();
    if let Err(error) = ledger.append(record) {
        // Nothing was recorded: the new key is of no use.
        let _ = std::fs::remove_file(&pending);
        return Err(error.into());
    }
    let kept = PathBuf::from(format!("{}.old-{time}", path.display()));
    std::fs::rename(&path, &kept)
        .with_context(|| format!("cannot move the old key to {}", kept.display()))?;
    std::fs::rename(&pending, &path)
        .with_context(|| format!("cannot move the new key to {}", path.display()))?;
    let change = KeyChange {
        record: id.to_string(),
        ledger_size: ledger.size(),
        publisher: PublisherId(*new.publisher_id().as_bytes()),
        old_key_kept_at: Some(kept),
    };
    let what = format!(
        "rotated publisher {} to {}",
        old.publisher_id(),
        new.publisher_id()
    );
    print_key_change(&change, &what, format)?;
    Ok(0)
}

/// `elastos key revoke`.
pub fn revoke(
    key: Option<PathBuf>,
    publisher: Option<PublisherId>,
    from: u64,
    format: Format,
) -> Result<u8> {
    let state = StateDirs::from_env()?;
    let path = key.unwrap_or_else(|| state.publisher_key());
    let signer = load_key(&path)?;
    let revoked = publisher.unwrap_or(PublisherId(*signer.publisher_id().as_bytes()));
    let mut ledger = ownership::open_ledger(&state.apps)?;
    let record = Record::revoke(signer.signing_key(), revoked, from, now());
    let id = record.id();
    ledger.append(record)?;
    let change = KeyChange {
        record: id.to_string(),
        ledger_size: ledger.size(),
        publisher: revoked,
        old_key_kept_at: None,
    };
    let what = format!("revoked publisher {revoked} for signatures from {from} (unix seconds)");
    print_key_change(&change, &what, format)?;
    Ok(0)
}

/// One line of `elastos ledger show` for people.
fn describe(record: &Record) -> String {
    match &record.claim {
        Claim::Bind {
            app_id,
            publisher,
            first_version,
            ..
        } => format!("app {app_id} bound to publisher {publisher} (version {first_version})"),
        Claim::BindService {
            service,
            app_id,
            publisher,
            ..
        } => format!("service {service} bound to app {app_id} of publisher {publisher}"),
        Claim::Rotate {
            old_key, new_key, ..
        } => format!("publisher {old_key} rotated to {new_key}"),
        Claim::Revoke { key, from_time, .. } => {
            format!("publisher {key} revoked from {from_time}")
        }
        Claim::Version {
            app_id, version, ..
        } => format!("app {app_id} seen at version {version}"),
    }
}

fn claim_time(claim: &Claim) -> u64 {
    match claim {
        Claim::Bind { time, .. }
        | Claim::BindService { time, .. }
        | Claim::Rotate { time, .. }
        | Claim::Revoke { time, .. }
        | Claim::Version { time, .. } => *time,
    }
}

/// `elastos ledger ...`.
pub fn ledger(command: LedgerCommand) -> Result<u8> {
    let state = StateDirs::from_env()?;
    match command {
        LedgerCommand::Show { format } => {
            let mut ledger = ownership::open_ledger(&state.apps)?;
            let (user, size, root) = (ledger.user_id(), ledger.size(), ledger.root());
            let records = ledger.records()?;
            match format.format {
                Format::Json => {
                    #[derive(Serialize)]
                    struct Show<'a> {
                        user: String,
                        size: u64,
                        root: String,
                        records: &'a [Record],
                    }
                    print_json(&Show {
                        user: user.to_string(),
                        size,
                        root: hex::encode(root),
                        records,
                    })?;
                }
                Format::Text => {
                    println!(
                        "ledger {} of user {user}: {size} records, root {}",
                        state.apps.ledger.display(),
                        hex::encode(root)
                    );
                    for (index, record) in records.iter().enumerate() {
                        println!(
                            "{index:>4}  {:<12}  {:>10}  {}",
                            record.claim.kind(),
                            claim_time(&record.claim),
                            describe(record)
                        );
                    }
                }
            }
            Ok(0)
        }
        LedgerCommand::Verify { format } => {
            let key = UserKey::load(&state.user_key())
                .context("cannot load the user key that signs the ledger")?;
            let report = Ledger::verify_dir(&state.apps.ledger, key.user_id())?;
            match format.format {
                Format::Json => {
                    #[derive(Serialize)]
                    struct Verdict {
                        valid: bool,
                        records: u64,
                        heads: u64,
                        root: String,
                        problems: Vec<String>,
                    }
                    print_json(&Verdict {
                        valid: report.is_ok(),
                        records: report.records,
                        heads: report.heads,
                        root: hex::encode(report.root),
                        problems: report.problems.iter().map(|p| p.to_string()).collect(),
                    })?;
                }
                Format::Text if report.is_ok() => {
                    println!("{}: {report}", state.apps.ledger.display())
                }
                Format::Text => eprintln!("{}: INVALID: {report}", state.apps.ledger.display()),
            }
            Ok(if report.is_ok() { 0 } else { exit::INVALID })
        }
        LedgerCommand::Export { file } => {
            let mut ledger = ownership::open_ledger(&state.apps)?;
            ledger
                .export(&file)
                .with_context(|| format!("cannot export the ledger to {}", file.display()))?;
            println!("exported {} records to {}", ledger.size(), file.display());
            Ok(0)
        }
        LedgerCommand::Import { file, format } => {
            let mut ledger = ownership::open_ledger(&state.apps)?;
            let report = ledger.import(&file)?;
            #[derive(Serialize)]
            struct Imported {
                added: u64,
                already_known: u64,
                size: u64,
            }
            let imported = Imported {
                added: report.added,
                already_known: report.already_known,
                size: ledger.size(),
            };
            match format.format {
                Format::Json => print_json(&imported)?,
                Format::Text => println!(
                    "imported {}: {} records added, {} already known; the ledger has {}",
                    file.display(),
                    imported.added,
                    imported.already_known,
                    imported.size
                ),
            }
            Ok(0)
        }
    }
}

/// `elastos trust ...`.
pub fn trust(command: TrustCommand) -> Result<u8> {
    let state = StateDirs::from_env()?;
    let path = &state.apps.trust;
    let mut list = TrustList::load(path)?;
    match command {
        TrustCommand::Add { publisher, name } => {
            let name = name.unwrap_or_else(|| publisher.to_string()[..16].to_string());
            list.add(publisher, &name)?;
            list.save(path)?;
            println!("trusting publisher {publisher} as {name:?}");
        }
        TrustCommand::Remove { publisher } => {
            if !list.remove(publisher) {
                bail!("publisher {publisher} is not on the trust list; expected one of `elastos trust list`");
            }
            list.save(path)?;
            println!("no longer trusting publisher {publisher}");
        }
        TrustCommand::List { format } => match format.format {
            Format::Json => print_json(&list)?,
            Format::Text => {
                println!("policy: {}", policy_name(list.policy));
                for publisher in &list.publishers {
                    println!("{}  {}", publisher.id, publisher.name);
                }
            }
        },
    }
    Ok(0)
}

/// The CLI's name of a publisher policy.
pub fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::Any => "any",
        Policy::TrustedOnly => "trusted-only",
    }
}

/// `elastos config set`.
pub fn config(command: ConfigCommand) -> Result<u8> {
    let state = StateDirs::from_env()?;
    let ConfigCommand::Set { key, value } = command;
    match key {
        ConfigKey::PolicyPublishers => {
            let policy = match value.as_str() {
                "any" => Policy::Any,
                "trusted-only" => Policy::TrustedOnly,
                other => {
                    bail!("policy.publishers cannot be {other:?}; expected `any` or `trusted-only`")
                }
            };
            let mut list = TrustList::load(&state.apps.trust)?;
            list.policy = policy;
            list.save(&state.apps.trust)?;
            println!("policy.publishers = {}", policy_name(policy));
        }
    }
    Ok(0)
}

/// The ownership of an inspected bundle's app id, from the ledger (never created or written
/// here).
#[derive(Serialize)]
pub struct OwnershipStatus {
    /// `new`, `owned by this publisher`, `owned by another publisher` or `refused`.
    pub status: &'static str,
    /// The explanation.
    pub detail: String,
    /// The ledger's bind record of the app id: its index and id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
}

/// What the ledger says of an inspected bundle; `None` without a valid signed manifest.
pub fn inspect_ownership(report: &InspectReport) -> Result<Option<OwnershipStatus>> {
    let (Some(manifest), Some(publisher), Some(digest)) =
        (&report.manifest, report.publisher, report.digest)
    else {
        return Ok(None);
    };
    if report.signature != elastos_bundle::SignatureStatus::Valid {
        return Ok(None);
    }
    let state = StateDirs::from_env()?;
    if !Ledger::exists(&state.apps.ledger) {
        return Ok(Some(OwnershipStatus {
            status: "new",
            detail: "no ledger yet: the first run or install binds this app id to its publisher"
                .into(),
            entry: None,
        }));
    }
    let mut ledger = ownership::open_ledger(&state.apps)?;
    let offer = ownership::offer(manifest, publisher, digest);
    let (status, detail) = match ledger.check_bundle(&offer, true) {
        Ok(Ownership::New) => (
            "new",
            "no publisher owns this app id yet: the first run or install binds it".to_string(),
        ),
        Ok(Ownership::OwnedBy { owner, bound_to }) => (
            "owned by this publisher",
            format!("bound to {bound_to}, now owned by {owner}"),
        ),
        Err(OwnershipError::OwnedByOther { owner, .. }) => (
            "owned by another publisher",
            format!("owned by {owner}; running or installing this bundle is refused"),
        ),
        Err(error) => ("refused", error.to_string()),
    };
    let entry = ledger
        .records()?
        .iter()
        .enumerate()
        .find(|(_, r)| matches!(r.claim, Claim::Bind { app_id, .. } if app_id == offer.app_id))
        .map(|(index, record)| format!("record {index} ({}): {}", record.id(), describe(record)));
    Ok(Some(OwnershipStatus {
        status,
        detail,
        entry,
    }))
}
