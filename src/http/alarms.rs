//! `POST /alarms/eventbridge` and `POST /alarms/sns`: CloudWatch alarms coming in.
//!
//! EventBridge (an API destination) authenticates with `X-Api-Key`, compared in constant
//! time; SNS messages are verified by their signature and must come from a configured topic.
//! Anything that fails a check gets a 4xx and does nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::alarm::{Alarm, eventbridge, sns};
use crate::app::AlarmOutcome;

use super::Http;

/// EventBridge and SNS payloads are at most 256 KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(json!({ "error": why }))).into_response()
}

/// `via`: the route it came in by (the request's own span is there at debug only).
async fn handle(http: &Http, alarm: Alarm, via: &'static str) -> Response {
    let name = alarm.name.clone();
    match http.app.handle_alarm(alarm).await {
        Ok(outcome) => {
            info!(alarm = %name, outcome = outcome.name(), via, "alarm handled");
            let (run, detail) = match &outcome {
                AlarmOutcome::Started(r) | AlarmOutcome::Repeated(r) | AlarmOutcome::Cleared(r) => {
                    (Some(r.to_string()), None)
                }
                AlarmOutcome::Ignored(why) => (None, Some(why.clone())),
                _ => (None, None),
            };
            axum::Json(json!({ "outcome": outcome.name(), "run_id": run, "detail": detail }))
                .into_response()
        }
        Err(crate::app::AppError::AwsUnavailable(e) | crate::app::AppError::Busy(e)) => {
            // Not taken: EventBridge and SNS deliver it again (Retry-After is a hint).
            warn!(alarm = %name, error = %e, via, "alarm refused for now: AWS could not be asked");
            let mut resp = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "AWS could not be asked about the alarm's cluster now; deliver it again",
            );
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
            resp
        }
        Err(e) => {
            // A 5xx makes EventBridge and SNS retry, which is what we want here.
            tracing::error!(alarm = %name, error = %e, via, "could not handle an alarm");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the delivery will be retried",
            )
        }
    }
}

pub async fn eventbridge(State(http): State<Http>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(expected) = http.app.config.secrets.alarm_api_key.as_ref() else {
        warn!("refused an EventBridge delivery: ALARM_API_KEY is not set");
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let given = headers
        .get("x-api-key")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(expected.expose().as_bytes())) || given.is_empty() {
        warn!("refused an EventBridge delivery: missing or wrong X-Api-Key");
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if body.len() > MAX_BODY_BYTES {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    match eventbridge::parse(&body) {
        Ok(alarm) => handle(&http, alarm, "/alarms/eventbridge").await,
        Err(e) => {
            warn!(error = %e, "refused an EventBridge delivery");
            refuse(StatusCode::BAD_REQUEST, &e.0)
        }
    }
}

pub async fn sns(State(http): State<Http>, headers: HeaderMap, body: Bytes) -> Response {
    if body.len() > MAX_BODY_BYTES {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let message = match sns::parse(&body) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "refused an SNS delivery");
            return refuse(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    if let Some(kind) = headers
        .get("x-amz-sns-message-type")
        .and_then(|v| v.to_str().ok())
        && kind != message.kind
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "x-amz-sns-message-type does not match the message",
        );
    }
    if !http
        .app
        .config
        .alarms
        .sns_topic_arns
        .contains(&message.topic_arn)
    {
        warn!(topic = %message.topic_arn, "refused an SNS delivery from a topic not in alarms.sns_topic_arns");
        return refuse(StatusCode::FORBIDDEN, "unknown topic");
    }
    if let Err(e) = http.sns.verify(&message).await {
        warn!(topic = %message.topic_arn, error = %e, "refused an SNS delivery");
        let status = match e {
            sns::SnsError::CertUnavailable(_) => StatusCode::BAD_GATEWAY,
            sns::SnsError::Malformed(_) | sns::SnsError::UnsupportedVersion(_) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::FORBIDDEN,
        };
        return refuse(status, &e.to_string());
    }
    match message.kind.as_str() {
        "SubscriptionConfirmation" => match http.sns.confirm(&message).await {
            Ok(()) => {
                info!(topic = %message.topic_arn, "SNS subscription confirmed");
                axum::Json(json!({ "outcome": "subscription_confirmed" })).into_response()
            }
            Err(e) => {
                warn!(topic = %message.topic_arn, error = %e, "could not confirm the SNS subscription");
                refuse(
                    StatusCode::BAD_GATEWAY,
                    "could not confirm the subscription",
                )
            }
        },
        "UnsubscribeConfirmation" => {
            info!(topic = %message.topic_arn, "SNS says the subscription was removed");
            axum::Json(json!({ "outcome": "unsubscribe_noted" })).into_response()
        }
        "Notification" => match sns::cloudwatch_alarm(&message) {
            Ok(Some(alarm)) => handle(&http, alarm, "/alarms/sns").await,
            Ok(None) => {
                axum::Json(json!({ "outcome": "ignored", "detail": "not a CloudWatch alarm" }))
                    .into_response()
            }
            Err(e) => refuse(StatusCode::BAD_REQUEST, &e.0),
        },
        other => refuse(
            StatusCode::BAD_REQUEST,
            &format!("unknown SNS message type `{other}`"),
        ),
    }
}
