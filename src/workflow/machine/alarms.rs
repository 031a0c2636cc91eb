//! The alarm firing again, or clearing, while a run is active. A delivery seen before (a
//! retry of one) changes nothing; a finished run ignores alarms (a new one starts a new run).

use crate::workflow::effect::{Effect, Note};
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
    // The memory alarm firing while a scale-down suggestion waits: the suggestion is wrong
    // now. It is withdrawn (nothing was changed), and the alarm starts its own run.
    if let (
        Event::AlarmRepeated { .. },
        Trigger::ScaleDown { .. },
        State::AwaitingApproval { plan, .. },
    ) = (event, &run.trigger, &run.state)
    {
        let reason = "the memory alarm fired: the scale-down suggestion is withdrawn".to_string();
        b.summary(reason.clone());
        b.close_step(Step::Approval, StepStatus::Cancelled);
        b.note(Note::NothingToDo {
            reason: reason.clone(),
        });
        b.finish_run(Some(plan.clone()), Outcome::NothingToDo { reason }, None);
        return b.finish();
    }
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

fn is_known_delivery(run: &Run, delivery_id: &str) -> bool {
    let first = match &run.trigger {
        Trigger::Alarm { delivery_id: d, .. } => d == delivery_id,
        Trigger::Command { .. } | Trigger::Forecast { .. } | Trigger::ScaleDown { .. } => false,
    };
    !delivery_id.is_empty() && (first || run.alarm_deliveries.iter().any(|d| d == delivery_id))
}
