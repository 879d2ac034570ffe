//! `fail`: fails its first `times` attempts, then succeeds; exercises retry and backoff.

use super::parse_args;
use crate::{StepContext, StepError, StepKind, StepOutput};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

/// `{"times": n, "permanent": bool}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    times: i32,
    #[serde(default)]
    permanent: bool,
}

/// The `fail` kind.
#[derive(Debug, Clone, Copy)]
pub struct Fail;

impl StepKind for Fail {
    fn run(&self, ctx: StepContext) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            let args: Args = parse_args("fail", &ctx.args)?;
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
