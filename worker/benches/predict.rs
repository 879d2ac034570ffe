//! The prediction path of one partition against the bare encoder, on the CPU (or CUDA with
//! `--features cuda` builds of olmoearth): OlmoEarth Nano (test fixture weights), Sentinel-2, 64×64
//! windows, T = 4, patch 4, a 3 × 3 block of windows with its one-window halo (25 window files).
//!
//! Prints three timings:
//! - `predict`: read the window files, decode, assemble the mosaic, normalise, encoder + head on the
//!   overlapping tiles (overlap 16 px), blend, encode and write the partition file;
//! - `encoder, same tiles`: the encoder's forward alone on exactly the tiles `predict` runs (same batch
//!   sizes), inputs prepared outside the timing — the overhead of everything else is predict / this;
//! - `encoder, windows only`: the encoder's forward on the 9 core windows without overlap — the price
//!   of overlapping tiles is predict / this.
//!
//! Run: `cargo bench -p groundwork-worker --bench predict` (`-- 3` for three repetitions).

#![expect(clippy::unwrap_used, reason = "benchmark")]

use candle_core::{DType, Device, Tensor};
use groundwork_imagery::stitch::{Cell, Rect, TileLayout};
use groundwork_worker::steps::predict::{
    EncoderSegmentation, WindowModel, WindowTensors, encode_partition, predict_partition,
};
use olmoearth::{EncoderInput, Modality, ModalityInput};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

const N: usize = 64;
const T: usize = 4;
const OVERLAP: usize = 16;
const BATCH: usize = 8;
const PATCH: usize = 4;

fn window_file(seed: usize) -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let m = Modality::Sentinel2L2a;
    let (c, s) = (m.num_bands(), m.num_band_sets());
    let data: Vec<u8> = (0..N * N * T * c)
        .flat_map(|i| (300.0 + ((i * 31 + seed * 7) % 2000) as f32).to_le_bytes())
        .collect();
    let mask = vec![0u8; N * N * T * s];
    let ts: Vec<u8> = (0..T as i32)
        .flat_map(|t| [1, 3 + t, 2024])
        .flat_map(i32::to_le_bytes)
        .collect();
    let views = vec![
        (
            "sentinel2_l2a".to_string(),
            TensorView::new(Dtype::F32, vec![N, N, T, c], &data).unwrap(),
        ),
        (
            "sentinel2_l2a_mask".to_string(),
            TensorView::new(Dtype::U8, vec![N, N, T, s], &mask).unwrap(),
        ),
        (
            "timestamps".to_string(),
            TensorView::new(Dtype::I32, vec![T, 3], &ts).unwrap(),
        ),
    ];
    safetensors::serialize(views, None).unwrap()
}

fn input(b: usize, device: &Device) -> EncoderInput {
    let m = Modality::Sentinel2L2a;
    let (c, s) = (m.num_bands(), m.num_band_sets());
    let data = Tensor::rand(0f32, 1f32, (b, N, N, T, c), device).unwrap();
    let mask = Tensor::zeros((b, N, N, T, s), DType::U8, device).unwrap();
    let months = Tensor::zeros((b, T), DType::I64, device).unwrap();
    let mut modalities = BTreeMap::new();
    modalities.insert(
        m,
        ModalityInput {
            data,
            mask: Some(mask),
        },
    );
    EncoderInput { modalities, months }
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let device = olmoearth::device::parse_device("auto").unwrap();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../olmoearth/tests/fixtures/olmoearth-nano");
    let model = EncoderSegmentation::from_checkpoint(&fixture, 4, PATCH, false, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A 3 × 3 core with its halo: columns 0..5, rows 0..5, core columns/rows 1..4.
    let mut files = Vec::new();
    for column in 0..5i64 {
        for row in 0..5i64 {
            let path = dir.path().join(format!("w_{column}_{row}.safetensors"));
            std::fs::write(&path, window_file((column * 5 + row) as usize)).unwrap();
            files.push((Cell { column, row }, path));
        }
    }
    let core: Vec<Cell> = (1..4)
        .flat_map(|column| (1..4).map(move |row| Cell { column, row }))
        .collect();
    let layout = TileLayout::new(N, OVERLAP).unwrap();
    let core_rect = Rect::around(&core, N, 0).unwrap();
    let tiles = layout.tiles_over(core_rect).len();
    println!(
        "device {device:?}; {} windows (core {}), {tiles} tiles of {N}² with overlap {OVERLAP}, T = {T}, patch {PATCH}, batch {BATCH}",
        files.len(),
        core.len()
    );

    let predict_once = || {
        let start = Instant::now();
        let windows: Vec<WindowTensors> = files
            .iter()
            .map(|(cell, path)| {
                let bytes = std::fs::read(path).unwrap();
                WindowTensors::decode(*cell, N, &[(Modality::Sentinel2L2a, bytes)]).unwrap()
            })
            .collect();
        let pred = predict_partition(
            &model,
            &windows,
            &core,
            layout,
            BATCH,
            &device,
            &CancellationToken::new(),
        )
        .unwrap();
        let bytes = encode_partition(&pred, 32633, 10.0).unwrap();
        std::fs::write(dir.path().join("partition.safetensors"), bytes).unwrap();
        assert_eq!(pred.tiles, tiles);
        start.elapsed().as_secs_f64()
    };
    let encoder_on = |count: usize| {
        let batches: Vec<EncoderInput> = (0..count)
            .step_by(BATCH)
            .map(|i| input(BATCH.min(count - i), &device))
            .collect();
        let start = Instant::now();
        for b in &batches {
            let out = model.encoder().forward(b, PATCH).unwrap();
            let _ = olmoearth::heads::feature_map(&out)
                .unwrap()
                .to_device(&Device::Cpu)
                .unwrap();
        }
        start.elapsed().as_secs_f64()
    };
    // Warm-up.
    predict_once();
    let _ = model.num_outputs();
    let mut p = f64::INFINITY;
    let mut e_tiles = f64::INFINITY;
    let mut e_windows = f64::INFINITY;
    for _ in 0..reps {
        p = p.min(predict_once());
        e_tiles = e_tiles.min(encoder_on(tiles));
        e_windows = e_windows.min(encoder_on(core.len()));
    }
    println!(
        "predict (load, assemble, {tiles} tiles, blend, write): {:8.1} ms",
        p * 1e3
    );
    println!(
        "encoder, same {tiles} tiles:                            {:8.1} ms   predict / this = {:.2}×",
        e_tiles * 1e3,
        p / e_tiles
    );
    println!(
        "encoder, {} windows only, no overlap:                  {:8.1} ms   predict / this = {:.2}×",
        core.len(),
        e_windows * 1e3,
        p / e_windows
    );
}
