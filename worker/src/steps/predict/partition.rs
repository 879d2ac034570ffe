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

/// Where a partition sits in its zone's tile lattice.
#[derive(Debug, Clone, Copy)]
pub struct Lattice {
    /// Pixel bounds of every window of the zone: tiles that reach past them move inside, the same way
    /// in every partition.
    pub area: Rect,
    /// Side of a partition in windows: a window's partition is its cell `div_euclid(block)`.
    pub block: usize,
}

impl Lattice {
    fn partition_of(&self, c: Cell) -> (i64, i64) {
        let b = i64::try_from(self.block).unwrap_or(1).max(1);
        (c.row.div_euclid(b), c.column.div_euclid(b))
    }
}

/// A partition's share of its zone's prediction: the tiles it owns, as weighted sums that add up
/// with the other partitions' in `combine`.
#[derive(Debug, Clone)]
pub struct PartitionPrediction {
    /// The rectangle its tiles cover (global pixel coordinates).
    pub rect: Rect,
    /// Outputs per pixel.
    pub k: usize,
    /// `(K + 1, H, W)`: per output, the sum of blend weight × prediction over the tiles, then the sum
    /// of the weights; both 0 where no window holds data.
    pub sums: Vec<f32>,
    /// Model calls made (tiles owned).
    pub tiles: usize,
}

/// Runs `model` on the tiles of the zone's lattice that this partition owns and returns their
/// weighted sums; the pure core of the `predict` step.
///
/// The lattice has one tile every `size − overlap` pixels; a tile that reaches past the zone's area
/// moves inside it. A tile belongs to the first partition (by block row, then column) among those
/// whose windows it overlaps, so every tile is computed once in the whole run, and `combine` adds the
/// partitions' sums and divides: the map is the same as one partition over the whole zone would make.
/// The windows are pasted into a mosaic over `core` plus a one-window halo, which holds every tile
/// the partition owns.
#[expect(clippy::too_many_arguments, reason = "the step's inputs, each needed")]
pub fn predict_partition(
    model: &dyn WindowModel,
    windows: &[WindowTensors],
    core: &[Cell],
    lattice: Lattice,
    layout: TileLayout,
    batch_size: usize,
    device: &Device,
    cancel: &CancellationToken,
) -> anyhow::Result<PartitionPrediction> {
    let n = layout.size;
    let ni = n as i64;
    let core_rect =
        Rect::around(core, n, 0).context("a prediction partition needs at least one window")?;
    let outer = Rect::around(core, n, ni).context("empty partition")?;
    let me = lattice.partition_of(core[0]);
    let mut mosaic = Mosaic::new(outer, olmoearth::encoder::MASK_MISSING as u8);
    let mut present = BTreeSet::new();
    for w in windows {
        present.insert((w.cell.column, w.cell.row));
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
    // Tiles that reach past the area move inside it, so that the model never sees a border of missing
    // tokens: it was trained on whole windows, and a tile half outside the area predicts its valid
    // half poorly. The area is the zone's, so every partition moves a tile the same way.
    let area = lattice.area;
    let clamp = |v: i64, lo: i64, hi: i64| {
        if hi - lo >= ni {
            v.clamp(lo, hi - ni)
        } else {
            v
        }
    };
    let mine = core_rect;
    let search = Rect {
        x0: mine.x0 - ni,
        y0: mine.y0 - ni,
        x1: mine.x1 + ni,
        y1: mine.y1 + ni,
    };
    // Grid columns and rows of the windows a tile at (x, y) overlaps (rows count northwards: a
    // window's top pixel row is −(row + 1) · size).
    let columns_of = |x: i64| (x.div_euclid(ni), (x + ni - 1).div_euclid(ni));
    let rows_of = |y: i64| (-(y + ni - 1).div_euclid(ni) - 1, -y.div_euclid(ni) - 1);
    let mut seen = BTreeSet::new();
    let tiles: Vec<(i64, i64)> = layout
        .tiles_over(search)
        .into_iter()
        .map(|(x, y)| (clamp(x, area.x0, area.x1), clamp(y, area.y0, area.y1)))
        .filter(|t| seen.insert(*t))
        .filter(|&(x, y)| {
            // The windows the tile overlaps that hold data; the first of their partitions owns it.
            let (c0, c1) = columns_of(x);
            let (r0, r1) = rows_of(y);
            let owner = (r0..=r1)
                .flat_map(|row| (c0..=c1).map(move |column| Cell { column, row }))
                .filter(|c| present.contains(&(c.column, c.row)))
                .map(|c| lattice.partition_of(c))
                .min();
            owner == Some(me)
        })
        .filter(|&(x, y)| {
            mosaic.any_valid(Rect {
                x0: x.max(outer.x0),
                y0: y.max(outer.y0),
                x1: (x + ni).min(outer.x1),
                y1: (y + ni).min(outer.y1),
            })
        })
        .collect();
    let rect = tiles
        .iter()
        .map(|&(x, y)| Rect {
            x0: x,
            y0: y,
            x1: x + ni,
            y1: y + ni,
        })
        .reduce(|a, b| Rect {
            x0: a.x0.min(b.x0),
            y0: a.y0.min(b.y0),
            x1: a.x1.max(b.x1),
            y1: a.y1.max(b.y1),
        })
        .map_or(core_rect, |r| Rect {
            x0: r.x0.max(outer.x0),
            y0: r.y0.max(outer.y0),
            x1: r.x1.min(outer.x1),
            y1: r.y1.min(outer.y1),
        });
    let mut blender = Blender::new(rect, k, layout);
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
    let (mut sums, weights) = blender.into_sums();
    sums.extend_from_slice(&weights);
    // No data where no window holds any: the sums are 0 there, and combine leaves such pixels empty.
    let (w, h) = (rect.width(), rect.height());
    let plane = w * h;
    let ow = outer.width();
    for y in 0..h {
        for x in 0..w {
            let q = (rect.y0 - outer.y0) as usize + y;
            let q = q * ow + (rect.x0 - outer.x0) as usize + x;
            if mosaic.valid[q] == 0 {
                for c in 0..=k {
                    sums[c * plane + y * w + x] = 0.0;
                }
            }
        }
    }
    Ok(PartitionPrediction {
        rect,
        k,
        sums,
        tiles: tiles.len(),
    })
}

/// Encodes a partition prediction: `sums` f32 `(K + 1, H, W)` (weighted sums of each output, then the
/// weights), metadata `rect`, `epsg`, `resolution`.
pub fn encode_partition(
    p: &PartitionPrediction,
    epsg: u32,
    resolution: f64,
) -> anyhow::Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let (w, h) = (p.rect.width(), p.rect.height());
    let sums: Vec<u8> = p.sums.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![(
        "sums".to_string(),
        TensorView::new(Dtype::F32, vec![p.k + 1, h, w], &sums)?,
    )];
    let mut meta = HashMap::new();
    meta.insert(
        "rect".to_string(),
        serde_json::to_string(&[p.rect.x0, p.rect.y0, p.rect.x1, p.rect.y1])?,
    );
    meta.insert("epsg".to_string(), epsg.to_string());
    meta.insert("resolution".to_string(), resolution.to_string());
    Ok(safetensors::serialize(views, Some(meta))?)
}

/// Decodes [`encode_partition`]'s bytes: `(rect, K, sums)` with `sums` of `K + 1` planes.
pub fn decode_partition(bytes: &[u8]) -> anyhow::Result<(Rect, usize, Vec<f32>)> {
    let meta = groundwork_imagery::output::read_metadata(bytes)?;
    let r: [i64; 4] =
        serde_json::from_str(meta.get("rect").context("no rect in a partition file")?)?;
    let rect = Rect {
        x0: r[0],
        y0: r[1],
        x1: r[2],
        y1: r[3],
    };
    let sums = groundwork_imagery::output::read_f32(bytes, "sums")?;
    let planes = sums.shape.first().copied().unwrap_or(0);
    anyhow::ensure!(
        planes >= 2 && sums.shape == [planes, rect.height(), rect.width()],
        "a partition file's shapes do not match its rectangle"
    );
    Ok((rect, planes - 1, sums.data))
}
