//! Runs and steps: `/api/v1/projects/{id}/runs`, `/api/v1/runs/{id}`, `/api/v1/steps/{id}/…`.

use super::auth::{Actor, Role};
use super::error::{ApiError, ApiResult, FieldError};
use super::extract::{Json, Path, Query};
use super::{AppState, Page, PageQuery};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use groundwork_store::jobs::{self, NewStep, Run, RunWithSteps, Step};
use groundwork_store::projects;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// A step of a new run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the run.
    pub name: String,
    /// A step kind this installation knows (see `GET /api/v1/step-kinds`).
    pub kind: String,
    /// Kind-specific arguments.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Value,
    /// `cpu` (default) or `gpu`.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Attempts (1–20, default 3).
    #[serde(default = "default_attempts")]
    pub max_attempts: i32,
    /// First retry delay in ms (default 5000).
    #[serde(default = "default_backoff")]
    pub backoff_ms: i32,
    /// Names of steps that must succeed first.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

fn default_queue() -> String {
    "cpu".into()
}
fn default_attempts() -> i32 {
    3
}
fn default_backoff() -> i32 {
    5000
}

/// Body of `POST /api/v1/projects/{id}/runs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// The step graph.
    pub steps: Vec<StepSpec>,
}

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
    actor.require(Role::Member)?;
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let mut errors = Vec::new();
    if body.steps.is_empty() || body.steps.len() > 20_000 {
        errors.push(FieldError {
            field: "steps".into(),
            message: "a run has 1–20000 steps".into(),
        });
    }
    let kinds = state.step_kinds.as_slice();
    for (i, s) in body.steps.iter().enumerate() {
        if !kinds.contains(&s.kind) {
            errors.push(FieldError {
                field: format!("steps[{i}].kind"),
                message: format!("unknown step kind {:?}; known: {kinds:?}", s.kind),
            });
        }
        if !["cpu", "gpu"].contains(&s.queue.as_str()) {
            errors.push(FieldError {
                field: format!("steps[{i}].queue"),
                message: "must be cpu or gpu".into(),
            });
        }
        if !(1..=20).contains(&s.max_attempts) {
            errors.push(FieldError {
                field: format!("steps[{i}].max_attempts"),
                message: "must be 1–20".into(),
            });
        }
        if !(0..=3_600_000).contains(&s.backoff_ms) {
            errors.push(FieldError {
                field: format!("steps[{i}].backoff_ms"),
                message: "must be 0–3600000".into(),
            });
        }
        if s.name.trim().is_empty() {
            errors.push(FieldError {
                field: format!("steps[{i}].name"),
                message: "must not be empty".into(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let steps: Vec<NewStep> = body
        .steps
        .into_iter()
        .map(|s| NewStep {
            name: s.name,
            kind: s.kind,
            args: if s.args.is_null() {
                serde_json::json!({})
            } else {
                s.args
            },
            queue: s.queue,
            max_attempts: s.max_attempts,
            backoff_base_ms: s.backoff_ms,
            depends_on: s.depends_on,
        })
        .collect();
    let key = super::idempotency_key(&headers);
    let run = jobs::create_run(&state.pool, actor.org_id, project_id, &steps, key)
        .await
        .map_err(|e| match e {
            groundwork_store::Error::Conflict(msg) => ApiError::validation(vec![FieldError {
                field: "steps".into(),
                message: msg,
            }]),
            other => other.into(),
        })?;
    actor
        .audit(
            &state,
            "run.create",
            "run",
            run.run.id,
            serde_json::json!({"project_id": project_id, "steps": run.steps.len()}),
        )
        .await;
    Ok((StatusCode::CREATED, axum::Json(run)))
}

/// Runs of a project, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{id}/runs", params(PageQuery), tag = "runs", responses((status = 200, body = Page<Run>)))]
pub async fn list_runs(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Run>>> {
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let limit = q.limit()?;
    let items = jobs::list_runs(
        &state.pool,
        actor.org_id,
        project_id,
        q.cursor()?,
        limit + 1,
    )
    .await?;
    Ok(axum::Json(Page::new(items, limit, |r| r.id)))
}

/// A run with its steps.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", responses((status = 200, body = RunWithSteps), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_run(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<RunWithSteps>> {
    Ok(axum::Json(
        jobs::get_run(&state.pool, actor.org_id, id).await?,
    ))
}

/// One step.
#[utoipa::path(get, path = "/api/v1/steps/{id}", tag = "runs", responses((status = 200, body = Step), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_step(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Step>> {
    Ok(axum::Json(
        jobs::get_step(&state.pool, actor.org_id, id).await?,
    ))
}

/// Cancels a step: a queued one at once, a running one at its next heartbeat (within seconds).
#[utoipa::path(post, path = "/api/v1/steps/{id}/cancel", tag = "runs",
    responses((status = 202, body = Step), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn cancel_step(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, axum::Json<Step>)> {
    actor.require(Role::Member)?;
    let step = jobs::request_cancel(&state.pool, actor.org_id, id).await?;
    actor
        .audit(&state, "step.cancel", "step", id, serde_json::json!({}))
        .await;
    Ok((StatusCode::ACCEPTED, axum::Json(step)))
}

/// Retries a failed or cancelled step (and what its failure cancelled downstream).
#[utoipa::path(post, path = "/api/v1/steps/{id}/retry", tag = "runs",
    responses((status = 202, body = Step), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn retry_step(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, axum::Json<Step>)> {
    actor.require(Role::Member)?;
    let step = jobs::retry(&state.pool, actor.org_id, id).await?;
    actor
        .audit(&state, "step.retry", "step", id, serde_json::json!({}))
        .await;
    Ok((StatusCode::ACCEPTED, axum::Json(step)))
}
