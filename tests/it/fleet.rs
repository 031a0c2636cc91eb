//! Many accounts and regions from one bot: the same replication group id in two places under
//! two names, an assumed role's session credentials for the other account's calls (and their
//! refresh), and alarms from an account or region the bot doesn't manage refused with a notice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis_autoscaler::domain::{ReplicationGroupId, RunId};
use redis_autoscaler::elasticache::sdk::config_for_endpoint;
use redis_autoscaler::elasticache::sim::{self, SimConfig, SimHandle};
use redis_autoscaler::startup::PlaceSdk;
use serde_json::{Value, json};

use crate::support::*;

const EU_ACCOUNT: &str = "210987654321";
const ROLE: &str = "arn:aws:iam::210987654321:role/redis-autoscaler";
const EU_NAME: &str = "prod-jobs-eu";

/// The alarm AWS's sample describes, about `group` in `account`/`region`.
fn event_in(id: &str, group: &str, account: &str, region: &str) -> String {
    let mut v: Value = serde_json::from_str(&eventbridge_event(id, group, "ALARM", 93.2)).unwrap();
    v["account"] = json!(account);
    v["region"] = json!(region);
    v["resources"] = json!([format!(
        "arn:aws:cloudwatch:{region}:{account}:alarm:Redis memory: {group}"
    )]);
    v.to_string()
}

fn fleet_config() -> String {
    format!(
        r#"{}
[accounts.payments]
account_id = "{EU_ACCOUNT}"
role_arn = "{ROLE}"
external_id = "redis-autoscaler-test"
regions = ["eu-west-1"]

[groups.{EU_NAME}]
id = "{GROUP}"
account = "payments"
region = "eu-west-1"
max_node_type = "cache.r6g.2xlarge"
"#,
        config_text("approval = \"auto\"", "")
    )
}

/// The bot's own place (the home simulator: us-east-1, account 123456789012, which also
/// answers STS AssumeRole for the role, with sessions of `session`) and a second simulator for
/// the payments account in eu-west-1 holding a group of the same id.
async fn two_places(session: Duration) -> (Services, SimHandle) {
    let home = SimConfig {
        roles: BTreeMap::from([(ROLE.to_string(), Some("redis-autoscaler-test".to_string()))]),
        session_duration: session,
        ..sim_config()
    };
    let mut services = Services::start(home).await;
    let eu = sim::spawn(SimConfig {
        account_id: EU_ACCOUNT.to_string(),
        ..sim_config()
    })
    .await
    .unwrap();
    let eu_endpoint = eu.endpoint();
    services.places = Some(PlaceSdk {
        base: config_for_endpoint(&services.sim.endpoint()),
        endpoint: Some(Arc::new(move |place| {
            (place.region.as_deref() == Some("eu-west-1")).then(|| eu_endpoint.clone())
        })),
    });
    (services, eu)
}

fn started(answer: &Value) -> RunId {
    assert_eq!(answer["outcome"], "started", "{answer}");
    RunId::parse(answer["run_id"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn the_same_group_id_in_two_regions_upsizes_only_its_own_under_an_assumed_role() {
    let (services, eu) = two_places(Duration::from_secs(3600)).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &fleet_config(), &dir.db()).await;
    let base = t.url("");

    let (status, answer) = post_eventbridge(
        &base,
        &event_in("eu-1", GROUP, EU_ACCOUNT, "eu-west-1"),
        Some(ALARM_KEY),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let eu_run = started(&answer);
    let done = t.wait_done(&eu_run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(
        done.group.as_str(),
        EU_NAME,
        "the run is the name's, not the id's"
    );
    assert_eq!(
        eu.group(&group()).unwrap().node_type,
        Some(nt("cache.r6g.xlarge")),
        "the eu group was upsized"
    );
    assert_eq!(
        services.sim.group(&group()).unwrap().node_type,
        Some(nt("cache.r6g.large")),
        "the group of the same id at home was not touched"
    );
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 0);
    assert_eq!(services.sim.count("CreateSnapshot"), 0);

    // Every call in the other account was signed with the session the home STS handed out.
    let issued = services.sim.issued_keys();
    assert!(!issued.is_empty(), "the role was assumed");
    let eu_calls = eu.calls();
    assert!(
        eu_calls
            .iter()
            .any(|c| c.action == "ModifyReplicationGroup")
    );
    for c in &eu_calls {
        let key = c.access_key.as_deref().unwrap_or("");
        assert!(
            issued.iter().any(|k| k == key),
            "{} signed with {key:?}",
            c.action
        );
    }
    let assume = services
        .sim
        .calls()
        .into_iter()
        .find(|c| c.action == "AssumeRole")
        .unwrap();
    assert_eq!(assume.param("RoleArn"), Some(ROLE));
    assert_eq!(assume.param("ExternalId"), Some("redis-autoscaler-test"));

    // An alarm from home is the home group's, upsized at home.
    let (status, answer) = post_eventbridge(
        &base,
        &event_in("home-1", GROUP, "123456789012", "us-east-1"),
        Some(ALARM_KEY),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let home_run = started(&answer);
    let done = t.wait_done(&home_run).await;
    assert_eq!(done.group.as_str(), GROUP);
    assert_eq!(
        services.sim.group(&group()).unwrap().node_type,
        Some(nt("cache.r6g.xlarge"))
    );
    assert_eq!(
        eu.group(&group()).unwrap().node_type,
        Some(nt("cache.r6g.xlarge")),
        "one step each"
    );
    assert_eq!(eu.count("ModifyReplicationGroup"), 1);
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 1);

    // Two runs, under the two names; /redis status names the place.
    let runs = t.store.recent_runs(None, 10).await.unwrap();
    let mut groups: Vec<&str> = runs.iter().map(|r| r.group.as_str()).collect();
    groups.sort();
    assert_eq!(groups, [GROUP, EU_NAME]);
    let status = t
        .app
        .status(&ReplicationGroupId::parse(EU_NAME).unwrap(), None)
        .await;
    let shown = format!("{status:?}");
    assert!(
        shown.contains(EU_ACCOUNT) && shown.contains("eu-west-1"),
        "{shown}"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_assumed_roles_credentials_are_refreshed_before_they_expire() {
    // Sessions of 9 s: the SDK's credentials cache renews one 5–10 s (its jittered buffer)
    // before it expires.
    let (services, eu) = two_places(Duration::from_secs(9)).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &fleet_config(), &dir.db()).await;
    let eu_group = ReplicationGroupId::parse(EU_NAME).unwrap();
    // Ask the eu group's status from AWS a few times, a second or two apart.
    let mut keys = Vec::new();
    for _ in 0..4 {
        let aws = t.app.status(&eu_group, None).await;
        assert!(format!("{aws:?}").contains(EU_NAME));
        t.app.check_groups().await;
        keys.extend(eu.calls().into_iter().filter_map(|c| c.access_key));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    keys.dedup();
    let issued = services.sim.issued_keys();
    assert!(
        issued.len() >= 2,
        "a second session was asked for: {issued:?}"
    );
    assert!(
        keys.iter().all(|k| issued.contains(k)),
        "{keys:?} vs {issued:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_alarm_from_an_account_or_region_the_bot_does_not_manage_is_refused_with_a_notice() {
    let (services, eu) = two_places(Duration::from_secs(3600)).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &fleet_config(), &dir.db()).await;
    let base = t.url("");
    for (id, account, region) in [
        ("x-1", "555555555555", "us-east-1"),
        ("x-2", EU_ACCOUNT, "ap-southeast-2"),
    ] {
        let (status, answer) = post_eventbridge(
            &base,
            &event_in(id, GROUP, account, region),
            Some(ALARM_KEY),
        )
        .await;
        assert_eq!(
            (status, answer["outcome"].as_str()),
            (200, Some("foreign")),
            "{answer}"
        );
    }
    // An alarm that doesn't say where it is fits both places: refused, not guessed.
    let mut unsaid: Value =
        serde_json::from_str(&eventbridge_event("x-3", GROUP, "ALARM", 93.2)).unwrap();
    unsaid.as_object_mut().unwrap().remove("region");
    unsaid.as_object_mut().unwrap().remove("account");
    unsaid["resources"] = json!([]);
    let (status, answer) = post_eventbridge(&base, &unsaid.to_string(), Some(ALARM_KEY)).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("foreign")),
        "{answer}"
    );
    // Three notices (one per place), posted by the job worker in its own time.
    eventually("the notices", || {
        let texts: Vec<String> = services
            .top_messages()
            .iter()
            .map(|m| m.rendered())
            .collect();
        texts.iter().any(|t| t.contains("555555555555"))
            && texts.iter().any(|t| t.contains("ap-southeast-2"))
    })
    .await;
    let texts: Vec<String> = services
        .top_messages()
        .iter()
        .map(|m| m.rendered())
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("555555555555")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("ap-southeast-2")),
        "{texts:?}"
    );
    assert!(t.store.recent_runs(None, 10).await.unwrap().is_empty());
    let asked: Vec<String> = eu.calls().into_iter().map(|c| c.action).collect();
    assert!(
        asked
            .iter()
            .all(|a| a == "DescribeReplicationGroups" || a == "GetCallerIdentity"),
        "nothing but the start-up checks (whose credentials, the group there): {asked:?}"
    );
    t.stop().await;
}
