//! Load, chaos and benchmark scripts: the bot as a real `serve` process (the binary this
//! package builds) against the ElastiCache simulator and the Slack and PagerDuty stand-ins,
//! which run in this test process on loopback. Nothing leaves the machine.
//!
//! Each scenario has a full size, `#[ignore]`d so that `cargo test` skips it, and a small
//! version that `cargo test` runs (and so CI) to keep the scenario working. The full ones
//! print their figures and fail on a missed target after printing all of them. Run them in
//! release (the numbers of a debug build say little); one at a time, as each wants the
//! machine to itself:
//!
//! ```sh
//! cargo test --release --test load -- --ignored --nocapture storm::   # 10,000 alarms, 100 groups
//! cargo test --release --test load -- --ignored --nocapture runs::    # 1,000 concurrent runs
//! cargo test --release --test load -- --ignored --nocapture chaos::   # kill -9 loop under faults
//! cargo test --release --test load -- --ignored --nocapture bench::   # ack vs a bare axum route
//! cargo test --release --test load -- --ignored --nocapture replicas:: # 2 replicas on PostgreSQL
//! ```
//!
//! Knobs (environment): `LOAD_SEED`, `LOAD_DB_DIR`, `LOAD_BOT_ENV`, `LOAD_BOT_BIN`,
//! `LOAD_BOT_WRAPPER` — see `bot::Bot::start` and README.md, "Load and chaos".
//!
//! # Layout
//! - `bot`: the `serve` process — config, environment, start, `kill -9`, restart, its memory.
//! - `wire`: a lean HTTP/1.1 client (keep-alive, one request at a time per connection) for
//!   the benchmark, signed Slack bodies, and alarm delivery with EventBridge's retries.
//! - `report`: figures and targets, printed as a table.
//! - `storm`, `runs`, `chaos`, `bench`, `replicas`: the scenarios (`replicas` on a PostgreSQL
//!   database it creates on the local server, `TEST_DATABASE_URL`).
//! - `support`: the integration tests' harness (`tests/it/support.rs`), shared.

mod bench;
mod bot;
mod chaos;
mod replicas;
mod report;
mod runs;
mod storm;
#[path = "../it/support.rs"]
mod support;
mod wire;
