//! The publisher: provides `ticker.v1.Ticker` (examples/proto/ticker.proto) as TICKER and
//! publishes a few `Ticks` events, one every 200 ms, then exits; its subscribers are told it
//! went away.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use elastos_sdk::{Context, Report, Uuid};

// Generated from the .proto: the client and the server side, of which this app uses one.
#[allow(dead_code)]
mod ticker {
    include!(concat!(env!("OUT_DIR"), "/ticker.v1.rs"));
}

use ticker::{serve_ticker, Tick, Ticker};

/// The ticker's id: `services.provides` of manifest.toml lists it.
const TICKER: Uuid = Uuid::from_u128(0xb3e0f6d2_8c4a_4f1e_9d7b_2a6c5e8f1d34);
/// Ticks published before exiting.
const TICKS: u64 = 5;
/// Time between two ticks; also leaves a subscriber that started this app on demand the time to
/// have its subscription in place before the first one.
const PERIOD: Duration = Duration::from_millis(200);

/// The ticker has no unary rpcs, so its server trait has nothing to implement.
struct Publisher;

impl Ticker for Publisher {}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match publish().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pubsub-publisher: {}", Report(&error));
            ExitCode::FAILURE
        }
    }
}

async fn publish() -> Result<(), elastos_sdk::Error> {
    let ctx = Context::from_env().await?;
    let ticker = serve_ticker(&ctx, TICKER, Publisher).await?;
    for count in 1..=TICKS {
        tokio::time::sleep(PERIOD).await;
        ticker
            .publish_ticks(&Tick {
                count,
                total: TICKS,
            })
            .await?;
        println!("pubsub-publisher: published tick {count} of {TICKS}");
    }
    // Events are queued; closing sends them before the app exits.
    ctx.close().await;
    Ok(())
}
