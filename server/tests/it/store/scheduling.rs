//! Which task a lease hands out: each exactly once under concurrency, jobs
//! in turn, nothing from a cancelled job.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use protocol::{AttemptOutcome, JobId, JobState, TaskKind, TaskState};
use server::store::{Completion, Store, StoreError};

use super::{
    LIVE, attempt, create_job, job, lease, map_done, reduce_done, register, run_maps, task,
};

pub async fn concurrent_leases_hand_out_each_task_once(store: Arc<dyn Store>) {
    const LEASERS: usize = 8;
    let mut workers = Vec::new();
    for w in 0..4 {
        workers.push(register(&store, &format!("w{w}"), 0).await);
    }
    let jobs = [
        create_job(&store, 30, 2, 10).await,
        create_job(&store, 20, 3, 11).await,
    ];
    let clock = Arc::new(AtomicI64::new(1_000));

    let mut leasers = Vec::new();
    for l in 0..LEASERS {
        let store = Arc::clone(&store);
        let worker = workers[l % workers.len()].clone();
        let clock = Arc::clone(&clock);
        leasers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let now = clock.fetch_add(1, Ordering::Relaxed);
                match store.lease(&worker, now, LIVE).await.unwrap() {
                    Some(lease) => got.push(lease),
                    None => return got,
                }
            }
        }));
    }
    let mut leases = Vec::new();
    for leaser in leasers {
        leases.extend(leaser.await.unwrap());
    }

    // Only maps are leasable, 30 + 20 of them, each exactly once.
    assert_eq!(leases.len(), 50);
    assert!(leases.iter().all(|l| l.kind == TaskKind::Map));
    let tasks: HashSet<_> = leases.iter().map(|l| l.task).collect();
    let attempts: HashSet<_> = leases.iter().map(|l| l.attempt).collect();
    assert_eq!(
        (tasks.len(), attempts.len()),
        (50, 50),
        "a task was leased twice"
    );
    for id in jobs {
        let expected: HashSet<_> = store
            .list_tasks(id)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.kind == TaskKind::Map)
            .map(|t| {
                assert_eq!((t.state, t.attempts), (TaskState::InProgress, 1));
                t.id
            })
            .collect();
        let leased: HashSet<_> = leases
            .iter()
            .filter(|l| l.job == id)
            .map(|l| l.task)
            .collect();
        assert_eq!(leased, expected);
        assert_eq!(store.list_attempts(id).await.unwrap().len(), expected.len());
    }
    let running: u32 = store
        .list_workers()
        .await
        .unwrap()
        .iter()
        .map(|w| w.running)
        .sum();
    assert_eq!(running, 50);
}

pub async fn jobs_take_turns(store: Arc<dyn Store>) {
    let w = register(&store, "w1", 0).await;
    let first = create_job(&store, 6, 1, 10).await;
    let second = create_job(&store, 6, 1, 11).await;

    let mut order = Vec::new();
    for i in 0..8 {
        let lease = lease(&store, &w, 100 + i).await;
        order.push((lease.job, lease.index));
    }
    assert_eq!(
        order,
        [
            (first, 0),
            (second, 0),
            (first, 1),
            (second, 1),
            (first, 2),
            (second, 2),
            (first, 3),
            (second, 3)
        ]
    );

    // A third job joins the rotation as soon as it exists.
    let third = create_job(&store, 2, 1, 200).await;
    assert_eq!(lease(&store, &w, 201).await.job, third);
}

pub async fn cancel_stops_a_job(store: Arc<dyn Store>) {
    let w = register(&store, "w1", 0).await;
    let id = create_job(&store, 3, 1, 10).await;
    let running = lease(&store, &w, 100).await;

    store.cancel_job(id, 200).await.unwrap();
    let cancelled = job(&store, id).await;
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.finished_at, Some(200));
    assert!(cancelled.error.is_some());
    assert_eq!(store.finished_jobs(&[id]).await.unwrap(), vec![id]);

    assert_eq!(store.lease(&w, 300, LIVE).await.unwrap(), None);
    let done = store
        .complete(running.attempt, &map_done(&w, 0, 1), 400)
        .await
        .unwrap();
    assert_eq!(done, Completion::Refused { discard: vec![] });
    let refused = attempt(&store, id, running.attempt).await;
    assert_eq!(refused.outcome, AttemptOutcome::Superseded);
    assert_eq!(refused.ended_at, Some(400));
    assert_ne!(
        task(&store, id, TaskKind::Map, 0).await.state,
        TaskState::Completed
    );
    assert!(store.job_counters(id).await.unwrap().0.is_empty());
    assert_eq!(job(&store, id).await.state, JobState::Cancelled);

    let err = store.cancel_job(id, 500).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    assert_eq!(job(&store, id).await.finished_at, Some(200));

    // A job that succeeded cannot be cancelled either.
    let done = create_job(&store, 1, 1, 600).await;
    run_maps(&store, done, &[&w], 1, 1, 610).await;
    let reduce = lease(&store, &w, 620).await;
    store
        .complete(reduce.attempt, &reduce_done(&w), 630)
        .await
        .unwrap();
    assert_eq!(job(&store, done).await.state, JobState::Succeeded);
    let err = store.cancel_job(done, 640).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "got {err:?}");
    assert_eq!(job(&store, done).await.state, JobState::Succeeded);

    let err = store.cancel_job(JobId(999_999), 650).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "got {err:?}");
}
