//! What a page says: a pure function from a run and a page action to a PagerDuty event.
//!
//! The dedup key is always the run id, so everything about one run is one incident: a
//! repeated trigger updates it, and a later success resolves it.

use serde_json::json;

use crate::domain::Timestamp;
use crate::pagerduty::{PdEvent, PdPayload, Severity};
use crate::slack::blocks::page_summary;

use super::machine::{PageAction, PageReason};
use super::run::{Outcome, Run, Trigger};

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
        PageReason::ResumeFailed { .. } => (Severity::Critical, "resume failed"),
        PageReason::CannotAct { .. } => (Severity::Critical, "cannot upsize"),
        PageReason::SlackUnreachable { .. } => (Severity::Error, "slack unreachable"),
    };
    let mut payload = PdPayload::new(
        format!("redis-autoscaler: {}", page_summary(run, reason)),
        format!("elasticache:replicationgroup/{}", run.group),
        severity,
    );
    payload.timestamp = Some(now.to_rfc3339());
    payload.component = Some("redis".into());
    payload.group = Some(run.group.to_string());
    payload.class = Some(class.into());
    let plan = run.plan();
    let (step, error) = match run.outcome() {
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
        "snapshot": run.plan().map(|_| crate::domain::SnapshotName::for_run(&run.id)),
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
