//! Tokens, modules and dataset files.

use std::sync::Arc;

use protocol::ModuleKind;
use protocol::api::{DatasetFile, ModuleInfo};
use server::store::{Store, StoreError};

use super::{create_job, module};

pub async fn tokens(store: Arc<dyn Store>) {
    store
        .add_token("hash-a", "admin", "alice", 1)
        .await
        .unwrap();
    store
        .add_token("hash-w", "worker", "fleet", 2)
        .await
        .unwrap();

    let admin = store.token_kind("hash-a").await.unwrap();
    assert_eq!(admin, Some(("admin".into(), "alice".into())));
    let worker = store.token_kind("hash-w").await.unwrap();
    assert_eq!(worker, Some(("worker".into(), "fleet".into())));
    assert_eq!(store.token_kind("hash-unknown").await.unwrap(), None);
}

pub async fn modules(store: Arc<dyn Store>) {
    let a = ModuleInfo {
        sha256: module(),
        name: "wordcount.wasm".into(),
        size: 1_000,
        created_at: 10,
        has_combine: true,
        kind: ModuleKind::Job,
    };
    let b = ModuleInfo {
        sha256: "cd".repeat(32),
        name: "grep.wasm".into(),
        size: 2_000,
        created_at: 20,
        has_combine: false,
        kind: ModuleKind::Command,
    };

    assert!(store.put_module(&a).await.unwrap());
    let again = ModuleInfo {
        name: "renamed.wasm".into(),
        created_at: 15,
        ..a.clone()
    };
    assert!(
        !store.put_module(&again).await.unwrap(),
        "a second put of the same bytes is a no-op"
    );
    assert_eq!(store.get_module(&a.sha256).await.unwrap(), Some(a.clone()));
    assert!(store.put_module(&b).await.unwrap());
    assert_eq!(
        store.list_modules().await.unwrap(),
        vec![b.clone(), a.clone()],
        "newest first"
    );

    store.delete_module(&b.sha256).await.unwrap();
    assert_eq!(store.get_module(&b.sha256).await.unwrap(), None);
    assert_eq!(store.list_modules().await.unwrap(), vec![a.clone()]);

    // A module an unfinished job runs cannot go.
    let job = create_job(&store, 1, 1, 30).await;
    let err = store.delete_module(&a.sha256).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    assert_eq!(store.get_module(&a.sha256).await.unwrap(), Some(a.clone()));

    // Once the job is over, it can.
    store.cancel_job(job, 40).await.unwrap();
    store.delete_module(&a.sha256).await.unwrap();
    assert!(store.list_modules().await.unwrap().is_empty());

    let err = store.delete_module(&a.sha256).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "got {err:?}");
    let err = store.delete_module(&"ef".repeat(32)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "got {err:?}");
}

fn blob(path: &str, size: u64, created_at: i64) -> DatasetFile {
    DatasetFile {
        path: path.into(),
        size,
        created_at,
    }
}

fn paths(files: &[DatasetFile]) -> Vec<&str> {
    files.iter().map(|f| f.path.as_str()).collect()
}

pub async fn blobs(store: Arc<dyn Store>) {
    let all = [
        "books/b.txt",
        "books/a.txt",
        "books%/percent.txt",
        "books_/underscore.txt",
        "booksX/x.txt",
        "other/c.txt",
    ];
    for (i, path) in all.iter().enumerate() {
        store.put_blob(&blob(path, 10, i as i64)).await.unwrap();
    }

    let books = store.list_blobs("books/").await.unwrap();
    assert_eq!(
        books,
        vec![blob("books/a.txt", 10, 1), blob("books/b.txt", 10, 0)],
        "by path"
    );

    // `%` and `_` are not wildcards.
    assert_eq!(
        paths(&store.list_blobs("books%").await.unwrap()),
        ["books%/percent.txt"]
    );
    assert_eq!(
        paths(&store.list_blobs("books_").await.unwrap()),
        ["books_/underscore.txt"]
    );
    assert_eq!(
        paths(&store.list_blobs("books_/u").await.unwrap()),
        ["books_/underscore.txt"]
    );
    assert!(store.list_blobs("%").await.unwrap().is_empty());
    assert!(store.list_blobs("_").await.unwrap().is_empty());
    assert!(store.list_blobs("nothing/").await.unwrap().is_empty());

    let mut sorted = all.to_vec();
    sorted.sort_unstable();
    assert_eq!(paths(&store.list_blobs("").await.unwrap()), sorted);

    // Putting a path again replaces its record.
    store.put_blob(&blob("books/a.txt", 99, 50)).await.unwrap();
    assert_eq!(
        store.list_blobs("books/a").await.unwrap(),
        vec![blob("books/a.txt", 99, 50)]
    );
    assert_eq!(store.list_blobs("").await.unwrap().len(), all.len());

    store.delete_blob("books/a.txt").await.unwrap();
    assert_eq!(
        paths(&store.list_blobs("books/").await.unwrap()),
        ["books/b.txt"]
    );
    let err = store.delete_blob("books/a.txt").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "got {err:?}");
}

/// What the store acknowledges is on disk: Postgres waits for the WAL
/// flush (it ran with `synchronous_commit = off`), SQLite syncs every
/// commit (it ran `synchronous = NORMAL`, which can forget the last
/// commits on a power loss).
pub async fn commits_are_durable(store: Arc<dyn Store>) {
    let expected = match store.backend() {
        "postgres" => "synchronous_commit=on",
        _ => "synchronous=full",
    };
    assert_eq!(store.durability().await.unwrap(), expected);
}
