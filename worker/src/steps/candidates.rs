//! The candidate models of a training run and the choice among them.
//!
//! `train` makes every model it knows how to make from the labels (a raw-pixel linear model, a linear
//! model of the pixels and their neighbourhood means, the frozen-encoder kNN and linear probes, a linear
//! model of tokens and pixels, and the fine-tuned head), scores each on the validation split with the
//! class-balanced metric (`macro_f1`; RMSE for regression) on half of the validation windows (the other
//! half tunes them, see `halves`), and publishes the best publishable one; a
//! more complex candidate must beat a simpler one by a margin ([`MARGIN`]), since the validation split is
//! small and its noise should not decide. `evaluate` scores all of them on the test split and marks the
//! chosen one, so the report says plainly when fine-tuning lost to something simpler.

use candle_core::{Device, Tensor};
use groundwork_types::{HeadKind, Task};
use olmoearth::finetune::{
    Baseline, BaselineSummary, Example, FitData, FitOptions, FitSink, FitState, LinearFit,
    LinearHead, LinearInputs, Prediction, Target, Trainer, embed_examples, fit_linear,
    metric_better, metric_name, predict_examples, score_predictions,
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
    /// Validation score ([`metric_name`]); `None` without validation labels.
    pub val_score: Option<f64>,
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

/// Whether score `a` beats `b` by more than [`MARGIN`].
fn clearly_better(task: Task, a: f64, b: f64) -> bool {
    if task == Task::Regression {
        metric_better(task, a, b - MARGIN * b.abs())
    } else {
        metric_better(task, a, b + MARGIN)
    }
}

/// Picks the publishable candidate with the best validation score, where a candidate replaces a simpler
/// one only when it is better by more than [`MARGIN`]; without validation scores, the fine-tuned model.
/// `None` when nothing is publishable.
#[must_use]
pub fn choose(task: Task, candidates: &[Candidate]) -> Option<Choice> {
    let metric = metric_name(task);
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in candidates.iter().enumerate() {
        let (true, Some(s)) = (c.publishable(), c.val_score) else {
            continue;
        };
        if best.is_none_or(|(_, b)| clearly_better(task, s, b)) {
            best = Some((i, s));
        }
    }
    let fine = candidates.iter().position(|c| c.name == FINE_TUNED);
    let Some((index, score)) = best else {
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
    let fine_score = fine.and_then(|i| candidates[i].val_score);
    let fine_tuned_lost = chosen.name != FINE_TUNED && fine_score.is_some();
    // A better score that did not clear the margin.
    let close = candidates
        .iter()
        .filter(|c| c.publishable() && c.name != chosen.name)
        .filter_map(|c| Some((c, c.val_score?)))
        .filter(|&(_, s)| metric_better(task, s, score))
        .max_by(|a, b| {
            if metric_better(task, a.1, b.1) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Less
            }
        });
    let mut reason = if chosen.name == FINE_TUNED {
        let runner_up = candidates
            .iter()
            .filter(|c| c.name != FINE_TUNED && c.val_score.is_some())
            .max_by(|a, b| {
                let (a, b) = (a.val_score.unwrap_or(0.0), b.val_score.unwrap_or(0.0));
                if metric_better(task, a, b) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Less
                }
            });
        match runner_up {
            Some(r) => format!(
                "the fine-tuned model has the best validation {metric} ({}), ahead of the {} ({})",
                fmt(Some(score)),
                r.description,
                fmt(r.val_score)
            ),
            None => format!(
                "the fine-tuned model has validation {metric} {}",
                fmt(Some(score))
            ),
        }
    } else if fine_tuned_lost {
        format!(
            "fine-tuning did not help: the {} scored validation {metric} {} against {} for the fine-tuned model, so the map uses it",
            chosen.description,
            fmt(Some(score)),
            fmt(fine_score)
        )
    } else {
        format!(
            "the {} has the best validation {metric} ({})",
            chosen.description,
            fmt(Some(score))
        )
    };
    if let Some((c, s)) = close {
        reason.push_str(&format!(
            "; the {} scored {} but did not gain enough over this simpler model to be preferred",
            c.description,
            fmt(Some(s))
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

/// The validation windows in two halves (alternate windows): the first tunes (early stopping, ridge
/// penalties, the probes' settings), the second judges, so that no candidate is judged on the windows it
/// was tuned on; the fine-tuned model's best epoch would otherwise look better than it is. With fewer
/// than two windows both halves are all of them.
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
    let score = |preds: &[Prediction]| -> Option<f64> {
        if judge.is_empty() {
            None
        } else {
            score_predictions(task, k, preds, &judge_t)
        }
    };
    let hybrid = TaskModelConfig {
        head: HeadKind::Hybrid,
        ..cfg.clone()
    };
    let mut candidates = Vec::new();

    let linear = |inputs: LinearInputs| {
        fit_linear(
            &hybrid,
            inputs,
            train,
            &tf,
            &tune,
            &tune_f,
            MAX_LINEAR_ROWS,
            opts.seed,
        )
    };
    let linear_candidate =
        |name: &'static str, description: String, fit: &LinearFit| -> Result<Candidate> {
            Ok(Candidate {
                name,
                description,
                val_score: score(&fit.head.predict(&hybrid, &judge, &judge_f)?),
                test: by_id(test, fit.head.predict(&hybrid, test, &sf)?),
                source: Source::Linear(fit.head.clone()),
            })
        };
    // The linear models of the pixels that fine-tuning may start from, with their validation scores.
    let mut starts: Vec<(Option<f64>, LinearHead)> = Vec::new();

    sink.progress(0.2, "fitting the raw-pixel linear model");
    let raw = linear(LinearInputs::Pixels)?;
    candidates.push(linear_candidate(
        RAW_PIXELS,
        "raw-pixel linear model (class-balanced ridge on the normalised monthly bands at 10 m)"
            .into(),
        &raw,
    )?);
    starts.push((raw.val_score, raw.head));

    if cfg.pixel_context > 0 {
        sink.progress(
            0.21,
            "fitting the linear model of pixels and their neighbourhoods",
        );
        let side = (2 * cfg.pixel_context + 1) * 10;
        let ctx = linear(LinearInputs::PixelsInContext)?;
        candidates.push(linear_candidate(
            PIXEL_CONTEXT,
            format!("linear model of the pixels and their {side} m × {side} m neighbourhood means"),
            &ctx,
        )?);
        starts.push((ctx.val_score, ctx.head));
    }

    sink.progress(0.22, "fitting the frozen-encoder probes (linear, kNN)");
    let probe = Baseline::fit(cfg, &tf, &tt, &tune_f, &tune_t)?;
    let mut probe_head = None;
    if let Some((tokens, bias)) = probe.linear_map() {
        let head = LinearHead {
            k,
            d: cfg.encoder.embedding_size,
            p: cfg.pixel_channels,
            tokens,
            pixels: vec![0.0; k * cfg.pixel_channels],
            bias,
        };
        candidates.push(Candidate {
            name: LINEAR_PROBE,
            description: "frozen-encoder linear probe (ridge on the encoder's tokens)".into(),
            val_score: score(&head.predict(&hybrid, &judge, &judge_f)?),
            test: by_id(test, head.predict(&hybrid, test, &sf)?),
            source: Source::Linear(head.clone()),
        });
        probe_head = Some(head);
    }
    candidates.push(Candidate {
        name: KNN_PROBE,
        description: format!(
            "frozen-encoder kNN probe (k = {}; a reference, not publishable)",
            probe.summary.knn_k
        ),
        val_score: score(&probe.predict_with(&judge_f, true)?),
        test: by_id(test, probe.predict_with(&sf, true)?),
        source: Source::Reference,
    });

    sink.progress(0.25, "fitting the linear model of tokens and pixels");
    let both = linear(LinearInputs::All)?;
    candidates.push(linear_candidate(
        HYBRID_LINEAR,
        "linear model of the encoder's tokens and the pixels with their neighbourhoods".into(),
        &both,
    )?);
    starts.push((both.val_score, both.head));

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
        probe_head.as_ref()
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
    candidates.push(Candidate {
        name: FINE_TUNED,
        description: format!("fine-tuned {} head", cfg.head),
        val_score: score(&val_preds),
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
            test: BTreeMap::new(),
            source,
        }
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
        c[1].val_score = Some(0.80);
        assert_eq!(
            choose(Task::Segmentation, &c).expect("a choice").chosen,
            RAW_PIXELS
        );
        // A gain within the margin does not outweigh simplicity, and the reason says so.
        c[1].val_score = Some(0.80 + MARGIN * 0.8);
        let choice = choose(Task::Segmentation, &c).expect("a choice");
        assert_eq!(choice.chosen, RAW_PIXELS);
        assert!(
            choice.reason.contains("did not gain enough"),
            "{}",
            choice.reason
        );
        c[1].val_score = Some(0.80 + MARGIN * 1.5);
        assert_eq!(
            choose(Task::Segmentation, &c).expect("a choice").chosen,
            FINE_TUNED
        );
        // Regression: lower RMSE wins.
        c[1].val_score = Some(0.5);
        c[0].val_score = Some(0.7);
        assert_eq!(
            choose(Task::Regression, &c).expect("a choice").chosen,
            FINE_TUNED
        );
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
