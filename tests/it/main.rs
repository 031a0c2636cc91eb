//! All integration tests are one binary (one link, one `cargo test` target). Each module is a
//! spec for one part of the product, run against the real app on loopback with local fakes.

mod alarms;
mod clients;
mod cloudwatch;
mod demo;
mod deploy;
mod elasticache;
mod fleet;
mod forecast;
mod fuzz_corpus;
mod graphs;
mod hostile_clients;
mod layout;
mod ops;
mod preflight;
mod pricing;
mod scale_down;
mod slack;
mod slack_files;
mod socket_mode;
mod sqs;
mod support;
mod workflow;
