//! Handle a CloudWatch alarm (from EventBridge or SNS, already verified and parsed): start a
//! run, note it on the group's active run, or say why not. Deliveries are idempotent: a retry
//! of one changes nothing.

use crate::domain::alarm::{Alarm, AlarmState};
use crate::domain::{CacheClusterId, ChannelId, ReplicationGroupId, RunId};
use crate::workflow::event::Event;
use crate::workflow::machine::{Started, Submitted, withdrawable};
use crate::workflow::policy::{AlarmAction, on_alarm};
use crate::workflow::ports::{AlarmRecord, AwsError, WindowedNotice};
use crate::workflow::run::Trigger;

use super::jobs::Job;
use super::requests::Start;
use super::{App, AppError, Notice};
use crate::workflow::ports::fleet::Place;

/// What an alarm delivery did.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmOutcome {
    /// Not ours, or nothing to do; the reason is in the answer.
    Ignored(String),
    /// A retry of a delivery already handled.
    Duplicate,
    Started(RunId),
    /// Noted on the group's active run.
    Repeated(RunId),
    Cleared(RunId),
    /// Within the cooldown: a notice was posted with a "start anyway" button.
    Cooldown(ReplicationGroupId),
    /// The alarm maps to no group this bot manages; posted to the channel as such.
    UnknownGroup,
    /// The alarm is from another region or account than the bot's groups: refused, posted.
    Foreign,
}

impl AlarmOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            AlarmOutcome::Ignored(_) => "ignored",
            AlarmOutcome::Duplicate => "duplicate",
            AlarmOutcome::Started(_) => "started",
            AlarmOutcome::Repeated(_) => "repeated",
            AlarmOutcome::Cleared(_) => "cleared",
            AlarmOutcome::Cooldown(_) => "cooldown",
            AlarmOutcome::UnknownGroup => "unknown_group",
            AlarmOutcome::Foreign => "foreign",
        }
    }
}

impl App {
    /// Handle a CloudWatch alarm state change.
    pub async fn handle_alarm(&self, alarm: Alarm) -> Result<AlarmOutcome, AppError> {
        let prefix = &self.config.alarms.description_prefix;
        if !alarm.description.starts_with(prefix) {
            return Ok(AlarmOutcome::Ignored(format!(
                "the alarm description does not start with `{prefix}`"
            )));
        }
        if self.store.alarm_seen(&alarm.delivery_id).await? {
            self.metrics.alarm("duplicate");
            return Ok(AlarmOutcome::Duplicate);
        }
        // An alarm from an account or region the bot manages no group in is about some other
        // group, whatever its id: nothing is asked of AWS for it, and the channel is told.
        let Some(place) = self
            .fleet
            .find_place(alarm.account.as_deref(), alarm.region.as_deref())
            .cloned()
        else {
            let elsewhere = format!(
                "{}/{}",
                alarm.region.as_deref().unwrap_or("?"),
                alarm.account.as_deref().unwrap_or("?")
            );
            tracing::warn!(alarm = %alarm.name, elsewhere = %elsewhere, "refused an alarm from another region or account");
            let home: Place = self.home.clone().into();
            let others = self.fleet.places().into_iter().filter(|p| *p != home);
            let notice = Notice::Foreign {
                alarm: alarm.clone(),
                others: others.collect(),
                home,
            };
            let key = format!("foreign:{elsewhere}:{}", alarm.name);
            let notice = (&self.config.slack.channel, key, notice);
            let outcome = AlarmOutcome::Foreign;
            self.record(&alarm, None, &outcome, Some(notice)).await?;
            return Ok(outcome);
        };
        let Some(group) = self.group_for(&alarm, &place).await? else {
            if alarm.state != AlarmState::Alarm {
                let outcome = AlarmOutcome::Ignored("the alarm maps to no managed group".into());
                self.record(&alarm, None, &outcome, None).await?;
                return Ok(outcome);
            }
            // The delivery and its notice are written together, so concurrent retries say it
            // once; within the window, further alarms about the same group count on it.
            let about = ["ReplicationGroupId", "CacheClusterId"]
                .iter()
                .find_map(|d| alarm.dimension(d))
                .unwrap_or(&alarm.name);
            let key = format!("unknown_group:{about}");
            let notice = Notice::UnknownGroup {
                alarm: alarm.clone(),
            };
            let notice = (&self.config.slack.channel, key, notice);
            let outcome = AlarmOutcome::UnknownGroup;
            self.record(&alarm, None, &outcome, Some(notice)).await?;
            return Ok(outcome);
        };
        let gc = self
            .group(&group)
            .expect("group_for returns managed groups")
            .clone();
        let mut active = self.store.active_run(&group).await?;
        // A scale-down suggestion gives way to the alarm: withdrawn first (its thread says
        // why), then the alarm is handled as if no run were active. Nothing is recorded until
        // then, so a crash in between, or a withdrawal still resuming the workers, leaves the
        // delivery to come again (5xx) and start the alarm's run.
        if alarm.state == crate::domain::alarm::AlarmState::Alarm
            && let Some(run) = active
                .as_ref()
                .filter(|r| matches!(r.trigger, Trigger::ScaleDown { .. }))
        {
            let reason = format!("the memory alarm `{}` fired", alarm.name);
            let wait = std::time::Duration::from_secs(3);
            if !self.give_way(run, &reason, wait).await? && withdrawable(run) {
                // Still resuming the workers: not taken now, so that it comes again.
                return Err(AppError::Busy(format!(
                    "{group}'s scale-down suggestion {} is being withdrawn",
                    run.id
                )));
            }
            active = self.store.active_run(&group).await?;
        }
        let last = self.last_upsize(&group).await?;
        let now = self.clock.now();
        let action = on_alarm(
            alarm.state,
            active.as_ref(),
            last.as_ref(),
            gc.policy.cooldown,
            now,
        );
        let outcome = match action {
            AlarmAction::Ignore(why) => AlarmOutcome::Ignored(why),
            AlarmAction::Repeat(run) => self.repeat(&run, &group, &alarm).await?,
            AlarmAction::Clear(run) => {
                let event = Event::AlarmCleared {
                    delivery_id: alarm.delivery_id.clone(),
                    reason: alarm.reason.clone(),
                };
                self.runner.submit(&run, event).await?;
                AlarmOutcome::Cleared(run)
            }
            AlarmAction::Cooldown {
                last,
                since,
                remaining,
            } => {
                let notice = Notice::Cooldown {
                    group: gc.id.clone(),
                    alarm: alarm.clone(),
                    last,
                    since,
                    remaining,
                };
                let notice = (&gc.channel, format!("cooldown:{group}"), notice);
                let outcome = AlarmOutcome::Cooldown(group.clone());
                self.record(&alarm, Some(&group), &outcome, Some(notice))
                    .await?;
                return Ok(outcome);
            }
            AlarmAction::Start => {
                let trigger = Trigger::Alarm {
                    delivery_id: alarm.delivery_id.clone(),
                    alarm_name: alarm.name.clone(),
                    reason: alarm.reason.clone(),
                    value: alarm.value,
                    at: alarm.at,
                };
                match self.start(&group, None, trigger, false).await? {
                    Start::Started(Started::Created(id)) => AlarmOutcome::Started(id),
                    // Another delivery won the race: this one is a repeat on that run.
                    Start::Started(Started::AlreadyActive(id)) => {
                        self.repeat(&id, &group, &alarm).await?
                    }
                    Start::UnknownGroup => AlarmOutcome::UnknownGroup,
                }
            }
        };
        // A repeat noted on its run was recorded in the same commit.
        if !matches!(outcome, AlarmOutcome::Repeated(_)) {
            self.record(&alarm, Some(&group), &outcome, None).await?;
        }
        Ok(outcome)
    }

    /// Note the alarm on the group's active run, recording the delivery in the same commit.
    async fn repeat(
        &self,
        run: &RunId,
        group: &ReplicationGroupId,
        alarm: &Alarm,
    ) -> Result<AlarmOutcome, AppError> {
        let event = Event::AlarmRepeated {
            delivery_id: alarm.delivery_id.clone(),
            reason: alarm.reason.clone(),
            value: alarm.value,
        };
        let repeated = AlarmOutcome::Repeated(run.clone());
        let record = alarm_record(alarm, Some(group), &repeated);
        Ok(match self.runner.submit_alarm(run, event, record).await? {
            Submitted::Accepted(_) => {
                self.metrics.alarm(repeated.name());
                repeated
            }
            Submitted::Ignored(_) => AlarmOutcome::Duplicate,
            Submitted::Rejected(why) => AlarmOutcome::Ignored(why.to_string()),
        })
    }

    /// Log what a delivery did, with the notice it leaves (in `channel`, once per window of
    /// `key`); false if it was logged before.
    async fn record(
        &self,
        alarm: &Alarm,
        group: Option<&ReplicationGroupId>,
        outcome: &AlarmOutcome,
        notice: Option<(&ChannelId, String, Notice)>,
    ) -> Result<bool, AppError> {
        self.metrics.alarm(outcome.name());
        let record = alarm_record(alarm, group, outcome);
        let now = self.clock.now();
        let alarms = &self.config.alarms;
        let notice = match notice {
            None => None,
            Some((channel, key, notice)) => Some(WindowedNotice {
                post: Job::Notice {
                    channel: channel.clone(),
                    notice: notice.clone(),
                    window: Some(key.clone()),
                }
                .into_new(now)?,
                update: Job::NoticeRepeated {
                    channel: channel.clone(),
                    notice,
                    window: key.clone(),
                }
                .into_new(now.plus(alarms.notice_update_delay))?,
                key,
                window: alarms.notice_window,
            }),
        };
        let new = self.store.record_alarm(record, notice).await?;
        self.jobs_added.notify_one();
        Ok(new)
    }

    /// Which managed group an alarm is about: an explicit mapping by alarm name, the
    /// `ReplicationGroupId` dimension, or the `CacheClusterId` dimension's group (asked of AWS),
    /// among the groups in the alarm's account and region (`place`). When AWS can't be asked
    /// right now (the port has tried a throttled read again already), the delivery is not
    /// taken, so that its sender delivers it again: an alarm is never dropped because of a
    /// throttled look-up.
    async fn group_for(
        &self,
        alarm: &Alarm,
        place: &Place,
    ) -> Result<Option<ReplicationGroupId>, AppError> {
        let managed = |g: Option<ReplicationGroupId>| {
            Ok(g.filter(|g| self.group(g).is_some() && self.fleet.place_of(g) == place))
        };
        if let Some(g) = self.config.alarms.groups.get(&alarm.name) {
            return managed(Some(g.clone()));
        }
        if let Some(id) = alarm
            .dimension("ReplicationGroupId")
            .and_then(|g| ReplicationGroupId::parse(g).ok())
        {
            return managed(self.fleet.named(place, &id));
        }
        let Some(cluster) = alarm
            .dimension("CacheClusterId")
            .and_then(|c| CacheClusterId::parse(c).ok())
        else {
            return Ok(None);
        };
        let key = (place.clone(), cluster);
        let known = self.clusters().get(&key).cloned();
        if let Some(g) = known {
            return managed(Some(g));
        }
        let Some(aws) = self.fleet.aws_at(place) else {
            return Ok(None);
        };
        match aws.describe_cache_cluster(&key.1).await {
            Ok(info) => {
                let Some(id) = info.replication_group else {
                    return Ok(None);
                };
                let Some(g) = self.fleet.named(place, &id) else {
                    return Ok(None);
                };
                self.clusters().insert(key, g.clone());
                managed(Some(g))
            }
            Err(AwsError::NotFound { .. }) => Ok(None),
            Err(e) => {
                tracing::warn!(cluster = %key.1, error = %e, "could not look up the cache cluster's group; the delivery is refused so that it comes again");
                Err(AppError::AwsUnavailable(e.to_string()))
            }
        }
    }

    fn clusters(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<(Place, CacheClusterId), ReplicationGroupId>,
    > {
        self.cluster_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// What the alarm log keeps of a delivery.
fn alarm_record(
    alarm: &Alarm,
    group: Option<&ReplicationGroupId>,
    outcome: &AlarmOutcome,
) -> AlarmRecord {
    AlarmRecord {
        delivery_id: alarm.delivery_id.clone(),
        at: alarm.at,
        name: alarm.name.clone(),
        state: alarm.state.as_str().to_string(),
        group: group.map(|g| g.to_string()),
        outcome: outcome.name().to_string(),
    }
}
