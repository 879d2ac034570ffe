//! Label suggestions (active learning): start a `suggest` run for a project, read its latest
//! suggestions, and record what the user made of one.

use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use groundwork_store::jobs::{self, RunWithSteps};
use groundwork_store::suggestions::{self, Status, Suggestion, SuggestionSet};
use groundwork_store::{models, projects, windows};
use groundwork_worker::StepArgs;
use groundwork_worker::steps::SuggestArgs;
use groundwork_worker::steps::suggest::MAX_COUNT;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Body of `POST /api/v1/projects/{id}/suggestions`; every field is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuggestRequest {
    /// How many points, 1–200 (default 20).
    pub count: Option<u32>,
    /// How many unlabelled windows to consider at most, 1–10,000 (default 300; a seeded sample).
    pub max_windows: Option<u32>,
}

/// Body of `PATCH /api/v1/projects/{id}/suggestions/{run}/{rank}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuggestionAnswer {
    /// `labelled`, `skipped`, `unsure` or `open` (to undo).
    pub status: Status,
}

/// The latest suggestions of a project, and the suggestion run still open, if any.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Suggestions {
    /// The latest succeeded run's suggestions; `null` before the first.
    pub latest: Option<SuggestionSet>,
    /// A `suggest` run that has not finished yet.
    pub pending_run_id: Option<Uuid>,
}

/// Starts a run of one `suggest` step. 409 when the project has no acquired imagery or its imagery is
/// stale. The step goes to the `gpu` queue when a GPU worker is online, else to `cpu`.
pub async fn start(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    idempotency_key: Option<&str>,
    body: SuggestRequest,
) -> ApiResult<RunWithSteps> {
    actor.require(Role::Member)?;
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let mut errors = Vec::new();
    if body.count.is_some_and(|n| !(1..=MAX_COUNT).contains(&n)) {
        errors.push(FieldError {
            field: "count".into(),
            message: format!("must be 1–{MAX_COUNT}"),
        });
    }
    if body.max_windows.is_some_and(|n| !(1..=10_000).contains(&n)) {
        errors.push(FieldError {
            field: "max_windows".into(),
            message: "must be 1–10000".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    if let Some(msg) = windows::stale_refusal(&state.pool, project_id).await? {
        return Err(ApiError::new(ErrorCode::Conflict, msg));
    }
    if windows::counts(&state.pool, project_id).await?.acquired == 0 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "the project has no acquired imagery yet: acquire imagery first",
        ));
    }
    let queue = if models::gpu_worker_online(&state.pool, actor.org_id).await? {
        "gpu"
    } else {
        "cpu"
    };
    let mut step = SuggestArgs {
        count: body.count,
        max_windows: body.max_windows,
        device: None,
    }
    .to_step("suggest", queue);
    step.max_attempts = 3;
    Ok(jobs::create_run(
        &state.pool,
        actor.org_id,
        project_id,
        &[step],
        idempotency_key,
    )
    .await?)
}

/// The latest suggestions and any open suggestion run.
pub async fn get(state: &AppState, actor: &Actor, project_id: Uuid) -> ApiResult<Suggestions> {
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let latest = suggestions::latest(&state.pool, actor.org_id, project_id).await?;
    let pending_run_id = suggestions::pending_run(&state.pool, actor.org_id, project_id).await?;
    Ok(Suggestions {
        latest,
        pending_run_id,
    })
}

/// Records what the user made of one suggestion.
pub async fn answer(
    state: &AppState,
    actor: &Actor,
    (project_id, run_id, rank): (Uuid, Uuid, i32),
    body: SuggestionAnswer,
) -> ApiResult<Suggestion> {
    actor.require(Role::Member)?;
    projects::get(&state.pool, actor.org_id, project_id).await?;
    Ok(suggestions::set_status(
        &state.pool,
        actor.org_id,
        project_id,
        run_id,
        rank,
        body.status,
    )
    .await?)
}
