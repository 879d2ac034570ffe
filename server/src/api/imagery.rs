//! Acquisition: `POST /api/v1/projects/{id}/acquire` starts a run of partitioned `acquire` steps with an
//! `acquire_summary` fan-in; `GET /api/v1/projects/{id}/windows` lists the windows and their status.
//! Browsing what was acquired: `GET /api/v1/projects/{id}/imagery` lists the layers (modality,
//! renderings, time steps) and `GET /api/v1/projects/{id}/imagery/{modality}/{time}/{rendering}/{z}/{x}/{y}.png`
//! draws a map tile of one.

use super::AppState;
use super::auth::Actor;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Json, Path, Query};
use crate::service::imagery as service;
pub use crate::service::imagery::{
    AcquireBody, ImageryLayer, ImageryLayers, ImageryTime, WindowPage, WindowQuery,
};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use groundwork_store::jobs::RunWithSteps;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Plans the windows and starts the acquisition run.
#[utoipa::path(post, path = "/api/v1/projects/{id}/acquire", request_body = AcquireBody, tag = "imagery",
    responses((status = 201, body = RunWithSteps), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn acquire(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<AcquireBody>,
) -> ApiResult<(StatusCode, axum::Json<RunWithSteps>)> {
    let out = service::acquire(
        &state,
        &actor,
        project_id,
        super::idempotency_key(&headers),
        body,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// A project's windows.
#[utoipa::path(get, path = "/api/v1/projects/{id}/windows", params(WindowQuery), tag = "imagery",
    responses((status = 200, body = WindowPage), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_windows(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<WindowQuery>,
) -> ApiResult<axum::Json<WindowPage>> {
    Ok(axum::Json(
        service::list_windows(&state, &actor, project_id, q).await?,
    ))
}

/// The windows a monitoring prediction run (another period or area than its project's) acquired for
/// itself, with what came of each (`acquired`, `empty` with the reason, `quarantined`) and its counts;
/// empty for other runs.
#[utoipa::path(get, path = "/api/v1/runs/{id}/windows", params(WindowQuery), tag = "imagery",
    responses((status = 200, body = WindowPage), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_run_windows(
    State(state): State<AppState>,
    actor: Actor,
    Path(run_id): Path<Uuid>,
    Query(q): Query<WindowQuery>,
) -> ApiResult<axum::Json<WindowPage>> {
    Ok(axum::Json(
        service::list_run_windows(&state, &actor, run_id, q).await?,
    ))
}

/// The acquired imagery that can be browsed: the acquired windows' bounds and, per modality, its
/// renderings and time steps (empty before acquisition).
#[utoipa::path(get, path = "/api/v1/projects/{id}/imagery", tag = "imagery",
    params(("id" = Uuid, Path, description = "Project id")),
    responses((status = 200, body = ImageryLayers), (status = 404, body = super::error::ErrorBody)))]
pub async fn imagery_layers(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
) -> ApiResult<axum::Json<ImageryLayers>> {
    Ok(axum::Json(
        service::imagery_layers(&state, &actor, project_id).await?,
    ))
}

/// A z/x/y PNG map tile of a project's acquired imagery: one modality, one time step, one rendering
/// (transparent where no window has data).
#[utoipa::path(get, path = "/api/v1/projects/{id}/imagery/{modality}/{time}/{rendering}/{z}/{x}/{y}.png",
    tag = "imagery",
    params(
        ("id" = Uuid, Path, description = "Project id"),
        ("modality" = String, Path, description = "`sentinel2_l2a`, `sentinel1` or `landsat`"),
        ("time" = usize, Path, description = "Time step index (the listing's `times[].index`)"),
        ("rendering" = String, Path, description = "`true_color`, `false_color` (Sentinel-2, Landsat) or `vv_vh` (Sentinel-1)"),
        ("z" = u8, Path, description = "Zoom, 0–24"),
        ("x" = u32, Path, description = "Tile column"),
        ("y" = u32, Path, description = "Tile row"),
    ),
    responses((status = 200, content_type = "image/png"), (status = 304), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn imagery_tile(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, modality, time, rendering, z, x, y)): Path<(
        Uuid,
        String,
        String,
        String,
        String,
        String,
        String,
    )>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // Read here rather than by the extractor, which answers any unreadable parameter 404.
    let time: usize = time.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidPath,
            format!("time step {time:?} is not an index"),
        )
    })?;
    let bad_tile = || {
        ApiError::new(
            ErrorCode::InvalidTile,
            format!("{z}/{x}/{y} is not a tile address (z/x/y.png)"),
        )
    };
    let z: u8 = z.parse().map_err(|_| bad_tile())?;
    let x: u32 = x.parse().map_err(|_| bad_tile())?;
    let y: u32 = y
        .strip_suffix(".png")
        .and_then(|y| y.parse().ok())
        .ok_or_else(bad_tile)?;
    let png =
        service::imagery_tile_png(&state, &actor, id, (&modality, time, &rendering), (z, x, y))
            .await?;
    let tag = super::outputs::etag(&png);
    let mut h = HeaderMap::new();
    // A later acquisition redraws the same address: browsers keep a tile a few minutes, then
    // revalidate it by its ETag.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    if super::outputs::not_modified(&headers, &tag) {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    Ok((StatusCode::OK, h, png).into_response())
}

/// The OpenAPI path of [`imagery_tile`], which is routed by hand (see [`routes`]).
#[derive(OpenApi)]
#[openapi(paths(imagery_tile))]
struct TileDoc;

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(acquire))
        .routes(routes!(list_windows))
        .routes(routes!(list_run_windows))
        .merge(private_routes())
}

/// The imagery listing and tiles: data behind authentication that no shared cache may keep
/// ([`crate::hygiene::private_cache`]).
fn private_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(TileDoc::openapi())
        .routes(routes!(imagery_layers))
        // The router matches whole segments: the documented `{y}.png` is routed as `{y}`, and the
        // handler reads the suffix.
        .route(
            "/api/v1/projects/{id}/imagery/{modality}/{time}/{rendering}/{z}/{x}/{y}",
            axum::routing::get(imagery_tile),
        )
        .route_layer(axum::middleware::from_fn(crate::hygiene::private_cache))
}
