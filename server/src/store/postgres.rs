//! The Postgres store: several coordinators may share it. Leasing skips
//! rows another transaction holds, and every change to a job's tasks first
//! locks the job's row, so concurrent completions of one job serialize.

use sqlx::postgres::{PgPool, PgPoolOptions};

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
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

super::sql::store_impl!(
    PostgresStore,
    sqlx::Postgres,
    "FOR UPDATE",
    "FOR UPDATE OF t SKIP LOCKED"
);
