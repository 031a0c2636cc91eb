//! The fuzz targets' bodies: one function per parser that an untrusted sender can reach, each
//! taking raw bytes the way the transport receives them.
//!
//! Called from two places so they can't drift: the cargo-fuzz targets in `tests/fuzz/`
//! (nightly, libFuzzer) and `tests/it/fuzz_corpus.rs`, which replays every file of the seed
//! corpus (`tests/fuzz/corpus/<target>/`) on the stable toolchain as part of `cargo test`.
//! A function may return early on an error: what it must never do is panic. Where a cheap
//! property holds for every input (a fresh signature verifies; a valid config's redacted
//! rendering parses back to it) it is asserted too.
//!
//! Not for use by the app itself: nothing here is on a request's path.

use crate::alarm::{eventbridge, sns};
use crate::config::{Config, Env, Policy};
use crate::domain::Secret;
use crate::slack::{blocks, commands, interactions, signature};

/// The command name the text is also parsed with (as configured by default).
const COMMAND: &str = "/redis";

/// `POST /slack/commands`: the form body, then the text after the command name. The input is
/// also tried as the text alone, so the fuzzer needn't find the form encoding first.
pub fn slash_command(data: &[u8]) {
    if let Ok(form) = commands::SlashForm::parse(data) {
        command_text(&form.text, &form.command);
        command_text(&form.text, COMMAND);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        command_text(text, COMMAND);
    }
}

fn command_text(text: &str, command: &str) {
    match commands::parse(text, command) {
        Ok(commands::Command::Help { unknown }) => {
            commands::help_text(command, unknown.as_deref());
        }
        Ok(_) => {}
        Err(usage) => assert!(!usage.0.is_empty()),
    }
}

/// `POST /slack/interactions`: the form body `payload=<JSON>`; the input is also tried as the
/// JSON alone.
pub fn interaction(data: &[u8]) {
    let _ = interactions::parse(data);
    if let Ok(json) = std::str::from_utf8(data) {
        let _ = interactions::parse_json(json);
    }
}

/// `POST /alarms/eventbridge`: the event, and what the alarm shows of itself.
pub fn eventbridge(data: &[u8]) {
    if let Ok(alarm) = eventbridge::parse(data) {
        alarm.at.to_rfc3339();
        blocks::escape(&alarm.reason);
    }
}

/// `POST /alarms/sns`: the envelope, its string to sign, its URLs and signature (against a
/// fixed certificate), and the CloudWatch alarm inside. The input is also tried as the inner
/// `Message` of an otherwise valid Notification, so the fuzzer needn't find JSON in a JSON
/// string first.
pub fn sns(data: &[u8]) {
    if let Ok(m) = sns::parse(data) {
        sns_message(&m);
    }
    if let Ok(inner) = std::str::from_utf8(data) {
        let m = sns::SnsMessage {
            kind: "Notification".into(),
            message_id: "fuzz".into(),
            topic_arn: "arn:aws:sns:us-east-1:123456789012:redis-alarms".into(),
            message: inner.into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            signature_version: "1".into(),
            signature: String::new(),
            signing_cert_url: "https://sns.us-east-1.amazonaws.com/fuzz.pem".into(),
            subject: None,
            subscribe_url: None,
            token: None,
        };
        sns_message(&m);
    }
}

fn sns_message(m: &sns::SnsMessage) {
    let _ = sns::string_to_sign(m);
    let _ = sns::check_cert_url(&m.signing_cert_url);
    if let Some(url) = &m.subscribe_url {
        let _ = sns::check_sns_url(url);
    }
    let _ = sns::verify_with_cert(m, &sns_cert());
    if let Ok(Some(alarm)) = sns::cloudwatch_alarm(m) {
        alarm.at.to_rfc3339();
        blocks::escape(&alarm.reason);
    }
}

/// The certificate the SNS target verifies against (the real one from AWS's PHP validator's
/// fixtures), as DER.
fn sns_cert() -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    static CERT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        let pem =
            include_bytes!("../tests/fixtures/sns_signing_cert_aws_php_validator_fixture.pem");
        CertificateDer::from_pem_slice(pem)
            .expect("the fixture is a PEM certificate")
            .as_ref()
            .to_vec()
    })
    .clone()
}

/// The Slack signature check, with everything an attacker controls and the clock. The input
/// is lines: the current time in seconds, the `X-Slack-Request-Timestamp` header, the
/// `X-Slack-Signature` header, then the raw body (the rest, newlines and all). A header line
/// `<none>` stands for a missing header; an unreadable time is the Slack docs vector's.
///
/// Besides never panicking: whenever the timestamp is fresh, the signature [`signature::sign`]
/// makes for it verifies, and the same signature over another body does not.
pub fn signature(data: &[u8]) {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let now = parts
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse::<i64>().ok())
        .unwrap_or(1_531_420_618);
    let header = |line: Option<&[u8]>| {
        line.map(String::from_utf8_lossy)
            .filter(|l| l != "<none>")
            .map(|l| l.into_owned())
    };
    let timestamp = header(parts.next());
    let given = header(parts.next());
    let body = parts.next().unwrap_or_default();
    let secret = Secret::new("8f742231b10e8888abcd99yyyzzz85a5");
    let checked = signature::verify(&secret, timestamp.as_deref(), given.as_deref(), body, now);
    let Some(ts) = timestamp.as_deref().map(str::trim) else {
        assert!(checked.is_err());
        return;
    };
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| now.abs_diff(t) <= signature::MAX_SKEW_SECS as u64);
    let good = signature::sign(&secret, ts, body);
    let ours = signature::verify(&secret, Some(ts), Some(&good), body, now);
    assert_eq!(ours.is_ok(), fresh, "{ours:?} for a fresh signature");
    if fresh {
        let mut other = body.to_vec();
        other.push(b'!');
        assert_eq!(
            signature::verify(&secret, Some(ts), Some(&good), &other, now),
            Err(signature::SignatureError::Mismatch)
        );
    }
}

/// The config loader, with an empty environment. A config it accepts must render (redacted),
/// and that rendering must parse back to the same config — but for the hook URLs, whose
/// credentials and query the rendering hides on purpose.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = Env::default();
    let config = match Config::parse(text, &env) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.issues.is_empty(), "an error without issues");
            e.to_string();
            return;
        }
    };
    config.warnings();
    config.missing_secrets();
    let rendered = config.render_redacted();
    let again = Config::parse(&rendered, &env)
        .unwrap_or_else(|e| panic!("the redacted rendering does not parse: {e}\n{rendered}"));
    assert_eq!(again.listen, config.listen);
    assert_eq!(again.database, config.database);
    assert_eq!(again.account_id, config.account_id);
    assert_eq!(again.slack, config.slack);
    assert_eq!(again.alarms, config.alarms);
    assert_eq!(again.delivery, config.delivery);
    assert_eq!(hidden(&again.defaults), hidden(&config.defaults));
    let groups = |c: &Config| -> Vec<_> {
        c.groups
            .values()
            .map(|g| (g.id.clone(), g.channel.clone(), hidden(&g.policy)))
            .collect()
    };
    assert_eq!(groups(&again), groups(&config));
}

/// A policy as the redacted rendering shows it: whether there are hooks, not where.
fn hidden(p: &Policy) -> Policy {
    let shown = |url: &Option<String>| url.as_ref().map(|_| String::from("(set)"));
    Policy {
        pause_url: shown(&p.pause_url),
        resume_url: shown(&p.resume_url),
        ..p.clone()
    }
}
