//! The worker API: what a remote worker (`groundwork worker --server https://… --token gwk_…`) does
//! instead of connecting to the database and the object store.
//!
//! Every request carries the worker token (`Authorization: Bearer gwk_…`); after registration also
//! the worker's id (`X-Groundwork-Worker`), which must be a worker registered with that token. The
//! token binds the worker to its organisation's private pool:
//!
//! - `POST /api/v1/worker/register`, `…/heartbeat`, `…/deregister`: the registry;
//! - `POST /api/v1/worker/claim`: a long poll (up to 30 s) for the next ready step of the
//!   organisation on the worker's queues;
//! - `POST /api/v1/worker/steps/{step}/claims/{claim}/{heartbeat|complete|fail|cancelled|data}`:
//!   the lease functions of the store, and the step body's data questions
//!   ([`groundwork_worker::data`]), only for a claim this worker holds;
//! - `GET`/`HEAD`/`PUT`/`DELETE /api/v1/worker/objects/{key}`: objects under the organisation's
//!   prefix (`orgs/{org}/…`), and reads of the shared pretrained checkpoints (`models/…`). Reads
//!   honour `Range`; writes stream into the store.
//!
//! These routes are outside the request timeout and concurrency limit of the user-facing API (a
//! claim waits, an upload can be large); they have their own limits.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorCode};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use groundwork_store::jobs::{self, Artifact, Claimed};
use groundwork_store::workers::{self, Registration, RemoteWorker};
use groundwork_worker::StepError;
use groundwork_worker::data::{self, DataRequest, Scope};
use groundwork_worker::remote::{Registered, WORKER_HEADER};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// The longest claim poll.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a claim poll looks for a ready step: soon after it starts, then less often (an idle
/// slot costs a few queries per poll, not one every quarter second).
const POLL: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(2));
/// The lease a remote worker may ask for.
const LEASE_RANGE: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(600));
/// JSON bodies (outcomes of many windows, suggestions, epoch state).
const MAX_JSON: usize = 64 << 20;
/// One object written by a worker.
const MAX_OBJECT: u64 = 64 << 30;
/// Uploads up to this size are written with one `put`; larger ones as a multipart upload.
const SINGLE_PUT: usize = 8 << 20;

/// The path prefix of the worker API (outside the user-facing request timeout and slots).
pub const PREFIX: &str = "/api/v1/worker/";

/// The worker API's routes, each with its OpenAPI path.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(heartbeat))
        .routes(routes!(deregister))
        .routes(routes!(claim))
        .routes(routes!(step_action))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON))
        .routes(routes!(get_object, put_object, delete_object))
}

fn refused_token() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "the worker token was refused: it is unknown, revoked, or not the one this worker registered with",
    )
}

/// The token of `Authorization: Bearer gwk_…`.
fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(super::auth::bearer_token)
        .filter(|t| t.starts_with(groundwork_store::accounts::WORKER_TOKEN_PREFIX))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "use `Authorization: Bearer gwk_…` with a worker token",
            )
        })
}

/// The registered worker that sent the request.
async fn caller(state: &AppState, headers: &HeaderMap) -> ApiResult<RemoteWorker> {
    let token = bearer(headers)?;
    let id = headers
        .get(WORKER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                format!("name the registered worker in `{WORKER_HEADER}`"),
            )
        })?;
    workers::authenticate_remote(&state.pool, id, token)
        .await?
        .ok_or_else(refused_token)
}

fn lease_of(ms: Option<u64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(20_000)).clamp(LEASE_RANGE.0, LEASE_RANGE.1)
}

/// Registers a remote worker with its worker token (no `X-Groundwork-Worker` yet): the body is the
/// worker's name, pool, queues, concurrency, capabilities and version; the answer its id, its
/// organisation and the queues it reads.
#[utoipa::path(post, path = "/api/v1/worker/register", tag = "worker-api", request_body = Object,
    responses((status = 200, body = Object), (status = 401, body = super::error::ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Json(reg): axum::Json<Registration>,
) -> ApiResult<axum::Json<Registered>> {
    let token = bearer(&headers)?;
    if reg.queues.is_empty() || reg.concurrency < 1 || reg.name.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "a worker needs a name, at least one queue and a concurrency of at least 1",
        ));
    }
    let worker_id = workers::register_with_token(&state.pool, &reg, Some(token)).await?;
    let me = workers::authenticate_remote(&state.pool, worker_id, token)
        .await?
        .ok_or_else(refused_token)?;
    let queues = workers::message_queues(&state.pool, worker_id).await?;
    tracing::info!(%worker_id, org = %me.org_id, name = %reg.name, "remote worker registered");
    Ok(axum::Json(Registered {
        worker_id,
        org_id: me.org_id,
        queues,
    }))
}

/// The registry heartbeat: `{"state"}`, the admin state the worker follows.
#[utoipa::path(post, path = "/api/v1/worker/heartbeat", tag = "worker-api",
    responses((status = 200, body = Object), (status = 401, body = super::error::ErrorBody)))]
async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    let me = caller(&state, &headers).await?;
    let admin_state = workers::heartbeat(&state.pool, me.id).await?;
    Ok(axum::Json(json!({"state": admin_state})))
}

/// Marks the worker stopped.
#[utoipa::path(post, path = "/api/v1/worker/deregister", tag = "worker-api",
    responses((status = 204), (status = 401, body = super::error::ErrorBody)))]
async fn deregister(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let me = caller(&state, &headers).await?;
    workers::deregister(&state.pool, me.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ClaimBody {
    wait_ms: Option<u64>,
    lease_ms: Option<u64>,
}

/// Long-polls for the next ready step (`{"wait_ms", "lease_ms"}`, at most 30 s): `200` with the
/// claim, or `204` when none came within the wait.
#[utoipa::path(post, path = "/api/v1/worker/claim", tag = "worker-api", request_body = Object,
    responses((status = 200, body = Object), (status = 204), (status = 401, body = super::error::ErrorBody)))]
async fn claim(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<ClaimBody>,
) -> ApiResult<Response> {
    let me = caller(&state, &headers).await?;
    if me.revoked {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // The worker's admin state is followed here too: a drained or paused worker gets nothing.
    if workers::heartbeat(&state.pool, me.id).await? != "active" {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let lease = lease_of(body.lease_ms);
    let until = tokio::time::Instant::now()
        + Duration::from_millis(body.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let mut pause = POLL.0;
    loop {
        if let Some(c) = jobs::claim_next(&state.pool, me.id, lease).await? {
            return Ok(axum::Json(c).into_response());
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::time::sleep(pause.min(until - now)).await;
        pause = (pause * 2).min(POLL.1);
    }
}

#[derive(Debug, Deserialize)]
struct BeatBody {
    lease_ms: Option<u64>,
    #[serde(default)]
    progress: f32,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct CompleteBody {
    #[serde(default)]
    output: Value,
    #[serde(default)]
    artifacts: Vec<Artifact>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FailBody {
    error: String,
    #[serde(default)]
    retryable: bool,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the body: {e}")))
}

/// The lease functions and the data questions of a claim this worker holds: `heartbeat`
/// (`{"lease_ms", "progress", "message"}` → `{"beat"}`), `complete` (`{"output", "artifacts",
/// "message"}` → `{"completion"}`), `fail` (`{"error", "retryable"}` → `{"outcome"}`), `cancelled`
/// (→ `{"cancelled"}`) and `data` (a data request, tagged by `op`, → its answer; 409 once the claim
/// lost the lease, 403 for a request outside the step's project).
#[utoipa::path(post, path = "/api/v1/worker/steps/{step}/claims/{claim}/{action}", tag = "worker-api",
    params(("step" = Uuid, Path, description = "the step"), ("claim" = Uuid, Path, description = "the claim"),
           ("action" = String, Path, description = "heartbeat, complete, fail, cancelled or data")),
    request_body = Object,
    responses((status = 200, body = Object), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
async fn step_action(
    State(state): State<AppState>,
    Path((step_id, claim_id, action)): Path<(Uuid, Uuid, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let me = caller(&state, &headers).await?;
    let claimed: Claimed = jobs::claimed_by(&state.pool, step_id, claim_id, me.id)
        .await?
        .ok_or_else(|| ApiError::not_found("claim"))?;
    if claimed.org_id != me.org_id {
        return Err(ApiError::not_found("claim"));
    }
    let pool = &state.pool;
    let answer = match action.as_str() {
        "heartbeat" => {
            let b: BeatBody = parse(&body)?;
            let message: String = b.message.chars().take(2000).collect();
            let beat = jobs::heartbeat(
                pool,
                &claimed,
                lease_of(b.lease_ms),
                b.progress.clamp(0.0, 1.0),
                &message,
            )
            .await?;
            json!({"beat": beat})
        }
        "complete" => {
            let b: CompleteBody = parse(&body)?;
            let completion = jobs::complete_with_message(
                pool,
                &claimed,
                &b.output,
                &b.artifacts,
                b.message.as_deref(),
            )
            .await?;
            json!({"completion": completion})
        }
        "fail" => {
            let b: FailBody = parse(&body)?;
            let error: String = b.error.chars().take(8000).collect();
            let outcome = jobs::fail(pool, &claimed, &error, b.retryable).await?;
            json!({"outcome": outcome})
        }
        "cancelled" => json!({"cancelled": jobs::mark_cancelled(pool, &claimed).await?}),
        "data" => {
            let req: DataRequest = parse(&body)?;
            // Only the claim that holds the lease may read or write through it.
            if !jobs::holds_lease(pool, step_id, claim_id).await? {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "this claim no longer holds the step's lease",
                ));
            }
            let write = req.is_write();
            return match data::execute(pool, state.objects.as_deref(), &Scope::of(&claimed), req)
                .await
            {
                Ok(v) => Ok(axum::Json(v).into_response()),
                Err(StepError::Permanent(e)) => {
                    Err(ApiError::new(ErrorCode::Forbidden, format!("{e:#}")))
                }
                Err(e) => {
                    tracing::warn!(step = %step_id, error = %e, write, "a remote worker's data request failed");
                    Err(ApiError::new(
                        ErrorCode::Unavailable,
                        "the request could not be answered now; try again",
                    ))
                }
            };
        }
        _ => return Err(ApiError::not_found("worker action")),
    };
    Ok(axum::Json(answer).into_response())
}

/// Whether the worker of organisation `org_id` may touch `key`, and whether only to read it.
fn key_access(org_id: Uuid, key: &str) -> Option<bool> {
    if key.is_empty()
        || key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return None;
    }
    if key.starts_with(&format!("orgs/{org_id}/")) {
        Some(false)
    } else if key.starts_with(&format!(
        "{}/",
        groundwork_types::keys::PretrainedKeys::ROOT
    )) {
        Some(true)
    } else {
        None
    }
}

async fn object_caller(
    state: &AppState,
    headers: &HeaderMap,
    key: &str,
    write: bool,
) -> ApiResult<Arc<dyn ObjectStore>> {
    let me = caller(state, headers).await?;
    match key_access(me.org_id, key) {
        Some(read_only) if !(write && read_only) => {}
        // The same answer whether the key exists elsewhere or not.
        _ => return Err(ApiError::not_found("object")),
    }
    state.objects.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotReady,
            "this server has no object store configured",
        )
    })
}

fn store_error(e: &object_store::Error, key: &str) -> ApiError {
    match e {
        object_store::Error::NotFound { .. } => ApiError::not_found("object"),
        e => {
            tracing::warn!(key, error = %e, "object store request of a remote worker failed");
            ApiError::new(
                ErrorCode::Unavailable,
                "the object store did not answer; try again",
            )
        }
    }
}

/// Reads an object (`HEAD` too), honouring `Range`.
#[utoipa::path(get, path = "/api/v1/worker/objects/{*key}", tag = "worker-api",
    params(("key" = String, Path, description = "the object key, slashes included")),
    responses((status = 200), (status = 206), (status = 404, body = super::error::ErrorBody)))]
async fn get_object(
    State(state): State<AppState>,
    Path(key): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let store = object_caller(&state, &headers, &key, false).await?;
    let path = ObjectPath::from(key.as_str());
    let meta = store.head(&path).await.map_err(|e| store_error(&e, &key))?;
    let len = meta.size;
    let mut out = HeaderMap::new();
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(etag) = meta
        .e_tag
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        out.insert(header::ETAG, etag);
    }
    if let Ok(v) = HeaderValue::from_str(
        &meta
            .last_modified
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string(),
    ) {
        out.insert(header::LAST_MODIFIED, v);
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match super::ranges::wanted(range, len) {
        super::ranges::Wanted::Whole => (StatusCode::OK, 0, len),
        super::ranges::Wanted::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e + 1),
        super::ranges::Wanted::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                out.insert(header::CONTENT_RANGE, v);
            }
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out, Body::empty()).into_response());
        }
    };
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        out.insert(header::CONTENT_RANGE, v);
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if method == Method::HEAD || start == end {
        return Ok((status, out, Body::empty()).into_response());
    }
    let got = store
        .get_opts(
            &path,
            GetOptions {
                range: Some(GetRange::Bounded(start..end)),
                ..GetOptions::default()
            },
        )
        .await
        .map_err(|e| store_error(&e, &key))?;
    let stream = got.into_stream().map(|r| r.map_err(std::io::Error::other));
    Ok((status, out, Body::from_stream(stream)).into_response())
}

/// Writes an object from the streamed body.
#[utoipa::path(put, path = "/api/v1/worker/objects/{*key}", tag = "worker-api",
    params(("key" = String, Path, description = "the object key, slashes included")),
    responses((status = 201), (status = 404, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody)))]
async fn put_object(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let store = object_caller(&state, &headers, &key, true).await?;
    let path = ObjectPath::from(key.as_str());
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("an object may be at most {MAX_OBJECT} bytes"),
        )
    };
    let broken = |e: &dyn std::fmt::Display| {
        ApiError::new(ErrorCode::InvalidBody, format!("the upload broke off: {e}"))
    };
    let mut stream = body.into_data_stream();
    let mut head: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    // Small objects in one put; from SINGLE_PUT on, a multipart upload (bounded memory).
    while head.len() <= SINGLE_PUT {
        match stream.next().await {
            Some(Ok(chunk)) => {
                total += chunk.len() as u64;
                head.extend_from_slice(&chunk);
            }
            Some(Err(e)) => return Err(broken(&e)),
            None => {
                store
                    .put(&path, PutPayload::from(head))
                    .await
                    .map_err(|e| store_error(&e, &key))?;
                return Ok(StatusCode::CREATED);
            }
        }
    }
    let upload = store
        .put_multipart(&path)
        .await
        .map_err(|e| store_error(&e, &key))?;
    let mut writer = WriteMultipart::new(upload);
    writer.write(&head);
    drop(head);
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(broken(&e));
            }
        };
        total += chunk.len() as u64;
        if total > MAX_OBJECT {
            let _ = writer.abort().await;
            return Err(too_large());
        }
        writer
            .wait_for_capacity(4)
            .await
            .map_err(|e| store_error(&e, &key))?;
        writer.write(&chunk);
    }
    writer.finish().await.map_err(|e| store_error(&e, &key))?;
    Ok(StatusCode::CREATED)
}

/// Deletes an object.
#[utoipa::path(delete, path = "/api/v1/worker/objects/{*key}", tag = "worker-api",
    params(("key" = String, Path, description = "the object key, slashes included")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
async fn delete_object(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let store = object_caller(&state, &headers, &key, true).await?;
    store
        .delete(&ObjectPath::from(key.as_str()))
        .await
        .map_err(|e| store_error(&e, &key))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_reaches_its_organisation_s_keys_and_reads_the_shared_checkpoints() {
        let org = Uuid::now_v7();
        let other = Uuid::now_v7();
        assert_eq!(
            key_access(org, &format!("orgs/{org}/projects/p/a.bin")),
            Some(false)
        );
        assert_eq!(
            key_access(org, "models/OlmoEarth-v1-Nano/weights.pth"),
            Some(true)
        );
        assert_eq!(
            key_access(org, &format!("orgs/{other}/projects/p/a.bin")),
            None
        );
        assert_eq!(key_access(org, &format!("orgs/{org}/../{other}/x")), None);
        assert_eq!(key_access(org, &format!("orgs/{org}//x")), None);
        assert_eq!(key_access(org, "models"), None);
        assert_eq!(key_access(org, "other/x"), None);
    }
}
