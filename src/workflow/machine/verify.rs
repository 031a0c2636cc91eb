//! Verifying: the upsize is done and the workers are back; memory is read from CloudWatch
//! `verify_window` later, and the run says whether the upsize worked. Still at or above the
//! alarm's threshold pages and offers to plan the next size; memory that can't be read ends
//! the run without the answer (the upsize itself succeeded).

use crate::workflow::effect::{Note, PageAction, PageReason};
use crate::workflow::event::{AwsOp, Event};
use crate::workflow::run::{Outcome, Run, State, Step, StepStatus, Verification};

use super::builder::Builder;
use super::{Decision, does_not_apply};

pub(super) fn decide(mut b: Builder, run: &Run, event: &Event) -> Decision {
    let State::Verifying { plan, outcome } = &run.state else {
        unreachable!("decide routes only verifying runs here");
    };
    let on = match outcome {
        Outcome::Succeeded { to, .. } => to.clone(),
        _ => plan.target.clone(),
    };
    let threshold = run.trigger.threshold();
    let verification = match event {
        Event::MemoryRead { before, after } => Verification {
            before: *before,
            after: *after,
            threshold,
            on,
            error: None,
        },
        Event::AwsFailed {
            op: AwsOp::Verify,
            error,
        } => Verification {
            before: None,
            after: None,
            threshold,
            on,
            error: Some(error.to_string()),
        },
        _ => return does_not_apply(run, event),
    };
    b.summary(match (&verification.error, verification.after) {
        (Some(e), _) => format!("memory could not be read: {e}"),
        (None, Some(after)) => format!("memory after the upsize: {after:.1} %"),
        (None, None) => "no memory readings after the upsize".to_string(),
    });
    let still_high = verification.still_high();
    b.close_step(
        Step::Verify,
        if still_high {
            StepStatus::Failed
        } else {
            StepStatus::Done
        },
    );
    b.note(Note::MemoryVerified {
        verification: verification.clone(),
    });
    if let (true, Some(after), Some(threshold)) =
        (still_high, verification.after, verification.threshold)
    {
        b.page(PageAction::Trigger(PageReason::StillHigh {
            after,
            threshold,
        }));
    }
    b.run.verification = Some(verification);
    b.finish_run(Some(plan.clone()), outcome.clone(), None);
    b.finish()
}
