//! Glue between the generated bindings and a [`Job`]: decodes batches,
//! keeps the job value for the life of the instance, flushes output.

use std::any::Any;
use std::cell::RefCell;

use crate::__bindings::{GuestInfo, InputInfo};
use crate::Job;
use crate::batch::Reader;
use crate::context::{Args, Context, Values};

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
pub fn init<J: Job>(args: Vec<(String, String)>) -> Result<GuestInfo, String> {
    let mut job = J::default();
    job.setup(&Args::new(args)).map_err(|e| e.to_string())?;
    INSTANCE.with(|cell| {
        *cell.borrow_mut() = Some(Instance {
            job: Box::new(job),
            ctx: Context::default(),
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
        let mut reader = Reader::new(&records);
        let mut result = Ok(());
        while !reader.is_empty() {
            let key = reader.field()?;
            let value = reader.field()?;
            if let Err(err) = job.map(key, value, ctx) {
                result = Err(err.to_string());
                break;
            }
        }
        ctx.flush();
        result
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
        let key = reader.field()?;
        let count = reader.u32()?;
        let last = is_last_group(&reader, count)?;
        let mut values = Values::new(reader, count, last && !last_complete);
        f(key, &mut values).map_err(|e| e.to_string())?;
        reader = values.finish()?;
    }
    Ok(())
}

/// Whether the group whose values start at `reader` is the batch's last.
fn is_last_group(reader: &Reader, count: u32) -> Result<bool, String> {
    let mut probe = Reader::new(reader.rest());
    for _ in 0..count {
        probe.field()?;
    }
    Ok(probe.is_empty())
}
