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

    let nul = refused(
        &cluster,
        submit(&spec(&sha, "books/\u{0}*.txt", 2)),
        invalid,
    )
    .await;
    assert_eq!(nul.error.field.as_deref(), Some("inputs"));

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

/// A worker's reports are checked: a map-output index that cannot
/// describe a file, a reduce that reports success without staging its
/// output, and a stage over a committed output are all refused with a
/// 409, and the job still finishes once the worker does it right.
async fn worker_reports_are_checked(backend: &str) {
    use protocol::worker_api::{Lease, RegisterResponse};
    use protocol::{JobState, TaskKind};

    let cluster = TestCluster::spawn(0, backend).await;
    let sha = cluster.upload_module(WORDCOUNT).await;
    cluster
        .upload(&data("pg-metamorphosis.txt"), "books/pg-metamorphosis.txt")
        .await;
    let job = cluster.submit(&spec(&sha, "books/*.txt", 1)).await;
    let registered: RegisterResponse = cluster.register_worker().await;
    let token = registered.token.clone();
    let post = |path: &str, body: serde_json::Value| {
        cluster
            .request(Method::POST, path, Some(&token))
            .json(&body)
    };
    let worker = registered.worker_id.0;
    // The cluster's worker token only registers; a worker's own token acts
    // for that worker alone.
    let join = cluster
        .request(Method::POST, "/worker/lease", Some(&cluster.worker_token))
        .json(&serde_json::json!({"worker_id": worker, "wait_ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(join.status(), StatusCode::UNAUTHORIZED);
    let other = cluster.register_worker().await;
    let impostor = cluster
        .request(Method::POST, "/worker/lease", Some(&other.token))
        .json(&serde_json::json!({"worker_id": worker, "wait_ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(impostor.status(), StatusCode::FORBIDDEN);
    let lease = || async {
        let lease: Lease = post(
            "/worker/lease",
            serde_json::json!({"worker_id": worker, "wait_ms": 0}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        lease
    };
    let complete = |attempt: String, result: serde_json::Value| {
        post(
            &format!("/worker/attempts/{attempt}/complete"),
            serde_json::json!({
                "worker_id": worker, "result": result, "counters": {},
                "stdout": "", "stderr": "",
            }),
        )
    };
    let status = |request: RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    };

    // A token acts for its own worker only.
    let (code, text) = status(post(
        "/worker/lease",
        serde_json::json!({"worker_id": "w-never-registered", "wait_ms": 0}),
    ))
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{text}");

    let map = lease().await;
    assert_eq!(map.kind, TaskKind::Map);
    let bad_index = serde_json::json!({"kind": "map", "index": {"partitions": [
        {"offset": u64::MAX, "length": 10, "records": 1}
    ]}});
    let (code, text) = status(complete(map.attempt.to_string(), bad_index)).await;
    assert_eq!(code, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("starts at byte"), "{text}");
    let good_index = serde_json::json!({"kind": "map", "index": {"partitions": [
        {"offset": 0, "length": 10, "records": 1}
    ]}});
    let (code, text) = status(complete(map.attempt.to_string(), good_index)).await;
    assert_eq!(code, StatusCode::OK, "{text}");

    let reduce = lease().await;
    assert_eq!(reduce.kind, TaskKind::Reduce);
    // Shuffle tokens are scoped to the worker whose outputs they open:
    // the reducer presents to the mapper what the mapper's own lease
    // carried, and the job's secret (the same for every worker) is sent
    // to none.
    let protocol::worker_api::TaskWork::Reduce { sources, .. } = &reduce.work else {
        panic!("a reduce lease without reduce work")
    };
    assert_eq!(sources[0].worker.0, worker);
    assert_eq!(sources[0].token, map.job_token);
    assert_eq!(map.job_token.len(), 64);
    let done = serde_json::json!({"kind": "reduce", "records": 1, "bytes": 4});
    let (code, text) = status(complete(reduce.attempt.to_string(), done.clone())).await;
    assert_eq!(code, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("staged no output"), "{text}");
    let info: protocol::api::JobInfo = cluster.get_json(&format!("/jobs/{job}")).await;
    assert_eq!(info.state, JobState::Reducing);

    let stage_as = |token: String| {
        cluster
            .request(
                Method::PUT,
                &format!("/worker/attempts/{}/output", reduce.attempt),
                Some(&token),
            )
            .body("one\t1\n")
    };
    let stage = || stage_as(token.clone());
    // Another worker cannot stage this worker's output.
    let (code, text) = status(stage_as(other.token.clone())).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{text}");
    let (code, text) = status(stage()).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{text}");
    let (code, text) = status(complete(reduce.attempt.to_string(), done)).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    let info: protocol::api::JobInfo = cluster.get_json(&format!("/jobs/{job}")).await;
    assert_eq!(info.state, JobState::Succeeded);
    // The committed output cannot be replaced.
    let (code, text) = status(stage()).await;
    assert_eq!(code, StatusCode::CONFLICT, "{text}");
    assert_eq!(
        cluster
            .parts(job)
            .await
            .get("part-r-00000")
            .map(String::as_str),
        Some("one\t1\n")
    );
    // A revoked worker's token stops working; unknown workers are 404.
    let revoke = cluster
        .request(
            Method::DELETE,
            &format!("/workers/{worker}"),
            Some(&cluster.user_token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let (code, text) = status(post(
        "/worker/heartbeat",
        serde_json::json!({"worker_id": worker, "running": [], "holding": []}),
    ))
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{text}");
    let workers: Vec<protocol::api::WorkerInfo> = cluster.get_json("/workers").await;
    let listed = workers.iter().find(|w| w.id.0 == worker).expect("listed");
    assert_eq!(listed.state, "dead");
    refused(
        &cluster,
        cluster.request(
            Method::DELETE,
            "/workers/w-nobody",
            Some(&cluster.user_token),
        ),
        StatusCode::NOT_FOUND,
    )
    .await;
    cluster.stop().await;
}

/// Dataset names that cannot be one file in every store and URL, and
/// files under files, get a 400 or 409 (they got a 500, or were stored
/// under another name); a file a running job reads cannot be changed.
async fn bad_dataset_requests_are_4xx(backend: &str) {
    let cluster = TestCluster::spawn(0, backend).await;
    populated(&cluster).await;
    let put = |path: &str| {
        cluster
            .request(
                Method::PUT,
                &format!("/datasets/{path}"),
                Some(&cluster.user_token),
            )
            .body("word\n")
    };
    let long = "x".repeat(300);
    for path in [
        "x%2541",
        "h%23x",
        "a%01b",
        "a%0Ab",
        "a%00b",
        long.as_str(),
        "a/..%2Fb",
    ] {
        let body = refused(&cluster, put(path), StatusCode::BAD_REQUEST).await;
        assert!(
            body.error.message.contains("invalid dataset path"),
            "{path}: {body:?}"
        );
    }
    // A file under a file, and a file where a directory is.
    let under = refused(
        &cluster,
        put("books/pg-metamorphosis.txt/x"),
        StatusCode::CONFLICT,
    )
    .await;
    assert!(under.error.message.contains("is a file"), "{under:?}");
    let over = refused(&cluster, put("books"), StatusCode::CONFLICT).await;
    assert!(over.error.message.contains("is a directory"), "{over:?}");
    // The queued job (no workers) reads books/pg-metamorphosis.txt.
    let in_use = refused(
        &cluster,
        put("books/pg-metamorphosis.txt"),
        StatusCode::CONFLICT,
    )
    .await;
    assert!(in_use.error.message.contains("reads it"), "{in_use:?}");
    let delete = cluster.request(
        Method::DELETE,
        "/datasets/books/pg-metamorphosis.txt",
        Some(&cluster.user_token),
    );
    refused(&cluster, delete, StatusCode::CONFLICT).await;

    // A NUL in a listing prefix or a module name was a 500 on Postgres
    // (found by scripts/test-api); a control character in a worker's
    // address is refused too.
    refused(
        &cluster,
        cluster.get("/datasets?prefix=%00x"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let module = std::fs::read(examples_wasm::WORDCOUNT).unwrap();
    refused(
        &cluster,
        cluster
            .request(
                Method::POST,
                "/modules?name=a%00b",
                Some(&cluster.user_token),
            )
            .body(module),
        StatusCode::BAD_REQUEST,
    )
    .await;
    refused(
        &cluster,
        cluster
            .request(
                Method::POST,
                "/worker/register",
                Some(&cluster.worker_token),
            )
            .json(&serde_json::json!({"address": "http://a\u{0}b", "slots": 1})),
        StatusCode::BAD_REQUEST,
    )
    .await;

    // An empty file reads back empty (it was a 500).
    let empty = cluster
        .request(
            Method::PUT,
            "/datasets/empty.txt",
            Some(&cluster.user_token),
        )
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::CREATED);
    let read = cluster.get("/datasets/empty.txt").send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert!(read.bytes().await.unwrap().is_empty());

    // The worker side: bad paths are 400, bad ranges 416.
    let node = cluster.register_worker().await.token;
    let worker_get = |path: &str, range: Option<&str>| {
        let request = cluster.request(
            Method::GET,
            &format!("/worker/datasets/{path}"),
            Some(&node),
        );
        match range {
            Some(range) => request.header("range", range),
            None => request,
        }
    };
    for path in ["..%2Fquern.db", "a%01b"] {
        let response = worker_get(path, None).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    // Every read says what it is, an empty file too (it had no
    // content type).
    for (path, range) in [
        ("empty.txt", None),
        ("books/pg-metamorphosis.txt", None),
        ("books/pg-metamorphosis.txt", Some("bytes=3-9")),
    ] {
        let response = worker_get(path, range).send().await.unwrap();
        assert!(response.status().is_success(), "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream",
            "{path} {range:?}"
        );
    }
    let file = "books/pg-metamorphosis.txt";
    let size = std::fs::metadata(data("pg-metamorphosis.txt"))
        .unwrap()
        .len();
    for range in ["bytes=5-2", "bytes=0-1,5-6", "bytes=99999999-", "lines=1-2"] {
        let response = worker_get(file, Some(range)).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{range}"
        );
        assert_eq!(
            response.headers()["content-range"].to_str().unwrap(),
            format!("bytes */{size}")
        );
    }
    let response = worker_get(file, Some("bytes=10-18446744073709551615"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()["content-range"].to_str().unwrap(),
        format!("bytes 10-{}/{size}", size - 1)
    );
    assert_eq!(response.bytes().await.unwrap().len() as u64, size - 10);
    cluster.stop().await;
}

/// The OpenAPI document is served without a token, is OpenAPI 3.1, and
/// describes every operation with its schemas and security.
async fn the_openapi_document_describes_the_api(backend: &str) {
    let cluster = TestCluster::spawn(0, backend).await;
    let node = cluster.register_worker().await.token;
    let response = cluster
        .request(Method::GET, "/openapi.json", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: serde_json::Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let operations = [
        ("get", "/api/v1/jobs"),
        ("post", "/api/v1/jobs"),
        ("get", "/api/v1/jobs/{id}"),
        ("post", "/api/v1/jobs/{id}/cancel"),
        ("get", "/api/v1/jobs/{id}/tasks"),
        ("get", "/api/v1/jobs/{id}/attempts"),
        ("get", "/api/v1/jobs/{id}/attempts/{attempt}/logs"),
        ("get", "/api/v1/jobs/{id}/outputs"),
        ("get", "/api/v1/jobs/{id}/outputs/{name}"),
        ("get", "/api/v1/jobs/{id}/events"),
        ("get", "/api/v1/modules"),
        ("post", "/api/v1/modules"),
        ("get", "/api/v1/modules/{sha256}"),
        ("delete", "/api/v1/modules/{sha256}"),
        ("get", "/api/v1/datasets"),
        ("get", "/api/v1/datasets/{path}"),
        ("put", "/api/v1/datasets/{path}"),
        ("delete", "/api/v1/datasets/{path}"),
        ("get", "/api/v1/workers"),
        ("delete", "/api/v1/workers/{id}"),
        ("post", "/api/v1/worker/register"),
        ("post", "/api/v1/worker/lease"),
        ("post", "/api/v1/worker/heartbeat"),
        ("post", "/api/v1/worker/attempts/{attempt}/complete"),
        ("put", "/api/v1/worker/attempts/{attempt}/output"),
        ("get", "/api/v1/worker/modules/{sha256}"),
        ("get", "/api/v1/worker/datasets/{path}"),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let documented: usize = paths
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        operations.len(),
        "{:#?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (method, path) in operations {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let scheme = match path {
            "/api/v1/worker/register" => "worker",
            p if p.starts_with("/api/v1/worker/") => "node",
            _ => "user",
        };
        assert!(
            operation["security"][0][scheme].is_array(),
            "{method} {path} does not ask for the {scheme} token"
        );
        assert!(
            operation["responses"]["200"].is_object()
                || operation["responses"]["201"].is_object()
                || operation["responses"]["204"].is_object(),
            "{method} {path}"
        );
    }
    for schema in [
        "JobSpec",
        "JobInfo",
        "ErrorBody",
        "Lease",
        "CompleteRequest",
        "Limits",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no schema {schema}"
        );
    }
    // Every path the document names is routed: an unknown id is a 404 in
    // the JSON error shape, never the router's empty 404.
    let missing = cluster.get("/jobs/999999").send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: ErrorBody = missing.json().await.unwrap();
    assert_eq!(body.error.code, "not_found");
    let nowhere = cluster.get("/no/such/route").send().await.unwrap();
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    let body: ErrorBody = nowhere.json().await.unwrap();
    assert_eq!(body.error.code, "not_found");
    // Rejections are JSON too (they were axum's plain text).
    let bad_query = refused(
        &cluster,
        cluster.get("/jobs?limit=abc"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(bad_query.error.message.contains("query"), "{bad_query:?}");
    let huge = format!("{{\"module\": \"{}\"}}", "x".repeat(3 << 20));
    let too_large = refused(
        &cluster,
        // The server answers before reading the whole body and closes the
        // connection: it must not go back to the client's pool.
        cluster
            .post("/jobs")
            .header("content-type", "application/json")
            .header("connection", "close")
            .body(huge),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(too_large.error.code, "payload_too_large");
    let not_json = refused(
        &cluster,
        cluster
            .request(Method::POST, "/worker/lease", Some(&node))
            .body("{}"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert_eq!(not_json.error.code, "unsupported_media_type");
    cluster.stop().await;
}

per_backend!(
    the_openapi_document_describes_the_api,
    bad_dataset_requests_are_4xx,
    bad_modules_are_refused,
    bad_specs_are_refused,
    tokens_are_checked,
    worker_reports_are_checked
);
