//! WASI commands for streaming mode: a preview-1 core module exporting
//! `_start` or a preview-2 component exporting `wasi:cli/run`, run once per
//! task with records on stdin and pairs (or output lines) on stdout.
//!
//! The command runs on its own thread while the caller produces stdin on
//! the calling thread, so a command that reads its input lazily never
//! needs the whole input in memory. Stdin is a bounded channel of chunks;
//! stdout is cut into lines as it is written and each line goes to a
//! [`LineSink`]. A sink that refuses a line traps the command at once with
//! the sink's message.

use std::io;
use std::pin::Pin;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use wasmtime::component::ResourceTable;
use wasmtime::{InstancePre, Store};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::host::{HostFailure, MAX_FIELD_BYTES, MemoryLimiter, SinkError};
use super::sleep::{HasStop, Stop};
use super::{GuestError, LogPipe, TaskError, TaskLogs, classify};
use protocol::Limits;

/// Chunks of stdin in flight between the producer and the command.
const STDIN_CHUNKS: usize = 16;
/// Bytes per stdin chunk the producer sends.
pub const STDIN_CHUNK_BYTES: usize = 64 << 10;

/// A compiled command, linked against WASI.
pub(crate) enum CommandPreKind {
    /// A preview-1 core module.
    P1(InstancePre<CommandState>),
    /// A preview-2 command component.
    P2(CommandPre<CommandState>),
}

/// What a command's store holds: one WASI context of each flavour (only
/// the one the command's kind uses is wired to the task's pipes) and the
/// memory cap.
pub(crate) struct CommandState {
    p1: WasiP1Ctx,
    p2: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    stop: Stop,
}

impl HasStop for CommandState {
    fn stop(&self) -> &Stop {
        &self.stop
    }
}

impl CommandState {
    pub(crate) fn p1(&mut self) -> &mut WasiP1Ctx {
        &mut self.p1
    }
}

impl WasiView for CommandState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.p2,
            table: &mut self.table,
        }
    }
}

/// Where the lines a command writes to stdout go.
pub trait LineSink: Send + 'static {
    /// Takes one line (without its `\n`); `number` counts from 1.
    fn line(&mut self, line: &[u8], number: u64) -> Result<(), SinkError>;
}

/// The writing end of a command's stdin.
pub struct StdinWriter {
    tx: SyncSender<Bytes>,
}

impl StdinWriter {
    /// Sends a chunk; fails once the command has exited (it stops reading).
    pub fn send(&self, chunk: Bytes) -> io::Result<()> {
        self.tx
            .send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the command exited"))
    }
}

/// A buffer that sends itself down a [`StdinWriter`] in chunks.
pub struct ChunkedStdin {
    writer: StdinWriter,
    buf: BytesMut,
}

impl ChunkedStdin {
    /// Wraps `writer`.
    pub fn new(writer: StdinWriter) -> Self {
        ChunkedStdin {
            writer,
            buf: BytesMut::with_capacity(STDIN_CHUNK_BYTES),
        }
    }

    /// Appends `parts` (one record's bytes), sending full chunks.
    pub fn write(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        for part in parts {
            let mut part = *part;
            while !part.is_empty() {
                let room = STDIN_CHUNK_BYTES - self.buf.len();
                let take = room.min(part.len());
                self.buf.extend_from_slice(&part[..take]);
                part = &part[take..];
                if self.buf.len() >= STDIN_CHUNK_BYTES {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Sends what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(STDIN_CHUNK_BYTES);
        self.writer.send(chunk)
    }
}

/// The command's view of stdin: chunks from the channel, end of file when
/// the producer hangs up.
#[derive(Clone)]
struct ChannelStdin {
    inner: Arc<Mutex<StdinState>>,
}

struct StdinState {
    rx: Receiver<Bytes>,
    pending: Bytes,
}

impl ChannelStdin {
    /// Up to `size` bytes, blocking until some arrive; `None` at the end.
    fn take(&self, size: usize) -> Option<Bytes> {
        let mut state = self.inner.lock().unwrap();
        while state.pending.is_empty() {
            state.pending = state.rx.recv().ok()?;
        }
        let n = size.min(state.pending.len());
        Some(state.pending.split_to(n))
    }
}

impl IsTerminal for ChannelStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for ChannelStdin {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for ChannelStdin {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if size == 0 {
            return Ok(Bytes::new());
        }
        self.take(size).ok_or(StreamError::Closed)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for ChannelStdin {
    // Reads block until data or the end arrives, so the stream is always
    // "ready".
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncRead for ChannelStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(bytes) = self.take(buf.remaining()) {
            buf.put_slice(&bytes);
        }
        Poll::Ready(Ok(()))
    }
}

/// The command's stdout, cut into lines for the sink.
struct LineStdout<S> {
    inner: Arc<Mutex<LineState<S>>>,
}

impl<S> Clone for LineStdout<S> {
    fn clone(&self) -> Self {
        LineStdout {
            inner: self.inner.clone(),
        }
    }
}

struct LineState<S> {
    /// Taken back by `run_command` once the command has ended.
    sink: Option<S>,
    partial: Vec<u8>,
    lines: u64,
    bytes: u64,
    failure: Option<HostFailure>,
}

impl<S: LineSink> LineState<S> {
    fn push(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        if let Some(failure) = &self.failure {
            return Err(failure_text(failure));
        }
        self.bytes += bytes.len() as u64;
        while let Some(at) = memchr::memchr(b'\n', bytes) {
            let result = if self.partial.is_empty() {
                self.emit(&bytes[..at])
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&bytes[..at]);
                let result = self.emit(&line);
                line.clear();
                self.partial = line;
                result
            };
            result?;
            bytes = &bytes[at + 1..];
        }
        if self.partial.len() + bytes.len() > MAX_FIELD_BYTES {
            return Err(self.fail(HostFailure::Guest(GuestError::BadOutput(format!(
                "stdout line {} is longer than {MAX_FIELD_BYTES} bytes",
                self.lines + 1
            )))));
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn emit(&mut self, line: &[u8]) -> Result<(), String> {
        self.lines += 1;
        let sink = self
            .sink
            .as_mut()
            .expect("the sink stays while the command runs");
        sink.line(line, self.lines)
            .map_err(|err| self.fail(err.into()))
    }

    fn fail(&mut self, failure: HostFailure) -> String {
        let text = failure_text(&failure);
        self.failure = Some(failure);
        text
    }

    /// The last line, when the command did not end it with `\n`.
    fn finish(&mut self) -> Result<(), String> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.partial);
        self.emit(&line)
    }
}

fn failure_text(failure: &HostFailure) -> String {
    match failure {
        HostFailure::Guest(err) => err.to_string(),
        HostFailure::Io(err) => format!("host I/O error: {err}"),
    }
}

impl<S> IsTerminal for LineStdout<S> {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl<S: LineSink> StdoutStream for LineStdout<S> {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl<S: LineSink> OutputStream for LineStdout<S> {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.inner
            .lock()
            .unwrap()
            .push(&bytes)
            .map_err(|msg| StreamError::Trap(wasmtime::Error::msg(msg)))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

#[wasmtime_wasi::async_trait]
impl<S: LineSink> Pollable for LineStdout<S> {
    async fn ready(&mut self) {}
}

impl<S: LineSink> tokio::io::AsyncWrite for LineStdout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = self.inner.lock().unwrap().push(buf);
        Poll::Ready(result.map(|()| buf.len()).map_err(io::Error::other))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// How one command run is set up.
pub struct CommandSpec<'a> {
    /// `argv[1]`: the phase, `map` or `reduce`.
    pub phase: &'a str,
    /// The job's arguments, passed as `name=value` after the phase.
    pub args: &'a [(String, String)],
    /// Extra environment variables (`QUERN_PHASE` is always set).
    pub env: Vec<(&'static str, String)>,
    /// Sandbox limits.
    pub limits: &'a Limits,
    /// Stops the command from outside.
    pub cancel: super::Cancel,
}

/// What a command run ended with.
pub struct CommandRun<S> {
    /// Success, or why it failed.
    pub outcome: Result<(), TaskError>,
    /// The line sink, given back.
    pub sink: S,
    /// Captured stderr (stdout is the data channel).
    pub logs: TaskLogs,
    /// Lines and bytes written to stdout.
    pub stdout_lines: u64,
    /// Bytes written to stdout.
    pub stdout_bytes: u64,
}

impl super::Runtime {
    /// Runs a command to completion with `sink` receiving its stdout lines
    /// while `produce` writes its stdin on the calling thread. A producer
    /// error wins over whatever the command did (it saw a truncated input).
    pub fn run_command<S: LineSink>(
        &self,
        module: &super::GuestModule,
        spec: &CommandSpec<'_>,
        sink: S,
        produce: impl FnOnce(ChunkedStdin) -> Result<(), TaskError>,
    ) -> CommandRun<S> {
        let super::Loaded::Command(pre) = &module.loaded else {
            panic!("run_command needs a command module; JobMode::check guards this");
        };
        let (tx, rx) = sync_channel::<Bytes>(STDIN_CHUNKS);
        let stdin = ChannelStdin {
            inner: Arc::new(Mutex::new(StdinState {
                rx,
                pending: Bytes::new(),
            })),
        };
        let stdout = LineStdout {
            inner: Arc::new(Mutex::new(LineState {
                sink: Some(sink),
                partial: Vec::new(),
                lines: 0,
                bytes: 0,
                failure: None,
            })),
        };
        let stderr = LogPipe::new(spec.limits.log_bytes as usize);

        let mut argv = vec!["job".to_owned(), spec.phase.to_owned()];
        argv.extend(spec.args.iter().map(|(k, v)| format!("{k}={v}")));
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdin(stdin)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&argv)
            .env("QUERN_PHASE", spec.phase)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (name, value) in &spec.env {
            builder.env(name, value);
        }
        let memory_cap = usize::try_from(spec.limits.memory_mib << 20).unwrap_or(usize::MAX);
        let limiter = MemoryLimiter {
            cap: memory_cap,
            hit: false,
        };
        let stop = Stop::after(
            std::time::Duration::from_secs(spec.limits.timeout_secs),
            spec.cancel.clone(),
        );
        let state = match pre {
            CommandPreKind::P1(_) => CommandState {
                p1: builder.build_p1(),
                p2: WasiCtxBuilder::new().build(),
                table: ResourceTable::new(),
                limiter,
                stop: stop.clone(),
            },
            CommandPreKind::P2(_) => CommandState {
                p1: WasiCtxBuilder::new().build_p1(),
                p2: builder.build(),
                table: ResourceTable::new(),
                limiter,
                stop: stop.clone(),
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        super::arm_limits(&mut store, &stop);

        let writer = StdinWriter { tx };
        let (command_result, produced) = std::thread::scope(|scope| {
            let command = std::thread::Builder::new()
                .name("quern-command".into())
                .spawn_scoped(scope, move || {
                    // The store (and with it the stdin receiver) is dropped
                    // when the command ends, so a producer still writing
                    // sees a broken pipe instead of blocking.
                    let result = run_main(&mut store, pre);
                    let limiter_hit = store.data().limiter.hit;
                    drop(store);
                    (result, limiter_hit)
                })
                .expect("spawning the command thread");
            let produced = produce(ChunkedStdin::new(writer));
            (command.join(), produced)
        });
        let (result, limiter_hit) = match command_result {
            Ok(pair) => pair,
            Err(panic) => std::panic::resume_unwind(panic),
        };

        let mut line_state = stdout.inner.lock().unwrap();
        let result = result.and_then(|()| line_state.finish().map_err(wasmtime::Error::msg));
        let mut outcome = result.map_err(|err| {
            let failure = line_state.failure.take();
            match err.downcast_ref::<Exited>() {
                Some(Exited(status)) if failure.is_none() => GuestError::Exited {
                    function: spec.phase.to_owned(),
                    status: *status,
                    stderr: stderr_tail(&stderr.contents()),
                }
                .into(),
                _ => classify(failure, limiter_hit, &stderr, spec.limits, spec.phase, err),
            }
        });
        if let Err(err) = produced {
            // A broken pipe means the command stopped reading and exited,
            // as `head` does in a shell pipeline: its own outcome stands.
            let broken_pipe = matches!(&err, TaskError::Host(e) if e.chain().any(|cause| {
                cause
                    .downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            }));
            if !broken_pipe {
                outcome = Err(err);
            }
        }
        CommandRun {
            outcome,
            sink: line_state.sink.take().expect("the sink is given back once"),
            logs: TaskLogs {
                stdout: String::new(),
                stderr: stderr.contents(),
            },
            stdout_lines: line_state.lines,
            stdout_bytes: line_state.bytes,
        }
    }
}

/// A command's non-zero exit status.
#[derive(Debug)]
struct Exited(i32);

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the command exited with status {}", self.0)
    }
}

impl std::error::Error for Exited {}

/// The last lines of stderr, for a failure message.
fn stderr_tail(stderr: &str) -> String {
    let trimmed = stderr.trim_end();
    let start = trimmed.len().saturating_sub(1000);
    let start = (start..=trimmed.len())
        .find(|&i| trimmed.is_char_boundary(i))
        .unwrap_or(trimmed.len());
    trimmed[start..].to_owned()
}

/// Calls the command's entry point; a WASI `exit(0)` is success.
fn run_main(store: &mut Store<CommandState>, pre: &CommandPreKind) -> wasmtime::Result<()> {
    let result = match pre {
        CommandPreKind::P1(pre) => pre.instantiate(&mut *store).and_then(|instance| {
            let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
            start.call(&mut *store, ())
        }),
        CommandPreKind::P2(pre) => pre.instantiate(&mut *store).and_then(|command| {
            command
                .wasi_cli_run()
                .call_run(&mut *store)?
                .map_err(|()| wasmtime::Error::new(I32Exit(1)))
        }),
    };
    match result {
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => Ok(()),
            Some(I32Exit(status)) => Err(wasmtime::Error::new(Exited(*status))),
            None => Err(err),
        },
        Ok(()) => Ok(()),
    }
}
