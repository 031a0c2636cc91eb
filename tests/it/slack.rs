//! The Slack surface over HTTP: signed slash commands and button clicks, as Slack sends them.

use std::time::Duration;

use redis_autoscaler::domain::{RunId, Secret, Timestamp};
use redis_autoscaler::slack::signature;
use redis_autoscaler::workflow::ports::ManualClock;
use redis_autoscaler::workflow::run::{DecisionKind, State};
use redis_autoscaler::workflow::runner::RunnerOptions;
use serde_json::Value;
use std::sync::Arc;

use crate::support::*;

async fn post_with(
    t: &TestApp,
    path: &str,
    body: &str,
    ts: Option<&str>,
    sig: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(t.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string());
    if let Some(ts) = ts {
        req = req.header("X-Slack-Request-Timestamp", ts);
    }
    if let Some(sig) = sig {
        req = req.header("X-Slack-Signature", sig);
    }
    req.send().await.unwrap()
}

async fn slash(t: &TestApp, services: &Services, user: &str, text: &str) -> Value {
    let resp = post_signed(t, "/slack/commands", &slash_body(services, user, text)).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn click(
    t: &TestApp,
    services: &Services,
    user: &str,
    action: &str,
    run: &RunId,
) -> reqwest::StatusCode {
    post_signed(
        t,
        "/slack/interactions",
        &click_body(services, user, "click", button(action, run)),
    )
    .await
    .status()
}

async fn started_run(t: &TestApp) -> RunId {
    let runs = t.store.recent_runs(None, 1).await.unwrap();
    runs.first().expect("a run was started").id.clone()
}

async fn awaiting_approval(t: &TestApp, run: &RunId) {
    t.wait_for(run, "the approval message", |r| {
        matches!(r.state, State::AwaitingApproval { .. }) && r.message.is_some()
    })
    .await;
}

async fn app(defaults: &str) -> (Services, TempDir, TestApp) {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text(defaults, ""), &dir.db()).await;
    (services, dir, t)
}

#[tokio::test]
async fn bad_signatures_get_401_and_change_nothing() {
    // The bot's clock stands still half-way through a second, so the window's edges are exact.
    let now = Timestamp::now().as_secs();
    let clock = ManualClock::at(Timestamp::from_millis(now * 1000 + 500));
    let services = Services::start(sim_config()).await;
    let _dir = TempDir::new();
    let config = config_text("", "");
    let options = RunnerOptions::default();
    let t = TestApp::spawn_clocked(&services, &config, &_dir.db(), options, Arc::new(clock)).await;
    let body = slash_body(&services, ONCALL, "upsize prod-jobs");
    let good_ts = now.to_string();
    let good_sig = signature::sign(&Secret::new(SIGNING_SECRET), &good_ts, body.as_bytes());
    let tampered = body.replace("prod-jobs", "prod-jobz");
    let wrong_secret = signature::sign(&Secret::new("not-the-secret"), &good_ts, body.as_bytes());
    let stale_ts = (now - 301).to_string();
    let stale_sig = signature::sign(&Secret::new(SIGNING_SECRET), &stale_ts, body.as_bytes());
    let future_ts = (now + 301).to_string();
    let future_sig = signature::sign(&Secret::new(SIGNING_SECRET), &future_ts, body.as_bytes());
    let cases: Vec<(&str, &str, Option<&str>, Option<&str>)> = vec![
        ("tampered body", &tampered, Some(&good_ts), Some(&good_sig)),
        ("wrong secret", &body, Some(&good_ts), Some(&wrong_secret)),
        ("stale timestamp", &body, Some(&stale_ts), Some(&stale_sig)),
        (
            "future timestamp",
            &body,
            Some(&future_ts),
            Some(&future_sig),
        ),
        ("no signature", &body, Some(&good_ts), None),
        ("no timestamp", &body, None, Some(&good_sig)),
        ("no headers", &body, None, None),
    ];
    for path in ["/slack/commands", "/slack/interactions"] {
        for (name, body, ts, sig) in &cases {
            let resp = post_with(&t, path, body, *ts, *sig).await;
            assert_eq!(resp.status(), 401, "{path}: {name}");
        }
    }
    // The official vector is a real signature, but from 2018: stale today.
    let vector = include_str!("../fixtures/slack_signing_docs_vector_body.txt");
    let resp = post_with(
        &t,
        "/slack/commands",
        vector,
        Some("1531420618"),
        Some("v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
    )
    .await;
    assert_eq!(resp.status(), 401);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        t.store.recent_runs(None, 10).await.unwrap().is_empty(),
        "no run created"
    );
    assert_eq!(
        services
            .slack
            .calls()
            .iter()
            .filter(|c| c.method != "usergroups.users.list")
            .count(),
        0,
        "nothing posted"
    );
    assert!(services.slack.responses().is_empty());
    // The same request, signed properly, is accepted.
    let resp = post_with(
        &t,
        "/slack/commands",
        &body,
        Some(&good_ts),
        Some(&good_sig),
    )
    .await;
    assert_eq!(resp.status(), 200);
    t.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_and_ssl_checks_are_answered() {
    let (services, _dir, t) = app("").await;
    let big = format!("text={}", "a".repeat(70 * 1024));
    let resp = post_signed(&t, "/slack/commands", &big).await;
    assert_eq!(resp.status(), 413);
    let resp = post_with(&t, "/slack/commands", "ssl_check=1&token=abc", None, None).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().is_empty());
    assert!(t.store.recent_runs(None, 10).await.unwrap().is_empty());
    assert!(
        services
            .slack
            .calls()
            .iter()
            .all(|c| c.method == "usergroups.users.list")
    );
    t.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let (_services, _dir, t) = app("").await;
    assert_eq!(
        post_signed(&t, "/slack/commands", "text=status")
            .await
            .status(),
        400
    );
    assert_eq!(
        post_signed(&t, "/slack/interactions", "payload=%7Bnot-json")
            .await
            .status(),
        400
    );
    assert_eq!(
        post_signed(&t, "/slack/interactions", "nothing=here")
            .await
            .status(),
        400
    );
    t.stop().await;
}

#[tokio::test]
async fn help_and_unknown_commands_explain_every_command() {
    let (services, _dir, t) = app("").await;
    for text in ["", "help", "frobnicate now"] {
        let answer = slash(&t, &services, ONCALL, text).await;
        assert_eq!(answer["response_type"], "ephemeral");
        let s = answer["text"].as_str().unwrap();
        for c in [
            "/redis status",
            "/redis upsize",
            "/redis runs",
            "/redis cancel",
        ] {
            assert!(s.contains(c), "{text:?}: {s}");
        }
        if text.starts_with("frob") {
            assert!(s.starts_with("I don't know `frobnicate`"), "{s}");
        }
    }
    let usage = slash(&t, &services, ONCALL, "status").await;
    assert_eq!(usage["text"], "Usage: `/redis status <group>`");
    t.stop().await;
}

#[tokio::test]
async fn user_mistakes_get_a_short_private_answer_and_change_nothing() {
    let (services, _dir, t) = app("").await;
    let cases = [
        ("upsize nope-group", "not a group this bot manages"),
        ("status nope-group", "not a group this bot manages"),
        (
            "upsize prod-jobs cache.r6g.8xlarge",
            "above prod-jobs's cap",
        ),
        ("upsize prod-jobs huge", "not a node type"),
        ("cancel r-abcdefgh", "There is no run `r-abcdefgh`"),
        ("cancel 12", "not a run id"),
    ];
    for (text, want) in cases {
        let answer = slash(&t, &services, ONCALL, text).await;
        assert_eq!(answer["response_type"], "ephemeral", "{text}");
        let s = answer["text"].as_str().unwrap();
        assert!(s.contains(want), "{text}: {s}");
    }
    assert!(t.store.recent_runs(None, 10).await.unwrap().is_empty());
    assert_eq!(services.sim.attempts("CreateSnapshot"), 0);
    assert!(services.top_messages().is_empty());

    // A size that is no step up in the group's family is found out while planning (it needs
    // the group's type from AWS), and answered privately: nothing appears in the channel.
    let answer = slash(&t, &services, ONCALL2, "upsize prod-jobs cache.t3.small").await;
    assert!(answer["text"].as_str().unwrap().starts_with("Started run"));
    let run = started_run(&t).await;
    t.wait_done(&run).await;
    let private = answers_to(&services, &format!("cmd-{ONCALL2}"));
    assert!(
        private
            .iter()
            .any(|a| a.contains("cache.t3.small is not a larger r6g size")),
        "{private:?}"
    );
    assert!(
        services.top_messages().is_empty(),
        "no channel message for a request that can't be done"
    );
    assert!(services.pages().is_empty());

    // A second upsize while one is active is refused.
    slash(&t, &services, ONCALL2, "upsize prod-jobs").await;
    let run = started_run(&t).await;
    awaiting_approval(&t, &run).await;
    let again = slash(&t, &services, ONCALL, "upsize prod-jobs").await;
    let s = again["text"].as_str().unwrap();
    assert!(
        s.contains("already has an active run") && s.contains(run.as_str()),
        "{s}"
    );
    assert_eq!(t.store.recent_runs(None, 10).await.unwrap().len(), 2);
    t.stop().await;
}

#[tokio::test]
async fn dry_run_shows_the_plan_and_changes_nothing() {
    let (services, _dir, t) = app("").await;
    let answer = slash(&t, &services, ONCALL, "upsize prod-jobs --dry-run").await;
    assert!(answer["text"].as_str().unwrap().contains("dry run"));
    let id = format!("cmd-{ONCALL}");
    eventually("the dry run's plan", || {
        !answers_to(&services, &id).is_empty()
    })
    .await;
    let plan = answers_to(&services, &id).remove(0);
    assert!(plan.contains("nothing was changed"), "{plan}");
    assert!(
        plan.contains("`cache.r6g.large` (13.1 GiB) → `cache.r6g.xlarge`"),
        "{plan}"
    );
    assert!(plan.contains("cap `cache.r6g.2xlarge`"), "{plan}");
    assert!(plan.contains("Cooldown"), "{plan}");
    assert!(t.store.recent_runs(None, 10).await.unwrap().is_empty());
    assert_eq!(
        services.sim.attempts("CreateSnapshot") + services.sim.attempts("ModifyReplicationGroup"),
        0
    );
    t.stop().await;
}

#[tokio::test]
async fn status_and_runs_answer_from_the_store_and_aws() {
    let (services, _dir, t) = app("").await;
    slash(&t, &services, ONCALL2, "upsize prod-jobs").await;
    let run = started_run(&t).await;
    awaiting_approval(&t, &run).await;
    let status = slash(&t, &services, ONCALL, "status prod-jobs").await;
    let s = status["text"].as_str().unwrap();
    assert!(
        s.contains(&format!("Active run: `{run}` — waiting for approval")),
        "{s}"
    );
    assert!(s.contains("1 approval(s) required"), "{s}");
    let id = format!("cmd-{ONCALL}");
    eventually("the live status", || !answers_to(&services, &id).is_empty()).await;
    let live = answers_to(&services, &id).remove(0);
    assert!(
        live.contains("is `available` on `cache.r6g.large`"),
        "{live}"
    );
    assert!(live.contains("prod-jobs-001"), "{live}");

    let runs = slash(&t, &services, ONCALL, "runs").await;
    let s = runs["text"].as_str().unwrap();
    assert!(
        s.contains(run.as_str())
            && s.contains("waiting for approval")
            && s.contains(&format!("<@{ONCALL2}>")),
        "{s}"
    );
    t.stop().await;
}

#[tokio::test]
async fn slash_upsize_then_a_signed_approve_click_runs_to_success() {
    let (services, _dir, t) = app("").await;
    let answer = slash(&t, &services, ONCALL2, "upsize prod-jobs").await;
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains(&format!("<#{CHANNEL}>"))
    );
    let run = started_run(&t).await;
    awaiting_approval(&t, &run).await;
    let top = &services.top_messages()[0];
    let rendered = top.rendered();
    assert!(
        rendered.contains("[ Approve ]") && rendered.contains("[ Deny ]"),
        "{rendered}"
    );
    assert!(
        rendered.contains(&format!("Requested by* @{ONCALL2}")),
        "{rendered}"
    );

    assert_eq!(click(&t, &services, ONCALL, "approve", &run).await, 200);
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(services.sim.count("CreateSnapshot"), 1);
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 1);
    let top = &services.top_messages()[0];
    let rendered = top.rendered();
    assert!(
        rendered.contains(&format!("Approved by @{ONCALL} at")),
        "{rendered}"
    );
    assert!(
        !rendered.contains("[ Approve ]"),
        "buttons gone: {rendered}"
    );
    assert!(rendered.contains("Succeeded"), "{rendered}");
    let replies: Vec<String> = thread_texts(top);
    assert!(
        replies
            .first()
            .unwrap()
            .contains(&format!("Approved by <@{ONCALL}>")),
        "{replies:?}"
    );
    assert!(
        replies[replies.len() - 2].contains("Done:"),
        "then the verification: {replies:?}"
    );
    assert!(
        replies.last().unwrap().contains("memory readings"),
        "{replies:?}"
    );
    assert!(
        answers_to(&services, &format!("click-{ONCALL}")).is_empty(),
        "no private answer needed"
    );
    t.stop().await;
}

#[tokio::test]
async fn approval_matrix_over_http() {
    // Non-approver: refused privately, run unchanged, attempt audited.
    let (services, _dir, t) = app("").await;
    let run = t.alarm().await;
    awaiting_approval(&t, &run).await;
    assert_eq!(click(&t, &services, STRANGER, "approve", &run).await, 200);
    let id = format!("click-{STRANGER}");
    eventually("the refusal", || !answers_to(&services, &id).is_empty()).await;
    assert!(answers_to(&services, &id)[0].contains("Only approvers"));
    assert!(matches!(
        t.run(&run).await.state,
        State::AwaitingApproval { .. }
    ));
    assert!(
        t.store
            .audit_trail(&run)
            .await
            .unwrap()
            .iter()
            .any(|a| a.actor == STRANGER && a.kind == "rejected")
    );
    // A member of an approver user group may approve.
    assert_eq!(
        click(&t, &services, GROUP_MEMBER, "approve", &run).await,
        200
    );
    let r = t
        .wait_for(&run, "the group member's approval", |r| {
            !matches!(r.state, State::AwaitingApproval { .. })
        })
        .await;
    assert_eq!(r.decisions.last().unwrap().user.as_str(), GROUP_MEMBER);
    t.stop().await;

    // The requester may not approve their own run when self-approval is off.
    let (services, _dir, t) = app("").await;
    slash(&t, &services, ONCALL, "upsize prod-jobs").await;
    let run = started_run(&t).await;
    awaiting_approval(&t, &run).await;
    click(&t, &services, ONCALL, "approve", &run).await;
    let id = format!("click-{ONCALL}");
    eventually("the refusal", || !answers_to(&services, &id).is_empty()).await;
    assert!(answers_to(&services, &id)[0].contains("someone else has to approve"));
    assert!(matches!(
        t.run(&run).await.state,
        State::AwaitingApproval { .. }
    ));
    t.stop().await;

    // Two different people are needed with min_approvals = 2.
    let (services, _dir, t) = app("min_approvals = 2").await;
    let run = t.alarm().await;
    awaiting_approval(&t, &run).await;
    click(&t, &services, ONCALL, "approve", &run).await;
    t.wait_for(&run, "the first approval", |r| r.decisions.len() == 1)
        .await;
    click(&t, &services, ONCALL, "approve", &run).await;
    let id = format!("click-{ONCALL}");
    eventually("the refusal", || !answers_to(&services, &id).is_empty()).await;
    assert!(answers_to(&services, &id)[0].contains("already approved"));
    assert!(
        matches!(t.run(&run).await.state, State::AwaitingApproval { .. }),
        "one approval is not enough"
    );
    click(&t, &services, ONCALL2, "approve", &run).await;
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    let approvers: Vec<&str> = done.decisions.iter().map(|d| d.user.as_str()).collect();
    assert_eq!(approvers, [ONCALL, ONCALL2]);
    t.stop().await;
}

#[tokio::test]
async fn double_and_concurrent_clicks_make_exactly_one_decision() {
    let (services, _dir, t) = app("").await;
    let run = t.alarm().await;
    awaiting_approval(&t, &run).await;
    // Double clicks from one person and a deny from another, all in flight at once.
    let mut clicks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (user, action) = if i % 3 == 1 {
            (ONCALL2, "deny")
        } else {
            (ONCALL, "approve")
        };
        let body = click_body(&services, user, "click", button(action, &run));
        let ts = Timestamp::now().as_secs().to_string();
        let sig = signature::sign(&Secret::new(SIGNING_SECRET), &ts, body.as_bytes());
        let url = t.url("/slack/interactions");
        clicks.spawn(async move {
            reqwest::Client::new()
                .post(url)
                .header("X-Slack-Request-Timestamp", ts)
                .header("X-Slack-Signature", sig)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = clicks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let done = t.wait_done(&run).await;
    let decisions: Vec<DecisionKind> = done.decisions.iter().map(|d| d.kind).collect();
    assert_eq!(decisions.len(), 1, "exactly one decision: {decisions:?}");
    match decisions[0] {
        DecisionKind::Approve => {
            assert_eq!(done.state_name(), "succeeded");
            assert_eq!(services.sim.count("CreateSnapshot"), 1);
        }
        DecisionKind::Deny => {
            assert_eq!(done.state_name(), "denied");
            assert_eq!(services.sim.attempts("CreateSnapshot"), 0);
        }
        other => panic!("{other:?}"),
    }
    let rejected = t
        .store
        .audit_trail(&run)
        .await
        .unwrap()
        .iter()
        .filter(|a| a.kind == "rejected")
        .count();
    assert_eq!(rejected, 7, "every other click is refused and audited");
    t.stop().await;
}

#[tokio::test]
async fn clicks_after_deny_cancel_or_completion_are_refused() {
    for (end, by, action) in [
        ("denied", ONCALL2, "deny"),
        ("cancelled", ONCALL2, "cancel"),
        ("succeeded", ONCALL2, "approve"),
    ] {
        let (services, _dir, t) = app("").await;
        let run = t.alarm().await;
        awaiting_approval(&t, &run).await;
        click(&t, &services, by, action, &run).await;
        let done = t.wait_done(&run).await;
        assert_eq!(done.state_name(), end);
        click(&t, &services, ONCALL, "approve", &run).await;
        let id = format!("click-{ONCALL}");
        eventually("the refusal", || !answers_to(&services, &id).is_empty()).await;
        let answer = answers_to(&services, &id).remove(0);
        assert!(answer.contains("already decided"), "{end}: {answer}");
        assert_eq!(t.run(&run).await.decisions.len(), 1, "{end}: unchanged");
        t.stop().await;
    }
}

#[tokio::test]
async fn cancel_works_until_the_upsize_starts_and_explains_why_not_after() {
    let mut sim = sim_config();
    sim.snapshot_duration = Duration::from_secs(3600);
    let services = Services::start(sim).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = t.alarm().await;
    awaiting_approval(&t, &run).await;
    click(&t, &services, ONCALL, "approve", &run).await;
    // The thread offers Cancel while the snapshot runs.
    let r = t
        .wait_for(&run, "the cancel offer and the snapshot", |r| {
            r.cancel_offer.is_some() && matches!(r.state, State::Snapshotting { created: true, .. })
        })
        .await;
    let offer = r.cancel_offer.unwrap();
    let top = &services.top_messages()[0];
    let offered = top.replies.iter().find(|m| m.ts == offer).unwrap();
    assert!(
        offered.rendered().contains("[ Cancel run ]"),
        "{}",
        offered.rendered()
    );
    let answer = slash(&t, &services, ONCALL2, &format!("cancel {run}")).await;
    assert!(
        answer["text"].as_str().unwrap().contains("cancelled"),
        "{answer}"
    );
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "cancelled");
    assert_eq!(services.sim.attempts("ModifyReplicationGroup"), 0);
    let top = &services.top_messages()[0];
    let withdrawn = top.replies.iter().find(|m| m.ts == offer).unwrap();
    assert!(
        withdrawn
            .rendered()
            .contains(&format!("@{ONCALL2} cancelled the run at")),
        "{}",
        withdrawn.rendered()
    );
    assert!(
        thread_texts(top)
            .iter()
            .any(|r| r.contains("snapshot") && r.contains("kept"))
    );
    t.stop().await;

    // Once the upsize has started, cancel explains why it can't.
    let mut sim = sim_config();
    sim.modify_duration = Duration::from_secs(3600);
    let services = Services::start(sim).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = t.alarm().await;
    awaiting_approval(&t, &run).await;
    click(&t, &services, ONCALL, "approve", &run).await;
    t.wait_for(&run, "the upsize", |r| {
        matches!(
            r.state,
            State::Modifying {
                requested: true,
                ..
            }
        )
    })
    .await;
    let answer = slash(&t, &services, ONCALL, &format!("cancel {run}")).await;
    let s = answer["text"].as_str().unwrap();
    assert!(
        s.contains("Can't cancel") && s.contains("AWS can't stop a modification"),
        "{s}"
    );
    assert!(matches!(t.run(&run).await.state, State::Modifying { .. }));
    t.stop().await;
}

#[tokio::test]
async fn the_manifest_matches_the_routes_and_asks_only_for_needed_scopes() {
    let manifest = include_str!("../../manifest/slack-app.yaml");
    assert!(manifest.contains("url: REPLACE-WITH-PUBLIC-BASE-URL/slack/commands"));
    assert!(manifest.contains("request_url: REPLACE-WITH-PUBLIC-BASE-URL/slack/interactions"));
    assert!(manifest.contains("- command: /redis"));
    let scopes: Vec<&str> = manifest
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("bot:"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim_start().trim_start_matches("- "))
        .collect();
    assert_eq!(
        scopes,
        [
            "commands",
            "chat:write",
            "usergroups:read",
            "channels:history",
            "groups:history",
            // The memory graph's upload into the run's thread (files.getUploadURLExternal and
            // files.completeUploadExternal).
            "files:write"
        ]
    );
}

/// One approver picks a bigger size while another approves the message they still see: the
/// approval was for the plan as it was, and is refused; approving the new plan works.
#[tokio::test]
async fn an_approval_of_a_plan_that_changed_since_is_refused() {
    let (services, _dir, t) = app("").await;
    let run = t.alarm().await;
    awaiting_approval(&t, &run).await;
    let picker = serde_json::json!({
        "action_id": "choose_size", "block_id": format!("run:{run}:v1"), "type": "static_select",
        "selected_option": {"text": {"type": "plain_text", "text": "2xlarge"}, "value": "cache.r6g.2xlarge"},
        "action_ts": "1548426417.840180"
    });
    let body = click_body(&services, ONCALL, "pick", picker);
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    t.wait_for(&run, "the new plan", |r| r.plan().unwrap().version == 2)
        .await;

    let stale = serde_json::json!({
        "action_id": "approve", "block_id": format!("run:{run}"), "type": "button",
        "value": format!("{run}:v1"), "action_ts": "1548426417.840180",
    });
    let body = click_body(&services, ONCALL2, "stale", stale);
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    let id = format!("stale-{ONCALL2}");
    eventually("the refusal", || !answers_to(&services, &id).is_empty()).await;
    assert!(
        answers_to(&services, &id)[0].contains("The plan changed since you looked"),
        "{:?}",
        answers_to(&services, &id)
    );
    assert!(matches!(
        t.run(&run).await.state,
        State::AwaitingApproval { .. }
    ));
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.kind == "rejected" && a.detail.contains("plan version 1")),
        "{audit:?}"
    );

    // The message now shows version 2: approving that is accepted, and it goes to 2xlarge.
    let top = &services.top_messages()[0];
    assert!(
        top.rendered().contains("cache.r6g.2xlarge"),
        "{}",
        top.rendered()
    );
    let current = serde_json::json!({
        "action_id": "approve", "block_id": format!("run:{run}:v2"), "type": "button",
        "value": format!("{run}:v2"), "action_ts": "1548426417.840180",
    });
    let body = click_body(&services, ONCALL2, "current", current);
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    let modify = services
        .sim
        .calls()
        .into_iter()
        .find(|c| c.action == "ModifyReplicationGroup")
        .unwrap();
    assert_eq!(modify.param("CacheNodeType"), Some("cache.r6g.2xlarge"));
    t.stop().await;
}

/// The same signed `/redis upsize` sent again (a replay, inside the five minutes its signature
/// is good for) changes nothing — also after the first run was denied, and after a restart.
#[tokio::test]
async fn a_replayed_slash_command_is_acted_on_once_even_across_a_restart() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let config = config_text("", "");
    let t = TestApp::spawn(&services, &config, &dir.db()).await;
    let body = slash_body(&services, ONCALL, "upsize prod-jobs");
    let ts = Timestamp::now().as_secs().to_string();
    let sig = signature::sign(&Secret::new(SIGNING_SECRET), &ts, body.as_bytes());
    let first: Value = post_with(&t, "/slack/commands", &body, Some(&ts), Some(&sig))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        first["text"].as_str().unwrap().starts_with("Started run"),
        "{first}"
    );
    let run = started_run(&t).await;
    awaiting_approval(&t, &run).await;
    let deny = t
        .app
        .act(
            &run,
            &user(ONCALL2),
            redis_autoscaler::app::UserAction::Deny,
        )
        .await
        .unwrap();
    assert!(matches!(
        deny,
        redis_autoscaler::workflow::machine::Submitted::Accepted(_)
    ));
    assert_eq!(t.wait_done(&run).await.state_name(), "denied");

    let again = post_with(&t, "/slack/commands", &body, Some(&ts), Some(&sig)).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert!(
        again["text"].as_str().unwrap().contains("already handled"),
        "{again}"
    );
    assert_eq!(
        t.store.recent_runs(None, 10).await.unwrap().len(),
        1,
        "no second run"
    );
    t.stop().await;

    let t = TestApp::spawn(&services, &config, &dir.db()).await;
    let after_restart: Value = post_with(&t, "/slack/commands", &body, Some(&ts), Some(&sig))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        after_restart["text"]
            .as_str()
            .unwrap()
            .contains("already handled"),
        "{after_restart}"
    );
    assert_eq!(
        t.store.recent_runs(None, 10).await.unwrap().len(),
        1,
        "still one run"
    );
    t.stop().await;
}

/// A copy of a signed request that only reads (`/redis help`, `/redis runs`) is answered
/// again, with nothing remembered for it; a copy of a click is refused before it reaches the
/// run, so it is neither a second decision nor an audited refusal.
#[tokio::test]
async fn a_replayed_help_is_answered_again_and_a_replayed_click_changes_nothing() {
    let (services, _dir, t) = app("").await;
    for text in ["help", "runs"] {
        let body = slash_body(&services, ONCALL, text);
        let ts = Timestamp::now().as_secs().to_string();
        let sig = signature::sign(&Secret::new(SIGNING_SECRET), &ts, body.as_bytes());
        for _ in 0..2 {
            let answer: Value = post_with(&t, "/slack/commands", &body, Some(&ts), Some(&sig))
                .await
                .json()
                .await
                .unwrap();
            let text = answer["text"].as_str().unwrap();
            assert!(!text.contains("already handled"), "{answer}");
        }
    }

    let run = t.alarm().await;
    awaiting_approval(&t, &run).await;
    let body = click_body(&services, ONCALL, "click", button("approve", &run));
    let ts = Timestamp::now().as_secs().to_string();
    let sig = signature::sign(&Secret::new(SIGNING_SECRET), &ts, body.as_bytes());
    for _ in 0..3 {
        let status = post_with(&t, "/slack/interactions", &body, Some(&ts), Some(&sig))
            .await
            .status();
        assert_eq!(status, 200);
    }
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(done.decisions.len(), 1);
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        !audit.iter().any(|a| a.kind == "rejected"),
        "the copies never reached the run"
    );
    assert_eq!(services.sim.count("CreateSnapshot"), 1);
    t.stop().await;
}

/// `slack.requesters` and `slack.command_channels` in the test config's `[slack]` table.
fn with_slack_keys(config: String, keys: &str) -> String {
    config.replacen("[delivery]", &format!("{keys}\n\n[delivery]"), 1)
}

async fn slash_from(
    t: &TestApp,
    services: &Services,
    user: &str,
    channel: &str,
    text: &str,
) -> Value {
    let body = slash_body(services, user, text).replace(
        &format!("channel_id={CHANNEL}"),
        &format!("channel_id={channel}"),
    );
    let resp = post_signed(t, "/slack/commands", &body).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Only requesters start runs, only from the command channels; anyone may look.
#[tokio::test]
async fn only_requesters_start_runs_and_only_where_commands_are_accepted() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let config = with_slack_keys(
        config_text("approval = \"auto\"", ""),
        &format!("requesters = [\"{ONCALL}\", \"U0REQUEST\"]"),
    );
    let t = TestApp::spawn(&services, &config, &dir.db()).await;
    startup_checked(&services).await;
    let at_start = services.sim.attempts("DescribeReplicationGroups");
    let described = || services.sim.attempts("DescribeReplicationGroups") - at_start;

    // Someone who is no requester: refused privately, nothing asked of AWS, no run.
    let answer = slash(
        &t,
        &services,
        STRANGER,
        "upsize prod-jobs cache.r6g.2xlarge",
    )
    .await;
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains("Only requesters can start runs"), "{text}");
    // An approver who is a requester, but from a direct message: refused too.
    let answer = slash_from(&t, &services, ONCALL, "D0DIRECT1", "upsize prod-jobs").await;
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains(&format!("<#{CHANNEL}>")), "{text}");
    assert_eq!(described(), 0, "nothing was asked of AWS");
    assert!(t.store.recent_runs(None, 10).await.unwrap().is_empty());
    assert!(services.top_messages().is_empty());

    // Looking is open to anyone, anywhere.
    let answer = slash_from(&t, &services, STRANGER, "D0DIRECT1", "status prod-jobs").await;
    assert!(
        answer["text"].as_str().unwrap().contains("prod-jobs"),
        "{answer}"
    );
    let answer = slash_from(
        &t,
        &services,
        STRANGER,
        "D0DIRECT1",
        "upsize prod-jobs --dry-run",
    )
    .await;
    assert!(
        answer["text"].as_str().unwrap().contains("dry run"),
        "{answer}"
    );

    // A requester who is no approver starts a run, but on this `auto` group it still waits for
    // an approver.
    let answer = slash(&t, &services, "U0REQUEST", "upsize prod-jobs").await;
    assert!(
        answer["text"].as_str().unwrap().starts_with("Started run"),
        "{answer}"
    );
    let run = started_run(&t).await;
    let r = t
        .wait_for(&run, "the plan", |r| !matches!(r.state, State::Planning))
        .await;
    assert!(
        matches!(r.state, State::AwaitingApproval { .. }),
        "{}",
        r.state_name()
    );
    assert_eq!(services.sim.attempts("CreateSnapshot"), 0);
    t.stop().await;
}

/// After a successful upsize, `/redis upsize` waits out the cooldown like an alarm does; an
/// approver may start one anyway.
#[tokio::test]
async fn the_cooldown_holds_off_commands_too_and_an_approver_can_start_anyway() {
    let (services, _dir, t) = app("approval = \"auto\"\ncooldown = \"1h\"").await;
    let run = t.alarm().await;
    assert_eq!(t.wait_done(&run).await.state_name(), "succeeded");
    let answer = slash(&t, &services, ONCALL, "upsize prod-jobs").await;
    let text = answer["text"].as_str().unwrap();
    assert!(
        text.contains("cooldown") && text.contains(run.as_str()),
        "{text}"
    );
    assert!(
        answer["blocks"].to_string().contains("start_anyway"),
        "{answer}"
    );
    assert_eq!(
        t.store.recent_runs(None, 10).await.unwrap().len(),
        1,
        "nothing started"
    );
    let start_anyway = serde_json::json!({
        "action_id": "start_anyway", "block_id": format!("cooldown:{GROUP}"),
        "type": "button", "value": GROUP
    });
    let body = click_body(&services, ONCALL, "anyway", start_anyway);
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    eventually_async("a second run", || async {
        t.store.recent_runs(None, 10).await.unwrap().len() == 2
    })
    .await;
    t.stop().await;
}

#[tokio::test]
async fn after_a_failed_snapshot_an_approver_can_upsize_without_one_and_others_are_refused() {
    use redis_autoscaler::workflow::run::Outcome;
    let services = Services::start(sim_config()).await;
    services.sim.fail_snapshots_of(&group());
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = t.alarm().await;
    awaiting_approval(&t, &run).await;
    click(&t, &services, ONCALL, "approve", &run).await;
    let waiting = t
        .wait_for(&run, "the choice after the failed snapshot", |r| {
            matches!(r.state, State::SnapshotFailed { .. }) && r.cancel_offer.is_some()
        })
        .await;
    // The thread offers both, and says the group is untouched.
    let offer_ts = waiting.cancel_offer.clone().unwrap();
    let top = &services.top_messages()[0];
    let offer = top.replies.iter().find(|m| m.ts == offer_ts).unwrap();
    let shown = offer.rendered();
    for want in [
        "[ Upsize without a snapshot ]",
        "[ Cancel run ]",
        "was *not changed*",
    ] {
        assert!(shown.contains(want), "`{want}` missing from: {shown}");
    }
    // The page says both are possible.
    eventually("the page", || !services.pages().is_empty()).await;
    let page = &services.pages()[0];
    let summary = page["payload"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("Upsize without a snapshot") && summary.contains("Cancel"),
        "{summary}"
    );
    assert_eq!(page["payload"]["class"], "snapshot failed");
    // Someone who is not an approver is refused, privately, and nothing changes.
    click(&t, &services, STRANGER, "upsize_without_snapshot", &run).await;
    let id = format!("click-{STRANGER}");
    eventually("the refusal", || !answers_to(&services, &id).is_empty()).await;
    let answer = answers_to(&services, &id).remove(0);
    assert!(answer.contains("Only approvers"), "{answer}");
    assert!(matches!(
        t.run(&run).await.state,
        State::SnapshotFailed { .. }
    ));
    assert_eq!(services.sim.attempts("ModifyReplicationGroup"), 0);
    // An approver goes on: no second snapshot, one modify, and the page is resolved.
    click(&t, &services, ONCALL2, "upsize_without_snapshot", &run).await;
    let done = t.wait_done(&run).await;
    assert!(
        matches!(
            done.outcome(),
            Some(Outcome::Succeeded { snapshot: None, .. })
        ),
        "{:?}",
        done.state
    );
    assert_eq!(
        services.sim.attempts("CreateSnapshot"),
        1,
        "only the one that failed"
    );
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 1);
    assert_eq!(
        services.sim.group(&group()).unwrap().node_type,
        Some(nt("cache.r6g.xlarge"))
    );
    let pages = services.pages();
    assert_eq!(
        pages.last().unwrap()["event_action"],
        "resolve",
        "{pages:#?}"
    );
    let top = &services.top_messages()[0];
    let withdrawn = top.replies.iter().find(|m| m.ts == offer_ts).unwrap();
    assert!(
        withdrawn
            .rendered()
            .contains(&format!("@{ONCALL2} chose *Upsize without a snapshot*")),
        "{}",
        withdrawn.rendered()
    );
    assert!(
        top.rendered()
            .contains(&format!("No snapshot: @{ONCALL2} chose to go without one.")),
        "{}",
        top.rendered()
    );
    // Audited: who chose it, and who was refused.
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.actor == ONCALL2 && a.kind == "upsize_without_snapshot"),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|a| a.actor == STRANGER && a.kind == "rejected"),
        "{audit:#?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_approver_reads_a_runs_audit_trail_and_others_cannot() {
    let (services, _dir, t) = app("").await;
    let run = t.alarm().await;
    awaiting_approval(&t, &run).await;
    click(&t, &services, ONCALL, "approve", &run).await;
    t.wait_done(&run).await;
    let answer = slash(&t, &services, ONCALL2, &format!("runs {run}")).await;
    let blocks = answer["blocks"].as_array().unwrap();
    let shown: Vec<&str> = blocks
        .iter()
        .map(|b| b["text"]["text"].as_str().unwrap())
        .collect();
    let all = shown.join("\n");
    assert!(
        all.contains(&format!("Audit trail of run `{run}`")),
        "{all}"
    );
    for want in [
        "created",
        "approve",
        "CreateSnapshot",
        "ModifyReplicationGroup",
    ] {
        assert!(all.contains(want), "`{want}` missing: {all}");
    }
    assert!(
        shown.iter().all(|s| s.chars().count() <= 3000),
        "each section fits Slack's limit"
    );
    let answer = slash(&t, &services, STRANGER, &format!("runs {run}")).await;
    let said = answer["text"].as_str().unwrap();
    assert!(said.contains("Only approvers"), "{said}");
    assert!(!said.contains("CreateSnapshot"), "{said}");
    let answer = slash(&t, &services, ONCALL, "runs r-k3m9x2qa").await;
    assert!(
        answer["text"].as_str().unwrap().contains("There is no run"),
        "{answer}"
    );
    t.stop().await;
}

/// A `view_submission` form body: `user` submitting the denial modal for `run` with `reason`.
fn denial_submission(user: &str, run: &RunId, reason: &str) -> String {
    let n = Timestamp::now().as_millis();
    let payload = serde_json::json!({
        "type": "view_submission",
        "team": { "id": "T0TEAM", "domain": "ops" },
        "user": { "id": user, "username": "someone", "team_id": "T0TEAM" },
        "api_app_id": "A0APP",
        "trigger_id": format!("{n}.view.test"),
        "view": {
            "id": "V0STANDIN0001", "type": "modal", "callback_id": "denial_reason",
            "private_metadata": run.as_str(),
            "state": { "values": { "reason": { "reason": { "type": "plain_text_input", "value": reason } } } }
        }
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

#[tokio::test]
async fn whoever_denied_a_run_can_say_why_and_it_is_shown_in_the_thread() {
    let (services, _dir, t) = app("").await;
    let run = t.alarm().await;
    awaiting_approval(&t, &run).await;
    click(&t, &services, ONCALL2, "deny", &run).await;
    t.wait_done(&run).await;
    let top = &services.top_messages()[0];
    let denial = top
        .replies
        .iter()
        .find(|r| r.text.contains("Denied by"))
        .expect("the denial's reply");
    assert!(
        denial.rendered().contains("[ Add a reason ]"),
        "{}",
        denial.rendered()
    );
    // Someone else is told who can; no modal.
    click(&t, &services, ONCALL, "add_denial_reason", &run).await;
    let id = format!("click-{ONCALL}");
    eventually("the refusal", || !answers_to(&services, &id).is_empty()).await;
    assert!(
        answers_to(&services, &id)[0].contains(&format!("Only <@{ONCALL2}>")),
        "{:?}",
        answers_to(&services, &id)
    );
    assert!(services.slack.views().is_empty());
    // The denier gets the modal, for this run.
    click(&t, &services, ONCALL2, "add_denial_reason", &run).await;
    let views = services.slack.views();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].view["callback_id"], "denial_reason");
    assert_eq!(views[0].view["private_metadata"], run.as_str());
    assert!(!views[0].trigger_id.is_empty());
    // Someone else's submission shows the refusal under the input and changes nothing.
    let resp = post_signed(
        &t,
        "/slack/interactions",
        &denial_submission(ONCALL, &run, "not mine to say"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["response_action"], "errors", "{body}");
    assert!(
        body["errors"]["reason"].as_str().unwrap().contains("Only"),
        "{body}"
    );
    assert_eq!(t.run(&run).await.denial_reason, None);
    // The denier's: closes the modal, and the thread and the message say why.
    let resp = post_signed(
        &t,
        "/slack/interactions",
        &denial_submission(ONCALL2, &run, "change freeze <until> Monday"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        "",
        "an empty 200 closes the modal"
    );
    t.wait_for(&run, "the reason", |r| r.denial_reason.is_some())
        .await;
    eventually("the thread to say why", || {
        thread_texts(&services.top_messages()[0])
            .iter()
            .any(|r| r.contains("denied it because: “change freeze &lt;until&gt; Monday”"))
    })
    .await;
    eventually("the message to say why", || {
        serde_json::to_string(&services.top_messages()[0].blocks)
            .unwrap()
            .contains("“change freeze &lt;until&gt; Monday”")
    })
    .await;
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.actor == ONCALL2 && a.kind == "denial_explained"),
        "{audit:#?}"
    );
    t.stop().await;
}
