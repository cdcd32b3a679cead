//! Inverted index: for each word, the sorted, distinct names of the input
//! files containing it, as `N name1,name2,...`.

use std::collections::BTreeSet;

use quern_guest::{Context, Job, Result, Values, export_job};

#[derive(Default)]
struct Indexer;

impl Job for Indexer {
    const HAS_COMBINE: bool = true;

    fn map(&mut self, _offset: &[u8], text: &[u8], ctx: &mut Context) -> Result {
        let text = String::from_utf8_lossy(text);
        let words: BTreeSet<&str> = text
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| !w.is_empty())
            .collect();
        let file = ctx.input().to_owned();
        for word in words {
            ctx.emit(word, &file);
        }
        Ok(())
    }

    fn reduce(&mut self, word: &[u8], files: &mut Values, ctx: &mut Context) -> Result {
        let files: BTreeSet<Vec<u8>> = files.map(|f| f.into_owned()).collect();
        let mut line = format!("{} ", files.len()).into_bytes();
        for (i, file) in files.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.extend_from_slice(file);
        }
        ctx.emit(word, line);
        Ok(())
    }

    /// Drops repeated file names early; the reduce removes the rest.
    fn combine(&mut self, word: &[u8], files: &mut Values, ctx: &mut Context) -> Result {
        let files: BTreeSet<Vec<u8>> = files.map(|f| f.into_owned()).collect();
        for file in files {
            ctx.emit(word, file);
        }
        Ok(())
    }
}

export_job!(Indexer);
