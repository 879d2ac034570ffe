//! Label efficiency of the `suggest` step on the offline demo scene: test accuracy and macro-F1 of models
//! trained on point labels picked at random (stratified per class) against points picked by the
//! suggestion logic, for budgets of 10, 20, 40 and 80 points per class, several seeds each.
//!
//! - **Scene**: the demo scene (`SCENE`, default `classic`), cut into 64 × 64 px windows as
//!   `train_demo` does; the windows of the top three quarters of the rows are the labelling pool, those
//!   of the bottom quarter the test windows, scored on every pixel against the ground truth. Each seed
//!   draws `POOL_WINDOWS` windows of the pool (as the step samples `max_windows`); both strategies
//!   label within the same windows.
//! - **Points**: single pixels, each the only labelled pixel of its window's mask around it (every other
//!   pixel `IGNORE`), as the platform's point labels; a point's label is its ground-truth class.
//! - **Random**: per class, `b` pixels of that class drawn uniformly from the pool (nested budgets).
//! - **Suggested**: a simulated user answers the suggestion logic of `worker/src/steps/suggest.rs`
//!   (rebuilt here from its public parts, [`choose`] and [`Token`]): token features are the
//!   frozen-encoder embedding and the token means of the 10 m pixel features; a cold start of
//!   `COLD_START` points by greedy k-center ([`choose`] without scores); then rounds of: fit the
//!   class-balanced ridge of tokens and pixels on every label (no validation, as the step does), score
//!   every token (uncertainty × novelty, in [`choose`]), label `SUGGEST_BATCH` suggestions; until
//!   `b × classes` points, whatever classes they are. Budgets are prefixes of one sequence per seed.
//! - **Models**, each fitted as `train` fits its candidates on a split of the labelled windows (a seeded
//!   15/85 of them validate, the rest train, like the platform's 70/15/15 split without its test share):
//!   the ridge of the frozen encoder's tokens alone (the frozen-embedding linear probe), the ridge of
//!   tokens and pixels (`LinearInputs::All`, the `hybrid_linear` candidate, the model suggestions come
//!   from), each with the penalty validation picks; and the fine-tuned `hybrid` head: [`Trainer`]
//!   started from that ridge (temperature picked on validation), `EPOCHS` epochs with the encoder frozen
//!   (on cached features: an unfrozen epoch costs minutes on a CPU), keeping the epoch of best validation
//!   macro-F1 (epoch 0 is the start).
//!
//! Prints the settings, the machine's load at the start and the end, one line per fit, the tables (mean
//! ± sd over seeds), the suggested labels' classes, and per model the smallest suggested budget that
//! reaches random labels at the largest budget.
//!
//! Run: `scripts/bench-labels.sh` (settings there).

#![expect(clippy::print_stdout, reason = "benchmark")]

use anyhow::{Context, Result, anyhow};
use candle_core::{DType, Device, Tensor};
use groundwork_imagery::{AcquireRequest, DemoOptions, GridOptions, Modality, Source};
use groundwork_worker::steps::suggest::MIN_TOKENS_APART;
use groundwork_worker::steps::{Token, choose, probe_scores, window_tokens};
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use olmoearth::StateDict;
use olmoearth::finetune::{
    Example, FitData, FitOptions, FitSink, FitState, IGNORE, LinearHead, LinearInputs, Rng, Target,
    Trainer, embed_examples, fit_linear,
};
use olmoearth::task::{
    Head, HeadKind, Task, TaskModelConfig, TrainableTaskModel, input_from_window, pixel_channels,
    pixel_features,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Window side in pixels.
const SIDE: usize = 64;
/// Rows a ridge model is fitted on at most (far more than any budget here).
const MAX_ROWS: usize = 100_000;
/// Validation windows per labelled window: 15 of 85, the platform's default split (70/15/15) without
/// its test share (the test windows here are the held-out rows).
const VAL_SHARE: f64 = 0.15 / 0.85;

/// A sink that reports nothing and never cancels.
struct Quiet;

impl FitSink for Quiet {
    fn progress(&mut self, _: f32, _: &str) {}
    fn cancelled(&self) -> bool {
        false
    }
    fn epoch_done(&mut self, _: &FitState, _: &[u8], _: Option<&[u8]>) -> olmoearth::Result<()> {
        Ok(())
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.split([' ', ','])
                .filter_map(|s| s.trim().parse().ok())
                .collect::<Vec<usize>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// One window: its input, frozen features, pixel features, ground truth and place.
struct Window {
    id: String,
    example: Example,
    /// `(D, h, w)` frozen-encoder features.
    features: Tensor,
    /// `(1, P, H, W)` pixel features the `hybrid` head reads.
    pixels: Tensor,
    /// Class index per pixel, row-major.
    truth: Vec<u8>,
    epsg: u32,
    geotransform: [f64; 6],
}

/// The scene, the encoder and the model configuration.
struct Setup {
    classes: Vec<String>,
    pool: Vec<Window>,
    test: Vec<Window>,
    cfg: TaskModelConfig,
    sd: StateDict,
    encoder_note: String,
    device: Device,
}

/// Labelled windows: examples (masks of their points) and their frozen features.
type Labelled = (Vec<Example>, Vec<Tensor>);

/// A labelled point: window (index into the pool), pixel (row-major index), class index.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    window: usize,
    pixel: usize,
    class: u8,
}

/// Accuracy and macro-F1 (over the classes present in the truth) of one model on the test pixels.
#[derive(Debug, Clone, Copy)]
struct Score {
    accuracy: f64,
    macro_f1: f64,
}

/// One number of a [`Score`].
type Metric = fn(&Score) -> f64;

/// The models, in table order.
const MODELS: [&str; 3] = ["token probe", "ridge T+P", "fine-tuned"];
/// The strategies, in table order.
const STRATEGIES: [&str; 2] = ["random", "suggested"];

async fn setup(scene: &str, scene_seed: u64, patch: usize) -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let opts = DemoOptions::scene(scene, scene_seed)?;
    let catalog = groundwork_imagery::generate_demo_data(dir.path(), &opts)?;
    let aoi: geojson::Feature =
        serde_json::from_slice(&std::fs::read(dir.path().join("aoi.geojson"))?)?;
    let specs = groundwork_imagery::windows_for_aoi(
        aoi.geometry
            .as_ref()
            .context("the demo area has no geometry")?,
        &GridOptions {
            window_size: SIDE as u32,
            ..GridOptions::default()
        },
    )?;
    let store = LocalFileSystem::new_with_prefix(dir.path())?;
    let prefix = object_store::path::Path::from("demo");
    let (first, last) = (
        opts.months.iter().min().copied().unwrap_or(4),
        opts.months.iter().max().copied().unwrap_or(7),
    );
    let start = chrono::NaiveDate::from_ymd_opt(2024, first, 1).context("first month")?;
    let end = chrono::NaiveDate::from_ymd_opt(2024 + i32::from(last == 12), last % 12 + 1, 1)
        .and_then(|d| d.pred_opt())
        .context("last month")?;
    let mut req = AcquireRequest::new(
        Source::parse(catalog.to_str().context("catalogue path")?),
        vec![Modality::Sentinel2L2a],
        start,
        end,
    );
    // The benchmark's own generated catalogue on disk.
    req.outbound = groundwork_imagery::OutboundPolicy::trusted();
    let t0 = Instant::now();
    let report = groundwork_imagery::acquire(
        &specs,
        &req,
        &store,
        &prefix,
        &|_| {},
        &groundwork_imagery::CancellationToken::new(),
    )
    .await?;
    println!(
        "acquired {} of {} windows in {:.1} s",
        report.succeeded,
        report.total,
        t0.elapsed().as_secs_f64()
    );

    // Ground truth: the scene's land-cover map on the same grid, class ids → class indices.
    let truth = groundwork_imagery::demo::land_cover_of(&opts);
    let index: HashMap<u8, u8> = opts
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| Ok::<_, anyhow::Error>((c.id, u8::try_from(i)?)))
        .collect::<Result<_>>()?;
    let device = Device::Cpu;
    let window_rows = opts.size / SIDE;
    let test_from = window_rows - (window_rows / 4).max(1);
    let (mut pool, mut test) = (Vec::new(), Vec::new());
    for w in &specs {
        let key = object_store::path::Path::from(format!(
            "demo/windows/{}/sentinel2_l2a.safetensors",
            w.id
        ));
        let Ok(got) = store.get(&key).await else {
            continue;
        };
        let bytes = got.bytes().await?;
        let input = input_from_window(&[(olmoearth::Modality::Sentinel2L2a, &bytes)], &device)?;
        let col = ((w.geotransform[0] - opts.origin.0) / 10.0).round() as usize;
        let row = ((opts.origin.1 - w.geotransform[3]) / 10.0).round() as usize;
        let mut mask = Vec::with_capacity(SIDE * SIDE);
        for y in 0..SIDE {
            for x in 0..SIDE {
                let id = truth[(row + y) * opts.size + col + x];
                mask.push(*index.get(&id).context("a ground-truth id with no class")?);
            }
        }
        let window = Window {
            id: w.id.clone(),
            example: Example {
                id: w.id.clone(),
                input,
                target: Target::Mask(mask.clone()),
            },
            features: Tensor::zeros(1, DType::F32, &device)?,
            pixels: Tensor::zeros(1, DType::F32, &device)?,
            truth: mask,
            epsg: w.epsg,
            geotransform: w.geotransform,
        };
        if row / SIDE >= test_from {
            test.push(window);
        } else {
            pool.push(window);
        }
    }
    if pool.is_empty() || test.is_empty() {
        return Err(anyhow!(
            "no windows to label or to test ({} and {})",
            pool.len(),
            test.len()
        ));
    }

    let (model_dir, encoder_note) = match std::env::var("MODEL_DIR") {
        Ok(d) if !d.is_empty() => (std::path::PathBuf::from(&d), format!("checkpoint in {d}")),
        _ => (
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../olmoearth/tests/fixtures/olmoearth-nano"),
            "Nano test fixture olmoearth/tests/fixtures/olmoearth-nano: seed-0 random \
             initialisation of the reference code, NOT pretrained weights"
                .into(),
        ),
    };
    let (enc_cfg, sd) = olmoearth::ModelFiles::resolve(&model_dir)?.load()?;
    let context = olmoearth::task::PIXEL_CONTEXT_RADII.to_vec();
    let cfg = TaskModelConfig {
        format: olmoearth::task::TASK_MODEL_FORMAT,
        encoder: enc_cfg,
        model_size: "nano".into(),
        patch_size: patch,
        task: Task::Segmentation,
        num_outputs: opts.classes.len(),
        head: HeadKind::Hybrid,
        modalities: vec![olmoearth::Modality::Sentinel2L2a],
        window_size: SIDE,
        initialised_from: "benchmark".into(),
        pixel_channels: pixel_channels(&pool[0].example.input, &context)?,
        pixel_context: context,
        context_observed_only: true,
    };
    cfg.validate()?;

    // Frozen features and pixel features of every window, once.
    let t0 = Instant::now();
    let encoder = TrainableTaskModel::new(cfg.clone(), &sd, &device)?.inference_encoder()?;
    for set in [&mut pool, &mut test] {
        let examples: Vec<Example> = set.iter().map(|w| w.example.clone()).collect();
        let features = embed_examples(&encoder, &examples, patch, 8, &mut Quiet, (0.0, 1.0))?;
        for (w, f) in set.iter_mut().zip(features) {
            w.features = f.to_dtype(DType::F32)?;
            w.pixels = pixel_features(
                &w.example.input,
                &cfg.pixel_context,
                cfg.context_observed_only,
            )?;
        }
    }
    println!(
        "embedded {} windows in {:.1} s",
        pool.len() + test.len(),
        t0.elapsed().as_secs_f64()
    );
    drop(dir);
    Ok(Setup {
        classes: opts.classes.iter().map(|c| c.name.clone()).collect(),
        pool,
        test,
        cfg,
        sd,
        encoder_note,
        device,
    })
}

/// The training windows of `points` (those with a point): examples whose masks hold the points' pixels
/// (every other pixel `IGNORE`) and their features.
fn training_set(s: &Setup, points: &[Point]) -> Labelled {
    let mut masks: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    for p in points {
        masks
            .entry(p.window)
            .or_insert_with(|| vec![IGNORE; SIDE * SIDE])[p.pixel] = p.class;
    }
    masks
        .into_iter()
        .map(|(w, mask)| {
            let win = &s.pool[w];
            (
                Example {
                    id: win.id.clone(),
                    input: win.example.input.clone(),
                    target: Target::Mask(mask),
                },
                win.features.clone(),
            )
        })
        .unzip()
}

/// The labelled windows split as the platform splits labels (by window, 70 : 15 train : validation):
/// a seeded share of 15/85 of the windows with points (at least one, when there are two) validates.
fn split(points: &[Point], seed: u64) -> (Vec<Point>, Vec<Point>) {
    let mut windows: Vec<usize> = points.iter().map(|p| p.window).collect();
    windows.sort_unstable();
    windows.dedup();
    Rng::new(seed ^ 0x5_9117).shuffle(&mut windows);
    let n_val = if windows.len() < 2 {
        0
    } else {
        ((windows.len() as f64 * VAL_SHARE).round() as usize).clamp(1, windows.len() - 1)
    };
    let val: std::collections::HashSet<usize> = windows[..n_val].iter().copied().collect();
    points.iter().partition(|p| !val.contains(&p.window))
}

/// The class-balanced ridge of `inputs`, fitted on `train`, its penalty chosen on `val` (without
/// validation points, the penalty `fit_linear` takes then, as `suggest` does).
fn ridge(s: &Setup, inputs: LinearInputs, train: &Labelled, val: &Labelled) -> Result<LinearHead> {
    Ok(fit_linear(
        &s.cfg, inputs, &train.0, &train.1, &val.0, &val.1, MAX_ROWS, 0,
    )?
    .head)
}

/// The `hybrid` head that computes the linear model `head`.
fn linear_as_head(s: &Setup, head: &LinearHead) -> Result<Head> {
    let tensors: HashMap<String, Tensor> =
        head.hybrid_tensors("", &s.device)?.into_iter().collect();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &s.device);
    Ok(Head::new(&s.cfg, vb)?)
}

/// Accuracy and macro-F1 of `head` on every pixel of the test windows.
fn score(s: &Setup, head: &Head) -> Result<Score> {
    let k = s.classes.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for chunk in s.test.chunks(8) {
        let f: Vec<Tensor> = chunk.iter().map(|w| w.features.clone()).collect();
        let p: Vec<Tensor> = chunk.iter().map(|w| w.pixels.clone()).collect();
        let raw = head.forward(&Tensor::stack(&f, 0)?, Some(&Tensor::cat(&p, 0)?))?;
        let classes: Vec<u32> = raw.argmax(1)?.flatten_all()?.to_vec1()?;
        for (pred, truth) in classes.chunks(SIDE * SIDE).zip(chunk) {
            for (&p, &t) in pred.iter().zip(&truth.truth) {
                confusion[usize::from(t)][p as usize] += 1;
            }
        }
    }
    let total: u64 = confusion.iter().flatten().sum();
    let right: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let (mut f1, mut present) = (0.0, 0usize);
    for (c, row) in confusion.iter().enumerate() {
        let support: u64 = row.iter().sum();
        if support == 0 {
            continue;
        }
        let predicted: u64 = confusion.iter().map(|r| r[c]).sum();
        let tp = row[c] as f64;
        let (prec, rec) = (tp / predicted.max(1) as f64, tp / support as f64);
        f1 += if prec + rec > 0.0 {
            2.0 * prec * rec / (prec + rec)
        } else {
            0.0
        };
        present += 1;
    }
    Ok(Score {
        accuracy: right as f64 / total.max(1) as f64,
        macro_f1: f1 / present.max(1) as f64,
    })
}

/// Fine-tuning settings.
#[derive(Debug, Clone, Copy)]
struct Tune {
    epochs: usize,
    batch: usize,
}

/// Fine-tunes the `hybrid` head, encoder frozen, from the ridge `start` as `train` does (the start's
/// temperature, early stopping and the epoch kept chosen on `val`); returns the kept head and a note.
fn fine_tune(
    s: &Setup,
    (train, val): (&Labelled, &Labelled),
    start: &LinearHead,
    tune: Tune,
    seed: u64,
) -> Result<(Head, String)> {
    let model = TrainableTaskModel::new(s.cfg.clone(), &s.sd, &s.device)?;
    let opts = FitOptions {
        epochs: tune.epochs,
        freeze_epochs: tune.epochs,
        batch_size: tune.batch,
        seed,
        ..FitOptions::default()
    };
    let mut trainer = Trainer::new(model, opts, &train.0)?;
    let data = FitData {
        train: &train.0,
        val: &val.0,
        train_features: Some(&train.1),
        val_features: Some(&val.1),
    };
    let temperature = trainer.start_from_linear(start, &data, &mut Quiet)?;
    trainer.fit(&data, &mut Quiet)?;
    let state = trainer.state();
    let note = format!(
        "start temperature {}, kept epoch {} of {} (val macro-F1 {})",
        temperature.map_or_else(|| "none".into(), |t| t.to_string()),
        state
            .best_epoch
            .map_or_else(|| "none".into(), |e| e.to_string()),
        state.epoch,
        state
            .history
            .iter()
            .map(|r| r
                .val_metric
                .map_or_else(|| "-".into(), |m| format!("{m:.3}")))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let weights = trainer.final_weights()?;
    let model = TrainableTaskModel::from_safetensors(s.cfg.clone(), &weights, &s.device)?;
    Ok((model.head().clone(), note))
}

/// The three models fitted on `points` (split into training and validation windows), scored on the
/// test windows, in [`MODELS`] order.
fn evaluate(s: &Setup, points: &[Point], tune: Tune, seed: u64) -> Result<[Score; 3]> {
    let t = Instant::now();
    let (train_points, val_points) = split(points, seed);
    let train = training_set(s, &train_points);
    let val = training_set(s, &val_points);
    let probe = ridge(s, LinearInputs::Tokens, &train, &val)?;
    let both = ridge(s, LinearInputs::All, &train, &val)?;
    let t_ridge = t.elapsed().as_secs_f64();
    let (tuned, note) = fine_tune(s, (&train, &val), &both, tune, seed)?;
    let t_tune = t.elapsed().as_secs_f64() - t_ridge;
    let out = [
        score(s, &linear_as_head(s, &probe)?)?,
        score(s, &linear_as_head(s, &both)?)?,
        score(s, &tuned)?,
    ];
    println!(
        "    {} training points in {} windows, {} validation points in {} windows; ridges {t_ridge:.1} s; \
         fine-tune {t_tune:.1} s: {note}",
        train_points.len(),
        train.0.len(),
        val_points.len(),
        val.0.len(),
    );
    Ok(out)
}

/// Random points, stratified: per class, a seeded random order of the pool's pixels of that class.
fn random_orders(s: &Setup, pool: &[usize], seed: u64) -> Vec<Vec<Point>> {
    let k = s.classes.len();
    let mut by_class: Vec<Vec<Point>> = vec![Vec::new(); k];
    for &w in pool {
        for (pixel, &class) in s.pool[w].truth.iter().enumerate() {
            by_class[usize::from(class)].push(Point {
                window: w,
                pixel,
                class,
            });
        }
    }
    for (c, v) in by_class.iter_mut().enumerate() {
        Rng::new(seed.wrapping_mul(1_000_003) ^ ((c as u64 + 1) * 0x9E37_79B9)).shuffle(v);
    }
    by_class
}

/// The suggestion logic's view of the pool windows: one token per patch (the pixel at its centre) with
/// its place, and features (embedding, then token means of the pixel features), as `suggest` builds them.
struct Tokens {
    tokens: Vec<Token>,
    features: Vec<f32>,
    d: usize,
}

fn tokens_of(s: &Setup, pool: &[usize]) -> Result<Tokens> {
    let (mut tokens, mut features, mut d) = (Vec::new(), Vec::new(), 0);
    for &wi in pool {
        let w = &s.pool[wi];
        let (t, f, dd) = window_tokens(
            wi,
            &w.features,
            &w.pixels,
            SIDE,
            (w.epsg, w.geotransform),
            None,
        )?;
        tokens.extend(t);
        features.extend(f);
        d = dd;
    }
    Ok(Tokens {
        tokens,
        features,
        d,
    })
}

/// The suggested points in the order the simulated user labels them, up to `total`.
fn suggested_points(
    s: &Setup,
    pool: &[usize],
    total: usize,
    (cold, batch): (usize, usize),
    min_ground: f64,
) -> Result<Vec<Point>> {
    let mut t = tokens_of(s, pool)?;
    let mut points: Vec<Point> = Vec::new();
    let mut rounds = 0usize;
    while points.len() < total {
        let classes: std::collections::BTreeSet<u8> = points.iter().map(|p| p.class).collect();
        let scores = if classes.len() >= 2 {
            let train = training_set(s, &points);
            let head = ridge(s, LinearInputs::All, &train, &(Vec::new(), Vec::new()))?;
            Some((probe_scores(&head, &t.features, t.d), head.k))
        } else {
            None
        };
        let want = if points.is_empty() { cold } else { batch };
        let picks = choose(
            &t.tokens,
            &t.features,
            t.d,
            scores.as_ref().map(|(v, k)| (v.as_slice(), *k)),
            want.min(total - points.len()),
            min_ground,
        );
        if picks.is_empty() {
            println!(
                "  suggestions ran out at {} points: nothing left to suggest",
                points.len()
            );
            break;
        }
        for p in picks {
            let tok = &mut t.tokens[p.token];
            let pixel = tok.pixel.0 as usize * SIDE + tok.pixel.1 as usize;
            let class = s.pool[tok.window].truth[pixel];
            tok.label = Some(usize::from(class));
            points.push(Point {
                window: tok.window,
                pixel,
                class,
            });
        }
        rounds += 1;
    }
    println!(
        "  {} suggestion rounds over {} tokens of {} windows ({} features each)",
        rounds,
        t.tokens.len(),
        pool.len(),
        t.d
    );
    Ok(points)
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    } else {
        0.0
    };
    (mean, var.sqrt())
}

#[tokio::main]
async fn main() -> Result<()> {
    let started = Instant::now();
    let load_start = loadavg();
    let scene: String = env("SCENE", "classic".to_owned());
    let scene_seed: u64 = env("SCENE_SEED", 42);
    let patch: usize = env("PATCH", 4);
    let seeds: Vec<u64> = env_list("SEEDS", &[1, 2, 3])
        .into_iter()
        .map(|s| s as u64)
        .collect();
    let mut budgets = env_list("BUDGETS", &[10, 20, 40, 80]);
    budgets.sort_unstable();
    budgets.dedup();
    let tune = Tune {
        epochs: env("EPOCHS", 2),
        batch: env("TUNE_BATCH", 4),
    };
    let cold: usize = env("COLD_START", 10);
    let batch: usize = env("SUGGEST_BATCH", 10);
    let pool_size: usize = env("POOL_WINDOWS", 40);

    let s = setup(&scene, scene_seed, patch).await?;
    let k = s.classes.len();
    let min_ground = MIN_TOKENS_APART * patch as f64 * 10.0;
    let pool_size = pool_size.clamp(1, s.pool.len());
    let test_counts = s
        .test
        .iter()
        .flat_map(|w| &w.truth)
        .fold(vec![0u64; k], |mut c, &t| {
            c[usize::from(t)] += 1;
            c
        });
    let test_pixels: u64 = test_counts.iter().sum();
    let majority =
        test_counts.iter().copied().max().unwrap_or(0) as f64 / test_pixels.max(1) as f64;

    println!("== label efficiency: random vs suggested point labels");
    println!("load at start (/proc/loadavg): {load_start}");
    println!(
        "scene {scene} (seed {scene_seed}), classes {}; {} pool windows (each seed labels within {pool_size} \
         of them), {} test windows ({test_pixels} px; class shares {}; majority class {majority:.3})",
        s.classes.join(", "),
        s.pool.len(),
        s.test.len(),
        test_counts
            .iter()
            .map(|&c| format!("{:.2}", c as f64 / test_pixels.max(1) as f64))
            .collect::<Vec<_>>()
            .join("/")
    );
    println!("encoder: {}", s.encoder_note);
    println!(
        "patch {patch}, embedding {} + pixel features {} (bands × months × (1 + radii {:?}))",
        s.cfg.encoder.embedding_size, s.cfg.pixel_channels, s.cfg.pixel_context
    );
    println!(
        "budgets per class {budgets:?} (suggested: {} × that in total); seeds {seeds:?}",
        k
    );
    println!(
        "suggested: cold start {cold} points (k-center), then rounds of {batch}; suggestions ≥ {min_ground} m apart"
    );
    println!(
        "models: token probe = ridge of the frozen tokens (the frozen-embedding linear probe); ridge T+P = ridge of \
         tokens + pixels (LinearInputs::All); fine-tuned = hybrid head started from ridge T+P, {} epochs with the \
         encoder frozen, lr {}, {} windows a step, augmented; each fitted on the labelled windows less a seeded \
         {:.0} % of them, which choose the ridge penalty, the start's temperature and the epoch kept",
        tune.epochs,
        FitOptions::default().lr,
        tune.batch,
        VAL_SHARE * 100.0
    );
    println!(
        "threads: RAYON_NUM_THREADS={}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "(unset: all cores)".into())
    );
    println!();

    let max_budget = budgets.last().copied().unwrap_or(0);
    // results[strategy][budget index][model] = scores over seeds.
    let mut results: Vec<Vec<[Vec<Score>; 3]>> = (0..STRATEGIES.len())
        .map(|_| (0..budgets.len()).map(|_| Default::default()).collect())
        .collect();
    let mut suggested_classes: Vec<Vec<Vec<usize>>> = vec![Vec::new(); budgets.len()];
    for &seed in &seeds {
        let mut order: Vec<usize> = (0..s.pool.len()).collect();
        Rng::new(seed ^ 0x0B0_0C5).shuffle(&mut order);
        order.truncate(pool_size);
        order.sort_unstable();

        let t0 = Instant::now();
        let random = random_orders(&s, &order, seed);
        let suggested = suggested_points(&s, &order, max_budget * k, (cold, batch), min_ground)?;
        println!(
            "seed {seed}: points chosen in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        for (bi, &b) in budgets.iter().enumerate() {
            let rand_points: Vec<Point> = random
                .iter()
                .flat_map(|v| v.iter().take(b).copied())
                .collect();
            let sugg_points: Vec<Point> = suggested.iter().take(b * k).copied().collect();
            let mut per_class = vec![0usize; k];
            sugg_points
                .iter()
                .for_each(|p| per_class[usize::from(p.class)] += 1);
            suggested_classes[bi].push(per_class.clone());
            for (si, points) in [rand_points, sugg_points].iter().enumerate() {
                let t1 = Instant::now();
                let scores = evaluate(&s, points, tune, seed)?;
                let windows = training_set(&s, points).0.len();
                println!(
                    "seed {seed} {:<9} {b:>3}/class ({:>3} points in {windows:>2} windows{}): {} ({:.1} s)",
                    STRATEGIES[si],
                    points.len(),
                    if si == 1 {
                        format!(", per class {per_class:?}")
                    } else {
                        String::new()
                    },
                    MODELS
                        .iter()
                        .zip(&scores)
                        .map(|(m, sc)| format!("{m} {:.3}/{:.3}", sc.accuracy, sc.macro_f1))
                        .collect::<Vec<_>>()
                        .join(", "),
                    t1.elapsed().as_secs_f64()
                );
                for (mi, sc) in scores.into_iter().enumerate() {
                    results[si][bi][mi].push(sc);
                }
            }
        }
    }

    println!();
    for (title, pick) in [
        ("test pixel accuracy", (|x: &Score| x.accuracy) as Metric),
        ("test macro-F1", |x: &Score| x.macro_f1),
    ] {
        println!(
            "{title} (mean ± sd over {} seeds; {} test windows, {test_pixels} px; majority class {majority:.3})",
            seeds.len(),
            s.test.len()
        );
        let mut head = format!("| {:>10} |", "per class");
        let mut rule = "|---:|".to_owned();
        for st in STRATEGIES {
            for m in MODELS {
                head.push_str(&format!(" {:>15} |", format!("{st}: {m}")));
                rule.push_str("---:|");
            }
        }
        println!("{head}");
        println!("{rule}");
        for (bi, &b) in budgets.iter().enumerate() {
            let mut line = format!("| {:>10} |", format!("{b} ({})", b * k));
            for per_strategy in &results {
                for scores in &per_strategy[bi] {
                    let v: Vec<f64> = scores.iter().map(pick).collect();
                    let (m, sd) = mean_sd(&v);
                    line.push_str(&format!(" {:>15} |", format!("{m:.3} ± {sd:.3}")));
                }
            }
            println!("{line}");
        }
        println!();
    }
    println!(
        "suggested labels per class (mean over seeds; the simulated user labels whatever is suggested):"
    );
    for (bi, &b) in budgets.iter().enumerate() {
        let n = suggested_classes[bi].len().max(1) as f64;
        let means: Vec<String> = (0..k)
            .map(|c| {
                let sum: usize = suggested_classes[bi].iter().map(|v| v[c]).sum();
                format!("{} {:.1}", s.classes[c], sum as f64 / n)
            })
            .collect();
        println!("  {b:>3}/class ({:>3} total): {}", b * k, means.join(", "));
    }
    println!();

    // Per model and metric: the smallest budget at which each strategy reaches random labels at the
    // largest budget (random's own is the control: where its curve is flat, reaching it is easy). The
    // target is judged on accuracy.
    let mean_of = |si: usize, bi: usize, mi: usize, metric: Metric| {
        mean_sd(&results[si][bi][mi].iter().map(metric).collect::<Vec<_>>()).0
    };
    let last = budgets.len() - 1;
    let metrics: [(&str, Metric); 2] = [
        ("accuracy", |x: &Score| x.accuracy),
        ("macro-F1", |x: &Score| x.macro_f1),
    ];
    println!(
        "smallest budget per class whose mean reaches random labels at {max_budget}/class (target: suggested at \
         most {} per class, judged on accuracy):",
        max_budget / 2
    );
    for (mi, m) in MODELS.iter().enumerate() {
        for (name, metric) in metrics {
            let reference = mean_of(0, last, mi, metric);
            let reached = |si: usize| {
                (0..budgets.len())
                    .find(|&bi| mean_of(si, bi, mi, metric) >= reference)
                    .map_or_else(
                        || format!("not up to {max_budget}"),
                        |bi| format!("{} ({:.3})", budgets[bi], mean_of(si, bi, mi, metric)),
                    )
            };
            let suggested = (0..budgets.len()).find(|&bi| mean_of(1, bi, mi, metric) >= reference);
            let verdict = if name == "accuracy" {
                if suggested.is_some_and(|bi| 2 * budgets[bi] <= max_budget) {
                    ": target MET"
                } else {
                    ": target NOT met"
                }
            } else {
                ""
            };
            println!(
                "  {m:<12} {name:<9} random at {max_budget}: {reference:.3}; first reached by suggested: {}; \
                 by random: {}{verdict}",
                reached(1),
                reached(0)
            );
        }
    }
    println!();
    println!("load at end (/proc/loadavg): {}", loadavg());
    println!("wall time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
