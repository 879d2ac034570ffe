//! Worker administration: `/api/v1/workers`, `/api/v1/pools`.

use super::AppState;
use super::auth::Actor;
use super::error::ApiResult;
use super::extract::Path;
use crate::service::workers as service;
pub use crate::service::workers::Items;
use axum::extract::State;
use groundwork_store::workers::{Pool, Worker};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// The organisation's workers seen in the last day, with derived state (`offline` when silent).
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers", responses((status = 200, body = Items<Worker>)))]
pub async fn list_workers(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<axum::Json<Items<Worker>>> {
    Ok(axum::Json(service::list_workers(&state, &actor).await?))
}

/// Drains a worker: it finishes its running steps and takes no new ones.
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "workers", responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody)))]
pub async fn drain_worker(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Worker>> {
    Ok(axum::Json(service::drain_worker(&state, &actor, id).await?))
}

/// Pauses a worker: it takes no new steps until resumed.
#[utoipa::path(post, path = "/api/v1/workers/{id}/pause", tag = "workers", responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody)))]
pub async fn pause_worker(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Worker>> {
    Ok(axum::Json(service::pause_worker(&state, &actor, id).await?))
}

/// Resumes a drained or paused worker.
#[utoipa::path(post, path = "/api/v1/workers/{id}/resume", tag = "workers", responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody)))]
pub async fn resume_worker(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Worker>> {
    Ok(axum::Json(
        service::resume_worker(&state, &actor, id).await?,
    ))
}

/// Query of `GET /api/v1/usage`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct UsageQuery {
    /// `YYYY-MM` (UTC; default: this month).
    pub month: Option<String>,
}

/// The organisation's device time in a month by device kind (CPU and GPU hours, of which on the
/// installation's workers), with its quotas, what is left and the cost at the installation's prices.
/// Admins and owners.
#[utoipa::path(get, path = "/api/v1/usage", params(UsageQuery), tag = "workers",
    responses((status = 200, body = crate::service::usage::Usage), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn get_usage(
    State(state): State<AppState>,
    actor: Actor,
    super::extract::Query(q): super::extract::Query<UsageQuery>,
) -> ApiResult<axum::Json<crate::service::usage::Usage>> {
    Ok(axum::Json(
        crate::service::usage::org_usage(&state, &actor, q.month.as_deref()).await?,
    ))
}

/// Per pool: workers by state, queue depth, running steps, busy fraction over the last hour.
#[utoipa::path(get, path = "/api/v1/pools", tag = "workers", responses((status = 200, body = Items<Pool>)))]
pub async fn list_pools(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<axum::Json<Items<Pool>>> {
    Ok(axum::Json(service::list_pools(&state, &actor).await?))
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workers))
        .routes(routes!(drain_worker))
        .routes(routes!(pause_worker))
        .routes(routes!(resume_worker))
        .routes(routes!(list_pools))
        .routes(routes!(get_usage))
}
