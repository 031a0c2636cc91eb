//! Slack's Socket Mode, as the Slack stand-in speaks it: `apps.connections.open` (served by
//! `standin::slack`) hands out single-use `ws://127.0.0.1:PORT/link/?ticket=…` URLs of the
//! WebSocket server here, which greets each connection with `hello`, lets a test push
//! envelopes (to a connection Slack would pick, or to one named), records every ack with the
//! time it took, and can send `disconnect` (any reason, closing the socket a moment later as
//! Slack does) or drop a socket without a close frame. It counts the connections open.
//!
//! Like the rest of the stand-in it is not a Slack simulator: one app, no scopes, and an
//! envelope goes where the test says.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

/// The app id in `hello` and in connection URLs.
pub const APP_ID: &str = "A0STANDIN";

/// An ack as the stand-in received it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeAck {
    pub envelope_id: String,
    /// The answer the ack carried, if any.
    pub payload: Option<Value>,
    /// The connection it came on.
    pub connection: u64,
    /// From the (last) push of the envelope to its ack; `None` for an envelope never pushed.
    pub after: Option<Duration>,
}

/// The stand-in's Socket Mode side. Cheap to clone; stops with the Slack stand-in.
#[derive(Clone)]
pub struct FakeSocketMode {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeSocketMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSocketMode")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

struct Inner {
    addr: SocketAddr,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    app_token: Option<String>,
    tickets: HashSet<String>,
    issued: u64,
    next_connection: u64,
    connections: BTreeMap<u64, Connection>,
    opened: usize,
    acks: Vec<FakeAck>,
    pushed: HashMap<String, Instant>,
    /// Round robin over the connections that take envelopes.
    turn: usize,
    /// How long after `disconnect` the socket is closed.
    grace: Duration,
}

struct Connection {
    control: mpsc::UnboundedSender<Control>,
    /// Sent `disconnect`: no more envelopes go to it.
    disconnecting: bool,
}

enum Control {
    Text(String),
    Close,
    Drop,
}

/// `apps.connections.open` refusals, as Slack's error strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenRefusal {
    NotAuthed,
    InvalidAuth,
    /// A bot or user token where an app-level token is needed.
    NotAllowedTokenType,
}

impl OpenRefusal {
    pub fn error(self) -> &'static str {
        match self {
            OpenRefusal::NotAuthed => "not_authed",
            OpenRefusal::InvalidAuth => "invalid_auth",
            OpenRefusal::NotAllowedTokenType => "not_allowed_token_type",
        }
    }
}

impl FakeSocketMode {
    /// Start the WebSocket server on 127.0.0.1; it runs as long as a clone of the handle lives
    /// (the accept loop holds only a weak reference).
    pub async fn spawn() -> anyhow::Result<FakeSocketMode> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let inner = Arc::new(Inner {
            addr: listener.local_addr()?,
            state: Mutex::new(State {
                grace: Duration::from_millis(500),
                ..State::default()
            }),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                tokio::spawn(serve(inner, stream));
            }
        });
        Ok(FakeSocketMode { inner })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// Accept `token` (an `xapp-…` app-level token) for `apps.connections.open`. Until this is
    /// called every call is refused with `invalid_auth`.
    pub fn set_app_token(&self, token: &str) {
        self.lock().app_token = Some(token.to_string());
    }

    /// `apps.connections.open`: a URL with a fresh single-use ticket.
    pub fn open_url(&self, token: Option<&str>) -> Result<String, OpenRefusal> {
        let mut state = self.lock();
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(OpenRefusal::NotAuthed)?;
        if !token.starts_with("xapp-") {
            return Err(OpenRefusal::NotAllowedTokenType);
        }
        if state.app_token.as_deref() != Some(token) {
            return Err(OpenRefusal::InvalidAuth);
        }
        state.issued += 1;
        let ticket = format!("standin-ticket-{:04}", state.issued);
        state.tickets.insert(ticket.clone());
        Ok(format!(
            "ws://{}/link/?ticket={ticket}&app_id={APP_ID}",
            self.inner.addr
        ))
    }

    /// How long after a `disconnect` the stand-in closes the socket (default 500 ms).
    pub fn set_disconnect_grace(&self, grace: Duration) {
        self.lock().grace = grace;
    }

    /// Connections open now (including ones told to disconnect and not closed yet).
    pub fn open_connections(&self) -> usize {
        self.lock().connections.len()
    }

    /// Connections ever opened.
    pub fn connections_opened(&self) -> usize {
        self.lock().opened
    }

    /// The connections that take envelopes (open, not told to disconnect), oldest first.
    pub fn live(&self) -> Vec<u64> {
        self.lock()
            .connections
            .iter()
            .filter(|(_, c)| !c.disconnecting)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Wait (up to `timeout`) until at least `n` connections take envelopes.
    pub async fn wait_for_live(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.live().len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.live().len() >= n
    }

    /// Push an envelope to a connection Slack would pick (taking turns among the live ones);
    /// which one, or `None` when none is live.
    pub fn push(&self, envelope: &Value) -> Option<u64> {
        let live = self.live();
        if live.is_empty() {
            return None;
        }
        let connection = {
            let mut state = self.lock();
            state.turn = state.turn.wrapping_add(1);
            live[state.turn % live.len()]
        };
        self.push_to(connection, envelope).then_some(connection)
    }

    /// Push an envelope to one connection; whether it is open.
    pub fn push_to(&self, connection: u64, envelope: &Value) -> bool {
        if let Some(id) = envelope["envelope_id"].as_str() {
            self.lock().pushed.insert(id.to_string(), Instant::now());
        }
        self.send_text(connection, envelope.to_string())
    }

    /// Send any text frame (a malformed envelope, say); whether the connection is open.
    pub fn send_text(&self, connection: u64, text: String) -> bool {
        let state = self.lock();
        state
            .connections
            .get(&connection)
            .is_some_and(|c| c.control.send(Control::Text(text)).is_ok())
    }

    /// Send `disconnect` with `reason` (`warning`, `refresh_requested`, `link_disabled`, …);
    /// the socket is closed after the grace time ([`FakeSocketMode::set_disconnect_grace`]).
    pub fn disconnect(&self, connection: u64, reason: &str) -> bool {
        let frame = json!({
            "type": "disconnect",
            "reason": reason,
            "debug_info": { "host": "applink-standin" }
        });
        let grace = {
            let mut state = self.lock();
            let Some(c) = state.connections.get_mut(&connection) else {
                return false;
            };
            c.disconnecting = true;
            let _ = c.control.send(Control::Text(frame.to_string()));
            state.grace
        };
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(c) = me.lock().connections.get(&connection) {
                let _ = c.control.send(Control::Close);
            }
        });
        true
    }

    /// Drop the socket at once, without a close frame (a network failure).
    pub fn drop_connection(&self, connection: u64) -> bool {
        let state = self.lock();
        state
            .connections
            .get(&connection)
            .is_some_and(|c| c.control.send(Control::Drop).is_ok())
    }

    /// Every ack received, in order.
    pub fn acks(&self) -> Vec<FakeAck> {
        self.lock().acks.clone()
    }

    /// The acks of one envelope.
    pub fn acks_of(&self, envelope_id: &str) -> Vec<FakeAck> {
        self.lock()
            .acks
            .iter()
            .filter(|a| a.envelope_id == envelope_id)
            .cloned()
            .collect()
    }

    /// Wait (up to `timeout`) for the first ack of an envelope.
    pub async fn wait_for_ack(&self, envelope_id: &str, timeout: Duration) -> Option<FakeAck> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self.acks_of(envelope_id).into_iter().next() {
                return Some(a);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection: the handshake (a valid, unused ticket), `hello`, then the test's frames out
/// and the bot's acks in.
#[expect(
    clippy::result_large_err,
    reason = "the handshake callback's error type is tungstenite's"
)]
async fn serve(inner: Arc<Inner>, stream: TcpStream) {
    let check = inner.clone();
    let accepted = tokio_tungstenite::accept_hdr_async(stream, move |req: &Request, resp| {
        check_ticket(&check, req, resp)
    })
    .await;
    let Ok(ws) = accepted else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (control, mut controls) = mpsc::unbounded_channel();
    let (id, open) = {
        let mut state = inner.lock();
        state.next_connection += 1;
        state.opened += 1;
        let id = state.next_connection;
        state.connections.insert(
            id,
            Connection {
                control,
                disconnecting: false,
            },
        );
        (id, state.connections.len())
    };
    let hello = json!({
        "type": "hello",
        "num_connections": open,
        "debug_info": { "host": "applink-standin", "build_number": 1, "approximate_connection_time": 18060 },
        "connection_info": { "app_id": APP_ID }
    });
    if sink.send(Message::text(hello.to_string())).await.is_ok() {
        loop {
            tokio::select! {
                ctl = controls.recv() => match ctl {
                    Some(Control::Text(t)) => {
                        if sink.send(Message::text(t)).await.is_err() {
                            break;
                        }
                    }
                    Some(Control::Close) => {
                        let _ = sink.close().await;
                        break;
                    }
                    Some(Control::Drop) | None => break,
                },
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(t))) => record_ack(&inner, id, t.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    inner.lock().connections.remove(&id);
}

/// The handshake goes through with a valid, unused ticket: each URL opens one connection, as
/// Slack's do.
#[expect(
    clippy::result_large_err,
    reason = "the handshake callback's error type is tungstenite's"
)]
fn check_ticket(inner: &Inner, req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    let ticket = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("ticket="))
        .unwrap_or("");
    if req.uri().path() == "/link/" && inner.lock().tickets.remove(ticket) {
        Ok(resp)
    } else {
        let mut refused = ErrorResponse::new(Some("invalid or used ticket".into()));
        *refused.status_mut() = StatusCode::UNAUTHORIZED;
        Err(refused)
    }
}

fn record_ack(inner: &Inner, connection: u64, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(envelope_id) = v["envelope_id"].as_str() else {
        return;
    };
    let mut state = inner.lock();
    let after = state.pushed.get(envelope_id).map(Instant::elapsed);
    state.acks.push(FakeAck {
        envelope_id: envelope_id.to_string(),
        payload: v.get("payload").cloned(),
        connection,
        after,
    });
}

/// A fresh envelope id, shaped like Slack's (a UUID).
pub fn new_envelope_id() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{}",
        n,
        n % 0xffff,
        n % 0xfff,
        n % 0xfff,
        hex::encode(b)
    )
}

/// A `slash_commands` envelope for a command's fields (`command`, `text`, `user_id`, …, as
/// the HTTP form has them).
pub fn slash_command_envelope(payload: Value) -> Value {
    json!({
        "envelope_id": new_envelope_id(),
        "type": "slash_commands",
        "payload": payload,
        "accepts_response_payload": true,
    })
}

/// An `interactive` envelope for an interaction payload (`block_actions`,
/// `view_submission`, …: the JSON of the HTTP `payload=` field). A modal's submission may be
/// answered in its ack (`response_action`); a click is acknowledged bare.
pub fn interactive_envelope(payload: Value) -> Value {
    let accepts = payload["type"] == "view_submission";
    json!({
        "envelope_id": new_envelope_id(),
        "type": "interactive",
        "payload": payload,
        "accepts_response_payload": accepts,
    })
}

/// An envelope's id.
pub fn envelope_id(envelope: &Value) -> &str {
    envelope["envelope_id"].as_str().unwrap_or_default()
}
