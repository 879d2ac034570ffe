//! `groundwork worker`, and the worker settings `serve` and `demo` share.

use super::db::{Database, DbArgs};
use clap::Args;
use groundwork_server::objects;
use groundwork_worker::{Registry, Worker, WorkerConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct WorkerOptions {
    /// Pool to join (default: `gpu` when a GPU is found, else `cpu`).
    #[arg(long, env = "GROUNDWORK_POOL")]
    pub pool: Option<String>,
    /// Queues to serve, comma-separated (default: `gpu,cpu` with a GPU, else `cpu`).
    #[arg(long, env = "GROUNDWORK_QUEUES", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Steps each worker runs at once.
    #[arg(long, env = "GROUNDWORK_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,
    /// Dispatch messages each slot fetches per poll. 1 holds nothing back; more saves database round
    /// trips when steps are short (a held message not reached within 15 s is re-dispatched).
    #[arg(long, env = "GROUNDWORK_PREFETCH", default_value_t = groundwork_worker::WorkerConfig::DEFAULT_PREFETCH)]
    pub prefetch: usize,
    /// Lease length in seconds: a worker silent this long is presumed gone and its steps re-queued.
    #[arg(long, env = "GROUNDWORK_LEASE_SECS", default_value_t = 20)]
    pub lease_secs: u64,
    /// Heartbeat period in milliseconds (progress, cancels, admin state).
    #[arg(long, env = "GROUNDWORK_HEARTBEAT_MS", default_value_t = 2000)]
    pub heartbeat_ms: u64,
    /// Worker name shown to admins (default: host and process id).
    #[arg(long, env = "GROUNDWORK_WORKER_NAME")]
    pub name: Option<String>,
    /// Object store: file:///path or s3://bucket (endpoint and credentials from AWS_* variables).
    /// Default: .groundwork/objects under the working directory.
    #[arg(long, env = "GROUNDWORK_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// Root of the OlmoEarth checkpoints `model fetch` downloads; training starts from them.
    #[arg(
        long,
        env = "GROUNDWORK_MODEL_DIR",
        default_value = "./.groundwork/models"
    )]
    pub model_dir: PathBuf,
    #[command(flatten)]
    pub outbound: super::outbound::OutboundOptions,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    worker: WorkerOptions,
    /// Worker token (from `groundwork admin create-worker-token` or the API): the worker joins the
    /// token's organisation. Needed once any worker token exists; before that, a worker without one
    /// joins the default organisation.
    #[arg(long, env = "GROUNDWORK_WORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Join a server over HTTPS instead of the database (`https://groundwork.example.org`): the
    /// worker then needs only `--token`, and reads and writes objects through the server unless
    /// `--object-store` is given. Plain `http://` is accepted only for this machine.
    #[arg(long, env = "GROUNDWORK_SERVER")]
    server: Option<String>,
}

pub fn worker_config(o: &WorkerOptions) -> anyhow::Result<WorkerConfig> {
    let mut c = settings(o)?;
    c.objects = Some(objects::open(
        &o.object_store.clone().unwrap_or_else(objects::default_url),
    )?);
    Ok(c)
}

/// The worker settings of `o` without an object store.
fn settings(o: &WorkerOptions) -> anyhow::Result<WorkerConfig> {
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
    c.outbound = o.outbound.policy()?;
    Ok(c)
}

/// `groundwork worker --server …`: joins over the worker API with only a token.
async fn remote_worker(args: WorkerArgs, server: &str) -> anyhow::Result<()> {
    let token = args.token.clone().unwrap_or_default();
    let client = std::sync::Arc::new(groundwork_worker::remote::Client::new(server, &token)?);
    // Objects go through the server unless the worker was given a store of its own.
    let config = match args.worker.object_store {
        Some(_) => worker_config(&args.worker)?,
        None => settings(&args.worker)?,
    };
    let w = Worker::start_remote(client, config, Registry::builtin())
        .await
        .map_err(|e| e.context(format!("joining {server}")))?;
    println!("worker {} started", w.id());
    super::shutdown_signal().await;
    w.shutdown().await;
    Ok(())
}

/// `groundwork worker`.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    if let Some(server) = args.server.clone() {
        return remote_worker(args, &server).await;
    }
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
    super::shutdown_signal().await;
    w.shutdown().await;
    db.close().await;
    Ok(())
}
