//! The simulator's CloudWatch: `GetMetricData` for `AWS/ElastiCache`
//! `DatabaseMemoryUsagePercentage`, over the protocol `aws-sdk-cloudwatch` speaks.
//!
//! The protocol, as the SDK (1.140) builds it: Smithy RPC v2 CBOR — `POST
//! /service/GraniteServiceVersion20100801/operation/GetMetricData` with `smithy-protocol:
//! rpc-v2-cbor`, `Content-Type: application/cbor` and a CBOR map for a body; the answer is a
//! CBOR map too. CloudWatch is "awsQueryCompatible": an error is a CBOR map with `__type` and
//! `message`, plus an `x-amzn-query-error: Code;Sender` header whose code the SDK prefers (the
//! old Query codes: `Throttling`, `AccessDenied`, `InvalidParameterValue`, …).
//!
//! Bodies are read and written with ciborium. A timestamp is tag 1 around epoch seconds (the
//! SDK writes a float; the answers here hold whole seconds, which its decoder also takes); a
//! double may be written in ciborium's shortest form, 16-bit floats included (the SDK's
//! `aws-smithy-cbor` builds `minicbor` with its `half` feature).
//!
//! Each node's memory is a [`MemoryCurve`] a test (or the demo) sets through the
//! [`SimHandle`]; a node of a simulated group without one reads [`DEFAULT_MEMORY_PERCENT`],
//! and a node the simulator does not know has no data (as in CloudWatch). Faults: the world's
//! throttle fraction applies, and `GetMetricData` can be denied or throttled with
//! [`SimHandle::deny_action`] and [`SimHandle::throttle_action`], as every other action.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ciborium::Value;
use tokio::time::Instant;

use super::SimCall;
use super::server::SimHandle;
use crate::domain::{CacheClusterId, Timestamp};

/// The route the SDK posts CloudWatch operations to (axum's path syntax).
pub const ROUTE: &str = "/service/GraniteServiceVersion20100801/operation/{operation}";
/// The one operation served.
pub const GET_METRIC_DATA: &str = "GetMetricData";
/// The one metric served (other metrics have no data), and the dimension naming its node.
pub const NAMESPACE: &str = "AWS/ElastiCache";
pub const MEMORY_METRIC: &str = "DatabaseMemoryUsagePercentage";
pub const NODE_DIMENSION: &str = "CacheClusterId";
/// What a node of a simulated group reads when nobody set its curve.
pub const DEFAULT_MEMORY_PERCENT: f64 = 40.0;
/// CloudWatch's largest page: 100,800 data points.
pub const MAX_DATAPOINTS: usize = 100_800;
/// GetMetricData takes at most 500 queries.
const MAX_QUERIES: usize = 500;

/// One node's memory over time: a step function, "93 % until t, then 51 %".
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryCurve {
    initial: f64,
    /// `(from, percent)`, in time order.
    steps: Vec<(Timestamp, f64)>,
    /// The curve is the data's size as a share of the node type it was set on: once the
    /// group moves to a larger type, the readings fall by as much (93 % on a 13 GiB node is
    /// 46.5 % on a 26 GiB one), from the time the modification completed.
    follows_node_type: bool,
}

impl MemoryCurve {
    /// The same reading at every time.
    pub fn constant(percent: f64) -> MemoryCurve {
        MemoryCurve {
            initial: percent,
            steps: Vec::new(),
            follows_node_type: false,
        }
    }

    /// Readings fall (or rise) with the node's memory when the group's node type changes.
    pub fn following_upsizes(mut self) -> MemoryCurve {
        self.follows_node_type = true;
        self
    }

    /// From `from` on, the node reads `percent` (until a later step).
    pub fn then(mut self, from: Timestamp, percent: f64) -> MemoryCurve {
        let at = self.steps.partition_point(|(t, _)| *t <= from);
        self.steps.insert(at, (from, percent));
        self
    }

    /// The reading at `t`.
    pub fn at(&self, t: Timestamp) -> f64 {
        let i = self.steps.partition_point(|(s, _)| *s <= t);
        if i == 0 {
            self.initial
        } else {
            self.steps[i - 1].1
        }
    }

    /// The statistic over `[from, to)`: every value the curve takes in it, weighted by how
    /// long it holds for the average.
    fn stat(&self, stat: Stat, from: Timestamp, to: Timestamp) -> f64 {
        let mut pieces = vec![(from, self.at(from))];
        pieces.extend(
            self.steps
                .iter()
                .filter(|(t, _)| *t > from && *t < to)
                .copied(),
        );
        match stat {
            Stat::Maximum => pieces.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max),
            Stat::Minimum => pieces.iter().map(|(_, v)| *v).fold(f64::MAX, f64::min),
            Stat::Average => {
                let total = to.since(from).as_secs_f64();
                if total <= 0.0 {
                    return pieces[0].1;
                }
                let mut sum = 0.0;
                for (i, (t, v)) in pieces.iter().enumerate() {
                    let until = pieces.get(i + 1).map_or(to, |(n, _)| *n);
                    sum += v * until.since(*t).as_secs_f64();
                }
                sum / total
            }
        }
    }
}

/// The statistics served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stat {
    Maximum,
    Minimum,
    Average,
}

/// The simulated CloudWatch's state: the curves tests set, and how many points a page holds.
#[derive(Debug)]
pub(super) struct Metrics {
    curves: BTreeMap<String, MemoryCurve>,
    page_size: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            curves: BTreeMap::new(),
            page_size: MAX_DATAPOINTS,
        }
    }
}

/// One metric query of a request, as far as the simulator needs it.
#[derive(Debug, Clone, PartialEq)]
struct Query {
    id: String,
    /// The node, when the query is for the memory metric of one node.
    node: Option<String>,
    period_secs: i64,
    stat: Stat,
}

/// A parsed GetMetricData request.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    queries: Vec<Query>,
    start: Timestamp,
    end: Timestamp,
    ascending: bool,
    max_datapoints: Option<usize>,
    next_token: Option<String>,
}

/// An error answer: the HTTP status, the Query-compatible code, the message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CwError {
    status: u16,
    code: &'static str,
    message: String,
}

impl CwError {
    fn invalid(message: impl Into<String>) -> CwError {
        CwError {
            status: 400,
            code: "InvalidParameterValue",
            message: message.into(),
        }
    }

    fn missing(name: &str) -> CwError {
        CwError {
            status: 400,
            code: "MissingParameter",
            message: format!("The parameter {name} is required."),
        }
    }

    /// The `__type` of the CBOR body (the code the protocol itself would use).
    fn shape(&self) -> &'static str {
        match self.code {
            "Throttling" => "ThrottlingException",
            "AccessDenied" => "AccessDeniedException",
            "MissingParameter" => "com.amazonaws.cloudwatch#MissingRequiredParameterException",
            "InvalidParameterValue" => "com.amazonaws.cloudwatch#InvalidParameterValueException",
            "InvalidNextToken" => "com.amazonaws.cloudwatch#InvalidNextToken",
            other => other,
        }
    }
}

fn field<'v>(map: &'v [(Value, Value)], name: &str) -> Option<&'v Value> {
    map.iter()
        .find(|(k, _)| k.as_text() == Some(name))
        .map(|(_, v)| v)
}

fn text<'v>(map: &'v [(Value, Value)], name: &str) -> Option<&'v str> {
    field(map, name).and_then(Value::as_text)
}

fn integer(v: &Value) -> Option<i128> {
    v.as_integer().map(i128::from)
}

/// A timestamp as the SDK writes it: tag 1 around epoch seconds (a float, or an integer).
fn timestamp(v: &Value) -> Option<Timestamp> {
    let secs = match v {
        Value::Tag(1, inner) => inner.as_ref(),
        other => other,
    };
    let ms = match secs {
        Value::Float(f) if f.is_finite() => (f * 1000.0).round() as i64,
        Value::Integer(i) => i64::try_from(i128::from(*i)).ok()?.checked_mul(1000)?,
        _ => return None,
    };
    Some(Timestamp::from_millis(ms))
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && id.len() <= 255
}

impl Request {
    fn parse(body: &[u8]) -> Result<Request, CwError> {
        let value: Value = ciborium::from_reader(body).map_err(|e| CwError {
            status: 400,
            code: "SerializationException",
            message: format!("The request body is not CBOR: {e}"),
        })?;
        let map = value
            .as_map()
            .ok_or_else(|| CwError::invalid("The request body is not a CBOR map."))?;
        let raw = field(map, "MetricDataQueries")
            .and_then(Value::as_array)
            .ok_or_else(|| CwError::missing("MetricDataQueries"))?;
        if raw.is_empty() || raw.len() > MAX_QUERIES {
            return Err(CwError::invalid(format!(
                "The collection MetricDataQueries must contain between 1 and {MAX_QUERIES} items."
            )));
        }
        let mut seen = BTreeSet::new();
        let queries = raw
            .iter()
            .map(|q| {
                let q = q
                    .as_map()
                    .ok_or_else(|| CwError::invalid("A MetricDataQuery is not a map."))?;
                let query = Query::parse(q)?;
                if !seen.insert(query.id.clone()) {
                    return Err(CwError::invalid(format!(
                        "The value {} for field Id is used more than once.",
                        query.id
                    )));
                }
                Ok(query)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let start = field(map, "StartTime").ok_or_else(|| CwError::missing("StartTime"))?;
        let end = field(map, "EndTime").ok_or_else(|| CwError::missing("EndTime"))?;
        let (start, end) = match (timestamp(start), timestamp(end)) {
            (Some(s), Some(e)) => (s, e),
            _ => {
                return Err(CwError::invalid(
                    "StartTime and EndTime must be timestamps.",
                ));
            }
        };
        if start >= end {
            return Err(CwError::invalid(
                "The parameter StartTime must be less than the parameter EndTime.",
            ));
        }
        let ascending = match text(map, "ScanBy") {
            None | Some("TimestampDescending") => false,
            Some("TimestampAscending") => true,
            Some(other) => {
                return Err(CwError::invalid(format!(
                    "The value {other} for parameter ScanBy is not valid."
                )));
            }
        };
        let max_datapoints = match field(map, "MaxDatapoints").map(integer) {
            None => None,
            Some(Some(n)) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            Some(_) => {
                return Err(CwError::invalid(
                    "MaxDatapoints must be a positive integer.",
                ));
            }
        };
        Ok(Request {
            queries,
            start,
            end,
            ascending,
            max_datapoints,
            next_token: text(map, "NextToken").map(str::to_string),
        })
    }
}

impl Query {
    fn parse(q: &[(Value, Value)]) -> Result<Query, CwError> {
        let id = text(q, "Id").ok_or_else(|| CwError::missing("MetricDataQueries.member.Id"))?;
        if !valid_id(id) {
            return Err(CwError::invalid(format!(
                "The value {id} for parameter MetricDataQueries.member.Id is not valid: it must \
                 start with a lowercase letter and contain only letters, digits and underscores."
            )));
        }
        if field(q, "Expression").is_some() {
            return Err(CwError::invalid(
                "The simulator serves MetricStat queries only, not expressions.",
            ));
        }
        let stat = field(q, "MetricStat")
            .and_then(Value::as_map)
            .ok_or_else(|| CwError::missing("MetricDataQueries.member.MetricStat"))?;
        let period = field(stat, "Period")
            .and_then(integer)
            .ok_or_else(|| CwError::missing("MetricStat.Period"))?;
        let period_secs = i64::try_from(period).unwrap_or(0);
        let valid_period = match period_secs {
            1 | 5 | 10 | 30 => true,
            p => p >= 60 && p % 60 == 0,
        };
        if !valid_period {
            return Err(CwError::invalid(format!(
                "The parameter MetricStat.Period must be 1, 5, 10, 30 or a multiple of 60, not \
                 {period}."
            )));
        }
        let stat_name = text(stat, "Stat").ok_or_else(|| CwError::missing("MetricStat.Stat"))?;
        let stat_kind = match stat_name {
            "Maximum" => Stat::Maximum,
            "Minimum" => Stat::Minimum,
            "Average" => Stat::Average,
            other => {
                return Err(CwError::invalid(format!(
                    "The simulator serves the statistics Maximum, Minimum and Average, not {other}."
                )));
            }
        };
        let metric = field(stat, "Metric")
            .and_then(Value::as_map)
            .ok_or_else(|| CwError::missing("MetricStat.Metric"))?;
        let dimensions: Vec<(&str, &str)> = field(metric, "Dimensions")
            .and_then(Value::as_array)
            .map(|dims| {
                dims.iter()
                    .filter_map(Value::as_map)
                    .filter_map(|d| Some((text(d, "Name")?, text(d, "Value")?)))
                    .collect()
            })
            .unwrap_or_default();
        let is_memory = text(metric, "Namespace") == Some(NAMESPACE)
            && text(metric, "MetricName") == Some(MEMORY_METRIC);
        let node = match dimensions.as_slice() {
            [(name, value)] if is_memory && *name == NODE_DIMENSION => Some(value.to_string()),
            _ => None,
        };
        Ok(Query {
            id: id.to_string(),
            node,
            period_secs,
            stat: stat_kind,
        })
    }
}

impl Metrics {
    /// The curve `node` follows: the one set for it, the default for a node of a simulated
    /// group, none for a node nobody knows.
    fn curve(&self, node: &str, known: &impl Fn(&str) -> bool) -> Option<MemoryCurve> {
        match self.curves.get(node) {
            Some(c) => Some(c.clone()),
            None if known(node) => Some(MemoryCurve::constant(DEFAULT_MEMORY_PERCENT)),
            None => None,
        }
    }

    /// One query's points over the request's window: one per period that has begun by
    /// `now`, periods aligned to the epoch, in the order asked for.
    fn points(
        &self,
        q: &Query,
        req: &Request,
        now: Timestamp,
        known: &impl Fn(&str) -> bool,
        scale: &impl Fn(&str, Timestamp) -> f64,
    ) -> Vec<(i64, f64)> {
        let Some((node, curve)) = q
            .node
            .as_deref()
            .and_then(|n| Some((n, self.curve(n, known)?)))
        else {
            return Vec::new();
        };
        let period_ms = q.period_secs * 1000;
        let first = req.start.as_millis().div_euclid(period_ms)
            + i64::from(req.start.as_millis().rem_euclid(period_ms) != 0);
        let mut out = Vec::new();
        let mut t = first * period_ms;
        while t < req.end.as_millis() && t <= now.as_millis() {
            let from = Timestamp::from_millis(t);
            // The period in progress is summed up to now, as CloudWatch does.
            let to = Timestamp::from_millis(t + period_ms).min(now).max(from);
            let factor = if curve.follows_node_type {
                // The period's readings as the node type was when it began.
                scale(node, from)
            } else {
                1.0
            };
            out.push((t / 1000, curve.stat(q.stat, from, to) * factor));
            t += period_ms;
        }
        if !req.ascending {
            out.reverse();
        }
        out
    }

    /// The answer to a request, one page of it (`MaxDatapoints` or the simulator's page size,
    /// whichever is smaller, counted over all queries in the order they were asked).
    fn answer(
        &self,
        req: &Request,
        now: Timestamp,
        known: impl Fn(&str) -> bool,
        scale: impl Fn(&str, Timestamp) -> f64,
    ) -> Result<Value, CwError> {
        let all: Vec<Vec<(i64, f64)>> = req
            .queries
            .iter()
            .map(|q| self.points(q, req, now, &known, &scale))
            .collect();
        let total: usize = all.iter().map(Vec::len).sum();
        let offset = match &req.next_token {
            None => 0,
            Some(token) => token
                .strip_prefix("sim-page-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n > 0 && *n < total)
                .ok_or_else(|| CwError {
                    status: 400,
                    code: "InvalidNextToken",
                    message: "The service couldn't process your request because the NextToken is invalid.".into(),
                })?,
        };
        let size = req
            .max_datapoints
            .unwrap_or(MAX_DATAPOINTS)
            .min(self.page_size)
            .max(1);
        let end = (offset + size).min(total);
        let mut results = Vec::new();
        let mut before = 0;
        for (q, points) in req.queries.iter().zip(&all) {
            let (from, to) = (before, before + points.len());
            before = to;
            let here = (offset.max(from), end.min(to));
            let listed = here.0 < here.1 || (offset == 0 && points.is_empty());
            if !listed {
                continue;
            }
            let slice = if here.0 < here.1 {
                &points[here.0 - from..here.1 - from]
            } else {
                &[][..]
            };
            let status = if to > end { "PartialData" } else { "Complete" };
            results.push(Value::Map(vec![
                (Value::from("Id"), Value::from(q.id.as_str())),
                (Value::from("Label"), Value::from(MEMORY_METRIC)),
                (
                    Value::from("Timestamps"),
                    Value::Array(
                        slice
                            .iter()
                            .map(|(t, _)| Value::Tag(1, Box::new(Value::from(*t))))
                            .collect(),
                    ),
                ),
                (
                    Value::from("Values"),
                    Value::Array(slice.iter().map(|(_, v)| Value::Float(*v)).collect()),
                ),
                (Value::from("StatusCode"), Value::from(status)),
            ]));
        }
        let mut body = vec![
            (Value::from("MetricDataResults"), Value::Array(results)),
            (Value::from("Messages"), Value::Array(Vec::new())),
        ];
        if end < total {
            body.push((
                Value::from("NextToken"),
                Value::from(format!("sim-page-{end}")),
            ));
        }
        Ok(Value::Map(body))
    }
}

/// The CBOR answer with the protocol's headers.
fn cbor_response(
    status: u16,
    request_id: &str,
    body: &Value,
    query_error: Option<&str>,
) -> Response {
    let mut bytes = Vec::new();
    if let Err(e) = ciborium::into_writer(body, &mut bytes) {
        // Writing a `Value` into a Vec cannot fail; answer like a broken server if it does.
        tracing::warn!(error = %e, "the simulator could not write a CBOR answer");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CONTENT_TYPE, "application/cbor")],
        bytes,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    if let Some(v) = query_error.and_then(|e| HeaderValue::from_str(e).ok()) {
        headers.insert("x-amzn-query-error", v);
    }
    response
}

fn error_response(e: &CwError, request_id: &str) -> Response {
    let body = Value::Map(vec![
        (Value::from("__type"), Value::from(e.shape())),
        (Value::from("message"), Value::from(e.message.as_str())),
    ]);
    let sender = if e.status >= 500 {
        "Receiver"
    } else {
        "Sender"
    };
    cbor_response(
        e.status,
        request_id,
        &body,
        Some(&format!("{};{sender}", e.code)),
    )
}

/// `POST /service/GraniteServiceVersion20100801/operation/{operation}`.
pub(super) async fn serve(
    State(sim): State<SimHandle>,
    Path(operation): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rpc = headers.get("smithy-protocol").and_then(|v| v.to_str().ok()) == Some("rpc-v2-cbor");
    let signed = headers.contains_key(header::AUTHORIZATION);
    let now = Instant::now();
    let parsed = Request::parse(&body);
    let (result, request_id) = {
        let mut world = sim.world();
        let wall = world.wall(now);
        let result = if !rpc {
            Err(CwError::invalid(
                "The request lacks the header smithy-protocol: rpc-v2-cbor.",
            ))
        } else if !signed {
            Err(CwError {
                status: 403,
                code: "MissingAuthenticationToken",
                message: "Request is missing Authentication Token".into(),
            })
        } else if operation != GET_METRIC_DATA {
            Err(CwError {
                status: 404,
                code: "UnknownOperationException",
                message: format!("The operation {operation} is not served here."),
            })
        } else if world.throttles(GET_METRIC_DATA) {
            Err(CwError {
                status: 400,
                code: "Throttling",
                message: "Rate exceeded".into(),
            })
        } else if world.faults.denied_actions.contains(GET_METRIC_DATA) {
            Err(CwError {
                status: 403,
                code: "AccessDenied",
                message: format!(
                    "User: arn:aws:iam::{}:user/redis-autoscaler is not authorized to perform: \
                     cloudwatch:GetMetricData because no identity-based policy allows the \
                     cloudwatch:GetMetricData action",
                    world.account_id()
                ),
            })
        } else {
            parsed.clone().and_then(|req| {
                sim.metrics().answer(
                    &req,
                    wall,
                    |node| world.has_member(node),
                    |node, t| world.memory_scale(node, t),
                )
            })
        };
        let request_id = world.record_call(SimCall {
            at: std::time::Instant::now(),
            access_key: super::server::access_key(&headers),
            action: operation.clone(),
            params: call_params(parsed.as_ref().ok()),
            outcome: match &result {
                Ok(_) => "ok".to_string(),
                Err(e) => e.code.to_string(),
            },
        });
        (result, request_id)
    };
    if sim.log_calls() {
        match &result {
            Ok(_) => tracing::info!(request_id = %request_id, "{operation} → ok"),
            Err(e) => tracing::info!(
                request_id = %request_id,
                "{operation} → {} ({}): {}",
                e.code,
                e.status,
                e.message
            ),
        }
    }
    match result {
        Ok(body) => cbor_response(200, &request_id, &body, None),
        Err(e) => error_response(&e, &request_id),
    }
}

/// What the call log shows of a request: the window, the period, the nodes, the page.
fn call_params(req: Option<&Request>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(req) = req else { return out };
    out.insert("StartTime".into(), req.start.to_rfc3339());
    out.insert("EndTime".into(), req.end.to_rfc3339());
    let nodes: Vec<&str> = req
        .queries
        .iter()
        .filter_map(|q| q.node.as_deref())
        .collect();
    out.insert("Nodes".into(), nodes.join(","));
    if let Some(q) = req.queries.first() {
        out.insert("Period".into(), q.period_secs.to_string());
    }
    if let Some(t) = &req.next_token {
        out.insert("NextToken".into(), t.clone());
    }
    out
}

impl SimHandle {
    /// From now on `node` reads as `curve` says (replacing any curve it had).
    pub fn set_memory(&self, node: &CacheClusterId, curve: MemoryCurve) {
        self.metrics()
            .curves
            .insert(node.as_str().to_string(), curve);
    }

    /// GetMetricData pages hold at most `points` data points (counted over all queries), so
    /// tests can make the SDK follow `NextToken`.
    pub fn set_metric_page_size(&self, points: usize) {
        self.metrics().page_size = points.clamp(1, MAX_DATAPOINTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_040; // a whole minute

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    fn cbor(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    fn map(pairs: Vec<(&str, Value)>) -> Value {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    fn query(id: &str, node: &str, stat: &str) -> Value {
        map(vec![
            ("Id", Value::from(id)),
            (
                "MetricStat",
                map(vec![
                    (
                        "Metric",
                        map(vec![
                            ("Namespace", Value::from("AWS/ElastiCache")),
                            ("MetricName", Value::from("DatabaseMemoryUsagePercentage")),
                            (
                                "Dimensions",
                                Value::Array(vec![map(vec![
                                    ("Name", Value::from("CacheClusterId")),
                                    ("Value", Value::from(node)),
                                ])]),
                            ),
                        ]),
                    ),
                    ("Period", Value::from(60)),
                    ("Stat", Value::from(stat)),
                ]),
            ),
        ])
    }

    fn request(queries: Vec<Value>, start: i64, end: i64, extra: Vec<(&str, Value)>) -> Request {
        let mut pairs = vec![
            ("MetricDataQueries", Value::Array(queries)),
            (
                "StartTime",
                Value::Tag(1, Box::new(Value::Float(start as f64))),
            ),
            ("EndTime", Value::Tag(1, Box::new(Value::Float(end as f64)))),
        ];
        pairs.extend(extra);
        Request::parse(&cbor(&map(pairs))).unwrap()
    }

    fn series(answer: &Value, id: &str) -> (Vec<i64>, Vec<f64>, String) {
        let results = field(answer.as_map().unwrap(), "MetricDataResults")
            .and_then(Value::as_array)
            .unwrap();
        let r = results
            .iter()
            .filter_map(Value::as_map)
            .find(|r| text(r, "Id") == Some(id))
            .unwrap();
        let times = field(r, "Timestamps").and_then(Value::as_array).unwrap();
        let times = times
            .iter()
            .map(|t| timestamp(t).unwrap().as_secs())
            .collect();
        let values = field(r, "Values").and_then(Value::as_array).unwrap();
        let values = values.iter().map(|v| v.as_float().unwrap()).collect();
        (times, values, text(r, "StatusCode").unwrap().to_string())
    }

    #[test]
    fn a_curve_steps_at_the_times_it_was_given() {
        let c = MemoryCurve::constant(93.0).then(ts(T0 + 300), 51.0);
        assert_eq!(c.at(ts(T0)), 93.0);
        assert_eq!(c.at(ts(T0 + 299)), 93.0);
        assert_eq!(c.at(ts(T0 + 300)), 51.0);
        // A period that holds the step: its maximum is the high side, its minimum the low.
        let (from, to) = (ts(T0 + 240), ts(T0 + 360));
        assert_eq!(c.stat(Stat::Maximum, from, to), 93.0);
        assert_eq!(c.stat(Stat::Minimum, from, to), 51.0);
        assert_eq!(c.stat(Stat::Average, from, to), 72.0);
    }

    #[test]
    fn a_curve_that_follows_upsizes_falls_from_the_first_period_after_one() {
        let mut m = Metrics::default();
        m.curves.insert(
            "g-001".into(),
            MemoryCurve::constant(90.0).following_upsizes(),
        );
        m.curves.insert("g-002".into(), MemoryCurve::constant(90.0));
        let req = request(
            vec![
                query("m0", "g-001", "Maximum"),
                query("m1", "g-002", "Maximum"),
            ],
            T0,
            T0 + 300,
            vec![("ScanBy", Value::from("TimestampAscending"))],
        );
        let upsized = ts(T0 + 90);
        let scale = |_: &str, t: Timestamp| if t >= upsized { 0.5 } else { 1.0 };
        let answer = m.answer(&req, ts(T0 + 240), |_| true, scale).unwrap();
        assert_eq!(series(&answer, "m0").1, vec![90.0, 90.0, 45.0, 45.0, 45.0]);
        assert_eq!(
            series(&answer, "m1").1,
            vec![90.0; 5],
            "a curve set as is stays as set"
        );
    }

    #[test]
    fn a_period_starting_at_each_minute_of_the_window_is_answered_up_to_now() {
        let mut m = Metrics::default();
        m.curves.insert(
            "g-001".into(),
            MemoryCurve::constant(93.0).then(ts(T0 + 120), 51.0),
        );
        let req = request(
            vec![query("m0", "g-001", "Maximum")],
            T0 - 30,
            T0 + 600,
            vec![("ScanBy", Value::from("TimestampAscending"))],
        );
        let answer = m.answer(&req, ts(T0 + 240), |_| false, |_, _| 1.0).unwrap();
        let (times, values, status) = series(&answer, "m0");
        assert_eq!(times, vec![T0, T0 + 60, T0 + 120, T0 + 180, T0 + 240]);
        assert_eq!(values, vec![93.0, 93.0, 51.0, 51.0, 51.0]);
        assert_eq!(status, "Complete");
    }

    #[test]
    fn newest_first_unless_asked_and_unknown_nodes_have_no_data() {
        let m = Metrics::default();
        let req = request(
            vec![
                query("m0", "g-001", "Maximum"),
                query("m1", "nobody-001", "Maximum"),
            ],
            T0,
            T0 + 180,
            vec![],
        );
        let answer = m
            .answer(&req, ts(T0 + 3600), |n| n == "g-001", |_, _| 1.0)
            .unwrap();
        let (times, values, _) = series(&answer, "m0");
        assert_eq!(times, vec![T0 + 120, T0 + 60, T0]);
        assert_eq!(values, vec![DEFAULT_MEMORY_PERCENT; 3]);
        let (times, _, status) = series(&answer, "m1");
        assert!(times.is_empty());
        assert_eq!(status, "Complete");
    }

    #[test]
    fn pages_split_the_points_and_a_bad_token_is_refused() {
        let m = Metrics {
            page_size: 4,
            ..Metrics::default()
        };
        let queries = || {
            vec![
                query("m0", "a-001", "Maximum"),
                query("m1", "a-002", "Maximum"),
            ]
        };
        let asc = || ("ScanBy", Value::from("TimestampAscending"));
        let first = request(queries(), T0, T0 + 180, vec![asc()]);
        let known = |_: &str| true;
        let page1 = m.answer(&first, ts(T0 + 3600), known, |_, _| 1.0).unwrap();
        let (t0, _, s0) = series(&page1, "m0");
        let (t1, _, s1) = series(&page1, "m1");
        assert_eq!((t0.len(), s0.as_str()), (3, "Complete"));
        assert_eq!((t1.len(), s1.as_str()), (1, "PartialData"));
        let token = text(page1.as_map().unwrap(), "NextToken")
            .unwrap()
            .to_string();
        let second = request(
            queries(),
            T0,
            T0 + 180,
            vec![asc(), ("NextToken", Value::from(token))],
        );
        let page2 = m.answer(&second, ts(T0 + 3600), known, |_, _| 1.0).unwrap();
        let (t1, _, s1) = series(&page2, "m1");
        assert_eq!(t1, vec![T0 + 60, T0 + 120]);
        assert_eq!(s1, "Complete");
        assert!(text(page2.as_map().unwrap(), "NextToken").is_none());
        let bad = request(
            queries(),
            T0,
            T0 + 180,
            vec![("NextToken", Value::from("nope"))],
        );
        assert_eq!(
            m.answer(&bad, ts(T0 + 3600), known, |_, _| 1.0)
                .unwrap_err()
                .code,
            "InvalidNextToken"
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_cloudwatch_codes() {
        let parse = |v: Value| Request::parse(&cbor(&v)).map(|_| ()).unwrap_err().code;
        let window = |q: Vec<Value>, s: i64, e: i64| {
            map(vec![
                ("MetricDataQueries", Value::Array(q)),
                ("StartTime", Value::Tag(1, Box::new(Value::from(s)))),
                ("EndTime", Value::Tag(1, Box::new(Value::from(e)))),
            ])
        };
        assert_eq!(parse(map(vec![])), "MissingParameter");
        assert_eq!(parse(window(vec![], T0, T0 + 60)), "InvalidParameterValue");
        let q = || query("m0", "a-001", "Maximum");
        assert_eq!(
            parse(window(vec![q()], T0 + 60, T0)),
            "InvalidParameterValue"
        );
        assert_eq!(
            parse(window(vec![q(), q()], T0, T0 + 60)),
            "InvalidParameterValue"
        );
        assert_eq!(
            parse(window(vec![query("M0", "a-001", "Maximum")], T0, T0 + 60)),
            "InvalidParameterValue"
        );
        assert_eq!(
            parse(window(vec![query("m0", "a-001", "p99")], T0, T0 + 60)),
            "InvalidParameterValue"
        );
        assert_eq!(
            Request::parse(b"\xff\x00").unwrap_err().code,
            "SerializationException"
        );
    }
}
