//! A person acting on a run: Approve, Deny and the size picker while it waits for approval
//! (decided in [`super::approval`]), Cancel until the upsize starts, and "Upsize without a
//! snapshot" after the snapshot failed. A click that comes too
//! early or too late is refused here, with where the run is.

use crate::workflow::effect::{CancelGone, Effect, Note, PageAction};
use crate::workflow::event::{Actor, Event};
use crate::workflow::run::{DecisionKind, Outcome, Run, State, Step, StepStatus};

use super::builder::Builder;
use super::{CannotCancel, Decision, Rejection, approval};

pub(super) fn decide(b: Builder, run: &Run, event: &Event) -> Decision {
    match (event, &run.state) {
        (Event::Cancel { actor }, _) => cancel(b, run, actor),
        (Event::UpsizeWithoutSnapshot { actor }, State::SnapshotFailed { .. }) => {
            without_snapshot(b, run, actor)
        }
        (Event::DenialExplained { actor, reason }, _) => explain_denial(b, run, actor, reason),
        (Event::UpsizeWithoutSnapshot { .. }, _) => Decision::Reject(Rejection::NoFailedSnapshot {
            state: Box::new(run.state.clone()),
        }),
        (_, State::AwaitingApproval { .. }) => approval::decide(b, run, event),
        (_, State::Planning) => Decision::Reject(Rejection::NotWaitingForApproval {
            state: Box::new(run.state.clone()),
        }),
        (
            _,
            State::Finished {
                outcome: Outcome::Expired,
                ..
            },
        ) => Decision::Reject(Rejection::Expired),
        _ => Decision::Reject(Rejection::AlreadyDecided {
            state: Box::new(run.state.clone()),
        }),
    }
}

/// Cancel: approvers and whoever asked for the run, until the upsize starts. A snapshot that
/// AWS already started finishes and is kept; the workers are resumed if they were paused.
fn cancel(mut b: Builder, run: &Run, actor: &Actor) -> Decision {
    let state = || Box::new(run.state.clone());
    match &run.state {
        State::Finished { .. } | State::Resuming { .. } => {
            return Decision::Reject(Rejection::CannotCancel {
                why: CannotCancel::Over { state: state() },
            });
        }
        State::Modifying { plan, .. } | State::Verifying { plan, .. } => {
            return Decision::Reject(Rejection::CannotCancel {
                why: CannotCancel::UpsizeStarted {
                    target: plan.target.clone(),
                },
            });
        }
        _ if !actor.is_approver && run.requested_by() != Some(&actor.user) => {
            return Decision::Reject(Rejection::NotAnApprover);
        }
        _ => {}
    }
    b.decision(actor, DecisionKind::Cancel, None);
    let by = actor.user.clone();
    let cancelled = Outcome::Cancelled { by: by.clone() };
    match &run.state {
        State::Planning => {
            b.summary(format!("cancelled by {by} while planning"));
            b.close_step(Step::Plan, StepStatus::Cancelled);
            b.finish_run(None, cancelled, None);
        }
        State::AwaitingApproval { plan, .. } => {
            b.summary(format!("cancelled by {by}"));
            b.close_step(Step::Approval, StepStatus::Cancelled);
            b.note(Note::Cancelled {
                by,
                snapshot_kept: None,
            });
            b.finish_run(Some(plan.clone()), cancelled, None);
            if run.page.open {
                b.page(PageAction::Resolve);
            }
        }
        State::Pausing { plan } | State::Snapshotting { plan, .. } => {
            // A CreateSnapshot may be in flight: the snapshot, if AWS started it, is kept.
            let (step, snapshot_kept) = match &run.state {
                State::Snapshotting { snapshot, .. } => (Step::Snapshot, Some(snapshot.clone())),
                _ => (Step::Pause, None),
            };
            b.summary(format!("cancelled by {by} during {}", run.state.name()));
            b.close_step(step, StepStatus::Cancelled);
            b.note(Note::Cancelled { by, snapshot_kept });
            b.end(plan.clone(), cancelled);
            // An open page (a late approval, or going on without a snapshot): a person ended
            // the run, so it is taken in hand (the workers are resumed on the way out; a
            // resume that fails pages again).
            if run.page.open {
                b.page(PageAction::Resolve);
            }
        }
        State::SnapshotFailed {
            plan,
            snapshot,
            failure,
            ..
        } => {
            // The workers are back already and the group was never touched. A snapshot that
            // timed out may still finish in AWS: it is kept.
            let snapshot_kept =
                matches!(failure, Outcome::TimedOut { .. }).then(|| snapshot.clone());
            b.summary(format!(
                "cancelled by {by} after the snapshot {}",
                failure.name()
            ));
            b.note(Note::Cancelled { by, snapshot_kept });
            if run.resume_error.is_some() {
                // The workers may still be paused: `end` resumes them again on the way out;
                // the page is resolved once that worked (see `finish`).
                b.end(plan.clone(), cancelled);
            } else {
                b.withdraw_cancel_offer(CancelGone::CancelledBy(actor.user.clone()));
                b.finish_run(Some(plan.clone()), cancelled, None);
                // A person took the failure in hand: the page for it is closed, and the
                // thread says so.
                if run.page.open {
                    b.page(PageAction::Resolve);
                }
            }
        }
        _ => unreachable!("the other states refused above"),
    }
    b.finish()
}

/// The most a denial's reason keeps (it is shown in the thread and on the top message).
pub const DENIAL_REASON_MAX: usize = 500;

/// The person who denied a run says why: kept on the run (said again replaces it), said in
/// the thread and on the top message. Nothing else about the run changes.
fn explain_denial(mut b: Builder, run: &Run, actor: &Actor, reason: &str) -> Decision {
    let State::Finished {
        outcome: Outcome::Denied { by },
        ..
    } = &run.state
    else {
        return Decision::Reject(Rejection::NotYourDenial { denied_by: None });
    };
    if by != &actor.user {
        return Decision::Reject(Rejection::NotYourDenial {
            denied_by: Some(by.clone()),
        });
    }
    let reason: String = reason
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(DENIAL_REASON_MAX)
        .collect();
    if reason.is_empty() {
        return Decision::Ignore("an empty reason".into());
    }
    b.summary(format!("{by} said why the run was denied: {reason}"));
    b.run.denial_reason = Some(reason.clone());
    b.note(Note::DenialExplained {
        by: by.clone(),
        reason,
    });
    b.effect(Effect::UpdateTopMessage);
    b.finish()
}

/// After the snapshot failed or timed out, an approver chose to upsize without one: the same
/// rules as an approval (an approver; not the person who asked unless the policy allows it).
/// The workers are paused again if there is a pause hook, the group is looked at once more,
/// then the upsize. The page stays open until the run succeeds.
fn without_snapshot(mut b: Builder, run: &Run, actor: &Actor) -> Decision {
    let State::SnapshotFailed { plan, failure, .. } = &run.state else {
        unreachable!("routed by state");
    };
    if !actor.is_approver {
        return Decision::Reject(Rejection::NotAnApprover);
    }
    if run.requested_by() == Some(&actor.user) && !run.policy.allow_self_approval {
        return Decision::Reject(Rejection::SelfApproval);
    }
    let by = actor.user.clone();
    b.summary(format!(
        "{by} chose to upsize without a snapshot (the snapshot {})",
        failure.name()
    ));
    b.decision(actor, DecisionKind::UpsizeWithoutSnapshot, None);
    b.note(Note::WithoutSnapshot { by: by.clone() });
    b.withdraw_cancel_offer(CancelGone::WithoutSnapshot(by));
    // The fallback's timer has nothing left to do.
    b.drop_pending_work = true;
    b.start_work(plan.clone());
    b.finish()
}
