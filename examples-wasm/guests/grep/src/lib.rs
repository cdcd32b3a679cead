//! Distributed grep: every input line matching the regular expression in
//! the `pattern` argument, keyed by `file:offset`.

use quern_guest::{Args, Context, Job, Result, Values, export_job};
use regex_lite::Regex;

#[derive(Default)]
struct Grep {
    pattern: Option<Regex>,
}

impl Job for Grep {
    fn setup(&mut self, args: &Args) -> Result {
        let pattern = args.require("pattern")?;
        self.pattern = Some(Regex::new(pattern)?);
        Ok(())
    }

    fn map(&mut self, offset: &[u8], line: &[u8], ctx: &mut Context) -> Result {
        let pattern = self.pattern.as_ref().expect("setup ran");
        let text = String::from_utf8_lossy(line);
        if pattern.is_match(&text) {
            let mut key = ctx.input().as_bytes().to_vec();
            key.push(b':');
            key.extend_from_slice(offset);
            ctx.emit(key, line);
            ctx.count("matching lines", 1);
        }
        Ok(())
    }

    fn reduce(&mut self, key: &[u8], lines: &mut Values, ctx: &mut Context) -> Result {
        for line in lines {
            ctx.emit(key, line);
        }
        Ok(())
    }
}

export_job!(Grep);
