//! Published outputs: metadata and legend, z/x/y PNG tiles from the web-mercator COG, downloads (the
//! UTM COG, the class map as GeoJSON polygons) and a STAC Collection per project with an Item per output.
//!
//! COGs are read from the object store into a local cache folder on first use (outputs are immutable
//! under their keys), then read per tile with GDAL.

//! The work is in [`crate::service::outputs`].

use super::AppState;
use super::auth::Actor;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Path, Query};
use super::{Page, PageQuery};
use crate::service::outputs as service;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use groundwork_store::outputs::Output;
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub use crate::service::outputs::{STAC_EXTENSIONS, STAC_VERSION, stac_collection, stac_item};

/// An output: metadata, legend and links.
#[utoipa::path(get, path = "/api/v1/outputs/{id}", tag = "outputs",
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_output(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(service::get_output(&state, &actor, id).await?))
}

/// The output's tiles as a TileJSON 3.0.0 document (tile URL template, zooms, bounds), for Leaflet,
/// OpenLayers, MapLibre and QGIS.
#[utoipa::path(get, path = "/api/v1/outputs/{id}/tilejson.json", tag = "outputs",
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_tilejson(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(
        service::tilejson(&state, &actor, id, &root_url(&headers)).await?,
    ))
}

/// A project's outputs, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{id}/outputs", params(PageQuery), tag = "outputs",
    responses((status = 200, body = Page<Output>), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_outputs(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Value>>> {
    Ok(axum::Json(
        service::list_outputs(&state, &actor, project_id, &q).await?,
    ))
}

/// `?band=` of probability tiles.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TileQuery {
    /// Probability band (1-based class index) to show; default 1.
    pub band: Option<usize>,
}

/// A strong validator of the tile bytes (FNV-1a, 64 bit).
pub(crate) fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}-{}\"", bytes.len())
}

/// Whether the request's `If-None-Match` names `tag` (or `*`).
pub(crate) fn not_modified(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t == tag
        })
}

/// A z/x/y PNG tile of an output (transparent outside its data).
#[utoipa::path(get, path = "/api/v1/outputs/{id}/tiles/{z}/{x}/{y}.png", params(TileQuery), tag = "outputs",
    responses((status = 200, content_type = "image/png"), (status = 304), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn tile(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, z, x, y)): Path<(Uuid, u8, u32, String)>,
    Query(q): Query<TileQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let y = tile_row(&y)?;
    let png = service::tile_png(&state, &actor, id, (z, x, y), q.band).await?;
    let mut h = HeaderMap::new();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(png_response(png, &headers, h))
}

/// The `{y}` of a tile address, which ends in `.png`.
pub(crate) fn tile_row(y: &str) -> ApiResult<u32> {
    y.strip_suffix(".png")
        .and_then(|y| y.parse().ok())
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidTile, "a tile address ends in {y}.png"))
}

/// A PNG tile with its ETag, or 304 when the request's `If-None-Match` names it; `h` holds the other
/// headers (caching).
pub(crate) fn png_response(png: Vec<u8>, request: &HeaderMap, mut h: HeaderMap) -> Response {
    let tag = etag(&png);
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    if not_modified(request, &tag) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    (StatusCode::OK, h, png).into_response()
}

pub(crate) fn attachment(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or(HeaderValue::from_static("attachment"))
}

/// The headers of a COG download saved as `filename`.
pub(crate) fn cog_headers(filename: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/tiff; application=geotiff; profile=cloud-optimized"),
    );
    headers.insert(header::CONTENT_DISPOSITION, attachment(filename));
    headers
}

/// `?zone=` (other parameters are ignored, as they were before it existed).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ZoneQuery {
    /// EPSG code of one UTM zone of a map across zones (`links.download_zones`): that zone's own map,
    /// in its own CRS, nothing resampled.
    pub zone: Option<u32>,
}

/// The output's COG in its UTM CRS (a map across UTM zones: in the CRS of the zone of most of its
/// windows, the others resampled onto it; `?zone=` gives one zone's own map). Answers range requests
/// (`Range: bytes=…`, 206), so GDAL, QGIS, rasterio and TiTiler read it by URL, fetching only the
/// tiles they need.
#[utoipa::path(get, path = "/api/v1/outputs/{id}/download.tif", params(ZoneQuery), tag = "outputs",
    responses((status = 200, content_type = "image/tiff"), (status = 206, content_type = "image/tiff"),
        (status = 404, body = super::error::ErrorBody), (status = 416)))]
pub async fn download_tif(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Query(q): Query<ZoneQuery>,
    request: HeaderMap,
) -> ApiResult<Response> {
    let (o, path) = service::utm_cog(&state, &actor, id, q.zone).await?;
    let name = match q.zone {
        Some(zone) => format!("{}-{id}-epsg{zone}.tif", o.kind),
        None => format!("{}-{id}.tif", o.kind),
    };
    let headers = cog_headers(&name);
    super::ranges::serve_file(&path, &request, headers)
        .await
        .map_err(|e| ApiError::internal(&e))
}

/// The class map as polygons (GeoJSON, EPSG:4326).
#[utoipa::path(get, path = "/api/v1/outputs/{id}/download.geojson", tag = "outputs",
    responses((status = 200, content_type = "application/geo+json"), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)))]
pub async fn download_geojson(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    let fc = service::class_polygons(&state, &actor, id).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/geo+json"),
            ),
            (
                header::CONTENT_DISPOSITION,
                attachment(&format!("classes-{id}.geojson")),
            ),
        ],
        fc.to_string(),
    )
        .into_response())
}

/// The server's URL as the client addressed it (`X-Forwarded-Proto`/`X-Forwarded-Host`, else `Host`),
/// for the absolute links STAC requires; `http://localhost` when the request names no usable host.
pub(crate) fn root_url(headers: &HeaderMap) -> String {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = value("x-forwarded-host")
        .or_else(|| value("host"))
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    let scheme = match value("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// The project's STAC Collection.
#[utoipa::path(get, path = "/api/v1/projects/{id}/stac", tag = "outputs",
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
pub async fn stac_collection_handler(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(
        service::project_stac_collection(&state, &actor, project_id, &root_url(&headers)).await?,
    ))
}

/// The project's STAC Items (a FeatureCollection).
#[utoipa::path(get, path = "/api/v1/projects/{id}/stac/items", tag = "outputs",
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
pub async fn stac_items(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let body = service::project_stac_items(&state, &actor, project_id, &root_url(&headers)).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/geo+json")],
        body.to_string(),
    )
        .into_response())
}

/// One STAC Item.
#[utoipa::path(get, path = "/api/v1/projects/{id}/stac/items/{item}", tag = "outputs",
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
pub async fn stac_item_handler(
    State(state): State<AppState>,
    actor: Actor,
    Path((project_id, item)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let body =
        service::project_stac_item(&state, &actor, (project_id, item), &root_url(&headers)).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/geo+json")],
        body.to_string(),
    )
        .into_response())
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_output))
        .routes(routes!(list_outputs))
        .merge(private_routes())
}

/// Tiles, downloads and STAC documents: data behind authentication that no shared cache may keep
/// ([`crate::hygiene::private_cache`]).
fn private_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_tilejson))
        .routes(routes!(download_tif))
        .routes(routes!(download_geojson))
        .routes(routes!(download_package))
        .routes(routes!(stac_collection_handler))
        .routes(routes!(stac_items))
        .routes(routes!(stac_item_handler))
        // The router matches whole segments: the documented `{y}.png` is routed as `{y}`, and the
        // handler reads the suffix.
        .route(
            "/api/v1/outputs/{id}/tiles/{z}/{x}/{y}",
            axum::routing::get(tile),
        )
        .route_layer(axum::middleware::from_fn(crate::hygiene::private_cache))
}

/// The offline package of a class map: one GeoPackage with the class map's tiles, a true-colour
/// imagery preview and the class polygons (`class_map`, `imagery`, `class_polygons`), for QGIS,
/// QField, Mergin Maps and ArcGIS without a network. Built on first request and cached; answers
/// range requests. A map needing more than 1024 tiles at its finest zoom is refused (413).
#[utoipa::path(get, path = "/api/v1/outputs/{id}/package.gpkg", tag = "outputs",
    responses((status = 200, content_type = "application/geopackage+sqlite3"),
        (status = 206, content_type = "application/geopackage+sqlite3"),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody), (status = 416)))]
pub async fn download_package(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    request: HeaderMap,
) -> ApiResult<Response> {
    let (_, path) = crate::service::package::package(&state, &actor, id).await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::service::package::MEDIA_TYPE),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        attachment(&format!("package-{id}.gpkg")),
    );
    super::ranges::serve_file(&path, &request, headers)
        .await
        .map_err(|e| ApiError::internal(&e))
}
