//! The shape rules of `elastos.proto` that one frame can be checked against on its own: service ids
//! of 16 bytes, well-formed names, bounded lists, a sane version range.
//!
//! A broker runs [`check_client_frame`] on every decoded frame before acting on it and answers a
//! failure with INVALID_ARGUMENT; what needs the broker's state (permissions, whether a service
//! exists, duplicate ids, per-connection counts) is the broker's to check.

use std::collections::HashSet;

use crate::v1::client_frame::Body;
use crate::v1::ClientFrame;

/// Length of a service id (and of an app id): a UUID's 16 bytes in RFC 9562 order, the order
/// `uuid::Uuid::from_slice` reads.
pub const SERVICE_ID_LEN: usize = 16;
/// Longest method or topic name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Most methods one `Register` may declare.
pub const MAX_METHODS: usize = 256;
/// Most topics one `Register` may declare.
pub const MAX_TOPICS: usize = 256;

/// Why a decoded [`ClientFrame`] breaks a shape rule. Each variant names the offending field as
/// `Message.field`; none quotes the app's bytes back, which may be long and hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidFrame {
    /// A service id that is not [`SERVICE_ID_LEN`] bytes.
    #[error("{field} is {len} bytes; expected a {SERVICE_ID_LEN}-byte UUID")]
    ServiceIdLength {
        /// The field, like `"Call.service_id"`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A method or topic name that is empty or longer than [`MAX_NAME_LEN`].
    #[error("{field} is {len} bytes; expected 1 to {MAX_NAME_LEN}")]
    NameLength {
        /// The field, like `"Register.methods"`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A method or topic name with a byte outside `A-Z a-z 0-9 _ . - /`.
    #[error(
        "{field} has byte {byte:#04x} at offset {offset}; \
         expected only ASCII letters, digits and _ . - /"
    )]
    NameByte {
        /// The field, like `"Subscribe.topic"`.
        field: &'static str,
        /// The first offending byte.
        byte: u8,
        /// Its offset in the name.
        offset: usize,
    },
    /// A list longer than its limit.
    #[error("{field} has {count} entries; expected at most {max}")]
    TooMany {
        /// The field, like `"Register.topics"`.
        field: &'static str,
        /// Entries in the list.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A name listed twice.
    #[error("{field} lists entry {index} twice; expected distinct names")]
    Duplicate {
        /// The field, like `"Register.methods"`.
        field: &'static str,
        /// Index of the second occurrence.
        index: usize,
    },
    /// A `ClientHello` offering no version: `min_version` 0 or above `max_version`.
    #[error("ClientHello offers versions {min}..={max}; expected 1 <= min_version <= max_version")]
    VersionRange {
        /// `min_version`.
        min: u32,
        /// `max_version`.
        max: u32,
    },
}

/// Checks every shape rule of `frame` that needs no broker state. A frame without a body passes
/// here: [`FrameDecoder`](crate::FrameDecoder) has already refused it.
pub fn check_client_frame(frame: &ClientFrame) -> Result<(), InvalidFrame> {
    let Some(body) = &frame.body else {
        return Ok(());
    };
    match body {
        Body::Hello(hello) => {
            if !hello.is_well_formed() {
                return Err(InvalidFrame::VersionRange {
                    min: hello.min_version,
                    max: hello.max_version,
                });
            }
        }
        Body::Register(register) => {
            service_id("Register.service_id", &register.service_id)?;
            names("Register.methods", &register.methods, MAX_METHODS)?;
            names("Register.topics", &register.topics, MAX_TOPICS)?;
        }
        Body::Unregister(unregister) => {
            service_id("Unregister.service_id", &unregister.service_id)?
        }
        Body::Lookup(lookup) => service_id("Lookup.service_id", &lookup.service_id)?,
        Body::Call(call) => {
            service_id("Call.service_id", &call.service_id)?;
            name("Call.method", &call.method)?;
        }
        Body::Subscribe(subscribe) => {
            service_id("Subscribe.service_id", &subscribe.service_id)?;
            name("Subscribe.topic", &subscribe.topic)?;
        }
        Body::Unsubscribe(unsubscribe) => {
            service_id("Unsubscribe.service_id", &unsubscribe.service_id)?;
            name("Unsubscribe.topic", &unsubscribe.topic)?;
        }
        Body::Publish(publish) => {
            service_id("Publish.service_id", &publish.service_id)?;
            name("Publish.topic", &publish.topic)?;
        }
        Body::Watch(watch) => service_id("Watch.service_id", &watch.service_id)?,
        Body::Unwatch(unwatch) => service_id("Unwatch.service_id", &unwatch.service_id)?,
        // Ids and opaque payloads only; a `Reply` without an outcome is the broker's to turn into
        // INTERNAL for the caller, not a malformed frame.
        Body::Cancel(_) | Body::Reply(_) => {}
    }
    Ok(())
}

fn service_id(field: &'static str, id: &[u8]) -> Result<(), InvalidFrame> {
    if id.len() == SERVICE_ID_LEN {
        Ok(())
    } else {
        Err(InvalidFrame::ServiceIdLength {
            field,
            len: id.len(),
        })
    }
}

fn name(field: &'static str, name: &str) -> Result<(), InvalidFrame> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(InvalidFrame::NameLength {
            field,
            len: name.len(),
        });
    }
    let allowed = |byte: &u8| byte.is_ascii_alphanumeric() || b"_.-/".contains(byte);
    match name.bytes().enumerate().find(|(_, byte)| !allowed(byte)) {
        Some((offset, byte)) => Err(InvalidFrame::NameByte {
            field,
            byte,
            offset,
        }),
        None => Ok(()),
    }
}

fn names(field: &'static str, list: &[String], max: usize) -> Result<(), InvalidFrame> {
    if list.len() > max {
        return Err(InvalidFrame::TooMany {
            field,
            count: list.len(),
            max,
        });
    }
    let mut seen = HashSet::with_capacity(list.len());
    for (index, entry) in list.iter().enumerate() {
        name(field, entry)?;
        if !seen.insert(entry.as_str()) {
            return Err(InvalidFrame::Duplicate { field, index });
        }
    }
    Ok(())
}
