//! Effects: what the runner must do for a run, each idempotent, and the words-free data the
//! renderers turn into messages ([`Note`], [`PageReason`], [`CancelGone`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{MessageTs, NodeType, SlackUserId, SnapshotName, Timestamp};

use super::event::{Event, HookPhase, Timer};
use super::policy::{Drift, RetryPolicy, RetryUntil};
use super::run::{Outcome, Run, Step, Verification};

/// Pages matter more than any other delivery: retried for at least this long.
pub const PAGES_RETRIED_FOR: Duration = Duration::from_secs(3600);

/// Why a page is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PageReason {
    /// Nobody approved within `approval_timeout`.
    ApprovalTimeout {
        #[serde(with = "crate::domain::duration_ms")]
        after: Duration,
    },
    /// A step failed or timed out.
    RunFailed,
    /// The snapshot failed or timed out; the group is untouched. An approver may upsize
    /// without a snapshot from the thread, or cancel, until `decide_by`.
    SnapshotFailed {
        timed_out: bool,
        decide_by: Timestamp,
    },
    /// The resume hook failed: workers may still be paused.
    ResumeFailed { error: String },
    /// The upsize worked, but memory is still at or above the alarm's threshold.
    StillHigh { after: f64, threshold: f64 },
    /// An alarm fired but the bot can't act on it.
    CannotAct { reason: String },
    /// The top message could not be posted, so nobody can see or approve the run.
    SlackUnreachable { error: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PageAction {
    Trigger(PageReason),
    Resolve,
}

impl PageAction {
    pub fn name(&self) -> &'static str {
        match self {
            PageAction::Trigger(_) => "trigger",
            PageAction::Resolve => "resolve",
        }
    }
}

/// A thread reply: one thing that happened, said once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    ApprovalRecorded {
        by: SlackUserId,
        have: u8,
        need: u8,
    },
    Approved {
        by: Vec<SlackUserId>,
        /// The approval covered the pending changes the preflight showed, too.
        #[serde(default)]
        with_pending: bool,
    },
    ApprovedByPolicy,
    /// The policy would approve by itself, but the plan's pending changes (or not knowing them)
    /// need a person's explicit approval.
    NeedsAcknowledgement,
    ApprovedOnTimeout {
        #[serde(with = "crate::domain::duration_ms")]
        after: Duration,
    },
    Escalated {
        #[serde(with = "crate::domain::duration_ms")]
        after: Duration,
    },
    SizeChosen {
        by: SlackUserId,
        node_type: NodeType,
    },
    Denied {
        by: SlackUserId,
    },
    /// A scale-down suggestion dismissed or snoozed (the outcome says which, by whom, until).
    SetAside {
        outcome: crate::workflow::run::Outcome,
    },
    /// Why the run was denied, as the person who denied it wrote it.
    DenialExplained {
        by: SlackUserId,
        reason: String,
    },
    Cancelled {
        by: SlackUserId,
        snapshot_kept: Option<SnapshotName>,
    },
    Expired,
    Pausing,
    Paused,
    PauseFailed {
        error: String,
    },
    SnapshotStarted {
        name: SnapshotName,
    },
    GroupBusy {
        status: String,
    },
    SnapshotReady {
        name: SnapshotName,
        #[serde(with = "crate::domain::duration_ms")]
        took: Duration,
    },
    ModifyStarted {
        from: NodeType,
        to: NodeType,
    },
    /// The group changed since the plan was approved: stopped before `before`.
    GroupChanged {
        before: Step,
        drift: Drift,
        /// The snapshot the run had taken, kept.
        snapshot_kept: Option<SnapshotName>,
    },
    Resumed,
    /// An approver chose to upsize without a snapshot.
    WithoutSnapshot {
        by: SlackUserId,
    },
    /// The group's policy is `snapshot = "skip"`: no snapshot is taken.
    SnapshotSkipped,
    /// Nobody chose between upsizing without a snapshot and cancelling in time.
    FallbackExpired {
        #[serde(with = "crate::domain::duration_ms")]
        after: Duration,
    },
    /// What memory did after the upsize (or why it could not be read).
    MemoryVerified {
        verification: Verification,
    },
    ResumeFailed {
        error: String,
    },
    Succeeded {
        from: NodeType,
        to: NodeType,
        #[serde(with = "crate::domain::duration_ms")]
        took: Duration,
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
    NothingToDo {
        reason: String,
    },
    AlarmRepeated {
        reason: String,
        value: Option<f64>,
        count: u32,
        /// When it fired last.
        #[serde(default)]
        at: Option<Timestamp>,
    },
    AlarmCleared {
        reason: String,
    },
    Paged {
        reason: PageReason,
    },
    PageResolved,
    PageFailed {
        error: String,
    },
}

/// Something the runner must do. Each is idempotent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// DescribeReplicationGroups + ListAllowedNodeTypeModifications.
    FetchPlan,
    /// Post the top message (once; a re-run finds it already posted).
    PostTopMessage,
    /// Re-render the top message from the run as it is when this executes.
    UpdateTopMessage,
    PostNote {
        note: Note,
    },
    /// Answer the person who asked for the run, privately (their `response_url`).
    Reply {
        note: Note,
    },
    /// Post a thread reply with a Cancel button (skipped if the run can't be cancelled anymore).
    OfferCancel,
    /// Say in the thread that the alarm fired again: one reply for the whole run, posted the
    /// first time and edited after ("×N, last at …").
    RepeatLine,
    /// Read memory around the upsize from CloudWatch, to say whether it worked.
    VerifyMemory,
    /// Upload the memory graph to the thread (or say in a short note why there is none).
    PostGraph {
        moment: GraphMoment,
    },
    /// Delete any second top message a retried post raced (found by the run's metadata), and
    /// bring the one the run keeps up to date.
    CheckDuplicateTop,
    /// Replace the Cancel button with why it is gone.
    WithdrawCancelOffer {
        ts: MessageTs,
        reason: CancelGone,
    },
    Page {
        action: PageAction,
    },
    CallHook {
        phase: HookPhase,
    },
    /// Describe the group (and its allowed scale-ups) just before acting on it.
    Recheck {
        before: Step,
    },
    /// Describe, then CreateSnapshot only if the snapshot doesn't exist.
    CreateSnapshot {
        name: SnapshotName,
    },
    PollSnapshot {
        name: SnapshotName,
    },
    /// Describe, then ModifyReplicationGroup only if not already on or moving to the target.
    ModifyNodeType {
        target: NodeType,
    },
    PollGroup,
    Timer {
        timer: Timer,
    },
}

/// When a run's memory graph goes in its thread: once its top message is posted, and once it
/// has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphMoment {
    Posted,
    Ended,
}

impl GraphMoment {
    pub fn as_str(self) -> &'static str {
        match self {
            GraphMoment::Posted => "posted",
            GraphMoment::Ended => "ended",
        }
    }
}

impl Effect {
    pub fn name(&self) -> &'static str {
        match self {
            Effect::FetchPlan => "fetch_plan",
            Effect::Recheck { .. } => "recheck",
            Effect::PostTopMessage => "post_top_message",
            Effect::UpdateTopMessage => "update_top_message",
            Effect::PostNote { .. } => "post_note",
            Effect::Reply { .. } => "reply",
            Effect::OfferCancel => "offer_cancel",
            Effect::RepeatLine => "repeat_line",
            Effect::CheckDuplicateTop => "check_duplicate_top",
            Effect::PostGraph { .. } => "post_graph",
            Effect::VerifyMemory => "verify_memory",
            Effect::WithdrawCancelOffer { .. } => "withdraw_cancel_offer",
            Effect::Page { .. } => "page",
            Effect::CallHook { .. } => "call_hook",
            Effect::CreateSnapshot { .. } => "create_snapshot",
            Effect::PollSnapshot { .. } => "poll_snapshot",
            Effect::ModifyNodeType { .. } => "modify_node_type",
            Effect::PollGroup => "poll_group",
            Effect::Timer { .. } => "timer",
        }
    }

    /// Which lane the effect runs in.
    pub fn lane(&self) -> Lane {
        match self {
            Effect::PostTopMessage
            | Effect::UpdateTopMessage
            | Effect::PostNote { .. }
            | Effect::Reply { .. }
            | Effect::OfferCancel
            | Effect::RepeatLine
            | Effect::WithdrawCancelOffer { .. } => Lane::Chat,
            // A graph waits on CloudWatch and an upload; in the chat lane a throttled read
            // would hold every later message of the run back.
            Effect::PostGraph { .. } => Lane::Aside,
            // The look for a duplicate top message waits seconds before it is due; in the chat
            // lane every message after it would wait too. Its order among them doesn't matter.
            _ => Lane::Work,
        }
    }

    /// How a failed try of this effect is retried: AWS calls on the group's `aws_retry`, pages
    /// on the delivery schedule but for longer (they matter more than any other delivery), the
    /// rest on the delivery schedule.
    pub fn retry_policy(&self, aws: RetryPolicy, delivery: RetryPolicy) -> RetryPolicy {
        match self {
            Effect::FetchPlan
            | Effect::Recheck { .. }
            | Effect::CreateSnapshot { .. }
            | Effect::PollSnapshot { .. }
            | Effect::ModifyNodeType { .. }
            | Effect::VerifyMemory
            | Effect::PollGroup => aws,
            Effect::Page { .. } => delivery.for_pages(),
            _ => delivery,
        }
    }

    /// Until when a failed try is retried: AWS calls until their step's deadline; Slack and
    /// PagerDuty deliveries for `deliveries_for` from when they were decided (pages for at least
    /// an hour); hooks (each try bounded by `hook_timeout`) and timers by count.
    pub fn retry_until(
        &self,
        run: &Run,
        created: Timestamp,
        deliveries_for: Duration,
    ) -> RetryUntil {
        let for_a_while = |d: Duration| RetryUntil::Deadline {
            at: created.plus(d),
            what: "the delivery's time (delivery.retry_for)",
        };
        match self {
            Effect::FetchPlan
            | Effect::Recheck { .. }
            | Effect::CreateSnapshot { .. }
            | Effect::PollSnapshot { .. }
            | Effect::ModifyNodeType { .. }
            | Effect::VerifyMemory
            | Effect::PollGroup => match run.step_deadline() {
                Some((at, what)) => RetryUntil::Deadline { at, what },
                None => RetryUntil::Attempts,
            },
            Effect::Page { .. } => for_a_while(deliveries_for.max(PAGES_RETRIED_FOR)),
            Effect::CallHook { .. } | Effect::Timer { .. } => RetryUntil::Attempts,
            _ => for_a_while(deliveries_for),
        }
    }

    /// What the machine hears when this delivery fails for good (a message that never
    /// arrives tells only the audit trail; AWS's failures are [`Event::AwsFailed`]).
    pub fn failed_for_good(&self, error: &str) -> Option<Event> {
        let error = error.to_string();
        match self {
            Effect::PostTopMessage => Some(Event::TopMessageFailed { error }),
            Effect::Page { action } => Some(Event::PageFailed {
                action: action.clone(),
                error,
            }),
            Effect::CallHook { phase } => Some(Event::HookFailed {
                phase: *phase,
                error,
            }),
            _ => None,
        }
    }

    /// Is its first execution recorded, so that a try after a crash mid-flight knows an
    /// earlier one may have done the work? (A top message posted twice can't be taken back; a
    /// modification in progress is the bot's own only if the bot may have asked for it.)
    pub fn records_start(&self) -> bool {
        matches!(
            self,
            Effect::PostTopMessage | Effect::ModifyNodeType { .. } | Effect::PostGraph { .. }
        )
    }

    /// Does a later pending effect of the same kind make this one pointless? (A later update
    /// of the top message shows the run as it is then anyway.)
    pub fn superseded_by_later(&self) -> bool {
        matches!(self, Effect::UpdateTopMessage | Effect::RepeatLine)
    }

    /// Work that a cancelled or finished run no longer needs (messages, pages and the
    /// resume hook are never dropped).
    pub fn is_droppable_work(&self) -> bool {
        matches!(
            self,
            Effect::FetchPlan
                | Effect::Recheck { .. }
                | Effect::CreateSnapshot { .. }
                | Effect::PollSnapshot { .. }
                | Effect::ModifyNodeType { .. }
                | Effect::PollGroup
                | Effect::VerifyMemory
                | Effect::Timer { .. }
                | Effect::CallHook {
                    phase: HookPhase::Pause
                }
        )
    }
}

/// An effect and when it is due.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    pub effect: Effect,
    pub due: Timestamp,
}

/// Where an effect waits its turn. A run's chat messages go out strictly in the order they
/// were decided, even when one of them waits out a rate limit; work (AWS, pages, hooks,
/// timers) runs as soon as it is due; what is aside (the memory graph) neither waits for the
/// others nor holds them up, however long its retries take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Chat,
    Work,
    Aside,
}

impl Lane {
    /// The name the store keeps (`slack` for chat, as written since the first version).
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Chat => "slack",
            Lane::Work => "work",
            Lane::Aside => "aside",
        }
    }
}

/// Why the Cancel button in the thread is gone.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelGone {
    /// The upsize started, and AWS can't stop a modification in progress.
    UpsizeStarted,
    CancelledBy(SlackUserId),
    /// The run is over; how it ended ([`super::run::Outcome::name`]).
    Ended(String),
    /// The run is resuming the workers after its outcome is known.
    Resuming,
    /// The run finished (this way) before the button could be offered.
    Finished(Outcome),
    /// The snapshot failed: the choices that replace it are in a reply further down.
    SnapshotFailed,
    /// An approver chose to upsize without a snapshot.
    WithoutSnapshot(SlackUserId),
    /// Worded by an earlier version of the bot (an effect pending across an upgrade).
    Said(String),
}

/// Stored as a tagged object; an effect written by an earlier version holds a plain string.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum CancelGoneRepr {
    UpsizeStarted,
    CancelledBy { by: SlackUserId },
    Ended { outcome: String },
    Resuming,
    Finished { outcome: Outcome },
    SnapshotFailed,
    WithoutSnapshot { by: SlackUserId },
}

impl Serialize for CancelGone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let repr = match self {
            CancelGone::UpsizeStarted => CancelGoneRepr::UpsizeStarted,
            CancelGone::CancelledBy(by) => CancelGoneRepr::CancelledBy { by: by.clone() },
            CancelGone::Ended(outcome) => CancelGoneRepr::Ended {
                outcome: outcome.clone(),
            },
            CancelGone::Resuming => CancelGoneRepr::Resuming,
            CancelGone::Finished(outcome) => CancelGoneRepr::Finished {
                outcome: outcome.clone(),
            },
            CancelGone::SnapshotFailed => CancelGoneRepr::SnapshotFailed,
            CancelGone::WithoutSnapshot(by) => CancelGoneRepr::WithoutSnapshot { by: by.clone() },
            CancelGone::Said(text) => return s.serialize_str(text),
        };
        repr.serialize(s)
    }
}

impl<'de> Deserialize<'de> for CancelGone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        if let serde_json::Value::String(text) = value {
            return Ok(CancelGone::Said(text));
        }
        let repr: CancelGoneRepr =
            serde_json::from_value(value).map_err(serde::de::Error::custom)?;
        Ok(match repr {
            CancelGoneRepr::UpsizeStarted => CancelGone::UpsizeStarted,
            CancelGoneRepr::CancelledBy { by } => CancelGone::CancelledBy(by),
            CancelGoneRepr::Ended { outcome } => CancelGone::Ended(outcome),
            CancelGoneRepr::Resuming => CancelGone::Resuming,
            CancelGoneRepr::Finished { outcome } => CancelGone::Finished(outcome),
            CancelGoneRepr::SnapshotFailed => CancelGone::SnapshotFailed,
            CancelGoneRepr::WithoutSnapshot { by } => CancelGone::WithoutSnapshot(by),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_withdrawn_cancel_offer_reads_back_and_so_does_one_an_earlier_version_wrote() {
        let user = SlackUserId::parse("U0ONCALL1").unwrap();
        let ts = MessageTs::parse("1764121930.000200").unwrap();
        for reason in [
            CancelGone::UpsizeStarted,
            CancelGone::CancelledBy(user.clone()),
            CancelGone::Ended("timed_out".into()),
            CancelGone::Resuming,
            CancelGone::Finished(Outcome::Denied { by: user }),
            CancelGone::Said("the run is over (failed)".into()),
        ] {
            let effect = Effect::WithdrawCancelOffer {
                ts: ts.clone(),
                reason,
            };
            let json = serde_json::to_string(&effect).unwrap();
            assert_eq!(
                serde_json::from_str::<Effect>(&json).unwrap(),
                effect,
                "{json}"
            );
        }
        let old = r#"{"effect":"withdraw_cancel_offer","ts":"1764121930.000200","reason":"cancelled by <@U0ONCALL1>"}"#;
        assert_eq!(
            serde_json::from_str::<Effect>(old).unwrap(),
            Effect::WithdrawCancelOffer {
                ts,
                reason: CancelGone::Said("cancelled by <@U0ONCALL1>".into())
            }
        );
    }
}
