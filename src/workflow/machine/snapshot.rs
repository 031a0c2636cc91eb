//! Pausing the workers (when a pause hook is set) and taking the snapshot: a last look at the
//! group (it must be as approved, or the run stops there), CreateSnapshot, then polls until AWS
//! says `available`, within `snapshot_max_polls`. A busy group is waited for like a poll; a
//! failed or vanished snapshot fails the run. After a failed or timed-out snapshot the run
//! waits for an approver to upsize without one (see [`super::people`]) or cancel; nobody
//! choosing by the deadline ends it as it failed.

use crate::domain::SnapshotName;
use crate::workflow::effect::{CancelGone, Effect, Note};
use crate::workflow::event::{AwsOp, Event, HookPhase, Timer};
use crate::workflow::policy::{Recheck, recheck};
use crate::workflow::ports::{AwsError, SnapshotStatus};
use crate::workflow::run::{Plan, Run, State, Step, StepStatus};

use super::builder::Builder;
use super::{Decision, does_not_apply};

pub(super) fn decide(mut b: Builder, run: &Run, event: &Event) -> Decision {
    match (&run.state, event) {
        (State::Pausing { plan }, Event::HookDone { phase }) if *phase == HookPhase::Pause => {
            paused(b, plan)
        }
        (State::Pausing { plan }, Event::HookFailed { phase, error })
            if *phase == HookPhase::Pause =>
        {
            pause_failed(b, plan, error)
        }
        (State::Snapshotting { .. }, _) => snapshotting(b, run, event),
        (
            State::SnapshotFailed {
                plan,
                failure,
                decide_by,
                ..
            },
            Event::TimerFired {
                timer: Timer::FallbackExpiry,
            },
        ) => {
            if b.now() < *decide_by {
                return Decision::Ignore("fallback timer fired early".into());
            }
            let after = run.policy.without_snapshot_window;
            b.summary(
                "nobody chose to upsize without a snapshot or to cancel: the run ends as it failed",
            );
            b.note(Note::FallbackExpired { after });
            b.withdraw_cancel_offer(CancelGone::Ended(failure.name().to_string()));
            b.finish_run(Some(plan.clone()), failure.clone(), None);
            b.finish()
        }
        _ => does_not_apply(run, event),
    }
}

fn paused(mut b: Builder, plan: &Plan) -> Decision {
    b.summary("pause hook done");
    b.close_step(Step::Pause, StepStatus::Done);
    b.note(Note::Paused);
    b.after_pause(plan.clone());
    b.finish()
}

fn pause_failed(mut b: Builder, plan: &Plan, error: &str) -> Decision {
    b.summary(format!("pause hook failed: {error}"));
    b.close_step(Step::Pause, StepStatus::Failed);
    b.note(Note::PauseFailed {
        error: error.to_string(),
    });
    b.fail(plan.clone(), Step::Pause, error.to_string());
    b.finish()
}

fn snapshotting(mut b: Builder, run: &Run, event: &Event) -> Decision {
    let State::Snapshotting {
        plan,
        snapshot,
        polls,
        created,
    } = &run.state
    else {
        unreachable!("routed by state");
    };
    let max = run.policy.snapshot_max_polls;
    let state = |polls: u32, created: bool| State::Snapshotting {
        plan: plan.clone(),
        snapshot: snapshot.clone(),
        polls,
        created,
    };
    match event {
        Event::Rechecked {
            before: Step::Snapshot,
            group,
            allowed,
            pending,
        } if !*created => match recheck(plan, group, allowed, pending) {
            Recheck::Go => {
                b.summary("the group is as approved: taking the snapshot");
                b.note(Note::SnapshotStarted {
                    name: snapshot.clone(),
                });
                b.effect(Effect::CreateSnapshot {
                    name: snapshot.clone(),
                });
            }
            Recheck::Wait(status) => {
                let polls = polls + 1;
                b.summary(format!(
                    "group is {status}; the snapshot waits ({polls}/{max})"
                ));
                if polls >= max {
                    b.timed_out(plan.clone(), Step::Snapshot);
                } else {
                    if polls == 1 {
                        b.note(Note::GroupBusy {
                            status: status.to_string(),
                        });
                    }
                    b.set_state(state(polls, false));
                    let due = b.now().plus(run.policy.snapshot_poll_interval);
                    let before = Step::Snapshot;
                    b.effect_at(Effect::Recheck { before }, due);
                }
            }
            Recheck::Stop(drift) => b.stopped(plan.clone(), Step::Snapshot, drift, None),
        },
        Event::SnapshotStarted { status } => {
            b.summary(format!("snapshot {snapshot} is {status}"));
            b.set_state(state(*polls, true));
            on_status(&mut b, plan, snapshot, *polls, Some(status));
        }
        Event::SnapshotPolled { status } if *created => {
            let polls = polls + 1;
            b.summary(format!(
                "snapshot poll {polls}/{max}: {}",
                status
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "missing".into())
            ));
            b.set_state(state(polls, true));
            on_status(&mut b, plan, snapshot, polls, status.as_ref());
        }
        Event::AwsFailed {
            op: AwsOp::CreateSnapshot,
            error: AwsError::InvalidState { message, .. },
        } => {
            // The group is busy (a backup or another change): wait like a poll, then try again.
            let polls = polls + 1;
            b.summary(format!(
                "group busy, CreateSnapshot waits ({polls}/{max}): {message}"
            ));
            if polls >= max {
                b.timed_out(plan.clone(), Step::Snapshot);
            } else {
                if polls == 1 {
                    b.note(Note::GroupBusy {
                        status: message.clone(),
                    });
                }
                b.set_state(state(polls, *created));
                // Look again before the next try.
                let due = b.now().plus(run.policy.snapshot_poll_interval);
                let before = Step::Snapshot;
                b.effect_at(Effect::Recheck { before }, due);
            }
        }
        Event::AwsFailed {
            op: AwsOp::Recheck | AwsOp::CreateSnapshot | AwsOp::PollSnapshot,
            error,
        } => {
            b.summary(format!("snapshot failed: {error}"));
            b.close_step(Step::Snapshot, StepStatus::Failed);
            b.fail(plan.clone(), Step::Snapshot, error.to_string());
        }
        _ => return does_not_apply(run, event),
    }
    b.finish()
}

/// What AWS says about the snapshot decides the next step.
fn on_status(
    b: &mut Builder,
    plan: &Plan,
    snapshot: &SnapshotName,
    polls: u32,
    status: Option<&SnapshotStatus>,
) {
    match status {
        Some(SnapshotStatus::Available) => {
            let took = b
                .run
                .step(Step::Snapshot)
                .map(|s| b.now().since(s.started))
                .unwrap_or_default();
            b.close_step(Step::Snapshot, StepStatus::Done);
            b.note(Note::SnapshotReady {
                name: snapshot.clone(),
                took,
            });
            b.start_modify(plan.clone(), Some(snapshot.clone()));
        }
        Some(SnapshotStatus::Failed) => {
            b.close_step(Step::Snapshot, StepStatus::Failed);
            b.fail(
                plan.clone(),
                Step::Snapshot,
                format!("AWS reports snapshot {snapshot} as failed"),
            );
        }
        None => {
            b.close_step(Step::Snapshot, StepStatus::Failed);
            b.fail(
                plan.clone(),
                Step::Snapshot,
                format!("snapshot {snapshot} disappeared while it was being created"),
            );
        }
        Some(_) if polls >= b.run.policy.snapshot_max_polls => {
            b.timed_out(plan.clone(), Step::Snapshot);
        }
        Some(_) => {
            let due = b.now().plus(b.run.policy.snapshot_poll_interval);
            b.effect_at(
                Effect::PollSnapshot {
                    name: snapshot.clone(),
                },
                due,
            );
        }
    }
}
