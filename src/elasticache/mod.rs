//! ElastiCache: the adapter behind the workflow's [`ElastiCache`] port.
//!
//! - [`sdk`] is the production implementation over `aws-sdk-elasticache`.
//! - [`steps`] turns a run's AWS effects into calls (looking before acting), with their audit
//!   lines.
//! - [`Metered`] counts and times every call for `/metrics`, and tries a throttled read again
//!   at once (twice, within about a quarter of a second) before it reports the throttling.
//! - [`sim`] is a simulator that speaks the ElastiCache Query protocol over HTTP, so tests and
//!   the demo exercise the real SDK client end to end.
//!
//! The verbs and their errors are the workflow's vocabulary ([`crate::workflow::ports`]); this
//! module reports what AWS says and decides nothing about a run.

pub mod sdk;
pub mod sim;
pub mod steps;

use std::future::Future;

use crate::domain::{CacheClusterId, NodeType, ReplicationGroupId, SnapshotName};
use crate::workflow::ports::elasticache::{GroupNodes, SnapshotFrom};
use crate::workflow::ports::{
    AwsError, BoxFuture, CacheClusterInfo, ElastiCache, GroupInfo, Parameters, SnapshotInfo,
};
use crate::workflow::preflight::PendingChange;

/// Any [`ElastiCache`], with every call counted and timed by operation and outcome. A read
/// answered with a transient error (throttling, a 5xx, a timeout) is tried again twice after
/// short jittered waits: a run's checks make several reads, and under heavy throttling the
/// chance that all of them pass in one try of the step is small. Writes are never retried
/// here; the runner's persisted schedule decides about those (and about reads that keep
/// failing).
pub struct Metered(pub std::sync::Arc<dyn ElastiCache>);

/// Tries of one read, the first included.
const READ_TRIES: u32 = 3;

async fn read<T, F>(operation: &'static str, call: impl Fn() -> F) -> Result<T, AwsError>
where
    F: Future<Output = Result<T, AwsError>>,
{
    let mut wait = std::time::Duration::from_millis(50);
    for _ in 1..READ_TRIES {
        match metered(operation, call()).await {
            Err(AwsError::Transient { .. }) => {
                tokio::time::sleep(crate::workflow::policy::jittered(wait)).await;
                wait *= 4;
            }
            done => return done,
        }
    }
    metered(operation, call()).await
}

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
        Box::pin(read("DescribeReplicationGroups", || {
            self.0.describe_group(id)
        }))
    }

    fn describe_cache_cluster<'a>(
        &'a self,
        id: &'a CacheClusterId,
    ) -> BoxFuture<'a, Result<CacheClusterInfo, AwsError>> {
        Box::pin(read("DescribeCacheClusters", || {
            self.0.describe_cache_cluster(id)
        }))
    }

    fn allowed_scale_ups<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<NodeType>, AwsError>> {
        Box::pin(read("ListAllowedNodeTypeModifications", || {
            self.0.allowed_scale_ups(id)
        }))
    }

    fn allowed_scale_downs<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<NodeType>, AwsError>> {
        Box::pin(read("ListAllowedNodeTypeModifications", || {
            self.0.allowed_scale_downs(id)
        }))
    }

    fn describe_group_nodes<'a>(
        &'a self,
        id: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<GroupNodes, AwsError>> {
        Box::pin(read("DescribeReplicationGroups", || {
            self.0.describe_group_nodes(id)
        }))
    }

    fn create_snapshot<'a>(
        &'a self,
        from: &'a SnapshotFrom,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<SnapshotInfo, AwsError>> {
        Box::pin(metered(
            "CreateSnapshot",
            self.0.create_snapshot(from, name),
        ))
    }

    fn describe_snapshot<'a>(
        &'a self,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<Option<SnapshotInfo>, AwsError>> {
        Box::pin(read("DescribeSnapshots", || self.0.describe_snapshot(name)))
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

    fn cache_parameters<'a>(
        &'a self,
        parameter_group: &'a str,
        wanted: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Parameters, AwsError>> {
        Box::pin(read("DescribeCacheParameters", || {
            self.0.cache_parameters(parameter_group, wanted)
        }))
    }

    fn manual_snapshots<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<SnapshotInfo>, AwsError>> {
        Box::pin(read("DescribeSnapshots", || self.0.manual_snapshots(group)))
    }

    fn update_actions_in_progress<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<PendingChange>, AwsError>> {
        Box::pin(read("DescribeUpdateActions", || {
            self.0.update_actions_in_progress(group)
        }))
    }

    fn events_since<'a>(
        &'a self,
        since: crate::domain::Timestamp,
    ) -> BoxFuture<'a, Result<Vec<crate::workflow::ports::elasticache::AwsEvent>, AwsError>> {
        Box::pin(read("DescribeEvents", move || self.0.events_since(since)))
    }

    fn scalable_dimensions<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Vec<String>, AwsError>> {
        Box::pin(read("DescribeScalableTargets", || {
            self.0.scalable_dimensions(group)
        }))
    }
}
