//! Hindsight: a group that was upsized (or always was too big) and whose memory stayed low is
//! offered one size back down. Every `alarms.scale_down_interval` (a timer kept in the store,
//! taken by one replica) each group with `scale_down = "suggest"` is checked:
//!
//! - nothing active: no run, no alarm in the window, not within the cooldown or
//!   `scale_down_after` of the group's last change by the bot, nor of a suggestion that was
//!   dismissed (or expired, or ended otherwise after it was shown), nor before a snooze ends;
//! - AWS lists a smaller size of the same family (`ScaleDownModifications`), one step down and
//!   not below `min_node_type`;
//! - CloudWatch has the group's memory over the whole `scale_down_window`, and its peak (the
//!   highest reading of any node, each period's `Maximum`), scaled to the smaller type's memory,
//!   is below `scale_down_below`.
//!
//! Then a run starts with [`Trigger::ScaleDown`]: its card shows the evidence and waits for an
//! approver (Approve / Dismiss / Snooze). It is never approved by policy, never paged while it
//! waits, and moves one step only. The outcome of the last suggestion is what holds the next
//! one off, so a dismissal or a snooze holds across restarts and replicas.

use std::time::Duration;

use crate::domain::node_types::{lookup, prev_in_family};
use crate::domain::{ReplicationGroupId, Timestamp, format_duration};
use crate::workflow::event::Event;
use crate::workflow::machine::{Started, withdrawable};
use crate::workflow::policy::ScaleDownMode;
use crate::workflow::ports::memory::recent;
use crate::workflow::run::{Direction, Outcome, Run, ScaleDownEvidence, Step, Trigger};

use super::{App, AppError};

/// How much of the window the readings must cover (the first reading no later than this share
/// of the window after its start): a group with a day of history has no week-long peak.
const COVERAGE: f64 = 0.9;

/// How many of a group's recent runs are looked through for its last change and suggestion.
const RUNS_LOOKED_AT: usize = 50;

/// What one check of a group came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// A suggestion was posted (its run).
    Suggested(crate::domain::RunId),
    /// Not now, and why.
    Not(String),
}

impl App {
    /// A scale-down suggestion holding the group gives way to a run that moves it up (its
    /// memory alarm, a person's upsize, the memory trend): withdrawn (its thread says why),
    /// and waited for up to `wait` until it is over (a withdrawal during the pause or the
    /// snapshot resumes the workers first). True when the group is free now. One whose
    /// modification has started is not withdrawn: AWS can't stop it, and what follows it
    /// (memory verified against `scale_down_verify_below`, paged when above) is the guard.
    pub(super) async fn give_way(
        &self,
        run: &Run,
        reason: &str,
        wait: Duration,
    ) -> Result<bool, AppError> {
        if !withdrawable(run) {
            return Ok(false);
        }
        let event = Event::WithdrawSuggestion {
            reason: reason.to_string(),
        };
        self.runner.submit(&run.id, event).await?;
        let until = std::time::Instant::now() + wait;
        loop {
            let active = self.store.active_run(&run.group).await?;
            if active.is_none_or(|a| a.id != run.id) {
                return Ok(true);
            }
            if std::time::Instant::now() >= until {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last successful run that moved the group up: where its cooldown starts. A
    /// scale-down holds off only the next suggestion, never the way back up.
    pub(super) async fn last_upsize(
        &self,
        group: &ReplicationGroupId,
    ) -> Result<Option<Run>, crate::workflow::ports::StoreError> {
        match self.store.last_success(group).await? {
            Some(r) if r.trigger.direction() == Direction::Up => Ok(Some(r)),
            None => Ok(None),
            Some(_) => Ok(self
                .store
                .recent_runs(Some(group), RUNS_LOOKED_AT)
                .await?
                .into_iter()
                .find(|r| {
                    r.trigger.direction() == Direction::Up
                        && matches!(r.outcome(), Some(Outcome::Succeeded { .. }))
                })),
        }
    }

    /// Groups the scale-down check looks at.
    pub fn scale_down_groups(&self) -> Vec<ReplicationGroupId> {
        self.config
            .groups
            .iter()
            .filter(|(_, g)| g.policy.scale_down == ScaleDownMode::Suggest)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// One pass over the groups with `scale_down = "suggest"`; what came of each.
    pub async fn scale_down_once(&self) -> Vec<(ReplicationGroupId, Checked)> {
        let mut out = Vec::new();
        for id in self.scale_down_groups() {
            let checked = self.scale_down_group(&id).await;
            match &checked {
                Checked::Suggested(run) => {
                    self.metrics.watch("scale_down", "suggested");
                    tracing::info!(group = %id, run = %run, "scale-down suggested")
                }
                Checked::Not(why) => {
                    self.metrics.watch("scale_down", "not_now");
                    tracing::debug!(group = %id, why = %why, "scale-down check")
                }
            }
            out.push((id, checked));
        }
        out
    }

    async fn scale_down_group(&self, id: &ReplicationGroupId) -> Checked {
        let not = |why: String| Checked::Not(why);
        let Some(memory) = self.memory.as_ref() else {
            return not("no CloudWatch reader".into());
        };
        let Some(gc) = self.group(id) else {
            return not("not managed".into());
        };
        let policy = &gc.policy;
        let now = self.clock.now();
        match self.store.active_run(id).await {
            Ok(Some(run)) => return not(format!("run {} is active", run.id)),
            Ok(None) => {}
            Err(e) => return not(format!("store: {e}")),
        }
        let runs = match self.store.recent_runs(Some(id), RUNS_LOOKED_AT).await {
            Ok(runs) => runs,
            Err(e) => return not(format!("store: {e}")),
        };
        let last_change = last_change(&runs);
        if let Some(why) = held_off(&runs, policy, now) {
            return not(why);
        }
        let since =
            Timestamp::from_millis(now.as_millis() - policy.scale_down_window.as_millis() as i64);
        match self.store.last_alarm(id, since).await {
            Ok(Some(a)) => {
                return not(format!(
                    "the alarm `{}` fired {} ago",
                    a.name,
                    format_duration(now.since(a.at))
                ));
            }
            Ok(None) => {}
            Err(e) => return not(format!("store: {e}")),
        }
        let aws = self.aws(id);
        let group = match aws.describe_group(id).await {
            Ok(g) => g,
            Err(e) => return not(format!("DescribeReplicationGroups: {e}")),
        };
        if !group.is_available() {
            return not(format!("the group is {}", group.status));
        }
        let Some(from) = group.node_type.clone() else {
            return not("AWS did not say the node type".into());
        };
        let allowed = match aws.allowed_scale_downs(id).await {
            Ok(a) => a,
            Err(e) => return not(format!("ListAllowedNodeTypeModifications: {e}")),
        };
        let Some(to) = prev_in_family(&from, &allowed).cloned() else {
            return not(format!("AWS lists no smaller {} size", from.family()));
        };
        if let Some(min) = &policy.min_node_type
            && !crate::domain::node_types::within_cap(min, &to).unwrap_or(false)
        {
            return not(format!("{to} is below min_node_type ({min})"));
        }
        let (Some(big), Some(small)) = (lookup(&from), lookup(&to)) else {
            return not(format!("the memory of {from} or {to} is not known here"));
        };
        let window = policy.scale_down_window;
        let series = recent(
            memory.as_ref(),
            id,
            group.members.clone(),
            window,
            now,
            Duration::from_secs(10),
        );
        let series = match series.await {
            Ok(s) => s,
            Err(e) => return not(format!("GetMetricData: {e}")),
        };
        let readings = match Readings::of(&series, group.members.len(), window, now) {
            Ok(r) => r,
            Err(why) => return not(why),
        };
        let peak_on_smaller = readings.peak * big.memory_gib / small.memory_gib;
        if peak_on_smaller >= policy.scale_down_below {
            return not(format!(
                "peak {:.1} % on {from} would be {peak_on_smaller:.1} % on {to} (limit {:.0} %)",
                readings.peak, policy.scale_down_below
            ));
        }
        let evidence = ScaleDownEvidence {
            from,
            to,
            peak: round2(readings.peak),
            average: round2(readings.average),
            peak_on_smaller: round2(peak_on_smaller),
            below: policy.scale_down_below,
            verify_below: policy.scale_down_verify_below,
            window,
            points: readings.points,
            since_change: last_change.map(|t| Duration::from_secs(now.since(t).as_secs())),
        };
        let trigger = Trigger::ScaleDown { at: now, evidence };
        match self.start_run(id, None, trigger).await {
            // Counted with the runs too: `redis_autoscaler_runs_started_total{trigger="scale_down"}`.
            Ok(Started::Created(run)) => Checked::Suggested(run),
            Ok(Started::AlreadyActive(run)) => not(format!("run {run} is active")),
            Err(e) => not(format!("not started: {e}")),
        }
    }
}

/// Two decimals: what the card shows, and what a stored run reads back exactly.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// When the bot last changed, or may have changed, the group's size: the end of its last run
/// that asked AWS to modify it, whatever the outcome (an upsize that timed out may have been
/// finished by AWS; one that failed may have moved the group for a while).
fn last_change(runs: &[Run]) -> Option<Timestamp> {
    runs.iter()
        .filter(|r| r.step(Step::Upsize).is_some())
        .filter_map(|r| r.finished_at())
        .max()
}

/// Why the group is not checked now, from its recent runs (newest first): within the cooldown
/// or `scale_down_after` of its last change, or of the last suggestion shown, or snoozed.
fn held_off(
    runs: &[Run],
    policy: &crate::workflow::policy::Policy,
    now: Timestamp,
) -> Option<String> {
    if let Some(t) = last_change(runs) {
        // And the whole window after it: readings from before the change were on another
        // type, and would read as if on this one.
        let wait = policy
            .scale_down_after
            .max(policy.cooldown)
            .max(policy.scale_down_window);
        let ago = now.since(t);
        if ago < wait {
            return Some(format!(
                "changed {} ago (scale_down_after / cooldown / scale_down_window: {})",
                format_duration(ago),
                format_duration(wait)
            ));
        }
    }
    let last = runs
        .iter()
        .find(|r| matches!(r.trigger, Trigger::ScaleDown { .. }))?;
    let ended = last.finished_at()?;
    match last.outcome()? {
        Outcome::Snoozed { until, .. } if now < *until => {
            Some(format!("snoozed until {}", until.to_rfc3339()))
        }
        Outcome::Snoozed { .. } => None,
        // Withdrawn because the group had to go up: not again for `scale_down_after`.
        Outcome::NothingToDo { reason } if reason.starts_with("withdrawn:") => {
            (now.since(ended) < policy.scale_down_after).then(|| {
                format!(
                    "the last suggestion ({}) was {} {} ago",
                    last.id,
                    reason,
                    format_duration(now.since(ended))
                )
            })
        }
        // A suggestion that could not even be planned was never shown: look again next time.
        Outcome::NothingToDo { .. }
        | Outcome::Failed {
            step: Step::Plan, ..
        } => None,
        other if now.since(ended) < policy.scale_down_after => Some(format!(
            "the last suggestion ({}) ended {} {} ago",
            last.id,
            other.name(),
            format_duration(now.since(ended))
        )),
        _ => None,
    }
}

/// The window's readings, reduced to what the check judges.
#[derive(Debug, Clone, PartialEq)]
struct Readings {
    /// The highest reading of any node.
    peak: f64,
    /// The mean of every reading.
    average: f64,
    points: usize,
}

impl Readings {
    /// Every member must have readings covering the window (the first within its first
    /// tenth): a gap in history is "don't know", never "low".
    fn of(
        series: &[crate::workflow::ports::NodeSeries],
        members: usize,
        window: Duration,
        now: Timestamp,
    ) -> Result<Readings, String> {
        if members == 0 || series.len() < members {
            return Err(format!(
                "CloudWatch has readings for {} of {members} node(s)",
                series.iter().filter(|s| !s.points.is_empty()).count()
            ));
        }
        let start = now.as_millis() - window.as_millis() as i64;
        let latest_first = start + (window.as_millis() as f64 * (1.0 - COVERAGE)) as i64;
        // One reading a period, as the query asks for them.
        let period = crate::workflow::ports::memory::period_for(window);
        let expected = window.as_secs_f64() / period.as_secs_f64().max(60.0);
        let mut values = Vec::new();
        for s in series {
            let finite: Vec<(Timestamp, f64)> = s
                .points
                .iter()
                .filter(|(_, v)| v.is_finite())
                .copied()
                .collect();
            let Some((first, _)) = finite.first() else {
                return Err(format!("no readings for {} in the window", s.node));
            };
            if first.as_millis() > latest_first {
                return Err(format!(
                    "{} has only {} of history (the window is {})",
                    s.node,
                    format_duration(now.since(*first)),
                    format_duration(window)
                ));
            }
            // Nor a node CloudWatch went quiet about, or one with holes in its history.
            let last = finite.last().map(|(t, _)| *t).unwrap_or(*first);
            // (CloudWatch's newest reading is a period or two old.)
            let tail = (latest_first - start).max(3 * period.as_millis() as i64);
            if now.as_millis() - last.as_millis() > tail {
                return Err(format!(
                    "no reading for {} in the last {}",
                    s.node,
                    format_duration(now.since(last))
                ));
            }
            if (finite.len() as f64) < expected * COVERAGE {
                return Err(format!(
                    "{} has {} of about {expected:.0} readings in the window",
                    s.node,
                    finite.len()
                ));
            }
            values.extend(finite.into_iter().map(|(_, v)| v));
        }
        let peak = values.iter().copied().fold(f64::MIN, f64::max);
        let average = values.iter().sum::<f64>() / values.len() as f64;
        Ok(Readings {
            peak,
            average,
            points: values.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CacheClusterId;
    use crate::workflow::ports::NodeSeries;

    fn t(min: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + min * 60_000)
    }

    fn node(name: &str, from_min: i64, values: &[f64]) -> NodeSeries {
        NodeSeries {
            node: CacheClusterId::parse(name).unwrap(),
            points: values
                .iter()
                .enumerate()
                .map(|(i, v)| (t(from_min + i as i64), *v))
                .collect(),
        }
    }

    #[test]
    fn the_peak_is_the_highest_reading_of_any_node_and_history_must_cover_the_window() {
        let window = Duration::from_secs(10 * 60);
        let now = t(10);
        let low = node("g-001", 0, &[20.0; 10]);
        let spike = node(
            "g-002",
            0,
            &[20.0, 20.0, 61.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0],
        );
        let r = Readings::of(&[low.clone(), spike], 2, window, now).unwrap();
        assert_eq!(r.peak, 61.0);
        assert_eq!(r.points, 20);
        assert!((r.average - 22.05).abs() < 1e-9, "{}", r.average);
        // A node that joined halfway has no week-long peak: don't know, not low.
        let late = node("g-002", 5, &[20.0; 5]);
        let err = Readings::of(&[low.clone(), late], 2, window, now).unwrap_err();
        assert!(err.contains("history"), "{err}");
        // A member CloudWatch has nothing for.
        let err = Readings::of(&[low], 2, window, now).unwrap_err();
        assert!(err.contains("1 of 2"), "{err}");
        let nan = node("g-001", 0, &[f64::NAN; 10]);
        assert!(Readings::of(&[nan], 1, window, now).is_err());
    }
}
