//! Foresight on the card (issue 14): the memory trend over the group's `forecast_window`, read
//! from the simulator's CloudWatch when the run is planned, on the plan card and in
//! `/redis status` — "full in ~N min" for a rising curve, "steady" for a flat one, "unknown"
//! (and why) when it can't be read, which never stops the plan.

use redis_autoscaler::domain::{CacheClusterId, RunId, Timestamp};
use redis_autoscaler::elasticache::sim::MemoryCurve;
use redis_autoscaler::workflow::run::State;

use crate::support::*;

fn node(n: u32) -> CacheClusterId {
    CacheClusterId::parse(&format!("{GROUP}-00{n}")).unwrap()
}

fn minutes_ago(m: i64) -> Timestamp {
    Timestamp::from_millis(Timestamp::now().as_millis() - m * 60_000)
}

/// `start` percent an hour ago, then `per_min` more every minute until now (a step a minute,
/// as CloudWatch's one reading a minute sees it).
fn rising(start: f64, per_min: f64) -> MemoryCurve {
    (0..=60).fold(MemoryCurve::constant(start), |c, i| {
        c.then(minutes_ago(60 - i), start + per_min * i as f64)
    })
}

/// An alarm's run on a fresh app with `curve` on both nodes, once it waits for approval: the
/// app, its services and the run.
async fn planned_with(curve: MemoryCurve, group_keys: &str) -> (Services, TempDir, TestApp, RunId) {
    let services = Services::start(sim_config()).await;
    for n in [1, 2] {
        services.sim.set_memory(&node(n), curve.clone());
    }
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", group_keys), &dir.db()).await;
    let run = t.alarm().await;
    t.wait_for(&run, "the plan", |r| {
        matches!(r.state, State::AwaitingApproval { .. })
    })
    .await;
    eventually("the card", || !services.top_messages().is_empty()).await;
    (services, dir, t, run)
}

/// The card's line about the memory trend.
fn card_line(services: &Services) -> Option<String> {
    let card = services.top_messages()[0].rendered();
    card.lines()
        .find(|l| l.contains("over the last") || l.contains("Memory trend"))
        .map(str::to_string)
}

async fn status_text(t: &TestApp, services: &Services) -> String {
    let body = slash_body(services, ONCALL, &format!("status {GROUP}"));
    let resp = post_signed(t, "/slack/commands", &body).await;
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    v["text"].as_str().unwrap().to_string()
}

/// The number of minutes in "full in ~N min".
fn full_in_minutes(line: &str) -> u64 {
    let after = line.split("full in ~").nth(1).expect("full in ~");
    let n = after.split(" min").next().unwrap();
    n.parse().unwrap_or_else(|_| panic!("{line}"))
}

#[tokio::test]
async fn a_rising_curve_says_when_the_group_is_full_on_the_card_and_in_status() {
    // 40 % an hour ago, +0.8 %/min: 88 % now, full in about 15 minutes.
    let (services, _dir, t, run) = planned_with(rising(40.0, 0.8), "").await;
    let line = card_line(&services).expect("a trend line on the card");
    assert!(
        line.starts_with("📈 At this rate (+0.8 %/min over the last 1h;"),
        "{line}"
    );
    let minutes = full_in_minutes(&line);
    assert!((13..=17).contains(&minutes), "{line}");
    let plan = t.run(&run).await;
    let forecast = plan.plan().unwrap().forecast.clone().expect("a forecast");
    assert!(forecast.known().is_some(), "{forecast:?}");

    let status = status_text(&t, &services).await;
    assert!(status.contains(&format!("Active run: `{run}`")), "{status}");
    assert!(status.contains("full in ~"), "{status}");
    assert!(status.contains("when the run was planned"), "{status}");

    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit.iter().any(|a| a.kind == "GetMetricData"
            && a.detail
                .starts_with("memory trend over the last 1h for 2 node(s)")),
        "{audit:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_flat_curve_is_steady() {
    let (services, _dir, t, _run) = planned_with(MemoryCurve::constant(60.0), "").await;
    let line = card_line(&services).expect("a trend line on the card");
    assert!(line.starts_with("➡️ Memory steady ("), "{line}");
    assert!(line.contains("at 60 %"), "{line}");
    assert!(!line.contains("full in"), "{line}");
    let status = status_text(&t, &services).await;
    assert!(status.contains("➡️ Memory steady"), "{status}");
    t.stop().await;
}

#[tokio::test]
async fn memory_that_cannot_be_read_is_an_unknown_trend_and_the_plan_stands() {
    let services = Services::start(sim_config()).await;
    services.sim.deny_action("GetMetricData");
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = t.alarm().await;
    t.wait_for(&run, "the plan", |r| {
        matches!(r.state, State::AwaitingApproval { .. })
    })
    .await;
    eventually("the card", || !services.top_messages().is_empty()).await;
    let line = card_line(&services).expect("a trend line on the card");
    assert!(
        line.starts_with("❔ Memory trend unknown (no permission to read CloudWatch metrics"),
        "{line}"
    );
    assert!(services.pages().is_empty(), "an unknown trend pages nobody");
    t.stop().await;
}

#[tokio::test]
async fn a_zero_forecast_window_shows_no_trend() {
    let (services, _dir, t, _run) =
        planned_with(rising(40.0, 0.8), "forecast_window = \"0s\"").await;
    assert_eq!(
        card_line(&services),
        None,
        "{}",
        services.top_messages()[0].rendered()
    );
    t.stop().await;
}

/// An app whose group proposes a run when it is full within 30 minutes, looking every 50 ms,
/// with `curve` on both nodes (and no alarm).
async fn watching(curve: MemoryCurve) -> (Services, TempDir, TestApp) {
    let services = Services::start(sim_config()).await;
    for n in [1, 2] {
        services.sim.set_memory(&node(n), curve.clone());
    }
    let dir = TempDir::new();
    let mut config = config_text("", "forecast_alert = \"30m\"");
    config.push_str("\n[alarms]\nforecast_interval = \"50ms\"\n");
    let t = TestApp::spawn(&services, &config, &dir.db()).await;
    (services, dir, t)
}

async fn runs_of(t: &TestApp) -> Vec<redis_autoscaler::workflow::run::Run> {
    t.store.recent_runs(None, 10).await.unwrap()
}

#[tokio::test]
async fn a_group_filling_within_forecast_alert_gets_one_proposed_run_that_waits_for_approval() {
    use redis_autoscaler::workflow::run::Trigger;
    // 60 % an hour ago, +0.6 %/min: ~96 % now, full in ~7 min.
    let (services, _dir, t) = watching(rising(60.0, 0.6)).await;
    eventually_async("a proposed run", || async { !runs_of(&t).await.is_empty() }).await;
    let run = runs_of(&t).await.remove(0);
    assert!(
        matches!(run.trigger, Trigger::Forecast { .. }),
        "{:?}",
        run.trigger
    );
    let waiting = t
        .wait_for(&run.id, "the approval", |r| {
            matches!(r.state, State::AwaitingApproval { .. }) && r.message.is_some()
        })
        .await;
    assert!(
        waiting.decisions.is_empty(),
        "nothing is approved by itself"
    );
    let card = services.top_messages()[0].rendered();
    assert!(card.contains("memory will be full soon"), "{card}");
    assert!(card.contains("Proposed before any alarm"), "{card}");
    assert!(card.contains("[ Approve ]"), "{card}");
    // More looks while it waits propose nothing more.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(runs_of(&t).await.len(), 1, "one run, not two");
    // Denied, it is not proposed again within forecast_alert.
    let s = t
        .app
        .act(
            &run.id,
            &user(ONCALL),
            redis_autoscaler::app::requests::UserAction::Deny,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            s,
            redis_autoscaler::workflow::machine::Submitted::Accepted(_)
        ),
        "{s:?}"
    );
    t.wait_done(&run.id).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        runs_of(&t).await.len(),
        1,
        "a denied proposal holds off the next"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_steady_group_or_one_that_fills_later_gets_no_proposal() {
    for curve in [MemoryCurve::constant(70.0), rising(20.0, 0.2)] {
        let (_services, _dir, t) = watching(curve).await;
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let runs = runs_of(&t).await;
        assert!(runs.is_empty(), "{runs:?}");
        t.stop().await;
    }
}
