//! Benchmark inputs: the eight example texts repeated to a target size, so
//! the word distribution is that of real prose. Written under `target/` and
//! deleted with their temporary directory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The workspace's `target/` directory.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// A temporary directory under `target/`, removed when dropped.
pub fn scratch() -> anyhow::Result<tempfile::TempDir> {
    let target = target_dir();
    std::fs::create_dir_all(&target)?;
    tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(&target)
        .context("creating a scratch directory under target/")
}

/// Writes the example texts over and over to `path` until it holds at
/// least `size` bytes; returns the size written.
pub fn generate(path: &Path, size: u64) -> anyhow::Result<u64> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data");
    let mut texts = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        texts.push(std::fs::read(&name)?);
    }
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut written = 0;
    'fill: loop {
        for text in &texts {
            out.write_all(text)?;
            written += text.len() as u64;
            if written >= size {
                break 'fill;
            }
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(written)
}
