//! Trained models: per-epoch training curves of `train` steps and evaluation reports of `evaluate` steps.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// One epoch of a training curve.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrainingEpoch {
    /// The `train` step.
    pub step_id: Uuid,
    /// 1-based epoch.
    pub epoch: i32,
    /// `frozen` (encoder frozen) or `unfrozen`.
    pub phase: String,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss.
    pub val_loss: Option<f64>,
    /// Validation metric (see `metric`).
    pub val_metric: Option<f64>,
    /// `accuracy` (pixel accuracy for segmentation) or `rmse`.
    pub metric: String,
    /// Wall time of the epoch.
    pub seconds: f64,
}

/// The manifest key the succeeded `train` step of `run_id` (a run of `project_id`) named in its
/// output: the claim that committed the step wrote the model there. `None` when the run has no
/// succeeded `train` step or it predates per-claim model folders.
pub async fn trained_manifest_key(
    pool: &PgPool,
    project_id: Uuid,
    run_id: Uuid,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar::<_, Option<String>>(
        "select s.output->>'model_json' from step s join pipeline_run r on r.id = s.run_id \
         where s.run_id = $1 and r.project_id = $2 and s.kind = 'train' and s.state = 'succeeded' \
         order by s.finished_at desc limit 1",
    )
    .bind(run_id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?
    .flatten())
}

/// Records (or replaces, for a resumed attempt) one epoch of a step's curve.
pub async fn record_epoch<'e>(
    db: impl sqlx::PgExecutor<'e>,
    run_id: Uuid,
    e: &TrainingEpoch,
) -> Result<()> {
    sqlx::query(
        "insert into training_epoch (run_id, step_id, epoch, phase, train_loss, val_loss, val_metric, metric, seconds) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         on conflict (step_id, epoch) do update set phase = excluded.phase, train_loss = excluded.train_loss, \
           val_loss = excluded.val_loss, val_metric = excluded.val_metric, metric = excluded.metric, \
           seconds = excluded.seconds, created_at = now()",
    )
    .bind(run_id)
    .bind(e.step_id)
    .bind(e.epoch)
    .bind(&e.phase)
    .bind(e.train_loss)
    .bind(e.val_loss)
    .bind(e.val_metric)
    .bind(&e.metric)
    .bind(e.seconds)
    .execute(db)
    .await?;
    Ok(())
}

/// The training curves of a run's `train` steps, if the run belongs to `org_id`.
pub async fn training_curve(
    pool: &PgPool,
    org_id: Uuid,
    run_id: Uuid,
) -> Result<Vec<TrainingEpoch>> {
    let exists: Option<Uuid> =
        sqlx::query_scalar("select id from pipeline_run where id = $1 and org_id = $2")
            .bind(run_id)
            .bind(org_id)
            .fetch_optional(pool)
            .await?;
    if exists.is_none() {
        return Err(Error::NotFound {
            what: "run",
            id: run_id,
        });
    }
    Ok(sqlx::query_as(
        "select step_id, epoch, phase, train_loss, val_loss, val_metric, metric, seconds from training_epoch \
         where run_id = $1 order by step_id, epoch",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?)
}

/// A stored evaluation report.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Evaluation {
    /// Id.
    pub id: Uuid,
    /// The run whose model was evaluated.
    pub run_id: Uuid,
    /// Project.
    pub project_id: Uuid,
    /// The `evaluate` step that wrote it.
    pub step_id: Option<Uuid>,
    /// Label-set version the model was trained and tested on.
    pub label_set_version: Option<i32>,
    /// Object-store key of the model's `model.json`.
    pub model_key: String,
    /// The report: metrics of the fine-tuned model and of the frozen baseline on the test split.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub report: Value,
    /// When written.
    pub created_at: DateTime<Utc>,
}

/// What an `evaluate` step records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewEvaluation {
    /// Run of the evaluated model.
    pub run_id: Uuid,
    /// The writing step (a re-run replaces its report).
    pub step_id: Option<Uuid>,
    /// Label-set version.
    pub label_set_version: Option<i32>,
    /// Key of `model.json`.
    pub model_key: String,
    /// Report JSON.
    pub report: Value,
}

const EVAL_COLUMNS: &str = "e.id, e.run_id, e.project_id, e.step_id, e.label_set_version, e.model_key, e.report, e.created_at";

/// Stores a report for the run (organisation and project are the run's).
pub async fn record_evaluation<'e>(
    db: impl sqlx::PgExecutor<'e>,
    e: &NewEvaluation,
) -> Result<Evaluation> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "with ins as ( \
           insert into evaluation (id, org_id, run_id, project_id, step_id, label_set_version, model_key, report) \
           select $1, r.org_id, r.id, r.project_id, $3, $4, $5, $6 from pipeline_run r where r.id = $2 \
           on conflict (step_id) do update set label_set_version = excluded.label_set_version, \
             model_key = excluded.model_key, report = excluded.report, created_at = now() \
           returning * ) \
         select {EVAL_COLUMNS} from ins e"
    )))
    .bind(Uuid::now_v7())
    .bind(e.run_id)
    .bind(e.step_id)
    .bind(e.label_set_version)
    .bind(&e.model_key)
    .bind(&e.report)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound { what: "run", id: e.run_id })
}

/// The latest report of a run, if the run belongs to `org_id`.
pub async fn run_evaluation(pool: &PgPool, org_id: Uuid, run_id: Uuid) -> Result<Evaluation> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {EVAL_COLUMNS} from evaluation e where e.run_id = $1 and e.org_id = $2 \
         order by e.id desc limit 1"
    )))
    .bind(run_id)
    .bind(org_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound {
        what: "evaluation of run",
        id: run_id,
    })
}

/// Reports of a project, newest first, after the cursor (an evaluation id).
pub async fn project_evaluations(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Evaluation>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {EVAL_COLUMNS} from evaluation e where e.project_id = $1 and e.org_id = $2 \
         and ($3::uuid is null or e.id < $3) order by e.id desc limit $4"
    )))
    .bind(project_id)
    .bind(org_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Whether an active, online worker that may run `org_id`'s steps serves the `gpu` queue (training
/// then goes there): one of the organisation's own workers, or an installation worker when the
/// organisation may use those.
pub async fn gpu_worker_online(pool: &PgPool, org_id: Uuid) -> Result<bool> {
    Ok(live_queues(pool, org_id).await?.iter().any(|q| q == "gpu"))
}

/// The queues that an active worker the organisation may use (the installation's when it is allowed
/// them, its own through a worker token) serves now, sorted.
pub async fn live_queues(pool: &PgPool, org_id: Uuid) -> Result<Vec<String>> {
    Ok(live_queue_memory(pool, org_id)
        .await?
        .into_iter()
        .map(|(q, _)| q)
        .collect())
}

/// For each queue a live worker usable by the organisation serves: the most memory of such a worker's
/// model device in MiB (`None` when one of them did not say, so it may take anything).
pub async fn live_queue_memory(pool: &PgPool, org_id: Uuid) -> Result<Vec<(String, Option<f64>)>> {
    Ok(sqlx::query_as(
        "select q, case when bool_or(worker_memory_mib(w.capabilities) is null) then null \
                        else max(worker_memory_mib(w.capabilities)) end \
         from worker w join org o on o.id = $2, unnest(w.queues) as q \
         where w.admin_state = 'active' and w.stopped_at is null \
           and w.last_heartbeat_at > now() - $1 * interval '1 second' \
           and ((w.worker_token_id is null and o.installation_workers) \
                or (w.worker_token_id is not null and w.org_id = o.id)) \
         group by q order by q",
    )
    .bind(crate::workers::OFFLINE_AFTER.as_secs_f64())
    .bind(org_id)
    .fetch_all(pool)
    .await?)
}

/// A training run whose `train` step succeeded: the run and the step's output (model keys, metrics).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrainedRun {
    /// The run.
    pub run_id: Uuid,
    /// The `train` step's output.
    pub output: serde_json::Value,
}

/// The project's trained model of `run_id`, or its newest one when `run_id` is `None`; `NotFound` when
/// the run is not the project's (or not the org's) or its training has not succeeded.
pub async fn trained_run(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    run_id: Option<Uuid>,
) -> Result<TrainedRun> {
    sqlx::query_as(
        "select r.id as run_id, s.output from pipeline_run r join step s on s.run_id = r.id \
         where r.org_id = $1 and r.project_id = $2 and ($3::uuid is null or r.id = $3) \
         and s.kind = 'train' and s.state = 'succeeded' and s.output is not null \
         order by s.finished_at desc limit 1",
    )
    .bind(org_id)
    .bind(project_id)
    .bind(run_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound {
        what: "trained model of run",
        id: run_id.unwrap_or(project_id),
    })
}

/// The project's trained models (runs whose `train` step succeeded), newest first, at most `limit`.
pub async fn trained_runs(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    limit: i64,
) -> Result<Vec<TrainedRun>> {
    Ok(sqlx::query_as(
        "select distinct on (r.id) r.id as run_id, s.output from pipeline_run r \
         join step s on s.run_id = r.id \
         where r.org_id = $1 and r.project_id = $2 \
         and s.kind = 'train' and s.state = 'succeeded' and s.output is not null \
         order by r.id desc, s.finished_at desc limit $3",
    )
    .bind(org_id)
    .bind(project_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A run with a `train` step, as a project's results list it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrainingRun {
    /// The run.
    pub run_id: Uuid,
    /// State of its (latest) `train` step.
    #[sqlx(try_from = "String")]
    pub state: groundwork_types::StepState,
    /// When the run was created.
    pub created_at: DateTime<Utc>,
}

/// The project's runs with a `train` step, newest first (another organisation's project has none).
pub async fn training_runs(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    limit: i64,
) -> Result<Vec<TrainingRun>> {
    Ok(sqlx::query_as(
        "select distinct on (r.id) r.id as run_id, s.state, r.created_at from pipeline_run r \
         join step s on s.run_id = r.id \
         where r.org_id = $1 and r.project_id = $2 and s.kind = 'train' \
         order by r.id desc, s.created_at desc limit $3",
    )
    .bind(org_id)
    .bind(project_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
