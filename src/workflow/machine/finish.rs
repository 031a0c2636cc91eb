//! Resuming: the outcome is known and the resume hook runs (always, once the pause hook was
//! attempted). A failed resume keeps the outcome, says the workers may still be paused, and
//! pages.

use crate::workflow::effect::{Note, PageAction, PageReason};
use crate::workflow::event::{Event, HookPhase};
use crate::workflow::run::{Outcome, Run, State, Step, StepStatus};

use super::builder::Builder;
use super::{Decision, does_not_apply};

pub(super) fn decide(mut b: Builder, run: &Run, event: &Event) -> Decision {
    let State::Resuming { plan, outcome } = &run.state else {
        unreachable!("decide routes only resuming runs here");
    };
    match event {
        Event::HookDone {
            phase: HookPhase::Resume,
        } => {
            b.summary("resume hook done");
            b.close_step(Step::Resume, StepStatus::Done);
            b.note(Note::Resumed);
            // A resume that failed earlier in the run (before a second pause) is behind us.
            let was_stuck = b.run.resume_error.take().is_some();
            b.finish_run(Some(plan.clone()), outcome.clone(), None);
            // Cancelled while the workers were stuck: now they are back, the page is done.
            if was_stuck && matches!(outcome, Outcome::Cancelled { .. }) && b.run.page.open {
                b.page(PageAction::Resolve);
            }
        }
        Event::HookFailed {
            phase: HookPhase::Resume,
            error,
        } => {
            b.summary(format!("resume hook failed: {error}"));
            b.close_step(Step::Resume, StepStatus::Failed);
            b.note(Note::ResumeFailed {
                error: error.clone(),
            });
            b.finish_run(Some(plan.clone()), outcome.clone(), Some(error.clone()));
            b.page(PageAction::Trigger(PageReason::ResumeFailed {
                error: error.clone(),
            }));
        }
        _ => return does_not_apply(run, event),
    }
    b.finish()
}
