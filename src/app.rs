//! The application: configuration, the runner and the directory of approvers wired together,
//! with the operations the HTTP endpoints (and the demo) call.
//!
//! Operations here return quickly: they validate, commit a run or an event to the store, and
//! leave the slow work (AWS, Slack, PagerDuty) to the runner.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::domain::{NodeType, ReplicationGroupId, RunId, SlackUserId};
use crate::elasticache::ElastiCache;
use crate::hooks::HookClient;
use crate::pagerduty::PagerDutyClient;
use crate::slack::api::SlackClient;
use crate::slack::approvers::ApproverDirectory;
use crate::store::Store;
use crate::workflow::machine::{Actor, Event};
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
        App {
            config: Arc::new(config),
            runner,
            approvers,
        }
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
