//! The HTTP surface of `serve`: thin routes that verify, parse, call one use case and render
//! its answer. No route waits on AWS, Slack's Web API or PagerDuty. In front of them, [`guard`]
//! times and counts every request, reads its body within a deadline and caps how many are
//! answered at once; under them, [`server`] keeps slow and hostile clients from starving the
//! rest (connection timeouts and caps).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::alarm::sns::SnsVerifier;
use crate::app::App;
use crate::config::HttpConfig;
use crate::slack::signature::SigningKey;

pub mod alarms;
pub mod guard;
pub mod server;
pub mod slack;

pub use guard::{BodyDeadline, Guard};
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
    /// `SLACK_SIGNING_SECRET` as an HMAC key, made once.
    pub slack_key: Option<SigningKey>,
}

impl Http {
    pub fn new(app: App, sns: Arc<SnsVerifier>) -> Http {
        Http(Arc::new(Shared {
            slack_key: slack_key(&app),
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
            slack_key: slack_key(&app),
            app,
            sns,
            slack: Some(slack),
        }))
    }
}

fn slack_key(app: &App) -> Option<SigningKey> {
    let secret = app.config.secrets.slack_signing_secret.as_ref()?;
    Some(SigningKey::new(secret))
}

impl std::ops::Deref for Http {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// All routes of the bot, behind the [`Guard`]: every request's body is read within
/// `limits.body_timeout` before a handler runs, and every route but `/healthz` counts towards
/// `limits.max_requests`, so the liveness probe stays cheap and answers even when the bot is
/// saturated.
///
/// In Socket Mode (`[slack] mode = "socket"`) `/slack/*` is not served (404): Slack reaches the
/// bot over its own WebSockets, there is no signing secret to check requests with, and a
/// listener that is reachable anyway (health checks, a forgotten load balancer rule) then
/// offers no second way in for commands and clicks.
pub fn router(state: Http, limits: &HttpConfig) -> Guard {
    let mut served = vec!["/healthz", "/readyz", "/metrics"];
    let mut routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.app.config.slack.mode == crate::config::SlackMode::Http {
        served.extend(["/slack/commands", "/slack/interactions"]);
        routes = routes
            .route("/slack/commands", post(slack::commands))
            .route("/slack/interactions", post(slack::interactions));
    }
    served.extend(["/alarms/eventbridge", "/alarms/sns"]);
    let routes = routes
        .route("/alarms/eventbridge", post(alarms::eventbridge))
        .route("/alarms/sns", post(alarms::sns))
        .with_state(state);
    // The guard reads every body whole, up to this limit, before a route runs: the routes'
    // own extractors never see more.
    let body = BodyDeadline {
        timeout: limits.body_timeout,
        max_bytes: alarms::MAX_BODY_BYTES,
    };
    Guard::new(routes, served, body, limits.max_requests)
}

/// Serve until `shutdown` resolves, then finish the requests in flight; `limits` are the
/// `[http]` timeouts and caps.
pub async fn serve(
    listener: TcpListener,
    state: Http,
    limits: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state, &limits);
    server::run(listener, app, limits, shutdown).await
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
