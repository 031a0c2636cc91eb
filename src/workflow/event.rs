//! Events: what happened to a run — an effect's result, a person's click, an alarm, a timer.
//! The machine decides what each one does.

use serde::{Deserialize, Serialize};

use crate::domain::{MessageTs, NodeType, SlackUserId};

use super::cost::PriceSheet;
use super::effect::PageAction;
use super::forecast::Forecast;
use super::ports::elasticache::AwsEvent;
use super::ports::{AwsError, GroupInfo, LookAgain, PlanFacts, SnapshotStatus};
use super::preflight::{Check, PendingChange, Preflight};
use super::run::{Step, TopMessage};

fn not_read() -> Check<Vec<PendingChange>> {
    Check::Unknown("not checked".to_string())
}

/// Something that happened to a run: an effect's result, a person's click, an alarm, a timer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    PlanFetched {
        group: GroupInfo,
        allowed: Vec<NodeType>,
        #[serde(default)]
        preflight: Preflight,
        /// The memory trend at planning (`None`: not asked for, or an event from before).
        #[serde(default)]
        forecast: Option<Check<Forecast>>,
        /// The on-demand prices at planning (`None`: pricing is off, or an event from before).
        /// Boxed: every other event is far smaller.
        #[serde(default)]
        prices: Option<Box<PriceSheet>>,
    },
    /// The group as AWS describes it just before the bot acts on it.
    Rechecked {
        before: Step,
        group: GroupInfo,
        allowed: Vec<NodeType>,
        #[serde(default = "not_read")]
        pending: Check<Vec<PendingChange>>,
    },
    TopMessagePosted {
        message: TopMessage,
    },
    /// The thread reply with the Cancel button was posted.
    CancelOffered {
        ts: MessageTs,
    },
    /// The thread reply that counts the alarm's repeats was posted.
    RepeatLinePosted {
        ts: MessageTs,
    },
    SnapshotStarted {
        status: SnapshotStatus,
    },
    SnapshotPolled {
        /// `None`: the snapshot no longer exists.
        status: Option<SnapshotStatus>,
    },
    ModifyRequested {
        group: GroupInfo,
    },
    GroupPolled {
        group: GroupInfo,
        /// AWS's events about the group since the upsize began, read when the group is back
        /// without the new type (so a failure says AWS's reason, not a guess).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<AwsEvent>,
    },
    HookDone {
        phase: HookPhase,
    },
    HookFailed {
        phase: HookPhase,
        error: String,
    },
    /// An AWS call failed for good (not transient, or out of retries).
    AwsFailed {
        op: AwsOp,
        error: AwsError,
    },
    /// The top message could not be posted.
    TopMessageFailed {
        error: String,
    },
    PageDelivered {
        action: PageAction,
    },
    PageFailed {
        action: PageAction,
        error: String,
    },
    TimerFired {
        timer: Timer,
    },
    /// `version`: the plan version the person saw (`None`: not known, taken as the current).
    /// `acknowledged`: the person approved the pending changes the card showed too.
    Approve {
        actor: Actor,
        #[serde(default)]
        version: Option<u32>,
        #[serde(default)]
        acknowledged: bool,
    },
    Deny {
        actor: Actor,
        #[serde(default)]
        version: Option<u32>,
    },
    Cancel {
        actor: Actor,
    },
    /// After a failed or timed-out snapshot, an approver chose to upsize without one.
    UpsizeWithoutSnapshot {
        actor: Actor,
    },
    /// An approver dismissed a scale-down suggestion (none again for `scale_down_after`).
    Dismiss {
        actor: Actor,
    },
    /// An approver snoozed a scale-down suggestion for `snooze`.
    Snooze {
        actor: Actor,
        #[serde(with = "crate::domain::duration_ms")]
        snooze: std::time::Duration,
    },
    /// Something needs the group to go *up* (its memory alarm, a person's upsize, the memory
    /// trend) while a scale-down suggestion holds it: the suggestion gives way, unless its
    /// modification has started.
    WithdrawSuggestion {
        reason: String,
    },
    /// The person who denied a run says why (after the denial; optional).
    DenialExplained {
        actor: Actor,
        reason: String,
    },
    ChooseSize {
        actor: Actor,
        node_type: NodeType,
        #[serde(default)]
        version: Option<u32>,
    },
    AlarmRepeated {
        delivery_id: String,
        reason: String,
        value: Option<f64>,
    },
    AlarmCleared {
        delivery_id: String,
        reason: String,
    },
    /// CloudWatch's memory readings around the upsize (the fullest node before and after).
    MemoryRead {
        before: Option<f64>,
        after: Option<f64>,
    },
}

impl Event {
    /// What the machine hears of an AWS call that kept failing until its step's `deadline`
    /// passed: the failure says so (the run fails at the deadline, not at the first error).
    pub fn retried_until(self, deadline: Option<&'static str>) -> Event {
        match (self, deadline) {
            (
                Event::AwsFailed {
                    op,
                    error: AwsError::Transient { code, message },
                },
                Some(what),
            ) => {
                let message = format!("{message}; retried until {what} passed");
                Event::AwsFailed {
                    op,
                    error: AwsError::Transient { code, message },
                }
            }
            (event, _) => event,
        }
    }

    pub fn plan_fetched(f: PlanFacts) -> Event {
        Event::PlanFetched {
            group: f.group,
            allowed: f.allowed,
            preflight: f.preflight,
            forecast: f.forecast,
            prices: f.prices.map(Box::new),
        }
    }

    pub fn rechecked(before: Step, l: LookAgain) -> Event {
        Event::Rechecked {
            before,
            group: l.group,
            allowed: l.allowed,
            pending: l.pending,
        }
    }

    /// A short name for the audit trail and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Event::PlanFetched { .. } => "plan_fetched",
            Event::Rechecked { .. } => "rechecked",
            Event::TopMessagePosted { .. } => "top_message_posted",
            Event::CancelOffered { .. } => "cancel_offered",
            Event::RepeatLinePosted { .. } => "repeat_line_posted",
            Event::SnapshotStarted { .. } => "snapshot_started",
            Event::SnapshotPolled { .. } => "snapshot_polled",
            Event::ModifyRequested { .. } => "modify_requested",
            Event::GroupPolled { .. } => "group_polled",
            Event::HookDone { .. } => "hook_done",
            Event::HookFailed { .. } => "hook_failed",
            Event::AwsFailed { .. } => "aws_failed",
            Event::TopMessageFailed { .. } => "top_message_failed",
            Event::PageDelivered { .. } => "page_delivered",
            Event::PageFailed { .. } => "page_failed",
            Event::TimerFired { .. } => "timer_fired",
            Event::Approve { .. } => "approve",
            Event::Deny { .. } => "deny",
            Event::Dismiss { .. } => "dismiss",
            Event::Snooze { .. } => "snooze",
            Event::WithdrawSuggestion { .. } => "withdraw_suggestion",
            Event::Cancel { .. } => "cancel",
            Event::UpsizeWithoutSnapshot { .. } => "upsize_without_snapshot",
            Event::DenialExplained { .. } => "denial_explained",
            Event::ChooseSize { .. } => "choose_size",
            Event::AlarmRepeated { .. } => "alarm_repeated",
            Event::AlarmCleared { .. } => "alarm_cleared",
            Event::MemoryRead { .. } => "memory_read",
        }
    }

    /// Who or what it came from, for the audit trail.
    pub fn actor_name(&self) -> String {
        match self {
            Event::Approve { actor, .. }
            | Event::Deny { actor, .. }
            | Event::Dismiss { actor }
            | Event::Snooze { actor, .. }
            | Event::Cancel { actor }
            | Event::UpsizeWithoutSnapshot { actor }
            | Event::DenialExplained { actor, .. }
            | Event::ChooseSize { actor, .. } => actor.user.to_string(),
            Event::AlarmRepeated { .. } | Event::AlarmCleared { .. } => "alarm".into(),
            Event::WithdrawSuggestion { .. } => "bot".into(),
            Event::TimerFired { .. } => "timer".into(),
            Event::HookDone { .. } | Event::HookFailed { .. } => "hook".into(),
            Event::PageDelivered { .. } | Event::PageFailed { .. } => "pagerduty".into(),
            Event::TopMessagePosted { .. }
            | Event::TopMessageFailed { .. }
            | Event::CancelOffered { .. }
            | Event::RepeatLinePosted { .. } => "slack".into(),
            Event::MemoryRead { .. } => "cloudwatch".into(),
            _ => "aws".into(),
        }
    }

    /// The person behind the event, if any.
    pub fn actor(&self) -> Option<&Actor> {
        match self {
            Event::Approve { actor, .. }
            | Event::Deny { actor, .. }
            | Event::Dismiss { actor }
            | Event::Snooze { actor, .. }
            | Event::Cancel { actor }
            | Event::UpsizeWithoutSnapshot { actor }
            | Event::DenialExplained { actor, .. }
            | Event::ChooseSize { actor, .. } => Some(actor),
            _ => None,
        }
    }
}

/// A person acting on a run, with what the edge found out about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user: SlackUserId,
    /// Listed in `slack.approvers`, directly or through a user group.
    pub is_approver: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsOp {
    Plan,
    Recheck,
    CreateSnapshot,
    PollSnapshot,
    Modify,
    PollGroup,
    Verify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPhase {
    Pause,
    Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timer {
    ApprovalTimeout,
    ApprovalExpiry,
    /// Nobody chose between upsizing without a snapshot and cancelling in time.
    FallbackExpiry,
}
