//! The SQLite store: one file under the data directory, in WAL mode. Every
//! transaction runs on one writer connection (SQLite has one writer
//! anyway), which makes every scheduling step atomic; changes share
//! commits through `GroupCommit`. Reads that need no transaction use a
//! small pool of reader connections.
//!
//! `synchronous = FULL`: every commit syncs the WAL before it returns, so a
//! power loss costs nothing the coordinator acknowledged (with `NORMAL` it
//! could forget the last commits before a checkpoint: a completion a
//! worker was told was accepted, or a submitted job).

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::StoreResult;
use super::group::{GroupCommit, GroupTx};

/// Coordinator state in SQLite.
#[derive(Clone)]
pub struct SqliteStore {
    /// Reader connections, and single-statement writes.
    pool: SqlitePool,
    /// The writer connection: every transaction.
    writer: std::sync::Arc<GroupCommit>,
    /// Immutable job data, read once per job.
    jobs: super::scheduling::JobCache,
}

impl SqliteStore {
    const BACKEND: &'static str = "sqlite";

    /// One writer: a transaction sees every change before it, and nothing
    /// changes between its reads and its commit.
    const SERIAL: bool = true;

    /// Opens (creating if needed) the database file and migrates it. A new
    /// file is created readable by its owner only (0600): it holds job
    /// shuffle tokens; SQLite gives its WAL and shared-memory files the
    /// same mode.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
            match file.open(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(sqlx::Error::Io(e).into()),
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(30));
        Self::connect(options).await
    }

    /// Opens a `sqlite:` URL.
    pub async fn open_url(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> StoreResult<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        let writer = GroupCommit::connect(&options).await?;
        Ok(SqliteStore {
            pool,
            writer,
            jobs: Default::default(),
        })
    }

    /// Starts a transaction: a change on the writer connection.
    async fn begin(&self) -> Result<GroupTx, sqlx::Error> {
        self.writer.begin().await
    }

    /// Transactions committed so far (changes share commits).
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }
}

super::sql::store_impl!(SqliteStore, sqlx::Sqlite, GroupTx, "", "", "");

impl SqliteStore {
    pub(super) async fn durability_setting(&self) -> StoreResult<String> {
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.pool)
            .await?;
        let name = match level {
            0 => "off",
            1 => "normal",
            2 => "full",
            3 => "extra",
            _ => "unknown",
        };
        Ok(format!("synchronous={name}"))
    }
}
