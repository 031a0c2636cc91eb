//! Table tests for the machine: every state against the events that matter to it, including
//! the ones it must reject or ignore. Each (state, event) row is its own test, grouped by the
//! phase it exercises, so a failing row never hides the others; a row that starts where
//! another ended replays that row first.

use std::time::Duration;

use crate::domain::{
    CacheClusterId, ChannelId, MessageTs, NodeType, ReplicationGroupId, RunId, SlackUserId,
    SnapshotName, Timestamp,
};
use crate::workflow::policy::{ApprovalMode, OnApprovalTimeout, Policy};
use crate::workflow::ports::{AwsError, ClusterMode, GroupInfo, SnapshotStatus};
use crate::workflow::preflight::{Check, PendingChange, Preflight};

use super::*;
use crate::workflow::effect::*;
use crate::workflow::event::*;
use crate::workflow::run::*;

const T0: i64 = 1_764_121_929_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn nt(s: &str) -> NodeType {
    NodeType::parse(s).unwrap()
}

fn user(s: &str) -> SlackUserId {
    SlackUserId::parse(s).unwrap()
}

fn approver(s: &str) -> Actor {
    Actor {
        user: user(s),
        is_approver: true,
    }
}

fn stranger(s: &str) -> Actor {
    Actor {
        user: user(s),
        is_approver: false,
    }
}

fn policy() -> Policy {
    Policy {
        max_node_type: Some(nt("cache.r6g.4xlarge")),
        snapshot_max_polls: 3,
        // These tables end a run at the upsize; `verify_transitions` covers what follows.
        verify_window: Duration::ZERO,
        ..Policy::default()
    }
}

fn group_info(status: &str, node: &str) -> GroupInfo {
    GroupInfo {
        id: ReplicationGroupId::parse("prod-jobs").unwrap(),
        status: status.into(),
        node_type: Some(nt(node)),
        members: vec![
            CacheClusterId::parse("prod-jobs-001").unwrap(),
            CacheClusterId::parse("prod-jobs-002").unwrap(),
        ],
        cluster_mode: ClusterMode::Disabled,
        shards: 1,
        pending: Vec::new(),
    }
}

fn allowed() -> Vec<NodeType> {
    crate::domain::node_types::scale_ups_from(&nt("cache.r6g.large"))
}

fn plan() -> Plan {
    Plan {
        version: 1,
        current: nt("cache.r6g.large"),
        target: nt("cache.r6g.xlarge"),
        choices: vec![nt("cache.r6g.xlarge"), nt("cache.r6g.2xlarge")],
        cap: Some(nt("cache.r6g.4xlarge")),
        cluster_mode: ClusterMode::Disabled,
        members: 2,
        shards: 1,
        preflight: Some(Preflight::clean()),
        pending_acknowledged: false,
        forecast: None,
        direction: Default::default(),
        prices: None,
    }
}

fn base(trigger: Trigger, policy: Policy) -> Run {
    Run::new(
        RunId::parse("r-abcdefgh").unwrap(),
        ReplicationGroupId::parse("prod-jobs").unwrap(),
        ChannelId::parse("C0123ABCD").unwrap(),
        trigger,
        None,
        policy,
        at(0),
    )
}

fn alarm() -> Trigger {
    Trigger::Alarm {
        delivery_id: "eventbridge:test".into(),
        alarm_name: "Redis memory: prod-jobs".into(),
        reason: "Threshold Crossed".into(),
        value: Some(93.2),
        at: at(0),
    }
}

fn command(by: &str) -> Trigger {
    Trigger::Command {
        user: user(by),
        response_url: None,
    }
}

fn planning() -> Run {
    base(alarm(), policy())
}

fn awaiting_with(policy: Policy, trigger: Trigger) -> Run {
    let mut r = base(trigger, policy);
    r.steps[0].ended = Some(at(10));
    r.steps[0].status = StepStatus::Done;
    r.steps.push(StepRecord::start(Step::Approval, at(10)));
    r.state = State::AwaitingApproval {
        plan: plan(),
        deadline: at(900_000),
        expires: at(86_400_000),
        escalated: false,
        approvals: vec![],
    };
    r
}

fn awaiting() -> Run {
    awaiting_with(policy(), alarm())
}

fn snapshot_name() -> SnapshotName {
    SnapshotName::for_run(&RunId::parse("r-abcdefgh").unwrap())
}

fn pausing() -> Run {
    let mut r = awaiting_with(
        Policy {
            pause_url: Some("http://127.0.0.1:1/pause".into()),
            ..policy()
        },
        alarm(),
    );
    r.steps.push(StepRecord::start(Step::Pause, at(20)));
    r.state = State::Pausing { plan: plan() };
    r
}

fn snapshotting(created: bool, polls: u32) -> Run {
    let mut r = awaiting();
    r.steps.push(StepRecord::start(Step::Snapshot, at(20)));
    r.state = State::Snapshotting {
        plan: plan(),
        snapshot: snapshot_name(),
        polls,
        created,
    };
    r
}

fn modifying(requested: bool, seen_modifying: bool, polls: u32) -> Run {
    let mut r = snapshotting(true, 1);
    r.steps.push(StepRecord::start(Step::Upsize, at(60_000)));
    r.state = State::Modifying {
        plan: plan(),
        snapshot: Some(snapshot_name()),
        started: at(60_000),
        requested,
        seen_modifying,
        polls,
    };
    r
}

fn resuming(outcome: Outcome) -> Run {
    let mut r = pausing();
    r.steps.push(StepRecord::start(Step::Resume, at(70_000)));
    r.state = State::Resuming {
        plan: plan(),
        outcome,
    };
    r
}

fn finished(outcome: Outcome) -> Run {
    let mut r = awaiting();
    r.state = State::Finished {
        plan: Some(plan()),
        outcome,
    };
    r
}

fn succeeded() -> Outcome {
    Outcome::Succeeded {
        from: nt("cache.r6g.large"),
        to: nt("cache.r6g.xlarge"),
        snapshot: Some(snapshot_name()),
    }
}

/// What a row expects.
enum Expect {
    /// Next state name and the names of the effects, in order.
    Accept(&'static str, &'static [&'static str]),
    Reject(&'static str),
    Ignore,
}

fn rejection_name(r: &Rejection) -> &'static str {
    match r {
        Rejection::NotAnApprover => "not_an_approver",
        Rejection::SelfApproval => "self_approval",
        Rejection::AlreadyApprovedByYou => "already_approved_by_you",
        Rejection::AlreadyDecided { .. } => "already_decided",
        Rejection::Expired => "expired",
        Rejection::CannotCancel { .. } => "cannot_cancel",
        Rejection::NotAllowedSize { .. } => "not_allowed_size",
        Rejection::NotWaitingForApproval { .. } => "not_waiting",
        Rejection::PlanChanged { .. } => "plan_changed",
        Rejection::NeedsAcknowledgement { .. } => "needs_acknowledgement",
        Rejection::NoFailedSnapshot { .. } => "no_failed_snapshot",
        Rejection::NotYourDenial { .. } => "not_your_denial",
        Rejection::NotASuggestion => "not_a_suggestion",
    }
}

fn check(name: &str, run: Run, event: Event, now: Timestamp, expect: Expect) -> Option<Transition> {
    let decision = decide(&run, &event, now);
    match (expect, decision) {
        (Expect::Accept(state, effects), Decision::Accept(t)) => {
            assert_eq!(t.run.state_name(), state, "{name}: next state");
            let names: Vec<&str> = t.effects.iter().map(|s| s.effect.name()).collect();
            assert_eq!(names, effects, "{name}: effects");
            assert!(
                !t.summary.is_empty(),
                "{name}: every transition explains itself"
            );
            assert_eq!(t.run.updated_at, now, "{name}: updated_at");
            Some(*t)
        }
        (Expect::Reject(want), Decision::Reject(r)) => {
            assert_eq!(rejection_name(&r), want, "{name}");
            assert!(!r.to_string().is_empty(), "{name}: the audit says why");
            None
        }
        (Expect::Ignore, Decision::Ignore(_)) => None,
        (_, got) => panic!("{name}: unexpected decision {got:?}"),
    }
}

mod planning_transitions {
    use super::*;

    /// The prices read at planning ride on the plan, known or not; they decide nothing.
    /// Events and plans stored before prices existed read as having none.
    #[test]
    fn the_prices_are_carried_onto_the_plan_and_older_records_read_without_them() {
        use crate::workflow::cost::{NodePrice, PriceSheet};
        use Expect::*;
        let sheet = PriceSheet {
            region: "us-east-1".into(),
            prices: vec![
                NodePrice {
                    node_type: nt("cache.r6g.large"),
                    hourly: Check::Known(0.206),
                },
                NodePrice {
                    node_type: nt("cache.r6g.xlarge"),
                    hourly: Check::Unknown("ThrottlingException".into()),
                },
            ],
        };
        for prices in [Some(sheet), None] {
            let event = Event::PlanFetched {
                group: group_info("available", "cache.r6g.large"),
                allowed: allowed(),
                preflight: Preflight::clean(),
                forecast: None,
                prices: prices.clone().map(Box::new),
            };
            let t = check(
                "plan with prices",
                planning(),
                event.clone(),
                at(10),
                Accept("awaiting_approval", &["post_top_message", "timer", "timer"]),
            )
            .unwrap();
            let plan = t.run.plan().unwrap();
            assert_eq!(plan.prices, prices);
            assert_eq!(
                plan.target,
                nt("cache.r6g.xlarge"),
                "it changes nothing else"
            );
            let back: Run = serde_json::from_str(&serde_json::to_string(&t.run).unwrap()).unwrap();
            assert_eq!(back, t.run);
            let mut legacy = serde_json::to_value(&event).unwrap();
            legacy.as_object_mut().unwrap().remove("prices");
            let back: Event = serde_json::from_value(legacy).unwrap();
            assert!(matches!(back, Event::PlanFetched { prices: None, .. }));
            let mut legacy = serde_json::to_value(plan).unwrap();
            legacy.as_object_mut().unwrap().remove("prices");
            assert_eq!(serde_json::from_value::<Plan>(legacy).unwrap().prices, None);
        }
    }

    /// The memory trend read at planning rides on the plan, whatever it says; it decides
    /// nothing. Events, plans and policies stored before it existed read as having none.
    #[test]
    fn the_memory_trend_is_carried_onto_the_plan_and_older_records_read_without_it() {
        use crate::workflow::forecast::{Forecast, Trend};
        use Expect::*;
        let rising = Check::Known(Forecast {
            node: crate::domain::CacheClusterId::parse("prod-jobs-001").unwrap(),
            slope_per_min: 0.8,
            latest: 92.2,
            full_in: Some(Duration::from_secs(585)),
            trend: Trend::Rising,
            points_used: 60,
            window: Duration::from_secs(3600),
        });
        for forecast in [
            Some(rising),
            Some(Check::Unknown(
                "CloudWatch has no readings for the last 1h".into(),
            )),
            None,
        ] {
            let event = Event::PlanFetched {
                group: group_info("available", "cache.r6g.large"),
                allowed: allowed(),
                preflight: Preflight::clean(),
                forecast: forecast.clone(),
                prices: None,
            };
            let t = check(
                "plan with a trend",
                planning(),
                event.clone(),
                at(10),
                Accept("awaiting_approval", &["post_top_message", "timer", "timer"]),
            )
            .unwrap();
            let plan = t.run.plan().unwrap();
            assert_eq!(plan.forecast, forecast);
            assert_eq!(
                plan.target,
                nt("cache.r6g.xlarge"),
                "it changes nothing else"
            );
            let back: Run = serde_json::from_str(&serde_json::to_string(&t.run).unwrap()).unwrap();
            assert_eq!(back, t.run);
            let back: Event =
                serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
            assert_eq!(back, event);
        }
        let mut legacy = serde_json::to_value(plan()).unwrap();
        legacy.as_object_mut().unwrap().remove("forecast");
        assert_eq!(
            serde_json::from_value::<Plan>(legacy).unwrap().forecast,
            None
        );
        let mut legacy = serde_json::to_value(Event::PlanFetched {
            group: group_info("available", "cache.r6g.large"),
            allowed: allowed(),
            preflight: Preflight::clean(),
            forecast: None,
            prices: None,
        })
        .unwrap();
        legacy.as_object_mut().unwrap().remove("forecast");
        let back: Event = serde_json::from_value(legacy).unwrap();
        assert!(matches!(back, Event::PlanFetched { forecast: None, .. }));
        let mut legacy = serde_json::to_value(Policy::default()).unwrap();
        legacy.as_object_mut().unwrap().remove("forecast_window");
        let back: Policy = serde_json::from_value(legacy).unwrap();
        assert_eq!(back.forecast_window, Duration::from_secs(3600));
    }

    #[test]
    fn plan_needing_approval() {
        use Expect::*;
        let t = check(
            "plan needing approval",
            planning(),
            Event::PlanFetched {
                group: group_info("available", "cache.r6g.large"),
                allowed: allowed(),
                preflight: Preflight::clean(),
                forecast: None,
                prices: None,
            },
            at(10),
            Accept("awaiting_approval", &["post_top_message", "timer", "timer"]),
        )
        .unwrap();
        assert_eq!(
            t.effects[1].due,
            at(10).plus(Duration::from_secs(900)),
            "approval timeout"
        );
        assert_eq!(
            t.effects[2].due,
            at(10).plus(Duration::from_secs(86_400)),
            "expiry"
        );
        assert_eq!(t.run.plan().unwrap().target, nt("cache.r6g.xlarge"));
    }

    #[test]
    fn auto_approval_goes_straight_to_the_snapshot() {
        use Expect::*;
        let auto = base(
            alarm(),
            Policy {
                approval: ApprovalMode::Auto,
                ..policy()
            },
        );
        check(
            "auto approval goes straight to the snapshot",
            auto,
            Event::PlanFetched {
                group: group_info("available", "cache.r6g.large"),
                allowed: allowed(),
                preflight: Preflight::clean(),
                forecast: None,
                prices: None,
            },
            at(10),
            Accept(
                "snapshotting",
                &["post_top_message", "post_note", "offer_cancel", "recheck"],
            ),
        );
    }

    #[test]
    fn auto_approval_with_a_pause_hook_pauses_first() {
        use Expect::*;
        let auto_paused = base(
            alarm(),
            Policy {
                approval: ApprovalMode::Auto,
                pause_url: Some("http://127.0.0.1:1/p".into()),
                ..policy()
            },
        );
        check(
            "auto approval with a pause hook pauses first",
            auto_paused,
            Event::PlanFetched {
                group: group_info("available", "cache.r6g.large"),
                allowed: allowed(),
                preflight: Preflight::clean(),
                forecast: None,
                prices: None,
            },
            at(10),
            Accept(
                "pausing",
                &[
                    "post_top_message",
                    "post_note",
                    "offer_cancel",
                    "post_note",
                    "call_hook",
                ],
            ),
        );
    }

    #[test]
    fn an_alarm_at_the_cap_posts_pages_and_closes() {
        use Expect::*;
        let t = check(
            "an alarm at the cap posts, pages, and closes",
            base(
                alarm(),
                Policy {
                    max_node_type: Some(nt("cache.r6g.large")),
                    ..policy()
                },
            ),
            Event::PlanFetched {
                group: group_info("available", "cache.r6g.large"),
                allowed: allowed(),
                preflight: Preflight::clean(),
                forecast: None,
                prices: None,
            },
            at(10),
            Accept("nothing_to_do", &["post_top_message", "post_note", "page"]),
        )
        .unwrap();
        assert!(t.run.page.open);
    }

    #[test]
    fn a_command_at_the_cap_does_not_page() {
        use Expect::*;
        check(
            "a command at the cap does not page",
            base(
                command("U0000001"),
                Policy {
                    max_node_type: Some(nt("cache.r6g.large")),
                    ..policy()
                },
            ),
            Event::PlanFetched {
                group: group_info("available", "cache.r6g.large"),
                allowed: allowed(),
                preflight: Preflight::clean(),
                forecast: None,
                prices: None,
            },
            at(10),
            // A person's request that can't be done is answered privately, not in the channel.
            Accept("nothing_to_do", &["update_top_message", "reply"]),
        );
    }

    #[test]
    fn a_forecast_at_the_cap_says_so_in_the_channel_without_paging() {
        use Expect::*;
        let forecast = crate::workflow::forecast::Forecast {
            node: CacheClusterId::parse("prod-jobs-001").unwrap(),
            slope_per_min: 0.5,
            latest: 90.0,
            full_in: Some(Duration::from_secs(1200)),
            trend: crate::workflow::forecast::Trend::Rising,
            points_used: 60,
            window: Duration::from_secs(3600),
        };
        let t = check(
            "a forecast at the cap",
            base(
                Trigger::Forecast {
                    at: at(0),
                    forecast,
                },
                Policy {
                    max_node_type: Some(nt("cache.r6g.large")),
                    ..policy()
                },
            ),
            Event::PlanFetched {
                group: group_info("available", "cache.r6g.large"),
                allowed: allowed(),
                preflight: Preflight::clean(),
                forecast: None,
                prices: None,
            },
            at(10),
            // Nobody asked, nothing is wrong yet: the channel hears it; the alarm pages later.
            Accept("nothing_to_do", &["post_top_message", "post_note"]),
        )
        .unwrap();
        assert!(!t.run.page.open);
    }

    #[test]
    fn aws_failing_while_planning_fails_the_run_and_pages() {
        use Expect::*;
        check(
            "AWS failing while planning fails the run and pages",
            planning(),
            Event::AwsFailed {
                op: AwsOp::Plan,
                error: AwsError::NotFound {
                    code: "ReplicationGroupNotFoundFault".into(),
                    message: "gone".into(),
                },
            },
            at(10),
            Accept("failed", &["post_top_message", "post_note", "page"]),
        );
    }

    #[test]
    fn approve_while_planning() {
        use Expect::*;
        check(
            "approve while planning",
            planning(),
            Event::Approve {
                actor: approver("U0000001"),
                version: None,
                acknowledged: false,
            },
            at(5),
            Reject("not_waiting"),
        );
    }

    #[test]
    fn cancel_while_planning() {
        use Expect::*;
        check(
            "cancel while planning",
            planning(),
            Event::Cancel {
                actor: approver("U0000001"),
            },
            at(5),
            Accept("cancelled", &["update_top_message"]),
        );
    }

    #[test]
    fn a_stale_poll_while_planning() {
        use Expect::*;
        let stale_poll = Event::GroupPolled {
            group: group_info("available", "cache.r6g.large"),
            events: Vec::new(),
        };
        check(
            "a stale poll while planning",
            planning(),
            stale_poll,
            at(5),
            Ignore,
        );
    }
}

mod approval_matrix {
    use super::*;

    #[test]
    fn non_approver() {
        use Expect::*;
        check(
            "non-approver",
            awaiting(),
            Event::Approve {
                actor: stranger("U0000009"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Reject("not_an_approver"),
        );
    }

    #[test]
    fn an_approver_approves() {
        use Expect::*;
        let t = check(
            "approver",
            awaiting(),
            Event::Approve {
                actor: approver("U0000001"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Accept(
                "snapshotting",
                &["post_note", "offer_cancel", "recheck", "update_top_message"],
            ),
        )
        .unwrap();
        assert!(t.drop_pending_work, "the approval timers are dropped");
        assert_eq!(t.run.decisions.len(), 1);
    }

    #[test]
    fn requester_with_self_approval_off() {
        use Expect::*;
        let mine = awaiting_with(policy(), command("U0000001"));
        check(
            "requester with self-approval off",
            mine.clone(),
            Event::Approve {
                actor: approver("U0000001"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Reject("self_approval"),
        );
    }

    #[test]
    fn requester_with_self_approval_on() {
        use Expect::*;
        let lenient = awaiting_with(
            Policy {
                allow_self_approval: true,
                ..policy()
            },
            command("U0000001"),
        );
        check(
            "requester with self-approval on",
            lenient,
            Event::Approve {
                actor: approver("U0000001"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Accept(
                "snapshotting",
                &["post_note", "offer_cancel", "recheck", "update_top_message"],
            ),
        );
    }

    #[test]
    fn first_of_two() {
        use Expect::*;
        let two = awaiting_with(
            Policy {
                min_approvals: 2,
                ..policy()
            },
            alarm(),
        );
        check(
            "first of two",
            two,
            Event::Approve {
                actor: approver("U0000001"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Accept("awaiting_approval", &["post_note", "update_top_message"]),
        )
        .unwrap();
    }

    #[test]
    fn same_person_twice() {
        use Expect::*;
        let two = awaiting_with(
            Policy {
                min_approvals: 2,
                ..policy()
            },
            alarm(),
        );
        let t = check(
            "first of two",
            two,
            Event::Approve {
                actor: approver("U0000001"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Accept("awaiting_approval", &["post_note", "update_top_message"]),
        )
        .unwrap();
        check(
            "same person twice",
            t.run.clone(),
            Event::Approve {
                actor: approver("U0000001"),
                version: None,
                acknowledged: false,
            },
            at(110),
            Reject("already_approved_by_you"),
        );
    }

    #[test]
    fn second_approver() {
        use Expect::*;
        let two = awaiting_with(
            Policy {
                min_approvals: 2,
                ..policy()
            },
            alarm(),
        );
        let t = check(
            "first of two",
            two,
            Event::Approve {
                actor: approver("U0000001"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Accept("awaiting_approval", &["post_note", "update_top_message"]),
        )
        .unwrap();
        check(
            "second approver",
            t.run,
            Event::Approve {
                actor: approver("U0000002"),
                version: None,
                acknowledged: false,
            },
            at(120),
            Accept(
                "snapshotting",
                &["post_note", "offer_cancel", "recheck", "update_top_message"],
            ),
        );
    }

    #[test]
    fn deny_by_non_approver() {
        use Expect::*;
        check(
            "deny by non-approver",
            awaiting(),
            Event::Deny {
                actor: stranger("U0000009"),
                version: None,
            },
            at(100),
            Reject("not_an_approver"),
        );
    }

    #[test]
    fn deny() {
        use Expect::*;
        check(
            "deny",
            awaiting(),
            Event::Deny {
                actor: approver("U0000001"),
                version: None,
            },
            at(100),
            Accept("denied", &["post_note", "update_top_message", "post_graph"]),
        );
    }

    #[test]
    fn cancel_by_requester() {
        use Expect::*;
        check(
            "cancel by requester",
            awaiting_with(policy(), command("U0000005")),
            Event::Cancel {
                actor: stranger("U0000005"),
            },
            at(100),
            Accept(
                "cancelled",
                &["post_note", "update_top_message", "post_graph"],
            ),
        );
    }

    #[test]
    fn cancel_by_a_stranger() {
        use Expect::*;
        check(
            "cancel by a stranger",
            awaiting(),
            Event::Cancel {
                actor: stranger("U0000009"),
            },
            at(100),
            Reject("not_an_approver"),
        );
    }

    #[test]
    fn choose_an_allowed_size() {
        use Expect::*;
        check(
            "choose an allowed size",
            awaiting(),
            Event::ChooseSize {
                actor: approver("U0000001"),
                node_type: nt("cache.r6g.2xlarge"),
                version: None,
            },
            at(100),
            Accept("awaiting_approval", &["post_note", "update_top_message"]),
        );
    }

    #[test]
    fn choose_a_size_outside_the_plan() {
        use Expect::*;
        check(
            "choose a size outside the plan",
            awaiting(),
            Event::ChooseSize {
                actor: approver("U0000001"),
                node_type: nt("cache.r6g.8xlarge"),
                version: None,
            },
            at(100),
            Reject("not_allowed_size"),
        );
    }

    #[test]
    fn choose_by_a_stranger() {
        use Expect::*;
        check(
            "choose by a stranger",
            awaiting(),
            Event::ChooseSize {
                actor: stranger("U0000009"),
                node_type: nt("cache.r6g.2xlarge"),
                version: None,
            },
            at(100),
            Reject("not_an_approver"),
        );
    }

    #[test]
    fn choose_the_current_target() {
        use Expect::*;
        check(
            "choose the current target",
            awaiting(),
            Event::ChooseSize {
                actor: approver("U0000001"),
                node_type: nt("cache.r6g.xlarge"),
                version: None,
            },
            at(100),
            Ignore,
        );
    }
}

mod approvals_are_for_one_version_of_the_plan {
    use super::*;

    fn approve_v(version: u32) -> Event {
        Event::Approve {
            actor: approver("U0000002"),
            version: Some(version),
            acknowledged: false,
        }
    }

    /// Someone picked another size: the plan is at version 2.
    fn resized() -> Run {
        check(
            "an approver picks 2xlarge",
            awaiting(),
            Event::ChooseSize {
                actor: approver("U0000001"),
                node_type: nt("cache.r6g.2xlarge"),
                version: Some(1),
            },
            at(100),
            Expect::Accept("awaiting_approval", &["post_note", "update_top_message"]),
        )
        .unwrap()
        .run
    }

    #[test]
    fn choosing_a_size_makes_a_new_version() {
        let run = resized();
        let plan = run.plan().unwrap();
        assert_eq!((plan.version, &plan.target), (2, &nt("cache.r6g.2xlarge")));
    }

    #[test]
    fn an_approval_of_the_version_shown_is_accepted() {
        check(
            "approve v1 of an unchanged plan",
            awaiting(),
            approve_v(1),
            at(100),
            Expect::Accept(
                "snapshotting",
                &["post_note", "offer_cancel", "recheck", "update_top_message"],
            ),
        );
        check(
            "approve v2 after the change",
            resized(),
            approve_v(2),
            at(200),
            {
                Expect::Accept(
                    "snapshotting",
                    &["post_note", "offer_cancel", "recheck", "update_top_message"],
                )
            },
        );
    }

    #[test]
    fn an_approval_of_a_superseded_version_is_refused() {
        check(
            "approve v1 after the change",
            resized(),
            approve_v(1),
            at(200),
            Expect::Reject("plan_changed"),
        );
    }

    #[test]
    fn a_denial_or_a_size_for_a_superseded_version_is_refused() {
        let deny = Event::Deny {
            actor: approver("U0000002"),
            version: Some(1),
        };
        check(
            "deny v1",
            resized(),
            deny,
            at(200),
            Expect::Reject("plan_changed"),
        );
        let choose = Event::ChooseSize {
            actor: approver("U0000002"),
            node_type: nt("cache.r6g.xlarge"),
            version: Some(1),
        };
        let c = Expect::Reject("plan_changed");
        check("choose on v1", resized(), choose, at(200), c);
    }

    #[test]
    fn two_approvals_must_be_for_the_same_version() {
        let two = awaiting_with(
            Policy {
                min_approvals: 2,
                ..policy()
            },
            alarm(),
        );
        let first = check(
            "first approval, of v1",
            two,
            Event::Approve {
                actor: approver("U0000001"),
                version: Some(1),
                acknowledged: false,
            },
            at(100),
            Expect::Accept("awaiting_approval", &["post_note", "update_top_message"]),
        )
        .unwrap()
        .run;
        let resized = check(
            "a size is chosen",
            first,
            Event::ChooseSize {
                actor: approver("U0000003"),
                node_type: nt("cache.r6g.2xlarge"),
                version: Some(1),
            },
            at(150),
            Expect::Accept("awaiting_approval", &["post_note", "update_top_message"]),
        )
        .unwrap()
        .run;
        // The first approval was for v1: a second person approving v2 is one of two.
        let t = check(
            "second approver, v2",
            resized,
            approve_v(2),
            at(200),
            Expect::Accept("awaiting_approval", &["post_note", "update_top_message"]),
        )
        .unwrap();
        assert!(matches!(
            &t.run.state,
            State::AwaitingApproval { approvals, .. } if approvals.len() == 1
        ));
    }
}

mod clicks_after_a_decision_are_rejected {
    use super::*;

    #[test]
    fn approve_while_snapshotting() {
        use Expect::*;
        let running = snapshotting(true, 0);
        check(
            "approve while snapshotting",
            running.clone(),
            Event::Approve {
                actor: approver("U0000002"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Reject("already_decided"),
        );
    }

    #[test]
    fn deny_while_snapshotting() {
        use Expect::*;
        let running = snapshotting(true, 0);
        check(
            "deny while snapshotting",
            running,
            Event::Deny {
                actor: approver("U0000002"),
                version: None,
            },
            at(100),
            Reject("already_decided"),
        );
    }

    #[test]
    fn approve_after_deny() {
        use Expect::*;
        check(
            "approve after deny",
            finished(Outcome::Denied {
                by: user("U0000001"),
            }),
            Event::Approve {
                actor: approver("U0000002"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Reject("already_decided"),
        );
    }

    #[test]
    fn approve_after_cancel() {
        use Expect::*;
        check(
            "approve after cancel",
            finished(Outcome::Cancelled {
                by: user("U0000001"),
            }),
            Event::Approve {
                actor: approver("U0000002"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Reject("already_decided"),
        );
    }

    #[test]
    fn approve_after_completion() {
        use Expect::*;
        check(
            "approve after completion",
            finished(succeeded()),
            Event::Approve {
                actor: approver("U0000002"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Reject("already_decided"),
        );
    }

    #[test]
    fn approve_after_expiry() {
        use Expect::*;
        check(
            "approve after expiry",
            finished(Outcome::Expired),
            Event::Approve {
                actor: approver("U0000002"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Reject("expired"),
        );
    }

    #[test]
    fn cancel_after_completion() {
        use Expect::*;
        check(
            "cancel after completion",
            finished(succeeded()),
            Event::Cancel {
                actor: approver("U0000002"),
            },
            at(100),
            Reject("cannot_cancel"),
        );
    }

    #[test]
    fn cancel_while_modifying() {
        use Expect::*;
        check(
            "cancel while modifying",
            modifying(true, true, 1),
            Event::Cancel {
                actor: approver("U0000002"),
            },
            at(100),
            Reject("cannot_cancel"),
        );
    }

    #[test]
    fn cancel_while_resuming() {
        use Expect::*;
        check(
            "cancel while resuming",
            resuming(succeeded()),
            Event::Cancel {
                actor: approver("U0000002"),
            },
            at(100),
            Reject("cannot_cancel"),
        );
    }
}

mod approval_timeouts {
    use super::*;

    #[test]
    fn timer_before_the_deadline() {
        use Expect::*;
        check(
            "timer before the deadline",
            awaiting(),
            Event::TimerFired {
                timer: Timer::ApprovalTimeout,
            },
            at(100),
            Ignore,
        );
    }

    #[test]
    fn escalate() {
        use Expect::*;
        let t = check(
            "escalate",
            awaiting(),
            Event::TimerFired {
                timer: Timer::ApprovalTimeout,
            },
            at(900_000),
            Accept(
                "awaiting_approval",
                &["post_note", "page", "update_top_message"],
            ),
        )
        .unwrap();
        assert!(t.run.page.open);
    }

    #[test]
    fn escalate_only_once() {
        use Expect::*;
        let t = check(
            "escalate",
            awaiting(),
            Event::TimerFired {
                timer: Timer::ApprovalTimeout,
            },
            at(900_000),
            Accept(
                "awaiting_approval",
                &["post_note", "page", "update_top_message"],
            ),
        )
        .unwrap();
        check(
            "escalate only once",
            t.run.clone(),
            Event::TimerFired {
                timer: Timer::ApprovalTimeout,
            },
            at(900_001),
            Ignore,
        );
    }

    #[test]
    fn a_late_approval_keeps_the_page_open_until_the_upsize_is_done() {
        use Expect::*;
        let t = check(
            "escalate",
            awaiting(),
            Event::TimerFired {
                timer: Timer::ApprovalTimeout,
            },
            at(900_000),
            Accept(
                "awaiting_approval",
                &["post_note", "page", "update_top_message"],
            ),
        )
        .unwrap();
        // Approving starts the work; nothing is fixed yet, so the page stays open.
        let t = check(
            "a late approval",
            t.run,
            Event::Approve {
                actor: approver("U0000001"),
                version: None,
                acknowledged: false,
            },
            at(1_000_000),
            Accept(
                "snapshotting",
                &["post_note", "offer_cancel", "recheck", "update_top_message"],
            ),
        )
        .unwrap();
        assert!(t.run.page.open);
        // The upsize done: now it is resolved.
        let mut done = modifying(true, true, 1);
        done.page = t.run.page.clone();
        let t = check(
            "upsized",
            done,
            Event::GroupPolled {
                group: group_info("available", "cache.r6g.xlarge"),
                events: Vec::new(),
            },
            at(2_000_000),
            Accept(
                "succeeded",
                &["post_note", "page", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert_eq!(
            t.effects[1].effect,
            Effect::Page {
                action: PageAction::Resolve
            }
        );
        assert!(!t.run.page.open);
    }

    #[test]
    fn approve_on_timeout() {
        use Expect::*;
        let approve_on_timeout = awaiting_with(
            Policy {
                on_approval_timeout: OnApprovalTimeout::Approve,
                ..policy()
            },
            alarm(),
        );
        check(
            "approve on timeout",
            approve_on_timeout,
            Event::TimerFired {
                timer: Timer::ApprovalTimeout,
            },
            at(900_000),
            Accept(
                "snapshotting",
                &["post_note", "offer_cancel", "recheck", "update_top_message"],
            ),
        );
    }

    #[test]
    fn expire() {
        use Expect::*;
        check(
            "expire",
            awaiting(),
            Event::TimerFired {
                timer: Timer::ApprovalExpiry,
            },
            at(86_400_000),
            Accept(
                "expired",
                &["post_note", "update_top_message", "post_graph"],
            ),
        );
    }

    #[test]
    fn expiry_timer_after_approval() {
        use Expect::*;
        check(
            "expiry timer after approval",
            snapshotting(true, 0),
            Event::TimerFired {
                timer: Timer::ApprovalExpiry,
            },
            at(86_400_000),
            Ignore,
        );
    }
}

mod pause_hook_transitions {
    use super::*;

    #[test]
    fn paused() {
        use Expect::*;
        check(
            "paused",
            pausing(),
            Event::HookDone {
                phase: HookPhase::Pause,
            },
            at(100),
            Accept(
                "snapshotting",
                &["post_note", "recheck", "update_top_message"],
            ),
        );
    }

    #[test]
    fn pause_failed_resumes_anyway() {
        use Expect::*;
        let t = check(
            "pause failed resumes anyway",
            pausing(),
            Event::HookFailed {
                phase: HookPhase::Pause,
                error: "503".into(),
            },
            at(100),
            Accept(
                "resuming",
                &[
                    "post_note",
                    "post_note",
                    "page",
                    "call_hook",
                    "update_top_message",
                ],
            ),
        )
        .unwrap();
        assert!(matches!(
            t.run.outcome(),
            Some(Outcome::Failed {
                step: Step::Pause,
                ..
            })
        ));
    }

    #[test]
    fn cancel_while_pausing_resumes() {
        use Expect::*;
        check(
            "cancel while pausing resumes",
            pausing(),
            Event::Cancel {
                actor: approver("U0000001"),
            },
            at(100),
            Accept(
                "resuming",
                &["post_note", "call_hook", "update_top_message"],
            ),
        );
    }
}

mod snapshot_transitions {
    use super::*;

    #[test]
    fn created() {
        use Expect::*;
        let t = check(
            "created",
            snapshotting(false, 0),
            Event::SnapshotStarted {
                status: SnapshotStatus::Creating,
            },
            at(100),
            Accept("snapshotting", &["poll_snapshot"]),
        )
        .unwrap();
        assert_eq!(t.effects[0].due, at(100).plus(Duration::from_secs(30)));
    }

    #[test]
    fn already_available_on_create() {
        use Expect::*;
        check(
            "already available on create",
            snapshotting(false, 0),
            Event::SnapshotStarted {
                status: SnapshotStatus::Available,
            },
            at(100),
            Accept("modifying", &["post_note", "recheck", "update_top_message"]),
        );
    }

    #[test]
    fn poll_creating() {
        use Expect::*;
        check(
            "poll creating",
            snapshotting(true, 0),
            Event::SnapshotPolled {
                status: Some(SnapshotStatus::Creating),
            },
            at(100),
            Accept("snapshotting", &["poll_snapshot"]),
        );
    }

    #[test]
    fn poll_limit_reached() {
        use Expect::*;
        let t = check(
            "poll limit reached",
            snapshotting(true, 2),
            Event::SnapshotPolled {
                status: Some(SnapshotStatus::Creating),
            },
            at(100),
            // The group is untouched: an approver may go on without a snapshot, or cancel.
            Accept(
                "snapshot_failed",
                &[
                    "post_note",
                    "page",
                    "offer_cancel",
                    "timer",
                    "update_top_message",
                ],
            ),
        )
        .unwrap();
        assert!(t.drop_pending_work);
    }

    #[test]
    fn poll_available() {
        use Expect::*;
        check(
            "poll available",
            snapshotting(true, 1),
            Event::SnapshotPolled {
                status: Some(SnapshotStatus::Available),
            },
            at(100),
            Accept("modifying", &["post_note", "recheck", "update_top_message"]),
        );
    }

    #[test]
    fn poll_failed() {
        use Expect::*;
        check(
            "poll failed",
            snapshotting(true, 1),
            Event::SnapshotPolled {
                status: Some(SnapshotStatus::Failed),
            },
            at(100),
            // The group is untouched: an approver may go on without a snapshot, or cancel.
            Accept(
                "snapshot_failed",
                &[
                    "post_note",
                    "page",
                    "offer_cancel",
                    "timer",
                    "update_top_message",
                ],
            ),
        );
    }

    #[test]
    fn snapshot_vanished() {
        use Expect::*;
        check(
            "snapshot vanished",
            snapshotting(true, 1),
            Event::SnapshotPolled { status: None },
            at(100),
            // The group is untouched: an approver may go on without a snapshot, or cancel.
            Accept(
                "snapshot_failed",
                &[
                    "post_note",
                    "page",
                    "offer_cancel",
                    "timer",
                    "update_top_message",
                ],
            ),
        );
    }

    #[test]
    fn poll_before_create_acknowledged() {
        use Expect::*;
        check(
            "poll before create acknowledged",
            snapshotting(false, 0),
            Event::SnapshotPolled {
                status: Some(SnapshotStatus::Available),
            },
            at(100),
            Ignore,
        );
    }

    #[test]
    fn group_busy_waits() {
        use Expect::*;
        let busy = AwsError::InvalidState {
            code: "InvalidReplicationGroupState".into(),
            message: "snapshotting".into(),
        };
        check(
            "group busy waits",
            snapshotting(false, 0),
            Event::AwsFailed {
                op: AwsOp::CreateSnapshot,
                error: busy.clone(),
            },
            at(100),
            Accept("snapshotting", &["post_note", "recheck"]),
        );
    }

    #[test]
    fn group_busy_too_long() {
        use Expect::*;
        let busy = AwsError::InvalidState {
            code: "InvalidReplicationGroupState".into(),
            message: "snapshotting".into(),
        };
        check(
            "group busy too long",
            snapshotting(false, 2),
            Event::AwsFailed {
                op: AwsOp::CreateSnapshot,
                error: busy,
            },
            at(100),
            // The group is untouched: an approver may go on without a snapshot, or cancel.
            Accept(
                "snapshot_failed",
                &[
                    "post_note",
                    "page",
                    "offer_cancel",
                    "timer",
                    "update_top_message",
                ],
            ),
        );
    }

    #[test]
    fn quota_fails() {
        use Expect::*;
        let quota = AwsError::QuotaExceeded {
            code: "SnapshotQuotaExceededFault".into(),
            message: "too many".into(),
        };
        check(
            "quota fails",
            snapshotting(false, 0),
            Event::AwsFailed {
                op: AwsOp::CreateSnapshot,
                error: quota,
            },
            at(100),
            // The group is untouched: an approver may go on without a snapshot, or cancel.
            Accept(
                "snapshot_failed",
                &[
                    "post_note",
                    "page",
                    "offer_cancel",
                    "timer",
                    "update_top_message",
                ],
            ),
        );
    }

    #[test]
    fn cancel_while_snapshotting() {
        use Expect::*;
        check(
            "cancel while snapshotting",
            snapshotting(true, 1),
            Event::Cancel {
                actor: approver("U0000001"),
            },
            at(100),
            Accept(
                "cancelled",
                &["post_note", "update_top_message", "post_graph"],
            ),
        );
    }
}

mod modify_transitions {
    use super::*;

    #[test]
    fn requested() {
        use Expect::*;
        let t = check(
            "requested",
            modifying(false, false, 0),
            Event::ModifyRequested {
                group: group_info("modifying", "cache.r6g.large"),
            },
            at(61_000),
            Accept("modifying", &["post_note", "poll_group"]),
        )
        .unwrap();
        assert!(matches!(
            t.run.state,
            State::Modifying {
                seen_modifying: true,
                requested: true,
                ..
            }
        ));
    }

    #[test]
    fn already_on_target() {
        use Expect::*;
        check(
            "already on target",
            modifying(false, false, 0),
            Event::ModifyRequested {
                group: group_info("available", "cache.r6g.xlarge"),
            },
            at(61_000),
            Accept(
                "succeeded",
                &["post_note", "post_note", "update_top_message", "post_graph"],
            ),
        );
    }

    #[test]
    fn still_modifying() {
        use Expect::*;
        check(
            "still modifying",
            modifying(true, true, 1),
            Event::GroupPolled {
                group: group_info("modifying", "cache.r6g.large"),
                events: Vec::new(),
            },
            at(90_000),
            Accept("modifying", &["poll_group"]),
        );
    }

    #[test]
    fn done() {
        use Expect::*;
        let t = check(
            "done",
            modifying(true, true, 1),
            Event::GroupPolled {
                group: group_info("available", "cache.r6g.xlarge"),
                events: Vec::new(),
            },
            at(90_000),
            Accept(
                "succeeded",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert_eq!(t.run.step(Step::Upsize).unwrap().status, StepStatus::Done);
    }

    #[test]
    fn rolled_back() {
        use Expect::*;
        check(
            "rolled back",
            modifying(true, true, 2),
            Event::GroupPolled {
                group: group_info("available", "cache.r6g.large"),
                events: Vec::new(),
            },
            at(90_000),
            Accept(
                "failed",
                &["post_note", "page", "update_top_message", "post_graph"],
            ),
        );
    }

    #[test]
    fn a_failed_upsize_quotes_awss_events_and_never_guesses() {
        use crate::workflow::ports::elasticache::AwsEvent;
        use Expect::*;
        let error = |events: Vec<AwsEvent>| {
            let t = check(
                "rolled back",
                modifying(true, true, 2),
                Event::GroupPolled {
                    group: group_info("available", "cache.r6g.large"),
                    events,
                },
                at(90_000),
                Accept(
                    "failed",
                    &["post_note", "page", "update_top_message", "post_graph"],
                ),
            )
            .unwrap();
            match t.run.outcome() {
                Some(Outcome::Failed { error, .. }) => error.clone(),
                other => panic!("{other:?}"),
            }
        };
        let said = error(vec![
            AwsEvent {
                at: at(80_000),
                source: "prod-jobs-001".into(),
                message: "Failed to modify cache node type: InsufficientCacheClusterCapacity"
                    .into(),
            },
            AwsEvent {
                at: at(80_001),
                source: "prod-jobs".into(),
                message: "Modification failed".into(),
            },
        ]);
        assert!(
            said.contains("still on cache.r6g.large; AWS says: Failed to modify cache node type: InsufficientCacheClusterCapacity (prod-jobs-001); Modification failed (prod-jobs)"),
            "{said}"
        );
        let silent = error(Vec::new());
        assert!(silent.contains("give no reason"), "{silent}");
        assert!(!silent.contains("rolled it back"), "no guess: {silent}");
    }

    #[test]
    fn ended_on_a_third_type_is_said_to_be_someone_elses_change_not_a_rollback() {
        use Expect::*;
        let t = check(
            "ended on 4xlarge",
            modifying(true, true, 2),
            Event::GroupPolled {
                group: group_info("available", "cache.r6g.4xlarge"),
                events: Vec::new(),
            },
            at(90_000),
            Accept(
                "failed",
                &["post_note", "page", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        let Some(Outcome::Failed { error, .. }) = t.run.outcome() else {
            panic!("{:?}", t.run.state);
        };
        assert!(error.contains("someone else changed it"), "{error}");
        assert!(!error.contains("rolled it back"), "{error}");
    }

    #[test]
    fn not_yet_started() {
        use Expect::*;
        check(
            "not yet started",
            modifying(true, false, 0),
            Event::GroupPolled {
                group: group_info("available", "cache.r6g.large"),
                events: Vec::new(),
            },
            at(90_000),
            Accept("modifying", &["poll_group"]),
        );
    }

    #[test]
    fn modify_timeout() {
        use Expect::*;
        check(
            "modify timeout",
            modifying(true, true, 5),
            Event::GroupPolled {
                group: group_info("modifying", "cache.r6g.large"),
                events: Vec::new(),
            },
            at(60_000 + 7_200_000),
            Accept(
                "timed_out",
                &["post_note", "page", "update_top_message", "post_graph"],
            ),
        );
    }

    #[test]
    fn modify_rejected() {
        use Expect::*;
        let rejected = AwsError::Other {
            code: "InsufficientCacheClusterCapacity".into(),
            message: "no capacity".into(),
        };
        check(
            "modify rejected",
            modifying(false, false, 0),
            Event::AwsFailed {
                op: AwsOp::Modify,
                error: rejected,
            },
            at(61_000),
            Accept(
                "failed",
                &["post_note", "page", "update_top_message", "post_graph"],
            ),
        );
    }

    #[test]
    fn modify_waits_for_a_busy_group() {
        use Expect::*;
        let busy = AwsError::InvalidState {
            code: "InvalidReplicationGroupState".into(),
            message: "snapshotting".into(),
        };
        check(
            "modify waits for a busy group",
            modifying(false, false, 0),
            Event::AwsFailed {
                op: AwsOp::Modify,
                error: busy,
            },
            at(61_000),
            Accept("modifying", &["post_note", "recheck"]),
        );
    }

    #[test]
    fn a_page_resolves_on_success() {
        use Expect::*;
        check(
            "a page resolves on success",
            {
                let mut r = modifying(true, true, 1);
                r.page.open = true;
                r
            },
            Event::GroupPolled {
                group: group_info("available", "cache.r6g.xlarge"),
                events: Vec::new(),
            },
            at(90_000),
            Accept(
                "succeeded",
                &["post_note", "page", "update_top_message", "post_graph"],
            ),
        );
    }
}

mod waits_for_a_busy_group_do_not_count_as_polls_of_the_modification {
    use super::*;

    #[test]
    fn requested_after_three_busy_waits() {
        let t = check(
            "requested after three busy waits",
            modifying(false, false, 3),
            Event::ModifyRequested {
                group: group_info("modifying", "cache.r6g.large"),
            },
            at(61_000),
            Expect::Accept("modifying", &["post_note", "poll_group"]),
        )
        .unwrap();
        assert!(matches!(t.run.state, State::Modifying { polls: 0, .. }));
    }
}

mod resume_transitions {
    use super::*;

    #[test]
    fn resumed() {
        use Expect::*;
        check(
            "resumed",
            resuming(succeeded()),
            Event::HookDone {
                phase: HookPhase::Resume,
            },
            at(100),
            Accept(
                "succeeded",
                &["post_note", "update_top_message", "post_graph"],
            ),
        );
    }

    #[test]
    fn resume_failed_pages() {
        use Expect::*;
        let t = check(
            "resume failed pages",
            resuming(succeeded()),
            Event::HookFailed {
                phase: HookPhase::Resume,
                error: "timeout".into(),
            },
            at(100),
            Accept(
                "succeeded",
                &["post_note", "update_top_message", "post_graph", "page"],
            ),
        )
        .unwrap();
        assert_eq!(t.run.resume_error.as_deref(), Some("timeout"));
    }

    #[test]
    fn success_after_a_pause_ends_with_resume() {
        use Expect::*;
        let t = check(
            "success after a pause ends with resume",
            {
                let mut r = modifying(true, true, 1);
                r.steps.insert(2, StepRecord::start(Step::Pause, at(15)));
                r
            },
            Event::GroupPolled {
                group: group_info("available", "cache.r6g.xlarge"),
                events: Vec::new(),
            },
            at(90_000),
            Accept(
                "resuming",
                &["post_note", "call_hook", "update_top_message"],
            ),
        )
        .unwrap();
        assert!(matches!(t.run.outcome(), Some(Outcome::Succeeded { .. })));
    }
}

mod alarms_and_deliveries {
    use super::*;

    #[test]
    fn repeat() {
        use Expect::*;
        let t = check(
            "repeat",
            awaiting(),
            Event::AlarmRepeated {
                delivery_id: "eventbridge:again".into(),
                reason: "again".into(),
                value: Some(95.0),
            },
            at(100),
            Accept("awaiting_approval", &["repeat_line", "update_top_message"]),
        )
        .unwrap();
        assert_eq!(t.run.alarm_repeats, 1);
        assert_eq!(t.run.repeats.last_at, Some(at(100)));
        assert_eq!(t.run.repeats.last_value, Some(95.0));
        assert_eq!(t.run.repeats.last_reason, "again");
        // The reply that counts them is posted once; later repeats edit it.
        let ts = MessageTs::parse("1700000000.000300").unwrap();
        let posted = Event::RepeatLinePosted { ts: ts.clone() };
        let t = check(
            "repeat line posted",
            t.run,
            posted,
            at(101),
            Accept("awaiting_approval", &[]),
        )
        .unwrap();
        assert_eq!(t.run.repeats.line, Some(ts.clone()));
        let again = Event::AlarmRepeated {
            delivery_id: "eventbridge:again-2".into(),
            reason: "and again".into(),
            value: Some(97.0),
        };
        let t = check(
            "second repeat",
            t.run,
            again,
            at(150),
            Accept("awaiting_approval", &["repeat_line", "update_top_message"]),
        )
        .unwrap();
        assert_eq!(
            (
                t.run.alarm_repeats,
                t.run.repeats.line,
                t.run.repeats.last_at
            ),
            (2, Some(ts), Some(at(150)))
        );
    }

    #[test]
    fn a_retried_delivery_is_ignored() {
        use Expect::*;
        let t = check(
            "repeat",
            awaiting(),
            Event::AlarmRepeated {
                delivery_id: "eventbridge:again".into(),
                reason: "again".into(),
                value: Some(95.0),
            },
            at(100),
            Accept("awaiting_approval", &["repeat_line", "update_top_message"]),
        )
        .unwrap();
        check(
            "a retried delivery is ignored",
            t.run.clone(),
            Event::AlarmRepeated {
                delivery_id: "eventbridge:again".into(),
                reason: "again".into(),
                value: Some(95.0),
            },
            at(200),
            Ignore,
        );
    }

    #[test]
    fn a_retry_of_the_delivery_that_started_the_run_is_ignored() {
        use Expect::*;
        check(
            "a retry of the delivery that started the run is ignored",
            awaiting(),
            Event::AlarmRepeated {
                delivery_id: "eventbridge:test".into(),
                reason: "again".into(),
                value: Some(95.0),
            },
            at(200),
            Ignore,
        );
    }

    #[test]
    fn cleared() {
        use Expect::*;
        check(
            "cleared",
            modifying(true, true, 1),
            Event::AlarmCleared {
                delivery_id: "eventbridge:ok".into(),
                reason: "ok".into(),
            },
            at(100),
            Accept("modifying", &["post_note"]),
        );
    }

    #[test]
    fn repeat_after_finish() {
        use Expect::*;
        check(
            "repeat after finish",
            finished(succeeded()),
            Event::AlarmRepeated {
                delivery_id: "eventbridge:again".into(),
                reason: "x".into(),
                value: None,
            },
            at(100),
            Ignore,
        );
    }

    #[test]
    fn top_message_recorded() {
        use Expect::*;
        let msg = TopMessage {
            channel: ChannelId::parse("C0123ABCD").unwrap(),
            ts: crate::domain::MessageTs::parse("1.2").unwrap(),
            permalink: None,
            check_duplicates_after_ms: None,
        };
        let t = check(
            "top message recorded",
            awaiting(),
            Event::TopMessagePosted {
                message: msg.clone(),
            },
            at(100),
            Accept("awaiting_approval", &["post_graph"]),
        )
        .unwrap();
        assert_eq!(t.run.message, Some(msg.clone()));
        // Posted by a retry that may have raced a lost earlier try: a look for a duplicate is
        // scheduled once it would have landed; the run keeps the message without the flag.
        let raced = TopMessage {
            check_duplicates_after_ms: Some(600),
            ..msg.clone()
        };
        let t = check(
            "top message posted by a retry",
            awaiting(),
            Event::TopMessagePosted { message: raced },
            at(100),
            Accept("awaiting_approval", &["check_duplicate_top", "post_graph"]),
        )
        .unwrap();
        assert_eq!(t.effects[0].due, at(100).plus(Duration::from_millis(600)));
        assert_eq!(t.run.message, Some(msg));
    }

    #[test]
    fn top_message_failed_pages() {
        use Expect::*;
        let t = check(
            "top message failed pages",
            awaiting(),
            Event::TopMessageFailed {
                error: "channel_not_found".into(),
            },
            at(100),
            Accept("awaiting_approval", &["page"]),
        )
        .unwrap();
        assert!(t.run.page.open);
    }

    #[test]
    fn page_delivered_is_noted() {
        use Expect::*;
        check(
            "page delivered is noted",
            awaiting(),
            Event::PageDelivered {
                action: PageAction::Trigger(PageReason::RunFailed),
            },
            at(100),
            Accept("awaiting_approval", &["post_note"]),
        );
    }

    #[test]
    fn page_failure_is_noted() {
        use Expect::*;
        check(
            "page failure is noted",
            awaiting(),
            Event::PageFailed {
                action: PageAction::Trigger(PageReason::RunFailed),
                error: "400".into(),
            },
            at(100),
            Accept("awaiting_approval", &["post_note"]),
        );
    }
}

#[test]
fn runs_serialise_and_come_back_identical_in_every_state() {
    for run in [
        planning(),
        awaiting(),
        pausing(),
        snapshotting(true, 2),
        modifying(true, true, 3),
        resuming(Outcome::TimedOut {
            step: Step::Snapshot,
            after: Duration::from_secs(3600),
        }),
        finished(succeeded()),
        finished(Outcome::NothingToDo {
            reason: "at cap".into(),
        }),
    ] {
        let json = serde_json::to_string(&run).unwrap();
        let back: Run = serde_json::from_str(&json).unwrap();
        assert_eq!(back, run);
    }
}

mod the_group_is_looked_at_again_before_acting {
    use super::*;

    fn rechecked(before: Step, status: &str, node: &str) -> Event {
        Event::Rechecked {
            before,
            group: group_info(status, node),
            allowed: allowed(),
            pending: Check::Known(Vec::new()),
        }
    }

    #[test]
    fn as_approved_the_snapshot_is_taken() {
        check(
            "recheck before the snapshot: as approved",
            snapshotting(false, 0),
            rechecked(Step::Snapshot, "available", "cache.r6g.large"),
            at(100),
            Expect::Accept("snapshotting", &["post_note", "create_snapshot"]),
        );
    }

    #[test]
    fn a_group_someone_upsized_meanwhile_is_not_touched() {
        let t = check(
            "recheck before the snapshot: someone moved it to 2xlarge",
            snapshotting(false, 0),
            rechecked(Step::Snapshot, "available", "cache.r6g.2xlarge"),
            at(100),
            Expect::Accept(
                "group_changed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert!(matches!(
            t.run.outcome(),
            Some(Outcome::GroupChanged {
                step: Step::Snapshot,
                drift: crate::workflow::policy::Drift::NodeType { .. }
            })
        ));
        assert!(t.drop_pending_work);
    }

    #[test]
    fn a_change_in_progress_that_is_not_the_bots_stops_the_run() {
        check(
            "recheck before the snapshot: modifying",
            snapshotting(false, 0),
            rechecked(Step::Snapshot, "modifying", "cache.r6g.large"),
            at(100),
            Expect::Accept(
                "group_changed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        );
    }

    #[test]
    fn a_backup_in_progress_is_waited_for() {
        check(
            "recheck before the snapshot: snapshotting",
            snapshotting(false, 0),
            rechecked(Step::Snapshot, "snapshotting", "cache.r6g.large"),
            at(100),
            Expect::Accept("snapshotting", &["post_note", "recheck"]),
        );
    }

    #[test]
    fn workers_paused_for_a_run_that_stops_are_resumed() {
        let mut r = snapshotting(false, 0);
        r.steps.insert(2, StepRecord::start(Step::Pause, at(15)));
        check(
            "recheck after the pause: the group changed",
            r,
            rechecked(Step::Snapshot, "available", "cache.r6g.xlarge"),
            at(100),
            Expect::Accept(
                "resuming",
                &["post_note", "call_hook", "update_top_message"],
            ),
        );
    }

    #[test]
    fn as_approved_the_upsize_is_asked_for() {
        check(
            "recheck before the upsize: as approved",
            modifying(false, false, 0),
            rechecked(Step::Upsize, "available", "cache.r6g.large"),
            at(61_000),
            Expect::Accept("modifying", &["modify_node_type"]),
        );
    }

    #[test]
    fn a_group_that_changed_before_the_upsize_keeps_its_snapshot_and_is_not_modified() {
        let t = check(
            "recheck before the upsize: someone moved it to xlarge",
            modifying(false, false, 0),
            rechecked(Step::Upsize, "available", "cache.r6g.xlarge"),
            at(61_000),
            Expect::Accept(
                "group_changed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        let kept = t.effects.iter().any(|e| {
            matches!(
                &e.effect,
                Effect::PostNote {
                    note: Note::GroupChanged {
                        snapshot_kept: Some(_),
                        ..
                    }
                }
            )
        });
        assert!(kept, "{:?}", t.effects);
    }

    #[test]
    fn a_target_aws_no_longer_lists_is_not_asked_for() {
        let event = Event::Rechecked {
            before: Step::Upsize,
            group: group_info("available", "cache.r6g.large"),
            allowed: vec![nt("cache.r6g.2xlarge")],
            pending: Check::Known(Vec::new()),
        };
        let t = check(
            "recheck before the upsize: xlarge not listed any more",
            modifying(false, false, 0),
            event,
            at(61_000),
            Expect::Accept(
                "group_changed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert!(matches!(
            t.run.outcome(),
            Some(Outcome::GroupChanged {
                drift: crate::workflow::policy::Drift::TargetNotAllowed { .. },
                ..
            })
        ));
    }

    #[test]
    fn a_late_recheck_after_the_request_is_ignored() {
        check(
            "recheck after the modification was requested",
            modifying(true, true, 1),
            rechecked(Step::Upsize, "available", "cache.r6g.large"),
            at(61_000),
            Expect::Ignore,
        );
    }
}

mod pending_changes_need_an_explicit_approval {
    use super::*;
    use crate::workflow::policy::{Drift, NoPlan, PendingChanges};

    fn engine_upgrade() -> Vec<PendingChange> {
        vec![PendingChange::new("EngineVersion", "7.2.4")]
    }

    fn with_pending(pending: Check<Vec<PendingChange>>) -> Preflight {
        Preflight {
            pending,
            ..Preflight::clean()
        }
    }

    fn fetched(preflight: Preflight) -> Event {
        Event::PlanFetched {
            group: group_info("available", "cache.r6g.large"),
            allowed: allowed(),
            preflight,
            forecast: None,
            prices: None,
        }
    }

    /// A run waiting for approval of a plan whose preflight found `pending`.
    fn waiting_on(pending: Check<Vec<PendingChange>>, policy: Policy) -> Run {
        let mut r = awaiting_with(policy, alarm());
        if let State::AwaitingApproval { plan, .. } = &mut r.state {
            plan.preflight = Some(with_pending(pending));
        }
        r
    }

    fn approve(acknowledged: bool) -> Event {
        Event::Approve {
            actor: approver("U0000002"),
            version: Some(1),
            acknowledged,
        }
    }

    #[test]
    fn a_plain_approval_of_a_plan_with_pending_changes_is_refused() {
        let run = waiting_on(Check::Known(engine_upgrade()), policy());
        check(
            "plain approve with an engine upgrade pending",
            run.clone(),
            approve(false),
            at(100),
            Expect::Reject("needs_acknowledgement"),
        );
        let t = check(
            "approve with pending changes",
            run,
            approve(true),
            at(100),
            Expect::Accept(
                "snapshotting",
                &["post_note", "offer_cancel", "recheck", "update_top_message"],
            ),
        );
        let plan = t.unwrap().run.plan().cloned().unwrap();
        assert!(plan.pending_acknowledged, "the approval covered them");
    }

    #[test]
    fn not_knowing_whether_changes_are_pending_needs_the_same_acknowledgement() {
        let run = waiting_on(Check::Unknown("AccessDenied".into()), policy());
        check(
            "plain approve, pending unknown",
            run,
            approve(false),
            at(100),
            Expect::Reject("needs_acknowledgement"),
        );
        // A clean plan needs nothing more than Approve (and an acknowledging click is fine).
        check(
            "approve with acknowledgement, nothing pending",
            awaiting(),
            approve(true),
            at(100),
            Expect::Accept(
                "snapshotting",
                &["post_note", "offer_cancel", "recheck", "update_top_message"],
            ),
        );
    }

    #[test]
    fn an_auto_group_with_pending_changes_waits_for_a_person() {
        let auto = Policy {
            approval: ApprovalMode::Auto,
            ..policy()
        };
        let t = check(
            "auto group, engine upgrade pending",
            base(alarm(), auto.clone()),
            fetched(with_pending(Check::Known(engine_upgrade()))),
            at(10),
            Expect::Accept(
                "awaiting_approval",
                &["post_top_message", "post_note", "timer", "timer"],
            ),
        )
        .unwrap();
        assert!(t.effects.iter().any(|e| matches!(
            e.effect,
            Effect::PostNote {
                note: Note::NeedsAcknowledgement
            }
        )));
        check(
            "auto group, nothing pending",
            base(alarm(), auto),
            fetched(Preflight::clean()),
            at(10),
            Expect::Accept(
                "snapshotting",
                &["post_top_message", "post_note", "offer_cancel", "recheck"],
            ),
        );
    }

    #[test]
    fn an_approving_timeout_escalates_instead_when_changes_are_pending() {
        let approving = Policy {
            on_approval_timeout: OnApprovalTimeout::Approve,
            ..policy()
        };
        let t = check(
            "approval timeout with pending changes",
            waiting_on(Check::Known(engine_upgrade()), approving),
            Event::TimerFired {
                timer: Timer::ApprovalTimeout,
            },
            at(900_000),
            Expect::Accept(
                "awaiting_approval",
                &["post_note", "page", "update_top_message"],
            ),
        )
        .unwrap();
        assert!(matches!(
            t.run.state,
            State::AwaitingApproval {
                escalated: true,
                ..
            }
        ));
    }

    #[test]
    fn a_refusing_policy_makes_no_plan_while_changes_are_pending_or_unknown() {
        let refuse = Policy {
            pending_changes: PendingChanges::Refuse,
            ..policy()
        };
        let group = group_info("available", "cache.r6g.large");
        let known = crate::workflow::policy::plan(
            &group,
            &allowed(),
            None,
            &refuse,
            &with_pending(Check::Known(engine_upgrade())),
        );
        assert!(
            matches!(known, Err(NoPlan::PendingChanges { .. })),
            "{known:?}"
        );
        assert!(
            known
                .unwrap_err()
                .to_string()
                .contains("EngineVersion → 7.2.4")
        );
        let unknown = crate::workflow::policy::plan(
            &group,
            &allowed(),
            None,
            &refuse,
            &with_pending(Check::Unknown("AccessDenied".into())),
        );
        assert!(
            matches!(unknown, Err(NoPlan::PendingUnknown { .. })),
            "{unknown:?}"
        );
        let clean =
            crate::workflow::policy::plan(&group, &allowed(), None, &refuse, &Preflight::clean());
        assert!(clean.is_ok());
        check(
            "refusing policy, engine upgrade pending",
            base(alarm(), refuse),
            fetched(with_pending(Check::Known(engine_upgrade()))),
            at(10),
            Expect::Accept("nothing_to_do", &["post_top_message", "post_note", "page"]),
        );
    }

    fn recheck_with(pending: Check<Vec<PendingChange>>) -> Event {
        Event::Rechecked {
            before: Step::Snapshot,
            group: group_info("available", "cache.r6g.large"),
            allowed: allowed(),
            pending,
        }
    }

    fn snapshotting_acknowledged(pending: Check<Vec<PendingChange>>) -> Run {
        let mut r = snapshotting(false, 0);
        if let State::Snapshotting { plan, .. } = &mut r.state {
            plan.preflight = Some(with_pending(pending));
            plan.pending_acknowledged = true;
        }
        r
    }

    #[test]
    fn a_change_that_appears_after_the_approval_stops_the_run_before_acting() {
        let t = check(
            "recheck: an engine upgrade appeared after a clean approval",
            snapshotting(false, 0),
            recheck_with(Check::Known(engine_upgrade())),
            at(100),
            Expect::Accept(
                "group_changed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert!(matches!(
            t.run.outcome(),
            Some(Outcome::GroupChanged {
                drift: Drift::PendingChanges { .. },
                ..
            })
        ));
    }

    #[test]
    fn the_changes_the_approval_covered_do_not_stop_it_but_new_ones_do() {
        check(
            "recheck: the acknowledged upgrade is still pending",
            snapshotting_acknowledged(Check::Known(engine_upgrade())),
            recheck_with(Check::Known(engine_upgrade())),
            at(100),
            Expect::Accept("snapshotting", &["post_note", "create_snapshot"]),
        );
        let mut more = engine_upgrade();
        more.push(PendingChange::new(
            "CacheParameterGroup",
            "custom (pending-reboot)",
        ));
        let t = check(
            "recheck: another change appeared",
            snapshotting_acknowledged(Check::Known(engine_upgrade())),
            recheck_with(Check::Known(more)),
            at(100),
            Expect::Accept(
                "group_changed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        let Some(Outcome::GroupChanged {
            drift: Drift::PendingChanges { changes },
            ..
        }) = t.run.outcome()
        else {
            panic!("{:?}", t.run.state);
        };
        assert_eq!(changes.len(), 1, "only the new one is named: {changes:?}");
        assert_eq!(changes[0].field, "CacheParameterGroup");
    }

    #[test]
    fn pending_changes_unreadable_at_the_last_look_stop_a_run_nobody_acknowledged_them_for() {
        check(
            "recheck: pending unknown, approval did not cover it",
            snapshotting(false, 0),
            recheck_with(Check::Unknown("AccessDenied".into())),
            at(100),
            Expect::Accept(
                "group_changed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        );
        check(
            "recheck: pending unknown, approved as unknown",
            snapshotting_acknowledged(Check::Unknown("AccessDenied".into())),
            recheck_with(Check::Unknown("AccessDenied".into())),
            at(100),
            Expect::Accept("snapshotting", &["post_note", "create_snapshot"]),
        );
    }

    #[test]
    fn approving_the_listed_changes_is_not_approving_unknown_ones() {
        check(
            "recheck: pending unreadable after an approval of a known upgrade",
            snapshotting_acknowledged(Check::Known(engine_upgrade())),
            recheck_with(Check::Unknown("AccessDenied".into())),
            at(100),
            Expect::Accept(
                "group_changed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        );
    }

    #[test]
    fn a_plan_from_before_the_preflight_is_approved_as_before_and_still_looked_at_again() {
        let mut old = awaiting();
        if let State::AwaitingApproval { plan, .. } = &mut old.state {
            plan.preflight = None;
        }
        // A message drawn by the earlier version has a plain Approve: it still works.
        let t = check(
            "plain approve of a plan without a preflight",
            old,
            approve(false),
            at(100),
            Expect::Accept(
                "snapshotting",
                &["post_note", "offer_cancel", "recheck", "update_top_message"],
            ),
        )
        .unwrap();
        // Nothing was acknowledged: a change pending when the bot looks again stops it.
        check(
            "recheck of that plan with an upgrade pending",
            t.run,
            recheck_with(Check::Known(engine_upgrade())),
            at(200),
            Expect::Accept(
                "group_changed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        );
        let json = serde_json::to_value(plan()).unwrap();
        let mut legacy = json.as_object().unwrap().clone();
        legacy.remove("preflight");
        legacy.remove("pending_acknowledged");
        legacy.remove("shards");
        let back: Plan = serde_json::from_value(serde_json::Value::Object(legacy)).unwrap();
        assert_eq!(back.preflight, None);
        assert_eq!(back.shards, 1);
        assert!(!back.needs_acknowledgement());
    }

    #[test]
    fn before_the_upsize_too() {
        let mut r = modifying(false, false, 0);
        if let State::Modifying { plan, .. } = &mut r.state {
            plan.preflight = Some(Preflight::clean());
        }
        check(
            "recheck before the upsize: a change appeared",
            r,
            Event::Rechecked {
                before: Step::Upsize,
                group: group_info("available", "cache.r6g.large"),
                allowed: allowed(),
                pending: Check::Known(engine_upgrade()),
            },
            at(61_000),
            Expect::Accept(
                "group_changed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        );
    }
}

mod verify_transitions {
    use super::*;
    use crate::workflow::event::AwsOp;
    use crate::workflow::ports::AwsError;

    /// A run whose upsize just finished, with the default 15 minutes of watching memory.
    fn upsized() -> Run {
        let mut r = modifying(true, true, 1);
        r.policy.verify_window = Duration::from_secs(15 * 60);
        if let Trigger::Alarm { reason, .. } = &mut r.trigger {
            *reason = "Threshold Crossed: 1 datapoint [93.2] was greater than the threshold (90.0)"
                .into();
        }
        r
    }

    fn verifying() -> Run {
        let event = Event::GroupPolled {
            group: group_info("available", "cache.r6g.xlarge"),
            events: Vec::new(),
        };
        match decide(&upsized(), &event, at(90_000)) {
            Decision::Accept(t) => t.run,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_done_upsize_watches_memory_before_it_ends() {
        use Expect::*;
        let t = check(
            "done",
            upsized(),
            Event::GroupPolled {
                group: group_info("available", "cache.r6g.xlarge"),
                events: Vec::new(),
            },
            at(90_000),
            Accept(
                "verifying",
                &["post_note", "verify_memory", "update_top_message"],
            ),
        )
        .unwrap();
        let read = t
            .effects
            .iter()
            .find(|s| s.effect == Effect::VerifyMemory)
            .unwrap();
        assert_eq!(read.due, at(90_000 + 15 * 60_000), "after verify_window");
        assert_eq!(t.run.step(Step::Upsize).unwrap().status, StepStatus::Done);
        assert_eq!(
            t.run.step(Step::Verify).unwrap().status,
            StepStatus::Running
        );
        assert!(t.run.outcome().is_some(), "the outcome is known");
        assert!(!t.run.is_finished());
    }

    #[test]
    fn memory_that_came_down_ends_the_run_succeeded_and_says_so() {
        use Expect::*;
        let t = check(
            "came down",
            verifying(),
            Event::MemoryRead {
                before: Some(93.2),
                after: Some(51.0),
            },
            at(1_000_000),
            Accept(
                "succeeded",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        let v = t.run.verification.as_ref().unwrap();
        assert_eq!(
            (v.before, v.after, v.threshold),
            (Some(93.2), Some(51.0), Some(90.0))
        );
        assert_eq!(v.on, nt("cache.r6g.xlarge"));
        assert!(!v.still_high());
        assert_eq!(t.run.step(Step::Verify).unwrap().status, StepStatus::Done);
    }

    #[test]
    fn memory_still_above_the_threshold_pages_and_the_run_still_ends() {
        use Expect::*;
        let t = check(
            "still high",
            verifying(),
            Event::MemoryRead {
                before: Some(95.0),
                after: Some(91.5),
            },
            at(1_000_000),
            Accept(
                "succeeded",
                &["post_note", "page", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert!(t.run.verification.as_ref().unwrap().still_high());
        assert_eq!(t.run.step(Step::Verify).unwrap().status, StepStatus::Failed);
        let paged = t.effects.iter().any(|s| {
            matches!(
                &s.effect,
                Effect::Page {
                    action: PageAction::Trigger(PageReason::StillHigh { after, threshold })
                } if *after == 91.5 && *threshold == 90.0
            )
        });
        assert!(paged, "{:?}", t.effects);
    }

    #[test]
    fn memory_that_cannot_be_read_ends_the_run_without_the_answer() {
        use Expect::*;
        let t = check(
            "unreadable",
            verifying(),
            Event::AwsFailed {
                op: AwsOp::Verify,
                error: AwsError::Other {
                    code: "AccessDenied".into(),
                    message: "not authorized to perform cloudwatch:GetMetricData".into(),
                },
            },
            at(1_000_000),
            Accept(
                "succeeded",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        let v = t.run.verification.as_ref().unwrap();
        assert!(v.error.as_deref().unwrap().contains("AccessDenied"));
        assert!(!v.still_high());
    }

    #[test]
    fn nothing_else_moves_a_verifying_run() {
        use Expect::*;
        check(
            "cancel",
            verifying(),
            Event::Cancel {
                actor: approver("U0ONCALL1"),
            },
            at(1_000_000),
            Reject("cannot_cancel"),
        );
        check(
            "a stray poll",
            verifying(),
            Event::GroupPolled {
                group: group_info("available", "cache.r6g.xlarge"),
                events: Vec::new(),
            },
            at(1_000_000),
            Ignore,
        );
    }
}

/// After a failed or timed-out snapshot: the run waits (workers resumed, group untouched) for
/// an approver to upsize without a snapshot or cancel; `snapshot = "skip"` never takes one.
mod snapshot_fallback {
    use super::*;

    /// A snapshot that AWS reports failed, with `pause` deciding whether a pause hook ran.
    fn failed_snapshot(paused: bool) -> Run {
        let mut r = if paused {
            let mut r = pausing();
            r.steps.last_mut().unwrap().ended = Some(at(30));
            r.steps.last_mut().unwrap().status = StepStatus::Done;
            r
        } else {
            awaiting()
        };
        r.steps.push(StepRecord::start(Step::Snapshot, at(40)));
        r.state = State::Snapshotting {
            plan: plan(),
            snapshot: snapshot_name(),
            polls: 1,
            created: true,
        };
        r.cancel_offer = Some(MessageTs::parse("1764121930.000300").unwrap());
        r
    }

    fn failed_event() -> Event {
        Event::SnapshotPolled {
            status: Some(SnapshotStatus::Failed),
        }
    }

    /// The run waiting for a decision (no pause hook), as the machine leaves it.
    fn waiting() -> Run {
        let t = decide(&failed_snapshot(false), &failed_event(), at(100));
        let Decision::Accept(t) = t else {
            panic!("{t:?}")
        };
        t.run
    }

    #[test]
    fn a_failed_snapshot_pages_with_both_choices_and_waits_for_a_person() {
        use Expect::*;
        let t = check(
            "snapshot failed",
            failed_snapshot(false),
            failed_event(),
            at(100),
            Accept(
                "snapshot_failed",
                &[
                    "post_note",
                    "page",
                    "withdraw_cancel_offer",
                    "offer_cancel",
                    "timer",
                    "update_top_message",
                ],
            ),
        )
        .unwrap();
        let decide_by = at(100).plus(Duration::from_secs(3600));
        assert_eq!(
            t.effects[1].effect,
            Effect::Page {
                action: PageAction::Trigger(PageReason::SnapshotFailed {
                    timed_out: false,
                    decide_by
                })
            },
            "the page says a person can still choose"
        );
        assert_eq!(
            t.effects[2].effect,
            Effect::WithdrawCancelOffer {
                ts: MessageTs::parse("1764121930.000300").unwrap(),
                reason: CancelGone::SnapshotFailed
            },
            "the early Cancel points to the new reply"
        );
        assert_eq!(t.effects[4].due, decide_by, "the choice closes then");
        let State::SnapshotFailed {
            failure, snapshot, ..
        } = &t.run.state
        else {
            panic!("{:?}", t.run.state)
        };
        assert!(matches!(
            failure,
            Outcome::Failed {
                step: Step::Snapshot,
                ..
            }
        ));
        assert_eq!(snapshot, &snapshot_name());
        assert!(t.run.is_cancellable());
        assert!(!t.run.is_finished());
        assert!(t.run.page.open);
        assert_eq!(
            t.run.cancel_offer, None,
            "the new reply's ts comes back later"
        );
    }

    #[test]
    fn with_a_pause_hook_the_workers_are_resumed_before_the_wait() {
        use Expect::*;
        let t = check(
            "snapshot failed, paused",
            failed_snapshot(true),
            failed_event(),
            at(100),
            Accept(
                "resuming",
                &[
                    "post_note",
                    "page",
                    "withdraw_cancel_offer",
                    "call_hook",
                    "update_top_message",
                ],
            ),
        )
        .unwrap();
        let t = check(
            "resumed",
            t.run,
            Event::HookDone {
                phase: HookPhase::Resume,
            },
            at(200),
            Accept(
                "snapshot_failed",
                &["post_note", "offer_cancel", "timer", "update_top_message"],
            ),
        )
        .unwrap();
        // The deadline counts from the failure, as the page said.
        assert_eq!(t.effects[2].due, at(100).plus(Duration::from_secs(3600)));
        // Going on pauses the workers again, then looks at the group before the upsize.
        let t = check(
            "without snapshot",
            t.run,
            Event::UpsizeWithoutSnapshot {
                actor: approver("U0ONCALL1"),
            },
            at(300),
            Accept(
                "pausing",
                &[
                    "post_note",
                    "offer_cancel",
                    "post_note",
                    "call_hook",
                    "update_top_message",
                ],
            ),
        )
        .unwrap();
        assert!(t.drop_pending_work, "the fallback's timer is dropped");
        let t = check(
            "paused again",
            t.run,
            Event::HookDone {
                phase: HookPhase::Pause,
            },
            at(400),
            Accept("modifying", &["post_note", "recheck", "update_top_message"]),
        )
        .unwrap();
        let State::Modifying { snapshot, .. } = &t.run.state else {
            panic!("{:?}", t.run.state)
        };
        assert_eq!(snapshot, &None, "no snapshot to restore from");
        assert!(t.run.skips_snapshot());
    }

    #[test]
    fn an_approver_goes_on_without_a_snapshot_and_success_resolves_the_page() {
        use Expect::*;
        let mut run = waiting();
        run.cancel_offer = Some(MessageTs::parse("1764121930.000400").unwrap());
        let t = check(
            "without snapshot",
            run,
            Event::UpsizeWithoutSnapshot {
                actor: approver("U0ONCALL1"),
            },
            at(300),
            Accept(
                "modifying",
                &[
                    "post_note",
                    "withdraw_cancel_offer",
                    "offer_cancel",
                    "recheck",
                    "update_top_message",
                ],
            ),
        )
        .unwrap();
        assert_eq!(
            t.effects[0].effect,
            Effect::PostNote {
                note: Note::WithoutSnapshot {
                    by: user("U0ONCALL1")
                }
            }
        );
        assert_eq!(
            t.effects[1].effect,
            Effect::WithdrawCancelOffer {
                ts: MessageTs::parse("1764121930.000400").unwrap(),
                reason: CancelGone::WithoutSnapshot(user("U0ONCALL1")),
            }
        );
        let d = t.run.decisions.last().unwrap();
        assert_eq!(d.kind, DecisionKind::UpsizeWithoutSnapshot);
        assert_eq!(d.user, user("U0ONCALL1"));
        assert!(t.run.page.open, "the page stays open until it worked");
        // The bot still looks at the group before it acts; then the modify, then success.
        let t = check(
            "rechecked",
            t.run,
            Event::Rechecked {
                before: Step::Upsize,
                group: group_info("available", "cache.r6g.large"),
                allowed: allowed(),
                pending: Check::Known(Vec::new()),
            },
            at(400),
            Accept("modifying", &["modify_node_type"]),
        )
        .unwrap();
        let t = check(
            "requested",
            t.run,
            Event::ModifyRequested {
                group: group_info("modifying", "cache.r6g.large"),
            },
            at(500),
            Accept("modifying", &["post_note", "poll_group"]),
        )
        .unwrap();
        let t = check(
            "done",
            t.run,
            Event::GroupPolled {
                group: group_info("available", "cache.r6g.xlarge"),
                events: Vec::new(),
            },
            at(600),
            Accept(
                "succeeded",
                &["post_note", "page", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert_eq!(
            t.effects[1].effect,
            Effect::Page {
                action: PageAction::Resolve
            }
        );
        assert!(matches!(
            t.run.outcome(),
            Some(Outcome::Succeeded { snapshot: None, .. })
        ));
    }

    #[test]
    fn only_an_approver_may_go_without_a_snapshot_and_not_the_requester_unless_allowed() {
        use Expect::*;
        check(
            "stranger",
            waiting(),
            Event::UpsizeWithoutSnapshot {
                actor: stranger("U0STRANGER"),
            },
            at(300),
            Reject("not_an_approver"),
        );
        let mut asked = waiting();
        asked.trigger = command("U0ONCALL1");
        check(
            "requester",
            asked.clone(),
            Event::UpsizeWithoutSnapshot {
                actor: approver("U0ONCALL1"),
            },
            at(300),
            Reject("self_approval"),
        );
        asked.policy.allow_self_approval = true;
        check(
            "requester, allowed",
            asked,
            Event::UpsizeWithoutSnapshot {
                actor: approver("U0ONCALL1"),
            },
            at(300),
            Accept(
                "modifying",
                &["post_note", "offer_cancel", "recheck", "update_top_message"],
            ),
        );
    }

    #[test]
    fn going_without_a_snapshot_is_refused_unless_the_snapshot_failed() {
        use Expect::*;
        for (name, run) in [
            ("awaiting", awaiting()),
            ("snapshotting", snapshotting(true, 1)),
            ("modifying", modifying(true, true, 1)),
        ] {
            check(
                name,
                run,
                Event::UpsizeWithoutSnapshot {
                    actor: approver("U0ONCALL1"),
                },
                at(300),
                Reject("no_failed_snapshot"),
            );
        }
    }

    #[test]
    fn cancel_ends_it_untouched_and_resolves_the_page() {
        use Expect::*;
        let mut run = waiting();
        run.cancel_offer = Some(MessageTs::parse("1764121930.000400").unwrap());
        let t = check(
            "cancel",
            run,
            Event::Cancel {
                actor: approver("U0ONCALL2"),
            },
            at(300),
            Accept(
                "cancelled",
                &[
                    "post_note",
                    "withdraw_cancel_offer",
                    "update_top_message",
                    "post_graph",
                    "page",
                ],
            ),
        )
        .unwrap();
        assert!(t.drop_pending_work);
        assert!(!t.run.page.open);
        assert_eq!(
            t.effects[0].effect,
            Effect::PostNote {
                note: Note::Cancelled {
                    by: user("U0ONCALL2"),
                    snapshot_kept: None
                }
            },
            "a failed snapshot is not kept"
        );
        assert_eq!(t.run.step(Step::Resume), None, "no second resume");
        check(
            "stranger cancel",
            waiting(),
            Event::Cancel {
                actor: stranger("U0STRANGER"),
            },
            at(300),
            Reject("not_an_approver"),
        );
    }

    #[test]
    fn nobody_choosing_ends_the_run_as_it_failed_with_the_page_open() {
        use Expect::*;
        check(
            "early timer",
            waiting(),
            Event::TimerFired {
                timer: Timer::FallbackExpiry,
            },
            at(1_000),
            Ignore,
        );
        check(
            "approval timer",
            waiting(),
            Event::TimerFired {
                timer: Timer::ApprovalExpiry,
            },
            at(100).plus(Duration::from_secs(3600)),
            Ignore,
        );
        let t = check(
            "expired",
            waiting(),
            Event::TimerFired {
                timer: Timer::FallbackExpiry,
            },
            at(100).plus(Duration::from_secs(3600)),
            Accept("failed", &["post_note", "update_top_message", "post_graph"]),
        )
        .unwrap();
        assert!(t.run.page.open, "nothing was fixed");
        assert!(matches!(
            t.effects[0].effect,
            Effect::PostNote {
                note: Note::FallbackExpired { .. }
            }
        ));
        check(
            "too late",
            t.run,
            Event::UpsizeWithoutSnapshot {
                actor: approver("U0ONCALL1"),
            },
            at(100).plus(Duration::from_secs(3601)),
            Reject("no_failed_snapshot"),
        );
    }

    #[test]
    fn a_timed_out_snapshot_offers_the_same_and_cancel_keeps_it() {
        use Expect::*;
        let t = check(
            "timed out",
            snapshotting(true, 2),
            Event::SnapshotPolled {
                status: Some(SnapshotStatus::Creating),
            },
            at(100),
            Accept(
                "snapshot_failed",
                &[
                    "post_note",
                    "page",
                    "offer_cancel",
                    "timer",
                    "update_top_message",
                ],
            ),
        )
        .unwrap();
        assert!(matches!(
            t.effects[1].effect,
            Effect::Page {
                action: PageAction::Trigger(PageReason::SnapshotFailed {
                    timed_out: true,
                    ..
                })
            }
        ));
        let t = check(
            "cancel",
            t.run,
            Event::Cancel {
                actor: approver("U0ONCALL2"),
            },
            at(300),
            Accept(
                "cancelled",
                &["post_note", "update_top_message", "post_graph", "page"],
            ),
        )
        .unwrap();
        assert_eq!(
            t.effects[0].effect,
            Effect::PostNote {
                note: Note::Cancelled {
                    by: user("U0ONCALL2"),
                    snapshot_kept: Some(snapshot_name())
                }
            },
            "a snapshot that timed out may still finish in AWS: it is kept"
        );
    }

    #[test]
    fn cancelling_the_second_pause_closes_the_page_and_a_failed_resume_keeps_it_open() {
        // Going on without a snapshot, then cancelled while the workers are paused again:
        // a person ended it, so the page is resolved.
        let mut run = waiting();
        run.policy.pause_url = Some("http://127.0.0.1:1/pause".into());
        let Decision::Accept(t) = decide(
            &run,
            &Event::UpsizeWithoutSnapshot {
                actor: approver("U0ONCALL1"),
            },
            at(300),
        ) else {
            panic!()
        };
        assert_eq!(t.run.state_name(), "pausing");
        assert!(t.run.page.open);
        let Decision::Accept(c) = decide(
            &t.run,
            &Event::Cancel {
                actor: approver("U0ONCALL2"),
            },
            at(400),
        ) else {
            panic!()
        };
        assert!(
            c.effects.iter().any(|e| e.effect
                == Effect::Page {
                    action: PageAction::Resolve
                }),
            "{:?}",
            c.effects
        );
        // The workers may still be paused (a resume that failed): Cancel leaves the page open.
        let mut stuck = waiting();
        // A resume can only have failed after a pause.
        let mut paused = StepRecord::start(Step::Pause, at(30));
        paused.ended = Some(at(35));
        paused.status = StepStatus::Done;
        stuck.steps.insert(2, paused);
        stuck.resume_error = Some("HTTP 503".into());
        let Decision::Accept(c) = decide(
            &stuck,
            &Event::Cancel {
                actor: approver("U0ONCALL2"),
            },
            at(400),
        ) else {
            panic!()
        };
        assert!(c.run.page.open, "{:?}", c.effects);
        assert!(
            c.effects
                .iter()
                .all(|e| !matches!(e.effect, Effect::Page { .. }))
        );
        // …so the bot resumes them again on the way out, and once that worked the page is
        // resolved.
        assert_eq!(c.run.state_name(), "resuming");
        assert!(c.effects.iter().any(|e| e.effect
            == Effect::CallHook {
                phase: HookPhase::Resume
            }));
        let Decision::Accept(done) = decide(
            &c.run,
            &Event::HookDone {
                phase: HookPhase::Resume,
            },
            at(500),
        ) else {
            panic!()
        };
        assert_eq!(done.run.state_name(), "cancelled");
        assert_eq!(done.run.resume_error, None);
        assert!(!done.run.page.open);
        assert!(done.effects.iter().any(|e| e.effect
            == Effect::Page {
                action: PageAction::Resolve
            }));
    }

    #[test]
    fn a_second_offer_withdraws_the_first_so_only_one_has_live_buttons() {
        let mut run = waiting();
        let old = MessageTs::parse("1764121930.000300").unwrap();
        let new = MessageTs::parse("1764121930.000900").unwrap();
        run.cancel_offer = Some(old.clone());
        let Decision::Accept(t) = decide(&run, &Event::CancelOffered { ts: new.clone() }, at(500))
        else {
            panic!()
        };
        assert_eq!(t.run.cancel_offer, Some(new));
        assert_eq!(
            t.effects[0].effect,
            Effect::WithdrawCancelOffer {
                ts: old,
                reason: CancelGone::SnapshotFailed
            }
        );
    }

    #[test]
    fn a_policy_that_skips_the_snapshot_goes_from_approval_to_the_upsize() {
        use Expect::*;
        let skip = Policy {
            snapshot: crate::workflow::policy::SnapshotPolicy::Skip,
            ..policy()
        };
        let t = check(
            "approve",
            awaiting_with(skip, alarm()),
            Event::Approve {
                actor: approver("U0ONCALL1"),
                version: None,
                acknowledged: false,
            },
            at(100),
            Accept(
                "modifying",
                &[
                    "post_note",
                    "offer_cancel",
                    "post_note",
                    "recheck",
                    "update_top_message",
                ],
            ),
        )
        .unwrap();
        assert_eq!(
            t.effects[2].effect,
            Effect::PostNote {
                note: Note::SnapshotSkipped
            }
        );
        assert_eq!(t.run.step(Step::Snapshot), None);
        assert!(
            t.effects
                .iter()
                .all(|s| !matches!(s.effect, Effect::CreateSnapshot { .. }))
        );
    }
}

/// The person who denied a run may say why afterwards (a modal under the denial's reply).
mod denial_reason {
    use super::*;

    fn denied() -> Run {
        let t = decide(
            &awaiting(),
            &Event::Deny {
                actor: approver("U0ONCALL1"),
                version: None,
            },
            at(100),
        );
        let Decision::Accept(t) = t else {
            panic!("{t:?}")
        };
        t.run
    }

    fn explain(by: &str, reason: &str) -> Event {
        Event::DenialExplained {
            actor: approver(by),
            reason: reason.into(),
        }
    }

    #[test]
    fn the_denier_says_why_and_nothing_else_changes() {
        use Expect::*;
        let before = denied();
        let t = check(
            "explained",
            before.clone(),
            explain("U0ONCALL1", "  change freeze\nuntil   Monday "),
            at(200),
            Accept("denied", &["post_note", "update_top_message"]),
        )
        .unwrap();
        assert_eq!(
            t.run.denial_reason.as_deref(),
            Some("change freeze until Monday")
        );
        assert_eq!(t.run.state, before.state);
        assert_eq!(t.run.decisions, before.decisions);
        assert_eq!(
            t.effects[0].effect,
            Effect::PostNote {
                note: Note::DenialExplained {
                    by: user("U0ONCALL1"),
                    reason: "change freeze until Monday".into()
                }
            }
        );
        let long = "x".repeat(2_000);
        let t = check(
            "long",
            t.run,
            explain("U0ONCALL1", &long),
            at(300),
            Accept("denied", &["post_note", "update_top_message"]),
        )
        .unwrap();
        assert_eq!(
            t.run.denial_reason.unwrap().chars().count(),
            DENIAL_REASON_MAX
        );
    }

    #[test]
    fn only_the_denier_and_only_for_a_denial() {
        use Expect::*;
        check(
            "someone else",
            denied(),
            explain("U0ONCALL2", "because"),
            at(200),
            Reject("not_your_denial"),
        );
        check(
            "not denied",
            awaiting(),
            explain("U0ONCALL1", "because"),
            at(200),
            Reject("not_your_denial"),
        );
        check(
            "blank",
            denied(),
            explain("U0ONCALL1", "   "),
            at(200),
            Ignore,
        );
    }
}

/// A scale-down suggestion: one step down, only ever on an approver's word, dismissed or
/// snoozed for a while, withdrawn when the alarm fires.
mod scale_down_transitions {
    use super::*;
    use Expect::*;

    fn evidence(from: &str, to: &str) -> ScaleDownEvidence {
        ScaleDownEvidence {
            from: nt(from),
            to: nt(to),
            peak: 30.0,
            average: 22.5,
            peak_on_smaller: 60.4,
            below: 70.0,
            verify_below: 80.0,
            window: Duration::from_secs(7 * 86_400),
            points: 1_440,
            since_change: Some(Duration::from_secs(8 * 86_400)),
        }
    }

    fn suggestion(policy: Policy, from: &str, to: &str) -> Run {
        base(
            Trigger::ScaleDown {
                at: at(0),
                evidence: evidence(from, to),
            },
            policy,
        )
    }

    fn downs(from: &str) -> Vec<NodeType> {
        crate::domain::node_types::scale_downs_from(&nt(from))
    }

    fn fetched(node: &str) -> Event {
        Event::PlanFetched {
            group: group_info("available", node),
            allowed: downs(node),
            preflight: Preflight::clean(),
            forecast: None,
            prices: None,
        }
    }

    /// The suggestion as planned: waiting for an approver.
    fn waiting(policy: Policy) -> Run {
        let run = suggestion(policy, "cache.r6g.xlarge", "cache.r6g.large");
        match decide(&run, &fetched("cache.r6g.xlarge"), at(10)) {
            Decision::Accept(t) => t.run,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_suggestion_is_one_step_down_and_waits_for_an_approver_whatever_the_policy_says() {
        let eager = Policy {
            approval: ApprovalMode::Auto,
            on_approval_timeout: OnApprovalTimeout::Approve,
            ..policy()
        };
        for p in [policy(), eager] {
            let t = check(
                "suggestion planned",
                suggestion(p, "cache.r6g.xlarge", "cache.r6g.large"),
                fetched("cache.r6g.xlarge"),
                at(10),
                // No approval timeout: nothing pages, nothing approves by itself; it expires.
                Accept("awaiting_approval", &["post_top_message", "timer"]),
            )
            .unwrap();
            let plan = t.run.plan().unwrap();
            assert_eq!(plan.direction, Direction::Down);
            assert_eq!(
                (&plan.current, &plan.target),
                (&nt("cache.r6g.xlarge"), &nt("cache.r6g.large"))
            );
            assert_eq!(
                plan.choices,
                vec![nt("cache.r6g.large")],
                "one step, no picker"
            );
            assert!(t.run.page == Default::default(), "never paged for waiting");
        }
    }

    #[test]
    fn a_suggestion_that_no_longer_fits_is_dropped_quietly() {
        let floor = Policy {
            min_node_type: Some(nt("cache.r6g.xlarge")),
            ..policy()
        };
        for (name, run, event) in [
            (
                "the group moved since the check",
                suggestion(policy(), "cache.r6g.xlarge", "cache.r6g.large"),
                fetched("cache.r6g.2xlarge"),
            ),
            (
                "two steps down",
                suggestion(policy(), "cache.r6g.2xlarge", "cache.r6g.large"),
                fetched("cache.r6g.2xlarge"),
            ),
            (
                "below min_node_type",
                suggestion(floor, "cache.r6g.xlarge", "cache.r6g.large"),
                fetched("cache.r6g.xlarge"),
            ),
            (
                "AWS does not list it",
                suggestion(policy(), "cache.r6g.xlarge", "cache.r6g.large"),
                Event::PlanFetched {
                    group: group_info("available", "cache.r6g.xlarge"),
                    allowed: vec![nt("cache.t4g.small")],
                    preflight: Preflight::clean(),
                    forecast: None,
                    prices: None,
                },
            ),
            (
                "an upward type",
                suggestion(policy(), "cache.r6g.xlarge", "cache.r6g.2xlarge"),
                Event::PlanFetched {
                    group: group_info("available", "cache.r6g.xlarge"),
                    allowed: vec![nt("cache.r6g.2xlarge")],
                    preflight: Preflight::clean(),
                    forecast: None,
                    prices: None,
                },
            ),
        ] {
            // No message, no page: nobody asked, and nothing is wrong.
            // (The top message update is a no-op: there is none.)
            let t = check(
                name,
                run,
                event,
                at(10),
                Accept("nothing_to_do", &["update_top_message"]),
            )
            .unwrap();
            assert!(
                matches!(t.run.outcome(), Some(Outcome::NothingToDo { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn only_approvers_dismiss_or_snooze_and_either_ends_it_without_touching_the_group() {
        check(
            "stranger dismisses",
            waiting(policy()),
            Event::Dismiss {
                actor: stranger("U0STRANGER"),
            },
            at(20),
            Reject("not_an_approver"),
        );
        check(
            "stranger snoozes",
            waiting(policy()),
            Event::Snooze {
                actor: stranger("U0STRANGER"),
                snooze: Duration::from_secs(86_400),
            },
            at(20),
            Reject("not_an_approver"),
        );
        let t = check(
            "approver dismisses",
            waiting(policy()),
            Event::Dismiss {
                actor: approver("U0APPROVER"),
            },
            at(20),
            Accept(
                "dismissed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert_eq!(
            t.run.outcome(),
            Some(&Outcome::Dismissed {
                by: user("U0APPROVER")
            })
        );
        assert_eq!(t.run.decisions.last().unwrap().kind, DecisionKind::Dismiss);
        let t = check(
            "approver snoozes for 3 days",
            waiting(policy()),
            Event::Snooze {
                actor: approver("U0APPROVER"),
                snooze: Duration::from_secs(3 * 86_400),
            },
            at(20),
            Accept(
                "snoozed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert_eq!(
            t.run.outcome(),
            Some(&Outcome::Snoozed {
                by: user("U0APPROVER"),
                until: at(20 + 3 * 86_400_000)
            })
        );
        // A stored outcome reads back (the check reads it after a restart).
        let back: Run = serde_json::from_str(&serde_json::to_string(&t.run).unwrap()).unwrap();
        assert_eq!(back, t.run);
        check(
            "dismiss on an upsize",
            awaiting(),
            Event::Dismiss {
                actor: approver("U0APPROVER"),
            },
            at(20),
            Reject("not_a_suggestion"),
        );
    }

    #[test]
    fn no_timeout_approves_or_pages_a_suggestion_and_it_expires_unchanged() {
        let eager = Policy {
            on_approval_timeout: OnApprovalTimeout::Approve,
            ..policy()
        };
        check(
            "approval timeout",
            waiting(eager.clone()),
            Event::TimerFired {
                timer: Timer::ApprovalTimeout,
            },
            at(86_000_000),
            Ignore,
        );
        check(
            "expiry",
            waiting(eager),
            Event::TimerFired {
                timer: Timer::ApprovalExpiry,
            },
            at(86_400_010),
            Accept(
                "expired",
                &["post_note", "update_top_message", "post_graph"],
            ),
        );
    }

    #[test]
    fn an_approver_starts_the_same_workflow_one_step_down() {
        let t = check(
            "approver approves",
            waiting(policy()),
            Event::Approve {
                actor: approver("U0APPROVER"),
                version: Some(1),
                acknowledged: false,
            },
            at(20),
            Accept(
                "snapshotting",
                &["post_note", "offer_cancel", "recheck", "update_top_message"],
            ),
        )
        .unwrap();
        // The look before acting wants the target still a step *down* that AWS lists.
        let recheck = |node: &str, allowed: Vec<NodeType>| Event::Rechecked {
            before: Step::Snapshot,
            group: group_info("available", node),
            allowed,
            pending: Check::Known(Vec::new()),
        };
        check(
            "as approved",
            t.run.clone(),
            recheck("cache.r6g.xlarge", downs("cache.r6g.xlarge")),
            at(30),
            Accept("snapshotting", &["post_note", "create_snapshot"]),
        );
        let stopped = check(
            "no longer listed",
            t.run.clone(),
            recheck("cache.r6g.xlarge", vec![nt("cache.r6g.2xlarge")]),
            at(30),
            Accept(
                "group_changed",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert!(matches!(
            stopped.run.outcome(),
            Some(Outcome::GroupChanged { .. })
        ));
        // After the change memory must stay below the policy's limit.
        assert_eq!(t.run.trigger.threshold(), Some(80.0));
        assert_eq!(t.run.trigger.direction(), Direction::Down);
    }

    #[test]
    fn after_a_scale_down_memory_must_stay_below_the_policys_limit_or_on_call_is_paged() {
        let mut r = modifying(true, true, 1);
        r.trigger = Trigger::ScaleDown {
            at: at(0),
            evidence: evidence("cache.r6g.xlarge", "cache.r6g.large"),
        };
        r.policy.verify_window = Duration::from_secs(15 * 60);
        // A real one-step-down plan, back on the smaller type.
        if let State::Modifying { plan, .. } = &mut r.state {
            plan.current = nt("cache.r6g.xlarge");
            plan.target = nt("cache.r6g.large");
            plan.choices = vec![nt("cache.r6g.large")];
            plan.cap = None;
            plan.direction = Direction::Down;
        }
        let verifying = match decide(
            &r,
            &Event::GroupPolled {
                group: group_info("available", "cache.r6g.large"),
                events: Vec::new(),
            },
            at(90_000),
        ) {
            Decision::Accept(t) => t.run,
            other => panic!("{other:?}"),
        };
        let read = |after: f64| Event::MemoryRead {
            before: Some(30.0),
            after: Some(after),
        };
        let t = check(
            "holds",
            verifying.clone(),
            read(61.0),
            at(1_000_000),
            Accept(
                "succeeded",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert_eq!(t.run.verification.as_ref().unwrap().threshold, Some(80.0));
        let t = check(
            "too full on the smaller type",
            verifying,
            read(83.0),
            at(1_000_000),
            Accept(
                "succeeded",
                &["post_note", "page", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert!(t.effects.iter().any(|s| matches!(
            &s.effect,
            Effect::Page {
                action: PageAction::Trigger(PageReason::StillHigh { threshold, .. })
            } if *threshold == 80.0
        )));
    }

    #[test]
    fn a_suggestion_gives_way_to_an_upsize_until_its_modification_starts() {
        let withdraw = Event::WithdrawSuggestion {
            reason: "the memory alarm `Redis memory: prod-jobs` fired".into(),
        };
        let t = check(
            "withdrawn while it waits",
            waiting(policy()),
            withdraw.clone(),
            at(20),
            Accept(
                "nothing_to_do",
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert!(
            matches!(t.run.outcome(), Some(Outcome::NothingToDo { reason }) if reason.starts_with("withdrawn: the memory alarm")),
            "{:?}",
            t.run.outcome()
        );
        assert!(withdrawable(&waiting(policy())));
        let approved = match decide(
            &waiting(policy()),
            &Event::Approve {
                actor: approver("U0APPROVER"),
                version: Some(1),
                acknowledged: false,
            },
            at(20),
        ) {
            Decision::Accept(t) => t.run,
            other => panic!("{other:?}"),
        };
        // Approved, taking its snapshot: it stops there (the snapshot, if AWS started it, is
        // AWS's to finish; the group is not touched).
        assert!(withdrawable(&approved));
        let t = check(
            "withdrawn during the snapshot",
            approved.clone(),
            withdraw.clone(),
            at(30),
            Accept(
                "nothing_to_do",
                // (No Cancel reply was posted in this table, so none to withdraw.)
                &["post_note", "update_top_message", "post_graph"],
            ),
        )
        .unwrap();
        assert!(t.drop_pending_work, "its pending AWS work is dropped");
        // An alarm is only a repeat on the run itself (the app withdraws it first).
        check(
            "an alarm on an approved scale-down",
            approved,
            Event::AlarmRepeated {
                delivery_id: "eventbridge:fired".into(),
                reason: "Threshold Crossed".into(),
                value: Some(91.0),
            },
            at(30),
            Accept("snapshotting", &["repeat_line", "update_top_message"]),
        );
        // Once the modification is under way it can't be stopped.
        let mut moving = modifying(true, true, 1);
        moving.trigger = suggestion(policy(), "cache.r6g.xlarge", "cache.r6g.large").trigger;
        assert!(!withdrawable(&moving));
        check(
            "withdraw while modifying",
            moving,
            withdraw.clone(),
            at(30),
            Ignore,
        );
        // And an upsize is never withdrawn.
        check("withdraw an upsize", awaiting(), withdraw, at(30), Ignore);
    }
}
