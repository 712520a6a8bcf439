//! The broker under load and attack: what one app does must not get another disconnected or
//! flood the log.

mod common;

use common::*;
use elastos_broker::{Broker, BrokerConfig};
use elastos_proto::v1::{self, broker_frame, client_frame};

/// A watcher that stops reading while another app registers and unregisters the watched service
/// in a loop is not disconnected: it hears the latest state of the service, not every change.
#[tokio::test]
async fn a_watcher_that_pauses_survives_a_register_unregister_loop() {
    let broker = Broker::new(BrokerConfig::default(), None);
    let mut watcher = Client::connect(&broker, client_identity("watcher")).await;
    assert_eq!(
        status_of_response(&watcher.watch(1, ECHO).await),
        v1::Status::Ok
    );

    // Enough changes to queue several MiB of notices, past any queue and socket buffer, while
    // the watcher reads nothing. Sent in pipelined batches, the responses read after each.
    let mut churner = Client::connect(&broker, provider_identity()).await;
    const ROUNDS: u64 = 40_000;
    const BATCH: u64 = 500;
    let methods: Vec<String> = (0..8).map(|m| format!("method-number-{m}")).collect();
    for batch in 0..ROUNDS / BATCH {
        for round in 0..BATCH {
            let request_id = (batch * BATCH + round) * 2;
            churner
                .send(client_frame::Body::Register(v1::Register {
                    request_id,
                    service_id: id_bytes(ECHO),
                    methods: methods.clone(),
                    topics: Vec::new(),
                }))
                .await;
            churner
                .send(client_frame::Body::Unregister(v1::Unregister {
                    request_id: request_id + 1,
                    service_id: id_bytes(ECHO),
                }))
                .await;
        }
        for _ in 0..BATCH * 2 {
            assert_eq!(
                status_of_response(&churner.response().await),
                v1::Status::Ok
            );
        }
    }
    churner.register(1, ECHO, &["say"], &[]).await;

    // The watcher wakes up: still connected, it reads a bounded backlog ending in the latest
    // state, the service available with the methods of the last registration.
    let mut frames = 0;
    loop {
        frames += 1;
        match watcher.recv().await {
            broker_frame::Body::ServiceAvailable(available)
                if available.service.as_ref().expect("service").methods == ["say"] =>
            {
                break
            }
            broker_frame::Body::ServiceAvailable(_) | broker_frame::Body::ProviderGone(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        frames < ROUNDS as usize,
        "{frames} notices: nothing was coalesced"
    );
    assert_eq!(
        status_of_response(&watcher.lookup(2, ECHO).await),
        v1::Status::Ok
    );
}

/// An app that keeps sending requests its manifest does not allow is disconnected with a
/// goodbye saying why, and the others are still served.
#[tokio::test]
async fn a_client_that_keeps_sending_denied_requests_is_disconnected() {
    let (broker, _) = broker_with_echo(BrokerConfig::default()).await;
    let mut denied = Client::connect(&broker, identity("nosy", &[], &[])).await;
    // A few denials are answered and nothing more: a missing `uses` line is a bug, not an attack.
    for request_id in 0..10 {
        assert_eq!(
            status_of_response(&denied.lookup(request_id, SECRET).await),
            v1::Status::PermissionDenied
        );
    }
    // Thousands are not: the connection closes long before the last one.
    for request_id in 10..5_000 {
        denied
            .send_raw(&{
                let mut bytes = Vec::new();
                elastos_proto::encode_frame(
                    &v1::ClientFrame {
                        body: Some(client_frame::Body::Lookup(v1::Lookup {
                            request_id,
                            service_id: id_bytes(SECRET),
                        })),
                    },
                    &mut bytes,
                )
                .expect("encodable");
                bytes
            })
            .await;
    }
    let goodbye = denied.closed().await.expect("a goodbye");
    assert_eq!(goodbye.status(), v1::Status::PermissionDenied);
    assert!(
        goodbye.message.contains("can never succeed"),
        "{}",
        goodbye.message
    );
    let mut steady = Client::connect(&broker, client_identity("steady")).await;
    assert_eq!(
        payload_of(&steady.call(1, ECHO, "say", b"still").await),
        b"still"
    );
}
