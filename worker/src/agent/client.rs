//! The coordinator's worker endpoints, as typed calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use protocol::worker_api::{
    CompleteRequest, CompleteResponse, HeartbeatRequest, HeartbeatResponse, Lease, LeaseRequest,
    RegisterRequest, RegisterResponse,
};
use protocol::{AttemptId, WorkerId};
use reqwest::StatusCode;

/// A client of one coordinator.
#[derive(Clone)]
pub struct Coordinator {
    http: reqwest::Client,
    base: String,
    /// The cluster's worker token: registers, nothing else.
    join_token: String,
    /// The token each registration returned, by the id it named. A worker
    /// declared dead registers again under a new id while its old
    /// attempts run on; their reports go out under the old id's token.
    tokens: Arc<Mutex<HashMap<WorkerId, String>>>,
    /// The latest registration's token, for calls about no worker in
    /// particular (modules, inputs).
    latest: Arc<Mutex<Option<String>>>,
}

impl Coordinator {
    /// A client for `base` (e.g. `http://127.0.0.1:7878`) with the worker token.
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Coordinator {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            join_token: token.to_owned(),
            tokens: Arc::default(),
            latest: Arc::default(),
        })
    }

    /// The token to act as `worker` with (the latest one when `None`).
    fn token(&self, worker: Option<&WorkerId>) -> String {
        if let Some(token) = worker.and_then(|w| self.tokens.lock().unwrap().get(w).cloned()) {
            return token;
        }
        self.latest
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| self.join_token.clone())
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/worker{path}", self.base)
    }

    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        body: &B,
        timeout: Duration,
    ) -> anyhow::Result<Option<R>> {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .with_context(|| format!("calling the coordinator at {}", self.base))?;
        match response.status() {
            StatusCode::NO_CONTENT => Ok(None),
            status if status.is_success() => Ok(Some(response.json().await?)),
            status => {
                let text = response.text().await.unwrap_or_default();
                bail!("coordinator answered {status}: {text}")
            }
        }
    }

    /// Registers.
    pub async fn register(&self, address: &str, slots: u32) -> anyhow::Result<RegisterResponse> {
        let req = RegisterRequest {
            address: address.to_owned(),
            slots,
        };
        let response: RegisterResponse = self
            .post("/register", &self.join_token, &req, Duration::from_secs(10))
            .await?
            .context("empty registration response")?;
        self.tokens
            .lock()
            .unwrap()
            .insert(response.worker_id.clone(), response.token.clone());
        *self.latest.lock().unwrap() = Some(response.token.clone());
        Ok(response)
    }

    /// Long-polls for a lease.
    pub async fn lease(&self, worker: &WorkerId, wait: Duration) -> anyhow::Result<Option<Lease>> {
        let req = LeaseRequest {
            worker_id: worker.clone(),
            wait_ms: wait.as_millis() as u64,
        };
        self.post(
            "/lease",
            &self.token(Some(worker)),
            &req,
            wait + Duration::from_secs(10),
        )
        .await
    }

    /// Heartbeats.
    pub async fn heartbeat(&self, req: &HeartbeatRequest) -> anyhow::Result<HeartbeatResponse> {
        self.post(
            "/heartbeat",
            &self.token(Some(&req.worker_id)),
            req,
            Duration::from_secs(10),
        )
        .await?
        .context("empty heartbeat response")
    }

    /// Reports an attempt's end.
    pub async fn complete(
        &self,
        attempt: AttemptId,
        req: &CompleteRequest,
    ) -> anyhow::Result<bool> {
        let response: Option<CompleteResponse> = self
            .post(
                &format!("/attempts/{attempt}/complete"),
                &self.token(Some(&req.worker_id)),
                req,
                Duration::from_secs(30),
            )
            .await?;
        Ok(response.is_some_and(|r| r.accepted))
    }

    /// Downloads a module's bytes.
    pub async fn module(&self, sha256: &str) -> anyhow::Result<bytes::Bytes> {
        let response = self
            .http
            .get(self.url(&format!("/modules/{sha256}")))
            .bearer_auth(self.token(None))
            .send()
            .await?
            .error_for_status()?;
        Ok(response.bytes().await?)
    }

    /// Opens input bytes of a dataset file from `offset` on. `size` is
    /// the file's size when the job was planned: a file that has another
    /// size now (or no longer reaches `offset`) is an error, never a short
    /// or empty split.
    pub async fn dataset(
        &self,
        path: &str,
        offset: u64,
        size: Option<u64>,
    ) -> anyhow::Result<reqwest::Response> {
        let response = self
            .http
            .get(self.url(&format!("/datasets/{}", protocol::dataset::url_path(path))))
            .bearer_auth(self.token(None))
            .header("range", format!("bytes={offset}-"))
            .send()
            .await?;
        if response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            bail!("the file is shorter than byte {offset}: it changed since the job was planned");
        }
        let response = response.error_for_status()?;
        let now = response
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit_once('/'))
            .and_then(|(_, total)| total.parse::<u64>().ok());
        if let (Some(planned), Some(now)) = (size, now)
            && planned != now
        {
            bail!("the file has {now} bytes, {planned} when the job was planned: it changed since");
        }
        Ok(response)
    }

    /// Stages the output of `worker`'s reduce attempt. False when the
    /// attempt lost its lease.
    pub async fn upload_output(
        &self,
        worker: &WorkerId,
        attempt: AttemptId,
        file: tokio::fs::File,
    ) -> anyhow::Result<bool> {
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 << 10,
        ));
        let response = self
            .http
            .put(self.url(&format!("/attempts/{attempt}/output")))
            .bearer_auth(self.token(Some(worker)))
            .body(body)
            .send()
            .await?;
        match response.status() {
            StatusCode::CONFLICT | StatusCode::NOT_FOUND => Ok(false),
            status if status.is_success() => Ok(true),
            status => bail!(
                "staging the output failed: {status}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
}
