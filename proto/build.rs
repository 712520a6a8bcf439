//! Generates the Rust types of `elastos.proto` (the protocol) and `cloud.proto` (the broker's
//! built-in cloud disk service) into `OUT_DIR`.
//!
//! `protox` parses the schema in pure Rust, so building needs no system `protoc`; prost-build then
//! turns the descriptors (with their comments, which become the rustdoc) into code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const SCHEMAS: [&str; 2] = ["elastos.proto", "cloud.proto"];
    for schema in SCHEMAS {
        println!("cargo:rerun-if-changed={schema}");
    }
    let descriptors = protox::compile(SCHEMAS, ["."])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
