//! `quern run --local`: runs a job in this process with the local runner.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use worker::local::{LocalFailure, LocalJob, run_local};
use worker::{Runtime, RuntimeConfig};

use crate::options::JobOptions;
use crate::units::parse_size;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in this process, sequentially (the only mode of `run`; use
    /// `quern submit` for a cluster).
    #[arg(long)]
    local: bool,
    /// The job's `.wasm`: a quern:job component, or a WASI command with
    /// `--mode streaming`.
    module: PathBuf,
    /// Input files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    options: JobOptions,
    /// Output directory.
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Between key and value on output lines.
    #[arg(long, default_value = "\t")]
    separator: String,
    /// Sort buffer per map task before spilling to disk (e.g. 64MiB).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    sort_buffer: u64,
    /// Where compiled modules are cached.
    #[arg(long, env = "QUERN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("quern").join("modules"))
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if !args.local {
        bail!("`quern run` runs jobs locally: pass --local (use `quern submit` for a cluster)");
    }
    let started = Instant::now();
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("reading {}", args.module.display()))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: args.cache_dir.or_else(default_cache_dir),
    })?;
    let module = runtime
        .load(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.module.display()))?;
    let options = args.options;
    options
        .mode_for(module.kind())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.module.display()))?;
    let job = LocalJob {
        inputs: args.inputs,
        reducers: options.reducers,
        split_size: options.split_size,
        format: options.format,
        combine: !options.no_combine,
        combine_buffer: options.combine_buffer,
        partitioner: options.partitioner,
        limits: options.limits(),
        args: options.args,
        output: args.output,
        separator: args.separator.into_bytes(),
        sort_buffer: usize::try_from(args.sort_buffer).unwrap_or(usize::MAX),
    };
    match run_local(&runtime, &module, &job) {
        Ok(report) => {
            eprintln!(
                "job succeeded in {:.2}s: {} map tasks, {} reduce tasks",
                started.elapsed().as_secs_f64(),
                report.map_tasks,
                report.outputs.len()
            );
            for (name, value) in &report.counters.0 {
                eprintln!("  {name:<34} {value}");
            }
            for path in &report.outputs {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => match err.downcast::<LocalFailure>() {
            Ok(failure) => {
                eprintln!("job failed: {failure}");
                for (name, text) in [
                    ("stdout", &failure.logs.stdout),
                    ("stderr", &failure.logs.stderr),
                ] {
                    if !text.is_empty() {
                        eprintln!("--- guest {name} ---\n{}", text.trim_end());
                    }
                }
                Ok(ExitCode::FAILURE)
            }
            Err(err) => Err(err),
        },
    }
}
