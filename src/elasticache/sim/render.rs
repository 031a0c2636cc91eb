//! The XML ElastiCache answers with for a replication group, a cache cluster and a snapshot.
//!
//! Element names follow `aws-sdk-elasticache`'s generated deserializers
//! (`protocol_serde/shape_replication_group.rs`, `shape_cache_cluster.rs`, `shape_snapshot.rs`)
//! and AWS's documented samples. Lists use AWS's member names (`ClusterId`, `NodeGroup`,
//! `NodeGroupMember`, `CacheCluster`, `Snapshot`, `NodeSnapshot`), not `member`.
//! Pure: the caller passes the status and time to show.

use tokio::time::Instant;

use super::protocol::Xml;
use super::world::{Activity, Group, GroupStatus, Member, Snapshot, World};
use crate::workflow::ports::SnapshotStatus;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const PORT: u16 = 6379;
const HASH_SLOTS: u32 = 16_384;

/// Fake, clearly local host names: nothing should ever try to connect to them.
fn host(name: &str) -> String {
    format!("{name}.elasticache-sim.localhost")
}

fn availability_zone(node: u8) -> String {
    let zone = ['a', 'b', 'c'][usize::from(node.saturating_sub(1)) % 3];
    format!("{REGION}{zone}")
}

fn endpoint(x: &mut Xml, tag: &str, address: &str) {
    x.node(tag, |x| {
        x.leaf("Address", address).leaf("Port", PORT);
    });
}

fn on_off(b: bool) -> &'static str {
    if b { "enabled" } else { "disabled" }
}

/// The slot range of shard `shard` (1-based) of `shards`, as `start-end`.
fn slots(shard: u8, shards: u8) -> String {
    let (i, n) = (u32::from(shard) - 1, u32::from(shards));
    let start = HASH_SLOTS * i / n;
    let end = HASH_SLOTS * (i + 1) / n - 1;
    format!("{start}-{end}")
}

fn member_status(g: &Group, m: &Member, status: GroupStatus) -> &'static str {
    match status {
        GroupStatus::Modifying => "modifying",
        GroupStatus::Snapshotting if g.is_snapshot_source(m) => "snapshotting",
        _ => "available",
    }
}

fn data_tiering(g: &Group) -> bool {
    g.node_type.family().ends_with('d')
}

/// The children of `<ReplicationGroup>`.
pub fn group(x: &mut Xml, world: &World, g: &Group, status: GroupStatus) {
    let members = g.members();
    let status_str = status.as_str();
    x.leaf("ReplicationGroupId", &g.id)
        .leaf("Description", format!("{} (simulated)", g.id))
        .leaf("Status", status_str)
        .empty("PendingModifiedValues")
        .node("MemberClusters", |x| {
            for m in &members {
                x.leaf("ClusterId", &m.id);
            }
        })
        .node("NodeGroups", |x| {
            for shard in 1..=g.shards {
                x.node("NodeGroup", |x| {
                    x.leaf("NodeGroupId", format!("{shard:04}"))
                        .leaf("Status", status_str);
                    if g.cluster_enabled() {
                        x.leaf("Slots", slots(shard, g.shards));
                    } else {
                        endpoint(x, "PrimaryEndpoint", &host(&format!("master.{}", g.id)));
                        endpoint(x, "ReaderEndpoint", &host(&format!("replica.{}", g.id)));
                    }
                    x.node("NodeGroupMembers", |x| {
                        for m in members.iter().filter(|m| m.shard == shard) {
                            x.node("NodeGroupMember", |x| {
                                x.leaf("CacheClusterId", &m.id).leaf("CacheNodeId", "0001");
                                if !g.cluster_enabled() {
                                    endpoint(x, "ReadEndpoint", &host(&m.id));
                                }
                                x.leaf("PreferredAvailabilityZone", availability_zone(m.node));
                                if !g.cluster_enabled() {
                                    let role = if m.is_primary() { "primary" } else { "replica" };
                                    x.leaf("CurrentRole", role);
                                }
                            });
                        }
                    });
                });
            }
        })
        .opt_leaf("SnapshottingClusterId", g.snapshotting_cluster())
        .leaf(
            "AutomaticFailover",
            on_off(g.replicas > 0 || g.cluster_enabled()),
        )
        .leaf("MultiAZ", on_off(g.replicas > 0));
    if g.cluster_enabled() {
        endpoint(
            x,
            "ConfigurationEndpoint",
            &host(&format!("clustercfg.{}", g.id)),
        );
    }
    x.leaf("SnapshotRetentionLimit", 0)
        .leaf("SnapshotWindow", "05:00-06:00")
        .leaf("ClusterEnabled", g.cluster_enabled())
        .leaf("CacheNodeType", &g.node_type)
        .leaf("AuthTokenEnabled", false)
        .leaf("TransitEncryptionEnabled", false)
        .leaf("AtRestEncryptionEnabled", false)
        .leaf(
            "ARN",
            format!(
                "arn:aws:elasticache:{REGION}:{ACCOUNT}:replicationgroup:{}",
                g.id
            ),
        )
        .leaf(
            "ReplicationGroupCreateTime",
            world.wall(g.created).to_rfc3339(),
        )
        .leaf("DataTiering", on_off(data_tiering(g)))
        .leaf("AutoMinorVersionUpgrade", true)
        .leaf("NetworkType", "ipv4")
        .leaf("IpDiscovery", "ipv4")
        .leaf("ClusterMode", g.cluster_mode)
        .leaf("Engine", "redis");
}

/// The children of `<CacheCluster>`.
pub fn cache_cluster(x: &mut Xml, world: &World, g: &Group, m: &Member, status: GroupStatus) {
    x.leaf("CacheClusterId", &m.id)
        .leaf("CacheNodeType", &g.node_type)
        .leaf("Engine", "redis")
        .leaf("EngineVersion", &g.engine_version)
        .leaf("CacheClusterStatus", member_status(g, m, status))
        .leaf("NumCacheNodes", 1)
        .leaf("PreferredAvailabilityZone", availability_zone(m.node))
        .leaf("CacheClusterCreateTime", world.wall(g.created).to_rfc3339())
        .leaf("PreferredMaintenanceWindow", "sun:23:00-mon:01:30")
        .node("PendingModifiedValues", |x| {
            x.opt_leaf("EngineVersion", g.pending_engine_version.as_deref());
            // While a node type change is applied, AWS shows where the nodes are going.
            if let Activity::Modifying { to, .. } = &g.activity {
                x.leaf("CacheNodeType", to);
            }
        })
        .empty("CacheSecurityGroups")
        .node("CacheParameterGroup", |x| {
            x.leaf("CacheParameterGroupName", &g.parameter_group)
                .leaf("ParameterApplyStatus", "in-sync")
                .empty("CacheNodeIdsToReboot");
        })
        .leaf("CacheSubnetGroupName", "default")
        .leaf("AutoMinorVersionUpgrade", true)
        .leaf("ReplicationGroupId", &g.id)
        .leaf("SnapshotRetentionLimit", 0)
        .leaf("SnapshotWindow", "05:00-06:00")
        .leaf("AuthTokenEnabled", false)
        .leaf("TransitEncryptionEnabled", false)
        .leaf("AtRestEncryptionEnabled", false)
        .leaf(
            "ARN",
            format!("arn:aws:elasticache:{REGION}:{ACCOUNT}:cluster:{}", m.id),
        )
        .leaf("ReplicationGroupLogDeliveryEnabled", false)
        .leaf("NetworkType", "ipv4")
        .leaf("IpDiscovery", "ipv4");
}

/// The children of `<Snapshot>`, as it stands at `now`.
pub fn snapshot(x: &mut Xml, world: &World, s: &Snapshot, now: Instant) {
    let g = &s.group;
    let status = s.status(now);
    let done = status != SnapshotStatus::Creating;
    // The node the request named, or the last node of each shard.
    let sources: Vec<Member> = g
        .members()
        .into_iter()
        .filter(|m| match &s.node {
            Some(node) => &m.id == node,
            None => g.is_snapshot_source(m),
        })
        .collect();
    x.leaf("SnapshotName", &s.name)
        .leaf("ReplicationGroupId", &g.id)
        .leaf(
            "ReplicationGroupDescription",
            format!("{} (simulated)", g.id),
        )
        .leaf("SnapshotStatus", &status)
        .leaf("SnapshotSource", "manual")
        .leaf("CacheNodeType", &g.node_type)
        .leaf("Engine", "redis")
        .leaf("EngineVersion", &g.engine_version)
        .leaf("NumCacheNodes", 1)
        .leaf("PreferredMaintenanceWindow", "sun:23:00-mon:01:30")
        .leaf("Port", PORT)
        .leaf("CacheParameterGroupName", &g.parameter_group)
        .leaf("CacheSubnetGroupName", "default")
        .leaf("VpcId", "vpc-0sim")
        .leaf("AutoMinorVersionUpgrade", true)
        .leaf("SnapshotRetentionLimit", 0)
        .leaf("SnapshotWindow", "05:00-06:00")
        .leaf("NumNodeGroups", g.shards)
        .leaf(
            "AutomaticFailover",
            on_off(g.replicas > 0 || g.cluster_enabled()),
        )
        .node("NodeSnapshots", |x| {
            for m in &sources {
                x.node("NodeSnapshot", |x| {
                    x.leaf("CacheClusterId", &m.id)
                        .leaf("NodeGroupId", format!("{:04}", m.shard))
                        .leaf("CacheNodeId", "0001")
                        .leaf("CacheSize", if done { "1 MB" } else { "0 MB" })
                        .leaf("CacheNodeCreateTime", world.wall(g.created).to_rfc3339());
                    if done {
                        x.leaf("SnapshotCreateTime", world.wall(s.started).to_rfc3339());
                    }
                });
            }
        })
        .leaf(
            "ARN",
            format!("arn:aws:elasticache:{REGION}:{ACCOUNT}:snapshot:{}", s.name),
        )
        .leaf("DataTiering", on_off(data_tiering(g)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_slots_are_split_evenly_and_cover_every_slot() {
        assert_eq!(slots(1, 1), "0-16383");
        assert_eq!(slots(1, 2), "0-8191");
        assert_eq!(slots(2, 2), "8192-16383");
        assert_eq!(slots(1, 3), "0-5460");
        assert_eq!(slots(3, 3), "10922-16383");
    }

    #[test]
    fn nodes_are_spread_over_three_availability_zones() {
        assert_eq!(availability_zone(1), "us-east-1a");
        assert_eq!(availability_zone(3), "us-east-1c");
        assert_eq!(availability_zone(4), "us-east-1a");
    }
}
