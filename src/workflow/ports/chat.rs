//! The ports that tell people: [`Chat`] (the run's messages), [`Graphs`] (the memory graph in
//! its thread), [`Pager`] (on-call) and [`Hooks`] (the team's workers).

use crate::domain::MessageTs;
use crate::workflow::effect::{CancelGone, GraphMoment, Note, PageAction};
use crate::workflow::event::HookPhase;
use crate::workflow::run::TopMessage;

use super::{Attempt, BoxFuture, Failure};

/// The memory graph in a run's thread: the group's nodes' memory over the policy's
/// `graph_window`, with the alarm's threshold, the alarm and the upsize marked.
pub trait Graphs: Send + Sync {
    /// Post the graph for `moment` in the run's thread, once: when
    /// [`Attempt::maybe_done_before`], look for the one an earlier try uploaded first. A graph
    /// that can't be made (no data, no permission to read it) is a short note in the thread
    /// instead, and `Ok`: only a failure worth another try (throttling, a 5xx, Slack's rate
    /// limit) is an error.
    fn post_graph<'a>(
        &'a self,
        at: &'a mut Attempt,
        moment: GraphMoment,
    ) -> BoxFuture<'a, Result<(), Failure>>;
}

/// A run's messages. Each method is one effect; the implementation renders the run as it is in
/// the [`Attempt`] and looks before it posts where a lost answer could mean a duplicate.
pub trait Chat: Send + Sync {
    /// Post the run's top message, or find the one an earlier try posted (and bring it up to
    /// date) when [`Attempt::maybe_done_before`]; `None` when the run already has it.
    fn post_top_message<'a>(
        &'a self,
        at: &'a mut Attempt,
    ) -> BoxFuture<'a, Result<Option<TopMessage>, Failure>>;

    /// Show the run as it is now on its top message (nothing when there is none yet).
    fn update_top_message<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<(), Failure>>;

    /// A thread reply under the top message (skipped when there is none).
    fn post_note<'a>(
        &'a self,
        at: &'a mut Attempt,
        note: &'a Note,
    ) -> BoxFuture<'a, Result<(), Failure>>;

    /// Answer the person who asked for the run, privately (skipped when nobody can be).
    fn reply<'a>(
        &'a self,
        at: &'a mut Attempt,
        note: &'a Note,
    ) -> BoxFuture<'a, Result<(), Failure>>;

    /// The thread reply with a Cancel button: its `ts`, or `None` when it was not posted (no
    /// top message, or the run can't be cancelled any more).
    fn offer_cancel<'a>(
        &'a self,
        at: &'a mut Attempt,
    ) -> BoxFuture<'a, Result<Option<MessageTs>, Failure>>;

    /// Delete top messages of this run other than the one it keeps (a retried post that raced
    /// an earlier try), and show the run on the one it keeps.
    fn check_duplicate_top<'a>(&'a self, at: &'a mut Attempt)
    -> BoxFuture<'a, Result<(), Failure>>;

    /// Count the alarm's repeats on one thread reply: post it (its `ts`) the first time, edit
    /// it after (`None`); skipped when there is no top message yet.
    fn repeat_line<'a>(
        &'a self,
        at: &'a mut Attempt,
    ) -> BoxFuture<'a, Result<Option<MessageTs>, Failure>>;

    /// Replace the Cancel button with why it is gone.
    fn withdraw_cancel_offer<'a>(
        &'a self,
        at: &'a mut Attempt,
        ts: &'a MessageTs,
        reason: &'a CancelGone,
    ) -> BoxFuture<'a, Result<(), Failure>>;
}

/// On-call. Everything about one run is one incident (its dedup key is the run id).
pub trait Pager: Send + Sync {
    fn page<'a>(
        &'a self,
        at: &'a mut Attempt,
        action: &'a PageAction,
    ) -> BoxFuture<'a, Result<(), Failure>>;
}

/// The pause and resume webhooks the group's policy names (none configured: done at once).
pub trait Hooks: Send + Sync {
    fn call<'a>(
        &'a self,
        at: &'a mut Attempt,
        phase: HookPhase,
    ) -> BoxFuture<'a, Result<(), Failure>>;
}
