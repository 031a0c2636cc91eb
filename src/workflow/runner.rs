//! The runner: the thin, effectful half of the workflow.
//!
//! It commits each decision of [`machine::decide`](super::machine::decide) to the store
//! together with the effects it schedules, executes due effects (one at a time per run, so a
//! run's messages stay in order), retries transient failures on a persisted schedule, and
//! feeds results back as events. A restart picks up every pending effect where it was.
//!
//! It must not decide anything itself: what to do next is always the machine's answer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::{DeliveryConfig, Policy, RetryPolicy};
use crate::domain::{ChannelId, NodeType, ReplicationGroupId, RunId, Timestamp};
use crate::hooks::{HookClient, HookPayload};
use crate::pagerduty::PagerDutyClient;
use crate::slack::api::SlackClient;
use crate::slack::blocks;
use crate::store::{AuditEntry, Change, Created, PendingEffect, Store, StoreError};
use crate::workflow::ports::{AwsError, ElastiCache, GroupStatus};

use super::effect::{Effect, PageAction};
use super::event::{AwsOp, Event, HookPhase};
use super::machine::{Decision, Rejection, decide};
use super::run::{Run, TopMessage, Trigger};
use crate::pagerduty::page_event;

/// The Slack message-metadata event type that marks a run's top message.
pub const TOP_MESSAGE_EVENT: &str = "redis_autoscaler_run";

/// Everything the runner talks to.
pub struct Deps {
    pub store: Arc<Store>,
    pub aws: Arc<dyn ElastiCache>,
    pub slack: SlackClient,
    pub pagerduty: PagerDutyClient,
    pub hooks: HookClient,
    pub delivery: DeliveryConfig,
}

/// Test and demo controls.
#[derive(Debug, Clone, Default)]
pub struct RunnerOptions {
    /// Stop committing and dispatching after this many accepted transitions, as if the
    /// process died right after that commit. Used to test resuming at each step boundary.
    pub halt_after_transitions: Option<usize>,
}

/// Something a run did, as announced to observers (tests, the demo).
#[derive(Debug, Clone)]
pub struct Committed {
    pub run: Run,
    pub event: &'static str,
    pub summary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the runner is stopped")]
    Halted,
    #[error("internal error: {0}")]
    Internal(String),
}

/// What starting a run did.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    Created(RunId),
    /// The group already has an active run: nothing was created.
    AlreadyActive(RunId),
}

/// What submitting an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Accepted(Box<Run>),
    Rejected(Rejection),
    Ignored(String),
}

/// A request to start a run.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub group: ReplicationGroupId,
    pub channel: ChannelId,
    pub trigger: Trigger,
    pub requested_type: Option<NodeType>,
    pub policy: Policy,
}

#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    deps: Deps,
    options: RunnerOptions,
    notify: Notify,
    busy: Mutex<HashSet<RunId>>,
    transitions: AtomicUsize,
    halted: AtomicBool,
    ready: AtomicBool,
    committed: broadcast::Sender<Committed>,
}

/// The result of executing one effect.
enum Executed {
    /// Feed this event to the machine.
    Event(Event),
    /// Nothing for the machine; mark the effect done.
    Done,
    /// Try again later; after the last attempt feed `fail` to the machine (or, with `None`,
    /// just record that delivery gave up).
    Retry {
        error: String,
        after: Option<Duration>,
        policy: RetryPolicy,
        fail: Option<Box<Event>>,
    },
    /// Delivery failed for good and the machine need not know (an update or a note).
    GaveUp(String),
}

impl Executed {
    /// A failed attempt: try again later if the error is worth it, else tell the machine now.
    fn failed(
        retryable: bool,
        error: String,
        after: Option<Duration>,
        policy: RetryPolicy,
        fail: Event,
    ) -> Executed {
        if retryable {
            Executed::Retry {
                error,
                after,
                policy,
                fail: Some(Box::new(fail)),
            }
        } else {
            Executed::Event(fail)
        }
    }
}

impl Runner {
    pub fn new(deps: Deps, options: RunnerOptions) -> Runner {
        let (committed, _) = broadcast::channel(1024);
        Runner {
            inner: Arc::new(Inner {
                deps,
                options,
                notify: Notify::new(),
                busy: Mutex::new(HashSet::new()),
                transitions: AtomicUsize::new(0),
                halted: AtomicBool::new(false),
                ready: AtomicBool::new(false),
                committed,
            }),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.deps.store
    }

    pub fn slack(&self) -> &SlackClient {
        &self.inner.deps.slack
    }

    pub fn aws(&self) -> &Arc<dyn ElastiCache> {
        &self.inner.deps.aws
    }

    /// Observe every committed transition.
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.inner.committed.subscribe()
    }

    /// True once the dispatcher has started (and so resumed the unfinished runs).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst) && !self.inner.halted.load(Ordering::SeqCst)
    }

    /// Start a run, unless its group already has an active one.
    pub async fn start(&self, req: StartRequest) -> Result<Started, RunnerError> {
        self.check_running()?;
        let now = Timestamp::now();
        let run = Run::new(
            RunId::generate(),
            req.group,
            req.channel,
            req.trigger,
            req.requested_type,
            req.policy,
            now,
        );
        let (actor, how) = match &run.trigger {
            Trigger::Alarm { alarm_name, .. } => {
                ("alarm".to_string(), format!("alarm `{alarm_name}`"))
            }
            Trigger::Command { user, .. } => (user.to_string(), format!("{user}")),
        };
        let requested = run
            .requested_type
            .as_ref()
            .map(|t| format!(" asking for {t}"))
            .unwrap_or_default();
        let change = Change {
            effects: vec![super::machine::Scheduled {
                effect: Effect::FetchPlan,
                due: now,
            }],
            drop_pending_work: false,
            audit: vec![AuditEntry::new(
                now,
                actor,
                "created",
                format!("run for {} started by {how}{requested}", run.group),
            )],
        };
        let store = self.inner.deps.store.clone();
        let run2 = run.clone();
        let created = blocking(move || store.create_run(&run2, &change)).await??;
        match created {
            Created::Created => {
                info!(run_id = %run.id, group = %run.group, "run created");
                crate::telemetry::run_started(match run.trigger {
                    Trigger::Alarm { .. } => "alarm",
                    Trigger::Command { .. } => "command",
                });
                self.announce(&run, "created", "run created".into());
                self.inner.notify.notify_one();
                Ok(Started::Created(run.id))
            }
            Created::AlreadyActive(id) => Ok(Started::AlreadyActive(id)),
        }
    }

    /// Feed an event (a click, an alarm) to a run.
    pub async fn submit(&self, run_id: &RunId, event: Event) -> Result<Submitted, RunnerError> {
        self.apply(run_id, None, event, Vec::new()).await
    }

    fn check_running(&self) -> Result<(), RunnerError> {
        if self.inner.halted.load(Ordering::SeqCst) {
            Err(RunnerError::Halted)
        } else {
            Ok(())
        }
    }

    fn announce(&self, run: &Run, event: &'static str, summary: String) {
        let _ = self.inner.committed.send(Committed {
            run: run.clone(),
            event,
            summary,
        });
    }

    /// Decide and commit in one store transaction; mark `completed` done in it too.
    async fn apply(
        &self,
        run_id: &RunId,
        completed: Option<i64>,
        event: Event,
        mut audit: Vec<AuditEntry>,
    ) -> Result<Submitted, RunnerError> {
        self.check_running()?;
        let now = Timestamp::now();
        let store = self.inner.deps.store.clone();
        let id = run_id.clone();
        let ev = event.clone();
        let (result, summary) = blocking(move || {
            store.update_run(&id, completed, now, move |run| {
                let actor = actor_of(&ev);
                match decide(run, &ev, now) {
                    Decision::Accept(t) => {
                        record_progress(run, &t.run);
                        audit.push(AuditEntry::new(now, actor, ev.name(), t.summary.clone()));
                        let change = Change {
                            effects: t.effects,
                            drop_pending_work: t.drop_pending_work,
                            audit,
                        };
                        (
                            Some(t.run.clone()),
                            change,
                            (Submitted::Accepted(Box::new(t.run)), t.summary),
                        )
                    }
                    Decision::Reject(r) => {
                        audit.push(AuditEntry::new(
                            now,
                            actor,
                            "rejected",
                            format!("{} refused: {r}", ev.name()),
                        ));
                        (
                            None,
                            Change {
                                audit,
                                ..Change::default()
                            },
                            (Submitted::Rejected(r), String::new()),
                        )
                    }
                    Decision::Ignore(why) => {
                        audit.push(AuditEntry::new(
                            now,
                            actor,
                            "ignored",
                            format!("{}: {why}", ev.name()),
                        ));
                        (
                            None,
                            Change {
                                audit,
                                ..Change::default()
                            },
                            (Submitted::Ignored(why), String::new()),
                        )
                    }
                }
            })
        })
        .await??;
        if let Submitted::Accepted(run) = &result {
            info!(run_id = %run.id, group = %run.group, event = event.name(), state = run.state_name(), "{summary}");
            self.announce(run, event.name(), summary);
            let n = self.inner.transitions.fetch_add(1, Ordering::SeqCst) + 1;
            if self.inner.options.halt_after_transitions == Some(n) {
                warn!("halting after {n} transitions (test control)");
                self.inner.halted.store(true, Ordering::SeqCst);
            }
        }
        self.inner.notify.notify_one();
        Ok(result)
    }

    /// Execute due effects until `shutdown` resolves; then let in-flight effects finish
    /// (up to `grace`), leaving everything else pending for the next start.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>, grace: Duration) {
        tokio::pin!(shutdown);
        let mut tasks: JoinSet<()> = JoinSet::new();
        self.inner.ready.store(true, Ordering::SeqCst);
        info!("runner started; resuming pending work");
        loop {
            if self.inner.halted.load(Ordering::SeqCst) {
                break;
            }
            let now = Timestamp::now();
            let busy: Vec<RunId> = self.busy().iter().cloned().collect();
            let store = self.inner.deps.store.clone();
            let due = match blocking(move || store.due_effects(now, &busy, 64)).await {
                Ok(Ok(due)) => due,
                Ok(Err(e)) | Err(RunnerError::Store(e)) => {
                    error!(error = %e, "could not read pending effects; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    error!(error = %e, "could not read pending effects; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for pending in due {
                self.busy().insert(pending.run_id.clone());
                let me = self.clone();
                let span = info_span!(
                    "run",
                    run_id = %pending.run_id,
                    group = tracing::field::Empty,
                    effect = pending.effect.name(),
                    attempt = pending.attempt
                );
                tasks.spawn(
                    async move {
                        // Frees the run for its next effect however this task ends, a panic
                        // included.
                        let _release = Release {
                            runner: me.clone(),
                            run_id: pending.run_id.clone(),
                        };
                        if let Err(e) = me.execute(pending).await
                            && !matches!(e, RunnerError::Halted)
                        {
                            error!(error = %e, "effect could not be completed; it stays pending");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    .instrument(span),
                );
            }
            let busy: Vec<RunId> = self.busy().iter().cloned().collect();
            let store = self.inner.deps.store.clone();
            let next = blocking(move || store.next_due(&busy))
                .await
                .ok()
                .and_then(|r| r.ok())
                .flatten();
            let wait = match next {
                Some(t) => Duration::from_millis(
                    (t.as_millis() - Timestamp::now().as_millis()).max(0) as u64,
                ),
                None => Duration::from_secs(60),
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.inner.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = res
                        && e.is_panic()
                    {
                        error!("an effect task panicked: {e}");
                    }
                }
            }
        }
        if self.inner.halted.load(Ordering::SeqCst) {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            info!("runner halted");
            return;
        }
        info!(
            in_flight = tasks.len(),
            "runner stopping; letting in-flight effects finish"
        );
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            warn!(
                "in-flight effects did not finish within {grace:?}; they stay pending for the next start"
            );
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        self.inner.halted.store(true, Ordering::SeqCst);
        info!("runner stopped");
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, HashSet<RunId>> {
        self.inner.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn execute(&self, pending: PendingEffect) -> Result<(), RunnerError> {
        self.check_running()?;
        let store = self.inner.deps.store.clone();
        let id = pending.run_id.clone();
        let Some(run) = blocking(move || store.run(&id)).await?? else {
            return Err(RunnerError::Internal(format!(
                "effect {} has no run",
                pending.id
            )));
        };
        tracing::Span::current().record("group", run.group.as_str());
        let mut audit = Vec::new();
        let executed = self.perform(&run, &pending, &mut audit).await;
        self.check_running()?;
        let now = Timestamp::now();
        match executed {
            Executed::Event(event) => {
                self.apply(&run.id, Some(pending.id), event, audit).await?;
            }
            Executed::Done => self.complete(&run.id, pending.id, now, audit).await?,
            Executed::GaveUp(why) => {
                warn!(run_id = %run.id, effect = pending.effect.name(), "gave up: {why}");
                self.complete(&run.id, pending.id, now, audit).await?
            }
            Executed::Retry {
                error,
                after,
                policy,
                fail,
            } => {
                if pending.attempt >= policy.attempts {
                    warn!(run_id = %run.id, effect = pending.effect.name(), attempts = pending.attempt, "giving up: {error}");
                    audit.push(AuditEntry::new(
                        now,
                        "runner",
                        "gave_up",
                        format!(
                            "{} failed {} time(s); last error: {error}",
                            pending.effect.name(),
                            pending.attempt
                        ),
                    ));
                    match fail {
                        Some(event) => {
                            self.apply(&run.id, Some(pending.id), *event, audit).await?;
                        }
                        None => self.complete(&run.id, pending.id, now, audit).await?,
                    }
                } else {
                    let next = pending.attempt + 1;
                    let wait = after.unwrap_or_else(|| policy.delay_before(next));
                    debug!(run_id = %run.id, effect = pending.effect.name(), "retrying in {wait:?}: {error}");
                    let entry = AuditEntry::new(
                        now,
                        "runner",
                        "retry",
                        format!(
                            "{} attempt {}/{} failed ({error}); retrying in {}",
                            pending.effect.name(),
                            pending.attempt,
                            policy.attempts,
                            crate::domain::format_duration(wait)
                        ),
                    );
                    let store = self.inner.deps.store.clone();
                    let run_id = run.id.clone();
                    blocking(move || {
                        for a in &audit {
                            store.audit(&run_id, a)?;
                        }
                        store.retry_effect(pending.id, now.plus(wait), next, &entry, &run_id)
                    })
                    .await??;
                }
            }
        }
        Ok(())
    }

    async fn complete(
        &self,
        run_id: &RunId,
        effect_id: i64,
        now: Timestamp,
        audit: Vec<AuditEntry>,
    ) -> Result<(), RunnerError> {
        let store = self.inner.deps.store.clone();
        let run_id = run_id.clone();
        blocking(move || {
            let (last, rest) = match audit.split_last() {
                Some((l, r)) => (Some(l.clone()), r.to_vec()),
                None => (None, Vec::new()),
            };
            for a in &rest {
                store.audit(&run_id, a)?;
            }
            store.complete_effect(effect_id, &run_id, now, last.as_ref())
        })
        .await??;
        Ok(())
    }

    /// Do one effect's I/O and say what came of it. Idempotent by construction: every step
    /// looks before it acts.
    async fn perform(
        &self,
        run: &Run,
        pending: &PendingEffect,
        audit: &mut Vec<AuditEntry>,
    ) -> Executed {
        let deps = &self.inner.deps;
        let now = Timestamp::now();
        let aws_retry = run.policy.aws_retry;
        let delivery = deps.delivery.retry;
        let aws_fail = |op: AwsOp, e: &AwsError| -> Executed {
            let fail = Event::AwsFailed {
                op,
                error: e.clone(),
            };
            Executed::failed(e.is_retryable(), e.to_string(), None, aws_retry, fail)
        };
        let mut log = |actor: &str, kind: &str, detail: String| {
            audit.push(AuditEntry::new(Timestamp::now(), actor, kind, detail));
        };
        match &pending.effect {
            Effect::FetchPlan => {
                let group = match deps.aws.describe_group(&run.group).await {
                    Ok(g) => {
                        log(
                            "aws",
                            "DescribeReplicationGroups",
                            format!("{}: {} on {}", g.id, g.status, opt(&g.node_type)),
                        );
                        g
                    }
                    Err(e) => {
                        log("aws", "DescribeReplicationGroups", format!("error: {e}"));
                        return aws_fail(AwsOp::Plan, &e);
                    }
                };
                match deps.aws.allowed_scale_ups(&run.group).await {
                    Ok(allowed) => {
                        log(
                            "aws",
                            "ListAllowedNodeTypeModifications",
                            format!("{} scale-up(s)", allowed.len()),
                        );
                        Executed::Event(Event::PlanFetched { group, allowed })
                    }
                    Err(e) => {
                        log(
                            "aws",
                            "ListAllowedNodeTypeModifications",
                            format!("error: {e}"),
                        );
                        aws_fail(AwsOp::Plan, &e)
                    }
                }
            }
            Effect::CreateSnapshot { name } => {
                match deps.aws.describe_snapshot(name).await {
                    Ok(Some(s)) => {
                        log(
                            "aws",
                            "DescribeSnapshots",
                            format!("{name} already exists: {}", s.status),
                        );
                        return Executed::Event(Event::SnapshotStarted { status: s.status });
                    }
                    Ok(None) => log(
                        "aws",
                        "DescribeSnapshots",
                        format!("{name} does not exist yet"),
                    ),
                    Err(e) => {
                        log("aws", "DescribeSnapshots", format!("error: {e}"));
                        return aws_fail(AwsOp::CreateSnapshot, &e);
                    }
                }
                match deps.aws.create_snapshot(&run.group, name).await {
                    Ok(s) => {
                        log("aws", "CreateSnapshot", format!("{name}: {}", s.status));
                        Executed::Event(Event::SnapshotStarted { status: s.status })
                    }
                    Err(AwsError::SnapshotAlreadyExists { message }) => {
                        log(
                            "aws",
                            "CreateSnapshot",
                            format!("{name} already exists ({message}); it is ours"),
                        );
                        Executed::Event(Event::SnapshotStarted {
                            status: crate::workflow::ports::SnapshotStatus::Creating,
                        })
                    }
                    Err(e) => {
                        log("aws", "CreateSnapshot", format!("error: {e}"));
                        aws_fail(AwsOp::CreateSnapshot, &e)
                    }
                }
            }
            Effect::PollSnapshot { name } => match deps.aws.describe_snapshot(name).await {
                Ok(s) => {
                    let status = s.map(|s| s.status);
                    log(
                        "aws",
                        "DescribeSnapshots",
                        format!(
                            "{name}: {}",
                            status
                                .as_ref()
                                .map(|s| s.to_string())
                                .unwrap_or_else(|| "missing".into())
                        ),
                    );
                    Executed::Event(Event::SnapshotPolled { status })
                }
                Err(e) => {
                    log("aws", "DescribeSnapshots", format!("error: {e}"));
                    aws_fail(AwsOp::PollSnapshot, &e)
                }
            },
            Effect::ModifyNodeType { target } => {
                match deps.aws.describe_group(&run.group).await {
                    Ok(g) if g.node_type.as_ref() == Some(target) && g.is_available() => {
                        log(
                            "aws",
                            "DescribeReplicationGroups",
                            format!("already on {target}; no modification needed"),
                        );
                        return Executed::Event(Event::ModifyRequested { group: g });
                    }
                    Ok(g) if g.status == GroupStatus::Modifying => {
                        log(
                            "aws",
                            "DescribeReplicationGroups",
                            "already modifying; not asking again".to_string(),
                        );
                        return Executed::Event(Event::ModifyRequested { group: g });
                    }
                    Ok(g) => log(
                        "aws",
                        "DescribeReplicationGroups",
                        format!("{} on {}", g.status, opt(&g.node_type)),
                    ),
                    Err(e) => {
                        log("aws", "DescribeReplicationGroups", format!("error: {e}"));
                        return aws_fail(AwsOp::Modify, &e);
                    }
                }
                match deps.aws.modify_node_type(&run.group, target).await {
                    Ok(g) => {
                        log(
                            "aws",
                            "ModifyReplicationGroup",
                            format!(
                                "CacheNodeType={target} ApplyImmediately=true → {}",
                                g.status
                            ),
                        );
                        Executed::Event(Event::ModifyRequested { group: g })
                    }
                    Err(e) => {
                        log("aws", "ModifyReplicationGroup", format!("error: {e}"));
                        aws_fail(AwsOp::Modify, &e)
                    }
                }
            }
            Effect::PollGroup => match deps.aws.describe_group(&run.group).await {
                Ok(g) => {
                    log(
                        "aws",
                        "DescribeReplicationGroups",
                        format!("{} on {}", g.status, opt(&g.node_type)),
                    );
                    Executed::Event(Event::GroupPolled { group: g })
                }
                Err(e) => {
                    log("aws", "DescribeReplicationGroups", format!("error: {e}"));
                    aws_fail(AwsOp::PollGroup, &e)
                }
            },
            Effect::PostTopMessage => {
                if run.message.is_some() {
                    log(
                        "slack",
                        "chat.postMessage",
                        "top message already posted; not posting again".into(),
                    );
                    return Executed::Done;
                }
                // An earlier attempt may have reached Slack even if its answer never came back
                // (a timeout, a crash): look for the run's message before posting one.
                let store = deps.store.clone();
                let effect_id = pending.id;
                let tried_before = matches!(
                    blocking(move || store.mark_started(effect_id, now)).await,
                    Ok(Ok(true))
                ) || pending.attempt > 1;
                let found = if tried_before {
                    match deps
                        .slack
                        .find_by_metadata(
                            &run.channel,
                            run.created_at.as_secs() - 60,
                            TOP_MESSAGE_EVENT,
                            "run_id",
                            run.id.as_str(),
                        )
                        .await
                    {
                        Ok(found) => found,
                        Err(e) => {
                            log("slack", "conversations.history", format!("error: {e}"));
                            return Executed::Retry {
                                error: e.to_string(),
                                after: e.retry_after(),
                                policy: delivery,
                                fail: Some(Box::new(Event::TopMessageFailed {
                                    error: format!("could not check for an earlier post: {e}"),
                                })),
                            };
                        }
                    }
                } else {
                    None
                };
                let posted = match found {
                    Some(ts) => {
                        log(
                            "slack",
                            "conversations.history",
                            format!(
                                "the top message was already posted (ts {ts}); not posting again"
                            ),
                        );
                        // It shows the run as it was then; bring it up to date.
                        let msg = blocks::render_top(run, now);
                        if let Err(e) = deps.slack.update_message(&run.channel, &ts, &msg).await {
                            log("slack", "chat.update", format!("error: {e}"));
                        }
                        crate::slack::api::PostedMessage {
                            channel: run.channel.clone(),
                            ts,
                        }
                    }
                    None => {
                        let msg = blocks::render_top(run, now);
                        let payload = serde_json::json!({ "run_id": run.id.as_str() });
                        match deps
                            .slack
                            .post_message_with_metadata(
                                &run.channel,
                                &msg,
                                TOP_MESSAGE_EVENT,
                                &payload,
                            )
                            .await
                        {
                            Ok(posted) => {
                                log(
                                    "slack",
                                    "chat.postMessage",
                                    format!(
                                        "top message posted in {} (ts {})",
                                        posted.channel, posted.ts
                                    ),
                                );
                                posted
                            }
                            Err(e) => {
                                log("slack", "chat.postMessage", format!("error: {e}"));
                                let fail = Event::TopMessageFailed {
                                    error: e.to_string(),
                                };
                                return Executed::failed(
                                    e.is_retryable(),
                                    e.to_string(),
                                    e.retry_after(),
                                    delivery,
                                    fail,
                                );
                            }
                        }
                    }
                };
                let permalink = match deps.slack.permalink(&posted.channel, &posted.ts).await {
                    Ok(link) => Some(link),
                    Err(e) => {
                        log("slack", "chat.getPermalink", format!("error: {e}"));
                        None
                    }
                };
                Executed::Event(Event::TopMessagePosted {
                    message: TopMessage {
                        channel: posted.channel,
                        ts: posted.ts,
                        permalink,
                    },
                })
            }
            Effect::UpdateTopMessage => {
                let Some(top) = &run.message else {
                    return Executed::Done;
                };
                let store = deps.store.clone();
                let (rid, eid) = (run.id.clone(), pending.id);
                if let Ok(Ok(true)) =
                    blocking(move || store.has_later_pending(&rid, eid, "update_top_message")).await
                {
                    return Executed::Done;
                }
                let msg = blocks::render_top(run, now);
                match deps.slack.update_message(&top.channel, &top.ts, &msg).await {
                    Ok(()) => {
                        log(
                            "slack",
                            "chat.update",
                            format!("top message shows {}", run.state_name()),
                        );
                        Executed::Done
                    }
                    Err(e) => {
                        log("slack", "chat.update", format!("error: {e}"));
                        slack_retry(e, delivery)
                    }
                }
            }
            Effect::PostNote { note } => {
                let Some(top) = &run.message else {
                    log(
                        "slack",
                        "chat.postMessage",
                        "no top message to reply to; thread note skipped".into(),
                    );
                    return Executed::Done;
                };
                let msg = blocks::render_note(run, note);
                match deps
                    .slack
                    .post_message(&top.channel, Some(&top.ts), &msg)
                    .await
                {
                    Ok(posted) => {
                        log(
                            "slack",
                            "chat.postMessage",
                            format!("thread reply (ts {}): {}", posted.ts, msg.text),
                        );
                        Executed::Done
                    }
                    Err(e) => {
                        log(
                            "slack",
                            "chat.postMessage",
                            format!("thread reply failed: {e}"),
                        );
                        slack_retry(e, delivery)
                    }
                }
            }
            Effect::Reply { note } => {
                let Trigger::Command {
                    response_url: Some(url),
                    user,
                } = &run.trigger
                else {
                    log(
                        "slack",
                        "response_url",
                        "nobody to answer privately; skipped".into(),
                    );
                    return Executed::Done;
                };
                let msg = blocks::render_note(run, note);
                match deps.slack.respond(url, &msg).await {
                    Ok(()) => {
                        log(
                            "slack",
                            "response_url",
                            format!("answered {user}: {}", msg.text),
                        );
                        Executed::Done
                    }
                    Err(e) => {
                        log(
                            "slack",
                            "response_url",
                            format!("answer to {user} failed: {e}"),
                        );
                        slack_retry(e, delivery)
                    }
                }
            }
            Effect::OfferCancel => {
                let Some(top) = &run.message else {
                    return Executed::Done;
                };
                if !run.is_cancellable() {
                    log(
                        "slack",
                        "chat.postMessage",
                        "cancel button not offered: the run can no longer be cancelled".into(),
                    );
                    return Executed::Done;
                }
                let msg = blocks::render_cancel_offer(run);
                match deps
                    .slack
                    .post_message(&top.channel, Some(&top.ts), &msg)
                    .await
                {
                    Ok(posted) => {
                        log(
                            "slack",
                            "chat.postMessage",
                            format!("cancel button offered (ts {})", posted.ts),
                        );
                        Executed::Event(Event::CancelOffered { ts: posted.ts })
                    }
                    Err(e) => {
                        log(
                            "slack",
                            "chat.postMessage",
                            format!("cancel button failed: {e}"),
                        );
                        slack_retry(e, delivery)
                    }
                }
            }
            Effect::WithdrawCancelOffer { ts, reason } => {
                let Some(top) = &run.message else {
                    return Executed::Done;
                };
                let msg = blocks::render_cancel_withdrawn(reason);
                match deps.slack.update_message(&top.channel, ts, &msg).await {
                    Ok(()) => {
                        log(
                            "slack",
                            "chat.update",
                            format!("cancel button withdrawn: {}", blocks::cancel_gone(reason)),
                        );
                        Executed::Done
                    }
                    Err(e) => {
                        log(
                            "slack",
                            "chat.update",
                            format!("withdrawing the cancel button failed: {e}"),
                        );
                        slack_retry(e, delivery)
                    }
                }
            }
            Effect::Page { action } => {
                let event = page_event(run, action, now);
                let what = match action {
                    PageAction::Trigger(_) => "trigger",
                    PageAction::Resolve => "resolve",
                };
                match deps.pagerduty.send(&event).await {
                    Ok(_) => {
                        log(
                            "pagerduty",
                            what,
                            format!("accepted (dedup_key {})", run.id),
                        );
                        Executed::Event(Event::PageDelivered {
                            action: action.clone(),
                        })
                    }
                    Err(e) => {
                        log("pagerduty", what, format!("error: {e}"));
                        let fail = Event::PageFailed {
                            action: action.clone(),
                            error: e.to_string(),
                        };
                        Executed::failed(
                            e.is_retryable(),
                            e.to_string(),
                            None,
                            delivery.for_pages(),
                            fail,
                        )
                    }
                }
            }
            Effect::CallHook { phase } => {
                let (url, name) = match phase {
                    HookPhase::Pause => (run.policy.pause_url.as_deref(), "pause"),
                    HookPhase::Resume => (run.policy.resume_url.as_deref(), "resume"),
                };
                let Some(url) = url else {
                    log("hook", name, "no hook configured".into());
                    return Executed::Event(Event::HookDone { phase: *phase });
                };
                let Some(plan) = run.plan() else {
                    return Executed::Event(Event::HookFailed {
                        phase: *phase,
                        error: "no plan".into(),
                    });
                };
                let payload = HookPayload {
                    run_id: run.id.clone(),
                    group: run.group.clone(),
                    phase: name,
                    from_node_type: plan.current.clone(),
                    to_node_type: plan.target.clone(),
                    snapshot: Some(crate::domain::SnapshotName::for_run(&run.id)),
                    outcome: run.outcome().map(|o| o.name().to_string()),
                };
                match deps
                    .hooks
                    .call(url, &payload, run.policy.hook_timeout, now)
                    .await
                {
                    Ok(()) => {
                        log("hook", name, "accepted".into());
                        Executed::Event(Event::HookDone { phase: *phase })
                    }
                    Err(e) => {
                        log("hook", name, format!("error: {e}"));
                        let fail = Event::HookFailed {
                            phase: *phase,
                            error: e.to_string(),
                        };
                        Executed::failed(e.is_retryable(), e.to_string(), None, delivery, fail)
                    }
                }
            }
            Effect::Timer { timer } => Executed::Event(Event::TimerFired { timer: *timer }),
        }
    }
}

fn slack_retry(e: crate::slack::api::SlackError, policy: RetryPolicy) -> Executed {
    if e.is_retryable() {
        Executed::Retry {
            error: e.to_string(),
            after: e.retry_after(),
            policy,
            // A thread reply or an update that never arrives is logged and audited; the run
            // goes on (the top message's next update shows the state anyway).
            fail: None,
        }
    } else {
        Executed::GaveUp(e.to_string())
    }
}

fn opt(t: &Option<NodeType>) -> String {
    t.as_ref()
        .map(|t| t.to_string())
        .unwrap_or_else(|| "?".into())
}

/// Marks a run free again (and wakes the dispatcher) when an effect task ends.
struct Release {
    runner: Runner,
    run_id: RunId,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.runner.busy().remove(&self.run_id);
        self.runner.inner.notify.notify_one();
    }
}

/// Metrics for what a transition finished: steps that ended, and the run if it ended.
fn record_progress(before: &Run, after: &Run) {
    use super::run::StepStatus;
    for (i, step) in after.steps.iter().enumerate() {
        let was_open = before.steps.get(i).is_none_or(|s| s.ended.is_none());
        if let (true, Some(took)) = (was_open, step.took()) {
            let status = match step.status {
                StepStatus::Done => "done",
                StepStatus::Failed => "failed",
                StepStatus::TimedOut => "timed_out",
                StepStatus::Cancelled => "cancelled",
                StepStatus::Running => continue,
            };
            crate::telemetry::step_finished(step.step.label(), status, took);
        }
    }
    if after.is_finished()
        && !before.is_finished()
        && let Some(outcome) = after.outcome()
    {
        crate::telemetry::run_finished(outcome.name());
    }
}

/// Who did it, for the audit trail.
fn actor_of(event: &Event) -> String {
    match event {
        Event::Approve { actor }
        | Event::Deny { actor }
        | Event::Cancel { actor }
        | Event::ChooseSize { actor, .. } => actor.user.to_string(),
        Event::AlarmRepeated { .. } | Event::AlarmCleared { .. } => "alarm".into(),
        Event::TimerFired { .. } => "timer".into(),
        Event::HookDone { .. } | Event::HookFailed { .. } => "hook".into(),
        Event::PageDelivered { .. } | Event::PageFailed { .. } => "pagerduty".into(),
        Event::TopMessagePosted { .. } | Event::TopMessageFailed { .. } => "slack".into(),
        _ => "aws".into(),
    }
}

/// Run blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RunnerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RunnerError::Internal(format!("store task failed: {e}")))
}
