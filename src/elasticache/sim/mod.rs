//! An ElastiCache simulator that speaks the Query protocol, so the real `aws-sdk-elasticache`
//! client can talk to it unchanged.
//!
//! Tests and `redis-autoscaler demo` spawn it in-process on loopback ([`spawn`]); the
//! `elasticache-sim` command serves it on its own ([`run_cli`]). It behaves like AWS where the
//! workflow can tell: snapshots are `creating` for a while and the group `snapshotting`; a
//! modification keeps reporting the old node type while `modifying`; busy groups, duplicate
//! names, unknown ids and types that are not scale-ups are refused with AWS's error codes and
//! HTTP statuses. Faults (throttling, failed snapshots, rejected or reverted modifications, a
//! snapshot quota) can be injected at spawn and at run time through the [`SimHandle`].
//!
//! - [`protocol`]: the wire format (form in, XML out), pure.
//! - `world`: the simulated account and AWS's rules; pure, time is an argument.
//! - `render`: the XML for groups, clusters and snapshots.
//! - `server`: the axum router, [`spawn`] and the [`SimHandle`].
//! - `cli`: [`SimArgs`] and [`run_cli`] for the `elasticache-sim` command.
//! - `cloudwatch`: CloudWatch's `GetMetricData` (Smithy RPC v2 CBOR) over a [`MemoryCurve`]
//!   per node, on the same endpoint.
//! - `pricing`: the AWS Price List's `GetProducts` (awsJson 1.1) over a price table for the
//!   families offered, on the same endpoint.
//! - `sqs`: SQS queues (awsJson 1.0) with long polling, visibility timeouts and a dead-letter
//!   redrive ([`SimQueue`]), on the same endpoint.
//!
//! It must not reach anything: no AWS, no network beyond the socket it serves, no files except
//! the groups file the command line names.

mod cli;
mod cloudwatch;
mod pricing;
pub mod protocol;
mod render;
mod server;
mod sqs;
mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::domain::node_types;
use crate::domain::{NodeType, ReplicationGroupId, SnapshotName};

pub use cli::{FailModifyArg, SimArgs, parse_groups_file, run_cli};
pub use cloudwatch::{DEFAULT_MEMORY_PERCENT, GET_METRIC_DATA, MemoryCurve};
pub use server::{SimHandle, router, spawn, spawn_on};
pub use sqs::{SimMessage, SimQueue};

/// AWS allows at most five replicas per shard.
pub const MAX_REPLICAS: u8 = 5;

/// What the simulated account holds and how it behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub groups: Vec<SimGroup>,
    /// How long a snapshot stays `creating` (and its group `snapshotting`).
    pub snapshot_duration: Duration,
    /// How long a modification keeps the group `modifying`.
    pub modify_duration: Duration,
    /// The fraction of all calls answered `Throttling` (0.0 – 1.0).
    pub throttle_fraction: f64,
    /// Seed of the PRNG that picks which calls are throttled: same seed, same calls.
    pub seed: u64,
    pub faults: Faults,
    /// Log every call with `tracing::info!` (the `elasticache-sim` command does).
    pub log_calls: bool,
    /// The account STS says the caller is in.
    pub account_id: String,
    /// How long the credentials STS AssumeRole hands out last (AWS: the DurationSeconds
    /// asked for, 15 minutes to 12 hours; shorter here so tests see a refresh).
    pub session_duration: Duration,
    /// The roles AssumeRole lets the caller assume, with the ExternalId each one's trust policy
    /// asks for (`None`: none); any other role is refused.
    pub roles: BTreeMap<String, Option<String>>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            groups: Vec::new(),
            snapshot_duration: Duration::from_secs(5),
            modify_duration: Duration::from_secs(10),
            throttle_fraction: 0.0,
            seed: 1,
            faults: Faults::default(),
            log_calls: false,
            account_id: "123456789012".to_string(),
            session_duration: Duration::from_secs(3600),
            roles: BTreeMap::new(),
        }
    }
}

impl SimConfig {
    /// A config holding `groups`, with the default durations and no faults.
    pub fn with_groups(groups: impl IntoIterator<Item = SimGroup>) -> SimConfig {
        SimConfig {
            groups: groups.into_iter().collect(),
            ..SimConfig::default()
        }
    }

    /// Check what AWS would refuse to create: duplicate ids, node types it does not offer,
    /// impossible replica or shard counts, a throttle fraction outside 0–1.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let mut seen = BTreeSet::new();
        for g in &self.groups {
            if !seen.insert(&g.id) {
                return Err(SimConfigError::DuplicateGroup(g.id.clone()));
            }
            if !node_types::is_offered(&g.node_type) {
                return Err(SimConfigError::UnknownNodeType {
                    group: g.id.clone(),
                    node_type: g.node_type.clone(),
                });
            }
            if g.replicas > MAX_REPLICAS {
                return Err(SimConfigError::TooManyReplicas {
                    group: g.id.clone(),
                    replicas: g.replicas,
                });
            }
        }
        check_fraction(self.throttle_fraction)?;
        Ok(())
    }
}

pub(crate) fn check_fraction(f: f64) -> Result<f64, SimConfigError> {
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(SimConfigError::ThrottleFraction(f))
    }
}

/// One replication group the simulator starts with, `available`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimGroup {
    pub id: ReplicationGroupId,
    pub node_type: NodeType,
    /// Replicas per shard (0–5).
    pub replicas: u8,
    /// Number of shards: 0 or 1 = cluster mode disabled, 2 or more = cluster mode enabled.
    pub shards: u8,
    /// An engine upgrade waiting for the maintenance window (each member's
    /// `PendingModifiedValues.EngineVersion`).
    pub pending_engine_version: Option<String>,
    /// How its parameter group reserves memory (default: `default.redis7`, 25 %).
    pub reserved_memory: SimReservedMemory,
    /// Manual snapshots of the group taken in the last hours (they count against AWS's 20 per
    /// node per 24 h).
    pub manual_snapshots_today: u32,
    /// Service updates on the group: `(name, UpdateActionStatus)`.
    pub service_updates: Vec<(String, String)>,
    /// Scalable dimensions registered with Application Auto Scaling
    /// (`elasticache:replication-group:Replicas`, `…:NodeGroups`).
    pub autoscaling: Vec<String>,
}

/// A group's memory reservation, as its cache parameter group sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimReservedMemory {
    /// `reserved-memory-percent`; 25 is the default parameter group's.
    Percent(u8),
    /// `reserved-memory` in bytes (a custom parameter group).
    Bytes(u64),
}

impl Default for SimReservedMemory {
    fn default() -> Self {
        SimReservedMemory::Percent(DEFAULT_RESERVED_PERCENT)
    }
}

/// The default parameter group and its `reserved-memory-percent`.
pub const DEFAULT_PARAMETER_GROUP: &str = "default.redis7";
pub const DEFAULT_RESERVED_PERCENT: u8 = 25;

impl SimGroup {
    /// A cluster-mode-disabled group with one replica (a primary and a replica, as most
    /// production groups run).
    pub fn new(id: ReplicationGroupId, node_type: NodeType) -> SimGroup {
        SimGroup {
            id,
            node_type,
            replicas: 1,
            shards: 0,
            pending_engine_version: None,
            reserved_memory: SimReservedMemory::default(),
            manual_snapshots_today: 0,
            service_updates: Vec::new(),
            autoscaling: Vec::new(),
        }
    }

    pub fn pending_engine_version(mut self, version: impl Into<String>) -> SimGroup {
        self.pending_engine_version = Some(version.into());
        self
    }

    pub fn reserved_memory(mut self, reserved: SimReservedMemory) -> SimGroup {
        self.reserved_memory = reserved;
        self
    }

    pub fn manual_snapshots_today(mut self, n: u32) -> SimGroup {
        self.manual_snapshots_today = n;
        self
    }

    pub fn service_update(mut self, name: &str, status: &str) -> SimGroup {
        self.service_updates.push((name.into(), status.into()));
        self
    }

    pub fn autoscaling(mut self, dimension: &str) -> SimGroup {
        self.autoscaling.push(dimension.into());
        self
    }

    /// The name of its cache parameter group.
    pub fn parameter_group(&self) -> String {
        match self.reserved_memory {
            SimReservedMemory::Percent(DEFAULT_RESERVED_PERCENT) => {
                DEFAULT_PARAMETER_GROUP.to_string()
            }
            _ => format!("{}-params", self.id),
        }
    }

    pub fn replicas(mut self, replicas: u8) -> SimGroup {
        self.replicas = replicas;
        self
    }

    pub fn shards(mut self, shards: u8) -> SimGroup {
        self.shards = shards;
        self
    }

    pub fn cluster_mode_enabled(&self) -> bool {
        self.shards >= 2
    }

    /// Parse the command line's `ID=NODE_TYPE[:REPLICAS]`.
    pub fn parse_spec(spec: &str) -> Result<SimGroup, String> {
        let (id, rest) = spec.split_once('=').ok_or_else(|| {
            format!("`{spec}` is not ID=NODE_TYPE[:REPLICAS] (e.g. prod-jobs=cache.r6g.large:1)")
        })?;
        let (node_type, replicas) = match rest.split_once(':') {
            Some((t, r)) => {
                let r: u8 = r
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{r}` is not a number of replicas (0–{MAX_REPLICAS})"))?;
                (t, r)
            }
            None => (rest, 1),
        };
        let id = ReplicationGroupId::parse(id).map_err(|e| e.to_string())?;
        let node_type = NodeType::parse(node_type).map_err(|e| e.to_string())?;
        Ok(SimGroup::new(id, node_type).replicas(replicas))
    }
}

/// Failures to inject. Each is decided when the call that starts the work arrives, so changing
/// faults later does not change work already in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Snapshots that end `failed` instead of `available`.
    pub failing_snapshots: BTreeSet<SnapshotSelector>,
    /// Groups whose modifications fail, and how.
    pub failing_modifications: BTreeMap<ReplicationGroupId, ModifyFault>,
    /// At most this many manual snapshots may exist; beyond it CreateSnapshot answers
    /// `SnapshotQuotaExceededFault`. `Some(0)` refuses every snapshot.
    pub snapshot_quota: Option<usize>,
    /// Actions the caller's IAM policy does not allow: answered `AccessDenied`
    /// (`AccessDeniedException` for Application Auto Scaling).
    pub denied_actions: BTreeSet<String>,
    /// Actions always answered `Throttling` (`ThrottlingException` for Application Auto
    /// Scaling), whatever the throttle fraction.
    pub throttled_actions: BTreeSet<String>,
}

/// Which snapshots a snapshot fault applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SnapshotSelector {
    /// Every snapshot of this group.
    OfGroup(ReplicationGroupId),
    /// The snapshot with this name.
    Named(SnapshotName),
}

impl SnapshotSelector {
    pub fn matches(&self, group: &ReplicationGroupId, name: &SnapshotName) -> bool {
        match self {
            SnapshotSelector::OfGroup(g) => g == group,
            SnapshotSelector::Named(n) => n == name,
        }
    }
}

/// How a group's modification fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModifyFault {
    /// ModifyReplicationGroup is refused at once with this AWS error code (e.g.
    /// `InsufficientCacheClusterCapacity`, `NodeQuotaForCustomerExceeded`).
    Reject { code: String },
    /// ModifyReplicationGroup is accepted, the group goes `modifying`, then comes back
    /// `available` on its old node type.
    Revert,
}

impl ModifyFault {
    pub fn reject(code: impl Into<String>) -> ModifyFault {
        ModifyFault::Reject { code: code.into() }
    }
}

/// One call the simulator answered, for tests' assertions and the audit of a demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCall {
    /// When the simulator took the call.
    pub at: std::time::Instant,
    pub action: String,
    /// Every parameter except `Action` (including `Version`).
    pub params: BTreeMap<String, String>,
    /// `ok`, or the AWS error code it was answered with.
    pub outcome: String,
    /// The access key id it was signed with (an assumed role's session key starts `ASIA`).
    pub access_key: Option<String>,
}

impl SimCall {
    pub fn is_ok(&self) -> bool {
        self.outcome == "ok"
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Why a simulator could not start with the configuration it was given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimConfigError {
    #[error("replication group {0} is configured twice")]
    DuplicateGroup(ReplicationGroupId),
    #[error("replication group {group}: {node_type} is not a node type ElastiCache offers")]
    UnknownNodeType {
        group: ReplicationGroupId,
        node_type: NodeType,
    },
    #[error(
        "replication group {group}: {replicas} replicas, but ElastiCache allows at most {MAX_REPLICAS} per shard"
    )]
    TooManyReplicas {
        group: ReplicationGroupId,
        replicas: u8,
    },
    #[error("the throttle fraction must be between 0.0 and 1.0, not {0}")]
    ThrottleFraction(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(spec: &str) -> SimGroup {
        SimGroup::parse_spec(spec).unwrap()
    }

    #[test]
    fn a_group_spec_names_id_node_type_and_optional_replicas() {
        let g = group("Prod-Jobs=cache.r6g.large:2");
        assert_eq!(g.id.as_str(), "prod-jobs");
        assert_eq!(g.node_type.to_string(), "cache.r6g.large");
        assert_eq!(g.replicas, 2);
        assert_eq!(g.shards, 0);
        assert_eq!(group("a=cache.t4g.micro").replicas, 1);
        for bad in [
            "prod-jobs",
            "prod-jobs=large",
            "prod-jobs=cache.r6g.large:x",
            "1x=cache.r6g.large",
        ] {
            assert!(SimGroup::parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_config_with_a_node_type_aws_does_not_offer_is_refused() {
        let mut g = group("a=cache.r6g.large");
        g.node_type = NodeType::parse("cache.x9z.large").unwrap();
        let err = SimConfig::with_groups([g]).validate().unwrap_err();
        assert!(
            matches!(err, SimConfigError::UnknownNodeType { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_config_naming_a_group_twice_or_with_too_many_replicas_is_refused() {
        let twice =
            SimConfig::with_groups([group("a=cache.r6g.large"), group("a=cache.r6g.large")]);
        assert_eq!(
            twice.validate(),
            Err(SimConfigError::DuplicateGroup(
                ReplicationGroupId::parse("a").unwrap()
            ))
        );
        let many = SimConfig::with_groups([group("a=cache.r6g.large:6")]);
        assert!(matches!(
            many.validate(),
            Err(SimConfigError::TooManyReplicas { .. })
        ));
        let throttle = SimConfig {
            throttle_fraction: 1.5,
            ..SimConfig::default()
        };
        assert!(matches!(
            throttle.validate(),
            Err(SimConfigError::ThrottleFraction(_))
        ));
    }

    #[test]
    fn snapshot_faults_select_by_group_or_by_name() {
        let g = ReplicationGroupId::parse("a").unwrap();
        let other = ReplicationGroupId::parse("b").unwrap();
        let n = SnapshotName::parse("snap-1").unwrap();
        let m = SnapshotName::parse("snap-2").unwrap();
        assert!(SnapshotSelector::OfGroup(g.clone()).matches(&g, &n));
        assert!(!SnapshotSelector::OfGroup(g.clone()).matches(&other, &n));
        assert!(SnapshotSelector::Named(n.clone()).matches(&other, &n));
        assert!(!SnapshotSelector::Named(n).matches(&g, &m));
    }
}
