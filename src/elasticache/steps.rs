//! The workflow's AWS effects over the [`ElastiCache`] verbs: each looks before it acts, so a
//! retry or a restart never does the work twice, and writes the calls it made to the audit
//! trail.
//!
//! - A snapshot that already exists is the run's own: its name is derived from the run id.
//!   One not made yet is taken from the node the policy's `snapshot_source` names (by default
//!   a replica, so the fork doesn't land on the full primary), or from the group.
//! - A group already on the target is not asked again; one already `modifying` is the bot's own
//!   only if an earlier try may have asked for it and its nodes are moving to the bot's target
//!   (else it is busy with someone else's change).
//! - Whatever the run believes, the bot never asks for a type that is not a step up in the
//!   group's family from the type it is on right now.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::domain::{CacheClusterId, NodeType, SnapshotName};
use crate::workflow::forecast::{self, Forecast};
use crate::workflow::policy::SnapshotSource;
use futures_util::future::join_all;

use crate::workflow::cost::{NodePrice, PriceSheet};
use crate::workflow::policy::choices_within_cap;
use crate::workflow::ports::elasticache::{AwsEvent, GroupNodes, NodeRole, SnapshotFrom};
use crate::workflow::ports::memory::recent;
use crate::workflow::ports::{
    Attempt, Aws, AwsError, BoxFuture, ClusterMode, ElastiCache, GroupInfo, GroupStatus, LookAgain,
    MemorySeries, PlanFacts, PriceError, Prices, SnapshotStatus,
};
use crate::workflow::preflight::{self, CallLine, Check};
use crate::workflow::run::State;
use crate::workflow::run::{Direction, Trigger};

use crate::workflow::ports::fleet::Fleet;

/// [`Aws`] over any [`ElastiCache`]: each run's calls in its group's account and region.
pub struct ElastiCacheSteps {
    fleet: Arc<Fleet>,
    /// CloudWatch's memory readings, to take a snapshot from the replica with the most free
    /// memory (without it: the first replica by node id).
    memory: Option<Arc<dyn MemorySeries>>,
    /// On-demand prices for the plan card (without it: no prices are read or shown).
    prices: Option<Arc<dyn Prices>>,
}

/// How long the plan waits for its prices before it goes on with them unknown: for any
/// [`Prices`]. A second longer than the cache's own bound on each read (5 s, see
/// `crate::pricing`), so that a hanging Price List times out there first and is remembered
/// as a failure for a few minutes, instead of holding up every plan.
const PRICES_WITHIN: std::time::Duration = std::time::Duration::from_secs(6);

/// How long a CloudWatch read on the way to acting (the snapshot's replica, the plan's trend)
/// may take before the bot goes on without it.
const CLOUDWATCH_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How far back a replica's memory reading is looked for when picking the snapshot's node.
const RECENT_MEMORY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl ElastiCacheSteps {
    /// Every group in one place, by its own id.
    pub fn new(api: Arc<dyn ElastiCache>) -> ElastiCacheSteps {
        ElastiCacheSteps::for_fleet(Arc::new(Fleet::single(api, None)))
    }

    /// Each group in its own place ([`Fleet`]).
    pub fn for_fleet(fleet: Arc<Fleet>) -> ElastiCacheSteps {
        ElastiCacheSteps {
            fleet,
            memory: None,
            prices: None,
        }
    }

    /// The run's group's ElastiCache verbs, in its account and region.
    fn api(&self, at: &Attempt) -> Arc<dyn ElastiCache> {
        self.fleet.aws(&at.run.group)
    }

    /// Pick the snapshot's replica by its memory in CloudWatch.
    pub fn with_memory(mut self, memory: Arc<dyn MemorySeries>) -> ElastiCacheSteps {
        self.memory = Some(memory);
        self
    }

    /// Show the on-demand prices of the plan's node types on its card.
    pub fn with_prices(mut self, prices: Arc<dyn Prices>) -> ElastiCacheSteps {
        self.prices = Some(prices);
        self
    }

    /// Each replica's latest memory reading (percent), for the ones CloudWatch has one for.
    /// A failed read is logged and means "don't know": the pick falls back to node id.
    async fn replica_memory(
        &self,
        at: &mut Attempt,
        nodes: &GroupNodes,
    ) -> BTreeMap<CacheClusterId, f64> {
        let replicas: Vec<CacheClusterId> = nodes
            .roles
            .iter()
            .filter(|(id, r)| *r == NodeRole::Replica && nodes.group.members.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        let Some(memory) = self.memory.as_ref().filter(|_| replicas.len() > 1) else {
            return BTreeMap::new();
        };
        // The workers may be paused while this is read: a slow CloudWatch is "don't know".
        let id = &nodes.group.id;
        let read = recent(
            memory.as_ref(),
            id,
            replicas,
            RECENT_MEMORY,
            at.now,
            CLOUDWATCH_WITHIN,
        );
        match read.await {
            Ok(series) => {
                let latest: BTreeMap<CacheClusterId, f64> = series
                    .into_iter()
                    .filter_map(|s| Some((s.node, s.points.last()?.1)))
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                let said = latest
                    .iter()
                    .map(|(n, v)| format!("{n} {v:.1} %"))
                    .collect::<Vec<_>>();
                let said = if said.is_empty() {
                    "no recent readings".to_string()
                } else {
                    said.join(", ")
                };
                at.log("aws", "GetMetricData", format!("replicas' memory: {said}"));
                latest
            }
            Err(e) => {
                at.log(
                    "aws",
                    "GetMetricData",
                    format!("replicas' memory unknown ({e}); picking by node id"),
                );
                BTreeMap::new()
            }
        }
    }
}

impl ElastiCacheSteps {
    /// The group's memory trend over the policy's `forecast_window` (see
    /// [`forecast`](crate::workflow::forecast)): one GetMetricData for its members, never
    /// retried, never an error. A read that fails or has no data is the trend unknown, and why.
    /// `None`: not asked for (`forecast_window = "0s"`) or no memory series to read.
    async fn forecast(&self, at: &mut Attempt, group: &GroupInfo) -> Option<Check<Forecast>> {
        let window = at.run.policy.forecast_window;
        let memory = self.memory.as_ref().filter(|_| !window.is_zero())?;
        let over = crate::domain::format_duration(window);
        if group.members.is_empty() {
            let why = "AWS listed no member nodes to read".to_string();
            at.log(
                "aws",
                "GetMetricData",
                format!("memory trend unknown: {why}"),
            );
            return Some(Check::Unknown(why));
        }
        let members = group.members.clone();
        let read = recent(
            memory.as_ref(),
            &group.id,
            members,
            window,
            at.now,
            CLOUDWATCH_WITHIN,
        );
        let found = match read.await {
            Ok(series) => forecast::forecast(&series, window),
            Err(e) => Err(e.to_string()),
        };
        let said = match &found {
            Ok(f) => format!(
                "memory trend over the last {over} for {} node(s): {} {:+.2} %/min from {} \
                 reading(s), latest {:.1} %{}",
                group.members.len(),
                f.node,
                f.slope_per_min,
                f.points_used,
                f.latest,
                f.full_in
                    .map(|d| format!(", full in ~{}", crate::domain::format_duration(d)))
                    .unwrap_or_default()
            ),
            Err(why) => format!("memory trend unknown: {why}"),
        };
        at.log("aws", "GetMetricData", said);
        Some(match found {
            Ok(f) => Check::Known(f),
            Err(why) => Check::Unknown(why),
        })
    }
}

impl ElastiCacheSteps {
    /// The on-demand prices of `types` in the run's group's region: every read at once,
    /// together bounded by [`PRICES_WITHIN`], written to the audit as one `GetProducts` line.
    /// Never an error: a price that can't be read is unknown, and why. `None`: no prices are
    /// read (no [`Prices`] given). Direction-agnostic: a plan up or down lists its current
    /// type and every type it may move to.
    pub async fn price_sheet(&self, at: &mut Attempt, types: Vec<NodeType>) -> Option<PriceSheet> {
        let prices = self.prices.as_ref()?;
        let mut types = types;
        let mut seen = Vec::new();
        types.retain(|t| {
            let new = !seen.contains(t);
            seen.push(t.clone());
            new
        });
        let region = self.fleet.place_of(&at.run.group).region.clone();
        let Some(region) = region else {
            let why = "the group's region is not known".to_string();
            at.log("aws", "GetProducts", format!("prices not read: {why}"));
            let prices = types
                .into_iter()
                .map(|node_type| NodePrice {
                    node_type,
                    hourly: Check::Unknown(why.clone()),
                })
                .collect();
            return Some(PriceSheet {
                region: "?".into(),
                prices,
            });
        };
        let reads = types.iter().map(|t| prices.on_demand_hourly(&region, t));
        let found = match tokio::time::timeout(PRICES_WITHIN, join_all(reads)).await {
            Ok(found) => found,
            Err(_) => {
                let late = format!("no answer within {PRICES_WITHIN:?}");
                vec![
                    Err(PriceError::Unavailable {
                        code: "Timeout".into(),
                        message: late,
                    });
                    types.len()
                ]
            }
        };
        let mut said = Vec::new();
        let mut sheet = PriceSheet {
            region: region.clone(),
            prices: Vec::new(),
        };
        for (node_type, found) in types.into_iter().zip(found) {
            let hourly = match found {
                Ok(Some(h)) => Check::Known(h),
                Ok(None) => Check::Unknown(format!("AWS lists no on-demand price in {region}")),
                Err(e) => Check::Unknown(e.to_string()),
            };
            said.push(match &hourly {
                Check::Known(h) => format!("{node_type} ${h}/h"),
                Check::Unknown(why) => format!("{node_type} unknown ({why})"),
            });
            sheet.prices.push(NodePrice { node_type, hourly });
        }
        let detail = format!(
            "on-demand prices per node-hour ({} in {region}): {}",
            crate::workflow::ports::prices::ENGINE,
            said.join(", ")
        );
        at.log("aws", "GetProducts", detail);
        Some(sheet)
    }

    /// The plan's prices: the group's type and the scale-ups a plan may choose from (within
    /// the cap), plus the one asked for; for a scale-down suggestion, the one step down it
    /// suggests. None read when there is nothing to choose.
    async fn plan_prices(
        &self,
        at: &mut Attempt,
        group: &GroupInfo,
        allowed: &[NodeType],
    ) -> Option<PriceSheet> {
        let current = group.node_type.as_ref()?;
        let cap = at.run.policy.max_node_type.clone();
        let mut types = match &at.run.trigger {
            Trigger::ScaleDown { evidence, .. } => allowed
                .iter()
                .filter(|t| **t == evidence.to)
                .cloned()
                .collect(),
            _ => choices_within_cap(current, allowed, cap.as_ref()),
        };
        if types.is_empty() {
            return None;
        }
        types.insert(0, current.clone());
        if let Some(asked) = &at.run.requested_type {
            types.push(asked.clone());
        }
        self.price_sheet(at, types).await
    }
}

fn on(g: &GroupInfo) -> String {
    g.node_type
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_else(|| "?".into())
}

/// Write a preflight reader's calls to the audit trail.
fn log_lines(at: &mut Attempt, lines: Vec<CallLine>) {
    for (call, detail) in lines {
        at.log("aws", call, detail);
    }
}

/// Log an AWS call's error and hand it on.
fn logged<T>(at: &mut Attempt, call: &str, r: Result<T, AwsError>) -> Result<T, AwsError> {
    if let Err(e) = &r {
        at.log("aws", call, format!("error: {e}"));
    }
    r
}

impl ElastiCacheSteps {
    /// DescribeReplicationGroups and ListAllowedNodeTypeModifications for the run's group: the
    /// scale-ups, or for a scale-down suggestion's run the scale-downs.
    async fn group_and_scale_ups(
        &self,
        at: &mut Attempt,
    ) -> Result<(GroupInfo, Vec<NodeType>), AwsError> {
        let api = self.api(at);
        let id = at.run.group.clone();
        let call = "DescribeReplicationGroups";
        let g = logged(at, call, api.describe_group(&id).await)?;
        let detail = format!("{}: {} on {}", g.id, g.status, on(&g));
        at.log("aws", call, detail);
        let call = "ListAllowedNodeTypeModifications";
        let (allowed, what) = match at.run.trigger.direction() {
            Direction::Up => (api.allowed_scale_ups(&id).await, "scale-up(s)"),
            Direction::Down => (api.allowed_scale_downs(&id).await, "scale-down(s)"),
        };
        let allowed = logged(at, call, allowed)?;
        at.log("aws", call, format!("{} {what}", allowed.len()));
        Ok((g, allowed))
    }

    /// The node type a modifying group's nodes are moving to (a member's pending
    /// `CacheNodeType`, as AWS spells it), when AWS says. A failed look is logged and counts as
    /// not saying: the caller then decides as it did before it could tell.
    async fn moving_to(&self, at: &mut Attempt, g: &GroupInfo) -> Option<String> {
        let api = self.api(at);
        let member = g.members.first()?;
        let call = "DescribeCacheClusters";
        let c = match api.describe_cache_cluster(member).await {
            Ok(c) => c,
            Err(e) => {
                at.log(
                    "aws",
                    call,
                    format!("{member}: error: {e}; can't tell where it is going"),
                );
                return None;
            }
        };
        let to = c
            .pending
            .iter()
            .find(|p| p.field == "CacheNodeType")
            .map(|p| p.value.trim().to_string());
        let said = to.as_ref().map_or("no pending node type".into(), |t| {
            format!("{member}: moving to {t}")
        });
        at.log("aws", call, said);
        to
    }
}

impl ElastiCacheSteps {
    /// What the run's snapshot is taken from, as its policy says, and why (for the audit line).
    /// A node is looked up fresh (a failover may have swapped the roles since the plan); only
    /// `snapshot_source = "group"` needs no look.
    async fn snapshot_source(&self, at: &mut Attempt) -> Result<(SnapshotFrom, String), AwsError> {
        let api = self.api(at);
        let id = at.run.group.clone();
        let source = at.run.policy.snapshot_source;
        if source == SnapshotSource::Group {
            let why = "snapshot of the group (snapshot_source = \"group\")".to_string();
            return Ok((SnapshotFrom::Group(id), why));
        }
        let call = "DescribeReplicationGroups";
        let nodes = logged(at, call, api.describe_group_nodes(&id).await)?;
        let roles = nodes
            .roles
            .iter()
            .map(|(n, r)| format!("{n} {}", role_name(*r)))
            .collect::<Vec<_>>();
        let said = if roles.is_empty() {
            "no node roles".to_string()
        } else {
            roles.join(", ")
        };
        let detail = format!("{id}: cluster mode {}; {said}", nodes.group.cluster_mode);
        at.log("aws", call, detail);
        let memory = if source == SnapshotSource::Replica
            && nodes.group.cluster_mode == ClusterMode::Disabled
        {
            self.replica_memory(at, &nodes).await
        } else {
            BTreeMap::new()
        };
        Ok(snapshot_from(source, &nodes, &memory))
    }
}

fn role_name(r: NodeRole) -> &'static str {
    match r {
        NodeRole::Primary => "primary",
        NodeRole::Replica => "replica",
    }
}

/// Where a snapshot of `nodes` is taken from under `source`, and why. A replica is the one
/// with the lowest recent memory reading in `memory` (the most room for the fork's
/// copy-on-write pages); without readings, or between equals, the first by node id. Only asked
/// when no snapshot of the run's name exists yet, so a retry never takes a second one.
fn snapshot_from(
    source: SnapshotSource,
    nodes: &GroupNodes,
    memory: &BTreeMap<CacheClusterId, f64>,
) -> (SnapshotFrom, String) {
    let g = &nodes.group;
    let whole = || SnapshotFrom::Group(g.id.clone());
    let wanted = match source {
        SnapshotSource::Group => return (whole(), "snapshot of the group".into()),
        SnapshotSource::Replica => "replica",
        SnapshotSource::Primary => "primary",
    };
    if g.cluster_mode != ClusterMode::Disabled {
        let why = format!(
            "snapshot of the group: with cluster mode {} AWS takes a node of each shard \
             (snapshot_source = \"{wanted}\" applies with cluster mode disabled only)",
            g.cluster_mode
        );
        return (whole(), why);
    }
    let with_role = |role: NodeRole| {
        let mut ids: Vec<&CacheClusterId> = nodes
            .roles
            .iter()
            .filter(|(id, r)| *r == role && g.members.contains(id))
            .map(|(id, _)| id)
            .collect();
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.into_iter().next().cloned()
    };
    let primary = with_role(NodeRole::Primary);
    match (source, primary) {
        (_, None) => {
            let why = format!(
                "snapshot of the group: AWS did not say which node is the primary \
                 (snapshot_source = \"{wanted}\")"
            );
            (whole(), why)
        }
        (SnapshotSource::Primary, Some(p)) => {
            let why = format!("snapshot from the primary {p} (snapshot_source = \"primary\")");
            (SnapshotFrom::Node(p), why)
        }
        (_, Some(p)) => match with_role(NodeRole::Replica) {
            Some(first) if !memory.is_empty() => {
                // Read replicas only; ties go to the first by node id (BTreeMap order).
                let (r, pct) = memory
                    .iter()
                    .filter(|(id, _)| {
                        *id != &p
                            && g.members.contains(id)
                            && nodes.roles.contains(&((*id).clone(), NodeRole::Replica))
                    })
                    .fold(None::<(&CacheClusterId, f64)>, |best, (id, v)| match best {
                        Some((_, b)) if b <= *v => best,
                        _ => Some((id, *v)),
                    })
                    .map(|(id, v)| (id.clone(), v))
                    .unwrap_or((first, f64::NAN));
                let why = if pct.is_nan() {
                    format!(
                        "snapshot from replica {r}, the first by node id (keeps the load off the primary {p})"
                    )
                } else {
                    format!(
                        "snapshot from replica {r}, the one with the most free memory ({pct:.1} % used \
                         of {} replica(s) read; keeps the load off the primary {p})",
                        memory.len()
                    )
                };
                (SnapshotFrom::Node(r), why)
            }
            Some(r) => {
                let why = format!(
                    "snapshot from replica {r}, the first by node id (keeps the load off the \
                     primary {p})"
                );
                (SnapshotFrom::Node(r), why)
            }
            None => {
                let why = format!(
                    "snapshot of the group: it has no replica, only the primary {p} \
                     (snapshot_source = \"replica\")"
                );
                (whole(), why)
            }
        },
    }
}

impl Aws for ElastiCacheSteps {
    fn fetch_plan<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<PlanFacts, AwsError>> {
        Box::pin(async move {
            let api = self.api(at);
            let (group, allowed) = self.group_and_scale_ups(at).await?;
            let mut lines = Vec::new();
            // Throttled reads of the pending changes are tried again while the step's deadline
            // allows another try; the last try shows them as unknown instead.
            let retry = at.another_try_follows;
            let found = preflight::read(api.as_ref(), &group, at.now, &mut lines, retry).await;
            log_lines(at, lines);
            let preflight = found?;
            // Only once the plan can be made: a try that is tried again reads it again.
            let forecast = self.forecast(at, &group).await;
            let prices = self.plan_prices(at, &group, &allowed).await;
            Ok(PlanFacts {
                preflight,
                group,
                allowed,
                forecast,
                prices,
            })
        })
    }

    fn look_again<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<LookAgain, AwsError>> {
        Box::pin(async move {
            let api = self.api(at);
            let (group, allowed) = self.group_and_scale_ups(at).await?;
            let mut lines = Vec::new();
            let read = preflight::read_pending(api.as_ref(), &group, &mut lines).await;
            log_lines(at, lines);
            let pending = match read {
                Ok(pending) => pending,
                // Worth another try; the runner schedules it.
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => Check::Unknown(e.to_string()),
            };
            Ok(LookAgain {
                group,
                allowed,
                pending,
            })
        })
    }

    fn create_snapshot<'a>(
        &'a self,
        at: &'a mut Attempt,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<SnapshotStatus, AwsError>> {
        Box::pin(async move {
            let api = self.api(at);
            let found = logged(at, "DescribeSnapshots", api.describe_snapshot(name).await)?;
            if let Some(s) = found {
                let detail = format!("{name} already exists: {}", s.status);
                at.log("aws", "DescribeSnapshots", detail);
                return Ok(s.status);
            }
            at.log(
                "aws",
                "DescribeSnapshots",
                format!("{name} does not exist yet"),
            );
            let (from, why) = self.snapshot_source(at).await?;
            match api.create_snapshot(&from, name).await {
                Ok(s) => {
                    let detail = format!("{name} {from}: {}; {why}", s.status);
                    at.log("aws", "CreateSnapshot", detail);
                    Ok(s.status)
                }
                Err(AwsError::SnapshotAlreadyExists { message }) => {
                    let detail = format!("{name} already exists ({message}); it is ours");
                    at.log("aws", "CreateSnapshot", detail);
                    Ok(SnapshotStatus::Creating)
                }
                Err(e) => logged(at, "CreateSnapshot", Err(e)),
            }
        })
    }

    fn poll_snapshot<'a>(
        &'a self,
        at: &'a mut Attempt,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<Option<SnapshotStatus>, AwsError>> {
        Box::pin(async move {
            let api = self.api(at);
            let found = logged(at, "DescribeSnapshots", api.describe_snapshot(name).await)?;
            let status = found.map(|s| s.status);
            let said = status
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "missing".into());
            at.log("aws", "DescribeSnapshots", format!("{name}: {said}"));
            Ok(status)
        })
    }

    fn modify_node_type<'a>(
        &'a self,
        at: &'a mut Attempt,
        target: &'a NodeType,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        Box::pin(async move {
            let api = self.api(at);
            let id = at.run.group.clone();
            let g = logged(
                at,
                "DescribeReplicationGroups",
                api.describe_group(&id).await,
            )?;
            if g.node_type.as_ref() == Some(target) && g.is_available() {
                let detail = format!("already on {target}; no modification needed");
                at.log("aws", "DescribeReplicationGroups", detail);
                return Ok(g);
            }
            if g.status == GroupStatus::Modifying {
                let moving_to = if at.maybe_done_before {
                    self.moving_to(at, &g).await
                } else {
                    None
                };
                let ours = |t: &String| t.eq_ignore_ascii_case(&target.to_string());
                if at.maybe_done_before && moving_to.as_ref().is_none_or(ours) {
                    // An earlier try may have asked, and the nodes go where it asked (or AWS
                    // doesn't say): the modification is the bot's own.
                    let detail = "already modifying, as an earlier try asked; not asking again";
                    at.log("aws", "DescribeReplicationGroups", detail);
                    return Ok(g);
                }
                let message = match moving_to {
                    Some(t) => format!(
                        "the group is already modifying, to {t}: not the bot's request for {target}"
                    ),
                    None => "the group is already modifying, and the bot did not ask for it".into(),
                };
                at.log("aws", "DescribeReplicationGroups", message.clone());
                return Err(AwsError::InvalidState {
                    code: "InvalidReplicationGroupState".into(),
                    message,
                });
            }
            // A run moves one way only: its trigger says which (an upsize never shrinks a
            // group, a scale-down never grows one).
            let direction = at.run.trigger.direction();
            let refuse = match &g.node_type {
                Some(current) if !direction.allows(current, target) => Some(format!(
                    "{} is on {current}: {target} is not a {} {} size, so the bot won't ask for it",
                    g.id,
                    match direction {
                        Direction::Up => "larger",
                        Direction::Down => "smaller",
                    },
                    current.family()
                )),
                Some(_) => None,
                None => Some(format!(
                    "AWS did not say what {} runs on, so the bot won't ask for {target}",
                    g.id
                )),
            };
            if let Some(message) = refuse {
                at.log("aws", "DescribeReplicationGroups", message.clone());
                return Err(AwsError::Other {
                    code: match direction {
                        Direction::Up => "NotAScaleUp",
                        Direction::Down => "NotAScaleDown",
                    }
                    .into(),
                    message,
                });
            }
            let detail = format!("{} on {}", g.status, on(&g));
            at.log("aws", "DescribeReplicationGroups", detail);
            let call = "ModifyReplicationGroup";
            let g = logged(at, call, api.modify_node_type(&id, target).await)?;
            let detail = format!(
                "CacheNodeType={target} ApplyImmediately=true → {}",
                g.status
            );
            at.log("aws", call, detail);
            Ok(g)
        })
    }

    fn why_not_upsized<'a>(
        &'a self,
        at: &'a mut Attempt,
        polled: &'a GroupInfo,
    ) -> BoxFuture<'a, Vec<AwsEvent>> {
        Box::pin(async move {
            let api = self.api(at);
            let State::Modifying { started, .. } = &at.run.state else {
                return Vec::new();
            };
            // From the upsize's start: earlier events (the snapshot's) are not its reason.
            let since = *started;
            let call = "DescribeEvents";
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(10), api.events_since(since))
                    .await
                    .unwrap_or_else(|_| {
                        Err(AwsError::Transient {
                            code: "Timeout".into(),
                            message: "DescribeEvents did not answer within 10s".into(),
                        })
                    });
            match read {
                Ok(all) => {
                    // The group's own events, and its member nodes' — by exact id: another
                    // group may be called `prod-jobs-eu`, its nodes `prod-jobs-eu-001`.
                    let ours: Vec<AwsEvent> = all
                        .into_iter()
                        .filter(|e| {
                            e.source == polled.id.as_str()
                                || polled.members.iter().any(|m| m.as_str() == e.source)
                        })
                        .collect();
                    let said = if ours.is_empty() {
                        "no event for the group or its nodes since the upsize began".to_string()
                    } else {
                        ours.iter()
                            .map(|e| format!("{}: {}", e.source, e.message))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    };
                    at.log("aws", call, said);
                    ours
                }
                Err(e) => {
                    at.log(
                        "aws",
                        call,
                        format!("error: {e}; AWS's reason is not known"),
                    );
                    Vec::new()
                }
            }
        })
    }

    fn poll_group<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        Box::pin(async move {
            let api = self.api(at);
            let id = at.run.group.clone();
            let g = logged(
                at,
                "DescribeReplicationGroups",
                api.describe_group(&id).await,
            )?;
            let detail = format!("{} on {}", g.status, on(&g));
            at.log("aws", "DescribeReplicationGroups", detail);
            Ok(g)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChannelId, ReplicationGroupId, RunId, Timestamp};
    use crate::elasticache::sdk::{SdkElastiCache, config_for_endpoint};
    use crate::elasticache::sim::{self, SimConfig, SimGroup, SimHandle};
    use crate::workflow::policy::Policy;
    use crate::workflow::ports::ManualClock;
    use crate::workflow::run::{Run, Trigger};

    fn nt(s: &str) -> NodeType {
        NodeType::parse(s).unwrap()
    }

    fn group() -> ReplicationGroupId {
        ReplicationGroupId::parse("prod-jobs").unwrap()
    }

    async fn steps() -> (SimHandle, ElastiCacheSteps, Arc<dyn ElastiCache>) {
        steps_with([SimGroup::new(group(), nt("cache.r6g.large"))]).await
    }

    async fn steps_with(
        groups: impl IntoIterator<Item = SimGroup>,
    ) -> (SimHandle, ElastiCacheSteps, Arc<dyn ElastiCache>) {
        let sim = sim::spawn(SimConfig {
            modify_duration: std::time::Duration::from_secs(60),
            ..SimConfig::with_groups(groups)
        })
        .await
        .unwrap();
        let api: Arc<dyn ElastiCache> =
            Arc::new(SdkElastiCache::new(&config_for_endpoint(&sim.endpoint())));
        (sim, ElastiCacheSteps::new(api.clone()), api)
    }

    fn attempt(maybe_done_before: bool) -> Attempt {
        attempt_number(2, maybe_done_before)
    }

    fn attempt_number(number: u32, maybe_done_before: bool) -> Attempt {
        attempt_for(group(), Policy::default(), number, maybe_done_before)
    }

    fn attempt_for(
        group: ReplicationGroupId,
        policy: Policy,
        number: u32,
        maybe_done_before: bool,
    ) -> Attempt {
        let run = Run::new(
            RunId::parse("r-abcdefgh").unwrap(),
            group,
            ChannelId::parse("C0123ABCD").unwrap(),
            Trigger::Command {
                user: crate::domain::SlackUserId::parse("U0ONCALL1").unwrap(),
                response_url: None,
            },
            None,
            policy,
            Timestamp::from_millis(0),
        );
        let clock = Arc::new(ManualClock::at(Timestamp::from_millis(0)));
        Attempt::new(run, 1, number, maybe_done_before, clock)
    }

    /// Prices that never come.
    struct Hanging;

    impl Prices for Hanging {
        fn on_demand_hourly<'a>(
            &'a self,
            _: &'a str,
            _: &'a NodeType,
        ) -> BoxFuture<'a, Result<Option<f64>, PriceError>> {
            Box::pin(std::future::pending())
        }
    }

    /// `cache.r6g.large` at $0.206, nothing else listed, in any region.
    struct OneListed;

    impl Prices for OneListed {
        fn on_demand_hourly<'a>(
            &'a self,
            _: &'a str,
            t: &'a NodeType,
        ) -> BoxFuture<'a, Result<Option<f64>, PriceError>> {
            let found = (t == &nt("cache.r6g.large")).then_some(0.206);
            Box::pin(async move { Ok(found) })
        }
    }

    /// Steps whose group is in `region` (nothing is asked of ElastiCache).
    fn priced_steps(region: Option<&str>, prices: Arc<dyn Prices>) -> ElastiCacheSteps {
        let api: Arc<dyn ElastiCache> = Arc::new(SdkElastiCache::new(&config_for_endpoint(
            "http://127.0.0.1:9",
        )));
        let place = crate::workflow::ports::fleet::Place {
            account: None,
            region: region.map(str::to_string),
        };
        let clients = crate::workflow::ports::fleet::Clients {
            aws: api,
            memory: None,
        };
        ElastiCacheSteps::for_fleet(Arc::new(Fleet::new(place, clients))).with_prices(prices)
    }

    #[tokio::test(start_paused = true)]
    async fn prices_that_do_not_come_in_time_are_unknown_and_the_plan_goes_on() {
        let steps = priced_steps(Some("eu-west-1"), Arc::new(Hanging));
        let mut at = attempt(false);
        let started = tokio::time::Instant::now();
        let types = vec![
            nt("cache.r6g.large"),
            nt("cache.r6g.xlarge"),
            nt("cache.r6g.large"),
        ];
        let sheet = steps.price_sheet(&mut at, types).await.unwrap();
        assert_eq!(started.elapsed(), PRICES_WITHIN);
        assert_eq!(sheet.region, "eu-west-1");
        assert_eq!(sheet.prices.len(), 2, "each type once: {sheet:?}");
        for p in &sheet.prices {
            let Check::Unknown(why) = &p.hourly else {
                panic!("{p:?}")
            };
            assert!(why.contains("no answer within 6s"), "{why}");
        }
        let audit = at.take_audit();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].kind, "GetProducts");
    }

    #[tokio::test]
    async fn a_price_aws_does_not_list_is_unknown_and_so_is_every_price_without_a_region() {
        let listed = priced_steps(Some("eu-west-1"), Arc::new(OneListed));
        let mut at = attempt(false);
        let types = vec![nt("cache.r6g.large"), nt("cache.r6gd.xlarge")];
        let sheet = listed.price_sheet(&mut at, types.clone()).await.unwrap();
        assert_eq!(sheet.hourly(&nt("cache.r6g.large")), Ok(0.206));
        assert_eq!(
            sheet.hourly(&nt("cache.r6gd.xlarge")),
            Err("AWS lists no on-demand price in eu-west-1")
        );
        let line = &at.take_audit()[0].detail;
        assert_eq!(
            line,
            "on-demand prices per node-hour (Redis in eu-west-1): cache.r6g.large $0.206/h, \
             cache.r6gd.xlarge unknown (AWS lists no on-demand price in eu-west-1)"
        );
        let nowhere = priced_steps(None, Arc::new(OneListed));
        let sheet = nowhere.price_sheet(&mut at, types).await.unwrap();
        assert_eq!(
            sheet.hourly(&nt("cache.r6g.large")),
            Err("the group's region is not known")
        );
        // Without a price list nothing is read and no prices are shown.
        let (sim, plain, _) = steps().await;
        assert_eq!(
            plain
                .price_sheet(&mut at, vec![nt("cache.r6g.large")])
                .await,
            None
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_modification_someone_else_started_is_never_taken_for_the_bots() {
        let (sim, steps, _) = steps().await;
        sim.start_modification_elsewhere(&group(), nt("cache.r6g.4xlarge"));
        let target = nt("cache.r6g.xlarge");
        // Even when an earlier try may have asked: the nodes are going elsewhere.
        for maybe in [false, true] {
            let err = steps
                .modify_node_type(&mut attempt(maybe), &target)
                .await
                .unwrap_err();
            assert!(matches!(err, AwsError::InvalidState { .. }), "{err}");
        }
        let err = steps
            .modify_node_type(&mut attempt(true), &target)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("to cache.r6g.4xlarge"), "{err}");
        assert_eq!(sim.attempts("ModifyReplicationGroup"), 0);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn the_bots_own_modification_is_recognised_by_its_target_and_not_asked_twice() {
        let (sim, steps, _) = steps().await;
        let target = nt("cache.r6g.xlarge");
        steps
            .modify_node_type(&mut attempt(false), &target)
            .await
            .unwrap();
        let mut again = attempt(true);
        let g = steps.modify_node_type(&mut again, &target).await.unwrap();
        assert_eq!(g.status, GroupStatus::Modifying);
        assert_eq!(sim.count("ModifyReplicationGroup"), 1, "asked once");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_type_that_is_not_a_step_up_from_the_current_one_is_never_asked_for() {
        let (sim, steps, _) = steps().await;
        sim.change_node_type_elsewhere(&group(), nt("cache.r6g.2xlarge"));
        for target in [
            "cache.r6g.xlarge",
            "cache.r6gd.4xlarge",
            "cache.m6g.4xlarge",
        ] {
            let err = steps
                .modify_node_type(&mut attempt(false), &nt(target))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, AwsError::Other { code, .. } if code == "NotAScaleUp"),
                "{err}"
            );
        }
        assert_eq!(sim.attempts("ModifyReplicationGroup"), 0);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn throttled_pending_reads_are_tried_again_while_tries_remain_then_shown_unknown() {
        let (sim, steps, _) = steps().await;
        for action in [
            "DescribeCacheClusters",
            "DescribeSnapshots",
            "DescribeScalableTargets",
        ] {
            sim.throttle_action(action);
        }
        let early = steps.fetch_plan(&mut attempt_number(1, false)).await;
        assert!(
            early.as_ref().is_err_and(AwsError::is_retryable),
            "{early:?}"
        );
        let mut at = attempt_number(9, true);
        at.another_try_follows = false;
        let p = steps.fetch_plan(&mut at).await.unwrap().preflight;
        assert!(
            matches!(&p.pending, Check::Unknown(why) if why.contains("Throttling")),
            "{:?}",
            p.pending
        );
        assert!(p.needs_acknowledgement(), "unknown is never fine");
        assert!(matches!(p.autoscaling, Check::Unknown(_)));
        assert!(matches!(p.manual_snapshots_24h, Check::Unknown(_)));
        // The parameter group was not named by any member, so that is unknown too.
        assert!(matches!(p.reserved_memory, Check::Unknown(_)));
        // Every call it made is in the audit trail.
        let audit = at.take_audit();
        assert!(
            audit.iter().any(|a| a.kind == "DescribeCacheClusters"),
            "{audit:?}"
        );
        // A look just before acting retries the throttled read rather than guessing.
        let mut at = attempt_number(9, true);
        at.another_try_follows = false;
        let again = steps.look_again(&mut at).await;
        assert!(
            again.as_ref().is_err_and(AwsError::is_retryable),
            "{again:?}"
        );
        sim.shutdown().await;
    }

    fn from_source(source: SnapshotSource) -> Policy {
        Policy {
            snapshot_source: source,
            ..Policy::default()
        }
    }

    fn cid(s: &str) -> CacheClusterId {
        CacheClusterId::parse(s).unwrap()
    }

    /// The run's snapshot name, and the CreateSnapshot call the simulator saw for it.
    async fn snapshot_once(
        sim: &SimHandle,
        steps: &ElastiCacheSteps,
        at: &mut Attempt,
    ) -> (SnapshotName, crate::elasticache::sim::SimCall) {
        let name = SnapshotName::for_run(&at.run.id);
        let status = steps.create_snapshot(at, &name).await.unwrap();
        assert_eq!(status, SnapshotStatus::Creating);
        let create = sim
            .calls()
            .into_iter()
            .rev()
            .find(|c| c.action == "CreateSnapshot")
            .expect("a CreateSnapshot");
        assert_eq!(create.param("SnapshotName"), Some(name.as_str()));
        (name, create)
    }

    fn create_line(at: &mut Attempt) -> String {
        let audit = at.take_audit();
        audit
            .iter()
            .find(|a| a.kind == "CreateSnapshot")
            .map(|a| a.detail.clone())
            .unwrap_or_else(|| panic!("no CreateSnapshot line: {audit:?}"))
    }

    #[tokio::test]
    async fn a_group_with_replicas_is_snapshotted_from_its_first_replica_by_node_id() {
        let (sim, steps, _) =
            steps_with([SimGroup::new(group(), nt("cache.r6g.large")).replicas(2)]).await;
        let mut at = attempt(false);
        let (name, create) = snapshot_once(&sim, &steps, &mut at).await;
        assert_eq!(create.param("CacheClusterId"), Some("prod-jobs-002"));
        assert_eq!(create.param("ReplicationGroupId"), None);
        assert_eq!(sim.snapshot_source(&name).as_deref(), Some("prod-jobs-002"));
        let line = create_line(&mut at);
        assert!(
            line.contains("snapshot from replica prod-jobs-002")
                && line.contains("off the primary prod-jobs-001"),
            "{line}"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn snapshot_source_group_names_the_group_as_before_without_looking_at_the_nodes() {
        let (sim, steps, _) = steps().await;
        let mut at = attempt_for(group(), from_source(SnapshotSource::Group), 1, false);
        let (name, create) = snapshot_once(&sim, &steps, &mut at).await;
        assert_eq!(create.param("ReplicationGroupId"), Some("prod-jobs"));
        assert_eq!(create.param("CacheClusterId"), None);
        assert_eq!(sim.snapshot_source(&name).as_deref(), Some("prod-jobs"));
        assert_eq!(sim.count("DescribeReplicationGroups"), 0);
        assert!(create_line(&mut at).contains("snapshot of the group"));
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn snapshot_source_primary_names_the_primary() {
        let (sim, steps, _) = steps().await;
        let mut at = attempt_for(group(), from_source(SnapshotSource::Primary), 1, false);
        let (_, create) = snapshot_once(&sim, &steps, &mut at).await;
        assert_eq!(create.param("CacheClusterId"), Some("prod-jobs-001"));
        assert_eq!(create.param("ReplicationGroupId"), None);
        assert!(create_line(&mut at).contains("snapshot from the primary prod-jobs-001"));
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_cluster_mode_enabled_group_is_snapshotted_whole_whatever_the_source_says() {
        let sharded = ReplicationGroupId::parse("sharded").unwrap();
        for source in [SnapshotSource::Replica, SnapshotSource::Primary] {
            let (sim, steps, _) =
                steps_with([SimGroup::new(sharded.clone(), nt("cache.m6g.large"))
                    .replicas(1)
                    .shards(2)])
                .await;
            let mut at = attempt_for(sharded.clone(), from_source(source), 1, false);
            let (_, create) = snapshot_once(&sim, &steps, &mut at).await;
            assert_eq!(create.param("ReplicationGroupId"), Some("sharded"));
            assert_eq!(create.param("CacheClusterId"), None);
            let line = create_line(&mut at);
            assert!(
                line.contains("snapshot of the group") && line.contains("cluster mode enabled"),
                "{line}"
            );
            sim.shutdown().await;
        }
    }

    #[tokio::test]
    async fn a_group_without_a_replica_is_snapshotted_whole_and_says_why() {
        let (sim, steps, _) =
            steps_with([SimGroup::new(group(), nt("cache.r6g.large")).replicas(0)]).await;
        let mut at = attempt(false);
        let (_, create) = snapshot_once(&sim, &steps, &mut at).await;
        assert_eq!(create.param("ReplicationGroupId"), Some("prod-jobs"));
        assert_eq!(create.param("CacheClusterId"), None);
        assert!(create_line(&mut at).contains("no replica"));
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn aws_events_are_the_groups_and_its_nodes_only_not_a_group_with_a_longer_name() {
        use crate::elasticache::sim::ModifyFault;
        let eu = ReplicationGroupId::parse("prod-jobs-eu").unwrap();
        let sim = sim::spawn(SimConfig {
            modify_duration: std::time::Duration::from_millis(20),
            ..SimConfig::with_groups([
                SimGroup::new(group(), nt("cache.r6g.large")),
                SimGroup::new(eu.clone(), nt("cache.r6g.large")),
            ])
        })
        .await
        .unwrap();
        let api: Arc<dyn ElastiCache> =
            Arc::new(SdkElastiCache::new(&config_for_endpoint(&sim.endpoint())));
        let steps = ElastiCacheSteps::new(api.clone());
        // prod-jobs-eu's upsize fails: AWS reports it on `prod-jobs-eu` and `prod-jobs-eu-001`.
        sim.fail_modifications_of(&eu, ModifyFault::Revert);
        api.modify_node_type(&eu, &nt("cache.r6g.xlarge"))
            .await
            .unwrap();
        let mut at = attempt(true);
        at.run.state = State::Modifying {
            plan: crate::workflow::run::Plan {
                version: 1,
                current: nt("cache.r6g.large"),
                target: nt("cache.r6g.xlarge"),
                choices: vec![nt("cache.r6g.xlarge")],
                cap: None,
                cluster_mode: ClusterMode::Disabled,
                members: 2,
                shards: 1,
                preflight: None,
                pending_acknowledged: false,
                forecast: None,
                direction: Default::default(),
                prices: None,
            },
            snapshot: None,
            started: Timestamp::now(),
            requested: true,
            seen_modifying: true,
            polls: 1,
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let polled = api.describe_group(&eu).await.unwrap();
        assert_eq!(polled.node_type, Some(nt("cache.r6g.large")));
        let theirs = steps.why_not_upsized(&mut at, &polled).await;
        assert_eq!(theirs.len(), 2, "prod-jobs-eu's own: {theirs:?}");
        let ours_polled = api.describe_group(&group()).await.unwrap();
        let ours = steps.why_not_upsized(&mut at, &ours_polled).await;
        assert!(ours.is_empty(), "prod-jobs is not prod-jobs-eu: {ours:?}");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_retry_finds_the_runs_snapshot_from_the_replica_and_takes_no_second_one() {
        let (sim, steps, _) = steps().await;
        let (name, _) = snapshot_once(&sim, &steps, &mut attempt(false)).await;
        // The answer was lost: the retry looks for the same name before anything else.
        let mut again = attempt(true);
        let status = steps.create_snapshot(&mut again, &name).await.unwrap();
        assert_eq!(status, SnapshotStatus::Creating);
        assert_eq!(sim.attempts("CreateSnapshot"), 1, "asked once");
        assert_eq!(sim.snapshot_source(&name).as_deref(), Some("prod-jobs-002"));
        let audit = again.take_audit();
        assert!(
            audit
                .iter()
                .any(|a| a.kind == "DescribeSnapshots" && a.detail.contains("already exists")),
            "{audit:?}"
        );
        sim.shutdown().await;
    }

    #[test]
    fn the_replica_is_the_first_by_node_id_whatever_order_aws_lists_the_roles_in() {
        let nodes = |roles: Vec<(&str, NodeRole)>| GroupNodes {
            group: GroupInfo {
                id: group(),
                status: GroupStatus::Available,
                node_type: Some(nt("cache.r6g.large")),
                members: ["prod-jobs-001", "prod-jobs-002", "prod-jobs-003"]
                    .map(cid)
                    .to_vec(),
                cluster_mode: ClusterMode::Disabled,
                shards: 1,
                pending: Vec::new(),
            },
            roles: roles.into_iter().map(|(n, r)| (cid(n), r)).collect(),
        };
        // After a failover 002 is the primary; AWS lists 003 first.
        let swapped = nodes(vec![
            ("prod-jobs-003", NodeRole::Replica),
            ("prod-jobs-002", NodeRole::Primary),
            ("prod-jobs-001", NodeRole::Replica),
        ]);
        let none = BTreeMap::new();
        for _ in 0..2 {
            let (from, why) = snapshot_from(SnapshotSource::Replica, &swapped, &none);
            assert_eq!(from, SnapshotFrom::Node(cid("prod-jobs-001")));
            assert!(why.contains("primary prod-jobs-002"), "{why}");
        }
        // AWS did not say who is who: the group, never a guess.
        let (from, why) = snapshot_from(SnapshotSource::Replica, &nodes(Vec::new()), &none);
        assert_eq!(from, SnapshotFrom::Group(group()));
        assert!(why.contains("did not say"), "{why}");
    }

    #[test]
    fn the_replica_with_the_most_free_memory_is_picked_and_the_reason_says_so() {
        let g = GroupNodes {
            group: GroupInfo {
                id: group(),
                status: GroupStatus::Available,
                node_type: Some(nt("cache.r6g.large")),
                members: ["prod-jobs-001", "prod-jobs-002", "prod-jobs-003"]
                    .map(cid)
                    .to_vec(),
                cluster_mode: ClusterMode::Disabled,
                shards: 1,
                pending: Vec::new(),
            },
            roles: vec![
                (cid("prod-jobs-001"), NodeRole::Primary),
                (cid("prod-jobs-002"), NodeRole::Replica),
                (cid("prod-jobs-003"), NodeRole::Replica),
            ],
        };
        let read = |v: &[(&str, f64)]| -> BTreeMap<CacheClusterId, f64> {
            v.iter().map(|(n, p)| (cid(n), *p)).collect()
        };
        let (from, why) = snapshot_from(
            SnapshotSource::Replica,
            &g,
            &read(&[("prod-jobs-002", 88.0), ("prod-jobs-003", 61.5)]),
        );
        assert_eq!(from, SnapshotFrom::Node(cid("prod-jobs-003")));
        assert!(why.contains("most free memory (61.5 % used"), "{why}");
        // Equal readings: the first by node id, as without readings.
        let (from, _) = snapshot_from(
            SnapshotSource::Replica,
            &g,
            &read(&[("prod-jobs-003", 70.0), ("prod-jobs-002", 70.0)]),
        );
        assert_eq!(from, SnapshotFrom::Node(cid("prod-jobs-002")));
        // A reading for the primary (a failover since) is never the pick.
        let (from, _) = snapshot_from(
            SnapshotSource::Replica,
            &g,
            &read(&[("prod-jobs-001", 10.0), ("prod-jobs-002", 90.0)]),
        );
        assert_eq!(from, SnapshotFrom::Node(cid("prod-jobs-002")));
        // "primary" and "group" ignore memory.
        let (from, _) = snapshot_from(
            SnapshotSource::Primary,
            &g,
            &read(&[("prod-jobs-003", 1.0)]),
        );
        assert_eq!(from, SnapshotFrom::Node(cid("prod-jobs-001")));
    }
}
