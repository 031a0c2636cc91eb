//! In-memory fakes of the ports, for the runner's tests: a store that keeps the outbox's rules
//! (one effect per run at a time, a run's chat effects in order), an AWS with one group whose
//! snapshot and modification take a given number of polls, and chat, pager and hooks that record
//! what they were asked and fail when told to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::{
    CacheClusterId, MessageTs, NodeType, ReplicationGroupId, RunId, SnapshotName, Timestamp,
};
use crate::workflow::effect::{CancelGone, Effect, GraphMoment, Lane, Note, PageAction};
use crate::workflow::event::HookPhase;
use crate::workflow::ports::*;
use crate::workflow::preflight::{Check, PendingChange, Preflight};
use crate::workflow::run::{Run, TopMessage};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ready<'a, T: Send + 'a>(t: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(t))
}

// ---- the store ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Status {
    Pending,
    Done,
    Dropped,
}

#[derive(Debug, Clone)]
struct Row {
    id: EffectId,
    run: RunId,
    effect: Effect,
    due: Timestamp,
    attempt: u32,
    status: Status,
    started: bool,
    created: Timestamp,
}

#[derive(Default)]
struct Memory {
    runs: HashMap<RunId, Run>,
    effects: Vec<Row>,
    audit: Vec<(RunId, AuditEntry)>,
    alarms: HashMap<String, AlarmRecord>,
    jobs: Vec<(PendingJob, bool)>,
    /// Notice windows: what each saw, and whether an update of it is pending.
    notices: HashMap<String, (NoticeSeen, bool)>,
}

impl Memory {
    fn push_job(&mut self, job: NewJob) {
        let id = self.jobs.len() as i64 + 1;
        let job = PendingJob {
            id,
            kind: job.kind,
            body: job.body,
            due: job.due,
            attempt: 1,
        };
        self.jobs.push((job, false));
    }
}

impl Memory {
    fn write(&mut self, run: &RunId, change: &Change, now: Timestamp) {
        if change.drop_pending_work {
            for row in self.effects.iter_mut() {
                if &row.run == run
                    && row.status == Status::Pending
                    && row.effect.is_droppable_work()
                {
                    row.status = Status::Dropped;
                }
            }
        }
        for s in &change.effects {
            let id = self.effects.len() as EffectId + 1;
            self.effects.push(Row {
                id,
                run: run.clone(),
                effect: s.effect.clone(),
                due: s.due,
                attempt: 1,
                status: Status::Pending,
                started: false,
                created: now,
            });
        }
        for a in &change.audit {
            self.audit.push((run.clone(), a.clone()));
        }
        if let Some(r) = &change.delivery {
            self.alarms
                .entry(r.delivery_id.clone())
                .or_insert_with(|| r.clone());
        }
    }

    /// Pending effects a run may execute now: work, and its earliest pending chat effect.
    fn eligible(&self) -> Vec<&Row> {
        let pending = |r: &&Row| r.status == Status::Pending;
        self.effects
            .iter()
            .filter(pending)
            .filter(|r| {
                r.effect.lane() != Lane::Chat
                    || !self
                        .effects
                        .iter()
                        .filter(pending)
                        .any(|p| p.run == r.run && p.effect.lane() == Lane::Chat && p.id < r.id)
            })
            .collect()
    }

    fn row(&mut self, id: EffectId) -> &mut Row {
        self.effects
            .iter_mut()
            .find(|r| r.id == id)
            .expect("an effect")
    }
}

/// The store, in memory.
#[derive(Default, Clone)]
pub struct MemoryStore(Arc<Mutex<Memory>>);

impl MemoryStore {
    pub fn run(&self, id: &RunId) -> Run {
        lock(&self.0).runs[id].clone()
    }

    pub fn pending(&self) -> Vec<Effect> {
        let m = lock(&self.0);
        let rows = m.effects.iter().filter(|r| r.status == Status::Pending);
        rows.map(|r| r.effect.clone()).collect()
    }

    pub fn audit(&self, id: &RunId) -> Vec<AuditEntry> {
        let m = lock(&self.0);
        m.audit
            .iter()
            .filter(|(r, _)| r == id)
            .map(|(_, a)| a.clone())
            .collect()
    }
}

impl Store for MemoryStore {
    fn create_run<'a>(
        &'a self,
        run: &'a Run,
        change: Change,
    ) -> BoxFuture<'a, Result<Created, StoreError>> {
        let mut m = lock(&self.0);
        let active = m
            .runs
            .values()
            .find(|r| r.group == run.group && !r.is_finished());
        if let Some(active) = active {
            return ready(Ok(Created::AlreadyActive(active.id.clone())));
        }
        m.runs.insert(run.id.clone(), run.clone());
        m.write(&run.id, &change, run.created_at);
        ready(Ok(Created::Created))
    }

    fn update_run<'a>(
        &'a self,
        id: &'a RunId,
        completed: Option<EffectId>,
        now: Timestamp,
        decide: Decide,
    ) -> BoxFuture<'a, Result<Decided, StoreError>> {
        let mut m = lock(&self.0);
        let Some(run) = m.runs.get(id).cloned() else {
            return ready(Err(StoreError::RunNotFound(id.clone())));
        };
        let decided = decide(&run);
        if let Some(next) = &decided.next {
            m.runs.insert(id.clone(), next.clone());
        }
        if let Some(e) = completed {
            m.row(e).status = Status::Done;
        }
        m.write(id, &decided.change, now);
        ready(Ok(decided))
    }

    fn run<'a>(&'a self, id: &'a RunId) -> BoxFuture<'a, Result<Option<Run>, StoreError>> {
        ready(Ok(lock(&self.0).runs.get(id).cloned()))
    }

    fn audit_trail<'a>(
        &'a self,
        id: &'a RunId,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>> {
        ready(Ok(self.audit(id)))
    }

    fn active_run<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Option<Run>, StoreError>> {
        let m = lock(&self.0);
        ready(Ok(m
            .runs
            .values()
            .find(|r| &r.group == group && !r.is_finished())
            .cloned()))
    }

    fn recent_runs<'a>(
        &'a self,
        group: Option<&'a ReplicationGroupId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Run>, StoreError>> {
        let m = lock(&self.0);
        let mut runs: Vec<Run> = m
            .runs
            .values()
            .filter(|r| group.is_none_or(|g| &r.group == g))
            .cloned()
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        runs.truncate(limit);
        ready(Ok(runs))
    }

    fn last_success<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
    ) -> BoxFuture<'a, Result<Option<Run>, StoreError>> {
        let m = lock(&self.0);
        let done = m
            .runs
            .values()
            .filter(|r| &r.group == group && r.state_name() == "succeeded");
        ready(Ok(done.max_by_key(|r| r.updated_at).cloned()))
    }

    fn due_effects<'a>(
        &'a self,
        now: Timestamp,
        busy: &'a [Busy],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PendingEffect>, StoreError>> {
        let m = lock(&self.0);
        let mut first: HashMap<(&RunId, Lane), &Row> = HashMap::new();
        for r in m.eligible() {
            let e = first.entry((&r.run, r.effect.lane())).or_insert(r);
            if (r.due, r.id) < (e.due, e.id) {
                *e = r;
            }
        }
        let mut due: Vec<&Row> = first
            .into_values()
            .filter(|r| r.due <= now && !busy.contains(&(r.run.clone(), r.effect.lane())))
            .collect();
        due.sort_by_key(|r| (r.due, r.id));
        let pending = due.into_iter().take(limit).map(|r| PendingEffect {
            id: r.id,
            run_id: r.run.clone(),
            effect: r.effect.clone(),
            due: r.due,
            attempt: r.attempt,
            created: r.created,
        });
        ready(Ok(pending.collect()))
    }

    fn next_due<'a>(
        &'a self,
        busy: &'a [Busy],
    ) -> BoxFuture<'a, Result<Option<Timestamp>, StoreError>> {
        let m = lock(&self.0);
        let due = m
            .eligible()
            .into_iter()
            .filter(|r| !busy.contains(&(r.run.clone(), r.effect.lane())))
            .map(|r| r.due);
        ready(Ok(due.min()))
    }

    fn mark_started(
        &self,
        effect: EffectId,
        _: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let mut m = lock(&self.0);
        let row = m.row(effect);
        let before = row.started;
        row.started = true;
        ready(Ok(before))
    }

    fn has_later_pending<'a>(
        &'a self,
        run: &'a RunId,
        effect: EffectId,
        kind: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let m = lock(&self.0);
        let later = m.effects.iter().any(|r| {
            &r.run == run && r.status == Status::Pending && r.effect.name() == kind && r.id > effect
        });
        ready(Ok(later))
    }

    fn complete_effect<'a>(
        &'a self,
        effect: EffectId,
        run: &'a RunId,
        _: Timestamp,
        audit: Vec<AuditEntry>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut m = lock(&self.0);
        m.row(effect).status = Status::Done;
        m.audit.extend(audit.into_iter().map(|a| (run.clone(), a)));
        ready(Ok(()))
    }

    fn retry_effect<'a>(
        &'a self,
        effect: EffectId,
        run: &'a RunId,
        due: Timestamp,
        attempt: u32,
        audit: Vec<AuditEntry>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut m = lock(&self.0);
        let row = m.row(effect);
        (row.due, row.attempt) = (due, attempt);
        m.audit.extend(audit.into_iter().map(|a| (run.clone(), a)));
        ready(Ok(()))
    }

    fn pending_count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        ready(Ok(self.pending().len() as u64))
    }

    fn pending_effects<'a>(
        &'a self,
        run: Option<&'a RunId>,
    ) -> BoxFuture<'a, Result<Vec<PendingEffect>, StoreError>> {
        let m = lock(&self.0);
        let mut rows: Vec<&Row> = m
            .effects
            .iter()
            .filter(|r| r.status == Status::Pending && run.is_none_or(|id| &r.run == id))
            .collect();
        rows.sort_by_key(|r| (r.due, r.id));
        let pending = rows.into_iter().map(|r| PendingEffect {
            id: r.id,
            run_id: r.run.clone(),
            effect: r.effect.clone(),
            due: r.due,
            attempt: r.attempt,
            created: r.created,
        });
        ready(Ok(pending.collect()))
    }

    fn recent_alarms(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AlarmRecord>, StoreError>> {
        let m = lock(&self.0);
        let mut alarms: Vec<AlarmRecord> = m.alarms.values().cloned().collect();
        alarms.sort_by_key(|a| std::cmp::Reverse(a.at));
        alarms.truncate(limit);
        ready(Ok(alarms))
    }

    fn last_alarm<'a>(
        &'a self,
        group: &'a ReplicationGroupId,
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Option<AlarmRecord>, StoreError>> {
        let m = lock(&self.0);
        let found = m
            .alarms
            .values()
            .filter(|a| a.group.as_deref() == Some(group.as_str()))
            .filter(|a| a.state == "ALARM" && a.at >= since)
            .max_by_key(|a| a.at)
            .cloned();
        ready(Ok(found))
    }

    fn enqueue_job<'a>(&'a self, job: NewJob) -> BoxFuture<'a, Result<(), StoreError>> {
        lock(&self.0).push_job(job);
        ready(Ok(()))
    }

    fn due_jobs<'a>(
        &'a self,
        now: Timestamp,
        busy: &'a [i64],
        limit: usize,
    ) -> BoxFuture<'a, Result<DueJobs, StoreError>> {
        let m = lock(&self.0);
        let open = m
            .jobs
            .iter()
            .filter(|(j, done)| !done && !busy.contains(&j.id));
        let (due, later): (Vec<_>, Vec<_>) =
            open.map(|(j, _)| j.clone()).partition(|j| j.due <= now);
        let next = later.iter().map(|j| j.due).min();
        ready(Ok((due.into_iter().take(limit).collect(), next)))
    }

    fn start_job(&self, _: i64, _: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
        ready(Ok(false))
    }

    fn complete_job(&self, id: i64, _: Timestamp) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut m = lock(&self.0);
        m.jobs
            .iter_mut()
            .filter(|(j, _)| j.id == id)
            .for_each(|(_, done)| *done = true);
        ready(Ok(()))
    }

    fn retry_job(
        &self,
        id: i64,
        due: Timestamp,
        attempt: u32,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut m = lock(&self.0);
        for (j, _) in m.jobs.iter_mut().filter(|(j, _)| j.id == id) {
            (j.due, j.attempt) = (due, attempt);
        }
        ready(Ok(()))
    }

    fn alarm_seen<'a>(&'a self, delivery_id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(lock(&self.0).alarms.contains_key(delivery_id)))
    }

    fn record_alarm(
        &self,
        record: AlarmRecord,
        notice: Option<WindowedNotice>,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let new = {
            let mut m = lock(&self.0);
            if m.alarms.contains_key(&record.delivery_id) {
                false
            } else {
                m.alarms.insert(record.delivery_id.clone(), record);
                true
            }
        };
        if new && let Some(n) = notice {
            let mut m = lock(&self.0);
            let now = n.post.due;
            match m.notices.get_mut(&n.key) {
                Some((seen, pending)) if now.since(seen.first_at) < n.window => {
                    seen.count += 1;
                    seen.last_at = seen.last_at.max(now);
                    if !*pending {
                        *pending = true;
                        m.push_job(n.update);
                    }
                }
                _ => {
                    let seen = NoticeSeen {
                        count: 1,
                        first_at: now,
                        last_at: now,
                        ts: None,
                    };
                    m.notices.insert(n.key.clone(), (seen, false));
                    m.push_job(n.post);
                }
            }
        }
        ready(Ok(new))
    }

    fn notice_seen<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<NoticeSeen>, StoreError>> {
        ready(Ok(lock(&self.0).notices.get(key).map(|(s, _)| s.clone())))
    }

    fn notice_posted<'a>(
        &'a self,
        key: &'a str,
        ts: &'a MessageTs,
        update: NewJob,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut m = lock(&self.0);
        let pending = match m.notices.get_mut(key) {
            Some((s, pending)) => {
                s.ts = Some(ts.clone());
                *pending
            }
            None => false,
        };
        if pending {
            m.push_job(update);
        }
        ready(Ok(()))
    }

    fn take_notice_update<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<NoticeSeen>, StoreError>> {
        let mut m = lock(&self.0);
        let seen = m.notices.get_mut(key).map(|(s, pending)| {
            if s.ts.is_some() {
                *pending = false;
            }
            s.clone()
        });
        ready(Ok(seen))
    }

    fn remember_request<'a>(
        &'a self,
        _: &'a str,
        _: Timestamp,
        _: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(true))
    }

    fn forget_request<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(Ok(()))
    }

    fn check_writable(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        ready(Ok(()))
    }

    fn prune(
        &self,
        _: Timestamp,
        _: Retention,
        _: usize,
    ) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        ready(Ok(Pruned::default()))
    }
}

// ---- AWS ---------------------------------------------------------------------------------

struct Group {
    node_type: NodeType,
    /// The modification in progress, and how many more polls it takes.
    moving: Option<(NodeType, u32)>,
}

#[derive(Default)]
struct Cloud {
    groups: HashMap<ReplicationGroupId, Group>,
    /// Snapshot → polls left until available.
    snapshots: HashMap<SnapshotName, u32>,
    calls: Vec<&'static str>,
    /// Answer this many calls with `Throttling`.
    throttle: u32,
    /// What the preflight finds (default: every check clean), and the pending changes a
    /// recheck reads.
    preflight: Option<Preflight>,
    pending: Option<Check<Vec<PendingChange>>>,
}

/// AWS with one group whose snapshot and modification take a few polls.
#[derive(Clone)]
pub struct FakeAws {
    cloud: Arc<Mutex<Cloud>>,
    polls: u32,
}

impl FakeAws {
    /// `group` on `node_type`; a snapshot or a modification is done after `polls` looks.
    pub fn new(group: &ReplicationGroupId, node_type: &str, polls: u32) -> FakeAws {
        let mut cloud = Cloud::default();
        cloud.groups.insert(
            group.clone(),
            Group {
                node_type: NodeType::parse(node_type).expect("a node type"),
                moving: None,
            },
        );
        FakeAws {
            cloud: Arc::new(Mutex::new(cloud)),
            polls,
        }
    }

    /// The preflight finds `p`; a recheck then reads its pending changes too.
    pub fn set_preflight(&self, p: Preflight) {
        let mut cloud = lock(&self.cloud);
        cloud.pending = Some(p.pending.clone());
        cloud.preflight = Some(p);
    }

    /// A recheck reads `pending`.
    pub fn set_pending(&self, pending: Check<Vec<PendingChange>>) {
        lock(&self.cloud).pending = Some(pending);
    }

    /// Answer the next `n` calls with `Throttling`.
    pub fn throttle(&self, n: u32) {
        lock(&self.cloud).throttle = n;
    }

    /// How many of each call AWS answered (throttled ones excluded).
    pub fn count(&self, call: &str) -> usize {
        lock(&self.cloud)
            .calls
            .iter()
            .filter(|c| **c == call)
            .count()
    }

    pub fn node_type(&self, group: &ReplicationGroupId) -> NodeType {
        lock(&self.cloud).groups[group].node_type.clone()
    }

    fn call<T>(
        &self,
        name: &'static str,
        f: impl FnOnce(&mut Cloud, u32) -> T,
    ) -> Result<T, AwsError> {
        let mut cloud = lock(&self.cloud);
        if cloud.throttle > 0 {
            cloud.throttle -= 1;
            return Err(AwsError::Transient {
                code: "Throttling".into(),
                message: "Rate exceeded".into(),
            });
        }
        cloud.calls.push(name);
        Ok(f(&mut cloud, self.polls))
    }
}

fn info(id: &ReplicationGroupId, g: &Group) -> GroupInfo {
    GroupInfo {
        id: id.clone(),
        status: if g.moving.is_some() {
            GroupStatus::Modifying
        } else {
            GroupStatus::Available
        },
        node_type: Some(g.node_type.clone()),
        members: vec![CacheClusterId::parse("fake-001").expect("an id")],
        cluster_mode: ClusterMode::Disabled,
        shards: 1,
        pending: Vec::new(),
    }
}

fn scale_ups(g: &GroupInfo) -> Vec<NodeType> {
    crate::domain::node_types::scale_ups_from(g.node_type.as_ref().expect("a type"))
}

fn describe(cloud: &mut Cloud, id: &ReplicationGroupId) -> GroupInfo {
    let g = cloud.groups.get_mut(id).expect("the fake's group");
    if let Some((to, left)) = g.moving.take() {
        match left {
            0 => g.node_type = to,
            n => g.moving = Some((to, n - 1)),
        }
    }
    info(id, g)
}

/// Memory read as an upsize that worked: 93 % before, 51 % after.
impl Verify for FakeAws {
    fn around_upsize<'a>(
        &'a self,
        _: &'a mut Attempt,
        _: Timestamp,
        _: Timestamp,
    ) -> BoxFuture<'a, Result<AroundUpsize, AwsError>> {
        let read = self.call("GetMetricData", |_, _| AroundUpsize {
            before: Some(93.0),
            after: Some(51.0),
        });
        Box::pin(std::future::ready(read))
    }
}

impl Aws for FakeAws {
    fn fetch_plan<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<PlanFacts, AwsError>> {
        let id = at.run.group.clone();
        ready(self.call("DescribeReplicationGroups", |c, _| {
            let group = describe(c, &id);
            let allowed = scale_ups(&group);
            let preflight = c.preflight.clone().unwrap_or_else(Preflight::clean);
            PlanFacts {
                group,
                allowed,
                preflight,
                forecast: None,
                prices: None,
            }
        }))
    }

    fn look_again<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<LookAgain, AwsError>> {
        let id = at.run.group.clone();
        ready(self.call("DescribeReplicationGroups", |c, _| {
            let group = describe(c, &id);
            let allowed = scale_ups(&group);
            let pending = c.pending.clone().unwrap_or(Check::Known(Vec::new()));
            LookAgain {
                group,
                allowed,
                pending,
            }
        }))
    }

    fn create_snapshot<'a>(
        &'a self,
        _: &'a mut Attempt,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<SnapshotStatus, AwsError>> {
        ready(self.call("CreateSnapshot", |c, polls| {
            c.snapshots.entry(name.clone()).or_insert(polls);
            SnapshotStatus::Creating
        }))
    }

    fn poll_snapshot<'a>(
        &'a self,
        _: &'a mut Attempt,
        name: &'a SnapshotName,
    ) -> BoxFuture<'a, Result<Option<SnapshotStatus>, AwsError>> {
        ready(self.call("DescribeSnapshots", |c, _| {
            let left = c.snapshots.get_mut(name)?;
            *left = left.saturating_sub(1);
            Some(if *left == 0 {
                SnapshotStatus::Available
            } else {
                SnapshotStatus::Creating
            })
        }))
    }

    fn modify_node_type<'a>(
        &'a self,
        at: &'a mut Attempt,
        target: &'a NodeType,
    ) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        let id = at.run.group.clone();
        ready(self.call("ModifyReplicationGroup", |c, polls| {
            let g = c.groups.get_mut(&id).expect("the fake's group");
            g.moving = Some((target.clone(), polls));
            info(&id, g)
        }))
    }

    fn poll_group<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<GroupInfo, AwsError>> {
        let id = at.run.group.clone();
        ready(self.call("DescribeReplicationGroups", |c, _| describe(c, &id)))
    }
}

// ---- chat, pager, hooks ------------------------------------------------------------------

/// How many of the next calls fail, and how.
#[derive(Clone, Copy)]
struct Failing {
    calls: u32,
    retryable: bool,
    retry_after: Option<Duration>,
}

/// Records what it was asked to say, in order; fails the next calls when told to.
#[derive(Clone, Default)]
pub struct Recorder {
    said: Arc<Mutex<Vec<String>>>,
    /// The next calls that fail.
    failing: Arc<Mutex<Option<Failing>>>,
    /// How long each call takes to answer (a slow Slack).
    latency: Arc<Mutex<Duration>>,
}

impl Recorder {
    pub fn said(&self) -> Vec<String> {
        lock(&self.said).clone()
    }

    /// Every call answers after `latency` (what it says is recorded when it answers).
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    pub fn fail_next(&self, calls: u32, retryable: bool, retry_after: Option<Duration>) {
        *lock(&self.failing) = Some(Failing {
            calls,
            retryable,
            retry_after,
        });
    }

    fn say<T>(&self, what: String, ok: T) -> BoxFuture<'static, Result<T, Failure>>
    where
        T: Send + 'static,
    {
        let mut failing = lock(&self.failing);
        if let Some(f) = *failing {
            let left = f.calls - 1;
            *failing = (left > 0).then_some(Failing { calls: left, ..f });
            let failure = Failure {
                error: format!("{what} failed (test)"),
                retryable: f.retryable,
                retry_after: f.retry_after,
            };
            return ready(Err(failure));
        }
        let latency = *lock(&self.latency);
        let said = self.said.clone();
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            lock(&said).push(what);
            Ok(ok)
        })
    }
}

fn note_name(note: &Note) -> String {
    let debug = format!("{note:?}");
    debug
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_string()
}

impl Chat for Recorder {
    fn post_top_message<'a>(
        &'a self,
        at: &'a mut Attempt,
    ) -> BoxFuture<'a, Result<Option<TopMessage>, Failure>> {
        let top = TopMessage {
            channel: at.run.channel.clone(),
            ts: MessageTs::parse("1700000000.000100").expect("a ts"),
            permalink: None,
            check_duplicates_after_ms: None,
        };
        let top = (at.run.message.is_none()).then_some(top);
        self.say("top".into(), top)
    }

    fn update_top_message<'a>(&'a self, at: &'a mut Attempt) -> BoxFuture<'a, Result<(), Failure>> {
        self.say(format!("update:{}", at.run.state_name()), ())
    }

    fn post_note<'a>(
        &'a self,
        _: &'a mut Attempt,
        note: &'a Note,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        self.say(format!("note:{}", note_name(note)), ())
    }

    fn reply<'a>(
        &'a self,
        _: &'a mut Attempt,
        note: &'a Note,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        self.say(format!("reply:{}", note_name(note)), ())
    }

    fn offer_cancel<'a>(
        &'a self,
        at: &'a mut Attempt,
    ) -> BoxFuture<'a, Result<Option<MessageTs>, Failure>> {
        let ts = at
            .run
            .is_cancellable()
            .then(|| MessageTs::parse("1700000000.000200").expect("a ts"));
        self.say("offer_cancel".into(), ts)
    }

    fn check_duplicate_top<'a>(&'a self, _: &'a mut Attempt) -> BoxFuture<'a, Result<(), Failure>> {
        self.say("check_duplicate_top".into(), ())
    }

    fn repeat_line<'a>(
        &'a self,
        at: &'a mut Attempt,
    ) -> BoxFuture<'a, Result<Option<MessageTs>, Failure>> {
        let ts = (at.run.message.is_some() && at.run.repeats.line.is_none())
            .then(|| MessageTs::parse("1700000000.000300").expect("a ts"));
        let said = format!("repeat_line x{}", at.run.alarm_repeats);
        self.say(said, ts)
    }

    fn withdraw_cancel_offer<'a>(
        &'a self,
        _: &'a mut Attempt,
        _: &'a MessageTs,
        _: &'a CancelGone,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        self.say("withdraw_cancel".into(), ())
    }
}

impl Graphs for Recorder {
    fn post_graph<'a>(
        &'a self,
        _: &'a mut Attempt,
        moment: GraphMoment,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        self.say(format!("graph {}", moment.as_str()), ())
    }
}

impl Pager for Recorder {
    fn page<'a>(
        &'a self,
        _: &'a mut Attempt,
        action: &'a PageAction,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        self.say(action.name().into(), ())
    }
}

impl Hooks for Recorder {
    fn call<'a>(
        &'a self,
        _: &'a mut Attempt,
        phase: HookPhase,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        self.say(format!("{phase:?}").to_lowercase(), ())
    }
}
