//! Runs and steps: `/api/v1/projects/{id}/runs`, `/api/v1/runs/{id}`, `/api/v1/steps/{id}/…`.

use super::auth::Actor;
use super::error::ApiResult;
use super::extract::{Json, Path, Query};
use super::{AppState, Page, PageQuery};
use crate::service::runs as service;
pub use crate::service::runs::{CreateRun, StepSpec};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use groundwork_store::jobs::{Run, RunWithSteps, Step};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Starts a run. Send `Idempotency-Key` to make retries of this request safe.
#[utoipa::path(post, path = "/api/v1/projects/{id}/runs", request_body = CreateRun, tag = "runs",
    responses((status = 201, body = RunWithSteps), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create_run(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<CreateRun>,
) -> ApiResult<(StatusCode, axum::Json<RunWithSteps>)> {
    let out = service::create_run(
        &state,
        &actor,
        project_id,
        super::idempotency_key(&headers),
        body,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// Runs of a project, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{id}/runs", params(PageQuery), tag = "runs", responses((status = 200, body = Page<Run>)))]
pub async fn list_runs(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Run>>> {
    Ok(axum::Json(
        service::list_runs(&state, &actor, project_id, q).await?,
    ))
}

/// A run with its steps.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", responses((status = 200, body = RunWithSteps), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_run(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<RunWithSteps>> {
    Ok(axum::Json(service::get_run(&state, &actor, id).await?))
}

/// One step.
#[utoipa::path(get, path = "/api/v1/steps/{id}", tag = "runs", responses((status = 200, body = Step), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_step(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Step>> {
    Ok(axum::Json(service::get_step(&state, &actor, id).await?))
}

/// Cancels a step: a queued one at once, a running one at its next heartbeat (within seconds).
#[utoipa::path(post, path = "/api/v1/steps/{id}/cancel", tag = "runs",
    responses((status = 202, body = Step), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn cancel_step(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, axum::Json<Step>)> {
    let out = service::cancel_step(&state, &actor, id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(out)))
}

/// Retries a failed or cancelled step (and what its failure cancelled downstream).
#[utoipa::path(post, path = "/api/v1/steps/{id}/retry", tag = "runs",
    responses((status = 202, body = Step), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn retry_step(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, axum::Json<Step>)> {
    let out = service::retry_step(&state, &actor, id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(out)))
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_run, list_runs))
        .routes(routes!(get_run))
        .routes(routes!(get_step))
        .routes(routes!(cancel_step))
        .routes(routes!(retry_step))
}
