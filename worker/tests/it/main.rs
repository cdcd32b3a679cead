//! The worker engine's integration tests: whole jobs of the example guests
//! checked against native computations, misbehaving guests, spills, module
//! loading and torn map output. One test binary for the crate.

mod grep;
mod jobs;
mod misbehave;
mod modules;
mod spill;
mod splits;
mod streaming;
mod support;
mod torn;
