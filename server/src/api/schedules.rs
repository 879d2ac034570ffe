//! A project's schedule (monitoring over time): `PUT|GET|DELETE /api/v1/projects/{id}/schedule`.

use super::AppState;
use super::auth::Actor;
use super::error::ApiResult;
use super::extract::{Json, Path};
use crate::service::schedules as service;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Sets (or replaces) the project's schedule. Every month, quarter or year the server starts a
/// prediction (`POST …/predict` with `start` and `end`) of the latest full period (a project of a
/// year or more: its length in months up to the month before; a shorter one: the latest passed
/// occurrence of its own months, each once), from the catalogue given (default: the last
/// acquisition's), for the member who set the schedule; quotas apply as to any prediction, and a
/// firing refused for a passing reason is tried again an hour later. Each new class map is compared with the
/// previous one (a change map, `last_change_map_id`), and when a change from one class to another
/// covers more than `change_alert_km2`, the project's webhook gets a `change.alert` event with the
/// change map and the pairs over the threshold. Members.
#[utoipa::path(put, path = "/api/v1/projects/{id}/schedule", request_body = service::SetSchedule, tag = "projects",
    responses((status = 200, body = service::ScheduleView), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn set_schedule(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(body): Json<service::SetSchedule>,
) -> ApiResult<axum::Json<service::ScheduleView>> {
    Ok(axum::Json(service::set(&state, &actor, id, body).await?))
}

/// The project's schedule: when it fires next and which period that run maps, its last run, map,
/// change map, and why its last run did not start or compare, if so.
#[utoipa::path(get, path = "/api/v1/projects/{id}/schedule", tag = "projects",
    responses((status = 200, body = service::ScheduleView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_schedule(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<service::ScheduleView>> {
    Ok(axum::Json(service::get(&state, &actor, id).await?))
}

/// Removes the project's schedule (runs it started go on). Members.
#[utoipa::path(delete, path = "/api/v1/projects/{id}/schedule", tag = "projects",
    responses((status = 204), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete_schedule(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    service::delete(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(set_schedule, get_schedule, delete_schedule))
}
