//! The app side of the elastos broker. A jailed app can open no socket and start no process; its
//! one channel to the world is fd 3, a socket to the broker. Through this crate it offers
//! services, finds them by UUID, calls them and subscribes to their events, speaking the protocol
//! of `elastos-proto` (docs/protocol.md).
//!
//! ```no_run
//! # async fn demo() -> Result<(), elastos_sdk::Error> {
//! use elastos_sdk::{Context, Uuid};
//! const ECHO: Uuid = Uuid::from_u128(0x6f1c2a57_2b1e_4c3d_8e9f_0a1b2c3d4e5f);
//!
//! let ctx = Context::from_env().await?; // fd 3, handshake
//! println!("I am {}", ctx.identity().app_name);
//! let echo = ctx.lookup(ECHO).await?; // starts the provider if needed
//! let reply = ctx.call(echo.id(), "Say", b"hi".to_vec(), None).await?;
//! # Ok(()) }
//! ```
//!
//! - [`Context`]: the connection. [`Context::from_env`] takes the socket at `ELASTOS_IPC_FD`
//!   (default 3) and returns the identity the broker attested. Then
//!   [`register`](Context::register) a [`ServiceHandler`], [`lookup`](Context::lookup),
//!   [`call`](Context::call) (dropping the future cancels the call),
//!   [`subscribe`](Context::subscribe) / [`publish`](Context::publish),
//!   [`watch`](Context::watch) for a service to appear, and [`Service::gone`] to learn that a
//!   provider went away (like Binder's `linkToDeath`).
//! - [`typed`]: the same with prost messages; what `elastos-codegen` generates clients and server
//!   traits on top of.
//! - [`blocking`]: the same without an async runtime of the app's own.
//! - Errors: [`Error`]; a failure answered by the broker or a provider is [`Error::Status`], a
//!   [`Status`] with a [`Code`] (`NOT_FOUND`, `PERMISSION_DENIED`, ...) and a message.
//!
//! How it works: one reader task demultiplexes everything the broker sends (replies by call id,
//! responses by request id, incoming calls to their handler, events to their subscriptions), and
//! one writer task writes queued frames in batches. It runs on any tokio runtime with I/O enabled,
//! `current_thread` included (the jail limits threads); it needs no timers.
//!
//! Not here, on purpose:
//! - No permission checks: the broker enforces the manifest, the SDK only reports its answer.
//! - No retries or reconnects: the socket is the app's one connection, made by the launcher, and
//!   [`Code`] says when a retry makes sense.
//! - No client-streaming calls: version 1 of the protocol has unary calls and event streams.
//!
//! The fd is the SDK's: the rest of the app must not read, write or close fd 3. Taking it is this
//! crate's only `unsafe` (in `fd`).

#![deny(unsafe_code)]

pub mod blocking;
mod connection;
mod context;
mod error;
// The one module allowed `unsafe`: taking ownership of the inherited socket.
#[allow(unsafe_code)]
mod fd;
mod handler;
mod messages;
pub mod typed;

pub use context::{Context, Service, Subscription, Watch};
pub use error::{Code, Disconnect, Error, Report, Status};
pub use fd::{DEFAULT_IPC_FD, IPC_FD_VAR};
pub use handler::ServiceHandler;
pub use messages::{Event, GoneReason, Identity, IncomingCall, Limits, ServiceInfo};
pub use uuid::Uuid;
