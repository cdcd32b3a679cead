//! A flaky network between reducers and one worker's map-output server:
//! reset connections, truncated bodies and flipped bytes are detected
//! (length and block checksums) and retried or the map is run again;
//! nothing broken is merged.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use examples_wasm::WORDCOUNT;

use super::proxy::{FaultStats, faulty};
use super::{Chaos, JOB_TIMEOUT, NewWorker, Options, Seed, assert_output, job_spec};
use crate::cluster::{local_run, per_backend};

/// Connections the proxy breaks before it lets everything through.
const FAULTS: u64 = 12;

async fn map_output_faults_are_detected(backend: &str) {
    let seed = Seed::new("map_output_faults_are_detected");
    let reducers = 4;
    let expected = local_run(WORDCOUNT, reducers).await;
    let options = Options {
        workers: 1,
        slots: 2,
        dead_after_secs: 3,
        ..Options::default()
    };
    let mut chaos = Chaos::start(backend, options).await;
    let stats = Arc::new(FaultStats::default());
    stats.remaining.store(FAULTS, Ordering::Relaxed);
    let port = chaos.fresh_port();
    let proxy = faulty(format!("127.0.0.1:{port}"), stats.clone(), seed.rng(1)).await;
    // Reducers reach this worker's map outputs only through the proxy.
    let flaky = NewWorker {
        listen: Some(port),
        advertise: Some(proxy.url()),
        ..NewWorker::default()
    };
    chaos.add_worker(2, flaky);
    chaos.wait_for_workers().await;

    let sha = chaos.api.upload_module(WORDCOUNT).await;
    let inputs = chaos.api.upload_texts("books").await;
    let job = chaos
        .api
        .submit(&job_spec(&sha, &inputs, reducers, &[]))
        .await;
    let info = chaos.wait(job, JOB_TIMEOUT, &seed).await;
    assert_output(&chaos.api, &info, &expected, &seed).await;

    let refetched = chaos
        .api
        .attempts(job)
        .await
        .iter()
        .filter(|a| {
            a.error
                .as_deref()
                .unwrap_or_default()
                .contains("fetching map output")
        })
        .count();
    eprintln!(
        "{seed}: {}; {refetched} reduce attempts gave up on a map output",
        stats.summary()
    );
    assert!(
        stats.injected() > 0,
        "no fault was injected ({}; {seed})",
        stats.summary()
    );
    assert!(
        chaos.logs_contain("map output fetch failed"),
        "no reducer noticed a broken fetch ({}; {seed})\n{}",
        stats.summary(),
        chaos.logs()
    );
}

per_backend!(map_output_faults_are_detected);
