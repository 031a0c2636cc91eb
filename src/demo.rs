//! `redis-autoscaler demo`: the whole flow on this machine, with no accounts and no network.
//!
//! It starts the ElastiCache simulator, local stand-ins for Slack's Web API and PagerDuty,
//! and the bot itself (store, runner and HTTP server) with compressed time; fires an alarm;
//! acts as the on-call engineer; and prints the channel as a person would read it, the pages,
//! and the audit trail. It exits 0 when the run ended as the scenario should.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use tokio::sync::watch;

use crate::alarm::sns::ReqwestSnsHttp;
use crate::app::App;
use crate::config::{Config, Env};
use crate::domain::{ChannelId, NodeType, ReplicationGroupId, RunId, Timestamp};
use crate::elasticache::sdk::{SdkElastiCache, config_for_endpoint};
use crate::elasticache::sim::{self, SimConfig, SimGroup};
use crate::standin::hooks::{FakeHooks, FakeHooksHandle};
use crate::standin::pagerduty::{FakePagerDuty, FakePagerDutyHandle};
use crate::standin::slack::{FakeSlack, FakeSlackHandle, SlackEvent};
use crate::startup::{Application, Deps, stopped};
use crate::store::SqliteStore;
use crate::workflow::ports::SystemClock;
use crate::workflow::run::{Outcome, Run, State};
use crate::workflow::runner::RunnerOptions;

const CHANNEL: &str = "C0DEMOOPS";
const ONCALL: &str = "U0ONCALL1";
const GROUP: &str = "prod-jobs";
const BOT_TOKEN: &str = "xoxb-demo-not-a-real-token";
const HOOK_SECRET: &str = "demo-hook-signing-secret";
const APP_TOKEN: &str = "xapp-1-A0DEMO-1-demo-not-a-real-token";
/// The socket-mode scenario's alarm queue in the simulator.
const ALARM_QUEUE: &str = "redis-autoscaler-alarms";

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Which story to tell.
    #[arg(long, value_enum, default_value_t = Scenario::Happy)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Alarm, approval, snapshot, upsize to the next size: succeeded.
    Happy,
    /// The snapshot takes longer than the run allows: timed out, on-call paged, and on-call
    /// chooses "Upsize without a snapshot" in the thread: succeeded, page resolved.
    SnapshotTimeout,
    /// AWS rolls the modification back: failed at upsize, on-call paged.
    ModifyFails,
    /// The on-call engineer denies the upsize: nothing changes.
    Denied,
    /// Nobody approves in time: on-call paged; a late approval still works and resolves it.
    Escalate,
    /// An engine upgrade waits on the group: the card warns that the upsize applies it too, and
    /// on-call approves both with "Approve with pending changes": succeeded, upgrade applied.
    PendingChanges,
    /// Pause and resume hooks (a stand-in for the workers' endpoint): the workers are paused
    /// before the snapshot; AWS rolls the upsize back, on-call is paged, and the workers are
    /// resumed all the same (told the run failed).
    Hooks,
    /// The happy path, then a minute of CloudWatch readings after the upsize: "memory 93 % →
    /// 46 %" in the thread (CloudWatch has a reading a minute, so this one takes a minute).
    Verify,
    /// The happy path in Socket Mode: `/redis status` and the Approve click come over the
    /// bot's WebSocket to (the stand-in's) Slack, acknowledged within 3 s; the bot serves no
    /// Slack HTTP endpoint and has no signing secret.
    SocketMode,
    /// A quiet week on `cache.r6g.xlarge`: the scale-down check suggests one size down with its
    /// evidence, on-call approves, and the same workflow moves it to `cache.r6g.large`.
    ScaleDown,
}

impl Scenario {
    fn expected(self) -> &'static str {
        match self {
            // The snapshot times out; on-call goes on without one.
            Scenario::Happy
            | Scenario::Escalate
            | Scenario::PendingChanges
            | Scenario::SnapshotTimeout
            | Scenario::Verify
            | Scenario::SocketMode
            | Scenario::ScaleDown => "succeeded",
            Scenario::ModifyFails | Scenario::Hooks => "failed",
            Scenario::Denied => "denied",
        }
    }
}

/// What the demo's bot is configured with: the real config parser, compressed time.
/// `hooks`: the stand-in's URLs for the group's pause and resume hooks.
fn demo_config(scenario: Scenario, hooks: Option<&FakeHooksHandle>) -> String {
    let verify_window = if scenario == Scenario::Verify {
        "61s"
    } else {
        "0s"
    };
    let (max_polls, approval_timeout) = match scenario {
        Scenario::SnapshotTimeout => (5, "30s"),
        Scenario::Escalate => (40, "1500ms"),
        _ => (40, "30s"),
    };
    let hook_keys = hooks
        .map(|h| {
            format!(
                "pause_url = \"{}\"\nresume_url = \"{}\"\n",
                h.url("pause"),
                h.url("resume")
            )
        })
        .unwrap_or_default();
    let mode = if scenario == Scenario::SocketMode {
        "socket"
    } else {
        "http"
    };
    // No inbound port in Socket Mode: the alarm comes from the (simulated) SQS queue too.
    let alarms = match scenario {
        Scenario::SocketMode => format!(
            "[alarms]\nsqs_queue_url = \"https://sqs.us-east-1.amazonaws.com/123456789012/{ALARM_QUEUE}\"\nsqs_wait = \"1s\"\n"
        ),
        // The check looks half a second after start, over the last week.
        Scenario::ScaleDown => "[alarms]\nscale_down_interval = \"500ms\"\n".to_string(),
        _ => String::new(),
    };
    format!(
        r#"
listen = "127.0.0.1:0"
database = "demo.db"

[slack]
mode = "{mode}"
channel = "{CHANNEL}"
approvers = ["{ONCALL}"]

{alarms}
[delivery]
retry_interval = "100ms"

[defaults]
approval = "required"
approval_timeout = "{approval_timeout}"
on_approval_timeout = "escalate"
snapshot_poll_interval = "250ms"
snapshot_max_polls = {max_polls}
modify_poll_interval = "250ms"
modify_timeout = "30s"
# CloudWatch has one memory reading a minute, and the demo's upsize takes seconds: only the
# `verify` scenario waits a minute to read one.
verify_window = "{verify_window}"
aws_retry_interval = "100ms"

[groups.{GROUP}]
max_node_type = "cache.r6g.2xlarge"
{hook_keys}"#
    )
}

pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let scenario = args.scenario;
    let started = Instant::now();
    println!(
        "redis-autoscaler demo: scenario `{}`",
        scenario
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    );
    println!("(simulated ElastiCache, local Slack and PagerDuty stand-ins; time is compressed)\n");

    let group = ReplicationGroupId::parse(GROUP)?;
    let on = match scenario {
        Scenario::ScaleDown => "cache.r6g.xlarge",
        _ => "cache.r6g.large",
    };
    let mut demo_group = SimGroup::new(group.clone(), NodeType::parse(on)?)
        .replicas(1)
        .shards(1);
    if scenario == Scenario::PendingChanges {
        demo_group = demo_group.pending_engine_version("7.2.4");
    }
    let sim_config = SimConfig {
        groups: vec![demo_group],
        snapshot_duration: match scenario {
            // Longer than the run gives it (5 polls × 250 ms): it times out, and AWS finishes
            // it a little later (the group is busy until then, and the upsize waits for it).
            Scenario::SnapshotTimeout => Duration::from_secs(3),
            _ => Duration::from_millis(1200),
        },
        modify_duration: Duration::from_millis(1500),
        ..SimConfig::default()
    };
    let sim = sim::spawn(sim_config)
        .await
        .context("starting the ElastiCache simulator")?;
    if matches!(scenario, Scenario::ModifyFails | Scenario::Hooks) {
        sim.fail_modifications_of(&group, sim::ModifyFault::Revert);
    }
    // The last hours as the memory graph shows them: climbing towards the alarm.
    let now_ms = crate::domain::Timestamp::now().as_millis();
    let ago = |minutes: i64| crate::domain::Timestamp::from_millis(now_ms - minutes * 60_000);
    for (member, lift) in [("001", 0.0), ("002", -4.0)] {
        let node = crate::domain::CacheClusterId::parse(&format!("{group}-{member}"))?;
        let curve = match scenario {
            // A quiet week: at most 21 % of 26.3 GiB (42 % of the 13.1 GiB size down).
            Scenario::ScaleDown => sim::MemoryCurve::constant(17.0 + lift)
                .then(ago(3 * 1440), 21.0 + lift)
                .then(ago(3 * 1440 - 90), 17.0 + lift),
            _ => sim::MemoryCurve::constant(68.0 + lift)
                .then(ago(100), 76.0 + lift)
                .then(ago(45), 85.0 + lift)
                .then(ago(10), 93.0 + lift),
        }
        // The data stays; a node with twice the memory holds it at half the percentage.
        .following_upsizes();
        sim.set_memory(&node, curve);
    }
    let slack = FakeSlack::spawn(BOT_TOKEN).await?;
    let graphs_dir = std::env::temp_dir().join("redis-autoscaler-demo-graphs");
    std::fs::create_dir_all(&graphs_dir)?;
    slack.save_files_to(&graphs_dir);
    let pagerduty = FakePagerDuty::spawn().await?;
    // The workers' pause/resume endpoint, checking the bot's signatures with the shared secret.
    let hooks = match scenario {
        Scenario::Hooks => Some(FakeHooks::spawn(HOOK_SECRET).await?),
        _ => None,
    };

    let dir = std::env::temp_dir().join(format!("redis-autoscaler-demo-{}", RunId::generate()));
    std::fs::create_dir_all(&dir)?;
    let env = Env::default().with("SLACK_BOT_TOKEN", BOT_TOKEN);
    // Socket Mode authenticates with the app token; there is no signing secret to set.
    let env = if scenario == Scenario::SocketMode {
        slack.socket_mode().set_app_token(APP_TOKEN);
        env.with("SLACK_APP_TOKEN", APP_TOKEN)
    } else {
        env.with("SLACK_SIGNING_SECRET", "demo-signing-secret")
    };
    let env = if scenario == Scenario::SocketMode {
        // Alarms come from the queue: no API key for an HTTP route.
        sim.create_queue(crate::elasticache::sim::SimQueue::new(ALARM_QUEUE));
        env
    } else {
        env.with("ALARM_API_KEY", "demo-alarm-key")
    };
    let env = env
        .with("PAGERDUTY_ROUTING_KEY", FakePagerDuty::EXAMPLE_ROUTING_KEY)
        .with("HOOK_SIGNING_SECRET", HOOK_SECRET)
        .with("SLACK_API_URL", slack.base_url())
        .with("PAGERDUTY_EVENTS_URL", pagerduty.url());
    let mut config = Config::parse(&demo_config(scenario, hooks.as_ref()), &env)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    config.database = dir.join("demo.db");
    let store = Arc::new(SqliteStore::open(&config.database)?);
    let aws = config_for_endpoint(&sim.endpoint());
    let deps = Deps {
        store: store.clone(),
        aws: Arc::new(SdkElastiCache::new(&aws)),
        memory: Arc::new(crate::cloudwatch::SdkCloudWatch::new(&aws)),
        // The simulator lists prices too: the demo's card shows what the upsize costs.
        prices: Some(Arc::new(crate::pricing::SdkPrices::new(
            &aws,
            &config.pricing.region,
        ))),
        clock: Arc::new(SystemClock),
        sns_http: Arc::new(ReqwestSnsHttp(crate::http_client::build(
            Duration::from_secs(5),
        ))),
        // The simulator answers STS too: the demo learns its account the way `serve` does.
        home: crate::startup::home(&config, &aws).await?,
        places: None,
        options: RunnerOptions::default(),
    };
    let bot = Application::build(config, deps).await?;
    let bot = match scenario {
        Scenario::SocketMode => bot.with_sqs(&aws),
        _ => bot,
    };
    let bot_addr = bot.local_addr();
    let app = bot.app().clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let running = tokio::spawn(bot.run_until_stopped(stopped(stop_rx)));
    let printer = tokio::spawn(print_live(slack.clone(), started));
    println!("bot listening on http://{bot_addr}\n");

    let result = drive(&app, &slack, &sim, bot_addr, scenario, started).await;

    // Let the last deliveries (final notes, pages) go out before the story is printed.
    if let Ok(run_id) = &result {
        wait_until(Duration::from_secs(10), || {
            store
                .pending_effects(Some(run_id))
                .map(|p| p.is_empty())
                .unwrap_or(true)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop_tx.send(true);
    running.await.ok();
    printer.abort();

    let run_id = result?;
    let run = store.run(&run_id)?.context("the run disappeared")?;
    let channel = ChannelId::parse(CHANNEL)?;
    println!(
        "\n════ #ops as a person reads it ════\n{}",
        slack.transcript(&channel)
    );
    print_pages(&pagerduty);
    if let Some(hooks) = &hooks {
        print_hooks(hooks);
    }
    println!("\n════ audit trail of {} ════", run.id);
    for a in store.audit_trail(&run.id)? {
        println!(
            "  +{:>7}  {:<10} {:<34} {}",
            crate::domain::format_duration(a.at.since(run.created_at)),
            a.actor,
            a.kind,
            a.detail
        );
    }
    for f in slack.files().iter().filter(|f| f.completed) {
        let title = f.title.as_deref().unwrap_or(&f.name);
        println!("The graph “{title}” is in {}", graphs_dir.display());
    }
    let aws_calls = sim.calls();
    println!(
        "\nElastiCache saw {} CreateSnapshot and {} ModifyReplicationGroup request(s); {} is now on {}.",
        aws_calls
            .iter()
            .filter(|c| c.action == "CreateSnapshot" && c.outcome == "ok")
            .count(),
        aws_calls
            .iter()
            .filter(|c| c.action == "ModifyReplicationGroup" && c.outcome == "ok")
            .count(),
        group,
        sim.group(&group)
            .and_then(|g| g.node_type)
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into())
    );
    let engine = sim.engine_version(&group).unwrap_or_default();
    println!("{group} runs Redis {engine}.");
    std::fs::remove_dir_all(&dir).ok();
    // The pending upgrade was shown, approved explicitly, and applied with the node type.
    let pending_ok = scenario != Scenario::PendingChanges
        || (engine == "7.2.4"
            && run
                .plan()
                .is_some_and(|p| p.pending_acknowledged && p.needs_acknowledgement()));

    let got = run.state_name();
    let want = scenario.expected();
    println!(
        "\nRun {} ended `{got}` in {:.1}s (expected `{want}`): {}",
        run.id,
        started.elapsed().as_secs_f64(),
        if got == want {
            "as the scenario should"
        } else {
            "NOT as the scenario should"
        }
    );
    Ok(
        if got == want && pending_ok && scenario_checks(scenario, &run, &pagerduty, hooks.as_ref())
        {
            0
        } else {
            1
        },
    )
}

/// Extra promises each scenario makes.
fn scenario_checks(
    scenario: Scenario,
    run: &Run,
    pd: &FakePagerDutyHandle,
    hooks: Option<&FakeHooksHandle>,
) -> bool {
    let events = pd.events();
    let actions: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event_action"].as_str())
        .collect();
    let thread_linked = events
        .iter()
        .filter(|e| e["event_action"] == "trigger")
        .all(|e| {
            e["links"][0]["href"]
                .as_str()
                .is_some_and(|h| h.contains("/archives/"))
        });
    let ok = match scenario {
        Scenario::Happy | Scenario::Denied | Scenario::PendingChanges | Scenario::SocketMode => {
            actions.is_empty()
        }
        // One step down, and nobody paged: not for the wait, not after.
        Scenario::ScaleDown => {
            let down = matches!(
                run.outcome(),
                Some(crate::workflow::run::Outcome::Succeeded { to, .. }) if to.to_string() == "cache.r6g.large"
            );
            actions.is_empty() && down
        }
        Scenario::Verify => {
            // It worked, and the thread says so from CloudWatch's readings.
            let fell = run
                .verification
                .as_ref()
                .is_some_and(|v| matches!((v.before, v.after), (Some(b), Some(a)) if a < b));
            if !fell {
                println!(
                    "no verification reading after the upsize: {:?}",
                    run.verification
                );
            }
            actions.is_empty() && fell
        }
        Scenario::ModifyFails => actions == ["trigger"] && thread_linked,
        // Paused before the snapshot, resumed once (signed, told the run failed), and paged.
        Scenario::Hooks => {
            let calls = hooks.map(|h| h.calls()).unwrap_or_default();
            let phases: Vec<&str> = calls.iter().map(|c| c.phase.as_str()).collect();
            let hooks_ok = phases == ["pause", "resume"]
                && calls
                    .iter()
                    .all(|c| c.signature_ok && c.status == 200 && c.body["phase"] == c.phase)
                && calls[1].body["outcome"] == "failed";
            if !hooks_ok {
                println!("unexpected hook calls for this scenario: {calls:?}");
            }
            hooks_ok && actions == ["trigger"] && thread_linked
        }
        // Paged when the snapshot timed out, resolved once the upsize without it worked.
        Scenario::Escalate | Scenario::SnapshotTimeout => {
            actions == ["trigger", "resolve"] && thread_linked
        }
    };
    if !ok {
        println!("unexpected PagerDuty events for this scenario: {actions:?}");
    }
    ok && !matches!(
        run.state,
        State::Finished {
            outcome: Outcome::NothingToDo { .. },
            ..
        }
    )
}

/// Fire the alarm and play the on-call engineer.
/// The first run the bot starts by itself (from the queue, from the scale-down check), within
/// 10 s.
async fn first_run(app: &App) -> anyhow::Result<Option<crate::workflow::run::Run>> {
    for _ in 0..100 {
        if let Some(run) = app.store.recent_runs(None, 1).await?.pop() {
            return Ok(Some(run));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

async fn drive(
    app: &App,
    slack: &FakeSlackHandle,
    sim: &sim::SimHandle,
    bot: std::net::SocketAddr,
    scenario: Scenario,
    started: Instant,
) -> anyhow::Result<RunId> {
    let mut committed = app.runner.subscribe();
    if scenario != Scenario::ScaleDown {
        say(
            started,
            "CloudWatch: alarm `Redis memory: prod-jobs` goes to ALARM (93.2%)",
        );
    }
    let run_id = if scenario == Scenario::ScaleDown {
        say(
            started,
            "a quiet week on cache.r6g.xlarge (memory at most 21 %); the scale-down check looks",
        );
        let run = first_run(app)
            .await?
            .context("the scale-down check suggested nothing within 10 s")?;
        say(
            started,
            "the check suggests one size down → a suggestion waits for an approver",
        );
        run.id
    } else if scenario == Scenario::SocketMode {
        let queue = app.config.alarms.sqs_queue_url.as_ref();
        let queue = queue.context("the Socket Mode demo takes its alarms from a queue")?;
        sim.send_message(ALARM_QUEUE, &alarm_event().to_string())
            .context("the demo's queue exists")?;
        say(
            started,
            &format!("EventBridge sends it to the SQS queue {queue}; the bot long-polls it"),
        );
        let run = first_run(app)
            .await?
            .context("the queued alarm started no run within 10 s")?;
        say(started, "the bot took it from the queue → started");
        run.id
    } else {
        let answer = deliver_alarm(app, bot).await?;
        say(
            started,
            &format!(
                "EventBridge delivers it to POST /alarms/eventbridge (X-Api-Key) → {}",
                answer["outcome"].as_str().unwrap_or("?")
            ),
        );
        RunId::parse(
            answer["run_id"]
                .as_str()
                .context("the alarm started a run")?,
        )?
    };

    // Wait for the message with the buttons.
    let waiting = wait_for(&mut committed, &run_id, Duration::from_secs(15), |r| {
        matches!(r.state, State::AwaitingApproval { .. }) && r.message.is_some() || r.is_finished()
    })
    .await?;
    if waiting.is_finished() {
        return Ok(run_id);
    }
    if scenario == Scenario::SocketMode {
        socket_mode_approval(slack, bot, &waiting, started).await?;
        wait_for(&mut committed, &run_id, Duration::from_secs(25), |r| {
            r.is_finished()
        })
        .await?;
        return Ok(run_id);
    }
    let secret = app
        .config
        .secrets
        .slack_signing_secret
        .clone()
        .context("the demo sets a signing secret")?;
    let (button, who) = match scenario {
        Scenario::Denied => ("deny", "on-call taps Deny"),
        Scenario::Escalate => {
            say(started, "on-call is asleep…");
            wait_for(&mut committed, &run_id, Duration::from_secs(15), |r| {
                r.page.open
            })
            .await?;
            tokio::time::sleep(Duration::from_millis(800)).await;
            ("approve", "paged, on-call wakes up and taps Approve")
        }
        Scenario::PendingChanges => (
            "approve_pending",
            "on-call reads the warning and taps Approve with pending changes",
        ),
        Scenario::ScaleDown => (
            "approve",
            "on-call reads the evidence and taps Approve scale-down",
        ),
        _ => ("approve", "on-call taps Approve"),
    };
    if scenario != Scenario::Escalate {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let top = waiting.message.clone().context("the run has a message")?;
    let status = click(slack, bot, &secret, &top, &top.ts, button).await?;
    say(
        started,
        &format!("{who} (a signed block_actions POST to /slack/interactions → {status})"),
    );
    if scenario == Scenario::SnapshotTimeout {
        // The snapshot times out; the thread offers to go on without one.
        let failed = wait_for(&mut committed, &run_id, Duration::from_secs(25), |r| {
            matches!(r.state, State::SnapshotFailed { .. }) && r.cancel_offer.is_some()
                || r.is_finished()
        })
        .await?;
        if let Some(offer) = failed
            .cancel_offer
            .clone()
            .filter(|_| !failed.is_finished())
        {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let status = click(
                slack,
                bot,
                &secret,
                &top,
                &offer,
                crate::slack::blocks::actions::WITHOUT_SNAPSHOT,
            )
            .await?;
            say(
                started,
                &format!(
                    "paged, on-call reads the thread and taps Upsize without a snapshot (→ {status})"
                ),
            );
        }
    }
    // The verify scenario reads memory a minute after the upsize.
    let within = Duration::from_secs(if scenario == Scenario::Verify { 90 } else { 25 });
    wait_for(&mut committed, &run_id, within, |r| r.is_finished()).await?;
    Ok(run_id)
}

/// The alarm, as an EventBridge API destination delivers it: CloudWatch's "Alarm State Change"
/// event (the shape of AWS's own sample) for `prod-jobs`, with the API key header.
async fn deliver_alarm(app: &App, bot: std::net::SocketAddr) -> anyhow::Result<serde_json::Value> {
    let key = app
        .config
        .secrets
        .alarm_api_key
        .clone()
        .context("the demo sets an API key")?;
    let response = crate::http_client::build(Duration::from_secs(5))
        .post(format!("http://{bot}/alarms/eventbridge"))
        .header("Content-Type", "application/json")
        .header("X-Api-Key", key.expose())
        .body(alarm_event().to_string())
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("the bot refused the alarm: HTTP {}", response.status());
    }
    Ok(response.json().await?)
}

/// CloudWatch's "Alarm State Change" event (the shape of AWS's own sample) for `prod-jobs`.
fn alarm_event() -> serde_json::Value {
    let now = Timestamp::now().to_rfc3339();
    serde_json::json!({
        "version": "0",
        "id": format!("demo-{}", RunId::generate()),
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": "123456789012",
        "time": now,
        "region": "us-east-1",
        "resources": [format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:Redis memory: {GROUP}")],
        "detail": {
            "alarmName": format!("Redis memory: {GROUP}"),
            "configuration": {
                "description": format!("Redis memory: {GROUP} above 90%"),
                "metrics": [{
                    "id": "m1",
                    "metricStat": {
                        "metric": {
                            "dimensions": { "ReplicationGroupId": GROUP },
                            "name": "DatabaseMemoryUsagePercentage",
                            "namespace": "AWS/ElastiCache"
                        },
                        "period": 60,
                        "stat": "Average"
                    },
                    "returnData": true
                }]
            },
            "previousState": { "value": "OK", "reason": "", "timestamp": now },
            "state": {
                "value": "ALARM",
                "reason": "Threshold Crossed: 1 out of the last 1 datapoints [93.2 (26/11/26 03:12:00)] was greater than the threshold (90.0) (minimum 1 datapoint for OK -> ALARM transition).",
                "reasonData": "{\"version\":\"1.0\",\"recentDatapoints\":[93.2],\"threshold\":90.0}",
                "timestamp": now
            }
        }
    })
}

/// Socket Mode: on-call asks `/redis status prod-jobs` and taps Approve, both as envelopes
/// over the bot's WebSocket, each acknowledged within Slack's 3 s; the bot's `/slack/*`
/// routes are not there.
async fn socket_mode_approval(
    slack: &FakeSlackHandle,
    bot: std::net::SocketAddr,
    waiting: &Run,
    started: Instant,
) -> anyhow::Result<()> {
    use crate::standin::socket_mode::{envelope_id, interactive_envelope, slash_command_envelope};
    let socket = slack.socket_mode();
    if !socket.wait_for_live(2, Duration::from_secs(10)).await {
        bail!("the bot did not open its Socket Mode connections");
    }
    say(
        started,
        &format!(
            "the bot holds {} Socket Mode connections to Slack (apps.connections.open: {})",
            socket.live().len(),
            slack.count("apps.connections.open")
        ),
    );
    let command = slash_command_envelope(serde_json::json!({
        "team_id": "T0DEMO", "team_domain": "demo", "channel_id": CHANNEL, "channel_name": "ops",
        "user_id": ONCALL, "user_name": "on-call", "command": "/redis",
        "text": format!("status {GROUP}"), "api_app_id": "A0DEMO",
        "response_url": slack.response_url("demo-status"),
        "trigger_id": "0000000000.000000000.status",
    }));
    let ack = push_and_wait(slack, &command).await?;
    let answer = ack
        .payload
        .as_ref()
        .and_then(|p| p["text"].as_str())
        .unwrap_or("(no answer)")
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    say(
        started,
        &format!(
            "on-call types /redis status {GROUP}: a slash_commands envelope, acked in {} ms with the answer: {answer}",
            ack.after.unwrap_or_default().as_millis()
        ),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let top = waiting.message.clone().context("the run has a message")?;
    let payload = click_payload(slack, &top, &top.ts, "approve")?;
    let click = interactive_envelope(payload);
    let ack = push_and_wait(slack, &click).await?;
    say(
        started,
        &format!(
            "on-call taps Approve: an interactive envelope ({}), acked in {} ms",
            envelope_id(&click),
            ack.after.unwrap_or_default().as_millis()
        ),
    );
    let refused = crate::http_client::build(Duration::from_secs(5))
        .post(format!("http://{bot}/slack/interactions"))
        .body("payload=%7B%7D")
        .send()
        .await?
        .status()
        .as_u16();
    say(
        started,
        &format!(
            "(POST /slack/interactions on the bot → {refused}: no Slack HTTP endpoint in Socket Mode)"
        ),
    );
    if refused != 404 {
        bail!("the bot serves /slack/interactions in Socket Mode");
    }
    Ok(())
}

/// Push an envelope to a live connection; its ack, which must come within Slack's 3 s.
async fn push_and_wait(
    slack: &FakeSlackHandle,
    envelope: &serde_json::Value,
) -> anyhow::Result<crate::standin::socket_mode::FakeAck> {
    let socket = slack.socket_mode();
    socket
        .push(envelope)
        .context("no live Socket Mode connection")?;
    let id = crate::standin::socket_mode::envelope_id(envelope);
    let ack = socket
        .wait_for_ack(id, Duration::from_secs(5))
        .await
        .context("the envelope was not acknowledged")?;
    match ack.after {
        Some(after) if after < Duration::from_secs(3) => Ok(ack),
        after => bail!("acknowledged too late: {after:?}"),
    }
}

/// A `block_actions` payload for tapping `action_id` on the message `on`, as Slack sends it.
fn click_payload(
    slack: &FakeSlackHandle,
    top: &crate::workflow::run::TopMessage,
    on: &crate::domain::MessageTs,
    action_id: &str,
) -> anyhow::Result<serde_json::Value> {
    let posted = slack
        .message(&top.channel, on)
        .context("the stand-in has the message")?;
    // The very element the person taps, as it is on the message.
    let mut action = posted
        .blocks
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| {
            let block_id = b["block_id"].clone();
            let elements = b["elements"].as_array().cloned().unwrap_or_default();
            elements.into_iter().map(move |mut e| {
                e["block_id"] = block_id.clone();
                e
            })
        })
        .find(|e| e["action_id"] == action_id)
        .context("the message has that button")?;
    action["action_ts"] = serde_json::json!(format!("{}.000100", Timestamp::now().as_secs()));
    let payload = serde_json::json!({
        "type": "block_actions",
        "team": { "id": "T0DEMO", "domain": "demo" },
        "user": { "id": ONCALL, "username": "on-call", "team_id": "T0DEMO" },
        "api_app_id": "A0DEMO",
        "container": {
            "type": "message", "message_ts": on.as_str(),
            "channel_id": top.channel.as_str(), "is_ephemeral": false
        },
        "trigger_id": "0000000000.000000000.demo",
        "channel": { "id": top.channel.as_str(), "name": "ops" },
        "message": { "type": "message", "ts": on.as_str(), "text": posted.text },
        "response_url": slack.response_url("demo-click"),
        "actions": [action],
    });
    Ok(payload)
}

/// Click a button on the run's message the way Slack delivers it: a `block_actions` payload,
/// form-encoded, signed with the signing secret, POSTed to the bot's own endpoint.
async fn click(
    slack: &FakeSlackHandle,
    bot: std::net::SocketAddr,
    secret: &crate::domain::Secret,
    top: &crate::workflow::run::TopMessage,
    on: &crate::domain::MessageTs,
    action_id: &str,
) -> anyhow::Result<u16> {
    let payload = click_payload(slack, top, on, action_id)?;
    let body = serde_urlencoded::to_string([("payload", payload.to_string())])?;
    let ts = Timestamp::now().as_secs().to_string();
    let signature = crate::slack::signature::sign(secret, &ts, body.as_bytes());
    let response = crate::http_client::build(Duration::from_secs(5))
        .post(format!("http://{bot}/slack/interactions"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Slack-Request-Timestamp", ts)
        .header("X-Slack-Signature", signature)
        .body(body)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

fn say(started: Instant, what: &str) {
    println!("[{:>5.1}s] ▶ {what}", started.elapsed().as_secs_f64());
}

async fn wait_for(
    rx: &mut tokio::sync::broadcast::Receiver<crate::workflow::runner::Committed>,
    run_id: &RunId,
    timeout: Duration,
    done: impl Fn(&Run) -> bool,
) -> anyhow::Result<Run> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(c)) if &c.run.id == run_id && done(&c.run) => return Ok(*c.run),
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => bail!("the runner stopped: {e}"),
            Err(_) => bail!("timed out waiting for the run"),
        }
    }
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Print Slack traffic as it happens: new messages whole, edits as the lines that changed.
async fn print_live(slack: FakeSlackHandle, started: Instant) {
    let mut rx = slack.subscribe();
    let mut last: std::collections::HashMap<String, String> = Default::default();
    loop {
        let event = match rx.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let t = started.elapsed().as_secs_f64();
        match event {
            SlackEvent::Posted {
                ts,
                thread_ts: None,
                rendered,
                ..
            } => {
                println!("[{t:>5.1}s] #ops  new message:");
                for line in rendered.lines() {
                    println!("          │ {line}");
                }
                last.insert(ts.to_string(), rendered);
            }
            SlackEvent::Posted {
                thread_ts: Some(_),
                rendered,
                ..
            } => {
                println!(
                    "[{t:>5.1}s] #ops  ↳ {}",
                    rendered.lines().next().unwrap_or("")
                );
            }
            SlackEvent::Updated { ts, rendered, .. } => {
                let before = last.get(ts.as_str()).cloned().unwrap_or_default();
                let old: std::collections::HashSet<&str> = before.lines().collect();
                let changed: Vec<&str> = rendered
                    .lines()
                    .filter(|l| !old.contains(l) && !l.trim().is_empty())
                    .collect();
                if !changed.is_empty() {
                    println!("[{t:>5.1}s] #ops  ✎ message updated:");
                    for line in changed {
                        println!("          │ {line}");
                    }
                }
                last.insert(ts.to_string(), rendered);
            }
            SlackEvent::Ephemeral { rendered, .. } | SlackEvent::Responded { rendered } => {
                println!(
                    "[{t:>5.1}s] (only visible to you) {}",
                    rendered.lines().next().unwrap_or("")
                );
            }
        }
    }
}

fn print_pages(pd: &FakePagerDutyHandle) {
    println!("════ PagerDuty ════");
    let t = pd.transcript();
    if t.trim().is_empty() {
        println!("  (no pages)");
    } else {
        print!("{t}");
        if !t.ends_with('\n') {
            println!();
        }
    }
}

/// The calls the workers' hook endpoint received, in order.
fn print_hooks(hooks: &FakeHooksHandle) {
    println!("\n════ worker hooks (the stand-in's inbox) ════");
    let calls = hooks.calls();
    if calls.is_empty() {
        println!("  (no calls)");
    }
    for c in calls {
        let outcome = c.body["outcome"].as_str().unwrap_or("-");
        let snapshot = c.body["snapshot"].as_str().unwrap_or("-");
        println!(
            "  {:<7} → {}  signature {}  outcome {:<9} snapshot {snapshot}",
            c.phase,
            c.status,
            if c.signature_ok { "ok " } else { "BAD" },
            outcome,
        );
    }
}
