//! Step kinds: pipeline stages (`acquire`, …) and the reference kinds `sleep`, `fail` and `noop`.

mod acquire;
mod evaluate;
mod fail;
pub mod labels_contract;
mod noop;
mod sleep;
mod train;

pub use acquire::{Acquire, AcquireArgs, AcquireSummary, plan_windows};
pub use evaluate::{Evaluate, EvaluateArgs, evaluate_model};
pub use fail::Fail;
pub use noop::Noop;
pub use sleep::Sleep;
pub use train::{Train, TrainArgs, train_on_examples};

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
