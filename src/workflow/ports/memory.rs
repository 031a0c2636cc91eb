//! The memory a group's nodes use, as series of points: the [`MemorySeries`] port (one
//! question: "how full was each of these nodes, period by period, over this window?") and its
//! vocabulary. The adapter over CloudWatch's `GetMetricData` is `cloudwatch::sdk`.
//!
//! It reports what CloudWatch says and decides nothing: whether memory is "still high", what
//! a missing graph means for a run, and how the series is drawn belong elsewhere.

use std::time::Duration;

use crate::domain::{CacheClusterId, ReplicationGroupId, Timestamp};

use super::BoxFuture;

/// The metric read: the share of `maxmemory` (after reserved memory) a node uses, in percent.
pub const MEMORY_METRIC: &str = "DatabaseMemoryUsagePercentage";
/// Where ElastiCache publishes it.
pub const NAMESPACE: &str = "AWS/ElastiCache";
/// The dimension that names one node.
pub const NODE_DIMENSION: &str = "CacheClusterId";

/// The shortest period asked for: ElastiCache publishes its metrics once a minute.
pub const MIN_PERIOD: Duration = Duration::from_secs(60);
/// [`MemoryQuery::for_window`] picks a period that gives at most this many points per node.
pub const MAX_POINTS_PER_NODE: u64 = 720;

/// The shortest whole-minute period that keeps a node's series over `window` within
/// [`MAX_POINTS_PER_NODE`] points.
pub fn period_for(window: Duration) -> Duration {
    let minutes = window.as_secs().div_ceil(MAX_POINTS_PER_NODE * 60).max(1);
    Duration::from_secs(minutes * 60)
}

/// What to read: the nodes of one group over `[start, end)`, one point per `period`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryQuery {
    /// The group the nodes belong to (for messages).
    pub group: ReplicationGroupId,
    /// The nodes to read, in the order the answer lists them.
    pub nodes: Vec<CacheClusterId>,
    pub start: Timestamp,
    pub end: Timestamp,
    /// A whole number of minutes (CloudWatch's standard-resolution periods); the adapter
    /// rounds anything else up.
    pub period: Duration,
}

impl MemoryQuery {
    /// The nodes over `[start, end)` with the shortest whole-minute period that keeps each
    /// node's series within [`MAX_POINTS_PER_NODE`] points (60 s for a window up to 12 h).
    pub fn for_window(
        group: ReplicationGroupId,
        nodes: Vec<CacheClusterId>,
        start: Timestamp,
        end: Timestamp,
    ) -> MemoryQuery {
        MemoryQuery {
            group,
            nodes,
            start,
            end,
            period: period_for(end.since(start)),
        }
    }

    /// The period in whole seconds as CloudWatch takes it: a multiple of 60, at least 60.
    pub fn period_secs(&self) -> i32 {
        let secs = self.period.as_secs().max(MIN_PERIOD.as_secs());
        let rounded = secs.div_ceil(60).saturating_mul(60);
        i32::try_from(rounded).unwrap_or(i32::MAX / 60 * 60)
    }
}

/// One node's readings, oldest first. Empty when CloudWatch has no data for it in the window
/// (a node created since, a window in the future, a node id it does not know).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSeries {
    pub node: CacheClusterId,
    /// `(start of the period, percent)`, in time order, one per period at most.
    pub points: Vec<(Timestamp, f64)>,
}

impl NodeSeries {
    /// The highest reading, if any.
    pub fn peak(&self) -> Option<f64> {
        self.points.iter().map(|(_, v)| *v).reduce(f64::max)
    }

    /// The most recent reading, if any.
    pub fn latest(&self) -> Option<(Timestamp, f64)> {
        self.points.last().copied()
    }
}

/// `nodes`' readings over the last `over` until `now`, from a read that gives up after
/// `within` (a timeout is a transient failure): what the bot reads on the way to acting, where
/// a slow CloudWatch must mean "don't know", not a wait.
pub async fn recent(
    memory: &dyn MemorySeries,
    group: &ReplicationGroupId,
    nodes: Vec<CacheClusterId>,
    over: Duration,
    now: Timestamp,
    within: Duration,
) -> Result<Vec<NodeSeries>, MemoryError> {
    let from = Timestamp::from_millis(now.as_millis() - over.as_millis() as i64);
    let query = MemoryQuery::for_window(group.clone(), nodes, from, now);
    tokio::time::timeout(within, memory.memory_usage(&query))
        .await
        .unwrap_or_else(|_| {
            Err(MemoryError::Transient {
                code: "Timeout".into(),
                message: format!("no answer within {within:?}"),
            })
        })
}

/// Why the series could not be read, sorted by what the caller does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// The bot's role may not call `cloudwatch:GetMetricData` (or read this account's
    /// metrics): another try will not help; a person must change the policy.
    #[error("no permission to read CloudWatch metrics ({code}): {message}")]
    Denied { code: String, message: String },
    /// Throttled, a 5xx, a timeout or a network failure: worth another try later.
    #[error("CloudWatch did not answer this time ({code}): {message}")]
    Transient { code: String, message: String },
    /// Anything else (a bad request, an answer that makes no sense).
    #[error("CloudWatch refused the request ({code}): {message}")]
    Other { code: String, message: String },
}

impl MemoryError {
    /// Another try later may work.
    pub fn is_retryable(&self) -> bool {
        matches!(self, MemoryError::Transient { .. })
    }

    /// The AWS error code (or our own name for a failure that had none).
    pub fn code(&self) -> &str {
        match self {
            MemoryError::Denied { code, .. }
            | MemoryError::Transient { code, .. }
            | MemoryError::Other { code, .. } => code,
        }
    }

    /// Sort an AWS error code (and the HTTP status, when known) by what to do next.
    pub fn classify(code: &str, message: impl Into<String>, http_status: Option<u16>) -> Self {
        let (code, message) = (code.to_string(), message.into());
        match code.as_str() {
            "AccessDenied"
            | "AccessDeniedException"
            | "NotAuthorized"
            | "UnauthorizedOperation"
            | "AuthorizationError" => MemoryError::Denied { code, message },
            "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
            | "LimitExceeded"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "InternalFailure"
            | "InternalServiceFault"
            | "InternalServiceError"
            | "RequestTimeout"
            | "RequestTimeoutException" => MemoryError::Transient { code, message },
            _ => match http_status {
                Some(403) => MemoryError::Denied { code, message },
                Some(429) => MemoryError::Transient { code, message },
                Some(s) if s >= 500 => MemoryError::Transient { code, message },
                _ => MemoryError::Other { code, message },
            },
        }
    }
}

/// The port: a group's memory series. One call may make several requests (pages); it
/// answers with every page or an error, never a part.
pub trait MemorySeries: Send + Sync {
    /// [`MEMORY_METRIC`] (the `Maximum` of each period) for each of `query.nodes`, in that
    /// order, each series in time order.
    fn memory_usage<'a>(
        &'a self,
        query: &'a MemoryQuery,
    ) -> BoxFuture<'a, Result<Vec<NodeSeries>, MemoryError>>;
}

/// The fullest node's memory just before an upsize and since it ended, in percent (`None`:
/// CloudWatch had no reading there).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AroundUpsize {
    pub before: Option<f64>,
    pub after: Option<f64>,
}

/// A run's verification step: did the upsize bring memory down?
pub trait Verify: Send + Sync {
    /// The group's nodes' memory: the last reading before `started` and the highest since
    /// `ended`. Throttling and 5xx are [`AwsError::Transient`] (tried again); no permission
    /// or anything else is final, and the run ends without the answer.
    fn around_upsize<'a>(
        &'a self,
        at: &'a mut super::Attempt,
        started: Timestamp,
        ended: Timestamp,
    ) -> BoxFuture<'a, Result<AroundUpsize, super::AwsError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(window: Duration) -> MemoryQuery {
        let start = Timestamp::from_millis(1_700_000_000_000);
        MemoryQuery::for_window(
            ReplicationGroupId::parse("g").unwrap(),
            Vec::new(),
            start,
            start.plus(window),
        )
    }

    #[test]
    fn a_window_up_to_twelve_hours_is_read_by_the_minute_and_longer_ones_coarser() {
        assert_eq!(query(Duration::from_secs(3 * 3600)).period_secs(), 60);
        assert_eq!(query(Duration::from_secs(12 * 3600)).period_secs(), 60);
        assert_eq!(query(Duration::from_secs(12 * 3600 + 1)).period_secs(), 120);
        assert_eq!(query(Duration::from_secs(7 * 86_400)).period_secs(), 840);
        assert_eq!(query(Duration::ZERO).period_secs(), 60);
    }

    #[test]
    fn a_period_is_rounded_up_to_whole_minutes() {
        let mut q = query(Duration::from_secs(3600));
        q.period = Duration::from_secs(90);
        assert_eq!(q.period_secs(), 120);
        q.period = Duration::from_secs(5);
        assert_eq!(q.period_secs(), 60);
    }

    #[test]
    fn errors_are_sorted_by_what_the_caller_does_next() {
        let kind = |code: &str, status| match MemoryError::classify(code, "m", status) {
            MemoryError::Denied { .. } => "denied",
            MemoryError::Transient { .. } => "transient",
            MemoryError::Other { .. } => "other",
        };
        assert_eq!(kind("AccessDenied", Some(403)), "denied");
        assert_eq!(kind("AccessDeniedException", None), "denied");
        assert_eq!(kind("SomethingNew", Some(403)), "denied");
        assert_eq!(kind("Throttling", Some(400)), "transient");
        assert_eq!(kind("ThrottlingException", None), "transient");
        assert_eq!(kind("SomethingNew", Some(503)), "transient");
        assert_eq!(kind("InvalidParameterValue", Some(400)), "other");
        assert_eq!(kind("InvalidNextToken", None), "other");
        assert!(MemoryError::classify("Throttling", "m", None).is_retryable());
        assert!(!MemoryError::classify("AccessDenied", "m", None).is_retryable());
    }

    #[test]
    fn a_series_knows_its_peak_and_latest_reading() {
        let node = CacheClusterId::parse("g-001").unwrap();
        let t = |s: i64| Timestamp::from_millis(s * 1000);
        let s = NodeSeries {
            node: node.clone(),
            points: vec![(t(0), 50.0), (t(60), 93.5), (t(120), 51.0)],
        };
        assert_eq!(s.peak(), Some(93.5));
        assert_eq!(s.latest(), Some((t(120), 51.0)));
        let empty = NodeSeries {
            node,
            points: Vec::new(),
        };
        assert_eq!(empty.peak(), None);
        assert_eq!(empty.latest(), None);
    }
}
