//! The echo client: looks ECHO up by UUID (the broker starts the installed echo-service if it is
//! not running), calls `Say` a few times and prints the replies, then looks up a service its
//! manifest does not list in `services.uses` and prints the PERMISSION_DENIED that comes back.
//! Exits 0 when all of that happened as expected.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use elastos_sdk::{Code, Context, Report, Uuid};

// Generated from the .proto: the client and the server side, of which this app uses one.
#[allow(dead_code)]
mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo.v1.rs"));
}

use echo::{EchoClient, SayRequest};

/// The echo service's id: `services.uses` of manifest.toml lists it.
const ECHO: Uuid = Uuid::from_u128(0x6f1c2a57_2b1e_4c3d_9e8f_5a4b3c2d1e0f);
/// The ticker of examples/pubsub-publisher: a real service, but not in this app's `uses`.
const NOT_IN_USES: Uuid = Uuid::from_u128(0xb3e0f6d2_8c4a_4f1e_9d7b_2a6c5e8f1d34);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo-client: {}", Report(&*error));
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::from_env().await?;
    println!("echo-client: connected as {}", ctx.identity().app_name);

    let echo = EchoClient::lookup(&ctx, ECHO)
        .await?
        .with_deadline(Duration::from_secs(5));
    println!(
        "echo-client: {ECHO} is provided by {}",
        echo.service().info().provider.app_name
    );
    for text in ["hello", "from", "the jail"] {
        let reply = echo
            .say(SayRequest {
                text: text.to_owned(),
            })
            .await?;
        println!(
            "echo-client: said {text:?}, got {:?} (#{})",
            reply.text, reply.count
        );
    }

    match ctx.lookup(NOT_IN_USES).await {
        Err(error) if error.code() == Some(Code::PermissionDenied) => {
            println!("echo-client: lookup of {NOT_IN_USES} denied, as it should be: {error}");
        }
        Err(error) => {
            return Err(format!(
                "lookup of {NOT_IN_USES}: expected PERMISSION_DENIED, got: {}",
                Report(&error)
            )
            .into())
        }
        Ok(_) => {
            return Err(
                format!("lookup of {NOT_IN_USES} succeeded; expected PERMISSION_DENIED").into(),
            )
        }
    }
    ctx.close().await;
    Ok(())
}
