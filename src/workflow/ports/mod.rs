//! Ports: what a run (and the use cases above it) needs from the world, as small traits.
//!
//! The workflow owns these traits and the types they speak; adapters implement them
//! (`elasticache/`, `slack/`, `pagerduty.rs`, `hooks.rs`, `store/`, `telemetry.rs`) and tests
//! fake them. Nothing here does I/O.

use std::future::Future;
use std::pin::Pin;

pub mod elasticache;

pub use elasticache::{
    AwsError, CacheClusterInfo, ClusterMode, ElastiCache, GroupInfo, GroupStatus, SnapshotInfo,
    SnapshotStatus,
};

/// A boxed, sendable future: what the ports' methods return so they can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
