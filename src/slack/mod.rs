//! Slack: everything that speaks Slack's language.
//!
//! - [`api`]: the Web API client (`chat.postMessage`, `chat.update`, …) over a configurable base
//!   URL (`SLACK_API_URL`), with Slack's rate limits and `ok:false` errors made explicit.
//! - [`chat`]: the workflow's `Chat` port over `api`: a run's messages, rendered by [`blocks`].
//! - [`approvers`]: who may approve, with user-group memberships cached.
//! - [`signature`], [`commands`], [`interactions`]: verifying and parsing what Slack sends.
//! - [`blocks`], [`answers`]: rendering runs and answers into Block Kit.
//! - [`inbound`]: a slash command or an interaction, whatever carried it: parse, call one use
//!   case, the reply as data. The HTTP routes and Socket Mode both call it.
//! - [`socket`]: the Socket Mode transport (`[slack] mode = "socket"`): WebSockets the bot opens
//!   to Slack, envelopes acknowledged and handed to [`inbound`].
//!
//! Rendering and parsing here are pure functions; only `api` and `socket` do I/O (and `chat`,
//! `approvers`, `inbound` through them or the use cases).

pub mod answers;
pub mod api;
pub mod approvers;
pub mod blocks;
pub mod chat;
pub mod commands;
pub mod graph;
pub mod inbound;
pub mod interactions;
pub mod signature;
pub mod socket;

use serde::{Deserialize, Serialize};

/// A message as the bot sends it: Block Kit blocks plus the plain-text fallback Slack shows in
/// notifications and to clients that can't render blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<serde_json::Value>,
}

impl Message {
    /// A text-only message.
    pub fn text(text: impl Into<String>) -> Message {
        Message {
            text: text.into(),
            blocks: Vec::new(),
        }
    }
}
