//! Labels of a project: import (GeoJSON or CSV, bad rows reported and skipped), export, the summary per
//! class and split, and window sampling with the spatial train/val/test split.
//!
//! `POST /api/v1/projects/{id}/labels/import`, `GET /api/v1/projects/{id}/labels?format=&version=`,
//! `GET /api/v1/projects/{id}/labels/summary`, `POST /api/v1/projects/{id}/labels/split`.

use super::AppState;
use super::auth::{Actor, Role};
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Json, Path, Query};
use crate::service::labels as service;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use groundwork_store::labels::{LabelSet, Summary};
use groundwork_store::projects::{self};
use groundwork_store::sampling::SplitOptions;
use serde::Deserialize;
use uuid::Uuid;

pub use crate::service::labels::SplitReport;
use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use crate::labels::{
    Export, Format, ImportReport, LabelEdit, RowError, assign_pending, export_file, import_file,
};

/// Largest import body accepted (bytes).
pub const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;

/// `?format=&mode=` of an import.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// `geojson` or `csv` (default: from the content type).
    pub format: Option<Format>,
    /// `append` (default) adds to the current labels; `replace` makes a version with only these.
    pub mode: Option<ImportMode>,
}

/// How an import combines with the current labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportMode {
    /// Add to the current labels.
    Append,
    /// Replace them.
    Replace,
}

fn format_of(headers: &HeaderMap, explicit: Option<Format>) -> ApiResult<Format> {
    if let Some(f) = explicit {
        return Ok(f);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_lowercase();
    match ct.as_str() {
        "application/geo+json" | "application/json" => Ok(Format::Geojson),
        "text/csv" => Ok(Format::Csv),
        _ => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send labels as `application/geo+json`, `application/json` or `text/csv`",
        )),
    }
}

/// Imports labels as a new version; bad rows are reported and skipped.
#[utoipa::path(post, path = "/api/v1/projects/{id}/labels/import", params(ImportQuery), tag = "labels",
    request_body(content = String, description = "GeoJSON FeatureCollection or CSV", content_type = "application/geo+json"),
    responses((status = 201, body = ImportReport), (status = 404, body = super::error::ErrorBody),
        (status = 415, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn import_labels(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, axum::Json<ImportReport>)> {
    actor.require(Role::Member)?;
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let format = format_of(&headers, q.format)?;
    let body = body.map_err(|e| {
        ApiError::with_status(
            e.status(),
            ErrorCode::InvalidBody,
            format!("the labels file could not be read: {}", e.body_text()),
        )
    })?;
    let report = import_file(
        &state.pool,
        actor.org_id,
        project_id,
        &body,
        format,
        q.mode == Some(ImportMode::Replace),
        "api",
        actor.user_id,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(report)))
}

/// `?format=&version=` of an export.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `geojson` (default) or `csv`.
    pub format: Option<Format>,
    /// Label-set version (default: the latest).
    pub version: Option<i32>,
}

/// Exports a version of the labels as GeoJSON or CSV (polygons have no CSV form: the count left out is in
/// `x-labels-skipped`).
#[utoipa::path(get, path = "/api/v1/projects/{id}/labels", params(ExportQuery), tag = "labels",
    responses((status = 200, description = "GeoJSON FeatureCollection or CSV", content_type = "application/geo+json"),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn export_labels(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let format = q.format.unwrap_or(Format::Geojson);
    let export = export_file(&state.pool, actor.org_id, project_id, format, q.version).await?;
    let content_type = match format {
        Format::Geojson => "application/geo+json",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let mut resp = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        export.body,
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert("x-label-set-version", HeaderValue::from(export.version));
    h.insert("x-labels-skipped", HeaderValue::from(export.skipped));
    Ok(resp)
}

/// `?version=` of the summary.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// Label-set version (default: the latest).
    pub version: Option<i32>,
}

/// Counts per class and split of a version, and every version's counts.
#[utoipa::path(get, path = "/api/v1/projects/{id}/labels/summary", params(SummaryQuery), tag = "labels",
    responses((status = 200, body = Summary), (status = 404, body = super::error::ErrorBody)))]
pub async fn label_summary(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<SummaryQuery>,
) -> ApiResult<axum::Json<Summary>> {
    Ok(axum::Json(
        service::summary(&state, &actor, project_id, q.version).await?,
    ))
}

/// One edit as one new label-set version: features to add (a GeoJSON FeatureCollection, as an import
/// takes it) and label ids to remove, applied only while the latest version is still `base_version`
/// (409 `conflict` when somebody else changed the labels meanwhile: reload and edit again). All or
/// nothing: a feature with a problem refuses the edit (422 with the problems by feature).
#[utoipa::path(post, path = "/api/v1/projects/{id}/labels/edit", request_body = LabelEdit, tag = "labels",
    responses((status = 201, body = LabelSet), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn edit_labels(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Json(edit): Json<LabelEdit>,
) -> ApiResult<(StatusCode, axum::Json<LabelSet>)> {
    actor.require(Role::Member)?;
    let set =
        crate::labels::edit_labels(&state.pool, actor.org_id, project_id, &edit, actor.user_id)
            .await?;
    Ok((StatusCode::CREATED, axum::Json(set)))
}

/// Removes one label: an edit, so a new version without it (older versions keep it).
#[utoipa::path(delete, path = "/api/v1/projects/{id}/labels/{label_id}", tag = "labels",
    responses((status = 200, body = LabelSet), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete_label(
    State(state): State<AppState>,
    actor: Actor,
    Path((project_id, label_id)): Path<(Uuid, i64)>,
) -> ApiResult<axum::Json<LabelSet>> {
    Ok(axum::Json(
        service::delete_label(&state, &actor, project_id, label_id).await?,
    ))
}

/// Samples windows and splits them into train/val/test by blocks of neighbouring cells; the result is a
/// new label-set version.
#[utoipa::path(post, path = "/api/v1/projects/{id}/labels/split", request_body = SplitOptions, tag = "labels",
    responses((status = 201, body = SplitReport), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn split_windows(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Json(options): Json<SplitOptions>,
) -> ApiResult<(StatusCode, axum::Json<SplitReport>)> {
    let report = service::split_windows(&state, &actor, project_id, options).await?;
    Ok((StatusCode::CREATED, axum::Json(report)))
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export_labels))
        .routes(routes!(label_summary))
        .routes(routes!(split_windows))
        .routes(routes!(delete_label))
        .routes(routes!(edit_labels).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)))
        .routes(routes!(import_labels).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)))
}
