//! ElastiCache: the verbs the workflow needs, behind one small trait.
//!
//! - [`ElastiCache`] is the trait; its errors ([`AwsError`]) are sorted by what the caller does
//!   next, not by AWS's many error codes.
//! - [`sdk`] is the production implementation over `aws-sdk-elasticache`.
//! - [`sim`] is a simulator that speaks the ElastiCache Query protocol over HTTP, so tests and
//!   the demo exercise the real SDK client end to end.
//! - [`node_types`] knows the node families and sizes AWS offers.
//!
//! Nothing here decides anything about a run: it reports what AWS says.

pub mod node_types;
pub mod sdk;
pub mod sim;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::domain::{CacheClusterId, NodeType, ReplicationGroupId, SnapshotName};

/// A boxed, sendable future: what the trait's methods return so it can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The replication group as the workflow needs to see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub id: ReplicationGroupId,
    /// AWS's status string: `available`, `modifying`, `snapshotting`, `creating`, …
    pub status: String,
    /// The node type the group runs on now (during a modification, still the old one).
    pub node_type: Option<NodeType>,
    pub members: Vec<CacheClusterId>,
    pub cluster_mode: ClusterMode,
}

impl GroupInfo {
    pub fn is_available(&self) -> bool {
        self.status == "available"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    Enabled,
    Disabled,
    Compatible,
}

impl std::fmt::Display for ClusterMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClusterMode::Enabled => "enabled",
            ClusterMode::Disabled => "disabled",
            ClusterMode::Compatible => "compatible",
        })
    }
}

/// One cache cluster (node), enough to find the group it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheClusterInfo {
    pub id: CacheClusterId,
    pub replication_group: Option<ReplicationGroupId>,
    pub node_type: Option<NodeType>,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotStatus {
    Creating,
    Available,
    Failed,
    /// Any other status AWS reports (`restoring`, `copying`, `deleting`, …).
    Other(String),
}

impl SnapshotStatus {
    pub fn parse(s: &str) -> SnapshotStatus {
        match s {
            "creating" => SnapshotStatus::Creating,
            "available" => SnapshotStatus::Available,
            "failed" => SnapshotStatus::Failed,
            other => SnapshotStatus::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for SnapshotStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotStatus::Creating => f.write_str("creating"),
            SnapshotStatus::Available => f.write_str("available"),
            SnapshotStatus::Failed => f.write_str("failed"),
            SnapshotStatus::Other(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: SnapshotName,
    pub status: SnapshotStatus,
    pub group: Option<ReplicationGroupId>,
}

/// What went wrong talking to ElastiCache, sorted by what the caller does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AwsError {
    /// The group, cluster or snapshot does not exist: stop and tell someone.
    #[error("not found ({code}): {message}")]
    NotFound { code: String, message: String },
    /// The resource is busy (`modifying`, `snapshotting`, …): wait and look again.
    #[error("invalid state ({code}): {message}")]
    InvalidState { code: String, message: String },
    /// A snapshot with that name exists already: for our deterministic names, that is ours.
    #[error("snapshot already exists: {message}")]
    SnapshotAlreadyExists { message: String },
    /// An account or cluster quota is exhausted: a person must act.
    #[error("quota exceeded ({code}): {message}")]
    QuotaExceeded { code: String, message: String },
    /// Throttled, a 5xx or a network failure: retry with backoff.
    #[error("transient ({code}): {message}")]
    Transient { code: String, message: String },
    /// Anything else (bad parameter, access denied, …): a person must act.
    #[error("{code}: {message}")]
    Other { code: String, message: String },
}

impl AwsError {
    /// Sort an AWS error code (and HTTP status, when known) into what to do next.
    pub fn classify(code: &str, message: impl Into<String>, http_status: Option<u16>) -> AwsError {
        let message = message.into();
        let code_s = code.to_string();
        match code {
            "ReplicationGroupNotFoundFault" | "CacheClusterNotFound" | "SnapshotNotFoundFault" => {
                AwsError::NotFound {
                    code: code_s,
                    message,
                }
            }
            "InvalidReplicationGroupState"
            | "InvalidCacheClusterState"
            | "InvalidSnapshotState" => AwsError::InvalidState {
                code: code_s,
                message,
            },
            "SnapshotAlreadyExistsFault" => AwsError::SnapshotAlreadyExists { message },
            "SnapshotQuotaExceededFault"
            | "NodeQuotaForClusterExceeded"
            | "NodeQuotaForCustomerExceeded"
            | "ClusterQuotaForCustomerExceeded"
            | "NodeGroupsPerReplicationGroupQuotaExceeded" => AwsError::QuotaExceeded {
                code: code_s,
                message,
            },
            "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "SlowDown"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "InternalFailure"
            | "InternalError"
            | "RequestTimeout"
            | "RequestTimeoutException" => AwsError::Transient {
                code: code_s,
                message,
            },
            _ if matches!(http_status, Some(s) if s >= 500 || s == 429) => AwsError::Transient {
                code: code_s,
                message,
            },
            _ => AwsError::Other {
                code: code_s,
                message,
            },
        }
    }

    /// Should the same call be tried again later?
    pub fn is_retryable(&self) -> bool {
        matches!(self, AwsError::Transient { .. })
    }

    /// AWS's error code, for the audit trail and metrics.
    pub fn code(&self) -> &str {
        match self {
            AwsError::NotFound { code, .. }
            | AwsError::InvalidState { code, .. }
            | AwsError::QuotaExceeded { code, .. }
            | AwsError::Transient { code, .. }
            | AwsError::Other { code, .. } => code,
            AwsError::SnapshotAlreadyExists { .. } => "SnapshotAlreadyExistsFault",
        }
    }
}

/// The ElastiCache verbs the workflow needs. Every call is one AWS request (no hidden retries:
/// the runner retries transient errors itself, on its persisted schedule).
pub trait ElastiCache: Send + Sync {
    /// DescribeReplicationGroups for one group.
    fn describe_group<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>>;

    /// DescribeCacheClusters for one cluster (to map an alarm's `CacheClusterId` to its group).
    fn describe_cache_cluster<'a>(
        &'a self,
        id: &'a CacheClusterId,
    ) -> BoxFuture<'a, Result<CacheClusterInfo, AwsError>>;

    /// ListAllowedNodeTypeModifications: the node types this group may scale up to.
    fn allowed_scale_ups<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<NodeType>, AwsError>>;

    /// CreateSnapshot of the whole replication group.
    fn create_snapshot<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<SnapshotInfo, AwsError>>;

    /// DescribeSnapshots for one name; `Ok(None)` when there is no such snapshot.
    fn describe_snapshot<'a>(
        &'a self,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<Option<SnapshotInfo>, AwsError>>;

    /// ModifyReplicationGroup with `CacheNodeType` and `ApplyImmediately=true`.
    fn modify_node_type<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
        node_type: &'a NodeType,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>>;
}

/// Any [`ElastiCache`], with every call counted and timed by operation and outcome.
pub struct Metered(pub std::sync::Arc<dyn ElastiCache>);

async fn metered<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, AwsError>>,
) -> Result<T, AwsError> {
    let started = std::time::Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.code().to_string(),
    };
    crate::telemetry::aws_call(operation, outcome, started.elapsed());
    result
}

impl ElastiCache for Metered {
    fn describe_group<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        Box::pin(metered(
            "DescribeReplicationGroups",
            self.0.describe_group(id),
        ))
    }

    fn describe_cache_cluster<'a>(
        &'a self,
        id: &'a CacheClusterId,
    ) -> BoxFuture<'a, Result<CacheClusterInfo, AwsError>> {
        Box::pin(metered(
            "DescribeCacheClusters",
            self.0.describe_cache_cluster(id),
        ))
    }

    fn allowed_scale_ups<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<NodeType>, AwsError>> {
        Box::pin(metered(
            "ListAllowedNodeTypeModifications",
            self.0.allowed_scale_ups(id),
        ))
    }

    fn create_snapshot<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<SnapshotInfo, AwsError>> {
        Box::pin(metered(
            "CreateSnapshot",
            self.0.create_snapshot(group, name),
        ))
    }

    fn describe_snapshot<'a>(
        &'a self,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<Option<SnapshotInfo>, AwsError>> {
        Box::pin(metered("DescribeSnapshots", self.0.describe_snapshot(name)))
    }

    fn modify_node_type<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
        node_type: &'a NodeType,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        Box::pin(metered(
            "ModifyReplicationGroup",
            self.0.modify_node_type(group, node_type),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_what_to_do_next() {
        let c = |code: &str, status| AwsError::classify(code, "m", status);
        assert!(matches!(
            c("ReplicationGroupNotFoundFault", Some(404)),
            AwsError::NotFound { .. }
        ));
        assert!(matches!(
            c("InvalidReplicationGroupState", Some(400)),
            AwsError::InvalidState { .. }
        ));
        assert!(matches!(
            c("SnapshotAlreadyExistsFault", Some(400)),
            AwsError::SnapshotAlreadyExists { .. }
        ));
        assert!(matches!(
            c("SnapshotQuotaExceededFault", Some(400)),
            AwsError::QuotaExceeded { .. }
        ));
        assert!(c("Throttling", Some(400)).is_retryable());
        assert!(c("SomethingNew", Some(503)).is_retryable());
        assert!(!c("InvalidParameterValue", Some(400)).is_retryable());
        assert_eq!(
            c("InvalidParameterValue", Some(400)).code(),
            "InvalidParameterValue"
        );
    }
}
