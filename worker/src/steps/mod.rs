//! Step kinds: pipeline stages (`acquire`, …) and, with the `test-kinds` feature, the reference kinds
//! `sleep`, `fail` and `noop`.

mod acquire;
pub mod combine;
mod evaluate;
#[cfg(feature = "test-kinds")]
mod fail;
#[cfg(feature = "test-kinds")]
mod noop;
pub mod predict;
pub mod publish;
#[cfg(feature = "test-kinds")]
mod sleep;
mod train;

pub use acquire::{Acquire, AcquireArgs, AcquireSummary, plan_windows};
pub use combine::Combine;
pub use evaluate::{Evaluate, EvaluateArgs, evaluate_model};
#[cfg(feature = "test-kinds")]
pub use fail::Fail;
#[cfg(feature = "test-kinds")]
pub use noop::Noop;
pub use predict::{Predict, plan_prediction};
pub use publish::Publish;
#[cfg(feature = "test-kinds")]
pub use sleep::Sleep;
pub use train::{ModelManifest, Train, TrainArgs, model_keys, project_prefix, train_on_examples};

use crate::StepError;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses a step's arguments; malformed arguments are a permanent failure.
pub(crate) fn parse_args<T: DeserializeOwned>(kind: &str, args: &Value) -> Result<T, StepError> {
    serde_json::from_value(args.clone()).map_err(|e| {
        StepError::Permanent(anyhow::anyhow!(
            "invalid arguments for step kind `{kind}`: {e}"
        ))
    })
}
