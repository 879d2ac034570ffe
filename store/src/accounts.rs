//! Accounts: users (Argon2id password hashes), organisations, memberships with roles, sessions,
//! invitations, API tokens, worker tokens and the sign-in rate limit.
//!
//! Secrets handed out (session cookies, invitation links, API and worker tokens) are 256-bit random
//! values; only their SHA-256 digests are stored. Every change writes its audit row
//! ([`crate::audit`]) in the same transaction.

use crate::audit::{self, Entry, Who};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(14 * 24 * 3600);
/// How long an invitation link stays valid.
pub const INVITATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The sign-in rate-limit window.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failed sign-ins per account within [`LOGIN_WINDOW`] before further tries are refused.
pub const MAX_FAILURES_PER_ACCOUNT: i64 = 5;
/// Failed sign-ins per client address within [`LOGIN_WINDOW`] before further tries are refused.
pub const MAX_FAILURES_PER_IP: i64 = 20;
/// Prefix of API tokens.
pub const API_TOKEN_PREFIX: &str = "gw_";
/// Prefix of worker tokens.
pub const WORKER_TOKEN_PREFIX: &str = "gwk_";
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

/// A member's role in an organisation, weakest first (so `role >= Role::Admin` reads naturally).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads and works: projects, runs, labels.
    Member,
    /// Also manages members, tokens of others and workers.
    Admin,
    /// Everything, including deleting the organisation and changing owners.
    Owner,
}

impl Role {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "member" => Ok(Self::Member),
            "admin" => Ok(Self::Admin),
            "owner" => Ok(Self::Owner),
            other => Err(format!(
                "unknown role {other:?}: use owner, admin, member or viewer"
            )),
        }
    }
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Safe methods only (GET, HEAD, OPTIONS).
    Read,
    /// Everything the token's user may do in its organisation.
    Write,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            other => Err(format!("unknown scope {other:?}: use read or write")),
        }
    }
}

impl Scope {
    /// The lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// Stored as `text` columns holding the lowercase name.
macro_rules! text_enum {
    ($t:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $t {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }
        impl sqlx::Encode<'_, sqlx::Postgres> for $t {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $t {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                s.parse().map_err(Into::into)
            }
        }
    };
}
text_enum!(Role);
text_enum!(Scope);

/// A user account.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// Email (as entered; compared case-insensitively).
    pub email: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An organisation.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Org {
    /// Id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An organisation a user belongs to, with the user's role there.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrgRole {
    /// Organisation id.
    pub id: Uuid,
    /// Organisation name.
    pub name: String,
    /// The user's role.
    pub role: Role,
}

/// A member of an organisation.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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

/// An invitation as listed (never the secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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

// ---------------------------------------------------------------------------------------------------
// Secrets and passwords

/// A fresh 256-bit secret as 64 hex characters behind `prefix`.
#[must_use]
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// SHA-256 of a secret, as stored.
#[must_use]
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn display_prefix(secret: &str) -> String {
    secret.chars().take(10).collect()
}

/// Constant-time comparison of two short strings (CSRF tokens).
#[must_use]
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Argon2id hash (PHC string) of `password`; CPU-heavy, so it runs on the blocking pool.
pub async fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::PasswordHasher;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Error::Conflict(format!("cannot hash the password: {e}")))
    })
    .await
    .map_err(|e| Error::Conflict(format!("password hashing stopped: {e}")))?
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub async fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    let (password, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

/// A hash nobody's password matches, verified for unknown accounts so that a sign-in takes as long
/// whether or not the account exists.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vq9nqvY0n0qLZ3y3rVvnq4m6iP8x5wXJfYwR8l0N1zs";

/// The normalised email, or why it is not one.
pub fn validate_email(email: &str) -> Result<String, String> {
    let email = email.trim();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if valid {
        Ok(email.to_owned())
    } else {
        Err(format!("{email:?} is not an email address"))
    }
}

/// Why `password` is not acceptable, if it is not.
pub fn validate_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        Err(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        ))
    } else if n > 1024 {
        Err("a password may have at most 1024 characters".into())
    } else {
        Ok(())
    }
}

/// Why `name` is not an acceptable organisation name, if it is not.
pub fn validate_org_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        Err("an organisation name must have 1–100 characters".into())
    } else {
        Ok(name.to_owned())
    }
}

fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.constraint() == Some(constraint))
}

fn expiry(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1))
}

// ---------------------------------------------------------------------------------------------------
// Users and organisations

async fn insert_user(
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

async fn insert_org(tx: &mut sqlx::PgConnection, name: &str) -> Result<Org> {
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

async fn insert_membership(
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

async fn member_in(tx: &mut sqlx::PgConnection, org_id: Uuid, user_id: Uuid) -> Result<Member> {
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
async fn keep_an_owner(tx: &mut sqlx::PgConnection, org_id: Uuid, user_id: Uuid) -> Result<()> {
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

// ---------------------------------------------------------------------------------------------------
// Sign-in and sessions

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
    let window = LOGIN_WINDOW.as_secs_f64();
    // For each key: if it has reached its limit, the attempt is allowed again once the oldest failure
    // that keeps it at the limit leaves the window.
    let wait: Option<f64> = sqlx::query_scalar(
        "with e as (select created_at from login_attempt where email = lower($1) and not succeeded \
                      and created_at > now() - $3 * interval '1 second' order by created_at desc offset $4 - 1 limit 1), \
              i as (select created_at from login_attempt where ip = $2 and not succeeded \
                      and created_at > now() - $3 * interval '1 second' order by created_at desc offset $5 - 1 limit 1) \
         select greatest((select extract(epoch from created_at + $3 * interval '1 second' - now()) from e), \
                         (select extract(epoch from created_at + $3 * interval '1 second' - now()) from i))::float8",
    )
    .bind(email.trim())
    .bind(ip)
    .bind(window)
    .bind(MAX_FAILURES_PER_ACCOUNT)
    .bind(MAX_FAILURES_PER_IP)
    .fetch_one(pool)
    .await?;
    Ok(wait.map(|s| Duration::from_secs_f64(s.max(1.0).ceil())))
}

/// Records a sign-in attempt; a success clears the account's failures.
pub async fn record_login_attempt(pool: &PgPool, email: &str, ip: &str, ok: bool) -> Result<()> {
    let mut tx = pool.begin().await?;
    if ok {
        sqlx::query("delete from login_attempt where email = lower($1)")
            .bind(email.trim())
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("insert into login_attempt (email, ip, succeeded) values (lower($1), $2, $3)")
        .bind(email.trim())
        .bind(ip)
        .bind(ok)
        .execute(&mut *tx)
        .await?;
    sqlx::query("delete from login_attempt where created_at < now() - interval '1 day'")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Checks an email and password under the rate limit (per account and per client address, counted
/// in the database so it holds across server processes) and records the attempt.
pub async fn login(pool: &PgPool, email: &str, password: &str, ip: &str) -> Result<LoginOutcome> {
    if let Some(wait) = login_retry_after(pool, email, ip).await? {
        return Ok(LoginOutcome::Limited(wait));
    }
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
    record_login_attempt(pool, email, ip, ok).await?;
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
) -> Result<PasswordChange> {
    let hash: String = sqlx::query_scalar("select password_hash from app_user where id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound {
            what: "user",
            id: user_id,
        })?;
    if !verify_password(current, &hash).await {
        return Ok(PasswordChange::WrongPassword);
    }
    set_password(pool, who, user_id, new, keep).await?;
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
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Invitations

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
async fn change_one(
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
            if let Some(wait) = login_retry_after(pool, &inv.email, ip).await? {
                return Ok(AcceptOutcome::Limited(wait));
            }
            let ok = verify_password(password, hash).await;
            record_login_attempt(pool, &inv.email, ip, ok).await?;
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
async fn claim_invitation(tx: &mut sqlx::PgConnection, inv: &Invitation) -> Result<()> {
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
async fn join_by_invitation(
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

// ---------------------------------------------------------------------------------------------------
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
pub async fn authenticate_api_token(pool: &PgPool, secret: &str) -> Result<Option<TokenPrincipal>> {
    if !secret.starts_with(API_TOKEN_PREFIX) {
        return Ok(None);
    }
    Ok(sqlx::query_as(
        "update api_token t set last_used_at = now() from membership m \
         where t.token_hash = $1 and t.revoked_at is null and (t.expires_at is null or t.expires_at > now()) \
           and m.org_id = t.org_id and m.user_id = t.user_id \
         returning t.id as token_id, t.user_id, t.org_id, m.role, t.scope",
    )
    .bind(digest(secret))
    .fetch_optional(pool)
    .await?)
}

// ---------------------------------------------------------------------------------------------------
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_from_viewer_to_owner() {
        assert!(
            Role::Viewer < Role::Member && Role::Member < Role::Admin && Role::Admin < Role::Owner
        );
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn emails_and_passwords_are_checked() {
        assert_eq!(validate_email(" a@b.org ").as_deref(), Ok("a@b.org"));
        for bad in ["", "a", "a@b", "@b.org", "a b@c.org", "a@.org", "a@b.org."] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
        assert!(validate_password("short").is_err());
        assert!(validate_password("long enough").is_ok());
    }

    #[test]
    fn secrets_are_random_and_digests_fixed_length() {
        let a = new_secret(API_TOKEN_PREFIX);
        let b = new_secret(API_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("gw_") && a.len() == 3 + 64);
        assert_eq!(digest(&a).len(), 32);
        assert!(same_secret(&a, &a.clone()) && !same_secret(&a, &b));
    }

    #[tokio::test]
    async fn passwords_verify_and_the_dummy_hash_matches_nothing() {
        let h = hash_password("correct horse").await.unwrap();
        assert!(verify_password("correct horse", &h).await);
        assert!(!verify_password("wrong horse", &h).await);
        assert!(!verify_password("correct horse", DUMMY_HASH).await);
        // A well-formed hash, so checking it costs as much as checking a real one.
        assert!(argon2::password_hash::phc::PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
