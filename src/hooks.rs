//! Pause and resume webhooks: tell the team's workers to stop writing to Redis before the
//! snapshot, and to start again afterwards.
//!
//! Each call is one signed HTTP POST; the runner retries it on its persisted schedule. The
//! client implements the workflow's `Hooks` port: what a hook receives is built here. The
//! receiver verifies `X-Redis-Autoscaler-Signature: v1=<hex HMAC-SHA256 of "v1:{timestamp}:{body}">`
//! with the shared `HOOK_SIGNING_SECRET` and rejects timestamps older than a few minutes.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::domain::{NodeType, ReplicationGroupId, RunId, Secret, SnapshotName, Timestamp};
use crate::workflow::event::HookPhase;
use crate::workflow::ports::{Attempt, BoxFuture, Failure, Hooks};
use crate::workflow::run::{Outcome, Step};

pub const SIGNATURE_HEADER: &str = "X-Redis-Autoscaler-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Redis-Autoscaler-Timestamp";
/// The same for every try of one hook call (a retry, or the call again after a restart that
/// lost its answer): a receiver acts once per key. Hooks are delivered at least once.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// What a hook receives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookPayload {
    pub run_id: RunId,
    pub group: ReplicationGroupId,
    /// `pause` or `resume`.
    pub phase: &'static str,
    pub from_node_type: NodeType,
    pub to_node_type: NodeType,
    pub snapshot: Option<SnapshotName>,
    /// For `resume`: how the run ended (`succeeded`, `failed`, `cancelled`, …), or
    /// `snapshot_failed` when it may still go on: an approver can choose to upsize without a
    /// snapshot, and the workers are then paused (and resumed) again.
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    #[error("the hook answered HTTP {status}")]
    Status { status: u16 },
    #[error("the hook could not be reached: {0}")]
    Transport(String),
}

impl HookError {
    /// 5xx, 408, 429 and network failures are worth another try; other 4xx are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            HookError::Status { status } => *status >= 500 || *status == 408 || *status == 429,
            HookError::Transport(_) => true,
        }
    }
}

/// Signs and sends hook calls.
#[derive(Clone)]
pub struct HookClient {
    http: reqwest::Client,
    secret: Option<Secret>,
}

impl std::fmt::Debug for HookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookClient")
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl HookClient {
    pub fn new(http: reqwest::Client, secret: Option<Secret>) -> HookClient {
        HookClient { http, secret }
    }

    /// POST the payload to `url`, signed, within `timeout`.
    pub async fn post(
        &self,
        url: &str,
        payload: &HookPayload,
        key: &str,
        timeout: Duration,
        now: Timestamp,
    ) -> Result<(), HookError> {
        let result = self.call_once(url, payload, key, timeout, now).await;
        crate::telemetry::hook_call(payload.phase, result.is_ok());
        result
    }

    async fn call_once(
        &self,
        url: &str,
        payload: &HookPayload,
        key: &str,
        timeout: Duration,
        now: Timestamp,
    ) -> Result<(), HookError> {
        let body = serde_json::to_vec(payload).expect("hook payloads serialise");
        let ts = now.as_secs().to_string();
        let mut req = self
            .http
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, &ts)
            .header(IDEMPOTENCY_HEADER, key);
        if let Some(secret) = &self.secret {
            req = req.header(SIGNATURE_HEADER, sign(secret, &ts, &body));
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| HookError::Transport(without_url(&e)))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(HookError::Status { status })
        }
    }
}

impl Hooks for HookClient {
    fn call<'a>(
        &'a self,
        at: &'a mut Attempt,
        phase: HookPhase,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let run = &at.run;
            let (url, name) = match phase {
                HookPhase::Pause => (run.policy.pause_url.clone(), "pause"),
                HookPhase::Resume => (run.policy.resume_url.clone(), "resume"),
            };
            let Some(url) = url else {
                at.log("hook", name, "no hook configured");
                return Ok(());
            };
            let Some(plan) = run.plan() else {
                return Err(Failure::fatal("no plan"));
            };
            let payload = HookPayload {
                run_id: run.id.clone(),
                group: run.group.clone(),
                phase: name,
                from_node_type: plan.current.clone(),
                to_node_type: plan.target.clone(),
                // None when the run goes without one (the policy, or an approver's choice).
                snapshot: (!run.skips_snapshot()).then(|| SnapshotName::for_run(&run.id)),
                outcome: run.outcome().map(|o| match o {
                    Outcome::Failed {
                        step: Step::Snapshot,
                        ..
                    }
                    | Outcome::TimedOut {
                        step: Step::Snapshot,
                        ..
                    } if !run.policy.without_snapshot_window.is_zero() && !run.skips_snapshot() => {
                        "snapshot_failed".to_string()
                    }
                    other => other.name().to_string(),
                }),
            };
            let timeout = run.policy.hook_timeout;
            // One key per hook effect: its retries and a repeat after a restart share it.
            let key = format!("{}:{}:{}", run.id, name, at.effect_id);
            match self.post(&url, &payload, &key, timeout, at.now).await {
                Ok(()) => {
                    at.log("hook", name, "accepted");
                    Ok(())
                }
                Err(e) => {
                    at.log("hook", name, format!("error: {e}"));
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

/// `v1=` + hex HMAC-SHA256 of `v1:{timestamp}:{body}`.
pub fn sign(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"v1:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A reqwest error's text without the URL (hook URLs may carry tokens in their query).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let s = Secret::new("hook-secret");
        let a = sign(&s, "1700000000", b"{}");
        assert!(a.starts_with("v1="));
        assert_eq!(a.len(), 3 + 64);
        assert_ne!(a, sign(&s, "1700000001", b"{}"));
        assert_ne!(a, sign(&s, "1700000000", b"{ }"));
        assert_ne!(a, sign(&Secret::new("other"), "1700000000", b"{}"));
    }

    #[test]
    fn only_server_side_and_network_failures_are_retried() {
        assert!(HookError::Status { status: 503 }.is_retryable());
        assert!(HookError::Status { status: 429 }.is_retryable());
        assert!(!HookError::Status { status: 404 }.is_retryable());
        assert!(HookError::Transport("x".into()).is_retryable());
    }
}
