//! `groundwork labels import|export`: label files into and out of a project, straight against the
//! database (the same checks and per-row error report as `POST /api/v1/projects/{id}/labels/import`).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use groundwork_server::api::labels::{Format, export_file, import_file};
use groundwork_store::devdb::LocalDb;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// `groundwork labels …`.
#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// Import a GeoJSON or CSV file of labels as a new label-set version; bad rows are reported and skipped.
    Import(ImportArgs),
    /// Export a version of a project's labels as GeoJSON or CSV.
    Export(ExportArgs),
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DbOptions {
    /// PostgreSQL URL. Without it, the local cluster in `<data-dir>/pg` is used (started if needed).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Folder for local state.
    #[arg(long, env = "GROUNDWORK_DATA_DIR", default_value = ".groundwork")]
    pub data_dir: PathBuf,
    /// Organisation the project belongs to (default: the default organisation).
    #[arg(long, env = "GROUNDWORK_ORG")]
    pub org: Option<Uuid>,
}

/// `groundwork labels import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    db: DbOptions,
    /// Project id.
    #[arg(long)]
    project: Uuid,
    /// GeoJSON FeatureCollection (properties `class` or `value`) or CSV (`lon,lat,class` or `lon,lat,value`).
    file: PathBuf,
    /// File format (default: from the extension, `.csv` is CSV, anything else GeoJSON).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Make a version holding only this file's labels (default: add to the current ones).
    #[arg(long)]
    replace: bool,
}

/// `groundwork labels export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    db: DbOptions,
    /// Project id.
    #[arg(long)]
    project: Uuid,
    /// File format.
    #[arg(long, value_enum, default_value = "geojson")]
    format: Format,
    /// Label-set version (default: the latest).
    #[arg(long)]
    version: Option<i32>,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

async fn connect(o: &DbOptions) -> anyhow::Result<(groundwork_store::PgPool, Option<LocalDb>)> {
    let (url, local) = match &o.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let dir = o.data_dir.join("pg");
            let db = tokio::task::spawn_blocking(move || LocalDb::start(&dir)).await??;
            (db.url("postgres"), Some(db))
        }
    };
    let pool = groundwork_store::connect(&url, 4).await?;
    groundwork_store::migrate(&pool)
        .await
        .context("applying migrations")?;
    Ok((pool, local))
}

async fn close(pool: groundwork_store::PgPool, local: Option<LocalDb>) {
    pool.close().await;
    if let Some(local) = local.filter(LocalDb::started_here) {
        let _ = tokio::task::spawn_blocking(move || local.stop()).await;
    }
}

fn format_of_path(path: &Path) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
        _ => Format::Geojson,
    }
}

/// Runs a `labels` subcommand. Import prints its report (`{version, imported, unassigned, errors}`) as
/// JSON on standard output and fails only when no row could be imported.
pub async fn run(command: LabelsCommand) -> anyhow::Result<()> {
    match command {
        LabelsCommand::Import(a) => {
            let body =
                std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
            let format = a.format.unwrap_or_else(|| format_of_path(&a.file));
            let source = a
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (pool, local) = connect(&a.db).await?;
            let org = a.db.org.unwrap_or(groundwork_store::DEFAULT_ORG_ID);
            let result = import_file(
                &pool, org, a.project, &body, format, a.replace, &source, None,
            )
            .await;
            close(pool, local).await;
            match result {
                Ok(report) => {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                    for e in &report.errors {
                        eprintln!("row {}: {}", e.row, e.reason);
                    }
                    Ok(())
                }
                Err(e) => {
                    if let Some(rows) = e.details.as_array() {
                        for r in rows {
                            eprintln!("row {}: {}", r["row"], r["reason"].as_str().unwrap_or(""));
                        }
                    }
                    bail!("{}", e.message)
                }
            }
        }
        LabelsCommand::Export(a) => {
            let (pool, local) = connect(&a.db).await?;
            let org = a.db.org.unwrap_or(groundwork_store::DEFAULT_ORG_ID);
            let result = export_file(&pool, org, a.project, a.format, a.version).await;
            close(pool, local).await;
            let export = result.map_err(|e| anyhow::anyhow!("{}", e.message))?;
            match &a.out {
                Some(path) => std::fs::write(path, &export.body)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{}", export.body),
            }
            if export.skipped > 0 {
                eprintln!(
                    "{} polygon labels have no CSV form and were left out (export GeoJSON to keep them)",
                    export.skipped
                );
            }
            eprintln!("exported label-set version {}", export.version);
            Ok(())
        }
    }
}
