//! API tokens (a user's, in one organisation, read or write) and worker tokens (an organisation's).

use super::*;

/// An API token request authenticated by.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenPrincipal {
    /// Token id.
    pub token_id: Uuid,
    /// User.
    pub user_id: Uuid,
    /// Organisation the token is scoped to.
    pub org_id: Uuid,
    /// The user's current role there.
    pub role: Role,
    /// Token scope.
    pub scope: Scope,
}

/// An API token as listed (never the secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiToken {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Owner's email.
    pub email: String,
    /// Organisation.
    pub org_id: Uuid,
    /// Label.
    pub name: String,
    /// `read | write`.
    pub scope: Scope,
    /// First characters of the token.
    pub prefix: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last authenticated request.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A worker token as listed (never the secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerToken {
    /// Id.
    pub id: Uuid,
    /// Organisation its workers join.
    pub org_id: Uuid,
    /// Label.
    pub name: String,
    /// First characters of the token.
    pub prefix: String,
    /// Creator.
    pub created_by: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last registration with it.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

// API tokens

const API_TOKEN_COLUMNS: &str = "t.id, t.user_id, u.email, t.org_id, t.name, t.scope, t.prefix, t.created_at, \
    t.expires_at, t.last_used_at, t.revoked_at";

/// Creates an API token for a member of `org_id`; returns the secret (shown once) and the token.
pub async fn create_api_token(
    pool: &PgPool,
    who: &Who,
    user_id: Uuid,
    org_id: Uuid,
    name: &str,
    scope: Scope,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(String, ApiToken)> {
    let secret = new_secret(API_TOKEN_PREFIX);
    let mut tx = pool.begin().await?;
    let member: bool = sqlx::query_scalar(
        "select exists (select 1 from membership where org_id = $1 and user_id = $2)",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    if !member {
        return Err(Error::Conflict(
            "the user is not a member of the organisation".into(),
        ));
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into api_token (id, user_id, org_id, name, scope, token_hash, prefix, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(user_id)
    .bind(org_id)
    .bind(name)
    .bind(scope)
    .bind(digest(&secret))
    .bind(display_prefix(&secret))
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org_id),
            who,
            action: "api_token.create",
            target_type: "api_token",
            target_id: Some(id.to_string()),
            details: json!({"name": name, "scope": scope, "user_id": user_id}),
        },
    )
    .await?;
    let token = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {API_TOKEN_COLUMNS} from api_token t join app_user u on u.id = t.user_id where t.id = $1"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((secret, token))
}

/// An organisation's API tokens (only `user_id`'s when given), newest first.
pub async fn api_tokens(
    pool: &PgPool,
    org_id: Uuid,
    user_id: Option<Uuid>,
) -> Result<Vec<ApiToken>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {API_TOKEN_COLUMNS} from api_token t join app_user u on u.id = t.user_id \
         where t.org_id = $1 and ($2::uuid is null or t.user_id = $2) order by t.id desc"
    )))
    .bind(org_id)
    .bind(user_id)
    .fetch_all(pool)
    .await?)
}

/// Revokes an API token of `org_id` (only one of `user_id`'s when given; otherwise not found).
pub async fn revoke_api_token(
    pool: &PgPool,
    who: &Who,
    org_id: Uuid,
    id: Uuid,
    user_id: Option<Uuid>,
) -> Result<()> {
    change_one(
        pool,
        who,
        (org_id, id),
        ("api_token", "api_token.revoke"),
        sqlx::query(
            "update api_token set revoked_at = coalesce(revoked_at, now()) \
             where id = $1 and org_id = $2 and ($3::uuid is null or user_id = $3)",
        )
        .bind(id)
        .bind(org_id)
        .bind(user_id),
    )
    .await
}

/// The principal of a bearer token: live (not revoked, not expired) and its user still a member of
/// the token's organisation. Marks the token used.
///
/// Reading the principal takes no row lock, and the mark skips a token row another transaction holds:
/// requests with one token never wait on each other, nor on a transaction left open on that row.
pub async fn authenticate_api_token(pool: &PgPool, secret: &str) -> Result<Option<TokenPrincipal>> {
    if !secret.starts_with(API_TOKEN_PREFIX) {
        return Ok(None);
    }
    let principal: Option<TokenPrincipal> = sqlx::query_as(
        "select t.id as token_id, t.user_id, t.org_id, m.role, t.scope \
         from api_token t join membership m on m.org_id = t.org_id and m.user_id = t.user_id \
         where t.token_hash = $1 and t.revoked_at is null and (t.expires_at is null or t.expires_at > now())",
    )
    .bind(digest(secret))
    .fetch_optional(pool)
    .await?;
    if let Some(p) = &principal {
        sqlx::query(
            "update api_token set last_used_at = now() \
             where id = (select id from api_token where id = $1 for update skip locked)",
        )
        .bind(p.token_id)
        .execute(pool)
        .await?;
    }
    Ok(principal)
}

// Worker tokens

const WORKER_TOKEN_COLUMNS: &str =
    "id, org_id, name, prefix, created_by, created_at, last_used_at, revoked_at";

/// Creates a worker token for `org_id`; returns the secret (shown once) and the token.
pub async fn create_worker_token(
    pool: &PgPool,
    who: &Who,
    org_id: Uuid,
    name: &str,
) -> Result<(String, WorkerToken)> {
    let secret = new_secret(WORKER_TOKEN_PREFIX);
    let mut tx = pool.begin().await?;
    let token: WorkerToken = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into worker_token (id, org_id, name, token_hash, prefix, created_by) \
         values ($1, $2, $3, $4, $5, $6) returning {WORKER_TOKEN_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(org_id)
    .bind(name)
    .bind(digest(&secret))
    .bind(display_prefix(&secret))
    .bind(who.user_id)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org_id),
            who,
            action: "worker_token.create",
            target_type: "worker_token",
            target_id: Some(token.id.to_string()),
            details: json!({"name": name}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((secret, token))
}

/// An organisation's worker tokens, newest first.
pub async fn worker_tokens(pool: &PgPool, org_id: Uuid) -> Result<Vec<WorkerToken>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {WORKER_TOKEN_COLUMNS} from worker_token where org_id = $1 order by id desc"
    )))
    .bind(org_id)
    .fetch_all(pool)
    .await?)
}

/// Revokes a worker token: no new registrations with it, and its workers drain at their next
/// heartbeat.
pub async fn revoke_worker_token(pool: &PgPool, who: &Who, org_id: Uuid, id: Uuid) -> Result<()> {
    change_one(
        pool,
        who,
        (org_id, id),
        ("worker_token", "worker_token.revoke"),
        sqlx::query(
            "update worker_token set revoked_at = coalesce(revoked_at, now()) where id = $1 and org_id = $2",
        )
        .bind(id)
        .bind(org_id),
    )
    .await
}
