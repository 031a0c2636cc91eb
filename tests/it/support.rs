//! The test harness: the real app on loopback, against the ElastiCache simulator and local
//! Slack, PagerDuty and hook stand-ins. Time is compressed through config (milliseconds).
//!
//! The same suite runs against either store: SQLite files by default, PostgreSQL with
//! `REDIS_AUTOSCALER_TEST_STORE=postgres` (see [`StoreKind`]). A test names its store by a
//! path in its [`TempDir`] either way; on PostgreSQL that path stands for a database the test
//! creates on first use and drops with the directory.

#![allow(
    dead_code,
    reason = "each test module uses a different part of the harness"
)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use redis_autoscaler::alarm::sns::SnsHttp;
use redis_autoscaler::app::App;
use redis_autoscaler::config::{Config, Env};
use redis_autoscaler::domain::{
    ChannelId, NodeType, ReplicationGroupId, RunId, SlackUserId, Timestamp,
};
use redis_autoscaler::elasticache::sdk::{SdkElastiCache, config_for_endpoint};
use redis_autoscaler::elasticache::sim::{self, SimConfig, SimGroup, SimHandle};
use redis_autoscaler::standin::hooks::{FakeHooks, FakeHooksHandle};
use redis_autoscaler::standin::pagerduty::{FakePagerDuty, FakePagerDutyHandle};
use redis_autoscaler::standin::slack::{FakeMessage, FakeSlack, FakeSlackHandle};
use redis_autoscaler::startup::{Application, Deps, stopped};
use redis_autoscaler::store::{PgOptions, PgStore, SqliteStore, postgres};
use redis_autoscaler::workflow::machine::Started;
use redis_autoscaler::workflow::ports::{Store, SystemClock};
use redis_autoscaler::workflow::run::{Run, Trigger};
use redis_autoscaler::workflow::runner::RunnerOptions;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const CHANNEL: &str = "C0TESTOPS";
pub const ONCALL: &str = "U0ONCALL1";
pub const ONCALL2: &str = "U0ONCALL2";
pub const STRANGER: &str = "U0STRANGER";
pub const ONCALL_GROUP: &str = "S0ONCALLS";
pub const GROUP_MEMBER: &str = "U0GROUPIE";
pub const GROUP: &str = "prod-jobs";
pub const TOKEN: &str = "xoxb-test-token";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const HOOK_SECRET: &str = "test-hook-secret";
pub const ALARM_KEY: &str = "test-alarm-api-key";

pub fn group() -> ReplicationGroupId {
    ReplicationGroupId::parse(GROUP).unwrap()
}

pub fn channel() -> ChannelId {
    ChannelId::parse(CHANNEL).unwrap()
}

pub fn user(s: &str) -> SlackUserId {
    SlackUserId::parse(s).unwrap()
}

pub fn nt(s: &str) -> NodeType {
    NodeType::parse(s).unwrap()
}

/// A simulator with `prod-jobs` on `cache.r6g.large` and fast snapshots and modifications.
pub fn sim_config() -> SimConfig {
    SimConfig {
        snapshot_duration: Duration::from_millis(150),
        modify_duration: Duration::from_millis(150),
        ..SimConfig::with_groups([SimGroup::new(group(), nt("cache.r6g.large"))])
    }
}

/// The outside world: AWS (simulated), Slack, PagerDuty and the hooks.
#[derive(Clone)]
pub struct Services {
    pub sim: SimHandle,
    pub slack: FakeSlackHandle,
    pub pd: FakePagerDutyHandle,
    pub hooks: FakeHooksHandle,
    /// Other accounts and regions (each its own simulator), for a bot that manages groups
    /// there; `None`: every group is in the simulator's place.
    pub places: Option<redis_autoscaler::startup::PlaceSdk>,
}

impl Services {
    pub async fn start(sim_config: SimConfig) -> Services {
        // Test clients (reqwest with rustls and no built-in provider) need it too, whichever
        // test runs first.
        redis_autoscaler::elasticache::sdk::install_crypto_provider();
        let slack = FakeSlack::spawn(TOKEN).await.unwrap();
        slack.set_usergroup(
            &redis_autoscaler::domain::SlackUserGroupId::parse(ONCALL_GROUP).unwrap(),
            vec![user(GROUP_MEMBER)],
        );
        Services {
            sim: sim::spawn(sim_config).await.unwrap(),
            slack,
            pd: FakePagerDuty::spawn().await.unwrap(),
            hooks: FakeHooks::spawn(HOOK_SECRET).await.unwrap(),
            places: None,
        }
    }

    pub fn env(&self) -> Env {
        Env::default()
            .with("SLACK_BOT_TOKEN", TOKEN)
            .with("SLACK_SIGNING_SECRET", SIGNING_SECRET)
            .with("PAGERDUTY_ROUTING_KEY", FakePagerDuty::EXAMPLE_ROUTING_KEY)
            .with("ALARM_API_KEY", ALARM_KEY)
            .with("HOOK_SIGNING_SECRET", HOOK_SECRET)
            .with("SLACK_API_URL", self.slack.base_url())
            .with("PAGERDUTY_EVENTS_URL", self.pd.url())
    }

    /// A Web API client for the Slack stand-in, with the bot's token.
    pub fn slack_client(&self) -> redis_autoscaler::slack::api::SlackClient {
        redis_autoscaler::slack::api::SlackClient::new(
            self.slack.base_url(),
            redis_autoscaler::domain::Secret::new(TOKEN),
            redis_autoscaler::http_client::build(Duration::from_secs(5)),
        )
    }

    /// The top-level messages in the test channel.
    pub fn top_messages(&self) -> Vec<FakeMessage> {
        self.slack.messages(&channel())
    }

    pub fn pages(&self) -> Vec<serde_json::Value> {
        self.pd.events()
    }
}

/// Config text for tests: millisecond intervals; `defaults` and `group` add keys.
pub fn config_text(defaults: &str, group_keys: &str) -> String {
    format!(
        r#"
[slack]
channel = "{CHANNEL}"
approvers = ["{ONCALL}", "{ONCALL2}", "{ONCALL_GROUP}"]

[delivery]
retry_interval = "20ms"
# A retried top message is checked for a duplicate 3 × this later (30 s by default).
timeout = "5s"

[defaults]
approval_timeout = "1h"
snapshot_poll_interval = "30ms"
snapshot_max_polls = 200
modify_poll_interval = "30ms"
modify_timeout = "20s"
verify_window = "100ms"
aws_retry_interval = "20ms"
aws_retry_attempts = 8
{defaults}

[groups.{GROUP}]
max_node_type = "cache.r6g.2xlarge"
{group_keys}
"#
    )
}

/// The store the suite runs against, chosen for the whole run by
/// `REDIS_AUTOSCALER_TEST_STORE`: `sqlite` (or unset) or `postgres`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// An SQLite file per test, in its [`TempDir`].
    Sqlite,
    /// A database per test on the server `admin_url` reaches (`TEST_DATABASE_URL`, by default
    /// the local one with trust auth), created and dropped by the test.
    Postgres { admin_url: String },
}

impl StoreKind {
    pub fn current() -> &'static StoreKind {
        static KIND: OnceLock<StoreKind> = OnceLock::new();
        KIND.get_or_init(|| {
            match std::env::var("REDIS_AUTOSCALER_TEST_STORE").as_deref() {
                Err(_) | Ok("") | Ok("sqlite") => StoreKind::Sqlite,
                Ok("postgres") => StoreKind::Postgres {
                    admin_url: std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
                        // No TLS on loopback: the local server's certificate names localhost.
                        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into()
                    }),
                },
                Ok(other) => {
                    panic!("REDIS_AUTOSCALER_TEST_STORE is `sqlite` or `postgres`, not `{other}`")
                }
            }
        })
    }

    pub fn is_postgres() -> bool {
        matches!(StoreKind::current(), StoreKind::Postgres { .. })
    }
}

/// How long a claim on work lasts in the tests' PostgreSQL stores: short, so what a stopped
/// bot had claimed is taken over soon after a restart.
pub const TEST_LEASE: Duration = Duration::from_secs(2);

/// The store `db` names, as the bot would open it: the SQLite file, or (PostgreSQL) the
/// database standing for it, created the first time it is opened.
pub async fn open_store(db: &Path) -> Arc<dyn Store> {
    match StoreKind::current() {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(db).unwrap()),
        StoreKind::Postgres { .. } => {
            // The production pool: a test of load meets the limits a replica has.
            let options = PgOptions {
                lease: TEST_LEASE,
                ..PgOptions::default()
            };
            let url = database_url(db)
                .await
                .expect("the tests' store is PostgreSQL");
            let store = PgStore::connect(&url, None, options)
                .await
                .unwrap_or_else(|e| panic!("connecting to the test database: {e}"));
            Arc::new(store)
        }
    }
}

/// With PostgreSQL: the URL of the database standing for `db` (a path in a [`TempDir`]),
/// created on the first call for that path, so a bot restarted on the same path sees the same
/// data. `None` with SQLite.
pub async fn database_url(db: &Path) -> Option<String> {
    let StoreKind::Postgres { admin_url } = StoreKind::current() else {
        return None;
    };
    let name = database_name(db);
    let new = created_databases().lock().unwrap().insert(name.clone());
    if new {
        postgres::create_database(admin_url, &name)
            .await
            .unwrap_or_else(|e| {
                panic!("creating the test database {name} at TEST_DATABASE_URL: {e}")
            });
    }
    Some(postgres::database_url(admin_url, &name).unwrap())
}

const TEMP_DIR_PREFIX: &str = "redis-autoscaler-test-";

/// `ra_it_<the TempDir's id>_<the file's stem>`, in the characters a database name may have.
fn database_name(db: &Path) -> String {
    let dir = db
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|d| d.to_str())
        .and_then(|d| d.strip_prefix(TEMP_DIR_PREFIX))
        .unwrap_or_else(|| panic!("{} is not in a TempDir", db.display()));
    let stem = db.file_stem().and_then(|s| s.to_str()).unwrap_or("db");
    format!("{}{}", database_prefix(dir), sanitized(stem))
}

/// What the names of a TempDir's databases start with.
fn database_prefix(dir_id: &str) -> String {
    format!("ra_it_{}_", sanitized(dir_id))
}

fn sanitized(s: &str) -> String {
    s.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '_',
        })
        .collect()
}

/// The test databases created and not dropped yet (their TempDir drops them).
fn created_databases() -> &'static Mutex<HashSet<String>> {
    static CREATED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    CREATED.get_or_init(Default::default)
}

/// A directory removed when dropped, with the PostgreSQL databases made for paths in it.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("{TEMP_DIR_PREFIX}{}", RunId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn db(&self) -> PathBuf {
        self.0.join("test.db")
    }

    /// Drop the databases made for paths in this directory. Drop is synchronous and may run
    /// inside a runtime, so this blocks on a thread of its own with its own runtime.
    fn drop_databases(&self) {
        let StoreKind::Postgres { admin_url } = StoreKind::current() else {
            return;
        };
        let Some(id) = self
            .0
            .file_name()
            .and_then(|d| d.to_str())
            .and_then(|d| d.strip_prefix(TEMP_DIR_PREFIX))
        else {
            return;
        };
        let prefix = database_prefix(id);
        let names: Vec<String> = {
            let mut created = created_databases()
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mine: Vec<String> = created
                .iter()
                .filter(|n| n.starts_with(&prefix))
                .cloned()
                .collect();
            for n in &mine {
                created.remove(n);
            }
            mine
        };
        if names.is_empty() {
            return;
        }
        let admin_url = admin_url.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                for name in &names {
                    if let Err(e) = postgres::drop_database(&admin_url, name).await {
                        eprintln!("the test database {name} was not dropped: {e}");
                    }
                }
            })
        })
        .join();
        if dropped.is_err() {
            eprintln!("dropping the test databases panicked");
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        self.drop_databases();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything the app logs during the tests (all tests share it), as JSON lines, at trace level
/// for this crate: the secret-leak test reads it.
pub fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer: &'static std::sync::Mutex<Vec<u8>> =
            Box::leak(Box::new(std::sync::Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "redis_autoscaler=trace,warn",
            ))
            .with_writer(move || LogWriter(buffer))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
}

struct LogWriter(&'static std::sync::Mutex<Vec<u8>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// SNS as the bot reaches it in tests: records every GET (subscription confirmations, and
/// certificate fetches, which tests avoid by seeding the cache) and never leaves the machine.
#[derive(Default)]
pub struct RecordingSnsHttp {
    pub gets: std::sync::Mutex<Vec<String>>,
}

impl SnsHttp for RecordingSnsHttp {
    fn get<'a>(
        &'a self,
        url: &'a str,
    ) -> redis_autoscaler::workflow::ports::BoxFuture<'a, Result<Vec<u8>, String>> {
        self.gets.lock().unwrap().push(url.to_string());
        Box::pin(async move {
            if url.ends_with(".pem") {
                Err("certificates are seeded in tests, not fetched".to_string())
            } else {
                Ok(b"<ConfirmSubscriptionResponse/>".to_vec())
            }
        })
    }
}

/// The bot, running: HTTP server on 127.0.0.1:0, the workflow runner and the job worker,
/// started the way `serve` starts them.
pub struct TestApp {
    pub app: App,
    pub sns: Arc<RecordingSnsHttp>,
    /// The bot's SNS verifier (tests seed its certificate cache).
    pub verifier: Arc<redis_autoscaler::alarm::sns::SnsVerifier>,
    /// The bot's store, through the port every store implements.
    pub store: Arc<dyn Store>,
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    running: JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    pub async fn spawn(services: &Services, config_text: &str, db: &Path) -> TestApp {
        TestApp::spawn_with(services, config_text, db, RunnerOptions::default()).await
    }

    pub async fn spawn_with(
        services: &Services,
        config_text: &str,
        db: &Path,
        options: RunnerOptions,
    ) -> TestApp {
        TestApp::spawn_clocked(services, config_text, db, options, Arc::new(SystemClock)).await
    }

    /// The bot with its own clock (a test that needs an exact time).
    pub async fn spawn_clocked(
        services: &Services,
        config_text: &str,
        db: &Path,
        options: RunnerOptions,
        clock: Arc<dyn redis_autoscaler::workflow::ports::Clock>,
    ) -> TestApp {
        let store = open_store(db).await;
        TestApp::spawn_on(services, config_text, db, options, clock, store).await
    }

    /// The bot on the SQLite file `db` whichever store the suite runs against: for a test
    /// about the file itself.
    pub async fn spawn_on_sqlite(services: &Services, config_text: &str, db: &Path) -> TestApp {
        let store = Arc::new(SqliteStore::open(db).unwrap());
        let clock = Arc::new(SystemClock);
        TestApp::spawn_on(
            services,
            config_text,
            db,
            RunnerOptions::default(),
            clock,
            store,
        )
        .await
    }

    async fn spawn_on(
        services: &Services,
        config_text: &str,
        db: &Path,
        options: RunnerOptions,
        clock: Arc<dyn redis_autoscaler::workflow::ports::Clock>,
        store: Arc<dyn Store>,
    ) -> TestApp {
        captured_logs();
        let mut config =
            Config::parse(config_text, &services.env()).unwrap_or_else(|e| panic!("{e}"));
        config.database = db.to_path_buf();
        config.listen = "127.0.0.1:0".parse().unwrap();
        let sns = Arc::new(RecordingSnsHttp::default());
        let aws = config_for_endpoint(&services.sim.endpoint());
        let deps = Deps {
            store: store.clone(),
            aws: Arc::new(SdkElastiCache::new(&aws)),
            memory: Arc::new(redis_autoscaler::cloudwatch::SdkCloudWatch::new(&aws)),
            prices: Some(Arc::new(redis_autoscaler::pricing::SdkPrices::new(
                &aws,
                &config.pricing.region,
            ))),
            clock,
            sns_http: sns.clone(),
            home: redis_autoscaler::startup::home(&config, &aws)
                .await
                .unwrap(),
            places: services.places.clone(),
            options,
        };
        let application = Application::build(config, deps).await.unwrap();
        let (app, addr) = (application.app().clone(), application.local_addr());
        let verifier = application.sns().clone();
        let (stop, rx) = watch::channel(false);
        let running = tokio::spawn(application.run_until_stopped(stopped(rx)));
        TestApp {
            app,
            sns,
            verifier,
            store,
            addr,
            stop,
            running,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Start a run as an alarm would.
    pub async fn alarm(&self) -> RunId {
        let trigger = Trigger::Alarm {
            delivery_id: "eventbridge:test".into(),
            alarm_name: format!("Redis memory: {GROUP}"),
            reason: "Threshold Crossed: 1 datapoint [93.2] was greater than the threshold (90.0)"
                .into(),
            value: Some(93.2),
            at: Timestamp::now(),
        };
        match self.app.start_run(&group(), None, trigger).await.unwrap() {
            Started::Created(id) => id,
            Started::AlreadyActive(id) => panic!("a run was already active: {id}"),
        }
    }

    pub async fn run(&self, id: &RunId) -> Run {
        self.store.run(id).await.unwrap().expect("the run exists")
    }

    /// Are all the run's effects (messages, pages) delivered?
    pub async fn quiet(&self, id: &RunId) -> bool {
        self.store
            .pending_effects(Some(id))
            .await
            .unwrap()
            .is_empty()
    }

    /// Wait (up to 20 s) until `pred` holds for the run.
    pub async fn wait_for(&self, id: &RunId, what: &str, pred: impl Fn(&Run) -> bool) -> Run {
        self.wait_until(id, what, pred, false).await
    }

    /// Wait until the run has finished and all its effects (messages, pages) are delivered.
    pub async fn wait_done(&self, id: &RunId) -> Run {
        self.wait_until(id, "the run to finish and go quiet", Run::is_finished, true)
            .await
    }

    /// Wait (up to 20 s) until `pred` holds for the run and, if `quiet`, nothing of it is
    /// pending; on a timeout, panic with its state, what is pending and its audit trail.
    async fn wait_until(
        &self,
        id: &RunId,
        what: &str,
        pred: impl Fn(&Run) -> bool,
        quiet: bool,
    ) -> Run {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let run = self.run(id).await;
            if pred(&run) && (!quiet || self.quiet(id).await) {
                return run;
            }
            if tokio::time::Instant::now() > deadline {
                let audit = self.store.audit_trail(id).await.unwrap();
                let lines: Vec<String> = audit
                    .iter()
                    .map(|a| format!("{} {} {}", a.actor, a.kind, a.detail))
                    .collect();
                let pending: Vec<String> = self
                    .store
                    .pending_effects(Some(id))
                    .await
                    .unwrap()
                    .iter()
                    .map(|p| format!("{} (try {}, due {:?})", p.effect.name(), p.attempt, p.due))
                    .collect();
                panic!(
                    "timed out waiting for {what}; run is {}; pending: [{}]\n{}",
                    run.state_name(),
                    pending.join(", "),
                    lines.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop gracefully (as on SIGTERM) and wait until everything has stopped.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.running.await.unwrap().unwrap();
    }

    /// Wait for a runner that halts by itself (test control): the whole bot stops with it, as
    /// the process it stands for died there.
    pub async fn wait_halted(self) {
        self.running.await.unwrap().unwrap();
    }

    /// Has the bot stopped by itself (the runner halted)?
    pub fn runner_finished(&self) -> bool {
        self.running.is_finished()
    }
}

/// Sign and POST a body the way Slack does (`X-Slack-Request-Timestamp`, `X-Slack-Signature`).
pub async fn post_signed(t: &TestApp, path: &str, body: &str) -> reqwest::Response {
    let ts = Timestamp::now().as_secs().to_string();
    let sig = redis_autoscaler::slack::signature::sign(
        &redis_autoscaler::domain::Secret::new(SIGNING_SECRET),
        &ts,
        body.as_bytes(),
    );
    reqwest::Client::new()
        .post(t.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Slack-Request-Timestamp", ts)
        .header("X-Slack-Signature", sig)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// A `block_actions` form body like Slack's sample, `user` clicking `action`; private answers
/// go to the stand-in's response URL `{prefix}-{user}`. Like Slack's, every click has its own
/// `trigger_id` and `action_ts`, so no two clicks are the same request.
pub fn click_body(
    services: &Services,
    user: &str,
    prefix: &str,
    action: serde_json::Value,
) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/slack_block_actions.json")).unwrap();
    v["user"]["id"] = serde_json::json!(user);
    v["channel"]["id"] = serde_json::json!(CHANNEL);
    v["container"]["channel_id"] = serde_json::json!(CHANNEL);
    v["response_url"] = serde_json::json!(services.slack.response_url(&format!("{prefix}-{user}")));
    let mut action = action;
    let n = CLICKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let now = Timestamp::now().as_millis();
    action["action_ts"] = serde_json::json!(format!("{}.{:06}", now / 1000, n % 1_000_000));
    v["trigger_id"] = serde_json::json!(format!("{now}.{n}.test"));
    v["actions"] = serde_json::json!([action]);
    serde_urlencoded::to_string([("payload", v.to_string())]).unwrap()
}

static CLICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A slash command form as Slack posts it (field set and encoding of the real sample), with
/// its own `trigger_id` like every real one.
pub fn slash_body(services: &Services, user: &str, text: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let trigger = format!("13345224609.{n}.8088930838d88f008e0");
    serde_urlencoded::to_string([
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", "T0001"),
        ("team_domain", "example"),
        ("channel_id", CHANNEL),
        ("channel_name", "ops"),
        ("user_id", user),
        ("user_name", "someone"),
        ("command", "/redis"),
        ("text", text),
        ("api_app_id", "A123456"),
        (
            "response_url",
            &services.slack.response_url(&format!("cmd-{user}")),
        ),
        ("trigger_id", trigger.as_str()),
    ])
    .unwrap()
}

/// The private answers a person got through response_url.
pub fn answers_to(services: &Services, id: &str) -> Vec<String> {
    services
        .slack
        .responses()
        .into_iter()
        .filter(|r| r.id == id)
        .map(|r| r.text)
        .collect()
}

/// One of the run message's buttons, as it comes back in a click.
pub fn button(action_id: &str, run: &RunId) -> serde_json::Value {
    serde_json::json!({
        "action_id": action_id, "block_id": format!("run:{run}"), "type": "button",
        "value": run.as_str(), "action_ts": "1548426417.840180",
        "text": {"type": "plain_text", "text": action_id}
    })
}

/// An EventBridge "CloudWatch Alarm State Change" event, from AWS's sample, about `group`.
pub fn eventbridge_event(id: &str, group: &str, state: &str, value: f64) -> String {
    use serde_json::json;
    let mut v: serde_json::Value = serde_json::from_str(include_str!(
        "../fixtures/eventbridge_cloudwatch_alarm.json"
    ))
    .unwrap();
    v["id"] = json!(id);
    v["detail"]["alarmName"] = json!(format!("Redis memory: {group}"));
    v["detail"]["configuration"]["description"] = json!(format!("Redis memory: {group} above 90%"));
    v["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"] = json!({
        "dimensions": { "ReplicationGroupId": group },
        "name": "DatabaseMemoryUsagePercentage",
        "namespace": "AWS/ElastiCache"
    });
    v["detail"]["state"]["value"] = json!(state);
    v["detail"]["state"]["reason"] = json!(format!(
        "Threshold Crossed: 1 out of the last 1 datapoints [{value} (26/11/26 03:12:00)] was greater than the threshold (90.0)"
    ));
    v["detail"]["state"]["reasonData"] = json!(format!(
        "{{\"recentDatapoints\":[{value}],\"threshold\":90.0}}"
    ));
    v.to_string()
}

/// POST an EventBridge event to `{base}/alarms/eventbridge` (with `X-Api-Key` when given);
/// the status and the JSON answer.
pub async fn post_eventbridge(
    base: &str,
    body: &str,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/alarms/eventbridge"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.header("X-Api-Key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Wait until the bot's start-up look at its one managed group (a DescribeReplicationGroups in
/// the background) is done, so a test can count the AWS calls its own actions make.
pub async fn startup_checked(services: &Services) {
    eventually("the start-up check of the managed group", || {
        services.sim.attempts("DescribeReplicationGroups") >= 1
    })
    .await;
}

/// Wait (up to 5 s) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    eventually_async(what, || std::future::ready(f())).await
}

/// Wait (up to 5 s) until what `f` answers holds (a question for the store, which is async).
pub async fn eventually_async<F: Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The thread replies' text of a top message, in order.
/// (The replies that share a file, the memory graphs, are left out: see [`thread_files`].)
pub fn thread_texts(m: &FakeMessage) -> Vec<String> {
    m.replies
        .iter()
        .filter(|r| r.files.is_empty())
        .map(|r| r.text.clone())
        .collect()
}

/// Each thread reply as the thread shows it: its text, or `[file <title>]` for one that shares
/// a file (a memory graph).
pub fn thread_lines(m: &FakeMessage) -> Vec<String> {
    m.replies
        .iter()
        .map(|r| match r.files.first() {
            Some(f) => format!("[file {}]", f["title"].as_str().unwrap_or("?")),
            None => r.text.clone(),
        })
        .collect()
}
