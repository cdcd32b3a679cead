//! Fixtures shared by the integration tests: a fresh, migrated job store on
//! a named backend (a SQLite file in a temporary directory, or a database of
//! its own on the Postgres server named by `TEST_DATABASE_URL`).

use std::future::Future;
use std::sync::Arc;

use server::store::{PostgresStore, SqliteStore, Store};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The variable naming a Postgres server to test against.
pub const DATABASE_URL_VAR: &str = "TEST_DATABASE_URL";

/// The backends to run: always `sqlite`, and `postgres` when
/// `TEST_DATABASE_URL` is set.
pub fn backends() -> Vec<&'static str> {
    let mut backends = vec!["sqlite"];
    if postgres_url().is_some() {
        backends.push("postgres");
    }
    backends
}

fn postgres_url() -> Option<String> {
    std::env::var(DATABASE_URL_VAR)
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// A fresh store and the place its data lives. Dropping it deletes the
/// data: the temporary directory, or (best effort) the Postgres database.
pub struct TestStore {
    /// The store; clone it freely, but drop the `TestStore` last.
    pub store: Arc<dyn Store>,
    // Declared after `store` so that the store is dropped first.
    _place: Place,
}

impl TestStore {
    /// Another handle on the store.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }
}

enum Place {
    Dir { _dir: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
}

impl Drop for Place {
    fn drop(&mut self) {
        let Place::Postgres { admin_url, name } = self else {
            return;
        };
        // Drop runs inside the test's runtime, which must not block on
        // itself, so the clean-up gets a thread and a runtime of its own.
        // A database left behind by a failure here is harmless.
        let admin_url = admin_url.clone();
        let name = name.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A fresh, migrated store on `backend` (`sqlite` or `postgres`).
///
/// Panics when the backend is unknown or, for `postgres`, when
/// `TEST_DATABASE_URL` is not set.
pub async fn fresh_store(backend: &str) -> TestStore {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().expect("create a temporary directory");
            let store = SqliteStore::open(&dir.path().join("quern.db"))
                .await
                .expect("open the SQLite store");
            TestStore {
                store: Arc::new(store),
                _place: Place::Dir { _dir: dir },
            }
        }
        "postgres" => {
            let admin_url = postgres_url()
                .unwrap_or_else(|| panic!("{DATABASE_URL_VAR} must be set to test Postgres"));
            let name = format!("quern_test_{:016x}", rand::random::<u64>());
            let mut conn = PgConnection::connect(&admin_url)
                .await
                .expect("connect to TEST_DATABASE_URL");
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create a test database");
            conn.close().await.expect("close the admin connection");
            // From here on the guard drops the database, even if connecting fails.
            let place = Place::Postgres {
                admin_url: admin_url.clone(),
                name: name.clone(),
            };
            let store = PostgresStore::connect(&with_database(&admin_url, &name))
                .await
                .expect("connect the Postgres store");
            TestStore {
                store: Arc::new(store),
                _place: place,
            }
        }
        other => panic!("unknown store backend `{other}`"),
    }
}

/// Runs `test` against a fresh store on `backend`, or skips it (with a
/// note) when that backend is not configured.
pub async fn run<F, Fut>(backend: &str, test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    if !backends().contains(&backend) {
        eprintln!("skipped: {backend} is not configured (set {DATABASE_URL_VAR})");
        return;
    }
    let fresh = fresh_store(backend).await;
    assert_eq!(fresh.store.backend(), backend);
    test(fresh.store()).await;
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
