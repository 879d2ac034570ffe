//! The Groundwork step runtime: a worker registers in a pool, takes dispatch messages from apalis for
//! the queues it serves, claims steps (lease), heartbeats progress, honours cancels, records outcomes,
//! and runs the reaper. Each step kind is a module under [`steps`].
#![warn(missing_docs)]

mod capabilities;
mod runtime;
pub mod steps;
mod wake;

pub use capabilities::{default_pool, detect as detect_capabilities};
pub use runtime::{Worker, WorkerConfig, run_reaper};

use futures::future::BoxFuture;
use groundwork_store::jobs::Artifact;
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
    /// This attempt (1-based).
    pub attempt: i32,
    /// Kind-specific arguments.
    pub args: Value,
    /// Report progress here; it goes out with the next heartbeat.
    pub progress: Progress,
    /// Cancelled when the step must stop (cancel requested, lease lost, shutdown). Async bodies are
    /// also dropped at that point; blocking work must poll this token.
    pub cancel: CancellationToken,
    /// The database.
    pub pool: groundwork_store::PgPool,
    /// The object store, when the worker has one.
    pub objects: Option<Arc<dyn object_store::ObjectStore>>,
    /// Root of the pretrained OlmoEarth checkpoints (`groundwork model fetch`), when configured.
    pub model_dir: Option<std::path::PathBuf>,
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
    /// The object store, or a permanent error naming the step kind that needs it.
    pub fn objects(&self, kind: &str) -> Result<Arc<dyn object_store::ObjectStore>, StepError> {
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
}

impl From<anyhow::Error> for StepError {
    fn from(e: anyhow::Error) -> Self {
        Self::Retryable(e)
    }
}

/// A step kind: a name and a body.
pub trait StepKind: Send + Sync + 'static {
    /// Runs one attempt.
    fn run(&self, ctx: StepContext) -> BoxFuture<'static, Result<StepOutput, StepError>>;
}

/// Step kinds by name.
#[derive(Clone, Default)]
pub struct Registry(HashMap<String, Arc<dyn StepKind>>);

impl Registry {
    /// The built-in kinds (`acquire`, `acquire_summary`, `predict`, `combine`, `publish`, `train`,
    /// `evaluate`; with the `test-kinds` feature also `sleep`, `fail` and `noop`).
    #[must_use]
    pub fn builtin() -> Self {
        let mut r = Self::default();
        #[cfg(feature = "test-kinds")]
        {
            r.insert("sleep", steps::Sleep);
            r.insert("fail", steps::Fail);
            r.insert("noop", steps::Noop);
        }
        r.insert("acquire", steps::Acquire);
        r.insert("acquire_summary", steps::AcquireSummary);
        r.insert("predict", steps::Predict);
        r.insert("combine", steps::Combine);
        r.insert("publish", steps::Publish);
        r.insert("train", steps::Train);
        r.insert("evaluate", steps::Evaluate);
        r
    }

    /// Adds a kind.
    pub fn insert(&mut self, name: &str, kind: impl StepKind) {
        self.0.insert(name.to_owned(), Arc::new(kind));
    }

    /// Looks a kind up.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<Arc<dyn StepKind>> {
        self.0.get(name).cloned()
    }

    /// Registered names.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.keys().cloned().collect();
        v.sort();
        v
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Registry").field(&self.names()).finish()
    }
}
