//! The command line: `serve`, `demo`, `elasticache-sim` and `check-config`, and the logging
//! setup they share.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::{error, info};

use crate::config::{Config, Env};
use crate::elasticache::sdk::load_aws_config;
use crate::startup::{Application, Deps};

#[derive(Debug, Parser)]
#[command(
    name = "redis-autoscaler",
    version,
    about = "Snapshot-then-upsize ElastiCache Redis groups from Slack"
)]
pub struct Cli {
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bot: Slack and alarm endpoints, and the workflow runner.
    Serve {
        #[arg(long, default_value = "redis-autoscaler.toml")]
        config: PathBuf,
    },
    /// Show the whole flow on this machine: simulator, local Slack and PagerDuty stand-ins.
    Demo(crate::demo::DemoArgs),
    /// Run the ElastiCache simulator on its own.
    ElasticacheSim(crate::elasticache::sim::SimArgs),
    /// Validate a configuration file and print the effective configuration (secrets redacted).
    CheckConfig {
        #[arg(long, default_value = "redis-autoscaler.toml")]
        config: PathBuf,
    },
}

/// Set up `tracing`: text for a terminal, JSON for log pipelines, one record per line
/// whatever a request put in its fields. `RUST_LOG` filters; one that can't be read leaves the
/// default in place, and the first record says what was wrong with it.
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|spec| EnvFilter::builder().parse(spec));
    let refused = from_env
        .as_ref()
        .and_then(|f| f.as_ref().err().map(|e| e.to_string()));
    let filter = from_env
        .and_then(Result::ok)
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let json = matches!(format, LogFormat::Json);
    crate::telemetry::init_logs(json, filter, std::io::stderr);
    if let Some(why) = refused {
        tracing::warn!(error = %why, default = default_filter, "RUST_LOG could not be read; logging at the default");
    }
}

/// Run a parsed command; the exit code is the result.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Demo(args) => crate::demo::run(args).await,
        Command::ElasticacheSim(args) => crate::elasticache::sim::run_cli(args).await.map(|()| 0),
        Command::CheckConfig { config } => Ok(check_config(&config)),
    }
}

fn check_config(path: &std::path::Path) -> i32 {
    match Config::load(path, &Env::from_process()) {
        Ok(config) => {
            print!("{}", config.render_redacted());
            for w in config.warnings() {
                eprintln!("warning: {w}");
            }
            0
        }
        Err(e) => {
            eprint!("{e}");
            1
        }
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<i32> {
    let config = match Config::load(&path, &Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return Ok(2);
        }
    };
    let missing = config.missing_secrets();
    if !missing.is_empty() {
        eprintln!("missing environment variable(s): {}", missing.join(", "));
        return Ok(2);
    }
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let deps = Deps::production(&config).await?;
    let mut application = Application::build(config, deps)
        .await?
        .giving_back_startup_memory();
    if application.app().config.alarms.sqs_queue_url.is_some() {
        application = application.with_sqs(&load_aws_config().await);
    }
    let shutdown = async {
        shutdown_signal().await;
        info!("shutdown signal received: finishing requests in flight");
    };
    if let Err(e) = application.run_until_stopped(shutdown).await {
        error!(error = %e, "HTTP server failed");
    }
    info!("stopped; unfinished runs resume on the next start");
    Ok(0)
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
