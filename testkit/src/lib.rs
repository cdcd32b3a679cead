//! Fixtures shared by the test suites of `server` and `quern`: the
//! Postgres server to test against (`TEST_DATABASE_URL`), and a database of
//! its own per test, dropped with its guard.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The variable naming a Postgres server to test against.
pub const DATABASE_URL_VAR: &str = "TEST_DATABASE_URL";

/// The Postgres server to test against, when `TEST_DATABASE_URL` is set.
pub fn postgres_url() -> Option<String> {
    std::env::var(DATABASE_URL_VAR)
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// A database of its own on the `TEST_DATABASE_URL` server, dropped (best
/// effort, with FORCE) with the guard.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// The URL of the fresh database.
    pub url: String,
}

impl PgDatabase {
    /// Creates the database. Panics when `TEST_DATABASE_URL` is not set or
    /// the server refuses.
    pub async fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let admin_url = postgres_url()
            .unwrap_or_else(|| panic!("{DATABASE_URL_VAR} must be set to test Postgres"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "quern_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .expect("connect to TEST_DATABASE_URL");
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        conn.close().await.expect("close the admin connection");
        let url = with_database(&admin_url, &name);
        PgDatabase {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which must not block on
        // itself, so the clean-up gets a thread and a runtime of its own.
        // A database left behind by a failure here is harmless.
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// `url` with its path (the database name) replaced by `database`; the
/// query string, if any, is kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{database}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "fresh"),
            "postgres://postgres@127.0.0.1:5432/fresh"
        );
        assert_eq!(
            with_database("postgres://u:p@db/test?sslmode=disable", "fresh"),
            "postgres://u:p@db/fresh?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://localhost", "fresh"),
            "postgres://localhost/fresh"
        );
    }
}
