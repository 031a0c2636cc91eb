//! The PagerDuty Events API v2 client: trigger, acknowledge and resolve alerts.
//!
//! It owns the event types (mirroring PagerDuty's PD-CEF shape), the wire body (the routing key
//! is added only at send time, and only a trigger carries a payload), and the translation of
//! PagerDuty's answers into [`PdError`].
//!
//! It must not retry or decide when to page: [`PagerDutyClient::send`] makes exactly one HTTP
//! request. The runner retries 429, 5xx and network failures on its persisted schedule and never
//! retries a 400, as PagerDuty's documentation asks.
//!
//! It also implements the workflow's `Pager` port: what a run's page says ([`page_event`],
//! [`summary`]) lives here.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::{Secret, SnapshotName, Timestamp, format_duration};
use crate::workflow::effect::{PageAction, PageReason};
use crate::workflow::ports::{Attempt, BoxFuture, Failure, Pager};
use crate::workflow::run::{Outcome, Run, Trigger};

/// PagerDuty's production Events API v2 endpoint.
pub const DEFAULT_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty's limit on `payload.summary`, in characters.
pub const SUMMARY_MAX_CHARS: usize = 1024;

/// PagerDuty's limit on `dedup_key`, in characters.
pub const DEDUP_KEY_MAX_CHARS: usize = 255;

/// What the event does to the alert with its `dedup_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PdAction {
    /// Open an alert (or add to the open one with the same `dedup_key`): someone gets paged.
    Trigger,
    /// Someone is on it: stop notifying.
    Acknowledge,
    /// The problem is gone: close the alert.
    Resolve,
}

impl fmt::Display for PdAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PdAction::Trigger => "trigger",
            PdAction::Acknowledge => "acknowledge",
            PdAction::Resolve => "resolve",
        })
    }
}

/// How badly the affected system is hurt; it drives the incident's urgency in PagerDuty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// A link shown on the incident, such as the Slack thread of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PdLink {
    pub href: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
}

/// The alert's content (PD-CEF). Only trigger events carry one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PdPayload {
    /// The alert's title; cut to [`SUMMARY_MAX_CHARS`] when sent.
    pub summary: String,
    /// The affected system, e.g. `aws:elasticache:eu-west-1:123456789012:replicationgroup/prod-jobs`.
    pub source: String,
    pub severity: Severity,
    /// When the problem was detected (ISO 8601); PagerDuty uses its receive time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The broken part of the source, e.g. `redis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// A grouping of sources, e.g. the replication group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The kind of event, e.g. `upsize failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Free-form details shown on the alert; `null` is not sent.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub custom_details: Value,
}

impl PdPayload {
    /// A payload with the three required fields; set the optional ones on the returned value.
    pub fn new(
        summary: impl Into<String>,
        source: impl Into<String>,
        severity: Severity,
    ) -> PdPayload {
        PdPayload {
            summary: truncate_summary(&summary.into()),
            source: source.into(),
            severity,
            timestamp: None,
            component: None,
            group: None,
            class: None,
            custom_details: Value::Null,
        }
    }
}

/// One Events API v2 event, without the routing key (the client adds it when sending).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PdEvent {
    #[serde(rename = "event_action")]
    pub action: PdAction,
    /// Correlates trigger, acknowledge and resolve: we use the run id, so one run is one alert.
    pub dedup_key: String,
    /// Required for a trigger; never sent with acknowledge or resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<PdPayload>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<PdLink>,
    /// The name of the tool that sent the event, shown with `client_url` on the incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_url: Option<String>,
}

impl PdEvent {
    /// Open (or add to) the alert `dedup_key`.
    pub fn trigger(dedup_key: impl Into<String>, payload: PdPayload) -> PdEvent {
        PdEvent {
            action: PdAction::Trigger,
            dedup_key: dedup_key.into(),
            payload: Some(payload),
            links: Vec::new(),
            client: None,
            client_url: None,
        }
    }

    /// Mark the alert `dedup_key` as being worked on.
    pub fn acknowledge(dedup_key: impl Into<String>) -> PdEvent {
        PdEvent::follow_up(PdAction::Acknowledge, dedup_key.into())
    }

    /// Close the alert `dedup_key`.
    pub fn resolve(dedup_key: impl Into<String>) -> PdEvent {
        PdEvent::follow_up(PdAction::Resolve, dedup_key.into())
    }

    fn follow_up(action: PdAction, dedup_key: String) -> PdEvent {
        PdEvent {
            action,
            dedup_key,
            payload: None,
            links: Vec::new(),
            client: None,
            client_url: None,
        }
    }

    /// Add a link (such as the Slack thread) to a trigger.
    pub fn with_link(mut self, href: impl Into<String>, text: impl Into<String>) -> PdEvent {
        self.links.push(PdLink {
            href: href.into(),
            text: text.into(),
        });
        self
    }

    /// Name the sending tool and where to find it.
    pub fn with_client(mut self, client: impl Into<String>, client_url: Option<String>) -> PdEvent {
        self.client = Some(client.into());
        self.client_url = client_url;
        self
    }

    /// The JSON PagerDuty receives. Only a trigger carries payload, links and client details
    /// (PagerDuty's acknowledge and resolve examples have just the key, the action and the
    /// dedup key), and the summary is cut to PagerDuty's limit so a long error message can't
    /// turn a page into a 400.
    pub fn wire_body(&self, routing_key: &Secret) -> Value {
        let mut body = json!({
            "routing_key": routing_key.expose(),
            "event_action": self.action,
            "dedup_key": self.dedup_key,
        });
        if self.action == PdAction::Trigger {
            if let Some(payload) = &self.payload {
                let mut payload = payload.clone();
                payload.summary = truncate_summary(&payload.summary);
                body["payload"] = serde_json::to_value(payload).unwrap_or(Value::Null);
            }
            if !self.links.is_empty() {
                body["links"] = serde_json::to_value(&self.links).unwrap_or(Value::Null);
            }
            if let Some(client) = &self.client {
                body["client"] = Value::String(client.clone());
            }
            if let Some(url) = &self.client_url {
                body["client_url"] = Value::String(url.clone());
            }
        }
        body
    }
}

/// `summary` cut to [`SUMMARY_MAX_CHARS`] characters, ending in `…` when it was cut.
pub fn truncate_summary(summary: &str) -> String {
    if summary.chars().count() <= SUMMARY_MAX_CHARS {
        return summary.to_string();
    }
    let mut cut: String = summary.chars().take(SUMMARY_MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// PagerDuty accepted the event (HTTP 202).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdAccepted {
    /// The alert's key: ours, or the one PagerDuty made up for a trigger without one.
    pub dedup_key: String,
}

/// What went wrong sending an event, sorted by what the caller does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PdError {
    /// PagerDuty rejected the event (HTTP 400: bad routing key, missing field, …). Sending it
    /// again will fail again: a person must fix the configuration or the code.
    #[error(
        "PagerDuty rejected the event (HTTP {status}): {message}{}",
        join_errors(errors)
    )]
    Invalid {
        status: u16,
        message: String,
        errors: Vec<String>,
    },
    /// Too many events for this integration (HTTP 429): retry in a few minutes.
    #[error("PagerDuty rate-limited the event (HTTP 429)")]
    RateLimited,
    /// PagerDuty failed (5xx): retry.
    #[error("PagerDuty answered HTTP {status}")]
    Server { status: u16 },
    /// The request never got an answer: retry.
    #[error("could not reach PagerDuty: {0}")]
    Transport(String),
    /// Any other status (401, 403, 404, 413, a redirect, …): a person must look.
    #[error("PagerDuty answered with unexpected HTTP {status}")]
    Unexpected { status: u16 },
}

fn join_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", errors.join("; "))
    }
}

impl PdError {
    /// Should the same event be sent again later?
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PdError::RateLimited | PdError::Server { .. } | PdError::Transport(_)
        )
    }
}

/// PagerDuty's answer body, for success and for 400 alike.
#[derive(Debug, Deserialize)]
struct PdAnswer {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    dedup_key: Option<String>,
    #[serde(default)]
    errors: Vec<String>,
}

/// Judge one HTTP answer to the event with `sent_dedup_key`.
fn interpret(sent_dedup_key: &str, status: u16, body: &[u8]) -> Result<PdAccepted, PdError> {
    let answer: Option<PdAnswer> = serde_json::from_slice(body).ok();
    match status {
        // PagerDuty documents 202. Any 2xx means the event was taken: reporting a failure here
        // would only make the runner send it again.
        200..=299 => Ok(PdAccepted {
            dedup_key: answer
                .and_then(|a| a.dedup_key)
                .unwrap_or_else(|| sent_dedup_key.to_string()),
        }),
        400 => {
            let (message, errors) = match answer {
                Some(a) => (
                    a.message.unwrap_or_else(|| "Bad Request".to_string()),
                    a.errors,
                ),
                None => (
                    String::from_utf8_lossy(body).chars().take(200).collect(),
                    Vec::new(),
                ),
            };
            Err(PdError::Invalid {
                status,
                message,
                errors,
            })
        }
        429 => Err(PdError::RateLimited),
        500..=599 => Err(PdError::Server { status }),
        _ => Err(PdError::Unexpected { status }),
    }
}

/// An Events API v2 client for one integration (one routing key).
#[derive(Clone)]
pub struct PagerDutyClient {
    events_url: String,
    routing_key: Secret,
    http: reqwest::Client,
}

impl fmt::Debug for PagerDutyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagerDutyClient")
            .field("events_url", &self.events_url)
            .field("routing_key", &self.routing_key)
            .finish_non_exhaustive()
    }
}

impl PagerDutyClient {
    /// A client posting to `events_url` ([`DEFAULT_EVENTS_URL`] in production).
    pub fn new(events_url: impl Into<String>, routing_key: Secret, http: reqwest::Client) -> Self {
        PagerDutyClient {
            events_url: events_url.into(),
            routing_key,
            http,
        }
    }

    pub fn events_url(&self) -> &str {
        &self.events_url
    }

    /// Send one event: exactly one HTTP request, no retries.
    pub async fn send(&self, event: &PdEvent) -> Result<PdAccepted, PdError> {
        let result = self.send_once(event).await;
        crate::telemetry::pagerduty_delivery(event.action.to_string(), result.is_ok());
        result
    }

    async fn send_once(&self, event: &PdEvent) -> Result<PdAccepted, PdError> {
        let body = event.wire_body(&self.routing_key);
        tracing::debug!(action = %event.action, dedup_key = %event.dedup_key, "sending PagerDuty event");
        let response = self
            .http
            .post(&self.events_url)
            .json(&body)
            .send()
            .await
            .map_err(|e| PdError::Transport(crate::http_client::describe_error(&e)))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| PdError::Transport(crate::http_client::describe_error(&e)))?;
        interpret(&event.dedup_key, status, &bytes)
    }
}

// ---- The Pager port ----------------------------------------------------------------------

impl Pager for PagerDutyClient {
    fn page<'a>(
        &'a self,
        at: &'a mut Attempt,
        action: &'a PageAction,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let event = page_event(&at.run, action, at.now);
            match self.send(&event).await {
                Ok(_) => {
                    let detail = format!("accepted (dedup_key {})", at.run.id);
                    at.log("pagerduty", action.name(), detail);
                    Ok(())
                }
                Err(e) => {
                    at.log("pagerduty", action.name(), format!("error: {e}"));
                    Err(Failure {
                        error: e.to_string(),
                        retryable: e.is_retryable(),
                        retry_after: None,
                    })
                }
            }
        })
    }
}

// ---- What a page says ---------------------------------------------------------------------

/// The PagerDuty event for a run's page: a pure function of the run and the page action.
///
/// The dedup key is always the run id, so everything about one run is one incident: a
/// repeated trigger updates it, and a later success resolves it.
pub fn page_event(run: &Run, action: &PageAction, now: Timestamp) -> PdEvent {
    let reason = match action {
        PageAction::Resolve => return PdEvent::resolve(run.id.as_str()),
        PageAction::Trigger(reason) => reason,
    };
    let (severity, class) = match reason {
        PageReason::ApprovalTimeout { .. } => (Severity::Error, "approval timeout"),
        PageReason::RunFailed => match run.outcome() {
            Some(Outcome::TimedOut { .. }) => (Severity::Critical, "upsize timed out"),
            _ => (Severity::Critical, "upsize failed"),
        },
        PageReason::SnapshotFailed { .. } => (Severity::Critical, "snapshot failed"),
        PageReason::ResumeFailed { .. } => (Severity::Critical, "resume failed"),
        PageReason::StillHigh { .. } => (Severity::Error, "memory still high"),
        PageReason::CannotAct { .. } => (Severity::Critical, "cannot upsize"),
        PageReason::SlackUnreachable { .. } => (Severity::Error, "slack unreachable"),
    };
    let mut payload = PdPayload::new(
        format!("redis-autoscaler: {}", summary(run, reason)),
        format!("elasticache:replicationgroup/{}", run.group),
        severity,
    );
    payload.timestamp = Some(now.to_rfc3339());
    payload.component = Some("redis".into());
    payload.group = Some(run.group.to_string());
    payload.class = Some(class.into());
    let plan = run.plan();
    let (step, error) = match run.failure_or_outcome() {
        Some(Outcome::Failed { step, error }) => (Some(step.label()), Some(error.clone())),
        Some(Outcome::TimedOut { step, .. }) => (Some(step.label()), None),
        _ => (None, None),
    };
    let error = match reason {
        PageReason::ResumeFailed { error } | PageReason::SlackUnreachable { error } => {
            Some(error.clone())
        }
        PageReason::CannotAct { reason } => Some(reason.clone()),
        _ => error,
    };
    let trigger = match &run.trigger {
        Trigger::Alarm {
            alarm_name, reason, ..
        } => format!("alarm `{alarm_name}`: {reason}"),
        Trigger::Forecast { forecast, .. } => format!(
            "the memory trend: {} at {:.1} %, {:+.2} %/min",
            forecast.node, forecast.latest, forecast.slope_per_min
        ),
        Trigger::ScaleDown { evidence, .. } => format!(
            "a scale-down suggestion an approver took: {} → {}, peak {:.1} % over the window",
            evidence.from, evidence.to, evidence.peak
        ),
        Trigger::Command { user, .. } => format!("requested by Slack user {user}"),
    };
    let thread = run.message.as_ref().and_then(|m| m.permalink.clone());
    payload.custom_details = json!({
        "run_id": run.id,
        "replication_group": run.group,
        "state": run.state_name(),
        "step": step,
        "error": error,
        "from_node_type": plan.map(|p| p.current.to_string()),
        "to_node_type": plan.map(|p| p.target.to_string()),
        "snapshot": run.plan().map(|_| SnapshotName::for_run(&run.id)),
        "trigger": trigger,
        "slack_thread": thread,
    });
    let mut event =
        PdEvent::trigger(run.id.as_str(), payload).with_client("redis-autoscaler", thread.clone());
    if let Some(link) = thread {
        event = event.with_link(link, "Slack thread for this run");
    }
    event
}

/// One line saying why on-call is paged: the incident's summary, also quoted in the thread.
pub fn summary(run: &Run, reason: &PageReason) -> String {
    match reason {
        PageReason::ApprovalTimeout { after } => format!(
            "{} upsize is waiting for approval for {}",
            run.group,
            format_duration(*after)
        ),
        PageReason::RunFailed => match run.outcome() {
            Some(Outcome::TimedOut { step, after }) => format!(
                "{}: the run's {} step timed out after {}",
                run.group,
                step.label(),
                format_duration(*after)
            ),
            Some(Outcome::Failed { step, error }) => {
                format!(
                    "{}: the run failed at its {} step: {error}",
                    run.group,
                    step.label()
                )
            }
            _ => format!("{} upsize failed", run.group),
        },
        PageReason::SnapshotFailed {
            timed_out,
            decide_by,
        } => {
            let what = match run.failure_or_outcome() {
                Some(Outcome::Failed { error, .. }) => format!("failed: {error}"),
                _ if *timed_out => "timed out".to_string(),
                _ => "failed".to_string(),
            };
            format!(
                "{} snapshot {what}; the group was not changed. In the Slack thread an approver can choose Upsize without a snapshot, or Cancel (until {})",
                run.group,
                decide_by.to_rfc3339()
            )
        }
        PageReason::ResumeFailed { error } => format!(
            "{} workers may still be paused: the resume hook failed: {error}",
            run.group
        ),
        PageReason::StillHigh { after, threshold } => format!(
            "{} memory is still {after:.0} % after the upsize (alarm threshold {threshold:.0} %): it needs another size",
            run.group
        ),
        PageReason::CannotAct { reason } => {
            format!(
                "{} memory alarm, and the bot cannot upsize: {reason}",
                run.group
            )
        }
        PageReason::SlackUnreachable { error } => format!(
            "{} run can't be posted to Slack ({error}); nobody can see or approve it",
            run.group
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    /// The documented trigger example, built with our types.
    fn sample_trigger() -> PdEvent {
        let mut payload = PdPayload::new(
            "Example alert on host1.example.com",
            "monitoringtool:cloudvendor:central-region-dc-01:852559987:cluster/api-stats-prod-003",
            Severity::Info,
        );
        payload.timestamp = Some("2015-07-17T08:42:58.315+0000".into());
        payload.component = Some("postgres".into());
        payload.group = Some("prod-datapipe".into());
        payload.class = Some("deploy".into());
        payload.custom_details = json!({"ping time": "1500ms", "load avg": 0.75});
        PdEvent::trigger("samplekeyhere", payload)
            .with_link("https://example.com/", "Link text")
            .with_client(
                "Sample Monitoring Service",
                Some("https://monitoring.example.com".into()),
            )
    }

    #[test]
    fn a_trigger_serialises_like_the_documented_example() {
        let mut expected = fixture("pagerduty_trigger.json");
        // We send no images; everything else must match field for field.
        expected.as_object_mut().unwrap().remove("images");
        let body = sample_trigger().wire_body(&Secret::new("samplekeyhere"));
        assert_eq!(body, expected);
    }

    #[test]
    fn resolve_and_acknowledge_send_only_key_action_and_dedup_key() {
        let key = Secret::new("routingkeyhere");
        assert_eq!(
            PdEvent::resolve("dedupkeyhere").wire_body(&key),
            fixture("pagerduty_resolve.json")
        );
        assert_eq!(
            PdEvent::acknowledge("dedupkeyhere").wire_body(&key),
            fixture("pagerduty_acknowledge.json")
        );
    }

    #[test]
    fn a_resolve_never_carries_a_payload_even_if_one_was_set() {
        let mut resolve = sample_trigger();
        resolve.action = PdAction::Resolve;
        let body = resolve.wire_body(&Secret::new("k"));
        assert_eq!(
            body,
            json!({"routing_key": "k", "event_action": "resolve", "dedup_key": "samplekeyhere"})
        );
    }

    #[test]
    fn events_round_trip_through_serde() {
        let event = sample_trigger();
        let text = serde_json::to_string(&event).unwrap();
        assert!(!text.contains("routing_key"));
        assert_eq!(serde_json::from_str::<PdEvent>(&text).unwrap(), event);
    }

    #[test]
    fn long_summaries_are_cut_to_pagerdutys_limit() {
        let long = "é".repeat(3000);
        let payload = PdPayload::new(long.clone(), "src", Severity::Error);
        assert_eq!(payload.summary.chars().count(), SUMMARY_MAX_CHARS);
        assert!(payload.summary.ends_with('…'));

        // Also when the field was set directly after construction.
        let mut payload = PdPayload::new("short", "src", Severity::Error);
        payload.summary = long;
        let body = PdEvent::trigger("r-abcdefgh", payload).wire_body(&Secret::new("k"));
        let sent = body["payload"]["summary"].as_str().unwrap();
        assert_eq!(sent.chars().count(), SUMMARY_MAX_CHARS);

        let exact = "x".repeat(SUMMARY_MAX_CHARS);
        assert_eq!(truncate_summary(&exact), exact);
    }

    #[test]
    fn accepted_events_report_pagerdutys_dedup_key() {
        let body = serde_json::to_vec(&fixture("pagerduty_response_202.json")).unwrap();
        assert_eq!(
            interpret("mine", 202, &body).unwrap(),
            PdAccepted {
                dedup_key: "srv01/HTTP".into()
            }
        );
        assert_eq!(
            interpret("mine", 202, b"").unwrap(),
            PdAccepted {
                dedup_key: "mine".into()
            }
        );
    }

    #[test]
    fn a_400_is_invalid_with_pagerdutys_reasons_and_is_never_retried() {
        let body = serde_json::to_vec(&fixture("pagerduty_response_error_example.json")).unwrap();
        let err = interpret("k", 400, &body).unwrap_err();
        assert_eq!(
            err,
            PdError::Invalid {
                status: 400,
                message: "Event object format is unrecognized".into(),
                errors: vec!["JSON parse error".into()],
            }
        );
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "PagerDuty rejected the event (HTTP 400): Event object format is unrecognized (JSON parse error)"
        );
        let err = interpret("k", 400, b"nope").unwrap_err();
        assert!(matches!(err, PdError::Invalid { ref message, .. } if message == "nope"));
    }

    #[test]
    fn rate_limits_server_errors_and_network_failures_are_retried() {
        assert_eq!(interpret("k", 429, b"").unwrap_err(), PdError::RateLimited);
        assert!(PdError::RateLimited.is_retryable());
        for status in [500, 502, 503] {
            let err = interpret("k", status, b"oops").unwrap_err();
            assert_eq!(err, PdError::Server { status });
            assert!(err.is_retryable());
        }
        assert!(PdError::Transport("connection refused".into()).is_retryable());
    }

    #[test]
    fn other_statuses_are_unexpected_and_not_retried() {
        for status in [301, 401, 403, 404, 413] {
            let err = interpret("k", status, b"").unwrap_err();
            assert_eq!(err, PdError::Unexpected { status });
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn debug_output_never_shows_the_routing_key() {
        let client = PagerDutyClient::new(
            DEFAULT_EVENTS_URL,
            Secret::new("R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12"),
            crate::http_client::build(std::time::Duration::from_secs(1)),
        );
        let shown = format!("{client:?}");
        assert!(!shown.contains("R0UT1NGKEY"), "{shown}");
        assert!(shown.contains(DEFAULT_EVENTS_URL));
    }
}
