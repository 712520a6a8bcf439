//! [`Context`], an app's connection to the broker, and the handles its operations return:
//! [`Service`] (a looked-up service, with its provider-gone notification), [`Subscription`] and
//! [`Watch`].

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use elastos_proto::v1;
use elastos_proto::v1::client_frame::Body as ClientBody;
use elastos_proto::{encode_frame, SUPPORTED_VERSIONS};
use futures_core::Stream;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use uuid::Uuid;

use crate::connection::{read_loop, write_loop, FrameReader, Linked, Membership, Provided, Shared};
use crate::error::{Disconnect, Error, Status};
use crate::fd::{ipc_fd_from_env, take_socket};
use crate::handler::ServiceHandler;
use crate::messages::{Event, GoneReason, Identity, Limits, ServiceInfo};

/// An app's connection to the broker. Cheap to clone; every clone is the same connection. The
/// connection closes when the last clone is dropped (or on [`close`](Context::close), which also
/// waits until everything queued is sent).
///
/// Needs a tokio runtime with I/O enabled; a `current_thread` runtime is enough. The SDK spawns
/// two tasks (a reader and a writer) plus one per incoming call.
#[derive(Clone, Debug)]
pub struct Context {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    identity: Identity,
    limits: Limits,
    reader: AbortHandle,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer flushes what is queued, then exits on its own.
        self.shared.end(Disconnect::Closed);
        self.reader.abort();
    }
}

impl Context {
    /// Connects to the broker on the socket the launcher left at `ELASTOS_IPC_FD` (3 when
    /// unset), does the handshake, and returns the connection with the identity the broker
    /// attested. Once per process: the fd becomes this context's (clone the context to share it).
    pub async fn from_env() -> Result<Context, Error> {
        let fd = ipc_fd_from_env()?;
        let stream = take_socket(fd)?;
        stream
            .set_nonblocking(true)
            .map_err(|source| Error::Setup { source })?;
        let stream = UnixStream::from_std(stream).map_err(|source| Error::Setup { source })?;
        Context::connect(stream).await
    }

    /// Does the handshake on a connected socket whose other end is a broker.
    /// [`from_env`](Context::from_env) is what apps use; this is for tests and hosts that hold
    /// the socket themselves.
    pub async fn connect(stream: UnixStream) -> Result<Context, Error> {
        let (read_half, mut write_half) = stream.into_split();
        let mut hello = Vec::new();
        let body = ClientBody::Hello(v1::ClientHello::supported());
        encode_frame(&v1::ClientFrame { body: Some(body) }, &mut hello)
            .expect("a hello is a few bytes");
        write_half
            .write_all(&hello)
            .await
            .map_err(|source| Disconnect::Io {
                op: "write",
                source: Arc::new(source),
            })?;
        let mut reader = FrameReader::new(read_half);
        let welcome = match reader.next().await?.body {
            Some(v1::broker_frame::Body::Welcome(welcome)) => welcome,
            Some(v1::broker_frame::Body::Goodbye(goodbye)) => {
                return Err(Disconnect::Goodbye(Status::from_wire(goodbye.reason)).into())
            }
            _ => {
                return Err(Disconnect::Unexpected {
                    what: "another frame before the welcome",
                    expected: "a welcome first",
                }
                .into())
            }
        };
        if !SUPPORTED_VERSIONS.contains(&welcome.version) {
            return Err(Disconnect::Unexpected {
                what: "a welcome with a version this SDK did not offer",
                expected: "a version from the hello",
            }
            .into());
        }
        let identity = Identity::from_wire(welcome.identity, "a welcome without an identity")?;
        let limits = Limits::from_wire(welcome.limits)?;
        let shared = Shared::new();
        let writer = tokio::spawn(write_loop(Arc::clone(&shared), write_half));
        let reader = tokio::spawn(read_loop(Arc::clone(&shared), reader)).abort_handle();
        Ok(Context {
            inner: Arc::new(Inner {
                shared,
                identity,
                limits,
                reader,
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// This app's identity, as the broker attested it in the handshake.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The limits the broker enforces on this connection.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Provides `service` with `methods` and event `topics`; `handler` answers its calls. The id
    /// must be in the manifest's `services.provides` (else
    /// [`Code::PermissionDenied`](crate::Code::PermissionDenied)); another app already providing
    /// it is [`Code::Unavailable`](crate::Code::Unavailable). Registering the same id again
    /// replaces its methods, topics and handler. The service stays registered until
    /// [`unregister`](Context::unregister) or the end of the connection.
    pub async fn register(
        &self,
        service: Uuid,
        methods: &[&str],
        topics: &[&str],
        handler: impl ServiceHandler,
    ) -> Result<(), Error> {
        let topics: Vec<String> = topics.iter().map(|&topic| topic.to_owned()).collect();
        let provided = Provided {
            handler: Arc::new(handler),
            topics: topics.clone(),
        };
        // Installed before the broker hears of it, so that the first call finds its handler.
        let previous = self.shared().provide(service, provided);
        let register = |request_id| {
            ClientBody::Register(v1::Register {
                request_id,
                service_id: service.as_bytes().to_vec(),
                methods: methods.iter().map(|&method| method.to_owned()).collect(),
                topics,
            })
        };
        match self.shared().request(register, "register").await {
            Ok(_) => Ok(()),
            Err(error) => {
                self.shared().unprovide(service, previous);
                Err(error)
            }
        }
    }

    /// Withdraws a service this app registered: new calls are no longer routed here (calls
    /// already running finish), and linked clients are told the provider went away.
    pub async fn unregister(&self, service: Uuid) -> Result<(), Error> {
        let unregister = |request_id| {
            ClientBody::Unregister(v1::Unregister {
                request_id,
                service_id: service.as_bytes().to_vec(),
            })
        };
        self.shared().request(unregister, "unregister").await?;
        self.shared().unprovide(service, None);
        Ok(())
    }

    /// Finds the provider of `service`, which must be in the manifest's `services.uses` (else
    /// [`Code::PermissionDenied`](crate::Code::PermissionDenied)). If no running app provides
    /// it but an installed bundle does, the broker starts that bundle first
    /// ([`Code::Unavailable`](crate::Code::Unavailable) if it does not register in time); if
    /// nothing provides it, [`Code::NotFound`](crate::Code::NotFound). A lookup is not needed to
    /// call; it starts the provider ahead of time, says who it is, and links to it
    /// ([`Service::gone`]).
    pub async fn lookup(&self, service: Uuid) -> Result<Service, Error> {
        let lookup = |request_id| {
            ClientBody::Lookup(v1::Lookup {
                request_id,
                service_id: service.as_bytes().to_vec(),
            })
        };
        let linked = self.shared().request(lookup, "lookup").await?;
        self.linked(linked)
    }

    fn linked(&self, linked: Option<Linked>) -> Result<Service, Error> {
        let linked = linked.ok_or(Disconnect::Unexpected {
            what: "a successful response without the service",
            expected: "the service",
        })?;
        Ok(Service {
            shared: Arc::clone(self.shared()),
            linked,
        })
    }

    /// Calls `method` of `service` with a request payload and returns the reply payload. The
    /// broker ends every call: with the provider's answer, or with a status of its own
    /// ([`Code::NotFound`](crate::Code::NotFound) for an unknown method,
    /// [`Code::DeadlineExceeded`](crate::Code::DeadlineExceeded) after `deadline`, ...).
    /// `deadline` `None` means the broker's maximum ([`Limits::max_deadline`]), as does anything
    /// longer. Dropping the future cancels the call (the provider is told).
    pub async fn call(
        &self,
        service: Uuid,
        method: &str,
        payload: Vec<u8>,
        deadline: Option<Duration>,
    ) -> Result<Vec<u8>, Error> {
        let call = v1::Call {
            call_id: 0,
            service_id: service.as_bytes().to_vec(),
            method: method.to_owned(),
            payload,
            deadline_ms: deadline.map_or(0, deadline_ms),
        };
        self.shared().call(call).await
    }

    /// Subscribes to the events of `topic` of `service` (in `services.uses`; may start the
    /// provider, like [`lookup`](Context::lookup), and links to it the same way). The
    /// subscription outlives a provider going away and gets the next one's events; it ends when
    /// dropped, or with `None` when the connection ends.
    pub async fn subscribe(&self, service: Uuid, topic: &str) -> Result<Subscription, Error> {
        // Joined before the broker hears of it, so that no event after the response is missed.
        let (membership, events) = self.shared().join_topic(service, topic)?;
        let subscribe = |request_id| {
            ClientBody::Subscribe(v1::Subscribe {
                request_id,
                service_id: service.as_bytes().to_vec(),
                topic: topic.to_owned(),
            })
        };
        let linked = self.shared().request(subscribe, "subscribe").await?;
        Ok(Subscription {
            service: self.linked(linked)?,
            topic: topic.to_owned(),
            events,
            _membership: membership,
        })
    }

    /// Sends an event to the subscribers of `topic` of `service`, which this app registered with
    /// that topic ([`Error::NotPublishable`] otherwise: the broker would close the connection).
    /// Best effort: returns once the event is queued; waits only while more than a few MiB are
    /// queued. [`close`](Context::close) flushes the queue before an app exits.
    pub async fn publish(&self, service: Uuid, topic: &str, payload: Vec<u8>) -> Result<(), Error> {
        self.shared().wait_for_room().await;
        let publish = v1::Publish {
            service_id: service.as_bytes().to_vec(),
            topic: topic.to_owned(),
            payload,
        };
        self.shared().publish(publish, service)
    }

    /// Asks to be told each time `service` (in `services.uses`) goes from no provider to a
    /// provider, and at once if it has one now. Starts nothing, unlike
    /// [`lookup`](Context::lookup): it waits for a provider started some other way.
    pub async fn watch(&self, service: Uuid) -> Result<Watch, Error> {
        let (membership, available) = self.shared().join_watch(service)?;
        let watch = |request_id| {
            ClientBody::Watch(v1::Watch {
                request_id,
                service_id: service.as_bytes().to_vec(),
            })
        };
        self.shared().request(watch, "watch").await?;
        Ok(Watch {
            available,
            _membership: membership,
        })
    }

    /// Resolves when the connection to the broker ends, with the reason. What a provider's
    /// `main` awaits after registering: it serves until the broker stops it.
    pub async fn closed(&self) -> Disconnect {
        self.shared().closed().await
    }

    /// Closes the connection after sending everything queued (replies, events). Other clones of
    /// this context see [`Disconnect::Closed`].
    pub async fn close(self) {
        self.shared().end(Disconnect::Closed);
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(writer) = writer {
            // A writer that panicked or was cancelled has nothing left to flush.
            let _ = writer.await;
        }
    }
}

/// A deadline in whole milliseconds, rounded up so that a short deadline does not become 0 ("none
/// given"), and saturated at the wire field's maximum (the broker clamps it further).
fn deadline_ms(deadline: Duration) -> u32 {
    let millis = deadline.as_nanos().div_ceil(1_000_000).max(1);
    u32::try_from(millis).unwrap_or(u32::MAX)
}

/// A service as [`Context::lookup`] (or [`Context::subscribe`]) found it, linked to its current
/// provider. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    shared: Arc<Shared>,
    linked: Linked,
}

impl Service {
    /// The service id.
    pub fn id(&self) -> Uuid {
        self.linked.info.id
    }

    /// Its methods, topics and attested provider, as of the lookup.
    pub fn info(&self) -> &ServiceInfo {
        &self.linked.info
    }

    /// Resolves when the provider found by the lookup goes away (like Binder's `linkToDeath`),
    /// with the reason; at once if it has already gone. Look the service up again to link to the
    /// next provider. Fails only when the connection to the broker ends first.
    pub async fn gone(&self) -> Result<GoneReason, Error> {
        let mut link = self.linked.link.clone();
        let reason = link.wait_for(Option::is_some).await.map(|reason| *reason);
        match reason {
            Ok(Some(reason)) => Ok(reason),
            // The link was dropped without a reason: the connection ended.
            Ok(None) | Err(_) => Err(self.shared.disconnect().into()),
        }
    }
}

/// The events of one topic. Read them with [`next`](Subscription::next) or as a [`Stream`];
/// dropping the subscription ends it. Holds up to 256 unread events; beyond that, events are
/// dropped and counted in the next one's [`Event::dropped`].
#[derive(Debug)]
pub struct Subscription {
    service: Service,
    topic: String,
    events: mpsc::Receiver<Event>,
    _membership: Membership,
}

impl Subscription {
    /// The next event; `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The service, as of subscribing; [`Service::gone`] tells when its provider goes away
    /// (the subscription stays and gets the next provider's events).
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Stream for Subscription {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Event>> {
        self.events.poll_recv(cx)
    }
}

/// Availability notices of one service, from [`Context::watch`]: one [`ServiceInfo`] each time
/// it gets a provider. Dropping the watch ends it.
#[derive(Debug)]
pub struct Watch {
    available: mpsc::Receiver<ServiceInfo>,
    _membership: Membership,
}

impl Watch {
    /// The next provider of the service; `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<ServiceInfo> {
        self.available.recv().await
    }
}

impl Stream for Watch {
    type Item = ServiceInfo;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<ServiceInfo>> {
        self.available.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_at_least_one_millisecond() {
        assert_eq!(deadline_ms(Duration::ZERO), 1);
        assert_eq!(deadline_ms(Duration::from_micros(1)), 1);
        assert_eq!(deadline_ms(Duration::from_micros(1500)), 2);
        assert_eq!(deadline_ms(Duration::from_secs(2)), 2000);
        assert_eq!(deadline_ms(Duration::MAX), u32::MAX);
    }
}
