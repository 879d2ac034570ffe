//! Transitions owned by the worker holding a step's lease: claim, heartbeat, complete, fail, cancelled.
//! Each is conditional on the claim's fencing token (`step.claim_id`, fresh for every claim), so an
//! execution that lost its lease changes nothing, even on the same worker after a retry. A step's own
//! output rows are written in a [`fenced`] transaction, which holds the same condition.

use crate::Result;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;
use uuid::Uuid;

use super::*;

/// Takes the lease on a queued, due step whose dependencies have succeeded, while its organisation runs
/// fewer steps than its `max_running_steps`. `None` when the message was stale (the step was claimed,
/// cancelled or is not due) or the organisation is at its limit (the step is dispatched again when one
/// of the organisation's running steps ends, see [`dispatch_held_back`], and by the reaper's
/// lost-dispatch sweep).
///
/// The limit is hard: claims of a limited organisation take a transaction-scoped advisory lock on it
/// first, so two claims at the same instant count each other's running steps.
pub async fn claim(
    pool: &PgPool,
    step_id: Uuid,
    worker_id: Uuid,
    lease: Duration,
    message: Option<&str>,
) -> Result<Option<Claimed>> {
    let mut tx = pool.begin().await?;
    // Locks only when the step's organisation has a running-steps limit; the claim below is a new
    // statement, so it sees the steps claimed by whoever held the lock before.
    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended('running-steps:' || o.id::text, 0)) \
         from step s join pipeline_run r on r.id = s.run_id join org o on o.id = r.org_id \
         where s.id = $1 and s.state = 'queued' and o.max_running_steps is not null",
    )
    .bind(step_id)
    .execute(&mut *tx)
    .await?;
    // One statement: take the lease, open the attempt record, mark the run started, and retire the
    // dispatch message that brought the worker here (whether or not the claim succeeds: a message is
    // only a hint, and the step row decides), and with a claim also its sibling in the other pool's
    // queue (see `dispatch`).
    let claimed = sqlx::query_as(
        "with c as ( \
             update step set state = 'running', attempt = attempt + 1, lease_owner = $2, claim_id = $5, \
                 lease_expires_at = now() + $3 * interval '1 millisecond', heartbeat_at = now(), \
                 started_at = coalesce(started_at, now()), progress = 0, message = '' \
             where id = $1 and state = 'queued' and not cancel_requested and run_at <= now() + interval '1 second' \
               and not exists (select 1 from step_dependency d join step p on p.id = d.depends_on \
                               where d.step_id = step.id and p.state <> 'succeeded') \
               and not (select r.awaiting_approval from pipeline_run r where r.id = step.run_id) \
               and (jsonb_typeof(step.needs->'memory_mib') is distinct from 'number' \
                    or coalesce((select worker_memory_mib(w.capabilities) from worker w where w.id = $2), 'infinity') \
                       >= (step.needs->>'memory_mib')::float8) \
               and (select o.max_running_steps is null \
                           or (select count(*) from step s2 join pipeline_run r2 on r2.id = s2.run_id \
                               where r2.org_id = o.id and s2.state = 'running') < o.max_running_steps \
                    from pipeline_run r join org o on o.id = r.org_id where r.id = step.run_id) \
             returning id, run_id, kind, args, attempt, max_attempts, lease_owner, claim_id, dispatch_id, own_dispatch_id, \
                 exists (select 1 from step_dependency d where d.depends_on = step.id) as has_dependents), \
         a as (insert into step_attempt (claim_id, step_id, attempt, worker_id, device_kind, installation) \
               select c.claim_id, c.id, c.attempt, c.lease_owner, coalesce(wk.device_kind, 'cpu'), coalesce(wk.installation, true) \
               from c left join (select w.id, worker_device_kind(w.capabilities) as device_kind, \
                                        w.worker_token_id is null as installation from worker w) wk on wk.id = c.lease_owner), \
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
    .bind(Uuid::now_v7())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// [`dispatch_held_back`] after a transition has committed: a failure only delays the held-back steps
/// until the reaper's sweep, so it is logged, not returned.
async fn held_back_hint(pool: &PgPool, org_id: Uuid) {
    if let Err(e) = dispatch_held_back(pool, org_id).await {
        tracing::warn!(org = %org_id, error = %e, "could not dispatch held-back steps");
    }
}

/// Dispatches again the steps of `org_id` that a claim refused because the organisation was at its
/// running-steps limit (queued, ready and due, with no message waiting for them), as many as it now
/// has free slots. Called when one of its running steps ends, so a held-back step does not wait for
/// the reaper's sweep. Nothing for an organisation without a limit.
pub async fn dispatch_held_back(pool: &PgPool, org_id: Uuid) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let held: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "select s.id, s.queue, now() from step s join pipeline_run r on r.id = s.run_id join org o on o.id = r.org_id \
         where r.org_id = $1 and o.max_running_steps is not null \
           and s.state = 'queued' and not s.cancel_requested and s.run_at <= now() and not r.awaiting_approval \
           and not exists (select 1 from step_dependency d join step p on p.id = d.depends_on \
                           where d.step_id = s.id and p.state <> 'succeeded') \
           and not exists (select 1 from apalis.jobs j where j.id in (s.dispatch_id, s.own_dispatch_id) \
                           and j.status in ('Pending', 'Queued', 'Running')) \
         order by s.run_at, s.id \
         limit greatest((select o2.max_running_steps - (select count(*) from step s2 join pipeline_run r2 on r2.id = s2.run_id \
                                                          where r2.org_id = $1 and s2.state = 'running') \
                         from org o2 where o2.id = $1), 0) \
         for update of s skip locked",
    )
    .bind(org_id)
    .fetch_all(&mut *tx)
    .await?;
    let n = held.len() as u64;
    dispatch(&mut tx, &held).await?;
    tx.commit().await?;
    Ok(n)
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
         where id = $1 and claim_id = $2 and state = 'running' \
         returning cancel_requested",
    )
    .bind(claimed.id)
    .bind(claimed.claim_id)
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .bind(progress.clamp(0.0, 1.0))
    .bind(message)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Beat::LeaseLost,
        Some(true) => Beat::Cancel,
        Some(false) => Beat::Continue,
    })
}

/// What became of a step body's success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Completion {
    /// Committed: output, artifacts and `succeeded`.
    Succeeded,
    /// A cancel had been requested meanwhile: the result is discarded and the step is `cancelled`
    /// (cancel wins), its downstream steps too.
    Cancelled,
    /// The lease was lost; nothing was written.
    LeaseLost,
}

/// Commits success: output, artifacts and the state change in one transaction, only while the lease is
/// still ours and no cancel was requested. Dispatches dependents that became ready.
pub async fn complete(
    pool: &PgPool,
    claimed: &Claimed,
    output: &Value,
    artifacts: &[Artifact],
) -> Result<Completion> {
    complete_with_message(pool, claimed, output, artifacts, None).await
}

/// [`complete`], and the step's message becomes `message` (the body's last word, e.g. "20 points to
/// label next"), so a succeeded step never shows a progress line a heartbeat left behind.
pub async fn complete_with_message(
    pool: &PgPool,
    claimed: &Claimed,
    output: &Value,
    artifacts: &[Artifact],
    message: Option<&str>,
) -> Result<Completion> {
    const SUCCEED: &str = "with c as ( \
             update step set state = 'succeeded', output = $4, progress = 1, lease_owner = null, \
                 message = coalesce($8, message), \
                 lease_expires_at = null, finished_at = now(), error = null \
             where id = $1 and claim_id = $2 and state = 'running' and not cancel_requested returning id, run_id), \
         a as (update step_attempt set finished_at = now(), outcome = 'succeeded' \
               where claim_id = $2 and exists (select 1 from c)), \
         f as (insert into step_artifact (step_id, name, attempt, uri, metadata) \
               select c.id, u.name, $3, u.uri, u.metadata from c, unnest($5::text[], $6::text[], $7::jsonb[]) as u(name, uri, metadata) \
               on conflict (step_id, name) do update set attempt = excluded.attempt, uri = excluded.uri, \
                   metadata = excluded.metadata, created_at = now()) \
         select (select count(*) from (select 1 from step o where o.run_id = c.run_id and o.id <> c.id \
                                       and o.state in ('queued', 'running') limit 65) x) from c";
    let query = sqlx::query_scalar::<_, i64>(SUCCEED)
        .bind(claimed.id)
        .bind(claimed.claim_id)
        .bind(claimed.attempt)
        .bind(output)
        .bind(artifacts.iter().map(|a| a.name.clone()).collect::<Vec<_>>())
        .bind(artifacts.iter().map(|a| a.uri.clone()).collect::<Vec<_>>())
        .bind(
            artifacts
                .iter()
                .map(|a| a.metadata.clone())
                .collect::<Vec<_>>(),
        )
        .bind(message.filter(|m| !m.is_empty()));
    let others_open = if claimed.has_dependents {
        // Dependents' dispatch commits with this success.
        let mut tx = pool.begin().await?;
        let Some(open) = query.fetch_optional(&mut *tx).await? else {
            tx.rollback().await?;
            return not_completed(pool, claimed).await;
        };
        dispatch_ready_dependents(&mut tx, &[claimed.id]).await?;
        tx.commit().await?;
        open
    } else {
        // A single statement is atomic on its own.
        match query.fetch_optional(pool).await? {
            Some(open) => open,
            None => return not_completed(pool, claimed).await,
        }
    };
    // Near the end of a run, check again after our commit: of steps finishing at once, the last to
    // commit then sees all the others and closes the run (the reaper is the safety net).
    if others_open <= 64 {
        finish_run_if_done(pool, claimed.run_id).await?;
    }
    held_back_hint(pool, claimed.org_id).await;
    // What the attempt cost teaches the estimates; a failure here costs only an estimate's precision.
    if let Err(e) = crate::usage::learn_rate(pool, claimed.claim_id).await {
        tracing::warn!(step = %claimed.id, error = %e, "could not learn the step's device rate");
    }
    Ok(Completion::Succeeded)
}

/// Why `complete` wrote nothing: a requested cancel (then recorded) or a lost lease.
async fn not_completed(pool: &PgPool, claimed: &Claimed) -> Result<Completion> {
    Ok(if mark_cancelled(pool, claimed).await? {
        Completion::Cancelled
    } else {
        Completion::LeaseLost
    })
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailOutcome {
    /// Re-queued; runs again after the backoff.
    Retrying(Duration),
    /// No attempts left (or not retryable): failed for good.
    Failed,
    /// A cancel had been requested: the step is `cancelled`, whatever the error (cancel wins).
    Cancelled,
    /// The lease was lost; nothing was recorded.
    LeaseLost,
}

/// Records a failed attempt: back to `queued` with backoff, or `failed` when attempts are used up or
/// the error is permanent (downstream steps are then cancelled). A step whose cancel was requested
/// ends `cancelled` instead, even when the error was retryable. Attempts used are counted without the
/// claims whose lease was lost (`attempt - lost_leases`).
pub async fn fail(
    pool: &PgPool,
    claimed: &Claimed,
    error: &str,
    retryable: bool,
) -> Result<FailOutcome> {
    let mut tx = pool.begin().await?;
    let row: Option<(String, i32, i32, String, DateTime<Utc>)> = sqlx::query_as(
        "update step set \
             state = case when cancel_requested then 'cancelled' \
                          when $4 and attempt - lost_leases < max_attempts then 'queued' else 'failed' end, \
             run_at = case when not cancel_requested and $4 and attempt - lost_leases < max_attempts \
                 then now() + least(backoff_base_ms::float8 * power(2, greatest(attempt - lost_leases - 1, 0)), 600000) \
                      * interval '1 millisecond' \
                 else run_at end, \
             finished_at = case when not cancel_requested and $4 and attempt - lost_leases < max_attempts \
                 then null else now() end, \
             message = case when cancel_requested then 'cancelled' else message end, \
             lease_owner = null, lease_expires_at = null, error = $3, \
             errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'error', $3, 'at', now())) \
         where id = $1 and claim_id = $2 and state = 'running' \
         returning state, attempt - lost_leases, backoff_base_ms, queue, run_at",
    )
    .bind(claimed.id)
    .bind(claimed.claim_id)
    .bind(error)
    .bind(retryable)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((state, attempt, base, queue, run_at)) = row else {
        tx.rollback().await?;
        return Ok(FailOutcome::LeaseLost);
    };
    let outcome = match state.as_str() {
        "queued" => {
            finish_attempt(&mut tx, claimed, "failed").await?;
            dispatch(&mut tx, &[(claimed.id, queue, run_at)]).await?;
            FailOutcome::Retrying(backoff(base, attempt))
        }
        "cancelled" => {
            finish_attempt(&mut tx, claimed, "cancelled").await?;
            cancel_downstream(&mut tx, &[claimed.id]).await?;
            FailOutcome::Cancelled
        }
        _ => {
            finish_attempt(&mut tx, claimed, "failed").await?;
            cancel_downstream(&mut tx, &[claimed.id]).await?;
            FailOutcome::Failed
        }
    };
    finish_run_if_done(&mut *tx, claimed.run_id).await?;
    tx.commit().await?;
    held_back_hint(pool, claimed.org_id).await;
    Ok(outcome)
}

/// Records that a running step stopped because a cancel was requested.
pub async fn mark_cancelled(pool: &PgPool, claimed: &Claimed) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "update step set state = 'cancelled', lease_owner = null, lease_expires_at = null, finished_at = now(), \
             message = 'cancelled' \
         where id = $1 and claim_id = $2 and state = 'running'",
    )
    .bind(claimed.id)
    .bind(claimed.claim_id)
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
    held_back_hint(pool, claimed.org_id).await;
    Ok(true)
}

/// Opens a transaction in which a step writes its own output rows (window outcomes, epoch metrics,
/// evaluations, output records), fenced by its claim: the step's row is locked while it is still
/// `running` under `claim_id`, so the writes commit only while this execution holds the lease, and a
/// claim or reap waits for them. [`crate::Error::LeaseLost`] when another execution holds it now (or
/// none does).
pub async fn fenced(
    pool: &PgPool,
    step_id: Uuid,
    claim_id: Uuid,
) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    let held: Option<i32> = sqlx::query_scalar(
        "select 1 from step where id = $1 and claim_id = $2 and state = 'running' for update",
    )
    .bind(step_id)
    .bind(claim_id)
    .fetch_optional(&mut *tx)
    .await?;
    if held.is_none() {
        tx.rollback().await?;
        return Err(crate::Error::LeaseLost);
    }
    Ok(tx)
}

async fn finish_attempt(
    tx: &mut Transaction<'_, Postgres>,
    claimed: &Claimed,
    outcome: &str,
) -> Result<()> {
    sqlx::query("update step_attempt set finished_at = now(), outcome = $2 where claim_id = $1")
        .bind(claimed.claim_id)
        .bind(outcome)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Claims the next ready step for a worker that joined with a worker token (the worker API's long
/// poll): a queued, due step of the worker's organisation on one of its queues, oldest first, taken
/// with [`claim`] (so every condition of a claim holds, and its dispatch messages are retired). `None`
/// when nothing is ready or every candidate was taken by another worker first.
pub async fn claim_next(
    pool: &PgPool,
    worker_id: Uuid,
    lease: Duration,
) -> Result<Option<Claimed>> {
    let candidates: Vec<Uuid> = sqlx::query_scalar(
        "select s.id from step s join pipeline_run r on r.id = s.run_id join worker w on w.id = $1 \
         where w.worker_token_id is not null and r.org_id = w.org_id and s.queue = any(w.queues) \
           and s.state = 'queued' and not s.cancel_requested and s.run_at <= now() and not r.awaiting_approval \
           and not exists (select 1 from step_dependency d join step p on p.id = d.depends_on \
                           where d.step_id = s.id and p.state <> 'succeeded') \
         order by s.run_at, s.id limit 8",
    )
    .bind(worker_id)
    .fetch_all(pool)
    .await?;
    for step_id in candidates {
        if let Some(c) = claim(pool, step_id, worker_id, lease, None).await? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// The claim `claim_id` of step `step_id` as its holder `worker_id` knows it, whatever the step's
/// state now (the lease functions decide what a late call may still do); `None` when that worker
/// never held that claim.
pub async fn claimed_by(
    pool: &PgPool,
    step_id: Uuid,
    claim_id: Uuid,
    worker_id: Uuid,
) -> Result<Option<Claimed>> {
    Ok(sqlx::query_as(
        "select s.id, s.run_id, s.kind, s.args, a.attempt, s.max_attempts, a.worker_id as lease_owner, a.claim_id, \
             exists (select 1 from step_dependency d where d.depends_on = s.id) as has_dependents, \
             r.project_id, r.org_id \
         from step_attempt a join step s on s.id = a.step_id join pipeline_run r on r.id = s.run_id \
         where a.step_id = $1 and a.claim_id = $2 and a.worker_id = $3",
    )
    .bind(step_id)
    .bind(claim_id)
    .bind(worker_id)
    .fetch_optional(pool)
    .await?)
}

/// Whether claim `claim_id` holds the lease of step `step_id` now.
pub async fn holds_lease(pool: &PgPool, step_id: Uuid, claim_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from step where id = $1 and claim_id = $2 and state = 'running')",
    )
    .bind(step_id)
    .bind(claim_id)
    .fetch_one(pool)
    .await?)
}

/// After worker `worker_id` was refused step `step_id` because its model device has less memory
/// than the step needs (see [`claim`]), dispatches the step again with a 2-second delay, so a larger
/// worker of the queue takes it without waiting for the reaper's lost-dispatch sweep (a refused
/// claim retires the message that brought it). `false`, and nothing done, when the step was not
/// refused for memory (taken, cancelled, not ready, or still holding a live message), or when no
/// live worker of its queue has the memory (the step then waits for the sweep, instead of being
/// offered to the same small workers every 2 s).
pub async fn redispatch_refused(pool: &PgPool, step_id: Uuid, worker_id: Uuid) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "select s.id, s.queue, now() + interval '2 seconds' from step s join pipeline_run r on r.id = s.run_id \
         where s.id = $1 and s.state = 'queued' and not s.cancel_requested and s.run_at <= now() \
           and not r.awaiting_approval \
           and jsonb_typeof(s.needs->'memory_mib') = 'number' \
           and coalesce((select worker_memory_mib(w.capabilities) from worker w where w.id = $2), 'infinity') \
               < (s.needs->>'memory_mib')::float8 \
           and not exists (select 1 from step_dependency d join step p on p.id = d.depends_on \
                           where d.step_id = s.id and p.state <> 'succeeded') \
           and not exists (select 1 from apalis.jobs j where j.id in (s.dispatch_id, s.own_dispatch_id) \
                           and j.status in ('Pending', 'Queued', 'Running')) \
           and exists (select 1 from worker w2 where w2.stopped_at is null and w2.admin_state = 'active' \
                       and w2.last_heartbeat_at > now() - interval '30 seconds' and s.queue = any(w2.queues) \
                       and coalesce(worker_memory_mib(w2.capabilities), 'infinity') >= (s.needs->>'memory_mib')::float8) \
         for update of s skip locked",
    )
    .bind(step_id)
    .bind(worker_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        tx.rollback().await?;
        return Ok(false);
    };
    dispatch(&mut tx, &[row]).await?;
    tx.commit().await?;
    Ok(true)
}
