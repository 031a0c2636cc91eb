//! The Slack Web API client: the methods the bot calls, over a configurable base URL.
//!
//! It owns the wire format (JSON bodies for write methods, form bodies for read methods, the
//! bearer token) and the translation of Slack's answers into [`SlackError`]: HTTP 429 with
//! `Retry-After`, `ok:false` with an error string, 5xx, network failures and unreadable bodies.
//! It also owns Slack's external file upload (`files.getUploadURLExternal`, a POST of the bytes
//! to the `upload_url` Slack hands out, `files.completeUploadExternal`), including the check
//! that the `upload_url` is Slack's before any byte is sent there.
//!
//! It must not retry, sleep or decide anything: every method makes exactly one HTTP request per
//! step and reports what happened. The runner retries on its persisted schedule, using
//! [`SlackError::is_retryable`] and [`SlackError::retry_after`].

use std::fmt;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Map, Value, json};

use crate::domain::{ChannelId, MessageTs, ParseError, Secret, SlackUserGroupId, SlackUserId};
use crate::slack::Message;

/// The first and last steps of Slack's external file upload.
const GET_UPLOAD_URL: &str = "files.getUploadURLExternal";
const COMPLETE_UPLOAD: &str = "files.completeUploadExternal";
/// How the middle step (the POST of the bytes to `upload_url`) is named in errors and metrics.
const UPLOAD_STEP: &str = "upload_url";

/// Where production uploads go: `files.getUploadURLExternal` answers
/// `https://files.slack.com/upload/v1/…`.
const SLACK_UPLOAD_HOST: &str = "files.slack.com";

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

/// A Slack file id (`F…`), as `files.getUploadURLExternal` hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlackFileId(String);

impl SlackFileId {
    /// `F` and 2–40 upper-case letters or digits, e.g. `F044GKUHN9Z`. It goes back into a
    /// request body, so it is checked like every other id that comes from outside.
    pub fn parse(s: &str) -> Result<SlackFileId, ParseError> {
        let valid = s.len() >= 3
            && s.len() <= 41
            && s.starts_with('F')
            && s.bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if valid {
            Ok(SlackFileId(s.to_string()))
        } else {
            Err(ParseError::new(format!("`{s}` is not a Slack file id")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SlackFileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One file to share in a thread with [`SlackClient::upload_file`].
#[derive(Clone, PartialEq, Eq)]
pub struct FileUpload {
    /// The file's name in Slack, e.g. `prod-jobs-memory.png`; Slack infers the type from it
    /// and from the bytes.
    pub filename: String,
    /// The title shown above the file. A retry recognises an earlier upload by it (see
    /// [`SlackClient::thread_files`]), so it should be unique within the thread.
    pub title: String,
    /// A description for screen readers (`alt_txt`; Slack allows 1,000 characters).
    pub alt_text: Option<String>,
    /// Message text posted with the file (`initial_comment`).
    pub initial_comment: Option<String>,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for FileUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileUpload")
            .field("filename", &self.filename)
            .field("title", &self.title)
            .field("alt_text", &self.alt_text)
            .field("initial_comment", &self.initial_comment)
            .field("bytes", &format_args!("{} bytes", self.bytes.len()))
            .finish()
    }
}

/// A file Slack accepted and shared (the answer of `files.completeUploadExternal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedFile {
    pub file_id: SlackFileId,
    pub title: String,
}

/// A file attached to a message of a thread, as `conversations.replies` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadFile {
    pub file_id: SlackFileId,
    /// The file name (`name`), when Slack says.
    pub name: Option<String>,
    /// The title (`title`), when Slack says.
    pub title: Option<String>,
    /// The message (the thread's parent or a reply) the file is attached to.
    pub message_ts: MessageTs,
}

/// Where `files.getUploadURLExternal` told us to send the bytes.
struct UploadTicket {
    upload_url: String,
    file_id: SlackFileId,
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

    /// views.open: show `view` (a modal) to the person whose click carried `trigger_id`
    /// (valid for 3 seconds after the click).
    pub async fn open_view(&self, trigger_id: &str, view: &Value) -> Result<(), SlackError> {
        let body = json!({ "trigger_id": trigger_id, "view": view });
        self.call_json("views.open", &body).await.map(|_| ())
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
            cursor = next_cursor(&answer);
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

    /// `apps.connections.open`, with an app-level token (`xapp-…`, scope `connections:write`):
    /// a WebSocket URL for one Socket Mode connection. The URL carries a one-time ticket, so it
    /// is a credential for a moment: callers don't log it.
    pub async fn open_socket_url(&self) -> Result<String, SlackError> {
        let answer = self.call_form("apps.connections.open", &[]).await?;
        string_field(&answer, "url").map(str::to_owned)
    }

    /// Is this a URL Slack would give us to answer on?
    pub fn is_response_url(&self, url: &str) -> bool {
        is_response_url(url, &self.base_url)
    }

    /// Share `file` as a reply in the thread under `thread_ts`, in three steps:
    /// `files.getUploadURLExternal` (form arguments `filename`, `length`, `alt_txt`), a POST of
    /// the raw bytes to the `upload_url` it answers, then `files.completeUploadExternal` with
    /// `files=[{"id", "title"}]`, `channel_id`, `thread_ts` and `initial_comment`.
    ///
    /// The `upload_url` comes from an answer, not from config, so it is followed only to
    /// `https://files.slack.com/` (or, for tests and proxies, to the configured API host when
    /// that is not Slack's own): anything else is refused before a byte is sent. The upload step
    /// carries no bot token; Slack's URL is already specific to this one file.
    ///
    /// Errors are those of the step that failed, classified like every other call. A retry
    /// after an error from the last step, or after an answer that was lost, may find the file
    /// already shared: look with [`SlackClient::thread_files`] first.
    pub async fn upload_file(
        &self,
        channel: &ChannelId,
        thread_ts: &MessageTs,
        file: FileUpload,
    ) -> Result<UploadedFile, SlackError> {
        let length = file.bytes.len().to_string();
        let mut args = vec![
            ("filename", file.filename.as_str()),
            ("length", length.as_str()),
        ];
        if let Some(alt) = &file.alt_text {
            args.push(("alt_txt", alt.as_str()));
        }
        let answer = self.call_form(GET_UPLOAD_URL, &args).await?;
        let ticket = parse_upload_ticket(&answer)?;
        if !self.is_upload_url(&ticket.upload_url) {
            return Err(SlackError::BadResponse(format!(
                "refusing to send a file to an upload_url outside Slack ({})",
                origin(&ticket.upload_url)
            )));
        }
        let body = complete_upload_body(channel, thread_ts, &ticket.file_id, &file);
        self.send_upload(&ticket.upload_url, file.bytes).await?;
        let answer = self.call_json(COMPLETE_UPLOAD, &body).await?;
        parse_completed(&answer, &ticket.file_id, &file.title)
    }

    /// The files attached to the thread under `thread_ts` (its parent and replies, oldest
    /// first; `conversations.replies`, which needs `channels:history` / `groups:history`).
    /// Looks through at most 1,000 messages. A caller about to retry an upload looks here for
    /// one with the same title, so that a lost answer does not post the file twice.
    pub async fn thread_files(
        &self,
        channel: &ChannelId,
        thread_ts: &MessageTs,
    ) -> Result<Vec<ThreadFile>, SlackError> {
        let mut found = Vec::new();
        let mut cursor = String::new();
        for _ in 0..5 {
            let mut args = vec![
                ("channel", channel.as_str()),
                ("ts", thread_ts.as_str()),
                ("limit", "200"),
            ];
            if !cursor.is_empty() {
                args.push(("cursor", cursor.as_str()));
            }
            let answer = self.call_form("conversations.replies", &args).await?;
            found.extend(parse_thread_files(&answer));
            cursor = next_cursor(&answer);
            if cursor.is_empty() {
                break;
            }
        }
        Ok(found)
    }

    /// Is this a URL Slack would give us to upload a file to?
    pub fn is_upload_url(&self, url: &str) -> bool {
        is_upload_url(url, &self.base_url)
    }

    /// The middle step of an upload: the raw bytes, no token. Slack answers 200 when it has
    /// them; anything else is a failure.
    async fn send_upload(&self, url: &str, bytes: Vec<u8>) -> Result<(), SlackError> {
        tracing::debug!(bytes = bytes.len(), "uploading a file to Slack");
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        let result = match request.send().await {
            Err(e) => Err(transport_error(e)),
            Ok(response) => match response.status().as_u16() {
                200 => Ok(()),
                429 => Err(SlackError::RateLimited {
                    retry_after: parse_retry_after(
                        response
                            .headers()
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok()),
                    ),
                }),
                status => Err(SlackError::Http { status }),
            },
        };
        crate::telemetry::slack_delivery(UPLOAD_STEP.to_string(), result.is_ok());
        if let Err(e) = &result {
            tracing::debug!(step = UPLOAD_STEP, error = %e, "Slack upload failed");
        }
        result
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

/// Is this a URL to send a file's bytes to: Slack's own `https://files.slack.com/…`, or (tests,
/// proxies) a URL on the configured API host `api_base`, unless that host is Slack's own API
/// host, which never receives uploads? URLs with credentials in them are never followed.
pub fn is_upload_url(url: &str, api_base: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    if url.scheme() == "https" && url.host_str() == Some(SLACK_UPLOAD_HOST) && url.port().is_none()
    {
        return true;
    }
    let Ok(base) = reqwest::Url::parse(api_base) else {
        return false;
    };
    let slacks_own = base
        .host_str()
        .is_some_and(|h| h == "slack.com" || h.ends_with(".slack.com"));
    !slacks_own
        && url.scheme() == base.scheme()
        && url.host_str().is_some()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
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

fn parse_upload_ticket(object: &Map<String, Value>) -> Result<UploadTicket, SlackError> {
    let file_id = SlackFileId::parse(string_field(object, "file_id")?)
        .map_err(|e| SlackError::BadResponse(e.to_string()))?;
    Ok(UploadTicket {
        upload_url: string_field(object, "upload_url")?.to_string(),
        file_id,
    })
}

/// `files.completeUploadExternal` as JSON (Slack documents JSON and form bodies; JSON keeps
/// `files` an array rather than a JSON string inside a form field).
fn complete_upload_body(
    channel: &ChannelId,
    thread_ts: &MessageTs,
    file_id: &SlackFileId,
    file: &FileUpload,
) -> Value {
    let mut body = json!({
        "files": [{ "id": file_id.as_str(), "title": file.title }],
        "channel_id": channel.as_str(),
        "thread_ts": thread_ts.as_str(),
    });
    if let Some(comment) = &file.initial_comment {
        body["initial_comment"] = Value::String(comment.clone());
    }
    body
}

/// The file we completed, from Slack's `files` list (which may be absent; when present it must
/// name our file).
fn parse_completed(
    object: &Map<String, Value>,
    file_id: &SlackFileId,
    title: &str,
) -> Result<UploadedFile, SlackError> {
    let Some(files) = object.get("files").and_then(Value::as_array) else {
        return Ok(UploadedFile {
            file_id: file_id.clone(),
            title: title.to_string(),
        });
    };
    let ours = files
        .iter()
        .find(|f| f["id"].as_str() == Some(file_id.as_str()))
        .ok_or_else(|| {
            SlackError::BadResponse(format!("the answer's `files` do not include {file_id}"))
        })?;
    Ok(UploadedFile {
        file_id: file_id.clone(),
        title: ours["title"].as_str().unwrap_or(title).to_string(),
    })
}

/// Every file of every message in a `conversations.replies` (or history) answer; files and
/// messages that cannot be read are skipped.
fn parse_thread_files(object: &Map<String, Value>) -> Vec<ThreadFile> {
    let messages = object
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut found = Vec::new();
    for m in messages {
        let Some(ts) = m["ts"].as_str().and_then(|t| MessageTs::parse(t).ok()) else {
            continue;
        };
        let files = m["files"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        for f in files {
            let Some(file_id) = f["id"].as_str().and_then(|id| SlackFileId::parse(id).ok()) else {
                continue;
            };
            found.push(ThreadFile {
                file_id,
                name: f["name"].as_str().map(str::to_owned),
                title: f["title"].as_str().map(str::to_owned),
                message_ts: ts.clone(),
            });
        }
    }
    found
}

fn next_cursor(object: &Map<String, Value>) -> String {
    object
        .get("response_metadata")
        .and_then(|r| r.get("next_cursor"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
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

    fn png_upload() -> FileUpload {
        FileUpload {
            filename: "r-k3m9x2qa-memory-start.png".into(),
            title: "prod-jobs memory, run r-k3m9x2qa start".into(),
            alt_text: Some("Memory use of prod-jobs".into()),
            initial_comment: None,
            bytes: b"\x89PNG\r\n\x1a\n".to_vec(),
        }
    }

    #[test]
    fn the_documented_upload_url_answer_gives_the_url_and_file_id() {
        let body = fixture("slack_files_getUploadURLExternal_response.json");
        let answer = interpret(GET_UPLOAD_URL, 200, None, &body).unwrap();
        let ticket = parse_upload_ticket(&answer).unwrap();
        assert_eq!(ticket.file_id.as_str(), "F123ABC456");
        assert_eq!(
            ticket.upload_url,
            "https://files.slack.com/upload/v1/ABC123..."
        );
        assert!(is_upload_url(
            &ticket.upload_url,
            SlackClient::DEFAULT_BASE_URL
        ));
    }

    #[test]
    fn an_upload_url_answer_without_a_file_id_is_a_bad_response() {
        for body in [
            &br#"{"ok":true,"upload_url":"https://files.slack.com/upload/v1/A"}"#[..],
            br#"{"ok":true,"upload_url":"https://files.slack.com/upload/v1/A","file_id":"../x"}"#,
            br#"{"ok":true,"file_id":"F123ABC456"}"#,
        ] {
            let answer = interpret(GET_UPLOAD_URL, 200, None, body).unwrap();
            let err = parse_upload_ticket(&answer).err().expect("refused");
            assert!(matches!(err, SlackError::BadResponse(_)), "{err:?}");
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn the_documented_complete_answer_names_our_file_and_its_title() {
        let body = fixture("slack_files_completeUploadExternal_response.json");
        let answer = interpret(COMPLETE_UPLOAD, 200, None, &body).unwrap();
        let id = SlackFileId::parse("F123ABC456").unwrap();
        assert_eq!(
            parse_completed(&answer, &id, "ignored").unwrap(),
            UploadedFile {
                file_id: id.clone(),
                title: "slack-test".into()
            }
        );
        let other = SlackFileId::parse("F999").unwrap();
        assert!(matches!(
            parse_completed(&answer, &other, "t"),
            Err(SlackError::BadResponse(_))
        ));
        let bare = interpret(COMPLETE_UPLOAD, 200, None, br#"{"ok":true}"#).unwrap();
        assert_eq!(parse_completed(&bare, &other, "t").unwrap().title, "t");
    }

    #[test]
    fn upload_urls_are_slacks_files_host_or_a_test_api_host_only() {
        let prod = SlackClient::DEFAULT_BASE_URL;
        let local = "http://127.0.0.1:4000/api";
        for (url, base, allowed) in [
            ("https://files.slack.com/upload/v1/ABC", prod, true),
            ("https://files.slack.com/upload/v1/ABC", local, true),
            ("http://files.slack.com/upload/v1/ABC", prod, false),
            ("https://files.slack.com:8443/upload/v1/ABC", prod, false),
            ("https://files.slack.com.evil.example/upload", prod, false),
            ("https://files.slack.com@evil.example/upload", prod, false),
            ("https://user:pw@files.slack.com/upload", prod, false),
            (
                "https://evil.example/?https://files.slack.com/",
                prod,
                false,
            ),
            // Slack's API host itself never receives uploads.
            ("https://slack.com/upload/v1/ABC", prod, false),
            ("http://127.0.0.1:4000/upload/v1/F1", local, true),
            ("http://127.0.0.1:4001/upload/v1/F1", local, false),
            ("http://127.0.0.2:4000/upload/v1/F1", local, false),
            ("https://127.0.0.1:4000/upload/v1/F1", local, false),
            ("http://127.0.0.1:4000@evil.example/F1", local, false),
            ("not a url", local, false),
            ("", prod, false),
        ] {
            assert_eq!(is_upload_url(url, base), allowed, "{url} with base {base}");
        }
    }

    #[test]
    fn complete_body_shares_the_file_in_the_thread() {
        let ts = MessageTs::parse("1503435956.000247").unwrap();
        let id = SlackFileId::parse("F123ABC456").unwrap();
        let mut file = png_upload();
        assert_eq!(
            complete_upload_body(&channel(), &ts, &id, &file),
            json!({
                "files": [{"id": "F123ABC456", "title": "prod-jobs memory, run r-k3m9x2qa start"}],
                "channel_id": "C123ABC456",
                "thread_ts": "1503435956.000247",
            })
        );
        file.initial_comment = Some("Memory now".into());
        let body = complete_upload_body(&channel(), &ts, &id, &file);
        assert_eq!(body["initial_comment"], "Memory now");
    }

    #[test]
    fn thread_files_are_read_from_every_message_and_bad_entries_are_skipped() {
        let body = br#"{"ok":true,"messages":[
            {"ts":"1503435956.000247","text":"top"},
            {"ts":"1503435956.000300","files":[{"id":"F1AB","name":"a.png","title":"A"},{"id":"bad"}]},
            {"ts":"nope","files":[{"id":"F2CD"}]},
            {"ts":"1503435956.000400","files":[{"id":"F3EF"}]}
        ]}"#;
        let answer = interpret("conversations.replies", 200, None, body).unwrap();
        let files = parse_thread_files(&answer);
        assert_eq!(
            files,
            vec![
                ThreadFile {
                    file_id: SlackFileId::parse("F1AB").unwrap(),
                    name: Some("a.png".into()),
                    title: Some("A".into()),
                    message_ts: MessageTs::parse("1503435956.000300").unwrap(),
                },
                ThreadFile {
                    file_id: SlackFileId::parse("F3EF").unwrap(),
                    name: None,
                    title: None,
                    message_ts: MessageTs::parse("1503435956.000400").unwrap(),
                },
            ]
        );
    }

    #[test]
    fn file_ids_are_f_and_capitals_or_digits() {
        assert!(SlackFileId::parse("F044GKUHN9Z").is_ok());
        for bad in ["", "F", "F1", "f044", "C044GKUHN9Z", "F04 4", "F04/../x"] {
            assert!(SlackFileId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_of_an_upload_shows_its_size_not_its_bytes() {
        let shown = format!("{:?}", png_upload());
        assert!(shown.contains("8 bytes"), "{shown}");
        assert!(!shown.contains("137"), "{shown}");
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
