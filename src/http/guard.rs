//! Every request's way to its route, in one service: its span and metrics, the body deadline
//! and size limit, and the cap on requests being answered at once; then the routes.
//!
//! One service rather than three `from_fn` layers around a merged router: each layer boxed its
//! future, cloned what it wrapped and ran axum's extractors, for every request — about 15 % of
//! a signed command's ack under load (perf). What is done, and in which order, is as before:
//! 1. the span and the metrics cover every request (the route as a label from a fixed set,
//!    never the raw path);
//! 2. the whole body must be in within `body_timeout` and no larger than the limit (408 or
//!    413, the connection closed) before any route runs, so a client that trickles or stalls
//!    its body holds nothing but its own connection, never a request slot;
//! 3. every route but `/healthz` takes one of `max_requests` slots or gets 503 at once (with
//!    `Retry-After`), so the liveness probe stays cheap and answers while the bot is saturated.
//!
//! It knows no use case: the routes are the [`Router`] it is given.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower_service::Service;
use tracing::{Instrument, debug};

/// The one path that takes no request slot: the liveness probe.
const UNCAPPED: &str = "/healthz";

/// What a request body is allowed: all of it within `timeout`, at most `max_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    pub timeout: Duration,
    pub max_bytes: usize,
}

/// The routes, behind the steps every request takes first (see the module's doc).
#[derive(Clone)]
pub struct Guard(Arc<Inner>);

struct Inner {
    routes: Router,
    /// The routes' paths, the only values the `route` label takes (besides `unmatched`).
    served: Vec<&'static str>,
    body: BodyDeadline,
    slots: Semaphore,
}

impl Guard {
    /// `served`: the paths `routes` answers (each an exact path, no parameters), for the
    /// metrics' `route` label; `max_requests`: how many requests may be answered at once.
    pub fn new(
        routes: Router,
        served: Vec<&'static str>,
        body: BodyDeadline,
        max_requests: usize,
    ) -> Guard {
        Guard(Arc::new(Inner {
            routes,
            served,
            body,
            slots: Semaphore::new(max_requests),
        }))
    }

    /// The route as a metric label: a path this router serves, or `unmatched`.
    fn route_label(&self, path: &str) -> &'static str {
        self.0
            .served
            .iter()
            .find(|r| **r == path)
            .copied()
            .unwrap_or("unmatched")
    }

    async fn answer<B>(self, req: Request<B>) -> Response
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let route = self.route_label(req.uri().path());
        let span = crate::telemetry::request_span(req.method(), route);
        let started = Instant::now();
        let response = self.checked(req).instrument(span.clone()).await;
        crate::telemetry::request_answered(&span, route, response.status(), started.elapsed());
        response
    }

    /// Steps 2 and 3, then the route.
    async fn checked<B>(self, req: Request<B>) -> Response
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let req = match self.read_body(req).await {
            Ok(req) => req,
            Err(refused) => return refused,
        };
        let _slot = if req.uri().path() == UNCAPPED {
            None
        } else {
            match self.0.slots.try_acquire() {
                Ok(slot) => Some(slot),
                Err(_) => return busy(),
            }
        };
        let mut routes = self.0.routes.clone();
        match routes.call(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// The request with its whole body read, or the answer that refuses it.
    async fn read_body<B>(&self, req: Request<B>) -> Result<Request<Body>, Response>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let deadline = self.0.body;
        if req.body().is_end_stream() {
            return Ok(req.map(|_| Body::empty()));
        }
        let (parts, body) = req.into_parts();
        if body.size_hint().lower() > deadline.max_bytes as u64 {
            return Err(too_large());
        }
        // Looked at once before the deadline is set: nearly every body came in with its head,
        // and a timer made and dropped for each of them (the runtime's handle fetched, the
        // clock read) showed in perf of the ack under load for nothing.
        let mut body = std::pin::pin!(Limited::new(body, deadline.max_bytes).collect());
        let first = std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll(cx))).await;
        let read = match first {
            Poll::Ready(read) => Ok(read),
            Poll::Pending => tokio::time::timeout(deadline.timeout, body).await,
        };
        match read {
            Ok(Ok(body)) => Ok(Request::from_parts(parts, Body::from(body.to_bytes()))),
            Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
            Ok(Err(e)) => {
                debug!(error = %e, "the request body could not be read");
                Err((
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read\n",
                )
                    .into_response())
            }
            Err(_) => {
                debug!(path = %parts.uri.path(), "the request body did not arrive in time");
                super::server::counters::dropped("body_timeout");
                Err((
                    StatusCode::REQUEST_TIMEOUT,
                    [(header::CONNECTION, "close")],
                    "the request body did not arrive in time\n",
                )
                    .into_response())
            }
        }
    }
}

fn too_large() -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONNECTION, "close")],
        "request body too large\n",
    )
        .into_response()
}

/// At the cap: costs nothing but the answer.
fn busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        "busy: too many requests in flight, try again\n",
    )
        .into_response()
}

impl<B> Service<Request<B>> for Guard
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Never busy as a service: the cap answers 503 per request instead of making hyper wait.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> <Self as Service<Request<B>>>::Future {
        let guard = self.clone();
        Box::pin(async move { Ok(guard.answer(req).await) })
    }
}
