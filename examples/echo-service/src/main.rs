//! The echo service: provides `echo.v1.Echo` (examples/proto/echo.proto) as ECHO and answers
//! `Say` until the broker closes the connection (`elastos stop`, idle timeout, or the end of
//! `elastos run`). Started by `elastos run`, or by the broker on demand when a client looks ECHO
//! up and this bundle is installed.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use elastos_sdk::{Context, Report, Status, Uuid};

// Generated from the .proto: the client and the server side, of which this app uses one.
#[allow(dead_code)]
mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo.v1.rs"));
}

use echo::{serve_echo, Echo, SayReply, SayRequest};

/// The echo service's id: `services.provides` of manifest.toml lists it.
const ECHO: Uuid = Uuid::from_u128(0x6f1c2a57_2b1e_4c3d_9e8f_5a4b3c2d1e0f);

#[derive(Default)]
struct EchoService {
    answered: AtomicU64,
}

impl Echo for EchoService {
    async fn say(&self, request: SayRequest) -> Result<SayReply, Status> {
        if request.text.is_empty() {
            return Err(Status::invalid_argument(
                "text is empty; expected something to repeat",
            ));
        }
        let count = self.answered.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(SayReply {
            text: request.text,
            count,
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo-service: {}", Report(&error));
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), elastos_sdk::Error> {
    let ctx = Context::from_env().await?;
    serve_echo(&ctx, ECHO, EchoService::default()).await?;
    eprintln!("echo-service: {} serves {ECHO}", ctx.identity().app_name);
    let reason = ctx.closed().await;
    eprintln!("echo-service: done ({reason})");
    Ok(())
}
