//! A small app-side client that speaks the protocol with elastos-proto's codec over a real
//! socketpair, plus identities, service ids and a scripted provider for the broker tests.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use elastos_broker::{AppIdentity, Broker, ConnectionId, Origin};
use elastos_proto::v1::{self, broker_frame, client_frame, reply, BrokerFrame, ClientFrame};
use elastos_proto::{encode_frame, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use uuid::Uuid;

/// How long a test waits for a frame it expects before failing.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub const ECHO: Uuid = Uuid::from_u128(0xec40_0000_0000_4000_8000_0000_0000_0001);
pub const CLOCK: Uuid = Uuid::from_u128(0xc10c_0000_0000_4000_8000_0000_0000_0002);
pub const SECRET: Uuid = Uuid::from_u128(0x5ec2_0000_0000_4000_8000_0000_0000_0003);
pub const NOBODY: Uuid = Uuid::from_u128(0x0b0d_0000_0000_4000_8000_0000_0000_0004);

pub fn identity(name: &str, provides: &[Uuid], uses: &[Uuid]) -> AppIdentity {
    let seed = name
        .bytes()
        .fold(7u128, |hash, byte| hash * 31 + u128::from(byte));
    AppIdentity {
        app_id: Uuid::from_u128(seed),
        name: name.to_owned(),
        publisher: [name.len() as u8; 32],
        provides: provides.to_vec(),
        uses: uses.to_vec(),
        pins: Vec::new(),
    }
}

/// A provider of ECHO and CLOCK.
pub fn provider_identity() -> AppIdentity {
    identity("echo-service", &[ECHO, CLOCK], &[])
}

/// A client of ECHO and CLOCK (and NOBODY, which nothing provides).
pub fn client_identity(name: &str) -> AppIdentity {
    identity(name, &[], &[ECHO, CLOCK, NOBODY])
}

pub fn id_bytes(service: Uuid) -> Vec<u8> {
    service.as_bytes().to_vec()
}

pub struct Client {
    pub stream: UnixStream,
    decoder: FrameDecoder<BrokerFrame>,
    pub id: ConnectionId,
    pub welcome: Option<v1::ServerHello>,
}

impl Client {
    /// Attaches a socketpair end to `broker` without saying hello.
    pub fn attach(broker: &Broker, identity: AppIdentity, origin: Origin) -> Client {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let id = broker.attach(theirs, identity, origin);
        Client {
            stream: ours,
            decoder: FrameDecoder::new(),
            id,
            welcome: None,
        }
    }

    /// Attaches and completes the handshake.
    pub async fn connect(broker: &Broker, identity: AppIdentity) -> Client {
        let mut client = Self::attach(broker, identity, Origin::Launched { pid: Some(42) });
        client.hello().await;
        client
    }

    /// Wraps a stream whose other end is attached already, and says hello.
    pub async fn over(stream: UnixStream, id: ConnectionId) -> Client {
        let mut client = Client {
            stream,
            decoder: FrameDecoder::new(),
            id,
            welcome: None,
        };
        client.hello().await;
        client
    }

    pub async fn hello(&mut self) {
        self.send(client_frame::Body::Hello(v1::ClientHello::supported()))
            .await;
        match self.recv().await {
            broker_frame::Body::Welcome(welcome) => self.welcome = Some(welcome),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, body: client_frame::Body) {
        let mut bytes = Vec::new();
        encode_frame(&ClientFrame { body: Some(body) }, &mut bytes).expect("encodable");
        self.stream.write_all(&bytes).await.expect("send to broker");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // The broker may close first; a failed write is then expected.
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next frame, or `None` at end of stream. Fails the test after [`PATIENCE`].
    pub async fn next(&mut self) -> Option<broker_frame::Body> {
        tokio::time::timeout(PATIENCE, self.next_unbounded())
            .await
            .expect("a frame from the broker in time")
    }

    async fn next_unbounded(&mut self) -> Option<broker_frame::Body> {
        let mut buf = vec![0; 64 * 1024];
        loop {
            if let Some(frame) = self.decoder.next_frame().expect("valid broker frames") {
                return frame.body;
            }
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.decoder.push(&buf[..read]),
            }
        }
    }

    pub async fn recv(&mut self) -> broker_frame::Body {
        self.next().await.expect("the connection is still open")
    }

    /// Reads until the broker closes; returns the goodbye's reason if one came last.
    pub async fn closed(&mut self) -> Option<v1::Error> {
        let mut goodbye = None;
        while let Some(body) = self.next().await {
            if let broker_frame::Body::Goodbye(bye) = body {
                goodbye = bye.reason;
            }
        }
        goodbye
    }

    pub async fn response(&mut self) -> v1::Response {
        match self.recv().await {
            broker_frame::Body::Response(response) => response,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    pub async fn reply(&mut self) -> v1::Reply {
        match self.recv().await {
            broker_frame::Body::Reply(reply) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    pub async fn register(
        &mut self,
        request_id: u64,
        service: Uuid,
        methods: &[&str],
        topics: &[&str],
    ) -> v1::Response {
        self.send(client_frame::Body::Register(v1::Register {
            request_id,
            service_id: id_bytes(service),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
        }))
        .await;
        self.response().await
    }

    pub async fn lookup(&mut self, request_id: u64, service: Uuid) -> v1::Response {
        self.send(client_frame::Body::Lookup(v1::Lookup {
            request_id,
            service_id: id_bytes(service),
        }))
        .await;
        self.response().await
    }

    pub async fn watch(&mut self, request_id: u64, service: Uuid) -> v1::Response {
        self.send(client_frame::Body::Watch(v1::Watch {
            request_id,
            service_id: id_bytes(service),
        }))
        .await;
        self.response().await
    }

    pub async fn send_call(
        &mut self,
        call_id: u64,
        service: Uuid,
        method: &str,
        payload: &[u8],
        deadline_ms: u32,
    ) {
        self.send(client_frame::Body::Call(v1::Call {
            call_id,
            service_id: id_bytes(service),
            method: method.to_owned(),
            payload: payload.to_vec(),
            deadline_ms,
        }))
        .await;
    }

    /// Calls and waits for the reply.
    pub async fn call(
        &mut self,
        call_id: u64,
        service: Uuid,
        method: &str,
        payload: &[u8],
    ) -> v1::Reply {
        self.send_call(call_id, service, method, payload, 0).await;
        self.reply().await
    }

    pub async fn subscribe(&mut self, request_id: u64, service: Uuid, topic: &str) -> v1::Response {
        self.send(client_frame::Body::Subscribe(v1::Subscribe {
            request_id,
            service_id: id_bytes(service),
            topic: topic.to_owned(),
        }))
        .await;
        self.response().await
    }

    pub async fn publish(&mut self, service: Uuid, topic: &str, payload: &[u8]) {
        self.send(client_frame::Body::Publish(v1::Publish {
            service_id: id_bytes(service),
            topic: topic.to_owned(),
            payload: payload.to_vec(),
        }))
        .await;
    }

    pub async fn incoming(&mut self) -> v1::IncomingCall {
        match self.recv().await {
            broker_frame::Body::IncomingCall(call) => call,
            other => panic!("expected an incoming call, got {other:?}"),
        }
    }

    pub async fn answer(&mut self, call_id: u64, outcome: Option<reply::Outcome>) {
        self.send(client_frame::Body::Reply(v1::Reply { call_id, outcome }))
            .await;
    }
}

/// The status of a failed response or reply; `Ok` for success.
pub fn status_of_response(response: &v1::Response) -> v1::Status {
    match &response.error {
        None => v1::Status::Ok,
        Some(error) => error.status(),
    }
}

pub fn status_of_reply(reply: &v1::Reply) -> v1::Status {
    match &reply.outcome {
        Some(reply::Outcome::Payload(_)) => v1::Status::Ok,
        Some(reply::Outcome::Error(error)) => error.status(),
        None => v1::Status::Unspecified,
    }
}

pub fn payload_of(reply: &v1::Reply) -> &[u8] {
    match &reply.outcome {
        Some(reply::Outcome::Payload(payload)) => payload,
        other => panic!("expected a payload, got {other:?}"),
    }
}

/// What the scripted provider does with a call, by method name:
/// - `say`: replies with the payload;
/// - `slow`: never replies (waits for the cancel);
/// - `empty`: replies with neither payload nor error;
/// - `ok_error`: replies with an error of status OK (which a provider may not send);
/// - `reject`: replies INVALID_ARGUMENT.
pub const METHODS: &[&str] = &["say", "slow", "empty", "ok_error", "reject"];

/// Registers ECHO (with METHODS and topic `said`) on `provider` and serves it until the broker
/// closes the connection; cancels it receives are sent to `cancels`.
pub async fn serve_echo(
    mut provider: Client,
    cancels: Option<tokio::sync::mpsc::UnboundedSender<u64>>,
) {
    let registered = provider.register(1, ECHO, METHODS, &["said"]).await;
    assert_eq!(
        status_of_response(&registered),
        v1::Status::Ok,
        "{registered:?}"
    );
    while let Some(body) = provider.next_unbounded().await {
        match body {
            broker_frame::Body::IncomingCall(call) => {
                let outcome = match call.method.as_str() {
                    "say" => Some(Some(reply::Outcome::Payload(call.payload))),
                    "slow" => None,
                    "empty" => Some(None),
                    "ok_error" => Some(Some(reply::Outcome::Error(v1::Error {
                        status: v1::Status::Ok as i32,
                        message: "fine, really".into(),
                    }))),
                    _ => Some(Some(reply::Outcome::Error(v1::Error {
                        status: v1::Status::InvalidArgument as i32,
                        message: "bad payload".into(),
                    }))),
                };
                if let Some(outcome) = outcome {
                    provider.answer(call.call_id, outcome).await;
                }
            }
            broker_frame::Body::Cancel(cancel) => {
                if let Some(cancels) = &cancels {
                    let _ = cancels.send(cancel.call_id);
                }
            }
            _ => {}
        }
    }
}

/// A broker and a connected echo provider serving in the background.
pub async fn broker_with_echo(
    config: elastos_broker::BrokerConfig,
) -> (Broker, tokio::sync::mpsc::UnboundedReceiver<u64>) {
    let broker = Broker::new(config, None);
    let provider = Client::connect(&broker, provider_identity()).await;
    let (cancels, cancelled) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(serve_echo(provider, Some(cancels)));
    wait_for_service(&broker, ECHO).await;
    (broker, cancelled)
}

/// Waits until `service` is registered.
pub async fn wait_for_service(broker: &Broker, service: Uuid) {
    let started = tokio::time::Instant::now();
    while !broker.services().iter().any(|snapshot| {
        snapshot.service == service
            && matches!(
                snapshot.state,
                elastos_broker::ServiceState::Registered { .. }
            )
    }) {
        assert!(started.elapsed() < PATIENCE, "{service} never registered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A well-behaved client that keeps calling ECHO and records the slowest round trip, until
/// `stop` is set.
pub fn keep_calling(
    broker: &Broker,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Duration)> {
    let broker = broker.clone();
    tokio::spawn(async move {
        let mut client = Client::connect(&broker, client_identity("steady")).await;
        let (mut calls, mut slowest) = (0usize, Duration::ZERO);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let started = tokio::time::Instant::now();
            let reply = client.call(calls as u64, ECHO, "say", b"ping").await;
            assert_eq!(payload_of(&reply), b"ping");
            slowest = slowest.max(started.elapsed());
            calls += 1;
        }
        (calls, slowest)
    })
}
