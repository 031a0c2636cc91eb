//! Planning: what AWS said about the group becomes a plan (and the approval wait, or straight
//! to work under `approval = "auto"`), or the reason there is nothing to do.
//!
//! A run an alarm started always shows in the channel, and an alarm the bot can't act on pages;
//! a person's request that can't be done is answered to them privately instead.

use crate::workflow::cost::PriceSheet;
use crate::workflow::effect::{Effect, Note, PageAction, PageReason};
use crate::workflow::event::{AwsOp, Event, Timer};
use crate::workflow::forecast::Forecast;
use crate::workflow::policy::{self, ApprovalMode, OnApprovalTimeout};
use crate::workflow::ports::{AwsError, GroupInfo};
use crate::workflow::preflight::{Check, Preflight};
use crate::workflow::run::{Direction, Outcome, Plan, Run, State, Step, StepStatus, Trigger};

use crate::domain::NodeType;

use super::builder::Builder;
use super::{Decision, does_not_apply};

pub(super) fn decide(b: Builder, run: &Run, event: &Event) -> Decision {
    match event {
        Event::PlanFetched {
            group,
            allowed,
            preflight,
            forecast,
            prices,
        } => {
            let shown = Shown {
                forecast: forecast.as_ref(),
                prices: prices.as_deref(),
            };
            planned(b, run, group, allowed, preflight, shown)
        }
        Event::AwsFailed {
            op: AwsOp::Plan,
            error,
        } => unreadable(b, run, error),
        _ => does_not_apply(run, event),
    }
}

/// What is read at planning only to be shown with the plan: it never decides anything.
struct Shown<'a> {
    forecast: Option<&'a Check<Forecast>>,
    prices: Option<&'a PriceSheet>,
}

fn planned(
    mut b: Builder,
    run: &Run,
    group: &GroupInfo,
    allowed: &[NodeType],
    preflight: &Preflight,
    shown: Shown<'_>,
) -> Decision {
    let requested = run.requested_type.as_ref();
    let planned = match &run.trigger {
        // A suggestion's plan is the one step down its check found, or none.
        Trigger::ScaleDown { evidence, .. } => policy::plan_down(
            group,
            allowed,
            &evidence.from,
            &evidence.to,
            &run.policy,
            preflight,
        ),
        _ => policy::plan(group, allowed, requested, &run.policy, preflight),
    };
    let plan = match planned {
        // The trend and the prices are shown with the plan; they never decide anything.
        Ok(plan) => Plan {
            forecast: shown.forecast.cloned(),
            prices: shown.prices.cloned(),
            ..plan
        },
        Err(why) => {
            let reason = why.to_string();
            b.summary(format!("nothing to do: {reason}"));
            b.close_step(Step::Plan, StepStatus::Done);
            let note = Note::NothingToDo {
                reason: reason.clone(),
            };
            let outcome = Outcome::NothingToDo {
                reason: reason.clone(),
            };
            let page = PageAction::Trigger(PageReason::CannotAct { reason });
            closed(&mut b, run, outcome, note, page);
            return b.finish();
        }
    };
    let limit = match plan.direction {
        Direction::Up => format!(
            "cap {}",
            plan.cap
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into())
        ),
        Direction::Down => format!(
            "scale-down, floor {}",
            run.policy
                .min_node_type
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into())
        ),
    };
    b.summary(format!(
        "planned {} → {} ({limit})",
        plan.current, plan.target
    ));
    b.close_step(Step::Plan, StepStatus::Done);
    b.open_step(Step::Approval);
    b.effect(Effect::PostTopMessage);
    // Changes the upsize would apply too (or not knowing) need a person's explicit yes, even
    // where the policy would approve by itself.
    let must_ask = plan.needs_acknowledgement();
    if must_ask
        && (run.policy.approval == ApprovalMode::Auto
            || run.policy.on_approval_timeout == OnApprovalTimeout::Approve)
    {
        b.note(Note::NeedsAcknowledgement);
    }
    // A scale-down is never approved by policy: giving memory back waits for an approver.
    let down = plan.direction == Direction::Down;
    if down || must_ask || run.policy.approval == ApprovalMode::Required {
        b.await_approval(plan);
    } else {
        b.close_step(Step::Approval, StepStatus::Done);
        b.note(Note::ApprovedByPolicy);
        b.start_work(plan);
    }
    b.finish()
}

impl Builder {
    /// Wait for approval of `plan`, with the timeout and expiry timers set.
    fn await_approval(&mut self, plan: Plan) {
        let now = self.now();
        let policy = &self.run.policy;
        let deadline = now.plus(policy.approval_timeout);
        let expires = now.plus(policy.approval_expiry);
        // Nothing is wrong while a suggestion waits: nobody is paged, nothing is approved by
        // the timeout; it expires like any plan.
        let timeout = plan.direction == Direction::Up;
        self.set_state(State::AwaitingApproval {
            plan,
            deadline,
            expires,
            escalated: false,
            approvals: Vec::new(),
        });
        if timeout {
            self.effect_at(
                Effect::Timer {
                    timer: Timer::ApprovalTimeout,
                },
                deadline,
            );
        }
        self.effect_at(
            Effect::Timer {
                timer: Timer::ApprovalExpiry,
            },
            expires,
        );
    }
}

/// AWS couldn't tell us about the group: the run fails at planning.
fn unreadable(mut b: Builder, run: &Run, error: &AwsError) -> Decision {
    b.summary(format!("couldn't read the group from AWS: {error}"));
    b.close_step(Step::Plan, StepStatus::Failed);
    let outcome = Outcome::Failed {
        step: Step::Plan,
        error: error.to_string(),
    };
    let note = Note::Failed {
        step: Step::Plan,
        error: error.to_string(),
    };
    closed(
        &mut b,
        run,
        outcome,
        note,
        PageAction::Trigger(PageReason::RunFailed),
    );
    b.finish()
}

/// Close a run that never got a plan: in the channel (and paged) for an alarm, privately to
/// the person for a command.
fn closed(b: &mut Builder, run: &Run, outcome: Outcome, note: Note, page: PageAction) {
    if matches!(run.trigger, Trigger::Alarm { .. }) {
        // The channel must know the alarm is not being handled, and on-call too.
        b.effect(Effect::PostTopMessage);
        b.finish_run(None, outcome, None);
        b.note(note);
        b.page(page);
    } else if matches!(run.trigger, Trigger::ScaleDown { .. }) {
        // A suggestion that can't be made is dropped quietly: the next check looks again.
        b.finish_run(None, outcome, None);
    } else if matches!(run.trigger, Trigger::Forecast { .. }) {
        // Nobody asked, and nothing is wrong yet: the channel hears the group is filling and
        // why the bot can't propose more; the alarm, when it fires, pages as usual.
        b.effect(Effect::PostTopMessage);
        b.finish_run(None, outcome, None);
        b.note(note);
    } else {
        // A person's request that can't be done is their answer, not the channel's.
        b.finish_run(None, outcome, None);
        b.effect(Effect::Reply { note });
    }
}
