//! `elastos-cloud-remote`: the cloud disk's network stores (S3, WebDAV through `object_store`,
//! with HTTP and TLS) in a process of their own, so that `elastos` and every other binary linking
//! the sync engine stays small and starts fast. The engine execs it only when the home's store
//! is a network one (or, without a network of its own, connects to it as the socket-activated
//! service `elastos-cloud-remote@.service`, which gets the connection as its stdin and stdout),
//! and speaks [`elastos_cloudsync::remote_protocol`] on its stdin and stdout:
//! first `Open` with the store and its credentials (never on the command line, where `ps` shows
//! them), then one request at a time until end of input. It sees object names and ciphertext
//! only; the keys stay in the engine.
//!
//! Its input is checked like any other: a frame that breaks the protocol ends it with a message
//! on stderr and exit code 2 (the engine then reports the helper as failed).

#![forbid(unsafe_code)]

mod object;

use std::io::{BufReader, BufWriter, Write};
use std::process::ExitCode;

use bytes::Bytes;
use elastos_cloudsync::remote_protocol::{
    read_blobs, read_header, write_frame, ProtocolError, Request, Response, LIST_PAGE,
};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ELASTOS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .without_time()
        // Under systemd its stderr is the journal: no colour codes there.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if std::env::args_os().len() > 1 {
        eprintln!(
            "elastos-cloud-remote: takes no arguments; elastos-cloudsync runs it and speaks to it \
             on stdin and stdout (see its remote_protocol module)"
        );
        return ExitCode::from(2);
    }
    match serve(
        &mut BufReader::with_capacity(1 << 16, std::io::stdin().lock()),
        &mut BufWriter::with_capacity(1 << 16, std::io::stdout().lock()),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("elastos-cloud-remote: {e}");
            ExitCode::from(2)
        }
    }
}

/// Answers requests until end of input.
fn serve(input: &mut impl std::io::Read, output: &mut impl Write) -> Result<(), ProtocolError> {
    let Some(first) = read_header::<Request>(input, "request")? else {
        return Ok(());
    };
    let Request::Open(open) = first else {
        return Err(ProtocolError::Undecodable {
            what: "request",
            reason: "the first request must be Open".into(),
        });
    };
    let store = match object::ObjectRemote::open(&open.into_config()) {
        Ok(store) => {
            write_frame(output, &Response::Done, &[])?;
            store
        }
        Err(failure) => return write_frame(output, &failure.into_response(), &[]),
    };
    while let Some(request) = read_header::<Request>(input, "request")? {
        let blobs = read_blobs(input, request.blobs())?;
        answer(&store, request, blobs, output)?;
    }
    Ok(())
}

fn answer(
    store: &object::ObjectRemote,
    request: Request,
    blobs: Vec<Vec<u8>>,
    output: &mut impl Write,
) -> Result<(), ProtocolError> {
    let response = match request {
        Request::Open(_) => {
            return Err(ProtocolError::Undecodable {
                what: "request",
                reason: "Open sent twice".into(),
            })
        }
        Request::Get { names } => match store.get_many(&names) {
            Ok(objects) => {
                let present = objects.iter().map(Option::is_some).collect();
                let blobs: Vec<&[u8]> = objects.iter().flatten().map(|b| &b[..]).collect();
                return write_frame(output, &Response::Objects { present }, &blobs);
            }
            Err(failure) => failure.into_response(),
        },
        Request::Put { names } => {
            let objects = names.into_iter().zip(blobs.into_iter().map(Bytes::from));
            match store.put_many(objects.collect()) {
                Ok(()) => Response::Done,
                Err(failure) => failure.into_response(),
            }
        }
        Request::Create { name } => {
            let bytes = Bytes::from(blobs.into_iter().next().expect("one blob, counted"));
            match store.create(&name, bytes) {
                Ok(created) => Response::Created(created),
                Err(failure) => failure.into_response(),
            }
        }
        Request::Delete { name } => match store.delete(&name) {
            Ok(()) => Response::Done,
            Err(failure) => failure.into_response(),
        },
        Request::List { dir, after } => match store.list(&dir, after.as_deref()) {
            Ok(entries) => {
                let pages = entries.len().div_ceil(LIST_PAGE).max(1);
                let mut entries = entries.into_iter();
                for page in 0..pages {
                    let listed = Response::Listed {
                        entries: entries.by_ref().take(LIST_PAGE).collect(),
                        more: page + 1 < pages,
                    };
                    write_frame(output, &listed, &[])?;
                }
                return Ok(());
            }
            Err(failure) => failure.into_response(),
        },
    };
    write_frame(output, &response, &[])
}
