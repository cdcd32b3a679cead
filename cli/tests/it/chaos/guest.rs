//! Guests that trap, loop or exhaust memory fail their own job, with the
//! reason, after the attempts they are allowed; the worker processes live
//! on and another job on them finishes correctly.

use examples_wasm::{MISBEHAVE, WORDCOUNT};
use protocol::api::{AttemptInfo, JobInfo};
use protocol::{AttemptOutcome, JobState, Limits, TaskKind};

use super::{Chaos, JOB_TIMEOUT, NO_SEED, Options, assert_output, job_spec};
use crate::cluster::{data, local_run, per_backend};

/// Asserts that `info` failed after `attempts` failed attempts of its one
/// map task, each failing with `reason`, and that the job's error says so.
async fn assert_failed_with(chaos: &Chaos, info: &JobInfo, attempts: u32, reason: &str) {
    assert_eq!(info.state, JobState::Failed, "{info:?}");
    let error = info.error.as_deref().unwrap_or_default();
    assert!(
        error.contains(reason) && error.contains(&format!("failed {attempts} times")),
        "job {} error {error:?} should name {reason:?} and {attempts} attempts",
        info.id
    );
    let tasks = chaos.api.tasks(info.id).await;
    let map = tasks
        .iter()
        .find(|t| t.kind == TaskKind::Map)
        .expect("a map task");
    assert_eq!(map.failures, attempts, "{map:?}");
    let failed: Vec<AttemptInfo> = chaos
        .api
        .attempts(info.id)
        .await
        .into_iter()
        .filter(|a| a.task == map.id && a.outcome == AttemptOutcome::Failed)
        .collect();
    assert_eq!(failed.len() as u32, attempts, "{failed:#?}");
    for attempt in &failed {
        let why = attempt.error.as_deref().unwrap_or_default();
        assert!(
            why.contains(reason),
            "attempt error {why:?} lacks {reason:?}"
        );
    }
}

async fn guest_failures_fail_only_their_job(backend: &str) {
    let expected = local_run(WORDCOUNT, 3).await;
    let options = Options {
        workers: 2,
        slots: 2,
        dead_after_secs: 3,
        ..Options::default()
    };
    let mut chaos = Chaos::start(backend, options).await;
    let misbehave = chaos.api.upload_module(MISBEHAVE).await;
    let wordcount = chaos.api.upload_module(WORDCOUNT).await;
    let books = chaos.api.upload_texts("books").await;
    // One split each, so a failing job is one task failing again and again.
    chaos
        .api
        .upload(&data("pg-metamorphosis.txt"), "small/pg-metamorphosis.txt")
        .await;
    let failing = |mode: &str, limits: Limits, max_attempts: u32| {
        let mut spec = job_spec(&misbehave, "small/*.txt", 1, &[("mode", mode.to_owned())]);
        spec.limits = limits;
        spec.max_attempts = max_attempts;
        spec
    };
    let trap = chaos
        .api
        .submit(&failing("panic", Limits::default(), 3))
        .await;
    let endless = chaos
        .api
        .submit(&failing(
            "loop",
            Limits {
                timeout_secs: 2,
                ..Limits::default()
            },
            2,
        ))
        .await;
    let bomb = chaos
        .api
        .submit(&failing(
            "alloc",
            Limits {
                memory_mib: 64,
                ..Limits::default()
            },
            2,
        ))
        .await;
    let good = chaos
        .api
        .submit(&job_spec(&wordcount, &books, 3, &[]))
        .await;

    let trap = chaos.wait(trap, JOB_TIMEOUT, &NO_SEED).await;
    assert_failed_with(&chaos, &trap, 3, "deliberate panic").await;
    let endless = chaos.wait(endless, JOB_TIMEOUT, &NO_SEED).await;
    assert_failed_with(&chaos, &endless, 2, "time limit of 2s").await;
    let bomb = chaos.wait(bomb, JOB_TIMEOUT, &NO_SEED).await;
    assert_failed_with(&chaos, &bomb, 2, "memory limit of 64 MiB").await;
    let good = chaos.wait(good, JOB_TIMEOUT, &NO_SEED).await;
    assert_output(&chaos.api, &good, &expected, &NO_SEED).await;
    chaos.assert_running();
}

per_backend!(guest_failures_fail_only_their_job);
