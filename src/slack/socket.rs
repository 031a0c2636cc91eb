//! Socket Mode (`[slack] mode = "socket"`): Slack delivers slash commands and clicks over
//! WebSockets the bot opens, so the bot needs no inbound port and no signing secret (the
//! connection, opened with the app-level token, is the authentication).
//!
//! It owns the connections: `apps.connections.open` (one single-use URL per connection), the
//! WebSocket over rustls (ring), `hello`, `disconnect` (`refresh_requested` and `warning`:
//! a replacement is opened at once and the old connection is read until Slack closes it;
//! `link_disabled`: Socket Mode was turned off for the app, so it is tried again only rarely),
//! dropped and silent connections (reconnected with capped, jittered backoff), and a second
//! connection kept open at all times so that a refresh or a drop loses nothing.
//!
//! Every envelope is acknowledged by its `envelope_id` within Slack's 3 seconds: with the
//! answer as its payload when the use case answered in time (what the HTTP route would have
//! answered), else bare at the deadline, the answer then going to the `response_url`. Slash
//! commands and interactions go to `slack::inbound`, the same functions the HTTP routes call;
//! a copy of an envelope (Slack sends it again, maybe on the other connection) is recognised
//! there by its envelope id through the store, so it is acted on once, even across replicas.
//! The one exception to acknowledging: an interaction the bot could not take in at all (the
//! store failed) is left unacknowledged, as the HTTP route answers 500, so Slack tells the
//! person and sends it again.
//!
//! It must not log the app token or a connection URL (its ticket); envelope text reaches the
//! log only as escaped, bounded fields.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, error, info, warn};

use crate::app::App;
use crate::domain::Secret;
use crate::slack::answers;
use crate::slack::api::{SlackClient, SlackError};
use crate::slack::commands::SlashForm;
use crate::slack::inbound::{self, Once, Reply};
use crate::slack::interactions;

// ---- the wire format (pure) ------------------------------------------------------------

/// One message Slack sends on a Socket Mode connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The connection is ready; how many the app has open now.
    Hello {
        num_connections: Option<u64>,
    },
    /// Slack is about to close this connection.
    Disconnect {
        reason: DisconnectReason,
    },
    Envelope(Envelope),
}

/// Why Slack closes a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// It will be closed in about ten seconds.
    Warning,
    /// The connection's time is up: open another.
    RefreshRequested,
    /// Socket Mode was turned off for the app.
    LinkDisabled,
    Other(String),
}

impl DisconnectReason {
    fn parse(s: &str) -> DisconnectReason {
        match s {
            "warning" => DisconnectReason::Warning,
            "refresh_requested" => DisconnectReason::RefreshRequested,
            "link_disabled" => DisconnectReason::LinkDisabled,
            other => DisconnectReason::Other(bounded(other, 64)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            DisconnectReason::Warning => "warning",
            DisconnectReason::RefreshRequested => "refresh_requested",
            DisconnectReason::LinkDisabled => "link_disabled",
            DisconnectReason::Other(s) => s,
        }
    }
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// A slash command: the payload holds the fields of the HTTP form.
    SlashCommands,
    /// A click or a modal's submission: the payload is the JSON of the HTTP `payload=` field.
    Interactive,
    /// An Events API event (the app subscribes to none).
    EventsApi,
    Other(String),
}

/// One delivery to acknowledge.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: String,
    pub kind: EnvelopeKind,
    pub payload: Value,
    /// Whether the ack may carry an answer (slash commands, interactions).
    pub accepts_response_payload: bool,
    /// How often Slack sent it before (0: the first time).
    pub retry_attempt: u32,
    pub retry_reason: String,
}

/// A frame that is not one of Slack's; the envelope id when it had a usable one (so it can be
/// acknowledged all the same).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{why}")]
pub struct FrameError {
    pub envelope_id: Option<String>,
    pub why: String,
}

/// Envelope ids are UUIDs; anything unreasonably long or odd is not used as a store key.
fn usable_envelope_id(v: &Value) -> Option<String> {
    let id = v.get("envelope_id")?.as_str()?;
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| id.to_string())
}

/// Read one text frame.
pub fn parse_frame(text: &str) -> Result<Frame, FrameError> {
    let v: Value = serde_json::from_str(text).map_err(|e| FrameError {
        envelope_id: None,
        why: format!("not JSON: {e}"),
    })?;
    let envelope_id = usable_envelope_id(&v);
    let fail = |why: String| FrameError {
        envelope_id: envelope_id.clone(),
        why,
    };
    let Some(kind) = v.get("type").and_then(Value::as_str) else {
        return Err(fail("no `type`".into()));
    };
    match kind {
        "hello" => Ok(Frame::Hello {
            num_connections: v.get("num_connections").and_then(Value::as_u64),
        }),
        "disconnect" => Ok(Frame::Disconnect {
            reason: DisconnectReason::parse(v.get("reason").and_then(Value::as_str).unwrap_or("")),
        }),
        kind => {
            let Some(id) = envelope_id.clone() else {
                return Err(fail(format!(
                    "a `{}` frame without a usable envelope_id",
                    bounded(kind, 64)
                )));
            };
            let kind = match kind {
                "slash_commands" => EnvelopeKind::SlashCommands,
                "interactive" => EnvelopeKind::Interactive,
                "events_api" => EnvelopeKind::EventsApi,
                other => EnvelopeKind::Other(bounded(other, 64)),
            };
            let payload = v.get("payload").cloned().unwrap_or(Value::Null);
            if !payload.is_object() && kind != EnvelopeKind::EventsApi {
                return Err(fail("an envelope whose payload is not an object".into()));
            }
            Ok(Frame::Envelope(Envelope {
                id,
                kind,
                payload,
                accepts_response_payload: v
                    .get("accepts_response_payload")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                retry_attempt: v
                    .get("retry_attempt")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                retry_reason: bounded(
                    v.get("retry_reason").and_then(Value::as_str).unwrap_or(""),
                    64,
                ),
            }))
        }
    }
}

/// The acknowledgement of an envelope, with the answer when there is one.
pub fn ack(envelope_id: &str, payload: Option<Value>) -> String {
    let mut v = json!({ "envelope_id": envelope_id });
    if let Some(p) = payload {
        v["payload"] = p;
    }
    v.to_string()
}

/// How long to wait before the next try after `failures` failures in a row: doubling from
/// `base`, at most `cap`, and jittered by `unit` (0–1) to between half and all of it, so that
/// replicas that lost Slack together don't come back in step.
pub fn backoff(failures: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exp = base.saturating_mul(1u32 << (failures - 1).min(20));
    let full = exp.min(cap);
    full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// At most `max` characters of untrusted text, for the log (whose writer escapes controls).
fn bounded(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// `redis_autoscaler_slack_socket_connections`: connections serving now (0: Slack can't reach
/// the bot).
fn connections_gauge(n: usize) {
    metrics::gauge!("redis_autoscaler_slack_socket_connections").set(n as f64);
}

fn jitter_unit() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

// ---- the transport ---------------------------------------------------------------------

/// How the transport paces itself. The defaults are Slack's: 3 s to acknowledge, about 10 s
/// between a `warning` and the close.
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    /// Connections kept open (Slack allows up to 10 per app).
    pub connections: usize,
    /// The answer is waited for this long after an envelope arrived; then it is acknowledged
    /// bare.
    pub ack_within: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// A connection Slack asked to replace is read this long at most (it closes it before).
    pub drain: Duration,
    /// A ping is sent this often; a connection that heard nothing (not even a pong) for
    /// `silence_limit` is taken for dead and replaced.
    pub ping_every: Duration,
    pub silence_limit: Duration,
    /// Opening a connection (`apps.connections.open` and the handshake) may take this long.
    pub connect_timeout: Duration,
    /// A connection that lived this long before it dropped was healthy: the next one opens at
    /// once, not after a backoff.
    pub stable_after: Duration,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            connections: 2,
            ack_within: Duration::from_millis(2_500),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            drain: Duration::from_secs(10),
            ping_every: Duration::from_secs(20),
            silence_limit: Duration::from_secs(65),
            connect_timeout: Duration::from_secs(10),
            stable_after: Duration::from_secs(30),
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("apps.connections.open failed: {0}")]
    Open(#[from] SlackError),
    #[error("apps.connections.open gave a URL that is not {0}")]
    BadUrl(&'static str),
    #[error("the WebSocket handshake failed: {0}")]
    Connect(String),
    #[error("no TLS configuration: {0}")]
    Tls(String),
    #[error("opening the connection took longer than {0:?}")]
    Timeout(Duration),
}

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// What the connections share: the use cases, and the bot's Web API client (modals, late
/// answers to `response_url`).
struct Handler {
    app: App,
    slack: SlackClient,
    ack_within: Duration,
}

/// The Socket Mode transport, ready to run.
pub struct SocketMode {
    handler: Arc<Handler>,
    /// `apps.connections.open`, with the app token.
    opener: SlackClient,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `ws://` is accepted only from a Slack API reached over plain HTTP (a local stand-in).
    plain_ok: bool,
    options: SocketOptions,
}

impl SocketMode {
    /// `bot`: the bot's own client; `app_token`: `SLACK_APP_TOKEN`; `http`: the outgoing HTTP
    /// client (for `apps.connections.open`, at the bot's Slack API base URL).
    pub fn new(
        app: App,
        bot: SlackClient,
        app_token: Secret,
        http: reqwest::Client,
    ) -> Result<SocketMode, SocketError> {
        let base = app.config.endpoints.slack_api_url.clone();
        let plain_ok = base.starts_with("http://");
        let tls = match tls_config() {
            Ok(c) => Some(c),
            // A local stand-in speaks ws://; production can't do without TLS.
            Err(_) if plain_ok => None,
            Err(e) => return Err(e),
        };
        let options = SocketOptions::default();
        Ok(SocketMode {
            handler: Arc::new(Handler {
                app,
                slack: bot,
                ack_within: options.ack_within,
            }),
            opener: SlackClient::new(base, app_token, http),
            tls,
            plain_ok,
            options,
        })
    }

    pub fn with_options(mut self, options: SocketOptions) -> SocketMode {
        self.options = options;
        if let Some(h) = Arc::get_mut(&mut self.handler) {
            h.ack_within = options.ack_within;
        }
        self
    }

    /// Keep `options.connections` connections open until `stop` resolves; then stop reading,
    /// let the envelopes in hand be answered, and close.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let o = self.options;
        let (stopping, stop_rx) = watch::channel(false);
        let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
        let mut conns: JoinSet<Ended> = JoinSet::new();
        let mut tasks: HashMap<tokio::task::Id, u64> = HashMap::new();
        // Connections that serve and were not asked to be replaced.
        let mut live: HashSet<u64> = HashSet::new();
        let mut failures = 0u32;
        let mut next_try = Instant::now();
        let mut next_id = 0u64;
        tokio::pin!(stop);
        info!(connections = o.connections, "Slack Socket Mode starting");
        loop {
            let wanted = live.len() < o.connections;
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some(event) = events.recv() => match event {
                    Event::Replace { id, reason } => {
                        live.remove(&id);
                        connections_gauge(live.len());
                        if reason == DisconnectReason::LinkDisabled {
                            error!(
                                connection = id,
                                retry_in = ?o.backoff_cap,
                                "Slack turned Socket Mode off for this app (link_disabled): no commands or clicks arrive until it is on again"
                            );
                            failures = failures.max(32);
                            next_try = Instant::now() + o.backoff_cap;
                        } else {
                            info!(connection = id, reason = reason.as_str(), "Slack asked to replace a Socket Mode connection; opening another first");
                            failures = 0;
                        }
                    }
                },
                Some(joined) = conns.join_next_with_id() => {
                    let (task, ended) = match joined {
                        Ok((task, ended)) => (task, Some(ended)),
                        Err(e) => (e.id(), None),
                    };
                    let Some(id) = tasks.remove(&task) else { continue };
                    let was_live = live.remove(&id);
                    connections_gauge(live.len());
                    match ended {
                        Some(ended) if was_live => {
                            if ended.lived >= o.stable_after {
                                failures = 0;
                            } else {
                                failures = failures.saturating_add(1);
                                next_try = next_try.max(Instant::now() + backoff(failures, o.backoff_base, o.backoff_cap, jitter_unit()));
                            }
                            warn!(connection = id, why = %ended.why, lived = ?ended.lived, "a Socket Mode connection ended; opening another");
                        }
                        Some(ended) => debug!(connection = id, why = %ended.why, "a replaced Socket Mode connection closed"),
                        None => {
                            error!(connection = id, "a Socket Mode connection's task failed");
                            failures = failures.saturating_add(1);
                        }
                    }
                },
                _ = tokio::time::sleep_until(next_try), if wanted => {
                    next_id += 1;
                    let id = next_id;
                    match tokio::time::timeout(o.connect_timeout, self.connect()).await
                        .unwrap_or(Err(SocketError::Timeout(o.connect_timeout)))
                    {
                        Ok(ws) => {
                            debug!(connection = id, "Socket Mode connection opened");
                            let serve = serve_connection(ws, id, self.handler.clone(), events_tx.clone(), stop_rx.clone(), o);
                            let handle = conns.spawn(serve);
                            tasks.insert(handle.id(), id);
                            live.insert(id);
                            connections_gauge(live.len());
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            let wait = backoff(failures, o.backoff_base, o.backoff_cap, jitter_unit());
                            warn!(error = %e, retry_in = ?wait, open = live.len(), "could not open a Socket Mode connection");
                            next_try = Instant::now() + wait;
                        }
                    }
                }
            }
        }
        let _ = stopping.send(true);
        while conns.join_next().await.is_some() {}
        connections_gauge(0);
        info!("Slack Socket Mode stopped");
    }

    async fn connect(&self) -> Result<Ws, SocketError> {
        let url = self.opener.open_socket_url().await?;
        let connector = if url.starts_with("wss://") {
            let tls = self
                .tls
                .clone()
                .ok_or_else(|| SocketError::Tls("the system's CA certificates".into()))?;
            Connector::Rustls(tls)
        } else if url.starts_with("ws://") && self.plain_ok {
            Connector::Plain
        } else {
            return Err(SocketError::BadUrl("wss://"));
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20));
        // The error never names the URL (it holds the connection's ticket).
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            url,
            Some(config),
            true,
            Some(connector),
        )
        .await
        .map_err(|e| SocketError::Connect(e.to_string()))?;
        Ok(ws)
    }
}

/// rustls with ring and the system's roots, as for PostgreSQL: one TLS stack in the binary.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, SocketError> {
    use rustls_platform_verifier::ConfigVerifierExt;
    let _ = rustls::crypto::ring::default_provider().install_default();
    rustls::ClientConfig::with_platform_verifier()
        .map(Arc::new)
        .map_err(|e| SocketError::Tls(format!("the system's CA certificates: {e}")))
}

/// Resolves once the watch says `true` (or its sender is gone).
async fn stopping(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// What a connection tells the supervisor while it serves.
enum Event {
    /// Slack sent `disconnect`: open a replacement now (this one is read until it closes).
    Replace { id: u64, reason: DisconnectReason },
}

/// How a connection ended.
struct Ended {
    why: String,
    lived: Duration,
}

/// Read one connection until Slack closes it, it drops or goes silent, Slack's drain time after
/// a `disconnect` is up, or the bot stops; then let the envelopes in hand be answered.
async fn serve_connection(
    ws: Ws,
    id: u64,
    handler: Arc<Handler>,
    events: mpsc::UnboundedSender<Event>,
    stop: watch::Receiver<bool>,
    o: SocketOptions,
) -> Ended {
    let opened = Instant::now();
    let (mut sink, mut stream) = ws.split();
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<String>();
    let mut work: JoinSet<()> = JoinSet::new();
    let mut replaced = false;
    let mut drain_until: Option<Instant> = None;
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval_at(Instant::now() + o.ping_every, o.ping_every);
    let mut writable = true;
    let why = loop {
        let drained = async {
            match drain_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stopping(stop.clone()) => break "the bot is stopping".to_string(),
            _ = drained => break "replaced (Slack's drain time is up)".to_string(),
            Some(text) = acks.recv() => {
                if let Err(e) = sink.send(WsMessage::text(text)).await {
                    writable = false;
                    break format!("could not send an ack: {e}");
                }
            }
            Some(_) = work.join_next(), if !work.is_empty() => {}
            _ = ping.tick() => {
                if heard.elapsed() >= o.silence_limit {
                    break format!("silent for {:?}", heard.elapsed());
                }
                if let Err(e) = sink.send(WsMessage::Ping(Default::default())).await {
                    writable = false;
                    break format!("could not send a ping: {e}");
                }
            }
            msg = stream.next() => {
                heard = Instant::now();
                match msg {
                    None => { writable = false; break "dropped (no close frame)".to_string() }
                    Some(Err(e)) => { writable = false; break format!("dropped: {e}") }
                    Some(Ok(WsMessage::Close(frame))) => {
                        break match frame {
                            Some(f) => format!("closed by Slack ({})", u16::from(f.code)),
                            None => "closed by Slack".to_string(),
                        };
                    }
                    Some(Ok(WsMessage::Text(text))) => match parse_frame(text.as_str()) {
                        Ok(Frame::Hello { num_connections }) => {
                            info!(connection = id, num_connections, "Slack Socket Mode connection ready");
                        }
                        Ok(Frame::Disconnect { reason }) => {
                            let link_disabled = reason == DisconnectReason::LinkDisabled;
                            if !replaced {
                                replaced = true;
                                let _ = events.send(Event::Replace { id, reason });
                            }
                            if link_disabled {
                                break "Socket Mode turned off (link_disabled)".to_string();
                            }
                            drain_until.get_or_insert(Instant::now() + o.drain);
                        }
                        Ok(Frame::Envelope(envelope)) => {
                            let received = Instant::now();
                            work.spawn(handle_envelope(handler.clone(), envelope, acks_tx.clone(), received));
                        }
                        Err(e) => {
                            warn!(
                                connection = id,
                                error = %e,
                                frame = %bounded(text.as_str(), 200),
                                "ignored a Socket Mode frame that is not Slack's"
                            );
                            if let Some(envelope_id) = e.envelope_id {
                                let _ = acks_tx.send(ack(&envelope_id, None));
                            }
                        }
                    },
                    Some(Ok(WsMessage::Binary(b))) => {
                        warn!(connection = id, bytes = b.len(), "ignored a binary Socket Mode frame");
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    };
    // The envelopes in hand are answered (each within its ack deadline), their acks sent while
    // the socket still takes them; an ack that can't be sent lets Slack send the envelope again,
    // on another connection, where it is recognised as a copy.
    drop(acks_tx);
    let deadline = Instant::now() + o.drain;
    loop {
        tokio::select! {
            // `None` once every handler is done (each holds a sender until then).
            text = acks.recv() => match text {
                Some(text) => {
                    if writable && sink.send(WsMessage::text(text)).await.is_err() {
                        writable = false;
                    }
                }
                None => break,
            },
            Some(_) = work.join_next(), if !work.is_empty() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    if writable {
        let _ = sink.close().await;
    }
    Ended {
        why,
        lived: opened.elapsed(),
    }
}

/// Answer one envelope: acknowledged with the answer when it comes within the deadline, else
/// bare at the deadline and the answer then sent to the `response_url`.
async fn handle_envelope(
    handler: Arc<Handler>,
    envelope: Envelope,
    acks: mpsc::UnboundedSender<String>,
    received: Instant,
) {
    let id = envelope.id.clone();
    let kind = envelope.kind.clone();
    let accepts = envelope.accepts_response_payload;
    if envelope.retry_attempt > 0 {
        info!(envelope = %id, retry_attempt = envelope.retry_attempt, retry_reason = %envelope.retry_reason, "Slack sent an envelope again");
    }
    let work = dispatch(&handler, envelope);
    tokio::pin!(work);
    let deadline = received + handler.ack_within;
    let answered = tokio::time::timeout_at(deadline, &mut work).await;
    let (reply, response_url) = match answered {
        Ok(done) => done,
        Err(_) => {
            let _ = acks.send(ack(&id, None));
            warn!(envelope = %id, "the answer took longer than Slack waits; acknowledged without it");
            let (reply, response_url) = work.await;
            answer_late(&handler, reply, response_url).await;
            return;
        }
    };
    let reply = match (reply, &kind) {
        // Like the HTTP route's 500: Slack tells the person, and sends the click again.
        (Reply::Failed, EnvelopeKind::Interactive) => {
            error!(envelope = %id, "could not take an interaction in; left unacknowledged so Slack sends it again");
            return;
        }
        (Reply::Failed, _) => Reply::Ephemeral(answers::text(
            "Something went wrong on the bot's side; nothing changed. Try again in a moment.",
        )),
        (Reply::Malformed(why), _) => {
            warn!(envelope = %id, why = %bounded(&why, 200), "a malformed Socket Mode envelope; acknowledged and ignored");
            Reply::Done
        }
        (reply, _) => reply,
    };
    match reply.body() {
        Some(body) if accepts => {
            let _ = acks.send(ack(&id, Some(body)));
        }
        _ => {
            let _ = acks.send(ack(&id, None));
            answer_late(&handler, reply, response_url).await;
        }
    }
    debug!(envelope = %id, took = ?received.elapsed(), "Socket Mode envelope acknowledged");
}

/// An answer the ack could not carry: to the person's `response_url`, when there is one.
async fn answer_late(handler: &Handler, reply: Reply, response_url: Option<String>) {
    let Reply::Ephemeral(message) = reply else {
        return;
    };
    let Some(url) = response_url else {
        warn!("an answer with nowhere to go (no response_url); dropped");
        return;
    };
    if let Err(e) = handler.slack.respond(&url, &message).await {
        warn!(error = %e, "could not send a late answer to its response_url");
    }
}

/// Hand an envelope to the use case for its kind; the reply and the `response_url` it carried.
async fn dispatch(handler: &Handler, envelope: Envelope) -> (Reply, Option<String>) {
    let once = Once {
        kind: "slack-socket",
        id: &envelope.id,
        via: "socket",
    };
    let app = &handler.app;
    let response_url = envelope
        .payload
        .get("response_url")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let reply = match envelope.kind {
        EnvelopeKind::SlashCommands => {
            match serde_json::from_value::<SlashForm>(envelope.payload) {
                Ok(form) => inbound::command(app, form, once).await,
                Err(e) => Reply::Malformed(format!("not a slash command: {e}")),
            }
        }
        EnvelopeKind::Interactive => {
            let parsed = interactions::parse_json(&envelope.payload.to_string());
            inbound::interaction(app, Some(&handler.slack), parsed, once).await
        }
        EnvelopeKind::EventsApi => {
            debug!(envelope = %envelope.id, "an Events API envelope (the app subscribes to none); acknowledged");
            Reply::Done
        }
        EnvelopeKind::Other(kind) => {
            info!(envelope = %envelope.id, kind = %kind, "an envelope of a type the bot doesn't know; acknowledged and ignored");
            Reply::Done
        }
    };
    (reply, response_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_each_disconnect_reason_are_read() {
        let hello = r#"{"type":"hello","num_connections":2,"debug_info":{"host":"applink-1","build_number":10,"approximate_connection_time":18060},"connection_info":{"app_id":"A0123"}}"#;
        assert_eq!(
            parse_frame(hello).unwrap(),
            Frame::Hello {
                num_connections: Some(2)
            }
        );
        for (reason, want) in [
            ("warning", DisconnectReason::Warning),
            ("refresh_requested", DisconnectReason::RefreshRequested),
            ("link_disabled", DisconnectReason::LinkDisabled),
            (
                "something_new",
                DisconnectReason::Other("something_new".into()),
            ),
        ] {
            let text = format!(
                r#"{{"type":"disconnect","reason":"{reason}","debug_info":{{"host":"applink-1"}}}}"#
            );
            assert_eq!(
                parse_frame(&text).unwrap(),
                Frame::Disconnect { reason: want }
            );
        }
    }

    #[test]
    fn an_envelope_keeps_its_id_kind_payload_and_retry() {
        let text = r#"{"envelope_id":"57d6a792-4d35-4d0b-b6aa-3361493e1caf","type":"slash_commands","payload":{"command":"/redis","text":"runs"},"accepts_response_payload":true,"retry_attempt":1,"retry_reason":"timeout"}"#;
        let Frame::Envelope(e) = parse_frame(text).unwrap() else {
            panic!("an envelope")
        };
        assert_eq!(e.id, "57d6a792-4d35-4d0b-b6aa-3361493e1caf");
        assert_eq!(e.kind, EnvelopeKind::SlashCommands);
        assert_eq!(e.payload["text"], "runs");
        assert!(e.accepts_response_payload);
        assert_eq!((e.retry_attempt, e.retry_reason.as_str()), (1, "timeout"));
        let events = r#"{"envelope_id":"e1","type":"events_api","payload":{"event":{}},"accepts_response_payload":false,"retry_attempt":0,"retry_reason":""}"#;
        let Frame::Envelope(e) = parse_frame(events).unwrap() else {
            panic!("an envelope")
        };
        assert_eq!(e.kind, EnvelopeKind::EventsApi);
        assert!(!e.accepts_response_payload);
    }

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn slacks_own_samples_are_read() {
        assert_eq!(
            parse_frame(&fixture("slack_socket_mode_hello.json")).unwrap(),
            Frame::Hello {
                num_connections: Some(1)
            }
        );
        for (name, want) in [
            ("warning", DisconnectReason::Warning),
            ("refresh_requested", DisconnectReason::RefreshRequested),
            ("link_disabled", DisconnectReason::LinkDisabled),
        ] {
            let text = fixture(&format!("slack_socket_mode_disconnect_{name}.json"));
            assert_eq!(
                parse_frame(&text).unwrap(),
                Frame::Disconnect { reason: want }
            );
        }
        let Frame::Envelope(e) =
            parse_frame(&fixture("slack_socket_mode_slash_command_envelope.json")).unwrap()
        else {
            panic!("an envelope")
        };
        assert_eq!(e.id, "dbdd0ef3-1543-4f94-bfb4-133d0e6c1545");
        assert_eq!(e.kind, EnvelopeKind::SlashCommands);
        assert!(e.accepts_response_payload);
        let form: SlashForm = serde_json::from_value(e.payload).unwrap();
        assert_eq!(
            (&*form.command, &*form.user_id),
            ("/randorilke", "U123ABC456")
        );
        // Our ack has the shape of Slack's sample.
        let sample: Value =
            serde_json::from_str(&fixture("slack_socket_mode_slash_command_ack.json")).unwrap();
        let ours: Value =
            serde_json::from_str(&ack(&e.id, Some(sample["payload"].clone()))).unwrap();
        assert_eq!(ours, sample);
    }

    #[test]
    fn malformed_frames_are_errors_that_keep_a_usable_envelope_id() {
        assert_eq!(parse_frame("not json").unwrap_err().envelope_id, None);
        assert_eq!(parse_frame("[1,2]").unwrap_err().envelope_id, None);
        let no_payload = r#"{"envelope_id":"abc-1","type":"interactive","payload":"x"}"#;
        assert_eq!(
            parse_frame(no_payload).unwrap_err().envelope_id.as_deref(),
            Some("abc-1")
        );
        let odd_id = r#"{"envelope_id":"a\nb","type":"interactive","payload":{}}"#;
        assert_eq!(parse_frame(odd_id).unwrap_err().envelope_id, None);
        let long = format!(
            r#"{{"envelope_id":"{}","type":"interactive","payload":{{}}}}"#,
            "a".repeat(200)
        );
        assert!(parse_frame(&long).is_err());
        assert!(parse_frame(r#"{"envelope_id":"x"}"#).is_err());
    }

    #[test]
    fn an_ack_names_the_envelope_and_carries_the_answer_when_given() {
        let bare: Value = serde_json::from_str(&ack("e-1", None)).unwrap();
        assert_eq!(bare, json!({ "envelope_id": "e-1" }));
        let full: Value = serde_json::from_str(&ack("e-2", Some(json!({ "text": "hi" })))).unwrap();
        assert_eq!(
            full,
            json!({ "envelope_id": "e-2", "payload": { "text": "hi" } })
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_between_half_and_all() {
        let (base, cap) = (Duration::from_millis(500), Duration::from_secs(30));
        assert_eq!(backoff(0, base, cap, 0.7), Duration::ZERO);
        assert_eq!(backoff(1, base, cap, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(1, base, cap, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(3, base, cap, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(10, base, cap, 1.0), cap);
        assert_eq!(backoff(u32::MAX, base, cap, 0.0), cap / 2);
        for unit in [0.0, 0.3, 0.99, 1.0] {
            let d = backoff(7, base, cap, unit);
            assert!(d >= cap / 2 && d <= cap, "{d:?}");
        }
    }
}
