//! Zombie workers: a worker frozen (SIGSTOP) past its lease while its task
//! runs again elsewhere, then thawed (SIGCONT), has its late completion
//! refused and recorded, and changes nothing.

use std::time::{Duration, Instant};

use examples_wasm::MISBEHAVE;
use protocol::api::{AttemptInfo, JobInfo};
use protocol::{AttemptOutcome, JobId, TaskKind};

use super::{Chaos, JOB_TIMEOUT, Options, Seed, assert_output, job_spec, now_ms};
use crate::cluster::{local_run, per_backend};

/// Freezes worker `zombie` (SIGSTOP) while it runs an attempt of `kind`
/// that started at least `after` ago; returns that attempt, still running
/// when the worker froze.
async fn freeze_during(
    chaos: &mut Chaos,
    job: JobId,
    zombie: usize,
    kind: TaskKind,
    after: Duration,
) -> AttemptInfo {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        chaos.assert_running();
        if Instant::now() > deadline {
            chaos
                .fail(job, &format!("worker {zombie} never ran a {kind:?} task"))
                .await;
        }
        let workers = chaos.api.workers().await;
        let running = chaos.api.attempts(job).await.into_iter().find(|a| {
            a.kind == kind
                && a.outcome == AttemptOutcome::Running
                && a.started_at + after.as_millis() as i64 <= now_ms()
                && chaos.worker_index(&a.worker, &workers) == Some(zombie)
        });
        let Some(attempt) = running else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        chaos.signal_worker(zombie, libc::SIGSTOP);
        let now = chaos.api.attempts(job).await;
        let still = now.iter().find(|a| a.id == attempt.id).unwrap();
        if still.outcome == AttemptOutcome::Running {
            return attempt;
        }
        // It finished before the signal landed; try the next one.
        chaos.signal_worker(zombie, libc::SIGCONT);
    }
}

/// Waits until `frozen`'s task is completed by another attempt; returns
/// that attempt.
async fn wait_for_takeover(chaos: &mut Chaos, job: JobId, frozen: &AttemptInfo) -> AttemptInfo {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let attempts = chaos.api.attempts(job).await;
        if let Some(winner) = attempts
            .iter()
            .find(|a| a.task == frozen.task && a.outcome == AttemptOutcome::Succeeded)
        {
            assert_ne!(
                winner.id, frozen.id,
                "the frozen attempt completed: {winner:?}"
            );
            return winner.clone();
        }
        if Instant::now() > deadline {
            chaos
                .fail(job, &format!("nobody took over {frozen:?}"))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the thawed `frozen` attempt has reported and been refused.
async fn wait_for_refusal(chaos: &mut Chaos, job: JobId, frozen: &AttemptInfo, seed: &Seed) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        chaos.assert_running();
        let attempts = chaos.api.attempts(job).await;
        let now = attempts.iter().find(|a| a.id == frozen.id).unwrap();
        if now.outcome == AttemptOutcome::Superseded {
            return;
        }
        if Instant::now() > deadline {
            chaos
                .fail(
                    job,
                    &format!(
                        "the zombie's late report of {:?} task {} was not recorded as superseded \
                         within 30 s: {now:?} ({seed})",
                        frozen.kind, frozen.index
                    ),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A worker frozen (SIGSTOP) past its lease while it runs a map, then
/// while it runs a reduce: each time the task runs again and commits
/// elsewhere, and when the worker is thawed (SIGCONT) its late completion
/// is refused and recorded as superseded, and the committed output does
/// not change.
///
/// Three reduces on three single-slot workers run in one wave, and the
/// worker is frozen a while into its reduce, when the other reducers have
/// fetched their input: reducers that find a frozen map-output server are
/// the subject of `lost.rs`.
async fn zombie_worker_is_refused(backend: &str) {
    let seed = Seed::new("zombie_worker_is_refused");
    let mut rng = seed.rng(1);
    let reducers = 3;
    let expected = local_run(MISBEHAVE, reducers).await;
    let options = Options {
        workers: 3,
        slots: 1,
        dead_after_secs: 2,
        ..Options::default()
    };
    let mut chaos = Chaos::start(backend, options).await;
    let sha = chaos.api.upload_module(MISBEHAVE).await;
    let inputs = chaos.api.upload_texts("books").await;
    let args = [
        ("mode", "stall".into()),
        ("stall-min-ms", "800".into()),
        ("stall-max-ms", "1500".into()),
        ("seed", seed.value().to_string()),
        ("reduce-mode", "sleep".into()),
        ("sleep-ms", "2000".into()),
    ];
    let job = chaos
        .api
        .submit(&job_spec(&sha, &inputs, reducers, &args))
        .await;
    let zombie = rng.below(3) as usize;

    let frozen = freeze_during(&mut chaos, job, zombie, TaskKind::Map, Duration::ZERO).await;
    wait_for_takeover(&mut chaos, job, &frozen).await;
    chaos.signal_worker(zombie, libc::SIGCONT);
    wait_for_refusal(&mut chaos, job, &frozen, &seed).await;

    let settled = Duration::from_millis(600);
    let frozen = freeze_during(&mut chaos, job, zombie, TaskKind::Reduce, settled).await;
    wait_for_takeover(&mut chaos, job, &frozen).await;
    let part = worker::local::part_name(frozen.index);
    let committed = chaos.api.try_download(job, &part).await.unwrap();
    assert_eq!(
        committed.as_ref(),
        Some(&expected.parts[&part]),
        "{part} as committed by the new attempt ({seed})"
    );
    chaos.signal_worker(zombie, libc::SIGCONT);
    wait_for_refusal(&mut chaos, job, &frozen, &seed).await;
    let after = chaos.api.try_download(job, &part).await.unwrap();
    assert_eq!(
        after, committed,
        "{part} changed after the zombie woke ({seed})"
    );

    let info: JobInfo = chaos.wait(job, JOB_TIMEOUT, &seed).await;
    assert_output(&chaos.api, &info, &expected, &seed).await;
}

per_backend!(zombie_worker_is_refused);
