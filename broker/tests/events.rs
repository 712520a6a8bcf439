//! Subscribe, publish, unsubscribe; who may publish; events dropped and counted for a reader
//! that does not read.

mod common;

use std::time::Duration;

use common::*;
use elastos_broker::{Broker, BrokerConfig};
use elastos_proto::v1::{self, broker_frame, client_frame};

fn event(body: broker_frame::Body) -> v1::Event {
    match body {
        broker_frame::Body::Event(event) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribers_get_the_events_of_their_topic_until_they_unsubscribe() {
    let broker = Broker::new(BrokerConfig::default(), None);
    let mut provider = Client::connect(&broker, provider_identity()).await;
    provider
        .register(1, ECHO, &["say"], &["said", "shouted"])
        .await;
    let mut first = Client::connect(&broker, client_identity("first")).await;
    let mut second = Client::connect(&broker, client_identity("second")).await;
    for subscriber in [&mut first, &mut second] {
        let subscribed = subscriber.subscribe(1, ECHO, "said").await;
        assert_eq!(status_of_response(&subscribed), v1::Status::Ok);
        assert_eq!(
            subscribed.service.expect("service").topics,
            ["said", "shouted"]
        );
    }
    // Subscribing twice changes nothing: one event per publish.
    assert_eq!(
        status_of_response(&first.subscribe(2, ECHO, "said").await),
        v1::Status::Ok
    );

    provider.publish(ECHO, "shouted", b"nobody listens").await;
    provider.publish(ECHO, "said", b"one").await;
    for subscriber in [&mut first, &mut second] {
        let got = event(subscriber.recv().await);
        assert_eq!(
            (got.service_id, got.topic.as_str(), got.payload, got.dropped),
            (id_bytes(ECHO), "said", b"one".to_vec(), 0)
        );
    }

    first
        .send(client_frame::Body::Unsubscribe(v1::Unsubscribe {
            request_id: 3,
            service_id: id_bytes(ECHO),
            topic: "said".into(),
        }))
        .await;
    assert_eq!(status_of_response(&first.response().await), v1::Status::Ok);
    provider.publish(ECHO, "said", b"two").await;
    assert_eq!(event(second.recv().await).payload, b"two");
    first
        .send(client_frame::Body::Unsubscribe(v1::Unsubscribe {
            request_id: 4,
            service_id: id_bytes(ECHO),
            topic: "said".into(),
        }))
        .await;
    // The unsubscribed client got nothing in between: its next frame is this response.
    assert_eq!(
        status_of_response(&first.response().await),
        v1::Status::NotFound
    );
}

#[tokio::test]
async fn subscriptions_outlive_a_provider_and_hear_the_next_one() {
    let broker = Broker::new(BrokerConfig::default(), None);
    let mut provider = Client::connect(&broker, provider_identity()).await;
    provider.register(1, ECHO, &["say"], &["said"]).await;
    let mut subscriber = Client::connect(&broker, client_identity("loyal")).await;
    subscriber.subscribe(1, ECHO, "said").await;
    drop(provider);
    match subscriber.recv().await {
        broker_frame::Body::ProviderGone(gone) => {
            assert_eq!(gone.reason(), v1::GoneReason::Disconnected)
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut next = Client::connect(&broker, provider_identity()).await;
    next.register(1, ECHO, &["say"], &["said"]).await;
    next.publish(ECHO, "said", b"again").await;
    assert_eq!(event(subscriber.recv().await).payload, b"again");
}

#[tokio::test]
async fn only_the_registered_provider_may_publish_and_only_on_its_topics() {
    let (broker, _) = broker_with_echo(BrokerConfig::default()).await;
    let mut subscriber = Client::connect(&broker, client_identity("listener")).await;
    subscriber.subscribe(1, ECHO, "said").await;

    let mut forger = Client::connect(&broker, client_identity("forger")).await;
    forger.publish(ECHO, "said", b"forged").await;
    let goodbye = forger.closed().await.expect("goodbye");
    assert_eq!(goodbye.status(), v1::Status::PermissionDenied);
    assert!(
        goodbye.message.contains("did not register"),
        "{}",
        goodbye.message
    );

    let mut clock = Client::connect(&broker, identity("clock", &[CLOCK], &[])).await;
    clock.register(1, CLOCK, &["now"], &["tick"]).await;
    clock.publish(CLOCK, "tock", b"").await;
    let goodbye = clock.closed().await.expect("goodbye");
    assert_eq!(goodbye.status(), v1::Status::PermissionDenied);
    assert!(
        goodbye.message.contains("did not declare"),
        "{}",
        goodbye.message
    );

    // The subscriber saw none of it and is still served.
    assert_eq!(
        payload_of(&subscriber.call(1, ECHO, "say", b"still").await),
        b"still"
    );
}

#[tokio::test]
async fn events_to_a_reader_that_does_not_read_are_dropped_and_counted() {
    let config = BrokerConfig {
        queue_bytes: 4096,
        ..BrokerConfig::default()
    };
    let broker = Broker::new(config, None);
    let mut provider = Client::connect(&broker, provider_identity()).await;
    provider.register(1, ECHO, &["say"], &["said"]).await;
    let mut sleeper = Client::connect(&broker, client_identity("sleeper")).await;
    sleeper.subscribe(1, ECHO, "said").await;

    // Far more than the socket buffer and the 4 KiB queue hold, and the publisher never blocks.
    const PUBLISHED: usize = 3000;
    let payload = vec![7u8; 1000];
    let started = tokio::time::Instant::now();
    for _ in 0..PUBLISHED {
        provider.publish(ECHO, "said", &payload).await;
    }
    // A request after the publishes: its response means the broker handled all of them.
    assert_eq!(
        status_of_response(&provider.register(2, ECHO, &["say"], &["said"]).await),
        v1::Status::Ok
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // The sleeper wakes up: it gets what fit, then one more event carrying the count of the rest.
    provider.publish(ECHO, "said", b"last").await;
    let (mut received, mut dropped) = (0, 0);
    loop {
        let got = event(sleeper.recv().await);
        received += 1;
        dropped += got.dropped;
        if got.payload == b"last" {
            break;
        }
    }
    assert!(dropped > 0, "nothing was dropped");
    assert!(received < PUBLISHED, "everything was queued");
    assert_eq!(received + dropped as usize, PUBLISHED + 1);
    // And the connection is fine.
    assert_eq!(
        status_of_response(&sleeper.lookup(2, ECHO).await),
        v1::Status::Ok
    );
}
