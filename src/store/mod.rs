//! Durable state in one SQLite file: runs, their audit trail, and pending effects (an outbox).
//!
//! A transition and the effects it schedules are written in one transaction, before any of
//! those effects runs; an effect is marked done in the same transaction that records its
//! result. A unique partial index keeps at most one active run per replication group, so no
//! race between two alarms can start two runs.
//!
//! This module knows how to store a run, not what a run should do.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::domain::{ReplicationGroupId, RunId, Timestamp};
use crate::workflow::effect::{Effect, Scheduled};
use crate::workflow::run::Run;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error("run {0} not found")]
    RunNotFound(RunId),
}

/// An entry of a run's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// Who or what: a Slack user id, `alarm`, `aws`, `slack`, `pagerduty`, `hook`, `policy`, `timer`.
    pub actor: String,
    /// What kind of entry: an event name, an effect name, `rejected`, …
    pub kind: String,
    pub detail: String,
}

impl AuditEntry {
    pub fn new(
        at: Timestamp,
        actor: impl Into<String>,
        kind: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        AuditEntry {
            at,
            actor: actor.into(),
            kind: kind.into(),
            detail: detail.into(),
        }
    }
}

/// One alarm delivery and what it did.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRecord {
    pub delivery_id: String,
    pub name: String,
    pub state: String,
    pub group: Option<String>,
    pub outcome: String,
}

/// A pending effect as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEffect {
    pub id: i64,
    pub run_id: RunId,
    pub effect: Effect,
    pub due: Timestamp,
    /// 1 for the first try; raised on each retry.
    pub attempt: u32,
}

/// What a change to a run writes besides the run itself.
#[derive(Debug, Default)]
pub struct Change {
    pub effects: Vec<Scheduled>,
    pub drop_pending_work: bool,
    pub audit: Vec<AuditEntry>,
}

/// The result of trying to create a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    Created,
    /// The group already has an active run; nothing was written.
    AlreadyActive(RunId),
}

/// The SQLite store. Cheap to share behind an `Arc`; calls are short and serialised.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
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
"#;

impl Store {
    /// Open (creating if needed) the database file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL keeps readers off the writer's back; FULL makes every commit durable, because a
        // lost transition could mean a repeated snapshot or a lost page.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock can't leave a half-written transaction behind
        // (SQLite rolls it back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Can the store be written right now? (`/readyz`.)
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let conn = self.conn();
        // Answer quickly: a probe must not hang for the whole busy timeout.
        conn.busy_timeout(std::time::Duration::from_millis(500))?;
        let result = conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;");
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        result?;
        Ok(())
    }

    /// Insert a new run with its first effects, unless its group already has an active run.
    pub fn create_run(&self, run: &Run, change: &Change) -> Result<Created, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT id FROM runs WHERE group_id = ?1 AND active = 1",
                params![run.group.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok(Created::AlreadyActive(parse_run_id(&id)?));
        }
        tx.execute(
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
        write_change(&tx, &run.id, change, run.updated_at)?;
        tx.commit()?;
        Ok(Created::Created)
    }

    /// Change a run in one transaction: `f` sees the stored run and returns the next one (or
    /// `None` to leave it as is) with what to write alongside. `completed` is the effect whose
    /// result this is; it is marked done in the same transaction.
    pub fn update_run<T>(
        &self,
        id: &RunId,
        completed: Option<i64>,
        now: Timestamp,
        f: impl FnOnce(&Run) -> (Option<Run>, Change, T),
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let body: Option<String> = tx
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
        let (next, change, out) = f(&run);
        if let Some(next) = &next {
            tx.execute(
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
            tx.execute(
                "UPDATE effects SET status = 'done', done_at = ?2 WHERE id = ?1 AND status = 'pending'",
                params![effect_id, now.as_millis()],
            )?;
        }
        write_change(&tx, id, &change, now)?;
        tx.commit()?;
        Ok(out)
    }

    /// Put an effect back in the queue for another attempt.
    pub fn retry_effect(
        &self,
        effect_id: i64,
        due: Timestamp,
        attempt: u32,
        audit: &AuditEntry,
        run_id: &RunId,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE effects SET due_at = ?2, attempt = ?3 WHERE id = ?1 AND status = 'pending'",
            params![effect_id, due.as_millis(), attempt],
        )?;
        insert_audit(&tx, run_id, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Mark an effect done without changing its run (with a line for the audit trail).
    pub fn complete_effect(
        &self,
        effect_id: i64,
        run_id: &RunId,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE effects SET status = 'done', done_at = ?2 WHERE id = ?1 AND status = 'pending'",
            params![effect_id, now.as_millis()],
        )?;
        if let Some(a) = audit {
            insert_audit(&tx, run_id, a)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Append to a run's audit trail.
    pub fn audit(&self, run_id: &RunId, entry: &AuditEntry) -> Result<(), StoreError> {
        let conn = self.conn();
        insert_audit(&conn, run_id, entry)
    }

    /// For each run not in `busy`, its next pending effect if it is due by `now`.
    ///
    /// One effect per run at a time keeps a run's effects in order (the top message before its
    /// thread replies, replies in the order they were decided).
    pub fn due_effects(
        &self,
        now: Timestamp,
        busy: &[RunId],
        limit: usize,
    ) -> Result<Vec<PendingEffect>, StoreError> {
        let conn = self.conn();
        let sql = format!(
            "{ELIGIBLE}
            SELECT el.id, el.run_id, el.body, el.due_at, el.attempt FROM eligible el
            WHERE el.id = (SELECT e2.id FROM eligible e2 WHERE e2.run_id = el.run_id
                           ORDER BY e2.due_at, e2.id LIMIT 1)
              AND el.due_at <= ?1
            ORDER BY el.due_at, el.id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![now.as_millis()], row_to_pending)?;
        let mut out = Vec::new();
        for row in rows {
            let p = row??;
            if busy.contains(&p.run_id) {
                continue;
            }
            out.push(p);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// When the next pending effect of a run not in `busy` is due.
    pub fn next_due(&self, busy: &[RunId]) -> Result<Option<Timestamp>, StoreError> {
        let conn = self.conn();
        let sql = format!("{ELIGIBLE} SELECT run_id, MIN(due_at) FROM eligible GROUP BY run_id");
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut next: Option<i64> = None;
        for row in rows {
            let (run, due) = row?;
            if busy.iter().any(|b| b.as_str() == run) {
                continue;
            }
            next = Some(next.map_or(due, |n: i64| n.min(due)));
        }
        Ok(next.map(Timestamp::from_millis))
    }

    /// Note that an effect is being executed. Returns whether an earlier execution had already
    /// started it (and so may have done its work before the process stopped).
    pub fn mark_started(&self, effect_id: i64, now: Timestamp) -> Result<bool, StoreError> {
        let conn = self.conn();
        let before: Option<i64> = conn
            .query_row(
                "SELECT started_at FROM effects WHERE id = ?1",
                params![effect_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        if before.is_none() {
            conn.execute(
                "UPDATE effects SET started_at = ?2 WHERE id = ?1",
                params![effect_id, now.as_millis()],
            )?;
        }
        Ok(before.is_some())
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
            "SELECT id, run_id, body, due_at, attempt FROM effects
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
    /// run). Returns false if the delivery was recorded before.
    pub fn record_alarm(
        &self,
        delivery_id: &str,
        at: Timestamp,
        name: &str,
        state: &str,
        group: Option<&ReplicationGroupId>,
        outcome: &str,
    ) -> Result<bool, StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "INSERT OR IGNORE INTO alarms (delivery_id, at, name, state, group_id, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                delivery_id,
                at.as_millis(),
                name,
                state,
                group.map(|g| g.as_str()),
                outcome
            ],
        )?;
        Ok(n > 0)
    }

    /// The alarm log, newest first.
    pub fn recent_alarms(&self, limit: usize) -> Result<Vec<AlarmRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT delivery_id, name, state, group_id, outcome FROM alarms
             ORDER BY at DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            Ok(AlarmRecord {
                delivery_id: r.get(0)?,
                name: r.get(1)?,
                state: r.get(2)?,
                group: r.get(3)?,
                outcome: r.get(4)?,
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::from)
    }

    /// How many effects wait to be executed (a metric).
    pub fn pending_count(&self) -> Result<u64, StoreError> {
        let conn = self.conn();
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM effects WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }
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
        SELECT e.id, e.run_id, e.body, e.due_at, e.attempt FROM effects e
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
    Ok((|| {
        Ok(PendingEffect {
            id,
            run_id: parse_run_id(&run_id)?,
            effect: from_json(&body)?,
            due: Timestamp::from_millis(due),
            attempt: attempt.max(1) as u32,
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
    use crate::config::Policy;
    use crate::domain::{ChannelId, SlackUserId};
    use crate::workflow::run::Trigger;

    fn run(group: &str, at: i64) -> Run {
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

    fn first_effects(at: i64) -> Change {
        Change {
            effects: vec![Scheduled {
                effect: Effect::FetchPlan,
                due: Timestamp::from_millis(at),
            }],
            ..Change::default()
        }
    }

    #[test]
    fn only_one_active_run_per_group_is_created() {
        let store = Store::open_in_memory().unwrap();
        let a = run("prod-jobs", 1);
        let b = run("prod-jobs", 2);
        assert_eq!(
            store.create_run(&a, &first_effects(1)).unwrap(),
            Created::Created
        );
        assert_eq!(
            store.create_run(&b, &first_effects(2)).unwrap(),
            Created::AlreadyActive(a.id.clone())
        );
        assert!(
            store.run(&b.id).unwrap().is_none(),
            "nothing written for the second"
        );
        assert_eq!(store.pending_effects(None).unwrap().len(), 1);
        let other = run("other-group", 3);
        assert_eq!(
            store.create_run(&other, &first_effects(3)).unwrap(),
            Created::Created
        );
    }

    #[test]
    fn a_finished_run_frees_its_group() {
        let store = Store::open_in_memory().unwrap();
        let a = run("prod-jobs", 1);
        store.create_run(&a, &Change::default()).unwrap();
        store
            .update_run(&a.id, None, Timestamp::from_millis(5), |r| {
                let mut next = r.clone();
                next.state = crate::workflow::run::State::Finished {
                    plan: None,
                    outcome: crate::workflow::run::Outcome::Expired,
                };
                (Some(next), Change::default(), ())
            })
            .unwrap();
        assert!(store.active_run(&a.group).unwrap().is_none());
        assert_eq!(
            store
                .create_run(&run("prod-jobs", 6), &Change::default())
                .unwrap(),
            Created::Created
        );
    }

    #[test]
    fn due_effects_give_each_run_its_earliest_effect_only() {
        let store = Store::open_in_memory().unwrap();
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
        store.create_run(&a, &change).unwrap();
        let due = store
            .due_effects(Timestamp::from_millis(4), &[], 10)
            .unwrap();
        assert!(due.is_empty());
        let due = store
            .due_effects(Timestamp::from_millis(20), &[], 10)
            .unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].effect, Effect::PollGroup);
        assert!(
            store
                .due_effects(Timestamp::from_millis(20), std::slice::from_ref(&a.id), 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.next_due(&[]).unwrap(),
            Some(Timestamp::from_millis(5))
        );
        store
            .complete_effect(due[0].id, &a.id, Timestamp::from_millis(20), None)
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
        let store = Store::open_in_memory().unwrap();
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
        store.create_run(&a, &change).unwrap();
        let due = store
            .due_effects(Timestamp::from_millis(10), &[], 10)
            .unwrap();
        assert_eq!(
            due.iter().map(|p| p.effect.clone()).collect::<Vec<_>>(),
            vec![Effect::PollGroup]
        );
        store
            .complete_effect(due[0].id, &a.id, Timestamp::from_millis(10), None)
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
            .complete_effect(due[0].id, &a.id, Timestamp::from_millis(1000), None)
            .unwrap();
        let due = store
            .due_effects(Timestamp::from_millis(1000), &[], 10)
            .unwrap();
        assert_eq!(due[0].effect, Effect::OfferCancel);
    }

    #[test]
    fn dropping_work_keeps_messages_and_pages() {
        let store = Store::open_in_memory().unwrap();
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
        store.create_run(&a, &change).unwrap();
        store
            .update_run(&a.id, None, Timestamp::from_millis(1), |_| {
                (
                    None,
                    Change {
                        drop_pending_work: true,
                        ..Change::default()
                    },
                    (),
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

    #[test]
    fn runs_and_audit_survive_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!("ra-store-{}", RunId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let a = run("prod-jobs", 1);
        {
            let store = Store::open(&path).unwrap();
            let mut change = first_effects(1);
            change.audit.push(AuditEntry::new(
                Timestamp::from_millis(1),
                "U0123ABCD",
                "created",
                "test",
            ));
            store.create_run(&a, &change).unwrap();
        }
        let store = Store::open(&path).unwrap();
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
