//! The `redis-autoscaler` binary: parse the command line, set up logging, run a command.

use std::process::ExitCode;

use clap::Parser;
use redis_autoscaler::cli::{self, Cli, Command};

/// Blocking threads run the store's calls, which take turns on its one connection anyway:
/// more of them only hold memory (tokio's default allows 512, and a storm made 300–500).
const BLOCKING_THREADS: usize = 16;

fn main() -> ExitCode {
    redis_autoscaler::memory::tune_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story; logs would only get in the way unless asked for.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    cli::init_tracing(cli.log_format, default_filter);
    if matches!(cli.command, Command::Serve { .. }) {
        // Each connection is a file descriptor: don't stop at the default soft limit of 1,024.
        redis_autoscaler::http::raise_open_files_limit();
    }
    match cli::run(cli).await {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
