//! Whole-cluster benchmarks: coordinator task throughput on SQLite and
//! Postgres, a 1 GiB word count on a two-worker local cluster against a
//! native single-threaded word count, and the submit-to-output latency of a
//! one-split job on a warm cluster.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use protocol::api::JobInfo;
use protocol::worker_api::{AttemptResult, CompleteRequest};
use protocol::{Counters, JobSpec, JobState, MapOutputIndex, PartitionIndex, WorkerId};
use server::store::{Liveness, MapInputDoc, NewJob, Store};
use server::{AppState, Config};
use tokio::net::TcpListener;

const LIVENESS: Liveness = Liveness {
    lease_ms: 60_000,
    dead_after_ms: 60_000,
};

fn now() -> i64 {
    server::now_ms()
}

/// A job of `maps` map tasks over one fake input, R = 1.
fn noop_job(maps: usize) -> NewJob {
    NewJob {
        spec: JobSpec::new("0".repeat(64), vec!["bench".into()], 1),
        maps: (0..maps)
            .map(|i| MapInputDoc {
                path: "bench".into(),
                file_name: "bench".into(),
                start: i as u64,
                end: i as u64 + 1,
                size: Some(maps as u64),
            })
            .collect(),
        token: "t".into(),
        partitioner: protocol::Partitioner::Hash,
    }
}

/// Leases and completes every map task of a fresh job with `clients`
/// concurrent lease/complete loops; returns tasks per second.
async fn drive(store: Arc<dyn Store>, maps: usize, clients: usize) -> anyhow::Result<f64> {
    store.create_job(&noop_job(maps), now()).await?;
    let mut workers = Vec::new();
    for c in 0..clients {
        let id = WorkerId(format!("bench-{maps}-{clients}-{c}"));
        store
            .register_worker(&id, "http://127.0.0.1:1", 1, now())
            .await?;
        workers.push(id);
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for worker in workers {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut done = 0u64;
            while let Some(lease) = store.lease(&worker, now(), LIVENESS).await? {
                let result = match lease.kind {
                    protocol::TaskKind::Map => AttemptResult::Map {
                        index: MapOutputIndex {
                            partitions: vec![PartitionIndex {
                                offset: 0,
                                length: 0,
                                records: 0,
                            }],
                        },
                    },
                    protocol::TaskKind::Reduce => AttemptResult::Reduce {
                        records: 0,
                        bytes: 0,
                    },
                };
                let report = CompleteRequest {
                    worker_id: worker.clone(),
                    result,
                    counters: Counters::default(),
                    stdout: String::new(),
                    stderr: String::new(),
                };
                store.complete(lease.attempt, &report, now()).await?;
                done += 1;
            }
            Ok::<_, anyhow::Error>(done)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    // Every map, then the job's one reduce.
    if total != maps as u64 + 1 {
        bail!("completed {total} of {} tasks", maps + 1);
    }
    Ok(total as f64 / secs)
}

async fn fresh_postgres(url: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let name = format!("quern_bench_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    Ok(format!("{base}/{name}"))
}

/// `bench throughput`: lease + complete of no-op tasks per second.
pub fn throughput() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let maps = 20_000;
        let dir = tempfile::tempdir()?;
        let sqlite_store = Arc::new(server::store::SqliteStore::open(&dir.path().join("b.db")).await?);
        let sqlite: Arc<dyn Store> = sqlite_store.clone();
        // Submitting a big job holds SQLite's one connection this long.
        let started = Instant::now();
        sqlite.create_job(&noop_job(65_536), now()).await?;
        println!("sqlite   create a 65,536-map job: {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
        sqlite.cancel_job(protocol::JobId(1), now()).await?;
        for clients in [1, 8] {
            let commits = sqlite_store.commits();
            let rate = drive(sqlite.clone(), maps, clients).await?;
            println!(
                "sqlite   clients={clients:<2} {rate:>8.0} tasks/s = {:>8.0} transitions/s (lease + complete), \
                 {} commits for {} transitions",
                rate * 2.0,
                sqlite_store.commits() - commits,
                2 * (maps + 1)
            );
        }
        let url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        match fresh_postgres(&url).await {
            Ok(db) => {
                let pg: Arc<dyn Store> = Arc::new(server::store::PostgresStore::connect(&db).await?);
                for clients in [1, 8, 16] {
                    let rate = drive(pg.clone(), maps, clients).await?;
                    println!(
                        "postgres clients={clients:<2} {rate:>8.0} tasks/s = {:>8.0} transitions/s (lease + complete)",
                        rate * 2.0
                    );
                }
            }
            Err(err) => println!("postgres skipped: {err:#}"),
        }
        Ok(())
    })
}

/// An in-process cluster like `quern up`.
struct Cluster {
    api: String,
    token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Cluster {
    async fn start(workers: u32) -> anyhow::Result<Self> {
        Self::start_with(workers, |_, _| {}).await
    }

    async fn start_with(
        workers: u32,
        tune: impl Fn(u32, &mut worker::agent::AgentConfig),
    ) -> anyhow::Result<Self> {
        let dir = crate::data::scratch()?;
        let state = AppState::open(Config::new(dir.path().join("coordinator"))).await?;
        state
            .add_token("bench-user", server::auth::USER, "bench")
            .await?;
        state
            .add_token("bench-worker", server::auth::WORKER, "bench")
            .await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let api = format!("http://{}", listener.local_addr()?);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tokio::spawn(server::serve(listener, state, wait(rx.clone())));
        for n in 0..workers {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let mut config = worker::agent::AgentConfig::new(
                api.clone(),
                "bench-worker",
                dir.path().join(format!("w{n}")),
            );
            config.slots = 1;
            tune(n, &mut config);
            tokio::spawn(worker::agent::run(listener, config, wait(rx.clone())));
        }
        Ok(Cluster {
            api,
            token: "bench-user".into(),
            http: reqwest::Client::new(),
            _dir: dir,
            stop,
        })
    }

    async fn upload(&self, local: &Path, dest: &str) -> anyhow::Result<()> {
        let file = tokio::fs::File::open(local).await?;
        let body =
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        self.http
            .put(format!("{}/api/v1/datasets/{dest}", self.api))
            .bearer_auth(&self.token)
            .body(body)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn module(&self, path: &str) -> anyhow::Result<String> {
        let bytes = tokio::fs::read(path).await?;
        let info: protocol::api::ModuleInfo = self
            .http
            .post(format!("{}/api/v1/modules", self.api))
            .bearer_auth(&self.token)
            .body(bytes)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(info.sha256)
    }

    /// Submits and polls until the job finishes; returns it and the time.
    async fn run(&self, spec: &JobSpec, poll: Duration) -> anyhow::Result<(JobInfo, Duration)> {
        let started = Instant::now();
        let job: JobInfo = self
            .http
            .post(format!("{}/api/v1/jobs", self.api))
            .bearer_auth(&self.token)
            .json(spec)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        loop {
            let info: JobInfo = self
                .http
                .get(format!("{}/api/v1/jobs/{}", self.api, job.id))
                .bearer_auth(&self.token)
                .send()
                .await?
                .json()
                .await?;
            if info.state.is_finished() {
                return Ok((info, started.elapsed()));
            }
            tokio::time::sleep(poll).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Native single-threaded word count: the same words, a hash map.
fn native_wordcount(path: &Path) -> anyhow::Result<usize> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line)? > 0 {
        for word in String::from_utf8_lossy(&line).split(|c: char| !c.is_alphabetic()) {
            if !word.is_empty() {
                match counts.get_mut(word) {
                    Some(n) => *n += 1,
                    None => {
                        counts.insert(word.to_owned(), 1);
                    }
                }
            }
        }
        line.clear();
    }
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(path.with_extension("native-out"))?);
    let mut words: Vec<_> = counts.iter().collect();
    words.sort();
    for (w, n) in &words {
        writeln!(out, "{w}\t{n}")?;
    }
    Ok(words.len())
}

/// Concatenates the example texts until `bytes` long.
fn corpus(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data"))? {
        texts.extend(std::fs::read(entry?.path())?);
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0;
    while written < bytes {
        out.write_all(&texts)?;
        written += texts.len() as u64;
    }
    Ok(())
}

/// `bench cluster-1g`: word count over 1 GiB with `quern up --workers 2`
/// against native single-threaded word count.
pub fn job_1g() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let dir = crate::data::scratch()?;
    let input = dir.path().join("corpus.txt");
    corpus(&input, 1 << 30)?;
    let size = std::fs::metadata(&input)?.len();

    let started = Instant::now();
    let words = native_wordcount(&input)?;
    let native = started.elapsed();
    println!(
        "native single-threaded: {:.2} s, {:.0} MB/s ({words} distinct words)",
        native.as_secs_f64(),
        size as f64 / 1e6 / native.as_secs_f64()
    );

    rt.block_on(async {
        let cluster = Cluster::start(2).await?;
        cluster.upload(&input, "bench/corpus.txt").await.context("uploading")?;
        let module = cluster.module(examples_wasm::WORDCOUNT).await?;
        let spec = JobSpec::new(module, vec!["bench/corpus.txt".into()], 4);
        let (job, took) = cluster.run(&spec, Duration::from_millis(200)).await?;
        if job.state != JobState::Succeeded {
            bail!("job failed: {:?}", job.error);
        }
        println!(
            "quern up --workers 2 (1 slot each): {:.2} s, {:.0} MB/s, {} map tasks; speedup over native {:.2}x",
            took.as_secs_f64(),
            size as f64 / 1e6 / took.as_secs_f64(),
            job.map.total,
            native.as_secs_f64() / took.as_secs_f64()
        );
        Ok(())
    })
}

/// `bench latency`: submit to committed output of a one-split job on a warm
/// cluster.
pub fn latency() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let cluster = Cluster::start(2).await?;
        let dir = tempfile::tempdir()?;
        let input = dir.path().join("small.txt");
        std::fs::write(&input, "the quick brown fox jumps over the lazy dog\n".repeat(100))?;
        cluster.upload(&input, "bench/small.txt").await?;
        let module = cluster.module(examples_wasm::WORDCOUNT).await?;
        let spec = JobSpec::new(module, vec!["bench/small.txt".into()], 1);
        // Warm-up: module compiled and cached on both workers.
        for _ in 0..3 {
            cluster.run(&spec, Duration::from_millis(2)).await?;
        }
        let mut times = Vec::new();
        for _ in 0..30 {
            let (job, took) = cluster.run(&spec, Duration::from_millis(2)).await?;
            if job.state != JobState::Succeeded {
                bail!("job failed: {:?}", job.error);
            }
            times.push(took);
        }
        times.sort();
        println!(
            "one-split word count, submit to committed output (30 runs): median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            times[15].as_secs_f64() * 1e3,
            times[27].as_secs_f64() * 1e3,
            times[29].as_secs_f64() * 1e3
        );
        Ok(())
    })
}

/// `bench stragglers`: a job on three workers, one of them slow (every task
/// takes 2 s longer there), with and without backup attempts.
pub fn stragglers() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let cluster = Cluster::start_with(3, |n, config| {
            if n == 0 {
                config.task_delay = Duration::from_secs(2);
            }
        })
        .await?;
        let dir = tempfile::tempdir()?;
        let mut inputs = Vec::new();
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data"))? {
            let path = entry?.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let copy = dir.path().join(&name);
            std::fs::copy(&path, &copy)?;
            cluster.upload(&copy, &format!("books/{name}")).await?;
            inputs.push(format!("books/{name}"));
        }
        let module = cluster.module(examples_wasm::WORDCOUNT).await?;
        for backups in [false, true, false, true] {
            let mut spec = JobSpec::new(module.clone(), vec!["books/*.txt".into()], 6);
            spec.split_size = 128 << 10;
            spec.backups = backups;
            let (job, took) = cluster.run(&spec, Duration::from_millis(20)).await?;
            if job.state != JobState::Succeeded {
                bail!("job failed: {:?}", job.error);
            }
            let attempts: Vec<protocol::api::AttemptInfo> = cluster
                .http
                .get(format!("{}/api/v1/jobs/{}/attempts", cluster.api, job.id))
                .bearer_auth(&cluster.token)
                .send()
                .await?
                .json()
                .await?;
            let backup_attempts = attempts.iter().filter(|a| a.backup).count();
            println!(
                "backups {:<5} {} map + {} reduce tasks: {:.2} s ({backup_attempts} backup attempts)",
                if backups { "on" } else { "off" },
                job.map.total,
                job.reduce.total,
                took.as_secs_f64()
            );
        }
        Ok(())
    })
}
