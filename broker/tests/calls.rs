//! Handshake, registration, lookup, calls and every status a call or request can end with,
//! through a real broker over real socketpairs.

mod common;

use std::time::Duration;

use common::*;
use elastos_broker::{AppSnapshot, Broker, BrokerConfig, Origin, ServiceState};
use elastos_proto::v1::{self, broker_frame, client_frame, reply};

#[tokio::test]
async fn welcome_carries_the_identity_the_broker_was_given_and_the_limits() {
    let broker = Broker::new(BrokerConfig::default(), None);
    let given = client_identity("echo-client");
    let client = Client::connect(&broker, given.clone()).await;
    let welcome = client.welcome.clone().expect("welcome");
    assert_eq!(welcome.version, 1);
    let identity = welcome.identity.expect("identity");
    assert_eq!(identity.app_id, given.app_id.as_bytes().to_vec());
    assert_eq!(identity.app_name, "echo-client");
    assert_eq!(identity.publisher, given.publisher.to_vec());
    let limits = welcome.limits.expect("limits");
    assert_eq!(limits.max_frame_bytes, 1 << 20);
    assert_eq!(limits.max_calls_in_flight, 256);
    assert_eq!(limits.max_deadline_ms, 30_000);

    let apps = broker.apps();
    assert_eq!(apps.len(), 1);
    let AppSnapshot {
        id,
        app_id,
        name,
        origin,
        services,
        ..
    } = &apps[0];
    assert_eq!(
        (*id, *app_id, name.as_str()),
        (client.id, given.app_id, "echo-client")
    );
    assert_eq!(*origin, Origin::Launched { pid: Some(42) });
    assert_eq!(origin.pid(), Some(42));
    assert!(services.is_empty());
}

#[tokio::test]
async fn a_hello_without_a_common_version_gets_a_goodbye() {
    let broker = Broker::new(BrokerConfig::default(), None);
    let mut client = Client::attach(
        &broker,
        client_identity("future"),
        Origin::Launched { pid: None },
    );
    client
        .send(client_frame::Body::Hello(v1::ClientHello {
            min_version: 2,
            max_version: 9,
        }))
        .await;
    let goodbye = client.closed().await.expect("goodbye");
    assert_eq!(goodbye.status(), v1::Status::InvalidArgument);
    assert!(goodbye.message.contains("2..=9"), "{}", goodbye.message);
}

#[tokio::test]
async fn register_lookup_call_round_trip() {
    let broker = Broker::new(BrokerConfig::default(), None);
    let mut provider = Client::connect(&broker, provider_identity()).await;
    let mut client = Client::connect(&broker, client_identity("echo-client")).await;

    let registered = provider
        .register(1, ECHO, &["say", "shout"], &["said"])
        .await;
    assert_eq!(registered.request_id, 1);
    assert_eq!(status_of_response(&registered), v1::Status::Ok);

    let found = client.lookup(7, ECHO).await;
    assert_eq!(found.request_id, 7);
    let info = found.service.expect("service info");
    assert_eq!(info.service_id, id_bytes(ECHO));
    assert_eq!(info.methods, ["say", "shout"]);
    assert_eq!(info.topics, ["said"]);
    assert_eq!(info.provider.expect("provider").app_name, "echo-service");

    client.send_call(1, ECHO, "say", b"hello", 500).await;
    let incoming = provider.incoming().await;
    assert_eq!(incoming.method, "say");
    assert_eq!(incoming.payload, b"hello");
    assert_eq!(incoming.service_id, id_bytes(ECHO));
    assert!(
        (1..=500).contains(&incoming.deadline_ms),
        "{}",
        incoming.deadline_ms
    );
    assert_eq!(incoming.caller.expect("caller").app_name, "echo-client");
    provider
        .answer(
            incoming.call_id,
            Some(reply::Outcome::Payload(b"HELLO".to_vec())),
        )
        .await;
    let answered = client.reply().await;
    assert_eq!(answered.call_id, 1);
    assert_eq!(payload_of(&answered), b"HELLO");

    // A provider's own error reaches the caller as it was sent.
    client.send_call(2, ECHO, "shout", b"", 0).await;
    let incoming = provider.incoming().await;
    provider
        .answer(
            incoming.call_id,
            Some(reply::Outcome::Error(v1::Error {
                status: v1::Status::InvalidArgument as i32,
                message: "empty text".into(),
            })),
        )
        .await;
    let answered = client.reply().await;
    assert_eq!(
        (answered.call_id, status_of_reply(&answered)),
        (2, v1::Status::InvalidArgument)
    );

    let services = broker.services();
    assert_eq!(services.len(), 1);
    assert!(matches!(
        &services[0].state,
        ServiceState::Registered { provider: id, methods, .. } if *id == provider.id && methods.len() == 2
    ));
    let apps = broker.apps();
    let listed = apps
        .iter()
        .find(|app| app.id == provider.id)
        .expect("provider listed");
    assert_eq!(listed.services, [ECHO]);
}

#[tokio::test]
async fn unknown_services_and_methods_are_not_found() {
    let (broker, _) = broker_with_echo(BrokerConfig::default()).await;
    let mut client = Client::connect(&broker, client_identity("lost")).await;
    assert_eq!(
        status_of_response(&client.lookup(1, NOBODY).await),
        v1::Status::NotFound
    );
    let reply = client.call(1, NOBODY, "say", b"").await;
    assert_eq!(status_of_reply(&reply), v1::Status::NotFound);
    let reply = client.call(2, ECHO, "sing", b"").await;
    assert_eq!(status_of_reply(&reply), v1::Status::NotFound);
    assert!(matches!(&reply.outcome, Some(reply::Outcome::Error(e)) if e.message.contains("sing")));
    let subscribed = client.subscribe(3, ECHO, "no-such-topic").await;
    assert_eq!(status_of_response(&subscribed), v1::Status::NotFound);
    // Withdrawing what one does not have is NOT_FOUND too.
    client
        .send(client_frame::Body::Unregister(v1::Unregister {
            request_id: 4,
            service_id: id_bytes(ECHO),
        }))
        .await;
    assert_eq!(
        status_of_response(&client.response().await),
        v1::Status::NotFound
    );
    client
        .send(client_frame::Body::Unwatch(v1::Unwatch {
            request_id: 5,
            service_id: id_bytes(ECHO),
        }))
        .await;
    assert_eq!(
        status_of_response(&client.response().await),
        v1::Status::NotFound
    );
}

#[tokio::test]
async fn registering_outside_provides_is_denied() {
    let broker = Broker::new(BrokerConfig::default(), None);
    let mut impostor = Client::connect(&broker, identity("impostor", &[CLOCK], &[ECHO])).await;
    let denied = impostor.register(1, ECHO, &["say"], &[]).await;
    assert_eq!(status_of_response(&denied), v1::Status::PermissionDenied);
    assert!(denied
        .error
        .expect("error")
        .message
        .contains("services.provides"));
    assert!(broker.services().is_empty());
}

#[tokio::test]
async fn using_outside_uses_is_denied_for_every_request() {
    let (broker, _) = broker_with_echo(BrokerConfig::default()).await;
    let mut outsider = Client::connect(&broker, identity("outsider", &[], &[CLOCK])).await;
    assert_eq!(
        status_of_response(&outsider.lookup(1, ECHO).await),
        v1::Status::PermissionDenied
    );
    let reply = outsider.call(1, ECHO, "say", b"hi").await;
    assert_eq!(status_of_reply(&reply), v1::Status::PermissionDenied);
    assert!(
        matches!(&reply.outcome, Some(reply::Outcome::Error(e)) if e.message.contains("services.uses"))
    );
    assert_eq!(
        status_of_response(&outsider.subscribe(2, ECHO, "said").await),
        v1::Status::PermissionDenied
    );
    outsider
        .send(client_frame::Body::Watch(v1::Watch {
            request_id: 3,
            service_id: id_bytes(ECHO),
        }))
        .await;
    assert_eq!(
        status_of_response(&outsider.response().await),
        v1::Status::PermissionDenied
    );
}

#[tokio::test]
async fn a_service_another_app_provides_is_unavailable_to_register() {
    let (broker, _) = broker_with_echo(BrokerConfig::default()).await;
    let mut second = Client::connect(&broker, identity("echo-service-2", &[ECHO], &[])).await;
    let refused = second.register(1, ECHO, &["say"], &[]).await;
    assert_eq!(status_of_response(&refused), v1::Status::Unavailable);
}

#[tokio::test]
async fn malformed_requests_are_invalid_arguments_and_the_connection_stays() {
    let (broker, _) = broker_with_echo(BrokerConfig::default()).await;
    let mut client = Client::connect(&broker, client_identity("sloppy")).await;
    client
        .send(client_frame::Body::Lookup(v1::Lookup {
            request_id: 1,
            service_id: vec![1, 2, 3],
        }))
        .await;
    let response = client.response().await;
    assert_eq!(status_of_response(&response), v1::Status::InvalidArgument);
    assert!(response.error.expect("error").message.contains("16-byte"));
    client.send_call(5, ECHO, "bad name!", b"", 0).await;
    let reply = client.reply().await;
    assert_eq!(
        (reply.call_id, status_of_reply(&reply)),
        (5, v1::Status::InvalidArgument)
    );

    // A call id still in flight cannot be reused.
    client.send_call(6, ECHO, "slow", b"", 0).await;
    client.send_call(6, ECHO, "say", b"", 0).await;
    let reply = client.reply().await;
    assert_eq!(
        (reply.call_id, status_of_reply(&reply)),
        (6, v1::Status::InvalidArgument)
    );

    // Still served.
    assert_eq!(payload_of(&client.call(7, ECHO, "say", b"ok").await), b"ok");
}

#[tokio::test]
async fn provider_mistakes_reach_the_caller_as_internal() {
    let (broker, _) = broker_with_echo(BrokerConfig::default()).await;
    let mut client = Client::connect(&broker, client_identity("caller")).await;
    let reply = client.call(1, ECHO, "empty", b"").await;
    assert_eq!(status_of_reply(&reply), v1::Status::Internal);
    let reply = client.call(2, ECHO, "ok_error", b"").await;
    assert_eq!(status_of_reply(&reply), v1::Status::Internal);
    let reply = client.call(3, ECHO, "reject", b"").await;
    assert_eq!(status_of_reply(&reply), v1::Status::InvalidArgument);
}

#[tokio::test]
async fn a_passed_deadline_answers_the_caller_and_cancels_the_provider() {
    let (broker, mut cancels) = broker_with_echo(BrokerConfig::default()).await;
    let mut client = Client::connect(&broker, client_identity("impatient")).await;
    let started = tokio::time::Instant::now();
    client.send_call(9, ECHO, "slow", b"", 50).await;
    let reply = client.reply().await;
    let waited = started.elapsed();
    assert_eq!(
        (reply.call_id, status_of_reply(&reply)),
        (9, v1::Status::DeadlineExceeded)
    );
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    tokio::time::timeout(PATIENCE, cancels.recv())
        .await
        .expect("provider cancelled");
}

#[tokio::test]
async fn the_maximum_deadline_bounds_every_call() {
    let config = BrokerConfig {
        max_deadline: Duration::from_millis(80),
        ..BrokerConfig::default()
    };
    let (broker, _) = broker_with_echo(config).await;
    let mut client = Client::connect(&broker, client_identity("forever")).await;
    assert_eq!(
        client
            .welcome
            .as_ref()
            .unwrap()
            .limits
            .unwrap()
            .max_deadline_ms,
        80
    );
    client.send_call(1, ECHO, "slow", b"", 0).await;
    client.send_call(2, ECHO, "slow", b"", u32::MAX).await;
    for _ in 0..2 {
        assert_eq!(
            status_of_reply(&client.reply().await),
            v1::Status::DeadlineExceeded
        );
    }
}

#[tokio::test]
async fn cancel_answers_cancelled_once_and_tells_the_provider() {
    let (broker, mut cancels) = broker_with_echo(BrokerConfig::default()).await;
    let mut client = Client::connect(&broker, client_identity("fickle")).await;
    client.send_call(3, ECHO, "slow", b"", 0).await;
    // Let the call reach the provider.
    tokio::time::sleep(Duration::from_millis(20)).await;
    client
        .send(client_frame::Body::Cancel(v1::Cancel { call_id: 3 }))
        .await;
    let reply = client.reply().await;
    assert_eq!(
        (reply.call_id, status_of_reply(&reply)),
        (3, v1::Status::Cancelled)
    );
    tokio::time::timeout(PATIENCE, cancels.recv())
        .await
        .expect("provider cancelled");
    // A second cancel, and one for an unknown id, are ignored; the next call is answered.
    client
        .send(client_frame::Body::Cancel(v1::Cancel { call_id: 3 }))
        .await;
    client
        .send(client_frame::Body::Cancel(v1::Cancel { call_id: 77 }))
        .await;
    let reply = client.call(4, ECHO, "say", b"after").await;
    assert_eq!((reply.call_id, payload_of(&reply)), (4, &b"after"[..]));
}

#[tokio::test]
async fn calls_beyond_the_in_flight_limit_are_resource_exhausted() {
    let config = BrokerConfig {
        max_calls_in_flight: 4,
        ..BrokerConfig::default()
    };
    let (broker, _) = broker_with_echo(config).await;
    let mut client = Client::connect(&broker, client_identity("greedy")).await;
    for call_id in 0..4 {
        client.send_call(call_id, ECHO, "slow", b"", 0).await;
    }
    client.send_call(4, ECHO, "say", b"", 0).await;
    let reply = client.reply().await;
    assert_eq!(
        (reply.call_id, status_of_reply(&reply)),
        (4, v1::Status::ResourceExhausted)
    );
    // Cancelling one makes room.
    client
        .send(client_frame::Body::Cancel(v1::Cancel { call_id: 0 }))
        .await;
    assert_eq!(
        status_of_reply(&client.reply().await),
        v1::Status::Cancelled
    );
    assert_eq!(
        payload_of(&client.call(5, ECHO, "say", b"room").await),
        b"room"
    );
}

#[tokio::test]
async fn a_dying_provider_fails_calls_in_flight_and_tells_linked_clients() {
    let broker = Broker::new(BrokerConfig::default(), None);
    let mut provider = Client::connect(&broker, provider_identity()).await;
    provider.register(1, ECHO, &["say"], &[]).await;
    let mut client = Client::connect(&broker, client_identity("linked")).await;
    let mut watcher = Client::connect(&broker, client_identity("watcher")).await;
    client.lookup(1, ECHO).await;
    assert_eq!(
        status_of_response(&watcher.watch(1, ECHO).await),
        v1::Status::Ok
    );
    assert!(matches!(
        watcher.recv().await,
        broker_frame::Body::ServiceAvailable(_)
    ));

    client.send_call(1, ECHO, "say", b"x", 0).await;
    provider.incoming().await;
    drop(provider);

    let mut got_reply = false;
    let mut got_gone = false;
    for _ in 0..2 {
        match client.recv().await {
            broker_frame::Body::Reply(reply) => {
                assert_eq!(
                    (reply.call_id, status_of_reply(&reply)),
                    (1, v1::Status::Unavailable)
                );
                got_reply = true;
            }
            broker_frame::Body::ProviderGone(gone) => {
                assert_eq!(gone.service_id, id_bytes(ECHO));
                assert_eq!(gone.reason(), v1::GoneReason::Disconnected);
                got_gone = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got_reply && got_gone);
    match watcher.recv().await {
        broker_frame::Body::ProviderGone(gone) => {
            assert_eq!(gone.reason(), v1::GoneReason::Disconnected)
        }
        other => panic!("unexpected {other:?}"),
    }
    // Gone now: the next call finds nothing.
    assert_eq!(
        status_of_reply(&client.call(2, ECHO, "say", b"").await),
        v1::Status::NotFound
    );
    assert!(broker.services().is_empty());
}

#[tokio::test]
async fn unregister_tells_linked_clients_and_watchers_hear_of_the_next_provider() {
    let broker = Broker::new(BrokerConfig::default(), None);
    let mut watcher = Client::connect(&broker, client_identity("watcher")).await;
    assert_eq!(
        status_of_response(&watcher.watch(1, ECHO).await),
        v1::Status::Ok
    );

    let mut provider = Client::connect(&broker, provider_identity()).await;
    provider.register(1, ECHO, &["say"], &[]).await;
    match watcher.recv().await {
        broker_frame::Body::ServiceAvailable(available) => {
            assert_eq!(available.service.expect("service").methods, ["say"])
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut client = Client::connect(&broker, client_identity("linked")).await;
    client.lookup(1, ECHO).await;
    provider
        .send(client_frame::Body::Unregister(v1::Unregister {
            request_id: 2,
            service_id: id_bytes(ECHO),
        }))
        .await;
    assert_eq!(
        status_of_response(&provider.response().await),
        v1::Status::Ok
    );
    for linked in [&mut client, &mut watcher] {
        match linked.recv().await {
            broker_frame::Body::ProviderGone(gone) => {
                assert_eq!(gone.reason(), v1::GoneReason::Unregistered)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    provider.register(3, ECHO, &["say"], &[]).await;
    assert!(matches!(
        watcher.recv().await,
        broker_frame::Body::ServiceAvailable(_)
    ));
}

#[tokio::test]
async fn disconnect_by_id_stops_the_app() {
    let broker = Broker::new(BrokerConfig::default(), None);
    let mut provider = Client::connect(&broker, provider_identity()).await;
    provider.register(1, ECHO, &["say"], &[]).await;
    let mut client = Client::connect(&broker, client_identity("linked")).await;
    client.lookup(1, ECHO).await;
    assert!(broker.disconnect(provider.id));
    let goodbye = provider.closed().await.expect("goodbye");
    assert_eq!(goodbye.status(), v1::Status::Unavailable);
    match client.recv().await {
        broker_frame::Body::ProviderGone(gone) => {
            assert_eq!(gone.reason(), v1::GoneReason::Stopped)
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!broker.disconnect(provider.id));
    assert_eq!(broker.apps().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_call_at_once() {
    let (broker, _) = broker_with_echo(BrokerConfig::default()).await;
    let clients: Vec<_> = (0..100)
        .map(|n| {
            let broker = broker.clone();
            tokio::spawn(async move {
                let mut client =
                    Client::connect(&broker, client_identity(&format!("client-{n}"))).await;
                for call_id in 0..20u64 {
                    let payload = format!("{n}:{call_id}").into_bytes();
                    client.send_call(call_id, ECHO, "say", &payload, 0).await;
                }
                let mut seen = [false; 20];
                for _ in 0..20 {
                    let reply = client.reply().await;
                    let expected = format!("{n}:{}", reply.call_id).into_bytes();
                    assert_eq!(payload_of(&reply), expected);
                    seen[reply.call_id as usize] = true;
                }
                assert!(seen.iter().all(|&s| s));
                client
            })
        })
        .collect();
    let mut connected = Vec::new();
    for client in clients {
        connected.push(client.await.expect("client task"));
    }
    // All 100 (and the provider) are still connected and listed.
    assert_eq!(broker.apps().len(), 101);
}

/// A client whose manifest pins a service to a publisher never reaches a provider of it signed
/// by another key (lookup, call, subscribe: PERMISSION_DENIED naming both keys), and reaches
/// the pinned one as usual.
#[tokio::test]
async fn a_service_pinned_to_another_publisher_is_never_reached() {
    let (broker, _) = broker_with_echo(BrokerConfig::default()).await;
    let provider_key = provider_identity().publisher;
    let mut elsewhere = client_identity("pinned-elsewhere");
    elsewhere.pins = vec![(ECHO, [0x99; 32])];
    let mut client = Client::connect(&broker, elsewhere).await;
    let lookup = client.lookup(1, ECHO).await;
    assert_eq!(status_of_response(&lookup), v1::Status::PermissionDenied);
    let message = &lookup.error.as_ref().expect("an error").message;
    assert!(
        message.contains(&"99".repeat(32)) && message.contains(&hex(&provider_key)),
        "{message}"
    );
    let reply = client.call(2, ECHO, "say", b"hi").await;
    assert_eq!(status_of_reply(&reply), v1::Status::PermissionDenied);
    let subscribe = client.subscribe(3, ECHO, "said").await;
    assert_eq!(status_of_response(&subscribe), v1::Status::PermissionDenied);

    let mut pinned_here = client_identity("pinned-here");
    pinned_here.pins = vec![(ECHO, provider_key)];
    let mut client = Client::connect(&broker, pinned_here).await;
    assert_eq!(
        status_of_response(&client.lookup(1, ECHO).await),
        v1::Status::Ok
    );
    let reply = client.call(2, ECHO, "say", b"hi").await;
    assert_eq!(status_of_reply(&reply), v1::Status::Ok);
    assert_eq!(
        status_of_response(&client.subscribe(3, ECHO, "said").await),
        v1::Status::Ok
    );
}

fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
