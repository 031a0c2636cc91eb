//! A run and its state: the data the machine decides on and the store persists.
//!
//! Each [`State`] variant carries exactly what is valid in it (there is no plan while
//! planning, no snapshot name before the snapshot step). Everything here is plain data with
//! serde, so a run survives a restart byte for byte.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cost::PriceSheet;
use super::forecast::Forecast;
use super::policy::{Policy, SnapshotPolicy};
use super::preflight::{Check, Preflight};
use crate::domain::{
    ChannelId, MessageTs, NodeType, ReplicationGroupId, RunId, SlackUserId, SnapshotName, Timestamp,
};
use crate::workflow::ports::ClusterMode;

/// One snapshot-then-upsize attempt for one replication group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub group: ReplicationGroupId,
    /// Where the run's top message and thread live.
    pub channel: ChannelId,
    pub trigger: Trigger,
    /// A node type asked for explicitly (`/redis upsize prod-jobs cache.r6g.2xlarge`).
    pub requested_type: Option<NodeType>,
    /// The group's policy when the run started; config changes don't alter a run half-way.
    pub policy: Policy,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub state: State,
    /// Each step's timing, for the live checklist.
    pub steps: Vec<StepRecord>,
    /// Approvals, denials and size choices, in order.
    pub decisions: Vec<DecisionRecord>,
    /// The top message, once Slack has accepted it.
    pub message: Option<TopMessage>,
    pub page: PageState,
    /// How many more times the alarm fired while this run was active.
    pub alarm_repeats: u32,
    /// Set when the resume hook failed (the outcome itself is kept).
    pub resume_error: Option<String>,
    /// The thread reply that offers a Cancel button, while the run can still be cancelled.
    #[serde(default)]
    pub cancel_offer: Option<MessageTs>,
    /// Alarm deliveries already taken into account (retries of one are ignored).
    #[serde(default)]
    pub alarm_deliveries: Vec<String>,
    /// The latest repeat of the alarm, and the one thread reply that counts them.
    #[serde(default)]
    pub repeats: Repeats,
    /// What memory did after the upsize, once read.
    #[serde(default)]
    pub verification: Option<Verification>,
    /// Why the run was denied, when the person who denied it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial_reason: Option<String>,
}

/// Memory before the upsize and after it (the fullest node each time, in percent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub before: Option<f64>,
    pub after: Option<f64>,
    /// The alarm's threshold, when the run was started by one.
    pub threshold: Option<f64>,
    pub on: NodeType,
    /// Why memory could not be read, if it could not.
    pub error: Option<String>,
}

impl Verification {
    /// Still at or above the alarm's threshold after the upsize?
    pub fn still_high(&self) -> bool {
        matches!((self.after, self.threshold), (Some(a), Some(t)) if a >= t)
    }
}

impl Trigger {
    /// The alarm's threshold, from its state reason ("… was greater than the threshold (85.0)").
    pub fn threshold(&self) -> Option<f64> {
        let reason = match self {
            Trigger::Alarm { reason, .. } => reason,
            // After a scale-down memory must stay below the policy's limit.
            Trigger::ScaleDown { evidence, .. } => return Some(evidence.verify_below),
            _ => return None,
        };
        let after = reason.rsplit_once("the threshold (")?.1;
        let number = after.split(')').next()?;
        number.trim().parse().ok().filter(|t: &f64| t.is_finite())
    }
}

/// The alarm firing again during a run is said on one thread reply, edited as it goes on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Repeats {
    /// The reply's `ts`, once posted.
    pub line: Option<MessageTs>,
    pub last_at: Option<Timestamp>,
    pub last_reason: String,
    pub last_value: Option<f64>,
    /// When the alarm was last seen going back to OK (cleared by a later repeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<Timestamp>,
}

impl Run {
    /// A new run, about to plan.
    pub fn new(
        id: RunId,
        group: ReplicationGroupId,
        channel: ChannelId,
        trigger: Trigger,
        requested_type: Option<NodeType>,
        policy: Policy,
        now: Timestamp,
    ) -> Run {
        Run {
            id,
            group,
            channel,
            trigger,
            requested_type,
            policy,
            created_at: now,
            updated_at: now,
            state: State::Planning,
            steps: vec![StepRecord::start(Step::Plan, now)],
            decisions: Vec::new(),
            message: None,
            page: PageState::default(),
            alarm_repeats: 0,
            resume_error: None,
            cancel_offer: None,
            alarm_deliveries: Vec::new(),
            repeats: Repeats::default(),
            verification: None,
            denial_reason: None,
        }
    }

    pub fn plan(&self) -> Option<&Plan> {
        match &self.state {
            State::Planning => None,
            State::AwaitingApproval { plan, .. }
            | State::Pausing { plan }
            | State::Snapshotting { plan, .. }
            | State::Modifying { plan, .. }
            | State::Resuming { plan, .. }
            | State::Verifying { plan, .. }
            | State::SnapshotFailed { plan, .. } => Some(plan),
            State::Finished { plan, .. } => plan.as_ref(),
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished { .. })
    }

    /// The final outcome, once there is one (also while the resume hook still runs).
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.state {
            State::Resuming { outcome, .. }
            | State::Verifying { outcome, .. }
            | State::Finished { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    /// How the run ended or, while it waits for a decision after its snapshot failed, how
    /// it failed so far.
    pub fn failure_or_outcome(&self) -> Option<&Outcome> {
        match &self.state {
            State::SnapshotFailed { failure, .. } => Some(failure),
            _ => self.outcome(),
        }
    }

    /// Who asked for this run, if a person did.
    pub fn requested_by(&self) -> Option<&SlackUserId> {
        match &self.trigger {
            Trigger::Command { user, .. } => Some(user),
            Trigger::Alarm { .. } | Trigger::Forecast { .. } | Trigger::ScaleDown { .. } => None,
        }
    }

    /// Does this run go without a snapshot: the group's policy says so, or an approver chose
    /// it after the snapshot failed.
    pub fn skips_snapshot(&self) -> bool {
        self.policy.snapshot == SnapshotPolicy::Skip
            || self
                .decisions
                .iter()
                .any(|d| d.kind == DecisionKind::UpsizeWithoutSnapshot)
    }

    pub fn step(&self, step: Step) -> Option<&StepRecord> {
        self.steps.iter().rev().find(|s| s.step == step)
    }

    /// Until when the current step may keep asking AWS, and what sets that time: a throttled
    /// or failing call is retried until then, and only then fails the run.
    pub fn step_deadline(&self) -> Option<(Timestamp, &'static str)> {
        let p = &self.policy;
        match &self.state {
            // Nobody has been asked yet: on-call is paged at the approval timeout anyway.
            State::Planning => Some((self.created_at.plus(p.approval_timeout), "approval_timeout")),
            State::AwaitingApproval { .. } => {
                Some((self.created_at.plus(p.approval_expiry), "approval_expiry"))
            }
            State::Snapshotting { .. } => {
                let started = self
                    .step(Step::Snapshot)
                    .map_or(self.updated_at, |s| s.started);
                let budget = p.snapshot_poll_interval * p.snapshot_max_polls.max(1);
                Some((
                    started.plus(budget),
                    "the snapshot's time (snapshot_max_polls × snapshot_poll_interval)",
                ))
            }
            State::Modifying { started, .. } => {
                Some((started.plus(p.modify_timeout), "modify_timeout"))
            }
            // The reading is due `verify_window` after the step began; it may be retried for
            // as long again (at least five minutes), then the run ends without it.
            State::Verifying { .. } => {
                let started = self
                    .step(Step::Verify)
                    .map_or(self.updated_at, |s| s.started);
                let slack = p.verify_window.max(std::time::Duration::from_secs(300));
                Some((
                    started.plus(p.verify_window + slack),
                    "the verification's time (2 × verify_window)",
                ))
            }
            State::Pausing { .. }
            | State::Resuming { .. }
            | State::SnapshotFailed { .. }
            | State::Finished { .. } => None,
        }
    }

    /// Was the pause hook attempted? Then the resume hook must run, whatever happens.
    pub fn pause_attempted(&self) -> bool {
        self.step(Step::Pause).is_some()
    }

    pub fn finished_at(&self) -> Option<Timestamp> {
        match self.state {
            State::Finished { .. } => Some(self.updated_at),
            _ => None,
        }
    }

    /// The short state name used in the store, `/redis runs` and metrics.
    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    /// What a transition from `before` to `self` finished: the steps that ended (with their
    /// status and duration) and the run's outcome if it ended.
    pub fn progress_since(&self, before: &Run) -> Progress {
        let steps = self
            .steps
            .iter()
            .enumerate()
            .filter(|(i, _)| before.steps.get(*i).is_none_or(|s| s.ended.is_none()))
            .filter_map(|(_, s)| Some((s.step, s.status, s.took()?)))
            .filter(|(_, status, _)| *status != StepStatus::Running)
            .collect();
        let finished = (self.is_finished() && !before.is_finished())
            .then(|| self.outcome().map(Outcome::name))
            .flatten();
        Progress { steps, finished }
    }

    /// Can this run still be cancelled? (Until the upsize starts.)
    pub fn is_cancellable(&self) -> bool {
        matches!(
            self.state,
            State::Planning
                | State::AwaitingApproval { .. }
                | State::Pausing { .. }
                | State::Snapshotting { .. }
                | State::SnapshotFailed { .. }
        )
    }
}

/// What one transition finished, for the metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    pub steps: Vec<(Step, StepStatus, Duration)>,
    /// The outcome's name, when the run ended.
    pub finished: Option<&'static str>,
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// A CloudWatch alarm (through EventBridge or SNS).
    Alarm {
        /// The delivery that started the run (EventBridge event id / SNS message id).
        #[serde(default)]
        delivery_id: String,
        alarm_name: String,
        /// The alarm's state reason, e.g. "Threshold Crossed: … [93.2 …] was greater than …".
        reason: String,
        /// The most recent datapoint, when the alarm carried one.
        value: Option<f64>,
        at: Timestamp,
    },
    /// The memory trend: the group is full within the policy's `forecast_alert`, before any
    /// alarm. An ordinary plan, approved as the policy says.
    Forecast {
        at: Timestamp,
        forecast: crate::workflow::forecast::Forecast,
    },
    /// The scheduled check found memory low enough for one size down, for long enough: a
    /// suggestion, acted on only when an approver says so.
    ScaleDown {
        at: Timestamp,
        evidence: ScaleDownEvidence,
    },
    /// A person, through `/redis upsize` (or the "start anyway" button).
    Command {
        user: SlackUserId,
        /// Slack's `response_url`, to answer the person privately.
        response_url: Option<String>,
    },
}

impl Trigger {
    /// Who started the run, for the audit trail: `alarm`, or the person's user id.
    pub fn actor_name(&self) -> String {
        match self {
            Trigger::Alarm { .. } => "alarm".into(),
            Trigger::Forecast { .. } => "forecast".into(),
            Trigger::ScaleDown { .. } => "scale_down".into(),
            Trigger::Command { user, .. } => user.to_string(),
        }
    }

    /// `alarm` or `command`, for the metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Alarm { .. } => "alarm",
            Trigger::Forecast { .. } => "forecast",
            Trigger::ScaleDown { .. } => "scale_down",
            Trigger::Command { .. } => "command",
        }
    }

    /// Which way the run moves the group.
    pub fn direction(&self) -> Direction {
        match self {
            Trigger::ScaleDown { .. } => Direction::Down,
            _ => Direction::Up,
        }
    }
}

/// Which way a run moves its group: up (an alarm, a forecast, a person) or one step down (a
/// suggestion an approver took).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Up,
    Down,
}

impl Direction {
    /// Is `t` a move the bot may make from `current` this way: the same family (so never into
    /// or out of data tiering), strictly larger (up) or strictly smaller (down)?
    pub fn allows(self, current: &NodeType, t: &NodeType) -> bool {
        t.same_family(current)
            && match self {
                Direction::Up => t.size() > current.size(),
                Direction::Down => t.size() < current.size(),
            }
    }

    /// "upsize" or "scale-down", for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Direction::Up => "upsize",
            Direction::Down => "scale-down",
        }
    }
}

/// What the scale-down check saw: why one size down looks safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleDownEvidence {
    /// The type the group is on, and the one step down the check suggests.
    pub from: NodeType,
    pub to: NodeType,
    /// Over the window, on `from`: the highest reading of any node, and the average of the
    /// nodes' readings (percent).
    pub peak: f64,
    pub average: f64,
    /// The peak as a share of `to`'s memory: what the fullest moment would have read there.
    pub peak_on_smaller: f64,
    /// The policy's `scale_down_below` when the check was made.
    pub below: f64,
    /// After the scale-down, memory must stay below this (the policy's
    /// `scale_down_verify_below`).
    pub verify_below: f64,
    #[serde(with = "crate::domain::duration_ms")]
    pub window: Duration,
    /// Readings the peak was taken from (all nodes).
    pub points: usize,
    /// How long since the group's last change by the bot (`None`: none on record).
    #[serde(with = "super::forecast::opt_duration_ms", default)]
    pub since_change: Option<Duration>,
}

/// Where a run is. See the diagram in [`crate::workflow`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Reading the group and the allowed scale-ups from AWS.
    Planning,
    /// Waiting for a person (or the policy) to approve.
    AwaitingApproval {
        plan: Plan,
        /// When the approval timeout fires (escalate or approve, per policy).
        deadline: Timestamp,
        /// When a run nobody decided on is closed.
        expires: Timestamp,
        escalated: bool,
        /// Approvers so far (for `min_approvals` > 1).
        approvals: Vec<SlackUserId>,
    },
    /// Calling the pause hook.
    Pausing { plan: Plan },
    /// Taking the snapshot.
    Snapshotting {
        plan: Plan,
        snapshot: SnapshotName,
        /// DescribeSnapshots polls (and busy-group waits) so far.
        polls: u32,
        /// AWS accepted CreateSnapshot (or the snapshot already existed).
        created: bool,
    },
    /// The snapshot failed or timed out; the group is untouched and the workers are back. An
    /// approver may choose to upsize without a snapshot, or cancel, until `decide_by`; then
    /// the run ends with `failure`.
    SnapshotFailed {
        plan: Plan,
        snapshot: SnapshotName,
        failure: Outcome,
        decide_by: Timestamp,
    },
    /// Moving the group to the target node type.
    Modifying {
        plan: Plan,
        /// The snapshot taken first (`None`: the run goes without one).
        snapshot: Option<SnapshotName>,
        started: Timestamp,
        /// AWS accepted ModifyReplicationGroup (or was already on it).
        requested: bool,
        /// The group has been seen `modifying`, so `available` on the old type means it failed.
        seen_modifying: bool,
        polls: u32,
    },
    /// The outcome is known; the resume hook runs before the run is finished.
    Resuming { plan: Plan, outcome: Outcome },
    /// The upsize is done and the workers are back: memory is read over `verify_window` to
    /// say whether it worked.
    Verifying { plan: Plan, outcome: Outcome },
    Finished {
        plan: Option<Plan>,
        outcome: Outcome,
    },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Planning => "planning",
            State::AwaitingApproval { .. } => "awaiting_approval",
            State::Pausing { .. } => "pausing",
            State::Snapshotting { .. } => "snapshotting",
            State::SnapshotFailed { .. } => "snapshot_failed",
            State::Modifying { .. } => "modifying",
            State::Resuming { .. } => "resuming",
            State::Verifying { .. } => "verifying",
            State::Finished { outcome, .. } => outcome.name(),
        }
    }
}

/// What the run will do, decided from AWS's answers and the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Raised whenever the plan changes (a size chosen): an approval is for one version, and a
    /// click on a message showing another is refused.
    #[serde(default = "first_version")]
    pub version: u32,
    pub current: NodeType,
    pub target: NodeType,
    /// Scale-ups AWS allows that are within the cap, smallest first (the size picker).
    pub choices: Vec<NodeType>,
    pub cap: Option<NodeType>,
    pub cluster_mode: ClusterMode,
    pub members: usize,
    /// Node groups (shards).
    #[serde(default = "one_shard")]
    pub shards: usize,
    /// What else the change touches, as read when the plan was made (`None`: a plan made by a
    /// version of the bot from before the preflight; it needs no acknowledgement, and nothing
    /// pending counts as covered when the bot looks again before acting).
    #[serde(default)]
    pub preflight: Option<Preflight>,
    /// The approval said yes to the pending changes the preflight showed (or to not knowing
    /// them): only those may still be pending when the bot acts.
    #[serde(default)]
    pub pending_acknowledged: bool,
    /// The memory trend over the policy's `forecast_window` when the plan was made, or why it
    /// is unknown (`None`: not asked for, `forecast_window = "0s"`, or a plan from before the
    /// bot made forecasts).
    #[serde(default)]
    pub forecast: Option<Check<Forecast>>,
    /// Up, or one step down (a scale-down suggestion's plan; plans from before: up).
    #[serde(default)]
    pub direction: Direction,
    /// The on-demand prices of the current type, the target and every choice, as read when
    /// the plan was made (`None`: pricing is off, or a plan from before the bot read prices).
    #[serde(default)]
    pub prices: Option<PriceSheet>,
}

fn first_version() -> u32 {
    1
}

fn one_shard() -> usize {
    1
}

impl Plan {
    /// Must an approval say yes to pending changes (or to not knowing them)?
    pub fn needs_acknowledgement(&self) -> bool {
        self.preflight
            .as_ref()
            .is_some_and(Preflight::needs_acknowledgement)
    }

    /// Replicas in each shard.
    pub fn replicas_per_shard(&self) -> usize {
        (self.members / self.shards.max(1)).saturating_sub(1)
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Succeeded {
        from: NodeType,
        to: NodeType,
        /// The snapshot taken first (`None`: the run went without one).
        #[serde(default)]
        snapshot: Option<SnapshotName>,
    },
    Failed {
        step: Step,
        error: String,
    },
    TimedOut {
        step: Step,
        #[serde(with = "crate::domain::duration_ms")]
        after: Duration,
    },
    Denied {
        by: SlackUserId,
    },
    Cancelled {
        by: SlackUserId,
    },
    /// Nobody decided before `approval_expiry`.
    Expired,
    /// An approver dismissed a scale-down suggestion: none again for `scale_down_after`.
    Dismissed {
        by: SlackUserId,
    },
    /// An approver snoozed a scale-down suggestion: none again before `until`.
    Snoozed {
        by: SlackUserId,
        until: Timestamp,
    },
    /// The group changed since the plan was approved: the run stopped before `step`, having
    /// done nothing to it.
    GroupChanged {
        step: Step,
        drift: crate::workflow::policy::Drift,
    },
    /// Planning found nothing to do (at the cap, no larger size, group busy, …).
    NothingToDo {
        reason: String,
    },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::TimedOut { .. } => "timed_out",
            Outcome::Denied { .. } => "denied",
            Outcome::Cancelled { .. } => "cancelled",
            Outcome::Expired => "expired",
            Outcome::Dismissed { .. } => "dismissed",
            Outcome::Snoozed { .. } => "snoozed",
            Outcome::GroupChanged { .. } => "group_changed",
            Outcome::NothingToDo { .. } => "nothing_to_do",
        }
    }

    /// Does this outcome need a person (a page)?
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed { .. } | Outcome::TimedOut { .. })
    }
}

/// The steps of the checklist, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Plan,
    Approval,
    Pause,
    Snapshot,
    Upsize,
    Resume,
    Verify,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::Plan => "plan",
            Step::Approval => "approval",
            Step::Pause => "pause workers",
            Step::Snapshot => "snapshot",
            Step::Upsize => "upsize",
            Step::Resume => "resume workers",
            Step::Verify => "verify memory",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Done,
    Failed,
    TimedOut,
    Cancelled,
}

impl StepStatus {
    pub fn name(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Done => "done",
            StepStatus::Failed => "failed",
            StepStatus::TimedOut => "timed_out",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: Step,
    pub started: Timestamp,
    pub ended: Option<Timestamp>,
    pub status: StepStatus,
}

impl StepRecord {
    pub fn start(step: Step, now: Timestamp) -> StepRecord {
        StepRecord {
            step,
            started: now,
            ended: None,
            status: StepStatus::Running,
        }
    }

    pub fn took(&self) -> Option<Duration> {
        self.ended.map(|e| e.since(self.started))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Approve,
    Deny,
    Cancel,
    ChooseSize,
    /// After the snapshot failed: go on without one.
    UpsizeWithoutSnapshot,
    /// A scale-down suggestion set aside, for `scale_down_after` or for a chosen time.
    Dismiss,
    Snooze,
}

/// A person's accepted decision, for the top message and the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub user: SlackUserId,
    pub kind: DecisionKind,
    pub at: Timestamp,
    /// For a size choice, the size chosen.
    pub node_type: Option<NodeType>,
}

/// The run's top message in Slack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopMessage {
    pub channel: ChannelId,
    pub ts: MessageTs,
    /// A link to the message (and so its thread), for PagerDuty.
    pub permalink: Option<String>,
    /// Posted by a retry that may have raced an earlier try whose answer was lost: look for a
    /// duplicate this long after (in milliseconds), once the earlier one would have landed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_duplicates_after_ms: Option<u64>,
}

/// Whether this run has an open PagerDuty incident (its dedup key is the run id).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageState {
    pub open: bool,
    /// How many triggers were sent (repeats fold into the same incident).
    pub triggers: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(reason: &str) -> Trigger {
        Trigger::Alarm {
            delivery_id: "e-1".into(),
            alarm_name: "Redis memory".into(),
            reason: reason.into(),
            value: None,
            at: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn the_threshold_is_read_from_the_alarms_reason() {
        let reason = "Threshold Crossed: 1 out of the last 1 datapoints [93.2 (02/10/19 16:59:00)] was greater than or equal to the threshold (85.0).";
        assert_eq!(alarm(reason).threshold(), Some(85.0));
        assert_eq!(alarm("manual").threshold(), None);
        assert_eq!(alarm("the threshold (NaN)").threshold(), None);
        assert_eq!(alarm("the threshold (abc)").threshold(), None);
        let command = Trigger::Command {
            user: SlackUserId::parse("U0ONCALL1").unwrap(),
            response_url: None,
        };
        assert_eq!(command.threshold(), None);
    }

    #[test]
    fn still_high_needs_a_reading_and_a_threshold() {
        let v = |after, threshold| Verification {
            before: Some(93.0),
            after,
            threshold,
            on: NodeType::parse("cache.r6g.xlarge").unwrap(),
            error: None,
        };
        assert!(v(Some(91.0), Some(90.0)).still_high());
        assert!(v(Some(90.0), Some(90.0)).still_high(), "at the threshold");
        assert!(!v(Some(51.0), Some(90.0)).still_high());
        assert!(!v(None, Some(90.0)).still_high(), "no reading");
        assert!(
            !v(Some(99.0), None).still_high(),
            "no threshold (a command run)"
        );
    }
}
