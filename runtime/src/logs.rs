//! Captured guest stdout and stderr: the task's logs. Each stream keeps its
//! first and last bytes up to a cap and counts the rest, so a guest that
//! prints without end costs bounded memory and its last words (the panic
//! message) survive.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Debug, Default)]
struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

/// One captured stream, shared between the WASI context and the host.
#[derive(Debug, Clone)]
pub struct LogPipe {
    capture: Arc<Mutex<Capture>>,
    head_cap: usize,
    tail_cap: usize,
}

impl LogPipe {
    /// A pipe keeping at most `cap` bytes: the first half and the last half.
    pub fn new(cap: usize) -> Self {
        LogPipe {
            capture: Arc::default(),
            head_cap: cap / 2,
            tail_cap: cap - cap / 2,
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut c = self.capture.lock().unwrap();
        c.total += bytes.len() as u64;
        let to_head = (self.head_cap - c.head.len()).min(bytes.len());
        c.head.extend_from_slice(&bytes[..to_head]);
        let rest = &bytes[to_head..];
        if self.tail_cap == 0 || rest.is_empty() {
            return;
        }
        let rest = &rest[rest.len().saturating_sub(self.tail_cap)..];
        let overflow = (c.tail.len() + rest.len()).saturating_sub(self.tail_cap);
        c.tail.drain(..overflow);
        c.tail.extend(rest);
    }

    /// Everything kept, with a marker where bytes were dropped.
    pub fn contents(&self) -> String {
        let c = self.capture.lock().unwrap();
        let kept = c.head.len() + c.tail.len();
        let mut text = String::from_utf8_lossy(&c.head).into_owned();
        if c.total > kept as u64 {
            text.push_str(&format!(
                "\n[... {} bytes dropped: the log keeps its first and last bytes ...]\n",
                c.total - kept as u64
            ));
        }
        let tail: Vec<u8> = c.tail.iter().copied().collect();
        text.push_str(&String::from_utf8_lossy(&tail));
        text
    }

    /// Bytes the guest wrote, kept or not.
    pub fn total(&self) -> u64 {
        self.capture.lock().unwrap().total
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The logs of one task attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskLogs {
    /// What the guest wrote to stdout (capped).
    pub stdout: String,
    /// What the guest wrote to stderr (capped).
    pub stderr: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail_within_the_cap() {
        let pipe = LogPipe::new(10);
        pipe.append(b"abc");
        assert_eq!(pipe.contents(), "abc");
        for _ in 0..1000 {
            pipe.append(b"0123456789");
        }
        pipe.append(b"END");
        let text = pipe.contents();
        assert!(text.starts_with("abc01"), "{text}");
        // The cap of 10 keeps 5 bytes at each end.
        assert!(text.ends_with("...]\n89END"), "{text}");
        assert!(text.contains("bytes dropped"));
        assert_eq!(pipe.total(), 10_006);
    }
}
