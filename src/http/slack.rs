//! `POST /slack/commands` and `POST /slack/interactions`.
//!
//! Every request passes through [`SlackVerified`], an extractor that reads the raw body (with
//! a size limit) and checks Slack's signature before any handler sees a byte of it; a handler
//! can't skip it because it is the only way to get the body. Handlers then read the form and
//! hand it to `slack::inbound` (the same functions Socket Mode calls), and render its answer
//! as an HTTP response, within Slack's 3 seconds: what takes longer is a job whose answer goes
//! to `response_url`. In Socket Mode (`[slack] mode = "socket"`) these routes are not served.

use std::sync::RwLock;

use axum::body::{Bytes, HttpBody};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use crate::slack::commands::SlashForm;
use crate::slack::inbound::{self, Once, Reply};
use crate::slack::interactions;
use crate::slack::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER};

use super::Http;

/// Slack's payloads are small; anything much bigger is not from Slack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body Slack signed. The only way to get one is [`FromRequest`], which verifies.
pub struct SlackVerified {
    pub body: Bytes,
    /// What recognises a copy of this request: its signature (a cheap copy of the header).
    signature: HeaderValue,
}

impl FromRequest<Http> for SlackVerified {
    type Rejection = Response;

    async fn from_request(req: Request, http: &Http) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let Some(bytes) = whole_body(body).await else {
            warn!(path = %parts.uri.path(), "refused a Slack request: body too large or unreadable");
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response());
        };
        // Slack checks a new request URL's certificate with `ssl_check=1`; it carries no
        // command and needs no answer but 200. Nothing else happens for it.
        if is_ssl_check(&bytes) {
            return Err(StatusCode::OK.into_response());
        }
        let Some(key) = http.slack_key.as_ref() else {
            warn!(path = %parts.uri.path(), "refused a Slack request: SLACK_SIGNING_SECRET is not set");
            return Err((StatusCode::UNAUTHORIZED, "invalid signature\n").into_response());
        };
        // Looked up by names made once: a name given as a `&str` is parsed and checked on
        // every lookup.
        static SIGNATURE: HeaderName = HeaderName::from_static(SIGNATURE_HEADER);
        static TIMESTAMP: HeaderName = HeaderName::from_static(TIMESTAMP_HEADER);
        let signature = parts.headers.get(&SIGNATURE);
        let now = http.app.now();
        let timestamp = text(parts.headers.get(&TIMESTAMP));
        let checked = key.verify(timestamp, text(signature), &bytes, now.as_secs());
        if let Err(e) = checked {
            warn!(path = %parts.uri.path(), reason = %e, "refused a Slack request");
            return Err((StatusCode::UNAUTHORIZED, "invalid signature\n").into_response());
        }
        Ok(SlackVerified {
            body: bytes,
            // Verified, so present and ASCII (hex).
            signature: signature
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("")),
        })
    }
}

/// A header's value as text, if it is there and visible ASCII.
fn text(value: Option<&HeaderValue>) -> Option<&str> {
    value.and_then(|v| v.to_str().ok())
}

/// The whole body, at most [`MAX_BODY_BYTES`]; `None` when it is larger or can't be read. The
/// guard in front of the routes has read it already, into one frame, which is taken as it is
/// (`to_bytes` would collect it into a list first, an allocation per request).
async fn whole_body(mut body: axum::body::Body) -> Option<Bytes> {
    use http_body_util::BodyExt;
    let first = match body.frame().await {
        None => return Some(Bytes::new()),
        Some(frame) => frame.ok()?.into_data().unwrap_or_default(),
    };
    if first.len() > MAX_BODY_BYTES {
        return None;
    }
    if body.is_end_stream() {
        return Some(first);
    }
    // More than one frame (not through the guard): the rest, within what the limit leaves.
    let rest = axum::body::to_bytes(body, MAX_BODY_BYTES - first.len())
        .await
        .ok()?;
    if rest.is_empty() {
        return Some(first);
    }
    Some([&first[..], &rest[..]].concat().into())
}

impl SlackVerified {
    /// What recognises a copy of this request: its signature.
    fn once<'a>(&'a self, path: &'a str) -> Once<'a> {
        Once {
            kind: "slack",
            id: self.signature.to_str().unwrap_or_default(),
            via: path,
        }
    }
}

fn is_ssl_check(body: &[u8]) -> bool {
    // Looked at before the signature check, for every request: a SIMD search for the key
    // (a pass over the pairs cost a signed ack 2.6k instructions), and only the `ssl_check`
    // pair's value is decoded.
    const KEY: &[u8] = b"ssl_check=";
    // Built once: building the searcher cost more than the search.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    FINDER
        .find_iter(body)
        .filter(|at| *at == 0 || body[at - 1] == b'&')
        .any(|at| {
            let value = &body[at + KEY.len()..];
            let value = &value[..memchr::memchr(b'&', value).unwrap_or(value.len())];
            crate::slack::commands::form_decode(value) == "1"
        })
}

/// The HTTP response for what the use case answered.
fn respond(reply: Reply) -> Response {
    match reply {
        Reply::Done => StatusCode::OK.into_response(),
        Reply::Malformed(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
        Reply::Failed => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        reply @ (Reply::Ephemeral(_) | Reply::ViewErrors(_)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json_body(&reply),
        )
            .into_response(),
    }
}

/// The JSON body of an answer. The last text-only answer's is kept and given again while the
/// same text is answered: that is `/redis help` (the same 1.2 KB each time, and asked far more
/// than anything else), whose escaping and copying was a tenth of its ack's CPU.
fn json_body(reply: &Reply) -> Bytes {
    static LAST: RwLock<Option<(String, Bytes)>> = RwLock::new(None);
    let Reply::Ephemeral(msg) = reply else {
        return reply.body_json().unwrap_or_default().into();
    };
    if !msg.blocks.is_empty() {
        return reply.body_json().unwrap_or_default().into();
    }
    if let Some((text, json)) = &*LAST.read().unwrap_or_else(|e| e.into_inner())
        && *text == msg.text
    {
        return json.clone();
    }
    let json = Bytes::from(reply.body_json().unwrap_or_default());
    *LAST.write().unwrap_or_else(|e| e.into_inner()) = Some((msg.text.clone(), json.clone()));
    json
}

pub async fn commands(State(http): State<Http>, verified: SlackVerified) -> Response {
    let form = match SlashForm::parse(&verified.body) {
        Ok(f) => f,
        Err(e) => return respond(Reply::Malformed(e)),
    };
    respond(inbound::command(&http.app, form, verified.once("/slack/commands")).await)
}

pub async fn interactions(State(http): State<Http>, verified: SlackVerified) -> Response {
    let parsed = interactions::parse(&verified.body);
    let once = verified.once("/slack/interactions");
    respond(inbound::interaction(&http.app, http.slack.as_ref(), parsed, once).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ssl_check_is_its_own_pair_with_the_value_1() {
        for body in [
            "ssl_check=1",
            "token=x&ssl_check=1",
            "ssl_check=%31&token=x",
        ] {
            assert!(is_ssl_check(body.as_bytes()), "{body}");
        }
        for body in [
            "ssl_check=0",
            "ssl_check=",
            "ssl_check=11",
            "xssl_check=1",
            "text=ssl_check=1",
            "text=a+ssl_check=1",
            "ssl_check",
            "",
        ] {
            assert!(!is_ssl_check(body.as_bytes()), "{body}");
        }
    }

    fn chunked(chunks: &[&'static [u8]]) -> axum::body::Body {
        let chunks: Vec<Result<Bytes, std::convert::Infallible>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        axum::body::Body::from_stream(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn the_body_is_its_one_frame_or_its_frames_joined_and_never_more_than_the_limit() {
        let one = Bytes::from_static(b"token=x&text=help");
        let read = whole_body(axum::body::Body::from(one.clone()))
            .await
            .unwrap();
        assert_eq!(
            read.as_ptr(),
            one.as_ptr(),
            "the guard's frame, taken as it is"
        );
        assert_eq!(whole_body(axum::body::Body::empty()).await.unwrap(), "");
        let read = whole_body(chunked(&[b"a=1", b"&b=2", b"", b"&c=3"])).await;
        assert_eq!(read.unwrap(), "a=1&b=2&c=3");
        let big: &'static [u8] = Vec::leak(vec![b'x'; MAX_BODY_BYTES]);
        assert_eq!(
            whole_body(chunked(&[big])).await.unwrap().len(),
            MAX_BODY_BYTES
        );
        assert!(whole_body(chunked(&[big, b"y"])).await.is_none());
        assert!(whole_body(chunked(&[b"y", big])).await.is_none());
        let over = Bytes::from(vec![b'x'; MAX_BODY_BYTES + 1]);
        assert!(whole_body(axum::body::Body::from(over)).await.is_none());
    }

    /// The size of the future `make` returns, without making it.
    fn future_size<F>(_make: &impl FnOnce() -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every ack moves and allocates its handler's future, so the use cases that act (upsize's
    /// future alone is several KB) are boxed where they are awaited, not part of it: a
    /// `/redis help` ack copied 11 KB a time before (callgrind), and its allocation was one
    /// that makes glibc's malloc consolidate its free lists.
    #[test]
    #[expect(
        unreachable_code,
        reason = "the futures are only measured, never made: their arguments need no values"
    )]
    fn a_commands_future_stays_small_whatever_the_use_cases_hold() {
        let app: fn() -> &'static crate::app::App = || unreachable!();
        let upsize = future_size(&|| {
            app().upsize(
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
            )
        });
        let handler = future_size(&|| commands(unreachable!(), unreachable!()));
        assert!(
            upsize > 4096,
            "the test still measures what it is about: {upsize}"
        );
        assert!(
            handler <= 2048,
            "the command handler's future is {handler} bytes"
        );
    }
}
