//! The ownership decision `elastos run` makes before it starts a bundle: may this publisher's
//! bundle use this app id (and its home), and may this app offer this service UUID?

use std::path::PathBuf;

use uuid::Uuid;

use crate::key::PublisherId;
use crate::ledger::LedgerError;
use crate::state::State;

/// The facts of a verified bundle that the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The app id of the manifest.
    pub app_id: Uuid,
    /// The key that signed the bundle (verified by the caller).
    pub publisher: PublisherId,
    /// The manifest version.
    pub version: String,
    /// The bundle's SHA-256 digest.
    pub digest: [u8; 32],
    /// When the bundle was signed (unix seconds), if a trustworthy time is known. Bundles of
    /// format 1 carry none: then a revoked or rotated-away key is refused outright.
    pub signed_at: Option<u64>,
}

/// An accepted answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Nobody owns the id yet: the caller may run it, and [`crate::Ledger::record_run`] binds it.
    New,
    /// The id is owned by the offering publisher, or by a key the original owner rotated to.
    OwnedBy {
        /// The key that owns it now: the end of the owner's rotation chain.
        owner: PublisherId,
        /// The key the id was first bound to.
        bound_to: PublisherId,
    },
}

/// A refusal, or a ledger that cannot answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OwnershipError {
    /// The app id belongs to another publisher.
    #[error("app id {app_id} belongs to publisher {owner}, but this bundle is signed by {offered}; expected a bundle by {owner} (or a key it rotated to); hint: an app id is bound to the first publisher seen using it")]
    OwnedByOther {
        /// The app id.
        app_id: Uuid,
        /// Its owner (end of the rotation chain).
        owner: PublisherId,
        /// The bundle's signer.
        offered: PublisherId,
    },
    /// The service UUID belongs to another app or publisher.
    #[error("service {service} belongs to app {owner_app} of publisher {owner}, but app {offered_app} of {offered} offers it; expected the app that first provided it")]
    ServiceOwnedByOther {
        /// The service UUID.
        service: Uuid,
        /// The app that owns it.
        owner_app: Uuid,
        /// That app's publisher (end of its rotation chain).
        owner: PublisherId,
        /// The app offering it now.
        offered_app: Uuid,
        /// Its publisher.
        offered: PublisherId,
    },
    /// The bundle is older than a version already seen.
    #[error("app {app_id}: version {offered} is older than the installed {installed}; expected {installed} or newer; hint: allow a downgrade explicitly if this is intended")]
    Downgrade {
        /// The app id.
        app_id: Uuid,
        /// The highest version seen.
        installed: String,
        /// The bundle's version.
        offered: String,
    },
    /// Two different versions that are not both semver: no guess is made.
    #[error("app {app_id}: cannot tell whether version {offered:?} is older than the installed {installed:?} because they are not both semantic versions; expected semver (MAJOR.MINOR.PATCH); hint: allow a downgrade explicitly to run it anyway")]
    VersionIncomparable {
        /// The app id.
        app_id: Uuid,
        /// The highest version seen.
        installed: String,
        /// The bundle's version.
        offered: String,
    },
    /// The signing key is revoked (for signatures from `since`, or of unknown time).
    #[error("publisher key {key} is revoked for signatures made at or after {since} (unix seconds); expected a bundle signed before that by a key that is not revoked")]
    Revoked {
        /// The revoked key.
        key: PublisherId,
        /// From when.
        since: u64,
    },
    /// The signing key was rotated away: its later signatures are refused.
    #[error("publisher key {old} was rotated to {new}; expected a bundle signed by {new}")]
    RotatedAway {
        /// The bundle's signer.
        old: PublisherId,
        /// The key that replaced it (end of the chain).
        new: PublisherId,
    },
    /// The ledger is gone while other state (app homes) exists: every binding is lost, so any
    /// publisher could claim any app id and its home.
    #[error("the ownership ledger {} is missing but app state exists; expected the ledger that recorded who owns those apps; hint: restore the ledger from a backup or export, or move the app homes away before running apps again", dir.display())]
    LedgerMissing {
        /// The ledger directory.
        dir: PathBuf,
    },
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// How an offered version relates to the installed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VersionOrder {
    Higher,
    Same,
    Lower,
    Incomparable,
}

/// Compares `offered` with `installed`: as semver when both parse, equal strings as the same,
/// anything else as incomparable.
pub(crate) fn compare_versions(installed: &str, offered: &str) -> VersionOrder {
    if installed == offered {
        return VersionOrder::Same;
    }
    match (
        semver::Version::parse(installed),
        semver::Version::parse(offered),
    ) {
        (Ok(installed), Ok(offered)) => match offered.cmp_precedence(&installed) {
            std::cmp::Ordering::Greater => VersionOrder::Higher,
            std::cmp::Ordering::Equal => VersionOrder::Same,
            std::cmp::Ordering::Less => VersionOrder::Lower,
        },
        _ => VersionOrder::Incomparable,
    }
}

impl State {
    /// Refuses a key that is revoked or rotated away at the time it signed (`None`: unknown,
    /// which is refused as soon as any revocation or rotation exists).
    fn check_key(&self, key: PublisherId, signed_at: Option<u64>) -> Result<(), OwnershipError> {
        let Some(state) = self.keys.get(&key) else {
            return Ok(());
        };
        let at_or_after = |t: u64| signed_at.is_none_or(|signed| signed >= t);
        if let Some(since) = state.revoked_from.filter(|&t| at_or_after(t)) {
            return Err(OwnershipError::Revoked { key, since });
        }
        if state.successor.is_some_and(|(_, t, _)| at_or_after(t)) {
            return Err(OwnershipError::RotatedAway {
                old: key,
                new: self.current(key),
            });
        }
        Ok(())
    }

    pub(crate) fn check_bundle(
        &self,
        offer: &Offer,
        allow_downgrade: bool,
    ) -> Result<Ownership, OwnershipError> {
        self.check_key(offer.publisher, offer.signed_at)?;
        let Some(app) = self.apps.get(&offer.app_id) else {
            return Ok(Ownership::New);
        };
        let owner = self.current(app.publisher);
        // Chains are linear (a key has at most one predecessor and one successor), so this is
        // "the offered key is the owner's key, a successor, or a predecessor that signed
        // before its rotation" (check_key refused it otherwise).
        if !self.related(app.publisher, offer.publisher) {
            return Err(OwnershipError::OwnedByOther {
                app_id: offer.app_id,
                owner,
                offered: offer.publisher,
            });
        }
        if !allow_downgrade {
            let refusal = match compare_versions(&app.highest_version, &offer.version) {
                VersionOrder::Higher | VersionOrder::Same => None,
                VersionOrder::Lower => Some(OwnershipError::Downgrade {
                    app_id: offer.app_id,
                    installed: app.highest_version.clone(),
                    offered: offer.version.clone(),
                }),
                VersionOrder::Incomparable => Some(OwnershipError::VersionIncomparable {
                    app_id: offer.app_id,
                    installed: app.highest_version.clone(),
                    offered: offer.version.clone(),
                }),
            };
            if let Some(refusal) = refusal {
                return Err(refusal);
            }
        }
        Ok(Ownership::OwnedBy {
            owner,
            bound_to: app.publisher,
        })
    }

    pub(crate) fn check_service(
        &self,
        service: Uuid,
        app_id: Uuid,
        publisher: PublisherId,
    ) -> Result<Ownership, OwnershipError> {
        self.check_key(publisher, None)?;
        let Some(known) = self.services.get(&service) else {
            return Ok(Ownership::New);
        };
        let owner = self.current(known.publisher);
        if known.app_id != app_id || !self.related(known.publisher, publisher) {
            return Err(OwnershipError::ServiceOwnedByOther {
                service,
                owner_app: known.app_id,
                owner,
                offered_app: app_id,
                offered: publisher,
            });
        }
        Ok(Ownership::OwnedBy {
            owner,
            bound_to: known.publisher,
        })
    }
}
