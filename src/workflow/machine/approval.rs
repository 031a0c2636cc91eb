//! Waiting for approval: Approve (once per person, `min_approvals` people), Deny, the size
//! picker, and the two timers — the approval timeout (page on-call, or approve, per policy) and
//! the expiry that closes a run nobody decided on.

use crate::domain::{NodeType, SlackUserId, format_duration};
use crate::workflow::effect::{Effect, Note, PageAction, PageReason};
use crate::workflow::event::{Actor, Event, Timer};
use crate::workflow::policy::{self, NotAllowed, OnApprovalTimeout};
use crate::workflow::run::{DecisionKind, Direction, Outcome, Plan, Run, State, Step, StepStatus};

use super::builder::Builder;
use super::{Decision, Rejection, does_not_apply};

/// What a waiting run carries, taken apart once.
struct Waiting<'a> {
    plan: &'a Plan,
    deadline: crate::domain::Timestamp,
    expires: crate::domain::Timestamp,
    escalated: bool,
    approvals: &'a [SlackUserId],
}

impl Waiting<'_> {
    /// The same wait with some fields changed.
    fn state(&self, plan: Plan, escalated: bool, approvals: Vec<SlackUserId>) -> State {
        State::AwaitingApproval {
            plan,
            deadline: self.deadline,
            expires: self.expires,
            escalated,
            approvals,
        }
    }
}

pub(super) fn decide(b: Builder, run: &Run, event: &Event) -> Decision {
    let State::AwaitingApproval {
        plan,
        deadline,
        expires,
        escalated,
        approvals,
    } = &run.state
    else {
        unreachable!("decide routes only waiting runs here");
    };
    let w = Waiting {
        plan,
        deadline: *deadline,
        expires: *expires,
        escalated: *escalated,
        approvals,
    };
    // A click is for the plan the person saw: one for a plan since changed decides nothing.
    if let Event::Approve { version, .. }
    | Event::Deny { version, .. }
    | Event::ChooseSize { version, .. } = event
        && let Some(seen) = *version
        && seen != plan.version
    {
        return Decision::Reject(Rejection::PlanChanged {
            seen,
            version: plan.version,
            target: plan.target.clone(),
        });
    }
    match event {
        Event::Approve {
            actor,
            acknowledged,
            ..
        } => approve(b, run, &w, actor, *acknowledged),
        Event::Deny { actor, .. } => deny(b, run, &w, actor),
        Event::Dismiss { actor } => set_aside(b, &w, actor, None),
        Event::Snooze { actor, snooze } => set_aside(b, &w, actor, Some(*snooze)),
        Event::ChooseSize {
            actor, node_type, ..
        } => choose_size(b, &w, actor, node_type),
        Event::TimerFired { timer } => timer_fired(b, run, &w, *timer),
        _ => does_not_apply(run, event),
    }
}

fn approve(
    mut b: Builder,
    run: &Run,
    w: &Waiting<'_>,
    actor: &Actor,
    acknowledged: bool,
) -> Decision {
    if let Err(why) = policy::may_approve(
        &run.policy,
        &actor.user,
        actor.is_approver,
        run.requested_by(),
        w.approvals,
    ) {
        return Decision::Reject(match why {
            NotAllowed::NotAnApprover => Rejection::NotAnApprover,
            NotAllowed::SelfApproval => Rejection::SelfApproval,
            NotAllowed::AlreadyApprovedByYou => Rejection::AlreadyApprovedByYou,
        });
    }
    // Every approval that counts said yes to the pending changes, too.
    if let Some(p) = &w.plan.preflight
        && p.needs_acknowledgement()
        && !acknowledged
    {
        return Decision::Reject(Rejection::NeedsAcknowledgement {
            pending: p.pending.clone(),
        });
    }
    let mut approvals = w.approvals.to_vec();
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
        b.set_state(w.state(w.plan.clone(), w.escalated, approvals));
        b.effect(Effect::UpdateTopMessage);
    } else {
        let names: Vec<&str> = approvals.iter().map(|u| u.as_str()).collect();
        b.summary(format!("approved by {}", names.join(", ")));
        b.close_step(Step::Approval, StepStatus::Done);
        b.note(Note::Approved {
            by: approvals,
            with_pending: w.plan.needs_acknowledgement(),
        });
        // A page for the wait stays open: it is resolved when the upsize it asked for is
        // done (or a person ends the run), not when the work merely starts.
        b.drop_pending_work = true;
        let mut plan = w.plan.clone();
        plan.pending_acknowledged = plan.needs_acknowledgement();
        b.start_work(plan);
    }
    b.finish()
}

fn deny(mut b: Builder, run: &Run, w: &Waiting<'_>, actor: &Actor) -> Decision {
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
        Some(w.plan.clone()),
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

/// Dismiss (`None`) or snooze a scale-down suggestion: approvers only. Nothing is changed on
/// the group; the scale-down check leaves the group alone for `scale_down_after`, or until the
/// snooze is over (the run's outcome is what it reads, so it holds across restarts).
fn set_aside(
    mut b: Builder,
    w: &Waiting<'_>,
    actor: &Actor,
    snooze: Option<std::time::Duration>,
) -> Decision {
    if w.plan.direction != Direction::Down {
        return Decision::Reject(Rejection::NotASuggestion);
    }
    if !actor.is_approver {
        return Decision::Reject(Rejection::NotAnApprover);
    }
    let by = actor.user.clone();
    let (kind, outcome) = match snooze {
        None => (DecisionKind::Dismiss, Outcome::Dismissed { by: by.clone() }),
        Some(d) => (
            DecisionKind::Snooze,
            Outcome::Snoozed {
                by: by.clone(),
                until: b.now().plus(d),
            },
        ),
    };
    b.decision(actor, kind, None);
    b.summary(match &outcome {
        Outcome::Snoozed { until, .. } => {
            format!("snoozed by {by} until {}", until.to_rfc3339())
        }
        _ => format!("dismissed by {by}"),
    });
    b.close_step(Step::Approval, StepStatus::Cancelled);
    b.note(Note::SetAside {
        outcome: outcome.clone(),
    });
    b.finish_run(Some(w.plan.clone()), outcome, None);
    b.finish()
}

/// The size picker: a new target from the plan's choices. Approvals given for another size
/// don't count for this one.
fn choose_size(mut b: Builder, w: &Waiting<'_>, actor: &Actor, node_type: &NodeType) -> Decision {
    if !actor.is_approver {
        return Decision::Reject(Rejection::NotAnApprover);
    }
    if !w.plan.choices.contains(node_type) {
        return Decision::Reject(Rejection::NotAllowedSize {
            node_type: node_type.clone(),
            choices: w.plan.choices.clone(),
        });
    }
    if *node_type == w.plan.target {
        return Decision::Ignore(format!("{node_type} is already the target"));
    }
    b.decision(actor, DecisionKind::ChooseSize, Some(node_type.clone()));
    b.summary(format!("{} chose {node_type}", actor.user));
    b.note(Note::SizeChosen {
        by: actor.user.clone(),
        node_type: node_type.clone(),
    });
    let mut plan = w.plan.clone();
    plan.target = node_type.clone();
    plan.version += 1;
    b.set_state(w.state(plan, w.escalated, Vec::new()));
    b.effect(Effect::UpdateTopMessage);
    b.finish()
}

fn timer_fired(mut b: Builder, run: &Run, w: &Waiting<'_>, timer: Timer) -> Decision {
    let now = b.now();
    match timer {
        // A suggestion waits without a timeout (none is set for one; an old one is ignored).
        Timer::ApprovalTimeout if w.plan.direction == Direction::Down => {
            return Decision::Ignore("a suggestion has no approval timeout".into());
        }
        Timer::ApprovalTimeout => {
            if now < w.deadline {
                return Decision::Ignore("approval timer fired early".into());
            }
            let after = run.policy.approval_timeout;
            // Pending changes need a person: the timeout escalates instead of approving.
            let on_timeout = match run.policy.on_approval_timeout {
                _ if w.plan.needs_acknowledgement() => OnApprovalTimeout::Escalate,
                other => other,
            };
            match on_timeout {
                OnApprovalTimeout::Escalate => {
                    if w.escalated {
                        return Decision::Ignore("already escalated".into());
                    }
                    b.summary(format!(
                        "no approval after {}: escalating",
                        format_duration(after)
                    ));
                    b.note(Note::Escalated { after });
                    b.page(PageAction::Trigger(PageReason::ApprovalTimeout { after }));
                    b.set_state(w.state(w.plan.clone(), true, w.approvals.to_vec()));
                    b.effect(Effect::UpdateTopMessage);
                }
                OnApprovalTimeout::Approve => {
                    b.summary(format!(
                        "no decision after {}: approved by policy",
                        format_duration(after)
                    ));
                    b.close_step(Step::Approval, StepStatus::Done);
                    b.note(Note::ApprovedOnTimeout { after });
                    b.drop_pending_work = true;
                    b.start_work(w.plan.clone());
                }
            }
        }
        Timer::FallbackExpiry => {
            return Decision::Ignore("not waiting after a failed snapshot".into());
        }
        Timer::ApprovalExpiry => {
            if now < w.expires {
                return Decision::Ignore("expiry timer fired early".into());
            }
            b.summary("expired without a decision");
            b.close_step(Step::Approval, StepStatus::TimedOut);
            b.note(Note::Expired);
            b.finish_run(Some(w.plan.clone()), Outcome::Expired, None);
        }
    }
    b.finish()
}
