//! The [`Chat`] port over Slack's Web API: a run's top message, its thread replies and the
//! private answers to whoever asked for it, rendered with [`super::blocks`].
//!
//! The one message that must never appear twice is the top message. It carries the run id in
//! Slack's message metadata, and a try that may follow an earlier one whose answer was lost (a
//! timeout, a crash) looks for it in the channel's history before posting.

use crate::app::{Answer, Messenger, Notice};
use crate::domain::{ChannelId, MessageTs};
use crate::workflow::effect::{CancelGone, Note};
use crate::workflow::ports::{Attempt, BoxFuture, Chat, Failure, NoticeSeen};
use crate::workflow::run::{TopMessage, Trigger};

use super::api::{SlackClient, SlackError};
use super::blocks;

/// The Slack message-metadata event type that marks a run's top message.
pub const TOP_MESSAGE_EVENT: &str = "redis_autoscaler_run";

/// … and a notice window's notice (its payload names the window).
pub const NOTICE_EVENT: &str = "redis_autoscaler_notice";

impl From<&SlackError> for Failure {
    fn from(e: &SlackError) -> Failure {
        Failure {
            error: e.to_string(),
            retryable: e.is_retryable(),
            retry_after: e.retry_after(),
        }
    }
}

/// [`Chat`] in Slack.
#[derive(Debug, Clone)]
pub struct SlackChat {
    slack: SlackClient,
    /// How long after a retried top message an earlier, lost try would have landed.
    duplicates_land_within: std::time::Duration,
}

impl SlackChat {
    pub fn new(slack: SlackClient) -> SlackChat {
        SlackChat {
            slack,
            duplicates_land_within: std::time::Duration::from_secs(30),
        }
    }

    /// A post Slack took but whose answer was lost lands within `d` (some multiple of the
    /// client's timeout): a retried top message looks for such a duplicate then.
    pub fn duplicates_land_within(mut self, d: std::time::Duration) -> SlackChat {
        self.duplicates_land_within = d;
        self
    }

    /// Find the top message an earlier try may have posted.
    async fn earlier_post(&self, at: &mut Attempt) -> Result<Option<MessageTs>, Failure> {
        let run = &at.run;
        let since = run.created_at.as_secs() - 60;
        let id = run.id.as_str();
        let found = self
            .slack
            .find_by_metadata(&run.channel, since, TOP_MESSAGE_EVENT, "run_id", id)
            .await;
        found.map_err(|e| {
            at.log("slack", "conversations.history", format!("error: {e}"));
            // Whatever the error, posting without knowing could post twice: try again later.
            Failure::transient(
                format!("could not check for an earlier post: {e}"),
                e.retry_after(),
            )
        })
    }
}

/// Log a Slack call's outcome and turn its error into a [`Failure`].
fn said<T>(
    at: &mut Attempt,
    call: &str,
    r: Result<T, SlackError>,
    ok: impl FnOnce(&T) -> String,
) -> Result<T, Failure> {
    match &r {
        Ok(t) => {
            let detail = ok(t);
            at.log("slack", call, detail);
        }
        Err(e) => at.log("slack", call, format!("error: {e}")),
    }
    r.map_err(|e| Failure::from(&e))
}

impl Chat for SlackChat {
    fn post_top_message<'a>(
        &'a self,
        at: &'a mut Attempt,
    ) -> BoxFuture<'a, Result<Option<TopMessage>, Failure>> {
        Box::pin(async move {
            if at.run.message.is_some() {
                at.log(
                    "slack",
                    "chat.postMessage",
                    "top message already posted; not posting again",
                );
                return Ok(None);
            }
            let found = match at.maybe_done_before {
                true => self.earlier_post(at).await?,
                false => None,
            };
            let msg = blocks::render_top(&at.run, at.now);
            // A retry that posts anew may be racing the earlier try (Slack took it, its answer
            // was lost, the history did not show it yet): look again once it would have landed.
            let check = (at.maybe_done_before && found.is_none())
                .then_some(self.duplicates_land_within.as_millis() as u64);
            let (channel, ts) = match found {
                Some(ts) => {
                    let detail =
                        format!("the top message was already posted (ts {ts}); not posting again");
                    at.log("slack", "conversations.history", detail);
                    // It shows the run as it was then; bring it up to date.
                    if let Err(e) = self.slack.update_message(&at.run.channel, &ts, &msg).await {
                        at.log("slack", "chat.update", format!("error: {e}"));
                    }
                    (at.run.channel.clone(), ts)
                }
                None => {
                    let payload = serde_json::json!({ "run_id": at.run.id.as_str() });
                    let posted = self
                        .slack
                        .post_message_with_metadata(
                            &at.run.channel,
                            &msg,
                            TOP_MESSAGE_EVENT,
                            &payload,
                        )
                        .await;
                    let posted = said(at, "chat.postMessage", posted, |p| {
                        format!("top message posted in {} (ts {})", p.channel, p.ts)
                    })?;
                    (posted.channel, posted.ts)
                }
            };
            let permalink = match self.slack.permalink(&channel, &ts).await {
                Ok(link) => Some(link),
                Err(e) => {
                    at.log("slack", "chat.getPermalink", format!("error: {e}"));
                    None
                }
            };
            Ok(Some(TopMessage {
                channel,
                ts,
                permalink,
                check_duplicates_after_ms: check,
            }))
        })
    }

    fn check_duplicate_top<'a>(
        &'a self,
        at: &'a mut Attempt,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let Some(top) = at.run.message.clone() else {
                return Ok(());
            };
            let run = &at.run;
            let since = run.created_at.as_secs() - 60;
            let found = self
                .slack
                .find_all_by_metadata(
                    &top.channel,
                    since,
                    TOP_MESSAGE_EVENT,
                    "run_id",
                    run.id.as_str(),
                    20,
                )
                .await;
            let found = said(at, "conversations.history", found, |f| {
                format!("{} top message(s) for this run", f.len())
            })?;
            let extra: Vec<MessageTs> = found.into_iter().filter(|ts| *ts != top.ts).collect();
            if extra.is_empty() {
                return Ok(());
            }
            for ts in &extra {
                let r = self.slack.delete_message(&top.channel, ts).await;
                // Already gone is what we wanted.
                if let Err(e) = &r
                    && e.api_error() == Some("message_not_found")
                {
                    continue;
                }
                said(at, "chat.delete", r, |()| {
                    format!(
                        "deleted a duplicate top message (ts {ts}); the run keeps {}",
                        top.ts
                    )
                })?;
            }
            let msg = blocks::render_top(&at.run, at.now);
            let r = self.slack.update_message(&top.channel, &top.ts, &msg).await;
            said(at, "chat.update", r, |()| {
                "the kept top message shows the run".to_string()
            })
        })
    }

    fn update_top_message<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let Some(top) = at.run.message.clone() else {
                return Ok(());
            };
            let msg = blocks::render_top(&at.run, at.now);
            let state = blocks::describe_state(&at.run.state);
            let r = self.slack.update_message(&top.channel, &top.ts, &msg).await;
            said(at, "chat.update", r, |()| {
                format!("top message shows: {state}")
            })
        })
    }

    fn post_note<'a>(
        &'a self,
        at: &'a mut Attempt,
        note: &'a Note,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let Some(top) = at.run.message.clone() else {
                at.log(
                    "slack",
                    "chat.postMessage",
                    "no top message to reply to; thread note skipped",
                );
                return Ok(());
            };
            let msg = blocks::render_note(&at.run, note);
            match self
                .slack
                .post_message(&top.channel, Some(&top.ts), &msg)
                .await
            {
                Ok(posted) => {
                    let detail = format!("thread reply (ts {}): {}", posted.ts, msg.text);
                    at.log("slack", "chat.postMessage", detail);
                    Ok(())
                }
                Err(e) => {
                    at.log(
                        "slack",
                        "chat.postMessage",
                        format!("thread reply failed: {e}"),
                    );
                    Err(Failure::from(&e))
                }
            }
        })
    }

    fn reply<'a>(
        &'a self,
        at: &'a mut Attempt,
        note: &'a Note,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let Trigger::Command {
                response_url: Some(url),
                user,
            } = at.run.trigger.clone()
            else {
                at.log(
                    "slack",
                    "response_url",
                    "nobody to answer privately; skipped",
                );
                return Ok(());
            };
            let msg = blocks::render_note(&at.run, note);
            match self.slack.respond(&url, &msg).await {
                Ok(()) => {
                    at.log(
                        "slack",
                        "response_url",
                        format!("answered {user}: {}", msg.text),
                    );
                    Ok(())
                }
                Err(e) => {
                    at.log(
                        "slack",
                        "response_url",
                        format!("answer to {user} failed: {e}"),
                    );
                    Err(Failure::from(&e))
                }
            }
        })
    }

    fn offer_cancel<'a>(
        &'a self,
        at: &'a mut Attempt,
    ) -> BoxFuture<'a, Result<Option<MessageTs>, Failure>> {
        Box::pin(async move {
            let Some(top) = at.run.message.clone() else {
                return Ok(None);
            };
            if !at.run.is_cancellable() {
                at.log(
                    "slack",
                    "chat.postMessage",
                    "cancel button not offered: the run can no longer be cancelled",
                );
                return Ok(None);
            }
            let msg = blocks::render_cancel_offer(&at.run);
            match self
                .slack
                .post_message(&top.channel, Some(&top.ts), &msg)
                .await
            {
                Ok(posted) => {
                    at.log(
                        "slack",
                        "chat.postMessage",
                        format!("cancel button offered (ts {})", posted.ts),
                    );
                    Ok(Some(posted.ts))
                }
                Err(e) => {
                    at.log(
                        "slack",
                        "chat.postMessage",
                        format!("cancel button failed: {e}"),
                    );
                    Err(Failure::from(&e))
                }
            }
        })
    }

    fn repeat_line<'a>(
        &'a self,
        at: &'a mut Attempt,
    ) -> BoxFuture<'a, Result<Option<MessageTs>, Failure>> {
        Box::pin(async move {
            let Some(top) = at.run.message.clone() else {
                at.log(
                    "slack",
                    "chat.postMessage",
                    "no top message yet; repeat line skipped",
                );
                return Ok(None);
            };
            let r = &at.run.repeats;
            let note = Note::AlarmRepeated {
                reason: r.last_reason.clone(),
                value: r.last_value,
                count: at.run.alarm_repeats,
                at: r.last_at,
            };
            let msg = blocks::render_note(&at.run, &note);
            let (method, result) = match r.line.clone() {
                Some(ts) => (
                    "chat.update",
                    (self.slack.update_message(&top.channel, &ts, &msg).await).map(|()| None),
                ),
                None => (
                    "chat.postMessage",
                    (self
                        .slack
                        .post_message(&top.channel, Some(&top.ts), &msg)
                        .await)
                        .map(|posted| Some(posted.ts)),
                ),
            };
            match result {
                Ok(ts) => {
                    at.log("slack", method, format!("repeat line: {}", msg.text));
                    Ok(ts)
                }
                Err(e) => {
                    at.log("slack", method, format!("repeat line failed: {e}"));
                    Err(Failure::from(&e))
                }
            }
        })
    }

    fn withdraw_cancel_offer<'a>(
        &'a self,
        at: &'a mut Attempt,
        ts: &'a MessageTs,
        reason: &'a CancelGone,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let Some(top) = at.run.message.clone() else {
                return Ok(());
            };
            let msg = blocks::render_cancel_withdrawn(reason, at.now);
            let why = blocks::cancel_gone(reason);
            match self.slack.update_message(&top.channel, ts, &msg).await {
                Ok(()) => {
                    at.log(
                        "slack",
                        "chat.update",
                        format!("cancel button withdrawn: {why}"),
                    );
                    Ok(())
                }
                Err(e) => {
                    at.log(
                        "slack",
                        "chat.update",
                        format!("withdrawing the cancel button failed: {e}"),
                    );
                    Err(Failure::from(&e))
                }
            }
        })
    }
}

/// The use cases' [`Messenger`]: private answers and channel notices, rendered for Slack.
impl Messenger for SlackChat {
    fn respond<'a>(
        &'a self,
        response_url: &'a str,
        answer: &'a Answer,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let msg = super::answers::render(answer);
            self.slack.respond(response_url, &msg).await.map_err(|e| {
                tracing::warn!(error = %e, "could not answer through response_url");
                Failure::from(&e)
            })
        })
    }

    fn post_notice<'a>(
        &'a self,
        channel: &'a ChannelId,
        notice: &'a Notice,
        window: Option<(&'a str, &'a NoticeSeen)>,
        again: bool,
    ) -> BoxFuture<'a, Result<Option<MessageTs>, Failure>> {
        Box::pin(async move {
            let msg = render_notice(notice, window.map(|(_, seen)| seen));
            let Some((key, seen)) = window else {
                return match self.slack.post_message(channel, None, &msg).await {
                    Ok(posted) => Ok(Some(posted.ts)),
                    Err(e) => {
                        tracing::error!(channel = %channel, error = %e, "could not post a notice");
                        Err(Failure::from(&e))
                    }
                };
            };
            if again {
                let since = seen.first_at.as_secs() - 60;
                let found = self
                    .slack
                    .find_by_metadata(channel, since, NOTICE_EVENT, "window", key)
                    .await;
                match found {
                    Ok(Some(ts)) => {
                        // Posted by the earlier try: bring it up to date instead.
                        if let Err(e) = self.slack.update_message(channel, &ts, &msg).await {
                            tracing::warn!(channel = %channel, error = %e, "could not update a notice");
                        }
                        return Ok(Some(ts));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // Posting without knowing could post twice: try again later.
                        return Err(Failure::transient(
                            format!("could not check for an earlier notice: {e}"),
                            e.retry_after(),
                        ));
                    }
                }
            }
            let payload = serde_json::json!({ "window": key });
            let posted = self
                .slack
                .post_message_with_metadata(channel, &msg, NOTICE_EVENT, &payload)
                .await;
            match posted {
                Ok(posted) => Ok(Some(posted.ts)),
                Err(e) => {
                    tracing::error!(channel = %channel, error = %e, "could not post a notice");
                    Err(Failure::from(&e))
                }
            }
        })
    }

    fn update_notice<'a>(
        &'a self,
        channel: &'a ChannelId,
        ts: &'a MessageTs,
        notice: &'a Notice,
        seen: &'a NoticeSeen,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let msg = render_notice(notice, Some(seen));
            self.slack
                .update_message(channel, ts, &msg)
                .await
                .map_err(|e| {
                    tracing::warn!(channel = %channel, error = %e, "could not update a notice");
                    Failure::from(&e)
                })
        })
    }
}

fn render_notice(notice: &Notice, seen: Option<&NoticeSeen>) -> super::Message {
    let msg = match notice {
        Notice::UnknownGroup { alarm } => blocks::render_unknown_group_notice(alarm),
        Notice::Foreign {
            alarm,
            home,
            others,
        } => blocks::render_foreign_notice(alarm, home, others),
        Notice::Cooldown {
            group,
            alarm,
            last,
            since,
            remaining,
        } => blocks::render_cooldown_notice(group, alarm, last, *since, *remaining),
    };
    match seen {
        Some(seen) if seen.count > 1 => blocks::with_repeats(msg, seen.count, seen.last_at),
        _ => msg,
    }
}
