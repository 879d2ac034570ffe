//! Worker administration: `/api/v1/workers`, `/api/v1/pools`.

use super::AppState;
use super::error::ApiResult;
use super::extract::Path;
use axum::extract::State;
use groundwork_store::workers::{self, Pool, Worker};
use serde::Serialize;
use uuid::Uuid;

/// List wrapper.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Items<T> {
    /// The items.
    pub items: Vec<T>,
}

/// Workers seen in the last day, with derived state (`offline` when silent).
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers", responses((status = 200, body = Items<Worker>)))]
pub async fn list_workers(State(state): State<AppState>) -> ApiResult<axum::Json<Items<Worker>>> {
    Ok(axum::Json(Items {
        items: workers::list(&state.pool).await?,
    }))
}

async fn set(state: &AppState, id: Uuid, admin_state: &str) -> ApiResult<axum::Json<Worker>> {
    Ok(axum::Json(
        workers::set_admin_state(&state.pool, id, admin_state).await?,
    ))
}

/// Drains a worker: it finishes its running steps and takes no new ones.
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "workers", responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody)))]
pub async fn drain_worker(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Worker>> {
    set(&state, id, "draining").await
}

/// Pauses a worker: it takes no new steps until resumed.
#[utoipa::path(post, path = "/api/v1/workers/{id}/pause", tag = "workers", responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody)))]
pub async fn pause_worker(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Worker>> {
    set(&state, id, "paused").await
}

/// Resumes a drained or paused worker.
#[utoipa::path(post, path = "/api/v1/workers/{id}/resume", tag = "workers", responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody)))]
pub async fn resume_worker(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Worker>> {
    set(&state, id, "active").await
}

/// Per pool: workers by state, queue depth, running steps, busy fraction over the last hour.
#[utoipa::path(get, path = "/api/v1/pools", tag = "workers", responses((status = 200, body = Items<Pool>)))]
pub async fn list_pools(State(state): State<AppState>) -> ApiResult<axum::Json<Items<Pool>>> {
    Ok(axum::Json(Items {
        items: workers::pools(&state.pool).await?,
    }))
}
