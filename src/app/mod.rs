//! The use cases: what a person or an alarm can ask of the bot, whatever the transport.
//!
//! - [`alarms`]: handle a CloudWatch alarm — start a run, note it on the active run, or say
//!   why not.
//! - [`requests`]: what people ask — start a run, act on a run (approve, deny, choose a size,
//!   cancel), status, dry run, the list of runs.
//! - [`answer`]: what the use cases say back, as data ([`Answer`], [`Notice`]); transports render
//!   it (Slack: `slack::answers`).
//! - [`jobs`]: work a request leaves behind — a notice, an answer that needs a slow call first
//!   or has to be delivered later — kept in the store's outbox and done by the job worker, so
//!   nothing is lost when the process stops.
//!
//! A use case returns quickly: it reads the store, commits a run or an event, or leaves a job;
//! AWS and Slack are called by the runner and the job worker, never while a request waits
//! (except to ask who may approve, when that is not known yet: then the decision is a job too).

pub mod alarms;
pub mod answer;
pub mod forecasts;
pub mod jobs;
pub mod requests;
pub mod scale_down;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::{Config, GroupConfig};
use crate::domain::{CacheClusterId, ChannelId, MessageTs, ReplicationGroupId, SlackUserId};
use crate::workflow::ports::fleet::{Fleet, Place};
use tokio::sync::Notify;

use crate::workflow::ports::{
    BoxFuture, Clock, ElastiCache, Failure, Metrics, NoticeSeen, Store, StoreError,
};
use crate::workflow::runner::{Runner, RunnerError};

pub use alarms::AlarmOutcome;
pub use answer::{Answer, Notice};
pub use requests::{Asker, UserAction};

/// Who may approve, and who may start runs: people listed in the config, directly or through a
/// user group whose members are read from Slack (and cached).
pub trait Directory: Send + Sync {
    /// Whether `user` is an approver, without calling out, when the cache can say.
    fn cached_verdict(&self, user: &SlackUserId) -> Option<bool>;
    /// Whether `user` is an approver, asking Slack for a user group's members when needed
    /// (fails closed).
    fn is_approver<'a>(&'a self, user: &'a SlackUserId) -> BoxFuture<'a, bool>;
    /// Whether `user` may start runs, without calling out, when the cache can say.
    fn cached_requester(&self, user: &SlackUserId) -> Option<bool>;
    /// Whether `user` may start runs (fails closed).
    fn is_requester<'a>(&'a self, user: &'a SlackUserId) -> BoxFuture<'a, bool>;
    /// Read every approver user group's members now.
    fn refresh(&self) -> BoxFuture<'_, ()>;
    /// Does the config name any user group (so there is something to refresh)?
    fn has_groups(&self) -> bool;
}

/// How the use cases reach people outside a run: a private answer, a notice in a channel.
pub trait Messenger: Send + Sync {
    fn respond<'a>(
        &'a self,
        response_url: &'a str,
        answer: &'a Answer,
    ) -> BoxFuture<'a, Result<(), Failure>>;

    /// Post a notice (with what its window has seen so far, when it has one); its `ts`. The
    /// notice of a window carries the window's key, and a try that may follow one whose answer
    /// was lost (`again`) looks for it first instead of posting a second one.
    fn post_notice<'a>(
        &'a self,
        channel: &'a ChannelId,
        notice: &'a Notice,
        window: Option<(&'a str, &'a NoticeSeen)>,
        again: bool,
    ) -> BoxFuture<'a, Result<Option<MessageTs>, Failure>>;

    /// Show on a posted notice how often its alarm fired within the window.
    fn update_notice<'a>(
        &'a self,
        channel: &'a ChannelId,
        ts: &'a MessageTs,
        notice: &'a Notice,
        seen: &'a NoticeSeen,
    ) -> BoxFuture<'a, Result<(), Failure>>;
}

/// Where the managed groups are: the bot's own region and account. An alarm from anywhere else
/// is about some other group, whatever its id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Home {
    pub region: Option<String>,
    pub account: Option<String>,
}

/// Something went wrong on the bot's side (the person is told to try again; an alarm's sender
/// is answered 5xx and redelivers).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// AWS could not be asked right now (throttled, a 5xx, the network): the request is not
    /// taken, so that its sender delivers it again.
    #[error("AWS could not be asked now: {0}")]
    AwsUnavailable(String),
    /// The group is changing hands between runs (a suggestion being withdrawn): the request
    /// is not taken now, so that its sender delivers it again.
    #[error("busy: {0}; deliver again")]
    Busy(String),
}

/// The ports the use cases read and count with (the runner has its own).
pub struct AppPorts {
    pub store: Arc<dyn Store>,
    /// Every managed group's ElastiCache verbs, each in its account and region.
    pub fleet: Arc<Fleet>,
    pub directory: Arc<dyn Directory>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<dyn Metrics>,
    /// CloudWatch's memory readings, for `forecast_alert` (none: no forecasts are proposed).
    pub memory: Option<Arc<dyn crate::workflow::ports::MemorySeries>>,
}

/// The use cases, with what they need: the config, the runner, the store, AWS (to read), the
/// approver directory.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub runner: Runner,
    pub store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    directory: Arc<dyn Directory>,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn Metrics>,
    memory: Option<Arc<dyn crate::workflow::ports::MemorySeries>>,
    home: Home,
    /// Cache cluster (in a place) → the managed group's name, learned from
    /// DescribeCacheClusters.
    cluster_groups: Arc<Mutex<HashMap<(Place, CacheClusterId), ReplicationGroupId>>>,
    /// Wakes the job worker when a job is left.
    jobs_added: Arc<Notify>,
}

impl App {
    /// One batch of pruning (see [`Store::prune`]); whether there may be more to prune.
    pub async fn prune_once(&self) -> Result<bool, AppError> {
        let r = self.config.retention;
        let pruned = (self.store.prune(self.clock.now(), r.keep, r.prune_batch)).await?;
        if pruned.total() > 0 {
            tracing::info!(?pruned, "pruned the store");
        }
        Ok(pruned.full(r.prune_batch))
    }

    pub fn new(config: Arc<Config>, runner: Runner, ports: AppPorts, home: Home) -> App {
        let AppPorts {
            store,
            fleet,
            directory,
            clock,
            metrics,
            memory,
        } = ports;
        App {
            config,
            runner,
            store,
            fleet,
            directory,
            clock,
            metrics,
            memory,
            home,
            cluster_groups: Arc::default(),
            jobs_added: Arc::default(),
        }
    }

    /// The time, as the app's clock says.
    pub fn now(&self) -> crate::domain::Timestamp {
        self.clock.now()
    }

    /// A group's ElastiCache verbs, in its account and region.
    fn aws(&self, group: &ReplicationGroupId) -> Arc<dyn ElastiCache> {
        self.fleet.aws(group)
    }

    /// Where a group is, in AWS.
    pub fn place_of(&self, group: &ReplicationGroupId) -> Place {
        self.fleet.place_of(group).clone()
    }

    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    /// What the config says about the managed groups that AWS contradicts, one warning each:
    /// a group that does not exist here, or a `max_node_type` of another family than the group
    /// runs on (no run could ever plan). Read once at start; an unreadable group is skipped
    /// (its runs say why when they happen).
    pub async fn check_groups(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (id, gc) in &self.config.groups {
            match self.aws(id).describe_group(id).await {
                Ok(g) => {
                    if let (Some(current), Some(cap)) = (&g.node_type, &gc.policy.max_node_type)
                        && !cap.same_family(current)
                    {
                        warnings.push(format!(
                            "groups.{id}.max_node_type: {id} runs on {current}, and the cap {cap} is of another family; no run can plan until it is a {} size",
                            current.family()
                        ));
                    }
                }
                Err(crate::workflow::ports::AwsError::NotFound { .. }) => {
                    warnings.push(format!(
                        "groups.{id}: AWS has no replication group {id} in this region and account"
                    ));
                }
                Err(_) => {}
            }
        }
        warnings
    }

    /// Does the bot read CloudWatch's memory series (forecasts, scale-down checks)?
    pub fn reads_memory(&self) -> bool {
        self.memory.is_some()
    }

    fn group(&self, id: &ReplicationGroupId) -> Option<&GroupConfig> {
        self.config.group(id)
    }

    /// Managed groups, for answers.
    fn managed_groups(&self) -> String {
        let names: Vec<&str> = self.config.groups.keys().map(|g| g.as_str()).collect();
        if names.is_empty() {
            "none configured".into()
        } else {
            names.join(", ")
        }
    }
}
