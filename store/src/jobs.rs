//! Pipeline runs and their steps: the state machine of DESIGN.md §4.
//!
//! States `queued → running → succeeded | failed | cancelled`; a failed attempt below `max_attempts`
//! returns to `queued` with exponential backoff. Each transition has one owner:
//! - **API**: create (queued), cancel (queued → cancelled, or flag a running step), retry (failed |
//!   cancelled → queued);
//! - **worker** holding the lease: claim (queued → running), heartbeat, complete / fail / cancelled;
//! - **reaper**: expired lease → queued (backoff) | failed | cancelled, and re-dispatch of lost messages.
//!
//! Dispatch: a step whose dependencies have all succeeded is pushed to apalis (`apalis.jobs`, job type =
//! queue name) in the same transaction that made it ready, so a committed ready step always has a message.
//! Messages are only hints: the claim re-checks the step row, so duplicated or stale messages are harmless.

use crate::{Error, Result};
use apalis::prelude::TaskBuilder;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// Upper bound on the retry backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The payload of an apalis dispatch message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dispatch {
    /// The step to run.
    pub step_id: Uuid,
}

/// A step to create in a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewStep {
    /// Unique name within the run (dependencies refer to it).
    pub name: String,
    /// Step kind (`sleep`, `fail`, `acquire`, …).
    pub kind: String,
    /// Kind-specific arguments.
    pub args: Value,
    /// Queue (`cpu` or `gpu`).
    pub queue: String,
    /// Attempts before the step fails for good.
    pub max_attempts: i32,
    /// First retry delay; doubles with each further attempt.
    pub backoff_base_ms: i32,
    /// Names of steps in the same run that must succeed first.
    pub depends_on: Vec<String>,
}

impl NewStep {
    /// A step with default retry settings (3 attempts, 5 s base backoff) and no dependencies.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        kind: impl Into<String>,
        args: Value,
        queue: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            args,
            queue: queue.into(),
            max_attempts: 3,
            backoff_base_ms: 5000,
            depends_on: Vec::new(),
        }
    }
}

/// A pipeline run.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Run {
    /// Id.
    pub id: Uuid,
    /// Owning organisation.
    pub org_id: Uuid,
    /// Project.
    pub project_id: Uuid,
    /// `queued | running | succeeded | failed | cancelled`.
    pub state: String,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When its first step started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its last step finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A step as users and admins see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Step {
    /// Id.
    pub id: Uuid,
    /// Run.
    pub run_id: Uuid,
    /// Name within the run.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Arguments.
    pub args: Value,
    /// Queue.
    pub queue: String,
    /// `queued | running | succeeded | failed | cancelled`.
    pub state: String,
    /// Attempts started so far.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Not before this time (backoff).
    pub run_at: DateTime<Utc>,
    /// Progress fraction 0–1 of the current attempt.
    pub progress: f32,
    /// Progress message.
    pub message: String,
    /// Worker holding the lease.
    pub lease_owner: Option<Uuid>,
    /// Lease expiry.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Last heartbeat.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// A cancel was requested while running.
    pub cancel_requested: bool,
    /// Last error.
    pub error: Option<String>,
    /// Errors of every failed attempt.
    pub errors: Value,
    /// Output committed with success.
    pub output: Option<Value>,
    /// Names of the steps this one waits for.
    #[sqlx(default)]
    pub depends_on: Vec<String>,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When first started.
    pub started_at: Option<DateTime<Utc>>,
    /// When finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A run with its steps.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunWithSteps {
    /// The run.
    #[serde(flatten)]
    pub run: Run,
    /// Its steps, in creation order.
    pub steps: Vec<Step>,
}

/// A step claimed by a worker: the lease is held until completion or expiry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// Step id.
    pub id: Uuid,
    /// Run id.
    pub run_id: Uuid,
    /// Kind.
    pub kind: String,
    /// Arguments.
    pub args: Value,
    /// This attempt's number (1-based).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The worker holding the lease.
    pub lease_owner: Uuid,
    /// Whether other steps wait for this one (their dispatch must commit with its success).
    pub has_dependents: bool,
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Keep going.
    Continue,
    /// A cancel was requested: stop and record `cancelled`.
    Cancel,
    /// The lease is gone (expired and taken over): stop and write nothing.
    LeaseLost,
}

/// A result a step commits together with its success.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    /// Unique per step.
    pub name: String,
    /// Where it lives (object-store key or URL), if anywhere.
    pub uri: Option<String>,
    /// Anything else.
    pub metadata: Value,
}

/// Backoff before attempt `attempt + 1`, after `attempt` failed ones.
#[must_use]
pub fn backoff(base_ms: i32, attempt: i32) -> Duration {
    let exp = u32::try_from(attempt.max(1) - 1).unwrap_or(0).min(20);
    let ms = u64::try_from(base_ms.max(0))
        .unwrap_or(0)
        .saturating_mul(1u64 << exp);
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

const STEP_FIELDS: &str = "s.id, s.run_id, s.name, s.kind, s.args, s.queue, s.state, s.attempt, s.max_attempts, \
    s.run_at, s.progress, s.message, s.lease_owner, s.lease_expires_at, s.heartbeat_at, s.cancel_requested, \
    s.error, s.errors, s.output, s.created_at, s.started_at, s.finished_at";

const STEP_COLUMNS: &str = "s.id, s.run_id, s.name, s.kind, s.args, s.queue, s.state, s.attempt, s.max_attempts, \
    s.run_at, s.progress, s.message, s.lease_owner, s.lease_expires_at, s.heartbeat_at, s.cancel_requested, \
    s.error, s.errors, s.output, s.created_at, s.started_at, s.finished_at, \
    coalesce((select array_agg(p.name order by p.name) from step_dependency d join step p on p.id = d.depends_on \
              where d.step_id = s.id), '{}') as depends_on";

/// Pushes dispatch messages for `steps` (id, queue, not-before) inside `tx` and records their ids.
async fn dispatch(
    tx: &mut Transaction<'_, Postgres>,
    steps: &[(Uuid, String, DateTime<Utc>)],
) -> Result<()> {
    if steps.is_empty() {
        return Ok(());
    }
    let mut by_queue: HashMap<&str, Vec<apalis_postgres::PgTask>> = HashMap::new();
    let mut ids = Vec::with_capacity(steps.len());
    let mut dispatch_ids = Vec::with_capacity(steps.len());
    for (step_id, queue, run_at) in steps {
        let dispatch_id = ulid::Ulid::generate().to_string();
        let payload = serde_json::to_vec(&Dispatch { step_id: *step_id })?;
        // apalis stores run_at in whole seconds; round up so a message never arrives before its step is due.
        let run_at_secs =
            u64::try_from(run_at.timestamp() + i64::from(run_at.timestamp_subsec_nanos() > 0))
                .unwrap_or(0);
        let task = TaskBuilder::new(payload)
            .task_id(dispatch_id.clone().into())
            .run_at_timestamp(run_at_secs)
            .max_attempts(1)
            .build();
        by_queue.entry(queue.as_str()).or_default().push(task);
        ids.push(*step_id);
        dispatch_ids.push(dispatch_id);
    }
    for (queue, tasks) in by_queue {
        apalis_postgres::queries::push_tasks(&mut **tx, queue, tasks)
            .await
            .map_err(|e| Error::Dispatch(e.to_string()))?;
    }
    sqlx::query("update step set dispatch_id = u.d from unnest($1::uuid[], $2::text[]) as u(i, d) where step.id = u.i")
        .bind(&ids)
        .bind(&dispatch_ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Creates a run with its step graph and dispatches the steps that have no dependencies, in one
/// transaction. With an idempotency key, a repeated call returns the run created first.
pub async fn create_run(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    steps: &[NewStep],
    idempotency_key: Option<&str>,
) -> Result<RunWithSteps> {
    let mut names = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        if names.insert(s.name.as_str(), i).is_some() {
            return Err(Error::Conflict(format!("duplicate step name {:?}", s.name)));
        }
    }
    for s in steps {
        for d in &s.depends_on {
            if !names.contains_key(d.as_str()) {
                return Err(Error::Conflict(format!(
                    "step {:?} depends on unknown step {d:?}",
                    s.name
                )));
            }
        }
    }
    check_acyclic(steps, &names)?;

    let mut tx = pool.begin().await?;
    if let Some(key) = idempotency_key {
        let existing: Option<Uuid> = sqlx::query_scalar(
            "select id from pipeline_run where project_id = $1 and idempotency_key = $2",
        )
        .bind(project_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = existing {
            tx.rollback().await?;
            return get_run(pool, org_id, id).await;
        }
    }
    let run_id = Uuid::now_v7();
    let inserted = sqlx::query(
        "insert into pipeline_run (id, org_id, project_id, idempotency_key) values ($1, $2, $3, $4) \
         on conflict on constraint pipeline_run_idempotency do nothing",
    )
    .bind(run_id)
    .bind(org_id)
    .bind(project_id)
    .bind(idempotency_key)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        // A concurrent request with the same key won the race.
        tx.rollback().await?;
        let id: Uuid = sqlx::query_scalar(
            "select id from pipeline_run where project_id = $1 and idempotency_key = $2",
        )
        .bind(project_id)
        .bind(idempotency_key)
        .fetch_one(pool)
        .await?;
        return get_run(pool, org_id, id).await;
    }

    let ids: Vec<Uuid> = steps.iter().map(|_| Uuid::now_v7()).collect();
    let now = Utc::now();
    sqlx::query(
        "insert into step (id, run_id, name, kind, args, queue, max_attempts, backoff_base_ms, run_at) \
         select u.id, $1, u.name, u.kind, u.args, u.queue, u.max_attempts, u.backoff, $8 \
         from unnest($2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::int[], $9::int[]) \
              as u(id, name, kind, args, queue, max_attempts, backoff)",
    )
    .bind(run_id)
    .bind(&ids)
    .bind(steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
    .bind(steps.iter().map(|s| s.kind.clone()).collect::<Vec<_>>())
    .bind(steps.iter().map(|s| s.args.clone()).collect::<Vec<_>>())
    .bind(steps.iter().map(|s| s.queue.clone()).collect::<Vec<_>>())
    .bind(steps.iter().map(|s| s.max_attempts.max(1)).collect::<Vec<_>>())
    .bind(now)
    .bind(steps.iter().map(|s| s.backoff_base_ms.max(0)).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;

    let mut dep_from = Vec::new();
    let mut dep_to = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        for d in &s.depends_on {
            dep_from.push(ids[i]);
            dep_to.push(ids[names[d.as_str()]]);
        }
    }
    if !dep_from.is_empty() {
        sqlx::query("insert into step_dependency (step_id, depends_on) select * from unnest($1::uuid[], $2::uuid[])")
            .bind(&dep_from)
            .bind(&dep_to)
            .execute(&mut *tx)
            .await?;
    }
    let ready: Vec<(Uuid, String, DateTime<Utc>)> = steps
        .iter()
        .zip(&ids)
        .filter(|(s, _)| s.depends_on.is_empty())
        .map(|(s, id)| (*id, s.queue.clone(), now))
        .collect();
    dispatch(&mut tx, &ready).await?;
    tx.commit().await?;
    get_run(pool, org_id, run_id).await
}

fn check_acyclic(steps: &[NewStep], names: &HashMap<&str, usize>) -> Result<()> {
    // Kahn's algorithm over name indices.
    let mut indegree = vec![0usize; steps.len()];
    let mut downstream = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        for d in &s.depends_on {
            indegree[i] += 1;
            downstream[names[d.as_str()]].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| indegree[i] == 0).collect();
    let mut seen = 0;
    while let Some(i) = ready.pop() {
        seen += 1;
        for &j in &downstream[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(j);
            }
        }
    }
    if seen == steps.len() {
        Ok(())
    } else {
        Err(Error::Conflict("the step dependencies form a cycle".into()))
    }
}

/// A run with its steps, if it belongs to `org_id`.
pub async fn get_run(pool: &PgPool, org_id: Uuid, run_id: Uuid) -> Result<RunWithSteps> {
    let run: Run = sqlx::query_as(
        "select id, org_id, project_id, state, created_at, started_at, finished_at from pipeline_run \
         where id = $1 and org_id = $2",
    )
    .bind(run_id)
    .bind(org_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound { what: "run", id: run_id })?;
    let mut steps: Vec<Step> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {STEP_FIELDS} from step s where s.run_id = $1 order by s.created_at, s.id"
    )))
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    // One join for all dependencies (a per-row subquery is quadratic on large fan-ins).
    let deps: Vec<(Uuid, String)> = sqlx::query_as(
        "select d.step_id, p.name from step_dependency d join step p on p.id = d.depends_on \
         where p.run_id = $1 order by p.name",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    let mut by_step: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (step, name) in deps {
        by_step.entry(step).or_default().push(name);
    }
    for step in &mut steps {
        step.depends_on = by_step.remove(&step.id).unwrap_or_default();
    }
    Ok(RunWithSteps { run, steps })
}

/// Runs of a project, newest first, after the cursor (a run id).
pub async fn list_runs(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Run>> {
    Ok(sqlx::query_as(
        "select id, org_id, project_id, state, created_at, started_at, finished_at from pipeline_run \
         where project_id = $1 and org_id = $2 and ($3::uuid is null or id < $3) order by id desc limit $4",
    )
    .bind(project_id)
    .bind(org_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// One step, if its run belongs to `org_id`.
pub async fn get_step(pool: &PgPool, org_id: Uuid, step_id: Uuid) -> Result<Step> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {STEP_COLUMNS} from step s join pipeline_run r on r.id = s.run_id where s.id = $1 and r.org_id = $2"
    )))
    .bind(step_id)
    .bind(org_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound { what: "step", id: step_id })
}

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
    // a message is only a hint, and the step row decides).
    Ok(sqlx::query_as(
        "with c as ( \
             update step set state = 'running', attempt = attempt + 1, lease_owner = $2, \
                 lease_expires_at = now() + $3 * interval '1 millisecond', heartbeat_at = now(), \
                 started_at = coalesce(started_at, now()), progress = 0, message = '' \
             where id = $1 and state = 'queued' and not cancel_requested and run_at <= now() + interval '1 second' \
               and not exists (select 1 from step_dependency d join step p on p.id = d.depends_on \
                               where d.step_id = step.id and p.state <> 'succeeded') \
             returning id, run_id, kind, args, attempt, max_attempts, lease_owner, \
                 exists (select 1 from step_dependency d where d.depends_on = step.id) as has_dependents), \
         a as (insert into step_attempt (step_id, attempt, worker_id) select id, attempt, lease_owner from c \
               on conflict (step_id, attempt) do update set worker_id = excluded.worker_id, started_at = now()), \
         r as (update pipeline_run set state = 'running', started_at = coalesce(started_at, now()) \
               where id = (select run_id from c) and state = 'queued'), \
         m as (update apalis.jobs set status = 'Done', done_at = now() where id = $4) \
         select * from c",
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

/// Gives a run its final state once none of its steps is queued or running.
async fn finish_run_if_done<'e>(exec: impl sqlx::PgExecutor<'e>, run_id: Uuid) -> Result<()> {
    sqlx::query(
        "update pipeline_run r set state = agg.state, finished_at = coalesce(r.finished_at, now()) \
         from (select case when bool_or(state = 'failed') then 'failed' \
                           when bool_or(state = 'cancelled') then 'cancelled' else 'succeeded' end as state \
               from step where run_id = $1) agg \
         where r.id = $1 and r.state is distinct from agg.state \
           and not exists (select 1 from step where run_id = $1 and state in ('queued', 'running'))",
    )
    .bind(run_id)
    .execute(exec)
    .await?;
    Ok(())
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

/// Cancels a step (API): a queued step is cancelled at once and never starts; a running step is
/// flagged and stops at its next heartbeat. Terminal steps are left as they are (409).
pub async fn request_cancel(pool: &PgPool, org_id: Uuid, step_id: Uuid) -> Result<Step> {
    let step = get_step(pool, org_id, step_id).await?;
    let mut tx = pool.begin().await?;
    let state: Option<String> = sqlx::query_scalar(
        "update step set \
             state = case when state = 'queued' then 'cancelled' else state end, \
             finished_at = case when state = 'queued' then now() else finished_at end, \
             cancel_requested = true \
         where id = $1 and state in ('queued', 'running') returning state",
    )
    .bind(step_id)
    .fetch_optional(&mut *tx)
    .await?;
    match state.as_deref() {
        None => {
            tx.rollback().await?;
            return Err(Error::Conflict(format!(
                "step {step_id} is already {}",
                step.state
            )));
        }
        Some("cancelled") => {
            cancel_downstream(&mut tx, &[step_id]).await?;
            finish_run_if_done(&mut *tx, step.run_id).await?;
        }
        Some(_) => {}
    }
    tx.commit().await?;
    get_step(pool, org_id, step_id).await
}

/// Retries a failed or cancelled step (API): it and the downstream steps its failure cancelled are
/// queued again with fresh attempts.
pub async fn retry(pool: &PgPool, org_id: Uuid, step_id: Uuid) -> Result<Step> {
    let step = get_step(pool, org_id, step_id).await?;
    let mut tx = pool.begin().await?;
    let requeued = sqlx::query(
        "update step set state = 'queued', attempt = 0, cancel_requested = false, cancelled_by_upstream = false, \
             error = null, finished_at = null, run_at = now(), progress = 0, message = '' \
         where id = $1 and state in ('failed', 'cancelled')",
    )
    .bind(step_id)
    .execute(&mut *tx)
    .await?;
    if requeued.rows_affected() == 0 {
        tx.rollback().await?;
        return Err(Error::Conflict(format!(
            "only failed or cancelled steps can be retried; step {step_id} is {}",
            step.state
        )));
    }
    sqlx::query(
        "with recursive down(id) as ( \
             select d.step_id from step_dependency d where d.depends_on = $1 \
             union select d.step_id from step_dependency d join down on d.depends_on = down.id) \
         update step set state = 'queued', attempt = 0, cancel_requested = false, cancelled_by_upstream = false, \
             error = null, finished_at = null, run_at = now(), progress = 0, message = '' \
         where id in (select id from down) and state = 'cancelled' and cancelled_by_upstream",
    )
    .bind(step_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update pipeline_run set state = 'running', finished_at = null where id = $1")
        .bind(step.run_id)
        .execute(&mut *tx)
        .await?;
    let ready: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "select s.id, s.queue, s.run_at from step s where s.id = $1 and not exists \
         (select 1 from step_dependency d join step p on p.id = d.depends_on where d.step_id = s.id and p.state <> 'succeeded')",
    )
    .bind(step_id)
    .fetch_all(&mut *tx)
    .await?;
    dispatch(&mut tx, &ready).await?;
    finish_run_if_done(&mut *tx, step.run_id).await?;
    tx.commit().await?;
    get_step(pool, org_id, step_id).await
}

/// Cancels every queued step downstream of `roots` (they can never run now).
async fn cancel_downstream(tx: &mut Transaction<'_, Postgres>, roots: &[Uuid]) -> Result<()> {
    sqlx::query(
        "with recursive down(id) as ( \
             select d.step_id from step_dependency d where d.depends_on = any($1) \
             union select d.step_id from step_dependency d join down on d.depends_on = down.id) \
         update step set state = 'cancelled', cancelled_by_upstream = true, finished_at = now(), \
             message = 'an upstream step failed or was cancelled' \
         where id in (select id from down) and state = 'queued'",
    )
    .bind(roots)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Dispatches the dependents of `done` whose dependencies have now all succeeded.
async fn dispatch_ready_dependents(
    tx: &mut Transaction<'_, Postgres>,
    done: &[Uuid],
) -> Result<()> {
    // Lock the dependents first: two upstream steps finishing at once then serialise here, and the
    // second one's readiness check (a new statement) sees the first one's commit.
    let dependents: Vec<Uuid> = sqlx::query_scalar(
        "select s.id from step s where s.id in (select step_id from step_dependency where depends_on = any($1)) \
             and s.state = 'queued' order by s.id for update of s",
    )
    .bind(done)
    .fetch_all(&mut **tx)
    .await?;
    if dependents.is_empty() {
        return Ok(());
    }
    let ready: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "select s.id, s.queue, s.run_at from step s where s.id = any($1) and s.state = 'queued' and not exists \
         (select 1 from step_dependency d join step p on p.id = d.depends_on where d.step_id = s.id and p.state <> 'succeeded')",
    )
    .bind(&dependents)
    .fetch_all(&mut **tx)
    .await?;
    dispatch(tx, &ready).await
}

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
}

/// One pass of the reaper: expired leases mean the worker is gone. Safe to run from every process at
/// once (rows are locked with SKIP LOCKED).
pub async fn reap(pool: &PgPool) -> Result<Reaped> {
    let mut tx = pool.begin().await?;
    let expired: Vec<(Uuid, Uuid, String, i32, String, DateTime<Utc>)> = sqlx::query_as(
        "with expired as (select id from step where state = 'running' and lease_expires_at < now() \
                          for update skip locked) \
         update step s set \
             state = case when s.cancel_requested then 'cancelled' when s.attempt >= s.max_attempts then 'failed' else 'queued' end, \
             run_at = now() + least(s.backoff_base_ms::float8 * power(2, greatest(s.attempt - 1, 0)), 600000) * interval '1 millisecond', \
             finished_at = case when s.cancel_requested or s.attempt >= s.max_attempts then now() else null end, \
             error = 'the worker stopped answering (lease expired)', \
             errors = s.errors || jsonb_build_array(jsonb_build_object('attempt', s.attempt, 'error', 'lease expired', 'at', now())), \
             lease_owner = null, lease_expires_at = null \
         from expired where s.id = expired.id \
         returning s.id, s.run_id, s.state, s.attempt, s.queue, s.run_at",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut report = Reaped::default();
    let mut requeue = Vec::new();
    let mut terminal = Vec::new();
    for (id, _, state, attempt, queue, run_at) in &expired {
        sqlx::query("update step_attempt set finished_at = now(), outcome = 'lost' where step_id = $1 and attempt = $2")
            .bind(id)
            .bind(attempt)
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
             and not exists (select 1 from step_dependency d join step p on p.id = d.depends_on \
                             where d.step_id = s.id and p.state <> 'succeeded') \
             and not exists (select 1 from apalis.jobs j where j.id = s.dispatch_id \
                             and (j.status = 'Pending' \
                                  or (j.status in ('Queued', 'Running') and j.lock_at > now() - interval '15 seconds'))) \
         for update of s skip locked",
    )
    .fetch_all(&mut *tx)
    .await?;
    report.redispatched = lost.len() as u64;
    dispatch(&mut tx, &lost).await?;
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

/// Counts of queued (due or not) steps per queue.
pub async fn queue_depths(pool: &PgPool) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "select queue, count(*) from step where state = 'queued' group by queue order by queue",
    )
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1000, 1), Duration::from_secs(1));
        assert_eq!(backoff(1000, 2), Duration::from_secs(2));
        assert_eq!(backoff(1000, 4), Duration::from_secs(8));
        assert_eq!(backoff(1000, 40), MAX_BACKOFF);
    }

    #[test]
    fn cycles_are_refused() {
        let mut a = NewStep::new("a", "sleep", Value::Null, "cpu");
        a.depends_on = vec!["b".into()];
        let mut b = NewStep::new("b", "sleep", Value::Null, "cpu");
        b.depends_on = vec!["a".into()];
        let steps = [a, b];
        let names = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        assert!(check_acyclic(&steps, &names).is_err());
    }
}
