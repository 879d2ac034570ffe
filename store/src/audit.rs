//! The audit log: who did what to which resource, in which organisation, from where and when.
//!
//! Account changes write their row in the same transaction as the change (see [`crate::accounts`]);
//! other actions write it right after they commit.

use crate::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Who acts: a user (through a session or an API token), or nobody (the CLI, a first-run setup).
#[derive(Debug, Clone, Default)]
pub struct Who {
    /// The acting user.
    pub user_id: Option<Uuid>,
    /// The API token used, if any.
    pub token_id: Option<Uuid>,
    /// Client address.
    pub ip: Option<String>,
}

impl Who {
    /// The command line (no user, no address).
    #[must_use]
    pub fn cli() -> Self {
        Self::default()
    }
}

/// One action to record.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Organisation the action happened in (none for account-wide actions such as a password change).
    pub org_id: Option<Uuid>,
    /// Actor.
    pub who: &'a Who,
    /// Dotted verb, e.g. `project.create`, `member.role_change`, `auth.login`.
    pub action: &'a str,
    /// Kind of the target (`project`, `user`, `api_token`, …).
    pub target_type: &'a str,
    /// The target's id.
    pub target_id: Option<String>,
    /// Anything else worth keeping (never secrets).
    pub details: Value,
}

/// Writes one entry on `executor` (a pool, connection or open transaction).
pub async fn record<'e>(executor: impl sqlx::PgExecutor<'e>, e: &Entry<'_>) -> Result<()> {
    sqlx::query(
        "insert into audit_log (id, org_id, user_id, token_id, action, target_type, target_id, ip, details) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(Uuid::now_v7())
    .bind(e.org_id)
    .bind(e.who.user_id)
    .bind(e.who.token_id)
    .bind(e.action)
    .bind(e.target_type)
    .bind(e.target_id.as_deref())
    .bind(e.who.ip.as_deref())
    .bind(if e.details.is_null() {
        serde_json::json!({})
    } else {
        e.details.clone()
    })
    .execute(executor)
    .await?;
    Ok(())
}

/// A recorded action.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Record {
    /// Id (time-ordered).
    pub id: Uuid,
    /// Organisation.
    pub org_id: Option<Uuid>,
    /// Acting user.
    pub user_id: Option<Uuid>,
    /// The acting user's email, while the user exists.
    pub user_email: Option<String>,
    /// API token used.
    pub token_id: Option<Uuid>,
    /// Action.
    pub action: String,
    /// Target kind.
    pub target_type: String,
    /// Target id.
    pub target_id: Option<String>,
    /// Client address.
    pub ip: Option<String>,
    /// Details.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An organisation's entries, newest first, after `cursor` (an id of the previous page).
pub async fn list(
    pool: &PgPool,
    org_id: Uuid,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Record>> {
    Ok(sqlx::query_as(
        "select a.id, a.org_id, a.user_id, u.email as user_email, a.token_id, a.action, a.target_type, \
                a.target_id, a.ip, a.details, a.created_at \
         from audit_log a left join app_user u on u.id = a.user_id \
         where a.org_id = $1 and ($2::uuid is null or a.id < $2) order by a.id desc limit $3",
    )
    .bind(org_id)
    .bind(cursor)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
