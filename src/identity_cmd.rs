//! The ID commands: `elastos id`, `key rotate|revoke`, `ledger show|verify|export|import`,
//! `trust add|remove|list`, `config set`, and the ownership part of `bundle inspect`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use elastos_bundle::{InspectReport, PublisherKey};
use elastos_host::ownership;
use elastos_host::paths::StateDirs;
use elastos_identity::{
    Claim, Ledger, Ownership, OwnershipError, Policy, PublisherId, Record, TrustList, UserKey,
};
use serde::Serialize;

use crate::cli::{ConfigCommand, ConfigKey, Format, LedgerCommand, TrustCommand};
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
