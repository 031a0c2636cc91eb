//! A signed slash command's ack, side by side with a bare axum route on the same machine in
//! the same run: throughput at 50 connections (closed loop), latency at a fixed 500 req/s
//! (open loop, measured from when each request is written; from when it was due is shown
//! beside it) with the servers in turn and then with both at once, CPU per request, and
//! resident memory idle and after the load. The p99 target is the one taken with both at
//! once: each server's requests half a period from the other's, so what else the shared
//! machine does lands on both within a millisecond.
//!
//! The bare route is this test binary run again as its own process
//! ([`bare_route_process`]): a multi-threaded tokio runtime like the bot's `main`, one axum
//! route that reads the body and answers 200. Both get the same request bytes, a `/redis help`
//! form signed as Slack signs it, made afresh for each request (the bot acts on a signed
//! request once), by the same lean client (`wire::Conn`).

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis_autoscaler::domain::ReplicationGroupId;
use redis_autoscaler::elasticache::sim::{SimConfig, SimGroup};
use tokio::time::Instant;

use crate::bot::{self, Bot, Memory};
use crate::report::{Report, percentile};
use crate::support::*;
use crate::wire::{self, Conn};

struct Size {
    warmup: Duration,
    /// Each throughput measurement, taken `rounds` times per server, alternating.
    throughput: Duration,
    rounds: usize,
    /// The time at the fixed rate per server, in `latency_rounds` turns, alternating.
    latency: Duration,
    latency_rounds: usize,
    enforce: bool,
}

const CONNECTIONS: usize = 50;
const RATE: u64 = 500;

/// Issue 10's benchmark: 12 × 1 s at 50 connections and 10 × 1.5 s at 500 req/s per server,
/// in turns, then 10 × 1.5 s at 500 req/s each with both at once (the enforced p99).
/// The rounds alternate between the two servers, so a change in what else the shared machine
/// is doing falls on both: short rounds (rather than one or two long ones) keep one slow
/// stretch from landing on one server only. The latency rounds are the shorter and more: the
/// p99s compared differ by tens of µs, and a busy stretch of the shared host moves them by as
/// much (the same binaries gave 1.08-1.12 in a quiet hour and 1.36 and 1.40 in a busy one, with
/// turns of 2.5 s; with these, 1.04-1.41; one build in one busy hour, 0.75 / 1.79 / 1.73 in
/// turns against 1.16 / 1.00 / 1.13 with both at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release --test load -- --ignored --nocapture bench::"]
async fn a_signed_commands_ack_costs_little_more_than_a_bare_route() {
    bench(Size {
        warmup: Duration::from_secs(1),
        throughput: Duration::from_secs(1),
        rounds: 12,
        latency: Duration::from_secs(15),
        latency_rounds: 10,
        enforce: true,
    })
    .await;
}

/// The same, a second or so of each, for CI: everything answers; no target is enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_and_every_request_is_answered() {
    bench(Size {
        warmup: Duration::ZERO,
        throughput: Duration::from_millis(300),
        rounds: 1,
        latency: Duration::from_millis(500),
        latency_rounds: 1,
        enforce: false,
    })
    .await;
}

/// Not a test: the bare route, when the benchmark starts this binary with
/// `LOAD_BARE_ROUTE_LISTEN` set; without it, it returns at once.
#[test]
#[ignore = "started by the benchmark as its own process"]
fn bare_route_process() {
    let Ok(listen) = std::env::var("LOAD_BARE_ROUTE_LISTEN") else {
        return;
    };
    let listen: SocketAddr = listen
        .parse()
        .expect("LOAD_BARE_ROUTE_LISTEN is an address");
    assert!(
        listen.ip().is_loopback(),
        "the bare route serves loopback only"
    );
    // Like `#[tokio::main]` in the bot: one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let app = axum::Router::new()
            .route(
                "/slack/commands",
                axum::routing::post(|body: axum::body::Bytes| async move {
                    drop(body);
                    axum::http::StatusCode::OK
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok\n" }));
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

/// The bare route's process, killed when dropped.
struct Bare {
    child: Child,
    addr: SocketAddr,
}

impl Bare {
    async fn start() -> Bare {
        let addr: SocketAddr = format!("127.0.0.1:{}", bot::free_port()).parse().unwrap();
        // `LOAD_BARE_WRAPPER` runs it under a tool, as `LOAD_BOT_WRAPPER` does the bot (to
        // compare the two under callgrind, say).
        let exe = std::env::current_exe().unwrap();
        let child = bot::wrapped("LOAD_BARE_WRAPPER", &exe)
            .args([
                "--exact",
                "bench::bare_route_process",
                "--ignored",
                "--test-threads",
                "1",
            ])
            .env("LOAD_BARE_ROUTE_LISTEN", addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the bare route never came up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Bare { child, addr }
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server under test.
#[derive(Clone, Copy)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    pid: u32,
}

async fn bench(size: Size) {
    let sim = SimConfig::with_groups([SimGroup::new(
        ReplicationGroupId::parse("bench-000").unwrap(),
        nt("cache.r6g.large"),
    )]);
    let services = Services::start(sim).await;
    let dir = TempDir::new();
    let tables = bot::group_tables(&["bench-000".to_string()], "");
    let bot = Bot::start(
        &services,
        &dir.0,
        |port, db| bot::config_text(port, db, "", bot::FAST_DEFAULTS, &tables, ""),
        &[],
    )
    .await;
    let bare = Bare::start().await;
    let targets = [
        Target {
            name: "bare",
            addr: bare.addr,
            pid: bare.child.id(),
        },
        Target {
            name: "bot",
            addr: format!("127.0.0.1:{}", bot.port).parse().unwrap(),
            pid: bot.pid(),
        },
    ];
    let mut report = Report::new(
        format!(
            "bench: signed /redis help ack vs a bare axum route ({} build)",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        ),
        size.enforce,
    );
    // Idle: started, ready, a moment to settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = targets.map(|t| Memory::of(t.pid));
    let stolen_from = host_ticks();
    let services = Arc::new(services);
    for t in targets {
        if !size.warmup.is_zero() {
            closed_loop(&services, t, CONNECTIONS, size.warmup).await;
        }
    }

    // Throughput, in short rounds: each round measures both servers one after the other
    // (which goes first alternates), and the target is the median of the rounds' own ratios.
    // A stretch of the host's CPU stolen by other guests lands on one server's measurement of
    // a round, not on the other's: a mean over rounds carries it into the ratio, the median
    // of the ratios leaves it out (the host's steal in each round is shown beside it).
    let mut rates = [Vec::new(), Vec::new()];
    let mut round_ratios = Vec::new();
    let mut round_text = Vec::new();
    let mut cpu_per_request = [0.0f64; 2];
    let mut kernel_per_request = [0.0f64; 2];
    let mut switches_at_load = [0u64; 2];
    let mut waited_at_load = [0.0f64; 2];
    let mut served = [0usize; 2];
    let mut bad = 0;
    for r in 0..size.rounds {
        let host = host_ticks();
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let t = targets[i];
            let (ticks, switched, waited) = (
                cpu_ticks(t.pid),
                context_switches(t.pid),
                run_queue_wait(t.pid),
            );
            let (ok, other) = closed_loop(&services, t, CONNECTIONS, size.throughput).await;
            let now = cpu_ticks(t.pid);
            let per_request = |ticks: f64| ticks / 100.0 / ok.max(1) as f64 / size.rounds as f64;
            cpu_per_request[i] += per_request(now.0 + now.1 - ticks.0 - ticks.1);
            kernel_per_request[i] += per_request(now.1 - ticks.1);
            switches_at_load[i] += context_switches(t.pid).saturating_sub(switched);
            waited_at_load[i] += run_queue_wait(t.pid) - waited;
            served[i] += ok;
            rates[i].push(ok as f64 / size.throughput.as_secs_f64());
            bad += other;
        }
        let ratio = rates[1][r] / rates[0][r].max(1.0);
        let steal = host_ticks().stolen_since(host) * 100.0;
        round_ratios.push(ratio);
        round_text.push(format!("{ratio:.2} ({steal:.0} %)"));
    }
    let after_throughput = targets.map(|t| Memory::of(t.pid));
    // Latency at a fixed rate, the servers in turn, in short rounds.
    let mut sent = [Vec::new(), Vec::new()];
    let mut due = [Vec::new(), Vec::new()];
    // Each request's latency, to look at where the tail falls: `LOAD_BENCH_SAMPLES=<file>`
    // writes `server round sent_at_ms latency_ms` lines (sent_at from the round's start,
    // latency from when it was written).
    let samples_file = std::env::var("LOAD_BENCH_SAMPLES").ok();
    let mut raw = String::new();
    // What each request cost the server at this rate: CPU (and of it in the kernel), and the
    // times its threads slept and were woken (or were switched out).
    let mut cpu_at_rate = [0.0f64; 2];
    let mut kernel_at_rate = [0.0f64; 2];
    let mut switches = [0u64; 2];
    let round = size.latency / size.latency_rounds as u32;
    for r in 0..size.latency_rounds {
        for (i, t) in targets.iter().enumerate() {
            let (ticks, switched) = (cpu_ticks(t.pid), context_switches(t.pid));
            let (samples, other) = open_loop(&services, *t, RATE, round, Instant::now()).await;
            let now = cpu_ticks(t.pid);
            cpu_at_rate[i] += (now.0 + now.1 - ticks.0 - ticks.1) / 100.0;
            kernel_at_rate[i] += (now.1 - ticks.1) / 100.0;
            switches[i] += context_switches(t.pid).saturating_sub(switched);
            bad += other;
            for s in samples {
                if samples_file.is_some() {
                    raw.push_str(&format!("{} {r} {:.3} {:.3}\n", t.name, s.at, s.from_sent));
                }
                sent[i].push(s.from_sent);
                due[i].push(s.from_due);
            }
        }
    }
    // The same rate at both servers at once, each request to one half a period from the
    // last to the other (which goes first alternates round by round): a busy moment of the
    // shared host falls on both within a millisecond, where turns of a second or so can put
    // it on one alone.
    let mut paired = [Vec::new(), Vec::new()];
    let half = Duration::from_micros(500_000 / RATE);
    for r in 0..size.latency_rounds {
        let start = Instant::now() + Duration::from_millis(100);
        let (bare_at, bot_at) = if r % 2 == 0 {
            (start, start + half)
        } else {
            (start + half, start)
        };
        let ((bare_samples, bare_other), (bot_samples, bot_other)) = tokio::join!(
            open_loop(&services, targets[0], RATE, round, bare_at),
            open_loop(&services, targets[1], RATE, round, bot_at),
        );
        bad += bare_other + bot_other;
        for (i, samples) in [bare_samples, bot_samples].into_iter().enumerate() {
            for s in samples {
                if samples_file.is_some() {
                    let name = targets[i].name;
                    raw.push_str(&format!(
                        "{name}-paired {r} {:.3} {:.3}\n",
                        s.at, s.from_sent
                    ));
                }
                paired[i].push(s.from_sent);
            }
        }
    }
    if let Some(file) = samples_file {
        std::fs::write(&file, raw).expect("LOAD_BENCH_SAMPLES is a writable file");
    }
    let mut p99 = [0.0; 2];
    let mut paired_p99 = [0.0; 2];
    let mut latency_text = [String::new(), String::new()];
    let mut paired_text = [String::new(), String::new()];
    for i in 0..2 {
        paired_p99[i] = percentile(&mut paired[i], 99.0);
        paired_text[i] = format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
            percentile(&mut paired[i], 50.0),
            paired_p99[i],
            percentile(&mut paired[i], 100.0),
            paired[i].len(),
        );
        p99[i] = percentile(&mut sent[i], 99.0);
        latency_text[i] = format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests); from when due: p50 {:.2}, p99 {:.2} ms",
            percentile(&mut sent[i], 50.0),
            p99[i],
            percentile(&mut sent[i], 100.0),
            sent[i].len(),
            percentile(&mut due[i], 50.0),
            percentile(&mut due[i], 99.0),
        );
    }
    let after = targets.map(|t| Memory::of(t.pid));
    let stolen = host_ticks().stolen_since(stolen_from);

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (bare_rate, bot_rate) = (mean(&rates[0]), mean(&rates[1]));
    for (i, t) in targets.iter().enumerate() {
        let rounds: Vec<String> = rates[i].iter().map(|r| format!("{r:.0}")).collect();
        report.figure(
            &format!("{} req/s at {CONNECTIONS} connections", t.name),
            format!("{:.0} (rounds: {})", mean(&rates[i]), rounds.join(", ")),
        );
    }
    report.figure(
        "bot / bare throughput, each round (host steal)",
        round_text.join(", "),
    );
    report.figure(
        "bot / bare throughput, of the mean rates",
        format!("{:.2}", bot_rate / bare_rate),
    );
    let throughput_ratio = median(&mut round_ratios);
    report.target(
        "bot / bare throughput, median of the rounds",
        format!("{throughput_ratio:.2}"),
        "≥ 0.70",
        throughput_ratio >= 0.7,
    );
    for (i, t) in targets.iter().enumerate() {
        report.figure(&format!("{} at {RATE} req/s", t.name), &latency_text[i]);
    }
    report.figure(
        "bot / bare p99 at 500 req/s, in turns",
        format!("{:.2}", p99[1] / p99[0]),
    );
    for (i, t) in targets.iter().enumerate() {
        report.figure(
            &format!("{} at {RATE} req/s, both at once", t.name),
            &paired_text[i],
        );
    }
    report.target(
        "bot / bare p99 at 500 req/s, both at once",
        format!("{:.2}", paired_p99[1] / paired_p99[0]),
        "≤ 1.30",
        paired_p99[1] / paired_p99[0] <= 1.3,
    );
    for (i, t) in targets.iter().enumerate() {
        report.figure(
            &format!("{} CPU per request (server side)", t.name),
            format!(
                "{:.1} µs ({:.1} in the kernel), {:.3} context switches, {:.1} µs runnable but waiting for a CPU",
                cpu_per_request[i] * 1e6,
                kernel_per_request[i] * 1e6,
                switches_at_load[i] as f64 / served[i].max(1) as f64,
                waited_at_load[i] / served[i].max(1) as f64 * 1e6
            ),
        );
    }
    // What the ack costs beyond the bare route, as the server's own CPU counts it: steadier
    // than the throughputs on a shared host, whose scheduling moves the bare route's alone by
    // half (49-106k req/s in one hour).
    report.figure(
        "bot / bare CPU per request at 50 connections",
        format!("{:.2}", cpu_per_request[1] / cpu_per_request[0]),
    );
    for (i, t) in targets.iter().enumerate() {
        let n = sent[i].len().max(1) as f64;
        report.figure(
            &format!("{} per request at {RATE} req/s", t.name),
            format!(
                "{:.1} µs CPU ({:.1} in the kernel), {:.2} context switches",
                cpu_at_rate[i] / n * 1e6,
                kernel_at_rate[i] / n * 1e6,
                switches[i] as f64 / n
            ),
        );
    }
    report.figure("bare RSS idle", idle[0].describe());
    report.figure(
        "bare RSS after 50 connections",
        after_throughput[0].describe(),
    );
    report.target(
        "bot RSS idle",
        idle[1].describe(),
        "≤ 15 MiB",
        idle[1].rss_mib() <= 15.0,
    );
    report.target(
        "bot RSS after 50 connections",
        after_throughput[1].describe(),
        "≤ 20 MiB",
        after_throughput[1].rss_mib() <= 20.0,
    );
    report.figure("bot RSS at the end", after[1].describe());
    report.figure("answers other than 200, or failed", bad);
    // A VM's CPU taken by its host's other guests: where this is more than a few per cent,
    // every timing above is that much noisier (a busy hour gave 17-30 %, p99s of 4-10 ms).
    report.figure(
        "host CPU stolen during the run",
        format!("{:.1} %", stolen * 100.0),
    );
    report.finish();
    assert_eq!(bad, 0, "every request was answered 200");
    assert!(bare_rate > 0.0 && bot_rate > 0.0);
}

/// `connections` connections, each sending the next request as soon as the last is
/// answered, for `period`: the 200s, and everything else (other statuses, failures).
async fn closed_loop(
    services: &Arc<Services>,
    target: Target,
    connections: usize,
    period: Duration,
) -> (usize, usize) {
    let stop = Instant::now() + period;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let services = services.clone();
        tasks.spawn(async move {
            let (mut ok, mut other) = (0, 0);
            let mut conn = Conn::connect(target.addr).await.unwrap();
            while Instant::now() < stop {
                let request = wire::signed_command(&services);
                match conn.exchange(&request).await {
                    Ok(200) => ok += 1,
                    Ok(_) => other += 1,
                    Err(_) => {
                        other += 1;
                        conn = Conn::connect(target.addr).await.unwrap();
                    }
                }
            }
            (ok, other)
        });
    }
    tasks
        .join_all()
        .await
        .into_iter()
        .fold((0, 0), |(a, b), (ok, other)| (a + ok, b + other))
}

/// One request's latency in ms at the fixed rate.
struct Latency {
    /// From just before it was written (a connection taken from the pool, or made when none
    /// was idle, counts): the server's time and the client's reading of the answer. Nothing
    /// the server does holds a request back (each has its own task and, if need be, its own
    /// new connection), so this leaves out no waiting the server caused.
    from_sent: f64,
    /// From when it was due: the above, plus how late the generator's timer woke (tokio's
    /// timer has a 1 ms grain, which was most of the p50 for both servers) and the signing.
    from_due: f64,
    /// When it was sent, in ms from the round's start.
    at: f64,
}

/// `rate` requests a second for `period`, the first due at `start` (or as soon as 16
/// connections are open), each sent when due on an idle connection (a new one if none is
/// idle): each one's latency, and the count of answers other than 200.
async fn open_loop(
    services: &Arc<Services>,
    target: Target,
    rate: u64,
    period: Duration,
    start: Instant,
) -> (Vec<Latency>, usize) {
    let idle: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..16 {
        let conn = Conn::connect(target.addr).await.unwrap();
        idle.lock().unwrap().push(conn);
    }
    let start = start.max(Instant::now());
    let mut ticks = tokio::time::interval_at(start, Duration::from_micros(1_000_000 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = rate as f64 * period.as_secs_f64();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..total as usize {
        let due = ticks.tick().await;
        let (services, idle) = (services.clone(), idle.clone());
        tasks.spawn(async move {
            let request = wire::signed_command(&services);
            let sent = Instant::now();
            let pooled = idle.lock().unwrap().pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => Conn::connect(target.addr).await.unwrap(),
            };
            let status = conn.exchange(&request).await;
            let latency = Latency {
                from_sent: sent.elapsed().as_secs_f64() * 1000.0,
                from_due: due.elapsed().as_secs_f64() * 1000.0,
                at: (sent - start).as_secs_f64() * 1000.0,
            };
            if status.is_ok() {
                idle.lock().unwrap().push(conn);
            }
            (latency, matches!(status, Ok(200)))
        });
    }
    let results = tasks.join_all().await;
    let other = results.iter().filter(|(_, ok)| !ok).count();
    (results.into_iter().map(|(l, _)| l).collect(), other)
}

/// The time the process's threads alive now have spent runnable but waiting for a CPU, in
/// seconds (`/proc/<pid>/task/*/schedstat`, its second field, in ns).
fn run_queue_wait(pid: u32) -> f64 {
    per_thread(pid, "schedstat", |s| {
        s.split_whitespace().nth(1)?.parse::<f64>().ok()
    }) / 1e9
}

/// The median (of an even count, the mean of the middle two).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The context switches of the process's threads so far (voluntary: a thread slept and was
/// woken; involuntary: it was switched out), summed over `/proc/<pid>/task/*/status`: the
/// threads alive now (one that ended took its count with it, so a round's figure can only be
/// too low, never too high).
fn context_switches(pid: u32) -> u64 {
    per_thread(pid, "status", |status| {
        let counts = status.lines().filter(|l| l.contains("ctxt_switches:"));
        Some(
            counts
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum(),
        )
    })
}

/// `read` of each of the process's threads' `/proc/<pid>/task/<tid>/<file>`, summed over the
/// threads alive now (0 if there are none to read).
fn per_thread<T: std::iter::Sum<T>>(pid: u32, file: &str, read: impl Fn(&str) -> Option<T>) -> T {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join(file)).ok())
        .filter_map(|text| read(&text))
        .sum()
}

/// The machine's CPU time so far (`/proc/stat`'s first line): all of it, and of it the
/// time the hypervisor gave to other guests (steal).
#[derive(Clone, Copy)]
struct HostTicks {
    total: u64,
    steal: u64,
}

fn host_ticks() -> HostTicks {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    HostTicks {
        // user nice system idle iowait irq softirq steal (guest time is in user already).
        total: fields.iter().take(8).sum(),
        steal: fields.get(7).copied().unwrap_or(0),
    }
}

impl HostTicks {
    /// The share of the CPU time since `before` that was stolen (0 where nothing is known).
    fn stolen_since(self, before: HostTicks) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        self.steal.saturating_sub(before.steal) as f64 / total as f64
    }
}

/// User and system CPU time the process has used, in clock ticks of 1/100 s (`/proc/<pid>/stat`;
/// a round at 500 req/s is 1,250 requests, so a tick is 8 µs per request there).
fn cpu_ticks(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may hold spaces: utime and stime are the 12th and
    // 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11), tick(12))
}
