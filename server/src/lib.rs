//! The Quern coordinator.

pub mod store;
