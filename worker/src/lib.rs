//! The Groundwork step runtime: a worker registers in a pool, takes dispatch messages from apalis for
//! the queues it serves, claims steps (lease), heartbeats progress, honours cancels, records outcomes,
//! and runs the reaper. Each step kind is a module under [`steps`].
#![warn(missing_docs)]

mod capabilities;
pub mod data;
pub mod needs;
pub mod pretrained;
pub mod remote;
mod runtime;
pub mod steps;
mod wake;

pub use capabilities::{default_pool, detect as detect_capabilities};
pub use runtime::{Worker, WorkerConfig, run_reaper};

use futures::future::BoxFuture;
use groundwork_store::jobs::Artifact;
pub use groundwork_store::jobs::NewStep;
pub use groundwork_types::StepKind;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a step body sees.
#[derive(Clone)]
pub struct StepContext {
    /// Step id.
    pub step_id: Uuid,
    /// Run id.
    pub run_id: Uuid,
    /// The run's project. Steps take their project (and so the organisation, the windows, labels and
    /// object keys they touch) from the run, never from their arguments.
    pub project_id: Uuid,
    /// The run's organisation.
    pub org_id: Uuid,
    /// This attempt (1-based).
    pub attempt: i32,
    /// This claim's fencing token: the step's own output rows are written by fenced requests
    /// ([`data::DataRequest::is_write`]), which commit only while this claim holds the lease.
    pub claim_id: Uuid,
    /// Kind-specific arguments.
    pub args: Value,
    /// Report progress here; it goes out with the next heartbeat.
    pub progress: Progress,
    /// Cancelled when the step must stop (cancel requested, lease lost). Async bodies are also dropped
    /// at that point; blocking work must poll this token. A worker's shutdown does not cancel it: the
    /// step finishes, or is re-queued when its lease expires.
    pub cancel: CancellationToken,
    /// Where the step's data questions go: the database, or the server's worker API.
    pub data: data::DataAccess,
    /// The object store, when the worker has one.
    pub objects: Option<Arc<dyn object_store::ObjectStore>>,
    /// Root of the pretrained OlmoEarth checkpoints (`groundwork model fetch`), when configured.
    pub model_dir: Option<std::path::PathBuf>,
    /// The worker's outbound-request policy (what a user-named catalogue may make it fetch).
    pub outbound: groundwork_imagery::OutboundPolicy,
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("step_id", &self.step_id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl StepContext {
    /// The object-store keys of the run's project.
    #[must_use]
    pub fn keys(&self) -> groundwork_types::keys::ProjectKeys {
        groundwork_types::keys::ProjectKeys::new(self.org_id, self.project_id)
    }

    /// The object store, or a permanent error naming the step kind that needs it.
    pub fn objects(&self, kind: StepKind) -> Result<Arc<dyn object_store::ObjectStore>, StepError> {
        self.objects.clone().ok_or_else(|| {
            StepError::Permanent(anyhow::anyhow!(
                "step kind `{kind}` needs an object store; this worker has none"
            ))
        })
    }
}

/// Shared progress cell (fraction 0–1 and a message).
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<(f32, String)>>);

impl Progress {
    /// Sets progress.
    pub fn set(&self, fraction: f32, message: impl Into<String>) {
        if let Ok(mut p) = self.0.lock() {
            *p = (fraction.clamp(0.0, 1.0), message.into());
        }
    }

    /// Current progress.
    #[must_use]
    pub fn get(&self) -> (f32, String) {
        self.0.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// A successful step's result, committed with the state change.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// Stored in `step.output`.
    pub output: Value,
    /// Stored in `step_artifact` (replacing a previous attempt's, never duplicating).
    pub artifacts: Vec<Artifact>,
}

/// A failed attempt.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Worth another attempt (network, throttling, a transient fault).
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// Retrying cannot help (bad arguments, bad input data).
    #[error("{0:#}")]
    Permanent(anyhow::Error),
    /// The body stopped because its cancellation token fired (cancel requested, lease lost).
    #[error("cancelled")]
    Cancelled,
}

impl From<anyhow::Error> for StepError {
    fn from(e: anyhow::Error) -> Self {
        Self::Retryable(e)
    }
}

/// A step kind's typed arguments: what the server writes into `step.args` and the body reads back.
///
/// Every step is created through [`StepArgs::to_step`], so a step's `kind` always matches the type
/// of its arguments.
pub trait StepArgs: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind these arguments are for.
    const KIND: StepKind;

    /// A step of this kind named `name` on `queue`, with default retry settings and no dependencies.
    fn to_step(&self, name: impl Into<String>, queue: impl Into<String>) -> NewStep {
        // Argument structs are plain data (no maps with non-string keys), so this cannot fail.
        let args = serde_json::to_value(self).unwrap_or(Value::Null);
        NewStep::new(name, Self::KIND, args, queue)
    }

    /// The limits the arguments must keep (the same ones the dedicated endpoints check): a reason
    /// when they do not.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// Reads the arguments of a claimed step and checks their limits; malformed or out-of-range
    /// arguments are a permanent failure.
    fn parse(args: &Value) -> Result<Self, StepError> {
        let invalid = |e: &dyn std::fmt::Display| {
            StepError::Permanent(anyhow::anyhow!(
                "invalid arguments for step kind `{}`: {e}",
                Self::KIND
            ))
        };
        let parsed: Self = serde_json::from_value(args.clone()).map_err(|e| invalid(&e))?;
        parsed.check().map_err(|e| invalid(&e))?;
        Ok(parsed)
    }
}

/// A step kind's body.
pub trait Step: Send + Sync + 'static {
    /// Its arguments; [`StepArgs::KIND`] names the kind.
    type Args: StepArgs;

    /// Runs one attempt.
    fn run(
        &self,
        ctx: StepContext,
        args: Self::Args,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>>;
}

/// Checks `args` against the typed arguments of `kind` (what the server does before it creates a step
/// from a request that names its kind).
///
/// # Errors
/// The parse error, naming the kind, when `args` do not fit its argument struct.
pub fn check_args(kind: StepKind, args: &Value) -> Result<(), StepError> {
    match kind {
        StepKind::Acquire => steps::AcquireArgs::parse(args).map(drop),
        StepKind::AcquireSummary => steps::SummaryArgs::parse(args).map(drop),
        StepKind::Train => steps::TrainArgs::parse(args).map(drop),
        StepKind::Evaluate => steps::EvaluateArgs::parse(args).map(drop),
        StepKind::Predict => steps::PredictArgs::parse(args).map(drop),
        StepKind::Combine => steps::CombineArgs::parse(args).map(drop),
        StepKind::Publish => steps::PublishArgs::parse(args).map(drop),
        StepKind::Suggest => steps::SuggestArgs::parse(args).map(drop),
        StepKind::Sleep => steps::SleepArgs::parse(args).map(drop),
        StepKind::Fail => steps::FailArgs::parse(args).map(drop),
        StepKind::Noop => steps::NoopArgs::parse(args).map(drop),
    }
}

/// A [`Step`] with its arguments still as JSON (what the registry holds).
trait ErasedStep: Send + Sync {
    fn run(&self, ctx: StepContext) -> BoxFuture<'static, Result<StepOutput, StepError>>;
}

impl<S: Step> ErasedStep for S {
    fn run(&self, ctx: StepContext) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        match S::Args::parse(&ctx.args) {
            Ok(args) => Step::run(self, ctx, args),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

/// The step bodies this worker can run, by kind.
#[derive(Clone, Default)]
pub struct Registry(HashMap<StepKind, Arc<dyn ErasedStep>>);

impl Registry {
    /// Every pipeline kind; the test kinds (`sleep`, `fail`, `noop`) only with the `test-kinds`
    /// feature.
    #[must_use]
    pub fn builtin() -> Self {
        let mut r = Self::default();
        // A match per kind: a new `StepKind` does not compile until it is registered here.
        for &kind in StepKind::ALL {
            match kind {
                StepKind::Acquire => r.insert(steps::Acquire),
                StepKind::AcquireSummary => r.insert(steps::AcquireSummary),
                StepKind::Train => r.insert(steps::Train),
                StepKind::Evaluate => r.insert(steps::Evaluate),
                StepKind::Predict => r.insert(steps::Predict),
                StepKind::Combine => r.insert(steps::Combine),
                StepKind::Publish => r.insert(steps::Publish),
                StepKind::Suggest => r.insert(steps::Suggest),
                #[cfg(feature = "test-kinds")]
                StepKind::Sleep => r.insert(steps::Sleep),
                #[cfg(feature = "test-kinds")]
                StepKind::Fail => r.insert(steps::Fail),
                #[cfg(feature = "test-kinds")]
                StepKind::Noop => r.insert(steps::Noop),
                #[cfg(not(feature = "test-kinds"))]
                StepKind::Sleep | StepKind::Fail | StepKind::Noop => {}
            }
        }
        r
    }

    /// Adds (or replaces) the body of its arguments' kind.
    pub fn insert<S: Step>(&mut self, step: S) {
        self.0.insert(S::Args::KIND, Arc::new(step));
    }

    /// Whether this registry can run `kind`.
    #[must_use]
    pub fn contains(&self, kind: StepKind) -> bool {
        self.0.contains_key(&kind)
    }

    /// Runs one attempt of a claimed step of `kind`, or `None` when this registry lacks the kind.
    pub(crate) fn run(
        &self,
        kind: StepKind,
        ctx: StepContext,
    ) -> Option<BoxFuture<'static, Result<StepOutput, StepError>>> {
        self.0.get(&kind).map(|s| s.run(ctx))
    }

    /// The kinds this registry can run, in declaration order.
    #[must_use]
    pub fn kinds(&self) -> Vec<StepKind> {
        StepKind::ALL
            .iter()
            .copied()
            .filter(|k| self.0.contains_key(k))
            .collect()
    }

    /// Registered kinds' names, sorted.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.kinds().iter().map(|k| k.name().to_owned()).collect();
        v.sort();
        v
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Registry").field(&self.names()).finish()
    }
}
