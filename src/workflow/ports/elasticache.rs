//! The [`ElastiCache`] port: the AWS verbs runs and use cases need, and what AWS answers, in
//! the workflow's own types. Errors ([`AwsError`]) are sorted by what the caller does next,
//! not by AWS's many error codes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::{CacheClusterId, NodeType, ReplicationGroupId, SnapshotName, Timestamp};
use crate::workflow::forecast::Forecast;
use crate::workflow::preflight::{Check, PendingChange, Preflight};

use super::{Attempt, BoxFuture};

/// Parameters of a cache parameter group: name and value (`None`: listed without one).
pub type Parameters = Vec<(String, Option<String>)>;

/// The replication group as the workflow needs to see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub id: ReplicationGroupId,
    pub status: GroupStatus,
    /// The node type the group runs on now (during a modification, still the old one).
    pub node_type: Option<NodeType>,
    pub members: Vec<CacheClusterId>,
    pub cluster_mode: ClusterMode,
    /// Node groups (shards): 1 with cluster mode disabled.
    #[serde(default = "one")]
    pub shards: usize,
    /// The group's own pending modified values (failover, resharding, auth, encryption, …).
    #[serde(default)]
    pub pending: Vec<PendingChange>,
}

fn one() -> usize {
    1
}

impl GroupInfo {
    pub fn is_available(&self) -> bool {
        self.status == GroupStatus::Available
    }

    /// Replicas in each shard (members beyond one primary per shard).
    pub fn replicas_per_shard(&self) -> usize {
        let shards = self.shards.max(1);
        (self.members.len() / shards).saturating_sub(1)
    }
}

/// A replication group's status as AWS reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupStatus {
    Available,
    Creating,
    Modifying,
    Deleting,
    CreateFailed,
    Snapshotting,
    /// Any status AWS adds later, kept as it was spelled.
    Other(String),
}

impl GroupStatus {
    pub fn parse(s: &str) -> GroupStatus {
        match s {
            "available" => GroupStatus::Available,
            "creating" => GroupStatus::Creating,
            "modifying" => GroupStatus::Modifying,
            "deleting" => GroupStatus::Deleting,
            "create-failed" => GroupStatus::CreateFailed,
            "snapshotting" => GroupStatus::Snapshotting,
            other => GroupStatus::Other(other.to_string()),
        }
    }

    /// AWS's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            GroupStatus::Available => "available",
            GroupStatus::Creating => "creating",
            GroupStatus::Modifying => "modifying",
            GroupStatus::Deleting => "deleting",
            GroupStatus::CreateFailed => "create-failed",
            GroupStatus::Snapshotting => "snapshotting",
            GroupStatus::Other(s) => s,
        }
    }
}

impl fmt::Display for GroupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for GroupStatus {
    fn from(s: &str) -> GroupStatus {
        GroupStatus::parse(s)
    }
}

impl PartialEq<&str> for GroupStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for GroupStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for GroupStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(GroupStatus::parse(&String::deserialize(d)?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    Enabled,
    Disabled,
    Compatible,
}

impl fmt::Display for ClusterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterMode::Enabled => "enabled",
            ClusterMode::Disabled => "disabled",
            ClusterMode::Compatible => "compatible",
        })
    }
}

/// A member node's current role (`NodeGroupMembers[].CurrentRole`; AWS says it only with
/// cluster mode disabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Primary,
    Replica,
}

/// A group as DescribeReplicationGroups describes it, with its members' roles where AWS gives
/// them (in AWS's order; empty with cluster mode enabled).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupNodes {
    pub group: GroupInfo,
    pub roles: Vec<(CacheClusterId, NodeRole)>,
}

/// What a snapshot is taken from: the whole group (`ReplicationGroupId`: AWS picks a node of
/// each shard) or one member node (`CacheClusterId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotFrom {
    Group(ReplicationGroupId),
    Node(CacheClusterId),
}

impl fmt::Display for SnapshotFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotFrom::Group(g) => write!(f, "ReplicationGroupId={g}"),
            SnapshotFrom::Node(n) => write!(f, "CacheClusterId={n}"),
        }
    }
}

/// One cache cluster (node), enough to find the group it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheClusterInfo {
    pub id: CacheClusterId,
    pub replication_group: Option<ReplicationGroupId>,
    pub node_type: Option<NodeType>,
    pub status: String,
    /// Modifications waiting for the maintenance window (an engine upgrade, a node type), and
    /// parameter changes waiting for a reboot: `ApplyImmediately=true` applies them too.
    #[serde(default)]
    pub pending: Vec<PendingChange>,
    /// The cluster's cache parameter group.
    #[serde(default)]
    pub parameter_group: Option<String>,
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

impl fmt::Display for SnapshotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    /// When the snapshot was taken (`None` while it is still being taken).
    #[serde(default)]
    pub created: Option<Timestamp>,
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

/// One of AWS's ElastiCache events (DescribeEvents): what AWS itself said happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwsEvent {
    pub at: Timestamp,
    /// The group or node it is about (`SourceIdentifier`).
    pub source: String,
    pub message: String,
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

    /// ListAllowedNodeTypeModifications: the node types this group may scale down to
    /// (`ScaleDownModifications`: AWS lists only types its data fits in).
    fn allowed_scale_downs<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<NodeType>, AwsError>>;

    /// DescribeReplicationGroups for one group, with each member's current role (to pick the
    /// node a snapshot is taken from).
    fn describe_group_nodes<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<GroupNodes, AwsError>>;

    /// CreateSnapshot of the whole replication group or of one of its nodes.
    fn create_snapshot<'a>(
        &'a self,
        from: &'a SnapshotFrom,
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

    /// DescribeCacheParameters of one parameter group (every page): the values of the
    /// parameters named in `wanted` that it lists (`None` when listed without a value).
    fn cache_parameters<'a>(
        &'a self,
        parameter_group: &'a str,
        wanted: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Parameters, AwsError>>;

    /// DescribeSnapshots with `SnapshotSource=manual` for one group (every page).
    fn manual_snapshots<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<SnapshotInfo>, AwsError>>;

    /// DescribeUpdateActions for one group: service updates scheduled or under way
    /// (`ServiceUpdate` → `name (status)`).
    fn update_actions_in_progress<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<PendingChange>, AwsError>>;

    /// DescribeEvents since `since` (the newest 100), for every source: AWS's own account of
    /// what happened to groups and nodes (a failed modification says why here).
    fn events_since<'a>(
        &'a self,
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<AwsEvent>, AwsError>>;

    /// Application Auto Scaling DescribeScalableTargets (read-only) for
    /// `replication-group/{group}`: the scalable dimensions registered (empty: none).
    fn scalable_dimensions<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<String>, AwsError>>;
}

impl From<&AwsError> for super::Failure {
    fn from(e: &AwsError) -> Self {
        super::Failure {
            error: e.to_string(),
            retryable: e.is_retryable(),
            retry_after: None,
        }
    }
}

/// What a plan is made from: the group as it is, the scale-ups AWS allows, the preflight, the
/// memory trend.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFacts {
    pub group: GroupInfo,
    pub allowed: Vec<NodeType>,
    pub preflight: Preflight,
    /// The memory trend over the policy's `forecast_window`, or why it is unknown (`None`: not
    /// asked for, or no memory series to read). Never a reason for the plan to fail.
    pub forecast: Option<Check<Forecast>>,
    /// The on-demand prices of the group's type and of the types it may move to (`None`:
    /// pricing is off). Never a reason for the plan to fail.
    pub prices: Option<crate::workflow::cost::PriceSheet>,
}

/// The group just before the bot acts: as described, the scale-ups allowed now, and its pending
/// changes.
#[derive(Debug, Clone, PartialEq)]
pub struct LookAgain {
    pub group: GroupInfo,
    pub allowed: Vec<NodeType>,
    pub pending: Check<Vec<PendingChange>>,
}

/// What a run asks of AWS: one method per effect. Implementations look before they act, so a
/// repeated call (a retry, a restart) never does the work twice: a snapshot that exists is
/// the run's own (its name is the run's), a group already on or moving to the target is not
/// asked again. Each writes the calls it made to the attempt's audit lines.
pub trait Aws: Send + Sync {
    /// The group as it is, the node types AWS allows it to scale up to, and everything around
    /// the change the plan should show: a preflight check that can't be read is unknown, but
    /// pending changes unread for a passing reason are an error while tries remain.
    fn fetch_plan<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<PlanFacts, AwsError>>;

    /// The group, its allowed scale-ups and its pending changes just before acting. A transient
    /// error is an error (worth another try); pending changes unreadable for a reason that
    /// won't pass (a permission) are unknown.
    fn look_again<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<LookAgain, AwsError>>;

    /// Start the run's snapshot (or find it started); its status.
    fn create_snapshot<'a>(
        &'a self,
        at: &'a mut Attempt,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<SnapshotStatus, AwsError>>;

    /// The snapshot's status; `None` when it no longer exists.
    fn poll_snapshot<'a>(
        &'a self,
        at: &'a mut Attempt,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<Option<SnapshotStatus>, AwsError>>;

    /// Ask AWS to move the group to `target`, unless it is on it or on its way already.
    fn modify_node_type<'a>(
        &'a self,
        at: &'a mut Attempt,
        target: &'a NodeType,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>>;

    /// The group as it is (while the modification runs).
    fn poll_group<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<GroupInfo, AwsError>>;

    /// What AWS's events say about the run's group (`group`, as just polled, and its member
    /// nodes) since its upsize began,
    /// oldest first, when the group is back without the new type. Never fails: a read that
    /// fails is logged and says nothing.
    fn why_not_upsized<'a>(
        &'a self,
        at: &'a mut Attempt,
        group: &'a GroupInfo,
    ) -> BoxFuture<'a, Vec<AwsEvent>> {
        let _ = (at, group);
        Box::pin(async { Vec::new() })
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
