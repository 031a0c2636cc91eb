//! What the bot answers a person: pure rendering of the use cases' [`Answer`]s (status, dry
//! runs, run lists, refusals, …) into ephemeral messages. No I/O; the use cases gather the data.

use crate::app::Answer;
use crate::config::GroupConfig;
use crate::domain::node_types::memory_label;
use crate::domain::{Timestamp, format_duration};
use crate::workflow::machine::{CannotCancel, Rejection};
use crate::workflow::policy::NoPlan;
use crate::workflow::policy::{ApprovalMode, OnApprovalTimeout, Policy};
use crate::workflow::ports::GroupInfo;
use crate::workflow::preflight::Check;
use crate::workflow::run::{DecisionKind, Plan, Run, Step, Trigger};

use super::Message;
use super::blocks::{
    changes_list, current_forecast, describe_state, escape, forecast_line, preflight_lines,
};

/// A short ephemeral answer.
pub fn text(s: impl Into<String>) -> Message {
    Message::text(s)
}

/// What a use case said, as the person reads it in Slack.
pub fn render(answer: &Answer) -> Message {
    match answer {
        Answer::Runs { runs: list, now } => runs(list, *now),
        Answer::Audit { run, entries } => audit(run, entries),
        Answer::CheckingApprover => {
            text("Slack took too long to say whether you are an approver; try again in a moment.")
        }
        Answer::OnlyApproversReadAudit => text(
            "Only approvers can read a run's audit trail (see `slack.approvers` in the bot's config).",
        ),
        Answer::Status {
            group,
            place,
            active,
            recent,
            now,
            live_follows,
        } => status_local(group, place, active.as_ref(), recent, *now, *live_follows),
        Answer::LiveStatus { group } => status_live(group),
        Answer::AwsUnreadable { group, error } => {
            text(format!("Couldn't read {group} from AWS: {}", escape(error)))
        }
        Answer::DryRun {
            group,
            plan,
            last_success,
            now,
        } => dry_run(group, (**plan).as_ref(), last_success.as_ref(), *now),
        Answer::DryRunPending { group } => text(format!(
            "Working out the plan for {group}… (dry run: nothing will change)"
        )),
        Answer::DryRunNeedsResponseUrl => text(
            "A dry run answers a moment later, and this request came without a usable response_url.",
        ),
        Answer::UnknownGroup { group, managed } => text(format!(
            "`{group}` is not a group this bot manages. Managed groups: {managed}. (A group is managed once the bot's config has a `[groups.{group}]` table.)"
        )),
        Answer::AboveCap {
            node_type: t,
            group,
            cap,
            command,
        } => text(format!(
            "{t} is above {group}'s cap ({cap}). Ask for a size at or below the cap, or leave the size out to get the next one up. `{command} upsize {group} --dry-run` shows the choices."
        )),
        Answer::CapUnusable { node_type, why } => {
            text(format!("Can't use {node_type}: {}.", escape(why)))
        }
        Answer::AlreadyActive { run } => {
            let link = run
                .message
                .as_ref()
                .and_then(|m| m.permalink.as_deref())
                .map(|u| format!(" — <{u}|see its thread>"))
                .unwrap_or_default();
            text(format!(
                "{} already has an active run: `{}` ({}){link}. Only one run per group at a time.",
                run.group,
                run.id,
                describe_state(&run.state)
            ))
        }
        Answer::AlreadyActiveId { group, id } => {
            text(format!("{group} already has an active run: `{id}`."))
        }
        Answer::Started {
            id,
            group,
            channel: Some(channel),
        } => text(format!(
            "Started run `{id}` for {group}. Its plan will be in <#{channel}> in a moment, with an Approve button if the group's policy needs an approval."
        )),
        Answer::Started {
            id,
            group,
            channel: None,
        } => text(format!("Started run `{id}` for {group}.")),
        Answer::Decided { run } => text(format!(
            "Done: run `{}` is now {}.",
            run.id,
            describe_state(&run.state)
        )),
        Answer::Refused { why } => text(rejection(why)),
        Answer::NothingChanged { why } => text(format!("Nothing changed: {why}.")),
        Answer::NoSuchRun { id } => text(format!(
            "There is no run `{id}`. `/redis runs` lists the recent ones."
        )),
        Answer::CheckingCancel { id } => text(format!("Checking whether you may cancel `{id}`…")),
        Answer::OnlyApproversStartAnyway => {
            text("Only approvers can start a run during the cooldown.")
        }
        Answer::WrongChannel { channels } => {
            let where_: Vec<String> = channels.iter().map(|c| format!("<#{c}>")).collect();
            text(format!(
                "Runs are started from {} (see `slack.command_channels`). Status, help and dry runs work anywhere.",
                where_.join(", ")
            ))
        }
        Answer::NotARequester => text(
            "Only requesters can start runs (see `slack.requesters` in the bot's config). Ask one of them, or try `--dry-run` to see the plan.",
        ),
        Answer::CheckingRequester { group } => {
            text(format!("Checking whether you may start a run for {group}…"))
        }
        Answer::Cooldown {
            group,
            last,
            since,
            remaining,
        } => super::blocks::render_command_cooldown(group, last, *since, *remaining),
        Answer::Internal => {
            text("Something went wrong on my side; it is in the bot's log. Please try again.")
        }
    }
}

fn link(run: &Run, label: &str) -> String {
    match run.message.as_ref().and_then(|m| m.permalink.as_deref()) {
        Some(url) => format!("<{url}|{label}>"),
        None => label.to_string(),
    }
}

/// One line about a run: id, state, trigger, who approved, duration.
pub fn run_line(run: &Run, now: Timestamp) -> String {
    let trigger = match &run.trigger {
        Trigger::Alarm { .. } => "alarm".to_string(),
        Trigger::Forecast { .. } => "forecast".to_string(),
        Trigger::ScaleDown { .. } => "scale-down suggestion".to_string(),
        Trigger::Command { user, .. } => format!("<@{user}>"),
    };
    let approved: Vec<String> = run
        .decisions
        .iter()
        .filter(|d| d.kind == DecisionKind::Approve)
        .map(|d| format!("<@{}>", d.user))
        .collect();
    let approved = if approved.is_empty() {
        String::new()
    } else {
        format!(" · approved by {}", approved.join(", "))
    };
    let plan = run
        .plan()
        .map(|p| format!(" · `{}` → `{}`", p.current, p.target))
        .unwrap_or_default();
    let took = if run.is_finished() {
        format_duration(run.updated_at.since(run.created_at))
    } else {
        format!("{} so far", format_duration(now.since(run.created_at)))
    };
    format!(
        "• `{}` {} — *{}* · by {trigger}{approved}{plan} · {took} · {}",
        run.id,
        run.group,
        describe_state(&run.state),
        link(run, "thread")
    )
}

/// Why a person's click or command was refused, said to them privately.
pub fn rejection(r: &Rejection) -> String {
    match r {
        Rejection::NotAnApprover => {
            "Only approvers can decide on this run (see `slack.approvers` in the bot's config). Ask one of them.".into()
        }
        Rejection::SelfApproval => "You asked for this run, so someone else has to approve it.".into(),
        Rejection::NotASuggestion => {
            "Dismiss and Snooze are for a scale-down suggestion; this run is an upsize (use Deny).".into()
        }
        Rejection::AlreadyApprovedByYou => {
            "You already approved this run; it needs another approver too.".into()
        }
        Rejection::AlreadyDecided { state } => format!(
            "This run was already decided (it is {}); nothing changed.",
            describe_state(state)
        ),
        Rejection::Expired => {
            "This run expired without a decision. Start a new one with `/redis upsize <group>`.".into()
        }
        Rejection::CannotCancel {
            why: CannotCancel::UpsizeStarted { target },
        } => format!(
            "Can't cancel: the upsize to {target} has started and AWS can't stop a modification in progress."
        ),
        Rejection::CannotCancel {
            why: CannotCancel::Over { state },
        } => {
            format!("Can't cancel: the run is {}.", describe_state(state))
        }
        Rejection::NotAllowedSize { node_type, choices } => format!(
            "{node_type} is not a size this run may move to. Choose one of: {}.",
            choices
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Rejection::NotWaitingForApproval { state } => {
            let state = match **state {
                crate::workflow::run::State::Planning => "still planning".to_string(),
                ref other => describe_state(other),
            };
            format!("This run is not waiting for a decision (it is {state}).")
        }
        Rejection::NotYourDenial { denied_by: Some(by) } => {
            format!("Only <@{by}>, who denied this run, can say why.")
        }
        Rejection::NotYourDenial { denied_by: None } => {
            "This run was not denied, so there is no denial to explain.".into()
        }
        Rejection::NoFailedSnapshot { state } => format!(
            "*Upsize without a snapshot* is only for a run whose snapshot failed; this run is {}. Nothing changed.",
            describe_state(state)
        ),
        Rejection::NeedsAcknowledgement { pending } => {
            let what = match pending {
                Check::Known(changes) => format!(
                    "changes are waiting on the group that the upsize would apply too: {}",
                    changes_list(changes)
                ),
                Check::Unknown(why) => format!(
                    "the bot couldn't check the group for pending changes ({})",
                    escape(why)
                ),
            };
            format!(
                "Not approved: {what}. If that is fine, use *Approve with pending changes* on the run's message."
            )
        }
        Rejection::PlanChanged { target, .. } => format!(
            "The plan changed since you looked: it now moves to `{target}`, and approvals start over. Nothing was decided; the run's message shows the plan as it is."
        ),
    }
}

/// `/redis runs`.
pub fn runs(runs: &[Run], now: Timestamp) -> Message {
    if runs.is_empty() {
        return text("No runs yet.");
    }
    let lines: Vec<String> = runs.iter().map(|r| run_line(r, now)).collect();
    text(format!(
        "*Recent runs*, newest first:\n{}",
        lines.join("\n")
    ))
}

fn policy_line(p: &Policy) -> String {
    let approval = match p.approval {
        ApprovalMode::Auto => "automatic approval".to_string(),
        ApprovalMode::Required => {
            let timeout = match p.on_approval_timeout {
                OnApprovalTimeout::Escalate => "pages on-call",
                OnApprovalTimeout::Approve => "approves itself",
            };
            format!(
                "{} approval(s) required; after {} it {timeout}",
                p.min_approvals.max(1),
                format_duration(p.approval_timeout)
            )
        }
    };
    let cap = p
        .max_node_type
        .as_ref()
        .map(|c| format!("cap `{c}`"))
        .unwrap_or_else(|| "no cap".into());
    format!(
        "{approval} · {cap} · cooldown {}",
        format_duration(p.cooldown)
    )
}

/// The part of `/redis status` that needs no AWS call.
pub fn status_local(
    group: &GroupConfig,
    place: &crate::workflow::ports::fleet::Place,
    active: Option<&Run>,
    recent: &[Run],
    now: Timestamp,
    live_follows: bool,
) -> Message {
    let mut out = format!("*{}* · {}\n", group.id, policy_line(&group.policy));
    let or_unknown = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".into());
    out.push_str(&format!(
        "AWS: `{}` in account `{}`, `{}`\n",
        group.aws_id(),
        or_unknown(&place.account),
        or_unknown(&place.region)
    ));
    match active {
        Some(run) => {
            out.push_str(&format!(
                "Active run: `{}` — {} ({})\n",
                run.id,
                describe_state(&run.state),
                link(run, "thread")
            ));
            if let Some(forecast) = current_forecast(run) {
                // As read when the run was planned (the live status does not read CloudWatch).
                let when = run
                    .step(Step::Plan)
                    .and_then(|s| s.ended)
                    .map(|t| {
                        format!(
                            " _(when the run was planned, {} ago)_",
                            format_duration(now.since(t))
                        )
                    })
                    .unwrap_or_default();
                out.push_str(&format!("{}{when}\n", forecast_line(forecast)));
            }
        }
        None => out.push_str("No active run.\n"),
    }
    out.push_str(&scale_down_line(group, active, recent, now));
    out.push('\n');
    if !recent.is_empty() {
        out.push_str("Last runs:\n");
        for r in recent {
            out.push_str(&run_line(r, now));
            out.push('\n');
        }
    }
    if live_follows {
        out.push_str("_Asking AWS for the live status…_");
    }
    text(out.trim_end().to_string())
}

/// Where the group stands with scale-down suggestions: off, one waiting (with its evidence),
/// how the last one ended, or none so far.
fn scale_down_line(
    group: &GroupConfig,
    active: Option<&Run>,
    recent: &[Run],
    now: Timestamp,
) -> String {
    use crate::workflow::policy::ScaleDownMode;
    use crate::workflow::run::Trigger;
    if group.policy.scale_down == ScaleDownMode::Off {
        return "💸 Scale-down suggestions: off (`scale_down = \"off\"`)".to_string();
    }
    let suggestion = active
        .into_iter()
        .chain(recent)
        .find(|r| matches!(r.trigger, Trigger::ScaleDown { .. }));
    match suggestion {
        Some(r) => {
            let Trigger::ScaleDown { at, evidence: e } = &r.trigger else {
                unreachable!("found above");
            };
            format!(
                "💸 Scale-down suggestion `{}` ({} ago): `{}` → `{}`, peak {:.1} % over {} ({:.1} % on the smaller type) — {}",
                r.id,
                format_duration(now.since(*at)),
                e.from,
                e.to,
                e.peak,
                format_duration(e.window),
                e.peak_on_smaller,
                describe_state(&r.state)
            )
        }
        None => format!(
            "💸 Scale-down: none suggested lately (one comes when the peak over {} stays below {:.0} % of the next size down, at least {} after the last change)",
            format_duration(group.policy.scale_down_window),
            group.policy.scale_down_below,
            format_duration(group.policy.scale_down_after)
        ),
    }
}

/// The live part of `/redis status`, from DescribeReplicationGroups.
pub fn status_live(g: &GroupInfo) -> Message {
    let node = match &g.node_type {
        Some(t) => format!("`{t}` ({})", memory_label(t)),
        None => "an unknown node type".into(),
    };
    let members: Vec<&str> = g.members.iter().map(|m| m.as_str()).collect();
    text(format!(
        "*{}* is `{}` on {node} · {} member(s): {} · cluster mode {}",
        g.id,
        escape(g.status.as_str()),
        members.len(),
        members.join(", "),
        g.cluster_mode
    ))
}

/// `/redis upsize … --dry-run`: the plan, or why there is none. Nothing changes.
pub fn dry_run(
    group: &GroupConfig,
    plan: Result<&Plan, &NoPlan>,
    last_success: Option<&Run>,
    now: Timestamp,
) -> Message {
    let mut out = String::from("*Dry run* — nothing was changed.\n");
    match plan {
        Ok(p) => {
            out.push_str(&format!(
                "*{}*: snapshot, then `{}` ({}) → `{}` ({})\n",
                group.id,
                p.current,
                memory_label(&p.current),
                p.target,
                memory_label(&p.target)
            ));
            let choices: Vec<String> = p.choices.iter().map(|t| format!("`{t}`")).collect();
            out.push_str(&format!("Allowed within the cap: {}\n", choices.join(", ")));
            for line in preflight_lines(p, Some(now)) {
                out.push_str(&line);
                out.push('\n');
            }
            if p.needs_acknowledgement() {
                out.push_str("A run would need an explicit *Approve with pending changes*.\n");
            }
        }
        Err(reason) => out.push_str(&format!(
            "*{}*: nothing to do: {}\n",
            group.id,
            escape(&reason.to_string())
        )),
    }
    out.push_str(&format!("Policy: {}\n", policy_line(&group.policy)));
    match last_success.and_then(|r| r.finished_at()) {
        Some(at) => {
            let until = at.plus(group.policy.cooldown);
            if until > now {
                out.push_str(&format!(
                    "Cooldown: last upsize {} ago; alarms and commands won't start runs for another {} (an approver can start one anyway).",
                    format_duration(now.since(at)),
                    format_duration(until.since(now))
                ));
            } else {
                out.push_str(&format!(
                    "Cooldown: over (last upsize {} ago).",
                    format_duration(now.since(at))
                ));
            }
        }
        None => out.push_str("Cooldown: no earlier upsize."),
    }
    text(out)
}

/// A run's audit trail: the newest entries that fit, oldest first, each on one line (time,
/// actor, what), in a few sections (Slack allows 3,000 characters in one).
fn audit(run: &Run, entries: &[crate::workflow::ports::AuditEntry]) -> Message {
    const MAX_LINES: usize = 120;
    const SECTION: usize = 2_800;
    let skipped = entries.len().saturating_sub(MAX_LINES);
    let lines: Vec<String> = entries[skipped..]
        .iter()
        .map(|a| {
            format!(
                "`{}` {} · *{}* · {}",
                a.at.clock_utc(),
                escape(&a.actor),
                escape(&a.kind.replace('_', " ")),
                escape(&truncate_line(&a.detail, 200))
            )
        })
        .collect();
    let head = format!(
        "*Audit trail of run `{}`* ({}, {}) — {} entr{}{}",
        run.id,
        run.group,
        describe_state(&run.state),
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        if skipped > 0 {
            format!("; the last {MAX_LINES} shown, times UTC")
        } else {
            ", times UTC".to_string()
        }
    );
    // Slack takes at most 50 blocks in a message.
    const MAX_SECTIONS: usize = 48;
    let mut sections = vec![head.clone()];
    let mut left_out = 0;
    for line in lines {
        let last = sections.last_mut().expect("one at least");
        if left_out > 0 {
            left_out += 1;
        } else if last.len() + line.len() < SECTION {
            last.push('\n');
            last.push_str(&line);
        } else if sections.len() < MAX_SECTIONS {
            sections.push(line);
        } else {
            left_out += 1;
        }
    }
    if left_out > 0 {
        sections.push(format!(
            "_…and {left_out} later entr{} that do not fit in one Slack message._",
            if left_out == 1 { "y" } else { "ies" }
        ));
    }
    Message {
        text: head,
        blocks: sections
            .iter()
            .map(|s| serde_json::json!({ "type": "section", "text": { "type": "mrkdwn", "text": s } }))
            .collect(),
    }
}

fn truncate_line(s: &str, max: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= max {
        one
    } else {
        format!("{}…", one.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NodeType;
    use crate::workflow::run::{Outcome, State};

    #[test]
    fn every_refusal_reads_as_a_sentence() {
        let t = NodeType::parse("cache.r6g.xlarge").unwrap();
        let finished = Box::new(State::Finished {
            plan: None,
            outcome: Outcome::Expired,
        });
        let all = [
            Rejection::NotAnApprover,
            Rejection::SelfApproval,
            Rejection::AlreadyApprovedByYou,
            Rejection::AlreadyDecided {
                state: finished.clone(),
            },
            Rejection::Expired,
            Rejection::CannotCancel {
                why: CannotCancel::UpsizeStarted { target: t.clone() },
            },
            Rejection::CannotCancel {
                why: CannotCancel::Over {
                    state: finished.clone(),
                },
            },
            Rejection::NotAllowedSize {
                node_type: t.clone(),
                choices: vec![t],
            },
            Rejection::NotWaitingForApproval {
                state: Box::new(State::Planning),
            },
        ];
        for r in &all {
            let text = rejection(r);
            assert!(text.ends_with('.'), "{r:?}: {text}");
            assert!(text.len() > 20, "{r:?}: {text}");
        }
        assert_eq!(
            rejection(&all[8]),
            "This run is not waiting for a decision (it is still planning)."
        );
    }
}
