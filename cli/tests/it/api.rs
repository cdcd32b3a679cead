//! Bad requests to the public API: each gets a clear 4xx in the one JSON
//! error shape and changes nothing the API shows.

use examples_wasm::WORDCOUNT;
use protocol::api::ErrorBody;
use reqwest::{Method, RequestBuilder, StatusCode};

use crate::cluster::{TestCluster, data, per_backend, spec};

/// Everything the user API lists, to compare before and after a request.
async fn snapshot(cluster: &TestCluster) -> serde_json::Value {
    serde_json::json!({
        "modules": cluster.get_json::<serde_json::Value>("/modules").await,
        "jobs": cluster.get_json::<serde_json::Value>("/jobs").await,
        "datasets": cluster.get_json::<serde_json::Value>("/datasets").await,
        "workers": cluster.get_json::<serde_json::Value>("/workers").await,
    })
}

/// Sends `request`, expects `status` with an error body, and checks that
/// the request changed nothing.
async fn refused(cluster: &TestCluster, request: RequestBuilder, status: StatusCode) -> ErrorBody {
    let before = snapshot(cluster).await;
    let response = request.send().await.expect("the request reaches the API");
    let got = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(got, status, "{text}");
    let body: ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an error body ({e}): {text}"));
    assert_eq!(
        snapshot(cluster).await,
        before,
        "a refused request changed what the API shows"
    );
    body
}

/// A cluster without workers holding the wordcount module, one text and a
/// job (which stays queued, there being no workers), so that "changes
/// nothing" has something to change. Returns the module's sha256.
async fn populated(cluster: &TestCluster) -> String {
    let sha = cluster.upload_module(WORDCOUNT).await;
    cluster
        .upload(&data("pg-metamorphosis.txt"), "books/pg-metamorphosis.txt")
        .await;
    cluster.submit(&spec(&sha, "books/*.txt", 2)).await;
    sha
}

async fn bad_modules_are_refused(backend: &str) {
    let limit = std::fs::metadata(WORDCOUNT).unwrap().len() + 1024;
    let cluster = TestCluster::spawn_with(0, backend, |c| c.max_module_bytes = limit).await;
    populated(&cluster).await;
    let upload = |bytes: Vec<u8>| cluster.post("/modules?name=bad.wasm").body(bytes);

    let garbage = refused(
        &cluster,
        upload(b"#!/bin/sh\necho not a job\n".to_vec()),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(garbage.error.code, "bad_request");
    assert!(
        garbage.error.message.contains("not a WebAssembly"),
        "{garbage:?}"
    );

    let core = wat::parse_str("(module)").unwrap();
    assert_eq!(core, b"\0asm\x01\0\0\0");
    // A core module is fine as a WASI command, but this one has no `_start`.
    let core = refused(&cluster, upload(core), StatusCode::BAD_REQUEST).await;
    assert!(core.error.message.contains("no `_start`"), "{core:?}");
    assert!(core.error.message.contains("component"), "{core:?}");

    // Neither the job world nor wasi:cli/run: the message names both.
    let empty = wat::parse_str("(component)").unwrap();
    let empty = refused(&cluster, upload(empty), StatusCode::BAD_REQUEST).await;
    assert!(
        empty.error.message.contains("implements neither"),
        "{empty:?}"
    );
    assert!(empty.error.message.contains("quern:job/job"), "{empty:?}");
    assert!(empty.error.message.contains("wasi:cli/run"), "{empty:?}");

    let huge = refused(
        &cluster,
        upload(vec![0; limit as usize + 1]),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(huge.error.code, "payload_too_large");
    cluster.stop().await;
}

async fn bad_specs_are_refused(backend: &str) {
    let cluster = TestCluster::spawn(0, backend).await;
    let sha = populated(&cluster).await;
    let submit = |spec: &protocol::JobSpec| cluster.post("/jobs").json(spec);
    let invalid = StatusCode::UNPROCESSABLE_ENTITY;

    let no_reducers = refused(&cluster, submit(&spec(&sha, "books/*.txt", 0)), invalid).await;
    assert_eq!(no_reducers.error.code, "invalid_spec");
    assert_eq!(no_reducers.error.field.as_deref(), Some("reducers"));

    let no_inputs = refused(&cluster, submit(&spec(&sha, "nowhere/*.txt", 2)), invalid).await;
    assert_eq!(no_inputs.error.field.as_deref(), Some("inputs"));
    assert!(
        no_inputs.error.message.contains("nowhere/*.txt"),
        "{no_inputs:?}"
    );

    let unknown = "0".repeat(64);
    let no_module = refused(&cluster, submit(&spec(&unknown, "books/*.txt", 2)), invalid).await;
    assert_eq!(no_module.error.field.as_deref(), Some("module"));
    assert!(no_module.error.message.contains(&unknown), "{no_module:?}");

    let mut extra = serde_json::to_value(spec(&sha, "books/*.txt", 2)).unwrap();
    extra["colour"] = "red".into();
    let extra = refused(&cluster, cluster.post("/jobs").json(&extra), invalid).await;
    assert_eq!(extra.error.field.as_deref(), Some("colour"));
    cluster.stop().await;
}

async fn tokens_are_checked(backend: &str) {
    let cluster = TestCluster::spawn(0, backend).await;
    let sha = populated(&cluster).await;
    let valid = spec(&sha, "books/*.txt", 2);
    let submit_with =
        |token: Option<&str>| cluster.request(Method::POST, "/jobs", token).json(&valid);
    let unauthorized = StatusCode::UNAUTHORIZED;

    let wrong = refused(&cluster, submit_with(Some("qrn_not_a_token")), unauthorized).await;
    assert_eq!(wrong.error.code, "unauthorized");
    refused(&cluster, submit_with(None), unauthorized).await;
    refused(
        &cluster,
        submit_with(Some(&cluster.worker_token)),
        unauthorized,
    )
    .await;
    refused(
        &cluster,
        cluster.request(Method::GET, "/jobs", Some(&cluster.worker_token)),
        unauthorized,
    )
    .await;
    refused(
        &cluster,
        cluster.request(Method::GET, "/modules", None),
        unauthorized,
    )
    .await;
    // Nor does a user token open the worker protocol.
    let register = serde_json::json!({"address": "http://127.0.0.1:9", "slots": 1});
    refused(
        &cluster,
        cluster
            .request(Method::POST, "/worker/register", Some(&cluster.user_token))
            .json(&register),
        unauthorized,
    )
    .await;
    cluster.stop().await;
}

per_backend!(
    bad_modules_are_refused,
    bad_specs_are_refused,
    tokens_are_checked
);
