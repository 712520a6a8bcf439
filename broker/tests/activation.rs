//! On-demand activation through a fake Activator that attaches an in-process provider, and idle
//! stop of activated providers.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use elastos_broker::{
    ActivationError, Activator, BoxFuture, Broker, BrokerConfig, ConnectionId, InstanceExit,
    InstanceId, Origin, ServiceState,
};
use elastos_proto::v1::{self, broker_frame};
use tokio::net::UnixStream;
use uuid::Uuid;

#[derive(Clone, Copy)]
enum Behaviour {
    /// Attach an echo provider that registers ECHO and serves it.
    Serve,
    /// Attach an app that says hello and never registers.
    NeverRegister,
    /// Attach an app that says hello and exits before it registers.
    ExitBeforeRegistering,
    NotInstalled,
    Fail,
}

struct FakeActivator {
    behaviour: Behaviour,
    /// How long "starting the app" takes.
    delay: Duration,
    activations: AtomicU64,
    stopped: Mutex<Vec<InstanceId>>,
}

impl FakeActivator {
    fn new(behaviour: Behaviour, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            behaviour,
            delay,
            activations: AtomicU64::new(0),
            stopped: Mutex::new(Vec::new()),
        })
    }
}

impl Activator for FakeActivator {
    fn activate(
        &self,
        broker: Broker,
        service: Uuid,
    ) -> BoxFuture<'static, Result<ConnectionId, ActivationError>> {
        let instance = InstanceId(self.activations.fetch_add(1, Ordering::SeqCst) + 1);
        let (behaviour, delay) = (self.behaviour, self.delay);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let attach = || {
                let (ours, theirs) = UnixStream::pair().expect("socketpair");
                let origin = Origin::Activated {
                    instance,
                    pid: Some(1000 + instance.0 as u32),
                };
                (ours, broker.attach(theirs, provider_identity(), origin))
            };
            match behaviour {
                Behaviour::Serve => {
                    let (ours, id) = attach();
                    tokio::spawn(
                        async move { serve_echo(Client::over(ours, id).await, None).await },
                    );
                    Ok(id)
                }
                Behaviour::NeverRegister => {
                    let (ours, id) = attach();
                    tokio::spawn(async move {
                        let mut app = Client::over(ours, id).await;
                        app.closed().await;
                    });
                    Ok(id)
                }
                Behaviour::ExitBeforeRegistering => {
                    let (ours, id) = attach();
                    drop(Client::over(ours, id).await);
                    // The supervisor reaps it a moment after the socket closed; odd instances
                    // crash instead of exiting.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        let exit = match instance.0 % 2 {
                            0 => InstanceExit::Exited(3),
                            _ => InstanceExit::Signaled(11),
                        };
                        broker.instance_exited(instance, exit);
                    });
                    Ok(id)
                }
                Behaviour::NotInstalled => Err(ActivationError::NotInstalled { service }),
                Behaviour::Fail => Err(ActivationError::Failed {
                    service,
                    reason: "the jail said no".into(),
                }),
            }
        })
    }

    fn stop(&self, instance: InstanceId) {
        self.stopped.lock().unwrap().push(instance);
    }
}

fn broker_with(activator: &Arc<FakeActivator>, config: BrokerConfig) -> Broker {
    Broker::new(config, Some(Arc::clone(activator) as Arc<dyn Activator>))
}

#[tokio::test]
async fn a_call_starts_the_provider_and_is_answered() {
    let activator = FakeActivator::new(Behaviour::Serve, Duration::ZERO);
    let broker = broker_with(&activator, BrokerConfig::default());
    let mut client = Client::connect(&broker, client_identity("client")).await;
    let reply = client.call(1, ECHO, "say", b"wake up").await;
    assert_eq!(payload_of(&reply), b"wake up");
    assert_eq!(activator.activations.load(Ordering::SeqCst), 1);
    let provider = broker
        .apps()
        .into_iter()
        .find(|app| app.name == "echo-service")
        .expect("activated app");
    assert_eq!(
        provider.origin,
        Origin::Activated {
            instance: InstanceId(1),
            pid: Some(1001)
        }
    );
    // Running now: no second activation.
    assert_eq!(
        status_of_response(&client.lookup(2, ECHO).await),
        v1::Status::Ok
    );
    assert_eq!(activator.activations.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_activation() {
    let activator = FakeActivator::new(Behaviour::Serve, Duration::from_millis(100));
    let broker = broker_with(&activator, BrokerConfig::default());
    let mut waiting = Vec::new();
    for n in 0..8u64 {
        let broker = broker.clone();
        waiting.push(tokio::spawn(async move {
            let mut client =
                Client::connect(&broker, client_identity(&format!("client-{n}"))).await;
            if n % 2 == 0 {
                payload_of(&client.call(n, ECHO, "say", b"hi").await).to_vec()
            } else {
                let subscribed = client.subscribe(n, ECHO, "said").await;
                assert_eq!(status_of_response(&subscribed), v1::Status::Ok);
                b"hi".to_vec()
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let services = broker.services();
    assert!(
        matches!(services.as_slice(), [snapshot] if snapshot.state == ServiceState::Activating),
        "{services:?}"
    );
    for client in waiting {
        assert_eq!(client.await.expect("client"), b"hi");
    }
    assert_eq!(activator.activations.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_provider_that_never_registers_is_unavailable_after_the_timeout() {
    let activator = FakeActivator::new(Behaviour::NeverRegister, Duration::ZERO);
    let config = BrokerConfig {
        activation_timeout: Duration::from_millis(150),
        ..BrokerConfig::default()
    };
    let broker = broker_with(&activator, config);
    let mut client = Client::connect(&broker, client_identity("client")).await;
    let started = tokio::time::Instant::now();
    let response = client.lookup(1, ECHO).await;
    let waited = started.elapsed();
    assert_eq!(status_of_response(&response), v1::Status::Unavailable);
    assert!(response
        .error
        .expect("error")
        .message
        .contains("did not register"));
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    // A call starts a new attempt, which fails the same way.
    assert_eq!(
        status_of_reply(&client.call(1, ECHO, "say", b"").await),
        v1::Status::Unavailable
    );
    assert_eq!(activator.activations.load(Ordering::SeqCst), 2);
}

/// Default activation timeout (10 s): the answer must come from noticing the exit, not from it,
/// and say how the provider ended (instance 1 crashes, 2 exits 3, and so on).
#[tokio::test]
async fn a_provider_that_exits_before_registering_is_unavailable_at_once() {
    let activator = FakeActivator::new(Behaviour::ExitBeforeRegistering, Duration::ZERO);
    let broker = broker_with(&activator, BrokerConfig::default());
    let mut client = Client::connect(&broker, client_identity("client")).await;
    for round in 1..=20 {
        let started = tokio::time::Instant::now();
        let response = client.lookup(round, ECHO).await;
        assert_eq!(status_of_response(&response), v1::Status::Unavailable);
        let message = response.error.expect("error").message;
        let how = match round % 2 {
            0 => "exited with code 3",
            _ => "was killed by signal 11",
        };
        assert!(
            message.contains(&format!("{how} before it registered")),
            "{message}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{round}");
    }
    assert_eq!(activator.activations.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_call_whose_deadline_passes_during_activation_is_deadline_exceeded() {
    let activator = FakeActivator::new(Behaviour::Serve, Duration::from_millis(300));
    let broker = broker_with(&activator, BrokerConfig::default());
    let mut client = Client::connect(&broker, client_identity("client")).await;
    client.send_call(1, ECHO, "say", b"", 50).await;
    assert_eq!(
        status_of_reply(&client.reply().await),
        v1::Status::DeadlineExceeded
    );
    // The activation goes on and the next call finds the provider.
    assert_eq!(
        payload_of(&client.call(2, ECHO, "say", b"later").await),
        b"later"
    );
}

#[tokio::test]
async fn activation_failures_are_not_found_or_unavailable() {
    let activator = FakeActivator::new(Behaviour::NotInstalled, Duration::ZERO);
    let broker = broker_with(&activator, BrokerConfig::default());
    let mut client = Client::connect(&broker, client_identity("client")).await;
    let response = client.lookup(1, ECHO).await;
    assert_eq!(status_of_response(&response), v1::Status::NotFound);
    assert!(response
        .error
        .expect("error")
        .message
        .contains("no installed bundle"));

    let activator = FakeActivator::new(Behaviour::Fail, Duration::ZERO);
    let broker = broker_with(&activator, BrokerConfig::default());
    let mut client = Client::connect(&broker, client_identity("client")).await;
    let reply = client.call(1, ECHO, "say", b"").await;
    assert_eq!(status_of_reply(&reply), v1::Status::Unavailable);
    assert!(
        matches!(&reply.outcome, Some(v1::reply::Outcome::Error(e)) if e.message.contains("the jail said no"))
    );
    assert!(broker.services().is_empty());
}

#[tokio::test]
async fn an_idle_activated_provider_is_stopped() {
    let activator = FakeActivator::new(Behaviour::Serve, Duration::ZERO);
    let config = BrokerConfig {
        idle_stop_after: Some(Duration::from_millis(150)),
        ..BrokerConfig::default()
    };
    let broker = broker_with(&activator, config);
    let mut client = Client::connect(&broker, client_identity("client")).await;
    assert_eq!(
        status_of_response(&client.subscribe(1, ECHO, "said").await),
        v1::Status::Ok
    );

    // A subscriber keeps it running past the idle time.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(broker.services().len(), 1);
    assert!(activator.stopped.lock().unwrap().is_empty());

    client
        .send(elastos_proto::v1::client_frame::Body::Unsubscribe(
            v1::Unsubscribe {
                request_id: 2,
                service_id: id_bytes(ECHO),
                topic: "said".into(),
            },
        ))
        .await;
    assert_eq!(status_of_response(&client.response().await), v1::Status::Ok);
    let started = tokio::time::Instant::now();
    match client.recv().await {
        broker_frame::Body::ProviderGone(gone) => {
            assert_eq!(gone.reason(), v1::GoneReason::Stopped)
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // The connection's end is what calls stop; give the reader a moment to finish.
    let stopped = tokio::time::Instant::now();
    while activator.stopped.lock().unwrap().is_empty() {
        assert!(stopped.elapsed() < PATIENCE);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(*activator.stopped.lock().unwrap(), [InstanceId(1)]);
    assert_eq!(broker.apps().len(), 1);
    // And a new call starts it again.
    assert_eq!(
        payload_of(&client.call(3, ECHO, "say", b"again").await),
        b"again"
    );
    assert_eq!(activator.activations.load(Ordering::SeqCst), 2);
}

#[test]
fn activation_errors_say_what_failed() {
    let not_installed = ActivationError::NotInstalled { service: ECHO };
    assert!(not_installed.to_string().contains(&ECHO.to_string()));
    assert!(not_installed.to_string().contains("elastos install"));
    let failed = ActivationError::Failed {
        service: ECHO,
        reason: "exec failed".into(),
    };
    assert!(failed.to_string().ends_with("exec failed"));
}
