//! The lab's crash test: workers SIGKILLed at random moments and
//! respawned while every task stalls for a random time.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use examples_wasm::MISBEHAVE;
use protocol::api::WorkerInfo;
use protocol::{AttemptId, AttemptOutcome, WorkerId};

use super::{Chaos, JOB_TIMEOUT, Options, OutputWatch, Seed, assert_output, job_spec};
use crate::cluster::{local_run, per_backend};

/// How long the crash test keeps killing workers; after that the job is
/// left to finish.
const KILLING_FOR: Duration = Duration::from_secs(40);

/// The lab's crash test: about a third of the task attempts lose their
/// worker to a SIGKILL at a random moment (the worker comes back after a
/// random pause, as a new process on the same data directory), every task
/// stalls for a random time, and the output still equals the local run. A
/// watcher checks throughout that every part the API lists is complete and
/// final, and that no other part can be downloaded.
async fn workers_crash_and_restart(backend: &str) {
    let seed = Seed::new("workers_crash_and_restart");
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
        ("reduce-mode", "stall".into()),
        ("stall-min-ms", "100".into()),
        ("stall-max-ms", "2000".into()),
        ("seed", seed.value().to_string()),
    ];
    let job = chaos
        .api
        .submit(&job_spec(&sha, &inputs, reducers, &args))
        .await;

    let started = Instant::now();
    let mut watch = OutputWatch::new();
    let mut seen: HashSet<AttemptId> = HashSet::new();
    let mut kills: Vec<(Instant, (usize, WorkerId))> = Vec::new();
    let mut respawns: Vec<(Instant, usize)> = Vec::new();
    let (mut doomed, mut killed) = (0, 0);
    let info = loop {
        chaos.assert_running();
        let info = chaos.api.job(job).await;
        if info.state.is_finished() {
            break info;
        }
        if started.elapsed() > JOB_TIMEOUT {
            chaos
                .fail(job, &format!("job {job} did not finish in time ({seed})"))
                .await;
        }
        let now = Instant::now();
        let workers: Vec<WorkerInfo> = chaos.api.workers().await;
        if now < started + KILLING_FOR {
            for attempt in chaos.api.attempts(job).await {
                if attempt.outcome != AttemptOutcome::Running || !seen.insert(attempt.id) {
                    continue;
                }
                if rng.one_in(3)
                    && let Some(index) = chaos.worker_index(&attempt.worker, &workers)
                {
                    doomed += 1;
                    kills.push((now + rng.millis(0, 1500), (index, attempt.worker)));
                }
            }
        }
        for (_, (index, id)) in take_due(&mut kills, now) {
            // Only the incarnation that ran the attempt; a respawned worker
            // has a new id.
            if chaos.worker_index(&id, &workers) == Some(index) {
                chaos.kill_worker(index);
                killed += 1;
                respawns.push((now + rng.millis(0, 1000), index));
            }
        }
        for (_, index) in take_due(&mut respawns, now) {
            chaos.respawn_worker(index);
        }
        watch.check(&chaos.api, job, &expected, &seed).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (_, index) in respawns.drain(..) {
        chaos.respawn_worker(index);
    }

    assert_output(&chaos.api, &info, &expected, &seed).await;
    watch.check(&chaos.api, job, &expected, &seed).await;
    let attempts = chaos.api.attempts(job).await;
    let tasks = chaos.api.tasks(job).await;
    let lost = attempts
        .iter()
        .filter(|a| a.outcome == AttemptOutcome::Lost)
        .count();
    eprintln!(
        "{seed}: {} tasks, {} attempts ({lost} lost), {doomed} attempts doomed, {killed} workers \
         killed, {} of {reducers} parts seen committed while running, {:.1} s",
        tasks.len(),
        attempts.len(),
        watch.committed(),
        started.elapsed().as_secs_f64()
    );
    assert!(killed > 0, "no worker was killed ({seed})");
    for attempt in &attempts {
        assert!(
            attempt.outcome != AttemptOutcome::Running,
            "{attempt:?} still runs after the job ended ({seed})"
        );
    }
}

/// Removes and returns the entries of `list` whose time has come.
fn take_due<T>(list: &mut Vec<(Instant, T)>, now: Instant) -> Vec<(Instant, T)> {
    let (due, later): (Vec<_>, Vec<_>) = list.drain(..).partition(|(at, _)| *at <= now);
    *list = later;
    due
}

per_backend!(workers_crash_and_restart);
