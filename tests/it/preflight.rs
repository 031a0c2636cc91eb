//! The preflight against the simulator: what else a node-type change touches is on the card and
//! in the dry run; pending changes need the acknowledging approval; a change that appears after
//! the approval stops the run before it acts; every check that can't be read says so.

use redis_autoscaler::domain::RunId;
use redis_autoscaler::elasticache::sim::{SimConfig, SimGroup, SimReservedMemory};
use redis_autoscaler::workflow::policy::Drift;
use redis_autoscaler::workflow::run::{Outcome, State, Step};

use crate::support::*;

fn sim_with(g: SimGroup) -> SimConfig {
    SimConfig {
        groups: vec![g],
        ..sim_config()
    }
}

async fn app_on(sim: SimConfig) -> (Services, TempDir, TestApp) {
    let services = Services::start(sim).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(&services, &config_text("", ""), &dir.db()).await;
    (services, dir, t)
}

/// The run's message once it waits for approval, as a person reads it.
async fn card(t: &TestApp, services: &Services, run: &RunId) -> String {
    t.wait_for(run, "the approval message", |r| {
        matches!(r.state, State::AwaitingApproval { .. }) && r.message.is_some()
    })
    .await;
    services.top_messages()[0].rendered()
}

/// `user` clicks the button `action_id` for version 1 of the run's plan; private answers go
/// to `{prefix}-{user}`.
async fn click_v1(
    t: &TestApp,
    services: &Services,
    user: &str,
    prefix: &str,
    action_id: &str,
    run: &RunId,
) {
    let action = serde_json::json!({
        "action_id": action_id, "block_id": format!("run:{run}:v1"), "type": "button",
        "value": format!("{run}:v1"), "action_ts": "1548426417.840180",
    });
    let body = click_body(services, user, prefix, action);
    assert_eq!(
        post_signed(t, "/slack/interactions", &body).await.status(),
        200
    );
}

/// `/redis upsize prod-jobs --dry-run` by `user`; the answer it gets.
async fn dry_run(t: &TestApp, services: &Services, user: &str) -> String {
    let body = slash_body(services, user, "upsize prod-jobs --dry-run");
    assert_eq!(post_signed(t, "/slack/commands", &body).await.status(), 200);
    let id = format!("cmd-{user}");
    eventually("the dry run's answer", || {
        answers_to(services, &id)
            .iter()
            .any(|a| a.contains("Dry run"))
    })
    .await;
    answers_to(services, &id)
        .into_iter()
        .find(|a| a.contains("Dry run"))
        .unwrap()
}

#[tokio::test]
async fn a_pending_engine_upgrade_is_shown_and_needs_the_acknowledging_approval() {
    let sim =
        sim_with(SimGroup::new(group(), nt("cache.r6g.large")).pending_engine_version("7.2.4"));
    let (services, _dir, t) = app_on(sim).await;

    let answer = dry_run(&t, &services, ONCALL).await;
    assert!(answer.contains("EngineVersion → 7.2.4"), "{answer}");
    assert!(answer.contains("Approve with pending changes"), "{answer}");

    let run = t.alarm().await;
    let card = card(&t, &services, &run).await;
    assert!(card.contains("*Pending changes*"), "{card}");
    assert!(card.contains("EngineVersion → 7.2.4"), "{card}");
    assert!(card.contains("[ Approve with pending changes ]"), "{card}");
    assert!(
        !card.contains("[ Approve ]"),
        "no plain Approve on this card: {card}"
    );

    // A plain Approve (from an older message, or made by hand) is refused, privately.
    click_v1(&t, &services, ONCALL, "plain", "approve", &run).await;
    let id = format!("plain-{ONCALL}");
    eventually("the refusal", || !answers_to(&services, &id).is_empty()).await;
    let refusal = &answers_to(&services, &id)[0];
    assert!(refusal.contains("Not approved"), "{refusal}");
    assert!(refusal.contains("EngineVersion → 7.2.4"), "{refusal}");
    assert!(matches!(
        t.run(&run).await.state,
        State::AwaitingApproval { .. }
    ));
    assert_eq!(services.sim.attempts("CreateSnapshot"), 0);
    let audit = t.store.audit_trail(&run).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.kind == "rejected" && a.detail.contains("pending changes")),
        "{audit:?}"
    );

    // Approving them too goes ahead; ApplyImmediately applied the upgrade with the node type.
    click_v1(&t, &services, ONCALL, "ack", "approve_pending", &run).await;
    let done = t.wait_done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 1);
    assert_eq!(
        services.sim.engine_version(&group()).as_deref(),
        Some("7.2.4")
    );
    t.stop().await;
}

#[tokio::test]
async fn a_change_that_appears_after_the_approval_stops_the_run_before_the_upsize() {
    let mut sim = sim_with(SimGroup::new(group(), nt("cache.r6g.large")));
    sim.snapshot_duration = std::time::Duration::from_millis(600);
    let (services, _dir, t) = app_on(sim).await;
    let run = t.alarm().await;
    card(&t, &services, &run).await;
    click_v1(&t, &services, ONCALL, "ok", "approve", &run).await;
    t.wait_for(&run, "the snapshot", |r| {
        matches!(r.state, State::Snapshotting { created: true, .. })
    })
    .await;
    // Someone schedules an engine upgrade while the snapshot is taken.
    services
        .sim
        .set_pending_engine_version(&group(), Some("7.2.4"));

    let done = t.wait_done(&run).await;
    let Some(Outcome::GroupChanged { step, drift }) = done.outcome() else {
        panic!("{:?}", done.state);
    };
    assert_eq!(*step, Step::Upsize);
    assert!(matches!(drift, Drift::PendingChanges { .. }), "{drift:?}");
    assert_eq!(
        services.sim.attempts("ModifyReplicationGroup"),
        0,
        "never asked to modify"
    );
    assert_eq!(
        services.sim.engine_version(&group()).as_deref(),
        Some("7.1.0")
    );
    let thread = thread_texts(&services.top_messages()[0]).join("\n");
    assert!(thread.contains("EngineVersion → 7.2.4"), "{thread}");
    assert!(thread.contains("plan again"), "{thread}");
    t.stop().await;
}

#[tokio::test]
async fn reserved_memory_snapshot_limit_no_replica_auto_scaling_and_service_updates_are_warned_about()
 {
    let g = SimGroup::new(group(), nt("cache.r6g.large"))
        .replicas(0)
        .reserved_memory(SimReservedMemory::Bytes(2 << 30))
        .manual_snapshots_today(20)
        .autoscaling("elasticache:replication-group:Replicas")
        .service_update("elasticache-20261101-001", "scheduled");
    let (services, _dir, t) = app_on(sim_with(g)).await;
    let run = t.alarm().await;
    let card = card(&t, &services, &run).await;
    for warning in [
        "fixed `reserved-memory` of 2.00 GiB",
        "20 manual snapshots in the last 24 h",
        "No replica",
        "Registered with Application Auto Scaling (elasticache:replication-group:Replicas)",
        "ServiceUpdate → elasticache-20261101-001 (scheduled)",
        "[ Approve with pending changes ]",
    ] {
        assert!(card.contains(warning), "`{warning}` missing from:\n{card}");
    }
    assert!(!card.contains("❔"), "every check was read: {card}");
    // The warning was right: AWS refuses the 21st snapshot of the day.
    click_v1(&t, &services, ONCALL, "go", "approve_pending", &run).await;
    // The group is untouched; an approver may still go on without a snapshot.
    let waiting = t
        .wait_for(&run, "the snapshot to fail", |r| {
            matches!(r.state, State::SnapshotFailed { .. })
        })
        .await;
    assert!(
        matches!(
            waiting.failure_or_outcome(),
            Some(Outcome::Failed {
                step: Step::Snapshot,
                ..
            })
        ),
        "{:?}",
        waiting.state
    );
    assert_eq!(services.sim.attempts("ModifyReplicationGroup"), 0);
    t.stop().await;
}

#[tokio::test]
async fn every_check_that_cannot_be_read_is_unknown_never_fine() {
    let (services, _dir, t) = app_on(sim_with(SimGroup::new(group(), nt("cache.r6g.large")))).await;
    for action in [
        "DescribeUpdateActions",
        "DescribeCacheParameters",
        "DescribeSnapshots",
        "DescribeScalableTargets",
    ] {
        services.sim.deny_action(action);
    }
    let run = t.alarm().await;
    let card = card(&t, &services, &run).await;
    for unknown in [
        "❔ Pending changes: unknown",
        "❔ reserved memory unknown",
        "❔ Manual snapshots in the last 24 h: unknown",
        "❔ Application Auto Scaling: unknown",
    ] {
        assert!(card.contains(unknown), "`{unknown}` missing from:\n{card}");
    }
    assert!(card.contains("AccessDenied"), "says why: {card}");
    assert!(!card.contains("No pending changes"), "{card}");
    assert!(!card.contains("Not registered"), "{card}");
    assert!(card.contains("[ Approve with pending changes ]"), "{card}");

    // Members that can't be described: the pending changes and the parameter group are
    // unknown, in the dry run too.
    services.sim.deny_action("DescribeCacheClusters");
    let answer = dry_run(&t, &services, ONCALL).await;
    assert!(answer.contains("❔ Pending changes: unknown"), "{answer}");
    assert!(answer.contains("❔ reserved memory unknown"), "{answer}");
    t.stop().await;
}

#[tokio::test]
async fn at_start_a_cap_of_another_family_and_a_group_aws_does_not_have_are_warned_about() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let config = config_text("", "").replace(
        "max_node_type = \"cache.r6g.2xlarge\"",
        "max_node_type = \"cache.m6g.2xlarge\"\n\n[groups.ghost]",
    );
    let t = TestApp::spawn(&services, &config, &dir.db()).await;
    let warnings = t.app.check_groups().await;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("groups.ghost") && w.contains("no replication group ghost")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("groups.prod-jobs.max_node_type")
                && w.contains("cache.m6g.2xlarge is of another family")),
        "{warnings:?}"
    );
    // A config that agrees with AWS gets no warning.
    let dir2 = TempDir::new();
    let fine = TestApp::spawn(&services, &config_text("", ""), &dir2.db()).await;
    assert!(fine.app.check_groups().await.is_empty());
    fine.stop().await;
    t.stop().await;
}

#[tokio::test]
async fn a_change_read_before_a_check_failed_is_still_shown() {
    let sim =
        sim_with(SimGroup::new(group(), nt("cache.r6g.large")).pending_engine_version("7.2.4"));
    let (services, _dir, t) = app_on(sim).await;
    services.sim.deny_action("DescribeUpdateActions");
    let run = t.alarm().await;
    let card = card(&t, &services, &run).await;
    assert!(card.contains("❔ Pending changes: unknown"), "{card}");
    assert!(
        card.contains("pending as far as read: EngineVersion → 7.2.4"),
        "{card}"
    );
    t.stop().await;
}
