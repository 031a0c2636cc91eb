//! What goes over the wire: a lean HTTP/1.1 client for the benchmark (so the load generator
//! costs as little CPU as possible on a machine it shares with the servers), signed Slack
//! slash-command requests, and alarm deliveries retried the way EventBridge retries them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis_autoscaler::domain::{Secret, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One keep-alive HTTP/1.1 connection, one request at a time.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Send `request` (a whole HTTP/1.1 request) and read the response; its status. The
    /// response must say its `content-length` (axum's and the bot's do).
    pub async fn exchange(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let (head_end, length) = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break (end + 4, content_length(&self.buf[..end])?);
            }
            self.read_more().await?;
        };
        while self.buf.len() < head_end + length {
            self.read_more().await?;
        }
        let status = self
            .buf
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("no status line"))?;
        Ok(status)
    }

    async fn read_more(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> std::io::Result<usize> {
    let head = std::str::from_utf8(head).map_err(|_| invalid("a head that is not UTF-8"))?;
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .ok_or_else(|| invalid("a response without content-length"))
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// A `/redis help` slash command as Slack posts it, signed now, as request bytes: each one
/// has its own `trigger_id`, so its own signature (the bot acts on a signed request once).
pub fn signed_command(services: &Services) -> Vec<u8> {
    let body = slash_body(services, ONCALL, "help");
    let ts = Timestamp::now().as_secs().to_string();
    let sig = redis_autoscaler::slack::signature::sign(
        &Secret::new(SIGNING_SECRET),
        &ts,
        body.as_bytes(),
    );
    format!(
        "POST /slack/commands HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nx-slack-request-timestamp: {ts}\r\nx-slack-signature: {sig}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How an alarm delivery went, after EventBridge-style retries.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The final status (0: never answered before the deadline).
    pub status: u16,
    /// The bot's JSON answer to the final try.
    pub answer: serde_json::Value,
    /// Tries that got a 429, a 5xx or no answer, and were tried again.
    pub retried: usize,
}

/// POST an EventBridge event to the bot until it is taken: as an EventBridge API destination
/// does, a 429, a 5xx or a connection that fails is tried again (here after 100 ms); any
/// other answer is final. Gives up at `deadline`.
pub async fn deliver(
    client: &reqwest::Client,
    base: &str,
    body: &str,
    deadline: tokio::time::Instant,
) -> Delivered {
    let mut retried = 0;
    loop {
        let sent = client
            .post(format!("{base}/alarms/eventbridge"))
            .header("content-type", "application/json")
            .header("X-Api-Key", ALARM_KEY)
            .body(body.to_string())
            .send()
            .await;
        if let Ok(resp) = sent {
            let status = resp.status().as_u16();
            let answer = resp.json().await.unwrap_or(serde_json::Value::Null);
            if status != 429 && status < 500 {
                return Delivered {
                    status,
                    answer,
                    retried,
                };
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Delivered {
                status: 0,
                answer: serde_json::Value::Null,
                retried,
            };
        }
        retried += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deliver every body over `connections` concurrent senders (each a keep-alive connection
/// from one pool), in order; the outcomes in the bodies' order.
pub async fn deliver_all(
    base: &str,
    bodies: Vec<String>,
    connections: usize,
    deadline: tokio::time::Instant,
) -> Vec<Delivered> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, bodies, next, base) = (
            client.clone(),
            bodies.clone(),
            next.clone(),
            base.to_string(),
        );
        senders.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return out;
                };
                out.push((i, deliver(&client, &base, body, deadline).await));
            }
        });
    }
    let mut all: Vec<(usize, Delivered)> = senders.join_all().await.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, d)| d).collect()
}
