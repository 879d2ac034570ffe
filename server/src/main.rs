//! The `groundwork` binary: server, worker, database tools, and benchmarks.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use groundwork_server::telemetry::{self, LogFormat};
use groundwork_server::{AppState, bench, objects, router};
use groundwork_store::accounts;
use groundwork_store::audit::Who;
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
    /// Labels: import and export GeoJSON or CSV files.
    #[command(subcommand)]
    Labels(groundwork_server::labels_cli::LabelsCommand),
    /// The whole pipeline on the offline demo scene: acquire, label, train, evaluate, predict and
    /// publish a land-cover map, then serve it (no configuration needed).
    Demo(DemoArgs),
    /// Generate the offline demo catalogue (COGs + STAC items + ground truth).
    DemoData(groundwork_imagery::cli::DemoDataArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Accounts: users, organisations, members, API and worker tokens.
    Admin(AdminArgs),
}

#[derive(Debug, Args)]
struct AdminArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a user; the password is read from the first line of standard input.
    CreateUser {
        /// Email.
        #[arg(long)]
        email: String,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (read from standard input); their sessions end.
    SetPassword {
        /// Email.
        #[arg(long)]
        email: String,
        /// Read the password from standard input (required).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create an organisation.
    CreateOrg {
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Make this user its owner.
        #[arg(long)]
        owner_email: Option<String>,
    },
    /// Add a user to an organisation, or change their role there.
    AddMember {
        /// Organisation name.
        #[arg(long)]
        org: String,
        /// User email.
        #[arg(long)]
        email: String,
        /// owner, admin, member or viewer.
        #[arg(long)]
        role: String,
    },
    /// Create an API token for a member of an organisation and print it (shown once).
    CreateToken {
        /// Organisation name.
        #[arg(long)]
        org: String,
        /// User email.
        #[arg(long)]
        email: String,
        /// read or write.
        #[arg(long)]
        scope: String,
        /// Label.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// Create a worker token for an organisation and print it (shown once).
    CreateWorkerToken {
        /// Organisation name.
        #[arg(long)]
        org: String,
        /// Label.
        #[arg(long, default_value = "worker")]
        name: String,
    },
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
    /// Dispatch messages each slot fetches per poll. 1 holds nothing back; more saves database round
    /// trips when steps are short (a held message not reached within 15 s is re-dispatched).
    #[arg(long, env = "GROUNDWORK_PREFETCH", default_value_t = groundwork_worker::WorkerConfig::DEFAULT_PREFETCH)]
    prefetch: usize,
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
    /// Default: .groundwork/objects under the working directory.
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
    /// Mark the session cookie `Secure`, so browsers send it over HTTPS only. Turn this on whenever
    /// users reach the server through HTTPS (a TLS-terminating proxy); leave it off for plain
    /// `http://127.0.0.1`, where a `Secure` cookie would never come back. The variable takes
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    #[arg(long, env = "GROUNDWORK_SECURE_COOKIES", value_parser = clap::builder::BoolishValueParser::new())]
    secure_cookies: bool,
    /// XYZ raster tile template (`https://…/{z}/{x}/{y}.png`) drawn under the web maps; without one
    /// the maps draw a plain background and need no network.
    #[arg(long, env = "GROUNDWORK_BASEMAP_URL")]
    basemap_url: Option<String>,
    #[command(flatten)]
    worker: WorkerOptions,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// PostgreSQL URL. Without it, a private cluster is started in `<demo-dir>/pg`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Folder of the demo's own state: catalogue, database cluster, objects.
    #[arg(long, env = "GROUNDWORK_DEMO_DIR", default_value = ".groundwork/demo")]
    demo_dir: PathBuf,
    /// Address to serve the API, the web UI and the demo STAC API on.
    #[arg(long, env = "GROUNDWORK_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Stop when the demo is done instead of serving the map until interrupted.
    #[arg(long)]
    exit: bool,
    /// XYZ raster tile template (`https://…/{z}/{x}/{y}.png`) drawn under the web maps; without one
    /// the maps draw a plain background and need no network.
    #[arg(long, env = "GROUNDWORK_BASEMAP_URL")]
    basemap_url: Option<String>,
    /// Training epochs.
    #[arg(long, default_value_t = groundwork_server::demo::DemoRun::default().epochs)]
    epochs: usize,
    /// Point labels sampled per class from the ground truth.
    #[arg(long, default_value_t = groundwork_server::demo::DemoRun::default().labels_per_class)]
    labels_per_class: usize,
    /// Side of the demo scene in 10 m pixels (a multiple of 64; 512 = 64 windows).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(128..=2048))]
    scene_px: u32,
    /// Encoder patch size (1–8).
    #[arg(long, default_value_t = groundwork_server::demo::DemoRun::default().patch_size)]
    patch_size: i32,
    /// Root of downloaded OlmoEarth checkpoints (`model fetch`); without one, training starts from
    /// random weights and says so.
    #[arg(
        long,
        env = "GROUNDWORK_MODEL_DIR",
        default_value = "./.groundwork/models"
    )]
    model_dir: PathBuf,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    worker: WorkerOptions,
    /// Worker token (from `groundwork admin create-worker-token` or the API): the worker joins the
    /// token's organisation. Needed once any worker token exists; before that, a worker without one
    /// joins the default organisation.
    #[arg(long, env = "GROUNDWORK_WORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
    c.prefetch = o.prefetch.clamp(1, 64);
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
    let mut config = config;
    config.in_process = true;
    for _ in 0..args.local_workers {
        workers.push(Worker::start(db.pool.clone(), config.clone(), Registry::builtin()).await?);
    }
    let mut state = AppState::new(db.pool.clone()).with_basemap_url(args.basemap_url.as_deref());
    state.max_aoi_km2 = args.max_aoi_km2;
    state.secure_cookies = args.secure_cookies;
    state.objects.clone_from(&config.objects);
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
    // The peer address feeds the per-address sign-in limit and the audit log.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    info!("shutting down");
    for w in workers {
        w.shutdown().await;
    }
    db.close().await;
    Ok(())
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    use groundwork_server::demo as d;
    let started = std::time::Instant::now();
    let opts = d::DemoRun {
        epochs: args.epochs.clamp(1, 500),
        labels_per_class: args.labels_per_class.max(1),
        patch_size: args.patch_size,
        data: groundwork_imagery::DemoOptions {
            size: usize::try_from(args.scene_px / 64 * 64).unwrap_or(512),
            ..groundwork_imagery::DemoOptions::default()
        },
        ..d::DemoRun::default()
    };
    std::fs::create_dir_all(&args.demo_dir)
        .with_context(|| format!("creating {}", args.demo_dir.display()))?;
    let data_dir = args.demo_dir.join("data");
    eprintln!("generating the demo scene in {}", data_dir.display());
    d::prepare_data(&data_dir, &opts.data).await?;
    let db = Database::open(
        &DbArgs {
            database_url: args.database_url.clone(),
            data_dir: args.demo_dir.clone(),
        },
        20,
    )
    .await?;
    let objects_dir = std::path::absolute(args.demo_dir.join("objects"))?;
    std::fs::create_dir_all(&objects_dir)?;
    let objects = objects::open(&format!("file://{}", objects_dir.display()))?;
    let mut config = worker_config(&WorkerOptions {
        pool: None,
        queues: Vec::new(),
        concurrency: 2,
        prefetch: groundwork_worker::WorkerConfig::DEFAULT_PREFETCH,
        lease_secs: 20,
        heartbeat_ms: 1000,
        name: Some("demo".into()),
        object_store: Some(format!("file://{}", objects_dir.display())),
        model_dir: args.model_dir.clone(),
    })?;
    config.in_process = true;
    let worker = Worker::start(db.pool.clone(), config, Registry::builtin()).await?;
    let mut state = AppState::new(db.pool.clone()).with_basemap_url(args.basemap_url.as_deref());
    state.objects = Some(objects.clone());
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (choose another with --bind)",
                args.bind
            )
        })?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = d::app(state, &data_dir, &base)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            tokio::select! {
                _ = stop_rx => {}
                () = shutdown_signal() => {}
            }
        })
        .await
    });
    eprintln!("Groundwork is running at {base}/");
    let result = d::run(
        &db.pool,
        objects,
        &base,
        &data_dir,
        &opts,
        &mut |line: &str| eprintln!("{line}"),
    )
    .await;
    let outcome = match result {
        Ok((summary, login)) => {
            eprintln!();
            eprintln!(
                "test-split pixel accuracy of the map: {:.3} (majority class everywhere: {:.3})",
                summary.accuracy, summary.majority_accuracy
            );
            let fmt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
            eprintln!(
                "frozen-encoder baseline on the same pixels: {}",
                fmt(summary.baseline_accuracy)
            );
            eprintln!(
                "on the labelled test pixels (evaluation report): fine-tuned model {}, baseline {}",
                fmt(summary.model_label_accuracy),
                fmt(summary.baseline_label_accuracy)
            );
            eprintln!("map: {}", summary.map_url);
            if !args.exit {
                eprintln!(
                    "sign in as {} with the password {} (new on every demo run); Ctrl-C stops the server",
                    login.email, login.password
                );
            }
            println!(
                "{}",
                serde_json::json!({
                    "accuracy": summary.accuracy,
                    "baseline_accuracy": summary.baseline_accuracy,
                    "majority_accuracy": summary.majority_accuracy,
                    "map_url": summary.map_url,
                    "seconds": started.elapsed().as_secs_f64(),
                })
            );
            Ok(())
        }
        Err(e) => Err(e),
    };
    if outcome.is_ok() && !args.exit {
        shutdown_signal().await;
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    worker.shutdown().await;
    db.close().await;
    outcome
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let db = Database::open(&args.db, 10).await?;
    let mut config = worker_config(&args.worker)?;
    config.token = args.token.clone();
    let w = match Worker::start(db.pool.clone(), config, Registry::builtin()).await {
        Ok(w) => w,
        Err(e) => {
            db.close().await;
            return Err(e.context("registering the worker"));
        }
    };
    println!("worker {} started", w.id());
    shutdown_signal().await;
    w.shutdown().await;
    db.close().await;
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    accounts::validate_password(&password).map_err(anyhow::Error::msg)?;
    Ok(password)
}

async fn org_named(pool: &groundwork_store::PgPool, name: &str) -> anyhow::Result<accounts::Org> {
    accounts::org_by_name(pool, name)
        .await?
        .with_context(|| format!("no organisation is named {name:?}"))
}

async fn user_with(pool: &groundwork_store::PgPool, email: &str) -> anyhow::Result<accounts::User> {
    accounts::user_by_email(pool, email)
        .await?
        .with_context(|| format!("no user has the email {email:?}"))
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let db = Database::open(&args.db, 2).await?;
    let result = admin_command(&db.pool, args.command).await;
    db.close().await;
    result
}

async fn admin_command(
    pool: &groundwork_store::PgPool,
    command: AdminCommand,
) -> anyhow::Result<()> {
    let who = Who::cli();
    match command {
        AdminCommand::CreateUser {
            email,
            password_stdin,
        } => {
            anyhow::ensure!(
                password_stdin,
                "pass --password-stdin and the password on standard input"
            );
            let email = accounts::validate_email(&email).map_err(anyhow::Error::msg)?;
            let password = read_password()?;
            let user = accounts::create_user(pool, &who, &email, &password).await?;
            println!("user {} created ({})", user.email, user.id);
        }
        AdminCommand::SetPassword {
            email,
            password_stdin,
        } => {
            anyhow::ensure!(
                password_stdin,
                "pass --password-stdin and the password on standard input"
            );
            let user = user_with(pool, &email).await?;
            let password = read_password()?;
            accounts::set_password(pool, &who, user.id, &password, None).await?;
            println!("password of {} set; their sessions have ended", user.email);
        }
        AdminCommand::CreateOrg { name, owner_email } => {
            let name = accounts::validate_org_name(&name).map_err(anyhow::Error::msg)?;
            let owner = match owner_email {
                Some(e) => Some(user_with(pool, &e).await?.id),
                None => None,
            };
            let org = accounts::create_org(pool, &who, &name, owner).await?;
            println!("organisation {} created ({})", org.name, org.id);
        }
        AdminCommand::AddMember { org, email, role } => {
            let role: accounts::Role = role.parse().map_err(anyhow::Error::msg)?;
            let org = org_named(pool, &org).await?;
            let user = user_with(pool, &email).await?;
            let member = match accounts::role_in(pool, org.id, user.id).await? {
                Some(_) => accounts::set_role(pool, &who, org.id, user.id, role).await?,
                None => accounts::add_member(pool, &who, org.id, user.id, role).await?,
            };
            println!("{} is {} of {}", member.email, member.role, org.name);
        }
        AdminCommand::CreateToken {
            org,
            email,
            scope,
            name,
        } => {
            let scope: accounts::Scope = scope.parse().map_err(anyhow::Error::msg)?;
            let org = org_named(pool, &org).await?;
            let user = user_with(pool, &email).await?;
            let (token, _) =
                accounts::create_api_token(pool, &who, user.id, org.id, &name, scope, None).await?;
            println!("{token}");
        }
        AdminCommand::CreateWorkerToken { org, name } => {
            let org = org_named(pool, &org).await?;
            let (token, _) = accounts::create_worker_token(pool, &who, org.id, &name).await?;
            println!("{token}");
        }
    }
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
        Command::Labels(c) => groundwork_server::labels_cli::run(c).await,
        Command::Demo(a) => demo(a).await,
        Command::DemoData(a) => groundwork_imagery::cli::run_demo_data(a).await,
        Command::Admin(a) => admin(a).await,
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
