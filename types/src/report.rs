//! The evaluation report: every candidate model of a training run on the test split, the chosen one marked.
//!
//! Written by the `evaluate` step (stored in the `evaluation` table and the step's output), read by the
//! API and the results pages.

use crate::Task;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One evaluation of a trained model on the test split of the label set it was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    /// The project's task.
    pub task: Task,
    /// The split scored (`test`).
    pub split: String,
    /// The label-set version the model was trained on.
    pub label_set_version: i32,
    /// Test windows scored.
    pub windows: usize,
    /// Windows left out, by reason (`no_imagery`, `bad_imagery`, `unknown_class`).
    pub skipped: BTreeMap<String, usize>,
    /// The model's class ids, by output index.
    pub class_ids: Vec<i32>,
    /// The trained model's metrics.
    pub model: Metrics,
    /// The frozen-encoder baseline's metrics on the same windows, when the run made one.
    pub baseline: Option<BaselineMetrics>,
    /// Object-store key of the model manifest.
    pub model_key: String,
    /// SHA-256 of the model weights.
    pub weights_sha256: String,
    /// Every model the training run made, scored on the same test windows; the chosen one is marked
    /// (reports from before candidates existed have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CandidateMetrics>,
    /// Which candidate was published, on what evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// How far not to trust these numbers, in plain words ([`EvaluationReport::trust_warnings`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Fewer test windows than this make the scores unreliable.
pub const MIN_TRUSTED_TEST_WINDOWS: usize = 5;
/// A class with fewer test samples than this has rough scores.
pub const MIN_TRUSTED_CLASS_SAMPLES: u64 = 30;

impl EvaluationReport {
    /// What makes the report less trustworthy than it looks: too few test windows, classes with no
    /// or few test samples (a class with none shows no F1, which is not an F1 of 0), and a published
    /// model that scores below the frozen-encoder baseline on the test split.
    #[must_use]
    pub fn trust_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.windows < MIN_TRUSTED_TEST_WINDOWS {
            out.push(format!(
                "Only {} test window(s): scores from so few windows can change a lot with other \
                 windows. Label more windows, or give the test split more of them.",
                self.windows
            ));
        }
        if let Metrics::Classification(m) = &self.model {
            if !m.absent_from_reference.is_empty() {
                let ids: Vec<String> = m
                    .absent_from_reference
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                out.push(format!(
                    "Class(es) {} have no test samples: their scores are not measured (not 0) and \
                     the averages leave them out.",
                    ids.join(", ")
                ));
            }
            for c in &m.per_class {
                if c.support > 0 && c.support < MIN_TRUSTED_CLASS_SAMPLES {
                    out.push(format!(
                        "Class {} has only {} test sample(s): its scores are rough.",
                        c.class_id
                            .map_or_else(|| format!("#{}", c.index), |id| id.to_string()),
                        c.support
                    ));
                }
            }
            if let Some(Metrics::Classification(b)) = self.baseline.as_ref().map(|b| &b.metrics)
                && b.macro_f1 > m.macro_f1 + 1e-9
            {
                out.push(format!(
                    "The published model scores below the frozen-encoder baseline on the test split \
                     (macro-F1 {:.3} against {:.3}).",
                    m.macro_f1, b.macro_f1
                ));
            }
        }
        out
    }
}

/// One candidate model of a training run, on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateMetrics {
    /// `raw_pixels`, `pixel_context`, `linear_probe`, `knn_probe`, `hybrid_linear`, `fine_tuned`.
    pub name: String,
    /// What the candidate is, in words.
    pub description: String,
    /// Whether it can be published as a map (the kNN probe is a reference only).
    pub publishable: bool,
    /// Whether it is the model of this run.
    pub chosen: bool,
    /// Its score on the validation split (the selection metric), when there were validation labels:
    /// held-out predictions only, from cross-validation when `cross_validated`.
    pub val_score: Option<f64>,
    /// Whether `val_score` comes from cross-validation over the training and validation windows (the
    /// ridge models); otherwise from the half of the validation windows no candidate was tuned on.
    #[serde(default)]
    pub cross_validated: bool,
    /// Its score on that half of the validation windows, on which it was compared with candidates that
    /// are not cross-validated.
    #[serde(default)]
    pub judge_score: Option<f64>,
    /// Its metrics on the test split.
    pub test: Metrics,
}

/// How a training run chose its model among the candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The validation metric compared: `macro_f1` (class tasks) or `rmse` (regression).
    pub metric: String,
    /// Name of the chosen candidate.
    pub chosen: String,
    /// Why, in one sentence a user can read.
    pub reason: String,
    /// Whether the fine-tuned model scored below a simpler candidate on validation.
    pub fine_tuned_lost: bool,
}

/// Metrics of one model: classes (classification, segmentation) or values (regression).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Metrics {
    /// Class tasks.
    Classification(ClassificationMetrics),
    /// Regression.
    Regression(RegressionMetrics),
}

impl Metrics {
    /// The headline score: accuracy for class tasks, R² (when defined) for regression.
    #[must_use]
    pub fn headline(&self) -> Option<f64> {
        match self {
            Metrics::Classification(c) => Some(c.accuracy),
            Metrics::Regression(r) => r.r2,
        }
    }
}

/// Class-task metrics. Undefined ratios (no prediction or no support of a class) are 0.
///
/// Classes absent from the reference: macro-F1 and mIoU both average over the classes that occur in the
/// reference (support > 0) only; an absent class keeps its row in `per_class` (support 0, and a precision
/// of 0 if it was predicted, which lowers the F1 of nothing but shows in the confusion matrix) and is
/// listed in `absent_from_reference`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    /// Share of samples (windows or labelled pixels) predicted right.
    pub accuracy: f64,
    /// Mean F1 over the classes present in the reference.
    pub macro_f1: f64,
    /// Per class, by output index.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion_matrix[truth][predicted]`, by output index.
    pub confusion_matrix: Vec<Vec<u64>>,
    /// Samples counted.
    pub samples: u64,
    /// Mean IoU over the classes present in the reference (segmentation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miou: Option<f64>,
    /// Class ids (or output indices) with no sample in the reference, left out of the averages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent_from_reference: Vec<i32>,
    /// Accuracy of labelled pixels within 30 m (3 pixels) of a labelled pixel of another class
    /// (segmentation with polygon labels only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_accuracy: Option<f64>,
    /// Pixels counted in `edge_accuracy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_samples: Option<u64>,
}

/// Metrics of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Output index.
    pub index: usize,
    /// Class id.
    pub class_id: Option<i32>,
    /// Of the predictions of this class, the share that were right.
    pub precision: f64,
    /// Of the samples of this class, the share found.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Intersection over union.
    pub iou: f64,
    /// Samples of this class in the truth.
    pub support: u64,
}

/// Regression metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Coefficient of determination (undefined when the truth is constant).
    pub r2: Option<f64>,
    /// Samples.
    pub samples: usize,
}

/// The baseline's metrics, with how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineMetrics {
    /// The metrics.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// The method (e.g. `knn`, `linear_probe`).
    pub method: Value,
    /// The baseline's own summary (validation scores of its candidates).
    pub summary: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stored_report_reads_back_and_writes_the_same_json() {
        let stored = json!({
            "task": "segmentation", "split": "test", "label_set_version": 3, "windows": 2,
            "skipped": {"no_imagery": 1}, "class_ids": [10, 20],
            "model": {"accuracy": 0.75, "macro_f1": 0.7, "samples": 4, "miou": 0.5,
                "confusion_matrix": [[2, 1], [0, 1]],
                "per_class": [
                    {"index": 0, "class_id": 10, "precision": 1.0, "recall": 0.667, "f1": 0.8, "iou": 0.667, "support": 3},
                    {"index": 1, "class_id": 20, "precision": 0.5, "recall": 1.0, "f1": 0.667, "iou": 0.5, "support": 1}]},
            "baseline": {"mae": 1.0, "rmse": 1.0, "r2": null, "samples": 3, "method": "ridge", "summary": {}},
            "model_key": "k", "weights_sha256": "00",
        });
        let r: EvaluationReport = serde_json::from_value(stored.clone()).expect("report");
        assert!(matches!(r.model, Metrics::Classification(ref c) if c.miou == Some(0.5)));
        assert!(matches!(
            r.baseline,
            Some(BaselineMetrics {
                metrics: Metrics::Regression(_),
                ..
            })
        ));
        assert_eq!(serde_json::to_value(&r).expect("json"), stored);
    }

    #[test]
    fn a_report_says_how_far_to_trust_it() {
        let report = |windows: usize, supports: [u64; 3], baseline_f1: f64| -> EvaluationReport {
            let per_class: Vec<Value> = supports
                .iter()
                .enumerate()
                .map(|(i, s)| json!({"index": i, "class_id": 10 * (i + 1), "precision": 0.9, "recall": 0.9,
                                     "f1": if *s > 0 { 0.9 } else { 0.0 }, "iou": 0.8, "support": s}))
                .collect();
            let absent: Vec<i32> = supports
                .iter()
                .enumerate()
                .filter(|(_, s)| **s == 0)
                .map(|(i, _)| 10 * (i32::try_from(i).expect("small") + 1))
                .collect();
            serde_json::from_value(json!({
                "task": "segmentation", "split": "test", "label_set_version": 1, "windows": windows,
                "skipped": {}, "class_ids": [10, 20, 30],
                "model": {"accuracy": 0.9, "macro_f1": 0.8, "samples": 100, "per_class": per_class,
                          "confusion_matrix": [[0, 0, 0], [0, 0, 0], [0, 0, 0]], "absent_from_reference": absent},
                "baseline": {"accuracy": 0.9, "macro_f1": baseline_f1, "samples": 100, "per_class": [],
                             "confusion_matrix": [], "method": "ridge", "summary": {}},
                "model_key": "k", "weights_sha256": "00",
            }))
            .expect("a report")
        };
        // Enough windows and samples, a model above its baseline: nothing to say.
        assert!(report(12, [200, 150, 90], 0.7).trust_warnings().is_empty());
        let w = report(3, [200, 0, 12], 0.85).trust_warnings();
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].contains("Only 3 test window"));
        assert!(w[1].contains("Class(es) 20 have no test samples") && w[1].contains("not 0"));
        assert!(w[2].contains("Class 30 has only 12 test sample"));
        assert!(w[3].contains("below the frozen-encoder baseline"));
    }
}
