//! Preflight: what else a node-type change would touch or run into, read from AWS before the
//! plan is shown (and the pending changes again just before acting).
//!
//! `ModifyReplicationGroup(ApplyImmediately=true)` also applies every modification waiting for
//! the maintenance window (an engine upgrade, a parameter change waiting for a reboot), and a
//! service update may be under way; memory net of `reserved-memory-percent` is what the data
//! really gets; AWS allows 20 manual snapshots per node in 24 hours; a group without a replica
//! is snapshotted from its primary; a group under Application Auto Scaling should not have its
//! node type changed by hand. Each is a [`Check`]: a check that could not be read (permission,
//! throttling) is [`Check::Unknown`], never taken for "nothing to worry about".
//!
//! The readers here go through the [`ElastiCache`] port only (one AWS request per call), so the
//! run's AWS adapter and the dry run read the same things the same way.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::Timestamp;

use super::ports::{AwsError, ElastiCache, GroupInfo, SnapshotStatus};

/// AWS's limit on manual snapshots: 20 per node in any 24 hours.
pub const SNAPSHOTS_PER_NODE_PER_DAY: u32 = 20;

/// At most this many member clusters are described for their pending changes; a larger group's
/// pending changes are shown as unknown rather than guessed from a sample.
pub const MEMBERS_CHECKED: usize = 30;

/// The parameters that decide how much of a node's memory is reserved.
pub const RESERVED_MEMORY_PERCENT: &str = "reserved-memory-percent";
pub const RESERVED_MEMORY: &str = "reserved-memory";

/// One check's result: what AWS said, or why it couldn't be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check<T> {
    Known(T),
    Unknown(String),
}

impl<T> Check<T> {
    pub fn known(&self) -> Option<&T> {
        match self {
            Check::Known(t) => Some(t),
            Check::Unknown(_) => None,
        }
    }

    fn not_read() -> Check<T> {
        Check::Unknown("not checked".to_string())
    }
}

/// A modification that `ApplyImmediately=true` would apply along with the node type, or a
/// service update in progress on the group. `field` is AWS's name for it (`EngineVersion`,
/// `CacheParameterGroup`, `ServiceUpdate`, …), `value` what it becomes or its status.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PendingChange {
    pub field: String,
    pub value: String,
}

impl PendingChange {
    pub fn new(field: impl Into<String>, value: impl Into<String>) -> PendingChange {
        PendingChange {
            field: field.into(),
            value: value.into(),
        }
    }
}

impl fmt::Display for PendingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}", self.field, self.value)
    }
}

/// How the group's parameter group reserves memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservedMemory {
    /// `reserved-memory-percent` (the default way): scales with the node type.
    Percent {
        parameter_group: String,
        percent: f64,
    },
    /// `reserved-memory` in bytes: a fixed amount, which AWS says must be changed with the
    /// node type (else the larger node keeps the old reservation).
    Bytes { parameter_group: String, bytes: u64 },
}

impl ReservedMemory {
    /// The memory left for data out of `gib`.
    pub fn usable_gib(&self, gib: f64) -> f64 {
        match self {
            ReservedMemory::Percent { percent, .. } => gib * (1.0 - percent / 100.0),
            ReservedMemory::Bytes { bytes, .. } => {
                (gib - *bytes as f64 / (1u64 << 30) as f64).max(0.0)
            }
        }
    }
}

/// What AWS says about everything around the node-type change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preflight {
    pub pending: Check<Vec<PendingChange>>,
    pub reserved_memory: Check<ReservedMemory>,
    /// Manual snapshots of the group started in the last 24 hours.
    pub manual_snapshots_24h: Check<u32>,
    /// The group's dimensions registered with Application Auto Scaling (none: not registered).
    pub autoscaling: Check<Vec<String>>,
}

impl Default for Preflight {
    /// Nothing read: every check unknown.
    fn default() -> Preflight {
        Preflight {
            pending: Check::not_read(),
            reserved_memory: Check::not_read(),
            manual_snapshots_24h: Check::not_read(),
            autoscaling: Check::not_read(),
        }
    }
}

impl Preflight {
    /// Every check read, and nothing to worry about.
    pub fn clean() -> Preflight {
        Preflight {
            pending: Check::Known(Vec::new()),
            reserved_memory: Check::Known(ReservedMemory::Percent {
                parameter_group: "default.redis7".into(),
                percent: 25.0,
            }),
            manual_snapshots_24h: Check::Known(0),
            autoscaling: Check::Known(Vec::new()),
        }
    }

    /// Would approving also apply changes someone may not expect (or can't we tell)? Then an
    /// approval must say so explicitly.
    pub fn needs_acknowledgement(&self) -> bool {
        match &self.pending {
            Check::Known(changes) => !changes.is_empty(),
            Check::Unknown(_) => true,
        }
    }

    /// Would the snapshot be refused for AWS's daily limit?
    pub fn snapshot_limit_reached(&self) -> bool {
        matches!(self.manual_snapshots_24h, Check::Known(n) if n >= SNAPSHOTS_PER_NODE_PER_DAY)
    }
}

/// One AWS call a reader made, for the audit trail: the call and what it said.
pub type CallLine = (&'static str, String);

/// Each member's pending modified values (DescribeCacheClusters), and the members' cache
/// parameter group. A group with more than [`MEMBERS_CHECKED`] members is not checked member by
/// member (its first member still names the parameter group).
async fn read_members(
    api: &dyn ElastiCache,
    group: &GroupInfo,
    log: &mut Vec<CallLine>,
) -> (Result<Check<Vec<PendingChange>>, AwsError>, Option<String>) {
    let mut changes: BTreeSet<PendingChange> = group.pending.iter().cloned().collect();
    let mut parameter_group = None;
    let too_many = group.members.len() > MEMBERS_CHECKED;
    let members = if too_many {
        &group.members[..1]
    } else {
        &group.members[..]
    };
    for member in members {
        match api.describe_cache_cluster(member).await {
            Ok(c) => {
                log.push((
                    "DescribeCacheClusters",
                    format!("{member}: {} pending change(s)", c.pending.len()),
                ));
                changes.extend(c.pending);
                if parameter_group.is_none() {
                    parameter_group = c.parameter_group;
                }
            }
            Err(e) => {
                log.push(("DescribeCacheClusters", format!("{member}: error: {e}")));
                return (Err(e), parameter_group);
            }
        }
    }
    if too_many {
        let why = format!(
            "{} has {} nodes; the bot checks at most {MEMBERS_CHECKED} for pending changes",
            group.id,
            group.members.len()
        );
        return (
            Ok(Check::Unknown(with_read(why, &changes))),
            parameter_group,
        );
    }
    (
        Ok(Check::Known(changes.into_iter().collect())),
        parameter_group,
    )
}

/// Service updates scheduled or under way on the group (DescribeUpdateActions).
async fn read_updates(
    api: &dyn ElastiCache,
    group: &GroupInfo,
    log: &mut Vec<CallLine>,
) -> Result<Vec<PendingChange>, AwsError> {
    match api.update_actions_in_progress(&group.id).await {
        Ok(updates) => {
            log.push((
                "DescribeUpdateActions",
                format!("{} service update(s) scheduled or under way", updates.len()),
            ));
            Ok(updates)
        }
        Err(e) => {
            log.push(("DescribeUpdateActions", format!("error: {e}")));
            Err(e)
        }
    }
}

/// A reason a check is unknown, with what was read before it stopped (so a known change is
/// never hidden behind "unknown").
fn with_read<'a>(why: String, read: impl IntoIterator<Item = &'a PendingChange>) -> String {
    let read: Vec<String> = read.into_iter().map(|c| c.to_string()).collect();
    if read.is_empty() {
        why
    } else {
        format!("{why}; pending as far as read: {}", read.join(", "))
    }
}

/// The members' pending changes and the service updates, together.
fn combine(
    members: Result<Check<Vec<PendingChange>>, AwsError>,
    updates: Result<Vec<PendingChange>, AwsError>,
) -> Result<Check<Vec<PendingChange>>, AwsError> {
    match (members?, updates?) {
        (Check::Known(mut changes), updates) => {
            changes.extend(updates);
            changes.sort();
            changes.dedup();
            Ok(Check::Known(changes))
        }
        (Check::Unknown(why), updates) => Ok(Check::Unknown(with_read(why, &updates))),
    }
}

/// Read the group's pending changes: its own pending modified values (from the description the
/// caller has), each member's, and service updates under way. An error is handed back so the
/// caller can decide between retrying and "unknown".
pub async fn read_pending(
    api: &dyn ElastiCache,
    group: &GroupInfo,
    log: &mut Vec<CallLine>,
) -> Result<Check<Vec<PendingChange>>, AwsError> {
    let (members, _) = read_members(api, group, log).await;
    let members = members?;
    combine(Ok(members), read_updates(api, group, log).await)
}

/// Read every preflight check for `group` at `now`. A check that can't be read is
/// [`Check::Unknown`] with the reason, except that with `retry_pending` a transient failure to
/// read the pending changes (the check an approval depends on) is handed back, so the caller
/// can try again later rather than make people approve blind.
pub async fn read(
    api: &dyn ElastiCache,
    group: &GroupInfo,
    now: Timestamp,
    log: &mut Vec<CallLine>,
    retry_pending: bool,
) -> Result<Preflight, AwsError> {
    let (members, parameter_group) = read_members(api, group, log).await;
    // What was read before a call failed stays visible in the reason.
    let read_so_far: Vec<PendingChange> = match &members {
        Ok(Check::Known(changes)) => changes.clone(),
        _ => group.pending.clone(),
    };
    let pending = match combine(members, read_updates(api, group, log).await) {
        Ok(found) => found,
        Err(e) if retry_pending && e.is_retryable() => return Err(e),
        Err(e) => Check::Unknown(with_read(unreadable(&e), &read_so_far)),
    };
    let reserved_memory = match parameter_group {
        None => Check::Unknown("no member reported its cache parameter group".to_string()),
        Some(name) => read_reserved_memory(api, &name, log).await,
    };
    let manual_snapshots_24h = match api.manual_snapshots(&group.id).await {
        Ok(snapshots) => {
            let since = Timestamp::from_millis(
                now.as_millis() - Duration::from_secs(24 * 3600).as_millis() as i64,
            );
            // A snapshot still being taken has no creation time yet: it is today's.
            let n = snapshots
                .iter()
                .filter(|s| match s.created {
                    Some(t) => t >= since,
                    None => s.status == SnapshotStatus::Creating,
                })
                .count() as u32;
            log.push((
                "DescribeSnapshots",
                format!("{n} manual snapshot(s) of {} in the last 24 h", group.id),
            ));
            Check::Known(n)
        }
        Err(e) => {
            log.push(("DescribeSnapshots", format!("error: {e}")));
            Check::Unknown(unreadable(&e))
        }
    };
    let autoscaling = match api.scalable_dimensions(&group.id).await {
        Ok(dims) => {
            log.push((
                "DescribeScalableTargets",
                if dims.is_empty() {
                    "not registered with Application Auto Scaling".to_string()
                } else {
                    format!("registered: {}", dims.join(", "))
                },
            ));
            Check::Known(dims)
        }
        Err(e) => {
            log.push(("DescribeScalableTargets", format!("error: {e}")));
            Check::Unknown(unreadable(&e))
        }
    };
    Ok(Preflight {
        pending,
        reserved_memory,
        manual_snapshots_24h,
        autoscaling,
    })
}

async fn read_reserved_memory(
    api: &dyn ElastiCache,
    parameter_group: &str,
    log: &mut Vec<CallLine>,
) -> Check<ReservedMemory> {
    let params = match api
        .cache_parameters(parameter_group, &[RESERVED_MEMORY_PERCENT, RESERVED_MEMORY])
        .await
    {
        Ok(p) => p,
        Err(e) => {
            log.push(("DescribeCacheParameters", format!("error: {e}")));
            return Check::Unknown(unreadable(&e));
        }
    };
    let value = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    };
    let bytes = value(RESERVED_MEMORY).and_then(|v| v.trim().parse::<u64>().ok());
    let percent = value(RESERVED_MEMORY_PERCENT).and_then(|v| v.trim().parse::<f64>().ok());
    let found = match (bytes, percent) {
        (Some(bytes), _) if bytes > 0 => Check::Known(ReservedMemory::Bytes {
            parameter_group: parameter_group.to_string(),
            bytes,
        }),
        (_, Some(percent)) if (0.0..=100.0).contains(&percent) => {
            Check::Known(ReservedMemory::Percent {
                parameter_group: parameter_group.to_string(),
                percent,
            })
        }
        _ => Check::Unknown(format!(
            "{parameter_group} sets neither {RESERVED_MEMORY_PERCENT} nor {RESERVED_MEMORY} readably"
        )),
    };
    log.push((
        "DescribeCacheParameters",
        match &found {
            Check::Known(ReservedMemory::Percent { percent, .. }) => {
                format!("{parameter_group}: {RESERVED_MEMORY_PERCENT}={percent}")
            }
            Check::Known(ReservedMemory::Bytes { bytes, .. }) => {
                format!("{parameter_group}: {RESERVED_MEMORY}={bytes}")
            }
            Check::Unknown(why) => why.clone(),
        },
    ));
    found
}

/// Why a check is unknown, from the error that stopped it.
fn unreadable(e: &AwsError) -> String {
    match e {
        AwsError::Transient { code, .. } => format!("AWS answered {code}; not read this time"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_changes_or_not_knowing_need_an_acknowledgement() {
        let mut p = Preflight::clean();
        assert!(!p.needs_acknowledgement());
        p.pending = Check::Known(vec![PendingChange::new("EngineVersion", "7.2")]);
        assert!(p.needs_acknowledgement());
        p.pending = Check::Unknown("AccessDenied".into());
        assert!(p.needs_acknowledgement());
        assert!(Preflight::default().needs_acknowledgement());
        // The other checks warn; they don't gate the approval.
        let p = Preflight {
            autoscaling: Check::Unknown("x".into()),
            reserved_memory: Check::Unknown("x".into()),
            manual_snapshots_24h: Check::Unknown("x".into()),
            ..Preflight::clean()
        };
        assert!(!p.needs_acknowledgement());
    }

    #[test]
    fn usable_memory_is_net_of_the_reservation() {
        let pct = ReservedMemory::Percent {
            parameter_group: "g".into(),
            percent: 25.0,
        };
        assert!((pct.usable_gib(16.0) - 12.0).abs() < 1e-9);
        let bytes = ReservedMemory::Bytes {
            parameter_group: "g".into(),
            bytes: 2 << 30,
        };
        assert!((bytes.usable_gib(16.0) - 14.0).abs() < 1e-9);
        assert_eq!(bytes.usable_gib(1.0), 0.0);
    }

    #[test]
    fn the_daily_snapshot_limit_is_twenty() {
        let mut p = Preflight::clean();
        p.manual_snapshots_24h = Check::Known(19);
        assert!(!p.snapshot_limit_reached());
        p.manual_snapshots_24h = Check::Known(20);
        assert!(p.snapshot_limit_reached());
        p.manual_snapshots_24h = Check::Unknown("x".into());
        assert!(!p.snapshot_limit_reached());
    }

    #[test]
    fn a_preflight_keeps_its_shape_in_storage() {
        let p = Preflight {
            pending: Check::Known(vec![PendingChange::new("EngineVersion", "7.2")]),
            autoscaling: Check::Unknown("AccessDeniedException".into()),
            ..Preflight::clean()
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json["pending"],
            serde_json::json!({"known": [{"field": "EngineVersion", "value": "7.2"}]})
        );
        assert_eq!(
            json["autoscaling"],
            serde_json::json!({"unknown": "AccessDeniedException"})
        );
        assert_eq!(serde_json::from_value::<Preflight>(json).unwrap(), p);
    }
}
