//! The worker's loops: each slot leases and runs tasks; the heartbeat loop
//! renews leases, drops what the coordinator took back and deletes the map
//! outputs of finished jobs.

use std::sync::Arc;
use std::time::Duration;

use protocol::worker_api::{
    AttemptResult, CompleteRequest, Failure, HeartbeatRequest, Lease, TaskWork,
};
use protocol::{Counters, JobId, TaskKind, WorkerId};
use tokio::sync::watch;

use super::Agent;
use super::fetch::{BodyReader, fetch_all};
use crate::map::{MapInput, MapSettings, run_map};
use crate::merge::BoxedSource;
use crate::reduce::{ReduceSettings, run_reduce};
use crate::runfile::SegmentReader;
use futures::FutureExt;

use crate::runtime::{Cancel, GuestModule, TaskError, TaskLogs};

const LEASE_WAIT: Duration = Duration::from_secs(20);

pub(crate) async fn heartbeat_loop(
    agent: Arc<Agent>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
        let running: Vec<_> = agent.running.lock().unwrap().keys().copied().collect();
        let holding: Vec<JobId> = agent.jobs.lock().unwrap().keys().copied().collect();
        let req = HeartbeatRequest {
            worker_id: agent.worker_id(),
            running,
            holding,
        };
        match agent.coordinator.heartbeat(&req).await {
            Ok(response) => {
                if response.reregister {
                    tracing::warn!(
                        "the coordinator no longer knows this worker; registering again"
                    );
                    forget_all_jobs(&agent);
                    if let Err(err) = agent.register().await {
                        tracing::warn!(error = %format!("{err:#}"), "re-registration failed");
                    }
                    continue;
                }
                for attempt in response.drop {
                    if let Some(cancel) = agent.running.lock().unwrap().get(&attempt) {
                        tracing::info!(attempt = %attempt, "coordinator took this attempt back; stopping it");
                        cancel.cancel();
                    }
                }
                for job in response.release {
                    release_job(&agent, job);
                }
            }
            Err(err) => tracing::warn!(error = %format!("{err:#}"), "heartbeat failed"),
        }
    }
}

fn release_job(agent: &Agent, job: JobId) {
    agent.jobs.lock().unwrap().remove(&job);
    let dir = agent.job_dir(job);
    if dir.exists() {
        tracing::info!(job_id = %job, "job finished; deleting its intermediate files");
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn forget_all_jobs(agent: &Agent) {
    let jobs: Vec<JobId> = agent.jobs.lock().unwrap().keys().copied().collect();
    for job in jobs {
        release_job(agent, job);
    }
}

pub(crate) async fn slot_loop(agent: Arc<Agent>, slot: u32, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let worker = agent.worker_id();
        let lease = tokio::select! {
            lease = agent.coordinator.lease(&worker, LEASE_WAIT) => lease,
            _ = stop.changed() => return,
        };
        match lease {
            Ok(Some(lease)) => {
                let attempt = lease.attempt;
                let cancel = crate::runtime::Cancel::default();
                agent
                    .running
                    .lock()
                    .unwrap()
                    .insert(attempt, cancel.clone());
                let span =
                    tracing::info_span!("task", job_id = %lease.job, attempt = %attempt, slot);
                let _enter = span.enter();
                drop(_enter);
                // A panic while running the attempt is reported as a host
                // failure of that attempt; the slot lives on.
                let ran =
                    std::panic::AssertUnwindSafe(run_lease(&agent, &worker, lease.clone(), cancel))
                        .catch_unwind()
                        .await;
                if let Err(panic) = ran {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    tracing::error!(attempt = %attempt, %message, "the attempt panicked");
                    report(
                        &agent,
                        &worker,
                        &lease,
                        host_failure(format!(
                            "the worker panicked running the attempt: {message}"
                        )),
                    )
                    .await;
                }
                agent.running.lock().unwrap().remove(&attempt);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "lease request failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// What a task attempt ended with, ready to report.
struct Ended {
    result: AttemptResult,
    counters: Counters,
    logs: TaskLogs,
}

fn failure(err: TaskError, lease: &Lease) -> Failure {
    match err {
        TaskError::Guest(err) => Failure::Guest {
            message: err.to_string(),
        },
        TaskError::Host(err) => Failure::Host {
            message: format!("{err:#}"),
        },
        TaskError::Cancelled => Failure::Host {
            message: "the attempt was cancelled: the coordinator took its lease back".into(),
        },
        TaskError::FetchFailed {
            source_index,
            message,
        } => match &lease.work {
            TaskWork::Reduce { sources, .. } if source_index < sources.len() => {
                Failure::FetchFailed {
                    map_task: sources[source_index].map_task,
                    message,
                }
            }
            _ => Failure::Host { message },
        },
    }
}

fn host_failure(message: String) -> Ended {
    Ended {
        result: AttemptResult::Failed(Failure::Host { message }),
        counters: Counters::default(),
        logs: TaskLogs::default(),
    }
}

async fn module(agent: &Agent, sha256: &str) -> anyhow::Result<Arc<GuestModule>> {
    if let Some(module) = agent.runtime.cached(sha256) {
        return Ok(module);
    }
    let bytes = agent.coordinator.module(sha256).await?;
    let runtime = agent.runtime.clone();
    tokio::task::spawn_blocking(move || runtime.load(&bytes))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))
}

async fn run_lease(agent: &Arc<Agent>, worker: &WorkerId, lease: Lease, cancel: Cancel) {
    let job_dir = agent.job_dir(lease.job);
    if let Err(err) = std::fs::create_dir_all(&job_dir) {
        report(
            agent,
            worker,
            &lease,
            host_failure(format!("creating {}: {err}", job_dir.display())),
        )
        .await;
        return;
    }
    // The token reducers present to this server for the job: one per id
    // this worker leased the job's tasks under (it may have registered
    // again meanwhile).
    {
        let mut jobs = agent.jobs.lock().unwrap();
        let tokens = jobs.entry(lease.job).or_default();
        if !tokens.contains(&lease.job_token) {
            tokens.push(lease.job_token.clone());
        }
    }
    let ended = match module(agent, &lease.module).await {
        Err(err) => host_failure(format!("loading module {}: {err:#}", lease.module)),
        Ok(module) => match lease.kind {
            TaskKind::Map => run_map_lease(agent, &lease, module, cancel.clone()).await,
            TaskKind::Reduce => {
                run_reduce_lease(agent, worker, &lease, module, cancel.clone()).await
            }
        },
    };
    straggle(agent.config.task_delay, &cancel).await;
    report(agent, worker, &lease, ended).await;
}

/// `--simulate-slow-ms`: a straggler holds its finished attempt (its
/// output written, a reduce's staged) this long before it reports, unless
/// the coordinator drops the attempt first.
async fn straggle(delay: Duration, cancel: &Cancel) {
    let until = tokio::time::Instant::now() + delay;
    while !cancel.is_cancelled() {
        let now = tokio::time::Instant::now();
        if now >= until {
            return;
        }
        tokio::time::sleep_until(until.min(now + Duration::from_millis(50))).await;
    }
}

/// Bytes of JSON the two logs of a completion may take together: the
/// coordinator accepts request bodies of 2 MiB, and a completion that does
/// not fit would be refused however often it is sent.
const REPORT_LOG_BYTES: usize = 1536 << 10;

/// Bytes `c` takes in a JSON string.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// `log` cut to its first and last characters so that it takes at most
/// `budget` bytes as a JSON string, with a marker where it was cut.
fn fit_log(log: String, budget: usize) -> String {
    let total: usize = log.chars().map(json_len).sum();
    if total <= budget {
        return log;
    }
    let half = budget.saturating_sub(200) / 2;
    let mut head_end = 0;
    let mut used = 0;
    for (i, c) in log.char_indices() {
        used += json_len(c);
        if used > half {
            break;
        }
        head_end = i + c.len_utf8();
    }
    let mut tail_start = log.len();
    used = 0;
    for (i, c) in log.char_indices().rev() {
        used += json_len(c);
        if used > half || i < head_end {
            break;
        }
        tail_start = i;
    }
    format!(
        "{}\n[... {} bytes dropped so that the log fits the report ...]\n{}",
        &log[..head_end],
        tail_start - head_end,
        &log[tail_start..]
    )
}

/// Reports as `worker`, the id the lease was granted to: a worker that was
/// declared dead (frozen, cut off) registers again under a new id while its
/// old attempts still run, and their late reports must name the worker the
/// coordinator knows them by, to be recorded as superseded.
async fn report(agent: &Arc<Agent>, worker: &WorkerId, lease: &Lease, ended: Ended) {
    let req = CompleteRequest {
        worker_id: worker.clone(),
        result: ended.result,
        counters: ended.counters,
        stdout: fit_log(ended.logs.stdout, REPORT_LOG_BYTES / 2),
        stderr: fit_log(ended.logs.stderr, REPORT_LOG_BYTES / 2),
    };
    // The report is retried while the coordinator is unreachable (it may be
    // restarting); the attempt id makes a repeated report harmless.
    let mut accepted = None;
    for attempt in 0..60u32 {
        match agent.coordinator.complete(lease.attempt, &req).await {
            Ok(ok) => {
                accepted = Some(ok);
                break;
            }
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), attempt, "reporting the attempt failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    if accepted != Some(true) && lease.kind == TaskKind::Map {
        // Refused (or never heard): nobody will read this output.
        let _ = std::fs::remove_file(super::shuffle::map_output_path(
            agent,
            lease.job,
            lease.attempt,
        ));
    }
}

async fn run_map_lease(
    agent: &Arc<Agent>,
    lease: &Lease,
    module: Arc<GuestModule>,
    cancel: Cancel,
) -> Ended {
    let TaskWork::Map {
        input,
        file_name,
        start,
        end,
        size,
        format,
    } = lease.work.clone()
    else {
        return host_failure("map lease without map work".into());
    };
    // The split of an empty file has nothing to read.
    let response = if end == 0 {
        None
    } else {
        match agent
            .coordinator
            .dataset(&input, crate::input::read_from(start), size)
            .await
        {
            Ok(response) => Some(response),
            Err(err) => return host_failure(format!("reading input {input}: {err:#}")),
        }
    };
    let reader = BodyReader::new(response);
    let settings = MapSettings {
        reducers: lease.reducers,
        combine: lease.combine,
        limits: lease.limits,
        args: lease.args.clone(),
        sort_buffer: agent.config.sort_buffer,
        combine_buffer: crate::map::combine_buffer(lease.combine_buffer, &lease.limits),
        partitioner: Arc::new(lease.partitioner.clone()),
        cancel,
    };
    let job_dir = agent.job_dir(lease.job);
    let output = super::shuffle::map_output_path(agent, lease.job, lease.attempt);
    let work_dir = job_dir.join(format!("work-{}", lease.attempt));
    let runtime = agent.runtime.clone();
    let lease_copy = lease.clone();
    let joined = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&work_dir)?;
        let input = MapInput {
            reader,
            file_name,
            format,
            start,
            end,
        };
        let report = run_map(&runtime, &module, &settings, input, &work_dir, &output);
        let _ = std::fs::remove_dir_all(&work_dir);
        Ok::<_, std::io::Error>(report)
    })
    .await;
    match joined {
        Ok(Ok(report)) => Ended {
            result: match report.outcome {
                Ok(index) => AttemptResult::Map { index },
                Err(err) => AttemptResult::Failed(failure(err, &lease_copy)),
            },
            counters: report.counters,
            logs: report.logs,
        },
        Ok(Err(err)) => host_failure(format!("map work directory: {err}")),
        Err(err) => host_failure(format!("map task panicked: {err}")),
    }
}

async fn run_reduce_lease(
    agent: &Arc<Agent>,
    worker: &WorkerId,
    lease: &Lease,
    module: Arc<GuestModule>,
    cancel: Cancel,
) -> Ended {
    let TaskWork::Reduce { partition, sources } = lease.work.clone() else {
        return host_failure("reduce lease without reduce work".into());
    };
    let dir = agent
        .job_dir(lease.job)
        .join(format!("reduce-{}", lease.attempt));
    if let Err(err) = std::fs::create_dir_all(&dir) {
        return host_failure(format!("creating {}: {err}", dir.display()));
    }
    let ended = reduce_in(
        agent, worker, lease, module, partition, &sources, &dir, cancel,
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    ended
}

#[allow(clippy::too_many_arguments)]
async fn reduce_in(
    agent: &Arc<Agent>,
    worker: &WorkerId,
    lease: &Lease,
    module: Arc<GuestModule>,
    partition: u32,
    sources: &[protocol::worker_api::MapSource],
    dir: &std::path::Path,
    cancel: Cancel,
) -> Ended {
    let fetched = fetch_all(
        agent.coordinator.http(),
        &lease.job_token,
        sources,
        dir,
        agent.config.fetch_concurrency,
    )
    .await;
    let paths = match fetched {
        Ok(paths) => paths,
        Err(err) => {
            return Ended {
                result: AttemptResult::Failed(Failure::FetchFailed {
                    map_task: err.source.map_task,
                    message: err.message,
                }),
                counters: Counters::default(),
                logs: TaskLogs::default(),
            };
        }
    };
    let settings = ReduceSettings {
        limits: lease.limits,
        args: lease.args.clone(),
        separator: b"\t".to_vec(),
        cancel,
    };
    let tmp = dir.join(format!("{}.tmp", crate::local::part_name(partition)));
    let runtime = agent.runtime.clone();
    let sources = sources.to_vec();
    let tmp_path = tmp.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut segments: Vec<BoxedSource> = Vec::with_capacity(paths.len());
        for (path, source) in paths.iter().zip(&sources) {
            if source.length == 0 {
                segments.push(Box::new(SegmentReader::new(std::io::empty(), 0, Some(0))));
                continue;
            }
            let file = std::fs::File::open(path)?;
            let reader = std::io::BufReader::with_capacity(64 << 10, file);
            segments.push(Box::new(SegmentReader::new(
                reader,
                source.length,
                Some(source.records),
            )));
        }
        Ok::<_, std::io::Error>(run_reduce(
            &runtime, &module, &settings, segments, &tmp_path,
        ))
    })
    .await;
    let report = match joined {
        Ok(Ok(report)) => report,
        Ok(Err(err)) => return host_failure(format!("opening fetched map outputs: {err}")),
        Err(err) => return host_failure(format!("reduce task panicked: {err}")),
    };
    let output = match report.outcome {
        Ok(output) => output,
        Err(err) => {
            return Ended {
                result: AttemptResult::Failed(failure(err, lease)),
                counters: report.counters,
                logs: report.logs,
            };
        }
    };
    let staged = match tokio::fs::File::open(&tmp).await {
        Ok(file) => {
            agent
                .coordinator
                .upload_output(worker, lease.attempt, file)
                .await
        }
        Err(err) => Err(err.into()),
    };
    let result = match staged {
        Ok(true) => AttemptResult::Reduce {
            records: output.records,
            bytes: output.bytes,
        },
        Ok(false) => AttemptResult::Failed(Failure::Host {
            message: "the attempt lost its lease before its output was staged".into(),
        }),
        Err(err) => AttemptResult::Failed(Failure::Host {
            message: format!("staging the output: {err:#}"),
        }),
    };
    Ended {
        result,
        counters: report.counters,
        logs: report.logs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_size(text: &str) -> usize {
        serde_json::to_string(text).unwrap().len() - 2
    }

    #[test]
    fn a_log_is_cut_to_fit_its_json_budget_keeping_head_and_tail() {
        // Control characters take six bytes each in JSON.
        let log = format!("HEAD{}TAIL", "\u{1}x\"é".repeat(200_000));
        let fitted = fit_log(log.clone(), 64 << 10);
        assert!(json_size(&fitted) <= 64 << 10, "{}", json_size(&fitted));
        assert!(fitted.starts_with("HEAD") && fitted.ends_with("TAIL"));
        assert!(fitted.contains("bytes dropped"));
        assert_eq!(fit_log("short".into(), 64), "short");
        for c in ['"', '\\', '\n', '\u{1}', '\u{1f}', 'é', '€', 'a'] {
            assert_eq!(json_len(c), json_size(&c.to_string()), "{c:?}");
        }
    }
}
