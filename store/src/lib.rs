//! PostgreSQL access for Groundwork: the connection pool, migrations, the zero-setup local cluster,
//! domain queries (projects, runs, steps, workers) and the job seam over apalis.
//!
//! PostgreSQL is the single source of truth (DESIGN.md §5). apalis carries dispatch messages; the
//! `step` table carries the state users see and the guarantees of DESIGN.md §4.
#![warn(missing_docs)]

pub mod accounts;
pub mod audit;
pub mod devdb;
mod error;
pub mod jobs;
pub mod labels;
pub mod models;
pub mod outputs;
pub mod projects;
pub mod sampling;
pub mod testing;
pub mod windows;
pub mod workers;

pub use error::{Error, Result};
pub use sqlx::PgPool;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// Our own migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The organisation every row belongs to until accounts exist.
pub const DEFAULT_ORG_ID: uuid::Uuid = uuid::Uuid::from_u128(1);

/// Opens a pool on `url`. The URL is never echoed back in errors (it may hold a password).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url).map_err(|_| Error::InvalidDatabaseUrl)?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(15))
        .connect_with(options)
        .await
        .map_err(Error::Connect)?;
    Ok(pool)
}

/// Applies apalis's migrations (schema `apalis`) and ours. Idempotent.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    apalis_postgres::PostgresStorage::setup(pool)
        .await
        .map_err(|e| Error::Migrate(e.to_string()))?;
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| Error::Migrate(e.to_string()))?;
    Ok(())
}

/// Whether the database answers and every migration we ship has been applied.
pub async fn ready(pool: &PgPool) -> Result<bool> {
    let applied: Vec<i64> =
        sqlx::query_scalar("select version from _sqlx_migrations where success")
            .fetch_all(pool)
            .await?;
    Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
}
