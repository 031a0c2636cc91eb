//! Building a transition: the run as it will be, the effects to schedule, the audit line. The
//! steps several phases share live here (start the snapshot, succeed, fail, end).

use crate::domain::{NodeType, SnapshotName, Timestamp};
use crate::workflow::effect::{
    CancelGone, Effect, GraphMoment, Note, PageAction, PageReason, Scheduled,
};
use crate::workflow::event::{Actor, HookPhase, Timer};
use crate::workflow::policy::{Drift, SnapshotPolicy};
use crate::workflow::run::{
    DecisionKind, DecisionRecord, Outcome, Plan, Run, State, Step, StepRecord, StepStatus,
};

use super::{Decision, Transition};

/// Accumulates a transition.
pub(super) struct Builder {
    pub(super) run: Run,
    now: Timestamp,
    effects: Vec<Scheduled>,
    pub(super) drop_pending_work: bool,
    summary: String,
}

impl Builder {
    pub(super) fn new(run: &Run, now: Timestamp) -> Builder {
        let mut run = run.clone();
        run.updated_at = now;
        Builder {
            run,
            now,
            effects: Vec::new(),
            drop_pending_work: false,
            summary: String::new(),
        }
    }

    pub(super) fn finish(mut self) -> Decision {
        // A message posted in this transition already shows the latest state.
        if self
            .effects
            .iter()
            .any(|e| e.effect == Effect::PostTopMessage)
        {
            self.effects
                .retain(|e| e.effect != Effect::UpdateTopMessage);
        }
        Decision::Accept(Box::new(Transition {
            run: self.run,
            effects: self.effects,
            drop_pending_work: self.drop_pending_work,
            summary: self.summary,
        }))
    }

    pub(super) fn now(&self) -> Timestamp {
        self.now
    }

    pub(super) fn summary(&mut self, s: impl Into<String>) {
        self.summary = s.into();
    }

    pub(super) fn set_state(&mut self, state: State) {
        self.run.state = state;
    }

    pub(super) fn effect(&mut self, effect: Effect) {
        let due = self.now;
        self.effect_at(effect, due);
    }

    pub(super) fn effect_at(&mut self, effect: Effect, due: Timestamp) {
        self.effects.push(Scheduled { effect, due });
    }

    pub(super) fn note(&mut self, note: Note) {
        self.effect(Effect::PostNote { note });
    }

    pub(super) fn page(&mut self, action: PageAction) {
        match &action {
            PageAction::Trigger(_) => {
                self.run.page.open = true;
                self.run.page.triggers += 1;
            }
            PageAction::Resolve => self.run.page.open = false,
        }
        self.effect(Effect::Page { action });
    }

    pub(super) fn decision(
        &mut self,
        actor: &Actor,
        kind: DecisionKind,
        node_type: Option<NodeType>,
    ) {
        self.run.decisions.push(DecisionRecord {
            user: actor.user.clone(),
            kind,
            at: self.now,
            node_type,
        });
    }

    /// Remember an alarm delivery (the last 100), so a retry of it is recognised.
    pub(super) fn remember_delivery(&mut self, delivery_id: &str) {
        if delivery_id.is_empty() {
            return;
        }
        self.run.alarm_deliveries.push(delivery_id.to_string());
        let excess = self.run.alarm_deliveries.len().saturating_sub(100);
        self.run.alarm_deliveries.drain(..excess);
    }

    pub(super) fn open_step(&mut self, step: Step) {
        self.run.steps.push(StepRecord::start(step, self.now));
    }

    /// Close the latest record of `step` if it is still running.
    pub(super) fn close_step(&mut self, step: Step, status: StepStatus) {
        let now = self.now;
        if let Some(rec) = self
            .run
            .steps
            .iter_mut()
            .rev()
            .find(|s| s.step == step && s.status == StepStatus::Running)
        {
            rec.ended = Some(now);
            rec.status = status;
        }
    }

    /// Approved: pause (if there is a hook) or go straight to the snapshot.
    pub(super) fn start_work(&mut self, plan: Plan) {
        self.effect(Effect::OfferCancel);
        if self.run.policy.pause_url.is_some() {
            self.open_step(Step::Pause);
            self.set_state(State::Pausing { plan });
            self.note(Note::Pausing);
            self.effect(Effect::CallHook {
                phase: HookPhase::Pause,
            });
            self.effect(Effect::UpdateTopMessage);
        } else {
            self.after_pause(plan);
        }
    }

    /// The workers are paused (or there is no pause hook): the snapshot, or straight to the
    /// upsize when the run goes without one.
    pub(super) fn after_pause(&mut self, plan: Plan) {
        if !self.run.skips_snapshot() {
            self.start_snapshot(plan);
            return;
        }
        if self.run.policy.snapshot == SnapshotPolicy::Skip {
            self.note(Note::SnapshotSkipped);
        }
        self.start_modify(plan, None);
    }

    pub(super) fn start_snapshot(&mut self, plan: Plan) {
        let name = SnapshotName::for_run(&self.run.id);
        self.open_step(Step::Snapshot);
        self.set_state(State::Snapshotting {
            plan,
            snapshot: name.clone(),
            polls: 0,
            created: false,
        });
        // Look at the group once more before acting on it.
        self.effect(Effect::Recheck {
            before: Step::Snapshot,
        });
        self.effect(Effect::UpdateTopMessage);
    }

    pub(super) fn start_modify(&mut self, plan: Plan, snapshot: Option<SnapshotName>) {
        self.withdraw_cancel_offer(CancelGone::UpsizeStarted);
        self.open_step(Step::Upsize);
        self.set_state(State::Modifying {
            plan,
            snapshot,
            started: self.now,
            requested: false,
            seen_modifying: false,
            polls: 0,
        });
        // Look at the group once more before acting on it.
        self.effect(Effect::Recheck {
            before: Step::Upsize,
        });
        self.effect(Effect::UpdateTopMessage);
    }

    /// The group changed since the plan was approved: stop before `step`, having done
    /// nothing to it (resuming the workers if they were paused).
    pub(super) fn stopped(
        &mut self,
        plan: Plan,
        step: Step,
        drift: Drift,
        snapshot_kept: Option<SnapshotName>,
    ) {
        self.summary(format!("stopped before the {}: {drift}", step.label()));
        self.close_step(step, StepStatus::Cancelled);
        self.note(Note::GroupChanged {
            before: step,
            drift: drift.clone(),
            snapshot_kept,
        });
        self.end(plan, Outcome::GroupChanged { step, drift });
    }

    pub(super) fn succeed(&mut self, plan: Plan, snapshot: Option<SnapshotName>) {
        self.close_step(Step::Upsize, StepStatus::Done);
        let outcome = Outcome::Succeeded {
            from: plan.current.clone(),
            to: plan.target.clone(),
            snapshot,
        };
        let took = self.now.since(self.run.created_at);
        self.note(Note::Succeeded {
            from: plan.current.clone(),
            to: plan.target.clone(),
            took,
        });
        if self.run.page.open {
            self.page(PageAction::Resolve);
        }
        self.end(plan, outcome);
    }

    pub(super) fn fail(&mut self, plan: Plan, step: Step, error: String) {
        self.note(Note::Failed {
            step,
            error: error.clone(),
        });
        let outcome = Outcome::Failed { step, error };
        let reason = self.page_reason(&outcome);
        self.page(PageAction::Trigger(reason));
        self.end(plan, outcome);
    }

    pub(super) fn timed_out(&mut self, plan: Plan, step: Step) {
        let after = self
            .run
            .step(step)
            .map(|s| self.now.since(s.started))
            .unwrap_or_default();
        self.close_step(step, StepStatus::TimedOut);
        self.note(Note::TimedOut { step, after });
        let outcome = Outcome::TimedOut { step, after };
        let reason = self.page_reason(&outcome);
        self.page(PageAction::Trigger(reason));
        self.end(plan, outcome);
    }

    /// A failure the page reports: a failed snapshot says what a person may do about it.
    fn page_reason(&self, outcome: &Outcome) -> PageReason {
        match self.fallback_for(outcome) {
            Some(decide_by) => PageReason::SnapshotFailed {
                timed_out: matches!(outcome, Outcome::TimedOut { .. }),
                decide_by,
            },
            None => PageReason::RunFailed,
        }
    }

    /// When the snapshot failed or timed out (and the run did not already choose to go
    /// without one), an approver may upsize without it or cancel, until the time returned.
    pub(super) fn fallback_for(&self, outcome: &Outcome) -> Option<Timestamp> {
        let snapshot_failed = matches!(
            outcome,
            Outcome::Failed {
                step: Step::Snapshot,
                ..
            } | Outcome::TimedOut {
                step: Step::Snapshot,
                ..
            }
        );
        let offered = matches!(self.run.state, State::SnapshotFailed { .. });
        let window = self.run.policy.without_snapshot_window;
        (snapshot_failed && !offered && !self.run.skips_snapshot() && !window.is_zero())
            .then(|| self.fallback_deadline())
    }

    /// The decision is open for `without_snapshot_window` from the failure; the time is fixed by the
    /// first step that closed (the snapshot's), so the page and the offer say the same.
    fn fallback_deadline(&self) -> Timestamp {
        let failed_at = self
            .run
            .step(Step::Snapshot)
            .and_then(|s| s.ended)
            .unwrap_or(self.now);
        // A resume hook that took longer than that leaves the choice open no longer.
        failed_at
            .plus(self.run.policy.without_snapshot_window)
            .max(self.now)
    }

    pub(super) fn withdraw_cancel_offer(&mut self, reason: CancelGone) {
        if let Some(ts) = self.run.cancel_offer.take() {
            self.effect(Effect::WithdrawCancelOffer { ts, reason });
        }
    }

    /// The outcome is known: resume the workers if they were paused, else finish.
    pub(super) fn end(&mut self, plan: Plan, outcome: Outcome) {
        self.drop_pending_work = true;
        let reason = match &outcome {
            Outcome::Cancelled { by } => CancelGone::CancelledBy(by.clone()),
            other if self.fallback_for(other).is_some() => CancelGone::SnapshotFailed,
            other => CancelGone::Ended(other.name().to_string()),
        };
        self.withdraw_cancel_offer(reason);
        if self.run.pause_attempted() {
            self.open_step(Step::Resume);
            self.set_state(State::Resuming { plan, outcome });
            self.effect(Effect::CallHook {
                phase: HookPhase::Resume,
            });
            self.effect(Effect::UpdateTopMessage);
        } else {
            self.finish_run(Some(plan), outcome, None);
        }
    }

    pub(super) fn finish_run(
        &mut self,
        plan: Option<Plan>,
        outcome: Outcome,
        resume_error: Option<String>,
    ) {
        if resume_error.is_some() {
            self.run.resume_error = resume_error.clone();
        }
        // The snapshot failed, the group is untouched and the workers are back: an approver
        // may go on without a snapshot, or cancel; nobody choosing ends the run as it failed.
        if let (Some(decide_by), Some(p)) = (self.fallback_for(&outcome), &plan) {
            self.set_state(State::SnapshotFailed {
                plan: p.clone(),
                snapshot: SnapshotName::for_run(&self.run.id),
                failure: outcome,
                decide_by,
            });
            // The reply with both buttons says what happened and what a person may do.
            self.effect(Effect::OfferCancel);
            self.effect_at(
                Effect::Timer {
                    timer: Timer::FallbackExpiry,
                },
                decide_by,
            );
            self.effect(Effect::UpdateTopMessage);
            return;
        }
        // The upsize is done (and the workers resumed): before it ends, the run watches
        // memory for `verify_window` to say whether it worked.
        let window = self.run.policy.verify_window;
        if let (Outcome::Succeeded { .. }, Some(p)) = (&outcome, &plan)
            && !window.is_zero()
            && self.run.verification.is_none()
        {
            self.open_step(Step::Verify);
            self.set_state(State::Verifying {
                plan: p.clone(),
                outcome,
            });
            let due = self.now().plus(window);
            self.effect_at(Effect::VerifyMemory, due);
            self.effect(Effect::UpdateTopMessage);
            return;
        }
        self.drop_pending_work = true;
        let planned = plan.is_some();
        self.set_state(State::Finished { plan, outcome });
        self.effect(Effect::UpdateTopMessage);
        // A run that got as far as a plan shows how memory went, at its end too.
        if planned {
            self.effect(Effect::PostGraph {
                moment: GraphMoment::Ended,
            });
        }
    }
}
