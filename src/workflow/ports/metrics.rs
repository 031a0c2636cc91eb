//! [`Metrics`]: what the runner counts (runs started and finished, how long steps took). The
//! Prometheus names and labels live with the adapter (`telemetry`).

use std::time::Duration;

use crate::workflow::run::Progress;

pub trait Metrics: Send + Sync {
    /// A run was created; `trigger` is `alarm` or `command`.
    fn run_started(&self, trigger: &'static str);
    /// A run reached its outcome ([`crate::workflow::run::Outcome::name`]).
    fn run_finished(&self, outcome: &'static str);
    /// A step of the checklist ended, with its status (`done`, `failed`, …).
    fn step_finished(&self, step: &'static str, status: &'static str, took: Duration);
    /// An alarm delivery was handled, with what it did (`started`, `duplicate`, …).
    fn alarm(&self, outcome: &'static str);
    /// A periodic check of one group (`forecast`, `scale_down`) came to `result`
    /// (`proposed` / `suggested`, or `not_now`).
    fn watch(&self, watch: &'static str, result: &'static str);

    /// Everything one transition finished.
    fn progress(&self, progress: &Progress) {
        for (step, status, took) in &progress.steps {
            self.step_finished(step.label(), status.name(), *took);
        }
        if let Some(outcome) = progress.finished {
            self.run_finished(outcome);
        }
    }
}

/// Counts nothing (tests that don't look at metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn run_started(&self, _: &'static str) {}
    fn run_finished(&self, _: &'static str) {}
    fn step_finished(&self, _: &'static str, _: &'static str, _: Duration) {}
    fn alarm(&self, _: &'static str) {}
    fn watch(&self, _: &'static str, _: &'static str) {}
}
