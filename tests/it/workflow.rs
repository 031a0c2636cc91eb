//! The workflow end to end through the runner: the real AWS SDK against the simulator, and
//! the local Slack, PagerDuty and hook stand-ins.

use redis_autoscaler::app::UserAction;
use redis_autoscaler::elasticache::sim::ModifyFault;
use redis_autoscaler::workflow::machine::Submitted;
use redis_autoscaler::workflow::run::{Outcome, State, Step};
use redis_autoscaler::workflow::runner::RunnerOptions;

use crate::support::*;

/// Click the approve button the run's message shows (the one for pending changes, when the
/// preflight found some or couldn't tell).
async fn approve(t: &TestApp, run: &redis_autoscaler::domain::RunId) {
    let waiting = t
        .wait_for(run, "the approval message", |r| {
            matches!(r.state, State::AwaitingApproval { .. }) && r.message.is_some()
        })
        .await;
    let button = match waiting.plan() {
        Some(p) if p.needs_acknowledgement() => UserAction::ApprovePending,
        _ => UserAction::Approve,
    };
    let s = t.app.act(run, &user(ONCALL), button).await.unwrap();
    assert!(matches!(s, Submitted::Accepted(_)), "{s:?}");
}

#[tokio::test]
async fn happy_path_snapshots_once_upsizes_once_and_threads_every_step() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    let done = t.wait_done(&run).await;

    assert_eq!(done.state_name(), "succeeded");
    let sim = &services.sim;
    assert_eq!(sim.count("CreateSnapshot"), 1);
    assert_eq!(sim.count("ModifyReplicationGroup"), 1);
    let modify = sim
        .calls()
        .into_iter()
        .find(|c| c.action == "ModifyReplicationGroup")
        .unwrap();
    assert_eq!(modify.param("ApplyImmediately"), Some("true"));
    assert_eq!(modify.param("CacheNodeType"), Some("cache.r6g.xlarge"));
    assert_eq!(modify.param("ReplicationGroupId"), Some(GROUP));
    let create = sim
        .calls()
        .into_iter()
        .find(|c| c.action == "CreateSnapshot")
        .unwrap();
    assert_eq!(
        create.param("SnapshotName"),
        Some(format!("redis-autoscaler-{run}").as_str())
    );
    // snapshot_source = "replica" (the default): the group's one replica, not the group.
    assert_eq!(
        create.param("CacheClusterId"),
        Some(format!("{GROUP}-002").as_str())
    );
    assert_eq!(create.param("ReplicationGroupId"), None);
    assert_eq!(
        sim.group(&group()).unwrap().node_type,
        Some(nt("cache.r6g.xlarge"))
    );

    let tops = services.top_messages();
    assert_eq!(tops.len(), 1, "one top message");
    let top = &tops[0];
    let replies = thread_texts(top);
    let expected_order = [
        "Approved by",
        // The Cancel offer, withdrawn once the upsize started.
        "Cancel was possible here until",
        "Creating snapshot",
        "is available",
        "Upsizing from",
        "Done:",
        // 100 ms of watching holds no minute of CloudWatch data: the verification says so
        // rather than guess (the reading itself is covered in `cloudwatch::verify`).
        "CloudWatch had no memory readings in the 100ms after the upsize",
    ];
    assert_eq!(replies.len(), expected_order.len(), "{replies:#?}");
    for (reply, want) in replies.iter().zip(expected_order) {
        assert!(
            reply.contains(want),
            "expected `{want}` in `{reply}`; all: {replies:#?}"
        );
    }
    // Beside them (in no fixed order with them), the memory graph from the simulator's
    // CloudWatch once the message was up, and again at the end.
    let mut graphs: Vec<String> = thread_lines(top)
        .into_iter()
        .filter(|l| l.starts_with("[file"))
        .collect();
    graphs.sort();
    assert_eq!(
        graphs,
        [
            format!("[file prod-jobs memory at the alarm ({run})]"),
            format!("[file prod-jobs memory at the end ({run})]"),
        ]
    );
    let rendered = top.rendered();
    assert!(rendered.contains("Succeeded"), "{rendered}");
    assert!(
        !rendered.contains("[ Approve ]"),
        "buttons are gone: {rendered}"
    );
    assert!(services.pages().is_empty(), "no page on success");

    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.actor == ONCALL && a.kind == "approve")
    );
    assert!(audit.iter().any(|a| a.kind == "ModifyReplicationGroup"));
    t.stop().await;
}

#[tokio::test]
async fn snapshot_timeout_pages_once_with_the_run_id_as_dedup_key() {
    let mut sim = sim_config();
    sim.snapshot_duration = std::time::Duration::from_secs(3600);
    let services = Services::start(sim).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(
        &services,
        &config_text(
            "",
            "snapshot_max_polls = 3\nwithout_snapshot_window = \"0s\"",
        ),
        &dir.db(),
    )
    .await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    let done = t.wait_done(&run).await;

    assert!(
        matches!(
            done.outcome(),
            Some(Outcome::TimedOut {
                step: Step::Snapshot,
                ..
            })
        ),
        "{:?}",
        done.state
    );
    // One describe of the run's snapshot before the create, then exactly the configured
    // number of polls (the preflight's count of the group's manual snapshots is another call).
    let of_the_run: Vec<_> = services
        .sim
        .calls()
        .into_iter()
        .filter(|c| c.action == "DescribeSnapshots" && c.param("SnapshotName").is_some())
        .collect();
    assert_eq!(of_the_run.len(), 1 + 3);
    assert_eq!(
        of_the_run.iter().filter(|c| c.is_ok()).count(),
        3,
        "the first look finds nothing"
    );
    assert_eq!(
        services.sim.attempts("DescribeSnapshots"),
        1 + 3 + 1,
        "and one listing of the group's manual snapshots"
    );
    assert_eq!(
        services.sim.count("ModifyReplicationGroup"),
        0,
        "never upsized"
    );
    let pages = services.pages();
    assert_eq!(pages.len(), 1, "{pages:#?}");
    assert_eq!(pages[0]["event_action"], "trigger");
    assert_eq!(pages[0]["dedup_key"], run.as_str());
    let link = pages[0]["links"][0]["href"].as_str().unwrap();
    assert!(
        link.contains(&format!("/archives/{CHANNEL}/")),
        "links to the thread: {link}"
    );
    assert_eq!(pages[0]["payload"]["custom_details"]["step"], "snapshot");
    assert_eq!(
        pages[0]["payload"]["custom_details"]["replication_group"],
        GROUP
    );
    t.stop().await;
}

#[tokio::test]
async fn a_failed_snapshot_fails_the_run_and_pages() {
    let services = Services::start(sim_config()).await;
    services.sim.fail_snapshots_of(&group());
    let dir = TempDir::new();
    // Nobody is given time to choose "Upsize without a snapshot" (tests/it/slack.rs is
    // about that choice): the run ends failed at once.
    let t = TestApp::spawn(
        &services,
        &config_text("", "without_snapshot_window = \"0s\""),
        &dir.db(),
    )
    .await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    let done = t.wait_done(&run).await;
    assert!(
        matches!(
            done.outcome(),
            Some(Outcome::Failed {
                step: Step::Snapshot,
                ..
            })
        ),
        "{:?}",
        done.state
    );
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 0);
    assert_eq!(services.pages().len(), 1);
    assert!(services.top_messages()[0].rendered().contains("Failed"));
    t.stop().await;
}

#[tokio::test]
async fn a_rejected_modification_fails_the_run_leaves_the_group_and_pages() {
    let services = Services::start(sim_config()).await;
    services.sim.fail_modifications_of(
        &group(),
        ModifyFault::reject("InsufficientCacheClusterCapacity"),
    );
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    let done = t.wait_done(&run).await;
    match done.outcome() {
        Some(Outcome::Failed {
            step: Step::Upsize,
            error,
        }) => {
            assert!(
                error.contains("InsufficientCacheClusterCapacity"),
                "{error}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        services.sim.group(&group()).unwrap().node_type,
        Some(nt("cache.r6g.large"))
    );
    let pages = services.pages();
    assert_eq!(pages.len(), 1);
    assert!(
        pages[0]["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("InsufficientCacheClusterCapacity")
    );
    t.stop().await;
}

#[tokio::test]
async fn a_modification_aws_rolled_back_fails_the_run_with_awss_own_reason() {
    let services = Services::start(sim_config()).await;
    services
        .sim
        .fail_modifications_of(&group(), ModifyFault::Revert);
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    let done = t.wait_done(&run).await;
    let error = match done.outcome() {
        Some(Outcome::Failed {
            step: Step::Upsize,
            error,
        }) => error.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        error.contains("still on cache.r6g.large; AWS says: Failed to modify cache node type to cache.r6g.xlarge: InsufficientCacheClusterCapacity"),
        "{error}"
    );
    assert_eq!(
        services.sim.count("DescribeEvents"),
        1,
        "read once, when it failed"
    );
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.kind == "DescribeEvents" && a.detail.contains("prod-jobs-001")),
        "{audit:#?}"
    );
    let texts = thread_texts(&services.top_messages()[0]);
    assert!(
        texts
            .iter()
            .any(|r| r.contains("InsufficientCacheClusterCapacity")),
        "the thread says AWS's reason: {texts:#?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn thirty_percent_of_aws_calls_throttled_still_succeeds_with_one_snapshot_and_one_modify() {
    let mut sim = sim_config();
    sim.throttle_fraction = 0.3;
    sim.seed = 7;
    let services = Services::start(sim).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(services.sim.count("CreateSnapshot"), 1);
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 1);
    let throttled = services
        .sim
        .calls()
        .iter()
        .filter(|c| c.outcome == "Throttling")
        .count();
    assert!(throttled > 0, "the fault was active");
    let retries = t
        .store
        .audit_trail(&run)
        .await
        .unwrap()
        .iter()
        .filter(|a| a.kind == "retry")
        .count();
    assert!(retries >= throttled.min(1), "retries are audited");
    assert!(services.pages().is_empty());
    t.stop().await;
}

#[tokio::test]
async fn pause_and_resume_hooks_wrap_the_work_and_are_signed() {
    let services = Services::start(sim_config()).await;
    let hooks = hook_keys(&services);
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text(&hooks, ""), &dir.db()).await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(services.hooks.accepted_phases(), ["pause", "resume"]);
    let calls = services.hooks.calls();
    assert!(calls.iter().all(|c| c.signature_ok), "signed: {calls:?}");
    // One key per hook call, the same on every try of it: a receiver acts once per key.
    let keys: Vec<&str> = calls.iter().filter_map(|c| c.key.as_deref()).collect();
    assert_eq!(keys.len(), 2, "{calls:?}");
    assert!(keys[0].starts_with(&format!("{run}:pause:")), "{keys:?}");
    assert!(keys[1].starts_with(&format!("{run}:resume:")), "{keys:?}");
    assert_eq!(services.hooks.accepted_calls(), 2);
    assert_eq!(calls[0].body["run_id"], run.as_str());
    assert_eq!(calls[0].body["to_node_type"], "cache.r6g.xlarge");
    assert_eq!(calls[1].body["outcome"], "succeeded");
    t.stop().await;
}

#[tokio::test]
async fn a_failing_pause_hook_touches_nothing_resumes_and_pages() {
    let services = Services::start(sim_config()).await;
    services.hooks.fail_next("pause", 100, 500);
    let hooks = hook_keys(&services);
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text(&hooks, ""), &dir.db()).await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    let done = t.wait_done(&run).await;
    assert!(
        matches!(
            done.outcome(),
            Some(Outcome::Failed {
                step: Step::Pause,
                ..
            })
        ),
        "{:?}",
        done.state
    );
    assert_eq!(
        services.sim.attempts("CreateSnapshot"),
        0,
        "nothing touched"
    );
    assert_eq!(
        services.hooks.accepted_phases(),
        ["resume"],
        "resume still attempted"
    );
    assert_eq!(services.pages().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn a_failing_resume_hook_pages_and_says_workers_may_still_be_paused() {
    let services = Services::start(sim_config()).await;
    services.hooks.fail_next("resume", 100, 503);
    let hooks = hook_keys(&services);
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text(&hooks, ""), &dir.db()).await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded", "the upsize itself worked");
    assert!(done.resume_error.is_some());
    let pages = services.pages();
    assert_eq!(pages.len(), 1);
    assert!(
        pages[0]["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("may still be paused")
    );
    assert!(
        services.top_messages()[0]
            .rendered()
            .contains("may still be paused")
    );
    t.stop().await;
}

/// Stop the runner right after its k-th committed transition (as if the process died there),
/// start a new one on the same database file, and check that the run still completes exactly
/// once — for every k until a run completes without being stopped.
#[tokio::test]
async fn a_restart_at_every_step_boundary_completes_the_run_exactly_once() {
    let mut boundaries = 0;
    for k in 1..=60 {
        let services = Services::start(sim_config()).await;
        let hooks = format!("approval = \"auto\"\n{}", hook_keys(&services));
        let config = config_text(&hooks, "");
        let dir = TempDir::new();
        let first = TestApp::spawn_with(
            &services,
            &config,
            &dir.db(),
            RunnerOptions {
                halt_after_transitions: Some(k),
            },
        )
        .await;
        let run = first.alarm().await;
        // Either the runner halts at boundary k, or the run completes before reaching it.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let r = first.run(&run).await;
            let quiet = r.is_finished() && first.quiet(&run).await;
            if first.runner_finished() || quiet {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "k={k}: stuck in {}",
                r.state_name()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let halted = first.runner_finished();
        if halted {
            first.wait_halted().await;
            let second = TestApp::spawn(&services, &config, &dir.db()).await;
            let done = second.wait_done(&run).await;
            assert_eq!(done.state_name(), "succeeded", "k={k}");
            second.stop().await;
        } else {
            first.stop().await;
        }
        let sim = &services.sim;
        assert_eq!(sim.count("CreateSnapshot"), 1, "k={k}: one snapshot");
        assert_eq!(sim.count("ModifyReplicationGroup"), 1, "k={k}: one modify");
        assert_eq!(
            sim.group(&group()).unwrap().node_type,
            Some(nt("cache.r6g.xlarge")),
            "k={k}"
        );
        assert_eq!(services.top_messages().len(), 1, "k={k}: one top message");
        assert!(services.pages().len() <= 1, "k={k}: at most one page");
        assert_eq!(
            services.hooks.accepted_phases(),
            ["pause", "resume"],
            "k={k}"
        );
        if !halted {
            boundaries = k - 1;
            break;
        }
    }
    assert!(
        boundaries >= 8,
        "the run went through {boundaries} boundaries"
    );
}

#[tokio::test]
async fn unfinished_runs_resume_after_a_graceful_stop() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let config = config_text("", "");
    let t = TestApp::spawn(&services, &config, &dir.db()).await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    t.wait_for(&run, "the snapshot step", |r| {
        matches!(r.state, State::Snapshotting { created: true, .. })
    })
    .await;
    t.stop().await;
    let again = TestApp::spawn(&services, &config, &dir.db()).await;
    let done = again.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(services.sim.count("CreateSnapshot"), 1);
    assert_eq!(services.top_messages().len(), 1);
    again.stop().await;
}

#[tokio::test]
async fn slack_rate_limits_are_waited_out_as_retry_after_says() {
    let services = Services::start(sim_config()).await;
    services.slack.fail_next(
        "chat.postMessage",
        1,
        redis_autoscaler::standin::slack::Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let started = std::time::Instant::now();
    let run = t.alarm().await;
    t.wait_for(&run, "the top message", |r| r.message.is_some())
        .await;
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "waited for Retry-After"
    );
    assert_eq!(services.top_messages().len(), 1);
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.kind == "retry" && a.detail.contains("retrying in 1s")),
        "{audit:#?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_slack_error_is_reported_not_swallowed_and_pages_when_nobody_can_see_the_run() {
    let services = Services::start(sim_config()).await;
    services.slack.fail_next(
        "chat.postMessage",
        1,
        redis_autoscaler::standin::slack::Fault::Error("channel_not_found"),
    );
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = t.alarm().await;
    t.wait_for(&run, "the page", |_| !services.pages().is_empty())
        .await;
    let page = &services.pages()[0];
    assert_eq!(page["dedup_key"], run.as_str());
    assert!(
        page["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("channel_not_found"),
        "{page}"
    );
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit.iter().any(|a| a.detail.contains("channel_not_found")),
        "{audit:#?}"
    );
    t.stop().await;
}

/// A run whose snapshot times out (so it pages), with PagerDuty answering `status` to the
/// first `n` events; returns the outside world once the run has gone quiet.
async fn timed_out_run_paging_through(n: usize, status: u16) -> Services {
    let mut sim = sim_config();
    sim.snapshot_duration = std::time::Duration::from_secs(3600);
    let services = Services::start(sim).await;
    services.pd.fail_next(n, status);
    let dir = TempDir::new();
    let t = TestApp::spawn(
        &services,
        &config_text(
            "",
            "snapshot_max_polls = 1\nwithout_snapshot_window = \"0s\"",
        ),
        &dir.db(),
    )
    .await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    t.wait_done(&run).await;
    t.stop().await;
    services
}

#[tokio::test]
async fn pagerduty_5xx_is_retried_and_400_is_not() {
    let services = timed_out_run_paging_through(2, 500).await;
    assert_eq!(services.pd.attempts(), 3, "two 500s, then accepted");
    assert_eq!(services.pages().len(), 1);
    assert!(
        thread_texts(&services.top_messages()[0])
            .iter()
            .any(|r| r.contains("Paged on-call"))
    );

    let services = timed_out_run_paging_through(1, 400).await;
    assert_eq!(services.pd.attempts(), 1, "a 400 is never retried");
    let texts = thread_texts(&services.top_messages()[0]);
    assert!(
        texts.iter().any(|r| r.contains("Couldn't page PagerDuty")),
        "{texts:?}"
    );
}

#[tokio::test]
async fn a_top_message_slack_accepted_but_never_confirmed_is_not_posted_twice() {
    let services = Services::start(sim_config()).await;
    services.slack.fail_next(
        "chat.postMessage",
        1,
        redis_autoscaler::standin::slack::Fault::AcceptThenFail(503),
    );
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    let tops = services.top_messages();
    assert_eq!(
        tops.len(),
        1,
        "one top message although the first answer was lost"
    );
    assert_eq!(done.message.unwrap().ts, tops[0].ts);
    assert_eq!(
        tops[0].metadata.as_ref().unwrap()["event_payload"]["run_id"],
        run.as_str()
    );
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit.iter().any(|a| a.detail.contains("already posted")),
        "{audit:#?}"
    );
    t.stop().await;
}

/// The top message's post times out; Slack stores it only after the retry looked for it and
/// posted again. The duplicate is found afterwards by the run's metadata and deleted; the run
/// keeps one top message, brought up to date.
#[tokio::test]
async fn a_top_message_slack_stores_after_the_retry_posted_again_is_deleted_afterwards() {
    let services = Services::start(sim_config()).await;
    // The client gives up after 200 ms; Slack stores the first post at 500 ms, after the retry
    // (at ~220 ms) found nothing and posted a second one.
    services.slack.fail_next(
        "chat.postMessage",
        1,
        redis_autoscaler::standin::slack::Fault::StoreLate(std::time::Duration::from_millis(500)),
    );
    let dir = TempDir::new();
    let config =
        config_text("", "approval = \"auto\"").replace("timeout = \"5s\"", "timeout = \"200ms\"");
    assert!(config.contains("timeout = \"200ms\""));
    let t = TestApp::spawn(&services, &config, &dir.db()).await;
    let run = t.alarm().await;
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    eventually("the duplicate deleted", || {
        services.slack.deleted().len() == 1
    })
    .await;
    eventually_async("the store quiet", || async { t.quiet(&run).await }).await;
    let tops = services.top_messages();
    assert_eq!(tops.len(), 1, "one top message is left: {tops:?}");
    let kept = done.message.unwrap();
    assert_eq!(kept.ts, tops[0].ts, "the run's own is the one kept");
    assert_ne!(services.slack.deleted()[0].1, kept.ts);
    assert!(tops[0].text.contains("prod-jobs"), "{}", tops[0].text);
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.detail.contains("deleted a duplicate top message")),
        "{audit:#?}"
    );
    t.stop().await;
}

/// The process dies while `chat.postMessage` for the top message is in flight: Slack has the
/// message, the store only knows the attempt started. The next start finds it, posts nothing.
#[tokio::test]
async fn a_crash_during_the_top_message_post_does_not_post_it_twice() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let config = config_text("", "");
    // Stop right after planning commits, before the top message effect runs.
    let first = TestApp::spawn_with(
        &services,
        &config,
        &dir.db(),
        RunnerOptions {
            halt_after_transitions: Some(1),
        },
    )
    .await;
    let run = first.alarm().await;
    let store = first.store.clone();
    while !first.runner_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    first.wait_halted().await;
    let pending = store.pending_effects(Some(&run)).await.unwrap();
    let top = pending
        .iter()
        .find(|p| p.effect == redis_autoscaler::workflow::effect::Effect::PostTopMessage)
        .expect("the top message is pending");
    // What the dead process did: started the effect, and Slack accepted the post.
    store
        .mark_started(top.id, redis_autoscaler::domain::Timestamp::now())
        .await
        .unwrap();
    let posted = services
        .slack_client()
        .post_message_with_metadata(
            &channel(),
            &redis_autoscaler::slack::Message::text("(the post that was in flight)"),
            redis_autoscaler::slack::chat::TOP_MESSAGE_EVENT,
            &serde_json::json!({ "run_id": run.as_str() }),
        )
        .await
        .unwrap();

    let second = TestApp::spawn(&services, &config, &dir.db()).await;
    let r = second
        .wait_for(&run, "the top message to be recorded", |r| {
            r.message.is_some()
        })
        .await;
    assert_eq!(
        r.message.unwrap().ts,
        posted.ts,
        "the earlier post is adopted"
    );
    assert_eq!(services.top_messages().len(), 1, "nothing posted twice");
    assert!(
        services.top_messages()[0]
            .rendered()
            .contains("[ Approve ]"),
        "and brought up to date"
    );
    approve(&second, &run).await;
    assert_eq!(second.wait_done(&run).await.state_name(), "succeeded");
    assert_eq!(services.top_messages().len(), 1);
    second.stop().await;
}

fn hook_keys(services: &Services) -> String {
    format!(
        "pause_url = \"{}\"\nresume_url = \"{}\"",
        services.hooks.url("pause"),
        services.hooks.url("resume")
    )
}

#[tokio::test]
async fn workers_are_resumed_after_a_failed_snapshot_and_after_a_cancel() {
    let services = Services::start(sim_config()).await;
    services.sim.fail_snapshots_of(&group());
    let dir = TempDir::new();
    let t = TestApp::spawn(
        &services,
        &config_text(&hook_keys(&services), ""),
        &dir.db(),
    )
    .await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    // The workers are back while a person decides what to do without the snapshot.
    let waiting = t
        .wait_for(&run, "the choice after the failed snapshot", |r| {
            matches!(r.state, State::SnapshotFailed { .. })
        })
        .await;
    assert!(matches!(
        waiting.failure_or_outcome(),
        Some(Outcome::Failed {
            step: Step::Snapshot,
            ..
        })
    ));
    assert_eq!(services.hooks.accepted_phases(), ["pause", "resume"]);
    assert_eq!(
        services.hooks.calls()[1].body["outcome"],
        "snapshot_failed",
        "the run may still go on"
    );
    // Going on without one pauses them again for the upsize, and resumes them after.
    let s = t
        .app
        .act(&run, &user(ONCALL2), UserAction::UpsizeWithoutSnapshot)
        .await
        .unwrap();
    assert!(matches!(s, Submitted::Accepted(_)), "{s:?}");
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(
        services.hooks.accepted_phases(),
        ["pause", "resume", "pause", "resume"]
    );
    assert_eq!(services.hooks.calls()[3].body["outcome"], "succeeded");
    assert_eq!(
        services.hooks.calls()[3].body["snapshot"],
        serde_json::Value::Null,
        "there is no snapshot to speak of"
    );
    assert_eq!(services.sim.attempts("CreateSnapshot"), 1);
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 1);
    t.stop().await;

    let mut sim = sim_config();
    sim.snapshot_duration = std::time::Duration::from_secs(3600);
    let services = Services::start(sim).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(
        &services,
        &config_text(&hook_keys(&services), ""),
        &dir.db(),
    )
    .await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    t.wait_for(&run, "the snapshot", |r| {
        matches!(r.state, State::Snapshotting { created: true, .. })
    })
    .await;
    let s = t
        .app
        .act(&run, &user(ONCALL2), UserAction::Cancel)
        .await
        .unwrap();
    assert!(matches!(s, Submitted::Accepted(_)), "{s:?}");
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "cancelled");
    assert_eq!(services.hooks.accepted_phases(), ["pause", "resume"]);
    assert_eq!(services.hooks.calls()[1].body["outcome"], "cancelled");
    assert_eq!(services.sim.attempts("ModifyReplicationGroup"), 0);
    t.stop().await;
}

#[tokio::test]
async fn a_hook_that_fails_once_is_retried() {
    let services = Services::start(sim_config()).await;
    services.hooks.fail_next("pause", 1, 503);
    let dir = TempDir::new();
    let t = TestApp::spawn(
        &services,
        &config_text(&hook_keys(&services), ""),
        &dir.db(),
    )
    .await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    assert_eq!(t.wait_done(&run).await.state_name(), "succeeded");
    let calls: Vec<(String, u16)> = services
        .hooks
        .calls()
        .into_iter()
        .map(|c| (c.phase, c.status))
        .collect();
    assert_eq!(
        calls,
        [
            ("pause".to_string(), 503),
            ("pause".to_string(), 200),
            ("resume".to_string(), 200)
        ]
    );
    assert!(services.pages().is_empty());
    t.stop().await;
}

/// Someone else moved the group while the run was taking its snapshot: the bot looks again
/// before the upsize, finds it changed, does not touch it, says what changed, and offers to
/// plan again from how it is now.
#[tokio::test]
async fn a_group_changed_elsewhere_after_approval_is_not_touched_and_can_be_planned_again() {
    let mut sim = sim_config();
    sim.snapshot_duration = std::time::Duration::from_millis(600);
    let services = Services::start(sim).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    let run = t.alarm().await;
    approve(&t, &run).await;
    t.wait_for(&run, "the snapshot", |r| {
        matches!(r.state, State::Snapshotting { created: true, .. })
    })
    .await;
    services
        .sim
        .change_node_type_elsewhere(&group(), nt("cache.r6g.xlarge"));
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "group_changed");
    assert_eq!(
        services.sim.attempts("ModifyReplicationGroup"),
        0,
        "never modified"
    );
    assert_eq!(services.sim.count("CreateSnapshot"), 1);
    let top = &services.top_messages()[0];
    let stopped = top
        .replies
        .iter()
        .find(|r| r.text.contains("Stopped before the upsize"))
        .unwrap_or_else(|| panic!("{:?}", thread_texts(top)));
    assert!(
        stopped
            .text
            .contains("it is on cache.r6g.xlarge now, not on cache.r6g.large"),
        "{}",
        stopped.text
    );
    assert!(
        stopped.rendered().contains("[ Plan again ]"),
        "{}",
        stopped.rendered()
    );
    assert!(top.rendered().contains("Stopped"), "{}", top.rendered());
    assert!(
        services.pages().is_empty(),
        "nothing failed: a person changed the group"
    );

    // "Plan again" plans from the group as it is now.
    let replan = serde_json::json!({
        "action_id": "replan", "block_id": format!("replan:{GROUP}"), "type": "button",
        "value": GROUP
    });
    let body = click_body(&services, ONCALL, "replan", replan);
    assert_eq!(
        post_signed(&t, "/slack/interactions", &body).await.status(),
        200
    );
    eventually_async("a new run", || async {
        t.store.recent_runs(None, 10).await.unwrap().len() == 2
    })
    .await;
    let second = t.store.recent_runs(None, 1).await.unwrap().remove(0);
    let planned = t
        .wait_for(&second.id, "the new plan", |r| r.plan().is_some())
        .await;
    let plan = planned.plan().unwrap();
    assert_eq!(
        (&plan.current, &plan.target),
        (&nt("cache.r6g.xlarge"), &nt("cache.r6g.2xlarge"))
    );
    t.stop().await;
}

/// With a Slack that takes 300 ms to answer each call, an auto-approved alarm reaches
/// CreateSnapshot without waiting for any of Slack's answers (the run's messages still go out
/// in order among themselves).
#[tokio::test]
async fn aws_work_never_waits_on_a_slow_slack() {
    let services = Services::start(sim_config()).await;
    services
        .slack
        .set_latency(std::time::Duration::from_millis(300));
    let dir = TempDir::new();
    let t = TestApp::spawn(
        &services,
        &config_text("", "approval = \"auto\""),
        &dir.db(),
    )
    .await;
    let started = std::time::Instant::now();
    let (status, answer) = post_eventbridge(
        &t.url(""),
        &eventbridge_event("e-slow-slack", GROUP, "ALARM", 93.2),
        Some(ALARM_KEY),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let run = redis_autoscaler::domain::RunId::parse(answer["run_id"].as_str().unwrap()).unwrap();
    while services.sim.attempts("CreateSnapshot") == 0 {
        assert!(started.elapsed().as_secs() < 10, "no CreateSnapshot");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    eprintln!("alarm → CreateSnapshot in {took:?} with a 300 ms Slack");
    // Slack had not answered even the top message's post when the simulator took the
    // CreateSnapshot: the order of the two, not a wall-clock bound a loaded CI host can miss
    // (the time is printed above; 30-50 ms on an idle machine).
    let snapshot_at = services
        .sim
        .calls()
        .into_iter()
        .find(|c| c.action == "CreateSnapshot")
        .map(|c| c.at)
        .unwrap();
    if let Some(answered) = services.slack.first_answer_to_a_call_since(started) {
        assert!(
            snapshot_at < answered,
            "the AWS work waited for Slack: CreateSnapshot {:?} after Slack's first answer",
            snapshot_at - answered
        );
    }
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    let thread = services.slack.transcript(&channel());
    let snapshot = thread.find("Creating snapshot").expect(&thread);
    let modify = thread
        .find("Upsizing")
        .or(thread.find("upsize"))
        .unwrap_or(usize::MAX);
    assert!(snapshot < modify, "{thread}");
    t.stop().await;
}
