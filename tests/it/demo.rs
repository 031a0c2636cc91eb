//! `redis-autoscaler demo`: every scenario (but `verify`, which waits CloudWatch's minute and
//! is left to .ci/run) ends as it should, and its thread tells the story in the right order.
//!
//! The built binary runs each scenario in its own process, all at once, so this takes as long
//! as the slowest one. What is read is the channel as the demo prints it for a person: the
//! thread replies are the `↳ …` lines of the "#ops as a person reads it" section, each in its
//! final (edited) form.

use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The key lines of each scenario's thread, in the order they must appear (a scenario may have
/// more than one such chain). Short substrings (an emoji and a word or two), so rewording a
/// line keeps them true.
const STORIES: &[(&str, &[&str])] = &[
    (
        "happy",
        &[
            "👍 Approved",
            "📸 Creating snapshot",
            "is available",
            "⬆️ Upsizing from",
            "✅ Done",
        ],
    ),
    (
        "snapshot-timeout",
        &[
            "👍 Approved",
            "📸 Creating snapshot",
            "⌛ Timed out at snapshot",
            "Upsize without a snapshot",
            "chose to upsize without a snapshot",
            "⬆️ Upsizing from",
            "✅ Done",
            "📟 PagerDuty incident resolved",
        ],
    ),
    (
        // The failure's wording is still changing: only its markers and the page.
        "modify-fails",
        &[
            "👍 Approved",
            "📸 Creating snapshot",
            "is available",
            "⬆️ Upsizing from",
            "❌",
            "📟 Paged on-call",
        ],
    ),
    ("denied", &["🚫 Denied"]),
    (
        "escalate",
        &[
            "⏰ No decision",
            "📟 Paged on-call",
            "👍 Approved",
            "📸 Creating snapshot",
            "⬆️ Upsizing from",
            "✅ Done",
            "📟 PagerDuty incident resolved",
        ],
    ),
    (
        "pending-changes",
        &[
            "👍 Approved by @U0ONCALL1, with the pending changes",
            "📸 Creating snapshot",
            "⬆️ Upsizing from",
            "✅ Done",
        ],
    ),
    (
        "hooks",
        &[
            "👍 Approved",
            "⏸️ Pausing workers",
            "⏸️ Workers paused",
            "📸 Creating snapshot",
            "is available",
            "⬆️ Upsizing from",
            "❌",
            "▶️ Workers resumed",
        ],
    ),
    (
        // The same story with the command and the click over the WebSocket.
        "socket-mode",
        &[
            "👍 Approved",
            "📸 Creating snapshot",
            "is available",
            "⬆️ Upsizing from",
            "✅ Done",
        ],
    ),
    (
        "scale-down",
        &[
            "👍 Approved",
            "📸 Creating snapshot",
            "is available",
            "⬇️ Scaling down from",
            "✅ Done",
        ],
    ),
    // The page goes out at the failure while the resume hook is being called: either may be
    // said first, both after the failure.
    ("hooks", &["⬆️ Upsizing from", "❌", "📟 Paged on-call"]),
];

/// Lines that must not be in a scenario's thread at all.
const NEVER: &[(&str, &[&str])] = &[
    ("happy", &["❌", "📟"]),
    ("pending-changes", &["❌", "📟"]),
    ("socket-mode", &["❌", "📟"]),
    ("scale-down", &["❌", "📟", "⬆️ Upsizing"]),
    (
        "denied",
        &["📸 Creating snapshot", "⬆️ Upsizing", "✅ Done", "📟"],
    ),
    ("modify-fails", &["✅ Done", "PagerDuty incident resolved"]),
    ("hooks", &["✅ Done", "PagerDuty incident resolved"]),
];

struct Ran {
    scenario: &'static str,
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn run_demo(scenario: &'static str) -> Ran {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_redis-autoscaler"))
        .args(["demo", "--scenario", scenario])
        .output()
        .unwrap_or_else(|e| panic!("running demo --scenario {scenario}: {e}"));
    Ran {
        scenario,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// The thread replies of the channel as a person reads it, in order.
fn thread_lines(stdout: &str) -> Vec<&str> {
    let channel = stdout
        .split_once("════ #ops as a person reads it ════")
        .map(|(_, rest)| rest)
        .unwrap_or("");
    let channel = channel
        .split_once("════ PagerDuty ════")
        .map(|(c, _)| c)
        .unwrap_or(channel);
    channel
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("↳ "))
        .collect()
}

/// Each needle is in a reply after the one the previous needle was found in.
fn check_order(lines: &[&str], needles: &[&str]) -> Result<(), String> {
    let mut from = 0;
    for needle in needles {
        match lines[from..].iter().position(|l| l.contains(needle)) {
            Some(i) => from += i + 1,
            None => {
                return Err(format!(
                    "`{needle}` is not in a reply after reply {from} (the story: {needles:?})"
                ));
            }
        }
    }
    Ok(())
}

/// Every scenario of [`STORIES`] (listed together), run once and all at once (both tests read the same runs).
fn runs() -> &'static [Ran] {
    static RUNS: OnceLock<Vec<Ran>> = OnceLock::new();
    RUNS.get_or_init(|| {
        let started = Instant::now();
        let mut scenarios: Vec<&'static str> = STORIES.iter().map(|(s, _)| *s).collect();
        scenarios.dedup();
        let runs: Vec<Ran> = scenarios
            .into_iter()
            .map(|scenario| thread::spawn(move || run_demo(scenario)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("a demo thread panicked"))
            .collect();
        let slowest = runs.iter().map(|r| r.took).max().unwrap_or_default();
        eprintln!(
            "{} demo scenarios in {:.1}s (slowest {:.1}s)",
            runs.len(),
            started.elapsed().as_secs_f64(),
            slowest.as_secs_f64()
        );
        runs
    })
}

fn ran(scenario: &str) -> &'static Ran {
    runs()
        .iter()
        .find(|r| r.scenario == scenario)
        .unwrap_or_else(|| panic!("no run of {scenario}"))
}

#[test]
fn every_demo_scenario_ends_as_it_should_and_its_thread_tells_the_story_in_order() {
    let mut problems = Vec::new();
    for ran in runs() {
        let lines = thread_lines(&ran.stdout);
        let mut wrong = Vec::new();
        if !ran.status.success() {
            wrong.push(format!("exited {}", ran.status));
        }
        if lines.is_empty() {
            wrong.push("printed no thread".to_string());
        }
        for (_, story) in STORIES.iter().filter(|(s, _)| *s == ran.scenario) {
            if let Err(e) = check_order(&lines, story) {
                wrong.push(e);
            }
        }
        for (_, never) in NEVER.iter().filter(|(s, _)| *s == ran.scenario) {
            for n in *never {
                if let Some(l) = lines.iter().find(|l| l.contains(n)) {
                    wrong.push(format!("`{n}` should not be in the thread: {l}"));
                }
            }
        }
        if !wrong.is_empty() {
            problems.push(format!(
                "demo --scenario {} ({:.1}s):\n  {}\n--- thread:\n{}\n--- stdout:\n{}\n--- stderr:\n{}",
                ran.scenario,
                ran.took.as_secs_f64(),
                wrong.join("\n  "),
                lines.join("\n"),
                ran.stdout,
                ran.stderr
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn the_hooks_demo_prints_the_calls_the_workers_endpoint_received() {
    let ran = ran("hooks");
    assert!(ran.status.success(), "{}\n{}", ran.stdout, ran.stderr);
    let hooks = ran
        .stdout
        .split_once("════ worker hooks")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no hook calls printed:\n{}", ran.stdout));
    let calls: Vec<&str> = hooks
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(calls.len(), 2, "{hooks}");
    assert!(calls[0].trim_start().starts_with("pause"), "{hooks}");
    assert!(calls[1].trim_start().starts_with("resume"), "{hooks}");
    assert!(calls[1].contains("outcome failed"), "{hooks}");
    assert!(calls.iter().all(|c| c.contains("signature ok")), "{hooks}");
}

#[test]
fn the_demo_card_shows_what_the_upsize_costs() {
    let ran = ran("happy");
    assert!(ran.status.success(), "{}\n{}", ran.stdout, ran.stderr);
    // The simulator's Price List (us-east-1, Redis), for the demo group's two nodes.
    let cost = "💵 `cache.r6g.large` $0.206/h → `cache.r6g.xlarge` $0.411/h per node; \
                2 node(s): $301 → $600 a month (+$299), on demand in us-east-1";
    assert!(ran.stdout.contains(cost), "{}", ran.stdout);
    assert!(ran.stdout.contains("GetProducts"), "{}", ran.stdout);
}
