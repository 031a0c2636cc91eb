//! `POST /slack/commands` and `POST /slack/interactions`.
//!
//! Every request passes through [`SlackVerified`], an extractor that reads the raw body (with
//! a size limit) and checks Slack's signature before any handler sees a byte of it; a handler
//! can't skip it because it is the only way to get the body. Handlers then parse, call one use
//! case and render its answer, within Slack's 3 seconds: what takes longer is a job whose
//! answer goes to `response_url`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::{info, warn};

use crate::app::{Answer, Asker, UserAction};
use crate::domain::{ChannelId, SlackUserId};
use crate::slack::Message;
use crate::slack::answers::{self, render};
use crate::slack::api::is_response_url;
use crate::slack::commands::{self, Command, SlashForm};
use crate::slack::interactions::{self, Click};
use crate::slack::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use super::Http;

/// Slack's payloads are small; anything much bigger is not from Slack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body Slack signed. The only way to get one is [`FromRequest`], which verifies.
pub struct SlackVerified {
    pub body: Bytes,
    /// What recognises a copy of this request (its signature).
    replay_key: String,
}

impl FromRequest<Http> for SlackVerified {
    type Rejection = Response;

    async fn from_request(req: Request, http: &Http) -> Result<Self, Response> {
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
        let Some(secret) = http.app.config.secrets.slack_signing_secret.as_ref() else {
            warn!("refused a Slack request: SLACK_SIGNING_SECRET is not set");
            return Err((StatusCode::UNAUTHORIZED, "invalid signature\n").into_response());
        };
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let now = http.app.now();
        let signed = header(SIGNATURE_HEADER);
        let checked = signature::verify(
            secret,
            header(TIMESTAMP_HEADER),
            signed,
            &bytes,
            now.as_secs(),
        );
        if let Err(e) = checked {
            warn!(path = %parts.uri.path(), reason = %e, "refused a Slack request");
            return Err((StatusCode::UNAUTHORIZED, "invalid signature\n").into_response());
        }
        let replay_key = format!("slack:{}", signed.unwrap_or_default());
        Ok(SlackVerified {
            body: bytes,
            replay_key,
        })
    }
}

impl SlackVerified {
    /// A signed request that acts (starts, cancels or clicks) is acted on once: a copy sent
    /// again within the signature's window (a replay) changes nothing, whenever it comes, on
    /// any replica. The answer for a copy is `Err`. Reading requests (`help`, `runs`) skip
    /// this: answering a copy again changes nothing, and it keeps their ack off the disk.
    async fn first_time(&self, http: &Http, path: &str) -> Result<(), Response> {
        match http
            .app
            .store
            .remember_request(&self.replay_key, http.app.now(), REPLAY_WINDOW)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => {
                warn!(path, "refused a replayed Slack request");
                let answer = answers::text("This request was already handled; nothing changed.");
                Err(match path {
                    "/slack/commands" => ephemeral(answer),
                    _ => StatusCode::OK.into_response(),
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "could not check a Slack request for a replay");
                Err(StatusCode::INTERNAL_SERVER_ERROR.into_response())
            }
        }
    }
}

/// How long a signed request is remembered: longer than the five minutes a signature is
/// accepted for, so any replay that passes the signature check is recognised.
const REPLAY_WINDOW: std::time::Duration = std::time::Duration::from_secs(10 * 60);

fn is_ssl_check(body: &[u8]) -> bool {
    // Looked at before the signature check, for every request: no copy of the body unless
    // it could be one.
    let mentions = body.windows(b"ssl_check".len()).any(|w| w == b"ssl_check");
    mentions
        && serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
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

fn answer(a: Answer) -> Response {
    ephemeral(render(&a))
}

fn bad_request(why: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, format!("{}\n", why.into())).into_response()
}

/// The `response_url` Slack gave, if it is one we may answer on.
fn usable(http: &Http, url: Option<String>) -> Option<String> {
    url.filter(|u| is_response_url(u, &http.app.config.endpoints.slack_api_url))
}

pub async fn commands(State(http): State<Http>, verified: SlackVerified) -> Response {
    let form = match SlashForm::parse(&verified.body) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let Ok(user) = SlackUserId::parse(&form.user_id) else {
        return bad_request("user_id is not a Slack user id");
    };
    let name = &http.app.config.slack.command;
    let response_url = usable(&http, form.response_url.clone());
    let command = match commands::parse(&form.text, name) {
        Ok(c) => c,
        Err(usage) => {
            info!(user = %user, command = %form.command, text = %form.text, "slash command misused");
            return ephemeral(answers::text(usage.0));
        }
    };
    // What acts is logged for people to follow; `help` and `runs` only at debug, so that a
    // flood of them costs no log line each.
    if command.acts() {
        info!(user = %user, command = %form.command, text = %form.text, "slash command");
    } else {
        tracing::debug!(user = %user, command = %form.command, text = %form.text, "slash command");
    }
    let app = &http.app;
    if command.acts()
        && let Err(copy) = verified.first_time(&http, "/slack/commands").await
    {
        return copy;
    }
    answer(match command {
        Command::Help { unknown } => {
            return ephemeral(answers::text(commands::help_text(name, unknown.as_deref())));
        }
        Command::Runs => app.runs().await,
        Command::Audit { run } => app.audit(&user, &run).await,
        Command::Status { group } => app.status(&group, response_url).await,
        Command::Upsize {
            group,
            node_type,
            dry_run,
        } => {
            let channel = ChannelId::parse(&form.channel_id).ok();
            let asker = Asker {
                user: user.clone(),
                channel,
                response_url,
            };
            app.upsize(asker, &group, node_type, dry_run).await
        }
        Command::Cancel { run } => app.cancel(&user, &run, response_url).await,
    })
}

pub async fn interactions(State(http): State<Http>, verified: SlackVerified) -> Response {
    if let Err(copy) = verified.first_time(&http, "/slack/interactions").await {
        return copy;
    }
    let interaction = match interactions::parse(&verified.body) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "malformed interaction");
            return bad_request(e.to_string());
        }
    };
    let user = interaction.user.clone();
    let response_url = usable(&http, interaction.response_url.clone());
    let (run, action) = match interaction.click {
        Click::Approve(run) => (run, UserAction::Approve),
        Click::ApprovePending(run) => (run, UserAction::ApprovePending),
        Click::Deny(run) => (run, UserAction::Deny),
        Click::Cancel(run) => (run, UserAction::Cancel),
        Click::UpsizeWithoutSnapshot(run) => (run, UserAction::UpsizeWithoutSnapshot),
        Click::ChooseSize(run, t) => (run, UserAction::ChooseSize(t)),
        Click::StartAnyway(group) => {
            info!(user = %user, group = %group, "start anyway");
            return acknowledged(http.app.start_anyway(&user, &group, response_url).await);
        }
        Click::Replan(group) => {
            info!(user = %user, group = %group, "plan again");
            let asker = Asker {
                user,
                channel: interaction.channel.clone(),
                response_url,
            };
            return acknowledged(http.app.replan(asker, &group).await);
        }
        Click::ExplainDenial(run) => {
            return explain_denial(&http, &user, &run, interaction.trigger_id, response_url).await;
        }
        Click::DenialReason(run, reason) => {
            info!(user = %user, run = %run, "denial reason");
            return match http.app.explain_denial(&user, &run, reason).await {
                // The modal shows the refusal under its input; anything else closes it.
                Ok(crate::workflow::machine::Submitted::Rejected(why)) => {
                    axum::Json(serde_json::json!({
                        "response_action": "errors",
                        "errors": { interactions::DENIAL_INPUT: answers::rejection(&why) },
                    }))
                    .into_response()
                }
                Ok(_) => StatusCode::OK.into_response(),
                Err(e) => {
                    tracing::error!(error = %e, "could not take in a denial's reason");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            };
        }
        Click::Other(what) => {
            info!(user = %user, what = %what, "interaction ignored");
            return StatusCode::OK.into_response();
        }
    };
    info!(user = %user, run = %run, action = ?action, "interaction");
    let version = interaction.plan_version;
    acknowledged(
        http.app
            .click(&user, &run, action, version, response_url)
            .await,
    )
}

/// "Add a reason" under a denial: the modal that asks why, for the person who denied the run
/// (anyone else is told privately who can). A modal that can't be opened (the click's 3
/// seconds passed, Slack refused) is logged; the denial stands without a reason.
async fn explain_denial(
    http: &Http,
    user: &crate::domain::SlackUserId,
    run: &crate::domain::RunId,
    trigger_id: Option<String>,
    response_url: Option<String>,
) -> Response {
    let found = match http.app.denial_to_explain(user, run, response_url).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "could not look up the denied run");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let (Some(denied), Some(trigger), Some(slack)) = (found, trigger_id, http.slack.as_ref())
    else {
        return StatusCode::OK.into_response();
    };
    let view = crate::slack::blocks::render_denial_modal(&denied);
    // Slack wants the click answered within 3 s, and the trigger is dead after that anyway.
    let opened = tokio::time::timeout(
        std::time::Duration::from_millis(2_500),
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
    StatusCode::OK.into_response()
}

/// Slack wants a 200 for a click; what came of it shows in the run's message or a private
/// answer. Only a failure to take the click in at all is a 500 (Slack shows the person an
/// error).
fn acknowledged(taken: Result<(), crate::app::AppError>) -> Response {
    match taken {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not take in a click");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
