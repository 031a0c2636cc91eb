//! The bot as a real `serve` process: its config file, its environment (every URL points at
//! the stand-ins on loopback), start, `kill -9`, restart, graceful stop, and its memory as
//! the kernel counts it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::sync::Arc;

use redis_autoscaler::standin::pagerduty::FakePagerDuty;
use redis_autoscaler::store::{PgOptions, PgStore, SqliteStore};
use redis_autoscaler::workflow::ports::Store;

use crate::support::*;

/// The `[defaults]` most scenarios use: millisecond polls and retries, no approval timeout
/// that could fire during a scenario.
pub const FAST_DEFAULTS: &str = r#"
approval_timeout = "1h"
snapshot_poll_interval = "50ms"
snapshot_max_polls = 2000
modify_poll_interval = "50ms"
modify_timeout = "10m"
verify_window = "100ms"
aws_retry_interval = "50ms"
aws_retry_attempts = 8
"#;

/// A config file's text: `delivery` keys, `defaults`, then the `[groups.*]` tables (see
/// [`group_tables`]); `extra` is appended (e.g. an `[alarms]` table).
pub fn config_text(
    port: u16,
    db: &Path,
    delivery: &str,
    defaults: &str,
    group_tables: &str,
    extra: &str,
) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
database = "{db}"

[slack]
channel = "{CHANNEL}"
approvers = ["{ONCALL}", "{ONCALL2}"]

[delivery]
retry_interval = "50ms"
{delivery}

[defaults]
{defaults}
{group_tables}
{extra}
"#,
        db = db.display()
    )
}

/// A `[groups.<id>]` table for each group, each with `keys`.
pub fn group_tables(groups: &[String], keys: &str) -> String {
    groups
        .iter()
        .map(|g| format!("\n[groups.{g}]\nmax_node_type = \"cache.r6g.2xlarge\"\n{keys}\n"))
        .collect()
}

/// The group a call acted on: its `ReplicationGroupId`, or the group of the node in its
/// `CacheClusterId` (a snapshot taken from a replica; nodes are `{group}-NNN` here).
pub fn acted_on(call: &redis_autoscaler::elasticache::sim::SimCall) -> Option<&str> {
    call.param("ReplicationGroupId").or_else(|| {
        call.param("CacheClusterId")
            .and_then(|node| node.rsplit_once('-'))
            .map(|(group, _)| group)
    })
}

/// Names `{prefix}-000` … for `n` groups.
pub fn group_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// The bot's memory, in KiB, and its threads, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident now (`VmRSS`) …
    pub rss_kib: u64,
    /// … of which anonymous (heap, stacks: `RssAnon`) …
    pub anon_kib: u64,
    /// … and file-backed (the binary's and libraries' pages: `RssFile`).
    pub file_kib: u64,
    /// The most it was resident (`VmHWM`).
    pub peak_kib: u64,
    pub threads: u64,
}

impl Memory {
    /// Read `/proc/<pid>/status`; all zero if the process is gone.
    pub fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            anon_kib: field("RssAnon:"),
            file_kib: field("RssFile:"),
            peak_kib: field("VmHWM:"),
            threads: field("Threads:"),
        }
    }

    pub fn rss_mib(self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    pub fn peak_mib(self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }

    /// `21.2 MiB (4.1 anon + 16.9 file, 4 threads)`.
    pub fn describe(self) -> String {
        format!(
            "{:.1} MiB ({:.1} anon + {:.1} file, {} threads)",
            self.rss_mib(),
            self.anon_kib as f64 / 1024.0,
            self.file_kib as f64 / 1024.0,
            self.threads
        )
    }
}

/// Where a process's resident memory is, from `/proc/<pid>/smaps`: the binary's pages,
/// other files, the main heap, thread stacks (anonymous mappings of a thread stack's size,
/// 2 MiB + guard, tokio's and std's default), and other anonymous memory (glibc's per-thread
/// malloc arenas, large allocations).
pub fn where_memory_is(pid: u32) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut binary, mut files, mut heap, mut stacks, mut other) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut stack_count, mut name, mut size) = (0, String::new(), 0u64);
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            name = words.nth(4).unwrap_or("").to_string();
            continue;
        }
        let kib = || {
            words
                .clone()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match first {
            "Size:" => size = kib(),
            "Rss:" => {
                let rss = kib();
                if name.ends_with("redis-autoscaler") {
                    binary += rss;
                } else if name.starts_with('/') {
                    files += rss;
                } else if name == "[heap]" {
                    heap += rss;
                } else if (2040..=2060).contains(&size) || name == "[stack]" {
                    stacks += rss;
                    stack_count += 1;
                } else {
                    other += rss;
                }
            }
            _ => {}
        }
    }
    let mib = |k: u64| k as f64 / 1024.0;
    format!(
        "binary {:.1}, other files {:.1}, heap {:.1}, {stack_count} stacks {:.1}, other anon (arenas, mmaps) {:.1} MiB",
        mib(binary),
        mib(files),
        mib(heap),
        mib(stacks),
        mib(other)
    )
}

/// Samples a process every 100 ms until stopped: the most it was resident and the most
/// threads it had.
pub struct Watcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(Memory, Memory)>,
}

impl Watcher {
    pub fn start(pid: u32) -> Watcher {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let (mut most_resident, mut most_threads) = (Memory::default(), Memory::default());
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let m = Memory::of(pid);
                if m.rss_kib > most_resident.rss_kib {
                    most_resident = m;
                }
                if m.threads > most_threads.threads {
                    most_threads = m;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (most_resident, most_threads)
        });
        Watcher { stop, task }
    }

    /// The sample with the most resident memory, and the one with the most threads.
    pub async fn stop(self) -> (Memory, Memory) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Where a bot keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// Its own SQLite file: `bot.db` in the scenario's directory (or in `LOAD_DB_DIR`).
    Sqlite,
    /// A PostgreSQL database several bots may share: its URL, without a password (the local
    /// test server trusts loopback).
    Postgres(String),
}

/// A running `redis-autoscaler serve`.
pub struct Bot {
    child: Option<Child>,
    pub port: u16,
    /// What its config's `database` says: the SQLite file, or the PostgreSQL URL.
    pub db: PathBuf,
    pub database: Database,
    config: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// How many times it was started.
    pub starts: usize,
}

impl Bot {
    /// Write the config into `dir` and start the bot on a free port with `extra_env` (e.g.
    /// `MALLOC_ARENA_MAX`), and wait until it is ready. `config` builds the text from the
    /// port and the database path.
    ///
    /// `LOAD_BOT_WRAPPER` (e.g. `heaptrack -o /tmp/bot`) runs the bot under a tool; its
    /// memory figures are then the tool's, not the bot's. `LOAD_DB_DIR` puts its store in
    /// that directory instead of the scenario's; `LOAD_BOT_ENV` (`K=V K=V`) adds to its
    /// environment; `LOAD_BOT_BIN` runs another build of the binary (another profile, a
    /// candidate fix).
    pub async fn start(
        services: &Services,
        dir: &Path,
        config: impl FnOnce(u16, &Path) -> String,
        extra_env: &[(&str, &str)],
    ) -> Bot {
        Bot::start_on(services, dir, Database::Sqlite, config, extra_env).await
    }

    /// [`Bot::start`] on `database`: for PostgreSQL, `config` is given its URL as the path
    /// (so [`config_text`] writes `database = "postgres://…"`). Each bot needs its own `dir`
    /// (its config file and log are there).
    pub async fn start_on(
        services: &Services,
        dir: &Path,
        database: Database,
        config: impl FnOnce(u16, &Path) -> String,
        extra_env: &[(&str, &str)],
    ) -> Bot {
        let mut bot = Bot::launch_on(services, dir, database, config, extra_env);
        bot.wait_ready().await;
        bot
    }

    /// The same without waiting: the process is started, and may yet exit.
    pub fn launch(
        services: &Services,
        dir: &Path,
        config: impl FnOnce(u16, &Path) -> String,
        extra_env: &[(&str, &str)],
    ) -> Bot {
        Bot::launch_on(services, dir, Database::Sqlite, config, extra_env)
    }

    /// [`Bot::launch`] on `database`.
    pub fn launch_on(
        services: &Services,
        dir: &Path,
        database: Database,
        config: impl FnOnce(u16, &Path) -> String,
        extra_env: &[(&str, &str)],
    ) -> Bot {
        let port = free_port();
        // LOAD_DB_DIR (e.g. /dev/shm, a tmpfs) puts the store elsewhere: what the disk's
        // fsync costs shows as the difference.
        let db = match (&database, std::env::var_os("LOAD_DB_DIR")) {
            (Database::Postgres(url), _) => PathBuf::from(url),
            (Database::Sqlite, Some(d)) => {
                PathBuf::from(d).join(format!("redis-autoscaler-load-{port}.db"))
            }
            (Database::Sqlite, None) => dir.join("bot.db"),
        };
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config(port, &db)).unwrap();
        let mut env = serve_env(services);
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        // LOAD_BOT_ENV="MALLOC_ARENA_MAX=2 RUST_LOG=warn" adds to the bot's environment.
        let more = std::env::var("LOAD_BOT_ENV").unwrap_or_default();
        env.extend(more.split_whitespace().filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        }));
        let mut bot = Bot {
            child: None,
            port,
            db,
            database,
            config: config_path,
            env,
            log: dir.join("bot.log"),
            starts: 0,
        };
        bot.spawn();
        bot
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the bot is running").id()
    }

    /// Start the process (again), logging to the same file; does not wait until it is ready.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the bot is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let bin = std::env::var("LOAD_BOT_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_redis-autoscaler").to_string());
        let mut cmd = wrapped("LOAD_BOT_WRAPPER", Path::new(&bin));
        cmd.args(["serve", "--config", self.config.to_str().unwrap()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().expect("starting redis-autoscaler serve"));
        self.starts += 1;
    }

    /// Wait until `/readyz` answers 200, starting it again whenever it exits by itself (as
    /// a supervisor would); what it said each time it exited.
    pub async fn wait_ready_supervised(&mut self) -> Vec<String> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut exits = Vec::new();
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base())).send().await
                && r.status() == 200
            {
                return exits;
            }
            exits.extend(self.restart_if_exited());
            assert!(
                tokio::time::Instant::now() < deadline,
                "serve never became ready:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Wait (up to 60 s) until `/readyz` answers 200.
    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base())).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("serve exited with {status}:\n{}", self.log_tail());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "serve never became ready:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Like a supervisor (ECS, Kubernetes): if the process exited by itself, start it again;
    /// the last line it logged before exiting, if it did.
    pub fn restart_if_exited(&mut self) -> Option<String> {
        let exited = matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))));
        if !exited {
            return None;
        }
        self.child = None;
        let why = self.log_tail().lines().last().unwrap_or("").to_string();
        self.spawn();
        Some(why)
    }

    /// `kill -9`: no shutdown, no flush, nothing.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its memory now, from `/proc/<pid>/status`.
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }

    /// The store the bot writes, opened alongside it (SQLite in WAL mode: readers don't block
    /// it). For a PostgreSQL bot, [`Bot::store_port`].
    pub fn store(&self) -> SqliteStore {
        assert_eq!(
            self.database,
            Database::Sqlite,
            "a PostgreSQL bot's store: Bot::store_port"
        );
        SqliteStore::open(&self.db).unwrap()
    }

    /// The store the bot writes, through the port both kinds implement: its SQLite file
    /// opened alongside, or a small pool on its PostgreSQL database. Only read it: a shared
    /// store's `due_effects` and `due_jobs` would claim the bots' work.
    pub async fn store_port(&self) -> Arc<dyn Store> {
        match &self.database {
            Database::Sqlite => Arc::new(self.store()),
            Database::Postgres(url) => {
                let options = PgOptions {
                    pool_size: 2,
                    ..PgOptions::default()
                };
                Arc::new(PgStore::connect(url, None, options).await.unwrap())
            }
        }
    }

    /// [`Bot::due_work`] for either store.
    pub async fn due_work_in_any_store(&self) -> i64 {
        let Database::Postgres(url) = &self.database else {
            return self.due_work();
        };
        let client = pg_client(url).await;
        let soon = redis_autoscaler::domain::Timestamp::now().as_millis() + 10_000;
        client
            .query_one(
                "SELECT (SELECT COUNT(*) FROM effects WHERE status = 'pending' AND due_at <= $1)
                      + (SELECT COUNT(*) FROM jobs WHERE status = 'pending' AND due_at <= $1)",
                &[&soon],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Effects and jobs due within the next 10 s that are not done yet: what is left to do
    /// now (an approval timeout an hour away does not count).
    pub fn due_work(&self) -> i64 {
        let conn = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let soon = redis_autoscaler::domain::Timestamp::now().as_millis() + 10_000;
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM effects WHERE status = 'pending' AND due_at <= ?1)
                  + (SELECT COUNT(*) FROM jobs WHERE status = 'pending' AND due_at <= ?1)",
            [soon],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// The effects that took longest from being recorded to being done: `kind ×attempts
    /// seconds`, slowest first (where a run's time went).
    pub fn slowest_effects(&self, n: usize) -> Vec<String> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT kind, attempt, done_at - created_at FROM effects
                 WHERE status = 'done' ORDER BY 3 DESC LIMIT ?1",
            )
            .unwrap();
        stmt.query_map([n as i64], |r| {
            Ok(format!(
                "{} ×{} {:.1} s",
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)? as f64 / 1000.0
            ))
        })
        .unwrap()
        .filter_map(Result::ok)
        .collect()
    }

    /// Keep what it logged as `target/tmp/load-<name>-bot.log` (the scenario's directory is
    /// removed at its end); the path.
    pub fn keep_log(&self, name: &str) -> PathBuf {
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("load-{name}-bot.log"));
        let _ = std::fs::copy(&self.log, &kept);
        kept
    }

    /// The last lines it logged, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `program` as a command, run under the tool the environment variable `var` names, if any
/// (`valgrind --tool=callgrind`, `heaptrack -o /tmp/x`: its words, then the program).
pub fn wrapped(var: &str, program: &Path) -> Command {
    let wrapper = std::env::var(var).unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    match words.next() {
        Some(tool) => {
            let mut c = Command::new(tool);
            c.args(words).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Every URL the bot uses points at the stand-ins: Slack, PagerDuty and every AWS service
/// (ElastiCache, STS, Application Auto Scaling) at the simulator.
fn serve_env(services: &Services) -> Vec<(String, String)> {
    [
        ("SLACK_BOT_TOKEN", TOKEN.to_string()),
        ("SLACK_SIGNING_SECRET", SIGNING_SECRET.to_string()),
        (
            "PAGERDUTY_ROUTING_KEY",
            FakePagerDuty::EXAMPLE_ROUTING_KEY.to_string(),
        ),
        ("ALARM_API_KEY", ALARM_KEY.to_string()),
        ("SLACK_API_URL", services.slack.base_url()),
        ("PAGERDUTY_EVENTS_URL", services.pd.url()),
        ("AWS_ENDPOINT_URL", services.sim.endpoint()),
        ("AWS_ENDPOINT_URL_ELASTICACHE", services.sim.endpoint()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "AKIDTESTONLY".to_string()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "test-secret-access-key".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A plain connection to a PostgreSQL database on loopback (`sslmode=disable`), for reading
/// what the bots wrote.
pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the bots' database: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
