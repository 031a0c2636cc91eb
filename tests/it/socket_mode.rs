//! Socket Mode (`[slack] mode = "socket"`): slash commands and clicks come over WebSockets the
//! bot opens to (the stand-in's) Slack, are acknowledged by envelope id within 3 s, go to the
//! same use cases as the HTTP routes, survive refreshes and dropped sockets, and a copy of an
//! envelope is acted on once. The bot needs no signing secret and serves no `/slack/*`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redis_autoscaler::app::App;
use redis_autoscaler::config::{Config, Env};
use redis_autoscaler::domain::{RunId, Timestamp};
use redis_autoscaler::elasticache::sdk::{SdkElastiCache, config_for_endpoint};
use redis_autoscaler::standin::pagerduty::FakePagerDuty;
use redis_autoscaler::standin::socket_mode::{
    FakeAck, FakeSocketMode, envelope_id, interactive_envelope, slash_command_envelope,
};
use redis_autoscaler::startup::{Application, Deps, stopped};
use redis_autoscaler::store::SqliteStore;
use redis_autoscaler::workflow::ports::SystemClock;
use redis_autoscaler::workflow::run::{Run, State};
use redis_autoscaler::workflow::runner::RunnerOptions;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support::*;

const APP_TOKEN: &str = "xapp-1-A0STANDIN-1-socket-mode-test-app-token";
/// Slack's limit for an ack.
const ACK_LIMIT: Duration = Duration::from_secs(3);

/// The bot in Socket Mode: the environment has `SLACK_APP_TOKEN` and no signing secret.
struct SocketBot {
    app: App,
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    running: JoinHandle<std::io::Result<()>>,
}

impl SocketBot {
    async fn spawn(services: &Services, db: &Path) -> SocketBot {
        captured_logs();
        services.slack.socket_mode().set_app_token(APP_TOKEN);
        let env = Env::default()
            .with("SLACK_BOT_TOKEN", TOKEN)
            .with("SLACK_APP_TOKEN", APP_TOKEN)
            .with("PAGERDUTY_ROUTING_KEY", FakePagerDuty::EXAMPLE_ROUTING_KEY)
            .with("ALARM_API_KEY", ALARM_KEY)
            .with("HOOK_SIGNING_SECRET", HOOK_SECRET)
            .with("SLACK_API_URL", services.slack.base_url())
            .with("PAGERDUTY_EVENTS_URL", services.pd.url());
        let text = config_text("", "").replace("[slack]\n", "[slack]\nmode = \"socket\"\n");
        let mut config = Config::parse(&text, &env).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            config.missing_secrets().is_empty(),
            "{:?}",
            config.missing_secrets()
        );
        config.database = db.to_path_buf();
        config.listen = "127.0.0.1:0".parse().unwrap();
        let aws = config_for_endpoint(&services.sim.endpoint());
        let deps = Deps {
            store: Arc::new(SqliteStore::open(db).unwrap()),
            aws: Arc::new(SdkElastiCache::new(&aws)),
            memory: Arc::new(redis_autoscaler::cloudwatch::SdkCloudWatch::new(&aws)),
            prices: Some(Arc::new(redis_autoscaler::pricing::SdkPrices::new(
                &aws,
                &config.pricing.region,
            ))),
            clock: Arc::new(SystemClock),
            sns_http: Arc::new(RecordingSnsHttp::default()),
            home: redis_autoscaler::startup::home(&config, &aws)
                .await
                .unwrap(),
            places: None,
            options: RunnerOptions::default(),
        };
        let application = Application::build(config, deps).await.unwrap();
        let (app, addr) = (application.app().clone(), application.local_addr());
        let (stop, rx) = watch::channel(false);
        let running = tokio::spawn(application.run_until_stopped(stopped(rx)));
        let bot = SocketBot {
            app,
            addr,
            stop,
            running,
        };
        assert!(
            services
                .slack
                .socket_mode()
                .wait_for_live(2, Duration::from_secs(10))
                .await,
            "the bot keeps two connections open"
        );
        bot
    }

    async fn run(&self, id: &RunId) -> Run {
        self.app
            .store
            .run(id)
            .await
            .unwrap()
            .expect("the run exists")
    }

    /// Wait (up to 20 s) until `pred` holds for the run.
    async fn wait_for(&self, id: &RunId, what: &str, pred: impl Fn(&Run) -> bool) -> Run {
        for _ in 0..2000 {
            let run = self.run(id).await;
            if pred(&run) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "timed out waiting for {what}: {}",
            self.run(id).await.state_name()
        );
    }

    async fn awaiting_approval(&self, id: &RunId) -> Run {
        self.wait_for(id, "the run to await approval", |r| {
            matches!(r.state, State::AwaitingApproval { .. }) && r.message.is_some()
        })
        .await
    }

    async fn runs(&self) -> Vec<Run> {
        self.app.store.recent_runs(None, 50).await.unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.running.await.unwrap().unwrap();
    }
}

async fn bot() -> (Services, TempDir, SocketBot) {
    let services = Services::start(sim_config()).await;
    let dir = TempDir::new();
    let bot = SocketBot::spawn(&services, &dir.db()).await;
    (services, dir, bot)
}

fn socket(services: &Services) -> &FakeSocketMode {
    services.slack.socket_mode()
}

/// A slash command's payload as Socket Mode carries it (the HTTP form's fields, as JSON).
fn command_payload(services: &Services, user: &str, text: &str) -> Value {
    json!({
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "team_id": "T0001", "team_domain": "example",
        "channel_id": CHANNEL, "channel_name": "ops",
        "user_id": user, "user_name": "someone",
        "command": "/redis", "text": text, "api_app_id": "A0STANDIN",
        "response_url": services.slack.response_url(&format!("cmd-{user}")),
        "trigger_id": format!("13345224609.{}.socket", Timestamp::now().as_millis()),
    })
}

/// A `block_actions` payload (Slack's sample) of `user` clicking `action_id` on the run.
fn click_payload(services: &Services, user: &str, action_id: &str, run: &RunId) -> Value {
    let form = click_body(services, user, "click", button(action_id, run));
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&form).unwrap();
    serde_json::from_str(&pairs[0].1).unwrap()
}

/// Push an envelope and wait for its ack (which must come within Slack's 3 s).
async fn acked(services: &Services, envelope: &Value) -> FakeAck {
    socket(services).push(envelope).expect("a live connection");
    let ack = socket(services)
        .wait_for_ack(envelope_id(envelope), Duration::from_secs(10))
        .await
        .expect("the envelope is acknowledged");
    let after = ack.after.expect("pushed");
    assert!(after < ACK_LIMIT, "acknowledged after {after:?}");
    ack
}

async fn upsize_by_command(services: &Services, bot: &SocketBot) -> (RunId, FakeAck) {
    let envelope = slash_command_envelope(command_payload(services, ONCALL2, "upsize prod-jobs"));
    let ack = acked(services, &envelope).await;
    let runs = bot.runs().await;
    assert_eq!(runs.len(), 1, "one run started");
    (runs[0].id.clone(), ack)
}

#[tokio::test]
async fn a_command_and_a_click_through_the_websocket_run_an_upsize_each_acked_within_3s() {
    let (services, _dir, bot) = bot().await;
    let (run, ack) = upsize_by_command(&services, &bot).await;
    // The answer rides on the ack, as the HTTP route's response would.
    let answer = ack.payload.expect("the answer in the ack");
    assert_eq!(answer["response_type"], "ephemeral");
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains(&format!("<#{CHANNEL}>")),
        "{answer}"
    );
    bot.awaiting_approval(&run).await;

    let click = interactive_envelope(click_payload(&services, ONCALL, "approve", &run));
    let ack = acked(&services, &click).await;
    assert_eq!(ack.payload, None, "a click is acknowledged bare");
    let done = bot
        .wait_for(&run, "the run to succeed", Run::is_finished)
        .await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(services.sim.count("CreateSnapshot"), 1);
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 1);
    let top = &services.top_messages()[0];
    assert!(
        top.rendered()
            .contains(&format!("Approved by @{ONCALL} at")),
        "{}",
        top.rendered()
    );
    // No request reached the bot's HTTP Slack routes: they are not served in this mode.
    let refused = reqwest::Client::new()
        .post(format!("http://{}/slack/interactions", bot.addr))
        .body("payload=%7B%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let health = reqwest::get(format!("http://{}/healthz", bot.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    bot.stop().await;
}

#[tokio::test]
async fn a_copy_of_an_envelope_is_acted_on_once_even_on_the_other_connection() {
    let (services, _dir, bot) = bot().await;
    let (run, _) = upsize_by_command(&services, &bot).await;
    bot.awaiting_approval(&run).await;
    let live = socket(&services).live();
    assert_eq!(live.len(), 2, "{live:?}");
    // Slack sends the same click again (same envelope id), on both connections at once.
    let mut click = interactive_envelope(click_payload(&services, ONCALL, "deny", &run));
    click["retry_attempt"] = json!(0);
    assert!(socket(&services).push_to(live[0], &click));
    click["retry_attempt"] = json!(1);
    click["retry_reason"] = json!("timeout");
    assert!(socket(&services).push_to(live[1], &click));
    let id = envelope_id(&click).to_string();
    eventually("both copies acknowledged", || {
        socket(&services).acks_of(&id).len() == 2
    })
    .await;
    for ack in socket(&services).acks_of(&id) {
        assert!(ack.after.unwrap() < ACK_LIMIT, "{ack:?}");
    }
    let denied = bot
        .wait_for(&run, "the run to be denied", Run::is_finished)
        .await;
    assert_eq!(denied.state_name(), "denied");
    let audit = bot.app.store.audit_trail(&run).await.unwrap();
    let by_oncall = audit.iter().filter(|a| a.actor == ONCALL).count();
    assert_eq!(by_oncall, 1, "one click taken: {audit:?}");

    // A copy of the slash command changes nothing either, and says so.
    let envelope = slash_command_envelope(command_payload(&services, ONCALL2, "upsize prod-jobs"));
    let first = acked(&services, &envelope).await;
    socket(&services)
        .push(&envelope)
        .expect("a live connection");
    let id = envelope_id(&envelope).to_string();
    eventually("the copy acknowledged", || {
        socket(&services).acks_of(&id).len() == 2
    })
    .await;
    let again = socket(&services).acks_of(&id).pop().unwrap();
    assert!(again.after.unwrap() < ACK_LIMIT);
    assert_eq!(bot.runs().await.len(), 2, "one more run, not two");
    assert_ne!(first.payload, again.payload);
    let text = again.payload.unwrap()["text"].as_str().unwrap().to_string();
    assert!(text.contains("already handled"), "{text}");
    bot.stop().await;
}

#[tokio::test]
async fn a_refresh_loses_nothing_and_does_nothing_twice() {
    let (services, _dir, bot) = bot().await;
    let (run, _) = upsize_by_command(&services, &bot).await;
    bot.awaiting_approval(&run).await;
    let sm = socket(&services);
    let opened = sm.connections_opened();
    let before = sm.live();
    // Slack asks to refresh the first connection; the click comes right then, on the other.
    assert!(sm.disconnect(before[0], "refresh_requested"));
    let click = interactive_envelope(click_payload(&services, ONCALL, "approve", &run));
    let on = sm.push(&click).expect("a live connection");
    assert_ne!(on, before[0]);
    let ack = sm
        .wait_for_ack(envelope_id(&click), Duration::from_secs(10))
        .await
        .expect("acknowledged");
    assert_eq!(ack.connection, on);
    assert!(ack.after.unwrap() < ACK_LIMIT);
    // A replacement was opened and the refreshed one is gone: two live again.
    eventually("a replacement connection", || {
        sm.connections_opened() > opened && sm.live().len() == 2 && !sm.live().contains(&before[0])
    })
    .await;
    eventually("the refreshed connection closed", || {
        sm.open_connections() == 2
    })
    .await;
    // A `warning` is handled the same way.
    let live = sm.live();
    assert!(sm.disconnect(live[0], "warning"));
    eventually("a replacement after a warning", || {
        sm.live().len() == 2 && !sm.live().contains(&live[0])
    })
    .await;
    let done = bot
        .wait_for(&run, "the run to succeed", Run::is_finished)
        .await;
    assert_eq!(done.state_name(), "succeeded");
    assert_eq!(sm.acks_of(envelope_id(&click)).len(), 1);
    assert_eq!(services.sim.count("CreateSnapshot"), 1);
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 1);
    bot.stop().await;
}

#[tokio::test]
async fn a_dropped_socket_is_reconnected_and_an_envelope_sent_again_is_acted_on_once() {
    let (services, _dir, bot) = bot().await;
    let (run, _) = upsize_by_command(&services, &bot).await;
    bot.awaiting_approval(&run).await;
    let sm = socket(&services);
    let live = sm.live();
    // The click goes out on a connection that drops before its ack can come back …
    let click = interactive_envelope(click_payload(&services, ONCALL, "approve", &run));
    assert!(sm.push_to(live[0], &click));
    assert!(sm.drop_connection(live[0]));
    // … so Slack sends it again on the other one.
    let mut again = click.clone();
    again["retry_attempt"] = json!(1);
    again["retry_reason"] = json!("timeout");
    assert!(sm.push_to(live[1], &again));
    let ack = sm
        .wait_for_ack(envelope_id(&click), Duration::from_secs(10))
        .await
        .expect("acknowledged");
    assert!(ack.after.unwrap() < ACK_LIMIT);
    eventually("a new connection after the drop", || {
        sm.live().len() == 2 && !sm.live().contains(&live[0])
    })
    .await;
    let done = bot
        .wait_for(&run, "the run to succeed", Run::is_finished)
        .await;
    assert_eq!(done.state_name(), "succeeded");
    let audit = bot.app.store.audit_trail(&run).await.unwrap();
    let by_oncall = audit.iter().filter(|a| a.actor == ONCALL).count();
    assert_eq!(by_oncall, 1, "one click taken: {audit:?}");
    assert_eq!(services.sim.count("ModifyReplicationGroup"), 1);

    // Both sockets drop at once: the bot comes back with two.
    let old = sm.live();
    for id in &old {
        sm.drop_connection(*id);
    }
    eventually("two new connections", || {
        let live = sm.live();
        live.len() == 2 && !live.iter().any(|id| old.contains(id))
    })
    .await;
    let envelope = slash_command_envelope(command_payload(&services, ONCALL, "runs"));
    let ack = acked(&services, &envelope).await;
    assert!(ack.payload.is_some());
    bot.stop().await;
}

#[tokio::test]
async fn link_disabled_stops_the_connections_without_a_reconnect_storm() {
    let (services, _dir, bot) = bot().await;
    let sm = socket(&services);
    let opened = sm.connections_opened();
    for id in sm.live() {
        sm.disconnect(id, "link_disabled");
    }
    eventually("both connections closed", || sm.open_connections() == 0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sm.connections_opened(),
        opened,
        "tried again only after the long backoff"
    );
    bot.stop().await;
}

#[tokio::test]
async fn malformed_envelopes_are_logged_and_acknowledged_or_ignored_never_a_panic() {
    let (services, _dir, bot) = bot().await;
    let sm = socket(&services);
    let on = sm.live()[0];
    let frames = [
        "not json at all \u{1b}[31m".to_string(),
        "[1,2,3]".to_string(),
        json!({"type": "slash_commands"}).to_string(),
        json!({"envelope_id": "bad-1", "type": "slash_commands", "payload": "text"}).to_string(),
        json!({"envelope_id": "bad-2", "type": "slash_commands", "payload": {"text": 1}, "accepts_response_payload": true}).to_string(),
        json!({"envelope_id": "bad-3", "type": "interactive", "payload": {"type": "block_actions"}}).to_string(),
        json!({"envelope_id": "bad-4", "type": "something_new", "payload": {}}).to_string(),
        json!({"envelope_id": "bad-5", "type": "events_api", "payload": {"event": {}}, "retry_attempt": 2, "retry_reason": "timeout"}).to_string(),
    ];
    for f in frames {
        assert!(sm.send_text(on, f));
    }
    for id in ["bad-1", "bad-2", "bad-3", "bad-4", "bad-5"] {
        eventually(&format!("{id} acknowledged"), || !sm.acks_of(id).is_empty()).await;
    }
    // Still serving on the same connection.
    assert!(sm.live().contains(&on));
    let envelope = slash_command_envelope(command_payload(&services, ONCALL, "help"));
    assert!(sm.push_to(on, &envelope));
    let ack = sm
        .wait_for_ack(envelope_id(&envelope), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        ack.payload.unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("/redis")
    );
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    assert!(logs.contains("not Slack's"), "the frame was logged");
    bot.stop().await;
}

#[tokio::test]
async fn the_app_token_never_reaches_the_log() {
    let (services, _dir, bot) = bot().await;
    let (run, _) = upsize_by_command(&services, &bot).await;
    bot.awaiting_approval(&run).await;
    let sm = socket(&services);
    let dropped = sm.live()[0];
    sm.drop_connection(dropped);
    eventually("a new connection", || {
        sm.live().len() == 2 && !sm.live().contains(&dropped)
    })
    .await;
    bot.stop().await;
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    assert!(logs.contains("Socket Mode"), "the transport logged");
    assert!(!logs.contains(APP_TOKEN), "the app token was logged");
    assert!(
        !logs.contains("standin-ticket-"),
        "a connection URL was logged"
    );
}

#[test]
fn the_socket_mode_manifest_enables_it_and_names_no_url() {
    let socket = include_str!("../../manifest/slack-app-socket.yaml");
    let http = include_str!("../../manifest/slack-app.yaml");
    assert!(socket.contains("socket_mode_enabled: true"));
    assert!(!socket.contains("url:"), "no request URLs");
    assert!(!socket.contains("REPLACE-WITH-PUBLIC-BASE-URL"));
    assert!(socket.contains("- command: /redis"));
    assert!(socket.contains("is_enabled: true"), "interactivity on");
    let scopes = |m: &str| -> Vec<String> {
        m.lines()
            .skip_while(|l| !l.contains("bot:"))
            .skip(1)
            .take_while(|l| l.trim_start().starts_with("- "))
            .map(|l| l.trim().to_string())
            .collect()
    };
    assert_eq!(scopes(socket), scopes(http), "the same bot scopes");
    assert!(!scopes(socket).is_empty());
}
