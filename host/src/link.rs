//! Where an app's connection (the broker's end of its fd 3) goes: the broker daemon when one
//! runs, else a broker embedded in the `elastos run` process, started only once the app speaks.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;

use elastos_broker::{AppIdentity, Broker, BrokerConfig, Origin};
use elastos_loader::JailHandle;

use crate::activator::AppLauncher;
use crate::control::{into_tokio, ControlClient, ControlError, ControlRequest, PendingAnswer};
use crate::paths::StateDirs;

/// An app's connection could not be handed to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The daemon refused or failed the attach request.
    #[error("attaching the app to the broker daemon")]
    Attach(#[source] ControlError),
    /// The embedded broker's thread could not be started.
    #[error("cannot start the embedded broker's thread")]
    Thread(#[source] std::io::Error),
    /// The embedded broker is gone (its runtime could not start).
    #[error("the embedded broker stopped")]
    EmbeddedGone,
}

/// Where an app's connection goes.
pub enum BrokerLink {
    /// A running daemon; the app's end is handed over its control socket.
    Daemon(ControlClient),
    /// A broker embedded in this process (no daemon runs), on a thread of its own; it lives as
    /// long as the `elastos run` process.
    Embedded(tokio::sync::mpsc::UnboundedSender<(StdUnixStream, AppIdentity, u32)>),
}

impl BrokerLink {
    /// The daemon, if one listens.
    pub fn daemon(state: &StateDirs) -> Option<BrokerLink> {
        ControlClient::connect(&state.control_socket).map(BrokerLink::Daemon)
    }

    /// A new broker embedded in this process, which can activate installed apps. Its runtime
    /// runs on a thread of its own.
    pub fn embedded(launcher: AppLauncher) -> Result<BrokerLink, LinkError> {
        tracing::debug!("no broker daemon: using an embedded broker");
        let (attach_tx, mut attach_rx) =
            tokio::sync::mpsc::unbounded_channel::<(StdUnixStream, AppIdentity, u32)>();
        std::thread::Builder::new()
            .name("elastos-broker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the embedded broker");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let broker = Broker::new(BrokerConfig::default(), Some(Arc::new(launcher)));
                    while let Some((stream, identity, pid)) = attach_rx.recv().await {
                        match into_tokio(stream) {
                            Ok(stream) => {
                                broker.attach(
                                    stream,
                                    identity,
                                    Origin::Launched { pid: Some(pid) },
                                );
                            }
                            Err(e) => tracing::error!(error = %e, "cannot serve the app's socket"),
                        }
                    }
                    // The launcher is done with its app; keep serving activated providers until
                    // the process exits.
                    std::future::pending::<()>().await;
                });
            })
            .map_err(LinkError::Thread)?;
        Ok(BrokerLink::Embedded(attach_tx))
    }

    /// Serves `stream` (the broker's end of an app's fd 3) as `identity`. A daemon also gets
    /// the jail's pidfd (`jail`), to stop the app on request; its answer is left to the caller
    /// (Some), which waits for it together with the app: the app runs meanwhile, and one that
    /// ends before the daemon answered need not wait for the answer at all.
    pub fn attach(
        &self,
        stream: StdUnixStream,
        identity: AppIdentity,
        jail: &JailHandle,
        pid: u32,
    ) -> Result<Option<PendingAnswer>, LinkError> {
        match self {
            BrokerLink::Daemon(client) => {
                let request = ControlRequest::Attach {
                    identity: identity.into(),
                    pid: Some(pid),
                };
                client
                    .send(&request, &[stream.as_raw_fd(), jail.as_fd().as_raw_fd()])
                    .map(Some)
                    .map_err(LinkError::Attach)
            }
            BrokerLink::Embedded(attach) => {
                attach
                    .send((stream, identity, pid))
                    .map_err(|_| LinkError::EmbeddedGone)?;
                Ok(None)
            }
        }
    }

    /// The daemon's client, when this link is a daemon.
    pub fn daemon_client(&self) -> Option<&ControlClient> {
        match self {
            BrokerLink::Daemon(client) => Some(client),
            BrokerLink::Embedded(_) => None,
        }
    }
}
