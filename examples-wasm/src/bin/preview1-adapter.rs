//! Writes the WASI preview-1 adapter that turns a `wasm32-wasi` (preview 1)
//! core module into a component: `reactor` for libraries that export
//! functions (a job built with `wit-bindgen c`), `command` for programs with
//! a `main` (a streaming job). The adapter matches the wasmtime the workers
//! embed.
//!
//! Usage: `cargo run -p examples-wasm --bin preview1-adapter -- reactor|command PATH`

use std::process::ExitCode;

use examples_wasm::{PREVIEW1_COMMAND_ADAPTER, PREVIEW1_REACTOR_ADAPTER};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bytes, path) = match args.as_slice() {
        [kind, path] if kind == "reactor" => (PREVIEW1_REACTOR_ADAPTER, path),
        [kind, path] if kind == "command" => (PREVIEW1_COMMAND_ADAPTER, path),
        _ => {
            eprintln!("usage: preview1-adapter reactor|command PATH");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = std::fs::write(path, bytes) {
        eprintln!("writing {path}: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
