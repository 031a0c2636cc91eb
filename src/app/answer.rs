//! What the use cases say back, as data: an [`Answer`] for the person who asked (now, or
//! later through a job), a [`Notice`] for a channel. Transports render them (Slack:
//! `slack::answers`); a job keeps them in the store until they are delivered.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::GroupConfig;
use crate::domain::alarm::Alarm;
use crate::domain::{ChannelId, NodeType, ReplicationGroupId, RunId, Timestamp};
use crate::workflow::machine::Rejection;
use crate::workflow::policy::NoPlan;
use crate::workflow::ports::GroupInfo;
use crate::workflow::run::{Plan, Run};

/// A region and an account, as a notice shows them.
pub use crate::workflow::ports::fleet::Place;

impl From<super::Home> for Place {
    fn from(h: super::Home) -> Place {
        Place {
            region: h.region,
            account: h.account,
        }
    }
}

/// What to tell the person who asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// `/redis runs`.
    Runs {
        runs: Vec<Run>,
        now: Timestamp,
    },
    /// `/redis runs <id>`: one run's audit trail.
    Audit {
        run: Box<Run>,
        entries: Vec<crate::workflow::ports::AuditEntry>,
    },
    OnlyApproversReadAudit,
    /// Whether the person is an approver could not be told in time (a user-group lookup).
    CheckingApprover,
    /// `/redis status`, from the store; `live_follows` when AWS's view comes in a moment.
    Status {
        group: GroupConfig,
        /// Where it is in AWS.
        #[serde(default)]
        place: crate::workflow::ports::fleet::Place,
        active: Option<Run>,
        recent: Vec<Run>,
        now: Timestamp,
        live_follows: bool,
    },
    /// `/redis status`, from DescribeReplicationGroups.
    LiveStatus {
        group: GroupInfo,
    },
    AwsUnreadable {
        group: ReplicationGroupId,
        error: String,
    },
    /// `/redis upsize … --dry-run`: the plan, or why there is none. Nothing changed.
    DryRun {
        group: GroupConfig,
        plan: Box<Result<Plan, NoPlan>>,
        last_success: Option<Run>,
        now: Timestamp,
    },
    DryRunPending {
        group: ReplicationGroupId,
    },
    DryRunNeedsResponseUrl,
    UnknownGroup {
        group: ReplicationGroupId,
        managed: String,
    },
    AboveCap {
        node_type: NodeType,
        group: ReplicationGroupId,
        cap: NodeType,
        command: String,
    },
    CapUnusable {
        node_type: NodeType,
        why: String,
    },
    AlreadyActive {
        run: Box<Run>,
    },
    /// The group has an active run the store could not show.
    AlreadyActiveId {
        group: ReplicationGroupId,
        id: RunId,
    },
    /// A run was started; `channel` is where its plan (and Approve button) will be.
    Started {
        id: RunId,
        group: ReplicationGroupId,
        channel: Option<ChannelId>,
    },
    /// A person's action was accepted: where the run is now.
    Decided {
        run: Box<Run>,
    },
    Refused {
        why: Rejection,
    },
    NothingChanged {
        why: String,
    },
    NoSuchRun {
        id: RunId,
    },
    CheckingCancel {
        id: RunId,
    },
    OnlyApproversStartAnyway,
    /// `/redis upsize` from a channel where it is not accepted.
    WrongChannel {
        channels: Vec<ChannelId>,
    },
    /// `/redis upsize` from someone who may not start runs.
    NotARequester,
    /// Whether the person may start runs needs Slack: the answer follows.
    CheckingRequester {
        group: ReplicationGroupId,
    },
    /// `/redis upsize` within the cooldown after a successful upsize.
    Cooldown {
        group: ReplicationGroupId,
        last: RunId,
        #[serde(with = "crate::domain::duration_ms")]
        since: Duration,
        #[serde(with = "crate::domain::duration_ms")]
        remaining: Duration,
    },
    /// Something went wrong on the bot's side; the log says what.
    Internal,
}

/// A message in a channel that belongs to no run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// An alarm from another region or account than the bot's groups.
    Foreign {
        alarm: Alarm,
        home: Place,
        /// The other accounts and regions the bot manages groups in.
        #[serde(default)]
        others: Vec<Place>,
    },
    /// An alarm that maps to no managed group.
    UnknownGroup { alarm: Alarm },
    /// An alarm during the cooldown after a successful upsize, with "start anyway".
    Cooldown {
        group: ReplicationGroupId,
        alarm: Alarm,
        last: RunId,
        #[serde(with = "crate::domain::duration_ms")]
        since: Duration,
        #[serde(with = "crate::domain::duration_ms")]
        remaining: Duration,
    },
}
