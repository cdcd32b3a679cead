//! `quern serve`, `quern worker` and `quern up`: the coordinator, a worker,
//! and both in one process for a local cluster on SQLite.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use server::{AppState, Config};
use tokio::net::TcpListener;

use crate::client::{DEFAULT_DATA_DIR, TOKEN_FILE};

/// The worker token file beside the user token.
const WORKER_TOKEN_FILE: &str = "worker-token";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "QUERN_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Data directory: SQLite database (by default), blobs, tokens.
    #[arg(long, env = "QUERN_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Database URL: `postgres://...` or `sqlite:PATH` (default: SQLite in the data dir).
    #[arg(long, env = "QUERN_DATABASE")]
    database: Option<String>,
    /// A user token to accept (created and written to DATA_DIR/token if none exists).
    #[arg(long, env = "QUERN_USER_TOKEN", hide_env_values = true)]
    user_token: Option<String>,
    /// The worker token to accept (created and written to DATA_DIR/worker-token if none exists).
    #[arg(long, env = "QUERN_WORKER_TOKEN", hide_env_values = true)]
    worker_token: Option<String>,
    /// Seconds of silence after which a worker is dead.
    #[arg(long, default_value_t = 10)]
    dead_after_secs: u64,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Coordinator URL.
    #[arg(
        long,
        env = "QUERN_COORDINATOR",
        default_value = "http://127.0.0.1:7878"
    )]
    coordinator: String,
    /// The worker token (default: DATA_DIR/worker-token of a local coordinator).
    #[arg(long, env = "QUERN_WORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 2)]
    slots: u32,
    /// Address of this worker's map-output server.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// URL reducers use to reach this worker (default: http://LISTEN).
    #[arg(long)]
    advertise: Option<String>,
    /// Map outputs and the module cache.
    #[arg(long, default_value = "quern-worker-data")]
    data_dir: PathBuf,
    /// Milliseconds a finished task waits before it reports (simulates a
    /// straggler; the wait ends early if the coordinator drops the attempt).
    #[arg(long, default_value_t = 0, hide = true)]
    simulate_slow_ms: u64,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Number of workers.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Task slots per worker.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Address of the API.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Data directory.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

/// Reads `dir/name`, or creates it with a new token.
fn token_file(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let token = server::auth::new_token();
    std::fs::create_dir_all(dir)?;
    // Owner-only from creation, not after: no moment where another user
    // could read it.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

async fn start_coordinator(
    listen: SocketAddr,
    config: Config,
    user_token: Option<String>,
    worker_token: Option<String>,
) -> anyhow::Result<(AppState, TcpListener, String)> {
    let data_dir = config.data_dir.clone();
    let state = AppState::open(config).await?;
    let user = match user_token {
        Some(t) => t,
        None => token_file(&data_dir, TOKEN_FILE)?,
    };
    let worker = match worker_token {
        Some(t) => t,
        None => token_file(&data_dir, WORKER_TOKEN_FILE)?,
    };
    state
        .add_token(&user, server::auth::USER, "local user")
        .await?;
    state
        .add_token(&worker, server::auth::WORKER, "workers")
        .await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    Ok((state, listener, worker))
}

async fn ctrl_c_or_term() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::new(args.data_dir);
    config.database = args.database;
    config.dead_after = Duration::from_secs(args.dead_after_secs.max(1));
    let (state, listener, _) =
        start_coordinator(args.listen, config, args.user_token, args.worker_token).await?;
    eprintln!(
        "quern coordinator on http://{} ({} store, {})",
        listener.local_addr()?,
        state.store.backend(),
        state.store.durability().await?
    );
    server::serve(listener, state, ctrl_c_or_term()).await
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let token = match args.token {
        Some(token) => token,
        None => std::fs::read_to_string(Path::new(DEFAULT_DATA_DIR).join(WORKER_TOKEN_FILE))
            .map(|t| t.trim().to_owned())
            .context("no worker token: pass --token or QUERN_WORKER_TOKEN")?,
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let mut config = worker::agent::AgentConfig::new(args.coordinator, token, args.data_dir);
    config.slots = args.slots.max(1);
    config.advertise = args.advertise;
    config.task_delay = Duration::from_millis(args.simulate_slow_ms);
    eprintln!(
        "quern worker with {} slots, serving map outputs on http://{}",
        config.slots,
        listener.local_addr()?
    );
    worker::agent::run(listener, config, ctrl_c_or_term()).await
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let config = Config::new(args.data_dir.clone());
    let (state, listener, worker_token) =
        start_coordinator(args.listen, config, None, None).await?;
    let api = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let coordinator = tokio::spawn(server::serve(listener, state, stopped(stop_rx.clone())));
    let mut workers = Vec::new();
    for n in 0..args.workers {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut config = worker::agent::AgentConfig::new(
            api.clone(),
            worker_token.clone(),
            args.data_dir.join("workers").join(n.to_string()),
        );
        config.slots = args.slots.max(1);
        workers.push(tokio::spawn(worker::agent::run(
            listener,
            config,
            stopped(stop_rx.clone()),
        )));
    }
    eprintln!(
        "quern is up: API {api}/api/v1, {} workers x {} slots, SQLite in {}",
        args.workers,
        args.slots,
        args.data_dir.display()
    );
    eprintln!(
        "dashboard: {api}/#token={} (this link logs you in)",
        token_file(&args.data_dir, TOKEN_FILE)?
    );
    eprintln!(
        "token in {}; try: quern submit MODULE.wasm FILES... --wait",
        args.data_dir.join(TOKEN_FILE).display()
    );
    ctrl_c_or_term().await;
    eprintln!("stopping");
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    coordinator.await??;
    Ok(())
}
