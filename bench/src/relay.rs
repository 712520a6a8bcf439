//! The floor: a raw two-hop unix socket relay. Frames are a 4-byte little-endian length and the
//! payload (68 bytes for 64 bytes of payload), the same framing the broker uses, with nothing in
//! them: the relay copies bytes, the server echoes whole frames.
//!
//! - `relay-server SOCKET`: echoes every frame, one thread per connection; all whole frames one
//!   read returns are answered with one write.
//! - `relay LISTEN SERVER`: for each client, a connection to the server and one blocking thread
//!   per direction copying whatever one read returns with one write.
//! - the client (`client relay ...`) is blocking too: the cheapest possible caller.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;

use crate::client::{self, check_echo, monotonic_ns, payload, Mode, Outcome, WARMUP_CALLS};
use crate::{arg, PAYLOAD_LEN};

const FRAME_LEN: usize = 4 + PAYLOAD_LEN;
const BUF_LEN: usize = 64 * 1024;

fn listen(path: &str) -> Result<UnixListener, String> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|e| format!("cannot listen on {path}: {e}"))
}

pub fn server(args: &[String]) -> Result<(), String> {
    let listener = listen(arg(args, 0, "socket to listen on")?)?;
    crate::say_ready();
    for stream in listener.incoming() {
        let stream = stream.map_err(|e| format!("accept: {e}"))?;
        std::thread::spawn(move || echo_frames(stream));
    }
    Ok(())
}

/// Echoes whole frames until the peer closes.
fn echo_frames(mut stream: UnixStream) {
    let mut buf = vec![0u8; BUF_LEN];
    let mut have = 0;
    loop {
        let read = match stream.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        have += read;
        let mut whole = 0;
        while have - whole >= 4 {
            let len = u32::from_le_bytes(buf[whole..whole + 4].try_into().expect("4 bytes"));
            let end = whole + 4 + len as usize;
            if end > have {
                break;
            }
            whole = end;
        }
        if stream.write_all(&buf[..whole]).is_err() {
            return;
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
    }
}

pub fn relay(args: &[String]) -> Result<(), String> {
    let listener = listen(arg(args, 0, "socket to listen on")?)?;
    let server = arg(args, 1, "the echo server's socket")?.to_owned();
    crate::say_ready();
    for client in listener.incoming() {
        let client = client.map_err(|e| format!("accept: {e}"))?;
        let upstream =
            UnixStream::connect(&server).map_err(|e| format!("cannot connect to {server}: {e}"))?;
        let (client_in, upstream_in) = (
            client.try_clone().map_err(|e| e.to_string())?,
            upstream.try_clone().map_err(|e| e.to_string())?,
        );
        std::thread::spawn(move || copy(client_in, upstream));
        std::thread::spawn(move || copy(upstream_in, client));
    }
    Ok(())
}

fn copy(mut from: UnixStream, mut to: UnixStream) {
    let mut buf = vec![0u8; BUF_LEN];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                if to.write_all(&buf[..read]).is_err() {
                    return;
                }
            }
        }
    }
}

fn frame() -> Vec<u8> {
    let mut frame = (PAYLOAD_LEN as u32).to_le_bytes().to_vec();
    frame.extend(payload());
    frame
}

/// One call: write a frame, read one back.
fn call(
    stream: &mut UnixStream,
    request: &[u8],
    reply: &mut [u8; FRAME_LEN],
) -> Result<(), String> {
    stream
        .write_all(request)
        .map_err(|e| format!("write: {e}"))?;
    stream.read_exact(reply).map_err(|e| format!("read: {e}"))?;
    check_echo(&reply[4..])
}

pub fn client(target: &[String], mode: Mode, calls: u64) -> Result<Outcome, String> {
    let path = arg(target, 0, "the relay's socket")?;
    let mut stream =
        UnixStream::connect(path).map_err(|e| format!("cannot connect to {path}: {e}"))?;
    let request = frame();
    let mut reply = [0u8; FRAME_LEN];
    for _ in 0..WARMUP_CALLS {
        call(&mut stream, &request, &mut reply)?;
    }
    client::ready_then_wait_for_go()?;
    match mode {
        Mode::Sequential => {
            let mut samples = Vec::with_capacity(calls as usize);
            let start_ns = monotonic_ns();
            for _ in 0..calls {
                let started = Instant::now();
                call(&mut stream, &request, &mut reply)?;
                samples.push(started.elapsed().as_nanos() as u64);
            }
            Ok(client::sequential_outcome(start_ns, samples))
        }
        Mode::InFlight(k) => pipelined(&mut stream, &request, k as u64, calls),
        Mode::Flood(_) => Err("the relay has no slow service to flood".into()),
    }
}

/// Keeps `k` calls in flight: each read's whole replies are replaced by as many new requests,
/// sent with one write.
fn pipelined(
    stream: &mut UnixStream,
    request: &[u8],
    k: u64,
    calls: u64,
) -> Result<Outcome, String> {
    let start_ns = monotonic_ns();
    let requests = |n: u64| request.repeat(n as usize);
    let first = k.min(calls);
    stream
        .write_all(&requests(first))
        .map_err(|e| format!("write: {e}"))?;
    let (mut sent, mut answered, mut partial) = (first, 0u64, 0usize);
    let mut buf = vec![0u8; BUF_LEN];
    while answered < calls {
        let read = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if read == 0 {
            return Err("the relay closed the connection".into());
        }
        let bytes = partial + read;
        let replies = (bytes / FRAME_LEN) as u64;
        partial = bytes % FRAME_LEN;
        answered += replies;
        let more = replies.min(calls - sent);
        if more > 0 {
            stream
                .write_all(&requests(more))
                .map_err(|e| format!("write: {e}"))?;
            sent += more;
        }
    }
    Ok(Outcome {
        calls,
        start_ns,
        end_ns: monotonic_ns(),
        p50_ns: None,
        p99_ns: None,
        refused: 0,
    })
}
