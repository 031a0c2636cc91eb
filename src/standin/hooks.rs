//! A local stand-in for the team's pause/resume webhooks: `POST /pause` and `POST /resume`.
//!
//! It records each call in order (with whether its signature verified against the secret it
//! was given), answers 200, and can be told to fail the next calls of a phase.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::oneshot;

use crate::domain::Secret;
use crate::hooks::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

/// One call the stand-in received.
#[derive(Debug, Clone)]
pub struct HookCall {
    /// `pause` or `resume`.
    pub phase: String,
    pub body: serde_json::Value,
    /// The signature header matched the body, timestamp and secret.
    pub signature_ok: bool,
    /// The status the stand-in answered.
    pub status: u16,
    /// Its `Idempotency-Key`.
    pub key: Option<String>,
}

#[derive(Default)]
struct Inbox {
    calls: Vec<HookCall>,
    failures: HashMap<String, (usize, u16)>,
}

struct Shared {
    secret: Secret,
    inbox: Mutex<Inbox>,
}

#[derive(Clone)]
pub struct FakeHooksHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _stop: Arc<oneshot::Sender<()>>,
}

pub struct FakeHooks;

impl FakeHooks {
    /// Start on 127.0.0.1; signatures are checked against `secret`.
    pub async fn spawn(secret: &str) -> anyhow::Result<FakeHooksHandle> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            secret: Secret::new(secret),
            inbox: Mutex::new(Inbox::default()),
        });
        let app = Router::new()
            .route("/{phase}", post(receive))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FakeHooksHandle {
            shared,
            addr,
            _stop: Arc::new(stop),
        })
    }
}

impl FakeHooksHandle {
    /// The URL of a phase's hook, e.g. `http://127.0.0.1:PORT/pause`.
    pub fn url(&self, phase: &str) -> String {
        format!("http://{}/{phase}", self.addr)
    }

    pub fn calls(&self) -> Vec<HookCall> {
        self.lock().calls.clone()
    }

    /// The phases the workers acted on, in order: the calls answered 2xx, once per
    /// `Idempotency-Key` (as a receiver that honours the key acts; hooks are delivered at least
    /// once, a repeat after a lost answer carries the same key). A call without a key counts
    /// each time.
    pub fn accepted_phases(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.lock()
            .calls
            .iter()
            .filter(|c| (200..300).contains(&c.status))
            .filter(|c| c.key.as_ref().is_none_or(|k| seen.insert(k.clone())))
            .map(|c| c.phase.clone())
            .collect()
    }

    /// Every call answered 2xx, repeats included.
    pub fn accepted_calls(&self) -> usize {
        let calls = &self.lock().calls;
        calls
            .iter()
            .filter(|c| (200..300).contains(&c.status))
            .count()
    }

    /// Answer the next `n` calls of `phase` with `status`.
    pub fn fail_next(&self, phase: &str, n: usize, status: u16) {
        self.lock().failures.insert(phase.to_string(), (n, status));
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(phase): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let ts = headers
        .get(TIMESTAMP_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let sig = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let signature_ok = !sig.is_empty() && sig == sign(&shared.secret, ts, &body);
    let key = headers
        .get(crate::hooks::IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut inbox = shared.inbox.lock().unwrap_or_else(|e| e.into_inner());
    let status = match inbox.failures.get_mut(&phase) {
        Some((n, status)) if *n > 0 => {
            *n -= 1;
            *status
        }
        _ => 200,
    };
    inbox.calls.push(HookCall {
        phase,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        signature_ok,
        status,
        key,
    });
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
