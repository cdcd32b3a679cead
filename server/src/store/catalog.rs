//! API tokens, modules and dataset files: records with no state machine.

use async_trait::async_trait;
use protocol::JobId;
use protocol::api::{DatasetFile, ModuleInfo};

use super::StoreResult;

/// Tokens, modules and dataset files.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// How commits reach the disk, as the database reports it on a
    /// connection of the pool: `synchronous_commit=on` (Postgres) or
    /// `synchronous=full` (SQLite) when every acknowledged change survives
    /// a power loss.
    async fn durability(&self) -> StoreResult<String>;

    /// Adds an API token (stored hashed).
    async fn add_token(
        &self,
        token_hash: &str,
        kind: &str,
        name: &str,
        now: i64,
    ) -> StoreResult<()>;

    /// The kind and name of the token with this hash (a worker's own
    /// token is kind `node`, named by the worker's id).
    async fn token_kind(&self, token_hash: &str) -> StoreResult<Option<(String, String)>>;

    /// Records a module; false when it was already there.
    async fn put_module(&self, module: &ModuleInfo) -> StoreResult<bool>;

    /// One module.
    async fn get_module(&self, sha256: &str) -> StoreResult<Option<ModuleInfo>>;

    /// Every module.
    async fn list_modules(&self) -> StoreResult<Vec<ModuleInfo>>;

    /// Deletes a module no unfinished job uses.
    async fn delete_module(&self, sha256: &str) -> StoreResult<()>;

    /// Records (or replaces) a dataset file.
    async fn put_blob(&self, file: &DatasetFile) -> StoreResult<()>;

    /// Dataset files whose path starts with `prefix`, by path.
    async fn list_blobs(&self, prefix: &str) -> StoreResult<Vec<DatasetFile>>;

    /// Deletes a dataset file's record.
    async fn delete_blob(&self, path: &str) -> StoreResult<()>;

    /// The unfinished jobs that read dataset file `path`.
    async fn blob_readers(&self, path: &str) -> StoreResult<Vec<JobId>>;
}

/// Implements [`Catalog`] for `$store` (see `store_impl!`).
macro_rules! catalog_impl {
    ($store:ident) => {
        #[async_trait::async_trait]
        impl $crate::store::Catalog for $store {
            fn backend(&self) -> &'static str {
                Self::BACKEND
            }

            async fn durability(&self) -> StoreResult<String> {
                self.durability_setting().await
            }

            async fn add_token(&self, token_hash: &str, kind: &str, name: &str, now: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO tokens (token_hash, kind, name, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (token_hash) DO NOTHING",
                )
                .bind(token_hash)
                .bind(kind)
                .bind(name)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn token_kind(&self, token_hash: &str) -> StoreResult<Option<(String, String)>> {
                Ok(sqlx::query_as::<_, (String, String)>("SELECT kind, name FROM tokens WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn put_module(&self, m: &ModuleInfo) -> StoreResult<bool> {
                let rows = sqlx::query(
                    "INSERT INTO modules (sha256, name, size, has_combine, created_at, kind) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(&m.sha256)
                .bind(&m.name)
                .bind(m.size as i64)
                .bind(m.has_combine)
                .bind(m.created_at)
                .bind(m.kind.as_str())
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(rows > 0)
            }

            async fn get_module(&self, sha256: &str) -> StoreResult<Option<ModuleInfo>> {
                Ok(sqlx::query_as::<_, ModuleRow>(
                    "SELECT sha256, name, size, has_combine, created_at, kind FROM modules WHERE sha256 = $1",
                )
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?
                .map(Into::into))
            }

            async fn list_modules(&self) -> StoreResult<Vec<ModuleInfo>> {
                Ok(sqlx::query_as::<_, ModuleRow>(
                    "SELECT sha256, name, size, has_combine, created_at, kind FROM modules ORDER BY created_at DESC, sha256",
                )
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
            }

            async fn delete_module(&self, sha256: &str) -> StoreResult<()> {
                let mut tx = self.begin().await?;
                let busy: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM jobs WHERE module = $1 AND state IN ('mapping', 'reducing')",
                )
                .bind(sha256)
                .fetch_one(&mut *tx)
                .await?;
                if busy > 0 {
                    return Err(StoreError::Conflict(format!("module is used by {busy} unfinished job(s)")));
                }
                let rows = sqlx::query("DELETE FROM modules WHERE sha256 = $1")
                    .bind(sha256)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if rows == 0 {
                    return Err(StoreError::NotFound);
                }
                tx.commit().await?;
                Ok(())
            }

            async fn put_blob(&self, f: &DatasetFile) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO blobs (path, size, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (path) DO UPDATE SET size = excluded.size, created_at = excluded.created_at",
                )
                .bind(&f.path)
                .bind(f.size as i64)
                .bind(f.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_blobs(&self, prefix: &str) -> StoreResult<Vec<DatasetFile>> {
                // A range instead of LIKE, so `%` and `_` in paths mean themselves.
                let mut end = prefix.to_owned();
                end.push(char::MAX);
                Ok(sqlx::query_as::<_, BlobRow>(
                    "SELECT path, size, created_at FROM blobs WHERE path >= $1 AND path < $2 ORDER BY path",
                )
                .bind(prefix)
                .bind(end)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
            }

            async fn delete_blob(&self, path: &str) -> StoreResult<()> {
                let rows = sqlx::query("DELETE FROM blobs WHERE path = $1")
                    .bind(path)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if rows == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn blob_readers(&self, path: &str) -> StoreResult<Vec<JobId>> {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT j.id FROM job_inputs i JOIN jobs j ON j.id = i.job_id \
                     WHERE i.path = $1 AND j.state IN ('mapping', 'reducing') ORDER BY j.id",
                )
                .bind(path)
                .fetch_all(&self.pool)
                .await?;
                Ok(ids.into_iter().map(JobId).collect())
            }
        }
    };
}

pub(super) use catalog_impl;
