//! Invitations to an organisation, and accepting them.

use super::*;

/// An invitation as listed (never the secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invitation {
    /// Id.
    pub id: Uuid,
    /// Organisation.
    pub org_id: Uuid,
    /// Invited email.
    pub email: String,
    /// Role granted on acceptance.
    pub role: Role,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Accepted.
    pub accepted_at: Option<DateTime<Utc>>,
}

/// Creates an invitation; returns the one-time secret for the link and the invitation.
pub async fn create_invitation(
    pool: &PgPool,
    who: &Who,
    org_id: Uuid,
    email: &str,
    role: Role,
) -> Result<(String, Invitation)> {
    let secret = new_secret("");
    let mut tx = pool.begin().await?;
    let inv: Invitation = sqlx::query_as(
        "insert into invitation (id, org_id, email, role, token_hash, created_by, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7) \
         returning id, org_id, email, role, created_at, expires_at, accepted_at",
    )
    .bind(Uuid::now_v7())
    .bind(org_id)
    .bind(email)
    .bind(role)
    .bind(digest(&secret))
    .bind(who.user_id)
    .bind(expiry(INVITATION_TTL))
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org_id),
            who,
            action: "invitation.create",
            target_type: "invitation",
            target_id: Some(inv.id.to_string()),
            details: json!({"email": email, "role": role}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((secret, inv))
}

/// Open (unaccepted, unexpired) invitations of an organisation, newest first.
pub async fn invitations(pool: &PgPool, org_id: Uuid) -> Result<Vec<Invitation>> {
    Ok(sqlx::query_as(
        "select id, org_id, email, role, created_at, expires_at, accepted_at from invitation \
         where org_id = $1 and accepted_at is null and expires_at > now() order by id desc",
    )
    .bind(org_id)
    .fetch_all(pool)
    .await?)
}

/// The open (unaccepted, unexpired) invitation whose link secret is `secret`.
pub async fn open_invitation(pool: &PgPool, secret: &str) -> Result<Option<Invitation>> {
    Ok(sqlx::query_as(
        "select id, org_id, email, role, created_at, expires_at, accepted_at from invitation \
         where token_hash = $1 and accepted_at is null and expires_at > now()",
    )
    .bind(digest(secret))
    .fetch_optional(pool)
    .await?)
}

/// The invitation whose link secret is `secret`, whether open, used or expired (so the acceptance page
/// can say why a link no longer works). Withdrawn invitations are deleted: they are not found.
pub async fn invitation_by_secret(pool: &PgPool, secret: &str) -> Result<Option<Invitation>> {
    Ok(sqlx::query_as(
        "select id, org_id, email, role, created_at, expires_at, accepted_at from invitation \
         where token_hash = $1",
    )
    .bind(digest(secret))
    .fetch_optional(pool)
    .await?)
}

/// Withdraws an open invitation.
pub async fn revoke_invitation(pool: &PgPool, who: &Who, org_id: Uuid, id: Uuid) -> Result<()> {
    change_one(
        pool,
        who,
        (org_id, id),
        ("invitation", "invitation.revoke"),
        sqlx::query("delete from invitation where id = $1 and org_id = $2 and accepted_at is null")
            .bind(id)
            .bind(org_id),
    )
    .await
}

/// Runs `query`, which changes the one row `target` names (`(org, id)`), and records `action` in the
/// audit log in the same transaction; `NotFound` (naming the target type) when no row changed.
pub(super) async fn change_one(
    pool: &PgPool,
    who: &Who,
    (org_id, id): (Uuid, Uuid),
    (target_type, action): (&'static str, &'static str),
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    if query.execute(&mut *tx).await?.rows_affected() == 0 {
        return Err(Error::NotFound {
            what: target_type,
            id,
        });
    }
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org_id),
            who,
            action,
            target_type,
            target_id: Some(id.to_string()),
            details: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The result of accepting an invitation.
#[derive(Debug)]
pub enum AcceptOutcome {
    /// Accepted: the user (created now when `created`) is a member of `org_id` with `role`.
    Accepted {
        /// The user.
        user: User,
        /// The organisation joined.
        org_id: Uuid,
        /// The role there.
        role: Role,
        /// Whether the account was created by this acceptance.
        created: bool,
    },
    /// The email already has an account and the password given is not its password.
    WrongPassword,
    /// Too many failed attempts for this account or address.
    Limited(Duration),
}

/// Accepts an invitation with a password: creates the account when the email has none (the password
/// must then be acceptable, which the caller checks), else proves the account holder's identity with
/// it. Unknown, used and expired invitations are not found.
pub async fn accept_invitation(
    pool: &PgPool,
    secret: &str,
    password: &str,
    ip: &str,
) -> Result<AcceptOutcome> {
    let inv: Invitation = sqlx::query_as(
        "select id, org_id, email, role, created_at, expires_at, accepted_at from invitation \
         where token_hash = $1 and accepted_at is null and expires_at > now()",
    )
    .bind(digest(secret))
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound {
        what: "invitation",
        id: Uuid::nil(),
    })?;
    let existing: Option<(Uuid, String)> =
        sqlx::query_as("select id, password_hash from app_user where lower(email) = lower($1)")
            .bind(&inv.email)
            .fetch_optional(pool)
            .await?;
    let new_hash = match &existing {
        Some((_, hash)) => {
            let attempt = match reserve_attempt(pool, &inv.email, ip).await? {
                Ok(id) => id,
                Err(wait) => return Ok(AcceptOutcome::Limited(wait)),
            };
            let ok = verify_password(password, hash).await;
            settle_attempt(pool, &inv.email, attempt, ok).await?;
            if !ok {
                return Ok(AcceptOutcome::WrongPassword);
            }
            None
        }
        None => Some(hash_password(password).await?),
    };
    let mut tx = pool.begin().await?;
    claim_invitation(&mut tx, &inv).await?;
    let (user, created) = match (&existing, new_hash) {
        (Some((id, _)), _) => (
            sqlx::query_as("select id, email, created_at from app_user where id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?,
            false,
        ),
        (None, Some(hash)) => (insert_user(&mut tx, &inv.email, &hash).await?, true),
        (None, None) => {
            return Err(Error::Conflict(
                "the invitation could not be accepted".into(),
            ));
        }
    };
    let role = join_by_invitation(&mut tx, &inv, user.id, created, ip).await?;
    tx.commit().await?;
    Ok(AcceptOutcome::Accepted {
        user,
        org_id: inv.org_id,
        role,
        created,
    })
}

/// Accepts an invitation for a user who is already signed in (their session proves who they are, so
/// no password is asked for). The invitation must be addressed to the user's email (compared without
/// case): a link that reached someone else joins nobody. Returns the organisation joined and the role
/// there. Unknown, used and expired invitations are not found.
pub async fn accept_invitation_as(
    pool: &PgPool,
    secret: &str,
    user_id: Uuid,
    ip: &str,
) -> Result<(Uuid, Role)> {
    let inv = open_invitation(pool, secret)
        .await?
        .ok_or(Error::NotFound {
            what: "invitation",
            id: Uuid::nil(),
        })?;
    let user = user(pool, user_id).await?;
    if !user.email.eq_ignore_ascii_case(&inv.email) {
        return Err(Error::Conflict(format!(
            "this invitation is for {}; you are signed in as {}",
            inv.email, user.email
        )));
    }
    let mut tx = pool.begin().await?;
    claim_invitation(&mut tx, &inv).await?;
    let role = join_by_invitation(&mut tx, &inv, user.id, false, ip).await?;
    tx.commit().await?;
    Ok((inv.org_id, role))
}

/// Marks the invitation accepted. Of two concurrent acceptances only one updates the row; the other
/// finds it no longer open.
pub(super) async fn claim_invitation(tx: &mut sqlx::PgConnection, inv: &Invitation) -> Result<()> {
    let claimed = sqlx::query(
        "update invitation set accepted_at = now() where id = $1 and accepted_at is null",
    )
    .bind(inv.id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if claimed == 0 {
        return Err(Error::NotFound {
            what: "invitation",
            id: inv.id,
        });
    }
    Ok(())
}

/// Makes `user_id` a member through a claimed invitation and records who accepted it; returns the role.
pub(super) async fn join_by_invitation(
    tx: &mut sqlx::PgConnection,
    inv: &Invitation,
    user_id: Uuid,
    created: bool,
    ip: &str,
) -> Result<Role> {
    // Someone already a member keeps the higher of the two roles.
    let role: Role = sqlx::query_scalar(
        "insert into membership (org_id, user_id, role) values ($1, $2, $3) \
         on conflict (org_id, user_id) do update set role = case \
             when array_position(array['viewer','member','admin','owner'], membership.role) \
                  >= array_position(array['viewer','member','admin','owner'], excluded.role) \
             then membership.role else excluded.role end \
         returning role",
    )
    .bind(inv.org_id)
    .bind(user_id)
    .bind(inv.role)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("update invitation set accepted_by = $2 where id = $1")
        .bind(inv.id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let who = Who {
        user_id: Some(user_id),
        token_id: None,
        ip: Some(ip.to_owned()),
    };
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(inv.org_id),
            who: &who,
            action: "invitation.accept",
            target_type: "invitation",
            target_id: Some(inv.id.to_string()),
            details: json!({"email": inv.email, "role": role, "account_created": created}),
        },
    )
    .await?;
    Ok(role)
}
