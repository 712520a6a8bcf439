//! Generates the typed client and server of examples/proto/echo.proto into OUT_DIR.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    elastos_codegen::compile(&["../proto/echo.proto"], &["../proto"])?;
    Ok(())
}
