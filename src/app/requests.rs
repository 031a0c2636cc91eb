//! What people ask: start a run, act on one, status, a dry run, the recent runs, cancel. Each
//! answers at once; what needs AWS or Slack first is left as a job whose answer arrives a
//! moment later (through the request's `response_url`).

use serde::{Deserialize, Serialize};

use crate::domain::node_types::within_cap;
use crate::domain::{ChannelId, NodeType, ReplicationGroupId, RunId, SlackUserId};
use crate::workflow::event::{Actor, Event};
use crate::workflow::machine::{Rejection, StartRequest, Started, Submitted, withdrawable};
use crate::workflow::policy::{ApprovalMode, in_cooldown};
use crate::workflow::ports::StoreError;
use crate::workflow::run::{Outcome, Run, State, Trigger};
use crate::workflow::runner::RunnerError;

use super::jobs::Job;
use super::{Answer, App, AppError};

/// A person's decision on a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", content = "node_type", rename_all = "snake_case")]
pub enum UserAction {
    Approve,
    /// Approve, and the pending changes the card showed with it.
    ApprovePending,
    Deny,
    Cancel,
    ChooseSize(NodeType),
    /// After the snapshot failed: upsize without one.
    UpsizeWithoutSnapshot,
    /// A scale-down suggestion: not now (for `scale_down_after`), or not for this long.
    Dismiss,
    Snooze(std::time::Duration),
}

/// Who is asking, from which channel, and where to answer them later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asker {
    pub user: SlackUserId,
    pub channel: Option<ChannelId>,
    pub response_url: Option<String>,
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("`{0}` is not a group this bot manages. Managed groups: {1}.")]
    UnknownGroup(ReplicationGroupId, String),
    #[error(transparent)]
    App(#[from] AppError),
}

/// What starting a run for a group came to.
pub(super) enum Start {
    Started(Started),
    UnknownGroup,
}

impl App {
    /// Start a run for a managed group.
    pub async fn start_run(
        &self,
        group: &ReplicationGroupId,
        requested_type: Option<NodeType>,
        trigger: Trigger,
    ) -> Result<Started, StartError> {
        match self.start(group, requested_type, trigger, false).await? {
            Start::Started(s) => Ok(s),
            Start::UnknownGroup => Err(StartError::UnknownGroup(
                group.clone(),
                self.managed_groups(),
            )),
        }
    }

    /// Start a run; `needs_approval`: whatever the group's policy, a person must approve it
    /// (a request from someone who is no approver).
    pub(super) async fn start(
        &self,
        group: &ReplicationGroupId,
        requested_type: Option<NodeType>,
        trigger: Trigger,
        needs_approval: bool,
    ) -> Result<Start, AppError> {
        let Some(gc) = self.group(group) else {
            return Ok(Start::UnknownGroup);
        };
        let mut policy = gc.policy.clone();
        if needs_approval {
            policy.approval = ApprovalMode::Required;
        }
        let req = StartRequest {
            group: group.clone(),
            channel: gc.channel.clone(),
            trigger,
            requested_type,
            policy,
        };
        Ok(Start::Started(self.runner.start(req).await?))
    }

    /// A person acts on a run: whether they are an approver is asked here (of Slack, when the
    /// cache can't say), the rules are the machine's.
    pub async fn act(
        &self,
        run: &RunId,
        user: &SlackUserId,
        action: UserAction,
    ) -> Result<Submitted, AppError> {
        self.act_on(run, user, action, None).await
    }

    /// [`App::act`] for the plan `version` the person saw.
    pub(super) async fn act_on(
        &self,
        run: &RunId,
        user: &SlackUserId,
        action: UserAction,
        version: Option<u32>,
    ) -> Result<Submitted, AppError> {
        let is_approver = self.directory.is_approver(user).await;
        self.act_as(run, user, is_approver, action, version).await
    }

    async fn act_as(
        &self,
        run: &RunId,
        user: &SlackUserId,
        is_approver: bool,
        action: UserAction,
        version: Option<u32>,
    ) -> Result<Submitted, AppError> {
        let actor = Actor {
            user: user.clone(),
            is_approver,
        };
        let event = match action {
            UserAction::Approve => Event::Approve {
                actor,
                version,
                acknowledged: false,
            },
            UserAction::ApprovePending => Event::Approve {
                actor,
                version,
                acknowledged: true,
            },
            UserAction::Deny => Event::Deny { actor, version },
            UserAction::Cancel => Event::Cancel { actor },
            UserAction::UpsizeWithoutSnapshot => Event::UpsizeWithoutSnapshot { actor },
            UserAction::Dismiss => Event::Dismiss { actor },
            UserAction::Snooze(snooze) => Event::Snooze { actor, snooze },
            UserAction::ChooseSize(node_type) => Event::ChooseSize {
                actor,
                node_type,
                version,
            },
        };
        Ok(self.runner.submit(run, event).await?)
    }

    /// `/redis runs`.
    pub async fn runs(&self) -> Answer {
        match self.store.recent_runs(None, 10).await {
            Ok(runs) => Answer::Runs {
                runs,
                now: self.clock.now(),
            },
            Err(e) => internal(e),
        }
    }

    /// `/redis runs <id>`: the run's audit trail, for approvers (it names who did what).
    pub async fn audit(&self, user: &SlackUserId, id: &RunId) -> Answer {
        // Within the slash command's 3 s: a user-group lookup that takes longer is a refusal
        // that says to try again, not a late answer Slack drops.
        let approver = match self.directory.cached_verdict(user) {
            Some(v) => v,
            None => {
                let ask = self.directory.is_approver(user);
                match tokio::time::timeout(std::time::Duration::from_secs(2), ask).await {
                    Ok(v) => v,
                    Err(_) => return Answer::CheckingApprover,
                }
            }
        };
        if !approver {
            return Answer::OnlyApproversReadAudit;
        }
        match self.store.run(id).await {
            Ok(Some(run)) => match self.store.audit_trail(id).await {
                Ok(entries) => Answer::Audit {
                    run: Box::new(run),
                    entries,
                },
                Err(e) => internal(e),
            },
            Ok(None) => Answer::NoSuchRun { id: id.clone() },
            Err(e) => internal(e),
        }
    }

    /// `/redis status <group>`: what the store knows now; AWS's view follows when there is a
    /// `response_url` to send it to.
    pub async fn status(&self, group: &ReplicationGroupId, response_url: Option<String>) -> Answer {
        let Some(gc) = self.group(group).cloned() else {
            return self.unknown_group(group);
        };
        let found = async {
            let active = self.store.active_run(group).await?;
            Ok::<_, StoreError>((active, self.store.recent_runs(Some(group), 5).await?))
        };
        let (active, recent) = match found.await {
            Ok(found) => found,
            Err(e) => return internal(e),
        };
        let live_follows = match response_url {
            Some(response_url) => {
                let job = Job::LiveStatus {
                    group: group.clone(),
                    response_url,
                };
                self.leave(job).await.is_ok()
            }
            None => false,
        };
        Answer::Status {
            place: self.place_of(group),
            group: gc,
            active,
            recent,
            now: self.clock.now(),
            live_follows,
        }
    }

    /// `/redis upsize <group> [node-type] [--dry-run]`. A dry run is open to all; a run only
    /// to requesters, from a command channel, outside the cooldown.
    pub async fn upsize(
        &self,
        asker: Asker,
        group: &ReplicationGroupId,
        node_type: Option<NodeType>,
        dry_run: bool,
    ) -> Answer {
        let Some(gc) = self.group(group).cloned() else {
            return self.unknown_group(group);
        };
        if let (Some(t), Some(cap)) = (&node_type, &gc.policy.max_node_type) {
            match within_cap(t, cap) {
                Ok(true) => {}
                Ok(false) => {
                    return Answer::AboveCap {
                        node_type: t.clone(),
                        group: group.clone(),
                        cap: cap.clone(),
                        command: self.config.slack.command.clone(),
                    };
                }
                Err(why) => {
                    return Answer::CapUnusable {
                        node_type: t.clone(),
                        why,
                    };
                }
            }
        }
        if dry_run {
            let Some(response_url) = asker.response_url else {
                return Answer::DryRunNeedsResponseUrl;
            };
            let job = Job::DryRun {
                group: group.clone(),
                node_type,
                response_url,
            };
            return match self.leave(job).await {
                Ok(()) => Answer::DryRunPending {
                    group: group.clone(),
                },
                Err(e) => internal(e),
            };
        }
        let channels = &self.config.slack.command_channels;
        if !asker.channel.as_ref().is_some_and(|c| channels.contains(c)) {
            return Answer::WrongChannel {
                channels: channels.clone(),
            };
        }
        let user = &asker.user;
        let directory = &self.directory;
        match (
            directory.cached_requester(user),
            directory.cached_verdict(user),
        ) {
            (Some(is_requester), Some(is_approver)) => {
                self.upsize_as(asker, group, node_type, is_requester, is_approver)
                    .await
            }
            // Who they are needs Slack: decided a moment later.
            _ => {
                let job = Job::Upsize {
                    asker,
                    group: group.clone(),
                    node_type,
                };
                match self.leave(job).await {
                    Ok(()) => Answer::CheckingRequester {
                        group: group.clone(),
                    },
                    Err(e) => internal(e),
                }
            }
        }
    }

    /// The rest of `/redis upsize`, once it is known who is asking.
    pub(super) async fn upsize_as(
        &self,
        asker: Asker,
        group: &ReplicationGroupId,
        node_type: Option<NodeType>,
        is_requester: bool,
        is_approver: bool,
    ) -> Answer {
        let Some(gc) = self.group(group).cloned() else {
            return self.unknown_group(group);
        };
        if !is_requester {
            return Answer::NotARequester;
        }
        let found = async {
            let mut active = self.store.active_run(group).await?;
            // A scale-down suggestion gives way to a person's upsize (when it can at once).
            if let Some(run) = active.as_ref().filter(|r| withdrawable(r)) {
                let reason = format!("<@{}> asked for an upsize", asker.user);
                match self.give_way(run, &reason, std::time::Duration::ZERO).await {
                    Ok(_) => active = self.store.active_run(group).await?,
                    Err(e) => tracing::warn!(error = %e, "could not withdraw a suggestion"),
                }
            }
            Ok::<_, StoreError>((active, self.last_upsize(group).await?))
        };
        let last = match found.await {
            Ok((Some(active), _)) => {
                return Answer::AlreadyActive {
                    run: Box::new(active),
                };
            }
            Ok((None, last)) => last,
            Err(e) => return internal(e),
        };
        if let Some(c) = in_cooldown(last.as_ref(), gc.policy.cooldown, self.clock.now()) {
            return Answer::Cooldown {
                group: group.clone(),
                last: c.last,
                since: c.since,
                remaining: c.remaining,
            };
        }
        let trigger = Trigger::Command {
            user: asker.user,
            response_url: asker.response_url,
        };
        match self.start(group, node_type, trigger, !is_approver).await {
            Ok(Start::Started(Started::Created(id))) => Answer::Started {
                id,
                group: group.clone(),
                channel: Some(gc.channel),
            },
            Ok(Start::Started(Started::AlreadyActive(id))) => self.already_active(group, &id).await,
            Ok(Start::UnknownGroup) => self.unknown_group(group),
            Err(e) => internal(e),
        }
    }

    /// `/redis cancel <run>`: decided now when who the person is is known, else a moment later.
    pub async fn cancel(
        &self,
        user: &SlackUserId,
        run: &RunId,
        response_url: Option<String>,
    ) -> Answer {
        match self.directory.cached_verdict(user) {
            Some(is_approver) => {
                let cancel = UserAction::Cancel;
                let submitted = self.act_as(run, user, is_approver, cancel, None).await;
                decided(run, submitted)
            }
            None => {
                let job = Job::Decide {
                    run: run.clone(),
                    user: user.clone(),
                    action: UserAction::Cancel,
                    version: None,
                    response_url,
                };
                match self.leave(job).await {
                    Ok(()) => Answer::CheckingCancel { id: run.clone() },
                    Err(e) => internal(e),
                }
            }
        }
    }

    /// A click on a run's buttons. Accepted decisions show in the run's message and thread;
    /// a refusal is told to the person who clicked, privately, a moment later.
    pub async fn click(
        &self,
        user: &SlackUserId,
        run: &RunId,
        action: UserAction,
        version: Option<u32>,
        response_url: Option<String>,
    ) -> Result<(), AppError> {
        let Some(is_approver) = self.directory.cached_verdict(user) else {
            let job = Job::Decide {
                run: run.clone(),
                user: user.clone(),
                action,
                version,
                response_url,
            };
            return self.leave(job).await;
        };
        let submitted = self.act_as(run, user, is_approver, action, version).await;
        self.tell_unless_accepted(run, submitted, response_url)
            .await
    }

    /// "Add a reason" under a denial: the run, when `user` is the person who denied it (the
    /// modal that asks why is opened for them only); otherwise the person is told why not.
    pub async fn denial_to_explain(
        &self,
        user: &SlackUserId,
        id: &RunId,
        response_url: Option<String>,
    ) -> Result<Option<Run>, AppError> {
        let run = self.store.run(id).await?;
        let refusal = match &run {
            Some(r) => match &r.state {
                State::Finished {
                    outcome: Outcome::Denied { by },
                    ..
                } if by == user => return Ok(run),
                State::Finished {
                    outcome: Outcome::Denied { by },
                    ..
                } => Rejection::NotYourDenial {
                    denied_by: Some(by.clone()),
                },
                _ => Rejection::NotYourDenial { denied_by: None },
            },
            None => Rejection::NotYourDenial { denied_by: None },
        };
        self.tell_unless_accepted(id, Ok(Submitted::Rejected(refusal)), response_url)
            .await?;
        Ok(None)
    }

    /// The modal submitted: why `user` denied the run.
    pub async fn explain_denial(
        &self,
        user: &SlackUserId,
        id: &RunId,
        reason: String,
    ) -> Result<Submitted, AppError> {
        let actor = Actor {
            user: user.clone(),
            is_approver: self.directory.cached_verdict(user).unwrap_or(false),
        };
        Ok(self
            .runner
            .submit(id, Event::DenialExplained { actor, reason })
            .await?)
    }

    /// "Plan again" after a run stopped because the group changed: a new run, planned from the
    /// group as it is now, by the same rules as `/redis upsize`; the answer comes a moment
    /// later.
    pub async fn replan(&self, asker: Asker, group: &ReplicationGroupId) -> Result<(), AppError> {
        let job = Job::Upsize {
            asker,
            group: group.clone(),
            node_type: None,
        };
        self.leave(job).await
    }

    /// "Start a run anyway" on a cooldown notice: approvers only, answered a moment later.
    pub async fn start_anyway(
        &self,
        user: &SlackUserId,
        group: &ReplicationGroupId,
        response_url: Option<String>,
    ) -> Result<(), AppError> {
        let job = Job::StartAnyway {
            group: group.clone(),
            user: user.clone(),
            response_url,
        };
        self.leave(job).await
    }

    /// Answer a decision privately unless it was accepted (then the thread shows it).
    pub(super) async fn tell_unless_accepted(
        &self,
        run: &RunId,
        submitted: Result<Submitted, AppError>,
        response_url: Option<String>,
    ) -> Result<(), AppError> {
        if matches!(submitted, Ok(Submitted::Accepted(_))) {
            return Ok(());
        }
        let answer = decided(run, submitted);
        match response_url {
            Some(response_url) => {
                self.leave(Job::Respond {
                    response_url,
                    answer: Box::new(answer),
                })
                .await
            }
            None => Ok(()),
        }
    }

    pub(super) fn unknown_group(&self, group: &ReplicationGroupId) -> Answer {
        Answer::UnknownGroup {
            group: group.clone(),
            managed: self.managed_groups(),
        }
    }

    async fn already_active(&self, group: &ReplicationGroupId, id: &RunId) -> Answer {
        match self.store.run(id).await {
            Ok(Some(active)) => Answer::AlreadyActive {
                run: Box::new(active),
            },
            _ => Answer::AlreadyActiveId {
                group: group.clone(),
                id: id.clone(),
            },
        }
    }
}

/// What to tell a person about their decision on `run`.
pub(super) fn decided(run: &RunId, submitted: Result<Submitted, AppError>) -> Answer {
    match submitted {
        Ok(Submitted::Accepted(run)) => Answer::Decided { run },
        Ok(Submitted::Rejected(why)) => Answer::Refused { why },
        Ok(Submitted::Ignored(why)) => Answer::NothingChanged { why },
        Err(AppError::Runner(RunnerError::Store(StoreError::RunNotFound(_)))) => {
            Answer::NoSuchRun { id: run.clone() }
        }
        Err(e) => internal(e),
    }
}

/// Something went wrong on our side: the log has it (and where in the code, since at info no
/// request span says which request it was), the person is asked to try again.
#[track_caller]
pub(super) fn internal(e: impl std::fmt::Display) -> Answer {
    let at = std::panic::Location::caller();
    tracing::error!(error = %e, %at, "internal error answering a request");
    Answer::Internal
}
