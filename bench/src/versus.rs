//! Whole jobs on a real `quern up --workers 2` against the programs a user
//! would run instead, on the same files, in one run: each round runs every
//! contender once, in the same order (A B A B ...), every output is
//! checked equal to the baseline's, and the medians and their ratio to the
//! baseline are printed.
//!
//! - `bench wordcount`: 8 files of 32 MiB; the baseline is a plain
//!   single-threaded Rust word count (`HashMap<&[u8], u64>` over the bytes,
//!   compiled into this harness at opt-level 3), against `quern submit
//!   --wait --download` with and without `--no-combine`, `tr | awk`,
//!   Polars and DuckDB (from PyPI, in a virtual environment under
//!   `target/`).
//! - `bench sort`: 1 GiB of text lines; the baseline is `LC_ALL=C sort
//!   --parallel=2 -S 1G`, against the sort guest with `--partitioner range`.
//!
//! The cluster is warm: the inputs are uploaded and the module compiled by
//! a first job before anything is timed. Build first:
//! `cargo build -p quern -p examples-wasm`.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::data::{scratch, target_dir};

/// Rounds of every contender.
const ROUNDS: usize = 3;

/// A `quern up` process, stopped when dropped.
struct Up {
    child: Child,
    url: String,
    token: String,
    _data: tempfile::TempDir,
}

impl Up {
    fn start(workers: u32) -> anyhow::Result<Self> {
        let data = scratch()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(data.path().join("up.log"))?;
        let child = Command::new(quern_binary()?)
            .args(["up", "--workers", &workers.to_string(), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data.path())
            .env_remove("QUERN_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting quern up")?;
        let token_path = data.path().join("token");
        let started = Instant::now();
        let mut up = Up {
            child,
            url,
            token: String::new(),
            _data: data,
        };
        loop {
            if let Ok(token) = std::fs::read_to_string(&token_path)
                && healthy(&format!("{}/healthz", up.url))
            {
                up.token = token.trim().to_owned();
                return Ok(up);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("quern up did not come up in 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `quern ARGS --coordinator URL --token TOKEN`, output discarded.
    fn quern(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = Command::new(quern_binary()?)
            .args(args)
            .args(["--coordinator", &self.url, "--token", &self.token])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            output.status.success(),
            "quern {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `url` answers a GET with a 2xx.
fn healthy(url: &str) -> bool {
    Command::new("curl")
        .args(["-fs", "-o", "/dev/null", url])
        .status()
        .is_ok_and(|s| s.success())
}

fn quern_binary() -> anyhow::Result<PathBuf> {
    let path = target_dir().join("debug/quern");
    ensure!(
        path.exists(),
        "{} is missing: run `cargo build -p quern -p examples-wasm` first",
        path.display()
    );
    Ok(path)
}

/// Turns a finished run's output into the form outputs are compared in;
/// called after the clock stops.
type Canonical = Box<dyn FnOnce() -> anyhow::Result<Vec<u8>>>;

/// A contender's run: writes its output under the directory it is given.
type Run<'a> = Box<dyn FnMut(&Path) -> anyhow::Result<Canonical> + 'a>;

/// One contender: a name and its run.
struct Contender<'a> {
    name: &'static str,
    run: Run<'a>,
    times: Vec<Duration>,
}

impl<'a> Contender<'a> {
    fn new(name: &'static str, run: impl FnMut(&Path) -> anyhow::Result<Canonical> + 'a) -> Self {
        Contender {
            name,
            run: Box::new(run),
            times: Vec::new(),
        }
    }
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// Runs every contender `ROUNDS` times in turn, checks each output equal to
/// the first contender's, and prints the table.
fn compare(contenders: &mut [Contender], bytes: u64) -> anyhow::Result<()> {
    crate::engine::print_load("start");
    let mut expected: Option<Vec<u8>> = None;
    for round in 0..ROUNDS {
        for c in contenders.iter_mut() {
            let dir = scratch()?;
            let started = Instant::now();
            let canonical = (c.run)(dir.path()).with_context(|| format!("running {}", c.name))?;
            let took = started.elapsed();
            let output = canonical()?;
            match &expected {
                None => expected = Some(output),
                Some(want) => ensure!(
                    &output == want,
                    "{}: output differs from the baseline's ({} bytes against {})",
                    c.name,
                    output.len(),
                    want.len()
                ),
            }
            println!(
                "round {round}: {:<36} {:>7.2} s",
                c.name,
                took.as_secs_f64()
            );
            c.times.push(took);
        }
    }
    crate::engine::print_load("end");
    let base = median(&contenders[0].times).as_secs_f64();
    println!();
    println!("| contender | median wall | MB/s | vs baseline |");
    println!("|---|---|---|---|");
    for c in contenders.iter() {
        let m = median(&c.times).as_secs_f64();
        println!(
            "| {} | {:.2} s | {:.0} | {:.2}x |",
            c.name,
            m,
            bytes as f64 / 1e6 / m,
            m / base
        );
    }
    println!("(all outputs equal to the baseline's; {ROUNDS} rounds, in the order listed)");
    Ok(())
}

/// The lines of `text` sorted: the canonical form of an unordered output.
fn sorted_lines(text: &[u8]) -> Vec<u8> {
    let mut lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort_unstable();
    let mut out = Vec::with_capacity(text.len() + 1);
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// The canonical form of an output file whose lines are in no order.
fn sorted_file(path: PathBuf) -> Canonical {
    Box::new(move || Ok(sorted_lines(&std::fs::read(path)?)))
}

/// The part files of a downloaded output, concatenated in partition order.
fn concatenated_parts(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    names.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("part-r-"))
    });
    names.sort();
    ensure!(!names.is_empty(), "no part files in {}", dir.display());
    let mut all = Vec::new();
    for name in names {
        all.extend(std::fs::read(name)?);
    }
    Ok(all)
}

/// The plain word count a user would write: one thread, the files read
/// whole, words are runs of ASCII letters (the texts are ASCII; the guest
/// splits on Unicode letters and gives the same words), a `HashMap` of
/// byte slices, the result written sorted as `word<TAB>count` lines.
fn native_word_count(files: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let texts: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let mut counts: HashMap<&[u8], u64> = HashMap::new();
    for text in &texts {
        for word in text.split(|b| !b.is_ascii_alphabetic()) {
            if !word.is_empty() {
                *counts.entry(word).or_insert(0) += 1;
            }
        }
    }
    let mut words: Vec<(&[u8], u64)> = counts.into_iter().collect();
    words.sort_unstable();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    for (word, n) in words {
        file.write_all(word)?;
        writeln!(file, "\t{n}")?;
    }
    file.flush()?;
    Ok(())
}

fn shell(script: &str, args: &[&Path]) -> anyhow::Result<()> {
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("bench")
        .args(args)
        .status()?;
    ensure!(status.success(), "`{script}` failed: {status}");
    Ok(())
}

/// A Python with Polars and DuckDB from PyPI, in `target/bench-python`
/// (made on first use), or why there is none.
fn python_with_dataframes() -> Result<PathBuf, String> {
    let venv = target_dir().join("bench-python");
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import polars, duckdb"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return Ok(python);
    }
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(&python)
            .args(["-m", "pip", "install", "-q", "polars", "duckdb"])
            .status()
            .is_ok_and(|s| s.success());
    if made && ready(&python) {
        Ok(python)
    } else {
        Err("could not install polars and duckdb from PyPI".into())
    }
}

const POLARS: &str = r#"
import sys, polars as pl
out, files = sys.argv[1], sys.argv[2:]
lines = pl.scan_csv(files, has_header=False, separator="\x1f", quote_char=None,
                    new_columns=["line"], schema_overrides={"line": pl.String})
counts = (lines.select(pl.col("line").str.extract_all(r"[A-Za-z]+").explode().alias("w"))
          .drop_nulls().group_by("w").len().collect())
with open(out, "w") as f:
    for w, c in counts.iter_rows():
        f.write(f"{w}\t{c}\n")
"#;

const DUCKDB: &str = r#"
import sys, duckdb
out, files = sys.argv[1], sys.argv[2:]
con = duckdb.connect()
con.execute("SET threads TO 2")
rows = con.execute(
    "SELECT word, count(*) FROM (SELECT unnest(regexp_extract_all(line, '[A-Za-z]+')) AS word "
    "FROM read_csv(?, columns = {'line': 'VARCHAR'}, delim = '\x1f', quote = '', escape = '', "
    "header = false)) GROUP BY word", [files]).fetchall()
with open(out, "w") as f:
    for w, c in rows:
        f.write(f"{w}\t{c}\n")
"#;

/// `bench wordcount`.
pub fn wordcount() -> anyhow::Result<()> {
    let dir = scratch()?;
    let mut files = Vec::new();
    let mut bytes = 0;
    for i in 0..8 {
        let path = dir.path().join(format!("words-{i}.txt"));
        bytes += crate::data::generate(&path, 32 << 20)?;
        files.push(path);
    }
    println!(
        "input: {} files, {bytes} bytes ({:.0} MiB)",
        files.len(),
        bytes as f64 / (1 << 20) as f64
    );
    let up = Up::start(2)?;
    let mut upload: Vec<&str> = vec!["upload"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    upload.extend(names.iter().map(String::as_str));
    upload.extend(["--to", "wc"]);
    up.quern(&upload)?;
    let module = examples_wasm::WORDCOUNT;
    let submit = |out: &Path, extra: &[&str]| -> anyhow::Result<Canonical> {
        let download = out.join("out");
        let download_arg = download.display().to_string();
        let mut args = vec![
            "submit",
            module,
            "wc/*",
            "--reducers",
            "4",
            "--wait",
            "--download",
            &download_arg,
        ];
        args.extend(extra);
        up.quern(&args)?;
        Ok(Box::new(move || Ok(sorted_lines(&concatenated_parts(&download)?))) as Canonical)
    };
    // Warm-up: the module compiled and cached on both workers.
    submit(dir.path(), &[])?()?;

    let python = python_with_dataframes();
    let mut contenders = vec![
        Contender::new("native word count (1 thread)", |out| {
            let path = out.join("native.txt");
            native_word_count(&files, &path)?;
            Ok(sorted_file(path))
        }),
        Contender::new("quern up --workers 2", |out| submit(out, &[])),
        Contender::new("quern up --workers 2, --no-combine", |out| {
            submit(out, &["--no-combine"])
        }),
        Contender::new("tr | awk", |out| {
            let path = out.join("trawk.txt");
            let mut args: Vec<&Path> = vec![&path];
            args.extend(files.iter().map(PathBuf::as_path));
            shell(
                r#"out=$1; shift; cat "$@" | tr -cs A-Za-z '\n' | awk 'NF { c[$0]++ } END { for (w in c) printf "%s\t%d\n", w, c[w] }' > "$out""#,
                &args,
            )?;
            Ok(sorted_file(path))
        }),
    ];
    match &python {
        Ok(python) => {
            for (name, script) in [("Polars", POLARS), ("DuckDB (2 threads)", DUCKDB)] {
                let python = python.clone();
                let files = &files;
                contenders.push(Contender::new(name, move |out| {
                    let path = out.join("frame.txt");
                    let status = Command::new(&python)
                        .arg("-c")
                        .arg(script)
                        .arg(&path)
                        .args(files)
                        .status()?;
                    ensure!(status.success(), "{name} failed: {status}");
                    Ok(sorted_file(path))
                }));
            }
        }
        Err(why) => println!("Polars and DuckDB left out: {why}"),
    }
    compare(&mut contenders, bytes)
}

/// `bench sort`.
pub fn sort() -> anyhow::Result<()> {
    let dir = scratch()?;
    let input = dir.path().join("lines.txt");
    let bytes = crate::data::generate(&input, 1 << 30)?;
    println!(
        "input: {bytes} bytes ({:.0} MiB) of text lines",
        bytes as f64 / (1 << 20) as f64
    );
    let up = Up::start(2)?;
    let input_arg = input.display().to_string();
    up.quern(&["upload", &input_arg, "--to", "sort"])?;
    let submit = |out: &Path| -> anyhow::Result<Canonical> {
        let download = out.join("out");
        let download_arg = download.display().to_string();
        up.quern(&[
            "submit",
            examples_wasm::SORT,
            "sort/lines.txt",
            "--partitioner",
            "range",
            "--reducers",
            "4",
            "--wait",
            "--download",
            &download_arg,
        ])?;
        Ok(Box::new(move || concatenated_parts(&download)) as Canonical)
    };
    // Warm-up on a small file: the module compiled on both workers.
    let small = dir.path().join("small.txt");
    crate::data::generate(&small, 1 << 20)?;
    let small_arg = small.display().to_string();
    up.quern(&["upload", &small_arg, "--to", "warm"])?;
    up.quern(&[
        "submit",
        examples_wasm::SORT,
        "warm/small.txt",
        "--partitioner",
        "range",
        "--reducers",
        "4",
        "--wait",
    ])?;

    let mut contenders = vec![
        Contender::new("LC_ALL=C sort --parallel=2 -S 1G", |out| {
            let path = out.join("sorted.txt");
            shell(
                r#"LC_ALL=C sort --parallel=2 -S 1G -T "$(dirname "$2")" -o "$2" "$1""#,
                &[&input, &path],
            )?;
            Ok(Box::new(move || Ok(std::fs::read(path)?)) as Canonical)
        }),
        Contender::new("quern up --workers 2, sort guest, range", |out| submit(out)),
    ];
    compare(&mut contenders, bytes)
}
