//! Property tests for the machine: random event sequences fed to a run from [`open`].
//!
//! Two ways of making sequences. *Anything, any time*: every kind of event (clicks by
//! approvers, strangers and the requester, alarm repeats and clears, AWS results and
//! failures of every kind, timers, hook and page results, deliveries) in any order, so
//! duplicates, late answers and answers to questions never asked are all in there. *As the
//! runner would*: an outbox of the effects the machine scheduled, from which a step executes
//! one (its answer good, odd or an error of any kind) and feeds the result back, while people
//! and alarms act in between and time passes.
//!
//! What must hold: nothing panics; every run the machine produces survives the store (serde)
//! unchanged; a finished run stays finished — people are refused, everything else but facts
//! about its messages and pages is ignored, and nothing but messages and pages is scheduled;
//! the snapshot and the upsize are asked for by name of the run and the approved target only,
//! never again once AWS took them, and — as the runner delivers — at most once each, unless
//! AWS refused the previous try as busy.

use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::{Index, select};

use crate::domain::{
    CacheClusterId, ChannelId, MessageTs, NodeType, ReplicationGroupId, RunId, SlackUserId,
    SnapshotName, Timestamp, node_types::scale_ups_from,
};
use crate::workflow::effect::{Effect, PageAction, PageReason, Scheduled};
use crate::workflow::event::{Actor, AwsOp, Event, HookPhase, Timer};
use crate::workflow::forecast::{Forecast, Trend};
use crate::workflow::policy::{ApprovalMode, OnApprovalTimeout, PendingChanges, Policy};
use crate::workflow::ports::{AwsError, ClusterMode, GroupInfo, SnapshotStatus};
use crate::workflow::preflight::{Check, PendingChange, Preflight};
use crate::workflow::run::{Run, State, StepStatus, TopMessage, Trigger};

use super::{Decision, StartRequest, Submitted, commit, decide, open};

const T0: i64 = 1_764_121_929_000;
const GROUP: &str = "prod-jobs";
const CURRENT: &str = "cache.r6g.large";
const TYPES: &[&str] = &[
    "cache.r6g.large",
    "cache.r6g.xlarge",
    "cache.r6g.2xlarge",
    "cache.r6g.4xlarge",
    "cache.r6g.8xlarge",
    "cache.m6g.large",
];
/// Two on-call engineers, the person who asked for the run, and someone else.
const USERS: &[&str] = &["U0ONCALL1", "U0ONCALL2", "U0REQUEST", "U0STRANGE"];
/// A few delivery ids, so that repeats of one come up (`eventbridge:first` started the run).
const DELIVERIES: &[&str] = &["eventbridge:first", "sns:2", "sns:3", "eventbridge:4", ""];

fn nt(s: &str) -> NodeType {
    NodeType::parse(s).unwrap()
}

fn run_id() -> RunId {
    RunId::parse("r-abcdefgh").unwrap()
}

fn node_type() -> impl Strategy<Value = NodeType> {
    select(TYPES).prop_map(nt)
}

fn actor() -> impl Strategy<Value = Actor> {
    (select(USERS), any::<bool>()).prop_map(|(u, is_approver)| Actor {
        user: SlackUserId::parse(u).unwrap(),
        is_approver,
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        (
            prop_oneof![Just(ApprovalMode::Required), Just(ApprovalMode::Auto)],
            prop_oneof![
                Just(OnApprovalTimeout::Escalate),
                Just(OnApprovalTimeout::Approve)
            ],
            prop_oneof![3 => Just(1u8), 1 => Just(2), 1 => Just(3)],
            any::<bool>(),
        ),
        (
            2u32..=5,
            prop_oneof![Just(60u64), Just(3600)],
            prop_oneof![
                8 => Just(Some(nt("cache.r6g.4xlarge"))),
                1 => Just(None),
                1 => Just(Some(nt(CURRENT))),
            ],
            any::<bool>(),
            prop_oneof![
                5 => Just(PendingChanges::Acknowledge),
                1 => Just(PendingChanges::Refuse)
            ],
        ),
    )
        .prop_map(
            |(
                (approval, on_approval_timeout, min_approvals, allow_self_approval),
                (snapshot_max_polls, modify_timeout, max_node_type, hooks, pending_changes),
            )| Policy {
                approval,
                on_approval_timeout,
                min_approvals,
                allow_self_approval,
                snapshot_max_polls,
                modify_timeout: Duration::from_secs(modify_timeout),
                max_node_type,
                pause_url: hooks.then(|| "http://127.0.0.1:1/pause".into()),
                resume_url: hooks.then(|| "http://127.0.0.1:1/resume".into()),
                pending_changes,
                ..Policy::default()
            },
        )
}

fn trigger() -> impl Strategy<Value = Trigger> {
    prop_oneof![
        Just(Trigger::Alarm {
            delivery_id: "eventbridge:first".into(),
            alarm_name: "Redis memory: prod-jobs".into(),
            reason: "Threshold Crossed".into(),
            value: Some(93.2),
            at: Timestamp::from_millis(T0),
        }),
        Just(Trigger::Command {
            user: SlackUserId::parse("U0REQUEST").unwrap(),
            response_url: None,
        }),
        Just(Trigger::ScaleDown {
            at: Timestamp::from_millis(T0),
            evidence: crate::workflow::run::ScaleDownEvidence {
                from: NodeType::parse("cache.r6g.xlarge").unwrap(),
                to: NodeType::parse("cache.r6g.large").unwrap(),
                peak: 20.0,
                average: 15.0,
                peak_on_smaller: 41.0,
                below: 50.0,
                verify_below: 75.0,
                window: std::time::Duration::from_secs(3600),
                points: 60,
                since_change: None,
            },
        }),
    ]
}

fn start() -> impl Strategy<Value = StartRequest> {
    (
        trigger(),
        prop::option::weighted(0.1, node_type()),
        policy(),
    )
        .prop_map(|(trigger, requested_type, policy)| StartRequest {
            group: ReplicationGroupId::parse(GROUP).unwrap(),
            channel: ChannelId::parse("C0123ABCD").unwrap(),
            trigger,
            requested_type,
            policy,
        })
}

fn aws_error() -> impl Strategy<Value = AwsError> {
    let (code, message) = (String::from("Code"), String::from("message"));
    prop_oneof![
        1 => Just(AwsError::NotFound {
            code: code.clone(),
            message: message.clone()
        }),
        4 => Just(AwsError::InvalidState {
            code: "InvalidReplicationGroupState".into(),
            message: message.clone()
        }),
        1 => Just(AwsError::SnapshotAlreadyExists {
            message: message.clone()
        }),
        1 => Just(AwsError::QuotaExceeded {
            code: code.clone(),
            message: message.clone()
        }),
        1 => Just(AwsError::Transient {
            code: "Throttling".into(),
            message: message.clone()
        }),
        1 => Just(AwsError::Other { code, message }),
    ]
}

fn aws_op() -> impl Strategy<Value = AwsOp> {
    select(
        &[
            AwsOp::Plan,
            AwsOp::Recheck,
            AwsOp::CreateSnapshot,
            AwsOp::PollSnapshot,
            AwsOp::Modify,
            AwsOp::PollGroup,
        ][..],
    )
}

fn pending() -> impl Strategy<Value = Check<Vec<PendingChange>>> {
    prop_oneof![
        3 => Just(Check::Known(Vec::new())),
        1 => Just(Check::Known(vec![PendingChange::new("EngineVersion", "7.1")])),
        1 => Just(Check::Unknown("throttled".into())),
    ]
}

fn group() -> impl Strategy<Value = GroupInfo> {
    (
        select(
            &[
                "available",
                "modifying",
                "snapshotting",
                "creating",
                "rebooting",
            ][..],
        ),
        prop::option::weighted(0.9, node_type()),
        0usize..=3,
        select(&[ClusterMode::Disabled, ClusterMode::Enabled][..]),
        1usize..=2,
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(status, node_type, members, cluster_mode, shards, changes)| GroupInfo {
                id: ReplicationGroupId::parse(GROUP).unwrap(),
                status: status.into(),
                node_type,
                members: (1..=members)
                    .map(|n| CacheClusterId::parse(&format!("{GROUP}-00{n}")).unwrap())
                    .collect(),
                cluster_mode,
                shards,
                pending: if changes {
                    vec![PendingChange::new("AuthTokenStatus", "rotating")]
                } else {
                    Vec::new()
                },
            },
        )
}

/// The group as planned: available on the current type, two nodes.
fn group_as_planned(status: &str, on: &NodeType) -> GroupInfo {
    GroupInfo {
        id: ReplicationGroupId::parse(GROUP).unwrap(),
        status: status.into(),
        node_type: Some(on.clone()),
        members: vec![
            CacheClusterId::parse("prod-jobs-001").unwrap(),
            CacheClusterId::parse("prod-jobs-002").unwrap(),
        ],
        cluster_mode: ClusterMode::Disabled,
        shards: 1,
        pending: Vec::new(),
    }
}

fn allowed() -> impl Strategy<Value = Vec<NodeType>> {
    prop_oneof![
        3 => Just(scale_ups_from(&nt(CURRENT))),
        1 => Just(crate::domain::node_types::scale_downs_from(&nt("cache.r6g.xlarge"))),
        1 => prop::collection::vec(node_type(), 0..3),
    ]
}

fn preflight() -> impl Strategy<Value = Preflight> {
    prop_oneof![
        3 => Just(Preflight::clean()),
        1 => Just(Preflight::default()),
        1 => pending().prop_map(|pending| Preflight {
            pending,
            ..Preflight::clean()
        }),
        1 => Just(Preflight {
            manual_snapshots_24h: Check::Known(20),
            ..Preflight::clean()
        }),
    ]
}

/// The memory trend at planning: none, unknown, or rising/steady (it never decides anything).
fn forecast() -> impl Strategy<Value = Option<Check<Forecast>>> {
    let known = |slope_per_min: f64, full_in: Option<u64>, trend| {
        Some(Check::Known(Forecast {
            node: CacheClusterId::parse("prod-jobs-001").unwrap(),
            slope_per_min,
            latest: 92.2,
            full_in: full_in.map(Duration::from_secs),
            trend,
            points_used: 60,
            window: Duration::from_secs(3600),
        }))
    };
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Check::Unknown("CloudWatch has no readings for the last 1h".into()))),
        1 => Just(known(0.8, Some(585), Trend::Rising)),
        1 => Just(known(0.01, None, Trend::Steady)),
    ]
}

fn snapshot_status() -> impl Strategy<Value = SnapshotStatus> {
    prop_oneof![
        Just(SnapshotStatus::Creating),
        Just(SnapshotStatus::Available),
        Just(SnapshotStatus::Failed),
        Just(SnapshotStatus::Other("copying".into())),
    ]
}

fn step_before() -> impl Strategy<Value = crate::workflow::run::Step> {
    use crate::workflow::run::Step;
    select(
        &[
            Step::Plan,
            Step::Approval,
            Step::Pause,
            Step::Snapshot,
            Step::Upsize,
            Step::Resume,
        ][..],
    )
}

fn hook_phase() -> impl Strategy<Value = HookPhase> {
    select(&[HookPhase::Pause, HookPhase::Resume][..])
}

fn page_action() -> impl Strategy<Value = PageAction> {
    prop_oneof![
        Just(PageAction::Resolve),
        Just(PageAction::Trigger(PageReason::RunFailed)),
        Just(PageAction::Trigger(PageReason::ApprovalTimeout {
            after: Duration::from_secs(900)
        })),
    ]
}

fn top_message() -> TopMessage {
    TopMessage {
        channel: ChannelId::parse("C0123ABCD").unwrap(),
        ts: ts(),
        permalink: Some("https://example.slack.com/archives/C0123ABCD/p1764121930000200".into()),
        check_duplicates_after_ms: None,
    }
}

fn ts() -> MessageTs {
    MessageTs::parse("1764121930.000200").unwrap()
}

/// The plan version a click was for: not said, the first, or a later one.
fn version() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![2 => Just(None), 2 => Just(Some(1)), 1 => (2u32..=3).prop_map(Some)]
}

/// People clicking and alarms firing: what arrives from outside at any time.
fn outside_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        12 => (actor(), version(), any::<bool>()).prop_map(|(actor, version, acknowledged)| {
            Event::Approve {
                actor,
                version,
                acknowledged,
            }
        }),
        1 => (actor(), version()).prop_map(|(actor, version)| Event::Deny { actor, version }),
        1 => actor().prop_map(|actor| Event::Cancel { actor }),
        1 => actor().prop_map(|actor| Event::Dismiss { actor }),
        1 => actor().prop_map(|actor| Event::Snooze {
            actor,
            snooze: std::time::Duration::from_secs(86_400)
        }),
        1 => actor().prop_map(|actor| Event::UpsizeWithoutSnapshot { actor }),
        1 => actor().prop_map(|actor| Event::DenialExplained {
            actor,
            reason: "change freeze".into()
        }),
        3 => (actor(), node_type(), version()).prop_map(|(actor, node_type, version)| {
            Event::ChooseSize {
                actor,
                node_type,
                version,
            }
        }),
        3 => (select(DELIVERIES), prop::option::of(Just(95.5))).prop_map(|(d, value)| {
            Event::AlarmRepeated {
                delivery_id: d.into(),
                reason: "Threshold Crossed".into(),
                value,
            }
        }),
        2 => select(DELIVERIES).prop_map(|d| Event::AlarmCleared {
            delivery_id: d.into(),
            reason: "Threshold no longer crossed".into(),
        }),
    ]
}

/// Every kind of event, with any payload.
fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => outside_event(),
        1 => (group(), allowed(), preflight(), forecast()).prop_map(
            |(group, allowed, preflight, forecast)| Event::PlanFetched {
                group,
                allowed,
                preflight,
                forecast,
                prices: None,
            }
        ),
        1 => (step_before(), group(), allowed(), pending()).prop_map(
            |(before, group, allowed, pending)| Event::Rechecked {
                before,
                group,
                allowed,
                pending,
            }
        ),
        1 => Just(Event::TopMessagePosted {
            message: top_message()
        }),
        1 => Just(Event::CancelOffered { ts: ts() }),
        1 => snapshot_status().prop_map(|status| Event::SnapshotStarted { status }),
        1 => prop::option::of(snapshot_status()).prop_map(|status| Event::SnapshotPolled { status }),
        1 => group().prop_map(|group| Event::ModifyRequested { group }),
        1 => group().prop_map(|group| Event::GroupPolled {
            group,
            events: Vec::new()
        }),
        1 => hook_phase().prop_map(|phase| Event::HookDone { phase }),
        1 => hook_phase().prop_map(|phase| Event::HookFailed {
            phase,
            error: "HTTP 503".into()
        }),
        2 => (aws_op(), aws_error()).prop_map(|(op, error)| Event::AwsFailed { op, error }),
        1 => Just(Event::TopMessageFailed {
            error: "HTTP 503".into()
        }),
        1 => page_action().prop_map(|action| Event::PageDelivered { action }),
        1 => page_action().prop_map(|action| Event::PageFailed {
            action,
            error: "HTTP 429".into()
        }),
        1 => select(&[Timer::ApprovalTimeout, Timer::ApprovalExpiry, Timer::FallbackExpiry][..])
            .prop_map(|timer| Event::TimerFired { timer }),
    ]
}

/// How long passes before the next event: nothing, a poll interval, the approval timeout,
/// the expiry.
fn pause() -> impl Strategy<Value = Duration> {
    prop_oneof![
        8 => Just(Duration::ZERO),
        8 => Just(Duration::from_secs(30)),
        2 => Just(Duration::from_secs(16 * 60)),
        1 => Just(Duration::from_secs(25 * 3600)),
    ]
}

/// What the events of a sequence so far did to AWS, for the checks across the sequence.
struct Seen {
    creates: usize,
    modifies: usize,
    /// AWS refused a CreateSnapshot / ModifyReplicationGroup as busy (and the run tries again).
    busy_creates: usize,
    busy_modifies: usize,
    /// AWS took the snapshot / the modification: never again.
    snapshot_taken: bool,
    modify_taken: bool,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            creates: 0,
            modifies: 0,
            busy_creates: 0,
            busy_modifies: 0,
            snapshot_taken: false,
            modify_taken: false,
        }
    }
}

/// Feed `event` to `run` through [`commit`] (as the store does) and check what holds for every
/// event. Returns the effects it scheduled and whether pending work is dropped.
fn feed(
    run: &mut Run,
    event: &Event,
    now: Timestamp,
    seen: &mut Seen,
) -> Result<(Vec<Scheduled>, bool), TestCaseError> {
    let before = run.clone();
    let decided = commit(run, event, now, Vec::new());
    prop_assert_eq!(
        decided.change.audit.len(),
        1,
        "one audit line per event, accepted or not"
    );
    // The decision is the same through `decide` (commit only records it).
    let direct = decide(run, event, now);
    prop_assert_eq!(
        matches!(direct, Decision::Accept(_)),
        decided.next.is_some()
    );
    if before.is_finished() {
        finished_run_absorbs(&before, event, &decided.submitted, &decided.change.effects)?;
    }
    let Some(next) = decided.next else {
        prop_assert!(decided.change.effects.is_empty());
        return Ok((Vec::new(), false));
    };
    prop_assert!(
        !decided.summary.is_empty(),
        "every transition explains itself"
    );
    prop_assert_eq!(next.updated_at, now);
    prop_assert_eq!(&next.id, &before.id);
    prop_assert_eq!(&next.trigger, &before.trigger);
    prop_assert_eq!(&next.policy, &before.policy);
    // What the store writes reads back as it was.
    let json = serde_json::to_string(&next).unwrap();
    prop_assert_eq!(
        &serde_json::from_str::<Run>(&json).unwrap(),
        &next,
        "{}",
        json
    );
    for s in &decided.change.effects {
        prop_assert!(s.due >= now, "{:?} is due before it was decided", s.effect);
        let json = serde_json::to_string(&s.effect).unwrap();
        prop_assert_eq!(&serde_json::from_str::<Effect>(&json).unwrap(), &s.effect);
        match &s.effect {
            Effect::CreateSnapshot { name } => {
                prop_assert_eq!(name, &SnapshotName::for_run(&next.id));
                prop_assert!(!seen.snapshot_taken, "CreateSnapshot after AWS took one");
                prop_assert!(
                    matches!(next.state, State::Snapshotting { created: false, .. }),
                    "CreateSnapshot from {}",
                    next.state_name()
                );
                seen.creates += 1;
            }
            Effect::ModifyNodeType { target } => {
                let State::Modifying {
                    plan,
                    requested: false,
                    ..
                } = &next.state
                else {
                    return Err(TestCaseError::fail(format!(
                        "ModifyNodeType from {}",
                        next.state_name()
                    )));
                };
                prop_assert_eq!(target, &plan.target);
                prop_assert!(!seen.modify_taken, "ModifyNodeType after AWS took one");
                // A run moves one way only, and a scale-down only on an approver's yes.
                prop_assert!(
                    next.trigger.direction().allows(&plan.current, target),
                    "ModifyNodeType {} → {} for a {:?} run",
                    plan.current,
                    target,
                    next.trigger.direction()
                );
                if next.trigger.direction() == super::super::run::Direction::Down {
                    prop_assert!(
                        next.decisions
                            .iter()
                            .any(|d| d.kind == super::super::run::DecisionKind::Approve),
                        "a scale-down with nobody approving it"
                    );
                }
                // No upsize without a snapshot AWS called available, unless the policy skips
                // it or an approver chose to go without one.
                let State::Modifying { snapshot, .. } = &next.state else {
                    unreachable!("matched above");
                };
                prop_assert!(
                    snapshot.is_some() || next.skips_snapshot(),
                    "ModifyNodeType with no snapshot and nobody choosing that"
                );
                if !next.skips_snapshot() {
                    prop_assert!(
                        next.step(super::super::run::Step::Snapshot)
                            .is_some_and(|s| s.status == StepStatus::Done),
                        "ModifyNodeType before the snapshot step was done"
                    );
                }

                seen.modifies += 1;
            }
            _ => {}
        }
    }
    // A plan's target never changes once approved.
    if let (Some(was), Some(now)) = (before.plan(), next.plan())
        && !matches!(before.state, State::AwaitingApproval { .. })
    {
        prop_assert_eq!(&was.target, &now.target);
    }
    // Only an approver goes on without a snapshot, and only after the snapshot failed.
    if let Event::UpsizeWithoutSnapshot { actor } = event {
        prop_assert!(
            actor.is_approver,
            "a non-approver chose to skip the snapshot"
        );
        prop_assert!(
            matches!(before.state, State::SnapshotFailed { .. }),
            "upsize without a snapshot accepted while {}",
            before.state_name()
        );
    }
    match event {
        Event::SnapshotStarted { .. } => seen.snapshot_taken = true,
        Event::ModifyRequested { .. } => seen.modify_taken = true,
        Event::AwsFailed {
            op: AwsOp::CreateSnapshot,
            error: AwsError::InvalidState { .. },
        } => seen.busy_creates += 1,
        Event::AwsFailed {
            op: AwsOp::Modify,
            error: AwsError::InvalidState { .. },
        } => seen.busy_modifies += 1,
        _ => {}
    }
    let drop = decided.change.drop_pending_work;
    *run = next;
    Ok((decided.change.effects, drop))
}

/// A finished run stays as it ended: a person is refused, an alarm, a timer or an answer from
/// AWS or a hook is ignored; only facts about its messages and pages are taken, and those
/// schedule nothing but messages and pages.
fn finished_run_absorbs(
    run: &Run,
    event: &Event,
    submitted: &Submitted,
    effects: &[Scheduled],
) -> Result<(), TestCaseError> {
    match event {
        Event::Approve { .. }
        | Event::Deny { .. }
        | Event::Dismiss { .. }
        | Event::Snooze { .. }
        | Event::Cancel { .. }
        | Event::UpsizeWithoutSnapshot { .. }
        | Event::ChooseSize { .. } => {
            prop_assert!(
                matches!(submitted, Submitted::Rejected(_)),
                "{} on a {} run: {:?}",
                event.name(),
                run.state_name(),
                submitted
            );
        }
        Event::TopMessagePosted { .. }
        | Event::CancelOffered { .. }
        | Event::TopMessageFailed { .. }
        | Event::PageDelivered { .. }
        | Event::PageFailed { .. } => {}
        // The person who denied a run may say why afterwards; only the reason changes.
        Event::DenialExplained { actor, .. } => {
            let denier = matches!(
                &run.state,
                State::Finished { outcome: super::super::run::Outcome::Denied { by }, .. } if by == &actor.user
            );
            prop_assert_eq!(
                matches!(submitted, Submitted::Accepted(_)),
                denier,
                "a reason from {} on a {} run: {:?}",
                actor.user,
                run.state_name(),
                submitted
            );
        }
        _ => prop_assert!(
            matches!(submitted, Submitted::Ignored(_)),
            "{} on a {} run: {:?}",
            event.name(),
            run.state_name(),
            submitted
        ),
    }
    if let Submitted::Accepted(next) = submitted {
        prop_assert_eq!(&next.state, &run.state);
        prop_assert_eq!(&next.steps, &run.steps);
        prop_assert_eq!(&next.decisions, &run.decisions);
        prop_assert_eq!(next.alarm_repeats, run.alarm_repeats);
    }
    for s in effects {
        prop_assert!(
            matches!(
                s.effect,
                Effect::PostNote { .. }
                    | Effect::UpdateTopMessage
                    | Effect::WithdrawCancelOffer { .. }
                    | Effect::Page { .. }
            ),
            "a {} run scheduled {}",
            run.state_name(),
            s.effect.name()
        );
    }
    Ok(())
}

/// One step of a sequence.
#[derive(Debug, Clone)]
enum Step {
    /// Execute the pending effect at this index and tell the machine what came of it.
    Execute(Index, Answer),
    /// A person or an alarm.
    Outside(Event),
    /// Any event at all, whatever was asked (only in the anything-any-time sequences).
    Anything(Event),
    /// Time passes.
    Wait(Duration),
}

/// The makings of an effect's result: which kind of answer, and the random parts of it.
#[derive(Debug, Clone)]
struct Answer {
    /// 0–16: a good answer (the group as planned, the snapshot available, …); 17: an odd one
    /// (any group, any status); 18–19: the call failed (AWS, hook, Slack, PagerDuty).
    kind: u8,
    group: GroupInfo,
    allowed: Vec<NodeType>,
    preflight: Preflight,
    pending: Check<Vec<PendingChange>>,
    snapshot: Option<SnapshotStatus>,
    error: AwsError,
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        0u8..20,
        group(),
        allowed(),
        preflight(),
        pending(),
        prop::option::weighted(0.9, snapshot_status()),
        aws_error(),
    )
        .prop_map(
            |(kind, group, allowed, preflight, pending, snapshot, error)| Answer {
                kind,
                group,
                allowed,
                preflight,
                pending,
                snapshot,
                error,
            },
        )
}

/// Steps as the runner takes them: mostly executing what is pending, with people and alarms in
/// between and time passing.
fn runner_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<Index>(), answer()).prop_map(|(i, a)| Step::Execute(i, a)),
        2 => outside_event().prop_map(Step::Outside),
        1 => pause().prop_map(Step::Wait),
    ]
}

/// The runner's steps with any event thrown in: duplicates, late answers, answers to nothing.
fn chaos_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => runner_step(),
        1 => any_event().prop_map(Step::Anything),
    ]
}

/// What the machine hears when the runner executes `effect` for `run` and gets `a`
/// (`None`: nothing, as for a thread reply that went out).
fn result_of(effect: &Effect, run: &Run, a: &Answer) -> Option<Event> {
    let good = a.kind < 17;
    let failed = a.kind >= 18;
    let current = run.plan().map(|p| p.current.clone()).unwrap_or(nt(CURRENT));
    let target = run.plan().map(|p| p.target.clone());
    let aws_failed = |op| Event::AwsFailed {
        op,
        error: a.error.clone(),
    };
    Some(match effect {
        Effect::FetchPlan if failed => aws_failed(AwsOp::Plan),
        Effect::FetchPlan => Event::PlanFetched {
            group: if good {
                group_as_planned("available", &current)
            } else {
                a.group.clone()
            },
            allowed: if good {
                scale_ups_from(&current)
            } else {
                a.allowed.clone()
            },
            preflight: if a.kind < 12 {
                Preflight::clean()
            } else {
                a.preflight.clone()
            },
            forecast: None,
            prices: None,
        },
        Effect::Recheck { .. } if failed => aws_failed(AwsOp::Recheck),
        Effect::Recheck { before } => Event::Rechecked {
            before: *before,
            group: match a.kind {
                0..=11 => group_as_planned("available", &current),
                12..=16 => group_as_planned("snapshotting", &current),
                _ => a.group.clone(),
            },
            allowed: if good {
                scale_ups_from(&current)
            } else {
                a.allowed.clone()
            },
            pending: if good {
                Check::Known(Vec::new())
            } else {
                a.pending.clone()
            },
        },
        Effect::CreateSnapshot { .. } if failed => aws_failed(AwsOp::CreateSnapshot),
        Effect::CreateSnapshot { .. } => Event::SnapshotStarted {
            status: a.snapshot.clone().unwrap_or(SnapshotStatus::Creating),
        },
        Effect::PollSnapshot { .. } if failed => aws_failed(AwsOp::PollSnapshot),
        Effect::PollSnapshot { .. } => Event::SnapshotPolled {
            status: if good {
                Some(SnapshotStatus::Available)
            } else {
                a.snapshot.clone()
            },
        },
        Effect::ModifyNodeType { .. } if failed => aws_failed(AwsOp::Modify),
        Effect::PollGroup if failed => aws_failed(AwsOp::PollGroup),
        Effect::ModifyNodeType { .. } | Effect::PollGroup => {
            let group = match (a.kind, &target) {
                (0..=7, Some(target)) => group_as_planned("available", target),
                (8..=16, _) => group_as_planned("modifying", &current),
                _ => a.group.clone(),
            };
            match effect {
                Effect::PollGroup => Event::GroupPolled {
                    group,
                    events: Vec::new(),
                },
                _ => Event::ModifyRequested { group },
            }
        }
        Effect::CallHook { phase } if failed => Event::HookFailed {
            phase: *phase,
            error: "HTTP 503".into(),
        },
        Effect::CallHook { phase } => Event::HookDone { phase: *phase },
        Effect::Page { action } if failed => Event::PageFailed {
            action: action.clone(),
            error: "HTTP 429".into(),
        },
        Effect::Page { action } => Event::PageDelivered {
            action: action.clone(),
        },
        Effect::PostTopMessage if failed => Event::TopMessageFailed {
            error: "HTTP 503".into(),
        },
        Effect::PostTopMessage => Event::TopMessagePosted {
            message: top_message(),
        },
        Effect::OfferCancel if !failed => Event::CancelOffered { ts: ts() },
        Effect::Timer { timer } => Event::TimerFired { timer: *timer },
        // The other messages: the machine hears nothing of them.
        _ => return None,
    })
}

/// Open a run and take `steps` with it, checking every event (see [`feed`]). `as_the_runner`:
/// also check what only holds when every result answers an effect that was pending — at most
/// one CreateSnapshot and one ModifyNodeType pending at a time, and no more of either than one
/// plus the tries AWS refused as busy.
fn drive(start: StartRequest, steps: Vec<Step>, as_the_runner: bool) -> Result<(), TestCaseError> {
    let mut now = Timestamp::from_millis(T0);
    let (mut run, change) = open(run_id(), start, now);
    prop_assert_eq!(change.effects.len(), 1);
    let mut outbox: Vec<Scheduled> = change.effects;
    let mut seen = Seen::new();
    for step in steps {
        let event = match step {
            Step::Wait(d) => {
                now = now.plus(d);
                continue;
            }
            Step::Outside(event) | Step::Anything(event) => event,
            Step::Execute(i, answer) => {
                if outbox.is_empty() {
                    continue;
                }
                let i = i.index(outbox.len());
                // A timer fires once time has come to it (see `Step::Wait`); anything else
                // may run late, never early.
                if matches!(outbox[i].effect, Effect::Timer { .. }) && outbox[i].due > now {
                    continue;
                }
                let s = outbox.remove(i);
                if s.due > now {
                    now = s.due;
                }
                match result_of(&s.effect, &run, &answer) {
                    Some(event) => event,
                    None => continue,
                }
            }
        };
        let (effects, drop) = feed(&mut run, &event, now, &mut seen)?;
        if drop {
            outbox.retain(|s| !s.effect.is_droppable_work());
        }
        if as_the_runner {
            for s in &effects {
                let pending = |same: fn(&Effect) -> bool| outbox.iter().any(|p| same(&p.effect));
                match &s.effect {
                    Effect::CreateSnapshot { .. } => prop_assert!(
                        !pending(|e| matches!(e, Effect::CreateSnapshot { .. })),
                        "a second CreateSnapshot while one is pending"
                    ),
                    Effect::ModifyNodeType { .. } => prop_assert!(
                        !pending(|e| matches!(e, Effect::ModifyNodeType { .. })),
                        "a second ModifyNodeType while one is pending"
                    ),
                    _ => {}
                }
            }
            prop_assert!(
                seen.creates <= 1 + seen.busy_creates,
                "{} CreateSnapshot effects, {} refused as busy",
                seen.creates,
                seen.busy_creates
            );
            prop_assert!(
                seen.modifies <= 1 + seen.busy_modifies,
                "{} ModifyNodeType effects, {} refused as busy",
                seen.modifies,
                seen.busy_modifies
            );
        }
        outbox.extend(effects);
    }
    // A finished run leaves no AWS work behind.
    if run.is_finished() {
        prop_assert!(
            !outbox.iter().any(|s| s.effect.is_droppable_work()),
            "{:?}",
            outbox
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_events_in_any_order_never_panic_and_a_finished_run_stays_finished(
        start in start(),
        steps in prop::collection::vec(chaos_step(), 0..120),
    ) {
        drive(start, steps, false)?;
    }

    #[test]
    fn as_the_runner_delivers_aws_is_asked_for_one_snapshot_and_one_upsize(
        start in start(),
        steps in prop::collection::vec(runner_step(), 0..120),
    ) {
        drive(start, steps, true)?;
    }
}
