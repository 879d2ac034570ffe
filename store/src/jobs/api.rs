//! Transitions and queries owned by the API: create a run, cancel, retry, and what users read.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

use super::*;

/// Steps an organisation may have queued at once unless `org.max_queued_steps` says otherwise.
pub const DEFAULT_MAX_QUEUED_STEPS: i64 = 100_000;

/// Creates a run with its step graph and dispatches the steps that have no dependencies, in one
/// transaction. With an idempotency key, a repeated call returns the run created first. A run with an
/// `acquire` step is refused ([`Error::Conflict`], naming the open run) while another acquisition of
/// the project is queued or running; a run that would take the organisation past its limit on queued
/// steps, with [`Error::LimitReached`].
pub async fn create_run(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    steps: &[NewStep],
    idempotency_key: Option<&str>,
) -> Result<RunWithSteps> {
    create_run_with(
        pool,
        org_id,
        project_id,
        steps,
        idempotency_key,
        &RunExtras::default(),
    )
    .await
}

/// What a run may carry beyond its steps.
#[derive(Debug, Clone, Default)]
pub struct RunExtras {
    /// The device-time estimate it was started with.
    pub estimate: Option<Value>,
    /// Held until an installation administrator approves it ([`approve_run`]): its steps are
    /// created but not dispatched, and no worker claims them.
    pub awaiting_approval: bool,
    /// The device-time quota the run must fit in, checked again under the organisation's lock so that
    /// concurrent runs cannot each fit what only one of them may spend.
    pub quota: Option<QuotaCheck>,
}

/// A run's claim on its organisation's monthly device-time quota of one device kind.
#[derive(Debug, Clone)]
pub struct QuotaCheck {
    /// The device kind its steps go to.
    pub device_kind: groundwork_types::DeviceKind,
    /// The organisation's monthly quota of that kind, in hours.
    pub quota_hours: f64,
    /// The hours of it used this month.
    pub used_hours: f64,
    /// The run's estimate, in hours.
    pub device_hours: f64,
    /// Over the quota, hold the run for an administrator's approval instead of refusing it
    /// ([`Error::QuotaExceeded`]).
    pub request_approval: bool,
}

/// [`create_run`] with an estimate, and held for approval when `extras` says so.
pub async fn create_run_with(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    steps: &[NewStep],
    idempotency_key: Option<&str>,
    extras: &RunExtras,
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
    // The organisation's limit on queued steps (checked under a per-organisation lock, so concurrent
    // runs cannot both pass it).
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('queued:' || $1::text, 0))")
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
    let (limit, queued): (i64, i64) = sqlx::query_as(
        "select coalesce(o.max_queued_steps, $2)::int8, \
             (select count(*) from step s join pipeline_run r on r.id = s.run_id \
              where r.org_id = o.id and s.state = 'queued') \
         from org o where o.id = $1",
    )
    .bind(org_id)
    .bind(DEFAULT_MAX_QUEUED_STEPS)
    .fetch_optional(&mut *tx)
    .await?
    .unwrap_or((DEFAULT_MAX_QUEUED_STEPS, 0));
    let adding = i64::try_from(steps.len()).unwrap_or(i64::MAX);
    if queued.saturating_add(adding) > limit {
        tx.rollback().await?;
        return Err(Error::LimitReached(format!(
            "the organisation has {queued} queued step(s) and this run adds {adding}; its limit is {limit} \
             queued steps: wait for queued work to finish, or ask the installation's administrators to raise it"
        )));
    }
    // The quota, under the same lock: what the organisation's unfinished runs hold now includes every
    // run created before this one.
    let mut awaiting_approval = extras.awaiting_approval;
    if let Some(q) = &extras.quota {
        let committed = crate::usage::committed_hours(&mut *tx, org_id, q.device_kind).await?;
        let remaining = crate::usage::remaining_hours(q.quota_hours, q.used_hours, committed);
        if q.device_hours > remaining {
            if q.request_approval {
                awaiting_approval = true;
            } else {
                tx.rollback().await?;
                return Err(Error::QuotaExceeded {
                    committed_hours: committed,
                });
            }
        }
    }
    // A monitoring run's acquisition (`period` in its args) writes only its own windows and folder.
    let project_acquisition = |s: &NewStep| {
        s.kind == StepKind::Acquire && s.args.get("period").is_none_or(Value::is_null)
    };
    if steps.iter().any(project_acquisition) {
        // One acquisition of a project at a time: two would write the same windows' imagery. The lock
        // serialises concurrent requests until this transaction ends.
        sqlx::query("select pg_advisory_xact_lock(hashtextextended('acquire:' || $1::text, 0))")
            .bind(project_id)
            .execute(&mut *tx)
            .await?;
        let open: Option<Uuid> = sqlx::query_scalar(
            "select r.id from pipeline_run r where r.project_id = $1 and r.state in ('queued', 'running') \
               and exists (select 1 from step s where s.run_id = r.id and s.kind = 'acquire' \
                           and coalesce(s.args->'period', 'null'::jsonb) = 'null'::jsonb) \
             order by r.id limit 1",
        )
        .bind(project_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(open) = open {
            tx.rollback().await?;
            return Err(Error::Conflict(format!(
                "an acquisition of this project is already under way (run {open}); wait for it to finish or cancel it"
            )));
        }
    }
    let run_id = Uuid::now_v7();
    let inserted = sqlx::query(
        "insert into pipeline_run (id, org_id, project_id, idempotency_key, estimate, awaiting_approval) \
         values ($1, $2, $3, $4, $5, $6) on conflict on constraint pipeline_run_idempotency do nothing",
    )
    .bind(run_id)
    .bind(org_id)
    .bind(project_id)
    .bind(idempotency_key)
    .bind(&extras.estimate)
    .bind(awaiting_approval)
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
        "insert into step (id, run_id, name, kind, args, queue, max_attempts, backoff_base_ms, run_at, needs) \
         select u.id, $1, u.name, u.kind, u.args, u.queue, u.max_attempts, u.backoff, $8, u.needs \
         from unnest($2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::int[], $9::int[], $10::jsonb[]) \
              as u(id, name, kind, args, queue, max_attempts, backoff, needs)",
    )
    .bind(run_id)
    .bind(&ids)
    .bind(steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
    .bind(steps.iter().map(|s| s.kind.name()).collect::<Vec<_>>())
    .bind(steps.iter().map(|s| s.args.clone()).collect::<Vec<_>>())
    .bind(steps.iter().map(|s| s.queue.clone()).collect::<Vec<_>>())
    .bind(steps.iter().map(|s| s.max_attempts.max(1)).collect::<Vec<_>>())
    .bind(now)
    .bind(steps.iter().map(|s| s.backoff_base_ms.max(0)).collect::<Vec<_>>())
    .bind(steps.iter().map(|s| s.needs.clone()).collect::<Vec<_>>())
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
    if !awaiting_approval {
        dispatch(&mut tx, &ready).await?;
    }
    tx.commit().await?;
    get_run(pool, org_id, run_id).await
}

/// A run waiting for an installation administrator's approval.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PendingApproval {
    /// The run.
    pub run_id: Uuid,
    /// Its organisation.
    pub org_id: Uuid,
    /// The organisation's name.
    pub org_name: String,
    /// The project's name.
    pub project_name: String,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// The estimate it was started with.
    pub estimate: Option<Value>,
}

/// Runs waiting for approval, oldest first.
pub async fn pending_approvals(pool: &PgPool) -> Result<Vec<PendingApproval>> {
    Ok(sqlx::query_as(
        "select r.id as run_id, r.org_id, o.name as org_name, p.name as project_name, r.created_at, r.estimate \
         from pipeline_run r join org o on o.id = r.org_id join project p on p.id = r.project_id \
         where r.awaiting_approval and r.state = 'queued' order by r.created_at, r.id",
    )
    .fetch_all(pool)
    .await?)
}

/// Approves a run held for approval (`by` names who approved): its ready steps are dispatched.
/// A run that is not waiting (never held, already approved, or cancelled) is a conflict.
pub async fn approve_run(pool: &PgPool, run_id: Uuid, by: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    let approved: Option<Uuid> = sqlx::query_scalar(
        "update pipeline_run set awaiting_approval = false, approved_at = now(), approved_by = $2 \
         where id = $1 and awaiting_approval and state = 'queued' returning id",
    )
    .bind(run_id)
    .bind(by)
    .fetch_optional(&mut *tx)
    .await?;
    if approved.is_none() {
        tx.rollback().await?;
        return Err(Error::Conflict(format!(
            "run {run_id} is not waiting for approval"
        )));
    }
    let ready: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "select s.id, s.queue, now() from step s where s.run_id = $1 and s.state = 'queued' \
           and not s.cancel_requested \
           and not exists (select 1 from step_dependency d join step p on p.id = d.depends_on \
                           where d.step_id = s.id and p.state <> 'succeeded')",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    dispatch(&mut tx, &ready).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) fn check_acyclic(steps: &[NewStep], names: &HashMap<&str, usize>) -> Result<()> {
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
    let mut run: Run = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RUN_COLUMNS} from pipeline_run where id = $1 and org_id = $2"
    )))
    .bind(run_id)
    .bind(org_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound {
        what: "run",
        id: run_id,
    })?;
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
    run.device_time = crate::usage::run_device_time(pool, run_id).await?;
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
    let mut runs: Vec<Run> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RUN_COLUMNS} from pipeline_run \
         where project_id = $1 and org_id = $2 and ($3::uuid is null or id < $3) order by id desc limit $4"
    )))
    .bind(project_id)
    .bind(org_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
    for (id, time) in crate::usage::runs_device_time(pool, &ids).await? {
        if let Some(r) = runs.iter_mut().find(|r| r.id == id) {
            r.device_time.push(time);
        }
    }
    Ok(runs)
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
        "update step set state = 'queued', attempt = 0, lost_leases = 0, cancel_requested = false, cancelled_by_upstream = false, \
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
         update step set state = 'queued', attempt = 0, lost_leases = 0, cancel_requested = false, cancelled_by_upstream = false, \
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

/// Counts of one organisation's queued (due or not) steps per queue.
pub async fn queue_depths_in_org(pool: &PgPool, org_id: Uuid) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "select s.queue, count(*) from step s join pipeline_run r on r.id = s.run_id \
         where s.state = 'queued' and r.org_id = $1 group by s.queue order by s.queue",
    )
    .bind(org_id)
    .fetch_all(pool)
    .await?)
}

/// Counts of queued (due or not) steps per queue, over the whole installation.
pub async fn queue_depths(pool: &PgPool) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "select queue, count(*) from step where state = 'queued' group by queue order by queue",
    )
    .fetch_all(pool)
    .await?)
}
