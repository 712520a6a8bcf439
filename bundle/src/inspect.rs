//! Describing a bundle without requiring it to be valid, for `elastos bundle inspect`.

use elastos_policy::Manifest;
use serde::Serialize;

use crate::format::{parse_manifest, BundleDigest, Integrity, Layout};
use crate::key::PublisherId;

/// Whether a bundle's digest and signature hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum SignatureStatus {
    /// Digest and signature are both valid.
    Valid,
    /// The contents do not match the signed digest: corrupt or tampered with.
    DigestMismatch,
    /// The digest matches but the signature is not the publisher's.
    BadSignature,
    /// The file is not a structurally sound bundle; the reason says why.
    Malformed(String),
}

/// What can be read from a bundle, valid or not. Fields are `None` when the file is too
/// malformed to read them.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    /// Digest and signature status. Anything else in the report is untrusted unless `Valid`.
    pub signature: SignatureStatus,
    /// Format version from the header.
    pub format_version: Option<u16>,
    /// The publisher the bundle claims.
    pub publisher: Option<PublisherId>,
    /// The digest stored in the header.
    pub digest: Option<BundleDigest>,
    /// Size of the compressed payload, in bytes.
    pub payload_size: Option<u64>,
    /// The manifest text, if it is UTF-8.
    pub manifest_text: Option<String>,
    /// The parsed manifest, if it parses.
    pub manifest: Option<Manifest>,
    /// Why the manifest could not be read or parsed.
    pub manifest_error: Option<String>,
}

/// Reports on `bytes` without failing: the same checks as [`crate::verify`], as data.
pub fn inspect(bytes: &[u8]) -> InspectReport {
    let layout = match Layout::parse(bytes) {
        Ok(layout) => layout,
        Err(error) => {
            return InspectReport {
                signature: SignatureStatus::Malformed(error.with_sources()),
                format_version: None,
                publisher: None,
                digest: None,
                payload_size: None,
                manifest_text: None,
                manifest: None,
                manifest_error: None,
            }
        }
    };
    let signature = match layout.integrity(bytes) {
        Integrity::Valid => SignatureStatus::Valid,
        Integrity::DigestMismatch { .. } => SignatureStatus::DigestMismatch,
        Integrity::BadSignature => SignatureStatus::BadSignature,
    };
    let manifest_bytes = &bytes[layout.manifest.clone()];
    let (manifest_text, manifest, manifest_error) = match parse_manifest(manifest_bytes) {
        Ok((text, manifest)) => (Some(text.to_owned()), Some(manifest), None),
        Err(error) => (
            std::str::from_utf8(manifest_bytes).ok().map(str::to_owned),
            None,
            Some(error.with_sources()),
        ),
    };
    InspectReport {
        signature,
        format_version: Some(layout.header.version),
        publisher: Some(layout.header.publisher),
        digest: Some(layout.header.digest),
        payload_size: Some(layout.payload.len() as u64),
        manifest_text,
        manifest,
        manifest_error,
    }
}
