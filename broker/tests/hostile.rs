//! Hostile clients: each case closes that one connection with a reason, while a well-behaved
//! client keeps getting answers within a bound.

mod common;

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use elastos_broker::{Broker, BrokerConfig, Origin};
use elastos_proto::encode_frame;
use elastos_proto::v1::{self, client_frame, ClientFrame};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// Slowest round trip the steady client may see while a hostile one is handled.
const BOUND: Duration = Duration::from_millis(500);

/// Runs `hostile` against a broker with an echo provider while a steady client calls; checks
/// the steady client kept being answered within [`BOUND`].
async fn while_steady<F, Fut>(config: BrokerConfig, hostile: F)
where
    F: FnOnce(Broker) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (broker, _) = broker_with_echo(config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let steady = keep_calling(&broker, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(20)).await;
    hostile(broker.clone()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::Relaxed);
    let (calls, slowest) = steady.await.expect("steady client");
    assert!(calls > 10, "only {calls} calls answered");
    assert!(slowest < BOUND, "a call took {slowest:?}");
    // Every hostile connection is gone from the broker.
    let started = tokio::time::Instant::now();
    while broker.apps().iter().any(|app| app.name == "hostile") {
        assert!(started.elapsed() < PATIENCE, "a hostile connection stayed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn hostile_client(broker: &Broker) -> Client {
    Client::attach(
        broker,
        client_identity("hostile"),
        Origin::Launched { pid: None },
    )
}

async fn expect_goodbye(client: &mut Client, status: v1::Status, says: &str) {
    let goodbye = client.closed().await.expect("goodbye");
    assert_eq!(goodbye.status(), status, "{}", goodbye.message);
    assert!(goodbye.message.contains(says), "{}", goodbye.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_the_connection() {
    while_steady(BrokerConfig::default(), |broker| async move {
        // Text where a length prefix belongs reads as a 541 MB frame.
        let mut client = hostile_client(&broker);
        client
            .send_raw(b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n")
            .await;
        expect_goodbye(&mut client, v1::Status::InvalidArgument, "larger than").await;
        // A sane length with a body that is not protobuf.
        let mut client = hostile_client(&broker);
        client.hello().await;
        client
            .send_raw(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff])
            .await;
        expect_goodbye(
            &mut client,
            v1::Status::InvalidArgument,
            "not a valid ClientFrame",
        )
        .await;
        // A zero length.
        let mut client = hostile_client(&broker);
        client.send_raw(&[0, 0, 0, 0]).await;
        expect_goodbye(&mut client, v1::Status::InvalidArgument, "zero-length").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_says_hello_is_closed() {
    let config = BrokerConfig {
        handshake_timeout: Duration::from_millis(200),
        ..BrokerConfig::default()
    };
    while_steady(config, |broker| async move {
        let mut client = hostile_client(&broker);
        expect_goodbye(&mut client, v1::Status::InvalidArgument, "no hello within").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_length_prefix_closes_the_connection_before_any_body() {
    while_steady(BrokerConfig::default(), |broker| async move {
        let mut client = hostile_client(&broker);
        client.hello().await;
        client.send_raw(&(u32::MAX).to_le_bytes()).await;
        expect_goodbye(
            &mut client,
            v1::Status::InvalidArgument,
            "larger than the maximum",
        )
        .await;
        let mut client = hostile_client(&broker);
        client.send_raw(&((1u32 << 20) + 1).to_le_bytes()).await;
        expect_goodbye(&mut client, v1::Status::InvalidArgument, "1048577").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_empty_body_closes_the_connection() {
    while_steady(BrokerConfig::default(), |broker| async move {
        // Field 99, varint 1: a body from some future version.
        let mut client = hostile_client(&broker);
        client.hello().await;
        client.send_raw(&[3, 0, 0, 0, 0x98, 0x06, 0x01]).await;
        expect_goodbye(&mut client, v1::Status::InvalidArgument, "no body").await;
        // A message with nothing but an unknown field 15 (the length cannot be zero).
        let mut client = hostile_client(&broker);
        client.hello().await;
        client.send_raw(&[2, 0, 0, 0, 0x78, 0x00]).await;
        expect_goodbye(&mut client, v1::Status::InvalidArgument, "no body").await;
        // Anything but hello first.
        let mut client = hostile_client(&broker);
        client
            .send(client_frame::Body::Lookup(v1::Lookup {
                request_id: 1,
                service_id: id_bytes(ECHO),
            }))
            .await;
        expect_goodbye(&mut client, v1::Status::InvalidArgument, "expected hello").await;
        // Hello twice.
        let mut client = hostile_client(&broker);
        client.hello().await;
        client
            .send(client_frame::Body::Hello(v1::ClientHello::supported()))
            .await;
        expect_goodbye(&mut client, v1::Status::InvalidArgument, "second hello").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_a_file_descriptor_closes_the_connection_and_the_descriptor() {
    while_steady(BrokerConfig::default(), |broker| async move {
        let mut client = hostile_client(&broker);
        client.hello().await;
        let (read_end, write_end): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
        let mut frame = Vec::new();
        encode_frame(
            &ClientFrame {
                body: Some(client_frame::Body::Cancel(v1::Cancel { call_id: 1 })),
            },
            &mut frame,
        )
        .expect("encodable");
        let fds = [read_end.as_raw_fd()];
        let sent = sendmsg::<()>(
            client.stream.as_raw_fd(),
            &[IoSlice::new(&frame)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        assert_eq!(sent, frame.len());
        drop(read_end);
        expect_goodbye(&mut client, v1::Status::InvalidArgument, "SCM_RIGHTS").await;
        // The broker closed the descriptor it received: the pipe has no reader left.
        let written = nix::unistd::write(&write_end, b"x");
        assert_eq!(written, Err(nix::errno::Errno::EPIPE));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_a_client_that_does_not_read_closes_it() {
    let config = BrokerConfig {
        queue_bytes: 16 * 1024,
        ..BrokerConfig::default()
    };
    while_steady(config, |broker| async move {
        let mut client = hostile_client(&broker);
        client.hello().await;
        let mut flood = Vec::new();
        for request_id in 0..60_000 {
            let lookup = v1::Lookup {
                request_id,
                service_id: id_bytes(NOBODY),
            };
            encode_frame(
                &ClientFrame {
                    body: Some(client_frame::Body::Lookup(lookup)),
                },
                &mut flood,
            )
            .expect("encodable");
        }
        // Written without reading a single response; the broker gives up on the reader.
        client.send_raw(&flood).await;
        let started = tokio::time::Instant::now();
        // What the socket buffer held, then the end: no goodbye for a peer that does not read.
        assert!(client.closed().await.is_none());
        assert!(started.elapsed() < PATIENCE);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_mid_call_cancels_it_at_the_provider() {
    let (broker, mut cancels) = broker_with_echo(BrokerConfig::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let steady = keep_calling(&broker, Arc::clone(&stop));
    for round in 0..5 {
        let mut client = Client::connect(&broker, client_identity("quitter")).await;
        client.send_call(round, ECHO, "slow", b"", 0).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(client);
        tokio::time::timeout(PATIENCE, cancels.recv())
            .await
            .expect("provider cancelled");
    }
    // A provider that disconnects mid-call: its caller gets UNAVAILABLE.
    let mut clock = Client::connect(&broker, identity("clock", &[CLOCK], &[])).await;
    clock.register(1, CLOCK, &["now"], &[]).await;
    let mut caller = Client::connect(&broker, client_identity("caller")).await;
    caller.send_call(1, CLOCK, "now", b"", 0).await;
    clock.incoming().await;
    drop(clock);
    assert_eq!(
        status_of_reply(&caller.reply().await),
        v1::Status::Unavailable
    );
    stop.store(true, Ordering::Relaxed);
    let (calls, slowest) = steady.await.expect("steady client");
    assert!(
        calls > 10 && slowest < BOUND,
        "{calls} calls, slowest {slowest:?}"
    );
}
