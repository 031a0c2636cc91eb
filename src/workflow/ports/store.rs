//! The [`Store`]: runs, their audit trail, the outbox (a run's pending effects, and the jobs
//! requests leave behind), and the log of alarm deliveries.
//!
//! What the workflow relies on, whatever the implementation:
//! - a transition and the effects it schedules are written together, before any of them runs;
//!   an effect is marked done in the same write that records its result;
//! - at most one active run per replication group: a second [`Store::create_run`] for a
//!   group with an active run writes nothing and names that run;
//! - [`Store::due_effects`] gives each run at most one effect, its earliest eligible one, and a
//!   run's chat effects in the order they were decided, even while one waits out a retry;
//! - an alarm delivery is recorded once ([`Store::record_alarm`] says whether it was new), and
//!   the job it asks for is written with it or not at all;
//! - a store several replicas share ([`Store::lease`] is `Some`) hands each effect and job to
//!   one replica at a time: what [`Store::due_effects`] and [`Store::due_jobs`] return is
//!   claimed for this replica until the lease runs out ([`Store::renew_claim`] extends it while
//!   the work goes on); a run's lane with an effect claimed elsewhere is left alone until that
//!   effect is done or its claim has run out, so a run's messages stay in order across replicas.

use serde::{Deserialize, Serialize};

use crate::domain::{MessageTs, ReplicationGroupId, RunId, Timestamp};
use crate::workflow::effect::{Effect, Lane, Scheduled};
use crate::workflow::machine::Submitted;
use crate::workflow::run::{Progress, Run};

use super::BoxFuture;

/// A pending effect's id in the outbox.
pub type EffectId = i64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database could not be read or written (it said why).
    #[error("database error: {0}")]
    Backend(String),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error("run {0} not found")]
    RunNotFound(RunId),
}

/// An entry of a run's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// Who or what: a Slack user id, `alarm`, `aws`, `slack`, `pagerduty`, `hook`, `policy`, `timer`.
    pub actor: String,
    /// What kind of entry: an event name, an effect name, `rejected`, …
    pub kind: String,
    pub detail: String,
}

impl AuditEntry {
    pub fn new(
        at: Timestamp,
        actor: impl Into<String>,
        kind: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        AuditEntry {
            at,
            actor: actor.into(),
            kind: kind.into(),
            detail: detail.into(),
        }
    }
}

/// One alarm delivery and what it did.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRecord {
    pub delivery_id: String,
    pub at: Timestamp,
    pub name: String,
    /// CloudWatch's spelling: `ALARM`, `OK`, `INSUFFICIENT_DATA`.
    pub state: String,
    pub group: Option<String>,
    pub outcome: String,
}

/// A pending effect as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEffect {
    pub id: EffectId,
    pub run_id: RunId,
    pub effect: Effect,
    pub due: Timestamp,
    /// 1 for the first try; raised on each retry.
    pub attempt: u32,
    /// When it was decided (deliveries are retried for a while from then).
    pub created: Timestamp,
}

/// Work a replica has claimed in a shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Claim {
    Effect(EffectId),
    Job(i64),
}

/// A run's lane that has an effect in flight: the run's next effect in that lane waits.
pub type Busy = (RunId, Lane);

/// What a change to a run writes besides the run itself.
#[derive(Debug, Default)]
pub struct Change {
    pub effects: Vec<Scheduled>,
    pub drop_pending_work: bool,
    pub audit: Vec<AuditEntry>,
    /// An alarm delivery noted on the run, recorded in the same write.
    pub delivery: Option<AlarmRecord>,
}

/// The result of trying to create a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    Created,
    /// The group already has an active run; nothing was written.
    AlreadyActive(RunId),
}

/// What deciding on a stored run came to: the run to write (`None`: leave it as it is) and
/// what to write with it; the store hands it back once it is committed.
#[derive(Debug)]
pub struct Decided {
    pub next: Option<Run>,
    pub change: Change,
    /// The answer for whoever submitted the event.
    pub submitted: Submitted,
    /// The transition's audit line (empty when nothing changed).
    pub summary: String,
    /// What the transition finished, for the metrics.
    pub progress: Progress,
}

impl Decided {
    /// Record this alarm delivery with the change, if the event was accepted.
    pub fn recording(mut self, delivery: Option<AlarmRecord>) -> Decided {
        if matches!(self.submitted, Submitted::Accepted(_)) {
            self.change.delivery = delivery;
        }
        self
    }
}

/// A decision taken inside the store's transaction, on the run as stored.
pub type Decide = Box<dyn FnOnce(&Run) -> Decided + Send>;

/// Work a request leaves behind that belongs to no run: a notice in a channel, a private answer
/// that needs a slow call first. Its `kind` and `body` mean something to the use cases only.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub kind: String,
    /// JSON.
    pub body: String,
    pub due: Timestamp,
}

/// A notice said at most once per `window` for its `key` (an unmanaged group, a group in its
/// cooldown): deliveries within the window count on the notice already posted.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowedNotice {
    pub key: String,
    pub window: std::time::Duration,
    /// Posts the notice, the first of its window. Its `due` is the time the window is
    /// judged at.
    pub post: NewJob,
    /// Edits the posted notice with the count; left for a repeat when none is pending.
    pub update: NewJob,
}

/// What a notice's window has seen so far.
#[derive(Debug, Clone, PartialEq)]
pub struct NoticeSeen {
    /// Deliveries in the window, the first included.
    pub count: u32,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
    /// The posted notice, once Slack took it.
    pub ts: Option<MessageTs>,
}

/// Due jobs, and when the next one not yet due is.
pub type DueJobs = (Vec<PendingJob>, Option<Timestamp>);

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingJob {
    pub id: i64,
    pub kind: String,
    pub body: String,
    pub due: Timestamp,
    pub attempt: u32,
}

pub trait Store: Send + Sync {
    // ---- runs -------------------------------------------------------------------------

    /// Insert a new run with its first effects, unless its group already has an active run.
    fn create_run<'a>(
        &'a self,
        run: &'a Run,
        change: Change,
    ) -> BoxFuture<'a, Result<Created, StoreError>>;

    /// Change a run in one transaction: `decide` sees the stored run. `completed` is the
    /// effect whose result this is; it is marked done in the same transaction.
    fn update_run<'a>(
        &'a self,
        id: &'a RunId,
        completed: Option<EffectId>,
        now: Timestamp,
        decide: Decide,
    ) -> BoxFuture<'a, Result<Decided, StoreError>>;

    fn run<'a>(&'a self, id: &'a RunId) -> BoxFuture<'a, Result<Option<Run>, StoreError>>;

    /// A run's audit trail, oldest first.
    fn audit_trail<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>>;

    fn active_run<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Option<Run>, StoreError>>;

    /// The most recent runs, newest first, optionally for one group.
    fn recent_runs<'a>(
        &'a self,
        group: Option<&'a ReplicationGroupId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Run>, StoreError>>;

    /// The latest succeeded run of a group (for the cooldown).
    fn last_success<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Option<Run>, StoreError>>;

    // ---- the outbox: effects ----------------------------------------------------------

    /// For each run and lane not in `busy`, its next eligible effect if it is due by `now`
    /// (claimed for this replica when the store is shared).
    fn due_effects<'a>(
        &'a self,
        now: Timestamp,
        busy: &'a [Busy],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PendingEffect>, StoreError>>;

    /// When the next effect of a run and lane not in `busy` is due.
    fn next_due<'a>(
        &'a self,
        busy: &'a [Busy],
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>>;

    /// Note that an effect is being executed; whether an earlier execution had started it.
    fn mark_started(
        &self,
        effect: EffectId,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Is an effect of this kind pending for the run after `effect`? (A later one supersedes.)
    fn has_later_pending<'a>(
        &'a self,
        run: &'a RunId,
        effect: EffectId,
        kind: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Mark an effect done without changing its run, with its audit lines.
    fn complete_effect<'a>(
        &'a self,
        effect: EffectId,
        run: &'a RunId,
        now: Timestamp,
        audit: Vec<AuditEntry>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Put an effect back for another try at `due`, with its audit lines.
    fn retry_effect<'a>(
        &'a self,
        effect: EffectId,
        run: &'a RunId,
        due: Timestamp,
        attempt: u32,
        audit: Vec<AuditEntry>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// How many effects and jobs wait (a metric).
    fn pending_count(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Pending effects, the earliest due first: of one run, or of all (the demo, tests).
    fn pending_effects<'a>(
        &'a self,
        run: Option<&'a RunId>,
    ) -> BoxFuture<'a, Result<Vec<PendingEffect>, StoreError>>;

    // ---- several replicas -------------------------------------------------------------

    /// How long a claim on an effect or a job lasts, when several replicas share the store;
    /// `None` for a store only one process uses (nothing is claimed).
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }

    /// Extend this replica's claim on work it is still doing; false if the claim was lost
    /// (another replica may have taken the work over).
    fn renew_claim(&self, claim: Claim, now: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
        let _ = (claim, now);
        Box::pin(async { Ok(true) })
    }

    // ---- the outbox: jobs -------------------------------------------------------------

    fn enqueue_job<'a>(&'a self, job: NewJob) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Due jobs not in `busy` (claimed for this replica when the store is shared), and when
    /// the next one not in `busy` is due.
    fn due_jobs<'a>(
        &'a self,
        now: Timestamp,
        busy: &'a [i64],
        limit: usize,
    ) -> BoxFuture<'a, Result<DueJobs, StoreError>>;

    /// Note that a job is being done; whether an earlier try had started it (and so may have
    /// done its work before the process stopped).
    fn start_job(&self, id: i64, now: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>>;

    fn complete_job(&self, id: i64, now: Timestamp) -> BoxFuture<'_, Result<(), StoreError>>;

    fn retry_job(
        &self,
        id: i64,
        due: Timestamp,
        attempt: u32,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Periodic work (the forecast watch, pruning) done once per `every` across all the
    /// replicas sharing the store: true for the caller that takes this turn of `name` (the
    /// next turn comes `every` after `now`). A store one process uses: always its turn.
    fn take_turn<'a>(
        &'a self,
        name: &'a str,
        every: std::time::Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = (name, every, now);
        Box::pin(async { Ok(true) })
    }

    /// When the next turn of `name` comes due (`None`: never taken). A timer kept in the
    /// store: after a restart the work waits for this time, not a whole interval more.
    fn turn_due<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        let _ = name;
        Box::pin(async { Ok(None) })
    }

    // ---- alarms -----------------------------------------------------------------------

    /// The alarm log, newest first.
    fn recent_alarms(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AlarmRecord>, StoreError>>;

    /// The newest delivery of `group`'s alarm in ALARM at or after `since`, if any (the
    /// scale-down check: no suggestion after the alarm fired in its window).
    fn last_alarm<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Option<AlarmRecord>, StoreError>>;

    /// Has this alarm delivery been handled already? (Retries repeat the delivery id.)
    fn alarm_seen<'a>(&'a self, delivery_id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Record what a delivery did, and the notice it leaves, in one write; false (and nothing
    /// written) if the delivery was recorded before. Within the notice's window the delivery is
    /// counted on it instead (and one update of it is left when none is pending).
    fn record_alarm(
        &self,
        record: AlarmRecord,
        notice: Option<WindowedNotice>,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// What the notice window `key` has seen.
    fn notice_seen<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<NoticeSeen>, StoreError>>;

    /// The window's notice was posted as `ts`.
    /// The window's notice was posted as `ts`. If repeats were counted while it was being
    /// posted (an update is pending), `update` is queued, in the same commit, to show them.
    fn notice_posted<'a>(
        &'a self,
        key: &'a str,
        ts: &'a MessageTs,
        update: NewJob,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Take the window's pending update: what it has seen, and from now on a repeat leaves a
    /// new update. While the notice isn't posted yet the update stays pending.
    fn take_notice_update<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<NoticeSeen>, StoreError>>;

    /// Remember a signed request (by its signature) for `keep`; false if it was seen before
    /// (a replay). Requests older than `keep` are forgotten.
    fn remember_request<'a>(
        &'a self,
        key: &'a str,
        now: Timestamp,
        keep: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Forget a request remembered by [`Store::remember_request`]: it could not be taken in
    /// after all, and the copy its sender sends again must be acted on.
    fn forget_request<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    // ---- health -----------------------------------------------------------------------

    /// Can the store be written right now? (`/readyz`.)
    fn check_writable(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    // ---- housekeeping -----------------------------------------------------------------

    /// Forget what is older than its retention, at most `batch` rows of each kind per call
    /// (so a writer never waits long): finished runs with their audit trail and effects after
    /// `runs`; done effects and jobs, alarm deliveries, notice windows and replay keys after
    /// `records`. Nothing pending and no active run is ever pruned.
    fn prune(
        &self,
        now: Timestamp,
        retention: Retention,
        batch: usize,
    ) -> BoxFuture<'_, Result<Pruned, StoreError>>;
}

/// How long the store keeps what is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished runs and their audit trail.
    pub runs: std::time::Duration,
    /// Done effects and jobs, alarm deliveries (their dedup) and notice windows.
    pub records: std::time::Duration,
}

/// What one pruning pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: usize,
    pub audit: usize,
    pub effects: usize,
    pub jobs: usize,
    pub alarms: usize,
    pub notices: usize,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.runs + self.audit + self.effects + self.jobs + self.alarms + self.notices
    }

    /// Did any kind fill its batch (so there may be more)?
    pub fn full(&self, batch: usize) -> bool {
        [
            self.runs,
            self.audit,
            self.effects,
            self.jobs,
            self.alarms,
            self.notices,
        ]
        .iter()
        .any(|n| *n >= batch)
    }
}
