//! The coordinator dies: SIGKILLed mid-map and mid-reduce and started again
//! on the same data, or, on Postgres, one of two coordinators sharing the
//! database dies and the other carries the cluster. Workers are never
//! restarted; they find the coordinator again by themselves.

use std::time::{Duration, Instant};

use examples_wasm::MISBEHAVE;
use protocol::api::JobInfo;
use protocol::{JobId, JobState};

use super::proxy::failover;
use super::{
    Api, Chaos, JOB_TIMEOUT, NewWorker, Options, OutputWatch, Seed, assert_output, job_spec,
};
use crate::cluster::{Expected, backend_available, local_run, per_backend};

const REDUCERS: u32 = 4;

/// Map and reduce tasks that stall 0.3-1.2 s each, so both phases last long
/// enough to kill a coordinator in them.
async fn submit_stalling_job(chaos: &Chaos, seed: &Seed) -> JobId {
    let sha = chaos.api.upload_module(MISBEHAVE).await;
    let inputs = chaos.api.upload_texts("books").await;
    let args = [
        ("mode", "stall".into()),
        ("reduce-mode", "stall".into()),
        ("stall-min-ms", "300".into()),
        ("stall-max-ms", "1200".into()),
        ("seed", seed.value().to_string()),
    ];
    chaos
        .api
        .submit(&job_spec(&sha, &inputs, REDUCERS, &args))
        .await
}

/// Polls the job (through whichever coordinator answers) until `ready`,
/// checking the committed outputs meanwhile.
async fn wait_until(
    chaos: &mut Chaos,
    job: JobId,
    watch: &mut OutputWatch,
    expected: &Expected,
    seed: &Seed,
    what: &str,
    ready: impl Fn(&JobInfo) -> bool,
) -> JobInfo {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        chaos.assert_running();
        if let Ok(info) = chaos.api.try_get::<JobInfo>(&format!("/jobs/{job}")).await {
            if ready(&info) {
                return info;
            }
            if info.state.is_finished() {
                chaos
                    .fail(job, &format!("the job ended before {what} ({seed})"))
                    .await;
            }
        }
        if Instant::now() > deadline {
            chaos
                .fail(job, &format!("waited too long for {what} ({seed})"))
                .await;
        }
        watch.check(&chaos.api, job, expected, seed).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mid_map(info: &JobInfo) -> bool {
    info.state == JobState::Mapping && info.map.completed >= 3
}

fn mid_reduce(info: &JobInfo) -> bool {
    info.state == JobState::Reducing && info.reduce.in_progress > 0
}

/// Asserts that every worker process is registered and alive.
async fn assert_workers_reconnected(chaos: &mut Chaos, seed: &Seed) {
    chaos.assert_running();
    let registered = chaos.api.workers().await;
    for index in 0..chaos.worker_count() {
        let alive = chaos
            .worker_ids(index, &registered)
            .iter()
            .any(|id| registered.iter().any(|w| &w.id == id && w.state == "alive"));
        assert!(
            alive,
            "worker {index} is not registered alive: {registered:#?} ({seed})"
        );
    }
}

/// SIGKILLs the only coordinator mid-map and again mid-reduce and starts it
/// again on the same data directory and database after a random pause
/// (shorter or longer than the workers' lease).
async fn coordinator_restarts(backend: &str) {
    let seed = Seed::new("coordinator_restarts");
    let mut rng = seed.rng(1);
    let expected = local_run(MISBEHAVE, REDUCERS).await;
    let options = Options {
        workers: 3,
        slots: 1,
        dead_after_secs: 3,
        ..Options::default()
    };
    let mut chaos = Chaos::start(backend, options).await;
    let job = submit_stalling_job(&chaos, &seed).await;
    let mut watch = OutputWatch::new();

    for (phase, ready) in [
        ("mid-map", mid_map as fn(&JobInfo) -> bool),
        ("mid-reduce", mid_reduce),
    ] {
        wait_until(&mut chaos, job, &mut watch, &expected, &seed, phase, ready).await;
        chaos.kill_coordinator(0);
        let pause = rng.millis(200, 5000);
        eprintln!("{seed}: coordinator killed {phase}, restarting in {pause:?}");
        tokio::time::sleep(pause).await;
        chaos.restart_coordinator(0).await;
    }

    let info = chaos.wait(job, JOB_TIMEOUT, &seed).await;
    assert_output(&chaos.api, &info, &expected, &seed).await;
    watch.check(&chaos.api, job, &expected, &seed).await;
    assert_workers_reconnected(&mut chaos, &seed).await;
}

per_backend!(coordinator_restarts);

/// Two coordinators share one Postgres database and data directory;
/// workers and this test reach them through a proxy that spreads
/// connections over both and fails over to whichever is up (a worker takes
/// one coordinator URL, as a load balancer would give it). One coordinator
/// is SIGKILLed mid-map and the job goes on through the other; it comes
/// back, the other is SIGKILLed mid-reduce, and the job finishes through
/// the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_share_postgres() {
    if !backend_available("postgres") {
        eprintln!(
            "skipped: set {} to test Postgres",
            crate::cluster::DATABASE_URL_VAR
        );
        return;
    }
    let seed = Seed::new("two_coordinators_share_postgres");
    let expected = local_run(MISBEHAVE, REDUCERS).await;
    let options = Options {
        coordinators: 2,
        workers: 0,
        dead_after_secs: 3,
        ..Options::default()
    };
    let mut chaos = Chaos::start("postgres", options).await;
    let proxy = failover(vec![chaos.coordinator_addr(0), chaos.coordinator_addr(1)]).await;
    for _ in 0..3 {
        let worker = NewWorker {
            coordinator: Some(proxy.url()),
            ..NewWorker::default()
        };
        chaos.add_worker(1, worker);
    }
    chaos.api = Api::new(&proxy.url(), &chaos.user_token());
    chaos.wait_for_workers().await;
    let job = submit_stalling_job(&chaos, &seed).await;
    let mut watch = OutputWatch::new();

    let before = wait_until(
        &mut chaos, job, &mut watch, &expected, &seed, "mid-map", mid_map,
    )
    .await;
    chaos.kill_coordinator(0);
    let through_second = |info: &JobInfo| {
        info.state != JobState::Mapping || info.map.completed >= before.map.completed + 3
    };
    wait_until(
        &mut chaos,
        job,
        &mut watch,
        &expected,
        &seed,
        "maps done through the second coordinator",
        through_second,
    )
    .await;
    chaos.restart_coordinator(0).await;

    wait_until(
        &mut chaos,
        job,
        &mut watch,
        &expected,
        &seed,
        "mid-reduce",
        mid_reduce,
    )
    .await;
    chaos.kill_coordinator(1);
    let info = chaos.wait(job, JOB_TIMEOUT, &seed).await;
    assert_output(&chaos.api, &info, &expected, &seed).await;
    watch.check(&chaos.api, job, &expected, &seed).await;
    assert_workers_reconnected(&mut chaos, &seed).await;
}
