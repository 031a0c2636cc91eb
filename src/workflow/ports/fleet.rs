//! Many accounts and regions from one bot: an ElastiCache client and a CloudWatch reader per
//! place (account, region), built once at start and shared by every group there, and each
//! managed group reached in its own place by its AWS id while the bot calls it by its name.
//!
//! A group's name is what runs, slash commands and messages use (`[groups.<name>]`); its id is
//! what AWS knows (`id = "…"`, by default the name). Two groups may share an id in two regions
//! or accounts under two names. [`Fleet::aws`] gives a group's ElastiCache verbs in its place,
//! translating the name to the id on the way out and back on the way in, so the workflow never
//! sees the difference. This module decides nothing about a run.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::{CacheClusterId, NodeType, ReplicationGroupId, SnapshotName, Timestamp};
use crate::workflow::ports::elasticache::{AwsEvent, GroupNodes, SnapshotFrom};
use crate::workflow::ports::{
    AwsError, BoxFuture, CacheClusterInfo, ElastiCache, GroupInfo, MemoryError, MemoryQuery,
    MemorySeries, NodeSeries, Parameters, SnapshotInfo,
};
use crate::workflow::preflight::PendingChange;

/// Where a group is: an AWS account id and a region (`None`: not known, the bot's own).
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Place {
    pub account: Option<String>,
    pub region: Option<String>,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let account = self.account.as_deref().unwrap_or("?");
        let region = self.region.as_deref().unwrap_or("?");
        write!(f, "{account}/{region}")
    }
}

/// One place's clients.
#[derive(Clone)]
pub struct Clients {
    pub aws: Arc<dyn ElastiCache>,
    pub memory: Option<Arc<dyn MemorySeries>>,
}

/// Every place's clients, and where each managed group is.
pub struct Fleet {
    home: Place,
    places: HashMap<Place, Clients>,
    /// Group name → its place and its AWS id.
    groups: HashMap<ReplicationGroupId, (Place, ReplicationGroupId)>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut places: Vec<String> = self.places.keys().map(|p| p.to_string()).collect();
        places.sort();
        f.debug_struct("Fleet")
            .field("home", &self.home)
            .field("places", &places)
            .finish()
    }
}

impl Fleet {
    /// One place, the bot's own, where every group is named by its id.
    pub fn single(aws: Arc<dyn ElastiCache>, memory: Option<Arc<dyn MemorySeries>>) -> Fleet {
        Fleet::new(Place::default(), Clients { aws, memory })
    }

    /// The bot's own place and its clients; [`Fleet::add_place`] and [`Fleet::add_group`] add
    /// the rest.
    pub fn new(home: Place, clients: Clients) -> Fleet {
        Fleet {
            places: HashMap::from([(home.clone(), clients)]),
            home,
            groups: HashMap::new(),
        }
    }

    pub fn add_place(&mut self, place: Place, clients: Clients) {
        self.places.insert(place, clients);
    }

    /// A managed group `name`, which AWS knows as `aws_id` in `place` (`None`: the bot's own).
    pub fn add_group(
        &mut self,
        name: ReplicationGroupId,
        place: Option<Place>,
        aws_id: ReplicationGroupId,
    ) {
        let place = place.unwrap_or_else(|| self.home.clone());
        self.groups.insert(name, (place, aws_id));
    }

    pub fn home(&self) -> &Place {
        &self.home
    }

    /// Where a group is (the bot's own place for a group it doesn't know).
    pub fn place_of(&self, group: &ReplicationGroupId) -> &Place {
        self.groups.get(group).map_or(&self.home, |(p, _)| p)
    }

    /// Every place the fleet has clients for.
    pub fn places(&self) -> Vec<Place> {
        let mut out: Vec<Place> = self.places.keys().cloned().collect();
        out.sort();
        out
    }

    /// The one place the fleet reaches that fits what an alarm says of its account and region
    /// (an unsaid one fits any); `None` when none does, or when several do (an alarm that
    /// doesn't say where it is can't be told apart from a group of the same id elsewhere).
    pub fn find_place(&self, account: Option<&str>, region: Option<&str>) -> Option<&Place> {
        let fits = |ours: &Option<String>, theirs: Option<&str>| match (ours, theirs) {
            (Some(o), Some(t)) => o == t,
            _ => true,
        };
        let mut fitting = self
            .places
            .keys()
            .filter(|p| fits(&p.account, account) && fits(&p.region, region));
        match (fitting.next(), fitting.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// The ElastiCache verbs of `place`, speaking AWS ids.
    pub fn aws_at(&self, place: &Place) -> Option<Arc<dyn ElastiCache>> {
        self.places.get(place).map(|c| c.aws.clone())
    }

    /// The managed group AWS knows as `aws_id` in `place`.
    pub fn named(&self, place: &Place, aws_id: &ReplicationGroupId) -> Option<ReplicationGroupId> {
        self.groups
            .iter()
            .find(|(_, (p, id))| p == place && id == aws_id)
            .map(|(name, _)| name.clone())
            // A group the config names by its id in the bot's own place.
            .or_else(|| {
                (*place == self.home && !self.groups.contains_key(aws_id)).then(|| aws_id.clone())
            })
    }

    /// A group's ElastiCache verbs in its place, called by its name.
    pub fn aws(&self, group: &ReplicationGroupId) -> Arc<dyn ElastiCache> {
        let (place, aws_id) = match self.groups.get(group) {
            Some((p, id)) => (p, id.clone()),
            None => (&self.home, group.clone()),
        };
        let inner = self
            .places
            .get(place)
            .or_else(|| self.places.get(&self.home))
            .map(|c| c.aws.clone())
            .expect("the fleet always has its own place");
        if aws_id == *group {
            return inner;
        }
        Arc::new(Named {
            inner,
            name: group.clone(),
            aws_id,
        })
    }

    /// A group's memory reader in its place (`None`: no CloudWatch there).
    pub fn memory(&self, group: &ReplicationGroupId) -> Option<Arc<dyn MemorySeries>> {
        let place = self.place_of(group);
        self.places.get(place).and_then(|c| c.memory.clone())
    }

    /// Does any place have a memory reader?
    pub fn has_memory(&self) -> bool {
        self.places.values().any(|c| c.memory.is_some())
    }
}

/// Every group's memory, read in the group's own place ([`MemoryQuery::group`] says which).
pub struct FleetMemory(pub Arc<Fleet>);

impl MemorySeries for FleetMemory {
    fn memory_usage<'a>(
        &'a self,
        query: &'a MemoryQuery,
    ) -> BoxFuture<'a, Result<Vec<NodeSeries>, MemoryError>> {
        Box::pin(async move {
            match self.0.memory(&query.group) {
                Some(m) => m.memory_usage(query).await,
                None => Err(MemoryError::Other {
                    code: "NoReader".into(),
                    message: format!(
                        "no CloudWatch reader where {} is ({})",
                        query.group,
                        self.0.place_of(&query.group)
                    ),
                }),
            }
        })
    }
}

/// Every group's ElastiCache verbs, each in its own place: calls that name a group go to that
/// group's place by its AWS id. Calls that name no group (a node, a snapshot, a parameter group,
/// events) can't know which place they are for and are refused: use [`Fleet::aws`] for a
/// group's.
pub struct FleetAws(pub Arc<Fleet>);

/// A call that names no group, made where the place isn't known.
fn no_place(call: &str) -> AwsError {
    AwsError::Other {
        code: "NoPlace".into(),
        message: format!("{call} names no group, so no account and region: ask Fleet::aws(group)"),
    }
}

macro_rules! by_group {
    ($self:ident, $group:expr, $call:ident ( $($arg:expr),* )) => {{
        let api = $self.0.aws($group);
        Box::pin(async move { api.$call($($arg),*).await })
    }};
}

impl ElastiCache for FleetAws {
    fn describe_group<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        by_group!(self, id, describe_group(id))
    }

    fn describe_cache_cluster<'a>(
        &'a self,
        _: &'a CacheClusterId,
    ) -> BoxFuture<'a, Result<CacheClusterInfo, AwsError>> {
        Box::pin(async { Err(no_place("DescribeCacheClusters")) })
    }

    fn allowed_scale_ups<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<NodeType>, AwsError>> {
        by_group!(self, id, allowed_scale_ups(id))
    }

    fn allowed_scale_downs<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<NodeType>, AwsError>> {
        by_group!(self, id, allowed_scale_downs(id))
    }

    fn describe_group_nodes<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<GroupNodes, AwsError>> {
        by_group!(self, id, describe_group_nodes(id))
    }

    fn create_snapshot<'a>(
        &'a self,
        from: &'a SnapshotFrom,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<SnapshotInfo, AwsError>> {
        let api = match from {
            SnapshotFrom::Group(g) => self.0.aws(g),
            SnapshotFrom::Node(_) => return Box::pin(async { Err(no_place("CreateSnapshot")) }),
        };
        Box::pin(async move { api.create_snapshot(from, name).await })
    }

    fn describe_snapshot<'a>(
        &'a self,
        _: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<Option<SnapshotInfo>, AwsError>> {
        Box::pin(async { Err(no_place("DescribeSnapshots")) })
    }

    fn modify_node_type<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
        node_type: &'a NodeType,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        by_group!(self, group, modify_node_type(group, node_type))
    }

    fn cache_parameters<'a>(
        &'a self,
        _: &'a str,
        _: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Parameters, AwsError>> {
        Box::pin(async { Err(no_place("DescribeCacheParameters")) })
    }

    fn manual_snapshots<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<SnapshotInfo>, AwsError>> {
        by_group!(self, group, manual_snapshots(group))
    }

    fn update_actions_in_progress<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<PendingChange>, AwsError>> {
        by_group!(self, group, update_actions_in_progress(group))
    }

    fn events_since<'a>(&'a self, _: Timestamp) -> BoxFuture<'a, Result<Vec<AwsEvent>, AwsError>> {
        Box::pin(async { Err(no_place("DescribeEvents")) })
    }

    fn scalable_dimensions<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<String>, AwsError>> {
        by_group!(self, group, scalable_dimensions(group))
    }
}

/// A group whose AWS id is not its name: the name goes out as the id, the id comes back as the
/// name.
struct Named {
    inner: Arc<dyn ElastiCache>,
    name: ReplicationGroupId,
    aws_id: ReplicationGroupId,
}

impl Named {
    fn out<'a>(&'a self, id: &'a ReplicationGroupId) -> &'a ReplicationGroupId {
        if *id == self.name { &self.aws_id } else { id }
    }

    fn back(&self, id: &mut ReplicationGroupId) {
        if *id == self.aws_id {
            *id = self.name.clone();
        }
    }

    fn group_back(&self, mut g: GroupInfo) -> GroupInfo {
        self.back(&mut g.id);
        g
    }

    fn snapshot_back(&self, mut s: SnapshotInfo) -> SnapshotInfo {
        if let Some(g) = s.group.as_mut() {
            self.back(g);
        }
        s
    }
}

impl ElastiCache for Named {
    fn describe_group<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        Box::pin(async move {
            let g = self.inner.describe_group(self.out(id)).await?;
            Ok(self.group_back(g))
        })
    }

    fn describe_cache_cluster<'a>(
        &'a self,
        id: &'a CacheClusterId,
    ) -> BoxFuture<'a, Result<CacheClusterInfo, AwsError>> {
        Box::pin(async move {
            let mut c = self.inner.describe_cache_cluster(id).await?;
            if let Some(g) = c.replication_group.as_mut() {
                self.back(g);
            }
            Ok(c)
        })
    }

    fn allowed_scale_ups<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<NodeType>, AwsError>> {
        self.inner.allowed_scale_ups(self.out(id))
    }

    fn allowed_scale_downs<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<NodeType>, AwsError>> {
        self.inner.allowed_scale_downs(self.out(id))
    }

    fn describe_group_nodes<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<GroupNodes, AwsError>> {
        Box::pin(async move {
            let mut n = self.inner.describe_group_nodes(self.out(id)).await?;
            self.back(&mut n.group.id);
            Ok(n)
        })
    }

    fn create_snapshot<'a>(
        &'a self,
        from: &'a SnapshotFrom,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<SnapshotInfo, AwsError>> {
        Box::pin(async move {
            let from = match from {
                SnapshotFrom::Group(g) => SnapshotFrom::Group(self.out(g).clone()),
                node => node.clone(),
            };
            let s = self.inner.create_snapshot(&from, name).await?;
            Ok(self.snapshot_back(s))
        })
    }

    fn describe_snapshot<'a>(
        &'a self,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<Option<SnapshotInfo>, AwsError>> {
        Box::pin(async move {
            let s = self.inner.describe_snapshot(name).await?;
            Ok(s.map(|s| self.snapshot_back(s)))
        })
    }

    fn modify_node_type<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
        node_type: &'a NodeType,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        Box::pin(async move {
            let g = self
                .inner
                .modify_node_type(self.out(group), node_type)
                .await?;
            Ok(self.group_back(g))
        })
    }

    fn cache_parameters<'a>(
        &'a self,
        parameter_group: &'a str,
        wanted: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Parameters, AwsError>> {
        self.inner.cache_parameters(parameter_group, wanted)
    }

    fn manual_snapshots<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<SnapshotInfo>, AwsError>> {
        Box::pin(async move {
            let list = self.inner.manual_snapshots(self.out(group)).await?;
            Ok(list.into_iter().map(|s| self.snapshot_back(s)).collect())
        })
    }

    fn update_actions_in_progress<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<PendingChange>, AwsError>> {
        self.inner.update_actions_in_progress(self.out(group))
    }

    fn events_since<'a>(
        &'a self,
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<AwsEvent>, AwsError>> {
        Box::pin(async move {
            let mut events = self.inner.events_since(since).await?;
            for e in &mut events {
                if e.source == self.aws_id.as_str() {
                    e.source = self.name.to_string();
                }
            }
            Ok(events)
        })
    }

    fn scalable_dimensions<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<String>, AwsError>> {
        self.inner.scalable_dimensions(self.out(group))
    }
}
