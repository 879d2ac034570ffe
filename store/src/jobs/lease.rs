//! Transitions owned by the worker holding a step's lease: claim, heartbeat, complete, fail, cancelled.
//! Each is conditional on the lease (owner and attempt), so a worker that lost it changes nothing.

use crate::Result;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;
use uuid::Uuid;

use super::*;

/// Takes the lease on a queued, due step whose dependencies have succeeded. `None` when the message
/// was stale (the step was claimed, cancelled or is not due).
pub async fn claim(
    pool: &PgPool,
    step_id: Uuid,
    worker_id: Uuid,
    lease: Duration,
    message: Option<&str>,
) -> Result<Option<Claimed>> {
    // One statement (atomic on its own): take the lease, open the attempt record, mark the run started,
    // and retire the dispatch message that brought the worker here (whether or not the claim succeeds:
    // a message is only a hint, and the step row decides), and with a claim also its sibling in the
    // other pool's queue (see `dispatch`).
    Ok(sqlx::query_as(
        "with c as ( \
             update step set state = 'running', attempt = attempt + 1, lease_owner = $2, \
                 lease_expires_at = now() + $3 * interval '1 millisecond', heartbeat_at = now(), \
                 started_at = coalesce(started_at, now()), progress = 0, message = '' \
             where id = $1 and state = 'queued' and not cancel_requested and run_at <= now() + interval '1 second' \
               and not exists (select 1 from step_dependency d join step p on p.id = d.depends_on \
                               where d.step_id = step.id and p.state <> 'succeeded') \
             returning id, run_id, kind, args, attempt, max_attempts, lease_owner, dispatch_id, own_dispatch_id, \
                 exists (select 1 from step_dependency d where d.depends_on = step.id) as has_dependents), \
         a as (insert into step_attempt (step_id, attempt, worker_id) select id, attempt, lease_owner from c \
               on conflict (step_id, attempt) do update set worker_id = excluded.worker_id, started_at = now()), \
         r as (update pipeline_run set state = 'running', started_at = coalesce(started_at, now()) \
               where id = (select run_id from c) and state = 'queued'), \
         m as (update apalis.jobs set status = 'Done', done_at = now() \
               where id = $4 or id in (select dispatch_id from c union all select own_dispatch_id from c)) \
         select c.*, pr.project_id, pr.org_id from c join pipeline_run pr on pr.id = c.run_id",
    )
    .bind(step_id)
    .bind(worker_id)
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .bind(message)
    .fetch_optional(pool)
    .await?)
}

/// Extends the lease and records progress. Tells the worker whether to go on.
pub async fn heartbeat(
    pool: &PgPool,
    claimed: &Claimed,
    lease: Duration,
    progress: f32,
    message: &str,
) -> Result<Beat> {
    let row: Option<bool> = sqlx::query_scalar(
        "update step set lease_expires_at = now() + $3 * interval '1 millisecond', heartbeat_at = now(), \
             progress = $4, message = $5 \
         where id = $1 and lease_owner = $2 and attempt = $6 and state = 'running' \
         returning cancel_requested",
    )
    .bind(claimed.id)
    .bind(claimed.lease_owner)
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .bind(progress.clamp(0.0, 1.0))
    .bind(message)
    .bind(claimed.attempt)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Beat::LeaseLost,
        Some(true) => Beat::Cancel,
        Some(false) => Beat::Continue,
    })
}

/// Commits success: output, artifacts and the state change in one transaction, only while the lease is
/// still ours. Dispatches dependents that became ready. Returns false when the lease was lost (nothing
/// is written).
pub async fn complete(
    pool: &PgPool,
    claimed: &Claimed,
    output: &Value,
    artifacts: &[Artifact],
) -> Result<bool> {
    const SUCCEED: &str = "with c as ( \
             update step set state = 'succeeded', output = $4, progress = 1, lease_owner = null, \
                 lease_expires_at = null, finished_at = now(), error = null \
             where id = $1 and lease_owner = $2 and attempt = $3 and state = 'running' returning id, run_id), \
         a as (update step_attempt set finished_at = now(), outcome = 'succeeded' \
               where step_id = (select id from c) and attempt = $3), \
         f as (insert into step_artifact (step_id, name, attempt, uri, metadata) \
               select c.id, u.name, $3, u.uri, u.metadata from c, unnest($5::text[], $6::text[], $7::jsonb[]) as u(name, uri, metadata) \
               on conflict (step_id, name) do update set attempt = excluded.attempt, uri = excluded.uri, \
                   metadata = excluded.metadata, created_at = now()) \
         select (select count(*) from (select 1 from step o where o.run_id = c.run_id and o.id <> c.id \
                                       and o.state in ('queued', 'running') limit 65) x) from c";
    let query = sqlx::query_scalar::<_, i64>(SUCCEED)
        .bind(claimed.id)
        .bind(claimed.lease_owner)
        .bind(claimed.attempt)
        .bind(output)
        .bind(artifacts.iter().map(|a| a.name.clone()).collect::<Vec<_>>())
        .bind(artifacts.iter().map(|a| a.uri.clone()).collect::<Vec<_>>())
        .bind(
            artifacts
                .iter()
                .map(|a| a.metadata.clone())
                .collect::<Vec<_>>(),
        );
    let others_open = if claimed.has_dependents {
        // Dependents' dispatch commits with this success.
        let mut tx = pool.begin().await?;
        let Some(open) = query.fetch_optional(&mut *tx).await? else {
            tx.rollback().await?;
            return Ok(false);
        };
        dispatch_ready_dependents(&mut tx, &[claimed.id]).await?;
        tx.commit().await?;
        open
    } else {
        // A single statement is atomic on its own.
        match query.fetch_optional(pool).await? {
            Some(open) => open,
            None => return Ok(false),
        }
    };
    // Near the end of a run, check again after our commit: of steps finishing at once, the last to
    // commit then sees all the others and closes the run (the reaper is the safety net).
    if others_open <= 64 {
        finish_run_if_done(pool, claimed.run_id).await?;
    }
    Ok(true)
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Re-queued; runs again after the backoff.
    Retrying(Duration),
    /// No attempts left (or not retryable): failed for good.
    Failed,
    /// The lease was lost; nothing was recorded.
    LeaseLost,
}

/// Records a failed attempt: back to `queued` with backoff, or `failed` when attempts are used up or
/// the error is permanent (downstream steps are then cancelled).
pub async fn fail(
    pool: &PgPool,
    claimed: &Claimed,
    error: &str,
    retryable: bool,
) -> Result<FailOutcome> {
    let mut tx = pool.begin().await?;
    let row: Option<(String, i32, i32, String, DateTime<Utc>)> = sqlx::query_as(
        "update step set \
             state = case when $5 and attempt < max_attempts then 'queued' else 'failed' end, \
             run_at = case when $5 and attempt < max_attempts \
                 then now() + least(backoff_base_ms::float8 * power(2, greatest(attempt - 1, 0)), 600000) * interval '1 millisecond' \
                 else run_at end, \
             finished_at = case when $5 and attempt < max_attempts then null else now() end, \
             lease_owner = null, lease_expires_at = null, error = $4, \
             errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'error', $4, 'at', now())) \
         where id = $1 and lease_owner = $2 and attempt = $3 and state = 'running' \
         returning state, attempt, backoff_base_ms, queue, run_at",
    )
    .bind(claimed.id)
    .bind(claimed.lease_owner)
    .bind(claimed.attempt)
    .bind(error)
    .bind(retryable)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((state, attempt, base, queue, run_at)) = row else {
        tx.rollback().await?;
        return Ok(FailOutcome::LeaseLost);
    };
    finish_attempt(&mut tx, claimed, "failed").await?;
    let outcome = if state == "queued" {
        dispatch(&mut tx, &[(claimed.id, queue, run_at)]).await?;
        FailOutcome::Retrying(backoff(base, attempt))
    } else {
        cancel_downstream(&mut tx, &[claimed.id]).await?;
        FailOutcome::Failed
    };
    finish_run_if_done(&mut *tx, claimed.run_id).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Records that a running step stopped because a cancel was requested.
pub async fn mark_cancelled(pool: &PgPool, claimed: &Claimed) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "update step set state = 'cancelled', lease_owner = null, lease_expires_at = null, finished_at = now(), \
             message = 'cancelled' \
         where id = $1 and lease_owner = $2 and attempt = $3 and state = 'running'",
    )
    .bind(claimed.id)
    .bind(claimed.lease_owner)
    .bind(claimed.attempt)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    finish_attempt(&mut tx, claimed, "cancelled").await?;
    cancel_downstream(&mut tx, &[claimed.id]).await?;
    finish_run_if_done(&mut *tx, claimed.run_id).await?;
    tx.commit().await?;
    Ok(true)
}

async fn finish_attempt(
    tx: &mut Transaction<'_, Postgres>,
    claimed: &Claimed,
    outcome: &str,
) -> Result<()> {
    sqlx::query("update step_attempt set finished_at = now(), outcome = $3 where step_id = $1 and attempt = $2")
        .bind(claimed.id)
        .bind(claimed.attempt)
        .bind(outcome)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
