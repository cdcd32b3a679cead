//! Word count for streaming mode, written against nothing but stdin and
//! stdout: `map` reads one record per line and writes `word<TAB>1` lines,
//! `reduce` reads key-sorted `word<TAB>count` lines and writes one
//! `word<TAB>total` line per word. Its output equals the `wordcount`
//! component's byte for byte.
//!
//! Job arguments arrive as `name=value` after the phase. The test suite
//! uses `fault=...` to make it misbehave (`exit`, `loop`, `alloc`,
//! `sleep` for an hour), and `probe=1` to have map report
//! what it was given instead of counting words.

use std::io::{self, BufRead, BufWriter, Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let phase = argv.get(1).map(String::as_str).unwrap_or("");
    let arg = |name: &str| {
        argv.iter()
            .skip(2)
            .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let fault = arg("fault").unwrap_or_default();
    let stdin = io::stdin().lock();
    let mut out = BufWriter::with_capacity(64 << 10, io::stdout().lock());
    let result = match (phase, fault.as_str()) {
        ("map", "exit") => {
            eprintln!("streaming: the input looks wrong, giving up");
            return ExitCode::from(3);
        }
        ("map", "loop") => loop {
            std::hint::black_box(&argv);
        },
        ("map", "sleep") => {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Ok(())
        }
        ("map", "alloc") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        ("map", _) if arg("probe").is_some() => probe(stdin, &mut out, &argv[2..]),
        ("map", _) => map(stdin, &mut out, &fault),
        ("reduce", _) if arg("probe").is_some() => copy(stdin, &mut out),
        ("reduce", _) => reduce(stdin, &mut out),
        (other, _) => {
            eprintln!("streaming: unknown phase {other:?} (expected map or reduce)");
            return ExitCode::from(2);
        }
    };
    match result.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("streaming: {err}");
            ExitCode::FAILURE
        }
    }
}

fn map(mut stdin: impl BufRead, out: &mut impl Write, fault: &str) -> io::Result<()> {
    let mut line = Vec::new();
    let mut records = 0u64;
    while stdin.read_until(b'\n', &mut line)? > 0 {
        records += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        for word in String::from_utf8_lossy(&line).split(|c: char| !c.is_alphabetic()) {
            if !word.is_empty() {
                out.write_all(word.as_bytes())?;
                out.write_all(b"\t1\n")?;
            }
        }
        if fault == "bad-line" && records == 2 {
            out.write_all(b"this line has no tab\n")?;
        }
        if fault == "head" {
            // Stops reading after the first record, like `head -n 1`.
            return Ok(());
        }
        line.clear();
    }
    Ok(())
}

fn reduce(mut stdin: impl BufRead, out: &mut impl Write) -> io::Result<()> {
    let mut line = Vec::new();
    let mut current: Option<(Vec<u8>, u64)> = None;
    while stdin.read_until(b'\n', &mut line)? > 0 {
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let tab = line
            .iter()
            .position(|&b| b == b'\t')
            .ok_or_else(|| io::Error::other("a reduce input line has no tab"))?;
        let (key, value) = (&line[..tab], &line[tab + 1..]);
        let count: u64 = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not a count: {value:?}")))?;
        match &mut current {
            Some((word, total)) if word.as_slice() == key => *total += count,
            _ => {
                if let Some((word, total)) = current.take() {
                    write_total(out, &word, total)?;
                }
                current = Some((key.to_vec(), count));
            }
        }
        line.clear();
    }
    if let Some((word, total)) = current {
        write_total(out, &word, total)?;
    }
    Ok(())
}

fn write_total(out: &mut impl Write, word: &[u8], total: u64) -> io::Result<()> {
    out.write_all(word)?;
    writeln!(out, "\t{total}")
}

/// An identity reduce: every input line is an output line.
fn copy(mut stdin: impl Read, out: &mut impl Write) -> io::Result<()> {
    io::copy(&mut stdin, out).map(drop)
}

/// Reports what the map run was given: its environment, its arguments and
/// the size and line count of its stdin.
fn probe(mut stdin: impl Read, out: &mut impl Write, args: &[String]) -> io::Result<()> {
    let mut input = Vec::new();
    stdin.read_to_end(&mut input)?;
    for name in ["QUERN_PHASE", "QUERN_INPUT_FILE", "QUERN_INPUT_FORMAT"] {
        writeln!(out, "{name}\t{}", std::env::var(name).unwrap_or_default())?;
    }
    writeln!(out, "args\t{}", args.join(","))?;
    writeln!(out, "stdin-bytes\t{}", input.len())?;
    writeln!(out, "stdin-lines\t{}", input.iter().filter(|&&b| b == b'\n').count())?;
    Ok(())
}
