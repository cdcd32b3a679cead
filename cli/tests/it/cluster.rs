//! Distributed runs checked against the local runner: `TestCluster` starts a
//! coordinator and workers in this process on a fresh database, and one test
//! runs the real `quern` binary as separate processes.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use examples_wasm::{INDEXER, MISBEHAVE, SORT, STREAMING, WORDCOUNT};
use protocol::api::{AttemptInfo, DatasetFile, JobInfo, ModuleInfo, OutputFile, TaskInfo};
use protocol::{
    AttemptOutcome, JobId, JobMode, JobSpec, JobState, ModuleKind, PartitionBy, TaskKind, TaskState,
};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use server::{AppState, Config};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use testkit::DATABASE_URL_VAR;
use testkit::{PgDatabase, postgres_url};

/// Map split size of every distributed test job: small, so the eight texts
/// make many map tasks.
pub const SPLIT_SIZE: u64 = 256 << 10;

/// Longest a test job may take before the test gives up on it.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether tests can run on `backend`: SQLite always, Postgres when
/// `TEST_DATABASE_URL` is set.
pub fn backend_available(backend: &str) -> bool {
    backend == "sqlite" || (backend == "postgres" && postgres_url().is_some())
}

/// Turns each `async fn NAME(backend: &str)` into a module `NAME` with a
/// `sqlite` and a `postgres` test; the latter skips, with a note, when
/// Postgres is not configured.
macro_rules! per_backend {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test("sqlite").await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if !$crate::cluster::backend_available("postgres") {
                    eprintln!("skipped: set {} to test Postgres", $crate::cluster::DATABASE_URL_VAR);
                    return;
                }
                super::$test("postgres").await;
            }
        }
    )*};
}
pub(crate) use per_backend;

/// An input file of the examples.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data")
        .join(name)
}

/// The eight example texts, sorted.
pub fn texts() -> Vec<PathBuf> {
    let mut texts: Vec<PathBuf> = std::fs::read_dir(data(""))
        .expect("read examples/data")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension() == Some(OsStr::new("txt")))
        .collect();
    texts.sort();
    assert_eq!(texts.len(), 8, "examples/data should hold eight texts");
    texts
}

/// A coordinator and workers in this process, on 127.0.0.1 ports of their
/// own, a fresh database and a fresh data directory. Dropping it stops
/// everything and deletes the data; `stop` also checks that every part
/// shut down cleanly.
pub struct TestCluster {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// A user token.
    pub user_token: String,
    /// The worker token.
    pub worker_token: String,
    http: reqwest::Client,
    stop: watch::Sender<bool>,
    /// The coordinator first, then the workers.
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    // Declared last: the data outlives every handle on it (Postgres drops
    // the database with FORCE, so aborted tasks' connections do not matter).
    _database: Option<PgDatabase>,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// A cluster of `workers` workers with the test settings.
    pub async fn spawn(workers: usize, backend: &str) -> Self {
        Self::spawn_with(workers, backend, |_| {}).await
    }

    /// A cluster whose coordinator settings `tweak` adjusts.
    pub async fn spawn_with(
        workers: usize,
        backend: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let database = match backend {
            "sqlite" => None,
            "postgres" => Some(PgDatabase::create().await),
            other => panic!("unknown backend `{other}`"),
        };
        let mut config = Config::new(dir.path().join("coordinator"));
        config.database = database.as_ref().map(|db| db.url.clone());
        config.dead_after = Duration::from_secs(3);
        // Short long-polls let a graceful shutdown finish quickly.
        config.lease_wait = Duration::from_secs(2);
        tweak(&mut config);
        let state = AppState::open(config).await.expect("open the coordinator");
        assert_eq!(state.store.backend(), backend);
        let user_token = server::auth::new_token();
        let worker_token = server::auth::new_token();
        state
            .add_token(&user_token, server::auth::USER, "test user")
            .await
            .unwrap();
        state
            .add_token(&worker_token, server::auth::WORKER, "test workers")
            .await
            .unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut tasks = vec![tokio::spawn(server::serve(
            listener,
            state,
            until_stopped(stopped.clone()),
        ))];
        for n in 0..workers {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let config = worker::agent::AgentConfig::new(
                url.clone(),
                worker_token.clone(),
                dir.path().join(format!("worker-{n}")),
            );
            tasks.push(tokio::spawn(worker::agent::run(
                listener,
                config,
                until_stopped(stopped.clone()),
            )));
        }
        TestCluster {
            url,
            user_token,
            worker_token,
            http: reqwest::Client::new(),
            stop,
            tasks,
            _database: database,
            _dir: dir,
        }
    }

    /// Registers a worker (at an address nothing listens on) with the
    /// cluster's worker token; the answer carries the worker's own token.
    pub async fn register_worker(&self) -> protocol::worker_api::RegisterResponse {
        let response = self
            .request(Method::POST, "/worker/register", Some(&self.worker_token))
            .json(&serde_json::json!({"address": "http://127.0.0.1:9", "slots": 1}))
            .send()
            .await
            .expect("POST /worker/register reaches the API");
        expect_json(response, "POST /worker/register").await
    }

    /// Stops the workers and the coordinator, and checks that each ended
    /// without an error.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => panic!("a cluster member failed: {err:#}"),
                Ok(Err(err)) => panic!("a cluster member panicked: {err}"),
                Err(_) => {
                    abort.abort();
                    panic!("a cluster member did not stop within 30 s");
                }
            }
        }
    }

    /// A request to `/api/v1{path}` with `token` as the bearer, if any.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET /api/v1{path}` as the user.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path, Some(&self.user_token))
    }

    /// `POST /api/v1{path}` as the user.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path, Some(&self.user_token))
    }

    /// `GET /api/v1{path}` as the user, expecting success and JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> T {
        let response = self.get(path).send().await.expect("GET reaches the API");
        expect_json(response, &format!("GET {path}")).await
    }

    /// Uploads the module at `path`; returns its sha256.
    pub async fn upload_module(&self, path: &str) -> String {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        let response = self
            .post(&format!("/modules?name={name}"))
            .body(bytes)
            .send()
            .await
            .expect("POST /modules reaches the API");
        let info: ModuleInfo = expect_json(response, "POST /modules").await;
        info.sha256
    }

    /// Uploads a local file as the dataset file `dataset`.
    pub async fn upload(&self, local: &Path, dataset: &str) -> DatasetFile {
        let bytes = std::fs::read(local).unwrap();
        let response = self
            .request(
                Method::PUT,
                &format!("/datasets/{dataset}"),
                Some(&self.user_token),
            )
            .body(bytes)
            .send()
            .await
            .expect("PUT /datasets reaches the API");
        let file: DatasetFile = expect_json(response, "PUT /datasets").await;
        assert_eq!(file.size, std::fs::metadata(local).unwrap().len());
        file
    }

    /// Uploads the eight texts into dataset directory `dir`; returns the
    /// glob that names them.
    pub async fn upload_texts(&self, dir: &str) -> String {
        for text in texts() {
            let name = text.file_name().unwrap().to_str().unwrap();
            self.upload(&text, &format!("{dir}/{name}")).await;
        }
        format!("{dir}/*.txt")
    }

    /// Submits a job.
    pub async fn submit(&self, spec: &JobSpec) -> JobId {
        let response = self
            .post("/jobs")
            .json(spec)
            .send()
            .await
            .expect("POST /jobs reaches the API");
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
        let job: JobInfo = expect_json(response, "POST /jobs").await;
        job.id
    }

    /// Polls the job until it finishes; panics with its state, tasks and
    /// attempts when that takes longer than `JOB_TIMEOUT`.
    pub async fn wait(&self, job: JobId) -> JobInfo {
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let info: JobInfo = self.get_json(&format!("/jobs/{job}")).await;
            if info.state.is_finished() {
                return info;
            }
            if Instant::now() > deadline {
                let tasks: serde_json::Value = self.get_json(&format!("/jobs/{job}/tasks")).await;
                let attempts: serde_json::Value =
                    self.get_json(&format!("/jobs/{job}/attempts")).await;
                let workers: serde_json::Value = self.get_json("/workers").await;
                panic!(
                    "job {job} did not finish within {JOB_TIMEOUT:?}\njob: {info:#?}\n\
                     tasks: {tasks:#}\nattempts: {attempts:#}\nworkers: {workers:#}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The job's committed part files by name, downloaded.
    pub async fn parts(&self, job: JobId) -> BTreeMap<String, String> {
        let files: Vec<OutputFile> = self.get_json(&format!("/jobs/{job}/outputs")).await;
        let mut parts = BTreeMap::new();
        for file in files {
            let path = format!("/jobs/{job}/outputs/{}", file.name);
            let response = self.get(&path).send().await.unwrap();
            assert!(
                response.status().is_success(),
                "GET {path}: {}",
                response.status()
            );
            let text = response.text().await.unwrap();
            assert_eq!(text.len() as u64, file.size, "size of {}", file.name);
            parts.insert(file.name, text);
        }
        parts
    }

    /// Every key and value of the job's output, from its downloaded parts.
    pub async fn outputs(&self, job: JobId) -> BTreeMap<String, String> {
        parse_pairs(&self.parts(job).await)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The JSON body of a successful response.
pub async fn expect_json<T: DeserializeOwned>(response: reqwest::Response, what: &str) -> T {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{what}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"))
}

/// Whether every line of every part is `key<TAB>value` with a key of its
/// own.
fn keyed(parts: &BTreeMap<String, String>) -> bool {
    let mut keys = std::collections::HashSet::new();
    parts.values().flat_map(|text| text.lines()).all(|line| {
        line.split_once('\t')
            .is_some_and(|(key, _)| keys.insert(key.to_owned()))
    })
}

/// Every line of every part, split at the first tab; a key appears once.
pub fn parse_pairs(parts: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut pairs = BTreeMap::new();
    for (name, text) in parts {
        for line in text.lines() {
            let (key, value) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("no tab in {line:?} of {name}"));
            let earlier = pairs.insert(key.to_owned(), value.to_owned());
            assert!(earlier.is_none(), "key {key:?} appears twice");
        }
    }
    pairs
}

/// What the local runner made of the eight texts.
pub struct Expected {
    /// Map tasks it ran.
    pub map_tasks: usize,
    /// Its part files by name.
    pub parts: BTreeMap<String, String>,
    /// Their keys and values, when every line is `key<TAB>value` with a
    /// distinct key (not for the sort guest's lines).
    pub pairs: Option<BTreeMap<String, String>>,
}

/// The local run of `module` over the eight texts with `reducers`
/// reducers, computed once per test binary and shared by the tests.
pub async fn local_run(module: &'static str, reducers: u32) -> Arc<Expected> {
    type Cell = Arc<OnceLock<Arc<Expected>>>;
    static RUNS: OnceLock<Mutex<HashMap<(&'static str, u32), Cell>>> = OnceLock::new();
    let cell = RUNS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap()
        .entry((module, reducers))
        .or_default()
        .clone();
    tokio::task::spawn_blocking(move || {
        cell.get_or_init(|| Arc::new(run_locally(module, reducers)))
            .clone()
    })
    .await
    .expect("the local run")
}

fn run_locally(module: &str, reducers: u32) -> Expected {
    static RUNTIME: OnceLock<worker::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        worker::Runtime::new(worker::RuntimeConfig { cache_dir: None }).expect("a runtime")
    });
    let guest = runtime
        .load(&std::fs::read(module).unwrap())
        .unwrap_or_else(|e| panic!("loading {module}: {e}"));
    let out = tempfile::tempdir().unwrap();
    let mut job = worker::local::LocalJob::new(texts(), reducers, out.path().join("out"));
    job.split_size = SPLIT_SIZE;
    let report = worker::local::run_local(runtime, &guest, &job)
        .unwrap_or_else(|e| panic!("local run of {module}: {e:#}"));
    let parts: BTreeMap<String, String> = report
        .outputs
        .iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read_to_string(path).unwrap())
        })
        .collect();
    assert_eq!(parts.len(), reducers as usize);
    Expected {
        map_tasks: report.map_tasks,
        pairs: keyed(&parts).then(|| parse_pairs(&parts)),
        parts,
    }
}

/// Asserts equal part files, naming the first difference instead of
/// printing megabytes.
pub fn assert_same_parts(actual: &BTreeMap<String, String>, expected: &BTreeMap<String, String>) {
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "part file names"
    );
    for (name, want) in expected {
        let got = &actual[name];
        if got != want {
            let line = got
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
            panic!(
                "{name} differs from the local run ({} lines, expected {}); first at line {line}: \
                 {:?} instead of {:?}",
                got.lines().count(),
                want.lines().count(),
                got.lines().nth(line),
                want.lines().nth(line),
            );
        }
    }
}

/// Asserts equal key->value maps, naming the first difference.
pub fn assert_same_pairs(actual: &BTreeMap<String, String>, expected: &BTreeMap<String, String>) {
    if actual == expected {
        return;
    }
    let missing = expected.keys().find(|k| !actual.contains_key(*k));
    let extra = actual.keys().find(|k| !expected.contains_key(*k));
    let changed = expected
        .iter()
        .find(|(k, v)| actual.get(*k).is_some_and(|got| got != *v));
    panic!(
        "output differs from the local run: {} keys, expected {}; first missing {missing:?}, \
         first extra {extra:?}, first changed {changed:?} (now {:?})",
        actual.len(),
        expected.len(),
        changed.and_then(|(k, _)| actual.get(k)),
    );
}

/// A job over `inputs` with the test split size.
pub fn spec(module: &str, inputs: &str, reducers: u32) -> JobSpec {
    let mut spec = JobSpec::new(module, vec![inputs.to_owned()], reducers);
    spec.split_size = SPLIT_SIZE;
    spec
}

/// Asserts that a finished job succeeded with exactly the local run's output.
async fn assert_matches(cluster: &TestCluster, info: &JobInfo, expected: &Expected) {
    assert_eq!(
        info.state,
        JobState::Succeeded,
        "job {}: {:?}",
        info.id,
        info.error
    );
    assert_eq!(info.map.total as usize, expected.map_tasks, "map tasks");
    assert_eq!(info.map.completed, info.map.total);
    assert_eq!(info.reduce.total, info.spec.reducers as u64);
    assert_eq!(info.reduce.completed, info.reduce.total);
    assert_eq!(
        info.outputs,
        expected.parts.keys().cloned().collect::<Vec<_>>()
    );
    assert_same_parts(&cluster.parts(info.id).await, &expected.parts);
    if let Some(pairs) = &expected.pairs {
        assert_same_pairs(&cluster.outputs(info.id).await, pairs);
    }
}

async fn matches_the_local_run(backend: &str, module: &'static str, workers: usize, reducers: u32) {
    let expected = local_run(module, reducers).await;
    let cluster = TestCluster::spawn(workers, backend).await;
    let sha = cluster.upload_module(module).await;
    let inputs = cluster.upload_texts("books").await;
    let job = cluster.submit(&spec(&sha, &inputs, reducers)).await;
    let info = cluster.wait(job).await;
    assert_matches(&cluster, &info, &expected).await;
    cluster.stop().await;
}

async fn wordcount_1_worker_1_reducer(backend: &str) {
    matches_the_local_run(backend, WORDCOUNT, 1, 1).await;
}

async fn wordcount_2_workers_3_reducers(backend: &str) {
    matches_the_local_run(backend, WORDCOUNT, 2, 3).await;
}

async fn wordcount_3_workers_10_reducers(backend: &str) {
    matches_the_local_run(backend, WORDCOUNT, 3, 10).await;
}

async fn indexer_2_workers_3_reducers(backend: &str) {
    matches_the_local_run(backend, INDEXER, 2, 3).await;
}

async fn indexer_3_workers_10_reducers(backend: &str) {
    matches_the_local_run(backend, INDEXER, 3, 10).await;
}

/// A WASI command uploaded as is runs in streaming mode on the cluster and
/// writes exactly what the word-count component writes; submitted without
/// `mode: streaming` it is refused, naming the field.
async fn streaming_2_workers_3_reducers(backend: &str) {
    let expected = local_run(WORDCOUNT, 3).await;
    let cluster = TestCluster::spawn(2, backend).await;
    let sha = cluster.upload_module(STREAMING).await;
    let module: ModuleInfo = cluster.get_json(&format!("/modules/{sha}")).await;
    assert_eq!(module.kind, ModuleKind::Command);
    assert!(!module.has_combine);
    let inputs = cluster.upload_texts("books").await;

    let refused = cluster
        .post("/jobs")
        .json(&spec(&sha, &inputs, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let body = refused.text().await.unwrap();
    assert!(body.contains("\"mode\""), "{body}");
    assert!(body.contains("--mode streaming"), "{body}");

    let mut streaming = spec(&sha, &inputs, 3);
    streaming.mode = JobMode::Streaming;
    let job = cluster.submit(&streaming).await;
    let info = cluster.wait(job).await;
    assert_matches(&cluster, &info, &expected).await;
    cluster.stop().await;
}

async fn two_jobs_at_once(backend: &str) {
    let wordcount = local_run(WORDCOUNT, 3).await;
    let indexer = local_run(INDEXER, 3).await;
    let cluster = TestCluster::spawn(2, backend).await;
    let wordcount_sha = cluster.upload_module(WORDCOUNT).await;
    let indexer_sha = cluster.upload_module(INDEXER).await;
    let inputs = cluster.upload_texts("books").await;
    let first = cluster.submit(&spec(&wordcount_sha, &inputs, 3)).await;
    let second = cluster.submit(&spec(&indexer_sha, &inputs, 3)).await;
    let first = cluster.wait(first).await;
    let second = cluster.wait(second).await;
    assert_matches(&cluster, &first, &wordcount).await;
    assert_matches(&cluster, &second, &indexer).await;
    cluster.stop().await;
}

async fn attempts_record_one_success_per_task(backend: &str) {
    let cluster = TestCluster::spawn(2, backend).await;
    let sha = cluster.upload_module(WORDCOUNT).await;
    for name in ["pg-metamorphosis.txt", "pg-being_ernest.txt"] {
        cluster.upload(&data(name), &format!("small/{name}")).await;
    }
    let mut spec = spec(&sha, "small/", 2);
    spec.split_size = 64 << 10;
    let job = cluster.submit(&spec).await;
    let info = cluster.wait(job).await;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);

    let tasks: Vec<TaskInfo> = cluster.get_json(&format!("/jobs/{job}/tasks")).await;
    let attempts: Vec<AttemptInfo> = cluster.get_json(&format!("/jobs/{job}/attempts")).await;
    let workers: Vec<protocol::api::WorkerInfo> = cluster.get_json("/workers").await;
    assert_eq!(workers.len(), 2);
    assert_eq!(tasks.len() as u64, info.map.total + 2);
    assert!(info.map.total >= 4, "the texts should make several splits");
    for task in &tasks {
        assert_eq!(task.state, TaskState::Completed, "{task:?}");
        let won: Vec<&AttemptInfo> = attempts
            .iter()
            .filter(|a| a.task == task.id && a.outcome == AttemptOutcome::Succeeded)
            .collect();
        assert_eq!(
            won.len(),
            1,
            "succeeded attempts of {task:?}: {attempts:#?}"
        );
        let won = won[0];
        assert_eq!((won.kind, won.index), (task.kind, task.index));
        assert!(won.ended_at.is_some(), "{won:?}");
        assert!(
            workers.iter().any(|w| w.id == won.worker),
            "attempt {won:?} ran on an unknown worker"
        );
        if task.kind == TaskKind::Map {
            assert_eq!(task.worker.as_ref(), Some(&won.worker), "{task:?}");
        }
    }
    for attempt in &attempts {
        assert!(
            tasks.iter().any(|t| t.id == attempt.task),
            "attempt {attempt:?} of an unknown task"
        );
    }
    cluster.stop().await;
}

/// Every example guest gives the local run's output whether it combines
/// in the guest with the default buffer, with a 1 KiB buffer (a flush
/// every few dozen words), or not at all; the counters show the guest
/// holding pairs back.
async fn combining_in_the_guest_on_off_and_tiny(backend: &str) {
    let cluster = TestCluster::spawn(2, backend).await;
    let inputs = cluster.upload_texts("books").await;
    for module in [WORDCOUNT, INDEXER, SORT] {
        let expected = local_run(module, 3).await;
        let sha = cluster.upload_module(module).await;
        let mut emitted = Vec::new();
        for (combine, buffer) in [(true, None), (true, Some(1 << 10)), (false, None)] {
            let mut spec = spec(&sha, &inputs, 3);
            spec.combine = combine;
            spec.combine_buffer = buffer;
            let job = cluster.submit(&spec).await;
            let info = cluster.wait(job).await;
            assert_matches(&cluster, &info, &expected).await;
            emitted.push(info.counters.get(protocol::counters::MAP_OUTPUT_RECORDS));
        }
        if module == SORT {
            // No combiner: every line crosses the boundary each time.
            assert!(emitted.iter().all(|&n| n == emitted[0]), "{emitted:?}");
        } else {
            let [held, tiny, off] = emitted[..] else {
                unreachable!()
            };
            assert!(held < tiny && tiny < off, "{module}: emitted {emitted:?}");
        }
    }
    cluster.stop().await;
}

/// The sort guest with the range partitioner: the outputs concatenated in
/// partition order are every input line, sorted; the partitions are the
/// local runner's, and none is empty.
async fn range_partitioned_sort_is_a_total_order(backend: &str) {
    const R: u32 = 4;
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for path in texts() {
        let bytes = std::fs::read(path).unwrap();
        let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        lines.extend(
            body.split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec()),
        );
    }
    lines.sort();

    let local_dir = tempfile::tempdir().unwrap();
    let runtime = worker::Runtime::new(worker::RuntimeConfig { cache_dir: None }).unwrap();
    let guest = runtime.load(&std::fs::read(SORT).unwrap()).unwrap();
    let mut local = worker::local::LocalJob::new(texts(), R, local_dir.path().join("out"));
    local.split_size = SPLIT_SIZE;
    local.partitioner = PartitionBy::Range;
    let report = worker::local::run_local(&runtime, &guest, &local).unwrap();
    let local_parts: Vec<Vec<u8>> = report
        .outputs
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();

    let cluster = TestCluster::spawn(2, backend).await;
    let sha = cluster.upload_module(SORT).await;
    let inputs = cluster.upload_texts("books").await;
    let mut spec = spec(&sha, &inputs, R);
    spec.partitioner = PartitionBy::Range;
    let job = cluster.submit(&spec).await;
    let info = cluster.wait(job).await;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
    let parts = cluster.parts(job).await;
    assert_eq!(parts.len(), R as usize);
    let total: usize = parts.values().map(String::len).sum();
    let mut all: Vec<u8> = Vec::new();
    for (i, (name, text)) in parts.iter().enumerate() {
        assert_eq!(name, &protocol::part_name(i as u32));
        assert!(
            text.len() > total / (4 * R as usize),
            "{name} holds {} of {total} bytes: the sampled split points are off",
            text.len()
        );
        assert_eq!(
            text.as_bytes(),
            local_parts[i],
            "{name} differs from the local run"
        );
        all.extend_from_slice(text.as_bytes());
    }
    let got: Vec<&[u8]> = all
        .strip_suffix(b"\n")
        .unwrap_or(&all)
        .split(|&b| b == b'\n')
        .collect();
    assert_eq!(got.len(), lines.len(), "every input line, once");
    assert!(got.is_sorted(), "the concatenated outputs are in order");
    assert!(
        got.iter().zip(&lines).all(|(a, b)| *a == b.as_slice()),
        "the output is a permutation of the input lines"
    );
    cluster.stop().await;
}

/// Cancelling a job whose guests spin stops them at the next heartbeat
/// (the worker sets each dropped attempt's cancel flag), so the worker's
/// slots are free for the next job long before the spinning attempts' time
/// limit.
async fn a_cancelled_job_frees_its_slots(backend: &str) {
    let cluster = TestCluster::spawn(1, backend).await;
    let misbehave = cluster.upload_module(MISBEHAVE).await;
    let wordcount = cluster.upload_module(WORDCOUNT).await;
    for name in ["pg-metamorphosis.txt", "pg-being_ernest.txt"] {
        cluster.upload(&data(name), &format!("small/{name}")).await;
    }
    let mut spinning = spec(&misbehave, "small/", 1);
    spinning.args = vec![("mode".into(), "loop".into())];
    spinning.limits.timeout_secs = 600;
    let job = cluster.submit(&spinning).await;
    // Both slots of the worker spin on a map task.
    let started = Instant::now();
    loop {
        let info: JobInfo = cluster.get_json(&format!("/jobs/{job}")).await;
        if info.map.in_progress >= 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = cluster
        .post(&format!("/jobs/{job}/cancel"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let cancelled = Instant::now();

    let next = cluster.submit(&spec(&wordcount, "small/", 1)).await;
    loop {
        let info: JobInfo = cluster.get_json(&format!("/jobs/{next}")).await;
        if info.state == JobState::Succeeded {
            break;
        }
        assert!(
            !info.state.is_finished(),
            "the next job ended {:?}",
            info.error
        );
        assert!(
            cancelled.elapsed() < Duration::from_secs(120),
            "the cancelled job still holds the slots: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "cancel to the next job's success: {:.2} s",
        cancelled.elapsed().as_secs_f64()
    );
    cluster.stop().await;
}

/// A guest that fills the largest log a job may keep (16 MiB of stdout
/// per task) still completes: the worker cuts the logs it reports to fit
/// the coordinator's 2 MiB request limit, instead of retrying a refused
/// report until the lease expires and the task runs again, forever.
async fn the_largest_logs_still_fit_the_report(backend: &str) {
    let cluster = TestCluster::spawn(1, backend).await;
    let sha = cluster.upload_module(MISBEHAVE).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("two-lines.txt");
    std::fs::write(&input, "one two\nthree one\n").unwrap();
    cluster.upload(&input, "flood/two-lines.txt").await;
    let mut flood = spec(&sha, "flood/two-lines.txt", 1);
    flood.args = vec![("mode".into(), "stdout".into())];
    flood.limits.log_bytes = 16 << 20;
    let job = cluster.submit(&flood).await;
    let info = cluster.wait(job).await;
    assert_eq!(info.state, JobState::Succeeded, "{:?}", info.error);
    let attempts: Vec<AttemptInfo> = cluster.get_json(&format!("/jobs/{job}/attempts")).await;
    assert_eq!(
        attempts.len(),
        2,
        "one map and one reduce attempt: {attempts:#?}"
    );
    cluster.stop().await;
}

per_backend!(
    the_largest_logs_still_fit_the_report,
    a_cancelled_job_frees_its_slots,
    combining_in_the_guest_on_off_and_tiny,
    range_partitioned_sort_is_a_total_order,
    wordcount_1_worker_1_reducer,
    wordcount_2_workers_3_reducers,
    wordcount_3_workers_10_reducers,
    indexer_2_workers_3_reducers,
    indexer_3_workers_10_reducers,
    streaming_2_workers_3_reducers,
    two_jobs_at_once,
    attempts_record_one_success_per_task,
);

/// A child process that is killed when the guard drops, also when the test
/// panics. Its output goes to files, so it never blocks on a full pipe.
pub(crate) struct Process {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    pub(crate) fn spawn(name: &str, logs: &Path, args: &[OsString]) -> Self {
        let stdout = logs.join(format!("{name}.stdout"));
        let stderr = logs.join(format!("{name}.stderr"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_quern"));
        // Settings from the environment must not leak into the test.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("QUERN_") {
                command.env_remove(key);
            }
        }
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting quern {name}: {e}"));
        Process {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    pub(crate) fn logs(&self) -> String {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.name,
            read(&self.stdout),
            self.name,
            read(&self.stderr)
        )
    }

    /// The process id, for signals.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("checking a child process")
    }

    async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "quern {} ran longer than {timeout:?}\n{}",
                    self.name,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Command-line arguments of mixed types.
pub(crate) fn os_args(parts: &[&dyn AsRef<OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_owned()).collect()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

pub(crate) async fn wait_until_healthy(url: &str, serve: &mut Process) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = serve.exited() {
            panic!("quern serve exited ({status})\n{}", serve.logs());
        }
        if let Ok(response) = reqwest::get(format!("{url}/healthz")).await
            && response.status().is_success()
        {
            return;
        }
        if Instant::now() > deadline {
            panic!("quern serve is not healthy after 60 s\n{}", serve.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quern_processes_run_a_submitted_job() {
    let expected = local_run(WORDCOUNT, 3).await;
    let tmp = tempfile::tempdir().unwrap();
    let coordinator_dir = tmp.path().join("coordinator");
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let mut serve = Process::spawn(
        "serve",
        tmp.path(),
        &os_args(&[
            &"serve",
            &"--listen",
            &listen,
            &"--data-dir",
            &coordinator_dir,
            &"--dead-after-secs",
            &"3",
        ]),
    );
    wait_until_healthy(&url, &mut serve).await;
    let token = |name: &str| {
        std::fs::read_to_string(coordinator_dir.join(name))
            .unwrap_or_else(|e| panic!("reading the {name} file: {e}"))
            .trim()
            .to_owned()
    };
    let (user_token, worker_token) = (token("token"), token("worker-token"));
    // The secrets at rest are the owner's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["token", "worker-token", "quern.db"] {
            let mode = std::fs::metadata(coordinator_dir.join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name} has mode {:o}", mode & 0o777);
        }
    }
    let _workers: Vec<Process> = (0..2)
        .map(|n| {
            let name = format!("worker-{n}");
            let data_dir = tmp.path().join(&name);
            let args = os_args(&[
                &"worker",
                &"--coordinator",
                &url,
                &"--token",
                &worker_token,
                &"--data-dir",
                &data_dir,
            ]);
            Process::spawn(&name, tmp.path(), &args)
        })
        .collect();

    let out = tmp.path().join("out");
    let mut args = os_args(&[&"submit", &WORDCOUNT]);
    args.extend(texts().into_iter().map(OsString::from));
    args.extend(os_args(&[
        &"--reducers",
        &"3",
        &"--split-size",
        &"256KiB",
        &"--wait",
        &"--download",
        &out,
        &"--coordinator",
        &url,
        &"--token",
        &user_token,
    ]));
    let mut submit = Process::spawn("submit", tmp.path(), &args);
    let status = submit.wait(JOB_TIMEOUT).await;
    assert!(
        status.success(),
        "quern submit failed ({status})\n{}\n{}",
        submit.logs(),
        serve.logs()
    );
    let stdout = std::fs::read_to_string(&submit.stdout).unwrap();
    assert!(stdout.contains("succeeded"), "{stdout}");

    let parts: BTreeMap<String, String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    assert_same_parts(&parts, &expected.parts);
    assert_same_pairs(
        &parse_pairs(&parts),
        expected.pairs.as_ref().expect("word count output is keyed"),
    );
}
