//! Hindsight (issue 14): a group whose memory stayed low over `scale_down_window` gets one
//! suggestion to go a size down, shown with its evidence and acted on only by an approver; a
//! peak at any point means none; Dismiss and Snooze hold across a restart; the memory alarm
//! withdraws a waiting suggestion.

use std::time::Duration;

use redis_autoscaler::app::requests::UserAction;
use redis_autoscaler::domain::{CacheClusterId, RunId, Timestamp};
use redis_autoscaler::elasticache::sim::{MemoryCurve, SimConfig, SimGroup};
use redis_autoscaler::workflow::machine::Submitted;
use redis_autoscaler::workflow::run::{Outcome, Run, State, Trigger};

use crate::support::*;

fn node(n: u32) -> CacheClusterId {
    CacheClusterId::parse(&format!("{GROUP}-00{n}")).unwrap()
}

fn minutes_ago(m: i64) -> Timestamp {
    Timestamp::from_millis(Timestamp::now().as_millis() - m * 60_000)
}

/// The group on `cache.r6g.xlarge` (26.3 GiB): one step down is `cache.r6g.large` (13.1 GiB).
fn sim() -> SimConfig {
    SimConfig {
        snapshot_duration: Duration::from_millis(150),
        modify_duration: Duration::from_millis(150),
        ..SimConfig::with_groups([SimGroup::new(group(), nt("cache.r6g.xlarge"))])
    }
}

/// Checked every 100 ms over a 10-minute window; suggested below 50 % of the smaller type.
fn config(extra: &str) -> String {
    let mut c = config_text(
        "",
        &format!(
            "scale_down_window = \"10m\"\nscale_down_after = \"1h\"\nscale_down_below = 50\n{extra}"
        ),
    );
    c.push_str("\n[alarms]\nscale_down_interval = \"100ms\"\n");
    c
}

/// `curve` on both nodes, read as the data's size (so it doubles on a type half as big).
async fn services_with(curve: MemoryCurve) -> Services {
    let services = Services::start(sim()).await;
    for n in [1, 2] {
        services
            .sim
            .set_memory(&node(n), curve.clone().following_upsizes());
    }
    services
}

async fn runs_of(t: &TestApp) -> Vec<Run> {
    t.store.recent_runs(None, 10).await.unwrap()
}

/// The one suggestion, once its card is up.
async fn suggestion(t: &TestApp, services: &Services) -> Run {
    eventually_async("a suggestion", || async { !runs_of(t).await.is_empty() }).await;
    let run = runs_of(t).await.remove(0);
    assert!(
        matches!(run.trigger, Trigger::ScaleDown { .. }),
        "{:?}",
        run.trigger
    );
    let run = t
        .wait_for(&run.id, "the suggestion's card", |r| {
            matches!(r.state, State::AwaitingApproval { .. }) && r.message.is_some()
        })
        .await;
    eventually("the card", || !services.top_messages().is_empty()).await;
    run
}

fn select(action_id: &str, run: &RunId, value: &str) -> serde_json::Value {
    serde_json::json!({
        "action_id": action_id, "block_id": format!("run:{run}:v1"), "type": "static_select",
        "selected_option": {"text": {"type": "plain_text", "text": value}, "value": value},
        "action_ts": "1548426417.840180"
    })
}

#[tokio::test]
async fn low_memory_over_the_window_gets_one_suggestion_and_an_approver_takes_it_one_step_down() {
    // 20 % of 26.3 GiB all window long: 40 % of the 13.1 GiB type, below the 50 % limit.
    let services = services_with(MemoryCurve::constant(20.0)).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config(""), &dir.db()).await;
    let run = suggestion(&t, &services).await;
    let card = services.top_messages()[0].rendered();
    assert!(
        card.contains("could go one size down, to cache.r6g.large"),
        "{card}"
    );
    assert!(card.contains("Suggested by the scale-down check"), "{card}");
    assert!(card.contains("memory peaked at *20 %*"), "{card}");
    assert!(card.contains("would be *40.3 %*"), "{card}");
    assert!(card.contains("[ Approve scale-down ]"), "{card}");
    // What it gives back, from the (simulated) Price List: two nodes, one size down.
    assert!(card.contains("a saving of *$"), "{card}");
    assert!(card.contains("[ Dismiss ]"), "{card}");
    assert!(card.contains("Snooze"), "{card}");
    assert!(!card.contains("[ Deny ]"), "{card}");
    let Trigger::ScaleDown { evidence, .. } = &run.trigger else {
        unreachable!()
    };
    assert_eq!(evidence.peak, 20.0);
    assert_eq!(
        evidence.since_change, None,
        "no change by the bot on record"
    );
    assert!(run.decisions.is_empty(), "nothing is approved by itself");
    // Later checks while it waits suggest nothing more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs_of(&t).await.len(), 1, "one suggestion, not two");
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 0);
    assert!(services.pages().is_empty(), "a suggestion pages nobody");

    // A stranger can't take it; an approver can.
    let body = click_body(&services, STRANGER, "approve", button("approve", &run.id));
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(t.run(&run.id).await.decisions.is_empty());
    let body = click_body(&services, ONCALL, "approve", button("approve", &run.id));
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    let done = t.wait_done(&run.id).await;
    assert!(
        matches!(
            done.outcome(),
            Some(Outcome::Succeeded { from, to, snapshot: Some(_) })
                if *from == nt("cache.r6g.xlarge") && *to == nt("cache.r6g.large")
        ),
        "{:?}",
        done.outcome()
    );
    assert_eq!(
        services.sim.group(&group()).unwrap().node_type,
        Some(nt("cache.r6g.large"))
    );
    assert_eq!(services.sim.count("CreateSnapshot"), 1);
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 1);
    // Verified against the policy's limit (100 ms of watching holds no minute of CloudWatch
    // data here, so the reading itself is the machine tests' and the demo's to show).
    let v = done.verification.clone().expect("verified");
    assert!(!v.still_high(), "{v:?}");
    assert_eq!(v.threshold, Some(75.0));
    let thread = thread_texts(&services.top_messages()[0]).join("\n");
    assert!(thread.contains("Scaling down from"), "{thread}");
    assert!(
        thread.contains("after the scale-down was suggested"),
        "{thread}"
    );
    assert!(services.pages().is_empty(), "{:?}", services.pages());
    // The change holds off the next suggestion for `scale_down_after` (and the cooldown).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(runs_of(&t).await.len(), 1);
    // But never the way back up: the memory alarm starts its run, no cooldown notice.
    let event = eventbridge_event("after-down", GROUP, "ALARM", 91.0);
    let (status, answer) = post_eventbridge(&t.url(""), &event, Some(ALARM_KEY)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "started", "{answer}");
    t.stop().await;
}

#[tokio::test]
async fn a_peak_at_any_point_in_the_window_means_no_suggestion() {
    // Low but for five minutes at 30 % (60 % on the smaller type).
    let spiky = MemoryCurve::constant(20.0)
        .then(minutes_ago(6), 30.0)
        .then(minutes_ago(1), 20.0);
    // What each check got to: the memory read, the allowed sizes only, nothing.
    for (name, curve, extra, read, listed) in [
        ("a peak", spiky, "", true, true),
        (
            "low, but scale_down off",
            MemoryCurve::constant(20.0),
            "scale_down = \"off\"",
            false,
            false,
        ),
        (
            "low, but at min_node_type",
            MemoryCurve::constant(20.0),
            "min_node_type = \"cache.r6g.xlarge\"",
            false,
            true,
        ),
    ] {
        let services = services_with(curve).await;
        let dir = TempDir::new();
        let t = TestApp::spawn(&services, &config(extra), &dir.db()).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(runs_of(&t).await.is_empty(), "{name}");
        assert_eq!(services.sim.count("GetMetricData") > 0, read, "{name}");
        assert_eq!(
            services.sim.count("ListAllowedNodeTypeModifications") > 0,
            listed,
            "{name}"
        );
        t.stop().await;
    }
}

#[tokio::test]
async fn dismiss_and_snooze_hold_across_a_restart_and_a_snooze_ends() {
    let services = services_with(MemoryCurve::constant(20.0)).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config(""), &dir.db()).await;
    let run = suggestion(&t, &services).await;
    let body = click_body(&services, ONCALL, "dismiss", button("dismiss", &run.id));
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    let done = t.wait_done(&run.id).await;
    assert!(
        matches!(done.outcome(), Some(Outcome::Dismissed { .. })),
        "{:?}",
        done.outcome()
    );
    t.stop().await;
    // A new process on the same store: still dismissed.
    let t = TestApp::spawn(&services, &config(""), &dir.db()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs_of(&t).await.len(), 1, "dismissed for scale_down_after");
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 0);
    t.stop().await;

    // Snoozed from the menu for a day: held across a restart too.
    let services = services_with(MemoryCurve::constant(20.0)).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config(""), &dir.db()).await;
    let run = suggestion(&t, &services).await;
    let forged = click_body(
        &services,
        ONCALL,
        "snooze",
        select("snooze", &run.id, "365d"),
    );
    assert_eq!(
        post_signed(&t, "/slack/interactions", &forged)
            .await
            .status(),
        400,
        "only the menu's lengths"
    );
    let body = click_body(&services, ONCALL, "snooze", select("snooze", &run.id, "1d"));
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    let done = t.wait_done(&run.id).await;
    let Some(Outcome::Snoozed { until, .. }) = done.outcome() else {
        panic!("{:?}", done.outcome())
    };
    let day = until.as_millis() - Timestamp::now().as_millis();
    assert!((86_000_000..=86_400_000).contains(&day), "{day}");
    t.stop().await;
    let t = TestApp::spawn(&services, &config(""), &dir.db()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs_of(&t).await.len(), 1, "snoozed for a day");

    // A short snooze ends, and the check suggests again.
    t.stop().await;
    let services = services_with(MemoryCurve::constant(20.0)).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config(""), &dir.db()).await;
    let run = suggestion(&t, &services).await;
    let s = t
        .app
        .act(
            &run.id,
            &user(ONCALL),
            UserAction::Snooze(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert!(matches!(s, Submitted::Accepted(_)), "{s:?}");
    t.wait_done(&run.id).await;
    eventually_async("a suggestion after the snooze", || async {
        runs_of(&t).await.len() == 2
    })
    .await;
    t.stop().await;
}

#[tokio::test]
async fn the_memory_alarm_withdraws_a_waiting_suggestion_and_starts_its_own_run() {
    let services = services_with(MemoryCurve::constant(20.0)).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config(""), &dir.db()).await;
    let run = suggestion(&t, &services).await;
    let event = eventbridge_event("alarm-1", GROUP, "ALARM", 93.0);
    let (status, answer) = post_eventbridge(&t.url(""), &event, Some(ALARM_KEY)).await;
    assert_eq!(status, 200, "{answer}");
    let withdrawn = t.wait_done(&run.id).await;
    assert!(
        matches!(withdrawn.outcome(), Some(Outcome::NothingToDo { reason }) if reason.contains("withdrawn")),
        "{:?}",
        withdrawn.outcome()
    );
    let upsize = RunId::parse(answer["run_id"].as_str().expect("the alarm's run")).unwrap();
    assert_ne!(upsize, run.id);
    let upsize = t.run(&upsize).await;
    assert!(matches!(upsize.trigger, Trigger::Alarm { .. }));
    // The alarm's delivery again (EventBridge retries): nothing more.
    let (status, _) = post_eventbridge(&t.url(""), &event, Some(ALARM_KEY)).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runs_of(&t).await.len(), 2);
    t.stop().await;
}

#[tokio::test]
async fn a_persons_upsize_withdraws_a_waiting_suggestion() {
    let services = services_with(MemoryCurve::constant(20.0)).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config(""), &dir.db()).await;
    let run = suggestion(&t, &services).await;
    let body = slash_body(&services, ONCALL, &format!("upsize {GROUP}"));
    let resp = post_signed(&t, "/slack/commands", &body).await;
    assert_eq!(resp.status(), 200);
    let withdrawn = t.wait_done(&run.id).await;
    assert!(
        matches!(withdrawn.outcome(), Some(Outcome::NothingToDo { reason }) if reason.contains("asked for an upsize")),
        "{:?}",
        withdrawn.outcome()
    );
    eventually_async("the person's run", || async {
        runs_of(&t)
            .await
            .iter()
            .any(|r| matches!(r.trigger, Trigger::Command { .. }))
    })
    .await;
    t.stop().await;
}

#[tokio::test]
async fn the_alarm_stops_an_approved_scale_down_before_its_modification() {
    // A snapshot that takes a while: the alarm comes while it is being taken.
    let services = Services::start(SimConfig {
        snapshot_duration: Duration::from_secs(3),
        ..sim()
    })
    .await;
    for n in [1, 2] {
        services
            .sim
            .set_memory(&node(n), MemoryCurve::constant(20.0).following_upsizes());
    }
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config(""), &dir.db()).await;
    let run = suggestion(&t, &services).await;
    let body = click_body(&services, ONCALL, "approve", button("approve", &run.id));
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    t.wait_for(&run.id, "the snapshot", |r| {
        matches!(r.state, State::Snapshotting { created: true, .. })
    })
    .await;
    let event = eventbridge_event("during-snapshot", GROUP, "ALARM", 92.0);
    let (status, answer) = post_eventbridge(&t.url(""), &event, Some(ALARM_KEY)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "started", "{answer}");
    let withdrawn = t.wait_done(&run.id).await;
    assert!(
        matches!(withdrawn.outcome(), Some(Outcome::NothingToDo { .. })),
        "{:?}",
        withdrawn.outcome()
    );
    assert_eq!(
        services.sim.count("ModifyReplicationGroup"),
        0,
        "the group was never moved down"
    );
    t.stop().await;
}
