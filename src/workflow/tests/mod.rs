//! Tests of the workflow's effectful half against in-memory fakes of its ports ([`fakes`]),
//! on tokio's paused clock: a run's 30-second polls and 15-minute approval timeout take no
//! time at all, and happen exactly when the policy says.

mod fakes;
mod runner;
