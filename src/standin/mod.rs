//! Local stand-ins for the services the bot talks to, used by `demo` and by the tests.
//!
//! Each one is a real HTTP server on 127.0.0.1 port 0 that speaks the service's wire format,
//! records what it received, and can be told to fail; the Slack one also serves Socket Mode
//! (a WebSocket server, [`socket_mode`]). They are never used by `serve`.

pub mod hooks;
pub mod pagerduty;
pub mod slack;
pub mod socket_mode;
