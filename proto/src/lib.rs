//! placeholder
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/elastos.v1.rs"));
}
