//! Policy: the settings that decide how a run behaves (copied into each run when it starts),
//! and the pure decisions made with them — which node type a run moves to, who may decide on
//! it, what an alarm does.
//!
//! No I/O: AWS's answers and the person's identity come in as arguments. `config` parses the
//! file into these types; nothing here reads a file or the environment.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::alarm::AlarmState;
use crate::domain::node_types::{next_in_family, within_cap};
use crate::domain::{NodeType, ReplicationGroupId, RunId, SlackUserId, Timestamp};
use crate::workflow::ports::{GroupInfo, GroupStatus};
use crate::workflow::preflight::{Check, PendingChange, Preflight};

use super::run::{Direction, Plan, Run};

/// Whether a run needs a person's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    Required,
    Auto,
}

/// What to do when nobody approves within `approval_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnApprovalTimeout {
    /// Page PagerDuty and keep waiting; a later approval still works.
    Escalate,
    /// Proceed as if approved (the "sleep through the night" mode), and say so.
    Approve,
}

/// What a run does when approving would also apply changes waiting on the group (or the bot
/// can't tell whether any are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingChanges {
    /// A person must approve them explicitly ("Approve with pending changes"); `auto` and
    /// `on_approval_timeout = "approve"` don't.
    #[default]
    Acknowledge,
    /// No run while changes are pending: apply or cancel them first.
    Refuse,
}

/// Which node the run's snapshot is taken from, for a group with cluster mode disabled (with it
/// enabled the group is snapshotted whole, one node per shard, whatever this says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotSource {
    /// A replica: the snapshot's fork and copy-on-write memory stay off the primary, which is
    /// the node the alarm is about (AWS's advice for backups). The group when it has none.
    #[default]
    Replica,
    /// The primary node.
    Primary,
    /// The group (`ReplicationGroupId`): AWS picks the node.
    Group,
}

/// Whether a run snapshots the group before the upsize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotPolicy {
    /// Snapshot first; the upsize waits until the snapshot is available.
    #[default]
    Take,
    /// No snapshot, for groups whose data is disposable (a cache that refills itself).
    Skip,
}

/// A retry schedule: `attempts` tries in all, waiting `interval × backoff^n` between them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    #[serde(with = "crate::domain::duration_ms")]
    pub interval: Duration,
    pub attempts: u32,
    pub backoff: f64,
}

impl RetryPolicy {
    /// The wait before attempt number `next_attempt` (2 = the first retry).
    /// Waits grow by `backoff` but never beyond five minutes: a long outage is retried every
    /// five minutes, not once an hour.
    pub fn delay_before(&self, next_attempt: u32) -> Duration {
        let n = next_attempt.saturating_sub(2) as i32;
        let ms = self.interval.as_millis() as f64 * self.backoff.powi(n);
        Duration::from_millis(ms.min(Self::MAX_DELAY.as_millis() as f64) as u64)
    }

    pub const MAX_DELAY: Duration = Duration::from_secs(300);

    /// After try number `attempt` failed: how long to wait before the next, or `None` when
    /// another try isn't worth it (the failure is not retryable, or this was the last try).
    /// The other side's `Retry-After` wins when it gave one.
    pub fn next_try(
        &self,
        attempt: u32,
        retryable: bool,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        (retryable && attempt < self.attempts)
            .then(|| retry_after.unwrap_or_else(|| self.delay_before(attempt + 1)))
    }

    /// Pages matter more than any other delivery: at least 20 tries (with the default
    /// `[delivery]` schedule, about an hour) before a page is given up on.
    pub fn for_pages(self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.attempts.max(20),
            ..self
        }
    }
}

/// How chat messages, pages, hooks and jobs are retried: the schedule, and how long a Slack or
/// PagerDuty delivery keeps being tried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deliveries {
    pub retry: RetryPolicy,
    pub retry_for: Duration,
}

/// What to do after a try of an effect failed.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterFailure {
    /// Try again at `due`, as try number `attempt`; `line` says so in the audit trail.
    Retry {
        due: Timestamp,
        attempt: u32,
        line: String,
    },
    /// No more tries; `line` says so when tries ran out (not when one was pointless), and
    /// `deadline` names the deadline that passed, when that is why.
    GiveUp {
        line: Option<String>,
        deadline: Option<&'static str>,
    },
}

/// Until when a failing effect is tried again: a deadline (its step's, or a delivery's), or a
/// number of tries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryUntil {
    /// Transient failures are retried until this time, however many tries that takes; `what`
    /// names the deadline for the audit trail and the failure ("modify_timeout (2h)").
    Deadline { at: Timestamp, what: &'static str },
    /// At most the policy's `attempts` tries.
    Attempts,
}

/// One failed try, as the retry schedule sees it.
#[derive(Debug, Clone, Copy)]
pub struct FailedTry<'a> {
    pub kind: &'a str,
    pub attempt: u32,
    pub error: &'a str,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
    pub now: Timestamp,
    /// A random number in [0, 1) that spreads the waits of many failing tries (jitter).
    pub jitter: f64,
}

/// `wait`, spread by `r` in [0, 1): between half and all of it, so that many runs throttled
/// together don't come back together.
pub fn with_jitter(wait: Duration, r: f64) -> Duration {
    wait.mul_f64(0.5 + 0.5 * r.clamp(0.0, 1.0))
}

/// `wait`, spread at random (see [`with_jitter`]).
pub fn jittered(wait: Duration) -> Duration {
    with_jitter(wait, crate::domain::random_fraction())
}

impl<'a> FailedTry<'a> {
    pub fn of(
        f: &'a super::ports::Failure,
        kind: &'a str,
        attempt: u32,
        now: Timestamp,
        jitter: f64,
    ) -> FailedTry<'a> {
        FailedTry {
            kind,
            attempt,
            error: &f.error,
            retryable: f.retryable,
            retry_after: f.retry_after,
            now,
            jitter,
        }
    }
}

impl RetryPolicy {
    /// Before try `attempt` at `now`: would a retryable failure of it be tried again?
    pub fn tries_after(&self, attempt: u32, now: Timestamp, until: RetryUntil) -> bool {
        match until {
            RetryUntil::Attempts => attempt < self.attempts,
            RetryUntil::Deadline { at, .. } => now < at,
        }
    }

    /// After a try failed: retry, or give up. The wait grows by `backoff` up to
    /// [`RetryPolicy::MAX_DELAY`], spread by jitter; the other side's `Retry-After` is kept
    /// (and only ever lengthened a little). With a deadline, retries go on until it (the last
    /// try is at the deadline); otherwise up to `attempts` tries.
    pub fn after_failure(&self, f: FailedTry<'_>, until: RetryUntil) -> AfterFailure {
        let FailedTry {
            kind,
            attempt,
            error,
            ..
        } = f;
        let give_up = |why: String| AfterFailure::GiveUp {
            line: f.retryable.then_some(why),
            deadline: None,
        };
        if !f.retryable {
            return give_up(String::new());
        }
        let wait = match f.retry_after {
            Some(asked) => asked.mul_f64(1.0 + 0.1 * f.jitter.clamp(0.0, 1.0)),
            None => with_jitter(self.delay_before(attempt + 1), f.jitter),
        };
        let wait_text = |w: Duration| crate::domain::format_duration(w);
        match until {
            RetryUntil::Attempts => match attempt < self.attempts {
                true => AfterFailure::Retry {
                    due: f.now.plus(wait),
                    attempt: attempt + 1,
                    line: format!(
                        "{kind} attempt {attempt}/{} failed ({error}); retrying in {}",
                        self.attempts,
                        wait_text(wait)
                    ),
                },
                false => give_up(format!(
                    "{kind} failed {attempt} time(s); last error: {error}"
                )),
            },
            RetryUntil::Deadline { at, what } if f.now < at => {
                let due = f.now.plus(wait).min(at);
                AfterFailure::Retry {
                    due,
                    attempt: attempt + 1,
                    line: format!(
                        "{kind} attempt {attempt} failed ({error}); retrying in {} (until {what} passes)",
                        wait_text(due.since(f.now))
                    ),
                }
            }
            RetryUntil::Deadline { what, .. } => AfterFailure::GiveUp {
                line: Some(format!(
                    "{kind} failed {attempt} time(s) until {what} passed; last error: {error}"
                )),
                deadline: Some(what),
            },
        }
    }
}

/// Everything that decides how a run for one group behaves. Copied into each run when it
/// starts, so a config change never alters a run half-way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub approval: ApprovalMode,
    #[serde(with = "crate::domain::duration_ms")]
    pub approval_timeout: Duration,
    pub on_approval_timeout: OnApprovalTimeout,
    /// After this long without a decision a run that still waits is closed as expired.
    #[serde(with = "crate::domain::duration_ms")]
    pub approval_expiry: Duration,
    pub min_approvals: u8,
    pub allow_self_approval: bool,
    #[serde(with = "crate::domain::duration_ms")]
    pub snapshot_poll_interval: Duration,
    pub snapshot_max_polls: u32,
    #[serde(with = "crate::domain::duration_ms")]
    pub modify_poll_interval: Duration,
    #[serde(with = "crate::domain::duration_ms")]
    pub modify_timeout: Duration,
    #[serde(with = "crate::domain::duration_ms")]
    pub cooldown: Duration,
    pub max_node_type: Option<NodeType>,
    pub pause_url: Option<String>,
    pub resume_url: Option<String>,
    #[serde(with = "crate::domain::duration_ms")]
    pub hook_timeout: Duration,
    /// Transient AWS errors (throttling, 5xx, network) are retried on this schedule.
    pub aws_retry: RetryPolicy,
    #[serde(default)]
    pub pending_changes: PendingChanges,
    /// Where the run's snapshot is taken from (runs stored before this existed: a replica).
    #[serde(default)]
    pub snapshot_source: SnapshotSource,
    /// Snapshot before the upsize, or not (`skip`: the data is disposable).
    #[serde(default)]
    pub snapshot: SnapshotPolicy,
    /// After a failed or timed-out snapshot, how long an approver may still choose "Upsize
    /// without a snapshot" (or Cancel) before the run ends as failed (zero: it ends at once).
    #[serde(
        with = "crate::domain::duration_ms",
        default = "default_without_snapshot_window"
    )]
    pub without_snapshot_window: Duration,
    /// How long memory is watched after the upsize before the run says whether it worked
    /// (zero: it doesn't look).
    #[serde(with = "crate::domain::duration_ms", default = "default_verify_window")]
    pub verify_window: Duration,
    /// How far back the memory graph in the thread reaches.
    #[serde(with = "crate::domain::duration_ms", default = "default_graph_window")]
    pub graph_window: Duration,
    /// How far back memory is read at planning for the trend on the card ("at this rate,
    /// full in ~25 min"); zero: no forecast.
    #[serde(
        with = "crate::domain::duration_ms",
        default = "default_forecast_window"
    )]
    pub forecast_window: Duration,
    /// Propose a run before the alarm when the trend says the group is full within this long
    /// (zero: never). An ordinary plan: it needs approval as the policy says.
    #[serde(with = "crate::domain::duration_ms", default)]
    pub forecast_alert: Duration,
    /// Suggest going one size back down when memory stayed low (`off`: never). Only ever a
    /// suggestion: it needs an approver, whatever `approval` says.
    #[serde(default)]
    pub scale_down: ScaleDownMode,
    /// How long after the group's last change (an upsize or a scale-down), or a dismissed
    /// suggestion, before a scale-down is suggested (again).
    #[serde(
        with = "crate::domain::duration_ms",
        default = "default_scale_down_after"
    )]
    pub scale_down_after: Duration,
    /// How far back memory is read to judge a scale-down: its peak over the whole window.
    #[serde(
        with = "crate::domain::duration_ms",
        default = "default_scale_down_after"
    )]
    pub scale_down_window: Duration,
    /// Suggest a scale-down only when the window's peak, computed for the smaller type, is
    /// below this share of its memory (percent).
    #[serde(default = "default_scale_down_below")]
    pub scale_down_below: f64,
    /// After a scale-down, memory must stay below this (percent; the memory alarm's threshold
    /// less a margin): the run checks it `verify_window` later and pages when it does not.
    #[serde(default = "default_scale_down_verify_below")]
    pub scale_down_verify_below: f64,
    /// Never suggest a type below this one (`None`: as far down as AWS allows, one step a
    /// time).
    #[serde(default)]
    pub min_node_type: Option<NodeType>,
}

/// Whether the bot suggests going back down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleDownMode {
    #[default]
    Suggest,
    Off,
}

fn default_scale_down_after() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_scale_down_below() -> f64 {
    50.0
}

fn default_scale_down_verify_below() -> f64 {
    75.0
}

fn default_verify_window() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_without_snapshot_window() -> Duration {
    Duration::from_secs(3600)
}

fn default_graph_window() -> Duration {
    Duration::from_secs(3 * 3600)
}

fn default_forecast_window() -> Duration {
    Duration::from_secs(3600)
}

impl Default for Policy {
    /// The built-in defaults: the original Step Functions workflow's timings.
    fn default() -> Policy {
        Policy {
            approval: ApprovalMode::Required,
            approval_timeout: Duration::from_secs(15 * 60),
            on_approval_timeout: OnApprovalTimeout::Escalate,
            approval_expiry: Duration::from_secs(24 * 3600),
            min_approvals: 1,
            allow_self_approval: false,
            snapshot_poll_interval: Duration::from_secs(30),
            snapshot_max_polls: 120,
            modify_poll_interval: Duration::from_secs(30),
            modify_timeout: Duration::from_secs(2 * 3600),
            cooldown: Duration::from_secs(6 * 3600),
            max_node_type: Some(NodeType::parse("cache.r6g.4xlarge").expect("valid")),
            pause_url: None,
            resume_url: None,
            hook_timeout: Duration::from_secs(10),
            aws_retry: RetryPolicy {
                interval: Duration::from_secs(15),
                attempts: 5,
                backoff: 1.5,
            },
            pending_changes: PendingChanges::Acknowledge,
            snapshot_source: SnapshotSource::Replica,
            snapshot: SnapshotPolicy::Take,
            without_snapshot_window: default_without_snapshot_window(),
            graph_window: default_graph_window(),
            verify_window: default_verify_window(),
            forecast_window: default_forecast_window(),
            forecast_alert: Duration::ZERO,
            scale_down: ScaleDownMode::Suggest,
            scale_down_after: default_scale_down_after(),
            scale_down_window: default_scale_down_after(),
            scale_down_below: default_scale_down_below(),
            scale_down_verify_below: default_scale_down_verify_below(),
            min_node_type: None,
        }
    }
}

/// Decide the plan from what AWS said, or explain why there is nothing to do.
///
/// The target is the requested type when one was asked for (it must be a scale-up AWS lists
/// and within the cap), otherwise the next size up in the same family within the cap. With
/// `pending_changes = "refuse"`, changes waiting on the group (or not knowing) mean no plan.
pub fn plan(
    group: &GroupInfo,
    allowed: &[NodeType],
    requested: Option<&NodeType>,
    policy: &Policy,
    preflight: &Preflight,
) -> Result<Plan, NoPlan> {
    let id = || group.id.clone();
    if !matches!(
        group.status,
        GroupStatus::Available | GroupStatus::Snapshotting
    ) {
        return Err(NoPlan::Busy {
            group: id(),
            status: group.status.clone(),
        });
    }
    let Some(current) = group.node_type.clone() else {
        return Err(NoPlan::NoNodeType { group: id() });
    };
    let cap = policy.max_node_type.clone();
    if let Some(cap) = &cap
        && !cap.same_family(&current)
    {
        return Err(NoPlan::CapOtherFamily {
            group: id(),
            current,
            cap: cap.clone(),
        });
    }
    let choices = choices_within_cap(&current, allowed, cap.as_ref());
    let target = match requested {
        Some(t) => {
            if *t == current {
                return Err(NoPlan::AlreadyOn {
                    group: id(),
                    node_type: t.clone(),
                });
            }
            if !is_scale_up(&current, t) {
                return Err(NoPlan::NotUpInFamily {
                    group: id(),
                    requested: t.clone(),
                    current,
                });
            }
            if !allowed.contains(t) {
                return Err(NoPlan::NotAScaleUp {
                    group: id(),
                    requested: t.clone(),
                    current,
                    choices,
                });
            }
            if let Some(cap) = &cap {
                match within_cap(t, cap) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(NoPlan::AboveCap {
                            requested: t.clone(),
                            cap: cap.clone(),
                            choices,
                        });
                    }
                    Err(why) => return Err(NoPlan::CapUnusable { why }),
                }
            }
            t.clone()
        }
        None => match next_in_family(&current, &choices) {
            Some(t) => t.clone(),
            None => {
                return Err(match &cap {
                    Some(cap) if next_in_family(&current, allowed).is_some() => NoPlan::AtCap {
                        group: id(),
                        current,
                        cap: cap.clone(),
                    },
                    _ => NoPlan::Largest {
                        group: id(),
                        current,
                    },
                });
            }
        },
    };
    refuse_pending(&group.id, policy, preflight)?;
    Ok(Plan {
        version: 1,
        current,
        target,
        choices,
        cap,
        cluster_mode: group.cluster_mode,
        members: group.members.len(),
        shards: group.shards.max(1),
        preflight: Some(preflight.clone()),
        pending_acknowledged: false,
        forecast: None,
        direction: Direction::Up,
        prices: None,
    })
}

/// With `pending_changes = "refuse"`, changes waiting on the group (or not knowing) mean no plan.
fn refuse_pending(
    group: &ReplicationGroupId,
    policy: &Policy,
    preflight: &Preflight,
) -> Result<(), NoPlan> {
    if policy.pending_changes != PendingChanges::Refuse {
        return Ok(());
    }
    match &preflight.pending {
        Check::Known(changes) if !changes.is_empty() => Err(NoPlan::PendingChanges {
            group: group.clone(),
            changes: changes.clone(),
        }),
        Check::Unknown(why) => Err(NoPlan::PendingUnknown {
            group: group.clone(),
            why: why.clone(),
        }),
        Check::Known(_) => Ok(()),
    }
}

/// The plan of a scale-down suggestion: exactly `to`, the one step down the check found, when
/// the group is still on `from`, AWS still lists `to` as a scale-down, it is the next size down
/// in the family (never two steps) and not below `min_node_type`. The only choice is `to`.
pub fn plan_down(
    group: &GroupInfo,
    allowed: &[NodeType],
    from: &NodeType,
    to: &NodeType,
    policy: &Policy,
    preflight: &Preflight,
) -> Result<Plan, NoPlan> {
    let id = || group.id.clone();
    if group.status != GroupStatus::Available {
        return Err(NoPlan::Busy {
            group: id(),
            status: group.status.clone(),
        });
    }
    let Some(current) = group.node_type.clone() else {
        return Err(NoPlan::NoNodeType { group: id() });
    };
    if current != *from {
        return Err(NoPlan::ChangedSinceCheck {
            group: id(),
            checked: from.clone(),
            now: current,
        });
    }
    if !Direction::Down.allows(&current, to)
        || crate::domain::node_types::prev_in_family(&current, allowed) != Some(to)
    {
        return Err(NoPlan::NotAScaleDown {
            group: id(),
            requested: to.clone(),
            current,
        });
    }
    if let Some(min) = &policy.min_node_type
        && !within_cap(min, to).unwrap_or(false)
    {
        return Err(NoPlan::BelowMin {
            group: id(),
            requested: to.clone(),
            min: min.clone(),
        });
    }
    refuse_pending(&group.id, policy, preflight)?;
    Ok(Plan {
        version: 1,
        current,
        target: to.clone(),
        choices: vec![to.clone()],
        cap: None,
        cluster_mode: group.cluster_mode,
        members: group.members.len(),
        shards: group.shards.max(1),
        preflight: Some(preflight.clone()),
        pending_acknowledged: false,
        forecast: None,
        direction: Direction::Down,
        prices: None,
    })
}

/// Why there is no plan: nothing to do for the group now, or not what was asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "no_plan", rename_all = "snake_case")]
pub enum NoPlan {
    #[error("{group} is `{status}` right now; a run can start once it is `available`")]
    Busy {
        group: ReplicationGroupId,
        status: GroupStatus,
    },
    #[error("AWS did not report a node type for {group}")]
    NoNodeType { group: ReplicationGroupId },
    #[error("{group} is already on {node_type}")]
    AlreadyOn {
        group: ReplicationGroupId,
        node_type: NodeType,
    },
    #[error(
        "AWS does not list {requested} as a scale-up for {group} (on {current}); allowed within the cap: {}",
        list_or_none(choices)
    )]
    NotAScaleUp {
        group: ReplicationGroupId,
        requested: NodeType,
        current: NodeType,
        choices: Vec<NodeType>,
    },
    #[error(
        "{requested} is not a larger {} size than {current}: the bot moves {group} only up, within its family",
        current.family()
    )]
    NotUpInFamily {
        group: ReplicationGroupId,
        requested: NodeType,
        current: NodeType,
    },
    #[error(
        "{requested} is above this group's cap ({cap}); allowed: {}",
        list_or_none(choices)
    )]
    AboveCap {
        requested: NodeType,
        cap: NodeType,
        choices: Vec<NodeType>,
    },
    /// The group's cap is of another node family than the group: the policy contradicts itself.
    #[error(
        "{group} is on {current}, but its cap ({cap}) is of another family; set `max_node_type` to a {} size",
        current.family()
    )]
    CapOtherFamily {
        group: ReplicationGroupId,
        current: NodeType,
        cap: NodeType,
    },
    /// The cap can't be compared with the type (another kind of family).
    #[error("{why}")]
    CapUnusable { why: String },
    #[error("{group} is on {current}, and the next size up is above the cap ({cap})")]
    AtCap {
        group: ReplicationGroupId,
        current: NodeType,
        cap: NodeType,
    },
    /// The group's type changed between the scale-down check and its plan.
    #[error("{group} moved from {checked} to {now} since the scale-down check; nothing to suggest")]
    ChangedSinceCheck {
        group: ReplicationGroupId,
        checked: NodeType,
        now: NodeType,
    },
    #[error(
        "AWS does not list {requested} as the next {} size down for {group} (on {current})",
        current.family()
    )]
    NotAScaleDown {
        group: ReplicationGroupId,
        requested: NodeType,
        current: NodeType,
    },
    #[error("{requested} is below this group's min_node_type ({min})")]
    BelowMin {
        group: ReplicationGroupId,
        requested: NodeType,
        min: NodeType,
    },
    #[error("AWS lists no larger {} size for {group} (on {current})", current.family())]
    Largest {
        group: ReplicationGroupId,
        current: NodeType,
    },
    /// `pending_changes = "refuse"` and changes wait on the group.
    #[error(
        "{group} has changes waiting that ApplyImmediately would apply too ({}); its policy refuses to run until they are applied or cancelled",
        list_changes(changes)
    )]
    PendingChanges {
        group: ReplicationGroupId,
        changes: Vec<PendingChange>,
    },
    /// `pending_changes = "refuse"` and the bot can't tell whether changes wait.
    #[error(
        "the bot couldn't check {group} for pending changes ({why}); its policy refuses to run without knowing"
    )]
    PendingUnknown {
        group: ReplicationGroupId,
        why: String,
    },
}

/// The changes, the first few named and the rest counted.
fn list_changes(changes: &[PendingChange]) -> String {
    const NAMED: usize = 5;
    let mut out: Vec<String> = changes.iter().take(NAMED).map(|c| c.to_string()).collect();
    if changes.len() > NAMED {
        out.push(format!("and {} more", changes.len() - NAMED));
    }
    out.join(", ")
}

/// What AWS says about the group just before the bot acts, against the approved plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Recheck {
    /// As approved: act.
    Go,
    /// Busy with something that passes (a backup): look again in a while.
    Wait(GroupStatus),
    /// Not as approved: stop before acting.
    Stop(Drift),
}

/// How the group differs from the plan that was approved.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "drift", rename_all = "snake_case")]
pub enum Drift {
    #[error("it is on {now} now, not on {approved} as when the plan was made")]
    NodeType { approved: NodeType, now: NodeType },
    #[error("AWS no longer reports its node type")]
    NoNodeType,
    #[error("it is `{status}`: a change the bot did not ask for is under way")]
    Changing { status: GroupStatus },
    #[error(
        "{target} is no longer a scale-up AWS allows for it (allowed now: {})",
        list_or_none(allowed)
    )]
    TargetNotAllowed {
        target: NodeType,
        allowed: Vec<NodeType>,
    },
    #[error(
        "changes are pending on it that the approval did not cover, and ApplyImmediately would apply them too: {}",
        list_changes(changes)
    )]
    PendingChanges { changes: Vec<PendingChange> },
    #[error(
        "the bot can't tell whether changes are pending on it ({why}), and the approval did not cover that"
    )]
    PendingUnknown { why: String },
}

/// Is the group, as AWS describes it now, still the one the plan was approved for? The bot
/// never acts otherwise: same node type, `available`, no pending change the approval did not
/// cover, and the target still a step up in its family, within the cap, that AWS lists.
pub fn recheck(
    plan: &Plan,
    group: &GroupInfo,
    allowed: &[NodeType],
    pending: &Check<Vec<PendingChange>>,
) -> Recheck {
    match &group.status {
        GroupStatus::Available => {}
        GroupStatus::Snapshotting => return Recheck::Wait(group.status.clone()),
        other => {
            return Recheck::Stop(Drift::Changing {
                status: other.clone(),
            });
        }
    }
    let Some(now) = &group.node_type else {
        return Recheck::Stop(Drift::NoNodeType);
    };
    if *now != plan.current {
        return Recheck::Stop(Drift::NodeType {
            approved: plan.current.clone(),
            now: now.clone(),
        });
    }
    // A scale-down's floor was checked at planning (the policy can't change under a run).
    let within = plan.direction == Direction::Down
        || plan
            .cap
            .as_ref()
            .is_none_or(|cap| within_cap(&plan.target, cap).unwrap_or(false));
    if !plan.direction.allows(now, &plan.target) || !within || !allowed.contains(&plan.target) {
        return Recheck::Stop(Drift::TargetNotAllowed {
            target: plan.target.clone(),
            allowed: allowed.to_vec(),
        });
    }
    // What the approval said yes to: the changes the card listed, or not knowing them.
    let seen = plan.preflight.as_ref().map(|p| &p.pending);
    let covered: &[PendingChange] = match (seen, plan.pending_acknowledged) {
        (Some(Check::Known(seen)), true) => seen,
        _ => &[],
    };
    let unknown_covered = plan.pending_acknowledged && matches!(seen, Some(Check::Unknown(_)));
    match pending {
        Check::Known(now) => {
            let new: Vec<PendingChange> = now
                .iter()
                .filter(|c| !covered.contains(c))
                .cloned()
                .collect();
            if !new.is_empty() {
                return Recheck::Stop(Drift::PendingChanges { changes: new });
            }
        }
        // Approving listed changes is not approving whatever else might be pending.
        Check::Unknown(why) if !unknown_covered => {
            return Recheck::Stop(Drift::PendingUnknown { why: why.clone() });
        }
        Check::Unknown(_) => {}
    }
    Recheck::Go
}

/// Scale-ups AWS allows that are within the cap and in the group's family, smallest first.
pub fn choices_within_cap(
    current: &NodeType,
    allowed: &[NodeType],
    cap: Option<&NodeType>,
) -> Vec<NodeType> {
    let mut out: Vec<NodeType> = allowed
        .iter()
        .filter(|t| is_scale_up(current, t))
        .filter(|t| match cap {
            Some(cap) => within_cap(t, cap).unwrap_or(false),
            None => true,
        })
        .cloned()
        .collect();
    out.sort_by_key(|t| t.size());
    out.dedup();
    out
}

/// Is `t` a step up the bot may take from `current`: the same family (so never into or out of
/// data tiering), strictly larger?
pub fn is_scale_up(current: &NodeType, t: &NodeType) -> bool {
    t.same_family(current) && t.size() > current.size()
}

fn list_or_none(types: &[NodeType]) -> String {
    if types.is_empty() {
        "none".to_string()
    } else {
        types
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a person may not make a decision on a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAllowed {
    NotAnApprover,
    SelfApproval,
    AlreadyApprovedByYou,
}

/// May `user` approve a run requested by `requested_by`, given who approved already?
pub fn may_approve(
    policy: &Policy,
    user: &SlackUserId,
    is_approver: bool,
    requested_by: Option<&SlackUserId>,
    approvals_so_far: &[SlackUserId],
) -> Result<(), NotAllowed> {
    if !is_approver {
        return Err(NotAllowed::NotAnApprover);
    }
    if !policy.allow_self_approval && requested_by == Some(user) {
        return Err(NotAllowed::SelfApproval);
    }
    if approvals_so_far.contains(user) {
        return Err(NotAllowed::AlreadyApprovedByYou);
    }
    Ok(())
}

/// What an alarm for a managed group does.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmAction {
    /// Nothing to do, and why.
    Ignore(String),
    /// Start a run.
    Start,
    /// Tell the active run the alarm fired again.
    Repeat(RunId),
    /// Tell the active run the alarm cleared.
    Clear(RunId),
    /// Within the cooldown after a successful upsize: say so, offer to start anyway.
    Cooldown {
        last: RunId,
        since: Duration,
        remaining: Duration,
    },
}

/// Decide what an alarm does, given the group's active run and last successful run.
pub fn on_alarm(
    state: AlarmState,
    active: Option<&Run>,
    last_success: Option<&Run>,
    cooldown: Duration,
    now: Timestamp,
) -> AlarmAction {
    match (state, active) {
        (AlarmState::InsufficientData, _) => {
            AlarmAction::Ignore("INSUFFICIENT_DATA is not a decision to act on".into())
        }
        (AlarmState::Ok, Some(run)) => AlarmAction::Clear(run.id.clone()),
        (AlarmState::Ok, None) => {
            AlarmAction::Ignore("the alarm cleared and no run is active".into())
        }
        (AlarmState::Alarm, Some(run)) => AlarmAction::Repeat(run.id.clone()),
        (AlarmState::Alarm, None) => match in_cooldown(last_success, cooldown, now) {
            Some(c) => AlarmAction::Cooldown {
                last: c.last,
                since: c.since,
                remaining: c.remaining,
            },
            None => AlarmAction::Start,
        },
    }
}

/// The cooldown after a group's last successful upsize, while it lasts.
#[derive(Debug, Clone, PartialEq)]
pub struct Cooldown {
    pub last: RunId,
    pub since: Duration,
    pub remaining: Duration,
}

/// Is the group within `cooldown` of its last successful upsize?
pub fn in_cooldown(
    last_success: Option<&Run>,
    cooldown: Duration,
    now: Timestamp,
) -> Option<Cooldown> {
    let last = last_success?;
    let since = now.since(last.finished_at()?);
    (since < cooldown).then(|| Cooldown {
        last: last.id.clone(),
        since,
        remaining: cooldown - since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::node_types::scale_ups_from;
    use crate::domain::{CacheClusterId, ReplicationGroupId};
    use crate::workflow::ports::{ClusterMode, Failure};

    /// A plan with every preflight check clean.
    fn plan(
        g: &GroupInfo,
        allowed: &[NodeType],
        requested: Option<&NodeType>,
        policy: &Policy,
    ) -> Result<Plan, NoPlan> {
        super::plan(g, allowed, requested, policy, &Preflight::clean())
    }

    fn nt(s: &str) -> NodeType {
        NodeType::parse(s).unwrap()
    }

    fn group(node: &str, status: &str) -> GroupInfo {
        GroupInfo {
            id: ReplicationGroupId::parse("prod-jobs").unwrap(),
            status: status.into(),
            node_type: Some(nt(node)),
            members: vec![CacheClusterId::parse("prod-jobs-001").unwrap()],
            cluster_mode: ClusterMode::Disabled,
            shards: 1,
            pending: Vec::new(),
        }
    }

    fn policy(cap: Option<&str>) -> Policy {
        Policy {
            max_node_type: cap.map(nt),
            ..Policy::default()
        }
    }

    #[test]
    fn the_target_is_the_next_size_in_the_same_family() {
        let allowed = scale_ups_from(&nt("cache.r6g.large"));
        let p = plan(
            &group("cache.r6g.large", "available"),
            &allowed,
            None,
            &policy(Some("cache.r6g.4xlarge")),
        )
        .unwrap();
        assert_eq!(p.target, nt("cache.r6g.xlarge"));
        assert_eq!(p.current, nt("cache.r6g.large"));
        assert_eq!(p.choices[0], nt("cache.r6g.xlarge"), "smallest first");
        assert!(
            p.choices.iter().all(|t| t.same_family(&p.current)),
            "only the group's family: {:?}",
            p.choices
        );
        assert!(
            p.choices
                .iter()
                .all(|t| within_cap(t, &nt("cache.r6g.4xlarge")).unwrap())
        );
    }

    #[test]
    fn a_group_at_the_cap_has_nothing_to_do() {
        let allowed = scale_ups_from(&nt("cache.r6g.2xlarge"));
        let err = plan(
            &group("cache.r6g.2xlarge", "available"),
            &allowed,
            None,
            &policy(Some("cache.r6g.2xlarge")),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("above the cap"), "{err}");
    }

    #[test]
    fn the_largest_size_has_nothing_to_do() {
        let err = plan(
            &group("cache.r6g.16xlarge", "available"),
            &[],
            None,
            &policy(None),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no larger r6g size"), "{err}");
    }

    #[test]
    fn a_requested_type_must_be_allowed_and_within_the_cap() {
        let g = group("cache.r6g.large", "available");
        let allowed = scale_ups_from(&nt("cache.r6g.large"));
        let pol = policy(Some("cache.r6g.2xlarge"));
        let ok = plan(&g, &allowed, Some(&nt("cache.r6g.2xlarge")), &pol).unwrap();
        assert_eq!(ok.target, nt("cache.r6g.2xlarge"));
        let above = plan(&g, &allowed, Some(&nt("cache.r6g.4xlarge")), &pol)
            .unwrap_err()
            .to_string();
        assert!(above.contains("above this group's cap"), "{above}");
        let other_family = plan(&g, &allowed, Some(&nt("cache.m6g.xlarge")), &pol)
            .unwrap_err()
            .to_string();
        assert!(other_family.contains("within its family"), "{other_family}");
        let smaller = plan(&g, &allowed, Some(&nt("cache.r6g.medium")), &pol).unwrap_err();
        assert!(matches!(smaller, NoPlan::NotUpInFamily { .. }), "{smaller}");
        let not_listed = plan(&g, &[], Some(&nt("cache.r6g.xlarge")), &pol)
            .unwrap_err()
            .to_string();
        assert!(not_listed.contains("does not list"), "{not_listed}");
        let cross_cap = Policy {
            max_node_type: Some(nt("cache.m6g.4xlarge")),
            ..Policy::default()
        };
        let cross = plan(&g, &allowed, None, &cross_cap)
            .unwrap_err()
            .to_string();
        assert!(cross.contains("of another family"), "{cross}");
        let same = plan(&g, &allowed, Some(&nt("cache.r6g.large")), &pol)
            .unwrap_err()
            .to_string();
        assert!(same.contains("already on"), "{same}");
    }

    #[test]
    fn a_busy_group_is_not_planned() {
        let allowed = scale_ups_from(&nt("cache.r6g.large"));
        let err = plan(
            &group("cache.r6g.large", "modifying"),
            &allowed,
            None,
            &policy(None),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`modifying`"), "{err}");
    }

    #[test]
    fn alarms_start_repeat_clear_or_wait_out_the_cooldown() {
        use crate::domain::{ChannelId, RunId};
        use crate::workflow::run::{Outcome, State, Trigger};
        let t = |ms| Timestamp::from_millis(ms);
        let mut active = Run::new(
            RunId::parse("r-abcdefgh").unwrap(),
            ReplicationGroupId::parse("prod-jobs").unwrap(),
            ChannelId::parse("C0123ABCD").unwrap(),
            Trigger::Command {
                user: SlackUserId::parse("U0000001").unwrap(),
                response_url: None,
            },
            None,
            Policy::default(),
            t(0),
        );
        let six_hours = Duration::from_secs(6 * 3600);
        assert_eq!(
            on_alarm(AlarmState::Alarm, None, None, six_hours, t(0)),
            AlarmAction::Start
        );
        assert_eq!(
            on_alarm(AlarmState::Alarm, Some(&active), None, six_hours, t(0)),
            AlarmAction::Repeat(active.id.clone())
        );
        assert_eq!(
            on_alarm(AlarmState::Ok, Some(&active), None, six_hours, t(0)),
            AlarmAction::Clear(active.id.clone())
        );
        assert!(matches!(
            on_alarm(AlarmState::Ok, None, None, six_hours, t(0)),
            AlarmAction::Ignore(_)
        ));
        assert!(matches!(
            on_alarm(AlarmState::InsufficientData, None, None, six_hours, t(0)),
            AlarmAction::Ignore(_)
        ));
        active.state = State::Finished {
            plan: None,
            outcome: Outcome::Expired,
        };
        active.updated_at = t(1000);
        let two_hours_later = t(1000 + 2 * 3600 * 1000);
        match on_alarm(
            AlarmState::Alarm,
            None,
            Some(&active),
            six_hours,
            two_hours_later,
        ) {
            AlarmAction::Cooldown {
                since, remaining, ..
            } => {
                assert_eq!(since, Duration::from_secs(2 * 3600));
                assert_eq!(remaining, Duration::from_secs(4 * 3600));
            }
            other => panic!("{other:?}"),
        }
        let seven_hours_later = t(1000 + 7 * 3600 * 1000);
        assert_eq!(
            on_alarm(
                AlarmState::Alarm,
                None,
                Some(&active),
                six_hours,
                seven_hours_later
            ),
            AlarmAction::Start
        );
    }

    #[test]
    fn retries_wait_longer_each_time_and_stop_at_the_last_try() {
        let p = RetryPolicy {
            interval: Duration::from_secs(15),
            attempts: 3,
            backoff: 1.5,
        };
        assert_eq!(p.next_try(1, true, None), Some(Duration::from_secs(15)));
        assert_eq!(
            p.next_try(2, true, None),
            Some(Duration::from_millis(22_500))
        );
        assert_eq!(p.next_try(3, true, None), None, "the last try");
        assert_eq!(p.next_try(1, false, None), None, "not worth another try");
        let asked = Some(Duration::from_secs(7));
        assert_eq!(p.next_try(1, true, asked), asked, "Retry-After wins");
    }

    #[test]
    fn waits_are_spread_by_jitter_between_half_and_all_of_the_backoff() {
        let d = Duration::from_secs(10);
        assert_eq!(with_jitter(d, 0.0), Duration::from_secs(5));
        assert_eq!(with_jitter(d, 0.5), Duration::from_millis(7_500));
        assert!(with_jitter(d, 0.999_999) <= d);
        assert_eq!(with_jitter(d, 7.0), d, "clamped");
        for _ in 0..100 {
            let w = jittered(d);
            assert!(w >= d / 2 && w <= d, "{w:?}");
        }
    }

    /// What an adapter is told before a try ("another try follows") matches what happens
    /// when that try fails.
    #[test]
    fn another_try_follows_until_the_deadline_or_the_count() {
        let p = RetryPolicy {
            interval: Duration::from_secs(10),
            attempts: 3,
            backoff: 2.0,
        };
        let now = Timestamp::from_millis(1_000_000);
        let end = now.plus(Duration::from_secs(60));
        let deadline = RetryUntil::Deadline {
            at: end,
            what: "approval_timeout",
        };
        let failure = Failure::transient("transient (Throttling): slow down", None);
        for (attempt, at) in [(1, now), (9, now), (9, end.plus(Duration::from_millis(1)))] {
            let follows = p.tries_after(attempt, at, deadline);
            let tried = FailedTry::of(&failure, "fetch_plan", attempt, at, 1.0);
            let retried = matches!(p.after_failure(tried, deadline), AfterFailure::Retry { .. });
            assert_eq!(follows, retried, "try {attempt}");
        }
        assert!(
            p.tries_after(9, now, deadline),
            "past the count, before the deadline"
        );
        assert!(
            !p.tries_after(1, end, deadline),
            "at the deadline: the last try"
        );
        assert!(p.tries_after(2, now, RetryUntil::Attempts));
        assert!(!p.tries_after(3, now, RetryUntil::Attempts));
    }

    #[test]
    fn with_a_deadline_transient_failures_are_retried_past_the_count_until_it_passes() {
        let p = RetryPolicy {
            interval: Duration::from_secs(10),
            attempts: 2,
            backoff: 2.0,
        };
        let now = Timestamp::from_millis(1_000_000);
        let failure = Failure::transient("transient (Throttling): slow down", None);
        let at = |attempt, now| FailedTry::of(&failure, "modify_node_type", attempt, now, 1.0);
        let deadline = RetryUntil::Deadline {
            at: now.plus(Duration::from_secs(60)),
            what: "modify_timeout",
        };
        // Try 9 of a policy that allows 2: still retried, the wait capped at the deadline.
        match p.after_failure(at(9, now), deadline) {
            AfterFailure::Retry { due, attempt, line } => {
                assert_eq!(attempt, 10);
                assert_eq!(
                    due,
                    now.plus(Duration::from_secs(60)),
                    "not past the deadline"
                );
                assert!(line.contains("until modify_timeout passes"), "{line}");
            }
            other => panic!("{other:?}"),
        }
        // At the deadline: given up, and saying which deadline.
        let late = now.plus(Duration::from_secs(60));
        assert_eq!(
            p.after_failure(at(10, late), deadline),
            AfterFailure::GiveUp {
                line: Some(
                    "modify_node_type failed 10 time(s) until modify_timeout passed; last error: transient (Throttling): slow down".into()
                ),
                deadline: Some("modify_timeout"),
            }
        );
        // Without a deadline, the count decides.
        assert!(matches!(
            p.after_failure(at(2, now), RetryUntil::Attempts),
            AfterFailure::GiveUp { deadline: None, .. }
        ));
        // A failure no retry can fix is given up at once, deadline or not.
        let fatal = Failure::fatal("InvalidParameterValue");
        let tried = FailedTry::of(&fatal, "modify_node_type", 1, now, 0.0);
        assert_eq!(
            p.after_failure(tried, deadline),
            AfterFailure::GiveUp {
                line: None,
                deadline: None
            }
        );
        // Retry-After is kept, lengthened by at most a tenth.
        let asked = Failure::transient("ratelimited", Some(Duration::from_secs(30)));
        let tried = FailedTry::of(&asked, "post_note", 1, now, 1.0);
        match p.after_failure(tried, RetryUntil::Attempts) {
            AfterFailure::Retry { due, .. } => assert_eq!(due, now.plus(Duration::from_secs(33))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn approval_rules() {
        let u1 = SlackUserId::parse("U0000001").unwrap();
        let u2 = SlackUserId::parse("U0000002").unwrap();
        let p = Policy::default();
        assert_eq!(
            may_approve(&p, &u1, false, None, &[]),
            Err(NotAllowed::NotAnApprover)
        );
        assert_eq!(
            may_approve(&p, &u1, true, Some(&u1), &[]),
            Err(NotAllowed::SelfApproval)
        );
        assert_eq!(may_approve(&p, &u1, true, Some(&u2), &[]), Ok(()));
        assert_eq!(
            may_approve(&p, &u1, true, None, std::slice::from_ref(&u1)),
            Err(NotAllowed::AlreadyApprovedByYou)
        );
        let lenient = Policy {
            allow_self_approval: true,
            ..Policy::default()
        };
        assert_eq!(may_approve(&lenient, &u1, true, Some(&u1), &[]), Ok(()));
    }

    #[test]
    fn data_tiering_groups_stay_data_tiering_and_others_never_become_it() {
        // Even if AWS listed a type of the other kind, the plan offers only its own family.
        let mixed = [
            nt("cache.r6g.2xlarge"),
            nt("cache.r6gd.2xlarge"),
            nt("cache.r6gd.4xlarge"),
        ];
        let tiering = plan(
            &group("cache.r6gd.xlarge", "available"),
            &mixed,
            None,
            &policy(None),
        )
        .unwrap();
        assert_eq!(tiering.target, nt("cache.r6gd.2xlarge"));
        assert!(
            tiering.choices.iter().all(|t| t.family() == "r6gd"),
            "{:?}",
            tiering.choices
        );
        let into = plan(
            &group("cache.r6g.xlarge", "available"),
            &mixed,
            Some(&nt("cache.r6gd.2xlarge")),
            &policy(None),
        );
        assert!(
            matches!(into, Err(NoPlan::NotUpInFamily { .. })),
            "{into:?}"
        );
        let out_of = plan(
            &group("cache.r6gd.xlarge", "available"),
            &mixed,
            Some(&nt("cache.r6g.2xlarge")),
            &policy(None),
        );
        assert!(
            matches!(out_of, Err(NoPlan::NotUpInFamily { .. })),
            "{out_of:?}"
        );
    }
}
