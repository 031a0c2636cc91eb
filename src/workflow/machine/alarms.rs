//! The alarm firing again, or clearing, while a run is active. A delivery seen before (a
//! retry of one) changes nothing; a finished run ignores alarms (a new one starts a new run).

use crate::workflow::effect::{CancelGone, Effect, Note};
use crate::workflow::event::Event;
use crate::workflow::run::{Outcome, Run, State, Step, StepStatus, Trigger};

use super::builder::Builder;
use super::{Decision, does_not_apply};

pub(super) fn decide(mut b: Builder, run: &Run, event: &Event) -> Decision {
    let (Event::AlarmRepeated { delivery_id, .. } | Event::AlarmCleared { delivery_id, .. }) =
        event
    else {
        unreachable!("decide routes only alarms here");
    };
    if is_known_delivery(run, delivery_id) {
        return Decision::Ignore(format!("alarm delivery {delivery_id} was already handled"));
    }
    if run.is_finished() {
        return does_not_apply(run, event);
    }
    b.remember_delivery(delivery_id);
    match event {
        Event::AlarmRepeated { reason, value, .. } => {
            b.run.alarm_repeats += 1;
            let count = b.run.alarm_repeats;
            b.summary(format!("alarm fired again ({count})"));
            let now = b.now();
            let repeats = &mut b.run.repeats;
            (repeats.last_at, repeats.last_value) = (Some(now), *value);
            repeats.last_reason = reason.clone();
            repeats.cleared_at = None;
            // One reply counts them all (a storm must not bury the run's own steps).
            b.effect(Effect::RepeatLine);
            b.effect(Effect::UpdateTopMessage);
        }
        Event::AlarmCleared { reason, .. } => {
            b.summary("alarm cleared");
            b.run.repeats.cleared_at = Some(b.now());
            b.note(Note::AlarmCleared {
                reason: reason.clone(),
            });
        }
        _ => unreachable!("matched above"),
    }
    b.finish()
}

/// A scale-down suggestion gives way to something that needs the group to go up: before its
/// modification starts it ends (nothing was changed; a snapshot AWS started is kept, paused
/// workers are resumed on the way out), and the caller starts its own run once it is over.
/// Once the modification has started it can't be stopped: the caller waits for it to end.
pub(super) fn withdraw(mut b: Builder, run: &Run, reason: &str) -> Decision {
    if !matches!(run.trigger, Trigger::ScaleDown { .. }) {
        return Decision::Ignore("only a scale-down suggestion is withdrawn".into());
    }
    let why = format!("withdrawn: {reason}");
    let outcome = Outcome::NothingToDo {
        reason: why.clone(),
    };
    let note = Note::NothingToDo {
        reason: format!("{reason}: the scale-down is withdrawn; nothing was changed"),
    };
    match &run.state {
        State::Planning => {
            b.summary(why);
            b.close_step(Step::Plan, StepStatus::Cancelled);
            b.finish_run(None, outcome, None);
        }
        State::AwaitingApproval { plan, .. } => {
            b.summary(why);
            b.close_step(Step::Approval, StepStatus::Cancelled);
            b.note(note);
            b.finish_run(Some(plan.clone()), outcome, None);
        }
        State::Pausing { plan } | State::Snapshotting { plan, .. } => {
            let step = match &run.state {
                State::Snapshotting { .. } => Step::Snapshot,
                _ => Step::Pause,
            };
            b.summary(why);
            b.close_step(step, StepStatus::Cancelled);
            b.note(note);
            b.end(plan.clone(), outcome);
        }
        State::SnapshotFailed { plan, .. } => {
            b.summary(why);
            b.note(note);
            if run.resume_error.is_some() {
                b.end(plan.clone(), outcome);
            } else {
                b.withdraw_cancel_offer(CancelGone::Ended("withdrawn".into()));
                b.finish_run(Some(plan.clone()), outcome, None);
            }
        }
        _ => {
            return Decision::Ignore(format!(
                "the scale-down can't be withdrawn now (it is {})",
                run.state.name()
            ));
        }
    }
    b.finish()
}

/// Can this run be withdrawn for a run that moves its group up (a suggestion whose
/// modification has not started)?
pub fn withdrawable(run: &Run) -> bool {
    // The same states a person may cancel in: until the modification starts.
    matches!(run.trigger, Trigger::ScaleDown { .. }) && run.is_cancellable()
}

fn is_known_delivery(run: &Run, delivery_id: &str) -> bool {
    let first = match &run.trigger {
        Trigger::Alarm { delivery_id: d, .. } => d == delivery_id,
        Trigger::Command { .. } | Trigger::Forecast { .. } | Trigger::ScaleDown { .. } => false,
    };
    !delivery_id.is_empty() && (first || run.alarm_deliveries.iter().any(|d| d == delivery_id))
}
