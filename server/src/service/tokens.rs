//! API tokens, worker tokens and the audit log of the current organisation.

use crate::api::accounts::Items;
use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::api::{AppState, Page, PageQuery};
use groundwork_store::accounts::{self, ApiToken, Scope, WorkerToken};
use groundwork_store::audit;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

fn name_of(name: Option<String>, default: &str) -> ApiResult<String> {
    let name = name.map_or_else(|| default.to_owned(), |n| n.trim().to_owned());
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::validation(vec![FieldError {
            field: "name".into(),
            message: "a name must have 1–100 characters".into(),
        }]));
    }
    Ok(name)
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Label (default `api`).
    #[serde(default)]
    pub name: Option<String>,
    /// `read` (safe methods only) or `write`.
    pub scope: Scope,
    /// Lifetime in days, 1–3650 (default: until revoked).
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

/// A new API token; the secret is shown only here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewToken {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// The stored token.
    pub api_token: ApiToken,
}

/// Body of `POST /api/v1/worker-tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkerToken {
    /// Label (default `worker`).
    #[serde(default)]
    pub name: Option<String>,
}

/// A new worker token; the secret is shown only here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewWorkerToken {
    /// Pass as `groundwork worker --token` or `GROUNDWORK_WORKER_TOKEN`.
    pub token: String,
    /// The stored token.
    pub worker_token: WorkerToken,
}

/// Creates an API token for the caller in the current organisation. The token never has more rights
/// than its user: the user's role there applies, and `read` limits it to safe methods.
pub async fn create_token(
    state: &AppState,
    actor: &Actor,
    body: CreateToken,
) -> ApiResult<NewToken> {
    actor.require(Role::Viewer)?;
    let name = name_of(body.name, "api")?;
    let expires_at = match body.expires_in_days {
        None => None,
        Some(d) if (1..=3650).contains(&d) => Some(chrono::Utc::now() + chrono::Duration::days(d)),
        Some(_) => {
            return Err(ApiError::validation(vec![FieldError {
                field: "expires_in_days".into(),
                message: "must be 1–3650".into(),
            }]));
        }
    };
    let user_id = actor
        .user_id
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "no user acts"))?;
    let (token, api_token) = accounts::create_api_token(
        &state.pool,
        &actor.who(),
        user_id,
        actor.org_id,
        &name,
        body.scope,
        expires_at,
    )
    .await?;
    Ok(NewToken { token, api_token })
}

/// API tokens in the current organisation: the caller's own, or everyone's for admins.
pub async fn list_tokens(state: &AppState, actor: &Actor) -> ApiResult<Items<ApiToken>> {
    let only = if actor.role >= Role::Admin {
        None
    } else {
        actor.user_id
    };
    Ok(Items {
        items: accounts::api_tokens(&state.pool, actor.org_id, only).await?,
    })
}

/// Revokes an API token: the caller's own, or anyone's in the organisation for admins.
pub async fn revoke_token(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<()> {
    let only = if actor.role >= Role::Admin {
        None
    } else {
        actor.user_id
    };
    accounts::revoke_api_token(&state.pool, &actor.who(), actor.org_id, id, only).await?;
    Ok(())
}

/// Creates a worker token: workers that present it join the current organisation (admins). Once any
/// worker token exists, workers without one are refused.
pub async fn create_worker_token(
    state: &AppState,
    actor: &Actor,
    body: CreateWorkerToken,
) -> ApiResult<NewWorkerToken> {
    actor.require(Role::Admin)?;
    let name = name_of(body.name, "worker")?;
    let (token, worker_token) =
        accounts::create_worker_token(&state.pool, &actor.who(), actor.org_id, &name).await?;
    Ok(NewWorkerToken {
        token,
        worker_token,
    })
}

/// Worker tokens of the current organisation (admins).
pub async fn list_worker_tokens(state: &AppState, actor: &Actor) -> ApiResult<Items<WorkerToken>> {
    actor.require(Role::Admin)?;
    Ok(Items {
        items: accounts::worker_tokens(&state.pool, actor.org_id).await?,
    })
}

/// Revokes a worker token (admins): no new registrations with it; its workers drain.
pub async fn revoke_worker_token(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<()> {
    actor.require(Role::Admin)?;
    accounts::revoke_worker_token(&state.pool, &actor.who(), actor.org_id, id).await?;
    Ok(())
}

/// The current organisation's audit log, newest first (admins).
pub async fn list_audit(
    state: &AppState,
    actor: &Actor,
    q: PageQuery,
) -> ApiResult<Page<audit::Record>> {
    actor.require(Role::Admin)?;
    let limit = q.limit()?;
    let items = audit::list(&state.pool, actor.org_id, q.cursor()?, limit + 1).await?;
    Ok(Page::new(items, limit, |r| r.id))
}
