//! Read-only share links of published outputs: members make (`POST /api/v1/outputs/{id}/shares`), list
//! and revoke them; anyone holding one reads the output without an account under
//! `/api/v1/shared/{secret}/…` (its JSON, tiles, TileJSON, downloads and STAC Item).
//!
//! Shared answers may be kept by shared caches, briefly ([`public_cache`]); the routes of members keep
//! `Cache-Control: private` ([`crate::hygiene::private_cache`]). The application's CORS layer
//! (`serve --cors-origin`) covers these routes as it covers the private ones.
//!
//! The work is in [`crate::service::shares`].

use super::AppState;
use super::accounts::Items;
use super::auth::Actor;
use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path, Query};
use super::outputs::{TileQuery, attachment, root_url};
use crate::service::shares as service;
pub use crate::service::shares::{CreateShare, NewShare, SHARED_MAX_AGE_SECS};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use groundwork_store::shares::ShareLink;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Makes a read-only share link of an output (`member` role or higher). The answer holds the link's
/// secret and addresses; they are shown only here.
#[utoipa::path(post, path = "/api/v1/outputs/{id}/shares", request_body = CreateShare, tag = "shares",
    responses((status = 201, body = NewShare), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create_share(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<CreateShare>,
) -> ApiResult<Response> {
    let out = service::create(&state, &actor, id, body, &root_url(&headers)).await?;
    // The secret is in this answer only: no cache keeps it.
    Ok(crate::hygiene::no_store(
        (StatusCode::CREATED, axum::Json(out)).into_response(),
    ))
}

/// The share links of an output, newest first, with their status (never their secrets).
#[utoipa::path(get, path = "/api/v1/outputs/{id}/shares", tag = "shares",
    responses((status = 200, body = Items<ShareLink>), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_shares(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Items<ShareLink>>> {
    Ok(axum::Json(service::list(&state, &actor, id).await?))
}

/// Revokes a share link (`member` role or higher): it opens nothing from now on, though caches may
/// still serve what they kept for up to five minutes.
#[utoipa::path(delete, path = "/api/v1/outputs/{id}/shares/{share_id}", tag = "shares",
    responses((status = 204), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn revoke_share(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, share_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    service::revoke(&state, &actor, id, share_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A shared output (no account needed): metadata, legend and links under the share link.
#[utoipa::path(get, path = "/api/v1/shared/{secret}", tag = "shares",
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
pub async fn shared_output(
    State(state): State<AppState>,
    Path(secret): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(service::shared_output(&state, &secret).await?))
}

/// The shared output's tiles as a TileJSON 3.0.0 document (no account needed).
#[utoipa::path(get, path = "/api/v1/shared/{secret}/tilejson.json", tag = "shares",
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
pub async fn shared_tilejson(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(
        service::shared_tilejson(&state, &secret, &root_url(&headers)).await?,
    ))
}

/// A z/x/y PNG tile of the shared output (no account needed).
#[utoipa::path(get, path = "/api/v1/shared/{secret}/tiles/{z}/{x}/{y}.png", params(TileQuery), tag = "shares",
    responses((status = 200, content_type = "image/png"), (status = 304), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn shared_tile(
    State(state): State<AppState>,
    Path((secret, z, x, y)): Path<(String, u8, u32, String)>,
    Query(q): Query<TileQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let y = super::outputs::tile_row(&y)?;
    // The link is checked before any validator is compared: a revoked link answers 404, not 304.
    let png = service::shared_tile(&state, &secret, (z, x, y), q.band).await?;
    Ok(super::outputs::png_response(
        png,
        &headers,
        HeaderMap::new(),
    ))
}

/// The shared output's COG in its UTM CRS (no account needed). Answers range requests
/// (`Range: bytes=…`, 206), so GDAL, QGIS and rasterio read it by URL.
#[utoipa::path(get, path = "/api/v1/shared/{secret}/download.tif", tag = "shares",
    responses((status = 200, content_type = "image/tiff"), (status = 206, content_type = "image/tiff"),
        (status = 404, body = super::error::ErrorBody), (status = 416)))]
pub async fn shared_download_tif(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    request: HeaderMap,
) -> ApiResult<Response> {
    let (o, path) = service::shared_cog(&state, &secret).await?;
    let headers = super::outputs::cog_headers(&format!("{}-{}.tif", o.kind, o.id));
    super::ranges::serve_file(&path, &request, headers)
        .await
        .map_err(|e| ApiError::internal(&e))
}

/// The shared class map as polygons (GeoJSON, EPSG:4326; no account needed).
#[utoipa::path(get, path = "/api/v1/shared/{secret}/download.geojson", tag = "shares",
    responses((status = 200, content_type = "application/geo+json"), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)))]
pub async fn shared_download_geojson(
    State(state): State<AppState>,
    Path(secret): Path<String>,
) -> ApiResult<Response> {
    let fc = service::shared_polygons(&state, &secret).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/geo+json"),
            ),
            (header::CONTENT_DISPOSITION, attachment("classes.geojson")),
        ],
        fc.to_string(),
    )
        .into_response())
}

/// The shared output's STAC Item, its assets and links under the share link (no account needed).
#[utoipa::path(get, path = "/api/v1/shared/{secret}/stac/item.json", tag = "shares",
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
pub async fn shared_stac_item(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let body = service::shared_stac_item(&state, &secret, &root_url(&headers)).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/geo+json")],
        body.to_string(),
    )
        .into_response())
}

/// Middleware of the shared routes: a successful answer (200, 206, 304) may be kept by any cache for
/// [`SHARED_MAX_AGE_SECS`] (`Cache-Control: public`); it is the same for everyone, whatever
/// credentials a request carries. Any other answer (a revoked or unknown link's 404) is never stored.
/// Search engines are asked not to index what a link opens.
pub async fn public_cache(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let status = resp.status();
    let cacheable = status.is_success() || status == StatusCode::NOT_MODIFIED;
    let h = resp.headers_mut();
    let value = if cacheable {
        HeaderValue::from_str(&format!("public, max-age={SHARED_MAX_AGE_SECS}"))
            .unwrap_or(HeaderValue::from_static("no-store"))
    } else {
        HeaderValue::from_static("no-store")
    };
    h.insert(header::CACHE_CONTROL, value);
    h.insert(
        HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex, nofollow"),
    );
    resp
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_shares, create_share))
        .routes(routes!(revoke_share))
        .merge(shared_routes())
}

/// What a share link opens, without an account: publicly cacheable ([`public_cache`]).
fn shared_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(shared_output))
        .routes(routes!(shared_tilejson))
        .routes(routes!(shared_download_tif))
        .routes(routes!(shared_download_geojson))
        .routes(routes!(shared_stac_item))
        // The router matches whole segments: the documented `{y}.png` is routed as `{y}` (the
        // handler reads the suffix); its OpenAPI path is listed in `ApiDoc`.
        .route(
            "/api/v1/shared/{secret}/tiles/{z}/{x}/{y}",
            axum::routing::get(shared_tile),
        )
        .route_layer(axum::middleware::from_fn(public_cache))
}
