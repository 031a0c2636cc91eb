//! The one way this crate builds an outgoing HTTP client (Slack, PagerDuty, hooks).
//!
//! It owns the TLS provider choice (rustls with ring, installed once per process), the timeouts,
//! the user agent and the redirect policy. It must not know about any particular service: base
//! URLs, credentials and error handling belong to each client.

use std::time::Duration;

/// `User-Agent` sent with every outgoing request.
pub const USER_AGENT: &str = concat!("redis-autoscaler/", env!("CARGO_PKG_VERSION"));

/// A client with connect and whole-request timeouts of `timeout`, our user agent, and no
/// redirects.
///
/// Redirects are refused because every endpoint we call is configured exactly, a redirect would
/// replay a request carrying a bearer token or routing key to another URL, and a 3xx is more
/// useful as an error that names the status than as a silent hop.
pub fn build(timeout: Duration) -> reqwest::Client {
    // Installing twice is harmless (the second call reports the provider already installed), so
    // every caller may call `build` without coordinating with `main` or the AWS SDK setup.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client with a TLS provider installed can always be built")
}

/// An error and its causes on one line: a reqwest error's own message is often only "error
/// sending request for url (…)", with the reason (refused, timed out, TLS) in its sources.
/// reqwest errors name the URL but never the headers, so bearer tokens cannot leak this way.
pub fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_names_the_crate_and_its_version() {
        assert_eq!(
            USER_AGENT,
            format!("redis-autoscaler/{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn building_twice_in_one_process_works() {
        let _a = build(Duration::from_secs(5));
        let _b = build(Duration::from_millis(200));
    }
}
