//! The words Groundwork's crates share, as types.
//!
//! `store`, `imagery`, `olmoearth`, `worker` and `server` all speak of modalities, tasks, heads, model
//! sizes, classes, step kinds and job states. Each is one enum here, so adding a variant is a compile
//! error at every `match` that must handle it. Each enum has a stable lower-case name (its wire, database
//! and object-key form), parsed by [`std::str::FromStr`] and printed by [`std::fmt::Display`].
//!
//! The crate is a leaf: it depends on nothing heavier than serde.
#![warn(missing_docs)]

mod class;
mod job;
pub mod keys;
mod modality;
mod model;
mod names;
mod report;

pub use class::ClassDef;
pub use job::{DeviceKind, RunState, StepKind, StepState};
pub use modality::Modality;
pub use model::{HeadKind, ModelSize, Task};
pub use names::UnknownName;
pub use report::{
    BaselineMetrics, CandidateMetrics, ClassMetrics, ClassificationMetrics, EvaluationReport,
    Metrics, RegressionMetrics, Selection,
};
