//! The conformance suite of the `Store` trait: every test is written once
//! and runs against SQLite and, when `TEST_DATABASE_URL` is set, Postgres.
//! Time is the `now` each call is given, so nothing here sleeps.

mod backups;
mod catalog;
mod concurrency;
mod failures;
mod lifecycle;
mod liveness;
mod scheduling;

use std::sync::Arc;

use protocol::api::{AttemptInfo, TaskInfo};
use protocol::worker_api::{AttemptResult, CompleteRequest, Failure, Lease};
use protocol::{
    AttemptId, Counters, JobId, JobSpec, MapOutputIndex, PartitionIndex, TaskKind, WorkerId,
};
use server::store::{Completion, JobRecord, Liveness, MapInputDoc, NewJob, Store};

/// Generates one `#[tokio::test]` per backend for each suite function, as
/// `store::sqlite::<name>` and `store::postgres::<name>`.
macro_rules! conformance {
    ($($group:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::run("sqlite", super::$group::$name).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::run("postgres", super::$group::$name).await;
                }
            )*
        }
    };
}

conformance!(
    catalog::tokens,
    catalog::modules,
    catalog::blobs,
    catalog::commits_are_durable,
    lifecycle::job_runs_from_maps_to_success,
    lifecycle::listings_return_what_was_written,
    scheduling::concurrent_leases_hand_out_each_task_once,
    scheduling::jobs_take_turns,
    scheduling::cancel_stops_a_job,
    liveness::duplicate_and_foreign_completions_are_refused,
    liveness::completion_after_expiry_is_superseded,
    liveness::heartbeat_renews_and_reports,
    liveness::dead_worker_loses_its_tasks_and_map_outputs,
    liveness::unknown_workers_get_no_lease,
    failures::guest_failures_use_up_attempts,
    failures::host_failures_do_not_count,
    failures::fetch_failure_reruns_the_map,
    failures::a_stale_fetch_failure_keeps_the_new_map_output,
    failures::counters_saturate_at_the_ends_of_i64,
    backups::stragglers_get_one_backup_and_the_first_finish_wins,
    backups::a_dead_primary_hands_over_to_its_backup,
    backups::a_backup_reduce_stages_and_the_loser_is_discarded,
    concurrency::concurrent_clients_neither_deadlock_nor_lose_updates,
    concurrency::the_last_completions_of_a_phase_move_the_job_on,
);

/// The liveness rules of every test.
const LIVE: Liveness = Liveness {
    lease_ms: 10_000,
    dead_after_ms: 10_000,
};

/// The shuffle secret of every job.
const JOB_TOKEN: &str = "job-secret";

/// The module every job runs.
fn module() -> String {
    "ab".repeat(32)
}

/// A spec with R reducers.
fn spec(reducers: u32) -> JobSpec {
    JobSpec::new(module(), vec!["books/*.txt".into()], reducers)
}

/// The input of map task `map`: bytes `100 * map .. 100 * map + 100`.
fn map_input(map: u32) -> MapInputDoc {
    MapInputDoc {
        path: format!("books/book-{map}.txt"),
        file_name: format!("book-{map}.txt"),
        start: u64::from(map) * 100,
        end: u64::from(map) * 100 + 100,
        size: Some(u64::from(map) * 100 + 150),
    }
}

/// Creates a job of `spec` with `maps` map tasks.
async fn create_job_with(store: &Arc<dyn Store>, spec: JobSpec, maps: u32, now: i64) -> JobId {
    let job = NewJob {
        spec,
        maps: (0..maps).map(map_input).collect(),
        token: JOB_TOKEN.into(),
        partitioner: protocol::Partitioner::Hash,
    };
    store.create_job(&job, now).await.unwrap()
}

/// Creates a job with M maps and R reducers.
async fn create_job(store: &Arc<dyn Store>, maps: u32, reducers: u32, now: i64) -> JobId {
    create_job_with(store, spec(reducers), maps, now).await
}

/// Registers a worker whose shuffle address is `http://{name}:7879`.
async fn register(store: &Arc<dyn Store>, name: &str, now: i64) -> WorkerId {
    let id = WorkerId(name.into());
    store
        .register_worker(&id, &address(&id), 4, now)
        .await
        .unwrap();
    id
}

fn address(worker: &WorkerId) -> String {
    format!("http://{worker}:7879")
}

/// A lease that must be there.
async fn lease(store: &Arc<dyn Store>, worker: &WorkerId, now: i64) -> Lease {
    store
        .lease(worker, now, LIVE)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{worker} got no lease at {now}"))
}

/// Map task `map`'s output index, partitions back to back as in a real
/// file: lengths and record counts distinct, so a reduce source can only
/// match the entry it came from.
fn map_output(map: u32, reducers: u32) -> MapOutputIndex {
    let map = u64::from(map);
    let mut offset = 0;
    MapOutputIndex {
        partitions: (0..u64::from(reducers))
            .map(|p| {
                let length = 10 * map + p + 1;
                let entry = PartitionIndex {
                    offset,
                    length,
                    records: 100 * map + p + 7,
                };
                offset += length;
                entry
            })
            .collect(),
    }
}

fn counters(pairs: &[(&str, i64)]) -> Counters {
    let mut counters = Counters::default();
    for (name, value) in pairs {
        counters.add(name, *value);
    }
    counters
}

fn report(worker: &WorkerId, result: AttemptResult, counters: Counters) -> CompleteRequest {
    CompleteRequest {
        worker_id: worker.clone(),
        result,
        counters,
        stdout: String::new(),
        stderr: String::new(),
    }
}

/// A successful map: `map input records` = 10 per map index plus one.
fn map_done(worker: &WorkerId, map: u32, reducers: u32) -> CompleteRequest {
    report(
        worker,
        AttemptResult::Map {
            index: map_output(map, reducers),
        },
        counters(&[
            (
                protocol::counters::MAP_INPUT_RECORDS,
                10 * (i64::from(map) + 1),
            ),
            ("tasks", 1),
        ]),
    )
}

/// A successful reduce.
fn reduce_done(worker: &WorkerId) -> CompleteRequest {
    report(
        worker,
        AttemptResult::Reduce {
            records: 5,
            bytes: 50,
        },
        counters(&[(protocol::counters::REDUCE_OUTPUT_RECORDS, 5), ("tasks", 1)]),
    )
}

fn failed(worker: &WorkerId, failure: Failure) -> CompleteRequest {
    report(worker, AttemptResult::Failed(failure), Counters::default())
}

async fn job(store: &Arc<dyn Store>, id: JobId) -> JobRecord {
    store.get_job(id).await.unwrap().expect("the job exists")
}

async fn task(store: &Arc<dyn Store>, job: JobId, kind: TaskKind, index: u32) -> TaskInfo {
    store
        .list_tasks(job)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.kind == kind && t.index == index)
        .unwrap_or_else(|| panic!("job {job} has no {kind:?} task {index}"))
}

async fn attempt(store: &Arc<dyn Store>, job: JobId, id: AttemptId) -> AttemptInfo {
    store
        .list_attempts(job)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("job {job} has no attempt {id}"))
}

/// Leases and completes every map of `job` (which must be the only job with
/// leasable work), taking the workers in turn. Returns the attempt of each
/// map, by index.
async fn run_maps(
    store: &Arc<dyn Store>,
    job: JobId,
    workers: &[&WorkerId],
    maps: u32,
    reducers: u32,
    now: i64,
) -> Vec<AttemptId> {
    let mut attempts = Vec::new();
    for map in 0..maps {
        let worker = workers[map as usize % workers.len()];
        let at = now + 2 * i64::from(map);
        let lease = lease(store, worker, at).await;
        assert_eq!(
            (lease.job, lease.kind, lease.index),
            (job, TaskKind::Map, map)
        );
        let done = store
            .complete(lease.attempt, &map_done(worker, map, reducers), at + 1)
            .await
            .unwrap();
        assert!(matches!(done, Completion::Accepted { .. }));
        attempts.push(lease.attempt);
    }
    attempts
}
