//! Who may use an app id, its home and its services: the ID ledger (`elastos-identity`), asked
//! before every start ([`crate::apps::prepare`]) and every install.
//!
//! Trust on first use: the first verified bundle seen with an app id binds the id to its
//! publisher, and the first app to provide a service UUID owns it. Later bundles of another
//! publisher are refused ([`AppError::Ownership`]); services the app does not own are withheld
//! from its broker identity (so the broker core refuses their registration) or, at install,
//! refuse the install.

use std::fs;
use std::path::Path;

use elastos_bundle::{BundleDigest, PublisherId as BundlePublisher};
use elastos_identity::{Ledger, Offer, Ownership, OwnershipError, PublisherId, TrustList, UserKey};
use elastos_policy::Manifest;
use uuid::Uuid;

use crate::apps::{AppDirs, AppError};

/// What [`admit`] does besides deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Decide and record: bind a new app id, record a higher version and the services the app
    /// is the first to provide. A start or an install.
    Record {
        /// Accept a version older than the highest one seen (`--allow-downgrade`).
        allow_downgrade: bool,
        /// What to do when the app provides a service another app owns.
        foreign_services: ForeignServices,
    },
    /// Decide only; nothing is written (`elastos policy show`).
    CheckOnly,
}

/// What to do with services the manifest lists in `provides` that another app owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignServices {
    /// Refuse the bundle (install: an installed app would be activated for them).
    Refuse,
    /// Start the app without them: its broker identity omits them, so the broker refuses their
    /// registration (a start).
    Withhold,
}

/// A bundle the ledger accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The key the app's home is keyed by: the publisher its id was first bound to (it stays
    /// the same across rotations of that publisher's key).
    pub home_owner: PublisherId,
    /// The services of the manifest this app owns (or is the first to provide).
    pub provides: Vec<Uuid>,
}

/// Loads (on first use: makes) the user key and opens the ledger, creating it when there is
/// none and no app state exists. A missing ledger beside existing app state (publisher-keyed
/// homes, installed bundles) is refused: every binding was lost.
pub fn open_ledger(dirs: &AppDirs) -> Result<Ledger, AppError> {
    let (key, created) = UserKey::load_or_create(&dirs.user_keys)?;
    if created {
        tracing::warn!(
            user = %key.user_id(),
            dir = %dirs.user_keys.display(),
            "created your user key (elastos id); it signs your ownership ledger"
        );
    }
    // Only looked at when the ledger is missing: a warm start never lists the homes.
    let state_exists = !Ledger::exists(&dirs.ledger) && app_state_exists(dirs);
    Ledger::open_for_run(&dirs.ledger, key, state_exists)
        .map_err(|source| AppError::Ledger(Box::new(source)))
}

/// Whether state from earlier runs exists that the ledger's bindings protect: a
/// publisher-keyed home or an installed bundle. Homes from before publisher-keyed homes
/// (`homes/<app-id>`) do not count: no bundle reaches them any more.
fn app_state_exists(dirs: &AppDirs) -> bool {
    let any = |dir: &Path, wanted: &dyn Fn(&str) -> bool| {
        fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_str().is_some_and(wanted))
        })
    };
    any(&dirs.homes, &|name| {
        name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
    }) || any(&dirs.installed, &|name| name.ends_with(".bundle"))
}

/// The ledger's view of a verified bundle: its manifest, signer and digest.
pub fn offer(manifest: &Manifest, publisher: BundlePublisher, digest: BundleDigest) -> Offer {
    Offer {
        app_id: manifest.id(),
        publisher: PublisherId(*publisher.as_bytes()),
        version: manifest.version().to_string(),
        digest: *digest.as_bytes(),
        // Bundles carry no signing time yet.
        signed_at: None,
    }
}

/// Decides whether the verified bundle (`manifest`, signed by `publisher`) may run (or be installed): its
/// publisher owns its app id (or nobody does yet), its key is neither revoked nor rotated away,
/// and it is no downgrade (unless allowed). With [`Admission::Record`], the trust policy must
/// also allow its publisher, and the run and the services it is the first to provide are
/// recorded.
pub fn admit(
    dirs: &AppDirs,
    bundle: &Path,
    manifest: &Manifest,
    publisher: BundlePublisher,
    digest: BundleDigest,
    admission: Admission,
) -> Result<Admitted, AppError> {
    let offer = &self::offer(manifest, publisher, digest);
    let provides = manifest.provides();
    let ledger = &mut open_ledger(dirs)?;
    let refused = |source| AppError::Ownership {
        bundle: bundle.into(),
        source: Box::new(source),
    };
    let allow_downgrade = matches!(
        admission,
        Admission::Record {
            allow_downgrade: true,
            ..
        }
    );
    let ownership = ledger
        .check_bundle(offer, allow_downgrade)
        .map_err(refused)?;
    let home_owner = match ownership {
        Ownership::New => offer.publisher,
        Ownership::OwnedBy { bound_to, .. } => bound_to,
    };
    let mut owned = Vec::with_capacity(provides.len());
    for &service in provides {
        match ledger.check_service(service, offer.app_id, offer.publisher) {
            Ok(_) => owned.push(service),
            Err(source @ OwnershipError::ServiceOwnedByOther { .. }) => match admission {
                Admission::Record {
                    foreign_services: ForeignServices::Refuse,
                    ..
                } => return Err(refused(source)),
                _ => tracing::warn!(
                    app = %offer.app_id,
                    "service withheld from the app, the broker will refuse its registration: {source}"
                ),
            },
            Err(source) => return Err(refused(source)),
        }
    }
    if admission == Admission::CheckOnly {
        return Ok(Admitted {
            home_owner,
            provides: owned,
        });
    }
    // The trust policy decides what runs, not what may be looked at.
    let trust = TrustList::load(&dirs.trust)?;
    let trusted = trust.allows(offer.publisher, &ledger.predecessors(offer.publisher))?;
    if ownership == Ownership::New {
        if trusted.is_none() {
            tracing::warn!(
                "first run of app {} by publisher {}, which is not on your trust list: it now owns \
                 this app id on this machine (hint: `elastos trust add {}` to trust it, `elastos \
                 config set policy.publishers trusted-only` to run trusted publishers only)",
                offer.app_id,
                offer.publisher,
                offer.publisher
            );
        }
        let legacy = dirs.homes.join(offer.app_id.to_string());
        if legacy.is_dir() {
            tracing::warn!(
                "{} is a home from before homes were keyed by publisher; it is left alone: move \
                 its contents to {} if it belongs to publisher {}",
                legacy.display(),
                home_dir(dirs, home_owner, offer.app_id).display(),
                offer.publisher
            );
        }
    }
    ledger.record_run(offer).map_err(refused)?;
    for &service in &owned {
        ledger
            .record_service(service, offer.app_id, offer.publisher)
            .map_err(refused)?;
    }
    Ok(Admitted {
        home_owner,
        provides: owned,
    })
}

/// The home of app `app_id` whose id was first bound to `owner`: `homes/<owner>/<app-id>`, so
/// that no home is ever shared by two publishers, even when the ledger is lost.
pub fn home_dir(dirs: &AppDirs, owner: PublisherId, app_id: Uuid) -> std::path::PathBuf {
    dirs.homes.join(owner.to_string()).join(app_id.to_string())
}
