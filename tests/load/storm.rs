//! An alarm storm: thousands of deliveries (EventBridge events with the API key, each its own
//! event id) for many managed groups at once; then alarms for a group nobody manages and
//! alarms during a cooldown. Exactly one run per group; few Slack posts beyond the runs' own.

use std::collections::BTreeMap;
use std::time::Duration;

use redis_autoscaler::domain::{ReplicationGroupId, RunId};
use redis_autoscaler::elasticache::sim::{SimConfig, SimGroup};
use redis_autoscaler::standin::slack::FakeMessage;
use tokio::time::Instant;

use crate::bot::{self, Bot};
use crate::report::Report;
use crate::support::*;
use crate::wire::{self, Delivered};

struct Size {
    groups: usize,
    /// Distinct alarm events per group.
    per_group: usize,
    /// Deliveries in flight at once.
    connections: usize,
    unmanaged: usize,
    cooldown: usize,
    enforce: bool,
}

/// The storm of issue 10: 10,000 deliveries for 100 groups over 200 connections, 200 for an
/// unmanaged group and 20 during a cooldown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load: cargo test --release --test load -- --ignored --nocapture storm::"]
async fn ten_thousand_alarms_for_a_hundred_groups_make_a_hundred_runs_and_few_posts() {
    storm(Size {
        groups: 100,
        per_group: 100,
        connections: 200,
        unmanaged: 200,
        cooldown: 20,
        enforce: true,
    })
    .await;
}

/// The same, small enough for CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_storm_makes_one_run_per_group_and_one_notice_each() {
    storm(Size {
        groups: 8,
        per_group: 25,
        connections: 20,
        unmanaged: 30,
        cooldown: 10,
        enforce: false,
    })
    .await;
}

const UNMANAGED: &str = "someone-elses";
const COOL: &str = "cool-000";

async fn storm(size: Size) {
    let groups = bot::group_names("storm", size.groups);
    let sim =
        SimConfig {
            snapshot_duration: Duration::from_millis(100),
            modify_duration: Duration::from_millis(100),
            ..SimConfig::with_groups(groups.iter().chain([&COOL.to_string()]).map(|g| {
                SimGroup::new(ReplicationGroupId::parse(g).unwrap(), nt("cache.r6g.large"))
            }))
        };
    let services = Services::start(sim).await;
    let dir = TempDir::new();
    // Storm groups wait for an approval, so the runs post nothing of their own but their card
    // while the storm lasts; the cooldown group approves itself.
    let tables = bot::group_tables(&groups, "")
        + &bot::group_tables(
            &[COOL.to_string()],
            "approval = \"auto\"\ncooldown = \"1h\"",
        );
    let bot = Bot::start(
        &services,
        &dir.0,
        |port, db| {
            bot::config_text(
                port,
                db,
                "",
                bot::FAST_DEFAULTS,
                &tables,
                "\n[alarms]\nnotice_window = \"1h\"\n",
            )
        },
        &[],
    )
    .await;
    let mut report = Report::new(
        format!(
            "storm: {} deliveries for {} groups over {} connections",
            size.groups * size.per_group,
            size.groups,
            size.connections
        ),
        size.enforce,
    );
    let far = Instant::now() + Duration::from_secs(120);
    let client = reqwest::Client::new();

    // The cooldown group's own run, first: it succeeds, and its cooldown starts.
    let cool = wire::deliver(
        &client,
        &bot.base(),
        &eventbridge_event("cool-first", COOL, "ALARM", 93.0),
        far,
    )
    .await;
    assert_eq!(cool.status, 200, "{}", cool.answer);
    let cool_run = RunId::parse(cool.answer["run_id"].as_str().unwrap()).unwrap();
    let store = bot.store();
    wait_until(
        "the cooldown group's run to succeed",
        Duration::from_secs(30),
        || {
            store
                .run(&cool_run)
                .unwrap()
                .is_some_and(|r| r.state_name() == "succeeded")
        },
    )
    .await;
    quiet(&services, &bot).await;
    let posts_before = services.slack.count("chat.postMessage");

    // The storm: event e of every group, then e + 1, … — each delivery its own event id.
    let mut bodies = Vec::with_capacity(size.groups * size.per_group);
    for e in 0..size.per_group {
        for g in &groups {
            bodies.push(eventbridge_event(
                &format!("{g}-{e}"),
                g,
                "ALARM",
                91.0 + (e % 9) as f64,
            ));
        }
    }
    let watcher = bot::Watcher::start(bot.pid());
    let started = Instant::now();
    let delivered = wire::deliver_all(&bot.base(), bodies, size.connections, far).await;
    let accepted = started.elapsed();
    let (most_resident, most_threads) = watcher.stop().await;
    let statuses = tally(&delivered);
    let retried: usize = delivered.iter().map(|d| d.retried).sum();
    report.target(
        "all accepted in",
        format!("{:.2} s", accepted.as_secs_f64()),
        "≤ 5 s",
        accepted <= Duration::from_secs(5),
    );
    report.figure(
        "deliveries/s",
        format!("{:.0}", delivered.len() as f64 / accepted.as_secs_f64()),
    );
    report.figure("final statuses", format!("{statuses:?}"));
    report.figure("tries refused (429/5xx/no answer) and retried", retried);
    report.figure(
        "bot RSS, largest sample in the storm",
        most_resident.describe(),
    );
    report.figure("… the most threads", most_threads.describe());

    // Alarms that start nothing: a group nobody manages, and the cooling-down one.
    let mut bodies: Vec<String> = (0..size.unmanaged)
        .map(|i| eventbridge_event(&format!("stranger-{i}"), UNMANAGED, "ALARM", 95.0))
        .collect();
    bodies.extend(
        (0..size.cooldown).map(|i| eventbridge_event(&format!("cool-{i}"), COOL, "ALARM", 95.0)),
    );
    let started = Instant::now();
    let others = wire::deliver_all(&bot.base(), bodies, size.connections.min(50), far).await;
    report.figure(
        "unmanaged + cooldown alarms accepted in",
        format!(
            "{:.2} s ({:?})",
            started.elapsed().as_secs_f64(),
            tally(&others)
        ),
    );
    quiet(&services, &bot).await;

    // What people see.
    let runs = store.recent_runs(None, 100_000).unwrap();
    let mut runs_per_group: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for r in &runs {
        runs_per_group
            .entry(r.group.to_string())
            .or_default()
            .push(r.clone());
    }
    let storm_runs: usize = groups
        .iter()
        .map(|g| runs_per_group.get(g).map_or(0, Vec::len))
        .sum();
    report.target(
        "runs for the storm groups",
        storm_runs,
        &format!("= {}", size.groups),
        storm_runs == size.groups,
    );
    let tops = services.top_messages();
    let top_of = |ts: &redis_autoscaler::domain::MessageTs| tops.iter().find(|m| &m.ts == ts);
    let mut beyond: Vec<usize> = Vec::new();
    let mut one_top_each = true;
    let mut example = String::new();
    for g in &groups {
        let Some([run]) = runs_per_group.get(g).map(Vec::as_slice) else {
            one_top_each = false;
            continue;
        };
        let Some(top) = run.message.as_ref().and_then(|m| top_of(&m.ts)) else {
            one_top_each = false;
            continue;
        };
        let own_tops = tops.iter().filter(|m| mentions_run(m, &run.id)).count();
        one_top_each &= own_tops == 1;
        // Waiting for an approval, the run posts nothing but its card: every reply in its
        // thread and every other channel message about the group is the storm's.
        let notices = tops
            .iter()
            .filter(|m| m.ts != top.ts && m.text.contains(g.as_str()))
            .count();
        beyond.push(top.replies.len() + notices);
        if example.is_empty() {
            example = top
                .replies
                .iter()
                .map(|r| {
                    format!(
                        "{} (edited ×{})",
                        r.text.lines().next().unwrap_or(""),
                        r.edits.len()
                    )
                })
                .collect::<Vec<_>>()
                .join(" | ");
        }
    }
    report.target(
        "one top message per storm run",
        one_top_each,
        "true",
        one_top_each,
    );
    let max_beyond = beyond.iter().copied().max().unwrap_or(0);
    report.target(
        "Slack posts per group beyond the run's own (max)",
        max_beyond,
        "≤ 3",
        max_beyond <= 3,
    );
    report.figure(
        "… mean",
        format!(
            "{:.2}",
            beyond.iter().sum::<usize>() as f64 / beyond.len().max(1) as f64
        ),
    );
    report.figure(
        "… e.g. the first group's thread",
        if example.is_empty() {
            "(no replies)".into()
        } else {
            example
        },
    );
    let unmanaged = tops
        .iter()
        .filter(|m| m.text.contains(UNMANAGED))
        .collect::<Vec<_>>();
    report.target(
        &format!(
            "channel notices for {} unmanaged-group alarms",
            size.unmanaged
        ),
        unmanaged.len(),
        "= 1",
        unmanaged.len() == 1,
    );
    let cool_notices = tops
        .iter()
        .filter(|m| m.text.contains(COOL) && !mentions_run(m, &cool_run))
        .collect::<Vec<_>>();
    report.target(
        &format!("notices for {} alarms in a cooldown", size.cooldown),
        cool_notices.len(),
        "= 1",
        cool_notices.len() == 1,
    );
    for (what, m) in [
        ("unmanaged notice", unmanaged.first()),
        ("cooldown notice", cool_notices.first()),
    ] {
        if let Some(m) = m {
            report.figure(&format!("… {what} reads"), m.text.replace('\n', " "));
        }
    }
    report.figure(
        "Slack posts during the storm (all)",
        services.slack.count("chat.postMessage") - posts_before,
    );
    report.figure(
        "Slack edits (chat.update, all)",
        services.slack.count("chat.update"),
    );
    report.figure("bot RSS at the end", bot.memory().describe());
    report.figure("… where it is", bot::where_memory_is(bot.pid()));
    report.figure(
        "bot peak RSS (VmHWM)",
        format!("{:.1} MiB", bot.memory().peak_mib()),
    );
    let ok = storm_runs == size.groups
        && one_top_each
        && unmanaged.len() == 1
        && cool_notices.len() == 1
        && statuses.keys().all(|s| *s == 200);
    report.finish();
    assert!(
        ok,
        "the storm's correctness checks failed (see the table above)"
    );
}

/// Does this top-level message belong to the run (by the run id in its metadata)?
fn mentions_run(m: &FakeMessage, run: &RunId) -> bool {
    m.metadata
        .as_ref()
        .and_then(|meta| meta["event_payload"]["run_id"].as_str())
        .is_some_and(|id| id == run.as_str())
}

fn tally(delivered: &[Delivered]) -> BTreeMap<u16, usize> {
    let mut statuses = BTreeMap::new();
    for d in delivered {
        *statuses.entry(d.status).or_insert(0) += 1;
    }
    statuses
}

/// Wait until nothing is left to deliver and Slack has heard nothing new for 3 s (notice
/// edits are held back a moment to gather repeats).
pub async fn quiet(services: &Services, bot: &Bot) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (usize::MAX, Instant::now());
    loop {
        let calls = services.slack.count("chat.postMessage") + services.slack.count("chat.update");
        if calls != last.0 {
            last = (calls, Instant::now());
        }
        if bot.due_work() == 0 && last.1.elapsed() > Duration::from_secs(3) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the bot never went quiet:\n{}",
            bot.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until `f` holds, up to `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
