//! The production [`MemorySeries`]: `aws-sdk-cloudwatch`'s `GetMetricData`.
//!
//! Owns building the request (one `MetricStat` query per node, ids `m0`, `m1`, …), following
//! `NextToken` pages, putting each page's values back with their node, and sorting SDK failures
//! into [`MemoryError`]. The client is made from the same `SdkConfig` as ElastiCache's, so the
//! standard chain (region, credentials, `AWS_ENDPOINT_URL_CLOUDWATCH`) and our HTTP client
//! apply; the SDK's own retries are off, as for every AWS call the bot makes.

use aws_config::SdkConfig;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::config::http::HttpResponse;
use aws_sdk_cloudwatch::config::retry::RetryConfig;
use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, Metric, MetricDataQuery, MetricDataResult, MetricStat, ScanBy, StatusCode,
};

use super::{
    MEMORY_METRIC, MemoryError, MemoryQuery, MemorySeries, NAMESPACE, NODE_DIMENSION, NodeSeries,
};
use crate::domain::Timestamp;
use crate::elasticache::sdk::{SdkFailure, sdk_failure};
use crate::workflow::ports::BoxFuture;

/// GetMetricData takes at most this many queries per request.
const MAX_QUERIES: usize = 500;
/// How many pages one request may take before we stop reading (a 3 h window of 60 s points
/// for 500 nodes fits in one page of CloudWatch's 100,800 data points).
const MAX_PAGES: usize = 20;
/// The statistic read: a period's worst minute is what fills a node up.
const STAT: &str = "Maximum";

/// [`MemorySeries`] over the AWS SDK.
///
/// The client is built on the first read: an idle bot (most of its life) doesn't carry it
/// (measured: idle RSS of the production build).
#[derive(Debug, Clone)]
pub struct SdkCloudWatch {
    config: SdkConfig,
    built: std::sync::Arc<std::sync::OnceLock<Client>>,
}

impl SdkCloudWatch {
    /// A client for `config` (the one `elasticache::sdk::load_aws_config` or
    /// `config_for_endpoint` made). SDK retries are off whatever `config` says.
    pub fn new(config: &SdkConfig) -> SdkCloudWatch {
        SdkCloudWatch {
            config: config.clone(),
            built: Default::default(),
        }
    }

    fn client(&self) -> &Client {
        self.built.get_or_init(|| {
            let conf = aws_sdk_cloudwatch::config::Builder::from(&self.config)
                .retry_config(RetryConfig::disabled())
                .build();
            Client::from_conf(conf)
        })
    }

    /// One GetMetricData conversation (every page) for at most [`MAX_QUERIES`] nodes.
    async fn read_chunk(
        &self,
        query: &MemoryQuery,
        first: usize,
        count: usize,
        out: &mut [Vec<(Timestamp, f64)>],
    ) -> Result<(), MemoryError> {
        let period = query.period_secs();
        let queries: Vec<MetricDataQuery> = query.nodes[first..first + count]
            .iter()
            .enumerate()
            .map(|(i, node)| {
                MetricDataQuery::builder()
                    .id(format!("m{i}"))
                    .metric_stat(
                        MetricStat::builder()
                            .metric(
                                Metric::builder()
                                    .namespace(NAMESPACE)
                                    .metric_name(MEMORY_METRIC)
                                    .dimensions(
                                        Dimension::builder()
                                            .name(NODE_DIMENSION)
                                            .value(node.as_str())
                                            .build(),
                                    )
                                    .build(),
                            )
                            .period(period)
                            .stat(STAT)
                            .build(),
                    )
                    .return_data(true)
                    .build()
            })
            .collect();
        let mut next: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .client()
                .get_metric_data()
                .set_metric_data_queries(Some(queries.clone()))
                .start_time(DateTime::from_millis(query.start.as_millis()))
                .end_time(DateTime::from_millis(query.end.as_millis()))
                .scan_by(ScanBy::TimestampAscending)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(from_sdk)?;
            absorb(page.metric_data_results(), &mut out[first..first + count])?;
            next = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() {
                return Ok(());
            }
        }
        Err(unexpected(format!(
            "GetMetricData for {} did not finish within {MAX_PAGES} pages; not reading further",
            query.group
        )))
    }
}

impl MemorySeries for SdkCloudWatch {
    fn memory_usage<'a>(
        &'a self,
        query: &'a MemoryQuery,
    ) -> BoxFuture<'a, Result<Vec<NodeSeries>, MemoryError>> {
        Box::pin(async move {
            if query.end <= query.start {
                return Err(MemoryError::Other {
                    code: "EmptyWindow".to_string(),
                    message: format!(
                        "the window {} – {} is empty",
                        query.start.to_rfc3339(),
                        query.end.to_rfc3339()
                    ),
                });
            }
            let mut points = vec![Vec::new(); query.nodes.len()];
            let mut first = 0;
            while first < query.nodes.len() {
                let count = (query.nodes.len() - first).min(MAX_QUERIES);
                self.read_chunk(query, first, count, &mut points).await?;
                first += count;
            }
            Ok(query
                .nodes
                .iter()
                .zip(points)
                .map(|(node, mut points)| {
                    // Ascending was asked for; a page boundary or a server that ignores ScanBy
                    // must not leave the chart's line doubling back.
                    points.sort_by_key(|(t, _)| *t);
                    points.dedup_by_key(|(t, _)| *t);
                    NodeSeries {
                        node: node.clone(),
                        points,
                    }
                })
                .collect())
        })
    }
}

/// Add one page's results to the series of the request's nodes (`out[i]` for query `m{i}`).
fn absorb(
    results: &[MetricDataResult],
    out: &mut [Vec<(Timestamp, f64)>],
) -> Result<(), MemoryError> {
    for result in results {
        let index = index_of(result, out.len())?;
        out[index].extend(points(result)?);
    }
    Ok(())
}

/// Which of this request's queries (`m{i}`) a result answers.
fn index_of(result: &MetricDataResult, count: usize) -> Result<usize, MemoryError> {
    let id = result.id().unwrap_or_default();
    id.strip_prefix('m')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n < count)
        .ok_or_else(|| {
            unexpected(format!(
                "GetMetricData answered for a query id `{id}` it was not asked"
            ))
        })
}

/// A result's points, or the error its status code stands for.
fn points(result: &MetricDataResult) -> Result<Vec<(Timestamp, f64)>, MemoryError> {
    match result.status_code() {
        Some(StatusCode::Forbidden) => {
            return Err(MemoryError::Denied {
                code: "Forbidden".to_string(),
                message: messages(result, "the metric is in an account the bot may not read"),
            });
        }
        Some(StatusCode::InternalError) => {
            return Err(MemoryError::Transient {
                code: "InternalError".to_string(),
                message: messages(result, "CloudWatch could not read the metric"),
            });
        }
        _ => {}
    }
    let (times, values) = (result.timestamps(), result.values());
    if times.len() != values.len() {
        return Err(unexpected(format!(
            "GetMetricData answered {} timestamps and {} values for one query",
            times.len(),
            values.len()
        )));
    }
    times
        .iter()
        .zip(values)
        .map(|(t, v)| {
            let ms = t
                .to_millis()
                .map_err(|e| unexpected(format!("a timestamp out of range: {e}")))?;
            Ok((Timestamp::from_millis(ms), *v))
        })
        .collect()
}

fn messages(result: &MetricDataResult, fallback: &str) -> String {
    let all: Vec<&str> = result.messages().iter().filter_map(|m| m.value()).collect();
    if all.is_empty() {
        fallback.to_string()
    } else {
        all.join("; ")
    }
}

fn unexpected(message: impl Into<String>) -> MemoryError {
    MemoryError::Other {
        code: "UnexpectedResponse".to_string(),
        message: message.into(),
    }
}

/// Sort an SDK failure by what the caller does next (the sorting every AWS call shares, in
/// CloudWatch's words).
fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> MemoryError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match sdk_failure(err) {
        SdkFailure::Answered {
            code,
            message,
            status,
        } => MemoryError::classify(&code, message, Some(status)),
        SdkFailure::Transient { code, message } => MemoryError::Transient { code, message },
        SdkFailure::Other { code, message } => MemoryError::Other { code, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, status: StatusCode, points: &[(i64, f64)]) -> MetricDataResult {
        let mut b = MetricDataResult::builder().id(id).status_code(status);
        for (t, v) in points {
            b = b.timestamps(DateTime::from_secs(*t)).values(*v);
        }
        b.build()
    }

    fn merge(
        pages: &[Vec<MetricDataResult>],
        count: usize,
    ) -> Result<Vec<Vec<(Timestamp, f64)>>, MemoryError> {
        let mut out = vec![Vec::new(); count];
        for page in pages {
            absorb(page, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn pages_are_put_back_together_by_query_id() {
        let pages = vec![
            vec![
                result("m1", StatusCode::Complete, &[(60, 40.0)]),
                result("m0", StatusCode::PartialData, &[(0, 90.0)]),
            ],
            vec![result("m0", StatusCode::Complete, &[(60, 93.0)])],
        ];
        let merged = merge(&pages, 3).unwrap();
        let t = |s: i64| Timestamp::from_millis(s * 1000);
        assert_eq!(merged[0], vec![(t(0), 90.0), (t(60), 93.0)]);
        assert_eq!(merged[1], vec![(t(60), 40.0)]);
        assert!(merged[2].is_empty());
    }

    #[test]
    fn a_result_for_a_query_not_asked_or_forbidden_is_an_error() {
        let stray = vec![vec![result("m7", StatusCode::Complete, &[])]];
        assert_eq!(merge(&stray, 2).unwrap_err().code(), "UnexpectedResponse");
        let odd = vec![vec![result("x0", StatusCode::Complete, &[])]];
        assert!(merge(&odd, 2).is_err());
        let forbidden = vec![vec![result("m0", StatusCode::Forbidden, &[])]];
        assert!(matches!(
            merge(&forbidden, 1),
            Err(MemoryError::Denied { .. })
        ));
        let internal = vec![vec![result("m0", StatusCode::InternalError, &[])]];
        assert!(merge(&internal, 1).unwrap_err().is_retryable());
    }
}
