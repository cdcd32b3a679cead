//! The example and test guests, compiled by this crate's build script.
//! Each constant is the path of a `.wasm` component under `target/guests/`.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Every guest by name, for tests that iterate over them.
pub fn all() -> [(&'static str, &'static str); 4] {
    [
        ("wordcount", WORDCOUNT),
        ("indexer", INDEXER),
        ("grep", GREP),
        ("misbehave", MISBEHAVE),
    ]
}
