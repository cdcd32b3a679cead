//! The wasmtime embedding: one engine per process, compiled modules cached
//! by sha256 in memory and on disk, and a sandboxed instance per task with
//! a memory cap, a time limit by epoch interruption and captured logs.

mod error;
mod host;
mod logs;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use protocol::{Counters, InputFormat, Limits};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;

pub use error::{GuestError, ModuleError};
pub(crate) use host::{HostFailure, Sink, SinkError, TaskState};
pub use logs::{LogPipe, TaskLogs};

use host::{GuestInfo, InputInfo, Job, JobPre};

/// How often the epoch advances; the granularity of time limits.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What a task can fail with: the guest's fault, or the host's.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The guest failed; retrying may or may not help.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// Reading map output failed (missing, truncated or corrupt): the map
    /// task that produced `source` must run again.
    #[error("reading map output {source_index} failed: {message}")]
    FetchFailed {
        /// Which input segment of the reduce task (its map task index).
        source_index: usize,
        /// What went wrong.
        message: String,
    },
    /// The host failed (disk, input, network); not the guest's fault.
    #[error("host error: {0:#}")]
    Host(#[from] anyhow::Error),
}

impl From<std::io::Error> for TaskError {
    fn from(err: std::io::Error) -> Self {
        TaskError::Host(err.into())
    }
}

/// Process-wide runtime settings.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Where compiled modules are kept between runs; none keeps them in
    /// memory only.
    pub cache_dir: Option<PathBuf>,
}

/// A module compiled and linked, ready to instantiate in microseconds.
pub struct GuestModule {
    /// Lowercase hex sha256 of the module's bytes.
    pub sha256: String,
    pre: JobPre<TaskState>,
}

/// The process's wasmtime engine and module cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<TaskState>,
    modules: Mutex<HashMap<String, Arc<GuestModule>>>,
    cache_dir: Option<PathBuf>,
    stop_ticker: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

/// The sha256 of `bytes` in lowercase hex, the id of a module.
pub fn module_id(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn describe(err: &wasmtime::Error) -> String {
    let mut text = String::new();
    for (i, cause) in err.chain().enumerate() {
        if i > 0 {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
    }
    text
}

impl Runtime {
    /// Creates the engine and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&wasm).map_err(|e| anyhow::anyhow!(describe(&e)))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| anyhow::anyhow!(describe(&e)))?;
        Job::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!(describe(&e)))?;

        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir)?;
        }

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("quern-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })?
        };

        Ok(Runtime {
            engine,
            linker,
            modules: Mutex::default(),
            cache_dir: config.cache_dir,
            stop_ticker,
            ticker: Some(ticker),
        })
    }

    /// The module with this id if it is already compiled in memory or on
    /// disk.
    pub fn cached(&self, sha256: &str) -> Option<Arc<GuestModule>> {
        if let Some(module) = self.modules.lock().unwrap().get(sha256) {
            return Some(module.clone());
        }
        let path = self.cache_path(sha256)?;
        if !path.exists() {
            return None;
        }
        // SAFETY: the cache directory is written only by this function's
        // sibling `load`, from components this engine compiled; wasmtime
        // also checks the engine configuration before using the file.
        let component = unsafe { Component::deserialize_file(&self.engine, &path) }.ok()?;
        let module = Arc::new(self.link(sha256.to_owned(), &component).ok()?);
        self.modules
            .lock()
            .unwrap()
            .insert(sha256.to_owned(), module.clone());
        Some(module)
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        Some(dir.join(format!("{sha256}.cwasm")))
    }

    /// Validates and compiles a module, or returns the cached one.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<GuestModule>, ModuleError> {
        let sha256 = module_id(bytes);
        if let Some(module) = self.cached(&sha256) {
            return Ok(module);
        }
        check_header(bytes)?;
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            ModuleError::Invalid(format!("the module does not compile: {}", describe(&e)))
        })?;
        let module = Arc::new(self.link(sha256.clone(), &component)?);
        if let Some(path) = self.cache_path(&sha256)
            && let Ok(serialized) = component.serialize()
        {
            // Written under a temporary name and renamed, so a concurrent
            // reader never sees half a file. A failed write only costs a
            // compile later.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, serialized).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        self.modules.lock().unwrap().insert(sha256, module.clone());
        Ok(module)
    }

    fn link(&self, sha256: String, component: &Component) -> Result<GuestModule, ModuleError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .and_then(JobPre::new)
            .map_err(|e| {
                ModuleError::Invalid(format!(
                    "the module does not implement the Quern job contract (world quern:job/job@0.1.0): {}",
                    describe(&e)
                ))
            })?;
        Ok(GuestModule { sha256, pre })
    }

    /// Creates a sandboxed instance for one task and calls its `init`.
    pub fn instantiate(
        &self,
        module: &GuestModule,
        limits: &Limits,
        args: &[(String, String)],
    ) -> Result<Guest, TaskError> {
        let stdout = LogPipe::new(limits.log_bytes as usize);
        let stderr = LogPipe::new(limits.log_bytes as usize);
        // No preopened directories, no environment, no arguments, no
        // sockets, no name lookups: the guest sees clocks, randomness and
        // its own stdout/stderr only.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let memory_cap = usize::try_from(limits.memory_mib << 20).unwrap_or(usize::MAX);
        let mut store = Store::new(&self.engine, TaskState::new(wasi, memory_cap));
        store.limiter(|state| &mut state.limiter);
        let timeout = Duration::from_secs(limits.timeout_secs);
        store.set_epoch_deadline((timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64);
        store.epoch_deadline_trap();

        let mut guest = match module.pre.instantiate(&mut store) {
            Ok(job) => Guest {
                store,
                job,
                info: GuestInfo { has_combine: false },
                stdout,
                stderr,
                limits: *limits,
            },
            Err(err) => {
                return Err(classify(&mut store, &stderr, limits, "instantiation", err));
            }
        };
        let result = guest.job.call_init(&mut guest.store, args);
        guest.info = guest.finish_call("init", result)?;
        Ok(guest)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Tells apart garbage, core modules and components, so the user reads
/// what to do instead of a parser error.
fn check_header(bytes: &[u8]) -> Result<(), ModuleError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ModuleError::Invalid(
            "not a WebAssembly file (it does not start with \\0asm)".into(),
        ));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(ModuleError::Invalid(
            "this is a core WebAssembly module, not a component: build the job with \
             `--target wasm32-wasip2` (the Rust SDK does) or wrap it with `wasm-tools component new`"
                .into(),
        ));
    }
    Ok(())
}

/// Turns a wasmtime error into the failure a user can act on.
fn classify(
    store: &mut Store<TaskState>,
    stderr: &LogPipe,
    limits: &Limits,
    function: &str,
    err: wasmtime::Error,
) -> TaskError {
    let state = store.data_mut();
    match state.failure.take() {
        Some(HostFailure::Guest(err)) => return err.into(),
        Some(HostFailure::Io(err)) => return crate::reduce::merge_error(err),
        None => {}
    }
    if state.limiter.hit {
        return GuestError::OutOfMemory {
            limit_mib: limits.memory_mib,
        }
        .into();
    }
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return GuestError::Timeout {
            limit: Duration::from_secs(limits.timeout_secs),
        }
        .into();
    }
    let mut message = match err.downcast_ref::<Trap>() {
        Some(trap) => format!("wasm trap: {trap}"),
        None => describe(&err),
    };
    if let Some(panic) = panic_message(&stderr.contents()) {
        message = format!("{panic} ({message})");
    }
    GuestError::Trap {
        function: function.into(),
        message,
    }
    .into()
}

/// The last Rust-style panic message in a guest's stderr.
fn panic_message(stderr: &str) -> Option<String> {
    let at = stderr.rfind("panicked at ")?;
    let text = &stderr[at..];
    let end = text.find("\nnote:").unwrap_or(text.len());
    let text = text[..end].trim().replace('\n', " ");
    Some(text.chars().take(2000).collect())
}

/// An instantiated guest, owned by one task.
pub struct Guest {
    store: Store<TaskState>,
    job: Job,
    info: GuestInfo,
    stdout: LogPipe,
    stderr: LogPipe,
    limits: Limits,
}

impl Guest {
    /// Whether the guest implements `combine`.
    pub fn has_combine(&self) -> bool {
        self.info.has_combine
    }

    fn finish_call<T>(
        &mut self,
        function: &str,
        result: wasmtime::Result<Result<T, String>>,
    ) -> Result<T, TaskError> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(GuestError::Failed {
                function: function.into(),
                message,
            }
            .into()),
            Err(err) => Err(classify(
                &mut self.store,
                &self.stderr,
                &self.limits,
                function,
                err,
            )),
        }
    }

    /// Calls `map` with a pair batch of records from `file`.
    pub fn map(
        &mut self,
        file: &str,
        format: InputFormat,
        records: &[u8],
    ) -> Result<(), TaskError> {
        let input = InputInfo {
            file: file.to_owned(),
            format: format.as_str().to_owned(),
        };
        let result = self.job.call_map(&mut self.store, &input, records);
        self.finish_call("map", result)
    }

    /// Calls `reduce` with a group batch.
    pub fn reduce(&mut self, groups: &[u8], last_complete: bool) -> Result<(), TaskError> {
        self.store.data_mut().partial_open = !last_complete;
        let result = self.job.call_reduce(&mut self.store, groups, last_complete);
        self.store.data_mut().partial_open = false;
        self.finish_call("reduce", result)
    }

    /// Calls `combine` with a group batch.
    pub fn combine(&mut self, groups: &[u8]) -> Result<(), TaskError> {
        let result = self.job.call_combine(&mut self.store, groups);
        self.finish_call("combine", result)
    }

    pub(crate) fn state(&mut self) -> &mut TaskState {
        self.store.data_mut()
    }

    /// The guest's user counters so far.
    pub fn counters(&self) -> &Counters {
        &self.store.data().counters
    }

    /// The captured stdout and stderr.
    pub fn logs(&self) -> TaskLogs {
        TaskLogs {
            stdout: self.stdout.contents(),
            stderr: self.stderr.contents(),
        }
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Guest>();
    is_send::<ResourceTable>();
}
