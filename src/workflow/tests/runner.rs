//! The runner against the fakes: it dispatches every effect to its port, feeds the results
//! back, retries on the persisted schedule, keeps a run's messages in order without holding up
//! its AWS work, and resumes after stopping at any point without doing anything twice. Every
//! test ends with no pending effect left.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::fakes::{FakeAws, MemoryStore, Recorder};
use crate::domain::{ChannelId, NodeType, ReplicationGroupId, RunId, SlackUserId, Timestamp};
use crate::workflow::event::{Actor, Event};
use crate::workflow::machine::{StartRequest, Started, Submitted};
use crate::workflow::policy::{ApprovalMode, Deliveries, Policy, RetryPolicy};
use crate::workflow::ports::{AuditEntry, NoMetrics, Ports, TokioClock};
use crate::workflow::run::{Outcome, Run, Step, Trigger};
use crate::workflow::runner::{Runner, RunnerOptions};

fn group() -> ReplicationGroupId {
    ReplicationGroupId::parse("prod-jobs").unwrap()
}

fn delivery() -> Deliveries {
    Deliveries {
        retry: RetryPolicy {
            interval: Duration::from_secs(1),
            attempts: 5,
            backoff: 2.0,
        },
        retry_for: Duration::from_secs(60),
    }
}

fn auto() -> Policy {
    Policy {
        approval: ApprovalMode::Auto,
        ..Policy::default()
    }
}

/// A runner on the fakes, running.
struct Bench {
    runner: Runner,
    store: MemoryStore,
    aws: FakeAws,
    chat: Recorder,
    graphs: Recorder,
    pager: Recorder,
    hooks: Recorder,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Bench {
    fn new(options: RunnerOptions) -> Bench {
        Bench::on(
            MemoryStore::default(),
            FakeAws::new(&group(), "cache.r6g.large", 3),
            options,
        )
    }

    /// A runner on an existing store and AWS (a restart).
    fn on(store: MemoryStore, aws: FakeAws, options: RunnerOptions) -> Bench {
        let (chat, graphs, pager, hooks) = (
            Recorder::default(),
            Recorder::default(),
            Recorder::default(),
            Recorder::default(),
        );
        let ports = Ports {
            store: Arc::new(store.clone()),
            aws: Arc::new(aws.clone()),
            chat: Arc::new(chat.clone()),
            graphs: Arc::new(graphs.clone()),
            verify: Arc::new(aws.clone()),
            pager: Arc::new(pager.clone()),
            hooks: Arc::new(hooks.clone()),
            clock: Arc::new(TokioClock::starting_at(Timestamp::from_millis(
                1_764_121_929_000,
            ))),
            metrics: Arc::new(NoMetrics),
        };
        let runner = Runner::new(ports, delivery(), options);
        let (stop, mut stopping) = watch::channel(false);
        let shutdown = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        let task = tokio::spawn(runner.clone().run(shutdown));
        Bench {
            runner,
            store,
            aws,
            chat,
            graphs,
            pager,
            hooks,
            stop,
            task,
        }
    }

    async fn start(&self, policy: Policy) -> RunId {
        let req = StartRequest {
            group: group(),
            channel: ChannelId::parse("C0TESTOPS").unwrap(),
            trigger: Trigger::Alarm {
                delivery_id: "eventbridge:test".into(),
                alarm_name: "Redis memory: prod-jobs".into(),
                reason: "Threshold Crossed".into(),
                value: Some(93.2),
                at: Timestamp::from_millis(0),
            },
            requested_type: None,
            policy,
        };
        match self.runner.start(req).await.unwrap() {
            Started::Created(id) => id,
            other => panic!("{other:?}"),
        }
    }

    /// Wait (in paused time: up to two days of it) until `pred` holds for the run.
    async fn until(&self, id: &RunId, what: &str, pred: impl Fn(&Run) -> bool) -> Run {
        for _ in 0..(48 * 3600) {
            let run = self.store.run(id);
            if pred(&run) {
                return run;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!(
            "never saw {what}; the run is {}",
            self.store.run(id).state_name()
        );
    }

    /// Wait until the run is over and everything it decided has been done.
    async fn done(&self, id: &RunId) -> Run {
        let store = self.store.clone();
        self.until(id, "the run finish and go quiet", |r| {
            r.is_finished() && store.pending().is_empty()
        })
        .await
    }

    /// Stop the runner: nothing may be left pending.
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
        assert_eq!(self.store.pending(), [], "no pending effects left");
    }
}

fn approver(user: &str) -> Actor {
    Actor {
        user: SlackUserId::parse(user).unwrap(),
        is_approver: true,
    }
}

#[tokio::test(start_paused = true)]
async fn an_auto_approved_run_snapshots_once_upsizes_once_and_says_so_in_order() {
    let b = Bench::new(RunnerOptions::default());
    let run = b.start(auto()).await;
    let done = b.done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(b.aws.count("CreateSnapshot"), 1);
    assert_eq!(b.aws.count("ModifyReplicationGroup"), 1);
    assert_eq!(
        b.aws.node_type(&group()),
        NodeType::parse("cache.r6g.xlarge").unwrap()
    );
    let said = b.chat.said();
    assert_eq!(
        said[..4],
        [
            "top",
            "note:ApprovedByPolicy",
            "offer_cancel",
            "note:SnapshotStarted"
        ],
        "{said:?}"
    );
    assert_eq!(said.iter().filter(|s| *s == "top").count(), 1);
    assert_eq!(
        said.last().map(String::as_str),
        Some("update:succeeded"),
        "{said:?}"
    );
    assert!(b.pager.said().is_empty(), "nothing to page about");
    assert_eq!(
        b.graphs.said(),
        ["graph posted", "graph ended"],
        "the memory graph once the message is up, and again at the end"
    );
    // Three snapshot polls and three group polls, 30 s apart by the default policy.
    let took = done.updated_at.since(done.created_at);
    assert!(took >= Duration::from_secs(6 * 30), "{took:?}");
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn nobody_approving_pages_once_at_the_timeout_and_a_late_approval_resolves_it() {
    let b = Bench::new(RunnerOptions::default());
    let run = b.start(Policy::default()).await;
    let waiting = b.until(&run, "the escalation", |r| r.page.open).await;
    let waited = waiting.updated_at.since(waiting.created_at);
    assert!(waited >= Duration::from_secs(15 * 60), "{waited:?}");
    assert!(waited < Duration::from_secs(16 * 60), "{waited:?}");
    // An hour later it has paged once, not again.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(b.pager.said(), ["trigger"]);
    let approve = Event::Approve {
        actor: approver("U0ONCALL1"),
        version: None,
        acknowledged: false,
    };
    let submitted = b.runner.submit(&run, approve).await.unwrap();
    assert!(matches!(submitted, Submitted::Accepted(_)), "{submitted:?}");
    assert_eq!(b.done(&run).await.state_name(), "succeeded");
    assert_eq!(b.pager.said(), ["trigger", "resolve"]);
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn throttled_aws_calls_are_retried_on_the_persisted_schedule() {
    let b = Bench::new(RunnerOptions::default());
    b.aws.throttle(3);
    let run = b.start(auto()).await;
    assert_eq!(b.done(&run).await.state_name(), "succeeded");
    assert_eq!(b.aws.count("CreateSnapshot"), 1);
    let retries = b
        .store
        .audit(&run)
        .into_iter()
        .filter(|a| a.kind == "retry")
        .count();
    assert_eq!(retries, 3, "one retry per throttled call");
    assert!(b.pager.said().is_empty());
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_top_message_slack_refuses_pages_on_call_and_the_work_goes_on() {
    let b = Bench::new(RunnerOptions::default());
    b.chat.fail_next(1, false, None);
    let run = b.start(auto()).await;
    let done = b.done(&run).await;
    assert_eq!(done.state_name(), "succeeded");
    assert!(done.message.is_none());
    // Nobody can see the run: on-call is paged, and the page is resolved once it succeeded.
    assert_eq!(b.pager.said(), ["trigger", "resolve"]);
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_message_holds_up_the_messages_after_it_but_not_the_aws_work() {
    let b = Bench::new(RunnerOptions::default());
    // Slack asks us to wait a minute before the top message.
    b.chat.fail_next(1, true, Some(Duration::from_secs(60)));
    let run = b.start(auto()).await;
    b.until(&run, "the snapshot", |_| b.aws.count("CreateSnapshot") == 1)
        .await;
    assert!(b.chat.said().is_empty(), "nothing overtook the top message");
    assert_eq!(b.done(&run).await.state_name(), "succeeded");
    let said = b.chat.said();
    assert_eq!(said[..2], ["top", "note:ApprovedByPolicy"], "{said:?}");
    let retry = b
        .store
        .audit(&run)
        .into_iter()
        .find(|a| a.kind == "retry")
        .unwrap();
    assert!(retry.detail.contains("retrying in 1m"), "{}", retry.detail);
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn hooks_pause_before_the_snapshot_and_resume_after_the_upsize() {
    let b = Bench::new(RunnerOptions::default());
    let policy = Policy {
        pause_url: Some("http://127.0.0.1:9/pause".into()),
        resume_url: Some("http://127.0.0.1:9/resume".into()),
        ..auto()
    };
    let run = b.start(policy).await;
    assert_eq!(b.done(&run).await.state_name(), "succeeded");
    assert_eq!(b.hooks.said(), ["pause", "resume"]);
    b.stop().await;
}

/// Stop after the k-th committed transition, as if the process died there; a new runner on the
/// same store finishes the run, and nothing is done twice — for every k until the run finishes
/// before the runner stops.
#[tokio::test(start_paused = true)]
async fn a_runner_stopped_after_any_transition_is_resumed_without_doing_anything_twice() {
    let mut boundaries = 0;
    for k in 1..100 {
        let options = RunnerOptions {
            halt_after_transitions: Some(k),
        };
        let first = Bench::new(options);
        let run = first.start(auto()).await;
        let (store, aws) = (first.store.clone(), first.aws.clone());
        for _ in 0..(48 * 3600) {
            if first.task.is_finished()
                || (store.run(&run).is_finished() && store.pending().is_empty())
            {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let halted = first.task.is_finished();
        let said_before = first.chat.said();
        if halted {
            first.task.await.unwrap();
            let second = Bench::on(store.clone(), aws.clone(), RunnerOptions::default());
            assert_eq!(second.done(&run).await.state_name(), "succeeded", "k={k}");
            let tops = said_before
                .iter()
                .chain(&second.chat.said())
                .filter(|s| *s == "top")
                .count();
            assert_eq!(tops, 1, "k={k}: one top message");
            second.stop().await;
        } else {
            first.stop().await;
        }
        assert_eq!(aws.count("CreateSnapshot"), 1, "k={k}: one snapshot");
        assert_eq!(aws.count("ModifyReplicationGroup"), 1, "k={k}: one modify");
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

#[tokio::test(start_paused = true)]
async fn an_auto_group_with_an_engine_upgrade_pending_waits_for_an_acknowledged_approval() {
    use crate::workflow::preflight::{Check, PendingChange, Preflight};
    let b = Bench::new(RunnerOptions::default());
    let upgrade = vec![PendingChange::new("EngineVersion", "7.2.4")];
    b.aws.set_preflight(Preflight {
        pending: Check::Known(upgrade.clone()),
        ..Preflight::clean()
    });
    let run = b.start(auto()).await;
    b.until(&run, "the approval wait", |r| {
        matches!(
            r.state,
            crate::workflow::run::State::AwaitingApproval { .. }
        )
    })
    .await;
    let plain = Event::Approve {
        actor: approver("U0ONCALL1"),
        version: None,
        acknowledged: false,
    };
    let refused = b.runner.submit(&run, plain).await.unwrap();
    assert!(matches!(refused, Submitted::Rejected(_)), "{refused:?}");
    assert_eq!(b.aws.count("CreateSnapshot"), 0);
    let acknowledged = Event::Approve {
        actor: approver("U0ONCALL1"),
        version: None,
        acknowledged: true,
    };
    let ok = b.runner.submit(&run, acknowledged).await.unwrap();
    assert!(matches!(ok, Submitted::Accepted(_)), "{ok:?}");
    assert_eq!(b.done(&run).await.state_name(), "succeeded");
    let said = b.chat.said();
    assert!(
        said.iter().any(|s| s == "note:NeedsAcknowledgement"),
        "{said:?}"
    );
    // A change that shows up only after the approval stops the next run before it acts.
    b.aws.set_preflight(Preflight::clean());
    b.aws.set_pending(Check::Known(upgrade));
    let second = b
        .start(Policy {
            cooldown: Duration::ZERO,
            ..auto()
        })
        .await;
    let stopped = b.done(&second).await;
    assert_eq!(stopped.state_name(), "group_changed");
    assert_eq!(b.aws.count("CreateSnapshot"), 1, "the second run took none");
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn aws_work_never_waits_on_a_slow_slack_and_messages_stay_in_order() {
    let b = Bench::new(RunnerOptions::default());
    // Slack answers each call in 300 ms.
    b.chat.set_latency(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let run = b.start(auto()).await;
    while b.aws.count("CreateSnapshot") == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "CreateSnapshot after {took:?}"
    );
    assert_eq!(b.done(&run).await.state_name(), "succeeded");
    let said = b.chat.said();
    assert_eq!(said[..2], ["top", "note:ApprovedByPolicy"], "{said:?}");
    let last = said.last().map(String::as_str);
    assert_eq!(
        last,
        Some("update:succeeded"),
        "the top message shows the end: {said:?}"
    );
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_until_the_steps_deadline_not_for_a_count() {
    let b = Bench::new(RunnerOptions::default());
    let policy = Policy {
        aws_retry: RetryPolicy {
            interval: Duration::from_secs(1),
            attempts: 2,
            backoff: 1.5,
        },
        ..auto()
    };
    // Ten throttled calls in a row: five times the policy's count, well within the deadlines.
    b.aws.throttle(10);
    let run = b.start(policy).await;
    assert_eq!(b.done(&run).await.state_name(), "succeeded");
    let audit = b.store.audit(&run);
    let retries: Vec<&AuditEntry> = audit.iter().filter(|a| a.kind == "retry").collect();
    assert_eq!(retries.len(), 10, "one retry per throttled call");
    assert!(
        retries[0]
            .detail
            .contains("(until approval_timeout passes)"),
        "{}",
        retries[0].detail
    );
    assert!(b.pager.said().is_empty(), "throttling alone pages nobody");
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_throttled_past_its_steps_deadline_fails_the_run_and_says_which() {
    let b = Bench::new(RunnerOptions::default());
    let policy = Policy {
        approval_timeout: Duration::from_secs(120),
        ..auto()
    };
    b.aws.throttle(u32::MAX);
    let run = b.start(policy).await;
    let done = b.done(&run).await;
    let Some(Outcome::Failed { step, error }) = done.outcome() else {
        panic!("{:?}", done.state);
    };
    assert_eq!(*step, Step::Plan);
    assert!(error.contains("Throttling"), "{error}");
    assert!(
        error.contains("retried until approval_timeout passed"),
        "{error}"
    );
    // It took the whole deadline, and not much more.
    let took = done.updated_at.since(done.created_at);
    assert!(took >= Duration::from_secs(120), "{took:?}");
    assert!(took < Duration::from_secs(130), "{took:?}");
    let gave_up = b.store.audit(&run);
    assert!(gave_up.iter().any(|a| a.kind == "gave_up"));
    assert_eq!(b.pager.said(), ["trigger"], "a failed run pages");
    b.stop().await;
}
