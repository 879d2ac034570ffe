//! REST API v1: router, shared state, pagination, health checks and the OpenAPI document.

pub mod auth;
pub mod error;
pub mod extract;
pub mod imagery;
pub mod models;
pub mod projects;
pub mod runs;
pub mod validate;
pub mod workers;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use error::{ApiError, ApiResult};
use groundwork_store::PgPool;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use uuid::Uuid;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Database.
    pub pool: PgPool,
    /// The organisation requests act for (one default organisation until accounts exist).
    pub org_id: Uuid,
    /// Largest AOI accepted, km².
    pub max_aoi_km2: f64,
    /// Step kinds the workers know.
    pub step_kinds: Arc<Vec<String>>,
}

impl AppState {
    /// State for `pool` with the defaults.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            org_id: groundwork_store::DEFAULT_ORG_ID,
            max_aoi_km2: 10_000.0,
            step_kinds: Arc::new(groundwork_worker::Registry::builtin().names()),
        }
    }
}

/// `?limit=&cursor=` of list endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Items per page, 1–200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> ApiResult<i64> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=200).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("limit must be 1–200, got {n}"),
            )),
        }
    }

    fn cursor(&self) -> ApiResult<Option<Uuid>> {
        self.cursor
            .as_deref()
            .map(|c| {
                c.parse::<Uuid>().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        "cursor is not one this API issued",
                    )
                })
            })
            .transpose()
    }
}

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `items` holds up to `limit + 1` rows; the extra one only signals a next page.
    fn new(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Self {
        let limit = usize::try_from(limit).unwrap_or(0);
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more {
            items.last().map(|i| id(i).to_string())
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match groundwork_store::ready(&state.pool).await {
        Ok(true) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ready"})),
        )
            .into_response(),
        Ok(false) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "migrations are not applied",
        )
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the database is unreachable",
            )
            .into_response()
        }
    }
}

async fn step_kinds(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({"items": *state.step_kinds}))
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Groundwork API",
        version = "1",
        description = "Earth-observation projects on OlmoEarth: projects, runs, steps, workers."
    ),
    paths(
        projects::create_project,
        projects::list_projects,
        projects::get_project,
        projects::update_project,
        projects::delete_project,
        runs::create_run,
        imagery::acquire,
        imagery::list_windows,
        runs::list_runs,
        runs::get_run,
        runs::get_step,
        runs::cancel_step,
        runs::retry_step,
        workers::list_workers,
        workers::drain_worker,
        workers::pause_worker,
        workers::resume_worker,
        workers::list_pools,
        models::start_training,
        models::get_training,
        models::get_run_evaluation,
        models::list_evaluations,
    ),
    components(schemas(error::ErrorBody, error::ErrorInner, error::FieldError))
)]
pub struct ApiDoc;

async fn openapi() -> impl IntoResponse {
    axum::Json(ApiDoc::openapi())
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/projects",
            post(projects::create_project).get(projects::list_projects),
        )
        .route(
            "/projects/{id}",
            get(projects::get_project)
                .patch(projects::update_project)
                .delete(projects::delete_project),
        )
        .route(
            "/projects/{id}/runs",
            post(runs::create_run).get(runs::list_runs),
        )
        .route("/projects/{id}/acquire", post(imagery::acquire))
        .route("/projects/{id}/windows", get(imagery::list_windows))
        .route("/runs/{id}", get(runs::get_run))
        .route("/projects/{id}/train", post(models::start_training))
        .route("/projects/{id}/evaluations", get(models::list_evaluations))
        .route("/runs/{id}/training", get(models::get_training))
        .route("/runs/{id}/evaluation", get(models::get_run_evaluation))
        .route("/steps/{id}", get(runs::get_step))
        .route("/steps/{id}/cancel", post(runs::cancel_step))
        .route("/steps/{id}/retry", post(runs::retry_step))
        .route("/step-kinds", get(step_kinds))
        .route("/workers", get(workers::list_workers))
        .route("/workers/{id}/drain", post(workers::drain_worker))
        .route("/workers/{id}/pause", post(workers::pause_worker))
        .route("/workers/{id}/resume", post(workers::resume_worker))
        .route("/pools", get(workers::list_pools));
    Router::new()
        .nest("/api/v1", v1)
        .route("/api/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
