//! Worker administration: `/api/v1/workers`, `/api/v1/pools`.

use super::AppState;
use super::auth::{Actor, Role};
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

/// The organisation's workers seen in the last day, with derived state (`offline` when silent).
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers", responses((status = 200, body = Items<Worker>)))]
pub async fn list_workers(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<axum::Json<Items<Worker>>> {
    Ok(axum::Json(Items {
        items: workers::list_in_org(&state.pool, actor.org_id).await?,
    }))
}

/// Admins drain, pause and resume their organisation's workers; another organisation's are not found.
async fn set(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    admin_state: &str,
) -> ApiResult<axum::Json<Worker>> {
    actor.require(Role::Admin)?;
    let w = workers::set_admin_state_in_org(&state.pool, actor.org_id, id, admin_state).await?;
    actor
        .audit(
            state,
            "worker.set_state",
            "worker",
            id,
            serde_json::json!({"admin_state": admin_state}),
        )
        .await;
    Ok(axum::Json(w))
}

/// Drains a worker: it finishes its running steps and takes no new ones.
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "workers", responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody)))]
pub async fn drain_worker(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Worker>> {
    set(&state, &actor, id, "draining").await
}

/// Pauses a worker: it takes no new steps until resumed.
#[utoipa::path(post, path = "/api/v1/workers/{id}/pause", tag = "workers", responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody)))]
pub async fn pause_worker(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Worker>> {
    set(&state, &actor, id, "paused").await
}

/// Resumes a drained or paused worker.
#[utoipa::path(post, path = "/api/v1/workers/{id}/resume", tag = "workers", responses((status = 200, body = Worker), (status = 404, body = super::error::ErrorBody)))]
pub async fn resume_worker(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Worker>> {
    set(&state, &actor, id, "active").await
}

/// Per pool: workers by state, queue depth, running steps, busy fraction over the last hour.
#[utoipa::path(get, path = "/api/v1/pools", tag = "workers", responses((status = 200, body = Items<Pool>)))]
pub async fn list_pools(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<axum::Json<Items<Pool>>> {
    Ok(axum::Json(Items {
        items: workers::pools_in_org(&state.pool, actor.org_id).await?,
    }))
}
