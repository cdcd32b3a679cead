//! Backup attempts of stragglers: started only near the end of a phase for
//! a task running far longer than its finished peers, on another worker;
//! the first attempt to finish wins and the other is refused.

use std::sync::Arc;

use protocol::{AttemptOutcome, JobState, TaskKind, TaskState};
use server::store::{BACKUP_MIN_RUNNING_MS, Completion, Store, staged_output_path};

use super::{
    LIVE, attempt, create_job, job, lease, map_done, reduce_done, register, run_maps, task,
};

pub async fn stragglers_get_one_backup_and_the_first_finish_wins(store: Arc<dyn Store>) {
    let t0 = 1_000_000;
    let fast = register(&store, "fast", t0).await;
    let slow = register(&store, "slow", t0).await;
    let spare = register(&store, "spare", t0).await;
    let id = create_job(&store, 3, 1, t0).await;

    let a0 = lease(&store, &fast, t0).await;
    let a1 = lease(&store, &fast, t0).await;
    let straggler = lease(&store, &slow, t0).await;
    for a in [&a0, &a1] {
        let done = store
            .complete(a.attempt, &map_done(&fast, a.index, 1), t0 + 1_000)
            .await
            .unwrap();
        assert!(matches!(done, Completion::Accepted { .. }));
    }

    // Not yet slow enough: peers took 1 s, the straggler ran 1.5 s.
    assert!(
        store
            .lease(&spare, t0 + 1_500, LIVE)
            .await
            .unwrap()
            .is_none()
    );
    // Long past both thresholds, but the worker running it gets no backup
    // of its own task.
    let late = t0 + BACKUP_MIN_RUNNING_MS + 2_000;
    assert!(store.lease(&slow, late, LIVE).await.unwrap().is_none());

    let backup = lease(&store, &spare, late).await;
    assert_eq!((backup.task, backup.kind), (straggler.task, TaskKind::Map));
    assert_ne!(backup.attempt, straggler.attempt);
    assert!(attempt(&store, id, backup.attempt).await.backup);
    // Only one backup per task.
    assert!(store.lease(&fast, late, LIVE).await.unwrap().is_none());

    // Both attempts are renewed by their workers' heartbeats.
    let kept = store
        .heartbeat(&spare, &[backup.attempt], late + 1, LIVE)
        .await
        .unwrap();
    assert_eq!(kept, Some(vec![]));
    let kept = store
        .heartbeat(&slow, &[straggler.attempt], late + 1, LIVE)
        .await
        .unwrap();
    assert_eq!(kept, Some(vec![]));

    // The backup finishes first and wins; the job moves on.
    let done = store
        .complete(
            backup.attempt,
            &map_done(&spare, backup.index, 1),
            late + 10,
        )
        .await
        .unwrap();
    assert!(matches!(done, Completion::Accepted { .. }));
    let t = task(&store, id, TaskKind::Map, straggler.index).await;
    assert_eq!(t.state, TaskState::Completed);
    assert_eq!(
        t.worker.as_ref(),
        Some(&spare),
        "the map output lives where the winner ran"
    );
    assert_eq!(job(&store, id).await.state, JobState::Reducing);

    // The original attempt was superseded, and its late report is refused.
    assert_eq!(
        attempt(&store, id, straggler.attempt).await.outcome,
        AttemptOutcome::Superseded
    );
    let late_report = store
        .complete(
            straggler.attempt,
            &map_done(&slow, straggler.index, 1),
            late + 20,
        )
        .await
        .unwrap();
    assert_eq!(late_report, Completion::Refused { discard: vec![] });
    let reduce = lease(&store, &fast, late + 30).await;
    match reduce.work {
        protocol::worker_api::TaskWork::Reduce { sources, .. } => {
            let source = sources
                .iter()
                .find(|s| s.map_index == straggler.index)
                .unwrap();
            assert_eq!(source.attempt, backup.attempt);
            assert!(
                source.url.starts_with("http://spare:7879/"),
                "{}",
                source.url
            );
        }
        other => panic!("expected a reduce, got {other:?}"),
    }
}

pub async fn a_dead_primary_hands_over_to_its_backup(store: Arc<dyn Store>) {
    let t0 = 2_000_000;
    let fast = register(&store, "fast", t0).await;
    let slow = register(&store, "slow", t0).await;
    let spare = register(&store, "spare", t0).await;
    let id = create_job(&store, 2, 1, t0).await;
    let a0 = lease(&store, &fast, t0).await;
    let straggler = lease(&store, &slow, t0).await;
    store
        .complete(a0.attempt, &map_done(&fast, a0.index, 1), t0 + 500)
        .await
        .unwrap();
    let late = t0 + BACKUP_MIN_RUNNING_MS + 1_000;
    let backup = lease(&store, &spare, late).await;
    assert_eq!(backup.task, straggler.task);

    // The slow worker dies; the spare keeps heartbeating.
    let dead_at = t0 + LIVE.dead_after_ms + 1;
    store
        .heartbeat(&spare, &[backup.attempt], dead_at - 1, LIVE)
        .await
        .unwrap();
    store
        .heartbeat(&fast, &[], dead_at - 1, LIVE)
        .await
        .unwrap();
    store.expire(dead_at, LIVE).await.unwrap();
    let t = task(&store, id, TaskKind::Map, straggler.index).await;
    assert_eq!(
        t.state,
        TaskState::InProgress,
        "the backup carries the task on"
    );
    assert_eq!(t.worker.as_ref(), Some(&spare));
    assert_eq!(
        attempt(&store, id, straggler.attempt).await.outcome,
        AttemptOutcome::Lost
    );

    let done = store
        .complete(
            backup.attempt,
            &map_done(&spare, backup.index, 1),
            dead_at + 1,
        )
        .await
        .unwrap();
    assert!(matches!(done, Completion::Accepted { .. }));
    assert_eq!(job(&store, id).await.state, JobState::Reducing);
}

/// A backup reduce may stage its output like the primary; the first to
/// finish commits, and the loser's staged output is handed back to be
/// deleted, while a repeated report of the winner keeps the winner's.
pub async fn a_backup_reduce_stages_and_the_loser_is_discarded(store: Arc<dyn Store>) {
    let t0 = 3_000_000;
    let fast = register(&store, "fast", t0).await;
    let slow = register(&store, "slow", t0).await;
    let spare = register(&store, "spare", t0).await;
    let id = create_job(&store, 2, 2, t0).await;
    run_maps(&store, id, &[&fast], 2, 2, t0).await;

    let r0 = lease(&store, &fast, t0 + 100).await;
    let straggler = lease(&store, &slow, t0 + 100).await;
    assert_eq!(
        (r0.kind, straggler.kind),
        (TaskKind::Reduce, TaskKind::Reduce)
    );
    let target = store
        .attempt_target(straggler.attempt)
        .await
        .unwrap()
        .unwrap();
    assert!(target.holds);
    assert_eq!(
        (target.job, target.kind, target.index),
        (id, TaskKind::Reduce, straggler.index)
    );
    let done = store
        .complete(r0.attempt, &reduce_done(&fast), t0 + 600)
        .await
        .unwrap();
    assert!(done.accepted() && done.discard().is_empty(), "{done:?}");

    let late = t0 + 100 + BACKUP_MIN_RUNNING_MS + 1_000;
    let backup = lease(&store, &spare, late).await;
    assert_eq!(backup.task, straggler.task);
    // Both attempts may stage their output.
    for attempt in [straggler.attempt, backup.attempt] {
        let target = store.attempt_target(attempt).await.unwrap().unwrap();
        assert!(target.holds, "attempt {attempt} may stage");
    }

    let won = store
        .complete(backup.attempt, &reduce_done(&spare), late + 10)
        .await
        .unwrap();
    assert!(won.accepted());
    assert_eq!(
        won.discard(),
        [staged_output_path(id, straggler.attempt, straggler.index)],
        "the loser's staged output goes"
    );
    assert_eq!(job(&store, id).await.state, JobState::Succeeded);
    let outputs = store.reduce_outputs(id).await.unwrap();
    assert!(
        outputs.contains(&(
            straggler.index,
            staged_output_path(id, backup.attempt, backup.index)
        )),
        "the winner's output is the partition's: {outputs:?}"
    );
    // The loser may stage no more, and its report is refused.
    assert!(
        !store
            .attempt_target(straggler.attempt)
            .await
            .unwrap()
            .unwrap()
            .holds
    );
    let refused = store
        .complete(straggler.attempt, &reduce_done(&slow), late + 20)
        .await
        .unwrap();
    assert_eq!(
        refused,
        Completion::Refused {
            discard: vec![staged_output_path(id, straggler.attempt, straggler.index)]
        }
    );
    // A repeated report of the winner changes nothing and keeps its output.
    let again = store
        .complete(backup.attempt, &reduce_done(&spare), late + 30)
        .await
        .unwrap();
    assert_eq!(again, Completion::Refused { discard: vec![] });
}
