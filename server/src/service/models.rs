//! Trained models: starting training (a `train` step and an `evaluate` step), training curves,
//! evaluation reports, and prediction with a trained model (`predict`, `combine` and `publish` steps).

use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::api::{AppState, Page, PageQuery};
use groundwork_store::jobs::RunWithSteps;
use groundwork_store::models::{self, Evaluation, TrainingEpoch};
use groundwork_store::projects;
use groundwork_types::{HeadKind, Task};
use groundwork_worker::StepArgs;
use groundwork_worker::steps::{EvaluateArgs, TrainArgs};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// Body of `POST /api/v1/projects/{id}/train`; every field is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// Label-set version (default: the latest).
    pub label_set_version: Option<i32>,
    /// Total epochs (1–500).
    pub epochs: Option<usize>,
    /// Epochs with the encoder frozen (≤ epochs).
    pub freeze_epochs: Option<usize>,
    /// Windows per optimiser step (1–256).
    pub batch_size: Option<usize>,
    /// Head learning rate (0 < lr ≤ 1).
    pub lr: Option<f64>,
    /// `hybrid` (the default: tokens and 10 m pixels), `light_segmentation`, `unet` or `pooling`, as the
    /// task allows.
    pub head: Option<String>,
    /// When the run would exceed the organisation's device-time quota: hold it until an installation
    /// administrator approves it (instead of refusing it with 429 `quota_exceeded`).
    pub request_approval: Option<bool>,
}

/// Body of `POST /api/v1/projects/{id}/predict`; every field is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// The training run whose model predicts (default: the project's best trained model by validation
    /// score, the newest of equals; `GET /api/v1/projects/{id}/models` lists them).
    pub run_id: Option<Uuid>,
    /// Side of a prediction partition in windows (1–64, default 4): one `predict` step each.
    pub block: Option<usize>,
    /// Overlap of neighbouring model tiles in pixels (default 6, below the window size). Each tile of
    /// the area runs once, so the model runs about `(size / (size − overlap))²` times the area.
    pub overlap: Option<usize>,
    /// When the run would exceed the organisation's device-time quota: hold it until an installation
    /// administrator approves it (instead of refusing it with 429 `quota_exceeded`).
    pub request_approval: Option<bool>,
    /// Monitoring: the first day of another period to map (with `end`), for example the same
    /// season of a later year. The model takes one time step per month, so the period spans as
    /// many months as the project's. The run acquires the period's imagery first; the project's
    /// own imagery (what the model learnt from) is left as it is.
    pub start: Option<chrono::NaiveDate>,
    /// Monitoring: the last day of the period (with `start`).
    pub end: Option<chrono::NaiveDate>,
    /// Monitoring: another area to map (a GeoJSON Polygon or MultiPolygon, either ring orientation,
    /// within the installation's area limit); default the project's. With it alone, the project's
    /// period.
    #[schema(value_type = Option<Object>)]
    pub area: Option<serde_json::Value>,
    /// Monitoring: the catalogue to acquire from (default: the one of the project's last
    /// acquisition), as `POST …/acquire` takes it.
    pub stac: Option<String>,
    /// Monitoring: the catalogue's profile (default: the last acquisition's).
    #[schema(value_type = Option<Object>)]
    pub profile: Option<serde_json::Value>,
    /// Monitoring: largest scene cloud cover, percent (default: the last acquisition's).
    pub max_cloud: Option<f64>,
    /// Monitoring: fraction of the period's windows that must be acquired (default 0.9). Windows
    /// with no imagery in the period are left out of the map.
    pub success_threshold: Option<f64>,
}

/// Default fraction of a monitoring period's windows that must be acquired.
pub const MONITORING_THRESHOLD: f64 = 0.9;

impl PredictRequest {
    /// Whether this maps another period or area than the project's (a monitoring prediction).
    #[must_use]
    pub fn is_monitoring(&self) -> bool {
        self.start.is_some() || self.end.is_some() || self.area.is_some()
    }
}

/// The acquisition a monitoring prediction runs first (`None` for a prediction of the project's own
/// period and area), checked: the period has as many months as the project's, the area is a valid
/// geometry within the limit, the catalogue passes the outbound-request policy.
async fn monitoring_acquisition(
    state: &AppState,
    project: &projects::Project,
    body: &PredictRequest,
) -> ApiResult<Option<groundwork_worker::steps::AcquireArgs>> {
    if !body.is_monitoring() {
        let extra = [
            ("stac", body.stac.is_some()),
            ("profile", body.profile.is_some()),
            ("max_cloud", body.max_cloud.is_some()),
            ("success_threshold", body.success_threshold.is_some()),
        ];
        if let Some((field, _)) = extra.iter().find(|(_, set)| *set) {
            return Err(ApiError::validation(vec![FieldError {
                field: (*field).into(),
                message: "only for a prediction of another period or area (with start and end, \
                          or area); the project's own imagery is already acquired"
                    .into(),
            }]));
        }
        return Ok(None);
    }
    let mut errors = Vec::new();
    let (start, end) = match (body.start, body.end) {
        (Some(s), Some(e)) => (s, e),
        (None, None) => (project.start, project.end),
        _ => {
            return Err(ApiError::validation(vec![FieldError {
                field: if body.start.is_none() { "start" } else { "end" }.into(),
                message: "give both start and end of the period".into(),
            }]));
        }
    };
    let months = super::projects::months_spanned(project.start, project.end);
    if end < start {
        errors.push(FieldError {
            field: "end".into(),
            message: format!("end {end} is before start {start}"),
        });
    } else if super::projects::months_spanned(start, end) != months {
        errors.push(FieldError {
            field: "end".into(),
            message: format!(
                "the model was trained on {months} monthly time steps ({} to {}); give a period of \
                 {months} months (for example the same months of another year), not {}",
                project.start,
                project.end,
                super::projects::months_spanned(start, end)
            ),
        });
    }
    let area = match &body.area {
        None => None,
        Some(v) => {
            let (v, max) = (v.clone(), state.max_aoi_km2);
            let checked = tokio::task::spawn_blocking(move || {
                let mut errors = Vec::new();
                let aoi = crate::geometry::aoi(&v, max, &mut errors);
                (aoi, errors)
            })
            .await
            .map_err(|e| ApiError::internal(&e))?;
            let (aoi, area_errors) = checked;
            errors.extend(area_errors.into_iter().map(|e| FieldError {
                field: "area".into(),
                message: e.message,
            }));
            aoi.map(|a| a.geometry)
        }
    };
    // The catalogue: as given, or the project's last acquisition's.
    let catalogue = super::imagery::catalogue_or_last(
        state,
        project.id,
        (body.stac.clone(), body.profile.clone(), body.max_cloud),
        &mut errors,
    )
    .await?;
    let threshold = body.success_threshold.unwrap_or(MONITORING_THRESHOLD);
    if !(0.0..=1.0).contains(&threshold) {
        errors.push(FieldError {
            field: "success_threshold".into(),
            message: "must be 0–1".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(Some(groundwork_worker::steps::AcquireArgs {
        stac: catalogue.stac,
        profile: catalogue.profile,
        max_cloud: catalogue.max_cloud,
        partition: [0, 1],
        success_threshold: threshold,
        period: Some(groundwork_worker::steps::Period { start, end, area }),
    }))
}

/// A trained model a prediction can use.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelChoice {
    /// The training run (what `POST …/predict` takes as `run_id`).
    pub run_id: Uuid,
    /// The validation metric (`macro_f1`, `miou`, `r2`, …).
    pub metric: Option<String>,
    /// The chosen candidate's validation score.
    pub val_metric: Option<f64>,
    /// Which candidate the training chose (fine-tuned head, a baseline, …).
    pub model: Option<String>,
    /// Label-set version it was trained on.
    pub label_set_version: Option<i64>,
    /// Encoder weights it started from (`random` or a released checkpoint).
    pub initialised_from: Option<String>,
    /// Whether this is the model a prediction uses by default: the best validation score (the newest
    /// of equals; the newest when no model has a score).
    pub best: bool,
}

/// Trained models considered for the default choice.
const CHOICES_CONSIDERED: i64 = 100;

fn choice_of(t: &models::TrainedRun) -> ModelChoice {
    let m = &t.output["metrics"];
    ModelChoice {
        run_id: t.run_id,
        metric: m["metric"].as_str().map(str::to_owned),
        val_metric: m["val_metric"].as_f64().filter(|v| v.is_finite()),
        model: m["chosen_description"].as_str().map(str::to_owned),
        label_set_version: t.output["label_set_version"].as_i64(),
        initialised_from: t.output["initialised_from"].as_str().map(str::to_owned),
        best: false,
    }
}

/// The index of the best choice: highest validation score, the first (newest) of equals; the first
/// when none has a score.
fn best_index(choices: &[ModelChoice]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in choices.iter().enumerate() {
        // Errors (regression's RMSE and MAE) are better low; scores better high.
        let lower_is_better = matches!(c.metric.as_deref(), Some("rmse" | "mae" | "loss"));
        if let Some(v) = c.val_metric
            && best.is_none_or(|(_, b)| if lower_is_better { v < b } else { v > b })
        {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
        .or_else(|| (!choices.is_empty()).then_some(0))
}

/// The project's trained models, newest first, the default one marked `best`.
pub async fn model_choices(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
) -> ApiResult<Vec<ModelChoice>> {
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let runs =
        models::trained_runs(&state.pool, actor.org_id, project_id, CHOICES_CONSIDERED).await?;
    let mut choices: Vec<ModelChoice> = runs.iter().map(choice_of).collect();
    if let Some(i) = best_index(&choices) {
        choices[i].best = true;
    }
    Ok(choices)
}

/// A run's training curves.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrainingCurve {
    /// The run.
    pub run_id: Uuid,
    /// One row per epoch of each `train` step, in order.
    pub epochs: Vec<TrainingEpoch>,
}

/// Starts a run of `train` then `evaluate` for the project. The steps go to the `gpu` queue when a GPU
/// worker is online, else to `cpu`. Send `Idempotency-Key` to make a retried request safe.
pub async fn start_training(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    idempotency_key: Option<&str>,
    body: TrainRequest,
) -> ApiResult<RunWithSteps> {
    actor.require(Role::Member)?;
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    refuse_stale(state, project_id).await?;
    let mut errors = Vec::new();
    let mut check = |ok: bool, field: &str, message: &str| {
        if !ok {
            errors.push(FieldError {
                field: field.into(),
                message: message.into(),
            });
        }
    };
    check(
        body.epochs.is_none_or(|e| (1..=500).contains(&e)),
        "epochs",
        "must be 1–500",
    );
    check(
        body.freeze_epochs
            .is_none_or(|f| f <= body.epochs.unwrap_or(500)),
        "freeze_epochs",
        "must not exceed epochs",
    );
    check(
        body.batch_size.is_none_or(|b| (1..=256).contains(&b)),
        "batch_size",
        "must be 1–256",
    );
    check(
        body.lr.is_none_or(|lr| lr > 0.0 && lr <= 1.0),
        "lr",
        "must be within (0, 1]",
    );
    let head = body.head.as_deref().map(str::parse::<HeadKind>);
    let head_ok = match &head {
        None => true,
        Some(Ok(h)) => project.task.heads().contains(h),
        Some(Err(_)) => false,
    };
    let takes = |t: Task| {
        t.heads()
            .iter()
            .map(|h| h.name())
            .collect::<Vec<_>>()
            .join(" or ")
    };
    check(
        head_ok,
        "head",
        &format!(
            "segmentation takes {}, classification {}, regression {}",
            takes(Task::Segmentation),
            takes(Task::Classification),
            takes(Task::Regression)
        ),
    );
    let head = head.and_then(Result::ok);
    check(
        body.label_set_version.is_none_or(|v| v >= 1),
        "label_set_version",
        "must be 1 or more",
    );
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    // A label-set version named in the request is checked by the step; otherwise the project must be
    // ready now.
    if body.label_set_version.is_none()
        && let Some(msg) = training_blocker(state, &project).await?
    {
        return Err(ApiError::new(ErrorCode::Conflict, msg));
    }
    let device = super::usage::device_now(state, actor.org_id).await?;
    let queue = device.name();
    let planned = TrainArgs {
        epochs: body.epochs,
        ..TrainArgs::default()
    }
    .planned_epochs();
    let estimate =
        super::usage::train_estimate(state, actor.org_id, &project, planned, device).await?;
    let request_approval = body.request_approval.unwrap_or(false);
    let held = super::usage::over_quota(&estimate, request_approval)?;
    let args = TrainArgs {
        label_set_version: body.label_set_version,
        epochs: body.epochs,
        freeze_epochs: body.freeze_epochs,
        batch_size: body.batch_size,
        lr: body.lr,
        head,
        ..TrainArgs::default()
    };
    let mut train = args.to_step("train", queue);
    // A retried attempt resumes from the last checkpoint, so retries are cheap.
    train.max_attempts = 5;
    train.needs = groundwork_worker::needs::of_project(
        &project,
        body.batch_size.unwrap_or(8),
        args.fine_tunes_encoder(),
    );
    let mut evaluate = EvaluateArgs {
        train_run_id: None,
        device: None,
    }
    .to_step("evaluate", queue);
    evaluate.depends_on = vec!["train".into()];
    evaluate.needs = groundwork_worker::needs::of_project(&project, 8, false);
    let run = super::usage::create_estimated_run(
        state,
        actor.org_id,
        project_id,
        &[train, evaluate],
        idempotency_key,
        &estimate,
        (held, request_approval),
    )
    .await?;
    Ok(run)
}

/// What a project still needs before it can be trained, in the words the project page shows next to
/// its disabled "Train a model" button (`None`: it can be trained). The API answers the same sentence
/// as a 409, so nobody meets "label set not found" or an empty training set deep in a step.
pub async fn training_blocker(
    state: &AppState,
    project: &groundwork_store::projects::Project,
) -> ApiResult<Option<String>> {
    let counts = groundwork_store::windows::counts(&state.pool, project.id).await?;
    if counts.acquired == 0 {
        return Ok(Some(
            "Acquire imagery first: training learns from the acquired windows.".into(),
        ));
    }
    if let Some(msg) = groundwork_store::windows::stale_refusal(&state.pool, project.id).await? {
        return Ok(Some(msg));
    }
    let summary = groundwork_store::labels::summary(&state.pool, project.id, None).await?;
    if summary.version.is_none() {
        return Ok(Some(if project.task == Task::Regression {
            "Import labels with values first.".into()
        } else {
            "Label the imagery first: at least two classes.".into()
        }));
    }
    if project.task != Task::Regression {
        let labelled = summary.classes.iter().filter(|c| c.labels > 0).count();
        if labelled < 2 {
            return Ok(Some(format!(
                "Label at least two classes: {labelled} {} labels so far.",
                if labelled == 1 {
                    "class has"
                } else {
                    "classes have"
                }
            )));
        }
    }
    if summary.split_version.is_none() {
        return Ok(Some(
            "Split the windows into training, validation and test first (on the labelling page)."
                .into(),
        ));
    }
    if summary.labelled_windows.train == 0 {
        return Ok(Some(
            "No labelled window is in the training split: label more windows or split again."
                .into(),
        ));
    }
    Ok(None)
}

/// What a project still needs before it can be mapped (`None`: it can).
pub async fn prediction_blocker(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
) -> ApiResult<Option<String>> {
    if let Some(msg) = groundwork_store::windows::stale_refusal(&state.pool, project_id).await? {
        return Ok(Some(msg));
    }
    match models::trained_run(&state.pool, actor.org_id, project_id, None).await {
        Ok(_) => Ok(None),
        Err(groundwork_store::Error::NotFound { .. }) => Ok(Some(
            "Train a model first: no training run has finished yet.".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// 409 when the project's imagery is of settings it no longer has (area, dates, modalities, window size).
async fn refuse_stale(state: &AppState, project_id: Uuid) -> ApiResult<()> {
    match groundwork_store::windows::stale_refusal(&state.pool, project_id).await? {
        Some(msg) => Err(ApiError::new(ErrorCode::Conflict, msg)),
        None => Ok(()),
    }
}

/// Starts a run that maps the project's acquired windows with a trained model: one `predict` step per
/// partition (fan-out), `combine` (the UTM COGs) and `publish` (web-mercator COGs, tiles, STAC Item).
/// The outputs record the model's lineage: training run, label-set version, weights hash, validation
/// and test metrics. Send `Idempotency-Key` to make a retried request safe.
pub async fn start_prediction(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    idempotency_key: Option<&str>,
    body: PredictRequest,
) -> ApiResult<RunWithSteps> {
    actor.require(Role::Member)?;
    let project = projects::get(&state.pool, actor.org_id, project_id).await?;
    let acquire = monitoring_acquisition(state, &project, &body).await?;
    if acquire.is_none() {
        refuse_stale(state, project_id).await?;
    }
    let mut errors = Vec::new();
    if body.block.is_some_and(|b| !(1..=64).contains(&b)) {
        errors.push(FieldError {
            field: "block".into(),
            message: "must be 1–64".into(),
        });
    }
    if body
        .overlap
        .is_some_and(|o| i64::try_from(o).map_or(true, |o| o >= i64::from(project.window_size)))
    {
        errors.push(FieldError {
            field: "overlap".into(),
            message: format!("must be below the window size ({} px)", project.window_size),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let (trained, why) = match body.run_id {
        Some(run_id) => (
            models::trained_run(&state.pool, actor.org_id, project_id, Some(run_id)).await?,
            "chosen when the prediction was started".to_string(),
        ),
        None => {
            let runs =
                models::trained_runs(&state.pool, actor.org_id, project_id, CHOICES_CONSIDERED)
                    .await?;
            let choices: Vec<ModelChoice> = runs.iter().map(choice_of).collect();
            let i = best_index(&choices).ok_or_else(|| {
                ApiError::validation(vec![FieldError {
                    field: "run_id".into(),
                    message: "the project has no trained model yet; train one first".into(),
                }])
            })?;
            let c = &choices[i];
            let why = match (c.val_metric, &c.metric) {
                (Some(v), metric) => format!(
                    "the best validation {} ({v:.3}) of the project's {} trained model{}",
                    metric.as_deref().unwrap_or("score"),
                    choices.len(),
                    if choices.len() == 1 { "" } else { "s" }
                ),
                (None, _) => "the newest trained model (no model has a validation score)".into(),
            };
            (runs[i].clone(), why)
        }
    };
    let out = &trained.output;
    // The report's numbers, without where the model's files are kept.
    let evaluation = models::run_evaluation(&state.pool, actor.org_id, trained.run_id)
        .await
        .ok()
        .map(|e| {
            let mut report = e.report;
            if let Some(m) = report.as_object_mut() {
                m.remove("model_key");
            }
            report
        });
    let (period_start, period_end, other_area) =
        match acquire.as_ref().and_then(|a| a.period.as_ref()) {
            Some(p) => (p.start, p.end, p.area.is_some()),
            None => (project.start, project.end, false),
        };
    let lineage = json!({
        "period": {"start": period_start, "end": period_end, "monitoring": acquire.is_some(),
                   "area": if other_area { "given" } else { "project" }},
        "training_run_id": trained.run_id,
        "label_set_version": out.get("label_set_version"),
        "checkpoint_sha256": out.get("weights_sha256"),
        "initialised_from": out.get("initialised_from"),
        "encoder_sha256": out.get("encoder_sha256"),
        "acquisition_runs": out.get("acquisition_runs"),
        "model_choice": why,
        "metrics": {"validation": out.get("metrics"), "test": evaluation},
    });
    let opts = groundwork_worker::steps::predict::PredictOptions {
        model: groundwork_worker::steps::predict::ModelSpec::Trained {
            run_id: trained.run_id,
        },
        block: body.block,
        overlap: body.overlap,
        lineage,
        acquire,
    };
    let plan = groundwork_worker::steps::plan_prediction(&state.pool, &project, &opts)
        .await
        .map_err(|e| {
            ApiError::validation(vec![FieldError {
                field: if opts.acquire.is_some() {
                    "area"
                } else {
                    "project"
                }
                .into(),
                message: format!("{e:#}"),
            }])
        })?;
    let steps = &plan.steps;
    // The predict steps' queue decides the device the estimate is for.
    let device = steps
        .iter()
        .find(|s| s.kind == groundwork_types::StepKind::Predict)
        .map_or(groundwork_types::DeviceKind::Cpu, |s| {
            groundwork_types::DeviceKind::of_queue(&s.queue)
        });
    // The windows the run maps: the project's acquired ones, or every window of the period's area.
    #[expect(clippy::cast_precision_loss, reason = "a window count")]
    let mapped = plan.windows as f64;
    let estimate =
        super::usage::predict_estimate_for(state, actor.org_id, &project, device, mapped).await?;
    let request_approval = body.request_approval.unwrap_or(false);
    let held = super::usage::over_quota(&estimate, request_approval)?;
    let run = super::usage::create_estimated_run(
        state,
        actor.org_id,
        project_id,
        steps,
        idempotency_key,
        &estimate,
        (held, request_approval),
    )
    .await?;
    actor
        .audit(
            state,
            "project.predict",
            "run",
            run.run.id,
            json!({"project_id": project_id, "training_run_id": trained.run_id,
                   "period": {"start": period_start, "end": period_end}, "other_area": other_area}),
        )
        .await;
    Ok(run)
}

/// Loss and metric per epoch of the run's `train` steps (rows appear as epochs finish).
pub async fn get_training(
    state: &AppState,
    actor: &Actor,
    run_id: Uuid,
) -> ApiResult<TrainingCurve> {
    let epochs = models::training_curve(&state.pool, actor.org_id, run_id).await?;
    Ok(TrainingCurve { run_id, epochs })
}

/// The latest evaluation report of a run's model.
pub async fn get_run_evaluation(
    state: &AppState,
    actor: &Actor,
    run_id: Uuid,
) -> ApiResult<Evaluation> {
    Ok(models::run_evaluation(&state.pool, actor.org_id, run_id).await?)
}

/// Evaluation reports of a project, newest first.
pub async fn list_evaluations(
    state: &AppState,
    actor: &Actor,
    project_id: Uuid,
    q: PageQuery,
) -> ApiResult<Page<Evaluation>> {
    projects::get(&state.pool, actor.org_id, project_id).await?;
    let limit = q.limit()?;
    let items = models::project_evaluations(
        &state.pool,
        actor.org_id,
        project_id,
        q.cursor()?,
        limit + 1,
    )
    .await?;
    Ok(Page::new(items, limit, |e| e.id))
}

#[cfg(test)]
mod tests {
    use super::{ModelChoice, best_index};
    use uuid::Uuid;

    fn choice(metric: &str, v: Option<f64>) -> ModelChoice {
        ModelChoice {
            run_id: Uuid::now_v7(),
            metric: Some(metric.into()),
            val_metric: v,
            model: None,
            label_set_version: None,
            initialised_from: None,
            best: false,
        }
    }

    #[test]
    fn the_best_model_is_the_highest_score_or_the_lowest_error() {
        let scores = [
            choice("macro_f1", Some(0.6)),
            choice("macro_f1", Some(0.9)),
            choice("macro_f1", None),
        ];
        assert_eq!(best_index(&scores), Some(1));
        let errors = [
            choice("rmse", Some(3.0)),
            choice("rmse", Some(1.5)),
            choice("rmse", Some(2.0)),
        ];
        assert_eq!(best_index(&errors), Some(1), "RMSE is better low");
        // Equal scores: the first listed (the newest) wins; no score at all: the newest.
        let equal = [choice("macro_f1", Some(0.7)), choice("macro_f1", Some(0.7))];
        assert_eq!(best_index(&equal), Some(0));
        assert_eq!(best_index(&[choice("macro_f1", None)]), Some(0));
        assert_eq!(best_index(&[]), None);
    }
}
