//! Work a request leaves behind, kept in the store's outbox until it is done: a notice in a
//! channel, an answer to deliver, or a slow look-up whose answer is delivered when it is in
//! (AWS's live status, a dry run, who may approve). The [`JobWorker`] does them, retries what
//! failed on the delivery schedule, and a restart picks up what was left.
//!
//! A job that works something out never delivers it itself: it leaves a [`Job::Respond`] with
//! the answer, so retrying a failed delivery never does the work (a decision!) twice.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tracing::{Instrument, error, info_span, warn};

use crate::domain::{ChannelId, NodeType, ReplicationGroupId, RunId, SlackUserId, Timestamp};
use crate::workflow::machine::Started;
use crate::workflow::policy::{RetryPolicy, plan};
use crate::workflow::ports::{Claim, Failure, NewJob, NoticeSeen, PendingJob, StoreError};
use crate::workflow::preflight;
use crate::workflow::run::{DecisionKind, Trigger};
use crate::workflow::runner::{RunnerError, keep_claim};

use super::requests::{Asker, Start, UserAction, internal};
use super::{Answer, App, AppError, Messenger, Notice};

/// One piece of work left for later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Post a notice in a channel; `window`: the notice window it opens, whose repeats it shows.
    Notice {
        channel: ChannelId,
        notice: Notice,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<String>,
    },
    /// Show on the posted notice of `window` how often its alarm fired since.
    NoticeRepeated {
        channel: ChannelId,
        notice: Notice,
        window: String,
    },
    /// Deliver an answer through a request's `response_url`.
    Respond {
        response_url: String,
        answer: Box<Answer>,
    },
    /// `/redis status`: AWS's view of the group.
    LiveStatus {
        group: ReplicationGroupId,
        response_url: String,
    },
    /// `/redis upsize --dry-run`: the plan, from AWS's answers.
    DryRun {
        group: ReplicationGroupId,
        node_type: Option<NodeType>,
        response_url: String,
    },
    /// A person's decision on a run, once Slack has said whether they are an approver.
    Decide {
        run: RunId,
        user: SlackUserId,
        action: UserAction,
        /// The plan version the person saw.
        #[serde(default)]
        version: Option<u32>,
        response_url: Option<String>,
    },
    /// `/redis upsize`, once Slack has said who the person is.
    Upsize {
        asker: Asker,
        group: ReplicationGroupId,
        node_type: Option<NodeType>,
    },
    /// "Start a run anyway" during the cooldown: approvers only.
    StartAnyway {
        group: ReplicationGroupId,
        user: SlackUserId,
        response_url: Option<String>,
    },
}

impl Job {
    fn kind(&self) -> &'static str {
        match self {
            Job::Notice { .. } => "notice",
            Job::NoticeRepeated { .. } => "notice_repeated",
            Job::Respond { .. } => "respond",
            Job::LiveStatus { .. } => "live_status",
            Job::DryRun { .. } => "dry_run",
            Job::Decide { .. } => "decide",
            Job::Upsize { .. } => "upsize",
            Job::StartAnyway { .. } => "start_anyway",
        }
    }

    /// The job as the outbox keeps it, due at `now`.
    pub fn into_new(self, now: Timestamp) -> Result<NewJob, StoreError> {
        let body = serde_json::to_string(&self).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(NewJob {
            kind: self.kind().to_string(),
            body,
            due: now,
        })
    }
}

impl App {
    /// Post a notice; one that opens a window shows what the window has seen by now, and its
    /// `ts` is kept so that later repeats edit it.
    async fn post_notice(
        &self,
        channel: &ChannelId,
        notice: &Notice,
        window: Option<String>,
        again: bool,
        messenger: &dyn Messenger,
    ) -> Result<(), Failure> {
        let seen = match &window {
            Some(key) => self
                .store
                .notice_seen(key)
                .await
                .map_err(|e| stored(e.into()))?,
            None => None,
        };
        let ts = messenger
            .post_notice(channel, notice, window.as_deref().zip(seen.as_ref()), again)
            .await?;
        if let (Some(key), Some(ts)) = (window, ts) {
            // Repeats counted while it was being posted are shown by an update right after.
            let update = Job::NoticeRepeated {
                channel: channel.clone(),
                notice: notice.clone(),
                window: key.clone(),
            }
            .into_new(self.clock.now())
            .map_err(|e| stored(e.into()))?;
            self.store
                .notice_posted(&key, &ts, update)
                .await
                .map_err(|e| stored(e.into()))?;
            self.jobs_added.notify_one();
        }
        Ok(())
    }

    /// Leave a job for the worker.
    pub(super) async fn leave(&self, job: Job) -> Result<(), AppError> {
        let job = job.into_new(self.clock.now())?;
        self.store.enqueue_job(job).await?;
        self.jobs_added.notify_one();
        Ok(())
    }

    /// Do one job; a retryable failure is tried again later. `again`: an earlier try may have
    /// done the work before it could say so (a crash, a failure after it).
    async fn do_job(
        &self,
        job: Job,
        again: bool,
        messenger: &dyn Messenger,
    ) -> Result<(), Failure> {
        let (response_url, answer) = match job {
            Job::Notice {
                channel,
                notice,
                window,
            } => {
                return (self.post_notice(&channel, &notice, window, again, messenger)).await;
            }
            Job::NoticeRepeated {
                channel,
                notice,
                window,
            } => {
                let seen = self.store.take_notice_update(&window).await;
                return match seen.map_err(|e| stored(e.into()))? {
                    // The window was replaced by a newer one, whose post shows its own count.
                    None => Ok(()),
                    // Not posted yet: the post queues this update again once it is (the
                    // update stays pending), so nothing is lost by stopping here.
                    Some(NoticeSeen { ts: None, .. }) => Ok(()),
                    Some(mut seen) => {
                        let ts = seen.ts.clone().expect("matched above");
                        // Two updates can be in flight at once (the next repeat leaves a new
                        // one as soon as this took its count), and Slack keeps whichever edit
                        // lands last: after each edit, look again and edit once more if the
                        // count moved on, so the last edit always shows the latest count.
                        for _ in 0..4 {
                            (messenger.update_notice(&channel, &ts, &notice, &seen)).await?;
                            match self.store.notice_seen(&window).await {
                                Ok(Some(now))
                                    if now.ts.as_ref() == Some(&ts) && now.count > seen.count =>
                                {
                                    seen = now;
                                }
                                _ => break,
                            }
                        }
                        Ok(())
                    }
                };
            }
            Job::Respond {
                response_url,
                answer,
            } => return messenger.respond(&response_url, &answer).await,
            Job::LiveStatus {
                group,
                response_url,
            } => {
                let answer = match self.aws(&group).describe_group(&group).await {
                    Ok(group) => Answer::LiveStatus { group },
                    Err(e) => Answer::AwsUnreadable {
                        group,
                        error: e.to_string(),
                    },
                };
                (Some(response_url), answer)
            }
            Job::DryRun {
                group,
                node_type,
                response_url,
            } => (Some(response_url), self.dry_run(&group, node_type).await),
            Job::Decide {
                run,
                user,
                action,
                version,
                response_url,
            } => {
                if again && self.already_decided(&run, &user, &action).await {
                    return Ok(());
                }
                let submitted = match self.act_on(&run, &user, action, version).await {
                    // Stopping: the decision waits for the next start, like the run.
                    Err(AppError::Runner(RunnerError::Halted)) => {
                        return Err(Failure::transient("the runner is stopping", None));
                    }
                    other => other,
                };
                return self
                    .tell_unless_accepted(&run, submitted, response_url)
                    .await
                    .map_err(stored);
            }
            Job::Upsize {
                asker,
                group,
                node_type,
            } => {
                let user = asker.user.clone();
                let is_requester = self.directory.is_requester(&user).await;
                let is_approver = self.directory.is_approver(&user).await;
                let started = again.then(|| self.started_by(&group, &user));
                let answer = match started {
                    Some(started) => started.await,
                    None => None,
                };
                let url = asker.response_url.clone();
                let answer = match answer {
                    Some(answer) => answer,
                    None => {
                        let up =
                            self.upsize_as(asker, &group, node_type, is_requester, is_approver);
                        up.await
                    }
                };
                (url, answer)
            }
            Job::StartAnyway {
                group,
                user,
                response_url,
            } => {
                let answer = self.start_anyway_now(&group, &user, again, response_url.clone());
                (response_url, answer.await)
            }
        };
        match response_url {
            Some(response_url) => self
                .leave(Job::Respond {
                    response_url,
                    answer: Box::new(answer),
                })
                .await
                .map_err(stored),
            None => Ok(()),
        }
    }

    async fn dry_run(&self, group: &ReplicationGroupId, node_type: Option<NodeType>) -> Answer {
        let Some(gc) = self.group(group).cloned() else {
            return self.unknown_group(group);
        };
        let aws = self.aws(group);
        let read = async {
            let g = aws.describe_group(group).await?;
            Ok((g, aws.allowed_scale_ups(group).await?))
        };
        let (g, allowed) = match read.await {
            Ok(found) => found,
            Err(e) => {
                let e: crate::workflow::ports::AwsError = e;
                return Answer::AwsUnreadable {
                    group: group.clone(),
                    error: e.to_string(),
                };
            }
        };
        let now = self.clock.now();
        // The same checks a run makes; a dry run shows what it would find.
        let preflight = preflight::read(aws.as_ref(), &g, now, &mut Vec::new(), false)
            .await
            .unwrap_or_default();
        let last_success = self.store.last_success(group).await.ok().flatten();
        Answer::DryRun {
            plan: Box::new(plan(
                &g,
                &allowed,
                node_type.as_ref(),
                &gc.policy,
                &preflight,
            )),
            group: gc,
            last_success,
            now,
        }
    }

    /// Was this person's decision on the run taken by an earlier try of the job?
    async fn already_decided(&self, run: &RunId, user: &SlackUserId, action: &UserAction) -> bool {
        let (kind, node_type) = match action {
            UserAction::Approve | UserAction::ApprovePending => (DecisionKind::Approve, None),
            UserAction::Deny => (DecisionKind::Deny, None),
            UserAction::Cancel => (DecisionKind::Cancel, None),
            UserAction::UpsizeWithoutSnapshot => (DecisionKind::UpsizeWithoutSnapshot, None),
            UserAction::Dismiss => (DecisionKind::Dismiss, None),
            UserAction::Snooze(_) => (DecisionKind::Snooze, None),
            UserAction::ChooseSize(t) => (DecisionKind::ChooseSize, Some(t)),
        };
        let Ok(Some(run)) = self.store.run(run).await else {
            return false;
        };
        run.decisions
            .iter()
            .any(|d| &d.user == user && d.kind == kind && d.node_type.as_ref() == node_type)
    }

    /// The answer for a run an earlier try of this job started, if it did.
    async fn started_by(&self, group: &ReplicationGroupId, user: &SlackUserId) -> Option<Answer> {
        let active = self.store.active_run(group).await.ok()??;
        (active.requested_by() == Some(user)).then(|| Answer::Started {
            id: active.id,
            group: group.clone(),
            channel: None,
        })
    }

    async fn start_anyway_now(
        &self,
        group: &ReplicationGroupId,
        user: &SlackUserId,
        again: bool,
        response_url: Option<String>,
    ) -> Answer {
        if !self.directory.is_approver(user).await {
            return Answer::OnlyApproversStartAnyway;
        }
        if again && let Some(started) = self.started_by(group, user).await {
            return started;
        }
        let trigger = Trigger::Command {
            user: user.clone(),
            response_url,
        };
        match self.start(group, None, trigger, false).await {
            Ok(Start::Started(Started::Created(id))) => Answer::Started {
                id,
                group: group.clone(),
                channel: None,
            },
            Ok(Start::Started(Started::AlreadyActive(id))) => Answer::AlreadyActiveId {
                group: group.clone(),
                id,
            },
            Ok(Start::UnknownGroup) => self.unknown_group(group),
            Err(e) => internal(e),
        }
    }
}

/// A store error while doing a job: worth another try.
fn stored(e: AppError) -> Failure {
    Failure::transient(e.to_string(), None)
}

/// Does the jobs in the outbox as they come due, a few at a time.
pub struct JobWorker {
    app: App,
    messenger: Arc<dyn Messenger>,
    retry: RetryPolicy,
    busy: Arc<Mutex<HashSet<i64>>>,
}

impl JobWorker {
    pub fn new(app: App, messenger: Arc<dyn Messenger>, retry: RetryPolicy) -> JobWorker {
        JobWorker {
            app,
            messenger,
            retry,
            busy: Arc::default(),
        }
    }

    /// Work until `shutdown` resolves, then let the jobs in flight finish (for a while).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let worker = Arc::new(self);
        let mut tasks = JoinSet::new();
        loop {
            // Free every finished task (the select below hears of at most one per turn).
            while tasks.try_join_next().is_some() {}
            let busy: Vec<i64> = worker.busy().iter().copied().collect();
            let now = worker.app.clock.now();
            let next = match worker.app.store.due_jobs(now, &busy, 16).await {
                Ok((due, next)) => {
                    for job in due {
                        worker.busy().insert(job.id);
                        let span = info_span!("job", job = job.id, kind = %job.kind);
                        tasks.spawn(worker.clone().execute(job).instrument(span));
                    }
                    next
                }
                Err(e) => {
                    error!(error = %e, "could not read pending jobs; retrying in 1s");
                    Some(now.plus(Duration::from_secs(1)))
                }
            };
            let mut wait =
                next.map_or(Duration::from_secs(60), |t| t.since(worker.app.clock.now()));
            // A shared store: jobs another replica left (or lost) come due unheard of.
            if let Some(lease) = worker.app.store.lease() {
                wait = wait.min(lease / 2);
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = worker.app.jobs_added.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            warn!("jobs in flight did not finish in time; they stay pending");
        }
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn execute(self: Arc<Self>, job: PendingJob) {
        let _release = Release(self.clone(), job.id);
        let store = &self.app.store;
        let work = async {
            match store.start_job(job.id, self.app.clock.now()).await {
                Ok(started_before) => {
                    let again = started_before || job.attempt > 1;
                    self.clone().attempt(&job, again).await
                }
                Err(e) => Err(Failure::transient(e.to_string(), None)),
            }
        };
        let (claim, clock) = (Claim::Job(job.id), self.app.clock.as_ref());
        let Ok(result) = keep_claim(store.as_ref(), clock, claim, work).await else {
            // Another replica takes the job over; this one writes nothing about it.
            return;
        };
        let now = self.app.clock.now();
        let written: Result<(), StoreError> = match result {
            Ok(()) => store.complete_job(job.id, now).await,
            Err(f) => match self.retry.next_try(job.attempt, f.retryable, f.retry_after) {
                Some(wait) => {
                    store
                        .retry_job(job.id, now.plus(wait), job.attempt + 1)
                        .await
                }
                None => {
                    warn!(job = job.id, kind = %job.kind, attempts = job.attempt, "job gave up: {}", f.error);
                    store.complete_job(job.id, now).await
                }
            },
        };
        if let Err(e) = written {
            error!(job = job.id, error = %e, "job could not be completed; it stays pending");
        }
    }

    /// One try, on its own task: a job that panics is given up on, not retried in a loop.
    async fn attempt(self: Arc<Self>, job: &PendingJob, again: bool) -> Result<(), Failure> {
        let parsed = serde_json::from_str::<Job>(&job.body);
        let job = parsed.map_err(|e| Failure::fatal(format!("unreadable job: {e}")))?;
        let worker = self.clone();
        let task = tokio::spawn(async move {
            let messenger = worker.messenger.clone();
            worker.app.do_job(job, again, messenger.as_ref()).await
        });
        task.await.unwrap_or_else(|e| {
            error!(error = %e, "a job panicked");
            Err(Failure::fatal(format!("the job panicked: {e}")))
        })
    }
}

/// Frees a job for its next try, and wakes the worker, however its task ends.
struct Release(Arc<JobWorker>, i64);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.busy().remove(&self.1);
        self.0.app.jobs_added.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GroupConfig;
    use crate::domain::alarm::{Alarm, AlarmState};
    use crate::workflow::machine::{CannotCancel, Rejection};
    use crate::workflow::policy::{NoPlan, Policy};
    use crate::workflow::run::State;

    fn group() -> ReplicationGroupId {
        ReplicationGroupId::parse("prod-jobs").unwrap()
    }

    fn nt(s: &str) -> NodeType {
        NodeType::parse(s).unwrap()
    }

    /// Every shape a job can take goes into the outbox and comes back out the same.
    #[test]
    fn every_job_reads_back_as_it_was_written() {
        let gc = GroupConfig::new(
            group(),
            ChannelId::parse("C0TESTOPS").unwrap(),
            Policy::default(),
        );
        let now = Timestamp::from_millis(1_764_121_929_000);
        let no_plans = [
            NoPlan::CapUnusable {
                why: "another kind of family".into(),
            },
            NoPlan::AtCap {
                group: group(),
                current: nt("cache.r6g.large"),
                cap: nt("cache.r6g.large"),
            },
            NoPlan::Busy {
                group: group(),
                status: "modifying".into(),
            },
        ];
        let mut answers: Vec<Answer> = no_plans
            .into_iter()
            .map(|why| Answer::DryRun {
                group: gc.clone(),
                plan: Box::new(Err(why)),
                last_success: None,
                now,
            })
            .collect();
        answers.extend([
            Answer::Refused {
                why: Rejection::CannotCancel {
                    why: CannotCancel::Over {
                        state: Box::new(State::Planning),
                    },
                },
            },
            Answer::Refused {
                why: Rejection::NotAllowedSize {
                    node_type: nt("cache.r6g.8xlarge"),
                    choices: vec![nt("cache.r6g.xlarge")],
                },
            },
            Answer::NoSuchRun {
                id: RunId::parse("r-abcdefgh").unwrap(),
            },
            Answer::Internal,
        ]);
        let alarm = Alarm {
            delivery_id: "eventbridge:1".into(),
            name: "Redis memory: prod-jobs".into(),
            description: "Redis memory: prod-jobs above 90%".into(),
            state: AlarmState::Alarm,
            reason: "Threshold Crossed".into(),
            value: Some(93.2),
            dimensions: vec![("ReplicationGroupId".into(), "prod-jobs".into())],
            region: Some("us-east-1".into()),
            account: Some("123456789012".into()),
            at: now,
        };
        let mut jobs: Vec<Job> = answers
            .into_iter()
            .map(|answer| Job::Respond {
                response_url: "https://hooks.slack.com/commands/T1/2/3".into(),
                answer: Box::new(answer),
            })
            .collect();
        jobs.extend([
            Job::Notice {
                channel: gc.channel.clone(),
                notice: Notice::UnknownGroup { alarm },
                window: Some("unknown_group:prod-jobs".into()),
            },
            Job::Decide {
                run: RunId::parse("r-abcdefgh").unwrap(),
                user: SlackUserId::parse("U0ONCALL1").unwrap(),
                action: UserAction::ChooseSize(nt("cache.r6g.2xlarge")),
                version: Some(2),
                response_url: None,
            },
            Job::DryRun {
                group: group(),
                node_type: Some(nt("cache.r6g.xlarge")),
                response_url: "https://hooks.slack.com/commands/T1/2/3".into(),
            },
        ]);
        for job in jobs {
            let stored = job.clone().into_new(now).unwrap();
            assert_eq!(stored.kind, job.kind());
            let back: Job = serde_json::from_str(&stored.body).unwrap();
            assert_eq!(back, job, "{}", stored.body);
        }
    }
}
