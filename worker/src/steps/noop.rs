//! `noop`: does nothing; measures the job system's own overhead.

use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use futures::future::BoxFuture;
use serde::{Deserialize, Deserializer, Serialize};

/// The `noop` kind.
#[derive(Debug, Clone, Copy)]
pub struct Noop;

/// Arguments of `noop`: none (whatever the step row holds is ignored).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NoopArgs {}

impl<'de> Deserialize<'de> for NoopArgs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| NoopArgs {})
    }
}

impl StepArgs for NoopArgs {
    const KIND: StepKind = StepKind::Noop;
}

impl Step for Noop {
    type Args = NoopArgs;

    fn run(
        &self,
        _ctx: StepContext,
        _args: NoopArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async { Ok(StepOutput::default()) })
    }
}
