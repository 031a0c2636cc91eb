//! Who may approve (`slack.approvers`) and who may start runs (`slack.requesters`): the users
//! listed, and the members of the user groups listed (resolved with `usergroups.users.list` and
//! cached for a few minutes, one cache for both lists).
//!
//! Fails closed: when Slack can't say who is in a group and nothing is cached, the person is
//! not an approver (and the log says why).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::domain::{Approver, SlackUserGroupId, SlackUserId};

use crate::workflow::ports::BoxFuture;

use super::api::SlackClient;

/// How long a user group's membership is trusted before it is read again.
const MEMBERSHIP_TTL: Duration = Duration::from_secs(300);
/// When Slack can't be asked, how old a membership may be and still be used.
const STALE_LIMIT: Duration = Duration::from_secs(1800);

pub struct ApproverDirectory {
    approvers: Vec<Approver>,
    requesters: Vec<Approver>,
    slack: SlackClient,
    cache: Mutex<HashMap<SlackUserGroupId, (Instant, Vec<SlackUserId>)>>,
}

impl ApproverDirectory {
    pub fn new(approvers: Vec<Approver>, requesters: Vec<Approver>, slack: SlackClient) -> Self {
        ApproverDirectory {
            approvers,
            requesters,
            slack,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Is `user` an approver, directly or through a user group?
    pub async fn is_approver(&self, user: &SlackUserId) -> bool {
        self.is_in(&self.approvers, user).await
    }

    /// May `user` start runs, directly or through a user group?
    pub async fn is_requester(&self, user: &SlackUserId) -> bool {
        self.is_in(&self.requesters, user).await
    }

    async fn is_in(&self, list: &[Approver], user: &SlackUserId) -> bool {
        if list.contains(&Approver::User(user.clone())) {
            return true;
        }
        for entry in list {
            if let Approver::Group(group) = entry
                && self.members(group).await.contains(user)
            {
                return true;
            }
        }
        false
    }

    /// Whether `user` is an approver, without calling Slack, when the cache can say: `None`
    /// when a user group's members have never been read.
    pub fn cached_verdict(&self, user: &SlackUserId) -> Option<bool> {
        self.cached_in(&self.approvers, user)
    }

    /// Whether `user` may start runs, when the cache can say.
    pub fn cached_requester(&self, user: &SlackUserId) -> Option<bool> {
        self.cached_in(&self.requesters, user)
    }

    fn cached_in(&self, list: &[Approver], user: &SlackUserId) -> Option<bool> {
        if list.contains(&Approver::User(user.clone())) {
            return Some(true);
        }
        let cache = self.lock();
        let mut unknown = false;
        for approver in list {
            if let Approver::Group(group) = approver {
                match cache.get(group) {
                    // Too old to trust without asking Slack again.
                    Some((at, _)) if at.elapsed() >= MEMBERSHIP_TTL => unknown = true,
                    Some((_, members)) if members.contains(user) => return Some(true),
                    Some(_) => {}
                    None => unknown = true,
                }
            }
        }
        if unknown { None } else { Some(false) }
    }

    /// Read every approver user group's members now (at start, then periodically), so that
    /// clicks can be decided without waiting on Slack.
    pub async fn refresh(&self) {
        for approver in self.approvers.iter().chain(&self.requesters) {
            if let Approver::Group(group) = approver {
                let _ = self.fetch(group).await;
            }
        }
    }

    /// Ask Slack for a group's members and cache the answer.
    async fn fetch(&self, group: &SlackUserGroupId) -> Option<Vec<SlackUserId>> {
        match self.slack.usergroup_members(group).await {
            Ok(members) => {
                self.lock()
                    .insert(group.clone(), (Instant::now(), members.clone()));
                Some(members)
            }
            Err(e) => {
                warn!(usergroup = %group, error = %e, "could not read user group members");
                None
            }
        }
    }

    /// Does the config name any user group (so there is something to refresh)?
    pub fn has_groups(&self) -> bool {
        (self.approvers.iter().chain(&self.requesters)).any(|a| matches!(a, Approver::Group(_)))
    }

    async fn members(&self, group: &SlackUserGroupId) -> Vec<SlackUserId> {
        let cached = self.lock().get(group).cloned();
        if let Some((at, members)) = &cached
            && at.elapsed() < MEMBERSHIP_TTL
        {
            return members.clone();
        }
        match self.fetch(group).await {
            Some(members) => members,
            // A recent answer beats none; an old one is not trusted: nobody from this group
            // may approve until Slack answers again (fail closed).
            None => cached
                .filter(|(at, _)| at.elapsed() < STALE_LIMIT)
                .map(|(_, m)| m)
                .unwrap_or_default(),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SlackUserGroupId, (Instant, Vec<SlackUserId>)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl crate::app::Directory for ApproverDirectory {
    fn cached_verdict(&self, user: &SlackUserId) -> Option<bool> {
        ApproverDirectory::cached_verdict(self, user)
    }

    fn is_approver<'a>(&'a self, user: &'a SlackUserId) -> BoxFuture<'a, bool> {
        Box::pin(ApproverDirectory::is_approver(self, user))
    }

    fn cached_requester(&self, user: &SlackUserId) -> Option<bool> {
        ApproverDirectory::cached_requester(self, user)
    }

    fn is_requester<'a>(&'a self, user: &'a SlackUserId) -> BoxFuture<'a, bool> {
        Box::pin(ApproverDirectory::is_requester(self, user))
    }

    fn refresh(&self) -> BoxFuture<'_, ()> {
        Box::pin(ApproverDirectory::refresh(self))
    }

    fn has_groups(&self) -> bool {
        ApproverDirectory::has_groups(self)
    }
}
