//! Running it in production: metrics, readiness, logs without secrets, graceful shutdown and
//! restart of the real binary, and `check-config`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use redis_autoscaler::domain::RunId;
use redis_autoscaler::standin::pagerduty::FakePagerDuty;
use redis_autoscaler::workflow::ports::Store;
use redis_autoscaler::workflow::run::Run;
use serde_json::Value;

use crate::support::*;

async fn deliver(base: &str, id: &str) -> Value {
    let body = eventbridge_event(id, GROUP, "ALARM", 93.2);
    let (status, answer) = post_eventbridge(base, &body, Some(ALARM_KEY)).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[tokio::test]
async fn metrics_show_the_runs_steps_calls_and_requests_after_a_run() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn(
        &services,
        &config_text("", "approval = \"auto\""),
        &dir.db(),
    )
    .await;
    let answer = deliver(&t.url(""), "metrics-1").await;
    let run = RunId::parse(answer["run_id"].as_str().unwrap()).unwrap();
    assert_eq!(t.wait_done(&run).await.state_name(), "succeeded");
    let resp = reqwest::get(t.url("/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    for needle in [
        "redis_autoscaler_runs_started_total{trigger=\"alarm\"}",
        "redis_autoscaler_runs_finished_total{outcome=\"succeeded\"}",
        "redis_autoscaler_step_duration_seconds_bucket{step=\"snapshot\",status=\"done\"",
        "redis_autoscaler_step_duration_seconds_count{step=\"upsize\",status=\"done\"}",
        "redis_autoscaler_aws_calls_total{operation=\"CreateSnapshot\",outcome=\"ok\"}",
        "redis_autoscaler_aws_calls_total{operation=\"ModifyReplicationGroup\",outcome=\"ok\"}",
        "redis_autoscaler_slack_deliveries_total{method=\"chat.postMessage\",outcome=\"ok\"}",
        "redis_autoscaler_alarms_total{outcome=\"started\"}",
        "redis_autoscaler_http_requests_total{route=\"/alarms/eventbridge\",status=\"200\"}",
        "redis_autoscaler_http_request_duration_seconds_bucket{route=\"/alarms/eventbridge\"",
        "redis_autoscaler_pending_effects",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let started: f64 = text
        .lines()
        .find(|l| l.starts_with("redis_autoscaler_runs_started_total{trigger=\"alarm\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(started >= 1.0);
    t.stop().await;
}

/// About the SQLite file (another process holding its write lock), so on SQLite whichever
/// store the suite runs against.
#[tokio::test]
async fn readyz_is_not_ready_while_the_store_cannot_be_written() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let t = TestApp::spawn_on_sqlite(&services, &config_text("", ""), &dir.db()).await;
    let ready = || async {
        reqwest::get(t.url("/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while ready().await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(reqwest::get(t.url("/healthz")).await.unwrap().status(), 200);
    // Another process holds the write lock: not ready, though still healthy.
    let other = rusqlite::Connection::open(dir.db()).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let resp = reqwest::get(t.url("/readyz")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("store can't be written")
    );
    assert_eq!(reqwest::get(t.url("/healthz")).await.unwrap().status(), 200);
    other.execute_batch("ROLLBACK;").unwrap();
    assert_eq!(ready().await, 200);
    t.stop().await;
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let services = Services::start(sim_config()).await;
    // Make deliveries fail too, so error paths log.
    services.slack.fail_next(
        "chat.update",
        1,
        redis_autoscaler::standin::slack::Fault::Error("invalid_auth"),
    );
    services.pd.fail_next(1, 500);
    services.sim.fail_snapshots_of(&group());
    let dir = TempDir::new();
    let hooks = format!(
        "approval = \"auto\"\nwithout_snapshot_window = \"0s\"\npause_url = \"{}\"\nresume_url = \"{}\"",
        services.hooks.url("pause"),
        services.hooks.url("resume")
    );
    let t = TestApp::spawn(&services, &config_text("", &hooks), &dir.db()).await;
    let answer = deliver(&t.url(""), "logs-1").await;
    let run = RunId::parse(answer["run_id"].as_str().unwrap()).unwrap();
    t.wait_done(&run).await;
    // Refused requests log why.
    let client = reqwest::Client::new();
    client
        .post(t.url("/alarms/eventbridge"))
        .header("X-Api-Key", format!("{ALARM_KEY}-wrong"))
        .body("{}")
        .send()
        .await
        .unwrap();
    client
        .post(t.url("/slack/commands"))
        .header("X-Slack-Request-Timestamp", "1")
        .header("X-Slack-Signature", "v0=00")
        .body("text=help")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    t.stop().await;
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    assert!(
        logs.contains(run.as_str()),
        "the run was logged (with its id)"
    );
    assert!(logs.contains("refused"), "refusals were logged");
    for secret in [
        TOKEN,
        SIGNING_SECRET,
        FakePagerDuty::EXAMPLE_ROUTING_KEY,
        ALARM_KEY,
        HOOK_SECRET,
    ] {
        assert!(!logs.contains(secret), "a secret reached the log: {secret}");
    }
    // The app's own Debug output never shows them either.
    let debug = format!("{:?}", t_config_debug(&services));
    for secret in [
        TOKEN,
        SIGNING_SECRET,
        FakePagerDuty::EXAMPLE_ROUTING_KEY,
        ALARM_KEY,
        HOOK_SECRET,
    ] {
        assert!(!debug.contains(secret), "Debug printed a secret: {secret}");
    }
}

fn t_config_debug(services: &Services) -> redis_autoscaler::config::Config {
    redis_autoscaler::config::Config::parse(&config_text("", ""), &services.env()).unwrap()
}

/// The real binary, with the environment it reads and nothing else (no real AWS config).
fn binary(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redis-autoscaler"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn serve_env(services: &Services) -> Vec<(&'static str, String)> {
    vec![
        ("SLACK_BOT_TOKEN", TOKEN.to_string()),
        ("SLACK_SIGNING_SECRET", SIGNING_SECRET.to_string()),
        (
            "PAGERDUTY_ROUTING_KEY",
            FakePagerDuty::EXAMPLE_ROUTING_KEY.to_string(),
        ),
        ("ALARM_API_KEY", ALARM_KEY.to_string()),
        ("SLACK_API_URL", services.slack.base_url()),
        ("PAGERDUTY_EVENTS_URL", services.pd.url()),
        // Every AWS service the bot calls (ElastiCache; STS for the account at start;
        // Application Auto Scaling in the preflight) goes to the simulator, never out.
        ("AWS_ENDPOINT_URL", services.sim.endpoint()),
        ("AWS_ENDPOINT_URL_ELASTICACHE", services.sim.endpoint()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "AKIDTESTONLY".to_string()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "test-secret-access-key".to_string(),
        ),
    ]
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(base: &str, child: &mut std::process::Child) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("serve exited with {status}: {err}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "serve never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The store `serve` keeps for `dir`: the SQLite file its config names, or (on PostgreSQL)
/// the database standing for it, which [`serve_on_test_store`] hands it.
async fn serve_store(dir: &Path) -> std::sync::Arc<dyn Store> {
    open_store(&dir.join("serve.db")).await
}

/// `serve`'s config in `dir` and its environment, on the store the suite runs against: on
/// PostgreSQL, `DATABASE_URL` names `dir`'s database (instead of the config's file) and the
/// lease is the tests' short one.
async fn serve_on_test_store(
    services: &Services,
    dir: &Path,
    port: u16,
) -> (std::path::PathBuf, Vec<(&'static str, String)>) {
    let config = write_config(dir, port);
    let mut env = serve_env(services);
    if let Some(url) = database_url(&dir.join("serve.db")).await {
        env.push(("DATABASE_URL", url));
        let lease = format!("\n[postgres]\nlease = \"{}s\"\n", TEST_LEASE.as_secs());
        let text = std::fs::read_to_string(&config).unwrap() + &lease;
        std::fs::write(&config, text).unwrap();
    }
    (config, env)
}

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let mut text = config_text("", "approval = \"auto\"");
    text = format!(
        "listen = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\n{text}",
        dir.join("serve.db").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn sigterm_mid_run_then_restart_completes_the_run_once() {
    let mut sim = sim_config();
    sim.snapshot_duration = Duration::from_millis(1500);
    let services = Services::start(sim).await;
    let dir = TempDir::new();
    let port = free_port();
    let (config, env) = serve_on_test_store(&services, &dir.0, port).await;
    let base = format!("http://127.0.0.1:{port}");

    let mut first = binary(&["serve", "--config", config.to_str().unwrap()], &env)
        .spawn()
        .unwrap();
    wait_ready(&base, &mut first).await;
    let answer = deliver(&base, "sigterm-1").await;
    let run = RunId::parse(answer["run_id"].as_str().unwrap()).unwrap();
    // Wait until the snapshot is being taken, then stop the process like a deploy would.
    let store = serve_store(&dir.0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state = store
            .run(&run)
            .await
            .unwrap()
            .map(|r| r.state_name().to_string());
        if state.as_deref() == Some("snapshotting") && services.sim.count("CreateSnapshot") == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached the snapshot: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || first.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&exit.stderr);
    assert!(
        exit.status.success(),
        "graceful exit: {:?}\n{stderr}",
        exit.status
    );
    assert!(stderr.contains("shutdown signal received"), "{stderr}");
    let left = store.run(&run).await.unwrap().unwrap();
    assert!(
        !left.is_finished(),
        "stopped mid-run: {}",
        left.state_name()
    );
    // New connections are refused once it has stopped.
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());

    let mut second = binary(&["serve", "--config", config.to_str().unwrap()], &env)
        .spawn()
        .unwrap();
    wait_ready(&base, &mut second).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = store.run(&run).await.unwrap().unwrap();
        if r.is_finished() && store.pending_effects(Some(&run)).await.unwrap().is_empty() {
            assert_eq!(r.state_name(), "succeeded");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not finish after restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || second.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.status.success());
    assert_eq!(services.sim.count("CreateSnapshot"), 1, "one snapshot");
    assert_eq!(
        services.sim.count("ModifyReplicationGroup"),
        1,
        "one modify"
    );
    assert_eq!(services.top_messages().len(), 1, "one top message");
    assert!(services.pages().is_empty());
    // The preflight's calls to the other services went to the simulator too.
    assert_eq!(services.sim.count("DescribeScalableTargets"), 1);
    assert_eq!(services.sim.count("DescribeCacheParameters"), 1);
}

#[tokio::test]
async fn serve_refuses_to_start_without_its_secrets_and_with_a_bad_config() {
    let dir = TempDir::new();
    let config = write_config(&dir.0, free_port());
    let out = binary(&["serve", "--config", config.to_str().unwrap()], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SLACK_BOT_TOKEN") && err.contains("ALARM_API_KEY"),
        "{err}"
    );
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "[slack]\nchanel = \"C0123ABCD\"\n").unwrap();
    let out = binary(&["serve", "--config", bad.to_str().unwrap()], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `channel`"));
}

/// A `RUST_LOG` with a typo used to be dropped without a word (logging at the default); now
/// the default still applies and the first line says what could not be read.
#[tokio::test]
async fn a_rust_log_that_cannot_be_read_is_reported_and_the_default_kept() {
    let dir = TempDir::new();
    let good = dir.0.join("good.toml");
    std::fs::write(&good, config_text("", "")).unwrap();
    let check = |rust_log: &str| {
        binary(&["check-config", "--config", good.to_str().unwrap()], &[])
            .env("RUST_LOG", rust_log)
            .output()
            .unwrap()
    };
    let out = check("redis_autoscaler=loud");
    assert_eq!(out.status.code(), Some(0), "the command still runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RUST_LOG could not be read; logging at the default"),
        "{stderr}"
    );
    assert!(stderr.contains("WARN"), "{stderr}");
    for fine in [
        "warn",
        "info,redis_autoscaler=debug",
        "info,[request]=debug",
    ] {
        let out = check(fine);
        assert_eq!(out.status.code(), Some(0));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("RUST_LOG could not be read"),
            "{fine}: {stderr}"
        );
    }
}

#[tokio::test]
async fn check_config_prints_the_effective_config_redacted_or_every_error() {
    let dir = TempDir::new();
    let good = dir.0.join("good.toml");
    std::fs::write(
        &good,
        config_text("approval = \"auto\"\nmax_node_type = \"\"", ""),
    )
    .unwrap();
    let env = [("SLACK_BOT_TOKEN", "xoxb-must-not-be-printed".to_string())];
    let out = binary(&["check-config", "--config", good.to_str().unwrap()], &env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("[groups.prod-jobs]") && stdout.contains("SLACK_BOT_TOKEN: set"),
        "{stdout}"
    );
    assert!(stdout.contains("SLACK_SIGNING_SECRET: NOT SET"), "{stdout}");
    assert!(
        !stdout.contains("xoxb-must-not-be-printed")
            && !stderr.contains("xoxb-must-not-be-printed")
    );
    assert!(
        stderr.contains("warning:") && stderr.contains("no max_node_type"),
        "{stderr}"
    );

    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "listen = \"nowhere\"\n[slack]\nchannel = \"C0123ABCD\"\n[defaults]\napproval_timeout = \"soon\"\ncooldwn = \"1h\"\n").unwrap();
    let out = binary(&["check-config", "--config", bad.to_str().unwrap()], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 error(s)"), "{stderr}");
    assert!(stderr.contains("line 1: `listen`"), "{stderr}");
    assert!(
        stderr.contains("line 5: `defaults.approval_timeout`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 6: `defaults.cooldwn`: unknown key; did you mean `cooldown`?"),
        "{stderr}"
    );

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml");
    let out = binary(
        &["check-config", "--config", example.to_str().unwrap()],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The background pruning runs on its own: with a retention of milliseconds, a finished run,
/// its audit trail, its effects and its alarm delivery are gone soon after it ends.
#[tokio::test]
async fn the_store_is_pruned_in_the_background_after_the_retention() {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let mut config = config_text("", "approval = \"auto\"");
    config.push_str(
        "\n[retention]\nruns = \"300ms\"\nrecords = \"1ms\"\nprune_interval = \"20ms\"\nprune_batch = 3\n",
    );
    let t = TestApp::spawn(&services, &config, &dir.db()).await;
    let (status, answer) = post_eventbridge(
        &t.url(""),
        &eventbridge_event("e-pruned", GROUP, "ALARM", 93.2),
        Some(ALARM_KEY),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let run = redis_autoscaler::domain::RunId::parse(answer["run_id"].as_str().unwrap()).unwrap();
    // Finished, not quiet: a run is kept for `runs` after it finished, but once its last
    // effect is done it may go at the next pass (20 ms), before a wait for it to go quiet
    // has looked again (and the wait needs the run).
    t.wait_for(&run, "the run to finish", Run::is_finished)
        .await;
    eventually_async("the finished run and all its effects pruned", || async {
        t.store.run(&run).await.unwrap().is_none()
            && t.store.audit_trail(&run).await.unwrap().is_empty()
            && t.store
                .pending_effects(Some(&run))
                .await
                .unwrap()
                .is_empty()
            && t.store.recent_alarms(10).await.unwrap().is_empty()
    })
    .await;
    t.stop().await;
}
