//! Pipeline runs and their steps: the state machine described in `docs/state_machine.md`.
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
//!
//! The transitions live in one module per owner: `api` (create, cancel, retry, and the queries the API
//! answers), `lease` (the worker holding a step's lease: claim, heartbeat, complete, fail, cancelled)
//! and `reaper` (expired leases and lost dispatch messages). This module holds the types and the
//! dispatch helpers they share.

mod api;
mod lease;
mod reaper;

pub use api::{
    DEFAULT_MAX_QUEUED_STEPS, PendingApproval, QuotaCheck, RunExtras, approve_run, create_run,
    create_run_with, get_run, get_step, list_runs, pending_approvals, queue_depths,
    queue_depths_in_org, request_cancel, retry,
};
pub use lease::{
    Completion, FailOutcome, claim, claim_next, claimed_by, complete, complete_with_message,
    dispatch_held_back, fail, fenced, heartbeat, holds_lease, mark_cancelled, redispatch_refused,
};
pub use reaper::{MAX_LOST_LEASES, Reaped, reap};

use crate::{Error, Result};
use apalis::prelude::TaskBuilder;
use chrono::{DateTime, Utc};
use groundwork_types::{RunState, StepKind, StepState};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
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
    /// Step kind.
    pub kind: StepKind,
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
    /// What the claiming worker must have (`{"memory_mib": N}`: memory of its model device); empty:
    /// any worker of the queue.
    pub needs: Value,
}

impl NewStep {
    /// A step with default retry settings (3 attempts, 5 s base backoff) and no dependencies.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        kind: StepKind,
        args: Value,
        queue: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            args,
            queue: queue.into(),
            max_attempts: 3,
            backoff_base_ms: 5000,
            depends_on: Vec::new(),
            needs: Value::Object(serde_json::Map::new()),
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
    /// Derived from its steps.
    #[sqlx(try_from = "String")]
    pub state: RunState,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When its first step started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its last step finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The device-time estimate it was started with (`train` and `predict` runs).
    pub estimate: Option<Value>,
    /// Held until an installation administrator approves it: it would exceed the organisation's
    /// device-time quota. Its steps wait, queued.
    pub awaiting_approval: bool,
    /// When it was approved.
    pub approved_at: Option<DateTime<Utc>>,
    /// Who approved it.
    pub approved_by: Option<String>,
    /// Device time its step attempts spent so far, by device kind.
    #[sqlx(skip)]
    pub device_time: Vec<crate::usage::DeviceTime>,
}

/// The columns of [`Run`] as stored.
pub(crate) const RUN_COLUMNS: &str = "id, org_id, project_id, state, created_at, started_at, finished_at, \
     estimate, awaiting_approval, approved_at, approved_by";

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
    #[sqlx(try_from = "String")]
    pub kind: StepKind,
    /// Arguments.
    pub args: Value,
    /// Queue.
    pub queue: String,
    /// State.
    #[sqlx(try_from = "String")]
    pub state: StepState,
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
    /// What the claiming worker must have (`memory_mib`: memory of its model device in MiB).
    #[sqlx(default)]
    pub needs: Value,
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
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct Claimed {
    /// Step id.
    pub id: Uuid,
    /// Run id.
    pub run_id: Uuid,
    /// Kind.
    #[sqlx(try_from = "String")]
    pub kind: StepKind,
    /// Arguments.
    pub args: Value,
    /// This attempt's number (1-based).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The worker holding the lease.
    pub lease_owner: Uuid,
    /// This claim's fencing token: every write of the holder is conditional on it.
    pub claim_id: Uuid,
    /// Whether other steps wait for this one (their dispatch must commit with its success).
    pub has_dependents: bool,
    /// The run's project: whose work this is (never taken from the step's arguments).
    pub project_id: Uuid,
    /// The run's organisation.
    pub org_id: Uuid,
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    s.error, s.errors, s.output, s.created_at, s.started_at, s.finished_at, s.needs";

const STEP_COLUMNS: &str = "s.id, s.run_id, s.name, s.kind, s.args, s.queue, s.state, s.attempt, s.max_attempts, \
    s.run_at, s.progress, s.message, s.lease_owner, s.lease_expires_at, s.heartbeat_at, s.cancel_requested, \
    s.error, s.errors, s.output, s.created_at, s.started_at, s.finished_at, s.needs, \
    coalesce((select array_agg(p.name order by p.name) from step_dependency d join step p on p.id = d.depends_on \
              where d.step_id = s.id), '{}') as depends_on";

/// The priority of an organisation's first queued step; each further queued step of the organisation
/// ranks one lower (see [`dispatch`]).
const FAIR_SHARE_TOP: i64 = 1_000_000;

/// Pushes dispatch messages for `steps` (id, queue, not-before) inside `tx` and records their ids.
async fn dispatch(
    tx: &mut Transaction<'_, Postgres>,
    steps: &[(Uuid, String, DateTime<Utc>)],
) -> Result<()> {
    if steps.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = steps.iter().map(|s| s.0).collect();
    // Message ids are ULIDs (apalis decodes them): one for the installation's queue, one for the
    // organisation's own.
    let dispatch_ids: Vec<String> = steps
        .iter()
        .map(|_| ulid::Ulid::generate().to_string())
        .collect();
    let own_ids: Vec<String> = steps
        .iter()
        .map(|_| ulid::Ulid::generate().to_string())
        .collect();
    // Record the dispatch and learn, per step, which pools may run it: the installation's (when the
    // organisation may use them) and the organisation's own (when it has a live worker token).
    let routes: Vec<(Uuid, Uuid, bool, bool)> = sqlx::query_as(
        "update step set dispatch_id = u.d, own_dispatch_id = u.o \
         from unnest($1::uuid[], $2::text[], $3::text[]) as u(i, d, o), pipeline_run r, org o \
         where step.id = u.i and r.id = step.run_id and o.id = r.org_id \
         returning step.id, o.id, o.installation_workers, \
             exists (select 1 from worker_token t where t.org_id = o.id and t.revoked_at is null)",
    )
    .bind(&ids)
    .bind(&dispatch_ids)
    .bind(&own_ids)
    .fetch_all(&mut **tx)
    .await?;
    // Fair shares between organisations: a message's priority falls with its place in its
    // organisation's queue (the steps it has queued, these included), and workers take the highest
    // priority first. One organisation's 10,000-step run thus does not hold back another's single step:
    // that step ranks with the first of the big run's.
    let mut orgs: Vec<Uuid> = routes.iter().map(|r| r.1).collect();
    orgs.sort_unstable();
    orgs.dedup();
    let queued: HashMap<Uuid, i64> = sqlx::query_as(
        "select r.org_id, count(*) from step s join pipeline_run r on r.id = s.run_id \
         where s.state = 'queued' and r.org_id = any($1) group by r.org_id",
    )
    .bind(&orgs)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    let mut in_batch: HashMap<Uuid, i64> = HashMap::new();
    for r in &routes {
        *in_batch.entry(r.1).or_default() += 1;
    }
    let mut next_rank: HashMap<Uuid, i64> = orgs
        .iter()
        .map(|o| {
            let before =
                queued.get(o).copied().unwrap_or(0) - in_batch.get(o).copied().unwrap_or(0);
            (*o, before.max(0))
        })
        .collect();
    let routes: HashMap<Uuid, (Uuid, bool, bool, usize)> = routes
        .into_iter()
        .map(|(step, org, installation, own)| {
            let rank = next_rank.entry(org).or_default();
            let priority =
                usize::try_from(FAIR_SHARE_TOP - (*rank).min(FAIR_SHARE_TOP)).unwrap_or(0);
            *rank += 1;
            (step, (org, installation, own, priority))
        })
        .collect();
    let mut by_queue: HashMap<String, Vec<apalis_postgres::PgTask>> = HashMap::new();
    for (((step_id, queue, run_at), dispatch_id), own_id) in
        steps.iter().zip(&dispatch_ids).zip(&own_ids)
    {
        let Some(&(org, installation, own, priority)) = routes.get(step_id) else {
            continue;
        };
        let payload = serde_json::to_vec(&Dispatch { step_id: *step_id })?;
        // apalis stores run_at in whole seconds; round up so a message never arrives before its step is due.
        let run_at_secs =
            u64::try_from(run_at.timestamp() + i64::from(run_at.timestamp_subsec_nanos() > 0))
                .unwrap_or(0);
        let mut push = |queue: String, id: String| {
            let task = TaskBuilder::new(payload.clone())
                .task_id(id.into())
                .run_at_timestamp(run_at_secs)
                .priority(priority)
                .max_attempts(1)
                .build();
            by_queue.entry(queue).or_default().push(task);
        };
        if installation {
            push(queue.clone(), dispatch_id.clone());
        }
        if own {
            push(org_queue(queue, org), own_id.clone());
        }
    }
    for (queue, tasks) in by_queue {
        apalis_postgres::queries::push_tasks(&mut **tx, &queue, tasks)
            .await
            .map_err(|e| Error::Dispatch(e.to_string()))?;
    }
    Ok(())
}

/// The message queue of an organisation's own workers for `queue` (`cpu@{org id}`).
#[must_use]
pub fn org_queue(queue: &str, org: Uuid) -> String {
    format!("{queue}@{org}")
}

/// Gives a run its final state once none of its steps is queued or running.
async fn finish_run_if_done<'e>(exec: impl sqlx::PgExecutor<'e>, run_id: Uuid) -> Result<()> {
    // A project with a webhook gets one delivery of the finished run (sent by the server).
    sqlx::query(
        "with done as ( \
             update pipeline_run r set state = agg.state, finished_at = coalesce(r.finished_at, now()) \
             from (select case when bool_or(state = 'failed') then 'failed' \
                               when bool_or(state = 'cancelled') then 'cancelled' else 'succeeded' end as state \
                   from step where run_id = $1) agg \
             where r.id = $1 and r.state is distinct from agg.state \
               and not exists (select 1 from step where run_id = $1 and state in ('queued', 'running')) \
             returning r.id, r.project_id) \
         insert into webhook_delivery (id, project_id, run_id) \
         select gen_random_uuid(), done.project_id, done.id from done \
         join project_webhook w on w.project_id = done.project_id \
         on conflict (run_id, event) where state = 'pending' do nothing",
    )
    .bind(run_id)
    .execute(exec)
    .await?;
    Ok(())
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

/// The arguments of the project's latest step of `kind` (for example its last acquisition's
/// catalogue), if it has one.
pub async fn latest_args(
    pool: &sqlx::PgPool,
    project_id: Uuid,
    kind: StepKind,
) -> Result<Option<Value>> {
    Ok(sqlx::query_scalar(
        "select s.args from step s join pipeline_run r on r.id = s.run_id \
         where r.project_id = $1 and s.kind = $2 order by s.created_at desc, s.id desc limit 1",
    )
    .bind(project_id)
    .bind(kind.as_str())
    .fetch_optional(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::api::check_acyclic;
    use super::*;
    use sqlx::PgPool;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1000, 1), Duration::from_secs(1));
        assert_eq!(backoff(1000, 2), Duration::from_secs(2));
        assert_eq!(backoff(1000, 4), Duration::from_secs(8));
        assert_eq!(backoff(1000, 40), MAX_BACKOFF);
    }

    #[test]
    fn cycles_are_refused() {
        let mut a = NewStep::new("a", StepKind::Sleep, Value::Null, "cpu");
        a.depends_on = vec!["b".into()];
        let mut b = NewStep::new("b", StepKind::Sleep, Value::Null, "cpu");
        b.depends_on = vec!["a".into()];
        let steps = [a, b];
        let names = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        assert!(check_acyclic(&steps, &names).is_err());
    }

    /// The names a named check constraint accepts, read from the database's own definition.
    async fn check_names(pool: &PgPool, constraint: &str) -> Vec<String> {
        let def: String = sqlx::query_scalar(
            "select pg_get_constraintdef(oid) from pg_constraint where conname = $1",
        )
        .bind(constraint)
        .fetch_one(pool)
        .await
        .expect("constraint exists");
        let mut names: Vec<String> = def
            .split('\'')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    fn sorted(names: impl IntoIterator<Item = &'static str>) -> Vec<String> {
        let mut v: Vec<String> = names.into_iter().map(str::to_owned).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn the_database_checks_accept_exactly_the_vocabulary() {
        use groundwork_types::{Modality, ModelSize, Task};
        let db = crate::testing::TestDb::new().await.expect("test database");
        let pool = &db.pool;
        assert_eq!(
            check_names(pool, "step_kind_valid").await,
            sorted(StepKind::ALL.iter().map(|k| k.name()))
        );
        assert_eq!(
            check_names(pool, "step_state_valid").await,
            sorted(StepState::ALL.iter().map(|k| k.name()))
        );
        assert_eq!(
            check_names(pool, "pipeline_run_state_valid").await,
            sorted(RunState::ALL.iter().map(|k| k.name()))
        );
        assert_eq!(
            check_names(pool, "project_task_valid").await,
            sorted(Task::ALL.iter().map(|k| k.name()))
        );
        assert_eq!(
            check_names(pool, "project_model_size_valid").await,
            sorted(ModelSize::ALL.iter().map(|k| k.name()))
        );
        assert_eq!(
            check_names(pool, "project_modalities_valid").await,
            sorted(Modality::ALL.iter().map(|k| k.name()))
        );
    }
}
