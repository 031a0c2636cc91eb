//! The application: configuration, the runner and the directory of approvers wired together,
//! with the operations the HTTP endpoints (and the demo) call.
//!
//! Operations here return quickly: they validate, commit a run or an event to the store, and
//! leave the slow work (AWS, Slack, PagerDuty) to the runner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::alarm::sns::{ReqwestSnsHttp, SnsHttp, SnsVerifier};
use crate::alarm::{Alarm, AlarmState};
use crate::domain::{CacheClusterId, ChannelId, Timestamp};
use crate::slack::{Message, blocks};
use crate::workflow::policy::{AlarmAction, on_alarm};

use crate::config::Config;
use crate::domain::{NodeType, ReplicationGroupId, RunId, SlackUserId};
use crate::hooks::HookClient;
use crate::pagerduty::PagerDutyClient;
use crate::slack::api::SlackClient;
use crate::slack::approvers::ApproverDirectory;
use crate::store::{Store, StoreError};
use crate::workflow::event::{Actor, Event};
use crate::workflow::ports::ElastiCache;
use crate::workflow::run::Trigger;
use crate::workflow::runner::{
    Deps, Runner, RunnerError, RunnerOptions, StartRequest, Started, Submitted,
};

/// The running bot.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub runner: Runner,
    pub approvers: Arc<ApproverDirectory>,
    /// Verifies SNS deliveries (and confirms subscriptions).
    pub sns: Arc<SnsVerifier>,
    /// Cache cluster → replication group, learned from DescribeCacheClusters.
    cluster_groups: Arc<Mutex<HashMap<CacheClusterId, ReplicationGroupId>>>,
}

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
        }
    }
}

/// Why a run could not be started. Each is the user's mistake, said so they can fix it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("`{0}` is not a group this bot manages. Managed groups: {1}.")]
    UnknownGroup(ReplicationGroupId, String),
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

/// A person's decision on a run.
#[derive(Debug, Clone, PartialEq)]
pub enum UserAction {
    Approve,
    Deny,
    Cancel,
    ChooseSize(NodeType),
}

impl App {
    /// Wire the app from a validated config and an ElastiCache implementation.
    pub fn new(
        config: Config,
        store: Arc<Store>,
        aws: Arc<dyn ElastiCache>,
        options: RunnerOptions,
    ) -> App {
        // Metrics are recorded from the first moment on.
        crate::telemetry::prometheus();
        let http = crate::http_client::build(config.delivery.timeout);
        let token = config
            .secrets
            .slack_bot_token
            .clone()
            .unwrap_or_else(|| crate::domain::Secret::new(""));
        let slack = SlackClient::new(config.endpoints.slack_api_url.clone(), token, http.clone());
        let routing_key = config
            .secrets
            .pagerduty_routing_key
            .clone()
            .unwrap_or_else(|| crate::domain::Secret::new(""));
        let pagerduty = PagerDutyClient::new(
            config.endpoints.pagerduty_events_url.clone(),
            routing_key,
            http.clone(),
        );
        let hooks = HookClient::new(http, config.secrets.hook_signing_secret.clone());
        let approvers = Arc::new(ApproverDirectory::new(
            config.slack.approvers.clone(),
            slack.clone(),
        ));
        let aws: Arc<dyn ElastiCache> = Arc::new(crate::elasticache::Metered(aws));
        let runner = Runner::new(
            Deps {
                store,
                aws,
                slack,
                pagerduty,
                hooks,
                delivery: config.delivery,
            },
            options,
        );
        let sns = Arc::new(SnsVerifier::new(Arc::new(ReqwestSnsHttp(
            crate::http_client::build(Duration::from_secs(10)),
        ))));
        App {
            config: Arc::new(config),
            runner,
            approvers,
            sns,
            cluster_groups: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Use another way to reach SNS (tests: a stand-in that records requests).
    pub fn with_sns_http(mut self, http: Arc<dyn SnsHttp>) -> App {
        self.sns = Arc::new(SnsVerifier::new(http));
        self
    }

    /// Run store work off the async threads (SQLite calls block).
    pub async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, RunnerError> {
        let store = self.runner.store().clone();
        Ok(crate::workflow::runner::blocking(move || f(&store)).await??)
    }

    /// Handle a CloudWatch alarm (from EventBridge or SNS): start a run, note it on the active
    /// run, or explain why not. Deliveries are idempotent: a retry changes nothing.
    pub async fn handle_alarm(&self, alarm: Alarm) -> Result<AlarmOutcome, RunnerError> {
        if !alarm
            .description
            .starts_with(&self.config.alarms.description_prefix)
        {
            return Ok(AlarmOutcome::Ignored(format!(
                "the alarm description does not start with `{}`",
                self.config.alarms.description_prefix
            )));
        }
        let delivery = alarm.delivery_id.clone();
        if self.store(move |s| s.alarm_seen(&delivery)).await? {
            crate::telemetry::alarm("duplicate");
            return Ok(AlarmOutcome::Duplicate);
        }
        let group = match self.group_for(&alarm).await {
            Some(g) => g,
            None => {
                let outcome = if alarm.state == AlarmState::Alarm {
                    AlarmOutcome::UnknownGroup
                } else {
                    AlarmOutcome::Ignored("the alarm maps to no managed group".into())
                };
                // Claim the delivery before saying anything, so concurrent retries say it once.
                if self.record(&alarm, None, &outcome).await?
                    && outcome == AlarmOutcome::UnknownGroup
                {
                    self.post_notice(
                        &self.config.slack.channel,
                        blocks::render_unknown_group_notice(&alarm),
                    );
                }
                return Ok(outcome);
            }
        };
        let gc = self
            .config
            .group(&group)
            .expect("group_for returns managed groups")
            .clone();
        let now = Timestamp::now();
        let g = group.clone();
        let (active, last) = self
            .store(move |s| Ok((s.active_run(&g)?, s.last_success(&g)?)))
            .await?;
        let outcome = match on_alarm(
            alarm.state,
            active.as_ref(),
            last.as_ref(),
            gc.policy.cooldown,
            now,
        ) {
            AlarmAction::Ignore(why) => AlarmOutcome::Ignored(why),
            AlarmAction::Repeat(run) => self.repeat(&run, &alarm).await?,
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
                let outcome = AlarmOutcome::Cooldown(group.clone());
                // Claim the delivery before saying anything, so concurrent retries say it once.
                if self.record(&alarm, Some(&group), &outcome).await? {
                    self.post_notice(
                        &gc.channel,
                        blocks::render_cooldown_notice(&gc.id, &alarm, &last, since, remaining),
                    );
                }
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
                match self.start_run(&group, None, trigger).await {
                    Ok(Started::Created(id)) => AlarmOutcome::Started(id),
                    // Another delivery won the race: this one is a repeat on that run.
                    Ok(Started::AlreadyActive(id)) => self.repeat(&id, &alarm).await?,
                    Err(StartError::Runner(e)) => return Err(e),
                    Err(StartError::UnknownGroup(..)) => AlarmOutcome::UnknownGroup,
                }
            }
        };
        self.record(&alarm, Some(&group), &outcome).await?;
        Ok(outcome)
    }

    async fn repeat(&self, run: &RunId, alarm: &Alarm) -> Result<AlarmOutcome, RunnerError> {
        let event = Event::AlarmRepeated {
            delivery_id: alarm.delivery_id.clone(),
            reason: alarm.reason.clone(),
            value: alarm.value,
        };
        Ok(match self.runner.submit(run, event).await? {
            Submitted::Ignored(_) => AlarmOutcome::Duplicate,
            _ => AlarmOutcome::Repeated(run.clone()),
        })
    }

    /// Log what a delivery did; false if this delivery was logged before.
    async fn record(
        &self,
        alarm: &Alarm,
        group: Option<&ReplicationGroupId>,
        outcome: &AlarmOutcome,
    ) -> Result<bool, RunnerError> {
        crate::telemetry::alarm(outcome.name());
        let state = match alarm.state {
            AlarmState::Alarm => "ALARM",
            AlarmState::Ok => "OK",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        };
        let (delivery, at, name) = (alarm.delivery_id.clone(), alarm.at, alarm.name.clone());
        let (group, outcome) = (group.cloned(), outcome.name());
        self.store(move |s| s.record_alarm(&delivery, at, &name, state, group.as_ref(), outcome))
            .await
    }

    /// Which managed group an alarm is about: an explicit mapping by alarm name, the
    /// `ReplicationGroupId` dimension, or the `CacheClusterId` dimension's group (asked of AWS).
    async fn group_for(&self, alarm: &Alarm) -> Option<ReplicationGroupId> {
        let managed = |g: ReplicationGroupId| self.config.group(&g).is_some().then_some(g);
        if let Some(g) = self.config.alarms.groups.get(&alarm.name) {
            return managed(g.clone());
        }
        if let Some(g) = alarm
            .dimension("ReplicationGroupId")
            .and_then(|g| ReplicationGroupId::parse(g).ok())
        {
            return managed(g);
        }
        let cluster = alarm
            .dimension("CacheClusterId")
            .and_then(|c| CacheClusterId::parse(c).ok())?;
        let known = self.lock_clusters().get(&cluster).cloned();
        if let Some(g) = known {
            return managed(g);
        }
        match self.runner.aws().describe_cache_cluster(&cluster).await {
            Ok(info) => {
                let g = info.replication_group?;
                self.lock_clusters().insert(cluster, g.clone());
                managed(g)
            }
            Err(e) => {
                tracing::warn!(cluster = %cluster, error = %e, "could not find the cache cluster's group");
                None
            }
        }
    }

    fn lock_clusters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<CacheClusterId, ReplicationGroupId>> {
        self.cluster_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Post a message that belongs to no run (a cooldown or unknown-group notice), in the
    /// background, with a few retries.
    fn post_notice(&self, channel: &ChannelId, msg: Message) {
        let slack = self.runner.slack().clone();
        let channel = channel.clone();
        let retry = self.config.delivery.retry;
        tokio::spawn(async move {
            for attempt in 1..=retry.attempts {
                match slack.post_message(&channel, None, &msg).await {
                    Ok(_) => return,
                    Err(e) if e.is_retryable() && attempt < retry.attempts => {
                        let wait = e
                            .retry_after()
                            .unwrap_or_else(|| retry.delay_before(attempt + 1));
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => {
                        tracing::error!(channel = %channel, error = %e, "could not post a notice");
                        return;
                    }
                }
            }
        });
    }

    /// Start a run for a managed group.
    pub async fn start_run(
        &self,
        group: &ReplicationGroupId,
        requested_type: Option<NodeType>,
        trigger: Trigger,
    ) -> Result<Started, StartError> {
        let Some(gc) = self.config.group(group) else {
            return Err(StartError::UnknownGroup(
                group.clone(),
                self.managed_groups(),
            ));
        };
        let started = self
            .runner
            .start(StartRequest {
                group: group.clone(),
                channel: gc.channel.clone(),
                trigger,
                requested_type,
                policy: gc.policy.clone(),
            })
            .await?;
        Ok(started)
    }

    /// A person acts on a run: the approver check happens here, the rules in the machine.
    pub async fn act(
        &self,
        run: &RunId,
        user: &SlackUserId,
        action: UserAction,
    ) -> Result<Submitted, RunnerError> {
        let actor = Actor {
            user: user.clone(),
            is_approver: self.approvers.is_approver(user).await,
        };
        self.act_as(run, actor, action).await
    }

    /// A person acts on a run, with the approver check already done.
    pub async fn act_as(
        &self,
        run: &RunId,
        actor: Actor,
        action: UserAction,
    ) -> Result<Submitted, RunnerError> {
        let event = match action {
            UserAction::Approve => Event::Approve { actor },
            UserAction::Deny => Event::Deny { actor },
            UserAction::Cancel => Event::Cancel { actor },
            UserAction::ChooseSize(node_type) => Event::ChooseSize { actor, node_type },
        };
        self.runner.submit(run, event).await
    }

    /// Managed groups, for error messages.
    pub fn managed_groups(&self) -> String {
        let names: Vec<&str> = self.config.groups.keys().map(|g| g.as_str()).collect();
        if names.is_empty() {
            "none configured".into()
        } else {
            names.join(", ")
        }
    }

    /// Run the workflow runner until `shutdown`.
    pub async fn run_workflows(self, shutdown: impl std::future::Future<Output = ()>) {
        // Keep approver user groups fresh, so clicks are decided without waiting on Slack.
        let approvers = self.approvers.clone();
        let refresher = tokio::spawn(async move {
            if !approvers.has_groups() {
                return;
            }
            loop {
                approvers.refresh().await;
                tokio::time::sleep(Duration::from_secs(240)).await;
            }
        });
        self.runner
            .clone()
            .run(shutdown, Duration::from_secs(20))
            .await;
        refresher.abort();
    }
}
