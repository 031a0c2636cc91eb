//! Durable state in PostgreSQL, shared by any number of replicas.
//!
//! The same tables and guarantees as the SQLite store, enforced by the database instead of one
//! writer: a unique partial index keeps one active run per group, a run is changed under its
//! row lock (`SELECT … FOR UPDATE`), and alarm deliveries, replayed requests and notice windows
//! are deduplicated by their keys. What differs is who executes the outbox: each replica claims
//! the effects and jobs it runs (`claimed_by`, `claimed_until`) in a short transaction under an
//! advisory lock, with `FOR UPDATE SKIP LOCKED` so it never waits on another's write. A claim
//! lasts one lease and is renewed while the work goes on; a replica that dies loses its claims
//! when their lease runs out and another takes the work over (the effects are idempotent:
//! describe before create or modify, message metadata before posting). A run's lane with an
//! effect claimed elsewhere is left alone, so a run's messages stay in order across replicas.
//!
//! Migrations are numbered and applied at start, in one transaction under an advisory lock, so
//! replicas starting together apply each once; a database newer than this build is refused.
//!
//! This module knows how to store a run, not what a run should do.

use std::path::PathBuf;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::domain::{MessageTs, ReplicationGroupId, RunId, Secret, Timestamp};
use crate::workflow::effect::Effect;
use crate::workflow::machine::Submitted;
use crate::workflow::ports::{
    AlarmRecord, AuditEntry, BoxFuture, Busy, Change, Claim, Created, Decide, Decided, DueJobs,
    EffectId, NewJob, NoticeSeen, PendingEffect, PendingJob, Pruned, Retention, Store, StoreError,
    WindowedNotice,
};
use crate::workflow::run::{Progress, Run};

use super::{from_json, parse_run_id, to_json};

/// How the PostgreSQL store connects and claims work.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// How long a claim on an effect or a job lasts unless renewed.
    pub lease: Duration,
    /// Connections in this replica's pool.
    pub pool_size: usize,
    /// Extra CA certificates (PEM) trusted for TLS instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            lease: Duration::from_secs(30),
            pool_size: 16,
            ca_file: None,
        }
    }
}

/// The PostgreSQL store. Cheap to clone and share.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// This replica's name on its claims (unique per process start).
    owner: String,
    lease: Duration,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("owner", &self.owner)
            .finish()
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(describe(&e))
}

/// A PostgreSQL error with its server message (the driver's own text is often just "db
/// error"). It never holds the connection string.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", e, db.message(), db.code().code()),
        None => {
            // The causes too (refused, timed out, TLS): the driver's own text is often generic.
            let mut out = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let text = s.to_string();
                if !out.contains(&text) {
                    out.push_str(": ");
                    out.push_str(&text);
                }
                source = s.source();
            }
            out
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => StoreError::Backend(format!("no database connection: {other}")),
    }
}

/// Transaction-level advisory lock keys (arbitrary, fixed): migrations, claiming effects,
/// claiming jobs.
const LOCK_MIGRATE: i64 = 0x7265_6469_735f_6d67;
const LOCK_CLAIM_EFFECTS: i64 = 0x7265_6469_735f_6566;
const LOCK_CLAIM_JOBS: i64 = 0x7265_6469_735f_6a62;

/// The schema, one step per version. Never edit a step that has shipped: add one.
const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite store has, plus claims.
    r#"
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        group_id    TEXT NOT NULL,
        active      BOOLEAN NOT NULL,
        state       TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL,
        body        TEXT NOT NULL,
        seq         BIGSERIAL NOT NULL
    );
    CREATE UNIQUE INDEX runs_one_active_per_group ON runs(group_id) WHERE active;
    CREATE INDEX runs_by_group ON runs(group_id, created_at);
    CREATE INDEX runs_by_created ON runs(created_at, seq);
    CREATE INDEX runs_finished ON runs(active, updated_at);

    CREATE TABLE audit (
        id      BIGSERIAL PRIMARY KEY,
        run_id  TEXT NOT NULL,
        at      BIGINT NOT NULL,
        actor   TEXT NOT NULL,
        kind    TEXT NOT NULL,
        detail  TEXT NOT NULL
    );
    CREATE INDEX audit_by_run ON audit(run_id, id);

    CREATE TABLE effects (
        id            BIGSERIAL PRIMARY KEY,
        run_id        TEXT NOT NULL,
        kind          TEXT NOT NULL,
        body          TEXT NOT NULL,
        due_at        BIGINT NOT NULL,
        attempt       INTEGER NOT NULL DEFAULT 1,
        status        TEXT NOT NULL DEFAULT 'pending',
        created_at    BIGINT NOT NULL,
        done_at       BIGINT,
        lane          TEXT NOT NULL,
        started_at    BIGINT,
        claimed_by    TEXT,
        claimed_until BIGINT
    );
    CREATE INDEX effects_pending ON effects(run_id, lane, due_at, id) WHERE status = 'pending';
    CREATE INDEX effects_done ON effects(done_at) WHERE status <> 'pending';

    CREATE TABLE alarms (
        delivery_id TEXT PRIMARY KEY,
        at          BIGINT NOT NULL,
        name        TEXT NOT NULL,
        state       TEXT NOT NULL,
        group_id    TEXT,
        outcome     TEXT NOT NULL,
        seq         BIGSERIAL NOT NULL
    );
    CREATE INDEX alarms_by_time ON alarms(at, seq);

    CREATE TABLE jobs (
        id            BIGSERIAL PRIMARY KEY,
        kind          TEXT NOT NULL,
        body          TEXT NOT NULL,
        due_at        BIGINT NOT NULL,
        attempt       INTEGER NOT NULL DEFAULT 1,
        status        TEXT NOT NULL DEFAULT 'pending',
        created_at    BIGINT NOT NULL,
        started_at    BIGINT,
        done_at       BIGINT,
        claimed_by    TEXT,
        claimed_until BIGINT
    );
    CREATE INDEX jobs_pending ON jobs(due_at, id) WHERE status = 'pending';

    CREATE TABLE notice_windows (
        key             TEXT PRIMARY KEY,
        opened_at       BIGINT NOT NULL,
        count           INTEGER NOT NULL,
        last_at         BIGINT NOT NULL,
        ts              TEXT,
        update_pending  BOOLEAN NOT NULL DEFAULT FALSE
    );

    CREATE TABLE requests_seen (
        key TEXT PRIMARY KEY,
        at  BIGINT NOT NULL
    );
    CREATE INDEX requests_seen_by_time ON requests_seen(at);
    "#,
    // 2: periodic work taken in turns by the replicas.
    r#"
    CREATE TABLE turns (
        name    TEXT PRIMARY KEY,
        next_at BIGINT NOT NULL
    );
    "#,
];

impl PgStore {
    /// Connect (a pool of `pool_size`), check the server answers, and bring the schema up to
    /// date. `password`, when given, replaces the one in `url`.
    pub async fn connect(
        url: &str,
        password: Option<&Secret>,
        options: PgOptions,
    ) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("not a PostgreSQL connection string: {e}")))?;
        if let Some(p) = password {
            config.password(p.expose());
        }
        // The driver's default, `prefer`, falls back to clear text when the other end says it
        // has no TLS: anyone on the path could say so. Off loopback, TLS unless the URL says.
        if !url.contains("sslmode") && !is_loopback(&config) {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        if config.get_application_name().is_none() {
            config.application_name("redis-autoscaler");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let tls = tls(options.ca_file.as_deref())?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            // A burst (an alarm storm) waits for a connection rather than failing at once.
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Backend(format!("building the connection pool: {e}")))?;
        let store = PgStore {
            pool,
            owner: owner_name(),
            lease: options.lease,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The name this replica's claims carry.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The schema version this build writes.
    pub fn schema_version() -> i32 {
        MIGRATIONS.len() as i32
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Apply the migrations the database hasn't seen, in one transaction under an advisory
    /// lock: replicas starting together apply each once.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
            .await
            .map_err(pg)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(pg)?;
        let row = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(pg)?;
        let have: i32 = row.get(0);
        let known = Self::schema_version();
        if have > known {
            return Err(StoreError::Backend(format!(
                "the database schema is at version {have}, newer than this build knows ({known}): \
                 run a release at least as new as the one that migrated it"
            )));
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(have as usize) {
            let version = i as i32 + 1;
            tx.batch_execute(step).await.map_err(pg)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(pg)?;
            tracing::info!(version, "database schema migrated");
        }
        tx.commit().await.map_err(pg)
    }

    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    async fn query_runs(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Run>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(sql, params).await.map_err(pg)?;
        rows.iter()
            .map(|r| from_json(r.get::<_, &str>(0)))
            .collect()
    }

    async fn create_run_inner(&self, run: &Run, change: &Change) -> Result<Created, StoreError> {
        let body = to_json(run)?;
        // The active run found by a lost race may finish before it is read: try again.
        for _ in 0..5 {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let n = tx
                .execute(
                    "INSERT INTO runs (id, group_id, active, state, created_at, updated_at, body)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    &[
                        &run.id.as_str(),
                        &run.group.as_str(),
                        &!run.is_finished(),
                        &run.state_name(),
                        &run.created_at.as_millis(),
                        &run.updated_at.as_millis(),
                        &body,
                    ],
                )
                .await
                .map_err(pg)?;
            if n == 1 {
                write_change(&tx, &run.id, change, run.updated_at).await?;
                tx.commit().await.map_err(pg)?;
                return Ok(Created::Created);
            }
            let active = tx
                .query_opt(
                    "SELECT id FROM runs WHERE group_id = $1 AND active",
                    &[&run.group.as_str()],
                )
                .await
                .map_err(pg)?;
            if let Some(row) = active {
                return Ok(Created::AlreadyActive(parse_run_id(row.get(0))?));
            }
        }
        Err(StoreError::Backend(
            "the group's active run kept changing while a run was being created".into(),
        ))
    }

    async fn update_run_inner(
        &self,
        id: &RunId,
        completed: Option<EffectId>,
        now: Timestamp,
        decide: Decide,
    ) -> Result<Decided, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                "SELECT body FROM runs WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Err(StoreError::RunNotFound(id.clone()));
        };
        let run: Run = from_json(row.get(0))?;
        if let Some(effect) = completed {
            // A replica whose claim ran out may finish an effect another replica has finished
            // meanwhile: its result was told once already. (A dropped effect's result is
            // still told, as with one replica: the machine knows what a late result means.)
            let status = tx
                .query_opt(
                    "SELECT status FROM effects WHERE id = $1 FOR UPDATE",
                    &[&effect],
                )
                .await
                .map_err(pg)?;
            if status.is_some_and(|r| r.get::<_, &str>(0) == "done") {
                return Ok(Decided {
                    next: None,
                    change: Change::default(),
                    submitted: Submitted::Ignored(
                        "this effect's result was already recorded (by another replica)".into(),
                    ),
                    summary: String::new(),
                    progress: Progress::default(),
                });
            }
        }
        let decided = decide(&run);
        if let Some(next) = &decided.next {
            tx.execute(
                "UPDATE runs SET active = $2, state = $3, updated_at = $4, body = $5 WHERE id = $1",
                &[
                    &id.as_str(),
                    &!next.is_finished(),
                    &next.state_name(),
                    &next.updated_at.as_millis(),
                    &to_json(next)?,
                ],
            )
            .await
            .map_err(pg)?;
        }
        if let Some(effect) = completed {
            tx.execute(
                "UPDATE effects SET status = 'done', done_at = $2, claimed_by = NULL
                 WHERE id = $1 AND status = 'pending'",
                &[&effect, &now.as_millis()],
            )
            .await
            .map_err(pg)?;
        }
        write_change(&tx, id, &decided.change, now).await?;
        tx.commit().await.map_err(pg)?;
        Ok(decided)
    }

    /// Claim each due lane's head effect not in `busy` for this replica.
    async fn due_effects_inner(
        &self,
        now: Timestamp,
        busy: &[Busy],
        limit: usize,
    ) -> Result<Vec<PendingEffect>, StoreError> {
        let (now, me) = (now.as_millis(), self.owner.as_str());
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // One replica claims at a time, so each sees every claim committed before its own.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_CLAIM_EFFECTS])
            .await
            .map_err(pg)?;
        let sql = format!(
            "{HEADS}
             SELECT h.id, h.run_id, h.lane FROM heads h
             WHERE h.due_at <= $2
               AND NOT EXISTS (SELECT 1 FROM effects o
                               WHERE o.run_id = h.run_id AND o.lane = h.lane
                                 AND o.status = 'pending' AND o.claimed_by IS NOT NULL
                                 AND o.claimed_by <> $1 AND o.claimed_until >= $2)
             ORDER BY h.due_at, h.id"
        );
        let rows = tx.query(&sql, &[&me, &now]).await.map_err(pg)?;
        let mut ids: Vec<i64> = Vec::new();
        for r in &rows {
            let (run, lane): (&str, &str) = (r.get(1), r.get(2));
            if busy
                .iter()
                .any(|(b, l)| b.as_str() == run && l.as_str() == lane)
            {
                continue;
            }
            ids.push(r.get(0));
            if ids.len() >= limit {
                break;
            }
        }
        if ids.is_empty() {
            tx.commit().await.map_err(pg)?;
            return Ok(Vec::new());
        }
        let until = now + self.lease_ms();
        let claimed = tx
            .query(
                "WITH free AS (
                     SELECT id FROM effects WHERE id = ANY($1) AND status = 'pending'
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE effects e SET claimed_by = $2, claimed_until = $3
                 FROM free WHERE e.id = free.id
                 RETURNING e.id, e.run_id, e.body, e.due_at, e.attempt, e.created_at",
                &[&ids, &me, &until],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        let mut out = claimed
            .iter()
            .map(row_to_pending)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|p| (p.due, p.id));
        Ok(out)
    }

    async fn next_due_inner(&self, busy: &[Busy]) -> Result<Option<Timestamp>, StoreError> {
        let client = self.client().await?;
        // A lane held by another replica's claim comes free when that claim runs out (one
        // already run out gives a time past, so the dispatcher looks at once).
        let sql = format!(
            "{HEADS}
             SELECT h.run_id, h.lane, GREATEST(h.due_at, COALESCE(
                 (SELECT MAX(o.claimed_until) + 1 FROM effects o
                  WHERE o.run_id = h.run_id AND o.lane = h.lane AND o.status = 'pending'
                    AND o.claimed_by IS NOT NULL AND o.claimed_by <> $1), 0))
             FROM heads h"
        );
        let rows = client
            .query(&sql, &[&self.owner.as_str()])
            .await
            .map_err(pg)?;
        let mut next: Option<i64> = None;
        for r in &rows {
            let (run, lane, at): (&str, &str, i64) = (r.get(0), r.get(1), r.get(2));
            if busy
                .iter()
                .any(|(b, l)| b.as_str() == run && l.as_str() == lane)
            {
                continue;
            }
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        Ok(next.map(Timestamp::from_millis))
    }

    async fn due_jobs_inner(
        &self,
        now: Timestamp,
        busy: &[i64],
        limit: usize,
    ) -> Result<DueJobs, StoreError> {
        let (now, me) = (now.as_millis(), self.owner.as_str());
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_CLAIM_JOBS])
            .await
            .map_err(pg)?;
        let limit = limit as i64;
        let claimed = tx
            .query(
                "WITH free AS (
                     SELECT id FROM jobs
                     WHERE status = 'pending' AND due_at <= $1 AND NOT (id = ANY($2))
                       AND (claimed_by IS NULL OR claimed_by = $3 OR claimed_until < $1)
                     ORDER BY due_at, id LIMIT $4
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE jobs j SET claimed_by = $3, claimed_until = $5
                 FROM free WHERE j.id = free.id
                 RETURNING j.id, j.kind, j.body, j.due_at, j.attempt",
                &[&now, &busy, &me, &limit, &(now + self.lease_ms())],
            )
            .await
            .map_err(pg)?;
        let taken: Vec<i64> = claimed.iter().map(|r| r.get(0)).collect();
        // The next one: due later, or claimed elsewhere until its claim runs out.
        let next = tx
            .query_one(
                "SELECT MIN(CASE WHEN claimed_by IS NOT NULL AND claimed_by <> $3
                                      AND claimed_until >= $1
                                 THEN GREATEST(due_at, claimed_until + 1) ELSE due_at END)
                 FROM jobs WHERE status = 'pending' AND NOT (id = ANY($2))",
                &[&now, &[busy, &taken].concat(), &me],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        let mut due: Vec<PendingJob> = claimed
            .iter()
            .map(|r| PendingJob {
                id: r.get(0),
                kind: r.get(1),
                body: r.get(2),
                due: Timestamp::from_millis(r.get(3)),
                attempt: r.get::<_, i32>(4).max(1) as u32,
            })
            .collect();
        due.sort_by_key(|j| (j.due, j.id));
        let next: Option<i64> = next.get(0);
        Ok((due, next.map(Timestamp::from_millis)))
    }

    /// Note that an effect or job is being executed; whether an earlier execution had started it.
    async fn mark_started_in(
        &self,
        table: &'static str,
        id: i64,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let before = tx
            .query_opt(
                &format!("SELECT started_at FROM {table} WHERE id = $1 FOR UPDATE"),
                &[&id],
            )
            .await
            .map_err(pg)?
            .and_then(|r| r.get::<_, Option<i64>>(0));
        if before.is_none() {
            tx.execute(
                &format!("UPDATE {table} SET started_at = $2 WHERE id = $1"),
                &[&id, &now.as_millis()],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(before.is_some())
    }

    async fn finish_effect(
        &self,
        run: &RunId,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        audit: &[AuditEntry],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(sql, params).await.map_err(pg)?;
        for a in audit {
            insert_audit(&tx, run, a).await?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn record_alarm_inner(
        &self,
        record: &AlarmRecord,
        notice: Option<&WindowedNotice>,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let n = insert_alarm(&tx, record).await?;
        if n > 0
            && let Some(notice) = notice
        {
            count_notice(&tx, notice).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(n > 0)
    }

    async fn prune_inner(
        &self,
        now: Timestamp,
        retention: Retention,
        batch: usize,
    ) -> Result<Pruned, StoreError> {
        let cutoff = |d: Duration| now.as_millis() - d.as_millis() as i64;
        let (runs_before, records_before) = (cutoff(retention.runs), cutoff(retention.records));
        let limit = batch as i64;
        let client = self.client().await?;
        let delete = async |sql: &str, before: Option<i64>| -> Result<usize, StoreError> {
            let n = match before {
                Some(b) => client.execute(sql, &[&b, &limit]).await,
                None => client.execute(sql, &[&limit]).await,
            };
            Ok(n.map_err(pg)? as usize)
        };
        let mut out = Pruned {
            effects: delete(
                "DELETE FROM effects WHERE id IN (SELECT id FROM effects
                 WHERE status <> 'pending' AND COALESCE(done_at, created_at) < $1 LIMIT $2)",
                Some(records_before),
            )
            .await?,
            jobs: delete(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs
                 WHERE status <> 'pending' AND COALESCE(done_at, created_at) < $1 LIMIT $2)",
                Some(records_before),
            )
            .await?,
            alarms: delete(
                "DELETE FROM alarms WHERE delivery_id IN (SELECT delivery_id FROM alarms
                 WHERE at < $1 LIMIT $2)",
                Some(records_before),
            )
            .await?,
            notices: delete(
                "DELETE FROM notice_windows WHERE key IN (SELECT key FROM notice_windows
                 WHERE last_at < $1 LIMIT $2)",
                Some(records_before),
            )
            .await?,
            ..Pruned::default()
        };
        // A finished run with nothing left to do goes with its audit trail and done effects;
        // the run's row first, the orphans after, in batches.
        out.runs = delete(
            "DELETE FROM runs WHERE id IN (SELECT r.id FROM runs r
             WHERE NOT r.active AND r.updated_at < $1
               AND NOT EXISTS (SELECT 1 FROM effects e
                               WHERE e.run_id = r.id AND e.status = 'pending')
             LIMIT $2)",
            Some(runs_before),
        )
        .await?;
        out.audit = delete(
            "DELETE FROM audit WHERE id IN (SELECT a.id FROM audit a
             WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = a.run_id) LIMIT $1)",
            None,
        )
        .await?;
        out.effects += delete(
            "DELETE FROM effects WHERE id IN (SELECT e.id FROM effects e
             WHERE e.status <> 'pending'
               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = e.run_id) LIMIT $1)",
            None,
        )
        .await?;
        Ok(out)
    }
}

/// Each run's lane's next eligible effect (`$1`: this replica): work effects, and a run's
/// earliest pending Slack effect (messages go out strictly in the order they were decided).
const HEADS: &str = "
    WITH eligible AS (
        SELECT e.id, e.run_id, e.lane, e.due_at FROM effects e
        WHERE e.status = 'pending'
          AND NOT (e.lane = 'slack' AND EXISTS (
              SELECT 1 FROM effects p
              WHERE p.run_id = e.run_id AND p.status = 'pending' AND p.lane = 'slack'
                AND p.id < e.id))
    ), heads AS (
        SELECT DISTINCT ON (run_id, lane) id, run_id, lane, due_at FROM eligible
        ORDER BY run_id, lane, due_at, id
    )";

/// An alarm record from `SELECT delivery_id, name, state, group_id, outcome, at`.
fn alarm_from(r: &tokio_postgres::Row) -> AlarmRecord {
    AlarmRecord {
        delivery_id: r.get(0),
        name: r.get(1),
        state: r.get(2),
        group: r.get(3),
        outcome: r.get(4),
        at: Timestamp::from_millis(r.get(5)),
    }
}

impl Store for PgStore {
    fn create_run<'a>(
        &'a self,
        run: &'a Run,
        change: Change,
    ) -> BoxFuture<'a, Result<Created, StoreError>> {
        Box::pin(async move { self.create_run_inner(run, &change).await })
    }

    fn update_run<'a>(
        &'a self,
        id: &'a RunId,
        completed: Option<EffectId>,
        now: Timestamp,
        decide: Decide,
    ) -> BoxFuture<'a, Result<Decided, StoreError>> {
        Box::pin(self.update_run_inner(id, completed, now, decide))
    }

    fn run<'a>(&'a self, id: &'a RunId) -> BoxFuture<'a, Result<Option<Run>, StoreError>> {
        Box::pin(async move {
            let runs = self
                .query_runs("SELECT body FROM runs WHERE id = $1", &[&id.as_str()])
                .await?;
            Ok(runs.into_iter().next())
        })
    }

    fn audit_trail<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT at, actor, kind, detail FROM audit WHERE run_id = $1 ORDER BY id",
                    &[&id.as_str()],
                )
                .await
                .map_err(pg)?;
            Ok(rows
                .iter()
                .map(|r| AuditEntry {
                    at: Timestamp::from_millis(r.get(0)),
                    actor: r.get(1),
                    kind: r.get(2),
                    detail: r.get(3),
                })
                .collect())
        })
    }

    fn active_run<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Option<Run>, StoreError>> {
        Box::pin(async move {
            let runs = self
                .query_runs(
                    "SELECT body FROM runs WHERE group_id = $1 AND active",
                    &[&group.as_str()],
                )
                .await?;
            Ok(runs.into_iter().next())
        })
    }

    fn recent_runs<'a>(
        &'a self,
        group: Option<&'a ReplicationGroupId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Run>, StoreError>> {
        Box::pin(async move {
            let (group, limit) = (group.map(|g| g.as_str()), limit as i64);
            self.query_runs(
                "SELECT body FROM runs WHERE ($1::TEXT IS NULL OR group_id = $1)
                 ORDER BY created_at DESC, seq DESC LIMIT $2",
                &[&group, &limit],
            )
            .await
        })
    }

    fn last_success<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Option<Run>, StoreError>> {
        Box::pin(async move {
            let runs = self
                .query_runs(
                    "SELECT body FROM runs WHERE group_id = $1 AND state = 'succeeded'
                     ORDER BY updated_at DESC LIMIT 1",
                    &[&group.as_str()],
                )
                .await?;
            Ok(runs.into_iter().next())
        })
    }

    fn due_effects<'a>(
        &'a self,
        now: Timestamp,
        busy: &'a [Busy],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PendingEffect>, StoreError>> {
        Box::pin(self.due_effects_inner(now, busy, limit))
    }

    fn next_due<'a>(
        &'a self,
        busy: &'a [Busy],
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        Box::pin(self.next_due_inner(busy))
    }

    fn mark_started(
        &self,
        effect: EffectId,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.mark_started_in("effects", effect, now))
    }

    fn has_later_pending<'a>(
        &'a self,
        run: &'a RunId,
        effect: EffectId,
        kind: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM effects WHERE run_id = $1 AND status = 'pending'
                                    AND kind = $2 AND id > $3)",
                    &[&run.as_str(), &kind, &effect],
                )
                .await
                .map_err(pg)?;
            Ok(row.get(0))
        })
    }

    fn complete_effect<'a>(
        &'a self,
        effect: EffectId,
        run: &'a RunId,
        now: Timestamp,
        audit: Vec<AuditEntry>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let sql = "UPDATE effects SET status = 'done', done_at = $2, claimed_by = NULL
                       WHERE id = $1 AND status = 'pending'";
            self.finish_effect(run, sql, &[&effect, &now.as_millis()], &audit)
                .await
        })
    }

    fn retry_effect<'a>(
        &'a self,
        effect: EffectId,
        run: &'a RunId,
        due: Timestamp,
        attempt: u32,
        audit: Vec<AuditEntry>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // Only while this replica holds it: a lost claim's retry is the new holder's call.
            let sql = "UPDATE effects SET due_at = $2, attempt = $3, claimed_by = NULL
                       WHERE id = $1 AND status = 'pending' AND claimed_by = $4";
            let attempt = attempt as i32;
            let params: [&(dyn ToSql + Sync); 4] =
                [&effect, &due.as_millis(), &attempt, &self.owner];
            self.finish_effect(run, sql, &params, &audit).await
        })
    }

    fn pending_count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM effects WHERE status = 'pending')
                          + (SELECT COUNT(*) FROM jobs WHERE status = 'pending')",
                    &[],
                )
                .await
                .map_err(pg)?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn pending_effects<'a>(
        &'a self,
        run: Option<&'a RunId>,
    ) -> BoxFuture<'a, Result<Vec<PendingEffect>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT id, run_id, body, due_at, attempt, created_at FROM effects
                     WHERE status = 'pending' AND ($1::TEXT IS NULL OR run_id = $1)
                     ORDER BY due_at, id",
                    &[&run.map(|r| r.as_str())],
                )
                .await
                .map_err(pg)?;
            rows.iter().map(row_to_pending).collect()
        })
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    fn renew_claim(&self, claim: Claim, now: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let (table, id) = match claim {
                Claim::Effect(id) => ("effects", id),
                Claim::Job(id) => ("jobs", id),
            };
            let client = self.client().await?;
            // Never wait on the row's lock: the one holding it is this replica's own work
            // finishing the effect (or another replica that took it over).
            let n = client
                .execute(
                    &format!(
                        "WITH mine AS (
                             SELECT id FROM {table}
                             WHERE id = $1 AND claimed_by = $2 AND status = 'pending'
                             FOR UPDATE SKIP LOCKED
                         )
                         UPDATE {table} t SET claimed_until = $3 FROM mine WHERE t.id = mine.id"
                    ),
                    &[&id, &self.owner, &(now.as_millis() + self.lease_ms())],
                )
                .await
                .map_err(pg)?;
            if n == 1 {
                return Ok(true);
            }
            // Locked, or not ours any more: a plain read says which without waiting.
            let row = client
                .query_opt(
                    &format!(
                        "SELECT claimed_by = $2 AND status = 'pending' FROM {table} WHERE id = $1"
                    ),
                    &[&id, &self.owner],
                )
                .await
                .map_err(pg)?;
            Ok(row.is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true)))
        })
    }

    fn take_turn<'a>(
        &'a self,
        name: &'a str,
        every: Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let (now, next) = (now.as_millis(), now.as_millis() + every.as_millis() as i64);
            let client = self.client().await?;
            let n = client
                .execute(
                    "INSERT INTO turns (name, next_at) VALUES ($1, $3)
                     ON CONFLICT (name) DO UPDATE SET next_at = EXCLUDED.next_at
                     WHERE turns.next_at <= $2",
                    &[&name, &now, &next],
                )
                .await
                .map_err(pg)?;
            Ok(n == 1)
        })
    }

    fn turn_due<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_opt("SELECT next_at FROM turns WHERE name = $1", &[&name])
                .await
                .map_err(pg)?;
            Ok(row.map(|r| Timestamp::from_millis(r.get(0))))
        })
    }

    fn enqueue_job<'a>(&'a self, job: NewJob) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            insert_job(&client, &job, job.due).await
        })
    }

    fn due_jobs<'a>(
        &'a self,
        now: Timestamp,
        busy: &'a [i64],
        limit: usize,
    ) -> BoxFuture<'a, Result<DueJobs, StoreError>> {
        Box::pin(self.due_jobs_inner(now, busy, limit))
    }

    fn start_job(&self, id: i64, now: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.mark_started_in("jobs", id, now))
    }

    fn complete_job(&self, id: i64, now: Timestamp) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE jobs SET status = 'done', done_at = $2, claimed_by = NULL
                     WHERE id = $1 AND status = 'pending'",
                    &[&id, &now.as_millis()],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn retry_job(
        &self,
        id: i64,
        due: Timestamp,
        attempt: u32,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute(
                    // Only while this replica holds it: a lost claim's retry is the new
                    // holder's call.
                    "UPDATE jobs SET due_at = $2, attempt = $3, claimed_by = NULL
                     WHERE id = $1 AND status = 'pending' AND claimed_by = $4",
                    &[&id, &due.as_millis(), &(attempt as i32), &self.owner],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn recent_alarms(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AlarmRecord>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT delivery_id, name, state, group_id, outcome, at FROM alarms
                     ORDER BY at DESC, seq DESC LIMIT $1",
                    &[&(limit as i64)],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(alarm_from).collect())
        })
    }

    fn last_alarm<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Option<AlarmRecord>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT delivery_id, name, state, group_id, outcome, at FROM alarms
                     WHERE group_id = $1 AND state = 'ALARM' AND at >= $2
                     ORDER BY at DESC, seq DESC LIMIT 1",
                    &[&group.as_str(), &since.as_millis()],
                )
                .await
                .map_err(pg)?;
            Ok(row.as_ref().map(alarm_from))
        })
    }

    fn alarm_seen<'a>(&'a self, delivery_id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM alarms WHERE delivery_id = $1)",
                    &[&delivery_id],
                )
                .await
                .map_err(pg)?;
            Ok(row.get(0))
        })
    }

    fn record_alarm(
        &self,
        record: AlarmRecord,
        notice: Option<WindowedNotice>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move { self.record_alarm_inner(&record, notice.as_ref()).await })
    }

    fn notice_seen<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<NoticeSeen>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            notice_row(&client, key, false).await
        })
    }

    fn notice_posted<'a>(
        &'a self,
        key: &'a str,
        ts: &'a MessageTs,
        update: NewJob,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let pending = tx
                .query_opt(
                    "UPDATE notice_windows SET ts = $2 WHERE key = $1 RETURNING update_pending",
                    &[&key, &ts.as_str()],
                )
                .await
                .map_err(pg)?;
            if pending.is_some_and(|r| r.get::<_, bool>(0)) {
                insert_job(&tx, &update, update.due).await?;
            }
            tx.commit().await.map_err(pg)
        })
    }

    fn take_notice_update<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<NoticeSeen>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let seen = notice_row(&tx, key, true).await?;
            if seen.as_ref().is_some_and(|s| s.ts.is_some()) {
                tx.execute(
                    "UPDATE notice_windows SET update_pending = FALSE WHERE key = $1",
                    &[&key],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(seen)
        })
    }

    fn remember_request<'a>(
        &'a self,
        key: &'a str,
        now: Timestamp,
        keep: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let cutoff = now.as_millis() - keep.as_millis() as i64;
            let client = self.client().await?;
            client
                .execute("DELETE FROM requests_seen WHERE at < $1", &[&cutoff])
                .await
                .map_err(pg)?;
            let n = client
                .execute(
                    "INSERT INTO requests_seen (key, at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&key, &now.as_millis()],
                )
                .await
                .map_err(pg)?;
            Ok(n > 0)
        })
    }

    fn forget_request<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute("DELETE FROM requests_seen WHERE key = $1", &[&key])
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn check_writable(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let probe = async {
                let client = self.client().await?;
                let row = client
                    .query_one(
                        "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')",
                        &[],
                    )
                    .await
                    .map_err(pg)?;
                let (standby, read_only): (bool, &str) = (row.get(0), row.get(1));
                if standby || read_only == "on" {
                    return Err(StoreError::Backend(
                        "the database is read-only (a standby?)".into(),
                    ));
                }
                Ok(())
            };
            tokio::time::timeout(Duration::from_millis(1500), probe)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Backend(
                        "the database did not answer within 1.5 s".into(),
                    ))
                })
        })
    }

    fn prune(
        &self,
        now: Timestamp,
        retention: Retention,
        batch: usize,
    ) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        Box::pin(self.prune_inner(now, retention, batch))
    }
}

async fn write_change(
    tx: &impl GenericClient,
    run_id: &RunId,
    change: &Change,
    now: Timestamp,
) -> Result<(), StoreError> {
    if change.drop_pending_work {
        let rows = tx
            .query(
                "SELECT id, body FROM effects WHERE run_id = $1 AND status = 'pending'",
                &[&run_id.as_str()],
            )
            .await
            .map_err(pg)?;
        let mut drop: Vec<i64> = Vec::new();
        for r in &rows {
            let effect: Effect = from_json(r.get(1))?;
            if effect.is_droppable_work() {
                drop.push(r.get(0));
            }
        }
        if !drop.is_empty() {
            tx.execute(
                "UPDATE effects SET status = 'dropped', done_at = $2, claimed_by = NULL
                 WHERE id = ANY($1)",
                &[&drop, &now.as_millis()],
            )
            .await
            .map_err(pg)?;
        }
    }
    for s in &change.effects {
        tx.execute(
            "INSERT INTO effects (run_id, kind, body, due_at, created_at, lane)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &run_id.as_str(),
                &s.effect.name(),
                &to_json(&s.effect)?,
                &s.due.as_millis(),
                &now.as_millis(),
                &s.effect.lane().as_str(),
            ],
        )
        .await
        .map_err(pg)?;
    }
    for a in &change.audit {
        insert_audit(tx, run_id, a).await?;
    }
    if let Some(r) = &change.delivery {
        insert_alarm(tx, r).await?;
    }
    Ok(())
}

async fn insert_audit(
    tx: &impl GenericClient,
    run_id: &RunId,
    a: &AuditEntry,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (run_id, at, actor, kind, detail) VALUES ($1, $2, $3, $4, $5)",
        &[
            &run_id.as_str(),
            &a.at.as_millis(),
            &a.actor,
            &a.kind,
            &a.detail,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

async fn insert_job(
    tx: &impl GenericClient,
    job: &NewJob,
    now: Timestamp,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO jobs (kind, body, due_at, created_at) VALUES ($1, $2, $3, $4)",
        &[&job.kind, &job.body, &job.due.as_millis(), &now.as_millis()],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Log an alarm delivery; 0 if it was logged before.
async fn insert_alarm(tx: &impl GenericClient, r: &AlarmRecord) -> Result<u64, StoreError> {
    tx.execute(
        "INSERT INTO alarms (delivery_id, at, name, state, group_id, outcome)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        &[
            &r.delivery_id,
            &r.at.as_millis(),
            &r.name,
            &r.state,
            &r.group,
            &r.outcome,
        ],
    )
    .await
    .map_err(pg)
}

/// A delivery that leaves a windowed notice: the first of its window posts it; the others count
/// on it, with one update of the posted notice pending at a time. Under the window's row lock,
/// so deliveries on several replicas count once each.
async fn count_notice(tx: &impl GenericClient, n: &WindowedNotice) -> Result<(), StoreError> {
    let now = n.post.due.as_millis();
    tx.execute(
        "INSERT INTO notice_windows (key, opened_at, count, last_at, ts, update_pending)
         VALUES ($1, $2, 0, $2, NULL, FALSE) ON CONFLICT DO NOTHING",
        &[&n.key, &now],
    )
    .await
    .map_err(pg)?;
    let row = tx
        .query_one(
            "SELECT opened_at, update_pending, count FROM notice_windows WHERE key = $1 FOR UPDATE",
            &[&n.key],
        )
        .await
        .map_err(pg)?;
    let (opened, pending, count): (i64, bool, i32) = (row.get(0), row.get(1), row.get(2));
    if count > 0 && now - opened < n.window.as_millis() as i64 {
        tx.execute(
            "UPDATE notice_windows SET count = count + 1, last_at = GREATEST(last_at, $2),
             update_pending = TRUE WHERE key = $1",
            &[&n.key, &now],
        )
        .await
        .map_err(pg)?;
        if !pending {
            insert_job(tx, &n.update, n.update.due).await?;
        }
    } else {
        tx.execute(
            "UPDATE notice_windows SET opened_at = $2, count = 1, last_at = $2, ts = NULL,
             update_pending = FALSE WHERE key = $1",
            &[&n.key, &now],
        )
        .await
        .map_err(pg)?;
        insert_job(tx, &n.post, n.post.due).await?;
    }
    Ok(())
}

async fn notice_row(
    c: &impl GenericClient,
    key: &str,
    lock: bool,
) -> Result<Option<NoticeSeen>, StoreError> {
    let sql = match lock {
        true => {
            "SELECT count, opened_at, last_at, ts FROM notice_windows WHERE key = $1 FOR UPDATE"
        }
        false => "SELECT count, opened_at, last_at, ts FROM notice_windows WHERE key = $1",
    };
    let Some(row) = c.query_opt(sql, &[&key]).await.map_err(pg)? else {
        return Ok(None);
    };
    let (count, first, last, ts): (i32, i64, i64, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if count == 0 {
        return Ok(None);
    }
    super::notice_seen(count.into(), first, last, ts).map(Some)
}

fn row_to_pending(r: &Row) -> Result<PendingEffect, StoreError> {
    Ok(PendingEffect {
        id: r.get(0),
        run_id: parse_run_id(r.get(1))?,
        effect: from_json(r.get(2))?,
        due: Timestamp::from_millis(r.get(3)),
        attempt: r.get::<_, i32>(4).max(1) as u32,
        created: Timestamp::from_millis(r.get(5)),
    })
}

/// Does `config` name only this machine (a Unix socket, `localhost`, a loopback address)?
fn is_loopback(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    })
}

/// A name for this process's claims: the host (for whoever reads the table), the pid and a
/// random part (a restarted process never mistakes its predecessor's claims for its own).
fn owner_name() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(40)
        .collect();
    format!("{host}/{}/{}", std::process::id(), hex::encode(bytes))
}

/// TLS for `sslmode=prefer|require`: rustls (ring), trusting `ca_file`'s certificates when
/// given (e.g. the RDS bundle), the system's otherwise.
fn tls(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match ca_file {
        Some(path) => {
            use rustls_pki_types::CertificateDer;
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                StoreError::Backend(format!("reading CA certificates {}: {e}", path.display()))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    StoreError::Backend(format!("reading CA certificates {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    StoreError::Backend(format!("a CA certificate in {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(StoreError::Backend(format!(
                    "no CA certificate in {}",
                    path.display()
                )));
            }
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::ConfigVerifierExt;
            rustls::ClientConfig::with_platform_verifier()
                .map_err(|e| StoreError::Backend(format!("the system's CA certificates: {e}")))?
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Create a database (tests, tools). `admin_url` connects to an existing one. Creating many
/// at once can meet a template database in use: that is tried again for a while.
pub async fn create_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    check_name(name)?;
    let client = admin(admin_url).await?;
    let mut tries = 0;
    loop {
        let created = client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await;
        match created {
            Err(e)
                if tries < 20
                    && e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            other => return other.map_err(pg),
        }
    }
}

/// Drop a database, forcing out any session still in it (tests, tools).
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    check_name(name)?;
    let client = admin(admin_url).await?;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .map_err(pg)
}

/// The URL of database `name` on the server `admin_url` points at.
pub fn database_url(admin_url: &str, name: &str) -> Result<String, StoreError> {
    check_name(name)?;
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    Ok(match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    })
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    match ok {
        true => Ok(()),
        false => Err(StoreError::Backend(format!(
            "`{name}` is not a database name this tool creates ([a-z0-9_], at most 63)"
        ))),
    }
}

async fn admin(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Backend(format!("not a PostgreSQL connection string: {e}")))?;
    let (client, connection) = config.connect(tls(None)?).await.map_err(pg)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{decided, first_effects, run};
    use crate::workflow::effect::{Lane, Scheduled};

    /// A database this test created on the local server (`TEST_DATABASE_URL`), dropped when
    /// the test ends. Without a server the test is skipped, unless
    /// `REDIS_AUTOSCALER_REQUIRE_POSTGRES` is set (CI sets it): then it fails.
    pub(crate) struct TestDb {
        admin: String,
        name: String,
        pub url: String,
    }

    impl TestDb {
        pub(crate) async fn new() -> Option<TestDb> {
            let admin = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
                "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into()
            });
            let id = RunId::generate();
            let tail: String = id.as_str()[2..]
                .to_ascii_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            let name = format!("ra_unit_{tail}");
            if let Err(e) = create_database(&admin, &name).await {
                if std::env::var_os("REDIS_AUTOSCALER_REQUIRE_POSTGRES").is_some() {
                    panic!("PostgreSQL is required for this test: {e}");
                }
                eprintln!("skipped: no PostgreSQL at TEST_DATABASE_URL: {e}");
                return None;
            }
            let url = database_url(&admin, &name).unwrap();
            Some(TestDb { admin, name, url })
        }

        /// One replica's store on this database.
        pub(crate) async fn replica(&self, lease: Duration) -> PgStore {
            let options = PgOptions {
                lease,
                pool_size: 4,
                ca_file: None,
            };
            PgStore::connect(&self.url, None, options).await.unwrap()
        }
    }

    impl Drop for TestDb {
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

    const LONG: Duration = Duration::from_secs(60);

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn effects(list: &[(Effect, i64)]) -> Change {
        Change {
            effects: list
                .iter()
                .map(|(effect, due)| Scheduled {
                    effect: effect.clone(),
                    due: t(*due),
                })
                .collect(),
            ..Change::default()
        }
    }

    fn kinds(due: &[PendingEffect]) -> Vec<Effect> {
        due.iter().map(|p| p.effect.clone()).collect()
    }

    #[tokio::test]
    async fn two_replicas_never_hold_the_same_lane_and_a_runs_messages_keep_their_order() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let (a, b) = (db.replica(LONG).await, db.replica(LONG).await);
        assert_ne!(a.owner(), b.owner());
        let r = run("g1", 0);
        let change = effects(&[
            (Effect::PostTopMessage, 0),
            (Effect::OfferCancel, 0),
            (Effect::PollGroup, 0),
            (Effect::FetchPlan, 1),
        ]);
        assert_eq!(a.create_run(&r, change).await.unwrap(), Created::Created);

        let got_a = a.due_effects(t(10), &[], 10).await.unwrap();
        assert_eq!(kinds(&got_a), [Effect::PostTopMessage, Effect::PollGroup]);
        assert!(
            b.due_effects(t(10), &[], 10).await.unwrap().is_empty(),
            "both lanes are held by a"
        );
        // b wakes when a's claims could run out, not before.
        let lease_end = t(10 + LONG.as_millis() as i64 + 1);
        assert_eq!(b.next_due(&[]).await.unwrap(), Some(lease_end));

        // a finishes the top message: the chat lane's next is free for anyone; the work lane
        // stays a's while PollGroup is in flight.
        let top = &got_a[0];
        a.complete_effect(top.id, &r.id, t(11), vec![])
            .await
            .unwrap();
        let got_b = b.due_effects(t(12), &[], 10).await.unwrap();
        assert_eq!(
            kinds(&got_b),
            [Effect::OfferCancel],
            "the next message, in order"
        );
        // a's own in-flight work lane is in its busy list; it is not handed out twice.
        let busy = [(r.id.clone(), Lane::Work)];
        assert!(a.due_effects(t(12), &busy, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dead_replicas_claims_run_out_and_another_takes_the_work_over_once() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let lease = Duration::from_millis(300);
        let (a, b) = (db.replica(lease).await, db.replica(lease).await);
        let r = run("g1", 0);
        a.create_run(&r, effects(&[(Effect::PollGroup, 0)]))
            .await
            .unwrap();
        let now = || Timestamp::now();
        let got = a.due_effects(now(), &[], 10).await.unwrap();
        assert_eq!(kinds(&got), [Effect::PollGroup]);
        let x = got[0].id;
        assert!(!a.mark_started(x, now()).await.unwrap());
        assert!(a.renew_claim(Claim::Effect(x), now()).await.unwrap());
        assert!(b.due_effects(now(), &[], 10).await.unwrap().is_empty());

        // a dies (stops renewing); its lease runs out.
        tokio::time::sleep(lease + Duration::from_millis(100)).await;
        let got = b.due_effects(now(), &[], 10).await.unwrap();
        assert_eq!(got.iter().map(|p| p.id).collect::<Vec<_>>(), [x]);
        assert!(
            b.mark_started(x, now()).await.unwrap(),
            "b knows a had started it (and so describes before creating)"
        );
        assert!(
            !a.renew_claim(Claim::Effect(x), now()).await.unwrap(),
            "a's claim is gone"
        );
        // A late retry from a changes nothing: the effect is b's now.
        a.retry_effect(x, &r.id, t(i64::MAX / 2), 2, vec![])
            .await
            .unwrap();
        let pending = b.pending_effects(Some(&r.id)).await.unwrap();
        assert_eq!(pending[0].attempt, 1);

        // b records the result; a's late result for the same effect is ignored.
        let step = |label: &'static str| -> Decide {
            Box::new(move |run: &Run| {
                let mut next = run.clone();
                next.updated_at = Timestamp::from_millis(label.len() as i64);
                let audit = vec![AuditEntry::new(t(1), "test", label, "")];
                decided(
                    Some(next),
                    Change {
                        audit,
                        ..Change::default()
                    },
                )
            })
        };
        let by_b = b
            .update_run(&r.id, Some(x), now(), step("b"))
            .await
            .unwrap();
        assert!(by_b.next.is_some());
        let by_a = a
            .update_run(&r.id, Some(x), now(), step("a-late"))
            .await
            .unwrap();
        assert!(matches!(by_a.submitted, Submitted::Ignored(_)), "{by_a:?}");
        let trail = b.audit_trail(&r.id).await.unwrap();
        let kinds: Vec<&str> = trail.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["b"], "one result, recorded once");
    }

    #[tokio::test]
    async fn one_active_run_per_group_and_one_record_per_delivery_across_replicas() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let (a, b) = (db.replica(LONG).await, db.replica(LONG).await);
        let stores = [a.clone(), b.clone()];
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let store = stores[i % 2].clone();
            tasks.spawn(async move {
                let r = run("contended", 0);
                store.create_run(&r, first_effects(0)).await.unwrap()
            });
        }
        let mut created = 0;
        while let Some(c) = tasks.join_next().await {
            created += usize::from(c.unwrap() == Created::Created);
        }
        assert_eq!(created, 1);
        assert_eq!(a.recent_runs(None, 100).await.unwrap().len(), 1);

        let mut records = tokio::task::JoinSet::new();
        for i in 0..400 {
            let store = stores[i % 2].clone();
            records.spawn(async move {
                let record = AlarmRecord {
                    delivery_id: format!("eventbridge:{}", i % 100),
                    at: t(i as i64),
                    name: "Redis memory: contended".into(),
                    state: "ALARM".into(),
                    group: Some("contended".into()),
                    outcome: "noted".into(),
                };
                store.record_alarm(record, None).await.unwrap()
            });
        }
        let mut new = 0;
        while let Some(c) = records.join_next().await {
            new += usize::from(c.unwrap());
        }
        assert_eq!(new, 100, "each delivery once");
        assert_eq!(b.recent_alarms(1000).await.unwrap().len(), 100);
    }

    #[tokio::test]
    async fn a_notice_window_counts_deliveries_from_every_replica_once() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let (a, b) = (db.replica(LONG).await, db.replica(LONG).await);
        let stores = [a.clone(), b.clone()];
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let store = stores[i % 2].clone();
            tasks.spawn(async move {
                let job = |kind: &str| NewJob {
                    kind: kind.into(),
                    body: "{}".into(),
                    due: t(1000 + i as i64),
                };
                let record = AlarmRecord {
                    delivery_id: format!("sns:{i}"),
                    at: t(1000 + i as i64),
                    name: "Redis memory: unmanaged".into(),
                    state: "ALARM".into(),
                    group: None,
                    outcome: "unknown_group".into(),
                };
                let notice = WindowedNotice {
                    key: "unmanaged:x".into(),
                    window: Duration::from_secs(3600),
                    post: job("post"),
                    update: job("update"),
                };
                store.record_alarm(record, Some(notice)).await.unwrap()
            });
        }
        while let Some(r) = tasks.join_next().await {
            assert!(r.unwrap());
        }
        let seen = a.notice_seen("unmanaged:x").await.unwrap().unwrap();
        assert_eq!(seen.count, 50);
        let (jobs, _) = a.due_jobs(t(10_000), &[], 100).await.unwrap();
        let mut kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
        kinds.sort();
        assert_eq!(kinds, ["post", "update"], "one post, one pending update");
        // The jobs are a's now: b gets neither until a's claims run out.
        assert!(b.due_jobs(t(10_000), &[], 100).await.unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn migrations_apply_once_when_replicas_start_together_and_a_newer_schema_is_refused() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let mut starts = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let url = db.url.clone();
            starts.spawn(async move { PgStore::connect(&url, None, PgOptions::default()).await });
        }
        while let Some(s) = starts.join_next().await {
            s.unwrap().unwrap();
        }
        let store = db.replica(LONG).await;
        let client = store.client().await.unwrap();
        let row = client
            .query_one("SELECT COUNT(*), MAX(version) FROM schema_migrations", &[])
            .await
            .unwrap();
        let (n, max): (i64, i32) = (row.get(0), row.get(1));
        assert_eq!(
            (n, max),
            (MIGRATIONS.len() as i64, PgStore::schema_version())
        );

        client
            .execute("INSERT INTO schema_migrations (version) VALUES (999)", &[])
            .await
            .unwrap();
        let err = PgStore::connect(&db.url, None, PgOptions::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("version 999, newer than this build"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_bad_password_or_server_is_an_error_that_never_shows_the_password() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let url = db.url.replace(
            "postgres://postgres@",
            "postgres://nobody-here:hunter2-secret@",
        );
        let err = PgStore::connect(&url, None, PgOptions::default())
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2-secret"), "{err}");
        let err = PgStore::connect(
            "postgres://u@127.0.0.1:1/x?connect_timeout=1",
            None,
            PgOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("database error"), "{err}");
        assert!(
            PgStore::connect("mysql://x", None, PgOptions::default())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn work_whose_claim_is_lost_is_stopped_and_work_that_keeps_it_finishes() {
        use crate::workflow::ports::SystemClock;
        use crate::workflow::runner::{ClaimLost, keep_claim};
        let Some(db) = TestDb::new().await else {
            return;
        };
        let lease = Duration::from_millis(300);
        let a = db.replica(lease).await;
        let r = run("g1", 0);
        a.create_run(
            &r,
            effects(&[(Effect::PollGroup, 0), (Effect::PostTopMessage, 0)]),
        )
        .await
        .unwrap();
        let got = a.due_effects(Timestamp::now(), &[], 10).await.unwrap();
        let (x, y) = (got[0].id, got[1].id);
        // Kept: renewed every 100 ms, the work outlives its first lease and finishes.
        let kept = keep_claim(&a, &SystemClock, Claim::Effect(x), async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            "done"
        });
        assert_eq!(kept.await, Ok("done"));
        // Lost: someone else holds it now (as after a pause longer than the lease).
        let client = a.client().await.unwrap();
        client
            .execute(
                "UPDATE effects SET claimed_by = 'someone-else' WHERE id = $1",
                &[&y],
            )
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let lost = keep_claim(&a, &SystemClock, Claim::Effect(y), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "done"
        });
        assert_eq!(lost.await, Err(ClaimLost(Claim::Effect(y))));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "stopped at the first renewal"
        );
    }

    #[tokio::test]
    async fn a_request_seen_on_one_replica_is_a_replay_on_the_other_until_it_is_forgotten() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let (a, b) = (db.replica(LONG).await, db.replica(LONG).await);
        let keep = Duration::from_secs(300);
        assert!(
            a.remember_request("slack-socket:e1", t(1_000), keep)
                .await
                .unwrap()
        );
        assert!(
            !b.remember_request("slack-socket:e1", t(1_001), keep)
                .await
                .unwrap()
        );
        // Not taken in after all: its resend is acted on.
        a.forget_request("slack-socket:e1").await.unwrap();
        assert!(
            b.remember_request("slack-socket:e1", t(1_002), keep)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn periodic_work_is_taken_by_one_replica_per_turn() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let (a, b) = (db.replica(LONG).await, db.replica(LONG).await);
        let every = Duration::from_secs(300);
        assert!(a.take_turn("forecast", every, t(1_000)).await.unwrap());
        assert!(!b.take_turn("forecast", every, t(1_001)).await.unwrap());
        assert!(
            b.take_turn("prune", every, t(1_001)).await.unwrap(),
            "each kind has its turns"
        );
        assert!(!a.take_turn("forecast", every, t(300_999)).await.unwrap());
        assert!(b.take_turn("forecast", every, t(301_000)).await.unwrap());
        assert!(!a.take_turn("forecast", every, t(301_000)).await.unwrap());
        // Every replica reads the same next time (the scale-down check waits for it).
        assert_eq!(a.turn_due("forecast").await.unwrap(), Some(t(601_000)));
        assert_eq!(b.turn_due("forecast").await.unwrap(), Some(t(601_000)));
        assert_eq!(a.turn_due("never").await.unwrap(), None);
    }

    #[test]
    fn tls_is_required_off_loopback_unless_the_url_says_otherwise() {
        let loopback = |u: &str| is_loopback(&u.parse::<tokio_postgres::Config>().unwrap());
        assert!(loopback("postgres://postgres@127.0.0.1:5432/x"));
        assert!(loopback("postgres://postgres@localhost/x"));
        assert!(loopback("postgres://postgres@[::1]:5432/x"));
        assert!(!loopback("postgres://bot@db.internal:5432/x"));
        assert!(!loopback("postgres://bot@10.0.0.5/x"));
    }

    #[test]
    fn a_database_url_names_the_database_on_the_same_server() {
        let u = |a: &str| database_url(a, "ra_x").unwrap();
        assert_eq!(
            u("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/ra_x"
        );
        assert_eq!(
            u("postgres://h/db?sslmode=disable"),
            "postgres://h/ra_x?sslmode=disable"
        );
        assert_eq!(u("postgresql://h"), "postgresql://h/ra_x");
        assert!(database_url("postgres://h/db", "Robert'); DROP").is_err());
    }
}
