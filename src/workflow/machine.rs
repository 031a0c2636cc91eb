//! The decision logic: `(run, event, now) → transition | rejection | ignore`.
//!
//! Pure: no async, no I/O, no clock. The runner persists the returned run and effects in one
//! transaction, then executes the effects and feeds their results back as events. Every
//! effect must be safe to execute twice (a restart re-executes effects that were pending).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::policy::{ApprovalMode, OnApprovalTimeout};
use crate::domain::{MessageTs, NodeType, SlackUserId, SnapshotName, Timestamp};
use crate::workflow::ports::{AwsError, GroupInfo, GroupStatus, SnapshotStatus};

use super::policy::{self, NotAllowed};
use super::run::{
    DecisionKind, DecisionRecord, Outcome, Plan, Run, State, Step, StepRecord, StepStatus,
    TopMessage, Trigger,
};

/// Something that happened to a run: an effect's result, a person's click, an alarm, a timer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    PlanFetched {
        group: GroupInfo,
        allowed: Vec<NodeType>,
    },
    TopMessagePosted {
        message: TopMessage,
    },
    /// The thread reply with the Cancel button was posted.
    CancelOffered {
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
    Approve {
        actor: Actor,
    },
    Deny {
        actor: Actor,
    },
    Cancel {
        actor: Actor,
    },
    ChooseSize {
        actor: Actor,
        node_type: NodeType,
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
}

impl Event {
    /// A short name for the audit trail and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Event::PlanFetched { .. } => "plan_fetched",
            Event::TopMessagePosted { .. } => "top_message_posted",
            Event::CancelOffered { .. } => "cancel_offered",
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
            Event::Cancel { .. } => "cancel",
            Event::ChooseSize { .. } => "choose_size",
            Event::AlarmRepeated { .. } => "alarm_repeated",
            Event::AlarmCleared { .. } => "alarm_cleared",
        }
    }

    /// The person behind the event, if any.
    pub fn actor(&self) -> Option<&Actor> {
        match self {
            Event::Approve { actor }
            | Event::Deny { actor }
            | Event::Cancel { actor }
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
    CreateSnapshot,
    PollSnapshot,
    Modify,
    PollGroup,
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
}

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
    /// The resume hook failed: workers may still be paused.
    ResumeFailed { error: String },
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
    },
    ApprovedByPolicy,
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
    Resumed,
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
    /// Replace the Cancel button with why it is gone.
    WithdrawCancelOffer {
        ts: MessageTs,
        reason: String,
    },
    Page {
        action: PageAction,
    },
    CallHook {
        phase: HookPhase,
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

impl Effect {
    pub fn name(&self) -> &'static str {
        match self {
            Effect::FetchPlan => "fetch_plan",
            Effect::PostTopMessage => "post_top_message",
            Effect::UpdateTopMessage => "update_top_message",
            Effect::PostNote { .. } => "post_note",
            Effect::Reply { .. } => "reply",
            Effect::OfferCancel => "offer_cancel",
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

    /// Which lane the effect runs in: a run's Slack messages (`slack`) go out strictly in
    /// order; everything else (`work`) runs as soon as it is due.
    pub fn lane(&self) -> &'static str {
        match self {
            Effect::PostTopMessage
            | Effect::UpdateTopMessage
            | Effect::PostNote { .. }
            | Effect::Reply { .. }
            | Effect::OfferCancel
            | Effect::WithdrawCancelOffer { .. } => "slack",
            _ => "work",
        }
    }

    /// Work that a cancelled or finished run no longer needs (messages, pages and the
    /// resume hook are never dropped).
    pub fn is_droppable_work(&self) -> bool {
        matches!(
            self,
            Effect::FetchPlan
                | Effect::CreateSnapshot { .. }
                | Effect::PollSnapshot { .. }
                | Effect::ModifyNodeType { .. }
                | Effect::PollGroup
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

/// An accepted event's result: the next run, what to do, and what to drop.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub run: Run,
    pub effects: Vec<Scheduled>,
    /// Drop pending work effects ([`Effect::is_droppable_work`]) of this run.
    pub drop_pending_work: bool,
    /// One line for the audit trail.
    pub summary: String,
}

/// Why a person's action was refused. Turned into an ephemeral reply; the run is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    NotAnApprover,
    SelfApproval,
    AlreadyApprovedByYou,
    /// The run was already decided (approved, denied or cancelled) or finished.
    AlreadyDecided {
        state: String,
    },
    Expired,
    CannotCancel {
        reason: String,
    },
    NotAllowedSize {
        node_type: NodeType,
        choices: Vec<NodeType>,
    },
    NotWaitingForApproval {
        state: String,
    },
}

impl Rejection {
    /// The sentence shown to the person who clicked.
    pub fn message(&self) -> String {
        match self {
            Rejection::NotAnApprover => {
                "Only approvers can decide on this run (see `slack.approvers` in the bot's config). Ask one of them.".into()
            }
            Rejection::SelfApproval => {
                "You asked for this run, so someone else has to approve it.".into()
            }
            Rejection::AlreadyApprovedByYou => {
                "You already approved this run; it needs another approver too.".into()
            }
            Rejection::AlreadyDecided { state } => {
                format!("This run was already decided (it is {state}); nothing changed.")
            }
            Rejection::Expired => {
                "This run expired without a decision. Start a new one with `/redis upsize <group>`.".into()
            }
            Rejection::CannotCancel { reason } => format!("Can't cancel: {reason}."),
            Rejection::NotAllowedSize { node_type, choices } => format!(
                "{node_type} is not a size this run may move to. Choose one of: {}.",
                choices.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
            ),
            Rejection::NotWaitingForApproval { state } => {
                format!("This run is not waiting for a decision (it is {state}).")
            }
        }
    }
}

/// What the machine says about an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Accept(Box<Transition>),
    /// A person's action that is not allowed; the run does not change.
    Reject(Rejection),
    /// An event that no longer applies (a late poll, a timer for a decided run).
    Ignore(String),
}

/// Decide what `event` does to `run` at `now`.
pub fn decide(run: &Run, event: &Event, now: Timestamp) -> Decision {
    let mut b = Builder::new(run, now);
    match (&run.state, event) {
        // Effects that report facts about messages and pages are accepted in any state.
        (_, Event::TopMessagePosted { message }) => {
            b.summary(format!(
                "top message posted in {} at {}",
                message.channel, message.ts
            ));
            b.run.message = Some(message.clone());
            b.finish()
        }
        (_, Event::CancelOffered { ts }) => {
            if run.is_cancellable() {
                b.summary("cancel button offered in the thread");
                b.run.cancel_offer = Some(ts.clone());
            } else {
                b.summary("cancel button offered too late; withdrawing it");
                b.effect(Effect::WithdrawCancelOffer {
                    ts: ts.clone(),
                    reason: withdraw_reason(run),
                });
            }
            b.finish()
        }
        (_, Event::TopMessageFailed { error }) => {
            b.summary(format!("top message could not be posted: {error}"));
            b.page(PageAction::Trigger(PageReason::SlackUnreachable {
                error: error.clone(),
            }));
            b.finish()
        }
        (_, Event::PageDelivered { action }) => {
            b.summary(format!("PagerDuty accepted {}", page_action_name(action)));
            b.note(match action {
                PageAction::Trigger(reason) => Note::Paged {
                    reason: reason.clone(),
                },
                PageAction::Resolve => Note::PageResolved,
            });
            b.finish()
        }
        (_, Event::PageFailed { action, error }) => {
            b.summary(format!(
                "PagerDuty {} failed: {error}",
                page_action_name(action)
            ));
            if matches!(action, PageAction::Trigger(_)) {
                b.note(Note::PageFailed {
                    error: error.clone(),
                });
            }
            b.finish()
        }

        // People acting on finished or running runs.
        (
            State::Finished { outcome, .. },
            Event::Approve { .. } | Event::Deny { .. } | Event::ChooseSize { .. },
        ) => {
            if matches!(outcome, Outcome::Expired) {
                Decision::Reject(Rejection::Expired)
            } else {
                Decision::Reject(Rejection::AlreadyDecided {
                    state: describe_state(run),
                })
            }
        }
        (State::Finished { .. } | State::Resuming { .. }, Event::Cancel { .. }) => {
            Decision::Reject(Rejection::CannotCancel {
                reason: format!("the run is {}", describe_state(run)),
            })
        }
        (
            State::Planning,
            Event::Approve { .. } | Event::Deny { .. } | Event::ChooseSize { .. },
        ) => Decision::Reject(Rejection::NotWaitingForApproval {
            state: "still planning".into(),
        }),
        (
            State::Pausing { .. }
            | State::Snapshotting { .. }
            | State::Modifying { .. }
            | State::Resuming { .. },
            Event::Approve { .. } | Event::Deny { .. } | Event::ChooseSize { .. },
        ) => Decision::Reject(Rejection::AlreadyDecided {
            state: describe_state(run),
        }),
        (State::Modifying { plan, .. }, Event::Cancel { .. }) => {
            Decision::Reject(Rejection::CannotCancel {
                reason: format!(
                    "the upsize to {} has started and AWS can't stop a modification in progress",
                    plan.target
                ),
            })
        }
        (_, Event::Cancel { actor })
            if !actor.is_approver && run.requested_by() != Some(&actor.user) =>
        {
            Decision::Reject(Rejection::NotAnApprover)
        }
        (State::Planning, Event::Cancel { actor }) => {
            b.decision(actor, DecisionKind::Cancel, None);
            b.summary(format!("cancelled by {} while planning", actor.user));
            b.close_step(Step::Plan, StepStatus::Cancelled);
            b.finish_run(
                None,
                Outcome::Cancelled {
                    by: actor.user.clone(),
                },
                None,
            );
            b.finish()
        }
        (State::AwaitingApproval { plan, .. }, Event::Cancel { actor }) => {
            b.decision(actor, DecisionKind::Cancel, None);
            b.summary(format!("cancelled by {}", actor.user));
            b.close_step(Step::Approval, StepStatus::Cancelled);
            b.note(Note::Cancelled {
                by: actor.user.clone(),
                snapshot_kept: None,
            });
            b.finish_run(
                Some(plan.clone()),
                Outcome::Cancelled {
                    by: actor.user.clone(),
                },
                None,
            );
            if run.page.open {
                b.page(PageAction::Resolve);
            }
            b.finish()
        }
        (State::Pausing { plan } | State::Snapshotting { plan, .. }, Event::Cancel { actor }) => {
            // A CreateSnapshot may be in flight: the snapshot, if AWS started it, is kept.
            let snapshot_kept = match &run.state {
                State::Snapshotting { snapshot, .. } => Some(snapshot.clone()),
                _ => None,
            };
            b.decision(actor, DecisionKind::Cancel, None);
            b.summary(format!(
                "cancelled by {} during {}",
                actor.user,
                run.state.name()
            ));
            let step = if matches!(run.state, State::Pausing { .. }) {
                Step::Pause
            } else {
                Step::Snapshot
            };
            b.close_step(step, StepStatus::Cancelled);
            b.note(Note::Cancelled {
                by: actor.user.clone(),
                snapshot_kept,
            });
            b.end(
                plan.clone(),
                Outcome::Cancelled {
                    by: actor.user.clone(),
                },
            );
            b.finish()
        }

        // Planning.
        (State::Planning, Event::PlanFetched { group, allowed }) => {
            match policy::plan(group, allowed, run.requested_type.as_ref(), &run.policy) {
                Err(reason) => {
                    b.summary(format!("nothing to do: {reason}"));
                    b.close_step(Step::Plan, StepStatus::Done);
                    let note = Note::NothingToDo {
                        reason: reason.clone(),
                    };
                    if matches!(run.trigger, Trigger::Alarm { .. }) {
                        // The channel must know the alarm is not being handled, and on-call too.
                        b.effect(Effect::PostTopMessage);
                        b.finish_run(
                            None,
                            Outcome::NothingToDo {
                                reason: reason.clone(),
                            },
                            None,
                        );
                        b.note(note);
                        b.page(PageAction::Trigger(PageReason::CannotAct { reason }));
                    } else {
                        // A person's request that can't be done is their answer, not the channel's.
                        b.finish_run(None, Outcome::NothingToDo { reason }, None);
                        b.effect(Effect::Reply { note });
                    }
                    b.finish()
                }
                Ok(plan) => {
                    b.summary(format!(
                        "planned {} → {} (cap {})",
                        plan.current,
                        plan.target,
                        plan.cap
                            .as_ref()
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "none".into())
                    ));
                    b.close_step(Step::Plan, StepStatus::Done);
                    b.open_step(Step::Approval);
                    match run.policy.approval {
                        ApprovalMode::Required => {
                            let deadline = now.plus(run.policy.approval_timeout);
                            let expires = now.plus(run.policy.approval_expiry);
                            b.set_state(State::AwaitingApproval {
                                plan,
                                deadline,
                                expires,
                                escalated: false,
                                approvals: Vec::new(),
                            });
                            b.effect(Effect::PostTopMessage);
                            b.effect_at(
                                Effect::Timer {
                                    timer: Timer::ApprovalTimeout,
                                },
                                deadline,
                            );
                            b.effect_at(
                                Effect::Timer {
                                    timer: Timer::ApprovalExpiry,
                                },
                                expires,
                            );
                        }
                        ApprovalMode::Auto => {
                            b.effect(Effect::PostTopMessage);
                            b.close_step(Step::Approval, StepStatus::Done);
                            b.note(Note::ApprovedByPolicy);
                            b.start_work(plan);
                        }
                    }
                    b.finish()
                }
            }
        }
        (
            State::Planning,
            Event::AwsFailed {
                op: AwsOp::Plan,
                error,
            },
        ) => {
            let reason = format!("couldn't read the group from AWS: {error}");
            b.summary(reason);
            b.close_step(Step::Plan, StepStatus::Failed);
            let outcome = Outcome::Failed {
                step: Step::Plan,
                error: error.to_string(),
            };
            let note = Note::Failed {
                step: Step::Plan,
                error: error.to_string(),
            };
            if matches!(run.trigger, Trigger::Alarm { .. }) {
                b.effect(Effect::PostTopMessage);
                b.finish_run(None, outcome, None);
                b.note(note);
                b.page(PageAction::Trigger(PageReason::RunFailed));
            } else {
                b.finish_run(None, outcome, None);
                b.effect(Effect::Reply { note });
            }
            b.finish()
        }

        // Waiting for approval.
        (
            State::AwaitingApproval {
                plan,
                approvals,
                escalated,
                deadline,
                expires,
            },
            Event::Approve { actor },
        ) => {
            if let Err(why) = policy::may_approve(
                &run.policy,
                &actor.user,
                actor.is_approver,
                run.requested_by(),
                approvals,
            ) {
                return Decision::Reject(match why {
                    NotAllowed::NotAnApprover => Rejection::NotAnApprover,
                    NotAllowed::SelfApproval => Rejection::SelfApproval,
                    NotAllowed::AlreadyApprovedByYou => Rejection::AlreadyApprovedByYou,
                });
            }
            let mut approvals = approvals.clone();
            approvals.push(actor.user.clone());
            b.decision(actor, DecisionKind::Approve, None);
            let need = run.policy.min_approvals.max(1);
            if (approvals.len() as u8) < need {
                b.summary(format!(
                    "approval {}/{need} by {}",
                    approvals.len(),
                    actor.user
                ));
                b.note(Note::ApprovalRecorded {
                    by: actor.user.clone(),
                    have: approvals.len() as u8,
                    need,
                });
                b.set_state(State::AwaitingApproval {
                    plan: plan.clone(),
                    deadline: *deadline,
                    expires: *expires,
                    escalated: *escalated,
                    approvals,
                });
                b.effect(Effect::UpdateTopMessage);
            } else {
                b.summary(format!("approved by {}", join_users(&approvals)));
                b.close_step(Step::Approval, StepStatus::Done);
                b.note(Note::Approved { by: approvals });
                if run.page.open {
                    b.page(PageAction::Resolve);
                }
                b.drop_pending_work = true;
                b.start_work(plan.clone());
            }
            b.finish()
        }
        (State::AwaitingApproval { plan, .. }, Event::Deny { actor }) => {
            if !actor.is_approver {
                return Decision::Reject(Rejection::NotAnApprover);
            }
            b.decision(actor, DecisionKind::Deny, None);
            b.summary(format!("denied by {}", actor.user));
            b.close_step(Step::Approval, StepStatus::Cancelled);
            b.note(Note::Denied {
                by: actor.user.clone(),
            });
            b.finish_run(
                Some(plan.clone()),
                Outcome::Denied {
                    by: actor.user.clone(),
                },
                None,
            );
            if run.page.open {
                b.page(PageAction::Resolve);
            }
            b.finish()
        }
        (
            State::AwaitingApproval {
                plan,
                deadline,
                expires,
                escalated,
                ..
            },
            Event::ChooseSize { actor, node_type },
        ) => {
            if !actor.is_approver {
                return Decision::Reject(Rejection::NotAnApprover);
            }
            if !plan.choices.contains(node_type) {
                return Decision::Reject(Rejection::NotAllowedSize {
                    node_type: node_type.clone(),
                    choices: plan.choices.clone(),
                });
            }
            if *node_type == plan.target {
                return Decision::Ignore(format!("{node_type} is already the target"));
            }
            b.decision(actor, DecisionKind::ChooseSize, Some(node_type.clone()));
            b.summary(format!("{} chose {node_type}", actor.user));
            b.note(Note::SizeChosen {
                by: actor.user.clone(),
                node_type: node_type.clone(),
            });
            let mut plan = plan.clone();
            plan.target = node_type.clone();
            // Approvals given for another size don't count for this one.
            b.set_state(State::AwaitingApproval {
                plan,
                deadline: *deadline,
                expires: *expires,
                escalated: *escalated,
                approvals: Vec::new(),
            });
            b.effect(Effect::UpdateTopMessage);
            b.finish()
        }
        (
            State::AwaitingApproval {
                plan,
                deadline,
                expires,
                approvals,
                escalated,
            },
            Event::TimerFired {
                timer: Timer::ApprovalTimeout,
            },
        ) => {
            if now < *deadline {
                return Decision::Ignore("approval timer fired early".into());
            }
            match run.policy.on_approval_timeout {
                OnApprovalTimeout::Escalate => {
                    if *escalated {
                        return Decision::Ignore("already escalated".into());
                    }
                    let after = run.policy.approval_timeout;
                    b.summary(format!(
                        "no approval after {}: escalating",
                        crate::domain::format_duration(after)
                    ));
                    b.note(Note::Escalated { after });
                    b.page(PageAction::Trigger(PageReason::ApprovalTimeout { after }));
                    b.set_state(State::AwaitingApproval {
                        plan: plan.clone(),
                        deadline: *deadline,
                        expires: *expires,
                        escalated: true,
                        approvals: approvals.clone(),
                    });
                    b.effect(Effect::UpdateTopMessage);
                }
                OnApprovalTimeout::Approve => {
                    let after = run.policy.approval_timeout;
                    b.summary(format!(
                        "no decision after {}: approved by policy",
                        crate::domain::format_duration(after)
                    ));
                    b.close_step(Step::Approval, StepStatus::Done);
                    b.note(Note::ApprovedOnTimeout { after });
                    b.drop_pending_work = true;
                    b.start_work(plan.clone());
                }
            }
            b.finish()
        }
        (
            State::AwaitingApproval { plan, expires, .. },
            Event::TimerFired {
                timer: Timer::ApprovalExpiry,
            },
        ) => {
            if now < *expires {
                return Decision::Ignore("expiry timer fired early".into());
            }
            b.summary("expired without a decision");
            b.close_step(Step::Approval, StepStatus::TimedOut);
            b.note(Note::Expired);
            b.finish_run(Some(plan.clone()), Outcome::Expired, None);
            b.finish()
        }

        // Pausing.
        (
            State::Pausing { plan },
            Event::HookDone {
                phase: HookPhase::Pause,
            },
        ) => {
            b.summary("pause hook done");
            b.close_step(Step::Pause, StepStatus::Done);
            b.note(Note::Paused);
            b.start_snapshot(plan.clone());
            b.finish()
        }
        (
            State::Pausing { plan },
            Event::HookFailed {
                phase: HookPhase::Pause,
                error,
            },
        ) => {
            b.summary(format!("pause hook failed: {error}"));
            b.close_step(Step::Pause, StepStatus::Failed);
            b.note(Note::PauseFailed {
                error: error.clone(),
            });
            b.fail(plan.clone(), Step::Pause, error.clone());
            b.finish()
        }

        // Snapshot.
        (
            State::Snapshotting {
                plan,
                snapshot,
                polls,
                ..
            },
            Event::SnapshotStarted { status },
        ) => {
            b.summary(format!("snapshot {snapshot} is {status}"));
            b.set_state(State::Snapshotting {
                plan: plan.clone(),
                snapshot: snapshot.clone(),
                polls: *polls,
                created: true,
            });
            b.on_snapshot_status(plan, snapshot, *polls, Some(status));
            b.finish()
        }
        (
            State::Snapshotting {
                plan,
                snapshot,
                polls,
                created: true,
            },
            Event::SnapshotPolled { status },
        ) => {
            let polls = polls + 1;
            b.summary(format!(
                "snapshot poll {polls}/{}: {}",
                run.policy.snapshot_max_polls,
                status
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "missing".into())
            ));
            b.set_state(State::Snapshotting {
                plan: plan.clone(),
                snapshot: snapshot.clone(),
                polls,
                created: true,
            });
            b.on_snapshot_status(plan, snapshot, polls, status.as_ref());
            b.finish()
        }
        (
            State::Snapshotting {
                plan,
                snapshot,
                polls,
                created,
            },
            Event::AwsFailed {
                op: AwsOp::CreateSnapshot,
                error: AwsError::InvalidState { message, .. },
            },
        ) => {
            // The group is busy (a backup or another change): wait like a poll, then try again.
            let polls = polls + 1;
            b.summary(format!(
                "group busy, CreateSnapshot waits ({polls}/{}): {message}",
                run.policy.snapshot_max_polls
            ));
            if polls >= run.policy.snapshot_max_polls {
                b.timed_out(plan.clone(), Step::Snapshot);
            } else {
                if polls == 1 {
                    b.note(Note::GroupBusy {
                        status: message.clone(),
                    });
                }
                b.set_state(State::Snapshotting {
                    plan: plan.clone(),
                    snapshot: snapshot.clone(),
                    polls,
                    created: *created,
                });
                b.effect_at(
                    Effect::CreateSnapshot {
                        name: snapshot.clone(),
                    },
                    now.plus(run.policy.snapshot_poll_interval),
                );
            }
            b.finish()
        }
        (
            State::Snapshotting { plan, .. },
            Event::AwsFailed {
                op: AwsOp::CreateSnapshot | AwsOp::PollSnapshot,
                error,
            },
        ) => {
            b.summary(format!("snapshot failed: {error}"));
            b.close_step(Step::Snapshot, StepStatus::Failed);
            b.fail(plan.clone(), Step::Snapshot, error.to_string());
            b.finish()
        }

        // Upsize.
        (
            State::Modifying {
                plan,
                snapshot,
                started,
                ..
            },
            Event::ModifyRequested { group },
        ) => {
            let seen_modifying = group.status == GroupStatus::Modifying;
            b.summary(format!("modification requested; group is {}", group.status));
            b.note(Note::ModifyStarted {
                from: plan.current.clone(),
                to: plan.target.clone(),
            });
            b.set_state(State::Modifying {
                plan: plan.clone(),
                snapshot: snapshot.clone(),
                started: *started,
                requested: true,
                seen_modifying,
                // Polls count from here: waits for a busy group before the request don't
                // count towards "the modification never started".
                polls: 0,
            });
            if group.is_available() && group.node_type.as_ref() == Some(&plan.target) {
                b.succeed(plan.clone(), snapshot.clone());
            } else {
                b.effect_at(Effect::PollGroup, now.plus(run.policy.modify_poll_interval));
            }
            b.finish()
        }
        (
            State::Modifying {
                plan,
                snapshot,
                started,
                seen_modifying,
                polls,
                requested: true,
            },
            Event::GroupPolled { group },
        ) => {
            let polls = polls + 1;
            let seen_modifying = *seen_modifying || group.status == GroupStatus::Modifying;
            let on = group
                .node_type
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "?".into());
            b.summary(format!("group poll {polls}: {} on {on}", group.status));
            if group.is_available() && group.node_type.as_ref() == Some(&plan.target) {
                b.succeed(plan.clone(), snapshot.clone());
            } else if group.is_available() && (seen_modifying || polls >= 3) {
                let error = format!(
                    "the modification ended but {} is still on {on} (AWS rolled it back or never started it)",
                    group.id
                );
                b.close_step(Step::Upsize, StepStatus::Failed);
                b.fail(plan.clone(), Step::Upsize, error);
            } else if now.since(*started) >= run.policy.modify_timeout {
                b.timed_out(plan.clone(), Step::Upsize);
            } else {
                b.set_state(State::Modifying {
                    plan: plan.clone(),
                    snapshot: snapshot.clone(),
                    started: *started,
                    requested: true,
                    seen_modifying,
                    polls,
                });
                b.effect_at(Effect::PollGroup, now.plus(run.policy.modify_poll_interval));
            }
            b.finish()
        }
        (
            State::Modifying {
                plan,
                snapshot,
                started,
                polls,
                seen_modifying,
                requested,
            },
            Event::AwsFailed {
                op: AwsOp::Modify,
                error: AwsError::InvalidState { message, .. },
            },
        ) => {
            b.summary(format!(
                "group busy, ModifyReplicationGroup waits: {message}"
            ));
            if now.since(*started) >= run.policy.modify_timeout {
                b.timed_out(plan.clone(), Step::Upsize);
            } else {
                if *polls == 0 {
                    b.note(Note::GroupBusy {
                        status: message.clone(),
                    });
                }
                b.set_state(State::Modifying {
                    plan: plan.clone(),
                    snapshot: snapshot.clone(),
                    started: *started,
                    requested: *requested,
                    seen_modifying: *seen_modifying,
                    polls: polls + 1,
                });
                b.effect_at(
                    Effect::ModifyNodeType {
                        target: plan.target.clone(),
                    },
                    now.plus(run.policy.modify_poll_interval),
                );
            }
            b.finish()
        }
        (
            State::Modifying { plan, .. },
            Event::AwsFailed {
                op: AwsOp::Modify | AwsOp::PollGroup,
                error,
            },
        ) => {
            b.summary(format!("upsize failed: {error}"));
            b.close_step(Step::Upsize, StepStatus::Failed);
            b.fail(plan.clone(), Step::Upsize, error.to_string());
            b.finish()
        }

        // Resuming.
        (
            State::Resuming { plan, outcome },
            Event::HookDone {
                phase: HookPhase::Resume,
            },
        ) => {
            b.summary("resume hook done");
            b.close_step(Step::Resume, StepStatus::Done);
            b.note(Note::Resumed);
            b.finish_run(Some(plan.clone()), outcome.clone(), None);
            b.finish()
        }
        (
            State::Resuming { plan, outcome },
            Event::HookFailed {
                phase: HookPhase::Resume,
                error,
            },
        ) => {
            b.summary(format!("resume hook failed: {error}"));
            b.close_step(Step::Resume, StepStatus::Failed);
            b.note(Note::ResumeFailed {
                error: error.clone(),
            });
            b.finish_run(Some(plan.clone()), outcome.clone(), Some(error.clone()));
            b.page(PageAction::Trigger(PageReason::ResumeFailed {
                error: error.clone(),
            }));
            b.finish()
        }

        // Alarms while a run is active. A delivery seen before (a retry) changes nothing.
        (_, Event::AlarmRepeated { delivery_id, .. } | Event::AlarmCleared { delivery_id, .. })
            if is_known_delivery(run, delivery_id) =>
        {
            Decision::Ignore(format!("alarm delivery {delivery_id} was already handled"))
        }
        (
            state,
            Event::AlarmRepeated {
                delivery_id,
                reason,
                value,
            },
        ) if !matches!(state, State::Finished { .. }) => {
            b.remember_delivery(delivery_id);
            b.run.alarm_repeats += 1;
            let count = b.run.alarm_repeats;
            b.summary(format!("alarm fired again ({count})"));
            b.note(Note::AlarmRepeated {
                reason: reason.clone(),
                value: *value,
                count,
            });
            b.effect(Effect::UpdateTopMessage);
            b.finish()
        }
        (
            state,
            Event::AlarmCleared {
                delivery_id,
                reason,
            },
        ) if !matches!(state, State::Finished { .. }) => {
            b.remember_delivery(delivery_id);
            b.summary("alarm cleared");
            b.note(Note::AlarmCleared {
                reason: reason.clone(),
            });
            b.finish()
        }

        (_, event) => Decision::Ignore(format!(
            "{} does not apply while the run is {}",
            event.name(),
            run.state.name()
        )),
    }
}

fn is_known_delivery(run: &Run, delivery_id: &str) -> bool {
    let first = match &run.trigger {
        Trigger::Alarm { delivery_id: d, .. } => d == delivery_id,
        Trigger::Command { .. } => false,
    };
    !delivery_id.is_empty() && (first || run.alarm_deliveries.iter().any(|d| d == delivery_id))
}

fn withdraw_reason(run: &Run) -> String {
    match &run.state {
        State::Modifying { .. } => {
            "the upsize has started and AWS can't stop a modification in progress".to_string()
        }
        _ => format!("the run is {}", describe_state(run)),
    }
}

fn page_action_name(action: &PageAction) -> &'static str {
    match action {
        PageAction::Trigger(_) => "trigger",
        PageAction::Resolve => "resolve",
    }
}

fn join_users(users: &[SlackUserId]) -> String {
    users
        .iter()
        .map(|u| u.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a run's state reads in a sentence ("succeeded", "waiting for approval", …).
pub fn describe_state(run: &Run) -> String {
    match &run.state {
        State::Planning => "planning".into(),
        State::AwaitingApproval { .. } => "waiting for approval".into(),
        State::Pausing { .. } => "pausing workers".into(),
        State::Snapshotting { .. } => "taking the snapshot".into(),
        State::Modifying { .. } => "upsizing".into(),
        State::Resuming { .. } => "resuming workers".into(),
        State::Finished { outcome, .. } => match outcome {
            Outcome::Succeeded { .. } => "succeeded".into(),
            Outcome::Failed { step, .. } => format!("failed at {}", step.label()),
            Outcome::TimedOut { step, .. } => format!("timed out at {}", step.label()),
            Outcome::Denied { by } => format!("denied by <@{by}>"),
            Outcome::Cancelled { by } => format!("cancelled by <@{by}>"),
            Outcome::Expired => "expired".into(),
            Outcome::NothingToDo { .. } => "closed with nothing to do".into(),
        },
    }
}

/// Accumulates a transition.
struct Builder {
    run: Run,
    now: Timestamp,
    effects: Vec<Scheduled>,
    drop_pending_work: bool,
    summary: String,
}

impl Builder {
    fn new(run: &Run, now: Timestamp) -> Builder {
        let mut run = run.clone();
        run.updated_at = now;
        Builder {
            run,
            now,
            effects: Vec::new(),
            drop_pending_work: false,
            summary: String::new(),
        }
    }

    fn finish(mut self) -> Decision {
        // A message posted in this transition already shows the latest state.
        if self
            .effects
            .iter()
            .any(|e| e.effect == Effect::PostTopMessage)
        {
            self.effects
                .retain(|e| e.effect != Effect::UpdateTopMessage);
        }
        Decision::Accept(Box::new(Transition {
            run: self.run,
            effects: self.effects,
            drop_pending_work: self.drop_pending_work,
            summary: self.summary,
        }))
    }

    fn summary(&mut self, s: impl Into<String>) {
        self.summary = s.into();
    }

    fn set_state(&mut self, state: State) {
        self.run.state = state;
    }

    fn effect(&mut self, effect: Effect) {
        let due = self.now;
        self.effect_at(effect, due);
    }

    fn effect_at(&mut self, effect: Effect, due: Timestamp) {
        self.effects.push(Scheduled { effect, due });
    }

    fn note(&mut self, note: Note) {
        self.effect(Effect::PostNote { note });
    }

    fn page(&mut self, action: PageAction) {
        match &action {
            PageAction::Trigger(_) => {
                self.run.page.open = true;
                self.run.page.triggers += 1;
            }
            PageAction::Resolve => self.run.page.open = false,
        }
        self.effect(Effect::Page { action });
    }

    fn decision(&mut self, actor: &Actor, kind: DecisionKind, node_type: Option<NodeType>) {
        self.run.decisions.push(DecisionRecord {
            user: actor.user.clone(),
            kind,
            at: self.now,
            node_type,
        });
    }

    /// Remember an alarm delivery (the last 100), so a retry of it is recognised.
    fn remember_delivery(&mut self, delivery_id: &str) {
        if delivery_id.is_empty() {
            return;
        }
        self.run.alarm_deliveries.push(delivery_id.to_string());
        let excess = self.run.alarm_deliveries.len().saturating_sub(100);
        self.run.alarm_deliveries.drain(..excess);
    }

    fn open_step(&mut self, step: Step) {
        self.run.steps.push(StepRecord::start(step, self.now));
    }

    /// Close the latest record of `step` if it is still running.
    fn close_step(&mut self, step: Step, status: StepStatus) {
        let now = self.now;
        if let Some(rec) = self
            .run
            .steps
            .iter_mut()
            .rev()
            .find(|s| s.step == step && s.status == StepStatus::Running)
        {
            rec.ended = Some(now);
            rec.status = status;
        }
    }

    /// Approved: pause (if there is a hook) or go straight to the snapshot.
    fn start_work(&mut self, plan: Plan) {
        self.effect(Effect::OfferCancel);
        if self.run.policy.pause_url.is_some() {
            self.open_step(Step::Pause);
            self.set_state(State::Pausing { plan });
            self.note(Note::Pausing);
            self.effect(Effect::CallHook {
                phase: HookPhase::Pause,
            });
            self.effect(Effect::UpdateTopMessage);
        } else {
            self.start_snapshot(plan);
        }
    }

    fn start_snapshot(&mut self, plan: Plan) {
        let name = SnapshotName::for_run(&self.run.id);
        self.open_step(Step::Snapshot);
        self.set_state(State::Snapshotting {
            plan,
            snapshot: name.clone(),
            polls: 0,
            created: false,
        });
        self.note(Note::SnapshotStarted { name: name.clone() });
        self.effect(Effect::CreateSnapshot { name });
        self.effect(Effect::UpdateTopMessage);
    }

    fn on_snapshot_status(
        &mut self,
        plan: &Plan,
        snapshot: &SnapshotName,
        polls: u32,
        status: Option<&SnapshotStatus>,
    ) {
        match status {
            Some(SnapshotStatus::Available) => {
                let took = self
                    .run
                    .step(Step::Snapshot)
                    .map(|s| self.now.since(s.started))
                    .unwrap_or_default();
                self.close_step(Step::Snapshot, StepStatus::Done);
                self.note(Note::SnapshotReady {
                    name: snapshot.clone(),
                    took,
                });
                self.start_modify(plan.clone(), snapshot.clone());
            }
            Some(SnapshotStatus::Failed) => {
                self.close_step(Step::Snapshot, StepStatus::Failed);
                self.fail(
                    plan.clone(),
                    Step::Snapshot,
                    format!("AWS reports snapshot {snapshot} as failed"),
                );
            }
            None => {
                self.close_step(Step::Snapshot, StepStatus::Failed);
                self.fail(
                    plan.clone(),
                    Step::Snapshot,
                    format!("snapshot {snapshot} disappeared while it was being created"),
                );
            }
            Some(_) if polls >= self.run.policy.snapshot_max_polls => {
                self.timed_out(plan.clone(), Step::Snapshot);
            }
            Some(_) => {
                let due = self.now.plus(self.run.policy.snapshot_poll_interval);
                self.effect_at(
                    Effect::PollSnapshot {
                        name: snapshot.clone(),
                    },
                    due,
                );
            }
        }
    }

    fn start_modify(&mut self, plan: Plan, snapshot: SnapshotName) {
        self.withdraw_cancel_offer(
            "the upsize has started and AWS can't stop a modification in progress",
        );
        self.open_step(Step::Upsize);
        let target = plan.target.clone();
        self.set_state(State::Modifying {
            plan,
            snapshot,
            started: self.now,
            requested: false,
            seen_modifying: false,
            polls: 0,
        });
        self.effect(Effect::ModifyNodeType { target });
        self.effect(Effect::UpdateTopMessage);
    }

    fn succeed(&mut self, plan: Plan, snapshot: SnapshotName) {
        self.close_step(Step::Upsize, StepStatus::Done);
        let outcome = Outcome::Succeeded {
            from: plan.current.clone(),
            to: plan.target.clone(),
            snapshot,
        };
        let took = self.now.since(self.run.created_at);
        self.note(Note::Succeeded {
            from: plan.current.clone(),
            to: plan.target.clone(),
            took,
        });
        if self.run.page.open {
            self.page(PageAction::Resolve);
        }
        self.end(plan, outcome);
    }

    fn fail(&mut self, plan: Plan, step: Step, error: String) {
        self.note(Note::Failed {
            step,
            error: error.clone(),
        });
        self.page(PageAction::Trigger(PageReason::RunFailed));
        self.end(plan, Outcome::Failed { step, error });
    }

    fn timed_out(&mut self, plan: Plan, step: Step) {
        let after = self
            .run
            .step(step)
            .map(|s| self.now.since(s.started))
            .unwrap_or_default();
        self.close_step(step, StepStatus::TimedOut);
        self.note(Note::TimedOut { step, after });
        self.page(PageAction::Trigger(PageReason::RunFailed));
        self.end(plan, Outcome::TimedOut { step, after });
    }

    fn withdraw_cancel_offer(&mut self, reason: &str) {
        if let Some(ts) = self.run.cancel_offer.take() {
            self.effect(Effect::WithdrawCancelOffer {
                ts,
                reason: reason.to_string(),
            });
        }
    }

    /// The outcome is known: resume the workers if they were paused, else finish.
    fn end(&mut self, plan: Plan, outcome: Outcome) {
        self.drop_pending_work = true;
        let reason = match &outcome {
            Outcome::Cancelled { by } => format!("cancelled by <@{by}>"),
            other => format!("the run is over ({})", other.name().replace('_', " ")),
        };
        self.withdraw_cancel_offer(&reason);
        if self.run.pause_attempted() {
            self.open_step(Step::Resume);
            self.set_state(State::Resuming { plan, outcome });
            self.effect(Effect::CallHook {
                phase: HookPhase::Resume,
            });
            self.effect(Effect::UpdateTopMessage);
        } else {
            self.finish_run(Some(plan), outcome, None);
        }
    }

    fn finish_run(&mut self, plan: Option<Plan>, outcome: Outcome, resume_error: Option<String>) {
        self.drop_pending_work = true;
        if resume_error.is_some() {
            self.run.resume_error = resume_error;
        }
        self.set_state(State::Finished { plan, outcome });
        self.effect(Effect::UpdateTopMessage);
    }
}
