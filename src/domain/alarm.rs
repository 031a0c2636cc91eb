//! A CloudWatch alarm state change, however it arrived (EventBridge, SNS, an SQS queue): the
//! one type the alarm parsers produce and the use cases consume; and the URL of the SQS queue
//! alarms may arrive through.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ParseError, Timestamp};

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

/// An SQS queue's URL, `https://sqs.<region>.amazonaws.com/<account>/<name>` (`.amazonaws.com.cn`
/// in China), as the console and CloudFormation's `QueueUrl` give it. The region is the one the
/// queue's client must use.
#[derive(Clone, PartialEq, Eq)]
pub struct SqsQueueUrl {
    url: String,
    region: String,
    account: String,
    name: String,
}

impl SqsQueueUrl {
    pub fn parse(s: &str) -> Result<SqsQueueUrl, ParseError> {
        let example = "https://sqs.<region>.amazonaws.com/<account>/<queue-name>";
        let bad = |why: &str| {
            ParseError::new(format!("`{s}` is not an SQS queue URL ({example}): {why}"))
        };
        let rest = s
            .strip_prefix("https://")
            .ok_or_else(|| bad("it must start with https://"))?;
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no /<account>/<queue-name> after the host"))?;
        let region = host
            .strip_prefix("sqs.")
            .and_then(|h| {
                h.strip_suffix(".amazonaws.com")
                    .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
            })
            .filter(|r| {
                r.contains('-')
                    && r.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
            .ok_or_else(|| bad("the host must be sqs.<region>.amazonaws.com"))?;
        let (account, name) = path
            .split_once('/')
            .ok_or_else(|| bad("the path must be /<account>/<queue-name>"))?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the account must be 12 digits"));
        }
        let stem = name.strip_suffix(".fifo").unwrap_or(name);
        let ok_name = !stem.is_empty()
            && name.len() <= 80
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok_name {
            return Err(bad(
                "a queue name is 1 to 80 letters, digits, `-` and `_` (and `.fifo`)",
            ));
        }
        Ok(SqsQueueUrl {
            url: s.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            name: name.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The queue's region (`eu-west-1`).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The account that owns the queue.
    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for SqsQueueUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for SqsQueueUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqsQueueUrl({:?})", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sqs_queue_url_names_its_region_account_and_queue() {
        let q = SqsQueueUrl::parse("https://sqs.eu-west-1.amazonaws.com/123456789012/redis-alarms")
            .unwrap();
        assert_eq!(
            (q.region(), q.account(), q.name()),
            ("eu-west-1", "123456789012", "redis-alarms")
        );
        let cn = SqsQueueUrl::parse("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/a.fifo")
            .unwrap();
        assert_eq!((cn.region(), cn.name()), ("cn-north-1", "a.fifo"));
    }

    #[test]
    fn a_typo_in_an_sqs_queue_url_is_refused_saying_what_is_wrong() {
        for (url, why) in [
            (
                "http://sqs.eu-west-1.amazonaws.com/123456789012/q",
                "https://",
            ),
            ("https://sqs.eu-west-1.amazonaws.com", "no /<account>"),
            ("https://sqs.amazonaws.com/123456789012/q", "the host"),
            (
                "https://sns.eu-west-1.amazonaws.com/123456789012/q",
                "the host",
            ),
            (
                "https://sqs.eu-west-1.amazonaws.co/123456789012/q",
                "the host",
            ),
            (
                "https://sqs.eu-west-1.amazonaws.com/12345678901/q",
                "12 digits",
            ),
            (
                "https://sqs.eu-west-1.amazonaws.com/123456789012",
                "the path",
            ),
            (
                "https://sqs.eu-west-1.amazonaws.com/123456789012/",
                "queue name",
            ),
            (
                "https://sqs.eu-west-1.amazonaws.com/123456789012/q/x",
                "queue name",
            ),
            (
                "https://sqs.eu-west-1.amazonaws.com/123456789012/a b",
                "queue name",
            ),
            ("arn:aws:sqs:eu-west-1:123456789012:q", "https://"),
        ] {
            let err = SqsQueueUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
            assert!(err.contains("sqs.<region>.amazonaws.com"), "{err}");
        }
    }
}
