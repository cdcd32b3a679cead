//! The MapReduce lab's tests, ported: word count and indexer on worker
//! processes, map and reduce parallelism, one attempt per task when
//! nothing fails, and no early exit of `quern submit --wait`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::{Duration, Instant};

use examples_wasm::{INDEXER, MISBEHAVE, WORDCOUNT};
use protocol::api::{AttemptInfo, WorkerInfo};
use protocol::{AttemptOutcome, JobState, TaskKind};

use super::{Chaos, JOB_TIMEOUT, NO_SEED, Options, Seed, assert_output, job_spec, now_ms};
use crate::cluster::{Process, local_run, os_args, per_backend, texts};

async fn run_on_processes(backend: &str, module: &'static str, workers: usize, reducers: u32) {
    let expected = local_run(module, reducers).await;
    let options = Options {
        workers,
        slots: 2,
        dead_after_secs: 3,
        ..Options::default()
    };
    let mut chaos = Chaos::start(backend, options).await;
    let sha = chaos.api.upload_module(module).await;
    let inputs = chaos.api.upload_texts("books").await;
    let job = chaos
        .api
        .submit(&job_spec(&sha, &inputs, reducers, &[]))
        .await;
    let info = chaos.wait(job, JOB_TIMEOUT, &NO_SEED).await;
    assert_output(&chaos.api, &info, &expected, &NO_SEED).await;
    chaos.assert_running();
}

async fn wordcount_3_worker_processes(backend: &str) {
    run_on_processes(backend, WORDCOUNT, 3, 5).await;
}

async fn indexer_2_worker_processes(backend: &str) {
    run_on_processes(backend, INDEXER, 2, 3).await;
}

/// Whether two finished attempts ran at the same time.
fn overlap(a: &AttemptInfo, b: &AttemptInfo) -> bool {
    let (Some(a_end), Some(b_end)) = (a.ended_at, b.ended_at) else {
        return false;
    };
    a.started_at < b_end && b.started_at < a_end
}

/// Runs misbehave with `args` on two single-slot workers and checks that
/// the two workers ran attempts of `kind` at the same time, and each ran at
/// least one.
async fn runs_in_parallel(backend: &str, kind: TaskKind, reducers: u32, args: &[(&str, String)]) {
    let expected = local_run(MISBEHAVE, reducers).await;
    let options = Options {
        workers: 2,
        slots: 1,
        dead_after_secs: 3,
        ..Options::default()
    };
    let mut chaos = Chaos::start(backend, options).await;
    let sha = chaos.api.upload_module(MISBEHAVE).await;
    let inputs = chaos.api.upload_texts("books").await;
    let job = chaos
        .api
        .submit(&job_spec(&sha, &inputs, reducers, args))
        .await;
    let info = chaos.wait(job, JOB_TIMEOUT, &NO_SEED).await;
    // Misbehave counts words whatever it sleeps, so the local run without
    // arguments is the oracle.
    assert_output(&chaos.api, &info, &expected, &NO_SEED).await;

    let workers: Vec<WorkerInfo> = chaos.api.workers().await;
    assert_eq!(workers.len(), 2, "{workers:?}");
    let ran: Vec<AttemptInfo> = chaos
        .api
        .attempts(job)
        .await
        .into_iter()
        .filter(|a| a.kind == kind && a.outcome == AttemptOutcome::Succeeded)
        .collect();
    for worker in &workers {
        assert!(
            ran.iter().any(|a| a.worker == worker.id),
            "worker {} ran no {kind:?} task: {ran:#?}",
            worker.id
        );
    }
    let parallel = ran
        .iter()
        .any(|a| ran.iter().any(|b| a.worker != b.worker && overlap(a, b)));
    assert!(
        parallel,
        "no two {kind:?} attempts on different workers overlap: {ran:#?}"
    );
}

async fn map_parallelism(backend: &str) {
    let args = [("mode", "sleep".into()), ("sleep-ms", "1000".into())];
    runs_in_parallel(backend, TaskKind::Map, 2, &args).await;
}

async fn reduce_parallelism(backend: &str) {
    let args = [("reduce-mode", "sleep".into()), ("sleep-ms", "1000".into())];
    runs_in_parallel(backend, TaskKind::Reduce, 4, &args).await;
}

/// Map tasks of 2-5 s, nothing injected: every task runs exactly once (no
/// lease runs out while a worker is busy, no backup starts).
async fn one_attempt_per_task(backend: &str) {
    let seed = Seed::new("one_attempt_per_task");
    let expected = local_run(MISBEHAVE, 3).await;
    let options = Options {
        workers: 3,
        slots: 2,
        dead_after_secs: 3,
        ..Options::default()
    };
    let mut chaos = Chaos::start(backend, options).await;
    let sha = chaos.api.upload_module(MISBEHAVE).await;
    let inputs = chaos.api.upload_texts("books").await;
    let args = [
        ("mode", "stall".into()),
        ("stall-min-ms", "2000".into()),
        ("stall-max-ms", "5000".into()),
        ("seed", seed.value().to_string()),
    ];
    let job = chaos.api.submit(&job_spec(&sha, &inputs, 3, &args)).await;
    let info = chaos.wait(job, JOB_TIMEOUT, &seed).await;
    assert_output(&chaos.api, &info, &expected, &seed).await;

    let tasks = chaos.api.tasks(job).await;
    let attempts = chaos.api.attempts(job).await;
    assert_eq!(tasks.len(), expected.map_tasks + 3);
    for task in &tasks {
        let mine: Vec<&AttemptInfo> = attempts.iter().filter(|a| a.task == task.id).collect();
        assert!(
            task.attempts == 1 && mine.len() == 1,
            "{:?} task {} ran {} times ({seed}): {mine:#?}",
            task.kind,
            task.index,
            mine.len()
        );
        assert_eq!(mine[0].outcome, AttemptOutcome::Succeeded, "{seed}");
        assert!(!mine[0].backup, "{:?} ({seed})", mine[0]);
    }
    chaos.assert_running();
}

/// `quern submit --wait --download` returns only once every output is
/// committed and complete, and the workers are still there when it does.
async fn submit_wait_does_not_exit_early(backend: &str) {
    let seed = Seed::new("submit_wait_does_not_exit_early");
    let reducers = 5;
    let expected = local_run(MISBEHAVE, reducers).await;
    let options = Options {
        workers: 2,
        slots: 2,
        dead_after_secs: 3,
        ..Options::default()
    };
    let mut chaos = Chaos::start(backend, options).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Reduces that take 0.2-2.5 s each commit their parts at different
    // times; an early return would miss the late ones.
    let mut args = os_args(&[&"submit", &MISBEHAVE]);
    args.extend(texts().into_iter().map(OsString::from));
    let reducers_text = reducers.to_string();
    let seed_arg = format!("seed={}", seed.value());
    args.extend(os_args(&[
        &"--reducers",
        &reducers_text,
        &"--split-size",
        &"256KiB",
        &"--arg",
        &"reduce-mode=stall",
        &"--arg",
        &"stall-min-ms=200",
        &"--arg",
        &"stall-max-ms=2500",
        &"--arg",
        &seed_arg,
        &"--wait",
        &"--download",
        &out,
        &"--coordinator",
        &chaos.api.url,
        &"--token",
        &chaos.user_token(),
    ]));
    let mut submit = Process::spawn("submit", tmp.path(), &args);
    let deadline = Instant::now() + JOB_TIMEOUT;
    let exited_at = loop {
        chaos.assert_running();
        if let Some(status) = submit.exited() {
            assert!(
                status.success(),
                "quern submit failed ({status}, {seed})\n{}\n{}",
                submit.logs(),
                chaos.logs()
            );
            break now_ms();
        }
        assert!(
            Instant::now() < deadline,
            "quern submit still runs after {JOB_TIMEOUT:?} ({seed})\n{}",
            submit.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let jobs: Vec<protocol::api::JobInfo> = chaos.api.get("/jobs").await;
    assert_eq!(jobs.len(), 1, "{seed}");
    let info = &jobs[0];
    assert_eq!(info.state, JobState::Succeeded, "{:?} ({seed})", info.error);
    let finished_at = info.finished_at.expect("a finished job has an end time");
    assert!(
        finished_at <= exited_at,
        "quern submit returned at {exited_at}, before the job finished at {finished_at} ({seed})"
    );
    for attempt in chaos.api.attempts(info.id).await {
        let ended = attempt.ended_at.unwrap_or(i64::MAX);
        assert!(
            ended <= exited_at,
            "attempt {attempt:?} had not ended when quern submit returned at {exited_at} ({seed})"
        );
    }
    let downloaded: BTreeMap<String, String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    crate::cluster::assert_same_parts(&downloaded, &expected.parts);
    assert_output(&chaos.api, info, &expected, &seed).await;
    // Workers serve until told to stop; the job's end is no reason to exit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    chaos.assert_running();
}

per_backend!(
    wordcount_3_worker_processes,
    indexer_2_worker_processes,
    map_parallelism,
    reduce_parallelism,
    one_attempt_per_task,
    submit_wait_does_not_exit_early,
);
