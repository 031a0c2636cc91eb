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
use crate::workflow::preflight::{self, CallLine, Check, PendingChange, Preflight};

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

    fn preflight<'a>(
        &'a self,
        at: &'a mut Attempt,
        group: &'a GroupInfo,
    ) -> BoxFuture<'a, Result<Preflight, AwsError>> {
        Box::pin(async move {
            let mut lines = Vec::new();
            // Throttled reads of the pending changes are tried again while the run's AWS
            // retries last; the last try shows them as unknown instead.
            let retry = at.number < at.run.policy.aws_retry.attempts;
            let found = preflight::read(self.api.as_ref(), group, at.now, &mut lines, retry).await;
            log_lines(at, lines);
            found
        })
    }

    fn pending_changes<'a>(
        &'a self,
        at: &'a mut Attempt,
        group: &'a GroupInfo,
    ) -> BoxFuture<'a, Result<Check<Vec<PendingChange>>, AwsError>> {
        Box::pin(async move {
            let mut lines = Vec::new();
            let read = preflight::read_pending(self.api.as_ref(), group, &mut lines).await;
            log_lines(at, lines);
            match read {
                Ok(pending) => Ok(pending),
                // Worth another try; the runner schedules it.
                Err(e) if e.is_retryable() => Err(e),
                Err(e) => Ok(Check::Unknown(e.to_string())),
            }
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
