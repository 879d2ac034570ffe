//! A project's webhook: `PUT|GET|DELETE /api/v1/projects/{id}/webhook`.

use super::AppState;
use super::auth::Actor;
use super::error::ApiResult;
use super::extract::{Json, Path};
use crate::service::webhooks as service;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Sets (or replaces) the project's webhook: each time one of its runs finishes, a POST of
/// `{event: "run.finished", delivery, run_id, project_id, org_id, state, started_at, finished_at,
/// steps: [{name, kind, state}], outputs: [{id, kind}]}`, signed in `X-Groundwork-Signature`
/// (`sha256=` HMAC-SHA256 of the body under the secret this answer shows once). A non-2xx answer is
/// retried with backoff (30 s doubling, 8 attempts). The URL must be http(s) and allowed by the
/// outbound-request policy. Administrators.
#[utoipa::path(put, path = "/api/v1/projects/{id}/webhook", request_body = service::SetWebhook, tag = "projects",
    responses((status = 200, body = service::WebhookSet), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn set_webhook(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(body): Json<service::SetWebhook>,
) -> ApiResult<axum::Json<service::WebhookSet>> {
    Ok(axum::Json(service::set(&state, &actor, id, body).await?))
}

/// The project's webhook and its latest 20 deliveries (state, attempts, last status or error).
/// Administrators.
#[utoipa::path(get, path = "/api/v1/projects/{id}/webhook", tag = "projects",
    responses((status = 200, body = service::WebhookStatus), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn get_webhook(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<service::WebhookStatus>> {
    Ok(axum::Json(service::get(&state, &actor, id).await?))
}

/// Removes the project's webhook; deliveries not yet sent are dropped. Administrators.
#[utoipa::path(delete, path = "/api/v1/projects/{id}/webhook", tag = "projects",
    responses((status = 204), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    service::delete(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(set_webhook, get_webhook, delete_webhook))
}
