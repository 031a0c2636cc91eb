//! The Slack and PagerDuty clients against their local stand-ins, over real HTTP on loopback.
//! Nothing here reaches the internet.

use std::time::Duration;

use redis_autoscaler::domain::{ChannelId, MessageTs, Secret, SlackUserGroupId, SlackUserId};
use redis_autoscaler::http_client;
use redis_autoscaler::pagerduty::{
    PagerDutyClient, PdAction, PdError, PdEvent, PdPayload, Severity,
};
use redis_autoscaler::slack::Message;
use redis_autoscaler::slack::api::{SlackClient, SlackError};
use redis_autoscaler::standin::pagerduty::{FakePagerDuty, FakePagerDutyHandle};
use redis_autoscaler::standin::slack::{FakeSlack, FakeSlackHandle, Fault, SlackEvent};
use serde_json::json;

const TOKEN: &str = "xoxb-test-token";
const ROUTING_KEY: &str = FakePagerDuty::EXAMPLE_ROUTING_KEY;

fn channel() -> ChannelId {
    ChannelId::parse("C0123ABCD").unwrap()
}

fn user(id: &str) -> SlackUserId {
    SlackUserId::parse(id).unwrap()
}

async fn slack() -> (FakeSlackHandle, SlackClient) {
    let fake = FakeSlack::spawn(TOKEN).await.unwrap();
    let client = SlackClient::new(
        fake.base_url(),
        Secret::new(TOKEN),
        http_client::build(Duration::from_secs(5)),
    );
    (fake, client)
}

async fn pagerduty() -> (FakePagerDutyHandle, PagerDutyClient) {
    let fake = FakePagerDuty::spawn().await.unwrap();
    let client = PagerDutyClient::new(
        fake.url(),
        Secret::new(ROUTING_KEY),
        http_client::build(Duration::from_secs(5)),
    );
    (fake, client)
}

fn proposal() -> Message {
    Message {
        text: "prod-jobs memory 93%".into(),
        blocks: vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": "🚨 prod-jobs memory 93%"}}),
            json!({"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Approve"}, "action_id": "approve"},
                {"type": "button", "text": {"type": "plain_text", "text": "Deny"}, "action_id": "deny"}
            ]}),
        ],
    }
}

#[tokio::test]
async fn a_message_gets_a_thread_reply_an_update_and_permalinks() {
    let (fake, client) = slack().await;

    let top = client
        .post_message(&channel(), None, &proposal())
        .await
        .unwrap();
    assert_eq!(top.channel, channel());
    let reply = client
        .post_message(
            &channel(),
            Some(&top.ts),
            &Message::text("Approved by <@U0123ABCD>"),
        )
        .await
        .unwrap();
    assert!(reply.ts > top.ts, "timestamps increase");
    client
        .update_message(
            &channel(),
            &top.ts,
            &Message::text("prod-jobs: snapshotting…"),
        )
        .await
        .unwrap();

    let top_link = client.permalink(&channel(), &top.ts).await.unwrap();
    assert_eq!(
        top_link,
        format!(
            "https://example.slack.com/archives/C0123ABCD/p{}",
            top.ts.as_str().replace('.', "")
        )
    );
    let reply_link = client.permalink(&channel(), &reply.ts).await.unwrap();
    assert!(
        reply_link.ends_with(&format!("?thread_ts={}&cid=C0123ABCD", top.ts)),
        "{reply_link}"
    );

    let messages = fake.messages(&channel());
    assert_eq!(
        messages.len(),
        1,
        "the reply is in the thread, not the channel"
    );
    assert_eq!(messages[0].text, "prod-jobs: snapshotting…");
    assert!(
        messages[0].blocks.is_empty(),
        "the update removed the buttons"
    );
    assert_eq!(messages[0].edits, vec![proposal()]);
    assert_eq!(messages[0].replies.len(), 1);
    assert_eq!(
        fake.transcript(&channel()),
        "#C0123ABCD\n\n• prod-jobs: snapshotting…\n  (edited 1 time)\n    ↳ Approved by @U0123ABCD\n"
    );
}

#[tokio::test]
async fn the_client_speaks_slacks_wire_format() {
    let (fake, client) = slack().await;
    let top = client
        .post_message(&channel(), None, &proposal())
        .await
        .unwrap();
    client.permalink(&channel(), &top.ts).await.unwrap();

    let calls = fake.calls();
    assert_eq!(calls[0].method, "chat.postMessage");
    assert_eq!(calls[0].body["channel"], "C0123ABCD");
    assert_eq!(calls[0].body["unfurl_links"], false);
    assert_eq!(calls[0].body["blocks"], json!(proposal().blocks));
    assert!(calls[0].body.get("token").is_none());
    // The read method's arguments arrived as a form (the stand-in, like Slack, ignores JSON
    // arguments for it, so the permalink call above would have failed otherwise).
    assert_eq!(calls[1].method, "chat.getPermalink");
    assert_eq!(calls[1].body["message_ts"], top.ts.as_str());
    assert_eq!(fake.count("chat.postMessage"), 1);
}

#[tokio::test]
async fn usergroup_members_come_back_as_user_ids() {
    let (fake, client) = slack().await;
    let group = SlackUserGroupId::parse("S0456EFGH").unwrap();
    fake.set_usergroup(&group, vec![user("U0123ABCD"), user("W0999ZZZZ")]);

    let members = client.usergroup_members(&group).await.unwrap();
    assert_eq!(members, vec![user("U0123ABCD"), user("W0999ZZZZ")]);

    let unknown = SlackUserGroupId::parse("S0000NONE").unwrap();
    let err = client.usergroup_members(&unknown).await.unwrap_err();
    assert_eq!(err.api_error(), Some("no_such_subteam"));
}

#[tokio::test]
async fn ephemeral_messages_are_kept_per_user_and_out_of_the_channel() {
    let (fake, client) = slack().await;
    client
        .post_ephemeral(
            &channel(),
            &user("U0123ABCD"),
            &Message::text("You already approved this run."),
        )
        .await
        .unwrap();
    assert!(fake.messages(&channel()).is_empty());
    let seen = fake.ephemerals_for(&user("U0123ABCD"));
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].text, "You already approved this run.");
    assert!(fake.ephemerals_for(&user("U0999ZZZZ")).is_empty());
}

#[tokio::test]
async fn a_429_is_rate_limited_for_as_long_as_retry_after_says() {
    let (fake, client) = slack().await;
    fake.fail_next(
        "chat.postMessage",
        1,
        Fault::RateLimited {
            retry_after_secs: 7,
        },
    );

    let err = client
        .post_message(&channel(), None, &proposal())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SlackError::RateLimited {
            retry_after: Duration::from_secs(7)
        }
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    client
        .post_message(&channel(), None, &proposal())
        .await
        .unwrap();
    assert_eq!(fake.count("chat.postMessage"), 2);
    assert_eq!(fake.messages(&channel()).len(), 1);
}

#[tokio::test]
async fn ok_false_is_an_api_error_carrying_slacks_error_string() {
    let (fake, client) = slack().await;
    fake.fail_next("chat.postMessage", 1, Fault::Error("channel_not_found"));

    let err = client
        .post_message(&channel(), None, &proposal())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SlackError::Api {
            method: "chat.postMessage".into(),
            error: "channel_not_found".into()
        }
    );
    assert!(!err.is_retryable());
    assert!(fake.messages(&channel()).is_empty());
}

#[tokio::test]
async fn updating_a_message_that_does_not_exist_is_message_not_found() {
    let (_fake, client) = slack().await;
    client
        .post_message(&channel(), None, &proposal())
        .await
        .unwrap();
    let missing = MessageTs::parse("1000000000.000100").unwrap();
    let err = client
        .update_message(&channel(), &missing, &proposal())
        .await
        .unwrap_err();
    assert_eq!(err.api_error(), Some("message_not_found"));
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_invalid_auth() {
    let fake = FakeSlack::spawn(TOKEN).await.unwrap();
    let client = SlackClient::new(
        format!("{}/", fake.base_url()),
        Secret::new("xoxb-wrong"),
        http_client::build(Duration::from_secs(5)),
    );
    let err = client
        .post_message(&channel(), None, &proposal())
        .await
        .unwrap_err();
    assert_eq!(err.api_error(), Some("invalid_auth"));
    assert!(!err.is_retryable());
    assert!(fake.messages(&channel()).is_empty());
}

#[tokio::test]
async fn a_500_is_a_retryable_http_error() {
    let (fake, client) = slack().await;
    fake.fail_next("chat.update", 1, Fault::Http(500));
    let top = client
        .post_message(&channel(), None, &proposal())
        .await
        .unwrap();

    let err = client
        .update_message(&channel(), &top.ts, &Message::text("x"))
        .await
        .unwrap_err();
    assert_eq!(err, SlackError::Http { status: 500 });
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn an_unreachable_slack_is_a_retryable_transport_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = SlackClient::new(
        format!("http://127.0.0.1:{port}/api"),
        Secret::new(TOKEN),
        http_client::build(Duration::from_secs(2)),
    );
    let err = client
        .post_message(&channel(), None, &proposal())
        .await
        .unwrap_err();
    assert!(matches!(err, SlackError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn the_live_feed_shows_posts_replies_and_updates_as_they_happen() {
    let (fake, client) = slack().await;
    let mut feed = fake.subscribe();

    let top = client
        .post_message(&channel(), None, &proposal())
        .await
        .unwrap();
    let reply = client
        .post_message(
            &channel(),
            Some(&top.ts),
            &Message::text("Paused workers ✓"),
        )
        .await
        .unwrap();
    client
        .update_message(&channel(), &top.ts, &Message::text("prod-jobs: done"))
        .await
        .unwrap();

    assert_eq!(
        feed.recv().await.unwrap(),
        SlackEvent::Posted {
            channel: channel(),
            ts: top.ts.clone(),
            thread_ts: None,
            rendered: "*🚨 prod-jobs memory 93%*\n[ Approve ] [ Deny ]".into(),
        }
    );
    assert_eq!(
        feed.recv().await.unwrap(),
        SlackEvent::Posted {
            channel: channel(),
            ts: reply.ts,
            thread_ts: Some(top.ts.clone()),
            rendered: "Paused workers ✓".into(),
        }
    );
    assert_eq!(
        feed.recv().await.unwrap(),
        SlackEvent::Updated {
            channel: channel(),
            ts: top.ts,
            rendered: "prod-jobs: done".into(),
        }
    );
}

fn failure_page(run: &str) -> PdEvent {
    let mut payload = PdPayload::new(
        "prod-jobs: upsize to cache.r6g.xlarge failed",
        "redis-autoscaler",
        Severity::Critical,
    );
    payload.group = Some("prod-jobs".into());
    payload.custom_details = json!({"run": run, "step": "modify"});
    PdEvent::trigger(run, payload).with_link(
        "https://example.slack.com/archives/C0123ABCD/p1764121929000100",
        "Slack thread",
    )
}

#[tokio::test]
async fn a_trigger_then_a_resolve_are_recorded_with_the_same_dedup_key() {
    let (fake, client) = pagerduty().await;

    let accepted = client.send(&failure_page("r-k3m9x2qa")).await.unwrap();
    assert_eq!(accepted.dedup_key, "r-k3m9x2qa");
    let accepted = client.send(&PdEvent::resolve("r-k3m9x2qa")).await.unwrap();
    assert_eq!(accepted.dedup_key, "r-k3m9x2qa");

    let events = fake.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event_action"], "trigger");
    assert_eq!(events[0]["routing_key"], ROUTING_KEY);
    assert_eq!(events[0]["payload"]["severity"], "critical");
    assert_eq!(
        events[1],
        json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "r-k3m9x2qa"})
    );
    assert_eq!(
        fake.transcript(),
        "trigger     r-k3m9x2qa  critical  \"prod-jobs: upsize to cache.r6g.xlarge failed\"  \
         links: Slack thread <https://example.slack.com/archives/C0123ABCD/p1764121929000100>\n\
         resolve     r-k3m9x2qa\n"
    );
}

#[tokio::test]
async fn a_400_is_invalid_with_pagerdutys_reasons_and_not_retryable() {
    let fake = FakePagerDuty::spawn().await.unwrap();
    let client = PagerDutyClient::new(
        fake.url(),
        Secret::new("not-a-routing-key"),
        http_client::build(Duration::from_secs(5)),
    );
    let err = client.send(&failure_page("r-k3m9x2qa")).await.unwrap_err();
    match &err {
        PdError::Invalid {
            status,
            message,
            errors,
        } => {
            assert_eq!(*status, 400);
            assert_eq!(message, "Event object is invalid");
            assert!(errors.contains(
                &"Length of 'routing_key' is incorrect (should be 32 characters)".to_string()
            ));
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(fake.events().is_empty());

    let (fake, client) = pagerduty().await;
    fake.fail_next(1, 400);
    let err = client.send(&failure_page("r-k3m9x2qa")).await.unwrap_err();
    assert!(matches!(err, PdError::Invalid { status: 400, .. }));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retryable_and_nothing_is_recorded() {
    let (fake, client) = pagerduty().await;
    fake.fail_next(1, 429);
    fake.fail_next(1, 500);

    let err = client.send(&failure_page("r-k3m9x2qa")).await.unwrap_err();
    assert_eq!(err, PdError::RateLimited);
    assert!(err.is_retryable());
    let err = client.send(&failure_page("r-k3m9x2qa")).await.unwrap_err();
    assert_eq!(err, PdError::Server { status: 500 });
    assert!(err.is_retryable());
    assert!(fake.events().is_empty());

    client.send(&failure_page("r-k3m9x2qa")).await.unwrap();
    assert_eq!(
        fake.attempts(),
        3,
        "send makes exactly one request per call"
    );
    assert_eq!(fake.events().len(), 1);
    assert_eq!(fake.events()[0]["event_action"], json!(PdAction::Trigger));
}

#[tokio::test]
async fn the_routing_key_never_appears_in_debug_output() {
    let (_fake, client) = pagerduty().await;
    let shown = format!("{client:?}");
    assert!(!shown.contains(ROUTING_KEY), "{shown}");
    let (_fake, slack) = slack().await;
    assert!(!format!("{slack:?}").contains(TOKEN));
}
