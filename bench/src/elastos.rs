//! The elastos path: apps attached to the real `elastos broker` daemon the way `elastos run`
//! attaches a jailed app: a socketpair, whose far end goes to the daemon in an `attach` request
//! on its control socket (one JSON line, the fd as SCM_RIGHTS, see host/src/control.rs) with the
//! identity the launcher would have verified; the near end is the app's "fd 3".
//!
//! - `elastos-service CONTROL`: provides [`SERVICE`], method `echo` answers with the request's
//!   payload (elastos-sdk, async, `current_thread` runtime).
//! - `elastos-service CONTROL slow US`: provides [`SLOW_SERVICE`], whose `echo` takes US µs
//!   (a thread sleep, which blocks the provider's only thread: calls are served one at a time).
//! - `elastos-idle CONTROL N`: N apps that connect (handshake done) and then do nothing, for the
//!   broker's memory per idle app; they stay until stdin closes.
//! - the client (`client elastos CONTROL NUMBER`): calls `echo` with elastos-sdk's async API on a
//!   `current_thread` runtime (measured faster than the blocking API, whose runtime runs on a
//!   thread of its own, so each reply crosses threads).

use std::io::{self, BufRead, BufReader, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use elastos_sdk::{Context, IncomingCall, ServiceHandler, Status, Uuid};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::client::{self, Mode, Outcome};
use crate::{arg, num_arg};

/// The benchmark's service id.
pub const SERVICE: Uuid = Uuid::from_u128(0x3b6f_2d1e_8c4a_4f57_9e21_6a0d_5c7b_e214);
/// The slow service of the flood scenario.
pub const SLOW_SERVICE: Uuid = Uuid::from_u128(0x3b6f_2d1e_8c4a_4f57_9e21_6a0d_5c7b_e215);
/// A publisher key: any 32 bytes (nothing is signed here; the daemon trusts its control socket).
const PUBLISHER: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";

/// An app identity as the `attach` request carries it.
fn identity(app_id: u128, name: &str, provides: &[Uuid], uses: &[Uuid]) -> serde_json::Value {
    let ids = |ids: &[Uuid]| ids.iter().map(Uuid::to_string).collect::<Vec<_>>();
    serde_json::json!({
        "app_id": Uuid::from_u128(app_id).to_string(),
        "name": name,
        "publisher": PUBLISHER,
        "provides": ids(provides),
        "uses": ids(uses),
    })
}

/// Hands the far end of a new socketpair to the daemon as an app with `identity` and returns
/// the near end, ready for the SDK's handshake.
fn attach(control: &str, identity: serde_json::Value) -> Result<UnixStream, String> {
    let failed = |e: &dyn std::fmt::Display| format!("attach through {control}: {e}");
    let (ours, theirs) = UnixStream::pair().map_err(|e| failed(&e))?;
    let mut socket = UnixStream::connect(control).map_err(|e| failed(&e))?;
    let request = serde_json::json!({ "op": "attach", "identity": identity, "pid": null });
    let mut line = serde_json::to_vec(&request).map_err(|e| failed(&e))?;
    line.push(b'\n');
    let fds = [theirs.as_raw_fd()];
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(&line)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| failed(&e))?;
    socket.write_all(&line[sent..]).map_err(|e| failed(&e))?;
    let mut answer = String::new();
    BufReader::new(&socket)
        .read_line(&mut answer)
        .map_err(|e| failed(&e))?;
    let answer: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| failed(&format!("{e}: {answer:?}")))?;
    if answer.get("ok").is_none() {
        return Err(failed(&answer));
    }
    Ok(ours)
}

/// Attaches and does the SDK handshake on the runtime.
async fn connect(control: &str, identity: serde_json::Value) -> Result<Context, String> {
    let stream = attach(control, identity)?;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stream = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
    Context::connect(stream)
        .await
        .map_err(|e| format!("handshake with the broker: {e}"))
}

/// Answers with the request's payload, after `service` (one call at a time, see the module).
struct Echo {
    service: Duration,
}

impl ServiceHandler for Echo {
    async fn handle(&self, call: IncomingCall) -> Result<Vec<u8>, Status> {
        if !self.service.is_zero() {
            std::thread::sleep(self.service);
        }
        Ok(call.payload)
    }
}

pub fn service(args: &[String]) -> Result<(), String> {
    let control = arg(args, 0, "the daemon's control socket")?;
    let (service, app_id, name, service_time) = if args.get(1).is_some_and(|a| a == "slow") {
        let us: u64 = num_arg(args, 2, "service time in µs")?;
        let time = Duration::from_micros(us);
        (SLOW_SERVICE, 0x5e42, "bench-slow-service", time)
    } else {
        (SERVICE, 0x5e41, "bench-service", Duration::ZERO)
    };
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let ctx = connect(control, identity(app_id, name, &[service], &[])).await?;
        let echo = Echo {
            service: service_time,
        };
        ctx.register(service, &["echo"], &[], echo)
            .await
            .map_err(|e| format!("register: {e}"))?;
        crate::say_ready();
        let reason = ctx.closed().await;
        Err(format!("the broker closed the connection: {reason}"))
    })
}

pub fn idle(args: &[String]) -> Result<(), String> {
    let control = arg(args, 0, "the daemon's control socket")?;
    let count: u32 = num_arg(args, 1, "number of idle apps")?;
    let runtime = crate::runtime()?;
    let apps = runtime.block_on(async {
        let mut apps = Vec::with_capacity(count as usize);
        for n in 0..count {
            let name = format!("bench-idle-{n}");
            apps.push(
                connect(
                    control,
                    identity(0x1d1e_0000 + u128::from(n), &name, &[], &[]),
                )
                .await?,
            );
        }
        Ok::<_, String>(apps)
    })?;
    crate::say_ready();
    // Stay connected until the orchestrator closes stdin.
    io::stdin().lock().lines().for_each(drop);
    drop(apps);
    Ok(())
}

pub fn client(target: &[String], mode: Mode, calls: u64) -> Result<Outcome, String> {
    let control = arg(target, 0, "the daemon's control socket")?;
    let number: u32 = num_arg(target, 1, "client number")?;
    let slow = target.get(2).is_some_and(|a| a == "slow");
    let service = if slow { SLOW_SERVICE } else { SERVICE };
    let runtime = crate::runtime()?;
    let name = format!("bench-client-{number}");
    let ctx = runtime.block_on(connect(
        control,
        identity(
            0xc11e_0000 + u128::from(number),
            &name,
            &[],
            &[SERVICE, SLOW_SERVICE],
        ),
    ))?;
    let warmup = if slow {
        client::SLOW_WARMUP_CALLS
    } else {
        client::WARMUP_CALLS
    };
    client::measure_async(&runtime, mode, (warmup, calls), move |payload| {
        let ctx = ctx.clone();
        async move {
            ctx.call(service, "echo", payload, None)
                .await
                .map_err(|e| format!("call: {e}"))
        }
    })
}
