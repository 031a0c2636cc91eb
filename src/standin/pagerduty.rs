//! A local stand-in for PagerDuty's Events API v2 (`POST /v2/enqueue`).
//!
//! It owns a real HTTP server on 127.0.0.1 (port 0) that checks each event the way PagerDuty
//! does (a 32-character alphanumeric routing key, a known `event_action`, a dedup key for
//! acknowledge and resolve, summary, source and severity for a trigger), answers 202 with
//! PagerDuty's success body or 400 with its error shape, records the events it accepted, and
//! can be told to fail. [`render_event`] prints an event on one line for the `demo` command.
//!
//! It must never be used by `serve`. It keeps no incidents: it records events, it does not
//! model alerts opening and closing.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::pagerduty::{DEDUP_KEY_MAX_CHARS, SUMMARY_MAX_CHARS};

/// Namespace for starting the stand-in.
pub struct FakePagerDuty;

impl FakePagerDuty {
    /// A routing key the stand-in accepts (any 32 letters or digits do, as with PagerDuty).
    pub const EXAMPLE_ROUTING_KEY: &'static str = "R0123456789ABCDEF0123456789ABCDE";

    /// Start a stand-in on 127.0.0.1. It stops when the last clone of the handle is dropped.
    pub async fn spawn() -> anyhow::Result<FakePagerDutyHandle> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(Inbox::default()),
        });
        let app = Router::new()
            .route("/v2/enqueue", post(enqueue))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "the PagerDuty stand-in stopped");
            }
        });
        Ok(FakePagerDutyHandle {
            shared,
            addr,
            _stop: Arc::new(stop),
        })
    }
}

/// A running stand-in: where it listens and what it accepted.
#[derive(Clone)]
pub struct FakePagerDutyHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Dropped with the last handle, which stops the server.
    _stop: Arc<oneshot::Sender<()>>,
}

impl fmt::Debug for FakePagerDutyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakePagerDutyHandle")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl FakePagerDutyHandle {
    /// The events endpoint, `http://127.0.0.1:PORT/v2/enqueue` (what `PAGERDUTY_EVENTS_URL`
    /// would be).
    pub fn url(&self) -> String {
        format!("http://{}/v2/enqueue", self.addr)
    }

    /// Every accepted event, as received (routing key included), in order.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().accepted.clone()
    }

    /// How many requests arrived, accepted or not.
    pub fn attempts(&self) -> usize {
        self.shared.lock().attempts
    }

    /// Answer the next `n` requests with HTTP `status` (429, 500, 400, …) without accepting them.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.shared
            .lock()
            .faults
            .extend(std::iter::repeat_n(status, n));
    }

    /// One line per accepted event: action, dedup key, severity, summary and links.
    pub fn transcript(&self) -> String {
        let events = self.events();
        if events.is_empty() {
            return "(no PagerDuty events)\n".to_string();
        }
        events.iter().map(|e| render_event(e) + "\n").collect()
    }
}

struct Shared {
    state: Mutex<Inbox>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Inbox {
    accepted: Vec<Value>,
    attempts: usize,
    faults: VecDeque<u16>,
    generated_keys: u64,
}

async fn enqueue(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut inbox = shared.lock();
    inbox.attempts += 1;
    if let Some(status) = inbox.faults.pop_front() {
        return fault_answer(status);
    }
    let event: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({
                    "status": "Unrecognized object",
                    "message": "Event object format is unrecognized",
                    "errors": ["JSON parse error"],
                }),
            );
        }
    };
    if let Err(errors) = check_event(&event) {
        return invalid(errors);
    }
    let dedup_key = match event["dedup_key"].as_str().filter(|k| !k.is_empty()) {
        Some(k) => k.to_string(),
        None => {
            // PagerDuty makes up a key for a trigger without one.
            inbox.generated_keys += 1;
            format!("{:032x}", inbox.generated_keys)
        }
    };
    inbox.accepted.push(event);
    answer(
        StatusCode::ACCEPTED,
        json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key}),
    )
}

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn invalid(errors: Vec<String>) -> Response {
    answer(
        StatusCode::BAD_REQUEST,
        json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
    )
}

fn fault_answer(status: u16) -> Response {
    match status {
        400 => invalid(vec![
            "Event rejected by the stand-in (injected fault)".to_string(),
        ]),
        429 => answer(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly. Please retry later."}),
        ),
        other => {
            let status = StatusCode::from_u16(other).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                status.canonical_reason().unwrap_or("error").to_string(),
            )
                .into_response()
        }
    }
}

/// PagerDuty's checks on an event, with its wording where it is known.
fn check_event(event: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let blank = |v: &Value| v.as_str().is_none_or(|s| s.trim().is_empty());

    let key = &event["routing_key"];
    if blank(key) {
        errors.push("'routing_key' is missing or blank".to_string());
    } else if let Some(key) = key.as_str() {
        if key.chars().count() != 32 {
            errors
                .push("Length of 'routing_key' is incorrect (should be 32 characters)".to_string());
        }
        if !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            errors.push("'routing_key' cannot contain non-alphanumeric characters.".to_string());
        }
    }

    let action = event["event_action"].as_str().unwrap_or("");
    match action {
        "trigger" | "acknowledge" | "resolve" => {}
        "" => errors.push("'event_action' is missing or blank".to_string()),
        _ => errors.push(
            "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)".to_string(),
        ),
    }

    if let Some(k) = event["dedup_key"].as_str()
        && k.chars().count() > DEDUP_KEY_MAX_CHARS
    {
        errors.push(format!(
            "Length of 'dedup_key' is too long (maximum is {DEDUP_KEY_MAX_CHARS} characters)"
        ));
    }
    if matches!(action, "acknowledge" | "resolve") && blank(&event["dedup_key"]) {
        errors.push("'dedup_key' is missing or blank".to_string());
    }

    if action == "trigger" {
        let payload = &event["payload"];
        if !payload.is_object() {
            errors.push("'payload' is missing or blank".to_string());
        } else {
            for field in ["summary", "source", "severity"] {
                if blank(&payload[field]) {
                    errors.push(format!("'payload.{field}' is missing or blank"));
                }
            }
            if payload["summary"]
                .as_str()
                .is_some_and(|s| s.chars().count() > SUMMARY_MAX_CHARS)
            {
                errors.push(format!(
                    "Length of 'payload.summary' is too long (maximum is {SUMMARY_MAX_CHARS} characters)"
                ));
            }
            if let Some(severity) = payload["severity"].as_str().filter(|s| !s.is_empty())
                && !matches!(severity, "critical" | "error" | "warning" | "info")
            {
                errors.push(
                    "'payload.severity' is invalid (must be one of: critical, error, warning, info)"
                        .to_string(),
                );
            }
        }
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// One event on one line: `trigger  r-k3m9x2qa  critical  "summary"  links: text <href>`.
/// The routing key is never shown.
pub fn render_event(event: &Value) -> String {
    let action = event["event_action"].as_str().unwrap_or("?");
    let dedup_key = event["dedup_key"].as_str().unwrap_or("(new)");
    let mut line = format!("{action:<11} {dedup_key}");
    if let Some(payload) = event.get("payload").filter(|p| p.is_object()) {
        let severity = payload["severity"].as_str().unwrap_or("?");
        let summary = payload["summary"].as_str().unwrap_or("");
        line.push_str(&format!("  {severity}  \"{summary}\""));
    }
    let links: Vec<String> = event["links"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|l| {
            let href = l["href"].as_str().unwrap_or("");
            match l["text"].as_str().filter(|t| !t.is_empty()) {
                Some(text) => format!("{text} <{href}>"),
                None => format!("<{href}>"),
            }
        })
        .collect();
    if !links.is_empty() {
        line.push_str(&format!("  links: {}", links.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = FakePagerDuty::EXAMPLE_ROUTING_KEY;

    fn trigger() -> Value {
        json!({
            "routing_key": KEY,
            "event_action": "trigger",
            "dedup_key": "r-k3m9x2qa",
            "payload": {"summary": "prod-jobs upsize failed", "source": "redis-autoscaler", "severity": "critical"},
            "links": [{"href": "https://example.slack.com/archives/C1/p1", "text": "Slack thread"}]
        })
    }

    #[test]
    fn the_documented_examples_pass_once_given_a_real_length_key() {
        for name in [
            "pagerduty_trigger.json",
            "pagerduty_resolve.json",
            "pagerduty_acknowledge.json",
        ] {
            let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
            let mut event: Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            assert!(
                check_event(&event).is_err(),
                "{name}: the docs' placeholder key is not 32 characters"
            );
            event["routing_key"] = json!(KEY);
            assert_eq!(check_event(&event), Ok(()), "{name}");
        }
    }

    #[test]
    fn routing_keys_must_be_32_letters_or_digits() {
        let mut event = trigger();
        event["routing_key"] = json!("short-key");
        assert_eq!(
            check_event(&event),
            Err(vec![
                "Length of 'routing_key' is incorrect (should be 32 characters)".to_string(),
                "'routing_key' cannot contain non-alphanumeric characters.".to_string(),
            ])
        );
        event.as_object_mut().unwrap().remove("routing_key");
        assert_eq!(
            check_event(&event),
            Err(vec!["'routing_key' is missing or blank".to_string()])
        );
    }

    #[test]
    fn a_trigger_needs_summary_source_and_a_known_severity() {
        let mut event = trigger();
        event["payload"] = json!({"summary": "", "severity": "fatal"});
        let errors = check_event(&event).unwrap_err();
        assert!(errors.contains(&"'payload.summary' is missing or blank".to_string()));
        assert!(errors.contains(&"'payload.source' is missing or blank".to_string()));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("'payload.severity' is invalid"))
        );
        event["payload"]["summary"] = json!("x".repeat(1025));
        assert!(
            check_event(&event)
                .unwrap_err()
                .iter()
                .any(|e| e.contains("too long"))
        );
        event.as_object_mut().unwrap().remove("payload");
        assert_eq!(
            check_event(&event),
            Err(vec!["'payload' is missing or blank".to_string()])
        );
    }

    #[test]
    fn resolve_needs_a_dedup_key_and_a_known_action() {
        let event = json!({"routing_key": KEY, "event_action": "resolve"});
        assert_eq!(
            check_event(&event),
            Err(vec!["'dedup_key' is missing or blank".to_string()])
        );
        let event = json!({"routing_key": KEY, "event_action": "close", "dedup_key": "k"});
        assert!(check_event(&event).unwrap_err()[0].starts_with("'event_action' is invalid"));
    }

    #[test]
    fn events_render_on_one_line_without_the_routing_key() {
        let line = render_event(&trigger());
        assert_eq!(
            line,
            "trigger     r-k3m9x2qa  critical  \"prod-jobs upsize failed\"  links: Slack thread <https://example.slack.com/archives/C1/p1>"
        );
        assert!(!line.contains(KEY));
        assert_eq!(
            render_event(
                &json!({"routing_key": KEY, "event_action": "resolve", "dedup_key": "r-k3m9x2qa"})
            ),
            "resolve     r-k3m9x2qa"
        );
    }
}
