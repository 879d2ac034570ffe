//! REST API v1: router, shared state, pagination, health checks and the OpenAPI document.

pub mod accounts;
pub mod assessments;
pub mod auth;
pub mod changes;
pub mod error;
pub mod extract;
pub mod imagery;
pub mod labels;
pub mod models;
pub mod outputs;
pub mod projects;
pub mod ranges;
pub mod runs;
pub mod schedules;
pub mod shares;
pub mod suggestions;
pub mod tokens;
pub mod validate;
pub mod webhooks;
pub mod worker_api;
pub mod workers;

#[cfg(test)]
mod route_tests;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use error::{ApiError, ApiResult, ErrorCode};
use groundwork_store::PgPool;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
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
    /// Whether the session cookie carries `Secure` (browsers then send it over HTTPS only); off here so
    /// that `http://127.0.0.1` works. `serve` turns it on off loopback
    /// ([`crate::hygiene::secure_cookies`]).
    pub secure_cookies: bool,
    /// XYZ raster tile template (`https://…/{z}/{x}/{y}.png`) the web maps draw under their layers; none
    /// draws a plain background, which needs no network.
    pub basemap_url: Option<String>,
    /// Attribution the web maps show for the basemap's tiles (plain text; none for no attribution).
    pub basemap_attribution: Option<String>,
    /// How long a request may take to produce its response head (the body of a download streams
    /// afterwards, unbounded); 503 `timeout` after it.
    pub request_timeout: std::time::Duration,
    /// Requests handled at once; further requests wait for a slot (within `request_timeout`).
    pub max_concurrent_requests: usize,
    /// The outbound-request policy the API checks user-named catalogues against before starting a
    /// run (the workers check again with their own). Strictest by default.
    pub outbound: Arc<groundwork_imagery::OutboundPolicy>,
    /// The one-time code first-run setup must present, when `serve` set one (a fresh installation
    /// listening on an address other than loopback, where a stranger could otherwise make
    /// themselves its owner).
    pub setup_code: Option<String>,
    /// Local copies of output rasters for tiles and downloads (private, capped, least recently used
    /// evicted first).
    pub cache: Arc<crate::cache::FileCache>,
    /// Origins whose web pages may read the API with CORS (`serve --cors-origin`; none by default):
    /// STAC Browser, Leaflet or OpenLayers on another site read STAC, tiles and downloads, sending a
    /// token in `Authorization` (never cookies: no credentials mode).
    pub cors_origins: Vec<String>,
    /// Window images and time steps of acquired imagery, kept in memory for its tiles (bounded).
    pub previews: Arc<crate::service::imagery::PreviewCache>,
}

/// Default of [`AppState::request_timeout`] (`serve --request-timeout-secs`).
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 300;
/// Default of [`AppState::max_concurrent_requests`] (`serve --max-concurrent-requests`).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;

impl AppState {
    /// Sets the basemap tile template, without an attribution; blank text means none.
    #[must_use]
    pub fn with_basemap_url(mut self, url: Option<&str>) -> Self {
        self.basemap_url = url
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        self.basemap_attribution = None;
        self
    }

    /// Sets the basemap (tile template and attribution); `None` draws none, for an installation
    /// without internet access.
    #[must_use]
    pub fn with_basemap(mut self, basemap: Option<crate::basemap::Basemap>) -> Self {
        match basemap {
            Some(b) => {
                self.basemap_attribution = Some(b.attribution).filter(|a| !a.trim().is_empty());
                self.basemap_url = Some(b.url).filter(|u| !u.trim().is_empty());
            }
            None => {
                self.basemap_url = None;
                self.basemap_attribution = None;
            }
        }
        self
    }

    /// State for `pool` with the defaults.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            max_aoi_km2: 10_000.0,
            step_kinds: Arc::new(groundwork_worker::Registry::builtin().names()),
            objects: None,
            secure_cookies: false,
            basemap_url: None,
            basemap_attribution: None,
            request_timeout: std::time::Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            outbound: Arc::new(groundwork_imagery::OutboundPolicy::default()),
            setup_code: None,
            cache: Arc::new(crate::cache::FileCache::private_temp()),
            cors_origins: Vec::new(),
            previews: Arc::new(crate::service::imagery::PreviewCache::default()),
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
    pub(crate) fn limit(&self) -> ApiResult<i64> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=200).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("limit must be 1–200, got {n}"),
            )),
        }
    }

    pub(crate) fn cursor(&self) -> ApiResult<Option<Uuid>> {
        self.cursor
            .as_deref()
            .map(|c| {
                c.parse::<Uuid>().map_err(|_| {
                    ApiError::new(ErrorCode::InvalidQuery, "cursor is not one this API issued")
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
    pub(crate) fn new(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Self {
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
    // A database that does not answer must not hold the probe: not ready within a few seconds.
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        groundwork_store::ready(&state.pool),
    )
    .await
    .unwrap_or(Err(groundwork_store::Error::Unavailable));
    match answer {
        Ok(true) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ready"})),
        )
            .into_response(),
        Ok(false) => {
            ApiError::new(ErrorCode::NotReady, "migrations are not applied").into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            ApiError::new(ErrorCode::NotReady, "the database is unreachable").into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// The `Idempotency-Key` header of a request that starts work, when it is readable text.
pub(crate) fn idempotency_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok())
}

/// What the OpenAPI document holds besides the paths (those come from [`api_routes`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Groundwork API",
        version = "1",
        description = "Earth-observation projects on OlmoEarth: projects, runs, steps, workers."
    ),
    paths(outputs::tile, shares::shared_tile),
    components(schemas(
        error::ErrorBody,
        error::ErrorInner,
        error::FieldError,
        labels::Format,
        labels::ImportMode
    ))
)]
pub struct ApiDoc;

/// The step kinds the workers know.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StepKinds {
    /// Kind names (`acquire`, `train`, …).
    pub items: Vec<String>,
}

/// Step kinds the workers know.
#[utoipa::path(get, path = "/api/v1/step-kinds", tag = "runs",
    responses((status = 200, body = StepKinds), (status = 401, body = error::ErrorBody)))]
async fn step_kinds(State(state): State<AppState>, _actor: auth::Actor) -> axum::Json<StepKinds> {
    axum::Json(StepKinds {
        items: state.step_kinds.as_ref().clone(),
    })
}

/// Every `/api/v1` route with its OpenAPI path: each resource declares both at once.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(projects::routes())
        .merge(runs::routes())
        .merge(imagery::routes())
        .merge(labels::routes())
        .merge(models::routes())
        .merge(workers::routes())
        .merge(accounts::routes())
        .merge(tokens::routes())
        .merge(outputs::routes())
        .merge(assessments::routes())
        .merge(changes::routes())
        .merge(suggestions::routes())
        .merge(shares::routes())
        .merge(webhooks::routes())
        .merge(schedules::routes())
        .merge(worker_api::routes())
        .routes(routes!(step_kinds))
}

/// The OpenAPI document of [`api_routes`].
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}

/// The request timeout and the concurrency limit of [`router`].
#[derive(Clone)]
struct Limits {
    timeout: std::time::Duration,
    slots: Arc<tokio::sync::Semaphore>,
}

/// Middleware: at most `max_concurrent_requests` requests are handled at once (others wait for a
/// slot), and a request that has no response head within `request_timeout` (waiting included) is
/// answered 503 `timeout`. The slot is held until the response head; a streamed body is not timed.
async fn limits(
    State(limits): State<Limits>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let timed_out = || {
        ApiError::new(
            ErrorCode::Timeout,
            format!(
                "the request took longer than the server's limit of {} s",
                limits.timeout.as_secs_f64()
            ),
        )
        .into_response()
    };
    // Remote workers' long polls and uploads: outside the user-facing timeout and slots.
    if req.uri().path().starts_with(worker_api::PREFIX) {
        return next.run(req).await;
    }
    let work = async {
        let _slot = limits.slots.clone().acquire_owned().await;
        next.run(req).await
    };
    tokio::time::timeout(limits.timeout, work)
        .await
        .unwrap_or_else(|_| timed_out())
}

/// The whole HTTP application: JSON bodies up to [`extract::MAX_JSON_BYTES`] (label imports have
/// their own limit), forms without NUL characters, the request timeout and the concurrency limit of
/// `state`.
pub fn router(state: AppState) -> Router {
    let (api, doc) = api_routes().split_for_parts();
    let doc = Arc::new(doc);
    let limits_state = Limits {
        timeout: state.request_timeout,
        slots: Arc::new(tokio::sync::Semaphore::new(
            state.max_concurrent_requests.max(1),
        )),
    };
    let cors = cors_layer(&state.cors_origins);
    let app = Router::new()
        .merge(api)
        .route(
            "/api/openapi.json",
            get(move || async move { axum::Json(doc.as_ref().clone()) }),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::web::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(auth::csrf_form_field))
        .layer(axum::middleware::from_fn(extract::reject_nul_in_forms))
        .layer(axum::extract::DefaultBodyLimit::max(
            extract::MAX_JSON_BYTES,
        ))
        .layer(axum::middleware::from_fn_with_state(limits_state, limits))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::hygiene::security_headers,
        ))
        .layer(TraceLayer::new_for_http());
    match cors {
        Some(cors) => app.layer(cors).with_state(state),
        None => app.with_state(state),
    }
}

/// CORS for the configured origins: reads (GET, HEAD) with `Authorization` and `Range`, the headers a
/// map client needs exposed, no credentials (so no cookie session is ever used across sites).
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    (!allowed.is_empty()).then(|| {
        tower_http::cors::CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([Method::GET, Method::HEAD])
            .allow_headers([header::AUTHORIZATION, header::RANGE, header::IF_NONE_MATCH])
            .expose_headers([
                header::CONTENT_RANGE,
                header::ACCEPT_RANGES,
                header::ETAG,
                header::CONTENT_LENGTH,
                HeaderName::from_static("content-disposition"),
            ])
            .max_age(std::time::Duration::from_secs(3600))
    })
}
