//! Sleeps bounded by the attempt. The epoch deadline interrupts wasm code
//! only: a guest blocked in `wasi:io/poll` on a clock (`std::thread::sleep`,
//! a timer) is in host code and would sleep past its time limit, or past a
//! cancel, with its lease renewed all along. So the monotonic clock's
//! `subscribe-duration` and `subscribe-instant` are replaced by versions
//! whose pollable also wakes once the attempt's deadline passes or it is
//! cancelled; the guest then runs wasm again and the epoch callback stops
//! it. Clocks are the only way a component guest can block: it has no
//! files, sockets or stdin.
//!
//! Preview-1 commands call the clock implementation from their
//! `poll_oneoff` directly, not through the component linker; for them
//! `poll_oneoff` itself is replaced ([`bound_p1_sleeps`]).

use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as MonotonicClock;
use wasmtime_wasi::p2::{DynPollable, Pollable};

use crate::Cancel;

/// The interface whose subscriptions are replaced; the version the linker
/// holds (imports of older 0.2 versions resolve to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// How often a bounded sleep looks at its attempt's cancel flag.
const CANCEL_TICK: Duration = Duration::from_millis(20);

/// When an attempt must stop: its wall-clock deadline or its cancel flag.
#[derive(Debug, Clone)]
pub(crate) struct Stop {
    pub(crate) deadline: Instant,
    pub(crate) cancel: Cancel,
}

impl Stop {
    /// Stop at `timeout` from now, or when `cancel` is set.
    pub(crate) fn after(timeout: Duration, cancel: Cancel) -> Self {
        let now = Instant::now();
        Stop {
            deadline: now
                .checked_add(timeout)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
            cancel,
        }
    }
}

/// A store's state that knows when its attempt must stop.
pub(crate) trait HasStop {
    fn stop(&self) -> &Stop;
}

/// Replaces the monotonic clock's subscriptions in `linker` (which must
/// already hold WASI) with sleeps bounded by the attempt.
pub(crate) fn bound_sleeps<T: WasiView + HasStop + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, T>, (nanos,): (u64,)| {
            let until = Instant::now().checked_add(Duration::from_nanos(nanos));
            subscribe(store.data_mut(), until)
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, T>, (when,): (u64,)| {
            let state = store.data_mut();
            let view = state.ctx();
            let now = MonotonicClock::now(&mut WasiClocksCtxView {
                ctx: view.ctx.clocks(),
                table: view.table,
            })?;
            let until = Instant::now().checked_add(Duration::from_nanos(when.saturating_sub(now)));
            subscribe(state, until)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable ready at `until` (never, if `None`), at the attempt's
/// deadline, or when the attempt is cancelled, whichever comes first.
fn subscribe<T: WasiView + HasStop>(
    state: &mut T,
    until: Option<Instant>,
) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let stop = state.stop().clone();
    let until = until.map_or(stop.deadline, |until| until.min(stop.deadline));
    let table = state.ctx().table;
    let sleep = table.push(BoundedSleep {
        until: tokio::time::Instant::from_std(until),
        cancel: stop.cancel,
    })?;
    Ok((wasmtime_wasi::p2::subscribe(table, sleep)?,))
}

struct BoundedSleep {
    until: tokio::time::Instant,
    cancel: Cancel,
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedSleep {
    async fn ready(&mut self) {
        while !self.cancel.is_cancelled() {
            let now = tokio::time::Instant::now();
            if now >= self.until {
                return;
            }
            tokio::time::sleep_until(self.until.min(now + CANCEL_TICK)).await;
        }
    }
}

/// Preview-1 commands block in `poll_oneoff`, which wasmtime-wasi runs
/// without going through the component linker, so the replacement above
/// does not reach them. This replaces `poll_oneoff` in the core linker:
/// clock-only polls (how `sleep` is made) sleep until the earliest
/// relative timeout, the attempt's deadline or its cancel, whichever comes
/// first; a poll that includes a file descriptor reports those ready at
/// once (a command's stdin and stdout are the host's pipes: a read or
/// write then blocks in the call that does it). An absolute clock
/// subscription counts as due.
pub(crate) fn bound_p1_sleeps<T: HasStop + 'static>(
    linker: &mut wasmtime::Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        |mut caller: wasmtime::Caller<'_, T>,
         subs: i32,
         events: i32,
         count: i32,
         written: i32|
         -> wasmtime::Result<i32> {
            const EINVAL: i32 = 28;
            const EFAULT: i32 = 21;
            let Some(memory) = caller
                .get_export("memory")
                .and_then(wasmtime::Extern::into_memory)
            else {
                return Ok(EFAULT);
            };
            let count = count as u32 as usize;
            if count == 0 {
                return Ok(EINVAL);
            }
            let mut raw = vec![0u8; count * 48];
            if memory
                .read(&caller, subs as u32 as usize, &mut raw)
                .is_err()
            {
                return Ok(EFAULT);
            }
            let subscriptions: Vec<P1Subscription> =
                raw.chunks_exact(48).map(P1Subscription::parse).collect();
            let any_fd = subscriptions.iter().any(|s| s.tag != 0);
            let stop = caller.data().stop().clone();
            let started = Instant::now();
            let wait = if any_fd {
                Duration::ZERO
            } else {
                subscriptions
                    .iter()
                    .map(|s| s.relative_timeout())
                    .min()
                    .unwrap_or(Duration::ZERO)
            };
            let until = started
                .checked_add(wait)
                .unwrap_or(stop.deadline)
                .min(stop.deadline);
            while !stop.cancel.is_cancelled() {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                std::thread::sleep((until - now).min(CANCEL_TICK));
            }
            let elapsed = started.elapsed();
            let mut out = Vec::with_capacity(count * 32);
            let mut fired = 0u32;
            for s in &subscriptions {
                let due = s.tag != 0 || s.relative_timeout() <= elapsed;
                if !due {
                    continue;
                }
                let mut event = [0u8; 32];
                event[..8].copy_from_slice(&s.userdata.to_le_bytes());
                event[10] = s.tag;
                if s.tag != 0 {
                    event[16..24].copy_from_slice(&1u64.to_le_bytes());
                }
                out.extend_from_slice(&event);
                fired += 1;
            }
            if fired == 0 {
                // Woken early by the deadline or a cancel: the first clock
                // fires, and the epoch callback stops the guest next.
                let mut event = [0u8; 32];
                event[..8].copy_from_slice(&subscriptions[0].userdata.to_le_bytes());
                out.extend_from_slice(&event);
                fired = 1;
            }
            if memory
                .write(&mut caller, events as u32 as usize, &out)
                .is_err()
                || memory
                    .write(&mut caller, written as u32 as usize, &fired.to_le_bytes())
                    .is_err()
            {
                return Ok(EFAULT);
            }
            Ok(0)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// One preview-1 `subscription` (48 bytes): userdata, tag (0 clock, 1
/// fd_read, 2 fd_write), and for a clock its timeout and flags.
struct P1Subscription {
    userdata: u64,
    tag: u8,
    timeout: u64,
    absolute: bool,
}

impl P1Subscription {
    fn parse(raw: &[u8]) -> Self {
        let u64_at = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().unwrap());
        P1Subscription {
            userdata: u64_at(0),
            tag: raw[8],
            timeout: u64_at(24),
            absolute: u16::from_le_bytes([raw[40], raw[41]]) & 1 == 1,
        }
    }

    /// How long a clock subscription waits (an absolute one: not at all).
    fn relative_timeout(&self) -> Duration {
        if self.tag != 0 || self.absolute {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.timeout)
        }
    }
}
