//! # redis-autoscaler
//!
//! A Slack app that keeps AWS ElastiCache Redis groups from running out of memory: when a
//! CloudWatch "Redis memory" alarm fires it proposes (and, once approved, runs) the
//! snapshot-then-upsize workflow, threading every step under one Slack message and paging
//! PagerDuty when something fails, times out or waits for an approval nobody gives.
//!
//! Decide, then act: pure code decides, a thin runner acts, adapters do the I/O. Dependencies
//! point one way — transports → use cases → workflow ← adapters — and a test
//! (`tests/it/layout.rs`) holds them to it.
//!
//! # Layout
//!
//! The domain:
//! - [`domain`]: newtypes parsed at the edge (run ids, group ids, node types, Slack ids, time),
//!   the node types AWS offers, and the alarm type.
//! - [`workflow`]: the bottom layer. A run and its vocabulary (events, effects, policy), the
//!   pure machine (split by phase), the ports (traits for everything a run needs from the
//!   world), and the runner that dispatches effects to them. Imports nothing but [`domain`].
//!
//! The use cases and their wiring:
//! - [`app`]: what a person or an alarm can ask — handle an alarm, start a run, act on a click,
//!   status, dry run, runs, cancel — and the durable jobs they leave behind.
//! - [`config`]: the only place that reads files and the environment; parses into domain and
//!   workflow types.
//! - [`startup`]: `Application::build` / `run_until_stopped`, used by `serve`, `demo` and the
//!   tests.
//!
//! Transports (verify, parse, call one use case, render its answer):
//! - [`http`]: the axum routes of `serve`.
//! - [`alarm`]: EventBridge and SNS payloads (SNS signatures verified) → one alarm type, and
//!   the SQS intake that long-polls a queue for them.
//!
//! Adapters (implement the workflow's ports):
//! - [`slack`]: Slack's language — the Web API client, the `Chat` port (run messages), the
//!   approver directory, signature checks, command and click parsing, Block Kit rendering.
//! - [`elasticache`]: the SDK implementation of the `ElastiCache` port, the `Aws` effects over
//!   it, the fleet (a client per account and region, each group by its AWS id there), and a
//!   simulator that speaks the ElastiCache Query protocol (and STS, CloudWatch, SQS, the Price
//!   List).
//! - [`cloudwatch`]: the `MemorySeries` port (a group's memory, node by node) and its
//!   `GetMetricData` implementation.
//! - [`pricing`]: the `Prices` port over the AWS Price List API (`GetProducts`), cached for a
//!   day per region and node type.
//! - [`pagerduty`]: the Events API v2 client and the `Pager` port.
//! - [`hooks`]: the pause/resume webhooks and the `Hooks` port.
//! - [`store`]: the `Store` port over one SQLite file (one replica), or PostgreSQL (several
//!   replicas sharing the work through claims with a lease).
//! - [`telemetry`]: Prometheus metrics (the `Metrics` port) and the HTTP request span.
//! - [`http_client`]: the one outgoing HTTP client setup (TLS provider, timeouts, no redirects).
//! - [`chart`]: the memory graph as a PNG, drawn in memory with an embedded font.
//! - [`memory`]: what the process keeps resident (glibc's allocator with two arenas, free
//!   memory given back after a burst, start-up's code pages given back once started).
//!
//! Commands and tools:
//! - [`cli`]: the command line (`serve`, `demo`, `elasticache-sim`, `check-config`).
//! - [`demo`]: the whole flow on this machine, with no accounts and no network.
//! - [`standin`]: local Slack, PagerDuty and hook servers for `demo` and the tests.
//! - [`fuzzing`] (hidden): one function per untrusted-input parser, shared by the cargo-fuzz
//!   targets in `tests/fuzz/` and the corpus replay in `tests/it/fuzz_corpus.rs`.

pub mod alarm;
pub mod app;
pub mod chart;
pub mod cli;
pub mod cloudwatch;
pub mod config;
pub mod demo;
pub mod domain;
pub mod elasticache;
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod http;
pub mod http_client;
pub mod memory;
pub mod pagerduty;
pub mod pricing;
pub mod slack;
pub mod standin;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod workflow;
