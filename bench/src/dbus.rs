//! The D-Bus path: a private dbus-daemon (started by the script), a zbus server owning
//! [`BUS_NAME`] with method `Echo(ay) -> ay`, and zbus clients calling it; both on tokio
//! `current_thread` runtimes, like the elastos path.

use crate::arg;
use crate::client::{self, Mode, Outcome};

const BUS_NAME: &str = "org.elastos.Bench";
const OBJECT_PATH: &str = "/org/elastos/Bench";

struct Echo;

#[zbus::interface(name = "org.elastos.Bench")]
impl Echo {
    fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

async fn connect(address: &str) -> Result<zbus::connection::Builder<'static>, String> {
    zbus::connection::Builder::address(address.to_owned().as_str())
        .map_err(|e| format!("bus address {address:?}: {e}"))
}

pub fn server(args: &[String]) -> Result<(), String> {
    let address = arg(args, 0, "the bus address")?;
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        let _connection = connect(address)
            .await?
            .name(BUS_NAME)
            .and_then(|builder| builder.serve_at(OBJECT_PATH, Echo))
            .map_err(|e| format!("serving {BUS_NAME}: {e}"))?
            .build()
            .await
            .map_err(|e| format!("connecting to the bus at {address}: {e}"))?;
        crate::say_ready();
        std::future::pending::<Result<(), String>>().await
    })
}

pub fn client(target: &[String], mode: Mode, calls: u64) -> Result<Outcome, String> {
    let address = arg(target, 0, "the bus address")?;
    let runtime = crate::runtime()?;
    let connection = runtime.block_on(async {
        connect(address)
            .await?
            .build()
            .await
            .map_err(|e| format!("connecting to the bus at {address}: {e}"))
    })?;
    client::measure_async(&runtime, mode, calls, move |payload| {
        let connection = connection.clone();
        async move {
            let reply = connection
                .call_method(
                    Some(BUS_NAME),
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
