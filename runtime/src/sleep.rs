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
//! Preview-1 commands are not covered: their `poll_oneoff` calls the clock
//! implementation directly, not through the linker.

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
