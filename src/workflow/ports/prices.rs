//! The on-demand price of a node type: the [`Prices`] port (one question: "what does one node
//! of this type cost an hour, on demand, running Redis in this region?") and why an answer may
//! be missing. The adapter over the AWS Price List API's `GetProducts`, with its day-long
//! cache, is `pricing`.
//!
//! It reports a price and decides nothing: prices are shown with a plan (see
//! [`cost`](crate::workflow::cost)), never used to choose one.

use crate::domain::NodeType;

use super::BoxFuture;

/// The engine whose prices are asked for: the groups the bot manages run Redis (the Price
/// List's `cacheEngine` attribute spells it so).
pub const ENGINE: &str = "Redis";

/// On-demand prices of ElastiCache node types.
pub trait Prices: Send + Sync {
    /// USD per node-hour, on demand, of `node_type` running [`ENGINE`] in `region` (a region
    /// code such as `eu-west-1`). `Ok(None)`: AWS lists no on-demand price for it there (a
    /// type the region doesn't offer); `Err`: the price could not be read.
    fn on_demand_hourly<'a>(
        &'a self,
        region: &'a str,
        node_type: &'a NodeType,
    ) -> BoxFuture<'a, Result<Option<f64>, PriceError>>;
}

/// Why a price could not be read, sorted by what the operator does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The bot's role may not call `pricing:GetProducts`: a person must change the policy.
    #[error("no permission to read the AWS Price List ({code}): {message}")]
    Denied { code: String, message: String },
    /// Throttled, a 5xx, a timeout or a network failure: worth another look later.
    #[error("the AWS Price List did not answer this time ({code}): {message}")]
    Unavailable { code: String, message: String },
    /// A request the Price List refused as malformed, or an answer the bot can't read: a
    /// bug (here or there) another try will not fix.
    #[error("the AWS Price List could not be read ({code}): {message}")]
    Unreadable { code: String, message: String },
}

impl PriceError {
    /// Sort an AWS error code (and the HTTP status, when there was one).
    pub fn classify(code: &str, message: impl Into<String>, http_status: Option<u16>) -> Self {
        let (code, message) = (code.to_string(), message.into());
        match code.as_str() {
            "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
                PriceError::Denied { code, message }
            }
            "Throttling"
            | "ThrottlingException"
            | "TooManyRequestsException"
            | "ServiceUnavailable"
            | "InternalErrorException"
            | "InternalFailure"
            | "RequestTimeout" => PriceError::Unavailable { code, message },
            _ => match http_status {
                Some(403) => PriceError::Denied { code, message },
                Some(429) => PriceError::Unavailable { code, message },
                Some(s) if s >= 500 => PriceError::Unavailable { code, message },
                _ => PriceError::Unreadable { code, message },
            },
        }
    }
}
