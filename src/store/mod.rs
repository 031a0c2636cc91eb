//! Durable state in one SQLite file: runs, their audit trail, and pending effects (an outbox).
//!
//! A transition and the effects it schedules are written in one transaction, before any of
//! those effects runs; an effect is marked done in the same transaction that records its
//! result. A unique partial index keeps at most one active run per replication group, so no
//! race between two alarms can start two runs.
//!
//! This module knows how to store a run, not what a run should do.

pub mod postgres;
mod writer;

pub use postgres::{PgOptions, PgStore};

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::domain::{MessageTs, ReplicationGroupId, RunId, Timestamp};
use crate::workflow::effect::Effect;
use crate::workflow::ports::{
    AlarmRecord, AuditEntry, BoxFuture, Busy, Change, Created, Decide, Decided, DueJobs, EffectId,
    NewJob, NoticeSeen, PendingEffect, PendingJob, Pruned, Retention, Store, StoreError,
    WindowedNotice,
};
use crate::workflow::run::Run;

/// The SQLite store. Cheap to clone and share. Writes go through one writer thread that
/// commits whatever is queued in one transaction ([`writer`]); reads use their own connection
/// (WAL lets them run beside a commit). Its inherent methods are synchronous (tests and tools
/// use them); the [`Store`] port runs the same calls without blocking the async threads.
#[derive(Clone)]
pub struct SqliteStore {
    /// Reads. An in-memory database has one connection, shared with the writer.
    read: Arc<Mutex<Connection>>,
    writer: writer::Writer,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    group_id    TEXT NOT NULL,
    active      INTEGER NOT NULL,
    state       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active_per_group ON runs(group_id) WHERE active = 1;
CREATE INDEX IF NOT EXISTS runs_by_group ON runs(group_id, created_at);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs(created_at);

CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_run ON audit(run_id, id);
CREATE INDEX IF NOT EXISTS runs_finished ON runs(active, updated_at);

CREATE TABLE IF NOT EXISTS effects (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    body        TEXT NOT NULL,
    due_at      INTEGER NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 1,
    status      TEXT NOT NULL DEFAULT 'pending',
    created_at  INTEGER NOT NULL,
    done_at     INTEGER,
    lane        TEXT NOT NULL DEFAULT 'work',
    started_at  INTEGER
);
CREATE INDEX IF NOT EXISTS effects_pending ON effects(status, run_id, due_at, id);

CREATE TABLE IF NOT EXISTS alarms (
    delivery_id TEXT PRIMARY KEY,
    at          INTEGER NOT NULL,
    name        TEXT NOT NULL,
    state       TEXT NOT NULL,
    group_id    TEXT,
    outcome     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_by_time ON alarms(at);

CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    body        TEXT NOT NULL,
    due_at      INTEGER NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 1,
    status      TEXT NOT NULL DEFAULT 'pending',
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    done_at     INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs(status, due_at, id);

CREATE TABLE IF NOT EXISTS notice_windows (
    key             TEXT PRIMARY KEY,
    opened_at       INTEGER NOT NULL,
    count           INTEGER NOT NULL,
    last_at         INTEGER NOT NULL,
    ts              TEXT,
    update_pending  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS requests_seen (
    key TEXT PRIMARY KEY,
    at  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS turns (
    name    TEXT PRIMARY KEY,
    next_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_seen_by_time ON requests_seen(at);
"#;

impl SqliteStore {
    /// Open (creating if needed) the database file.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let write = Self::init(Connection::open(path)?)?;
        let read = Connection::open(path)?;
        read.busy_timeout(std::time::Duration::from_secs(5))?;
        // A write sent to the reading connection by mistake fails loudly instead of
        // bypassing the writer.
        read.pragma_update(None, "query_only", "ON")?;
        Ok(SqliteStore {
            read: Arc::new(Mutex::new(read)),
            writer: writer::Writer::start(Arc::new(Mutex::new(write)))?,
        })
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Arc::new(Mutex::new(Self::init(Connection::open_in_memory()?)?));
        Ok(SqliteStore {
            read: conn.clone(),
            writer: writer::Writer::start(conn)?,
        })
    }

    fn init(conn: Connection) -> Result<Connection, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL keeps readers off the writer's back; FULL makes every commit durable, because a
        // lost transition could mean a repeated snapshot or a lost page. The writer's group
        // commit is what keeps FULL affordable under load.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(conn)
    }

    /// The reading connection.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock can't leave a half-written transaction behind
        // (SQLite rolls it back), so a poisoned lock is safe to reuse.
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` in the writer's next transaction; the answer comes once it is committed.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.write(f)
    }

    /// One pruning pass (see [`Store::prune`]): each kind in its own short transaction.
    pub fn prune(
        &self,
        now: Timestamp,
        retention: Retention,
        batch: usize,
    ) -> Result<Pruned, StoreError> {
        let cutoff = |d: std::time::Duration| now.as_millis() - d.as_millis() as i64;
        let (runs_before, records_before) = (cutoff(retention.runs), cutoff(retention.records));
        let limit = batch as i64;
        let delete = |sql: &'static str, before: i64| -> Result<usize, StoreError> {
            self.write(move |c| Ok(c.execute(sql, params![before, limit])?))
        };
        let mut out = Pruned {
            effects: delete(
                "DELETE FROM effects WHERE id IN (SELECT id FROM effects
                 WHERE status <> 'pending' AND COALESCE(done_at, created_at) < ?1 LIMIT ?2)",
                records_before,
            )?,
            jobs: delete(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs
                 WHERE status <> 'pending' AND COALESCE(done_at, created_at) < ?1 LIMIT ?2)",
                records_before,
            )?,
            alarms: delete(
                "DELETE FROM alarms WHERE delivery_id IN (SELECT delivery_id FROM alarms
                 WHERE at < ?1 LIMIT ?2)",
                records_before,
            )?,
            notices: delete(
                "DELETE FROM notice_windows WHERE key IN (SELECT key FROM notice_windows
                 WHERE last_at < ?1 LIMIT ?2)",
                records_before,
            )?,
            ..Pruned::default()
        };
        // A finished run with nothing left to do goes with its audit trail and done effects;
        // its audit can be long, so the run's row goes first and the orphans after, in batches.
        out.runs = delete(
            "DELETE FROM runs WHERE id IN (SELECT r.id FROM runs r
             WHERE r.active = 0 AND r.updated_at < ?1
               AND NOT EXISTS (SELECT 1 FROM effects e
                               WHERE e.run_id = r.id AND e.status = 'pending')
             LIMIT ?2)",
            runs_before,
        )?;
        out.audit = self.write(move |c| {
            Ok(c.execute(
                "DELETE FROM audit WHERE id IN (SELECT a.id FROM audit a
                 WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = a.run_id) LIMIT ?1)",
                params![limit],
            )?)
        })?;
        out.effects += self.write(move |c| {
            Ok(c.execute(
                "DELETE FROM effects WHERE id IN (SELECT e.id FROM effects e
                 WHERE e.status <> 'pending'
                   AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = e.run_id) LIMIT ?1)",
                params![limit],
            )?)
        })?;
        Ok(out)
    }

    /// Can the store be written right now? (`/readyz`.)
    /// The writer opens a write transaction for it, which is the test.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.write(|_| Ok(()))
    }

    /// Insert a new run with its first effects, unless its group already has an active run.
    pub fn create_run(&self, run: &Run, change: Change) -> Result<Created, StoreError> {
        let run = run.clone();
        self.write(move |c| create_run(c, &run, &change))
    }

    /// Change a run in one transaction: `decide` sees the stored run and says what to write.
    /// `completed` is the effect whose result this is; it is marked done in the same
    /// transaction.
    pub fn update_run(
        &self,
        id: &RunId,
        completed: Option<EffectId>,
        now: Timestamp,
        decide: impl FnOnce(&Run) -> Decided + Send + 'static,
    ) -> Result<Decided, StoreError> {
        let id = id.clone();
        self.write(move |c| update_run(c, &id, completed, now, decide))
    }

    /// Put an effect back in the queue for another attempt.
    pub fn retry_effect(
        &self,
        effect_id: EffectId,
        run_id: &RunId,
        due: Timestamp,
        attempt: u32,
        audit: &[AuditEntry],
    ) -> Result<(), StoreError> {
        let (run_id, audit) = (run_id.clone(), audit.to_vec());
        self.write(move |c| retry_effect(c, effect_id, &run_id, due, attempt, &audit))
    }

    /// Mark an effect done without changing its run, with its lines for the audit trail.
    pub fn complete_effect(
        &self,
        effect_id: EffectId,
        run_id: &RunId,
        now: Timestamp,
        audit: &[AuditEntry],
    ) -> Result<(), StoreError> {
        let (run_id, audit) = (run_id.clone(), audit.to_vec());
        self.write(move |c| complete_effect(c, effect_id, &run_id, now, &audit))
    }

    /// For each run not in `busy`, its next pending effect if it is due by `now`.
    ///
    /// One effect per run at a time keeps a run's effects in order (the top message before its
    /// thread replies, replies in the order they were decided).
    pub fn due_effects(
        &self,
        now: Timestamp,
        busy: &[Busy],
        limit: usize,
    ) -> Result<Vec<PendingEffect>, StoreError> {
        let conn = self.conn();
        // Each run and lane's first by a window over the eligible rows, not a subquery per row:
        // SQLite materialises `eligible` and scanned all of it for each of its rows (100 runs
        // with 5 pending effects each: 6.5 ms a look, 1.0 ms this way; in a storm the
        // dispatcher looks after nearly every commit).
        let sql = format!(
            "{ELIGIBLE}, firsts AS (
                SELECT id, run_id, body, due_at, attempt, created_at,
                       ROW_NUMBER() OVER (PARTITION BY run_id, lane ORDER BY due_at, id) AS n
                FROM eligible)
            SELECT id, run_id, body, due_at, attempt, created_at FROM firsts
            WHERE n = 1 AND due_at <= ?1
            ORDER BY due_at, id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![now.as_millis()], row_to_pending)?;
        let mut out = Vec::new();
        for row in rows {
            let p = row??;
            if busy.contains(&(p.run_id.clone(), p.effect.lane())) {
                continue;
            }
            out.push(p);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// When the next pending effect of a run and lane not in `busy` is due.
    pub fn next_due(&self, busy: &[Busy]) -> Result<Option<Timestamp>, StoreError> {
        let conn = self.conn();
        let sql = format!(
            "{ELIGIBLE} SELECT run_id, lane, MIN(due_at) FROM eligible GROUP BY run_id, lane"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut next: Option<i64> = None;
        for row in rows {
            let (run, lane, due) = row?;
            if busy
                .iter()
                .any(|(r, l)| r.as_str() == run && l.as_str() == lane)
            {
                continue;
            }
            next = Some(next.map_or(due, |n: i64| n.min(due)));
        }
        Ok(next.map(Timestamp::from_millis))
    }

    /// Note that an effect is being executed. Returns whether an earlier execution had already
    /// started it (and so may have done its work before the process stopped).
    pub fn mark_started(&self, effect_id: i64, now: Timestamp) -> Result<bool, StoreError> {
        self.write(move |c| mark_started(c, "effects", effect_id, now))
    }

    /// Is another effect of this kind pending for the run after `effect_id`?
    pub fn has_later_pending(
        &self,
        run_id: &RunId,
        effect_id: i64,
        kind: &str,
    ) -> Result<bool, StoreError> {
        let conn = self.conn();
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM effects WHERE run_id = ?1 AND status = 'pending' AND kind = ?2 AND id > ?3",
            params![run_id.as_str(), kind, effect_id],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    pub fn pending_effects(
        &self,
        run_id: Option<&RunId>,
    ) -> Result<Vec<PendingEffect>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, run_id, body, due_at, attempt, created_at FROM effects
             WHERE status = 'pending' AND (?1 IS NULL OR run_id = ?1) ORDER BY due_at, id",
        )?;
        let rows = stmt.query_map(params![run_id.map(|r| r.as_str())], row_to_pending)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    pub fn run(&self, id: &RunId) -> Result<Option<Run>, StoreError> {
        let conn = self.conn();
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM runs WHERE id = ?1",
                params![id.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| from_json(&b)).transpose()
    }

    pub fn active_run(&self, group: &ReplicationGroupId) -> Result<Option<Run>, StoreError> {
        let conn = self.conn();
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM runs WHERE group_id = ?1 AND active = 1",
                params![group.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| from_json(&b)).transpose()
    }

    /// Runs that are not finished (what a restart resumes).
    pub fn active_runs(&self) -> Result<Vec<Run>, StoreError> {
        self.query_runs(
            "SELECT body FROM runs WHERE active = 1 ORDER BY created_at",
            params![],
        )
    }

    /// The most recent runs, newest first, optionally for one group.
    pub fn recent_runs(
        &self,
        group: Option<&ReplicationGroupId>,
        limit: usize,
    ) -> Result<Vec<Run>, StoreError> {
        self.query_runs(
            "SELECT body FROM runs WHERE (?1 IS NULL OR group_id = ?1)
             ORDER BY created_at DESC, rowid DESC LIMIT ?2",
            params![group.map(|g| g.as_str()), limit as i64],
        )
    }

    /// The latest succeeded run of a group (for the cooldown).
    pub fn last_success(&self, group: &ReplicationGroupId) -> Result<Option<Run>, StoreError> {
        Ok(self
            .query_runs(
                "SELECT body FROM runs WHERE group_id = ?1 AND state = 'succeeded'
                 ORDER BY updated_at DESC LIMIT 1",
                params![group.as_str()],
            )?
            .pop())
    }

    fn query_runs(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Run>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(from_json(&row?)?);
        }
        Ok(out)
    }

    /// A run's audit trail, oldest first.
    pub fn audit_trail(&self, run_id: &RunId) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT at, actor, kind, detail FROM audit WHERE run_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![run_id.as_str()], |r| {
            Ok(AuditEntry {
                at: Timestamp::from_millis(r.get(0)?),
                actor: r.get(1)?,
                kind: r.get(2)?,
                detail: r.get(3)?,
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::from)
    }

    /// Has this alarm delivery been handled already? (Retries repeat the delivery id.)
    pub fn alarm_seen(&self, delivery_id: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM alarms WHERE delivery_id = ?1",
            params![delivery_id],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Record what an alarm delivery did (the log of alarms, including those that started no
    /// run), and the job it leaves, in one transaction. Returns false, and writes nothing, if the
    /// delivery was recorded before.
    pub fn record_alarm(
        &self,
        r: &AlarmRecord,
        notice: Option<&WindowedNotice>,
    ) -> Result<bool, StoreError> {
        let (r, notice) = (r.clone(), notice.cloned());
        self.write(move |c| record_alarm(c, &r, notice.as_ref()))
    }

    /// What the notice window `key` has seen.
    pub fn notice_seen(&self, key: &str) -> Result<Option<NoticeSeen>, StoreError> {
        notice_row(&self.conn(), key)
    }

    /// The window's notice was posted as `ts`; `update` is queued if repeats wait to be shown.
    pub fn notice_posted(
        &self,
        key: &str,
        ts: &MessageTs,
        update: NewJob,
    ) -> Result<(), StoreError> {
        let (key, ts) = (key.to_string(), ts.clone());
        self.write(move |c| notice_posted(c, &key, &ts, &update))
    }

    /// Take the window's pending update (it stays pending while the notice isn't posted).
    pub fn take_notice_update(&self, key: &str) -> Result<Option<NoticeSeen>, StoreError> {
        let key = key.to_string();
        self.write(move |c| take_notice_update(c, &key))
    }

    /// Remember a signed request; false if it was seen within `keep` (a replay).
    pub fn remember_request(
        &self,
        key: &str,
        now: Timestamp,
        keep: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let key = key.to_string();
        self.write(move |c| remember_request(c, &key, now, keep))
    }

    /// Put a job in the outbox.
    pub fn enqueue_job(&self, job: &NewJob) -> Result<(), StoreError> {
        let job = job.clone();
        self.write(move |c| insert_job(c, &job, job.due))
    }

    /// Due jobs not in `busy` (oldest first), and when the next one not in `busy` is due.
    pub fn due_jobs(
        &self,
        now: Timestamp,
        busy: &[i64],
        limit: usize,
    ) -> Result<DueJobs, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, body, due_at, attempt FROM jobs WHERE status = 'pending'
             ORDER BY due_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PendingJob {
                id: r.get(0)?,
                kind: r.get(1)?,
                body: r.get(2)?,
                due: Timestamp::from_millis(r.get(3)?),
                attempt: r.get::<_, i64>(4)?.max(1) as u32,
            })
        })?;
        let (mut due, mut next) = (Vec::new(), None);
        for job in rows {
            let job = job?;
            if busy.contains(&job.id) {
                continue;
            }
            if job.due <= now && due.len() < limit {
                due.push(job);
            } else if job.due > now {
                next = Some(job.due);
                break;
            }
        }
        Ok((due, next))
    }

    /// Note that a job is being done; whether an earlier try had started it.
    pub fn start_job(&self, id: i64, now: Timestamp) -> Result<bool, StoreError> {
        self.write(move |c| mark_started(c, "jobs", id, now))
    }

    pub fn complete_job(&self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        self.write(move |c| complete_job(c, id, now))
    }

    pub fn retry_job(&self, id: i64, due: Timestamp, attempt: u32) -> Result<(), StoreError> {
        self.write(move |c| retry_job(c, id, due, attempt))
    }

    /// The alarm log, newest first.
    pub fn recent_alarms(&self, limit: usize) -> Result<Vec<AlarmRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT delivery_id, name, state, group_id, outcome, at FROM alarms
             ORDER BY at DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], alarm_row)?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::from)
    }

    /// How many effects and jobs wait to be executed (a metric).
    pub fn pending_count(&self) -> Result<u64, StoreError> {
        let conn = self.conn();
        let n: i64 = conn.query_row(
            "SELECT (SELECT COUNT(*) FROM effects WHERE status = 'pending')
                  + (SELECT COUNT(*) FROM jobs WHERE status = 'pending')",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }
}

/// The port: the same calls, off the async threads (SQLite calls block).
impl Store for SqliteStore {
    fn create_run<'a>(
        &'a self,
        run: &'a Run,
        change: Change,
    ) -> BoxFuture<'a, Result<Created, StoreError>> {
        let run = run.clone();
        self.writer
            .write_async(move |c| create_run(c, &run, &change))
    }

    fn update_run<'a>(
        &'a self,
        id: &'a RunId,
        completed: Option<EffectId>,
        now: Timestamp,
        decide: Decide,
    ) -> BoxFuture<'a, Result<Decided, StoreError>> {
        let id = id.clone();
        self.writer
            .write_async(move |c| update_run(c, &id, completed, now, decide))
    }

    fn run<'a>(&'a self, id: &'a RunId) -> BoxFuture<'a, Result<Option<Run>, StoreError>> {
        let id = id.clone();
        self.blocking(move |s| s.run(&id))
    }

    fn audit_trail<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>> {
        let id = id.clone();
        self.blocking(move |s| s.audit_trail(&id))
    }

    fn active_run<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Option<Run>, StoreError>> {
        let group = group.clone();
        self.blocking(move |s| s.active_run(&group))
    }

    fn recent_runs<'a>(
        &'a self,
        group: Option<&'a ReplicationGroupId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Run>, StoreError>> {
        let group = group.cloned();
        self.blocking(move |s| s.recent_runs(group.as_ref(), limit))
    }

    fn last_success<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Option<Run>, StoreError>> {
        let group = group.clone();
        self.blocking(move |s| s.last_success(&group))
    }

    fn due_effects<'a>(
        &'a self,
        now: Timestamp,
        busy: &'a [Busy],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PendingEffect>, StoreError>> {
        let busy = busy.to_vec();
        self.blocking(move |s| s.due_effects(now, &busy, limit))
    }

    fn next_due<'a>(
        &'a self,
        busy: &'a [Busy],
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        let busy = busy.to_vec();
        self.blocking(move |s| s.next_due(&busy))
    }

    fn mark_started(
        &self,
        effect: EffectId,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.writer
            .write_async(move |c| mark_started(c, "effects", effect, now))
    }

    fn has_later_pending<'a>(
        &'a self,
        run: &'a RunId,
        effect: EffectId,
        kind: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let (run, kind) = (run.clone(), kind.to_string());
        self.blocking(move |s| s.has_later_pending(&run, effect, &kind))
    }

    fn complete_effect<'a>(
        &'a self,
        effect: EffectId,
        run: &'a RunId,
        now: Timestamp,
        audit: Vec<AuditEntry>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let run = run.clone();
        self.writer
            .write_async(move |c| complete_effect(c, effect, &run, now, &audit))
    }

    fn retry_effect<'a>(
        &'a self,
        effect: EffectId,
        run: &'a RunId,
        due: Timestamp,
        attempt: u32,
        audit: Vec<AuditEntry>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let run = run.clone();
        self.writer
            .write_async(move |c| retry_effect(c, effect, &run, due, attempt, &audit))
    }

    fn pending_effects<'a>(
        &'a self,
        run: Option<&'a RunId>,
    ) -> BoxFuture<'a, Result<Vec<PendingEffect>, StoreError>> {
        let run = run.cloned();
        self.blocking(move |s| s.pending_effects(run.as_ref()))
    }

    fn recent_alarms(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AlarmRecord>, StoreError>> {
        self.blocking(move |s| s.recent_alarms(limit))
    }

    fn last_alarm<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Option<AlarmRecord>, StoreError>> {
        let group = group.to_string();
        self.blocking(move |s| {
            let conn = s.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT delivery_id, name, state, group_id, outcome, at FROM alarms
                 WHERE group_id = ?1 AND state = 'ALARM' AND at >= ?2
                 ORDER BY at DESC, rowid DESC LIMIT 1",
            )?;
            let mut rows = stmt.query(params![group, since.as_millis()])?;
            Ok(rows.next()?.map(alarm_row).transpose()?)
        })
    }

    fn pending_count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.blocking(|s| s.pending_count())
    }

    fn enqueue_job<'a>(&'a self, job: NewJob) -> BoxFuture<'a, Result<(), StoreError>> {
        self.writer
            .write_async(move |c| insert_job(c, &job, job.due))
    }

    fn due_jobs<'a>(
        &'a self,
        now: Timestamp,
        busy: &'a [i64],
        limit: usize,
    ) -> BoxFuture<'a, Result<DueJobs, StoreError>> {
        let busy = busy.to_vec();
        self.blocking(move |s| s.due_jobs(now, &busy, limit))
    }

    fn start_job(&self, id: i64, now: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.writer
            .write_async(move |c| mark_started(c, "jobs", id, now))
    }

    fn complete_job(&self, id: i64, now: Timestamp) -> BoxFuture<'_, Result<(), StoreError>> {
        self.writer.write_async(move |c| complete_job(c, id, now))
    }

    fn retry_job(
        &self,
        id: i64,
        due: Timestamp,
        attempt: u32,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.writer
            .write_async(move |c| retry_job(c, id, due, attempt))
    }

    fn alarm_seen<'a>(&'a self, delivery_id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let delivery_id = delivery_id.to_string();
        self.blocking(move |s| s.alarm_seen(&delivery_id))
    }

    fn record_alarm(
        &self,
        record: AlarmRecord,
        notice: Option<WindowedNotice>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.writer
            .write_async(move |c| record_alarm(c, &record, notice.as_ref()))
    }

    fn notice_seen<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<NoticeSeen>, StoreError>> {
        let key = key.to_string();
        self.blocking(move |s| s.notice_seen(&key))
    }

    fn notice_posted<'a>(
        &'a self,
        key: &'a str,
        ts: &'a MessageTs,
        update: NewJob,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (key, ts) = (key.to_string(), ts.clone());
        self.writer
            .write_async(move |c| notice_posted(c, &key, &ts, &update))
    }

    fn take_notice_update<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<NoticeSeen>, StoreError>> {
        let key = key.to_string();
        self.writer
            .write_async(move |c| take_notice_update(c, &key))
    }

    fn remember_request<'a>(
        &'a self,
        key: &'a str,
        now: Timestamp,
        keep: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let key = key.to_string();
        self.writer
            .write_async(move |c| remember_request(c, &key, now, keep))
    }

    fn take_turn<'a>(
        &'a self,
        name: &'a str,
        every: std::time::Duration,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let name = name.to_string();
        let (now, next) = (now.as_millis(), now.as_millis() + every.as_millis() as i64);
        self.blocking(move |s| {
            s.write(move |c| {
                let n = c.execute(
                    "INSERT INTO turns (name, next_at) VALUES (?1, ?3)
                     ON CONFLICT (name) DO UPDATE SET next_at = excluded.next_at
                     WHERE turns.next_at <= ?2",
                    params![name, now, next],
                )?;
                Ok(n == 1)
            })
        })
    }

    fn turn_due<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        let name = name.to_string();
        self.blocking(move |s| {
            let conn = s.conn();
            let mut stmt = conn.prepare_cached("SELECT next_at FROM turns WHERE name = ?1")?;
            let mut rows = stmt.query(params![name])?;
            Ok(match rows.next()? {
                Some(r) => Some(Timestamp::from_millis(r.get(0)?)),
                None => None,
            })
        })
    }

    fn forget_request<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let key = key.to_string();
        self.blocking(move |s| {
            s.write(move |c| {
                c.execute("DELETE FROM requests_seen WHERE key = ?1", params![key])?;
                Ok(())
            })
        })
    }

    fn check_writable(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let probe = self.writer.write_async(|_| Ok(()));
        Box::pin(async move {
            // Answer quickly: a probe must not hang for the whole busy timeout.
            tokio::time::timeout(std::time::Duration::from_millis(500), probe)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Backend(
                        "no write transaction within 500 ms".into(),
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
        self.blocking(move |s| s.prune(now, retention, batch))
    }
}

impl SqliteStore {
    /// Run `f` on this store on tokio's blocking threads.
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&store))
                .await
                .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
        })
    }
}

fn create_run(conn: &Connection, run: &Run, change: &Change) -> Result<Created, StoreError> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT id FROM runs WHERE group_id = ?1 AND active = 1",
            params![run.group.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return Ok(Created::AlreadyActive(parse_run_id(&id)?));
    }
    conn.execute(
        "INSERT INTO runs (id, group_id, active, state, created_at, updated_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            run.id.as_str(),
            run.group.as_str(),
            !run.is_finished(),
            run.state_name(),
            run.created_at.as_millis(),
            run.updated_at.as_millis(),
            to_json(run)?,
        ],
    )?;
    write_change(conn, &run.id, change, run.updated_at)?;
    Ok(Created::Created)
}

fn update_run(
    conn: &Connection,
    id: &RunId,
    completed: Option<EffectId>,
    now: Timestamp,
    decide: impl FnOnce(&Run) -> Decided,
) -> Result<Decided, StoreError> {
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM runs WHERE id = ?1",
            params![id.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    let Some(body) = body else {
        return Err(StoreError::RunNotFound(id.clone()));
    };
    let run: Run = from_json(&body)?;
    let decided = decide(&run);
    if let Some(next) = &decided.next {
        conn.execute(
            "UPDATE runs SET active = ?2, state = ?3, updated_at = ?4, body = ?5 WHERE id = ?1",
            params![
                id.as_str(),
                !next.is_finished(),
                next.state_name(),
                next.updated_at.as_millis(),
                to_json(next)?,
            ],
        )?;
    }
    if let Some(effect_id) = completed {
        conn.execute(
            "UPDATE effects SET status = 'done', done_at = ?2 WHERE id = ?1 AND status = 'pending'",
            params![effect_id, now.as_millis()],
        )?;
    }
    write_change(conn, id, &decided.change, now)?;
    Ok(decided)
}

fn retry_effect(
    conn: &Connection,
    effect_id: EffectId,
    run_id: &RunId,
    due: Timestamp,
    attempt: u32,
    audit: &[AuditEntry],
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE effects SET due_at = ?2, attempt = ?3 WHERE id = ?1 AND status = 'pending'",
        params![effect_id, due.as_millis(), attempt],
    )?;
    for a in audit {
        insert_audit(conn, run_id, a)?;
    }
    Ok(())
}

fn complete_effect(
    conn: &Connection,
    effect_id: EffectId,
    run_id: &RunId,
    now: Timestamp,
    audit: &[AuditEntry],
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE effects SET status = 'done', done_at = ?2 WHERE id = ?1 AND status = 'pending'",
        params![effect_id, now.as_millis()],
    )?;
    for a in audit {
        insert_audit(conn, run_id, a)?;
    }
    Ok(())
}

/// Note that an effect (`table` "effects") or a job ("jobs") is being executed. Whether an
/// earlier execution had already started it (and so may have done its work before the
/// process stopped).
fn mark_started(
    conn: &Connection,
    table: &'static str,
    id: i64,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let before: Option<i64> = conn
        .query_row(
            &format!("SELECT started_at FROM {table} WHERE id = ?1"),
            params![id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if before.is_none() {
        conn.execute(
            &format!("UPDATE {table} SET started_at = ?2 WHERE id = ?1"),
            params![id, now.as_millis()],
        )?;
    }
    Ok(before.is_some())
}

fn record_alarm(
    conn: &Connection,
    r: &AlarmRecord,
    notice: Option<&WindowedNotice>,
) -> Result<bool, StoreError> {
    let n = insert_alarm(conn, r)?;
    if n > 0
        && let Some(notice) = notice
    {
        count_notice(conn, notice)?;
    }
    Ok(n > 0)
}

fn take_notice_update(conn: &Connection, key: &str) -> Result<Option<NoticeSeen>, StoreError> {
    let seen = notice_row(conn, key)?;
    if seen.as_ref().is_some_and(|s| s.ts.is_some()) {
        conn.execute(
            "UPDATE notice_windows SET update_pending = 0 WHERE key = ?1",
            params![key],
        )?;
    }
    Ok(seen)
}

fn remember_request(
    conn: &Connection,
    key: &str,
    now: Timestamp,
    keep: std::time::Duration,
) -> Result<bool, StoreError> {
    let cutoff = now.as_millis() - keep.as_millis() as i64;
    conn.execute("DELETE FROM requests_seen WHERE at < ?1", params![cutoff])?;
    let n = conn.execute(
        "INSERT OR IGNORE INTO requests_seen (key, at) VALUES (?1, ?2)",
        params![key, now.as_millis()],
    )?;
    Ok(n > 0)
}

fn notice_posted(
    conn: &Connection,
    key: &str,
    ts: &MessageTs,
    update: &NewJob,
) -> Result<(), StoreError> {
    let pending: Option<i64> = conn
        .query_row(
            "UPDATE notice_windows SET ts = ?2 WHERE key = ?1 RETURNING update_pending",
            params![key, ts.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if pending == Some(1) {
        insert_job(conn, update, update.due)?;
    }
    Ok(())
}

fn complete_job(conn: &Connection, id: i64, now: Timestamp) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE jobs SET status = 'done', done_at = ?2 WHERE id = ?1",
        params![id, now.as_millis()],
    )?;
    Ok(())
}

fn retry_job(conn: &Connection, id: i64, due: Timestamp, attempt: u32) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE jobs SET due_at = ?2, attempt = ?3 WHERE id = ?1 AND status = 'pending'",
        params![id, due.as_millis(), attempt],
    )?;
    Ok(())
}

/// Log an alarm delivery; 0 if it was logged before.
fn insert_alarm(conn: &Connection, r: &AlarmRecord) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "INSERT OR IGNORE INTO alarms (delivery_id, at, name, state, group_id, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            r.delivery_id,
            r.at.as_millis(),
            r.name,
            r.state,
            r.group,
            r.outcome
        ],
    )?)
}

/// A delivery that leaves a windowed notice: the first of its window posts it; the others count
/// on it, with one update of the posted notice pending at a time.
fn count_notice(conn: &Connection, n: &WindowedNotice) -> Result<(), StoreError> {
    let now = n.post.due.as_millis();
    let open: Option<(i64, i64)> = conn
        .query_row(
            "SELECT opened_at, update_pending FROM notice_windows WHERE key = ?1",
            params![n.key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match open {
        Some((opened, pending)) if now - opened < n.window.as_millis() as i64 => {
            conn.execute(
                "UPDATE notice_windows SET count = count + 1, last_at = MAX(last_at, ?2),
                 update_pending = 1 WHERE key = ?1",
                params![n.key, now],
            )?;
            if pending == 0 {
                insert_job(conn, &n.update, n.update.due)?;
            }
        }
        _ => {
            conn.execute(
                "INSERT INTO notice_windows (key, opened_at, count, last_at, ts, update_pending)
                 VALUES (?1, ?2, 1, ?2, NULL, 0)
                 ON CONFLICT(key) DO UPDATE SET opened_at = excluded.opened_at, count = 1,
                     last_at = excluded.last_at, ts = NULL, update_pending = 0",
                params![n.key, now],
            )?;
            insert_job(conn, &n.post, n.post.due)?;
        }
    }
    Ok(())
}

fn notice_row(conn: &Connection, key: &str) -> Result<Option<NoticeSeen>, StoreError> {
    let row = conn
        .query_row(
            "SELECT count, opened_at, last_at, ts FROM notice_windows WHERE key = ?1",
            params![key],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            },
        )
        .optional()?;
    let Some((count, first, last, ts)) = row else {
        return Ok(None);
    };
    notice_seen(count, first, last, ts).map(Some)
}

/// A notice window's row (count, opened, last, posted ts) as the port gives it; both stores.
fn notice_seen(
    count: i64,
    first: i64,
    last: i64,
    ts: Option<String>,
) -> Result<NoticeSeen, StoreError> {
    let ts = ts
        .map(|t| MessageTs::parse(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()?;
    Ok(NoticeSeen {
        count: count.max(1) as u32,
        first_at: Timestamp::from_millis(first),
        last_at: Timestamp::from_millis(last),
        ts,
    })
}

/// An alarm record from `SELECT delivery_id, name, state, group_id, outcome, at`.
fn alarm_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlarmRecord> {
    Ok(AlarmRecord {
        delivery_id: r.get(0)?,
        name: r.get(1)?,
        state: r.get(2)?,
        group: r.get(3)?,
        outcome: r.get(4)?,
        at: Timestamp::from_millis(r.get(5)?),
    })
}

/// Bring a store written by an older version up to date (columns added since).
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let mut columns = Vec::new();
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('effects')")?;
    for name in stmt.query_map([], |r| r.get::<_, String>(0))? {
        columns.push(name?);
    }
    if !columns.iter().any(|c| c == "lane") {
        conn.execute_batch("ALTER TABLE effects ADD COLUMN lane TEXT NOT NULL DEFAULT 'work';")?;
    }
    if !columns.iter().any(|c| c == "started_at") {
        conn.execute_batch("ALTER TABLE effects ADD COLUMN started_at INTEGER;")?;
    }
    Ok(())
}

/// Pending effects a run may execute now: work effects, and the earliest pending Slack effect
/// (a run's messages go out strictly in the order they were decided, even when one of them
/// waits out a rate limit).
const ELIGIBLE: &str = "
    WITH eligible AS (
        SELECT e.id, e.run_id, e.body, e.due_at, e.attempt, e.created_at, e.lane FROM effects e
        WHERE e.status = 'pending'
          AND NOT (e.lane = 'slack' AND EXISTS (
              SELECT 1 FROM effects p
              WHERE p.run_id = e.run_id AND p.status = 'pending' AND p.lane = 'slack' AND p.id < e.id))
    )";

fn write_change(
    conn: &Connection,
    run_id: &RunId,
    change: &Change,
    now: Timestamp,
) -> Result<(), StoreError> {
    if change.drop_pending_work {
        let mut stmt = conn.prepare_cached(
            "SELECT id, body FROM effects WHERE run_id = ?1 AND status = 'pending'",
        )?;
        let rows = stmt.query_map(params![run_id.as_str()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut drop = Vec::new();
        for row in rows {
            let (id, body) = row?;
            let effect: Effect = from_json(&body)?;
            if effect.is_droppable_work() {
                drop.push(id);
            }
        }
        for id in drop {
            conn.execute(
                "UPDATE effects SET status = 'dropped', done_at = ?2 WHERE id = ?1",
                params![id, now.as_millis()],
            )?;
        }
    }
    for s in &change.effects {
        conn.execute(
            "INSERT INTO effects (run_id, kind, body, due_at, created_at, lane)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                run_id.as_str(),
                s.effect.name(),
                to_json(&s.effect)?,
                s.due.as_millis(),
                now.as_millis(),
                s.effect.lane().as_str(),
            ],
        )?;
    }
    for a in &change.audit {
        insert_audit(conn, run_id, a)?;
    }
    if let Some(r) = &change.delivery {
        insert_alarm(conn, r)?;
    }
    Ok(())
}

fn insert_job(conn: &Connection, job: &NewJob, now: Timestamp) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO jobs (kind, body, due_at, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![job.kind, job.body, job.due.as_millis(), now.as_millis()],
    )?;
    Ok(())
}

fn insert_audit(conn: &Connection, run_id: &RunId, a: &AuditEntry) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit (run_id, at, actor, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![run_id.as_str(), a.at.as_millis(), a.actor, a.kind, a.detail],
    )?;
    Ok(())
}

fn row_to_pending(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<PendingEffect, StoreError>> {
    let id: i64 = r.get(0)?;
    let run_id: String = r.get(1)?;
    let body: String = r.get(2)?;
    let due: i64 = r.get(3)?;
    let attempt: i64 = r.get(4)?;
    let created: i64 = r.get(5)?;
    Ok((|| {
        Ok(PendingEffect {
            id,
            run_id: parse_run_id(&run_id)?,
            effect: from_json(&body)?,
            due: Timestamp::from_millis(due),
            attempt: attempt.max(1) as u32,
            created: Timestamp::from_millis(created),
        })
    })())
}

fn parse_run_id(s: &str) -> Result<RunId, StoreError> {
    RunId::parse(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChannelId, SlackUserId};
    use crate::workflow::effect::{Lane, Scheduled};
    use crate::workflow::policy::Policy;
    use crate::workflow::run::Trigger;

    pub(super) fn run(group: &str, at: i64) -> Run {
        Run::new(
            RunId::generate(),
            ReplicationGroupId::parse(group).unwrap(),
            ChannelId::parse("C0123ABCD").unwrap(),
            Trigger::Command {
                user: SlackUserId::parse("U0123ABCD").unwrap(),
                response_url: None,
            },
            None,
            Policy::default(),
            Timestamp::from_millis(at),
        )
    }

    pub(super) fn decided(next: Option<Run>, change: Change) -> Decided {
        Decided {
            next,
            change,
            submitted: crate::workflow::machine::Submitted::Ignored(String::new()),
            summary: String::new(),
            progress: Default::default(),
        }
    }

    pub(super) fn first_effects(at: i64) -> Change {
        Change {
            effects: vec![Scheduled {
                effect: Effect::FetchPlan,
                due: Timestamp::from_millis(at),
            }],
            ..Change::default()
        }
    }

    #[test]
    fn pruning_forgets_only_what_is_finished_and_older_than_its_retention_in_batches() {
        const DAY: i64 = 86_400_000;
        let t = Timestamp::from_millis;
        let store = SqliteStore::open_in_memory().unwrap();
        let count = |table: &str| -> i64 {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            store.conn().query_row(&sql, [], |r| r.get(0)).unwrap()
        };
        let finish = |id: &RunId, at: i64| {
            store
                .update_run(id, None, t(at), move |r| {
                    let mut next = r.clone();
                    next.state = crate::workflow::run::State::Finished {
                        plan: None,
                        outcome: crate::workflow::run::Outcome::Expired,
                    };
                    let audit = (0..3).map(|i| {
                        AuditEntry::new(Timestamp::from_millis(at), "test", "step", format!("{i}"))
                    });
                    let change = Change {
                        audit: audit.collect(),
                        ..Change::default()
                    };
                    decided(Some(next), change)
                })
                .unwrap();
        };
        let done_effects = |id: &RunId, at: i64| {
            for p in store.pending_effects(Some(id)).unwrap() {
                store.complete_effect(p.id, id, t(at), &[]).unwrap();
            }
        };
        // Finished 38 days ago: gone, with its audit and effects.
        let old = run("old-group", DAY);
        store.create_run(&old, first_effects(DAY)).unwrap();
        done_effects(&old.id, DAY);
        finish(&old.id, 2 * DAY);
        // Finished 5 days ago: kept, and so is its effect done then.
        let recent = run("recent-group", 30 * DAY);
        store.create_run(&recent, first_effects(30 * DAY)).unwrap();
        done_effects(&recent.id, 35 * DAY);
        finish(&recent.id, 35 * DAY);
        // Finished long ago with a message still to send: kept until it is sent.
        let waiting = run("waiting-group", DAY);
        store.create_run(&waiting, first_effects(DAY)).unwrap();
        finish(&waiting.id, 2 * DAY);
        // Active since long ago: kept, with its pending effect; an old done effect of it goes.
        let active = run("active-group", DAY);
        store.create_run(&active, first_effects(DAY)).unwrap();
        done_effects(&active.id, 20 * DAY);
        let more = Change {
            effects: vec![Scheduled {
                effect: Effect::PollGroup,
                due: t(DAY),
            }],
            ..Change::default()
        };
        store
            .update_run(&active.id, None, t(DAY), |r| decided(Some(r.clone()), more))
            .unwrap();
        for (id, at) in [("eventbridge:old", DAY), ("eventbridge:new", 39 * DAY)] {
            let record = AlarmRecord {
                delivery_id: id.into(),
                at: t(at),
                name: "Redis memory: x".into(),
                state: "ALARM".into(),
                group: None,
                outcome: "unknown_group".into(),
            };
            let notice = WindowedNotice {
                key: format!("unknown_group:{id}"),
                window: std::time::Duration::from_secs(3600),
                post: NewJob {
                    kind: "notice".into(),
                    body: "{}".into(),
                    due: t(at),
                },
                update: NewJob {
                    kind: "notice_repeated".into(),
                    body: "{}".into(),
                    due: t(at),
                },
            };
            assert!(store.record_alarm(&record, Some(&notice)).unwrap());
        }
        let (jobs, _) = store.due_jobs(t(DAY), &[], 10).unwrap();
        store.complete_job(jobs[0].id, t(DAY)).unwrap();
        let before = [
            count("runs"),
            count("audit"),
            count("effects"),
            count("jobs"),
            count("alarms"),
            count("notice_windows"),
        ];
        assert_eq!(before, [4, 9, 5, 2, 2, 2]);

        let keep = Retention {
            runs: std::time::Duration::from_secs(30 * 86_400),
            records: std::time::Duration::from_secs(7 * 86_400),
        };
        let now = t(40 * DAY);
        // In batches of one: each pass takes at most one row of each kind.
        let first = store.prune(now, keep, 1).unwrap();
        assert!(first.full(1), "{first:?}");
        assert!(
            first.effects <= 2 && first.runs <= 1 && first.audit <= 1,
            "{first:?}"
        );
        let mut passes = 1;
        while store.prune(now, keep, 1).unwrap().full(1) {
            passes += 1;
            assert!(passes < 20, "pruning ends");
        }
        assert!(store.run(&old.id).unwrap().is_none(), "the old run is gone");
        assert!(store.run(&recent.id).unwrap().is_some());
        assert!(store.run(&active.id).unwrap().is_some());
        assert!(store.audit_trail(&old.id).unwrap().is_empty());
        assert_eq!(store.audit_trail(&recent.id).unwrap().len(), 3);
        let pending = store.pending_effects(Some(&active.id)).unwrap();
        assert_eq!(pending.len(), 1, "pending work is never pruned");
        // Runs: recent, waiting, active; audit: recent's and waiting's; effects: recent's done
        // one and the two pending; jobs: the pending one; alarms and windows: the recent ones.
        let after = [
            count("runs"),
            count("audit"),
            count("effects"),
            count("jobs"),
            count("alarms"),
            count("notice_windows"),
        ];
        assert_eq!(after, [3, 6, 3, 1, 1, 1]);
        assert!(
            store.run(&waiting.id).unwrap().is_some(),
            "its message is not sent yet"
        );
        assert!(!store.alarm_seen("eventbridge:old").unwrap());
        assert!(store.alarm_seen("eventbridge:new").unwrap());
        // Nothing more to do.
        assert_eq!(store.prune(now, keep, 500).unwrap(), Pruned::default());
    }

    /// The scale-down check's timer: set once, due when the store says (a reopened file says
    /// the same), and each turn taken once.
    #[tokio::test]
    async fn a_timer_kept_in_the_store_survives_reopening_and_is_taken_once_per_turn() {
        let dir = std::env::temp_dir().join(format!("turns-{}", crate::domain::RunId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db");
        let t = Timestamp::from_millis;
        let every = std::time::Duration::from_secs(3600);
        {
            let store = SqliteStore::open(&path).unwrap();
            let port: &dyn Store = &store;
            assert_eq!(port.turn_due("scale_down").await.unwrap(), None);
            assert!(port.take_turn("scale_down", every, t(1_000)).await.unwrap());
            assert!(
                !port.take_turn("scale_down", every, t(2_000)).await.unwrap(),
                "not due yet"
            );
        }
        let store = SqliteStore::open(&path).unwrap();
        let port: &dyn Store = &store;
        assert_eq!(
            port.turn_due("scale_down").await.unwrap(),
            Some(t(1_000 + 3_600_000)),
            "a restart does not push it back"
        );
        assert!(
            port.take_turn("scale_down", every, t(3_601_000))
                .await
                .unwrap()
        );
        assert!(
            !port
                .take_turn("scale_down", every, t(3_601_000))
                .await
                .unwrap()
        );
        assert!(port.take_turn("prune", every, t(3_601_000)).await.unwrap());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_forgotten_request_is_taken_again() {
        let store = SqliteStore::open_in_memory().unwrap();
        let keep = std::time::Duration::from_secs(300);
        let t = Timestamp::from_millis;
        let port: &dyn Store = &store;
        assert!(port.remember_request("k", t(1), keep).await.unwrap());
        assert!(!port.remember_request("k", t(2), keep).await.unwrap());
        port.forget_request("k").await.unwrap();
        assert!(port.remember_request("k", t(3), keep).await.unwrap());
    }

    #[test]
    fn only_one_active_run_per_group_is_created() {
        let store = SqliteStore::open_in_memory().unwrap();
        let a = run("prod-jobs", 1);
        let b = run("prod-jobs", 2);
        assert_eq!(
            store.create_run(&a, first_effects(1)).unwrap(),
            Created::Created
        );
        assert_eq!(
            store.create_run(&b, first_effects(2)).unwrap(),
            Created::AlreadyActive(a.id.clone())
        );
        assert!(
            store.run(&b.id).unwrap().is_none(),
            "nothing written for the second"
        );
        assert_eq!(store.pending_effects(None).unwrap().len(), 1);
        let other = run("other-group", 3);
        assert_eq!(
            store.create_run(&other, first_effects(3)).unwrap(),
            Created::Created
        );
    }

    #[test]
    fn a_finished_run_frees_its_group() {
        let store = SqliteStore::open_in_memory().unwrap();
        let a = run("prod-jobs", 1);
        store.create_run(&a, Change::default()).unwrap();
        store
            .update_run(&a.id, None, Timestamp::from_millis(5), |r| {
                let mut next = r.clone();
                next.state = crate::workflow::run::State::Finished {
                    plan: None,
                    outcome: crate::workflow::run::Outcome::Expired,
                };
                decided(Some(next), Change::default())
            })
            .unwrap();
        assert!(store.active_run(&a.group).unwrap().is_none());
        assert_eq!(
            store
                .create_run(&run("prod-jobs", 6), Change::default())
                .unwrap(),
            Created::Created
        );
    }

    #[test]
    fn due_effects_give_each_run_and_lane_its_earliest_effect_only() {
        let store = SqliteStore::open_in_memory().unwrap();
        let a = run("a", 0);
        let change = Change {
            effects: vec![
                Scheduled {
                    effect: Effect::PostTopMessage,
                    due: Timestamp::from_millis(10),
                },
                Scheduled {
                    effect: Effect::UpdateTopMessage,
                    due: Timestamp::from_millis(10),
                },
                Scheduled {
                    effect: Effect::PollGroup,
                    due: Timestamp::from_millis(5),
                },
            ],
            ..Change::default()
        };
        store.create_run(&a, change).unwrap();
        let due = store
            .due_effects(Timestamp::from_millis(4), &[], 10)
            .unwrap();
        assert!(due.is_empty());
        // The work lane's and the chat lane's earliest, side by side, the earlier first.
        let due = store
            .due_effects(Timestamp::from_millis(20), &[], 10)
            .unwrap();
        let effects: Vec<&Effect> = due.iter().map(|p| &p.effect).collect();
        assert_eq!(effects, [&Effect::PollGroup, &Effect::PostTopMessage]);
        assert_eq!(due[0].created, Timestamp::from_millis(0), "{:?}", due[0]);
        let work_busy = [(a.id.clone(), Lane::Work)];
        let due_now = store
            .due_effects(Timestamp::from_millis(20), &work_busy, 10)
            .unwrap();
        let effects: Vec<&Effect> = due_now.iter().map(|p| &p.effect).collect();
        assert_eq!(effects, [&Effect::PostTopMessage], "chat goes on");
        let both_busy = [(a.id.clone(), Lane::Work), (a.id.clone(), Lane::Chat)];
        assert!(
            store
                .due_effects(Timestamp::from_millis(20), &both_busy, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.next_due(&work_busy).unwrap(),
            Some(Timestamp::from_millis(10))
        );
        assert_eq!(
            store.next_due(&[]).unwrap(),
            Some(Timestamp::from_millis(5))
        );
        store
            .complete_effect(due[0].id, &a.id, Timestamp::from_millis(20), &[])
            .unwrap();
        let due = store
            .due_effects(Timestamp::from_millis(20), &[], 10)
            .unwrap();
        assert_eq!(
            due[0].effect,
            Effect::PostTopMessage,
            "then in insertion order"
        );
        assert!(
            store
                .has_later_pending(&a.id, due[0].id, "update_top_message")
                .unwrap()
        );
    }

    #[test]
    fn a_runs_messages_never_overtake_each_other_but_work_goes_on() {
        let store = SqliteStore::open_in_memory().unwrap();
        let a = run("a", 0);
        let change = Change {
            effects: vec![
                // The top message waits out a rate limit…
                Scheduled {
                    effect: Effect::PostTopMessage,
                    due: Timestamp::from_millis(1000),
                },
                // …so the note decided after it waits too, though it is due now…
                Scheduled {
                    effect: Effect::OfferCancel,
                    due: Timestamp::from_millis(0),
                },
                // …while AWS work is not held up.
                Scheduled {
                    effect: Effect::PollGroup,
                    due: Timestamp::from_millis(5),
                },
            ],
            ..Change::default()
        };
        store.create_run(&a, change).unwrap();
        let due = store
            .due_effects(Timestamp::from_millis(10), &[], 10)
            .unwrap();
        assert_eq!(
            due.iter().map(|p| p.effect.clone()).collect::<Vec<_>>(),
            vec![Effect::PollGroup]
        );
        store
            .complete_effect(due[0].id, &a.id, Timestamp::from_millis(10), &[])
            .unwrap();
        assert!(
            store
                .due_effects(Timestamp::from_millis(10), &[], 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.next_due(&[]).unwrap(),
            Some(Timestamp::from_millis(1000))
        );
        let due = store
            .due_effects(Timestamp::from_millis(1000), &[], 10)
            .unwrap();
        assert_eq!(due[0].effect, Effect::PostTopMessage);
        assert!(
            !store
                .mark_started(due[0].id, Timestamp::from_millis(1000))
                .unwrap()
        );
        assert!(
            store
                .mark_started(due[0].id, Timestamp::from_millis(1001))
                .unwrap(),
            "a second start knows"
        );
        store
            .complete_effect(due[0].id, &a.id, Timestamp::from_millis(1000), &[])
            .unwrap();
        let due = store
            .due_effects(Timestamp::from_millis(1000), &[], 10)
            .unwrap();
        assert_eq!(due[0].effect, Effect::OfferCancel);
    }

    #[test]
    fn dropping_work_keeps_messages_and_pages() {
        let store = SqliteStore::open_in_memory().unwrap();
        let a = run("a", 0);
        let change = Change {
            effects: vec![
                Scheduled {
                    effect: Effect::PollGroup,
                    due: Timestamp::from_millis(50),
                },
                Scheduled {
                    effect: Effect::UpdateTopMessage,
                    due: Timestamp::from_millis(0),
                },
            ],
            ..Change::default()
        };
        store.create_run(&a, change).unwrap();
        store
            .update_run(&a.id, None, Timestamp::from_millis(1), |_| {
                decided(
                    None,
                    Change {
                        drop_pending_work: true,
                        ..Change::default()
                    },
                )
            })
            .unwrap();
        let left: Vec<Effect> = store
            .pending_effects(Some(&a.id))
            .unwrap()
            .into_iter()
            .map(|p| p.effect)
            .collect();
        assert_eq!(left, vec![Effect::UpdateTopMessage]);
    }

    /// Repeats counted before the notice was posted are not lost: posting it queues the
    /// update that shows them; a notice posted with no repeat queues nothing.
    #[test]
    fn a_notice_posted_after_repeats_were_counted_queues_their_update() {
        let store = SqliteStore::open_in_memory().unwrap();
        let job = |kind: &str, at: i64| NewJob {
            kind: kind.into(),
            body: "{}".into(),
            due: Timestamp::from_millis(at),
        };
        let delivery = |id: &str, at: i64| AlarmRecord {
            delivery_id: id.into(),
            at: Timestamp::from_millis(at),
            name: "Redis memory".into(),
            state: "ALARM".into(),
            group: None,
            outcome: "unknown_group".into(),
        };
        let notice = |key: &str, at: i64| WindowedNotice {
            key: key.into(),
            window: std::time::Duration::from_secs(3600),
            post: job("post", at),
            update: job("update", at + 10),
        };
        let kinds = |store: &SqliteStore| -> Vec<String> {
            let (due, _) = store
                .due_jobs(Timestamp::from_millis(i64::MAX / 2), &[], 100)
                .unwrap();
            due.into_iter().map(|j| j.kind).collect()
        };
        let ts = MessageTs::parse("1700000000.000100").unwrap();

        // Alone: posted, nothing more to show.
        assert!(
            store
                .record_alarm(&delivery("a-1", 1), Some(&notice("a", 1)))
                .unwrap()
        );
        store.notice_posted("a", &ts, job("after-post", 2)).unwrap();
        assert_eq!(kinds(&store), ["post"]);

        // Two repeats before the post: one update while counting, one queued by the post
        // (the first may have found nothing posted yet and stopped).
        assert!(
            store
                .record_alarm(&delivery("b-1", 1), Some(&notice("b", 1)))
                .unwrap()
        );
        assert!(
            store
                .record_alarm(&delivery("b-2", 2), Some(&notice("b", 2)))
                .unwrap()
        );
        assert!(
            store
                .record_alarm(&delivery("b-3", 3), Some(&notice("b", 3)))
                .unwrap()
        );
        assert_eq!(store.notice_seen("b").unwrap().unwrap().count, 3);
        store.notice_posted("b", &ts, job("after-post", 4)).unwrap();
        assert_eq!(kinds(&store), ["post", "post", "after-post", "update"]);
        // Taken, the update is no longer pending: the next repeat leaves a new one.
        assert_eq!(store.take_notice_update("b").unwrap().unwrap().count, 3);
        store.notice_posted("b", &ts, job("after-post", 5)).unwrap();
        assert_eq!(kinds(&store).len(), 4);
    }

    #[test]
    fn runs_and_audit_survive_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!("ra-store-{}", RunId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let a = run("prod-jobs", 1);
        {
            let store = SqliteStore::open(&path).unwrap();
            let mut change = first_effects(1);
            change.audit.push(AuditEntry::new(
                Timestamp::from_millis(1),
                "U0123ABCD",
                "created",
                "test",
            ));
            store.create_run(&a, change).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.run(&a.id).unwrap().unwrap(), a);
        assert_eq!(store.active_runs().unwrap().len(), 1);
        assert_eq!(store.audit_trail(&a.id).unwrap()[0].kind, "created");
        assert_eq!(
            store.pending_effects(None).unwrap()[0].effect,
            Effect::FetchPlan
        );
        store.check_writable().unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
}
