//! `suggest`: the points the user should label next (active learning).
//!
//! 1. The acquired windows (a seeded sample of `max_windows`, plus every labelled one) are embedded by
//!    the frozen encoder, the same one `train` starts from. Each patch token is a candidate: the pixel
//!    at its centre. Its features are its embedding and the means, over its pixels, of the normalised
//!    10 m pixel features (bands × months and their neighbourhood means, as the `hybrid` head reads
//!    them), so suggestions follow what the pixels show even when the encoder has random weights.
//! 2. **Cold start** (labels of fewer than two classes): greedy k-center on the standardised
//!    embeddings. The first point is the most typical token, each next one the token farthest in
//!    embedding space from every point chosen or labelled so far. Reason `diverse`.
//! 3. **With labels**: the class-balanced ridge model of tokens and pixels (the `hybrid_linear`
//!    candidate of `train`) is fitted on the labelled pixels, and each token scored by its uncertainty
//!    (one minus the margin between its two best classes, the margin clamped to 0–1) times its novelty
//!    (its embedding distance to the nearest chosen or labelled token, relative to the median of those
//!    distances, capped at 1). Greedy: the best score, then the scores are updated. Reason `uncertain`.
//! 4. On the ground, no two suggestions, and no suggestion and label, lie closer than
//!    [`MIN_TOKENS_APART`] token widths.
//!
//! The suggestions are written with the step's claim ([`groundwork_store::suggestions::record`]); the
//! step fails with a reason when there is nothing to suggest (no acquired imagery, or every token
//! labelled).

use super::train::{WindowSource, class_ids, load_examples, pretrained};
use super::{permanent, retryable};
use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use candle_core::Tensor;
use futures::future::BoxFuture;
use groundwork_store::labels::{LabelTarget, Split, TrainingExample};
use groundwork_store::suggestions::{NewSuggestion, Reason};
use olmoearth::finetune::{
    Example, FitSink, IGNORE, LinearHead, LinearInputs, Rng, Target, embed_examples, fit_linear,
};
use olmoearth::task::{TaskModelConfig, TrainableTaskModel, pixel_channels, pixel_features};
use olmoearth::{Modality, ModelSize};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Suggestions made when the arguments do not say.
pub const DEFAULT_COUNT: u32 = 20;
/// The most suggestions one step makes.
pub const MAX_COUNT: u32 = 200;
/// Windows embedded when the arguments do not say (besides the labelled ones).
pub const DEFAULT_MAX_WINDOWS: u32 = 300;
/// No two suggestions (and no suggestion and labelled token) are closer than this many token widths.
pub const MIN_TOKENS_APART: f64 = 2.0;

/// Arguments of `suggest`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuggestArgs {
    /// How many points (1–200, default 20).
    #[serde(default)]
    pub count: Option<u32>,
    /// How many unlabelled windows to consider at most (a seeded sample; default 300).
    #[serde(default)]
    pub max_windows: Option<u32>,
    /// `cpu`, `cuda:N` or `auto` (default).
    #[serde(default)]
    pub device: Option<String>,
}

impl StepArgs for SuggestArgs {
    const KIND: StepKind = StepKind::Suggest;

    fn check(&self) -> Result<(), String> {
        if let Some(n) = self.count
            && !(1..=MAX_COUNT).contains(&n)
        {
            return Err(format!("count must be 1–{MAX_COUNT}, not {n}"));
        }
        if let Some(n) = self.max_windows
            && !(1..=10_000).contains(&n)
        {
            return Err(format!("max_windows must be 1–10000, not {n}"));
        }
        Ok(())
    }
}

/// The `suggest` step.
#[derive(Debug, Clone, Copy)]
pub struct Suggest;

/// One candidate point: a patch token of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Index of its window in the step's list.
    pub window: usize,
    /// Pixel row and column of the token's centre in its window.
    pub pixel: (u32, u32),
    /// Position on the ground (metres in the window's UTM zone, with the zone, so tokens of different
    /// zones are never compared as near).
    pub ground: (u32, f64, f64),
    /// The labelled class index covering most of its pixels, if any pixel is labelled.
    pub label: Option<usize>,
}

/// A chosen token and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    /// Index into the tokens.
    pub token: usize,
    /// Why it was chosen.
    pub reason: Reason,
    /// The probe's class index there.
    pub predicted: Option<usize>,
    /// Its margin between the two best classes.
    pub margin: Option<f64>,
}

/// Chooses up to `count` unlabelled tokens (see the module docs). `features` are the tokens' embeddings
/// (one row of `d` per token); `scores` the probe's class scores per token (`k` per token) when two
/// classes are labelled; `min_ground` the least distance in metres between two picks or a pick and a
/// labelled token.
#[must_use]
pub fn choose(
    tokens: &[Token],
    features: &[f32],
    d: usize,
    scores: Option<(&[f32], usize)>,
    count: usize,
    min_ground: f64,
) -> Vec<Pick> {
    let n = tokens.len();
    if n == 0 || d == 0 || features.len() != n * d {
        return Vec::new();
    }
    let x = standardise(features, n, d);
    let dist = |a: usize, b: usize| -> f64 {
        x[a * d..(a + 1) * d]
            .iter()
            .zip(&x[b * d..(b + 1) * d])
            .map(|(p, q)| f64::from(p - q).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    // Nearest chosen-or-labelled token in embedding space, per token.
    let mut nearest = vec![f64::INFINITY; n];
    let labelled: Vec<usize> = (0..n).filter(|&i| tokens[i].label.is_some()).collect();
    for (i, near) in nearest.iter_mut().enumerate() {
        for &l in &labelled {
            *near = near.min(dist(i, l));
        }
    }
    let mut taken_ground: Vec<(u32, f64, f64)> =
        labelled.iter().map(|&l| tokens[l].ground).collect();
    let too_close = |taken: &[(u32, f64, f64)], g: (u32, f64, f64)| {
        taken
            .iter()
            .any(|t| t.0 == g.0 && (t.1 - g.1).hypot(t.2 - g.2) < min_ground)
    };
    // The probe's guess and margin per token.
    let probe: Option<Vec<(usize, f64)>> = scores.and_then(|(s, k)| {
        (k >= 2 && s.len() == n * k).then(|| {
            (0..n)
                .map(|i| {
                    let row = &s[i * k..(i + 1) * k];
                    let (mut best, mut second) = ((0usize, f32::NEG_INFINITY), f32::NEG_INFINITY);
                    for (c, &v) in row.iter().enumerate() {
                        if v > best.1 {
                            second = best.1;
                            best = (c, v);
                        } else if v > second {
                            second = v;
                        }
                    }
                    (best.0, f64::from(best.1 - second).clamp(0.0, 1.0))
                })
                .collect()
        })
    });
    // The typical distance to what is known: novelty is measured against it.
    let scale = {
        let mut finite: Vec<f64> = (0..n)
            .filter(|&i| tokens[i].label.is_none() && nearest[i].is_finite())
            .map(|i| nearest[i])
            .collect();
        finite.sort_by(f64::total_cmp);
        finite
            .get(finite.len() / 2)
            .copied()
            .filter(|m| *m > 0.0)
            .unwrap_or(1.0)
    };
    // Cold start with nothing labelled: start from the most typical token (closest to the mean, which
    // is the origin after standardising).
    let typical = |i: usize| -> f64 {
        x[i * d..(i + 1) * d]
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum()
    };
    let mut picks: Vec<Pick> = Vec::new();
    let mut used = vec![false; n];
    while picks.len() < count {
        let mut best: Option<(usize, f64)> = None;
        for i in 0..n {
            if used[i] || tokens[i].label.is_some() || too_close(&taken_ground, tokens[i].ground) {
                continue;
            }
            let score = match &probe {
                Some(p) => (1.0 - p[i].1) * (nearest[i] / scale).min(1.0),
                None if nearest[i].is_finite() => nearest[i],
                None => -typical(i),
            };
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        let Some((i, _)) = best else { break };
        used[i] = true;
        taken_ground.push(tokens[i].ground);
        for (j, near) in nearest.iter_mut().enumerate() {
            *near = near.min(dist(i, j));
        }
        picks.push(Pick {
            token: i,
            reason: if probe.is_some() {
                Reason::Uncertain
            } else {
                Reason::Diverse
            },
            predicted: probe.as_ref().map(|p| p[i].0),
            margin: probe.as_ref().map(|p| p[i].1),
        });
    }
    picks
}

/// The candidate tokens of one window (`window`: its index in the step's list) and their features,
/// row-major `(h · w) × (D + P)`: each token's embedding (`embedding`, `(D, h, w)`), then the means of
/// the 10 m pixel features over its pixels (`pixels`, `(1, P, side, side)` from
/// [`olmoearth::task::pixel_features`]), which is what the probe's pixel part reads. `(epsg, gt)` place
/// the token centres on the ground; `mask` (class indices, [`IGNORE`] where unlabelled) gives their
/// labels. Returns the tokens, the features and `D + P`.
pub fn window_tokens(
    window: usize,
    embedding: &Tensor,
    pixels: &Tensor,
    side: usize,
    (epsg, gt): (u32, [f64; 6]),
    mask: Option<&[u8]>,
) -> olmoearth::Result<(Vec<Token>, Vec<f32>, usize)> {
    let (_, h, w) = embedding.dims3()?;
    let (th, tw) = (side / h.max(1), side / w.max(1));
    let pooled = pixels.avg_pool2d((th, tw))?.squeeze(0)?;
    let joined = Tensor::cat(&[&embedding.to_dtype(candle_core::DType::F32)?, &pooled], 0)?;
    let d = joined.dim(0)?;
    let rows: Vec<f32> = joined.permute((1, 2, 0))?.flatten_all()?.to_vec1()?;
    let labels = match mask {
        Some(m) => token_labels(m, side, h, w),
        None => vec![None; h * w],
    };
    let mut tokens = Vec::with_capacity(h * w);
    for ti in 0..h {
        for tj in 0..w {
            let (r, c) = (ti * th + th / 2, tj * tw + tw / 2);
            let (cx, cy) = (c as f64 + 0.5, r as f64 + 0.5);
            tokens.push(Token {
                window,
                pixel: (
                    u32::try_from(r).unwrap_or(u32::MAX),
                    u32::try_from(c).unwrap_or(u32::MAX),
                ),
                ground: (
                    epsg,
                    gt[0] + cx * gt[1] + cy * gt[2],
                    gt[3] + cx * gt[4] + cy * gt[5],
                ),
                label: labels.get(ti * w + tj).copied().flatten(),
            });
        }
    }
    Ok((tokens, rows, d))
}

/// Class scores (`k` per token, row-major) of tokens with `features` of width `d` (from
/// [`window_tokens`]) by the ridge model of tokens and pixels. The model is linear, so a token's score
/// is the mean of its pixels' scores (up to the upsampling of the tokens): its embedding and pixel
/// means through the two weight blocks.
#[must_use]
pub fn probe_scores(head: &LinearHead, features: &[f32], d: usize) -> Vec<f32> {
    let n = features.len().checked_div(d).unwrap_or(0);
    let mut s = vec![0f32; n * head.k];
    for i in 0..n {
        let (emb, px) = features[i * d..(i + 1) * d].split_at(head.d.min(d));
        for c in 0..head.k {
            let t = &head.tokens[c * head.d..(c + 1) * head.d];
            let p = &head.pixels[c * head.p..(c + 1) * head.p];
            s[i * head.k + c] = t.iter().zip(emb).map(|(a, b)| a * b).sum::<f32>()
                + p.iter().zip(px).map(|(a, b)| a * b).sum::<f32>()
                + head.bias[c];
        }
    }
    s
}

/// Each column shifted to mean 0 and scaled to standard deviation 1 (constant columns to 0).
fn standardise(features: &[f32], n: usize, d: usize) -> Vec<f32> {
    let mut out = features.to_vec();
    for c in 0..d {
        let mean = (0..n).map(|i| f64::from(features[i * d + c])).sum::<f64>() / n as f64;
        let var = (0..n)
            .map(|i| (f64::from(features[i * d + c]) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        let sd = var.sqrt();
        for i in 0..n {
            let v = f64::from(features[i * d + c]) - mean;
            #[expect(clippy::cast_possible_truncation, reason = "features are f32")]
            {
                out[i * d + c] = if sd > 1e-12 { (v / sd) as f32 } else { 0.0 };
            }
        }
    }
    out
}

/// The label of each token of a `size × size` class-index mask cut into `h × w` tokens: the class of
/// most labelled pixels, if any.
fn token_labels(mask: &[u8], size: usize, h: usize, w: usize) -> Vec<Option<usize>> {
    let (th, tw) = (size / h.max(1), size / w.max(1));
    let mut out = Vec::with_capacity(h * w);
    for ti in 0..h {
        for tj in 0..w {
            let mut counts: std::collections::BTreeMap<u8, usize> = Default::default();
            for r in ti * th..(ti + 1) * th {
                for c in tj * tw..(tj + 1) * tw {
                    if let Some(&v) = mask.get(r * size + c)
                        && v != IGNORE
                    {
                        *counts.entry(v).or_default() += 1;
                    }
                }
            }
            out.push(
                counts
                    .into_iter()
                    .max_by_key(|&(v, n)| (n, std::cmp::Reverse(v)))
                    .map(|(v, _)| usize::from(v)),
            );
        }
    }
    out
}

/// Progress and cancellation of the embedding pass.
struct Sink<'a>(&'a crate::Progress, &'a tokio_util::sync::CancellationToken);

impl FitSink for Sink<'_> {
    fn progress(&mut self, fraction: f32, message: &str) {
        self.0.set(fraction, message);
    }

    fn cancelled(&self) -> bool {
        self.1.is_cancelled()
    }

    fn epoch_done(
        &mut self,
        _: &olmoearth::finetune::FitState,
        _: &[u8],
        _: Option<&[u8]>,
    ) -> olmoearth::Result<()> {
        Ok(())
    }
}

impl Step for Suggest {
    type Args = SuggestArgs;

    fn run(
        &self,
        ctx: StepContext,
        args: SuggestArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move { suggest(&ctx, &args).await })
    }
}

async fn suggest(ctx: &StepContext, args: &SuggestArgs) -> Result<StepOutput, StepError> {
    let store = ctx.objects(StepKind::Suggest)?;
    let project = ctx.project().await?;
    if let Some(reason) = ctx.stale_refusal().await? {
        return Err(permanent(anyhow::anyhow!(reason)));
    }
    let count = args.count.unwrap_or(DEFAULT_COUNT) as usize;
    let device = olmoearth::device::parse_device(args.device.as_deref().unwrap_or("auto"))
        .map_err(permanent)?;
    ctx.progress.set(0.0, "reading the windows and labels");
    let grids: Vec<_> = ctx
        .window_grids()
        .await?
        .into_iter()
        .filter(|g| g.status == "acquired")
        .collect();
    if grids.is_empty() {
        return Err(permanent(anyhow::anyhow!(
            "the project has no acquired imagery yet: acquire imagery first"
        )));
    }
    let masks = ctx.label_masks(None).await?;
    let label_set_version = masks.as_ref().map(|(v, _)| *v);
    let masks: std::collections::HashMap<String, LabelTarget> = masks
        .map(|(_, m)| m.into_iter().collect())
        .unwrap_or_default();
    // Every labelled window, and a seeded sample of the others.
    let mut others: Vec<&str> = grids
        .iter()
        .filter(|g| !masks.contains_key(&g.id))
        .map(|g| g.id.as_str())
        .collect();
    let mut rng = Rng::new(u64::from_le_bytes(
        ctx.project_id.as_bytes()[..8]
            .try_into()
            .unwrap_or_default(),
    ));
    rng.shuffle(&mut others);
    others.truncate(args.max_windows.unwrap_or(DEFAULT_MAX_WINDOWS) as usize);
    let chosen: std::collections::HashSet<&str> = others.into_iter().collect();
    let windows: Vec<&groundwork_store::labels::WindowGrid> = grids
        .iter()
        .filter(|g| masks.contains_key(&g.id) || chosen.contains(g.id.as_str()))
        .collect();
    let examples: Vec<TrainingExample> = windows
        .iter()
        .map(|g| {
            let size = u32::try_from(g.size).unwrap_or(0);
            TrainingExample {
                window_id: g.id.clone(),
                split: Split::Train,
                target: masks.get(&g.id).cloned().unwrap_or(LabelTarget::Mask {
                    size,
                    pixels: vec![IGNORE; (size as usize) * (size as usize)],
                }),
            }
        })
        .collect();
    let classes = class_ids(&project.classes, &examples);
    let ids: Vec<String> = examples.iter().map(|e| e.window_id.clone()).collect();
    let objects = ctx.objects_of(&ids).await?;
    let keys = ctx.keys();
    let modalities: Vec<Modality> = project.modalities.clone();
    let source = WindowSource {
        store: store.as_ref(),
        keys: &keys,
        objects: &objects,
        modalities: &modalities,
        device: &device,
    };
    let (loaded, skipped) =
        load_examples(&source, &examples, &classes, &ctx.progress, None).await?;
    if loaded.is_empty() {
        return Err(permanent(anyhow::anyhow!(
            "no acquired window has readable imagery (skipped: {skipped:?}); acquire imagery again"
        )));
    }
    let loaded: Vec<Example> = loaded.into_iter().map(|(_, e)| e).collect();
    let geo: std::collections::HashMap<String, (u32, [f64; 6])> = windows
        .iter()
        .map(|g| {
            let gt: Vec<f64> = serde_json::from_value(g.geotransform.clone()).unwrap_or_default();
            let gt: [f64; 6] = gt.try_into().unwrap_or([0.0, 10.0, 0.0, 0.0, 0.0, -10.0]);
            (g.id.clone(), (u32::try_from(g.epsg).unwrap_or(0), gt))
        })
        .collect();

    // Embeddings, the probe and the choice are CPU work.
    let size: ModelSize = project.model_size;
    let patch_size = usize::try_from(project.patch_size).unwrap_or(4);
    let window_size = usize::try_from(project.window_size).unwrap_or(64);
    // The shared checkpoint, copied from the object store when this worker's model folder lacks it.
    // Without one the encoder starts from random weights (the output says so): suggestions also
    // read the pixels, so they stay useful.
    crate::pretrained::ensure_local(Some(store.as_ref()), ctx.model_dir.as_deref(), size).await?;
    let model_dir = ctx.model_dir.clone();
    let progress = ctx.progress.clone();
    let cancel = ctx.cancel.clone();
    let k = classes.len();
    // Labels must lie in the area: the windows' margins outside it are never suggested.
    let area = groundwork_imagery::rasterize::parse_area(&project.aoi);
    let work = move || -> Result<Chosen, StepError> {
        let super::train::Pretrained {
            from: initialised_from,
            cfg: enc_cfg,
            sd,
            note,
            ..
        } = pretrained(
            model_dir.as_deref(),
            size,
            0,
            &device,
            super::train::RandomInit::Fallback,
        )
        .map_err(|reason| permanent(anyhow::anyhow!(reason)))?;
        let cfg = TaskModelConfig {
            format: olmoearth::task::TASK_MODEL_FORMAT,
            encoder: enc_cfg,
            model_size: size.name().into(),
            patch_size,
            task: groundwork_types::Task::Segmentation,
            num_outputs: k.max(2),
            head: groundwork_types::HeadKind::LightSegmentation,
            modalities,
            window_size,
            initialised_from: initialised_from.clone(),
            pixel_channels: 0,
            pixel_context: olmoearth::task::PIXEL_CONTEXT_RADII.to_vec(),
            context_observed_only: true,
        };
        let mut cfg = cfg;
        cfg.pixel_channels =
            pixel_channels(&loaded[0].input, &cfg.pixel_context).map_err(permanent)?;
        if let Some(e) = loaded
            .iter()
            .find(|e| pixel_channels(&e.input, &cfg.pixel_context).ok() != Some(cfg.pixel_channels))
        {
            return Err(permanent(anyhow::anyhow!(
                "window {} has another number of months or bands than the others; re-run the acquisition",
                e.id
            )));
        }
        let mut sink = Sink(&progress, &cancel);
        let encoder = TrainableTaskModel::new(cfg.clone(), &sd, &device)
            .and_then(|m| m.inference_encoder())
            .map_err(permanent)?;
        let features = embed_examples(&encoder, &loaded, patch_size, 8, &mut sink, (0.1, 0.8))
            .map_err(|e| match e {
                olmoearth::Error::Cancelled => StepError::Cancelled,
                e => permanent(e),
            })?;
        drop(encoder);
        sink.progress(0.8, "choosing points");
        let mut tokens = Vec::new();
        let mut flat: Vec<f32> = Vec::new();
        let mut d = 0;
        let mut pixel_size = 10.0f64;
        for (wi, (e, f)) in loaded.iter().zip(&features).enumerate() {
            let (side, _) = olmoearth::finetune::input_hw(&e.input).map_err(permanent)?;
            let pixels = pixel_features(&e.input, &cfg.pixel_context, cfg.context_observed_only)
                .map_err(permanent)?;
            let (epsg, gt) = geo.get(&e.id).copied().unwrap_or((0, [0.0; 6]));
            pixel_size = gt[1].abs().max(1e-6);
            let mask = match &e.target {
                Target::Mask(m) => Some(m.as_slice()),
                _ => None,
            };
            let (window_tokens, rows, dd) =
                window_tokens(wi, f, &pixels, side, (epsg, gt), mask).map_err(permanent)?;
            d = dd;
            tokens.extend(window_tokens);
            flat.extend(rows);
        }
        // The probe, once two classes are labelled.
        let labelled_classes: std::collections::BTreeSet<usize> =
            tokens.iter().filter_map(|t| t.label).collect();
        let scores = if labelled_classes.len() >= 2 && k >= 2 {
            let (lab, lab_features): (Vec<Example>, Vec<Tensor>) = loaded
                .iter()
                .zip(&features)
                .filter(
                    |(e, _)| matches!(&e.target, Target::Mask(m) if m.iter().any(|&v| v != IGNORE)),
                )
                .map(|(e, f)| (e.clone(), f.clone()))
                .unzip();
            let fit = fit_linear(
                &cfg,
                LinearInputs::All,
                &lab,
                &lab_features,
                &[],
                &[],
                50_000,
                0,
            )
            .map_err(permanent)?;
            Some((probe_scores(&fit.head, &flat, d), fit.head.k))
        } else {
            None
        };
        let (tokens, flat, scores) = match &area {
            Some(area) => {
                let inside = inside_area(&tokens, area).map_err(permanent)?;
                keep_tokens(tokens, flat, scores, d, |i, t| {
                    inside[i] || t.label.is_some()
                })
            }
            None => (tokens, flat, scores),
        };
        let min_ground = MIN_TOKENS_APART * patch_size as f64 * pixel_size;
        let picks = choose(
            &tokens,
            &flat,
            d,
            scores.as_ref().map(|(s, k)| (s.as_slice(), *k)),
            count,
            min_ground,
        );
        Ok(Chosen {
            window_ids: loaded.iter().map(|e| e.id.clone()).collect(),
            labelled_tokens: tokens.iter().filter(|t| t.label.is_some()).count(),
            tokens,
            picks,
            initialised_from,
            note,
            labelled_classes: labelled_classes.len(),
        })
    };
    let chosen = tokio::task::spawn_blocking(work)
        .await
        .map_err(retryable)??;
    if chosen.picks.is_empty() {
        return Err(permanent(anyhow::anyhow!(
            "nothing left to suggest: every token of the {} windows considered is labelled, next to a label or outside the area",
            chosen.window_ids.len()
        )));
    }

    // Positions on the ground, per UTM zone.
    let mut items = Vec::with_capacity(chosen.picks.len());
    for p in &chosen.picks {
        let t = &chosen.tokens[p.token];
        let lonlat = groundwork_imagery::grid::to_lonlat(t.ground.0, &[(t.ground.1, t.ground.2)])
            .map_err(permanent)?;
        let (lon, lat) = lonlat.first().copied().unwrap_or_default();
        items.push(NewSuggestion {
            window_id: chosen.window_ids[t.window].clone(),
            pixel_row: i32::try_from(t.pixel.0).unwrap_or(i32::MAX),
            pixel_col: i32::try_from(t.pixel.1).unwrap_or(i32::MAX),
            lon,
            lat,
            reason: p.reason,
            predicted_class: p.predicted.and_then(|c| classes.get(c).copied()),
            margin: p.margin,
        });
    }
    let n = items.len();
    ctx.record_suggestions(items).await?;
    let mode = if chosen.labelled_classes >= 2 {
        "uncertainty"
    } else {
        "cold_start"
    };
    ctx.progress.set(1.0, format!("{} points to label next", n));
    Ok(StepOutput {
        output: json!({
            "suggestions": n,
            "mode": mode,
            "label_set_version": label_set_version,
            "labelled_tokens": chosen.labelled_tokens,
            "labelled_classes": chosen.labelled_classes,
            "windows": chosen.window_ids.len(),
            "windows_acquired": grids.len(),
            "candidates": chosen.tokens.len(),
            "initialised_from": chosen.initialised_from,
            "initialisation_note": chosen.note,
            "skipped": skipped,
        }),
        artifacts: Vec::new(),
    })
}

/// What the blocking part found.
struct Chosen {
    window_ids: Vec<String>,
    tokens: Vec<Token>,
    picks: Vec<Pick>,
    labelled_tokens: usize,
    labelled_classes: usize,
    initialised_from: String,
    note: Option<String>,
}

/// Whether the centre of each token lies in `area` (lon/lat); positions are converted zone by zone.
fn inside_area(
    tokens: &[Token],
    area: &geo::MultiPolygon<f64>,
) -> groundwork_imagery::Result<Vec<bool>> {
    use geo::Intersects;
    let mut by_zone: std::collections::BTreeMap<u32, Vec<usize>> =
        std::collections::BTreeMap::new();
    for (i, t) in tokens.iter().enumerate() {
        by_zone.entry(t.ground.0).or_default().push(i);
    }
    let mut inside = vec![false; tokens.len()];
    for (epsg, at) in by_zone {
        let points: Vec<(f64, f64)> = at
            .iter()
            .map(|&i| (tokens[i].ground.1, tokens[i].ground.2))
            .collect();
        let lonlat = groundwork_imagery::grid::to_lonlat(epsg, &points)?;
        for (&i, (lon, lat)) in at.iter().zip(lonlat) {
            inside[i] = area.intersects(&geo::Point::new(lon, lat));
        }
    }
    Ok(inside)
}

/// Class scores of tokens, `k` a token (row-major), and `k`.
type Scores = Option<(Vec<f32>, usize)>;

/// The tokens `keep` accepts, with their feature rows (`d` wide) and score rows.
fn keep_tokens(
    tokens: Vec<Token>,
    flat: Vec<f32>,
    scores: Scores,
    d: usize,
    keep: impl Fn(usize, &Token) -> bool,
) -> (Vec<Token>, Vec<f32>, Scores) {
    let kept: Vec<usize> = (0..tokens.len()).filter(|&i| keep(i, &tokens[i])).collect();
    if kept.len() == tokens.len() {
        return (tokens, flat, scores);
    }
    let rows = |v: &[f32], w: usize| -> Vec<f32> {
        kept.iter()
            .flat_map(|&i| v.get(i * w..(i + 1) * w).unwrap_or(&[]).iter().copied())
            .collect()
    };
    let flat = rows(&flat, d);
    let scores = scores.map(|(s, k)| (rows(&s, k), k));
    let tokens = kept.iter().map(|&i| tokens[i].clone()).collect();
    (tokens, flat, scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` tokens in a row 100 m apart, each with a 2-d feature.
    fn row(features: &[[f32; 2]], labels: &[Option<usize>]) -> (Vec<Token>, Vec<f32>) {
        let tokens = features
            .iter()
            .enumerate()
            .map(|(i, _)| Token {
                window: 0,
                pixel: (0, 0),
                ground: (32633, 100.0 * i as f64, 0.0),
                label: labels.get(i).copied().flatten(),
            })
            .collect();
        (tokens, features.iter().flatten().copied().collect())
    }

    #[test]
    fn a_cold_start_visits_every_cluster_before_a_second_point_of_one() {
        // Three clusters in feature space: around (0, 0), (10, 0) and (0, 10).
        let f = [
            [0.0, 0.1],
            [10.0, 0.0],
            [0.1, 0.0],
            [0.0, 10.0],
            [10.1, 0.1],
            [0.2, 10.1],
            [0.1, 0.2],
        ];
        let cluster = |i: usize| match i {
            0 | 2 | 6 => 0,
            1 | 4 => 1,
            _ => 2,
        };
        let (tokens, x) = row(&f, &[]);
        let picks = choose(&tokens, &x, 2, None, 3, 50.0);
        let mut seen: Vec<usize> = picks.iter().map(|p| cluster(p.token)).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2], "{picks:?}");
        assert!(picks.iter().all(|p| p.reason == Reason::Diverse));
    }

    #[test]
    fn points_keep_their_distance_on_the_ground_and_from_labels() {
        let f: Vec<[f32; 2]> = (0..10).map(|i| [i as f32, (i * i) as f32]).collect();
        let labels: Vec<Option<usize>> = (0..10).map(|i| (i == 5).then_some(0)).collect();
        let (tokens, x) = row(&f, &labels);
        // 250 m apart at least: tokens are 100 m apart, so no two picks within two places.
        let picks = choose(&tokens, &x, 2, None, 10, 250.0);
        let mut at: Vec<f64> = picks.iter().map(|p| tokens[p.token].ground.1).collect();
        at.sort_by(f64::total_cmp);
        for pair in at.windows(2) {
            assert!(pair[1] - pair[0] >= 250.0, "{at:?}");
        }
        assert!(at.iter().all(|a| (a - 500.0).abs() >= 250.0), "{at:?}");
        assert!(!picks.is_empty());
    }

    #[test]
    fn with_scores_the_least_sure_token_comes_first_and_labels_are_never_suggested() {
        let f = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]];
        let (tokens, x) = row(&f, &[Some(0), None, None, Some(1)]);
        // Token 2 is a toss-up, token 1 fairly sure.
        let scores = [1.0, 0.0, 0.9, 0.1, 0.52, 0.48, 0.0, 1.0];
        let picks = choose(&tokens, &x, 2, Some((&scores, 2)), 4, 50.0);
        assert_eq!(picks.len(), 2, "{picks:?}");
        assert_eq!(picks[0].token, 2);
        assert_eq!(picks[0].predicted, Some(0));
        assert!((picks[0].margin.unwrap() - 0.04).abs() < 1e-6);
        assert_eq!(picks[1].token, 1);
        assert!(picks.iter().all(|p| p.reason == Reason::Uncertain));
    }

    #[test]
    fn a_token_takes_the_class_of_most_of_its_labelled_pixels() {
        // A 4 × 4 mask, 2 × 2 tokens: only the top-left token has labels (three of class 2, one of 1).
        let mut mask = vec![IGNORE; 16];
        mask[0] = 2;
        mask[1] = 2;
        mask[4] = 2;
        mask[5] = 1;
        assert_eq!(
            token_labels(&mask, 4, 2, 2),
            vec![Some(2), None, None, None]
        );
    }

    #[test]
    fn tokens_outside_the_area_are_left_out_with_their_rows() {
        // Four tokens 1 km apart eastwards from 15° E on the 45th parallel (UTM 33N); the area
        // covers the first two (15.000–15.015° E).
        let tokens: Vec<Token> = (0..4)
            .map(|i| Token {
                window: 0,
                pixel: (0, 0),
                ground: (32633, 500_000.0 + 1000.0 * f64::from(i), 4_983_000.0),
                label: None,
            })
            .collect();
        let area =
            groundwork_imagery::rasterize::parse_area(&json!({"type": "Polygon", "coordinates": [[
                [14.99, 44.9], [14.99, 45.1], [15.015, 45.1], [15.015, 44.9], [14.99, 44.9]
            ]]}))
            .expect("an area");
        let inside = inside_area(&tokens, &area).expect("lon/lat");
        assert_eq!(inside, vec![true, true, false, false]);
        // Rows follow their tokens; a labelled token is kept wherever it is.
        let mut with_label = tokens.clone();
        with_label[3].label = Some(0);
        let flat: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let scores = Some(((0..12).map(|v| v as f32).collect(), 3));
        let (kept, flat, scores) = keep_tokens(with_label, flat, scores, 2, |i, t| {
            inside[i] || t.label.is_some()
        });
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[2].label, Some(0));
        assert_eq!(flat, vec![0.0, 1.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!(
            scores,
            Some((vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 9.0, 10.0, 11.0], 3))
        );
    }
}
