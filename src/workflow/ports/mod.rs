//! Ports: what a run (and the use cases above it) needs from the world, as small traits.
//!
//! The workflow owns these traits and the types they speak; adapters implement them and tests
//! fake them:
//!
//! | port | what for | adapter |
//! |---|---|---|
//! | [`ElastiCache`] | the AWS verbs, one request each (use cases read with it too) | `elasticache::sdk` |
//! | [`Aws`] | a run's AWS effects, each looking before it acts | `elasticache::steps` |
//! | [`Chat`] | a run's messages: top message, thread replies, private answers | `slack::chat` |
//! | [`Pager`] | a run's pages | `pagerduty` |
//! | [`MemorySeries`] | how full a group's nodes were over a window | `cloudwatch` |
//! | [`Graphs`] | the memory graph in a run's thread | `slack::graph` |
//! | [`Verify`] | memory before and after the upsize | `cloudwatch::verify` |
//! | [`Prices`] | the on-demand price of a node type in a region | `pricing` |
//! | [`Hooks`] | the pause and resume webhooks | `hooks` |
//! | [`Store`] | runs, their audit trail, the outbox (a run's effects, and the jobs requests leave), the alarm log | `store` |
//! | [`Clock`] | the time | [`SystemClock`], [`TokioClock`] |
//! | [`Metrics`] | counters for runs and steps | `telemetry` |
//!
//! An effect's adapter does its I/O, writes what it did to the [`Attempt`]'s audit lines, and
//! answers with the result or a [`Failure`] that says whether another try is worth it; the
//! runner decides when that is, and what the machine hears if it never works.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::Timestamp;

use super::run::Run;

pub mod chat;
pub mod clock;
pub mod elasticache;
pub mod fleet;
pub mod memory;
pub mod metrics;
pub mod prices;
pub mod store;

pub use chat::{Chat, Graphs, Hooks, Pager};
pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use elasticache::{
    Aws, AwsError, CacheClusterInfo, ClusterMode, ElastiCache, GroupInfo, GroupStatus, LookAgain,
    Parameters, PlanFacts, SnapshotInfo, SnapshotStatus,
};
pub use memory::{AroundUpsize, MemoryError, MemoryQuery, MemorySeries, NodeSeries, Verify};
pub use metrics::{Metrics, NoMetrics};
pub use prices::{PriceError, Prices};
pub use store::{
    AlarmRecord, AuditEntry, Busy, Change, Claim, Created, Decide, Decided, DueJobs, EffectId,
    NewJob, NoticeSeen, PendingEffect, PendingJob, Pruned, Retention, Store, StoreError,
    WindowedNotice,
};

/// Everything a run talks to: what the runner is given.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn Store>,
    pub aws: Arc<dyn Aws>,
    pub chat: Arc<dyn Chat>,
    pub graphs: Arc<dyn Graphs>,
    pub verify: Arc<dyn Verify>,
    pub pager: Arc<dyn Pager>,
    pub hooks: Arc<dyn Hooks>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<dyn Metrics>,
}

/// A boxed, sendable future: what the ports' methods return so they can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failed attempt, sorted by what the runner does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, for the audit trail, the log, and (when it is final) the machine.
    pub error: String,
    /// Worth another try later: throttling, a 5xx, a network failure.
    pub retryable: bool,
    /// How long the other side asked us to wait (Slack's `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure another try would not fix.
    pub fn fatal(error: impl Into<String>) -> Failure {
        Failure {
            error: error.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// A failure worth another try (after `retry_after`, when the other side said).
    pub fn transient(error: impl Into<String>, retry_after: Option<Duration>) -> Failure {
        Failure {
            error: error.into(),
            retryable: true,
            retry_after,
        }
    }
}

/// One execution of one effect of a run: the run as it is now, which try this is, and the
/// audit lines the adapter writes while it works.
#[derive(Debug)]
pub struct Attempt {
    pub run: Run,
    pub effect_id: EffectId,
    /// 1 for the first try.
    pub number: u32,
    /// An earlier try may have done the work before its answer was lost (a retry, or a crash
    /// while it was in flight): look before acting again.
    pub maybe_done_before: bool,
    /// A retryable failure of this try would be tried again (the step's deadline, or its count
    /// of tries, is not reached): an adapter may pass a doubtful answer on as "try again"
    /// rather than settle for "unknown". Set by the runner; true unless it says otherwise.
    pub another_try_follows: bool,
    pub now: Timestamp,
    audit: Vec<AuditEntry>,
    clock: std::sync::Arc<dyn Clock>,
}

impl Attempt {
    pub fn new(
        run: Run,
        effect_id: EffectId,
        number: u32,
        maybe_done_before: bool,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Attempt {
        Attempt {
            run,
            effect_id,
            number,
            maybe_done_before,
            another_try_follows: true,
            now: clock.now(),
            audit: Vec::new(),
            clock,
        }
    }

    /// Note what was done, for the run's audit trail: who or what (`aws`, `slack`, …), the
    /// call, and what came of it.
    pub fn log(&mut self, actor: &str, kind: &str, detail: impl Into<String>) {
        let entry = AuditEntry::new(self.clock.now(), actor, kind, detail);
        self.audit.push(entry);
    }

    /// The audit lines written so far.
    pub fn take_audit(&mut self) -> Vec<AuditEntry> {
        std::mem::take(&mut self.audit)
    }
}
