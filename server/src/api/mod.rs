//! REST API v1: router, shared state, pagination, health checks and the OpenAPI document.

pub mod accounts;
pub mod auth;
pub mod error;
pub mod extract;
pub mod imagery;
pub mod labels;
pub mod models;
pub mod outputs;
pub mod projects;
pub mod runs;
pub mod tokens;
pub mod validate;
pub mod workers;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, patch, post};
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
    /// Largest AOI accepted, km².
    pub max_aoi_km2: f64,
    /// Step kinds the workers know.
    pub step_kinds: Arc<Vec<String>>,
    /// Object store holding published outputs (tiles and downloads need it).
    pub objects: Option<Arc<dyn object_store::ObjectStore>>,
    /// Whether the session cookie carries `Secure` (browsers then send it over HTTPS only); off by
    /// default so that `http://127.0.0.1` works.
    pub secure_cookies: bool,
}

impl AppState {
    /// State for `pool` with the defaults.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            max_aoi_km2: 10_000.0,
            step_kinds: Arc::new(groundwork_worker::Registry::builtin().names()),
            objects: None,
            secure_cookies: false,
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

async fn step_kinds(State(state): State<AppState>, _actor: auth::Actor) -> impl IntoResponse {
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

/// The `Idempotency-Key` header of a request that starts work, when it is readable text.
pub(crate) fn idempotency_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok())
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
        labels::import_labels,
        labels::export_labels,
        labels::label_summary,
        labels::split_windows,
        labels::delete_label,
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
        accounts::setup_status,
        accounts::setup,
        accounts::login,
        accounts::logout,
        accounts::me,
        accounts::change_password,
        accounts::switch_org,
        accounts::list_orgs,
        accounts::create_org,
        accounts::delete_org,
        accounts::list_members,
        accounts::add_member,
        accounts::update_member,
        accounts::remove_member,
        accounts::list_invitations,
        accounts::create_invitation,
        accounts::revoke_invitation,
        accounts::accept_invitation,
        tokens::list_tokens,
        tokens::create_token,
        tokens::revoke_token,
        tokens::list_worker_tokens,
        tokens::create_worker_token,
        tokens::revoke_worker_token,
        tokens::list_audit,
        outputs::get_output,
        outputs::list_outputs,
        outputs::tile,
        outputs::download_tif,
        outputs::download_geojson,
        outputs::stac_collection_handler,
        outputs::stac_items,
        outputs::stac_item_handler,
        models::start_training,
        models::start_prediction,
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
        .route(
            "/projects/{id}/labels/import",
            post(labels::import_labels).layer(axum::extract::DefaultBodyLimit::max(
                labels::MAX_IMPORT_BYTES,
            )),
        )
        .route("/projects/{id}/labels", get(labels::export_labels))
        .route("/projects/{id}/labels/summary", get(labels::label_summary))
        .route("/projects/{id}/labels/split", post(labels::split_windows))
        .route(
            "/projects/{id}/labels/{label_id}",
            axum::routing::delete(labels::delete_label),
        )
        .route("/runs/{id}", get(runs::get_run))
        .route("/projects/{id}/train", post(models::start_training))
        .route("/projects/{id}/predict", post(models::start_prediction))
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
        .route("/pools", get(workers::list_pools))
        .route("/setup", get(accounts::setup_status).post(accounts::setup))
        .route("/auth/login", post(accounts::login))
        .route("/auth/logout", post(accounts::logout))
        .route("/me", get(accounts::me))
        .route("/me/password", post(accounts::change_password))
        .route("/me/org", post(accounts::switch_org))
        .route("/orgs", get(accounts::list_orgs).post(accounts::create_org))
        .route("/orgs/{id}", delete(accounts::delete_org))
        .route(
            "/members",
            get(accounts::list_members).post(accounts::add_member),
        )
        .route(
            "/members/{user_id}",
            patch(accounts::update_member).delete(accounts::remove_member),
        )
        .route(
            "/invitations",
            get(accounts::list_invitations).post(accounts::create_invitation),
        )
        .route("/invitations/{id}", delete(accounts::revoke_invitation))
        .route(
            "/invitations/{token}/accept",
            post(accounts::accept_invitation),
        )
        .route(
            "/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/tokens/{id}", delete(tokens::revoke_token))
        .route(
            "/worker-tokens",
            get(tokens::list_worker_tokens).post(tokens::create_worker_token),
        )
        .route("/worker-tokens/{id}", delete(tokens::revoke_worker_token))
        .route("/audit", get(tokens::list_audit))
        .route("/outputs/{id}", get(outputs::get_output))
        .route("/outputs/{id}/tiles/{z}/{x}/{y}", get(outputs::tile))
        .route("/outputs/{id}/download.tif", get(outputs::download_tif))
        .route(
            "/outputs/{id}/download.geojson",
            get(outputs::download_geojson),
        )
        .route("/projects/{id}/outputs", get(outputs::list_outputs))
        .route("/projects/{id}/stac", get(outputs::stac_collection_handler))
        .route("/projects/{id}/stac/items", get(outputs::stac_items))
        .route(
            "/projects/{id}/stac/items/{item}",
            get(outputs::stac_item_handler),
        );
    Router::new()
        .nest("/api/v1", v1)
        .route("/api/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::web::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(auth::csrf_form_field))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
