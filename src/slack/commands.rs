//! Slash commands: parsing `/redis …` into a [`Command`], and the help text.
//!
//! Pure: a form body or a text in, a value out. What a command does lives in
//! [`crate::app`] (called from [`crate::http::slack`]).

use std::borrow::Cow;

use serde::Deserialize;

use crate::domain::{NodeType, ReplicationGroupId, RunId};

/// The form Slack posts for a slash command (only the fields we use). Its text borrows from
/// the body it was read from where nothing had to be decoded; Socket Mode's, read from JSON,
/// owns its text (`SlashForm<'static>`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SlashForm<'a> {
    pub command: Cow<'a, str>,
    #[serde(default)]
    pub text: Cow<'a, str>,
    pub user_id: Cow<'a, str>,
    pub channel_id: Cow<'a, str>,
    #[serde(default)]
    pub response_url: Option<Cow<'a, str>>,
    #[serde(default)]
    pub team_id: Option<Cow<'a, str>>,
}

impl<'a> SlashForm<'a> {
    /// Read a form body (`application/x-www-form-urlencoded`). Only the fields above are
    /// decoded, each at most once (a repeated one is refused, as a missing required one is);
    /// the other dozen Slack sends are skipped without a copy.
    ///
    /// Read by hand rather than through `form_urlencoded`, with the same meaning (the
    /// WHATWG form parser's: `+` is a space, `%XX` a byte, anything else as it is, the result
    /// read as UTF-8 with replacement characters): a signed `/redis help` spent more on its
    /// form (11k instructions, callgrind) than the bare route spends on its whole request,
    /// most of it decoding every key and value through iterators, `%`-free or not.
    pub fn parse(body: &'a [u8]) -> Result<SlashForm<'a>, String> {
        let refuse = |why: String| format!("not a slash command form: {why}");
        let mut fields: [Option<Cow<'a, str>>; FIELDS.len()] = Default::default();
        for pair in pairs(body) {
            let (raw_key, raw_value) = split_pair(pair);
            // A key as Slack writes it needs no decoding: one that isn't ours is skipped as is,
            // and only our fields' values are decoded.
            let i = match FIELDS.iter().position(|f| f.as_bytes() == raw_key) {
                Some(i) => i,
                None if needs_decoding(raw_key) => {
                    let key = form_decode(raw_key);
                    match FIELDS.iter().position(|f| *f == key) {
                        Some(i) => i,
                        None => continue,
                    }
                }
                None => continue,
            };
            if fields[i].replace(form_decode(raw_value)).is_some() {
                return Err(refuse(format!("duplicate field `{}`", FIELDS[i])));
            }
        }
        let [command, text, user_id, channel_id, response_url, team_id] = fields;
        let required = |field: Option<Cow<'a, str>>, name: &str| {
            field.ok_or_else(|| refuse(format!("missing field `{name}`")))
        };
        Ok(SlashForm {
            command: required(command, "command")?,
            text: text.unwrap_or_default(),
            user_id: required(user_id, "user_id")?,
            channel_id: required(channel_id, "channel_id")?,
            response_url,
            team_id,
        })
    }
}

/// A pair's key and value: before and after its first `=` (all key and an empty value
/// without one).
fn split_pair(pair: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b'=', pair) {
        Some(at) => (&pair[..at], &pair[at + 1..]),
        None => (pair, &[]),
    }
}

/// The `&`-separated pairs of a form body, empty ones left out.
fn pairs(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(body);
    std::iter::from_fn(move || {
        loop {
            let now = rest?;
            let pair = match memchr::memchr(b'&', now) {
                Some(at) => {
                    rest = Some(&now[at + 1..]);
                    &now[..at]
                }
                None => {
                    rest = None;
                    now
                }
            };
            if !pair.is_empty() {
                return Some(pair);
            }
        }
    })
}

/// One key or value of a form, decoded: borrowed when it has no `+` or `%` and is UTF-8.
pub(crate) fn form_decode(raw: &[u8]) -> Cow<'_, str> {
    if !needs_decoding(raw) {
        return match std::str::from_utf8(raw) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(raw),
        };
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        match b {
            b'+' => bytes.push(b' '),
            // `%` and two hex digits is a byte; a `%` without them stays as it is.
            b'%' => match raw
                .get(i..i + 2)
                .and_then(|h| Some((hex_value(h[0])?, hex_value(h[1])?)))
            {
                Some((hi, lo)) => {
                    bytes.push(hi << 4 | lo);
                    i += 2;
                }
                None => bytes.push(b'%'),
            },
            b => bytes.push(b),
        }
    }
    match String::from_utf8(bytes) {
        Ok(text) => Cow::Owned(text),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// Whether a key or value has a `+` or `%` to decode. A plain loop: they are a few bytes
/// long, shorter than a SIMD search needs to pay for itself.
fn needs_decoding(raw: &[u8]) -> bool {
    raw.iter().any(|b| matches!(b, b'+' | b'%'))
}

/// The value of one hex digit, either case.
pub(crate) const fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The fields [`SlashForm::parse`] reads, in the order of its array.
const FIELDS: [&str; 6] = [
    "command",
    "text",
    "user_id",
    "channel_id",
    "response_url",
    "team_id",
];

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

/// [`help_text`] with nothing unknown: the same text for the same command name, so it is
/// written once and copied after that (`help` is what is asked most).
pub fn help(command: &str) -> String {
    static HELP: std::sync::RwLock<Option<(String, String)>> = std::sync::RwLock::new(None);
    if let Some((name, text)) = &*HELP.read().unwrap_or_else(|e| e.into_inner())
        && name == command
    {
        return text.clone();
    }
    let text = help_text(command, None);
    *HELP.write().unwrap_or_else(|e| e.into_inner()) = Some((command.to_owned(), text.clone()));
    text
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
    fn the_form_reader_agrees_with_serde_urlencoded() {
        let bodies: &[&[u8]] = &[
            include_bytes!("../../tests/fixtures/slack_slash_command.txt"),
            include_bytes!("../../tests/fixtures/slack_signing_docs_vector_body.txt"),
            b"command=%2Fredis&text=upsize+prod-jobs+cache.r6g.xlarge&user_id=U1&channel_id=C1",
            b"c%6Fmmand=/r&user_id=U&channel_id=C&text",
            b"&&command=/r&&user_id=U&channel_id=C&token=%ZZ&team_id=",
            b"command=/r&user_id=U&channel_id=C&text=a&text=b",
            b"command=/r&user_id=U&channel%5Fid=C&channel_id=D",
            b"command=/r&user_id=U\xff&channel_id=C&response_url=https%3A%2F%2Fx",
            b"user_id=U&channel_id=C",
            b"command=/r&user_id=U",
            b"",
        ];
        for body in bodies {
            check_against_serde_urlencoded(body);
        }
    }

    fn check_against_serde_urlencoded(body: &[u8]) {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Reference {
            command: String,
            #[serde(default)]
            text: String,
            user_id: String,
            channel_id: String,
            #[serde(default)]
            response_url: Option<String>,
            #[serde(default)]
            team_id: Option<String>,
        }
        let ours = SlashForm::parse(body).ok().map(|f| Reference {
            command: f.command.into_owned(),
            text: f.text.into_owned(),
            user_id: f.user_id.into_owned(),
            channel_id: f.channel_id.into_owned(),
            response_url: f.response_url.map(Cow::into_owned),
            team_id: f.team_id.map(Cow::into_owned),
        });
        let theirs = serde_urlencoded::from_bytes::<Reference>(body).ok();
        assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(body));
    }

    /// The bytes a form decoder must get right: the separators, `+`, `%` with and without
    /// hex digits after it, and bytes that are not UTF-8 alone (0xff, half of `é`).
    const FORM_BYTES: &[u8] = b"&=+%%2F4aFgZz /\xff\xc3\xa9";

    fn form_bytes(
        len: std::ops::Range<usize>,
    ) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(FORM_BYTES.to_vec()), len)
    }

    proptest::proptest! {
        /// Every pair of any body is split and decoded as serde_urlencoded (form_urlencoded,
        /// the WHATWG parser) does it.
        #[test]
        fn each_pair_is_read_as_serde_urlencoded_reads_it(body in form_bytes(0..40)) {
            let ours: Vec<(String, String)> = pairs(&body)
                .map(|pair| {
                    let (k, v) = split_pair(pair);
                    (form_decode(k).into_owned(), form_decode(v).into_owned())
                })
                .collect();
            let theirs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap();
            proptest::prop_assert_eq!(ours, theirs);
        }

        /// Forms with the fields in any order, any values, some repeated or spelt encoded,
        /// among pairs that aren't ours, read as serde_urlencoded reads them.
        #[test]
        fn the_form_reader_agrees_with_serde_urlencoded_on_any_body(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "command", "text", "user_id", "channel_id", "response_url",
                        "team_id", "c%6Fmmand", "user%5Fid", "token", "",
                    ]),
                    form_bytes(0..8),
                ),
                0..9,
            )
        ) {
            let mut body = b"command=%2Fr&user_id=U1&channel_id=C1".to_vec();
            // Often without its required fields, or with them twice.
            for (i, (name, value)) in fields.iter().enumerate() {
                if i == 0 && value.len() % 3 == 0 {
                    body.clear();
                }
                body.push(b'&');
                body.extend_from_slice(name.as_bytes());
                body.push(b'=');
                body.extend_from_slice(value);
            }
            check_against_serde_urlencoded(&body);
        }
    }

    #[test]
    fn a_form_field_that_needs_no_decoding_is_not_copied() {
        let form =
            SlashForm::parse(b"command=%2Fredis&text=help&user_id=U1&channel_id=C1").unwrap();
        assert!(matches!(form.text, Cow::Borrowed("help")));
        assert!(matches!(form.user_id, Cow::Borrowed("U1")));
        assert!(matches!(form.command, Cow::Owned(_)));
        assert_eq!(form.command, "/redis");
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
