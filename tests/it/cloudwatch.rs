//! The real `aws-sdk-cloudwatch` client, through `SdkCloudWatch`, against the simulator's
//! CloudWatch on loopback (Smithy RPC v2 CBOR): each node's series as the simulator was told,
//! pages followed, AccessDenied and throttling sorted the way a caller acts on them, and the
//! series drawn into a PNG.

use std::time::Duration;

use redis_autoscaler::chart::MemoryChart;
use redis_autoscaler::cloudwatch::{
    MemoryError, MemoryQuery, MemorySeries, NodeSeries, SdkCloudWatch,
};
use redis_autoscaler::domain::{CacheClusterId, NodeType, ReplicationGroupId, Timestamp};
use redis_autoscaler::elasticache::sdk::config_for_endpoint;
use redis_autoscaler::elasticache::sim::{
    self, DEFAULT_MEMORY_PERCENT, GET_METRIC_DATA, MemoryCurve, SimConfig, SimGroup, SimHandle,
};

fn node(s: &str) -> CacheClusterId {
    CacheClusterId::parse(s).unwrap()
}

fn group() -> ReplicationGroupId {
    ReplicationGroupId::parse("prod-jobs").unwrap()
}

/// A simulator with `prod-jobs` (a primary and two replicas: `prod-jobs-001` … `-003`) and
/// the real SDK pointed at it.
async fn spawn() -> (SimHandle, SdkCloudWatch) {
    let config = SimConfig::with_groups([SimGroup::new(
        group(),
        NodeType::parse("cache.r6g.large").unwrap(),
    )
    .replicas(2)]);
    let sim = sim::spawn(config).await.expect("the simulator starts");
    let cloudwatch = SdkCloudWatch::new(&config_for_endpoint(&sim.endpoint()));
    (sim, cloudwatch)
}

/// A 20-minute window of whole minutes that ended five minutes ago.
fn window() -> (Timestamp, Timestamp) {
    let now = Timestamp::now().as_millis();
    let end = Timestamp::from_millis(now - now.rem_euclid(60_000) - 5 * 60_000);
    (Timestamp::from_millis(end.as_millis() - 20 * 60_000), end)
}

fn query(nodes: &[&str], (start, end): (Timestamp, Timestamp)) -> MemoryQuery {
    MemoryQuery::for_window(group(), nodes.iter().map(|n| node(n)).collect(), start, end)
}

fn values(s: &NodeSeries) -> Vec<f64> {
    s.points.iter().map(|(_, v)| *v).collect()
}

#[tokio::test]
async fn each_node_reads_the_curve_the_simulator_was_given_oldest_first() {
    let (sim, cloudwatch) = spawn().await;
    let (start, end) = window();
    let drop_at = start.plus(Duration::from_secs(12 * 60));
    sim.set_memory(
        &node("prod-jobs-001"),
        MemoryCurve::constant(93.0).then(drop_at, 51.0),
    );
    sim.set_memory(&node("prod-jobs-002"), MemoryCurve::constant(88.5));

    let q = query(
        &[
            "prod-jobs-001",
            "prod-jobs-002",
            "prod-jobs-003",
            "elsewhere-001",
        ],
        (start, end),
    );
    let series = cloudwatch.memory_usage(&q).await.unwrap();

    let names: Vec<&str> = series.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(
        names,
        [
            "prod-jobs-001",
            "prod-jobs-002",
            "prod-jobs-003",
            "elsewhere-001"
        ]
    );
    let primary = &series[0];
    assert_eq!(primary.points.len(), 20);
    assert_eq!(primary.points[0].0, start);
    assert_eq!(
        primary.points[19].0,
        Timestamp::from_millis(end.as_millis() - 60_000)
    );
    let expected: Vec<f64> = (0..20).map(|m| if m < 12 { 93.0 } else { 51.0 }).collect();
    assert_eq!(values(primary), expected);
    assert_eq!(values(&series[1]), vec![88.5; 20]);
    // A node nobody set a curve for reads the default; one CloudWatch does not know, nothing.
    assert_eq!(values(&series[2]), vec![DEFAULT_MEMORY_PERCENT; 20]);
    assert!(series[3].points.is_empty());

    let calls = sim.calls();
    let call = calls.iter().find(|c| c.action == GET_METRIC_DATA).unwrap();
    assert!(call.is_ok());
    assert_eq!(
        call.param("Nodes"),
        Some("prod-jobs-001,prod-jobs-002,prod-jobs-003,elsewhere-001")
    );
    assert_eq!(call.param("Period"), Some("60"));
    assert_eq!(sim.count(GET_METRIC_DATA), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn pages_are_followed_until_the_last_and_put_back_together() {
    let (sim, cloudwatch) = spawn().await;
    let (start, end) = window();
    for (i, n) in ["prod-jobs-001", "prod-jobs-002", "prod-jobs-003"]
        .iter()
        .enumerate()
    {
        let mut curve = MemoryCurve::constant(50.0 + i as f64);
        for m in 0..20 {
            let at = start.plus(Duration::from_secs(m * 60));
            curve = curve.then(at, 50.0 + i as f64 * 10.0 + m as f64);
        }
        sim.set_memory(&node(n), curve);
    }
    let q = query(
        &["prod-jobs-001", "prod-jobs-002", "prod-jobs-003"],
        (start, end),
    );
    let whole = cloudwatch.memory_usage(&q).await.unwrap();
    assert_eq!(sim.count(GET_METRIC_DATA), 1);

    // 60 points, 7 a page: 9 pages, and a page boundary inside each node's series.
    sim.set_metric_page_size(7);
    let paged = cloudwatch.memory_usage(&q).await.unwrap();
    assert_eq!(paged, whole);
    assert_eq!(sim.count(GET_METRIC_DATA), 1 + 9);
    let tokens = sim
        .calls()
        .iter()
        .filter(|c| c.param("NextToken").is_some())
        .count();
    assert_eq!(tokens, 8);
    for (i, s) in paged.iter().enumerate() {
        let expected: Vec<f64> = (0..20).map(|m| 50.0 + i as f64 * 10.0 + m as f64).collect();
        assert_eq!(values(s), expected, "{}", s.node);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn access_denied_is_a_missing_permission_and_throttling_is_worth_another_try() {
    let (sim, cloudwatch) = spawn().await;
    let q = query(&["prod-jobs-001"], window());

    sim.throttle_action(GET_METRIC_DATA);
    let err = cloudwatch.memory_usage(&q).await.unwrap_err();
    assert!(
        matches!(&err, MemoryError::Transient { code, .. } if code == "Throttling"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    sim.unthrottle_action(GET_METRIC_DATA);
    assert!(cloudwatch.memory_usage(&q).await.is_ok());

    sim.deny_action(GET_METRIC_DATA);
    let err = cloudwatch.memory_usage(&q).await.unwrap_err();
    match &err {
        MemoryError::Denied { code, message } => {
            assert_eq!(code, "AccessDenied");
            assert!(message.contains("cloudwatch:GetMetricData"), "{message}");
        }
        other => panic!("expected Denied, got {other:?}"),
    }
    assert!(!err.is_retryable());
    let outcomes: Vec<String> = sim.calls().into_iter().map(|c| c.outcome).collect();
    assert_eq!(outcomes, ["Throttling", "ok", "AccessDenied"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_empty_window_is_refused_without_a_call() {
    let (sim, cloudwatch) = spawn().await;
    let (start, _) = window();
    let err = cloudwatch
        .memory_usage(&query(&["prod-jobs-001"], (start, start)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "EmptyWindow");
    assert_eq!(sim.attempts(GET_METRIC_DATA), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_simulator_answers_in_the_protocol_even_when_it_refuses() {
    let (sim, _) = spawn().await;
    let url = format!(
        "{}/service/GraniteServiceVersion20100801/operation/GetMetricData",
        sim.endpoint()
    );
    let http = reqwest::Client::new();
    // CBOR `{}` without a signature.
    let response = http
        .post(&url)
        .header("smithy-protocol", "rpc-v2-cbor")
        .header("content-type", "application/cbor")
        .body(vec![0xa0])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/cbor"
    );
    assert_eq!(
        response.headers()["smithy-protocol"].to_str().unwrap(),
        "rpc-v2-cbor"
    );
    assert_eq!(
        response.headers()["x-amzn-query-error"].to_str().unwrap(),
        "MissingAuthenticationToken;Sender"
    );
    let body: ciborium::Value =
        ciborium::from_reader(&response.bytes().await.unwrap()[..]).unwrap();
    let map = body.as_map().unwrap();
    let type_ = map
        .iter()
        .find(|(k, _)| k.as_text() == Some("__type"))
        .and_then(|(_, v)| v.as_text());
    assert_eq!(type_, Some("MissingAuthenticationToken"));
    // Without the protocol header the request is not RPC v2 CBOR at all.
    let response = http
        .post(&url)
        .header("authorization", "AWS4-HMAC-SHA256 fake")
        .body(vec![0xa0])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_series_read_from_the_simulator_draw_a_png_and_different_data_another() {
    let (sim, cloudwatch) = spawn().await;
    let (start, end) = window();
    let q = query(&["prod-jobs-001", "prod-jobs-002"], (start, end));
    let draw = |series: &[NodeSeries]| {
        MemoryChart::new(&group(), series, start, end)
            .threshold(85.0)
            .size(800, 400)
            .render_png()
            .unwrap()
    };
    let flat = draw(&cloudwatch.memory_usage(&q).await.unwrap());
    sim.set_memory(
        &node("prod-jobs-001"),
        MemoryCurve::constant(93.0).then(start.plus(Duration::from_secs(600)), 51.0),
    );
    let dropped = draw(&cloudwatch.memory_usage(&q).await.unwrap());
    for png in [&flat, &dropped] {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, right after the signature and chunk header.
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 800);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 400);
    }
    assert_ne!(flat, dropped);
    sim.shutdown().await;
}

/// An attempt of the run `r-abcdefgh` on `prod-jobs`, with the default policy
/// (`snapshot_source = "replica"`).
fn attempt() -> redis_autoscaler::workflow::ports::Attempt {
    use redis_autoscaler::domain::{ChannelId, RunId, SlackUserId};
    use redis_autoscaler::workflow::policy::Policy;
    use redis_autoscaler::workflow::ports::{Attempt, ManualClock};
    use redis_autoscaler::workflow::run::{Run, Trigger};
    let run = Run::new(
        RunId::parse("r-abcdefgh").unwrap(),
        group(),
        ChannelId::parse("C0123ABCD").unwrap(),
        Trigger::Command {
            user: SlackUserId::parse("U0ONCALL1").unwrap(),
            response_url: None,
        },
        None,
        Policy::default(),
        Timestamp::now(),
    );
    let clock = std::sync::Arc::new(ManualClock::at(Timestamp::now()));
    Attempt::new(run, 1, 1, false, clock)
}

#[tokio::test]
async fn the_snapshot_is_taken_from_the_replica_with_the_most_free_memory() {
    use redis_autoscaler::domain::SnapshotName;
    use redis_autoscaler::elasticache::sdk::SdkElastiCache;
    use redis_autoscaler::elasticache::steps::ElastiCacheSteps;
    use redis_autoscaler::workflow::ports::{Aws, ElastiCache};
    use std::sync::Arc;
    for denied in [false, true] {
        let (sim, cloudwatch) = spawn().await;
        let api: Arc<dyn ElastiCache> =
            Arc::new(SdkElastiCache::new(&config_for_endpoint(&sim.endpoint())));
        let steps = ElastiCacheSteps::new(api).with_memory(Arc::new(cloudwatch));
        sim.set_memory(&node("prod-jobs-001"), MemoryCurve::constant(93.0));
        sim.set_memory(&node("prod-jobs-002"), MemoryCurve::constant(88.0));
        sim.set_memory(&node("prod-jobs-003"), MemoryCurve::constant(61.5));
        if denied {
            sim.deny_action(GET_METRIC_DATA);
        }
        let mut at = attempt();
        let name = SnapshotName::for_run(&at.run.id);
        steps.create_snapshot(&mut at, &name).await.unwrap();
        let create = sim
            .calls()
            .into_iter()
            .find(|c| c.action == "CreateSnapshot")
            .expect("a CreateSnapshot");
        let audit = at.take_audit();
        let line = |kind: &str| {
            audit
                .iter()
                .find(|a| a.kind == kind)
                .map(|a| a.detail.clone())
                .unwrap_or_default()
        };
        if denied {
            // No readings: the first replica by node id, and the audit says why.
            assert_eq!(create.param("CacheClusterId"), Some("prod-jobs-002"));
            assert!(
                line("GetMetricData").contains("picking by node id"),
                "{audit:?}"
            );
        } else {
            assert_eq!(create.param("CacheClusterId"), Some("prod-jobs-003"));
            let read = line("GetMetricData");
            assert!(
                read.contains("prod-jobs-002 88.0 %") && read.contains("prod-jobs-003 61.5 %"),
                "{read}"
            );
            assert!(
                !read.contains("prod-jobs-001"),
                "only the replicas are read: {read}"
            );
            let why = line("CreateSnapshot");
            assert!(why.contains("most free memory (61.5 % used"), "{why}");
        }
        sim.shutdown().await;
    }
}
