//! `fail`: fails its first `times` attempts, then succeeds; exercises retry and backoff.

use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `{"times": n, "permanent": bool}`.
/// Arguments of `fail`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailArgs {
    /// Attempts that fail before one succeeds.
    pub times: i32,
    /// Fail permanently (no retry) instead of retryably.
    #[serde(default)]
    pub permanent: bool,
}

impl StepArgs for FailArgs {
    const KIND: StepKind = StepKind::Fail;

    fn check(&self) -> Result<(), String> {
        if (0..=20).contains(&self.times) {
            Ok(())
        } else {
            Err("times must be 0–20".into())
        }
    }
}

/// The `fail` kind.
#[derive(Debug, Clone, Copy)]
pub struct Fail;

impl Step for Fail {
    type Args = FailArgs;

    fn run(
        &self,
        ctx: StepContext,
        args: FailArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            if ctx.attempt <= args.times {
                let e = anyhow::anyhow!("planned failure {} of {}", ctx.attempt, args.times);
                return Err(if args.permanent {
                    StepError::Permanent(e)
                } else {
                    StepError::Retryable(e)
                });
            }
            Ok(StepOutput {
                output: json!({ "succeeded_on_attempt": ctx.attempt }),
                artifacts: Vec::new(),
            })
        })
    }
}
