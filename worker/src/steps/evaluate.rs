//! `evaluate`: the trained model of a run and its frozen-encoder baseline, side by side on the test split
//! of the label set the model was trained on. Class tasks report accuracy, per-class precision, recall
//! and F1, the confusion matrix and (segmentation) mIoU; regression reports MAE, RMSE and R². The report
//! is stored in `evaluation` and returned as the step output.

use super::candidates::StoredCandidate;
use super::train::{ModelManifest, WindowSource, load_examples};
use super::{permanent, retryable};
use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use futures::future::BoxFuture;
use groundwork_store::labels::{Split, TrainingExample};
use groundwork_store::models;
use groundwork_types::keys::ModelKeys;
use groundwork_types::{
    BaselineMetrics, CandidateMetrics, ClassMetrics, ClassificationMetrics, EvaluationReport,
    Metrics, RegressionMetrics, Selection, Task,
};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use olmoearth::finetune::{IGNORE, Prediction, Target, predict_examples};
use olmoearth::task::TaskModel;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Arguments of `evaluate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateArgs {
    /// The run whose `train` step wrote the model (default: this step's run).
    #[serde(default)]
    pub train_run_id: Option<Uuid>,
    /// `cpu`, `cuda:N` or `auto` (default).
    #[serde(default)]
    pub device: Option<String>,
}

impl StepArgs for EvaluateArgs {
    const KIND: StepKind = StepKind::Evaluate;
}

/// A confusion matrix: `counts[truth][predicted]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    /// Counts, K × K.
    pub counts: Vec<Vec<u64>>,
}

impl Confusion {
    /// An empty K-class matrix.
    #[must_use]
    pub fn new(k: usize) -> Self {
        Confusion {
            counts: vec![vec![0; k]; k],
        }
    }

    /// Adds one prediction of a window (or every labelled pixel of a map).
    pub fn add(&mut self, p: &Prediction, t: &Target) {
        let k = self.counts.len();
        let mut one = |truth: usize, pred: usize| {
            if truth < k && pred < k {
                self.counts[truth][pred] += 1;
            }
        };
        match (p, t) {
            (Prediction::Class(a), Target::Class(b)) => one(*b as usize, *a as usize),
            (Prediction::Map(a), Target::Mask(b)) => {
                for (x, y) in a.iter().zip(b) {
                    if *y != IGNORE {
                        one(usize::from(*y), usize::from(*x));
                    }
                }
            }
            _ => {}
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "counts to ratios")]
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Accuracy, per-class precision/recall/F1/support, macro F1, mIoU and the matrix. Undefined ratios (no
/// prediction or no support of a class) are 0. Macro-F1 and mIoU both average over the classes present
/// in the reference (support > 0); the others are listed in `absent_from_reference`.
#[must_use]
pub fn classification_metrics(
    c: &Confusion,
    class_ids: &[i32],
    with_miou: bool,
) -> ClassificationMetrics {
    // The one implementation of the scores (model selection uses it too).
    let scores = olmoearth::finetune::confusion_scores(&c.counts);
    let class_id = |i: usize| {
        class_ids
            .get(i)
            .copied()
            .unwrap_or_else(|| i32::try_from(i).unwrap_or(i32::MAX))
    };
    let absent: Vec<i32> = scores.absent.iter().map(|&i| class_id(i)).collect();
    let per_class = scores
        .per_class
        .iter()
        .enumerate()
        .map(|(index, s)| ClassMetrics {
            index,
            class_id: class_ids.get(index).copied(),
            precision: s.precision,
            recall: s.recall,
            f1: s.f1,
            iou: s.iou,
            support: s.support,
        })
        .collect();
    ClassificationMetrics {
        accuracy: scores.accuracy,
        macro_f1: scores.macro_f1,
        per_class,
        confusion_matrix: c.counts.clone(),
        samples: scores.total,
        miou: with_miou.then_some(scores.miou),
        absent_from_reference: absent,
        edge_accuracy: None,
        edge_samples: None,
    }
}

/// Pixels from a class edge that count as "at the edge": 3 pixels, 30 m at 10 m.
pub const EDGE_RADIUS: usize = 3;

/// `(correct, total)` over labelled pixels that have a labelled pixel of another class within
/// [`EDGE_RADIUS`] pixels (Chebyshev distance) in the same square window.
#[must_use]
pub fn edge_counts(p: &Prediction, t: &Target) -> (u64, u64) {
    let (Prediction::Map(pred), Target::Mask(truth)) = (p, t) else {
        return (0, 0);
    };
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "the side of a square mask"
    )]
    let side = (truth.len() as f64).sqrt().round() as usize;
    if side * side != truth.len() || pred.len() != truth.len() {
        return (0, 0);
    }
    let r = EDGE_RADIUS;
    let (mut correct, mut total) = (0, 0);
    for y in 0..side {
        for x in 0..side {
            let c = truth[y * side + x];
            if c == IGNORE {
                continue;
            }
            let near_other = (y.saturating_sub(r)..(y + r + 1).min(side)).any(|yy| {
                (x.saturating_sub(r)..(x + r + 1).min(side)).any(|xx| {
                    let o = truth[yy * side + xx];
                    o != IGNORE && o != c
                })
            });
            if near_other {
                total += 1;
                if pred[y * side + x] == c {
                    correct += 1;
                }
            }
        }
    }
    (correct, total)
}

/// MAE, RMSE and R² of `(predicted, truth)` pairs.
#[must_use]
pub fn regression_metrics(pairs: &[(f64, f64)]) -> RegressionMetrics {
    #[expect(clippy::cast_precision_loss, reason = "sample counts")]
    let n = pairs.len().max(1) as f64;
    let mae = pairs.iter().map(|(p, t)| (p - t).abs()).sum::<f64>() / n;
    let sse = pairs.iter().map(|(p, t)| (p - t).powi(2)).sum::<f64>();
    let mean = pairs.iter().map(|(_, t)| t).sum::<f64>() / n;
    let sst = pairs.iter().map(|(_, t)| (t - mean).powi(2)).sum::<f64>();
    RegressionMetrics {
        mae,
        rmse: (sse / n).sqrt(),
        r2: (sst > 0.0).then(|| 1.0 - sse / sst),
        samples: pairs.len(),
    }
}

/// Metrics of predictions against targets for a task.
#[must_use]
pub fn metrics_for(
    task: Task,
    class_ids: &[i32],
    preds: &[Prediction],
    targets: &[&Target],
) -> Metrics {
    if task == Task::Regression {
        let pairs: Vec<(f64, f64)> = preds
            .iter()
            .zip(targets)
            .filter_map(|(p, t)| match (p, t) {
                (Prediction::Value(a), Target::Value(b)) => Some((*a, f64::from(*b))),
                _ => None,
            })
            .collect();
        return Metrics::Regression(regression_metrics(&pairs));
    }
    let mut c = Confusion::new(class_ids.len());
    let (mut edge_ok, mut edge_n) = (0u64, 0u64);
    for (p, t) in preds.iter().zip(targets) {
        c.add(p, t);
        let (ok, n) = edge_counts(p, t);
        edge_ok += ok;
        edge_n += n;
    }
    let mut m = classification_metrics(&c, class_ids, task == Task::Segmentation);
    if task == Task::Segmentation && edge_n > 0 {
        m.edge_accuracy = Some(ratio(edge_ok, edge_n));
        m.edge_samples = Some(edge_n);
    }
    Metrics::Classification(m)
}

/// The `evaluate` kind.
#[derive(Debug, Clone, Copy)]
pub struct Evaluate;

impl Step for Evaluate {
    type Args = EvaluateArgs;

    fn run(
        &self,
        ctx: StepContext,
        args: EvaluateArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            let manifest = read_manifest(&ctx, &args).await?;
            let (_, examples) = ctx
                .training_examples(Some(manifest.1.label_set_version))
                .await?;
            evaluate_with_manifest(&ctx, &args, manifest, examples).await
        })
    }
}

async fn read_manifest(
    ctx: &StepContext,
    args: &EvaluateArgs,
) -> Result<(String, ModelManifest), StepError> {
    let store = ctx.objects(StepKind::Evaluate)?;
    let model_key = super::train::model_keys(ctx, args.train_run_id.unwrap_or(ctx.run_id))
        .await?
        .manifest;
    let bytes = match store.get(&ObjectPath::from(model_key.clone())).await {
        Ok(r) => r.bytes().await.map_err(retryable)?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(permanent(anyhow::anyhow!(
                "no trained model at {model_key}; the run's train step has not succeeded"
            )));
        }
        Err(e) => return Err(retryable(e)),
    };
    let manifest: ModelManifest = serde_json::from_slice(&bytes)
        .map_err(|e| permanent(anyhow::anyhow!("{model_key} is not a model manifest: {e}")))?;
    Ok((model_key, manifest))
}

/// The body of `evaluate` for the label set's examples (only the test split is used).
pub async fn evaluate_model(
    ctx: &StepContext,
    args: &EvaluateArgs,
    examples: Vec<TrainingExample>,
) -> Result<StepOutput, StepError> {
    let manifest = read_manifest(ctx, args).await?;
    evaluate_with_manifest(ctx, args, manifest, examples).await
}

/// [`evaluate_model`] with the manifest already read (`(key, manifest)`).
async fn evaluate_with_manifest(
    ctx: &StepContext,
    args: &EvaluateArgs,
    (model_key, manifest): (String, ModelManifest),
    examples: Vec<TrainingExample>,
) -> Result<StepOutput, StepError> {
    let store = ctx.objects(StepKind::Evaluate)?;
    let train_run = args.train_run_id.unwrap_or(ctx.run_id);
    let keys = ctx.keys();
    let baseline_key = ModelKeys::beside(&model_key).baseline;
    let device = olmoearth::device::parse_device(args.device.as_deref().unwrap_or("auto"))
        .map_err(permanent)?;
    let weights = store
        .get(&ObjectPath::from(manifest.weights_key.clone()))
        .await
        .map_err(retryable)?
        .bytes()
        .await
        .map_err(retryable)?
        .to_vec();
    let sha: String = sha2::Sha256::digest(&weights)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if sha != manifest.weights_sha256 {
        return Err(permanent(anyhow::anyhow!(
            "{} does not match the sha256 in {model_key}",
            manifest.weights_key
        )));
    }
    let cfg = manifest.config.clone();
    let ids: Vec<String> = examples.iter().map(|e| e.window_id.clone()).collect();
    let objects = ctx.objects_of(&ids).await?;
    let source = WindowSource {
        store: store.as_ref(),
        keys: &keys,
        objects: &objects,
        modalities: &cfg.modalities,
        device: &device,
    };
    let (test, skipped) = load_examples(
        &source,
        &examples,
        &manifest.class_ids,
        &ctx.progress,
        Some(Split::Test),
    )
    .await?;
    let test: Vec<olmoearth::finetune::Example> = test.into_iter().map(|(_, e)| e).collect();
    if test.is_empty() {
        return Err(permanent(anyhow::anyhow!(
            "the label set has no usable test window (skipped: {skipped:?})"
        )));
    }
    ctx.progress
        .set(0.2, format!("predicting {} test windows", test.len()));
    let dev = device.clone();
    let cancel = ctx.cancel.clone();
    let (preds, test) = tokio::task::spawn_blocking(move || -> olmoearth::Result<_> {
        let model = TaskModel::load(cfg, &weights, &dev)?;
        let mut preds = Vec::with_capacity(test.len());
        for chunk in test.chunks(4) {
            if cancel.is_cancelled() {
                return Err(olmoearth::Error::Cancelled);
            }
            preds.extend(predict_examples(&model, chunk, 4)?);
        }
        Ok((preds, test))
    })
    .await
    .map_err(retryable)?
    .map_err(|e| match e {
        olmoearth::Error::Cancelled => StepError::Cancelled,
        e => permanent(anyhow::anyhow!(e).context("predicting the test windows")),
    })?;

    let task = manifest.config.task;
    let targets: Vec<&Target> = test.iter().map(|e| &e.target).collect();
    let model_metrics = metrics_for(task, &manifest.class_ids, &preds, &targets);

    // The other candidates' test predictions, for the same windows.
    let mut candidates = Vec::new();
    let mut selection: Option<Selection> = None;
    let baseline = match store.get(&ObjectPath::from(baseline_key.clone())).await {
        Ok(r) => {
            let doc: Value = serde_json::from_slice(&r.bytes().await.map_err(retryable)?)
                .map_err(|e| permanent(anyhow::anyhow!("{baseline_key}: {e}")))?;
            let by_window: BTreeMap<String, Prediction> =
                serde_json::from_value(doc["test_predictions"].clone()).unwrap_or_default();
            let (bp, bt): (Vec<Prediction>, Vec<&Target>) = test
                .iter()
                .filter_map(|e| by_window.get(&e.id).map(|p| (p.clone(), &e.target)))
                .unzip();
            let stored: Vec<StoredCandidate> =
                serde_json::from_value(doc["candidates"].clone()).unwrap_or_default();
            for c in stored {
                let (cp, ct): (Vec<Prediction>, Vec<&Target>) = test
                    .iter()
                    .filter_map(|e| {
                        c.test_predictions
                            .get(&e.id)
                            .map(|p| (p.clone(), &e.target))
                    })
                    .unzip();
                candidates.push(CandidateMetrics {
                    name: c.name,
                    description: c.description,
                    publishable: c.publishable,
                    chosen: c.chosen,
                    val_score: c.val_score,
                    cross_validated: c.cross_validated,
                    judge_score: c.judge_score,
                    test: metrics_for(task, &manifest.class_ids, &cp, &ct),
                });
            }
            selection = serde_json::from_value(doc["selection"].clone()).ok();
            Some(BaselineMetrics {
                metrics: metrics_for(task, &manifest.class_ids, &bp, &bt),
                method: doc["summary"]["method"].clone(),
                summary: doc["summary"].clone(),
            })
        }
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(retryable(e)),
    };
    let mut report = EvaluationReport {
        task,
        split: "test".into(),
        label_set_version: manifest.label_set_version,
        windows: test.len(),
        skipped,
        class_ids: manifest.class_ids.clone(),
        model: model_metrics,
        baseline,
        model_key: model_key.clone(),
        weights_sha256: manifest.weights_sha256.clone(),
        candidates,
        selection,
        warnings: Vec::new(),
    };
    report.warnings = report.trust_warnings();
    let report = serde_json::to_value(&report).map_err(permanent)?;
    // Fenced by the claim: an execution that lost its lease stores no report.
    let stored = ctx
        .record_evaluation(models::NewEvaluation {
            run_id: train_run,
            step_id: Some(ctx.step_id),
            label_set_version: Some(manifest.label_set_version),
            model_key: model_key.clone(),
            report: report.clone(),
        })
        .await?;
    ctx.progress.set(1.0, "evaluation stored");
    Ok(StepOutput {
        output: json!({"evaluation_id": stored, "report": report}),
        artifacts: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_confusion_gives_the_expected_numbers() {
        // truth 0: 3 right, 1 as class 1; truth 1: 2 right; truth 2: 1 as class 1 (never right).
        let c = Confusion {
            counts: vec![vec![3, 1, 0], vec![0, 2, 0], vec![0, 1, 0]],
        };
        let m = classification_metrics(&c, &[10, 20, 30], true);
        let close = |v: f64, x: f64| (v - x).abs() < 1e-9;
        assert!(close(m.accuracy, 5.0 / 7.0));
        let c1 = &m.per_class[1];
        assert!(close(c1.precision, 0.5) && close(c1.recall, 1.0));
        assert!(close(c1.f1, 2.0 / 3.0));
        assert!(close(m.per_class[0].f1, 2.0 * 0.75 / 1.75));
        assert!(close(m.per_class[2].f1, 0.0));
        assert_eq!(m.per_class[2].class_id, Some(30));
        // IoU: 3/4, 2/4, 0/1 → mean 5/12.
        assert!(close(m.miou.unwrap_or(f64::NAN), 5.0 / 12.0));
        assert_eq!(m.confusion_matrix[0][1], 1);
        // The stored JSON keeps its field names.
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["per_class"][2]["class_id"], 30);
        assert!(json["miou"].is_number() && json["accuracy"].is_number());
    }

    #[test]
    fn regression_metrics_on_known_pairs() {
        let m = regression_metrics(&[(1.0, 0.0), (1.0, 2.0), (3.0, 4.0)]);
        let close = |v: f64, x: f64| (v - x).abs() < 1e-9;
        assert!(close(m.mae, 1.0));
        assert!(close(m.rmse, 1.0));
        // mean 2, SST = 4 + 0 + 4 = 8, SSE = 3 → R² = 5/8.
        assert!(close(m.r2.unwrap_or(f64::NAN), 0.625));
    }

    #[test]
    fn macro_f1_and_miou_both_leave_out_a_class_absent_from_the_reference() {
        // Class 2 has no test sample and is never predicted; classes 0 and 1 are perfect.
        let c = Confusion {
            counts: vec![vec![4, 0, 0], vec![0, 3, 0], vec![0, 0, 0]],
        };
        let m = classification_metrics(&c, &[10, 20, 80], true);
        assert!((m.macro_f1 - 1.0).abs() < 1e-12, "{}", m.macro_f1);
        assert!((m.miou.unwrap_or(f64::NAN) - 1.0).abs() < 1e-12);
        assert_eq!(m.absent_from_reference, vec![80]);
        // Predicting the absent class for a present one costs that class, not an extra zero.
        let c = Confusion {
            counts: vec![vec![3, 0, 1], vec![0, 3, 0], vec![0, 0, 0]],
        };
        let m = classification_metrics(&c, &[10, 20, 80], true);
        let f1_0 = 2.0 * 1.0 * 0.75 / 1.75;
        assert!((m.macro_f1 - (f1_0 + 1.0) / 2.0).abs() < 1e-12);
        assert!((m.miou.unwrap_or(f64::NAN) - (0.75 + 1.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn edge_accuracy_counts_pixels_within_30_m_of_another_class() {
        // 8 × 8: left half class 0, right half class 1; the prediction has the boundary 2 px too far right.
        let side = 8;
        let truth: Vec<u8> = (0..side * side).map(|i| u8::from(i % side >= 4)).collect();
        let pred: Vec<u8> = (0..side * side).map(|i| u8::from(i % side >= 6)).collect();
        let (ok, n) = edge_counts(&Prediction::Map(pred), &Target::Mask(truth.clone()));
        // Columns 1..=6 are within 3 px of the other class: 6 × 8 pixels; columns 4 and 5 are wrong.
        assert_eq!((ok, n), (4 * 8, 6 * 8));
        let perfect = edge_counts(&Prediction::Map(truth.clone()), &Target::Mask(truth));
        assert_eq!(perfect, (48, 48));
    }

    #[test]
    fn masks_count_labelled_pixels_only() {
        let mut c = Confusion::new(2);
        c.add(
            &Prediction::Map(vec![0, 1, 1, 0]),
            &Target::Mask(vec![0, 1, IGNORE, 1]),
        );
        assert_eq!(c.counts, vec![vec![1, 0], vec![1, 1]]);
    }
}
