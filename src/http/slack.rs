//! `POST /slack/commands` and `POST /slack/interactions`.
//!
//! Every request passes through [`SlackVerified`], an extractor that reads the raw body (with
//! a size limit) and checks Slack's signature before any handler sees a byte of it; a handler
//! can't skip it because it is the only way to get the body. Handlers answer within Slack's
//! 3 seconds: they read the store and commit runs or events, and leave AWS, PagerDuty and the
//! Web API to the runner or to a background task that answers through `response_url`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::{info, warn};

use crate::app::{App, StartError, UserAction};
use crate::domain::node_types::within_cap;
use crate::domain::{RunId, SlackUserId, Timestamp};
use crate::slack::Message;
use crate::slack::answers;
use crate::slack::commands::{self, Command, SlashForm};
use crate::slack::interactions::{self, Click};
use crate::slack::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::workflow::event::Actor;
use crate::workflow::run::Trigger;
use crate::workflow::runner::{Started, Submitted};

/// Slack's payloads are small; anything much bigger is not from Slack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body Slack signed. The only way to get one is [`FromRequest`], which verifies.
pub struct SlackVerified(pub Bytes);

impl FromRequest<App> for SlackVerified {
    type Rejection = Response;

    async fn from_request(req: Request, app: &App) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                warn!(path = %parts.uri.path(), "refused a Slack request: body too large or unreadable");
                return Err(
                    (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response()
                );
            }
        };
        // Slack checks a new request URL's certificate with `ssl_check=1`; it carries no
        // command and needs no answer but 200. Nothing else happens for it.
        if is_ssl_check(&bytes) {
            return Err(StatusCode::OK.into_response());
        }
        let Some(secret) = app.config.secrets.slack_signing_secret.as_ref() else {
            warn!("refused a Slack request: SLACK_SIGNING_SECRET is not set");
            return Err((StatusCode::UNAUTHORIZED, "invalid signature\n").into_response());
        };
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        match signature::verify(
            secret,
            header(TIMESTAMP_HEADER),
            header(SIGNATURE_HEADER),
            &bytes,
            Timestamp::now().as_secs(),
        ) {
            Ok(()) => Ok(SlackVerified(bytes)),
            Err(e) => {
                warn!(path = %parts.uri.path(), reason = %e, "refused a Slack request");
                Err((StatusCode::UNAUTHORIZED, "invalid signature\n").into_response())
            }
        }
    }
}

fn is_ssl_check(body: &[u8]) -> bool {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map(|pairs| pairs.iter().any(|(k, v)| k == "ssl_check" && v == "1"))
        .unwrap_or(false)
}

/// An ephemeral answer, as the HTTP response to a slash command.
fn ephemeral(msg: Message) -> Response {
    let mut body = json!({ "response_type": "ephemeral", "text": msg.text });
    if !msg.blocks.is_empty() {
        body["blocks"] = serde_json::Value::Array(msg.blocks);
    }
    axum::Json(body).into_response()
}

fn bad_request(why: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, format!("{}\n", why.into())).into_response()
}

/// Answer later through `response_url`, if Slack gave one we may use.
fn answer_later(app: &App, response_url: Option<String>, msg: Message) {
    let Some(url) = response_url else { return };
    let slack = app.runner.slack().clone();
    tokio::spawn(async move {
        if let Err(e) = slack.respond(&url, &msg).await {
            warn!(error = %e, "could not answer through response_url");
        }
    });
}

pub async fn commands(State(app): State<App>, SlackVerified(body): SlackVerified) -> Response {
    let form = match SlashForm::parse(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let Ok(user) = SlackUserId::parse(&form.user_id) else {
        return bad_request("user_id is not a Slack user id");
    };
    let name = app.config.slack.command.clone();
    let response_url = form
        .response_url
        .clone()
        .filter(|u| app.runner.slack().is_response_url(u));
    info!(user = %user, command = %form.command, text = %form.text, "slash command");
    let command = match commands::parse(&form.text, &name) {
        Ok(c) => c,
        Err(usage) => return ephemeral(answers::text(usage.0)),
    };
    match command {
        Command::Help { unknown } => ephemeral(answers::text(commands::help_text(
            &name,
            unknown.as_deref(),
        ))),
        Command::Runs => match app.store(|s| s.recent_runs(None, 10)).await {
            Ok(runs) => ephemeral(answers::runs(&runs, Timestamp::now())),
            Err(e) => internal(e),
        },
        Command::Status { group } => {
            let Some(gc) = app.config.group(&group) else {
                return ephemeral(unknown_group(&app, &group));
            };
            let g = group.clone();
            let (active, recent) = match app
                .store(move |s| Ok((s.active_run(&g)?, s.recent_runs(Some(&g), 5)?)))
                .await
            {
                Ok(found) => found,
                Err(e) => return internal(e),
            };
            let live = response_url.is_some();
            if let Some(url) = response_url {
                let aws = app.runner.aws().clone();
                let slack = app.runner.slack().clone();
                let group = group.clone();
                tokio::spawn(async move {
                    let msg = match aws.describe_group(&group).await {
                        Ok(g) => answers::status_live(&g),
                        Err(e) => answers::text(format!("Couldn't read {group} from AWS: {e}")),
                    };
                    if let Err(e) = slack.respond(&url, &msg).await {
                        warn!(error = %e, "could not answer through response_url");
                    }
                });
            }
            ephemeral(answers::status_local(
                gc,
                active.as_ref(),
                &recent,
                Timestamp::now(),
                live,
            ))
        }
        Command::Upsize {
            group,
            node_type,
            dry_run,
        } => {
            let Some(gc) = app.config.group(&group) else {
                return ephemeral(unknown_group(&app, &group));
            };
            if let (Some(t), Some(cap)) = (&node_type, &gc.policy.max_node_type) {
                match within_cap(t, cap) {
                    Ok(true) => {}
                    Ok(false) => {
                        return ephemeral(answers::text(format!(
                            "{t} is above {group}'s cap ({cap}). Ask for a size at or below the cap, or leave the size out to get the next one up. `{name} upsize {group} --dry-run` shows the choices."
                        )));
                    }
                    Err(why) => return ephemeral(answers::text(format!("Can't use {t}: {why}."))),
                }
            }
            if dry_run {
                let Some(url) = response_url else {
                    return ephemeral(answers::text(
                        "A dry run answers a moment later, and this request came without a usable response_url.",
                    ));
                };
                let app2 = app.clone();
                let gc = gc.clone();
                tokio::spawn(async move {
                    let aws = app2.runner.aws().clone();
                    let msg = match (
                        aws.describe_group(&gc.id).await,
                        aws.allowed_scale_ups(&gc.id).await,
                    ) {
                        (Ok(g), Ok(allowed)) => {
                            let plan = crate::workflow::policy::plan(
                                &g,
                                &allowed,
                                node_type.as_ref(),
                                &gc.policy,
                            );
                            let id = gc.id.clone();
                            let last = app2
                                .store(move |s| s.last_success(&id))
                                .await
                                .ok()
                                .flatten();
                            answers::dry_run(&gc, plan.as_ref(), last.as_ref(), Timestamp::now())
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            answers::text(format!("Couldn't read {} from AWS: {e}", gc.id))
                        }
                    };
                    if let Err(e) = app2.runner.slack().respond(&url, &msg).await {
                        warn!(error = %e, "could not answer through response_url");
                    }
                });
                return ephemeral(answers::text(format!(
                    "Working out the plan for {group}… (dry run: nothing will change)"
                )));
            }
            let g = group.clone();
            if let Ok(Some(active)) = app.store(move |s| s.active_run(&g)).await {
                return ephemeral(already_active(&active));
            }
            let trigger = Trigger::Command {
                user: user.clone(),
                response_url,
            };
            match app.start_run(&group, node_type, trigger).await {
                Ok(Started::Created(id)) => ephemeral(answers::text(format!(
                    "Started run `{id}` for {group}. The plan and the Approve button will be in <#{}> in a moment.",
                    gc.channel
                ))),
                Ok(Started::AlreadyActive(id)) => match app
                    .store({
                        let id = id.clone();
                        move |s| s.run(&id)
                    })
                    .await
                {
                    Ok(Some(active)) => ephemeral(already_active(&active)),
                    _ => ephemeral(answers::text(format!(
                        "{group} already has an active run: `{id}`."
                    ))),
                },
                Err(StartError::UnknownGroup(..)) => ephemeral(unknown_group(&app, &group)),
                Err(StartError::Runner(e)) => internal(e),
            }
        }
        Command::Cancel { run } => {
            match act(&app, &run, &user, UserAction::Cancel, response_url).await {
                Some((_, msg)) => ephemeral(msg),
                None => ephemeral(answers::text(format!(
                    "Checking whether you may cancel `{run}`…"
                ))),
            }
        }
    }
}

fn unknown_group(app: &App, group: &crate::domain::ReplicationGroupId) -> Message {
    answers::text(format!(
        "`{group}` is not a group this bot manages. Managed groups: {}. (A group is managed once the bot's config has a `[groups.{group}]` table.)",
        app.managed_groups()
    ))
}

fn already_active(run: &crate::workflow::run::Run) -> Message {
    let link = run
        .message
        .as_ref()
        .and_then(|m| m.permalink.as_deref())
        .map(|u| format!(" — <{u}|see its thread>"))
        .unwrap_or_default();
    answers::text(format!(
        "{} already has an active run: `{}` ({}){link}. Only one run per group at a time.",
        run.group,
        run.id,
        crate::slack::blocks::describe_state(&run.state)
    ))
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "internal error answering Slack");
    ephemeral(answers::text(
        "Something went wrong on my side; it is in the bot's log. Please try again.",
    ))
}

/// Decide on a person's action. With the approver check answerable from the cache this is a
/// store transaction and the answer comes back now; otherwise the check (a Slack call) and the
/// decision happen in the background and the answer goes to `response_url` (`None` here).
///
/// The answer says whether the action was accepted, and what to tell the person.
async fn act(
    app: &App,
    run: &RunId,
    user: &SlackUserId,
    action: UserAction,
    response_url: Option<String>,
) -> Option<(bool, Message)> {
    match app.approvers.cached_verdict(user) {
        Some(is_approver) => {
            let actor = Actor {
                user: user.clone(),
                is_approver,
            };
            Some(outcome_message(run, app.act_as(run, actor, action).await))
        }
        None => {
            let (app, run, user) = (app.clone(), run.clone(), user.clone());
            tokio::spawn(async move {
                let (accepted, msg) = outcome_message(&run, app.act(&run, &user, action).await);
                if !accepted {
                    answer_later(&app, response_url, msg);
                }
            });
            None
        }
    }
}

fn outcome_message(
    run: &RunId,
    r: Result<Submitted, crate::workflow::runner::RunnerError>,
) -> (bool, Message) {
    let msg = match r {
        Ok(Submitted::Accepted(run)) => {
            return (
                true,
                answers::text(format!(
                    "Done: run `{}` is now {}.",
                    run.id,
                    crate::slack::blocks::describe_state(&run.state)
                )),
            );
        }
        Ok(Submitted::Rejected(why)) => answers::text(answers::rejection(&why)),
        Ok(Submitted::Ignored(why)) => answers::text(format!("Nothing changed: {why}.")),
        Err(crate::workflow::runner::RunnerError::Store(
            crate::store::StoreError::RunNotFound(_),
        )) => answers::text(format!(
            "There is no run `{run}`. `/redis runs` lists the recent ones."
        )),
        Err(e) => {
            tracing::error!(error = %e, "could not act on a run");
            answers::text(
                "Something went wrong on my side; it is in the bot's log. Please try again.",
            )
        }
    };
    (false, msg)
}

pub async fn interactions(State(app): State<App>, SlackVerified(body): SlackVerified) -> Response {
    let interaction = match interactions::parse(&body) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "malformed interaction");
            return bad_request(e.to_string());
        }
    };
    let user = interaction.user.clone();
    let response_url = interaction
        .response_url
        .clone()
        .filter(|u| app.runner.slack().is_response_url(u));
    let (run, action) = match interaction.click {
        Click::Approve(run) => (run, UserAction::Approve),
        Click::Deny(run) => (run, UserAction::Deny),
        Click::Cancel(run) => (run, UserAction::Cancel),
        Click::ChooseSize(run, t) => (run, UserAction::ChooseSize(t)),
        Click::StartAnyway(group) => {
            start_anyway(&app, &group, &user, response_url).await;
            return StatusCode::OK.into_response();
        }
        Click::Other(what) => {
            info!(user = %user, what = %what, "interaction ignored");
            return StatusCode::OK.into_response();
        }
    };
    info!(user = %user, run = %run, action = ?action, "interaction");
    // Accepted decisions show in the message and its thread; refusals are told to the person
    // who clicked, privately.
    if let Some((false, msg)) = act(&app, &run, &user, action, response_url.clone()).await {
        answer_later(&app, response_url, msg);
    }
    StatusCode::OK.into_response()
}

/// The "start anyway" button on a cooldown notice: approvers only. Answered in the background
/// (the approver check may ask Slack).
async fn start_anyway(
    app: &App,
    group: &crate::domain::ReplicationGroupId,
    user: &SlackUserId,
    response_url: Option<String>,
) {
    let (app, group, user) = (app.clone(), group.clone(), user.clone());
    tokio::spawn(async move {
        let is_approver = match app.approvers.cached_verdict(&user) {
            Some(v) => v,
            None => app.approvers.is_approver(&user).await,
        };
        if !is_approver {
            let msg = answers::text("Only approvers can start a run during the cooldown.");
            answer_later(&app, response_url, msg);
            return;
        }
        let trigger = Trigger::Command {
            user: user.clone(),
            response_url: response_url.clone(),
        };
        let msg = match app.start_run(&group, None, trigger).await {
            Ok(Started::Created(id)) => answers::text(format!("Started run `{id}` for {group}.")),
            Ok(Started::AlreadyActive(id)) => {
                answers::text(format!("{group} already has an active run: `{id}`."))
            }
            Err(e) => answers::text(e.to_string()),
        };
        answer_later(&app, response_url, msg);
    });
}
