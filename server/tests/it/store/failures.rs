//! Failed attempts: a guest's failures use up the task's attempts, the
//! host's do not, and a failed fetch runs the lost map again.

use std::sync::Arc;

use protocol::worker_api::{Failure, TaskWork};
use protocol::{AttemptOutcome, JobState, TaskKind, TaskState};
use server::store::{Completion, Store};

use super::{
    LIVE, attempt, create_job, create_job_with, failed, job, lease, map_done, register, run_maps,
    spec, task,
};

fn guest(message: &str) -> Failure {
    Failure::Guest {
        message: message.into(),
    }
}

pub async fn guest_failures_use_up_attempts(store: Arc<dyn Store>) {
    let w = register(&store, "w1", 0).await;
    let mut two_attempts = spec(1);
    two_attempts.max_attempts = 2;
    let id = create_job_with(&store, two_attempts, 1, 10).await;

    let first = lease(&store, &w, 100).await;
    let done = store
        .complete(
            first.attempt,
            &failed(&w, guest("bad record at line 7")),
            110,
        )
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
    let retry = task(&store, id, TaskKind::Map, 0).await;
    assert_eq!(
        (retry.state, retry.worker.as_ref()),
        (TaskState::Idle, None)
    );
    assert_eq!((retry.failures, retry.attempts), (1, 1));
    let a = attempt(&store, id, first.attempt).await;
    assert_eq!(a.outcome, AttemptOutcome::Failed);
    assert_eq!(a.ended_at, Some(110));
    assert!(a.error.unwrap().contains("bad record at line 7"));
    assert_eq!(job(&store, id).await.state, JobState::Mapping);

    let second = lease(&store, &w, 200).await;
    assert_eq!(second.task, first.task);
    store
        .complete(
            second.attempt,
            &failed(&w, guest("panicked: out of range")),
            210,
        )
        .await
        .unwrap();
    let gave_up = task(&store, id, TaskKind::Map, 0).await;
    assert_eq!(
        (gave_up.state, gave_up.failures, gave_up.attempts),
        (TaskState::Failed, 2, 2)
    );
    let failed_job = job(&store, id).await;
    assert_eq!(failed_job.state, JobState::Failed);
    assert_eq!(failed_job.finished_at, Some(210));
    assert_eq!(failed_job.map.failed, 1);
    let error = failed_job.error.expect("a failed job says why");
    assert!(error.contains("panicked: out of range"), "{error}");
    assert_eq!(store.lease(&w, 300, LIVE).await.unwrap(), None);
}

pub async fn host_failures_do_not_count(store: Arc<dyn Store>) {
    let w = register(&store, "w1", 0).await;
    let mut one_attempt = spec(1);
    one_attempt.max_attempts = 1;
    let id = create_job_with(&store, one_attempt, 1, 10).await;

    for round in 0..3 {
        let now = 100 * (round + 1);
        let held = lease(&store, &w, now).await;
        let host = Failure::Host {
            message: "disk full".into(),
        };
        let done = store
            .complete(held.attempt, &failed(&w, host), now + 10)
            .await
            .unwrap();
        assert!(matches!(done, Completion::Accepted { .. }));
        let t = task(&store, id, TaskKind::Map, 0).await;
        assert_eq!((t.state, t.failures), (TaskState::Idle, 0));
        assert_eq!(t.attempts, round as u32 + 1);
        let a = attempt(&store, id, held.attempt).await;
        assert_eq!(a.outcome, AttemptOutcome::Lost);
        assert!(a.error.unwrap().contains("disk full"));
        assert_eq!(job(&store, id).await.state, JobState::Mapping);
    }

    // With one attempt allowed, the task still has it.
    let last = lease(&store, &w, 1_000).await;
    store
        .complete(last.attempt, &map_done(&w, 0, 1), 1_010)
        .await
        .unwrap();
    assert_eq!(job(&store, id).await.state, JobState::Reducing);
}

pub async fn fetch_failure_reruns_the_map(store: Arc<dyn Store>) {
    let w1 = register(&store, "w1", 0).await;
    let w2 = register(&store, "w2", 0).await;
    let id = create_job(&store, 2, 1, 10).await;
    let maps = run_maps(&store, id, &[&w1, &w2], 2, 1, 100).await;
    assert_eq!(job(&store, id).await.state, JobState::Reducing);
    let map1 = task(&store, id, TaskKind::Map, 1).await;

    let reduce = lease(&store, &w1, 200).await;
    assert_eq!(reduce.kind, TaskKind::Reduce);
    let fetch = Failure::FetchFailed {
        map_task: map1.id,
        message: "connection refused".into(),
    };
    let done = store
        .complete(reduce.attempt, &failed(&w1, fetch), 210)
        .await
        .unwrap();
    assert!(matches!(done, Completion::Accepted { .. }));

    assert_eq!(job(&store, id).await.state, JobState::Mapping);
    let lost = task(&store, id, TaskKind::Map, 1).await;
    assert_eq!((lost.state, lost.worker), (TaskState::Idle, None));
    let kept = task(&store, id, TaskKind::Map, 0).await;
    assert_eq!(kept.state, TaskState::Completed);
    let r = task(&store, id, TaskKind::Reduce, 0).await;
    assert_eq!((r.state, r.failures, r.worker), (TaskState::Idle, 0, None));
    let a = attempt(&store, id, reduce.attempt).await;
    assert_eq!(a.outcome, AttemptOutcome::Lost);
    assert!(a.error.unwrap().contains("connection refused"));

    // Map 1 runs again, then the reduce reads its new output.
    let rerun = lease(&store, &w1, 300).await;
    assert_eq!((rerun.kind, rerun.index), (TaskKind::Map, 1));
    assert_eq!(store.lease(&w2, 305, LIVE).await.unwrap(), None);
    store
        .complete(rerun.attempt, &map_done(&w1, 1, 1), 310)
        .await
        .unwrap();
    assert_eq!(job(&store, id).await.state, JobState::Reducing);
    let again = lease(&store, &w2, 400).await;
    let TaskWork::Reduce { sources, .. } = &again.work else {
        panic!("a reduce lease carries reduce work");
    };
    let attempts: Vec<_> = sources.iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, [maps[0], rerun.attempt]);
}

/// A reduce leased before a map ran again may still report the map's old
/// output missing; that must not throw away the new output.
pub async fn a_stale_fetch_failure_keeps_the_new_map_output(store: Arc<dyn Store>) {
    let w1 = register(&store, "w1", 0).await;
    let w2 = register(&store, "w2", 0).await;
    let id = create_job(&store, 2, 2, 10).await;
    run_maps(&store, id, &[&w1, &w2], 2, 2, 100).await;
    let map1 = task(&store, id, TaskKind::Map, 1).await;

    // Both reduces start with map 1's first output.
    let early = lease(&store, &w1, 200).await;
    let other = lease(&store, &w2, 205).await;
    assert_eq!(
        (early.kind, other.kind),
        (TaskKind::Reduce, TaskKind::Reduce)
    );
    let fetch = || Failure::FetchFailed {
        map_task: map1.id,
        message: "connection refused".into(),
    };

    // One of them finds it gone; map 1 runs again and completes.
    store
        .complete(other.attempt, &failed(&w2, fetch()), 210)
        .await
        .unwrap();
    assert_eq!(
        task(&store, id, TaskKind::Map, 1).await.state,
        TaskState::Idle
    );
    let rerun = lease(&store, &w2, 300).await;
    assert_eq!((rerun.kind, rerun.index), (TaskKind::Map, 1));
    store
        .complete(rerun.attempt, &map_done(&w2, 1, 2), 310)
        .await
        .unwrap();
    assert_eq!(job(&store, id).await.state, JobState::Reducing);

    // The other reduce, leased before the rerun, reports the old output
    // missing too: its attempt is lost, the new output stays.
    store
        .complete(early.attempt, &failed(&w1, fetch()), 320)
        .await
        .unwrap();
    let kept = task(&store, id, TaskKind::Map, 1).await;
    assert_eq!(kept.state, TaskState::Completed, "{kept:?}");
    assert_eq!(job(&store, id).await.state, JobState::Reducing);
    assert_eq!(
        attempt(&store, id, early.attempt).await.outcome,
        AttemptOutcome::Lost
    );
    let retry = lease(&store, &w1, 400).await;
    assert_eq!(retry.kind, TaskKind::Reduce);
    let TaskWork::Reduce { sources, .. } = &retry.work else {
        panic!("a reduce lease carries reduce work");
    };
    assert_eq!(sources[1].attempt, rerun.attempt, "the new output is read");
}

/// Counters a guest pushes past the ends of i64 saturate, and the job
/// stays readable (an overflowing sum was stored as REAL by SQLite, and
/// every listing of the job failed to decode it).
pub async fn counters_saturate_at_the_ends_of_i64(store: Arc<dyn Store>) {
    let w = register(&store, "w", 0).await;
    let id = create_job(&store, 3, 1, 0).await;
    for map in 0..3 {
        let lease = lease(&store, &w, 10 + map).await;
        let mut report = map_done(&w, lease.index, 1);
        report.counters.add("up", i64::MAX);
        report.counters.add("down", i64::MIN);
        report
            .counters
            .add("both", if map == 1 { i64::MIN } else { i64::MAX });
        let done = store
            .complete(lease.attempt, &report, 20 + map)
            .await
            .unwrap();
        assert!(done.accepted(), "{done:?}");
    }
    let counters = store.job_counters(id).await.unwrap();
    assert_eq!(counters.get("up"), i64::MAX);
    assert_eq!(counters.get("down"), i64::MIN);
    // MAX, then MAX + MIN = -1, then -1 + MAX.
    assert_eq!(counters.get("both"), i64::MAX - 1);
    assert_eq!(job(&store, id).await.state, JobState::Reducing);
    assert!(
        store
            .list_jobs(10)
            .await
            .unwrap()
            .iter()
            .any(|j| j.id == id)
    );
}
