//! The commands of the `groundwork` binary: the clap [`Cli`] and [`Command`] types and their dispatch,
//! one module per command group.

mod admin;
mod bench;
mod db;
mod demo;
mod imagery;
mod labels;
mod model;
mod outbound;
mod serve;
mod worker;

use clap::{Parser, Subcommand};
use groundwork_server::telemetry::{self, LogFormat};

/// Groundwork: Earth-observation projects on the OlmoEarth foundation model, end to end.
#[derive(Debug, Parser)]
#[command(name = "groundwork", version, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "GROUNDWORK_LOG_FORMAT",
        value_enum,
        default_value = "compact",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server, with in-process workers (one command is a whole installation).
    Serve(serve::ServeArgs),
    /// Run a worker that serves its pool's queues.
    Worker(worker::WorkerArgs),
    /// Apply database migrations and exit.
    Migrate(db::DbArgs),
    /// Start (or find) the local PostgreSQL cluster and print its URL.
    DevDb(db::DbArgs),
    /// OlmoEarth models: fetch checkpoints, inspect them, compute embeddings.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Imagery acquisition from STAC catalogues.
    #[command(subcommand)]
    Imagery(imagery::ImageryCommand),
    /// Labels: import and export GeoJSON or CSV files.
    #[command(subcommand)]
    Labels(labels::LabelsCommand),
    /// The whole pipeline on the offline demo scene: acquire, label, train, evaluate, predict and
    /// publish a land-cover map, then serve it (no configuration needed).
    Demo(demo::DemoArgs),
    /// Generate the offline demo catalogue (COGs + STAC items + ground truth).
    DemoData(imagery::DemoDataArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Accounts: users, organisations, members, API and worker tokens.
    Admin(admin::AdminArgs),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve::serve(a).await,
        Command::Worker(a) => worker::worker(a).await,
        Command::Migrate(a) => db::migrate(a).await,
        Command::DevDb(a) => db::dev_db(a).await,
        Command::Model(c) => model::run(c).await,
        Command::Imagery(c) => imagery::run_imagery(c).await,
        Command::Labels(c) => labels::run(c).await,
        Command::Demo(a) => demo::demo(a).await,
        Command::DemoData(a) => imagery::run_demo_data(a).await,
        Command::Admin(a) => admin::admin(a).await,
        Command::Bench(c) => bench::bench(c).await,
    }
}

/// Parses the command line, sets up logging and runs the command; errors are printed to standard error.
pub async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
