//! Change maps between two class maps of a project: `POST /api/v1/projects/{id}/changes` compares an
//! earlier and a later map (from→to pixel counts, hectares, net change per class, a change raster),
//! `GET …/projects/{id}/changes` lists them, `GET /api/v1/changes/{id}` reads one and
//! `GET /api/v1/changes/{id}/download.tif` downloads its change raster.
//!
//! The work is in [`crate::service::changes`].

use super::AppState;
use super::auth::Actor;
use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path, Query};
use super::{Page, PageQuery};
use crate::service::changes as service;
pub use crate::service::changes::{
    ChangeClass, ChangeLinks, ChangePair, ChangeView, CreateChange, NetChange,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Compares two class maps of the project, an earlier one (`from`) and a later one (`to`), pixel by
/// pixel on the earlier map's grid (the later map resampled onto it, nearest neighbour, when the grids
/// differ; nodata in either map is left out): the exact from→to pixel counts, their areas in
/// hectares, the net change of each class and a change raster. Maps of more than 50 million pixels
/// are refused (413 `change_too_large`).
#[utoipa::path(post, path = "/api/v1/projects/{id}/changes", request_body = CreateChange, tag = "changes",
    responses((status = 201, body = ChangeView), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create_change(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Json(body): Json<CreateChange>,
) -> ApiResult<(StatusCode, axum::Json<ChangeView>)> {
    let out = service::create(&state, &actor, project_id, body).await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// A project's change maps, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{id}/changes", params(PageQuery), tag = "changes",
    responses((status = 200, body = Page<ChangeView>), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_changes(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<ChangeView>>> {
    Ok(axum::Json(
        service::list(&state, &actor, project_id, &q).await?,
    ))
}

/// A change map: the from→to matrix in pixels and hectares, the net change per class and the codes
/// of the change raster.
#[utoipa::path(get, path = "/api/v1/changes/{id}", tag = "changes",
    responses((status = 200, body = ChangeView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_change(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<ChangeView>> {
    Ok(axum::Json(service::get(&state, &actor, id).await?))
}

/// The change raster as a COG on the earlier map's grid (UTM): `UInt16`, `0` unchanged, `k` the
/// from→to pair whose code is `k`, `65535` nodata; with a colour table. Answers range requests (206).
#[utoipa::path(get, path = "/api/v1/changes/{id}/download.tif", tag = "changes",
    responses((status = 200, content_type = "image/tiff"), (status = 206, content_type = "image/tiff"),
        (status = 404, body = super::error::ErrorBody), (status = 416)))]
pub async fn download_change_tif(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    request: HeaderMap,
) -> ApiResult<Response> {
    let (_, path) = service::change_cog(&state, &actor, id).await?;
    let headers = super::outputs::cog_headers(&format!("change-{id}.tif"));
    super::ranges::serve_file(&path, &request, headers)
        .await
        .map_err(|e| ApiError::internal(&e))
}

/// The routes of this resource, each with its OpenAPI path. Change maps are data behind
/// authentication: no shared cache keeps them.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_change, list_changes))
        .routes(routes!(get_change))
        .routes(routes!(download_change_tif))
        .route_layer(axum::middleware::from_fn(crate::hygiene::private_cache))
}
