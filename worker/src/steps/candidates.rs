//! The candidate models of a training run and the choice among them.
//!
//! `train` makes every model it knows how to make from the labels (a raw-pixel linear model, a linear
//! model of the pixels and their neighbourhood means, the frozen-encoder kNN and linear probes, a linear
//! model of tokens and pixels, and the fine-tuned head), scores each on the validation split with the
//! class-balanced metric (`macro_f1`; RMSE for regression) on windows it was not fitted or tuned on, and
//! publishes the best publishable one; a more complex candidate must beat a simpler one by a margin
//! ([`MARGIN`]), since the validation split is small and its noise should not decide.
//!
//! The validation windows are halved (`halves`): the first half tunes (the probes' settings, the
//! fine-tuned model's early stopping), the second judges. The ridge models, cheap to refit, are also
//! cross-validated over the training and validation windows together ([`CV_FOLDS`] folds of spatial
//! blocks of windows),
//! which judges them on several times as many labels; two of them are compared on that score, and any
//! other pair on the judging half. `evaluate` scores all of them on the test split and marks the
//! chosen one, so the report says plainly when fine-tuning lost to something simpler.

use candle_core::{Device, Tensor};
use groundwork_imagery::grid::window_cell;
use groundwork_types::{HeadKind, Task};
use olmoearth::finetune::{
    Baseline, BaselineSummary, CV_FOLDS, CrossValidation, Example, FitData, FitOptions, FitSink,
    FitState, LinearFit, LinearHead, LinearInputs, MetricSum, Prediction, Target, Trainer,
    cross_validate_linear, embed_examples, fit_linear, fit_linear_with, metric_better, metric_name,
    paired_difference_se, pooled_score, predict_examples, window_sums,
};
use olmoearth::task::{TaskModel, TaskModelConfig, TrainableTaskModel, to_safetensors};
use olmoearth::{Error, Result, StateDict};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Rows a closed-form linear candidate is fitted on, at most (drawn evenly across classes).
pub const MAX_LINEAR_ROWS: usize = 100_000;

/// How much a more complex candidate must gain on a simpler one to be chosen: macro-F1 points, or the
/// relative RMSE reduction for regression.
pub const MARGIN: f64 = 0.005;

/// Candidate names, in order of simplicity (a tie goes to the simpler one).
pub const RAW_PIXELS: &str = "raw_pixels";
/// The linear model of the pixels and their neighbourhood means.
pub const PIXEL_CONTEXT: &str = "pixel_context";
/// The frozen-encoder linear probe.
pub const LINEAR_PROBE: &str = "linear_probe";
/// The frozen-encoder kNN probe (a reference: not publishable).
pub const KNN_PROBE: &str = "knn_probe";
/// The linear model of tokens and pixels.
pub const HYBRID_LINEAR: &str = "hybrid_linear";
/// The fine-tuned head.
pub const FINE_TUNED: &str = "fine_tuned";

/// How a candidate's weights are made.
#[derive(Debug, Clone)]
pub enum Source {
    /// A linear model, published as a `hybrid` head with these weights.
    Linear(LinearHead),
    /// The trainer's best weights.
    FineTuned,
    /// Scored only.
    Reference,
}

/// One candidate with its scores.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// One of the names above.
    pub name: &'static str,
    /// In words.
    pub description: String,
    /// Validation score ([`metric_name`]): the cross-validation score when cross-validated, else the
    /// score on the judging half; `None` without validation labels.
    pub val_score: Option<f64>,
    /// Score on the judging half of the validation windows: what two candidates are compared on unless
    /// both are cross-validated.
    pub judge_score: Option<f64>,
    /// Whether `val_score` is a cross-validation score.
    pub cross_validated: bool,
    /// The cross-validation sums behind `val_score`, one per window (the same windows in the same order
    /// for every cross-validated candidate of a run), for paired comparisons; empty when not
    /// cross-validated.
    pub cv_windows: Vec<MetricSum>,
    /// The sums behind `judge_score`, one per judging window.
    pub judge_windows: Vec<MetricSum>,
    /// Predictions of the test windows, by window id.
    pub test: BTreeMap<String, Prediction>,
    /// How to publish it.
    pub source: Source,
}

impl Candidate {
    /// Whether it can be published as a model.
    #[must_use]
    pub fn publishable(&self) -> bool {
        !matches!(self.source, Source::Reference)
    }
}

/// The choice and its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Index into the candidates.
    pub index: usize,
    /// Name of the chosen one.
    pub chosen: String,
    /// One sentence.
    pub reason: String,
    /// Whether fine-tuning scored below the chosen simpler model.
    pub fine_tuned_lost: bool,
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "none".into(), |v| format!("{v:.3}"))
}

/// Two candidates' scores on the windows they are compared on, and the standard error of the difference.
#[derive(Debug, Clone, Copy)]
struct Compared {
    a: f64,
    b: f64,
    se: f64,
}

/// Seed of the bootstrap behind [`Compared::se`] (fixed: the same candidates get the same choice).
const BOOTSTRAP_SEED: u64 = 0x5E1E_C7ED;

/// The scores two candidates are compared on: their cross-validation scores when both are
/// cross-validated, else their scores on the judging half; with the window-bootstrap standard error of
/// the difference (0 when the windows are unknown or fewer than two).
fn compared(task: Task, a: &Candidate, b: &Candidate) -> Option<Compared> {
    let (sa, sb, wa, wb) = if a.cross_validated && b.cross_validated {
        (a.val_score?, b.val_score?, &a.cv_windows, &b.cv_windows)
    } else {
        (
            a.judge_score?,
            b.judge_score?,
            &a.judge_windows,
            &b.judge_windows,
        )
    };
    Some(Compared {
        a: sa,
        b: sb,
        se: paired_difference_se(task, wa, wb, BOOTSTRAP_SEED).unwrap_or(0.0),
    })
}

/// What `a` must gain on `b` to replace it: [`MARGIN`] (of `b` for regression) or one standard error
/// of the difference, whichever is larger (the one-standard-error rule: a gain the windows do not
/// consistently show is noise).
fn needed_gain(task: Task, c: Compared) -> f64 {
    let margin = if task == Task::Regression {
        MARGIN * c.b.abs()
    } else {
        MARGIN
    };
    margin.max(c.se)
}

/// Whether `a` beats `b` by more than [`needed_gain`].
fn clearly_better(task: Task, c: Compared) -> bool {
    let need = needed_gain(task, c);
    if task == Task::Regression {
        metric_better(task, c.a, c.b - need)
    } else {
        metric_better(task, c.a, c.b + need)
    }
}

/// Orders by score, best last.
fn by_score(task: Task, a: f64, b: f64) -> std::cmp::Ordering {
    if metric_better(task, a, b) {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Less
    }
}

/// Picks the publishable candidate with the best validation score, where a candidate replaces a simpler
/// one only when it is better, on the windows both were judged on, by more than [`MARGIN`] and more than
/// one standard error of the difference; without validation scores, the fine-tuned model. `None` when
/// nothing is publishable.
#[must_use]
pub fn choose(task: Task, candidates: &[Candidate]) -> Option<Choice> {
    let metric = metric_name(task);
    let mut best: Option<usize> = None;
    for (i, c) in candidates.iter().enumerate() {
        if !c.publishable() || c.val_score.is_none() {
            continue;
        }
        let replaces = match best {
            None => true,
            Some(b) => compared(task, c, &candidates[b]).is_some_and(|x| clearly_better(task, x)),
        };
        if replaces {
            best = Some(i);
        }
    }
    let fine = candidates.iter().position(|c| c.name == FINE_TUNED);
    let Some((index, score)) = best.and_then(|i| Some((i, candidates[i].val_score?))) else {
        let index = fine.or_else(|| candidates.iter().position(Candidate::publishable))?;
        return Some(Choice {
            index,
            chosen: candidates[index].name.into(),
            reason: format!(
                "there were no validation labels to compare the candidates on, so the {} is kept unchecked",
                candidates[index].description
            ),
            fine_tuned_lost: false,
        });
    };
    let chosen = &candidates[index];
    let fine_pair = fine
        .filter(|_| chosen.name != FINE_TUNED)
        .and_then(|i| compared(task, chosen, &candidates[i]));
    let fine_tuned_lost = fine_pair.is_some();
    // A better score, on the windows both were judged on, that did not clear the margin.
    let close = candidates
        .iter()
        .filter(|c| c.publishable() && c.name != chosen.name)
        .filter_map(|c| Some((c, compared(task, c, chosen)?)))
        .filter(|&(_, x)| metric_better(task, x.a, x.b))
        .max_by(|a, b| by_score(task, a.1.a, b.1.a));
    let mut reason = if chosen.name == FINE_TUNED {
        let runner_up = candidates
            .iter()
            .filter(|c| c.name != FINE_TUNED)
            .filter_map(|c| Some((c, compared(task, chosen, c)?)))
            .max_by(|a, b| by_score(task, a.1.b, b.1.b));
        match runner_up {
            Some((r, x)) => format!(
                "the fine-tuned model has the best validation {metric} ({}), ahead of the {} ({})",
                fmt(Some(x.a)),
                r.description,
                fmt(Some(x.b))
            ),
            None => format!(
                "the fine-tuned model has validation {metric} {}",
                fmt(Some(score))
            ),
        }
    } else if let Some(x) = fine_pair {
        format!(
            "fine-tuning did not help: the {} scored validation {metric} {} against {} for the fine-tuned model, so the map uses it",
            chosen.description,
            fmt(Some(x.a)),
            fmt(Some(x.b))
        )
    } else {
        format!(
            "the {} has the best validation {metric} ({})",
            chosen.description,
            fmt(Some(score))
        )
    };
    if let Some((c, x)) = close {
        let noise = if x.se > 0.0 {
            format!(
                ", a difference within the {} its validation windows vary by",
                fmt(Some(needed_gain(task, x)))
            )
        } else {
            String::new()
        };
        reason.push_str(&format!(
            "; the {} scored {} but did not gain enough over this simpler model to be preferred{noise}",
            c.description,
            fmt(Some(x.a))
        ));
    }
    Some(Choice {
        index,
        chosen: chosen.name.into(),
        reason,
        fine_tuned_lost,
    })
}

/// A candidate as `train` writes it for `evaluate` (in `baseline.json`'s `candidates`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCandidate {
    /// Name.
    pub name: String,
    /// In words.
    pub description: String,
    /// Whether it can be published.
    pub publishable: bool,
    /// Whether it is the run's model.
    pub chosen: bool,
    /// Validation score.
    pub val_score: Option<f64>,
    /// Whether the validation score is a cross-validation score.
    #[serde(default)]
    pub cross_validated: bool,
    /// Score on the judging half of the validation windows.
    #[serde(default)]
    pub judge_score: Option<f64>,
    /// Test predictions by window id.
    pub test_predictions: BTreeMap<String, Prediction>,
}

/// What [`fit_candidates`] returns: the chosen model and everything behind the choice.
#[derive(Debug)]
pub struct Fitted {
    /// The chosen model's configuration.
    pub config: TaskModelConfig,
    /// Its weights (`encoder.*` + `head.*`).
    pub weights: Vec<u8>,
    /// The fine-tuning's state (curve, best epoch).
    pub state: FitState,
    /// Every candidate, in order of simplicity.
    pub candidates: Vec<Candidate>,
    /// The choice.
    pub choice: Choice,
    /// The frozen-encoder probes' own summary.
    pub probe: BaselineSummary,
}

/// A checkpoint to resume fine-tuning from: state, latest weights and optimiser, best weights.
pub type Resume = (FitState, Vec<u8>, Option<Vec<u8>>);

fn by_id(examples: &[Example], preds: Vec<Prediction>) -> BTreeMap<String, Prediction> {
    examples.iter().map(|e| e.id.clone()).zip(preds).collect()
}

/// The validation windows in two halves (alternate windows): the first tunes (early stopping, the
/// probes' settings, ridge penalties when cross-validation is impossible), the second judges, so that no
/// candidate is judged on the windows it was tuned on; the fine-tuned model's best epoch would otherwise
/// look better than it is. With fewer than two windows both halves are all of them.
fn halves<T: Clone>(val: &[T]) -> (Vec<T>, Vec<T>) {
    if val.len() < 2 {
        return (val.to_vec(), val.to_vec());
    }
    let (mut tune, mut judge) = (Vec::new(), Vec::new());
    for (i, v) in val.iter().enumerate() {
        if i % 2 == 0 { &mut tune } else { &mut judge }.push(v.clone());
    }
    (tune, judge)
}

/// Side, in grid cells, of the square blocks of windows that cross-validation holds out together.
pub const CV_BLOCK: i64 = 2;

/// Cross-validation folds of windows by spatial block: windows in the same `CV_BLOCK × CV_BLOCK` block
/// of grid cells share a fold, as a test region's windows would, and the blocks are dealt to `folds`
/// folds in grid order. Neighbouring windows, which share fields and weather, are then rarely on both
/// sides of a fold, so a model that learns the place rather than the classes is not flattered. With
/// fewer blocks than folds, or ids that name no grid cell ([`window_cell`]), windows are dealt one by
/// one.
fn spatial_folds(ids: &[&str], folds: usize) -> Vec<usize> {
    let folds = folds.max(1);
    let deal_windows = || (0..ids.len()).map(|i| i % folds).collect();
    let Some(cells) = ids
        .iter()
        .map(|id| window_cell(id))
        .collect::<Option<Vec<_>>>()
    else {
        return deal_windows();
    };
    let block = |&(epsg, column, row): &(u32, i64, i64)| {
        (epsg, row.div_euclid(CV_BLOCK), column.div_euclid(CV_BLOCK))
    };
    let mut blocks: Vec<_> = cells.iter().map(block).collect();
    blocks.sort_unstable();
    blocks.dedup();
    if blocks.len() < folds {
        return deal_windows();
    }
    cells
        .iter()
        .map(|c| blocks.binary_search(&block(c)).map_or(0, |b| b % folds))
        .collect()
}

/// Makes every candidate from the encoder `sd` (features of all splits come from it), fine-tunes the
/// `cfg` model (resuming from `resume`), scores all on validation and returns the chosen one.
pub fn fit_candidates(
    cfg: &TaskModelConfig,
    sd: &StateDict,
    device: &Device,
    opts: FitOptions,
    resume: Option<Resume>,
    splits: (&[Example], &[Example], &[Example]),
    sink: &mut dyn FitSink,
) -> Result<Fitted> {
    let (train, val, test) = splits;
    let task = cfg.task;
    let k = cfg.num_outputs;
    let init = TrainableTaskModel::new(cfg.clone(), sd, device)?;
    let encoder_tensors: Vec<(String, Tensor)> = init
        .named_tensors()
        .into_iter()
        .filter(|(name, _)| name.starts_with(olmoearth::checkpoint::ENCODER_PREFIX))
        .collect();
    let enc = init.inference_encoder()?;
    let (p, b) = (cfg.patch_size, opts.eval_batch_size);
    let tf = embed_examples(&enc, train, p, b, sink, (0.1, 0.16))?;
    let vf = embed_examples(&enc, val, p, b, sink, (0.16, 0.18))?;
    let sf = embed_examples(&enc, test, p, b, sink, (0.18, 0.2))?;
    drop(enc);
    let tt: Vec<&Target> = train.iter().map(|e| &e.target).collect();
    // Half of the validation windows steer the fitting, the other half judges the candidates.
    let (tune, judge) = halves(val);
    let (tune_f, judge_f) = halves(&vf);
    let tune_t: Vec<&Target> = tune.iter().map(|e| &e.target).collect();
    let judge_t: Vec<&Target> = judge.iter().map(|e| &e.target).collect();
    // The score of predictions of the judging half, and its sums window by window.
    let judged = |preds: Vec<Prediction>| -> (Option<f64>, Vec<MetricSum>) {
        let windows = window_sums(k, &preds, &judge_t);
        (pooled_score(task, &windows), windows)
    };
    let hybrid = TaskModelConfig {
        head: HeadKind::Hybrid,
        ..cfg.clone()
    };
    let mut candidates = Vec::new();

    // The ridge models are cross-validated over the training and validation windows (with validation
    // labels only, so that every candidate has a judging-half score too), then fitted on the training
    // windows with the penalty cross-validation chose; without enough windows, tuned on the first half.
    let cv_examples: Vec<(&Example, &Tensor)> = if judge.is_empty() {
        Vec::new()
    } else {
        train.iter().zip(&tf).chain(val.iter().zip(&vf)).collect()
    };
    let ids: Vec<&str> = cv_examples.iter().map(|(e, _)| e.id.as_str()).collect();
    let folds = spatial_folds(&ids, CV_FOLDS);
    let linear = |inputs: LinearInputs| -> Result<(LinearFit, Option<CrossValidation>)> {
        let limits = (MAX_LINEAR_ROWS, opts.seed);
        let cv = cross_validate_linear(&hybrid, inputs, &cv_examples, &folds, limits)?;
        let fit = match &cv {
            Some(cv) => fit_linear_with(
                &hybrid,
                inputs,
                (train, &tf),
                (&[], &[]),
                &[cv.lambda],
                limits,
            )?,
            None => fit_linear(
                &hybrid,
                inputs,
                train,
                &tf,
                &tune,
                &tune_f,
                MAX_LINEAR_ROWS,
                opts.seed,
            )?,
        };
        Ok((fit, cv))
    };
    let linear_candidate = |name: &'static str,
                            description: String,
                            (fit, cv): &(LinearFit, Option<CrossValidation>)|
     -> Result<Candidate> {
        let (judge_score, judge_windows) = judged(fit.head.predict(&hybrid, &judge, &judge_f)?);
        Ok(Candidate {
            name,
            description,
            val_score: cv.as_ref().map_or(judge_score, |cv| Some(cv.score)),
            judge_score,
            cross_validated: cv.is_some(),
            cv_windows: cv.as_ref().map(|cv| cv.windows.clone()).unwrap_or_default(),
            judge_windows,
            test: by_id(test, fit.head.predict(&hybrid, test, &sf)?),
            source: Source::Linear(fit.head.clone()),
        })
    };
    // The linear models of the pixels that fine-tuning may start from, with their validation scores.
    let mut starts: Vec<(Option<f64>, LinearHead)> = Vec::new();

    sink.progress(0.2, "fitting the raw-pixel linear model");
    let raw = linear(LinearInputs::Pixels)?;
    let c = linear_candidate(
        RAW_PIXELS,
        "raw-pixel linear model (class-balanced ridge on the normalised monthly bands at 10 m)"
            .into(),
        &raw,
    )?;
    starts.push((c.val_score, raw.0.head));
    candidates.push(c);

    if !cfg.pixel_context.is_empty() {
        sink.progress(
            0.21,
            "fitting the linear model of pixels and their neighbourhoods",
        );
        let sides: Vec<String> = cfg
            .pixel_context
            .iter()
            .map(|r| format!("{}", (2 * r + 1) * 10))
            .collect();
        let ctx = linear(LinearInputs::PixelsInContext)?;
        let c = linear_candidate(
            PIXEL_CONTEXT,
            format!(
                "linear model of the pixels and their neighbourhood means ({} m squares)",
                sides.join(", ")
            ),
            &ctx,
        )?;
        starts.push((c.val_score, ctx.0.head));
        candidates.push(c);
    }

    sink.progress(0.22, "fitting the frozen-encoder probes (linear, kNN)");
    let probe = Baseline::fit(cfg, &tf, &tt, &tune_f, &tune_t)?;
    let linear_probe = probe.linear_map().map(|(tokens, bias)| LinearHead {
        k,
        d: cfg.encoder.embedding_size,
        p: cfg.pixel_channels,
        tokens,
        pixels: vec![0.0; k * cfg.pixel_channels],
        bias,
    });
    if let Some(head) = &linear_probe {
        let (judge_score, judge_windows) = judged(head.predict(&hybrid, &judge, &judge_f)?);
        candidates.push(Candidate {
            name: LINEAR_PROBE,
            description: "frozen-encoder linear probe (ridge on the encoder's tokens)".into(),
            val_score: judge_score,
            judge_score,
            cross_validated: false,
            cv_windows: Vec::new(),
            judge_windows,
            test: by_id(test, head.predict(&hybrid, test, &sf)?),
            source: Source::Linear(head.clone()),
        });
    }
    let (judge_score, judge_windows) = judged(probe.predict_with(&judge_f, true)?);
    candidates.push(Candidate {
        name: KNN_PROBE,
        description: format!(
            "frozen-encoder kNN probe (k = {}; a reference, not publishable)",
            probe.summary.knn_k
        ),
        val_score: judge_score,
        judge_score,
        cross_validated: false,
        cv_windows: Vec::new(),
        judge_windows,
        test: by_id(test, probe.predict_with(&sf, true)?),
        source: Source::Reference,
    });

    sink.progress(0.25, "fitting the linear model of tokens and pixels");
    let both = linear(LinearInputs::All)?;
    let c = linear_candidate(
        HYBRID_LINEAR,
        "linear model of the encoder's tokens and the pixels with their neighbourhoods".into(),
        &both,
    )?;
    starts.push((c.val_score, both.0.head));
    candidates.push(c);

    // Fine-tuning starts from the best linear model of the pixels (the light head, which reads no
    // pixels, from the probe).
    let best_start = starts
        .iter()
        .reduce(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) if metric_better(task, x, y) => a,
            (Some(_), None) => a,
            _ => b,
        })
        .map(|(_, h)| h);
    let start = if cfg.head == HeadKind::LightSegmentation {
        linear_probe.as_ref()
    } else {
        best_start
    };
    let mut trainer = match resume {
        Some((state, ckpt, best)) => {
            Trainer::resume(cfg.clone(), &ckpt, state, best, opts.clone(), device)?
        }
        None => Trainer::new(init, opts.clone(), train)?,
    };
    let data = FitData {
        train,
        val: &tune,
        train_features: Some(&tf),
        val_features: Some(&tune_f),
    };
    if let Some(start) = start
        && let Some(t) = trainer.start_from_linear(start, &data, sink)?
    {
        sink.progress(
            0.3,
            &format!("fine-tuning starts from the linear model (temperature {t})"),
        );
    }
    trainer.fit(&data, sink)?;
    let tuned = trainer.final_weights()?;
    let model = TaskModel::load(cfg.clone(), &tuned, device)?;
    sink.progress(0.92, "scoring the fine-tuned model");
    let val_preds = predict_examples(&model, &judge, b)?;
    let test_preds = predict_examples(&model, test, b)?;
    let (judge_score, judge_windows) = judged(val_preds);
    candidates.push(Candidate {
        name: FINE_TUNED,
        description: format!("fine-tuned {} head", cfg.head),
        val_score: judge_score,
        judge_score,
        cross_validated: false,
        cv_windows: Vec::new(),
        judge_windows,
        test: by_id(test, test_preds),
        source: Source::FineTuned,
    });

    let choice = choose(task, &candidates)
        .ok_or_else(|| Error::InvalidInput("no candidate model can be published".into()))?;
    let (config, weights) = match &candidates[choice.index].source {
        Source::FineTuned => (cfg.clone(), tuned),
        Source::Linear(head) => {
            let mut tensors = encoder_tensors;
            tensors.extend(head.hybrid_tensors(olmoearth::task::HEAD_PREFIX, &Device::Cpu)?);
            (hybrid, to_safetensors(tensors, None)?)
        }
        Source::Reference => {
            return Err(Error::InvalidInput(
                "a reference candidate cannot be published".into(),
            ));
        }
    };
    Ok(Fitted {
        config,
        weights,
        state: trainer.state().clone(),
        candidates,
        choice,
        probe: probe.summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &'static str, val: Option<f64>, source: Source) -> Candidate {
        Candidate {
            name,
            description: name.replace('_', " "),
            val_score: val,
            judge_score: val,
            cross_validated: false,
            cv_windows: Vec::new(),
            judge_windows: Vec::new(),
            test: BTreeMap::new(),
            source,
        }
    }

    /// Sets both scores of a candidate that is not cross-fitted.
    fn rescore(c: &mut Candidate, score: Option<f64>) {
        c.val_score = score;
        c.judge_score = score;
    }

    fn linear() -> Source {
        Source::Linear(LinearHead {
            k: 2,
            d: 1,
            p: 1,
            tokens: vec![0.0; 2],
            pixels: vec![0.0; 2],
            bias: vec![0.0; 2],
        })
    }

    #[test]
    fn a_fine_tuned_model_that_scores_below_a_baseline_is_not_chosen_and_the_reason_says_so() {
        let c = vec![
            candidate(RAW_PIXELS, Some(0.91), linear()),
            candidate(LINEAR_PROBE, Some(0.40), linear()),
            candidate(KNN_PROBE, Some(0.97), Source::Reference),
            candidate(HYBRID_LINEAR, Some(0.88), linear()),
            candidate(FINE_TUNED, Some(0.25), Source::FineTuned),
        ];
        let choice = choose(Task::Segmentation, &c).expect("a choice");
        // The kNN probe scores best but cannot be published.
        assert_eq!(choice.chosen, RAW_PIXELS);
        assert!(choice.fine_tuned_lost);
        assert!(
            choice.reason.contains("fine-tuning did not help") && choice.reason.contains("0.250"),
            "{}",
            choice.reason
        );
    }

    #[test]
    fn the_fine_tuned_model_wins_when_it_scores_best_and_ties_go_to_the_simpler_model() {
        let mut c = vec![
            candidate(RAW_PIXELS, Some(0.80), linear()),
            candidate(FINE_TUNED, Some(0.85), Source::FineTuned),
        ];
        let choice = choose(Task::Segmentation, &c).expect("a choice");
        assert_eq!(
            (choice.chosen.as_str(), choice.fine_tuned_lost),
            (FINE_TUNED, false)
        );
        rescore(&mut c[1], Some(0.80));
        assert_eq!(
            choose(Task::Segmentation, &c).expect("a choice").chosen,
            RAW_PIXELS
        );
        // A gain within the margin does not outweigh simplicity, and the reason says so.
        rescore(&mut c[1], Some(0.80 + MARGIN * 0.8));
        let choice = choose(Task::Segmentation, &c).expect("a choice");
        assert_eq!(choice.chosen, RAW_PIXELS);
        assert!(
            choice.reason.contains("did not gain enough"),
            "{}",
            choice.reason
        );
        rescore(&mut c[1], Some(0.80 + MARGIN * 1.5));
        assert_eq!(
            choose(Task::Segmentation, &c).expect("a choice").chosen,
            FINE_TUNED
        );
        // Regression: lower RMSE wins.
        rescore(&mut c[1], Some(0.5));
        rescore(&mut c[0], Some(0.7));
        assert_eq!(
            choose(Task::Regression, &c).expect("a choice").chosen,
            FINE_TUNED
        );
    }

    #[test]
    fn cross_validated_candidates_are_compared_on_their_cv_scores_and_the_fine_tuned_one_on_the_judging_half()
     {
        let cross = |name, pooled: f64, judge: f64| Candidate {
            judge_score: Some(judge),
            cross_validated: true,
            ..candidate(name, Some(pooled), linear())
        };
        // raw_pixels is perfect on the judging half alone, but cross-validation ranks pixel_context
        // first.
        let mut c = vec![
            cross(RAW_PIXELS, 0.95, 1.0),
            cross(PIXEL_CONTEXT, 0.97, 0.98),
            candidate(FINE_TUNED, Some(0.982), Source::FineTuned),
        ];
        let choice = choose(Task::Segmentation, &c).expect("a choice");
        assert_eq!(choice.chosen, PIXEL_CONTEXT);
        // Against the fine-tuned model, pixel_context's judging-half score counts (0.980 against 0.982:
        // within the margin), and the reason quotes those two.
        assert!(choice.fine_tuned_lost);
        assert!(
            choice.reason.contains("0.980 against 0.982"),
            "{}",
            choice.reason
        );
        rescore(&mut c[2], Some(0.99));
        assert_eq!(
            choose(Task::Segmentation, &c).expect("a choice").chosen,
            FINE_TUNED
        );
    }

    /// A window of two classes, 10 labels each, of which `wrong` of each are mispredicted.
    fn window(wrong: u64) -> MetricSum {
        MetricSum::from_confusion(vec![vec![10 - wrong, wrong], vec![wrong, 10 - wrong]])
    }

    #[test]
    fn a_gain_that_only_some_windows_show_does_not_outweigh_simplicity() {
        let task = Task::Segmentation;
        let cv = |name, windows: Vec<MetricSum>| Candidate {
            cross_validated: true,
            judge_score: Some(0.5),
            val_score: pooled_score(task, &windows),
            cv_windows: windows,
            ..candidate(name, None, linear())
        };
        let base: Vec<MetricSum> = (0..8).map(|_| window(5)).collect();
        // 0.025 better in all, from two windows, while four are worse: within the windows' spread.
        let lumpy = [0, 0, 7, 7, 7, 7, 5, 5].map(window).to_vec();
        let c = [cv(RAW_PIXELS, base.clone()), cv(PIXEL_CONTEXT, lumpy)];
        let choice = choose(task, &c).expect("a choice");
        assert_eq!(choice.chosen, RAW_PIXELS);
        assert!(
            choice.reason.contains("did not gain enough")
                && choice.reason.contains("its validation windows vary by"),
            "{}",
            choice.reason
        );
        // 0.1 better in every window.
        let steady = (0..8).map(|_| window(4)).collect();
        let c = [cv(RAW_PIXELS, base), cv(PIXEL_CONTEXT, steady)];
        assert_eq!(choose(task, &c).expect("a choice").chosen, PIXEL_CONTEXT);
    }

    #[test]
    fn cross_validation_holds_out_spatial_blocks_of_windows() {
        let id = |c: i64, r: i64| format!("32633_10m_64px_{c}_{r}");
        // A 4 × 4 grid of windows: four 2 × 2 blocks (plus one more block at column -1), five folds.
        let mut ids: Vec<String> = (0..16).map(|i| id(i % 4, i / 4)).collect();
        ids.push(id(-1, 0));
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let folds = spatial_folds(&refs, 5);
        for (i, a) in refs.iter().enumerate() {
            for (j, b) in refs.iter().enumerate() {
                let (_, ca, ra) = window_cell(a).expect("a cell");
                let (_, cb, rb) = window_cell(b).expect("a cell");
                let same_block =
                    (ca.div_euclid(2), ra.div_euclid(2)) == (cb.div_euclid(2), rb.div_euclid(2));
                assert_eq!(folds[i] == folds[j], same_block, "{a} {b}");
            }
        }
        // Too few blocks, or ids that are no grid cells: one window after another.
        assert_eq!(spatial_folds(&refs[..4], 5), vec![0, 1, 2, 3]);
        assert_eq!(spatial_folds(&["a", "b", "c"], 2), vec![0, 1, 0]);
    }

    #[test]
    fn validation_windows_are_halved_into_disjoint_tuning_and_judging_sets() {
        let (tune, judge) = halves(&[1, 2, 3, 4, 5]);
        assert_eq!((tune, judge), (vec![1, 3, 5], vec![2, 4]));
        // One window cannot be halved: it both tunes and judges.
        assert_eq!(halves(&[7]), (vec![7], vec![7]));
        assert_eq!(halves::<u8>(&[]), (vec![], vec![]));
    }

    #[test]
    fn without_validation_labels_the_fine_tuned_model_is_kept_and_the_reason_says_unchecked() {
        let c = vec![
            candidate(RAW_PIXELS, None, linear()),
            candidate(FINE_TUNED, None, Source::FineTuned),
        ];
        let choice = choose(Task::Classification, &c).expect("a choice");
        assert_eq!(choice.chosen, FINE_TUNED);
        assert!(choice.reason.contains("no validation labels"));
        assert!(
            choose(
                Task::Classification,
                &[candidate(KNN_PROBE, Some(1.0), Source::Reference)]
            )
            .is_none()
        );
    }
}
