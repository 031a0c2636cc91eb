//! SNS HTTPS deliveries: parsing, signature verification, and the CloudWatch alarm inside.
//!
//! Every message is verified before anything else happens: the certificate comes only from an
//! `https://sns.<region>.amazonaws.com[.cn]/….pem` URL (fetched once and cached), and the
//! signature (SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA) must match AWS's
//! string-to-sign for the message type. No setting relaxes these checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm, alg_id,
};
use serde::Deserialize;
use serde_json::Value;

use super::{Alarm, AlarmError, AlarmState, parse_time, value_from_reason};
use crate::domain::Timestamp;
use crate::workflow::ports::BoxFuture;

/// An SNS message as delivered over HTTP(S).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL", alias = "SigningCertUrl")]
    pub signing_cert_url: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default, rename = "SubscribeURL", alias = "SubscribeUrl")]
    pub subscribe_url: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsError {
    #[error("not an SNS message: {0}")]
    Malformed(String),
    #[error("unsupported SignatureVersion `{0}`")]
    UnsupportedVersion(String),
    #[error("the signing certificate URL is not an https SNS URL: {0}")]
    BadCertUrl(String),
    #[error("the signing certificate could not be fetched: {0}")]
    CertUnavailable(String),
    #[error("the signing certificate is not a valid certificate: {0}")]
    BadCert(String),
    #[error("the signature does not verify")]
    BadSignature,
}

pub fn parse(body: &[u8]) -> Result<SnsMessage, SnsError> {
    serde_json::from_slice(body).map_err(|e| SnsError::Malformed(e.to_string()))
}

/// AWS's string to sign: chosen keys, each as `Key\nvalue\n`, in this order.
pub fn string_to_sign(m: &SnsMessage) -> Result<String, SnsError> {
    let mut fields: Vec<(&str, &str)> = vec![("Message", &m.message), ("MessageId", &m.message_id)];
    match m.kind.as_str() {
        "Notification" => {
            if let Some(subject) = &m.subject {
                fields.push(("Subject", subject));
            }
            fields.extend([
                ("Timestamp", m.timestamp.as_str()),
                ("TopicArn", &m.topic_arn),
                ("Type", &m.kind),
            ]);
        }
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
            let url = m
                .subscribe_url
                .as_deref()
                .ok_or_else(|| SnsError::Malformed("missing SubscribeURL".into()))?;
            let token = m
                .token
                .as_deref()
                .ok_or_else(|| SnsError::Malformed("missing Token".into()))?;
            fields.extend([
                ("SubscribeURL", url),
                ("Timestamp", m.timestamp.as_str()),
                ("Token", token),
                ("TopicArn", &m.topic_arn),
                ("Type", &m.kind),
            ]);
        }
        other => return Err(SnsError::Malformed(format!("unknown Type `{other}`"))),
    }
    let mut out = String::new();
    for (k, v) in fields {
        out.push_str(k);
        out.push('\n');
        out.push_str(v);
        out.push('\n');
    }
    Ok(out)
}

/// Is this an https URL on an SNS host (`sns.<region>.amazonaws.com` or `.amazonaws.com.cn`)?
pub fn check_sns_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("`{url}` is not https"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let region = host.strip_prefix("sns.").and_then(|h| {
        h.strip_suffix(".amazonaws.com")
            .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
    });
    let ok_region = region.is_some_and(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if ok_region {
        Ok(())
    } else {
        Err(format!("`{host}` is not an SNS host"))
    }
}

/// The certificate URL must also name a `.pem` file.
pub fn check_cert_url(url: &str) -> Result<(), SnsError> {
    check_sns_url(url).map_err(SnsError::BadCertUrl)?;
    let path = url.split(['?', '#']).next().unwrap_or_default();
    if path.ends_with(".pem") {
        Ok(())
    } else {
        Err(SnsError::BadCertUrl(format!("`{url}` is not a .pem file")))
    }
}

/// Verify the message's signature with a certificate (DER). Certificate dates are not
/// enforced: AWS rotates signing certificates, and the URL check is what binds it to SNS.
pub fn verify_with_cert(m: &SnsMessage, cert_der: &[u8]) -> Result<(), SnsError> {
    let alg: &dyn SignatureVerificationAlgorithm = match m.signature_version.as_str() {
        "1" => &RSA_PKCS1_SHA1,
        "2" => &RSA_PKCS1_SHA256,
        other => return Err(SnsError::UnsupportedVersion(other.to_string())),
    };
    let signature = base64::engine::general_purpose::STANDARD
        .decode(m.signature.trim())
        .map_err(|_| SnsError::BadSignature)?;
    let der = CertificateDer::from(cert_der);
    let cert =
        webpki::EndEntityCert::try_from(&der).map_err(|e| SnsError::BadCert(format!("{e:?}")))?;
    let message = string_to_sign(m)?;
    cert.verify_signature(alg, message.as_bytes(), &signature)
        .map_err(|_| SnsError::BadSignature)
}

/// RSA PKCS#1 v1.5 verification with ring, for the two hashes SNS uses.
#[derive(Debug)]
struct RsaPkcs1 {
    ring: &'static dyn ring::signature::VerificationAlgorithm,
}

static RSA_PKCS1_SHA1: RsaPkcs1 = RsaPkcs1 {
    ring: &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
};
static RSA_PKCS1_SHA256: RsaPkcs1 = RsaPkcs1 {
    ring: &ring::signature::RSA_PKCS1_2048_8192_SHA256,
};

impl SignatureVerificationAlgorithm for RsaPkcs1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        ring::signature::UnparsedPublicKey::new(self.ring, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_PKCS1_SHA256
    }
}

/// How the verifier reaches SNS: a GET of an https URL. Production uses the real HTTP client;
/// tests use a stand-in that records requests (nothing in tests reaches AWS).
pub trait SnsHttp: Send + Sync {
    fn get<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>>;
}

/// The real thing: reqwest, https only, no redirects (see [`crate::http_client::build`]).
pub struct ReqwestSnsHttp(pub reqwest::Client);

impl SnsHttp for ReqwestSnsHttp {
    fn get<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            if !url.starts_with("https://") {
                return Err("only https is allowed".into());
            }
            let resp = self
                .0
                .get(url)
                .send()
                .await
                .map_err(|e| crate::http_client::describe_error(&e))?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status().as_u16()));
            }
            resp.bytes()
                .await
                .map(|b| b.to_vec())
                .map_err(|e| e.to_string())
        })
    }
}

/// Verifies SNS messages, fetching and caching signing certificates.
pub struct SnsVerifier {
    http: Arc<dyn SnsHttp>,
    certs: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl SnsVerifier {
    pub fn new(http: Arc<dyn SnsHttp>) -> SnsVerifier {
        SnsVerifier {
            http,
            certs: Mutex::new(HashMap::new()),
        }
    }

    /// Put a certificate (PEM) in the cache for a URL, as if fetched (tests).
    pub fn seed_certificate(&self, url: &str, pem: &[u8]) -> Result<(), SnsError> {
        let der = pem_to_der(pem)?;
        self.lock().insert(url.to_string(), Arc::new(der));
        Ok(())
    }

    /// Check a message's certificate URL and signature.
    pub async fn verify(&self, m: &SnsMessage) -> Result<(), SnsError> {
        check_cert_url(&m.signing_cert_url)?;
        let cached = self.lock().get(&m.signing_cert_url).cloned();
        let der = match cached {
            Some(der) => der,
            None => {
                let pem = self
                    .http
                    .get(&m.signing_cert_url)
                    .await
                    .map_err(SnsError::CertUnavailable)?;
                let der = Arc::new(pem_to_der(&pem)?);
                self.lock().insert(m.signing_cert_url.clone(), der.clone());
                der
            }
        };
        verify_with_cert(m, &der)
    }

    /// Confirm a subscription: GET its SubscribeURL (which must be an SNS URL).
    pub async fn confirm(&self, m: &SnsMessage) -> Result<(), String> {
        let url = m.subscribe_url.as_deref().ok_or("no SubscribeURL")?;
        check_sns_url(url)?;
        self.http.get(url).await.map(drop)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<u8>>>> {
        self.certs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>, SnsError> {
    CertificateDer::from_pem_slice(pem)
        .map(|c| c.as_ref().to_vec())
        .map_err(|e| SnsError::BadCert(e.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CloudWatchMessage {
    alarm_name: String,
    #[serde(default)]
    alarm_description: Option<String>,
    new_state_value: String,
    #[serde(default)]
    new_state_reason: String,
    #[serde(default)]
    state_change_time: Option<String>,
    #[serde(default, rename = "AWSAccountId")]
    account: Option<String>,
    /// `arn:aws:cloudwatch:REGION:ACCOUNT:alarm:NAME`: the region as a code (the message's
    /// `Region` is a display name such as "US East (N. Virginia)").
    #[serde(default)]
    alarm_arn: Option<String>,
    #[serde(default)]
    trigger: Option<Value>,
}

/// Part `n` of an ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:…`), when it has one.
fn arn_part(arn: Option<&str>, n: usize) -> Option<String> {
    let arn = arn?;
    let part = arn.strip_prefix("arn:")?.split(':').nth(n - 1)?;
    let ok = !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then(|| part.to_string())
}

/// The CloudWatch alarm a Notification carries, or `None` if it carries something else.
pub fn cloudwatch_alarm(m: &SnsMessage) -> Result<Option<Alarm>, AlarmError> {
    let Ok(raw) = serde_json::from_str::<Value>(&m.message) else {
        return Ok(None);
    };
    if raw.get("AlarmName").is_none() || raw.get("NewStateValue").is_none() {
        return Ok(None);
    }
    let cw: CloudWatchMessage = serde_json::from_value(raw)
        .map_err(|e| AlarmError(format!("not a CloudWatch alarm: {e}")))?;
    let state = AlarmState::parse(&cw.new_state_value)
        .ok_or_else(|| AlarmError(format!("unknown alarm state `{}`", cw.new_state_value)))?;
    // In SNS, dimensions are a list of {name, value}.
    let dimensions = cw
        .trigger
        .as_ref()
        .and_then(|t| t["Dimensions"].as_array())
        .map(|ds| {
            ds.iter()
                .filter_map(|d| {
                    Some((
                        d["name"].as_str()?.to_string(),
                        d["value"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(Alarm {
        delivery_id: format!("sns:{}", m.message_id),
        value: value_from_reason(&cw.new_state_reason, None),
        name: cw.alarm_name,
        description: cw.alarm_description.unwrap_or_default(),
        state,
        reason: cw.new_state_reason,
        dimensions,
        region: arn_part(cw.alarm_arn.as_deref(), 3),
        account: cw.account.or_else(|| arn_part(cw.alarm_arn.as_deref(), 4)),
        at: cw
            .state_change_time
            .as_deref()
            .and_then(parse_time)
            .unwrap_or_else(Timestamp::now),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &str =
        include_str!("../../tests/fixtures/sns_signed_notification_v1_with_subject.json");
    const CERT: &[u8] =
        include_bytes!("../../tests/fixtures/sns_signing_cert_aws_php_validator_fixture.pem");

    fn signed() -> SnsMessage {
        parse(SIGNED.as_bytes()).unwrap()
    }

    fn der() -> Vec<u8> {
        pem_to_der(CERT).unwrap()
    }

    #[test]
    fn the_real_signed_message_verifies_with_its_real_certificate() {
        assert_eq!(verify_with_cert(&signed(), &der()), Ok(()));
    }

    #[test]
    fn tampering_with_any_signed_field_breaks_the_signature() {
        for field in ["message", "message_id", "subject", "timestamp", "topic_arn"] {
            let mut m = signed();
            match field {
                "message" => m.message.push('!'),
                "message_id" => m.message_id.push('0'),
                "subject" => m.subject = Some("Goodbye".into()),
                "timestamp" => m.timestamp = "2022-07-28T22:53:50.654Z".into(),
                _ => m.topic_arn.push('x'),
            }
            assert_eq!(
                verify_with_cert(&m, &der()),
                Err(SnsError::BadSignature),
                "{field}"
            );
        }
        let mut m = signed();
        m.signature = "AAAA".into();
        assert_eq!(verify_with_cert(&m, &der()), Err(SnsError::BadSignature));
        m.signature = "not base64 !!".into();
        assert_eq!(verify_with_cert(&m, &der()), Err(SnsError::BadSignature));
        let mut m = signed();
        m.signature_version = "3".into();
        assert_eq!(
            verify_with_cert(&m, &der()),
            Err(SnsError::UnsupportedVersion("3".into()))
        );
    }

    #[test]
    fn string_to_sign_matches_the_aws_docs() {
        let docs = include_str!("../../tests/fixtures/sns_string_to_sign_notification_docs.txt");
        let m = SnsMessage {
            kind: "Notification".into(),
            message_id: "4d4dc071-ddbf-465d-bba8-08f81c89da64".into(),
            topic_arn: "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P".into(),
            message: "My Test Message".into(),
            timestamp: "2019-01-31T04:37:04.321Z".into(),
            signature_version: "1".into(),
            signature: String::new(),
            signing_cert_url: String::new(),
            subject: Some("My subject".into()),
            subscribe_url: None,
            token: None,
        };
        assert_eq!(string_to_sign(&m).unwrap().trim_end(), docs.trim_end());
        let docs = include_str!(
            "../../tests/fixtures/sns_string_to_sign_subscription_confirmation_docs.txt"
        );
        let confirm = SnsMessage {
            kind: "SubscriptionConfirmation".into(),
            message_id: "3d891288-136d-417f-bc05-901c108273ee".into(),
            topic_arn: "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P".into(),
            message: "My Test Message".into(),
            timestamp: "2019-01-31T19:25:13.719Z".into(),
            subscribe_url: Some("https://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P&Token=233...".into()),
            token: Some("233...".into()),
            subject: None,
            ..m
        };
        assert_eq!(
            string_to_sign(&confirm).unwrap().trim_end(),
            docs.trim_end()
        );
    }

    #[test]
    fn certificate_urls_must_be_https_sns_pem_files() {
        assert!(
            check_cert_url(
                "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-7ff5.pem"
            )
            .is_ok()
        );
        assert!(
            check_cert_url(
                "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem"
            )
            .is_ok()
        );
        for bad in [
            "http://sns.us-east-2.amazonaws.com/x.pem",
            "https://sns.us-east-2.amazonaws.com.evil.com/x.pem",
            "https://evil.com/sns.us-east-2.amazonaws.com/x.pem",
            "https://sns.us-east-2.amazonaws.com@evil.com/x.pem",
            "https://s3.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://sns.us-east-2.amazonaws.com/x.txt",
            "https://sns.us-east-2.amazonaws.com:8443/x.pem",
        ] {
            assert!(check_cert_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_cloudwatch_alarm_inside_a_notification_is_read() {
        let m = parse(include_bytes!(
            "../../tests/fixtures/sns_notification_cloudwatch.json"
        ))
        .unwrap();
        let a = cloudwatch_alarm(&m).unwrap().unwrap();
        assert_eq!(a.name, "EXAMPLE");
        assert_eq!(a.state, AlarmState::Alarm);
        assert_eq!(
            a.dimensions,
            vec![("InstanceId".to_string(), "TestInstance".to_string())]
        );
        assert_eq!(a.value, Some(1234.0));
        assert_eq!(a.delivery_id, "sns:95df01b4-ee98-5cb9-9903-4c221d41eb5e");
        assert_eq!(a.account.as_deref(), Some("123456789012"));
        // The sample's AlarmArn holds placeholders, and `Region` is a display name: no region.
        assert_eq!(a.region, None);
        assert_eq!(
            cloudwatch_alarm(&signed()).unwrap(),
            None,
            "Hello world is not an alarm"
        );
    }

    #[test]
    fn the_region_and_account_come_from_the_alarm_arn() {
        let arn = Some("arn:aws:cloudwatch:eu-west-1:210987654321:alarm:Redis memory: x");
        assert_eq!(arn_part(arn, 3).as_deref(), Some("eu-west-1"));
        assert_eq!(arn_part(arn, 4).as_deref(), Some("210987654321"));
        assert_eq!(
            arn_part(Some("arn:aws:cloudwatch:REGION:ACCOUNT:alarm:x"), 3),
            None
        );
        assert_eq!(arn_part(Some("not an arn"), 3), None);
        assert_eq!(arn_part(None, 3), None);
    }

    #[test]
    fn unsigned_or_malformed_messages_do_not_parse() {
        assert!(parse(b"{}").is_err());
        let mut v: Value = serde_json::from_str(SIGNED).unwrap();
        v.as_object_mut().unwrap().remove("Signature");
        assert!(parse(v.to_string().as_bytes()).is_err());
    }
}
