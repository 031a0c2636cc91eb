//! Cost on the card (issue 14): the on-demand prices of the current and target node type, read
//! from the simulator's AWS Price List (GetProducts) when the run is planned, on the plan card
//! with the monthly delta, and each size choice's delta in the picker; "unknown" (and why) when
//! the Price List refuses or throttles, which never stops the run. A second plan the same day
//! reads nothing again.

use redis_autoscaler::domain::RunId;
use redis_autoscaler::workflow::cost::monthly;
use redis_autoscaler::workflow::run::{Outcome, State};

use crate::support::*;

/// An alarm's run on `t`, once its card is posted.
async fn planned(services: &Services, t: &TestApp) -> RunId {
    let run = t.alarm().await;
    t.wait_for(&run, "the plan", |r| {
        matches!(r.state, State::AwaitingApproval { .. }) && r.message.is_some()
    })
    .await;
    eventually("the card", || {
        services
            .top_messages()
            .iter()
            .any(|m| m.rendered().contains("💵"))
    })
    .await;
    run
}

/// The card's cost line (of the latest card).
fn cost_line(services: &Services) -> String {
    let card = services.top_messages().last().unwrap().rendered();
    card.lines()
        .find(|l| l.contains("💵"))
        .unwrap_or_else(|| panic!("no cost line on the card:\n{card}"))
        .to_string()
}

/// The size picker's options on the latest card: (value, description).
fn picker(services: &Services) -> Vec<(String, String)> {
    let message = services.top_messages().last().unwrap().message();
    let select = message
        .blocks
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap().clone())
        .find(|e| e["type"] == "static_select")
        .expect("a size picker");
    select["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["value"].as_str().unwrap().to_string(),
                o["description"]["text"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The simulator's table (us-east-1, Redis): what the card must say.
const LARGE: f64 = 0.206;
const XLARGE: f64 = 0.411;
const XXLARGE: f64 = 0.821;

fn whole(x: f64) -> String {
    format!("{:.0}", x.abs())
}

#[tokio::test]
async fn the_card_shows_both_prices_the_monthly_delta_and_each_choices_delta_read_once_a_day() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = planned(&services, &t).await;
    let plan = t.run(&run).await.plan().unwrap().clone();
    let nodes = plan.members;
    assert!(nodes >= 2, "{plan:?}");

    let line = cost_line(&services);
    let expected = format!(
        "💵 `cache.r6g.large` $0.206/h → `cache.r6g.xlarge` $0.411/h per node; {nodes} node(s): \
         ${} → ${} a month (+${}), on demand in us-east-1",
        whole(monthly(LARGE, nodes)),
        whole(monthly(XLARGE, nodes)),
        whole(monthly(XLARGE, nodes) - monthly(LARGE, nodes)),
    );
    assert_eq!(line, expected);
    assert_eq!(
        picker(&services),
        [
            (
                "cache.r6g.xlarge".to_string(),
                format!(
                    "+${}/mo ({nodes} node(s))",
                    whole(monthly(XLARGE - LARGE, nodes))
                )
            ),
            (
                "cache.r6g.2xlarge".to_string(),
                format!(
                    "+${}/mo ({nodes} node(s))",
                    whole(monthly(XXLARGE - LARGE, nodes))
                )
            ),
        ]
    );
    // One GetProducts per type (the current one and the two choices within the cap), each
    // for the group's region and Redis, and the reads in the run's audit trail.
    let calls: Vec<_> = services
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.action == "GetProducts")
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    let mut types = Vec::new();
    for c in &calls {
        assert_eq!(c.params["ServiceCode"], "AmazonElastiCache");
        assert_eq!(c.params["FormatVersion"], "aws_v1");
        let filters: serde_json::Value = serde_json::from_str(&c.params["Filters"]).unwrap();
        let term = |field: &str| {
            let f = filters
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["Field"] == field)
                .unwrap_or_else(|| panic!("no {field} filter: {filters}"));
            assert_eq!(f["Type"], "TERM_MATCH", "{filters}");
            f["Value"].as_str().unwrap().to_string()
        };
        assert_eq!(term("regionCode"), "us-east-1");
        assert_eq!(term("cacheEngine"), "Redis");
        types.push(term("instanceType"));
    }
    types.sort();
    assert_eq!(
        types,
        ["cache.r6g.2xlarge", "cache.r6g.large", "cache.r6g.xlarge"]
    );
    let audit = t.store.audit_trail(&run).await.unwrap();
    let read = audit
        .iter()
        .find(|a| a.kind == "GetProducts")
        .expect("the prices in the audit trail");
    assert!(
        read.detail.contains("cache.r6g.large $0.206/h")
            && read.detail.contains("cache.r6g.2xlarge $0.821/h"),
        "{}",
        read.detail
    );

    // Denied, and planned again the same day: the card has its prices, and nothing is read.
    let body = click_body(&services, ONCALL, "deny", button("deny", &run));
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    let done = t.wait_done(&run).await;
    assert!(
        matches!(done.outcome(), Some(Outcome::Denied { .. })),
        "{:?}",
        done.state
    );
    let again = planned(&services, &t).await;
    assert_ne!(again, run);
    assert_eq!(cost_line(&services), expected);
    assert_eq!(services.sim.count("GetProducts"), 3, "cached for a day");
    t.stop().await;
}

#[tokio::test]
async fn when_the_price_list_refuses_the_card_says_unknown_and_the_run_still_succeeds() {
    let services = Services::start(sim_config()).await;
    services.sim.deny_action("GetProducts");
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = planned(&services, &t).await;
    let line = cost_line(&services);
    assert!(
        line.starts_with(
            "💵 Cost: unknown (no permission to read the AWS Price List (AccessDeniedException): "
        ) && line.contains("pricing:GetProducts"),
        "{line}"
    );
    assert!(
        picker(&services).iter().all(|(_, d)| d == "price unknown"),
        "{:?}",
        picker(&services)
    );
    let body = click_body(&services, ONCALL, "approve", button("approve", &run));
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    let done = t.wait_done(&run).await;
    assert!(
        matches!(done.outcome(), Some(Outcome::Succeeded { .. })),
        "{:?}",
        done.state
    );
    assert_eq!(
        services.sim.group(&group()).unwrap().node_type,
        Some(nt("cache.r6g.xlarge"))
    );
    t.stop().await;
}

#[tokio::test]
async fn a_throttled_price_list_is_unknown_for_now_and_pricing_off_reads_nothing() {
    let services = Services::start(sim_config()).await;
    services.sim.throttle_action("GetProducts");
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    planned(&services, &t).await;
    let line = cost_line(&services);
    assert!(
        line.starts_with(
            "💵 Cost: unknown (the AWS Price List did not answer this time (ThrottlingException)"
        ),
        "{line}"
    );
    t.stop().await;

    // `[pricing] enabled = false`: no cost line, no call.
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let text = format!("{}\n[pricing]\nenabled = false\n", config_text("", ""));
    let t = TestApp::spawn(&services, &text, &dir.db()).await;
    let run = t.alarm().await;
    t.wait_for(&run, "the plan", |r| {
        matches!(r.state, State::AwaitingApproval { .. }) && r.message.is_some()
    })
    .await;
    eventually("the card", || !services.top_messages().is_empty()).await;
    let card = services.top_messages()[0].rendered();
    assert!(!card.contains("💵"), "{card}");
    assert_eq!(services.sim.count("GetProducts"), 0);
    assert_eq!(t.run(&run).await.plan().unwrap().prices, None);
    t.stop().await;
}
