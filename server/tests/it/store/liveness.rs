//! Leases, heartbeats and expiry: only the attempt holding a lease is
//! listened to, and a dead worker's tasks and map outputs run again.

use std::sync::Arc;

use protocol::worker_api::TaskWork;
use protocol::{AttemptId, AttemptOutcome, JobId, JobState, TaskKind, TaskState, WorkerId};
use server::store::{Completion, Store};

use super::{
    LIVE, address, attempt, create_job, job, lease, map_done, reduce_done, register, run_maps, task,
};

/// Everything the store shows about a job, to prove nothing changed.
async fn snapshot(store: &Arc<dyn Store>, id: JobId) -> String {
    let job = job(store, id).await;
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?}",
        job.state,
        job.map,
        job.reduce,
        store.list_tasks(id).await.unwrap(),
        store.list_attempts(id).await.unwrap(),
        store.job_counters(id).await.unwrap(),
    )
}

pub async fn duplicate_and_foreign_completions_are_refused(store: Arc<dyn Store>) {
    let w1 = register(&store, "w1", 0).await;
    let w2 = register(&store, "w2", 0).await;
    let id = create_job(&store, 1, 1, 10).await;
    let held = lease(&store, &w1, 100).await;

    // Another worker cannot complete w1's attempt, nor end it.
    let before = snapshot(&store, id).await;
    let done = store
        .complete(held.attempt, &map_done(&w2, 0, 1), 200)
        .await
        .unwrap();
    assert_eq!(done, Completion::Refused { discard: vec![] });
    assert_eq!(snapshot(&store, id).await, before);
    let a = attempt(&store, id, held.attempt).await;
    assert_eq!((a.outcome, a.ended_at), (AttemptOutcome::Running, None));

    let done = store
        .complete(held.attempt, &map_done(&w1, 0, 1), 300)
        .await
        .unwrap();
    assert_eq!(
        done,
        Completion::Accepted {
            job: id,
            reduce_partition: None,
            discard: vec![],
        }
    );
    assert_eq!(job(&store, id).await.state, JobState::Reducing);

    // A second report of the same attempt changes nothing, whoever sends it.
    let before = snapshot(&store, id).await;
    for worker in [&w1, &w2] {
        let done = store
            .complete(held.attempt, &map_done(worker, 0, 1), 400)
            .await
            .unwrap();
        assert_eq!(done, Completion::Refused { discard: vec![] });
        assert_eq!(snapshot(&store, id).await, before);
    }
    let a = attempt(&store, id, held.attempt).await;
    assert_eq!(
        (a.outcome, a.ended_at),
        (AttemptOutcome::Succeeded, Some(300))
    );
}

pub async fn completion_after_expiry_is_superseded(store: Arc<dyn Store>) {
    let w1 = register(&store, "w1", 0).await;
    let w2 = register(&store, "w2", 0).await;
    let id = create_job(&store, 1, 1, 10).await;
    let old = lease(&store, &w1, 1_000).await;

    // Both workers stay alive, but w1 stops renewing its lease (due 11_000).
    for w in [&w1, &w2] {
        assert_eq!(
            store.heartbeat(w, &[], 10_500, LIVE).await.unwrap(),
            Some(vec![])
        );
    }
    assert_eq!(store.expire(11_000, LIVE).await.unwrap(), 0, "not yet due");
    assert_eq!(store.expire(12_000, LIVE).await.unwrap(), 1);
    let idle = task(&store, id, TaskKind::Map, 0).await;
    assert_eq!((idle.state, idle.worker), (TaskState::Idle, None));
    let lost = attempt(&store, id, old.attempt).await;
    assert_eq!(
        (lost.outcome, lost.ended_at),
        (AttemptOutcome::Lost, Some(12_000))
    );
    assert_eq!(
        store
            .heartbeat(&w1, &[old.attempt], 12_100, LIVE)
            .await
            .unwrap(),
        Some(vec![old.attempt]),
        "w1 is told to drop the attempt"
    );

    let new = lease(&store, &w2, 12_200).await;
    assert_eq!(new.task, old.task);
    assert_ne!(new.attempt, old.attempt);

    let done = store
        .complete(old.attempt, &map_done(&w1, 0, 1), 12_300)
        .await
        .unwrap();
    assert_eq!(done, Completion::Refused { discard: vec![] });
    assert_eq!(
        attempt(&store, id, old.attempt).await.outcome,
        AttemptOutcome::Superseded
    );
    let held = task(&store, id, TaskKind::Map, 0).await;
    assert_eq!(
        (held.state, held.worker),
        (TaskState::InProgress, Some(w2.clone()))
    );
    assert_eq!(held.attempts, 2);
    assert!(store.job_counters(id).await.unwrap().0.is_empty());

    let done = store
        .complete(new.attempt, &map_done(&w2, 0, 1), 12_400)
        .await
        .unwrap();
    assert!(matches!(done, Completion::Accepted { .. }));
    assert_eq!(job(&store, id).await.state, JobState::Reducing);
    assert_eq!(
        attempt(&store, id, new.attempt).await.outcome,
        AttemptOutcome::Succeeded
    );
    assert_eq!(
        attempt(&store, id, old.attempt).await.outcome,
        AttemptOutcome::Superseded
    );
    assert_eq!(
        store.job_counters(id).await.unwrap(),
        map_done(&w2, 0, 1).counters,
        "counted once"
    );
}

pub async fn heartbeat_renews_and_reports(store: Arc<dyn Store>) {
    let w1 = register(&store, "w1", 0).await;
    let w2 = register(&store, "w2", 0).await;
    let silent = register(&store, "w3-silent", 0).await;
    let id = create_job(&store, 1, 1, 10).await;
    let held = lease(&store, &w1, 1_000).await;

    // The lease was due at 11_000; the heartbeat moves it to 19_000.
    let stranger = AttemptId(held.attempt.0 + 1_000);
    assert_eq!(
        store
            .heartbeat(&w1, &[held.attempt, stranger], 9_000, LIVE)
            .await
            .unwrap(),
        Some(vec![stranger])
    );
    assert_eq!(
        store
            .heartbeat(&w2, &[held.attempt], 9_000, LIVE)
            .await
            .unwrap(),
        Some(vec![held.attempt]),
        "w2 does not hold w1's attempt"
    );
    assert_eq!(store.expire(15_000, LIVE).await.unwrap(), 0);
    let kept = task(&store, id, TaskKind::Map, 0).await;
    assert_eq!(
        (kept.state, kept.worker),
        (TaskState::InProgress, Some(w1.clone()))
    );
    assert_eq!(
        attempt(&store, id, held.attempt).await.outcome,
        AttemptOutcome::Running
    );

    // The silent worker was declared dead by that expiry.
    let states: Vec<_> = store
        .list_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.id.0, w.state))
        .collect();
    assert_eq!(
        states,
        [
            ("w1".to_owned(), "alive".to_owned()),
            ("w2".to_owned(), "alive".to_owned()),
            ("w3-silent".to_owned(), "dead".to_owned())
        ]
    );
    assert_eq!(
        store.heartbeat(&silent, &[], 15_100, LIVE).await.unwrap(),
        None
    );
    let unknown = WorkerId("unknown".into());
    assert_eq!(
        store.heartbeat(&unknown, &[], 15_100, LIVE).await.unwrap(),
        None
    );

    // Once the renewed lease runs out, it is taken back.
    assert_eq!(
        store.heartbeat(&w1, &[], 18_000, LIVE).await.unwrap(),
        Some(vec![])
    );
    assert_eq!(store.expire(19_001, LIVE).await.unwrap(), 1);
    assert_eq!(
        task(&store, id, TaskKind::Map, 0).await.state,
        TaskState::Idle
    );
    assert_eq!(
        store
            .heartbeat(&w1, &[held.attempt], 19_100, LIVE)
            .await
            .unwrap(),
        Some(vec![held.attempt])
    );
}

pub async fn dead_worker_loses_its_tasks_and_map_outputs(store: Arc<dyn Store>) {
    let w1 = register(&store, "w1", 0).await;
    let w2 = register(&store, "w2", 0).await;

    // A job that finished entirely on w1.
    let finished = create_job(&store, 1, 1, 10).await;
    run_maps(&store, finished, &[&w1], 1, 1, 100).await;
    let reduce = lease(&store, &w1, 120).await;
    store
        .complete(reduce.attempt, &reduce_done(&w1), 130)
        .await
        .unwrap();
    assert_eq!(job(&store, finished).await.state, JobState::Succeeded);

    // A job reducing, with map 0's output and reduce 0 on w1.
    let id = create_job(&store, 2, 2, 200).await;
    run_maps(&store, id, &[&w1, &w2], 2, 2, 300).await;
    assert_eq!(job(&store, id).await.state, JobState::Reducing);
    for w in [&w1, &w2] {
        assert_eq!(
            store.heartbeat(w, &[], 5_000, LIVE).await.unwrap(),
            Some(vec![])
        );
    }
    let r0 = lease(&store, &w1, 6_000).await;
    let r1 = lease(&store, &w2, 6_010).await;
    assert_eq!((r0.index, r1.index), (0, 1));

    // w1 falls silent after 5_000; at 15_500 it is dead, though the lease
    // it took at 6_000 has not run out.
    assert_eq!(
        store
            .heartbeat(&w2, &[r1.attempt], 15_000, LIVE)
            .await
            .unwrap(),
        Some(vec![])
    );
    assert_eq!(
        store.expire(15_500, LIVE).await.unwrap(),
        2,
        "reduce 0 and map 0"
    );

    let workers = store.list_workers().await.unwrap();
    let states: Vec<_> = workers
        .iter()
        .map(|w| (w.id.0.as_str(), w.state.as_str()))
        .collect();
    assert_eq!(states, [("w1", "dead"), ("w2", "alive")]);
    assert_eq!(
        store
            .heartbeat(&w1, &[r0.attempt], 15_600, LIVE)
            .await
            .unwrap(),
        None
    );

    let back = job(&store, id).await;
    assert_eq!(back.state, JobState::Mapping, "map output was lost");
    assert_eq!((back.map.idle, back.map.completed), (1, 1));
    assert_eq!((back.reduce.idle, back.reduce.in_progress), (1, 1));
    let map0 = task(&store, id, TaskKind::Map, 0).await;
    assert_eq!((map0.state, map0.worker), (TaskState::Idle, None));
    let map1 = task(&store, id, TaskKind::Map, 1).await;
    assert_eq!(
        (map1.state, map1.worker),
        (TaskState::Completed, Some(w2.clone()))
    );
    let lost = attempt(&store, id, r0.attempt).await;
    assert_eq!(
        (lost.outcome, lost.ended_at),
        (AttemptOutcome::Lost, Some(15_500))
    );
    assert_eq!(
        task(&store, id, TaskKind::Reduce, 1).await.state,
        TaskState::InProgress
    );

    // The finished job keeps its map output where it was.
    assert_eq!(job(&store, finished).await.state, JobState::Succeeded);
    let kept = task(&store, finished, TaskKind::Map, 0).await;
    assert_eq!(
        (kept.state, kept.worker),
        (TaskState::Completed, Some(w1.clone()))
    );

    // Map 0 runs again before reduce 0 can; then reduce 0 reads both maps
    // from w2.
    let rerun = lease(&store, &w2, 15_700).await;
    assert_eq!((rerun.kind, rerun.index), (TaskKind::Map, 0));
    assert_eq!(store.lease(&w2, 15_710, LIVE).await.unwrap(), None);
    store
        .complete(rerun.attempt, &map_done(&w2, 0, 2), 15_800)
        .await
        .unwrap();
    assert_eq!(job(&store, id).await.state, JobState::Reducing);
    let again = lease(&store, &w2, 15_900).await;
    assert_eq!((again.kind, again.index), (TaskKind::Reduce, 0));
    let TaskWork::Reduce { sources, .. } = &again.work else {
        panic!("a reduce lease carries reduce work");
    };
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0].attempt, rerun.attempt);
    for source in sources {
        assert!(source.url.starts_with(&address(&w2)), "{}", source.url);
    }
}

/// Only a registered, live worker is leased work.
pub async fn unknown_workers_get_no_lease(store: Arc<dyn Store>) {
    create_job(&store, 1, 1, 0).await;
    let nobody = WorkerId("w-nobody".into());
    let refused = store.lease(&nobody, 10, LIVE).await;
    assert!(
        matches!(refused, Err(server::store::StoreError::Conflict(ref m)) if m.contains("register again")),
        "{refused:?}"
    );
}
