//! Transitions owned by the reaper: expired leases back to `queued` (or `failed`, `cancelled`), and
//! re-dispatch of ready steps whose message was lost.

use crate::Result;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::*;

/// What one reaper pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Running steps whose lease expired and that were re-queued.
    pub requeued: u64,
    /// … that failed for good (no attempts left).
    pub failed: u64,
    /// … that were being cancelled.
    pub cancelled: u64,
    /// Ready queued steps whose dispatch message was lost and that were dispatched again.
    pub redispatched: u64,
    /// Queued GPU steps moved to the CPU queue by their organisation's fallback policy.
    pub moved_to_cpu: u64,
}

/// A reaped step: id, run, new state, the claim that lost its lease, queue and not-before.
type Expired = (Uuid, Uuid, String, Option<Uuid>, String, DateTime<Utc>);

/// Claims of one step whose lease may expire before it fails for good (the worker was killed or cut
/// off each time). Lost leases do not use up the step's `max_attempts`.
pub const MAX_LOST_LEASES: i32 = 10;

/// One pass of the reaper: expired leases mean the worker is gone. Safe to run from every process at
/// once (rows are locked with SKIP LOCKED). A step whose cancel was requested ends `cancelled`; one
/// that lost its lease [`MAX_LOST_LEASES`] times fails; any other is re-queued, without using up one
/// of its attempts.
pub async fn reap(pool: &PgPool) -> Result<Reaped> {
    let mut tx = pool.begin().await?;
    let expired: Vec<Expired> = sqlx::query_as(
        "with expired as (select id, claim_id from step where state = 'running' and lease_expires_at < now() \
                          for update skip locked) \
         update step s set \
             state = case when s.cancel_requested then 'cancelled' when s.lost_leases + 1 >= $1 then 'failed' else 'queued' end, \
             run_at = now() + least(s.backoff_base_ms::float8 * power(2, s.lost_leases), 600000) * interval '1 millisecond', \
             finished_at = case when s.cancel_requested or s.lost_leases + 1 >= $1 then now() else null end, \
             message = case when s.cancel_requested then 'cancelled' else s.message end, \
             lost_leases = s.lost_leases + 1, \
             error = case when s.lost_leases + 1 >= $1 \
                 then format('the step lost its worker %s times (each worker stopped answering before its lease expired)', $1) \
                 else 'the worker stopped answering (lease expired)' end, \
             errors = s.errors || jsonb_build_array(jsonb_build_object('attempt', s.attempt, 'error', 'lease expired', 'at', now())), \
             lease_owner = null, lease_expires_at = null \
         from expired where s.id = expired.id \
         returning s.id, s.run_id, s.state, expired.claim_id, s.queue, s.run_at",
    )
    .bind(MAX_LOST_LEASES)
    .fetch_all(&mut *tx)
    .await?;
    let mut report = Reaped::default();
    let mut requeue = Vec::new();
    let mut terminal = Vec::new();
    for (id, _, state, claim, queue, run_at) in &expired {
        sqlx::query(
            "update step_attempt set finished_at = now(), outcome = 'lost' where claim_id = $1",
        )
        .bind(claim)
        .execute(&mut *tx)
        .await?;
        match state.as_str() {
            "queued" => {
                report.requeued += 1;
                requeue.push((*id, queue.clone(), *run_at));
            }
            "failed" => {
                report.failed += 1;
                terminal.push(*id);
            }
            _ => {
                report.cancelled += 1;
                terminal.push(*id);
            }
        }
    }
    dispatch(&mut tx, &requeue).await?;
    cancel_downstream(&mut tx, &terminal).await?;
    let mut runs: Vec<Uuid> = expired.iter().map(|e| e.1).collect();
    runs.sort();
    runs.dedup();
    for run in runs {
        finish_run_if_done(&mut *tx, run).await?;
    }

    // Lost dispatches: ready and due for a while, with neither a message waiting to be fetched nor one
    // fetched lately. A message that a busy worker fetched in a batch and has not reached within 15 s
    // counts as lost, so an idle worker gets the step; the late claim of the old message finds nothing.
    let lost: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "select s.id, s.queue, now() from step s where s.state = 'queued' and not s.cancel_requested \
             and s.run_at < now() - interval '20 seconds' \
             and not exists (select 1 from pipeline_run r where r.id = s.run_id and r.awaiting_approval) \
             and not exists (select 1 from step_dependency d join step p on p.id = d.depends_on \
                             where d.step_id = s.id and p.state <> 'succeeded') \
             and not exists (select 1 from apalis.jobs j where j.id in (s.dispatch_id, s.own_dispatch_id) \
                             and (j.status = 'Pending' \
                                  or (j.status in ('Queued', 'Running') and j.lock_at > now() - interval '15 seconds'))) \
         for update of s skip locked",
    )
    .fetch_all(&mut *tx)
    .await?;
    report.redispatched = lost.len() as u64;
    dispatch(&mut tx, &lost).await?;

    // GPU steps of organisations that allow it move to the CPU queue once no GPU worker they may use
    // has been live for their fallback time (and the step has waited that long); the ready ones are
    // dispatched there.
    let moved: Vec<(Uuid, String, DateTime<Utc>, bool)> = sqlx::query_as(
        "with m as (select s.id from step s join pipeline_run r on r.id = s.run_id join org o on o.id = r.org_id \
                    where s.state = 'queued' and s.queue = 'gpu' and not s.cancel_requested \
                      and not r.awaiting_approval and o.cpu_fallback_after_secs is not null \
                      and s.created_at < now() - o.cpu_fallback_after_secs * interval '1 second' \
                      and not exists (select 1 from worker w, unnest(w.queues) as q \
                                      where q = 'gpu' and w.admin_state = 'active' and w.stopped_at is null \
                                        and w.last_heartbeat_at > now() - o.cpu_fallback_after_secs * interval '1 second' \
                                        and ((w.worker_token_id is null and o.installation_workers) \
                                             or (w.worker_token_id is not null and w.org_id = o.id))) \
                    for update of s skip locked) \
         update step s set queue = 'cpu', \
             message = 'moved to the CPU queue: no GPU worker was live for the organisation''s fallback time' \
         from m where s.id = m.id \
         returning s.id, s.queue, now(), \
             not exists (select 1 from step_dependency d join step p on p.id = d.depends_on \
                         where d.step_id = s.id and p.state <> 'succeeded')",
    )
    .fetch_all(&mut *tx)
    .await?;
    report.moved_to_cpu = moved.len() as u64;
    let ready: Vec<(Uuid, String, DateTime<Utc>)> = moved
        .into_iter()
        .filter(|m| m.3)
        .map(|(id, queue, at, _)| (id, queue, at))
        .collect();
    dispatch(&mut tx, &ready).await?;
    tx.commit().await?;

    // Runs whose last steps finished at the same moment may have been left open: close them.
    let open_runs: Vec<Uuid> = sqlx::query_scalar(
        "select r.id from pipeline_run r where r.state in ('queued', 'running') \
           and not exists (select 1 from step s where s.run_id = r.id and s.state in ('queued', 'running'))",
    )
    .fetch_all(pool)
    .await?;
    for run in open_runs {
        finish_run_if_done(pool, run).await?;
    }
    Ok(report)
}
