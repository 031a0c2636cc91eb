//! The simulator's SQS: queues the bot long-polls for alarms, over the protocol `aws-sdk-sqs`
//! speaks, on the same endpoint.
//!
//! The protocol, as the SDK (1.119) builds it: awsJson 1.0 — `POST /` with `X-Amz-Target:
//! AmazonSQS.<Operation>`, `Content-Type: application/x-amz-json-1.0` and a JSON object for a
//! body; the answer is a JSON object too. SQS is "awsQueryCompatible": an error is a JSON object
//! with `__type` (`com.amazonaws.sqs#QueueDoesNotExist`) and `message`, plus an
//! `x-amzn-query-error: Code;Sender` header whose code the SDK prefers (the old Query codes:
//! `AWS.SimpleQueueService.NonExistentQueue`, `RequestThrottled`, `AccessDenied`, …).
//!
//! Served: CreateQueue (for a rehearsal against `elasticache-sim`: `VisibilityTimeout` and
//! `RedrivePolicy`), SendMessage, ReceiveMessage (long polling, visibility timeouts, receipt
//! handles, `ApproximateReceiveCount`), DeleteMessage, ChangeMessageVisibility, GetQueueUrl and
//! GetQueueAttributes. A queue with a redrive policy moves a message to its dead-letter queue
//! when a receive finds it received `maxReceiveCount` times already, as SQS does.
//!
//! Time is compressed per queue: one SQS second (WaitTimeSeconds, VisibilityTimeout,
//! DelaySeconds) lasts [`SimQueue::second`]. Faults: the world's throttle fraction applies,
//! and any operation can be throttled or denied with [`SimHandle::throttle_action`] and
//! [`SimHandle::deny_action`], as every other action.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::SimCall;
use super::server::SimHandle;

/// The `X-Amz-Target` prefix of SQS operations.
pub const TARGET_PREFIX: &str = "AmazonSQS.";
/// What SQS allows in one message body (EventBridge sends at most 256 KiB anyway).
const MAX_BODY: usize = 1024 * 1024;

/// A queue the simulator serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimQueue {
    pub name: String,
    /// The queue's VisibilityTimeout, in SQS seconds (AWS's default: 30).
    pub visibility_timeout: u32,
    /// The queue's RedrivePolicy: its dead-letter queue's name and `maxReceiveCount`.
    pub redrive: Option<(String, u32)>,
    /// How long one SQS second lasts here.
    pub second: Duration,
}

impl SimQueue {
    /// A queue with AWS's defaults (30 s visibility, no dead-letter queue, real seconds).
    pub fn new(name: &str) -> SimQueue {
        SimQueue {
            name: name.to_string(),
            visibility_timeout: 30,
            redrive: None,
            second: Duration::from_secs(1),
        }
    }

    pub fn visibility_timeout(mut self, seconds: u32) -> SimQueue {
        self.visibility_timeout = seconds;
        self
    }

    /// Messages received `max_receive_count` times move to `dead_letter_queue` (create it too).
    pub fn dead_letter(mut self, dead_letter_queue: &str, max_receive_count: u32) -> SimQueue {
        self.redrive = Some((dead_letter_queue.to_string(), max_receive_count));
        self
    }

    /// One SQS second lasts `second` (compressed time for tests and the demo).
    pub fn second(mut self, second: Duration) -> SimQueue {
        self.second = second;
        self
    }
}

/// A message as a test sees it on a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    pub id: String,
    pub body: String,
    /// How many times it was received (SQS's ApproximateReceiveCount).
    pub receives: u32,
    /// Whether a ReceiveMessage would return it now.
    pub visible: bool,
}

/// Every queue, and a wake-up for long polls when a message arrives or reappears.
#[derive(Default)]
pub(super) struct Queues {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    queues: BTreeMap<String, Queue>,
    /// Message ids and receipt handles are numbered.
    next: u64,
}

struct Queue {
    config: SimQueue,
    messages: VecDeque<Stored>,
}

struct Stored {
    id: String,
    body: String,
    receives: u32,
    /// Hidden until then (received, or sent with a delay).
    hidden_until: Option<Instant>,
    /// The latest receive's handle; only it deletes the message.
    receipt: Option<String>,
    sent: std::time::SystemTime,
}

impl Stored {
    fn visible(&self, now: Instant) -> bool {
        self.hidden_until.is_none_or(|t| t <= now)
    }
}

/// An SQS error: the HTTP status, the `__type` shape, the Query code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SqsError {
    status: u16,
    shape: &'static str,
    code: &'static str,
    message: String,
}

impl SqsError {
    fn no_queue() -> SqsError {
        SqsError {
            status: 400,
            shape: "com.amazonaws.sqs#QueueDoesNotExist",
            code: "AWS.SimpleQueueService.NonExistentQueue",
            message: "The specified queue does not exist.".into(),
        }
    }

    fn invalid(message: impl Into<String>) -> SqsError {
        SqsError {
            status: 400,
            shape: "com.amazon.coral.validate#ValidationException",
            code: "InvalidParameterValue",
            message: message.into(),
        }
    }

    fn bad_receipt(handle: &str) -> SqsError {
        SqsError {
            status: 400,
            shape: "com.amazonaws.sqs#ReceiptHandleIsInvalid",
            code: "ReceiptHandleIsInvalid",
            message: format!(
                "The input receipt handle \"{handle}\" is not a valid receipt handle."
            ),
        }
    }
}

/// The request's JSON object (an empty or non-object body is refused).
type Params = serde_json::Map<String, Value>;

fn string<'a>(p: &'a Params, key: &str) -> Result<&'a str, SqsError> {
    match p.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(SqsError::invalid(format!("{key} must be a string."))),
        None => Err(SqsError {
            status: 400,
            shape: "com.amazon.coral.validate#ValidationException",
            code: "MissingParameter",
            message: format!("The request must contain the parameter {key}."),
        }),
    }
}

/// An integer parameter within `range`, or `default` when absent.
fn int(
    p: &Params,
    key: &str,
    range: std::ops::RangeInclusive<i64>,
    default: Option<i64>,
) -> Result<Option<i64>, SqsError> {
    let Some(v) = p.get(key) else {
        return Ok(default);
    };
    match v.as_i64() {
        Some(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(SqsError::invalid(format!(
            "Value {v} for parameter {key} is invalid. Reason: must be between {} and {}.",
            range.start(),
            range.end()
        ))),
    }
}

/// The queue name a URL names, if the account in it is the simulator's:
/// `https://sqs.<region>.amazonaws.com/<account>/<name>` (any scheme and host).
fn queue_name<'a>(url: &'a str, account: &str) -> Result<&'a str, SqsError> {
    let mut parts = url.trim_end_matches('/').rsplit('/');
    let name = parts.next().unwrap_or_default();
    let owner = parts.next().unwrap_or_default();
    if owner == account && !name.is_empty() {
        Ok(name)
    } else {
        Err(SqsError::no_queue())
    }
}

/// The region a request was signed for (its credential scope), for the URLs it is answered.
fn signed_region(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .filter(|r| !r.is_empty())
        .unwrap_or("us-east-1")
        .to_string()
}

impl Queues {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn create(&self, queue: SimQueue) {
        let name = queue.name.clone();
        self.lock().queues.insert(
            name,
            Queue {
                config: queue,
                messages: VecDeque::new(),
            },
        );
    }

    pub(super) fn send(&self, queue: &str, body: &str, delay: u32) -> Option<String> {
        let mut state = self.lock();
        state.next += 1;
        let id = format!("{:08x}-5eed-4000-8000-{:012x}", state.next, state.next);
        let q = state.queues.get_mut(queue)?;
        let hidden_until = (delay > 0).then(|| Instant::now() + q.config.second * delay);
        q.messages.push_back(Stored {
            id: id.clone(),
            body: body.to_string(),
            receives: 0,
            hidden_until,
            receipt: None,
            sent: std::time::SystemTime::now(),
        });
        drop(state);
        self.changed.notify_waiters();
        Some(id)
    }

    pub(super) fn messages(&self, queue: &str) -> Vec<SimMessage> {
        let now = Instant::now();
        self.lock()
            .queues
            .get(queue)
            .map(|q| {
                q.messages
                    .iter()
                    .map(|m| SimMessage {
                        id: m.id.clone(),
                        body: m.body.clone(),
                        receives: m.receives,
                        visible: m.visible(now),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn exists(&self, queue: &str) -> bool {
        self.lock().queues.contains_key(queue)
    }

    /// Take up to `max` visible messages (moving those received too often to the dead-letter
    /// queue first), hiding each for `visibility` SQS seconds (`None`: the queue's own).
    fn take(
        &self,
        queue: &str,
        max: usize,
        visibility: Option<u32>,
        attributes: bool,
        now: Instant,
    ) -> (Vec<Value>, Option<Instant>) {
        let mut state = self.lock();
        let State { queues, next } = &mut *state;
        let Some(q) = queues.get_mut(queue) else {
            return (Vec::new(), None);
        };
        let mut dead = Vec::new();
        if let Some((_, max_receives)) = &q.config.redrive {
            let (keep, moved): (VecDeque<Stored>, VecDeque<Stored>) = q
                .messages
                .drain(..)
                .partition(|m| !(m.visible(now) && m.receives >= *max_receives));
            q.messages = keep;
            dead.extend(moved);
        }
        let hide = q.config.second * visibility.unwrap_or(q.config.visibility_timeout);
        let mut out = Vec::new();
        for m in q.messages.iter_mut() {
            if out.len() == max {
                break;
            }
            if !m.visible(now) {
                continue;
            }
            *next += 1;
            m.receives += 1;
            m.hidden_until = Some(now + hide);
            let receipt = format!("rh-{}-{}-{:x}", m.id, m.receives, *next);
            m.receipt = Some(receipt.clone());
            let mut message = json!({
                "MessageId": m.id,
                "ReceiptHandle": receipt,
                "Body": m.body,
            });
            if attributes {
                let sent = m
                    .sent
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                message["Attributes"] = json!({
                    "ApproximateReceiveCount": m.receives.to_string(),
                    "SentTimestamp": sent.to_string(),
                });
            }
            out.push(message);
        }
        // When the next hidden message reappears (a long poll wakes then).
        let wake = q
            .messages
            .iter()
            .filter_map(|m| m.hidden_until)
            .filter(|t| *t > now)
            .min();
        if let Some((dlq, _)) = q.config.redrive.clone()
            && let Some(d) = queues.get_mut(&dlq)
        {
            for mut m in dead {
                m.receives = 0;
                m.hidden_until = None;
                m.receipt = None;
                d.messages.push_back(m);
            }
        }
        (out, wake)
    }

    fn delete(&self, queue: &str, handle: &str) -> Result<(), SqsError> {
        let mut state = self.lock();
        let q = state.queues.get_mut(queue).ok_or_else(SqsError::no_queue)?;
        if let Some(i) = q
            .messages
            .iter()
            .position(|m| m.receipt.as_deref() == Some(handle))
        {
            q.messages.remove(i);
            return Ok(());
        }
        // A handle of an earlier receive, or of a message already deleted: SQS answers
        // success (and the message, if it is still there, stays).
        if handle.starts_with("rh-") {
            Ok(())
        } else {
            Err(SqsError::bad_receipt(handle))
        }
    }

    fn change_visibility(&self, queue: &str, handle: &str, seconds: u32) -> Result<(), SqsError> {
        let mut state = self.lock();
        let q = state.queues.get_mut(queue).ok_or_else(SqsError::no_queue)?;
        let second = q.config.second;
        let m = q
            .messages
            .iter_mut()
            .find(|m| m.receipt.as_deref() == Some(handle))
            .ok_or_else(|| SqsError {
                status: 400,
                shape: "com.amazonaws.sqs#MessageNotInflight",
                code: "AWS.SimpleQueueService.MessageNotInflight",
                message: "The message referred to isn't in flight.".into(),
            })?;
        m.hidden_until = Some(Instant::now() + second * seconds);
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    fn attributes(&self, queue: &str, arn: &str) -> Value {
        let now = Instant::now();
        let state = self.lock();
        let Some(q) = state.queues.get(queue) else {
            return json!({});
        };
        let visible = q.messages.iter().filter(|m| m.visible(now)).count();
        let mut out = json!({
            "QueueArn": arn,
            "ApproximateNumberOfMessages": visible.to_string(),
            "ApproximateNumberOfMessagesNotVisible": (q.messages.len() - visible).to_string(),
            "VisibilityTimeout": q.config.visibility_timeout.to_string(),
            "SqsManagedSseEnabled": "true",
        });
        if let Some((dlq, max)) = &q.config.redrive {
            let dlq_arn = format!("{}:{dlq}", arn.rsplit_once(':').map_or(arn, |(a, _)| a));
            out["RedrivePolicy"] =
                json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max })
                    .to_string()
                    .into();
        }
        out
    }
}

/// Answer one SQS call (`X-Amz-Target: AmazonSQS.<operation>`).
pub(super) async fn serve(
    sim: &SimHandle,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let operation = target
        .strip_prefix(TARGET_PREFIX)
        .unwrap_or(target)
        .to_string();
    let params: Result<Params, SqsError> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(SqsError {
            status: 400,
            shape: "com.amazon.coral.service#SerializationException",
            code: "InvalidParameterValue",
            message: "The request body is not a JSON object.".into(),
        }),
    };
    let region = signed_region(headers);
    let signed = headers.contains_key(header::AUTHORIZATION);
    let queues = sim.sqs();
    // Everything but the wait of a long poll, under the world's lock (faults, the call log).
    let (first, request_id) = {
        let mut world = sim.world();
        let account = world.account_id().to_string();
        let first = if !signed {
            Err(SqsError {
                status: 403,
                shape: "com.amazon.coral.service#MissingAuthenticationTokenException",
                code: "MissingAuthenticationToken",
                message: "Request is missing Authentication Token".into(),
            })
        } else if world.throttles(&operation) {
            Err(SqsError {
                status: 400,
                shape: "com.amazonaws.sqs#RequestThrottled",
                code: "RequestThrottled",
                message: "Rate exceeded".into(),
            })
        } else if world.faults.denied_actions.contains(&operation) {
            Err(SqsError {
                status: 403,
                shape: "com.amazon.coral.service#AccessDeniedException",
                code: "AccessDenied",
                message: format!(
                    "User: arn:aws:iam::{account}:user/redis-autoscaler is not authorized to \
                     perform: sqs:{operation} because no identity-based policy allows the \
                     sqs:{operation} action"
                ),
            })
        } else {
            params
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|p| act(queues, &operation, p, &account, &region))
        };
        let call_params = params
            .as_ref()
            .map(|p| {
                p.iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        (k.clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let request_id = world.record_call(SimCall {
            at: std::time::Instant::now(),
            access_key: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(super::protocol::access_key),
            action: operation.clone(),
            params: call_params,
            outcome: match &first {
                Ok(_) => "ok".to_string(),
                Err(e) => e.code.to_string(),
            },
        });
        (first, request_id)
    };
    let result = match first {
        Ok(Step::Receive(ask)) => Ok(receive(queues, &ask).await),
        Ok(Step::Done(v)) => Ok(v),
        Err(e) => Err(e),
    };
    if sim.log_calls() {
        match &result {
            Ok(_) => tracing::info!(request_id = %request_id, "SQS {operation} → ok"),
            Err(e) => {
                tracing::info!(request_id = %request_id, "SQS {operation} → {}: {}", e.code, e.message)
            }
        }
    }
    respond(&request_id, result)
}

/// What an operation does after its checks: answered at once, or a receive that may wait.
enum Step {
    Done(Value),
    Receive(Receive),
}

struct Receive {
    queue: String,
    max: usize,
    wait: u32,
    visibility: Option<u32>,
    attributes: bool,
}

fn act(
    queues: &Queues,
    operation: &str,
    p: &Params,
    account: &str,
    region: &str,
) -> Result<Step, SqsError> {
    let url = |name: &str| format!("https://sqs.{region}.amazonaws.com/{account}/{name}");
    let named = |p: &Params| -> Result<String, SqsError> {
        let name = queue_name(string(p, "QueueUrl")?, account)?.to_string();
        if queues.exists(&name) {
            Ok(name)
        } else {
            Err(SqsError::no_queue())
        }
    };
    match operation {
        "SendMessage" => {
            let queue = named(p)?;
            let body = string(p, "MessageBody")?;
            if body.is_empty() || body.len() > MAX_BODY {
                return Err(SqsError::invalid(
                    "The message body must be 1 byte to 1 MiB long.",
                ));
            }
            let delay = int(p, "DelaySeconds", 0..=900, Some(0))?.unwrap_or(0) as u32;
            let id = queues
                .send(&queue, body, delay)
                .ok_or_else(SqsError::no_queue)?;
            Ok(Step::Done(json!({ "MessageId": id })))
        }
        "ReceiveMessage" => {
            let queue = named(p)?;
            let max = int(p, "MaxNumberOfMessages", 1..=10, Some(1))?.unwrap_or(1) as usize;
            let wait = int(p, "WaitTimeSeconds", 0..=20, Some(0))?.unwrap_or(0) as u32;
            let visibility = int(p, "VisibilityTimeout", 0..=43_200, None)?.map(|v| v as u32);
            let asked = |key: &str| {
                p.get(key).and_then(Value::as_array).is_some_and(|names| {
                    names
                        .iter()
                        .any(|n| matches!(n.as_str(), Some("All" | "ApproximateReceiveCount")))
                })
            };
            let attributes = asked("MessageSystemAttributeNames") || asked("AttributeNames");
            Ok(Step::Receive(Receive {
                queue,
                max,
                wait,
                visibility,
                attributes,
            }))
        }
        "DeleteMessage" => {
            let queue = named(p)?;
            queues.delete(&queue, string(p, "ReceiptHandle")?)?;
            Ok(Step::Done(json!({})))
        }
        "ChangeMessageVisibility" => {
            let queue = named(p)?;
            let seconds = int(p, "VisibilityTimeout", 0..=43_200, None)?
                .ok_or_else(|| SqsError::invalid("VisibilityTimeout is required."))?;
            queues.change_visibility(&queue, string(p, "ReceiptHandle")?, seconds as u32)?;
            Ok(Step::Done(json!({})))
        }
        "CreateQueue" => {
            let name = string(p, "QueueName")?;
            let ok = !name.is_empty()
                && name.len() <= 80
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(SqsError::invalid(
                    "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
                ));
            }
            let attributes = p.get("Attributes").and_then(Value::as_object);
            let attribute = |key: &str| attributes.and_then(|a| a.get(key)).and_then(Value::as_str);
            let mut queue = SimQueue::new(name);
            if let Some(v) = attribute("VisibilityTimeout") {
                queue.visibility_timeout =
                    v.parse().ok().filter(|v| *v <= 43_200).ok_or_else(|| {
                        SqsError::invalid("Invalid value for the parameter VisibilityTimeout.")
                    })?;
            }
            if let Some(policy) = attribute("RedrivePolicy") {
                let bad = || SqsError::invalid("Value for parameter RedrivePolicy is invalid.");
                let policy: Value = serde_json::from_str(policy).map_err(|_| bad())?;
                let dlq = policy["deadLetterTargetArn"]
                    .as_str()
                    .and_then(|a| a.rsplit(':').next());
                let max = match &policy["maxReceiveCount"] {
                    Value::String(n) => n.parse().ok(),
                    n => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                };
                match (dlq, max) {
                    (Some(dlq), Some(max)) if (1..=1000).contains(&max) => {
                        queue.redrive = Some((dlq.to_string(), max));
                    }
                    _ => return Err(bad()),
                }
            }
            if !queues.exists(name) {
                queues.create(queue);
            }
            Ok(Step::Done(json!({ "QueueUrl": url(name) })))
        }
        "GetQueueUrl" => {
            let name = string(p, "QueueName")?;
            let owner = p.get("QueueOwnerAWSAccountId").and_then(Value::as_str);
            if owner.is_some_and(|o| o != account) || !queues.exists(name) {
                return Err(SqsError::no_queue());
            }
            Ok(Step::Done(json!({ "QueueUrl": url(name) })))
        }
        "GetQueueAttributes" => {
            let queue = named(p)?;
            let arn = format!("arn:aws:sqs:{region}:{account}:{queue}");
            Ok(Step::Done(
                json!({ "Attributes": queues.attributes(&queue, &arn) }),
            ))
        }
        other => Err(SqsError {
            status: 400,
            shape: "com.amazon.coral.service#UnknownOperationException",
            code: "UnknownOperationException",
            message: format!("The operation {other} is not served here."),
        }),
    }
}

/// A ReceiveMessage: what is visible now, or the first messages to arrive or reappear within
/// the wait, or nothing once it is over.
async fn receive(queues: &Queues, ask: &Receive) -> Value {
    let second = queues
        .lock()
        .queues
        .get(&ask.queue)
        .map_or(Duration::from_secs(1), |q| q.config.second);
    let deadline = Instant::now() + second * ask.wait;
    loop {
        let changed = queues.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = Instant::now();
        let (messages, wake) =
            queues.take(&ask.queue, ask.max, ask.visibility, ask.attributes, now);
        if !messages.is_empty() || now >= deadline {
            return if messages.is_empty() {
                json!({})
            } else {
                json!({ "Messages": messages })
            };
        }
        let until = wake.map_or(deadline, |w| w.min(deadline));
        tokio::select! {
            _ = &mut changed => {}
            _ = tokio::time::sleep_until(until) => {}
        }
    }
}

fn respond(request_id: &str, result: Result<Value, SqsError>) -> Response {
    let (status, body, query_error) = match result {
        Ok(v) => (200, v, None),
        Err(e) => {
            let sender = if e.status >= 500 {
                "Receiver"
            } else {
                "Sender"
            };
            let body = json!({ "__type": e.shape, "message": e.message });
            (e.status, body, Some(format!("{};{sender}", e.code)))
        }
    };
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
        body.to_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    if let Some(q) = query_error
        && let Ok(v) = HeaderValue::from_str(&q)
    {
        headers.insert("x-amzn-query-error", v);
    }
    response
}

impl SimHandle {
    /// Serve `queue` (replacing one of the same name, messages and all); its URL, as
    /// `GetQueueUrl` would answer it in `us-east-1`.
    pub fn create_queue(&self, queue: SimQueue) -> String {
        let url = format!(
            "https://sqs.us-east-1.amazonaws.com/{}/{}",
            self.world().account_id(),
            queue.name
        );
        self.sqs().create(queue);
        url
    }

    /// Put a message on `queue` (as SendMessage would); its message id, `None` with no such queue.
    pub fn send_message(&self, queue: &str, body: &str) -> Option<String> {
        self.sqs().send(queue, body, 0)
    }

    /// The messages on `queue` now, oldest first.
    pub fn queue_messages(&self, queue: &str) -> Vec<SimMessage> {
        self.sqs().messages(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> Queues {
        let q = Queues::default();
        q.create(SimQueue::new("alarms").dead_letter("alarms-dlq", 2));
        q.create(SimQueue::new("alarms-dlq"));
        q
    }

    fn receipts(v: &[Value]) -> Vec<String> {
        v.iter()
            .map(|m| m["ReceiptHandle"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_received_message_hides_until_its_visibility_timeout_and_comes_back_counted() {
        let q = queues();
        q.send("alarms", "one", 0).unwrap();
        let t0 = Instant::now();
        let (got, wake) = q.take("alarms", 10, Some(5), true, t0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["Body"], "one");
        assert_eq!(got[0]["Attributes"]["ApproximateReceiveCount"], "1");
        assert_eq!(wake, Some(t0 + Duration::from_secs(5)));
        assert!(
            q.take("alarms", 10, None, true, t0 + Duration::from_secs(4))
                .0
                .is_empty()
        );
        let (again, _) = q.take("alarms", 10, None, false, t0 + Duration::from_secs(5));
        assert_eq!(again.len(), 1);
        assert!(again[0].get("Attributes").is_none());
        assert_ne!(receipts(&got), receipts(&again));
    }

    #[test]
    fn only_the_latest_receipt_deletes_and_a_stale_one_is_answered_success() {
        let q = queues();
        q.send("alarms", "one", 0).unwrap();
        let t0 = Instant::now();
        let first = receipts(&q.take("alarms", 1, Some(0), false, t0).0);
        let second = receipts(&q.take("alarms", 1, Some(0), false, t0).0);
        assert_eq!(q.delete("alarms", &first[0]), Ok(()));
        assert_eq!(
            q.messages("alarms").len(),
            1,
            "a stale handle deletes nothing"
        );
        assert_eq!(q.delete("alarms", &second[0]), Ok(()));
        assert!(q.messages("alarms").is_empty());
        assert_eq!(
            q.delete("alarms", "garbage"),
            Err(SqsError::bad_receipt("garbage"))
        );
        assert_eq!(q.delete("nope", &second[0]), Err(SqsError::no_queue()));
    }

    #[test]
    fn a_message_received_max_receive_count_times_moves_to_the_dead_letter_queue() {
        let q = queues();
        q.send("alarms", "poison", 0).unwrap();
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(q.take("alarms", 10, Some(0), false, t0).0.len(), 1);
        }
        assert!(q.take("alarms", 10, Some(0), false, t0).0.is_empty());
        assert!(q.messages("alarms").is_empty());
        let dead = q.messages("alarms-dlq");
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].body.as_str(), dead[0].receives, dead[0].visible),
            ("poison", 0, true)
        );
    }

    #[test]
    fn queue_urls_name_the_account_and_the_queue() {
        let account = "123456789012";
        assert_eq!(
            queue_name(
                "https://sqs.us-east-1.amazonaws.com/123456789012/alarms",
                account
            ),
            Ok("alarms")
        );
        assert_eq!(
            queue_name("http://127.0.0.1:9/123456789012/alarms/", account),
            Ok("alarms")
        );
        assert_eq!(
            queue_name(
                "https://sqs.us-east-1.amazonaws.com/999999999999/alarms",
                account
            ),
            Err(SqsError::no_queue())
        );
        assert_eq!(queue_name("alarms", account), Err(SqsError::no_queue()));
    }
}
