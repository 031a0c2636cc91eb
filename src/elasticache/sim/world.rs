//! The simulated account: replication groups, snapshots, faults, and the rules AWS applies to
//! each action.
//!
//! Pure: [`World::handle`] takes a parsed request and the current instant and returns the
//! answer; nothing here reads a clock, sleeps or touches a socket. Work in progress (a snapshot
//! being taken, a modification being applied) is stored with its deadline and settles lazily
//! when a later call (or a look from the handle) arrives at or after that deadline, which is
//! also why it works under tokio's paused clock.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::protocol::{API_VERSION, QueryError, QueryRequest, RequestId, STS_API_VERSION, Xml};
use super::render;
use super::{
    DEFAULT_PARAMETER_GROUP, DEFAULT_RESERVED_PERCENT, Faults, ModifyFault, SimCall, SimConfig,
    SimGroup, SimReservedMemory,
};
use crate::domain::node_types;
use crate::domain::{CacheClusterId, NodeType, ReplicationGroupId, SnapshotName, Timestamp};
use crate::workflow::ports::{self, ClusterMode, GroupInfo, SnapshotInfo, SnapshotStatus};

/// The engine version every simulated group runs.
pub const ENGINE_VERSION: &str = "7.1.0";

/// AWS's limit on manual snapshots of a node in 24 hours.
pub const SNAPSHOTS_PER_DAY: usize = 20;

/// The actions the simulator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    DescribeReplicationGroups,
    DescribeCacheClusters,
    ListAllowedNodeTypeModifications,
    CreateSnapshot,
    DescribeSnapshots,
    ModifyReplicationGroup,
    DescribeCacheParameters,
    DescribeUpdateActions,
    DescribeEvents,
    /// STS, which the bot asks once at start which account it is in.
    GetCallerIdentity,
    /// STS: a role in another account, for that account's calls.
    AssumeRole,
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::DescribeReplicationGroups,
        Action::DescribeCacheClusters,
        Action::ListAllowedNodeTypeModifications,
        Action::CreateSnapshot,
        Action::DescribeSnapshots,
        Action::ModifyReplicationGroup,
        Action::DescribeCacheParameters,
        Action::DescribeUpdateActions,
        Action::DescribeEvents,
        Action::GetCallerIdentity,
        Action::AssumeRole,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::DescribeReplicationGroups => "DescribeReplicationGroups",
            Action::DescribeCacheClusters => "DescribeCacheClusters",
            Action::ListAllowedNodeTypeModifications => "ListAllowedNodeTypeModifications",
            Action::CreateSnapshot => "CreateSnapshot",
            Action::DescribeSnapshots => "DescribeSnapshots",
            Action::ModifyReplicationGroup => "ModifyReplicationGroup",
            Action::DescribeCacheParameters => "DescribeCacheParameters",
            Action::DescribeUpdateActions => "DescribeUpdateActions",
            Action::DescribeEvents => "DescribeEvents",
            Action::GetCallerIdentity => "GetCallerIdentity",
            Action::AssumeRole => "AssumeRole",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// The answer to one call, before it is put in its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub action: String,
    pub request_id: String,
    /// The elements inside `<{Action}Result>`, or the error.
    pub result: Result<String, QueryError>,
}

/// The answer to one JSON-protocol call: the body, or `(error code, message)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonReply {
    pub action: String,
    pub request_id: String,
    pub result: Result<String, (String, String)>,
}

/// A group's status as AWS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStatus {
    Available,
    Snapshotting,
    Modifying,
}

impl GroupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStatus::Available => "available",
            GroupStatus::Snapshotting => "snapshotting",
            GroupStatus::Modifying => "modifying",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    Idle,
    Modifying {
        to: NodeType,
        until: Instant,
        /// An injected fault: when the deadline passes the group keeps its old type.
        reverts: bool,
    },
}

/// One replication group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: ReplicationGroupId,
    pub node_type: NodeType,
    pub replicas: u8,
    /// Node groups: 1 when cluster mode is disabled.
    pub shards: u8,
    pub cluster_mode: ClusterMode,
    pub activity: Activity,
    /// A node type requested without `ApplyImmediately`: AWS would apply it in the next
    /// maintenance window, which never comes here.
    pub pending_node_type: Option<NodeType>,
    /// An engine upgrade waiting for the maintenance window (applied with the next
    /// modification that applies immediately).
    pub pending_engine_version: Option<String>,
    pub engine_version: String,
    pub parameter_group: String,
    /// `(service update name, UpdateActionStatus)`.
    pub service_updates: Vec<(String, String)>,
    /// Dimensions registered with Application Auto Scaling.
    pub autoscaling: Vec<String>,
    pub created: Instant,
    /// Node type changes that completed (wall time, from, to): memory readings of curves that
    /// follow them are scaled by the old type's memory over the new one's from then on.
    pub resized: Vec<(Timestamp, NodeType, NodeType)>,
}

/// One cache cluster (node) of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// 1-based shard (node group) number.
    pub shard: u8,
    /// 1-based node number within the shard; node 1 is the primary.
    pub node: u8,
}

impl Member {
    pub fn is_primary(&self) -> bool {
        self.node == 1
    }
}

impl Group {
    fn from_config(g: &SimGroup, created: Instant) -> Group {
        let enabled = g.cluster_mode_enabled();
        Group {
            id: g.id.clone(),
            node_type: g.node_type.clone(),
            replicas: g.replicas,
            shards: if enabled { g.shards } else { 1 },
            cluster_mode: if enabled {
                ClusterMode::Enabled
            } else {
                ClusterMode::Disabled
            },
            activity: Activity::Idle,
            pending_node_type: None,
            pending_engine_version: g.pending_engine_version.clone(),
            engine_version: ENGINE_VERSION.to_string(),
            parameter_group: g.parameter_group(),
            service_updates: g.service_updates.clone(),
            autoscaling: g.autoscaling.clone(),
            created,
            resized: Vec::new(),
        }
    }

    pub fn cluster_enabled(&self) -> bool {
        self.cluster_mode == ClusterMode::Enabled
    }

    /// `{id}-001`… with cluster mode disabled, `{id}-0001-001`… with it enabled.
    pub fn members(&self) -> Vec<Member> {
        let mut out = Vec::new();
        for shard in 1..=self.shards {
            for node in 1..=self.replicas + 1 {
                let id = if self.cluster_enabled() {
                    format!("{}-{shard:04}-{node:03}", self.id)
                } else {
                    format!("{}-{node:03}", self.id)
                };
                out.push(Member { id, shard, node });
            }
        }
        out
    }

    /// Snapshots are taken from the last node of each shard: a replica when there is one.
    pub fn is_snapshot_source(&self, m: &Member) -> bool {
        m.node == self.replicas + 1
    }

    pub fn snapshotting_cluster(&self) -> Option<String> {
        if self.cluster_enabled() {
            None
        } else {
            self.members()
                .into_iter()
                .find(|m| self.is_snapshot_source(m))
                .map(|m| m.id)
        }
    }
}

/// How a snapshot ends once its time is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotEnd {
    Available,
    Failed,
}

/// One manual snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: SnapshotName,
    /// The group as it was when the snapshot started.
    pub group: Group,
    /// The member the request named by `CacheClusterId`; `None`: it named the group
    /// (`ReplicationGroupId`), and the last node of each shard is used.
    pub node: Option<String>,
    pub started: Instant,
    pub ready_at: Instant,
    pub ends: SnapshotEnd,
}

impl Snapshot {
    pub fn status(&self, now: Instant) -> SnapshotStatus {
        if now < self.ready_at {
            SnapshotStatus::Creating
        } else {
            match self.ends {
                SnapshotEnd::Available => SnapshotStatus::Available,
                SnapshotEnd::Failed => SnapshotStatus::Failed,
            }
        }
    }
}

/// A deterministic xorshift64 PRNG: the same seed picks the same calls to throttle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XorShift64(u64);

impl XorShift64 {
    pub fn new(seed: u64) -> XorShift64 {
        // SplitMix64 spreads nearby seeds apart; xorshift must not start at zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift64(if z == 0 { 0x9E37_79B9_7F4A_7C15 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (never for 0, always for 1).
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// The whole simulated account.
#[derive(Debug)]
pub struct World {
    groups: BTreeMap<ReplicationGroupId, Group>,
    /// Cache parameter groups by name, with how each reserves memory.
    parameter_groups: BTreeMap<String, SimReservedMemory>,
    snapshots: BTreeMap<SnapshotName, Snapshot>,
    snapshot_duration: Duration,
    pub modify_duration: Duration,
    /// The account the simulated credentials belong to (STS GetCallerIdentity).
    account_id: String,
    /// AssumeRole's trust: role ARN → the ExternalId it asks for.
    roles: BTreeMap<String, Option<String>>,
    session_duration: Duration,
    /// Sessions handed out, and their access keys.
    sessions: u64,
    issued_keys: Vec<String>,
    throttle_fraction: f64,
    rng: XorShift64,
    seed: u64,
    requests: u64,
    pub faults: Faults,
    calls: Vec<SimCall>,
    /// The instant the world was made and the wall-clock time it stands for, to print
    /// timestamps without reading a clock.
    epoch: (Instant, Timestamp),
    /// What DescribeEvents lists, oldest first.
    events: Vec<SimEvent>,
}

/// One ElastiCache event (DescribeEvents), worded by the simulator after AWS's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    pub at: Timestamp,
    pub source: String,
    /// `replication-group` or `cache-cluster`.
    pub source_type: &'static str,
    pub message: String,
}

impl World {
    /// A world as `config` describes it, its groups `available` since `now` (`wall` is the
    /// wall-clock time at `now`). The config must have been validated.
    pub fn new(config: &SimConfig, now: Instant, wall: Timestamp) -> World {
        let mut parameter_groups = BTreeMap::from([(
            DEFAULT_PARAMETER_GROUP.to_string(),
            SimReservedMemory::Percent(DEFAULT_RESERVED_PERCENT),
        )]);
        let mut snapshots = BTreeMap::new();
        for g in &config.groups {
            parameter_groups.insert(g.parameter_group(), g.reserved_memory);
            // Snapshots someone took an hour ago (or as long ago as the clock allows).
            let earlier = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
            for n in 1..=g.manual_snapshots_today {
                let name = SnapshotName::parse(&format!("{}-manual-{n}", g.id))
                    .expect("a group id makes a valid snapshot name");
                let snapshot = Snapshot {
                    name: name.clone(),
                    group: Group::from_config(g, now),
                    node: None,
                    started: earlier,
                    ready_at: earlier,
                    ends: SnapshotEnd::Available,
                };
                snapshots.insert(name, snapshot);
            }
        }
        World {
            groups: config
                .groups
                .iter()
                .map(|g| (g.id.clone(), Group::from_config(g, now)))
                .collect(),
            parameter_groups,
            snapshots,
            snapshot_duration: config.snapshot_duration,
            modify_duration: config.modify_duration,
            account_id: config.account_id.clone(),
            roles: config.roles.clone(),
            session_duration: config.session_duration,
            sessions: 0,
            issued_keys: Vec::new(),
            throttle_fraction: config.throttle_fraction,
            rng: XorShift64::new(config.seed),
            seed: config.seed,
            requests: 0,
            faults: config.faults.clone(),
            calls: Vec::new(),
            epoch: (now, wall),
            events: Vec::new(),
        }
    }

    pub fn set_throttle_fraction(&mut self, f: f64) {
        self.throttle_fraction = f;
    }

    pub fn calls(&self) -> &[SimCall] {
        &self.calls
    }

    /// The wall-clock time an instant stands for.
    pub fn wall(&self, at: Instant) -> Timestamp {
        let (i0, w0) = self.epoch;
        w0.plus(at.saturating_duration_since(i0))
    }

    /// Finish work whose deadline has passed.
    pub fn settle(&mut self, now: Instant) {
        let (i0, w0) = self.epoch;
        for g in self.groups.values_mut() {
            if let Activity::Modifying { to, until, reverts } = &g.activity
                && now >= *until
            {
                let at = w0.plus(until.saturating_duration_since(i0));
                if *reverts {
                    // As AWS reports a capacity failure: on a member node, and on the group.
                    let node = format!("{}-001", g.id);
                    self.events.push(SimEvent {
                        at,
                        source: node,
                        source_type: "cache-cluster",
                        message: format!(
                            "Failed to modify cache node type to {to}: InsufficientCacheClusterCapacity in us-east-1a"
                        ),
                    });
                    self.events.push(SimEvent {
                        at,
                        source: g.id.to_string(),
                        source_type: "replication-group",
                        message: format!(
                            "Modification of replication group {} to {to} failed; it remains on {}",
                            g.id, g.node_type
                        ),
                    });
                } else {
                    self.events.push(SimEvent {
                        at,
                        source: g.id.to_string(),
                        source_type: "replication-group",
                        message: format!("Cache node type modified to {to}"),
                    });
                }
                if !reverts {
                    let at = w0.plus(until.saturating_duration_since(i0));
                    g.resized.push((at, g.node_type.clone(), to.clone()));
                    g.node_type = to.clone();
                }
                g.activity = Activity::Idle;
            }
        }
    }

    /// A group's status at `now` (after [`World::settle`]).
    pub fn status(&self, g: &Group, now: Instant) -> GroupStatus {
        if matches!(g.activity, Activity::Modifying { .. }) {
            GroupStatus::Modifying
        } else if self
            .snapshots
            .values()
            .any(|s| s.group.id == g.id && now < s.ready_at)
        {
            GroupStatus::Snapshotting
        } else {
            GroupStatus::Available
        }
    }

    /// A group as the workflow would see it through DescribeReplicationGroups.
    pub fn group_info(&mut self, id: &ReplicationGroupId, now: Instant) -> Option<GroupInfo> {
        self.settle(now);
        let g = self.groups.get(id)?;
        Some(GroupInfo {
            id: g.id.clone(),
            shards: usize::from(g.shards),
            pending: Vec::new(),
            status: ports::GroupStatus::parse(self.status(g, now).as_str()),
            node_type: Some(g.node_type.clone()),
            members: g
                .members()
                .into_iter()
                .map(|m| CacheClusterId::parse(&m.id).expect("member ids are valid"))
                .collect(),
            cluster_mode: g.cluster_mode,
        })
    }

    /// A change nobody asked the bot for: the group moves to `node_type` at once, or (with
    /// `until`) is `modifying` until then.
    pub fn change_elsewhere(
        &mut self,
        id: &ReplicationGroupId,
        node_type: NodeType,
        until: Option<Instant>,
        now: Instant,
    ) {
        self.settle(now);
        let Some(g) = self.groups.get_mut(id) else {
            return;
        };
        match until {
            None => g.node_type = node_type,
            Some(until) => {
                g.activity = Activity::Modifying {
                    to: node_type,
                    until,
                    reverts: false,
                }
            }
        }
    }

    pub fn set_pending_engine_version(&mut self, id: &ReplicationGroupId, v: Option<String>) {
        if let Some(g) = self.groups.get_mut(id) {
            g.pending_engine_version = v;
        }
    }

    pub fn engine_version(&self, id: &ReplicationGroupId) -> Option<String> {
        Some(self.groups.get(id)?.engine_version.clone())
    }

    pub fn pending_node_type(&self, id: &ReplicationGroupId) -> Option<NodeType> {
        self.groups.get(id)?.pending_node_type.clone()
    }

    /// What a snapshot was taken from, as its CreateSnapshot named it: the member's
    /// `CacheClusterId`, or the group's `ReplicationGroupId`.
    pub fn snapshot_source(&self, name: &SnapshotName) -> Option<String> {
        let s = self.snapshots.get(name)?;
        Some(s.node.clone().unwrap_or_else(|| s.group.id.to_string()))
    }

    pub fn snapshot_info(&self, name: &SnapshotName, now: Instant) -> Option<SnapshotInfo> {
        let s = self.snapshots.get(name)?;
        let status = s.status(now);
        Some(SnapshotInfo {
            name: s.name.clone(),
            created: (status != SnapshotStatus::Creating).then(|| self.wall(s.started)),
            status,
            group: Some(s.group.id.clone()),
        })
    }

    /// Answer one call and record it.
    pub fn handle(&mut self, req: &QueryRequest, now: Instant) -> Reply {
        self.settle(now);
        let result = self.dispatch(req, now);
        self.record(req, result)
    }

    /// Answer one Application Auto Scaling call (awsJson 1.1: the operation in `X-Amz-Target`,
    /// a JSON body) and record it. Only `DescribeScalableTargets` is served.
    pub fn handle_json(
        &mut self,
        target: &str,
        body: &[u8],
        access_key: Option<String>,
    ) -> JsonReply {
        let action = target.rsplit('.').next().unwrap_or(target).to_string();
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(body);
        let mut params = BTreeMap::new();
        if let Ok(serde_json::Value::Object(m)) = &parsed {
            for (k, v) in m {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                params.insert(k.clone(), v);
            }
        }
        let result = self.dispatch_json(target, &action, parsed);
        self.requests += 1;
        let request_id = RequestId(self.seed, self.requests).to_string();
        self.calls.push(SimCall {
            at: std::time::Instant::now(),
            access_key,
            action: action.clone(),
            params,
            outcome: match &result {
                Ok(_) => "ok".to_string(),
                Err((code, _)) => code.clone(),
            },
        });
        JsonReply {
            action,
            request_id,
            result,
        }
    }

    fn dispatch_json(
        &mut self,
        target: &str,
        action: &str,
        body: Result<serde_json::Value, serde_json::Error>,
    ) -> Result<String, (String, String)> {
        if self.rng.chance(self.throttle_fraction) || self.faults.throttled_actions.contains(action)
        {
            return Err(("ThrottlingException".into(), "Rate exceeded".into()));
        }
        if target == super::pricing::TARGET {
            if self.faults.denied_actions.contains(action) {
                let e = self.denied("pricing:GetProducts");
                return Err(("AccessDeniedException".into(), e.message));
            }
            let body = body.map_err(|e| {
                (
                    "SerializationException".to_string(),
                    format!("The request body is not JSON: {e}"),
                )
            })?;
            return super::pricing::get_products(&body);
        }
        if target != "AnyScaleFrontendService.DescribeScalableTargets" {
            return Err((
                "UnknownOperationException".into(),
                format!("The operation {target} is not served here."),
            ));
        }
        if self.faults.denied_actions.contains(action) {
            let e = self.denied("application-autoscaling:DescribeScalableTargets");
            return Err(("AccessDeniedException".into(), e.message));
        }
        let body = body.map_err(|e| {
            (
                "SerializationException".to_string(),
                format!("The request body is not JSON: {e}"),
            )
        })?;
        let namespace = body.get("ServiceNamespace").and_then(|v| v.as_str());
        if namespace.is_none() {
            return Err((
                "ValidationException".into(),
                "1 validation error detected: Value null at 'serviceNamespace' failed to \
                 satisfy constraint: Member must not be null"
                    .into(),
            ));
        }
        let wanted: Vec<&str> = body
            .get("ResourceIds")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let mut targets = Vec::new();
        if namespace == Some("elasticache") {
            for g in self.groups.values() {
                let resource = format!("replication-group/{}", g.id);
                if !wanted.is_empty() && !wanted.contains(&resource.as_str()) {
                    continue;
                }
                for dim in &g.autoscaling {
                    targets.push(serde_json::json!({
                        "ServiceNamespace": "elasticache",
                        "ResourceId": resource,
                        "ScalableDimension": dim,
                        "MinCapacity": 1,
                        "MaxCapacity": 5,
                        "RoleARN": format!(
                            "arn:aws:iam::{}:role/aws-service-role/elasticache.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ElastiCacheRG",
                            self.account_id
                        ),
                        "CreationTime": self.epoch.1.as_millis() as f64 / 1000.0,
                        "SuspendedState": {
                            "DynamicScalingInSuspended": false,
                            "DynamicScalingOutSuspended": false,
                            "ScheduledScalingSuspended": false
                        }
                    }));
                }
            }
        }
        Ok(serde_json::json!({ "ScalableTargets": targets }).to_string())
    }

    /// Whether a call to a service served beside ElastiCache (CloudWatch) is throttled: the
    /// throttle fraction and the throttled actions apply to it as to every call.
    pub fn throttles(&mut self, action: &str) -> bool {
        self.rng.chance(self.throttle_fraction) || self.faults.throttled_actions.contains(action)
    }

    /// Record a call to a service served beside ElastiCache; its request id.
    pub fn record_call(&mut self, call: SimCall) -> String {
        self.requests += 1;
        self.calls.push(call);
        RequestId(self.seed, self.requests).to_string()
    }

    /// Whether `node` is a cache cluster of one of the groups.
    /// How much `node`'s memory readings at `t` are scaled by the node type changes its group
    /// went through before then (1 when none, or for a node nobody knows).
    pub fn memory_scale(&self, node: &str, t: Timestamp) -> f64 {
        self.groups
            .values()
            .find(|g| g.members().iter().any(|m| m.id == node))
            .map_or(1.0, |g| {
                let gib = |t: &NodeType| {
                    crate::domain::node_types::lookup(t).map_or(1.0, |s| s.memory_gib)
                };
                g.resized
                    .iter()
                    .filter(|(at, _, _)| *at <= t)
                    .map(|(_, from, to)| gib(from) / gib(to))
                    .product()
            })
    }

    pub fn has_member(&self, node: &str) -> bool {
        self.groups
            .values()
            .any(|g| g.members().iter().any(|m| m.id == node))
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// Record a call refused before it reached the account (unsigned, malformed).
    pub fn refuse(&mut self, req: &QueryRequest, error: QueryError) -> Reply {
        self.record(req, Err(error))
    }

    fn record(&mut self, req: &QueryRequest, result: Result<String, QueryError>) -> Reply {
        self.requests += 1;
        let request_id = RequestId(self.seed, self.requests).to_string();
        self.calls.push(SimCall {
            at: std::time::Instant::now(),
            access_key: req.access_key.clone(),
            action: req.action.clone(),
            params: req.params.clone(),
            outcome: match &result {
                Ok(_) => "ok".to_string(),
                Err(e) => e.code.clone(),
            },
        });
        Reply {
            action: req.action.clone(),
            request_id,
            result,
        }
    }

    fn dispatch(&mut self, req: &QueryRequest, now: Instant) -> Result<String, QueryError> {
        // AWS throttles before it looks at what was asked.
        if self.rng.chance(self.throttle_fraction) {
            return Err(QueryError::new("Throttling", "Rate exceeded"));
        }
        if req.action.is_empty() {
            return Err(QueryError::new(
                "MissingAction",
                "The request must contain the parameter Action.",
            ));
        }
        let Some(action) = Action::parse(&req.action) else {
            return Err(QueryError::new(
                "InvalidAction",
                format!(
                    "The action {} is not valid for this web service.",
                    req.action
                ),
            ));
        };
        let (service, version) = match action {
            Action::GetCallerIdentity | Action::AssumeRole => ("STS", STS_API_VERSION),
            _ => ("ElastiCache", API_VERSION),
        };
        if let Some(v) = req.get("Version")
            && v != version
        {
            return Err(QueryError::invalid_value(format!(
                "Version {v} is not supported; {service} speaks {version}."
            )));
        }
        if self.faults.denied_actions.contains(action.name()) {
            return Err(self.denied(&format!("elasticache:{}", action.name())));
        }
        if self.faults.throttled_actions.contains(action.name()) {
            return Err(QueryError::new("Throttling", "Rate exceeded"));
        }
        match action {
            Action::DescribeReplicationGroups => self.describe_replication_groups(req, now),
            Action::DescribeCacheClusters => self.describe_cache_clusters(req, now),
            Action::ListAllowedNodeTypeModifications => {
                self.list_allowed_node_type_modifications(req)
            }
            Action::CreateSnapshot => self.create_snapshot(req, now),
            Action::DescribeSnapshots => self.describe_snapshots(req, now),
            Action::ModifyReplicationGroup => self.modify_replication_group(req, now),
            Action::DescribeCacheParameters => self.describe_cache_parameters(req),
            Action::DescribeUpdateActions => self.describe_update_actions(req),
            Action::DescribeEvents => self.describe_events(req),
            Action::GetCallerIdentity => Ok(self.caller_identity()),
            Action::AssumeRole => self.assume_role(req, now),
        }
    }

    /// What AWS answers when the caller's policy does not allow `permission`.
    fn denied(&self, permission: &str) -> QueryError {
        QueryError::new(
            "AccessDenied",
            format!(
                "User: arn:aws:iam::{}:user/redis-autoscaler is not authorized to perform: \
                 {permission} because no identity-based policy allows the {permission} action",
                self.account_id
            ),
        )
    }

    fn describe_cache_parameters(&self, req: &QueryRequest) -> Result<String, QueryError> {
        let name = req.require("CacheParameterGroupName")?;
        let reserved = self.parameter_groups.get(name).ok_or_else(|| {
            QueryError::new(
                "CacheParameterGroupNotFound",
                format!("CacheParameterGroup {name} not found."),
            )
        })?;
        let (percent, bytes) = match reserved {
            SimReservedMemory::Percent(p) => (p.to_string(), "0".to_string()),
            SimReservedMemory::Bytes(b) => ("0".to_string(), b.to_string()),
        };
        let params = [
            ("activerehashing", "yes".to_string()),
            ("maxmemory-policy", "volatile-lru".to_string()),
            ("reserved-memory", bytes),
            ("reserved-memory-percent", percent),
            ("timeout", "0".to_string()),
        ];
        // Pages of MaxRecords (20–100, default 100) with a Marker, like AWS.
        let start: usize = match req.get("Marker") {
            Some(m) => m
                .parse()
                .map_err(|_| QueryError::invalid_value(format!("Invalid Marker: {m}")))?,
            None => 0,
        };
        let size: usize = req
            .get("MaxRecords")
            .and_then(|m| m.parse().ok())
            .unwrap_or(100);
        let page: Vec<_> = params.iter().skip(start).take(size).collect();
        let next = start + page.len();
        let mut x = Xml::new();
        x.node("Parameters", |x| {
            for (n, v) in &page {
                x.node("Parameter", |x| {
                    x.leaf("ParameterName", n)
                        .leaf("ParameterValue", v)
                        .leaf("Source", "system")
                        .leaf(
                            "DataType",
                            if n.starts_with("reserved") {
                                "integer"
                            } else {
                                "string"
                            },
                        )
                        .leaf("IsModifiable", true)
                        .leaf("MinimumEngineVersion", "2.8.6")
                        .leaf("ChangeType", "immediate");
                });
            }
        })
        .empty("CacheNodeTypeSpecificParameters");
        if next < params.len() {
            x.leaf("Marker", next);
        }
        Ok(x.finish())
    }

    fn describe_update_actions(&self, req: &QueryRequest) -> Result<String, QueryError> {
        let groups = req.list("ReplicationGroupIds");
        let statuses = req.list("UpdateActionStatus");
        let mut x = Xml::new();
        x.node("UpdateActions", |x| {
            for g in self.groups.values() {
                if !groups.is_empty() && !groups.contains(&g.id.as_str()) {
                    continue;
                }
                for (name, status) in &g.service_updates {
                    if !statuses.is_empty() && !statuses.contains(&status.as_str()) {
                        continue;
                    }
                    x.node("UpdateAction", |x| {
                        x.leaf("ReplicationGroupId", &g.id)
                            .leaf("ServiceUpdateName", name)
                            .leaf("ServiceUpdateSeverity", "important")
                            .leaf("ServiceUpdateStatus", "available")
                            .leaf("ServiceUpdateType", "security-update")
                            .leaf("UpdateActionStatus", status)
                            .leaf("Engine", "redis");
                    });
                }
            }
        });
        Ok(x.finish())
    }

    /// DescribeEvents: `StartTime` (default: the last hour, as AWS), `SourceIdentifier`,
    /// `SourceType`, newest `MaxRecords` (default 100).
    fn describe_events(&self, req: &QueryRequest) -> Result<String, QueryError> {
        let start = match req.get("StartTime") {
            Some(s) => Some(Timestamp::parse_rfc3339(s).ok_or_else(|| {
                QueryError::invalid_value(format!("StartTime `{s}` is not an ISO 8601 time"))
            })?),
            None => None,
        };
        let max = match req.get("MaxRecords") {
            Some(m) => m
                .parse::<usize>()
                .ok()
                .filter(|m| (20..=100).contains(m))
                .ok_or_else(|| {
                    QueryError::invalid_value("MaxRecords must be between 20 and 100")
                })?,
            None => 100,
        };
        let listed: Vec<&SimEvent> = self
            .events
            .iter()
            .filter(|e| start.is_none_or(|s| e.at >= s))
            .filter(|e| req.get("SourceIdentifier").is_none_or(|id| e.source == id))
            .filter(|e| req.get("SourceType").is_none_or(|t| e.source_type == t))
            .collect();
        let from = listed.len().saturating_sub(max);
        let mut x = Xml::new();
        x.node("Events", |x| {
            // Newest first, as AWS lists them.
            for e in listed[from..].iter().rev() {
                x.node("Event", |x| {
                    x.leaf("SourceIdentifier", &e.source)
                        .leaf("SourceType", e.source_type)
                        .leaf("Message", &e.message)
                        .leaf("Date", e.at.to_rfc3339());
                });
            }
        });
        Ok(x.finish())
    }

    /// Session credentials for a role this account may assume, lasting `session_duration`.
    fn assume_role(&mut self, req: &QueryRequest, now: Instant) -> Result<String, QueryError> {
        let arn = req.require("RoleArn")?.to_string();
        let session = req.require("RoleSessionName")?.to_string();
        let Some(wanted) = self.roles.get(&arn).cloned() else {
            return Err(self.denied(&format!("sts:AssumeRole on resource: {arn}")));
        };
        if wanted.is_some() && req.get("ExternalId").map(str::to_string) != wanted {
            return Err(self.denied(&format!("sts:AssumeRole on resource: {arn}")));
        }
        self.sessions += 1;
        let n = self.sessions;
        let key = format!("ASIASIM{n:013}");
        self.issued_keys.push(key.clone());
        let expires = self.wall(now).plus(self.session_duration);
        let (account, role) = arn
            .strip_prefix("arn:aws:iam::")
            .and_then(|r| r.split_once(":role/"))
            .unwrap_or(("000000000000", "role"));
        let mut x = Xml::new();
        x.node("Credentials", |x| {
            x.leaf("AccessKeyId", &key)
                .leaf("SecretAccessKey", format!("simulated-secret-{n}"))
                .leaf("SessionToken", format!("simulated-session-token-{n}"))
                .leaf("Expiration", expires.to_rfc3339());
        })
        .node("AssumedRoleUser", |x| {
            x.leaf("AssumedRoleId", format!("AROASIMULATED:{session}"))
                .leaf(
                    "Arn",
                    format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
                );
        });
        Ok(x.finish())
    }

    /// The session keys AssumeRole handed out, oldest first.
    pub fn issued_keys(&self) -> &[String] {
        &self.issued_keys
    }

    fn caller_identity(&self) -> String {
        let account = &self.account_id;
        let mut x = Xml::new();
        x.leaf(
            "Arn",
            format!("arn:aws:iam::{account}:user/redis-autoscaler"),
        )
        .leaf("UserId", "AIDAREDISAUTOSCALER")
        .leaf("Account", account);
        x.finish()
    }

    fn find_group(&self, raw: &str) -> Result<&Group, QueryError> {
        let id = ReplicationGroupId::parse(raw).map_err(|_| {
            QueryError::invalid_value(format!(
                "The parameter ReplicationGroupId is not a valid identifier: {raw}"
            ))
        })?;
        self.groups.get(&id).ok_or_else(|| {
            QueryError::new(
                "ReplicationGroupNotFoundFault",
                format!("Replication group {id} not found."),
            )
        })
    }

    fn find_cluster(&self, raw: &str) -> Result<(&Group, Member), QueryError> {
        let wanted = raw.trim().to_ascii_lowercase();
        self.groups
            .values()
            .find_map(|g| {
                g.members()
                    .into_iter()
                    .find(|m| m.id == wanted)
                    .map(|m| (g, m))
            })
            .ok_or_else(|| {
                QueryError::new(
                    "CacheClusterNotFound",
                    format!("CacheCluster not found: {raw}"),
                )
            })
    }

    /// The group a request names by `ReplicationGroupId` or by one of its `CacheClusterId`s.
    fn group_or_cluster(&self, req: &QueryRequest) -> Result<&Group, QueryError> {
        match (req.get("ReplicationGroupId"), req.get("CacheClusterId")) {
            (Some(_), Some(_)) => Err(QueryError::invalid_combination(
                "Only one of ReplicationGroupId and CacheClusterId may be specified.",
            )),
            (Some(id), None) => self.find_group(id),
            (None, Some(c)) => self.find_cluster(c).map(|(g, _)| g),
            (None, None) => Err(QueryError::new(
                "MissingParameter",
                "The request must contain the parameter ReplicationGroupId or CacheClusterId.",
            )),
        }
    }

    fn describe_replication_groups(
        &self,
        req: &QueryRequest,
        now: Instant,
    ) -> Result<String, QueryError> {
        let groups: Vec<&Group> = match req.get("ReplicationGroupId") {
            Some(id) => vec![self.find_group(id)?],
            None => self.groups.values().collect(),
        };
        let mut x = Xml::new();
        x.node("ReplicationGroups", |x| {
            for g in groups {
                x.node("ReplicationGroup", |x| {
                    render::group(x, self, g, self.status(g, now));
                });
            }
        });
        Ok(x.finish())
    }

    fn describe_cache_clusters(
        &self,
        req: &QueryRequest,
        now: Instant,
    ) -> Result<String, QueryError> {
        let clusters: Vec<(&Group, Member)> = match req.get("CacheClusterId") {
            Some(id) => vec![self.find_cluster(id)?],
            None => self
                .groups
                .values()
                .flat_map(|g| g.members().into_iter().map(move |m| (g, m)))
                .collect(),
        };
        let mut x = Xml::new();
        x.node("CacheClusters", |x| {
            for (g, m) in &clusters {
                x.node("CacheCluster", |x| {
                    render::cache_cluster(x, self, g, m, self.status(g, now));
                });
            }
        });
        Ok(x.finish())
    }

    fn list_allowed_node_type_modifications(
        &self,
        req: &QueryRequest,
    ) -> Result<String, QueryError> {
        let g = self.group_or_cluster(req)?;
        let ups = node_types::scale_ups_from(&g.node_type);
        // Every smaller type: the simulator does not check that the data would fit.
        let downs = node_types::scale_downs_from(&g.node_type);
        let mut x = Xml::new();
        x.node("ScaleUpModifications", |x| {
            for t in &ups {
                x.leaf("member", t);
            }
        });
        if downs.is_empty() {
            x.empty("ScaleDownModifications");
        } else {
            x.node("ScaleDownModifications", |x| {
                for t in &downs {
                    x.leaf("member", t);
                }
            });
        }
        Ok(x.finish())
    }

    fn create_snapshot(&mut self, req: &QueryRequest, now: Instant) -> Result<String, QueryError> {
        let raw_name = req.require("SnapshotName")?;
        // Exactly one of the two names what the snapshot is taken from.
        let node = match (req.get("ReplicationGroupId"), req.get("CacheClusterId")) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(QueryError::invalid_combination(
                    "Specify exactly one of ReplicationGroupId and CacheClusterId.",
                ));
            }
            (Some(_), None) => None,
            (None, Some(raw)) => {
                let (g, m) = self.find_cluster(raw)?;
                if g.cluster_enabled() {
                    return Err(QueryError::invalid_combination(
                        "Snapshots of a cluster-mode-enabled group must name its ReplicationGroupId.",
                    ));
                }
                Some(m.id)
            }
        };
        let g = self.group_or_cluster(req)?;
        let name = SnapshotName::parse(raw_name).map_err(|e| {
            QueryError::invalid_value(format!("Invalid SnapshotName {raw_name}: {e}"))
        })?;
        if self.snapshots.contains_key(&name) {
            return Err(QueryError::new(
                "SnapshotAlreadyExistsFault",
                format!("Snapshot with specified name [{name}] already exists."),
            ));
        }
        if let Some(quota) = self.faults.snapshot_quota
            && self.snapshots.len() >= quota
        {
            return Err(QueryError::new(
                "SnapshotQuotaExceededFault",
                format!(
                    "The request cannot be processed because it would exceed the allowed \
                     number of snapshots ({quota})."
                ),
            ));
        }
        let day_ago = now.checked_sub(Duration::from_secs(24 * 3600));
        let today = self
            .snapshots
            .values()
            .filter(|s| s.group.id == g.id && day_ago.is_none_or(|d| s.started >= d))
            .count();
        if today >= SNAPSHOTS_PER_DAY {
            return Err(QueryError::new(
                "SnapshotQuotaExceededFault",
                format!(
                    "The request cannot be processed because it would exceed the maximum of \
                     {SNAPSHOTS_PER_DAY} manual snapshots per node in 24 hours for {}.",
                    g.id
                ),
            ));
        }
        let status = self.status(g, now);
        if status != GroupStatus::Available {
            return Err(QueryError::new(
                "InvalidReplicationGroupState",
                format!(
                    "Replication group {} must be available to take a snapshot, but it is {}.",
                    g.id,
                    status.as_str()
                ),
            ));
        }
        let fails = self
            .faults
            .failing_snapshots
            .iter()
            .any(|s| s.matches(&g.id, &name));
        let snapshot = Snapshot {
            name: name.clone(),
            group: g.clone(),
            node,
            started: now,
            ready_at: now + self.snapshot_duration,
            ends: if fails {
                SnapshotEnd::Failed
            } else {
                SnapshotEnd::Available
            },
        };
        let mut x = Xml::new();
        x.node("Snapshot", |x| render::snapshot(x, self, &snapshot, now));
        self.snapshots.insert(name, snapshot);
        Ok(x.finish())
    }

    fn describe_snapshots(&self, req: &QueryRequest, now: Instant) -> Result<String, QueryError> {
        let mut found: Vec<&Snapshot> = self.snapshots.values().collect();
        if let Some(raw) = req.get("SnapshotName") {
            let wanted = raw.trim().to_ascii_lowercase();
            found.retain(|s| s.name.as_str() == wanted);
            if found.is_empty() {
                return Err(QueryError::new(
                    "SnapshotNotFoundFault",
                    format!("Snapshot {raw} not found."),
                ));
            }
        }
        if let Some(raw) = req.get("ReplicationGroupId") {
            let wanted = raw.trim().to_ascii_lowercase();
            found.retain(|s| s.group.id.as_str() == wanted);
        }
        if let Some(raw) = req.get("CacheClusterId") {
            let (g, _) = self.find_cluster(raw)?;
            found.retain(|s| s.group.id == g.id);
        }
        // Every simulated snapshot was made by a user; there are no automatic ones.
        match req.get("SnapshotSource") {
            None | Some("user") => {}
            Some("system") => found.clear(),
            Some(other) => {
                return Err(QueryError::invalid_value(format!(
                    "Invalid value for SnapshotSource: {other}; valid values are system, user"
                )));
            }
        }
        let mut x = Xml::new();
        x.node("Snapshots", |x| {
            for s in found {
                x.node("Snapshot", |x| render::snapshot(x, self, s, now));
            }
        });
        Ok(x.finish())
    }

    fn modify_replication_group(
        &mut self,
        req: &QueryRequest,
        now: Instant,
    ) -> Result<String, QueryError> {
        let g = self.find_group(req.require("ReplicationGroupId")?)?;
        let Some(raw_type) = req.get("CacheNodeType") else {
            return Err(QueryError::invalid_combination(
                "No modifications were requested.",
            ));
        };
        let target = NodeType::parse(raw_type)
            .ok()
            .filter(node_types::is_offered)
            .ok_or_else(|| {
                QueryError::invalid_value(format!(
                    "Invalid parameter value: CacheNodeType {raw_type} is not a node type \
                     ElastiCache offers."
                ))
            })?;
        let apply_now = req.bool("ApplyImmediately")?.unwrap_or(false);
        let status = self.status(g, now);
        if status != GroupStatus::Available {
            return Err(QueryError::new(
                "InvalidReplicationGroupState",
                format!(
                    "Replication group {} must be available to be modified, but it is {}.",
                    g.id,
                    status.as_str()
                ),
            ));
        }
        if target == g.node_type {
            return Err(QueryError::invalid_combination(format!(
                "No modifications were requested: {} already runs on {target}.",
                g.id
            )));
        }
        if !node_types::scale_ups_from(&g.node_type).contains(&target)
            && !node_types::scale_downs_from(&g.node_type).contains(&target)
        {
            return Err(QueryError::invalid_combination(format!(
                "Cannot modify {} from {} to {target}: it is not one of the allowed \
                 scale-up or scale-down modifications (see ListAllowedNodeTypeModifications).",
                g.id, g.node_type
            )));
        }
        let reverts = match self.faults.failing_modifications.get(&g.id) {
            Some(ModifyFault::Reject { code }) => {
                return Err(QueryError::new(code.clone(), rejection_message(code)));
            }
            Some(ModifyFault::Revert) => true,
            None => false,
        };
        let id = g.id.clone();
        let duration = self.modify_duration;
        let g = self.groups.get_mut(&id).expect("found above");
        if apply_now {
            g.activity = Activity::Modifying {
                to: target,
                until: now + duration,
                reverts,
            };
            g.pending_node_type = None;
            // ApplyImmediately applies whatever else was waiting, too.
            if let Some(v) = g.pending_engine_version.take() {
                g.engine_version = v;
            }
        } else {
            g.pending_node_type = Some(target);
        }
        let g = &self.groups[&id];
        let mut x = Xml::new();
        x.node("ReplicationGroup", |x| {
            render::group(x, self, g, self.status(g, now));
        });
        Ok(x.finish())
    }
}

/// What AWS says when it refuses a modification with `code`.
fn rejection_message(code: &str) -> String {
    match code {
        "InsufficientCacheClusterCapacity" => {
            "There is insufficient capacity for the requested node type in the availability zone."
                .to_string()
        }
        "NodeQuotaForCustomerExceeded" => "The request cannot be processed because it would \
                                           exceed the allowed number of cache nodes per customer."
            .to_string(),
        "NodeQuotaForClusterExceeded" => "The request cannot be processed because it would \
                                          exceed the allowed number of cache nodes in a cluster."
            .to_string(),
        other => format!("The modification was refused ({other}), as the simulator was told to."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elasticache::sim::SnapshotSelector;

    const MS: Duration = Duration::from_millis(1);

    fn id(s: &str) -> ReplicationGroupId {
        ReplicationGroupId::parse(s).unwrap()
    }

    fn nt(s: &str) -> NodeType {
        NodeType::parse(s).unwrap()
    }

    fn world(now: Instant) -> World {
        let config = SimConfig {
            groups: vec![
                SimGroup::new(id("prod-jobs"), nt("cache.r6g.large")),
                SimGroup::new(id("sharded"), nt("cache.m6g.large"))
                    .replicas(2)
                    .shards(3),
            ],
            snapshot_duration: 100 * MS,
            modify_duration: 200 * MS,
            ..SimConfig::default()
        };
        World::new(&config, now, Timestamp::from_millis(1_700_000_000_000))
    }

    fn call(w: &mut World, now: Instant, form: &str) -> Result<String, QueryError> {
        let req = QueryRequest::parse(form.as_bytes()).unwrap();
        w.handle(&req, now).result
    }

    fn code(r: Result<String, QueryError>) -> String {
        r.expect_err("expected an error").code
    }

    fn status(w: &mut World, now: Instant, g: &str) -> (String, NodeType) {
        let info = w.group_info(&id(g), now).unwrap();
        (info.status.to_string(), info.node_type.unwrap())
    }

    #[test]
    fn members_are_named_like_aws_in_both_cluster_modes() {
        let t0 = Instant::now();
        let mut w = world(t0);
        let plain = w.group_info(&id("prod-jobs"), t0).unwrap();
        let names: Vec<&str> = plain.members.iter().map(|m| m.as_str()).collect();
        assert_eq!(names, ["prod-jobs-001", "prod-jobs-002"]);
        assert_eq!(plain.cluster_mode, ClusterMode::Disabled);
        let sharded = w.group_info(&id("sharded"), t0).unwrap();
        assert_eq!(sharded.members.len(), 9);
        assert_eq!(sharded.members[0].as_str(), "sharded-0001-001");
        assert_eq!(sharded.members[8].as_str(), "sharded-0003-003");
        assert_eq!(sharded.cluster_mode, ClusterMode::Enabled);
    }

    #[test]
    fn a_snapshot_is_creating_then_available_and_the_group_snapshotting_meanwhile() {
        let t0 = Instant::now();
        let mut w = world(t0);
        call(
            &mut w,
            t0,
            "Action=CreateSnapshot&ReplicationGroupId=prod-jobs&SnapshotName=s1",
        )
        .unwrap();
        let name = SnapshotName::parse("s1").unwrap();
        assert_eq!(
            w.snapshot_info(&name, t0 + 99 * MS).unwrap().status,
            SnapshotStatus::Creating
        );
        assert_eq!(status(&mut w, t0 + 99 * MS, "prod-jobs").0, "snapshotting");
        assert_eq!(
            w.snapshot_info(&name, t0 + 100 * MS).unwrap().status,
            SnapshotStatus::Available
        );
        assert_eq!(status(&mut w, t0 + 100 * MS, "prod-jobs").0, "available");
    }

    #[test]
    fn a_modification_reports_the_old_type_until_it_is_done() {
        let t0 = Instant::now();
        let mut w = world(t0);
        let body = call(
            &mut w,
            t0,
            "Action=ModifyReplicationGroup&ReplicationGroupId=prod-jobs\
             &CacheNodeType=cache.r6g.xlarge&ApplyImmediately=true",
        )
        .unwrap();
        assert!(body.contains("<Status>modifying</Status>"), "{body}");
        assert!(
            body.contains("<CacheNodeType>cache.r6g.large</CacheNodeType>"),
            "{body}"
        );
        assert_eq!(
            status(&mut w, t0 + 199 * MS, "prod-jobs"),
            ("modifying".to_string(), nt("cache.r6g.large"))
        );
        assert_eq!(
            status(&mut w, t0 + 200 * MS, "prod-jobs"),
            ("available".to_string(), nt("cache.r6g.xlarge"))
        );
    }

    #[test]
    fn memory_readings_scale_with_the_node_type_from_when_the_modification_completed() {
        let t0 = Instant::now();
        let mut w = world(t0);
        let node = "prod-jobs-001";
        let before = w.wall(t0 + 199 * MS);
        assert_eq!(w.memory_scale(node, before), 1.0);
        call(
            &mut w,
            t0,
            "Action=ModifyReplicationGroup&ReplicationGroupId=prod-jobs\
             &CacheNodeType=cache.r6g.xlarge&ApplyImmediately=true",
        )
        .unwrap();
        status(&mut w, t0 + 300 * MS, "prod-jobs");
        // cache.r6g.large (13.07 GiB) → xlarge (26.32 GiB): about half, from the end on.
        assert_eq!(w.memory_scale(node, before), 1.0);
        let after = w.memory_scale(node, w.wall(t0 + 200 * MS));
        assert!((after - 13.07 / 26.32).abs() < 0.01, "{after}");
        assert_eq!(w.memory_scale("nobody-001", w.wall(t0 + 300 * MS)), 1.0);
    }

    #[test]
    fn describe_events_lists_a_reverted_modification_newest_first_and_filters() {
        let t0 = Instant::now();
        let mut w = world(t0);
        w.faults
            .failing_modifications
            .insert(id("prod-jobs"), ModifyFault::Revert);
        call(
            &mut w,
            t0,
            "Action=ModifyReplicationGroup&ReplicationGroupId=prod-jobs\
             &CacheNodeType=cache.r6g.xlarge&ApplyImmediately=true",
        )
        .unwrap();
        status(&mut w, t0 + 300 * MS, "prod-jobs");
        let all = call(&mut w, t0 + 300 * MS, "Action=DescribeEvents").unwrap();
        let node = all.find("<SourceIdentifier>prod-jobs-001<").unwrap();
        let group = all.find("<SourceIdentifier>prod-jobs<").unwrap();
        assert!(
            group < node,
            "newest first (the group's line was pushed last): {all}"
        );
        assert!(all.contains("InsufficientCacheClusterCapacity"), "{all}");
        assert!(
            all.contains("<SourceType>cache-cluster</SourceType>"),
            "{all}"
        );
        let only = call(
            &mut w,
            t0 + 300 * MS,
            "Action=DescribeEvents&SourceIdentifier=prod-jobs&SourceType=replication-group",
        )
        .unwrap();
        assert_eq!(only.matches("<Event>").count(), 1, "{only}");
        let later = w.wall(t0 + 400 * MS).to_rfc3339();
        let none = call(
            &mut w,
            t0 + 400 * MS,
            &format!("Action=DescribeEvents&StartTime={later}"),
        )
        .unwrap();
        assert_eq!(none.matches("<Event>").count(), 0, "{none}");
        let bad = call(&mut w, t0, "Action=DescribeEvents&StartTime=yesterday").unwrap_err();
        assert_eq!(bad.code, "InvalidParameterValue");
    }

    #[test]
    fn a_modification_without_apply_immediately_is_recorded_but_not_applied() {
        let t0 = Instant::now();
        let mut w = world(t0);
        call(
            &mut w,
            t0,
            "Action=ModifyReplicationGroup&ReplicationGroupId=prod-jobs&CacheNodeType=cache.r6g.xlarge",
        )
        .unwrap();
        assert_eq!(
            status(&mut w, t0 + 1000 * MS, "prod-jobs"),
            ("available".to_string(), nt("cache.r6g.large"))
        );
        assert_eq!(
            w.pending_node_type(&id("prod-jobs")),
            Some(nt("cache.r6g.xlarge"))
        );
        assert_eq!(w.calls().last().unwrap().outcome, "ok");
    }

    #[test]
    fn a_busy_group_refuses_snapshots_and_modifications() {
        let t0 = Instant::now();
        let mut w = world(t0);
        let snap = "Action=CreateSnapshot&ReplicationGroupId=prod-jobs&SnapshotName=";
        let modify = "Action=ModifyReplicationGroup&ReplicationGroupId=prod-jobs\
                      &CacheNodeType=cache.r6g.xlarge&ApplyImmediately=true";
        call(&mut w, t0, &format!("{snap}a")).unwrap();
        assert_eq!(
            code(call(&mut w, t0, &format!("{snap}b"))),
            "InvalidReplicationGroupState"
        );
        assert_eq!(
            code(call(&mut w, t0, modify)),
            "InvalidReplicationGroupState"
        );
        let t1 = t0 + 100 * MS;
        call(&mut w, t1, modify).unwrap();
        assert_eq!(
            code(call(&mut w, t1, modify)),
            "InvalidReplicationGroupState"
        );
        assert_eq!(
            code(call(&mut w, t1, &format!("{snap}c"))),
            "InvalidReplicationGroupState"
        );
    }

    #[test]
    fn duplicate_names_unknown_ids_and_quotas_are_refused_with_aws_codes() {
        let t0 = Instant::now();
        let mut w = world(t0);
        let snap = "Action=CreateSnapshot&ReplicationGroupId=prod-jobs&SnapshotName=a";
        call(&mut w, t0, snap).unwrap();
        let later = t0 + 1000 * MS;
        assert_eq!(
            code(call(&mut w, later, snap)),
            "SnapshotAlreadyExistsFault"
        );
        assert_eq!(
            code(call(
                &mut w,
                later,
                "Action=DescribeReplicationGroups&ReplicationGroupId=nope"
            )),
            "ReplicationGroupNotFoundFault"
        );
        assert_eq!(
            code(call(
                &mut w,
                later,
                "Action=DescribeCacheClusters&CacheClusterId=nope-001"
            )),
            "CacheClusterNotFound"
        );
        assert_eq!(
            code(call(
                &mut w,
                later,
                "Action=DescribeSnapshots&SnapshotName=nope"
            )),
            "SnapshotNotFoundFault"
        );
        w.faults.snapshot_quota = Some(1);
        assert_eq!(
            code(call(
                &mut w,
                later,
                "Action=CreateSnapshot&ReplicationGroupId=prod-jobs&SnapshotName=b"
            )),
            "SnapshotQuotaExceededFault"
        );
    }

    #[test]
    fn a_snapshot_names_exactly_one_source_and_a_node_must_be_a_member() {
        let t0 = Instant::now();
        let mut w = world(t0);
        let snap =
            |from: &str, name: &str| format!("Action=CreateSnapshot&{from}SnapshotName={name}");
        assert_eq!(
            code(call(
                &mut w,
                t0,
                &snap(
                    "ReplicationGroupId=prod-jobs&CacheClusterId=prod-jobs-002&",
                    "both"
                )
            )),
            "InvalidParameterCombination"
        );
        assert_eq!(
            code(call(&mut w, t0, &snap("", "neither"))),
            "InvalidParameterCombination"
        );
        assert_eq!(
            code(call(
                &mut w,
                t0,
                &snap("CacheClusterId=nope-001&", "stranger")
            )),
            "CacheClusterNotFound"
        );
        // A member of a cluster-mode-enabled group is not a snapshot source on its own.
        assert_eq!(
            code(call(
                &mut w,
                t0,
                &snap("CacheClusterId=sharded-0001-002&", "shard")
            )),
            "InvalidParameterCombination"
        );
        assert!(w.snapshots.is_empty(), "nothing was taken");

        let body = call(
            &mut w,
            t0,
            &snap("CacheClusterId=prod-jobs-001&", "primary"),
        )
        .unwrap();
        let name = SnapshotName::parse("primary").unwrap();
        assert_eq!(w.snapshot_source(&name).as_deref(), Some("prod-jobs-001"));
        assert!(
            body.contains("<CacheClusterId>prod-jobs-001</CacheClusterId>")
                && !body.contains("<CacheClusterId>prod-jobs-002</CacheClusterId>"),
            "the node snapshot is of the node named: {body}"
        );
        assert_eq!(
            w.snapshot_info(&name, t0).unwrap().group,
            Some(id("prod-jobs"))
        );
        let t1 = t0 + 1000 * MS;
        call(&mut w, t1, &snap("ReplicationGroupId=prod-jobs&", "whole")).unwrap();
        let whole = SnapshotName::parse("whole").unwrap();
        assert_eq!(w.snapshot_source(&whole).as_deref(), Some("prod-jobs"));
    }

    #[test]
    fn only_allowed_scale_ups_and_downs_of_offered_types_are_accepted() {
        let t0 = Instant::now();
        let mut w = world(t0);
        let modify = |t: &str| {
            format!(
                "Action=ModifyReplicationGroup&ReplicationGroupId=prod-jobs&CacheNodeType={t}\
                 &ApplyImmediately=true"
            )
        };
        assert_eq!(
            code(call(&mut w, t0, &modify("cache.x9z.large"))),
            "InvalidParameterValue"
        );
        assert_eq!(
            code(call(&mut w, t0, &modify("large"))),
            "InvalidParameterValue"
        );
        assert_eq!(
            code(call(&mut w, t0, &modify("cache.r6g.large"))),
            "InvalidParameterCombination"
        );
        // A previous-generation type is never a target, up or down.
        assert_eq!(
            code(call(&mut w, t0, &modify("cache.m1.small"))),
            "InvalidParameterCombination"
        );
        assert_eq!(
            code(call(&mut w, t0, &modify("cache.r3.xlarge"))),
            "InvalidParameterCombination"
        );
        assert_eq!(
            code(call(
                &mut w,
                t0,
                "Action=ModifyReplicationGroup&ReplicationGroupId=prod-jobs"
            )),
            "InvalidParameterCombination"
        );
        assert!(call(&mut w, t0, &modify("cache.m6g.2xlarge")).is_ok());
        // A listed scale-down is accepted too.
        let mut w = world(t0);
        assert!(call(&mut w, t0, &modify("cache.t4g.small")).is_ok());
    }

    #[test]
    fn scale_ups_are_listed_in_aws_alphabetical_order() {
        let t0 = Instant::now();
        let mut w = world(t0);
        let body = call(
            &mut w,
            t0,
            "Action=ListAllowedNodeTypeModifications&ReplicationGroupId=prod-jobs",
        )
        .unwrap();
        let expected: String = node_types::scale_ups_from(&nt("cache.r6g.large"))
            .iter()
            .map(|t| format!("<member>{t}</member>"))
            .collect();
        let downs: String = node_types::scale_downs_from(&nt("cache.r6g.large"))
            .iter()
            .map(|t| format!("<member>{t}</member>"))
            .collect();
        assert!(!downs.is_empty() && !downs.contains("r6g."), "{downs}");
        assert_eq!(
            body,
            format!(
                "<ScaleUpModifications>{expected}</ScaleUpModifications>\
                 <ScaleDownModifications>{downs}</ScaleDownModifications>"
            )
        );
        let by_cluster = call(
            &mut w,
            t0,
            "Action=ListAllowedNodeTypeModifications&CacheClusterId=prod-jobs-002",
        )
        .unwrap();
        assert_eq!(body, by_cluster);
    }

    #[test]
    fn injected_snapshot_failures_end_failed_and_free_the_group() {
        let t0 = Instant::now();
        let mut w = world(t0);
        w.faults
            .failing_snapshots
            .insert(SnapshotSelector::OfGroup(id("prod-jobs")));
        call(
            &mut w,
            t0,
            "Action=CreateSnapshot&ReplicationGroupId=prod-jobs&SnapshotName=s1",
        )
        .unwrap();
        let name = SnapshotName::parse("s1").unwrap();
        assert_eq!(
            w.snapshot_info(&name, t0).unwrap().status,
            SnapshotStatus::Creating
        );
        let t1 = t0 + 100 * MS;
        assert_eq!(
            w.snapshot_info(&name, t1).unwrap().status,
            SnapshotStatus::Failed
        );
        assert_eq!(status(&mut w, t1, "prod-jobs").0, "available");
    }

    #[test]
    fn injected_modify_faults_reject_at_once_or_revert_later() {
        let t0 = Instant::now();
        let mut w = world(t0);
        let modify = |g: &str| {
            format!(
                "Action=ModifyReplicationGroup&ReplicationGroupId={g}\
                 &CacheNodeType=cache.m6g.xlarge&ApplyImmediately=true"
            )
        };
        w.faults.failing_modifications.insert(
            id("sharded"),
            ModifyFault::reject("InsufficientCacheClusterCapacity"),
        );
        w.faults
            .failing_modifications
            .insert(id("prod-jobs"), ModifyFault::Revert);
        let err = call(&mut w, t0, &modify("sharded")).unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.status),
            ("InsufficientCacheClusterCapacity", 400)
        );
        assert_eq!(status(&mut w, t0, "sharded").0, "available");
        call(
            &mut w,
            t0,
            "Action=ModifyReplicationGroup&ReplicationGroupId=prod-jobs\
                          &CacheNodeType=cache.r6g.xlarge&ApplyImmediately=true",
        )
        .unwrap();
        assert_eq!(status(&mut w, t0 + 100 * MS, "prod-jobs").0, "modifying");
        assert_eq!(
            status(&mut w, t0 + 200 * MS, "prod-jobs"),
            ("available".to_string(), nt("cache.r6g.large"))
        );
    }

    #[test]
    fn throttling_is_deterministic_for_a_seed_and_has_no_side_effects() {
        let outcomes = |seed: u64| {
            let t0 = Instant::now();
            let mut w = world(t0);
            w.rng = XorShift64::new(seed);
            w.set_throttle_fraction(0.5);
            for _ in 0..64 {
                let _ = call(&mut w, t0, "Action=DescribeReplicationGroups");
            }
            w.calls()
                .iter()
                .map(|c| c.outcome.clone())
                .collect::<Vec<_>>()
        };
        let a = outcomes(7);
        assert_eq!(a, outcomes(7));
        assert_ne!(a, outcomes(8));
        let throttled = a.iter().filter(|o| *o == "Throttling").count();
        assert!(
            (16..=48).contains(&throttled),
            "{throttled} of 64 throttled"
        );

        let t0 = Instant::now();
        let mut w = world(t0);
        w.set_throttle_fraction(1.0);
        let err = call(
            &mut w,
            t0,
            "Action=CreateSnapshot&ReplicationGroupId=prod-jobs&SnapshotName=s",
        );
        assert_eq!(code(err), "Throttling");
        assert!(
            w.snapshot_info(&SnapshotName::parse("s").unwrap(), t0)
                .is_none()
        );
    }

    #[test]
    fn the_prng_covers_the_unit_interval_and_never_sticks_at_zero() {
        let mut r = XorShift64::new(0);
        let draws: Vec<f64> = (0..1000).map(|_| r.next_f64()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        assert!(draws.iter().any(|d| *d < 0.1) && draws.iter().any(|d| *d > 0.9));
        assert!(!XorShift64::new(1).chance(0.0));
        assert!(XorShift64::new(1).chance(1.0));
    }

    #[test]
    fn unknown_actions_missing_actions_and_parameters_are_refused() {
        let t0 = Instant::now();
        let mut w = world(t0);
        assert_eq!(
            code(call(&mut w, t0, "Action=DeleteReplicationGroup")),
            "InvalidAction"
        );
        assert_eq!(
            code(call(&mut w, t0, "Version=2015-02-02")),
            "MissingAction"
        );
        assert_eq!(
            code(call(
                &mut w,
                t0,
                "Action=DescribeReplicationGroups&Version=2010-01-01"
            )),
            "InvalidParameterValue"
        );
        assert_eq!(
            code(call(
                &mut w,
                t0,
                "Action=CreateSnapshot&ReplicationGroupId=prod-jobs"
            )),
            "MissingParameter"
        );
        assert_eq!(
            code(call(
                &mut w,
                t0,
                "Action=ModifyReplicationGroup&CacheNodeType=cache.r6g.xlarge"
            )),
            "MissingParameter"
        );
        assert_eq!(
            code(call(&mut w, t0, "Action=ListAllowedNodeTypeModifications")),
            "MissingParameter"
        );
        let outcomes: Vec<&str> = w.calls().iter().map(|c| c.outcome.as_str()).collect();
        assert!(outcomes.iter().all(|o| *o != "ok"));
    }

    #[test]
    fn describe_snapshots_filters_by_group_and_cluster() {
        let t0 = Instant::now();
        let mut w = world(t0);
        call(
            &mut w,
            t0,
            "Action=CreateSnapshot&ReplicationGroupId=prod-jobs&SnapshotName=a",
        )
        .unwrap();
        call(
            &mut w,
            t0,
            "Action=CreateSnapshot&ReplicationGroupId=sharded&SnapshotName=b",
        )
        .unwrap();
        let count = |body: String| body.matches("<Snapshot>").count();
        assert_eq!(
            count(call(&mut w, t0, "Action=DescribeSnapshots").unwrap()),
            2
        );
        assert_eq!(
            count(
                call(
                    &mut w,
                    t0,
                    "Action=DescribeSnapshots&ReplicationGroupId=sharded"
                )
                .unwrap()
            ),
            1
        );
        assert_eq!(
            count(
                call(
                    &mut w,
                    t0,
                    "Action=DescribeSnapshots&CacheClusterId=prod-jobs-001"
                )
                .unwrap()
            ),
            1
        );
        assert_eq!(
            count(
                call(
                    &mut w,
                    t0,
                    "Action=DescribeSnapshots&ReplicationGroupId=other"
                )
                .unwrap()
            ),
            0
        );
        // `user` lists the manual ones (all of them here), `system` the automatic ones (none).
        let by_source = |w: &mut World, source: &str| {
            call(
                w,
                t0,
                &format!(
                    "Action=DescribeSnapshots&ReplicationGroupId=prod-jobs&SnapshotSource={source}"
                ),
            )
        };
        assert!(count(by_source(&mut w, "user").unwrap()) > 0);
        assert_eq!(count(by_source(&mut w, "system").unwrap()), 0);
        assert_eq!(code(by_source(&mut w, "manual")), "InvalidParameterValue");
    }

    #[test]
    fn action_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.name()), Some(a));
        }
        assert_eq!(Action::parse("describereplicationgroups"), None);
    }

    #[test]
    fn wall_clock_times_follow_the_instants() {
        let t0 = Instant::now();
        let w = world(t0);
        assert_eq!(w.wall(t0 + 1500 * MS).as_millis(), 1_700_000_001_500);
    }
}
