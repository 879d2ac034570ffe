//! `/api/v1/projects`.

use super::auth::Actor;
use super::error::ApiResult;
use super::extract::{Json, Path, Query};
use super::{AppState, Page, PageQuery};
use crate::service::projects as service;
pub use crate::service::projects::{CreateProject, UpdateProject};
use axum::extract::State;
use axum::http::StatusCode;
use groundwork_store::projects::Project;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Creates a project.
#[utoipa::path(post, path = "/api/v1/projects", request_body = CreateProject, tag = "projects",
    responses((status = 201, body = Project), (status = 400, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create_project(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<CreateProject>,
) -> ApiResult<(StatusCode, axum::Json<Project>)> {
    let out = service::create_project(&state, &actor, body).await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// Lists projects, newest first.
#[utoipa::path(get, path = "/api/v1/projects", params(PageQuery), tag = "projects", responses((status = 200, body = Page<Project>)))]
pub async fn list_projects(
    State(state): State<AppState>,
    actor: Actor,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Project>>> {
    Ok(axum::Json(service::list_projects(&state, &actor, q).await?))
}

/// One project.
#[utoipa::path(get, path = "/api/v1/projects/{id}", tag = "projects", responses((status = 200, body = Project), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_project(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Project>> {
    Ok(axum::Json(service::get_project(&state, &actor, id).await?))
}

/// Changes some fields of a project.
#[utoipa::path(patch, path = "/api/v1/projects/{id}", request_body = UpdateProject, tag = "projects",
    responses((status = 200, body = Project), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn update_project(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(patch): Json<UpdateProject>,
) -> ApiResult<axum::Json<Project>> {
    Ok(axum::Json(
        service::update_project(&state, &actor, id, patch).await?,
    ))
}

/// Deletes a project with its runs (admins; refused while a step runs).
#[utoipa::path(delete, path = "/api/v1/projects/{id}", tag = "projects",
    responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn delete_project(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    service::delete_project(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_project, list_projects))
        .routes(routes!(get_project, update_project, delete_project))
}
