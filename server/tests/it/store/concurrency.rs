//! Many clients at once: eight workers lease and complete, heartbeat and
//! are expired concurrently on one job until it ends, on a simulated clock
//! that runs fast enough for leases to expire and backups to start. No
//! transaction may fail (a deadlock is an error here), every reduce ends
//! with exactly one succeeded attempt (a map may succeed again after its
//! worker was declared dead), and the job's counters count each task
//! exactly once (no lost and no doubled update).

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{AttemptOutcome, JobState, TaskState, WorkerId};
use server::store::{Liveness, Store};

use super::{create_job, job, map_done, reduce_done, register};

const WORKERS: usize = 16;
const MAPS: u32 = 2_000;
const REDUCERS: u32 = 8;
/// Longest the job may take (it takes seconds; the machine may be busy).
const DEADLINE: Duration = Duration::from_secs(180);
/// Leases and liveness on the simulated clock, which runs five times as
/// fast as the real one: a lease nobody renews expires after 0.4 s. A
/// worker is declared dead only after 12 s of silence: on a busy machine a
/// shorter limit declares the clients dead faster than they finish maps,
/// and the job keeps losing its map outputs.
const LIVE: Liveness = Liveness {
    lease_ms: 2_000,
    dead_after_ms: 60_000,
};

/// The simulated clock: milliseconds, five per real one.
struct Clock(Instant);

impl Clock {
    fn now(&self) -> i64 {
        10_000_000 + 5 * self.0.elapsed().as_millis() as i64
    }
}

/// An attempt a client holds: its id, kind and index.
struct Held(protocol::AttemptId, protocol::TaskKind, u32);

pub async fn concurrent_clients_neither_deadlock_nor_lose_updates(store: Arc<dyn Store>) {
    let started = Instant::now();
    let clock = Arc::new(Clock(started));
    let tick = {
        let clock = clock.clone();
        move || clock.now()
    };
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        workers.push(register(&store, &format!("w{w}"), tick()).await);
    }
    let id = create_job(&store, MAPS, REDUCERS, tick()).await;

    let mut clients = Vec::new();
    for (n, worker) in workers.into_iter().enumerate() {
        let store = store.clone();
        let tick = tick.clone();
        let clock = clock.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            // Attempts finished within a few calls, and stragglers held
            // until a simulated time: even workers keep renewing theirs
            // (so backups start), odd ones let them expire (so they run
            // again elsewhere and report late).
            let mut running = Vec::new();
            let mut slow: Vec<(Held, i64)> = Vec::new();
            let renews_stragglers = n % 2 == 0;
            let mut worker = worker;
            let mut round = 0u64;
            loop {
                round += 1;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if round.is_multiple_of(32) && job(&store, id).await.state.is_finished() {
                    return Ok::<_, String>(());
                }
                if started.elapsed() > DEADLINE {
                    return Err(format!("the job did not finish within {DEADLINE:?}"));
                }
                match rng % 10 {
                    // A heartbeat for what this worker runs; a worker
                    // declared dead registers again under a new name.
                    0 => {
                        let mut held: Vec<_> = running.iter().map(|h: &Held| h.0).collect();
                        if renews_stragglers {
                            held.extend(slow.iter().map(|(h, _)| h.0));
                        }
                        let kept = store
                            .heartbeat(&worker, &held, tick(), LIVE)
                            .await
                            .map_err(|e| format!("heartbeat: {e}"))?;
                        if kept.is_none() {
                            worker = WorkerId(format!("{}-again", worker.0));
                            store
                                .register_worker(&worker, "http://127.0.0.1:9", 4, tick())
                                .await
                                .map_err(|e| format!("register: {e}"))?;
                            running.clear();
                            slow.clear();
                        }
                    }
                    // Finish a straggler that is due, or else the oldest
                    // attempt held.
                    1..=5 if !running.is_empty() || !slow.is_empty() => {
                        let now = clock.now();
                        let Held(attempt, kind, index) =
                            match slow.iter().position(|(_, due)| *due <= now) {
                                Some(i) => slow.remove(i).0,
                                None if !running.is_empty() => running.remove(0),
                                None => continue,
                            };
                        let report = match kind {
                            protocol::TaskKind::Map => map_done(&worker, index, REDUCERS),
                            protocol::TaskKind::Reduce => reduce_done(&worker),
                        };
                        store
                            .complete(attempt, &report, tick())
                            .await
                            .map_err(|e| format!("complete: {e}"))?;
                    }
                    _ => match store.lease(&worker, tick(), LIVE).await {
                        Ok(Some(lease)) if rng % 8 == 1 => {
                            let held = Held(lease.attempt, lease.kind, lease.index);
                            slow.push((held, clock.now() + 5_000));
                        }
                        Ok(Some(lease)) => {
                            running.push(Held(lease.attempt, lease.kind, lease.index))
                        }
                        Ok(None) => tokio::task::yield_now().await,
                        // Declared dead meanwhile: the next heartbeat
                        // registers again.
                        Err(server::store::StoreError::Conflict(_)) => {}
                        Err(e) => return Err(format!("lease: {e}")),
                    },
                }
            }
        }));
    }
    let expirer = {
        let store = store.clone();
        let tick = tick.clone();
        tokio::spawn(async move {
            while !job(&store, id).await.state.is_finished() && started.elapsed() < DEADLINE {
                store
                    .expire(tick(), LIVE)
                    .await
                    .map_err(|e| format!("expire: {e}"))?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, String>(())
        })
    };
    for client in clients {
        client.await.unwrap().unwrap();
    }
    expirer.await.unwrap().unwrap();

    let info = job(&store, id).await;
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    let attempts = store.list_attempts(id).await.unwrap();
    let tasks = store.list_tasks(id).await.unwrap();
    assert_eq!(tasks.len() as u32, MAPS + REDUCERS);
    for task in &tasks {
        // A map whose output was lost after every reduce had read it may
        // still be running again when the job succeeds.
        if task.kind == protocol::TaskKind::Reduce {
            assert_eq!(task.state, TaskState::Completed, "{task:?}");
        }
        let won = attempts
            .iter()
            .filter(|a| a.task == task.id && a.outcome == AttemptOutcome::Succeeded)
            .count();
        // A map runs again when its worker is declared dead (its output
        // was there); a reduce's output is committed once.
        match task.kind {
            protocol::TaskKind::Map => assert!(won >= 1, "task {task:?}"),
            protocol::TaskKind::Reduce => assert_eq!(won, 1, "task {task:?}"),
        }
    }
    // Each successful report adds "tasks" = 1; only the counted one counts.
    let counters = store.job_counters(id).await.unwrap();
    assert_eq!(
        counters.get("tasks"),
        i64::from(MAPS + REDUCERS),
        "{counters:?}"
    );
    let retried = attempts.len() - tasks.len();
    let backups = attempts.iter().filter(|a| a.backup).count();
    println!(
        "{} attempts for {} tasks ({retried} more: expired, superseded, {backups} backups) in {:.1} s",
        attempts.len(),
        tasks.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        retried > 0,
        "nothing was ever retried: the test exercised no race"
    );
}

/// Eight clients lease and complete until a lease comes back empty, with
/// no expiry pass to mend anything: each job must still move to its reduce
/// phase and finish, however its last completions interleave. (When each
/// completion judged its phase's end from what it read at its start, two
/// last completions could each see the other unfinished and the job stayed
/// in `mapping` for good.)
pub async fn the_last_completions_of_a_phase_move_the_job_on(store: Arc<dyn Store>) {
    const CLIENTS: usize = 8;
    const JOBS: u32 = 40;
    let mut workers = Vec::new();
    for w in 0..CLIENTS {
        workers.push(register(&store, &format!("w{w}"), 1).await);
    }
    for round in 0..JOBS {
        let id = create_job(&store, 40, 1, 1).await;
        let mut clients = Vec::new();
        for worker in workers.clone() {
            let store = store.clone();
            clients.push(tokio::spawn(async move {
                let mut done = 0u32;
                while let Some(lease) = store.lease(&worker, 2, LIVE).await.unwrap() {
                    let report = match lease.kind {
                        protocol::TaskKind::Map => map_done(&worker, lease.index, 1),
                        protocol::TaskKind::Reduce => reduce_done(&worker),
                    };
                    assert!(
                        store
                            .complete(lease.attempt, &report, 3)
                            .await
                            .unwrap()
                            .accepted()
                    );
                    done += 1;
                }
                done
            }));
        }
        let mut done = 0;
        for client in clients {
            done += client.await.unwrap();
        }
        let record = job(&store, id).await;
        assert_eq!(
            (record.state, record.map.completed, done),
            (JobState::Succeeded, 40, 41),
            "job {round}"
        );
    }
}
