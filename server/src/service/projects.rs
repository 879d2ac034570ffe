//! Projects: creating (with every field validated), listing, reading, updating and deleting them.

use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, FieldError};
use crate::api::validate::{self, ClassDef, ModelSize, Task};
use crate::api::{AppState, Page, PageQuery};
use chrono::NaiveDate;
use groundwork_imagery::Modality;
use groundwork_store::projects::{self, Project, ProjectFields};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// Body of `POST /api/v1/projects`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Name (1–200 characters).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// GeoJSON Polygon or MultiPolygon in EPSG:4326.
    #[schema(value_type = Object)]
    pub aoi: Value,
    /// First day (YYYY-MM-DD).
    pub start: NaiveDate,
    /// Last day (YYYY-MM-DD), not before `start`.
    pub end: NaiveDate,
    /// Task.
    pub task: Task,
    /// Legend.
    #[serde(default)]
    pub classes: Vec<ClassDef>,
    /// Modalities: `sentinel2_l2a`, `sentinel1`, `landsat` (default: Sentinel-2 L2A).
    #[serde(default = "default_modalities")]
    #[schema(value_type = Vec<String>)]
    pub modalities: Vec<Modality>,
    /// Model size (default nano).
    #[serde(default = "default_model_size")]
    pub model_size: ModelSize,
    /// Encoder patch size 1–8 (default 4).
    #[serde(default = "default_patch_size")]
    pub patch_size: i32,
    /// Window size in pixels (default 64).
    #[serde(default = "default_window_size")]
    pub window_size: i32,
    /// Licence of the published maps: an SPDX identifier such as `CC-BY-4.0` (the default), `CC0-1.0`
    /// or `ODbL-1.0`, or `other` with `license_url`.
    #[serde(default = "default_license")]
    pub license: String,
    /// Link to the licence's terms (`http`/`https`; required with `other`).
    #[serde(default)]
    pub license_url: Option<String>,
    /// Whether training may start from random encoder weights when no pretrained OlmoEarth checkpoint
    /// is available to the worker (default false: training then fails and says how to install one).
    /// For trying the platform offline; maps trained from random weights are much less accurate.
    #[serde(default)]
    pub allow_random_init: bool,
}

/// Calendar months from `start`'s to `end`'s, both counted: the monthly time steps of the period.
#[must_use]
pub fn months_spanned(start: chrono::NaiveDate, end: chrono::NaiveDate) -> i32 {
    use chrono::Datelike;
    let (m1, m0) = (end.month0(), start.month0());
    (end.year() - start.year()) * 12 + i32::try_from(m1).unwrap_or(0)
        - i32::try_from(m0).unwrap_or(0)
        + 1
}

fn default_license() -> String {
    DEFAULT_LICENSE.into()
}

/// The licence of a project's maps unless its owner chooses another.
pub const DEFAULT_LICENSE: &str = "CC-BY-4.0";

fn default_modalities() -> Vec<Modality> {
    vec![Modality::Sentinel2L2a]
}

fn default_model_size() -> ModelSize {
    ModelSize::Nano
}

fn default_patch_size() -> i32 {
    4
}

fn default_window_size() -> i32 {
    64
}

/// Body of `PATCH /api/v1/projects/{id}`: any subset of the fields.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// AOI.
    #[schema(value_type = Option<Object>)]
    pub aoi: Option<Value>,
    /// Start.
    pub start: Option<NaiveDate>,
    /// End.
    pub end: Option<NaiveDate>,
    /// Task.
    pub task: Option<Task>,
    /// Legend.
    pub classes: Option<Vec<ClassDef>>,
    /// Modalities.
    #[schema(value_type = Option<Vec<String>>)]
    pub modalities: Option<Vec<Modality>>,
    /// Model size.
    pub model_size: Option<ModelSize>,
    /// Patch size.
    pub patch_size: Option<i32>,
    /// Window size.
    pub window_size: Option<i32>,
    /// Licence (SPDX identifier or `other`).
    pub license: Option<String>,
    /// Link to the licence's terms; an empty string removes it.
    pub license_url: Option<String>,
    /// Whether training may start from random weights without a pretrained checkpoint.
    pub allow_random_init: Option<bool>,
}

/// `validate` on a blocking thread: measuring a large AOI must not hold up the async runtime.
async fn validate_off_runtime(p: CreateProject, max_km2: f64) -> Result<ProjectFields, ApiError> {
    tokio::task::spawn_blocking(move || validate(p, max_km2))
        .await
        .map_err(|e| ApiError::internal(&e))?
}

fn validate(p: CreateProject, max_km2: f64) -> Result<ProjectFields, ApiError> {
    let mut errors = Vec::new();
    let name = p.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push(FieldError {
            field: "name".into(),
            message: "a name must have 1–200 characters".into(),
        });
    }
    let aoi = crate::geometry::aoi(&p.aoi, max_km2, &mut errors);
    if p.end < p.start {
        errors.push(FieldError {
            field: "end".into(),
            message: format!("end {} is before start {}", p.end, p.start),
        });
    } else {
        // One monthly composite per time step, and OlmoEarth takes at most 12 of them: a longer
        // range is refused here, not at acquisition.
        let months = months_spanned(p.start, p.end);
        let max = groundwork_imagery::composite::MAX_BINS;
        if months > i32::try_from(max).unwrap_or(i32::MAX) {
            errors.push(FieldError {
                field: "end".into(),
                message: format!(
                    "{} to {} spans {months} months; the model takes at most {max} monthly time steps: \
                     choose a period of at most {max} months (a project per season or year, or a new \
                     prediction period for a trained model)",
                    p.start, p.end
                ),
            });
        }
    }
    validate::classes(&p.classes, &mut errors);
    if p.modalities.is_empty() {
        errors.push(FieldError {
            field: "modalities".into(),
            message: "choose at least one modality".into(),
        });
    }
    let mut seen = std::collections::HashSet::new();
    if !p.modalities.iter().all(|m| seen.insert(*m)) {
        errors.push(FieldError {
            field: "modalities".into(),
            message: "a modality is listed twice".into(),
        });
    }
    if !(1..=8).contains(&p.patch_size) {
        errors.push(FieldError {
            field: "patch_size".into(),
            message: format!("must be 1–8, got {}", p.patch_size),
        });
    }
    if !(8..=1024).contains(&p.window_size) {
        errors.push(FieldError {
            field: "window_size".into(),
            message: format!("must be 8–1024 px, got {}", p.window_size),
        });
    } else if (1..=8).contains(&p.patch_size) && p.window_size % p.patch_size != 0 {
        errors.push(FieldError {
            field: "window_size".into(),
            message: format!("must be divisible by the patch size {}", p.patch_size),
        });
    }
    let license = p.license.trim().to_owned();
    let license_url = p
        .license_url
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty());
    let spdx_like = !license.is_empty()
        && license.len() <= 64
        && license.starts_with(|c: char| c.is_ascii_alphanumeric())
        && license
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'));
    if !spdx_like {
        errors.push(FieldError {
            field: "license".into(),
            message: "an SPDX licence identifier such as CC-BY-4.0, or `other` with license_url"
                .into(),
        });
    }
    match &license_url {
        Some(u)
            if !(u.starts_with("https://") || u.starts_with("http://"))
                || u.len() > 2000
                || u.chars().any(char::is_whitespace) =>
        {
            errors.push(FieldError {
                field: "license_url".into(),
                message: "an http or https link of at most 2,000 characters".into(),
            });
        }
        None if license == "other" => errors.push(FieldError {
            field: "license_url".into(),
            message: "a licence `other` needs a link to its terms".into(),
        }),
        _ => {}
    }
    match aoi {
        Some(aoi) if errors.is_empty() => Ok(ProjectFields {
            name,
            description: p.description,
            aoi: aoi.geometry,
            bbox: aoi.bbox,
            area_km2: aoi.area_km2,
            start: p.start,
            end: p.end,
            task: p.task,
            classes: p.classes,
            modalities: p.modalities,
            model_size: p.model_size,
            patch_size: p.patch_size,
            window_size: p.window_size,
            license,
            license_url,
            allow_random_init: p.allow_random_init,
        }),
        _ => Err(ApiError::validation(errors)),
    }
}

/// Creates a project.
pub async fn create_project(
    state: &AppState,
    actor: &Actor,
    body: CreateProject,
) -> ApiResult<Project> {
    actor.require(Role::Member)?;
    let fields = validate_off_runtime(body, state.max_aoi_km2).await?;
    let p = projects::create(&state.pool, actor.org_id, &fields).await?;
    actor
        .audit(
            state,
            "project.create",
            "project",
            p.id,
            json!({"name": p.name, "allow_random_init": p.allow_random_init}),
        )
        .await;
    Ok(p)
}

/// Lists projects, newest first.
pub async fn list_projects(
    state: &AppState,
    actor: &Actor,
    q: PageQuery,
) -> ApiResult<Page<Project>> {
    let limit = q.limit()?;
    let items = projects::list(&state.pool, actor.org_id, q.cursor()?, limit + 1).await?;
    Ok(Page::new(items, limit, |p| p.id))
}

/// One project.
pub async fn get_project(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<Project> {
    Ok(projects::get(&state.pool, actor.org_id, id).await?)
}

/// Changes some fields of a project.
pub async fn update_project(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    patch: UpdateProject,
) -> ApiResult<Project> {
    actor.require(Role::Member)?;
    let current = projects::get(&state.pool, actor.org_id, id).await?;
    let merged = CreateProject {
        name: patch.name.unwrap_or(current.name),
        description: patch.description.unwrap_or(current.description),
        aoi: patch.aoi.unwrap_or(current.aoi),
        start: patch.start.unwrap_or(current.start),
        end: patch.end.unwrap_or(current.end),
        task: patch.task.unwrap_or(current.task),
        classes: patch.classes.unwrap_or(current.classes),
        modalities: patch.modalities.unwrap_or(current.modalities),
        model_size: patch.model_size.unwrap_or(current.model_size),
        patch_size: patch.patch_size.unwrap_or(current.patch_size),
        window_size: patch.window_size.unwrap_or(current.window_size),
        license: patch.license.unwrap_or(current.license),
        license_url: match patch.license_url {
            Some(u) => Some(u),
            None => current.license_url,
        },
        allow_random_init: patch.allow_random_init.unwrap_or(current.allow_random_init),
    };
    let fields = validate_off_runtime(merged, state.max_aoi_km2).await?;
    let p = projects::update(&state.pool, actor.org_id, id, &fields).await?;
    // The audit log records who allowed (or stopped allowing) training from random weights.
    let details = if p.allow_random_init == current.allow_random_init {
        json!({})
    } else {
        json!({"allow_random_init": p.allow_random_init})
    };
    actor
        .audit(state, "project.update", "project", p.id, details)
        .await;
    Ok(p)
}

/// Deletes a project with its runs (admins; refused while a step runs).
pub async fn delete_project(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<()> {
    actor.require(Role::Admin)?;
    projects::delete(&state.pool, actor.org_id, id).await?;
    actor
        .audit(state, "project.delete", "project", id, json!({}))
        .await;
    Ok(())
}
