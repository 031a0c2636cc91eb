//! The runner: the thin, effectful half of the workflow. It only dispatches.
//!
//! It commits each decision of [`machine::decide`] to the store together with the effects it
//! schedules, picks due effects (one at a time per run and lane: a run's messages stay in
//! order, and its AWS work never waits on Slack), hands each to its port, feeds the result back
//! as an event, and retries what failed on a persisted schedule (transient failures until
//! their step's deadline). A restart picks up every pending effect where it was.
//!
//! It must not decide anything itself (what to do next is always the machine's answer), and it
//! does no I/O of its own: every call goes through a port.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::domain::RunId;

use super::dispatch::{self, Heard};
use super::effect::Lane;
use super::event::Event;
use super::machine::{self, StartRequest, Started, Submitted};
use super::policy::{AfterFailure, Deliveries, FailedTry};
use super::ports::{
    AlarmRecord, Attempt, AuditEntry, Busy, Claim, Clock, Created, PendingEffect, Ports, Store,
    StoreError,
};
use super::run::Run;

/// Test and demo controls.
#[derive(Debug, Clone, Default)]
pub struct RunnerOptions {
    /// Stop committing and dispatching after this many accepted transitions, as if the
    /// process died right after that commit. Used to test resuming at each step boundary.
    pub halt_after_transitions: Option<usize>,
}

/// Something a run did, as announced to observers (tests, the demo).
#[derive(Debug, Clone)]
pub struct Committed {
    /// Boxed: the announcements' ring holds 1,024 of these from the start, and a `Run` inline
    /// made it 1.5 MiB of resident memory before the first run (48 KiB boxed).
    pub run: Box<Run>,
    pub event: &'static str,
    pub summary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the runner is stopped")]
    Halted,
}

#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    ports: Ports,
    /// How chat messages, pages, hooks and jobs are retried.
    delivery: Deliveries,
    options: RunnerOptions,
    notify: Notify,
    busy: Mutex<HashSet<Busy>>,
    transitions: AtomicUsize,
    halted: AtomicBool,
    /// With `halt_after_transitions` (a test control): commits (and the halt one may cause)
    /// happen under the read side, side by side as ever, and picking effects under the write
    /// side, so that no effect of the halting transition is ever started (as if the process
    /// had died at that commit).
    halt_gate: tokio::sync::RwLock<()>,
    ready: AtomicBool,
    committed: broadcast::Sender<Committed>,
}

/// How long in-flight effects may finish after shutdown before they are left for next time.
const GRACE: Duration = Duration::from_secs(20);

impl Runner {
    pub fn new(ports: Ports, delivery: Deliveries, options: RunnerOptions) -> Runner {
        let (committed, _) = broadcast::channel(1024);
        let inner = Inner {
            ports,
            delivery,
            options,
            notify: Notify::new(),
            busy: Mutex::default(),
            transitions: AtomicUsize::new(0),
            halted: AtomicBool::new(false),
            halt_gate: tokio::sync::RwLock::new(()),
            ready: AtomicBool::new(false),
            committed,
        };
        Runner {
            inner: Arc::new(inner),
        }
    }

    /// Observe every committed transition.
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.inner.committed.subscribe()
    }

    /// True once the dispatcher has started (and so resumed the unfinished runs).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst) && !self.halted()
    }

    fn halted(&self) -> bool {
        self.inner.halted.load(Ordering::SeqCst)
    }

    fn check_running(&self) -> Result<(), RunnerError> {
        (!self.halted()).then_some(()).ok_or(RunnerError::Halted)
    }

    /// Look at the outbox again now (something was added to it).
    pub fn wake(&self) {
        self.inner.notify.notify_one();
    }

    /// Start a run, unless its group already has an active one.
    pub async fn start(&self, req: StartRequest) -> Result<Started, RunnerError> {
        self.check_running()?;
        let now = self.inner.ports.clock.now();
        let (run, change) = machine::open(RunId::generate(), req, now);
        match self.inner.ports.store.create_run(&run, change).await? {
            Created::Created => {
                info!(run_id = %run.id, group = %run.group, "run created");
                self.inner.ports.metrics.run_started(run.trigger.kind());
                self.announce(&run, "created", "run created".into());
                self.wake();
                Ok(Started::Created(run.id))
            }
            Created::AlreadyActive(id) => Ok(Started::AlreadyActive(id)),
        }
    }

    /// Feed an event (a click, an alarm) to a run.
    pub async fn submit(&self, run_id: &RunId, event: Event) -> Result<Submitted, RunnerError> {
        self.apply(run_id, None, event, Vec::new(), None).await
    }

    /// Feed an alarm to a run; its delivery is recorded in the same commit if it is accepted
    /// (in a storm, one write per delivery instead of two).
    pub async fn submit_alarm(
        &self,
        run_id: &RunId,
        event: Event,
        delivery: AlarmRecord,
    ) -> Result<Submitted, RunnerError> {
        self.apply(run_id, None, event, Vec::new(), Some(delivery))
            .await
    }

    fn announce(&self, run: &Run, event: &'static str, summary: String) {
        // Nobody listens in production: no copy of the run for nobody.
        if self.inner.committed.receiver_count() == 0 {
            return;
        }
        let _ = self.inner.committed.send(Committed {
            run: Box::new(run.clone()),
            event,
            summary,
        });
    }

    /// Decide and commit in one store transaction; mark `completed` done in it too.
    async fn apply(
        &self,
        run_id: &RunId,
        completed: Option<i64>,
        event: Event,
        audit: Vec<AuditEntry>,
        delivery: Option<AlarmRecord>,
    ) -> Result<Submitted, RunnerError> {
        self.check_running()?;
        let now = self.inner.ports.clock.now();
        let ev = event.clone();
        let decide =
            Box::new(move |run: &Run| machine::commit(run, &ev, now, audit).recording(delivery));
        let store = &self.inner.ports.store;
        let halts = self.inner.options.halt_after_transitions.is_some();
        let _gate = match halts {
            true => Some(self.inner.halt_gate.read().await),
            false => None,
        };
        let d = store.update_run(run_id, completed, now, decide).await?;
        if let Submitted::Accepted(run) = &d.submitted {
            info!(run_id = %run.id, group = %run.group, event = event.name(), state = run.state_name(), "{}", d.summary);
            self.inner.ports.metrics.progress(&d.progress);
            self.announce(run, event.name(), d.summary);
            let n = self.inner.transitions.fetch_add(1, Ordering::SeqCst) + 1;
            if self.inner.options.halt_after_transitions == Some(n) {
                warn!("halting after {n} transitions (test control)");
                self.inner.halted.store(true, Ordering::SeqCst);
            }
        }
        self.wake();
        Ok(d.submitted)
    }

    /// Execute due effects until `shutdown` resolves; then let in-flight effects finish (for a
    /// while), leaving everything else pending for the next start.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tasks: JoinSet<()> = JoinSet::new();
        self.inner.ready.store(true, Ordering::SeqCst);
        info!("runner started; resuming pending work");
        let Ports { store, clock, .. } = self.inner.ports.clone();
        while !self.halted() {
            // Free every finished task (the select below hears of at most one per turn).
            while let Some(r) = tasks.try_join_next() {
                if let Err(e) = r
                    && e.is_panic()
                {
                    error!("an effect task panicked: {e}");
                }
            }
            let halts = self.inner.options.halt_after_transitions.is_some();
            let gate = match halts {
                true => Some(self.inner.halt_gate.write().await),
                false => None,
            };
            if self.halted() {
                break;
            }
            let due = match store.due_effects(clock.now(), &self.busy_list(), 64).await {
                Ok(due) => due,
                Err(e) => {
                    error!(error = %e, "could not read pending effects; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for p in due {
                self.busy().insert((p.run_id.clone(), p.effect.lane()));
                let span = info_span!("run", run_id = %p.run_id, group = tracing::field::Empty, effect = p.effect.name(), attempt = p.attempt);
                tasks.spawn(self.clone().execute(p).instrument(span));
            }
            drop(gate);
            let next = store.next_due(&self.busy_list()).await.ok().flatten();
            let mut wait = next.map_or(Duration::from_secs(60), |t| t.since(clock.now()));
            // A shared store: another replica's work (or a dead one's claims) can come due
            // without this one hearing of it; look again within a lease.
            if let Some(lease) = store.lease() {
                wait = wait.min(lease / 2);
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.inner.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(Err(e)) = tasks.join_next(), if !tasks.is_empty() => {
                    if e.is_panic() { error!("an effect task panicked: {e}"); }
                }
            }
        }
        if !self.halted() {
            info!(
                in_flight = tasks.len(),
                "runner stopping; letting in-flight effects finish"
            );
            let drain = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(GRACE, drain).await.is_err() {
                warn!("in-flight effects did not finish within {GRACE:?}; they stay pending");
            }
            self.inner.halted.store(true, Ordering::SeqCst);
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        info!("runner stopped");
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, HashSet<Busy>> {
        self.inner.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn busy_list(&self) -> Vec<Busy> {
        self.busy().iter().cloned().collect()
    }

    /// One effect: its port, then the machine (or a retry). The run's lane is freed for its
    /// next effect however this ends, a panic included. In a shared store the claim on it is
    /// renewed while it runs.
    async fn execute(self, pending: PendingEffect) {
        let lane = pending.effect.lane();
        let _release = Release(self.clone(), pending.run_id.clone(), lane);
        let claim = Claim::Effect(pending.id);
        let work = self.try_execute(pending);
        let (store, clock) = (&self.inner.ports.store, &self.inner.ports.clock);
        let Ok(result) = keep_claim(store.as_ref(), clock.as_ref(), claim, work).await else {
            // Another replica takes it over; this one lets it be.
            return;
        };
        if let Err(e) = result
            && !matches!(e, RunnerError::Halted)
        {
            error!(error = %e, "effect could not be completed; it stays pending");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn try_execute(&self, p: PendingEffect) -> Result<(), RunnerError> {
        self.check_running()?;
        let (store, clock) = (&self.inner.ports.store, &self.inner.ports.clock);
        let Some(run) = store.run(&p.run_id).await? else {
            return Err(StoreError::RunNotFound(p.run_id).into());
        };
        tracing::Span::current().record("group", run.group.as_str());
        let (now, kind) = (clock.now(), p.effect.name());
        let superseded =
            p.effect.superseded_by_later() && store.has_later_pending(&run.id, p.id, kind).await?;
        let started_before = p.effect.records_start() && store.mark_started(p.id, now).await?;
        let maybe_done = started_before || p.attempt > 1;
        let Deliveries { retry, retry_for } = self.inner.delivery;
        let policy = p.effect.retry_policy(run.policy.aws_retry, retry);
        let until = p.effect.retry_until(&run, p.created, retry_for);
        let mut at = Attempt::new(run, p.id, p.attempt, maybe_done, clock.clone());
        at.another_try_follows = policy.tries_after(p.attempt, now, until);
        let heard = match superseded {
            true => Heard::Told(None),
            false => dispatch::perform(&self.inner.ports, &mut at, &p.effect).await,
        };
        self.check_running()?;
        let (now, mut audit, run_id) = (clock.now(), at.take_audit(), &at.run.id);
        let event = match heard {
            Heard::Told(event) => event,
            Heard::Failed(f, then) => {
                let (error, n) = (&f.error, p.attempt);
                let jitter = crate::domain::random_fraction();
                match policy.after_failure(FailedTry::of(&f, kind, n, now, jitter), until) {
                    AfterFailure::Retry { due, attempt, line } => {
                        debug!(run_id = %run_id, effect = kind, "{line}");
                        audit.push(AuditEntry::new(now, "runner", "retry", line));
                        let store = store.retry_effect(p.id, run_id, due, attempt, audit);
                        return Ok(store.await?);
                    }
                    AfterFailure::GiveUp { line, deadline } => {
                        warn!(run_id = %run_id, effect = kind, attempts = n, "gave up: {error}");
                        if let Some(line) = line {
                            audit.push(AuditEntry::new(now, "runner", "gave_up", line));
                        }
                        then.map(|e| e.retried_until(deadline))
                    }
                }
            }
        };
        match event {
            Some(event) => drop(self.apply(run_id, Some(p.id), event, audit, None).await?),
            None => store.complete_effect(p.id, run_id, now, audit).await?,
        }
        Ok(())
    }
}

/// This replica no longer holds the claim on some work: another may take it over, so this
/// one stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lost the claim on {0:?}; another replica takes it over")]
pub struct ClaimLost(pub Claim);

/// Run `work`, renewing this replica's claim on it every third of a lease while it runs (a
/// store only this process uses has no lease: `work` simply runs). When the claim is lost (the
/// store says another holds it, or no renewal got through before it ran out) the work is
/// stopped where it is: another replica takes it over, and two never do the same work at once.
pub async fn keep_claim<T>(
    store: &dyn Store,
    clock: &dyn Clock,
    claim: Claim,
    work: impl std::future::Future<Output = T>,
) -> Result<T, ClaimLost> {
    let Some(lease) = store.lease() else {
        return Ok(work.await);
    };
    let every = (lease / 3).max(Duration::from_millis(10));
    // The claim was written at most a moment ago; count its lease from a little earlier.
    let margin = lease / 10;
    // Renewed beside the work, never instead of it: a renewal waiting on the effect's row lock
    // (held by the work's own transaction) must not stop the work from finishing it.
    let renew = async {
        let mut valid_until = clock.now().plus(lease - margin);
        loop {
            tokio::time::sleep(every).await;
            let now = clock.now();
            match store.renew_claim(claim, now).await {
                Ok(true) => valid_until = now.plus(lease - margin),
                Ok(false) => {
                    warn!(
                        ?claim,
                        "lost the claim on work still under way: stopping it; another replica takes it over"
                    );
                    return;
                }
                Err(e) if clock.now() >= valid_until => {
                    warn!(?claim, error = %e, "could not renew the claim before it ran out: stopping the work; another replica takes it over");
                    return;
                }
                Err(e) => warn!(?claim, error = %e, "could not renew a claim; retrying"),
            }
        }
    };
    tokio::pin!(work, renew);
    tokio::select! {
        out = &mut work => Ok(out),
        () = &mut renew => Err(ClaimLost(claim)),
    }
}

/// Frees a run's lane for its next effect, and wakes the dispatcher, when an effect's task ends.
struct Release(Runner, RunId, Lane);

impl Drop for Release {
    fn drop(&mut self) {
        let busy = (self.1.clone(), self.2);
        self.0.busy().remove(&busy);
        self.0.wake();
    }
}
