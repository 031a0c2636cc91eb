//! Metrics and the HTTP request span: what the bot is doing, for `/metrics` and the logs.
//!
//! Metrics go through the `metrics` facade into a Prometheus recorder installed once per
//! process ([`prometheus`]); the code that does the work records with the helpers here, so
//! names and labels live in one place. No secret is ever a label or a field.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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

/// One SQS message's fate: `received`, `deleted` (its outcome committed, then deleted),
/// `failed` (handling or deleting it failed: it comes back after the visibility timeout) or
/// `poison` (not an alarm: left for the queue's dead-letter redrive).
pub fn sqs_message(outcome: &'static str) {
    counter!("redis_autoscaler_sqs_messages_total", "outcome" => outcome).increment(1);
}

/// A ReceiveMessage that failed (throttled, refused, unreachable): polling pauses, then goes on.
pub fn sqs_receive_failed() {
    counter!("redis_autoscaler_sqs_receive_errors_total").increment(1);
}

pub fn pending_effects(n: u64) {
    gauge!("redis_autoscaler_pending_effects").set(n as f64);
}

/// A request's span: its method and route (a label from a fixed set, never the raw path), so
/// that at debug every line logged while it is answered says which request it belongs to.
///
/// A debug span: at info it is not made at all. Made, it cost 6k of a signed command's ack's
/// ~75k instructions (callgrind: the log layer formats its fields into a string of its own, a
/// slab slot, entering and leaving at every poll). So the lines a request logs at info that
/// would be ambiguous without it say where they came from themselves: `via` (the Slack and
/// alarm lines), `path` (refusals), `at` (an internal error: the place in the code).
pub fn request_span(method: &axum::http::Method, route: &'static str) -> tracing::Span {
    tracing::debug_span!("request", method = %method, route = route)
}

/// A request was answered: a debug line in its span, and its count and latency by route and
/// status.
pub fn request_answered(
    span: &tracing::Span,
    route: &'static str,
    status: axum::http::StatusCode,
    took: Duration,
) {
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            took_ms = took.as_millis() as u64,
            "answered"
        )
    });
    let (count, latency) = request_metrics(route, status);
    count.increment(1);
    latency.record(took.as_secs_f64());
}

/// The request counter and latency histogram for a route and status, registered on first use
/// and kept: looking them up in the recorder on every request (a key built and hashed, a lock
/// taken) was a few per cent of a fast request's CPU. Routes and statuses are few.
fn request_metrics(
    route: &'static str,
    status: axum::http::StatusCode,
) -> (metrics::Counter, metrics::Histogram) {
    type Handles = HashMap<(&'static str, u16), (metrics::Counter, metrics::Histogram)>;
    static HANDLES: OnceLock<RwLock<Handles>> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        // Handles taken before the recorder is installed would count nowhere, for good.
        prometheus();
        RwLock::default()
    });
    let key = (route, status.as_u16());
    if let Some(found) = handles.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return found.clone();
    }
    let made = (
        counter!("redis_autoscaler_http_requests_total", "route" => route, "status" => status_label(status)),
        histogram!("redis_autoscaler_http_request_duration_seconds", "route" => route),
    );
    handles
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, made.clone());
    made
}

/// A status as a label, without an allocation for the ones the bot answers.
fn status_label(status: axum::http::StatusCode) -> metrics::SharedString {
    match status.as_u16() {
        200 => "200".into(),
        400 => "400".into(),
        401 => "401".into(),
        404 => "404".into(),
        405 => "405".into(),
        408 => "408".into(),
        413 => "413".into(),
        429 => "429".into(),
        500 => "500".into(),
        503 => "503".into(),
        other => other.to_string().into(),
    }
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

    fn watch(&self, watch: &'static str, result: &'static str) {
        counter!("redis_autoscaler_watch_checks_total", "watch" => watch, "result" => result)
            .increment(1);
    }
}

/// Log output where every record is exactly one line: control characters inside a record
/// (a newline or CR from a request that would forge a second record, an ESC that would drive
/// the reader's terminal) are written as `\n`, `\r`, `\x1b`. Wraps the real writer; the fmt
/// layer writes each record with one `write_all`, so only the record's own final newline is
/// kept. JSON output is escaped by serde already; this keeps the text format as safe.
#[derive(Clone)]
pub struct OneLinePerRecord<M>(pub M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for OneLinePerRecord<M>
{
    type Writer = Escaping<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping(self.0.make_writer())
    }
}

/// See [`OneLinePerRecord`].
pub struct Escaping<W>(W);

impl<W: std::io::Write> std::io::Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        if !body.iter().any(|&b| needs_escape(b)) {
            return self.0.write_all(buf);
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b if needs_escape(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                b => out.push(b),
            }
        }
        out.extend_from_slice(end);
        self.0.write_all(&out)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// C0 controls but tab, and DEL. (C1 controls are multi-byte in UTF-8 and not read as
/// controls by terminals in UTF-8 mode; the text format has no other special bytes.)
fn needs_escape(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// How the process logs: text for a terminal, JSON for log pipelines, one record per line.
pub fn init_logs<W>(json: bool, filter: tracing_subscriber::EnvFilter, writer: W)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = subscriber(json, filter, writer).try_init();
}

fn subscriber<W>(
    json: bool,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(OneLinePerRecord(writer));
    match json {
        false => Box::new(builder.finish()),
        true => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .finish(),
        ),
    }
}

#[cfg(test)]
mod log_tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(json: bool, emit: impl FnOnce()) -> String {
        logged_with("info", json, emit)
    }

    fn logged_with(spec: &str, json: bool, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let make = move || out.clone();
        let filter = tracing_subscriber::EnvFilter::new(spec);
        tracing::subscriber::with_default(subscriber(json, filter, make), emit);
        String::from_utf8(buffer.0.lock().unwrap().clone()).expect("utf-8")
    }

    #[test]
    fn the_answered_line_is_in_its_requests_span_at_debug_and_absent_at_info() {
        let answer = || {
            let span = request_span(&axum::http::Method::POST, "/slack/commands");
            request_answered(
                &span,
                "/slack/commands",
                axum::http::StatusCode::OK,
                Duration::from_millis(3),
            );
        };
        let out = logged_with("debug", false, answer);
        assert!(
            out.contains("request{method=POST route=\"/slack/commands\"}"),
            "{out}"
        );
        assert!(out.contains("answered status=200 took_ms=3"), "{out}");
        let out = logged_with("debug", true, answer);
        let record: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        assert_eq!(record["span"]["route"], "/slack/commands", "{out}");
        assert_eq!(record["status"], 200, "{out}");
        assert_eq!(logged_with("info", false, answer), "");
    }

    /// What the issue saw: an SNS TopicArn with a newline forged a log record, and ANSI
    /// escapes in slash-command text reached the terminal raw.
    const TOPIC: &str = "arn:aws:sns:eu-west-1:1:t\n2026-12-01T00:00:00Z  INFO approved by @boss";
    const TEXT: &str = "status \x1b[31mred\x1b[0m\r\nthere";

    #[test]
    fn a_text_record_is_one_line_whatever_its_fields_hold() {
        let out = logged(false, || {
            tracing::warn!(topic = %TOPIC, "refused an SNS delivery");
            tracing::info!(text = TEXT, "slash command");
            tracing::info!("a message\nwith a newline");
            tracing::info!(text = %TEXT, "slash command, displayed");
        });
        assert_eq!(out.lines().count(), 4, "{out}");
        assert!(!out.contains('\x1b') && !out.contains('\r'), "{out:?}");
        assert!(
            out.contains(r"t\n2026-12-01T00:00:00Z  INFO approved"),
            "{out}"
        );
        // A `&str` field is Debug-formatted (already escaped); a Display one is escaped here.
        assert!(out.contains(r"\u{1b}[31mred\u{1b}[0m\r\nthere"), "{out}");
        assert!(out.contains(r"a message\nwith a newline"), "{out}");
        assert!(
            out.contains(r"text=status \x1b[31mred\x1b[0m\r\nthere"),
            "{out}"
        );
    }

    #[test]
    fn a_json_record_is_one_line_and_keeps_the_text() {
        let out = logged(true, || {
            tracing::warn!(topic = %TOPIC, "refused an SNS delivery");
            tracing::info!(text = TEXT, "slash command");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(!out.contains('\x1b') && !out.contains('\r'), "{out:?}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(first["topic"], TOPIC);
        let second: serde_json::Value = serde_json::from_str(lines[1]).expect("json");
        assert_eq!(second["text"], TEXT);
    }

    #[test]
    fn plain_records_are_written_as_they_are() {
        let mut out = Vec::new();
        let mut w = Escaping(&mut out);
        std::io::Write::write_all(&mut w, b"plain\ttabbed record\n").unwrap();
        std::io::Write::write_all(&mut w, b"bell\x07 del\x7f\n").unwrap();
        assert_eq!(out, b"plain\ttabbed record\nbell\\x07 del\\x7f\n");
    }
}
