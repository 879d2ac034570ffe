//! A project's windows (grid cells of its AOI) and their acquisition status.

use crate::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// A window to record (the imagery crate plans them; the store persists them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewWindow {
    /// Stable grid id.
    pub id: String,
    /// EPSG code of its UTM zone.
    pub epsg: i32,
    /// CRS as WKT or `EPSG:n`.
    pub crs: String,
    /// Pixels per side.
    pub size: i32,
    /// Metres per pixel.
    pub resolution: f64,
    /// Grid column.
    pub column: i64,
    /// Grid row.
    pub row: i64,
    /// GDAL geotransform.
    pub geotransform: Value,
    /// `[minx, miny, maxx, maxy]` in the UTM CRS.
    pub utm_bounds: Value,
    /// `[west, south, east, north]` in EPSG:4326.
    pub bbox: [f64; 4],
    /// Footprint polygon in EPSG:4326 (GeoJSON).
    pub geometry: Value,
}

/// A stored window.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Window {
    /// Stable grid id.
    pub id: String,
    /// EPSG code.
    pub epsg: i32,
    /// Pixels per side.
    pub size: i32,
    /// Footprint (GeoJSON, EPSG:4326).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub geometry: Value,
    /// `pending | acquired | quarantined`.
    pub status: String,
    /// Why it was quarantined.
    pub reason: Option<String>,
    /// Scene ids per modality and time bin.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub scenes: Value,
    /// Object keys of its tensors.
    pub objects: Vec<String>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Records windows (idempotent: existing ones keep their status).
pub async fn upsert(pool: &PgPool, project_id: Uuid, windows: &[NewWindow]) -> Result<()> {
    for chunk in windows.chunks(5000) {
        sqlx::query(
            "insert into project_window (project_id, id, epsg, crs, size, resolution, grid_column, grid_row, geotransform, \
                 utm_bounds, bbox_west, bbox_south, bbox_east, bbox_north, geometry) \
             select $1, u.* from unnest($2::text[], $3::int[], $4::text[], $5::int[], $6::float8[], $7::int8[], $8::int8[], \
                 $9::jsonb[], $10::jsonb[], $11::float8[], $12::float8[], $13::float8[], $14::float8[], $15::jsonb[]) as u \
             on conflict (project_id, id) do nothing",
        )
        .bind(project_id)
        .bind(chunk.iter().map(|w| w.id.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.epsg).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.crs.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.size).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.resolution).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.column).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.row).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.geotransform.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.utm_bounds.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.bbox[0]).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.bbox[1]).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.bbox[2]).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.bbox[3]).collect::<Vec<_>>())
        .bind(chunk.iter().map(|w| w.geometry.clone()).collect::<Vec<_>>())
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// What acquisition made of one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Window id.
    pub id: String,
    /// `acquired` or `quarantined`.
    pub status: String,
    /// Quarantine reason.
    pub reason: Option<String>,
    /// Scene ids per modality and bin.
    pub scenes: Value,
    /// Object keys written.
    pub objects: Vec<String>,
}

/// Records acquisition outcomes. A window acquired before keeps its imagery when a later acquisition
/// fails for it (a flaky catalogue never downgrades a good window), unless that imagery was stale (the
/// project changed since). Every window recorded is no longer stale.
pub async fn record_outcomes<'e>(
    db: impl sqlx::PgExecutor<'e>,
    project_id: Uuid,
    step_id: Uuid,
    outcomes: &[Outcome],
) -> Result<()> {
    sqlx::query(
        "update project_window w set status = u.status, reason = u.reason, scenes = u.scenes, \
             objects = coalesce((select array_agg(x) from jsonb_array_elements_text(u.objects) x), '{}'), \
             step_id = $2, stale = false, updated_at = now() \
         from unnest($3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) as u(id, status, reason, scenes, objects) \
         where w.project_id = $1 and w.id = u.id and (u.status = 'acquired' or w.status <> 'acquired' or w.stale)",
    )
    .bind(project_id)
    .bind(step_id)
    .bind(outcomes.iter().map(|o| o.id.clone()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.status.clone()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.reason.clone()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.scenes.clone()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| serde_json::json!(o.objects)).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// The object keys each of `ids` was given by the acquisition that last acquired it, and that
/// acquisition's run.
pub async fn objects_of(
    pool: &PgPool,
    project_id: Uuid,
    ids: &[String],
) -> Result<std::collections::HashMap<String, (Vec<String>, Option<Uuid>)>> {
    let rows: Vec<(String, Vec<String>, Option<Uuid>)> = sqlx::query_as(
        "select w.id, w.objects, s.run_id from project_window w left join step s on s.id = w.step_id \
         where w.project_id = $1 and w.id = any($2)",
    )
    .bind(project_id)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, objects, run)| (id, (objects, run)))
        .collect())
}

/// Window counts by status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    /// All windows.
    pub total: i64,
    /// Not yet acquired.
    pub pending: i64,
    /// Acquired.
    pub acquired: i64,
    /// Quarantined.
    pub quarantined: i64,
    /// Read but holding no imagery (no scene, or every pixel masked).
    pub empty: i64,
    /// Whose imagery is stale: the project's area, dates, modalities or window size changed since.
    pub stale: i64,
}

/// Why training and prediction refuse the project now: windows that hold imagery of settings it no
/// longer has (`None` when there are none).
pub async fn stale_refusal(pool: &PgPool, project_id: Uuid) -> Result<Option<String>> {
    let stale: i64 =
        sqlx::query_scalar("select count(*) from project_window where project_id = $1 and stale")
            .bind(project_id)
            .fetch_one(pool)
            .await?;
    Ok((stale > 0).then(|| {
        format!(
            "the project's area, dates, modalities or window size changed after its imagery was acquired \
             ({stale} window(s) hold imagery of the old settings): acquire imagery again first"
        )
    }))
}

/// Records a project's planned windows and retires the others (see [`upsert`] and
/// [`retire_unplanned`]).
pub async fn plan(pool: &PgPool, project_id: Uuid, windows: &[NewWindow]) -> Result<()> {
    upsert(pool, project_id, windows).await?;
    let planned: Vec<String> = windows.iter().map(|w| w.id.clone()).collect();
    retire_unplanned(pool, project_id, &planned).await?;
    Ok(())
}

/// Windows of the last plan that are not in `planned` (the project's area or window size changed):
/// quarantined with the reason, and no longer stale. Returns how many.
pub async fn retire_unplanned(pool: &PgPool, project_id: Uuid, planned: &[String]) -> Result<u64> {
    Ok(sqlx::query(
        "update project_window set status = 'quarantined', stale = false, updated_at = now(), \
             reason = 'outside the project''s windows since its area or window size changed' \
         where project_id = $1 and not (id = any($2)) and (status <> 'quarantined' or stale)",
    )
    .bind(project_id)
    .bind(planned)
    .execute(pool)
    .await?
    .rows_affected())
}

/// The reason most of the project's windows of `status` give, with how many give it.
pub async fn most_common_reason(
    pool: &PgPool,
    project_id: Uuid,
    status: &str,
) -> Result<Option<(String, i64)>> {
    most_common_reason_in(pool, Of::Project(project_id), status).await
}

/// Whose windows: a project's (`project_window`) or a monitoring run's own (`run_window`).
#[derive(Debug, Clone, Copy)]
enum Of {
    Project(Uuid),
    Run(Uuid),
}

impl Of {
    /// The table and the column that names the owner, and the owner.
    fn table(self) -> (&'static str, &'static str, Uuid) {
        match self {
            Of::Project(id) => ("project_window", "project_id", id),
            Of::Run(id) => ("run_window", "run_id", id),
        }
    }
}

async fn most_common_reason_in(
    pool: &PgPool,
    of: Of,
    status: &str,
) -> Result<Option<(String, i64)>> {
    let (table, owner, id) = of.table();
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select reason, count(*) from {table} \
         where {owner} = $1 and status = $2 and reason is not null \
         group by reason order by count(*) desc, reason limit 1"
    )))
    .bind(id)
    .bind(status)
    .fetch_optional(pool)
    .await?)
}

/// Counts by status.
pub async fn counts(pool: &PgPool, project_id: Uuid) -> Result<Counts> {
    Ok(sqlx::query_as(
        "select count(*) as total, count(*) filter (where status = 'pending') as pending, \
             count(*) filter (where status = 'acquired') as acquired, \
             count(*) filter (where status = 'quarantined') as quarantined, \
             count(*) filter (where status = 'empty') as empty, \
             count(*) filter (where stale) as stale \
         from project_window where project_id = $1",
    )
    .bind(project_id)
    .fetch_one(pool)
    .await?)
}

/// Windows of a project in id order, after the cursor (a window id), optionally of one status.
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Window>> {
    list_in(pool, Of::Project(project_id), status, after, limit).await
}

async fn list_in(
    pool: &PgPool,
    of: Of,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Window>> {
    let (table, owner, id) = of.table();
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select id, epsg, size, geometry, status, reason, scenes, objects, updated_at from {table} \
         where {owner} = $1 and ($2::text is null or status = $2) and ($3::text is null or id > $3) order by id limit $4"
    )))
    .bind(id)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// An acquired window's place on the ground and the keys of its tensors (what imagery previews read).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AcquiredWindow {
    /// Window id.
    pub id: String,
    /// EPSG code of its UTM zone.
    pub epsg: i32,
    /// Pixels per side.
    pub size: i32,
    /// GDAL geotransform `[x_left, res, 0, y_top, 0, -res]`.
    pub geotransform: Value,
    /// West bound (EPSG:4326).
    pub bbox_west: f64,
    /// South bound.
    pub bbox_south: f64,
    /// East bound.
    pub bbox_east: f64,
    /// North bound.
    pub bbox_north: f64,
    /// Object keys of its tensors (empty for windows acquired before per-acquisition folders).
    pub objects: Vec<String>,
}

/// At most `limit` acquired windows whose EPSG:4326 bounds meet `bbox` (`[west, south, east, north]`),
/// in id order.
pub async fn acquired_in_bbox(
    pool: &PgPool,
    project_id: Uuid,
    bbox: [f64; 4],
    limit: i64,
) -> Result<Vec<AcquiredWindow>> {
    Ok(sqlx::query_as(
        "select id, epsg, size, geotransform, bbox_west, bbox_south, bbox_east, bbox_north, objects \
         from project_window where project_id = $1 and status = 'acquired' \
             and bbox_east >= $2 and bbox_west <= $4 and bbox_north >= $3 and bbox_south <= $5 \
         order by id limit $6",
    )
    .bind(project_id)
    .bind(bbox[0])
    .bind(bbox[1])
    .bind(bbox[2])
    .bind(bbox[3])
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// `[west, south, east, north]` (EPSG:4326) of the project's acquired windows; `None` when none is.
pub async fn acquired_bounds(pool: &PgPool, project_id: Uuid) -> Result<Option<[f64; 4]>> {
    let row: (Option<f64>, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "select min(bbox_west), min(bbox_south), max(bbox_east), max(bbox_north) \
         from project_window where project_id = $1 and status = 'acquired'",
    )
    .bind(project_id)
    .fetch_one(pool)
    .await?;
    Ok(match row {
        (Some(w), Some(s), Some(e), Some(n)) => Some([w, s, e, n]),
        _ => None,
    })
}

/// Records what a monitoring run's acquisition made of its windows (`run_window`: windows of another
/// period or area than the project's, owned by the run). `windows` gives each outcome's grid; an
/// outcome without one is skipped. As for the project's windows, a window the run acquired before
/// keeps its imagery when a retried acquisition fails for it.
pub async fn record_run_outcomes<'e>(
    db: impl sqlx::PgExecutor<'e>,
    project_id: Uuid,
    run_id: Uuid,
    step_id: Uuid,
    windows: &[NewWindow],
    outcomes: &[Outcome],
) -> Result<()> {
    let grid: std::collections::HashMap<&str, &NewWindow> =
        windows.iter().map(|w| (w.id.as_str(), w)).collect();
    let rows: Vec<(&Outcome, &NewWindow)> = outcomes
        .iter()
        .filter_map(|o| Some((o, *grid.get(o.id.as_str())?)))
        .collect();
    sqlx::query(
        "insert into run_window (run_id, project_id, id, epsg, size, resolution, grid_column, grid_row, geometry, \
             status, reason, scenes, objects, step_id) \
         select $1, $2, u.id, u.epsg, u.size, u.resolution, u.col, u.row, u.geometry, u.status, u.reason, u.scenes, \
             coalesce((select array_agg(x) from jsonb_array_elements_text(u.objects) x), '{}'), $3 \
         from unnest($4::text[], $5::int[], $6::int[], $7::float8[], $8::int8[], $9::int8[], $10::jsonb[], \
             $11::text[], $12::text[], $13::jsonb[], $14::jsonb[]) \
             as u(id, epsg, size, resolution, col, row, geometry, status, reason, scenes, objects) \
         on conflict (run_id, id) do update set status = excluded.status, reason = excluded.reason, \
             scenes = excluded.scenes, objects = excluded.objects, step_id = excluded.step_id, updated_at = now() \
         where excluded.status = 'acquired' or run_window.status <> 'acquired'",
    )
    .bind(run_id)
    .bind(project_id)
    .bind(step_id)
    .bind(rows.iter().map(|(o, _)| o.id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, w)| w.epsg).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, w)| w.size).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, w)| w.resolution).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, w)| w.column).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, w)| w.row).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, w)| w.geometry.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(o, _)| o.status.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(o, _)| o.reason.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(o, _)| o.scenes.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(o, _)| serde_json::json!(o.objects)).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// A monitoring run's window counts by status (the windows its acquisition recorded).
pub async fn run_counts(pool: &PgPool, run_id: Uuid) -> Result<Counts> {
    Ok(sqlx::query_as(
        "select count(*) as total, 0::int8 as pending, \
             count(*) filter (where status = 'acquired') as acquired, \
             count(*) filter (where status = 'quarantined') as quarantined, \
             count(*) filter (where status = 'empty') as empty, 0::int8 as stale \
         from run_window where run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await?)
}

/// The reason most of a monitoring run's windows of `status` give, with how many give it.
pub async fn run_most_common_reason(
    pool: &PgPool,
    run_id: Uuid,
    status: &str,
) -> Result<Option<(String, i64)>> {
    most_common_reason_in(pool, Of::Run(run_id), status).await
}

/// A monitoring run's windows in id order, after the cursor, optionally of one status (shaped as the
/// project's windows are).
pub async fn run_list(
    pool: &PgPool,
    run_id: Uuid,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Window>> {
    list_in(pool, Of::Run(run_id), status, after, limit).await
}
