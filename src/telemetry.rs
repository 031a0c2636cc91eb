//! Metrics and the HTTP request span: what the bot is doing, for `/metrics` and the logs.
//!
//! Metrics go through the `metrics` facade into a Prometheus recorder installed once per
//! process ([`prometheus`]); the code that does the work records with the helpers here, so
//! names and labels live in one place. No secret is ever a label or a field.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

/// The process's Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            900.0, 1800.0, 3600.0, 7200.0,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .expect("bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness); ours still renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub fn run_started(trigger: &'static str) {
    counter!("redis_autoscaler_runs_started_total", "trigger" => trigger).increment(1);
}

pub fn run_finished(outcome: &'static str) {
    counter!("redis_autoscaler_runs_finished_total", "outcome" => outcome).increment(1);
}

pub fn step_finished(step: &'static str, status: &'static str, took: Duration) {
    histogram!("redis_autoscaler_step_duration_seconds", "step" => step, "status" => status)
        .record(took.as_secs_f64());
}

pub fn aws_call(operation: &'static str, outcome: String, took: Duration) {
    counter!("redis_autoscaler_aws_calls_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    histogram!("redis_autoscaler_aws_call_duration_seconds", "operation" => operation)
        .record(took.as_secs_f64());
}

pub fn slack_delivery(method: String, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    counter!("redis_autoscaler_slack_deliveries_total", "method" => method, "outcome" => outcome)
        .increment(1);
}

pub fn pagerduty_delivery(action: String, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    counter!("redis_autoscaler_pagerduty_deliveries_total", "action" => action, "outcome" => outcome)
        .increment(1);
}

pub fn hook_call(phase: &'static str, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    counter!("redis_autoscaler_hook_calls_total", "phase" => phase, "outcome" => outcome)
        .increment(1);
}

pub fn alarm(outcome: &'static str) {
    counter!("redis_autoscaler_alarms_total", "outcome" => outcome).increment(1);
}

pub fn pending_effects(n: u64) {
    gauge!("redis_autoscaler_pending_effects").set(n as f64);
}

/// Middleware: one span per request (method and route), and request count and latency by
/// route and status. The route is the matched pattern, never the raw path.
pub async fn http_layer(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let span = tracing::info_span!("request", method = %method, route = %route);
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16().to_string();
    let took = started.elapsed();
    span.in_scope(
        || tracing::debug!(status = %status, took_ms = took.as_millis() as u64, "answered"),
    );
    counter!("redis_autoscaler_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    histogram!("redis_autoscaler_http_request_duration_seconds", "route" => route)
        .record(took.as_secs_f64());
    response
}

/// The workflow's [`Metrics`](crate::workflow::ports::Metrics) port, into the Prometheus
/// recorder.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prometheus;

impl crate::workflow::ports::Metrics for Prometheus {
    fn run_started(&self, trigger: &'static str) {
        run_started(trigger);
    }

    fn run_finished(&self, outcome: &'static str) {
        run_finished(outcome);
    }

    fn step_finished(&self, step: &'static str, status: &'static str, took: Duration) {
        step_finished(step, status, took);
    }

    fn alarm(&self, outcome: &'static str) {
        alarm(outcome);
    }
}
