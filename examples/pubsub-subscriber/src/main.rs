//! The subscriber: subscribes to the `Ticks` events of TICKER (the broker starts the installed
//! pubsub-publisher if it is not running) and prints each one until the publisher goes away.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use elastos_sdk::{Context, Report, Uuid};

// Generated from the .proto: the client and the server side, of which this app uses one.
#[allow(dead_code)]
mod ticker {
    include!(concat!(env!("OUT_DIR"), "/ticker.v1.rs"));
}

use ticker::TickerClient;

/// The ticker's id: `services.uses` of manifest.toml lists it.
const TICKER: Uuid = Uuid::from_u128(0xb3e0f6d2_8c4a_4f1e_9d7b_2a6c5e8f1d34);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match listen().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pubsub-subscriber: {}", Report(&error));
            ExitCode::FAILURE
        }
    }
}

async fn listen() -> Result<(), elastos_sdk::Error> {
    let ctx = Context::from_env().await?;
    let ticker = TickerClient::lookup(&ctx, TICKER).await?;
    let mut ticks = ticker.subscribe_ticks().await?;
    println!(
        "pubsub-subscriber: subscribed to the ticks of {}",
        ticker.service().info().provider.app_name
    );
    let gone = ticker.service().gone();
    tokio::pin!(gone);
    loop {
        tokio::select! {
            // Ticks first: the ones published before the publisher left are already queued when
            // its departure is known, and should be printed before it.
            biased;
            tick = ticks.next() => match tick {
                Some(tick) => {
                    let tick = tick?;
                    println!(
                        "pubsub-subscriber: tick {} of {} ({} lost before it)",
                        tick.payload.count, tick.payload.total, tick.dropped
                    );
                }
                None => return Err(ctx.closed().await.into()),
            },
            reason = &mut gone => {
                println!("pubsub-subscriber: the publisher went away ({:?})", reason?);
                break;
            }
        }
    }
    ctx.close().await;
    Ok(())
}
