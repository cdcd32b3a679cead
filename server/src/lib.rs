//! The Quern coordinator: REST API, scheduler, job store and blob store.
//! All job state lives in the database; the process holds only caches, so
//! a restart (even `kill -9`) loses nothing.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod scheduler;
pub mod store;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::blobs::Blobs;
use crate::store::{Liveness, PostgresStore, SqliteStore, Store};

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite:PATH`, `postgres://...`; `None` = SQLite under `data_dir`.
    pub database: Option<String>,
    /// Holds the SQLite file and the local blob store.
    pub data_dir: PathBuf,
    /// A worker silent this long is dead.
    pub dead_after: Duration,
    /// How often workers heartbeat.
    pub heartbeat: Duration,
    /// Largest module upload.
    pub max_module_bytes: u64,
    /// Largest dataset file upload.
    pub max_dataset_bytes: u64,
    /// Longest a lease request waits for work.
    pub lease_wait: Duration,
}

impl Config {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        Config {
            database: None,
            data_dir,
            dead_after: Duration::from_secs(10),
            heartbeat: Duration::from_secs(1),
            max_module_bytes: 64 << 20,
            max_dataset_bytes: 64 << 30,
            lease_wait: Duration::from_secs(20),
        }
    }

    /// The liveness rules derived from the settings.
    pub fn liveness(&self) -> Liveness {
        let dead_after_ms = self.dead_after.as_millis() as i64;
        Liveness {
            lease_ms: dead_after_ms,
            dead_after_ms,
        }
    }
}

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    /// Job state.
    pub store: Arc<dyn Store>,
    /// Modules, datasets, outputs.
    pub blobs: Blobs,
    /// Validates modules on upload.
    pub runtime: Arc<runtime::Runtime>,
    /// Settings.
    pub config: Arc<Config>,
    /// Woken when tasks may have become leasable or jobs changed.
    pub changed: Arc<Notify>,
}

impl AppState {
    /// Opens the database and blob store named by `config`.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let store: Arc<dyn Store> = match config.database.as_deref() {
            Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
                Arc::new(
                    PostgresStore::connect(url)
                        .await
                        .context("connecting to Postgres")?,
                )
            }
            Some(url) if url.starts_with("sqlite:") => {
                Arc::new(SqliteStore::open_url(url).await.context("opening SQLite")?)
            }
            Some(other) => anyhow::bail!(
                "unsupported database URL {other:?} (use sqlite:PATH or postgres://...)"
            ),
            None => Arc::new(
                SqliteStore::open(&config.data_dir.join("quern.db"))
                    .await
                    .context("opening SQLite")?,
            ),
        };
        let blobs = Blobs::local(&config.data_dir.join("blobs"))?;
        let runtime = Arc::new(runtime::Runtime::new(runtime::RuntimeConfig {
            cache_dir: Some(config.data_dir.join("module-cache")),
        })?);
        Ok(AppState {
            store,
            blobs,
            runtime,
            config: Arc::new(config),
            changed: Arc::new(Notify::new()),
        })
    }

    /// Adds a token of `kind` unless it is already known.
    pub async fn add_token(&self, token: &str, kind: &str, name: &str) -> anyhow::Result<()> {
        self.store
            .add_token(&auth::hash_token(token), kind, name, now_ms())
            .await?;
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The HTTP application.
pub fn app(state: AppState) -> Router {
    api::router(state)
}

/// Serves the API on `listener` and runs the scheduler's background loop
/// until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let expiry = tokio::spawn(scheduler::expiry_loop(state.clone()));
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    expiry.abort();
    result.context("serving the API")
}
