//! One startup for `serve`, `demo` and the integration tests: [`Application::build`] wires the
//! adapters to the ports from a validated config and the [`Deps`] that differ between them
//! (where AWS is, the store, the clock); [`Application::with_sqs`] adds the SQS alarm intake
//! when the config names a queue; [`Application::run_until_stopped`] serves HTTP, runs the
//! workflow runner, the job worker, the approver refresher and the SQS intake, and stops them
//! all when the shutdown future resolves (or the runner halts, as a test can ask it to).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_config::SdkConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::alarm::sns::{ReqwestSnsHttp, SnsHttp, SnsVerifier};
use crate::alarm::sqs::SqsIntake;
use crate::app::jobs::JobWorker;
use crate::app::{App, AppPorts, Directory, Home};
use crate::cloudwatch::SdkCloudWatch;
use crate::cloudwatch::verify::CloudWatchVerify;
use crate::config::{Config, SlackMode};
use crate::domain::Secret;
use crate::elasticache::Metered;
use crate::elasticache::sdk::{SdkElastiCache, caller_account, load_aws_config};
use crate::elasticache::steps::ElastiCacheSteps;
use crate::hooks::HookClient;
use crate::http::Http;
use crate::pagerduty::PagerDutyClient;
use crate::pricing::{CachedPrices, SdkPrices};
use crate::slack::api::SlackClient;
use crate::slack::approvers::ApproverDirectory;
use crate::slack::chat::SlackChat;
use crate::slack::graph::SlackGraphs;
use crate::slack::socket::SocketMode;
use crate::store::{PgOptions, PgStore, SqliteStore};
use crate::telemetry::Prometheus;
use crate::workflow::policy::Deliveries;
use crate::workflow::ports::fleet::{Clients, Fleet, FleetAws, FleetMemory, Place};
use crate::workflow::ports::{Clock, ElastiCache, MemorySeries, Ports, Prices, Store, SystemClock};
use crate::workflow::runner::{Runner, RunnerOptions};

/// What differs between production, the demo and the tests.
pub struct Deps {
    pub store: Arc<dyn Store>,
    /// The ElastiCache verbs (the SDK client, pointed wherever AWS is).
    pub aws: Arc<dyn ElastiCache>,
    /// The nodes' memory (CloudWatch through the SDK, the same AWS configuration).
    pub memory: Arc<dyn MemorySeries>,
    /// The AWS Price List (the SDK client, the same AWS configuration, in `[pricing] region`);
    /// `None`: no prices on the cards. Cached here for a day per region and type.
    pub prices: Option<Arc<dyn Prices>>,
    pub clock: Arc<dyn Clock>,
    /// How SNS signing certificates are fetched and subscriptions confirmed.
    pub sns_http: Arc<dyn SnsHttp>,
    /// The bot's own region and account (where `aws` and `memory` are).
    pub home: Home,
    /// How the clients of other accounts and regions are made; `None`: every group is at home
    /// (a group configured elsewhere is a start-up error).
    pub places: Option<PlaceSdk>,
    pub options: RunnerOptions,
}

/// How the clients of the groups' other accounts and regions are made: the bot's own AWS
/// configuration in another region, with the account's role assumed (aws-config's
/// AssumeRoleProvider: credentials cached and refreshed before they expire).
#[derive(Clone)]
pub struct PlaceSdk {
    pub base: SdkConfig,
    /// Where a place's AWS is, when not AWS's own endpoints (the tests: one simulator per
    /// account and region).
    pub endpoint: Option<PlaceEndpoint>,
}

/// A place's AWS endpoint, when it is not AWS's own.
pub type PlaceEndpoint = Arc<dyn Fn(&Place) -> Option<String> + Send + Sync>;

/// One client per place: every managed group in its account and region.
async fn build_fleet(
    config: &Config,
    home: &Home,
    aws: Arc<dyn ElastiCache>,
    memory: Arc<dyn MemorySeries>,
    places: Option<&PlaceSdk>,
) -> anyhow::Result<Fleet> {
    let home_place = Place {
        account: home.account.clone(),
        region: home.region.clone(),
    };
    let clients = Clients {
        aws: Arc::new(Metered(aws)),
        memory: Some(memory),
    };
    let mut fleet = Fleet::new(home_place.clone(), clients);
    let mut built = vec![home_place.clone()];
    let mut seen: Vec<(
        Place,
        crate::domain::ReplicationGroupId,
        crate::domain::ReplicationGroupId,
    )> = Vec::new();
    for g in config.groups.values() {
        let account = g.account.as_ref().and_then(|a| config.accounts.get(a));
        let place = Place {
            account: account
                .map(|a| a.account_id.clone())
                .or_else(|| home.account.clone()),
            region: g.region.clone().or_else(|| home.region.clone()),
        };
        // Two names for one AWS group (once defaults are resolved) would allow two active
        // runs on it.
        if let Some((_, _, twin)) = seen
            .iter()
            .find(|(p, id, _)| *p == place && id == g.aws_id())
        {
            anyhow::bail!(
                "groups.{} and groups.{twin} are the same replication group ({} in {place}): one name per group",
                g.id,
                g.aws_id()
            );
        }
        seen.push((place.clone(), g.aws_id().clone(), g.id.clone()));
        let assumes = account.is_some_and(|a| a.role_arn.is_some());
        // ElastiCache has no cross-account access: another account is reached through its
        // role, or the calls would act in the bot's own account under its name.
        if place.account != home_place.account && !assumes {
            anyhow::bail!(
                "groups.{}: account `{}` is not the bot's own ({}): set its role_arn",
                g.id,
                g.account.as_deref().unwrap_or("?"),
                home_place.account.as_deref().unwrap_or("?")
            );
        }
        if !built.contains(&place) || (assumes && place == home_place) {
            let Some(sdk) = places else {
                anyhow::bail!(
                    "groups.{}: it is in {place}, and this start has no AWS configuration for other accounts and regions",
                    g.id
                );
            };
            let conf = place_config(sdk, account, &place).await;
            // The credentials must be the account's: STS says whose they are.
            let whose = caller_account(&conf).await.with_context(|| {
                format!("asking STS which account the credentials for {place} are in")
            })?;
            if Some(&whose) != place.account.as_ref() {
                anyhow::bail!(
                    "groups.{}: the credentials for {place} are account {whose}'s, not {}",
                    g.id,
                    place.account.as_deref().unwrap_or("?")
                );
            }
            let clients = Clients {
                aws: Arc::new(Metered(Arc::new(SdkElastiCache::new(&conf)))),
                memory: Some(Arc::new(SdkCloudWatch::new(&conf))),
            };
            info!(place = %place, role = account.and_then(|a| a.role_arn.as_deref()).unwrap_or("(own credentials)"), "clients for another account or region");
            fleet.add_place(place.clone(), clients);
            built.push(place.clone());
        }
        fleet.add_group(g.id.clone(), Some(place), g.aws_id().clone());
    }
    Ok(fleet)
}

/// The AWS configuration of one place: its region, its endpoint (tests), and the account's
/// role assumed with the bot's own credentials.
async fn place_config(
    sdk: &PlaceSdk,
    account: Option<&crate::config::AccountConfig>,
    place: &Place,
) -> SdkConfig {
    let mut b = sdk.base.to_builder();
    if let Some(r) = &place.region {
        b.set_region(Some(aws_config::Region::new(r.clone())));
    }
    if let Some(endpoint) = sdk.endpoint.as_ref().and_then(|f| f(place)) {
        b.set_endpoint_url(Some(endpoint));
    }
    if let Some(a) = account
        && let Some(role) = &a.role_arn
    {
        let mut p = aws_config::sts::AssumeRoleProvider::builder(role.clone())
            .session_name("redis-autoscaler");
        if let Some(e) = &a.external_id {
            p = p.external_id(e.clone());
        }
        let provider = p.configure(&sdk.base).build().await;
        b.set_credentials_provider(Some(
            aws_sdk_elasticache::config::SharedCredentialsProvider::new(provider),
        ));
    }
    b.build()
}

impl Deps {
    /// Production: the store the config names (the SQLite file, or PostgreSQL for several
    /// replicas), AWS through the SDK's standard chain, the wall clock, SNS over HTTPS.
    pub async fn production(config: &Config) -> anyhow::Result<Deps> {
        let store = open_store(config).await?;
        let sdk = load_aws_config().await;
        Ok(Deps {
            store,
            aws: Arc::new(SdkElastiCache::new(&sdk)),
            memory: Arc::new(SdkCloudWatch::new(&sdk)),
            prices: Some(Arc::new(SdkPrices::new(&sdk, &config.pricing.region))),
            home: home(config, &sdk).await?,
            places: Some(PlaceSdk {
                base: sdk.clone(),
                endpoint: None,
            }),
            clock: Arc::new(SystemClock),
            sns_http: Arc::new(ReqwestSnsHttp(crate::http_client::build(
                Duration::from_secs(10),
            ))),
            options: RunnerOptions::default(),
        })
    }
}

/// The store `config` names: PostgreSQL when it has a `postgres://` database (or
/// `DATABASE_URL`), else the SQLite file.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let Some(pg) = &config.postgres else {
        let store = SqliteStore::open(&config.database)
            .with_context(|| format!("opening the store at {}", config.database.display()))?;
        info!(path = %config.database.display(), "store: SQLite (one replica)");
        return Ok(Arc::new(store));
    };
    let options = PgOptions {
        lease: pg.lease,
        pool_size: pg.pool_size,
        ca_file: pg.ca_file.clone(),
    };
    // The URL may hold a password: errors name the server's complaint, never the URL.
    let store = PgStore::connect(pg.url.expose(), pg.password.as_ref(), options)
        .await
        .context("connecting to PostgreSQL (DATABASE_URL or `database`)")?;
    info!(owner = store.owner(), lease = ?pg.lease, "store: PostgreSQL (replicas share it)");
    Ok(Arc::new(store))
}

/// The region (from the AWS configuration) and account (from the config, else STS) the bot
/// manages groups in.
pub async fn home(config: &Config, sdk: &SdkConfig) -> anyhow::Result<Home> {
    let region = sdk.region().map(|r| r.to_string());
    let account = match &config.account_id {
        Some(account) => account.clone(),
        None => caller_account(sdk).await.context(
            "asking STS which AWS account the bot is in (set `account_id` in the config to skip it)",
        )?,
    };
    info!(region = region.as_deref().unwrap_or("?"), account = %account, "managing groups here");
    Ok(Home {
        region,
        account: Some(account),
    })
}

/// The bot, wired and listening, not yet running.
pub struct Application {
    listener: TcpListener,
    http: Http,
    worker: JobWorker,
    directory: Arc<dyn Directory>,
    /// Slack's commands and clicks over Socket Mode (`[slack] mode = "socket"`).
    socket: Option<SocketMode>,
    /// Alarms from `alarms.sqs_queue_url`, once [`Application::with_sqs`] gave it a client.
    sqs: Option<SqsIntake>,
    /// Give back what start-up left resident once it is over (`serve` only: see
    /// [`Application::giving_back_startup_memory`]).
    give_back: bool,
}

impl Application {
    /// Wire everything from a validated config, and bind `config.listen`.
    pub async fn build(config: Config, deps: Deps) -> anyhow::Result<Application> {
        // Metrics are recorded from the first moment on.
        crate::telemetry::prometheus();
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let http = crate::http_client::build(config.delivery.timeout);
        let secret = |s: &Option<Secret>| s.clone().unwrap_or_else(|| Secret::new(""));
        let (secrets, endpoints) = (&config.secrets, &config.endpoints);
        let slack = SlackClient::new(
            endpoints.slack_api_url.clone(),
            secret(&secrets.slack_bot_token),
            http.clone(),
        );
        let modal_slack = slack.clone();
        let pager = PagerDutyClient::new(
            endpoints.pagerduty_events_url.clone(),
            secret(&secrets.pagerduty_routing_key),
            http.clone(),
        );
        let hooks = HookClient::new(http, secrets.hook_signing_secret.clone());
        let directory: Arc<dyn Directory> = Arc::new(ApproverDirectory::new(
            config.slack.approvers.clone(),
            config.slack.requesters.clone(),
            slack.clone(),
        ));
        // A post whose answer was lost lands within its request's timeout; allow for three.
        let land = config.delivery.timeout * 3;
        let fleet = build_fleet(
            &config,
            &deps.home,
            deps.aws,
            deps.memory,
            deps.places.as_ref(),
        )
        .await?;
        let fleet = Arc::new(fleet);
        // Calls that name a group go to its place; the steps look up each run's group's.
        let aws: Arc<dyn ElastiCache> = Arc::new(FleetAws(fleet.clone()));
        let memory: Arc<dyn MemorySeries> = Arc::new(FleetMemory(fleet.clone()));
        let verify = Arc::new(CloudWatchVerify::new(aws.clone(), memory.clone()));
        let graphs = Arc::new(SlackGraphs::new(slack.clone(), memory.clone(), aws.clone()));
        let chat = Arc::new(SlackChat::new(slack).duplicates_land_within(land));
        let metrics = Arc::new(Prometheus);
        let mut steps = ElastiCacheSteps::for_fleet(fleet.clone()).with_memory(memory.clone());
        if let Some(prices) = deps.prices.filter(|_| config.pricing.enabled) {
            let cached = CachedPrices::new(prices, deps.clock.clone());
            steps = steps.with_prices(Arc::new(cached));
        }
        let ports = Ports {
            store: deps.store.clone(),
            aws: Arc::new(steps),
            chat: chat.clone(),
            graphs,
            verify,
            pager: Arc::new(pager),
            hooks: Arc::new(hooks),
            clock: deps.clock.clone(),
            metrics: metrics.clone(),
        };
        let delivery = Deliveries {
            retry: config.delivery.retry,
            retry_for: config.delivery.retry_for,
        };
        let runner = Runner::new(ports, delivery, deps.options);
        let ports = AppPorts {
            store: deps.store,
            fleet,
            directory: directory.clone(),
            clock: deps.clock,
            metrics,
            memory: Some(memory),
        };
        let app = App::new(Arc::new(config), runner, ports, deps.home);
        let worker = JobWorker::new(app.clone(), chat, delivery.retry);
        let sns = Arc::new(SnsVerifier::new(deps.sns_http));
        let socket = socket_mode(&app, &modal_slack)?;
        Ok(Application {
            listener,
            http: Http::with_slack(app, sns, modal_slack),
            worker,
            directory,
            socket,
            sqs: None,
            give_back: false,
        })
    }

    /// Once start-up is over (runs resumed, the config checked against AWS), give back the
    /// code pages only start-up ran and the memory it freed ([`crate::memory`]). For `serve`,
    /// a process of its own; the tests and the demo share theirs.
    pub fn giving_back_startup_memory(mut self) -> Application {
        self.give_back = true;
        self
    }

    /// Take alarms from the SQS queue `alarms.sqs_queue_url` names too, through a client
    /// built from `sdk` (the AWS configuration every other client is built from). Nothing
    /// changes when the config names no queue.
    pub fn with_sqs(mut self, sdk: &SdkConfig) -> Application {
        self.sqs = SqsIntake::new(sdk, &self.http.app.config.alarms);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The use cases (and through them the runner and the store).
    pub fn app(&self) -> &App {
        &self.http.app
    }

    /// The SNS verifier (and its certificate cache).
    pub fn sns(&self) -> &Arc<SnsVerifier> {
        &self.http.sns
    }

    /// Serve and work until `shutdown` resolves (or the runner halts, or the HTTP server
    /// fails): then stop taking requests, let the requests, effects and jobs in flight finish,
    /// and return.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopping) = watch::channel(false);
        let addr = self.local_addr();
        let on = || stopped(stopping.clone());
        let limits = self.http.app.config.http;
        let mut server = tokio::spawn(crate::http::serve(
            self.listener,
            self.http.clone(),
            limits,
            on(),
        ));
        let runner = self.http.app.runner.clone();
        let mut runner = tokio::spawn(runner.run(on()));
        let jobs = tokio::spawn(self.worker.run(on()));
        let refresher = tokio::spawn(refresh_approvers(self.directory, on()));
        let pruner = tokio::spawn(prune_store(self.http.app.clone(), on()));
        let upkeep = tokio::spawn(metrics_upkeep(on()));
        let forecasts = tokio::spawn(watch_forecasts(self.http.app.clone(), on()));
        let scale_downs = tokio::spawn(watch_scale_downs(self.http.app.clone(), on()));
        let (intake, app, sqs_stop) = (self.sqs, self.http.app.clone(), on());
        let sqs = tokio::spawn(async move {
            if let Some(intake) = intake {
                intake.run(app, sqs_stop).await;
            }
        });
        let slack_socket = tokio::spawn(run_socket_mode(self.socket, on()));
        // The config against AWS, in the background: a contradiction is logged, not fatal.
        let (app, give_back) = (self.http.app.clone(), self.give_back);
        tokio::spawn(async move {
            for warning in app.check_groups().await {
                warn!("{warning}");
            }
            if give_back {
                give_back_startup_memory(&app.runner).await;
            }
        });
        info!(addr = %addr, "redis-autoscaler serving");
        // Whichever comes first stops everything: the signal, a halted runner, a failed server.
        let (mut ran, mut served) = (false, None);
        tokio::select! {
            _ = shutdown => {}
            _ = &mut runner => ran = true,
            result = &mut server => served = Some(result),
        }
        let _ = stop.send(true);
        if !ran {
            runner.await.ok();
        }
        let _ = tokio::join!(jobs, refresher, pruner, upkeep, forecasts, scale_downs, sqs);
        let _ = slack_socket.await;
        let served = match served {
            Some(result) => result,
            None => server.await,
        };
        served.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// The Socket Mode transport, when `[slack] mode = "socket"` (which needs `SLACK_APP_TOKEN`).
fn socket_mode(app: &App, bot: &SlackClient) -> anyhow::Result<Option<SocketMode>> {
    let config = &app.config;
    if config.slack.mode != SlackMode::Socket {
        return Ok(None);
    }
    let token =
        config.secrets.slack_app_token.clone().context(
            "[slack] mode = \"socket\" needs SLACK_APP_TOKEN (an app-level token, xapp-…)",
        )?;
    let http = crate::http_client::build(config.delivery.timeout);
    let socket = SocketMode::new(app.clone(), bot.clone(), token, http)
        .context("setting up Slack Socket Mode")?;
    info!("Slack: Socket Mode (commands and clicks over WebSockets; /slack/* is not served)");
    Ok(Some(socket))
}

async fn run_socket_mode(socket: Option<SocketMode>, stop: impl Future<Output = ()>) {
    if let Some(socket) = socket {
        socket.run(stop).await;
    }
}

/// Start-up is over once the runner has resumed the unfinished runs (it may still be at it
/// after the config check): then the free memory it left with the allocator goes back
/// ([`crate::memory`]).
async fn give_back_startup_memory(runner: &Runner) {
    for _ in 0..200 {
        if runner.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crate::memory::release_free_memory();
    info!("gave back the free memory start-up left");
}

/// Fold the recorded histogram samples into their buckets every few seconds. Until then the
/// recorder keeps each sample (8 bytes per request): without this, a bot nobody scrapes grew
/// by 10 MiB (anonymous memory) over the benchmark's 50-connection load.
async fn metrics_upkeep(stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        crate::telemetry::prometheus().run_upkeep();
    }
}

/// Groups with `forecast_alert`: their memory trend every `alarms.forecast_interval`, and a
/// run proposed when it says they are full within that long (see `app::forecasts`). Nothing
/// runs when no group asks for it.
async fn watch_forecasts(app: crate::app::App, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let wanted = app
        .config
        .groups
        .values()
        .any(|g| !g.policy.forecast_alert.is_zero() && !g.policy.forecast_window.is_zero());
    if !wanted {
        return;
    }
    let every = app.config.alarms.forecast_interval;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(every) => {}
        }
        // Replicas sharing a store take turns: one look per interval in all.
        if !my_turn(&app, "forecast", every).await {
            continue;
        }
        // A look under way does not hold up a shutdown.
        tokio::select! {
            _ = &mut stop => return,
            _ = app.forecast_once() => {}
        }
    }
}

/// The scale-down check (see `app::scale_down`) every `alarms.scale_down_interval`, on a timer
/// kept in the store: the next check is when the store says, so a restart (or a rolling
/// deploy) does not push it back, and replicas sharing the store take it once. The first start
/// only sets the timer: the first check comes one interval later.
async fn watch_scale_downs(app: crate::app::App, stop: impl Future<Output = ()>) {
    const TIMER: &str = "scale_down";
    tokio::pin!(stop);
    if app.scale_down_groups().is_empty() || !app.reads_memory() {
        return;
    }
    let every = app.config.alarms.scale_down_interval;
    // A store that can't be read is tried again this much later (never a busy loop).
    let pause = every.min(Duration::from_secs(60));
    loop {
        let now = app.now();
        let wait = match app.store.turn_due(TIMER).await {
            Ok(Some(due)) if due > now => due.since(now),
            Ok(Some(_)) => {
                // Due: whoever takes the turn checks; the others wait for the time it set.
                match app.store.take_turn(TIMER, every, now).await {
                    Ok(true) => {
                        tokio::select! {
                            _ = &mut stop => return,
                            _ = app.scale_down_once() => {}
                        }
                        continue;
                    }
                    Ok(false) => Duration::from_millis(50).min(every),
                    Err(e) => {
                        warn!(error = %e, "could not take the scale-down turn; trying again later");
                        pause
                    }
                }
            }
            Ok(None) => match app.store.take_turn(TIMER, every, now).await {
                // The timer is set: the first check comes one interval from now.
                Ok(_) => continue,
                Err(e) => {
                    warn!(error = %e, "could not set the scale-down timer; trying again later");
                    pause
                }
            },
            Err(e) => {
                warn!(error = %e, "could not read the scale-down timer; trying again later");
                pause
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Keep the store bounded: a pruning pass every `prune_interval`, each in small batches with a
/// pause between them, so that runs and requests never wait long behind it.
async fn prune_store(app: crate::app::App, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let every = app.config.retention.prune_interval;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !my_turn(&app, "prune", every).await {
            continue;
        }
        loop {
            match app.prune_once().await {
                Ok(more) if more => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, "could not prune the store; trying again later");
                    break;
                }
            }
        }
    }
}

/// Is it this replica's turn at the periodic work `name`? (With one process, whenever the interval
/// has passed since its last turn: the store keeps the turns.)
async fn my_turn(app: &crate::app::App, name: &str, every: Duration) -> bool {
    // A little early, so that a replica whose timer fires just before the turn comes due
    // does not wait a whole interval more.
    let slack = every / 20;
    match app.store.take_turn(name, every - slack, app.now()).await {
        Ok(mine) => mine,
        Err(e) => {
            warn!(error = %e, work = name, "could not take a turn at periodic work; skipping it");
            false
        }
    }
}

/// Keep approver user groups fresh, so clicks are decided without waiting on Slack.
async fn refresh_approvers(directory: Arc<dyn Directory>, stop: impl Future<Output = ()>) {
    if !directory.has_groups() {
        return;
    }
    tokio::pin!(stop);
    loop {
        directory.refresh().await;
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_secs(240)) => {}
        }
    }
}

/// Resolves once the watch flips to `true` (or its sender is gone).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use crate::domain::{NodeType, ReplicationGroupId};
    use crate::elasticache::sdk::config_for_endpoint;
    use crate::elasticache::sim::{self, SimConfig, SimGroup};

    const ROLE: &str = "arn:aws:iam::210987654321:role/redis-autoscaler";

    fn group(id: &str) -> SimGroup {
        SimGroup::new(
            ReplicationGroupId::parse(id).unwrap(),
            NodeType::parse("cache.r6g.large").unwrap(),
        )
    }

    /// The fleet a config builds, with the home simulator (account 123456789012, us-east-1)
    /// and `eu` (eu-west-1) as the other place.
    async fn fleet(extra: &str, eu_account: &str) -> anyhow::Result<Fleet> {
        let home_sim = sim::spawn(SimConfig {
            roles: [(ROLE.to_string(), None)].into(),
            ..SimConfig::with_groups([group("prod-jobs")])
        })
        .await?;
        let eu = sim::spawn(SimConfig {
            account_id: eu_account.to_string(),
            ..SimConfig::with_groups([group("prod-jobs")])
        })
        .await?;
        let text = format!("[slack]\nchannel = \"C0123ABCD\"\n[groups.prod-jobs]\n{extra}");
        let config = Config::parse(&text, &Env::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let base = config_for_endpoint(&home_sim.endpoint());
        let home = home(&config, &base).await?;
        let eu_endpoint = eu.endpoint();
        let endpoint: PlaceEndpoint = Arc::new(move |p: &Place| {
            (p.region.as_deref() == Some("eu-west-1")).then(|| eu_endpoint.clone())
        });
        let places = PlaceSdk {
            base: base.clone(),
            endpoint: Some(endpoint),
        };
        let aws: Arc<dyn ElastiCache> = Arc::new(SdkElastiCache::new(&base));
        let memory: Arc<dyn MemorySeries> = Arc::new(SdkCloudWatch::new(&base));
        build_fleet(&config, &home, aws, memory, Some(&places)).await
    }

    const EU: &str = "[accounts.payments]\naccount_id = \"210987654321\"\n";

    #[tokio::test]
    async fn another_account_is_reached_through_its_role_and_its_credentials_are_checked() {
        let with_role = format!(
            "{EU}role_arn = \"{ROLE}\"\n[groups.prod-jobs-eu]\nid = \"prod-jobs\"\naccount = \"payments\"\nregion = \"eu-west-1\"\n"
        );
        let f = fleet(&with_role, "210987654321").await.unwrap();
        let eu = ReplicationGroupId::parse("prod-jobs-eu").unwrap();
        assert_eq!(f.place_of(&eu).account.as_deref(), Some("210987654321"));

        // Without a role the calls would act in the bot's own account under the other's name.
        let without = with_role.replace(&format!("role_arn = \"{ROLE}\"\n"), "");
        let e = fleet(&without, "210987654321")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("set its role_arn"), "{e}");

        // Credentials that STS says are another account's are refused.
        let e = fleet(&with_role, "999999999999")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("are account 999999999999's"), "{e}");
    }

    #[tokio::test]
    async fn two_names_for_one_group_once_the_defaults_are_resolved_are_refused() {
        // `region = "us-east-1"` is the bot's own region: the same group as `prod-jobs`.
        let twin = "[groups.jobs-east]\nid = \"prod-jobs\"\nregion = \"us-east-1\"\n";
        let e = fleet(twin, "210987654321").await.unwrap_err().to_string();
        assert!(e.contains("are the same replication group"), "{e}");
    }
}
