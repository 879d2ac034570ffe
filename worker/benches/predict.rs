//! The prediction path of one partition against the bare encoder, on the CPU (or CUDA with
//! `--features cuda` builds of olmoearth): OlmoEarth Nano (test fixture weights), Sentinel-2, 64×64
//! windows, T = 4, patch 4, a 3 × 3 block of windows (a partition of block 3 inside a larger area)
//! with its one-window halo (25 window files).
//!
//! Prints three timings:
//! - `predict`: read the window files, decode, assemble the mosaic, normalise, encoder + head on the
//!   lattice tiles the partition owns (overlap 6 px; each tile of the area runs in exactly one
//!   partition), blend, encode and write the partition file;
//! - `encoder, same tiles`: the encoder's forward alone on exactly the tiles `predict` runs (same batch
//!   sizes), inputs prepared outside the timing — the overhead of everything else is predict / this;
//! - `encoder, windows only`: the encoder's forward on the 9 core windows without overlap — the price
//!   of overlapping tiles is predict / this;
//! - the encoder time of the tiles against the windows', now and with the layout before tiles were
//!   shared between partitions (every tile touching the core, 16 px overlap), both run here.
//!
//! Run: `cargo bench -p groundwork-worker --bench predict` (`-- 3` for three repetitions).

#![expect(clippy::unwrap_used, reason = "benchmark")]

use candle_core::{DType, Device, Tensor};
use groundwork_imagery::stitch::{Cell, Rect, TileLayout};
use groundwork_worker::steps::predict::{
    EncoderSegmentation, Lattice, WindowModel, WindowTensors, encode_partition, predict_partition,
};
use olmoearth::{EncoderInput, Modality, ModalityInput};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

const N: usize = 64;
const T: usize = 4;
const OVERLAP: usize = groundwork_worker::steps::predict::DEFAULT_OVERLAP;
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
    // A 3 × 3 core with its halo: columns 2..7, rows 2..7, core columns/rows 3..6 (partition (1, 1)
    // of block 3), inside an area of columns and rows 0..9.
    let mut files = Vec::new();
    for column in 2..7i64 {
        for row in 2..7i64 {
            let path = dir.path().join(format!("w_{column}_{row}.safetensors"));
            std::fs::write(&path, window_file((column * 5 + row) as usize)).unwrap();
            files.push((Cell { column, row }, path));
        }
    }
    let core: Vec<Cell> = (3..6)
        .flat_map(|column| (3..6).map(move |row| Cell { column, row }))
        .collect();
    let layout = TileLayout::new(N, OVERLAP).unwrap();
    let area: Vec<Cell> = (0..9)
        .flat_map(|column| (0..9).map(move |row| Cell { column, row }))
        .collect();
    let lattice = Lattice {
        area: Rect::around(&area, N, 0).unwrap(),
        block: 3,
    };
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
            lattice,
            layout,
            BATCH,
            &device,
            &CancellationToken::new(),
        )
        .unwrap();
        let bytes = encode_partition(&pred, 32633, 10.0).unwrap();
        std::fs::write(dir.path().join("partition.safetensors"), bytes).unwrap();
        (start.elapsed().as_secs_f64(), pred.tiles)
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
    // Warm-up, and the tiles this partition owns.
    let (_, tiles) = predict_once();
    println!(
        "device {device:?}; {} windows (core {}), {tiles} tiles of {N}² with overlap {OVERLAP}, T = {T}, patch {PATCH}, batch {BATCH}",
        files.len(),
        core.len()
    );
    let _ = model.num_outputs();
    // The layout before tiles were shared between partitions: every tile touching the core, 16 px
    // of overlap.
    let before = TileLayout::new(N, 16)
        .unwrap()
        .tiles_over(Rect::around(&core, N, 0).unwrap())
        .len();
    let mut p = f64::INFINITY;
    let mut e_tiles = f64::INFINITY;
    let mut e_windows = f64::INFINITY;
    let mut e_before = f64::INFINITY;
    for _ in 0..reps {
        p = p.min(predict_once().0);
        e_tiles = e_tiles.min(encoder_on(tiles));
        e_windows = e_windows.min(encoder_on(core.len()));
        e_before = e_before.min(encoder_on(before));
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
    println!(
        "encoder time of the tiles / of the windows: now {tiles} tiles, {:.2}×; before (every tile touching the core, overlap 16) {before} tiles, {:.2}×",
        e_tiles / e_windows,
        e_before / e_windows
    );
}
