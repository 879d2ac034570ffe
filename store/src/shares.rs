//! Read-only share links of published outputs: a secret link (`gws_…`) that opens one output's map,
//! tiles, downloads and STAC Item without an account, until it is revoked or expires.
//!
//! Like API tokens, the secret is a 256-bit random value shown once when the link is made; only its
//! SHA-256 digest is stored ([`crate::accounts::digest`]). Making and revoking a link writes its audit
//! row ([`crate::audit`]) in the same transaction.

use crate::accounts::{digest, new_secret};
use crate::audit::{self, Entry, Who};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Prefix of share-link secrets.
pub const SHARE_PREFIX: &str = "gws_";

/// A share link as listed (never the secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShareLink {
    /// Id.
    pub id: Uuid,
    /// Organisation owning the output.
    pub org_id: Uuid,
    /// The output it opens.
    pub output_id: Uuid,
    /// What the link is for (may be empty).
    pub label: String,
    /// Who made it, while that user exists.
    pub created_by: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// When it stops working; none: only when revoked.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// `active`, `expired` or `revoked`, as of the query.
    pub status: String,
}

/// What a live share link opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Shared {
    /// The link.
    pub share_id: Uuid,
    /// The output's organisation.
    pub org_id: Uuid,
    /// The output.
    pub output_id: Uuid,
    /// When the link stops working; none: only when revoked.
    pub expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, org_id, output_id, label, created_by, created_at, expires_at, revoked_at, \
    case when revoked_at is not null then 'revoked' \
         when expires_at is not null and expires_at <= now() then 'expired' \
         else 'active' end as status";

/// Makes a share link of `output_id` (an output of `org_id`, else not found); returns the secret
/// (shown once) and the link.
pub async fn create(
    pool: &PgPool,
    who: &Who,
    (org_id, output_id): (Uuid, Uuid),
    label: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(String, ShareLink)> {
    let secret = new_secret(SHARE_PREFIX);
    let mut tx = pool.begin().await?;
    // The output row is locked so that it cannot be deleted between the check and the insert.
    let exists: Option<Uuid> =
        sqlx::query_scalar("select id from output where org_id = $1 and id = $2 for key share")
            .bind(org_id)
            .bind(output_id)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(Error::NotFound {
            what: "output",
            id: output_id,
        });
    }
    let id = Uuid::now_v7();
    let link: ShareLink = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into share_link (id, org_id, output_id, token_hash, label, created_by, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7) returning {COLUMNS}"
    )))
    .bind(id)
    .bind(org_id)
    .bind(output_id)
    .bind(digest(&secret))
    .bind(label)
    .bind(who.user_id)
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org_id),
            who,
            action: "share_link.create",
            target_type: "share_link",
            target_id: Some(id.to_string()),
            details: json!({"output_id": output_id, "label": label, "expires_at": expires_at}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((secret, link))
}

/// The share links of an output of `org_id`, newest first (none for another organisation's output).
pub async fn list(pool: &PgPool, org_id: Uuid, output_id: Uuid) -> Result<Vec<ShareLink>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from share_link where org_id = $1 and output_id = $2 order by id desc"
    )))
    .bind(org_id)
    .bind(output_id)
    .fetch_all(pool)
    .await?)
}

/// Revokes a share link of `output_id` in `org_id` (not found otherwise). Revoking a revoked link
/// changes nothing, records nothing and succeeds.
pub async fn revoke(
    pool: &PgPool,
    who: &Who,
    (org_id, output_id): (Uuid, Uuid),
    id: Uuid,
) -> Result<ShareLink> {
    let mut tx = pool.begin().await?;
    let revoked: Option<ShareLink> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update share_link set revoked_at = now() \
         where id = $1 and org_id = $2 and output_id = $3 and revoked_at is null returning {COLUMNS}"
    )))
    .bind(id)
    .bind(org_id)
    .bind(output_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(link) = revoked else {
        let earlier: Option<ShareLink> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from share_link where id = $1 and org_id = $2 and output_id = $3"
        )))
        .bind(id)
        .bind(org_id)
        .bind(output_id)
        .fetch_optional(&mut *tx)
        .await?;
        return earlier.ok_or(Error::NotFound {
            what: "share link",
            id,
        });
    };
    audit::record(
        &mut *tx,
        &Entry {
            org_id: Some(org_id),
            who,
            action: "share_link.revoke",
            target_type: "share_link",
            target_id: Some(id.to_string()),
            details: json!({"output_id": output_id}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(link)
}

/// What the share link with `secret` opens, when it is live (neither revoked nor expired); `None` for
/// an unknown, revoked or expired link alike.
pub async fn resolve(pool: &PgPool, secret: &str) -> Result<Option<Shared>> {
    if !secret.starts_with(SHARE_PREFIX) || secret.len() > 128 {
        return Ok(None);
    }
    Ok(sqlx::query_as(
        "select id as share_id, org_id, output_id, expires_at from share_link \
         where token_hash = $1 and revoked_at is null and (expires_at is null or expires_at > now())",
    )
    .bind(digest(secret))
    .fetch_optional(pool)
    .await?)
}
