//! `groundwork migrate` and `groundwork dev-db`, and the database connection every command opens.

use anyhow::Context;
use clap::Args;
use groundwork_store::devdb::LocalDb;
use std::path::PathBuf;
use tracing::{info, warn};

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// PostgreSQL URL. Without it, a private cluster is started from the machine's PostgreSQL binaries
    /// in `<data-dir>/pg` (and stopped again on exit).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Folder for local state (database cluster, objects).
    #[arg(long, env = "GROUNDWORK_DATA_DIR", default_value = ".groundwork")]
    pub data_dir: PathBuf,
}

/// A database connection, with the local cluster it may have started.
pub struct Database {
    pub pool: groundwork_store::PgPool,
    local: Option<std::sync::Arc<LocalDb>>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

/// How often the watchdog looks at a local cluster this process started.
const WATCHDOG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts `db` again whenever its server is found stopped (killed, crashed): the pools reconnect by
/// themselves, so the installation comes back without a restart.
fn watchdog(db: std::sync::Arc<LocalDb>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WATCHDOG_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let db = db.clone();
            match tokio::task::spawn_blocking(move || db.ensure_running()).await {
                Ok(Ok(true)) => warn!("the local PostgreSQL had stopped; it was started again"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, "the local PostgreSQL is down and could not be started")
                }
                Err(e) => warn!(error = %e, "the local PostgreSQL watchdog failed"),
            }
        }
    })
}

impl Database {
    pub async fn open(args: &DbArgs, max_connections: u32) -> anyhow::Result<Self> {
        let (url, local) = match &args.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let dir = args.data_dir.join("pg");
                let db = tokio::task::spawn_blocking(move || LocalDb::start(&dir)).await??;
                info!(url = %db.url("postgres"), started = db.started_here(), "local PostgreSQL");
                (db.url("postgres"), Some(std::sync::Arc::new(db)))
            }
        };
        let pool = groundwork_store::connect(&url, max_connections).await?;
        groundwork_store::migrate(&pool)
            .await
            .context("applying migrations")?;
        let watchdog = local
            .as_ref()
            .filter(|l| l.started_here())
            .map(|l| watchdog(l.clone()));
        Ok(Self {
            pool,
            local,
            watchdog,
        })
    }

    pub async fn close(self) {
        if let Some(w) = &self.watchdog {
            w.abort();
        }
        self.pool.close().await;
        if let Some(local) = self.local.filter(|l| l.started_here()) {
            match tokio::task::spawn_blocking(move || local.stop()).await {
                Ok(Ok(())) => info!("local PostgreSQL stopped"),
                Ok(Err(e)) => warn!(error = %e, "could not stop the local PostgreSQL"),
                Err(e) => warn!(error = %e, "could not stop the local PostgreSQL"),
            }
        }
    }
}

/// `groundwork migrate`.
pub async fn migrate(args: DbArgs) -> anyhow::Result<()> {
    let db = Database::open(&args, 2).await?;
    println!("migrations applied");
    db.close().await;
    Ok(())
}

/// `groundwork dev-db`.
pub async fn dev_db(args: DbArgs) -> anyhow::Result<()> {
    if let Some(url) = args.database_url {
        println!("{url}");
        return Ok(());
    }
    let dir = args.data_dir.join("pg");
    let db = tokio::task::spawn_blocking(move || LocalDb::start(&dir)).await??;
    println!("{}", db.url("postgres"));
    Ok(())
}
