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
    watcher
        .send(client_frame::Body::Watch(v1::Watch {
            request_id: 1,
            service_id: id_bytes(ECHO),
        }))
        .await;
    assert_eq!(
        status_of_response(&watcher.response().await),
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
