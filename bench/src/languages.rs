//! `bench languages`: what a job costs in each guest language. For each
//! word count (Rust, C, Python and JavaScript components; the Rust and C
//! streaming commands) it measures the module's compile time, the start of
//! a task (instantiate and `init` for a component; a whole run with empty
//! stdin for a command) and map throughput over the same input, next to the
//! native Rust baseline. Component map outputs are checked byte for byte
//! against the native one.
//!
//! The non-Rust modules come from `examples-wasm/langs/build` (toolchains
//! from `scripts/guest-toolchains`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use protocol::{Limits, ModuleKind};
use worker::runtime::{CommandSpec, LineSink, SinkError};
use worker::{Runtime, RuntimeConfig};

use crate::data::{generate, scratch};
use crate::engine::{map_settings, map_whole_file, mb_per_s, median, print_load, print_machine};
use crate::native;

/// Input of the throughput runs: enough for a stable figure from the
/// fastest guest, small enough for the slowest to finish in seconds.
const INPUT: u64 = 16 << 20;
/// Reducers of the map runs.
const REDUCERS: u32 = 4;
/// Timed map runs per module; the median counts.
const RUNS: usize = 3;
/// Timed task starts per module.
const STARTS: usize = 50;

struct Subject {
    name: &'static str,
    path: PathBuf,
}

/// Builds (or finds cached) one language's examples.
fn built(lang: &str, file: &str) -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples-wasm/langs/build");
    let out = Command::new(&script)
        .arg(lang)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "building the {lang} examples failed (run scripts/guest-toolchains first):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()).join(file))
}

/// Discards a command's output lines.
struct Discard;

impl LineSink for Discard {
    fn line(&mut self, _line: &[u8], _number: u64) -> Result<(), SinkError> {
        Ok(())
    }
}

/// `bench languages`.
pub fn languages() -> anyhow::Result<()> {
    print_machine();
    let subjects = vec![
        Subject {
            name: "Rust (SDK component)",
            path: examples_wasm::WORDCOUNT.into(),
        },
        Subject {
            name: "C (wit-bindgen component)",
            path: built("c", "c-wordcount.wasm")?,
        },
        Subject {
            name: "Python (componentize-py)",
            path: built("python", "python-wordcount.wasm")?,
        },
        Subject {
            name: "JavaScript (componentize-js)",
            path: built("js", "js-wordcount.wasm")?,
        },
        Subject {
            name: "Rust streaming (wasip1 command)",
            path: examples_wasm::STREAMING.into(),
        },
        Subject {
            name: "C streaming (wasip1 command)",
            path: built("c-streaming", "c-streaming-wordcount.wasm")?,
        },
    ];

    let scratch = scratch()?;
    let input = scratch.path().join("input.txt");
    let size = generate(&input, INPUT)?;
    println!(
        "input: {size} bytes of prose; map over one split, R={REDUCERS}, combine where the guest has one"
    );

    // One untimed pass warms the page cache and the allocator for everyone.
    let native_counts = native::word_count_file(&input)?;
    let mut native_times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        native::word_count_file(&input)?;
        native_times.push(started.elapsed());
    }
    let native = mb_per_s(size, median(&mut native_times));
    println!("plain native word count: {native:.1} MB/s");

    println!();
    println!("| guest | module size | compile | task start | map MB/s | vs native |");
    println!("|---|---|---|---|---|---|");
    for subject in &subjects {
        let bytes = std::fs::read(&subject.path)
            .with_context(|| format!("reading {}", subject.path.display()))?;
        // A fresh runtime without a disk cache, so the compile is real.
        let runtime = Runtime::new(RuntimeConfig::default())?;
        let started = Instant::now();
        let module = runtime
            .load(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", subject.name))?;
        let compile = started.elapsed();

        let start = task_start(&runtime, &module)?;

        let settings = map_settings(REDUCERS);
        let out = scratch.path().join("guest.out");
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let started = Instant::now();
            let report =
                map_whole_file(&runtime, &module, &settings, &input, scratch.path(), &out)?;
            times.push(started.elapsed());
            let index = report
                .outcome
                .map_err(|e| anyhow::anyhow!("{}: {e}", subject.name))?;
            ensure!(
                native::map_output_counts(&out, &index)? == native_counts,
                "{}: the map output's counts differ from the native ones",
                subject.name
            );
        }
        let speed = mb_per_s(size, median(&mut times));
        println!(
            "| {} | {} | {:.2} s | {} | {speed:.1} | {:.2} |",
            subject.name,
            fmt_size(bytes.len()),
            compile.as_secs_f64(),
            fmt_duration(start),
            speed / native
        );
    }
    println!();
    println!(
        "task start: median of {STARTS}; a component's is instantiate + init, a command's a whole run over empty stdin"
    );
    print_load("end");
    Ok(())
}

/// The median time to start a task: instantiate and `init` for a
/// component, a whole run with empty stdin for a command.
fn task_start(runtime: &Runtime, module: &worker::GuestModule) -> anyhow::Result<Duration> {
    let limits = Limits::default();
    let mut times = Vec::with_capacity(STARTS);
    for _ in 0..STARTS {
        let started = Instant::now();
        match module.kind() {
            ModuleKind::Job => drop(runtime.instantiate(
                module,
                &worker::runtime::TaskPlan::map(true, 32 << 20),
                &limits,
                &[],
            )?),
            ModuleKind::Command => {
                let spec = CommandSpec {
                    phase: "map",
                    args: &[],
                    env: Vec::new(),
                    limits: &limits,
                    cancel: Default::default(),
                };
                runtime
                    .run_command(module, &spec, Discard, |_stdin| Ok(()))
                    .outcome?;
            }
        }
        times.push(started.elapsed());
    }
    Ok(median(&mut times))
}

fn fmt_size(bytes: usize) -> String {
    if bytes < 1 << 20 {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    }
}

fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}
