//! The wasmtime embedding: one engine per process, compiled modules cached
//! by sha256 in memory and on disk, and a sandboxed instance per task with
//! a memory cap, a time limit by epoch interruption and captured logs.
//! Emitted pairs leave through a [`PairSink`] the caller provides, so this
//! crate knows the guest contract but nothing of sorting, shuffling or
//! output files; the coordinator uses it alone to check uploads.

mod command;
mod error;
mod host;
mod logs;
mod sleep;

use std::any::Any;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use protocol::{Counters, InputFormat, Limits, ModuleKind};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Module, Precompiled, Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;

pub use command::{ChunkedStdin, CommandRun, CommandSpec, LineSink};
pub use error::{GuestError, ModuleError, SourceError, io_task_error};

use command::{CommandPreKind, CommandState};
pub(crate) use host::{HostFailure, TaskState};
pub use host::{MAX_FIELD_BYTES, PairSink, SinkError, VALUES_BATCH_BYTES, ValueSource};
pub use logs::{LogPipe, TaskLogs};

use host::{GuestInfo, InputInfo, Job, JobPre, Phase, TaskInfo};
use sleep::Stop;

/// The version of the job contract this runtime implements.
pub const CONTRACT: &str = "quern:job@0.2.0";
/// The world a job component implements.
const JOB_WORLD: &str = "quern:job/job@0.2.0";

/// Stops a task's guest from another thread: once set, the guest traps at
/// its next epoch check (within one `EPOCH_TICK` while wasm code runs) and
/// the task ends with [`TaskError::Cancelled`]. Host loops check it too.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks the task to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the task was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(TaskError::Cancelled)` once cancelled: for host loops.
    pub fn check(&self) -> Result<(), TaskError> {
        if self.is_cancelled() {
            Err(TaskError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// The error a guest call ends with when its task is cancelled.
#[derive(Debug)]
struct CancelledTrap;

impl std::fmt::Display for CancelledTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the attempt was cancelled")
    }
}

impl std::error::Error for CancelledTrap {}

/// Arms a store's time limit and cancel flag: the epoch callback runs every
/// `EPOCH_TICK` while wasm code runs and ends the call once the wall-clock
/// deadline has passed or the flag is set.
fn arm_limits<T>(store: &mut Store<T>, stop: &Stop) {
    let Stop { deadline, cancel } = stop.clone();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if cancel.is_cancelled() {
            return Err(wasmtime::Error::new(CancelledTrap));
        }
        if std::time::Instant::now() >= deadline {
            return Err(Trap::Interrupt.into());
        }
        Ok(wasmtime::UpdateDeadline::Continue(1))
    });
}

/// What a task is, as the guest's `init` is told.
#[derive(Debug, Clone)]
pub struct TaskPlan {
    /// Map or reduce.
    pub phase: protocol::TaskKind,
    /// Whether the job combines map output.
    pub combine: bool,
    /// Bytes of pairs a map task's guest may hold back to combine them.
    pub buffer_bytes: u64,
    /// Stops the task from outside.
    pub cancel: Cancel,
}

impl TaskPlan {
    /// A map task.
    pub fn map(combine: bool, buffer_bytes: u64) -> Self {
        TaskPlan {
            phase: protocol::TaskKind::Map,
            combine,
            buffer_bytes: if combine { buffer_bytes } else { 0 },
            cancel: Cancel::default(),
        }
    }

    /// A reduce task.
    pub fn reduce() -> Self {
        TaskPlan {
            phase: protocol::TaskKind::Reduce,
            combine: false,
            buffer_bytes: 0,
            cancel: Cancel::default(),
        }
    }
}

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
    /// The attempt was cancelled from outside (its lease was taken back).
    #[error("the attempt was cancelled")]
    Cancelled,
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
    loaded: Loaded,
}

enum Loaded {
    /// A component of the `quern:job` world.
    Job(JobPre<TaskState>),
    /// A WASI command, for streaming mode.
    Command(CommandPreKind),
}

impl GuestModule {
    /// A `quern:job` component or a WASI command.
    pub fn kind(&self) -> ModuleKind {
        match self.loaded {
            Loaded::Job(_) => ModuleKind::Job,
            Loaded::Command(_) => ModuleKind::Command,
        }
    }
}

/// A compiled module of either binary format.
enum Compiled {
    Component(Component),
    Core(Module),
}

/// The process's wasmtime engine and module cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<TaskState>,
    command_linker: Linker<CommandState>,
    core_linker: wasmtime::Linker<CommandState>,
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
        sleep::bound_sleeps(&mut linker).map_err(|e| anyhow::anyhow!(describe(&e)))?;
        let mut command_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut command_linker)
            .map_err(|e| anyhow::anyhow!(describe(&e)))?;
        sleep::bound_sleeps(&mut command_linker).map_err(|e| anyhow::anyhow!(describe(&e)))?;
        let mut core_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut core_linker, CommandState::p1)
            .map_err(|e| anyhow::anyhow!(describe(&e)))?;
        sleep::bound_p1_sleeps(&mut core_linker).map_err(|e| anyhow::anyhow!(describe(&e)))?;

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
            command_linker,
            core_linker,
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
        // sibling `load`, from modules this engine compiled; wasmtime also
        // checks the engine configuration before using the file.
        let compiled = match Engine::detect_precompiled_file(&path).ok()?? {
            Precompiled::Component => Compiled::Component(
                unsafe { Component::deserialize_file(&self.engine, &path) }.ok()?,
            ),
            Precompiled::Module => {
                Compiled::Core(unsafe { Module::deserialize_file(&self.engine, &path) }.ok()?)
            }
        };
        let module = Arc::new(self.link(sha256.to_owned(), &compiled).ok()?);
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
        let compiled = match check_header(bytes)? {
            Format::Component => Component::new(&self.engine, bytes).map(Compiled::Component),
            Format::Core => Module::new(&self.engine, bytes).map(Compiled::Core),
        }
        .map_err(|e| {
            ModuleError::Invalid(format!("the module does not compile: {}", describe(&e)))
        })?;
        let module = Arc::new(self.link(sha256.clone(), &compiled)?);
        let serialized = match &compiled {
            Compiled::Component(c) => c.serialize(),
            Compiled::Core(m) => m.serialize(),
        };
        if let Some(path) = self.cache_path(&sha256)
            && let Ok(serialized) = serialized
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

    /// Links a compiled module as a job component or a WASI command, or
    /// says what it lacks to be either.
    fn link(&self, sha256: String, compiled: &Compiled) -> Result<GuestModule, ModuleError> {
        let loaded = match compiled {
            Compiled::Component(component) => {
                let as_job = self.linker.instantiate_pre(component).and_then(JobPre::new);
                match as_job {
                    Ok(pre) => Loaded::Job(pre),
                    Err(job_err) => {
                        let as_command = self
                            .command_linker
                            .instantiate_pre(component)
                            .and_then(wasmtime_wasi::p2::bindings::sync::CommandPre::new);
                        match as_command {
                            Ok(pre) => Loaded::Command(CommandPreKind::P2(pre)),
                            Err(command_err) => {
                                if let Some(old) = older_contract(&self.engine, component) {
                                    return Err(ModuleError::Invalid(format!(
                                        "the component was built for the job contract {old}; \
                                         this Quern runs {CONTRACT} (new: `init` takes a task-info, \
                                         and a `finish` export): rebuild it against \
                                         guest-sdk/wit/quern.wit, with the Rust SDK (guest-sdk) \
                                         of this release, or regenerate the bindings of another \
                                         language (see guest-sdk/guides/)"
                                    )));
                                }
                                return Err(ModuleError::Invalid(format!(
                                    "the component implements neither the Quern job contract \
                                     (world {JOB_WORLD}: {}) nor a WASI command for \
                                     streaming mode (export wasi:cli/run: {})",
                                    describe(&job_err),
                                    describe(&command_err)
                                )));
                            }
                        }
                    }
                }
            }
            Compiled::Core(module) => {
                if !module.exports().any(|e| e.name() == "_start") {
                    return Err(ModuleError::Invalid(
                        "this core WebAssembly module exports no `_start`, so it is not a WASI \
                         command: build a program with a `main` for streaming mode (e.g. \
                         `--target wasm32-wasip1`), or build a component of the quern:job world \
                         (the Rust SDK with `--target wasm32-wasip2`, or `wasm-tools component new`)"
                            .into(),
                    ));
                }
                let pre = self.core_linker.instantiate_pre(module).map_err(|e| {
                    ModuleError::Invalid(format!(
                        "the WASI command imports something Quern does not provide \
                         (only wasi_snapshot_preview1 is available): {}",
                        describe(&e)
                    ))
                })?;
                Loaded::Command(CommandPreKind::P1(pre))
            }
        };
        Ok(GuestModule { sha256, loaded })
    }

    /// Creates a sandboxed instance for one task and calls its `init`.
    pub fn instantiate(
        &self,
        module: &GuestModule,
        task: &TaskPlan,
        limits: &Limits,
        args: &[(String, String)],
    ) -> Result<Guest, TaskError> {
        let Loaded::Job(pre) = &module.loaded else {
            return Err(TaskError::Host(anyhow::anyhow!(
                "{}",
                protocol::JobMode::Component
                    .check(ModuleKind::Command)
                    .unwrap_err()
            )));
        };
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
        let stop = Stop::after(
            Duration::from_secs(limits.timeout_secs),
            task.cancel.clone(),
        );
        let mut store = Store::new(&self.engine, TaskState::new(wasi, memory_cap, stop.clone()));
        store.limiter(|state| &mut state.limiter);
        arm_limits(&mut store, &stop);

        let mut guest = match pre.instantiate(&mut store) {
            Ok(job) => Guest {
                store,
                job,
                info: GuestInfo { has_combine: false },
                stdout,
                stderr,
                limits: *limits,
            },
            Err(err) => {
                let state = store.data_mut();
                return Err(classify(
                    state.failure.take(),
                    state.limiter.hit,
                    &stderr,
                    limits,
                    "instantiation",
                    err,
                ));
            }
        };
        let info = TaskInfo {
            phase: match task.phase {
                protocol::TaskKind::Map => Phase::Map,
                protocol::TaskKind::Reduce => Phase::Reduce,
            },
            combine: task.combine,
            buffer_bytes: task.buffer_bytes,
        };
        let result = guest.job.call_init(&mut guest.store, info, args);
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

/// The version of an older `quern:job` contract a component imports, if
/// that is why it does not link.
fn older_contract(engine: &Engine, component: &Component) -> Option<String> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .chain(ty.exports(engine).map(|(name, _)| name.to_owned()));
    for name in names {
        if let Some(rest) = name.strip_prefix("quern:job/")
            && let Some((_, version)) = rest.split_once('@')
        {
            let contract = format!("quern:job@{version}");
            if contract != CONTRACT {
                return Some(contract);
            }
        }
    }
    None
}

/// The two WebAssembly binary formats.
enum Format {
    Core,
    Component,
}

/// Tells apart garbage, core modules and components, so the user reads
/// what to do instead of a parser error.
fn check_header(bytes: &[u8]) -> Result<Format, ModuleError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ModuleError::Invalid(
            "not a WebAssembly file (it does not start with \\0asm)".into(),
        ));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Ok(Format::Core);
    }
    Ok(Format::Component)
}

/// Turns a wasmtime error into the failure a user can act on. A failure
/// the host recorded while the guest ran, then a hit memory cap, explain
/// the trap better than the trap itself.
fn classify(
    failure: Option<HostFailure>,
    memory_hit: bool,
    stderr: &LogPipe,
    limits: &Limits,
    function: &str,
    err: wasmtime::Error,
) -> TaskError {
    match failure {
        Some(HostFailure::Guest(err)) => return err.into(),
        Some(HostFailure::Io(err)) => return io_task_error(err),
        None => {}
    }
    if err.downcast_ref::<CancelledTrap>().is_some() {
        return TaskError::Cancelled;
    }
    if memory_hit {
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
            Err(err) => {
                let state = self.store.data_mut();
                Err(classify(
                    state.failure.take(),
                    state.limiter.hit,
                    &self.stderr,
                    &self.limits,
                    function,
                    err,
                ))
            }
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

    /// Calls `finish`: the guest emits what it held back.
    pub fn finish(&mut self) -> Result<(), TaskError> {
        let result = self.job.call_finish(&mut self.store);
        self.finish_call("finish", result)
    }

    /// Where emitted pairs go from now on.
    pub fn set_sink(&mut self, sink: Box<dyn PairSink>) {
        self.store.data_mut().sink = Some(sink);
    }

    /// The sink in place, if it is an `S`.
    pub fn sink_mut<S: PairSink>(&mut self) -> Option<&mut S> {
        let sink: &mut dyn Any = self.store.data_mut().sink.as_deref_mut()?;
        sink.downcast_mut()
    }

    /// Takes the sink back out, if it is an `S`; emits are refused until
    /// another is set.
    pub fn take_sink<S: PairSink>(&mut self) -> Option<Box<S>> {
        let sink: Box<dyn Any> = self.store.data_mut().sink.take()?;
        sink.downcast().ok()
    }

    /// Where `next-values` reads from from now on.
    pub fn set_values(&mut self, values: Box<dyn ValueSource>) {
        self.store.data_mut().values = Some(values);
    }

    /// The value source in place, if it is a `V`.
    pub fn values_mut<V: ValueSource>(&mut self) -> Option<&mut V> {
        let values: &mut dyn Any = self.store.data_mut().values.as_deref_mut()?;
        values.downcast_mut()
    }

    /// Takes the value source back out, if it is a `V`.
    pub fn take_values<V: ValueSource>(&mut self) -> Option<Box<V>> {
        let values: Box<dyn Any> = self.store.data_mut().values.take()?;
        values.downcast().ok()
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
