//! (crate root being written by the broker-core helper)
pub mod apps;
pub mod control;
pub mod store;
