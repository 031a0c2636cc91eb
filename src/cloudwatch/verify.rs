//! The [`Verify`] port over CloudWatch: the group's members (a fresh DescribeReplicationGroups:
//! the upsize may have replaced nodes) and their memory around the upsize.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::Timestamp;
use crate::workflow::ports::{
    AroundUpsize, Attempt, AwsError, BoxFuture, ElastiCache, MemoryError, MemoryQuery,
    MemorySeries, NodeSeries, Verify,
};

/// How far before the upsize a "before" reading is looked for.
const BEFORE: Duration = Duration::from_secs(30 * 60);

/// [`Verify`] with CloudWatch.
pub struct CloudWatchVerify {
    aws: Arc<dyn ElastiCache>,
    memory: Arc<dyn MemorySeries>,
}

impl CloudWatchVerify {
    pub fn new(aws: Arc<dyn ElastiCache>, memory: Arc<dyn MemorySeries>) -> CloudWatchVerify {
        CloudWatchVerify { aws, memory }
    }
}

impl From<MemoryError> for AwsError {
    fn from(e: MemoryError) -> AwsError {
        match e {
            MemoryError::Transient { code, message } => AwsError::Transient { code, message },
            MemoryError::Denied { code, message } | MemoryError::Other { code, message } => {
                AwsError::Other { code, message }
            }
        }
    }
}

/// The fullest node's last reading before `started`, and its highest since `ended`.
pub fn around(series: &[NodeSeries], started: Timestamp, ended: Timestamp) -> AroundUpsize {
    let max = |a: Option<f64>, b: f64| Some(a.map_or(b, |a| a.max(b)));
    let (mut before, mut after) = (None, None);
    for s in series {
        if let Some((_, v)) = s.points.iter().rev().find(|(t, _)| *t < started) {
            before = max(before, *v);
        }
        for (_, v) in s.points.iter().filter(|(t, _)| *t >= ended) {
            after = max(after, *v);
        }
    }
    AroundUpsize { before, after }
}

impl Verify for CloudWatchVerify {
    fn around_upsize<'a>(
        &'a self,
        at: &'a mut Attempt,
        started: Timestamp,
        ended: Timestamp,
    ) -> BoxFuture<'a, Result<AroundUpsize, AwsError>> {
        Box::pin(async move {
            let group = self.aws.describe_group(&at.run.group).await?;
            let from = Timestamp::from_millis(started.as_millis() - BEFORE.as_millis() as i64);
            let query = MemoryQuery::for_window(at.run.group.clone(), group.members, from, at.now);
            let series = match self.memory.memory_usage(&query).await {
                Ok(s) => s,
                Err(e) => {
                    at.log("aws", "GetMetricData", format!("error: {e}"));
                    return Err(e.into());
                }
            };
            let found = around(&series, started, ended);
            let pct = |p: Option<f64>| p.map_or("none".to_string(), |p| format!("{p:.1} %"));
            at.log(
                "aws",
                "GetMetricData",
                format!(
                    "{} node(s): before the upsize {}, since it ended {}",
                    series.len(),
                    pct(found.before),
                    pct(found.after)
                ),
            );
            Ok(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CacheClusterId;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_millis(s * 1000)
    }

    #[test]
    fn before_is_the_fullest_nodes_last_reading_and_after_its_highest_since_the_end() {
        let node = |n: &str, points: &[(i64, f64)]| NodeSeries {
            node: CacheClusterId::parse(n).unwrap(),
            points: points.iter().map(|(s, v)| (t(*s), *v)).collect(),
        };
        let series = [
            node(
                "g-001",
                &[(0, 80.0), (50, 93.0), (100, 95.0), (200, 51.0), (260, 55.0)],
            ),
            node("g-002", &[(0, 70.0), (90, 88.0), (210, 49.0)]),
        ];
        let a = around(&series, t(100), t(150));
        assert_eq!(
            a.before,
            Some(93.0),
            "the last reading before the start, fullest node"
        );
        assert_eq!(a.after, Some(55.0), "the highest since the end");
        assert_eq!(
            around(&[], t(1), t(2)),
            AroundUpsize {
                before: None,
                after: None
            }
        );
        let none_after = around(&series, t(100), t(300));
        assert_eq!(none_after.after, None);
    }
}
