//! CloudWatch alarms, however they arrive: EventBridge events ([`eventbridge`]) and SNS
//! notifications ([`sns`]) are parsed (and, for SNS over HTTPS, verified) into one [`Alarm`];
//! [`sqs`] reads both from an SQS queue.
//!
//! Parsing and verification are pure; what an alarm does is decided in [`crate::app`] (the SQS
//! intake's loop only receives, hands each alarm to it, and deletes what it committed).

pub mod eventbridge;
pub mod sns;
pub mod sqs;

use crate::domain::Timestamp;
pub use crate::domain::alarm::{Alarm, AlarmState};

/// Why an alarm payload was not accepted. The message is for the sender (a 400 body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AlarmError(pub String);

/// The most recent datapoint from a state reason such as
/// `Threshold Crossed: 1 out of the last 1 datapoints [93.2 (26/11/26 03:12:00)] was greater…`,
/// or from `reasonData`'s `recentDatapoints`.
pub fn value_from_reason(reason: &str, reason_data: Option<&str>) -> Option<f64> {
    if let Some(data) = reason_data
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
        && let Some(points) = v["recentDatapoints"].as_array()
        && let Some(last) = points.last().and_then(|p| p.as_f64())
    {
        return Some(last);
    }
    let start = reason.find('[')? + 1;
    let rest = &reason[start..];
    let end = rest.find([' ', ']', ','])?;
    rest[..end].parse().ok()
}

/// Parse CloudWatch's timestamps (`2019-10-02T17:04:40.989+0000`, `…Z`) into a [`Timestamp`];
/// `None` if it can't.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let normalized = match s.strip_suffix("+0000") {
        Some(stripped) => format!("{stripped}Z"),
        None => s.to_string(),
    };
    DateTime::from_str(&normalized, Format::DateTime)
        .ok()
        .map(|d| Timestamp::from_millis(d.to_millis().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_comes_from_reason_data_or_the_reason_text() {
        let reason = "Threshold Crossed: 1 out of the last 1 datapoints [99.50160229693434 (02/10/19 16:59:00)] was greater than the threshold (50.0)";
        let data = r#"{"version":"1.0","recentDatapoints":[99.5016],"threshold":50.0}"#;
        assert_eq!(value_from_reason(reason, Some(data)), Some(99.5016));
        assert_eq!(value_from_reason(reason, None), Some(99.50160229693434));
        assert_eq!(value_from_reason("no numbers here", None), None);
        assert_eq!(value_from_reason("[abc]", Some("not json")), None);
    }

    #[test]
    fn cloudwatch_times_parse() {
        assert_eq!(
            parse_time("2019-10-02T17:04:40.989+0000")
                .unwrap()
                .to_rfc3339(),
            "2019-10-02T17:04:40.989Z"
        );
        assert_eq!(
            parse_time("2019-10-02T17:04:40Z").unwrap().to_rfc3339(),
            "2019-10-02T17:04:40.000Z"
        );
        assert!(parse_time("yesterday").is_none());
    }
}
