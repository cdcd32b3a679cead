//! Sort: the input's lines in byte order, duplicates kept. Run it with
//! `--partitioner range`: reducer p then gets the p-th range of lines, so
//! the outputs `part-r-00000`, `part-r-00001`, ... concatenated are the
//! whole input sorted (the MapReduce paper's sort; TeraSort's sampling).
//! With the default hash partitioner each output is sorted on its own.

use quern_guest::{Context, Job, Result, Values, export_job};

#[derive(Default)]
struct Sort;

impl Job for Sort {
    fn map(&mut self, _offset: &[u8], line: &[u8], ctx: &mut Context) -> Result {
        ctx.emit(line, b"");
        Ok(())
    }

    fn reduce(&mut self, line: &[u8], copies: &mut Values, ctx: &mut Context) -> Result {
        // A pair with an empty value is written as the key alone: the line.
        for _ in copies {
            ctx.emit(line, b"");
        }
        Ok(())
    }
}

export_job!(Sort);
