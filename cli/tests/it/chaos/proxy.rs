//! TCP proxies the tests put between processes: one that fails over
//! between coordinators, and one that breaks a worker's map-output
//! responses (resets, truncated bodies, a flipped byte).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::Rng;

/// A listening proxy; dropping it stops accepting (open connections live
/// on until either end closes).
pub struct Proxy {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Forwards each connection to the first of `backends` (host:port) that
/// accepts it, starting from the next one in turn, so while all are up the
/// connections are spread over them and when one is down the others take
/// everything.
pub async fn failover(backends: Vec<String>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let mut turn = 0usize;
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            turn += 1;
            let backends = backends.clone();
            tokio::spawn(async move {
                for k in 0..backends.len() {
                    let backend = &backends[(turn + k) % backends.len()];
                    let connect = TcpStream::connect(backend);
                    if let Ok(Ok(mut server)) =
                        tokio::time::timeout(Duration::from_secs(1), connect).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            });
        }
    });
    Proxy { addr, accept }
}

/// What the fault proxy did.
#[derive(Default)]
pub struct FaultStats {
    /// Faults still to inject; each new connection takes one while any are
    /// left.
    pub remaining: AtomicU64,
    pub connections: AtomicU64,
    pub resets: AtomicU64,
    pub truncations: AtomicU64,
    pub corruptions: AtomicU64,
}

impl FaultStats {
    pub fn injected(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
            + self.truncations.load(Ordering::Relaxed)
            + self.corruptions.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} connections: {} reset, {} truncated, {} corrupted, {} faults unused",
            self.connections.load(Ordering::Relaxed),
            self.resets.load(Ordering::Relaxed),
            self.truncations.load(Ordering::Relaxed),
            self.corruptions.load(Ordering::Relaxed),
            self.remaining.load(Ordering::Relaxed),
        )
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Read the request, then reset the connection.
    Reset,
    /// Send the head and this fraction (per mille) of the body, then reset.
    Truncate(u64),
    /// Flip the body byte at this fraction (per mille) of it.
    Corrupt(u64),
}

/// Forwards to `backend` (host:port), breaking the first response of each
/// of the next `stats.remaining` connections in a way drawn from `rng`.
pub async fn faulty(backend: String, stats: Arc<FaultStats>, rng: Rng) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rng = Arc::new(Mutex::new(rng));
    let accept = tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let take = stats
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            let fault = take.is_ok().then(|| {
                let mut rng = rng.lock().unwrap();
                match rng.below(3) {
                    0 => Fault::Reset,
                    1 => Fault::Truncate(rng.below(1000)),
                    _ => Fault::Corrupt(rng.below(1000)),
                }
            });
            let backend = backend.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let _ = serve_faulty(client, &backend, fault, &stats).await;
            });
        }
    });
    Proxy { addr, accept }
}

/// Reads from `stream` until `buf` holds a blank line; returns the length
/// of the head including it.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(i + 4);
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 1 << 16 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &[u8]) -> u64 {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

async fn serve_faulty(
    mut client: TcpStream,
    backend: &str,
    fault: Option<Fault>,
    stats: &FaultStats,
) -> std::io::Result<()> {
    let Some(fault) = fault else {
        let mut server = TcpStream::connect(backend).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        return Ok(());
    };
    // The first request, whole (a GET has no body).
    let mut request = Vec::new();
    let head = read_head(&mut client, &mut request).await?;
    if let Fault::Reset = fault {
        stats.resets.fetch_add(1, Ordering::Relaxed);
        client.set_zero_linger()?;
        return Ok(());
    }
    let mut server = TcpStream::connect(backend).await?;
    server.write_all(&request[..head]).await?;
    let mut response = Vec::new();
    let head = read_head(&mut server, &mut response).await?;
    let body = content_length(&response[..head]);
    if body == 0 {
        // Nothing to break in this response; let it through.
        client.write_all(&response).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        return Ok(());
    }
    let (send, flip) = match fault {
        Fault::Truncate(per_mille) => (head as u64 + body * per_mille / 1000, None),
        Fault::Corrupt(per_mille) => (
            head as u64 + body,
            Some(head as u64 + body * per_mille / 1000),
        ),
        Fault::Reset => unreachable!(),
    };
    // Forward `send` bytes of the response, flipping one if asked.
    let mut sent: u64 = 0;
    let mut pending = response;
    loop {
        let take = pending.len().min((send - sent) as usize);
        let chunk = &mut pending[..take];
        if let Some(at) = flip
            && at >= sent
            && at < sent + take as u64
        {
            chunk[(at - sent) as usize] ^= 0x20;
        }
        client.write_all(chunk).await?;
        sent += take as u64;
        if sent == send {
            break;
        }
        let mut buf = vec![0u8; 64 << 10];
        let n = server.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        pending = buf;
    }
    match fault {
        Fault::Truncate(_) => {
            stats.truncations.fetch_add(1, Ordering::Relaxed);
            client.flush().await?;
            client.set_zero_linger()?;
        }
        _ => {
            stats.corruptions.fetch_add(1, Ordering::Relaxed);
            // Anything after the first response passes untouched.
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        }
    }
    Ok(())
}
