//! The workflow's AWS effects over the [`ElastiCache`] verbs: each looks before it acts, so a
//! retry or a restart never does the work twice, and writes the calls it made to the audit
//! trail.
//!
//! - A snapshot that already exists is the run's own: its name is derived from the run id.
//! - A group already on the target is not asked again; one already `modifying` is the bot's own
//!   only if an earlier try may have asked for it (else it is busy with someone else's change).

use std::sync::Arc;

use crate::domain::{NodeType, SnapshotName};
use crate::workflow::ports::{
    Attempt, Aws, AwsError, BoxFuture, ElastiCache, GroupInfo, GroupStatus, SnapshotStatus,
};

/// [`Aws`] over any [`ElastiCache`].
pub struct ElastiCacheSteps {
    api: Arc<dyn ElastiCache>,
}

impl ElastiCacheSteps {
    pub fn new(api: Arc<dyn ElastiCache>) -> ElastiCacheSteps {
        ElastiCacheSteps { api }
    }
}

fn on(g: &GroupInfo) -> String {
    g.node_type
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_else(|| "?".into())
}

/// Log an AWS call's error and hand it on.
fn logged<T>(at: &mut Attempt, call: &str, r: Result<T, AwsError>) -> Result<T, AwsError> {
    if let Err(e) = &r {
        at.log("aws", call, format!("error: {e}"));
    }
    r
}

impl Aws for ElastiCacheSteps {
    fn fetch_plan<'a>(
        &'a self,
        at: &'a mut Attempt,
    ) -> BoxFuture<'a, Result<(GroupInfo, Vec<NodeType>), AwsError>> {
        Box::pin(async move {
            let id = at.run.group.clone();
            let g = logged(
                at,
                "DescribeReplicationGroups",
                self.api.describe_group(&id).await,
            )?;
            let detail = format!("{}: {} on {}", g.id, g.status, on(&g));
            at.log("aws", "DescribeReplicationGroups", detail);
            let call = "ListAllowedNodeTypeModifications";
            let allowed = logged(at, call, self.api.allowed_scale_ups(&id).await)?;
            at.log("aws", call, format!("{} scale-up(s)", allowed.len()));
            Ok((g, allowed))
        })
    }

    fn create_snapshot<'a>(
        &'a self,
        at: &'a mut Attempt,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<SnapshotStatus, AwsError>> {
        Box::pin(async move {
            let found = logged(
                at,
                "DescribeSnapshots",
                self.api.describe_snapshot(name).await,
            )?;
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
            let group = at.run.group.clone();
            match self.api.create_snapshot(&group, name).await {
                Ok(s) => {
                    at.log("aws", "CreateSnapshot", format!("{name}: {}", s.status));
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
            let found = logged(
                at,
                "DescribeSnapshots",
                self.api.describe_snapshot(name).await,
            )?;
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
            let id = at.run.group.clone();
            let g = logged(
                at,
                "DescribeReplicationGroups",
                self.api.describe_group(&id).await,
            )?;
            if g.node_type.as_ref() == Some(target) && g.is_available() {
                let detail = format!("already on {target}; no modification needed");
                at.log("aws", "DescribeReplicationGroups", detail);
                return Ok(g);
            }
            if g.status == GroupStatus::Modifying {
                if at.maybe_done_before {
                    // An earlier try may have asked: the modification is the bot's own.
                    let detail = "already modifying, as an earlier try asked; not asking again";
                    at.log("aws", "DescribeReplicationGroups", detail);
                    return Ok(g);
                }
                let message = "the group is already modifying, and the bot did not ask for it";
                at.log("aws", "DescribeReplicationGroups", message);
                return Err(AwsError::InvalidState {
                    code: "InvalidReplicationGroupState".into(),
                    message: message.into(),
                });
            }
            let detail = format!("{} on {}", g.status, on(&g));
            at.log("aws", "DescribeReplicationGroups", detail);
            let call = "ModifyReplicationGroup";
            let g = logged(at, call, self.api.modify_node_type(&id, target).await)?;
            let detail = format!(
                "CacheNodeType={target} ApplyImmediately=true → {}",
                g.status
            );
            at.log("aws", call, detail);
            Ok(g)
        })
    }

    fn poll_group<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        Box::pin(async move {
            let id = at.run.group.clone();
            let g = logged(
                at,
                "DescribeReplicationGroups",
                self.api.describe_group(&id).await,
            )?;
            let detail = format!("{} on {}", g.status, on(&g));
            at.log("aws", "DescribeReplicationGroups", detail);
            Ok(g)
        })
    }
}
