//! Loading modules: what is not a usable job is refused with a message that
//! says why, and compiled modules are cached in memory and on disk.

use std::sync::Arc;

use worker::local::LocalJob;
use worker::runtime::module_id;
use worker::{ModuleError, Runtime, RuntimeConfig};

use crate::support::{native_wordcount, read_output, runtime, small_texts};

fn refusal(bytes: &[u8]) -> String {
    match runtime().load(bytes) {
        Ok(_) => panic!("the module was accepted"),
        Err(ModuleError::Invalid(message)) => message,
    }
}

#[test]
fn garbage_is_not_webassembly() {
    let message = refusal(b"#!/bin/sh\necho this is not a job\n");
    assert!(message.contains("not a WebAssembly"), "{message}");
    let message = refusal(b"");
    assert!(message.contains("not a WebAssembly"), "{message}");
}

#[test]
fn a_core_module_without_start_is_told_what_it_lacks() {
    let core =
        wat::parse_str(r#"(module (func (export "map") (param i32) (result i32) local.get 0))"#)
            .unwrap();
    let message = refusal(&core);
    assert!(message.contains("core WebAssembly module"), "{message}");
    assert!(message.contains("no `_start`"), "{message}");
    assert!(message.contains("wasm32-wasip2"), "{message}");
}

#[test]
fn a_command_with_foreign_imports_is_refused() {
    let core = wat::parse_str(
        r#"(module
            (import "env" "host_secret" (func))
            (memory (export "memory") 1)
            (func (export "_start")))"#,
    )
    .unwrap();
    let message = refusal(&core);
    assert!(message.contains("only wasi_snapshot_preview1"), "{message}");
    assert!(message.contains("host_secret"), "{message}");
}

#[test]
fn commands_load_as_commands_and_components_as_jobs() {
    use protocol::ModuleKind;
    for (path, kind) in [
        (examples_wasm::STREAMING, ModuleKind::Command),
        (examples_wasm::STREAMING_COMPONENT, ModuleKind::Command),
        (examples_wasm::WORDCOUNT, ModuleKind::Job),
    ] {
        let module = runtime().load(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(module.kind(), kind, "{path}");
    }
}

#[test]
fn a_component_of_another_world_does_not_implement_the_contract() {
    // Exports nothing.
    let empty = wat::parse_str("(component)").unwrap();
    let message = refusal(&empty);
    assert!(message.contains("implements neither"), "{message}");
    assert!(message.contains("wasi:cli/run"), "{message}");

    // Imports an interface the host does not provide.
    let foreign = wat::parse_str(
        r#"(component (import "acme:other/thing@1.0.0" (instance (export "f" (func)))))"#,
    )
    .unwrap();
    let message = refusal(&foreign);
    assert!(message.contains("implements neither"), "{message}");
    assert!(message.contains("acme:other/thing"), "{message}");
}

/// A component built against `quern:job@0.1.0` (it imports that version's
/// host interface) is told which contract it has, which one runs here and
/// what to rebuild, instead of a linker error.
#[test]
fn a_component_of_the_0_1_contract_is_told_to_rebuild() {
    let old = wat::parse_str(
        r#"(component
            (import "quern:job/host@0.1.0" (instance
                (export "add-counters" (func (param "deltas" (list (tuple string s64)))))))
            (core module $m (func (export "init")))
            (core instance $i (instantiate $m))
            (func (export "init") (canon lift (core func $i "init"))))"#,
    )
    .unwrap();
    let message = refusal(&old);
    assert!(message.contains("quern:job@0.1.0"), "{message}");
    assert!(message.contains("quern:job@0.2.0"), "{message}");
    assert!(message.contains("rebuild"), "{message}");
}

#[test]
fn a_truncated_component_does_not_compile() {
    let bytes = std::fs::read(examples_wasm::WORDCOUNT).unwrap();
    let message = refusal(&bytes[..bytes.len() / 2]);
    assert!(message.contains("does not compile"), "{message}");
}

#[test]
fn modules_are_cached_in_memory_and_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
    };
    let bytes = std::fs::read(examples_wasm::WORDCOUNT).unwrap();
    let sha = module_id(&bytes);

    let first = Runtime::new(config.clone()).unwrap();
    assert!(first.cached(&sha).is_none(), "nothing is cached yet");
    let a = first.load(&bytes).unwrap();
    let b = first.load(&bytes).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "the second load is the cached module");
    assert_eq!(a.sha256, sha);
    assert!(cache.path().join(format!("{sha}.cwasm")).exists());
    drop(first);

    // A new process (a new runtime) finds the compiled module on disk.
    let second = Runtime::new(config).unwrap();
    let cached = second.cached(&sha).expect("loaded from the disk cache");
    let loaded = second.load(&bytes).unwrap();
    assert!(Arc::ptr_eq(&cached, &loaded));

    // And the module from disk runs a job correctly.
    let out = tempfile::tempdir().unwrap();
    let job = LocalJob::new(small_texts(), 3, out.path().join("out"));
    worker::local::run_local(&second, &cached, &job).unwrap();
    assert_eq!(
        read_output(&job.output, 3, b"\t"),
        native_wordcount(&small_texts())
    );
}

#[test]
fn a_corrupt_cache_file_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(examples_wasm::WORDCOUNT).unwrap();
    let sha = module_id(&bytes);
    std::fs::write(cache.path().join(format!("{sha}.cwasm")), b"torn").unwrap();
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
    })
    .unwrap();
    assert!(rt.cached(&sha).is_none(), "a torn cache file is not used");
    let module = rt.load(&bytes).expect("compiled again");
    let args = [];
    rt.instantiate(
        &module,
        &worker::runtime::TaskPlan::reduce(),
        &protocol::Limits::default(),
        &args,
    )
    .map(|_| ())
    .unwrap();
}
