//! The D-Bus path: a private dbus-daemon (started by the script), a zbus server owning
//! [`BUS_NAME`] with method `Echo(ay) -> ay`, and zbus clients calling it; both on tokio
//! `current_thread` runtimes, like the elastos path. `dbus-server ADDRESS slow US` owns
//! [`SLOW_BUS_NAME`] instead, whose `Echo` takes US µs (a thread sleep, so one call at a time,
//! like the elastos path's slow service); a client TARGET of `ADDRESS slow` calls it.

use std::time::Duration;

use crate::arg;
use crate::client::{self, Mode, Outcome};

const BUS_NAME: &str = "org.elastos.Bench";
const SLOW_BUS_NAME: &str = "org.elastos.BenchSlow";
const OBJECT_PATH: &str = "/org/elastos/Bench";

struct Echo {
    service: Duration,
}

#[zbus::interface(name = "org.elastos.Bench")]
impl Echo {
    fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        if !self.service.is_zero() {
            std::thread::sleep(self.service);
        }
        data
    }
}

async fn connect(address: &str) -> Result<zbus::connection::Builder<'static>, String> {
    zbus::connection::Builder::address(address.to_owned().as_str())
        .map_err(|e| format!("bus address {address:?}: {e}"))
}

pub fn server(args: &[String]) -> Result<(), String> {
    let address = arg(args, 0, "the bus address")?;
    let (name, service) = if args.get(1).is_some_and(|a| a == "slow") {
        let us: u64 = crate::num_arg(args, 2, "service time in µs")?;
        (SLOW_BUS_NAME, Duration::from_micros(us))
    } else {
        (BUS_NAME, Duration::ZERO)
    };
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let _connection = connect(address)
            .await?
            .name(name)
            .and_then(|builder| builder.serve_at(OBJECT_PATH, Echo { service }))
            .map_err(|e| format!("serving {name}: {e}"))?
            .build()
            .await
            .map_err(|e| format!("connecting to the bus at {address}: {e}"))?;
        crate::say_ready();
        std::future::pending::<Result<(), String>>().await
    })
}

pub fn client(target: &[String], mode: Mode, calls: u64) -> Result<Outcome, String> {
    let address = arg(target, 0, "the bus address")?;
    let slow = target.get(1).is_some_and(|a| a == "slow");
    let name = if slow { SLOW_BUS_NAME } else { BUS_NAME };
    let runtime = crate::runtime()?;
    let connection = runtime.block_on(async {
        connect(address)
            .await?
            .build()
            .await
            .map_err(|e| format!("connecting to the bus at {address}: {e}"))
    })?;
    let warmup = if slow {
        client::SLOW_WARMUP_CALLS
    } else {
        client::WARMUP_CALLS
    };
    client::measure_async(&runtime, mode, (warmup, calls), move |payload| {
        let connection = connection.clone();
        async move {
            let reply = connection
                .call_method(
                    Some(name),
                    OBJECT_PATH,
                    Some(BUS_NAME),
                    "Echo",
                    &payload,
                )
                .await
                .map_err(|e| format!("call: {e}"))?;
            reply
                .body()
                .deserialize::<Vec<u8>>()
                .map_err(|e| format!("reply: {e}"))
        }
    })
}
