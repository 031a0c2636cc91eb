//! The simulator's HTTP edge: one axum route that reads the Query request, asks the world, and
//! writes the XML envelope; [`spawn`] to serve it in-process and a [`SimHandle`] to look inside
//! and inject faults while it runs.
//!
//! The only clock read is here (`tokio::time::Instant::now()` per request), so a test under
//! tokio's paused clock drives the simulated time.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cloudwatch;
use super::protocol::{self, QueryError, QueryRequest};
use super::sqs;
use super::world::{JsonReply, Reply, World};
use super::{
    Faults, ModifyFault, SimCall, SimConfig, SimConfigError, SnapshotSelector, check_fraction,
};
use crate::domain::{NodeType, ReplicationGroupId, SnapshotName, Timestamp};
use crate::workflow::ports::{GroupInfo, SnapshotInfo};

/// A running simulator: cheap to clone, `Send + Sync`. Dropping every handle does not stop
/// the server; [`SimHandle::shutdown`] does.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

struct Inner {
    world: Mutex<World>,
    /// CloudWatch's side (`cloudwatch.rs`); locked after `world` when both are.
    metrics: Mutex<cloudwatch::Metrics>,
    /// SQS's queues (`sqs.rs`); their lock is taken after `world` when both are.
    sqs: sqs::Queues,
    addr: SocketAddr,
    log_calls: bool,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// Start a simulator on `127.0.0.1` and an OS-chosen port.
pub async fn spawn(config: SimConfig) -> anyhow::Result<SimHandle> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding the ElastiCache simulator to 127.0.0.1")?;
    spawn_on(listener, config).await
}

/// Start a simulator on a listener the caller bound.
pub async fn spawn_on(listener: TcpListener, config: SimConfig) -> anyhow::Result<SimHandle> {
    config
        .validate()
        .context("the ElastiCache simulator's configuration")?;
    let addr = listener
        .local_addr()
        .context("reading the simulator's address")?;
    let world = World::new(&config, Instant::now(), Timestamp::now());
    let (stop, mut stopped) = watch::channel(false);
    let handle = SimHandle {
        inner: Arc::new(Inner {
            world: Mutex::new(world),
            metrics: Mutex::new(cloudwatch::Metrics::default()),
            sqs: sqs::Queues::default(),
            addr,
            log_calls: config.log_calls,
            stop,
            task: Mutex::new(None),
        }),
    };
    let app = router(handle.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    });
    *handle.inner.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    Ok(handle)
}

/// The simulator's routes: CloudWatch's RPC v2 CBOR operations on their own path, every
/// other path the Query protocol (the SDK posts to `/`).
pub fn router(handle: SimHandle) -> Router {
    Router::new()
        .route(cloudwatch::ROUTE, axum::routing::post(cloudwatch::serve))
        .fallback(query)
        .with_state(handle)
}

async fn query(
    State(sim): State<SimHandle>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    // SQS (awsJson 1.0), Application Auto Scaling and the Price List (awsJson 1.1, see
    // `pricing.rs`) on the same endpoint: the operation is in the `X-Amz-Target` header.
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok())
        && target.starts_with(sqs::TARGET_PREFIX)
    {
        return sqs::serve(&sim, target, &headers, &body).await;
    }
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let reply = if headers.contains_key(header::AUTHORIZATION) {
            sim.world().handle_json(target, &body, access_key(&headers))
        } else {
            JsonReply {
                action: target.to_string(),
                request_id: String::new(),
                result: Err((
                    "MissingAuthenticationTokenException".into(),
                    "Missing Authentication Token".into(),
                )),
            }
        };
        if sim.inner.log_calls {
            match &reply.result {
                Ok(_) => tracing::info!(request_id = %reply.request_id, "{} → ok", reply.action),
                Err((code, message)) => {
                    tracing::info!(request_id = %reply.request_id, "{} → {code}: {message}", reply.action)
                }
            }
        }
        return json_response(&reply);
    }
    let form: &[u8] = if method == Method::GET {
        query.as_deref().unwrap_or("").as_bytes()
    } else if method == Method::POST {
        &body
    } else {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "the Query protocol uses POST\n",
        )
            .into_response();
    };
    let reply = match QueryRequest::parse(form) {
        Err(e) => sim.world().refuse(&QueryRequest::default(), e),
        // The signature is not checked, but an unsigned request is a broken client.
        Ok(req) if !headers.contains_key(header::AUTHORIZATION) => sim.world().refuse(
            &req,
            QueryError::new(
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            ),
        ),
        Ok(mut req) => {
            req.access_key = access_key(&headers);
            sim.world().handle(&req, Instant::now())
        }
    };
    if sim.inner.log_calls {
        log_call(&reply, form);
    }
    to_response(&reply)
}

/// One line per call for someone rehearsing against the simulator: what was asked, what it
/// answered.
fn log_call(reply: &Reply, form: &[u8]) {
    let params: Vec<String> = QueryRequest::parse(form)
        .map(|r| {
            r.params
                .into_iter()
                .filter(|(k, _)| k != "Version")
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        })
        .unwrap_or_default();
    let call = format!("{} {}", reply.action, params.join(" "));
    let call = call.trim();
    match &reply.result {
        Ok(_) => tracing::info!(request_id = %reply.request_id, "{call} → ok"),
        Err(e) => tracing::info!(
            request_id = %reply.request_id,
            "{call} → {} ({}): {}",
            e.code,
            e.status,
            e.message
        ),
    }
}

/// The access key id a request was signed with.
pub(super) fn access_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(protocol::access_key)
}

fn json_response(reply: &JsonReply) -> Response {
    let (status, body, error_type) = match &reply.result {
        Ok(body) => (StatusCode::OK, body.clone(), None),
        Err((code, message)) => {
            let status = match code.as_str() {
                "AccessDeniedException" | "MissingAuthenticationTokenException" => {
                    StatusCode::FORBIDDEN
                }
                _ => StatusCode::BAD_REQUEST,
            };
            let body = serde_json::json!({ "__type": code, "message": message }).to_string();
            (status, body, Some(code.clone()))
        }
    };
    let mut response = (
        status,
        [
            (
                header::CONTENT_TYPE,
                "application/x-amz-json-1.1".to_string(),
            ),
            (
                header::HeaderName::from_static("x-amzn-requestid"),
                reply.request_id.clone(),
            ),
        ],
        body,
    )
        .into_response();
    if let Some(code) = error_type
        && let Ok(v) = code.parse()
    {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("x-amzn-errortype"), v);
    }
    response
}

fn to_response(reply: &Reply) -> Response {
    let (status, body) = match &reply.result {
        Ok(result) => (
            StatusCode::OK,
            protocol::render_success(&reply.action, &reply.request_id, result),
        ),
        Err(e) => (
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            protocol::render_error(e, &reply.request_id),
        ),
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/xml".to_string()),
            (
                header::HeaderName::from_static("x-amzn-requestid"),
                reply.request_id.clone(),
            ),
        ],
        body,
    )
        .into_response()
}

impl SimHandle {
    pub(super) fn world(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock leaves the world as consistent as any single call
        // does; keep serving rather than poisoning every later test assertion.
        self.inner.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn metrics(&self) -> MutexGuard<'_, cloudwatch::Metrics> {
        self.inner.metrics.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn sqs(&self) -> &sqs::Queues {
        &self.inner.sqs
    }

    pub(super) fn log_calls(&self) -> bool {
        self.inner.log_calls
    }

    /// `http://127.0.0.1:PORT`, for `config_for_endpoint` or `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        let mut addr = self.inner.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Every call answered so far (throttled and refused ones too), oldest first.
    pub fn calls(&self) -> Vec<SimCall> {
        self.world().calls().to_vec()
    }

    /// The session access keys STS AssumeRole handed out, oldest first.
    pub fn issued_keys(&self) -> Vec<String> {
        self.world().issued_keys().to_vec()
    }

    /// How many calls of `action` succeeded.
    pub fn count(&self, action: &str) -> usize {
        self.world()
            .calls()
            .iter()
            .filter(|c| c.action == action && c.is_ok())
            .count()
    }

    /// How many calls of `action` arrived, whatever their outcome.
    pub fn attempts(&self, action: &str) -> usize {
        self.world()
            .calls()
            .iter()
            .filter(|c| c.action == action)
            .count()
    }

    /// The group as DescribeReplicationGroups would show it now.
    pub fn group(&self, id: &ReplicationGroupId) -> Option<GroupInfo> {
        self.world().group_info(id, Instant::now())
    }

    /// A node type requested without `ApplyImmediately`, waiting for a maintenance window.
    pub fn pending_node_type(&self, id: &ReplicationGroupId) -> Option<NodeType> {
        self.world().pending_node_type(id)
    }

    /// The snapshot as DescribeSnapshots would show it now.
    pub fn snapshot(&self, name: &SnapshotName) -> Option<SnapshotInfo> {
        self.world().snapshot_info(name, Instant::now())
    }

    /// What the snapshot was taken from, as its CreateSnapshot named it: a member's
    /// `CacheClusterId` or the group's `ReplicationGroupId`.
    pub fn snapshot_source(&self, name: &SnapshotName) -> Option<String> {
        self.world().snapshot_source(name)
    }

    /// Answer this fraction (0.0 – 1.0) of all later calls with `Throttling`.
    pub fn set_throttle_fraction(&self, fraction: f64) -> Result<(), SimConfigError> {
        let fraction = check_fraction(fraction)?;
        self.world().set_throttle_fraction(fraction);
        Ok(())
    }

    /// Snapshots of `group` started from now on end `failed`.
    pub fn fail_snapshots_of(&self, group: &ReplicationGroupId) {
        self.world()
            .faults
            .failing_snapshots
            .insert(SnapshotSelector::OfGroup(group.clone()));
    }

    /// A snapshot with this name, started from now on, ends `failed`.
    pub fn fail_snapshot_named(&self, name: &SnapshotName) {
        self.world()
            .faults
            .failing_snapshots
            .insert(SnapshotSelector::Named(name.clone()));
    }

    /// Modifications of `group` requested from now on fail as `fault` says.
    pub fn fail_modifications_of(&self, group: &ReplicationGroupId, fault: ModifyFault) {
        self.world()
            .faults
            .failing_modifications
            .insert(group.clone(), fault);
    }

    /// Allow at most `quota` manual snapshots (`None`: no limit).
    pub fn set_snapshot_quota(&self, quota: Option<usize>) {
        self.world().faults.snapshot_quota = quota;
    }

    /// Someone else changed the group: it is on `node_type` now (done, `available`).
    pub fn change_node_type_elsewhere(&self, id: &ReplicationGroupId, node_type: NodeType) {
        self.world()
            .change_elsewhere(id, node_type, None, Instant::now());
    }

    /// Someone else started moving the group to `node_type`: it is `modifying` for the
    /// simulator's modify duration.
    pub fn start_modification_elsewhere(&self, id: &ReplicationGroupId, node_type: NodeType) {
        let mut world = self.world();
        let until = Instant::now() + world.modify_duration;
        world.change_elsewhere(id, node_type, Some(until), Instant::now());
    }

    /// An engine upgrade is now waiting on `id` for the maintenance window (`None`: no longer).
    pub fn set_pending_engine_version(&self, id: &ReplicationGroupId, version: Option<&str>) {
        self.world()
            .set_pending_engine_version(id, version.map(str::to_string));
    }

    /// The caller's IAM policy no longer allows `action` (e.g. `DescribeCacheParameters`,
    /// `DescribeScalableTargets`): it is answered `AccessDenied`.
    pub fn deny_action(&self, action: &str) {
        self.world()
            .faults
            .denied_actions
            .insert(action.to_string());
    }

    /// `action` is answered `Throttling` from now on.
    pub fn throttle_action(&self, action: &str) {
        self.world()
            .faults
            .throttled_actions
            .insert(action.to_string());
    }

    /// `action` is answered normally again.
    pub fn unthrottle_action(&self, action: &str) {
        self.world().faults.throttled_actions.remove(action);
    }

    /// The engine version the group runs now.
    pub fn engine_version(&self, id: &ReplicationGroupId) -> Option<String> {
        self.world().engine_version(id)
    }

    /// The faults in force now.
    pub fn faults(&self) -> Faults {
        self.world().faults.clone()
    }

    /// Replace every injected fault (throttling is separate: see
    /// [`SimHandle::set_throttle_fraction`]).
    pub fn set_faults(&self, faults: Faults) {
        self.world().faults = faults;
    }

    /// Stop accepting connections, let calls in flight finish, and wait for the server task.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            // Idle keep-alive connections from a client pool must not hold the shutdown up.
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the ElastiCache simulator failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "the ElastiCache simulator task panicked"),
                Err(_) => tracing::warn!("the ElastiCache simulator took over 5s to stop"),
            }
        }
    }
}
