//! Change maps: two class maps of one project, an earlier one (`from`) and a later one (`to`),
//! compared pixel by pixel on the earlier map's grid (`groundwork_imagery::change`). A change map
//! records the exact from→to pixel counts; the areas in hectares, the net change of each class and the
//! change raster (a COG: `0` unchanged, `k` the k-th from→to pair, `65535` nodata) follow from them.
//!
//! It is computed within the request, off the async runtime (at most two at once): both maps are read
//! in strips, so memory stays bounded, and maps of more than [`MAX_PIXELS`] pixels are refused (413
//! `change_too_large`).

use super::outputs::{legend, local_copy};
use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::api::{AppState, Page, PageQuery};
use chrono::{DateTime, Utc};
use groundwork_imagery::change::{self, ChangeError};
use groundwork_imagery::publish::LegendClass;
use groundwork_store::changes::{self, ChangeMap, NewChangeMap};
use groundwork_store::outputs::{self, Output};
use groundwork_store::projects::{self, Project};
use groundwork_types::keys::ProjectKeys;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;
use uuid::Uuid;

/// The most pixels either map of a change map may have (50 million: 5,000 km² at 10 m). Larger maps
/// are refused with 413 `change_too_large` before anything is read.
pub const MAX_PIXELS: u64 = 50_000_000;

/// Change maps computed at once; further requests wait for a turn (within the request timeout), so a
/// burst of comparisons cannot take every blocking thread.
static COMPUTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// What the change raster's pixel values mean.
pub const ENCODING: &str = "UInt16: 0 = same class in both maps; k >= 1 = changed, the from-to pair \
     whose code is k (see pairs); 65535 = nodata in either map";

/// Body of `POST /api/v1/projects/{id}/changes`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChange {
    /// The earlier class map (an output id of the project).
    pub from: Uuid,
    /// The later class map (another output id of the project).
    pub to: Uuid,
}

/// One class of a change map's matrix.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangeClass {
    /// Raster value.
    pub id: u8,
    /// Name (from the maps' legends, else the project's).
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
}

/// One class's areas in the two maps and its net change, over the pixels with data in both.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NetChange {
    /// Class id.
    pub class: u8,
    /// Name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
    /// Hectares of the class in the earlier map.
    pub from_ha: f64,
    /// Hectares of the class in the later map.
    pub to_ha: f64,
    /// `to_ha − from_ha`.
    pub net_ha: f64,
    /// `net_ha` in pixels (exact).
    pub net_pixels: i64,
}

/// A from→to pair that occurs, with its code in the change raster.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangePair {
    /// Pixel value of the pair in the change raster.
    pub code: u16,
    /// Class in the earlier map.
    pub from: u8,
    /// Class in the later map.
    pub to: u8,
    /// Pixels.
    pub pixels: u64,
    /// Hectares (filled in when shown).
    #[serde(default)]
    pub area_ha: f64,
}

/// Where a change map's data are.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangeLinks {
    /// The change map (JSON).
    #[serde(rename = "self")]
    pub self_: String,
    /// The change raster (COG, UTM).
    pub download_tif: String,
    /// Its page.
    pub page: String,
}

/// A change map: the from→to matrix in pixels and hectares, the net change per class and the pairs
/// of the change raster.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangeView {
    /// Id.
    pub id: Uuid,
    /// Project.
    pub project_id: Uuid,
    /// The earlier class map.
    pub from: Uuid,
    /// The later class map.
    pub to: Uuid,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// CRS of the grid (the earlier map's).
    pub epsg: i32,
    /// Grid width, pixels.
    pub width: i32,
    /// Grid height, pixels.
    pub height: i32,
    /// Area of one pixel, m².
    pub pixel_area_m2: f64,
    /// Whether the later map was resampled (nearest neighbour) onto the earlier map's grid.
    pub resampled: bool,
    /// The matrix's rows and columns.
    pub classes: Vec<ChangeClass>,
    /// `matrix[i][j]`: pixels of `classes[i]` in the earlier map and `classes[j]` in the later one.
    pub matrix: Vec<Vec<u64>>,
    /// The same in hectares.
    pub areas_ha: Vec<Vec<f64>>,
    /// Per class: hectares in each map and the net change (later − earlier).
    pub net_change: Vec<NetChange>,
    /// The from→to pairs that changed, with their codes in the change raster.
    pub pairs: Vec<ChangePair>,
    /// Hectares with a class in both maps.
    pub compared_ha: f64,
    /// Hectares whose class changed.
    pub changed_ha: f64,
    /// Pixels of the grid that are nodata in either map (left out of every count).
    pub nodata_pixels: i64,
    /// What the change raster's values mean.
    pub encoding: String,
    /// Links.
    pub links: ChangeLinks,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

/// The classes the change map names: the earlier map's legend, then the later map's other classes,
/// then the project's.
fn merged_legend(from: &Output, to: &Output, project: &Project) -> Vec<LegendClass> {
    let mut all: Vec<LegendClass> = Vec::new();
    let project_classes = project.classes.iter().map(|c| LegendClass {
        id: c.id,
        name: c.name.clone(),
        color: c.color.clone(),
    });
    for c in legend(from)
        .into_iter()
        .chain(legend(to))
        .chain(project_classes)
    {
        if !all.iter().any(|k| k.id == c.id) {
            all.push(c);
        }
    }
    all
}

/// A private folder under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("groundwork-change-{}", Uuid::new_v4()));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compares two class maps of the project and records the change map. Members and above; both
/// outputs must be class maps of this project (another organisation's output is not found).
pub async fn create(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    body: CreateChange,
) -> ApiResult<ChangeView> {
    actor.require(Role::Member)?;
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    if body.from == body.to {
        return Err(invalid("to", "compare two different maps"));
    }
    let from = outputs::get(&state.pool, actor.org_id, body.from).await?;
    let to = outputs::get(&state.pool, actor.org_id, body.to).await?;
    for (field, o) in [("from", &from), ("to", &to)] {
        if o.project_id != project.id {
            return Err(invalid(
                field,
                format!(
                    "output {} belongs to another project: only maps of the same project are compared",
                    o.id
                ),
            ));
        }
    }
    for o in [&from, &to] {
        if o.kind != "class" {
            return Err(ApiError::new(
                ErrorCode::NotAClassMap,
                format!(
                    "only class maps are compared; output {} holds {}",
                    o.id, o.kind
                ),
            ));
        }
        let pixels = u64::try_from(o.width).unwrap_or(0) * u64::try_from(o.height).unwrap_or(0);
        if pixels > MAX_PIXELS {
            return Err(too_large(&format!(
                "output {} has {pixels} pixels, more than a change map compares ({MAX_PIXELS})",
                o.id
            )));
        }
    }
    let objects = state
        .objects
        .clone()
        .ok_or_else(|| ApiError::internal(&"the server has no object store"))?;
    let from_path = local_copy(state, &from.utm_key).await?;
    let to_path = local_copy(state, &to.utm_key).await?;
    let legend = merged_legend(&from, &to, &project);
    let id = Uuid::now_v7();
    let key = ProjectKeys::new(project.org_id, project.id).change_map(id);
    let _turn = COMPUTING
        .acquire()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let started = std::time::Instant::now();
    let (summary, bytes) = {
        let legend = legend.clone();
        tokio::task::spawn_blocking(move || {
            let dir = TempDir::new().map_err(|e| ChangeError::Imagery(io_error(&e)))?;
            let dst = dir.0.join("change.tif");
            let summary = change::change_map(&from_path, &to_path, &dst, &legend, MAX_PIXELS)?;
            let bytes = std::fs::read(&dst).map_err(|e| ChangeError::Imagery(io_error(&e)))?;
            Ok::<_, ChangeError>((summary, bytes))
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| match e {
            ChangeError::TooLarge(why) => too_large(&why),
            ChangeError::Imagery(e) => ApiError::internal(&e),
        })?
    };
    let valid: u64 = summary.matrix.iter().flatten().sum();
    if valid == 0 {
        return Err(invalid(
            "to",
            "the two maps have no pixel with data in common: they do not overlap",
        ));
    }
    let size = bytes.len();
    objects
        .put(
            &object_store::path::Path::from(key.as_str()),
            bytes.clone().into(),
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
    // The download is served from the cache; a cache that cannot be written fetches it again later.
    let cache = state.cache.clone();
    let k = key.clone();
    let _ = tokio::task::spawn_blocking(move || cache.put(&k, &bytes)).await;
    let classes: Vec<ChangeClass> = summary
        .classes
        .iter()
        .map(|&id| {
            legend.iter().find(|c| c.id == id).map_or_else(
                || ChangeClass {
                    id,
                    name: format!("class {id}"),
                    color: "#808080".into(),
                },
                |c| ChangeClass {
                    id,
                    name: c.name.clone(),
                    color: c.color.clone(),
                },
            )
        })
        .collect();
    let row = changes::create(
        &state.pool,
        &NewChangeMap {
            id,
            org_id: actor.org_id,
            project_id: project.id,
            from_output_id: from.id,
            to_output_id: to.id,
            created_by: actor.user_id,
            cog_key: key,
            epsg: i32::try_from(summary.epsg).unwrap_or_default(),
            width: i32::try_from(summary.width).unwrap_or(i32::MAX),
            height: i32::try_from(summary.height).unwrap_or(i32::MAX),
            pixel_area_m2: summary.pixel_area_m2,
            resampled: summary.resampled,
            classes: to_json(&classes)?,
            matrix: to_json(&summary.matrix)?,
            pairs: to_json(&summary.pairs)?,
            nodata_pixels: i64::try_from(summary.nodata_pixels).unwrap_or(i64::MAX),
        },
    )
    .await?;
    tracing::info!(
        change = %id,
        pixels = summary.width * summary.height,
        bytes = size,
        resampled = summary.resampled,
        seconds = started.elapsed().as_secs_f64(),
        "made a change map"
    );
    actor
        .audit(
            state,
            "change_map.create",
            "change_map",
            row.id,
            json!({"project_id": project.id, "from": from.id, "to": to.id}),
        )
        .await;
    Ok(view(&row))
}

/// A column stored as JSON.
fn to_json<T: Serialize>(v: &T) -> ApiResult<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(&e))
}

fn io_error(e: &std::io::Error) -> groundwork_imagery::Error {
    groundwork_imagery::Error::InvalidRequest(format!("a temporary file: {e}"))
}

fn too_large(why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ChangeTooLarge,
        format!("{why}; compare smaller maps (a project with a smaller area)"),
    )
}

/// A stored change map as the API shows it: areas, net change and links derived from the counts.
#[must_use]
pub fn view(c: &ChangeMap) -> ChangeView {
    let classes: Vec<ChangeClass> = serde_json::from_value(c.classes.clone()).unwrap_or_default();
    let matrix: Vec<Vec<u64>> = serde_json::from_value(c.matrix.clone()).unwrap_or_default();
    let ha = c.pixel_area_m2 / 10_000.0;
    let n = classes.len().min(matrix.len());
    let row_sum = |i: usize| -> u64 { matrix[i].iter().sum() };
    let col_sum = |j: usize| -> u64 { matrix.iter().filter_map(|r| r.get(j)).sum() };
    let net_change = classes
        .iter()
        .take(n)
        .enumerate()
        .map(|(i, k)| {
            let (before, after) = (row_sum(i), col_sum(i));
            let net = i64::try_from(after).unwrap_or(i64::MAX)
                - i64::try_from(before).unwrap_or(i64::MAX);
            NetChange {
                class: k.id,
                name: k.name.clone(),
                color: k.color.clone(),
                from_ha: before as f64 * ha,
                to_ha: after as f64 * ha,
                net_ha: net as f64 * ha,
                net_pixels: net,
            }
        })
        .collect();
    let total: u64 = matrix.iter().flatten().sum();
    let same: u64 = (0..n).filter_map(|i| matrix[i].get(i)).sum();
    let mut pairs: Vec<ChangePair> = serde_json::from_value(c.pairs.clone()).unwrap_or_default();
    for p in &mut pairs {
        p.area_ha = p.pixels as f64 * ha;
    }
    ChangeView {
        id: c.id,
        project_id: c.project_id,
        from: c.from_output_id,
        to: c.to_output_id,
        created_at: c.created_at,
        epsg: c.epsg,
        width: c.width,
        height: c.height,
        pixel_area_m2: c.pixel_area_m2,
        resampled: c.resampled,
        areas_ha: matrix
            .iter()
            .map(|r| r.iter().map(|&p| p as f64 * ha).collect())
            .collect(),
        matrix,
        classes,
        net_change,
        pairs,
        compared_ha: total as f64 * ha,
        changed_ha: total.saturating_sub(same) as f64 * ha,
        nodata_pixels: c.nodata_pixels,
        encoding: ENCODING.into(),
        links: ChangeLinks {
            self_: format!("/api/v1/changes/{}", c.id),
            download_tif: format!("/api/v1/changes/{}/download.tif", c.id),
            page: format!("/changes/{}", c.id),
        },
    }
}

/// One change map.
pub async fn get(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<ChangeView> {
    Ok(view(&changes::get(&state.pool, actor.org_id, id).await?))
}

/// A project's change maps, newest first.
pub async fn list(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    q: &PageQuery,
) -> ApiResult<Page<ChangeView>> {
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let limit = q.limit()?;
    let rows = changes::list(
        &state.pool,
        actor.org_id,
        project_id,
        q.cursor()?,
        limit + 1,
    )
    .await?;
    let page = Page::new(rows, limit, |c| c.id);
    Ok(Page {
        items: page.items.iter().map(view).collect(),
        next_cursor: page.next_cursor,
    })
}

/// The change raster: the change map and the local copy of its COG.
pub async fn change_cog(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
) -> ApiResult<(ChangeMap, PathBuf)> {
    let c = changes::get(&state.pool, actor.org_id, id).await?;
    let path = local_copy(state, &c.cog_key).await?;
    Ok((c, path))
}
