//! The pure core of `predict`: windows pasted into a mosaic, tiles through a model, blended, and the
//! partition file format.

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use groundwork_imagery::stitch::{Blender, Cell, Mosaic, Rect, TileLayout};
use olmoearth::{EncoderInput, Modality, ModalityInput};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio_util::sync::CancellationToken;

use super::WindowModel;

/// [`predict_partition`] stopped because its cancellation token fired.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// One modality of a window: `(H, W, T, C)` data, `(H, W, T, S)` mask and `(T, C, S)`.
pub type ModalityPixels = (Vec<f32>, Vec<u8>, (usize, usize, usize));

/// One window's decoded tensors.
#[derive(Debug, Clone)]
pub struct WindowTensors {
    /// Its grid cell.
    pub cell: Cell,
    /// Per modality: `(H, W, T, C)` data, `(H, W, T, S)` mask, `(T, C, S)`.
    pub modalities: BTreeMap<String, ModalityPixels>,
    /// Month of each time step.
    pub months: Vec<i64>,
}

impl WindowTensors {
    /// Decodes the safetensors files of one window (one file per modality, or one with all).
    pub fn decode(cell: Cell, size: usize, files: &[(Modality, Vec<u8>)]) -> anyhow::Result<Self> {
        let mut modalities = BTreeMap::new();
        let mut months = Vec::new();
        for (m, bytes) in files {
            let name = m.name();
            let data = groundwork_imagery::output::read_f32(bytes, name)?;
            let mask = groundwork_imagery::output::read_u8(bytes, &format!("{name}_mask"))?;
            let ts = groundwork_imagery::output::read_i32(bytes, "timestamps")?;
            anyhow::ensure!(
                data.shape.len() == 4 && data.shape[0] == size && data.shape[1] == size,
                "{name} tensor of shape {:?} is not ({size}, {size}, T, C)",
                data.shape
            );
            anyhow::ensure!(
                mask.shape.len() == 4 && mask.shape[..3] == data.shape[..3],
                "{name} mask of shape {:?} does not match the data {:?}",
                mask.shape,
                data.shape
            );
            let t = data.shape[2];
            anyhow::ensure!(
                ts.shape == [t, 3],
                "timestamps of shape {:?} do not match {t} time steps",
                ts.shape
            );
            months = ts.data.chunks(3).map(|c| i64::from(c[1])).collect();
            modalities.insert(
                name.to_string(),
                (data.data, mask.data, (t, data.shape[3], mask.shape[3])),
            );
        }
        Ok(Self {
            cell,
            modalities,
            months,
        })
    }
}

/// A partition's stitched prediction.
#[derive(Debug, Clone)]
pub struct PartitionPrediction {
    /// Its core rectangle (global pixel coordinates).
    pub rect: Rect,
    /// Outputs per pixel.
    pub k: usize,
    /// `(K, H, W)`; NaN where no window holds data.
    pub values: Vec<f32>,
    /// 1 where a window holds data.
    pub valid: Vec<u8>,
    /// Model calls made.
    pub tiles: usize,
}

/// Pastes windows into a mosaic over `core` plus a one-window halo, runs `model` on overlapping tiles
/// and blends them; the pure core of the `predict` step.
pub fn predict_partition(
    model: &dyn WindowModel,
    windows: &[WindowTensors],
    core: &[Cell],
    layout: TileLayout,
    batch_size: usize,
    device: &Device,
    cancel: &CancellationToken,
) -> anyhow::Result<PartitionPrediction> {
    let n = layout.size;
    let core_rect =
        Rect::around(core, n, 0).context("a prediction partition needs at least one window")?;
    let outer = Rect::around(core, n, n as i64).context("empty partition")?;
    let mut mosaic = Mosaic::new(outer, olmoearth::encoder::MASK_MISSING as u8);
    for w in windows {
        for (name, (data, mask, shape)) in &w.modalities {
            mosaic.paste(name, w.cell.origin(n), n, *shape, data, mask, &w.months)?;
        }
    }
    let mut names: Vec<(Modality, String)> = Vec::new();
    for (name, band) in &mut mosaic.bands {
        let m: Modality = name.parse()?;
        olmoearth::normalize::fill_missing_bands(m, &mut band.data)?;
        names.push((m, name.clone()));
    }
    anyhow::ensure!(!names.is_empty(), "no window of the partition has tensors");
    let k = model.num_outputs();
    let mut blender = Blender::new(core_rect, k, layout);
    // Tiles that reach past the data (the edge of the area, where no window exists) move inside it,
    // so that the model never sees a border of missing tokens: it was trained on whole windows, and a
    // tile half outside the area predicts its valid half poorly. Every partition sees the same edge
    // (its halo holds the neighbouring windows), so shared tiles stay identical across partitions.
    let bounds = mosaic.valid_bounds();
    let clamp = |v: i64, lo: i64, hi: i64| {
        if hi - lo >= n as i64 {
            v.clamp(lo, hi - n as i64)
        } else {
            v
        }
    };
    let mut seen = BTreeSet::new();
    let tiles: Vec<(i64, i64)> = layout
        .tiles_over(core_rect)
        .into_iter()
        .map(|(x, y)| match bounds {
            Some(b) => (clamp(x, b.x0, b.x1), clamp(y, b.y0, b.y1)),
            None => (x, y),
        })
        .filter(|t| seen.insert(*t))
        .filter(|&(x, y)| {
            let tile = Rect {
                x0: x,
                y0: y,
                x1: x + n as i64,
                y1: y + n as i64,
            };
            let inner = Rect {
                x0: tile.x0.max(core_rect.x0),
                y0: tile.y0.max(core_rect.y0),
                x1: tile.x1.min(core_rect.x1),
                y1: tile.y1.min(core_rect.y1),
            };
            mosaic.any_valid(inner)
        })
        .collect();
    let t = mosaic.months.len();
    for batch in tiles.chunks(batch_size.max(1)) {
        if cancel.is_cancelled() {
            return Err(Cancelled.into());
        }
        let b = batch.len();
        let mut modalities = BTreeMap::new();
        for (m, name) in &names {
            let band = &mosaic.bands[name];
            let mut data = Vec::with_capacity(b * n * n * band.t * band.c);
            let mut mask = Vec::with_capacity(b * n * n * band.t * band.s);
            for &origin in batch {
                mosaic.chip_into(name, origin, n, &mut data, &mut mask)?;
            }
            let raw = Tensor::from_vec(data, (b, n, n, band.t, band.c), &Device::Cpu)?;
            let normalised = olmoearth::normalize::normalize(*m, &raw)?.to_device(device)?;
            let mask = Tensor::from_vec(mask, (b, n, n, band.t, band.s), &Device::Cpu)?
                .to_device(device)?;
            modalities.insert(
                *m,
                ModalityInput {
                    data: normalised,
                    mask: Some(mask),
                },
            );
        }
        let months: Vec<i64> = (0..b).flat_map(|_| mosaic.months.iter().copied()).collect();
        let input = EncoderInput {
            modalities,
            months: Tensor::from_vec(months, (b, t), device)?,
        };
        let pred = model.predict(&input)?;
        let dims = pred.dims().to_vec();
        anyhow::ensure!(
            dims == [b, k, n, n],
            "the model returned shape {dims:?}, expected ({b}, {k}, {n}, {n})"
        );
        let flat: Vec<f32> = pred
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        for (i, &origin) in batch.iter().enumerate() {
            blender.add(origin, &flat[i * k * n * n..(i + 1) * k * n * n])?;
        }
    }
    let mut values = blender.finish();
    let (w, h) = (core_rect.width(), core_rect.height());
    let plane = w * h;
    let mut valid = vec![0u8; plane];
    let ow = outer.width();
    for y in 0..h {
        for x in 0..w {
            let p = y * w + x;
            let q = (y + n) * ow + (x + n);
            valid[p] = mosaic.valid[q];
            if valid[p] == 0 {
                for c in 0..k {
                    values[c * plane + p] = f32::NAN;
                }
            }
        }
    }
    Ok(PartitionPrediction {
        rect: core_rect,
        k,
        values,
        valid,
        tiles: tiles.len(),
    })
}

/// Encodes a partition prediction: `values` f32 `(K, H, W)`, `valid` u8 `(H, W)`, metadata `rect`,
/// `epsg`, `resolution`.
pub fn encode_partition(
    p: &PartitionPrediction,
    epsg: u32,
    resolution: f64,
) -> anyhow::Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let (w, h) = (p.rect.width(), p.rect.height());
    let values: Vec<u8> = p.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "values".to_string(),
            TensorView::new(Dtype::F32, vec![p.k, h, w], &values)?,
        ),
        (
            "valid".to_string(),
            TensorView::new(Dtype::U8, vec![h, w], &p.valid)?,
        ),
    ];
    let mut meta = HashMap::new();
    meta.insert(
        "rect".to_string(),
        serde_json::to_string(&[p.rect.x0, p.rect.y0, p.rect.x1, p.rect.y1])?,
    );
    meta.insert("epsg".to_string(), epsg.to_string());
    meta.insert("resolution".to_string(), resolution.to_string());
    Ok(safetensors::serialize(views, Some(meta))?)
}

/// Decodes [`encode_partition`]'s bytes: `(rect, K, values, valid)`.
pub fn decode_partition(bytes: &[u8]) -> anyhow::Result<(Rect, usize, Vec<f32>, Vec<u8>)> {
    let meta = groundwork_imagery::output::read_metadata(bytes)?;
    let r: [i64; 4] =
        serde_json::from_str(meta.get("rect").context("no rect in a partition file")?)?;
    let rect = Rect {
        x0: r[0],
        y0: r[1],
        x1: r[2],
        y1: r[3],
    };
    let values = groundwork_imagery::output::read_f32(bytes, "values")?;
    let valid = groundwork_imagery::output::read_u8(bytes, "valid")?;
    let k = values.shape.first().copied().unwrap_or(0);
    anyhow::ensure!(
        values.shape == [k, rect.height(), rect.width()]
            && valid.data.len() == rect.width() * rect.height(),
        "a partition file's shapes do not match its rectangle"
    );
    Ok((rect, k, values.data, valid.data))
}
