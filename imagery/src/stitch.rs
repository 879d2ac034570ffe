//! Stitching window predictions into a seamless mosaic.
//!
//! Windows live on a UTM grid (`column`, `row`, `size` pixels a side). A prediction partition is a block
//! of neighbouring windows (its *core*) plus a halo of one window on every side. The windows' tensors
//! are pasted into one mosaic array; the model runs on square *tiles* of the window size whose origins
//! lie on a lattice of step `stride = size − overlap`, anchored at the zone's grid origin (pixel 0), so
//! two partitions that share a border run exactly the same tiles there. Tile outputs are blended with a
//! separable linear ramp that rises over the overlap from the tile edge; in one dimension the ramps of
//! two overlapping tiles sum to one, so a model that predicts the same value everywhere gives exactly
//! that value, and a smooth model gives a smooth mosaic with no seams at tile or partition borders.
//!
//! Global pixel coordinates: `x = column · size + i` (east), `y = −(row + 1) · size + j` (south), so a
//! window's top-left pixel is `(column · size, −(row + 1) · size)`.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A window's place on the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    /// Grid column.
    pub column: i64,
    /// Grid row.
    pub row: i64,
}

impl Cell {
    /// Global pixel coordinates of the window's top-left pixel.
    #[must_use]
    pub fn origin(self, size: usize) -> (i64, i64) {
        let n = size as i64;
        (self.column * n, -(self.row + 1) * n)
    }
}

/// A group of neighbouring windows predicted together: the windows in one `block × block` square of
/// grid cells of one UTM zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// EPSG code of the zone.
    pub epsg: u32,
    /// Block column (`column.div_euclid(block)`).
    pub block_column: i64,
    /// Block row (`row.div_euclid(block)`).
    pub block_row: i64,
    /// The windows of the block, sorted.
    pub cells: Vec<Cell>,
}

/// Groups windows `(epsg, cell)` into partitions of `block × block` cells; sorted by zone and block.
#[must_use]
pub fn partition_cells(cells: &[(u32, Cell)], block: usize) -> Vec<Partition> {
    let b = block.max(1) as i64;
    let mut groups: BTreeMap<(u32, i64, i64), Vec<Cell>> = BTreeMap::new();
    for &(epsg, c) in cells {
        groups
            .entry((epsg, c.column.div_euclid(b), c.row.div_euclid(b)))
            .or_default()
            .push(c);
    }
    groups
        .into_iter()
        .map(|((epsg, block_column, block_row), mut cells)| {
            cells.sort();
            cells.dedup();
            Partition {
                epsg,
                block_column,
                block_row,
                cells,
            }
        })
        .collect()
}

/// A pixel rectangle in global pixel coordinates: `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left (inclusive).
    pub x0: i64,
    /// Top (inclusive).
    pub y0: i64,
    /// Right (exclusive).
    pub x1: i64,
    /// Bottom (exclusive).
    pub y1: i64,
}

impl Rect {
    /// Width in pixels.
    #[must_use]
    pub fn width(&self) -> usize {
        usize::try_from(self.x1 - self.x0).unwrap_or(0)
    }

    /// Height in pixels.
    #[must_use]
    pub fn height(&self) -> usize {
        usize::try_from(self.y1 - self.y0).unwrap_or(0)
    }

    /// The bounding rectangle of windows, grown by `halo` pixels on every side.
    #[must_use]
    pub fn around(cells: &[Cell], size: usize, halo: i64) -> Option<Rect> {
        let n = size as i64;
        let mut it = cells.iter().map(|c| c.origin(size));
        let (x, y) = it.next()?;
        let mut r = Rect {
            x0: x,
            y0: y,
            x1: x + n,
            y1: y + n,
        };
        for (x, y) in it {
            r.x0 = r.x0.min(x);
            r.y0 = r.y0.min(y);
            r.x1 = r.x1.max(x + n);
            r.y1 = r.y1.max(y + n);
        }
        Some(Rect {
            x0: r.x0 - halo,
            y0: r.y0 - halo,
            x1: r.x1 + halo,
            y1: r.y1 + halo,
        })
    }

    /// GDAL geotransform of this rectangle at `resolution` metres per pixel.
    #[must_use]
    pub fn geotransform(&self, resolution: f64) -> [f64; 6] {
        [
            self.x0 as f64 * resolution,
            resolution,
            0.0,
            -(self.y0 as f64) * resolution,
            0.0,
            -resolution,
        ]
    }

    /// Whether the rectangle contains the global pixel.
    #[must_use]
    pub fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
}

/// How tiles are laid out and blended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileLayout {
    /// Tile side in pixels (the window size the model was trained on).
    pub size: usize,
    /// Overlap between neighbouring tiles in pixels (`0 ≤ overlap < size`).
    pub overlap: usize,
}

impl TileLayout {
    /// Checks the layout.
    pub fn new(size: usize, overlap: usize) -> Result<Self> {
        if size == 0 || overlap >= size {
            return Err(Error::InvalidRequest(format!(
                "tile overlap {overlap} must be smaller than the tile size {size}"
            )));
        }
        Ok(Self { size, overlap })
    }

    /// Distance between neighbouring tile origins.
    #[must_use]
    pub fn stride(&self) -> usize {
        self.size - self.overlap
    }

    /// Origins of the lattice tiles that touch `core`, row by row. Every pixel of `core` is covered.
    #[must_use]
    pub fn tiles_over(&self, core: Rect) -> Vec<(i64, i64)> {
        let n = self.size as i64;
        let s = self.stride() as i64;
        let first = |lo: i64| (lo - n + 1 + s - 1).div_euclid(s) * s;
        let (fx, fy) = (first(core.x0), first(core.y0));
        let mut out = Vec::new();
        let mut y = fy;
        while y < core.y1 {
            let mut x = fx;
            while x < core.x1 {
                out.push((x, y));
                x += s;
            }
            y += s;
        }
        out
    }

    /// The blend weight of each tile pixel, row-major `size × size`: the product of a linear ramp per
    /// axis, `(d + 1) / (overlap + 1)` at distance `d` from the nearest edge, capped at 1.
    #[must_use]
    pub fn weights(&self) -> Vec<f32> {
        let n = self.size;
        let ramp: Vec<f32> = (0..n)
            .map(|i| {
                let d = i.min(n - 1 - i);
                if self.overlap == 0 {
                    1.0
                } else {
                    ((d + 1) as f32 / (self.overlap + 1) as f32).min(1.0)
                }
            })
            .collect();
        let mut w = Vec::with_capacity(n * n);
        for &ry in &ramp {
            for &rx in &ramp {
                w.push(ry * rx);
            }
        }
        w
    }
}

/// One modality's pixels over a mosaic: data `(H, W, T, C)` and mask `(H, W, T, S)`, row-major.
#[derive(Debug, Clone)]
pub struct MosaicBand {
    /// Time steps.
    pub t: usize,
    /// Channels.
    pub c: usize,
    /// Band sets (mask channels).
    pub s: usize,
    /// Values; 0 where no window was pasted.
    pub data: Vec<f32>,
    /// Mask; `missing` where no window was pasted.
    pub mask: Vec<u8>,
}

/// Input pixels of a partition: every modality over the same rectangle, and which pixels hold data.
#[derive(Debug, Clone)]
pub struct Mosaic {
    /// The rectangle (global pixel coordinates).
    pub rect: Rect,
    /// Per modality name.
    pub bands: BTreeMap<String, MosaicBand>,
    /// Month (0–11) of each time step.
    pub months: Vec<i64>,
    /// 1 where a window's data was pasted.
    pub valid: Vec<u8>,
    missing: u8,
}

impl Mosaic {
    /// An empty mosaic; `missing` is the mask value of absent data.
    #[must_use]
    pub fn new(rect: Rect, missing: u8) -> Self {
        Self {
            rect,
            bands: BTreeMap::new(),
            months: Vec::new(),
            valid: vec![0; rect.width() * rect.height()],
            missing,
        }
    }

    /// Pastes one window's modality `(size, size, T, C)` data and `(size, size, T, S)` mask with its
    /// top-left pixel at global `(x, y)`. Parts outside the mosaic are dropped. Every window of a
    /// modality must share T, C and S.
    #[expect(clippy::too_many_arguments, reason = "one window's tensors and place")]
    pub fn paste(
        &mut self,
        modality: &str,
        (x, y): (i64, i64),
        size: usize,
        (t, c, s): (usize, usize, usize),
        data: &[f32],
        mask: &[u8],
        months: &[i64],
    ) -> Result<()> {
        if data.len() != size * size * t * c || mask.len() != size * size * t * s {
            return Err(Error::InvalidRequest(format!(
                "{modality} tensors of {} and {} values do not match ({size}, {size}, {t}, {c}/{s})",
                data.len(),
                mask.len()
            )));
        }
        if self.months.is_empty() {
            self.months = months.to_vec();
        } else if self.months.len() != t {
            return Err(Error::InvalidRequest(format!(
                "windows have different numbers of time steps ({} and {t})",
                self.months.len()
            )));
        }
        let (w, h) = (self.rect.width(), self.rect.height());
        let missing = self.missing;
        let band = self
            .bands
            .entry(modality.to_string())
            .or_insert_with(|| MosaicBand {
                t,
                c,
                s,
                data: vec![0.0; w * h * t * c],
                mask: vec![missing; w * h * t * s],
            });
        if (band.t, band.c, band.s) != (t, c, s) {
            return Err(Error::InvalidRequest(format!(
                "{modality} windows differ in shape: ({}, {}, {}) and ({t}, {c}, {s})",
                band.t, band.c, band.s
            )));
        }
        for j in 0..size {
            let gy = y + j as i64;
            if gy < self.rect.y0 || gy >= self.rect.y1 {
                continue;
            }
            for i in 0..size {
                let gx = x + i as i64;
                if gx < self.rect.x0 || gx >= self.rect.x1 {
                    continue;
                }
                let p = (gy - self.rect.y0) as usize * w + (gx - self.rect.x0) as usize;
                let q = j * size + i;
                band.data[p * t * c..(p + 1) * t * c]
                    .copy_from_slice(&data[q * t * c..(q + 1) * t * c]);
                band.mask[p * t * s..(p + 1) * t * s]
                    .copy_from_slice(&mask[q * t * s..(q + 1) * t * s]);
                self.valid[p] = 1;
            }
        }
        Ok(())
    }

    /// Whether any pixel of `r` holds data.
    #[must_use]
    pub fn any_valid(&self, r: Rect) -> bool {
        let w = self.rect.width();
        (r.y0.max(self.rect.y0)..r.y1.min(self.rect.y1)).any(|y| {
            (r.x0.max(self.rect.x0)..r.x1.min(self.rect.x1)).any(|x| {
                self.valid[(y - self.rect.y0) as usize * w + (x - self.rect.x0) as usize] == 1
            })
        })
    }

    /// The smallest rectangle holding every pixel with data, if any.
    #[must_use]
    pub fn valid_bounds(&self) -> Option<Rect> {
        let w = self.rect.width();
        let mut b: Option<Rect> = None;
        for (p, _) in self.valid.iter().enumerate().filter(|(_, v)| **v == 1) {
            let (x, y) = (self.rect.x0 + (p % w) as i64, self.rect.y0 + (p / w) as i64);
            b = Some(match b {
                None => Rect {
                    x0: x,
                    y0: y,
                    x1: x + 1,
                    y1: y + 1,
                },
                Some(r) => Rect {
                    x0: r.x0.min(x),
                    y0: r.y0.min(y),
                    x1: r.x1.max(x + 1),
                    y1: r.y1.max(y + 1),
                },
            });
        }
        b
    }

    /// Appends the `size × size` chip at global `(x, y)` of a modality to `data` `(size, size, T, C)`
    /// and `mask` `(size, size, T, S)`; pixels outside the mosaic are 0 / missing.
    pub fn chip_into(
        &self,
        modality: &str,
        (x, y): (i64, i64),
        size: usize,
        data: &mut Vec<f32>,
        mask: &mut Vec<u8>,
    ) -> Result<()> {
        let band = self
            .bands
            .get(modality)
            .ok_or_else(|| Error::InvalidRequest(format!("the mosaic has no {modality} data")))?;
        let (tc, ts) = (band.t * band.c, band.t * band.s);
        let w = self.rect.width();
        for j in 0..size as i64 {
            let gy = y + j;
            let row_in = gy >= self.rect.y0 && gy < self.rect.y1;
            // Copy the in-mosaic run of this row at once.
            let lo = x.max(self.rect.x0);
            let hi = (x + size as i64).min(self.rect.x1);
            if !row_in || lo >= hi {
                data.extend(std::iter::repeat_n(0.0, size * tc));
                mask.extend(std::iter::repeat_n(self.missing, size * ts));
                continue;
            }
            let before = (lo - x) as usize;
            let after = (x + size as i64 - hi) as usize;
            let p0 = (gy - self.rect.y0) as usize * w + (lo - self.rect.x0) as usize;
            let run = (hi - lo) as usize;
            data.extend(std::iter::repeat_n(0.0, before * tc));
            data.extend_from_slice(&band.data[p0 * tc..(p0 + run) * tc]);
            data.extend(std::iter::repeat_n(0.0, after * tc));
            mask.extend(std::iter::repeat_n(self.missing, before * ts));
            mask.extend_from_slice(&band.mask[p0 * ts..(p0 + run) * ts]);
            mask.extend(std::iter::repeat_n(self.missing, after * ts));
        }
        Ok(())
    }
}

/// Accumulates weighted tile predictions `(K, size, size)` over a rectangle.
#[derive(Debug, Clone)]
pub struct Blender {
    rect: Rect,
    k: usize,
    layout: TileLayout,
    weights: Vec<f32>,
    acc: Vec<f32>,
    wsum: Vec<f32>,
}

impl Blender {
    /// A blender over `rect` (usually the partition's core) for `k` outputs.
    #[must_use]
    pub fn new(rect: Rect, k: usize, layout: TileLayout) -> Self {
        let n = rect.width() * rect.height();
        Self {
            rect,
            k,
            layout,
            weights: layout.weights(),
            acc: vec![0.0; n * k],
            wsum: vec![0.0; n],
        }
    }

    /// Adds one tile's prediction `(K, size, size)` with its top-left pixel at global `(x, y)`.
    pub fn add(&mut self, (x, y): (i64, i64), pred: &[f32]) -> Result<()> {
        let n = self.layout.size;
        if pred.len() != self.k * n * n {
            return Err(Error::InvalidRequest(format!(
                "a tile prediction has {} values, expected {} × {n} × {n}",
                pred.len(),
                self.k
            )));
        }
        let (w, h) = (self.rect.width(), self.rect.height());
        let plane = w * h;
        for j in 0..n {
            let gy = y + j as i64;
            if gy < self.rect.y0 || gy >= self.rect.y1 {
                continue;
            }
            let ry = (gy - self.rect.y0) as usize;
            for i in 0..n {
                let gx = x + i as i64;
                if gx < self.rect.x0 || gx >= self.rect.x1 {
                    continue;
                }
                let p = ry * w + (gx - self.rect.x0) as usize;
                let wt = self.weights[j * n + i];
                self.wsum[p] += wt;
                for k in 0..self.k {
                    self.acc[k * plane + p] += wt * pred[k * n * n + j * n + i];
                }
            }
        }
        Ok(())
    }

    /// The weighted sums before blending: `(K, H, W)` sums of weight × prediction and the `(H, W)`
    /// sums of weights. Sums of neighbouring rectangles add up to the sums of their union, so tiles
    /// can be computed once each, in whichever partition, and blended where they meet.
    #[must_use]
    pub fn into_sums(self) -> (Vec<f32>, Vec<f32>) {
        (self.acc, self.wsum)
    }

    /// The blended outputs `(K, H, W)`; NaN where no tile contributed.
    #[must_use]
    pub fn finish(self) -> Vec<f32> {
        let plane = self.wsum.len();
        let mut out = self.acc;
        for k in 0..self.k {
            for p in 0..plane {
                let w = self.wsum[p];
                out[k * plane + p] = if w > 0.0 {
                    out[k * plane + p] / w
                } else {
                    f32::NAN
                };
            }
        }
        out
    }
}

/// Argmax over `K` planes of `(K, H, W)`; `None` where the first plane is NaN.
#[must_use]
pub fn argmax(values: &[f32], k: usize) -> Vec<Option<usize>> {
    if k == 0 {
        return Vec::new();
    }
    let plane = values.len() / k;
    (0..plane)
        .map(|p| {
            if values[p].is_nan() {
                return None;
            }
            let mut best = 0;
            for c in 1..k {
                if values[c * plane + p] > values[best * plane + p] {
                    best = c;
                }
            }
            Some(best)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_core_on_a_global_lattice() {
        let layout = TileLayout::new(64, 16).unwrap_or(TileLayout {
            size: 64,
            overlap: 16,
        });
        let core = Rect {
            x0: 128,
            y0: -256,
            x1: 256,
            y1: -128,
        };
        let tiles = layout.tiles_over(core);
        assert!(tiles.iter().all(|&(x, y)| x % 48 == 0 && y % 48 == 0));
        for y in core.y0..core.y1 {
            for x in core.x0..core.x1 {
                assert!(
                    tiles
                        .iter()
                        .any(|&(tx, ty)| x >= tx && x < tx + 64 && y >= ty && y < ty + 64)
                );
            }
        }
        // No tile misses the core.
        assert!(
            tiles
                .iter()
                .all(|&(x, y)| x + 64 > core.x0 && y + 64 > core.y0)
        );
    }

    #[test]
    fn ramps_of_overlapping_tiles_sum_to_one() {
        let l = TileLayout {
            size: 64,
            overlap: 16,
        };
        let w = l.weights();
        // Along a row in the overlap zone: tile A's right edge and tile B's left edge.
        for d in 0..16 {
            let a = w[32 * 64 + (47 + d + 1)];
            let b = w[32 * 64 + d];
            assert!((a + b - 1.0).abs() < 1e-6, "{d}: {a} + {b}");
        }
    }
}
