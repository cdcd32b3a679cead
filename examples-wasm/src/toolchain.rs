//! What the build script says when the Rust toolchain lacks a guest
//! target. Shared by `build.rs` (through `#[path]`) and this crate's tests.

use std::path::Path;

/// The message for a sysroot without `target`'s standard library, or
/// `None` when the target is installed.
pub fn missing_target(sysroot: &Path, target: &str) -> Option<String> {
    if sysroot
        .join("lib/rustlib")
        .join(target)
        .join("lib")
        .is_dir()
    {
        return None;
    }
    Some(format!(
        "\n\nThe example guests build for {target}, which this Rust toolchain ({}) does not \
         have.\nInstall the guest targets and build again:\n\n    rustup target add \
         wasm32-wasip2 wasm32-wasip1\n\n(scripts/toolchain does this; scripts/demo and \
         scripts/test run it first.)\n",
        sysroot.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toolchain installed without the guest targets (what rustup leaves
    /// when the pinned toolchain was already there) is told what to run.
    #[test]
    fn a_sysroot_without_the_target_is_told_what_to_add() {
        let sysroot = tempfile_dir();
        std::fs::create_dir_all(sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/lib")).unwrap();
        let message = missing_target(&sysroot, "wasm32-wasip2").expect("the target is missing");
        assert!(
            message.contains("rustup target add wasm32-wasip2 wasm32-wasip1"),
            "{message}"
        );
        assert!(message.contains("wasm32-wasip2"), "{message}");

        std::fs::create_dir_all(sysroot.join("lib/rustlib/wasm32-wasip2/lib")).unwrap();
        assert_eq!(missing_target(&sysroot, "wasm32-wasip2"), None);
        std::fs::remove_dir_all(&sysroot).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("quern-sysroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
