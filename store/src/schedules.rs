//! Project schedules: every month, quarter or year the server starts a prediction of the latest full
//! period with the project's model, for the member who set the schedule, and compares its map with
//! the previous one (see the server's `maintenance::schedules`).
//!
//! A schedule is due at `next_at`, on its beat (`anchor_at` plus whole cadences). A server takes a due
//! schedule by setting `retry_at` a minute ahead (another server's pass skips it meanwhile), then
//! records what came of it ([`fired`], [`put_off`]). Once its run has finished, one server takes the
//! comparison by setting `checking_until` ([`take_unchecked`]) and records it ([`record_check`]); the
//! schedule is not due again before that.

use crate::Result;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// A project's schedule.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    /// The project.
    pub project_id: Uuid,
    /// Its organisation.
    #[serde(skip)]
    pub org_id: Uuid,
    /// `monthly`, `quarterly` or `yearly`.
    pub cadence: String,
    /// The catalogue each run acquires from.
    pub stac: String,
    /// The catalogue's profile.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub profile: Value,
    /// Largest scene cloud cover, percent.
    pub max_cloud: Option<f64>,
    /// The model (a training run); `None`: the project's best trained model when it fires.
    pub training_run_id: Option<Uuid>,
    /// A `change.alert` webhook event when a change from one class to another covers more km².
    pub change_alert_km2: Option<f64>,
    /// The member it acts for.
    pub created_by: Uuid,
    /// Its beat: it fires at this time plus whole cadences.
    pub anchor_at: DateTime<Utc>,
    /// When it is due next.
    pub next_at: DateTime<Utc>,
    /// When a firing that could not start (for a passing reason) is tried again.
    pub retry_at: Option<DateTime<Utc>>,
    /// Last day of the period of the last run it started.
    pub last_period_end: Option<NaiveDate>,
    /// Last day of the latest period whose run succeeded.
    pub mapped_period_end: Option<NaiveDate>,
    /// The run it last started.
    pub last_run_id: Option<Uuid>,
    /// Whether that run's map has been compared with the one before.
    #[serde(skip)]
    pub last_run_checked: bool,
    /// The class map of its last successful run.
    pub last_output_id: Option<Uuid>,
    /// The change map between its last two maps.
    pub last_change_map_id: Option<Uuid>,
    /// Why it could not start its last run, or why that run's map could not be compared.
    pub last_error: Option<String>,
    /// Set.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A schedule to set.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// `monthly`, `quarterly` or `yearly`.
    pub cadence: String,
    /// The catalogue.
    pub stac: String,
    /// Its profile.
    pub profile: Value,
    /// Largest scene cloud cover.
    pub max_cloud: Option<f64>,
    /// The model, or the best when it fires.
    pub training_run_id: Option<Uuid>,
    /// Change alert threshold, km².
    pub change_alert_km2: Option<f64>,
    /// The member it acts for.
    pub created_by: Uuid,
    /// Its beat.
    pub anchor_at: DateTime<Utc>,
    /// When it is due next.
    pub next_at: DateTime<Utc>,
}

const COLUMNS: &str = "project_id, org_id, cadence, stac, profile, max_cloud, training_run_id, \
    change_alert_km2, created_by, anchor_at, next_at, retry_at, last_period_end, mapped_period_end, \
    last_run_id, last_run_checked, last_output_id, last_change_map_id, last_error, created_at, updated_at";

/// Sets (or replaces) a project's schedule. What it did before (its last run, map and mapped
/// period) is kept, so a changed schedule still compares with the previous map.
pub async fn set(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    s: &NewSchedule,
) -> Result<Schedule> {
    crate::projects::ensure_owned(pool, org_id, project_id).await?;
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into project_schedule (project_id, org_id, cadence, stac, profile, max_cloud, training_run_id, \
             change_alert_km2, created_by, anchor_at, next_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         on conflict (project_id) do update set cadence = excluded.cadence, stac = excluded.stac, \
             profile = excluded.profile, max_cloud = excluded.max_cloud, training_run_id = excluded.training_run_id, \
             change_alert_km2 = excluded.change_alert_km2, created_by = excluded.created_by, \
             anchor_at = excluded.anchor_at, next_at = excluded.next_at, retry_at = null, last_error = null, \
             updated_at = now() \
         returning {COLUMNS}"
    )))
    .bind(project_id)
    .bind(org_id)
    .bind(&s.cadence)
    .bind(&s.stac)
    .bind(&s.profile)
    .bind(s.max_cloud)
    .bind(s.training_run_id)
    .bind(s.change_alert_km2)
    .bind(s.created_by)
    .bind(s.anchor_at)
    .bind(s.next_at)
    .fetch_one(pool)
    .await?)
}

/// A project's schedule, if it has one.
pub async fn get(pool: &PgPool, org_id: Uuid, project_id: Uuid) -> Result<Option<Schedule>> {
    crate::projects::ensure_owned(pool, org_id, project_id).await?;
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from project_schedule where project_id = $1 and org_id = $2"
    )))
    .bind(project_id)
    .bind(org_id)
    .fetch_optional(pool)
    .await?)
}

/// Removes a project's schedule; whether it had one.
pub async fn delete(pool: &PgPool, org_id: Uuid, project_id: Uuid) -> Result<bool> {
    crate::projects::ensure_owned(pool, org_id, project_id).await?;
    Ok(
        sqlx::query("delete from project_schedule where project_id = $1 and org_id = $2")
            .bind(project_id)
            .bind(org_id)
            .execute(pool)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Takes up to `limit` schedules that are due (and not put off), whose last run has finished and been
/// compared, holding each for a minute.
pub async fn take_due(pool: &PgPool, limit: i64) -> Result<Vec<Schedule>> {
    let due: Vec<(Uuid, ())> = sqlx::query_as::<_, (Uuid,)>(
        "with d as (select s.project_id from project_schedule s \
                    left join pipeline_run r on r.id = s.last_run_id \
                    where s.next_at <= now() and (s.retry_at is null or s.retry_at <= now()) \
                      and s.last_run_checked \
                      and (r.id is null or r.state in ('succeeded', 'failed', 'cancelled')) \
                    order by s.next_at limit $1 for update of s skip locked) \
         update project_schedule s set retry_at = now() + interval '1 minute' \
         from d where s.project_id = d.project_id returning s.project_id",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id,)| (id, ()))
    .collect();
    Ok(with_schedules(pool, due)
        .await?
        .into_iter()
        .map(|(s, ())| s)
        .collect())
}

/// Each `(project, x)` as `(its schedule, x)`.
async fn with_schedules<T>(pool: &PgPool, rows: Vec<(Uuid, T)>) -> Result<Vec<(Schedule, T)>> {
    let mut out = Vec::with_capacity(rows.len());
    for (project_id, x) in rows {
        let s: Schedule = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from project_schedule where project_id = $1"
        )))
        .bind(project_id)
        .fetch_one(pool)
        .await?;
        out.push((s, x));
    }
    Ok(out)
}

/// Records a firing that is over: the next time on the beat, and the run it started for the period
/// ending `period_end`, or (`Err`) why it started none for good (the period is passed over).
pub async fn fired(
    pool: &PgPool,
    project_id: Uuid,
    next_at: DateTime<Utc>,
    period_end: NaiveDate,
    started: std::result::Result<Uuid, String>,
) -> Result<()> {
    let (run, error) = match started {
        Ok(run) => (Some(run), None),
        Err(e) => (None, Some(e)),
    };
    sqlx::query(
        "update project_schedule set next_at = $2, retry_at = null, updated_at = now(), last_error = $5, \
             last_period_end = case when $3::uuid is null then last_period_end else $4 end, \
             last_run_id = coalesce($3, last_run_id), \
             last_run_checked = $3::uuid is null \
         where project_id = $1",
    )
    .bind(project_id)
    .bind(next_at)
    .bind(run)
    .bind(period_end)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Puts a due firing off until `retry_at` (a passing reason: the project's acquisition is under way,
/// the quota or the queue is full, the database was briefly away), saying why; it stays due.
pub async fn put_off(
    pool: &PgPool,
    project_id: Uuid,
    retry_at: DateTime<Utc>,
    why: &str,
) -> Result<()> {
    sqlx::query(
        "update project_schedule set retry_at = $2, last_error = $3, updated_at = now() where project_id = $1",
    )
    .bind(project_id)
    .bind(retry_at)
    .bind(why)
    .execute(pool)
    .await?;
    Ok(())
}

/// Takes up to `limit` schedules whose last run finished and has not been compared yet, with that
/// run's state, holding each for ten minutes (one server compares each map; a server that stops
/// midway leaves it to another after that).
pub async fn take_unchecked(pool: &PgPool, limit: i64) -> Result<Vec<(Schedule, String)>> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "with d as (select s.project_id, r.state from project_schedule s join pipeline_run r on r.id = s.last_run_id \
                    where not s.last_run_checked and (s.checking_until is null or s.checking_until <= now()) \
                      and r.state in ('succeeded', 'failed', 'cancelled') \
                    order by s.next_at limit $1 for update of s skip locked) \
         update project_schedule s set checking_until = now() + interval '10 minutes' \
         from d where s.project_id = d.project_id returning s.project_id, d.state",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    with_schedules(pool, rows).await
}

/// Records what came of comparing the last run `run_id`: when it succeeded, its class map becomes
/// the one the next run is compared with and its period counts as mapped; the change map made, or
/// why none was. The schedule may fire again.
pub async fn record_check(
    pool: &PgPool,
    project_id: Uuid,
    run_id: Uuid,
    succeeded: bool,
    output_id: Option<Uuid>,
    change_map_id: Option<Uuid>,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "update project_schedule set updated_at = now(), last_run_checked = true, checking_until = null, \
             last_output_id = coalesce($3, last_output_id), \
             last_change_map_id = coalesce($4, last_change_map_id), last_error = $5, \
             mapped_period_end = case when $6 then greatest(mapped_period_end, last_period_end) \
                                      else mapped_period_end end \
         where project_id = $1 and last_run_id = $2",
    )
    .bind(project_id)
    .bind(run_id)
    .bind(output_id)
    .bind(change_map_id)
    .bind(error)
    .bind(succeeded)
    .execute(pool)
    .await?;
    Ok(())
}

/// Moves a schedule on to `next_at` without a run: its period was mapped already.
pub async fn advance(pool: &PgPool, project_id: Uuid, next_at: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "update project_schedule set next_at = $2, retry_at = null, updated_at = now() where project_id = $1",
    )
    .bind(project_id)
    .bind(next_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// How many runs of the project that a schedule started for the period ending `period_end` failed or
/// were cancelled (each new try of the period gets an idempotency key of its own).
pub async fn failed_tries(pool: &PgPool, project_id: Uuid, key_prefix: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from pipeline_run where project_id = $1 and starts_with(idempotency_key, $2) \
             and state in ('failed', 'cancelled')",
    )
    .bind(project_id)
    .bind(key_prefix)
    .fetch_one(pool)
    .await?)
}
