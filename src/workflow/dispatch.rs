//! Hand an effect to its port and say what the machine hears: the one place that maps each
//! [`Effect`] to a call on [`Ports`] and its answer to an [`Event`]. The runner decides when
//! (and whether again); this decides nothing.

use super::effect::Effect;
use super::event::{AwsOp, Event};
use super::ports::{Attempt, AwsError, Failure, Ports};
use super::run::State;

/// What came of executing one effect.
pub(super) enum Heard {
    /// What the machine hears (`None`: nothing, the message went out).
    Told(Option<Event>),
    /// The try failed; if no try works, the machine hears the event (`None`: only the audit
    /// trail does — a thread reply that never arrives is not the run's failure).
    Failed(Failure, Option<Event>),
}

/// How a port said no.
enum Fail {
    Aws(AwsOp, AwsError),
    Delivery(Failure),
}

/// When the run's upsize began and ended (its `updated_at` if the step has no record).
fn upsize_times(run: &super::run::Run) -> (crate::domain::Timestamp, crate::domain::Timestamp) {
    match run.step(super::run::Step::Upsize) {
        Some(s) => (s.started, s.ended.unwrap_or(run.updated_at)),
        None => (run.updated_at, run.updated_at),
    }
}

/// Hand the effect to its port; what the machine hears.
pub(super) async fn perform(ports: &Ports, at: &mut Attempt, effect: &Effect) -> Heard {
    let Ports {
        aws,
        chat,
        graphs,
        verify,
        pager,
        hooks,
        ..
    } = ports;
    let quiet = |r: Result<(), Failure>| r.map(|()| None).map_err(Fail::Delivery);
    let told = |r: Result<Event, Failure>| r.map(Some).map_err(Fail::Delivery);
    let aws_failed = |op| move |e| Fail::Aws(op, e);
    let result = match effect {
        Effect::FetchPlan => (aws.fetch_plan(at).await)
            .map(|f| Some(Event::plan_fetched(f)))
            .map_err(aws_failed(AwsOp::Plan)),
        Effect::Recheck { before } => (aws.look_again(at).await)
            .map(|l| Some(Event::rechecked(*before, l)))
            .map_err(aws_failed(AwsOp::Recheck)),
        Effect::CreateSnapshot { name } => (aws.create_snapshot(at, name).await)
            .map(|status| Some(Event::SnapshotStarted { status }))
            .map_err(aws_failed(AwsOp::CreateSnapshot)),
        Effect::PollSnapshot { name } => (aws.poll_snapshot(at, name).await)
            .map(|status| Some(Event::SnapshotPolled { status }))
            .map_err(aws_failed(AwsOp::PollSnapshot)),
        Effect::ModifyNodeType { target } => (aws.modify_node_type(at, target).await)
            .map(|group| Some(Event::ModifyRequested { group }))
            .map_err(aws_failed(AwsOp::Modify)),
        Effect::VerifyMemory => {
            let (started, ended) = upsize_times(&at.run);
            (verify.around_upsize(at, started, ended).await)
                .map(|r| {
                    Some(Event::MemoryRead {
                        before: r.before,
                        after: r.after,
                    })
                })
                .map_err(aws_failed(AwsOp::Verify))
        }
        Effect::PollGroup => match aws.poll_group(at).await {
            Ok(group) => {
                // Back, but not on the new type: what does AWS say happened?
                let back_without_it = matches!(
                    &at.run.state,
                    State::Modifying { plan, requested: true, .. }
                        if group.is_available() && group.node_type.as_ref() != Some(&plan.target)
                );
                let events = if back_without_it {
                    aws.why_not_upsized(at, &group).await
                } else {
                    Vec::new()
                };
                Ok(Some(Event::GroupPolled { group, events }))
            }
            Err(e) => Err(aws_failed(AwsOp::PollGroup)(e)),
        },
        Effect::Timer { timer } => Ok(Some(Event::TimerFired { timer: *timer })),
        Effect::PostTopMessage => (chat.post_top_message(at).await)
            .map(|posted| posted.map(|message| Event::TopMessagePosted { message }))
            .map_err(Fail::Delivery),
        Effect::UpdateTopMessage => quiet(chat.update_top_message(at).await),
        Effect::PostNote { note } => quiet(chat.post_note(at, note).await),
        Effect::Reply { note } => quiet(chat.reply(at, note).await),
        Effect::OfferCancel => (chat.offer_cancel(at).await)
            .map(|ts| ts.map(|ts| Event::CancelOffered { ts }))
            .map_err(Fail::Delivery),
        Effect::CheckDuplicateTop => quiet(chat.check_duplicate_top(at).await),
        Effect::PostGraph { moment } => quiet(graphs.post_graph(at, *moment).await),
        Effect::RepeatLine => (chat.repeat_line(at).await)
            .map(|ts| ts.map(|ts| Event::RepeatLinePosted { ts }))
            .map_err(Fail::Delivery),
        Effect::WithdrawCancelOffer { ts, reason } => {
            quiet(chat.withdraw_cancel_offer(at, ts, reason).await)
        }
        Effect::Page { action } => told((pager.page(at, action).await).map(|()| {
            let action = action.clone();
            Event::PageDelivered { action }
        })),
        Effect::CallHook { phase } => told((hooks.call(at, *phase).await).map(|()| {
            let phase = *phase;
            Event::HookDone { phase }
        })),
    };
    match result {
        Ok(event) => Heard::Told(event),
        Err(Fail::Aws(op, error)) => {
            Heard::Failed(Failure::from(&error), Some(Event::AwsFailed { op, error }))
        }
        Err(Fail::Delivery(f)) => {
            let then = effect.failed_for_good(&f.error);
            Heard::Failed(f, then)
        }
    }
}
