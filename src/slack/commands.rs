//! Slash commands: parsing `/redis …` into a [`Command`], and the help text.
//!
//! Pure: a form body or a text in, a value out. What a command does lives in
//! [`crate::app`] (called from [`crate::http::slack`]).

use serde::Deserialize;

use crate::domain::{NodeType, ReplicationGroupId, RunId};

/// The form Slack posts for a slash command (only the fields we use).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SlashForm {
    pub command: String,
    #[serde(default)]
    pub text: String,
    pub user_id: String,
    pub channel_id: String,
    #[serde(default)]
    pub response_url: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
}

impl SlashForm {
    pub fn parse(body: &[u8]) -> Result<SlashForm, String> {
        serde_urlencoded::from_bytes(body).map_err(|e| format!("not a slash command form: {e}"))
    }
}

/// What a person asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `help`, an empty command, or one we don't know (`unknown` holds it).
    Help {
        unknown: Option<String>,
    },
    Status {
        group: ReplicationGroupId,
    },
    Upsize {
        group: ReplicationGroupId,
        node_type: Option<NodeType>,
        dry_run: bool,
    },
    Runs,
    /// `runs <run-id>`: one run's audit trail (approvers only).
    Audit {
        run: RunId,
    },
    Cancel {
        run: RunId,
    },
}

impl Command {
    /// Whether it does something beyond answering from what the bot knows: starts or cancels
    /// a run, or has AWS asked (`status` follows up with a live look). A copy of a signed
    /// request that acts is refused; one that only reads is answered again.
    pub fn acts(&self) -> bool {
        match self {
            Command::Help { .. } | Command::Runs | Command::Audit { .. } => false,
            Command::Status { .. } | Command::Upsize { .. } | Command::Cancel { .. } => true,
        }
    }
}

/// A command we recognise, used wrongly. The message says how to use it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parse the text after the command name.
pub fn parse(text: &str, command: &str) -> Result<Command, UsageError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some((verb, args)) = words.split_first() else {
        return Ok(Command::Help { unknown: None });
    };
    let usage = |what: &str| UsageError(format!("Usage: `{command} {what}`"));
    match verb.to_ascii_lowercase().as_str() {
        "help" | "-h" | "--help" => Ok(Command::Help { unknown: None }),
        "status" => match args {
            [group] => Ok(Command::Status {
                group: group_id(group)?,
            }),
            _ => Err(usage("status <group>")),
        },
        "upsize" => {
            let dry_run = args.contains(&"--dry-run");
            let rest: Vec<&str> = args.iter().copied().filter(|a| *a != "--dry-run").collect();
            if let Some(flag) = rest.iter().find(|a| a.starts_with('-')) {
                return Err(UsageError(format!(
                    "Unknown option `{flag}`. Usage: `{command} upsize <group> [node-type] [--dry-run]`"
                )));
            }
            match rest.as_slice() {
                [group] => Ok(Command::Upsize {
                    group: group_id(group)?,
                    node_type: None,
                    dry_run,
                }),
                [group, node_type] => Ok(Command::Upsize {
                    group: group_id(group)?,
                    node_type: Some(
                        NodeType::parse(node_type).map_err(|e| UsageError(e.to_string()))?,
                    ),
                    dry_run,
                }),
                _ => Err(usage("upsize <group> [node-type] [--dry-run]")),
            }
        }
        "runs" => match args {
            [] => Ok(Command::Runs),
            [run] => Ok(Command::Audit {
                run: RunId::parse(run).map_err(|e| UsageError(e.to_string()))?,
            }),
            _ => Err(usage("runs [run-id]")),
        },
        "cancel" => match args {
            [run] => Ok(Command::Cancel {
                run: RunId::parse(run).map_err(|e| UsageError(e.to_string()))?,
            }),
            _ => Err(usage("cancel <run-id>")),
        },
        other => Ok(Command::Help {
            unknown: Some(other.to_string()),
        }),
    }
}

fn group_id(s: &str) -> Result<ReplicationGroupId, UsageError> {
    ReplicationGroupId::parse(s).map_err(|e| UsageError(e.to_string()))
}

/// What each command does, with an example.
pub fn help_text(command: &str, unknown: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(u) = unknown {
        out.push_str(&format!(
            "I don't know `{}`. Here is what I can do:\n\n",
            crate::slack::blocks::escape(u)
        ));
    }
    out.push_str(&format!(
        "*redis-autoscaler* snapshots an ElastiCache Redis group and moves it to a bigger node type, with an approval first.\n\
         • `{command} status <group>` — node type, status and members, the active run and the last runs.  _e.g._ `{command} status prod-jobs`\n\
         • `{command} upsize <group> [node-type] [--dry-run]` — start a run that waits for approval (or just show the plan with `--dry-run`).  _e.g._ `{command} upsize prod-jobs cache.r6g.2xlarge`\n\
         • `{command} runs` — recent runs: state, trigger, who approved, how long. `{command} runs <run-id>`: that run's audit trail (approvers).\n\
         • `{command} cancel <run-id>` — cancel a run that has not started upsizing.  _e.g._ `{command} cancel r-k3m9x2qa`\n\
         • `{command} help` — this message."
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Command, UsageError> {
        parse(text, "/redis")
    }

    #[test]
    fn the_real_slash_command_form_parses() {
        let body = include_bytes!("../../tests/fixtures/slack_slash_command.txt");
        let form = SlashForm::parse(body).unwrap();
        assert_eq!(form.command, "/weather");
        assert_eq!(form.text, "94070");
        assert_eq!(form.user_id, "U2147483697");
        assert_eq!(form.channel_id, "C2147483705");
        assert_eq!(
            form.response_url.as_deref(),
            Some("https://hooks.slack.com/commands/1234/5678")
        );
        let signed = include_bytes!("../../tests/fixtures/slack_signing_docs_vector_body.txt");
        let form = SlashForm::parse(signed).unwrap();
        assert_eq!(form.command, "/webhook-collect");
        assert_eq!(form.text, "");
        assert!(
            form.response_url
                .unwrap()
                .starts_with("https://hooks.slack.com/commands/")
        );
    }

    #[test]
    fn a_form_without_the_required_fields_is_refused() {
        assert!(SlashForm::parse(b"text=status").is_err());
        assert!(SlashForm::parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn commands_parse() {
        let g = |s: &str| ReplicationGroupId::parse(s).unwrap();
        assert_eq!(p(""), Ok(Command::Help { unknown: None }));
        assert_eq!(p("  help "), Ok(Command::Help { unknown: None }));
        assert_eq!(
            p("status prod-jobs"),
            Ok(Command::Status {
                group: g("prod-jobs")
            })
        );
        assert_eq!(
            p("upsize prod-jobs"),
            Ok(Command::Upsize {
                group: g("prod-jobs"),
                node_type: None,
                dry_run: false
            })
        );
        assert_eq!(
            p("upsize prod-jobs cache.r6g.2xlarge --dry-run"),
            Ok(Command::Upsize {
                group: g("prod-jobs"),
                node_type: Some(NodeType::parse("cache.r6g.2xlarge").unwrap()),
                dry_run: true
            })
        );
        assert_eq!(
            p("UPSIZE --dry-run prod-jobs"),
            Ok(Command::Upsize {
                group: g("prod-jobs"),
                node_type: None,
                dry_run: true
            })
        );
        assert_eq!(p("runs"), Ok(Command::Runs));
        assert_eq!(
            p("runs r-abcdefgh"),
            Ok(Command::Audit {
                run: RunId::parse("r-abcdefgh").unwrap()
            })
        );
        assert!(p("runs not-a-run-id!").is_err());
        assert_eq!(
            p("cancel r-k3m9x2qa"),
            Ok(Command::Cancel {
                run: RunId::parse("r-k3m9x2qa").unwrap()
            })
        );
        assert_eq!(
            p("frobnicate prod-jobs"),
            Ok(Command::Help {
                unknown: Some("frobnicate".into())
            })
        );
    }

    #[test]
    fn misuse_says_how_to_use_it() {
        assert_eq!(p("status").unwrap_err().0, "Usage: `/redis status <group>`");
        assert!(p("status a b").is_err());
        assert!(p("upsize").unwrap_err().0.contains("upsize <group>"));
        assert!(
            p("upsize prod-jobs huge")
                .unwrap_err()
                .0
                .contains("not a node type")
        );
        assert!(
            p("upsize prod-jobs --force")
                .unwrap_err()
                .0
                .contains("Unknown option `--force`")
        );
        assert!(
            p("upsize Bad--Group")
                .unwrap_err()
                .0
                .contains("not a valid replication group id")
        );
        assert!(p("cancel").is_err());
        assert!(p("cancel 42").unwrap_err().0.contains("not a run id"));
        assert!(p("runs all").is_err());
    }

    #[test]
    fn help_names_every_command_with_the_configured_name() {
        let h = help_text("/cache", Some("frob"));
        for c in ["status", "upsize", "runs", "cancel", "help"] {
            assert!(h.contains(&format!("/cache {c}")), "{c}");
        }
        assert!(h.starts_with("I don't know `frob`"));
    }
}
