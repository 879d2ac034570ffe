//! Users, organisations and their members.

use super::*;

/// A user account.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// Email (as entered; compared case-insensitively).
    pub email: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An organisation.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Org {
    /// Id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An organisation a user belongs to, with the user's role there.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgRole {
    /// Organisation id.
    pub id: Uuid,
    /// Organisation name.
    pub name: String,
    /// The user's role.
    pub role: Role,
}

/// A member of an organisation.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    /// User id.
    pub user_id: Uuid,
    /// Email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Member since.
    pub created_at: DateTime<Utc>,
}

pub(super) async fn insert_user(
    tx: &mut sqlx::PgConnection,
    email: &str,
    password_hash: &str,
) -> Result<User> {
    sqlx::query_as(
        "insert into app_user (id, email, password_hash) values ($1, $2, $3) returning id, email, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(email)
    .bind(password_hash)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e, "app_user_email_unique") {
            Error::Conflict(format!("a user with email {email} already exists"))
        } else {
            e.into()
        }
    })
}

pub(super) async fn insert_org(tx: &mut sqlx::PgConnection, name: &str) -> Result<Org> {
    sqlx::query_as("insert into org (id, name) values ($1, $2) returning id, name, created_at")
        .bind(Uuid::now_v7())
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e, "org_name_unique") {
                Error::Conflict(format!("an organisation named {name:?} already exists"))
            } else {
                e.into()
            }
        })
}

pub(super) async fn insert_membership(
    tx: &mut sqlx::PgConnection,
    org_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> Result<()> {
    sqlx::query("insert into membership (org_id, user_id, role) values ($1, $2, $3)")
        .bind(org_id)
        .bind(user_id)
        .bind(role)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()) {
                Error::Conflict("the user is already a member".into())
            } else {
                e.into()
            }
        })?;
    Ok(())
}

/// Creates a user (email and password already validated).
pub async fn create_user(pool: &PgPool, who: &Who, email: &str, password: &str) -> Result<User> {
    let hash = hash_password(password).await?;
    let mut tx = pool.begin().await?;
    let user = insert_user(&mut tx, email, &hash).await?;
    audit::record(
        &mut *tx,
        &Entry {
            org_id: None,
            who,
            action: "user.create",
            target_type: "user",
            target_id: Some(user.id.to_string()),
            details: json!({"email": user.email}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

/// The user with this email (case-insensitive).
pub async fn user_by_email(pool: &PgPool, email: &str) -> Result<Option<User>> {
    Ok(
        sqlx::query_as("select id, email, created_at from app_user where lower(email) = lower($1)")
            .bind(email.trim())
            .fetch_optional(pool)
            .await?,
    )
}

/// One user.
pub async fn user(pool: &PgPool, id: Uuid) -> Result<User> {
    sqlx::query_as("select id, email, created_at from app_user where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound { what: "user", id })
}

/// Whether any user exists (the first-run setup is open only while none does).
pub async fn any_user(pool: &PgPool) -> Result<bool> {
    Ok(sqlx::query_scalar("select exists (select 1 from app_user)")
        .fetch_one(pool)
        .await?)
}

/// First run: creates the first user as owner of the default organisation (renamed to `org_name`
/// when given). Refused with a conflict once any user exists, also when two setups race.
pub async fn setup(
    pool: &PgPool,
    who: &Who,
    email: &str,
    password: &str,
    org_name: Option<&str>,
) -> Result<(User, Org)> {
    let hash = hash_password(password).await?;
    let mut tx = pool.begin().await?;
    // Serialises concurrent setups; the loser then sees the winner's user.
    sqlx::query("lock table app_user in exclusive mode")
        .execute(&mut *tx)
        .await?;
    let exists: bool = sqlx::query_scalar("select exists (select 1 from app_user)")
        .fetch_one(&mut *tx)
        .await?;
    if exists {
        return Err(Error::Conflict("setup is already done".into()));
    }
    let user = insert_user(&mut tx, email, &hash).await?;
    let org: Org = match org_name {
        Some(name) => {
            sqlx::query_as("update org set name = $2 where id = $1 returning id, name, created_at")
                .bind(crate::DEFAULT_ORG_ID)
                .bind(name)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique_violation(&e, "org_name_unique") {
                        Error::Conflict(format!("an organisation named {name:?} already exists"))
                    } else {
                        e.into()
                    }
                })?
        }
        None => {
            sqlx::query_as("select id, name, created_at from org where id = $1")
                .bind(crate::DEFAULT_ORG_ID)
                .fetch_one(&mut *tx)
                .await?
        }
    };
    insert_membership(&mut tx, org.id, user.id, Role::Owner).await?;
    let who = Who {
        user_id: Some(user.id),
        ..who.clone()
    };
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org.id),
            who: &who,
            action: "setup",
            target_type: "user",
            target_id: Some(user.id.to_string()),
            details: json!({"email": user.email, "org": org.name}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((user, org))
}

/// Creates an organisation; `owner`, when given, becomes its owner.
pub async fn create_org(pool: &PgPool, who: &Who, name: &str, owner: Option<Uuid>) -> Result<Org> {
    let mut tx = pool.begin().await?;
    let org = insert_org(&mut tx, name).await?;
    if let Some(user_id) = owner {
        insert_membership(&mut tx, org.id, user_id, Role::Owner).await?;
    }
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org.id),
            who,
            action: "org.create",
            target_type: "org",
            target_id: Some(org.id.to_string()),
            details: json!({"name": org.name}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(org)
}

/// Lets the installation's workers (those registered without a worker token) run the
/// organisation's steps, or stops them from doing so (its own workers then run them alone). Audited.
/// Applies to steps dispatched from now on.
pub async fn set_installation_workers(
    pool: &PgPool,
    who: &Who,
    org_id: Uuid,
    allowed: bool,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("update org set installation_workers = $2 where id = $1")
        .bind(org_id)
        .bind(allowed)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    audit_org_change(
        tx,
        who,
        org_id,
        n,
        "org.installation_workers",
        json!({"allowed": allowed}),
    )
    .await
}

/// Ends an organisation setting's change: not found when no row changed (`rows`), else the audit
/// entry and the commit, with the change in one transaction.
async fn audit_org_change(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    who: &Who,
    org_id: Uuid,
    rows: u64,
    action: &str,
    details: serde_json::Value,
) -> Result<()> {
    if rows == 0 {
        return Err(Error::NotFound {
            what: "organisation",
            id: org_id,
        });
    }
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org_id),
            who,
            action,
            target_type: "org",
            target_id: Some(org_id.to_string()),
            details,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Sets an organisation's limits on queued and running steps (`Some(None)` restores the installation's
/// default: 100,000 queued, no limit on running; `None` leaves a limit as it is). Audited.
pub async fn set_org_limits(
    pool: &PgPool,
    who: &Who,
    org_id: Uuid,
    max_queued_steps: Option<Option<i32>>,
    max_running_steps: Option<Option<i32>>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "update org set \
             max_queued_steps = case when $2 then $3 else max_queued_steps end, \
             max_running_steps = case when $4 then $5 else max_running_steps end \
         where id = $1",
    )
    .bind(org_id)
    .bind(max_queued_steps.is_some())
    .bind(max_queued_steps.flatten())
    .bind(max_running_steps.is_some())
    .bind(max_running_steps.flatten())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    audit_org_change(
        tx,
        who,
        org_id,
        n,
        "org.limits",
        json!({"max_queued_steps": max_queued_steps, "max_running_steps": max_running_steps}),
    )
    .await
}

/// The organisation with this name.
pub async fn org_by_name(pool: &PgPool, name: &str) -> Result<Option<Org>> {
    Ok(
        sqlx::query_as("select id, name, created_at from org where name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?,
    )
}

/// One organisation.
pub async fn org(pool: &PgPool, id: Uuid) -> Result<Org> {
    sqlx::query_as("select id, name, created_at from org where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound { what: "org", id })
}

/// Deletes an organisation with its memberships, tokens, invitations and workers. Refused for the
/// default organisation and while it still has projects.
pub async fn delete_org(pool: &PgPool, who: &Who, id: Uuid) -> Result<()> {
    if id == crate::DEFAULT_ORG_ID {
        return Err(Error::Conflict(
            "the default organisation cannot be deleted (in-process workers belong to it)".into(),
        ));
    }
    let mut tx = pool.begin().await?;
    let projects: i64 = sqlx::query_scalar("select count(*) from project where org_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if projects > 0 {
        return Err(Error::Conflict(format!(
            "the organisation still has {projects} project(s); delete them first"
        )));
    }
    let done = sqlx::query("delete from org where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound { what: "org", id });
    }
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(id),
            who,
            action: "org.delete",
            target_type: "org",
            target_id: Some(id.to_string()),
            details: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The organisations a user belongs to, with roles, by name.
pub async fn orgs_of(pool: &PgPool, user_id: Uuid) -> Result<Vec<OrgRole>> {
    Ok(sqlx::query_as(
        "select o.id, o.name, m.role from membership m join org o on o.id = m.org_id \
         where m.user_id = $1 order by o.name",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?)
}

/// A user's role in an organisation, if a member.
pub async fn role_in(pool: &PgPool, org_id: Uuid, user_id: Uuid) -> Result<Option<Role>> {
    Ok(
        sqlx::query_scalar("select role from membership where org_id = $1 and user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Members of an organisation, by email.
pub async fn members(pool: &PgPool, org_id: Uuid) -> Result<Vec<Member>> {
    Ok(sqlx::query_as(
        "select u.id as user_id, u.email, m.role, m.created_at from membership m \
         join app_user u on u.id = m.user_id where m.org_id = $1 order by lower(u.email)",
    )
    .bind(org_id)
    .fetch_all(pool)
    .await?)
}

pub(super) async fn member_in(
    tx: &mut sqlx::PgConnection,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<Member> {
    sqlx::query_as(
        "select u.id as user_id, u.email, m.role, m.created_at from membership m \
         join app_user u on u.id = m.user_id where m.org_id = $1 and m.user_id = $2",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound {
        what: "member",
        id: user_id,
    })
}

/// Adds an existing user to an organisation.
pub async fn add_member(
    pool: &PgPool,
    who: &Who,
    org_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> Result<Member> {
    let mut tx = pool.begin().await?;
    insert_membership(&mut tx, org_id, user_id, role).await?;
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org_id),
            who,
            action: "member.add",
            target_type: "user",
            target_id: Some(user_id.to_string()),
            details: json!({"role": role}),
        },
    )
    .await?;
    let m = member_in(&mut tx, org_id, user_id).await?;
    tx.commit().await?;
    Ok(m)
}

/// Locks the organisation's owner rows and refuses if `user_id` is its only owner.
pub(super) async fn keep_an_owner(
    tx: &mut sqlx::PgConnection,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<()> {
    let owners: Vec<Uuid> = sqlx::query_scalar(
        "select user_id from membership where org_id = $1 and role = 'owner' for update",
    )
    .bind(org_id)
    .fetch_all(&mut *tx)
    .await?;
    if owners == [user_id] {
        return Err(Error::Conflict(
            "an organisation needs at least one owner; make someone else owner first".into(),
        ));
    }
    Ok(())
}

/// Changes a member's role. The caller checks who may grant what; this refuses to leave the
/// organisation without an owner.
pub async fn set_role(
    pool: &PgPool,
    who: &Who,
    org_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> Result<Member> {
    let mut tx = pool.begin().await?;
    let before = member_in(&mut tx, org_id, user_id).await?;
    if before.role == Role::Owner && role != Role::Owner {
        keep_an_owner(&mut tx, org_id, user_id).await?;
    }
    sqlx::query("update membership set role = $3 where org_id = $1 and user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .bind(role)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org_id),
            who,
            action: "member.role_change",
            target_type: "user",
            target_id: Some(user_id.to_string()),
            details: json!({"from": before.role, "to": role}),
        },
    )
    .await?;
    let m = member_in(&mut tx, org_id, user_id).await?;
    tx.commit().await?;
    Ok(m)
}

/// Removes a member (and the API tokens they hold in that organisation). Refuses to remove the last
/// owner.
pub async fn remove_member(pool: &PgPool, who: &Who, org_id: Uuid, user_id: Uuid) -> Result<()> {
    let mut tx = pool.begin().await?;
    let before = member_in(&mut tx, org_id, user_id).await?;
    if before.role == Role::Owner {
        keep_an_owner(&mut tx, org_id, user_id).await?;
    }
    sqlx::query("delete from membership where org_id = $1 and user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("update api_token set revoked_at = now() where org_id = $1 and user_id = $2 and revoked_at is null")
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("update user_session set org_id = null where org_id = $1 and user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org_id),
            who,
            action: "member.remove",
            target_type: "user",
            target_id: Some(user_id.to_string()),
            details: json!({"role": before.role, "email": before.email}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
