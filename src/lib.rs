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
//! - [`http_client`]: the one outgoing HTTP client setup (TLS provider, timeouts, no redirects).
//! - [`slack`]: Slack's language; [`slack::api`] is the Web API client.
//! - [`pagerduty`]: the PagerDuty Events API v2 client.
//! - [`standin`]: local Slack and PagerDuty servers for `demo` and the tests.

pub mod alarm;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod elasticache;
pub mod hooks;
pub mod http;
pub mod http_client;
pub mod pagerduty;
pub mod slack;
pub mod standin;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod workflow;
