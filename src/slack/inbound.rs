//! What Slack sends the bot — slash commands and interactions — whatever carries it: a signed
//! HTTP request (`http::slack`) or a Socket Mode envelope ([`super::socket`]). One function per
//! kind parses what Slack sent, calls one use case and says what to answer as a [`Reply`],
//! which each transport renders in its own wire format (an HTTP response; an envelope's ack).
//!
//! The transport has already authenticated the request (HTTP: the signature; Socket Mode: the
//! WebSocket the bot opened with its app token) and names what recognises a copy of it
//! ([`Once`]: the signature; the envelope id), so what acts is acted on once, on any replica.
//! Nothing here knows how the request arrived.

use std::time::Duration;

use serde_json::{Value, json};
use tracing::{info, warn};

use crate::app::{Answer, App, AppError, Asker, UserAction};
use crate::domain::{ChannelId, RunId, SlackUserId};
use crate::slack::Message;
use crate::slack::answers::{self, render};
use crate::slack::api::{SlackClient, is_response_url};
use crate::slack::commands::{self, Command, SlashForm};
use crate::slack::interactions::{self, Click, Interaction, PayloadError};

/// How long a request's key is remembered: longer than the five minutes a signature is
/// accepted for, and than Slack goes on re-sending an envelope nobody acknowledged, so any copy
/// that gets this far is recognised.
pub const ONCE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// What recognises a copy of one request, and where it came from (for the log).
#[derive(Debug, Clone, Copy)]
pub struct Once<'a> {
    /// What carried it: `slack` (its signature is `id`) or `slack-socket` (its envelope id).
    pub kind: &'static str,
    /// The signature, or the envelope id.
    pub id: &'a str,
    /// `/slack/commands`, `/slack/interactions`, `socket`.
    pub via: &'a str,
}

impl Once<'_> {
    /// The store's key for it: `slack:<signature>` or `slack-socket:<envelope id>`. Made only
    /// when a request that acts is checked, not for every reading one.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind, self.id)
    }
}

/// What to answer Slack, whatever carries the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Taken; nothing to show (HTTP 200 with no body; a bare ack).
    Done,
    /// A private answer for the person who asked (a slash command's answer).
    Ephemeral(Message),
    /// A modal's submission refused: Slack shows these errors under its inputs.
    ViewErrors(Value),
    /// Not something Slack sends (HTTP 400).
    Malformed(String),
    /// The bot could not take the request in at all (HTTP 500: Slack tells the person).
    Failed,
}

impl Reply {
    /// The JSON body Slack reads for this reply, if it has one: the same for an HTTP response
    /// and a Socket Mode ack's `payload`.
    pub fn body(&self) -> Option<Value> {
        match self {
            Reply::Ephemeral(msg) => Some(ephemeral_body(msg)),
            Reply::ViewErrors(v) => Some(v.clone()),
            Reply::Done | Reply::Malformed(_) | Reply::Failed => None,
        }
    }
}

impl Reply {
    /// [`Reply::body`] as JSON text, written straight from the answer (no JSON tree built in
    /// between, the buffer sized once): what an HTTP response carries. The same bytes as
    /// `serde_json::to_vec(&reply.body())`.
    pub fn body_json(&self) -> Option<Vec<u8>> {
        /// An ephemeral answer's body, its keys in the order a `serde_json::Value` keeps them.
        #[derive(serde::Serialize)]
        struct Ephemeral<'a> {
            #[serde(skip_serializing_if = "<[Value]>::is_empty")]
            blocks: &'a [Value],
            response_type: &'static str,
            text: &'a str,
        }
        match self {
            Reply::Ephemeral(msg) => {
                let body = Ephemeral {
                    blocks: &msg.blocks,
                    response_type: "ephemeral",
                    text: &msg.text,
                };
                // The text, a little for escapes and the keys; blocks grow it as they need.
                let mut out = Vec::with_capacity(msg.text.len() + msg.text.len() / 8 + 64);
                serde_json::to_writer(&mut out, &body).ok()?;
                Some(out)
            }
            Reply::ViewErrors(v) => serde_json::to_vec(v).ok(),
            Reply::Done | Reply::Malformed(_) | Reply::Failed => None,
        }
    }
}

/// An ephemeral answer as Slack takes it in a slash command's response.
pub fn ephemeral_body(msg: &Message) -> Value {
    let mut body = json!({ "response_type": "ephemeral", "text": msg.text });
    if !msg.blocks.is_empty() {
        body["blocks"] = Value::Array(msg.blocks.clone());
    }
    body
}

/// The `response_url` Slack gave, if it is one we may answer on.
fn usable(app: &App, url: Option<String>) -> Option<String> {
    url.filter(|u| is_response_url(u, &app.config.endpoints.slack_api_url))
}

/// A request that acts (starts, cancels or clicks) is acted on once: a copy (a replay within
/// the signature's window, an envelope Slack sends again) changes nothing, whenever it comes,
/// on any replica. The answer for a copy is `Err`. Reading requests (`help`, `runs`) skip
/// this: answering a copy again changes nothing, and it keeps their answer off the disk.
async fn first_time(app: &App, once: Once<'_>, command: bool) -> Result<(), Reply> {
    match app
        .store
        .remember_request(&once.key(), app.now(), ONCE_WINDOW)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => {
            warn!(via = once.via, "refused a replayed Slack request");
            let answer = answers::text("This request was already handled; nothing changed.");
            Err(if command {
                Reply::Ephemeral(answer)
            } else {
                Reply::Done
            })
        }
        Err(e) => {
            tracing::error!(error = %e, via = once.via, "could not check a Slack request for a replay");
            Err(Reply::Failed)
        }
    }
}

/// A slash command: parse its text, call the use case, answer privately.
pub async fn command(app: &App, form: SlashForm<'_>, once: Once<'_>) -> Reply {
    let Ok(user) = SlackUserId::parse(&form.user_id) else {
        return Reply::Malformed("user_id is not a Slack user id".into());
    };
    let name = &app.config.slack.command;
    // Only the commands that answer later need it (`help`, asked most, does not).
    let response_url = || usable(app, form.response_url.as_deref().map(str::to_owned));
    let command = match commands::parse(&form.text, name) {
        Ok(c) => c,
        Err(usage) => {
            info!(user = %user, command = %form.command, text = %form.text, via = once.via, "slash command misused");
            return Reply::Ephemeral(answers::text(usage.0));
        }
    };
    // What acts is logged for people to follow; `help` and `runs` only at debug, so that a
    // flood of them costs no log line each.
    if command.acts() {
        info!(user = %user, command = %form.command, text = %form.text, via = once.via, "slash command");
    } else {
        tracing::debug!(user = %user, command = %form.command, text = %form.text, via = once.via, "slash command");
    }
    if command.acts()
        && let Err(copy) = first_time(app, once, true).await
    {
        return copy;
    }
    // The use cases that go to the store or AWS are boxed: their futures (upsize's is several
    // KB) would otherwise be part of this one, and so be moved and allocated for every ack,
    // `help` included.
    let answer: Answer = match command {
        Command::Help { unknown: None } => {
            return Reply::Ephemeral(answers::text(commands::help(name)));
        }
        Command::Help { unknown } => {
            return Reply::Ephemeral(answers::text(commands::help_text(name, unknown.as_deref())));
        }
        Command::Runs => app.runs().await,
        Command::Audit { run } => Box::pin(app.audit(&user, &run)).await,
        Command::Status { group } => Box::pin(app.status(&group, response_url())).await,
        Command::Upsize {
            group,
            node_type,
            dry_run,
        } => {
            let channel = ChannelId::parse(&form.channel_id).ok();
            let asker = Asker {
                user: user.clone(),
                channel,
                response_url: response_url(),
            };
            Box::pin(app.upsize(asker, &group, node_type, dry_run)).await
        }
        Command::Cancel { run } => Box::pin(app.cancel(&user, &run, response_url())).await,
    };
    Reply::Ephemeral(render(&answer))
}

/// A click or a modal's submission (`parsed`: what the transport read out of its wire format).
/// `slack` opens modals, which must happen within the click's 3 seconds.
pub async fn interaction(
    app: &App,
    slack: Option<&SlackClient>,
    parsed: Result<Interaction, PayloadError>,
    once: Once<'_>,
) -> Reply {
    if let Err(copy) = first_time(app, once, false).await {
        return copy;
    }
    let reply = take_in(app, slack, parsed, once).await;
    // Not taken in: the copy Slack sends again (the same envelope in Socket Mode) must be
    // acted on, not refused as a replay.
    if matches!(reply, Reply::Failed)
        && let Err(e) = app.store.forget_request(&once.key()).await
    {
        tracing::error!(error = %e, via = once.via, "could not forget a request that failed; its resend will be refused");
    }
    reply
}

/// A click that is not a copy: parse it and call its use case.
async fn take_in(
    app: &App,
    slack: Option<&SlackClient>,
    parsed: Result<Interaction, PayloadError>,
    once: Once<'_>,
) -> Reply {
    let interaction = match parsed {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, via = once.via, "malformed interaction");
            return Reply::Malformed(e.to_string());
        }
    };
    let user = interaction.user.clone();
    let response_url = usable(app, interaction.response_url.clone());
    let (run, action) = match interaction.click {
        Click::Approve(run) => (run, UserAction::Approve),
        Click::ApprovePending(run) => (run, UserAction::ApprovePending),
        Click::Deny(run) => (run, UserAction::Deny),
        Click::Cancel(run) => (run, UserAction::Cancel),
        Click::UpsizeWithoutSnapshot(run) => (run, UserAction::UpsizeWithoutSnapshot),
        Click::ChooseSize(run, t) => (run, UserAction::ChooseSize(t)),
        Click::Dismiss(run) => (run, UserAction::Dismiss),
        Click::Snooze(run, d) => (run, UserAction::Snooze(d)),
        Click::StartAnyway(group) => {
            info!(user = %user, group = %group, "start anyway");
            return acknowledged(app.start_anyway(&user, &group, response_url).await);
        }
        Click::Replan(group) => {
            info!(user = %user, group = %group, "plan again");
            let asker = Asker {
                user,
                channel: interaction.channel.clone(),
                response_url,
            };
            return acknowledged(app.replan(asker, &group).await);
        }
        Click::ExplainDenial(run) => {
            return explain_denial(
                app,
                slack,
                &user,
                &run,
                interaction.trigger_id,
                response_url,
            )
            .await;
        }
        Click::DenialReason(run, reason) => {
            info!(user = %user, run = %run, "denial reason");
            return match app.explain_denial(&user, &run, reason).await {
                // The modal shows the refusal under its input; anything else closes it.
                Ok(crate::workflow::machine::Submitted::Rejected(why)) => {
                    Reply::ViewErrors(json!({
                        "response_action": "errors",
                        "errors": { interactions::DENIAL_INPUT: answers::rejection(&why) },
                    }))
                }
                Ok(_) => Reply::Done,
                Err(e) => {
                    tracing::error!(error = %e, "could not take in a denial's reason");
                    Reply::Failed
                }
            };
        }
        Click::Other(what) => {
            info!(user = %user, what = %what, "interaction ignored");
            return Reply::Done;
        }
    };
    info!(user = %user, run = %run, action = ?action, via = once.via, "interaction");
    let version = interaction.plan_version;
    acknowledged(app.click(&user, &run, action, version, response_url).await)
}

/// "Add a reason" under a denial: the modal that asks why, for the person who denied the run
/// (anyone else is told privately who can). A modal that can't be opened (the click's 3
/// seconds passed, Slack refused) is logged; the denial stands without a reason.
async fn explain_denial(
    app: &App,
    slack: Option<&SlackClient>,
    user: &SlackUserId,
    run: &RunId,
    trigger_id: Option<String>,
    response_url: Option<String>,
) -> Reply {
    let found = match app.denial_to_explain(user, run, response_url).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "could not look up the denied run");
            return Reply::Failed;
        }
    };
    let (Some(denied), Some(trigger), Some(slack)) = (found, trigger_id, slack) else {
        return Reply::Done;
    };
    let view = crate::slack::blocks::render_denial_modal(&denied);
    // Slack wants the click answered within 3 s, and the trigger is dead after that anyway.
    let opened = tokio::time::timeout(
        Duration::from_millis(2_500),
        slack.open_view(&trigger, &view),
    )
    .await;
    match opened {
        Ok(Ok(())) => info!(user = %user, run = %run, "asked why the run was denied"),
        Ok(Err(e)) => {
            warn!(user = %user, run = %run, error = %e, "could not open the denial modal")
        }
        Err(_) => warn!(user = %user, run = %run, "views.open took too long; no modal"),
    }
    Reply::Done
}

/// Slack wants a click acknowledged; what came of it shows in the run's message or a private
/// answer. Only a failure to take the click in at all is a failure (Slack shows the person an
/// error).
fn acknowledged(taken: Result<(), AppError>) -> Reply {
    match taken {
        Ok(()) => Reply::Done,
        Err(e) => {
            tracing::error!(error = %e, "could not take in a click");
            Reply::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answers_json_text_is_the_same_as_its_json_value_written_out() {
        let mut with_blocks = answers::text("two\nlines, \"quoted\", <escaped> • —");
        with_blocks.blocks =
            vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": "x"}})];
        let replies = [
            Reply::Ephemeral(answers::text(commands::help_text("/redis", Some("frob")))),
            Reply::Ephemeral(with_blocks),
            Reply::ViewErrors(json!({"response_action": "errors", "errors": {"reason": "why"}})),
            Reply::Done,
            Reply::Malformed("no".into()),
            Reply::Failed,
        ];
        for reply in replies {
            let expected = reply.body().map(|v| serde_json::to_vec(&v).unwrap());
            assert_eq!(reply.body_json(), expected, "{reply:?}");
        }
    }
}
