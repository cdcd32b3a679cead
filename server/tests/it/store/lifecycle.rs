//! A job's way from creation to success, and the listings that show it.

use std::sync::Arc;

use protocol::api::{AttemptLogs, PhaseProgress};
use protocol::counters::{MAP_INPUT_RECORDS, REDUCE_OUTPUT_RECORDS};
use protocol::worker_api::{MapSource, TaskWork};
use protocol::{AttemptId, AttemptOutcome, JobId, JobState, TaskKind, TaskState, WorkerId};
use server::store::{Completion, Store};

use super::{
    JOB_TOKEN, LIVE, address, attempt, counters, create_job, job, lease, map_done, map_input,
    map_output, module, reduce_done, register, spec, task,
};

fn idle(total: u64) -> PhaseProgress {
    PhaseProgress {
        total,
        idle: total,
        ..PhaseProgress::default()
    }
}

pub async fn job_runs_from_maps_to_success(store: Arc<dyn Store>) {
    const M: u32 = 3;
    const R: u32 = 2;
    let w1 = register(&store, "w1", 0).await;
    let w2 = register(&store, "w2", 0).await;
    let id = create_job(&store, M, R, 100).await;

    let created = job(&store, id).await;
    assert_eq!(created.state, JobState::Mapping);
    assert_eq!((created.map, created.reduce), (idle(3), idle(2)));
    assert_eq!(created.spec, spec(R));
    assert_eq!(created.token, JOB_TOKEN);
    assert_eq!((created.created_at, created.finished_at), (100, None));

    // Maps lease in index order, carrying their input and the job's settings.
    let mappers = [&w1, &w2, &w1];
    let mut maps = Vec::new();
    for (map, worker) in mappers.iter().enumerate() {
        let lease = lease(&store, worker, 200 + map as i64).await;
        let input = map_input(map as u32);
        assert_eq!(
            (lease.job, lease.kind, lease.index),
            (id, TaskKind::Map, map as u32)
        );
        assert_eq!(
            lease.work,
            TaskWork::Map {
                input: input.path,
                file_name: input.file_name,
                start: input.start,
                end: input.end,
                size: input.size,
                format: spec(R).format,
            }
        );
        assert_eq!(lease.module, module());
        assert_eq!((lease.reducers, lease.combine), (R, true));
        assert_eq!(lease.job_token, JOB_TOKEN);
        maps.push(lease);
    }
    let progress = job(&store, id).await.map;
    assert_eq!((progress.in_progress, progress.idle), (3, 0));

    // Reduce tasks wait until every map is complete.
    for (map, lease) in maps.iter().enumerate().take(2) {
        let worker = mappers[map];
        let done = store
            .complete(
                lease.attempt,
                &map_done(worker, map as u32, R),
                300 + map as i64,
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
    }
    assert_eq!(store.lease(&w2, 310, LIVE).await.unwrap(), None);
    assert_eq!(job(&store, id).await.state, JobState::Mapping);
    let done = store
        .complete(maps[2].attempt, &map_done(&w1, 2, R), 320)
        .await
        .unwrap();
    assert!(matches!(done, Completion::Accepted { .. }));
    let reducing = job(&store, id).await;
    assert_eq!(reducing.state, JobState::Reducing);
    assert_eq!(reducing.map.completed, 3);
    assert_eq!(reducing.reduce, idle(2));

    // Each reduce reads its partition of every map output, in map order,
    // from the worker that holds it.
    let map_tasks: Vec<_> = store
        .list_tasks(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.kind == TaskKind::Map)
        .collect();
    let mut reduces = Vec::new();
    for partition in 0..R {
        let lease = lease(&store, &w2, 400 + i64::from(partition)).await;
        assert_eq!((lease.kind, lease.index), (TaskKind::Reduce, partition));
        let expected: Vec<MapSource> = (0..M)
            .map(|map| {
                let attempt = maps[map as usize].attempt;
                let part = map_output(map, R).partitions[partition as usize];
                MapSource {
                    map_task: map_tasks[map as usize].id,
                    map_index: map,
                    attempt,
                    url: format!("{}/shuffle/{id}/{attempt}", address(mappers[map as usize])),
                    offset: part.offset,
                    length: part.length,
                    records: part.records,
                    worker: (*mappers[map as usize]).clone(),
                    token: String::new(),
                }
            })
            .collect();
        assert_eq!(
            lease.work,
            TaskWork::Reduce {
                partition,
                sources: expected
            }
        );
        reduces.push(lease);
    }
    assert_eq!(store.lease(&w1, 410, LIVE).await.unwrap(), None);

    for (partition, lease) in reduces.iter().enumerate() {
        let done = store
            .complete(lease.attempt, &reduce_done(&w2), 500 + partition as i64)
            .await
            .unwrap();
        assert_eq!(
            done,
            Completion::Accepted {
                job: id,
                reduce_partition: Some(partition as u32),
                discard: vec![],
            }
        );
        let state = job(&store, id).await.state;
        let expected = if partition + 1 < reduces.len() {
            JobState::Reducing
        } else {
            JobState::Succeeded
        };
        assert_eq!(state, expected);
    }

    let finished = job(&store, id).await;
    assert_eq!(finished.finished_at, Some(501));
    assert_eq!(finished.error, None);
    assert_eq!(finished.map.completed, 3);
    assert_eq!(finished.reduce.completed, 2);
    assert_eq!(store.finished_jobs(&[id]).await.unwrap(), vec![id]);

    // Counters are the sum over every task.
    assert_eq!(
        store.job_counters(id).await.unwrap(),
        counters(&[
            (MAP_INPUT_RECORDS, 10 + 20 + 30),
            (REDUCE_OUTPUT_RECORDS, 5 + 5),
            ("tasks", 5),
        ])
    );
}

pub async fn listings_return_what_was_written(store: Arc<dyn Store>) {
    let w1 = register(&store, "w1", 1).await;
    let w2 = WorkerId("w2".into());
    store
        .register_worker(&w2, "http://w2:9000", 2, 2)
        .await
        .unwrap();
    let first = create_job(&store, 1, 1, 10).await;
    let second = create_job(&store, 2, 1, 20).await;

    let jobs = store.list_jobs(10).await.unwrap();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, [second, first], "newest first");
    assert_eq!(store.list_jobs(1).await.unwrap().len(), 1);

    let tasks = store.list_tasks(first).await.unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!((tasks[0].kind, tasks[0].index), (TaskKind::Map, 0));
    assert_eq!(tasks[0].input, "books/book-0.txt bytes 0..100");
    assert_eq!((tasks[1].kind, tasks[1].index), (TaskKind::Reduce, 0));
    assert_eq!(tasks[1].input, "partition 0");
    for t in &tasks {
        assert_eq!((t.state, t.worker.as_ref()), (TaskState::Idle, None));
        assert_eq!((t.attempts, t.failures), (0, 0));
    }
    assert!(store.list_attempts(first).await.unwrap().is_empty());

    let leased = lease(&store, &w1, 100).await;
    assert_eq!(leased.job, first);
    let running = task(&store, first, TaskKind::Map, 0).await;
    assert_eq!(running.state, TaskState::InProgress);
    assert_eq!(running.worker, Some(w1.clone()));
    assert_eq!(running.attempts, 1);

    let workers = store.list_workers().await.unwrap();
    let rows: Vec<_> = workers
        .iter()
        .map(|w| {
            (
                w.id.0.as_str(),
                w.address.as_str(),
                w.slots,
                w.state.as_str(),
                w.running,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("w1", "http://w1:7879", 4, "alive", 1),
            ("w2", "http://w2:9000", 2, "alive", 0)
        ]
    );
    assert_eq!(workers[0].last_heartbeat, 1);
    store.heartbeat(&w2, &[], 150, LIVE).await.unwrap();
    let workers = store.list_workers().await.unwrap();
    assert_eq!(workers[1].last_heartbeat, 150);

    let running_attempt = attempt(&store, first, leased.attempt).await;
    assert_eq!(running_attempt.outcome, AttemptOutcome::Running);
    assert_eq!(running_attempt.ended_at, None);

    let mut report = map_done(&w1, 0, 1);
    report.stdout = "hello from the guest\n".into();
    report.stderr = "a warning\n".into();
    store.complete(leased.attempt, &report, 200).await.unwrap();

    let attempts = store.list_attempts(first).await.unwrap();
    assert_eq!(attempts.len(), 1);
    let a = &attempts[0];
    assert_eq!(a.id, leased.attempt);
    assert_eq!((a.task, a.kind, a.index), (leased.task, TaskKind::Map, 0));
    assert_eq!(a.worker, w1);
    assert_eq!((a.started_at, a.ended_at), (100, Some(200)));
    assert_eq!(
        (a.outcome, a.error.as_deref()),
        (AttemptOutcome::Succeeded, None)
    );
    assert_eq!(a.counters, report.counters);
    assert!(!a.backup);
    assert!(store.list_attempts(second).await.unwrap().is_empty());

    assert_eq!(
        store.attempt_logs(first, leased.attempt).await.unwrap(),
        Some(AttemptLogs {
            stdout: report.stdout.clone(),
            stderr: report.stderr.clone(),
        })
    );
    assert_eq!(
        store.attempt_logs(second, leased.attempt).await.unwrap(),
        None
    );
    assert_eq!(
        store.attempt_logs(first, AttemptId(999_999)).await.unwrap(),
        None
    );

    let completed = task(&store, first, TaskKind::Map, 0).await;
    assert_eq!(completed.state, TaskState::Completed);
    assert_eq!(
        completed.worker,
        Some(w1.clone()),
        "a map's output stays on its worker"
    );
    let workers = store.list_workers().await.unwrap();
    assert_eq!(workers[0].running, 0);

    assert!(
        store
            .finished_jobs(&[first, second])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.get_job(JobId(999_999)).await.unwrap().map(|j| j.id),
        None
    );
    assert_eq!(
        store.finished_jobs(&[JobId(999_999)]).await.unwrap(),
        [JobId(999_999)],
        "a job that does not exist is over"
    );
}
