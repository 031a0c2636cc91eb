//! Configuration: the only place that reads the environment and files.
//!
//! The TOML file is walked key by key (not deserialised blindly) so that every mistake is
//! reported at once with its key and line — an unknown key (with a "did you mean"), a value of
//! the wrong type, a duration or node type that doesn't parse. The result is typed: durations,
//! node types and Slack ids are domain values, and a group's policy is fully resolved
//! (`[groups.X]` over `[defaults]` over built-in defaults, key by key).
//!
//! Secrets come only from the environment and are held as [`Secret`], which can't be printed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::domain::{Approver, ChannelId, NodeType, ReplicationGroupId, Secret, parse_duration};

/// One problem in the configuration, located by key and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `groups.prod-jobs.max_node_type`.
    pub key: String,
    /// 1-based line in the file (0 when the problem is not in the file, e.g. the environment).
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: `{}`: {}", self.line, self.key, self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: Option<PathBuf>,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => writeln!(f, "{} has {} error(s):", p.display(), self.issues.len())?,
            None => writeln!(f, "the configuration has {} error(s):", self.issues.len())?,
        }
        for issue in &self.issues {
            writeln!(f, "  - {issue}")?;
        }
        Ok(())
    }
}

pub use crate::workflow::policy::{
    ApprovalMode, OnApprovalTimeout, PendingChanges, Policy, RetryPolicy, ScaleDownMode,
    SnapshotPolicy, SnapshotSource,
};
pub use crate::workflow::ports::Retention;

/// A replication group this bot manages.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupConfig {
    /// The group's name in the bot (its `[groups.<name>]` table): runs, slash commands and
    /// messages use it.
    pub id: ReplicationGroupId,
    /// Where this group's runs are posted.
    pub channel: ChannelId,
    pub policy: Policy,
    /// Its replication group id in AWS, when that is not its name (`id = "…"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_id: Option<ReplicationGroupId>,
    /// The `[accounts.<name>]` it is in; `None`: the bot's own account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Its region; `None`: the bot's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl GroupConfig {
    /// A group in the bot's own account and region, named by its id.
    pub fn new(id: ReplicationGroupId, channel: ChannelId, policy: Policy) -> GroupConfig {
        GroupConfig {
            id,
            channel,
            policy,
            aws_id: None,
            account: None,
            region: None,
        }
    }

    /// Its replication group id in AWS.
    pub fn aws_id(&self) -> &ReplicationGroupId {
        self.aws_id.as_ref().unwrap_or(&self.id)
    }
}

/// Another AWS account the bot manages groups in (`[accounts.<name>]`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountConfig {
    pub name: String,
    pub account_id: String,
    /// The role the bot assumes there; `None`: its own credentials reach it.
    pub role_arn: Option<String>,
    /// Asked of the role's trust policy (the confused-deputy guard), if it sets one.
    pub external_id: Option<String>,
    /// The regions its groups may be in (empty: any).
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlackConfig {
    pub channel: ChannelId,
    pub approvers: Vec<Approver>,
    /// Who may start runs (`/redis upsize`, "start anyway"); the approvers unless configured.
    pub requesters: Vec<Approver>,
    /// Where `/redis upsize` and `/redis cancel` are accepted; the configured channels unless
    /// listed.
    pub command_channels: Vec<ChannelId>,
    pub command: String,
    /// How Slack reaches the bot: signed HTTP requests, or a WebSocket the bot opens.
    pub mode: SlackMode,
}

/// How Slack delivers slash commands and clicks (`[slack] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlackMode {
    /// `POST /slack/commands` and `/slack/interactions`, signed with `SLACK_SIGNING_SECRET`.
    #[default]
    Http,
    /// Socket Mode: the bot connects out to Slack with `SLACK_APP_TOKEN` (no inbound port, no
    /// signing secret: the WebSocket is the authentication).
    Socket,
}

impl SlackMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SlackMode::Http => "http",
            SlackMode::Socket => "socket",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlarmsConfig {
    /// Only alarms whose description starts with this start runs.
    pub description_prefix: String,
    /// SNS topics whose subscription the bot confirms and whose messages it accepts.
    pub sns_topic_arns: Vec<String>,
    /// Explicit alarm name → replication group mappings, for alarms whose dimensions don't say.
    pub groups: BTreeMap<String, ReplicationGroupId>,
    /// A notice about an alarm that starts nothing (an unmanaged group, a cooldown, another
    /// region) is posted at most once per window for its group; repeats count on it.
    pub notice_window: Duration,
    /// How long after a repeat the posted notice is edited with the count (repeats meanwhile
    /// are taken in the same edit).
    pub notice_update_delay: Duration,
    /// How often groups with `forecast_alert` have their memory trend read.
    pub forecast_interval: Duration,
    /// How often groups with `scale_down = "suggest"` are checked for a scale-down (a timer
    /// kept in the store: a restart does not push it back, and replicas take it in turns).
    pub scale_down_interval: Duration,
    /// The SQS queue alarms are also read from (EventBridge → SQS, SNS → SQS), if any.
    pub sqs_queue_url: Option<crate::domain::alarm::SqsQueueUrl>,
    /// How long one ReceiveMessage waits for a message to arrive (long polling; 0–20 s).
    pub sqs_wait: Duration,
    /// How long a received message stays hidden before it comes back (a failed one comes
    /// back after it); `None`: the queue's own visibility timeout.
    pub sqs_visibility: Option<Duration>,
    /// The pause after a failed ReceiveMessage, doubled after each failure in a row (up to a
    /// minute).
    pub sqs_retry_interval: Duration,
}

/// Secrets, from the environment only.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub slack_bot_token: Option<Secret>,
    pub slack_signing_secret: Option<Secret>,
    /// `SLACK_APP_TOKEN` (`xapp-…`): opens Socket Mode connections.
    pub slack_app_token: Option<Secret>,
    pub pagerduty_routing_key: Option<Secret>,
    pub alarm_api_key: Option<Secret>,
    pub hook_signing_secret: Option<Secret>,
}

/// Where the outbound clients send their requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoints {
    pub slack_api_url: String,
    pub pagerduty_events_url: String,
}

/// How Slack, PagerDuty and hook deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveryConfig {
    pub retry: RetryPolicy,
    /// A run's Slack messages and pages are tried this long before they are given up (pages:
    /// at least an hour); `retry` spaces the tries.
    pub retry_for: Duration,
    pub timeout: Duration,
}

/// How the HTTP server treats slow, idle and too many clients (`[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// A request's head (request line and headers) must be in within this, counted from the
    /// connection's accept or from the first byte after the previous response; else the
    /// connection is closed.
    pub header_timeout: Duration,
    /// A request's body must be in within this once its head is; else 408.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed. Longer than the load
    /// balancer's own idle timeout (an AWS ALB's is 60 s), so that the balancer, not the bot,
    /// closes an idle connection and never sends a request down one the bot is closing.
    pub idle_timeout: Duration,
    /// Connections open at once. At the cap, a new connection closes the oldest one that has
    /// no request being answered (never below what the open-files limit allows).
    pub max_connections: usize,
    /// Requests being answered at once; more get 503. `/healthz` is not counted.
    pub max_requests: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 10_000,
            max_requests: 1024,
        }
    }
}

/// How long the store keeps what is finished, and how it forgets the rest (`[retention]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    pub keep: Retention,
    /// How often a pruning pass runs (off the hot path, in small batches).
    pub prune_interval: Duration,
    /// At most this many rows of each kind per batch.
    pub prune_batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> RetentionConfig {
        RetentionConfig {
            keep: Retention {
                runs: Duration::from_secs(30 * 86_400),
                records: Duration::from_secs(7 * 86_400),
            },
            prune_interval: Duration::from_secs(600),
            prune_batch: 500,
        }
    }
}

/// The on-demand prices on the plan card (`[pricing]`), from the AWS Price List API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingConfig {
    /// Read prices at all (`false`: no cost line, no `pricing:GetProducts` call).
    pub enabled: bool,
    /// Where the Price List API is called: it is served only from `us-east-1`, `eu-central-1`
    /// and `ap-south-1`, and lists every region's prices from each, so this is not the groups'
    /// region (which is what the prices are asked for).
    pub region: String,
}

/// The regions that serve the Price List API.
pub const PRICING_REGIONS: &[&str] = &["us-east-1", "eu-central-1", "ap-south-1"];

impl Default for PricingConfig {
    fn default() -> PricingConfig {
        PricingConfig {
            enabled: true,
            region: "us-east-1".to_string(),
        }
    }
}

/// PostgreSQL as the store, for several replicas: `database = "postgres://…"` in the file
/// (no password there) or `DATABASE_URL` in the environment, with `[postgres]`.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The connection URL or `key=value` string (a secret: from the environment it may hold
    /// the password).
    pub url: Secret,
    /// `DATABASE_PASSWORD`: sets the password, so a platform can inject only it from a secret
    /// store.
    pub password: Option<Secret>,
    /// Where the URL came from: the file's `database` key (shown by `check-config`) or not.
    pub from_file: bool,
    /// How long a replica's claim on an effect or a job lasts before another may take it over.
    pub lease: Duration,
    /// Connections per replica.
    pub pool_size: usize,
    /// Extra CA certificates (PEM) for TLS (`sslmode=require`), e.g. the RDS bundle.
    pub ca_file: Option<PathBuf>,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The SQLite file, unless [`Config::postgres`] is set.
    pub database: PathBuf,
    /// PostgreSQL instead of the SQLite file.
    pub postgres: Option<PostgresConfig>,
    /// Other AWS accounts groups are in, by name.
    pub accounts: BTreeMap<String, AccountConfig>,
    /// The AWS account the managed groups are in; asked of STS at start when not set.
    pub account_id: Option<String>,
    pub slack: SlackConfig,
    pub alarms: AlarmsConfig,
    pub delivery: DeliveryConfig,
    pub http: HttpConfig,
    pub retention: RetentionConfig,
    pub pricing: PricingConfig,
    pub defaults: Policy,
    pub groups: BTreeMap<ReplicationGroupId, GroupConfig>,
    pub secrets: Secrets,
    pub endpoints: Endpoints,
}

impl Config {
    /// The group's settings, if this bot manages it.
    pub fn group(&self, id: &ReplicationGroupId) -> Option<&GroupConfig> {
        self.groups.get(id)
    }

    /// Read and validate a configuration file, taking secrets and endpoints from `env`.
    pub fn load(path: &Path, env: &Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: Some(path.to_path_buf()),
            issues: vec![ConfigIssue {
                key: "(file)".into(),
                line: 0,
                message: format!("can't read {}: {e}", path.display()),
            }],
        })?;
        Config::parse(&text, env).map_err(|mut e| {
            e.path = Some(path.to_path_buf());
            e
        })
    }

    /// Validate configuration text, taking secrets and endpoints from `env`.
    pub fn parse(text: &str, env: &Env) -> Result<Config, ConfigError> {
        let mut w = Walker::new(text);
        let config = w.config(env);
        w.issues.sort_by_key(|i| i.line);
        match config {
            Some(c) if w.issues.is_empty() => Ok(c),
            _ => Err(ConfigError {
                path: None,
                issues: w.issues,
            }),
        }
    }

    /// The environment variables `serve` needs and doesn't have. `HOOK_SIGNING_SECRET` is
    /// needed as soon as a pause or resume hook is configured: hooks are never sent unsigned.
    pub fn missing_secrets(&self) -> Vec<&'static str> {
        let s = &self.secrets;
        let hooks = std::iter::once(&self.defaults)
            .chain(self.groups.values().map(|g| &g.policy))
            .any(|p| p.pause_url.is_some() || p.resume_url.is_some());
        let socket = self.slack.mode == SlackMode::Socket;
        [
            ("SLACK_BOT_TOKEN", s.slack_bot_token.is_some()),
            // Socket Mode needs the app token instead of the signing secret.
            (
                "SLACK_SIGNING_SECRET",
                socket || s.slack_signing_secret.is_some(),
            ),
            ("SLACK_APP_TOKEN", !socket || s.slack_app_token.is_some()),
            ("PAGERDUTY_ROUTING_KEY", s.pagerduty_routing_key.is_some()),
            // With an SQS queue the alarms need no HTTP route: without the key,
            // /alarms/eventbridge refuses every delivery.
            (
                "ALARM_API_KEY",
                self.alarms.sqs_queue_url.is_some() || s.alarm_api_key.is_some(),
            ),
            (
                "HOOK_SIGNING_SECRET",
                !hooks || s.hook_signing_secret.is_some(),
            ),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name)
        .collect()
    }

    /// Risky but valid settings an operator should know about.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let retention = self.retention.keep;
        let mut check = |name: &str, p: &Policy| {
            // The scale-down check reads what the store keeps: alarm deliveries in its window,
            // and the runs that say when the group last changed or a suggestion was set aside.
            if p.scale_down == ScaleDownMode::Suggest {
                if p.scale_down_window > retention.records {
                    out.push(format!(
                        "{name}: scale_down_window ({}) is longer than [retention] records ({}): an alarm older than that is forgotten, and no longer holds off a scale-down suggestion",
                        crate::domain::format_duration(p.scale_down_window),
                        crate::domain::format_duration(retention.records)
                    ));
                }
                let longest = p.scale_down_after.max(p.scale_down_window).max(p.cooldown);
                if longest > retention.runs {
                    out.push(format!(
                        "{name}: scale_down_after / scale_down_window ({}) is longer than [retention] runs ({}): a dismissal or a change older than that is forgotten",
                        crate::domain::format_duration(longest),
                        crate::domain::format_duration(retention.runs)
                    ));
                }
            }
            if p.approval == ApprovalMode::Auto && p.max_node_type.is_none() {
                out.push(format!(
                    "{name}: approval = \"auto\" with no max_node_type: alarms can upsize without limit"
                ));
            }
            if p.approval == ApprovalMode::Required
                && p.on_approval_timeout == OnApprovalTimeout::Approve
                && p.max_node_type.is_none()
            {
                out.push(format!(
                    "{name}: on_approval_timeout = \"approve\" with no max_node_type: an unanswered alarm upsizes without limit"
                ));
            }
            if p.allow_self_approval && p.min_approvals < 2 {
                out.push(format!(
                    "{name}: allow_self_approval = true: one person can ask for and approve an upsize alone"
                ));
            }
        };
        check("[defaults]", &self.defaults);
        for g in self.groups.values() {
            check(&format!("[groups.{}]", g.id), &g.policy);
        }
        if self.groups.is_empty() {
            out.push("no [groups.<id>] table: the bot manages no replication group".into());
        }
        if self.slack.approvers.is_empty() {
            out.push("[slack] approvers is empty: nobody can approve a run".into());
        }
        out
    }

    /// The effective configuration as TOML, secrets shown only as set or unset.
    pub fn render_redacted(&self) -> String {
        // Exactly: `format_duration` drops the milliseconds of a duration of a second or more.
        fn d(x: Duration) -> String {
            if x.subsec_millis() == 0 {
                toml_string(&crate::domain::format_duration(x))
            } else {
                toml_string(&format!("{}ms", x.as_millis()))
            }
        }
        fn policy(out: &mut String, p: &Policy) {
            let approval = match p.approval {
                ApprovalMode::Required => "required",
                ApprovalMode::Auto => "auto",
            };
            let on_timeout = match p.on_approval_timeout {
                OnApprovalTimeout::Escalate => "escalate",
                OnApprovalTimeout::Approve => "approve",
            };
            out.push_str(&format!("approval = \"{approval}\"\n"));
            out.push_str(&format!("approval_timeout = {}\n", d(p.approval_timeout)));
            out.push_str(&format!("on_approval_timeout = \"{on_timeout}\"\n"));
            out.push_str(&format!("approval_expiry = {}\n", d(p.approval_expiry)));
            let pending = match p.pending_changes {
                PendingChanges::Acknowledge => "acknowledge",
                PendingChanges::Refuse => "refuse",
            };
            out.push_str(&format!("pending_changes = \"{pending}\"\n"));
            let source = match p.snapshot_source {
                SnapshotSource::Replica => "replica",
                SnapshotSource::Primary => "primary",
                SnapshotSource::Group => "group",
            };
            out.push_str(&format!("snapshot_source = \"{source}\"\n"));
            let snapshot = match p.snapshot {
                SnapshotPolicy::Take => "take",
                SnapshotPolicy::Skip => "skip",
            };
            out.push_str(&format!("snapshot = \"{snapshot}\"\n"));
            out.push_str(&format!(
                "without_snapshot_window = {}\n",
                d(p.without_snapshot_window)
            ));
            out.push_str(&format!("min_approvals = {}\n", p.min_approvals));
            out.push_str(&format!(
                "allow_self_approval = {}\n",
                p.allow_self_approval
            ));
            out.push_str(&format!(
                "snapshot_poll_interval = {}\n",
                d(p.snapshot_poll_interval)
            ));
            out.push_str(&format!("snapshot_max_polls = {}\n", p.snapshot_max_polls));
            out.push_str(&format!(
                "modify_poll_interval = {}\n",
                d(p.modify_poll_interval)
            ));
            out.push_str(&format!("modify_timeout = {}\n", d(p.modify_timeout)));
            out.push_str(&format!("cooldown = {}\n", d(p.cooldown)));
            out.push_str(&format!("graph_window = {}\n", d(p.graph_window)));
            out.push_str(&format!("verify_window = {}\n", d(p.verify_window)));
            out.push_str(&format!("forecast_window = {}\n", d(p.forecast_window)));
            out.push_str(&format!("forecast_alert = {}\n", d(p.forecast_alert)));
            let scale_down = match p.scale_down {
                ScaleDownMode::Suggest => "suggest",
                ScaleDownMode::Off => "off",
            };
            out.push_str(&format!("scale_down = \"{scale_down}\"\n"));
            out.push_str(&format!("scale_down_after = {}\n", d(p.scale_down_after)));
            out.push_str(&format!("scale_down_window = {}\n", d(p.scale_down_window)));
            out.push_str(&format!("scale_down_below = {}\n", p.scale_down_below));
            out.push_str(&format!(
                "scale_down_verify_below = {}\n",
                p.scale_down_verify_below
            ));
            out.push_str(&format!(
                "min_node_type = \"{}\"\n",
                p.min_node_type
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            ));
            out.push_str(&format!(
                "max_node_type = \"{}\"\n",
                p.max_node_type
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            ));
            out.push_str(&format!(
                "pause_url = {}\n",
                toml_string(&redact_url(p.pause_url.as_deref()))
            ));
            out.push_str(&format!(
                "resume_url = {}\n",
                toml_string(&redact_url(p.resume_url.as_deref()))
            ));
            out.push_str(&format!("hook_timeout = {}\n", d(p.hook_timeout)));
            out.push_str(&format!(
                "aws_retry_interval = {}\n",
                d(p.aws_retry.interval)
            ));
            out.push_str(&format!("aws_retry_attempts = {}\n", p.aws_retry.attempts));
            out.push_str(&format!("aws_retry_backoff = {}\n", p.aws_retry.backoff));
        }
        let mut out = String::new();
        out.push_str(&format!("listen = \"{}\"\n", self.listen));
        out.push_str(&format!(
            "database = {}\n",
            toml_string(&self.database.display().to_string())
        ));
        if let Some(a) = &self.account_id {
            out.push_str(&format!("account_id = \"{a}\"\n"));
        }
        if let Some(p) = &self.postgres {
            out.push_str("\n[postgres]\n");
            out.push_str(&format!("lease = {}\n", d(p.lease)));
            out.push_str(&format!("pool_size = {}\n", p.pool_size));
            if let Some(f) = &p.ca_file {
                let f = f.display().to_string();
                out.push_str(&format!("ca_file = {}\n", toml_string(&f)));
            }
        }
        out.push('\n');
        out.push_str("[slack]\n");
        out.push_str(&format!("channel = \"{}\"\n", self.slack.channel));
        let approvers: Vec<String> = self
            .slack
            .approvers
            .iter()
            .map(|a| match a {
                Approver::User(u) => format!("\"{u}\""),
                Approver::Group(g) => format!("\"{g}\""),
            })
            .collect();
        out.push_str(&format!("approvers = [{}]\n", approvers.join(", ")));
        let people = |list: &[Approver]| -> String {
            let names: Vec<String> = list
                .iter()
                .map(|a| match a {
                    Approver::User(u) => format!("\"{u}\""),
                    Approver::Group(g) => format!("\"{g}\""),
                })
                .collect();
            names.join(", ")
        };
        out.push_str(&format!(
            "requesters = [{}]\n",
            people(&self.slack.requesters)
        ));
        let channels: Vec<String> = self
            .slack
            .command_channels
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect();
        out.push_str(&format!("command_channels = [{}]\n", channels.join(", ")));
        out.push_str(&format!("command = \"{}\"\n", self.slack.command));
        out.push_str(&format!("mode = \"{}\"\n\n", self.slack.mode.as_str()));
        out.push_str("[alarms]\n");
        out.push_str(&format!(
            "description_prefix = {}\n",
            toml_string(&self.alarms.description_prefix)
        ));
        let arns: Vec<String> = self
            .alarms
            .sns_topic_arns
            .iter()
            .map(|a| toml_string(a))
            .collect();
        out.push_str(&format!("sns_topic_arns = [{}]\n", arns.join(", ")));
        out.push_str(&format!(
            "notice_window = {}\n",
            d(self.alarms.notice_window)
        ));
        out.push_str(&format!(
            "notice_update_delay = {}\n",
            d(self.alarms.notice_update_delay)
        ));
        out.push_str(&format!(
            "forecast_interval = {}\n",
            d(self.alarms.forecast_interval)
        ));
        out.push_str(&format!(
            "scale_down_interval = {}\n",
            d(self.alarms.scale_down_interval)
        ));
        let url = self.alarms.sqs_queue_url.as_ref();
        let url = toml_string(url.map_or("", |u| u.as_str()));
        out.push_str(&format!("sqs_queue_url = {url}\n"));
        out.push_str(&format!("sqs_wait = {}\n", d(self.alarms.sqs_wait)));
        let visibility = self.alarms.sqs_visibility.map_or("\"\"".to_string(), d);
        out.push_str(&format!("sqs_visibility = {visibility}\n"));
        out.push_str(&format!(
            "sqs_retry_interval = {}\n\n",
            d(self.alarms.sqs_retry_interval)
        ));
        if !self.alarms.groups.is_empty() {
            out.push_str("[alarms.groups]\n");
            for (name, group) in &self.alarms.groups {
                out.push_str(&format!("{} = \"{group}\"\n", toml_string(name)));
            }
            out.push('\n');
        }
        out.push_str("[delivery]\n");
        out.push_str(&format!(
            "retry_interval = {}\n",
            d(self.delivery.retry.interval)
        ));
        out.push_str(&format!(
            "retry_attempts = {}\n",
            self.delivery.retry.attempts
        ));
        out.push_str(&format!(
            "retry_backoff = {}\n",
            self.delivery.retry.backoff
        ));
        out.push_str(&format!("retry_for = {}\n", d(self.delivery.retry_for)));
        out.push_str(&format!("timeout = {}\n\n", d(self.delivery.timeout)));
        out.push_str("[http]\n");
        let h = &self.http;
        out.push_str(&format!("header_timeout = {}\n", d(h.header_timeout)));
        out.push_str(&format!("body_timeout = {}\n", d(h.body_timeout)));
        out.push_str(&format!("idle_timeout = {}\n", d(h.idle_timeout)));
        out.push_str(&format!("max_connections = {}\n", h.max_connections));
        out.push_str(&format!("max_requests = {}\n\n", h.max_requests));
        out.push_str("[retention]\n");
        let r = &self.retention;
        out.push_str(&format!("runs = {}\n", d(r.keep.runs)));
        out.push_str(&format!("records = {}\n", d(r.keep.records)));
        out.push_str(&format!("prune_interval = {}\n", d(r.prune_interval)));
        out.push_str(&format!("prune_batch = {}\n\n", r.prune_batch));
        out.push_str("[pricing]\n");
        out.push_str(&format!("enabled = {}\n", self.pricing.enabled));
        out.push_str(&format!(
            "region = {}\n\n",
            toml_string(&self.pricing.region)
        ));
        out.push_str("[defaults]\n");
        policy(&mut out, &self.defaults);
        for a in self.accounts.values() {
            out.push_str(&format!("\n[accounts.{}]\n", a.name));
            out.push_str(&format!("account_id = \"{}\"\n", a.account_id));
            if let Some(r) = &a.role_arn {
                out.push_str(&format!("role_arn = {}\n", toml_string(r)));
            }
            if let Some(e) = &a.external_id {
                out.push_str(&format!("external_id = {}\n", toml_string(e)));
            }
            if !a.regions.is_empty() {
                let list: Vec<String> = a.regions.iter().map(|r| toml_string(r)).collect();
                out.push_str(&format!("regions = [{}]\n", list.join(", ")));
            }
        }
        for g in self.groups.values() {
            out.push_str(&format!(
                "\n[groups.{}]\nchannel = \"{}\"\n",
                g.id, g.channel
            ));
            if let Some(id) = &g.aws_id {
                out.push_str(&format!("id = \"{id}\"\n"));
            }
            if let Some(a) = &g.account {
                out.push_str(&format!("account = {}\n", toml_string(a)));
            }
            if let Some(r) = &g.region {
                out.push_str(&format!("region = {}\n", toml_string(r)));
            }
            policy(&mut out, &g.policy);
        }
        let s = |o: &Option<Secret>| if o.is_some() { "set" } else { "NOT SET" };
        out.push_str("\n# environment\n");
        out.push_str(&format!(
            "# SLACK_BOT_TOKEN: {}\n",
            s(&self.secrets.slack_bot_token)
        ));
        out.push_str(&format!(
            "# SLACK_SIGNING_SECRET: {}\n",
            s(&self.secrets.slack_signing_secret)
        ));
        out.push_str(&format!(
            "# SLACK_APP_TOKEN: {}\n",
            s(&self.secrets.slack_app_token)
        ));
        out.push_str(&format!(
            "# PAGERDUTY_ROUTING_KEY: {}\n",
            s(&self.secrets.pagerduty_routing_key)
        ));
        out.push_str(&format!(
            "# ALARM_API_KEY: {}\n",
            s(&self.secrets.alarm_api_key)
        ));
        out.push_str(&format!(
            "# HOOK_SIGNING_SECRET: {}\n",
            s(&self.secrets.hook_signing_secret)
        ));
        if let Some(p) = &self.postgres
            && !p.from_file
        {
            out.push_str("# DATABASE_URL: set (the store is PostgreSQL)\n");
        }
        if let Some(p) = &self.postgres {
            out.push_str(&format!("# DATABASE_PASSWORD: {}\n", s(&p.password)));
        }
        out.push_str(&format!(
            "# SLACK_API_URL: {}\n",
            self.endpoints.slack_api_url
        ));
        out.push_str(&format!(
            "# PAGERDUTY_EVENTS_URL: {}\n",
            self.endpoints.pagerduty_events_url
        ));
        out
    }
}

/// A snapshot of the environment variables the bot reads. Tests build one by hand instead of
/// changing the process environment.
#[derive(Clone, Default)]
pub struct Env(HashMap<String, String>);

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_struct("Env").field("keys", &keys).finish()
    }
}

impl Env {
    /// The variables this program knows about, read from the process environment.
    pub fn from_process() -> Env {
        let names = [
            "SLACK_BOT_TOKEN",
            "SLACK_SIGNING_SECRET",
            "SLACK_APP_TOKEN",
            "PAGERDUTY_ROUTING_KEY",
            "ALARM_API_KEY",
            "HOOK_SIGNING_SECRET",
            "SLACK_API_URL",
            "PAGERDUTY_EVENTS_URL",
            "DATABASE_URL",
            "DATABASE_PASSWORD",
        ];
        Env(names
            .iter()
            .filter_map(|n| std::env::var(n).ok().map(|v| (n.to_string(), v)))
            .collect())
    }

    pub fn with(mut self, name: &str, value: impl Into<String>) -> Env {
        self.0.insert(name.to_string(), value.into());
        self
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        self.get(name).map(Secret::new)
    }
}

const TOP_KEYS: &[&str] = &[
    "listen",
    "database",
    "postgres",
    "accounts",
    "account_id",
    "slack",
    "alarms",
    "delivery",
    "http",
    "retention",
    "pricing",
    "defaults",
    "groups",
];
const RETENTION_KEYS: &[&str] = &["runs", "records", "prune_interval", "prune_batch"];
const PRICING_KEYS: &[&str] = &["enabled", "region"];
const POSTGRES_KEYS: &[&str] = &["lease", "pool_size", "ca_file"];
const SLACK_KEYS: &[&str] = &[
    "channel",
    "approvers",
    "requesters",
    "command_channels",
    "command",
    "mode",
];
const ALARMS_KEYS: &[&str] = &[
    "description_prefix",
    "sns_topic_arns",
    "groups",
    "notice_window",
    "notice_update_delay",
    "forecast_interval",
    "scale_down_interval",
    "sqs_queue_url",
    "sqs_wait",
    "sqs_visibility",
    "sqs_retry_interval",
];
const DELIVERY_KEYS: &[&str] = &[
    "retry_interval",
    "retry_attempts",
    "retry_backoff",
    "retry_for",
    "timeout",
];
const HTTP_KEYS: &[&str] = &[
    "header_timeout",
    "body_timeout",
    "idle_timeout",
    "max_connections",
    "max_requests",
];
/// Keys a `[groups.<id>]` table takes besides the policy keys.
const GROUP_KEYS: &[&str] = &["channel", "id", "account", "region"];
const ACCOUNT_KEYS: &[&str] = &["account_id", "role_arn", "external_id", "regions"];
const POLICY_KEYS: &[&str] = &[
    "approval",
    "approval_timeout",
    "on_approval_timeout",
    "approval_expiry",
    "min_approvals",
    "allow_self_approval",
    "snapshot_poll_interval",
    "snapshot_max_polls",
    "modify_poll_interval",
    "modify_timeout",
    "cooldown",
    "graph_window",
    "verify_window",
    "forecast_window",
    "forecast_alert",
    "scale_down",
    "scale_down_after",
    "scale_down_window",
    "scale_down_below",
    "scale_down_verify_below",
    "min_node_type",
    "max_node_type",
    "pause_url",
    "resume_url",
    "hook_timeout",
    "aws_retry_interval",
    "aws_retry_attempts",
    "aws_retry_backoff",
    "pending_changes",
    "snapshot_source",
    "snapshot",
    "without_snapshot_window",
];

/// Every key the configuration file accepts, as dotted paths built from the lists that reject
/// unknown keys: `listen`, `slack.channel`, `defaults.approval`, …. Names the operator picks are
/// written `alarms.groups.<alarm-name>` and `groups.<id>.`; only the group-only keys are listed
/// under `groups.<id>.`, since a group table also takes every `defaults.` key. Lets a test hold
/// `deploy/config.example.toml` to documenting every key.
pub fn known_keys() -> Vec<String> {
    let mut out = Vec::new();
    for &top in TOP_KEYS {
        let (prefix, keys): (&str, &[&str]) = match top {
            "slack" => ("slack", SLACK_KEYS),
            "alarms" => ("alarms", ALARMS_KEYS),
            "delivery" => ("delivery", DELIVERY_KEYS),
            "http" => ("http", HTTP_KEYS),
            "retention" => ("retention", RETENTION_KEYS),
            "pricing" => ("pricing", PRICING_KEYS),
            "postgres" => ("postgres", POSTGRES_KEYS),
            "accounts" => ("accounts.<name>", ACCOUNT_KEYS),
            "defaults" => ("defaults", POLICY_KEYS),
            // What `Walker::groups` accepts besides the policy keys.
            "groups" => ("groups.<id>", GROUP_KEYS),
            key => {
                out.push(key.to_string());
                continue;
            }
        };
        for &key in keys {
            if (prefix, key) == ("alarms", "groups") {
                out.push("alarms.groups.<alarm-name>".to_string());
            } else {
                out.push(format!("{prefix}.{key}"));
            }
        }
    }
    out
}

type Table<'i> = DeTable<'i>;
type Value<'i> = Spanned<DeValue<'i>>;

struct Walker<'s> {
    src: &'s str,
    issues: Vec<ConfigIssue>,
}

impl<'s> Walker<'s> {
    fn new(src: &'s str) -> Self {
        Walker {
            src,
            issues: Vec::new(),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.src.len());
        self.src[..offset].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn issue(&mut self, key: &str, offset: usize, message: impl Into<String>) {
        let line = self.line_of(offset);
        self.issues.push(ConfigIssue {
            key: key.to_string(),
            line,
            message: message.into(),
        });
    }

    /// Report keys of `table` that are not in `known`.
    fn unknown_keys(&mut self, table: &Table<'_>, prefix: &str, known: &[&str]) {
        for key in table.keys() {
            let name: &str = key.get_ref();
            if !known.contains(&name) {
                let path = join(prefix, name);
                let hint = match closest(name, known) {
                    Some(k) => format!("; did you mean `{k}`?"),
                    None => format!("; known keys here: {}", known.join(", ")),
                };
                self.issue(&path, key.span().start, format!("unknown key{hint}"));
            }
        }
    }

    fn get<'t, 'i>(&self, table: &'t Table<'i>, key: &str) -> Option<&'t Value<'i>> {
        table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    fn sub_table<'t, 'i>(
        &mut self,
        table: &'t Table<'i>,
        key: &str,
        prefix: &str,
    ) -> Option<&'t Table<'i>> {
        let v = self.get(table, key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                let msg = format!("expected a table, found {}", other.type_str());
                self.issue(&join(prefix, key), v.span().start, msg);
                None
            }
        }
    }

    fn string(&mut self, table: &Table<'_>, key: &str, prefix: &str) -> Option<(String, usize)> {
        let v = self.get(table, key)?;
        match v.get_ref() {
            DeValue::String(s) => Some((s.to_string(), v.span().start)),
            other => {
                let msg = format!("expected a string, found {}", other.type_str());
                self.issue(&join(prefix, key), v.span().start, msg);
                None
            }
        }
    }

    /// A string parsed by `parse`; problems are reported and give `None`.
    fn parsed<T, E: fmt::Display>(
        &mut self,
        table: &Table<'_>,
        key: &str,
        prefix: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let (s, at) = self.string(table, key, prefix)?;
        match parse(&s) {
            Ok(v) => Some(v),
            Err(e) => {
                self.issue(&join(prefix, key), at, e.to_string());
                None
            }
        }
    }

    fn duration(&mut self, table: &Table<'_>, key: &str, prefix: &str) -> Option<Duration> {
        self.parsed(table, key, prefix, parse_duration)
    }

    fn integer(
        &mut self,
        table: &Table<'_>,
        key: &str,
        prefix: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let v = self.get(table, key)?;
        let at = v.span().start;
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            other => {
                let msg = format!("expected an integer, found {}", other.type_str());
                self.issue(&join(prefix, key), at, msg);
                return None;
            }
        };
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                let msg = format!(
                    "must be an integer from {} to {}",
                    range.start(),
                    range.end()
                );
                self.issue(&join(prefix, key), at, msg);
                None
            }
        }
    }

    fn float(
        &mut self,
        table: &Table<'_>,
        key: &str,
        prefix: &str,
        min: f64,
        max: f64,
    ) -> Option<f64> {
        let v = self.get(table, key)?;
        let at = v.span().start;
        let n = match v.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            other => {
                let msg = format!("expected a number, found {}", other.type_str());
                self.issue(&join(prefix, key), at, msg);
                return None;
            }
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.issue(
                    &join(prefix, key),
                    at,
                    format!("must be a number from {min} to {max}"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, table: &Table<'_>, key: &str, prefix: &str) -> Option<bool> {
        let v = self.get(table, key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                let msg = format!("expected true or false, found {}", other.type_str());
                self.issue(&join(prefix, key), v.span().start, msg);
                None
            }
        }
    }

    fn string_list(
        &mut self,
        table: &Table<'_>,
        key: &str,
        prefix: &str,
    ) -> Option<Vec<(String, usize)>> {
        let v = self.get(table, key)?;
        match v.get_ref() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.to_string(), item.span().start)),
                        other => {
                            let msg =
                                format!("expected strings in the list, found {}", other.type_str());
                            self.issue(&join(prefix, key), item.span().start, msg);
                        }
                    }
                }
                Some(out)
            }
            other => {
                let msg = format!("expected a list of strings, found {}", other.type_str());
                self.issue(&join(prefix, key), v.span().start, msg);
                None
            }
        }
    }

    fn config(&mut self, env: &Env) -> Option<Config> {
        let (root, parse_errors) = DeTable::parse_recoverable(self.src);
        for e in parse_errors {
            let span = e.span().unwrap_or(0..0);
            // Name the key when the error points at one (a duplicate key, say).
            let text = self.src.get(span.clone()).unwrap_or_default().trim();
            let key = if !text.is_empty()
                && text.len() < 64
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.\"".contains(&b))
            {
                text.trim_matches('"').to_string()
            } else {
                "(syntax)".to_string()
            };
            self.issue(&key, span.start, e.message().to_string());
        }
        if !self.issues.is_empty() {
            return None;
        }
        let root = root.get_ref();
        self.unknown_keys(root, "", TOP_KEYS);

        let listen = self
            .parsed(root, "listen", "", |s| {
                s.parse::<SocketAddr>()
                    .map_err(|_| format!("`{s}` is not an address like `0.0.0.0:8080`"))
            })
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
        let database = self
            .parsed(root, "database", "", |s| {
                if s.trim().is_empty() {
                    Err("must not be empty".to_string())
                } else {
                    Ok(PathBuf::from(s))
                }
            })
            .unwrap_or_else(|| PathBuf::from("redis-autoscaler.db"));
        let postgres = self.postgres(root, env, &database);
        let account_id = self.parsed(root, "account_id", "", |s| {
            if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
                Ok(s.to_string())
            } else {
                Err(format!("`{s}` is not a 12-digit AWS account id"))
            }
        });

        let slack = self.slack(root);
        let alarms = self.alarms(root);
        let delivery = self.delivery(root);
        let http = self.http(root);
        let retention = self.retention(root);
        let pricing = self.pricing(root);
        let builtin = Policy::default();
        let defaults = match self.sub_table(root, "defaults", "") {
            Some(t) => {
                let t = t.clone();
                self.policy(&t, "defaults", &builtin, &[])
            }
            None => builtin,
        };
        let accounts = self.accounts(root);
        let groups = self.groups(
            root,
            &defaults,
            slack.as_ref().map(|s| &s.channel),
            &accounts,
        );
        let mut slack = slack;
        if let Some(s) = slack.as_mut()
            && s.command_channels.is_empty()
        {
            s.command_channels.push(s.channel.clone());
            for g in groups.values() {
                if !s.command_channels.contains(&g.channel) {
                    s.command_channels.push(g.channel.clone());
                }
            }
        }
        for (name, group) in &alarms.groups {
            if !groups.contains_key(group) {
                let key = format!("alarms.groups.{name}");
                let at = self.src.find(name.as_str()).unwrap_or(0);
                let msg = format!(
                    "`{group}` is not a managed group: add a `[groups.{group}]` table, or map the alarm to one"
                );
                self.issue(&key, at, msg);
            }
        }

        let endpoints = Endpoints {
            slack_api_url: self.endpoint(env, "SLACK_API_URL", "https://slack.com/api"),
            pagerduty_events_url: self.endpoint(
                env,
                "PAGERDUTY_EVENTS_URL",
                "https://events.pagerduty.com/v2/enqueue",
            ),
        };
        let secrets = Secrets {
            slack_bot_token: env.secret("SLACK_BOT_TOKEN"),
            slack_signing_secret: env.secret("SLACK_SIGNING_SECRET"),
            slack_app_token: self.app_token(env),
            pagerduty_routing_key: env.secret("PAGERDUTY_ROUTING_KEY"),
            alarm_api_key: env.secret("ALARM_API_KEY"),
            hook_signing_secret: env.secret("HOOK_SIGNING_SECRET"),
        };
        Some(Config {
            listen,
            database,
            postgres,
            accounts,
            account_id,
            slack: slack?,
            alarms,
            delivery,
            http,
            retention,
            pricing,
            defaults,
            groups,
            secrets,
            endpoints,
        })
    }

    /// `SLACK_APP_TOKEN`, which must be an app-level token (`xapp-…`): a bot token there is
    /// refused by Slack only once the bot runs. The value is never echoed.
    fn app_token(&mut self, env: &Env) -> Option<Secret> {
        let token = env.secret("SLACK_APP_TOKEN")?;
        if !token.expose().starts_with("xapp-") {
            self.issues.push(ConfigIssue {
                key: "SLACK_APP_TOKEN".into(),
                line: 0,
                message: "is not an app-level token: it must start with `xapp-` (Basic Information → App-Level Tokens, scope connections:write)".into(),
            });
            return None;
        }
        Some(token)
    }

    fn endpoint(&mut self, env: &Env, name: &str, default: &str) -> String {
        match env.get(name) {
            None => default.to_string(),
            Some(v) if v.starts_with("https://") || v.starts_with("http://") => {
                v.trim_end_matches('/').to_string()
            }
            Some(v) => {
                self.issues.push(ConfigIssue {
                    key: name.to_string(),
                    line: 0,
                    message: format!("`{v}` is not an http(s) URL"),
                });
                default.to_string()
            }
        }
    }

    fn slack(&mut self, root: &Table<'_>) -> Option<SlackConfig> {
        let Some(t) = self.sub_table(root, "slack", "") else {
            self.issue(
                "slack",
                0,
                "missing [slack] table (it needs at least `channel`)",
            );
            return None;
        };
        let t = t.clone();
        self.unknown_keys(&t, "slack", SLACK_KEYS);
        let channel = self.parsed(&t, "channel", "slack", ChannelId::parse);
        if self.get(&t, "channel").is_none() {
            let at = self.span_of_table_key(root, "slack");
            self.issue(
                "slack.channel",
                at,
                "missing: the channel id (`C…`) where runs are posted",
            );
        }
        let approvers = self.people(&t, "approvers").unwrap_or_default();
        let requesters = self
            .people(&t, "requesters")
            .unwrap_or_else(|| approvers.clone());
        let mut command_channels = Vec::new();
        for (s, at) in self
            .string_list(&t, "command_channels", "slack")
            .unwrap_or_default()
        {
            match ChannelId::parse(&s) {
                Ok(c) if !command_channels.contains(&c) => command_channels.push(c),
                Ok(_) => self.issue(
                    "slack.command_channels",
                    at,
                    format!("`{s}` is listed twice"),
                ),
                Err(e) => self.issue("slack.command_channels", at, e.to_string()),
            }
        }
        let command = self
            .parsed(&t, "command", "slack", |s| {
                let ok = s.starts_with('/')
                    && s.len() >= 2
                    && s.len() <= 32
                    && s[1..].bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    });
                if ok {
                    Ok(s.to_string())
                } else {
                    Err(format!("`{s}` is not a slash command like `/redis`"))
                }
            })
            .unwrap_or_else(|| "/redis".to_string());
        let mode = self
            .parsed(&t, "mode", "slack", |s| match s {
                "http" => Ok(SlackMode::Http),
                "socket" => Ok(SlackMode::Socket),
                _ => Err(format!(
                    "`{s}` is not a Slack mode: \"http\" (signed requests) or \"socket\" (Socket Mode)"
                )),
            })
            .unwrap_or_default();
        Some(SlackConfig {
            channel: channel?,
            approvers,
            requesters,
            command_channels,
            command,
            mode,
        })
    }

    /// A list of users and user groups under `[slack]`; `None` when the key is not there.
    fn people(&mut self, t: &Table<'_>, key: &str) -> Option<Vec<Approver>> {
        self.get(t, key)?;
        let path = format!("slack.{key}");
        let mut out = Vec::new();
        for (s, at) in self.string_list(t, key, "slack").unwrap_or_default() {
            match Approver::parse(&s) {
                Ok(a) if !out.contains(&a) => out.push(a),
                Ok(_) => self.issue(&path, at, format!("`{s}` is listed twice")),
                Err(e) => self.issue(&path, at, e.to_string()),
            }
        }
        Some(out)
    }

    fn span_of_table_key(&self, table: &Table<'_>, key: &str) -> usize {
        table
            .keys()
            .find(|k| k.get_ref().as_ref() == key)
            .map(|k| k.span().start)
            .unwrap_or(0)
    }

    fn alarms(&mut self, root: &Table<'_>) -> AlarmsConfig {
        let mut out = AlarmsConfig {
            description_prefix: "Redis memory:".to_string(),
            sns_topic_arns: Vec::new(),
            groups: BTreeMap::new(),
            notice_window: Duration::from_secs(3600),
            notice_update_delay: Duration::from_secs(2),
            forecast_interval: Duration::from_secs(300),
            scale_down_interval: Duration::from_secs(3600),
            sqs_queue_url: None,
            sqs_wait: Duration::from_secs(20),
            sqs_visibility: None,
            sqs_retry_interval: Duration::from_secs(1),
        };
        if let Some(t) = self.sub_table(root, "alarms", "") {
            let t = t.clone();
            self.unknown_keys(&t, "alarms", ALARMS_KEYS);
            self.sqs_keys(&t, &mut out);
            if let Some(d) = self.duration(&t, "notice_window", "alarms") {
                out.notice_window = d;
            }
            if let Some(d) = self.duration(&t, "notice_update_delay", "alarms") {
                out.notice_update_delay = d;
            }
            if let Some(d) = self.positive_duration(&t, "forecast_interval", "alarms") {
                out.forecast_interval = d;
            }
            if let Some(d) = self.positive_duration(&t, "scale_down_interval", "alarms") {
                out.scale_down_interval = d;
            }
            if let Some(p) = self.parsed(&t, "description_prefix", "alarms", |s| {
                if s.trim().is_empty() {
                    Err("must not be empty: every alarm would start a run")
                } else {
                    Ok(s.to_string())
                }
            }) {
                out.description_prefix = p;
            }
            for (arn, at) in self
                .string_list(&t, "sns_topic_arns", "alarms")
                .unwrap_or_default()
            {
                let ok = arn.starts_with("arn:aws")
                    && arn.split(':').count() == 6
                    && arn.split(':').nth(2) == Some("sns");
                if ok {
                    out.sns_topic_arns.push(arn);
                } else {
                    self.issue(
                        "alarms.sns_topic_arns",
                        at,
                        format!(
                            "`{arn}` is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
                        ),
                    );
                }
            }
            if let Some(groups) = self.sub_table(&t, "groups", "alarms") {
                for (name, value) in groups.clone().iter() {
                    let key = format!("alarms.groups.{}", name.get_ref());
                    match value.get_ref() {
                        DeValue::String(g) => match ReplicationGroupId::parse(g) {
                            Ok(id) => {
                                out.groups.insert(name.get_ref().to_string(), id);
                            }
                            Err(e) => self.issue(&key, value.span().start, e.to_string()),
                        },
                        other => {
                            let msg = format!(
                                "expected a replication group id, found {}",
                                other.type_str()
                            );
                            self.issue(&key, value.span().start, msg);
                        }
                    }
                }
            }
        }
        out
    }

    /// `alarms.sqs_*`: the queue and how it is polled. SQS counts in whole seconds; an empty
    /// string is the default (no queue; the queue's own visibility timeout).
    fn sqs_keys(&mut self, t: &Table<'_>, out: &mut AlarmsConfig) {
        let seconds = |max: u64, what: &'static str| {
            move |s: &str| {
                let d = parse_duration(s).map_err(|e| e.to_string())?;
                if d.subsec_nanos() != 0 || d.as_secs() > max {
                    return Err(format!("{what} is whole seconds, at most {max}"));
                }
                Ok(d)
            }
        };
        let url = |s: &str| match s {
            "" => Ok(None),
            s => crate::domain::alarm::SqsQueueUrl::parse(s).map(Some),
        };
        if let Some(url) = self.parsed(t, "sqs_queue_url", "alarms", url) {
            out.sqs_queue_url = url;
        }
        let wait = seconds(20, "an SQS long-poll wait");
        let wait = |s: &str| match wait(s)? {
            // A short poll of an empty queue answers at once: polling would spin.
            Duration::ZERO => Err("must be at least 1s (long polling)".to_string()),
            d => Ok(d),
        };
        if let Some(d) = self.parsed(t, "sqs_wait", "alarms", wait) {
            out.sqs_wait = d;
        }
        let visibility = seconds(43_200, "an SQS visibility timeout");
        let visibility = |s: &str| match s {
            "" => Ok(None),
            s => visibility(s).map(Some),
        };
        if let Some(d) = self.parsed(t, "sqs_visibility", "alarms", visibility) {
            out.sqs_visibility = d;
        }
        if let Some(d) = self.positive_duration(t, "sqs_retry_interval", "alarms") {
            out.sqs_retry_interval = d;
        }
    }

    fn delivery(&mut self, root: &Table<'_>) -> DeliveryConfig {
        let mut out = DeliveryConfig {
            retry: RetryPolicy {
                interval: Duration::from_secs(1),
                attempts: 5,
                backoff: 2.0,
            },
            retry_for: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
        };
        if let Some(t) = self.sub_table(root, "delivery", "") {
            let t = t.clone();
            self.unknown_keys(&t, "delivery", DELIVERY_KEYS);
            if let Some(d) = self.duration(&t, "retry_interval", "delivery") {
                out.retry.interval = d;
            }
            if let Some(n) = self.integer(&t, "retry_attempts", "delivery", 1..=20) {
                out.retry.attempts = n as u32;
            }
            if let Some(b) = self.float(&t, "retry_backoff", "delivery", 1.0, 10.0) {
                out.retry.backoff = b;
            }
            if let Some(d) = self.duration(&t, "retry_for", "delivery") {
                out.retry_for = d;
            }
            if let Some(d) = self.duration(&t, "timeout", "delivery") {
                out.timeout = d;
            }
        }
        out
    }

    /// A duration that must be longer than zero (a zero one is reported, and `None`).
    fn positive_duration(
        &mut self,
        table: &Table<'_>,
        key: &str,
        prefix: &str,
    ) -> Option<Duration> {
        match self.duration(table, key, prefix)? {
            Duration::ZERO => {
                let at = self.get(table, key).map_or(0, |v| v.span().start);
                self.issue(&join(prefix, key), at, "must be longer than zero");
                None
            }
            d => Some(d),
        }
    }

    /// The PostgreSQL store, when `DATABASE_URL` or a `postgres://` `database` asks for it.
    fn postgres(&mut self, root: &Table<'_>, env: &Env, database: &Path) -> Option<PostgresConfig> {
        let at = |w: &Self, key: &str| w.src.find(&format!("{key} ")).unwrap_or(0);
        let in_file = database.to_str().filter(|d| is_postgres_url(d));
        let (url, from_file) = match (env.get("DATABASE_URL"), in_file) {
            (Some(url), _) => {
                if let Err(e) = url.parse::<tokio_postgres::Config>() {
                    // The URL may hold a password: say what is wrong, never what it is.
                    let msg = format!("DATABASE_URL is not a PostgreSQL connection string: {e}");
                    self.issue("database", 0, msg);
                    return None;
                }
                (url.to_string(), false)
            }
            (None, Some(url)) => {
                let key_at = at(self, "database");
                match url.parse::<tokio_postgres::Config>() {
                    Err(e) => {
                        let msg = format!("not a PostgreSQL connection URL: {e}");
                        self.issue("database", key_at, msg);
                        return None;
                    }
                    Ok(c) if c.get_password().is_some() => {
                        let msg = "a password does not belong in the config file: put it in \
                                   DATABASE_PASSWORD (or the whole URL in DATABASE_URL)";
                        self.issue("database", key_at, msg);
                        return None;
                    }
                    Ok(_) => (url.to_string(), true),
                }
            }
            (None, None) => {
                if let Some(t) = self.sub_table(root, "postgres", "") {
                    let msg = "the store is the SQLite file `database`: set `database` to a \
                               postgres:// URL (or DATABASE_URL) to use PostgreSQL, or remove \
                               this table";
                    let _ = t;
                    let key_at = self.src.find("[postgres]").unwrap_or(0);
                    self.issue("postgres", key_at, msg);
                }
                return None;
            }
        };
        let mut out = PostgresConfig {
            url: Secret::new(url),
            password: env.secret("DATABASE_PASSWORD"),
            from_file,
            lease: Duration::from_secs(30),
            pool_size: 16,
            ca_file: None,
        };
        let Some(t) = self.sub_table(root, "postgres", "") else {
            return Some(out);
        };
        let t = t.clone();
        self.unknown_keys(&t, "postgres", POSTGRES_KEYS);
        if let Some(d) = self.positive_duration(&t, "lease", "postgres") {
            // Renewed every third of it: much shorter would be a write every few milliseconds
            // and claims lost to any pause.
            if d < Duration::from_secs(1) {
                let at = self.src.find("lease").unwrap_or(0);
                self.issue("postgres.lease", at, "must be at least 1s");
            } else {
                out.lease = d;
            }
        }
        if let Some(n) = self.integer(&t, "pool_size", "postgres", 1..=256) {
            out.pool_size = n as usize;
        }
        out.ca_file = self.parsed(&t, "ca_file", "postgres", |s| match s.trim() {
            "" => Err("must not be empty".to_string()),
            s => Ok(PathBuf::from(s)),
        });
        Some(out)
    }

    fn retention(&mut self, root: &Table<'_>) -> RetentionConfig {
        let mut out = RetentionConfig::default();
        let Some(t) = self.sub_table(root, "retention", "") else {
            return out;
        };
        let t = t.clone();
        self.unknown_keys(&t, "retention", RETENTION_KEYS);
        for (key, slot) in [
            ("runs", &mut out.keep.runs),
            ("records", &mut out.keep.records),
            ("prune_interval", &mut out.prune_interval),
        ] {
            if let Some(d) = self.positive_duration(&t, key, "retention") {
                *slot = d;
            }
        }
        if let Some(n) = self.integer(&t, "prune_batch", "retention", 1..=100_000) {
            out.prune_batch = n as usize;
        }
        out
    }

    fn pricing(&mut self, root: &Table<'_>) -> PricingConfig {
        let mut out = PricingConfig::default();
        let Some(t) = self.sub_table(root, "pricing", "") else {
            return out;
        };
        let t = t.clone();
        self.unknown_keys(&t, "pricing", PRICING_KEYS);
        if let Some(b) = self.boolean(&t, "enabled", "pricing") {
            out.enabled = b;
        }
        let region = self.parsed(&t, "region", "pricing", |s| {
            if PRICING_REGIONS.contains(&s) {
                Ok(s.to_string())
            } else {
                Err(format!(
                    "`{s}` does not serve the AWS Price List API: one of {} (it lists every \
                     region's prices; the groups' own region is what is asked for)",
                    PRICING_REGIONS.join(", ")
                ))
            }
        });
        if let Some(r) = region {
            out.region = r;
        }
        out
    }

    fn http(&mut self, root: &Table<'_>) -> HttpConfig {
        let mut out = HttpConfig::default();
        let Some(t) = self.sub_table(root, "http", "") else {
            return out;
        };
        let t = t.clone();
        self.unknown_keys(&t, "http", HTTP_KEYS);
        for (key, slot) in [
            ("header_timeout", &mut out.header_timeout),
            ("body_timeout", &mut out.body_timeout),
            ("idle_timeout", &mut out.idle_timeout),
        ] {
            if let Some(d) = self.positive_duration(&t, key, "http") {
                *slot = d;
            }
        }
        if let Some(n) = self.integer(&t, "max_connections", "http", 1..=1_000_000) {
            out.max_connections = n as usize;
        }
        if let Some(n) = self.integer(&t, "max_requests", "http", 1..=1_000_000) {
            out.max_requests = n as usize;
        }
        out
    }

    fn policy(
        &mut self,
        t: &Table<'_>,
        prefix: &str,
        base: &Policy,
        extra_keys: &[&str],
    ) -> Policy {
        let known: Vec<&str> = POLICY_KEYS.iter().chain(extra_keys).copied().collect();
        self.unknown_keys(t, prefix, &known);
        let mut p = base.clone();
        if let Some(v) = self.parsed(t, "approval", prefix, |s| match s {
            "required" => Ok(ApprovalMode::Required),
            "auto" => Ok(ApprovalMode::Auto),
            _ => Err(format!("`{s}` is not one of: required, auto")),
        }) {
            p.approval = v;
        }
        if let Some(v) = self.duration(t, "approval_timeout", prefix) {
            p.approval_timeout = v;
        }
        if let Some(v) = self.parsed(t, "on_approval_timeout", prefix, |s| match s {
            "escalate" => Ok(OnApprovalTimeout::Escalate),
            "approve" => Ok(OnApprovalTimeout::Approve),
            _ => Err(format!("`{s}` is not one of: escalate, approve")),
        }) {
            p.on_approval_timeout = v;
        }
        if let Some(v) = self.parsed(t, "pending_changes", prefix, |s| match s {
            "acknowledge" => Ok(PendingChanges::Acknowledge),
            "refuse" => Ok(PendingChanges::Refuse),
            _ => Err(format!("`{s}` is not one of: acknowledge, refuse")),
        }) {
            p.pending_changes = v;
        }
        if let Some(v) = self.parsed(t, "snapshot_source", prefix, |s| match s {
            "replica" => Ok(SnapshotSource::Replica),
            "primary" => Ok(SnapshotSource::Primary),
            "group" => Ok(SnapshotSource::Group),
            _ => Err(format!("`{s}` is not one of: replica, primary, group")),
        }) {
            p.snapshot_source = v;
        }
        if let Some(v) = self.parsed(t, "snapshot", prefix, |s| match s {
            "take" => Ok(SnapshotPolicy::Take),
            "skip" => Ok(SnapshotPolicy::Skip),
            _ => Err(format!("`{s}` is not one of: take, skip")),
        }) {
            p.snapshot = v;
        }
        if let Some(v) = self.duration(t, "without_snapshot_window", prefix) {
            p.without_snapshot_window = v;
        }
        if let Some(v) = self.duration(t, "approval_expiry", prefix) {
            p.approval_expiry = v;
        }
        if let Some(v) = self.integer(t, "min_approvals", prefix, 1..=5) {
            p.min_approvals = v as u8;
        }
        if let Some(v) = self.boolean(t, "allow_self_approval", prefix) {
            p.allow_self_approval = v;
        }
        if let Some(v) = self.duration(t, "snapshot_poll_interval", prefix) {
            p.snapshot_poll_interval = v;
        }
        if let Some(v) = self.integer(t, "snapshot_max_polls", prefix, 1..=100_000) {
            p.snapshot_max_polls = v as u32;
        }
        if let Some(v) = self.duration(t, "modify_poll_interval", prefix) {
            p.modify_poll_interval = v;
        }
        if let Some(v) = self.duration(t, "modify_timeout", prefix) {
            p.modify_timeout = v;
        }
        if let Some(v) = self.duration(t, "cooldown", prefix) {
            p.cooldown = v;
        }
        if let Some(v) = self.positive_duration(t, "graph_window", prefix) {
            p.graph_window = v;
        }
        if let Some(v) = self.duration(t, "verify_window", prefix) {
            p.verify_window = v;
        }
        if let Some(v) = self.duration(t, "forecast_alert", prefix) {
            p.forecast_alert = v;
        }
        if let Some(v) = self.duration(t, "forecast_window", prefix) {
            p.forecast_window = v;
        }
        if let Some(v) = self.parsed(t, "scale_down", prefix, |s| match s {
            "suggest" => Ok(ScaleDownMode::Suggest),
            "off" => Ok(ScaleDownMode::Off),
            _ => Err(format!("`{s}` is not one of: suggest, off")),
        }) {
            p.scale_down = v;
        }
        if let Some(v) = self.positive_duration(t, "scale_down_after", prefix) {
            p.scale_down_after = v;
        }
        if let Some(v) = self.positive_duration(t, "scale_down_window", prefix) {
            p.scale_down_window = v;
        }
        if let Some(v) = self.float(t, "scale_down_below", prefix, 1.0, 95.0) {
            p.scale_down_below = v;
        }
        if let Some(v) = self.float(t, "scale_down_verify_below", prefix, 1.0, 100.0) {
            p.scale_down_verify_below = v;
        }
        if let Some(v) = self.parsed(t, "min_node_type", prefix, |s| {
            if s.trim().is_empty() {
                Ok(None)
            } else {
                NodeType::parse(s).map(Some)
            }
        }) {
            p.min_node_type = v;
        }
        if p.scale_down_below >= p.scale_down_verify_below {
            let key = ["scale_down_below", "scale_down_verify_below"]
                .into_iter()
                .find(|k| self.get(t, k).is_some());
            if let Some(k) = key {
                let at = self.get(t, k).map_or(0, |v| v.span().start);
                let msg = format!(
                    "scale_down_below ({}) must be lower than scale_down_verify_below ({}): a \
                     suggested scale-down would start above the level it must stay below",
                    p.scale_down_below, p.scale_down_verify_below
                );
                self.issue(&join(prefix, k), at, msg);
            }
        }
        if let Some(v) = self.parsed(t, "max_node_type", prefix, |s| {
            if s.trim().is_empty() {
                Ok(None)
            } else {
                NodeType::parse(s).map(Some)
            }
        }) {
            p.max_node_type = v;
        }
        for (key, slot) in [
            ("pause_url", &mut p.pause_url),
            ("resume_url", &mut p.resume_url),
        ] {
            if let Some(v) = self.parsed(t, key, prefix, parse_hook_url) {
                *slot = v;
            }
        }
        if let Some(v) = self.duration(t, "hook_timeout", prefix) {
            p.hook_timeout = v;
        }
        if let Some(v) = self.duration(t, "aws_retry_interval", prefix) {
            p.aws_retry.interval = v;
        }
        if let Some(v) = self.integer(t, "aws_retry_attempts", prefix, 1..=50) {
            p.aws_retry.attempts = v as u32;
        }
        if let Some(v) = self.float(t, "aws_retry_backoff", prefix, 1.0, 10.0) {
            p.aws_retry.backoff = v;
        }
        if p.approval_expiry <= p.approval_timeout {
            let key = ["approval_expiry", "approval_timeout"]
                .into_iter()
                .find(|k| self.get(t, k).is_some());
            let at = key
                .and_then(|k| self.get(t, k))
                .map_or(0, |v| v.span().start);
            let msg = format!(
                "approval_expiry ({}) must be longer than approval_timeout ({}): a run would expire before anyone is paged",
                crate::domain::format_duration(p.approval_expiry),
                crate::domain::format_duration(p.approval_timeout)
            );
            self.issue(&join(prefix, key.unwrap_or("approval_expiry")), at, msg);
        }
        for key in [
            "approval_timeout",
            "approval_expiry",
            "snapshot_poll_interval",
            "modify_poll_interval",
            "modify_timeout",
            "hook_timeout",
            "aws_retry_interval",
        ] {
            if let Some(v) = self.get(t, key) {
                let zero = matches!(v.get_ref(), DeValue::String(s) if parse_duration(s) == Ok(Duration::ZERO));
                if zero {
                    let at = v.span().start;
                    self.issue(&join(prefix, key), at, "must be longer than zero");
                }
            }
        }
        p
    }

    /// `[accounts.<name>]`: other AWS accounts, each with its id, the role to assume there,
    /// and the regions its groups may be in.
    fn accounts(&mut self, root: &Table<'_>) -> BTreeMap<String, AccountConfig> {
        let mut out = BTreeMap::new();
        let Some(accounts) = self.sub_table(root, "accounts", "") else {
            return out;
        };
        let accounts = accounts.clone();
        for (key, value) in accounts.iter() {
            let name: &str = key.get_ref();
            let prefix = format!("accounts.{name}");
            let ok_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok_name {
                let msg = "an account's name is letters, digits, `-` and `_` (at most 64)";
                self.issue(&prefix, key.span().start, msg);
                continue;
            }
            let DeValue::Table(t) = value.get_ref() else {
                let msg = format!("expected a table, found {}", value.get_ref().type_str());
                self.issue(&prefix, value.span().start, msg);
                continue;
            };
            self.unknown_keys(t, &prefix, ACCOUNT_KEYS);
            let account_id = self.parsed(t, "account_id", &prefix, |s| {
                if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(s.to_string())
                } else {
                    Err(format!("`{s}` is not a 12-digit AWS account id"))
                }
            });
            let Some(account_id) = account_id else {
                if self.get(t, "account_id").is_none() {
                    self.issue(&prefix, key.span().start, "`account_id` is required");
                }
                continue;
            };
            let role_arn = self.parsed(t, "role_arn", &prefix, |s| {
                let (account, role) = parse_role_arn(s)?;
                if account != account_id {
                    return Err(format!(
                        "the role is in account {account}, not this table's account_id {account_id}"
                    ));
                }
                let _ = role;
                Ok(s.to_string())
            });
            let external_id = self.parsed(t, "external_id", &prefix, |s| {
                let ok = (2..=1224).contains(&s.len())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c));
                match ok {
                    true => Ok(s.to_string()),
                    false => Err("an ExternalId is 2 to 1224 of letters, digits and +=,.@:/-_"),
                }
            });
            let mut regions = Vec::new();
            if let Some(v) = self.get(t, "regions") {
                let at = v.span().start;
                match v.get_ref() {
                    DeValue::Array(items) => {
                        for item in items.iter() {
                            match item.get_ref() {
                                DeValue::String(r) => match parse_region(r) {
                                    Ok(()) => regions.push(r.to_string()),
                                    Err(e) => self.issue(&format!("{prefix}.regions"), at, e),
                                },
                                other => {
                                    let msg =
                                        format!("expected a region, found {}", other.type_str());
                                    self.issue(&format!("{prefix}.regions"), at, msg);
                                }
                            }
                        }
                    }
                    other => {
                        let msg = format!("expected a list of regions, found {}", other.type_str());
                        self.issue(&format!("{prefix}.regions"), at, msg);
                    }
                }
            }
            out.insert(
                name.to_string(),
                AccountConfig {
                    name: name.to_string(),
                    account_id,
                    role_arn,
                    external_id,
                    regions,
                },
            );
        }
        out
    }

    fn groups(
        &mut self,
        root: &Table<'_>,
        defaults: &Policy,
        default_channel: Option<&ChannelId>,
        accounts: &BTreeMap<String, AccountConfig>,
    ) -> BTreeMap<ReplicationGroupId, GroupConfig> {
        let mut out = BTreeMap::new();
        let Some(groups) = self.sub_table(root, "groups", "") else {
            return out;
        };
        let groups = groups.clone();
        for (key, value) in groups.iter() {
            let name: &str = key.get_ref();
            let prefix = format!("groups.{name}");
            let id = match ReplicationGroupId::parse(name) {
                Ok(id) => id,
                Err(e) => {
                    self.issue(&prefix, key.span().start, e.to_string());
                    continue;
                }
            };
            let DeValue::Table(t) = value.get_ref() else {
                let msg = format!("expected a table, found {}", value.get_ref().type_str());
                self.issue(&prefix, value.span().start, msg);
                continue;
            };
            let policy = self.policy(t, &prefix, defaults, GROUP_KEYS);
            let channel = self
                .parsed(t, "channel", &prefix, ChannelId::parse)
                .or_else(|| default_channel.cloned());
            let aws_id = self
                .parsed(t, "id", &prefix, ReplicationGroupId::parse)
                .filter(|aws| *aws != id);
            let account = self.parsed(t, "account", &prefix, |a| match accounts.get(a) {
                Some(_) => Ok(a.to_string()),
                None if accounts.is_empty() => Err(format!(
                    "no `[accounts.{a}]` table: add one with its account_id (and role_arn)"
                )),
                None => {
                    let names: Vec<&str> = accounts.keys().map(String::as_str).collect();
                    let hint = match closest(a, &names) {
                        Some(k) => format!("did you mean `{k}`?"),
                        None => format!("known: {}", names.join(", ")),
                    };
                    Err(format!("no `[accounts.{a}]` table; {hint}"))
                }
            });
            let region = self.parsed(t, "region", &prefix, |r| {
                parse_region(r)?;
                match account.as_ref().and_then(|a| accounts.get(a)) {
                    Some(a) if !a.regions.is_empty() && !a.regions.iter().any(|x| x == r) => {
                        Err(format!(
                            "account `{}` lists only {} in its `regions`",
                            a.name,
                            a.regions.join(", ")
                        ))
                    }
                    _ => Ok(r.to_string()),
                }
            });
            if out.contains_key(&id) {
                self.issue(&prefix, key.span().start, "this group is configured twice");
                continue;
            }
            if let Some(channel) = channel {
                let gc = GroupConfig {
                    aws_id,
                    account,
                    region,
                    ..GroupConfig::new(id.clone(), channel, policy)
                };
                let place = (gc.account.clone(), gc.region.clone(), gc.aws_id().clone());
                if let Some(twin) = out.values().find(|o: &&GroupConfig| {
                    (o.account.clone(), o.region.clone(), o.aws_id().clone()) == place
                }) {
                    let msg = format!(
                        "`{}` is the same replication group in the same account and region: \
                         one name per group",
                        twin.id
                    );
                    self.issue(&prefix, key.span().start, msg);
                    continue;
                }
                out.insert(id, gc);
            }
        }
        out
    }
}

/// An AWS region code: `us-east-1`, `eu-west-2`, `us-gov-west-1`, `ap-southeast-4`.
fn parse_region(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split('-').collect();
    let ok = parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty();
    match ok {
        true => Ok(()),
        false => Err(format!("`{s}` is not an AWS region like `eu-west-1`")),
    }
}

/// An IAM role ARN: its account and role name.
fn parse_role_arn(s: &str) -> Result<(String, String), String> {
    let bad = || format!("`{s}` is not a role ARN like `arn:aws:iam::123456789012:role/name`");
    let rest = s.strip_prefix("arn:").ok_or_else(bad)?;
    let mut parts = rest.splitn(5, ':');
    let (partition, service, region, account, resource) = (
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
    );
    let role = resource.strip_prefix("role/").ok_or_else(bad)?;
    let ok = partition.starts_with("aws")
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !role.is_empty()
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c));
    match ok {
        true => Ok((account.to_string(), role.to_string())),
        false => Err(bad()),
    }
}

/// Does `database` name a PostgreSQL server rather than an SQLite file?
pub fn is_postgres_url(s: &str) -> bool {
    let s = s.trim_start();
    ["postgres://", "postgresql://"]
        .iter()
        .any(|p| s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p))
}

/// `s` as a TOML basic string: quotes and backslashes escaped, and every control character
/// (which TOML allows only escaped; Rust's `{:?}` spells some of them in ways TOML rejects).
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A URL fit to print: no user:password, no query string (either may carry a token).
fn redact_url(url: Option<&str>) -> String {
    let Some(url) = url else {
        return String::new();
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = match rest.split_once('@') {
        Some((userinfo, host)) if !userinfo.contains('/') => format!("[redacted]@{host}"),
        _ => rest.to_string(),
    };
    let rest = match rest.split_once('?') {
        Some((path, _)) => format!("{path}?[redacted]"),
        None => rest,
    };
    if scheme.is_empty() {
        rest
    } else {
        format!("{scheme}://{rest}")
    }
}

fn parse_hook_url(s: &str) -> Result<Option<String>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.starts_with("https://") || s.starts_with("http://") {
        Ok(Some(s.to_string()))
    } else {
        Err(format!(
            "`{s}` is not an http(s) URL (leave it empty for no hook)"
        ))
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The known key closest to a typo, if it is close enough to be a likely typo.
fn closest<'k>(typo: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(typo, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_EXAMPLE: &str = r#"
listen = "0.0.0.0:8080"
database = "redis-autoscaler.db"

[slack]
channel = "C0123ABCD"              # where alarm-started runs are posted
approvers = ["U0123ABCD", "S0456EFGH"]   # user IDs (U…/W…) and user-group IDs (S…)
command = "/redis"

[alarms]
description_prefix = "Redis memory:"

[defaults]
approval = "required"              # required | auto
approval_timeout = "15m"
on_approval_timeout = "escalate"   # escalate (page, keep waiting) | approve
min_approvals = 1                  # 2 = two different people must approve
allow_self_approval = false        # may the person who asked for a run approve it?
snapshot_poll_interval = "30s"
snapshot_max_polls = 120
modify_poll_interval = "30s"
modify_timeout = "2h"
cooldown = "6h"
max_node_type = "cache.r6g.4xlarge"
pause_url = ""                     # optional hooks: POSTed before the snapshot…
resume_url = ""                    # …and after the upsize (also after a failure)

[groups.prod-jobs]                 # a replication group id
max_node_type = "cache.r6g.2xlarge"
channel = "C0999WXYZ"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &Env::default())
    }

    #[test]
    fn the_design_example_parses_into_typed_values() {
        let c = parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.slack.channel.as_str(), "C0123ABCD");
        assert_eq!(c.slack.approvers.len(), 2);
        assert_eq!(c.defaults.approval_timeout, Duration::from_secs(900));
        assert_eq!(c.defaults.pause_url, None);
        let g = c
            .group(&ReplicationGroupId::parse("prod-jobs").unwrap())
            .unwrap();
        assert_eq!(g.channel.as_str(), "C0999WXYZ");
        assert_eq!(
            g.policy.max_node_type.as_ref().unwrap().to_string(),
            "cache.r6g.2xlarge"
        );
        // Keys the group does not set come from [defaults].
        assert_eq!(g.policy.modify_timeout, Duration::from_secs(7200));
        assert_eq!(g.policy.snapshot_max_polls, 120);
    }

    #[test]
    fn a_group_overrides_defaults_key_by_key() {
        let c = parse(
            r#"
[slack]
channel = "C0123ABCD"
[defaults]
approval_timeout = "5m"
cooldown = "1h"
[groups.a]
cooldown = "2h"
"#,
        )
        .unwrap();
        let g = c.group(&ReplicationGroupId::parse("a").unwrap()).unwrap();
        assert_eq!(g.policy.cooldown, Duration::from_secs(7200));
        assert_eq!(g.policy.approval_timeout, Duration::from_secs(300));
        assert_eq!(
            g.channel.as_str(),
            "C0123ABCD",
            "channel falls back to [slack] channel"
        );
    }

    #[test]
    fn snapshot_source_defaults_to_a_replica_and_a_group_may_choose_another() {
        let c = parse(
            "[slack]\nchannel = \"C0123ABCD\"\n[defaults]\nsnapshot_source = \"group\"\n[groups.a]\nsnapshot_source = \"primary\"\n[groups.b]\n",
        )
        .unwrap();
        let source = |g: &str| {
            let id = ReplicationGroupId::parse(g).unwrap();
            c.group(&id).unwrap().policy.snapshot_source
        };
        assert_eq!(source("a"), SnapshotSource::Primary);
        assert_eq!(source("b"), SnapshotSource::Group);
        assert_eq!(
            parse(DESIGN_EXAMPLE).unwrap().defaults.snapshot_source,
            SnapshotSource::Replica
        );
        assert!(c.render_redacted().contains("snapshot_source = \"group\""));
    }

    #[test]
    fn a_snapshot_source_typo_names_the_allowed_values() {
        let err =
            parse("[slack]\nchannel = \"C0123ABCD\"\n[defaults]\nsnapshot_source = \"replicas\"\n")
                .unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        let issue = &err.issues[0];
        assert_eq!(issue.key, "defaults.snapshot_source");
        assert_eq!(issue.line, 4);
        assert!(
            issue
                .message
                .contains("`replicas` is not one of: replica, primary, group"),
            "{}",
            issue.message
        );
    }

    #[test]
    fn the_forecast_window_defaults_to_an_hour_and_zero_turns_it_off() {
        let c = parse(
            "[slack]\nchannel = \"C0123ABCD\"\n[defaults]\nforecast_window = \"30m\"\n[groups.a]\nforecast_window = \"0s\"\n[groups.b]\n",
        )
        .unwrap();
        let window = |g: &str| {
            let id = ReplicationGroupId::parse(g).unwrap();
            c.group(&id).unwrap().policy.forecast_window
        };
        assert_eq!(window("a"), Duration::ZERO, "\"0s\": no forecast");
        assert_eq!(window("b"), Duration::from_secs(1800), "from [defaults]");
        assert_eq!(
            parse(DESIGN_EXAMPLE).unwrap().defaults.forecast_window,
            Duration::from_secs(3600)
        );
        assert!(c.render_redacted().contains("forecast_window = \"30m\""));
        let err =
            parse("[slack]\nchannel = \"C0123ABCD\"\n[defaults]\nforecast_window = \"soon\"\n")
                .unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        assert_eq!(err.issues[0].key, "defaults.forecast_window");
    }

    #[test]
    fn forecast_alert_is_off_unless_set_and_the_watch_interval_must_be_positive() {
        let c = parse(
            "[slack]\nchannel = \"C0123ABCD\"\n[alarms]\nforecast_interval = \"2m\"\n[groups.jobs]\nforecast_alert = \"30m\"\n[groups.cache]\n",
        )
        .unwrap();
        let alert = |g: &str| {
            c.group(&ReplicationGroupId::parse(g).unwrap())
                .unwrap()
                .policy
                .forecast_alert
        };
        assert_eq!(alert("jobs"), Duration::from_secs(1800));
        assert_eq!(alert("cache"), Duration::ZERO, "off by default");
        assert_eq!(c.alarms.forecast_interval, Duration::from_secs(120));
        assert!(c.render_redacted().contains("forecast_alert = \"30m\""));
        let err = parse("[slack]\nchannel = \"C0123ABCD\"\n[alarms]\nforecast_interval = \"0s\"\n")
            .unwrap_err();
        assert_eq!(err.issues[0].key, "alarms.forecast_interval", "{err}");
    }

    #[test]
    fn a_group_may_skip_the_snapshot_and_a_typo_names_the_allowed_values() {
        let c = parse(
            "[slack]\nchannel = \"C0123ABCD\"\n[groups.cache]\nsnapshot = \"skip\"\n[groups.jobs]\n",
        )
        .unwrap();
        let policy = |g: &str| {
            c.group(&ReplicationGroupId::parse(g).unwrap())
                .unwrap()
                .policy
                .snapshot
        };
        assert_eq!(policy("cache"), SnapshotPolicy::Skip);
        assert_eq!(policy("jobs"), SnapshotPolicy::Take, "the default");
        assert!(c.render_redacted().contains("snapshot = \"skip\""));
        let err = parse("[slack]\nchannel = \"C0123ABCD\"\n[groups.cache]\nsnapshot = \"none\"\n")
            .unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        assert_eq!(err.issues[0].key, "groups.cache.snapshot");
        assert!(
            err.issues[0]
                .message
                .contains("`none` is not one of: take, skip"),
            "{}",
            err.issues[0].message
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_a_suggestion() {
        let err = parse("[slack]\nchannel = \"C0123ABCD\"\n\n[defaults]\napprovl = \"auto\"\n")
            .unwrap_err();
        assert_eq!(err.issues.len(), 1);
        let issue = &err.issues[0];
        assert_eq!(issue.key, "defaults.approvl");
        assert_eq!(issue.line, 5);
        assert!(
            issue.message.contains("did you mean `approval`"),
            "{}",
            issue.message
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let err = parse(
            r#"
[slack]
channel = "not-a-channel"
approvers = ["U0123ABCD", "bogus"]
[defaults]
approval_timeout = "15 minutes"
max_node_type = "r6g.large"
min_approvals = 0
approval = "sometimes"
[groups.prod-jobs]
snapshot_max_polls = "ten"
colour = "blue"
"#,
        )
        .unwrap_err();
        let keys: Vec<(&str, usize)> = err
            .issues
            .iter()
            .map(|i| (i.key.as_str(), i.line))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("slack.channel", 3),
                ("slack.approvers", 4),
                ("defaults.approval_timeout", 6),
                ("defaults.max_node_type", 7),
                ("defaults.min_approvals", 8),
                ("defaults.approval", 9),
                ("groups.prod-jobs.snapshot_max_polls", 11),
                ("groups.prod-jobs.colour", 12),
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("line 6: `defaults.approval_timeout`"),
            "{text}"
        );
    }

    #[test]
    fn a_duplicate_key_is_named() {
        let err = parse("[slack]\nchannel = \"C0123ABCD\"\nchannel = \"C0123ABCE\"\n").unwrap_err();
        assert_eq!(err.issues[0].key, "channel", "{err}");
        assert_eq!(err.issues[0].line, 3, "{err}");
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let err = parse("[slack]\nchannel = \"C0123ABCD\"\nlisten = \n").unwrap_err();
        assert_eq!(err.issues[0].line, 3, "{err}");
    }

    #[test]
    fn missing_slack_channel_is_an_error() {
        let err = parse("[slack]\ncommand = \"/redis\"\n").unwrap_err();
        assert!(err.issues.iter().any(|i| i.key == "slack.channel"), "{err}");
        let err = parse("listen = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(err.issues.iter().any(|i| i.key == "slack"), "{err}");
    }

    #[test]
    fn invalid_group_ids_and_wrong_types_are_reported() {
        let err = parse("[slack]\nchannel = \"C0123ABCD\"\n[groups.Bad--Id]\n[groups.ok]\nallow_self_approval = \"yes\"\n")
            .unwrap_err();
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["groups.Bad--Id", "groups.ok.allow_self_approval"]
        );
    }

    #[test]
    fn zero_durations_are_refused() {
        let err = parse(
            "[slack]\nchannel = \"C0123ABCD\"\n[defaults]\nsnapshot_poll_interval = \"0s\"\n",
        )
        .unwrap_err();
        assert_eq!(err.issues[0].key, "defaults.snapshot_poll_interval");
    }

    #[test]
    fn an_expiry_no_longer_than_the_approval_timeout_is_refused() {
        let text = "[slack]\nchannel = \"C0123ABCD\"\n[defaults]\napproval_timeout = \"2h\"\napproval_expiry = \"1h\"\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        assert_eq!(err.issues[0].key, "defaults.approval_expiry");
        assert_eq!(err.issues[0].line, 5);
        assert!(
            err.issues[0]
                .message
                .contains("expire before anyone is paged"),
            "{err}"
        );
        // A group that shortens the expiry under the default timeout is refused too.
        let text =
            "[slack]\nchannel = \"C0123ABCD\"\n[groups.prod-jobs]\napproval_expiry = \"10m\"\n";
        let err = parse(text).unwrap_err();
        assert_eq!(
            err.issues[0].key, "groups.prod-jobs.approval_expiry",
            "{err}"
        );
    }

    #[test]
    fn an_alarm_mapped_to_an_unmanaged_group_is_refused() {
        let text = "[slack]\nchannel = \"C0123ABCD\"\n[alarms.groups]\n\"Jobs memory\" = \"prod-jobz\"\n[groups.prod-jobs]\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        assert_eq!(err.issues[0].key, "alarms.groups.Jobs memory");
        assert_eq!(err.issues[0].line, 4);
        assert!(
            err.issues[0].message.contains("not a managed group"),
            "{err}"
        );
    }

    #[test]
    fn secrets_come_from_the_environment_and_are_redacted() {
        let env = Env::default()
            .with("SLACK_BOT_TOKEN", "xoxb-abc-secret")
            .with("SLACK_API_URL", "http://127.0.0.1:9/api/");
        let c = Config::parse(DESIGN_EXAMPLE, &env).unwrap();
        assert_eq!(
            c.secrets.slack_bot_token.as_ref().unwrap().expose(),
            "xoxb-abc-secret"
        );
        assert_eq!(c.endpoints.slack_api_url, "http://127.0.0.1:9/api");
        assert!(!format!("{c:?}").contains("xoxb-abc-secret"));
        assert!(!c.render_redacted().contains("xoxb-abc-secret"));
        assert!(c.render_redacted().contains("SLACK_BOT_TOKEN: set"));
        assert!(!format!("{env:?}").contains("xoxb-abc-secret"));
    }

    #[test]
    fn bad_endpoint_urls_are_errors() {
        let env = Env::default().with("PAGERDUTY_EVENTS_URL", "events.pagerduty.com");
        let err = Config::parse(DESIGN_EXAMPLE, &env).unwrap_err();
        assert_eq!(err.issues[0].key, "PAGERDUTY_EVENTS_URL");
    }

    const SOCKET: &str = "[slack]\nchannel = \"C0123ABCD\"\nmode = \"socket\"\n";

    #[test]
    fn socket_mode_needs_the_app_token_and_no_signing_secret() {
        let env = Env::default()
            .with("SLACK_BOT_TOKEN", "xoxb-1")
            .with("SLACK_APP_TOKEN", "xapp-1-A0123-456-abcdef-secret")
            .with("PAGERDUTY_ROUTING_KEY", "r")
            .with("ALARM_API_KEY", "k");
        let c = Config::parse(SOCKET, &env).unwrap();
        assert_eq!(c.slack.mode, SlackMode::Socket);
        assert!(c.missing_secrets().is_empty(), "{:?}", c.missing_secrets());
        let shown = c.render_redacted();
        assert!(shown.contains("mode = \"socket\""), "{shown}");
        assert!(shown.contains("# SLACK_APP_TOKEN: set"), "{shown}");
        assert!(shown.contains("# SLACK_SIGNING_SECRET: NOT SET"), "{shown}");
        assert!(!shown.contains("abcdef-secret"));
        assert!(!format!("{c:?}").contains("abcdef-secret"));
        assert_eq!(parse(&shown).unwrap().slack, c.slack);

        let without = Env::default().with("SLACK_BOT_TOKEN", "xoxb-1");
        let c = Config::parse(SOCKET, &without).unwrap();
        let missing = c.missing_secrets();
        assert!(missing.contains(&"SLACK_APP_TOKEN"), "{missing:?}");
        assert!(!missing.contains(&"SLACK_SIGNING_SECRET"), "{missing:?}");
        assert!(c.render_redacted().contains("# SLACK_APP_TOKEN: NOT SET"));
    }

    #[test]
    fn http_mode_is_the_default_and_needs_the_signing_secret_not_the_app_token() {
        let c = parse("[slack]\nchannel = \"C0123ABCD\"\n").unwrap();
        assert_eq!(c.slack.mode, SlackMode::Http);
        let missing = c.missing_secrets();
        assert!(missing.contains(&"SLACK_SIGNING_SECRET"), "{missing:?}");
        assert!(!missing.contains(&"SLACK_APP_TOKEN"), "{missing:?}");
    }

    #[test]
    fn a_slack_mode_typo_and_a_bot_token_as_app_token_are_clear_errors() {
        let err = parse("[slack]\nchannel = \"C0123ABCD\"\nmode = \"sockets\"\n").unwrap_err();
        assert_eq!(err.issues[0].key, "slack.mode", "{err}");
        assert_eq!(err.issues[0].line, 3, "{err}");
        assert!(err.to_string().contains("\"http\""), "{err}");
        let err = parse("[slack]\nchannel = \"C0123ABCD\"\nmdoe = \"socket\"\n").unwrap_err();
        assert!(err.to_string().contains("mdoe"), "{err}");
        let env = Env::default().with("SLACK_APP_TOKEN", "xoxb-a-bot-token-secret");
        let err = Config::parse(SOCKET, &env).unwrap_err();
        assert_eq!(err.issues[0].key, "SLACK_APP_TOKEN", "{err}");
        assert!(err.to_string().contains("xapp-"), "{err}");
        assert!(!err.to_string().contains("bot-token-secret"), "{err}");
    }

    #[test]
    fn the_redacted_rendering_parses_back_to_the_same_config() {
        let c = parse(DESIGN_EXAMPLE).unwrap();
        let again = parse(&c.render_redacted()).unwrap();
        assert_eq!(again.groups, c.groups);
        assert_eq!(again.defaults, c.defaults);
        assert_eq!(again.slack, c.slack);
    }

    #[test]
    fn the_redacted_rendering_keeps_milliseconds_and_any_string() {
        // Found by the config fuzz target's round trip (tests/fuzz/corpus/config/): `1500ms`
        // printed as `1s`, and strings printed with Rust's escapes, which TOML rejects.
        let text = r#"
database = "data/\"odd\" \\ name.db"
[slack]
channel = "C0123ABCD"
[alarms]
description_prefix = "Redis\u0007 memory\u007f:\t\u0000"
sns_topic_arns = ["arn:aws:sns:us-east-1:123456789012:a\"b"]
[alarms.groups]
"name with \"quotes\" and \u001b[31m" = "prod-jobs"
[defaults]
snapshot_poll_interval = "1500ms"
pause_url = "https://hooks.example/pause\"x"
[groups.prod-jobs]
"#;
        let c = parse(text).unwrap();
        let shown = c.render_redacted();
        let again = parse(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
        assert_eq!(again.database, c.database);
        assert_eq!(again.alarms, c.alarms);
        assert_eq!(again.defaults, c.defaults);
        assert_eq!(
            again.defaults.snapshot_poll_interval,
            Duration::from_millis(1500)
        );
        assert!(
            shown.contains("snapshot_poll_interval = \"1500ms\""),
            "{shown}"
        );
    }

    #[test]
    fn risky_policies_are_warned_about() {
        let c = parse(
            "[slack]\nchannel = \"C0123ABCD\"\napprovers = [\"U0123ABCD\"]\n[defaults]\napproval = \"auto\"\nmax_node_type = \"\"\n[groups.a]\n",
        )
        .unwrap();
        let w = c.warnings();
        assert!(w.iter().any(|w| w.contains("no max_node_type")), "{w:?}");
    }

    #[test]
    fn hook_urls_print_without_credentials_and_hooks_need_a_signing_secret() {
        let text = format!(
            "{DESIGN_EXAMPLE}\n[groups.other]\npause_url = \"https://u:p@hooks.example/pause?token=abc\"\n"
        );
        let c = parse(&text).unwrap();
        let shown = c.render_redacted();
        assert!(
            shown.contains("https://[redacted]@hooks.example/pause?[redacted]"),
            "{shown}"
        );
        assert!(!shown.contains("token=abc") && !shown.contains("u:p"));
        assert!(c.missing_secrets().contains(&"HOOK_SIGNING_SECRET"));
        let env = Env::default()
            .with("SLACK_BOT_TOKEN", "x")
            .with("SLACK_SIGNING_SECRET", "x")
            .with("PAGERDUTY_ROUTING_KEY", "x")
            .with("ALARM_API_KEY", "x");
        assert_eq!(
            Config::parse(DESIGN_EXAMPLE, &env)
                .unwrap()
                .missing_secrets(),
            Vec::<&str>::new()
        );
        assert_eq!(
            Config::parse(&text, &env).unwrap().missing_secrets(),
            vec!["HOOK_SIGNING_SECRET"]
        );
    }

    #[test]
    fn the_http_table_sets_the_server_limits_and_defaults_without_it() {
        let c = parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(c.http, HttpConfig::default());
        assert_eq!(c.http.header_timeout, Duration::from_secs(5));
        assert_eq!(c.http.max_connections, 10_000);
        let text = format!(
            "{DESIGN_EXAMPLE}\n[http]\nheader_timeout = \"250ms\"\nbody_timeout = \"1s\"\nidle_timeout = \"2m\"\nmax_connections = 2_000\nmax_requests = 64\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.http,
            HttpConfig {
                header_timeout: Duration::from_millis(250),
                body_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(120),
                max_connections: 2000,
                max_requests: 64,
            }
        );
        assert_eq!(parse(&c.render_redacted()).unwrap().http, c.http);
    }

    #[test]
    fn the_pricing_table_turns_prices_off_or_moves_the_api_and_typos_are_named() {
        let c = parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(c.pricing, PricingConfig::default());
        assert!(c.pricing.enabled);
        assert_eq!(c.pricing.region, "us-east-1");
        let text =
            format!("{DESIGN_EXAMPLE}\n[pricing]\nenabled = false\nregion = \"ap-south-1\"\n");
        let c = parse(&text).unwrap();
        assert!(!c.pricing.enabled);
        assert_eq!(c.pricing.region, "ap-south-1");
        assert_eq!(parse(&c.render_redacted()).unwrap().pricing, c.pricing);
        let err = parse(&format!(
            "{DESIGN_EXAMPLE}\n[pricing]\nenable = false\nregion = \"eu-west-1\"\n"
        ))
        .unwrap_err();
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["pricing.enable", "pricing.region"], "{err}");
        assert!(
            err.issues[0].message.contains("did you mean `enabled`"),
            "{err}"
        );
        assert!(
            err.issues[1]
                .message
                .contains("does not serve the AWS Price List API"),
            "{err}"
        );
        let err = parse(&format!("{DESIGN_EXAMPLE}\n[pricing]\nenabled = \"yes\"\n")).unwrap_err();
        assert_eq!(err.issues[0].key, "pricing.enabled", "{err}");
    }

    #[test]
    fn the_retention_table_sets_what_is_kept_and_typos_are_named() {
        let c = parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(c.retention, RetentionConfig::default());
        assert_eq!(c.retention.keep.runs, Duration::from_secs(30 * 86_400));
        assert_eq!(c.retention.keep.records, Duration::from_secs(7 * 86_400));
        let text = format!(
            "{DESIGN_EXAMPLE}\n[retention]\nruns = \"90d\"\nrecords = \"2d\"\nprune_interval = \"1m\"\nprune_batch = 50\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.retention.keep.runs, Duration::from_secs(90 * 86_400));
        assert_eq!(c.retention.keep.records, Duration::from_secs(2 * 86_400));
        assert_eq!(c.retention.prune_interval, Duration::from_secs(60));
        assert_eq!(c.retention.prune_batch, 50);
        assert_eq!(parse(&c.render_redacted()).unwrap().retention, c.retention);
        let err = parse(
            "[slack]\nchannel = \"C0123ABCD\"\n[retention]\nrun = \"30d\"\nrecords = \"0s\"\nprune_batch = 0\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "retention.run",
                "retention.records",
                "retention.prune_batch"
            ],
            "{err}"
        );
        assert!(
            err.issues[0].message.contains("did you mean `runs`"),
            "{err}"
        );
    }

    #[test]
    fn alarm_notice_windows_and_delivery_time_are_read() {
        let c = parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(c.alarms.notice_window, Duration::from_secs(3600));
        assert_eq!(c.delivery.retry_for, Duration::from_secs(3600));
        let text = DESIGN_EXAMPLE.replace(
            "[alarms]\n",
            "[delivery]\nretry_for = \"20m\"\n\n[alarms]\nnotice_window = \"10m\"\nnotice_update_delay = \"5s\"\n",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.delivery.retry_for, Duration::from_secs(1200));
        assert_eq!(c.alarms.notice_window, Duration::from_secs(600));
        assert_eq!(c.alarms.notice_update_delay, Duration::from_secs(5));
        assert_eq!(parse(&c.render_redacted()).unwrap().alarms, c.alarms);
    }

    #[test]
    fn the_sqs_queue_and_its_polling_are_read_and_typos_are_named() {
        let c = parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(c.alarms.sqs_queue_url, None);
        assert_eq!(c.alarms.sqs_wait, Duration::from_secs(20));
        assert_eq!(c.alarms.sqs_visibility, None);
        let with = |keys: &str| DESIGN_EXAMPLE.replace("[alarms]\n", &format!("[alarms]\n{keys}"));
        let c = parse(&with(
            "sqs_queue_url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/redis-alarms\"\nsqs_wait = \"5s\"\nsqs_visibility = \"2m\"\nsqs_retry_interval = \"200ms\"\n",
        ))
        .unwrap();
        let url = c.alarms.sqs_queue_url.as_ref().unwrap();
        assert_eq!((url.region(), url.name()), ("eu-west-1", "redis-alarms"));
        assert_eq!(c.alarms.sqs_wait, Duration::from_secs(5));
        assert_eq!(c.alarms.sqs_visibility, Some(Duration::from_secs(120)));
        assert_eq!(c.alarms.sqs_retry_interval, Duration::from_millis(200));
        assert_eq!(parse(&c.render_redacted()).unwrap().alarms, c.alarms);
        let none = parse(&with("sqs_queue_url = \"\"\nsqs_visibility = \"\"\n")).unwrap();
        assert_eq!(
            (none.alarms.sqs_queue_url, none.alarms.sqs_visibility),
            (None, None)
        );
        let b = parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(parse(&b.render_redacted()).unwrap().alarms, b.alarms);
        for (keys, key, says) in [
            (
                "sqs_queue_url = \"https://sqs.eu-west-1.amazonaws.com/123456789012\"\n",
                "alarms.sqs_queue_url",
                "is not an SQS queue URL",
            ),
            ("sqs_wait = \"30s\"\n", "alarms.sqs_wait", "at most 20"),
            (
                "sqs_wait = \"1500ms\"\n",
                "alarms.sqs_wait",
                "whole seconds",
            ),
            ("sqs_wait = \"0s\"\n", "alarms.sqs_wait", "at least 1s"),
            (
                "sqs_visibility = \"13h\"\n",
                "alarms.sqs_visibility",
                "at most 43200",
            ),
            (
                "sqs_retry_interval = \"0s\"\n",
                "alarms.sqs_retry_interval",
                "longer than zero",
            ),
            ("sqs_queue = \"x\"\n", "alarms.sqs_queue", "known keys here"),
        ] {
            let err = parse(&with(keys)).unwrap_err();
            assert_eq!(err.issues[0].key, key, "{err}");
            assert!(err.issues[0].message.contains(says), "{err}");
        }
    }

    #[test]
    fn http_typos_and_bad_values_are_named() {
        let err = parse(
            "[slack]\nchannel = \"C0123ABCD\"\n[http]\nheader_timout = \"5s\"\nbody_timeout = \"0s\"\nidle_timeout = \"soon\"\nmax_connections = 0\nmax_requests = \"many\"\n",
        )
        .unwrap_err();
        let keys: Vec<(&str, usize)> = err
            .issues
            .iter()
            .map(|i| (i.key.as_str(), i.line))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("http.header_timout", 4),
                ("http.body_timeout", 5),
                ("http.idle_timeout", 6),
                ("http.max_connections", 7),
                ("http.max_requests", 8),
            ],
            "{err}"
        );
        assert!(
            err.issues[0]
                .message
                .contains("did you mean `header_timeout`"),
            "{err}"
        );
        assert!(err.issues[1].message.contains("longer than zero"), "{err}");
    }

    #[test]
    fn retry_delays_grow_by_the_backoff() {
        let r = RetryPolicy {
            interval: Duration::from_secs(15),
            attempts: 5,
            backoff: 1.5,
        };
        assert_eq!(r.delay_before(2), Duration::from_secs(15));
        assert_eq!(r.delay_before(3), Duration::from_millis(22_500));
        assert_eq!(r.delay_before(4), Duration::from_millis(33_750));
        assert_eq!(r.delay_before(30), RetryPolicy::MAX_DELAY, "capped");
        assert_eq!(r.for_pages().attempts, 20);
    }

    #[test]
    fn postgres_is_chosen_by_a_url_or_database_url_and_a_password_never_sits_in_the_file() {
        let c = parse(DESIGN_EXAMPLE).unwrap();
        assert!(c.postgres.is_none(), "SQLite is the default");

        let text = format!(
            "database = \"postgres://bot@db.internal:5432/redis_autoscaler?sslmode=require\"\n{DESIGN_EXAMPLE}\n[postgres]\nlease = \"10s\"\npool_size = 4\nca_file = \"/etc/ssl/rds.pem\"\n"
        );
        let text = text.replacen("database = \"redis-autoscaler.db\"\n", "", 1);
        let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let pg = c.postgres.as_ref().unwrap();
        assert!(pg.from_file);
        assert_eq!(pg.lease, Duration::from_secs(10));
        assert_eq!(pg.pool_size, 4);
        assert_eq!(pg.ca_file.as_deref(), Some(Path::new("/etc/ssl/rds.pem")));
        let shown = c.render_redacted();
        let again = parse(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
        assert_eq!(again.postgres.unwrap().lease, Duration::from_secs(10));

        let with_password = text.replace("postgres://bot@", "postgres://bot:hunter2@");
        let err = parse(&with_password).unwrap_err().to_string();
        assert!(err.contains("DATABASE_PASSWORD"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        let env = Env::default()
            .with("DATABASE_URL", "postgres://bot:s3cret-pw@db.internal/ra")
            .with("DATABASE_PASSWORD", "other-pw");
        let c = Config::parse(DESIGN_EXAMPLE, &env).unwrap();
        let pg = c.postgres.as_ref().unwrap();
        assert!(!pg.from_file);
        assert_eq!(pg.url.expose(), "postgres://bot:s3cret-pw@db.internal/ra");
        assert_eq!(pg.password.as_ref().unwrap().expose(), "other-pw");
        let shown = c.render_redacted();
        assert!(
            !shown.contains("s3cret-pw") && !shown.contains("other-pw"),
            "{shown}"
        );
        assert!(
            !format!("{c:?}").contains("s3cret-pw"),
            "Debug never shows it"
        );
        assert!(shown.contains("# DATABASE_URL: set"), "{shown}");

        let env = Env::default().with("DATABASE_URL", "postgres://bot:pw@db/ra?sslmode=sometimes");
        let err = Config::parse(DESIGN_EXAMPLE, &env).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL is not a PostgreSQL"), "{err}");
        assert!(!err.contains("bot:pw"), "{err}");
    }

    #[test]
    fn a_postgres_table_without_postgres_and_typos_in_it_are_named() {
        let err = parse(&format!("{DESIGN_EXAMPLE}\n[postgres]\nlease = \"5s\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("the store is the SQLite file"), "{err}");
        let env = Env::default().with("DATABASE_URL", "postgres://db/ra");
        let text = format!("{DESIGN_EXAMPLE}\n[postgres]\nleese = \"5s\"\npool_size = 0\n");
        let err = Config::parse(&text, &env).unwrap_err().to_string();
        assert!(err.contains("did you mean `lease`"), "{err}");
        assert!(err.contains("postgres.pool_size"), "{err}");
        let text = format!("{DESIGN_EXAMPLE}\n[postgres]\nlease = \"200ms\"\n");
        let err = Config::parse(&text, &env).unwrap_err().to_string();
        assert!(err.contains("at least 1s"), "{err}");
    }

    #[test]
    fn groups_in_other_accounts_and_regions_are_named_and_checked() {
        let text = format!(
            r#"{DESIGN_EXAMPLE}
[accounts.payments]
account_id = "210987654321"
role_arn = "arn:aws:iam::210987654321:role/redis-autoscaler"
external_id = "redis-autoscaler-prod"
regions = ["eu-west-1", "us-east-1"]

[groups.prod-jobs-eu]
id = "prod-jobs"
account = "payments"
region = "eu-west-1"
"#
        );
        let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let eu = c
            .group(&ReplicationGroupId::parse("prod-jobs-eu").unwrap())
            .unwrap();
        assert_eq!(eu.aws_id().as_str(), "prod-jobs");
        assert_eq!(eu.account.as_deref(), Some("payments"));
        assert_eq!(eu.region.as_deref(), Some("eu-west-1"));
        let home = c
            .group(&ReplicationGroupId::parse("prod-jobs").unwrap())
            .unwrap();
        assert_eq!(
            (home.aws_id().as_str(), home.account.as_deref()),
            ("prod-jobs", None)
        );
        let a = &c.accounts["payments"];
        assert_eq!(a.account_id, "210987654321");
        assert_eq!(a.external_id.as_deref(), Some("redis-autoscaler-prod"));
        let shown = c.render_redacted();
        let again = parse(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
        assert_eq!(again.accounts, c.accounts);
        assert_eq!(again.groups, c.groups);

        let bad = |from: &str, to: &str| -> String {
            assert!(text.contains(from), "{from}");
            parse(&text.replacen(from, to, 1)).unwrap_err().to_string()
        };
        let e = bad("account = \"payments\"", "account = \"paymnts\"");
        assert!(e.contains("did you mean `payments`"), "{e}");
        let e = bad("region = \"eu-west-1\"\n", "region = \"eu-central-1\"\n");
        assert!(e.contains("lists only eu-west-1, us-east-1"), "{e}");
        let e = bad("region = \"eu-west-1\"\n", "region = \"Ireland\"\n");
        assert!(e.contains("not an AWS region"), "{e}");
        let e = bad(":role/redis-autoscaler\"", ":user/redis-autoscaler\"");
        assert!(e.contains("not a role ARN"), "{e}");
        let e = bad(
            "role_arn = \"arn:aws:iam::210987654321",
            "role_arn = \"arn:aws:iam::999999999999",
        );
        assert!(e.contains("not this table's account_id"), "{e}");
        let e = bad(
            "account_id = \"210987654321\"",
            "acount_id = \"210987654321\"",
        );
        assert!(e.contains("did you mean `account_id`"), "{e}");
        let e = bad(
            "regions = [\"eu-west-1\", \"us-east-1\"]",
            "regions = \"eu-west-1\"",
        );
        assert!(e.contains("expected a list of regions"), "{e}");
        // The same group twice under two names is refused.
        let e = bad(
            "id = \"prod-jobs\"\naccount = \"payments\"\nregion = \"eu-west-1\"\n",
            "id = \"prod-jobs\"\n",
        );
        assert!(e.contains("the same replication group"), "{e}");
    }

    #[test]
    fn with_socket_mode_and_an_sqs_queue_no_inbound_secret_is_needed() {
        let text = "[slack]\nchannel = \"C0123ABCD\"\nmode = \"socket\"\n[alarms]\nsqs_queue_url = \"https://sqs.eu-west-1.amazonaws.com/123456789012/redis-autoscaler-alarms\"\n";
        let env = Env::default()
            .with("SLACK_BOT_TOKEN", "xoxb-1")
            .with("SLACK_APP_TOKEN", "xapp-1-A1-2-abc")
            .with("PAGERDUTY_ROUTING_KEY", "k");
        let c = Config::parse(text, &env).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.missing_secrets().is_empty(), "{:?}", c.missing_secrets());
        // Without the queue, alarms come over HTTP: the key is needed.
        let text = text.split("[alarms]").next().unwrap();
        let c = Config::parse(text, &env).unwrap();
        assert_eq!(c.missing_secrets(), ["ALARM_API_KEY"]);
    }
}
