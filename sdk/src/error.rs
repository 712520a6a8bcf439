//! What can go wrong: [`Status`] (a failure the broker or a provider reports, with its [`Code`]),
//! [`Disconnect`] (why the connection to the broker ended) and [`Error`], which every fallible call
//! of the SDK returns.

use std::fmt;
use std::io;
use std::sync::Arc;

use elastos_proto::v1;
use elastos_proto::FrameError;
use uuid::Uuid;

/// The kind of a failure: the protocol's status codes (docs/protocol.md, "Status codes") minus
/// `OK` and `UNSPECIFIED`, which a failure never carries. A code the SDK does not know reads as
/// [`Code::Internal`], as the protocol asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// No such service (not running, not installed), method or topic. Retrying will not help.
    NotFound,
    /// The app's manifest does not list the service id in `services.uses` (lookup, call,
    /// subscribe, watch) or `services.provides` (register). Retrying will not help.
    PermissionDenied,
    /// The provider could not be started, did not register in time, went away mid-call, or
    /// another app provides the id. Retrying later may help.
    Unavailable,
    /// The call's deadline passed; the provider may or may not have acted.
    DeadlineExceeded,
    /// The caller cancelled the call.
    Cancelled,
    /// A malformed request (bad id or name, duplicate id), or a provider rejecting the payload.
    InvalidArgument,
    /// A bug in the broker or the provider; not the caller's fault.
    Internal,
    /// A limit was hit (calls in flight, services per connection, a full queue). Retry after
    /// some of this app's work completes.
    ResourceExhausted,
}

impl Code {
    /// The code of a wire `Status` value; `OK`, `UNSPECIFIED` and unknown values read as
    /// [`Code::Internal`].
    pub fn from_wire(status: i32) -> Code {
        match v1::Status::try_from(status) {
            Ok(v1::Status::NotFound) => Code::NotFound,
            Ok(v1::Status::PermissionDenied) => Code::PermissionDenied,
            Ok(v1::Status::Unavailable) => Code::Unavailable,
            Ok(v1::Status::DeadlineExceeded) => Code::DeadlineExceeded,
            Ok(v1::Status::Cancelled) => Code::Cancelled,
            Ok(v1::Status::InvalidArgument) => Code::InvalidArgument,
            Ok(v1::Status::ResourceExhausted) => Code::ResourceExhausted,
            Ok(v1::Status::Internal | v1::Status::Ok | v1::Status::Unspecified) | Err(_) => {
                Code::Internal
            }
        }
    }

    /// The wire `Status` of this code.
    pub fn to_wire(self) -> v1::Status {
        match self {
            Code::NotFound => v1::Status::NotFound,
            Code::PermissionDenied => v1::Status::PermissionDenied,
            Code::Unavailable => v1::Status::Unavailable,
            Code::DeadlineExceeded => v1::Status::DeadlineExceeded,
            Code::Cancelled => v1::Status::Cancelled,
            Code::InvalidArgument => v1::Status::InvalidArgument,
            Code::Internal => v1::Status::Internal,
            Code::ResourceExhausted => v1::Status::ResourceExhausted,
        }
    }

    /// The protocol's name of the code, like `PERMISSION_DENIED`.
    pub fn as_str(self) -> &'static str {
        self.to_wire().as_str_name().trim_start_matches("STATUS_")
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure as the protocol carries it: a [`Code`] for programs and a message for people. What a
/// [`ServiceHandler`](crate::ServiceHandler) returns to fail a call, and what a caller gets back
/// inside [`Error::Status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
pub struct Status {
    code: Code,
    message: String,
}

impl Status {
    /// A failure with `code` and a message for people (the broker keeps at most 1024 bytes of it).
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// [`Code::NotFound`] with `message`.
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NotFound, message)
    }

    /// [`Code::PermissionDenied`] with `message`: for a provider refusing a caller by its
    /// attested identity ([`IncomingCall::caller`](crate::IncomingCall::caller)).
    pub fn permission_denied(message: impl Into<String>) -> Status {
        Status::new(Code::PermissionDenied, message)
    }

    /// [`Code::Unavailable`] with `message`.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }

    /// [`Code::InvalidArgument`] with `message`: for a request payload a provider rejects.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }

    /// [`Code::Internal`] with `message`.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }

    /// [`Code::ResourceExhausted`] with `message`.
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }

    /// What kind of failure this is.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message for people; may be empty. From a provider it is untrusted text.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn from_wire(error: Option<v1::Error>) -> Status {
        match error {
            Some(error) => Status::new(Code::from_wire(error.status), error.message),
            None => Status::internal("the broker sent no error where one belongs"),
        }
    }

    pub(crate) fn to_wire(&self) -> v1::Error {
        v1::Error {
            status: self.code.to_wire().into(),
            message: self.message.clone(),
        }
    }
}

/// Why the connection to the broker ended. Cheap to clone: every pending operation gets a copy.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Disconnect {
    /// The broker closed the connection and said why: a protocol violation by this app, no
    /// common protocol version, or the app being stopped (`elastos stop`, idle timeout).
    #[error("the broker closed the connection: {0}")]
    Goodbye(Status),
    /// The broker closed the connection without a goodbye (it exited, or could not write).
    #[error("the broker closed the connection without saying why")]
    Eof,
    /// Reading from or writing to the broker socket failed.
    #[error("{op} on the broker socket failed")]
    Io {
        /// `"read"` or `"write"`.
        op: &'static str,
        /// The I/O error.
        source: Arc<io::Error>,
    },
    /// The broker sent bytes that are not a valid frame.
    #[error("the broker sent an invalid frame")]
    Frame(#[source] Arc<FrameError>),
    /// The broker sent a frame or a field the protocol does not allow where it came.
    #[error("the broker sent {what}; expected {expected}")]
    Unexpected {
        /// What came, like `"ServiceInfo.service_id of the wrong length"`.
        what: &'static str,
        /// What the protocol says should have come.
        expected: &'static str,
    },
    /// This app closed the connection: [`Context::close`](crate::Context::close), or every
    /// clone of the [`Context`](crate::Context) was dropped.
    #[error("this app closed its connection to the broker")]
    Closed,
}

/// Everything an SDK operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker or the provider answered with a failure. [`Error::code`] gives its code.
    #[error(transparent)]
    Status(#[from] Status),
    /// The connection to the broker is gone: nothing more can be sent or received on it. Its
    /// message is the [`Disconnect`]'s, which says why.
    #[error(transparent)]
    Disconnected(#[from] Disconnect),
    /// `ELASTOS_IPC_FD` is set to something that is not a file descriptor number.
    #[error("ELASTOS_IPC_FD is {value:?}; expected a file descriptor number like 3")]
    IpcFdVar {
        /// The variable's value.
        value: String,
    },
    /// The IPC fd is not an open socket: the app was not started by elastos.
    #[error(
        "fd {fd} is not the broker socket ({problem}); hint: start the app with `elastos run`, \
         which connects fd 3 to the broker"
    )]
    NotASocket {
        /// The fd, from `ELASTOS_IPC_FD` or 3.
        fd: i32,
        /// What was found instead, like `"fstat: EBADF"` or `"a regular file"`.
        problem: String,
    },
    /// [`Context::from_env`](crate::Context::from_env) was called a second time in this process.
    #[error(
        "the broker socket (fd {fd}) is already owned by a Context; hint: call \
         Context::from_env once and clone the Context"
    )]
    IpcFdTaken {
        /// The fd.
        fd: i32,
    },
    /// The socket could not be handed to tokio.
    #[error(
        "cannot set up the broker socket; hint: call from inside a tokio runtime built with I/O \
         enabled (`enable_io`, or `#[tokio::main]`)"
    )]
    Setup {
        /// The I/O error.
        source: io::Error,
    },
    /// [`blocking::Context`](crate::blocking::Context) could not start the thread and tokio
    /// runtime it runs the SDK on.
    #[error(
        "cannot start the SDK thread of blocking::Context; hint: check the app's limits on \
         threads and open files"
    )]
    Runtime {
        /// The I/O error of building the runtime or spawning the thread.
        source: io::Error,
    },
    /// A frame to send is larger than the protocol allows.
    #[error("cannot send the {what}")]
    TooLarge {
        /// `"call"`, `"publish"` or `"register"`.
        what: &'static str,
        /// The framing error, with the sizes.
        source: FrameError,
    },
    /// A publish on a service this context has not registered, or on a topic it did not declare.
    /// The broker would close the connection for it, so the SDK does not send it.
    #[error(
        "cannot publish on topic {topic:?} of service {service}: {reason}; hint: register the \
         service with that topic first"
    )]
    NotPublishable {
        /// The service id.
        service: Uuid,
        /// The topic.
        topic: String,
        /// `"this app does not provide the service"` or `"the topic is not registered"`.
        reason: &'static str,
    },
    /// A payload that is not a valid encoding of the message the typed API expects.
    #[error("a payload does not decode as {what}")]
    Decode {
        /// The expected message type.
        what: &'static str,
        /// What protobuf decoding found.
        source: prost::DecodeError,
    },
}

/// Shows an error followed by the messages of its sources, joined with ": ", the way the elastos
/// CLI prints errors: `eprintln!("{}", Report(&error))`. The SDK's messages leave their cause to
/// [`std::error::Error::source`], so printing an [`Error`] with `{}` alone drops it.
#[derive(Clone, Copy, Debug)]
pub struct Report<'a>(pub &'a dyn std::error::Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl Error {
    /// The failure status from the broker or the provider, if this is one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Status(status) => Some(status),
            _ => None,
        }
    }

    /// The status code, if this error is a [`Status`].
    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_the_wire_and_names_itself() {
        let codes = [
            (Code::NotFound, "NOT_FOUND"),
            (Code::PermissionDenied, "PERMISSION_DENIED"),
            (Code::Unavailable, "UNAVAILABLE"),
            (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            (Code::Cancelled, "CANCELLED"),
            (Code::InvalidArgument, "INVALID_ARGUMENT"),
            (Code::Internal, "INTERNAL"),
            (Code::ResourceExhausted, "RESOURCE_EXHAUSTED"),
        ];
        for (code, name) in codes {
            assert_eq!(Code::from_wire(code.to_wire().into()), code);
            assert_eq!(code.to_string(), name);
        }
        assert_eq!(Code::from_wire(1000), Code::Internal);
    }

    #[test]
    fn every_error_variant_formats_what_went_wrong() {
        let frame_error = || FrameError::Oversize {
            len: 2 << 20,
            max: 1 << 20,
        };
        // A varint field with no value.
        let decode_error = <v1::Cancel as prost::Message>::decode(&[0x08][..]).unwrap_err();
        // (error, its message, the message with its sources as `Report` shows it)
        let cases: Vec<(Error, &str, String)> = vec![
            (
                Status::permission_denied("not in services.uses").into(),
                "PERMISSION_DENIED: not in services.uses",
                "PERMISSION_DENIED: not in services.uses".to_owned(),
            ),
            (
                Status::new(Code::Cancelled, "").into(),
                "CANCELLED",
                "CANCELLED".to_owned(),
            ),
            (
                Disconnect::Goodbye(Status::unavailable("stopped")).into(),
                "the broker closed the connection: UNAVAILABLE: stopped",
                "the broker closed the connection: UNAVAILABLE: stopped".to_owned(),
            ),
            (
                Disconnect::Eof.into(),
                "the broker closed the connection without saying why",
                "the broker closed the connection without saying why".to_owned(),
            ),
            (
                Disconnect::Io {
                    op: "read",
                    source: Arc::new(io::Error::from_raw_os_error(104)),
                }
                .into(),
                "read on the broker socket failed",
                "read on the broker socket failed: Connection reset by peer (os error 104)"
                    .to_owned(),
            ),
            (
                Disconnect::Frame(Arc::new(frame_error())).into(),
                "the broker sent an invalid frame",
                "the broker sent an invalid frame: frame of 2097152 bytes is larger than the \
                 maximum of 1048576 bytes; hint: send large data in several calls"
                    .to_owned(),
            ),
            (
                Disconnect::Unexpected {
                    what: "a second welcome",
                    expected: "one welcome, as the first frame",
                }
                .into(),
                "the broker sent a second welcome; expected one welcome, as the first frame",
                "the broker sent a second welcome; expected one welcome, as the first frame"
                    .to_owned(),
            ),
            (
                Disconnect::Closed.into(),
                "this app closed its connection to the broker",
                "this app closed its connection to the broker".to_owned(),
            ),
            (
                Error::IpcFdVar {
                    value: "three".to_owned(),
                },
                "ELASTOS_IPC_FD is \"three\"; expected a file descriptor number like 3",
                "ELASTOS_IPC_FD is \"three\"; expected a file descriptor number like 3".to_owned(),
            ),
            (
                Error::NotASocket {
                    fd: 3,
                    problem: "fstat: EBADF".to_owned(),
                },
                "fd 3 is not the broker socket (fstat: EBADF); hint: start the app with \
                 `elastos run`, which connects fd 3 to the broker",
                "fd 3 is not the broker socket (fstat: EBADF); hint: start the app with \
                 `elastos run`, which connects fd 3 to the broker"
                    .to_owned(),
            ),
            (
                Error::IpcFdTaken { fd: 3 },
                "the broker socket (fd 3) is already owned by a Context; hint: call \
                 Context::from_env once and clone the Context",
                "the broker socket (fd 3) is already owned by a Context; hint: call \
                 Context::from_env once and clone the Context"
                    .to_owned(),
            ),
            (
                Error::Setup {
                    source: io::Error::other("no reactor running"),
                },
                "cannot set up the broker socket; hint: call from inside a tokio runtime built \
                 with I/O enabled (`enable_io`, or `#[tokio::main]`)",
                "cannot set up the broker socket; hint: call from inside a tokio runtime built \
                 with I/O enabled (`enable_io`, or `#[tokio::main]`): no reactor running"
                    .to_owned(),
            ),
            (
                Error::Runtime {
                    source: io::Error::from_raw_os_error(11),
                },
                "cannot start the SDK thread of blocking::Context; hint: check the app's limits \
                 on threads and open files",
                "cannot start the SDK thread of blocking::Context; hint: check the app's limits \
                 on threads and open files: Resource temporarily unavailable (os error 11)"
                    .to_owned(),
            ),
            (
                Error::TooLarge {
                    what: "call",
                    source: frame_error(),
                },
                "cannot send the call",
                "cannot send the call: frame of 2097152 bytes is larger than the maximum of \
                 1048576 bytes; hint: send large data in several calls"
                    .to_owned(),
            ),
            (
                Error::NotPublishable {
                    service: Uuid::nil(),
                    topic: "Ticks".to_owned(),
                    reason: "the topic is not registered",
                },
                "cannot publish on topic \"Ticks\" of service \
                 00000000-0000-0000-0000-000000000000: the topic is not registered; hint: \
                 register the service with that topic first",
                "cannot publish on topic \"Ticks\" of service \
                 00000000-0000-0000-0000-000000000000: the topic is not registered; hint: \
                 register the service with that topic first"
                    .to_owned(),
            ),
            (
                Error::Decode {
                    what: "echo.v1.SayReply",
                    source: decode_error.clone(),
                },
                "a payload does not decode as echo.v1.SayReply",
                format!("a payload does not decode as echo.v1.SayReply: {decode_error}"),
            ),
        ];
        for (error, message, report) in cases {
            assert_eq!(error.to_string(), message);
            assert_eq!(Report(&error).to_string(), report);
            // The CLI and `Report` print the sources after the message; quoting one in the
            // message as well would print it twice.
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                assert!(
                    !message.contains(&cause.to_string()),
                    "{message:?} repeats {cause}"
                );
                source = cause.source();
            }
        }
    }
}
