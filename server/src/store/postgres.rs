//! The Postgres store: several coordinators may share it. Leasing skips
//! rows another transaction holds, and every change to a job's tasks first
//! locks the job's row, so concurrent completions of one job serialize. The
//! lock is `FOR NO KEY UPDATE`, which does not conflict with the key-share
//! locks that inserting an attempt (a foreign key to the job) takes, so a
//! lease and a completion of the same job never deadlock.
//!
//! Commits do not wait for the WAL flush (`synchronous_commit = off`): a
//! Postgres crash may forget the last few milliseconds of transitions, which
//! only makes those tasks run again; the coordinator's own crashes lose
//! nothing.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::StoreResult;

/// Coordinator state in Postgres.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    const BACKEND: &'static str = "postgres";

    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.options([("synchronous_commit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

super::sql::store_impl!(
    PostgresStore,
    sqlx::Postgres,
    "FOR NO KEY UPDATE",
    "FOR UPDATE OF t SKIP LOCKED"
);
