//! What training and evaluation read from a project's labels: one example per labelled window with its
//! split and target, for one label-set version. The types follow the label store's training contract;
//! [`training_examples`] is the one place that reads them from the database.

use groundwork_store::PgPool;
use uuid::Uuid;

/// The spatial split a window belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Fits the model.
    Train,
    /// Selects hyper-parameters and the best epoch.
    Val,
    /// Held out for the evaluation report.
    Test,
}

/// A window's label.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelTarget {
    /// A class id per window.
    Class(i32),
    /// A value per window.
    Value(f64),
    /// A class id per pixel, row-major `size × size`; 255 = no label.
    Mask {
        /// Side in pixels.
        size: u32,
        /// Class ids.
        pixels: Vec<u8>,
    },
}

/// One labelled window.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingExample {
    /// Window id.
    pub window_id: String,
    /// Its split.
    pub split: Split,
    /// Its label.
    pub target: LabelTarget,
}

/// The examples of a project's label set (`version`, or the latest) and that version.
///
/// This installation keeps no label sets, so every project is reported as having none.
pub async fn training_examples(
    _pool: &PgPool,
    project_id: Uuid,
    version: Option<i32>,
) -> anyhow::Result<(i32, Vec<TrainingExample>)> {
    match version {
        Some(v) => anyhow::bail!("project {project_id} has no label set version {v}"),
        None => anyhow::bail!("project {project_id} has no label set"),
    }
}
