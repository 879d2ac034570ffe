//! Label suggestions (active learning): `POST /api/v1/projects/{id}/suggestions` starts a `suggest`
//! step, `GET` reads the latest points to label next, `PATCH …/suggestions/{run}/{rank}` records what
//! the user made of one.

use super::AppState;
use super::auth::Actor;
use super::error::ApiResult;
use super::extract::{Json, Path};
use crate::service::suggestions as service;
pub use crate::service::suggestions::{SuggestRequest, SuggestionAnswer, Suggestions};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use groundwork_store::jobs::RunWithSteps;
use groundwork_store::suggestions::Suggestion;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Starts a run of one `suggest` step: the frozen encoder embeds the acquired windows and proposes the
/// points to label next (diverse ones before two classes are labelled, then the ones the
/// frozen-embedding baseline is least sure of, kept apart in embedding space and on the ground).
/// 409 without acquired imagery. Send `Idempotency-Key` to make a retried request safe.
#[utoipa::path(post, path = "/api/v1/projects/{id}/suggestions", request_body = SuggestRequest, tag = "labels",
    responses((status = 201, body = RunWithSteps), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn start_suggestions(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<SuggestRequest>,
) -> ApiResult<(StatusCode, axum::Json<RunWithSteps>)> {
    let run = service::start(
        &state,
        &actor,
        project_id,
        super::idempotency_key(&headers),
        body,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(run)))
}

/// The latest suggestions in rank order (`latest` is `null` before the first run has finished) and
/// the suggestion run still open, if any.
#[utoipa::path(get, path = "/api/v1/projects/{id}/suggestions", tag = "labels",
    responses((status = 200, body = Suggestions), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_suggestions(
    State(state): State<AppState>,
    actor: Actor,
    Path(project_id): Path<Uuid>,
) -> ApiResult<axum::Json<Suggestions>> {
    Ok(axum::Json(service::get(&state, &actor, project_id).await?))
}

/// Records what the user made of a suggestion: `labelled`, `skipped`, `unsure`, or `open` again.
#[utoipa::path(patch, path = "/api/v1/projects/{id}/suggestions/{run}/{rank}", request_body = SuggestionAnswer, tag = "labels",
    responses((status = 200, body = Suggestion), (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn answer_suggestion(
    State(state): State<AppState>,
    actor: Actor,
    Path((project_id, run_id, rank)): Path<(Uuid, Uuid, i32)>,
    Json(body): Json<SuggestionAnswer>,
) -> ApiResult<axum::Json<Suggestion>> {
    Ok(axum::Json(
        service::answer(&state, &actor, (project_id, run_id, rank), body).await?,
    ))
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_suggestions, get_suggestions))
        .routes(routes!(answer_suggestion))
        .route_layer(axum::middleware::from_fn(crate::hygiene::private_cache))
}
