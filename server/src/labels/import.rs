//! Importing a labels file as a new label-set version, and placing labels imported before their windows
//! existed.

use super::check::{check_rows, coverage_of, whole_window};
use super::formats::{Format, ImportReport, parse_csv, parse_geojson};
use crate::api::error::{ApiError, ApiResult, ErrorCode};
use groundwork_imagery::rasterize::{Rasterizer, parse_label_geometry};
use groundwork_store::PgPool;
use groundwork_store::labels::{self, LabelSet, WindowGrid};
use groundwork_store::projects;
use serde_json::json;
use std::collections::HashMap;
use uuid::Uuid;

/// Imports a labels file into a project of `org_id` as a new version. Shared by the API and the CLI.
/// Rows with problems are reported and skipped; when no row is usable nothing is stored (422
/// `no_valid_labels`, the row errors in `details`). A replace with an empty file clears the labels.
#[expect(
    clippy::too_many_arguments,
    reason = "one import's inputs, all required"
)]
pub async fn import_file(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    body: &[u8],
    format: Format,
    replace: bool,
    source: &str,
    created_by: Option<Uuid>,
) -> ApiResult<ImportReport> {
    let project = projects::get(pool, org_id, project_id).await?;
    let (rows, mut errors) = match format {
        Format::Geojson => parse_geojson(body)?,
        Format::Csv => parse_csv(body)?,
    };
    let windows = labels::window_grids(pool, project_id).await?;
    let (labels_to_add, errors) = tokio::task::spawn_blocking(move || {
        let out = check_rows(&project, &windows, rows, &mut errors);
        errors.sort_by_key(|e| e.row);
        (out, errors)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    // A replace with no usable row would wipe the labels because of a bad file: refuse it too.
    if labels_to_add.is_empty() && (!replace || !errors.is_empty()) {
        let mut e = ApiError::new(
            ErrorCode::NoValidLabels,
            format!(
                "no label could be imported ({} rows rejected)",
                errors.len()
            ),
        );
        e.details = json!(errors);
        return Err(e);
    }
    let set = labels::import(
        pool,
        project_id,
        &labels_to_add,
        replace,
        source,
        created_by,
    )
    .await?;
    Ok(ImportReport {
        version: set.version,
        imported: labels_to_add.len(),
        unassigned: labels_to_add
            .iter()
            .filter(|l| l.coverage.is_none())
            .count(),
        errors,
    })
}

/// One edit of the labelling page (or an API client) as one new version: the GeoJSON features of
/// `add` (a FeatureCollection) are added and the labels `remove` removed, only while the latest
/// version is `base_version` (409 `conflict` otherwise: somebody else changed the labels meanwhile).
/// Unlike an import, an edit is all or nothing: a feature with a problem refuses the whole edit
/// (422 `no_valid_labels`, the problems in `details` by feature number).
pub async fn edit_labels(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    edit: &LabelEdit,
    created_by: Option<Uuid>,
) -> ApiResult<LabelSet> {
    let project = projects::get(pool, org_id, project_id).await?;
    let body = serde_json::to_vec(&edit.add).map_err(|e| ApiError::internal(&e))?;
    let (rows, mut errors) = if edit.add.is_null() {
        (Vec::new(), Vec::new())
    } else {
        parse_geojson(&body)?
    };
    let windows = labels::window_grids(pool, project_id).await?;
    let (to_add, errors) = tokio::task::spawn_blocking(move || {
        let out = check_rows(&project, &windows, rows, &mut errors);
        errors.sort_by_key(|e| e.row);
        (out, errors)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    if !errors.is_empty() {
        let mut e = ApiError::new(
            ErrorCode::NoValidLabels,
            format!(
                "the edit was not saved: {} of its features have a problem",
                errors.len()
            ),
        );
        e.details = json!(errors);
        return Err(e);
    }
    if to_add.is_empty() && edit.remove.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ValidationFailed,
            "the edit adds and removes nothing",
        ));
    }
    Ok(labels::edit(
        pool,
        project_id,
        &to_add,
        &edit.remove,
        Some(edit.base_version),
        created_by,
    )
    .await?)
}

/// Body of `POST /api/v1/projects/{id}/labels/edit`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelEdit {
    /// The latest version the editor has seen (0 before any label); the edit is refused with 409 when
    /// the labels have changed since.
    pub base_version: i32,
    /// Labels to add: a GeoJSON FeatureCollection as an import takes it (each feature's `class` or
    /// `class_id`, or `value`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub add: serde_json::Value,
    /// Ids of current labels to remove.
    #[serde(default)]
    pub remove: Vec<i64>,
}

/// Works out the windows of labels imported before their windows were planned.
pub async fn assign_pending(pool: &PgPool, project_id: Uuid) -> ApiResult<usize> {
    let pending = labels::unassigned(pool, project_id).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let windows = labels::window_grids(pool, project_id).await?;
    if windows.is_empty() {
        return Ok(0);
    }
    let coverage = tokio::task::spawn_blocking(move || {
        let by_id: HashMap<&str, &WindowGrid> =
            windows.iter().map(|w| (w.id.as_str(), w)).collect();
        let mut rasterizer = Rasterizer::new();
        let mut out = Vec::new();
        for l in &pending {
            let c = match (&l.geometry, &l.window_id) {
                (Some(g), _) => parse_label_geometry(g)
                    .ok()
                    .and_then(|g| coverage_of(&mut rasterizer, &g, &windows).ok())
                    .unwrap_or_default(),
                (None, Some(w)) => by_id
                    .get(w.as_str())
                    .map(|w| vec![whole_window(w)])
                    .unwrap_or_default(),
                (None, None) => Vec::new(),
            };
            out.push((l.id, c));
        }
        out
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let n = coverage.len();
    labels::assign(pool, project_id, &coverage).await?;
    Ok(n)
}
