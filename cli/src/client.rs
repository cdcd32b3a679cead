//! The public API as the CLI uses it: finds the coordinator and the token,
//! uploads modules and inputs, submits and follows jobs.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use protocol::JobSpec;
use protocol::api::{DatasetFile, ErrorBody, JobInfo, ModuleInfo, OutputFile};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

/// Where the coordinator is and how to authenticate.
#[derive(Debug, clap::Args, Clone)]
pub struct ClientArgs {
    /// Coordinator URL.
    #[arg(
        long,
        env = "QUERN_COORDINATOR",
        default_value = "http://127.0.0.1:7878",
        global = true
    )]
    pub coordinator: String,
    /// User token (default: the token `quern up` keeps in ./quern-data).
    #[arg(long, env = "QUERN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// An API client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// The token `quern serve`/`quern up` writes for the local user.
pub const TOKEN_FILE: &str = "token";
/// The default data directory of `quern up` and `quern serve`.
pub const DEFAULT_DATA_DIR: &str = "quern-data";

impl Client {
    /// A client from the command line, finding the token in `./quern-data`
    /// when none is given.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = match &args.token {
            Some(token) => token.clone(),
            None => {
                let path = Path::new(DEFAULT_DATA_DIR).join(TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_owned())
                    .with_context(|| {
                        format!(
                            "no token: pass --token or QUERN_TOKEN, or run from the directory where `quern up` \
                             keeps {}",
                            path.display()
                        )
                    })?
            }
        };
        Ok(Client {
            http: reqwest::Client::new(),
            base: args.coordinator.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn check(&self, response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => match body.error.field {
                Some(field) => bail!("{status}: {field}: {}", body.error.message),
                None => bail!("{status}: {}", body.error.message),
            },
            Err(_) => bail!("{status}: {text}"),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        Ok(self.check(response).await?.json().await?)
    }

    /// Uploads a module.
    pub async fn upload_module(&self, path: &Path) -> anyhow::Result<ModuleInfo> {
        let bytes = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("module.wasm");
        let response = self
            .http
            .post(format!("{}?name={}", self.url("/modules"), urlencode(name)))
            .bearer_auth(&self.token)
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        Ok(self.check(response).await?.json().await?)
    }

    /// Uploads a local file as dataset `dest` (streamed).
    pub async fn upload_file(&self, path: &Path, dest: &str) -> anyhow::Result<DatasetFile> {
        protocol::dataset::check_path(dest).map_err(|e| anyhow::anyhow!("{e}"))?;
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 << 10,
        ));
        let response = self
            .http
            .put(self.url(&format!("/datasets/{}", protocol::dataset::url_path(dest))))
            .bearer_auth(&self.token)
            .body(body)
            .send()
            .await?;
        Ok(self.check(response).await?.json().await?)
    }

    /// Uploads a local input under a content-addressed path (so a running
    /// job never sees its input change) unless it is already there.
    pub async fn upload_input(&self, path: &Path) -> anyhow::Result<String> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no file name", path.display()))?;
        let digest = {
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
                let mut file = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let mut hasher = Sha256::new();
                std::io::copy(&mut file, &mut hasher)?;
                Ok(hex::encode(hasher.finalize()))
            })
            .await??
        };
        let dest = format!("inputs/{}/{name}", &digest[..16]);
        let existing: Vec<DatasetFile> = self
            .get_json(&format!("/datasets?prefix={}", urlencode(&dest)))
            .await?;
        if !existing.iter().any(|f| f.path == dest) {
            self.upload_file(path, &dest).await?;
        }
        Ok(dest)
    }

    /// Submits a job.
    pub async fn submit(&self, spec: &JobSpec) -> anyhow::Result<JobInfo> {
        let response = self
            .http
            .post(self.url("/jobs"))
            .bearer_auth(&self.token)
            .json(spec)
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        Ok(self.check(response).await?.json().await?)
    }

    /// An uploaded module.
    pub async fn module(&self, sha256: &str) -> anyhow::Result<ModuleInfo> {
        self.get_json(&format!("/modules/{sha256}")).await
    }

    /// One job.
    pub async fn job(&self, id: &str) -> anyhow::Result<JobInfo> {
        self.get_json(&format!("/jobs/{id}")).await
    }

    /// Recent jobs.
    pub async fn jobs(&self) -> anyhow::Result<Vec<JobInfo>> {
        self.get_json("/jobs").await
    }

    /// Cancels a job.
    pub async fn cancel(&self, id: &str) -> anyhow::Result<JobInfo> {
        let response = self
            .http
            .post(self.url(&format!("/jobs/{id}/cancel")))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(self.check(response).await?.json().await?)
    }

    /// A job's committed outputs.
    pub async fn outputs(&self, id: &str) -> anyhow::Result<Vec<OutputFile>> {
        self.get_json(&format!("/jobs/{id}/outputs")).await
    }

    /// Downloads every output of a job into `dir`.
    pub async fn download(&self, id: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        tokio::fs::create_dir_all(dir).await?;
        let mut written = Vec::new();
        for output in self.outputs(id).await? {
            let response = self
                .http
                .get(self.url(&format!("/jobs/{id}/outputs/{}", output.name)))
                .bearer_auth(&self.token)
                .send()
                .await?;
            let response = self.check(response).await?;
            let path = dir.join(&output.name);
            let tmp = dir.join(format!(".{}.part", output.name));
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                tokio::io::AsyncWriteExt::write_all(&mut file, &chunk?).await?;
            }
            tokio::io::AsyncWriteExt::flush(&mut file).await?;
            tokio::fs::rename(&tmp, &path).await?;
            written.push(path);
        }
        Ok(written)
    }

    /// Follows a job's progress stream, calling `on_update` for each event,
    /// until the job finishes. Reconnects if the stream drops (for
    /// instance while the coordinator restarts).
    pub async fn follow(
        &self,
        id: &str,
        mut on_update: impl FnMut(&JobInfo),
    ) -> anyhow::Result<JobInfo> {
        let mut failures = 0;
        loop {
            match self.follow_once(id, &mut on_update).await {
                Ok(Some(job)) => return Ok(job),
                Ok(None) => {}
                Err(err) => {
                    failures += 1;
                    if failures > 600 {
                        return Err(err);
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    async fn follow_once(
        &self,
        id: &str,
        on_update: &mut impl FnMut(&JobInfo),
    ) -> anyhow::Result<Option<JobInfo>> {
        let response = self
            .http
            .get(self.url(&format!("/jobs/{id}/events")))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            bail!("no job {id}");
        }
        let mut body = self.check(response).await?.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue;
                }
                if let Ok(job) = serde_json::from_str::<JobInfo>(&data) {
                    on_update(&job);
                    if job.state.is_finished() {
                        return Ok(Some(job));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
