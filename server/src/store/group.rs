//! Group commit for SQLite. With `synchronous = FULL` every commit waits
//! for the disk, so a transaction per lease or completion made the disk's
//! sync latency the coordinator's limit. Here every change runs on one
//! writer connection inside a savepoint of a shared transaction: a change
//! that fails rolls back to its savepoint alone, and the transaction
//! commits (one sync) when no other change is queued behind it, after
//! [`MAX_CHANGES`] changes, or once it has been open [`MAX_OPEN`]. A
//! change's `commit` returns only once the transaction holding it has
//! committed, so nothing is acknowledged before it is durable. With no
//! other change waiting (one client) every change commits at once, as
//! before.
//!
//! Cancellation: the part of `commit` and of an abandoned change's rollback
//! that must not stop halfway runs on its own task, so a caller that goes
//! away (a dropped HTTP request) never leaves the shared transaction open.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Executor};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

/// Most changes in one transaction.
pub const MAX_CHANGES: usize = 256;
/// Longest a transaction stays open while changes keep coming.
pub const MAX_OPEN: Duration = Duration::from_millis(5);

/// The writer connection and the changes queued for it.
pub struct GroupCommit {
    writer: Arc<Mutex<Writer>>,
    /// Changes waiting for the writer.
    queued: AtomicUsize,
    /// Transactions committed (for tests and benchmarks).
    commits: AtomicU64,
    /// [`MAX_OPEN`], but for tests.
    max_open: Duration,
    ended: watch::Sender<Ended>,
}

struct Writer {
    conn: SqliteConnection,
    /// When the shared transaction opened, if it is open.
    open_since: Option<Instant>,
    /// Changes in it.
    changes: usize,
    /// Its number.
    epoch: u64,
}

/// Which transactions have ended, and how the recent failed ones failed.
#[derive(Clone, Default)]
struct Ended {
    /// Transactions numbered below this have ended.
    below: u64,
    failures: VecDeque<(u64, Arc<str>)>,
}

impl GroupCommit {
    /// Opens the writer connection.
    pub async fn connect(options: &SqliteConnectOptions) -> Result<Arc<Self>, sqlx::Error> {
        Self::connect_with(options, MAX_OPEN).await
    }

    async fn connect_with(
        options: &SqliteConnectOptions,
        max_open: Duration,
    ) -> Result<Arc<Self>, sqlx::Error> {
        let conn = options.connect().await?;
        Ok(Arc::new(GroupCommit {
            writer: Arc::new(Mutex::new(Writer {
                conn,
                open_since: None,
                changes: 0,
                epoch: 0,
            })),
            queued: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
            max_open,
            ended: watch::Sender::new(Ended::default()),
        }))
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Starts a change: waits for the writer, then opens a savepoint in the
    /// shared transaction (opening that first if needed).
    pub async fn begin(self: &Arc<Self>) -> Result<GroupTx, sqlx::Error> {
        let mut writer = {
            let _queued = Queued::new(&self.queued);
            self.writer.clone().lock_owned().await
        };
        // Opening the transaction and the savepoint is one round trip.
        let opening = writer.open_since.is_none();
        let sql = if opening {
            "BEGIN IMMEDIATE; SAVEPOINT change"
        } else {
            "SAVEPOINT change"
        };
        if let Err(e) = writer.conn.execute(sql).await {
            if opening {
                // Whatever part of it ran.
                let _ = writer.conn.execute("ROLLBACK").await;
            }
            self.settle_detached(writer);
            return Err(e);
        }
        if opening {
            writer.open_since = Some(Instant::now());
        }
        Ok(GroupTx {
            writer: Some(writer),
            group: self.clone(),
        })
    }

    /// Ends the shared transaction if it is due, else hands the writer to
    /// the next queued change. Runs on its own task: it must not stop
    /// halfway.
    fn settle_detached(
        self: &Arc<Self>,
        writer: OwnedMutexGuard<Writer>,
    ) -> tokio::task::JoinHandle<()> {
        let group = self.clone();
        tokio::spawn(async move { group.settle(writer).await })
    }

    async fn settle(&self, writer: OwnedMutexGuard<Writer>) {
        if self.due(&writer) {
            self.end(writer).await;
        }
    }

    /// Whether the open transaction should commit now.
    fn due(&self, writer: &Writer) -> bool {
        writer.open_since.is_some_and(|since| {
            self.queued.load(Ordering::SeqCst) == 0
                || writer.changes >= MAX_CHANGES
                || since.elapsed() >= self.max_open
        })
    }

    /// Commits the open transaction and tells its changes.
    async fn end(&self, mut writer: OwnedMutexGuard<Writer>) {
        let result = writer.conn.execute("COMMIT").await;
        if result.is_err() {
            let _ = writer.conn.execute("ROLLBACK").await;
        } else {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        let epoch = writer.epoch;
        writer.epoch += 1;
        writer.changes = 0;
        writer.open_since = None;
        drop(writer);
        self.ended.send_modify(|ended| {
            ended.below = epoch + 1;
            if let Err(e) = result {
                ended.failures.push_back((epoch, e.to_string().into()));
                if ended.failures.len() > 64 {
                    ended.failures.pop_front();
                }
            }
        });
    }

    /// Waits until transaction `epoch` has ended; its error if it failed.
    async fn ended(&self, epoch: u64) -> Result<(), sqlx::Error> {
        let mut ended = self.ended.subscribe();
        let ended = ended
            .wait_for(|ended| ended.below > epoch)
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        match ended.failures.iter().find(|(e, _)| *e == epoch) {
            Some((_, why)) => Err(sqlx::Error::Protocol(format!(
                "the transaction holding this change failed to commit: {why}"
            ))),
            None => Ok(()),
        }
    }
}

/// Counts a change as queued while it waits for the writer, also when the
/// wait is cancelled.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(queued: &'a AtomicUsize) -> Self {
        queued.fetch_add(1, Ordering::SeqCst);
        Queued(queued)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One change: the writer connection, inside the change's savepoint.
/// Dropped without [`GroupTx::commit`], the change rolls back to its
/// savepoint and the rest of the transaction goes on.
pub struct GroupTx {
    writer: Option<OwnedMutexGuard<Writer>>,
    group: Arc<GroupCommit>,
}

impl GroupTx {
    /// Keeps the change and returns once it is committed to disk.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let mut writer = self
            .writer
            .take()
            .expect("a change holds the writer until it ends");
        // The change's savepoint stays until the transaction ends (COMMIT
        // releases them all): a later change that fails rolls back to its
        // own, nested inside. One statement less per change.
        writer.changes += 1;
        let epoch = writer.epoch;
        if self.group.due(&writer) {
            let group = self.group.clone();
            tokio::spawn(async move { group.end(writer).await })
                .await
                .map_err(|e| sqlx::Error::Protocol(format!("committing: {e}")))?;
        } else {
            drop(writer);
        }
        self.group.ended(epoch).await
    }
}

impl Drop for GroupTx {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let group = self.group.clone();
            tokio::spawn(async move {
                let mut writer = writer;
                let _ = writer
                    .conn
                    .execute("ROLLBACK TO change; RELEASE change")
                    .await;
                group.settle(writer).await;
            });
        }
    }
}

impl Deref for GroupTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self
            .writer
            .as_ref()
            .expect("a change holds the writer until it ends")
            .conn
    }
}

impl DerefMut for GroupTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self
            .writer
            .as_mut()
            .expect("a change holds the writer until it ends")
            .conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    async fn group() -> (tempfile::TempDir, Arc<GroupCommit>, SqliteConnectOptions) {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("g.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        // No commit for lack of time: the tests decide when one is due.
        let group = GroupCommit::connect_with(&options, Duration::from_secs(600))
            .await
            .unwrap();
        let mut tx = group.begin().await.unwrap();
        tx.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        (dir, group, options)
    }

    async fn rows(options: &SqliteConnectOptions) -> Vec<i64> {
        let mut reader = options.connect().await.unwrap();
        sqlx::query("SELECT n FROM t ORDER BY n")
            .fetch_all(&mut reader)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    async fn insert(group: &Arc<GroupCommit>, n: i64) -> GroupTx {
        let mut tx = group.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (?)")
            .bind(n)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_changes_share_one_commit_and_none_is_acknowledged_before_it() {
        let (_dir, group, options) = group().await;
        let before = group.commits();
        // One change holds the writer while three more queue behind it.
        let first = insert(&group, 0).await;
        let mut queued = Vec::new();
        for n in 1..=3 {
            let group = group.clone();
            let options = options.clone();
            queued.push(tokio::spawn(async move {
                insert(&group, n).await.commit().await.unwrap();
                // Acknowledged means committed: another connection sees it.
                let mut reader = options.connect().await.unwrap();
                let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE n <= ?")
                    .bind(n)
                    .fetch_one(&mut reader)
                    .await
                    .unwrap();
                assert!(seen > n, "change {n} acknowledged before it was committed");
            }));
        }
        while group.queued.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        first.commit().await.unwrap();
        for q in queued {
            q.await.unwrap();
        }
        assert_eq!(rows(&options).await, vec![0, 1, 2, 3]);
        assert_eq!(
            group.commits() - before,
            1,
            "four queued changes, one commit"
        );
        // Alone, a change commits at once.
        insert(&group, 4).await.commit().await.unwrap();
        assert_eq!(group.commits() - before, 2);
    }

    #[tokio::test]
    async fn a_failed_or_dropped_change_rolls_back_alone() {
        let (_dir, group, options) = group().await;
        insert(&group, 1).await.commit().await.unwrap();
        // Dropped after writing: rolled back.
        drop(insert(&group, 2).await);
        // A statement that fails inside a change leaves the change usable
        // and the others untouched.
        let mut tx = insert(&group, 3).await;
        assert!(
            sqlx::query("INSERT INTO t (n) VALUES (1)")
                .execute(&mut *tx)
                .await
                .is_err()
        );
        tx.commit().await.unwrap();
        insert(&group, 4).await.commit().await.unwrap();
        assert_eq!(rows(&options).await, vec![1, 3, 4]);
    }

    #[tokio::test]
    async fn a_cancelled_change_does_not_leave_the_transaction_open() {
        let (_dir, group, options) = group().await;
        // A caller that goes away mid-change.
        let task = {
            let group = group.clone();
            tokio::spawn(async move {
                let mut tx = group.begin().await.unwrap();
                sqlx::query("INSERT INTO t (n) VALUES (7)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                std::future::pending::<()>().await;
                drop(tx);
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        task.abort();
        let _ = task.await;
        let mut tx = group.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (8)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // Another connection can write: the writer's transaction is closed.
        let mut other = options.connect().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (9)")
            .execute(&mut other)
            .await
            .unwrap();
        assert_eq!(rows(&options).await, vec![8, 9]);
    }
}
