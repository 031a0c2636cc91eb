//! Interactive payloads: a `block_actions` click on the run's message, parsed into a [`Click`].
//!
//! Slack posts `payload=<url-encoded JSON>`. Pure parsing; acting on a click lives in
//! [`crate::app`] (called from [`crate::http::slack`]).

use serde::Deserialize;

use crate::domain::{ChannelId, MessageTs, NodeType, ReplicationGroupId, RunId, SlackUserId};

use super::blocks::actions;

/// A parsed interaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub user: SlackUserId,
    pub channel: Option<ChannelId>,
    pub message_ts: Option<MessageTs>,
    pub response_url: Option<String>,
    pub click: Click,
    /// The version of the run's plan the clicked element showed (`None`: a message from
    /// before plans had versions, which showed the first).
    pub plan_version: Option<u32>,
    /// Lets the bot open a modal for this click (valid for 3 seconds).
    pub trigger_id: Option<String>,
}

/// The modal that asks why a run was denied: its `callback_id`, and the input's block and
/// action ids.
pub const DENIAL_MODAL: &str = "denial_reason";
pub const DENIAL_INPUT: &str = "reason";

/// What was clicked.
#[derive(Debug, Clone, PartialEq)]
pub enum Click {
    Approve(RunId),
    /// "Approve with pending changes": approve, and the changes the card listed.
    ApprovePending(RunId),
    Deny(RunId),
    Cancel(RunId),
    /// "Upsize without a snapshot" after the snapshot failed.
    UpsizeWithoutSnapshot(RunId),
    ChooseSize(RunId, NodeType),
    /// Under a scale-down suggestion: "Dismiss", and "Snooze" for the chosen time.
    Dismiss(RunId),
    Snooze(RunId, std::time::Duration),
    /// "Start anyway" on a cooldown notice.
    StartAnyway(ReplicationGroupId),
    /// "Plan again" after a run stopped because the group changed.
    Replan(ReplicationGroupId),
    /// "Add a reason" under a denial: open the modal that asks for it.
    ExplainDenial(RunId),
    /// The modal submitted: why the run was denied.
    DenialReason(RunId, String),
    /// Something we don't act on (another payload type, an unknown action).
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed interaction payload: {0}")]
pub struct PayloadError(pub String);

#[derive(Deserialize)]
struct Form {
    payload: String,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: User,
    #[serde(default)]
    channel: Option<Channel>,
    #[serde(default)]
    container: Option<Container>,
    #[serde(default)]
    message: Option<MessageRef>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    trigger_id: Option<String>,
    #[serde(default)]
    view: Option<View>,
}

/// A submitted modal (`view_submission`): which one, its metadata and its inputs' values
/// (`state.values[block_id][action_id].value`).
#[derive(Deserialize)]
struct View {
    #[serde(default)]
    callback_id: String,
    #[serde(default)]
    private_metadata: String,
    #[serde(default)]
    state: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct User {
    id: String,
}

#[derive(Deserialize)]
struct Channel {
    id: String,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    message_ts: Option<String>,
    #[serde(default)]
    channel_id: Option<String>,
}

#[derive(Deserialize)]
struct MessageRef {
    #[serde(default)]
    ts: Option<String>,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    block_id: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    selected_option: Option<SelectedOption>,
}

#[derive(Deserialize)]
struct SelectedOption {
    value: String,
}

/// Parse a form body `payload=…` into an interaction.
pub fn parse(body: &[u8]) -> Result<Interaction, PayloadError> {
    let form: Form = serde_urlencoded::from_bytes(body)
        .map_err(|e| PayloadError(format!("expected a `payload` form field: {e}")))?;
    parse_json(&form.payload)
}

/// Parse the JSON inside `payload`.
pub fn parse_json(json: &str) -> Result<Interaction, PayloadError> {
    let p: Payload = serde_json::from_str(json).map_err(|e| PayloadError(e.to_string()))?;
    let user = SlackUserId::parse(&p.user.id).map_err(|e| PayloadError(e.to_string()))?;
    let channel = p
        .channel
        .map(|c| c.id)
        .or_else(|| p.container.as_ref().and_then(|c| c.channel_id.clone()))
        .and_then(|c| ChannelId::parse(&c).ok());
    let message_ts = p
        .container
        .as_ref()
        .and_then(|c| c.message_ts.clone())
        .or_else(|| p.message.and_then(|m| m.ts))
        .and_then(|ts| MessageTs::parse(&ts).ok());
    let (click, plan_version) = if p.kind == "view_submission" {
        match &p.view {
            Some(v) if v.callback_id == DENIAL_MODAL => {
                let run = RunId::parse(&v.private_metadata)
                    .map_err(|e| PayloadError(format!("the modal's run: {e}")))?;
                let reason = v
                    .state
                    .as_ref()
                    .and_then(|s| s["values"][DENIAL_INPUT][DENIAL_INPUT]["value"].as_str())
                    .unwrap_or_default()
                    .to_string();
                (Click::DenialReason(run, reason), None)
            }
            Some(v) => (
                Click::Other(format!("view_submission {}", v.callback_id)),
                None,
            ),
            None => (Click::Other(p.kind), None),
        }
    } else if p.kind != "block_actions" {
        (Click::Other(p.kind), None)
    } else {
        match p.actions.first() {
            None => (Click::Other("block_actions without actions".into()), None),
            Some(a) => click(a)?,
        }
    };
    Ok(Interaction {
        user,
        channel,
        message_ts,
        response_url: p.response_url,
        click,
        plan_version,
        trigger_id: p.trigger_id,
    })
}

/// A run id with the plan version it showed: `r-k3m9x2qa:v2` (or a bare run id).
fn versioned(s: &str) -> Result<(RunId, Option<u32>), PayloadError> {
    let (run, version) = match s.split_once(':') {
        Some((run, v)) => {
            let n = v
                .strip_prefix('v')
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| PayloadError(format!("`{v}` is not a plan version")))?;
            (run, Some(n))
        }
        None => (s, None),
    };
    let run = RunId::parse(run).map_err(|e| PayloadError(e.to_string()))?;
    Ok((run, version))
}

/// A menu on a run's message: the run and plan version its block names, and the value chosen.
fn selected<'a>(a: &'a Action, what: &str) -> Result<(RunId, Option<u32>, &'a str), PayloadError> {
    let (run, version) = a
        .block_id
        .as_deref()
        .and_then(|b| b.strip_prefix("run:"))
        .ok_or_else(|| PayloadError(format!("{what} without its run")))
        .and_then(versioned)?;
    let value = a
        .selected_option
        .as_ref()
        .map(|o| o.value.as_str())
        .ok_or_else(|| PayloadError(format!("{what} without a selected option")))?;
    Ok((run, version, value))
}

fn click(a: &Action) -> Result<(Click, Option<u32>), PayloadError> {
    let run_from_value = || -> Result<(RunId, Option<u32>), PayloadError> {
        let v = a
            .value
            .as_deref()
            .ok_or_else(|| PayloadError(format!("`{}` without a value", a.action_id)))?;
        versioned(v)
    };
    let decision = |make: fn(RunId) -> Click| -> Result<(Click, Option<u32>), PayloadError> {
        let (run, version) = run_from_value()?;
        Ok((make(run), version))
    };
    Ok(match a.action_id.as_str() {
        actions::APPROVE => decision(Click::Approve)?,
        actions::APPROVE_PENDING => decision(Click::ApprovePending)?,
        actions::DENY => decision(Click::Deny)?,
        actions::CANCEL => decision(Click::Cancel)?,
        actions::WITHOUT_SNAPSHOT => decision(Click::UpsizeWithoutSnapshot)?,
        actions::DENIAL_REASON => decision(Click::ExplainDenial)?,
        actions::DISMISS => decision(Click::Dismiss)?,
        actions::SNOOZE => {
            let (run, version, value) = selected(a, "snooze menu")?;
            // Only the menu's own choices: a forged value can't snooze for a year.
            let d = crate::slack::blocks::SNOOZE_CHOICES
                .iter()
                .find(|(v, _, _)| *v == value)
                .map(|(_, _, d)| *d)
                .ok_or_else(|| {
                    PayloadError(format!(
                        "`{}` is not a snooze choice",
                        crate::slack::blocks::escape(&truncate_value(value))
                    ))
                })?;
            (Click::Snooze(run, d), version)
        }
        actions::CHOOSE_SIZE => {
            let (run, version, value) = selected(a, "size picker")?;
            let node_type = NodeType::parse(value).map_err(|e| PayloadError(e.to_string()))?;
            (Click::ChooseSize(run, node_type), version)
        }
        actions::START_ANYWAY | actions::REPLAN => {
            let v = a.value.as_deref().unwrap_or_default();
            let group = ReplicationGroupId::parse(v).map_err(|e| PayloadError(e.to_string()))?;
            match a.action_id.as_str() {
                actions::REPLAN => (Click::Replan(group), None),
                _ => (Click::StartAnyway(group), None),
            }
        }
        other => (Click::Other(other.to_string()), None),
    })
}

/// At most 40 characters of an untrusted value, for an error message.
fn truncate_value(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(json: &str) -> Vec<u8> {
        serde_urlencoded::to_string([("payload", json)])
            .unwrap()
            .into_bytes()
    }

    #[test]
    fn the_real_block_actions_sample_parses_as_an_unknown_action() {
        let json = include_str!("../../tests/fixtures/slack_block_actions.json");
        let i = parse(&form(json)).unwrap();
        assert_eq!(i.user.as_str(), "UA8RXUSPL");
        assert_eq!(i.channel.unwrap().as_str(), "CBR2V3XEX");
        assert_eq!(i.message_ts.unwrap().as_str(), "1548261231.000200");
        assert!(
            i.response_url
                .unwrap()
                .starts_with("https://hooks.slack.com/actions/")
        );
        assert_eq!(i.click, Click::Other("WaXA".into()));
    }

    fn sample_with(action: serde_json::Value) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/slack_block_actions.json"
        ))
        .unwrap();
        v["actions"] = serde_json::json!([action]);
        form(&v.to_string())
    }

    #[test]
    fn our_buttons_parse_into_clicks() {
        let run = RunId::parse("r-abcdefgh").unwrap();
        let approve = sample_with(
            serde_json::json!({"action_id": "approve", "block_id": "run:r-abcdefgh", "type": "button", "value": "r-abcdefgh"}),
        );
        assert_eq!(parse(&approve).unwrap().click, Click::Approve(run.clone()));
        let deny = sample_with(
            serde_json::json!({"action_id": "deny", "type": "button", "value": "r-abcdefgh"}),
        );
        assert_eq!(parse(&deny).unwrap().click, Click::Deny(run.clone()));
        let cancel = sample_with(
            serde_json::json!({"action_id": "cancel", "type": "button", "value": "r-abcdefgh"}),
        );
        assert_eq!(parse(&cancel).unwrap().click, Click::Cancel(run.clone()));
        let pick = sample_with(serde_json::json!({
            "action_id": "choose_size", "block_id": "run:r-abcdefgh", "type": "static_select",
            "selected_option": {"text": {"type": "plain_text", "text": "x"}, "value": "cache.r6g.2xlarge"}
        }));
        assert_eq!(
            parse(&pick).unwrap().click,
            Click::ChooseSize(run, NodeType::parse("cache.r6g.2xlarge").unwrap())
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(parse(b"payload=not-json").is_err());
        assert!(parse(b"nothing=here").is_err());
        assert!(parse(&form(r#"{"type":"block_actions","user":{"id":"bad id"}}"#)).is_err());
        let bad_run =
            sample_with(serde_json::json!({"action_id": "approve", "value": "DROP TABLE"}));
        assert!(parse(&bad_run).is_err());
        let bad_size = sample_with(
            serde_json::json!({"action_id": "choose_size", "block_id": "run:r-abcdefgh", "selected_option": {"value": "huge"}}),
        );
        assert!(parse(&bad_size).is_err());
    }

    #[test]
    fn a_submitted_denial_modal_carries_the_run_and_the_reason() {
        // The shape of Slack's view_submission payload (api.slack.com/reference/interaction-payloads/views).
        let payload = |callback: &str, meta: &str, value: serde_json::Value| {
            serde_json::json!({
                "type": "view_submission",
                "team": { "id": "T0TEAM", "domain": "ops" },
                "user": { "id": "U0ONCALL1", "username": "oncall", "team_id": "T0TEAM" },
                "api_app_id": "A0APP",
                "trigger_id": "12466734323.1395872398.9c4d1f7f0bdc",
                "view": {
                    "id": "V0VIEW1", "type": "modal", "callback_id": callback,
                    "private_metadata": meta,
                    "state": { "values": { "reason": { "reason": { "type": "plain_text_input", "value": value } } } }
                }
            })
            .to_string()
        };
        let i = parse_json(&payload(
            "denial_reason",
            "r-abcdefgh",
            "change freeze".into(),
        ))
        .unwrap();
        assert_eq!(
            i.click,
            Click::DenialReason(RunId::parse("r-abcdefgh").unwrap(), "change freeze".into())
        );
        assert_eq!(
            i.trigger_id.as_deref(),
            Some("12466734323.1395872398.9c4d1f7f0bdc")
        );
        // Left empty, the input is null: an empty reason.
        let i = parse_json(&payload(
            "denial_reason",
            "r-abcdefgh",
            serde_json::Value::Null,
        ))
        .unwrap();
        assert_eq!(
            i.click,
            Click::DenialReason(RunId::parse("r-abcdefgh").unwrap(), String::new())
        );
        assert!(parse_json(&payload("denial_reason", "not a run", "x".into())).is_err());
        let other = parse_json(&payload("something_else", "r-abcdefgh", "x".into())).unwrap();
        assert!(matches!(other.click, Click::Other(_)));
        // A submission without its view is another kind we leave alone (see below).
        assert!(matches!(
            parse_json(r#"{"type":"view_submission","user":{"id":"U0ONCALL1"}}"#)
                .unwrap()
                .click,
            Click::Other(_)
        ));
    }

    #[test]
    fn other_payload_types_are_recognised_and_left_alone() {
        let i = parse(&form(
            r#"{"type":"view_submission","user":{"id":"U0123ABCD"}}"#,
        ))
        .unwrap();
        assert_eq!(i.click, Click::Other("view_submission".into()));
    }
}
