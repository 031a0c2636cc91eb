//! The workflow's AWS effects over the [`ElastiCache`] verbs: each looks before it acts, so a
//! retry or a restart never does the work twice, and writes the calls it made to the audit
//! trail.
//!
//! - A snapshot that already exists is the run's own: its name is derived from the run id.
//! - A group already on the target is not asked again; one already `modifying` is the bot's own
//!   only if an earlier try may have asked for it and its nodes are moving to the bot's target
//!   (else it is busy with someone else's change).
//! - Whatever the run believes, the bot never asks for a type that is not a step up in the
//!   group's family from the type it is on right now.

use std::sync::Arc;

use crate::domain::{NodeType, SnapshotName};
use crate::workflow::policy::is_scale_up;
use crate::workflow::ports::{
    Attempt, Aws, AwsError, BoxFuture, ElastiCache, GroupInfo, GroupStatus, LookAgain, PlanFacts,
    SnapshotStatus,
};
use crate::workflow::preflight::{self, CallLine, Check};

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

impl ElastiCacheSteps {
    /// DescribeReplicationGroups and ListAllowedNodeTypeModifications for the run's group.
    async fn group_and_scale_ups(
        &self,
        at: &mut Attempt,
    ) -> Result<(GroupInfo, Vec<NodeType>), AwsError> {
        let id = at.run.group.clone();
        let call = "DescribeReplicationGroups";
        let g = logged(at, call, self.api.describe_group(&id).await)?;
        let detail = format!("{}: {} on {}", g.id, g.status, on(&g));
        at.log("aws", call, detail);
        let call = "ListAllowedNodeTypeModifications";
        let allowed = logged(at, call, self.api.allowed_scale_ups(&id).await)?;
        at.log("aws", call, format!("{} scale-up(s)", allowed.len()));
        Ok((g, allowed))
    }

    /// The node type a modifying group's nodes are moving to (a member's pending
    /// `CacheNodeType`, as AWS spells it), when AWS says. A failed look is logged and counts as
    /// not saying: the caller then decides as it did before it could tell.
    async fn moving_to(&self, at: &mut Attempt, g: &GroupInfo) -> Option<String> {
        let member = g.members.first()?;
        let call = "DescribeCacheClusters";
        let c = match self.api.describe_cache_cluster(member).await {
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

impl Aws for ElastiCacheSteps {
    fn fetch_plan<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<PlanFacts, AwsError>> {
        Box::pin(async move {
            let (group, allowed) = self.group_and_scale_ups(at).await?;
            let mut lines = Vec::new();
            // Throttled reads of the pending changes are tried again while the step's deadline
            // allows another try; the last try shows them as unknown instead.
            let retry = at.another_try_follows;
            let found = preflight::read(self.api.as_ref(), &group, at.now, &mut lines, retry).await;
            log_lines(at, lines);
            Ok(PlanFacts {
                preflight: found?,
                group,
                allowed,
            })
        })
    }

    fn look_again<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<LookAgain, AwsError>> {
        Box::pin(async move {
            let (group, allowed) = self.group_and_scale_ups(at).await?;
            let mut lines = Vec::new();
            let read = preflight::read_pending(self.api.as_ref(), &group, &mut lines).await;
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
            let refuse = match &g.node_type {
                Some(current) if !is_scale_up(current, target) => Some(format!(
                    "{} is on {current}: {target} is not a larger {} size, so the bot won't ask for it",
                    g.id,
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
                    code: "NotAScaleUp".into(),
                    message,
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
        let sim = sim::spawn(SimConfig {
            modify_duration: std::time::Duration::from_secs(60),
            ..SimConfig::with_groups([SimGroup::new(group(), nt("cache.r6g.large"))])
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
        let run = Run::new(
            RunId::parse("r-abcdefgh").unwrap(),
            group(),
            ChannelId::parse("C0123ABCD").unwrap(),
            Trigger::Command {
                user: crate::domain::SlackUserId::parse("U0ONCALL1").unwrap(),
                response_url: None,
            },
            None,
            Policy::default(),
            Timestamp::from_millis(0),
        );
        let clock = Arc::new(ManualClock::at(Timestamp::from_millis(0)));
        Attempt::new(run, 1, number, maybe_done_before, clock)
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
}
