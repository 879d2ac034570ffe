//! Worker administration: listing the organisation's workers and pools, draining, pausing and
//! resuming a worker.

use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode};
use groundwork_store::workers::{self, Pool, Worker};
use serde::Serialize;
use uuid::Uuid;

/// List wrapper.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Items<T> {
    /// The items.
    pub items: Vec<T>,
}

/// Admins drain, pause and resume their organisation's workers; another organisation's are not found,
/// and the installation's workers that the organisation may use are shown to it read-only.
async fn set(state: &AppState, actor: &Actor, id: Uuid, admin_state: &str) -> ApiResult<Worker> {
    actor.require(Role::Admin)?;
    let seen = workers::get_in_org(&state.pool, actor.org_id, id).await?;
    if seen.org_id != actor.org_id {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this is one of the installation's shared workers: only the installation's administrators drain, \
             pause or resume it",
        ));
    }
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
    Ok(w)
}

/// The organisation's workers seen in the last day, with derived state (`offline` when silent), and
/// the installation's shared workers when the organisation may use them (`installation: true`).
pub async fn list_workers(state: &AppState, actor: &Actor) -> ApiResult<Items<Worker>> {
    Ok(Items {
        items: workers::list_in_org(&state.pool, actor.org_id).await?,
    })
}

/// Drains a worker: it finishes its running steps and takes no new ones.
pub async fn drain_worker(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<Worker> {
    set(state, actor, id, "draining").await
}

/// Pauses a worker: it takes no new steps until resumed.
pub async fn pause_worker(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<Worker> {
    set(state, actor, id, "paused").await
}

/// Resumes a drained or paused worker.
pub async fn resume_worker(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<Worker> {
    set(state, actor, id, "active").await
}

/// Per pool: workers by state, queue depth, running steps, busy fraction over the last hour.
pub async fn list_pools(state: &AppState, actor: &Actor) -> ApiResult<Items<Pool>> {
    Ok(Items {
        items: workers::pools_in_org(&state.pool, actor.org_id).await?,
    })
}
