//! The production [`ElastiCache`]: `aws-sdk-elasticache` with one HTTP request per call.
//!
//! Owns building the AWS configuration (the standard chain for `serve`, a fixed one for tests
//! and the demo), turning SDK answers into domain types, and sorting SDK failures into
//! [`AwsError`]. The SDK's own retries are off: the runner retries transient errors itself on a
//! persisted schedule and audits each call, so a hidden retry here would be a call nobody saw.
//! Nothing here decides what to do about an answer.

use std::sync::Once;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::config::http::HttpResponse;
use aws_sdk_elasticache::config::retry::RetryConfig;
use aws_sdk_elasticache::config::timeout::TimeoutConfig;
use aws_sdk_elasticache::config::{Credentials, SharedCredentialsProvider, SharedHttpClient};
use aws_sdk_elasticache::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_elasticache::operation::list_allowed_node_type_modifications::ListAllowedNodeTypeModificationsOutput;
use aws_sdk_elasticache::types;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::domain::{CacheClusterId, NodeType, ReplicationGroupId, SnapshotName, Timestamp};
use crate::workflow::ports::elasticache::{GroupNodes, NodeRole, SnapshotFrom};
use crate::workflow::ports::{
    AwsError, BoxFuture, CacheClusterInfo, ClusterMode, ElastiCache, GroupInfo, GroupStatus,
    Parameters, SnapshotInfo, SnapshotStatus,
};
use crate::workflow::preflight::PendingChange;

/// How long to wait for a TCP (and TLS) connection to ElastiCache.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take, end to end.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Install rustls' ring crypto provider as the process default (once; later calls and a
/// provider installed elsewhere first are fine).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The HTTP client every AWS call goes through: hyper with rustls on ring (plain `http://`
/// works too, for the simulator).
fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .operation_attempt_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The AWS configuration for `serve`: region, credentials and endpoint from the SDK's standard
/// chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_ELASTICACHE`, profiles, ECS and
/// IRSA roles), with our HTTP client, timeouts, and no SDK retries.
pub async fn load_aws_config() -> SdkConfig {
    install_crypto_provider();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts())
        .load()
        .await
}

/// A fixed configuration for talking to a local endpoint such as the simulator: fake static
/// credentials, region `us-east-1`, no SDK retries. Reads nothing from the environment.
pub fn config_for_endpoint(endpoint_url: &str) -> SdkConfig {
    install_crypto_provider();
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint_url)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDREDISAUTOSCALER",
            "not-a-secret",
            None,
            None,
            "redis-autoscaler-static",
        )))
        .http_client(http_client())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts())
        // What aws-config's providers (an assumed role's) need to time their credentials.
        .time_source(aws_smithy_async::time::SystemTimeSource::new())
        .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
        .build()
}

/// [`ElastiCache`] over the AWS SDK (and Application Auto Scaling's, for the one read-only
/// question asked of it).
#[derive(Debug, Clone)]
pub struct SdkElastiCache {
    client: Client,
    autoscaling: aws_sdk_applicationautoscaling::Client,
}

/// How many pages of a listing are read before giving up on it (100 records a page).
const MAX_PAGES: usize = 20;

impl SdkElastiCache {
    /// A client for `config`. SDK retries are switched off whatever `config` says, so each
    /// trait call is exactly one request (a listing: one per page).
    pub fn new(config: &SdkConfig) -> SdkElastiCache {
        let conf = aws_sdk_elasticache::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .build();
        let aas = aws_sdk_applicationautoscaling::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .build();
        SdkElastiCache {
            client: Client::from_conf(conf),
            autoscaling: aws_sdk_applicationautoscaling::Client::from_conf(aas),
        }
    }
}

impl SdkElastiCache {
    /// DescribeReplicationGroups for one group: the group as AWS answers it.
    async fn replication_group(
        &self,
        id: &ReplicationGroupId,
    ) -> Result<types::ReplicationGroup, AwsError> {
        let out = self
            .client
            .describe_replication_groups()
            .replication_group_id(id.as_str())
            .send()
            .await
            .map_err(from_sdk)?;
        out.replication_groups()
            .iter()
            .find(|g| {
                g.replication_group_id()
                    .is_some_and(|g| g.eq_ignore_ascii_case(id.as_str()))
            })
            .cloned()
            .ok_or_else(|| AwsError::NotFound {
                code: "ReplicationGroupNotFoundFault".to_string(),
                message: format!("DescribeReplicationGroups did not list {id}"),
            })
    }
}

/// The marker (or token) of a listing's next page; `None` on the last one.
fn next_page(marker: Option<&str>) -> Option<String> {
    marker.filter(|m| !m.is_empty()).map(str::to_string)
}

/// A listing that did not end within [`MAX_PAGES`] pages.
fn too_many_pages(call: &str) -> AwsError {
    unexpected(format!(
        "{call} did not finish within {MAX_PAGES} pages; not reading further"
    ))
}

impl SdkElastiCache {
    /// ListAllowedNodeTypeModifications for a group: both lists, up and down.
    async fn allowed_modifications(
        &self,
        id: &ReplicationGroupId,
    ) -> Result<ListAllowedNodeTypeModificationsOutput, AwsError> {
        self.client
            .list_allowed_node_type_modifications()
            .replication_group_id(id.as_str())
            .send()
            .await
            .map_err(from_sdk)
    }
}

/// The node types of one of ListAllowedNodeTypeModifications' lists.
fn node_types_of(names: &[String]) -> Result<Vec<NodeType>, AwsError> {
    names
        .iter()
        .map(|t| parse_node_type(t, "ListAllowedNodeTypeModifications"))
        .collect()
}

impl ElastiCache for SdkElastiCache {
    fn describe_group<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        Box::pin(async move { group_info(&self.replication_group(id).await?) })
    }

    fn describe_group_nodes<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<GroupNodes, AwsError>> {
        Box::pin(async move {
            let g = self.replication_group(id).await?;
            Ok(GroupNodes {
                group: group_info(&g)?,
                roles: node_roles(&g)?,
            })
        })
    }

    fn describe_cache_cluster<'a>(
        &'a self,
        id: &'a CacheClusterId,
    ) -> BoxFuture<'a, Result<CacheClusterInfo, AwsError>> {
        Box::pin(async move {
            let out = self
                .client
                .describe_cache_clusters()
                .cache_cluster_id(id.as_str())
                .send()
                .await
                .map_err(from_sdk)?;
            let cluster = out
                .cache_clusters()
                .iter()
                .find(|c| {
                    c.cache_cluster_id()
                        .is_some_and(|c| c.eq_ignore_ascii_case(id.as_str()))
                })
                .ok_or_else(|| AwsError::NotFound {
                    code: "CacheClusterNotFound".to_string(),
                    message: format!("DescribeCacheClusters did not list {id}"),
                })?;
            cache_cluster_info(cluster)
        })
    }

    fn allowed_scale_ups<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<NodeType>, AwsError>> {
        Box::pin(async move {
            let out = self.allowed_modifications(id).await?;
            node_types_of(out.scale_up_modifications())
        })
    }

    fn allowed_scale_downs<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<NodeType>, AwsError>> {
        Box::pin(async move {
            let out = self.allowed_modifications(id).await?;
            node_types_of(out.scale_down_modifications())
        })
    }

    fn create_snapshot<'a>(
        &'a self,
        from: &'a SnapshotFrom,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<SnapshotInfo, AwsError>> {
        Box::pin(async move {
            // Exactly one of the two: AWS refuses both (InvalidParameterCombination).
            let request = match from {
                SnapshotFrom::Group(g) => self
                    .client
                    .create_snapshot()
                    .replication_group_id(g.as_str()),
                SnapshotFrom::Node(n) => self.client.create_snapshot().cache_cluster_id(n.as_str()),
            };
            let out = request
                .snapshot_name(name.as_str())
                .send()
                .await
                .map_err(from_sdk)?;
            let snapshot = out
                .snapshot()
                .ok_or_else(|| unexpected("CreateSnapshot answered without a snapshot"))?;
            snapshot_info(snapshot)
        })
    }

    fn describe_snapshot<'a>(
        &'a self,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<Option<SnapshotInfo>, AwsError>> {
        Box::pin(async move {
            let out = match self
                .client
                .describe_snapshots()
                .snapshot_name(name.as_str())
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    return match from_sdk(e) {
                        AwsError::NotFound { code, .. } if code == "SnapshotNotFoundFault" => {
                            Ok(None)
                        }
                        other => Err(other),
                    };
                }
            };
            out.snapshots()
                .iter()
                .find(|s| {
                    s.snapshot_name()
                        .is_some_and(|s| s.eq_ignore_ascii_case(name.as_str()))
                })
                .map(snapshot_info)
                .transpose()
        })
    }

    fn modify_node_type<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
        node_type: &'a NodeType,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        Box::pin(async move {
            let out = self
                .client
                .modify_replication_group()
                .replication_group_id(group.as_str())
                .cache_node_type(node_type.to_string())
                .apply_immediately(true)
                .send()
                .await
                .map_err(from_sdk)?;
            let g = out.replication_group().ok_or_else(|| {
                unexpected("ModifyReplicationGroup answered without a replication group")
            })?;
            group_info(g)
        })
    }

    fn cache_parameters<'a>(
        &'a self,
        parameter_group: &'a str,
        wanted: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Parameters, AwsError>> {
        Box::pin(async move {
            let mut found = Vec::new();
            let mut marker: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let out = self
                    .client
                    .describe_cache_parameters()
                    .cache_parameter_group_name(parameter_group)
                    .max_records(100)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(from_sdk)?;
                for p in out.parameters() {
                    if let Some(name) = p.parameter_name()
                        && wanted.contains(&name)
                    {
                        found.push((name.to_string(), p.parameter_value().map(str::to_string)));
                    }
                }
                marker = next_page(out.marker());
                if marker.is_none() {
                    return Ok(found);
                }
            }
            Err(too_many_pages("DescribeCacheParameters"))
        })
    }

    fn manual_snapshots<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<SnapshotInfo>, AwsError>> {
        Box::pin(async move {
            let mut found = Vec::new();
            let mut marker: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let out = self
                    .client
                    .describe_snapshots()
                    .replication_group_id(group.as_str())
                    // `user`: the manually created ones (the answer calls them `manual`).
                    .snapshot_source("user")
                    .max_records(50)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(from_sdk)?;
                for s in out.snapshots() {
                    found.push(snapshot_info(s)?);
                }
                marker = next_page(out.marker());
                if marker.is_none() {
                    return Ok(found);
                }
            }
            Err(too_many_pages("DescribeSnapshots"))
        })
    }

    fn update_actions_in_progress<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<PendingChange>, AwsError>> {
        Box::pin(async move {
            use types::UpdateActionStatus as S;
            let mut found = Vec::new();
            let mut marker: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let out = self
                    .client
                    .describe_update_actions()
                    .replication_group_ids(group.as_str())
                    .set_update_action_status(Some(vec![
                        S::Scheduling,
                        S::Scheduled,
                        S::WaitingToStart,
                        S::InProgress,
                        S::Stopping,
                    ]))
                    .max_records(100)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(from_sdk)?;
                for a in out.update_actions() {
                    let name = a.service_update_name().unwrap_or("a service update");
                    let status = a.update_action_status().map_or("?", |s| s.as_str());
                    found.push(PendingChange::new(
                        "ServiceUpdate",
                        format!("{name} ({status})"),
                    ));
                }
                marker = next_page(out.marker());
                if marker.is_none() {
                    return Ok(found);
                }
            }
            Err(too_many_pages("DescribeUpdateActions"))
        })
    }

    fn events_since<'a>(
        &'a self,
        since: crate::domain::Timestamp,
    ) -> BoxFuture<'a, Result<Vec<crate::workflow::ports::elasticache::AwsEvent>, AwsError>> {
        Box::pin(async move {
            use crate::workflow::ports::elasticache::AwsEvent;
            // Every page (a busy account can have more than 100 events since then).
            let mut events: Vec<AwsEvent> = Vec::new();
            let mut marker: Option<String> = None;
            // The newest 500 are plenty to find a failure's reason; a busier window is cut.
            for _ in 0..5 {
                let out = self
                    .client
                    .describe_events()
                    .start_time(aws_smithy_types::DateTime::from_millis(since.as_millis()))
                    .max_records(100)
                    .set_marker(marker.take())
                    .send()
                    .await
                    .map_err(from_sdk)?;
                events.extend(out.events().iter().filter_map(|e| {
                    let at = e.date()?.to_millis().ok()?;
                    Some(AwsEvent {
                        at: crate::domain::Timestamp::from_millis(at),
                        source: e.source_identifier()?.to_string(),
                        message: e.message().unwrap_or_default().to_string(),
                    })
                }));
                marker = next_page(out.marker());
                if marker.is_none() {
                    break;
                }
            }
            // AWS lists the newest first: oldest first, keeping AWS's order within a moment.
            events.reverse();
            events.sort_by_key(|e| e.at);
            Ok(events)
        })
    }

    fn scalable_dimensions<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<String>, AwsError>> {
        Box::pin(async move {
            use aws_sdk_applicationautoscaling::types::ServiceNamespace;
            let mut found = Vec::new();
            let mut next: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let out = self
                    .autoscaling
                    .describe_scalable_targets()
                    .service_namespace(ServiceNamespace::Elasticache)
                    .resource_ids(format!("replication-group/{group}"))
                    .set_next_token(next.take())
                    .send()
                    .await
                    .map_err(from_sdk)?;
                for t in out.scalable_targets() {
                    found.push(t.scalable_dimension().as_str().to_string());
                }
                next = next_page(out.next_token());
                if next.is_none() {
                    return Ok(found);
                }
            }
            Err(too_many_pages("DescribeScalableTargets"))
        })
    }
}

/// The AWS account `config`'s credentials belong to (STS GetCallerIdentity, a call that needs
/// no permission). Asked once at start, where a throttled answer must not stop the bot: up to
/// eight tries with the SDK's jittered backoff (a few seconds in all).
pub async fn caller_account(config: &SdkConfig) -> Result<String, AwsError> {
    let conf = aws_sdk_sts::config::Builder::from(config)
        .retry_config(RetryConfig::standard().with_max_attempts(8))
        .build();
    let out = aws_sdk_sts::Client::from_conf(conf)
        .get_caller_identity()
        .send()
        .await
        .map_err(from_sdk)?;
    out.account()
        .map(str::to_string)
        .ok_or_else(|| unexpected("GetCallerIdentity answered without an account"))
}

/// An SDK failure sorted by what any caller does next, before a service's own error vocabulary
/// names it (ElastiCache's here, CloudWatch's in `cloudwatch::sdk`).
pub(crate) enum SdkFailure {
    /// AWS answered with an error code.
    Answered {
        code: String,
        message: String,
        status: u16,
    },
    /// Likely passing: a timeout, a connection failure, a body that was not an AWS answer.
    Transient {
        code: String,
        message: String,
    },
    Other {
        code: String,
        message: String,
    },
}

pub(crate) fn sdk_failure<E>(err: SdkError<E, HttpResponse>) -> SdkFailure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = error_chain(&err);
    let (transient, other) = (
        |code: &str, message: String| SdkFailure::Transient {
            code: code.to_string(),
            message,
        },
        |code: &str, message: String| SdkFailure::Other {
            code: code.to_string(),
            message,
        },
    );
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let e = ctx.err();
            match e.code() {
                Some(code) => SdkFailure::Answered {
                    code: code.to_string(),
                    message: e.message().map_or(detail.clone(), str::to_string),
                    status,
                },
                // No error code: the body was not an AWS answer at all (a proxy's HTML page,
                // a truncated body). Likely passing; the runner's retry limit bounds it.
                None => transient("UnparseableResponse", format!("HTTP {status}: {detail}")),
            }
        }
        SdkError::TimeoutError(_) => transient("Timeout", detail),
        SdkError::DispatchFailure(d) if d.is_user() => other("DispatchFailure", detail),
        SdkError::DispatchFailure(_) => transient("DispatchFailure", detail),
        SdkError::ResponseError(ctx) => transient(
            "ResponseError",
            format!("HTTP {}: {detail}", ctx.raw().status().as_u16()),
        ),
        SdkError::ConstructionFailure(_) => other("ConstructionFailure", detail),
        _ => other("SdkError", detail),
    }
}

/// Sort an SDK failure by what the caller does next.
fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match sdk_failure(err) {
        SdkFailure::Answered {
            code,
            message,
            status,
        } => AwsError::classify(&code, message, Some(status)),
        SdkFailure::Transient { code, message } => AwsError::Transient { code, message },
        SdkFailure::Other { code, message } => AwsError::Other { code, message },
    }
}

/// `outer: inner: innermost`, like `DisplayErrorContext` without its trailing `Debug` dump.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = e.source();
    }
    out
}

fn unexpected(message: impl Into<String>) -> AwsError {
    AwsError::Other {
        code: "UnexpectedResponse".to_string(),
        message: message.into(),
    }
}

fn parse_node_type(s: &str, context: &str) -> Result<NodeType, AwsError> {
    NodeType::parse(s).map_err(|e| unexpected(format!("{context}: {e}")))
}

fn group_info(g: &types::ReplicationGroup) -> Result<GroupInfo, AwsError> {
    let raw_id = g
        .replication_group_id()
        .ok_or_else(|| unexpected("a replication group without a ReplicationGroupId"))?;
    let id = ReplicationGroupId::parse(raw_id)
        .map_err(|e| unexpected(format!("replication group id from AWS: {e}")))?;
    let context = format!("replication group {id}");
    let node_type = g
        .cache_node_type()
        .map(|t| parse_node_type(t, &context))
        .transpose()?;
    let members = g
        .member_clusters()
        .iter()
        .map(|m| CacheClusterId::parse(m).map_err(|e| unexpected(format!("{context}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let cluster_mode = match g.cluster_mode() {
        Some(types::ClusterMode::Enabled) => ClusterMode::Enabled,
        Some(types::ClusterMode::Disabled) => ClusterMode::Disabled,
        Some(types::ClusterMode::Compatible) => ClusterMode::Compatible,
        // Older answers carry only `ClusterEnabled`.
        _ if g.cluster_enabled() == Some(true) => ClusterMode::Enabled,
        _ => ClusterMode::Disabled,
    };
    Ok(GroupInfo {
        id,
        status: GroupStatus::parse(g.status().unwrap_or("unknown")),
        node_type,
        shards: g.node_groups().len().max(1),
        pending: g
            .pending_modified_values()
            .map(group_pending)
            .unwrap_or_default(),
        members,
        cluster_mode,
    })
}

/// Each node group member's `CurrentRole`, where AWS gives one it knows (cluster mode disabled
/// only); members without one are left out.
fn node_roles(g: &types::ReplicationGroup) -> Result<Vec<(CacheClusterId, NodeRole)>, AwsError> {
    let mut out = Vec::new();
    for m in g.node_groups().iter().flat_map(|n| n.node_group_members()) {
        let role = match m.current_role() {
            Some("primary") => NodeRole::Primary,
            Some("replica") => NodeRole::Replica,
            _ => continue,
        };
        let Some(raw) = m.cache_cluster_id() else {
            continue;
        };
        let id = CacheClusterId::parse(raw)
            .map_err(|e| unexpected(format!("node group member from AWS: {e}")))?;
        out.push((id, role));
    }
    Ok(out)
}

/// A replication group's pending modified values, one change each.
fn group_pending(p: &types::ReplicationGroupPendingModifiedValues) -> Vec<PendingChange> {
    let mut out = Vec::new();
    if let Some(v) = p.primary_cluster_id() {
        out.push(PendingChange::new("PrimaryClusterId", v));
    }
    if let Some(v) = p.automatic_failover_status() {
        out.push(PendingChange::new("AutomaticFailover", v.as_str()));
    }
    if let Some(r) = p.resharding() {
        let progress = r
            .slot_migration()
            .and_then(|m| m.progress_percentage())
            .map(|pct| format!("{pct:.0}% migrated"))
            .unwrap_or_else(|| "in progress".to_string());
        out.push(PendingChange::new("Resharding", progress));
    }
    if let Some(v) = p.auth_token_status() {
        out.push(PendingChange::new("AuthToken", v.as_str()));
    }
    if p.user_groups().is_some() {
        out.push(PendingChange::new("UserGroups", "changing"));
    }
    if !p.log_delivery_configurations().is_empty() {
        out.push(PendingChange::new("LogDeliveryConfigurations", "changing"));
    }
    if let Some(v) = p.transit_encryption_enabled() {
        out.push(PendingChange::new(
            "TransitEncryptionEnabled",
            v.to_string(),
        ));
    }
    if let Some(v) = p.transit_encryption_mode() {
        out.push(PendingChange::new("TransitEncryptionMode", v.as_str()));
    }
    if let Some(v) = p.cluster_mode() {
        out.push(PendingChange::new("ClusterMode", v.as_str()));
    }
    out
}

/// A cache cluster's pending modified values, and a parameter change waiting for a reboot
/// (replacing the nodes applies it).
fn cluster_pending(c: &types::CacheCluster) -> Vec<PendingChange> {
    let mut out = Vec::new();
    if let Some(p) = c.pending_modified_values() {
        if let Some(v) = p.engine_version() {
            out.push(PendingChange::new("EngineVersion", v));
        }
        if let Some(v) = p.cache_node_type() {
            out.push(PendingChange::new("CacheNodeType", v));
        }
        if let Some(v) = p.num_cache_nodes() {
            out.push(PendingChange::new("NumCacheNodes", v.to_string()));
        }
        if !p.cache_node_ids_to_remove().is_empty() {
            out.push(PendingChange::new(
                "CacheNodeIdsToRemove",
                p.cache_node_ids_to_remove().join(", "),
            ));
        }
        if let Some(v) = p.auth_token_status() {
            out.push(PendingChange::new("AuthToken", v.as_str()));
        }
        if !p.log_delivery_configurations().is_empty() {
            out.push(PendingChange::new("LogDeliveryConfigurations", "changing"));
        }
        if let Some(v) = p.transit_encryption_enabled() {
            out.push(PendingChange::new(
                "TransitEncryptionEnabled",
                v.to_string(),
            ));
        }
        if let Some(v) = p.transit_encryption_mode() {
            out.push(PendingChange::new("TransitEncryptionMode", v.as_str()));
        }
    }
    if let Some(g) = c.cache_parameter_group()
        && let Some(status) = g.parameter_apply_status()
        && status != "in-sync"
    {
        let name = g
            .cache_parameter_group_name()
            .unwrap_or("its parameter group");
        out.push(PendingChange::new(
            "CacheParameterGroup",
            format!("{name} ({status})"),
        ));
    }
    out
}

fn cache_cluster_info(c: &types::CacheCluster) -> Result<CacheClusterInfo, AwsError> {
    let raw_id = c
        .cache_cluster_id()
        .ok_or_else(|| unexpected("a cache cluster without a CacheClusterId"))?;
    let id = CacheClusterId::parse(raw_id)
        .map_err(|e| unexpected(format!("cache cluster id from AWS: {e}")))?;
    let context = format!("cache cluster {id}");
    Ok(CacheClusterInfo {
        replication_group: c
            .replication_group_id()
            .map(|g| {
                ReplicationGroupId::parse(g).map_err(|e| unexpected(format!("{context}: {e}")))
            })
            .transpose()?,
        node_type: c
            .cache_node_type()
            .map(|t| parse_node_type(t, &context))
            .transpose()?,
        status: c.cache_cluster_status().unwrap_or("unknown").to_string(),
        pending: cluster_pending(c),
        parameter_group: c
            .cache_parameter_group()
            .and_then(|g| g.cache_parameter_group_name())
            .map(str::to_string),
        id,
    })
}

fn snapshot_info(s: &types::Snapshot) -> Result<SnapshotInfo, AwsError> {
    let raw_name = s
        .snapshot_name()
        .ok_or_else(|| unexpected("a snapshot without a SnapshotName"))?;
    let name = SnapshotName::parse(raw_name)
        .map_err(|e| unexpected(format!("snapshot name from AWS: {e}")))?;
    Ok(SnapshotInfo {
        status: SnapshotStatus::parse(s.snapshot_status().unwrap_or("unknown")),
        group: s
            .replication_group_id()
            .map(|g| {
                ReplicationGroupId::parse(g)
                    .map_err(|e| unexpected(format!("snapshot {name}: {e}")))
            })
            .transpose()?,
        created: s
            .node_snapshots()
            .iter()
            .filter_map(|n| n.snapshot_create_time())
            .filter_map(|t| t.to_millis().ok())
            .min()
            .map(Timestamp::from_millis),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replication_group_becomes_group_info() {
        let g = types::ReplicationGroup::builder()
            .replication_group_id("prod-jobs")
            .status("modifying")
            .cache_node_type("cache.r6g.large")
            .member_clusters("prod-jobs-001")
            .member_clusters("prod-jobs-002")
            .cluster_mode(types::ClusterMode::Disabled)
            .build();
        let info = group_info(&g).unwrap();
        assert_eq!(info.id.as_str(), "prod-jobs");
        assert_eq!(info.status, "modifying");
        assert_eq!(
            info.node_type,
            Some(NodeType::parse("cache.r6g.large").unwrap())
        );
        assert_eq!(info.members.len(), 2);
        assert_eq!(info.cluster_mode, ClusterMode::Disabled);
    }

    #[test]
    fn node_group_members_current_roles_become_node_roles() {
        let member = |id: &str, role: Option<&str>| {
            types::NodeGroupMember::builder()
                .cache_cluster_id(id)
                .set_current_role(role.map(str::to_string))
                .build()
        };
        let g = types::ReplicationGroup::builder()
            .replication_group_id("prod-jobs")
            .node_groups(
                types::NodeGroup::builder()
                    .node_group_id("0001")
                    .node_group_members(member("prod-jobs-001", Some("replica")))
                    .node_group_members(member("prod-jobs-002", Some("primary")))
                    // Cluster mode enabled: AWS gives no role.
                    .node_group_members(member("prod-jobs-003", None))
                    .build(),
            )
            .build();
        let roles = node_roles(&g).unwrap();
        let id = |s: &str| CacheClusterId::parse(s).unwrap();
        assert_eq!(
            roles,
            [
                (id("prod-jobs-001"), NodeRole::Replica),
                (id("prod-jobs-002"), NodeRole::Primary)
            ]
        );
    }

    #[test]
    fn cluster_mode_falls_back_to_cluster_enabled_when_aws_omits_it() {
        let g = types::ReplicationGroup::builder()
            .replication_group_id("sharded")
            .cluster_enabled(true)
            .build();
        assert_eq!(group_info(&g).unwrap().cluster_mode, ClusterMode::Enabled);
        let g = types::ReplicationGroup::builder()
            .replication_group_id("plain")
            .build();
        let info = group_info(&g).unwrap();
        assert_eq!(info.cluster_mode, ClusterMode::Disabled);
        assert_eq!(info.node_type, None);
    }

    #[test]
    fn an_unparseable_value_from_aws_is_an_error_not_a_panic() {
        let bad_type = types::ReplicationGroup::builder()
            .replication_group_id("prod-jobs")
            .cache_node_type("huge")
            .build();
        let err = group_info(&bad_type).unwrap_err();
        assert!(matches!(err, AwsError::Other { .. }), "{err}");
        assert!(err.to_string().contains("huge"), "{err}");
        let no_id = types::ReplicationGroup::builder().build();
        assert!(matches!(group_info(&no_id), Err(AwsError::Other { .. })));
        let bad_member = types::CacheCluster::builder()
            .cache_cluster_id("prod_jobs_001")
            .build();
        assert!(matches!(
            cache_cluster_info(&bad_member),
            Err(AwsError::Other { .. })
        ));
        let no_name = types::Snapshot::builder()
            .snapshot_status("available")
            .build();
        assert!(matches!(
            snapshot_info(&no_name),
            Err(AwsError::Other { .. })
        ));
    }

    #[test]
    fn a_snapshot_and_a_cache_cluster_become_domain_values() {
        let s = types::Snapshot::builder()
            .snapshot_name("redis-autoscaler-r-abcdefgh")
            .snapshot_status("failed")
            .replication_group_id("prod-jobs")
            .build();
        let info = snapshot_info(&s).unwrap();
        assert_eq!(info.status, SnapshotStatus::Failed);
        assert_eq!(info.group.unwrap().as_str(), "prod-jobs");
        let c = types::CacheCluster::builder()
            .cache_cluster_id("prod-jobs-002")
            .replication_group_id("prod-jobs")
            .cache_node_type("cache.r6g.large")
            .cache_cluster_status("snapshotting")
            .build();
        let info = cache_cluster_info(&c).unwrap();
        assert_eq!(info.id.as_str(), "prod-jobs-002");
        assert_eq!(info.status, "snapshotting");
        assert_eq!(info.replication_group.unwrap().as_str(), "prod-jobs");
    }

    #[test]
    fn pending_modified_values_and_a_reboot_pending_parameter_change_become_pending_changes() {
        let c = types::CacheCluster::builder()
            .cache_cluster_id("prod-jobs-001")
            .pending_modified_values(
                types::PendingModifiedValues::builder()
                    .engine_version("7.2.4")
                    .cache_node_type("cache.r6g.xlarge")
                    .build(),
            )
            .cache_parameter_group(
                types::CacheParameterGroupStatus::builder()
                    .cache_parameter_group_name("custom7")
                    .parameter_apply_status("pending-reboot")
                    .build(),
            )
            .build();
        let info = cache_cluster_info(&c).unwrap();
        let said: Vec<String> = info.pending.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            said,
            [
                "EngineVersion → 7.2.4",
                "CacheNodeType → cache.r6g.xlarge",
                "CacheParameterGroup → custom7 (pending-reboot)"
            ]
        );
        assert_eq!(info.parameter_group.as_deref(), Some("custom7"));
        let in_sync = types::CacheCluster::builder()
            .cache_cluster_id("prod-jobs-002")
            .cache_parameter_group(
                types::CacheParameterGroupStatus::builder()
                    .cache_parameter_group_name("default.redis7")
                    .parameter_apply_status("in-sync")
                    .build(),
            )
            .build();
        assert!(cache_cluster_info(&in_sync).unwrap().pending.is_empty());

        let g = types::ReplicationGroup::builder()
            .replication_group_id("prod-jobs")
            .pending_modified_values(
                types::ReplicationGroupPendingModifiedValues::builder()
                    .automatic_failover_status(types::PendingAutomaticFailoverStatus::Enabled)
                    .transit_encryption_enabled(true)
                    .build(),
            )
            .node_groups(types::NodeGroup::builder().node_group_id("0001").build())
            .node_groups(types::NodeGroup::builder().node_group_id("0002").build())
            .build();
        let info = group_info(&g).unwrap();
        assert_eq!(info.shards, 2);
        let said: Vec<String> = info.pending.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            said,
            [
                "AutomaticFailover → enabled",
                "TransitEncryptionEnabled → true"
            ]
        );
    }
}
