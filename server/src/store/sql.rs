//! The SQL of the store, written once and instantiated for SQLite and
//! Postgres by `store_impl!`, which puts together the parts by concern
//! (`catalog`, `jobs`, `workers`, `scheduling`). The dialects differ in row
//! locking only: Postgres locks a job's row and then its task rows before
//! changing them, and skips locked task rows when leasing (the lock order
//! is in `scheduling`); SQLite gets the same atomicity from its single
//! writer connection.

/// Implements `Store` for `$store` (a struct with a `pool` and a `jobs:
/// JobCache` field, and a `begin()` that starts a `$tx`) on database
/// `$db`. `$lock_job` is appended to a query
/// that reads a job row before changing the job's tasks, `$lock_task` to
/// one that reads task rows (`tasks t`) to change them, `$skip_locked` to
/// the lease's candidate queries.
macro_rules! store_impl {
    ($store:ident, $db:ty, $tx:ty, $lock_job:expr, $lock_task:expr, $skip_locked:expr) => {
        use protocol::api::*;
        use protocol::worker_api::*;
        use protocol::*;
        use $crate::store::rows::*;
        use $crate::store::scheduling::{JobCache, JobStatics};
        use $crate::store::transition;
        use $crate::store::*;

        $crate::store::scheduling::scheduling_impl!(
            $store,
            $db,
            $tx,
            $lock_job,
            $lock_task,
            $skip_locked
        );
        $crate::store::catalog::catalog_impl!($store);
        $crate::store::jobs::jobs_impl!($store, $db, $lock_job);
        $crate::store::workers::workers_impl!($store, $lock_task);
    };
}

pub(super) use store_impl;
