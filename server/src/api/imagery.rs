//! Acquisition: `POST /api/v1/projects/{id}/acquire` starts a run of partitioned `acquire` steps with an
//! `acquire_summary` fan-in; `GET /api/v1/projects/{id}/windows` lists the windows and their status.

use super::AppState;
use super::auth::Actor;
use super::error::ApiResult;
use super::extract::{Json, Path, Query};
use crate::service::imagery as service;
pub use crate::service::imagery::{AcquireBody, WindowPage, WindowQuery};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use groundwork_store::jobs::RunWithSteps;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Plans the windows and starts the acquisition run.
#[utoipa::path(post, path = "/api/v1/projects/{id}/acquire", request_body = AcquireBody, tag = "imagery",
    responses((status = 201, body = RunWithSteps), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn acquire(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<AcquireBody>,
) -> ApiResult<(StatusCode, axum::Json<RunWithSteps>)> {
    let out = service::acquire(
        &state,
        &actor,
        project_id,
        super::idempotency_key(&headers),
        body,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// A project's windows.
#[utoipa::path(get, path = "/api/v1/projects/{id}/windows", params(WindowQuery), tag = "imagery",
    responses((status = 200, body = WindowPage), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_windows(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<WindowQuery>,
) -> ApiResult<axum::Json<WindowPage>> {
    Ok(axum::Json(
        service::list_windows(&state, &actor, project_id, q).await?,
    ))
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(acquire))
        .routes(routes!(list_windows))
}
