//! Change maps between two class maps of a project: the exact from→to pixel counts and where the
//! change raster is (`groundwork_imagery::change` computes them).

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// A change map to store.
#[derive(Debug, Clone)]
pub struct NewChangeMap {
    /// Id (the change raster's key holds it, so the caller picks it).
    pub id: Uuid,
    /// Owning organisation.
    pub org_id: Uuid,
    /// Project.
    pub project_id: Uuid,
    /// The earlier class map.
    pub from_output_id: Uuid,
    /// The later class map.
    pub to_output_id: Uuid,
    /// Who made it.
    pub created_by: Option<Uuid>,
    /// Object key of the change raster (COG).
    pub cog_key: String,
    /// CRS of the grid (the earlier map's).
    pub epsg: i32,
    /// Grid width.
    pub width: i32,
    /// Grid height.
    pub height: i32,
    /// Area of one pixel, m².
    pub pixel_area_m2: f64,
    /// Whether the later map was resampled onto the earlier map's grid.
    pub resampled: bool,
    /// `[{id, name, color}]`: the matrix's rows and columns.
    pub classes: Value,
    /// `matrix[i][j]`: pixels from `classes[i]` to `classes[j]`.
    pub matrix: Value,
    /// `[{code, from, to, pixels}]`.
    pub pairs: Value,
    /// Pixels nodata in either map.
    pub nodata_pixels: i64,
}

/// A stored change map.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeMap {
    /// Id.
    pub id: Uuid,
    /// Project.
    pub project_id: Uuid,
    /// The earlier class map.
    pub from_output_id: Uuid,
    /// The later class map.
    pub to_output_id: Uuid,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Object key of the change raster.
    pub cog_key: String,
    /// CRS of the grid.
    pub epsg: i32,
    /// Grid width.
    pub width: i32,
    /// Grid height.
    pub height: i32,
    /// Area of one pixel, m².
    pub pixel_area_m2: f64,
    /// Whether the later map was resampled onto the earlier map's grid.
    pub resampled: bool,
    /// `[{id, name, color}]`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub classes: Value,
    /// `matrix[i][j]`: pixels from `classes[i]` to `classes[j]`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Vec<u64>>))]
    pub matrix: Value,
    /// `[{code, from, to, pixels}]`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub pairs: Value,
    /// Pixels nodata in either map.
    pub nodata_pixels: i64,
}

const COLUMNS: &str = "id, project_id, from_output_id, to_output_id, created_at, cog_key, epsg, width, height, \
    pixel_area_m2, resampled, classes, matrix, pairs, nodata_pixels";

/// Stores a change map.
pub async fn create(pool: &PgPool, c: &NewChangeMap) -> Result<ChangeMap> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into change_map (id, org_id, project_id, from_output_id, to_output_id, created_by, cog_key, epsg, \
             width, height, pixel_area_m2, resampled, classes, matrix, pairs, nodata_pixels) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         returning {COLUMNS}"
    )))
    .bind(c.id)
    .bind(c.org_id)
    .bind(c.project_id)
    .bind(c.from_output_id)
    .bind(c.to_output_id)
    .bind(c.created_by)
    .bind(&c.cog_key)
    .bind(c.epsg)
    .bind(c.width)
    .bind(c.height)
    .bind(c.pixel_area_m2)
    .bind(c.resampled)
    .bind(&c.classes)
    .bind(&c.matrix)
    .bind(&c.pairs)
    .bind(c.nodata_pixels)
    .fetch_one(pool)
    .await?)
}

/// A change map of the organisation (another organisation's is not found).
pub async fn get(pool: &PgPool, org_id: Uuid, id: Uuid) -> Result<ChangeMap> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from change_map where id = $1 and org_id = $2"
    )))
    .bind(id)
    .bind(org_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound {
        what: "change map",
        id,
    })
}

/// A project's change maps, newest first, after the cursor (a change map id).
pub async fn list(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ChangeMap>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from change_map where org_id = $1 and project_id = $2 \
             and ($3::uuid is null or id < $3) order by id desc limit $4"
    )))
    .bind(org_id)
    .bind(project_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The change maps an output is the earlier or the later map of, newest first (at most `limit`).
pub async fn list_for_output(
    pool: &PgPool,
    org_id: Uuid,
    output_id: Uuid,
    limit: i64,
) -> Result<Vec<ChangeMap>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from change_map where org_id = $1 \
             and (from_output_id = $2 or to_output_id = $2) order by id desc limit $3"
    )))
    .bind(org_id)
    .bind(output_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
