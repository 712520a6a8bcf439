//! Generates the typed client and server of examples/proto/ticker.proto into OUT_DIR.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    elastos_codegen::compile(&["../proto/ticker.proto"], &["../proto"])?;
    Ok(())
}
