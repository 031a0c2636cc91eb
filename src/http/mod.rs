//! The HTTP surface of `serve`: thin routes that verify, parse, call one use case and render
//! its answer. No route waits on AWS, Slack's Web API or PagerDuty. Under them, [`server`]
//! keeps slow and hostile clients from starving the rest (timeouts, caps).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::alarm::sns::SnsVerifier;
use crate::app::App;
use crate::config::HttpConfig;

pub mod alarms;
pub mod server;
pub mod slack;

pub use server::{open_files_limit, raise_open_files_limit};

/// What the routes share: the use cases, and the SNS verifier (with its certificate cache).
/// One pointer to clone: axum clones the state for every layer of every request.
#[derive(Clone)]
pub struct Http(Arc<Shared>);

pub struct Shared {
    pub app: App,
    pub sns: Arc<SnsVerifier>,
    /// Opens modals (views.open) for a click, which must happen within its 3 seconds.
    pub slack: Option<crate::slack::api::SlackClient>,
}

impl Http {
    pub fn new(app: App, sns: Arc<SnsVerifier>) -> Http {
        Http(Arc::new(Shared {
            app,
            sns,
            slack: None,
        }))
    }

    /// With the Slack client modals are opened with.
    pub fn with_slack(
        app: App,
        sns: Arc<SnsVerifier>,
        slack: crate::slack::api::SlackClient,
    ) -> Http {
        Http(Arc::new(Shared {
            app,
            sns,
            slack: Some(slack),
        }))
    }
}

impl std::ops::Deref for Http {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// All routes of the bot. Every request's body is read within `limits.body_timeout` before
/// a handler runs; every route but `/healthz` counts towards `limits.max_requests`, so the
/// liveness probe stays cheap and answers even when the bot is saturated.
///
/// In Socket Mode (`[slack] mode = "socket"`) `/slack/*` is not served (404): Slack reaches the
/// bot over its own WebSockets, there is no signing secret to check requests with, and a
/// listener that is reachable anyway (health checks, a forgotten load balancer rule) then
/// offers no second way in for commands and clicks.
pub fn router(state: Http, limits: &HttpConfig) -> Router {
    let mut use_cases = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.app.config.slack.mode == crate::config::SlackMode::Http {
        use_cases = use_cases
            .route("/slack/commands", post(slack::commands))
            .route("/slack/interactions", post(slack::interactions));
    }
    let use_cases = use_cases
        .route("/alarms/eventbridge", post(alarms::eventbridge))
        .route("/alarms/sns", post(alarms::sns))
        .layer(axum::extract::DefaultBodyLimit::max(alarms::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(Semaphore::new(limits.max_requests)),
            server::cap_requests,
        ));
    let body = server::BodyDeadline {
        timeout: limits.body_timeout,
        max_bytes: alarms::MAX_BODY_BYTES,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .merge(use_cases)
        .layer(axum::middleware::from_fn_with_state(
            body,
            server::read_body_within,
        ))
        .layer(axum::middleware::from_fn(crate::telemetry::http_layer))
        .with_state(state)
}

/// Serve until `shutdown` resolves, then finish the requests in flight; `limits` are the
/// `[http]` timeouts and caps.
pub async fn serve(
    listener: TcpListener,
    state: Http,
    limits: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::run(listener, router(state, &limits), limits, shutdown).await
}

/// The process is up and serving HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Prometheus text format: runs, steps, AWS calls, deliveries, pending effects, HTTP.
async fn metrics(State(http): State<Http>) -> impl axum::response::IntoResponse {
    if let Ok(n) = http.app.store.pending_count().await {
        crate::telemetry::pending_effects(n);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::prometheus().render(),
    )
}

/// Ready once the store can be written and unfinished runs have been resumed.
async fn readyz(State(http): State<Http>) -> (StatusCode, String) {
    if !http.app.runner.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: runs are not resumed yet\n".into(),
        );
    }
    match http.app.store.check_writable().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store can't be written: {e}\n"),
        ),
    }
}
