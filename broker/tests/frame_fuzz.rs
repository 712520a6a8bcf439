//! Property test of a connection's frame handling: arbitrary byte streams (noise, valid frames of
//! every kind with arbitrary fields, raw length prefixes, in arbitrary chunks) never panic the
//! broker, every such connection ends once its app hangs up, and the broker keeps serving a
//! well-behaved client throughout.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use elastos_broker::{Broker, BrokerConfig, Origin};
use elastos_proto::encode_frame;
use elastos_proto::v1::{self, client_frame, ClientFrame};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Panics anywhere in this test binary, broker tasks included (tokio would swallow those).
static PANICS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone)]
enum Piece {
    Noise(Vec<u8>),
    Prefix(u32),
    Frame(ClientFrame),
}

fn service() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(ECHO.as_bytes().to_vec()),
        Just(CLOCK.as_bytes().to_vec()),
        Just(NOBODY.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..20),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("say".to_owned()),
        Just("slow".to_owned()),
        Just("said".to_owned()),
        "[a-z/._-]{0,6}",
        ".{0,3}",
    ]
}

fn body() -> impl Strategy<Value = client_frame::Body> {
    use client_frame::Body;
    let id = || prop_oneof![0u64..4, any::<u64>()];
    let payload = || prop::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        (0u32..3, 0u32..3).prop_map(|(min_version, max_version)| Body::Hello(v1::ClientHello {
            min_version,
            max_version
        })),
        (
            id(),
            service(),
            prop::collection::vec(name(), 0..3),
            prop::collection::vec(name(), 0..3)
        )
            .prop_map(|(request_id, service_id, methods, topics)| Body::Register(
                v1::Register {
                    request_id,
                    service_id,
                    methods,
                    topics
                }
            )),
        (id(), service()).prop_map(|(request_id, service_id)| Body::Unregister(v1::Unregister {
            request_id,
            service_id
        })),
        (id(), service()).prop_map(|(request_id, service_id)| Body::Lookup(v1::Lookup {
            request_id,
            service_id
        })),
        (id(), service(), name(), payload(), 0u32..50).prop_map(
            |(call_id, service_id, method, payload, deadline_ms)| {
                Body::Call(v1::Call {
                    call_id,
                    service_id,
                    method,
                    payload,
                    deadline_ms,
                })
            }
        ),
        id().prop_map(|call_id| Body::Cancel(v1::Cancel { call_id })),
        (id(), prop::option::of(payload())).prop_map(|(call_id, payload)| Body::Reply(v1::Reply {
            call_id,
            outcome: payload.map(v1::reply::Outcome::Payload),
        })),
        (id(), service(), name()).prop_map(|(request_id, service_id, topic)| Body::Subscribe(
            v1::Subscribe {
                request_id,
                service_id,
                topic
            }
        )),
        (id(), service(), name()).prop_map(|(request_id, service_id, topic)| Body::Unsubscribe(
            v1::Unsubscribe {
                request_id,
                service_id,
                topic
            }
        )),
        (service(), name(), payload()).prop_map(|(service_id, topic, payload)| Body::Publish(
            v1::Publish {
                service_id,
                topic,
                payload
            }
        )),
        (id(), service()).prop_map(|(request_id, service_id)| Body::Watch(v1::Watch {
            request_id,
            service_id
        })),
        (id(), service()).prop_map(|(request_id, service_id)| Body::Unwatch(v1::Unwatch {
            request_id,
            service_id
        })),
    ]
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Piece::Noise),
        1 => prop_oneof![Just(0u32), 1u32..64, Just(1 << 20), Just((1 << 20) + 1), any::<u32>()].prop_map(Piece::Prefix),
        6 => body().prop_map(|body| Piece::Frame(ClientFrame { body: Some(body) })),
    ]
}

/// The bytes of a stream: usually a valid hello first, so that later pieces reach the handlers.
fn stream() -> impl Strategy<Value = (Vec<u8>, usize)> {
    (
        any::<bool>(),
        prop::collection::vec(piece(), 0..24),
        1usize..64,
    )
        .prop_map(|(hello, pieces, chunk)| {
            let mut bytes = Vec::new();
            if hello {
                let hello = ClientFrame {
                    body: Some(client_frame::Body::Hello(v1::ClientHello::supported())),
                };
                encode_frame(&hello, &mut bytes).expect("encodable");
            }
            for piece in pieces {
                match piece {
                    Piece::Noise(noise) => bytes.extend_from_slice(&noise),
                    Piece::Prefix(len) => bytes.extend_from_slice(&len.to_le_bytes()),
                    Piece::Frame(frame) => encode_frame(&frame, &mut bytes).expect("encodable"),
                }
            }
            (bytes, chunk)
        })
}

struct World {
    runtime: tokio::runtime::Runtime,
    broker: Broker,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default_hook(info);
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = BrokerConfig {
            max_deadline: Duration::from_millis(200),
            ..BrokerConfig::default()
        };
        let (broker, _) = runtime.block_on(broker_with_echo(config));
        World { runtime, broker }
    })
}

/// Feeds `bytes` in `chunk`-sized writes into a fresh connection, hangs up its sending side, and
/// waits for the broker to close the connection.
async fn feed(broker: &Broker, bytes: &[u8], chunk: usize) {
    let identity = identity(
        "fuzzed",
        &[CLOCK, Uuid::from_u128(1)],
        &[ECHO, CLOCK, NOBODY],
    );
    let mut client = Client::attach(broker, identity, Origin::Launched { pid: None });
    let (mut reader, mut writer) = client.stream.split();
    let drain = async {
        let mut sink = vec![0; 64 * 1024];
        while matches!(reader.read(&mut sink).await, Ok(read) if read > 0) {}
    };
    let write = async {
        for piece in bytes.chunks(chunk) {
            if writer.write_all(piece).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    };
    let ended = tokio::time::timeout(PATIENCE, async { tokio::join!(drain, write) }).await;
    assert!(
        ended.is_ok(),
        "the broker did not close a connection whose app hung up"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_streams_never_panic_the_broker((bytes, chunk) in stream()) {
        let world = world();
        world.runtime.block_on(feed(&world.broker, &bytes, chunk));
        prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn the_broker_serves_others_while_fed_garbage() {
    let world = world();
    let broker = &world.broker;
    world.runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let steady = keep_calling(broker, Arc::clone(&stop));
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..200 {
            // xorshift: deterministic noise with a valid hello in front of half of it.
            let mut bytes = Vec::new();
            if round % 2 == 0 {
                let hello = ClientFrame {
                    body: Some(client_frame::Body::Hello(v1::ClientHello::supported())),
                };
                encode_frame(&hello, &mut bytes).expect("encodable");
            }
            for _ in 0..(seed % 512) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(seed as u8);
            }
            feed(broker, &bytes, 1 + (seed % 97) as usize).await;
        }
        stop.store(true, Ordering::Relaxed);
        let (calls, slowest) = steady.await.expect("steady client");
        assert!(calls > 10, "only {calls} calls answered");
        assert!(
            slowest < Duration::from_millis(500),
            "a call took {slowest:?}"
        );
    });
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}
