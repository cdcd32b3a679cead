//! The server's integration tests, one binary with a module per concern.

mod store;
mod support;
