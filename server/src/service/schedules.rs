//! Project schedules (monitoring over time): set, read and removed by the project's members; fired
//! by the server's maintenance task ([`fire_due`]), which starts a prediction of the latest full
//! period for the member who set the schedule, and compares each new map with the previous one
//! ([`compare_finished`]): a change map, and a `change.alert` webhook event when a change from one
//! class to another covers more than the schedule's threshold.

use crate::api::AppState;
use crate::api::auth::{Actor, Credential, Role};
use crate::api::error::{ApiError, ApiResult, FieldError};
use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use groundwork_store::schedules::{self, NewSchedule, Schedule};
use groundwork_store::{models, outputs, projects};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// Body of `PUT /api/v1/projects/{id}/schedule`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSchedule {
    /// `monthly`, `quarterly` or `yearly`: how often the latest full period is looked for. A project
    /// of a year or more maps its length in months up to the month before; a shorter one, the latest
    /// passed occurrence of its own calendar months (the season the model learnt), each once.
    pub cadence: String,
    /// The catalogue (default: the project's last acquisition's).
    pub stac: Option<String>,
    /// Its profile (default: the last acquisition's).
    #[schema(value_type = Option<Object>)]
    pub profile: Option<serde_json::Value>,
    /// Largest scene cloud cover, percent (default: the last acquisition's).
    pub max_cloud: Option<f64>,
    /// The model (a training run of the project); default: the project's best trained model when
    /// the schedule fires.
    pub run_id: Option<Uuid>,
    /// Send a `change.alert` webhook event when a change from one class to another between two
    /// consecutive maps covers more than this many km² (needs the project's webhook).
    pub change_alert_km2: Option<f64>,
    /// When it first fires (default: the 5th of next month, 00:00 UTC, once the catalogue holds the
    /// month's last scenes). A time in the past fires at once, mapping the period before it; the
    /// schedule then keeps its beat from the next firing to come (no run for each period missed).
    pub first_run: Option<DateTime<Utc>>,
}

/// A period of the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Period {
    /// First day.
    pub start: NaiveDate,
    /// Last day.
    pub end: NaiveDate,
}

/// A project's schedule, with the period its next run maps.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    /// The schedule.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// The period the next run maps.
    pub next_period: Period,
}

/// How far a cadence moves the next firing.
fn step_of(cadence: &str) -> Option<Months> {
    match cadence {
        "monthly" => Some(Months::new(1)),
        "quarterly" => Some(Months::new(3)),
        "yearly" => Some(Months::new(12)),
        _ => None,
    }
}

/// The `months` full calendar months before `at`'s month.
#[must_use]
pub fn period_before(at: DateTime<Utc>, months: i32) -> Period {
    let first_of_month = NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap_or_default();
    let end = first_of_month.pred_opt().unwrap_or(first_of_month);
    let back = u32::try_from(months.max(1)).unwrap_or(1);
    let start = first_of_month
        .checked_sub_months(Months::new(back))
        .unwrap_or(first_of_month);
    Period { start, end }
}

/// What a run firing at `at` maps for a project of `start`–`end`: a project of a year or more, the
/// latest full months of its length (every season is in it); a shorter one, the latest occurrence of
/// its own calendar months that has passed (the season the model learnt), so that it never maps
/// months the model has not seen.
#[must_use]
pub fn period_for(at: DateTime<Utc>, start: NaiveDate, end: NaiveDate) -> Period {
    let months = super::projects::months_spanned(start, end);
    if months >= 12 {
        return period_before(at, months);
    }
    let first_of_month = NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap_or_default();
    let span = Months::new(u32::try_from(months.max(1)).unwrap_or(1));
    let occurrence = |year: i32| {
        let s = NaiveDate::from_ymd_opt(year, start.month(), 1).unwrap_or_default();
        let e = s
            .checked_add_months(span)
            .and_then(|d| d.pred_opt())
            .unwrap_or(s);
        Period { start: s, end: e }
    };
    let mut year = at.year();
    while occurrence(year).end >= first_of_month {
        year -= 1;
    }
    occurrence(year)
}

/// The first firing on the schedule's beat (`anchor` plus whole cadences) after both `due_at` and
/// `now`: a schedule that missed firings maps the latest period once rather than once per firing
/// missed, and a beat on the 31st stays there in the months that have one.
#[must_use]
pub fn next_after(
    anchor: DateTime<Utc>,
    due_at: DateTime<Utc>,
    cadence: &str,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let step = step_of(cadence).map_or(1, |m| m.as_u32());
    let after = due_at.max(now);
    // Months from the anchor to `after`, then on until past it.
    let months_between = |a: DateTime<Utc>, b: DateTime<Utc>| {
        (b.year() - a.year()) * 12 + i32::try_from(b.month()).unwrap_or(0)
            - i32::try_from(a.month()).unwrap_or(0)
    };
    let mut k = u32::try_from(months_between(anchor, after).max(0)).unwrap_or(0) / step;
    loop {
        k += 1;
        match anchor.checked_add_months(Months::new(k * step)) {
            Some(t) if t > after => return t,
            Some(_) => {}
            None => return after,
        }
    }
}

/// The 5th of the month after `now`, 00:00 UTC.
fn default_first_run(now: DateTime<Utc>) -> DateTime<Utc> {
    let next = NaiveDate::from_ymd_opt(now.year(), now.month(), 5)
        .and_then(|d| d.checked_add_months(Months::new(1)))
        .unwrap_or_default();
    Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0).unwrap_or_default())
}

fn view(s: Schedule, project: &projects::Project) -> ScheduleView {
    let next_period = period_for(s.next_at, project.start, project.end);
    ScheduleView {
        schedule: s,
        next_period,
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

/// Sets (or replaces) a project's schedule.
pub async fn set(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    body: SetSchedule,
) -> ApiResult<ScheduleView> {
    actor.require(Role::Member)?;
    let user = actor
        .user_id
        .ok_or_else(|| invalid("cadence", "a schedule is set by a member"))?;
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    if step_of(&body.cadence).is_none() {
        return Err(invalid("cadence", "must be monthly, quarterly or yearly"));
    }
    let now = Utc::now();
    if body.first_run.is_some_and(|t| {
        t < now.checked_sub_months(Months::new(60)).unwrap_or(now)
            || t > now.checked_add_months(Months::new(24)).unwrap_or(now)
    }) {
        return Err(invalid(
            "first_run",
            "must be within the last five years or the next two",
        ));
    }
    // Saved again with the same cadence and no first firing: it keeps its beat.
    let existing = schedules::get(&state.pool, actor.org_id, project_id).await?;
    let (anchor_at, next_at) = match (body.first_run, &existing) {
        (Some(t), _) => (t, t),
        (None, Some(e)) if e.cadence == body.cadence => (e.anchor_at, e.next_at),
        (None, _) => {
            let t = default_first_run(now);
            (t, t)
        }
    };
    if body
        .change_alert_km2
        .is_some_and(|k| !(k.is_finite() && k > 0.0))
    {
        return Err(invalid("change_alert_km2", "must be a positive number"));
    }
    if let Some(run_id) = body.run_id {
        models::trained_run(&state.pool, actor.org_id, project_id, Some(run_id)).await?;
    } else if let Err(groundwork_store::Error::NotFound { .. }) =
        models::trained_run(&state.pool, actor.org_id, project_id, None).await
    {
        return Err(invalid(
            "run_id",
            "the project has no trained model yet; train one first",
        ));
    }
    // The catalogue: as given, or the project's last acquisition's.
    let mut errors = Vec::new();
    let catalogue = super::imagery::catalogue_or_last(
        state,
        project_id,
        (body.stac.clone(), body.profile.clone(), body.max_cloud),
        &mut errors,
    )
    .await?;
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let schedule = schedules::set(
        &state.pool,
        actor.org_id,
        project_id,
        &NewSchedule {
            cadence: body.cadence.clone(),
            stac: catalogue.stac,
            profile: serde_json::to_value(&catalogue.profile).unwrap_or_default(),
            max_cloud: catalogue.max_cloud,
            training_run_id: body.run_id,
            change_alert_km2: body.change_alert_km2,
            created_by: user,
            anchor_at,
            next_at,
        },
    )
    .await?;
    actor
        .audit(
            state,
            "project.schedule_set",
            "project",
            project_id,
            json!({"cadence": body.cadence, "next_at": schedule.next_at,
                   "change_alert_km2": body.change_alert_km2}),
        )
        .await;
    Ok(view(schedule, &project))
}

/// A project's schedule.
pub async fn get(state: &AppState, actor: &Actor, project_id: Uuid) -> ApiResult<ScheduleView> {
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    match schedules::get(&state.pool, actor.org_id, project_id).await? {
        Some(s) => Ok(view(s, &project)),
        None => Err(ApiError::not_found("schedule")),
    }
}

/// Removes a project's schedule.
pub async fn delete(state: &AppState, actor: &Actor, project_id: Uuid) -> ApiResult<()> {
    actor.require(Role::Member)?;
    if !schedules::delete(&state.pool, actor.org_id, project_id).await? {
        return Err(ApiError::not_found("schedule"));
    }
    actor
        .audit(
            state,
            "project.schedule_delete",
            "project",
            project_id,
            json!({}),
        )
        .await;
    Ok(())
}

/// The member a schedule acts for, while they may still start predictions in its organisation.
async fn acting_member(state: &AppState, s: &Schedule) -> Result<Actor, String> {
    let role = groundwork_store::accounts::role_in(&state.pool, s.org_id, s.created_by)
        .await
        .map_err(|e| format!("{e}"))?;
    match role {
        Some(role) if role >= Role::Member => Ok(Actor {
            user_id: Some(s.created_by),
            org_id: s.org_id,
            role,
            credential: Credential::Schedule {
                project_id: s.project_id,
            },
            ip: None,
        }),
        _ => Err(
            "the member who set the schedule can no longer start predictions in the organisation; \
             set it again"
                .into(),
        ),
    }
}

/// How long a firing that could not start for a passing reason waits before it is tried again.
const RETRY_AFTER: chrono::Duration = chrono::Duration::hours(1);

/// Starts the runs of the schedules that are due (one period each); returns how many started.
pub async fn fire_due(state: &AppState) -> anyhow::Result<u64> {
    let mut started = 0;
    for s in schedules::take_due(&state.pool, 10).await? {
        let now = Utc::now();
        let next_at = next_after(s.anchor_at, s.next_at, &s.cadence, now);
        let project = match projects::get(&state.pool, s.org_id, s.project_id).await {
            Ok(p) => p,
            Err(groundwork_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        // The period of the time it was due (a retried firing maps the same one).
        let period = period_for(s.next_at, project.start, project.end);
        if s.mapped_period_end.is_some_and(|end| end >= period.end) {
            // Mapped already (a season-long project between its seasons, or a schedule set again).
            schedules::advance(&state.pool, s.project_id, next_at).await?;
            continue;
        }
        let actor = match acting_member(state, &s).await {
            Ok(actor) => actor,
            Err(e) => {
                schedules::fired(&state.pool, s.project_id, next_at, period.end, Err(e)).await?;
                continue;
            }
        };
        let body = super::models::PredictRequest {
            run_id: s.training_run_id,
            start: Some(period.start),
            end: Some(period.end),
            stac: Some(s.stac.clone()),
            profile: Some(s.profile.clone()),
            max_cloud: s.max_cloud,
            ..Default::default()
        };
        // One run per period and try, however often a firing is retried; a try that failed gets
        // a new key.
        let prefix = format!("schedule-{}-{}-", period.start, period.end);
        let tries = schedules::failed_tries(&state.pool, s.project_id, &prefix).await?;
        let key = format!("{prefix}{tries}");
        match super::models::start_prediction(state, &actor, s.project_id, Some(&key), body).await {
            Ok(run) => {
                started += 1;
                schedules::fired(
                    &state.pool,
                    s.project_id,
                    next_at,
                    period.end,
                    Ok(run.run.id),
                )
                .await?;
            }
            // A passing reason (an acquisition under way, a full quota or queue, the database or
            // the object store briefly away): the same firing again later.
            Err(e)
                if e.status == StatusCode::CONFLICT
                    || e.status == StatusCode::TOO_MANY_REQUESTS
                    || e.status.is_server_error() =>
            {
                let why = format!("{} (tried again at {})", e.message(), now + RETRY_AFTER);
                tracing::warn!(project = %s.project_id, "a scheduled prediction was put off: {why}");
                schedules::put_off(&state.pool, s.project_id, now + RETRY_AFTER, &why).await?;
            }
            // What someone must fix (no trained model, a catalogue the policy refuses): this
            // period is passed over, and the reason shown.
            Err(e) => {
                tracing::warn!(project = %s.project_id, "a scheduled prediction did not start: {}", e.message());
                schedules::fired(
                    &state.pool,
                    s.project_id,
                    next_at,
                    period.end,
                    Err(e.message().to_owned()),
                )
                .await?;
            }
        }
    }
    Ok(started)
}

/// The change pairs of a change map that cover more than `km2`, as the alert states them.
fn over_threshold(view: &super::changes::ChangeView, km2: f64) -> Vec<serde_json::Value> {
    let name = |id: u8| {
        view.classes
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| id.to_string(), |c| c.name.clone())
    };
    view.pairs
        .iter()
        .filter(|p| p.from != p.to && p.area_ha / 100.0 > km2)
        .map(|p| {
            json!({"from": p.from, "from_name": name(p.from), "to": p.to, "to_name": name(p.to),
                   "km2": p.area_ha / 100.0})
        })
        .collect()
}

/// Looks at the finished runs of schedules: a new class map is compared with the schedule's previous
/// one (for its first run, the project's map of its own area whose period ended last before) as a
/// change map, and a change over the threshold queues a `change.alert`; returns how many runs were
/// looked at.
pub async fn compare_finished(state: &AppState) -> anyhow::Result<u64> {
    let mut n = 0;
    for (s, run_state) in schedules::take_unchecked(&state.pool, 10).await? {
        n += 1;
        let Some(run_id) = s.last_run_id else {
            continue;
        };
        if run_state != "succeeded" {
            let why = format!("the scheduled run {run_id} {run_state}");
            schedules::record_check(
                &state.pool,
                s.project_id,
                run_id,
                false,
                None,
                None,
                Some(&why),
            )
            .await?;
            continue;
        }
        let output = outputs::class_map_of_run(&state.pool, s.org_id, run_id).await?;
        // The map before: the schedule's last, else the project's map of its own area whose period
        // ended last before this one began.
        let before = match (s.last_output_id, output) {
            (Some(id), _) => Some(id),
            (None, Some(to)) => outputs::class_map_before(&state.pool, to).await?,
            (None, None) => None,
        };
        let (change, error) = match (before, output) {
            (Some(from), Some(to)) => match acting_member(state, &s).await {
                Err(e) => (None, Some(e)),
                Ok(actor) => {
                    let body = super::changes::CreateChange { from, to };
                    match super::changes::create(state, &actor, s.project_id, body).await {
                        Ok(v) => (Some(v), None),
                        Err(e) => (None, Some(format!("comparing the maps: {}", e.message()))),
                    }
                }
            },
            _ => (None, None),
        };
        if let (Some(view), Some(km2)) = (&change, s.change_alert_km2) {
            let pairs = over_threshold(view, km2);
            if !pairs.is_empty() {
                groundwork_store::webhooks::queue_change_alert(
                    &state.pool,
                    s.project_id,
                    run_id,
                    &json!({"change_map_id": view.id, "from_output_id": view.from,
                            "to_output_id": view.to, "threshold_km2": km2, "pairs": pairs}),
                )
                .await?;
            }
        }
        schedules::record_check(
            &state.pool,
            s.project_id,
            run_id,
            true,
            output,
            change.as_ref().map(|v| v.id),
            error.as_deref(),
        )
        .await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::{Period, default_first_run, next_after, period_before, period_for};
    use chrono::{NaiveDate, TimeZone, Utc};

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn a_run_maps_the_full_months_before_it() {
        let at = Utc.with_ymd_and_hms(2025, 6, 5, 0, 0, 0).unwrap();
        assert_eq!(
            period_before(at, 2),
            Period {
                start: d("2025-04-01"),
                end: d("2025-05-31")
            }
        );
        // Across a year, and a leap February.
        let at = Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap();
        assert_eq!(
            period_before(at, 4),
            Period {
                start: d("2023-11-01"),
                end: d("2024-02-29")
            }
        );
        let at = Utc.with_ymd_and_hms(2025, 1, 31, 23, 59, 59).unwrap();
        assert_eq!(
            period_before(at, 12),
            Period {
                start: d("2024-01-01"),
                end: d("2024-12-31")
            }
        );
    }

    #[test]
    fn a_schedule_that_missed_firings_fires_next_on_its_beat_after_now() {
        let anchor = Utc.with_ymd_and_hms(2025, 6, 5, 0, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 18, 0, 0).unwrap();
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap();
        assert_eq!(next_after(anchor, anchor, "monthly", now), at(2027, 1, 5));
        assert_eq!(next_after(anchor, anchor, "quarterly", now), at(2027, 3, 5));
        assert_eq!(next_after(anchor, anchor, "yearly", now), at(2027, 6, 5));
        // On time: one cadence later.
        let on_time = Utc.with_ymd_and_hms(2025, 6, 5, 0, 0, 3).unwrap();
        assert_eq!(
            next_after(anchor, anchor, "monthly", on_time),
            at(2025, 7, 5)
        );
        // A beat on the 31st stays on it in the months that have one.
        let last = at(2025, 1, 31);
        assert_eq!(next_after(last, last, "monthly", last), at(2025, 2, 28));
        assert_eq!(
            next_after(last, at(2025, 2, 28), "monthly", at(2025, 2, 28)),
            at(2025, 3, 31)
        );
    }

    #[test]
    fn a_season_long_project_maps_its_own_months_of_the_latest_year_they_passed() {
        let (start, end) = (d("2024-04-01"), d("2024-07-31"));
        let at = |y, m, day| Utc.with_ymd_and_hms(y, m, day, 0, 0, 0).unwrap();
        let april_july = |y: i32| Period {
            start: d(&format!("{y}-04-01")),
            end: d(&format!("{y}-07-31")),
        };
        // In December, and in August right after the season: this year's; in July, last year's.
        assert_eq!(period_for(at(2026, 12, 5), start, end), april_july(2026));
        assert_eq!(period_for(at(2026, 8, 5), start, end), april_july(2026));
        assert_eq!(period_for(at(2026, 7, 5), start, end), april_july(2025));
        // A season across the new year.
        let (s2, e2) = (d("2023-11-01"), d("2024-02-29"));
        assert_eq!(
            period_for(at(2026, 12, 5), s2, e2),
            Period {
                start: d("2025-11-01"),
                end: d("2026-02-28")
            }
        );
        assert_eq!(
            period_for(at(2026, 2, 5), s2, e2),
            Period {
                start: d("2024-11-01"),
                end: d("2025-02-28")
            }
        );
        // A year-long project: the latest twelve months.
        assert_eq!(
            period_for(at(2026, 12, 5), d("2024-01-01"), d("2024-12-31")),
            Period {
                start: d("2025-12-01"),
                end: d("2026-11-30")
            }
        );
    }

    #[test]
    fn by_default_a_schedule_first_fires_on_the_fifth_of_next_month() {
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 18, 0, 0).unwrap();
        assert_eq!(
            default_first_run(now),
            Utc.with_ymd_and_hms(2027, 1, 5, 0, 0, 0).unwrap()
        );
    }
}
