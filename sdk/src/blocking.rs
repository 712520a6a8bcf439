//! A blocking façade over the async API, for apps without an async runtime of their own.
//!
//! [`Context`] starts one thread running a tokio `current_thread` runtime, where the SDK's reader,
//! writer and handlers run, and each method blocks the calling thread until its operation is
//! done. Do not call it from inside an async runtime (tokio panics on nested `block_on`); use the
//! async [`crate::Context`] there.

use std::future::Future;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::context::Service;
use crate::error::{Disconnect, Error, Status};
use crate::handler::ServiceHandler;
use crate::messages::{Event, Identity, IncomingCall};

/// A blocking connection to the broker. Dropping it flushes what is queued, closes the
/// connection and stops the SDK thread.
#[derive(Debug)]
pub struct Context {
    inner: Option<crate::Context>,
    runtime: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Context {
    /// As [`crate::Context::from_env`].
    pub fn from_env() -> Result<Context, Error> {
        Context::start(crate::Context::from_env)
    }

    /// As [`crate::Context::connect`], on a blocking socket.
    pub fn connect(stream: UnixStream) -> Result<Context, Error> {
        Context::start(move || async move {
            stream
                .set_nonblocking(true)
                .map_err(|source| Error::Setup { source })?;
            let stream = tokio::net::UnixStream::from_std(stream)
                .map_err(|source| Error::Setup { source })?;
            crate::Context::connect(stream).await
        })
    }

    fn start<F: Future<Output = Result<crate::Context, Error>>>(
        connect: impl FnOnce() -> F,
    ) -> Result<Context, Error> {
        let runtime = Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| Error::Runtime { source })?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("elastos-sdk".to_owned())
            .spawn(move || {
                // Either a stop or the `Context` being dropped without one ends the thread.
                let _ = runtime.block_on(stopped);
            })
            .map_err(|source| Error::Runtime { source })?;
        let mut context = Context {
            inner: None,
            runtime: handle,
            stop: Some(stop),
            thread: Some(thread),
        };
        context.inner = Some(context.runtime.block_on(connect())?);
        Ok(context)
    }

    /// The async context, for what this façade does not wrap:
    /// `ctx.block_on(ctx.as_async().watch(id))`.
    pub fn as_async(&self) -> &crate::Context {
        self.inner.as_ref().expect("set from start until drop")
    }

    /// Runs `future` to completion on the SDK's runtime, blocking this thread: for generated
    /// typed clients (`ctx.block_on(echo.say(request))`) and anything else async.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// As [`crate::Context::identity`].
    pub fn identity(&self) -> &Identity {
        self.as_async().identity()
    }

    /// As [`crate::Context::register`], with a plain function as the handler. It runs on the
    /// SDK thread, one call at a time, so a slow handler delays the connection's other work;
    /// use the async API for services that need concurrency.
    pub fn register(
        &self,
        service: Uuid,
        methods: &[&str],
        topics: &[&str],
        handler: impl Fn(IncomingCall) -> Result<Vec<u8>, Status> + Send + Sync + 'static,
    ) -> Result<(), Error> {
        let handler = FnHandler(handler);
        self.block_on(self.as_async().register(service, methods, topics, handler))
    }

    /// As [`crate::Context::lookup`].
    pub fn lookup(&self, service: Uuid) -> Result<Service, Error> {
        self.block_on(self.as_async().lookup(service))
    }

    /// As [`crate::Context::call`].
    pub fn call(
        &self,
        service: Uuid,
        method: &str,
        payload: Vec<u8>,
        deadline: Option<Duration>,
    ) -> Result<Vec<u8>, Error> {
        self.block_on(self.as_async().call(service, method, payload, deadline))
    }

    /// As [`crate::Context::subscribe`].
    pub fn subscribe(&self, service: Uuid, topic: &str) -> Result<Subscription, Error> {
        let subscription = self.block_on(self.as_async().subscribe(service, topic))?;
        Ok(Subscription {
            inner: subscription,
            runtime: self.runtime.clone(),
        })
    }

    /// As [`crate::Context::publish`].
    pub fn publish(&self, service: Uuid, topic: &str, payload: Vec<u8>) -> Result<(), Error> {
        self.block_on(self.as_async().publish(service, topic, payload))
    }

    /// Blocks until the connection to the broker ends: what a blocking provider's `main` does
    /// after registering.
    pub fn wait_closed(&self) -> Disconnect {
        self.block_on(self.as_async().closed())
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            self.runtime.block_on(inner.close());
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The thread only runs the runtime; if it panicked, there is nothing left to stop.
            let _ = thread.join();
        }
    }
}

/// The events of one topic, read by blocking. Also an [`Iterator`] that ends with the connection.
#[derive(Debug)]
pub struct Subscription {
    inner: crate::Subscription,
    runtime: Handle,
}

impl Subscription {
    /// Blocks for the next event; `None` once the connection has ended.
    pub fn recv(&mut self) -> Option<Event> {
        self.runtime.block_on(self.inner.next())
    }

    /// The async subscription: its service and topic.
    pub fn as_async(&self) -> &crate::Subscription {
        &self.inner
    }
}

impl Iterator for Subscription {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.recv()
    }
}

/// A plain function as a [`ServiceHandler`].
struct FnHandler<F>(F);

impl<F> ServiceHandler for FnHandler<F>
where
    F: Fn(IncomingCall) -> Result<Vec<u8>, Status> + Send + Sync + 'static,
{
    async fn handle(&self, call: IncomingCall) -> Result<Vec<u8>, Status> {
        (self.0)(call)
    }
}
