//! The job system's words: step kinds, step states and run states (see `docs/state_machine.md`).

use crate::names::named_enum;

/// What a step does: one body in the worker's registry per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepKind {
    /// Read a partition of the project's windows from STAC into window tensors.
    Acquire,
    /// Fan-in of `acquire`: the run's window counts against its success threshold.
    AcquireSummary,
    /// The frozen-encoder baseline, then the fine-tuned task head.
    Train,
    /// The trained model and its baseline on the test split.
    Evaluate,
    /// A partition of the area through a model, as overlapping tiles blended per window.
    Predict,
    /// The partitions' predictions into one UTM COG per zone.
    Combine,
    /// The web-mercator COG, tiles and STAC Item of a combined map.
    Publish,
    /// Points the user should label next, from the frozen encoder's embeddings of the windows.
    Suggest,
    /// Test kind: sleeps, honouring cancellation.
    Sleep,
    /// Test kind: fails a given number of attempts.
    Fail,
    /// Test kind: does nothing.
    Noop,
}

named_enum!(StepKind, "step kind", [
    Acquire => "acquire",
    AcquireSummary => "acquire_summary",
    Train => "train",
    Evaluate => "evaluate",
    Predict => "predict",
    Combine => "combine",
    Publish => "publish",
    Suggest => "suggest",
    Sleep => "sleep",
    Fail => "fail",
    Noop => "noop",
]);

impl StepKind {
    /// Whether the kind exists only for tests of the job system (never registered in production).
    #[must_use]
    pub const fn is_test_kind(self) -> bool {
        match self {
            StepKind::Sleep | StepKind::Fail | StepKind::Noop => true,
            StepKind::Acquire
            | StepKind::AcquireSummary
            | StepKind::Train
            | StepKind::Evaluate
            | StepKind::Predict
            | StepKind::Combine
            | StepKind::Publish
            | StepKind::Suggest => false,
        }
    }
}

/// A step's state. `queued → running → succeeded | failed | cancelled`; a failed attempt below its
/// maximum returns to `queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepState {
    /// Waiting for its dependencies, its backoff or a worker.
    Queued,
    /// Leased by a worker.
    Running,
    /// Done; its output is committed.
    Succeeded,
    /// Out of attempts, or failed for good.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

named_enum!(StepState, "step state", [
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
]);

impl StepState {
    /// Whether the state is final (nothing moves the step on without a retry).
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        match self {
            StepState::Succeeded | StepState::Failed | StepState::Cancelled => true,
            StepState::Queued | StepState::Running => false,
        }
    }
}

/// A run's state, derived from its steps: `running` once one has started, `succeeded` when all have,
/// `failed` or `cancelled` when one ended so and none is left to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// No step has started yet.
    Queued,
    /// Some step has started and the run is not finished.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed for good.
    Failed,
    /// A step was cancelled.
    Cancelled,
}

named_enum!(RunState, "run state", [
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
]);

impl RunState {
    /// Whether the run is finished.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        match self {
            RunState::Succeeded | RunState::Failed | RunState::Cancelled => true,
            RunState::Queued | RunState::Running => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_states_round_trip_their_names() {
        for &k in StepKind::ALL {
            assert_eq!(k.name().parse::<StepKind>(), Ok(k));
        }
        for &s in StepState::ALL {
            assert_eq!(s.name().parse::<StepState>(), Ok(s));
        }
        assert!("bogus".parse::<StepKind>().is_err());
        assert_eq!(StepKind::ALL.iter().filter(|k| k.is_test_kind()).count(), 3);
    }
}

/// The kind of device a step attempt ran on, as device time is counted, estimated, priced and capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    /// The CPU.
    Cpu,
    /// A CUDA GPU.
    Gpu,
}

named_enum!(DeviceKind, "device kind", [
    Cpu => "cpu",
    Gpu => "gpu",
]);

impl DeviceKind {
    /// The device kind a step sent to `queue` runs on (`gpu` for the GPU queue, else `cpu`).
    #[must_use]
    pub fn of_queue(queue: &str) -> Self {
        if queue == "gpu" { Self::Gpu } else { Self::Cpu }
    }
}
