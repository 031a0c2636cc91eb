//! The upsize: a last look at the group (it must be as approved, or the run stops there, the
//! snapshot kept), ModifyReplicationGroup to the target, then polls until the group is
//! `available` on it. `available` on the old type after the modification was seen (or after
//! three polls) means the upsize failed, and the failure quotes AWS's events for the group
//! (DescribeEvents) for the reason; `modify_timeout` bounds the step.

use crate::workflow::effect::{Effect, Note};
use crate::workflow::event::{AwsOp, Event};
use crate::workflow::policy::{Recheck, recheck};
use crate::workflow::ports::{AwsError, GroupInfo, GroupStatus};
use crate::workflow::run::{Run, State, Step, StepStatus};

use super::builder::Builder;
use super::{Decision, does_not_apply};

pub(super) fn decide(mut b: Builder, run: &Run, event: &Event) -> Decision {
    let State::Modifying {
        plan,
        snapshot,
        started,
        requested,
        seen_modifying,
        polls,
    } = &run.state
    else {
        unreachable!("decide routes only modifying runs here");
    };
    let now = b.now();
    let state = |requested: bool, seen_modifying: bool, polls: u32| State::Modifying {
        plan: plan.clone(),
        snapshot: snapshot.clone(),
        started: *started,
        requested,
        seen_modifying,
        polls,
    };
    let on_target = |g: &GroupInfo| g.is_available() && g.node_type.as_ref() == Some(&plan.target);
    let interval = run.policy.modify_poll_interval;
    let timed_out = now.since(*started) >= run.policy.modify_timeout;
    match event {
        Event::Rechecked {
            before: Step::Upsize,
            group,
            allowed,
            pending,
        } if !*requested => match recheck(plan, group, allowed, pending) {
            Recheck::Go => {
                b.summary(format!(
                    "the group is as approved: asking for {}",
                    plan.target
                ));
                b.effect(Effect::ModifyNodeType {
                    target: plan.target.clone(),
                });
            }
            Recheck::Wait(status) => {
                b.summary(format!("group is {status}; the upsize waits"));
                if timed_out {
                    b.timed_out(plan.clone(), Step::Upsize);
                } else {
                    if *polls == 0 {
                        b.note(Note::GroupBusy {
                            status: status.to_string(),
                        });
                    }
                    b.set_state(state(false, *seen_modifying, polls + 1));
                    let before = Step::Upsize;
                    b.effect_at(Effect::Recheck { before }, now.plus(interval));
                }
            }
            Recheck::Stop(drift) => {
                let kept = snapshot.clone();
                b.stopped(plan.clone(), Step::Upsize, drift, kept);
            }
        },
        Event::ModifyRequested { group } => {
            b.summary(format!("modification requested; group is {}", group.status));
            b.note(Note::ModifyStarted {
                from: plan.current.clone(),
                to: plan.target.clone(),
            });
            // Polls count from here: waits for a busy group before the request don't count
            // towards "the modification never started".
            b.set_state(state(true, group.status == GroupStatus::Modifying, 0));
            if on_target(group) {
                b.succeed(plan.clone(), snapshot.clone());
            } else {
                b.effect_at(Effect::PollGroup, now.plus(interval));
            }
        }
        Event::GroupPolled { group, events } if *requested => {
            let polls = polls + 1;
            let seen_modifying = *seen_modifying || group.status == GroupStatus::Modifying;
            let on = group
                .node_type
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "?".into());
            b.summary(format!("group poll {polls}: {} on {on}", group.status));
            if on_target(group) {
                b.succeed(plan.clone(), snapshot.clone());
            } else if group.is_available() && (seen_modifying || polls >= 3) {
                // AWS's own words, when its events for the group give any; never a guess.
                let aws_says = match events.as_slice() {
                    [] => "AWS's events for the group (DescribeEvents) give no reason".to_string(),
                    some => {
                        let last: Vec<String> = some
                            .iter()
                            .rev()
                            .take(3)
                            .rev()
                            .map(|e| format!("{} ({})", e.message, e.source))
                            .collect();
                        format!("AWS says: {}", last.join("; "))
                    }
                };
                let error = if group.node_type.as_ref() == Some(&plan.current) {
                    format!(
                        "the modification ended but {} is still on {on}; {aws_says}",
                        group.id
                    )
                } else {
                    format!(
                        "the modification ended with {} on {on}, neither {} nor the target {}: someone else changed it meanwhile",
                        group.id, plan.current, plan.target
                    )
                };
                b.close_step(Step::Upsize, StepStatus::Failed);
                b.fail(plan.clone(), Step::Upsize, error);
            } else if timed_out {
                b.timed_out(plan.clone(), Step::Upsize);
            } else {
                b.set_state(state(true, seen_modifying, polls));
                b.effect_at(Effect::PollGroup, now.plus(interval));
            }
        }
        Event::AwsFailed {
            op: AwsOp::Modify,
            error: AwsError::InvalidState { message, .. },
        } => {
            b.summary(format!(
                "group busy, ModifyReplicationGroup waits: {message}"
            ));
            if timed_out {
                b.timed_out(plan.clone(), Step::Upsize);
            } else {
                if *polls == 0 {
                    b.note(Note::GroupBusy {
                        status: message.clone(),
                    });
                }
                b.set_state(state(*requested, *seen_modifying, polls + 1));
                // Look again before the next try.
                let before = Step::Upsize;
                b.effect_at(Effect::Recheck { before }, now.plus(interval));
            }
        }
        Event::AwsFailed {
            op: AwsOp::Recheck | AwsOp::Modify | AwsOp::PollGroup,
            error,
        } => {
            b.summary(format!("upsize failed: {error}"));
            b.close_step(Step::Upsize, StepStatus::Failed);
            b.fail(plan.clone(), Step::Upsize, error.to_string());
        }
        _ => return does_not_apply(run, event),
    }
    b.finish()
}
