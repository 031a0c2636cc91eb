//! Alarms coming in over HTTP: EventBridge and SNS, group mapping, dedup, storms, cooldown and
//! the approval policies they meet.

use std::time::Duration;

use base64::Engine;
use redis_autoscaler::domain::RunId;
use redis_autoscaler::elasticache::sim::{SimConfig, SimGroup};
use redis_autoscaler::workflow::run::State;
use serde_json::{Value, json};

use crate::support::*;

fn event(id: &str, group: &str, state: &str, value: f64) -> String {
    eventbridge_event(id, group, state, value)
}

async fn post_event(t: &TestApp, body: &str, key: Option<&str>) -> (u16, Value) {
    post_eventbridge(&t.url(""), body, key).await
}

fn run_id(answer: &Value) -> RunId {
    RunId::parse(answer["run_id"].as_str().expect("a run id")).unwrap()
}

async fn approve_over_http(t: &TestApp, services: &Services, run: &RunId) {
    t.wait_for(run, "the approval message", |r| {
        matches!(r.state, State::AwaitingApproval { .. }) && r.message.is_some()
    })
    .await;
    let body = click_body(services, ONCALL, "approve", button("approve", run));
    let resp = post_signed(t, "/slack/interactions", &body).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_eventbridge_alarm_over_http_runs_to_success_after_a_signed_approval() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let (status, answer) =
        post_event(&t, &event("e-1", GROUP, "ALARM", 93.2), Some(ALARM_KEY)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "started");
    let run = run_id(&answer);
    approve_over_http(&t, &services, &run).await;
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    let top = &services.top_messages()[0];
    assert!(
        top.rendered().contains("memory at *93.2%*"),
        "{}",
        top.rendered()
    );
    assert!(top.rendered().contains("Succeeded"));
    assert_eq!(
        services.sim.group(&group()).unwrap().node_type,
        Some(nt("cache.r6g.xlarge"))
    );
    t.stop().await;
}

#[tokio::test]
async fn eventbridge_deliveries_are_authenticated_and_validated() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let good = event("e-1", GROUP, "ALARM", 93.2);
    assert_eq!(post_event(&t, &good, None).await.0, 401);
    assert_eq!(post_event(&t, &good, Some("wrong-key")).await.0, 401);
    assert_eq!(post_event(&t, &good, Some("")).await.0, 401);
    let (status, answer) = post_event(&t, "{not json", Some(ALARM_KEY)).await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("not JSON"));
    let other = good.replace(
        "CloudWatch Alarm State Change",
        "EC2 Instance State-change Notification",
    );
    let (status, answer) = post_event(&t, &other, Some(ALARM_KEY)).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("CloudWatch Alarm State Change")
    );
    // The real sample is a CPU alarm: acknowledged and ignored.
    let sample = include_str!("../fixtures/eventbridge_cloudwatch_alarm.json");
    let (status, answer) = post_event(&t, sample, Some(ALARM_KEY)).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")));
    assert!(
        t.store.recent_runs(None, 10).await.unwrap().is_empty(),
        "nothing started"
    );
    assert!(services.top_messages().is_empty());
    t.stop().await;
}

#[tokio::test]
async fn alarms_map_to_groups_by_dimension_cluster_or_name_and_unknown_ones_are_posted() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let mapping = format!("\n[alarms]\n[alarms.groups]\n\"Jobs memory high\" = \"{GROUP}\"\n");
    let mut config = config_text("", "");
    config.push_str(&mapping);
    let t = TestApp::spawn(&services, &config, &dir.db()).await;

    // CacheClusterId → DescribeCacheClusters → the group.
    let by_cluster = event("e-cluster", GROUP, "ALARM", 91.0).replace(
        "\"ReplicationGroupId\":\"prod-jobs\"",
        "\"CacheClusterId\":\"prod-jobs-002\"",
    );
    assert!(by_cluster.contains("prod-jobs-002"));
    let (status, answer) = post_event(&t, &by_cluster, Some(ALARM_KEY)).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("started")),
        "{answer}"
    );
    // The lookup came before the run's own planning (whose preflight describes each member
    // too, possibly already by now): the first call of all, for the alarm's node.
    let calls = services.sim.calls();
    let first = calls
        .iter()
        .find(|c| c.action == "DescribeCacheClusters")
        .expect("a DescribeCacheClusters call");
    assert_eq!(
        first.param("CacheClusterId"),
        Some("prod-jobs-002"),
        "{calls:#?}"
    );
    let run = run_id(&answer);
    let cancel = redis_autoscaler::workflow::event::Event::Cancel {
        actor: redis_autoscaler::workflow::event::Actor {
            user: user(ONCALL),
            is_approver: true,
        },
    };
    t.wait_for(&run, "planning", |r| !matches!(r.state, State::Planning))
        .await;
    t.app.runner.submit(&run, cancel).await.unwrap();
    t.wait_done(&run).await;

    // An explicit mapping by alarm name.
    let by_name = event("e-name", "whatever", "ALARM", 92.0)
        .replace("Redis memory: whatever\"", "Jobs memory high\"");
    let (_, answer) = post_event(&t, &by_name, Some(ALARM_KEY)).await;
    assert_eq!(answer["outcome"], "started", "{answer}");
    let run = run_id(&answer);
    assert_eq!(t.run(&run).await.group, group());

    // A group this bot does not manage: said in the channel, logged, nothing started.
    let (_, answer) = post_event(
        &t,
        &event("e-unknown", "someone-elses", "ALARM", 99.0),
        Some(ALARM_KEY),
    )
    .await;
    assert_eq!(answer["outcome"], "unknown_group");
    let alarms = t.store.recent_alarms(10).await.unwrap();
    assert!(
        alarms
            .iter()
            .any(|a| a.delivery_id == "eventbridge:e-unknown" && a.outcome == "unknown_group"),
        "{alarms:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let notices: Vec<String> = services
            .top_messages()
            .iter()
            .map(|m| m.text.clone())
            .collect();
        if notices
            .iter()
            .any(|n| n.contains("maps to no replication group this bot manages"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no notice: {notices:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.stop().await;
}

#[tokio::test]
async fn repeats_and_clears_go_to_the_active_runs_thread_and_retries_change_nothing() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let (_, answer) = post_event(&t, &event("e-1", GROUP, "ALARM", 93.2), Some(ALARM_KEY)).await;
    let run = run_id(&answer);
    t.wait_for(&run, "the message", |r| r.message.is_some())
        .await;
    // A retry of the same delivery, then a new ALARM, then OK.
    let (_, retry) = post_event(&t, &event("e-1", GROUP, "ALARM", 93.2), Some(ALARM_KEY)).await;
    assert_eq!(retry["outcome"], "duplicate");
    let (_, again) = post_event(&t, &event("e-2", GROUP, "ALARM", 96.5), Some(ALARM_KEY)).await;
    assert_eq!(again["outcome"], "repeated");
    assert_eq!(run_id(&again), run);
    let (_, ok) = post_event(&t, &event("e-3", GROUP, "OK", 70.0), Some(ALARM_KEY)).await;
    assert_eq!(ok["outcome"], "cleared");
    let r = t
        .wait_for(&run, "the notes", |_| {
            thread_texts(&services.top_messages()[0]).len() >= 2
        })
        .await;
    assert_eq!(r.alarm_repeats, 1);
    let texts = thread_texts(&services.top_messages()[0]);
    assert!(texts[0].contains("fired again (96.5%)"), "{texts:?}");
    assert!(texts[1].contains("Alarm cleared"), "{texts:?}");
    assert_eq!(services.top_messages().len(), 1);
    assert_eq!(t.store.recent_runs(None, 10).await.unwrap().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn an_alarm_storm_yields_exactly_one_run_and_one_message_per_group() {
    let groups: Vec<String> = (0..10).map(|i| format!("storm-{i}")).collect();
    let sim = SimConfig {
        snapshot_duration: Duration::from_millis(150),
        modify_duration: Duration::from_millis(150),
        ..SimConfig::with_groups(groups.iter().map(|g| {
            SimGroup::new(
                redis_autoscaler::domain::ReplicationGroupId::parse(g).unwrap(),
                nt("cache.r6g.large"),
            )
        }))
    };
    let services = Services::start(sim).await;
    let mut config = config_text("", "");
    for g in &groups {
        config.push_str(&format!("\n[groups.{g}]\n"));
    }
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config, &dir.db()).await;
    // 1,000 deliveries: per group, 5 distinct alarm events each delivered 20 times (retries),
    // all at once.
    let client = reqwest::Client::new();
    let mut deliveries = tokio::task::JoinSet::new();
    for g in &groups {
        for e in 0..5 {
            for _ in 0..20 {
                let body = event(&format!("{g}-event-{e}"), g, "ALARM", 91.0 + e as f64);
                let req = client
                    .post(t.url("/alarms/eventbridge"))
                    .header("X-Api-Key", ALARM_KEY)
                    .body(body);
                deliveries.spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
            }
        }
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(r) = deliveries.join_next().await {
        *statuses.entry(r.unwrap().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&200), Some(&1000), "{statuses:?}");
    let runs = t.store.recent_runs(None, 100).await.unwrap();
    assert_eq!(runs.len(), 10, "exactly one run per group");
    for run in &runs {
        let r = t
            .wait_for(&run.id, "its top message", |r| r.message.is_some())
            .await;
        assert_eq!(
            r.alarm_repeats, 4,
            "{}: each distinct event counts once",
            r.group
        );
    }
    let tops = services.top_messages();
    assert_eq!(tops.len(), 10, "one top message per run");
    t.stop().await;
}

#[tokio::test]
async fn approval_timeout_escalates_and_a_late_approval_resolves_the_page() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(
        &services,
        &config_text("", "approval_timeout = \"300ms\""),
        &dir.db(),
    )
    .await;
    let (_, answer) = post_event(&t, &event("e-1", GROUP, "ALARM", 93.2), Some(ALARM_KEY)).await;
    let run = run_id(&answer);
    t.wait_for(&run, "the escalation page", |_| {
        !services.pages().is_empty()
    })
    .await;
    let pages = services.pages();
    assert_eq!(pages[0]["event_action"], "trigger");
    assert!(
        pages[0]["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("waiting for approval")
    );
    assert!(matches!(
        t.run(&run).await.state,
        State::AwaitingApproval {
            escalated: true,
            ..
        }
    ));
    approve_over_http(&t, &services, &run).await;
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    let actions: Vec<String> = services
        .pages()
        .iter()
        .map(|p| p["event_action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["trigger", "resolve"]);
    assert!(
        services
            .pages()
            .iter()
            .all(|p| p["dedup_key"] == run.as_str())
    );
    t.stop().await;
}

#[tokio::test]
async fn approve_on_timeout_proceeds_and_says_so() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let policy = "approval_timeout = \"200ms\"\non_approval_timeout = \"approve\"";
    let t = TestApp::spawn(&services, &config_text("", policy), &dir.db()).await;
    let (_, answer) = post_event(&t, &event("e-1", GROUP, "ALARM", 93.2), Some(ALARM_KEY)).await;
    let run = run_id(&answer);
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert!(done.decisions.is_empty(), "nobody clicked");
    let texts = thread_texts(&services.top_messages()[0]);
    assert!(texts[0].contains("policy approves then"), "{texts:?}");
    assert!(
        services.top_messages()[0]
            .rendered()
            .contains("Approved by policy (no decision in time)")
    );
    assert!(services.pages().is_empty());
    t.stop().await;
}

#[tokio::test]
async fn auto_approval_proceeds_at_once_and_still_posts() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(
        &services,
        &config_text("", "approval = \"auto\""),
        &dir.db(),
    )
    .await;
    let (_, answer) = post_event(&t, &event("e-1", GROUP, "ALARM", 93.2), Some(ALARM_KEY)).await;
    let run = run_id(&answer);
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    let top = &services.top_messages()[0];
    assert!(
        top.rendered().contains("Approved by policy (automatic)"),
        "{}",
        top.rendered()
    );
    assert!(thread_texts(top)[0].contains("approves automatically"));
    t.stop().await;
}

#[tokio::test]
async fn within_the_cooldown_an_alarm_posts_a_notice_with_start_anyway() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(
        &services,
        &config_text("", "approval = \"auto\"\ncooldown = \"1h\""),
        &dir.db(),
    )
    .await;
    let (_, answer) = post_event(&t, &event("e-1", GROUP, "ALARM", 93.2), Some(ALARM_KEY)).await;
    let first = run_id(&answer);
    t.wait_done(&first).await;
    let (_, answer) = post_event(&t, &event("e-2", GROUP, "ALARM", 95.0), Some(ALARM_KEY)).await;
    assert_eq!(answer["outcome"], "cooldown");
    assert_eq!(
        t.store.recent_runs(None, 10).await.unwrap().len(),
        1,
        "no new run"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let notice = loop {
        if let Some(m) = services
            .top_messages()
            .into_iter()
            .find(|m| m.text.contains("cooldown"))
        {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "no cooldown notice");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        notice.rendered().contains("[ Start a run anyway ]"),
        "{}",
        notice.rendered()
    );

    let start_anyway = json!({
        "action_id": "start_anyway", "block_id": format!("cooldown:{GROUP}"),
        "type": "button", "value": GROUP
    });
    for who in [STRANGER, ONCALL] {
        let body = click_body(&services, who, "anyway", start_anyway.clone());
        let resp = post_signed(&t, "/slack/interactions", &body).await;
        assert_eq!(resp.status(), 200);
        let id = format!("anyway-{who}");
        eventually("the answer", || {
            services.slack.responses().iter().any(|r| r.id == id)
        })
        .await;
    }
    let answers: Vec<(String, String)> = services
        .slack
        .responses()
        .into_iter()
        .map(|r| (r.id, r.text))
        .collect();
    assert!(
        answers.iter().any(
            |(id, text)| id == &format!("anyway-{STRANGER}") && text.contains("Only approvers")
        ),
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .any(|(id, text)| id == &format!("anyway-{ONCALL}") && text.contains("Started run")),
        "{answers:?}"
    );
    let runs = t.store.recent_runs(None, 10).await.unwrap();
    assert_eq!(runs.len(), 2, "the approver's start-anyway made a run");
    assert_eq!(runs[0].requested_by().map(|u| u.as_str()), Some(ONCALL));
    t.stop().await;
}

// --- SNS -----------------------------------------------------------------------------------

const TEST_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:redis-memory";
const TEST_CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem";
const SAMPLE_TOPIC: &str =
    "arn:aws:sns:us-east-2:295079676684:publish-and-verify-6e11fed2-fcdf-4c52-9dc4-36ef43f37f84";

fn sns_config() -> String {
    let mut c = config_text("", "");
    c.push_str(&format!(
        "\n[alarms]\nsns_topic_arns = [\"{TEST_TOPIC}\", \"{SAMPLE_TOPIC}\"]\n"
    ));
    c
}

/// Sign an SNS message with the test key (SignatureVersion 2, SHA256withRSA).
fn sign_sns(mut m: Value) -> Value {
    m["SignatureVersion"] = json!("2");
    m["SigningCertURL"] = json!(TEST_CERT_URL);
    m["Signature"] = json!("");
    let parsed = redis_autoscaler::alarm::sns::parse(m.to_string().as_bytes()).unwrap();
    let to_sign = redis_autoscaler::alarm::sns::string_to_sign(&parsed).unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(include_bytes!(
        "../fixtures/test_sns_signing_key.pkcs8.der"
    ))
    .unwrap();
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        to_sign.as_bytes(),
        &mut sig,
    )
    .unwrap();
    m["Signature"] = json!(base64::engine::general_purpose::STANDARD.encode(sig));
    m
}

fn alarm_notification(id: &str) -> Value {
    let inner = json!({
        "AlarmName": format!("Redis memory: {GROUP}"),
        "AlarmDescription": format!("Redis memory: {GROUP} above 90%"),
        "AWSAccountId": "123456789012",
        "NewStateValue": "ALARM",
        "NewStateReason": "Threshold Crossed: 1 out of the last 1 datapoints [94.0 (26/11/26 03:12:00)] was greater than the threshold (90.0)",
        "StateChangeTime": "2026-11-26T03:12:00.000+0000",
        "Region": "US East (N. Virginia)",
        "OldStateValue": "OK",
        "Trigger": { "MetricName": "DatabaseMemoryUsagePercentage", "Namespace": "AWS/ElastiCache",
                     "Dimensions": [{ "value": GROUP, "name": "ReplicationGroupId" }] }
    });
    json!({
        "Type": "Notification",
        "MessageId": id,
        "TopicArn": TEST_TOPIC,
        "Subject": "ALARM: \"Redis memory: prod-jobs\" in US East (N. Virginia)",
        "Message": inner.to_string(),
        "Timestamp": "2026-11-26T03:12:01.000Z",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    })
}

async fn post_sns(t: &TestApp, m: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(t.url("/alarms/sns"))
        .header("content-type", "text/plain; charset=UTF-8")
        .header(
            "x-amz-sns-message-type",
            m["Type"].as_str().unwrap_or("Notification"),
        )
        .body(m.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn sns_app() -> (Services, TempDir, TestApp) {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &sns_config(), &dir.db()).await;
    t.verifier
        .seed_certificate(
            TEST_CERT_URL,
            include_bytes!("../fixtures/test_sns_signing_cert.pem"),
        )
        .unwrap();
    let sample: Value = serde_json::from_str(include_str!(
        "../fixtures/sns_signed_notification_v1_with_subject.json"
    ))
    .unwrap();
    t.verifier
        .seed_certificate(
            sample["SigningCertURL"].as_str().unwrap(),
            include_bytes!("../fixtures/sns_signing_cert_aws_php_validator_fixture.pem"),
        )
        .unwrap();
    (services, dir, t)
}

#[tokio::test]
async fn the_real_signed_sns_message_verifies_over_http_and_tampered_ones_do_not() {
    let (services, _dir, t) = sns_app().await;
    let sample: Value = serde_json::from_str(include_str!(
        "../fixtures/sns_signed_notification_v1_with_subject.json"
    ))
    .unwrap();
    let (status, answer) = post_sns(&t, &sample).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("ignored")),
        "{answer}"
    );

    let mut tampered = sample.clone();
    tampered["Message"] = json!("Hello world, with a twist");
    assert_eq!(post_sns(&t, &tampered).await.0, 403);
    let mut unsigned = sample.clone();
    unsigned.as_object_mut().unwrap().remove("Signature");
    assert_eq!(post_sns(&t, &unsigned).await.0, 400);
    let mut bad_host = sample.clone();
    bad_host["SigningCertURL"] =
        json!("https://sns.us-east-2.amazonaws.com.attacker.example/cert.pem");
    assert_eq!(post_sns(&t, &bad_host).await.0, 403);
    let mut http_cert = sample.clone();
    http_cert["SigningCertURL"] = json!(
        "http://sns.us-east-2.amazonaws.com/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem"
    );
    assert_eq!(post_sns(&t, &http_cert).await.0, 403);
    let mut foreign = sign_sns(alarm_notification("m-foreign"));
    foreign["TopicArn"] = json!("arn:aws:sns:us-east-1:999999999999:not-ours");
    assert_eq!(post_sns(&t, &foreign).await.0, 403);
    assert!(
        t.sns.gets.lock().unwrap().is_empty(),
        "no certificate was fetched from a bad URL"
    );
    assert!(
        t.store.recent_runs(None, 10).await.unwrap().is_empty(),
        "nothing happened"
    );
    assert!(services.top_messages().is_empty());
    t.stop().await;
}

#[tokio::test]
async fn a_signed_sns_alarm_starts_a_run_and_its_retry_does_not() {
    let (services, _dir, t) = sns_app().await;
    let m = sign_sns(alarm_notification("m-1"));
    let (status, answer) = post_sns(&t, &m).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("started")),
        "{answer}"
    );
    let (_, retry) = post_sns(&t, &m).await;
    assert_eq!(retry["outcome"], "duplicate");
    let run = run_id(&answer);
    let r = t
        .wait_for(&run, "the message", |r| r.message.is_some())
        .await;
    assert_eq!(r.group, group());
    assert_eq!(services.top_messages().len(), 1);
    // Signed by our key but claiming the real AWS certificate's URL: refused.
    let mut wrong_cert = m.clone();
    wrong_cert["MessageId"] = json!("m-2");
    wrong_cert["SigningCertURL"] = json!(
        "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem"
    );
    assert_eq!(post_sns(&t, &wrong_cert).await.0, 403);
    t.stop().await;
}

#[tokio::test]
async fn subscriptions_are_confirmed_only_for_configured_topics() {
    let (_services, _dir, t) = sns_app().await;
    let confirm = |topic: &str| {
        let mut m: Value = serde_json::from_str(include_str!(
            "../fixtures/sns_subscription_confirmation.json"
        ))
        .unwrap();
        m["TopicArn"] = json!(topic);
        m["SubscribeURL"] = json!(format!(
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token=abc"
        ));
        sign_sns(m)
    };
    let (status, answer) = post_sns(&t, &confirm(TEST_TOPIC)).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("subscription_confirmed")),
        "{answer}"
    );
    let gets = t.sns.gets.lock().unwrap().clone();
    assert_eq!(gets.len(), 1);
    assert!(gets[0].starts_with("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"));
    let (status, _) = post_sns(&t, &confirm("arn:aws:sns:us-east-1:999999999999:not-ours")).await;
    assert_eq!(status, 403);
    let mut evil = confirm(TEST_TOPIC);
    evil["SubscribeURL"] = json!("https://evil.example/?Action=ConfirmSubscription");
    let evil = sign_sns(evil);
    assert_eq!(
        post_sns(&t, &evil).await.0,
        502,
        "a SubscribeURL outside SNS is not followed"
    );
    assert_eq!(t.sns.gets.lock().unwrap().len(), 1, "no further GETs");
    let mut unsubscribe: Value = serde_json::from_str(include_str!(
        "../fixtures/sns_unsubscribe_confirmation.json"
    ))
    .unwrap();
    unsubscribe["TopicArn"] = json!(TEST_TOPIC);
    let (status, answer) = post_sns(&t, &sign_sns(unsubscribe)).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("unsubscribe_noted")),
        "{answer}"
    );
    t.stop().await;
}

/// An alarm about a group of the same id in another region or account is about another group:
/// refused, said in the channel, and nothing is asked of AWS for it.
#[tokio::test]
async fn an_alarm_from_another_region_or_account_touches_nothing() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    startup_checked(&services).await;
    let before = services.sim.calls().len();
    let aws_calls = || services.sim.calls().len() - before;
    let mut eu: Value = serde_json::from_str(&event("e-eu", GROUP, "ALARM", 95.0)).unwrap();
    eu["region"] = json!("eu-west-1");
    let (status, answer) = post_event(&t, &eu.to_string(), Some(ALARM_KEY)).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("foreign")),
        "{answer}"
    );
    let mut other: Value = serde_json::from_str(&event("e-acct", GROUP, "ALARM", 95.0)).unwrap();
    other["account"] = json!("210987654321");
    let (_, answer) = post_event(&t, &other.to_string(), Some(ALARM_KEY)).await;
    assert_eq!(answer["outcome"], "foreign", "{answer}");
    assert_eq!(aws_calls(), 0, "nothing asked of AWS");
    assert!(t.store.recent_runs(None, 10).await.unwrap().is_empty());
    eventually("the notices", || {
        services
            .top_messages()
            .iter()
            .filter(|m| {
                m.text
                    .contains("but this bot manages groups in region us-east-1")
            })
            .count()
            == 2
    })
    .await;
    let alarms = t.store.recent_alarms(10).await.unwrap();
    assert!(alarms.iter().all(|a| a.outcome == "foreign"), "{alarms:?}");

    // The same alarm from the bot's own region and account starts a run.
    let (_, answer) = post_event(&t, &event("e-home", GROUP, "ALARM", 95.0), Some(ALARM_KEY)).await;
    assert_eq!(answer["outcome"], "started", "{answer}");
    t.stop().await;
}

#[tokio::test]
async fn a_throttled_cluster_lookup_refuses_the_delivery_so_that_it_comes_again_and_runs() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let by_cluster = event("e-throttled", GROUP, "ALARM", 91.0).replace(
        "\"ReplicationGroupId\":\"prod-jobs\"",
        "\"CacheClusterId\":\"prod-jobs-002\"",
    );
    services.sim.throttle_action("DescribeCacheClusters");
    let (status, answer) = post_event(&t, &by_cluster, Some(ALARM_KEY)).await;
    // Not taken: a 5xx makes EventBridge (and SNS) deliver it again. Nothing was recorded, so
    // the redelivery is not a "duplicate".
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        services.sim.attempts("DescribeCacheClusters"),
        3,
        "tried again briefly"
    );
    assert!(t.store.recent_alarms(10).await.unwrap().is_empty());
    assert!(t.store.recent_runs(None, 10).await.unwrap().is_empty());
    assert!(
        services.top_messages().is_empty(),
        "no unknown-group notice"
    );

    services.sim.unthrottle_action("DescribeCacheClusters");
    let (status, answer) = post_event(&t, &by_cluster, Some(ALARM_KEY)).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("started")),
        "{answer}"
    );
    t.stop().await;
}

/// Notices for alarms that start nothing are said once per group per window, and count the
/// repeats on that one message.
#[tokio::test]
async fn alarm_storms_for_an_unmanaged_group_or_a_cooldown_post_one_notice_each_with_a_count() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let mut config = config_text("", "approval = \"auto\"\ncooldown = \"1h\"");
    config.push_str("\n[alarms]\nnotice_window = \"1h\"\nnotice_update_delay = \"20ms\"\n");
    let t = TestApp::spawn(&services, &config, &dir.db()).await;
    let (_, answer) = post_event(&t, &event("e-1", GROUP, "ALARM", 93.2), Some(ALARM_KEY)).await;
    let first = run_id(&answer);
    t.wait_done(&first).await;
    let posts_before = services.slack.count("chat.postMessage");

    let base = t.url("");
    let storm = |prefix: &'static str, group: &'static str, n: usize| {
        let base = base.clone();
        async move {
            let mut sends = tokio::task::JoinSet::new();
            for i in 0..n {
                let (base, body) = (
                    base.clone(),
                    event(&format!("{prefix}-{i}"), group, "ALARM", 95.0),
                );
                sends.spawn(async move { post_eventbridge(&base, &body, Some(ALARM_KEY)).await });
            }
            sends.join_all().await
        }
    };
    for (status, answer) in storm("cool", GROUP, 20).await {
        assert_eq!(
            (status, answer["outcome"].as_str()),
            (200, Some("cooldown"))
        );
    }
    for (status, answer) in storm("stranger", "someone-elses", 200).await {
        assert_eq!(
            (status, answer["outcome"].as_str()),
            (200, Some("unknown_group"))
        );
    }
    let notices = |needle: &'static str| {
        let services = &services;
        move || {
            services
                .top_messages()
                .into_iter()
                .filter(|m| m.text.contains(needle))
                .collect::<Vec<_>>()
        }
    };
    let cooldown = notices("cooldown");
    let unknown = notices("maps to no replication group");
    eventually("the counts on the notices", || {
        let (c, u) = (cooldown(), unknown());
        c.len() == 1
            && u.len() == 1
            && c[0].text.contains("fired ×20 so far")
            && u[0].text.contains("fired ×200 so far")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        (cooldown().len(), unknown().len()),
        (1, 1),
        "one notice each"
    );
    assert_eq!(
        services.slack.count("chat.postMessage") - posts_before,
        2,
        "220 alarms, two posts"
    );
    assert_eq!(
        t.store.recent_runs(None, 10).await.unwrap().len(),
        1,
        "no new run"
    );
    t.stop().await;
}

/// A notice Slack took but whose answer was lost (a 500 after the work) is found by the
/// window in its message metadata when the job tries again, not posted a second time.
#[tokio::test]
async fn a_notice_whose_answer_was_lost_is_found_not_posted_again() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    services.slack.fail_next(
        "chat.postMessage",
        1,
        redis_autoscaler::standin::slack::Fault::AcceptThenFail(500),
    );
    let (status, answer) = post_event(
        &t,
        &event("lost-1", "someone-elses", "ALARM", 95.0),
        Some(ALARM_KEY),
    )
    .await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("unknown_group"))
    );
    eventually_async("the notice's job to finish", || async {
        t.store.pending_count().await.unwrap() == 0
    })
    .await;
    let notices: Vec<_> = services
        .top_messages()
        .into_iter()
        .filter(|m| m.text.contains("maps to no replication group"))
        .collect();
    assert_eq!(
        notices.len(),
        1,
        "one notice, though the first post's answer was lost"
    );
    assert!(
        services.slack.count("chat.postMessage") >= 1
            && services.slack.count("conversations.history") >= 1,
        "the retry looked before it posted"
    );
    t.stop().await;
}
