//! Word count: words are maximal runs of Unicode letters (case-sensitive);
//! the output is each word with the number of times it occurs.

use quern_guest::{Context, Job, Result, Values, export_job};

#[derive(Default)]
struct WordCount;

impl Job for WordCount {
    const HAS_COMBINE: bool = true;

    fn map(&mut self, _offset: &[u8], text: &[u8], ctx: &mut Context) -> Result {
        if text.is_ascii() {
            // Most lines: no decoding; an ASCII byte is a letter exactly
            // when it is an alphabetic char.
            for word in text.split(|b| !b.is_ascii_alphabetic()) {
                if !word.is_empty() {
                    ctx.emit(word, "1");
                }
            }
            return Ok(());
        }
        for word in String::from_utf8_lossy(text).split(|c: char| !c.is_alphabetic()) {
            if !word.is_empty() {
                ctx.emit(word, "1");
            }
        }
        Ok(())
    }

    fn reduce(&mut self, word: &[u8], counts: &mut Values, ctx: &mut Context) -> Result {
        ctx.emit(word, counts.sum_u64()?.to_string());
        Ok(())
    }

    fn combine(&mut self, word: &[u8], counts: &mut Values, ctx: &mut Context) -> Result {
        self.reduce(word, counts, ctx)
    }
}

export_job!(WordCount);
