//! Projects: an organisation's area, dates, task, classes, modalities and model settings.

use crate::{Error, Result};
use chrono::{DateTime, NaiveDate, Utc};
use groundwork_types::{ClassDef, Modality, ModelSize, Task};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

/// A stored project.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Project {
    /// Id.
    pub id: Uuid,
    /// Owning organisation.
    pub org_id: Uuid,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Area of interest: GeoJSON Polygon or MultiPolygon in EPSG:4326.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub aoi: Value,
    /// `[west, south, east, north]`.
    #[sqlx(skip)]
    pub bbox: [f64; 4],
    /// Geodesic area of the AOI in km².
    pub area_km2: f64,
    /// First day of imagery.
    pub start: NaiveDate,
    /// Last day of imagery.
    pub end: NaiveDate,
    /// What the project predicts.
    pub task: Task,
    /// The legend: `[{id, name, color}]`.
    pub classes: Vec<ClassDef>,
    /// Input modalities.
    pub modalities: Vec<Modality>,
    /// Encoder size.
    pub model_size: ModelSize,
    /// Encoder patch size, 1–8.
    pub patch_size: i32,
    /// Window size in pixels.
    pub window_size: i32,
    /// Licence of the published maps: an SPDX identifier, or `other` with [`Project::license_url`].
    pub license: String,
    /// Link to the licence's terms (required for `other`; otherwise SPDX's page is used).
    pub license_url: Option<String>,
    /// Whether training may start from random encoder weights when no pretrained checkpoint is
    /// available (off unless the owner allows it; the offline demo does).
    pub allow_random_init: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Validated fields of a project (the API validates; the store persists).
#[derive(Debug, Clone)]
pub struct ProjectFields {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// AOI GeoJSON.
    pub aoi: Value,
    /// `[west, south, east, north]`.
    pub bbox: [f64; 4],
    /// km².
    pub area_km2: f64,
    /// Start date.
    pub start: NaiveDate,
    /// End date.
    pub end: NaiveDate,
    /// Task.
    pub task: Task,
    /// Classes.
    pub classes: Vec<ClassDef>,
    /// Modalities.
    pub modalities: Vec<Modality>,
    /// Model size.
    pub model_size: ModelSize,
    /// Patch size.
    pub patch_size: i32,
    /// Window size.
    pub window_size: i32,
    /// Licence (SPDX identifier or `other`).
    pub license: String,
    /// Link to the licence's terms.
    pub license_url: Option<String>,
    /// Whether training may start from random weights without a pretrained checkpoint.
    pub allow_random_init: bool,
}

const COLUMNS: &str = "id, org_id, name, description, aoi, bbox_west, bbox_south, bbox_east, bbox_north, area_km2, \
    start_date as start, end_date as \"end\", task, classes, modalities, model_size, patch_size, window_size, license, license_url, allow_random_init, created_at, updated_at";

/// A project row as the database holds it; [`Project`] is its typed form.
#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    org_id: Uuid,
    name: String,
    description: String,
    aoi: Value,
    bbox_west: f64,
    bbox_south: f64,
    bbox_east: f64,
    bbox_north: f64,
    area_km2: f64,
    start: NaiveDate,
    end: NaiveDate,
    task: String,
    classes: Json<Vec<ClassDef>>,
    modalities: Vec<String>,
    model_size: String,
    patch_size: i32,
    window_size: i32,
    license: String,
    license_url: Option<String>,
    allow_random_init: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<Row> for Project {
    type Error = Error;

    fn try_from(r: Row) -> Result<Self> {
        Ok(Project {
            id: r.id,
            org_id: r.org_id,
            name: r.name,
            description: r.description,
            aoi: r.aoi,
            bbox: [r.bbox_west, r.bbox_south, r.bbox_east, r.bbox_north],
            area_km2: r.area_km2,
            start: r.start,
            end: r.end,
            task: r.task.parse()?,
            classes: r.classes.0,
            modalities: r
                .modalities
                .iter()
                .map(|m| m.parse())
                .collect::<std::result::Result<_, _>>()?,
            model_size: r.model_size.parse()?,
            patch_size: r.patch_size,
            window_size: r.window_size,
            license: r.license,
            license_url: r.license_url,
            allow_random_init: r.allow_random_init,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

type ProjectQuery<'q> = sqlx::query::QueryAs<'q, sqlx::Postgres, Row, sqlx::postgres::PgArguments>;

/// Binds `$1` id, `$2` org and `$3`–`$21` the fields, in the column order `create` and `update` share.
fn bind_fields<'q>(
    query: ProjectQuery<'q>,
    id: Uuid,
    org_id: Uuid,
    f: &'q ProjectFields,
) -> ProjectQuery<'q> {
    query
        .bind(id)
        .bind(org_id)
        .bind(&f.name)
        .bind(&f.description)
        .bind(&f.aoi)
        .bind(f.bbox[0])
        .bind(f.bbox[1])
        .bind(f.bbox[2])
        .bind(f.bbox[3])
        .bind(f.area_km2)
        .bind(f.start)
        .bind(f.end)
        .bind(f.task.name())
        .bind(Json(&f.classes))
        .bind(f.modalities.iter().map(|m| m.name()).collect::<Vec<_>>())
        .bind(f.model_size.name())
        .bind(f.patch_size)
        .bind(f.window_size)
        .bind(&f.license)
        .bind(&f.license_url)
        .bind(f.allow_random_init)
}

/// Creates a project.
pub async fn create(pool: &PgPool, org_id: Uuid, f: &ProjectFields) -> Result<Project> {
    let query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into project (id, org_id, name, description, aoi, bbox_west, bbox_south, bbox_east, bbox_north, \
             area_km2, start_date, end_date, task, classes, modalities, model_size, patch_size, window_size, license, license_url, allow_random_init) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) returning {COLUMNS}"
    )));
    let row: Row = bind_fields(query, Uuid::now_v7(), org_id, f)
        .fetch_one(pool)
        .await?;
    row.try_into()
}

/// `NotFound` unless `id` is a project of `org_id` (without reading the row).
pub async fn ensure_owned(pool: &PgPool, org_id: Uuid, id: Uuid) -> Result<()> {
    let found: Option<i32> =
        sqlx::query_scalar("select 1 from project where id = $1 and org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(pool)
            .await?;
    found.map(|_| ()).ok_or(Error::NotFound {
        what: "project",
        id,
    })
}

/// A project of `org_id`.
pub async fn get(pool: &PgPool, org_id: Uuid, id: Uuid) -> Result<Project> {
    get_in(pool, org_id, id).await
}

/// [`get`] on any executor (a transaction: the row is then locked until it ends).
async fn get_in<'e>(db: impl sqlx::PgExecutor<'e>, org_id: Uuid, id: Uuid) -> Result<Project> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from project where id = $1 and org_id = $2 for update"
    )))
    .bind(id)
    .bind(org_id)
    .fetch_optional(db)
    .await?;
    row.ok_or(Error::NotFound {
        what: "project",
        id,
    })?
    .try_into()
}

/// Projects of `org_id`, newest first, after the cursor (a project id).
pub async fn list(
    pool: &PgPool,
    org_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Project>> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from project where org_id = $1 and ($2::uuid is null or id < $2) order by id desc limit $3"
    )))
    .bind(org_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Replaces a project's fields. When its area, dates, modalities or window size change, its windows'
/// imagery is marked stale (in the same transaction).
pub async fn update(pool: &PgPool, org_id: Uuid, id: Uuid, f: &ProjectFields) -> Result<Project> {
    let mut tx = pool.begin().await?;
    let before = get_in(&mut *tx, org_id, id).await?;
    let query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update project set name = $3, description = $4, aoi = $5, bbox_west = $6, bbox_south = $7, bbox_east = $8, \
             bbox_north = $9, area_km2 = $10, start_date = $11, end_date = $12, task = $13, classes = $14, \
             modalities = $15, model_size = $16, patch_size = $17, window_size = $18, license = $19, \
             license_url = $20, allow_random_init = $21, updated_at = now() \
         where id = $1 and org_id = $2 returning {COLUMNS}"
    )));
    let row: Option<Row> = bind_fields(query, id, org_id, f)
        .fetch_optional(&mut *tx)
        .await?;
    let after: Project = row
        .ok_or(Error::NotFound {
            what: "project",
            id,
        })?
        .try_into()?;
    if imagery_changed(&before, &after) {
        sqlx::query("update project_window set stale = true where project_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(after)
}

/// Whether the change from `a` to `b` makes acquired imagery no longer the project's.
fn imagery_changed(a: &Project, b: &Project) -> bool {
    a.aoi != b.aoi
        || a.start != b.start
        || a.end != b.end
        || a.modalities != b.modalities
        || a.window_size != b.window_size
}

/// Deletes a project and its runs, and queues the deletion of its objects. Refused while one of its
/// steps is running.
pub async fn delete(pool: &PgPool, org_id: Uuid, id: Uuid) -> Result<()> {
    let mut tx = pool.begin().await?;
    let exists: Option<Uuid> =
        sqlx::query_scalar("select id from project where id = $1 and org_id = $2 for update")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(Error::NotFound {
            what: "project",
            id,
        });
    }
    let running: i64 = sqlx::query_scalar(
        "select count(*) from step s join pipeline_run r on r.id = s.run_id where r.project_id = $1 and s.state = 'running'",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if running > 0 {
        return Err(Error::Conflict(format!(
            "project {id} has {running} running step(s); cancel them first"
        )));
    }
    sqlx::query("delete from project where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    // Its objects (window tensors, checkpoints, models, outputs) go with the rows: the server's
    // maintenance task deletes everything under the project's prefix.
    crate::maintenance::queue_cleanup(
        &mut *tx,
        groundwork_types::keys::ProjectKeys::new(org_id, id).prefix(),
        &format!("project {id} deleted"),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
