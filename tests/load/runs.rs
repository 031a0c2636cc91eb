//! Many concurrent runs: one alarm for each of many auto-approved groups at once, on a
//! simulator whose snapshots and modifications take as long as real small ones. Every run
//! must succeed within 1.5× of the floor (snapshot + modification), and the bot's memory is
//! watched from the kernel's side the whole time.

use std::collections::BTreeMap;
use std::time::Duration;

use redis_autoscaler::domain::ReplicationGroupId;
use redis_autoscaler::elasticache::sim::{SimConfig, SimGroup};
use tokio::time::Instant;

use crate::bot::{self, Bot};
use crate::report::{Report, percentile};
use crate::support::*;
use crate::wire;

struct Size {
    runs: usize,
    snapshot: Duration,
    modify: Duration,
    /// The runs' poll interval (snapshot and modification).
    poll: &'static str,
    enforce: bool,
}

/// Issue 10's figure: 1,000 runs at once, 5 s snapshots and 10 s modifications (not
/// compressed), with glibc's default arenas and then with `MALLOC_ARENA_MAX=2`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load: cargo test --release --test load -- --ignored --nocapture runs::"]
async fn a_thousand_concurrent_runs_succeed_near_the_floor_in_bounded_memory() {
    let size = || Size {
        runs: 1000,
        snapshot: Duration::from_secs(5),
        modify: Duration::from_secs(10),
        poll: "1s",
        enforce: true,
    };
    let mut report = Report::new(
        "thousand_runs: 1,000 concurrent runs, 5 s snapshot + 10 s modify",
        true,
    );
    runs(size(), &[], "", &mut report).await;
    runs(
        size(),
        &[("MALLOC_ARENA_MAX", "2")],
        "MALLOC_ARENA_MAX=2: ",
        &mut report,
    )
    .await;
    report.finish();
}

/// The same, small and compressed (0.5 s + 1 s) for CI; only correctness is enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_runs_all_succeed_once_each() {
    let mut report = Report::new(
        "runs (small): 40 concurrent runs, 0.5 s snapshot + 1 s modify",
        false,
    );
    runs(
        Size {
            runs: 40,
            snapshot: Duration::from_millis(500),
            modify: Duration::from_millis(1000),
            poll: "100ms",
            enforce: false,
        },
        &[],
        "",
        &mut report,
    )
    .await;
    report.finish();
}

async fn runs(size: Size, env: &[(&str, &str)], label: &str, report: &mut Report) {
    let groups = bot::group_names("run", size.runs);
    let sim =
        SimConfig {
            snapshot_duration: size.snapshot,
            modify_duration: size.modify,
            ..SimConfig::with_groups(groups.iter().map(|g| {
                SimGroup::new(ReplicationGroupId::parse(g).unwrap(), nt("cache.r6g.large"))
            }))
        };
    let services = Services::start(sim).await;
    let dir = TempDir::new();
    let defaults = format!(
        "approval_timeout = \"1h\"\nsnapshot_poll_interval = \"{p}\"\nsnapshot_max_polls = 600\nmodify_poll_interval = \"{p}\"\nmodify_timeout = \"10m\"\nverify_window = \"100ms\"\naws_retry_interval = \"200ms\"\naws_retry_attempts = 8\n",
        p = size.poll
    );
    let tables = bot::group_tables(&groups, "approval = \"auto\"");
    let bot = Bot::start(
        &services,
        &dir.0,
        |port, db| bot::config_text(port, db, "", &defaults, &tables, ""),
        env,
    )
    .await;
    // Let the start-up look at every group finish before measuring "idle".
    let checked = || services.sim.attempts("DescribeReplicationGroups") >= size.runs;
    crate::storm::wait_until(
        "the start-up check of every group",
        Duration::from_secs(60),
        checked,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = bot.memory();

    // Watch the resident size and the threads every 100 ms.
    let watcher = bot::Watcher::start(bot.pid());

    let started = Instant::now();
    let bodies = groups
        .iter()
        .map(|g| eventbridge_event(&format!("{g}-alarm"), g, "ALARM", 93.0))
        .collect();
    let far = started + Duration::from_secs(120);
    let delivered = wire::deliver_all(&bot.base(), bodies, 100.min(size.runs), far).await;
    let accepted = started.elapsed();
    assert!(
        delivered.iter().all(|d| d.status == 200),
        "every alarm was taken"
    );

    let floor = size.snapshot + size.modify;
    let limit = floor.mul_f64(1.5);
    let store = bot.store();
    let deadline = started + floor * 4 + Duration::from_secs(30);
    let all_finished = loop {
        let states = states(&bot);
        if states.get("active").copied().unwrap_or(0) == 0
            && states.values().sum::<usize>() == size.runs
        {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{label}runs still going after {:?}: {states:?}\n{}",
            deadline - started,
            bot.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let at_finish = bot.memory();
    crate::storm::quiet(&services, &bot).await;
    let drained = started.elapsed();
    let (most_resident, most_threads) = watcher.stop().await;
    let end = bot.memory();
    let breakdown = bot::where_memory_is(bot.pid());

    let runs = store.recent_runs(None, size.runs * 2).unwrap();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut durations: Vec<f64> = Vec::new();
    for r in &runs {
        *outcomes.entry(r.state_name()).or_insert(0) += 1;
        if let Some(done) = r.finished_at() {
            durations.push((done.as_millis() - r.created_at.as_millis()) as f64 / 1000.0);
        }
    }
    let succeeded = outcomes.get("succeeded").copied().unwrap_or(0);
    let slowest = percentile(&mut durations, 100.0);
    let calls = services.sim.calls();
    let mut acted: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.is_ok()) {
        if let ("CreateSnapshot" | "ModifyReplicationGroup", Some(g)) =
            (c.action.as_str(), bot::acted_on(c))
        {
            *acted.entry((c.action.as_str(), g)).or_insert(0) += 1;
        }
    }
    let per_group_once = groups.iter().all(|g| {
        acted.get(&("CreateSnapshot", g.as_str())) == Some(&1)
            && acted.get(&("ModifyReplicationGroup", g.as_str())) == Some(&1)
    });
    report.figure(
        &format!("{label}alarms accepted in"),
        format!("{:.2} s", accepted.as_secs_f64()),
    );
    report.target(
        &format!("{label}runs succeeded"),
        format!("{succeeded} of {} ({outcomes:?})", runs.len()),
        &format!("= {}", size.runs),
        succeeded == size.runs && runs.len() == size.runs,
    );
    report.target(
        &format!("{label}slowest run, alarm to success"),
        format!(
            "{slowest:.1} s (p50 {:.1} s)",
            percentile(&mut durations, 50.0)
        ),
        &format!(
            "≤ 1.5 × {:.1} s = {:.1} s",
            floor.as_secs_f64(),
            limit.as_secs_f64()
        ),
        slowest <= limit.as_secs_f64(),
    );
    report.figure(
        &format!("{label}first alarm to last run finished"),
        format!("{:.1} s", all_finished.as_secs_f64()),
    );
    report.figure(
        &format!("{label}… to every Slack message delivered"),
        format!("{:.1} s", drained.as_secs_f64()),
    );
    report.figure(
        &format!("{label}bot RSS idle with {} groups", size.runs),
        idle.describe(),
    );
    report.target(
        &format!("{label}bot peak RSS (VmHWM)"),
        format!("{:.1} MiB", end.peak_mib()),
        "≤ 100 MiB",
        !size.enforce || end.peak_mib() <= 100.0,
    );
    report.figure(
        &format!("{label}… the largest sample"),
        most_resident.describe(),
    );
    report.figure(
        &format!("{label}… the most threads"),
        most_threads.describe(),
    );
    report.figure(
        &format!("{label}bot RSS when the last run finished / after"),
        format!("{} / {}", at_finish.describe(), end.describe()),
    );
    report.figure(&format!("{label}… where it is at the end"), breakdown);
    report.figure(
        &format!("{label}AWS calls / Slack calls"),
        format!("{} / {}", calls.len(), services.slack.calls().len()),
    );
    assert!(
        per_group_once,
        "{label}every group had exactly one CreateSnapshot and one ModifyReplicationGroup"
    );
    assert_eq!(succeeded, size.runs, "{label}every run succeeded");
}

/// How many runs are `active` and how many ended in each state.
fn states(bot: &Bot) -> BTreeMap<String, usize> {
    let conn =
        rusqlite::Connection::open_with_flags(&bot.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn
        .prepare("SELECT CASE WHEN active = 1 THEN 'active' ELSE state END, COUNT(*) FROM runs GROUP BY 1")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}
