//! The snapshot-then-upsize workflow: decide, then act.
//!
//! - [`run`]: the data of a run (its state, plan, steps, decisions, message, page).
//! - [`policy`]: pure decisions about the target node type and who may approve.
//! - [`machine`]: the pure transition function `(run, event, now) → transition | rejection`.
//! - [`runner`]: persists each transition with its effects, executes the effects, and feeds
//!   their results back as events. It is the only part that does I/O.
//!
//! ```text
//!  trigger (alarm | /redis upsize)
//!     │
//!  Planning ── AWS error ─────────────────────────────────────────→ Finished(failed) + page
//!     │  └──── nothing to do (at cap, busy) ──────────────────────→ Finished(nothing_to_do)
//!     ▼                                                               (+ page if an alarm)
//!  AwaitingApproval ── deny / cancel / expiry ────────────────────→ Finished(denied|cancelled|expired)
//!     │  approve (min_approvals)  │ approval_timeout → page (escalate) or approve (policy)
//!     ▼                           │ approval = auto skips this state
//!  Pausing (pause_url set) ── hook fails ──┐
//!     ▼                                    │
//!  Snapshotting ── failed / timed out ─────┤  cancel ─┐
//!     │ CreateSnapshot, poll until available          │
//!     ▼                                    │          │
//!  Modifying ── failed / timed out ────────┤          │
//!     │ ModifyReplicationGroup, poll       │          │
//!     ▼                                    ▼          ▼
//!  (succeeded) ──────────────────────→ Resuming (only if the pause hook was attempted)
//!                                          │
//!                                          ▼
//!                                     Finished(outcome); page on failure/timeout,
//!                                     resolve an open page on success
//! ```
//!
//! A transition is committed to the store before any of its effects run, and every effect is
//! idempotent, so a process killed at any point resumes without doing anything twice.

pub mod effect;
pub mod event;
pub mod machine;
pub mod policy;
pub mod ports;
pub mod run;
pub mod runner;

#[cfg(test)]
mod tests;
