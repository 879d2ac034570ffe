//! Accuracy assessment and area estimation of class maps (Olofsson et al. 2014): draw a stratified
//! sample (`POST /api/v1/outputs/{id}/assessments`), label it blind
//! (`GET …/assessments/{id}/samples`, `PUT …/samples/{n}`), and read the report with confidence
//! intervals (`GET …/assessments/{id}/report`, `…/report.csv`).
//!
//! The work is in [`crate::service::assessments`].

use super::AppState;
use super::auth::Actor;
use super::error::ApiResult;
use super::extract::{Json, Path, Query};
use crate::service::assessments as service;
pub use crate::service::assessments::{
    AssessmentView, CreateAssessment, ReferenceLabel, Report, SampleQuery, SampleView,
};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Draws a stratified random sample of a class map (the map classes are the strata) for an accuracy
/// assessment: the size follows from a target standard error of overall accuracy, with a minimum per
/// class.
#[utoipa::path(post, path = "/api/v1/outputs/{id}/assessments", request_body = CreateAssessment, tag = "assessments",
    responses((status = 201, body = AssessmentView), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create_assessment(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(body): Json<CreateAssessment>,
) -> ApiResult<(StatusCode, axum::Json<AssessmentView>)> {
    let out = service::create(&state, &actor, id, body).await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// The assessments of a class map, newest first.
#[utoipa::path(get, path = "/api/v1/outputs/{id}/assessments", tag = "assessments",
    responses((status = 200, body = Vec<AssessmentView>), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_assessments(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Vec<AssessmentView>>> {
    Ok(axum::Json(service::list(&state, &actor, id).await?))
}

/// An assessment: its design, strata and labelling progress.
#[utoipa::path(get, path = "/api/v1/assessments/{id}", tag = "assessments",
    responses((status = 200, body = AssessmentView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_assessment(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<AssessmentView>> {
    Ok(axum::Json(service::get(&state, &actor, id).await?))
}

/// The sample units to label, in random order; without their map class unless `blind=false`.
#[utoipa::path(get, path = "/api/v1/assessments/{id}/samples", params(SampleQuery), tag = "assessments",
    responses((status = 200, body = Vec<SampleView>), (status = 404, body = super::error::ErrorBody)))]
pub async fn list_samples(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Query(q): Query<SampleQuery>,
) -> ApiResult<axum::Json<Vec<SampleView>>> {
    Ok(axum::Json(
        service::samples(&state, &actor, id, q.blind.unwrap_or(true)).await?,
    ))
}

/// Gives one unit its reference class (or marks it unsure). Reviewers with the viewer role may label.
#[utoipa::path(put, path = "/api/v1/assessments/{id}/samples/{sample}", request_body = ReferenceLabel, tag = "assessments",
    params(("id" = Uuid, Path, description = "assessment"), ("sample" = i32, Path, description = "unit number")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn label_sample(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, sample)): Path<(Uuid, i32)>,
    Json(body): Json<ReferenceLabel>,
) -> ApiResult<StatusCode> {
    service::label(&state, &actor, id, sample, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The estimates from the units labelled so far: the error matrix in area proportions, overall,
/// user's and producer's accuracies and error-adjusted areas (ha), each with a 95 % confidence
/// interval, next to the mapped areas.
#[utoipa::path(get, path = "/api/v1/assessments/{id}/report", tag = "assessments",
    responses((status = 200, body = Report), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_report(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Report>> {
    Ok(axum::Json(service::report(&state, &actor, id).await?))
}

/// The report as CSV, one row per class and one for the overall accuracy.
#[utoipa::path(get, path = "/api/v1/assessments/{id}/report.csv", tag = "assessments",
    responses((status = 200, content_type = "text/csv"), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_report_csv(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    let csv = service::report_csv(&state, &actor, id).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"assessment-{id}.csv\""))
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        csv,
    )
        .into_response())
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_assessment, list_assessments))
        .routes(routes!(get_assessment))
        .routes(routes!(list_samples))
        .routes(routes!(label_sample))
        .routes(routes!(get_report))
        .routes(routes!(get_report_csv))
        // Sample locations and reports are behind authentication: no shared cache keeps them.
        .route_layer(axum::middleware::from_fn(crate::hygiene::private_cache))
}
