//! Proposing a run before the alarm: for each group with `forecast_alert`, the memory trend
//! is read every `alarms.forecast_interval`, and when it says the group is full within that
//! long a run starts, as an ordinary plan approved as the policy says (never a silent
//! action). One active run per group dedups it like alarms; a run that ended without an
//! upsize (a denied proposal or alarm run, one that expired, nothing to do) holds off the
//! next proposal for `forecast_alert`, and a successful upsize for the cooldown.

use std::time::Duration;

use crate::domain::{ReplicationGroupId, format_duration};
use crate::workflow::forecast::forecast;
use crate::workflow::machine::Started;
use crate::workflow::policy::in_cooldown;
use crate::workflow::ports::memory::recent;
use crate::workflow::run::{Outcome, Trigger};

use super::App;

/// What one look at a group's trend came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Looked {
    /// A run was proposed.
    Proposed(crate::domain::RunId),
    /// Not now, and why.
    Not(String),
}

impl App {
    /// One pass over the groups with `forecast_alert`; what came of each.
    pub async fn forecast_once(&self) -> Vec<(ReplicationGroupId, Looked)> {
        let mut out = Vec::new();
        let groups: Vec<ReplicationGroupId> = self
            .config
            .groups
            .iter()
            .filter(|(_, g)| {
                !g.policy.forecast_alert.is_zero() && !g.policy.forecast_window.is_zero()
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in groups {
            let looked = self.forecast_group(&id).await;
            match &looked {
                Looked::Proposed(run) => {
                    self.metrics.watch("forecast", "proposed");
                    tracing::info!(group = %id, run = %run, "memory trend: run proposed")
                }
                Looked::Not(why) => {
                    self.metrics.watch("forecast", "not_now");
                    tracing::debug!(group = %id, why = %why, "memory trend")
                }
            }
            out.push((id, looked));
        }
        out
    }

    async fn forecast_group(&self, id: &ReplicationGroupId) -> Looked {
        let not = |why: String| Looked::Not(why);
        let Some(memory) = self.memory.as_ref() else {
            return not("no CloudWatch reader".into());
        };
        let Some(gc) = self.group(id) else {
            return not("not managed".into());
        };
        let policy = &gc.policy;
        let now = self.clock.now();
        // A scale-down suggestion gives way when the trend says the group fills (below).
        let mut suggestion = None;
        match self.store.active_run(id).await {
            Ok(Some(run)) if crate::workflow::machine::withdrawable(&run) => suggestion = Some(run),
            Ok(Some(run)) => return not(format!("run {} is active", run.id)),
            Ok(None) => {}
            Err(e) => return not(format!("store: {e}")),
        }
        if let Ok(Some(last)) = self.last_upsize(id).await
            && let Some(c) = in_cooldown(Some(&last), policy.cooldown, now)
        {
            return not(format!("cooldown: {} left", format_duration(c.remaining)));
        }
        // A run that ended without an upsize (a proposal nobody took, an alarm's run denied,
        // nothing to do) holds off the next proposal for `forecast_alert`.
        if let Ok(recent) = self.store.recent_runs(Some(id), 1).await
            && let Some(last) = recent.first()
            && !matches!(last.outcome(), Some(Outcome::Succeeded { .. }))
            && last
                .finished_at()
                .is_some_and(|t| now.since(t) < policy.forecast_alert)
        {
            return not(format!(
                "the last proposal ({}) ended {} ago",
                last.id,
                format_duration(now.since(last.finished_at().unwrap_or(now)))
            ));
        }
        let group = match self.aws(id).describe_group(id).await {
            Ok(g) => g,
            Err(e) => return not(format!("DescribeReplicationGroups: {e}")),
        };
        let window = policy.forecast_window;
        let read = recent(
            memory.as_ref(),
            id,
            group.members,
            window,
            now,
            Duration::from_secs(10),
        );
        let series = match read.await {
            Ok(series) => series,
            Err(e) => return not(format!("GetMetricData: {e}")),
        };
        let f = match forecast(&series, policy.forecast_window) {
            Ok(f) => f,
            Err(why) => return not(why),
        };
        match f.full_in {
            Some(d) if d <= policy.forecast_alert => {}
            Some(d) => return not(format!("full in ~{}", format_duration(d))),
            None => return not(format!("{:?}", f.trend).to_lowercase()),
        }
        if let Some(s) = &suggestion {
            let reason = format!(
                "the memory trend says full in ~{}",
                format_duration(f.full_in.unwrap_or_default())
            );
            match self.give_way(s, &reason, Duration::ZERO).await {
                Ok(true) => {}
                Ok(false) => return not(format!("suggestion {} is being withdrawn", s.id)),
                Err(e) => return not(format!("suggestion {} not withdrawn: {e}", s.id)),
            }
        }
        let trigger = Trigger::Forecast {
            at: now,
            forecast: f,
        };
        match self.start_run(id, None, trigger).await {
            // Counted with the runs: `redis_autoscaler_runs_started_total{trigger="forecast"}`.
            Ok(Started::Created(run)) => Looked::Proposed(run),
            Ok(Started::AlreadyActive(run)) => not(format!("run {run} is active")),
            Err(e) => not(format!("not started: {e}")),
        }
    }
}
