//! Trained models: start training (`POST /api/v1/projects/{id}/train`), training curves
//! (`GET /api/v1/runs/{id}/training`) and evaluation reports (`GET /api/v1/runs/{id}/evaluation`,
//! `GET /api/v1/projects/{id}/evaluations`) and prediction with a trained model
//! (`POST /api/v1/projects/{id}/predict`: predict, combine and publish).

use super::auth::Actor;
use super::error::ApiResult;
use super::extract::{Json, Path, Query};
use super::{AppState, Page, PageQuery};
use crate::service::models as service;
pub use crate::service::models::{PredictRequest, TrainRequest, TrainingCurve};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use groundwork_store::jobs::RunWithSteps;
use groundwork_store::models::Evaluation;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Starts a run of `train` then `evaluate` for the project. The steps go to the `gpu` queue when a GPU
/// worker is online, else to `cpu`. Send `Idempotency-Key` to make a retried request safe.
#[utoipa::path(post, path = "/api/v1/projects/{id}/train", request_body = TrainRequest, tag = "models",
    responses((status = 201, body = RunWithSteps), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn start_training(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<TrainRequest>,
) -> ApiResult<(StatusCode, axum::Json<RunWithSteps>)> {
    let out = service::start_training(
        &state,
        &actor,
        project_id,
        super::idempotency_key(&headers),
        body,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// Starts a run that maps the project's acquired windows with a trained model: one `predict` step per
/// partition (fan-out), `combine` (the UTM COGs) and `publish` (web-mercator COGs, tiles, STAC Item).
/// The outputs record the model's lineage: training run, label-set version, weights hash, validation
/// and test metrics. Send `Idempotency-Key` to make a retried request safe.
#[utoipa::path(post, path = "/api/v1/projects/{id}/predict", request_body = PredictRequest, tag = "models",
    responses((status = 201, body = RunWithSteps), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn start_prediction(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<PredictRequest>,
) -> ApiResult<(StatusCode, axum::Json<RunWithSteps>)> {
    let out = service::start_prediction(
        &state,
        &actor,
        project_id,
        super::idempotency_key(&headers),
        body,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// What training or mapping the project would cost now, in device-hours (and money, where the
/// installation set a price), and whether it fits what is left of the organisation's monthly quota.
/// `POST …/train` and `POST …/predict` make the same estimate and keep it on the run.
#[utoipa::path(post, path = "/api/v1/projects/{id}/estimate", request_body = crate::service::usage::EstimateRequest, tag = "models",
    responses((status = 200, body = crate::service::usage::Estimate), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn estimate(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Json(body): Json<crate::service::usage::EstimateRequest>,
) -> ApiResult<axum::Json<crate::service::usage::Estimate>> {
    Ok(axum::Json(
        crate::service::usage::estimate(&state, &actor, project_id, body).await?,
    ))
}

/// Loss and metric per epoch of the run's `train` steps (rows appear as epochs finish).
#[utoipa::path(get, path = "/api/v1/runs/{id}/training", tag = "models",
    responses((status = 200, body = TrainingCurve), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_training(
    State(state): State<AppState>,
    actor: Actor,
    Path(run_id): Path<Uuid>,
) -> ApiResult<axum::Json<TrainingCurve>> {
    Ok(axum::Json(
        service::get_training(&state, &actor, run_id).await?,
    ))
}

/// The latest evaluation report of a run's model.
#[utoipa::path(get, path = "/api/v1/runs/{id}/evaluation", tag = "models",
    responses((status = 200, body = Evaluation), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_run_evaluation(
    State(state): State<AppState>,
    actor: Actor,
    Path(run_id): Path<Uuid>,
) -> ApiResult<axum::Json<Evaluation>> {
    Ok(axum::Json(
        service::get_run_evaluation(&state, &actor, run_id).await?,
    ))
}

/// Evaluation reports of a project, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{id}/evaluations", params(PageQuery), tag = "models",
    responses((status = 200, body = Page<Evaluation>), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_evaluations(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Evaluation>>> {
    Ok(axum::Json(
        service::list_evaluations(&state, &actor, project_id, q).await?,
    ))
}

/// The project's trained models, newest first; the one a prediction uses by default (the best
/// validation score) is marked `best`.
#[utoipa::path(get, path = "/api/v1/projects/{id}/models", tag = "models",
    responses((status = 200, body = Vec<service::ModelChoice>), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_models(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
) -> ApiResult<axum::Json<Vec<service::ModelChoice>>> {
    Ok(axum::Json(
        service::model_choices(&state, &actor, project_id).await?,
    ))
}

/// The routes of this resource, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_training))
        .routes(routes!(start_prediction))
        .routes(routes!(estimate))
        .routes(routes!(list_evaluations))
        .routes(routes!(list_models))
        .routes(routes!(get_training))
        .routes(routes!(get_run_evaluation))
}
