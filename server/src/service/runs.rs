//! Runs and steps: starting a run of steps, listing and reading runs, reading, cancelling and retrying
//! steps.

use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::api::{AppState, Page, PageQuery};
use groundwork_store::jobs::{self, NewStep, Run, RunWithSteps, Step};
use groundwork_store::projects;
use groundwork_types::StepKind;
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
pub async fn create_run(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    idempotency_key: Option<&str>,
    body: CreateRun,
) -> ApiResult<RunWithSteps> {
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
    // Training and prediction count against a device-time quota, which their own endpoints estimate
    // and check: by hand they would pass it unseen.
    let terms = groundwork_store::usage::terms(&state.pool, actor.org_id).await?;
    let mut typed = Vec::with_capacity(body.steps.len());
    for (i, s) in body.steps.iter().enumerate() {
        let kind = s
            .kind
            .parse::<StepKind>()
            .ok()
            .filter(|k| kinds.iter().any(|n| n == k.name()));
        let args = if s.args.is_null() {
            serde_json::json!({})
        } else {
            s.args.clone()
        };
        match kind {
            None => errors.push(FieldError {
                field: format!("steps[{i}].kind"),
                message: format!("unknown step kind {:?}; known: {kinds:?}", s.kind),
            }),
            Some(k) => {
                // Pipeline kinds go through their own endpoints, which plan and check them; here
                // only administrators may start them by hand.
                if !k.is_test_kind() && actor.role < Role::Admin {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        format!(
                            "only administrators start `{k}` steps by hand; use the project's \
                             acquire, train or predict endpoint"
                        ),
                    ));
                }
                let device = groundwork_types::DeviceKind::of_queue(&s.queue);
                if matches!(k, StepKind::Train | StepKind::Predict) && terms.quota(device).is_some()
                {
                    errors.push(FieldError {
                        field: format!("steps[{i}].kind"),
                        message: format!(
                            "`{k}` steps count against the organisation's {device} quota: start them \
                             with the project's train or predict endpoint, which estimates them"
                        ),
                    });
                } else if let Err(e) = groundwork_worker::check_args(k, &args) {
                    errors.push(FieldError {
                        field: format!("steps[{i}].args"),
                        message: e.to_string(),
                    });
                } else if k == StepKind::Acquire
                    && let Some(stac) = args.get("stac").and_then(|v| v.as_str())
                    && let Err(e) = groundwork_imagery::Source::checked(stac, &state.outbound)
                {
                    // The same check as the acquire endpoint's; the worker checks again.
                    errors.push(FieldError {
                        field: format!("steps[{i}].args.stac"),
                        message: e.to_string(),
                    });
                }
            }
        }
        typed.push((kind, args));
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
        .zip(typed)
        .filter_map(|(s, (kind, args))| {
            Some(NewStep {
                name: s.name,
                kind: kind?,
                args,
                queue: s.queue,
                max_attempts: s.max_attempts,
                backoff_base_ms: s.backoff_ms,
                depends_on: s.depends_on,
                needs: serde_json::json!({}),
            })
        })
        .collect();
    let key = idempotency_key;
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
            state,
            "run.create",
            "run",
            run.run.id,
            serde_json::json!({"project_id": project_id, "steps": run.steps.len()}),
        )
        .await;
    Ok(run)
}

/// Runs of a project, newest first.
pub async fn list_runs(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    q: PageQuery,
) -> ApiResult<Page<Run>> {
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
    Ok(Page::new(items, limit, |r| r.id))
}

/// A run with its steps.
pub async fn get_run(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<RunWithSteps> {
    Ok(jobs::get_run(&state.pool, actor.org_id, id).await?)
}

/// One step.
pub async fn get_step(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<Step> {
    Ok(jobs::get_step(&state.pool, actor.org_id, id).await?)
}

/// Cancels a step: a queued one at once, a running one at its next heartbeat (within seconds).
pub async fn cancel_step(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<Step> {
    actor.require(Role::Member)?;
    let step = jobs::request_cancel(&state.pool, actor.org_id, id).await?;
    actor
        .audit(state, "step.cancel", "step", id, serde_json::json!({}))
        .await;
    Ok(step)
}

/// Retries a failed or cancelled step (and what its failure cancelled downstream).
pub async fn retry_step(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<Step> {
    actor.require(Role::Member)?;
    let step = jobs::retry(&state.pool, actor.org_id, id).await?;
    actor
        .audit(state, "step.retry", "step", id, serde_json::json!({}))
        .await;
    Ok(step)
}
