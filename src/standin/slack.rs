//! A local stand-in for Slack's Web API, and a reader that shows its channels as a person would.
//!
//! It owns a real HTTP server on 127.0.0.1 (port 0) that speaks the Web API's wire format for
//! the methods the bot uses: bearer or form token, JSON bodies for write methods, form or
//! query arguments for read methods, `ok:false` errors on HTTP 200, and 429 with `Retry-After`.
//! It also takes Slack's external file upload: `files.getUploadURLExternal` hands out an
//! upload URL on this same server (`/upload/v1/F…`, which takes the raw bytes and no token),
//! and `files.completeUploadExternal` shares the file as a message with a `files` array.
//! It records every call, keeps channels, threads, edit histories and files, and can be told
//! to fail. It speaks Socket Mode too: `apps.connections.open` (with the app-level token) leads
//! to the WebSocket server of [`crate::standin::socket_mode`].
//! [`render_blocks`] and [`render_transcript`] turn Block Kit into text a person can read, for
//! the `demo` command and for test failures.
//!
//! It must never be used by `serve`, and it is not a Slack simulator beyond what the bot needs:
//! no users, no channel membership, no scopes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, oneshot};

use crate::domain::{ChannelId, MessageTs, SlackUserGroupId, SlackUserId};
use crate::slack::Message;
use crate::standin::socket_mode::FakeSocketMode;

/// Methods Slack documents as form-encoded only: their arguments in a JSON body are ignored,
/// just as Slack ignores them.
const FORM_ONLY_METHODS: &[&str] = &[
    "chat.getPermalink",
    "usergroups.users.list",
    "conversations.history",
    "conversations.replies",
];

/// The name under which uploads of file bytes to an upload URL are recorded in
/// [`FakeSlackHandle::calls`] and can be failed with [`FakeSlackHandle::fail_next`].
pub const UPLOAD_STEP: &str = "upload";

/// Slack's limit on `alt_txt`.
const MAX_ALT_TEXT_CHARS: usize = 1000;

/// The workspace domain used in permalinks.
const WORKSPACE_URL: &str = "https://example.slack.com";

/// What the stand-in should do instead of answering a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 429 with `Retry-After: retry_after_secs` and `{"ok":false,"error":"ratelimited"}`.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 200 with `{"ok":false,"error":…}`, e.g. `channel_not_found`.
    Error(&'static str),
    /// This HTTP status with a non-JSON body, as a load balancer would answer.
    Http(u16),
    /// Do the work (post the message), then answer this HTTP status anyway: what a caller sees
    /// when Slack accepted a request but the answer was lost (a timeout, a proxy's 5xx).
    AcceptThenFail(u16),
    /// Take the call, wait this long, and only then do the work and answer: a Slack that
    /// stores a post after the caller gave up on it (and after a retry looked for it).
    StoreLate(std::time::Duration),
}

/// One request as the stand-in received it. `body` holds every argument (JSON body, form body
/// and query string merged into one JSON object); a `token` argument is left out.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackCall {
    pub method: String,
    pub body: Value,
}

/// A message in a channel, as it looks now, with its history and thread.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeMessage {
    /// Message metadata (`event_type`, `event_payload`) as posted, if any.
    pub metadata: Option<Value>,
    pub ts: MessageTs,
    pub text: String,
    pub blocks: Vec<Value>,
    /// Earlier versions, oldest first; empty when the message was never edited.
    pub edits: Vec<Message>,
    /// Thread replies, oldest first (always empty for a reply itself).
    pub replies: Vec<FakeMessage>,
    /// Files shared with the message (`files.completeUploadExternal`), as Slack lists them in
    /// a message: `id`, `name`, `title`, `size`.
    pub files: Vec<Value>,
}

impl FakeMessage {
    /// The message's current text and blocks.
    pub fn message(&self) -> Message {
        Message {
            text: self.text.clone(),
            blocks: self.blocks.clone(),
        }
    }

    /// The current version as a person would read it, with a `[file: title]` line per file.
    pub fn rendered(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        let text = render_blocks(&self.message());
        if !text.is_empty() {
            lines.push(text);
        }
        for f in &self.files {
            lines.push(format!(
                "[file: {}]",
                f["title"].as_str().or(f["name"].as_str()).unwrap_or("")
            ));
        }
        lines.join("\n")
    }
}

/// A file as the stand-in knows it: from `files.getUploadURLExternal` on, with its bytes once
/// they were sent to the upload URL, and where it was shared once the upload was completed.
#[derive(Clone, PartialEq, Eq)]
pub struct FakeFile {
    pub file_id: String,
    /// `filename` as given to `files.getUploadURLExternal`.
    pub name: String,
    /// The title given to `files.completeUploadExternal` (the name when it gave none).
    pub title: Option<String>,
    pub alt_text: Option<String>,
    /// `length` as given to `files.getUploadURLExternal`.
    pub declared_length: usize,
    /// What arrived at the upload URL, once it did.
    pub bytes: Option<Vec<u8>>,
    /// Did the upload step carry an `Authorization` header (Slack's needs none)?
    pub upload_had_authorization: bool,
    /// Did the upload step carry the bot token anywhere (header or query string)?
    pub upload_had_bot_token: bool,
    /// Set by `files.completeUploadExternal`.
    pub completed: bool,
    pub channel: Option<ChannelId>,
    pub thread_ts: Option<MessageTs>,
    /// The message that shares the file.
    pub message_ts: Option<MessageTs>,
}

impl fmt::Debug for FakeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeFile")
            .field("file_id", &self.file_id)
            .field("name", &self.name)
            .field("title", &self.title)
            .field("declared_length", &self.declared_length)
            .field("bytes", &self.bytes.as_ref().map(Vec::len))
            .field("upload_had_authorization", &self.upload_had_authorization)
            .field("upload_had_bot_token", &self.upload_had_bot_token)
            .field("completed", &self.completed)
            .field("channel", &self.channel)
            .field("thread_ts", &self.thread_ts)
            .field("message_ts", &self.message_ts)
            .finish()
    }
}

/// A message only one person saw.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeEphemeral {
    pub channel: ChannelId,
    pub user: SlackUserId,
    pub ts: MessageTs,
    pub thread_ts: Option<MessageTs>,
    pub text: String,
    pub blocks: Vec<Value>,
}

impl FakeEphemeral {
    pub fn message(&self) -> Message {
        Message {
            text: self.text.clone(),
            blocks: self.blocks.clone(),
        }
    }
}

/// A modal the bot opened (views.open).
#[derive(Debug, Clone, PartialEq)]
pub struct FakeView {
    pub id: String,
    pub trigger_id: String,
    pub view: Value,
}

/// Something that just happened in the stand-in's workspace, for a live view such as `demo`.
#[derive(Debug, Clone, PartialEq)]
pub enum SlackEvent {
    /// A new message, or a thread reply when `thread_ts` is set.
    Posted {
        channel: ChannelId,
        ts: MessageTs,
        thread_ts: Option<MessageTs>,
        rendered: String,
    },
    /// A message was replaced; `rendered` is its new version.
    Updated {
        channel: ChannelId,
        ts: MessageTs,
        rendered: String,
    },
    /// A message only `user` sees.
    Ephemeral {
        channel: ChannelId,
        user: SlackUserId,
        rendered: String,
    },
    /// A message sent to a `response_url` (shown only to the person who acted).
    Responded { rendered: String },
}

/// A message the bot sent to a `response_url` (a delayed answer to a command or a click).
#[derive(Debug, Clone, PartialEq)]
pub struct FakeResponse {
    /// The last path segment of the `response_url`.
    pub id: String,
    pub body: Value,
    pub text: String,
}

/// Namespace for starting the stand-in.
pub struct FakeSlack;

impl FakeSlack {
    /// Start a stand-in on 127.0.0.1 that accepts `expected_token` as the bot token. It stops
    /// when the last clone of the returned handle is dropped.
    pub async fn spawn(expected_token: &str) -> anyhow::Result<FakeSlackHandle> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(1024);
        let mut workspace = Workspace::new(now_secs());
        workspace.upload_base = format!("http://{addr}/upload/v1");
        let shared = Arc::new(Shared {
            expected_token: expected_token.to_string(),
            state: Mutex::new(workspace),
            events,
            socket: FakeSocketMode::spawn().await?,
        });
        let app = Router::new()
            .route("/api/apps.connections.open", any(connections_open))
            .route("/api/{method}", any(handle))
            .route("/responses/{id}", axum::routing::post(respond))
            .route("/upload/v1/{file_id}", axum::routing::post(upload))
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
                tracing::warn!(error = %e, "the Slack stand-in stopped");
            }
        });
        Ok(FakeSlackHandle {
            shared,
            addr,
            _stop: Arc::new(stop),
        })
    }
}

/// A running stand-in: where it listens, what it received, what its channels look like.
#[derive(Clone)]
pub struct FakeSlackHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Dropped with the last handle, which stops the server.
    _stop: Arc<oneshot::Sender<()>>,
}

impl fmt::Debug for FakeSlackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeSlackHandle")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

impl FakeSlackHandle {
    /// The Web API base URL, `http://127.0.0.1:PORT/api` (what `SLACK_API_URL` would be).
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every call received so far, in order, including rejected and failed ones.
    pub fn calls(&self) -> Vec<SlackCall> {
        self.shared.lock().calls.clone()
    }

    /// How many calls of `method` were received (including rejected and failed ones).
    pub fn count(&self, method: &str) -> usize {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    /// Answer the next `n` calls of `method` with `fault` instead of handling them.
    pub fn fail_next(&self, method: &str, n: usize, fault: Fault) {
        let mut state = self.shared.lock();
        let queue = state.faults.entry(method.to_string()).or_default();
        queue.extend(std::iter::repeat_n(fault, n));
    }

    /// From now on answer a random `rate_limited` fraction of Web API calls (any method) with
    /// 429 and `Retry-After: 1`, and another `unavailable` fraction with 503, before the call
    /// does or stores anything; `(0.0, 0.0)` stops it. Faults queued with
    /// [`FakeSlackHandle::fail_next`] come first. The choice is seeded, so a run repeats.
    ///
    /// # Panics
    /// When a fraction is outside 0–1 or both add up to more than 1.
    pub fn set_fault_fractions(&self, rate_limited: f64, unavailable: f64) {
        assert!(
            (0.0..=1.0).contains(&rate_limited)
                && (0.0..=1.0).contains(&unavailable)
                && rate_limited + unavailable <= 1.0,
            "fault fractions must be within 0–1 and add up to at most 1: {rate_limited}, {unavailable}"
        );
        self.shared.lock().random_faults = RandomFaults::new(rate_limited, unavailable);
    }

    /// Seed the choice of [`FakeSlackHandle::set_fault_fractions`] (it starts from a fixed
    /// seed): the same seed, the same calls fail.
    pub fn set_fault_seed(&self, seed: u64) {
        // xorshift's state must not be zero.
        self.shared.lock().random_faults.rng = seed | 1;
    }

    /// How many calls the random faults answered so far: `(429s, 503s)`.
    pub fn random_faults_injected(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (
            state.random_faults.rate_limited_sent,
            state.random_faults.unavailable_sent,
        )
    }

    /// From now on every Web API call is answered `latency` after it was taken (what it does
    /// is done, and stored, at once): a slow Slack.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.shared.lock().latency = latency;
    }

    /// When the stand-in sent its first answer to a Web API call taken at or after `since`,
    /// if it has sent one.
    pub fn first_answer_to_a_call_since(
        &self,
        since: std::time::Instant,
    ) -> Option<std::time::Instant> {
        let state = self.shared.lock();
        let answers = state.answer_times.iter();
        answers
            .filter(|(taken, _)| *taken >= since)
            .map(|(_, a)| *a)
            .min()
    }

    /// The messages removed with chat.delete, in order.
    pub fn deleted(&self) -> Vec<(ChannelId, MessageTs)> {
        self.shared.lock().deleted.clone()
    }

    /// Set the members of a user group (`usergroups.users.list` answers `no_such_subteam` for
    /// groups never set).
    pub fn set_usergroup(&self, group: &SlackUserGroupId, members: Vec<SlackUserId>) {
        self.shared.lock().usergroups.insert(group.clone(), members);
    }

    /// The channel's top-level messages, oldest first, each with its thread.
    pub fn messages(&self, channel: &ChannelId) -> Vec<FakeMessage> {
        self.shared
            .lock()
            .channels
            .get(channel)
            .cloned()
            .unwrap_or_default()
    }

    /// One message (top-level or reply) by its `ts`.
    pub fn message(&self, channel: &ChannelId, ts: &MessageTs) -> Option<FakeMessage> {
        let state = self.shared.lock();
        let messages = state.channels.get(channel)?;
        messages
            .iter()
            .flat_map(|m| std::iter::once(m).chain(m.replies.iter()))
            .find(|m| &m.ts == ts)
            .cloned()
    }

    /// Every file, from `files.getUploadURLExternal` on (uploaded or not, shared or not), in
    /// the order their upload URLs were handed out.
    pub fn files(&self) -> Vec<FakeFile> {
        self.shared.lock().files.clone()
    }

    /// The files shared in `channel` (completed uploads), in order.
    pub fn uploaded_files(&self, channel: &ChannelId) -> Vec<FakeFile> {
        self.shared
            .lock()
            .files
            .iter()
            .filter(|f| f.completed && f.channel.as_ref() == Some(channel))
            .cloned()
            .collect()
    }

    /// Hand out upload URLs under `base` (`{base}/F…`) instead of this stand-in's own
    /// `/upload/v1`: e.g. another stand-in's, to see that a client refuses to send bytes to a
    /// host that isn't Slack's.
    pub fn set_upload_url_base(&self, base: &str) {
        self.shared.lock().upload_base = base.trim_end_matches('/').to_string();
    }

    /// Also write each shared file's bytes to `dir` (created when missing) as
    /// `F…-<filename>`, for a person to open; the demo prints the folder.
    pub fn save_files_to(&self, dir: impl Into<PathBuf>) {
        self.shared.lock().save_files_to = Some(dir.into());
    }

    /// The channels that have messages.
    pub fn channels(&self) -> Vec<ChannelId> {
        self.shared.lock().channels.keys().cloned().collect()
    }

    /// Every ephemeral message, in order.
    /// A `response_url` that leads to this stand-in, as Slack would put in a command or click.
    pub fn response_url(&self, id: &str) -> String {
        format!("http://{}/responses/{id}", self.addr)
    }

    /// What the bot sent to `response_url`s, in order.
    pub fn responses(&self) -> Vec<FakeResponse> {
        self.shared.lock().responses.clone()
    }

    /// The modals opened with views.open, in order.
    pub fn views(&self) -> Vec<FakeView> {
        self.shared.lock().views.clone()
    }

    pub fn ephemerals(&self) -> Vec<FakeEphemeral> {
        self.shared.lock().ephemerals.clone()
    }

    /// The ephemeral messages `user` saw, in order.
    pub fn ephemerals_for(&self, user: &SlackUserId) -> Vec<FakeEphemeral> {
        self.shared
            .lock()
            .ephemerals
            .iter()
            .filter(|e| &e.user == user)
            .cloned()
            .collect()
    }

    /// The channel as a person would read it: see [`render_transcript`].
    pub fn transcript(&self, channel: &ChannelId) -> String {
        render_transcript(channel, &self.messages(channel))
    }

    /// Socket Mode: the WebSocket server `apps.connections.open` leads to (set the app token
    /// it accepts with [`FakeSocketMode::set_app_token`]).
    pub fn socket_mode(&self) -> &FakeSocketMode {
        &self.shared.socket
    }

    /// A live feed of posts, updates and ephemeral messages from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SlackEvent> {
        self.shared.events.subscribe()
    }
}

struct Shared {
    expected_token: String,
    state: Mutex<Workspace>,
    events: broadcast::Sender<SlackEvent>,
    /// Socket Mode: `apps.connections.open` hands out its URLs.
    socket: FakeSocketMode,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Workspace> {
        // A panic in one handler must not take the whole stand-in down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Everything the stand-in remembers.
struct Workspace {
    calls: Vec<SlackCall>,
    faults: HashMap<String, VecDeque<Fault>>,
    channels: BTreeMap<ChannelId, Vec<FakeMessage>>,
    ephemerals: Vec<FakeEphemeral>,
    views: Vec<FakeView>,
    responses: Vec<FakeResponse>,
    usergroups: HashMap<SlackUserGroupId, Vec<SlackUserId>>,
    random_faults: RandomFaults,
    /// Top-level messages removed with chat.delete.
    deleted: Vec<(ChannelId, MessageTs)>,
    /// Every Web API call is answered this long after it was taken (and stored).
    latency: std::time::Duration,
    /// For each Web API call answered in the ordinary way: when it was taken and when its
    /// answer was sent (after `latency`).
    answer_times: Vec<(std::time::Instant, std::time::Instant)>,
    /// `ts` seconds of the first message; later ones count up from it.
    base_secs: u64,
    issued: u64,
    /// Files from `files.getUploadURLExternal` on, in order.
    files: Vec<FakeFile>,
    /// Upload URLs are `{upload_base}/{file_id}`.
    upload_base: String,
    /// Where shared files are also written, if anywhere.
    save_files_to: Option<PathBuf>,
}

/// A fraction of calls answered 429 or 503 at random, as a busy Slack does
/// ([`FakeSlackHandle::set_fault_fractions`]).
struct RandomFaults {
    rate_limited: f64,
    unavailable: f64,
    /// xorshift64* state: the same fractions give the same sequence of faults.
    rng: u64,
    rate_limited_sent: usize,
    unavailable_sent: usize,
}

impl RandomFaults {
    fn new(rate_limited: f64, unavailable: f64) -> RandomFaults {
        RandomFaults {
            rate_limited,
            unavailable,
            rng: 0x9E37_79B9_7F4A_7C15,
            rate_limited_sent: 0,
            unavailable_sent: 0,
        }
    }

    /// The fault for the next call, if it gets one.
    fn pick(&mut self) -> Option<Fault> {
        if self.rate_limited <= 0.0 && self.unavailable <= 0.0 {
            return None;
        }
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let draw =
            (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        if draw < self.rate_limited {
            self.rate_limited_sent += 1;
            Some(Fault::RateLimited {
                retry_after_secs: 1,
            })
        } else if draw < self.rate_limited + self.unavailable {
            self.unavailable_sent += 1;
            Some(Fault::Http(503))
        } else {
            None
        }
    }
}

/// A refusal: Slack's error string, and details for `response_metadata.messages`.
struct Refusal {
    error: &'static str,
    messages: Vec<String>,
}

impl Refusal {
    fn new(error: &'static str) -> Refusal {
        Refusal {
            error,
            messages: Vec::new(),
        }
    }
}

type Outcome = Result<(Map<String, Value>, Option<SlackEvent>), Refusal>;

impl Workspace {
    fn new(base_secs: u64) -> Workspace {
        Workspace {
            calls: Vec::new(),
            faults: HashMap::new(),
            channels: BTreeMap::new(),
            ephemerals: Vec::new(),
            views: Vec::new(),
            responses: Vec::new(),
            usergroups: HashMap::new(),
            random_faults: RandomFaults::new(0.0, 0.0),
            deleted: Vec::new(),
            latency: std::time::Duration::ZERO,
            answer_times: Vec::new(),
            base_secs,
            issued: 0,
            files: Vec::new(),
            upload_base: String::new(),
            save_files_to: None,
        }
    }

    /// A fresh, strictly increasing, realistic `ts` such as `1764121929.000100`.
    fn next_ts(&mut self) -> MessageTs {
        self.issued += 1;
        let micros = self.issued * 100;
        let ts = format!(
            "{}.{:06}",
            self.base_secs + micros / 1_000_000,
            micros % 1_000_000
        );
        MessageTs::parse(&ts).expect("generated timestamps are well formed")
    }

    /// A queued fault for `method`, else maybe a random one.
    fn take_fault(&mut self, method: &str) -> Option<Fault> {
        match self.faults.get_mut(method).and_then(VecDeque::pop_front) {
            Some(fault) => Some(fault),
            None => self.random_faults.pick(),
        }
    }

    fn dispatch(&mut self, method: &str, args: &Map<String, Value>) -> Outcome {
        match method {
            "chat.postMessage" => self.post_message(args),
            "chat.update" => self.update(args),
            "chat.delete" => self.delete(args),
            "chat.getPermalink" => self.permalink(args),
            "usergroups.users.list" => self.usergroup_members(args),
            "chat.postEphemeral" => self.post_ephemeral(args),
            "conversations.history" => self.history(args),
            "conversations.replies" => self.replies(args),
            "files.getUploadURLExternal" => self.get_upload_url(args),
            "files.completeUploadExternal" => self.complete_upload(args),
            "views.open" => self.open_view(args),
            _ => Err(Refusal::new("unknown_method")),
        }
    }

    /// views.open: a modal for the click that carried `trigger_id` (kept for tests to read and
    /// submit).
    fn open_view(&mut self, args: &Map<String, Value>) -> Outcome {
        let trigger = str_arg(args, "trigger_id")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Refusal::new("invalid_trigger_id"))?
            .to_string();
        let view = args
            .get("view")
            .filter(|v| v["type"] == "modal" && v["title"].is_object() && v["blocks"].is_array())
            .cloned()
            .ok_or_else(|| Refusal::new("invalid_arguments"))?;
        let id = format!("V0STANDIN{:04}", self.views.len() + 1);
        self.views.push(FakeView {
            id: id.clone(),
            trigger_id: trigger,
            view: view.clone(),
        });
        let mut shown = view;
        shown["id"] = json!(id);
        Ok((object(json!({ "view": shown })), None))
    }

    /// conversations.replies: the thread's parent, then its replies, oldest first. `ts` may be
    /// the parent's or a reply's, as Slack allows.
    fn replies(&mut self, args: &Map<String, Value>) -> Outcome {
        let channel = channel_arg(args)?;
        let ts = str_arg(args, "ts")
            .and_then(|s| MessageTs::parse(s).ok())
            .ok_or_else(|| Refusal::new("thread_not_found"))?;
        let limit: usize = str_arg(args, "limit")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000);
        let parent = self
            .channels
            .get(&channel)
            .ok_or_else(|| Refusal::new("channel_not_found"))?
            .iter()
            .find(|m| m.ts == ts || m.replies.iter().any(|r| r.ts == ts))
            .ok_or_else(|| Refusal::new("thread_not_found"))?;
        let messages: Vec<Value> = std::iter::once(parent)
            .chain(parent.replies.iter())
            .take(limit)
            .map(|m| listed_message(m, Some(&parent.ts)))
            .collect();
        Ok((
            object(json!({"messages": messages, "has_more": false})),
            None,
        ))
    }

    /// files.getUploadURLExternal: a file id and a URL on this server to send the bytes to.
    fn get_upload_url(&mut self, args: &Map<String, Value>) -> Outcome {
        let filename = str_arg(args, "filename")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Refusal::new("missing_argument"))?
            .to_string();
        let length = match args.get("length") {
            Some(Value::String(s)) => s.trim().parse::<usize>().ok(),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
            _ => None,
        };
        // Slack: "Typically only occurs when the `length` provided is 0."
        let length = length
            .filter(|n| *n > 0)
            .ok_or_else(|| Refusal::new("missing_argument"))?;
        let alt_text = str_arg(args, "alt_txt").map(str::to_owned);
        if alt_text
            .as_ref()
            .is_some_and(|a| a.chars().count() > MAX_ALT_TEXT_CHARS)
        {
            return Err(Refusal::new("alt_txt_too_large"));
        }
        let file_id = format!("F0STANDIN{:04}", self.files.len() + 1);
        let upload_url = format!("{}/{file_id}", self.upload_base);
        self.files.push(FakeFile {
            file_id: file_id.clone(),
            name: filename,
            title: None,
            alt_text,
            declared_length: length,
            bytes: None,
            upload_had_authorization: false,
            upload_had_bot_token: false,
            completed: false,
            channel: None,
            thread_ts: None,
            message_ts: None,
        });
        Ok((
            object(json!({"upload_url": upload_url, "file_id": file_id})),
            None,
        ))
    }

    /// files.completeUploadExternal: share uploaded files in `channel_id` (as a reply when
    /// `thread_ts` is given), in one message with a `files` array and `initial_comment` as its
    /// text. A file that was never uploaded, or was already completed, is `file_not_found` here
    /// (the stand-in's choice of error).
    fn complete_upload(&mut self, args: &Map<String, Value>) -> Outcome {
        let requested = match args.get("files") {
            Some(Value::Array(files)) => files.clone(),
            // A form body carries the array as a JSON string.
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(files)) => files,
                _ => return Err(Refusal::new("invalid_arguments")),
            },
            _ => return Err(Refusal::new("invalid_arguments")),
        };
        if requested.is_empty() {
            return Err(Refusal::new("invalid_arguments"));
        }
        let mut picked = Vec::new();
        for r in &requested {
            let id = r["id"].as_str().unwrap_or_default();
            let at = self
                .files
                .iter()
                .position(|f| f.file_id == id && f.bytes.is_some() && !f.completed)
                .ok_or_else(|| Refusal::new("file_not_found"))?;
            let title = r["title"].as_str().map(str::to_owned);
            picked.push((at, title));
        }
        let channel = match str_arg(args, "channel_id").filter(|s| !s.is_empty()) {
            None => None,
            Some(raw) => {
                Some(ChannelId::parse(raw).map_err(|_| Refusal::new("channel_not_found"))?)
            }
        };
        let thread = match (
            &channel,
            str_arg(args, "thread_ts").filter(|s| !s.is_empty()),
        ) {
            (_, None) => None,
            (None, Some(_)) => return Err(Refusal::new("invalid_arguments")),
            (Some(channel), Some(raw)) => Some(self.thread_parent(channel, raw)?),
        };
        let mut listed = Vec::new();
        for (at, title) in &picked {
            let file = &mut self.files[*at];
            file.title = Some(title.clone().unwrap_or_else(|| file.name.clone()));
            file.completed = true;
            file.channel = channel.clone();
            file.thread_ts = thread.clone();
            listed.push(file_json(file));
        }
        let answer_files: Vec<Value> = listed
            .iter()
            .map(|f| json!({"id": f["id"], "title": f["title"]}))
            .collect();
        let answer = object(json!({ "files": answer_files }));
        let Some(channel) = channel else {
            // Not shared anywhere: a private file.
            return Ok((answer, None));
        };
        let ts = self.next_ts();
        for (at, _) in &picked {
            self.files[*at].message_ts = Some(ts.clone());
            self.save_file(*at);
        }
        let message = FakeMessage {
            metadata: None,
            ts: ts.clone(),
            text: str_arg(args, "initial_comment")
                .unwrap_or_default()
                .to_string(),
            blocks: Vec::new(),
            edits: Vec::new(),
            replies: Vec::new(),
            files: listed,
        };
        let rendered = message.rendered();
        let messages = self.channels.entry(channel.clone()).or_default();
        match &thread {
            Some(parent) => {
                if let Some(p) = messages.iter_mut().find(|m| &m.ts == parent) {
                    p.replies.push(message);
                }
            }
            None => messages.push(message),
        }
        let event = SlackEvent::Posted {
            channel,
            ts,
            thread_ts: thread,
            rendered,
        };
        Ok((answer, Some(event)))
    }

    /// The top-level message a `thread_ts` threads under (a reply's ts threads under its
    /// parent, as Slack does).
    fn thread_parent(&self, channel: &ChannelId, raw: &str) -> Result<MessageTs, Refusal> {
        let ts = MessageTs::parse(raw).map_err(|_| Refusal::new("thread_not_found"))?;
        self.channels
            .get(channel)
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m.ts == ts || m.replies.iter().any(|r| r.ts == ts))
            })
            .map(|m| m.ts.clone())
            .ok_or_else(|| Refusal::new("thread_not_found"))
    }

    /// Write a shared file to the folder from [`FakeSlackHandle::save_files_to`], if any. A
    /// failure is logged, never an answer: the demo's folder is a convenience.
    fn save_file(&self, at: usize) {
        let (Some(dir), Some(file)) = (&self.save_files_to, self.files.get(at)) else {
            return;
        };
        let Some(bytes) = &file.bytes else {
            return;
        };
        let path = dir.join(saved_file_name(file));
        if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, bytes)) {
            tracing::warn!(path = %path.display(), error = %e, "the Slack stand-in could not save a file");
        }
    }

    /// conversations.history: a channel's top-level messages, newest first, newer than
    /// `oldest`; metadata only with `include_all_metadata=true`.
    fn history(&mut self, args: &Map<String, Value>) -> Outcome {
        let channel = channel_arg(args)?;
        let oldest: f64 = str_arg(args, "oldest")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        let with_metadata = str_arg(args, "include_all_metadata") == Some("true");
        let limit: usize = str_arg(args, "limit")
            .and_then(|s| s.parse().ok())
            .unwrap_or(100);
        let messages: Vec<Value> = self
            .channels
            .get(&channel)
            .map(|ms| {
                ms.iter()
                    .rev()
                    .filter(|m| m.ts.as_str().parse::<f64>().unwrap_or(0.0) > oldest)
                    .take(limit)
                    .map(|m| {
                        let mut v = listed_message(m, None);
                        if with_metadata && let Some(meta) = &m.metadata {
                            v["metadata"] = meta.clone();
                        }
                        v
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((
            object(json!({"messages": messages, "has_more": false})),
            None,
        ))
    }

    fn post_message(&mut self, args: &Map<String, Value>) -> Outcome {
        let channel = channel_arg(args)?;
        let (text, blocks) = content_args(args, None)?;
        let thread_ts = match str_arg(args, "thread_ts").filter(|s| !s.is_empty()) {
            None => None,
            Some(raw) => Some(self.thread_parent(&channel, raw)?),
        };
        let ts = self.next_ts();
        let metadata = match args.get("metadata") {
            Some(Value::String(s)) => serde_json::from_str(s).ok(),
            Some(v @ Value::Object(_)) => Some(v.clone()),
            _ => None,
        };
        let message = FakeMessage {
            metadata,
            ts: ts.clone(),
            text,
            blocks,
            edits: Vec::new(),
            replies: Vec::new(),
            files: Vec::new(),
        };
        let rendered = message.rendered();
        let answer_message = message_json(&message, thread_ts.as_ref());
        let messages = self.channels.entry(channel.clone()).or_default();
        match &thread_ts {
            Some(parent) => {
                if let Some(p) = messages.iter_mut().find(|m| &m.ts == parent) {
                    p.replies.push(message);
                }
            }
            None => messages.push(message),
        }
        let answer = object(json!({
            "channel": channel.as_str(),
            "ts": ts.as_str(),
            "message": answer_message,
        }));
        let event = SlackEvent::Posted {
            channel,
            ts,
            thread_ts,
            rendered,
        };
        Ok((answer, Some(event)))
    }

    /// The `channel` and `ts` arguments, and the channel's messages.
    fn channel_and_ts(
        &mut self,
        args: &Map<String, Value>,
    ) -> Result<(ChannelId, MessageTs, &mut Vec<FakeMessage>), Refusal> {
        let channel = channel_arg(args)?;
        let ts = str_arg(args, "ts")
            .and_then(|s| MessageTs::parse(s).ok())
            .ok_or_else(|| Refusal::new("message_not_found"))?;
        let messages = self
            .channels
            .get_mut(&channel)
            .ok_or_else(|| Refusal::new("channel_not_found"))?;
        Ok((channel, ts, messages))
    }

    fn update(&mut self, args: &Map<String, Value>) -> Outcome {
        let (channel, ts, messages) = self.channel_and_ts(args)?;
        let message =
            find_message_mut(messages, &ts).ok_or_else(|| Refusal::new("message_not_found"))?;
        let previous = message.message();
        // Like Slack: absent `text` or `blocks` keep the old value; `blocks: []` clears them.
        let (text, blocks) = content_args(args, Some(&previous))?;
        message.edits.push(previous);
        message.text = text;
        message.blocks = blocks;
        let rendered = message.rendered();
        let answer = object(json!({
            "channel": channel.as_str(),
            "ts": ts.as_str(),
            "text": message.text,
            "message": message_json(message, None),
        }));
        let event = SlackEvent::Updated {
            channel,
            ts,
            rendered,
        };
        Ok((answer, Some(event)))
    }

    /// chat.delete: the message is gone from its channel (a bot may delete its own).
    fn delete(&mut self, args: &Map<String, Value>) -> Outcome {
        let (channel, ts, messages) = self.channel_and_ts(args)?;
        let at = messages
            .iter()
            .position(|m| m.ts == ts)
            .ok_or_else(|| Refusal::new("message_not_found"))?;
        messages.remove(at);
        self.deleted.push((channel.clone(), ts.clone()));
        let answer = object(json!({ "channel": channel.as_str(), "ts": ts.as_str() }));
        Ok((answer, None))
    }

    fn permalink(&mut self, args: &Map<String, Value>) -> Outcome {
        let channel = channel_arg(args)?;
        let ts = str_arg(args, "message_ts")
            .and_then(|s| MessageTs::parse(s).ok())
            .ok_or_else(|| Refusal::new("message_not_found"))?;
        let messages = self
            .channels
            .get(&channel)
            .ok_or_else(|| Refusal::new("channel_not_found"))?;
        let base = format!(
            "{WORKSPACE_URL}/archives/{}/p{}",
            channel.as_str(),
            ts.as_str().replace('.', "")
        );
        let permalink = if messages.iter().any(|m| m.ts == ts) {
            base
        } else if let Some(parent) = messages
            .iter()
            .find(|m| m.replies.iter().any(|r| r.ts == ts))
        {
            format!(
                "{base}?thread_ts={}&cid={}",
                parent.ts.as_str(),
                channel.as_str()
            )
        } else {
            return Err(Refusal::new("message_not_found"));
        };
        let answer = object(json!({"channel": channel.as_str(), "permalink": permalink}));
        Ok((answer, None))
    }

    fn usergroup_members(&mut self, args: &Map<String, Value>) -> Outcome {
        let group = str_arg(args, "usergroup")
            .and_then(|s| SlackUserGroupId::parse(s).ok())
            .ok_or_else(|| Refusal::new("no_such_subteam"))?;
        let members = self
            .usergroups
            .get(&group)
            .ok_or_else(|| Refusal::new("no_such_subteam"))?;
        let users: Vec<&str> = members.iter().map(SlackUserId::as_str).collect();
        Ok((object(json!({"users": users})), None))
    }

    fn post_ephemeral(&mut self, args: &Map<String, Value>) -> Outcome {
        let channel = channel_arg(args)?;
        let user = str_arg(args, "user")
            .and_then(|s| SlackUserId::parse(s).ok())
            .ok_or_else(|| Refusal::new("user_not_found"))?;
        let (text, blocks) = content_args(args, None)?;
        let thread_ts = str_arg(args, "thread_ts").and_then(|s| MessageTs::parse(s).ok());
        let ts = self.next_ts();
        let ephemeral = FakeEphemeral {
            channel: channel.clone(),
            user: user.clone(),
            ts: ts.clone(),
            thread_ts,
            text,
            blocks,
        };
        let rendered = render_blocks(&ephemeral.message());
        self.ephemerals.push(ephemeral);
        let event = SlackEvent::Ephemeral {
            channel,
            user,
            rendered,
        };
        Ok((object(json!({"message_ts": ts.as_str()})), Some(event)))
    }
}

/// A top-level message or a thread reply, by `ts`.
fn find_message_mut<'a>(
    messages: &'a mut [FakeMessage],
    ts: &MessageTs,
) -> Option<&'a mut FakeMessage> {
    for m in messages.iter_mut() {
        if &m.ts == ts {
            return Some(m);
        }
        if let Some(r) = m.replies.iter_mut().find(|r| &r.ts == ts) {
            return Some(r);
        }
    }
    None
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1_764_121_929)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn str_arg<'a>(args: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

fn channel_arg(args: &Map<String, Value>) -> Result<ChannelId, Refusal> {
    str_arg(args, "channel")
        .and_then(|s| ChannelId::parse(s).ok())
        .ok_or_else(|| Refusal::new("channel_not_found"))
}

/// The message content of a post or an update. For an update, `previous` fills in what the
/// call left out.
fn content_args(
    args: &Map<String, Value>,
    previous: Option<&Message>,
) -> Result<(String, Vec<Value>), Refusal> {
    let blocks = match args.get("blocks") {
        None | Some(Value::Null) => previous.map(|p| p.blocks.clone()).unwrap_or_default(),
        Some(Value::Array(blocks)) => blocks.clone(),
        Some(_) => return Err(Refusal::new("invalid_blocks_format")),
    };
    let text = match str_arg(args, "text") {
        Some(t) => t.to_string(),
        None => previous.map(|p| p.text.clone()).unwrap_or_default(),
    };
    if text.is_empty() && blocks.is_empty() {
        return Err(Refusal::new("no_text"));
    }
    if text.chars().count() > 40_000 {
        return Err(Refusal::new("msg_too_long"));
    }
    let problems = block_problems(&blocks);
    if !problems.is_empty() {
        return Err(Refusal {
            error: "invalid_blocks",
            messages: problems,
        });
    }
    Ok((text, blocks))
}

/// The Block Kit limits that real Slack enforces and that a renderer is most likely to break,
/// worded like Slack's `response_metadata.messages`.
fn block_problems(blocks: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |msg: String, pointer: String| {
        problems.push(format!("[ERROR] {msg} [json-pointer:{pointer}]"));
    };
    if blocks.len() > 50 {
        problem("no more than 50 items allowed".into(), "/blocks".into());
    }
    let text_len = |v: &Value| v["text"].as_str().map(|s| s.chars().count());
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("/blocks/{i}");
        let Some(kind) = block.get("type").and_then(Value::as_str) else {
            problem("missing required field: type".into(), at);
            continue;
        };
        match kind {
            "header" => match text_len(&block["text"]) {
                None => problem("missing required field: text".into(), format!("{at}/text")),
                Some(n) if n > 150 => problem(
                    "must be less than 151 characters".into(),
                    format!("{at}/text/text"),
                ),
                Some(_) => {}
            },
            "section" => {
                let fields = block["fields"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                if block.get("text").is_none() && fields.is_empty() {
                    problem("must provide text or fields".into(), at.clone());
                }
                if text_len(&block["text"]).is_some_and(|n| n > 3000) {
                    problem(
                        "must be less than 3001 characters".into(),
                        format!("{at}/text/text"),
                    );
                }
                if fields.len() > 10 {
                    problem(
                        "no more than 10 items allowed".into(),
                        format!("{at}/fields"),
                    );
                }
                for (j, f) in fields.iter().enumerate() {
                    if text_len(f).is_some_and(|n| n > 2000) {
                        problem(
                            "must be less than 2001 characters".into(),
                            format!("{at}/fields/{j}/text"),
                        );
                    }
                }
            }
            "actions" | "context" => {
                let max = if kind == "actions" { 25 } else { 10 };
                let elements = block["elements"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                if elements.is_empty() {
                    problem(
                        "must provide at least 1 item".into(),
                        format!("{at}/elements"),
                    );
                }
                if elements.len() > max {
                    problem(
                        format!("no more than {max} items allowed"),
                        format!("{at}/elements"),
                    );
                }
                for (j, e) in elements.iter().enumerate() {
                    if e["type"] == "button" && text_len(&e["text"]).is_some_and(|n| n > 75) {
                        problem(
                            "must be less than 76 characters".into(),
                            format!("{at}/elements/{j}/text/text"),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    problems
}

/// A message as conversations.history and conversations.replies list it.
fn listed_message(m: &FakeMessage, thread_ts: Option<&MessageTs>) -> Value {
    let mut v = json!({"type": "message", "ts": m.ts.as_str(), "text": m.text});
    if let Some(t) = thread_ts {
        v["thread_ts"] = Value::String(t.as_str().to_string());
    }
    if !m.files.is_empty() {
        v["files"] = Value::Array(m.files.clone());
    }
    v
}

/// A shared file as Slack lists it in a message.
fn file_json(file: &FakeFile) -> Value {
    json!({
        "id": file.file_id,
        "name": file.name,
        "title": file.title.as_deref().unwrap_or(&file.name),
        "size": file.bytes.as_ref().map_or(0, Vec::len),
    })
}

/// `F…-<filename>` with anything but letters, digits, `.`, `-` and `_` replaced, so a name
/// cannot leave the folder.
fn saved_file_name(file: &FakeFile) -> String {
    let safe: String = file
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}-{}", file.file_id, safe.trim_start_matches('.'))
}

/// The `message` object Slack echoes back after a post or an update.
fn message_json(message: &FakeMessage, thread_ts: Option<&MessageTs>) -> Value {
    let mut m = json!({
        "type": "message",
        "subtype": "bot_message",
        "bot_id": "B0STANDIN",
        "text": message.text,
        "ts": message.ts.as_str(),
    });
    if !message.blocks.is_empty() {
        m["blocks"] = Value::Array(message.blocks.clone());
    }
    if let Some(t) = thread_ts {
        m["thread_ts"] = Value::String(t.as_str().to_string());
    }
    m
}

/// The arguments of a request, as Slack reads them.
struct Args {
    /// Everything that arrived, for the record.
    all: Map<String, Value>,
    /// What the method honours (form-only methods ignore a JSON body).
    honoured: Map<String, Value>,
    token: Option<String>,
    /// The JSON body lacked `charset=utf-8`, which Slack answers with a warning.
    missing_charset: bool,
}

fn read_args(
    method: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<Args, Refusal> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut form = Map::new();
    if let Some(q) = query {
        form.extend(form_pairs(q.as_bytes()));
    }
    let mut json_args = Map::new();
    let mut missing_charset = false;
    if content_type.starts_with("application/json") {
        if !body.is_empty() {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => json_args = map,
                _ => return Err(Refusal::new("invalid_json")),
            }
        }
        missing_charset = !content_type.replace(' ', "").contains("charset=utf-8");
    } else if !body.is_empty() {
        form.extend(form_pairs(body));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    // Slack accepts the token as a form or query argument, never inside a JSON body.
    let token = bearer.or_else(|| form.get("token").and_then(Value::as_str).map(str::to_owned));
    form.remove("token");
    json_args.remove("token");

    let mut all = form.clone();
    all.extend(json_args.clone());
    let honoured = if FORM_ONLY_METHODS.contains(&method) {
        form
    } else {
        all.clone()
    };
    Ok(Args {
        all,
        honoured,
        token,
        missing_charset,
    })
}

/// Form pairs as JSON; `blocks` arrives as a URL-encoded JSON string and is decoded.
fn form_pairs(raw: &[u8]) -> Map<String, Value> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(raw).unwrap_or_default();
    pairs
        .into_iter()
        .map(|(k, v)| {
            let value = if k == "blocks" {
                serde_json::from_str(&v).unwrap_or(Value::String(v))
            } else {
                Value::String(v)
            };
            (k, value)
        })
        .collect()
}

fn slack_answer(mut answer: Map<String, Value>, ok: bool, missing_charset: bool) -> Response {
    answer.insert("ok".into(), Value::Bool(ok));
    if missing_charset {
        answer.insert("warning".into(), json!("missing_charset"));
        answer.insert(
            "response_metadata".into(),
            json!({"warnings": ["missing_charset"]}),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        Value::Object(answer).to_string(),
    )
        .into_response()
}

fn refusal_answer(refusal: Refusal, missing_charset: bool) -> Response {
    let mut answer = Map::new();
    answer.insert("error".into(), json!(refusal.error));
    if !refusal.messages.is_empty() {
        answer.insert(
            "response_metadata".into(),
            json!({"messages": refusal.messages}),
        );
    }
    slack_answer(answer, false, missing_charset)
}

fn fault_answer(fault: Fault) -> Response {
    match fault {
        Fault::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::RETRY_AFTER, retry_after_secs.to_string()),
                (
                    header::CONTENT_TYPE,
                    "application/json; charset=utf-8".to_string(),
                ),
            ],
            json!({"ok": false, "error": "ratelimited"}).to_string(),
        )
            .into_response(),
        Fault::Error(error) => refusal_answer(Refusal::new(error), false),
        // Taken before the work; never answered as a fault.
        Fault::StoreLate(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Fault::Http(status) | Fault::AcceptThenFail(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let text = status.canonical_reason().unwrap_or("error");
            (status, format!("<html><body>{text}</body></html>")).into_response()
        }
    }
}

/// A `response_url` POST: JSON with `text` (and optionally `blocks`, `response_type`,
/// `replace_original`). Slack answers a plain `ok`.
async fn respond(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    let text = value["text"].as_str().unwrap_or_default().to_string();
    let blocks = value["blocks"].as_array().cloned().unwrap_or_default();
    let rendered = render_blocks(&Message {
        text: text.clone(),
        blocks,
    });
    shared.lock().responses.push(FakeResponse {
        id,
        body: value,
        text,
    });
    let _ = shared.events.send(SlackEvent::Responded { rendered });
    (StatusCode::OK, "ok").into_response()
}

/// The upload URL `files.getUploadURLExternal` handed out: the raw bytes as the body, answered
/// 200 as Slack does. The stand-in is stricter than Slack is known to be in one way: bytes whose
/// length is not the `length` declared for the file are refused with 400, so a client bug shows.
async fn upload(
    State(shared): State<Arc<Shared>>,
    Path(file_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION);
    let carries =
        |text: &str| !shared.expected_token.is_empty() && text.contains(&shared.expected_token);
    let had_token = authorization
        .and_then(|v| v.to_str().ok())
        .is_some_and(carries)
        || query.as_deref().is_some_and(carries);
    let mut state = shared.lock();
    state.calls.push(SlackCall {
        method: UPLOAD_STEP.to_string(),
        body: json!({
            "file_id": file_id,
            "length": body.len(),
            "authorization": authorization.is_some(),
        }),
    });
    let lost_answer = match state.take_fault(UPLOAD_STEP) {
        None | Some(Fault::StoreLate(_)) => None,
        Some(Fault::AcceptThenFail(status)) => Some(status),
        Some(Fault::Error(error)) => return (StatusCode::BAD_REQUEST, error).into_response(),
        Some(other) => return fault_answer(other),
    };
    let Some(file) = state
        .files
        .iter_mut()
        .find(|f| f.file_id == file_id && !f.completed)
    else {
        return (StatusCode::NOT_FOUND, "upload not found").into_response();
    };
    file.upload_had_authorization |= authorization.is_some();
    file.upload_had_bot_token |= had_token;
    if body.len() != file.declared_length {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "{} bytes arrived, {} were declared",
                body.len(),
                file.declared_length
            ),
        )
            .into_response();
    }
    file.bytes = Some(body.to_vec());
    match lost_answer {
        Some(status) => fault_answer(Fault::Http(status)),
        None => (StatusCode::OK, format!("OK - {}", body.len())).into_response(),
    }
}

/// `apps.connections.open`: with the app-level token (bearer or form), a Socket Mode URL.
async fn connections_open(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let token = bearer.or_else(|| {
        form.iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.clone())
    });
    shared.lock().calls.push(SlackCall {
        method: "apps.connections.open".into(),
        body: json!({}),
    });
    match shared.socket.open_url(token.as_deref()) {
        Ok(url) => slack_answer(object(json!({ "url": url })), true, false),
        Err(refusal) => refusal_answer(Refusal::new(refusal.error()), false),
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let taken = std::time::Instant::now();
    let args = match read_args(&method, &headers, query.as_deref(), &body) {
        Ok(args) => args,
        Err(refusal) => {
            shared.lock().calls.push(SlackCall {
                method,
                body: Value::String(String::from_utf8_lossy(&body).into_owned()),
            });
            return refusal_answer(refusal, false);
        }
    };
    let late = {
        let mut state = shared.lock();
        let queue = state.faults.get_mut(&method);
        match queue.as_ref().and_then(|q| q.front()) {
            Some(Fault::StoreLate(delay)) => {
                let delay = *delay;
                queue.and_then(VecDeque::pop_front);
                Some(delay)
            }
            _ => None,
        }
    };
    if let Some(delay) = late {
        // In a task of its own: the caller gives up and hangs up before this lands.
        let work = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut state = shared.lock();
            state.calls.push(SlackCall {
                method: method.clone(),
                body: Value::Object(args.all.clone()),
            });
            let result = state.dispatch(&method, &args.honoured);
            if let Ok((_, Some(event))) = &result {
                let _ = shared.events.send(event.clone());
            }
            match result {
                Ok((answer, _)) => slack_answer(answer, true, args.missing_charset),
                Err(refusal) => refusal_answer(refusal, args.missing_charset),
            }
        });
        return work
            .await
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let (result, missing_charset) = {
        let mut state = shared.lock();
        state.calls.push(SlackCall {
            method: method.clone(),
            body: Value::Object(args.all.clone()),
        });
        let fault = state.take_fault(&method);
        let lost_answer = match fault {
            Some(Fault::AcceptThenFail(status)) => Some(status),
            Some(other) => return fault_answer(other),
            None => None,
        };
        let result = match args.token.as_deref() {
            None | Some("") => Err(Refusal::new("not_authed")),
            Some(t) if t != shared.expected_token => Err(Refusal::new("invalid_auth")),
            Some(_) => state.dispatch(&method, &args.honoured),
        };
        if let Some(status) = lost_answer {
            if let Ok((_, Some(event))) = result {
                let _ = shared.events.send(event);
            }
            return fault_answer(Fault::Http(status));
        }
        (result, args.missing_charset)
    };
    let latency = shared.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let answered = std::time::Instant::now();
    shared.lock().answer_times.push((taken, answered));
    match result {
        Ok((answer, event)) => {
            if let Some(event) = event {
                // Nobody listening is fine.
                let _ = shared.events.send(event);
            }
            slack_answer(answer, true, missing_charset)
        }
        Err(refusal) => refusal_answer(refusal, missing_charset),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading Slack as a person would.

/// How a divider looks in a transcript.
const RULE: &str = "────────────────────────────────────────";

/// A message as a person would read it in Slack: Block Kit turned into lines of text, or the
/// `text` fallback when there are no blocks. Mentions and links are shown the way Slack shows
/// them (`<@U123>` → `@U123`, `<https://x|the run>` → `the run (https://x)`).
///
/// - `header` → a bold line (`*text*`)
/// - `section` → its text, one line per field, and its accessory after the text
/// - `context` → its elements joined with ` · `
/// - `actions` → `[ Approve ] [ Deny ] [ Choose size ▾ ]`
/// - `divider` → a rule
pub fn render_blocks(message: &Message) -> String {
    let lines: Vec<String> = message.blocks.iter().flat_map(render_block).collect();
    if lines.is_empty() {
        humanize_mrkdwn(&message.text)
    } else {
        lines.join("\n")
    }
}

fn render_block(block: &Value) -> Vec<String> {
    let kind = block["type"].as_str().unwrap_or("");
    match kind {
        "header" => vec![format!("*{}*", text_object(&block["text"]))],
        "section" => {
            let mut lines: Vec<String> = match block.get("text") {
                Some(t) => text_object(t).lines().map(str::to_owned).collect(),
                None => Vec::new(),
            };
            if let Some(fields) = block["fields"].as_array() {
                lines.extend(fields.iter().map(|f| text_object(f).replace('\n', " ")));
            }
            if let Some(accessory) = block.get("accessory") {
                let rendered = render_element(accessory);
                match lines.last_mut() {
                    Some(last) => {
                        last.push_str("  ");
                        last.push_str(&rendered);
                    }
                    None => lines.push(rendered),
                }
            }
            lines
        }
        "context" => {
            let parts: Vec<String> = elements(block)
                .iter()
                .map(|e| match e["type"].as_str() {
                    Some("image") => format!("[{}]", e["alt_text"].as_str().unwrap_or("image")),
                    _ => text_object(e),
                })
                .collect();
            vec![parts.join(" · ")]
        }
        "actions" => {
            let parts: Vec<String> = elements(block).iter().map(render_element).collect();
            vec![parts.join(" ")]
        }
        "divider" => vec![RULE.to_string()],
        "image" => vec![format!(
            "[image: {}]",
            block["alt_text"].as_str().unwrap_or("")
        )],
        "input" => vec![format!(
            "{}: {}",
            text_object(&block["label"]),
            render_element(&block["element"])
        )],
        "rich_text" => {
            let mut out = String::new();
            collect_rich_text(block, &mut out);
            out.lines().map(str::to_owned).collect()
        }
        "" => Vec::new(),
        other => vec![format!("[{other}]")],
    }
}

fn elements(block: &Value) -> &[Value] {
    block["elements"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The text of a text object (`{"type":"mrkdwn","text":…}`), or of an element with one.
fn text_object(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("text") {
            Some(Value::String(s)) if o.get("type").and_then(Value::as_str) == Some("mrkdwn") => {
                humanize_mrkdwn(s)
            }
            Some(Value::String(s)) => s.clone(),
            Some(inner @ Value::Object(_)) => text_object(inner),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

fn render_element(e: &Value) -> String {
    let kind = e["type"].as_str().unwrap_or("");
    match kind {
        "button" => format!("[ {} ]", text_object(&e["text"])),
        "overflow" => "[ ⋯ ]".to_string(),
        "checkboxes" | "radio_buttons" => {
            let options: Vec<String> = e["options"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .map(|o| format!("( ) {}", text_object(&o["text"])))
                .collect();
            options.join("  ")
        }
        "plain_text_input" => "[ ________ ]".to_string(),
        _ if kind.ends_with("select") || kind.ends_with("picker") => {
            let label = e["initial_option"]
                .get("text")
                .map(text_object)
                .or_else(|| e["initial_date"].as_str().map(str::to_owned))
                .or_else(|| e["initial_time"].as_str().map(str::to_owned))
                .or_else(|| e.get("placeholder").map(text_object))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "Choose".to_string());
            format!("[ {label} ▾ ]")
        }
        other => format!("[ {other} ]"),
    }
}

fn collect_rich_text(v: &Value, out: &mut String) {
    match v["type"].as_str() {
        Some("text") => out.push_str(v["text"].as_str().unwrap_or("")),
        Some("link") => out.push_str(v["text"].as_str().or(v["url"].as_str()).unwrap_or("")),
        Some("user") => out.push_str(&format!("@{}", v["user_id"].as_str().unwrap_or(""))),
        Some("channel") => out.push_str(&format!("#{}", v["channel_id"].as_str().unwrap_or(""))),
        Some("emoji") => out.push_str(&format!(":{}:", v["name"].as_str().unwrap_or(""))),
        _ => {
            for (i, child) in elements(v).iter().enumerate() {
                if i > 0 && v["type"] == "rich_text" {
                    out.push('\n');
                }
                collect_rich_text(child, out);
            }
        }
    }
}

/// Slack's mrkdwn control sequences as a person sees them, and its three HTML entities decoded.
fn humanize_mrkdwn(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = &after[..end];
        let (target, label) = match inner.split_once('|') {
            Some((t, l)) => (t, Some(l)),
            None => (inner, None),
        };
        let shown = if let Some(id) = target.strip_prefix('@') {
            format!("@{}", label.unwrap_or(id))
        } else if let Some(id) = target.strip_prefix('#') {
            format!("#{}", label.unwrap_or(id))
        } else if let Some(special) = target.strip_prefix('!') {
            match special.strip_prefix("subteam^") {
                Some(id) => label.map(str::to_owned).unwrap_or_else(|| format!("@{id}")),
                None => label
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("@{special}")),
            }
        } else {
            match label {
                Some(l) => format!("{l} ({target})"),
                None => target.to_string(),
            }
        };
        out.push_str(&shown);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A channel as a person would read it: each top-level message in its latest version (marked
/// "(edited N times)" when it changed), its thread replies indented beneath with `↳`.
pub fn render_transcript(channel: &ChannelId, messages: &[FakeMessage]) -> String {
    let mut out = format!("#{channel}\n");
    if messages.is_empty() {
        out.push_str("(no messages)\n");
        return out;
    }
    for message in messages {
        out.push('\n');
        push_indented(&mut out, &message.rendered(), "• ", "  ");
        if !message.edits.is_empty() {
            out.push_str(&format!("  {}\n", edited_note(message.edits.len())));
        }
        for reply in &message.replies {
            push_indented(&mut out, &reply.rendered(), "    ↳ ", "      ");
            if !reply.edits.is_empty() {
                out.push_str(&format!("      {}\n", edited_note(reply.edits.len())));
            }
        }
    }
    out
}

fn edited_note(n: usize) -> String {
    if n == 1 {
        "(edited 1 time)".to_string()
    } else {
        format!("(edited {n} times)")
    }
}

fn push_indented(out: &mut String, text: &str, first: &str, rest: &str) {
    let mut lines = text.lines();
    out.push_str(first);
    out.push_str(lines.next().unwrap_or(""));
    out.push('\n');
    for line in lines {
        out.push_str(rest);
        out.push_str(line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str, blocks: Value) -> Message {
        Message {
            text: text.into(),
            blocks: blocks.as_array().cloned().unwrap_or_default(),
        }
    }

    fn approval_message() -> Message {
        msg(
            "prod-jobs memory 93%",
            json!([
                {"type": "header", "text": {"type": "plain_text", "text": "🚨 prod-jobs memory 93%"}},
                {"type": "section", "text": {"type": "mrkdwn",
                    "text": "Proposed: snapshot, then `cache.r6g.large` → `cache.r6g.xlarge`\nRun `r-k3m9x2qa`"}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Group*\nprod-jobs"},
                    {"type": "mrkdwn", "text": "*Asked by*\n<@U0123ABCD>"}
                ]},
                {"type": "divider"},
                {"type": "actions", "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Approve"}, "style": "primary", "action_id": "approve"},
                    {"type": "button", "text": {"type": "plain_text", "text": "Deny"}, "style": "danger", "action_id": "deny"},
                    {"type": "static_select", "placeholder": {"type": "plain_text", "text": "Choose size"}, "action_id": "size",
                     "options": [{"text": {"type": "plain_text", "text": "cache.r6g.2xlarge"}, "value": "cache.r6g.2xlarge"}]}
                ]},
                {"type": "context", "elements": [
                    {"type": "mrkdwn", "text": "alarm `Redis memory: prod-jobs`"},
                    {"type": "mrkdwn", "text": "<https://example.com/runs/r-k3m9x2qa|audit trail>"}
                ]}
            ]),
        )
    }

    #[test]
    fn block_kit_renders_as_a_person_reads_it() {
        let expected = [
            "*🚨 prod-jobs memory 93%*",
            "Proposed: snapshot, then `cache.r6g.large` → `cache.r6g.xlarge`",
            "Run `r-k3m9x2qa`",
            "*Group* prod-jobs",
            "*Asked by* @U0123ABCD",
            RULE,
            "[ Approve ] [ Deny ] [ Choose size ▾ ]",
            "alarm `Redis memory: prod-jobs` · audit trail (https://example.com/runs/r-k3m9x2qa)",
        ]
        .join("\n");
        assert_eq!(render_blocks(&approval_message()), expected);
    }

    #[test]
    fn messages_without_blocks_render_their_text() {
        assert_eq!(
            render_blocks(&Message::text(
                "Snapshot done &amp; verified ✓ &lt;4m12s&gt;"
            )),
            "Snapshot done & verified ✓ <4m12s>"
        );
    }

    #[test]
    fn a_chosen_option_replaces_the_placeholder_and_accessories_follow_their_text() {
        let m = msg(
            "",
            json!([{
                "type": "section",
                "text": {"type": "plain_text", "text": "Size"},
                "accessory": {"type": "static_select",
                    "placeholder": {"type": "plain_text", "text": "Choose size"},
                    "initial_option": {"text": {"type": "plain_text", "text": "cache.r6g.xlarge"}, "value": "x"}}
            }, {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "Cancel run?"},
                "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Cancel"}}
            }]),
        );
        assert_eq!(
            render_blocks(&m),
            "Size  [ cache.r6g.xlarge ▾ ]\nCancel run?  [ Cancel ]"
        );
    }

    #[test]
    fn mentions_channels_groups_and_links_read_naturally() {
        assert_eq!(
            humanize_mrkdwn(
                "<@U1> in <#C2|ops> pinged <!subteam^S3|@oncall> and <!here>: <https://x.io/a|the run> <https://y.io>"
            ),
            "@U1 in #ops pinged @oncall and @here: the run (https://x.io/a) https://y.io"
        );
        assert_eq!(humanize_mrkdwn("a < b"), "a < b");
    }

    #[test]
    fn a_transcript_shows_latest_versions_edit_counts_and_indented_threads() {
        let channel = ChannelId::parse("C0123ABCD").unwrap();
        let ts = |s: &str| MessageTs::parse(s).unwrap();
        let reply = |t: &str, text: &str| FakeMessage {
            metadata: None,
            ts: ts(t),
            text: text.into(),
            blocks: Vec::new(),
            edits: Vec::new(),
            replies: Vec::new(),
            files: Vec::new(),
        };
        let top = FakeMessage {
            metadata: None,
            ts: ts("1764121929.000100"),
            text: "prod-jobs: upsizing".into(),
            blocks: vec![
                json!({"type": "header", "text": {"type": "plain_text", "text": "prod-jobs: upsizing"}}),
                json!({"type": "context", "elements": [{"type": "mrkdwn", "text": "paused ✓"}, {"type": "mrkdwn", "text": "snapshot ✓ 4m12s"}]}),
            ],
            edits: vec![Message::text("v1"), Message::text("v2")],
            replies: vec![
                reply("1764121929.000200", "Approved by @U0123ABCD"),
                reply(
                    "1764121929.000300",
                    "Snapshot started\nname redis-autoscaler-r-k3m9x2qa",
                ),
            ],
            files: Vec::new(),
        };
        let expected = "\
#C0123ABCD

• *prod-jobs: upsizing*
  paused ✓ · snapshot ✓ 4m12s
  (edited 2 times)
    ↳ Approved by @U0123ABCD
    ↳ Snapshot started
      name redis-autoscaler-r-k3m9x2qa
";
        assert_eq!(render_transcript(&channel, &[top]), expected);
        assert_eq!(
            render_transcript(&channel, &[]),
            "#C0123ABCD\n(no messages)\n"
        );
    }

    #[test]
    fn random_faults_answer_about_their_fraction_of_calls_and_repeat() {
        let picks = |n| {
            let mut faults = RandomFaults::new(0.15, 0.10);
            let picked: Vec<Option<Fault>> = (0..n).map(|_| faults.pick()).collect();
            (picked, faults.rate_limited_sent, faults.unavailable_sent)
        };
        let (first, limited, unavailable) = picks(10_000);
        assert!((1_300..1_700).contains(&limited), "{limited} 429s");
        assert!((800..1_200).contains(&unavailable), "{unavailable} 503s");
        assert_eq!(first, picks(10_000).0, "seeded: the same faults again");
        assert!(first.contains(&Some(Fault::RateLimited {
            retry_after_secs: 1
        })));
        assert!(first.contains(&Some(Fault::Http(503))));
        let mut none = RandomFaults::new(0.0, 0.0);
        assert!((0..1_000).all(|_| none.pick().is_none()));
    }

    #[test]
    fn timestamps_increase_and_look_like_slacks() {
        let mut w = Workspace::new(1_764_121_929);
        assert_eq!(w.next_ts().as_str(), "1764121929.000100");
        assert_eq!(w.next_ts().as_str(), "1764121929.000200");
        w.issued = 9_999;
        assert_eq!(w.next_ts().as_str(), "1764121930.000000");
    }

    #[test]
    fn block_kit_limits_are_enforced_like_slack() {
        assert!(block_problems(&approval_message().blocks).is_empty());
        let long_header =
            json!({"type": "header", "text": {"type": "plain_text", "text": "x".repeat(151)}});
        let problems = block_problems(&[long_header]);
        assert_eq!(
            problems,
            vec!["[ERROR] must be less than 151 characters [json-pointer:/blocks/0/text/text]"]
        );
        assert_eq!(block_problems(&[json!({"text": "no type"})]).len(), 1);
        let many = vec![json!({"type": "divider"}); 51];
        assert_eq!(block_problems(&many).len(), 1);
        assert_eq!(
            block_problems(&[json!({"type": "actions", "elements": []})]).len(),
            1
        );
    }

    #[test]
    fn form_blocks_arrive_as_json() {
        let args = form_pairs(b"channel=C1&blocks=%5B%7B%22type%22%3A%22divider%22%7D%5D&text=hi");
        assert_eq!(args["blocks"], json!([{"type": "divider"}]));
        assert_eq!(args["text"], "hi");
    }
}
