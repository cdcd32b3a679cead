//! The Postgres store: several coordinators may share it. Leasing skips
//! rows another transaction holds, and every change to a job's tasks first
//! locks the job's row, so concurrent completions of one job serialize. The
//! lock is `FOR NO KEY UPDATE`, which does not conflict with the key-share
//! locks that inserting an attempt (a foreign key to the job) takes, so a
//! lease and a completion of the same job never deadlock.
//!
//! Commits wait for the WAL flush (the server's `synchronous_commit`, on by
//! default): what the coordinator acknowledged, a submitted job or an
//! accepted completion (and with it a committed output a user may have
//! downloaded), survives a crash of Postgres or of its machine.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::StoreResult;

/// Coordinator state in Postgres.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Immutable job data, read once per job.
    jobs: super::scheduling::JobCache,
}

impl PostgresStore {
    const BACKEND: &'static str = "postgres";

    /// Transactions run concurrently (read committed): what one reads may
    /// change before it commits.
    const SERIAL: bool = false;

    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(PostgresStore {
            pool,
            jobs: Default::default(),
        })
    }
}

impl PostgresStore {
    /// Starts a transaction.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    pub(super) async fn durability_setting(&self) -> StoreResult<String> {
        let value: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&self.pool)
            .await?;
        Ok(format!("synchronous_commit={value}"))
    }
}

super::sql::store_impl!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::Transaction<'static, sqlx::Postgres>,
    "FOR NO KEY UPDATE",
    "FOR NO KEY UPDATE OF t",
    "FOR UPDATE OF t SKIP LOCKED"
);
