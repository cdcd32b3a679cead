//! Map outputs lost with their worker. The worker holding the most
//! completed map outputs is SIGKILLed while the reduces run, or frozen
//! (SIGSTOP) just before they start, so that reducers find its map-output
//! server silent. Either way its map tasks run again on the other workers
//! and the job finishes with the local run's output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use examples_wasm::MISBEHAVE;
use protocol::api::{AttemptInfo, JobInfo, TaskInfo};
use protocol::{AttemptOutcome, JobId, JobState, TaskKind, TaskState, WorkerId};

use super::{Chaos, JOB_TIMEOUT, NO_SEED, Options, Seed, assert_output, job_spec, now_ms};
use crate::cluster::{local_run, per_backend};

const REDUCERS: u32 = 3;

/// Three single-slot workers and a job over the eight texts.
async fn start(backend: &str, args: &[(&str, String)]) -> (Chaos, JobId) {
    let options = Options {
        workers: 3,
        slots: 1,
        dead_after_secs: 2,
        ..Options::default()
    };
    let chaos = Chaos::start(backend, options).await;
    let sha = chaos.api.upload_module(MISBEHAVE).await;
    let inputs = chaos.api.upload_texts("books").await;
    let job = chaos
        .api
        .submit(&job_spec(&sha, &inputs, REDUCERS, args))
        .await;
    (chaos, job)
}

/// Polls the job until `ready`.
async fn wait_for(
    chaos: &mut Chaos,
    job: JobId,
    what: &str,
    ready: impl Fn(&JobInfo) -> bool,
) -> JobInfo {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        chaos.assert_running();
        let info = chaos.api.job(job).await;
        if ready(&info) {
            return info;
        }
        if info.state.is_finished() || Instant::now() > deadline {
            chaos
                .fail(job, &format!("the job never reached {what}"))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The worker holding the most completed map outputs among those not
/// running a map, and the map tasks it holds.
fn busiest_holder(tasks: &[TaskInfo]) -> (WorkerId, Vec<TaskInfo>) {
    let busy: Vec<&WorkerId> = tasks
        .iter()
        .filter(|t| t.kind == TaskKind::Map && t.state == TaskState::InProgress)
        .filter_map(|t| t.worker.as_ref())
        .collect();
    let mut holdings: BTreeMap<WorkerId, Vec<TaskInfo>> = BTreeMap::new();
    for task in tasks
        .iter()
        .filter(|t| t.kind == TaskKind::Map && t.state == TaskState::Completed)
    {
        let worker = task.worker.clone().expect("a completed map has a worker");
        if !busy.contains(&&worker) {
            holdings.entry(worker).or_default().push(task.clone());
        }
    }
    holdings
        .into_iter()
        .max_by_key(|(_, held)| held.len())
        .expect("a worker holding map outputs")
}

/// Asserts that each of `held` ran again, after `since`, on a worker other
/// than `victim`, and that the task's output is now that attempt's.
async fn assert_ran_again_elsewhere(
    chaos: &Chaos,
    job: JobId,
    victim: &WorkerId,
    held: &[TaskInfo],
    since: i64,
    seed: &dyn std::fmt::Display,
) {
    let attempts = chaos.api.attempts(job).await;
    let tasks = chaos.api.tasks(job).await;
    for lost in held {
        let rerun: Vec<&AttemptInfo> = attempts
            .iter()
            .filter(|a| {
                a.task == lost.id
                    && a.outcome == AttemptOutcome::Succeeded
                    && a.started_at >= since
                    && &a.worker != victim
            })
            .collect();
        let now = tasks.iter().find(|t| t.id == lost.id).unwrap();
        assert!(
            rerun.iter().any(|a| now.worker.as_ref() == Some(&a.worker)),
            "map task {} of the lost worker {victim} did not run again elsewhere ({seed}): \
             {now:?} {attempts:#?}",
            lost.index
        );
    }
}

/// SIGKILLs the busiest map-output holder once the reduces run.
async fn lost_map_output_is_recomputed(backend: &str) {
    let expected = local_run(MISBEHAVE, REDUCERS).await;
    let args = [("reduce-mode", "sleep".into()), ("sleep-ms", "3000".into())];
    let (mut chaos, job) = start(backend, &args).await;
    wait_for(&mut chaos, job, "its reduces", |info| {
        info.state == JobState::Reducing && info.reduce.in_progress > 0
    })
    .await;
    let (victim, held) = busiest_holder(&chaos.api.tasks(job).await);
    let workers = chaos.api.workers().await;
    let index = chaos.worker_index(&victim, &workers).expect("one of ours");
    let killed_at = now_ms();
    chaos.kill_worker(index);

    let info = chaos.wait(job, JOB_TIMEOUT, &NO_SEED).await;
    assert_output(&chaos.api, &info, &expected, &NO_SEED).await;
    assert_ran_again_elsewhere(&chaos, job, &victim, &held, killed_at, &NO_SEED).await;
}

/// Freezes an idle worker holding map outputs while the last maps run, so
/// that the reducers starting right after are sent to a server that
/// accepts connections and never answers. They give up on it (a bounded
/// wait, not the request timeout), its maps run again elsewhere, and the
/// job finishes.
async fn frozen_map_output_server_is_given_up(backend: &str) {
    let seed = Seed::new("frozen_map_output_server_is_given_up");
    let expected = local_run(MISBEHAVE, REDUCERS).await;
    let args = [
        ("mode", "stall".into()),
        ("stall-min-ms", "300".into()),
        ("stall-max-ms", "900".into()),
        ("seed", seed.value().to_string()),
    ];
    let (mut chaos, job) = start(backend, &args).await;
    wait_for(&mut chaos, job, "its last maps", |info| {
        info.state == JobState::Mapping && info.map.idle == 0 && info.map.in_progress <= 2
    })
    .await;
    let (victim, held) = busiest_holder(&chaos.api.tasks(job).await);
    let workers = chaos.api.workers().await;
    let index = chaos.worker_index(&victim, &workers).expect("one of ours");
    let frozen_at = now_ms();
    let started = Instant::now();
    chaos.signal_worker(index, libc::SIGSTOP);

    let info = chaos.wait(job, JOB_TIMEOUT, &seed).await;
    eprintln!(
        "{seed}: the job finished {:.1} s after a map-output holder froze",
        started.elapsed().as_secs_f64()
    );
    assert_output(&chaos.api, &info, &expected, &seed).await;
    assert_ran_again_elsewhere(&chaos, job, &victim, &held, frozen_at, &seed).await;
}

per_backend!(
    lost_map_output_is_recomputed,
    frozen_map_output_server_is_given_up,
);
