//! Alarms from an SQS queue (`alarms.sqs_queue_url`): for a bot with no inbound port, an
//! EventBridge rule (or an SNS topic) sends CloudWatch alarms to a queue and the bot long-polls it.
//!
//! A message is an EventBridge "CloudWatch Alarm State Change" event, as an API destination
//! would POST it, or an SNS notification carrying a CloudWatch alarm, as SNS delivers to SQS
//! (the JSON envelope whose `Message` is the alarm). Both go to the same use case as
//! `POST /alarms/eventbridge` and `POST /alarms/sns` ([`App::handle_alarm`]), with the same
//! delivery ids (`eventbridge:<event id>`, `sns:<message id>`), so a redelivered message, or one
//! that also came over HTTP, is a duplicate the store already has.
//!
//! The queue's policy decides who may send: what is on the queue is trusted as the WebSocket is
//! in Socket Mode (no API key, no SNS signature check; an SNS envelope delivered raw is an
//! EventBridge event or poison like any other body).
//!
//! Delivery rules: a message is deleted only once its outcome is committed to the store; one
//! whose handling fails is left alone and comes back after the visibility timeout (no busy
//! loop: the queue paces it); a message that is not an alarm (poison) is logged, escaped, and
//! left for the queue's redrive policy to move to the dead-letter queue after
//! `maxReceiveCount` receives. A failed ReceiveMessage (throttled, refused, unreachable) pauses
//! the polling with capped exponential backoff and then polls again.

use std::future::Future;
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde_json::Value;
use tracing::{error, info, warn};

use super::{Alarm, AlarmError, eventbridge, sns};
use crate::app::App;
use crate::config::AlarmsConfig;
use crate::domain::alarm::SqsQueueUrl;
use crate::telemetry;

/// EventBridge events and SNS messages are at most 256 KiB; a larger body is not one of them.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// ReceiveMessage's most messages per call.
const BATCH: i32 = 10;
/// The longest pause between failed receives, whatever the first one was.
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// How much of a poison message's body the log shows.
const EXCERPT_CHARS: usize = 300;

/// The alarm a queued message carries, or why it carries none (poison). Pure.
pub fn parse_message(body: &str) -> Result<Alarm, AlarmError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(AlarmError(format!(
            "the body is {} bytes, more than an EventBridge event or SNS message can be",
            body.len()
        )));
    }
    let raw: Value =
        serde_json::from_str(body).map_err(|e| AlarmError(format!("the body is not JSON: {e}")))?;
    // SNS's envelope has a `Type` and a `TopicArn`; an EventBridge event has neither.
    let kind = raw
        .get("TopicArn")
        .and(raw.get("Type"))
        .and_then(Value::as_str);
    match kind {
        None => eventbridge::parse(body.as_bytes()),
        Some("Notification") => {
            let message = sns::parse(body.as_bytes()).map_err(|e| AlarmError(e.to_string()))?;
            sns::cloudwatch_alarm(&message)?.ok_or_else(|| {
                AlarmError("an SNS notification that does not carry a CloudWatch alarm".into())
            })
        }
        Some(other) => Err(AlarmError(format!(
            "an SNS `{other}`, not a notification (a subscription to a queue is confirmed in \
             SNS, not by the bot)"
        ))),
    }
}

/// The first `EXCERPT_CHARS` characters of an untrusted body, for a log line (which escapes it).
fn excerpt(body: &str) -> &str {
    match body.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => &body[..end],
        None => body,
    }
}

/// The pause after `failures` failed receives in a row: `first`, doubled each time, at most a
/// minute (or `first`, if that is longer).
pub fn pause_after(first: Duration, failures: u32) -> Duration {
    let doubled = first.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_PAUSE.max(first))
}

/// An AWS error as one line: its code and message, or the whole cause chain.
fn describe<E>(e: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or("(no message)")),
        None => DisplayErrorContext(e).to_string(),
    }
}

/// Errors an operator must fix (the queue's URL, the role's policy); the rest pass by themselves.
fn needs_an_operator(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "AWS.SimpleQueueService.NonExistentQueue"
                | "QueueDoesNotExist"
                | "AccessDenied"
                | "AccessDeniedException"
                | "InvalidAddress"
                | "InvalidSecurity"
        )
    )
}

/// The queue reader: the SQS client (from the same AWS configuration as every other client,
/// in the queue's own region) and how to poll.
#[derive(Debug, Clone)]
pub struct SqsIntake {
    client: aws_sdk_sqs::Client,
    queue: SqsQueueUrl,
    wait: Duration,
    visibility: Option<Duration>,
    retry: Duration,
}

impl SqsIntake {
    /// The intake `alarms` asks for (`None`: no `sqs_queue_url`). The client is in the queue's
    /// region; an endpoint in `sdk` (the simulator, `AWS_ENDPOINT_URL_SQS`) still wins. SDK
    /// retries are off: a failed receive is paced here, a failed message by the queue.
    pub fn new(sdk: &SdkConfig, alarms: &AlarmsConfig) -> Option<SqsIntake> {
        let queue = alarms.sqs_queue_url.clone()?;
        let conf = aws_sdk_sqs::config::Builder::from(sdk)
            .region(Region::new(queue.region().to_string()))
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
            .build();
        Some(SqsIntake {
            client: aws_sdk_sqs::Client::from_conf(conf),
            queue,
            wait: alarms.sqs_wait,
            visibility: alarms.sqs_visibility,
            retry: alarms.sqs_retry_interval,
        })
    }

    pub fn queue(&self) -> &SqsQueueUrl {
        &self.queue
    }

    /// Poll until `stop` resolves. A long poll in flight is abandoned at once (what it would
    /// have received comes back after the visibility timeout); a message being handled is
    /// finished first, and the rest of its batch is left to come back.
    pub async fn run(self, app: App, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        info!(queue = %self.queue, wait = ?self.wait, "taking alarms from SQS");
        let mut failures = 0u32;
        loop {
            let asked = tokio::time::Instant::now();
            let received = tokio::select! {
                _ = &mut stop => return,
                r = self.receive() => r,
            };
            let pause = match received {
                Ok(messages) => {
                    failures = 0;
                    let empty = messages.is_empty();
                    for message in messages {
                        self.take(&app, message).await;
                        // Between messages, a shutdown wins.
                        tokio::select! {
                            biased;
                            _ = &mut stop => return,
                            _ = std::future::ready(()) => {}
                        }
                    }
                    // A long poll that came back empty at once (an endpoint that does not
                    // wait) must not become a busy loop.
                    (empty && asked.elapsed() < self.wait / 2).then_some(self.retry)
                }
                Err(e) => {
                    failures += 1;
                    telemetry::sqs_receive_failed();
                    let pause = pause_after(self.retry, failures);
                    let (code, why) = (e.code().map(str::to_string), describe(&e));
                    if needs_an_operator(code.as_deref()) {
                        error!(queue = %self.queue, error = %why, failures, ?pause, "could not receive from the SQS queue: check alarms.sqs_queue_url and the role's sqs:ReceiveMessage permission");
                    } else {
                        warn!(queue = %self.queue, error = %why, failures, ?pause, "could not receive from the SQS queue; polling again after a pause");
                    }
                    Some(pause)
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }

    async fn receive(
        &self,
    ) -> Result<Vec<Message>, SdkError<aws_sdk_sqs::operation::receive_message::ReceiveMessageError>>
    {
        let mut ask = self
            .client
            .receive_message()
            .queue_url(self.queue.as_str())
            .max_number_of_messages(BATCH)
            .wait_time_seconds(seconds(self.wait))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount);
        if let Some(v) = self.visibility {
            ask = ask.visibility_timeout(seconds(v));
        }
        Ok(ask.send().await?.messages.unwrap_or_default())
    }

    /// Handle one message: the alarm's outcome committed, then the message deleted; or left
    /// on the queue (handling failed: it comes back; poison: the redrive takes it).
    async fn take(&self, app: &App, message: Message) {
        telemetry::sqs_message("received");
        let id = message.message_id().unwrap_or_default().to_string();
        let receives = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|n| n.parse::<u32>().ok());
        let body = message.body().unwrap_or_default();
        let alarm = match parse_message(body) {
            Ok(alarm) => alarm,
            Err(why) => {
                telemetry::sqs_message("poison");
                // Untrusted text is Debug-formatted: quoted and escaped, one log line.
                warn!(message_id = ?id, ?receives, reason = ?why.0, body = ?excerpt(body), "an SQS message that is not a CloudWatch alarm: left on the queue for its dead-letter redrive");
                return;
            }
        };
        let name = alarm.name.clone();
        match app.handle_alarm(alarm).await {
            Ok(outcome) => {
                info!(alarm = ?name, outcome = outcome.name(), message_id = ?id, ?receives, "alarm handled (SQS)");
                self.delete(&id, message.receipt_handle()).await;
            }
            Err(e) => {
                telemetry::sqs_message("failed");
                warn!(alarm = ?name, message_id = ?id, ?receives, error = %e, "could not handle an alarm from SQS; it comes back after the visibility timeout");
            }
        }
    }

    async fn delete(&self, id: &str, receipt: Option<&str>) {
        let Some(receipt) = receipt else {
            telemetry::sqs_message("failed");
            warn!(message_id = ?id, "an SQS message without a receipt handle cannot be deleted; it comes back and is a duplicate then");
            return;
        };
        let deleted = self
            .client
            .delete_message()
            .queue_url(self.queue.as_str())
            .receipt_handle(receipt)
            .send()
            .await;
        match deleted {
            Ok(_) => telemetry::sqs_message("deleted"),
            Err(e) => {
                telemetry::sqs_message("failed");
                warn!(message_id = ?id, error = %describe(&e), "could not delete a handled SQS message; it comes back and is recognised as a duplicate");
            }
        }
    }
}

/// A duration in SQS's whole seconds (the config allows nothing else).
fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alarm::AlarmState;

    const EVENT: &str = include_str!("../../tests/fixtures/eventbridge_cloudwatch_alarm.json");
    const SNS: &str = include_str!("../../tests/fixtures/sns_notification_cloudwatch.json");

    /// As SNS delivers to SQS: the HTTPS spelling of the certificate and unsubscribe URLs.
    fn sns_to_sqs() -> String {
        SNS.replace("SigningCertUrl", "SigningCertURL")
            .replace("UnsubscribeUrl", "UnsubscribeURL")
    }

    #[test]
    fn an_eventbridge_event_is_the_alarm_the_api_destination_would_post() {
        let a = parse_message(EVENT).unwrap();
        assert_eq!(a, eventbridge::parse(EVENT.as_bytes()).unwrap());
        assert_eq!(
            a.delivery_id,
            "eventbridge:c4c1c1c9-6542-e61b-6ef0-8c4d36933a92"
        );
    }

    #[test]
    fn an_sns_envelope_is_unwrapped_to_its_cloudwatch_alarm() {
        for body in [SNS.to_string(), sns_to_sqs()] {
            let a = parse_message(&body).unwrap();
            assert_eq!(a.name, "EXAMPLE");
            assert_eq!(a.state, AlarmState::Alarm);
            assert_eq!(a.delivery_id, "sns:95df01b4-ee98-5cb9-9903-4c221d41eb5e");
            assert_eq!(a.dimension("InstanceId"), Some("TestInstance"));
        }
    }

    #[test]
    fn poison_is_refused_with_a_reason_never_a_panic() {
        let mut not_alarm: Value = serde_json::from_str(SNS).unwrap();
        not_alarm["Message"] = Value::from("hello from a test publish");
        let mut confirm: Value = serde_json::from_str(SNS).unwrap();
        confirm["Type"] = Value::from("SubscriptionConfirmation");
        let other = EVENT.replace("CloudWatch Alarm State Change", "EC2 Spot Interruption");
        let huge = format!("\"{}\"", "x".repeat(MAX_BODY_BYTES));
        for (body, says) in [
            ("", "not JSON"),
            ("{not json", "not JSON"),
            ("\u{0}\u{1b}[31m\n2026-01-01 INFO forged", "not JSON"),
            ("[]", "expected a `CloudWatch Alarm State Change`"),
            ("{}", "expected a `CloudWatch Alarm State Change`"),
            (other.as_str(), "expected a `CloudWatch Alarm State Change`"),
            (&not_alarm.to_string(), "does not carry a CloudWatch alarm"),
            (&confirm.to_string(), "SubscriptionConfirmation"),
            (
                r#"{"Type":"Notification","TopicArn":"t"}"#,
                "not an SNS message",
            ),
            (&huge, "more than an EventBridge event"),
        ] {
            let err = parse_message(body).unwrap_err();
            assert!(err.0.contains(says), "{body:.40}: {err}");
        }
    }

    #[test]
    fn a_poison_excerpt_is_short_and_cut_on_a_character() {
        let long = "é".repeat(EXCERPT_CHARS + 10);
        assert_eq!(excerpt(&long).chars().count(), EXCERPT_CHARS);
        assert_eq!(excerpt("short"), "short");
    }

    #[test]
    fn failed_receives_back_off_doubling_up_to_a_minute() {
        let s = Duration::from_secs;
        let pauses: Vec<Duration> = (1..=9).map(|n| pause_after(s(1), n)).collect();
        assert_eq!(
            pauses,
            [s(1), s(2), s(4), s(8), s(16), s(32), s(60), s(60), s(60)]
        );
        assert_eq!(pause_after(s(1), u32::MAX), s(60));
        assert_eq!(pause_after(s(90), 3), s(90));
        assert_eq!(
            pause_after(Duration::from_millis(10), 2),
            Duration::from_millis(20)
        );
    }
}
