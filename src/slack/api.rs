//! The Slack Web API client: the five methods the bot calls, over a configurable base URL.
//!
//! It owns the wire format (JSON bodies for write methods, form bodies for read methods, the
//! bearer token) and the translation of Slack's answers into [`SlackError`]: HTTP 429 with
//! `Retry-After`, `ok:false` with an error string, 5xx, network failures and unreadable bodies.
//!
//! It must not retry, sleep or decide anything: every method makes exactly one HTTP request and
//! reports what happened. The runner retries on its persisted schedule, using
//! [`SlackError::is_retryable`] and [`SlackError::retry_after`].

use std::fmt;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Map, Value, json};

use crate::domain::{ChannelId, MessageTs, Secret, SlackUserGroupId, SlackUserId};
use crate::slack::Message;

/// How long to wait when Slack rate-limits us without saying for how long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Slack's `ok:false` errors that describe a hiccup on Slack's side rather than a mistake in
/// the request. Slack documents `internal_error` and `fatal_error` as possibly having partly
/// succeeded, so a retried `chat.postMessage` may post twice; callers that care look first.
const TRANSIENT_API_ERRORS: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    // "The workspace is undergoing migration to an Enterprise Organization": it passes.
    "team_added_to_org",
];

/// What went wrong calling Slack, sorted by what the caller does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    /// Slack asked us to slow down (HTTP 429, or `ok:false` with `ratelimited`): wait
    /// `retry_after`, then try again.
    #[error("Slack rate-limited the call; retry after {}s", retry_after.as_secs_f64())]
    RateLimited { retry_after: Duration },
    /// Slack understood the call and refused it (`ok:false`). Retryable only for Slack's own
    /// transient errors; anything else (`channel_not_found`, `not_in_channel`, `invalid_auth`,
    /// `invalid_blocks`, …) needs a person or a code fix.
    #[error("Slack {method} failed: {error}")]
    Api { method: String, error: String },
    /// An HTTP status without a Slack answer: 5xx is retried, anything else is not.
    #[error("Slack answered HTTP {status}")]
    Http { status: u16 },
    /// The request never got an answer (DNS, connect, TLS, timeout): retry.
    #[error("could not reach Slack: {0}")]
    Transport(String),
    /// Slack answered with a body we could not read: retrying will not help.
    #[error("Slack sent a response we could not read: {0}")]
    BadResponse(String),
}

impl SlackError {
    /// Should the same call be tried again later?
    pub fn is_retryable(&self) -> bool {
        match self {
            SlackError::RateLimited { .. } | SlackError::Transport(_) => true,
            SlackError::Api { error, .. } => TRANSIENT_API_ERRORS.contains(&error.as_str()),
            SlackError::Http { status } => *status >= 500,
            SlackError::BadResponse(_) => false,
        }
    }

    /// How long Slack asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SlackError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Slack's error string for `ok:false` answers (`channel_not_found`, …).
    pub fn api_error(&self) -> Option<&str> {
        match self {
            SlackError::Api { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Where a message landed: the channel id Slack resolved and the message's `ts`, which is its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage {
    pub channel: ChannelId,
    pub ts: MessageTs,
}

/// A Slack Web API client for one workspace (one bot token).
#[derive(Clone)]
pub struct SlackClient {
    /// Without a trailing slash, e.g. `https://slack.com/api`.
    base_url: String,
    token: Secret,
    http: reqwest::Client,
}

impl fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackClient")
            .field("base_url", &self.base_url)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl SlackClient {
    /// The production base URL.
    pub const DEFAULT_BASE_URL: &'static str = "https://slack.com/api";

    /// A client for `base_url` (`https://slack.com/api`, or a stand-in's
    /// `http://127.0.0.1:PORT/api`; a trailing slash is fine).
    pub fn new(base_url: impl Into<String>, token: Secret, http: reqwest::Client) -> SlackClient {
        let base_url = base_url.into().trim_end_matches('/').to_string();
        SlackClient {
            base_url,
            token,
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `chat.postMessage`: a new message, or a thread reply when `thread_ts` is given. Link
    /// previews are off so a permalink in a reply doesn't unfurl into a copy of the thread.
    pub async fn post_message(
        &self,
        channel: &ChannelId,
        thread_ts: Option<&MessageTs>,
        message: &Message,
    ) -> Result<PostedMessage, SlackError> {
        let body = post_message_body(channel, thread_ts, message);
        let answer = self.call_json("chat.postMessage", &body).await?;
        parse_posted(&answer)
    }

    /// Post a top-level message carrying Slack message metadata (`event_type` and a JSON
    /// `event_payload`), so it can be found again with [`SlackClient::find_by_metadata`].
    pub async fn post_message_with_metadata(
        &self,
        channel: &ChannelId,
        message: &Message,
        event_type: &str,
        payload: &Value,
    ) -> Result<PostedMessage, SlackError> {
        let mut body = post_message_body(channel, None, message);
        body["metadata"] = json!({ "event_type": event_type, "event_payload": payload });
        let answer = self.call_json("chat.postMessage", &body).await?;
        parse_posted(&answer)
    }

    /// The newest message in `channel` since `oldest` whose metadata has this `event_type` and
    /// `event_payload[key] == value` (conversations.history, needs `channels:history` /
    /// `groups:history`). Looks through at most the last 1,000 messages.
    pub async fn find_by_metadata(
        &self,
        channel: &ChannelId,
        oldest_secs: i64,
        event_type: &str,
        key: &str,
        value: &str,
    ) -> Result<Option<MessageTs>, SlackError> {
        let found = self.find_all_by_metadata(channel, oldest_secs, event_type, key, value, 1);
        Ok(found.await?.into_iter().next())
    }

    /// Every message (newest first, at most `max`) that [`SlackClient::find_by_metadata`]
    /// would consider: duplicates of one post show up here.
    pub async fn find_all_by_metadata(
        &self,
        channel: &ChannelId,
        oldest_secs: i64,
        event_type: &str,
        key: &str,
        value: &str,
        max: usize,
    ) -> Result<Vec<MessageTs>, SlackError> {
        let mut found = Vec::new();
        let oldest = format!("{}.000000", oldest_secs.max(0));
        let mut cursor = String::new();
        for _ in 0..5 {
            let mut args = vec![
                ("channel", channel.as_str()),
                ("oldest", oldest.as_str()),
                ("include_all_metadata", "true"),
                ("limit", "200"),
            ];
            if !cursor.is_empty() {
                args.push(("cursor", cursor.as_str()));
            }
            let answer = self.call_form("conversations.history", &args).await?;
            let messages = answer
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for m in &messages {
                let meta = &m["metadata"];
                if meta["event_type"] == event_type
                    && meta["event_payload"][key] == value
                    && let Some(ts) = m["ts"].as_str().and_then(|t| MessageTs::parse(t).ok())
                {
                    found.push(ts);
                    if found.len() >= max {
                        return Ok(found);
                    }
                }
            }
            cursor = answer
                .get("response_metadata")
                .and_then(|r| r.get("next_cursor"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if cursor.is_empty() {
                break;
            }
        }
        Ok(found)
    }

    /// `chat.delete`: remove a message the bot posted.
    pub async fn delete_message(
        &self,
        channel: &ChannelId,
        ts: &MessageTs,
    ) -> Result<(), SlackError> {
        let body = json!({ "channel": channel.as_str(), "ts": ts.as_str() });
        self.call_json("chat.delete", &body).await.map(|_| ())
    }

    /// `chat.update`: replace a message's text and blocks.
    pub async fn update_message(
        &self,
        channel: &ChannelId,
        ts: &MessageTs,
        message: &Message,
    ) -> Result<(), SlackError> {
        let body = update_body(channel, ts, message);
        self.call_json("chat.update", &body).await.map(drop)
    }

    /// `chat.getPermalink`: a URL a person (or PagerDuty) can open to reach the message.
    pub async fn permalink(
        &self,
        channel: &ChannelId,
        ts: &MessageTs,
    ) -> Result<String, SlackError> {
        let args = [("channel", channel.as_str()), ("message_ts", ts.as_str())];
        let answer = self.call_form("chat.getPermalink", &args).await?;
        string_field(&answer, "permalink").map(str::to_owned)
    }

    /// `usergroups.users.list`: the members of a user group, for approver checks.
    pub async fn usergroup_members(
        &self,
        group: &SlackUserGroupId,
    ) -> Result<Vec<SlackUserId>, SlackError> {
        let args = [("usergroup", group.as_str())];
        let answer = self.call_form("usergroups.users.list", &args).await?;
        parse_users(&answer)
    }

    /// `chat.postEphemeral`: a message only `user` sees, in `channel`.
    pub async fn post_ephemeral(
        &self,
        channel: &ChannelId,
        user: &SlackUserId,
        message: &Message,
    ) -> Result<(), SlackError> {
        let body = ephemeral_body(channel, user, message);
        self.call_json("chat.postEphemeral", &body).await.map(drop)
    }

    /// Answer a person privately through a command's or click's `response_url`.
    ///
    /// Only Slack's own `https://hooks.slack.com/` URLs (or, for tests and proxies, URLs on the
    /// configured API host) are followed: the URL arrives in a request body and is never
    /// trusted to point anywhere else. The bot token is not sent.
    pub async fn respond(&self, response_url: &str, message: &Message) -> Result<(), SlackError> {
        if !self.is_response_url(response_url) {
            return Err(SlackError::BadResponse(format!(
                "refusing to answer through a response_url outside Slack ({})",
                origin(response_url)
            )));
        }
        let mut body = json!({
            "response_type": "ephemeral",
            "replace_original": false,
            "text": message.text,
        });
        if !message.blocks.is_empty() {
            body["blocks"] = Value::Array(message.blocks.clone());
        }
        let bytes =
            serde_json::to_vec(&body).map_err(|e| SlackError::BadResponse(e.to_string()))?;
        let response = self
            .http
            .post(response_url)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(bytes)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(()),
            429 => Err(SlackError::RateLimited {
                retry_after: Duration::from_secs(1),
            }),
            _ => Err(SlackError::Http { status }),
        }
    }

    /// Is this a URL Slack would give us to answer on?
    pub fn is_response_url(&self, url: &str) -> bool {
        is_response_url(url, &self.base_url)
    }

    fn url(&self, method: &str) -> String {
        format!("{}/{method}", self.base_url)
    }

    async fn call_json(
        &self,
        method: &str,
        body: &Value,
    ) -> Result<Map<String, Value>, SlackError> {
        let bytes = serde_json::to_vec(body).map_err(|e| SlackError::BadResponse(e.to_string()))?;
        // `.json()` would send `application/json` without a charset, which Slack accepts with a
        // `missing_charset` warning on every call.
        let request = self
            .http
            .post(self.url(method))
            .header(AUTHORIZATION, format!("Bearer {}", self.token.expose()))
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(bytes);
        self.send(method, request).await
    }

    /// Read methods (`chat.getPermalink`, `usergroups.users.list`) do not read JSON bodies:
    /// Slack documents them as `application/x-www-form-urlencoded` only.
    async fn call_form(
        &self,
        method: &str,
        args: &[(&str, &str)],
    ) -> Result<Map<String, Value>, SlackError> {
        let request = self
            .http
            .post(self.url(method))
            .header(AUTHORIZATION, format!("Bearer {}", self.token.expose()))
            .form(args);
        self.send(method, request).await
    }

    async fn send(
        &self,
        method: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Map<String, Value>, SlackError> {
        tracing::debug!(method, "calling Slack");
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                crate::telemetry::slack_delivery(method.to_string(), false);
                return Err(transport_error(e));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(transport_error);
        let result = body.and_then(|body| interpret(method, status, retry_after.as_deref(), &body));
        crate::telemetry::slack_delivery(method.to_string(), result.is_ok());
        if let Err(e) = &result {
            tracing::debug!(method, error = %e, "Slack call failed");
        }
        result
    }
}

/// `scheme://host[:port]` of a URL, for comparing where URLs point.
/// Is this a URL Slack would give us to answer on: Slack's own `https://hooks.slack.com/`, or
/// (tests, proxies) a URL on the configured API host `api_base`?
pub fn is_response_url(url: &str, api_base: &str) -> bool {
    url.starts_with("https://hooks.slack.com/") || origin(url) == origin(api_base)
}

fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map(|i| after_scheme + i)
        .unwrap_or(url.len());
    &url[..end]
}

fn transport_error(e: reqwest::Error) -> SlackError {
    SlackError::Transport(crate::http_client::describe_error(&e))
}

fn post_message_body(
    channel: &ChannelId,
    thread_ts: Option<&MessageTs>,
    message: &Message,
) -> Value {
    let mut body = json!({
        "channel": channel.as_str(),
        "text": message.text,
        "unfurl_links": false,
    });
    if !message.blocks.is_empty() {
        body["blocks"] = Value::Array(message.blocks.clone());
    }
    if let Some(ts) = thread_ts {
        body["thread_ts"] = Value::String(ts.as_str().to_string());
    }
    body
}

fn update_body(channel: &ChannelId, ts: &MessageTs, message: &Message) -> Value {
    // `blocks` is always sent, even empty: chat.update keeps the previous blocks when the field
    // is absent, so a text-only update would otherwise leave stale buttons on the message.
    json!({
        "channel": channel.as_str(),
        "ts": ts.as_str(),
        "text": message.text,
        "blocks": message.blocks,
    })
}

fn ephemeral_body(channel: &ChannelId, user: &SlackUserId, message: &Message) -> Value {
    let mut body = json!({
        "channel": channel.as_str(),
        "user": user.as_str(),
        "text": message.text,
    });
    if !message.blocks.is_empty() {
        body["blocks"] = Value::Array(message.blocks.clone());
    }
    body
}

/// Judge one HTTP answer from Slack: the JSON object on `ok:true`, the matching error otherwise.
fn interpret(
    method: &str,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, SlackError> {
    let rate_limited = || SlackError::RateLimited {
        retry_after: parse_retry_after(retry_after),
    };
    if status == 429 {
        return Err(rate_limited());
    }
    if status >= 500 {
        return Err(SlackError::Http { status });
    }
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let Some(object) = parsed.filter(|o| o.get("ok").is_some_and(Value::is_boolean)) else {
        return Err(if (200..300).contains(&status) {
            SlackError::BadResponse(format!(
                "{method} answered HTTP {status} without an `ok` field: {}",
                snippet(body)
            ))
        } else {
            SlackError::Http { status }
        });
    };
    log_response_metadata(method, &object);
    if object.get("ok") == Some(&Value::Bool(true)) && (200..300).contains(&status) {
        return Ok(object);
    }
    let error = object
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown_error")
        .to_string();
    if error == "ratelimited" || error == "rate_limited" {
        return Err(rate_limited());
    }
    Err(SlackError::Api {
        method: method.to_string(),
        error,
    })
}

/// `Retry-After` is whole seconds in Slack's answers; anything unreadable means "a moment".
fn parse_retry_after(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

/// Slack explains `invalid_blocks` and deprecations in `response_metadata`; the error string
/// alone rarely says which block was wrong, so the operator gets the details in the log.
fn log_response_metadata(method: &str, object: &Map<String, Value>) {
    let Some(meta) = object.get("response_metadata") else {
        return;
    };
    for key in ["messages", "warnings"] {
        if let Some(items) = meta.get(key).and_then(Value::as_array) {
            for item in items.iter().filter_map(Value::as_str) {
                tracing::warn!(method, detail = item, "Slack {key}");
            }
        }
    }
    if let Some(warning) = object.get("warning").and_then(Value::as_str) {
        tracing::warn!(method, warning, "Slack warning");
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

fn string_field<'a>(object: &'a Map<String, Value>, key: &str) -> Result<&'a str, SlackError> {
    object
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| SlackError::BadResponse(format!("the answer has no `{key}` string")))
}

fn parse_posted(object: &Map<String, Value>) -> Result<PostedMessage, SlackError> {
    let bad = |e: crate::domain::ParseError| SlackError::BadResponse(e.to_string());
    Ok(PostedMessage {
        channel: ChannelId::parse(string_field(object, "channel")?).map_err(bad)?,
        ts: MessageTs::parse(string_field(object, "ts")?).map_err(bad)?,
    })
}

fn parse_users(object: &Map<String, Value>) -> Result<Vec<SlackUserId>, SlackError> {
    let users = object
        .get("users")
        .and_then(Value::as_array)
        .ok_or_else(|| SlackError::BadResponse("the answer has no `users` list".into()))?;
    users
        .iter()
        .map(|u| {
            u.as_str()
                .ok_or_else(|| SlackError::BadResponse(format!("`{u}` is not a user id")))
                .and_then(|s| {
                    SlackUserId::parse(s).map_err(|e| SlackError::BadResponse(e.to_string()))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Status and `Retry-After` of a raw HTTP response head such as the 429 sample.
    fn status_and_retry_after(raw: &str) -> (u16, Option<String>) {
        let mut lines = raw.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let retry_after = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("retry-after"))
            .map(|(_, v)| v.trim().to_string());
        (status, retry_after)
    }

    fn channel() -> ChannelId {
        ChannelId::parse("C123ABC456").unwrap()
    }

    #[test]
    fn the_documented_post_message_answer_gives_channel_and_ts() {
        let body = fixture("slack_chat_postMessage_response.json");
        let answer = interpret("chat.postMessage", 200, None, &body).unwrap();
        assert_eq!(
            parse_posted(&answer).unwrap(),
            PostedMessage {
                channel: channel(),
                ts: MessageTs::parse("1503435956.000247").unwrap(),
            }
        );
    }

    #[test]
    fn the_documented_update_answer_is_ok() {
        let body = fixture("slack_chat_update_response.json");
        assert!(interpret("chat.update", 200, None, &body).is_ok());
    }

    #[test]
    fn ok_false_becomes_an_api_error_naming_method_and_error() {
        let body = fixture("slack_chat_update_error.json");
        let err = interpret("chat.update", 200, None, &body).unwrap_err();
        assert_eq!(
            err,
            SlackError::Api {
                method: "chat.update".into(),
                error: "cant_update_message".into()
            }
        );
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "Slack chat.update failed: cant_update_message"
        );

        let body = fixture("slack_chat_postMessage_error_too_many_attachments.json");
        let err = interpret("chat.postMessage", 200, None, &body).unwrap_err();
        assert_eq!(err.api_error(), Some("too_many_attachments"));
        assert!(!err.is_retryable());
    }

    #[test]
    fn http_429_is_rate_limited_for_as_long_as_retry_after_says() {
        let raw = String::from_utf8(fixture("slack_rate_limited_http_429.txt")).unwrap();
        let (status, retry_after) = status_and_retry_after(&raw);
        let err = interpret("chat.postMessage", status, retry_after.as_deref(), b"").unwrap_err();
        assert_eq!(
            err,
            SlackError::RateLimited {
                retry_after: Duration::from_secs(30)
            }
        );
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn rate_limits_without_retry_after_wait_one_second() {
        let err = interpret("chat.update", 429, None, b"").unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
        let err = interpret("chat.update", 429, Some("soon"), b"").unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
        let body = br#"{"ok":false,"error":"ratelimited"}"#;
        let err = interpret("chat.update", 200, None, body).unwrap_err();
        assert_eq!(
            err,
            SlackError::RateLimited {
                retry_after: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn only_slacks_transient_errors_are_retried() {
        let api = |error: &str| SlackError::Api {
            method: "chat.postMessage".into(),
            error: error.into(),
        };
        for e in [
            "internal_error",
            "fatal_error",
            "service_unavailable",
            "request_timeout",
        ] {
            assert!(api(e).is_retryable(), "{e}");
        }
        for e in [
            "channel_not_found",
            "not_in_channel",
            "invalid_auth",
            "invalid_blocks",
            "msg_too_long",
        ] {
            assert!(!api(e).is_retryable(), "{e}");
        }
        assert_eq!(api("internal_error").retry_after(), None);
    }

    #[test]
    fn server_errors_are_retried_and_client_errors_are_not() {
        let err = interpret("chat.postMessage", 500, None, b"<html>oops</html>").unwrap_err();
        assert_eq!(err, SlackError::Http { status: 500 });
        assert!(err.is_retryable());
        let err = interpret(
            "chat.postMessage",
            503,
            None,
            br#"{"ok":false,"error":"channel_not_found"}"#,
        )
        .unwrap_err();
        assert!(
            err.is_retryable(),
            "a 5xx is retried whatever its body says"
        );
        let err = interpret("chat.postMessage", 404, None, b"Not Found").unwrap_err();
        assert_eq!(err, SlackError::Http { status: 404 });
        assert!(!err.is_retryable());
        let err = interpret("chat.postMessage", 302, None, b"").unwrap_err();
        assert_eq!(err, SlackError::Http { status: 302 });
        assert!(SlackError::Transport("connection refused".into()).is_retryable());
    }

    #[test]
    fn a_4xx_with_a_slack_error_body_reports_the_slack_error() {
        let err = interpret(
            "chat.postMessage",
            400,
            None,
            br#"{"ok":false,"error":"invalid_arguments"}"#,
        )
        .unwrap_err();
        assert_eq!(err.api_error(), Some("invalid_arguments"));
    }

    #[test]
    fn unreadable_success_bodies_are_bad_responses_that_are_not_retried() {
        for body in [&b"<html>"[..], b"", b"[1,2]", br#"{"channel":"C1"}"#] {
            let err = interpret("chat.postMessage", 200, None, body).unwrap_err();
            assert!(matches!(err, SlackError::BadResponse(_)), "{err:?}");
            assert!(!err.is_retryable());
        }
        let answer = interpret("chat.postMessage", 200, None, br#"{"ok":true}"#).unwrap();
        assert!(matches!(
            parse_posted(&answer),
            Err(SlackError::BadResponse(_))
        ));
    }

    #[test]
    fn usergroup_members_parse_user_ids() {
        let body = br#"{"ok":true,"users":["U060R4BJ4","W123A4BC5"]}"#;
        let answer = interpret("usergroups.users.list", 200, None, body).unwrap();
        assert_eq!(
            parse_users(&answer).unwrap(),
            vec![
                SlackUserId::parse("U060R4BJ4").unwrap(),
                SlackUserId::parse("W123A4BC5").unwrap()
            ]
        );
        let answer = interpret(
            "usergroups.users.list",
            200,
            None,
            br#"{"ok":true,"users":[7]}"#,
        )
        .unwrap();
        assert!(parse_users(&answer).is_err());
    }

    #[test]
    fn post_message_body_threads_replies_and_turns_off_unfurling() {
        let msg = Message {
            text: "hi".into(),
            blocks: vec![json!({"type":"divider"})],
        };
        let ts = MessageTs::parse("1503435956.000247").unwrap();
        assert_eq!(
            post_message_body(&channel(), Some(&ts), &msg),
            json!({
                "channel": "C123ABC456",
                "text": "hi",
                "blocks": [{"type":"divider"}],
                "thread_ts": "1503435956.000247",
                "unfurl_links": false,
            })
        );
        let top = post_message_body(&channel(), None, &Message::text("hi"));
        assert!(top.get("thread_ts").is_none());
        assert!(
            top.get("blocks").is_none(),
            "an empty blocks array is not sent"
        );
    }

    #[test]
    fn update_body_always_sends_blocks_so_old_buttons_disappear() {
        let ts = MessageTs::parse("1503435956.000247").unwrap();
        let body = update_body(&channel(), &ts, &Message::text("done"));
        assert_eq!(body["blocks"], json!([]));
        assert_eq!(body["ts"], "1503435956.000247");
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let client = SlackClient::new(
            "http://127.0.0.1:9/api/",
            Secret::new("xoxb-super-secret"),
            crate::http_client::build(Duration::from_secs(1)),
        );
        let shown = format!("{client:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert_eq!(client.base_url(), "http://127.0.0.1:9/api");
        assert_eq!(
            client.url("chat.update"),
            "http://127.0.0.1:9/api/chat.update"
        );
    }
}
