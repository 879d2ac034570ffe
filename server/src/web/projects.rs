//! Project pages: the list, the new-project wizard, and a project's page with its map, runs and steps.

use super::error::PageResult;
use super::{Layout, Nav, form_pairs, form_value, form_values};
use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::ApiError;
use crate::api::error::FieldError;
use crate::api::extract::Path;
use crate::api::validate::ClassDef;
use crate::service::imagery::AcquireBody;
use crate::service::projects::CreateProject;
use crate::service::runs::{CreateRun, StepSpec};
use crate::service::{imagery, projects as project_service, runs};
use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use groundwork_store::jobs::{self, RunWithSteps, Step};
use groundwork_store::labels;
use groundwork_store::projects::{self, Project};
use groundwork_store::windows;
use groundwork_worker::StepArgs;
use groundwork_worker::steps::SleepArgs;
use serde_json::Value;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Runs shown on a project's page.
const RUNS_SHOWN: i64 = 10;

/// Field errors keyed by form field (`name`, `aoi`, `classes[0].color`, `form` for the rest).
#[derive(Debug, Default, Clone)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    /// The messages of `field`, joined.
    #[must_use]
    pub fn get(&self, field: &str) -> Option<String> {
        self.0.get(field).map(|m| m.join("; "))
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of fields with errors.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Takes the field errors of an API validation error; other errors become a form-level message.
    fn from_api(e: ApiError, form_fields: &[&str]) -> Self {
        let mut out = Self::default();
        let details = e.details.as_array().cloned().unwrap_or_default();
        if details.is_empty() {
            out.add("form", e.message);
            return out;
        }
        for d in details {
            let field = d.get("field").and_then(Value::as_str).unwrap_or("form");
            let message = d
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("invalid");
            let key = form_fields
                .iter()
                .find(|f| field == **f || field.starts_with(&format!("{f}.")))
                .map(|f| (*f).to_owned())
                .or_else(|| field.starts_with("classes[").then(|| field.to_owned()))
                .unwrap_or_else(|| "form".to_owned());
            out.add(key, message);
        }
        out
    }
}

/// The new-project form's values, kept as typed so they can be shown again.
#[derive(Debug, Clone)]
pub struct ProjectForm {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The AOI as GeoJSON text.
    pub aoi: String,
    /// First day.
    pub start: String,
    /// Last day.
    pub end: String,
    /// Task.
    pub task: String,
    /// `(name, colour)` rows.
    pub classes: Vec<(String, String)>,
    /// Checked modalities.
    pub modalities: Vec<String>,
    /// Model size.
    pub model_size: String,
    /// Patch size.
    pub patch_size: String,
    /// Window size.
    pub window_size: String,
    /// Whether training may start from random weights without a pretrained checkpoint.
    pub allow_random_init: bool,
}

impl Default for ProjectForm {
    fn default() -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            aoi: String::new(),
            start: String::new(),
            end: String::new(),
            task: "classification".into(),
            classes: vec![(String::new(), "#1b9e77".into())],
            modalities: vec!["sentinel2_l2a".into()],
            model_size: "nano".into(),
            patch_size: "4".into(),
            window_size: "64".into(),
            allow_random_init: false,
        }
    }
}

/// Fields the API reports errors for, as the form names them.
const PROJECT_FIELDS: &[&str] = &[
    "name",
    "description",
    "aoi",
    "start",
    "end",
    "task",
    "modalities",
    "model_size",
    "patch_size",
    "window_size",
];

/// Task choices `(value, label)`.
pub const TASKS: &[(&str, &str)] = &[
    ("classification", "Classification: a class per window"),
    ("segmentation", "Segmentation: a class per pixel"),
    ("regression", "Regression: a value per window or pixel"),
];

/// Modality choices.
pub const MODALITIES: &[(&str, &str)] = &[
    ("sentinel2_l2a", "Sentinel-2 L2A"),
    ("sentinel1", "Sentinel-1"),
    ("landsat", "Landsat 8/9"),
];

/// Model sizes.
pub const MODEL_SIZES: &[(&str, &str)] = &[
    ("nano", "Nano (1.4 M parameters)"),
    ("tiny", "Tiny (6.2 M)"),
    ("base", "Base (89 M)"),
    ("large", "Large (308 M)"),
];

/// Whether a checkbox named `name` was checked (sent with any value but `false`).
fn checkbox(pairs: &[(String, String)], name: &str) -> bool {
    pairs.iter().any(|(k, v)| k == name && v != "false")
}

fn enum_value<T: serde::de::DeserializeOwned>(v: &str) -> Option<T> {
    serde_json::from_value(Value::String(v.to_owned())).ok()
}

impl ProjectForm {
    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let names = form_values(pairs, "class_name");
        let colors = form_values(pairs, "class_color");
        let classes = names
            .into_iter()
            .zip(colors.into_iter().chain(std::iter::repeat(String::new())))
            .filter(|(n, _)| !n.trim().is_empty())
            .collect();
        Self {
            name: form_value(pairs, "name"),
            description: form_value(pairs, "description"),
            aoi: form_value(pairs, "aoi"),
            start: form_value(pairs, "start"),
            end: form_value(pairs, "end"),
            task: form_value(pairs, "task"),
            classes,
            modalities: form_values(pairs, "modalities"),
            model_size: form_value(pairs, "model_size"),
            patch_size: form_value(pairs, "patch_size"),
            window_size: form_value(pairs, "window_size"),
            allow_random_init: checkbox(pairs, "allow_random_init"),
        }
    }

    /// The API request these values make, or the fields that cannot be read at all.
    fn request(&self) -> Result<CreateProject, FieldErrors> {
        let mut errors = FieldErrors::default();
        let aoi = if self.aoi.trim().is_empty() {
            errors.add(
                "aoi",
                "draw the area on the map, or upload or paste a GeoJSON polygon",
            );
            Value::Null
        } else {
            serde_json::from_str(&self.aoi).unwrap_or_else(|e| {
                errors.add("aoi", format!("this is not valid GeoJSON: {e}"));
                Value::Null
            })
        };
        let mut date = |field: &str, v: &str| {
            NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d")
                .map_err(|_| errors.add(field, "choose a date (YYYY-MM-DD)"))
                .ok()
        };
        let start = date("start", &self.start);
        let end = date("end", &self.end);
        let task = enum_value(&self.task);
        if task.is_none() {
            errors.add("task", "choose a task");
        }
        let model_size = enum_value(&self.model_size);
        if model_size.is_none() {
            errors.add("model_size", "choose a model size");
        }
        let mut modalities = Vec::new();
        for m in &self.modalities {
            match enum_value(m) {
                Some(m) => modalities.push(m),
                None => errors.add("modalities", format!("unknown modality {m:?}")),
            }
        }
        let mut number = |field: &str, v: &str| {
            v.trim()
                .parse::<i32>()
                .map_err(|_| errors.add(field, "enter a whole number"))
                .ok()
        };
        let patch_size = number("patch_size", &self.patch_size);
        let window_size = number("window_size", &self.window_size);
        let mut classes = Vec::new();
        for (i, (name, color)) in self.classes.iter().enumerate() {
            match u8::try_from(i) {
                Ok(id) => classes.push(ClassDef {
                    id,
                    name: name.clone(),
                    color: color.clone(),
                }),
                Err(_) => {
                    errors.add("classes", "a legend has at most 255 classes");
                    break;
                }
            }
        }
        match (start, end, task, model_size, patch_size, window_size) {
            (Some(start), Some(end), Some(task), Some(model_size), Some(patch), Some(window))
                if errors.is_empty() =>
            {
                Ok(CreateProject {
                    name: self.name.clone(),
                    description: self.description.clone(),
                    aoi,
                    start,
                    end,
                    task,
                    classes,
                    modalities,
                    model_size,
                    patch_size: patch,
                    window_size: window,
                    license: project_service::DEFAULT_LICENSE.into(),
                    license_url: None,
                    allow_random_init: self.allow_random_init,
                })
            }
            _ => Err(errors),
        }
    }
}

/// A project row of the list.
pub struct ProjectRow {
    /// The project.
    pub project: Project,
}

impl ProjectRow {
    /// Area, formatted.
    #[must_use]
    pub fn area(&self) -> String {
        format_km2(area_of(&self.project))
    }
}

/// The area measured when the AOI was checked (stored with the project; never re-measured per page).
const fn area_of(p: &Project) -> f64 {
    p.area_km2
}

/// `12.3 km²`, with sensible precision.
#[must_use]
pub fn format_km2(km2: f64) -> String {
    if km2 >= 100.0 {
        format!("{km2:.0} km²")
    } else if km2 >= 1.0 {
        format!("{km2:.1} km²")
    } else {
        format!("{km2:.3} km²")
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "projects.html")]
struct ProjectsPage {
    layout: Layout,
    projects: Vec<ProjectRow>,
}

/// `GET /projects`.
pub async fn list(State(state): State<AppState>, actor: Actor) -> PageResult<impl IntoResponse> {
    let items = projects::list(&state.pool, actor.org_id, None, 200).await?;
    Ok(ProjectsPage {
        layout: Layout::new(&state, &actor, "Projects", Nav::Projects).await,
        projects: items
            .into_iter()
            .map(|project| ProjectRow { project })
            .collect(),
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "project_new.html")]
struct NewProjectPage {
    layout: Layout,
    form: ProjectForm,
    errors: FieldErrors,
    max_aoi_km2: f64,
    tasks: &'static [(&'static str, &'static str)],
    modalities: &'static [(&'static str, &'static str)],
    model_sizes: &'static [(&'static str, &'static str)],
}

impl NewProjectPage {
    fn class_error(&self, i: &usize, part: &str) -> Option<String> {
        self.errors.get(&format!("classes[{i}].{part}"))
    }

    fn checked(&self, modality: &str) -> bool {
        self.form.modalities.iter().any(|m| m == modality)
    }
}

async fn new_page(
    state: &AppState,
    actor: &Actor,
    form: ProjectForm,
    errors: FieldErrors,
) -> NewProjectPage {
    NewProjectPage {
        layout: Layout::new(state, actor, "New project", Nav::Projects).await,
        form,
        errors,
        max_aoi_km2: state.max_aoi_km2,
        tasks: TASKS,
        modalities: MODALITIES,
        model_sizes: MODEL_SIZES,
    }
}

/// `GET /projects/new`.
pub async fn new_form(
    State(state): State<AppState>,
    actor: Actor,
) -> PageResult<impl IntoResponse> {
    actor.require(Role::Member)?;
    Ok(new_page(
        &state,
        &actor,
        ProjectForm::default(),
        FieldErrors::default(),
    )
    .await)
}

/// `POST /projects/new`: creates the project through the same service function as the API (the same validation), or
/// shows the form again with each problem next to its field.
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    body: Bytes,
) -> PageResult<Response> {
    actor.require(Role::Member)?;
    let form = ProjectForm::from_pairs(&form_pairs(&body));
    let errors = match form.request() {
        Ok(request) => match project_service::create_project(&state, &actor, request).await {
            Ok(project) => {
                return Ok(Redirect::to(&format!("/projects/{}", project.id)).into_response());
            }
            Err(e) if e.status.is_client_error() => FieldErrors::from_api(e, PROJECT_FIELDS),
            Err(e) => return Err(e.into()),
        },
        Err(errors) => errors,
    };
    let page = new_page(&state, &actor, form, errors).await;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

/// A step as the page shows it.
pub struct StepView {
    /// The step.
    pub step: Step,
}

impl StepView {
    /// Progress in percent, whole.
    #[must_use]
    pub fn percent(&self) -> i64 {
        #[expect(clippy::cast_possible_truncation, reason = "0–100")]
        let p = (f64::from(self.step.progress.clamp(0.0, 1.0)) * 100.0).round() as i64;
        if self.step.state == "succeeded" {
            100
        } else {
            p
        }
    }

    /// Whether it can be cancelled.
    #[must_use]
    pub fn cancellable(&self) -> bool {
        matches!(self.step.state.as_str(), "queued" | "running") && !self.step.cancel_requested
    }

    /// Whether it can be retried.
    #[must_use]
    pub fn retryable(&self) -> bool {
        matches!(self.step.state.as_str(), "failed" | "cancelled")
    }

    /// The log line: the error when there is one, else the last progress message.
    #[must_use]
    pub fn log(&self) -> String {
        match &self.step.error {
            Some(e) if !e.is_empty() => e.clone(),
            _ => self.step.message.clone(),
        }
    }
}

/// A run as the page shows it.
pub struct RunView {
    /// The run.
    pub run: jobs::Run,
    /// Its steps.
    pub steps: Vec<StepView>,
    /// One sentence per queue whose queued steps no live worker can take.
    pub waiting: Vec<String>,
}

impl RunView {
    /// The run as shown, with `live_queues` the queues a live worker usable by the organisation serves.
    fn new(r: RunWithSteps, live_queues: &[String], live_memory: &[(String, Option<f64>)]) -> Self {
        let mut waiting: Vec<String> = r
            .steps
            .iter()
            .filter(|s| s.state == "queued" && !live_queues.contains(&s.queue))
            .map(|s| {
                format!(
                    "Waiting for a worker: none is online for the `{}` queue. An administrator \
                     starts one (see Workers), or the steps wait until one joins.",
                    s.queue
                )
            })
            .collect();
        // Queued steps that need more memory than any live worker of their queue has: one sentence
        // per queue.
        for (queue, most) in live_memory {
            let Some(most) = most else { continue };
            let short: Vec<f64> = r
                .steps
                .iter()
                .filter(|s| s.state == "queued" && s.queue == *queue)
                .filter_map(|s| {
                    s.needs
                        .get("memory_mib")
                        .and_then(serde_json::Value::as_f64)
                })
                .filter(|need| need > most)
                .collect();
            if let Some(need) = short.iter().copied().reduce(f64::max) {
                waiting.push(format!(
                    "Waiting for a larger worker: {} step{} on the `{queue}` queue need{} about {:.1} GiB \
                     of model-device memory, and the largest live worker there has {:.1} GiB. An \
                     administrator starts a larger one, or a smaller model, patch or batch needs less.",
                    short.len(),
                    if short.len() == 1 { "" } else { "s" },
                    if short.len() == 1 { "s" } else { "" },
                    need / 1024.0,
                    most / 1024.0
                ));
            }
        }
        waiting.dedup();
        if r.run.awaiting_approval {
            let hours = r
                .run
                .estimate
                .as_ref()
                .and_then(|e| Some((e["device_hours"].as_f64()?, e["device_kind"].as_str()?)))
                .map_or(String::new(), |(h, d)| {
                    format!(" (about {h:.2} {}-hours)", d.to_uppercase())
                });
            waiting = vec![format!(
                "Waiting for an administrator's approval: this run{hours} would exceed what is left of \
                 the organisation's monthly device-time quota. Its steps start once an installation \
                 administrator approves it; cancel a step to withdraw it."
            )];
        }
        Self {
            run: r.run,
            steps: r.steps.into_iter().map(|step| StepView { step }).collect(),
            waiting,
        }
    }

    /// "Device time: 0.52 GPU-hours, 0.10 CPU-hours" (empty before any step started).
    #[must_use]
    pub fn device_time(&self) -> String {
        let parts: Vec<String> = self
            .run
            .device_time
            .iter()
            .filter(|t| t.seconds > 0.0)
            .map(|t| {
                format!(
                    "{} {}-hours",
                    super::results::hours(t.seconds / 3600.0),
                    t.device_kind.name().to_uppercase()
                )
            })
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("Device time: {}", parts.join(", "))
        }
    }

    /// RFC 3339 times of the run for the page script's elapsed time and estimate (empty when unset).
    #[must_use]
    pub fn times(&self) -> (String, String, String) {
        let t = |d: Option<chrono::DateTime<chrono::Utc>>| {
            d.map(|d| d.to_rfc3339()).unwrap_or_default()
        };
        (
            self.run.created_at.to_rfc3339(),
            t(self.run.started_at),
            t(self.run.finished_at),
        )
    }

    /// Whether the page should keep polling it.
    #[must_use]
    pub fn active(&self) -> bool {
        !matches!(
            self.run.state.as_str(),
            "succeeded" | "failed" | "cancelled"
        )
    }

    /// `2026-11-27 10:00 UTC`.
    #[must_use]
    pub fn created(&self) -> String {
        self.run
            .created_at
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    }
}

/// The start-run form's values.
#[derive(Debug, Clone)]
pub struct RunForm {
    /// `sleep` or `acquire`.
    pub kind: String,
    /// Seconds of a `sleep` run.
    pub seconds: String,
    /// STAC API or catalogue of an acquisition.
    pub stac: String,
    /// Catalogue conventions: `earth-search` or `planetary-computer`.
    pub profile: String,
}

impl RunForm {
    /// Whether the form offers a `sleep` run (only in builds with the test-only step kinds).
    #[must_use]
    pub fn offers_sleep(&self) -> bool {
        cfg!(feature = "test-kinds")
    }
}

/// Catalogue profiles the run form offers.
pub const PROFILES: &[(&str, &str)] = &[
    (
        "earth-search",
        "Earth Search (Element 84), also the demo catalogue",
    ),
    ("planetary-computer", "Microsoft Planetary Computer"),
];

impl Default for RunForm {
    fn default() -> Self {
        Self {
            kind: "acquire".into(),
            seconds: "10".into(),
            stac: String::new(),
            profile: "earth-search".into(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "project.html")]
struct ProjectPage {
    layout: Layout,
    project: Project,
    area: String,
    modalities: String,
    classes: Vec<ClassDef>,
    counts: windows::Counts,
    runs: Vec<RunView>,
    run_form: RunForm,
    run_errors: FieldErrors,
    aoi_json: String,
    profiles: &'static [(&'static str, &'static str)],
    results: super::results::Results,
    labels: LabelsView,
    can_work: bool,
    can_admin: bool,
    /// Why "Train a model" is disabled (what is missing), if it is.
    train_blocker: Option<String>,
    /// Why "Predict" is disabled, if it is.
    predict_blocker: Option<String>,
    /// What training would cost, in words (when it can start).
    train_estimate: Option<super::results::EstimateView>,
    /// What mapping would cost, in words (when it can start).
    predict_estimate: Option<super::results::EstimateView>,
    /// A refusal of the settings form.
    settings_error: String,
    /// What the newest finished acquisition found, month by month.
    acquisition: Option<AcquisitionTable>,
    /// Monthly time steps of the project's period (what a prediction of another period spans).
    months: i32,
    /// The project's schedule, if it has one.
    schedule: Option<ScheduleRow>,
    /// The schedule form's choices.
    cadences: &'static [(&'static str, &'static str)],
}

/// Cadences of a schedule, with what the form says.
const CADENCES: &[(&str, &str)] = &[
    ("monthly", "Every month"),
    ("quarterly", "Every three months"),
    ("yearly", "Every year"),
];

/// A project's schedule as its page shows it.
struct ScheduleRow {
    /// `monthly`, `quarterly` or `yearly`.
    cadence: String,
    /// When it fires next.
    next: String,
    /// The period that run maps.
    next_period: String,
    /// Change alert threshold, km².
    alert: Option<f64>,
    /// Why its last run did not start or compare.
    error: Option<String>,
    /// Its last run.
    last_run: Option<Uuid>,
    /// The change map of its last two maps.
    change: Option<Uuid>,
}

impl ScheduleRow {
    fn new(v: crate::service::schedules::ScheduleView) -> Self {
        let s = v.schedule;
        let month = |d: chrono::NaiveDate| d.format("%b %Y").to_string();
        ScheduleRow {
            cadence: s.cadence,
            next: s.next_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            next_period: format!(
                "{} – {}",
                month(v.next_period.start),
                month(v.next_period.end)
            ),
            alert: s.change_alert_km2,
            error: s.last_error,
            last_run: s.last_run_id,
            change: s.last_change_map_id,
        }
    }
}

/// The newest finished acquisition's summary: per month and modality, the scenes the windows used and
/// the mean fraction of clear pixels.
struct AcquisitionTable {
    /// Column heads after "Month".
    heads: Vec<String>,
    /// `(month, cells)`.
    rows: Vec<(String, Vec<String>)>,
    /// Bands whose values look like other units than the model expects.
    warnings: Vec<String>,
}

impl AcquisitionTable {
    /// From an `acquire_summary` step's output; `None` when it holds no months.
    fn from_summary(out: &serde_json::Value) -> Option<Self> {
        let months: Vec<String> = serde_json::from_value(out["months"].clone()).ok()?;
        let modalities: Vec<String> = out["scenes_per_month"]
            .as_object()?
            .keys()
            .cloned()
            .collect();
        if months.is_empty() || modalities.is_empty() {
            return None;
        }
        let heads = modalities
            .iter()
            .flat_map(|m| [format!("{m}: scenes"), format!("{m}: clear pixels")])
            .collect();
        let rows = months
            .iter()
            .enumerate()
            .map(|(t, month)| {
                let cells = modalities
                    .iter()
                    .flat_map(|m| {
                        let scenes = out["scenes_per_month"][m][t]
                            .as_u64()
                            .map_or_else(|| "–".into(), |n| n.to_string());
                        let clear = out["clear_fraction"][m][t]
                            .as_f64()
                            .map_or_else(|| "–".into(), |f| format!("{:.0} %", f * 100.0));
                        [scenes, clear]
                    })
                    .collect();
                (month.clone(), cells)
            })
            .collect();
        let warnings = serde_json::from_value(out["unit_warnings"].clone()).unwrap_or_default();
        Some(Self {
            heads,
            rows,
            warnings,
        })
    }
}

/// The labels and split section of the project page.
struct LabelsView {
    summary: labels::Summary,
    /// One sentence per class the split leaves out of a split.
    missing: Vec<String>,
}

fn split_name(s: labels::Split) -> &'static str {
    match s {
        labels::Split::Train => "training",
        labels::Split::Val => "validation",
        labels::Split::Test => "test",
    }
}

/// "Class 4 (water) has no window in the validation and test splits: …"
fn missing_sentence(m: &labels::MissingClass) -> String {
    let class = match &m.class_name {
        Some(name) => format!("Class {} ({name})", m.class_id),
        None => format!("Class {}", m.class_id),
    };
    let names: Vec<&str> = m.splits.iter().map(|s| split_name(*s)).collect();
    let splits = match names.as_slice() {
        [one] => format!("the {one} split"),
        [init @ .., last] => format!("the {} and {last} splits", init.join(", ")),
        [] => "a split".to_owned(),
    };
    format!(
        "{class} has no window in {splits}: it is labelled in too few blocks of the split. \
         Label it in more places or split again with a smaller block size."
    )
}

async fn project_page(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    run_form: RunForm,
    run_errors: FieldErrors,
) -> PageResult<ProjectPage> {
    let project = projects::get(&state.pool, actor.org_id, id).await?;
    let counts = windows::counts(&state.pool, id).await?;
    let live = groundwork_store::models::live_queues(&state.pool, actor.org_id).await?;
    let live_memory =
        groundwork_store::models::live_queue_memory(&state.pool, actor.org_id).await?;
    let mut runs = Vec::new();
    for r in jobs::list_runs(&state.pool, actor.org_id, id, None, RUNS_SHOWN).await? {
        runs.push(RunView::new(
            jobs::get_run(&state.pool, actor.org_id, r.id).await?,
            &live,
            &live_memory,
        ));
    }
    let acquisition = runs.iter().find_map(|r| {
        r.steps
            .iter()
            .find(|s| {
                // The project's own acquisition, not a monitoring run's of another period or area.
                s.step.kind == groundwork_types::StepKind::AcquireSummary
                    && s.step.state == groundwork_types::StepState::Succeeded
                    && s.step.args.get("windows").and_then(|w| w.as_str()) != Some("run")
            })
            .and_then(|s| s.step.output.as_ref())
            .and_then(AcquisitionTable::from_summary)
    });
    let train_blocker = crate::service::models::training_blocker(state, &project).await?;
    let predict_blocker = crate::service::models::prediction_blocker(state, actor, id).await?;
    let device = crate::service::usage::device_now(state, actor.org_id).await?;
    let train_estimate = match train_blocker {
        Some(_) => None,
        None => {
            let epochs = groundwork_worker::steps::TrainArgs::default().planned_epochs();
            let e = crate::service::usage::train_estimate(
                state,
                actor.org_id,
                &project,
                epochs,
                device,
            )
            .await?;
            Some(super::results::EstimateView::new(&e))
        }
    };
    let predict_estimate = match predict_blocker {
        Some(_) => None,
        None => {
            let e = crate::service::usage::predict_estimate(state, actor.org_id, &project, device)
                .await?;
            Some(super::results::EstimateView::new(&e))
        }
    };
    let classes = project.classes.clone();
    let months = crate::service::projects::months_spanned(project.start, project.end);
    let schedule = crate::service::schedules::get(state, actor, id)
        .await
        .ok()
        .map(ScheduleRow::new);
    let results = super::results::results(state, actor, id).await?;
    let summary = labels::summary(&state.pool, id, None).await?;
    let labels = LabelsView {
        missing: summary.missing.iter().map(missing_sentence).collect(),
        summary,
    };
    Ok(ProjectPage {
        layout: Layout::new(state, actor, project.name.clone(), Nav::Projects).await,
        area: format_km2(area_of(&project)),
        modalities: project
            .modalities
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        aoi_json: project.aoi.to_string(),
        classes,
        counts,
        runs,
        run_form,
        run_errors,
        project,
        profiles: PROFILES,
        results,
        labels,
        can_work: actor.role >= Role::Member,
        can_admin: actor.role >= Role::Admin,
        train_blocker,
        predict_blocker,
        train_estimate,
        predict_estimate,
        settings_error: String::new(),
        acquisition,
        months,
        schedule,
        cadences: CADENCES,
    })
}

/// The project's page again (422) with a refusal of its train or predict buttons in "Results".
pub(super) async fn with_results_error(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    message: String,
) -> PageResult<Response> {
    let mut page =
        project_page(state, actor, id, RunForm::default(), FieldErrors::default()).await?;
    page.results.error = message;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

/// `GET /projects/{id}`.
pub async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> PageResult<impl IntoResponse> {
    project_page(
        &state,
        &actor,
        id,
        RunForm::default(),
        FieldErrors::default(),
    )
    .await
}

/// `POST /projects/{id}/settings`: name, description, time range, licence and whether training may
/// start from random weights, from the project page (the same service function as
/// `PATCH /api/v1/projects/{id}`; new dates mark acquired imagery stale).
pub async fn settings(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> PageResult<Response> {
    actor.require(Role::Member)?;
    let pairs = form_pairs(&body);
    let date = |k: &str| -> Result<Option<chrono::NaiveDate>, String> {
        match form_value(&pairs, k).trim() {
            "" => Ok(None),
            v => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{k}: not a date (YYYY-MM-DD)")),
        }
    };
    let patch = match (date("start"), date("end")) {
        (Ok(start), Ok(end)) => Ok(project_service::UpdateProject {
            name: Some(form_value(&pairs, "name").trim().to_owned()),
            description: Some(form_value(&pairs, "description").trim().to_owned()),
            start,
            end,
            // A form without the licence fields leaves the licence as it is.
            license: Some(form_value(&pairs, "license").trim().to_owned())
                .filter(|l| !l.is_empty()),
            license_url: pairs
                .iter()
                .any(|(k, _)| k == "license_url")
                .then(|| form_value(&pairs, "license_url").trim().to_owned()),
            // An unchecked box sends nothing: the hidden `allow_random_init_shown` says the form had
            // it, so its absence means "not allowed"; a form without it leaves the setting alone.
            allow_random_init: pairs
                .iter()
                .any(|(k, _)| k == "allow_random_init_shown")
                .then(|| checkbox(&pairs, "allow_random_init")),
            ..Default::default()
        }),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let message = match patch {
        Ok(patch) => match project_service::update_project(&state, &actor, id, patch).await {
            Ok(_) => return Ok(Redirect::to(&format!("/projects/{id}#settings")).into_response()),
            Err(e) if e.status.is_client_error() => e.message,
            Err(e) => return Err(e.into()),
        },
        Err(e) => e,
    };
    let mut page = project_page(
        &state,
        &actor,
        id,
        RunForm::default(),
        FieldErrors::default(),
    )
    .await?;
    page.settings_error = format!("The settings were not saved: {message}");
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

/// `POST /projects/{id}/delete`: deletes the project (admins), after its name was typed to confirm.
pub async fn delete(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> PageResult<Response> {
    actor.require(Role::Admin)?;
    let project = projects::get(&state.pool, actor.org_id, id).await?;
    let confirm = form_pairs(&body)
        .into_iter()
        .find(|(k, _)| k == "confirm")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    if confirm != project.name {
        let mut page = project_page(
            &state,
            &actor,
            id,
            RunForm::default(),
            FieldErrors::default(),
        )
        .await?;
        page.settings_error = "Not deleted: type the project's name exactly to confirm.".to_owned();
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    project_service::delete_project(&state, &actor, id).await?;
    Ok(Redirect::to("/projects").into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "label.html")]
struct LabelPage {
    layout: Layout,
    project: Project,
    /// `[{id, name, color}]` of the project's classes, for the page script.
    classes_json: String,
    aoi_json: String,
    can_edit: bool,
    regression: bool,
}

/// `GET /projects/{id}/label`: the labelling page. Everything it changes goes through the API
/// (`labels/edit`, `labels/import`, `labels/split`, `suggestions`), as a new label-set version each
/// time; viewers see the labels and the imagery without the tools.
pub async fn label(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> PageResult<impl IntoResponse> {
    let project = projects::get(&state.pool, actor.org_id, id).await?;
    let classes_json = serde_json::to_string(&project.classes).unwrap_or_else(|_| "[]".into());
    Ok(LabelPage {
        layout: Layout::new(
            &state,
            &actor,
            format!("Label {}", project.name),
            Nav::Projects,
        )
        .await,
        classes_json,
        aoi_json: project.aoi.to_string(),
        can_edit: actor.role >= Role::Member,
        regression: project.task == groundwork_types::Task::Regression,
        project,
    })
}

/// `POST /projects/{id}/runs`: starts an acquisition (through the same service function as the API) or a `sleep` run.
pub async fn start_run(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> PageResult<Response> {
    actor.require(Role::Member)?;
    let pairs = form_pairs(&body);
    let form = RunForm {
        kind: form_value(&pairs, "kind"),
        seconds: form_value(&pairs, "seconds"),
        stac: form_value(&pairs, "stac"),
        profile: form_value(&pairs, "profile"),
    };
    let result = match form.kind.as_str() {
        "sleep" if form.offers_sleep() => match form.seconds.trim().parse::<f64>() {
            Ok(seconds) if (0.0..=86_400.0).contains(&seconds) => {
                let spec = StepSpec {
                    name: "sleep".into(),
                    kind: SleepArgs::KIND.name().into(),
                    args: serde_json::to_value(SleepArgs { seconds }).unwrap_or_default(),
                    queue: "cpu".into(),
                    max_attempts: 1,
                    backoff_ms: 1000,
                    depends_on: Vec::new(),
                };
                runs::create_run(&state, &actor, id, None, CreateRun { steps: vec![spec] }).await
            }
            _ => Err(ApiError::validation(vec![FieldError {
                field: "seconds".into(),
                message: "enter a number of seconds, 0–86400".into(),
            }])),
        },
        "acquire" => {
            let profile = match form.profile.as_str() {
                "planetary-computer" => {
                    serde_json::to_value(groundwork_imagery::Profile::planetary_computer()).ok()
                }
                _ => None,
            };
            let body = AcquireBody {
                stac: form.stac.trim().to_owned(),
                profile,
                max_cloud: None,
                partitions: None,
                success_threshold: None,
            };
            imagery::acquire(&state, &actor, id, None, body).await
        }
        _ => Err(ApiError::validation(vec![FieldError {
            field: "kind".into(),
            message: "choose what to run".into(),
        }])),
    };
    match result {
        Ok(run) => Ok(Redirect::to(&format!("/projects/{id}#run-{}", run.run.id)).into_response()),
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let errors =
                FieldErrors::from_api(e, &["kind", "seconds", "stac", "profile", "aoi", "steps"]);
            let page = project_page(&state, &actor, id, form, errors).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /projects/{id}/steps/{step}/cancel`.
pub async fn cancel_step(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, step)): Path<(Uuid, Uuid)>,
) -> PageResult<Redirect> {
    actor.require(Role::Member)?;
    jobs::request_cancel(&state.pool, actor.org_id, step).await?;
    Ok(Redirect::to(&format!("/projects/{id}#step-{step}")))
}

/// `POST /projects/{id}/steps/{step}/retry`.
pub async fn retry_step(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, step)): Path<(Uuid, Uuid)>,
) -> PageResult<Redirect> {
    actor.require(Role::Member)?;
    jobs::retry(&state.pool, actor.org_id, step).await?;
    Ok(Redirect::to(&format!("/projects/{id}#step-{step}")))
}

#[cfg(test)]
mod tests {
    use super::AcquisitionTable;
    use serde_json::json;

    #[test]
    fn the_acquisition_table_shows_months_and_any_unit_warning() {
        let out = json!({
            "months": ["2024-05", "2024-06"],
            "scenes_per_month": {"sentinel1": [2, 0]},
            "clear_fraction": {"sentinel1": [1.0, 0.0]},
            "unit_warnings": ["sentinel1 values look like different units than the model expects"],
        });
        let t = AcquisitionTable::from_summary(&out).expect("a table");
        assert_eq!(t.heads, ["sentinel1: scenes", "sentinel1: clear pixels"]);
        assert_eq!(t.rows[0].1, ["2", "100 %"]);
        assert_eq!(t.rows[1].1, ["0", "0 %"]);
        assert_eq!(t.warnings.len(), 1);
        let quiet = json!({"months": ["2024-05"], "scenes_per_month": {"sentinel1": [1]}});
        assert!(
            AcquisitionTable::from_summary(&quiet)
                .expect("a table")
                .warnings
                .is_empty()
        );
    }
}
