//! Compiles the guests in `guests/` to wasm32-wasip2 components with a
//! nested cargo, copies them to `target/guests/NAME.wasm` and tells the
//! crate where they are. The streaming-mode guest is a program: it is
//! built twice, as a wasm32-wasip1 core module (`streaming.wasm`) and as a
//! wasm32-wasip2 command component (`streaming-component.wasm`). This is
//! what lets `cargo test` run with no manual build step first.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/toolchain.rs"]
mod toolchain;

const GUESTS: &[&str] = &["wordcount", "indexer", "grep", "misbehave", "sort"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let guests_dir = manifest_dir.join("guests");
    let target_dir = root.join("target").join("guests");

    println!("cargo:rerun-if-changed={}", guests_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("guest-sdk").display()
    );

    for target in ["wasm32-wasip2", "wasm32-wasip1"] {
        require_target(&guests_dir, target);
    }
    cargo_build(&guests_dir, &target_dir, &["--target=wasm32-wasip2"]);
    cargo_build(
        &guests_dir,
        &target_dir,
        &["--target=wasm32-wasip1", "--package=streaming"],
    );

    let mut consts = String::new();
    let mut outputs: Vec<(&str, &str, String)> = GUESTS
        .iter()
        .map(|name| (*name, "wasm32-wasip2", name.to_string()))
        .collect();
    outputs.push(("streaming", "wasm32-wasip1", "streaming".into()));
    outputs.push(("streaming", "wasm32-wasip2", "streaming-component".into()));
    for (built_name, target, name) in outputs {
        let built = target_dir
            .join(target)
            .join("release")
            .join(format!("{built_name}.wasm"));
        let copy = target_dir.join(format!("{name}.wasm"));
        copy_if_changed(&built, &copy);
        consts.push_str(&format!(
            "/// Path of the built `{name}` guest ({target}).\npub const {}: &str = {:?};\n",
            name.to_uppercase().replace('-', "_"),
            copy.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, consts).unwrap();
}

/// Stops the build with what to run when the toolchain lacks `target`
/// (rustup installs a pinned toolchain's targets only when it installs the
/// toolchain itself; without this the nested build dies with "can't find
/// crate for `core`").
fn require_target(guests_dir: &Path, target: &str) {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(guests_dir)
        .env_remove("RUSTC")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(message) = sysroot.and_then(|s| toolchain::missing_target(&s, target)) {
        panic!("{message}");
    }
}

/// Runs `cargo build --release` on the guests' workspace with `args`.
fn cargo_build(guests_dir: &Path, target_dir: &Path, args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .args(args)
        .arg("--manifest-path")
        .arg(guests_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(guests_dir);
    // The outer build's settings (clippy's wrapper, host rustflags, the
    // outer target dir, coverage flags) must not leak into the guest build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_")
            && key != "CARGO_HOME"
            && key != "CARGO_MAKEFLAGS"
            && key != "CARGO_NET_OFFLINE"
            && !key.starts_with("CARGO_REGISTRIES_")
            && !key.starts_with("CARGO_HTTP_")
        {
            cmd.env_remove(&key);
        }
    }
    for key in [
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC",
        "RUSTDOC",
    ] {
        cmd.env_remove(key);
    }
    let status = cmd.status().expect("failed to run cargo for the guests");
    assert!(status.success(), "building the example guests failed");
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, new).unwrap();
    }
}
