//! Rendering runs into Slack messages: pure functions from a run to Block Kit plus a
//! plain-text fallback. No I/O and no clock: `now` is an argument.
//!
//! The top message is the run's live checklist; thread replies ([`Note`]) say one thing each.

use serde_json::{Value, json};

use crate::domain::node_types::{lookup, memory_label};
use crate::domain::{NodeType, SlackUserId, Timestamp, format_duration};
use crate::workflow::cost::monthly;
use crate::workflow::effect::{CancelGone, Note};
use crate::workflow::forecast::{Forecast, Trend};
use crate::workflow::policy::SnapshotPolicy;
use crate::workflow::preflight::{
    Check, PendingChange, Preflight, ReservedMemory, SNAPSHOTS_PER_NODE_PER_DAY,
};
use crate::workflow::run::{
    DecisionKind, Direction, Outcome, Plan, Run, ScaleDownEvidence, State, Step, StepRecord,
    StepStatus, Trigger,
};

use super::Message;

/// `action_id`s of the interactive elements on the top message.
pub mod actions {
    pub const APPROVE: &str = "approve";
    /// Approve a plan whose preflight found pending changes (or couldn't tell).
    pub const APPROVE_PENDING: &str = "approve_pending";
    pub const DENY: &str = "deny";
    pub const CHOOSE_SIZE: &str = "choose_size";
    pub const CANCEL: &str = "cancel";
    pub const START_ANYWAY: &str = "start_anyway";
    pub const REPLAN: &str = "replan";
    /// After the snapshot failed: upsize without one.
    pub const WITHOUT_SNAPSHOT: &str = "upsize_without_snapshot";
    /// Under a denial: say why (opens a modal).
    pub const DENIAL_REASON: &str = "add_denial_reason";
    /// Under a scale-down suggestion: not now, and not for a while.
    pub const DISMISS: &str = "dismiss";
    pub const SNOOZE: &str = "snooze";
}

/// The snooze menu of a scale-down suggestion: its values, labels and lengths (the only
/// lengths a click may ask for).
pub const SNOOZE_CHOICES: &[(&str, &str, std::time::Duration)] = &[
    ("1d", "1 day", std::time::Duration::from_secs(86_400)),
    ("3d", "3 days", std::time::Duration::from_secs(3 * 86_400)),
    ("7d", "1 week", std::time::Duration::from_secs(7 * 86_400)),
    (
        "30d",
        "30 days",
        std::time::Duration::from_secs(30 * 86_400),
    ),
];

/// The run's top message as it should look now.
pub fn render_top(run: &Run, now: Timestamp) -> Message {
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": header(run), "emoji": true }
    })];
    blocks.push(section(&why(run)));
    blocks.push(section(&plan_line(run)));
    if let Some(preflight) = preflight_section(run) {
        // What else the change touches.
        blocks.push(section(&preflight));
    }
    blocks.push(section(&checklist(run, now)));
    if let Some(outcome) = outcome_line(run) {
        blocks.push(section(&outcome));
    }
    if let State::AwaitingApproval { plan, .. } = &run.state
        && plan.direction == Direction::Down
    {
        blocks.push(suggestion_actions(run, plan));
    } else if let State::AwaitingApproval { plan, .. } = &run.state {
        // A click says which version of the plan the person saw.
        let versioned = format!("{}:v{}", run.id, plan.version);
        let approve = if plan.needs_acknowledgement() {
            json!({
                "type": "button",
                "action_id": actions::APPROVE_PENDING,
                "text": { "type": "plain_text", "text": "Approve with pending changes", "emoji": true },
                "style": "primary",
                "value": versioned,
                "confirm": {
                    "title": { "type": "plain_text", "text": "Apply pending changes too?" },
                    "text": { "type": "mrkdwn", "text": truncate(&pending_confirm(plan), 300) },
                    "confirm": { "type": "plain_text", "text": "Approve both" },
                    "deny": { "type": "plain_text", "text": "Not yet" }
                }
            })
        } else {
            json!({
                "type": "button",
                "action_id": actions::APPROVE,
                "text": { "type": "plain_text", "text": "Approve", "emoji": true },
                "style": "primary",
                "value": versioned,
            })
        };
        let mut elements = vec![
            approve,
            json!({
                "type": "button",
                "action_id": actions::DENY,
                "text": { "type": "plain_text", "text": "Deny", "emoji": true },
                "style": "danger",
                "value": versioned,
                "confirm": {
                    "title": { "type": "plain_text", "text": "Deny this upsize?" },
                    "text": { "type": "mrkdwn", "text": format!("{} stays on `{}`; nothing is changed.", run.group, plan.current) },
                    "confirm": { "type": "plain_text", "text": "Deny" },
                    "deny": { "type": "plain_text", "text": "Keep waiting" },
                    "style": "danger"
                }
            }),
        ];
        if plan.choices.len() > 1 {
            let option = |t: &NodeType| {
                let mut o = json!({
                    "text": { "type": "plain_text", "text": format!("{t} · {}", memory_label(t)) },
                    "value": t.to_string(),
                });
                if let Some(d) = choice_delta(plan, t) {
                    o["description"] = json!({ "type": "plain_text", "text": d });
                }
                o
            };
            // Slack allows at most 100 options.
            let options: Vec<Value> = plan.choices.iter().take(100).map(option).collect();
            elements.push(json!({
                "type": "static_select",
                "action_id": actions::CHOOSE_SIZE,
                "placeholder": { "type": "plain_text", "text": "Choose size" },
                "options": options,
                "initial_option": option(&plan.target),
            }));
        }
        blocks.push(json!({
            "type": "actions",
            "block_id": format!("run:{versioned}"),
            "elements": elements,
        }));
    }
    // A run that ended without the upsize, with nothing a person decided against it: the
    // next step is a new plan, one click away.
    if let State::Finished { outcome, .. } = &run.state
        && plan_again_helps(run, outcome)
    {
        blocks.push(replan_button(run));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": footer(run) }]
    }));
    Message {
        text: fallback(run),
        blocks,
    }
}

/// A scale-down suggestion's buttons: Approve (with a confirmation that says what it does),
/// Dismiss, and Snooze for a chosen time. No size picker: a suggestion is one step.
fn suggestion_actions(run: &Run, plan: &Plan) -> Value {
    let versioned = format!("{}:v{}", run.id, plan.version);
    let action = if plan.needs_acknowledgement() {
        actions::APPROVE_PENDING
    } else {
        actions::APPROVE
    };
    let mut confirm = format!(
        "{} moves from `{}` to `{}` ({}), {} first.",
        run.group,
        plan.current,
        plan.target,
        memory_label(&plan.target),
        if run.policy.snapshot == SnapshotPolicy::Skip {
            "without a snapshot"
        } else {
            "with a snapshot"
        }
    );
    if plan.needs_acknowledgement() {
        confirm.push(' ');
        confirm.push_str(&pending_confirm(plan));
    }
    let options: Vec<Value> = SNOOZE_CHOICES
        .iter()
        .map(|(value, label, _)| {
            json!({ "text": { "type": "plain_text", "text": *label }, "value": *value })
        })
        .collect();
    json!({
        "type": "actions",
        "block_id": format!("run:{versioned}"),
        "elements": [
            {
                "type": "button",
                "action_id": action,
                "text": { "type": "plain_text", "text": "Approve scale-down", "emoji": true },
                "style": "primary",
                "value": versioned,
                "confirm": {
                    "title": { "type": "plain_text", "text": "Scale down?" },
                    "text": { "type": "mrkdwn", "text": truncate(&confirm, 300) },
                    "confirm": { "type": "plain_text", "text": "Scale down" },
                    "deny": { "type": "plain_text", "text": "Not yet" }
                }
            },
            {
                "type": "button",
                "action_id": actions::DISMISS,
                "text": { "type": "plain_text", "text": "Dismiss", "emoji": true },
                "value": versioned,
            },
            {
                "type": "static_select",
                "action_id": actions::SNOOZE,
                "placeholder": { "type": "plain_text", "text": "Snooze…" },
                "options": options,
            }
        ],
    })
}

/// At most this many pending changes are named in one line; the rest are counted.
const CHANGES_SHOWN: usize = 5;

/// `` `a`, `b` `` … and N more: a list of pending changes short enough for a Slack block.
pub fn changes_list(changes: &[PendingChange]) -> String {
    let mut shown: Vec<String> = changes
        .iter()
        .take(CHANGES_SHOWN)
        .map(|c| format!("`{}`", escape(&truncate(&c.to_string(), 80))))
        .collect();
    if changes.len() > CHANGES_SHOWN {
        shown.push(format!("and {} more", changes.len() - CHANGES_SHOWN));
    }
    shown.join(", ")
}

/// The confirm dialog's text for approving with pending changes.
fn pending_confirm(plan: &Plan) -> String {
    match plan.preflight.as_ref().map(|p| &p.pending) {
        Some(Check::Known(changes)) => format!(
            "Moving to `{}` applies these immediately too: {}.",
            plan.target,
            changes_list(changes)
        ),
        _ => format!(
            "The bot couldn't check for pending changes: you approve not knowing them. It still stops if one shows up before it acts on `{}`.",
            plan.target
        ),
    }
}

/// One line of the preflight, and whether it is a warning (⚠️) or unknown (❔).
struct Item {
    text: String,
    flagged: bool,
}

fn item(text: String) -> Item {
    Item {
        flagged: text.contains('⚠') || text.contains('❔'),
        text: truncate(&text, 600),
    }
}

/// What the preflight found, problems marked ⚠️ and checks that couldn't be read ❔ (never
/// shown as fine).
fn preflight_items(plan: &Plan, p: &Preflight) -> Vec<Item> {
    let replicas = plan.replicas_per_shard();
    let mut items = Vec::new();
    let gib = |t: &NodeType| lookup(t).map(|s| s.memory_gib);
    let tiering = lookup(&plan.current).is_some_and(|s| s.data_tiering);
    let memory = match (gib(&plan.current), gib(&plan.target)) {
        (Some(a), Some(b)) => {
            let tier = if tiering {
                " (data tiering: memory plus SSD; stays within data-tiering types)"
            } else {
                ""
            };
            let usable = |r: &ReservedMemory| {
                format!(
                    "{:.1} → {:.1} GiB for data",
                    r.usable_gib(a),
                    r.usable_gib(b)
                )
            };
            match &p.reserved_memory {
                Check::Known(r @ ReservedMemory::Percent { percent, .. }) => format!(
                    "• Memory per node: {a:.1} → {b:.1} GiB{tier}; net of `reserved-memory-percent` {percent}%: {}",
                    usable(r)
                ),
                Check::Known(
                    r @ ReservedMemory::Bytes {
                        parameter_group,
                        bytes,
                    },
                ) => format!(
                    "• ⚠️ Memory per node: {a:.1} → {b:.1} GiB{tier}, but `{}` reserves a fixed `reserved-memory` of {:.2} GiB ({}): AWS says to change it along with the node type",
                    escape(parameter_group),
                    *bytes as f64 / (1u64 << 30) as f64,
                    usable(r)
                ),
                Check::Unknown(why) => format!(
                    "• Memory per node: {a:.1} → {b:.1} GiB{tier}; ❔ reserved memory unknown ({})",
                    escape(why)
                ),
            }
        }
        _ => format!(
            "• Memory per node: {} → {}",
            memory_label(&plan.current),
            memory_label(&plan.target)
        ),
    };
    items.push(item(memory));
    items.push(item(match &p.pending {
        Check::Known(changes) if changes.is_empty() => {
            "• No pending changes: only the node type changes.".to_string()
        }
        Check::Known(changes) => format!(
            "• ⚠️ *Pending changes* that `ApplyImmediately` applies too: {} — approving applies them now",
            changes_list(changes)
        ),
        Check::Unknown(why) => format!(
            "• ❔ Pending changes: unknown ({}) — approving accepts not knowing; the bot still stops if a change shows up before it acts",
            escape(why)
        ),
    }));
    items.push(item(match &p.manual_snapshots_24h {
        Check::Known(n) if p.snapshot_limit_reached() => format!(
            "• ⚠️ {n} manual snapshots in the last 24 h: AWS allows {SNAPSHOTS_PER_NODE_PER_DAY} per node, so the snapshot will be refused"
        ),
        Check::Known(n) => format!(
            "• Snapshots: {n} manual in the last 24 h (AWS allows {SNAPSHOTS_PER_NODE_PER_DAY} per node)"
        ),
        Check::Unknown(why) => format!(
            "• ❔ Manual snapshots in the last 24 h: unknown ({})",
            escape(why)
        ),
    }));
    if replicas == 0 {
        items.push(item(
            "• ⚠️ No replica: the snapshot is taken from the primary, which forks and needs memory while it is short of it"
                .to_string(),
        ));
    }
    items.push(item(match &p.autoscaling {
        Check::Known(dims) if dims.is_empty() => {
            "• Not registered with Application Auto Scaling.".to_string()
        }
        Check::Known(dims) => format!(
            "• ⚠️ Registered with Application Auto Scaling ({}): AWS advises against changing its node type by hand",
            escape(&dims.join(", "))
        ),
        Check::Unknown(why) => format!(
            "• ❔ Application Auto Scaling: unknown ({})",
            escape(why)
        ),
    }));
    items
}

/// The preflight in full, one line each (the card while the run waits, and the dry run);
/// `read_at`: when it was read. Empty for a plan made before the bot had a preflight.
pub fn preflight_lines(plan: &Plan, read_at: Option<Timestamp>) -> Vec<String> {
    let Some(p) = &plan.preflight else {
        return Vec::new();
    };
    let when = read_at
        .map(|t| format!(" (read {})", slack_time(t)))
        .unwrap_or_default();
    let mut lines = vec![format!(
        "*Preflight*{when}: {} shard(s) · {} replica(s) per shard",
        plan.shards,
        plan.replicas_per_shard()
    )];
    lines.extend(preflight_items(plan, p).into_iter().map(|i| i.text));
    lines
}

/// The card's preflight section: in full while the run waits for a decision; once approved,
/// only what it warned about (an auto-approved run shows its warnings too). Within Slack's 3,000
/// characters for a section.
fn preflight_section(run: &Run) -> Option<String> {
    let plan = run.plan()?;
    let p = plan.preflight.as_ref()?;
    let read_at = run.step(Step::Plan).and_then(|s| s.ended);
    let approved = run.step(Step::Approval).map(|s| s.status) == Some(StepStatus::Done);
    let text = if matches!(run.state, State::AwaitingApproval { .. }) {
        preflight_lines(plan, read_at).join("\n")
    } else if !approved {
        // Denied, expired, cancelled before a decision: nothing was done, nothing to warn of.
        return None;
    } else {
        let flagged: Vec<String> = preflight_items(plan, p)
            .into_iter()
            .filter(|i| i.flagged)
            .map(|i| i.text)
            .collect();
        if flagged.is_empty() {
            return None;
        }
        format!("*Preflight warnings:*\n{}", flagged.join("\n"))
    };
    Some(truncate(&text, 2900))
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

fn header(run: &Run) -> String {
    match &run.trigger {
        Trigger::Alarm { .. } => format!("🚨 {}: Redis memory alarm", run.group),
        Trigger::Forecast { .. } => format!("📈 {}: memory will be full soon", run.group),
        Trigger::ScaleDown { evidence, .. } => {
            format!(
                "💸 {}: could go one size down, to {}",
                run.group, evidence.to
            )
        }
        Trigger::Command { .. } => format!("🔧 {}: upsize requested", run.group),
    }
}

fn why(run: &Run) -> String {
    match &run.trigger {
        Trigger::Alarm {
            alarm_name,
            reason,
            value,
            ..
        } => {
            let value = value
                .map(|v| format!(" — memory at *{v:.1}%*"))
                .unwrap_or_default();
            let mut s = format!("*Alarm* `{}` is in ALARM{value}", escape(alarm_name));
            if !reason.is_empty() {
                s.push_str(&format!("\n> {}", escape(&truncate(reason, 300))));
            }
            if run.alarm_repeats > 0 {
                s.push_str(&format!(
                    "\n_Fired {} more time(s) since._",
                    run.alarm_repeats
                ));
            }
            s
        }
        Trigger::Forecast { at, forecast } => {
            let mut s = format!(
                "*Proposed before any alarm* (`forecast_alert = \"{}\"`), from the trend read at {}:\n{}",
                format_duration(run.policy.forecast_alert),
                slack_time(*at),
                forecast_line(&Check::Known(forecast.clone()))
            );
            if run.alarm_repeats > 0 {
                s.push_str(&format!(
                    "\n🔔 _The memory alarm has fired since ({}×); it is handled by this run._",
                    run.alarm_repeats
                ));
            }
            s
        }
        Trigger::ScaleDown { at, evidence } => scale_down_evidence(run, *at, evidence),
        Trigger::Command { user, .. } => {
            let asked = match &run.requested_type {
                Some(t) => format!(" (to `{t}`)"),
                None => String::new(),
            };
            format!("*Requested by* <@{user}>{asked}")
        }
    }
}

/// Why the scale-down check suggests one size down: the window's peak and average, what the
/// peak would be on the smaller type against the policy's limit, and the last change.
pub fn scale_down_evidence(run: &Run, at: Timestamp, e: &ScaleDownEvidence) -> String {
    let since = match e.since_change {
        Some(d) => format!("the bot last changed its size {} ago", format_duration(d)),
        None => "no change by the bot on record".to_string(),
    };
    let mut s = format!(
        "*Suggested by the scale-down check* at {}: over the last {} ({} reading(s)), memory peaked at *{}* (average of the per-period peaks {}) on `{}`. On `{}` ({}) that peak would be *{}* — below the {} `scale_down_below` allows; {since}.",
        slack_time(at),
        format_duration(e.window),
        e.points,
        percent(e.peak),
        percent(e.average),
        e.from,
        e.to,
        memory_label(&e.to),
        percent(e.peak_on_smaller),
        percent(e.below),
    );
    s.push_str(&format!(
        "\nNothing happens without an approver. After the change memory must stay below {} (`scale_down_verify_below`), or on-call is paged.",
        percent(e.verify_below)
    ));
    if run.alarm_repeats > 0 {
        s.push_str(&format!(
            "\n🔔 _The memory alarm has fired since ({}×)._",
            run.alarm_repeats
        ));
    }
    s
}

fn plan_line(run: &Run) -> String {
    match (run.plan(), &run.state) {
        (Some(plan), _) => {
            let cap = match (plan.direction, &plan.cap, &run.policy.min_node_type) {
                (Direction::Down, _, Some(m)) => format!("one step down, floor `{m}`"),
                (Direction::Down, _, None) => "one step down".to_string(),
                (Direction::Up, Some(c), _) => format!("cap `{c}`"),
                (Direction::Up, None, _) => "no cap".to_string(),
            };
            let first = if run.policy.snapshot == SnapshotPolicy::Skip {
                "no snapshot (`snapshot = \"skip\"`)"
            } else {
                "snapshot"
            };
            let mut line = format!(
                "*Plan:* {first}, then `{}` ({}) → `{}` ({}) · {cap} · {} node(s), cluster mode {}",
                plan.current,
                memory_label(&plan.current),
                plan.target,
                memory_label(&plan.target),
                plan.members,
                plan.cluster_mode
            );
            if let Some(forecast) = current_forecast(run) {
                line.push('\n');
                line.push_str(&forecast_line(forecast));
            }
            if let Some(cost) = cost_line(plan) {
                line.push('\n');
                line.push_str(&cost);
            }
            line
        }
        (None, State::Planning) => "*Plan:* reading the group from AWS…".to_string(),
        (None, _) => match run.outcome() {
            Some(Outcome::NothingToDo { reason }) => format!("*Nothing to do:* {}", escape(reason)),
            Some(Outcome::Failed { error, .. }) => {
                format!("*Plan:* couldn't be made: {}", escape(error))
            }
            _ => "*Plan:* none".to_string(),
        },
    }
}

/// What the plan's move costs, from the on-demand prices read with it (`None`: none were
/// read): "💵 `cache.r6g.large` $0.206/h → `cache.r6g.xlarge` $0.411/h per node; 3 nodes: $451
/// → $900 a month (+$449)", or "💵 Cost: unknown (why)". A month is
/// [`HOURS_PER_MONTH`](crate::workflow::cost::HOURS_PER_MONTH) = 730 hours; a move down shows
/// a negative delta (a saving). Works for any plan, up or down.
pub fn cost_line(plan: &Plan) -> Option<String> {
    let sheet = plan.prices.as_ref()?;
    let (from, to) = (&plan.current, &plan.target);
    let (hourly_from, hourly_to) = match (sheet.hourly(from), sheet.hourly(to)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(why), _) | (_, Err(why)) => {
            return Some(format!(
                "💵 Cost: unknown ({})",
                escape(&truncate(why, 300))
            ));
        }
    };
    let nodes = plan.members;
    let delta = monthly(hourly_to, nodes) - monthly(hourly_from, nodes);
    // What a scale-down gives back, said as such.
    let saving = if plan.direction == Direction::Down && delta < 0.0 {
        format!(" — a saving of *{} a month*", dollars(-delta))
    } else {
        String::new()
    };
    Some(format!(
        "💵 `{from}` {}/h → `{to}` {}/h per node; {nodes} node(s): {} → {} a month ({}), on demand in {}{saving}",
        hourly_dollars(hourly_from),
        hourly_dollars(hourly_to),
        dollars(monthly(hourly_from, nodes)),
        dollars(monthly(hourly_to, nodes)),
        signed_dollars(delta),
        escape(&sheet.region),
    ))
}

/// A size choice's monthly delta from the current type, for the picker: "+$449/mo (3
/// nodes)", "−$225/mo (3 nodes)", or "price unknown" (`None`: no prices were read).
fn choice_delta(plan: &Plan, choice: &NodeType) -> Option<String> {
    let sheet = plan.prices.as_ref()?;
    let nodes = plan.members;
    Some(match sheet.monthly_delta(&plan.current, choice, nodes) {
        Ok(d) => format!("{}/mo ({nodes} node(s))", signed_dollars(d)),
        Err(_) => "price unknown".to_string(),
    })
}

/// A price per node-hour: "$0.206", "$1.642", "$0.0160" → "$0.016".
fn hourly_dollars(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0');
    let s = match s.split_once('.') {
        Some((_, cents)) if cents.len() < 2 => format!("{s}{}", "0".repeat(2 - cents.len())),
        _ => s.to_string(),
    };
    format!("${s}")
}

/// Whole dollars with thousands separators: "$451", "$12,345".
fn dollars(x: f64) -> String {
    let whole = x.abs().round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("${out}")
}

/// A delta in whole dollars with its sign: "+$449", "−$225" (a saving), "±$0".
pub fn signed_dollars(x: f64) -> String {
    match x.round() {
        r if r > 0.0 => format!("+{}", dollars(x)),
        r if r < 0.0 => format!("−{}", dollars(x)),
        _ => "±$0".to_string(),
    }
}

/// The run's memory trend from its plan, while it still applies: it was read on the node type
/// the run started on, so not once the upsize is done.
pub fn current_forecast(run: &Run) -> Option<&Check<Forecast>> {
    let upsized = run.step(Step::Upsize).map(|s| s.status) == Some(StepStatus::Done);
    run.plan()?.forecast.as_ref().filter(|_| !upsized)
}

/// The memory trend as the card and `/redis status` say it: "📈 At this rate (+0.8 %/min over
/// the last 1h; `prod-jobs-001` at 92 %), full in ~10 min", steady, falling, or unknown and why.
pub fn forecast_line(forecast: &Check<Forecast>) -> String {
    let f = match forecast {
        Check::Known(f) => f,
        Check::Unknown(why) => {
            return format!("❔ Memory trend unknown ({})", escape(&truncate(why, 300)));
        }
    };
    let rate = if f.slope_per_min.abs() >= 0.1 {
        format!("{:+.1}", f.slope_per_min)
    } else {
        format!("{:+.2}", f.slope_per_min)
    };
    let over = format!("{rate} %/min over the last {}", format_duration(f.window));
    let node = format!("`{}` at {}", f.node, percent(f.latest));
    match (f.trend, f.full_in) {
        (Trend::Rising, Some(d)) if d.is_zero() => format!("📈 Full already: {node} ({over})"),
        (Trend::Rising, Some(d)) => {
            format!("📈 At this rate ({over}; {node}), full in {}", about(d))
        }
        (Trend::Rising, None) => format!("📈 Memory rising ({over}; {node})"),
        (Trend::Steady, _) => format!("➡️ Memory steady ({over}; {node})"),
        (Trend::Falling, _) => format!("📉 Memory falling ({over}; {node})"),
    }
}

/// "92 %", "92.5 %".
fn percent(v: f64) -> String {
    let s = format!("{v:.1}");
    format!("{} %", s.strip_suffix(".0").unwrap_or(&s))
}

/// A time to full, as roughly as the straight line deserves: "~10 min", "~5 h", "~3 days".
fn about(d: std::time::Duration) -> String {
    let minutes = (d.as_secs_f64() / 60.0).round() as u64;
    match minutes {
        0 => "under a minute".to_string(),
        1..120 => format!("~{minutes} min"),
        120..2880 => format!("~{} h", (minutes as f64 / 60.0).round() as u64),
        _ => format!("~{} days", (minutes as f64 / 1440.0).round() as u64),
    }
}

/// The steps a run will go through, given its policy, with what happened so far.
fn checklist(run: &Run, now: Timestamp) -> String {
    let mut expected = vec![Step::Approval];
    if run.policy.pause_url.is_some() {
        expected.push(Step::Pause);
    }
    if run.policy.snapshot == SnapshotPolicy::Take {
        expected.push(Step::Snapshot);
    }
    expected.push(Step::Upsize);
    if run.policy.pause_url.is_some() {
        expected.push(Step::Resume);
    }
    if !run.policy.verify_window.is_zero() {
        expected.push(Step::Verify);
    }
    let planned = !matches!(run.state, State::Planning);
    let stopped = run.outcome().is_some();
    let mut lines = Vec::new();
    for step in expected {
        match run.step(step) {
            Some(rec) => lines.push(step_line(run, rec, now)),
            None if planned && !stopped => {
                lines.push(format!("▫️ {}", pending_label(run, step)));
            }
            None if stopped && !matches!(run.outcome(), Some(Outcome::NothingToDo { .. })) => {
                lines.push(format!("➖ ~{}~", pending_label(run, step)));
            }
            None => {}
        }
    }
    if lines.is_empty() {
        return "_Planning…_".to_string();
    }
    lines.join("\n")
}

fn pending_label(run: &Run, step: Step) -> String {
    match (step, run.plan()) {
        (Step::Approval, _) => "Approval".to_string(),
        (Step::Pause, _) => "Pause workers".to_string(),
        (Step::Snapshot, _) => "Snapshot".to_string(),
        (Step::Upsize, Some(plan)) if plan.direction == Direction::Down => {
            format!("Scale down to `{}`", plan.target)
        }
        (Step::Upsize, Some(plan)) => format!("Upsize to `{}`", plan.target),
        (Step::Upsize, None) => "Upsize".to_string(),
        (Step::Resume, _) => "Resume workers".to_string(),
        (Step::Verify, _) => "Verify memory".to_string(),
        (Step::Plan, _) => "Plan".to_string(),
    }
}

fn step_line(run: &Run, rec: &StepRecord, now: Timestamp) -> String {
    let icon = match rec.status {
        StepStatus::Running => "⏳",
        StepStatus::Done => "✅",
        StepStatus::Failed => "❌",
        StepStatus::TimedOut => "⌛",
        StepStatus::Cancelled => "🚫",
    };
    let label = match rec.step {
        Step::Approval => approval_label(run),
        Step::Snapshot => format!(
            "Snapshot `{}`",
            crate::domain::SnapshotName::for_run(&run.id)
        ),
        other => pending_label(run, other),
    };
    let timing = match (rec.status, rec.took()) {
        // The approval line already says what happens next and when.
        (StepStatus::Running, _) if rec.step == Step::Approval => String::new(),
        // How long the decision took, from the plan being ready.
        (_, Some(took)) if rec.step == Step::Approval => {
            format!(" · {} after the plan", format_duration(took))
        }
        (StepStatus::Running, _) => format!(
            " · running for {} (since {})",
            format_duration(now.since(rec.started)),
            slack_time(rec.started)
        ),
        (_, Some(took)) => format!(" · took {}", format_duration(took)),
        _ => String::new(),
    };
    format!("{icon} {label}{timing}")
}

fn approval_label(run: &Run) -> String {
    let approvers: Vec<&SlackUserId> = run
        .decisions
        .iter()
        .filter(|d| d.kind == DecisionKind::Approve)
        .map(|d| &d.user)
        .collect();
    match &run.state {
        State::AwaitingApproval {
            plan,
            expires,
            approvals,
            ..
        } if plan.direction == Direction::Down => {
            let need = run.policy.min_approvals.max(1);
            let so_far = if approvals.is_empty() {
                String::new()
            } else {
                let who: Vec<String> = approvals.iter().map(|u| format!("<@{u}>")).collect();
                format!(" ({}/{need}: {})", approvals.len(), who.join(", "))
            };
            format!(
                "Waiting for an approver{so_far} — nobody is paged; the suggestion lapses at {}",
                slack_day_time(*expires)
            )
        }
        State::AwaitingApproval {
            approvals,
            deadline,
            escalated,
            ..
        } => {
            let need = run.policy.min_approvals.max(1);
            let so_far = if approvals.is_empty() {
                String::new()
            } else {
                format!(
                    " ({}/{need}: {})",
                    approvals.len(),
                    approvals
                        .iter()
                        .map(|u| format!("<@{u}>"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let when = if *escalated {
                " — on-call paged".to_string()
            } else {
                let ack = run.plan().is_some_and(|p| p.needs_acknowledgement());
                match run.policy.on_approval_timeout {
                    crate::workflow::policy::OnApprovalTimeout::Approve if !ack => {
                        format!(" — approves itself at {}", slack_time(*deadline))
                    }
                    _ => format!(" — pages on-call at {}", slack_time(*deadline)),
                }
            };
            format!("Waiting for approval{so_far}{when}")
        }
        _ => {
            let last = |kind: DecisionKind| run.decisions.iter().rev().find(|d| d.kind == kind);
            if let Some(d) = last(DecisionKind::Deny) {
                return format!("Denied by <@{}> at {}", d.user, slack_time(d.at));
            }
            if let Some(d) = last(DecisionKind::Dismiss) {
                return format!("Dismissed by <@{}> at {}", d.user, slack_time(d.at));
            }
            if let Some(d) = last(DecisionKind::Snooze) {
                return format!("Snoozed by <@{}> at {}", d.user, slack_time(d.at));
            }
            if let Some(d) = last(DecisionKind::Cancel)
                && run.step(Step::Approval).map(|s| s.status) == Some(StepStatus::Cancelled)
            {
                return format!("Cancelled by <@{}> at {}", d.user, slack_time(d.at));
            }
            if let Some(d) = last(DecisionKind::Approve) {
                let by: Vec<String> = approvers.iter().map(|u| format!("<@{u}>")).collect();
                format!("Approved by {} at {}", by.join(", "), slack_time(d.at))
            } else if matches!(run.outcome(), Some(Outcome::Expired)) {
                "Expired without a decision".to_string()
            } else if matches!(run.trigger, Trigger::ScaleDown { .. }) {
                // A suggestion is never approved by policy.
                "Closed before anyone decided".to_string()
            } else if run.policy.approval == crate::workflow::policy::ApprovalMode::Auto {
                "Approved by policy (automatic)".to_string()
            } else {
                "Approved by policy (no decision in time)".to_string()
            }
        }
    }
}

fn outcome_line(run: &Run) -> Option<String> {
    let paged = if run.page.open {
        "\n📟 On-call has been paged."
    } else {
        ""
    };
    let line = match &run.state {
        State::Resuming { outcome, .. } => {
            format!("⏳ {} — resuming workers…", outcome_words(run, outcome))
        }
        State::SnapshotFailed {
            failure, decide_by, ..
        } => {
            let mut what = outcome_words(run, failure);
            if !what.ends_with('.') {
                what.push('.');
            }
            let workers = run
                .resume_error
                .as_ref()
                .map(|e| resume_failed(&truncate(e, 200)))
                .unwrap_or_default();
            format!(
                "{what} The group was not changed. An approver can choose *Upsize without a snapshot* or *Cancel* in the thread until {}; otherwise the run ends then.{workers}",
                slack_day_time(*decide_by)
            )
        }
        State::Finished { outcome, .. } => {
            let mut s = outcome_words(run, outcome);
            if let Some(err) = &run.resume_error {
                s.push_str(&resume_failed(err));
            }
            if let Some(alarm) = alarm_now(run, outcome) {
                s.push('\n');
                s.push_str(&alarm);
            }
            if plan_again_helps(run, outcome) {
                s.push_str("\n*Next:* *Plan again* below reads the group from AWS and proposes the next size; nothing runs without approval.");
            }
            s
        }
        _ => return None,
    };
    Some(format!("{line}{paged}"))
}

/// The top message's warning that the workers may still be paused.
fn resume_failed(error: &str) -> String {
    format!(
        "\n⚠️ *Resuming workers failed:* {} — workers may still be paused.",
        escape(error)
    )
}

/// Is a new plan the next step after this outcome? Not after a person decided against the
/// run, and not while a modification AWS may still be making (an upsize that timed out).
fn plan_again_helps(run: &Run, outcome: &Outcome) -> bool {
    // "Plan again" plans an upsize: never the next step of a suggestion to go down.
    if matches!(run.trigger, Trigger::ScaleDown { .. }) {
        return false;
    }
    match outcome {
        Outcome::Failed { .. } | Outcome::GroupChanged { .. } | Outcome::Expired => true,
        Outcome::TimedOut { step, .. } => *step != Step::Upsize,
        _ => false,
    }
}

/// Whether the alarm that started a run that did not fix it is still firing, as far as the
/// bot has heard (the upsize that worked says so with the memory reading instead).
fn alarm_now(run: &Run, outcome: &Outcome) -> Option<String> {
    let Trigger::Alarm { alarm_name, .. } = &run.trigger else {
        return None;
    };
    if matches!(outcome, Outcome::Succeeded { .. }) {
        return None;
    }
    Some(match run.repeats.cleared_at {
        Some(t) => format!(
            "💚 The alarm `{}` went back to OK at {}.",
            escape(alarm_name),
            slack_time(t)
        ),
        None => {
            let last = run
                .repeats
                .last_at
                .map(|t| format!(", last fired at {}", slack_time(t)))
                .unwrap_or_default();
            format!(
                "🔔 The alarm `{}` is still firing as far as the bot knows{last}: it has not seen it go back to OK.",
                escape(alarm_name)
            )
        }
    })
}

fn outcome_words(run: &Run, outcome: &Outcome) -> String {
    let total = format_duration(run.updated_at.since(run.created_at));
    match outcome {
        Outcome::Succeeded { from, to, snapshot } => {
            let pct = |p: Option<f64>| p.map_or("?".to_string(), |p| format!("{p:.0} %"));
            let memory = match &run.verification {
                Some(v) if v.error.is_none() && v.after.is_some() => {
                    let high = if v.still_high() {
                        " — *still high*, on-call is paged"
                    } else {
                        ""
                    };
                    format!(" Memory {} → {}{high}.", pct(v.before), pct(v.after))
                }
                _ => String::new(),
            };
            let snapshot = match snapshot {
                Some(s) => format!("Snapshot `{s}` is kept."),
                None => match run
                    .decisions
                    .iter()
                    .find(|d| d.kind == DecisionKind::UpsizeWithoutSnapshot)
                {
                    Some(d) => format!("No snapshot: <@{}> chose to go without one.", d.user),
                    None => "No snapshot (`snapshot = \"skip\"`).".to_string(),
                },
            };
            format!(
                "✅ *Succeeded* in {total}: {} moved from `{from}` to `{to}`.{memory} {snapshot}",
                run.group
            )
        }
        Outcome::Failed { step, error } => {
            format!("❌ *Failed* at {}: {}", step.label(), escape(error))
        }
        Outcome::TimedOut { step, after } => {
            let after = format_duration(*after);
            match step {
                Step::Snapshot => format!(
                    "⌛ *Timed out* at snapshot after {after}: the snapshot may still be running in AWS (it is kept if it finishes). {} was not changed.",
                    run.group
                ),
                Step::Upsize => format!(
                    "⌛ *Timed out* at upsize after {after}: AWS had not finished the modification when the bot stopped watching; it may still complete. `/redis status {}` shows where the group is.",
                    run.group
                ),
                other => format!("⌛ *Timed out* at {} after {after}.", other.label()),
            }
        }
        Outcome::Denied { by } => match &run.denial_reason {
            Some(reason) => format!(
                "🚫 *Denied* by <@{by}>: “{}”. Nothing was changed.",
                escape(&truncate(reason, 300))
            ),
            None => format!("🚫 *Denied* by <@{by}>. Nothing was changed."),
        },
        Outcome::Cancelled { by } => format!("🚫 *Cancelled* by <@{by}>."),
        Outcome::Dismissed { by } => format!(
            "🙅 *Dismissed* by <@{by}>. Nothing was changed; no scale-down is suggested for {} again for {}.",
            run.group,
            format_duration(run.policy.scale_down_after)
        ),
        Outcome::Snoozed { by, until } => format!(
            "😴 *Snoozed* by <@{by}> until {}. Nothing was changed.",
            slack_day_time(*until)
        ),
        Outcome::Expired => format!(
            "⌛ *Expired*: nobody decided within {}. Nothing was changed.",
            format_duration(run.policy.approval_expiry)
        ),
        Outcome::NothingToDo { .. } => "ℹ️ *Closed:* nothing to do.".to_string(),
        Outcome::GroupChanged { step, drift } => format!(
            "⚠️ *Stopped* before the {}: {} changed since the plan was approved — {}. The bot did not touch it.",
            step.label(),
            run.group,
            escape(&drift.to_string())
        ),
    }
}

fn footer(run: &Run) -> String {
    // A run waiting for a person needs one, whatever the policy said (pending changes).
    let waiting = matches!(run.state, State::AwaitingApproval { .. });
    let approval = match run.policy.approval {
        crate::workflow::policy::ApprovalMode::Auto if !waiting => "automatic approval".to_string(),
        _ => {
            let n = run.policy.min_approvals.max(1);
            format!("{n} approval(s) required")
        }
    };
    format!("Run `{}` · group `{}` · {approval}", run.id, run.group)
}

fn fallback(run: &Run) -> String {
    let what = match &run.trigger {
        Trigger::Alarm { value: Some(v), .. } => format!("{} memory {v:.0}%", run.group),
        Trigger::Alarm { .. } => format!("{} memory alarm", run.group),
        Trigger::Forecast { .. } => format!("{} memory full soon (forecast)", run.group),
        Trigger::ScaleDown { evidence, .. } => format!(
            "{} could go down to {} (peak {:.0}% over {})",
            run.group,
            evidence.to,
            evidence.peak,
            format_duration(evidence.window)
        ),
        Trigger::Command { user, .. } => format!("{} upsize requested by <@{user}>", run.group),
    };
    let plan = run
        .plan()
        .map(|p| format!(" — proposed: snapshot, then {} → {}", p.current, p.target))
        .unwrap_or_default();
    let state = describe_state(&run.state);
    format!("{what}{plan} ({state})")
}

/// After a failed or timed-out snapshot: what happened, and the two things an approver may do
/// (each with a confirmation that says what it means).
fn render_fallback_offer(run: &Run) -> Option<Message> {
    let State::SnapshotFailed {
        plan,
        snapshot,
        failure,
        decide_by,
    } = &run.state
    else {
        return None;
    };
    let what = match failure {
        Outcome::TimedOut { after, .. } => format!(
            "⌛ The snapshot timed out after {}; if AWS started `{snapshot}`, it may still finish.",
            format_duration(*after)
        ),
        Outcome::Failed { error, .. } => {
            format!("❌ The snapshot failed: {}.", escape(error))
        }
        _ => "❌ The snapshot did not complete.".to_string(),
    };
    let workers = match (&run.resume_error, run.pause_attempted()) {
        (Some(e), _) => format!(
            " ⚠️ *Resuming the workers failed* ({}): they may still be paused.",
            escape(&truncate(e, 200))
        ),
        (None, true) => " The workers are resumed.".to_string(),
        (None, false) => String::new(),
    };
    let text = format!(
        "{what} {} was *not changed* (still `{}`).{workers} An approver can *Upsize without a snapshot* to `{}` — there will be no snapshot to restore from — or *Cancel*. Until {}; then the run ends as failed.",
        run.group,
        plan.current,
        plan.target,
        slack_day_time(*decide_by)
    );
    let pause = if run.policy.pause_url.is_some() {
        " The workers are paused again first."
    } else {
        ""
    };
    Some(Message {
        text: text.clone(),
        blocks: vec![
            section(&text),
            json!({
                "type": "actions",
                "block_id": format!("fallback:{}", run.id),
                "elements": [
                    {
                        "type": "button",
                        "action_id": actions::WITHOUT_SNAPSHOT,
                        "text": { "type": "plain_text", "text": "Upsize without a snapshot", "emoji": true },
                        "style": "danger",
                        "value": run.id.as_str(),
                        "confirm": {
                            "title": { "type": "plain_text", "text": "Upsize with no snapshot?" },
                            "text": { "type": "mrkdwn", "text": format!("{} moves to `{}` with no snapshot to restore from.{pause} The bot looks at the group once more before it acts.", run.group, plan.target) },
                            "confirm": { "type": "plain_text", "text": "Upsize without a snapshot" },
                            "deny": { "type": "plain_text", "text": "Back" },
                            "style": "danger"
                        }
                    },
                    {
                        "type": "button",
                        "action_id": actions::CANCEL,
                        "text": { "type": "plain_text", "text": "Cancel run", "emoji": true },
                        "value": run.id.as_str(),
                        "confirm": {
                            "title": { "type": "plain_text", "text": "Cancel this run?" },
                            "text": { "type": "mrkdwn", "text": format!("{} stays on `{}`; the page is resolved.", run.group, plan.current) },
                            "confirm": { "type": "plain_text", "text": "Cancel run" },
                            "deny": { "type": "plain_text", "text": "Back" }
                        }
                    }
                ]
            }),
        ],
    })
}

/// The modal that asks the person who denied a run why (optional, up to 500 characters).
pub fn render_denial_modal(run: &Run) -> Value {
    let target = run
        .plan()
        .map(|p| format!(" to `{}`", p.target))
        .unwrap_or_default();
    json!({
        "type": "modal",
        "callback_id": crate::slack::interactions::DENIAL_MODAL,
        "private_metadata": run.id.as_str(),
        "title": { "type": "plain_text", "text": "Why was it denied?" },
        "submit": { "type": "plain_text", "text": "Add to the thread" },
        "close": { "type": "plain_text", "text": "Skip" },
        "blocks": [
            {
                "type": "section",
                "text": { "type": "mrkdwn", "text": format!("You denied the upsize of {}{target} (run `{}`). A reason helps whoever reads the thread next; it is shown there and on the message.", run.group, run.id) }
            },
            {
                "type": "input",
                "block_id": crate::slack::interactions::DENIAL_INPUT,
                "label": { "type": "plain_text", "text": "Reason" },
                "element": {
                    "type": "plain_text_input",
                    "action_id": crate::slack::interactions::DENIAL_INPUT,
                    "multiline": true,
                    "max_length": crate::workflow::machine::DENIAL_REASON_MAX,
                    "placeholder": { "type": "plain_text", "text": "e.g. change freeze until Monday; the jobs can wait" }
                }
            }
        ]
    })
}

/// The thread reply that offers a Cancel button while the run can still be cancelled (after a
/// failed snapshot, with "Upsize without a snapshot" next to it).
pub fn render_cancel_offer(run: &Run) -> Message {
    if let Some(offer) = render_fallback_offer(run) {
        return offer;
    }
    let text = "🛑 Need to stop? This run can be cancelled until the upsize starts.";
    Message {
        text: text.to_string(),
        blocks: vec![
            section(text),
            json!({
                "type": "actions",
                "block_id": format!("cancel:{}", run.id),
                "elements": [{
                    "type": "button",
                    "action_id": actions::CANCEL,
                    "text": { "type": "plain_text", "text": "Cancel run", "emoji": true },
                    "style": "danger",
                    "value": run.id.as_str(),
                    "confirm": {
                        "title": { "type": "plain_text", "text": "Cancel this run?" },
                        "text": { "type": "mrkdwn", "text": format!("{} is not upsized. A snapshot already started finishes in AWS and is kept.", run.group) },
                        "confirm": { "type": "plain_text", "text": "Cancel run" },
                        "deny": { "type": "plain_text", "text": "Keep going" },
                        "style": "danger"
                    }
                }]
            }),
        ],
    }
}

/// The same thread reply once cancelling is no longer possible (or, after a failed snapshot,
/// possible from a later reply).
///
/// The reply stays where it was posted, above what happened since: it says, with the time,
/// until when the offer stood, so it never reads as if it came after the lines below it.
pub fn render_cancel_withdrawn(reason: &CancelGone, at: Timestamp) -> Message {
    let t = slack_time(at);
    let text = match reason {
        CancelGone::UpsizeStarted => format!(
            "🛑 Cancel was possible here until {t}, when the upsize started (AWS can't stop a modification in progress)."
        ),
        CancelGone::CancelledBy(by) => format!("🛑 <@{by}> cancelled the run at {t}."),
        CancelGone::Ended(outcome) => format!(
            "🛑 Cancel was possible here until {t}, when the run ended ({}).",
            outcome.replace('_', " ")
        ),
        CancelGone::Resuming => {
            format!("🛑 Cancel was possible here until {t}, when the run began resuming workers.")
        }
        CancelGone::SnapshotFailed => format!(
            "🛑 Cancel was offered here until the snapshot failed at {t}: *Upsize without a snapshot* and *Cancel* are in the reply further down."
        ),
        CancelGone::WithoutSnapshot(by) => {
            format!("🛑 <@{by}> chose *Upsize without a snapshot* at {t}; the choice is closed.")
        }
        other => format!(
            "🛑 Cancelling is no longer possible: {}.",
            cancel_gone(other)
        ),
    };
    Message {
        blocks: vec![section(&text)],
        text,
    }
}

/// Why the Cancel button is gone, as a clause.
pub fn cancel_gone(reason: &CancelGone) -> String {
    match reason {
        CancelGone::UpsizeStarted => {
            "the upsize has started and AWS can't stop a modification in progress".to_string()
        }
        CancelGone::CancelledBy(by) => format!("cancelled by <@{by}>"),
        CancelGone::Ended(outcome) => format!("the run is over ({})", outcome.replace('_', " ")),
        CancelGone::Resuming => "the run is resuming workers".to_string(),
        CancelGone::Finished(outcome) => {
            let state = State::Finished {
                plan: None,
                outcome: outcome.clone(),
            };
            format!("the run is {}", describe_state(&state))
        }
        CancelGone::SnapshotFailed => {
            "the snapshot failed; Cancel is in the reply further down".to_string()
        }
        CancelGone::WithoutSnapshot(by) => {
            format!("<@{by}> chose to upsize without a snapshot")
        }
        CancelGone::Said(text) => text.clone(),
    }
}

/// A notice whose alarm fired again within its window: the count and the last time, so the
/// channel gets one message per group, not one per delivery.
pub fn with_repeats(mut msg: Message, count: u32, last: Timestamp) -> Message {
    let line = format!(
        "🔁 This alarm fired ×{count} so far, last at {}; repeats are counted here.",
        slack_time(last)
    );
    msg.text.push_str(&format!("\n{line}"));
    msg.blocks
        .push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": line }] }));
    msg
}

/// An alarm that maps to no managed group, said in the channel once per window.
pub fn render_unknown_group_notice(alarm: &crate::domain::alarm::Alarm) -> Message {
    let dims: Vec<String> = alarm
        .dimensions
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let dims = if dims.is_empty() {
        "none".to_string()
    } else {
        dims.join(", ")
    };
    let text = format!(
        "⚠️ Alarm `{}` fired, but it maps to no replication group this bot manages (dimensions: {}). \
         Nothing was started. Give the alarm a `ReplicationGroupId` or `CacheClusterId` dimension of a managed group, \
         or map it in the config under `[alarms.groups]`.",
        escape(&alarm.name),
        escape(&dims)
    );
    Message {
        blocks: vec![section(&text)],
        text,
    }
}

/// An alarm from another region or account than the bot's groups: refused, said once.
pub fn render_foreign_notice(
    alarm: &crate::domain::alarm::Alarm,
    home: &crate::app::answer::Place,
    others: &[crate::app::answer::Place],
) -> Message {
    let or_unknown = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".into());
    let place = |p: &crate::app::answer::Place| {
        format!(
            "region {} of account {}",
            or_unknown(&p.region),
            or_unknown(&p.account)
        )
    };
    let also: String = others
        .iter()
        .map(|p| format!(" and in {}", place(p)))
        .collect();
    let text = format!(
        "⚠️ Alarm `{}` fired in region {} of account {}, but this bot manages groups in {}{also}. Nothing was started or asked of AWS: a group with the same id there is another group.",
        escape(&alarm.name),
        escape(&or_unknown(&alarm.region)),
        escape(&or_unknown(&alarm.account)),
        place(home),
    );
    Message {
        blocks: vec![section(&text)],
        text,
    }
}

/// An alarm during the cooldown after a successful upsize: no run, but a button for approvers.
pub fn render_cooldown_notice(
    group: &crate::domain::ReplicationGroupId,
    alarm: &crate::domain::alarm::Alarm,
    last: &crate::domain::RunId,
    since: std::time::Duration,
    remaining: std::time::Duration,
) -> Message {
    let value = alarm
        .value
        .map(|v| format!(" ({v:.1}%)"))
        .unwrap_or_default();
    let text = format!(
        "⏸️ {group}: memory alarm again{value}, but it was upsized {} ago (run `{last}`). \
         The cooldown holds off alarm-started runs for another {}, so nothing was started. An approver can start one anyway.",
        format_duration(since),
        format_duration(remaining)
    );
    Message {
        blocks: vec![section(&text), start_anyway(group)],
        text,
    }
}

/// The group changed since the plan was approved: what changed, what the bot did not do, and
/// a button to plan again from the group as it is now.
fn render_group_changed(
    run: &Run,
    before: Step,
    drift: &crate::workflow::policy::Drift,
    snapshot_kept: Option<&crate::domain::SnapshotName>,
) -> Message {
    let kept = snapshot_kept
        .map(|s| format!(" Snapshot `{s}` is kept."))
        .unwrap_or_default();
    let down = matches!(run.trigger, Trigger::ScaleDown { .. });
    let next = if down {
        "The scale-down check looks at it again later."
    } else {
        "A requester can plan again from how it is now."
    };
    let text = format!(
        "⚠️ Stopped before the {}: {} changed since the plan was approved — {}. The bot did not touch the group.{kept} {next}",
        before.label(),
        run.group,
        escape(&drift.to_string())
    );
    // "Plan again" plans an upsize: not what a scale-down that stopped calls for.
    let blocks = if down {
        vec![section(&text)]
    } else {
        vec![section(&text), replan_button(run)]
    };
    Message { blocks, text }
}

/// "Plan again" for the run's group: a new plan from how the group is now.
fn replan_button(run: &Run) -> serde_json::Value {
    json!({
        "type": "actions",
        "block_id": format!("replan:{}", run.group),
        "elements": [{
            "type": "button",
            "action_id": actions::REPLAN,
            "text": { "type": "plain_text", "text": "Plan again", "emoji": true },
            "value": run.group.as_str(),
        }]
    })
}

/// `/redis upsize` within the cooldown: why nothing started, and the button approvers may use.
pub fn render_command_cooldown(
    group: &crate::domain::ReplicationGroupId,
    last: &crate::domain::RunId,
    since: std::time::Duration,
    remaining: std::time::Duration,
) -> Message {
    let text = format!(
        "⏸️ {group} was upsized {} ago (run `{last}`). The cooldown holds off new runs for another {}, so nothing was started. An approver can start one anyway.",
        format_duration(since),
        format_duration(remaining)
    );
    Message {
        blocks: vec![section(&text), start_anyway(group)],
        text,
    }
}

/// The "Start a run anyway" button of a cooldown answer or notice.
fn start_anyway(group: &crate::domain::ReplicationGroupId) -> Value {
    json!({
        "type": "actions",
        "block_id": format!("cooldown:{group}"),
        "elements": [{
            "type": "button",
            "action_id": actions::START_ANYWAY,
            "text": { "type": "plain_text", "text": "Start a run anyway", "emoji": true },
            "value": group.as_str(),
        }]
    })
}

/// A thread reply.
pub fn render_note(run: &Run, note: &Note) -> Message {
    if let Note::GroupChanged {
        before,
        drift,
        snapshot_kept,
    } = note
    {
        return render_group_changed(run, *before, drift, snapshot_kept.as_ref());
    }
    if let Note::MemoryVerified { verification } = note
        && verification.still_high()
    {
        let text = verified_text(run, verification);
        return Message {
            blocks: vec![section(&text), replan_button(run)],
            text,
        };
    }
    let text = match note {
        Note::ApprovalRecorded { by, have, need } => format!(
            "👍 <@{by}> approved ({have} of {need}). {} more approver(s) needed.",
            need.saturating_sub(*have)
        ),
        Note::Approved { by, with_pending } => {
            let by: Vec<String> = by.iter().map(|u| format!("<@{u}>")).collect();
            let pending = if *with_pending {
                ", with the pending changes"
            } else {
                ""
            };
            let page = if run.page.open {
                " The page stays open until the upsize is done."
            } else {
                ""
            };
            format!(
                "👍 Approved by {}{pending}. Starting.{page}",
                by.join(" and ")
            )
        }
        Note::NeedsAcknowledgement => {
            "✋ This group's policy would approve by itself, but approving here also applies changes waiting on the group (or the bot couldn't check for them): a person has to approve with *Approve with pending changes*."
                .to_string()
        }
        Note::ApprovedByPolicy => {
            "🤖 This group's policy approves automatically (`approval = \"auto\"`). Starting."
                .to_string()
        }
        Note::ApprovedOnTimeout { after } => format!(
            "🤖 No decision after {}; this group's policy approves then (`on_approval_timeout = \"approve\"`). Starting.",
            format_duration(*after)
        ),
        Note::Escalated { after } => format!(
            "⏰ No decision after {}. Paging on-call; approving or denying above still works.",
            format_duration(*after)
        ),
        Note::SizeChosen { by, node_type } => {
            format!(
                "📐 <@{by}> changed the target to `{node_type}` ({}).",
                memory_label(node_type)
            )
        }
        Note::SetAside { outcome } => outcome_words(run, outcome),
        Note::Denied { by } => {
            let text = format!("🚫 Denied by <@{by}>. Nothing was changed.");
            return Message {
                blocks: vec![
                    section(&text),
                    json!({
                        "type": "actions",
                        "block_id": format!("denial:{}", run.id),
                        "elements": [{
                            "type": "button",
                            "action_id": actions::DENIAL_REASON,
                            "text": { "type": "plain_text", "text": "Add a reason", "emoji": true },
                            "value": run.id.as_str(),
                        }]
                    }),
                ],
                text,
            };
        }
        Note::DenialExplained { by, reason } => {
            format!(
                "📝 <@{by}> denied it because: “{}”",
                escape(reason)
            )
        }
        Note::Cancelled { by, snapshot_kept } => match snapshot_kept {
            Some(s) => format!(
                "🚫 Cancelled by <@{by}>. The group was not upsized; snapshot `{s}`, if AWS started it, finishes and is kept."
            ),
            None => format!("🚫 Cancelled by <@{by}>. Nothing was changed."),
        },
        Note::Expired => {
            "⌛ Nobody decided in time; this run is closed. Nothing was changed.".to_string()
        }
        Note::Pausing => "⏸️ Pausing workers…".to_string(),
        Note::Paused => "⏸️ Workers paused.".to_string(),
        Note::PauseFailed { error } => format!(
            "❌ Pausing workers failed: {}. Nothing else was touched.",
            escape(error)
        ),
        Note::SnapshotStarted { name } => format!("📸 Creating snapshot `{name}`…"),
        Note::GroupBusy { status } => format!(
            "⏳ The group is busy ({}); waiting for it to be available.",
            escape(status)
        ),
        Note::SnapshotReady { name, took } => format!(
            "📸 Snapshot `{name}` is available ({}).",
            format_duration(*took)
        ),
        Note::GroupChanged { .. } => unreachable!("rendered above"),
        Note::ModifyStarted { from, to } if matches!(run.trigger, Trigger::ScaleDown { .. }) => {
            format!("⬇️ Scaling down from `{from}` to `{to}` (applied immediately)…")
        }
        Note::ModifyStarted { from, to } => {
            format!("⬆️ Upsizing from `{from}` to `{to}` (applied immediately)…")
        }
        Note::Resumed => "▶️ Workers resumed.".to_string(),
        Note::WithoutSnapshot { by } => format!(
            "⏭️ <@{by}> chose to upsize without a snapshot. The bot looks at the group once more, then upsizes; there will be no snapshot to restore from."
        ),
        Note::SnapshotSkipped => {
            "⏭️ No snapshot: this group's policy is `snapshot = \"skip\"` (its data is disposable).".to_string()
        }
        Note::FallbackExpired { after } => format!(
            "⌛ Nobody chose to upsize without a snapshot or to cancel within {}; the run ends as failed. {} was not changed; start again with `/redis upsize {}`.",
            format_duration(*after),
            run.group,
            run.group
        ),
        Note::MemoryVerified { verification: v } => verified_text(run, v),
        Note::ResumeFailed { error } => format!(
            "❌ Resuming workers failed: {}. *Workers may still be paused.*",
            escape(error)
        ),
        Note::Succeeded { from, to, took } => {
            let since = match &run.trigger {
                Trigger::Alarm { .. } => "after the alarm".to_string(),
                Trigger::Forecast { .. } => "after the forecast proposed it".to_string(),
                Trigger::ScaleDown { .. } => "after the scale-down was suggested".to_string(),
                Trigger::Command { user, .. } => format!("after <@{user}> asked"),
            };
            format!(
                "✅ Done: {} is on `{to}` (was `{from}`), {} {since}.",
                run.group,
                format_duration(*took)
            )
        }
        Note::Failed { step, error } => format!("❌ Failed at {}: {}", step.label(), escape(error)),
        Note::TimedOut { step, after } => format!(
            "⌛ Timed out at {} after {}.",
            step.label(),
            format_duration(*after)
        ),
        Note::NothingToDo { reason } => format!("ℹ️ Nothing to do: {}", escape(reason)),
        Note::AlarmRepeated {
            reason,
            value,
            count,
            at,
        } => {
            let value = value.map(|v| format!(" ({v:.1}%)")).unwrap_or_default();
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!("\n> {}", escape(&truncate(reason, 200)))
            };
            let last = at
                .as_ref()
                .map(|t| format!(", last at {}", slack_time(*t)))
                .unwrap_or_default();
            if matches!(run.trigger, Trigger::Forecast { .. }) {
                format!(
                    "🔔 The alarm fired{value} — ×{count} since this run was proposed{last}; this run handles it.{reason}"
                )
            } else {
                format!(
                    "🔁 The alarm fired again{value} — ×{count} during this run{last}.{reason}"
                )
            }
        }
        Note::AlarmCleared { reason } => {
            format!("💚 Alarm cleared: {}", escape(&truncate(reason, 200)))
        }
        Note::Paged { reason } => format!(
            "📟 Paged on-call: {}",
            escape(&crate::pagerduty::summary(run, reason))
        ),
        Note::PageResolved => match run.outcome() {
            Some(Outcome::Succeeded { .. }) => {
                "📟 PagerDuty incident resolved: the upsize succeeded.".to_string()
            }
            Some(Outcome::Cancelled { by }) => {
                format!("📟 PagerDuty incident resolved: <@{by}> cancelled the run.")
            }
            Some(Outcome::Denied { by }) => {
                format!("📟 PagerDuty incident resolved: <@{by}> denied the run.")
            }
            _ => "📟 PagerDuty incident resolved.".to_string(),
        },
        Note::PageFailed { error } => format!("⚠️ Couldn't page PagerDuty: {}", escape(error)),
    };
    Message::text(text)
}

/// "memory 93 % → 51 % on `cache.r6g.xlarge`", or why there is no such line.
fn verified_text(run: &Run, v: &crate::workflow::run::Verification) -> String {
    let pct = |p: Option<f64>| p.map_or("?".to_string(), |p| format!("{p:.0} %"));
    let over = format_duration(run.policy.verify_window);
    if let Trigger::ScaleDown { .. } = run.trigger
        && v.error.is_none()
        && v.after.is_some()
    {
        let line = format!(
            "memory {} → {} on `{}` (the fullest node, highest in the {over} after the scale-down)",
            pct(v.before),
            pct(v.after),
            v.on
        );
        return match (v.still_high(), v.threshold) {
            (true, Some(t)) => format!(
                "⚠️ Scaled down, but {line}: at or above the {t:.0} % it must stay below (`scale_down_verify_below`). On-call is paged; `/redis upsize {}` moves it back up.",
                run.group
            ),
            _ => format!(
                "✅ It holds: {line}, below the {} limit.",
                v.threshold.map_or("?".into(), |t| format!("{t:.0} %"))
            ),
        };
    }
    if let Some(e) = &v.error {
        return format!(
            "📉 Memory could not be read after the upsize ({}); the group is on `{}`. Check `DatabaseMemoryUsagePercentage` in CloudWatch.",
            escape(e),
            v.on
        );
    }
    if v.after.is_none() {
        return format!(
            "📉 CloudWatch had no memory readings in the {over} after the upsize; the group is on `{}`.",
            v.on
        );
    }
    let line = format!(
        "memory {} → {} on `{}` (the fullest node, highest in the {over} after the upsize)",
        pct(v.before),
        pct(v.after),
        v.on
    );
    match (v.still_high(), v.threshold) {
        (true, Some(t)) => format!(
            "⚠️ Upsized, but {line}: still at or above the alarm's {t:.0} %. On-call is paged; a requester can plan the next size with *Plan again*."
        ),
        _ => format!("📉 It worked: {line}."),
    }
}

/// How a run's state reads in a sentence ("succeeded", "waiting for approval", …).
pub fn describe_state(state: &State) -> String {
    match state {
        State::Planning => "planning".into(),
        State::AwaitingApproval { .. } => "waiting for approval".into(),
        State::Pausing { .. } => "pausing workers".into(),
        State::Snapshotting { .. } => "taking the snapshot".into(),
        State::SnapshotFailed { failure, .. } => format!(
            "waiting for a decision: the snapshot {}",
            failure.name().replace('_', " ")
        ),
        State::Modifying { plan, .. } if plan.direction == Direction::Down => "scaling down".into(),
        State::Modifying { .. } => "upsizing".into(),
        State::Resuming { .. } => "resuming workers".into(),
        State::Verifying { plan, .. } if plan.direction == Direction::Down => {
            "scaled down; watching memory".into()
        }
        State::Verifying { .. } => "upsized; watching memory".into(),
        State::Finished { outcome, .. } => match outcome {
            Outcome::Succeeded { .. } => "succeeded".into(),
            Outcome::Failed { step, .. } => format!("failed at {}", step.label()),
            Outcome::TimedOut { step, .. } => format!("timed out at {}", step.label()),
            Outcome::Denied { by } => format!("denied by <@{by}>"),
            Outcome::Cancelled { by } => format!("cancelled by <@{by}>"),
            Outcome::Dismissed { by } => format!("dismissed by <@{by}>"),
            Outcome::Snoozed { by, until } => {
                format!("snoozed by <@{by}> until {}", slack_day_time(*until))
            }
            Outcome::Expired => "expired".into(),
            Outcome::NothingToDo { .. } => "closed with nothing to do".into(),
            Outcome::GroupChanged { step, .. } => {
                format!("stopped before the {}: the group changed", step.label())
            }
        },
    }
}

/// A time that may be another day ("tomorrow 03:12"), in each reader's own time zone.
fn slack_day_time(t: Timestamp) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
        t.as_secs(),
        t.to_rfc3339()
    )
}

/// Slack renders this in each reader's own time zone; the fallback is UTC.
fn slack_time(t: Timestamp) -> String {
    format!("<!date^{}^{{time}}|{} UTC>", t.as_secs(), t.clock_utc())
}

/// Escape the three characters Slack's mrkdwn treats as control characters.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        CacheClusterId, ChannelId, MessageTs, NodeType, ReplicationGroupId, RunId, SlackUserId,
    };
    use crate::workflow::event::{Actor, Event};
    use crate::workflow::machine::{Decision, decide};
    use crate::workflow::policy::Policy;
    use crate::workflow::ports::{ClusterMode, GroupInfo, SnapshotStatus};
    use crate::workflow::run::TopMessage;

    const T0: i64 = 1_764_121_929_000;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(T0 + ms)
    }

    fn nt(s: &str) -> NodeType {
        NodeType::parse(s).unwrap()
    }

    fn advance(run: &Run, event: Event, ms: i64) -> Run {
        match decide(run, &event, at(ms)) {
            Decision::Accept(t) => t.run,
            other => panic!("{other:?}"),
        }
    }

    fn group(status: &str, node: &str) -> GroupInfo {
        GroupInfo {
            id: ReplicationGroupId::parse("prod-jobs").unwrap(),
            status: status.into(),
            node_type: Some(nt(node)),
            members: vec![CacheClusterId::parse("prod-jobs-001").unwrap()],
            cluster_mode: ClusterMode::Disabled,
            shards: 1,
            pending: Vec::new(),
        }
    }

    /// A run driven through the machine to where the snapshot is being taken.
    fn runs() -> Vec<(&'static str, Run)> {
        let policy = Policy {
            max_node_type: Some(nt("cache.r6g.2xlarge")),
            ..Policy::default()
        };
        let planning = Run::new(
            RunId::parse("r-abcdefgh").unwrap(),
            ReplicationGroupId::parse("prod-jobs").unwrap(),
            ChannelId::parse("C0123ABCD").unwrap(),
            Trigger::Alarm {
                delivery_id: "eventbridge:test".into(),
                alarm_name: "Redis memory: prod-jobs".into(),
                reason:
                    "Threshold Crossed: 1 datapoint [93.2] was greater than the threshold (90.0)"
                        .into(),
                value: Some(93.2),
                at: at(0),
            },
            None,
            policy,
            at(0),
        );
        let allowed = crate::domain::node_types::scale_ups_from(&nt("cache.r6g.large"));
        let awaiting = advance(
            &planning,
            Event::PlanFetched {
                group: group("available", "cache.r6g.large"),
                allowed,
                preflight: crate::workflow::preflight::Preflight::clean(),
                forecast: None,
                prices: None,
            },
            800,
        );
        let awaiting = advance(
            &awaiting,
            Event::TopMessagePosted {
                message: TopMessage {
                    channel: ChannelId::parse("C0123ABCD").unwrap(),
                    ts: MessageTs::parse("1764121930.000100").unwrap(),
                    permalink: Some(
                        "https://example.slack.com/archives/C0123ABCD/p1764121930000100".into(),
                    ),
                    check_duplicates_after_ms: None,
                },
            },
            900,
        );
        let actor = Actor {
            user: SlackUserId::parse("U0ONCALL1").unwrap(),
            is_approver: true,
        };
        let snapshotting = advance(
            &awaiting,
            Event::Approve {
                actor: actor.clone(),
                version: None,
                acknowledged: false,
            },
            95_000,
        );
        let snapshotting = advance(
            &snapshotting,
            Event::SnapshotStarted {
                status: SnapshotStatus::Creating,
            },
            96_000,
        );
        let modifying = advance(
            &snapshotting,
            Event::SnapshotPolled {
                status: Some(SnapshotStatus::Available),
            },
            347_000,
        );
        let modifying = advance(
            &modifying,
            Event::ModifyRequested {
                group: group("modifying", "cache.r6g.large"),
            },
            348_000,
        );
        let verifying = advance(
            &modifying,
            Event::GroupPolled {
                group: group("available", "cache.r6g.xlarge"),
                events: Vec::new(),
            },
            1_020_000,
        );
        let succeeded = advance(
            &verifying,
            Event::MemoryRead {
                before: Some(93.2),
                after: Some(51.4),
            },
            1_920_000,
        );
        let mut snapshot_failed = advance(
            &snapshotting,
            Event::SnapshotPolled {
                status: Some(SnapshotStatus::Failed),
            },
            200_000,
        );
        snapshot_failed.page.open = true;
        let mut failed = advance(
            &modifying,
            Event::GroupPolled {
                group: group("available", "cache.r6g.large"),
                events: Vec::new(),
            },
            1_020_000,
        );
        failed.page.open = true;
        let denied = advance(
            &awaiting,
            Event::Deny {
                actor,
                version: None,
            },
            60_000,
        );
        let ended = |from: &Run, outcome: Outcome| {
            let mut r = from.clone();
            r.updated_at = at(1_500_000);
            r.state = State::Finished {
                plan: from.plan().cloned(),
                outcome,
            };
            r
        };
        let oncall = SlackUserId::parse("U0ONCALL1").unwrap();
        let mut snapshot_timed_out = ended(
            &snapshotting,
            Outcome::TimedOut {
                step: Step::Snapshot,
                after: std::time::Duration::from_secs(3600),
            },
        );
        snapshot_timed_out.page.open = true;
        let mut upsize_timed_out = ended(
            &modifying,
            Outcome::TimedOut {
                step: Step::Upsize,
                after: std::time::Duration::from_secs(7200),
            },
        );
        upsize_timed_out.page.open = true;
        let cancelled = ended(&snapshotting, Outcome::Cancelled { by: oncall.clone() });
        let expired = ended(&awaiting, Outcome::Expired);
        let group_changed = ended(
            &snapshotting,
            Outcome::GroupChanged {
                step: Step::Snapshot,
                drift: crate::workflow::policy::Drift::NodeType {
                    approved: nt("cache.r6g.large"),
                    now: nt("cache.r6g.xlarge"),
                },
            },
        );
        let nothing_to_do = ended(
            &planning,
            Outcome::NothingToDo {
                reason: "prod-jobs is already at its cap cache.r6g.2xlarge".into(),
            },
        );
        let mut still_high = succeeded.clone();
        if let Some(v) = still_high.verification.as_mut() {
            v.after = Some(92.5);
        }
        still_high.page.open = true;
        let mut without_snapshot = succeeded.clone();
        without_snapshot
            .decisions
            .push(crate::workflow::run::DecisionRecord {
                user: oncall,
                kind: DecisionKind::UpsizeWithoutSnapshot,
                at: at(300_000),
                node_type: None,
            });
        if let State::Finished {
            outcome: Outcome::Succeeded { snapshot, .. },
            ..
        } = &mut without_snapshot.state
        {
            *snapshot = None;
        }
        let proposed = {
            let mut r = awaiting.clone();
            r.policy.forecast_alert = std::time::Duration::from_secs(1800);
            r.trigger = Trigger::Forecast {
                at: at(0),
                forecast: crate::workflow::forecast::Forecast {
                    node: crate::domain::CacheClusterId::parse("prod-jobs-001").unwrap(),
                    slope_per_min: 0.6,
                    latest: 91.0,
                    full_in: Some(std::time::Duration::from_secs(15 * 60)),
                    trend: crate::workflow::forecast::Trend::Rising,
                    points_used: 60,
                    window: std::time::Duration::from_secs(3600),
                },
            };
            r
        };
        // A scale-down suggestion from cache.r6g.xlarge, as the check makes it and planned.
        let suggested = {
            let run = Run::new(
                RunId::parse("r-abcdefgh").unwrap(),
                ReplicationGroupId::parse("prod-jobs").unwrap(),
                ChannelId::parse("C0123ABCD").unwrap(),
                Trigger::ScaleDown {
                    at: at(0),
                    evidence: ScaleDownEvidence {
                        from: nt("cache.r6g.xlarge"),
                        to: nt("cache.r6g.large"),
                        peak: 21.4,
                        average: 15.25,
                        peak_on_smaller: 43.1,
                        below: 50.0,
                        verify_below: 75.0,
                        window: std::time::Duration::from_secs(7 * 86_400),
                        points: 1_440,
                        since_change: Some(std::time::Duration::from_secs(9 * 86_400)),
                    },
                },
                None,
                Policy::default(),
                at(0),
            );
            advance(
                &run,
                Event::PlanFetched {
                    group: group("available", "cache.r6g.xlarge"),
                    allowed: crate::domain::node_types::scale_downs_from(&nt("cache.r6g.xlarge")),
                    preflight: crate::workflow::preflight::Preflight::clean(),
                    forecast: None,
                    prices: None,
                },
                10,
            )
        };
        let approver = Actor {
            user: SlackUserId::parse("U0ONCALL1").unwrap(),
            is_approver: true,
        };
        let dismissed = advance(
            &suggested,
            Event::Dismiss {
                actor: approver.clone(),
            },
            200_000,
        );
        let snoozed = advance(
            &suggested,
            Event::Snooze {
                actor: approver,
                snooze: std::time::Duration::from_secs(3 * 86_400),
            },
            200_000,
        );
        vec![
            ("planning", planning),
            ("awaiting_approval", awaiting),
            ("snapshotting", snapshotting),
            ("modifying", modifying),
            ("verifying", verifying),
            ("succeeded", succeeded),
            ("failed", failed),
            ("denied", denied),
            ("snapshot_failed", snapshot_failed),
            ("snapshot_timed_out", snapshot_timed_out),
            ("upsize_timed_out", upsize_timed_out),
            ("cancelled", cancelled),
            ("expired", expired),
            ("group_changed", group_changed),
            ("nothing_to_do", nothing_to_do),
            ("succeeded_still_high", still_high),
            ("succeeded_without_snapshot", without_snapshot),
            ("proposed_by_forecast", proposed),
            ("suggested_scale_down", suggested),
            ("scale_down_dismissed", dismissed),
            ("scale_down_snoozed", snoozed),
        ]
    }

    #[test]
    fn top_message_snapshots() {
        for (name, run) in runs() {
            let msg = render_top(&run, at(400_000));
            insta::assert_json_snapshot!(format!("top_{name}"), msg);
        }
    }

    #[test]
    fn a_run_waiting_for_approval_has_its_buttons_and_one_that_failed_offers_a_new_plan() {
        for (name, run) in runs() {
            let msg = render_top(&run, at(400_000));
            let ids: Vec<&str> = msg
                .blocks
                .iter()
                .filter(|b| b["type"] == "actions")
                .flat_map(|b| b["elements"].as_array().unwrap())
                .filter_map(|e| e["action_id"].as_str())
                .collect();
            match name {
                "awaiting_approval" | "proposed_by_forecast" => {
                    assert!(ids.contains(&actions::APPROVE), "{name}: {ids:?}");
                    assert!(ids.contains(&actions::DENY), "{name}: {ids:?}");
                }
                "failed" | "snapshot_timed_out" | "expired" | "group_changed" => {
                    assert_eq!(ids, [actions::REPLAN], "{name}")
                }
                // A suggestion: no Deny, no size picker; Dismiss and Snooze instead.
                "suggested_scale_down" => {
                    assert_eq!(ids, [actions::APPROVE, actions::DISMISS, actions::SNOOZE])
                }
                _ => assert!(ids.is_empty(), "{name}: {ids:?}"),
            }
            assert!(!msg.text.is_empty(), "{name}: a text fallback");
        }
    }

    #[test]
    fn a_run_the_alarm_started_says_whether_the_alarm_is_still_firing_when_it_did_not_fix_it() {
        let (_, failed) = runs().into_iter().find(|(n, _)| *n == "failed").unwrap();
        let text = serde_json::to_string(&render_top(&failed, at(400_000))).unwrap();
        assert!(
            text.contains("is still firing as far as the bot knows"),
            "{text}"
        );
        let mut cleared = failed.clone();
        cleared.repeats.cleared_at = Some(at(1_000_000));
        let text = serde_json::to_string(&render_top(&cleared, at(400_000))).unwrap();
        assert!(text.contains("went back to OK at"), "{text}");
        let (_, succeeded) = runs().into_iter().find(|(n, _)| *n == "succeeded").unwrap();
        let text = serde_json::to_string(&render_top(&succeeded, at(400_000))).unwrap();
        assert!(!text.contains("still firing"), "{text}");
    }

    #[test]
    fn the_size_picker_offers_only_allowed_sizes_within_the_cap() {
        let (_, run) = runs()
            .into_iter()
            .find(|(n, _)| *n == "awaiting_approval")
            .unwrap();
        let msg = render_top(&run, at(1000));
        let actions = msg.blocks.iter().find(|b| b["type"] == "actions").unwrap();
        let picker = actions["elements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "static_select")
            .unwrap();
        let values: Vec<&str> = picker["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["value"].as_str().unwrap())
            .collect();
        assert_eq!(values[0], "cache.r6g.xlarge");
        assert!(values.contains(&"cache.r6g.2xlarge"));
        assert!(!values.contains(&"cache.r6g.4xlarge"), "above the cap");
        for v in values {
            let t = nt(v);
            assert!(crate::domain::node_types::within_cap(&t, &nt("cache.r6g.2xlarge")).unwrap());
        }
        assert_eq!(picker["initial_option"]["value"], "cache.r6g.xlarge");
    }

    #[test]
    fn mrkdwn_control_characters_from_outside_are_escaped() {
        assert_eq!(
            escape("<!channel> & <@U1>"),
            "&lt;!channel&gt; &amp; &lt;@U1&gt;"
        );
        let (_, mut run) = runs().remove(0);
        if let Trigger::Alarm { reason, .. } = &mut run.trigger {
            *reason = "<!here> memory".into();
        }
        let msg = render_top(&run, at(10));
        assert!(!serde_json::to_string(&msg).unwrap().contains("<!here>"));
    }

    #[test]
    fn thread_note_snapshots() {
        let (_, run) = runs().remove(4);
        let notes = [
            Note::Approved {
                by: vec![SlackUserId::parse("U0ONCALL1").unwrap()],
                with_pending: false,
            },
            Note::Approved {
                by: vec![SlackUserId::parse("U0ONCALL2").unwrap()],
                with_pending: true,
            },
            Note::NeedsAcknowledgement,
            Note::SnapshotReady {
                name: crate::domain::SnapshotName::for_run(&run.id),
                took: std::time::Duration::from_secs(252),
            },
            Note::Failed {
                step: Step::Upsize,
                error: "InsufficientCacheClusterCapacity: no capacity".into(),
            },
            Note::Paged {
                reason: crate::workflow::effect::PageReason::RunFailed,
            },
            Note::AlarmRepeated {
                reason: "Threshold Crossed".into(),
                value: Some(95.5),
                count: 2,
                at: Some(crate::domain::Timestamp::from_millis(1_764_558_720_000)),
            },
        ];
        let texts: Vec<String> = notes.iter().map(|n| render_note(&run, n).text).collect();
        insta::assert_json_snapshot!("notes", texts);
    }

    #[test]
    fn after_a_failed_snapshot_the_thread_offers_both_choices_with_confirmations() {
        let (_, run) = runs()
            .into_iter()
            .find(|(n, _)| *n == "snapshot_failed")
            .unwrap();
        let offer = render_cancel_offer(&run);
        insta::assert_json_snapshot!("fallback_offer", offer);
        let actions = offer
            .blocks
            .iter()
            .find(|b| b["type"] == "actions")
            .unwrap();
        let ids: Vec<&str> = actions["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [actions::WITHOUT_SNAPSHOT, actions::CANCEL]);
        for e in actions["elements"].as_array().unwrap() {
            assert_eq!(e["value"], run.id.as_str());
            assert!(e["confirm"].is_object(), "each asks first");
        }
        assert!(offer.text.contains("was *not changed*"), "{}", offer.text);
        // Before the failure, the same reply is the plain Cancel offer.
        let (_, snapshotting) = runs()
            .into_iter()
            .find(|(n, _)| *n == "snapshotting")
            .unwrap();
        let plain = render_cancel_offer(&snapshotting);
        assert!(
            !serde_json::to_string(&plain)
                .unwrap()
                .contains(actions::WITHOUT_SNAPSHOT)
        );
        let notes = [
            Note::WithoutSnapshot {
                by: SlackUserId::parse("U0ONCALL1").unwrap(),
            },
            Note::SnapshotSkipped,
            Note::FallbackExpired {
                after: std::time::Duration::from_secs(86_400),
            },
        ];
        let mut texts: Vec<String> = notes.iter().map(|n| render_note(&run, n).text).collect();
        for reason in [
            CancelGone::SnapshotFailed,
            CancelGone::WithoutSnapshot(SlackUserId::parse("U0ONCALL1").unwrap()),
        ] {
            texts.push(render_cancel_withdrawn(&reason, at(300_000)).text);
        }
        insta::assert_json_snapshot!("fallback_notes", texts);
    }

    #[test]
    fn a_denial_offers_to_say_why_and_the_reason_is_shown_escaped() {
        let (_, mut denied) = runs().into_iter().find(|(n, _)| *n == "denied").unwrap();
        let by = SlackUserId::parse("U0ONCALL1").unwrap();
        let note = render_note(&denied, &Note::Denied { by: by.clone() });
        let button = &note.blocks[1]["elements"][0];
        assert_eq!(button["action_id"], actions::DENIAL_REASON);
        assert_eq!(button["value"], denied.id.as_str());
        let modal = render_denial_modal(&denied);
        insta::assert_json_snapshot!("denial_modal", modal);
        assert_eq!(
            modal["callback_id"],
            crate::slack::interactions::DENIAL_MODAL
        );
        assert_eq!(modal["private_metadata"], denied.id.as_str());
        assert_eq!(
            modal["blocks"][1]["block_id"],
            crate::slack::interactions::DENIAL_INPUT
        );
        assert_eq!(
            modal["blocks"][1]["element"]["action_id"],
            crate::slack::interactions::DENIAL_INPUT
        );
        let said = render_note(
            &denied,
            &Note::DenialExplained {
                by,
                reason: "<!channel> freeze & hold".into(),
            },
        );
        assert_eq!(
            said.text,
            "📝 <@U0ONCALL1> denied it because: “&lt;!channel&gt; freeze &amp; hold”"
        );
        denied.denial_reason = Some("change freeze".into());
        let top = serde_json::to_string(&render_top(&denied, at(400_000))).unwrap();
        assert!(
            top.contains("by <@U0ONCALL1>: “change freeze”. Nothing was changed."),
            "{top}"
        );
    }

    #[test]
    fn the_preflight_fits_in_a_block_and_after_the_approval_only_its_warnings_stay() {
        use crate::workflow::preflight::{Check, PendingChange, Preflight};
        let (_, awaiting) = runs()
            .into_iter()
            .find(|(_, r)| matches!(r.state, State::AwaitingApproval { .. }))
            .unwrap();
        let mut many = awaiting.clone();
        if let State::AwaitingApproval { plan, .. } = &mut many.state {
            plan.preflight = Some(Preflight {
                pending: Check::Known(
                    (0..40)
                        .map(|n| {
                            PendingChange::new("ServiceUpdate", format!("{n}-{}", "x".repeat(200)))
                        })
                        .collect(),
                ),
                autoscaling: Check::Unknown("y".repeat(5000)),
                ..Preflight::clean()
            });
        }
        let msg = render_top(&many, at(1000));
        for b in &msg.blocks {
            if let Some(text) = b["text"]["text"].as_str() {
                assert!(
                    text.chars().count() <= 3000,
                    "{} chars",
                    text.chars().count()
                );
            }
        }
        let json = serde_json::to_string(&msg).unwrap();
        assert!(json.contains("and 35 more"), "{json}");
        assert!(json.contains("Approve with pending changes"));

        // Once decided, a clean preflight leaves the card; warnings stay on it.
        let mut clean = awaiting.clone();
        if let State::AwaitingApproval { plan, .. } = &mut clean.state {
            plan.members = 2; // a primary and a replica: nothing to warn about
        }
        let decided = |r: &mut Run| {
            for s in r.steps.iter_mut().filter(|s| s.step == Step::Approval) {
                s.status = StepStatus::Done;
                s.ended = Some(at(950));
            }
            if let State::AwaitingApproval { plan, .. } = &r.state {
                r.state = State::Snapshotting {
                    plan: plan.clone(),
                    snapshot: crate::domain::SnapshotName::for_run(&r.id),
                    polls: 0,
                    created: false,
                };
            }
        };
        decided(&mut clean);
        let json = serde_json::to_string(&render_top(&clean, at(1000))).unwrap();
        assert!(!json.contains("Preflight"), "{json}");
        decided(&mut many);
        let json = serde_json::to_string(&render_top(&many, at(1000))).unwrap();
        assert!(json.contains("*Preflight warnings:*"), "{json}");
        assert!(json.contains("Pending changes"), "{json}");
        assert!(
            !json.contains("Snapshots: 0 manual"),
            "only the warnings: {json}"
        );
    }

    fn a_forecast(slope_per_min: f64, latest: f64, full_in: Option<u64>) -> Forecast {
        let trend = if slope_per_min >= 0.05 {
            Trend::Rising
        } else if slope_per_min <= -0.05 {
            Trend::Falling
        } else {
            Trend::Steady
        };
        Forecast {
            node: CacheClusterId::parse("prod-jobs-001").unwrap(),
            slope_per_min,
            latest,
            full_in: full_in.map(std::time::Duration::from_secs),
            trend,
            points_used: 60,
            window: std::time::Duration::from_secs(3600),
        }
    }

    #[test]
    fn the_forecast_says_when_full_or_which_way_or_why_not() {
        let line = |c: Check<Forecast>| forecast_line(&c);
        assert_eq!(
            line(Check::Known(a_forecast(0.8, 92.2, Some(585)))),
            "📈 At this rate (+0.8 %/min over the last 1h; `prod-jobs-001` at 92.2 %), full in ~10 min"
        );
        assert_eq!(
            line(Check::Known(a_forecast(0.1, 70.0, Some(18_000)))),
            "📈 At this rate (+0.1 %/min over the last 1h; `prod-jobs-001` at 70 %), full in ~5 h"
        );
        assert!(
            line(Check::Known(a_forecast(0.06, 10.0, Some(200_000)))).ends_with("full in ~2 days")
        );
        assert!(
            line(Check::Known(a_forecast(5.0, 99.9, Some(1)))).ends_with("full in under a minute")
        );
        assert_eq!(
            line(Check::Known(a_forecast(0.6, 100.5, Some(0)))),
            "📈 Full already: `prod-jobs-001` at 100.5 % (+0.6 %/min over the last 1h)"
        );
        assert_eq!(
            line(Check::Known(a_forecast(0.01, 40.0, None))),
            "➡️ Memory steady (+0.01 %/min over the last 1h; `prod-jobs-001` at 40 %)"
        );
        assert_eq!(
            line(Check::Known(a_forecast(-0.3, 61.0, None))),
            "📉 Memory falling (-0.3 %/min over the last 1h; `prod-jobs-001` at 61 %)"
        );
        assert_eq!(
            line(Check::Unknown("no permission <to> read".into())),
            "❔ Memory trend unknown (no permission &lt;to&gt; read)"
        );
    }

    fn a_price_sheet(unknown: &[(&str, &str)]) -> crate::workflow::cost::PriceSheet {
        use crate::workflow::cost::{NodePrice, PriceSheet};
        let listed = [
            ("cache.r6g.large", 0.206),
            ("cache.r6g.xlarge", 0.411),
            ("cache.r6g.2xlarge", 0.821),
        ];
        let prices = listed
            .iter()
            .map(|(t, h)| NodePrice {
                node_type: nt(t),
                hourly: match unknown.iter().find(|(u, _)| u == t) {
                    Some((_, why)) => Check::Unknown(why.to_string()),
                    None => Check::Known(*h),
                },
            })
            .collect();
        PriceSheet {
            region: "us-east-1".into(),
            prices,
        }
    }

    /// The run waiting for approval, on a three-node group, with `sheet` as its prices.
    fn priced(sheet: crate::workflow::cost::PriceSheet) -> Run {
        let (_, mut run) = runs()
            .into_iter()
            .find(|(n, _)| *n == "awaiting_approval")
            .unwrap();
        let State::AwaitingApproval { plan, .. } = &mut run.state else {
            unreachable!()
        };
        plan.members = 3;
        plan.prices = Some(sheet);
        run
    }

    fn picker_descriptions(msg: &Message) -> Vec<(String, String)> {
        let actions = msg.blocks.iter().find(|b| b["type"] == "actions").unwrap();
        let picker = actions["elements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "static_select")
            .unwrap();
        picker["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let d = o["description"]["text"].as_str().unwrap_or("(none)");
                (o["value"].as_str().unwrap().to_string(), d.to_string())
            })
            .collect()
    }

    #[test]
    fn the_card_shows_what_the_move_costs_a_month_and_the_picker_each_choices_delta() {
        let run = priced(a_price_sheet(&[]));
        let msg = render_top(&run, at(1000));
        insta::assert_json_snapshot!("top_awaiting_approval_with_prices", msg);
        let json = serde_json::to_string(&msg).unwrap();
        assert!(
            json.contains(
                "💵 `cache.r6g.large` $0.206/h → `cache.r6g.xlarge` $0.411/h per node; 3 node(s): \
                 $451 → $900 a month (+$449), on demand in us-east-1"
            ),
            "{json}"
        );
        assert_eq!(
            picker_descriptions(&msg),
            [
                ("cache.r6g.xlarge".into(), "+$449/mo (3 node(s))".into()),
                ("cache.r6g.2xlarge".into(), "+$1,347/mo (3 node(s))".into()),
            ]
        );
        // Without prices (pricing off, or a plan from before) there is no cost line and no
        // description.
        let (_, plain) = runs()
            .into_iter()
            .find(|(n, _)| *n == "awaiting_approval")
            .unwrap();
        let msg = render_top(&plain, at(1000));
        assert!(!serde_json::to_string(&msg).unwrap().contains("💵"));
        assert!(picker_descriptions(&msg).iter().all(|(_, d)| d == "(none)"));
    }

    #[test]
    fn a_price_that_could_not_be_read_is_unknown_with_its_reason_escaped() {
        let why =
            "no permission to read the AWS Price List (AccessDeniedException): <!channel> & co";
        let run = priced(a_price_sheet(&[("cache.r6g.xlarge", why)]));
        let msg = render_top(&run, at(1000));
        insta::assert_json_snapshot!("top_awaiting_approval_prices_unknown", msg);
        let json = serde_json::to_string(&msg).unwrap();
        assert!(
            json.contains(
                "💵 Cost: unknown (no permission to read the AWS Price List \
                 (AccessDeniedException): &lt;!channel&gt; &amp; co)"
            ),
            "{json}"
        );
        assert!(!json.contains("<!channel>"), "{json}");
        assert_eq!(
            picker_descriptions(&msg),
            [
                ("cache.r6g.xlarge".into(), "price unknown".into()),
                ("cache.r6g.2xlarge".into(), "+$1,347/mo (3 node(s))".into()),
            ]
        );
    }

    #[test]
    fn a_move_down_shows_a_saving() {
        let mut run = priced(a_price_sheet(&[]));
        let State::AwaitingApproval { plan, .. } = &mut run.state else {
            unreachable!()
        };
        plan.current = nt("cache.r6g.2xlarge");
        plan.target = nt("cache.r6g.xlarge");
        plan.choices = vec![nt("cache.r6g.large"), nt("cache.r6g.xlarge")];
        let line = cost_line(plan).unwrap();
        assert!(
            line.contains("3 node(s): $1,798 → $900 a month (−$898)"),
            "{line}"
        );
        let msg = render_top(&run, at(1000));
        assert_eq!(
            picker_descriptions(&msg),
            [
                ("cache.r6g.large".into(), "−$1,347/mo (3 node(s))".into()),
                ("cache.r6g.xlarge".into(), "−$898/mo (3 node(s))".into()),
            ]
        );
    }

    #[test]
    fn money_reads_like_money() {
        assert_eq!(hourly_dollars(0.206), "$0.206");
        assert_eq!(hourly_dollars(0.016), "$0.016");
        assert_eq!(hourly_dollars(0.2287), "$0.2287");
        assert_eq!(hourly_dollars(0.5), "$0.50");
        assert_eq!(hourly_dollars(6.568), "$6.568");
        assert_eq!(dollars(451.14), "$451");
        assert_eq!(dollars(12_345.6), "$12,346");
        assert_eq!(dollars(1_234_567.0), "$1,234,567");
        assert_eq!(signed_dollars(448.95), "+$449");
        assert_eq!(signed_dollars(-225.2), "−$225");
        assert_eq!(signed_dollars(0.3), "±$0");
    }

    #[test]
    fn the_card_shows_the_forecast_until_the_upsize_is_done() {
        let all = runs();
        let with = |name: &str| {
            let mut r = all.iter().find(|(n, _)| *n == name).unwrap().1.clone();
            let forecast = Some(Check::Known(a_forecast(0.8, 92.2, Some(585))));
            match &mut r.state {
                State::AwaitingApproval { plan, .. }
                | State::Snapshotting { plan, .. }
                | State::Verifying { plan, .. } => plan.forecast = forecast,
                State::Finished { plan, .. } => plan.as_mut().unwrap().forecast = forecast,
                other => panic!("{other:?}"),
            }
            serde_json::to_string(&render_top(&r, at(1000))).unwrap()
        };
        for shown in ["awaiting_approval", "snapshotting", "denied"] {
            assert!(with(shown).contains("full in ~10 min"), "{shown}");
        }
        for gone in ["verifying", "succeeded"] {
            assert!(!with(gone).contains("At this rate"), "{gone}");
        }
        // A plan without one (forecast_window = "0s", or made before) shows none.
        let (_, awaiting) = all.iter().find(|(n, _)| *n == "awaiting_approval").unwrap();
        let json = serde_json::to_string(&render_top(awaiting, at(1000))).unwrap();
        assert!(!json.contains("over the last"), "{json}");
    }
}
