//! Sign-in (with its rate limit), sessions and passwords.

use super::*;

/// A signed-in session, as the request authenticator sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    /// Session id (not the secret).
    pub id: Uuid,
    /// User.
    pub user_id: Uuid,
    /// The user's email.
    pub email: String,
    /// Current organisation, if the user belongs to one.
    pub org_id: Option<Uuid>,
    /// The user's role in `org_id`.
    pub role: Option<Role>,
    /// The CSRF token form posts and cookie-authenticated API calls must echo.
    pub csrf_token: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

/// The result of a sign-in attempt.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Signed in.
    Ok(User),
    /// Wrong email or password (which one is not said).
    BadCredentials,
    /// Too many recent failures for this account or address; try again after the duration.
    Limited(Duration),
}

/// How long until a new attempt for `email` from `ip` is allowed; `None` when it is allowed now.
pub async fn login_retry_after(pool: &PgPool, email: &str, ip: &str) -> Result<Option<Duration>> {
    retry_after(pool, &email.trim().to_lowercase(), ip).await
}

async fn retry_after<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    email_key: &str,
    ip: &str,
) -> Result<Option<Duration>> {
    let window = LOGIN_WINDOW.as_secs_f64();
    // For each key: if it has reached its limit, the attempt is allowed again once the oldest failure
    // that keeps it at the limit leaves the window.
    let wait: Option<f64> = sqlx::query_scalar(
        "with e as (select created_at from login_attempt where email = $1 and not succeeded \
                      and created_at > now() - $3 * interval '1 second' order by created_at desc offset $4 - 1 limit 1), \
              i as (select created_at from login_attempt where ip = $2 and not succeeded \
                      and created_at > now() - $3 * interval '1 second' order by created_at desc offset $5 - 1 limit 1) \
         select greatest((select extract(epoch from created_at + $3 * interval '1 second' - now()) from e), \
                         (select extract(epoch from created_at + $3 * interval '1 second' - now()) from i))::float8",
    )
    .bind(email_key)
    .bind(ip)
    .bind(window)
    .bind(MAX_FAILURES_PER_ACCOUNT)
    .bind(MAX_FAILURES_PER_IP)
    .fetch_one(exec)
    .await?;
    Ok(wait.map(|s| Duration::from_secs_f64(s.max(1.0).ceil())))
}

/// Counts a sign-in attempt before its password is checked: under locks on the account and the
/// address, checks the limit and records the attempt as a failure in one transaction, so concurrent
/// tries cannot all pass the check before any of them is counted. Returns the attempt to settle with
/// [`settle_attempt`], or how long to wait.
pub(super) async fn reserve_attempt(
    pool: &PgPool,
    email: &str,
    ip: &str,
) -> Result<std::result::Result<i64, Duration>> {
    let email_key = email.trim().to_lowercase();
    let mut tx = pool.begin().await?;
    // Always in this order (account, then address), so two sign-ins cannot deadlock.
    sqlx::query(
        "select pg_advisory_xact_lock(hashtext('login:email:' || $1)), \
                pg_advisory_xact_lock(hashtext('login:ip:' || $2))",
    )
    .bind(&email_key)
    .bind(ip)
    .execute(&mut *tx)
    .await?;
    if let Some(wait) = retry_after(&mut *tx, &email_key, ip).await? {
        return Ok(Err(wait));
    }
    let attempt: i64 = sqlx::query_scalar(
        "insert into login_attempt (email, ip, succeeded) values ($1, $2, false) returning id",
    )
    .bind(&email_key)
    .bind(ip)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("delete from login_attempt where created_at < now() - interval '1 day'")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ok(attempt))
}

/// Settles a reserved attempt: a success clears the account's failures (the reserved one included);
/// a failure stays counted.
pub(super) async fn settle_attempt(
    pool: &PgPool,
    email: &str,
    attempt: i64,
    ok: bool,
) -> Result<()> {
    if !ok {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    sqlx::query("delete from login_attempt where email = $1 and not succeeded and id <> $2")
        .bind(email.trim().to_lowercase())
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
    sqlx::query("update login_attempt set succeeded = true where id = $1")
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Checks an email and password under the rate limit (per account and per client address, counted
/// in the database so it holds across server processes, and counted before the password is checked:
/// `reserve_attempt`); a success clears the account's failures.
pub async fn login(pool: &PgPool, email: &str, password: &str, ip: &str) -> Result<LoginOutcome> {
    let attempt = match reserve_attempt(pool, email, ip).await? {
        Ok(id) => id,
        Err(wait) => return Ok(LoginOutcome::Limited(wait)),
    };
    let row: Option<(Uuid, String, DateTime<Utc>, String)> = sqlx::query_as(
        "select id, email, created_at, password_hash from app_user where lower(email) = lower($1)",
    )
    .bind(email.trim())
    .fetch_optional(pool)
    .await?;
    let ok = match &row {
        Some((.., hash)) => verify_password(password, hash).await,
        None => {
            verify_password(password, DUMMY_HASH).await;
            false
        }
    };
    settle_attempt(pool, email, attempt, ok).await?;
    match row {
        Some((id, email, created_at, _)) if ok => Ok(LoginOutcome::Ok(User {
            id,
            email,
            created_at,
        })),
        _ => Ok(LoginOutcome::BadCredentials),
    }
}

/// Starts a session for `user_id` acting in `org_id` (default: the user's oldest membership).
/// Returns the secret for the cookie and the session.
pub async fn create_session(
    pool: &PgPool,
    user_id: Uuid,
    org_id: Option<Uuid>,
    ip: Option<&str>,
) -> Result<(String, Session)> {
    let org_id = match org_id {
        Some(o) => Some(o),
        None => sqlx::query_scalar(
            "select org_id from membership where user_id = $1 order by created_at, org_id limit 1",
        )
        .bind(user_id)
        .fetch_optional(pool)
        .await?,
    };
    let secret = new_secret("");
    let csrf = new_secret("");
    sqlx::query(
        "insert into user_session (id, token_hash, user_id, org_id, csrf_token, expires_at, ip) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(digest(&secret))
    .bind(user_id)
    .bind(org_id)
    .bind(&csrf)
    .bind(expiry(SESSION_TTL))
    .bind(ip)
    .execute(pool)
    .await?;
    let session = session_by_secret(pool, &secret)
        .await?
        .ok_or(Error::NotFound {
            what: "session",
            id: user_id,
        })?;
    Ok((secret, session))
}

/// The live session whose cookie value is `secret`.
pub async fn session_by_secret(pool: &PgPool, secret: &str) -> Result<Option<Session>> {
    Ok(sqlx::query_as(
        "select s.id, s.user_id, u.email, s.org_id, m.role, s.csrf_token, s.expires_at \
         from user_session s join app_user u on u.id = s.user_id \
         left join membership m on m.user_id = s.user_id and m.org_id = s.org_id \
         where s.token_hash = $1 and s.expires_at > now()",
    )
    .bind(digest(secret))
    .fetch_optional(pool)
    .await?)
}

/// Ends a session.
pub async fn delete_session(pool: &PgPool, who: &Who, session_id: Uuid) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("delete from user_session where id = $1")
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut *tx,
        &Entry {
            org_id: None,
            who,
            action: "auth.logout",
            target_type: "session",
            target_id: Some(session_id.to_string()),
            details: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Switches the organisation a session acts in; the user must be a member (else not found).
pub async fn set_session_org(
    pool: &PgPool,
    session_id: Uuid,
    user_id: Uuid,
    org_id: Uuid,
) -> Result<Role> {
    let role = role_in(pool, org_id, user_id)
        .await?
        .ok_or(Error::NotFound {
            what: "org",
            id: org_id,
        })?;
    sqlx::query("update user_session set org_id = $2 where id = $1")
        .bind(session_id)
        .bind(org_id)
        .execute(pool)
        .await?;
    Ok(role)
}

/// The result of a password change.
#[derive(Debug, PartialEq, Eq)]
pub enum PasswordChange {
    /// Changed; every other session of the user has ended.
    Changed,
    /// The current password given was wrong.
    WrongPassword,
    /// Too many wrong passwords for this account or address (they count as failed sign-ins); try
    /// again after the duration.
    Limited(Duration),
}

/// Changes a user's password after checking the current one, and ends every session of the user
/// except `keep` (the one asking, when it is a session).
pub async fn change_password(
    pool: &PgPool,
    who: &Who,
    user_id: Uuid,
    current: &str,
    new: &str,
    keep: Option<Uuid>,
    revoke_tokens: bool,
) -> Result<PasswordChange> {
    let (email, hash): (String, String) =
        sqlx::query_as("select email, password_hash from app_user where id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?
            .ok_or(Error::NotFound {
                what: "user",
                id: user_id,
            })?;
    // A wrong current password is a wrong guess at the account's password: it counts against the
    // same limit as sign-ins.
    let attempt = match reserve_attempt(pool, &email, who.ip.as_deref().unwrap_or_default()).await?
    {
        Ok(id) => id,
        Err(wait) => return Ok(PasswordChange::Limited(wait)),
    };
    let ok = verify_password(current, &hash).await;
    settle_attempt(pool, &email, attempt, ok).await?;
    if !ok {
        return Ok(PasswordChange::WrongPassword);
    }
    replace_password(pool, who, user_id, new, keep, revoke_tokens).await?;
    Ok(PasswordChange::Changed)
}

/// Sets a user's password (no check of the old one: the CLI's reset) and ends every session of the
/// user except `keep`.
pub async fn set_password(
    pool: &PgPool,
    who: &Who,
    user_id: Uuid,
    new: &str,
    keep: Option<Uuid>,
) -> Result<()> {
    replace_password(pool, who, user_id, new, keep, false).await
}

/// [`set_password`], and with `revoke_tokens` every API token of the user revoked in the same
/// transaction (a password change never lands without the revocation it asked for).
async fn replace_password(
    pool: &PgPool,
    who: &Who,
    user_id: Uuid,
    new: &str,
    keep: Option<Uuid>,
    revoke_tokens: bool,
) -> Result<()> {
    let new_hash = hash_password(new).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("update app_user set password_hash = $2, updated_at = now() where id = $1")
        .bind(user_id)
        .bind(&new_hash)
        .execute(&mut *tx)
        .await?;
    let ended = sqlx::query(
        "delete from user_session where user_id = $1 and ($2::uuid is null or id <> $2)",
    )
    .bind(user_id)
    .bind(keep)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    audit::record(
        &mut *tx,
        &Entry {
            org_id: None,
            who,
            action: "user.password_change",
            target_type: "user",
            target_id: Some(user_id.to_string()),
            details: json!({"sessions_ended": ended}),
        },
    )
    .await?;
    if revoke_tokens {
        let revoked = sqlx::query(
            "update api_token set revoked_at = now() where user_id = $1 and revoked_at is null",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        audit::record(
            &mut *tx,
            &Entry {
                org_id: None,
                who,
                action: "token.revoke_all",
                target_type: "user",
                target_id: Some(user_id.to_string()),
                details: json!({"revoked": revoked, "reason": "password change"}),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
