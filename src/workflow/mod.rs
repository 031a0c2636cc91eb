//! The snapshot-then-upsize workflow: decide, then act. The bottom layer of the domain: it
//! owns its vocabulary and the ports, and imports nothing but `crate::domain`; adapters
//! depend on it, never the reverse.
//!
//! - [`run`]: the data of a run (its state, plan, steps, decisions, message, page).
//! - [`event`]: what happens to a run (effect results, clicks, alarms, timers).
//! - [`effect`]: what a run needs done (each idempotent), the lanes they wait in, and the
//!   word-free data of its messages ([`effect::Note`]) and pages.
//! - [`policy`]: the policy types, and pure decisions: the target node type, who may approve,
//!   what an alarm does, when to retry.
//! - [`preflight`]: what else a node-type change touches (pending changes, reserved memory,
//!   the snapshot limit, Application Auto Scaling), each check known or unknown, read through
//!   the ElastiCache port.
//! - [`forecast`]: the memory trend over the policy's `forecast_window` (a least-squares line
//!   through the readings) and when, at that rate, the group is full.
//! - [`cost`]: what a plan costs — the on-demand prices of its node types as read when it was
//!   made, and the monthly arithmetic (730 hours) every card shares, up or down.
//! - [`machine`]: the pure transition function `(run, event, now) → transition | rejection`,
//!   one module per phase.
//! - [`ports`]: traits for everything a run and the use cases need from the world (AWS, chat,
//!   pager, hooks, store, clock, metrics).
//! - [`runner`]: commits each transition with its effects, dispatches due effects to the ports,
//!   and feeds their results back as events, retrying on a persisted schedule. The only part
//!   that acts, and it acts only through the ports.
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

pub mod cost;
mod dispatch;
pub mod effect;
pub mod event;
pub mod forecast;
pub mod machine;
pub mod policy;
pub mod ports;
pub mod preflight;
pub mod run;
pub mod runner;

#[cfg(test)]
mod tests;
