//! Labels of a project: the summary per class and split, removing a label, and window sampling with
//! the spatial train/val/test split. Importing and exporting files is in [`crate::labels`].

use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode};
use crate::labels::assign_pending;
use groundwork_store::labels::{self, LabelSet, MissingClass, SplitCounts, Summary};
use groundwork_store::projects;
use groundwork_store::sampling::{self, SplitOptions};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// Counts per class and split of a version (latest when `None`), and every version's counts.
pub async fn summary(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    version: Option<i32>,
) -> ApiResult<Summary> {
    projects::get(&state.pool, actor.org_id, project_id).await?;
    Ok(labels::summary(&state.pool, project_id, version).await?)
}

/// Removes one label: an edit, so a new version without it (older versions keep it).
pub async fn delete_label(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    label_id: i64,
) -> ApiResult<LabelSet> {
    actor.require(Role::Member)?;
    projects::get(&state.pool, actor.org_id, project_id).await?;
    match labels::remove(&state.pool, project_id, &[label_id], actor.user_id).await {
        Ok(set) => Ok(set),
        Err(groundwork_store::Error::Conflict(_)) => Err(ApiError::not_found("label")),
        Err(e) => Err(e.into()),
    }
}

/// What a split did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SplitReport {
    /// The new label-set version holding the split.
    pub version: i32,
    /// Windows sampled per split.
    pub windows: SplitCounts,
    /// Blocks the sample was grouped into.
    pub blocks: usize,
    /// The options applied (defaults filled in).
    pub options: SplitOptions,
    /// Classes with labelled windows that ended up with no window in some split (of positive share),
    /// with those splits: a class needs labels in at least as many blocks as there are such splits.
    /// Empty when every class is in every split.
    pub missing: Vec<MissingClass>,
    /// The version record.
    pub label_set: LabelSet,
}

/// Samples windows and splits them into train/val/test by blocks of neighbouring cells; the result is a
/// new label-set version.
pub async fn split_windows(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    options: SplitOptions,
) -> ApiResult<SplitReport> {
    actor.require(Role::Member)?;
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    let invalid = |e: sampling::InvalidOptions| ApiError::new(ErrorCode::InvalidOptions, e.0);
    let fractions = options.validate().map_err(invalid)?;
    assign_pending(&state.pool, project_id).await?;
    let cells = labels::split_cells(&state.pool, project_id).await?;
    if cells.is_empty() {
        return Err(ApiError::new(
            ErrorCode::NoWindows,
            "the project has no windows yet: start an acquisition first",
        ));
    }
    let assignments = sampling::sample_and_split(&cells, &options).map_err(invalid)?;
    if assignments.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidOptions,
            "the sampling picked no windows",
        ));
    }
    let mut windows = SplitCounts::default();
    let mut blocks = std::collections::HashSet::new();
    for a in &assignments {
        match a.split {
            labels::Split::Train => windows.train += 1,
            labels::Split::Val => windows.val += 1,
            labels::Split::Test => windows.test += 1,
        }
        blocks.insert(a.block.as_str());
    }
    let blocks = blocks.len();
    let missing = sampling::missing_classes(&cells, &assignments, fractions)
        .into_iter()
        .map(|(class_id, splits)| MissingClass {
            class_id,
            class_name: project
                .classes
                .iter()
                .find(|c| i32::from(c.id) == class_id)
                .map(|c| c.name.clone()),
            splits,
        })
        .collect();
    let label_set = labels::record_split(
        &state.pool,
        project_id,
        &assignments,
        &json!(options),
        actor.user_id,
    )
    .await?;
    Ok(SplitReport {
        version: label_set.version,
        windows,
        blocks,
        options,
        missing,
        label_set,
    })
}
