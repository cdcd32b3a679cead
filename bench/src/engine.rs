//! The engine benchmarks: guest map throughput against the native baseline,
//! warm task start, and a 1 GiB job's peak memory.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use protocol::counters as names;
use protocol::{InputFormat, Limits};
use worker::local::{LocalJob, run_local};
use worker::{MapInput, MapSettings, Runtime, RuntimeConfig, run_map};

use crate::data::{generate, scratch};
use crate::native;

/// Input size of the throughput benchmark.
const MAP_INPUT: u64 = 64 << 20;
/// Reducers of the throughput benchmark.
const REDUCERS: u32 = 4;
/// Timed runs of each side of the throughput benchmark; the median counts.
const MAP_RUNS: usize = 5;
/// Instantiations timed for task start.
const STARTS: usize = 1000;
/// Input size of `engine-1g`.
const BIG_INPUT: u64 = 1 << 30;

pub(crate) fn mb_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

pub(crate) fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Prints the machine, so every figure says where it was taken.
pub(crate) fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    println!("machine: {cores} cores, {cpu}; profile: {profile}");
    print_load("start");
}

/// Prints the load average: other work on the machine skews every figure.
pub(crate) fn print_load(when: &str) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("load average at {when}: {}", load.join(" "));
}

/// Map settings of the throughput runs: R reducers, combine on, the
/// default limits and sort buffer.
pub(crate) fn map_settings(reducers: u32) -> MapSettings {
    MapSettings::new(reducers)
}

/// One map task over the whole of `input` (one split, `lines`).
pub(crate) fn map_whole_file(
    runtime: &Runtime,
    module: &worker::GuestModule,
    settings: &MapSettings,
    input: &Path,
    work: &Path,
    output: &Path,
) -> anyhow::Result<worker::TaskReport<protocol::MapOutputIndex>> {
    let size = std::fs::metadata(input)?.len();
    Ok(run_map(
        runtime,
        module,
        settings,
        MapInput {
            reader: File::open(input)?,
            file_name: "input.txt".into(),
            format: InputFormat::Lines,
            start: 0,
            end: size,
        },
        work,
        output,
    ))
}

/// `bench engine`.
pub fn engine() -> anyhow::Result<()> {
    print_machine();
    let scratch = scratch()?;
    let input = scratch.path().join("input.txt");
    let size = generate(&input, MAP_INPUT)?;
    println!(
        "input: {size} bytes ({:.1} MiB) of prose",
        size as f64 / f64::from(1 << 20)
    );

    let cache = scratch.path().join("cache");
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.clone()),
    })?;
    let bytes = std::fs::read(examples_wasm::WORDCOUNT).context("reading the wordcount guest")?;
    let started = Instant::now();
    let module = runtime.load(&bytes)?;
    let compile = started.elapsed();
    let disk = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache),
    })?;
    let started = Instant::now();
    disk.cached(&module.sha256)
        .context("the module is in the disk cache")?;
    let from_disk = started.elapsed();
    drop(disk);
    println!(
        "module load: compile {:.0} ms, from the disk cache {:.1} ms",
        compile.as_secs_f64() * 1e3,
        from_disk.as_secs_f64() * 1e3
    );

    // Map throughput, guest and native, alternating so that both see the
    // same page cache and machine noise. The guest's map task reads the
    // file, maps it and writes its map-output file (sorted, partitioned,
    // synced); the native program reads the file and counts.
    let guest_out = scratch.path().join("guest.out");
    let mut guest_times = Vec::new();
    let mut native_times = Vec::new();
    let mut no_combine_times = Vec::new();
    let mut indexer_times = Vec::new();
    let indexer = runtime.load(&std::fs::read(examples_wasm::INDEXER)?)?;
    let no_combine = MapSettings {
        combine: false,
        ..map_settings(REDUCERS)
    };
    // One timed map task over the whole input: its index and the pairs
    // the guest emitted.
    let timed_map = |module: &worker::GuestModule,
                     settings: &MapSettings,
                     times: &mut Vec<Duration>|
     -> anyhow::Result<(protocol::MapOutputIndex, i64)> {
        let started = Instant::now();
        let report = map_whole_file(
            &runtime,
            module,
            settings,
            &input,
            scratch.path(),
            &guest_out,
        )?;
        times.push(started.elapsed());
        let emitted = report.counters.get(names::MAP_OUTPUT_RECORDS);
        Ok((report.outcome?, emitted))
    };
    let combining = map_settings(REDUCERS);
    let mut emitted = 0;
    for _ in 0..MAP_RUNS {
        let (index, pairs) = timed_map(&module, &combining, &mut guest_times)?;
        emitted = pairs;

        let started = Instant::now();
        let native_counts = native::word_count_file(&input)?;
        native_times.push(started.elapsed());
        ensure!(
            native::map_output_counts(&guest_out, &index)? == native_counts,
            "the guest's map output and the native counts differ"
        );

        let (index, _) = timed_map(&module, &no_combine, &mut no_combine_times)?;
        ensure!(
            native::map_output_counts(&guest_out, &index)? == native_counts,
            "the guest's uncombined map output and the native counts differ"
        );

        timed_map(&indexer, &combining, &mut indexer_times)?;
    }
    let (guest_time, native_time) = (median(&mut guest_times), median(&mut native_times));
    let (guest, native) = (mb_per_s(size, guest_time), mb_per_s(size, native_time));
    println!(
        "map throughput, one core (1 split, R={REDUCERS}, median of {MAP_RUNS}, alternating):"
    );
    println!(
        "  wordcount guest, combining ({emitted} pairs emitted)  {guest:7.1} MB/s  ({:.2} s)",
        guest_time.as_secs_f64()
    );
    println!(
        "  plain native word count                   {native:7.1} MB/s  ({:.2} s)",
        native_time.as_secs_f64()
    );
    println!(
        "  guest/native {:.2} (target >= 0.70); counts equal",
        guest / native
    );
    let no_combine_time = median(&mut no_combine_times);
    println!(
        "  wordcount guest, --no-combine             {:7.1} MB/s  ({:.2} s)",
        mb_per_s(size, no_combine_time),
        no_combine_time.as_secs_f64()
    );
    let indexer_time = median(&mut indexer_times);
    println!(
        "  indexer guest                             {:7.1} MB/s  ({:.2} s)",
        mb_per_s(size, indexer_time),
        indexer_time.as_secs_f64()
    );

    // Task start with a warm module cache.
    let limits = Limits::default();
    for _ in 0..20 {
        runtime.instantiate(
            &module,
            &worker::runtime::TaskPlan::map(true, 32 << 20),
            &limits,
            &[],
        )?;
    }
    let mut starts = Vec::with_capacity(STARTS);
    for _ in 0..STARTS {
        let started = Instant::now();
        let guest = runtime.instantiate(
            &module,
            &worker::runtime::TaskPlan::map(true, 32 << 20),
            &limits,
            &[],
        );
        starts.push(started.elapsed());
        drop(guest?);
    }
    starts.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "task start (instantiate + init, warm, {STARTS} runs): median {:.0} us, p99 {:.0} us, max {:.0} us (target < 1000 us)",
        micros(starts[STARTS / 2]),
        micros(starts[STARTS * 99 / 100]),
        micros(starts[STARTS - 1]),
    );
    print_load("end");
    Ok(())
}

/// The process's peak resident set (VmHWM) in bytes.
fn peak_rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib << 10)
}

/// Resets VmHWM to the current RSS (Linux 4.0+), so the peak measured is
/// the job's and not the input generator's.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `bench engine-1g`.
pub fn engine_1g() -> anyhow::Result<()> {
    print_machine();
    let scratch = scratch()?;
    let input = scratch.path().join("input-1g.txt");
    let size = generate(&input, BIG_INPUT)?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let module = runtime.load(&std::fs::read(examples_wasm::WORDCOUNT)?)?;
    let reset = reset_peak_rss();
    let before = peak_rss()?;

    let job = LocalJob::new(vec![input.clone()], REDUCERS, scratch.path().join("out"));
    let started = Instant::now();
    let report = run_local(&runtime, &module, &job)?;
    let time = started.elapsed();
    let peak = peak_rss()?;
    std::fs::remove_file(&input)?;

    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "1 GiB word count (run_local, split {} MiB, sort buffer {} MiB, R={REDUCERS}, combine):",
        job.split_size >> 20,
        job.sort_buffer >> 20
    );
    println!("  input      {size} bytes ({:.0} MiB)", mib(size));
    println!("  map tasks  {}", report.map_tasks);
    println!(
        "  spilled    {} runs",
        report.counters.get(names::SPILLED_RUNS)
    );
    println!(
        "  time       {:.1} s ({:.1} MB/s)",
        time.as_secs_f64(),
        mb_per_s(size, time)
    );
    println!(
        "  peak RSS   {:.0} MiB ({} before the job: {:.0} MiB)",
        mib(peak),
        if reset {
            "reset to RSS"
        } else {
            "VmHWM not resettable; peak"
        },
        mib(before)
    );
    print_load("end");
    Ok(())
}
