//! The decision logic: `(run, event, now) → transition | rejection | ignore`.
//!
//! Pure: no async, no I/O, no clock. The runner persists the returned run and effects in one
//! transaction, then executes the effects and feeds their results back as events. Every
//! effect must be safe to execute twice (a restart re-executes effects that were pending).
//!
//! [`decide`] only routes: facts about messages and pages ([`reports`]) and alarms
//! ([`alarms`]) apply in any state, a person's actions go to [`people`], and everything else
//! to the phase the run is in — [`planning`], [`approval`], [`snapshot`] (with the pause
//! hook), [`modify`], [`finish`] (the resume hook). [`builder`] holds the steps phases share
//! (start the snapshot, fail, end). No sentence for a person is written here: rejections and
//! notes are data, and the Slack renderer words them.

mod alarms;
mod approval;
mod builder;
mod finish;
mod modify;
mod people;
mod planning;
mod reports;
mod snapshot;
mod verify;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::domain::{ChannelId, NodeType, ReplicationGroupId, RunId, SlackUserId, Timestamp};

use super::effect::Effect;
use super::event::Event;
use super::policy::Policy;
use super::ports::{AuditEntry, Change, Decided};
use super::preflight::{Check, PendingChange};
use super::run::{Run, State, Trigger};
use builder::Builder;

pub use super::effect::Scheduled;
pub use alarms::withdrawable;
pub use people::DENIAL_REASON_MAX;

/// An accepted event's result: the next run, what to do, and what to drop.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub run: Run,
    pub effects: Vec<Scheduled>,
    /// Drop pending work effects ([`super::effect::Effect::is_droppable_work`]) of this run.
    pub drop_pending_work: bool,
    /// One line for the audit trail.
    pub summary: String,
}

/// Why a person's action was refused. Turned into a private answer; the run is unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rejection", rename_all = "snake_case")]
pub enum Rejection {
    NotAnApprover,
    SelfApproval,
    AlreadyApprovedByYou,
    /// The run was already decided (approved, denied or cancelled) or finished; where it is.
    AlreadyDecided {
        state: Box<State>,
    },
    Expired,
    CannotCancel {
        why: CannotCancel,
    },
    NotAllowedSize {
        node_type: NodeType,
        choices: Vec<NodeType>,
    },
    /// The run is still planning: there is nothing to decide on yet.
    NotWaitingForApproval {
        state: Box<State>,
    },
    /// The click was for plan version `seen`; the plan has changed since (now `version`,
    /// moving to `target`).
    PlanChanged {
        seen: u32,
        version: u32,
        target: NodeType,
    },
    /// "Upsize without a snapshot" is only for a run whose snapshot failed; where it is.
    NoFailedSnapshot {
        state: Box<State>,
    },
    /// A reason is for a denied run, from the person who denied it.
    NotYourDenial {
        denied_by: Option<SlackUserId>,
    },
    /// A plain Approve for a plan with pending changes (or unknown ones): approving must say
    /// so ("Approve with pending changes").
    NeedsAcknowledgement {
        pending: Check<Vec<PendingChange>>,
    },
    /// Dismiss and Snooze are for a scale-down suggestion only.
    NotASuggestion,
}

/// For the audit trail (the person's own answer is worded by the Slack renderer).
impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::NotAnApprover => f.write_str("not an approver"),
            Rejection::SelfApproval => f.write_str("asked for the run, so may not approve it"),
            Rejection::AlreadyApprovedByYou => f.write_str("already approved by this person"),
            Rejection::NotASuggestion => {
                f.write_str("dismiss and snooze are for a scale-down suggestion only")
            }
            Rejection::AlreadyDecided { state } => {
                write!(f, "already decided (the run is {})", words(state))
            }
            Rejection::Expired => f.write_str("the run expired"),
            Rejection::CannotCancel {
                why: CannotCancel::UpsizeStarted { target },
            } => {
                write!(f, "can't cancel: the upsize to {target} has started")
            }
            Rejection::CannotCancel {
                why: CannotCancel::Over { state },
            } => {
                write!(f, "can't cancel: the run is {}", words(state))
            }
            Rejection::NotAllowedSize { node_type, .. } => {
                write!(f, "{node_type} is not among the run's choices")
            }
            Rejection::NotWaitingForApproval { state } => {
                write!(f, "not waiting for approval (the run is {})", words(state))
            }
            Rejection::NotYourDenial { denied_by: Some(by) } => {
                write!(f, "only {by}, who denied the run, can say why")
            }
            Rejection::NotYourDenial { denied_by: None } => f.write_str("the run was not denied"),
            Rejection::NoFailedSnapshot { state } => {
                write!(f, "no failed snapshot to go without (the run is {})", words(state))
            }
            Rejection::NeedsAcknowledgement { .. } => f.write_str(
                "a plain approval, but the plan has pending changes that must be approved explicitly",
            ),
            Rejection::PlanChanged { seen, version, .. } => {
                write!(
                    f,
                    "for plan version {seen}, but the plan is at version {version}"
                )
            }
        }
    }
}

/// A state's name as words ("awaiting approval").
fn words(state: &State) -> String {
    state.name().replace('_', " ")
}

/// Why a run can't be cancelled any more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum CannotCancel {
    /// The upsize to `target` has started; AWS can't stop a modification in progress.
    UpsizeStarted { target: NodeType },
    /// The run is resuming its workers or is over.
    Over { state: Box<State> },
}

/// What starting a run did.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    Created(RunId),
    /// The group already has an active run: nothing was created.
    AlreadyActive(RunId),
}

/// What submitting an event to a run came to, for whoever submitted it.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Accepted(Box<Run>),
    Rejected(Rejection),
    Ignored(String),
}

/// What the machine says about an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Accept(Box<Transition>),
    /// A person's action that is not allowed; the run does not change.
    Reject(Rejection),
    /// An event that no longer applies (a late poll, a timer for a decided run); why, for the
    /// audit trail.
    Ignore(String),
}

/// A request to start a run.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub group: ReplicationGroupId,
    pub channel: ChannelId,
    pub trigger: Trigger,
    pub requested_type: Option<NodeType>,
    pub policy: Policy,
}

/// A new run `id` for `req`, and what creating it writes: it starts by reading the group from
/// AWS.
pub fn open(id: RunId, req: StartRequest, now: Timestamp) -> (Run, Change) {
    let run = Run::new(
        id,
        req.group,
        req.channel,
        req.trigger,
        req.requested_type,
        req.policy,
        now,
    );
    let how = match &run.trigger {
        Trigger::Alarm { alarm_name, .. } => format!("alarm `{alarm_name}`"),
        Trigger::Forecast { forecast, .. } => format!(
            "the memory trend ({} {:+.2} %/min, latest {:.1} %)",
            forecast.node, forecast.slope_per_min, forecast.latest
        ),
        Trigger::ScaleDown { evidence: e, .. } => format!(
            "the scale-down check ({} → {}: peak {:.1} % over {}, {:.1} % on the smaller type)",
            e.from,
            e.to,
            e.peak,
            crate::domain::format_duration(e.window),
            e.peak_on_smaller
        ),
        Trigger::Command { user, .. } => user.to_string(),
    };
    let requested = run
        .requested_type
        .as_ref()
        .map(|t| format!(" asking for {t}"))
        .unwrap_or_default();
    let summary = format!("run for {} started by {how}{requested}", run.group);
    let change = Change {
        effects: vec![Scheduled {
            effect: Effect::FetchPlan,
            due: now,
        }],
        drop_pending_work: false,
        delivery: None,
        audit: vec![AuditEntry::new(
            now,
            run.trigger.actor_name(),
            "created",
            summary,
        )],
    };
    (run, change)
}

/// Decide what `event` does to `run` at `now`.
pub fn decide(run: &Run, event: &Event, now: Timestamp) -> Decision {
    let b = Builder::new(run, now);
    match event {
        Event::TopMessagePosted { .. }
        | Event::CancelOffered { .. }
        | Event::RepeatLinePosted { .. }
        | Event::TopMessageFailed { .. }
        | Event::PageDelivered { .. }
        | Event::PageFailed { .. } => reports::decide(b, run, event),
        Event::AlarmRepeated { .. } | Event::AlarmCleared { .. } => alarms::decide(b, run, event),
        Event::WithdrawSuggestion { reason } => alarms::withdraw(b, run, reason),
        Event::Approve { .. }
        | Event::Deny { .. }
        | Event::Dismiss { .. }
        | Event::Snooze { .. }
        | Event::ChooseSize { .. }
        | Event::Cancel { .. }
        | Event::UpsizeWithoutSnapshot { .. }
        | Event::DenialExplained { .. } => people::decide(b, run, event),
        _ => match &run.state {
            State::Planning => planning::decide(b, run, event),
            State::AwaitingApproval { .. } => approval::decide(b, run, event),
            State::Pausing { .. } | State::Snapshotting { .. } | State::SnapshotFailed { .. } => {
                snapshot::decide(b, run, event)
            }
            State::Modifying { .. } => modify::decide(b, run, event),
            State::Resuming { .. } => finish::decide(b, run, event),
            State::Verifying { .. } => verify::decide(b, run, event),
            State::Finished { .. } => does_not_apply(run, event),
        },
    }
}

/// Decide `event` on the stored `run` and say what to write: the next run and its effects
/// when accepted, and the audit trail either way (after the lines the event's effect wrote).
pub fn commit(run: &Run, event: &Event, now: Timestamp, mut audit: Vec<AuditEntry>) -> Decided {
    let (actor, name) = (event.actor_name(), event.name());
    let mut line =
        |kind: &str, detail: String| audit.push(AuditEntry::new(now, &actor, kind, detail));
    let (next, effects, drop_pending_work, submitted, summary) = match decide(run, event, now) {
        Decision::Accept(t) => {
            line(name, t.summary.clone());
            let accepted = Submitted::Accepted(Box::new(t.run.clone()));
            (
                Some(t.run),
                t.effects,
                t.drop_pending_work,
                accepted,
                t.summary,
            )
        }
        Decision::Reject(r) => {
            line("rejected", format!("{name} refused: {r}"));
            (
                None,
                Vec::new(),
                false,
                Submitted::Rejected(r),
                String::new(),
            )
        }
        Decision::Ignore(why) => {
            line("ignored", format!("{name}: {why}"));
            (
                None,
                Vec::new(),
                false,
                Submitted::Ignored(why),
                String::new(),
            )
        }
    };
    let progress = next
        .as_ref()
        .map(|n| n.progress_since(run))
        .unwrap_or_default();
    Decided {
        next,
        change: Change {
            effects,
            drop_pending_work,
            audit,
            delivery: None,
        },
        submitted,
        summary,
        progress,
    }
}

/// The answer for an event that means nothing in the run's state (a late poll or timer).
fn does_not_apply(run: &Run, event: &Event) -> Decision {
    Decision::Ignore(format!(
        "{} does not apply while the run is {}",
        event.name(),
        run.state.name()
    ))
}
