//! PostgreSQL access for Groundwork: the connection pool, migrations ([`migrate`], [`ready`]), the
//! zero-setup local cluster ([`devdb`]), the test harness (`testing`, with the `testing` feature), the domain queries
//! ([`projects`], [`windows`], [`labels`] with the pure window [`sampling`], [`suggestions`], [`models`], [`outputs`]
//! with their share links ([`shares`]) and change maps ([`changes`]), [`workers`], [`accounts`], [`audit`]) and the job system over apalis ([`jobs`]).
//!
//! PostgreSQL is the single source of truth. apalis carries dispatch messages; the `step` table carries
//! the state users see and the job system's guarantees (`docs/state_machine.md`).
#![warn(missing_docs)]

pub mod accounts;
pub mod assessments;
pub mod audit;
pub mod changes;
pub mod devdb;
mod error;
pub mod jobs;
pub mod labels;
pub mod maintenance;
pub mod models;
pub mod outputs;
pub mod projects;
pub mod sampling;
pub mod schedules;
pub mod shares;
pub mod suggestions;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod usage;
pub mod webhooks;
pub mod windows;
pub mod workers;

pub use error::{Error, Result};
pub use sqlx::{PgPool, Postgres, Transaction};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// Our own migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The default organisation, made by the first migration: `POST /api/v1/setup` makes its first owner,
/// and `serve`'s in-process workers and tokenless workers belong to it. It cannot be deleted.
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
