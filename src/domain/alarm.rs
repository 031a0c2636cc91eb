//! A CloudWatch alarm state change, however it arrived (EventBridge, SNS): the one type the
//! alarm parsers produce and the use cases consume.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// A CloudWatch alarm state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Identifies this delivery (EventBridge event id, SNS message id): retries repeat it.
    pub delivery_id: String,
    pub name: String,
    pub description: String,
    pub state: AlarmState,
    pub reason: String,
    /// The latest datapoint, when the alarm carried one.
    pub value: Option<f64>,
    /// The metric's dimensions (`ReplicationGroupId`, `CacheClusterId`, …) in order.
    pub dimensions: Vec<(String, String)>,
    /// The region the alarm is in (`us-east-1`), when the delivery says.
    pub region: Option<String>,
    /// The AWS account the alarm is in, when the delivery says.
    #[serde(default)]
    pub account: Option<String>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmState {
    Alarm,
    Ok,
    InsufficientData,
}

impl AlarmState {
    pub fn parse(s: &str) -> Option<AlarmState> {
        match s {
            "ALARM" => Some(AlarmState::Alarm),
            "OK" => Some(AlarmState::Ok),
            "INSUFFICIENT_DATA" => Some(AlarmState::InsufficientData),
            _ => None,
        }
    }
}

impl Alarm {
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl AlarmState {
    /// CloudWatch's own spelling, for the alarm log.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Alarm => "ALARM",
            AlarmState::Ok => "OK",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}
