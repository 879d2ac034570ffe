//! `sleep`: waits, reporting progress; the reference long-running step.

use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use futures::future::BoxFuture;
use groundwork_store::jobs::Artifact;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::{Duration, Instant};

/// `{"seconds": f64}`.
/// Arguments of `sleep`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepArgs {
    /// How long, 0–86400 s.
    pub seconds: f64,
}

impl StepArgs for SleepArgs {
    const KIND: StepKind = StepKind::Sleep;

    fn check(&self) -> Result<(), String> {
        if (0.0..=86_400.0).contains(&self.seconds) {
            Ok(())
        } else {
            Err("seconds must be within 0–86400".into())
        }
    }
}

/// The `sleep` kind.
#[derive(Debug, Clone, Copy)]
pub struct Sleep;

impl Step for Sleep {
    type Args = SleepArgs;

    fn run(
        &self,
        ctx: StepContext,
        args: SleepArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            let total = Duration::from_secs_f64(args.seconds);
            let start = Instant::now();
            loop {
                let elapsed = start.elapsed();
                if elapsed >= total {
                    break;
                }
                #[expect(clippy::cast_possible_truncation, reason = "a progress fraction")]
                let fraction = (elapsed.as_secs_f64() / total.as_secs_f64()) as f32;
                ctx.progress.set(
                    fraction,
                    format!(
                        "slept {:.1} s of {:.1} s",
                        elapsed.as_secs_f64(),
                        args.seconds
                    ),
                );
                tokio::select! {
                    () = tokio::time::sleep((total - elapsed).min(Duration::from_millis(100))) => {}
                    () = ctx.cancel.cancelled() => return Err(StepError::Cancelled),
                }
            }
            ctx.progress
                .set(1.0, format!("slept {:.1} s", args.seconds));
            Ok(StepOutput {
                output: json!({ "slept_seconds": args.seconds, "attempt": ctx.attempt }),
                artifacts: vec![Artifact {
                    name: "result".into(),
                    uri: None,
                    metadata: json!({ "step": ctx.step_id, "attempt": ctx.attempt }),
                }],
            })
        })
    }
}
