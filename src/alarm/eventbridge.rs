//! EventBridge "CloudWatch Alarm State Change" events, as an API destination delivers them.

use serde::Deserialize;
use serde_json::Value;

use super::{Alarm, AlarmError, AlarmState, parse_time, value_from_reason};
use crate::domain::Timestamp;

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    time: Option<String>,
    detail: Detail,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Detail {
    alarm_name: String,
    #[serde(default)]
    configuration: Configuration,
    state: StateInfo,
}

#[derive(Deserialize, Default)]
struct Configuration {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    metrics: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateInfo {
    value: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    reason_data: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

/// Parse one event. Anything but a CloudWatch alarm state change is an error saying why.
pub fn parse(body: &[u8]) -> Result<Alarm, AlarmError> {
    let raw: Value = serde_json::from_slice(body)
        .map_err(|e| AlarmError(format!("the body is not JSON: {e}")))?;
    let kind = raw["detail-type"].as_str().unwrap_or_default();
    let source = raw["source"].as_str().unwrap_or_default();
    if kind != "CloudWatch Alarm State Change" || source != "aws.cloudwatch" {
        return Err(AlarmError(format!(
            "expected a `CloudWatch Alarm State Change` event from `aws.cloudwatch`, got `{kind}` from `{source}`"
        )));
    }
    let event: Event = serde_json::from_value(raw)
        .map_err(|e| AlarmError(format!("not a CloudWatch alarm event: {e}")))?;
    debug_assert_eq!(event.detail_type, "CloudWatch Alarm State Change");
    debug_assert_eq!(event.source, "aws.cloudwatch");
    let state = AlarmState::parse(&event.detail.state.value).ok_or_else(|| {
        AlarmError(format!(
            "unknown alarm state `{}`",
            event.detail.state.value
        ))
    })?;
    // Dimensions are a map in EventBridge events; metric-math alarms have several metrics.
    let mut dimensions = Vec::new();
    for metric in &event.detail.configuration.metrics {
        if let Some(map) = metric["metricStat"]["metric"]["dimensions"].as_object() {
            for (k, v) in map {
                if let Some(v) = v.as_str() {
                    dimensions.push((k.clone(), v.to_string()));
                }
            }
        }
    }
    let at = event
        .detail
        .state
        .timestamp
        .as_deref()
        .or(event.time.as_deref())
        .and_then(parse_time)
        .unwrap_or_else(Timestamp::now);
    Ok(Alarm {
        delivery_id: format!("eventbridge:{}", event.id),
        value: value_from_reason(
            &event.detail.state.reason,
            event.detail.state.reason_data.as_deref(),
        ),
        name: event.detail.alarm_name,
        description: event.detail.configuration.description.unwrap_or_default(),
        state,
        reason: event.detail.state.reason,
        dimensions,
        region: event.region,
        account: event.account,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../tests/fixtures/eventbridge_cloudwatch_alarm.json");

    #[test]
    fn the_real_eventbridge_sample_parses() {
        let a = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(a.name, "ServerCpuTooHigh");
        assert_eq!(a.state, AlarmState::Alarm);
        assert_eq!(
            a.description,
            "Goes into alarm when server CPU utilization is too high!"
        );
        assert_eq!(
            a.dimensions,
            vec![("InstanceId".to_string(), "i-12345678901234567".to_string())]
        );
        assert_eq!(a.value, Some(99.50160229693434));
        assert_eq!(
            a.delivery_id,
            "eventbridge:c4c1c1c9-6542-e61b-6ef0-8c4d36933a92"
        );
        assert_eq!(a.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.account.as_deref(), Some("123456789012"));
        assert_eq!(a.at.to_rfc3339(), "2019-10-02T17:04:40.989Z");
    }

    #[test]
    fn other_events_and_garbage_are_refused_with_a_reason() {
        let other = SAMPLE.replace(
            "CloudWatch Alarm State Change",
            "EC2 Instance State-change Notification",
        );
        assert!(
            parse(other.as_bytes())
                .unwrap_err()
                .0
                .contains("expected a `CloudWatch Alarm State Change`")
        );
        assert!(parse(b"{not json").unwrap_err().0.contains("not JSON"));
        let no_state = SAMPLE.replace("\"value\": \"ALARM\"", "\"value\": \"MAYBE\"");
        assert!(
            parse(no_state.as_bytes())
                .unwrap_err()
                .0
                .contains("unknown alarm state")
        );
        let mut v: Value = serde_json::from_str(SAMPLE).unwrap();
        v["detail"].as_object_mut().unwrap().remove("alarmName");
        assert!(parse(v.to_string().as_bytes()).is_err());
    }
}
