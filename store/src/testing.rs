//! Test harness: a fresh, migrated database per test on a real PostgreSQL server — the one in
//! `DATABASE_URL` when set, else a private cluster started with the same launcher as `groundwork serve`
//! (shared by all test processes, in `$GROUNDWORK_TEST_PG_DIR` or the system temp directory).

use crate::devdb::LocalDb;
use crate::{Error, Result};
use sqlx::PgPool;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A throw-away database; dropped (forcefully) when this value is dropped.
#[derive(Debug)]
pub struct TestDb {
    /// Pool on the test database.
    pub pool: PgPool,
    /// URL of the test database.
    pub url: String,
    admin_url: String,
    name: String,
}

fn server_url() -> Result<String> {
    static URL: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Ok(url);
        }
        let dir = std::env::var_os("GROUNDWORK_TEST_PG_DIR").map_or_else(
            || std::env::temp_dir().join("groundwork-test-pg"),
            PathBuf::from,
        );
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // Several test binaries start at once: one of them initialises the cluster.
        let lock = std::fs::File::create(std::env::temp_dir().join("groundwork-test-pg.lock"))
            .map_err(|e| e.to_string())?;
        lock.lock().map_err(|e| e.to_string())?;
        let db = LocalDb::start_for_tests(&dir).map_err(|e| e.to_string())?;
        Ok(db.url("postgres"))
    })
    .clone()
    .map_err(Error::LocalDatabase)
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[host_start..].find('/') {
        Some(i) => &base[..host_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl TestDb {
    /// Creates and migrates a fresh database.
    pub async fn new() -> Result<Self> {
        let admin_url = server_url()?;
        let admin = crate::connect(&admin_url, 1).await?;
        let name = format!("gw_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let url = with_database(&admin_url, &name);
        let pool = crate::connect(&url, 20).await?;
        crate::migrate(&pool).await?;
        Ok(Self {
            pool,
            url,
            admin_url,
            name,
        })
    }

    /// A database outage, as a restart of the server looks to its clients: every open connection to
    /// this database is cut, and new ones are refused until `length` has passed.
    pub async fn outage(&self, length: std::time::Duration) -> Result<()> {
        let admin = crate::connect(&self.admin_url, 1).await?;
        let name = &self.name;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "alter database {name} with allow_connections false"
        )))
        .execute(&admin)
        .await?;
        sqlx::query(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
        )
        .bind(name)
        .execute(&admin)
        .await?;
        tokio::time::sleep(length).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "alter database {name} with allow_connections true"
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok(())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = crate::connect(&admin_url, 1).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "drop database if exists {name} with (force)"
                    )))
                    .execute(&admin)
                    .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5/postgres", "x"),
            "postgres://u@h:5/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5/db?sslmode=disable", "x"),
            "postgres://u@h:5/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
    }
}
