//! The ElastiCache Query protocol on the wire: form-encoded requests in, XML answers out.
//!
//! Owns parsing a request body into an action and its parameters, the XML writer (with text
//! escaping), the success envelope `<{Action}Response><{Action}Result>…` and the error envelope
//! `<ErrorResponse><Error>…</Error>…`, and the HTTP status AWS uses for each error code. It knows
//! nothing about groups or snapshots and does no I/O.

use std::collections::BTreeMap;
use std::fmt::{self, Display};

/// The namespace every ElastiCache (API version 2015-02-02) answer carries.
pub const XMLNS: &str = "http://elasticache.amazonaws.com/doc/2015-02-02/";

/// The only API version ElastiCache speaks.
pub const API_VERSION: &str = "2015-02-02";
/// The STS API version (for GetCallerIdentity).
pub const STS_API_VERSION: &str = "2011-06-15";

/// One Query-protocol request: `Action=…&Version=…&Param=…`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRequest {
    /// Empty when the request named no action (answered `MissingAction`).
    pub action: String,
    /// Every parameter except `Action`, list members flattened as AWS sends them
    /// (`Foo.member.1=…`).
    pub params: BTreeMap<String, String>,
    /// The access key id the request was signed with (`Credential=` of its SigV4
    /// `Authorization` header), when it had one.
    pub access_key: Option<String>,
}

impl QueryRequest {
    /// Parse an `application/x-www-form-urlencoded` body (or a GET query string).
    pub fn parse(form: &[u8]) -> Result<QueryRequest, QueryError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(form).map_err(|e| {
            QueryError::new(
                "MalformedQueryString",
                format!("The request body is not a valid form: {e}"),
            )
        })?;
        let mut action = String::new();
        let mut params = BTreeMap::new();
        for (k, v) in pairs {
            if k == "Action" {
                action = v;
            } else {
                params.insert(k, v);
            }
        }
        Ok(QueryRequest {
            action,
            params,
            access_key: None,
        })
    }

    /// A parameter's value, `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The members of a list parameter (`Name.member.1`, `Name.member.2`, …), in order.
    pub fn list(&self, name: &str) -> Vec<&str> {
        (1..)
            .map_while(|i| self.get(&format!("{name}.member.{i}")))
            .collect()
    }

    /// A parameter AWS requires; absent → `MissingParameter`.
    pub fn require(&self, name: &str) -> Result<&str, QueryError> {
        self.get(name).ok_or_else(|| {
            QueryError::new(
                "MissingParameter",
                format!("The request must contain the parameter {name}"),
            )
        })
    }

    /// A boolean parameter (`true`/`false`, as the SDK writes them); absent → `None`.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, QueryError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(QueryError::invalid_value(format!(
                "Value ({v}) for parameter {name} is invalid. Expected a boolean."
            ))),
        }
    }
}

/// An error as the Query protocol reports it: a code, a message, and AWS's HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({status}): {message}")]
pub struct QueryError {
    pub code: String,
    pub message: String,
    pub status: u16,
}

impl QueryError {
    /// An error with the HTTP status AWS uses for `code`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> QueryError {
        let code = code.into();
        let status = status_for(&code);
        QueryError {
            code,
            message: message.into(),
            status,
        }
    }

    pub fn invalid_value(message: impl Into<String>) -> QueryError {
        QueryError::new("InvalidParameterValue", message)
    }

    pub fn invalid_combination(message: impl Into<String>) -> QueryError {
        QueryError::new("InvalidParameterCombination", message)
    }

    /// `Sender` for the caller's mistakes (4xx), `Receiver` for the service's (5xx).
    pub fn fault_type(&self) -> &'static str {
        if self.status >= 500 {
            "Receiver"
        } else {
            "Sender"
        }
    }
}

/// The HTTP status ElastiCache answers with for an error code.
pub fn status_for(code: &str) -> u16 {
    match code {
        "ReplicationGroupNotFoundFault"
        | "CacheClusterNotFound"
        | "SnapshotNotFoundFault"
        | "CacheParameterGroupNotFound"
        | "CacheSubnetGroupNotFoundFault"
        | "UserGroupNotFound" => 404,
        "MissingAuthenticationToken"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "AccessDenied" => 403,
        "InternalFailure" | "InternalError" => 500,
        "ServiceUnavailable" => 503,
        _ => 400,
    }
}

/// A tiny XML writer: elements are opened and closed explicitly, text is always escaped.
#[derive(Debug, Default)]
pub struct Xml {
    out: String,
}

impl Xml {
    pub fn new() -> Xml {
        Xml::default()
    }

    /// `<tag>…</tag>` around whatever `body` writes.
    pub fn node(&mut self, tag: &str, body: impl FnOnce(&mut Xml)) -> &mut Xml {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        body(self);
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `<tag>text</tag>`, with the text escaped.
    pub fn leaf(&mut self, tag: &str, text: impl Display) -> &mut Xml {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        write_escaped(&mut self.out, &text.to_string());
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `<tag>text</tag>` when there is a value, nothing otherwise.
    pub fn opt_leaf(&mut self, tag: &str, text: Option<impl Display>) -> &mut Xml {
        if let Some(t) = text {
            self.leaf(tag, t);
        }
        self
    }

    /// `<tag/>`.
    pub fn empty(&mut self, tag: &str) -> &mut Xml {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push_str("/>");
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// Escape text for an XML element body.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    write_escaped(&mut out, text);
    out
}

/// The success envelope around an action's already-rendered result elements.
pub fn render_success(action: &str, request_id: &str, result: &str) -> String {
    // The action name comes from our own dispatch table, never from the request verbatim.
    format!(
        "<{action}Response xmlns=\"{XMLNS}\"><{action}Result>{result}</{action}Result>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        escape(request_id)
    )
}

/// The access key id a SigV4 `Authorization` header names (`Credential=AKID/date/…`).
pub fn access_key(authorization: &str) -> Option<String> {
    let cred = authorization.split("Credential=").nth(1)?;
    let key = cred.split('/').next()?;
    (!key.is_empty()).then(|| key.to_string())
}

/// The Query error envelope.
pub fn render_error(error: &QueryError, request_id: &str) -> String {
    let mut x = Xml::new();
    x.node("Error", |x| {
        x.leaf("Type", error.fault_type())
            .leaf("Code", &error.code)
            .leaf("Message", &error.message);
    })
    .leaf("RequestId", request_id);
    format!(
        "<ErrorResponse xmlns=\"{XMLNS}\">{}</ErrorResponse>",
        x.finish()
    )
}

/// A request id shaped like AWS's (a UUID), deterministic from a seed and a counter.
pub struct RequestId(pub u64, pub u64);

impl Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RequestId(seed, n) = *self;
        let a = mix(seed ^ n.rotate_left(32));
        let b = mix(a ^ n);
        write!(
            f,
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            a & 0xfff,
            0x8000 | ((b >> 48) as u16 & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

/// SplitMix64's finaliser: spreads nearby inputs over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_body_splits_into_action_and_parameters() {
        let body = b"Action=ModifyReplicationGroup&Version=2015-02-02&ReplicationGroupId=prod-jobs\
                     &CacheNodeType=cache.r6g.xlarge&ApplyImmediately=true&Tags.member.1.Key=a%20b";
        let req = QueryRequest::parse(body).unwrap();
        assert_eq!(req.action, "ModifyReplicationGroup");
        assert_eq!(req.get("ReplicationGroupId"), Some("prod-jobs"));
        assert_eq!(req.get("Tags.member.1.Key"), Some("a b"));
        assert_eq!(req.bool("ApplyImmediately"), Ok(Some(true)));
        assert_eq!(req.bool("Missing"), Ok(None));
        assert!(!req.params.contains_key("Action"));
    }

    #[test]
    fn a_missing_required_parameter_is_a_missing_parameter_error() {
        let req = QueryRequest::parse(b"Action=CreateSnapshot&SnapshotName=").unwrap();
        let err = req.require("SnapshotName").unwrap_err();
        assert_eq!(err.code, "MissingParameter");
        assert_eq!(err.status, 400);
    }

    #[test]
    fn a_boolean_that_is_not_true_or_false_is_an_invalid_value() {
        let req = QueryRequest::parse(b"Action=X&ApplyImmediately=yes").unwrap();
        assert_eq!(
            req.bool("ApplyImmediately").unwrap_err().code,
            "InvalidParameterValue"
        );
    }

    #[test]
    fn a_body_without_an_action_parses_with_an_empty_action() {
        let req = QueryRequest::parse(b"").unwrap();
        assert_eq!(req.action, "");
        assert!(req.params.is_empty());
    }

    #[test]
    fn text_is_escaped_in_every_element() {
        let mut x = Xml::new();
        x.leaf("Description", "a <b> & \"c\" 'd'\u{1}");
        assert_eq!(
            x.finish(),
            "<Description>a &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos;\u{FFFD}</Description>"
        );
    }

    #[test]
    fn nested_nodes_and_empty_elements_render_in_order() {
        let mut x = Xml::new();
        x.node("MemberClusters", |x| {
            x.leaf("ClusterId", "a-001").leaf("ClusterId", "a-002");
        })
        .empty("PendingModifiedValues")
        .opt_leaf("Absent", None::<&str>)
        .opt_leaf("Present", Some(1));
        assert_eq!(
            x.finish(),
            "<MemberClusters><ClusterId>a-001</ClusterId><ClusterId>a-002</ClusterId>\
             </MemberClusters><PendingModifiedValues/><Present>1</Present>"
        );
    }

    #[test]
    fn the_success_envelope_names_the_action_twice_and_carries_the_request_id() {
        let xml = render_success("CreateSnapshot", "rid-1", "<Snapshot/>");
        assert_eq!(
            xml,
            "<CreateSnapshotResponse xmlns=\"http://elasticache.amazonaws.com/doc/2015-02-02/\">\
             <CreateSnapshotResult><Snapshot/></CreateSnapshotResult>\
             <ResponseMetadata><RequestId>rid-1</RequestId></ResponseMetadata>\
             </CreateSnapshotResponse>"
        );
    }

    #[test]
    fn the_error_envelope_matches_the_query_protocol_shape() {
        let err = QueryError::new("SnapshotNotFoundFault", "Snapshot x & y not found.");
        assert_eq!(err.status, 404);
        assert_eq!(
            render_error(&err, "rid-2"),
            "<ErrorResponse xmlns=\"http://elasticache.amazonaws.com/doc/2015-02-02/\">\
             <Error><Type>Sender</Type><Code>SnapshotNotFoundFault</Code>\
             <Message>Snapshot x &amp; y not found.</Message></Error>\
             <RequestId>rid-2</RequestId></ErrorResponse>"
        );
    }

    #[test]
    fn errors_carry_the_http_status_aws_uses() {
        for (code, status) in [
            ("ReplicationGroupNotFoundFault", 404),
            ("CacheClusterNotFound", 404),
            ("SnapshotNotFoundFault", 404),
            ("InvalidReplicationGroupState", 400),
            ("SnapshotAlreadyExistsFault", 400),
            ("InvalidParameterValue", 400),
            ("InvalidParameterCombination", 400),
            ("SnapshotQuotaExceededFault", 400),
            ("NodeQuotaForCustomerExceeded", 400),
            ("Throttling", 400),
            ("InvalidAction", 400),
            ("MissingAuthenticationToken", 403),
            ("InternalFailure", 500),
        ] {
            assert_eq!(QueryError::new(code, "m").status, status, "{code}");
        }
        assert_eq!(
            QueryError::new("InternalFailure", "m").fault_type(),
            "Receiver"
        );
    }

    #[test]
    fn request_ids_look_like_uuids_and_differ_per_call() {
        let a = RequestId(0x1234_5678_9abc_def0, 1).to_string();
        let b = RequestId(0x1234_5678_9abc_def0, 2).to_string();
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, b);
    }
}
