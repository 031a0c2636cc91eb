//! CloudWatch: the memory a group's nodes use, read with `aws-sdk-cloudwatch`'s
//! `GetMetricData` ([`sdk`]), for the workflow's [`MemorySeries`] port. The simulator's side
//! of the protocol lives with the other AWS services in `elasticache::sim`.

pub mod sdk;
pub mod verify;

pub use crate::workflow::ports::memory::{
    MAX_POINTS_PER_NODE, MEMORY_METRIC, MIN_PERIOD, MemoryError, MemoryQuery, MemorySeries,
    NAMESPACE, NODE_DIMENSION, NodeSeries,
};
pub use sdk::SdkCloudWatch;
