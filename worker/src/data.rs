//! What a step body reads from and writes to the database, as requests.
//!
//! A step never holds a database handle of its own: it asks its [`StepContext`] for the rows it
//! needs, and writes its own output rows through it. Each question is a [`DataRequest`], answered
//! within the step's claim ([`Scope`]: its run, project and organisation, never anything its
//! arguments name):
//!
//! - a worker with database credentials (the installation's) answers it itself ([`execute`]);
//! - a remote worker, which holds only a worker token, sends it to the server's worker API, which
//!   checks that the worker holds the claim and answers it with the same [`execute`].
//!
//! Both paths go through JSON, so every step run in a test exercises what a remote worker sends.
//! Writes ([`DataRequest::is_write`]) run in a transaction fenced by the claim: they commit only while
//! the claim holds the step's lease.

use crate::{StepContext, StepError};
use groundwork_store::labels::{LabelTarget, TrainingExample, WindowGrid};
use groundwork_store::models::{NewEvaluation, TrainingEpoch};
use groundwork_store::outputs::{NewOutput, WindowFootprint};
use groundwork_store::projects::Project;
use groundwork_store::suggestions::NewSuggestion;
use groundwork_store::windows::{Counts, NewWindow, Outcome};
use groundwork_store::{PgPool, jobs, labels, models, outputs, projects, suggestions, windows};
use groundwork_types::keys::ProjectKeys;
use groundwork_types::{StepKind, StepState};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Whose question it is: the claimed step, taken from the claim row (never from a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// The step.
    pub step_id: Uuid,
    /// The claim that asks (fences writes).
    pub claim_id: Uuid,
    /// The step's run.
    pub run_id: Uuid,
    /// The run's project.
    pub project_id: Uuid,
    /// The run's organisation.
    pub org_id: Uuid,
}

impl Scope {
    /// The scope of a claimed step.
    #[must_use]
    pub fn of(claimed: &jobs::Claimed) -> Self {
        Self {
            step_id: claimed.id,
            claim_id: claimed.claim_id,
            run_id: claimed.run_id,
            project_id: claimed.project_id,
            org_id: claimed.org_id,
        }
    }

    fn keys(&self) -> ProjectKeys {
        ProjectKeys::new(self.org_id, self.project_id)
    }
}

/// One step of the asking step's own run, as the steps that combine their siblings' work read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStep {
    /// Its kind.
    pub kind: StepKind,
    /// Its state.
    pub state: StepState,
    /// Its output, once it succeeded.
    pub output: Option<Value>,
}

/// Which windows a request is about: the project's (planned on its area and dates, what training
/// learns from), or those of the asking step's own run (a monitoring prediction of another period or
/// area, which acquires windows of its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSet {
    /// The project's windows.
    #[default]
    Project,
    /// The run's own windows.
    Run,
}

/// A question or a write of a step body (see the module documentation).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DataRequest {
    /// The run's project.
    Project,
    /// The steps of the run.
    RunSteps,
    /// Why the project's windows cannot be used until they are acquired again, if so.
    StaleRefusal,
    /// The object keys (and acquiring run) of some of the project's windows.
    ObjectsOf {
        /// Window ids.
        ids: Vec<String>,
    },
    /// The most common reason among the windows of `set` in `status`, with its count.
    MostCommonReason {
        /// Window status.
        status: String,
        /// The project's windows or the run's.
        #[serde(default)]
        set: WindowSet,
    },
    /// Window counts by status, of the project's windows or the run's.
    WindowCounts {
        /// The project's windows or the run's.
        #[serde(default)]
        set: WindowSet,
    },
    /// Acquired windows, optionally of one zone and a grid range.
    AcquiredWindows {
        /// EPSG code of the zone.
        epsg: Option<i32>,
        /// `[column_min, column_max, row_min, row_max]`.
        range: Option<[i64; 4]>,
        /// The project's windows or the run's.
        #[serde(default)]
        set: WindowSet,
    },
    /// The project's training examples of a label-set version (the latest when `None`).
    TrainingExamples {
        /// Label-set version.
        version: Option<i32>,
    },
    /// The project's windows with their grids.
    WindowGrids,
    /// The project's label masks of a label-set version (the latest when `None`).
    LabelMasks {
        /// Label-set version.
        version: Option<i32>,
    },
    /// The model manifest key that a run of the project trained, if recorded.
    TrainedManifestKey {
        /// The training run (of the same project).
        run_id: Uuid,
    },
    /// Records the project's planned windows and retires the others.
    PlanWindows {
        /// The windows.
        rows: Vec<NewWindow>,
    },
    /// Fenced: records acquisition outcomes.
    RecordOutcomes {
        /// One per window.
        outcomes: Vec<Outcome>,
    },
    /// Fenced: records a monitoring run's acquisition outcomes (the run's own windows).
    RecordRunOutcomes {
        /// The windows' grids.
        windows: Vec<NewWindow>,
        /// One per window.
        outcomes: Vec<Outcome>,
    },
    /// Fenced: stores an evaluation report (of a training run of the same project).
    RecordEvaluation {
        /// The report.
        evaluation: NewEvaluation,
    },
    /// Fenced: records the run's outputs, all or none.
    PublishOutputs {
        /// The outputs (organisation, project and run are the step's).
        rows: Vec<NewOutput>,
    },
    /// Fenced: records a training epoch and writes the checkpoint folder's `state.json` (the commit
    /// point of a checkpoint) while the step row is locked.
    RecordEpoch {
        /// The epoch's row, if the epoch produced one.
        epoch: Option<TrainingEpoch>,
        /// Key of `state.json`.
        state_key: String,
        /// Its content.
        state_json: String,
    },
    /// Fenced: stores the run's label suggestions.
    RecordSuggestions {
        /// The points.
        items: Vec<NewSuggestion>,
    },
}

impl DataRequest {
    /// Whether the request writes (and so runs fenced by the claim).
    #[must_use]
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Self::RecordOutcomes { .. }
                | Self::RecordRunOutcomes { .. }
                | Self::RecordEvaluation { .. }
                | Self::PublishOutputs { .. }
                | Self::RecordEpoch { .. }
                | Self::RecordSuggestions { .. }
        )
    }
}

fn retryable(e: impl Into<anyhow::Error>) -> StepError {
    StepError::Retryable(e.into())
}

fn refused(what: impl std::fmt::Display) -> StepError {
    StepError::Permanent(anyhow::anyhow!("{what}"))
}

fn answer(v: impl Serialize) -> Result<Value, StepError> {
    serde_json::to_value(v).map_err(retryable)
}

/// Refuses object keys outside the step's project.
fn check_keys<'a>(scope: &Scope, keys: impl IntoIterator<Item = &'a str>) -> Result<(), StepError> {
    let own = scope.keys();
    match keys.into_iter().find(|k| !own.owns(k)) {
        Some(k) => Err(refused(format_args!(
            "object key {k:?} is outside the step's project"
        ))),
        None => Ok(()),
    }
}

/// Refuses a run that is not of the step's project.
async fn check_run(pool: &PgPool, scope: &Scope, run_id: Uuid) -> Result<(), StepError> {
    if run_id == scope.run_id {
        return Ok(());
    }
    let project: Option<Uuid> =
        sqlx::query_scalar("select project_id from pipeline_run where id = $1 and org_id = $2")
            .bind(run_id)
            .bind(scope.org_id)
            .fetch_optional(pool)
            .await
            .map_err(retryable)?;
    if project == Some(scope.project_id) {
        Ok(())
    } else {
        Err(refused(format_args!(
            "run {run_id} is not a run of the step's project"
        )))
    }
}

/// Answers `req` for the step of `scope` against the database (and, for `state.json`, the object
/// store): what a worker with credentials does itself, and what the server's worker API does for a
/// remote worker. Reads are scoped to the step's project; writes commit only while the claim holds
/// the lease.
///
/// # Errors
/// A retryable error when the database fails or the lease is lost; a permanent one when the request
/// names something outside the step's project.
pub async fn execute(
    pool: &PgPool,
    objects: Option<&dyn ObjectStore>,
    scope: &Scope,
    req: DataRequest,
) -> Result<Value, StepError> {
    let project_id = scope.project_id;
    match req {
        DataRequest::Project => {
            let p = projects::get(pool, scope.org_id, project_id)
                .await
                .map_err(|e| match e {
                    groundwork_store::Error::NotFound { .. } => refused(format_args!(
                        "the run's project {project_id} no longer exists"
                    )),
                    e => retryable(e),
                })?;
            answer(p)
        }
        DataRequest::RunSteps => {
            let run = jobs::get_run(pool, scope.org_id, scope.run_id)
                .await
                .map_err(retryable)?;
            answer(
                run.steps
                    .into_iter()
                    .map(|s| RunStep {
                        kind: s.kind,
                        state: s.state,
                        output: s.output,
                    })
                    .collect::<Vec<_>>(),
            )
        }
        DataRequest::StaleRefusal => answer(
            windows::stale_refusal(pool, project_id)
                .await
                .map_err(retryable)?,
        ),
        DataRequest::ObjectsOf { ids } => answer(
            windows::objects_of(pool, project_id, &ids)
                .await
                .map_err(retryable)?,
        ),
        DataRequest::MostCommonReason { status, set } => answer(
            match set {
                WindowSet::Project => windows::most_common_reason(pool, project_id, &status).await,
                WindowSet::Run => {
                    windows::run_most_common_reason(pool, scope.run_id, &status).await
                }
            }
            .map_err(retryable)?,
        ),
        DataRequest::WindowCounts { set } => answer(
            match set {
                WindowSet::Project => windows::counts(pool, project_id).await,
                WindowSet::Run => windows::run_counts(pool, scope.run_id).await,
            }
            .map_err(retryable)?,
        ),
        DataRequest::AcquiredWindows { epsg, range, set } => answer(
            match set {
                WindowSet::Project => {
                    outputs::acquired_windows(pool, project_id, epsg, range).await
                }
                WindowSet::Run => {
                    outputs::run_acquired_windows(pool, scope.run_id, epsg, range).await
                }
            }
            .map_err(retryable)?,
        ),
        DataRequest::TrainingExamples { version } => answer(
            labels::training_examples(pool, project_id, version)
                .await
                .map_err(|e| refused(format_args!("{e}")))?,
        ),
        DataRequest::WindowGrids => answer(
            labels::window_grids(pool, project_id)
                .await
                .map_err(retryable)?,
        ),
        DataRequest::LabelMasks { version } => answer(
            labels::label_masks(pool, project_id, version)
                .await
                .map_err(retryable)?,
        ),
        DataRequest::TrainedManifestKey { run_id } => answer(
            models::trained_manifest_key(pool, project_id, run_id)
                .await
                .map_err(retryable)?,
        ),
        DataRequest::PlanWindows { rows } => {
            windows::plan(pool, project_id, &rows)
                .await
                .map_err(retryable)?;
            Ok(Value::Null)
        }
        DataRequest::RecordOutcomes { outcomes } => {
            check_keys(
                scope,
                outcomes
                    .iter()
                    .flat_map(|o| o.objects.iter().map(String::as_str)),
            )?;
            let mut tx = fenced(pool, scope).await?;
            windows::record_outcomes(&mut *tx, project_id, scope.step_id, &outcomes)
                .await
                .map_err(retryable)?;
            tx.commit().await.map_err(retryable)?;
            Ok(Value::Null)
        }
        DataRequest::RecordRunOutcomes {
            windows: grid,
            outcomes,
        } => {
            check_keys(
                scope,
                outcomes
                    .iter()
                    .flat_map(|o| o.objects.iter().map(String::as_str)),
            )?;
            let mut tx = fenced(pool, scope).await?;
            windows::record_run_outcomes(
                &mut *tx,
                project_id,
                scope.run_id,
                scope.step_id,
                &grid,
                &outcomes,
            )
            .await
            .map_err(retryable)?;
            tx.commit().await.map_err(retryable)?;
            Ok(Value::Null)
        }
        DataRequest::RecordEvaluation { mut evaluation } => {
            check_run(pool, scope, evaluation.run_id).await?;
            check_keys(scope, [evaluation.model_key.as_str()])?;
            evaluation.step_id = Some(scope.step_id);
            let mut tx = fenced(pool, scope).await?;
            let stored = models::record_evaluation(&mut *tx, &evaluation)
                .await
                .map_err(retryable)?;
            tx.commit().await.map_err(retryable)?;
            Ok(json!({"id": stored.id}))
        }
        DataRequest::PublishOutputs { mut rows } => {
            check_keys(
                scope,
                rows.iter()
                    .flat_map(|r| [r.utm_key.as_str(), r.web_key.as_str()])
                    .chain(rows.iter().flat_map(outputs::zone_keys)),
            )?;
            for r in &mut rows {
                r.org_id = scope.org_id;
                r.project_id = project_id;
                r.run_id = scope.run_id;
            }
            let mut tx = fenced(pool, scope).await?;
            let mut published = Vec::new();
            for row in &rows {
                let out = outputs::upsert(&mut *tx, row).await.map_err(retryable)?;
                published.push(json!({"id": out.id, "kind": out.kind, "min_zoom": out.min_zoom, "max_zoom": out.max_zoom}));
            }
            tx.commit().await.map_err(retryable)?;
            Ok(Value::Array(published))
        }
        DataRequest::RecordEpoch {
            mut epoch,
            state_key,
            state_json,
        } => {
            check_keys(scope, [state_key.as_str()])?;
            let store = objects.ok_or_else(|| {
                refused("writing a training checkpoint needs an object store; there is none")
            })?;
            let mut tx = fenced(pool, scope).await?;
            if let Some(e) = &mut epoch {
                e.step_id = scope.step_id;
                models::record_epoch(&mut *tx, scope.run_id, e)
                    .await
                    .map_err(retryable)?;
            }
            store
                .put(
                    &object_store::path::Path::from(state_key.as_str()),
                    state_json.into_bytes().into(),
                )
                .await
                .map_err(|e| retryable(anyhow::anyhow!("writing {state_key}: {e}")))?;
            tx.commit().await.map_err(retryable)?;
            Ok(Value::Null)
        }
        DataRequest::RecordSuggestions { items } => {
            let mut tx = fenced(pool, scope).await?;
            suggestions::record(&mut tx, scope.run_id, project_id, &items)
                .await
                .map_err(retryable)?;
            tx.commit().await.map_err(retryable)?;
            Ok(Value::Null)
        }
    }
}

async fn fenced(
    pool: &PgPool,
    scope: &Scope,
) -> Result<groundwork_store::Transaction<'static, groundwork_store::Postgres>, StepError> {
    jobs::fenced(pool, scope.step_id, scope.claim_id)
        .await
        .map_err(retryable)
}

/// How a step reaches its data: the database itself, or the server's worker API.
#[derive(Clone)]
pub enum DataAccess {
    /// A worker with database credentials.
    Local(PgPool),
    /// A remote worker (see [`crate::remote`]).
    Remote(Arc<crate::remote::Client>),
}

impl std::fmt::Debug for DataAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(_) => f.write_str("DataAccess::Local"),
            Self::Remote(c) => write!(f, "DataAccess::Remote({})", c.server()),
        }
    }
}

/// The typed questions of step bodies.
impl StepContext {
    fn scope(&self) -> Scope {
        Scope {
            step_id: self.step_id,
            claim_id: self.claim_id,
            run_id: self.run_id,
            project_id: self.project_id,
            org_id: self.org_id,
        }
    }

    /// Answers `req` within this step's claim (locally or through the server).
    pub async fn ask<T: DeserializeOwned>(&self, req: DataRequest) -> Result<T, StepError> {
        let value = match &self.data {
            DataAccess::Local(pool) => {
                execute(pool, self.objects.as_deref(), &self.scope(), req).await?
            }
            DataAccess::Remote(client) => client.data(&self.scope(), &req).await?,
        };
        serde_json::from_value(value).map_err(|e| {
            StepError::Retryable(anyhow::anyhow!("an answer of the data service: {e}"))
        })
    }

    /// The run's project, read within its organisation.
    pub async fn project(&self) -> Result<Project, StepError> {
        self.ask(DataRequest::Project).await
    }

    /// The steps of this step's run.
    pub async fn run_steps(&self) -> Result<Vec<RunStep>, StepError> {
        self.ask(DataRequest::RunSteps).await
    }

    /// Why the project's windows must be acquired again before use, if so.
    pub async fn stale_refusal(&self) -> Result<Option<String>, StepError> {
        self.ask(DataRequest::StaleRefusal).await
    }

    /// The object keys and acquiring run of the project's windows `ids`.
    pub async fn objects_of(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, (Vec<String>, Option<Uuid>)>, StepError> {
        self.ask(DataRequest::ObjectsOf { ids: ids.to_vec() }).await
    }

    /// The most common reason among the windows of `set` in `status`.
    pub async fn most_common_reason(
        &self,
        set: WindowSet,
        status: &str,
    ) -> Result<Option<(String, i64)>, StepError> {
        self.ask(DataRequest::MostCommonReason {
            status: status.to_owned(),
            set,
        })
        .await
    }

    /// Window counts of the project's windows or the run's.
    pub async fn window_counts(&self, set: WindowSet) -> Result<Counts, StepError> {
        self.ask(DataRequest::WindowCounts { set }).await
    }

    /// Acquired windows of `set`, optionally of one zone and grid range.
    pub async fn acquired_windows(
        &self,
        set: WindowSet,
        epsg: Option<i32>,
        range: Option<[i64; 4]>,
    ) -> Result<Vec<WindowFootprint>, StepError> {
        self.ask(DataRequest::AcquiredWindows { epsg, range, set })
            .await
    }

    /// The project's training examples (label-set version and examples).
    pub async fn training_examples(
        &self,
        version: Option<i32>,
    ) -> Result<(i32, Vec<TrainingExample>), StepError> {
        self.ask(DataRequest::TrainingExamples { version }).await
    }

    /// The project's windows with their grids.
    pub async fn window_grids(&self) -> Result<Vec<WindowGrid>, StepError> {
        self.ask(DataRequest::WindowGrids).await
    }

    /// The project's label masks (label-set version and a target per window).
    pub async fn label_masks(
        &self,
        version: Option<i32>,
    ) -> Result<Option<(i32, Vec<(String, LabelTarget)>)>, StepError> {
        self.ask(DataRequest::LabelMasks { version }).await
    }

    /// The model manifest key a training run of the project recorded.
    pub async fn trained_manifest_key(&self, run_id: Uuid) -> Result<Option<String>, StepError> {
        self.ask(DataRequest::TrainedManifestKey { run_id }).await
    }

    /// Records the project's planned windows and retires the others.
    pub async fn plan_windows(&self, rows: Vec<NewWindow>) -> Result<(), StepError> {
        self.ask(DataRequest::PlanWindows { rows }).await
    }

    /// Fenced: records acquisition outcomes.
    pub async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> Result<(), StepError> {
        self.ask(DataRequest::RecordOutcomes { outcomes }).await
    }

    /// Fenced: records a monitoring run's acquisition outcomes, with the windows' grids.
    pub async fn record_run_outcomes(
        &self,
        windows: Vec<NewWindow>,
        outcomes: Vec<Outcome>,
    ) -> Result<(), StepError> {
        self.ask(DataRequest::RecordRunOutcomes { windows, outcomes })
            .await
    }

    /// Fenced: stores an evaluation report; returns its id.
    pub async fn record_evaluation(&self, evaluation: NewEvaluation) -> Result<Uuid, StepError> {
        #[derive(Deserialize)]
        struct Stored {
            id: Uuid,
        }
        let s: Stored = self
            .ask(DataRequest::RecordEvaluation { evaluation })
            .await?;
        Ok(s.id)
    }

    /// Fenced: records the run's outputs, all or none; returns what was published.
    pub async fn publish_outputs(&self, rows: Vec<NewOutput>) -> Result<Vec<Value>, StepError> {
        self.ask(DataRequest::PublishOutputs { rows }).await
    }

    /// Fenced: records a training epoch and writes `state.json`.
    pub async fn record_epoch(
        &self,
        epoch: Option<TrainingEpoch>,
        state_key: String,
        state_json: String,
    ) -> Result<(), StepError> {
        self.ask(DataRequest::RecordEpoch {
            epoch,
            state_key,
            state_json,
        })
        .await
    }

    /// Fenced: stores the run's label suggestions.
    pub async fn record_suggestions(&self, items: Vec<NewSuggestion>) -> Result<(), StepError> {
        self.ask(DataRequest::RecordSuggestions { items }).await
    }
}
