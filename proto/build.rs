//! Generates the Rust types of `elastos.proto` into `OUT_DIR`.
//!
//! `protox` parses the schema in pure Rust, so building needs no system `protoc`; prost-build then
//! turns the descriptors (with their comments, which become the rustdoc) into code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const SCHEMA: &str = "elastos.proto";
    println!("cargo:rerun-if-changed={SCHEMA}");
    let descriptors = protox::compile([SCHEMA], ["."])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
