//! The broker's built-in service (the cloud disk's `Changes`, proto/cloud.proto): answered by
//! the broker itself, never registered by an app, and its events reach only the app they are
//! about.

mod common;

use std::time::Duration;

use common::*;
use elastos_broker::{Broker, BrokerConfig};
use elastos_proto::cloud::{CHANGES_TOPIC, CLOUD_SYNC_SERVICE};
use elastos_proto::v1::{self, broker_frame};
use uuid::Uuid;

const CLOUD: Uuid = Uuid::from_bytes(CLOUD_SYNC_SERVICE);

#[tokio::test]
async fn the_cloud_service_is_the_brokers_and_its_events_reach_only_their_app() {
    let broker = Broker::new(BrokerConfig::default(), None);
    let owner = identity("owner", &[], &[CLOUD]);
    let mut app = Client::connect(&broker, owner.clone()).await;
    // Another connection of the same app hears it too; another app, subscribed too, does not.
    let mut app_again = Client::connect(&broker, owner.clone()).await;
    let mut other = Client::connect(&broker, identity("other", &[], &[CLOUD])).await;
    let mut not_listed = Client::connect(&broker, identity("not-listed", &[], &[])).await;

    let found = app.lookup(1, CLOUD).await;
    assert_eq!(status_of_response(&found), v1::Status::Ok);
    let info = found.service.expect("service");
    assert_eq!(info.topics, [CHANGES_TOPIC]);
    assert!(info.methods.is_empty());
    let provider = info.provider.expect("provider");
    assert_eq!(
        (
            provider.app_name.as_str(),
            provider.app_id,
            provider.publisher
        ),
        ("elastos-broker", vec![0; 16], vec![0; 32])
    );
    for client in [&mut app, &mut app_again, &mut other] {
        assert_eq!(
            status_of_response(&client.subscribe(2, CLOUD, CHANGES_TOPIC).await),
            v1::Status::Ok
        );
    }
    assert_eq!(
        status_of_response(&app.subscribe(3, CLOUD, "Other").await),
        v1::Status::NotFound
    );
    // Not in `services.uses`: refused like any service.
    assert_eq!(
        status_of_response(&not_listed.subscribe(1, CLOUD, CHANGES_TOPIC).await),
        v1::Status::PermissionDenied
    );
    // No app registers it, even one whose manifest says it provides it.
    let mut pretender = Client::connect(&broker, identity("pretender", &[CLOUD], &[])).await;
    pretender
        .send(elastos_proto::v1::client_frame::Body::Register(
            v1::Register {
                request_id: 1,
                service_id: id_bytes(CLOUD),
                methods: vec!["x".into()],
                topics: vec![CHANGES_TOPIC.into()],
            },
        ))
        .await;
    assert_eq!(
        status_of_response(&pretender.response().await),
        v1::Status::PermissionDenied
    );
    assert_eq!(
        status_of_reply(&app.call(4, CLOUD, "anything", b"").await),
        v1::Status::NotFound
    );

    let told = broker.notify_app(
        owner.app_id,
        owner.publisher,
        CLOUD,
        CHANGES_TOPIC,
        b"about owner".to_vec(),
    );
    assert_eq!(told, 2);
    for client in [&mut app, &mut app_again] {
        match client.recv().await {
            broker_frame::Body::Event(event) => assert_eq!(
                (event.service_id, event.topic.as_str(), event.payload),
                (id_bytes(CLOUD), CHANGES_TOPIC, b"about owner".to_vec())
            ),
            other => panic!("expected the event, got {other:?}"),
        }
    }
    // The same app id under another publisher is another app.
    assert_eq!(
        broker.notify_app(owner.app_id, [9; 32], CLOUD, CHANGES_TOPIC, b"x".to_vec()),
        0
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), other.next())
            .await
            .is_err(),
        "another app got an event about the owner's home"
    );
}
