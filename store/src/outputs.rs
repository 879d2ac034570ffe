//! Published prediction outputs (class, probability and value rasters) and the window footprints
//! prediction partitions are planned from.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// An output to record (the publish step writes the COGs, then records them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewOutput {
    /// Owning organisation.
    pub org_id: Uuid,
    /// Project.
    pub project_id: Uuid,
    /// The prediction run.
    pub run_id: Uuid,
    /// `class | probability | value`.
    pub kind: String,
    /// Object key of the COG in the UTM CRS.
    pub utm_key: String,
    /// Object key of the `GoogleMapsCompatible` COG in EPSG:3857.
    pub web_key: String,
    /// EPSG code of the UTM COG.
    pub epsg: i32,
    /// UTM COG width in pixels.
    pub width: i32,
    /// UTM COG height in pixels.
    pub height: i32,
    /// Bands.
    pub bands: i32,
    /// `[west, south, east, north]` in EPSG:4326.
    pub bbox: [f64; 4],
    /// `[minx, miny, maxx, maxy]` in EPSG:3857.
    pub bounds_3857: [f64; 4],
    /// Coarsest zoom with an overview.
    pub min_zoom: i16,
    /// Full-resolution zoom.
    pub max_zoom: i16,
    /// `[{id, name, color}]`.
    pub classes: Value,
    /// `{min, max}` of value rasters.
    pub stats: Value,
    /// Model, checkpoint, labels, metrics and input scenes.
    pub lineage: Value,
    /// Outline of the data's valid pixels (GeoJSON Polygon or MultiPolygon, EPSG:4326), when known.
    pub footprint: Option<Value>,
}

/// A stored output.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Output {
    /// Id.
    pub id: Uuid,
    /// Owning organisation.
    pub org_id: Uuid,
    /// Project.
    pub project_id: Uuid,
    /// The prediction run.
    pub run_id: Uuid,
    /// `class | probability | value`.
    pub kind: String,
    /// Object key of the UTM COG.
    pub utm_key: String,
    /// Object key of the EPSG:3857 COG.
    pub web_key: String,
    /// EPSG code of the UTM COG.
    pub epsg: i32,
    /// Width in pixels (UTM).
    pub width: i32,
    /// Height in pixels (UTM).
    pub height: i32,
    /// Bands.
    pub bands: i32,
    /// `[west, south, east, north]` in EPSG:4326.
    #[sqlx(skip)]
    pub bbox: [f64; 4],
    /// `[minx, miny, maxx, maxy]` in EPSG:3857.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<f64>))]
    pub bounds_3857: Value,
    /// Coarsest zoom with an overview.
    pub min_zoom: i16,
    /// Full-resolution zoom.
    pub max_zoom: i16,
    /// `[{id, name, color}]`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub classes: Value,
    /// `{min, max}` of value rasters; `{areas_ha: {class: hectares}}` of class maps.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub stats: Value,
    /// Model, checkpoint, labels, metrics and input scenes.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub lineage: Value,
    /// Outline of the data's valid pixels (GeoJSON, EPSG:4326); `None` for outputs published before
    /// footprints were recorded, whose bbox is the tile grid's extent.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub footprint: Option<Value>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    #[sqlx(flatten)]
    output: Output,
    bbox_west: f64,
    bbox_south: f64,
    bbox_east: f64,
    bbox_north: f64,
}

impl From<Row> for Output {
    fn from(r: Row) -> Self {
        Output {
            bbox: [r.bbox_west, r.bbox_south, r.bbox_east, r.bbox_north],
            ..r.output
        }
    }
}

const COLUMNS: &str = "id, org_id, project_id, run_id, kind, utm_key, web_key, epsg, width, height, bands, \
    bbox_west, bbox_south, bbox_east, bbox_north, bounds_3857, min_zoom, max_zoom, classes, stats, lineage, footprint, created_at";

/// Records an output; a run's earlier output of the same kind is replaced (a re-run of publish).
pub async fn upsert<'e>(db: impl sqlx::PgExecutor<'e>, o: &NewOutput) -> Result<Output> {
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into output (id, org_id, project_id, run_id, kind, utm_key, web_key, epsg, width, height, bands, \
             bbox_west, bbox_south, bbox_east, bbox_north, bounds_3857, min_zoom, max_zoom, classes, stats, lineage, footprint) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22) \
         on conflict (run_id, kind) do update set utm_key = excluded.utm_key, web_key = excluded.web_key, \
             epsg = excluded.epsg, width = excluded.width, height = excluded.height, bands = excluded.bands, \
             bbox_west = excluded.bbox_west, bbox_south = excluded.bbox_south, bbox_east = excluded.bbox_east, \
             bbox_north = excluded.bbox_north, bounds_3857 = excluded.bounds_3857, min_zoom = excluded.min_zoom, \
             max_zoom = excluded.max_zoom, classes = excluded.classes, stats = excluded.stats, \
             lineage = excluded.lineage, footprint = excluded.footprint, created_at = now() \
         returning {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(o.org_id)
    .bind(o.project_id)
    .bind(o.run_id)
    .bind(&o.kind)
    .bind(&o.utm_key)
    .bind(&o.web_key)
    .bind(o.epsg)
    .bind(o.width)
    .bind(o.height)
    .bind(o.bands)
    .bind(o.bbox[0])
    .bind(o.bbox[1])
    .bind(o.bbox[2])
    .bind(o.bbox[3])
    .bind(serde_json::json!(o.bounds_3857))
    .bind(o.min_zoom)
    .bind(o.max_zoom)
    .bind(&o.classes)
    .bind(&o.stats)
    .bind(&o.lineage)
    .bind(&o.footprint)
    .fetch_one(db)
    .await?;
    Ok(row.into())
}

/// An output of the organisation (another organisation's is not found).
pub async fn get(pool: &PgPool, org_id: Uuid, id: Uuid) -> Result<Output> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from output where org_id = $1 and id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(Into::into)
        .ok_or(Error::NotFound { what: "output", id })
}

/// A project's outputs, newest first, after the cursor (an output id).
pub async fn list(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Output>> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from output where org_id = $1 and project_id = $2 \
             and ($3::uuid is null or id < $3) order by id desc limit $4"
    )))
    .bind(org_id)
    .bind(project_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// The class map a run published, if it did.
pub async fn class_map_of_run(pool: &PgPool, org_id: Uuid, run_id: Uuid) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "select id from output where run_id = $1 and kind = 'class' and org_id = $2",
    )
    .bind(run_id)
    .bind(org_id)
    .fetch_optional(pool)
    .await?)
}

/// The class map of the same project and of its own area (not another area's) whose period ended
/// last before class map `id`'s began (ISO dates compare as text; maps that record no period come
/// after those that do, newest first).
pub async fn class_map_before(pool: &PgPool, id: Uuid) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "select o.id from output o, output t where t.id = $1 and o.project_id = t.project_id \
             and o.kind = 'class' and o.id <> t.id \
             and coalesce(o.lineage->'period'->>'area', 'project') = 'project' \
             and coalesce(o.lineage->'period'->>'end', '') < coalesce(t.lineage->'period'->>'start', '') \
         order by o.lineage->'period'->>'end' desc nulls last, o.created_at desc limit 1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The object keys of an output's per-zone COGs (`stats.zones[].key`: a map across UTM zones keeps
/// each zone's own map for download).
pub fn zone_keys(o: &NewOutput) -> impl Iterator<Item = &str> {
    o.stats["zones"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|z| z["key"].as_str())
}

/// An acquired window as prediction needs it: where it is and where its tensors are.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct WindowFootprint {
    /// Window id.
    pub id: String,
    /// EPSG code of its UTM zone.
    pub epsg: i32,
    /// Pixels per side.
    pub size: i32,
    /// Metres per pixel.
    pub resolution: f64,
    /// Grid column.
    pub grid_column: i64,
    /// Grid row.
    pub grid_row: i64,
    /// Object keys of its tensors.
    pub objects: Vec<String>,
    /// Scene ids per modality and bin.
    pub scenes: Value,
}

/// The project's acquired windows, optionally only those of one zone inside a column/row range
/// (`[col_min, col_max, row_min, row_max]`, inclusive).
pub async fn acquired_windows(
    pool: &PgPool,
    project_id: Uuid,
    epsg: Option<i32>,
    range: Option<[i64; 4]>,
) -> Result<Vec<WindowFootprint>> {
    acquired_in(
        pool,
        ("project_window", "project_id", project_id),
        epsg,
        range,
    )
    .await
}

/// Acquired windows of `table` whose `owner` column is `id`.
async fn acquired_in(
    pool: &PgPool,
    (table, owner, id): (&'static str, &'static str, Uuid),
    epsg: Option<i32>,
    range: Option<[i64; 4]>,
) -> Result<Vec<WindowFootprint>> {
    let r = range.unwrap_or([i64::MIN, i64::MAX, i64::MIN, i64::MAX]);
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select id, epsg, size, resolution, grid_column, grid_row, objects, scenes from {table} \
         where {owner} = $1 and status = 'acquired' and ($2::int is null or epsg = $2) \
             and grid_column between $3 and $4 and grid_row between $5 and $6 \
         order by epsg, grid_row desc, grid_column"
    )))
    .bind(id)
    .bind(epsg)
    .bind(r[0])
    .bind(r[1])
    .bind(r[2])
    .bind(r[3])
    .fetch_all(pool)
    .await?)
}

/// A monitoring run's acquired windows (see [`crate::windows::record_run_outcomes`]), optionally of
/// one zone and grid range, as [`acquired_windows`] gives the project's.
pub async fn run_acquired_windows(
    pool: &PgPool,
    run_id: Uuid,
    epsg: Option<i32>,
    range: Option<[i64; 4]>,
) -> Result<Vec<WindowFootprint>> {
    acquired_in(pool, ("run_window", "run_id", run_id), epsg, range).await
}
