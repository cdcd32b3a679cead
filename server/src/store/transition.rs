//! The task state machine: what each event does to one task, decided here
//! without a database. The SQL layer locks a task's row, reads it into a
//! [`Task`], applies one event and writes the whole row back with one
//! statement ([`Task::columns`]), so every rule about who holds a task
//! lives in this file and nowhere else.
//!
//! ```text
//!            lease                 succeed (primary or backup)
//!   Idle ───────────────▶ Running ─────────────────────────────▶ Completed
//!    ▲   ◀───────────────  │  ▲ │                                    │
//!    │   fail / expire /   │  │ │ add_backup, expire (promote)       │ lose_output
//!    │   release           │  └─┘                                    │ (a map's output
//!    │                     ▼ fail: give_up                           │  is gone)
//!    │                   Failed                                      │
//!    └───────────────────────────────────────────────────────────────┘
//! ```
//!
//! A running task has a primary attempt and, when it straggles, at most one
//! backup attempt on another worker. Each holds a lease with its own
//! deadline. The first of the two to succeed commits the task; the other is
//! superseded. When one of them fails or expires the other carries on.

use protocol::TaskState;

/// An attempt holding a running task: the attempt, its worker, and when its
/// lease runs out unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The attempt.
    pub attempt: i64,
    /// The worker it runs on.
    pub worker: String,
    /// Lease deadline (ms since the epoch).
    pub deadline: i64,
}

/// Where a task is. Each variant carries exactly what that state needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slots {
    /// Waiting for a worker.
    Idle,
    /// Leased.
    Running {
        /// The task's attempt.
        primary: Holder,
        /// A second attempt of a straggler, on another worker.
        backup: Option<Holder>,
    },
    /// Committed by one attempt; a map's output lives on its worker.
    Completed {
        /// The committed attempt.
        attempt: i64,
        /// Its worker.
        worker: String,
        /// The map output's index (JSON) or the reduce's staged output.
        output: String,
    },
    /// Failed too often; its job fails with it.
    Failed,
}

/// One task's mutable part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Where it is.
    pub slots: Slots,
    /// Attempts ended by the guest failing.
    pub failures: i32,
    /// Attempts ended by the host (lost worker, failed fetch, crash).
    pub host_failures: i32,
    /// Attempts started (primaries and backups).
    pub attempts: i32,
    /// Whether a successful attempt's counters were added to the job's
    /// (a map that runs again after losing its output adds them once).
    pub counted: bool,
    /// When the task last changed state or holder.
    pub updated_at: i64,
}

/// Which of a running task's attempts one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The task's attempt.
    Primary,
    /// Its backup.
    Backup,
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped, exited non-zero or broke a limit.
    Guest,
    /// The host could not run it (lost worker, failed fetch, crash).
    Host,
}

/// What a report from an attempt did to its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The attempt does not hold the task (its lease was taken back, the
    /// other attempt won, the job ended, or another worker sent the
    /// report): nothing changed.
    Refused,
    /// The attempt committed the task.
    Committed {
        /// The other attempt, now superseded.
        superseded: Option<i64>,
        /// Whether the attempt's counters are added to the job's (only the
        /// first success of a task counts).
        add_counters: bool,
    },
    /// The attempt failed; the task runs again (or its other attempt
    /// carries on), or, with `give_up`, the task failed for good.
    Failed {
        /// The task failed for good; its job fails.
        give_up: bool,
        /// Guest failures so far, this one included.
        failures: i32,
        /// Host failures so far, this one included.
        host_failures: i32,
    },
}

/// The columns of a `tasks` row that [`Task`] owns, as written back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// `state`.
    pub state: TaskState,
    /// `attempt_id`.
    pub attempt_id: Option<i64>,
    /// `worker_id`.
    pub worker_id: Option<String>,
    /// `lease_deadline`.
    pub lease_deadline: Option<i64>,
    /// `backup_attempt_id`.
    pub backup_attempt_id: Option<i64>,
    /// `backup_worker_id`.
    pub backup_worker_id: Option<String>,
    /// `backup_deadline`.
    pub backup_deadline: Option<i64>,
    /// `output`.
    pub output: Option<String>,
}

impl Task {
    /// Reads a row's columns back; `Err` names what is inconsistent.
    pub fn from_columns(
        c: Columns,
        failures: i32,
        host_failures: i32,
        attempts: i32,
        counted: bool,
        updated_at: i64,
    ) -> Result<Task, String> {
        let holder = |attempt: Option<i64>, worker: Option<String>, deadline: Option<i64>| match (
            attempt, worker, deadline,
        ) {
            (Some(attempt), Some(worker), Some(deadline)) => Some(Holder {
                attempt,
                worker,
                deadline,
            }),
            _ => None,
        };
        let slots = match c.state {
            TaskState::Idle => Slots::Idle,
            TaskState::Failed => Slots::Failed,
            TaskState::InProgress => Slots::Running {
                primary: holder(c.attempt_id, c.worker_id, c.lease_deadline)
                    .ok_or("a running task without its attempt, worker and deadline")?,
                backup: holder(c.backup_attempt_id, c.backup_worker_id, c.backup_deadline),
            },
            TaskState::Completed => match (c.attempt_id, c.worker_id) {
                (Some(attempt), Some(worker)) => Slots::Completed {
                    attempt,
                    worker,
                    output: c.output.unwrap_or_default(),
                },
                _ => return Err("a completed task without its attempt and worker".into()),
            },
        };
        Ok(Task {
            slots,
            failures,
            host_failures,
            attempts,
            counted,
            updated_at,
        })
    }

    /// The row's columns for the task as it is now.
    pub fn columns(&self) -> Columns {
        let mut c = Columns {
            state: self.state(),
            attempt_id: None,
            worker_id: None,
            lease_deadline: None,
            backup_attempt_id: None,
            backup_worker_id: None,
            backup_deadline: None,
            output: None,
        };
        match &self.slots {
            Slots::Idle | Slots::Failed => {}
            Slots::Running { primary, backup } => {
                c.attempt_id = Some(primary.attempt);
                c.worker_id = Some(primary.worker.clone());
                c.lease_deadline = Some(primary.deadline);
                if let Some(b) = backup {
                    c.backup_attempt_id = Some(b.attempt);
                    c.backup_worker_id = Some(b.worker.clone());
                    c.backup_deadline = Some(b.deadline);
                }
            }
            Slots::Completed {
                attempt,
                worker,
                output,
            } => {
                c.attempt_id = Some(*attempt);
                c.worker_id = Some(worker.clone());
                c.output = Some(output.clone());
            }
        }
        c
    }

    /// The state's name.
    pub fn state(&self) -> TaskState {
        match self.slots {
            Slots::Idle => TaskState::Idle,
            Slots::Running { .. } => TaskState::InProgress,
            Slots::Completed { .. } => TaskState::Completed,
            Slots::Failed => TaskState::Failed,
        }
    }

    /// The role `attempt` plays in the running task, if it holds it.
    pub fn role(&self, attempt: i64) -> Option<Role> {
        match &self.slots {
            Slots::Running { primary, .. } if primary.attempt == attempt => Some(Role::Primary),
            Slots::Running {
                backup: Some(b), ..
            } if b.attempt == attempt => Some(Role::Backup),
            _ => None,
        }
    }

    /// Idle to running under `primary`. False (nothing changes) unless idle.
    pub fn lease(&mut self, primary: Holder, now: i64) -> bool {
        if self.slots != Slots::Idle {
            return false;
        }
        self.slots = Slots::Running {
            primary,
            backup: None,
        };
        self.attempts += 1;
        self.updated_at = now;
        true
    }

    /// Adds a backup attempt to a running task on a worker other than its
    /// primary's. False (nothing changes) when it has one already, is not
    /// running, or `backup` is on the primary's worker.
    pub fn add_backup(&mut self, holder: Holder) -> bool {
        match &mut self.slots {
            Slots::Running { primary, backup }
                if backup.is_none() && primary.worker != holder.worker =>
            {
                *backup = Some(holder);
                self.attempts += 1;
                true
            }
            _ => false,
        }
    }

    /// Extends the lease of `attempt` on `worker` to `deadline`; false when
    /// the attempt does not hold the task (the worker should stop it).
    pub fn renew(&mut self, attempt: i64, worker: &str, deadline: i64) -> bool {
        let Slots::Running { primary, backup } = &mut self.slots else {
            return false;
        };
        for holder in std::iter::once(primary).chain(backup.as_mut()) {
            if holder.attempt == attempt && holder.worker == worker {
                holder.deadline = deadline;
                return true;
            }
        }
        false
    }

    /// The attempt's worker reports success with `output`. Only a holder
    /// reporting from its own worker, in a job still running, commits.
    pub fn succeed(
        &mut self,
        attempt: i64,
        worker: &str,
        job_running: bool,
        output: String,
        now: i64,
    ) -> Verdict {
        let Some(role) = self.holding(attempt, worker, job_running) else {
            return Verdict::Refused;
        };
        let superseded = self.other(role).map(|h| h.attempt);
        let add_counters = !self.counted;
        self.slots = Slots::Completed {
            attempt,
            worker: worker.to_owned(),
            output,
        };
        self.counted = true;
        self.updated_at = now;
        Verdict::Committed {
            superseded,
            add_counters,
        }
    }

    /// The attempt's worker reports a failure. A task fails for good after
    /// `max_attempts` guest failures or `max_host_failures` host failures;
    /// otherwise the other attempt, if any, carries on as the task's
    /// attempt, or the task waits for a worker again.
    #[allow(clippy::too_many_arguments)]
    pub fn fail(
        &mut self,
        attempt: i64,
        worker: &str,
        job_running: bool,
        kind: FailureKind,
        max_attempts: i32,
        max_host_failures: i32,
        now: i64,
    ) -> Verdict {
        let Some(role) = self.holding(attempt, worker, job_running) else {
            return Verdict::Refused;
        };
        match kind {
            FailureKind::Guest => self.failures += 1,
            FailureKind::Host => self.host_failures += 1,
        }
        let give_up = self.failures >= max_attempts || self.host_failures >= max_host_failures;
        self.slots = match (give_up, self.other(role).cloned()) {
            (true, _) => Slots::Failed,
            (false, Some(other)) => Slots::Running {
                primary: other,
                backup: None,
            },
            (false, None) => Slots::Idle,
        };
        self.updated_at = now;
        Verdict::Failed {
            give_up,
            failures: self.failures,
            host_failures: self.host_failures,
        }
    }

    /// Takes `attempt`'s lease back (it expired, or its worker died): a
    /// backup just goes; a primary's backup, if any, carries on as the
    /// task's attempt, or the task waits again. False when the attempt
    /// holds nothing (a completion won the race).
    pub fn expire(&mut self, attempt: i64, now: i64) -> bool {
        let Some(role) = self.role(attempt) else {
            return false;
        };
        let Slots::Running { primary, backup } = std::mem::replace(&mut self.slots, Slots::Idle)
        else {
            return false;
        };
        self.slots = match (role, backup) {
            (Role::Backup, _) => Slots::Running {
                primary,
                backup: None,
            },
            (Role::Primary, Some(backup)) => Slots::Running {
                primary: backup,
                backup: None,
            },
            (Role::Primary, None) => Slots::Idle,
        };
        self.updated_at = now;
        true
    }

    /// A completed map's output is gone (its worker died, or a reducer
    /// could not fetch it): the task runs again. `seen_by` is when the
    /// reporter learnt of the output; an output committed after that is a
    /// newer one and stays. True when the task went back to idle.
    pub fn lose_output(&mut self, seen_by: i64, now: i64) -> bool {
        if !matches!(self.slots, Slots::Completed { .. }) || self.updated_at > seen_by {
            return false;
        }
        self.slots = Slots::Idle;
        self.updated_at = now;
        true
    }

    /// The job ended (cancelled or failed): a running task lets go of its
    /// attempts and waits. Returns the attempts let go.
    pub fn release(&mut self, now: i64) -> Vec<i64> {
        let Slots::Running { primary, backup } = &self.slots else {
            return Vec::new();
        };
        let released = std::iter::once(primary.attempt)
            .chain(backup.as_ref().map(|b| b.attempt))
            .collect();
        self.slots = Slots::Idle;
        self.updated_at = now;
        released
    }

    /// Whether a report of `attempt` from `worker` may end the task: the
    /// attempt holds it, the report comes from its own worker, and the job
    /// still runs. Otherwise [`Task::succeed`] and [`Task::fail`] refuse.
    pub fn may_end(&self, attempt: i64, worker: &str, job_running: bool) -> bool {
        self.holding(attempt, worker, job_running).is_some()
    }

    /// The role of `attempt` when it may end the task.
    fn holding(&self, attempt: i64, worker: &str, job_running: bool) -> Option<Role> {
        let role = self.role(attempt)?;
        let Slots::Running { primary, backup } = &self.slots else {
            return None;
        };
        let holder = match role {
            Role::Primary => primary,
            Role::Backup => backup.as_ref()?,
        };
        (job_running && holder.worker == worker).then_some(role)
    }

    /// The running task's attempt other than the one in `role`.
    fn other(&self, role: Role) -> Option<&Holder> {
        match (&self.slots, role) {
            (Slots::Running { backup, .. }, Role::Primary) => backup.as_ref(),
            (Slots::Running { primary, .. }, Role::Backup) => Some(primary),
            _ => None,
        }
    }
}

/// Where a running job goes once its tasks say so: with every reduce
/// task completed it succeeded (also while a lost map output runs again:
/// every output is in); in the map phase with every map completed it
/// reduces. `None` while it stays where it is, and for a finished job.
pub fn next_job_state(
    state: protocol::JobState,
    maps_left: bool,
    reduces_left: bool,
) -> Option<protocol::JobState> {
    use protocol::JobState;
    match state {
        JobState::Mapping | JobState::Reducing if !reduces_left => Some(JobState::Succeeded),
        JobState::Mapping if !maps_left => Some(JobState::Reducing),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::JobState;

    fn holder(attempt: i64, worker: &str) -> Holder {
        Holder {
            attempt,
            worker: worker.into(),
            deadline: 1_000,
        }
    }

    fn idle() -> Task {
        Task {
            slots: Slots::Idle,
            failures: 0,
            host_failures: 0,
            attempts: 0,
            counted: false,
            updated_at: 0,
        }
    }

    /// A task running attempt 1 on w1 with backup attempt 2 on w2.
    fn with_backup() -> Task {
        let mut t = idle();
        assert!(t.lease(holder(1, "w1"), 10));
        assert!(t.add_backup(holder(2, "w2")));
        t
    }

    fn roundtrip(t: &Task) -> Task {
        Task::from_columns(
            t.columns(),
            t.failures,
            t.host_failures,
            t.attempts,
            t.counted,
            t.updated_at,
        )
        .unwrap()
    }

    #[test]
    fn lease_only_from_idle() {
        let mut t = idle();
        assert!(t.lease(holder(1, "w1"), 10));
        assert_eq!(t.state(), TaskState::InProgress);
        assert_eq!(t.attempts, 1);
        assert!(!t.lease(holder(2, "w2"), 11));
        assert_eq!(t.role(1), Some(Role::Primary));
        assert_eq!(t.role(2), None);
    }

    #[test]
    fn one_backup_on_another_worker() {
        let mut t = idle();
        assert!(!t.add_backup(holder(2, "w2")), "an idle task has no backup");
        t.lease(holder(1, "w1"), 10);
        assert!(
            !t.add_backup(holder(2, "w1")),
            "not on the primary's worker"
        );
        assert!(t.add_backup(holder(2, "w2")));
        assert!(!t.add_backup(holder(3, "w3")), "one backup at a time");
        assert_eq!(t.role(2), Some(Role::Backup));
        assert_eq!(t.attempts, 2);
    }

    #[test]
    fn renew_extends_the_right_lease_only() {
        let mut t = with_backup();
        assert!(t.renew(2, "w2", 5_000));
        let c = t.columns();
        assert_eq!(
            (c.lease_deadline, c.backup_deadline),
            (Some(1_000), Some(5_000))
        );
        assert!(!t.renew(2, "w1", 6_000), "another worker's attempt");
        assert!(!t.renew(9, "w1", 6_000), "an attempt that holds nothing");
        assert!(t.renew(1, "w1", 7_000));
        assert_eq!(t.columns().lease_deadline, Some(7_000));
    }

    #[test]
    fn the_first_success_commits_and_supersedes_the_other() {
        for (winner, worker, loser) in [(1, "w1", 2), (2, "w2", 1)] {
            let mut t = with_backup();
            let v = t.succeed(winner, worker, true, "out".into(), 20);
            assert_eq!(
                v,
                Verdict::Committed {
                    superseded: Some(loser),
                    add_counters: true
                }
            );
            assert_eq!(
                t.slots,
                Slots::Completed {
                    attempt: winner,
                    worker: worker.into(),
                    output: "out".into()
                }
            );
            assert_eq!(
                t.succeed(
                    loser,
                    if loser == 1 { "w1" } else { "w2" },
                    true,
                    "late".into(),
                    21
                ),
                Verdict::Refused
            );
        }
    }

    #[test]
    fn reports_from_the_wrong_worker_or_an_ended_job_are_refused() {
        let mut t = with_backup();
        let before = t.clone();
        assert_eq!(t.succeed(1, "w2", true, "x".into(), 20), Verdict::Refused);
        assert_eq!(t.succeed(1, "w1", false, "x".into(), 20), Verdict::Refused);
        assert_eq!(
            t.fail(2, "w1", true, FailureKind::Guest, 4, 20, 20),
            Verdict::Refused
        );
        assert_eq!(t, before, "a refused report changes nothing");
    }

    #[test]
    fn counters_count_once_per_task() {
        let mut t = idle();
        t.lease(holder(1, "w1"), 10);
        assert!(matches!(
            t.succeed(1, "w1", true, "a".into(), 20),
            Verdict::Committed {
                add_counters: true,
                ..
            }
        ));
        assert!(t.lose_output(20, 30));
        t.lease(holder(3, "w2"), 40);
        assert!(matches!(
            t.succeed(3, "w2", true, "b".into(), 50),
            Verdict::Committed {
                add_counters: false,
                ..
            }
        ));
    }

    #[test]
    fn a_failure_hands_over_to_the_other_attempt() {
        // The primary fails: the backup carries on as the task's attempt.
        let mut t = with_backup();
        let v = t.fail(1, "w1", true, FailureKind::Host, 4, 20, 30);
        assert_eq!(
            v,
            Verdict::Failed {
                give_up: false,
                failures: 0,
                host_failures: 1
            }
        );
        assert_eq!(
            t.slots,
            Slots::Running {
                primary: holder(2, "w2"),
                backup: None
            }
        );
        // The backup fails: the primary carries on.
        let mut t = with_backup();
        t.fail(2, "w2", true, FailureKind::Guest, 4, 20, 30);
        assert_eq!(
            t.slots,
            Slots::Running {
                primary: holder(1, "w1"),
                backup: None
            }
        );
        assert_eq!(t.failures, 1);
        // Alone, a failed attempt sends the task back to wait.
        let mut t = idle();
        t.lease(holder(1, "w1"), 10);
        t.fail(1, "w1", true, FailureKind::Guest, 4, 20, 30);
        assert_eq!(t.slots, Slots::Idle);
        assert_eq!(t.updated_at, 30);
    }

    #[test]
    fn a_task_gives_up_at_its_limits() {
        let mut t = idle();
        for n in 1..=3 {
            t.lease(holder(n, "w1"), n);
            let v = t.fail(n, "w1", true, FailureKind::Guest, 3, 20, n);
            let give_up = n == 3;
            assert!(
                matches!(v, Verdict::Failed { give_up: g, failures, .. } if g == give_up && failures == n as i32)
            );
        }
        assert_eq!(t.slots, Slots::Failed);
        // Host failures have their own limit, with a backup running too.
        let mut t = with_backup();
        t.host_failures = 19;
        let v = t.fail(2, "w2", true, FailureKind::Host, 3, 20, 40);
        assert!(matches!(
            v,
            Verdict::Failed {
                give_up: true,
                host_failures: 20,
                ..
            }
        ));
        assert_eq!(t.slots, Slots::Failed);
    }

    #[test]
    fn expiry_promotes_the_backup_or_frees_the_task() {
        let mut t = with_backup();
        assert!(t.expire(1, 50));
        assert_eq!(
            t.slots,
            Slots::Running {
                primary: holder(2, "w2"),
                backup: None
            }
        );
        assert!(t.expire(2, 60));
        assert_eq!(t.slots, Slots::Idle);
        assert!(!t.expire(2, 70), "nothing left to take back");

        let mut t = with_backup();
        assert!(t.expire(2, 50), "a backup just goes");
        assert_eq!(
            t.slots,
            Slots::Running {
                primary: holder(1, "w1"),
                backup: None
            }
        );
        // A completion that won the race is left alone.
        let mut t = with_backup();
        t.succeed(1, "w1", true, "o".into(), 20);
        let done = t.clone();
        assert!(!t.expire(1, 30));
        assert_eq!(t, done);
    }

    #[test]
    fn only_an_output_older_than_the_report_is_lost() {
        let mut t = idle();
        t.lease(holder(1, "w1"), 10);
        t.succeed(1, "w1", true, "o".into(), 100);
        // A reducer leased before the map ran again reports the old output.
        assert!(!t.lose_output(99, 120));
        assert_eq!(t.state(), TaskState::Completed);
        assert!(t.lose_output(100, 130));
        assert_eq!(t.slots, Slots::Idle);
        assert!(!t.lose_output(200, 140), "an idle task has no output");
    }

    #[test]
    fn release_lets_go_of_both_attempts() {
        let mut t = with_backup();
        assert_eq!(t.release(90), vec![1, 2]);
        assert_eq!(t.slots, Slots::Idle);
        let mut done = idle();
        done.lease(holder(1, "w1"), 1);
        done.succeed(1, "w1", true, "o".into(), 2);
        assert!(
            done.release(3).is_empty(),
            "a completed task keeps its output"
        );
        assert_eq!(done.state(), TaskState::Completed);
    }

    #[test]
    fn columns_round_trip_and_refuse_inconsistent_rows() {
        for t in [idle(), with_backup(), {
            let mut t = with_backup();
            t.succeed(2, "w2", true, "{\"partitions\":[]}".into(), 5);
            t
        }] {
            assert_eq!(roundtrip(&t), t);
        }
        let mut c = with_backup().columns();
        c.worker_id = None;
        assert!(Task::from_columns(c, 0, 0, 0, false, 0).is_err());
        // A half-written backup is no backup.
        let mut c = with_backup().columns();
        c.backup_deadline = None;
        let t = Task::from_columns(c, 0, 0, 0, false, 0).unwrap();
        assert_eq!(t.role(2), None);
    }

    #[test]
    fn jobs_move_on_when_their_tasks_are_done() {
        use JobState::*;
        assert_eq!(next_job_state(Mapping, false, true), Some(Reducing));
        assert_eq!(next_job_state(Mapping, true, true), None);
        assert_eq!(
            next_job_state(Reducing, true, true),
            None,
            "a lost map runs again"
        );
        assert_eq!(next_job_state(Reducing, false, false), Some(Succeeded));
        assert_eq!(
            next_job_state(Mapping, true, false),
            Some(Succeeded),
            "every output is in"
        );
        for finished in [Succeeded, Failed, Cancelled] {
            assert_eq!(next_job_state(finished, false, false), None);
        }
    }
}
