//! Verifying that a request comes from Slack: `X-Slack-Signature` is `v0=` + hex
//! HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}` keyed with the signing secret,
//! and the timestamp is within five minutes of now (so a captured request can't be replayed).
//!
//! Pure: the secret, headers, body and the current time are arguments. The comparison is
//! constant-time (`Mac::verify_slice`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::domain::Secret;

pub const SIGNATURE_HEADER: &str = "x-slack-signature";
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";

/// How far a request's timestamp may be from now, either way.
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// Why a request was refused. The details go to the log, never to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("the timestamp header is not a number")]
    BadTimestamp,
    #[error("the timestamp is {0} s away from now (at most {MAX_SKEW_SECS} s allowed)")]
    Stale(i64),
    #[error("the signature is not `v0=` followed by 64 hex digits")]
    Malformed,
    #[error("the signature does not match")]
    Mismatch,
}

/// Check a request's signature headers against its raw body.
pub fn verify(
    secret: &Secret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    SigningKey::new(secret).verify(timestamp, signature, body, now_secs)
}

/// The signing secret made into an HMAC key once, so that each request's check starts from a
/// copy of it rather than hashing the key again. Its `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct SigningKey(Hmac<Sha256>);

impl SigningKey {
    pub fn new(secret: &Secret) -> SigningKey {
        SigningKey(
            Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                .expect("HMAC takes keys of any length"),
        )
    }

    /// [`verify`] with this key.
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), SignatureError> {
        let timestamp = timestamp.ok_or(SignatureError::MissingHeader(TIMESTAMP_HEADER))?;
        let signature = signature.ok_or(SignatureError::MissingHeader(SIGNATURE_HEADER))?;
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        // `abs_diff`, not `(now - ts).abs()`: that overflows for a timestamp as far from the
        // clock as an i64 allows (a panic in debug builds, and "fresh" after wrapping in
        // release ones).
        if now_secs.abs_diff(ts) > MAX_SKEW_SECS.unsigned_abs() {
            return Err(SignatureError::Stale(now_secs.saturating_sub(ts)));
        }
        let hex_sig = signature
            .trim()
            .strip_prefix("v0=")
            .ok_or(SignatureError::Malformed)?;
        // Decoded onto the stack: exactly 32 bytes or it is malformed.
        let expected = hex_32(hex_sig).ok_or(SignatureError::Malformed)?;
        self.mac(timestamp.trim(), body)
            .verify_slice(&expected)
            .map_err(|_| SignatureError::Mismatch)
    }

    fn mac(&self, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(b"v0:");
        mac.update(timestamp.as_bytes());
        mac.update(b":");
        mac.update(body);
        mac
    }
}

/// 64 hex digits (either case) as 32 bytes; `None` for anything else. By table rather than
/// with `hex::decode_to_slice`, which was 2 % of a signed ack's CPU under load (perf).
fn hex_32(digits: &str) -> Option<[u8; 32]> {
    let digits = digits.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut invalid = 0;
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = (NIBBLES[usize::from(pair[0])], NIBBLES[usize::from(pair[1])]);
        invalid |= hi | lo;
        *byte = (hi << 4) | (lo & 0x0f);
    }
    (invalid & NOT_HEX == 0).then_some(out)
}

/// Marks a byte that is not a hex digit in [`NIBBLES`].
const NOT_HEX: u8 = 0x80;

/// Each byte's value as a hex digit, or [`NOT_HEX`].
const NIBBLES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut b = 0;
    while b < 256 {
        if let Some(v) = crate::slack::commands::hex_value(b as u8) {
            table[b] = v;
        }
        b += 1;
    }
    table
};

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// The signature Slack would send for this body at this timestamp (tests and the demo sign
/// their requests with it).
pub fn sign(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex::encode(
            SigningKey::new(secret)
                .mac(timestamp, body)
                .finalize()
                .into_bytes()
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The table decoder agrees with the hex crate on strings of hex digits and not.
        #[test]
        fn hex_digits_decode_as_the_hex_crate_decodes_them(
            digits in "[0-9a-fA-Fg/:@`G ]{62,66}|[0-9a-fA-F]{64}"
        ) {
            let mut theirs = [0u8; 32];
            let theirs = hex::decode_to_slice(&digits, &mut theirs).ok().map(|()| theirs);
            proptest::prop_assert_eq!(hex_32(&digits), theirs);
        }
    }

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const BODY: &[u8] = include_bytes!("../../tests/fixtures/slack_signing_docs_vector_body.txt");

    fn check(
        secret: &str,
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        verify(&Secret::new(secret), ts, sig, body, now)
    }

    #[test]
    fn the_official_slack_vector_verifies_at_its_own_time() {
        assert_eq!(
            check(SECRET, Some(TS), Some(SIG), BODY, 1_531_420_618),
            Ok(())
        );
        assert_eq!(
            check(SECRET, Some(TS), Some(SIG), BODY, 1_531_420_618 + 299),
            Ok(())
        );
        assert_eq!(sign(&Secret::new(SECRET), TS, BODY), SIG);
    }

    #[test]
    fn a_tampered_body_does_not_verify() {
        let mut body = BODY.to_vec();
        body[10] ^= 1;
        assert_eq!(
            check(SECRET, Some(TS), Some(SIG), &body, 1_531_420_618),
            Err(SignatureError::Mismatch)
        );
        let mut longer = BODY.to_vec();
        longer.push(b'\n');
        assert_eq!(
            check(SECRET, Some(TS), Some(SIG), &longer, 1_531_420_618),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_wrong_secret_does_not_verify() {
        assert_eq!(
            check("another-secret", Some(TS), Some(SIG), BODY, 1_531_420_618),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        assert_eq!(
            check(SECRET, Some(TS), Some(SIG), BODY, 1_531_420_618 + 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            check(SECRET, Some(TS), Some(SIG), BODY, 1_531_420_618 - 301),
            Err(SignatureError::Stale(-301))
        );
        // Today is far from 2018: the real vector is stale now.
        assert!(matches!(
            check(SECRET, Some(TS), Some(SIG), BODY, 1_764_121_929),
            Err(SignatureError::Stale(_))
        ));
    }

    #[test]
    fn timestamps_as_far_from_the_clock_as_can_be_are_stale_not_a_panic() {
        // Found by the fuzz target (tests/fuzz/corpus/signature/clock_extremes.txt).
        assert_eq!(
            check(SECRET, Some(TS), Some(SIG), BODY, i64::MIN),
            Err(SignatureError::Stale(i64::MIN))
        );
        assert_eq!(
            check(
                SECRET,
                Some("-9223372036854775808"),
                Some(SIG),
                BODY,
                i64::MAX
            ),
            Err(SignatureError::Stale(i64::MAX))
        );
        assert_eq!(
            check(SECRET, Some("9223372036854775807"), Some(SIG), BODY, -1),
            Err(SignatureError::Stale(i64::MIN))
        );
    }

    #[test]
    fn missing_or_malformed_headers_are_refused() {
        assert_eq!(
            check(SECRET, None, Some(SIG), BODY, 1_531_420_618),
            Err(SignatureError::MissingHeader(TIMESTAMP_HEADER))
        );
        assert_eq!(
            check(SECRET, Some(TS), None, BODY, 1_531_420_618),
            Err(SignatureError::MissingHeader(SIGNATURE_HEADER))
        );
        assert_eq!(
            check(SECRET, Some("soon"), Some(SIG), BODY, 1_531_420_618),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            check(SECRET, Some(TS), Some("v1=abc"), BODY, 1_531_420_618),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(SECRET, Some(TS), Some("v0=zz"), BODY, 1_531_420_618),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(SECRET, Some(TS), Some(&SIG[..40]), BODY, 1_531_420_618),
            Err(SignatureError::Malformed)
        );
    }
}
