//! Acquisition: planning a project's windows and starting a run of partitioned `acquire` steps with an
//! `acquire_summary` fan-in, and listing the windows with their status.

use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use groundwork_store::jobs::{self, NewStep, RunWithSteps};
use groundwork_store::{projects, windows};
use groundwork_worker::StepArgs;
use groundwork_worker::steps::{AcquireArgs, SummaryArgs};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// Body of `POST /api/v1/projects/{id}/acquire`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// STAC API URL, or a static `catalog.json` path or URL.
    pub stac: String,
    /// `{"kind": "earth-search"}` (default), `{"kind": "planetary-computer", "sas_endpoint": …}` or a custom profile.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub profile: Option<Value>,
    /// Largest scene cloud cover accepted, percent.
    #[serde(default)]
    pub max_cloud: Option<f64>,
    /// Partition steps (default: one per 64 windows, at most 32).
    #[serde(default)]
    pub partitions: Option<usize>,
    /// Fraction of windows that must succeed (default 0.95).
    #[serde(default)]
    pub success_threshold: Option<f64>,
}

/// `?status=&limit=&cursor=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// `pending | acquired | quarantined`.
    pub status: Option<String>,
    /// 1–1000 (default 200).
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A page of windows with the project's counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WindowPage {
    /// Counts by status over the whole project.
    pub counts: windows::Counts,
    /// Windows.
    pub items: Vec<windows::Window>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// Plans the windows and starts the acquisition run.
pub async fn acquire(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    idempotency_key: Option<&str>,
    body: AcquireBody,
) -> ApiResult<RunWithSteps> {
    actor.require(Role::Member)?;
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    let mut errors = Vec::new();
    if body.stac.trim().is_empty() {
        errors.push(FieldError {
            field: "stac".into(),
            message: "give a STAC API URL or a catalog.json path".into(),
        });
    } else if let Err(e) = groundwork_imagery::Source::checked(&body.stac, &state.outbound) {
        errors.push(FieldError {
            field: "stac".into(),
            message: e.to_string(),
        });
    }
    let profile: groundwork_imagery::Profile = match body.profile.clone() {
        None => groundwork_imagery::Profile::EarthSearch,
        Some(v) => serde_json::from_value(v).map_err(|e| {
            ApiError::validation(vec![FieldError {
                field: "profile".into(),
                message: e.to_string(),
            }])
        })?,
    };
    if let groundwork_imagery::Profile::PlanetaryComputer { sas_endpoint } = &profile
        && let Err(e) = state.outbound.check_url_syntax(sas_endpoint)
    {
        errors.push(FieldError {
            field: "profile".into(),
            message: format!("sas_endpoint: {e}"),
        });
    }
    if body.max_cloud.is_some_and(|c| !(0.0..=100.0).contains(&c)) {
        errors.push(FieldError {
            field: "max_cloud".into(),
            message: "must be 0–100".into(),
        });
    }
    if body
        .success_threshold
        .is_some_and(|t| !(0.0..=1.0).contains(&t))
    {
        errors.push(FieldError {
            field: "success_threshold".into(),
            message: "must be 0–1".into(),
        });
    }
    if body.partitions.is_some_and(|p| !(1..=256).contains(&p)) {
        errors.push(FieldError {
            field: "partitions".into(),
            message: "must be 1–256".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    // Plan now so the caller sees the windows at once and the partition count fits the AOI.
    let planned = groundwork_worker::steps::plan_windows(&state.pool, &project)
        .await
        .map_err(|e| {
            ApiError::validation(vec![FieldError {
                field: "aoi".into(),
                message: format!("{e:#}"),
            }])
        })?;
    let partitions = body
        .partitions
        .unwrap_or_else(|| planned.len().div_ceil(64).clamp(1, 32))
        .min(planned.len().max(1));
    let threshold = body.success_threshold.unwrap_or(0.95);
    let mut steps: Vec<NewStep> = (0..partitions)
        .map(|i| {
            AcquireArgs {
                stac: body.stac.clone(),
                profile: profile.clone(),
                max_cloud: body.max_cloud,
                partition: [i, partitions],
                success_threshold: threshold,
            }
            .to_step(format!("acquire-{i}"), "cpu")
        })
        .collect();
    let mut summary = SummaryArgs {
        success_threshold: threshold,
    }
    .to_step("acquire-summary", "cpu");
    summary.depends_on = (0..partitions).map(|i| format!("acquire-{i}")).collect();
    steps.push(summary);
    let key = idempotency_key;
    let run = jobs::create_run(&state.pool, actor.org_id, project_id, &steps, key).await?;
    actor
        .audit(
            state,
            "project.acquire",
            "run",
            run.run.id,
            json!({"project_id": project_id, "partitions": partitions}),
        )
        .await;
    Ok(run)
}

/// A project's windows.
pub async fn list_windows(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    q: WindowQuery,
) -> ApiResult<WindowPage> {
    projects::get(&state.pool, actor.org_id, project_id).await?;
    if q.status
        .as_deref()
        .is_some_and(|s| !["pending", "acquired", "quarantined"].contains(&s))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "status must be pending, acquired or quarantined",
        ));
    }
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "limit must be 1–1000",
        ));
    }
    let mut items = windows::list(
        &state.pool,
        project_id,
        q.status.as_deref(),
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let more = items.len() > usize::try_from(limit).unwrap_or(0);
    items.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = if more {
        items.last().map(|w| w.id.clone())
    } else {
        None
    };
    Ok(WindowPage {
        counts: windows::counts(&state.pool, project_id).await?,
        items,
        next_cursor,
    })
}
