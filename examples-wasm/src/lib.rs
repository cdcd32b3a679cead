//! The example and test guests, compiled by this crate's build script.
//! Each constant is the path of a `.wasm` file under `target/guests/`: a
//! component of the job world, except `STREAMING` (a WASI preview-1
//! command module) and `STREAMING_COMPONENT` (a preview-2 command
//! component), the streaming-mode word count.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

pub mod toolchain;

/// Every guest by name, for tests that iterate over them.
pub fn all() -> [(&'static str, &'static str); 5] {
    [
        ("wordcount", WORDCOUNT),
        ("indexer", INDEXER),
        ("grep", GREP),
        ("misbehave", MISBEHAVE),
        ("sort", SORT),
    ]
}

/// The WASI preview-1 adapters (`reactor` for a library exporting
/// functions, `command` for a program with `main`) that turn a
/// `wasm32-wasi` core module into a component, matching the workers'
/// wasmtime.
pub use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER as PREVIEW1_COMMAND_ADAPTER,
    WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER as PREVIEW1_REACTOR_ADAPTER,
};
