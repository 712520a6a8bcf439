//! Fake brokers for the SDK's tests, speaking elastos-proto over `UnixStream::pair()`:
//! [`Peer`], a broker end the test drives frame by frame, and [`Router`], a small broker that
//! routes calls and events between several connected contexts.

#![allow(dead_code)] // Each test binary uses a different part.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elastos_proto::v1::broker_frame::Body as BrokerBody;
use elastos_proto::v1::client_frame::Body as ClientBody;
use elastos_proto::v1::{self, BrokerFrame, ClientFrame};
use elastos_proto::{encode_frame, FrameDecoder};
use elastos_sdk::{Context, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub const APP_ID: Uuid = Uuid::from_u128(0x1111_1111_1111_4111_8111_1111_1111_1111);
pub const SERVICE: Uuid = Uuid::from_u128(0x5e5e_5e5e_5e5e_4e5e_8e5e_5e5e_5e5e_5e5e);

pub fn peer_identity(app_id: Uuid, name: &str) -> v1::PeerIdentity {
    v1::PeerIdentity {
        app_id: app_id.as_bytes().to_vec(),
        app_name: name.to_owned(),
        publisher: vec![7; 32],
    }
}

pub fn welcome(app_id: Uuid, name: &str) -> BrokerBody {
    BrokerBody::Welcome(v1::ServerHello {
        version: 1,
        identity: Some(peer_identity(app_id, name)),
        limits: Some(v1::Limits {
            max_frame_bytes: elastos_proto::MAX_FRAME_LEN as u32,
            max_calls_in_flight: 256,
            max_deadline_ms: 30_000,
        }),
    })
}

pub fn service_info(service: Uuid, methods: &[&str], topics: &[&str]) -> v1::ServiceInfo {
    v1::ServiceInfo {
        service_id: service.as_bytes().to_vec(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        provider: Some(peer_identity(Uuid::from_u128(9), "provider")),
    }
}

pub fn error(status: v1::Status, message: &str) -> v1::Error {
    v1::Error {
        status: status.into(),
        message: message.to_owned(),
    }
}

/// The broker end of one connection, driven by the test.
pub struct Peer {
    stream: UnixStream,
    decoder: FrameDecoder<ClientFrame>,
}

impl Peer {
    /// A connected (app socket, broker peer) pair.
    pub fn pair() -> (UnixStream, Peer) {
        let (app, broker) = UnixStream::pair().unwrap();
        (app, Peer::from_stream(broker))
    }

    /// The broker end of an existing socket.
    pub fn from_stream(stream: UnixStream) -> Peer {
        Peer {
            stream,
            decoder: FrameDecoder::new(),
        }
    }

    /// The raw socket, to send what no encoder would.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// A context connected to a peer that answered its hello with a welcome.
    pub async fn connected() -> (Context, Peer) {
        let (app, mut peer) = Peer::pair();
        let (ctx, ()) = tokio::join!(
            async { Context::connect(app).await.unwrap() },
            peer.accept()
        );
        (ctx, peer)
    }

    /// Expects a hello and answers it with a welcome for [`APP_ID`].
    pub async fn accept(&mut self) {
        match self.recv().await {
            ClientBody::Hello(hello) => assert_eq!(hello, v1::ClientHello::supported()),
            other => panic!("expected a hello, got {other:?}"),
        }
        self.send(welcome(APP_ID, "tester")).await;
    }

    pub async fn send(&mut self, body: BrokerBody) {
        let mut bytes = Vec::new();
        encode_frame(&BrokerFrame { body: Some(body) }, &mut bytes).unwrap();
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// The next frame from the app, within [`PATIENCE`].
    pub async fn recv(&mut self) -> ClientBody {
        tokio::time::timeout(PATIENCE, self.recv_or_eof())
            .await
            .expect("the app sent nothing in time")
            .expect("the app closed the connection")
    }

    /// The next frame, or `None` at the end of the stream.
    pub async fn recv_or_eof(&mut self) -> Option<ClientBody> {
        let mut buf = [0; 4096];
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return frame.body;
            }
            let read = self.stream.read(&mut buf).await.unwrap();
            if read == 0 {
                return None;
            }
            self.decoder.push(&buf[..read]);
        }
    }

    /// Asserts that the app sends nothing for a short while.
    pub async fn expect_silence(&mut self) {
        let waited = tokio::time::timeout(Duration::from_millis(100), self.recv_or_eof()).await;
        assert!(waited.is_err(), "the app sent {:?}", waited.unwrap());
    }
}

/// A fake broker routing between contexts: registration, lookup, calls, replies, cancels,
/// subscriptions and events, with no permissions, deadlines or activation. Enough to show that a
/// generated client and server understand each other.
#[derive(Clone, Default)]
pub struct Router {
    state: Arc<Mutex<RouterState>>,
}

#[derive(Default)]
struct RouterState {
    connections: Vec<mpsc::UnboundedSender<BrokerBody>>,
    /// Service id -> (provider connection, its registration).
    providers: HashMap<Vec<u8>, (usize, v1::Register)>,
    /// Routed call id -> (caller connection, caller's call id).
    calls: HashMap<u64, (usize, u64)>,
    next_call: u64,
    /// (service id, topic) -> subscriber connections.
    subscribers: HashMap<(Vec<u8>, String), Vec<usize>>,
}

impl Router {
    /// Connects a new context, named `name`, to the router.
    pub async fn connect(&self, name: &str) -> Context {
        let (app, broker) = UnixStream::pair().unwrap();
        self.attach(broker, name);
        Context::connect(app).await.unwrap()
    }

    /// Serves the broker end of a connection for an app named `name`.
    pub fn attach(&self, broker: UnixStream, name: &str) {
        let (tx, rx) = mpsc::unbounded_channel();
        let index = {
            let mut state = self.state.lock().unwrap();
            state.connections.push(tx);
            state.connections.len() - 1
        };
        let app_id = Uuid::from_u128(index as u128 + 1);
        tokio::spawn(
            self.clone()
                .serve(index, broker, rx, peer_identity(app_id, name)),
        );
    }

    async fn serve(
        self,
        index: usize,
        stream: UnixStream,
        mut outgoing: mpsc::UnboundedReceiver<BrokerBody>,
        identity: v1::PeerIdentity,
    ) {
        let (mut read, mut write) = stream.into_split();
        tokio::spawn(async move {
            while let Some(body) = outgoing.recv().await {
                let mut bytes = Vec::new();
                encode_frame(&BrokerFrame { body: Some(body) }, &mut bytes).unwrap();
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
        let mut decoder = FrameDecoder::<ClientFrame>::new();
        let mut buf = [0; 4096];
        loop {
            while let Some(frame) = decoder.next_frame().unwrap() {
                self.route(index, &identity, frame.body.unwrap());
            }
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(read) => decoder.push(&buf[..read]),
            }
        }
    }

    fn route(&self, from: usize, identity: &v1::PeerIdentity, body: ClientBody) {
        let mut state = self.state.lock().unwrap();
        let send = |state: &RouterState, to: usize, body: BrokerBody| {
            let _ = state.connections[to].send(body);
        };
        let response = |request_id, error, service| {
            BrokerBody::Response(v1::Response {
                request_id,
                error,
                service,
            })
        };
        match body {
            ClientBody::Hello(_) => send(&state, from, welcome_for(identity)),
            ClientBody::Register(register) => {
                let request_id = register.request_id;
                state
                    .providers
                    .insert(register.service_id.clone(), (from, register));
                send(&state, from, response(request_id, None, None));
            }
            ClientBody::Lookup(v1::Lookup {
                request_id,
                service_id,
            }) => {
                let answer = match state.providers.get(&service_id) {
                    Some((_, register)) => response(request_id, None, Some(info_of(register))),
                    None => response(
                        request_id,
                        Some(error(v1::Status::NotFound, "nobody provides it")),
                        None,
                    ),
                };
                send(&state, from, answer);
            }
            ClientBody::Call(call) => {
                let Some((provider, _)) = state.providers.get(&call.service_id) else {
                    let reply = v1::Reply {
                        call_id: call.call_id,
                        outcome: Some(v1::reply::Outcome::Error(error(
                            v1::Status::NotFound,
                            "nobody provides it",
                        ))),
                    };
                    return send(&state, from, BrokerBody::Reply(reply));
                };
                let provider = *provider;
                state.next_call += 1;
                let routed = state.next_call;
                state.calls.insert(routed, (from, call.call_id));
                let incoming = v1::IncomingCall {
                    call_id: routed,
                    service_id: call.service_id,
                    method: call.method,
                    payload: call.payload,
                    deadline_ms: 30_000,
                    caller: Some(identity.clone()),
                };
                send(&state, provider, BrokerBody::IncomingCall(incoming));
            }
            ClientBody::Reply(reply) => {
                if let Some((caller, call_id)) = state.calls.remove(&reply.call_id) {
                    let reply = v1::Reply { call_id, ..reply };
                    send(&state, caller, BrokerBody::Reply(reply));
                }
            }
            ClientBody::Subscribe(subscribe) => {
                let info = state
                    .providers
                    .get(&subscribe.service_id)
                    .map(|(_, register)| info_of(register));
                state
                    .subscribers
                    .entry((subscribe.service_id, subscribe.topic))
                    .or_default()
                    .push(from);
                send(&state, from, response(subscribe.request_id, None, info));
            }
            ClientBody::Publish(publish) => {
                let key = (publish.service_id.clone(), publish.topic.clone());
                for &to in state.subscribers.get(&key).into_iter().flatten() {
                    let event = v1::Event {
                        service_id: publish.service_id.clone(),
                        topic: publish.topic.clone(),
                        payload: publish.payload.clone(),
                        dropped: 0,
                    };
                    send(&state, to, BrokerBody::Event(event));
                }
            }
            other => panic!("the router does not route {other:?}"),
        }
    }
}

fn welcome_for(identity: &v1::PeerIdentity) -> BrokerBody {
    let mut welcome = welcome(Uuid::nil(), "");
    if let BrokerBody::Welcome(hello) = &mut welcome {
        hello.identity = Some(identity.clone());
    }
    welcome
}

fn info_of(register: &v1::Register) -> v1::ServiceInfo {
    v1::ServiceInfo {
        service_id: register.service_id.clone(),
        methods: register.methods.clone(),
        topics: register.topics.clone(),
        provider: Some(peer_identity(Uuid::from_u128(9), "provider")),
    }
}
