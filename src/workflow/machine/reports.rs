//! Facts about the run's messages and pages, accepted in any state: the top message was
//! posted (or couldn't be), the Cancel button was offered, PagerDuty took a page (or didn't).

use crate::workflow::effect::{CancelGone, Effect, GraphMoment, Note, PageAction, PageReason};
use crate::workflow::event::Event;
use crate::workflow::run::{Run, State};

use super::Decision;
use super::builder::Builder;

pub(super) fn decide(mut b: Builder, run: &Run, event: &Event) -> Decision {
    match event {
        Event::TopMessagePosted { message } => {
            b.summary(format!(
                "the run's thread is under the message at {} in {}",
                message.ts, message.channel
            ));
            let mut message = message.clone();
            if let Some(ms) = message.check_duplicates_after_ms.take() {
                let due = b.now().plus(std::time::Duration::from_millis(ms));
                b.effect_at(Effect::CheckDuplicateTop, due);
            }
            b.run.message = Some(message);
            // A run that ended before its message went up shows its graph once, at the end.
            if !run.is_finished() {
                b.effect(Effect::PostGraph {
                    moment: GraphMoment::Posted,
                });
            }
        }
        Event::CancelOffered { ts } => {
            if run.is_cancellable() {
                b.summary("cancel button offered in the thread");
                // A slow chat lane can post two offers (the approval's and the failed
                // snapshot's): the newer, lower one stays; the older points to it.
                if let Some(old) = run.cancel_offer.as_ref().filter(|old| *old != ts) {
                    let reason = match run.state {
                        State::SnapshotFailed { .. } => CancelGone::SnapshotFailed,
                        _ => CancelGone::Said(
                            "a newer Cancel button is in the reply further down".into(),
                        ),
                    };
                    b.effect(Effect::WithdrawCancelOffer {
                        ts: old.clone(),
                        reason,
                    });
                }
                b.run.cancel_offer = Some(ts.clone());
            } else {
                b.summary("cancel button offered too late; withdrawing it");
                b.effect(Effect::WithdrawCancelOffer {
                    ts: ts.clone(),
                    reason: too_late(run),
                });
            }
        }
        Event::RepeatLinePosted { ts } => {
            b.summary("the alarm's repeats are counted on one thread reply");
            b.run.repeats.line = Some(ts.clone());
        }
        Event::TopMessageFailed { error } => {
            b.summary(format!("top message could not be posted: {error}"));
            b.page(PageAction::Trigger(PageReason::SlackUnreachable {
                error: error.clone(),
            }));
        }
        Event::PageDelivered { action } => {
            b.summary(format!("PagerDuty accepted {}", action.name()));
            b.note(match action {
                PageAction::Trigger(reason) => Note::Paged {
                    reason: reason.clone(),
                },
                PageAction::Resolve => Note::PageResolved,
            });
        }
        Event::PageFailed { action, error } => {
            b.summary(format!("PagerDuty {} failed: {error}", action.name()));
            if matches!(action, PageAction::Trigger(_)) {
                b.note(Note::PageFailed {
                    error: error.clone(),
                });
            }
        }
        _ => unreachable!("decide routes only reports here"),
    }
    b.finish()
}

/// Why a Cancel button that arrived after the run moved on is withdrawn.
fn too_late(run: &Run) -> CancelGone {
    match &run.state {
        State::Modifying { .. } => CancelGone::UpsizeStarted,
        State::Finished { outcome, .. } => CancelGone::Finished(outcome.clone()),
        // Only `Resuming` is left: the cancellable states never get here.
        _ => CancelGone::Resuming,
    }
}
