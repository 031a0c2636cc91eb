//! The real `aws-sdk-elasticache` client, through `SdkElastiCache`, against the in-process
//! simulator on loopback: every verb of the trait, the snapshot and modify lifecycles, and every
//! class of error the workflow sorts AWS's answers into.

use std::future::Future;
use std::time::Duration;

use redis_autoscaler::domain::node_types;
use redis_autoscaler::domain::{
    CacheClusterId, NodeType, ReplicationGroupId, SnapshotName, Timestamp,
};
use redis_autoscaler::elasticache::sdk::{SdkElastiCache, config_for_endpoint};
use redis_autoscaler::elasticache::sim::{self, ModifyFault, SimConfig, SimGroup, SimHandle};
use redis_autoscaler::workflow::ports::elasticache::{NodeRole, SnapshotFrom};
use redis_autoscaler::workflow::ports::{AwsError, ClusterMode, ElastiCache, SnapshotStatus};

const SNAPSHOT: Duration = Duration::from_millis(150);
const MODIFY: Duration = Duration::from_millis(150);

fn id(s: &str) -> ReplicationGroupId {
    ReplicationGroupId::parse(s).unwrap()
}

fn nt(s: &str) -> NodeType {
    NodeType::parse(s).unwrap()
}

fn snap(s: &str) -> SnapshotName {
    SnapshotName::parse(s).unwrap()
}

/// A snapshot of the whole group (`ReplicationGroupId`).
fn whole(group: &str) -> SnapshotFrom {
    SnapshotFrom::Group(id(group))
}

struct TestSim {
    sim: SimHandle,
    aws: SdkElastiCache,
}

/// A simulator with `prod-jobs` (cache.r6g.large, one replica) and `sharded` (cluster mode,
/// three shards of cache.m6g.large with two replicas), and the real SDK pointed at it.
async fn spawn_sim() -> TestSim {
    spawn_with(|_| {}).await
}

async fn spawn_with(tweak: impl FnOnce(&mut SimConfig)) -> TestSim {
    let mut config = SimConfig {
        groups: vec![
            SimGroup::new(id("prod-jobs"), nt("cache.r6g.large")),
            SimGroup::new(id("sharded"), nt("cache.m6g.large"))
                .replicas(2)
                .shards(3),
        ],
        snapshot_duration: SNAPSHOT,
        modify_duration: MODIFY,
        ..SimConfig::default()
    };
    tweak(&mut config);
    let sim = sim::spawn(config).await.expect("the simulator starts");
    assert!(sim.endpoint().starts_with("http://127.0.0.1:"));
    let aws = SdkElastiCache::new(&config_for_endpoint(&sim.endpoint()));
    TestSim { sim, aws }
}

/// Poll (every 10 ms, for at most 3 s) until `check` returns `Some`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn snapshot_settles(t: &TestSim, name: &SnapshotName) -> SnapshotStatus {
    eventually("the snapshot to settle", || async {
        let s = t.aws.describe_snapshot(name).await.unwrap().unwrap();
        (s.status != SnapshotStatus::Creating).then_some(s.status)
    })
    .await
}

async fn group_available(t: &TestSim, g: &ReplicationGroupId) -> NodeType {
    eventually("the group to be available", || async {
        let info = t.aws.describe_group(g).await.unwrap();
        info.is_available().then(|| info.node_type.unwrap())
    })
    .await
}

#[tokio::test]
async fn describe_group_reports_status_type_members_and_cluster_mode() {
    let t = spawn_sim().await;
    let g = t.aws.describe_group(&id("prod-jobs")).await.unwrap();
    assert_eq!(g.id, id("prod-jobs"));
    assert_eq!(g.status, "available");
    assert_eq!(g.node_type, Some(nt("cache.r6g.large")));
    let members: Vec<&str> = g.members.iter().map(|m| m.as_str()).collect();
    assert_eq!(members, ["prod-jobs-001", "prod-jobs-002"]);
    assert_eq!(g.cluster_mode, ClusterMode::Disabled);
    assert_eq!(Some(g), t.sim.group(&id("prod-jobs")));

    let s = t.aws.describe_group(&id("sharded")).await.unwrap();
    assert_eq!(s.cluster_mode, ClusterMode::Enabled);
    assert_eq!(s.members.len(), 9);
    assert_eq!(s.members[3].as_str(), "sharded-0002-001");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn describe_cache_cluster_maps_a_node_to_its_group() {
    let t = spawn_sim().await;
    let c = t
        .aws
        .describe_cache_cluster(&CacheClusterId::parse("prod-jobs-002").unwrap())
        .await
        .unwrap();
    assert_eq!(c.id.as_str(), "prod-jobs-002");
    assert_eq!(c.replication_group, Some(id("prod-jobs")));
    assert_eq!(c.node_type, Some(nt("cache.r6g.large")));
    assert_eq!(c.status, "available");
    let c = t
        .aws
        .describe_cache_cluster(&CacheClusterId::parse("sharded-0003-002").unwrap())
        .await
        .unwrap();
    assert_eq!(c.replication_group, Some(id("sharded")));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn allowed_scale_ups_are_the_larger_types_in_aws_order() {
    let t = spawn_sim().await;
    let ups = t.aws.allowed_scale_ups(&id("prod-jobs")).await.unwrap();
    assert_eq!(ups, node_types::scale_ups_from(&nt("cache.r6g.large")));
    assert!(ups.contains(&nt("cache.r6g.xlarge")));
    assert!(!ups.contains(&nt("cache.r6g.large")));
    let call = t.sim.calls().pop().unwrap();
    assert_eq!(call.action, "ListAllowedNodeTypeModifications");
    assert_eq!(call.param("ReplicationGroupId"), Some("prod-jobs"));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_snapshot_is_creating_then_available_while_the_group_is_snapshotting() {
    let t = spawn_sim().await;
    let g = id("prod-jobs");
    let name = snap("redis-autoscaler-r-abcdefgh");
    let created = t
        .aws
        .create_snapshot(&SnapshotFrom::Group(g.clone()), &name)
        .await
        .unwrap();
    assert_eq!(created.name, name);
    assert_eq!(created.status, SnapshotStatus::Creating);
    assert_eq!(created.group, Some(g.clone()));

    let call = t.sim.calls().pop().unwrap();
    assert_eq!(call.action, "CreateSnapshot");
    assert_eq!(call.param("ReplicationGroupId"), Some("prod-jobs"));
    assert_eq!(call.param("SnapshotName"), Some(name.as_str()));

    assert_eq!(
        t.aws.describe_group(&g).await.unwrap().status,
        "snapshotting"
    );
    let source = t
        .aws
        .describe_cache_cluster(&CacheClusterId::parse("prod-jobs-002").unwrap())
        .await
        .unwrap();
    assert_eq!(source.status, "snapshotting");

    assert_eq!(snapshot_settles(&t, &name).await, SnapshotStatus::Available);
    assert_eq!(t.aws.describe_group(&g).await.unwrap().status, "available");
    let described = t.aws.describe_snapshot(&name).await.unwrap().unwrap();
    assert_eq!(described.group, Some(g));
    assert_eq!(t.sim.count("CreateSnapshot"), 1);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_modification_reports_the_old_type_while_modifying_then_the_new_one() {
    let t = spawn_sim().await;
    let g = id("prod-jobs");
    let modified = t
        .aws
        .modify_node_type(&g, &nt("cache.r6g.xlarge"))
        .await
        .unwrap();
    assert_eq!(modified.status, "modifying");
    assert_eq!(modified.node_type, Some(nt("cache.r6g.large")));

    let call = t.sim.calls().pop().unwrap();
    assert_eq!(call.action, "ModifyReplicationGroup");
    assert_eq!(call.param("ReplicationGroupId"), Some("prod-jobs"));
    assert_eq!(call.param("CacheNodeType"), Some("cache.r6g.xlarge"));
    assert_eq!(call.param("ApplyImmediately"), Some("true"));
    assert_eq!(call.outcome, "ok");

    let during = t.aws.describe_group(&g).await.unwrap();
    assert_eq!(during.status, "modifying");
    assert_eq!(during.node_type, Some(nt("cache.r6g.large")));
    assert_eq!(group_available(&t, &g).await, nt("cache.r6g.xlarge"));
    let c = t
        .aws
        .describe_cache_cluster(&CacheClusterId::parse("prod-jobs-001").unwrap())
        .await
        .unwrap();
    assert_eq!(c.node_type, Some(nt("cache.r6g.xlarge")));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_cluster_mode_group_snapshots_and_scales_up_too() {
    let t = spawn_sim().await;
    let g = id("sharded");
    let name = snap("sharded-snap");
    t.aws
        .create_snapshot(&SnapshotFrom::Group(g.clone()), &name)
        .await
        .unwrap();
    assert_eq!(snapshot_settles(&t, &name).await, SnapshotStatus::Available);
    group_available(&t, &g).await;
    t.aws
        .modify_node_type(&g, &nt("cache.m6g.xlarge"))
        .await
        .unwrap();
    assert_eq!(group_available(&t, &g).await, nt("cache.m6g.xlarge"));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn members_roles_come_with_cluster_mode_disabled_only() {
    let t = spawn_sim().await;
    let cid = |s: &str| CacheClusterId::parse(s).unwrap();
    let nodes = t.aws.describe_group_nodes(&id("prod-jobs")).await.unwrap();
    assert_eq!(nodes.group.id, id("prod-jobs"));
    assert_eq!(
        nodes.roles,
        [
            (cid("prod-jobs-001"), NodeRole::Primary),
            (cid("prod-jobs-002"), NodeRole::Replica)
        ]
    );
    // AWS gives CurrentRole only with cluster mode disabled.
    let sharded = t.aws.describe_group_nodes(&id("sharded")).await.unwrap();
    assert_eq!(sharded.group.cluster_mode, ClusterMode::Enabled);
    assert!(sharded.roles.is_empty(), "{:?}", sharded.roles);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_snapshot_of_one_node_names_it_by_cache_cluster_id_alone() {
    let t = spawn_sim().await;
    let name = snap("redis-autoscaler-r-abcdefgh");
    let replica = CacheClusterId::parse("prod-jobs-002").unwrap();
    let created = t
        .aws
        .create_snapshot(&SnapshotFrom::Node(replica), &name)
        .await
        .unwrap();
    assert_eq!(created.status, SnapshotStatus::Creating);
    assert_eq!(created.group, Some(id("prod-jobs")));
    let call = t.sim.calls().pop().unwrap();
    assert_eq!(call.action, "CreateSnapshot");
    assert_eq!(call.param("CacheClusterId"), Some("prod-jobs-002"));
    assert_eq!(call.param("ReplicationGroupId"), None);
    assert_eq!(
        t.sim.snapshot_source(&name).as_deref(),
        Some("prod-jobs-002")
    );
    assert_eq!(snapshot_settles(&t, &name).await, SnapshotStatus::Available);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_snapshot_of_a_stranger_node_or_of_both_ids_is_refused_with_aws_codes() {
    let t = spawn_sim().await;
    let stranger = CacheClusterId::parse("nope-001").unwrap();
    let err = t
        .aws
        .create_snapshot(&SnapshotFrom::Node(stranger), &snap("s"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::NotFound { .. }), "{err}");
    assert_eq!(err.code(), "CacheClusterNotFound");
    // A node of a cluster-mode-enabled group: the group must be named.
    let shard_node = CacheClusterId::parse("sharded-0001-002").unwrap();
    let err = t
        .aws
        .create_snapshot(&SnapshotFrom::Node(shard_node), &snap("s"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "InvalidParameterCombination");
    // The trait can't send both; the raw client can.
    let client = aws_sdk_elasticache::Client::new(&config_for_endpoint(&t.sim.endpoint()));
    let err = client
        .create_snapshot()
        .replication_group_id("prod-jobs")
        .cache_cluster_id("prod-jobs-002")
        .snapshot_name("both")
        .send()
        .await
        .unwrap_err();
    use aws_sdk_elasticache::error::ProvideErrorMetadata;
    assert_eq!(
        err.as_service_error().and_then(|e| e.code()),
        Some("InvalidParameterCombination")
    );
    assert_eq!(t.sim.count("CreateSnapshot"), 0, "nothing was taken");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_modification_without_apply_immediately_is_recorded_but_not_applied() {
    let t = spawn_sim().await;
    let client = aws_sdk_elasticache::Client::new(&config_for_endpoint(&t.sim.endpoint()));
    let out = client
        .modify_replication_group()
        .replication_group_id("prod-jobs")
        .cache_node_type("cache.r6g.xlarge")
        .send()
        .await
        .unwrap();
    assert_eq!(out.replication_group().unwrap().status(), Some("available"));
    assert_eq!(
        t.sim.pending_node_type(&id("prod-jobs")),
        Some(nt("cache.r6g.xlarge"))
    );
    tokio::time::sleep(MODIFY + Duration::from_millis(50)).await;
    let g = t.aws.describe_group(&id("prod-jobs")).await.unwrap();
    assert_eq!(g.node_type, Some(nt("cache.r6g.large")));
    t.sim.shutdown().await;
}

#[tokio::test]
async fn unknown_groups_and_clusters_are_not_found_and_an_unknown_snapshot_is_none() {
    let t = spawn_sim().await;
    let err = t.aws.describe_group(&id("nope")).await.unwrap_err();
    assert!(matches!(err, AwsError::NotFound { .. }), "{err}");
    assert_eq!(err.code(), "ReplicationGroupNotFoundFault");
    assert!(!err.is_retryable());

    let err = t
        .aws
        .describe_cache_cluster(&CacheClusterId::parse("nope-001").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::NotFound { .. }), "{err}");
    assert_eq!(err.code(), "CacheClusterNotFound");

    let err = t.aws.allowed_scale_ups(&id("nope")).await.unwrap_err();
    assert_eq!(err.code(), "ReplicationGroupNotFoundFault");
    let err = t
        .aws
        .create_snapshot(&whole("nope"), &snap("s"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ReplicationGroupNotFoundFault");
    let err = t
        .aws
        .modify_node_type(&id("nope"), &nt("cache.r6g.xlarge"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ReplicationGroupNotFoundFault");

    assert_eq!(
        t.aws.describe_snapshot(&snap("never-taken")).await,
        Ok(None)
    );
    let last = t.sim.calls().pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.outcome.as_str()),
        ("DescribeSnapshots", "SnapshotNotFoundFault")
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_busy_group_is_an_invalid_state_for_snapshots_and_modifications() {
    let t = spawn_sim().await;
    let g = id("prod-jobs");
    t.aws
        .create_snapshot(&SnapshotFrom::Group(g.clone()), &snap("first"))
        .await
        .unwrap();
    let err = t
        .aws
        .create_snapshot(&SnapshotFrom::Group(g.clone()), &snap("second"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::InvalidState { .. }), "{err}");
    assert_eq!(err.code(), "InvalidReplicationGroupState");
    let err = t
        .aws
        .modify_node_type(&g, &nt("cache.r6g.xlarge"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::InvalidState { .. }), "{err}");

    snapshot_settles(&t, &snap("first")).await;
    t.aws
        .modify_node_type(&g, &nt("cache.r6g.xlarge"))
        .await
        .unwrap();
    let err = t
        .aws
        .modify_node_type(&g, &nt("cache.r6g.2xlarge"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::InvalidState { .. }), "{err}");
    let err = t
        .aws
        .create_snapshot(&SnapshotFrom::Group(g.clone()), &snap("third"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::InvalidState { .. }), "{err}");
    assert_eq!(t.sim.count("ModifyReplicationGroup"), 1);
    assert_eq!(t.sim.attempts("ModifyReplicationGroup"), 3);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn taking_a_snapshot_name_twice_is_snapshot_already_exists() {
    let t = spawn_sim().await;
    let name = snap("redis-autoscaler-r-abcdefgh");
    t.aws
        .create_snapshot(&whole("prod-jobs"), &name)
        .await
        .unwrap();
    snapshot_settles(&t, &name).await;
    let err = t
        .aws
        .create_snapshot(&whole("prod-jobs"), &name)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AwsError::SnapshotAlreadyExists { .. }),
        "{err}"
    );
    assert_eq!(err.code(), "SnapshotAlreadyExistsFault");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn exhausted_quotas_are_quota_exceeded() {
    let t = spawn_with(|c| c.faults.snapshot_quota = Some(0)).await;
    let err = t
        .aws
        .create_snapshot(&whole("prod-jobs"), &snap("s"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::QuotaExceeded { .. }), "{err}");
    assert_eq!(err.code(), "SnapshotQuotaExceededFault");

    t.sim.fail_modifications_of(
        &id("prod-jobs"),
        ModifyFault::reject("NodeQuotaForCustomerExceeded"),
    );
    let err = t
        .aws
        .modify_node_type(&id("prod-jobs"), &nt("cache.r6g.xlarge"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::QuotaExceeded { .. }), "{err}");
    assert_eq!(err.code(), "NodeQuotaForCustomerExceeded");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn throttling_is_transient_and_each_call_is_exactly_one_request() {
    let t = spawn_with(|c| c.throttle_fraction = 1.0).await;
    let err = t.aws.describe_group(&id("prod-jobs")).await.unwrap_err();
    assert!(matches!(err, AwsError::Transient { .. }), "{err}");
    assert_eq!(err.code(), "Throttling");
    assert!(err.is_retryable());
    let err = t
        .aws
        .create_snapshot(&whole("prod-jobs"), &snap("s"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // No hidden SDK retries: one trait call, one request.
    assert_eq!(t.sim.attempts("DescribeReplicationGroups"), 1);
    assert_eq!(t.sim.attempts("CreateSnapshot"), 1);
    assert_eq!(t.sim.count("CreateSnapshot"), 0);

    t.sim.set_throttle_fraction(0.0).unwrap();
    assert!(t.aws.describe_group(&id("prod-jobs")).await.is_ok());
    assert!(t.sim.set_throttle_fraction(2.0).is_err());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn node_types_that_are_not_offered_or_not_scale_ups_are_other_errors() {
    let t = spawn_sim().await;
    let g = id("prod-jobs");
    let err = t
        .aws
        .modify_node_type(&g, &nt("cache.x9z.large"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::Other { .. }), "{err}");
    assert_eq!(err.code(), "InvalidParameterValue");
    // A previous-generation type is neither a scale-up nor a scale-down AWS lists.
    let err = t
        .aws
        .modify_node_type(&g, &nt("cache.m1.small"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::Other { .. }), "{err}");
    assert_eq!(err.code(), "InvalidParameterCombination");
    let err = t
        .aws
        .modify_node_type(&g, &nt("cache.r6g.large"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "InvalidParameterCombination");
    assert!(!err.is_retryable());
    assert_eq!(t.aws.describe_group(&g).await.unwrap().status, "available");
    t.sim.shutdown().await;
}

#[tokio::test]
async fn an_injected_snapshot_failure_ends_failed() {
    let t = spawn_with(|c| {
        c.faults
            .failing_snapshots
            .insert(sim::SnapshotSelector::OfGroup(id("sharded")));
    })
    .await;
    t.sim.fail_snapshot_named(&snap("doomed"));
    let (by_group, by_name, fine) = (snap("of-sharded"), snap("doomed"), snap("fine"));
    t.aws
        .create_snapshot(&whole("sharded"), &by_group)
        .await
        .unwrap();
    t.aws
        .create_snapshot(&whole("prod-jobs"), &by_name)
        .await
        .unwrap();
    assert_eq!(
        snapshot_settles(&t, &by_group).await,
        SnapshotStatus::Failed
    );
    assert_eq!(snapshot_settles(&t, &by_name).await, SnapshotStatus::Failed);
    assert_eq!(
        t.aws.describe_group(&id("prod-jobs")).await.unwrap().status,
        "available"
    );
    t.aws
        .create_snapshot(&whole("prod-jobs"), &fine)
        .await
        .unwrap();
    assert_eq!(snapshot_settles(&t, &fine).await, SnapshotStatus::Available);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_reverted_modification_comes_back_available_on_the_old_type() {
    let t = spawn_sim().await;
    let g = id("prod-jobs");
    t.sim.fail_modifications_of(&g, ModifyFault::Revert);
    let accepted = t
        .aws
        .modify_node_type(&g, &nt("cache.r6g.xlarge"))
        .await
        .unwrap();
    assert_eq!(accepted.status, "modifying");
    assert_eq!(group_available(&t, &g).await, nt("cache.r6g.large"));
    // DescribeEvents says why, through the real SDK: oldest first here, newest first on the
    // wire; a StartTime after them lists none.
    let since = Timestamp::from_millis(Timestamp::now().as_millis() - 60_000);
    let events = t.aws.events_since(since).await.unwrap();
    let said: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.source.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(said.len(), 2, "{said:?}");
    assert_eq!(said[0].0, "prod-jobs-001");
    assert!(
        said[0].1.contains("InsufficientCacheClusterCapacity"),
        "{said:?}"
    );
    assert_eq!(said[1].0, "prod-jobs");
    assert!(
        events
            .iter()
            .all(|e| e.at >= since && e.at <= Timestamp::now())
    );
    let call = t.sim.calls().pop().unwrap();
    assert_eq!(call.action, "DescribeEvents");
    assert!(
        call.param("StartTime").is_some_and(|s| s.ends_with('Z')),
        "{call:?}"
    );
    let later = Timestamp::from_millis(Timestamp::now().as_millis() + 60_000);
    assert!(t.aws.events_since(later).await.unwrap().is_empty());
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_rejected_modification_is_refused_with_the_chosen_code() {
    let t = spawn_sim().await;
    let g = id("prod-jobs");
    t.sim
        .fail_modifications_of(&g, ModifyFault::reject("InsufficientCacheClusterCapacity"));
    let err = t
        .aws
        .modify_node_type(&g, &nt("cache.r6g.xlarge"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::Other { .. }), "{err}");
    assert_eq!(err.code(), "InsufficientCacheClusterCapacity");
    assert!(err.to_string().contains("insufficient capacity"), "{err}");
    let after = t.aws.describe_group(&g).await.unwrap();
    assert_eq!(
        (after.status.as_str(), after.node_type),
        ("available", Some(nt("cache.r6g.large")))
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    // A port that was just free: connection refused, on loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let aws = SdkElastiCache::new(&config_for_endpoint(&format!("http://127.0.0.1:{port}")));
    let err = aws.describe_group(&id("prod-jobs")).await.unwrap_err();
    assert!(matches!(err, AwsError::Transient { .. }), "{err}");
    assert_eq!(err.code(), "DispatchFailure");
}

#[tokio::test]
async fn a_call_that_times_out_is_transient() {
    let app = axum::Router::new().fallback(std::future::pending::<&'static str>);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let config = config_for_endpoint(&format!("http://{addr}"))
        .to_builder()
        .timeout_config(
            aws_sdk_elasticache::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_millis(100))
                .build(),
        )
        .build();
    let err = SdkElastiCache::new(&config)
        .describe_group(&id("prod-jobs"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::Transient { .. }), "{err}");
    assert_eq!(err.code(), "Timeout");
    server.abort();
}

#[tokio::test]
async fn an_answer_that_is_not_xml_is_transient() {
    let app = axum::Router::new().fallback(|| async { "<html>a proxy said hello</html>" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let aws = SdkElastiCache::new(&config_for_endpoint(&format!("http://{addr}")));
    let err = aws.describe_group(&id("prod-jobs")).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    server.abort();
}

#[tokio::test]
async fn the_simulator_refuses_unsigned_requests_and_unknown_actions() {
    let t = spawn_sim().await;
    redis_autoscaler::elasticache::sdk::install_crypto_provider();
    let http = reqwest::Client::new();
    let post = |body: &'static str, signed: bool| {
        let mut req = http
            .post(t.sim.endpoint())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if signed {
            req = req.header("authorization", "AWS4-HMAC-SHA256 Credential=test");
        }
        req.send()
    };
    let r = post("Action=DescribeReplicationGroups&Version=2015-02-02", false)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("<Code>MissingAuthenticationToken</Code>")
    );

    let r = post("Action=DeleteReplicationGroup&Version=2015-02-02", true)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "text/xml");
    let body = r.text().await.unwrap();
    assert!(
        body.starts_with(
            "<ErrorResponse xmlns=\"http://elasticache.amazonaws.com/doc/2015-02-02/\">"
        ),
        "{body}"
    );
    assert!(
        body.contains("<Type>Sender</Type><Code>InvalidAction</Code>"),
        "{body}"
    );

    let r = post(
        "Action=CreateSnapshot&Version=2015-02-02&ReplicationGroupId=prod-jobs",
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("<Code>MissingParameter</Code>")
    );

    let r = post(
        "Action=DescribeSnapshots&Version=2015-02-02&SnapshotName=nope",
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);

    let outcomes: Vec<String> = t.sim.calls().into_iter().map(|c| c.outcome).collect();
    assert_eq!(
        outcomes,
        [
            "MissingAuthenticationToken",
            "InvalidAction",
            "MissingParameter",
            "SnapshotNotFoundFault"
        ]
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_simulator_can_serve_on_a_listener_the_caller_bound() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config =
        SimConfig::with_groups([SimGroup::new(id("solo"), nt("cache.t4g.micro")).replicas(0)]);
    let sim = sim::spawn_on(listener, config).await.unwrap();
    assert_eq!(sim.endpoint(), format!("http://127.0.0.1:{port}"));
    let aws = SdkElastiCache::new(&config_for_endpoint(&sim.endpoint()));
    let g = aws.describe_group(&id("solo")).await.unwrap();
    let members: Vec<&str> = g.members.iter().map(|m| m.as_str()).collect();
    assert_eq!(members, ["solo-001"]);
    sim.shutdown().await;
    assert!(
        aws.describe_group(&id("solo"))
            .await
            .unwrap_err()
            .is_retryable()
    );
}

#[tokio::test]
async fn a_simulator_with_an_unknown_node_type_does_not_start() {
    let config = SimConfig::with_groups([SimGroup::new(id("odd"), nt("cache.x9z.large"))]);
    let err = sim::spawn(config).await.unwrap_err();
    assert!(format!("{err:#}").contains("cache.x9z.large"), "{err:#}");
}

/// The SDK silently drops elements it does not know, so check that every field the simulator
/// means to send arrives under the name the SDK reads.
#[tokio::test]
async fn the_sdk_reads_every_field_the_simulator_writes() {
    use aws_sdk_elasticache::types::{AutomaticFailoverStatus, ClusterMode as Mode};

    let t = spawn_sim().await;
    let client = aws_sdk_elasticache::Client::new(&config_for_endpoint(&t.sim.endpoint()));
    let all = client.describe_replication_groups().send().await.unwrap();
    let groups = all.replication_groups();
    assert_eq!(groups.len(), 2);

    let plain = &groups[0];
    assert_eq!(plain.replication_group_id(), Some("prod-jobs"));
    assert_eq!(plain.description(), Some("prod-jobs (simulated)"));
    assert_eq!(plain.snapshotting_cluster_id(), Some("prod-jobs-002"));
    assert_eq!(plain.cluster_enabled(), Some(false));
    assert_eq!(plain.cluster_mode(), Some(&Mode::Disabled));
    assert_eq!(
        plain.automatic_failover(),
        Some(&AutomaticFailoverStatus::Enabled)
    );
    assert!(plain.replication_group_create_time().is_some());
    assert!(
        plain
            .arn()
            .unwrap()
            .ends_with(":replicationgroup:prod-jobs")
    );
    let node_groups = plain.node_groups();
    assert_eq!(node_groups.len(), 1);
    assert_eq!(node_groups[0].node_group_id(), Some("0001"));
    assert!(
        node_groups[0]
            .primary_endpoint()
            .unwrap()
            .address()
            .is_some()
    );
    let roles: Vec<_> = node_groups[0]
        .node_group_members()
        .iter()
        .map(|m| (m.cache_cluster_id().unwrap(), m.current_role().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [("prod-jobs-001", "primary"), ("prod-jobs-002", "replica")]
    );

    let sharded = &groups[1];
    assert_eq!(sharded.cluster_enabled(), Some(true));
    assert_eq!(sharded.cluster_mode(), Some(&Mode::Enabled));
    assert!(sharded.configuration_endpoint().is_some());
    assert_eq!(sharded.node_groups().len(), 3);
    assert_eq!(sharded.node_groups()[2].slots(), Some("10922-16383"));
    assert_eq!(sharded.node_groups()[2].node_group_members().len(), 3);

    let clusters = client.describe_cache_clusters().send().await.unwrap();
    assert_eq!(clusters.cache_clusters().len(), 2 + 9);
    let c = &clusters.cache_clusters()[0];
    assert_eq!(c.engine(), Some("redis"));
    assert_eq!(c.num_cache_nodes(), Some(1));
    assert!(c.cache_cluster_create_time().is_some());

    let ups = client
        .list_allowed_node_type_modifications()
        .cache_cluster_id("prod-jobs-001")
        .send()
        .await
        .unwrap();
    assert!(!ups.scale_up_modifications().is_empty());
    // prod-jobs is on cache.r6g.large: the smaller current types, none of its own family.
    let downs = ups.scale_down_modifications();
    assert!(downs.iter().any(|t| t == "cache.t4g.small"), "{downs:?}");
    assert!(
        !downs.iter().any(|t| t.starts_with("cache.r6g.")),
        "{downs:?}"
    );
    let ours = t.aws.allowed_scale_downs(&id("prod-jobs")).await.unwrap();
    assert_eq!(ours.len(), downs.len());

    let name = snap("shape");
    t.aws
        .create_snapshot(&whole("sharded"), &name)
        .await
        .unwrap();
    snapshot_settles(&t, &name).await;
    let out = client
        .describe_snapshots()
        .replication_group_id("sharded")
        .send()
        .await
        .unwrap();
    let s = &out.snapshots()[0];
    assert_eq!(s.snapshot_source(), Some("manual"));
    assert_eq!(s.cache_node_type(), Some("cache.m6g.large"));
    assert_eq!(s.num_node_groups(), Some(3));
    let nodes = s.node_snapshots();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0].cache_cluster_id(), Some("sharded-0001-003"));
    assert_eq!(nodes[0].node_group_id(), Some("0001"));
    assert!(nodes[0].snapshot_create_time().is_some());
    t.sim.shutdown().await;
}

#[test]
fn the_sim_handle_can_be_shared_across_tasks() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<SimHandle>();
}

// ---- the preflight's reads ---------------------------------------------------------------

#[tokio::test]
async fn the_preflight_reads_pending_changes_parameters_snapshots_updates_and_auto_scaling() {
    use redis_autoscaler::elasticache::sim::SimReservedMemory;
    let t = spawn_with(|c| {
        c.groups[0] = SimGroup::new(id("prod-jobs"), nt("cache.r6g.large"))
            .pending_engine_version("7.2.4")
            .reserved_memory(SimReservedMemory::Bytes(1 << 30))
            .manual_snapshots_today(3)
            .service_update("elasticache-20261101-001", "scheduled")
            .service_update("elasticache-20250101-001", "complete")
            .autoscaling("elasticache:replication-group:Replicas");
    })
    .await;
    let member = t
        .aws
        .describe_cache_cluster(&CacheClusterId::parse("prod-jobs-001").unwrap())
        .await
        .unwrap();
    assert_eq!(member.pending.len(), 1);
    assert_eq!(member.pending[0].to_string(), "EngineVersion → 7.2.4");
    assert_eq!(member.parameter_group.as_deref(), Some("prod-jobs-params"));
    let params = t
        .aws
        .cache_parameters(
            "prod-jobs-params",
            &["reserved-memory", "reserved-memory-percent"],
        )
        .await
        .unwrap();
    assert_eq!(
        params,
        [
            (
                "reserved-memory".to_string(),
                Some((1u64 << 30).to_string())
            ),
            ("reserved-memory-percent".to_string(), Some("0".to_string())),
        ]
    );
    let missing = t.aws.cache_parameters("nope", &["reserved-memory"]).await;
    assert!(
        matches!(missing, Err(AwsError::Other { ref code, .. }) if code == "CacheParameterGroupNotFound"),
        "{missing:?}"
    );
    let snaps = t.aws.manual_snapshots(&id("prod-jobs")).await.unwrap();
    assert_eq!(snaps.len(), 3);
    assert!(snaps.iter().all(|s| s.created.is_some()), "{snaps:?}");
    assert!(
        t.aws
            .manual_snapshots(&id("sharded"))
            .await
            .unwrap()
            .is_empty()
    );
    // Only updates that are still to come or under way.
    let updates = t
        .aws
        .update_actions_in_progress(&id("prod-jobs"))
        .await
        .unwrap();
    let updates: Vec<String> = updates.iter().map(|u| u.to_string()).collect();
    assert_eq!(
        updates,
        ["ServiceUpdate → elasticache-20261101-001 (scheduled)"]
    );
    assert_eq!(
        t.aws.scalable_dimensions(&id("prod-jobs")).await.unwrap(),
        ["elasticache:replication-group:Replicas"]
    );
    assert!(
        t.aws
            .scalable_dimensions(&id("sharded"))
            .await
            .unwrap()
            .is_empty()
    );
    let call = t
        .sim
        .calls()
        .into_iter()
        .find(|c| c.action == "DescribeScalableTargets")
        .unwrap();
    assert_eq!(call.param("ServiceNamespace"), Some("elasticache"));
    assert_eq!(
        call.param("ResourceIds"),
        Some(r#"["replication-group/prod-jobs"]"#)
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn a_denied_or_throttled_preflight_read_is_an_error_the_caller_can_sort() {
    let t = spawn_sim().await;
    t.sim.deny_action("DescribeCacheParameters");
    t.sim.deny_action("DescribeScalableTargets");
    let denied = t
        .aws
        .cache_parameters("default.redis7", &["reserved-memory"])
        .await;
    assert!(
        matches!(denied, Err(AwsError::Other { ref code, .. }) if code == "AccessDenied"),
        "{denied:?}"
    );
    let denied = t.aws.scalable_dimensions(&id("prod-jobs")).await;
    assert!(
        matches!(denied, Err(AwsError::Other { ref code, .. }) if code == "AccessDeniedException"),
        "{denied:?}"
    );
    t.sim.set_throttle_fraction(1.0).unwrap();
    let throttled = t.aws.update_actions_in_progress(&id("prod-jobs")).await;
    assert!(
        throttled.as_ref().is_err_and(AwsError::is_retryable),
        "{throttled:?}"
    );
    t.sim.set_faults(Default::default());
    let throttled = t.aws.scalable_dimensions(&id("prod-jobs")).await;
    assert!(
        throttled.as_ref().is_err_and(AwsError::is_retryable),
        "{throttled:?}"
    );
    assert_eq!(
        t.sim.attempts("DescribeScalableTargets"),
        2,
        "one request each, no SDK retries"
    );
    t.sim.shutdown().await;
}

#[tokio::test]
async fn aws_refuses_the_twenty_first_manual_snapshot_of_a_day() {
    let t = spawn_with(|c| {
        c.groups[0] =
            SimGroup::new(id("prod-jobs"), nt("cache.r6g.large")).manual_snapshots_today(19);
    })
    .await;
    t.aws
        .create_snapshot(&whole("prod-jobs"), &snap("twentieth"))
        .await
        .unwrap();
    let refused = t
        .aws
        .create_snapshot(&whole("sharded"), &snap("other-group"))
        .await;
    assert!(
        refused.is_ok(),
        "another group has its own limit: {refused:?}"
    );
    snapshot_settles(&t, &snap("twentieth")).await;
    let refused = t
        .aws
        .create_snapshot(&whole("prod-jobs"), &snap("twenty-first"))
        .await;
    assert!(
        matches!(refused, Err(AwsError::QuotaExceeded { .. })),
        "{refused:?}"
    );
    t.sim.shutdown().await;
}
