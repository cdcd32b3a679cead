//! The Rust SDK for Quern jobs: implement [`Job`], call [`export_job!`], and
//! build with `cargo build --target wasm32-wasip2 --release`.
//!
//! ```ignore
//! use quern_guest::{export_job, Context, Job, Result, Values};
//!
//! #[derive(Default)]
//! struct WordCount;
//!
//! impl Job for WordCount {
//!     const HAS_COMBINE: bool = true;
//!
//!     fn map(&mut self, _offset: &[u8], line: &[u8], ctx: &mut Context) -> Result {
//!         for word in String::from_utf8_lossy(line).split(|c: char| !c.is_alphabetic()) {
//!             if !word.is_empty() {
//!                 ctx.emit(word, "1");
//!             }
//!         }
//!         Ok(())
//!     }
//!
//!     fn reduce(&mut self, word: &[u8], counts: &mut Values, ctx: &mut Context) -> Result {
//!         ctx.emit(word, counts.sum_u64()?.to_string());
//!         Ok(())
//!     }
//!
//!     fn combine(&mut self, word: &[u8], counts: &mut Values, ctx: &mut Context) -> Result {
//!         self.reduce(word, counts, ctx)
//!     }
//! }
//!
//! export_job!(WordCount);
//! ```
//!
//! The host calls `map` once per input record and `reduce` once per distinct
//! key, in ascending byte order of key, with every value of that key. Values
//! are streamed: a key with millions of values never has to fit in memory.
//!
//! When the job has a combiner, a map task's pairs do not leave the guest
//! one by one: the SDK holds them in a table under the memory budget the
//! host gives, runs [`Job::combine`] on a key's values as they pile up, and
//! emits the combined pairs when the table is full and at the end of the
//! task (in-mapper combining). `combine` must therefore be an operation the
//! result of which can be combined again, as MapReduce always asks of it.
#![warn(missing_docs)]

mod context;
#[doc(hidden)]
pub mod rt;
mod table;

pub use context::{Args, Context, Values};

// The generated bindings name this crate by its own path so that the
// `export_job!` expansion in a guest crate resolves them without the guest
// depending on wit-bindgen itself.
extern crate self as quern_guest;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[doc(hidden)]
#[allow(missing_docs)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "job",
        pub_export_macro: true,
        export_macro_name: "__export_job_world",
        default_bindings_module: "quern_guest::__bindings",
        runtime_path: "quern_guest::__wit_bindgen::rt",
    });
}

/// A failure of a job function. Its message is shown to the user as the
/// reason the task (and, after the last retry, the job) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        Error {
            message: message.to_string(),
        }
    }

    /// The message shown to the user.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(err: E) -> Self {
        Error::msg(err)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The result of a job function.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// A MapReduce job. One value of the type is created per task with
/// `Default`, then [`Job::setup`] receives the job's arguments.
pub trait Job: Default + 'static {
    /// Whether [`Job::combine`] is implemented; when false the host never
    /// calls it.
    const HAS_COMBINE: bool = false;

    /// Reads the job's arguments (`--arg name=value`) once per task, before
    /// any record. Rejecting them fails the task with the returned message.
    fn setup(&mut self, args: &Args) -> Result {
        let _ = args;
        Ok(())
    }

    /// Maps one input record. For the `lines` format the key is the line's
    /// byte offset in decimal and the value the line; for `whole-file` the
    /// key is the file name and the value its contents. [`Context::input`]
    /// names the file either way.
    fn map(&mut self, key: &[u8], value: &[u8], ctx: &mut Context) -> Result;

    /// Reduces one key and all of its values. Each emitted pair becomes one
    /// output line `key<TAB>value`.
    fn reduce(&mut self, key: &[u8], values: &mut Values, ctx: &mut Context) -> Result;

    /// Combines some values of one key on the map side. It must only emit
    /// pairs under `key`. Set [`Job::HAS_COMBINE`] when implementing it.
    /// It may run many times on the same key, on values it produced itself.
    fn combine(&mut self, key: &[u8], values: &mut Values, ctx: &mut Context) -> Result {
        let _ = (key, values, ctx);
        Err(Error::msg("this job does not implement combine"))
    }

    /// Called once at the end of a task, after the last [`Job::map`] or
    /// [`Job::reduce`]: pairs emitted here go where that phase's pairs go
    /// (a reduce task's become output lines, e.g. a top-k kept across
    /// keys).
    fn finish(&mut self, ctx: &mut Context) -> Result {
        let _ = ctx;
        Ok(())
    }
}

/// Exports a [`Job`] type as the component's job.
#[macro_export]
macro_rules! export_job {
    ($job:ty) => {
        #[doc(hidden)]
        struct __QuernExport;

        impl $crate::__bindings::Guest for __QuernExport {
            fn init(
                task: $crate::__bindings::TaskInfo,
                args: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<$crate::__bindings::GuestInfo, ::std::string::String> {
                $crate::rt::init::<$job>(task, args)
            }
            fn finish() -> ::std::result::Result<(), ::std::string::String> {
                $crate::rt::finish::<$job>()
            }
            fn map(
                input: $crate::__bindings::InputInfo,
                records: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::rt::map::<$job>(input, records)
            }
            fn reduce(
                groups: ::std::vec::Vec<u8>,
                last_complete: bool,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::rt::reduce::<$job>(groups, last_complete)
            }
            fn combine(
                groups: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::rt::combine::<$job>(groups)
            }
        }

        $crate::__bindings::__export_job_world!(__QuernExport with_types_in $crate::__bindings);
    };
}
