//! Glue between the generated bindings and a [`Job`]: decodes batches,
//! keeps the job value for the life of the instance, combines held-back
//! pairs, flushes output.

use std::any::Any;
use std::cell::RefCell;

use batch::Reader;

use crate::__bindings::{GuestInfo, InputInfo, Phase, TaskInfo};
use crate::Job;
use crate::context::{Args, Context, Values, malformed};

struct Instance {
    job: Box<dyn Any>,
    ctx: Context,
}

thread_local! {
    static INSTANCE: RefCell<Option<Instance>> = const { RefCell::new(None) };
}

fn with_job<J: Job, R>(f: impl FnOnce(&mut J, &mut Context) -> R) -> Result<R, String> {
    INSTANCE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let instance = slot
            .as_mut()
            .ok_or_else(|| "the host called the job before init".to_string())?;
        let job = instance
            .job
            .downcast_mut::<J>()
            .expect("one job type per component");
        Ok(f(job, &mut instance.ctx))
    })
}

/// `init` export.
pub fn init<J: Job>(task: TaskInfo, args: Vec<(String, String)>) -> Result<GuestInfo, String> {
    let mut job = J::default();
    job.setup(&Args::new(args)).map_err(|e| e.to_string())?;
    let mut ctx = Context::default();
    if J::HAS_COMBINE && task.combine && task.phase == Phase::Map && task.buffer_bytes > 0 {
        ctx.hold_back(usize::try_from(task.buffer_bytes).unwrap_or(usize::MAX));
    }
    INSTANCE.with(|cell| {
        *cell.borrow_mut() = Some(Instance {
            job: Box::new(job),
            ctx,
        })
    });
    Ok(GuestInfo {
        has_combine: J::HAS_COMBINE,
    })
}

/// `map` export.
pub fn map<J: Job>(input: InputInfo, records: Vec<u8>) -> Result<(), String> {
    with_job::<J, _>(|job, ctx| {
        ctx.set_input(input.file);
        ctx.begin_map();
        let result = map_records(job, ctx, &records);
        ctx.flush();
        result
    })?
}

fn map_records<J: Job>(job: &mut J, ctx: &mut Context, records: &[u8]) -> Result<(), String> {
    let mut reader = Reader::new(records);
    while !reader.is_empty() {
        let (key, value) = reader.pair().map_err(|e| malformed(&e))?;
        job.map(key, value, ctx).map_err(|e| e.to_string())?;
        if let Some(table) = ctx.table_mut()
            && (table.has_ripe() || table.over_budget())
        {
            settle(job, ctx).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Combines the keys whose values piled up, and empties the table into
/// the host when it is over its budget.
fn settle<J: Job>(job: &mut J, ctx: &mut Context) -> crate::Result {
    let Some(table) = ctx.table_mut() else {
        return Ok(());
    };
    for key in table.take_ripe() {
        let Some((runs, count)) = ctx.table_mut().and_then(|t| t.take_values(&key)) else {
            continue;
        };
        let combined = ctx.run_combine(job, &key, &runs, count)?;
        if let Some(table) = ctx.table_mut() {
            table.put_values(&key, &combined);
        }
    }
    if ctx.table_mut().is_some_and(|t| t.over_budget()) {
        empty_table(job, ctx)?;
    }
    Ok(())
}

/// Combines every key of the table that holds more than one value and
/// emits the result to the host.
fn empty_table<J: Job>(job: &mut J, ctx: &mut Context) -> crate::Result {
    let Some(table) = ctx.table_mut() else {
        return Ok(());
    };
    for mut slot in table.drain() {
        let (runs, count) = slot.take_runs();
        if count > 1 {
            let combined = ctx.run_combine(job, &slot.key, &runs, count)?;
            ctx.emit_values(&slot.key, &combined)?;
        } else {
            ctx.emit_runs(&slot.key, &runs, count)?;
        }
    }
    Ok(())
}

/// `finish` export.
pub fn finish<J: Job>() -> Result<(), String> {
    with_job::<J, _>(|job, ctx| {
        ctx.begin_map();
        let result = job.finish(ctx).and_then(|()| empty_table(job, ctx));
        ctx.flush();
        result.map_err(|e| e.to_string())
    })?
}

/// `reduce` export.
pub fn reduce<J: Job>(groups: Vec<u8>, last_complete: bool) -> Result<(), String> {
    with_job::<J, _>(|job, ctx| {
        let result = for_each_group(&groups, last_complete, |key, values| {
            job.reduce(key, values, ctx)
        });
        ctx.flush();
        result
    })?
}

/// `combine` export.
pub fn combine<J: Job>(groups: Vec<u8>) -> Result<(), String> {
    with_job::<J, _>(|job, ctx| {
        let result = for_each_group(&groups, true, |key, values| job.combine(key, values, ctx));
        ctx.flush();
        result
    })?
}

fn for_each_group(
    groups: &[u8],
    last_complete: bool,
    mut f: impl FnMut(&[u8], &mut Values) -> crate::Result,
) -> Result<(), String> {
    let mut reader = Reader::new(groups);
    while !reader.is_empty() {
        let key = reader.field().map_err(|e| malformed(&e))?;
        let count = reader.u32().map_err(|e| malformed(&e))?;
        let last = is_last_group(&reader, count)?;
        let mut values = Values::new(reader, count, last && !last_complete);
        f(key, &mut values).map_err(|e| e.to_string())?;
        reader = values.finish()?;
    }
    Ok(())
}

/// Whether the group whose values start at `reader` is the batch's last.
fn is_last_group(reader: &Reader, count: u32) -> Result<bool, String> {
    let mut probe = reader.clone();
    probe.skip(count).map_err(|e| malformed(&e))?;
    Ok(probe.is_empty())
}
