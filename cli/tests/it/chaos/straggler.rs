//! A straggler does not hold a job back, nor fail it: a worker that takes
//! 30 s to report every task it runs (`--simulate-slow-ms`) joins a job
//! beside a normal one. Its map and reduce attempts are backed up on the
//! normal worker, the backups win, the straggler's attempts are dropped
//! (their slots freed) and the staged outputs of its losing reduces are
//! deleted. The job ends with the local run's output, one committed output
//! per partition, long before the straggler could have finished anything.

use std::time::{Duration, Instant};

use examples_wasm::MISBEHAVE;
use protocol::api::AttemptInfo;
use protocol::{AttemptOutcome, TaskKind};

use super::{Chaos, JOB_TIMEOUT, NO_SEED, NewWorker, Options, assert_output, job_spec};
use crate::cluster::{local_run, per_backend};

const REDUCERS: u32 = 4;
/// How long the straggler holds each finished attempt.
const SLOW_MS: u64 = 30_000;

async fn backups_beat_a_straggler_in_both_phases(backend: &str) {
    let expected = local_run(MISBEHAVE, REDUCERS).await;
    let options = Options {
        workers: 1,
        slots: 1,
        dead_after_secs: 3,
        ..Options::default()
    };
    let mut chaos = Chaos::start(backend, options).await;
    // Two slots: one is held by a map when the reduces start (until the
    // heartbeat that drops it), the other takes a reduce.
    let slow = chaos.add_worker(
        2,
        NewWorker {
            slow_ms: Some(SLOW_MS),
            ..NewWorker::default()
        },
    );
    chaos.wait_for_workers().await;
    let sha = chaos.api.upload_module(MISBEHAVE).await;
    let inputs = chaos.api.upload_texts("books").await;
    // Reduces that take a while, so the straggler's freed slots are back
    // in time to lease one of them.
    let args = [
        ("reduce-mode", "stall".to_owned()),
        ("stall-min-ms", "700".to_owned()),
        ("stall-max-ms", "1000".to_owned()),
    ];
    let started = Instant::now();
    let job = chaos
        .api
        .submit(&job_spec(&sha, &inputs, REDUCERS, &args))
        .await;
    let info = chaos.wait(job, JOB_TIMEOUT, &NO_SEED).await;
    let took = started.elapsed();
    assert_output(&chaos.api, &info, &expected, &NO_SEED).await;

    let registered = chaos.api.workers().await;
    let slow_ids = chaos.worker_ids(slow, &registered);
    let attempts = chaos.api.attempts(job).await;
    let straggled = |kind: TaskKind| -> Vec<&AttemptInfo> {
        attempts
            .iter()
            .filter(|a| a.kind == kind && slow_ids.contains(&a.worker))
            .collect()
    };
    for kind in [TaskKind::Map, TaskKind::Reduce] {
        let theirs = straggled(kind);
        assert!(
            !theirs.is_empty(),
            "the straggler ran no {} attempt: {attempts:#?}",
            kind.as_str()
        );
        for attempt in theirs {
            assert_eq!(
                attempt.outcome,
                AttemptOutcome::Superseded,
                "a straggler's attempt should lose to its backup: {attempt:#?}"
            );
            let backup = attempts.iter().find(|a| {
                a.task == attempt.task && a.backup && a.outcome == AttemptOutcome::Succeeded
            });
            assert!(backup.is_some(), "no winning backup of {attempt:#?}");
        }
    }
    // Every task has exactly one succeeded attempt.
    for task in chaos.api.tasks(job).await {
        let won = attempts
            .iter()
            .filter(|a| a.task == task.id && a.outcome == AttemptOutcome::Succeeded)
            .count();
        assert_eq!(won, 1, "{task:?}: {attempts:#?}");
    }
    // Only the committed outputs stay staged: the losers' were deleted.
    let staged_dir = chaos
        .coordinator_dir()
        .join(format!("blobs/jobs/{job}/attempts"));
    let mut staged: Vec<String> = walk(&staged_dir)
        .into_iter()
        .map(|p| p.strip_prefix(&staged_dir).unwrap().display().to_string())
        .collect();
    staged.sort();
    let mut committed: Vec<String> = attempts
        .iter()
        .filter(|a| a.kind == TaskKind::Reduce && a.outcome == AttemptOutcome::Succeeded)
        .map(|a| format!("{}/part-r-{:05}", a.id, a.index))
        .collect();
    committed.sort();
    assert_eq!(
        staged,
        committed,
        "staged outputs under {}",
        staged_dir.display()
    );
    // The straggler alone would need 30 s for its first map.
    assert!(
        took < Duration::from_millis(SLOW_MS),
        "the job took {took:?}, as long as the straggler"
    );
    println!("job with a straggler took {:.1} s", took.as_secs_f64());
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

per_backend!(backups_beat_a_straggler_in_both_phases);
