//! Step kinds: the pipeline stages (`acquire`, `train`, …) and the job-system test kinds `sleep`, `fail`
//! and `noop` (always compiled, registered only with the `test-kinds` feature). Each module holds its kind's typed arguments (a [`crate::StepArgs`]) and its body (a
//! [`crate::Step`]).

use crate::StepError;

/// A failure another attempt cannot fix (bad input, a missing model): the step fails for good.
fn permanent(e: impl Into<anyhow::Error>) -> StepError {
    StepError::Permanent(e.into())
}

/// A failure another attempt may fix (network, store): the step is retried after its backoff.
fn retryable(e: impl Into<anyhow::Error>) -> StepError {
    StepError::Retryable(e.into())
}

mod acquire;
pub mod candidates;
pub mod combine;
mod evaluate;
mod fail;
mod noop;
pub mod predict;
pub mod publish;
mod sleep;
pub mod suggest;
mod train;

pub use acquire::{
    Acquire, AcquireArgs, AcquireSummary, Period, SummaryArgs, acquisition_steps,
    default_partitions, plan_windows, window_plan,
};
pub use combine::{Combine, CombineArgs};
pub use evaluate::{Evaluate, EvaluateArgs, evaluate_model};
pub use fail::{Fail, FailArgs};
pub use noop::{Noop, NoopArgs};
pub use predict::{Predict, PredictArgs, plan_prediction};
pub use publish::{Publish, PublishArgs};
pub use sleep::{Sleep, SleepArgs};
pub use suggest::{Pick, Suggest, SuggestArgs, Token, choose, probe_scores, window_tokens};
pub use train::{ModelManifest, Train, TrainArgs, train_on_examples};
