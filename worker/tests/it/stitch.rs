//! Stitching: partitions of windows run through a model on overlapping tiles and blended must give
//! one seamless map — exactly constant for a constant model, and for a smooth model no jump at window,
//! tile or partition borders larger than the signal's own step.
#![expect(clippy::unwrap_used, reason = "tests")]

use candle_core::{IndexOp, Tensor};
use groundwork_imagery::stitch::{Cell, Rect, TileLayout, partition_cells};
use groundwork_worker::steps::combine::{Combined, mosaic_on_disk};
use groundwork_worker::steps::predict::{
    ConstantModel, Lattice, WindowModel, WindowTensors, predict_partition,
};
use olmoearth::{EncoderInput, Modality};
use tokio_util::sync::CancellationToken;

const N: usize = 64;
const T: usize = 2;

/// DN of band 0 at global pixel (x, y): a plane rising east and south.
fn plane(x: i64, y: i64) -> f32 {
    1000.0 + 10.0 * x as f32 + 7.0 * y as f32
}

/// Windows over columns 10..15 and rows 20..23 (15 windows, several partitions of 2×2).
fn windows() -> Vec<WindowTensors> {
    let m = Modality::Sentinel2L2a;
    let (c, s) = (m.num_bands(), m.num_band_sets());
    let mut out = Vec::new();
    for column in 10..15 {
        for row in 20..23 {
            let cell = Cell { column, row };
            let (x0, y0) = cell.origin(N);
            let mut data = vec![0f32; N * N * T * c];
            for j in 0..N {
                for i in 0..N {
                    for t in 0..T {
                        for b in 0..c {
                            let v = if b == 0 {
                                plane(x0 + i as i64, y0 + j as i64)
                            } else {
                                1500.0
                            };
                            data[((j * N + i) * T + t) * c + b] = v;
                        }
                    }
                }
            }
            let mut modalities = std::collections::BTreeMap::new();
            modalities.insert(
                m.name().to_string(),
                (data, vec![0u8; N * N * T * s], (T, c, s)),
            );
            out.push(WindowTensors {
                cell,
                modalities,
                months: vec![4, 5],
            });
        }
    }
    out
}

/// Runs every 2×2 partition and adds their sums together as `combine` does.
fn stitched(model: &dyn WindowModel, overlap: usize) -> Combined {
    stitched_in(model, overlap, 2).0
}

/// Runs every `block × block` partition and adds their sums together as `combine` does; also the
/// number of tiles the model ran on.
fn stitched_in(model: &dyn WindowModel, overlap: usize, block: usize) -> (Combined, usize) {
    let ws = windows();
    let cells: Vec<(u32, Cell)> = ws.iter().map(|w| (32633, w.cell)).collect();
    let parts = partition_cells(&cells, block);
    let all: Vec<Cell> = cells.iter().map(|c| c.1).collect();
    let lattice = Lattice {
        area: Rect::around(&all, N, 0).unwrap(),
        block,
    };
    let layout = TileLayout::new(N, overlap).unwrap();
    let mut preds = Vec::new();
    let mut tiles = 0;
    for p in &parts {
        // Each partition sees its windows and a one-window halo, as the step loads them.
        let near: Vec<WindowTensors> = ws
            .iter()
            .filter(|w| {
                p.cells.iter().any(|c| {
                    (c.column - w.cell.column).abs() <= 1 && (c.row - w.cell.row).abs() <= 1
                })
            })
            .cloned()
            .collect();
        let pred = predict_partition(
            model,
            &near,
            &p.cells,
            lattice,
            layout,
            4,
            &candle_core::Device::Cpu,
            &CancellationToken::new(),
        )
        .unwrap();
        tiles += pred.tiles;
        preds.push((pred.rect, pred.k, pred.sums));
    }
    let placed: Vec<(u32, _)> = preds.iter().map(|(r, _, _)| (32633, *r)).collect();
    let load = |i: usize| Ok(preds[i].clone());
    let dir = tempfile::tempdir().unwrap();
    let k = preds[0].1;
    let m = mosaic_on_disk(dir.path(), &placed, k, 32633, 10.0, &load).unwrap();
    (
        Combined {
            rect: m.rect,
            k,
            values: m.rows(0, m.rect.height()).unwrap(),
        },
        tiles,
    )
}

#[test]
fn each_tile_runs_once_and_the_map_does_not_depend_on_the_partitions() {
    let model = GradientModel { tile_bias: 0.05 };
    let (one, tiles_one) = stitched_in(&model, 6, 8);
    for block in [1, 2, 3] {
        let (many, tiles) = stitched_in(&model, 6, block);
        assert_eq!(tiles, tiles_one, "block {block}: every tile once");
        assert_eq!(many.rect, one.rect);
        let worst = many
            .values
            .iter()
            .zip(&one.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "block {block}: differs by up to {worst}");
    }
    // 5 × 3 windows of 64 px through 64-px tiles every 58 px: 6 × 4 tiles, 1.6 × the area here
    // (small areas pay for their edges; a large one tends to (64 / 58)² = 1.22).
    assert_eq!(tiles_one, 6 * 4);
}

#[test]
fn a_constant_model_gives_an_exactly_constant_seamless_mosaic() {
    let model = ConstantModel {
        values: vec![0.2, 0.5, 0.3],
        regression: false,
    };
    let c = stitched(&model, 16);
    assert_eq!((c.rect.width(), c.rect.height()), (5 * N, 3 * N));
    let plane = c.rect.width() * c.rect.height();
    for (k, want) in [0.2f32, 0.5, 0.3].iter().enumerate() {
        let band = &c.values[k * plane..(k + 1) * plane];
        let worst = band.iter().map(|v| (v - want).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "class {k}: off by up to {worst}");
    }
}

/// Outputs the first normalised band at t = 0, plus a bias that grows across each tile (the kind of
/// edge effect real models have), so tiles disagree where they overlap.
struct GradientModel {
    tile_bias: f32,
}

impl WindowModel for GradientModel {
    fn num_outputs(&self) -> usize {
        1
    }
    fn is_regression(&self) -> bool {
        true
    }
    fn predict(&self, input: &EncoderInput) -> olmoearth::Result<Tensor> {
        let x = &input.modalities[&Modality::Sentinel2L2a].data; // (B, H, W, T, C)
        let (b, h, w, _, _) = x.dims5()?;
        let v = x.i((.., .., .., 0, 0))?.contiguous()?; // (B, H, W)
        let ramp: Vec<f32> = (0..h * w)
            .map(|p| self.tile_bias * (p % w) as f32 / w as f32)
            .collect();
        let ramp = Tensor::from_vec(ramp, (1, h, w), x.device())?;
        Ok(v.broadcast_add(&ramp)?.reshape((b, 1, h, w))?)
    }
}

/// Largest difference between horizontally and vertically adjacent pixels.
fn max_step(c: &Combined) -> (f32, f32) {
    let (w, h) = (c.rect.width(), c.rect.height());
    let v = &c.values;
    let mut dx = 0f32;
    let mut dy = 0f32;
    for y in 0..h {
        for x in 0..w {
            if x + 1 < w {
                dx = dx.max((v[y * w + x + 1] - v[y * w + x]).abs());
            }
            if y + 1 < h {
                dy = dy.max((v[(y + 1) * w + x] - v[y * w + x]).abs());
            }
        }
    }
    (dx, dy)
}

#[test]
fn a_gradient_is_reproduced_across_window_and_partition_borders() {
    let c = stitched(&GradientModel { tile_bias: 0.0 }, 16);
    // The normalised step of band 0: 10 DN east, 7 DN south, over 4 standard deviations.
    let std = olmoearth::normalize::band_stats(Modality::Sentinel2L2a).unwrap()[0].std as f32;
    let (sx, sy) = (10.0 / (4.0 * std), 7.0 / (4.0 * std));
    let (dx, dy) = max_step(&c);
    assert!((dx - sx).abs() < 1e-5, "east step {dx}, expected {sx}");
    assert!((dy - sy).abs() < 1e-5, "south step {dy}, expected {sy}");
    // And the values are the plane itself, pixel for pixel.
    let w = c.rect.width();
    let mean = olmoearth::normalize::band_stats(Modality::Sentinel2L2a).unwrap()[0].mean as f32;
    for (p, v) in c.values.iter().enumerate() {
        let (x, y) = (c.rect.x0 + (p % w) as i64, c.rect.y0 + (p / w) as i64);
        let want = (plane(x, y) - (mean - 2.0 * std)) / (4.0 * std);
        assert!((v - want).abs() < 1e-4, "pixel ({x}, {y}): {v} vs {want}");
    }
}

#[test]
fn overlap_blending_removes_the_seams_that_tile_edge_effects_cause() {
    let model = GradientModel { tile_bias: 0.05 };
    let std = olmoearth::normalize::band_stats(Modality::Sentinel2L2a).unwrap()[0].std as f32;
    let step = 10.0 / (4.0 * std);
    // Without overlap every tile border shows the bias jump (≈ 0.05).
    let (hard, _) = max_step(&stitched(&model, 0));
    assert!(hard > 0.04, "expected a seam without blending, got {hard}");
    // With a 16-pixel linear blend the bias changes by at most 31/17 × 0.05/64 per pixel, well within
    // two gradient steps: no visible seam at any tile or partition border.
    let (soft, _) = max_step(&stitched(&model, 16));
    let bound = step + 31.0 / 17.0 * 0.05 / 64.0 + 1e-5;
    assert!(soft <= bound, "blended step {soft} exceeds {bound}");
    assert!(soft < hard / 10.0);
    // The default 6-pixel overlap blends over 7 pixels: neighbouring tiles, 58 pixels apart, disagree
    // by 0.05 × 58/64, spread over the ramp.
    let (six, _) = max_step(&stitched(&model, 6));
    let bound = step + 0.05 * 58.0 / 64.0 / 7.0 + 1e-5;
    assert!(six <= bound, "blended step {six} exceeds {bound}");
    assert!(six < hard / 5.0);
}

/// Predicts 1 everywhere in a tile that holds a missing (mask 3) pixel, else 0: a stand-in for a model
/// that predicts poorly next to a border of missing tokens.
struct MissingSensitive;

impl WindowModel for MissingSensitive {
    fn num_outputs(&self) -> usize {
        1
    }

    fn is_regression(&self) -> bool {
        true
    }

    fn predict(&self, input: &EncoderInput) -> olmoearth::Result<Tensor> {
        let m = &input.modalities[&Modality::Sentinel2L2a];
        let (b, h, w, _, _) = m.data.dims5()?;
        let mut out = Vec::with_capacity(b * h * w);
        for i in 0..b {
            let mask = m.mask.as_ref().map(|mk| mk.i(i)).transpose()?;
            let missing = match mask {
                Some(mk) => mk.flatten_all()?.to_vec1::<u8>()?.contains(&3),
                None => false,
            };
            out.extend(std::iter::repeat_n(f32::from(u8::from(missing)), h * w));
        }
        Ok(Tensor::from_vec(
            out,
            (b, 1, h, w),
            &candle_core::Device::Cpu,
        )?)
    }
}

#[test]
fn tiles_at_the_edge_of_the_area_stay_inside_the_data() {
    // The area's edge is not on the tile lattice (stride 48 against 64-px windows), so lattice tiles
    // reach past it; every tile the model sees must lie within the windows.
    let c = stitched(&MissingSensitive, 16);
    assert_eq!((c.rect.width(), c.rect.height()), (5 * N, 3 * N));
    let worst = c.values.iter().fold(0f32, |a, v| a.max(*v));
    assert_eq!(worst, 0.0, "a tile with missing pixels reached the model");
}
