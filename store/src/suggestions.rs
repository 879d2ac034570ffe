//! Label suggestions: the points a `suggest` step proposes for labelling next (active learning), and
//! what the user made of each (labelled, skipped, unsure).

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Why a point was suggested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// It covers a part of the embedding space nothing else covers (before two classes are labelled).
    Diverse,
    /// The frozen-embedding baseline is unsure of it, and it is unlike what is labelled.
    Uncertain,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Diverse => "diverse",
            Reason::Uncertain => "uncertain",
        }
    }
}

/// What the user made of a suggestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not answered yet.
    Open,
    /// A label was added there.
    Labelled,
    /// Passed over.
    Skipped,
    /// The user could not tell.
    Unsure,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Labelled => "labelled",
            Status::Skipped => "skipped",
            Status::Unsure => "unsure",
        }
    }
}

/// A point to suggest, as the `suggest` step makes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSuggestion {
    /// The window it lies in.
    pub window_id: String,
    /// Pixel row in the window.
    pub pixel_row: i32,
    /// Pixel column in the window.
    pub pixel_col: i32,
    /// Longitude (EPSG:4326).
    pub lon: f64,
    /// Latitude.
    pub lat: f64,
    /// Why.
    pub reason: Reason,
    /// The baseline's class id there, once it can guess.
    pub predicted_class: Option<i32>,
    /// The margin between the baseline's two best classes (small: unsure).
    pub margin: Option<f64>,
}

/// A stored suggestion.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Suggestion {
    /// 1 = label first.
    pub rank: i32,
    /// The window it lies in.
    pub window_id: String,
    /// Pixel row in the window.
    pub pixel_row: i32,
    /// Pixel column in the window.
    pub pixel_col: i32,
    /// Longitude (EPSG:4326).
    pub lon: f64,
    /// Latitude.
    pub lat: f64,
    /// `diverse` or `uncertain`.
    pub reason: String,
    /// The baseline's class id there.
    pub predicted_class: Option<i32>,
    /// The margin between the baseline's two best classes.
    pub margin: Option<f64>,
    /// `open`, `labelled`, `skipped` or `unsure`.
    pub status: String,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The suggestions of one run.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuggestionSet {
    /// The `suggest` run that made them.
    pub run_id: Uuid,
    /// When it finished.
    pub created_at: DateTime<Utc>,
    /// In rank order.
    pub items: Vec<Suggestion>,
}

/// Records a run's suggestions (inside the step's fenced transaction), ranked in the given order.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    run_id: Uuid,
    project_id: Uuid,
    items: &[NewSuggestion],
) -> Result<()> {
    sqlx::query("delete from label_suggestion where run_id = $1")
        .bind(run_id)
        .execute(&mut **tx)
        .await?;
    let ranks: Vec<i32> = (1..=i32::try_from(items.len()).unwrap_or(i32::MAX)).collect();
    sqlx::query(
        "insert into label_suggestion (run_id, rank, project_id, window_id, pixel_row, pixel_col, lon, lat, \
             reason, predicted_class, margin) \
         select $1, u.rank, $2, u.window_id, u.pixel_row, u.pixel_col, u.lon, u.lat, u.reason, u.predicted_class, u.margin \
         from unnest($3::int[], $4::text[], $5::int[], $6::int[], $7::float8[], $8::float8[], $9::text[], $10::int[], $11::float8[]) \
             as u(rank, window_id, pixel_row, pixel_col, lon, lat, reason, predicted_class, margin)",
    )
    .bind(run_id)
    .bind(project_id)
    .bind(&ranks[..items.len().min(ranks.len())])
    .bind(items.iter().map(|s| s.window_id.clone()).collect::<Vec<_>>())
    .bind(items.iter().map(|s| s.pixel_row).collect::<Vec<_>>())
    .bind(items.iter().map(|s| s.pixel_col).collect::<Vec<_>>())
    .bind(items.iter().map(|s| s.lon).collect::<Vec<_>>())
    .bind(items.iter().map(|s| s.lat).collect::<Vec<_>>())
    .bind(items.iter().map(|s| s.reason.as_str()).collect::<Vec<_>>())
    .bind(items.iter().map(|s| s.predicted_class).collect::<Vec<_>>())
    .bind(items.iter().map(|s| s.margin).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The latest succeeded `suggest` run's suggestions of a project of `org_id`; `None` when it has none.
pub async fn latest(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
) -> Result<Option<SuggestionSet>> {
    let run: Option<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "select r.id, coalesce(s.finished_at, r.created_at) from pipeline_run r \
         join step s on s.run_id = r.id and s.kind = 'suggest' and s.state = 'succeeded' \
         where r.project_id = $1 and r.org_id = $2 \
         order by s.finished_at desc nulls last limit 1",
    )
    .bind(project_id)
    .bind(org_id)
    .fetch_optional(pool)
    .await?;
    let Some((run_id, created_at)) = run else {
        return Ok(None);
    };
    let items = sqlx::query_as(
        "select rank, window_id, pixel_row, pixel_col, lon, lat, reason, predicted_class, margin, status, updated_at \
         from label_suggestion where run_id = $1 and project_id = $2 order by rank",
    )
    .bind(run_id)
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(SuggestionSet {
        run_id,
        created_at,
        items,
    }))
}

/// Records what the user made of suggestion `rank` of run `run_id` (a run of `project_id` of `org_id`).
pub async fn set_status(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    run_id: Uuid,
    rank: i32,
    status: Status,
) -> Result<Suggestion> {
    sqlx::query_as(
        "update label_suggestion l set status = $5, updated_at = now() from pipeline_run r \
         where l.run_id = $1 and l.rank = $2 and l.project_id = $3 and r.id = l.run_id and r.org_id = $4 \
         returning l.rank, l.window_id, l.pixel_row, l.pixel_col, l.lon, l.lat, l.reason, l.predicted_class, \
             l.margin, l.status, l.updated_at",
    )
    .bind(run_id)
    .bind(rank)
    .bind(project_id)
    .bind(org_id)
    .bind(status.as_str())
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound {
        what: "suggestion",
        id: run_id,
    })
}

/// The newest `suggest` run of the project that is still queued or running.
pub async fn pending_run(pool: &PgPool, org_id: Uuid, project_id: Uuid) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "select r.id from pipeline_run r join step s on s.run_id = r.id and s.kind = 'suggest' \
         where r.project_id = $1 and r.org_id = $2 and s.state in ('queued', 'running') \
         order by r.created_at desc limit 1",
    )
    .bind(project_id)
    .bind(org_id)
    .fetch_optional(pool)
    .await?)
}
