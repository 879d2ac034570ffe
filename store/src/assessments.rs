//! Accuracy assessments of published class maps: the sample design, the sample units and their
//! reference labels (see `groundwork_imagery::assessment` for the estimators).

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// An assessment.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assessment {
    /// Id.
    pub id: Uuid,
    /// Project.
    pub project_id: Uuid,
    /// The class map assessed.
    pub output_id: Uuid,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// The sample design as used: `target_se`, `min_per_class`, `expected_users`, `seed`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub design: Value,
    /// Strata: `[{class_id, name, mapped_pixels, sample_size}]`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub strata: Value,
    /// Area of one pixel, m².
    pub pixel_area_m2: f64,
    /// CRS of the class map.
    pub epsg: i32,
}

/// A sample unit to store.
#[derive(Debug, Clone)]
pub struct NewSample {
    /// Map class (stratum).
    pub stratum: i32,
    /// `n_h / N_h`.
    pub inclusion_probability: f64,
    /// Column.
    pub col: i32,
    /// Row.
    pub row: i32,
    /// Pixel centre, map CRS.
    pub x: f64,
    /// Pixel centre, map CRS.
    pub y: f64,
    /// Pixel centre, EPSG:4326.
    pub lon: f64,
    /// Pixel centre, EPSG:4326.
    pub lat: f64,
}

/// A sample unit as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sample {
    /// Number within the assessment (1-based, in random order).
    pub id: i32,
    /// Map class (stratum).
    pub stratum: i32,
    /// `n_h / N_h`.
    pub inclusion_probability: f64,
    /// Pixel centre, map CRS.
    pub x: f64,
    /// Pixel centre, map CRS.
    pub y: f64,
    /// Pixel centre, EPSG:4326.
    pub lon: f64,
    /// Pixel centre, EPSG:4326.
    pub lat: f64,
    /// Reference class, once labelled.
    pub reference: Option<i32>,
    /// Labelled "unsure" (counts in no estimate).
    pub unsure: bool,
    /// When it was labelled.
    pub labelled_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "a.id, a.project_id, a.output_id, a.created_at, a.design, a.strata, a.pixel_area_m2, a.epsg";

/// Stores an assessment with its sample, in one transaction.
#[expect(clippy::too_many_arguments, reason = "the columns of one row")]
pub async fn create(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    output_id: Uuid,
    created_by: Option<Uuid>,
    design: &Value,
    strata: &Value,
    pixel_area_m2: f64,
    epsg: i32,
    samples: &[NewSample],
) -> Result<Assessment> {
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into assessment (id, org_id, project_id, output_id, created_by, design, strata, pixel_area_m2, epsg) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(org_id)
    .bind(project_id)
    .bind(output_id)
    .bind(created_by)
    .bind(design)
    .bind(strata)
    .bind(pixel_area_m2)
    .bind(epsg)
    .execute(&mut *tx)
    .await?;
    for (c, chunk) in samples.chunks(5000).enumerate() {
        sqlx::query(
            "insert into assessment_sample (assessment_id, id, stratum, inclusion_probability, col, row, x, y, lon, lat) \
             select $1, u.* from unnest($2::int[], $3::int[], $4::float8[], $5::int[], $6::int[], $7::float8[], \
                 $8::float8[], $9::float8[], $10::float8[]) as u",
        )
        .bind(id)
        .bind(
            (0..chunk.len())
                .map(|i| i32::try_from(c * 5000 + i + 1).unwrap_or(i32::MAX))
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|s| s.stratum).collect::<Vec<_>>())
        .bind(chunk.iter().map(|s| s.inclusion_probability).collect::<Vec<_>>())
        .bind(chunk.iter().map(|s| s.col).collect::<Vec<_>>())
        .bind(chunk.iter().map(|s| s.row).collect::<Vec<_>>())
        .bind(chunk.iter().map(|s| s.x).collect::<Vec<_>>())
        .bind(chunk.iter().map(|s| s.y).collect::<Vec<_>>())
        .bind(chunk.iter().map(|s| s.lon).collect::<Vec<_>>())
        .bind(chunk.iter().map(|s| s.lat).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    get(pool, org_id, id).await
}

/// An assessment of the organisation (another organisation's is not found).
pub async fn get(pool: &PgPool, org_id: Uuid, id: Uuid) -> Result<Assessment> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from assessment a where a.id = $1 and a.org_id = $2"
    )))
    .bind(id)
    .bind(org_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound {
        what: "assessment",
        id,
    })
}

/// The assessments of an output, newest first.
pub async fn list_for_output(
    pool: &PgPool,
    org_id: Uuid,
    output_id: Uuid,
) -> Result<Vec<Assessment>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from assessment a where a.output_id = $1 and a.org_id = $2 order by a.id desc"
    )))
    .bind(output_id)
    .bind(org_id)
    .fetch_all(pool)
    .await?)
}

/// How far the labelling has got: units drawn, labelled with a reference class, marked unsure.
pub async fn progress(pool: &PgPool, assessment_id: Uuid) -> Result<(i64, i64, i64)> {
    Ok(sqlx::query_as(
        "select count(*), count(reference), count(*) filter (where unsure) \
         from assessment_sample where assessment_id = $1",
    )
    .bind(assessment_id)
    .fetch_one(pool)
    .await?)
}

/// The sample units, in their order.
pub async fn samples(pool: &PgPool, assessment_id: Uuid) -> Result<Vec<Sample>> {
    Ok(sqlx::query_as(
        "select id, stratum, inclusion_probability, x, y, lon, lat, reference, unsure, labelled_at \
         from assessment_sample where assessment_id = $1 order by id",
    )
    .bind(assessment_id)
    .fetch_all(pool)
    .await?)
}

/// Records a reviewer's reference label of one unit (`reference`, or `unsure` when `None`); a later
/// label replaces it.
pub async fn label(
    pool: &PgPool,
    org_id: Uuid,
    assessment_id: Uuid,
    sample_id: i32,
    reference: Option<i32>,
    by: Option<Uuid>,
) -> Result<()> {
    let done = sqlx::query(
        "update assessment_sample s set reference = $4, unsure = ($4 is null), labelled_by = $5, labelled_at = now() \
         from assessment a where a.id = s.assessment_id and a.id = $1 and a.org_id = $2 and s.id = $3",
    )
    .bind(assessment_id)
    .bind(org_id)
    .bind(sample_id)
    .bind(reference)
    .bind(by)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound {
            what: "sample unit",
            id: assessment_id,
        });
    }
    Ok(())
}
