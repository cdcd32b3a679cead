//! Coordinators and workers as child processes of the test: started,
//! SIGKILLed, restarted, frozen and thawed, with their logs kept for
//! failure messages.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use protocol::api::{JobInfo, WorkerInfo};
use protocol::{JobId, WorkerId};

use super::Api;
use crate::cluster::{Process, free_port, os_args, wait_until_healthy};
use testkit::PgDatabase;

/// How to start a test cluster.
pub struct Options {
    /// `quern serve` processes; more than one shares a Postgres database.
    pub coordinators: usize,
    /// `quern worker` processes pointed at the first coordinator.
    pub workers: usize,
    /// Task slots per worker.
    pub slots: u32,
    /// `quern serve --dead-after-secs`: also the lease length.
    pub dead_after_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            coordinators: 1,
            workers: 2,
            slots: 1,
            dead_after_secs: 2,
        }
    }
}

/// A worker to add beyond the standard ones.
#[derive(Default)]
pub struct NewWorker {
    /// Its coordinator URL (default: the first coordinator).
    pub coordinator: Option<String>,
    /// Its map-output port (default: a fresh one).
    pub listen: Option<u16>,
    /// `--advertise` (default: its own address).
    pub advertise: Option<String>,
    /// `--simulate-slow-ms`: a straggler (default: none).
    pub slow_ms: Option<u64>,
}

struct CoordinatorProcess {
    listen: String,
    process: Option<Process>,
}

struct WorkerProcess {
    name: String,
    data_dir: PathBuf,
    coordinator: String,
    slots: u32,
    fixed_listen: Option<u16>,
    advertise: Option<String>,
    slow_ms: Option<u64>,
    /// Where reducers reach it, as registered.
    address: String,
    process: Option<Process>,
}

/// Coordinators and workers as real processes on a fresh database and data
/// directories. Dropping it kills every process (SIGKILL).
pub struct Chaos {
    pub api: Api,
    worker_token: String,
    user_token: String,
    dir: tempfile::TempDir,
    database: Option<String>,
    dead_after_secs: u64,
    coordinators: Vec<CoordinatorProcess>,
    workers: Vec<WorkerProcess>,
    /// Killed processes, kept for their logs.
    retired: Vec<Process>,
    spawned: usize,
    ports: BTreeSet<u16>,
    _pg: Option<PgDatabase>,
}

impl Chaos {
    pub async fn start(backend: &str, options: Options) -> Self {
        let pg = match backend {
            "sqlite" => None,
            "postgres" => Some(PgDatabase::create().await),
            other => panic!("unknown backend `{other}`"),
        };
        assert!(
            options.coordinators == 1 || pg.is_some(),
            "coordinators share a database only on Postgres"
        );
        let user_token = server::auth::new_token();
        let mut chaos = Chaos {
            api: Api::new("http://unset", &user_token),
            worker_token: server::auth::new_token(),
            user_token,
            dir: tempfile::tempdir().unwrap(),
            database: pg.as_ref().map(|db| db.url.clone()),
            dead_after_secs: options.dead_after_secs,
            coordinators: Vec::new(),
            workers: Vec::new(),
            retired: Vec::new(),
            spawned: 0,
            ports: BTreeSet::new(),
            _pg: pg,
        };
        for _ in 0..options.coordinators {
            let listen = format!("127.0.0.1:{}", chaos.fresh_port());
            chaos.coordinators.push(CoordinatorProcess {
                listen,
                process: None,
            });
            chaos
                .restart_coordinator(chaos.coordinators.len() - 1)
                .await;
        }
        chaos.api = Api::new(&chaos.coordinator_url(0), &chaos.user_token);
        for _ in 0..options.workers {
            chaos.add_worker(options.slots, NewWorker::default());
        }
        chaos.wait_for_workers().await;
        chaos
    }

    /// A port nothing in this cluster has used, so an address always
    /// names one process.
    pub fn fresh_port(&mut self) -> u16 {
        loop {
            let port = free_port();
            if self.ports.insert(port) {
                return port;
            }
        }
    }

    fn next_name(&mut self, role: &str) -> String {
        self.spawned += 1;
        format!("{:02}-{role}", self.spawned)
    }

    /// The coordinator's data directory (its blobs are under `blobs/`).
    pub fn coordinator_dir(&self) -> PathBuf {
        self.dir.path().join("coordinator")
    }

    pub fn coordinator_url(&self, index: usize) -> String {
        format!("http://{}", self.coordinators[index].listen)
    }

    /// `host:port` of coordinator `index`.
    pub fn coordinator_addr(&self, index: usize) -> String {
        self.coordinators[index].listen.clone()
    }

    pub fn user_token(&self) -> String {
        self.user_token.clone()
    }

    /// Starts coordinator `index` (again) on its address, data directory
    /// and database, and waits until it answers.
    pub async fn restart_coordinator(&mut self, index: usize) {
        assert!(self.coordinators[index].process.is_none());
        let name = self.next_name(&format!("serve{index}"));
        let listen = self.coordinators[index].listen.clone();
        let data_dir = self.coordinator_dir();
        let dead_after = self.dead_after_secs.to_string();
        let mut args = os_args(&[
            &"serve",
            &"--listen",
            &listen,
            &"--data-dir",
            &data_dir,
            &"--dead-after-secs",
            &dead_after,
            &"--user-token",
            &self.user_token,
            &"--worker-token",
            &self.worker_token,
        ]);
        if let Some(url) = &self.database {
            args.extend(os_args(&[&"--database", url]));
        }
        let mut process = Process::spawn(&name, self.dir.path(), &args);
        wait_until_healthy(&format!("http://{listen}"), &mut process).await;
        self.coordinators[index].process = Some(process);
    }

    /// SIGKILLs coordinator `index`.
    pub fn kill_coordinator(&mut self, index: usize) {
        let process = self.coordinators[index]
            .process
            .take()
            .expect("the coordinator runs");
        self.retire(process);
    }

    fn retire(&mut self, mut process: Process) {
        // Dropping a `Process` kills it; keep the handle for its logs.
        let _ = send_signal(process.pid(), libc::SIGKILL);
        let _ = process.exited();
        self.retired.push(process);
    }

    /// Adds and starts a worker; returns its index.
    pub fn add_worker(&mut self, slots: u32, new: NewWorker) -> usize {
        let index = self.workers.len();
        let coordinator = new.coordinator.unwrap_or_else(|| self.coordinator_url(0));
        self.workers.push(WorkerProcess {
            name: format!("worker{index}"),
            data_dir: self.dir.path().join(format!("worker{index}")),
            coordinator,
            slots,
            fixed_listen: new.listen,
            advertise: new.advertise,
            slow_ms: new.slow_ms,
            address: String::new(),
            process: None,
        });
        self.spawn_worker(index);
        index
    }

    fn spawn_worker(&mut self, index: usize) {
        assert!(self.workers[index].process.is_none());
        let port = match self.workers[index].fixed_listen {
            Some(port) => port,
            None => self.fresh_port(),
        };
        let name = self.next_name(&self.workers[index].name.clone());
        let worker = &mut self.workers[index];
        let listen = format!("127.0.0.1:{port}");
        worker.address = worker
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        let slots = worker.slots.to_string();
        let mut args = os_args(&[
            &"worker",
            &"--coordinator",
            &worker.coordinator,
            &"--token",
            &self.worker_token,
            &"--data-dir",
            &worker.data_dir,
            &"--slots",
            &slots,
            &"--listen",
            &listen,
        ]);
        if let Some(advertise) = &worker.advertise {
            args.push(OsString::from("--advertise"));
            args.push(OsString::from(advertise));
        }
        if let Some(ms) = worker.slow_ms {
            args.push(OsString::from("--simulate-slow-ms"));
            args.push(OsString::from(ms.to_string()));
        }
        worker.process = Some(Process::spawn(&name, self.dir.path(), &args));
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// SIGKILLs worker `index`; its data directory stays for a respawn.
    pub fn kill_worker(&mut self, index: usize) {
        let process = self.workers[index].process.take().expect("the worker runs");
        self.retire(process);
    }

    /// Starts worker `index` again on its data directory (a new process,
    /// so a new worker id and, unless fixed, a new address).
    pub fn respawn_worker(&mut self, index: usize) {
        self.spawn_worker(index);
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to worker `index`.
    pub fn signal_worker(&self, index: usize, signal: libc::c_int) {
        let process = self.workers[index]
            .process
            .as_ref()
            .expect("the worker runs");
        send_signal(process.pid(), signal)
            .unwrap_or_else(|e| panic!("signal {signal} to worker {index}: {e}"));
    }

    /// The index of the running worker process registered as `id`.
    pub fn worker_index(&self, id: &WorkerId, registered: &[WorkerInfo]) -> Option<usize> {
        let address = &registered.iter().find(|w| &w.id == id)?.address;
        self.workers
            .iter()
            .position(|w| w.process.is_some() && &w.address == address)
    }

    /// The ids under which worker `index` registered (more than one when it
    /// registered again after being declared dead).
    pub fn worker_ids(&self, index: usize, registered: &[WorkerInfo]) -> Vec<WorkerId> {
        registered
            .iter()
            .filter(|w| w.address == self.workers[index].address)
            .map(|w| w.id.clone())
            .collect()
    }

    /// Waits until every running worker process is registered and alive.
    pub async fn wait_for_workers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.assert_running();
            let registered: Vec<WorkerInfo> = self.api.get("/workers").await;
            let missing: Vec<&str> = self
                .workers
                .iter()
                .filter(|w| w.process.is_some())
                .filter(|w| {
                    !registered
                        .iter()
                        .any(|r| r.address == w.address && r.state == "alive")
                })
                .map(|w| w.name.as_str())
                .collect();
            if missing.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "workers {missing:?} did not register within 60 s\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Panics, with the logs, if a process the test did not kill exited.
    pub fn assert_running(&mut self) {
        // Reap the killed ones too, so they do not linger as zombies.
        for p in &mut self.retired {
            let _ = p.exited();
        }
        let mut exited = Vec::new();
        for c in &mut self.coordinators {
            if let Some(p) = &mut c.process
                && let Some(status) = p.exited()
            {
                exited.push(format!("coordinator {} ({status})", c.listen));
            }
        }
        for w in &mut self.workers {
            if let Some(p) = &mut w.process
                && let Some(status) = p.exited()
            {
                exited.push(format!("{} ({status})", w.name));
            }
        }
        if !exited.is_empty() {
            panic!("{} exited on their own\n{}", exited.join(", "), self.logs());
        }
    }

    /// Whether any process, killed or running, logged `needle`.
    pub fn logs_contain(&self, needle: &str) -> bool {
        self.retired
            .iter()
            .chain(self.coordinators.iter().filter_map(|c| c.process.as_ref()))
            .chain(self.workers.iter().filter_map(|w| w.process.as_ref()))
            .any(|p| p.logs().contains(needle))
    }

    /// The tail of every process's logs, for a failure message.
    pub fn logs(&self) -> String {
        let tail = |text: String| {
            const KEEP: usize = 3000;
            if text.len() <= KEEP {
                text
            } else {
                let mut cut = text.len() - KEEP;
                while !text.is_char_boundary(cut) {
                    cut += 1;
                }
                format!("...{}", &text[cut..])
            }
        };
        let mut all: Vec<&Process> = self.retired.iter().collect();
        all.extend(self.coordinators.iter().filter_map(|c| c.process.as_ref()));
        all.extend(self.workers.iter().filter_map(|w| w.process.as_ref()));
        all.iter()
            .map(|p| tail(p.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls the job until it finishes; panics with its tasks, attempts,
    /// workers and the processes' logs after `timeout`, or when a process
    /// the test did not kill exits.
    pub async fn wait(
        &mut self,
        job: JobId,
        timeout: Duration,
        seed: &dyn fmt::Display,
    ) -> JobInfo {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            if let Ok(info) = self.api.try_get::<JobInfo>(&format!("/jobs/{job}")).await
                && info.state.is_finished()
            {
                return info;
            }
            if Instant::now() > deadline {
                self.fail(
                    job,
                    &format!("job {job} did not finish within {timeout:?} ({seed})"),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Panics with `message` and everything known about the job.
    pub async fn fail(&self, job: JobId, message: &str) -> ! {
        let mut report = String::new();
        for path in [
            format!("/jobs/{job}"),
            format!("/jobs/{job}/tasks"),
            format!("/jobs/{job}/attempts"),
            "/workers".to_owned(),
        ] {
            let text = match self.api.try_get::<serde_json::Value>(&path).await {
                Ok(value) => serde_json::to_string_pretty(&value).unwrap(),
                Err(err) => err,
            };
            report.push_str(&format!("--- GET {path} ---\n{text}\n"));
        }
        panic!("{message}\n{report}{}", self.logs());
    }
}

/// `kill(2)`.
fn send_signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is a
    // child this test started and has not reaped.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
