//! The SDK against a scripted fake broker: each test plays the broker's side frame by frame.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{error, service_info, Peer, APP_ID, PATIENCE, SERVICE};
use elastos_proto::v1;
use elastos_proto::v1::broker_frame::Body as BrokerBody;
use elastos_proto::v1::client_frame::Body as ClientBody;
use elastos_sdk::{
    Code, Context, Disconnect, Error, GoneReason, IncomingCall, ServiceHandler, Status, Uuid,
};
use tokio::sync::{mpsc, Notify};

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("did not finish in time")
}

#[tokio::test]
async fn handshake_returns_the_identity_and_limits_the_broker_attests() {
    let (ctx, _peer) = Peer::connected().await;
    assert_eq!(ctx.identity().app_id, APP_ID);
    assert_eq!(ctx.identity().app_name, "tester");
    assert_eq!(ctx.identity().publisher, [7; 32]);
    assert_eq!(ctx.limits().max_calls_in_flight, 256);
    assert_eq!(ctx.limits().max_deadline, Duration::from_secs(30));
}

#[tokio::test]
async fn a_goodbye_instead_of_a_welcome_fails_the_handshake_with_its_status() {
    let (app, mut peer) = Peer::pair();
    let broker = async {
        peer.recv().await;
        let reason = error(v1::Status::InvalidArgument, "no common version");
        peer.send(BrokerBody::Goodbye(v1::Goodbye {
            reason: Some(reason),
        }))
        .await;
    };
    let (connected, ()) = tokio::join!(Context::connect(app), broker);
    match connected.unwrap_err() {
        Error::Disconnected(Disconnect::Goodbye(status)) => {
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(status.message(), "no common version");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_handshake_without_a_welcome_is_refused() {
    let cases = [
        (
            BrokerBody::Cancel(v1::Cancel { call_id: 1 }),
            "another frame before the welcome",
        ),
        (
            BrokerBody::Welcome(v1::ServerHello {
                version: 2,
                ..Default::default()
            }),
            "a welcome with a version this SDK did not offer",
        ),
        (
            BrokerBody::Welcome(v1::ServerHello {
                version: 1,
                identity: Some(v1::PeerIdentity {
                    app_id: vec![1, 2, 3],
                    ..Default::default()
                }),
                limits: Some(v1::Limits::default()),
            }),
            "an app id of the wrong length",
        ),
    ];
    for (first, expected) in cases {
        let (app, mut peer) = Peer::pair();
        let broker = async {
            peer.recv().await;
            peer.send(first).await;
        };
        let (connected, ()) = tokio::join!(Context::connect(app), broker);
        match connected.unwrap_err() {
            Error::Disconnected(Disconnect::Unexpected { what, .. }) => assert_eq!(what, expected),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_broker_closing_during_the_handshake_is_eof() {
    let (app, mut peer) = Peer::pair();
    let broker = async move {
        peer.recv().await;
        drop(peer);
    };
    let (connected, ()) = tokio::join!(Context::connect(app), broker);
    assert!(matches!(
        connected.unwrap_err(),
        Error::Disconnected(Disconnect::Eof)
    ));
}

#[tokio::test]
async fn a_call_round_trip_carries_method_payload_and_deadline() {
    let (ctx, mut peer) = Peer::connected().await;
    let broker = async {
        let ClientBody::Call(call) = peer.recv().await else {
            panic!("expected a call")
        };
        assert_eq!(call.service_id, SERVICE.as_bytes());
        assert_eq!(call.method, "Say");
        assert_eq!(call.payload, b"ping");
        assert_eq!(call.deadline_ms, 1500);
        let reply = v1::Reply {
            call_id: call.call_id,
            outcome: Some(v1::reply::Outcome::Payload(b"pong".to_vec())),
        };
        peer.send(BrokerBody::Reply(reply)).await;
    };
    let call = ctx.call(
        SERVICE,
        "Say",
        b"ping".to_vec(),
        Some(Duration::from_millis(1500)),
    );
    let (reply, ()) = within(async { tokio::join!(call, broker) }).await;
    assert_eq!(reply.unwrap(), b"pong");
}

#[tokio::test]
async fn concurrent_calls_get_their_own_replies_in_any_order() {
    let (ctx, mut peer) = Peer::connected().await;
    let broker = async {
        let mut calls = Vec::new();
        for _ in 0..3 {
            let ClientBody::Call(call) = peer.recv().await else {
                panic!("expected a call")
            };
            calls.push(call);
        }
        for call in calls.into_iter().rev() {
            let reply = v1::Reply {
                call_id: call.call_id,
                outcome: Some(v1::reply::Outcome::Payload(call.payload)),
            };
            peer.send(BrokerBody::Reply(reply)).await;
        }
    };
    let calls = async {
        tokio::join!(
            ctx.call(SERVICE, "Say", b"a".to_vec(), None),
            ctx.call(SERVICE, "Say", b"b".to_vec(), None),
            ctx.call(SERVICE, "Say", b"c".to_vec(), None),
        )
    };
    let ((a, b, c), ()) = within(async { tokio::join!(calls, broker) }).await;
    assert_eq!(
        (a.unwrap(), b.unwrap(), c.unwrap()),
        (b"a".to_vec(), b"b".to_vec(), b"c".to_vec())
    );
}

#[tokio::test]
async fn every_error_status_surfaces_with_its_code_and_message() {
    let (ctx, mut peer) = Peer::connected().await;
    let statuses = [
        (v1::Status::NotFound, Code::NotFound),
        (v1::Status::PermissionDenied, Code::PermissionDenied),
        (v1::Status::Unavailable, Code::Unavailable),
        (v1::Status::DeadlineExceeded, Code::DeadlineExceeded),
        (v1::Status::Cancelled, Code::Cancelled),
        (v1::Status::InvalidArgument, Code::InvalidArgument),
        (v1::Status::Internal, Code::Internal),
        (v1::Status::ResourceExhausted, Code::ResourceExhausted),
        // Never sent in an error; read as INTERNAL, as the protocol says.
        (v1::Status::Ok, Code::Internal),
        (v1::Status::Unspecified, Code::Internal),
    ];
    for (wire, code) in statuses {
        let broker = async {
            let ClientBody::Call(call) = peer.recv().await else {
                panic!("expected a call")
            };
            let reply = v1::Reply {
                call_id: call.call_id,
                outcome: Some(v1::reply::Outcome::Error(error(wire, "because"))),
            };
            peer.send(BrokerBody::Reply(reply)).await;
        };
        let call = ctx.call(SERVICE, "Say", Vec::new(), None);
        let (reply, ()) = within(async { tokio::join!(call, broker) }).await;
        let error = reply.unwrap_err();
        assert_eq!(error.code(), Some(code), "{wire:?}");
        assert_eq!(error.status().unwrap().message(), "because");
        assert_eq!(error.to_string(), format!("{code}: because"));
    }
}

#[tokio::test]
async fn a_reply_with_no_outcome_is_internal() {
    let (ctx, mut peer) = Peer::connected().await;
    let broker = async {
        let ClientBody::Call(call) = peer.recv().await else {
            panic!("expected a call")
        };
        let reply = v1::Reply {
            call_id: call.call_id,
            outcome: None,
        };
        peer.send(BrokerBody::Reply(reply)).await;
    };
    let call = ctx.call(SERVICE, "Say", Vec::new(), None);
    let (reply, ()) = within(async { tokio::join!(call, broker) }).await;
    assert_eq!(reply.unwrap_err().code(), Some(Code::Internal));
}

#[tokio::test]
async fn a_denied_lookup_is_permission_denied() {
    let (ctx, mut peer) = Peer::connected().await;
    let broker = async {
        let ClientBody::Lookup(lookup) = peer.recv().await else {
            panic!("expected a lookup")
        };
        let response = v1::Response {
            request_id: lookup.request_id,
            error: Some(error(v1::Status::PermissionDenied, "not in services.uses")),
            service: None,
        };
        peer.send(BrokerBody::Response(response)).await;
    };
    let (lookup, ()) = within(async { tokio::join!(ctx.lookup(SERVICE), broker) }).await;
    let error = lookup.unwrap_err();
    assert_eq!(error.code(), Some(Code::PermissionDenied));
    assert_eq!(error.to_string(), "PERMISSION_DENIED: not in services.uses");
}

#[tokio::test]
async fn dropping_a_call_future_cancels_the_call() {
    let (ctx, mut peer) = Peer::connected().await;
    let call = ctx.call(SERVICE, "Slow", Vec::new(), None);
    let gave_up = tokio::time::timeout(Duration::from_millis(20), call).await;
    assert!(gave_up.is_err(), "the broker never replied");
    let ClientBody::Call(call) = peer.recv().await else {
        panic!("expected the call")
    };
    match peer.recv().await {
        ClientBody::Cancel(cancel) => assert_eq!(cancel.call_id, call.call_id),
        other => panic!("expected a cancel, got {other:?}"),
    }
    // A reply crossing the cancel is ignored, and the connection goes on.
    let late = v1::Reply {
        call_id: call.call_id,
        outcome: Some(v1::reply::Outcome::Payload(Vec::new())),
    };
    peer.send(BrokerBody::Reply(late)).await;
    let broker = async {
        let ClientBody::Call(call) = peer.recv().await else {
            panic!("expected a call")
        };
        let reply = v1::Reply {
            call_id: call.call_id,
            outcome: Some(v1::reply::Outcome::Payload(b"fine".to_vec())),
        };
        peer.send(BrokerBody::Reply(reply)).await;
    };
    let next = ctx.call(SERVICE, "Say", Vec::new(), None);
    let (reply, ()) = within(async { tokio::join!(next, broker) }).await;
    assert_eq!(reply.unwrap(), b"fine");
}

#[tokio::test]
async fn a_call_that_was_answered_is_not_cancelled() {
    let (ctx, mut peer) = Peer::connected().await;
    let broker = async {
        let ClientBody::Call(call) = peer.recv().await else {
            panic!("expected a call")
        };
        let reply = v1::Reply {
            call_id: call.call_id,
            outcome: Some(v1::reply::Outcome::Payload(Vec::new())),
        };
        peer.send(BrokerBody::Reply(reply)).await;
    };
    let call = ctx.call(SERVICE, "Say", Vec::new(), None);
    let (reply, ()) = within(async { tokio::join!(call, broker) }).await;
    reply.unwrap();
    peer.expect_silence().await;
}

/// Answers `Say` with its payload, fails `Fail`, and never finishes `Hang` (telling the test when
/// it starts and when its future is dropped).
struct TestService {
    hang: mpsc::UnboundedSender<&'static str>,
}

struct DropSignal(mpsc::UnboundedSender<&'static str>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

impl ServiceHandler for TestService {
    async fn handle(&self, call: IncomingCall) -> Result<Vec<u8>, Status> {
        assert_eq!(call.caller.app_name, "caller");
        match call.method.as_str() {
            "Say" => Ok(call.payload),
            "Fail" => Err(Status::invalid_argument("empty text")),
            "Hang" => {
                let _signal = DropSignal(self.hang.clone());
                let _ = self.hang.send("started");
                std::future::pending().await
            }
            other => Err(Status::not_found(format!("no method {other}"))),
        }
    }
}

async fn register_test_service(
    ctx: &Context,
    peer: &mut Peer,
) -> mpsc::UnboundedReceiver<&'static str> {
    let (hang, hang_events) = mpsc::unbounded_channel();
    let broker = async {
        let ClientBody::Register(register) = peer.recv().await else {
            panic!("expected a register")
        };
        assert_eq!(register.service_id, SERVICE.as_bytes());
        assert_eq!(register.methods, ["Say", "Fail", "Hang"]);
        assert_eq!(register.topics, ["Said"]);
        let response = v1::Response {
            request_id: register.request_id,
            ..Default::default()
        };
        peer.send(BrokerBody::Response(response)).await;
    };
    let register = ctx.register(
        SERVICE,
        &["Say", "Fail", "Hang"],
        &["Said"],
        TestService { hang },
    );
    let (registered, ()) = within(async { tokio::join!(register, broker) }).await;
    registered.unwrap();
    hang_events
}

fn incoming(call_id: u64, method: &str, payload: &[u8]) -> BrokerBody {
    BrokerBody::IncomingCall(v1::IncomingCall {
        call_id,
        service_id: SERVICE.as_bytes().to_vec(),
        method: method.to_owned(),
        payload: payload.to_vec(),
        deadline_ms: 1000,
        caller: Some(common::peer_identity(Uuid::from_u128(2), "caller")),
    })
}

#[tokio::test]
async fn incoming_calls_reach_the_handler_and_its_answers_go_back() {
    let (ctx, mut peer) = Peer::connected().await;
    let _dropped = register_test_service(&ctx, &mut peer).await;
    peer.send(incoming(41, "Say", b"hello")).await;
    match peer.recv().await {
        ClientBody::Reply(reply) => {
            assert_eq!(reply.call_id, 41);
            assert_eq!(
                reply.outcome,
                Some(v1::reply::Outcome::Payload(b"hello".to_vec()))
            );
        }
        other => panic!("expected a reply, got {other:?}"),
    }
    peer.send(incoming(42, "Fail", b"")).await;
    match peer.recv().await {
        ClientBody::Reply(reply) => {
            assert_eq!(reply.call_id, 42);
            assert_eq!(
                reply.outcome,
                Some(v1::reply::Outcome::Error(error(
                    v1::Status::InvalidArgument,
                    "empty text"
                )))
            );
        }
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[tokio::test]
async fn a_call_for_a_service_not_registered_here_is_not_found() {
    let (_ctx, mut peer) = Peer::connected().await;
    peer.send(incoming(5, "Say", b"")).await;
    let ClientBody::Reply(reply) = peer.recv().await else {
        panic!("expected a reply")
    };
    let Some(v1::reply::Outcome::Error(error)) = reply.outcome else {
        panic!("expected an error")
    };
    assert_eq!(error.status, i32::from(v1::Status::NotFound));
}

#[tokio::test]
async fn a_cancel_from_the_broker_drops_the_handler_and_sends_no_reply() {
    let (ctx, mut peer) = Peer::connected().await;
    let mut hang = register_test_service(&ctx, &mut peer).await;
    peer.send(incoming(7, "Hang", b"")).await;
    assert_eq!(within(hang.recv()).await, Some("started"));
    peer.send(BrokerBody::Cancel(v1::Cancel { call_id: 7 }))
        .await;
    assert_eq!(within(hang.recv()).await, Some("dropped"));
    peer.expect_silence().await;
}

#[tokio::test]
async fn a_failed_registration_removes_the_handler() {
    let (ctx, mut peer) = Peer::connected().await;
    let broker = async {
        let ClientBody::Register(register) = peer.recv().await else {
            panic!("expected a register")
        };
        let response = v1::Response {
            request_id: register.request_id,
            error: Some(error(
                v1::Status::PermissionDenied,
                "not in services.provides",
            )),
            service: None,
        };
        peer.send(BrokerBody::Response(response)).await;
    };
    let (hang, _) = mpsc::unbounded_channel();
    let register = ctx.register(SERVICE, &["Say"], &[], TestService { hang });
    let (registered, ()) = within(async { tokio::join!(register, broker) }).await;
    assert_eq!(registered.unwrap_err().code(), Some(Code::PermissionDenied));
    peer.send(incoming(1, "Say", b"")).await;
    let ClientBody::Reply(reply) = peer.recv().await else {
        panic!("expected a reply")
    };
    assert!(matches!(
        reply.outcome,
        Some(v1::reply::Outcome::Error(v1::Error { status, .. }))
            if status == i32::from(v1::Status::NotFound)
    ));
}

#[tokio::test]
async fn publishing_checks_the_registration_before_sending() {
    let (ctx, mut peer) = Peer::connected().await;
    let refused = ctx.publish(SERVICE, "Said", b"x".to_vec()).await;
    assert!(matches!(
        refused,
        Err(Error::NotPublishable { reason, .. })
            if reason == "this app does not provide the service"
    ));
    let _dropped = register_test_service(&ctx, &mut peer).await;
    let refused = ctx.publish(SERVICE, "Other", b"x".to_vec()).await;
    assert!(matches!(
        refused,
        Err(Error::NotPublishable { reason, .. }) if reason == "the topic is not registered"
    ));
    ctx.publish(SERVICE, "Said", b"x".to_vec()).await.unwrap();
    match peer.recv().await {
        ClientBody::Publish(publish) => {
            assert_eq!(publish.service_id, SERVICE.as_bytes());
            assert_eq!(publish.topic, "Said");
            assert_eq!(publish.payload, b"x");
        }
        other => panic!("expected the publish, got {other:?}"),
    }
}

fn event(payload: &[u8], dropped: u64) -> BrokerBody {
    BrokerBody::Event(v1::Event {
        service_id: SERVICE.as_bytes().to_vec(),
        topic: "Said".to_owned(),
        payload: payload.to_vec(),
        dropped,
    })
}

async fn subscribe(ctx: &Context, peer: &mut Peer) -> elastos_sdk::Subscription {
    let broker = async {
        let ClientBody::Subscribe(subscribe) = peer.recv().await else {
            panic!("expected a subscribe")
        };
        assert_eq!(subscribe.topic, "Said");
        let response = v1::Response {
            request_id: subscribe.request_id,
            error: None,
            service: Some(service_info(SERVICE, &["Say"], &["Said"])),
        };
        peer.send(BrokerBody::Response(response)).await;
    };
    let (subscribed, ()) =
        within(async { tokio::join!(ctx.subscribe(SERVICE, "Said"), broker) }).await;
    subscribed.unwrap()
}

#[tokio::test]
async fn events_arrive_with_the_brokers_dropped_count_and_unsubscribe_on_drop() {
    let (ctx, mut peer) = Peer::connected().await;
    let mut subscription = subscribe(&ctx, &mut peer).await;
    assert_eq!(subscription.service().info().methods, ["Say"]);
    peer.send(event(b"one", 0)).await;
    peer.send(event(b"two", 3)).await;
    let one = within(subscription.next()).await.unwrap();
    let two = within(subscription.next()).await.unwrap();
    assert_eq!((one.payload, one.dropped), (b"one".to_vec(), 0));
    assert_eq!((two.payload, two.dropped), (b"two".to_vec(), 3));
    drop(subscription);
    match peer.recv().await {
        ClientBody::Unsubscribe(unsubscribe) => {
            assert_eq!(unsubscribe.service_id, SERVICE.as_bytes());
            assert_eq!(unsubscribe.topic, "Said");
        }
        other => panic!("expected an unsubscribe, got {other:?}"),
    }
}

#[tokio::test]
async fn two_local_subscribers_share_one_subscription_and_both_get_events() {
    let (ctx, mut peer) = Peer::connected().await;
    let mut first = subscribe(&ctx, &mut peer).await;
    let mut second = subscribe(&ctx, &mut peer).await;
    peer.send(event(b"both", 0)).await;
    assert_eq!(within(first.next()).await.unwrap().payload, b"both");
    assert_eq!(within(second.next()).await.unwrap().payload, b"both");
    drop(first);
    peer.expect_silence().await;
    drop(second);
    assert!(matches!(peer.recv().await, ClientBody::Unsubscribe(_)));
}

#[tokio::test]
async fn a_subscriber_that_reads_too_slowly_loses_events_and_is_told_how_many() {
    let (ctx, mut peer) = Peer::connected().await;
    let mut subscription = subscribe(&ctx, &mut peer).await;
    let queue: u64 = 256;
    let lost = 10;
    for index in 0..queue + lost {
        peer.send(event(&index.to_le_bytes(), 0)).await;
    }
    // A call answered after the events: once its reply is in, the reader has offered every event
    // to the subscription's queue, which kept the first `queue` of them.
    let broker = async {
        let ClientBody::Call(call) = peer.recv().await else {
            panic!("expected a call")
        };
        let reply = v1::Reply {
            call_id: call.call_id,
            outcome: Some(v1::reply::Outcome::Payload(Vec::new())),
        };
        peer.send(BrokerBody::Reply(reply)).await;
    };
    let sync = ctx.call(SERVICE, "Sync", Vec::new(), None);
    let (synced, ()) = within(async { tokio::join!(sync, broker) }).await;
    synced.unwrap();
    for index in 0..queue {
        let event = within(subscription.next()).await.unwrap();
        assert_eq!(
            (event.payload, event.dropped),
            (index.to_le_bytes().to_vec(), 0)
        );
    }
    // The next event counts the SDK's losses and the broker's.
    peer.send(event(b"next", 2)).await;
    let next = within(subscription.next()).await.unwrap();
    assert_eq!((next.payload, next.dropped), (b"next".to_vec(), lost + 2));
}

#[tokio::test]
async fn provider_gone_resolves_the_lookup_link_once() {
    let (ctx, mut peer) = Peer::connected().await;
    async fn lookup(ctx: &Context, peer: &mut Peer) -> elastos_sdk::Service {
        let broker = async {
            let ClientBody::Lookup(lookup) = peer.recv().await else {
                panic!("expected a lookup")
            };
            let response = v1::Response {
                request_id: lookup.request_id,
                error: None,
                service: Some(service_info(SERVICE, &["Say"], &[])),
            };
            peer.send(BrokerBody::Response(response)).await;
        };
        let (service, ()) = within(async { tokio::join!(ctx.lookup(SERVICE), broker) }).await;
        service.unwrap()
    }
    let first = lookup(&ctx, &mut peer).await;
    assert_eq!(first.id(), SERVICE);
    assert_eq!(first.info().provider.app_name, "provider");
    let gone = v1::ProviderGone {
        service_id: SERVICE.as_bytes().to_vec(),
        reason: v1::GoneReason::Stopped.into(),
    };
    peer.send(BrokerBody::ProviderGone(gone.clone())).await;
    assert_eq!(within(first.gone()).await.unwrap(), GoneReason::Stopped);
    // A new lookup links to the next provider: the old departure does not count for it.
    let second = lookup(&ctx, &mut peer).await;
    let waiting = tokio::time::timeout(Duration::from_millis(50), second.gone()).await;
    assert!(
        waiting.is_err(),
        "resolved for a departure before the lookup"
    );
    peer.send(BrokerBody::ProviderGone(v1::ProviderGone {
        reason: v1::GoneReason::Unregistered.into(),
        ..gone
    }))
    .await;
    assert_eq!(
        within(second.gone()).await.unwrap(),
        GoneReason::Unregistered
    );
    // The first link stays resolved.
    assert_eq!(within(first.gone()).await.unwrap(), GoneReason::Stopped);
}

#[tokio::test]
async fn a_watch_reports_each_provider_and_unwatches_on_drop() {
    let (ctx, mut peer) = Peer::connected().await;
    let broker = async {
        let ClientBody::Watch(watch) = peer.recv().await else {
            panic!("expected a watch")
        };
        let response = v1::Response {
            request_id: watch.request_id,
            ..Default::default()
        };
        peer.send(BrokerBody::Response(response)).await;
    };
    let (watch, ()) = within(async { tokio::join!(ctx.watch(SERVICE), broker) }).await;
    let mut watch = watch.unwrap();
    let available = v1::ServiceAvailable {
        service: Some(service_info(SERVICE, &["Say"], &[])),
    };
    peer.send(BrokerBody::ServiceAvailable(available)).await;
    let info = within(watch.next()).await.unwrap();
    assert_eq!(info.id, SERVICE);
    drop(watch);
    assert!(matches!(peer.recv().await, ClientBody::Unwatch(_)));
}

#[tokio::test]
async fn the_connection_ending_fails_pending_calls_and_ends_subscriptions() {
    let (ctx, mut peer) = Peer::connected().await;
    let mut subscription = subscribe(&ctx, &mut peer).await;
    let call = ctx.call(SERVICE, "Say", Vec::new(), None);
    let broker = async move {
        assert!(matches!(peer.recv().await, ClientBody::Call(_)));
        drop(peer);
    };
    let (reply, ()) = within(async { tokio::join!(call, broker) }).await;
    assert!(matches!(
        reply.unwrap_err(),
        Error::Disconnected(Disconnect::Eof)
    ));
    assert!(within(subscription.next()).await.is_none());
    assert!(matches!(within(ctx.closed()).await, Disconnect::Eof));
    // And nothing new starts.
    assert!(matches!(
        ctx.call(SERVICE, "Say", Vec::new(), None).await,
        Err(Error::Disconnected(Disconnect::Eof))
    ));
}

#[tokio::test]
async fn a_goodbye_ends_the_connection_with_its_reason() {
    let (ctx, mut peer) = Peer::connected().await;
    let reason = error(
        v1::Status::InvalidArgument,
        "publish on a topic not registered",
    );
    peer.send(BrokerBody::Goodbye(v1::Goodbye {
        reason: Some(reason),
    }))
    .await;
    match within(ctx.closed()).await {
        Disconnect::Goodbye(status) => assert_eq!(status.code(), Code::InvalidArgument),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn garbage_from_the_broker_ends_the_connection() {
    use tokio::io::AsyncWriteExt;
    let (app, mut peer) = Peer::pair();
    let (ctx, ()) = tokio::join!(
        async { Context::connect(app).await.unwrap() },
        peer.accept()
    );
    // Not a frame: a length prefix far above the maximum.
    let (_, mut raw) = Peer::into_stream(peer).into_split();
    raw.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    assert!(matches!(within(ctx.closed()).await, Disconnect::Frame(_)));
}

#[tokio::test]
async fn close_sends_everything_queued_then_closes() {
    let (ctx, mut peer) = Peer::connected().await;
    let _dropped = register_test_service(&ctx, &mut peer).await;
    for _ in 0..3 {
        ctx.publish(SERVICE, "Said", b"bye".to_vec()).await.unwrap();
    }
    ctx.close().await;
    for _ in 0..3 {
        assert!(matches!(peer.recv().await, ClientBody::Publish(_)));
    }
    assert!(within(peer.recv_or_eof()).await.is_none());
}

#[tokio::test]
async fn dropping_every_context_closes_the_connection() {
    let (ctx, mut peer) = Peer::connected().await;
    let clone = ctx.clone();
    drop(ctx);
    peer.expect_silence().await;
    drop(clone);
    assert!(within(peer.recv_or_eof()).await.is_none());
}

#[test]
fn the_blocking_api_calls_and_subscribes_without_a_runtime_of_the_apps() {
    let (app, broker) = std::os::unix::net::UnixStream::pair().unwrap();
    let broker_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let finished = Arc::new(Notify::new());
    let broker_finished = Arc::clone(&finished);
    let broker_thread = std::thread::spawn(move || {
        broker_runtime.block_on(async move {
            broker.set_nonblocking(true).unwrap();
            let mut peer = Peer::from_stream(tokio::net::UnixStream::from_std(broker).unwrap());
            peer.accept().await;
            let ClientBody::Call(call) = peer.recv().await else {
                panic!("expected a call")
            };
            let reply = v1::Reply {
                call_id: call.call_id,
                outcome: Some(v1::reply::Outcome::Payload(b"pong".to_vec())),
            };
            peer.send(BrokerBody::Reply(reply)).await;
            let ClientBody::Subscribe(subscribe) = peer.recv().await else {
                panic!("expected a subscribe")
            };
            let response = v1::Response {
                request_id: subscribe.request_id,
                error: None,
                service: Some(service_info(SERVICE, &[], &["Said"])),
            };
            peer.send(BrokerBody::Response(response)).await;
            peer.send(event(b"tick", 0)).await;
            broker_finished.notified().await;
        })
    });
    let ctx = elastos_sdk::blocking::Context::connect(app).unwrap();
    assert_eq!(ctx.identity().app_id, APP_ID);
    let reply = ctx.call(SERVICE, "Say", b"ping".to_vec(), None).unwrap();
    assert_eq!(reply, b"pong");
    let mut subscription = ctx.subscribe(SERVICE, "Said").unwrap();
    assert_eq!(subscription.recv().unwrap().payload, b"tick");
    finished.notify_one();
    broker_thread.join().unwrap();
    // The broker is gone: the subscription ends.
    assert!(subscription.next().is_none());
}

#[tokio::test]
async fn unregistering_stops_calls_reaching_the_handler() {
    let (ctx, mut peer) = Peer::connected().await;
    let _hang = register_test_service(&ctx, &mut peer).await;
    let broker = async {
        let ClientBody::Unregister(unregister) = peer.recv().await else {
            panic!("expected an unregister")
        };
        assert_eq!(unregister.service_id, SERVICE.as_bytes());
        let response = v1::Response {
            request_id: unregister.request_id,
            ..Default::default()
        };
        peer.send(BrokerBody::Response(response)).await;
    };
    let (unregistered, ()) = within(async { tokio::join!(ctx.unregister(SERVICE), broker) }).await;
    unregistered.unwrap();
    peer.send(incoming(3, "Say", b"late")).await;
    let ClientBody::Reply(reply) = peer.recv().await else {
        panic!("expected a reply")
    };
    assert!(matches!(
        reply.outcome,
        Some(v1::reply::Outcome::Error(v1::Error { status, .. }))
            if status == i32::from(v1::Status::NotFound)
    ));
    assert!(matches!(
        ctx.publish(SERVICE, "Said", Vec::new()).await,
        Err(Error::NotPublishable { .. })
    ));
}

/// Takes [`Blocking`]'s time on the thread, the way a handler doing synchronous work does.
struct Blocking(Duration);

impl ServiceHandler for Blocking {
    async fn handle(&self, call: IncomingCall) -> Result<Vec<u8>, Status> {
        std::thread::sleep(self.0);
        Ok(call.payload)
    }
}

/// Issue 12: on a `current_thread` runtime, a reply used to leave only after the handler of the
/// next call, already waiting to run, had blocked the thread too (the woken writer task ran
/// behind it), so each reply came one service time late.
#[tokio::test]
async fn a_reply_leaves_when_its_handler_returns_though_the_next_handler_blocks() {
    const WORK: Duration = Duration::from_millis(200);
    let (app, broker) = std::os::unix::net::UnixStream::pair().unwrap();
    broker.set_nonblocking(true).unwrap();
    let mut peer = Peer::from_stream(tokio::net::UnixStream::from_std(broker).unwrap());
    let (finished, finish) = tokio::sync::oneshot::channel::<()>();
    // The provider, on a runtime of its own whose one thread its handlers block.
    let provider = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            app.set_nonblocking(true).unwrap();
            let app = tokio::net::UnixStream::from_std(app).unwrap();
            let ctx = Context::connect(app).await.unwrap();
            ctx.register(SERVICE, &["Work"], &[], Blocking(WORK))
                .await
                .unwrap();
            let _ = finish.await;
        });
    });
    peer.accept().await;
    let ClientBody::Register(register) = peer.recv().await else {
        panic!("expected a register")
    };
    let response = v1::Response {
        request_id: register.request_id,
        ..Default::default()
    };
    peer.send(BrokerBody::Response(response)).await;
    peer.send(incoming(1, "Work", b"")).await;
    peer.send(incoming(2, "Work", b"")).await;
    let mut answered = Vec::new();
    for _ in 0..2 {
        let ClientBody::Reply(reply) = peer.recv().await else {
            panic!("expected a reply")
        };
        answered.push((reply.call_id, std::time::Instant::now()));
    }
    let _ = finished.send(());
    provider.join().unwrap();
    assert_eq!([answered[0].0, answered[1].0], [1, 2]);
    let apart = answered[1].1 - answered[0].1;
    assert!(
        apart >= WORK / 2,
        "the first reply came only {apart:?} before the second: it waited for the second call's \
         handler"
    );
}
