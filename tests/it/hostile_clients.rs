//! The HTTP server holds up against slow and hostile clients: a stalled request head or body
//! and an idle keep-alive connection are closed in time (`[http]` timeouts, in milliseconds
//! here), and `/healthz` and a signed command still answer within a second among hundreds of
//! stalled connections, also when they fill the connection cap. The same against the real
//! binary under a soft open-files limit of 1,024 with 1,100 stalled connections is an ignored
//! test (see README.md, "Load and chaos").

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::*;

/// The bot with `[http]` set to `keys`, after its start-up check.
async fn app(keys: &str) -> (Services, TempDir, TestApp) {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let config = format!("{}\n[http]\n{keys}\n", config_text("", ""));
    let t = TestApp::spawn(&services, &config, &dir.db()).await;
    startup_checked(&services).await;
    (services, dir, t)
}

/// Read until the server closes the connection (EOF or reset): what it sent, and when it
/// closed. Fails if it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Instant) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the connection was still open after {limit:?}, having sent {:?}",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0) | Err(_)) => {
                return (String::from_utf8_lossy(&out).into_owned(), Instant::now());
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Read one `/healthz` answer (`ok\n`) off a keep-alive connection.
async fn read_healthz_answer(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.ends_with(b"\r\n\r\nok\n") {
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Is the server still holding this connection open?
async fn still_open(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    tokio::time::timeout(Duration::from_millis(2), stream.read(&mut buf))
        .await
        .is_err()
}

/// `n` connections that each send half a request head and then nothing.
async fn stalled_connections(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /slack/commands HTTP/1.1\r\nHost: bot\r\nContent-Ty")
            .await
            .unwrap();
        out.push(s);
    }
    out
}

#[tokio::test]
async fn a_connection_that_stalls_in_its_request_head_is_closed_after_header_timeout() {
    let (_services, _dir, t) =
        app("header_timeout = \"300ms\"\nbody_timeout = \"30s\"\nidle_timeout = \"30s\"").await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    let connected = Instant::now();
    s.write_all(b"POST /slack/commands HTTP/1.1\r\nHost: bot\r\nContent-Ty")
        .await
        .unwrap();
    let (sent, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    let after = closed - connected;
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_millis(1500),
        "closed after {after:?}"
    );
    assert_eq!(sent, "", "a half request gets no answer");
    t.stop().await;
}

#[tokio::test]
async fn a_request_whose_body_stalls_gets_408_after_body_timeout() {
    let (_services, _dir, t) =
        app("header_timeout = \"30s\"\nbody_timeout = \"300ms\"\nidle_timeout = \"30s\"").await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(
        b"POST /slack/commands HTTP/1.1\r\nHost: bot\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=abc",
    )
    .await
    .unwrap();
    let headers_sent = Instant::now();
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    let after = closed - headers_sent;
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "answered {answer:?} after {after:?}"
    );
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_millis(1500),
        "answered and closed after {after:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout_not_header_timeout() {
    let (_services, _dir, t) =
        app("header_timeout = \"100ms\"\nbody_timeout = \"30s\"\nidle_timeout = \"500ms\"").await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: bot\r\n\r\n";
    s.write_all(healthz).await.unwrap();
    assert!(
        read_healthz_answer(&mut s)
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Idle for longer than the header timeout: still open, and it serves the next request.
    tokio::time::sleep(Duration::from_millis(250)).await;
    s.write_all(healthz).await.unwrap();
    assert!(
        read_healthz_answer(&mut s)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let answered = Instant::now();
    let (more, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    let after = closed - answered;
    assert_eq!(more, "");
    assert!(
        after >= Duration::from_millis(450) && after < Duration::from_millis(2000),
        "closed {after:?} after the last answer"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_second_request_head_that_stalls_after_an_idle_spell_is_closed_after_header_timeout() {
    let (_services, _dir, t) =
        app("header_timeout = \"200ms\"\nbody_timeout = \"30s\"\nidle_timeout = \"5s\"").await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bot\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_healthz_answer(&mut s)
            .await
            .starts_with("HTTP/1.1 200")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
    let started = Instant::now();
    let (more, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    let after = closed - started;
    assert_eq!(more, "");
    assert!(
        after >= Duration::from_millis(150) && after < Duration::from_millis(1500),
        "closed {after:?} after the head began, not at the idle timeout"
    );
    t.stop().await;
}

#[tokio::test]
async fn after_a_request_slower_than_header_timeout_the_idle_timeout_runs_from_its_answer() {
    let (_services, _dir, t) =
        app("header_timeout = \"100ms\"\nbody_timeout = \"5s\"\nidle_timeout = \"400ms\"").await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(
        b"POST /slack/commands HTTP/1.1\r\nHost: bot\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\ntoken",
    )
    .await
    .unwrap();
    // The head is in: a body slower than the header timeout is the body timeout's business.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"=abcd").await.unwrap();
    let body_sent = Instant::now();
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    let after = closed - body_sent;
    assert!(
        after >= Duration::from_millis(350) && after < Duration::from_millis(2000),
        "closed {after:?} after the answer"
    );
    t.stop().await;
}

/// Time `/healthz` and a signed `/redis help`, each on a new connection.
async fn healthz_and_a_signed_command(t: &TestApp, services: &Services) -> (Duration, Duration) {
    let started = Instant::now();
    let resp = reqwest::get(t.url("/healthz")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let healthz = started.elapsed();
    let started = Instant::now();
    let resp = post_signed(t, "/slack/commands", &slash_body(services, ONCALL, "help")).await;
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["response_type"], "ephemeral", "{answer}");
    (healthz, started.elapsed())
}

#[tokio::test]
async fn healthz_and_a_signed_command_answer_within_a_second_among_300_stalled_connections() {
    redis_autoscaler::http::raise_open_files_limit();
    // The stalled connections outlive the test: only the server's concurrency keeps it up.
    let (services, _dir, t) = app("header_timeout = \"20s\"").await;
    let mut stalled = stalled_connections(t.addr, 300).await;
    let (healthz, command) = healthz_and_a_signed_command(&t, &services).await;
    assert!(
        healthz < Duration::from_secs(1),
        "/healthz took {healthz:?}"
    );
    assert!(
        command < Duration::from_secs(1),
        "the command took {command:?}"
    );
    let mut open = 0;
    for s in &mut stalled {
        open += usize::from(still_open(s).await);
    }
    assert_eq!(open, 300, "every stalled connection was still open");
    drop(stalled);
    t.stop().await;
}

#[tokio::test]
async fn at_the_connection_cap_the_oldest_stalled_connections_make_room() {
    redis_autoscaler::http::raise_open_files_limit();
    let (services, _dir, t) = app("header_timeout = \"20s\"\nmax_connections = 100").await;
    let mut stalled = stalled_connections(t.addr, 300).await;
    let (healthz, command) = healthz_and_a_signed_command(&t, &services).await;
    assert!(
        healthz < Duration::from_secs(1),
        "/healthz took {healthz:?}"
    );
    assert!(
        command < Duration::from_secs(1),
        "the command took {command:?}"
    );
    let mut open = Vec::new();
    for s in &mut stalled {
        open.push(still_open(s).await);
    }
    let kept = open.iter().filter(|o| **o).count();
    assert!(kept <= 100, "{kept} stalled connections kept, over the cap");
    assert!(
        open[..150].iter().all(|o| !o),
        "the oldest stalled connections were the ones closed: {open:?}"
    );
    assert!(open[299], "the newest stalled connection is still open");
    drop(stalled);
    t.stop().await;
}

#[test]
fn the_example_config_shows_the_built_in_http_limits() {
    let example = include_str!("../../deploy/config.example.toml");
    let config =
        redis_autoscaler::config::Config::parse(example, &redis_autoscaler::config::Env::default())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.http,
        redis_autoscaler::config::HttpConfig::default(),
        "[http] in deploy/config.example.toml must be the built-in values"
    );
}

// ------------------------------------------------------------------ the real binary, by hand

/// The real binary, from a shell that first lowers its open-files limit (`ulimit_args`, e.g.
/// `-S -n 1024`), with the environment `serve` reads and nothing else.
fn serve_under_ulimit(
    binary: &str,
    ulimit_args: &str,
    config: &std::path::Path,
    services: &Services,
) -> std::process::Child {
    let script = format!("ulimit {ulimit_args} && exec \"$0\" serve --config \"$1\"");
    std::process::Command::new("sh")
        .args(["-c", &script, binary])
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("SLACK_BOT_TOKEN", TOKEN)
        .env("SLACK_SIGNING_SECRET", SIGNING_SECRET)
        .env(
            "PAGERDUTY_ROUTING_KEY",
            redis_autoscaler::standin::pagerduty::FakePagerDuty::EXAMPLE_ROUTING_KEY,
        )
        .env("ALARM_API_KEY", ALARM_KEY)
        .env("SLACK_API_URL", services.slack.base_url())
        .env("PAGERDUTY_EVENTS_URL", services.pd.url())
        .env("AWS_ENDPOINT_URL", services.sim.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDTESTONLY")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-access-key")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// `Max open files` soft and hard of a running process, from /proc.
fn open_files_of(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .unwrap_or_else(|| "?".into())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One pass: serve under `ulimit_args`, 1,100 stalled connections, then 20 `/healthz` and 20
/// signed commands, each on a new connection, all within a second.
async fn stalled_under_ulimit(ulimit_args: &str) {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A long header timeout: the stalled connections stay for the whole measurement.
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\n{}\n[http]\nheader_timeout = \"60s\"\n",
        dir.0.join("serve.db").display(),
        config_text("", "")
    );
    let path = dir.0.join("config.toml");
    std::fs::write(&path, config).unwrap();
    // The debug binary cargo built for the tests, or another (a release build) if named.
    let binary = std::env::var("REDIS_AUTOSCALER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_redis-autoscaler").to_string());
    let mut child = serve_under_ulimit(&binary, ulimit_args, &path, &services);
    let base = format!("http://127.0.0.1:{port}");
    let ready_by = Instant::now() + Duration::from_secs(20);
    while !matches!(reqwest::get(format!("{base}/readyz")).await, Ok(r) if r.status() == 200) {
        assert!(child.try_wait().unwrap().is_none(), "serve exited");
        assert!(Instant::now() < ready_by, "serve never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let limits = open_files_of(child.id());
    let rss_before = rss_kib(child.id());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let opened = Instant::now();
    let mut stalled = stalled_connections(addr, 1100).await;
    let opening = opened.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let (mut healthz, mut commands) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let started = Instant::now();
        let resp = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        healthz.push(started.elapsed());
        let body = slash_body(&services, ONCALL, "help");
        let ts = redis_autoscaler::domain::Timestamp::now()
            .as_secs()
            .to_string();
        let sig = redis_autoscaler::slack::signature::sign(
            &redis_autoscaler::domain::Secret::new(SIGNING_SECRET),
            &ts,
            body.as_bytes(),
        );
        let started = Instant::now();
        let resp = client
            .post(format!("{base}/slack/commands"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("X-Slack-Request-Timestamp", ts)
            .header("X-Slack-Signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        commands.push(started.elapsed());
    }
    let mut open = 0;
    for s in &mut stalled {
        open += usize::from(still_open(s).await);
    }
    let rss = rss_kib(child.id());
    healthz.sort();
    commands.sort();
    let stopping = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stopped = stopping.elapsed();
    drop(stalled);
    let log = String::from_utf8_lossy(&exit.stderr);
    let raised = log
        .lines()
        .find(|l| l.contains("open-files"))
        .unwrap_or("(no open-files line)");
    println!(
        "{binary}\nulimit {ulimit_args}: serve's open files (soft / hard) {limits}\n  log: {raised}\n  \
         1100 stalled connections opened in {opening:?}, {open} still open at the end\n  \
         /healthz p50 {:?} max {:?}; signed command p50 {:?} max {:?}\n  \
         RSS {rss_before} KiB before, {rss} KiB with them; SIGTERM to exit {stopped:?} ({})",
        percentile(&healthz, 0.5),
        healthz[healthz.len() - 1],
        percentile(&commands, 0.5),
        commands[commands.len() - 1],
        exit.status,
    );
    assert!(exit.status.success(), "{log}");
    assert!(
        healthz[healthz.len() - 1] < Duration::from_secs(1),
        "/healthz: {healthz:?}"
    );
    assert!(
        commands[commands.len() - 1] < Duration::from_secs(1),
        "signed command: {commands:?}"
    );
}

/// `cargo test --test it -- --ignored --nocapture stalled_connections_under`: the issue's
/// check, against the real binary, under a soft limit of 1,024 (which `serve` raises to the
/// hard limit), then with the hard limit at 1,024 too (where the connection cap, kept under
/// the limit, closes the oldest stalled connections instead).
#[tokio::test]
#[ignore = "a load check: run by hand (README.md, Load and chaos)"]
async fn stalled_connections_under_a_1024_open_files_limit() {
    redis_autoscaler::http::raise_open_files_limit();
    stalled_under_ulimit("-S -n 1024").await;
    stalled_under_ulimit("-n 1024").await;
}
