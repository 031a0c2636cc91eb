//! # redis-autoscaler
//!
//! A Slack app that keeps AWS ElastiCache Redis groups from running out of memory: when a
//! CloudWatch "Redis memory" alarm fires it proposes (and, once approved, runs) the
//! snapshot-then-upsize workflow, threading every step under one Slack message and paging
//! PagerDuty when something fails, times out or waits for an approval nobody gives.
//!
//! # Layout
//!
//! - [`domain`]: newtypes parsed at the edge (run ids, group ids, node types, Slack ids, time).
//! - [`elasticache`]: the AWS verbs the workflow needs, the SDK implementation and a simulator
//!   that speaks the ElastiCache Query protocol.
//! - [`sim`](elasticache::sim) is also the `elasticache-sim` command.

pub mod config;
pub mod domain;
pub mod elasticache;
pub mod slack;
pub mod standin;
pub mod workflow;
pub mod store;
pub mod hooks;
