//! The user API as the chaos tests use it: a client that rides out a
//! restarting coordinator, and checks of what a job made visible.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use protocol::api::{AttemptInfo, JobInfo, ModuleInfo, OutputFile, TaskInfo, WorkerInfo};
use protocol::{JobId, JobSpec, JobState};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::cluster::{Expected, assert_same_parts, texts};

/// The user API of a coordinator, tolerant of a coordinator that is
/// restarting: reads retry for a while before they give up.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(url: &str, token: &str) -> Self {
        Api {
            url: url.to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.token)
    }

    /// One `GET`: the status and body, or why there was no answer.
    async fn get_once(&self, path: &str) -> Result<(StatusCode, String), String> {
        let response = self
            .request(Method::GET, path)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok((status, text))
    }

    /// `GET` as JSON, once; an error is the coordinator being away or
    /// answering with an error.
    pub async fn try_get<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let (status, text) = self.get_once(path).await?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET {path}: {e}: {text}"))
    }

    /// `GET` as JSON, retried for up to a minute while the coordinator is
    /// unreachable or failing.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.try_get(path).await {
                Ok(value) => return value,
                Err(err) if Instant::now() > deadline => panic!("{err}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    pub async fn job(&self, job: JobId) -> JobInfo {
        self.get(&format!("/jobs/{job}")).await
    }

    pub async fn tasks(&self, job: JobId) -> Vec<TaskInfo> {
        self.get(&format!("/jobs/{job}/tasks")).await
    }

    pub async fn attempts(&self, job: JobId) -> Vec<AttemptInfo> {
        self.get(&format!("/jobs/{job}/attempts")).await
    }

    pub async fn workers(&self) -> Vec<WorkerInfo> {
        self.get("/workers").await
    }

    /// A committed part's text, or `None` when it is not committed (404).
    pub async fn try_download(&self, job: JobId, name: &str) -> Result<Option<String>, String> {
        let (status, text) = self
            .get_once(&format!("/jobs/{job}/outputs/{name}"))
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => Ok(Some(text)),
            status => Err(format!("GET output {name}: {status}: {text}")),
        }
    }

    /// The job's committed parts, downloaded, each checked against its
    /// listed size.
    pub async fn parts(&self, job: JobId) -> BTreeMap<String, String> {
        let files: Vec<OutputFile> = self.get(&format!("/jobs/{job}/outputs")).await;
        let mut parts = BTreeMap::new();
        for file in files {
            let text = self
                .try_download(job, &file.name)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("listed output {} is not there", file.name));
            assert_eq!(text.len() as u64, file.size, "size of {}", file.name);
            parts.insert(file.name, text);
        }
        parts
    }

    pub async fn upload_module(&self, path: &str) -> String {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        let response = self
            .request(Method::POST, &format!("/modules?name={name}"))
            .body(bytes)
            .send()
            .await
            .expect("POST /modules reaches the API");
        let info: ModuleInfo = crate::cluster::expect_json(response, "POST /modules").await;
        info.sha256
    }

    pub async fn upload(&self, local: &Path, dataset: &str) {
        let response = self
            .request(Method::PUT, &format!("/datasets/{dataset}"))
            .body(std::fs::read(local).unwrap())
            .send()
            .await
            .expect("PUT /datasets reaches the API");
        assert!(
            response.status().is_success(),
            "PUT /datasets/{dataset}: {}",
            response.status()
        );
    }

    /// Uploads the eight texts into `dir`; returns the glob naming them.
    pub async fn upload_texts(&self, dir: &str) -> String {
        for text in texts() {
            let name = text.file_name().unwrap().to_str().unwrap();
            self.upload(&text, &format!("{dir}/{name}")).await;
        }
        format!("{dir}/*.txt")
    }

    pub async fn submit(&self, spec: &JobSpec) -> JobId {
        let response = self
            .request(Method::POST, "/jobs")
            .json(spec)
            .send()
            .await
            .expect("POST /jobs reaches the API");
        let job: JobInfo = crate::cluster::expect_json(response, "POST /jobs").await;
        job.id
    }
}

/// A job over `inputs` with the test split size and guest arguments.
pub fn job_spec(module: &str, inputs: &str, reducers: u32, args: &[(&str, String)]) -> JobSpec {
    let mut spec = crate::cluster::spec(module, inputs, reducers);
    spec.args = args
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    spec
}

/// Asserts that the job succeeded with exactly the local run's output.
pub async fn assert_output(
    api: &Api,
    info: &JobInfo,
    expected: &Expected,
    seed: &dyn fmt::Display,
) {
    assert_eq!(
        info.state,
        JobState::Succeeded,
        "job {} ended {:?}: {:?} ({seed})",
        info.id,
        info.state,
        info.error
    );
    assert_eq!(
        info.map.total as usize, expected.map_tasks,
        "map tasks ({seed})"
    );
    assert_eq!(
        info.outputs,
        expected.parts.keys().cloned().collect::<Vec<_>>(),
        "outputs ({seed})"
    );
    assert_same_parts(&api.parts(info.id).await, &expected.parts);
}

/// Watches a running job's committed outputs: every part listed must be
/// complete and final (equal to the local run's), a part never changes or
/// disappears once listed, and a part not listed cannot be downloaded.
pub struct OutputWatch {
    seen: BTreeMap<String, String>,
    polls: usize,
}

impl OutputWatch {
    pub fn new() -> Self {
        OutputWatch {
            seen: BTreeMap::new(),
            polls: 0,
        }
    }

    /// Parts seen committed so far.
    pub fn committed(&self) -> usize {
        self.seen.len()
    }

    /// One look; a coordinator that does not answer is skipped.
    pub async fn check(
        &mut self,
        api: &Api,
        job: JobId,
        expected: &Expected,
        seed: &dyn fmt::Display,
    ) {
        self.polls += 1;
        let Ok(files) = api
            .try_get::<Vec<OutputFile>>(&format!("/jobs/{job}/outputs"))
            .await
        else {
            return;
        };
        let names: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names.len(),
            files.len(),
            "a part is listed twice: {files:?} ({seed})"
        );
        for name in self.seen.keys() {
            assert!(
                names.contains(name.as_str()),
                "committed output {name} disappeared: {files:?} ({seed})"
            );
        }
        // New parts are read in full, known ones again in turn, one a poll.
        let recheck = (!self.seen.is_empty())
            .then(|| self.seen.keys().nth(self.polls % self.seen.len()).cloned())
            .flatten();
        for file in &files {
            let want = expected
                .parts
                .get(&file.name)
                .unwrap_or_else(|| panic!("unexpected output {} ({seed})", file.name));
            assert_eq!(
                file.size,
                want.len() as u64,
                "{} is listed with {} bytes, the local run has {} ({seed})",
                file.name,
                file.size,
                want.len()
            );
            if self.seen.contains_key(&file.name) && recheck.as_ref() != Some(&file.name) {
                continue;
            }
            let Ok(text) = api.try_download(job, &file.name).await else {
                continue;
            };
            let text = text.unwrap_or_else(|| {
                panic!("{} is listed but cannot be downloaded ({seed})", file.name)
            });
            assert!(
                &text == want,
                "{} as committed ({} bytes) differs from the local run ({} bytes) ({seed})",
                file.name,
                text.len(),
                want.len()
            );
            self.seen.insert(file.name.clone(), text);
        }
        // One part not yet listed must not be downloadable.
        if let Some(name) = expected
            .parts
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .nth(self.polls % expected.parts.len())
            && let Ok(Some(text)) = api.try_download(job, name).await
        {
            // It may have been committed between the listing and the
            // download; then it must be final.
            assert!(
                text == expected.parts[name],
                "{name} was downloadable before it was listed, and differs ({seed})"
            );
        }
    }
}
