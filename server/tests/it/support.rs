//! Fixtures shared by the integration tests: a fresh, migrated job store on
//! a named backend (a SQLite file in a temporary directory, or a database of
//! its own on the Postgres server named by `TEST_DATABASE_URL`).

use std::future::Future;
use std::sync::Arc;

use server::store::{PostgresStore, SqliteStore, Store};
use testkit::{DATABASE_URL_VAR, PgDatabase, postgres_url};

/// The backends to run: always `sqlite`, and `postgres` when
/// `TEST_DATABASE_URL` is set.
pub fn backends() -> Vec<&'static str> {
    let mut backends = vec!["sqlite"];
    if postgres_url().is_some() {
        backends.push("postgres");
    }
    backends
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
    Postgres { _database: PgDatabase },
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
            // The guard drops the database, even if connecting fails.
            let database = PgDatabase::create().await;
            let store = PostgresStore::connect(&database.url)
                .await
                .expect("connect the Postgres store");
            TestStore {
                store: Arc::new(store),
                _place: Place::Postgres {
                    _database: database,
                },
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
