//! `noop`: does nothing; measures the job system's own overhead.

use crate::{StepContext, StepError, StepKind, StepOutput};
use futures::future::BoxFuture;

/// The `noop` kind.
#[derive(Debug, Clone, Copy)]
pub struct Noop;

impl StepKind for Noop {
    fn run(&self, _ctx: StepContext) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async { Ok(StepOutput::default()) })
    }
}
