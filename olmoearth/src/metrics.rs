//! Evaluation metrics: a confusion matrix with an ignore value, accuracy, per-class precision, recall,
//! F1 and IoU with support, macro and weighted F1, mean IoU; and MAE, RMSE and R² for regression.
//!
//! Conventions follow scikit-learn: a ratio whose denominator is zero is 0 (a class never predicted has
//! precision 0); macro averages run over the classes that occur in the truth or the predictions; R² of
//! constant truth is 1 for a perfect prediction and 0 otherwise.

use serde::{Deserialize, Serialize};

/// Inputs the metrics cannot be computed from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Truth and predictions differ in length.
    #[error("{truth} truth values but {predicted} predictions")]
    LengthMismatch {
        /// Truth values.
        truth: usize,
        /// Predictions.
        predicted: usize,
    },
    /// A class id is not below the number of classes (and is not the ignore value).
    #[error("class {class} is out of range for {num_classes} classes")]
    ClassOutOfRange {
        /// The class id.
        class: u32,
        /// Number of classes.
        num_classes: usize,
    },
    /// A value is NaN or infinite.
    #[error("value {index} is not finite")]
    NotFinite {
        /// Index of the value.
        index: usize,
    },
}

/// Counts of (true class, predicted class) pairs; accumulates over batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// Number of classes.
    pub num_classes: usize,
    /// Truth value to skip (e.g. 255 for unlabelled pixels).
    pub ignore: Option<u32>,
    /// `counts[truth][predicted]`.
    pub counts: Vec<Vec<u64>>,
    /// Pairs skipped because the truth was the ignore value.
    pub ignored: u64,
}

impl ConfusionMatrix {
    /// An empty matrix.
    #[must_use]
    pub fn new(num_classes: usize, ignore: Option<u32>) -> Self {
        Self {
            num_classes,
            ignore,
            counts: vec![vec![0; num_classes]; num_classes],
            ignored: 0,
        }
    }

    fn index(&self, class: u32) -> Result<usize, MetricsError> {
        let i = class as usize;
        if i < self.num_classes {
            Ok(i)
        } else {
            Err(MetricsError::ClassOutOfRange {
                class,
                num_classes: self.num_classes,
            })
        }
    }

    /// Adds pairs. Nothing is added when any pair is invalid.
    pub fn add(&mut self, truth: &[u32], predicted: &[u32]) -> Result<(), MetricsError> {
        if truth.len() != predicted.len() {
            return Err(MetricsError::LengthMismatch {
                truth: truth.len(),
                predicted: predicted.len(),
            });
        }
        let mut pairs = Vec::with_capacity(truth.len());
        let mut ignored = 0;
        for (&t, &p) in truth.iter().zip(predicted) {
            if Some(t) == self.ignore {
                ignored += 1;
                continue;
            }
            pairs.push((self.index(t)?, self.index(p)?));
        }
        for (t, p) in pairs {
            self.counts[t][p] += 1;
        }
        self.ignored += ignored;
        Ok(())
    }

    /// Pairs counted (ignored ones excluded).
    #[must_use]
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// The report of everything added so far.
    #[must_use]
    pub fn report(&self) -> ClassificationReport {
        let n = self.num_classes;
        let total = self.total();
        let correct: u64 = (0..n).map(|i| self.counts[i][i]).sum();
        let mut per_class = Vec::with_capacity(n);
        let (mut f1_sum, mut iou_sum, mut present, mut weighted) = (0.0, 0.0, 0_usize, 0.0);
        for (c, row) in self.counts.iter().enumerate() {
            let tp = row[c];
            let support: u64 = row.iter().sum();
            let predicted: u64 = (0..n).map(|t| self.counts[t][c]).sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            let iou = ratio(tp, support + predicted - tp);
            if support > 0 || predicted > 0 {
                present += 1;
                f1_sum += f1;
                iou_sum += iou;
            }
            weighted += f1 * support as f64;
            per_class.push(ClassMetrics {
                class_id: u32::try_from(c).unwrap_or(u32::MAX),
                precision,
                recall,
                f1,
                iou,
                support,
                predicted,
            });
        }
        let mean = |s: f64| if present > 0 { s / present as f64 } else { 0.0 };
        ClassificationReport {
            samples: total,
            ignored: self.ignored,
            accuracy: ratio(correct, total),
            macro_f1: mean(f1_sum),
            weighted_f1: if total > 0 {
                weighted / total as f64
            } else {
                0.0
            },
            mean_iou: mean(iou_sum),
            per_class,
            confusion: self.counts.clone(),
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Metrics of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class id.
    pub class_id: u32,
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
    /// Predictions of this class.
    pub predicted: u64,
}

/// Classification (or per-pixel segmentation) metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Samples counted.
    pub samples: u64,
    /// Samples skipped (truth was the ignore value).
    pub ignored: u64,
    /// Share of samples predicted right.
    pub accuracy: f64,
    /// Mean F1 over the classes in the truth or the predictions.
    pub macro_f1: f64,
    /// F1 averaged with support as weight.
    pub weighted_f1: f64,
    /// Mean IoU over the classes in the truth or the predictions.
    pub mean_iou: f64,
    /// Per class, by id.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[truth][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// The classification report of `truth` against `predicted`.
pub fn classification_report(
    truth: &[u32],
    predicted: &[u32],
    num_classes: usize,
    ignore: Option<u32>,
) -> Result<ClassificationReport, MetricsError> {
    let mut m = ConfusionMatrix::new(num_classes, ignore);
    m.add(truth, predicted)?;
    Ok(m.report())
}

/// Regression metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    /// Samples.
    pub samples: u64,
    /// Mean absolute error.
    pub mae: f64,
    /// Mean squared error.
    pub mse: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Coefficient of determination.
    pub r2: f64,
}

/// The regression report of `truth` against `predicted`.
pub fn regression_report(
    truth: &[f64],
    predicted: &[f64],
) -> Result<RegressionReport, MetricsError> {
    if truth.len() != predicted.len() {
        return Err(MetricsError::LengthMismatch {
            truth: truth.len(),
            predicted: predicted.len(),
        });
    }
    if let Some(index) = truth
        .iter()
        .zip(predicted)
        .position(|(t, p)| !t.is_finite() || !p.is_finite())
    {
        return Err(MetricsError::NotFinite { index });
    }
    let n = truth.len();
    if n == 0 {
        return Ok(RegressionReport {
            samples: 0,
            mae: 0.0,
            mse: 0.0,
            rmse: 0.0,
            r2: 0.0,
        });
    }
    let nf = n as f64;
    let mean = truth.iter().sum::<f64>() / nf;
    let mae = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).abs())
        .sum::<f64>()
        / nf;
    let ss_res: f64 = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).powi(2))
        .sum();
    let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    let mse = ss_res / nf;
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else if ss_res == 0.0 {
        1.0
    } else {
        0.0
    };
    Ok(RegressionReport {
        samples: n as u64,
        mae,
        mse,
        rmse: mse.sqrt(),
        r2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn a_three_class_case_computed_by_hand() {
        // truth:     0 0 0 1 1 2 2 2
        // predicted: 0 0 1 1 2 2 2 0
        let truth = [0, 0, 0, 1, 1, 2, 2, 2];
        let pred = [0, 0, 1, 1, 2, 2, 2, 0];
        let r = classification_report(&truth, &pred, 3, None).unwrap();
        assert_eq!(
            r.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![1, 0, 2]]
        );
        assert_eq!(r.samples, 8);
        close(r.accuracy, 5.0 / 8.0);
        // Class 0: tp 2, predicted 3, support 3 → p = r = 2/3, f1 = 2/3, iou = 2/4.
        close(r.per_class[0].precision, 2.0 / 3.0);
        close(r.per_class[0].recall, 2.0 / 3.0);
        close(r.per_class[0].f1, 2.0 / 3.0);
        close(r.per_class[0].iou, 0.5);
        // Class 1: tp 1, predicted 2, support 2 → p = r = f1 = 1/2, iou = 1/3.
        close(r.per_class[1].f1, 0.5);
        close(r.per_class[1].iou, 1.0 / 3.0);
        // Class 2: tp 2, predicted 3, support 3 → f1 = 2/3, iou = 1/2.
        close(r.per_class[2].f1, 2.0 / 3.0);
        assert_eq!(r.per_class[2].support, 3);
        close(r.macro_f1, (2.0 / 3.0 + 0.5 + 2.0 / 3.0) / 3.0);
        close(
            r.weighted_f1,
            (3.0 * 2.0 / 3.0 + 2.0 * 0.5 + 3.0 * 2.0 / 3.0) / 8.0,
        );
        close(r.mean_iou, (0.5 + 1.0 / 3.0 + 0.5) / 3.0);
    }

    #[test]
    fn ignored_truth_is_skipped_and_counted() {
        let truth = [0, 255, 1, 255];
        let pred = [0, 1, 0, 0];
        let r = classification_report(&truth, &pred, 2, Some(255)).unwrap();
        assert_eq!(r.samples, 2);
        assert_eq!(r.ignored, 2);
        close(r.accuracy, 0.5);
        assert_eq!(r.confusion, vec![vec![1, 0], vec![1, 0]]);
        // Class 1 is never predicted: precision 0, not NaN.
        close(r.per_class[1].precision, 0.0);
        close(r.per_class[1].f1, 0.0);
    }

    #[test]
    fn absent_classes_do_not_dilute_the_macro_averages() {
        // Class 2 occurs in neither truth nor predictions.
        let r = classification_report(&[0, 1], &[0, 1], 3, None).unwrap();
        close(r.macro_f1, 1.0);
        close(r.mean_iou, 1.0);
        assert_eq!(r.per_class[2].support, 0);
    }

    #[test]
    fn bad_inputs_are_refused_and_leave_the_matrix_unchanged() {
        let mut m = ConfusionMatrix::new(2, Some(255));
        m.add(&[0, 1], &[0, 1]).unwrap();
        assert!(matches!(
            m.add(&[0], &[0, 1]),
            Err(MetricsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            m.add(&[0, 1], &[0, 2]),
            Err(MetricsError::ClassOutOfRange {
                class: 2,
                num_classes: 2
            })
        ));
        assert_eq!(m.total(), 2);
        // Batches accumulate.
        m.add(&[1], &[0]).unwrap();
        close(m.report().accuracy, 2.0 / 3.0);
    }

    #[test]
    fn an_empty_report_is_zeros_not_nan() {
        let r = classification_report(&[], &[], 2, None).unwrap();
        assert_eq!(r.accuracy, 0.0);
        assert_eq!(r.macro_f1, 0.0);
        assert!(
            serde_json::to_string(&r)
                .unwrap()
                .contains("\"accuracy\":0.0")
        );
    }

    #[test]
    fn regression_metrics_computed_by_hand() {
        // errors: 0.5, 0, -1.5, -1 → |e| mean 0.75; e² mean (0.25 + 0 + 2.25 + 1)/4 = 0.875.
        let truth = [3.0, -0.5, 2.0, 7.0];
        let pred = [2.5, -0.5, 3.5, 8.0];
        let r = regression_report(&truth, &pred).unwrap();
        close(r.mae, 0.75);
        close(r.mse, 0.875);
        close(r.rmse, 0.875_f64.sqrt());
        // mean 2.875; ss_tot = 0.015625 + 11.390625 + 0.765625 + 17.015625 = 29.1875.
        close(r.r2, 1.0 - 3.5 / 29.1875);
    }

    #[test]
    fn r2_of_constant_truth_follows_scikit_learn() {
        close(regression_report(&[2.0, 2.0], &[2.0, 2.0]).unwrap().r2, 1.0);
        close(regression_report(&[2.0, 2.0], &[1.0, 2.0]).unwrap().r2, 0.0);
        assert!(matches!(
            regression_report(&[1.0, f64::NAN], &[1.0, 1.0]),
            Err(MetricsError::NotFinite { index: 1 })
        ));
        assert!(regression_report(&[1.0], &[]).is_err());
    }
}
