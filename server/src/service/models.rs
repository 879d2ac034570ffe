//! Trained models: starting training (a `train` step and an `evaluate` step), training curves,
//! evaluation reports, and prediction with a trained model (`predict`, `combine` and `publish` steps).

use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::api::{AppState, Page, PageQuery};
use groundwork_store::jobs::{self, RunWithSteps};
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
    let held = super::usage::over_quota(&estimate, body.request_approval.unwrap_or(false))?;
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
    let run = jobs::create_run_with(
        &state.pool,
        actor.org_id,
        project_id,
        &[train, evaluate],
        idempotency_key,
        &jobs::RunExtras {
            estimate: Some(json!(estimate)),
            awaiting_approval: held,
        },
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
    refuse_stale(state, project_id).await?;
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
    let lineage = json!({
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
    };
    let steps = groundwork_worker::steps::plan_prediction(&state.pool, &project, &opts)
        .await
        .map_err(|e| {
            ApiError::validation(vec![FieldError {
                field: "project".into(),
                message: format!("{e:#}"),
            }])
        })?;
    // The predict steps' queue decides the device the estimate is for.
    let device = steps
        .iter()
        .find(|s| s.kind == groundwork_types::StepKind::Predict)
        .map_or(groundwork_types::DeviceKind::Cpu, |s| {
            groundwork_types::DeviceKind::of_queue(&s.queue)
        });
    let estimate = super::usage::predict_estimate(state, actor.org_id, &project, device).await?;
    let held = super::usage::over_quota(&estimate, body.request_approval.unwrap_or(false))?;
    let run = jobs::create_run_with(
        &state.pool,
        actor.org_id,
        project_id,
        &steps,
        idempotency_key,
        &jobs::RunExtras {
            estimate: Some(json!(estimate)),
            awaiting_approval: held,
        },
    )
    .await?;
    actor
        .audit(
            state,
            "project.predict",
            "run",
            run.run.id,
            json!({"project_id": project_id, "training_run_id": trained.run_id}),
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
