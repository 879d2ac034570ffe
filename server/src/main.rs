//! The `groundwork` binary: server, worker, database tools, and benchmarks.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use groundwork_server::telemetry::{self, LogFormat};
use groundwork_server::{AppState, bench, objects, router};
use groundwork_store::devdb::LocalDb;
use groundwork_worker::{Registry, Worker, WorkerConfig};
use std::path::PathBuf;
use std::time::Duration;
use tracing::{info, warn};

/// Groundwork: Earth-observation projects on the OlmoEarth foundation model, end to end.
#[derive(Debug, Parser)]
#[command(name = "groundwork", version, about, long_about = None)]
struct Cli {
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
    Serve(ServeArgs),
    /// Run a worker that serves its pool's queues.
    Worker(WorkerArgs),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Start (or find) the local PostgreSQL cluster and print its URL.
    DevDb(DbArgs),
    /// OlmoEarth models: fetch checkpoints, inspect them, compute embeddings.
    #[command(subcommand)]
    Model(olmoearth::cli::ModelCommand),
    /// Imagery acquisition from STAC catalogues.
    #[command(subcommand)]
    Imagery(groundwork_imagery::cli::ImageryCommand),
    /// Generate the offline demo catalogue (COGs + STAC items + ground truth).
    DemoData(groundwork_imagery::cli::DemoDataArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Job-system throughput against a raw SKIP LOCKED loop, and fan-out enqueue time.
    Queue(bench::QueueBench),
}

#[derive(Debug, Clone, Args)]
struct DbArgs {
    /// PostgreSQL URL. Without it, a private cluster is started from the machine's PostgreSQL binaries
    /// in `<data-dir>/pg` (and stopped again on exit).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Folder for local state (database cluster, objects).
    #[arg(long, env = "GROUNDWORK_DATA_DIR", default_value = ".groundwork")]
    data_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
struct WorkerOptions {
    /// Pool to join (default: `gpu` when a GPU is found, else `cpu`).
    #[arg(long, env = "GROUNDWORK_POOL")]
    pool: Option<String>,
    /// Queues to serve, comma-separated (default: `gpu,cpu` with a GPU, else `cpu`).
    #[arg(long, env = "GROUNDWORK_QUEUES", value_delimiter = ',')]
    queues: Vec<String>,
    /// Steps each worker runs at once.
    #[arg(long, env = "GROUNDWORK_CONCURRENCY", default_value_t = 2)]
    concurrency: usize,
    /// Lease length in seconds: a worker silent this long is presumed gone and its steps re-queued.
    #[arg(long, env = "GROUNDWORK_LEASE_SECS", default_value_t = 20)]
    lease_secs: u64,
    /// Heartbeat period in milliseconds (progress, cancels, admin state).
    #[arg(long, env = "GROUNDWORK_HEARTBEAT_MS", default_value_t = 2000)]
    heartbeat_ms: u64,
    /// Worker name shown to admins (default: host and process id).
    #[arg(long, env = "GROUNDWORK_WORKER_NAME")]
    name: Option<String>,
    /// Object store: file:///path or s3://bucket (endpoint and credentials from AWS_* variables).
    /// Default: file://<cwd>/.groundwork/objects.
    #[arg(long, env = "GROUNDWORK_OBJECT_STORE")]
    object_store: Option<String>,
    /// Root of the OlmoEarth checkpoints `model fetch` downloads; training starts from them.
    #[arg(
        long,
        env = "GROUNDWORK_MODEL_DIR",
        default_value = "./.groundwork/models"
    )]
    model_dir: PathBuf,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on.
    #[arg(long, env = "GROUNDWORK_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// In-process workers (0 for a server that only serves).
    #[arg(long, env = "GROUNDWORK_LOCAL_WORKERS", default_value_t = 1)]
    local_workers: usize,
    /// Largest AOI accepted, km².
    #[arg(long, env = "GROUNDWORK_MAX_AOI_KM2", default_value_t = 10_000.0)]
    max_aoi_km2: f64,
    /// Serve this demo catalogue (made by `groundwork demo-data`) as a STAC API under /demo/stac.
    #[arg(long, env = "GROUNDWORK_DEMO_DATA")]
    demo_data: Option<PathBuf>,
    #[command(flatten)]
    worker: WorkerOptions,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    worker: WorkerOptions,
}

/// A database connection, with the local cluster it may have started.
struct Database {
    pool: groundwork_store::PgPool,
    local: Option<LocalDb>,
}

impl Database {
    async fn open(args: &DbArgs, max_connections: u32) -> anyhow::Result<Self> {
        let (url, local) = match &args.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let dir = args.data_dir.join("pg");
                let db = tokio::task::spawn_blocking(move || LocalDb::start(&dir)).await??;
                info!(url = %db.url("postgres"), started = db.started_here(), "local PostgreSQL");
                (db.url("postgres"), Some(db))
            }
        };
        let pool = groundwork_store::connect(&url, max_connections).await?;
        groundwork_store::migrate(&pool)
            .await
            .context("applying migrations")?;
        Ok(Self { pool, local })
    }

    async fn close(self) {
        self.pool.close().await;
        if let Some(local) = self.local.filter(LocalDb::started_here) {
            match tokio::task::spawn_blocking(move || local.stop()).await {
                Ok(Ok(())) => info!("local PostgreSQL stopped"),
                Ok(Err(e)) => warn!(error = %e, "could not stop the local PostgreSQL"),
                Err(e) => warn!(error = %e, "could not stop the local PostgreSQL"),
            }
        }
    }
}

fn worker_config(o: &WorkerOptions) -> anyhow::Result<WorkerConfig> {
    let capabilities = groundwork_worker::detect_capabilities();
    let pool = o
        .pool
        .clone()
        .unwrap_or_else(|| groundwork_worker::default_pool(&capabilities).to_owned());
    let queues = if o.queues.is_empty() {
        if capabilities["gpu_name"].is_string() {
            vec!["gpu".into(), "cpu".into()]
        } else {
            vec!["cpu".into()]
        }
    } else {
        o.queues.clone()
    };
    let mut c = WorkerConfig::new(&pool, queues);
    c.capabilities = capabilities;
    c.concurrency = o.concurrency.max(1);
    c.lease = Duration::from_secs(o.lease_secs.max(1));
    c.heartbeat = Duration::from_millis(o.heartbeat_ms.clamp(100, 60_000));
    if let Some(name) = &o.name {
        c.name.clone_from(name);
    }
    c.model_dir = Some(o.model_dir.clone());
    c.objects = Some(objects::open(
        &o.object_store.clone().unwrap_or_else(objects::default_url),
    )?);
    Ok(c)
}

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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = worker_config(&args.worker)?;
    let db = Database::open(&args.db, 30).await?;
    let mut workers = Vec::new();
    for _ in 0..args.local_workers {
        workers.push(Worker::start(db.pool.clone(), config.clone(), Registry::builtin()).await?);
    }
    let mut state = AppState::new(db.pool.clone());
    state.max_aoi_km2 = args.max_aoi_km2;
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let addr = listener.local_addr()?;
    let mut app = router(state);
    if let Some(dir) = &args.demo_data {
        let demo = groundwork_imagery::demo_stac_router(dir, &format!("http://{addr}/demo/stac"))
            .with_context(|| format!("serving the demo catalogue in {}", dir.display()))?;
        app = app.nest("/demo/stac", demo);
        println!("Demo STAC API at http://{addr}/demo/stac");
    }
    println!(
        "Groundwork is running at http://{addr}/ (API: http://{addr}/api/v1, OpenAPI: http://{addr}/api/openapi.json)"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    info!("shutting down");
    for w in workers {
        w.shutdown().await;
    }
    db.close().await;
    Ok(())
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let db = Database::open(&args.db, 10).await?;
    let w = Worker::start(
        db.pool.clone(),
        worker_config(&args.worker)?,
        Registry::builtin(),
    )
    .await?;
    println!("worker {} started", w.id());
    shutdown_signal().await;
    w.shutdown().await;
    db.close().await;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Worker(a) => worker(a).await,
        Command::Migrate(a) => {
            let db = Database::open(&a, 2).await?;
            println!("migrations applied");
            db.close().await;
            Ok(())
        }
        Command::DevDb(a) => {
            if let Some(url) = a.database_url {
                println!("{url}");
                return Ok(());
            }
            let dir = a.data_dir.join("pg");
            let db = tokio::task::spawn_blocking(move || LocalDb::start(&dir)).await??;
            println!("{}", db.url("postgres"));
            Ok(())
        }
        Command::Model(c) => olmoearth::cli::run(c).await,
        Command::Imagery(c) => groundwork_imagery::cli::run_imagery(c).await,
        Command::DemoData(a) => groundwork_imagery::cli::run_demo_data(a).await,
        Command::Bench(BenchCommand::Queue(b)) => {
            let args = DbArgs {
                database_url: std::env::var("DATABASE_URL").ok(),
                data_dir: ".groundwork".into(),
            };
            let db = Database::open(&args, 60).await?;
            let scratch = format!("gw_bench_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(sqlx::AssertSqlSafe(format!("create database {scratch}")))
                .execute(&db.pool)
                .await?;
            let url = (*db.pool.connect_options()).clone().database(&scratch);
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(80)
                .connect_with(url)
                .await?;
            groundwork_store::migrate(&pool).await?;
            let result = bench::run(&pool, &b).await;
            pool.close().await;
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database {scratch} with (force)"
            )))
            .execute(&db.pool)
            .await;
            db.close().await;
            result
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
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
