//! Two replicas on one PostgreSQL database: two real `serve` processes with the same config,
//! alarms and Approve clicks spread across both, one of them `kill -9`ed while a snapshot is
//! under way and again while a modification is, and started again each time; then an alarm
//! storm split across both.
//!
//! However the kills land, for each group: one run, exactly one successful CreateSnapshot and
//! one ModifyReplicationGroup, one top message, no page left open for a run that succeeded and
//! a page for one that did not, and every run ended. In the storm, one run per group.
//!
//! Each test creates its own database on the local server (`TEST_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable`) and drops it at its end,
//! failed or not. Without a server the small versions are skipped, unless
//! `REDIS_AUTOSCALER_REQUIRE_POSTGRES` is set (CI sets it); the full ones always need one.

use std::collections::BTreeMap;
use std::time::Duration;

use redis_autoscaler::domain::{ReplicationGroupId, RunId, Secret, Timestamp};
use redis_autoscaler::elasticache::sim::{SimCall, SimConfig, SimGroup};
use redis_autoscaler::store::postgres::{create_database, database_url, drop_database};
use redis_autoscaler::workflow::ports::Store;
use redis_autoscaler::workflow::run::Run;
use tokio::time::Instant;

use crate::bot::{self, Bot, Database};
use crate::report::Report;
use crate::support::*;
use crate::wire::{self, Delivered};

struct Size {
    /// Even groups approve by themselves; odd ones wait for a click.
    groups: usize,
    /// Kills while a snapshot is under way, and as many while a modification is.
    kills_per_phase: usize,
    /// Between one group's alarm and the next (so groups reach each phase at other times).
    stagger: Duration,
    snapshot: Duration,
    modify: Duration,
    /// `[postgres] lease`: how long a dead replica's claims hold its work.
    lease: &'static str,
    /// How long the runs may take to end after the last kill.
    settle: Duration,
    /// The full version needs PostgreSQL; the small one is skipped without it.
    required: bool,
    enforce: bool,
}

/// Eight groups, three kills while a snapshot is under way and three while a modification is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "replicas: cargo test --release --test load -- --ignored --nocapture replicas::"]
async fn two_replicas_killed_mid_snapshot_and_mid_modify_act_once_per_group() {
    kills(Size {
        groups: 8,
        kills_per_phase: 3,
        stagger: Duration::from_millis(1500),
        snapshot: Duration::from_secs(4),
        modify: Duration::from_secs(6),
        lease: "2s",
        settle: Duration::from_secs(180),
        required: true,
        enforce: true,
    })
    .await;
}

/// The same, small enough for every `cargo test` (and so CI): four groups, one kill in each
/// phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_snapshot_and_mid_modify_leaves_one_action_per_group() {
    kills(Size {
        groups: 4,
        kills_per_phase: 1,
        stagger: Duration::from_millis(300),
        snapshot: Duration::from_secs(2),
        modify: Duration::from_secs(2),
        lease: "1s",
        settle: Duration::from_secs(45),
        required: false,
        enforce: false,
    })
    .await;
}

/// 1,000 alarm deliveries at once, half to each replica, for 100 groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "replicas: cargo test --release --test load -- --ignored --nocapture replicas::"]
async fn a_thousand_concurrent_alarms_across_two_replicas_make_one_run_per_group() {
    storm(StormSize {
        groups: 100,
        per_group: 10,
        settle: Duration::from_secs(180),
        required: true,
        enforce: true,
    })
    .await;
}

/// The same for every `cargo test`: 120 at once for 12 groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_alarms_across_two_replicas_make_one_run_per_group() {
    storm(StormSize {
        groups: 12,
        per_group: 10,
        settle: Duration::from_secs(60),
        required: false,
        enforce: false,
    })
    .await;
}

/// The phase of a run a kill is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// CreateSnapshot accepted, no ModifyReplicationGroup yet, the run `snapshotting`.
    Snapshot,
    /// ModifyReplicationGroup accepted, the run still `modifying`.
    Modify,
}

impl Phase {
    /// The run's state throughout the phase.
    fn state(self) -> &'static str {
        match self {
            Phase::Snapshot => "snapshotting",
            Phase::Modify => "modifying",
        }
    }
}

async fn kills(size: Size) {
    let Some(db) = LoadDb::create("kills", size.required).await else {
        return;
    };
    let groups = bot::group_names("repl", size.groups);
    let sim =
        SimConfig {
            snapshot_duration: size.snapshot,
            modify_duration: size.modify,
            ..SimConfig::with_groups(groups.iter().map(|g| {
                SimGroup::new(ReplicationGroupId::parse(g).unwrap(), nt("cache.r6g.large"))
            }))
        };
    let services = Services::start(sim).await;
    let clicked = |i: usize| i % 2 == 1;
    let tables: String = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let keys = if clicked(i) {
                ""
            } else {
                "approval = \"auto\""
            };
            bot::group_tables(std::slice::from_ref(g), keys)
        })
        .collect();
    let postgres = format!("\n[postgres]\nlease = \"{}\"\npool_size = 4\n", size.lease);
    let mut bots = two_bots(&services, &db, "timeout = \"2s\"", &tables, &postgres).await;
    let bases: Vec<String> = bots.iter().map(Bot::base).collect();
    let store = bots[0].store_port().await;
    let sql = bot::pg_client(&db.url).await;
    let mut report = Report::new(
        format!(
            "replicas: 2 × serve on PostgreSQL, {} groups ({} approved by clicks), {} kills in each phase",
            size.groups,
            size.groups / 2,
            size.kills_per_phase
        ),
        size.enforce,
    );
    let started = Instant::now();

    // Each group's alarm twice (two event ids), one to each replica, redelivered until taken;
    // a clicked group's Approve goes to the replicas in turn.
    let far = Instant::now() + size.settle;
    let mut alarms = tokio::task::JoinSet::new();
    let mut clicks = tokio::task::JoinSet::new();
    for (i, g) in groups.iter().enumerate() {
        for (n, replica) in [i % 2, (i + 1) % 2].into_iter().enumerate() {
            let (base, body) = (
                bases[replica].clone(),
                eventbridge_event(&format!("{g}-alarm-{n}"), g, "ALARM", 93.0),
            );
            let delay = size.stagger * i as u32 + Duration::from_millis(20 * n as u64);
            alarms.spawn(async move {
                tokio::time::sleep(delay).await;
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                (replica, wire::deliver(&client, &base, &body, far).await)
            });
        }
        if clicked(i) {
            let (store, services, bases) = (store.clone(), services.clone(), bases.clone());
            let (group, first) = (ReplicationGroupId::parse(g).unwrap(), (i / 2) % 2);
            clicks.spawn(
                async move { approve(&*store, &services, &bases, &group, first, far).await },
            );
        }
    }

    // The kills: one phase, then the other, each time on a group no kill of that phase has
    // hit, aimed at the replica holding a claim on the run's work when one is seen.
    let mut plan: Vec<Phase> = Vec::new();
    for _ in 0..size.kills_per_phase {
        plan.extend([Phase::Snapshot, Phase::Modify]);
    }
    let mut kills: Vec<String> = Vec::new();
    let mut landed: BTreeMap<Phase, usize> = BTreeMap::new();
    let mut hit: Vec<(Phase, String)> = Vec::new();
    let mut exits = Vec::new();
    for phase in plan {
        let Some(group) = wait_for_phase(&services, &sql, &groups, phase, &hit).await else {
            kills.push(format!("{phase:?}: no group left in this phase"));
            continue;
        };
        hit.push((phase, group.clone()));
        let kinds: &[&str] = match phase {
            Phase::Snapshot => &["create_snapshot", "poll_snapshot"],
            Phase::Modify => &["modify_node_type", "poll_group"],
        };
        let held = claim_holder(&sql, &group, kinds, &bots).await;
        let (victim, holding) = held.unwrap_or_else(|| {
            let other = kills.len() % 2;
            (other, "no claim seen".to_string())
        });
        let state = run_state(&sql, &group).await;
        bots[victim].kill9();
        if state == phase.state() {
            *landed.entry(phase).or_insert(0) += 1;
        }
        kills.push(format!(
            "{phase:?} of {group} ({state}): killed replica {} ({holding}) at {:.1} s",
            name(victim),
            started.elapsed().as_secs_f64()
        ));
        bots[victim].spawn();
        exits.extend(bots[victim].wait_ready_supervised().await);
    }
    let killing = started.elapsed();
    // What was never taken is said with the stuck runs below.
    let mut untaken: Vec<String> = Vec::new();
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    let mut redelivered = 0;
    for (replica, d) in alarms.join_all().await {
        if d.status != 200 {
            untaken.push(format!(
                "an alarm sent to replica {} was never taken: {} {}",
                name(replica),
                d.status,
                d.answer
            ));
        }
        redelivered += d.retried;
        let outcome = d.answer["outcome"].as_str().unwrap_or("?");
        *taken
            .entry(format!("{} {outcome}", name(replica)))
            .or_insert(0) += 1;
    }
    let mut clicks_on = [0usize; 2];
    for click in clicks.join_all().await {
        match click {
            Ok(replica) => clicks_on[replica] += 1,
            Err(e) => untaken.push(e),
        }
    }

    // Everything ends, and everything said is delivered.
    let deadline = far.max(Instant::now()) + Duration::from_secs(5);
    let mut ended_at = None;
    loop {
        let runs = store.recent_runs(None, 1000).await.unwrap();
        for b in bots.iter_mut() {
            exits.extend(b.restart_if_exited());
        }
        let all_ended = runs.len() >= size.groups && runs.iter().all(Run::is_finished);
        if all_ended {
            ended_at.get_or_insert_with(|| started.elapsed());
            if bots[0].due_work_in_any_store().await == 0 {
                break;
            }
        }
        if Instant::now() > deadline {
            let mut stuck = Vec::new();
            for r in runs.iter().filter(|r| !r.is_finished()) {
                stuck.push(format!(
                    "{} {} {}:\n{}",
                    r.group,
                    r.id,
                    r.state_name(),
                    audit_lines(&*store, &r.id).await
                ));
            }
            let logs: Vec<String> = bots
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    format!(
                        "replica {}: {}",
                        name(i),
                        b.keep_log(&log_name(i)).display()
                    )
                })
                .collect();
            panic!(
                "runs never all ended ({} runs):\n{}\n{}\nkills:\n  {}\nlogs: {}",
                runs.len(),
                untaken.join("\n"),
                stuck.join("\n"),
                kills.join("\n  "),
                logs.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let logs: Vec<_> = (0..2).map(|i| bots[i].keep_log(&log_name(i))).collect();

    // What each group saw.
    let runs = store.recent_runs(None, 1000).await.unwrap();
    let calls = services.sim.calls();
    let tops = services.top_messages();
    let pages = services.pages();
    let mut violations = untaken;
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for g in &groups {
        let group_runs: Vec<&Run> = runs.iter().filter(|r| r.group.as_str() == g).collect();
        let acted = |action: &str| acted(&calls, action, g);
        let (snapshots, modifies) = (acted("CreateSnapshot"), acted("ModifyReplicationGroup"));
        let top_messages = tops
            .iter()
            .filter(|m| run_of(m).is_some_and(|id| group_runs.iter().any(|r| r.id.as_str() == id)))
            .count();
        if group_runs.len() != 1 {
            violations.push(format!("{g}: {} runs in the store", group_runs.len()));
        }
        if snapshots != 1 || modifies != 1 {
            violations.push(format!(
                "{g}: {snapshots} successful CreateSnapshot, {modifies} ModifyReplicationGroup"
            ));
        }
        if top_messages != 1 {
            violations.push(format!("{g}: {top_messages} top messages"));
        }
        for r in &group_runs {
            *outcomes.entry(r.state_name()).or_insert(0) += 1;
            let actions: Vec<&str> = pages
                .iter()
                .filter(|p| p["dedup_key"] == r.id.as_str())
                .filter_map(|p| p["event_action"].as_str())
                .collect();
            let open = actions.iter().rposition(|a| *a == "trigger")
                > actions.iter().rposition(|a| *a == "resolve");
            if !r.is_finished() {
                violations.push(format!("{g}: run {} still {}", r.id, r.state_name()));
            } else if r.state_name() != "succeeded" {
                violations.push(format!("{g}: run {} ended {}", r.id, r.state_name()));
                if !actions.contains(&"trigger") {
                    violations.push(format!("{g}: run {} ended unpaged", r.id));
                }
            } else if open {
                violations.push(format!("{g}: run {} succeeded, its page left open", r.id));
            }
        }
    }

    report.figure("kills (kill -9), each restarted at once", kills.len());
    for k in &kills {
        report.figure("… kill", k);
    }
    report.figure("exits by themselves (restarted)", exits.len());
    report.figure(
        "alarm deliveries taken, by replica and outcome",
        format!("{taken:?}"),
    );
    report.figure("… tries refused or unanswered, redelivered", redelivered);
    report.figure(
        "Approve clicks taken by replica A / B",
        format!("{} / {}", clicks_on[0], clicks_on[1]),
    );
    for (what, kind) in [
        ("CreateSnapshot", "create_snapshot"),
        ("ModifyReplicationGroup", "modify_node_type"),
        ("snapshot polls", "poll_snapshot"),
        ("Slack posts and edits", "top_message"),
        ("all effect results", ""),
    ] {
        let [a, b] = [0, 1].map(|i| effects_logged(&logs[i], kind));
        report.figure(
            &format!("{what} done by replica A / B (their logs)"),
            format!("{a} / {b}"),
        );
    }
    report.figure("run outcomes", format!("{outcomes:?}"));
    report.figure("pages", pages.len());
    report.figure(
        "the replicas' logs",
        format!("{}, {}", logs[0].display(), logs[1].display()),
    );
    report.figure(
        "first alarm to the last kill's restart",
        format!("{:.1} s", killing.as_secs_f64()),
    );
    report.figure(
        "first alarm to every run ended",
        ended_at.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
    );
    report.figure(
        "… to every message delivered",
        format!("{:.1} s", elapsed.as_secs_f64()),
    );
    let all_landed = landed.get(&Phase::Snapshot) == Some(&size.kills_per_phase)
        && landed.get(&Phase::Modify) == Some(&size.kills_per_phase);
    report.target(
        "kills landed mid-snapshot / mid-modify",
        format!(
            "{} / {}",
            landed.get(&Phase::Snapshot).unwrap_or(&0),
            landed.get(&Phase::Modify).unwrap_or(&0)
        ),
        &format!("= {0} / {0}", size.kills_per_phase),
        all_landed,
    );
    report.target(
        "violations (runs, CreateSnapshot, Modify, top message, page, end)",
        violations.len(),
        "= 0",
        violations.is_empty(),
    );
    for v in &violations {
        report.figure("… violation", v);
    }
    report.finish();
    assert!(
        violations.is_empty(),
        "{}\n  kills:\n  {}",
        violations.join("\n  "),
        kills.join("\n  ")
    );
    assert!(
        all_landed,
        "not every kill landed in its phase:\n  {}",
        kills.join("\n  ")
    );
    drop(bots);
    drop(db);
}

struct StormSize {
    groups: usize,
    /// Distinct alarm events per group, all in flight at once.
    per_group: usize,
    /// How long the deliveries, and then posting the runs' cards, may take.
    settle: Duration,
    required: bool,
    enforce: bool,
}

async fn storm(size: StormSize) {
    let Some(db) = LoadDb::create("storm", size.required).await else {
        return;
    };
    let groups = bot::group_names("rstorm", size.groups);
    let sim =
        SimConfig {
            snapshot_duration: Duration::from_millis(100),
            modify_duration: Duration::from_millis(100),
            ..SimConfig::with_groups(groups.iter().map(|g| {
                SimGroup::new(ReplicationGroupId::parse(g).unwrap(), nt("cache.r6g.large"))
            }))
        };
    let services = Services::start(sim).await;
    // The runs wait for an approval: each posts its card and nothing else.
    let tables = bot::group_tables(&groups, "");
    let postgres = "\n[postgres]\nlease = \"2s\"\n";
    let extra = format!("{postgres}\n[alarms]\nnotice_window = \"1h\"\n");
    let bots = two_bots(&services, &db, "", &tables, &extra).await;
    let store = bots[0].store_port().await;
    let total = size.groups * size.per_group;
    let mut report = Report::new(
        format!(
            "replicas: {total} concurrent alarm deliveries for {} groups, half to each of 2 replicas",
            size.groups
        ),
        size.enforce,
    );

    // Event e of every group, then e + 1, …; each group's events alternate between the two.
    let mut halves: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for e in 0..size.per_group {
        for (i, g) in groups.iter().enumerate() {
            let body = eventbridge_event(&format!("{g}-{e}"), g, "ALARM", 91.0 + (e % 9) as f64);
            halves[(i + e) % 2].push(body);
        }
    }
    let far = Instant::now() + size.settle;
    let started = Instant::now();
    // As many connections as deliveries: all of them in flight at once.
    let [a, b] = halves;
    let (na, nb, base_a, base_b) = (a.len(), b.len(), bots[0].base(), bots[1].base());
    let (sent_a, sent_b) = tokio::join!(
        wire::deliver_all(&base_a, a, na, far),
        wire::deliver_all(&base_b, b, nb, far),
    );
    let accepted = started.elapsed();
    let tally = |sent: &[Delivered]| {
        let mut t: BTreeMap<String, usize> = BTreeMap::new();
        for d in sent {
            let outcome = d.answer["outcome"].as_str().unwrap_or("?");
            *t.entry(format!("{} {outcome}", d.status)).or_insert(0) += 1;
        }
        t
    };
    let all_taken = sent_a.iter().chain(&sent_b).all(|d| d.status == 200);
    let started_runs = sent_a
        .iter()
        .chain(&sent_b)
        .filter(|d| d.answer["outcome"] == "started")
        .count();
    report.figure(
        "all answered in",
        format!("{:.2} s", accepted.as_secs_f64()),
    );
    report.figure(
        "deliveries/s",
        format!("{:.0}", total as f64 / accepted.as_secs_f64()),
    );
    report.figure(
        "replica A: final status and outcome",
        format!("{:?}", tally(&sent_a)),
    );
    report.figure(
        "replica B: final status and outcome",
        format!("{:?}", tally(&sent_b)),
    );
    report.figure(
        "tries refused (429/5xx/no answer) and retried",
        sent_a
            .iter()
            .chain(&sent_b)
            .map(|d| d.retried)
            .sum::<usize>(),
    );
    report.target("every delivery taken (200)", all_taken, "true", all_taken);
    report.target(
        "deliveries answered `started`",
        started_runs,
        &format!("= {}", size.groups),
        started_runs == size.groups,
    );

    // Every card posted, then what the store and Slack hold.
    let deadline = Instant::now() + size.settle;
    let mut last = (usize::MAX, Instant::now());
    loop {
        let posts = services.slack.count("chat.postMessage") + services.slack.count("chat.update");
        if posts != last.0 {
            last = (posts, Instant::now());
        }
        if bots[0].due_work_in_any_store().await == 0 && last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
        if Instant::now() > deadline {
            let logs: Vec<_> = (0..2)
                .map(|i| bots[i].keep_log(&format!("storm-{}", log_name(i))))
                .collect();
            panic!(
                "the replicas never went quiet ({} work due; logs {}, {}):\n{}\n{}",
                bots[0].due_work_in_any_store().await,
                logs[0].display(),
                logs[1].display(),
                bots[0].log_tail(),
                bots[1].log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quiet = started.elapsed();
    let runs = store.recent_runs(None, 100_000).await.unwrap();
    let tops = services.top_messages();
    let mut per_group: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &runs {
        *per_group.entry(r.group.as_str()).or_insert(0) += 1;
    }
    let one_run_each =
        groups.iter().all(|g| per_group.get(g.as_str()) == Some(&1)) && runs.len() == size.groups;
    let one_top_each = runs.iter().all(|r| {
        tops.iter()
            .filter(|m| run_of(m) == Some(r.id.as_str()))
            .count()
            == 1
    });
    let logs: Vec<_> = (0..2)
        .map(|i| bots[i].keep_log(&format!("storm-{}", log_name(i))))
        .collect();
    report.target(
        "runs in the store",
        runs.len(),
        &format!("= {}, one per group", size.groups),
        one_run_each,
    );
    report.target(
        "one top message per run",
        one_top_each,
        "true",
        one_top_each,
    );
    let [a, b] = [0, 1].map(|i| effects_logged(&logs[i], "post_top_message"));
    report.figure(
        "cards posted by replica A / B (their logs)",
        format!("{a} / {b}"),
    );
    report.figure(
        "first delivery to every card posted",
        format!("{:.1} s", quiet.as_secs_f64()),
    );
    report.figure(
        "the replicas' logs",
        format!("{}, {}", logs[0].display(), logs[1].display()),
    );
    report.finish();
    assert!(
        all_taken && started_runs == size.groups && one_run_each && one_top_each,
        "the storm's correctness checks failed (see the table above)"
    );
    drop(bots);
    drop(db);
}

/// Two bots with the same config on `db`, each with its own directory (config file, log).
async fn two_bots(
    services: &Services,
    db: &LoadDb,
    delivery: &str,
    tables: &str,
    extra: &str,
) -> Vec<Bot> {
    let mut bots = Vec::new();
    for i in 0..2 {
        let dir = db.dir.0.join(name(i));
        std::fs::create_dir_all(&dir).unwrap();
        let config = |port, url: &std::path::Path| {
            bot::config_text(port, url, delivery, bot::FAST_DEFAULTS, tables, extra)
        };
        let database = Database::Postgres(db.url.clone());
        bots.push(Bot::start_on(services, &dir, database, config, &[]).await);
    }
    bots
}

fn name(replica: usize) -> &'static str {
    ["A", "B"][replica]
}

fn log_name(replica: usize) -> String {
    format!("replicas-{}", name(replica).to_ascii_lowercase())
}

/// Wait (up to 60 s) until a group not in `hit` for this phase is in it; the group.
async fn wait_for_phase(
    services: &Services,
    sql: &tokio_postgres::Client,
    groups: &[String],
    phase: Phase,
    hit: &[(Phase, String)],
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let calls = services.sim.calls();
        for g in groups {
            if hit.contains(&(phase, g.clone())) {
                continue;
            }
            let (snapshots, modifies) = (
                acted(&calls, "CreateSnapshot", g),
                acted(&calls, "ModifyReplicationGroup", g),
            );
            let state = run_state(sql, g).await;
            let there = state == phase.state()
                && match phase {
                    Phase::Snapshot => snapshots > 0 && modifies == 0,
                    Phase::Modify => modifies > 0,
                };
            if there {
                return Some(g.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The replica holding a live claim on an effect of the group's active run, watched for up
/// to a second (a poll's claim lasts only while it runs): its index, and what it held. A
/// claim on one of `kinds` (the phase's AWS work) is waited for; another is the fallback.
async fn claim_holder(
    sql: &tokio_postgres::Client,
    group: &str,
    kinds: &[&str],
    bots: &[Bot],
) -> Option<(usize, String)> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut other = None;
    while Instant::now() < deadline {
        let now = Timestamp::now().as_millis();
        let rows = sql
            .query(
                "SELECT e.claimed_by, e.kind FROM effects e JOIN runs r ON r.id = e.run_id
                 WHERE r.group_id = $1 AND r.active AND e.status = 'pending'
                   AND e.claimed_by IS NOT NULL AND e.claimed_until >= $2",
                &[&group, &now],
            )
            .await
            .unwrap();
        for row in rows {
            let (owner, kind): (String, String) = (row.get(0), row.get(1));
            // An owner is `{host}/{pid}/{random}`.
            let pid = owner.split('/').nth(1).and_then(|p| p.parse::<u32>().ok());
            let Some(i) = bots.iter().position(|b| Some(b.pid()) == pid) else {
                continue;
            };
            let held = (i, format!("holding the claim on its {kind}"));
            if kinds.contains(&kind.as_str()) {
                return Some(held);
            }
            other.get_or_insert(held);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    other
}

/// The state of the group's active run, or "" without one.
async fn run_state(sql: &tokio_postgres::Client, group: &str) -> String {
    sql.query_opt(
        "SELECT state FROM runs WHERE group_id = $1 AND active",
        &[&group],
    )
    .await
    .unwrap()
    .map_or(String::new(), |row| row.get(0))
}

/// Successful calls of `action` on group `g`.
fn acted(calls: &[SimCall], action: &str, g: &str) -> usize {
    calls
        .iter()
        .filter(|c| c.action == action && c.is_ok() && bot::acted_on(c) == Some(g))
        .count()
}

/// The run a top-level message belongs to (its metadata).
fn run_of(m: &redis_autoscaler::standin::slack::FakeMessage) -> Option<&str> {
    m.metadata
        .as_ref()
        .and_then(|meta| meta["event_payload"]["run_id"].as_str())
}

/// Click Approve on the group's run once it waits for one, first on replica `first`, on the
/// other whenever one does not answer (it may be down); the replica that took the click, or
/// what never happened by `deadline`.
async fn approve(
    store: &dyn Store,
    services: &Services,
    bases: &[String],
    group: &ReplicationGroupId,
    first: usize,
    deadline: Instant,
) -> Result<usize, String> {
    let run = loop {
        let active = store.active_run(group).await.ok().flatten();
        if let Some(run) =
            active.filter(|r| r.state_name() == "awaiting_approval" && r.message.is_some())
        {
            break run;
        }
        if Instant::now() > deadline {
            return Err(format!("{group}'s run never asked for an approval"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut replica = first;
    loop {
        let body = click_body(services, ONCALL, "approve", button("approve", &run.id));
        if post_signed_to(&client, &bases[replica], "/slack/interactions", &body).await == Some(200)
        {
            return Ok(replica);
        }
        if Instant::now() > deadline {
            return Err(format!("{group}'s Approve was never taken"));
        }
        replica = 1 - replica;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POST a body signed the way Slack signs it; the status, if it answered.
async fn post_signed_to(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: &str,
) -> Option<u16> {
    let ts = Timestamp::now().as_secs().to_string();
    let sig = redis_autoscaler::slack::signature::sign(
        &Secret::new(SIGNING_SECRET),
        &ts,
        body.as_bytes(),
    );
    let resp = client
        .post(format!("{base}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Slack-Request-Timestamp", ts)
        .header("X-Slack-Signature", sig)
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// Effect results a replica applied, by its log: the transitions it logged in the span of an
/// effect whose name contains `kind` ("" for all). An effect whose replica was killed before
/// it logged counts for the one that took it over, or for none.
fn effects_logged(log: &std::path::Path, kind: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(" event="))
        .filter(|l| {
            l.split_once(" effect=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .is_some_and(|(name, _)| name.contains(kind))
        })
        .count()
}

async fn audit_lines(store: &dyn Store, id: &RunId) -> String {
    let audit = store.audit_trail(id).await.unwrap_or_default();
    let lines: Vec<String> = audit
        .iter()
        .map(|a| format!("    {} {} {}", a.actor, a.kind, a.detail))
        .collect();
    lines.join("\n")
}

/// A database this test created on the local server, dropped (with a scratch directory for
/// the bots' config files and logs) when the test ends, failed or not.
struct LoadDb {
    admin: String,
    name: String,
    url: String,
    dir: TempDir,
}

impl LoadDb {
    /// `None` (the test is skipped) when no server answers, unless `required` or
    /// `REDIS_AUTOSCALER_REQUIRE_POSTGRES` is set: then it fails.
    async fn create(what: &str, required: bool) -> Option<LoadDb> {
        let admin = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into()
        });
        let tail: String = RunId::generate().as_str()[2..]
            .to_ascii_lowercase()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let name = format!("ra_load_{what}_{tail}");
        if let Err(e) = create_database(&admin, &name).await {
            let required =
                required || std::env::var_os("REDIS_AUTOSCALER_REQUIRE_POSTGRES").is_some();
            assert!(!required, "PostgreSQL is required for this test: {e}");
            eprintln!("skipped: no PostgreSQL at TEST_DATABASE_URL: {e}");
            return None;
        }
        let url = database_url(&admin, &name).unwrap();
        Some(LoadDb {
            admin,
            name,
            url,
            dir: TempDir::new(),
        })
    }
}

impl Drop for LoadDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(drop_database(&admin, &name))
        });
        if let Ok(Err(e)) = dropped.join() {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}
