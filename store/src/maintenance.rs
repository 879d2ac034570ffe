//! The database side of the server's maintenance tasks: the queue of object prefixes to delete, and
//! pruning of rows nobody needs any more (done dispatch messages, expired sessions and invitations).

use crate::Result;
use sqlx::PgPool;

/// A queued clean-up: every object under `prefix` goes.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Cleanup {
    /// Queue id.
    pub id: i64,
    /// Object-store prefix (`orgs/{org}/projects/{project}`).
    pub prefix: String,
}

/// Queues the deletion of every object under `prefix` (in the caller's transaction, so the rows and
/// the clean-up commit together).
pub async fn queue_cleanup<'e>(
    db: impl sqlx::PgExecutor<'e>,
    prefix: &str,
    reason: &str,
) -> Result<()> {
    sqlx::query("insert into object_cleanup (prefix, reason) values ($1, $2)")
        .bind(prefix)
        .bind(reason)
        .execute(db)
        .await?;
    Ok(())
}

/// Clean-ups not done yet, oldest first.
pub async fn pending_cleanups(pool: &PgPool, limit: i64) -> Result<Vec<Cleanup>> {
    Ok(sqlx::query_as(
        "select id, prefix from object_cleanup where done_at is null order by id limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Marks a clean-up done.
pub async fn cleanup_done(pool: &PgPool, id: i64) -> Result<()> {
    sqlx::query("update object_cleanup set done_at = now(), attempts = attempts + 1, last_error = null where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records a failed clean-up pass (it is tried again on the next one).
pub async fn cleanup_failed(pool: &PgPool, id: i64, error: &str) -> Result<()> {
    sqlx::query("update object_cleanup set attempts = attempts + 1, last_error = $2 where id = $1")
        .bind(id)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes dispatch messages that were done (claimed, or found stale) over a day ago, and clean-ups
/// done over thirty days ago. Returns the rows deleted.
pub async fn prune_dispatch(pool: &PgPool) -> Result<u64> {
    let jobs = sqlx::query(
        "delete from apalis.jobs where status = 'Done' and done_at < now() - interval '1 day'",
    )
    .execute(pool)
    .await?
    .rows_affected();
    let cleanups =
        sqlx::query("delete from object_cleanup where done_at < now() - interval '30 days'")
            .execute(pool)
            .await?
            .rows_affected();
    Ok(jobs + cleanups)
}

/// Deletes sessions that expired, invitations that expired unaccepted over a week ago, and sign-in
/// attempts older than a day. Returns the rows deleted.
pub async fn prune_accounts(pool: &PgPool) -> Result<u64> {
    let mut n = sqlx::query("delete from user_session where expires_at < now()")
        .execute(pool)
        .await?
        .rows_affected();
    n += sqlx::query(
        "delete from invitation where accepted_at is null and expires_at < now() - interval '7 days'",
    )
    .execute(pool)
    .await?
    .rows_affected();
    n += sqlx::query("delete from login_attempt where created_at < now() - interval '1 day'")
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n)
}
