//! The memory graph in a run's thread (issue 11): read from the simulator's CloudWatch, drawn,
//! uploaded to the Slack stand-in with files upload v2 — once when the top message is up and
//! once at the end; a short note instead when it can't be made; never twice.

use redis_autoscaler::domain::{CacheClusterId, Timestamp};
use redis_autoscaler::elasticache::sim::MemoryCurve;
use redis_autoscaler::standin::slack::Fault;

use crate::support::*;

fn node(n: u32) -> CacheClusterId {
    CacheClusterId::parse(&format!("{GROUP}-00{n}")).unwrap()
}

fn auto() -> String {
    config_text("", "approval = \"auto\"")
}

#[tokio::test]
async fn a_run_posts_the_memory_graph_when_its_message_is_up_and_again_at_its_end() {
    let services = Services::start(sim_config()).await;
    let an_hour_ago = Timestamp::from_millis(Timestamp::now().as_millis() - 3_600_000);
    for n in [1, 2] {
        let curve = MemoryCurve::constant(60.0).then(an_hour_ago, 93.0);
        services.sim.set_memory(&node(n), curve);
    }
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &auto(), &dir.db()).await;
    let run = t.alarm().await;
    assert_eq!(t.wait_done(&run).await.state_name(), "succeeded");

    let top = &services.top_messages()[0];
    let mut graphs: Vec<String> = thread_lines(top)
        .into_iter()
        .filter(|l| l.starts_with("[file"))
        .collect();
    graphs.sort();
    assert_eq!(
        graphs,
        [
            format!("[file {GROUP} memory at the alarm ({run})]"),
            format!("[file {GROUP} memory at the end ({run})]"),
        ]
    );
    let files = services.slack.files();
    assert_eq!(files.len(), 2, "two graphs, each uploaded once");
    for f in &files {
        assert!(f.completed, "{f:?}");
        assert_eq!(f.thread_ts.as_ref(), Some(&top.ts), "in the run's thread");
        let png = f.bytes.as_ref().expect("the bytes arrived");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        assert!(png.len() > 5_000, "a real chart, {} bytes", png.len());
        assert!(!f.upload_had_bot_token);
        assert!(
            f.alt_text
                .as_deref()
                .unwrap_or("")
                .contains("Memory use of prod-jobs")
        );
    }
    // Both nodes were read, for the group's window.
    let reads: Vec<_> = services
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.action == "GetMetricData")
        .collect();
    assert_eq!(
        reads.len(),
        4,
        "one for the trend at planning, one read per graph, one for the verification"
    );
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.kind == "GetMetricData" && a.detail.contains("for 2 node(s)")),
        "{audit:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn no_permission_to_read_cloudwatch_is_a_short_note_and_the_run_goes_on() {
    let services = Services::start(sim_config()).await;
    services.sim.deny_action("GetMetricData");
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &auto(), &dir.db()).await;
    let run = t.alarm().await;
    assert_eq!(t.wait_done(&run).await.state_name(), "succeeded");
    let texts = thread_texts(&services.top_messages()[0]);
    let notes: Vec<_> = texts
        .iter()
        .filter(|t| t.contains("No memory graph"))
        .collect();
    assert_eq!(notes.len(), 2, "{texts:#?}");
    assert!(notes[0].contains("cloudwatch:GetMetricData"), "{notes:?}");
    assert!(services.slack.files().is_empty());
    assert!(services.pages().is_empty(), "a missing graph pages nobody");
    t.stop().await;
}

/// A throttled CloudWatch is tried again until it answers, and meanwhile the run's messages
/// and work go on: the graph is aside, not in the thread's queue.
#[tokio::test]
async fn throttled_reads_are_tried_again_and_hold_nothing_up() {
    let services = Services::start(sim_config()).await;
    services.sim.throttle_action("GetMetricData");
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &auto(), &dir.db()).await;
    let run = t.alarm().await;
    // The upsize is done and said while every CloudWatch read is refused (the verification
    // waits for it too, and is tried again).
    t.wait_for(&run, "the upsize to be done", |r| r.outcome().is_some())
        .await;
    eventually("the done line while the graph still waits", || {
        thread_texts(&services.top_messages()[0])
            .iter()
            .any(|l| l.contains("Done:"))
    })
    .await;
    assert!(services.sim.attempts("GetMetricData") >= 2, "tried again");
    assert!(services.slack.files().is_empty(), "no graph yet");
    services.sim.unthrottle_action("GetMetricData");
    assert_eq!(t.wait_done(&run).await.state_name(), "succeeded");
    let lines = thread_lines(&services.top_messages()[0]);
    assert!(
        !lines.iter().any(|l| l.contains("No memory graph")),
        "{lines:#?}"
    );
    let graphs = lines.iter().filter(|l| l.starts_with("[file")).count();
    assert_eq!(graphs, 2, "both graphs came once it answered: {lines:#?}");
    t.stop().await;
}

#[tokio::test]
async fn an_upload_whose_answer_was_lost_is_found_not_made_again() {
    let services = Services::start(sim_config()).await;
    // Slack shares the first graph but the answer is lost (a 500 after the work).
    services.slack.fail_next(
        "files.completeUploadExternal",
        1,
        Fault::AcceptThenFail(500),
    );
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &auto(), &dir.db()).await;
    let run = t.alarm().await;
    assert_eq!(t.wait_done(&run).await.state_name(), "succeeded");
    let lines = thread_lines(&services.top_messages()[0]);
    let graphs: Vec<_> = lines.iter().filter(|l| l.starts_with("[file")).collect();
    assert_eq!(
        graphs.len(),
        2,
        "one at the alarm, one at the end: {lines:#?}"
    );
    let shared = services
        .slack
        .files()
        .iter()
        .filter(|f| f.completed)
        .count();
    assert_eq!(shared, 2);
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.detail.contains("is already in the thread")),
        "the retry looked first: {audit:?}"
    );
    t.stop().await;
}
