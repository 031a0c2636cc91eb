//! Domain newtypes, parsed once at the edge (config, HTTP, AWS answers) and trusted afterwards.
//!
//! Every type here has a private field and a `parse` constructor, so a value that exists is a
//! value that is valid. This module does no I/O and knows nothing about Slack or AWS clients.
//!
//! - [`node_types`]: the node families and sizes AWS offers, with each node's memory.
//! - [`alarm`]: a CloudWatch alarm state change, however it arrived.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod alarm;
pub mod node_types;

/// Why a string was not accepted as a domain value. The message is written for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl ParseError {
    pub fn new(msg: impl Into<String>) -> Self {
        ParseError(msg.into())
    }
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                $name::parse(s)
            }
        }
    };
}

string_newtype!(
    /// A run's id, short enough to type in `/redis cancel r-k3m9x2qa`.
    RunId
);

const RUN_ID_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

impl RunId {
    /// A fresh random id (`r-` and eight letters or digits without look-alikes).
    pub fn generate() -> RunId {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        let tail: String = bytes
            .iter()
            .map(|b| RUN_ID_ALPHABET[*b as usize % RUN_ID_ALPHABET.len()] as char)
            .collect();
        RunId(format!("r-{tail}"))
    }

    pub fn parse(s: &str) -> Result<RunId, ParseError> {
        let s = s.trim().to_ascii_lowercase();
        let ok = s.len() == 10
            && s.starts_with("r-")
            && s[2..].bytes().all(|b| RUN_ID_ALPHABET.contains(&b));
        if ok {
            Ok(RunId(s))
        } else {
            Err(ParseError::new(format!(
                "`{s}` is not a run id (they look like `r-k3m9x2qa`; `/redis runs` lists them)"
            )))
        }
    }
}

fn parse_aws_identifier(s: &str, what: &str, max: usize) -> Result<String, ParseError> {
    let s = s.trim().to_ascii_lowercase();
    let valid = !s.is_empty()
        && s.len() <= max
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.contains("--")
        && !s.ends_with('-');
    if valid {
        Ok(s)
    } else {
        Err(ParseError::new(format!(
            "`{s}` is not a valid {what}: 1–{max} letters, digits or hyphens, starting with a letter, \
             without two hyphens in a row or a hyphen at the end"
        )))
    }
}

string_newtype!(
    /// An ElastiCache replication group id (AWS stores them in lower case).
    ReplicationGroupId
);

impl ReplicationGroupId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        parse_aws_identifier(s, "replication group id", 40).map(ReplicationGroupId)
    }
}

string_newtype!(
    /// An ElastiCache cache cluster id: one node of a replication group, such as `prod-jobs-001`.
    CacheClusterId
);

impl CacheClusterId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        parse_aws_identifier(s, "cache cluster id", 50).map(CacheClusterId)
    }
}

string_newtype!(
    /// A manual snapshot's name.
    SnapshotName
);

impl SnapshotName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        parse_aws_identifier(s, "snapshot name", 255).map(SnapshotName)
    }

    /// The one snapshot name a run ever uses: a retry or a restart finds it instead of making
    /// a second snapshot.
    pub fn for_run(run: &RunId) -> SnapshotName {
        SnapshotName(format!("redis-autoscaler-{}", run.as_str()))
    }
}

string_newtype!(
    /// A Slack user id (`U…` or, on Enterprise Grid, `W…`).
    SlackUserId
);

fn parse_slack_id(s: &str, prefixes: &[char], what: &str) -> Result<String, ParseError> {
    let s = s.trim();
    let valid = s.len() >= 3
        && s.len() <= 32
        && s.starts_with(prefixes)
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if valid {
        Ok(s.to_string())
    } else {
        let starts: Vec<String> = prefixes.iter().map(|p| format!("`{p}`")).collect();
        Err(ParseError::new(format!(
            "`{s}` is not a Slack {what} id (upper-case letters and digits starting with {})",
            starts.join(" or ")
        )))
    }
}

impl SlackUserId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        parse_slack_id(s, &['U', 'W'], "user").map(SlackUserId)
    }
}

string_newtype!(
    /// A Slack user group id (`S…`), as used for approvers.
    SlackUserGroupId
);

impl SlackUserGroupId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        parse_slack_id(s, &['S'], "user group").map(SlackUserGroupId)
    }
}

string_newtype!(
    /// A Slack conversation id: public (`C…`) or private (`G…`) channel, or a DM (`D…`).
    ChannelId
);

impl ChannelId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        parse_slack_id(s, &['C', 'G', 'D'], "channel").map(ChannelId)
    }
}

string_newtype!(
    /// A Slack message timestamp, which is also the message's id within its channel.
    MessageTs
);

impl MessageTs {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let valid = match s.split_once('.') {
            Some((a, b)) => {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            }
            None => false,
        };
        if valid {
            Ok(MessageTs(s.to_string()))
        } else {
            Err(ParseError::new(format!(
                "`{s}` is not a Slack message timestamp"
            )))
        }
    }
}

/// An approver entry from config: a person or a user group whose members may approve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Approver {
    User(SlackUserId),
    Group(SlackUserGroupId),
}

impl Approver {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.trim().starts_with('S') {
            SlackUserGroupId::parse(s).map(Approver::Group)
        } else {
            SlackUserId::parse(s).map(Approver::User).map_err(|_| {
                ParseError::new(format!(
                    "`{s}` is neither a Slack user id (`U…`/`W…`) nor a user group id (`S…`)"
                ))
            })
        }
    }
}

/// How big a node is within its family. Ordered from smallest to largest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeSize {
    Nano,
    Micro,
    Small,
    Medium,
    Large,
    /// `xlarge` is `XLarge(1)`, `2xlarge` is `XLarge(2)`, …
    XLarge(u16),
}

impl NodeSize {
    pub fn parse(s: &str) -> Option<NodeSize> {
        Some(match s {
            "nano" => NodeSize::Nano,
            "micro" => NodeSize::Micro,
            "small" => NodeSize::Small,
            "medium" => NodeSize::Medium,
            "large" => NodeSize::Large,
            "xlarge" => NodeSize::XLarge(1),
            _ => {
                let n = s.strip_suffix("xlarge")?;
                // Digits only: `u16::from_str` would also take `+2`.
                if n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let n: u16 = n.parse().ok()?;
                if n < 2 {
                    return None;
                }
                NodeSize::XLarge(n)
            }
        })
    }
}

impl fmt::Display for NodeSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeSize::Nano => f.write_str("nano"),
            NodeSize::Micro => f.write_str("micro"),
            NodeSize::Small => f.write_str("small"),
            NodeSize::Medium => f.write_str("medium"),
            NodeSize::Large => f.write_str("large"),
            NodeSize::XLarge(1) => f.write_str("xlarge"),
            NodeSize::XLarge(n) => write!(f, "{n}xlarge"),
        }
    }
}

/// An ElastiCache node type such as `cache.r6g.large`: a family (`r6g`) and a size (`large`).
///
/// Parsing checks the shape only, so a family AWS adds tomorrow still parses; what AWS
/// actually offers comes from [`crate::domain::node_types`] and from AWS itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeType {
    family: String,
    size: NodeSize,
}

impl NodeType {
    pub fn parse(s: &str) -> Result<NodeType, ParseError> {
        let t = s.trim().to_ascii_lowercase();
        let bad = || {
            ParseError::new(format!(
                "`{}` is not a node type (they look like `cache.r6g.xlarge`)",
                s.trim()
            ))
        };
        let rest = t.strip_prefix("cache.").ok_or_else(bad)?;
        let (family, size) = rest.split_once('.').ok_or_else(bad)?;
        let family_ok = !family.is_empty()
            && family.len() <= 8
            && family.as_bytes()[0].is_ascii_lowercase()
            && family
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !family_ok {
            return Err(bad());
        }
        let size = NodeSize::parse(size).ok_or_else(bad)?;
        Ok(NodeType {
            family: family.to_string(),
            size,
        })
    }

    pub fn family(&self) -> &str {
        &self.family
    }

    pub fn size(&self) -> NodeSize {
        self.size
    }

    pub fn same_family(&self, other: &NodeType) -> bool {
        self.family == other.family
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cache.{}.{}", self.family, self.size)
    }
}

impl fmt::Debug for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeType({self})")
    }
}

impl Serialize for NodeType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeType::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for NodeType {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        NodeType::parse(s)
    }
}

/// A secret from the environment (a token, signing secret, routing key or API key).
///
/// `Debug` and `Display` print `[redacted]`, so a secret cannot reach a log line or an error
/// message by accident; the value is read only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A point in time, in milliseconds since the Unix epoch. Logic takes it as an input; only the
/// runner's clock reads the real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-26T03:12:09.120Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.as_secs();
        let ms = self.0.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }

    /// An RFC 3339 time in UTC (`2026-11-26T03:12:09Z`, fractions of a second optional), as
    /// AWS's Query protocol writes timestamps.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let s = s.strip_suffix('Z')?;
        let (date, time) = s.split_once('T')?;
        let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
        let (y, m, day) = (d.next()??, d.next()??, d.next()??);
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
        let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
        if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || sec > 60 {
            return None;
        }
        let ms = if frac.is_empty() {
            0
        } else {
            if !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            format!("{frac:0<3}")[..3].parse::<i64>().ok()?
        };
        let days = days_from_civil(y, m as u32, day as u32);
        Some(Timestamp::from_millis(
            ((days * 86_400 + h * 3600 + min * 60 + sec) * 1000) + ms,
        ))
    }

    /// `HH:MM:SS` in UTC, for compact transcripts.
    pub fn clock_utc(self) -> String {
        let rem = self.as_secs().rem_euclid(86_400);
        format!("{:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60)
    }
}

/// Howard Hinnant's civil-to-days algorithm (year, month, day → days since 1970-01-01).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil algorithm (days since 1970-01-01 → year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A duration as people write it in config and read it in Slack: `200ms`, `30s`, `15m`, `2h`,
/// `1d`, or combinations such as `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let t = s.trim();
    let bad = || {
        ParseError::new(format!(
            "`{t}` is not a duration (write it like `200ms`, `30s`, `15m`, `2h` or `1h30m`)"
        ))
    };
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add(n.checked_mul(unit_ms).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    u64::try_from(total)
        .map(Duration::from_millis)
        .map_err(|_| bad())
}

/// A random number in [0, 1), from the OS (jitter for retries).
pub fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The inverse of [`parse_duration`] for display: `4m12s`, `850ms`, `2h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = (ms / 1000) as u64;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Serde helper: durations stored as milliseconds.
pub mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn rfc3339_reads_back_what_it_writes_and_refuses_what_it_is_not() {
        for ms in [0, 1_531_420_618_250, 1_764_121_929_000, 951_782_400_000] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2018-07-12T18:36:58Z"),
            Some(Timestamp::from_millis(1_531_420_618_000))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2018-07-12T18:36:58.25Z"),
            Some(Timestamp::from_millis(1_531_420_618_250))
        );
        for bad in [
            "",
            "2018-07-12",
            "2018-07-12T18:36:58",
            "2018-13-12T18:36:58Z",
            "x-07-12T18:36:58Z",
            "2018-07-12T18:36:58.2xZ",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }

    use super::*;

    #[test]
    fn node_types_parse_and_print_back() {
        for s in [
            "cache.r6g.large",
            "cache.r6g.xlarge",
            "cache.m5.24xlarge",
            "cache.t4g.micro",
            "cache.r6gd.xlarge",
        ] {
            assert_eq!(NodeType::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            NodeType::parse(" Cache.R6G.Large ").unwrap().to_string(),
            "cache.r6g.large"
        );
    }

    #[test]
    fn malformed_node_types_are_rejected() {
        for s in [
            "",
            "r6g.large",
            "cache.r6g",
            "cache..large",
            "cache.r6g.huge",
            "cache.r6g.1xlarge",
            "cache.r6g.02xlarge",
            "cache.r6g.+2xlarge",
            "cache.r6g.-2xlarge",
            "cache.r6g. 2xlarge",
            "cache.6rg.large",
            "cache.r6g.large.x",
        ] {
            assert!(NodeType::parse(s).is_err(), "{s} should not parse");
        }
    }

    #[test]
    fn node_sizes_order_from_small_to_large() {
        let sizes = [
            "micro", "small", "medium", "large", "xlarge", "2xlarge", "12xlarge",
        ];
        let parsed: Vec<NodeSize> = sizes.iter().map(|s| NodeSize::parse(s).unwrap()).collect();
        let mut sorted = parsed.clone();
        sorted.sort();
        assert_eq!(parsed, sorted);
    }

    #[test]
    fn replication_group_ids_follow_aws_rules() {
        assert_eq!(
            ReplicationGroupId::parse("Prod-Jobs").unwrap().as_str(),
            "prod-jobs"
        );
        for bad in ["", "1abc", "a--b", "abc-", "a_b", &"a".repeat(41)] {
            assert!(ReplicationGroupId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_ids_round_trip_and_reject_garbage() {
        let id = RunId::generate();
        assert_eq!(RunId::parse(id.as_str()).unwrap(), id);
        assert_eq!(RunId::parse(&id.as_str().to_uppercase()).unwrap(), id);
        assert!(RunId::parse("r-12").is_err());
        assert!(RunId::parse("x-abcdefgh").is_err());
        assert!(
            RunId::parse("r-abcdefg1").is_err(),
            "1 is not in the alphabet"
        );
    }

    #[test]
    fn slack_ids_are_checked_by_kind() {
        assert!(SlackUserId::parse("U0123ABCD").is_ok());
        assert!(SlackUserId::parse("W0123ABCD").is_ok());
        assert!(SlackUserId::parse("C0123ABCD").is_err());
        assert!(ChannelId::parse("C0123ABCD").is_ok());
        assert!(ChannelId::parse("c0123abcd").is_err());
        assert_eq!(
            Approver::parse("S0456EFGH").unwrap(),
            Approver::Group(SlackUserGroupId::parse("S0456EFGH").unwrap())
        );
        assert!(Approver::parse("X123").is_err());
    }

    #[test]
    fn durations_parse_like_people_write_them() {
        let cases = [
            ("200ms", 200),
            ("30s", 30_000),
            ("15m", 900_000),
            ("2h", 7_200_000),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
        ];
        for (s, ms) in cases {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_millis(ms), "{s}");
        }
        for bad in ["", "30", "s", "1.5h", "10 minutes", "-1s", "5y"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_secs(252)), "4m12s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(3661)), "1h1m1s");
    }

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        assert_eq!(
            Timestamp::from_millis(0).to_rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_531_420_618_250).to_rfc3339(),
            "2018-07-12T18:36:58.250Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_531_420_618_250).clock_utc(),
            "18:36:58"
        );
    }

    #[test]
    fn secrets_never_print_their_value() {
        let s = Secret::new("xoxb-very-secret");
        assert!(!format!("{s:?}").contains("very-secret"));
        assert!(!format!("{s}").contains("very-secret"));
        assert_eq!(s.expose(), "xoxb-very-secret");
    }

    #[test]
    fn snapshot_name_is_deterministic_per_run() {
        let run = RunId::parse("r-abcdefgh").unwrap();
        assert_eq!(
            SnapshotName::for_run(&run).as_str(),
            "redis-autoscaler-r-abcdefgh"
        );
        assert!(SnapshotName::parse(SnapshotName::for_run(&run).as_str()).is_ok());
    }
}
