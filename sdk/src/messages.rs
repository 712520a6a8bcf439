//! What the broker tells an app, read from the wire messages: ids as [`Uuid`]s, durations as
//! [`Duration`]s. The reader task converts each frame once; a frame whose ids do not parse is a
//! broker fault that ends the connection ([`Disconnect::Unexpected`]).

use std::time::Duration;

use elastos_proto::v1;
use uuid::Uuid;

use crate::error::Disconnect;

/// An app's identity, attested by the broker from the verified bundle that was started: the app
/// cannot choose it, so a provider may base its own decisions on a caller's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// `app.id` of the manifest.
    pub app_id: Uuid,
    /// `app.name` of the manifest: for display and logs only, it grants nothing (two publishers
    /// may pick the same name).
    pub app_name: String,
    /// The Ed25519 public key whose signature on the bundle was verified.
    pub publisher: [u8; 32],
}

impl Identity {
    pub(crate) fn from_wire(
        identity: Option<v1::PeerIdentity>,
        what: &'static str,
    ) -> Result<Identity, Disconnect> {
        let identity = identity.ok_or(Disconnect::Unexpected {
            what,
            expected: "an identity",
        })?;
        Ok(Identity {
            app_id: uuid(&identity.app_id, "an app id of the wrong length")?,
            app_name: identity.app_name,
            publisher: identity
                .publisher
                .try_into()
                .map_err(|_| Disconnect::Unexpected {
                    what: "a publisher key of the wrong length",
                    expected: "32 bytes",
                })?,
        })
    }
}

/// The limits the broker enforces on this connection (from its welcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body the broker accepts, in bytes.
    pub max_frame_bytes: u32,
    /// Most outgoing calls that may be unanswered at once; one more fails with
    /// [`Code::ResourceExhausted`](crate::Code::ResourceExhausted).
    pub max_calls_in_flight: u32,
    /// Longest deadline of a call; a call without one, or with a longer one, gets this one.
    pub max_deadline: Duration,
}

impl Limits {
    pub(crate) fn from_wire(limits: Option<v1::Limits>) -> Result<Limits, Disconnect> {
        let limits = limits.ok_or(Disconnect::Unexpected {
            what: "a welcome without limits",
            expected: "limits in the welcome",
        })?;
        Ok(Limits {
            max_frame_bytes: limits.max_frame_bytes,
            max_calls_in_flight: limits.max_calls_in_flight,
            max_deadline: Duration::from_millis(limits.max_deadline_ms.into()),
        })
    }
}

/// A service as the broker knows it: who provides it and what it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The service id.
    pub id: Uuid,
    /// The methods its provider registered, in registration order.
    pub methods: Vec<String>,
    /// The event topics its provider registered, in registration order.
    pub topics: Vec<String>,
    /// The provider's attested identity.
    pub provider: Identity,
}

impl ServiceInfo {
    pub(crate) fn from_wire(info: v1::ServiceInfo) -> Result<ServiceInfo, Disconnect> {
        Ok(ServiceInfo {
            id: uuid(&info.service_id, "a service id of the wrong length")?,
            methods: info.methods,
            topics: info.topics,
            provider: Identity::from_wire(info.provider, "a service without a provider")?,
        })
    }
}

/// A call to a service this app provides, as a [`ServiceHandler`](crate::ServiceHandler) gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// The service id, one this app registered.
    pub service: Uuid,
    /// The method, one registered for the service.
    pub method: String,
    /// The caller's request, unchanged by the broker. Untrusted: validate it.
    pub payload: Vec<u8>,
    /// Time left before the caller stops waiting, measured when the broker sent the call. Past
    /// it the broker answers the caller itself and the handler is cancelled.
    pub deadline: Duration,
    /// Who is calling, attested by the broker, which has already checked the caller's
    /// `services.uses`.
    pub caller: Identity,
}

impl IncomingCall {
    pub(crate) fn from_wire(call: v1::IncomingCall) -> Result<IncomingCall, Disconnect> {
        Ok(IncomingCall {
            service: uuid(&call.service_id, "a service id of the wrong length")?,
            method: call.method,
            payload: call.payload,
            deadline: Duration::from_millis(call.deadline_ms.into()),
            caller: Identity::from_wire(call.caller, "an incoming call without a caller")?,
        })
    }
}

/// One event of a subscription: its payload (raw bytes, or a decoded message from
/// [`Events`](crate::typed::Events)) and how many events were lost just before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<P = Vec<u8>> {
    /// The publisher's payload. Untrusted.
    pub payload: P,
    /// Events of this subscription discarded just before this one because this app read too
    /// slowly: by the broker (its queue towards this app was full) plus by the SDK (the
    /// subscription's local queue was full). 0 normally.
    pub dropped: u64,
}

/// Why the provider of a service went away (see [`Service::gone`](crate::Service::gone)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GoneReason {
    /// The provider unregistered the service.
    Unregistered,
    /// The provider's connection closed: it exited, crashed, was killed or broke the protocol.
    Disconnected,
    /// The broker stopped it: idle timeout, `elastos stop` or uninstall.
    Stopped,
}

impl GoneReason {
    /// The reason of a wire `GoneReason`; unknown values read as `Disconnected`, as the
    /// protocol asks.
    pub(crate) fn from_wire(reason: i32) -> GoneReason {
        match v1::GoneReason::try_from(reason) {
            Ok(v1::GoneReason::Unregistered) => GoneReason::Unregistered,
            Ok(v1::GoneReason::Stopped) => GoneReason::Stopped,
            Ok(v1::GoneReason::Disconnected | v1::GoneReason::Unspecified) | Err(_) => {
                GoneReason::Disconnected
            }
        }
    }
}

/// A 16-byte id field, or the broker fault `what`.
pub(crate) fn uuid(bytes: &[u8], what: &'static str) -> Result<Uuid, Disconnect> {
    Uuid::from_slice(bytes).map_err(|_| Disconnect::Unexpected {
        what,
        expected: "a 16-byte UUID",
    })
}
