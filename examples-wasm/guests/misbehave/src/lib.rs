//! A guest that misbehaves on purpose, chosen by the `mode` argument, so
//! the host's limits can be tested:
//!
//! - `panic`: panics on the first record;
//! - `loop`: never returns from the first record;
//! - `alloc`: allocates without bound;
//! - `stdout`: writes 64 MiB to stdout, then works like word count;
//! - `fail`: returns an error on the record at offset `fail-at` (default 0);
//! - `sleep`: sleeps `sleep-ms` (default 1000) once per task, then counts words;
//! - `stall`: sleeps once per task for between `stall-min-ms` (default 0) and
//!   `stall-max-ms` (default 1000), picked by hashing `seed` with the task's
//!   first record, so every task gets its own delay and a run with the same
//!   seed gets the same ones; then counts words.
//!
//! Without a mode it counts words. `reduce-mode` applies the same modes to
//! the reduce side.

use std::io::Write;

use quern_guest::{Args, Context, Error, Job, Result, Values, export_job};

#[derive(Default)]
struct Misbehave {
    mode: String,
    reduce_mode: String,
    fail_at: String,
    sleep_ms: u64,
    stall_min_ms: u64,
    stall_max_ms: u64,
    seed: String,
    started: bool,
}

impl Misbehave {
    fn act(&mut self, mode: &str, at: &[u8]) -> Result {
        let first = !std::mem::replace(&mut self.started, true);
        match mode {
            "panic" => panic!("misbehave: deliberate panic"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "stdout" => {
                let chunk = vec![b'x'; 1 << 20];
                let mut out = std::io::stdout().lock();
                for _ in 0..64 {
                    out.write_all(&chunk)?;
                }
                Ok(())
            }
            "fail" if at == self.fail_at.as_bytes() => {
                Err(Error::msg(format!("misbehave: deliberate failure at {}", String::from_utf8_lossy(at))))
            }
            "sleep" if first => {
                std::thread::sleep(std::time::Duration::from_millis(self.sleep_ms));
                Ok(())
            }
            "stall" if first => {
                let span = self.stall_max_ms.saturating_sub(self.stall_min_ms) + 1;
                let ms = self.stall_min_ms + fnv1a(&[self.seed.as_bytes(), b"/", at]) % span;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// 64-bit FNV-1a over the concatenated parts.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl Job for Misbehave {
    fn setup(&mut self, args: &Args) -> Result {
        self.mode = args.get("mode").unwrap_or("").to_owned();
        self.reduce_mode = args.get("reduce-mode").unwrap_or("").to_owned();
        self.fail_at = args.get("fail-at").unwrap_or("0").to_owned();
        self.sleep_ms = args.get("sleep-ms").unwrap_or("1000").parse()?;
        self.stall_min_ms = args.get("stall-min-ms").unwrap_or("0").parse()?;
        self.stall_max_ms = args.get("stall-max-ms").unwrap_or("1000").parse()?;
        self.seed = args.get("seed").unwrap_or("").to_owned();
        Ok(())
    }

    fn map(&mut self, offset: &[u8], text: &[u8], ctx: &mut Context) -> Result {
        let mode = self.mode.clone();
        self.act(&mode, offset)?;
        for word in String::from_utf8_lossy(text).split(|c: char| !c.is_alphabetic()) {
            if !word.is_empty() {
                ctx.emit(word, "1");
            }
        }
        Ok(())
    }

    fn reduce(&mut self, word: &[u8], counts: &mut Values, ctx: &mut Context) -> Result {
        let mode = self.reduce_mode.clone();
        self.act(&mode, word)?;
        ctx.emit(word, counts.sum_u64()?.to_string());
        Ok(())
    }
}

export_job!(Misbehave);
