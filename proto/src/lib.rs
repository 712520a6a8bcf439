//! The wire protocol between a jailed elastos app and the broker: the protobuf schema
//! (`elastos.proto`, package `elastos.v1`), its framing on the socket, version negotiation, and the
//! per-frame shape rules.
//!
//! This crate owns one concern: what the bytes on fd 3 mean. The broker and the app SDK both build
//! on it, so they cannot disagree about the format. docs/protocol.md walks through the exchanges
//! with examples; the `.proto` file documents every field (units, defaults, limits, security
//! meaning), and that text is the rustdoc of the generated types in [`v1`].
//!
//! - [`v1`]: the messages, generated at build time by prost from `elastos.proto` (compiled by the
//!   pure-Rust `protox`, so no `protoc` is needed). [`v1::ClientFrame`] is everything an app
//!   sends, [`v1::BrokerFrame`] everything the broker sends.
//! - [`codec`]: length-delimited frames (u32 little-endian length, at most [`MAX_FRAME_LEN`]
//!   bytes) with a sans-IO [`FrameDecoder`] that never panics on input and never allocates for
//!   bytes it has not received, and [`encode_frame`].
//! - [`handshake`]: [`SUPPORTED_VERSIONS`] and [`v1::ClientHello::negotiate`].
//! - [`validate`]: [`check_client_frame`], the rules one frame can be checked against on its own.
//! - [`cloud`]: the built-in service of the cloud disk (`cloud.proto`): its well-known id, topic
//!   and event payload.
//!
//! Not here, on purpose:
//! - No I/O and no async runtime: the caller owns the socket, so the broker (tokio) and a blocking
//!   SDK use the same code.
//! - No identity, permissions or routing: who a connection is comes from the launcher, what it may
//!   do from its manifest, and the broker enforces both. Nothing in the protocol lets an app claim
//!   an identity.
//! - No encryption or message authentication: the socket is a private socketpair made by the
//!   launcher; identity belongs to the connection, not to messages.
//! - No file descriptors: frames carry bytes only, and the broker refuses `SCM_RIGHTS`.
//! - No resynchronisation after a framing error: a peer that sends a bad frame is disconnected.
//! - No typed service stubs: generating clients and server traits from an app's own `.proto` is
//!   the SDK's job; here payloads are opaque bytes.

#![forbid(unsafe_code)]

pub mod codec;
pub mod handshake;
pub mod validate;

/// The protocol's messages, generated from `elastos.proto`. Field and message docs come from the
/// schema's comments.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/elastos.v1.rs"));
}

/// The payloads of the broker's built-in services: services whose provider is the broker itself,
/// not an app. Their ids are fixed, and no app may register them.
pub mod cloud {
    /// The cloud disk's service (`proto/cloud.proto`): an app subscribes to its topic
    /// [`CHANGES_TOPIC`] and hears what each sync changed in its own home.
    pub const CLOUD_SYNC_SERVICE: [u8; 16] = [
        0xc1, 0x0d, 0x5d, 0x15, 0x7e, 0x4b, 0x4f, 0x0a, 0x9c, 0x3e, 0x2b, 0x8d, 0x6a, 0x1f, 0x0e,
        0x57,
    ];
    /// The topic of [`CLOUD_SYNC_SERVICE`] that carries [`v1::HomeChanged`] events.
    pub const CHANGES_TOPIC: &str = "Changes";

    /// Generated from `cloud.proto`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/elastos.cloud.v1.rs"));
    }
}

impl v1::client_frame::Body {
    /// The body's field name in the schema (`hello`, `call`, ...), for logs and errors.
    pub fn name(&self) -> &'static str {
        use v1::client_frame::Body;
        match self {
            Body::Hello(_) => "hello",
            Body::Register(_) => "register",
            Body::Unregister(_) => "unregister",
            Body::Lookup(_) => "lookup",
            Body::Call(_) => "call",
            Body::Cancel(_) => "cancel",
            Body::Reply(_) => "reply",
            Body::Subscribe(_) => "subscribe",
            Body::Unsubscribe(_) => "unsubscribe",
            Body::Publish(_) => "publish",
            Body::Watch(_) => "watch",
            Body::Unwatch(_) => "unwatch",
        }
    }
}

impl v1::broker_frame::Body {
    /// The body's field name in the schema (`welcome`, `reply`, ...), for logs and errors.
    pub fn name(&self) -> &'static str {
        use v1::broker_frame::Body;
        match self {
            Body::Welcome(_) => "welcome",
            Body::Response(_) => "response",
            Body::Reply(_) => "reply",
            Body::IncomingCall(_) => "incoming_call",
            Body::Cancel(_) => "cancel",
            Body::Event(_) => "event",
            Body::ProviderGone(_) => "provider_gone",
            Body::ServiceAvailable(_) => "service_available",
            Body::Goodbye(_) => "goodbye",
        }
    }
}

pub use codec::{encode_frame, Frame, FrameDecoder, FrameError, LENGTH_PREFIX_LEN, MAX_FRAME_LEN};
pub use handshake::SUPPORTED_VERSIONS;
pub use validate::{check_client_frame, InvalidFrame};
