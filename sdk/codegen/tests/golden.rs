//! The code generated for tests/proto/echo.proto, pinned in tests/golden/echo.v1.rs. The SDK's
//! tests (sdk/tests/generated.rs) compile that file and run its client and server against each
//! other, so this test is what keeps them testing the generator's current output.
//!
//! After a deliberate change to the generator: `UPDATE_GOLDEN=1 cargo test -p elastos-codegen`.

use std::path::Path;

const GOLDEN: &str = "tests/golden/echo.v1.rs";

fn generate(proto: &str) -> Result<String, elastos_codegen::Error> {
    let out = tempfile::tempdir().unwrap();
    let mut config = prost_build::Config::new();
    config.out_dir(out.path());
    elastos_codegen::compile_with(config, &[proto], &["tests/proto"])?;
    let package = Path::new(proto).file_stem().unwrap().to_str().unwrap();
    let generated = std::fs::read_dir(out.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(package)
        })
        .expect("a generated file");
    Ok(std::fs::read_to_string(generated).unwrap())
}

#[test]
fn the_generated_echo_code_matches_the_golden_file() {
    let generated = generate("tests/proto/echo.proto").unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &generated).unwrap();
    }
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    assert!(
        generated == golden,
        "the generated code differs from {GOLDEN}; if the change is deliberate, rerun with \
         UPDATE_GOLDEN=1 and review the diff\n--- generated ---\n{generated}"
    );
}

#[test]
fn the_generated_code_names_methods_and_topics_after_the_rpcs() {
    let generated = generate("tests/proto/echo.proto").unwrap();
    for expected in [
        "pub const ECHO_METHODS: &[&str] = &[\"Say\"];",
        "pub const ECHO_TOPICS: &[&str] = &[\"Ticks\"];",
        "pub struct EchoClient",
        "pub async fn say(&self, request: SayRequest)",
        "pub async fn subscribe_ticks(&self)",
        "pub trait Echo:",
        "pub struct EchoServer<T>(pub T);",
        "pub async fn serve_echo(",
        "pub async fn publish_ticks(&self, event: &Tick)",
        // The .proto comments become rustdoc.
        "/// Answers with the same text, upper-cased when `shout` is set.",
    ] {
        assert!(generated.contains(expected), "missing {expected:?}");
    }
}

#[test]
fn a_client_streaming_rpc_is_refused() {
    match generate("tests/proto/client_streaming.proto") {
        Err(error @ elastos_codegen::Error::ClientStreaming { .. }) => assert_eq!(
            error.to_string(),
            "rpc Send of service upload.v1.Upload streams its requests; expected unary or \
             server-streaming rpcs only; hint: send several unary calls instead"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_proto_is_a_parse_error_naming_it() {
    match generate("tests/proto/missing.proto") {
        Err(error @ elastos_codegen::Error::Parse(_)) => {
            assert_eq!(error.to_string(), "cannot compile the .proto files");
            // The file is named by the chained source, which the message does not repeat.
            let source = std::error::Error::source(&error).unwrap().to_string();
            assert!(source.contains("missing.proto"), "{source}");
        }
        other => panic!("{other:?}"),
    }
}
