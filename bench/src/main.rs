//! The benchmark harness: `cargo run -p bench --release -- engine` (guest
//! map throughput against native code, warm task start) and `-- engine-1g`
//! (peak memory of a 1 GiB word count), `-- languages` (word count in each
//! guest language: compile, task start, map throughput against native),
//! `wordcount` and `sort` (a real `quern up --workers 2` against the
//! programs a user would run instead: a plain native word count, `tr |
//! awk`, Polars, DuckDB; GNU sort),
//! and whole-cluster runs: `throughput`
//! (coordinator lease + complete rate on SQLite and Postgres), `latency`
//! (one-split job, submit to committed output), `cluster-1g` (1 GiB word
//! count on two workers against native single-threaded) and `stragglers`
//! (one slow worker, backups off and on). Plain `std::time`; results go to
//! stdout for BENCHMARKS.md.

mod cluster;
mod data;
mod engine;
mod languages;
mod native;
mod versus;

use std::process::ExitCode;

const USAGE: &str = "usage: bench engine | engine-1g | languages | wordcount | sort | throughput | latency | cluster-1g | stragglers";

fn main() -> ExitCode {
    let Some(which) = std::env::args().nth(1) else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let result = match which.as_str() {
        "engine" => engine::engine(),
        "engine-1g" => engine::engine_1g(),
        "languages" => languages::languages(),
        "wordcount" => versus::wordcount(),
        "sort" => versus::sort(),
        "throughput" => cluster::throughput(),
        "latency" => cluster::latency(),
        "cluster-1g" => cluster::job_1g(),
        "stragglers" => cluster::stragglers(),
        other => {
            eprintln!("unknown benchmark `{other}`\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
