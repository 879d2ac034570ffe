//! API tokens (`/api/v1/tokens`), worker tokens (`/api/v1/worker-tokens`) and the audit log
//! (`/api/v1/audit`) of the current organisation.

use super::accounts::Items;
use super::auth::Actor;
use super::error::ApiResult;
use super::extract::{Json, Path, Query};
use super::{AppState, Page, PageQuery};
use crate::service::tokens as service;
pub use crate::service::tokens::{CreateToken, CreateWorkerToken, NewToken, NewWorkerToken};
use axum::extract::State;
use axum::http::StatusCode;
use groundwork_store::accounts::{ApiToken, WorkerToken};
use groundwork_store::audit;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Creates an API token for the caller in the current organisation. The token never has more rights
/// than its user: the user's role there applies, and `read` limits it to safe methods.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = CreateToken, tag = "tokens",
    responses((status = 201, body = NewToken), (status = 422, body = super::error::ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<CreateToken>,
) -> ApiResult<(StatusCode, axum::Json<NewToken>)> {
    let out = service::create_token(&state, &actor, body).await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// API tokens in the current organisation: the caller's own, or everyone's for admins.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = Items<ApiToken>)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<axum::Json<Items<ApiToken>>> {
    Ok(axum::Json(service::list_tokens(&state, &actor).await?))
}

/// Revokes an API token: the caller's own, or anyone's in the organisation for admins.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    service::revoke_token(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates a worker token: workers that present it join the current organisation (admins). Once any
/// worker token exists, workers without one are refused.
#[utoipa::path(post, path = "/api/v1/worker-tokens", request_body = CreateWorkerToken, tag = "workers",
    responses((status = 201, body = NewWorkerToken), (status = 403, body = super::error::ErrorBody)))]
pub async fn create_worker_token(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<CreateWorkerToken>,
) -> ApiResult<(StatusCode, axum::Json<NewWorkerToken>)> {
    let out = service::create_worker_token(&state, &actor, body).await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// Worker tokens of the current organisation (admins).
#[utoipa::path(get, path = "/api/v1/worker-tokens", tag = "workers", responses((status = 200, body = Items<WorkerToken>)))]
pub async fn list_worker_tokens(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<axum::Json<Items<WorkerToken>>> {
    Ok(axum::Json(
        service::list_worker_tokens(&state, &actor).await?,
    ))
}

/// Revokes a worker token (admins): no new registrations with it; its workers drain.
#[utoipa::path(delete, path = "/api/v1/worker-tokens/{id}", tag = "workers",
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub async fn revoke_worker_token(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    service::revoke_worker_token(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The current organisation's audit log, newest first (admins).
#[utoipa::path(get, path = "/api/v1/audit", params(PageQuery), tag = "audit", responses((status = 200, body = Page<audit::Record>)))]
pub async fn list_audit(
    State(state): State<AppState>,
    actor: Actor,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<audit::Record>>> {
    Ok(axum::Json(service::list_audit(&state, &actor, q).await?))
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_worker_tokens, create_worker_token))
        .routes(routes!(revoke_worker_token))
        .routes(routes!(list_audit))
}
