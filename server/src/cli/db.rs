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
    local: Option<LocalDb>,
}

impl Database {
    pub async fn open(args: &DbArgs, max_connections: u32) -> anyhow::Result<Self> {
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

    pub async fn close(self) {
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
