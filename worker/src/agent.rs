//! The distributed worker: registers with the coordinator, long-polls for
//! leases, runs up to `slots` tasks at once, heartbeats, serves its map
//! outputs to reducers, fetches reduce input, stages reduce outputs, cleans
//! up when jobs end, and on shutdown finishes what it runs.

mod client;
mod fetch;
mod shuffle;
mod tasks;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use protocol::{AttemptId, JobId, WorkerId};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::runtime::{Runtime, RuntimeConfig};

pub use client::Coordinator;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Base URL of the coordinator, e.g. `http://127.0.0.1:7878`.
    pub coordinator: String,
    /// The worker token.
    pub token: String,
    /// Tasks run at once.
    pub slots: u32,
    /// Map outputs, fetched reduce input and the module cache live here.
    pub data_dir: PathBuf,
    /// The map-output server's URL as reducers reach it; default
    /// `http://` + the listener's address.
    pub advertise: Option<String>,
    /// Map-output fetches a reduce task runs at once.
    pub fetch_concurrency: usize,
    /// Map-output requests served at once before answering 429.
    pub serve_concurrency: usize,
    /// Bytes of pairs a map task sorts in memory before spilling.
    pub sort_buffer: usize,
    /// Extra time every task takes on this worker before it reports:
    /// simulates a slow machine in benchmarks and tests. Zero normally.
    pub task_delay: Duration,
}

impl AgentConfig {
    /// Defaults for a coordinator and token.
    pub fn new(
        coordinator: impl Into<String>,
        token: impl Into<String>,
        data_dir: PathBuf,
    ) -> Self {
        AgentConfig {
            coordinator: coordinator.into(),
            token: token.into(),
            slots: 2,
            data_dir,
            advertise: None,
            fetch_concurrency: 4,
            serve_concurrency: 16,
            sort_buffer: crate::map::DEFAULT_SORT_BUFFER,
            task_delay: Duration::ZERO,
        }
    }
}

/// State shared by the worker's tasks.
pub(crate) struct Agent {
    pub(crate) config: AgentConfig,
    pub(crate) coordinator: Coordinator,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) worker_id: Mutex<WorkerId>,
    /// Attempts running here, each with the flag that stops it when the
    /// coordinator takes its lease back.
    pub(crate) running: Mutex<HashMap<AttemptId, crate::runtime::Cancel>>,
    /// Shuffle secrets of the jobs whose map outputs this worker holds.
    pub(crate) jobs: Mutex<HashMap<JobId, Vec<String>>>,
    pub(crate) advertise: String,
}

impl Agent {
    pub(crate) fn worker_id(&self) -> WorkerId {
        self.worker_id.lock().unwrap().clone()
    }

    pub(crate) fn job_dir(&self, job: JobId) -> PathBuf {
        self.config.data_dir.join("jobs").join(job.to_string())
    }

    async fn register(&self) -> anyhow::Result<Duration> {
        let response = self
            .coordinator
            .register(&self.advertise, self.config.slots)
            .await?;
        tracing::info!(worker_id = %response.worker_id, "registered");
        *self.worker_id.lock().unwrap() = response.worker_id;
        Ok(Duration::from_millis(response.heartbeat_ms.max(100)))
    }
}

/// Runs a worker until `shutdown` resolves, then stops leasing, lets the
/// running tasks finish and report, and returns. `listener` serves map
/// outputs.
pub async fn run(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Map outputs from an earlier run belong to a worker id the coordinator
    // has given up on; start clean.
    let jobs_dir = config.data_dir.join("jobs");
    let _ = std::fs::remove_dir_all(&jobs_dir);
    std::fs::create_dir_all(&jobs_dir)
        .with_context(|| format!("creating {}", jobs_dir.display()))?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: Some(config.data_dir.join("module-cache")),
    })?);
    let advertise = match &config.advertise {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", listener.local_addr()?),
    };
    let agent = Arc::new(Agent {
        coordinator: Coordinator::new(&config.coordinator, &config.token)?,
        config,
        runtime,
        worker_id: Mutex::new(WorkerId(String::new())),
        running: Mutex::default(),
        jobs: Mutex::default(),
        advertise,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = {
        let router = shuffle::router(agent.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        })
    };

    let heartbeat_every = loop {
        match agent.register().await {
            Ok(every) => break every,
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "cannot register with the coordinator; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown_signal(stop_rx.clone()) => {}
                }
                if *stop_rx.borrow() {
                    return Ok(());
                }
            }
        }
    };

    let heartbeats = tokio::spawn(tasks::heartbeat_loop(
        agent.clone(),
        heartbeat_every,
        stop_rx.clone(),
    ));
    let mut slots = Vec::new();
    for slot in 0..agent.config.slots {
        slots.push(tokio::spawn(tasks::slot_loop(
            agent.clone(),
            slot,
            stop_rx.clone(),
        )));
    }

    shutdown.await;
    tracing::info!("shutting down: finishing running tasks");
    let _ = stop_tx.send(true);
    for slot in slots {
        let _ = slot.await;
    }
    heartbeats.abort();
    let _ = server.await;
    Ok(())
}

async fn shutdown_signal(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
