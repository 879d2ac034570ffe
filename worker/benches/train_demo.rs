//! Training on the offline demo: 64 windows of 64×64 px, four months of Sentinel-2, four land-cover
//! classes, segmentation with a Nano encoder (the fixture checkpoint) at patch size 4. Prints, on the test
//! rows, the majority class and every candidate model of `train` (raw pixels, probes, tokens and pixels,
//! fine-tuned) with the one chosen on validation, and timings.
//!
//! `cargo bench -p groundwork-worker --bench train_demo` (options: `EPOCHS`, `FREEZE_EPOCHS`, `HEAD`).
#![expect(clippy::unwrap_used, clippy::print_stdout, reason = "benchmark")]

use candle_core::Device;
use groundwork_imagery::{AcquireRequest, GridOptions, Modality, Source};
use groundwork_worker::steps::candidates::fit_candidates;
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use olmoearth::finetune::{Example, FitOptions, FitSink, FitState, Prediction, Target};
use olmoearth::task::{TaskModelConfig, input_from_window, pixel_channels};
use std::time::Instant;

struct Print;

impl FitSink for Print {
    fn progress(&mut self, _: f32, _: &str) {}
    fn cancelled(&self) -> bool {
        false
    }
    fn epoch_done(&mut self, s: &FitState, _: &[u8], _: Option<&[u8]>) -> olmoearth::Result<()> {
        if let Some(r) = s.history.last() {
            println!(
                "epoch {:>2} {:<8} train loss {:.4}  val loss {:.4}  val pixel accuracy {:.4}  {:.1} s",
                r.epoch,
                r.phase,
                r.train_loss,
                r.val_loss.unwrap_or(f64::NAN),
                r.val_metric.unwrap_or(f64::NAN),
                r.seconds
            );
        }
        Ok(())
    }
}

fn accuracy(preds: &[Prediction], examples: &[Example]) -> f64 {
    let (mut right, mut total) = (0usize, 0usize);
    for (p, e) in preds.iter().zip(examples) {
        if let (Prediction::Map(p), Target::Mask(t)) = (p, &e.target) {
            right += p.iter().zip(t).filter(|(a, b)| a == b).count();
            total += t.len();
        }
    }
    right as f64 / total.max(1) as f64
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let opts = groundwork_imagery::DemoOptions::default();
    let catalog = groundwork_imagery::generate_demo_data(dir.path(), &opts).unwrap();
    let aoi: geojson::Feature =
        serde_json::from_slice(&std::fs::read(dir.path().join("aoi.geojson")).unwrap()).unwrap();
    let specs = groundwork_imagery::windows_for_aoi(
        aoi.geometry.as_ref().unwrap(),
        &GridOptions {
            window_size: 64,
            ..GridOptions::default()
        },
    )
    .unwrap();
    let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    let prefix = object_store::path::Path::from("demo");
    let mut req = AcquireRequest::new(
        Source::parse(catalog.to_str().unwrap()),
        vec![Modality::Sentinel2L2a],
        "2024-04-01".parse().unwrap(),
        "2024-07-31".parse().unwrap(),
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
    .await
    .unwrap();
    println!(
        "acquired {} of {} windows in {:.1} s",
        report.succeeded,
        report.total,
        t0.elapsed().as_secs_f64()
    );

    // Ground truth: the demo's land-cover map, cut on the same 64-px grid (ids 1–4 → classes 0–3).
    let truth = groundwork_imagery::demo::land_cover(opts.seed, opts.size);
    let dev = Device::Cpu;
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for w in &specs {
        let key = object_store::path::Path::from(format!(
            "demo/windows/{}/sentinel2_l2a.safetensors",
            w.id
        ));
        let bytes = store.get(&key).await.unwrap().bytes().await.unwrap();
        let input =
            input_from_window(&[(olmoearth::Modality::Sentinel2L2a, &bytes)], &dev).unwrap();
        let col = ((w.geotransform[0] - opts.origin.0) / 10.0).round() as usize;
        let row = ((opts.origin.1 - w.geotransform[3]) / 10.0).round() as usize;
        let mut mask = Vec::with_capacity(64 * 64);
        for y in 0..64 {
            for x in 0..64 {
                mask.push(truth[(row + y) * opts.size + col + x] - 1);
            }
        }
        let e = Example {
            id: w.id.clone(),
            input,
            target: Target::Mask(mask),
        };
        // Spatial split by window row: six rows train, one validation, one test.
        match row / 64 {
            0..=5 => train.push(e),
            6 => val.push(e),
            _ => test.push(e),
        }
    }
    let mut counts = [0usize; 4];
    for e in &train {
        if let Target::Mask(m) = &e.target {
            for &c in m {
                counts[usize::from(c)] += 1;
            }
        }
    }
    let majority = counts
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| **n)
        .unwrap()
        .0 as u8;
    let maj_preds: Vec<Prediction> = test
        .iter()
        .map(|_| Prediction::Map(vec![majority; 64 * 64]))
        .collect();
    println!(
        "windows: {} train, {} val, {} test; majority class on test: {:.4}",
        train.len(),
        val.len(),
        test.len(),
        accuracy(&maj_preds, &test)
    );

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../olmoearth/tests/fixtures/olmoearth-nano");
    let (enc_cfg, sd) = olmoearth::ModelFiles::resolve(&fixture)
        .unwrap()
        .load()
        .unwrap();
    let cfg = TaskModelConfig {
        format: 1,
        encoder: enc_cfg,
        model_size: "nano".into(),
        patch_size: env("PATCH", 4usize),
        task: olmoearth::task::Task::Segmentation,
        num_outputs: 4,
        head: env("HEAD", olmoearth::task::HeadKind::Hybrid),
        modalities: vec![olmoearth::Modality::Sentinel2L2a],
        window_size: 64,
        initialised_from: "fixture".into(),
        pixel_channels: pixel_channels(&train[0].input, &olmoearth::task::PIXEL_CONTEXT_RADII)
            .unwrap(),
        pixel_context: olmoearth::task::PIXEL_CONTEXT_RADII.to_vec(),
        context_observed_only: true,
    };
    let epochs = env("EPOCHS", FitOptions::default().epochs);
    let fit = FitOptions {
        epochs,
        freeze_epochs: env("FREEZE_EPOCHS", FitOptions::default().freeze_epochs).min(epochs),
        ..FitOptions::default()
    };
    let t0 = Instant::now();
    let fitted = fit_candidates(
        &cfg,
        &sd,
        &dev,
        fit,
        None,
        (&train, &val, &test),
        &mut Print,
    )
    .unwrap();
    println!(
        "candidates in {:.1} s (best fine-tuned epoch {:?}); chosen: {} ({})",
        t0.elapsed().as_secs_f64(),
        fitted.state.best_epoch,
        fitted.choice.chosen,
        fitted.choice.reason
    );
    for c in &fitted.candidates {
        let preds: Vec<Prediction> = test.iter().map(|e| c.test[&e.id].clone()).collect();
        println!(
            "{:<14} val macro-F1 {:.4}  test pixel accuracy {:.4}",
            c.name,
            c.val_score.unwrap_or(f64::NAN),
            accuracy(&preds, &test)
        );
    }
}
