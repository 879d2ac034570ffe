//! Disk-backed mosaics, so that combining and publishing a large area runs in bounded memory.
//!
//! A [`DiskMosaic`] is a tiled `f32` GeoTIFF of `K` planes (NaN = no data) over a rectangle of a
//! zone's global pixel grid (see [`crate::stitch`]). Partitions are pasted into it one at a time; the
//! other zones of an area that crosses a zone boundary are reprojected onto it by GDAL, which warps in
//! chunks; and the class, probability or value COGs are written from it strip by strip. Memory holds
//! one partition, one strip and GDAL's block cache, whatever the area's size.

use std::path::{Path, PathBuf};

use gdal::raster::{Buffer, RasterCreationOptions};
use gdal::{Dataset, DriverManager};

use crate::error::{Error, Result};
use crate::publish::{LegendClass, NODATA_U8, PROBABILITY_SCALE, class_palette, cog_copy};
use crate::stitch::{Rect, argmax};

/// Rows read or written at once when streaming a mosaic.
pub const STRIP_ROWS: usize = 256;

/// A `K`-plane `f32` raster on disk over `rect` of a zone's grid; NaN is no data.
pub struct DiskMosaic {
    ds: Dataset,
    /// The rectangle (global pixel coordinates).
    pub rect: Rect,
    /// Planes.
    pub k: usize,
    /// Metres per pixel.
    pub resolution: f64,
    /// EPSG code of the zone.
    pub epsg: u32,
    /// Where it lives.
    pub path: PathBuf,
}

impl std::fmt::Debug for DiskMosaic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskMosaic")
            .field("rect", &self.rect)
            .field("k", &self.k)
            .field("epsg", &self.epsg)
            .finish_non_exhaustive()
    }
}

fn op(what: &'static str) -> impl FnOnce(gdal::errors::GdalError) -> Error {
    Error::gdal(format!("mosaic: {what}"))
}

/// A tiled GeoTIFF of `bands` bands of `T` on a rectangle, every pixel no data until written.
fn tiled<T: gdal::raster::GdalType>(
    path: &Path,
    (w, h): (usize, usize),
    bands: usize,
    geotransform: [f64; 6],
    epsg: u32,
    nodata: f64,
) -> Result<Dataset> {
    let gtiff = DriverManager::get_driver_by_name("GTiff").map_err(op("GTiff driver"))?;
    let opts = RasterCreationOptions::from_iter([
        "TILED=YES",
        "BLOCKXSIZE=256",
        "BLOCKYSIZE=256",
        "BIGTIFF=IF_SAFER",
        // Blocks never written read back as no data, and take no space.
        "SPARSE_OK=TRUE",
    ]);
    let mut ds = gtiff
        .create_with_band_type_with_options::<T, _>(path, w.max(1), h.max(1), bands, &opts)
        .map_err(op("creating"))?;
    ds.set_geo_transform(&geotransform)
        .map_err(op("geotransform"))?;
    ds.set_spatial_ref(&crate::grid::srs(epsg)?)
        .map_err(op("CRS"))?;
    for b in 1..=bands {
        ds.rasterband(b)
            .map_err(op("band"))?
            .set_no_data_value(Some(nodata))
            .map_err(op("nodata"))?;
    }
    Ok(ds)
}

/// Where a rectangle of values lands in a mosaic (see `DiskMosaic::region`).
struct Region {
    /// Offset in the raster.
    at: (isize, isize),
    /// Width and height inside the mosaic.
    size: (usize, usize),
    /// Offset of that part in the values.
    from: (usize, usize),
    /// Width of the values' rectangle.
    values_width: usize,
    /// Pixels of one plane of the values.
    plane: usize,
}

impl Region {
    /// Index in a plane of the values of the region's pixel `(x, y)`.
    fn source(&self, x: usize, y: usize) -> usize {
        (y + self.from.1) * self.values_width + x + self.from.0
    }
}

impl DiskMosaic {
    /// An empty mosaic of `k` planes over `rect` at `path`.
    pub fn create(path: &Path, rect: Rect, k: usize, resolution: f64, epsg: u32) -> Result<Self> {
        if k == 0 || rect.width() == 0 || rect.height() == 0 {
            return Err(Error::InvalidRequest(format!(
                "an empty mosaic ({k} planes of {}×{})",
                rect.width(),
                rect.height()
            )));
        }
        let ds = tiled::<f32>(
            path,
            (rect.width(), rect.height()),
            k,
            rect.geotransform(resolution),
            epsg,
            f64::NAN,
        )?;
        Ok(Self {
            ds,
            rect,
            k,
            resolution,
            epsg,
            path: path.to_path_buf(),
        })
    }

    /// Where `(K, r)` values land: their count checked, `r` clipped to the mosaic (`None`: nothing
    /// of it inside).
    fn region(&self, r: Rect, values: &[f32]) -> Result<Option<Region>> {
        let (rw, rh) = (r.width(), r.height());
        if values.len() != self.k * rw * rh {
            return Err(Error::InvalidRequest(format!(
                "{} values are not {} planes of {rw}×{rh}",
                values.len(),
                self.k
            )));
        }
        let clip = Rect {
            x0: r.x0.max(self.rect.x0),
            y0: r.y0.max(self.rect.y0),
            x1: r.x1.min(self.rect.x1),
            y1: r.y1.min(self.rect.y1),
        };
        if clip.x0 >= clip.x1 || clip.y0 >= clip.y1 {
            return Ok(None);
        }
        Ok(Some(Region {
            at: (
                (clip.x0 - self.rect.x0) as isize,
                (clip.y0 - self.rect.y0) as isize,
            ),
            size: (clip.width(), clip.height()),
            from: ((clip.x0 - r.x0) as usize, (clip.y0 - r.y0) as usize),
            values_width: rw,
            plane: rw * rh,
        }))
    }

    /// Plane `b` (0-based) of the mosaic over `reg`.
    fn read_plane(&self, b: usize, reg: &Region) -> Result<Vec<f32>> {
        self.ds
            .rasterband(b + 1)
            .and_then(|band| band.read_as::<f32>(reg.at, reg.size, reg.size, None))
            .map(|buf| buf.into_shape_and_vec().1)
            .map_err(op("reading a region"))
    }

    /// Writes plane `b` (0-based) of the mosaic over `reg`.
    fn write_plane(&self, b: usize, reg: &Region, plane: Vec<f32>) -> Result<()> {
        let mut buf = Buffer::new(reg.size, plane);
        self.ds
            .rasterband(b + 1)
            .map_err(op("band"))?
            .write(reg.at, reg.size, &mut buf)
            .map_err(op("writing a region"))
    }

    /// Pastes `(K, r)` values where they hold data (the first plane is not NaN). With
    /// `only_missing`, pixels the mosaic already holds are kept. Parts outside the mosaic are dropped.
    pub fn paste(&mut self, r: Rect, values: &[f32], only_missing: bool) -> Result<()> {
        let Some(reg) = self.region(r, values)? else {
            return Ok(());
        };
        let mut planes: Vec<Vec<f32>> = (0..self.k)
            .map(|b| self.read_plane(b, &reg))
            .collect::<Result<_>>()?;
        let (cw, ch) = reg.size;
        for y in 0..ch {
            for x in 0..cw {
                let q = reg.source(x, y);
                let p = y * cw + x;
                if values[q].is_nan() || (only_missing && !planes[0][p].is_nan()) {
                    continue;
                }
                for (b, plane) in planes.iter_mut().enumerate() {
                    plane[p] = values[b * reg.plane + q];
                }
            }
        }
        for (b, plane) in planes.into_iter().enumerate() {
            self.write_plane(b, &reg, plane)?;
        }
        Ok(())
    }

    /// Adds `(K, r)` values to what the mosaic holds (no data counts as 0); parts outside the mosaic
    /// are dropped. A mosaic of weighted sums (`K − 1` planes of weight × prediction, then the
    /// weights) accumulates partitions this way, and [`Self::blend_into`] divides them.
    pub fn add(&mut self, r: Rect, values: &[f32]) -> Result<()> {
        let Some(reg) = self.region(r, values)? else {
            return Ok(());
        };
        let (cw, ch) = reg.size;
        for b in 0..self.k {
            let mut plane = self.read_plane(b, &reg)?;
            for y in 0..ch {
                for x in 0..cw {
                    let v = values[b * reg.plane + reg.source(x, y)];
                    let p = &mut plane[y * cw + x];
                    let held = if p.is_nan() { 0.0 } else { *p };
                    *p = held + if v.is_nan() { 0.0 } else { v };
                }
            }
            self.write_plane(b, &reg, plane)?;
        }
        Ok(())
    }

    /// Divides a mosaic of weighted sums (`K − 1` planes of weight × prediction, then the weights)
    /// into `target` (`K − 1` planes, the same grid), strip by strip: the blended predictions where the
    /// weights are positive; other pixels of `target` are left as they are.
    pub fn blend_into(&self, target: &mut DiskMosaic) -> Result<()> {
        let k = self.k.saturating_sub(1);
        if k == 0 || target.k != k || target.epsg != self.epsg {
            return Err(Error::InvalidRequest(format!(
                "{} planes of sums do not blend into {} planes",
                self.k, target.k
            )));
        }
        let w = self.rect.width();
        let mut y = 0;
        while y < self.rect.height() {
            let rows = STRIP_ROWS.min(self.rect.height() - y);
            let sums = self.rows(y, rows)?;
            let plane = rows * w;
            let weights = &sums[k * plane..];
            let mut values = vec![f32::NAN; k * plane];
            for p in 0..plane {
                let wt = weights[p];
                if wt > 0.0 && wt.is_finite() {
                    for b in 0..k {
                        values[b * plane + p] = sums[b * plane + p] / wt;
                    }
                }
            }
            let strip = Rect {
                x0: self.rect.x0,
                y0: self.rect.y0 + y as i64,
                x1: self.rect.x1,
                y1: self.rect.y0 + (y + rows) as i64,
            };
            target.paste(strip, &values, false)?;
            y += rows;
        }
        Ok(())
    }

    /// Rows `y .. y + rows` of every plane, `(K, rows, W)`.
    pub fn rows(&self, y: usize, rows: usize) -> Result<Vec<f32>> {
        let w = self.rect.width();
        let mut out = Vec::with_capacity(self.k * rows * w);
        for b in 1..=self.k {
            let buf = self
                .ds
                .rasterband(b)
                .and_then(|band| band.read_as::<f32>((0, y as isize), (w, rows), (w, rows), None))
                .map_err(op("reading rows"))?;
            out.extend_from_slice(buf.data());
        }
        Ok(out)
    }

    /// Fills the pixels this mosaic has no data for from `other` (another zone), reprojected onto
    /// this grid with bilinear resampling. GDAL warps in chunks, through a temporary file at `scratch`.
    pub fn fill_from(&mut self, other: &DiskMosaic, scratch: &Path) -> Result<()> {
        if other.k != self.k {
            return Err(Error::InvalidRequest(
                "zones have different numbers of outputs".into(),
            ));
        }
        let b = other.bounds_in(self.epsg)?;
        let res = self.resolution;
        // Global pixel coordinates of this grid: x = easting / res, y = −northing / res.
        let r = Rect {
            x0: ((b[0] / res).floor() as i64).max(self.rect.x0),
            y0: ((-b[3] / res).floor() as i64).max(self.rect.y0),
            x1: ((b[2] / res).ceil() as i64).min(self.rect.x1),
            y1: ((-b[1] / res).ceil() as i64).min(self.rect.y1),
        };
        if r.x0 >= r.x1 || r.y0 >= r.y1 {
            return Ok(());
        }
        let warped = tiled::<f32>(
            scratch,
            (r.width(), r.height()),
            self.k,
            r.geotransform(res),
            self.epsg,
            f64::NAN,
        )?;
        gdal::raster::reproject(&other.ds, &warped).map_err(op("reprojecting a zone"))?;
        let w = r.width();
        let mut y = 0;
        while y < r.height() {
            let rows = STRIP_ROWS.min(r.height() - y);
            let mut values = Vec::with_capacity(self.k * rows * w);
            for band in 1..=self.k {
                let buf = warped
                    .rasterband(band)
                    .and_then(|b| b.read_as::<f32>((0, y as isize), (w, rows), (w, rows), None))
                    .map_err(op("reading the reprojected zone"))?;
                values.extend_from_slice(buf.data());
            }
            let strip = Rect {
                x0: r.x0,
                y0: r.y0 + y as i64,
                x1: r.x1,
                y1: r.y0 + (y + rows) as i64,
            };
            self.paste(strip, &values, true)?;
            y += rows;
        }
        drop(warped);
        let _ = std::fs::remove_file(scratch);
        Ok(())
    }

    /// The bounds `[min_x, min_y, max_x, max_y]` of this mosaic in EPSG:`epsg` (edges densified).
    pub fn bounds_in(&self, epsg: u32) -> Result<[f64; 4]> {
        let gt = self.rect.geotransform(self.resolution);
        let (w, h) = (self.rect.width() as f64, self.rect.height() as f64);
        let own = [gt[0], gt[3] + gt[5] * h, gt[0] + gt[1] * w, gt[3]];
        if self.epsg == epsg {
            return Ok(own);
        }
        crate::grid::transform(self.epsg, epsg)?
            .transform_bounds(&own, 21)
            .map_err(op("projecting bounds"))
    }

    /// Writes the class map (`legend[argmax]`, 255 no data, with the legend's colour table) and the
    /// probabilities (`round(p · 254)`, 255 no data) as COGs, strip by strip.
    pub fn write_class_cogs(
        &self,
        legend: &[LegendClass],
        class_path: &Path,
        probability_path: &Path,
    ) -> Result<()> {
        let (w, h) = (self.rect.width(), self.rect.height());
        let gt = self.rect.geotransform(self.resolution);
        let class_tmp = class_path.with_extension("strips.tif");
        let prob_tmp = probability_path.with_extension("strips.tif");
        let nodata = f64::from(NODATA_U8);
        let classes = tiled::<u8>(&class_tmp, (w, h), 1, gt, self.epsg, nodata)?;
        let probs = tiled::<u8>(&prob_tmp, (w, h), self.k, gt, self.epsg, nodata)?;
        let mut y = 0;
        while y < h {
            let rows = STRIP_ROWS.min(h - y);
            let values = self.rows(y, rows)?;
            let mut buf = Buffer::new((w, rows), class_ids(&values, self.k, legend));
            classes
                .rasterband(1)
                .map_err(op("class band"))?
                .write((0, y as isize), (w, rows), &mut buf)
                .map_err(op("writing classes"))?;
            let plane = w * rows;
            for b in 0..self.k {
                let q = probabilities_u8(&values[b * plane..(b + 1) * plane]);
                let mut buf = Buffer::new((w, rows), q);
                probs
                    .rasterband(b + 1)
                    .map_err(op("probability band"))?
                    .write((0, y as isize), (w, rows), &mut buf)
                    .map_err(op("writing probabilities"))?;
            }
            y += rows;
        }
        {
            let mut band = classes.rasterband(1).map_err(op("class band"))?;
            band.set_color_table(&class_palette(legend));
            band.set_color_interpretation(gdal::raster::ColorInterpretation::PaletteIndex)
                .map_err(op("marking the class band as paletted"))?;
        }
        cog_copy(&classes, class_path, &["OVERVIEW_RESAMPLING=NEAREST"])?;
        cog_copy(&probs, probability_path, &["OVERVIEW_RESAMPLING=AVERAGE"])?;
        drop((classes, probs));
        let _ = std::fs::remove_file(class_tmp);
        let _ = std::fs::remove_file(prob_tmp);
        Ok(())
    }

    /// Writes the values as an `f32` COG (NaN no data) and returns their range, if any is finite.
    pub fn write_value_cog(&self, path: &Path) -> Result<Option<(f32, f32)>> {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        let mut y = 0;
        while y < self.rect.height() {
            let rows = STRIP_ROWS.min(self.rect.height() - y);
            for v in self.rows(y, rows)?.into_iter().filter(|v| v.is_finite()) {
                lo = lo.min(v);
                hi = hi.max(v);
            }
            y += rows;
        }
        cog_copy(
            &self.ds,
            path,
            &["OVERVIEW_RESAMPLING=AVERAGE", "PREDICTOR=YES"],
        )?;
        Ok(lo.is_finite().then_some((lo, hi)))
    }
}

/// Class ids of `K` planes `(K, …)` of probabilities: `legend[argmax].id`, 255 where there is no data.
#[must_use]
pub fn class_ids(values: &[f32], k: usize, legend: &[LegendClass]) -> Vec<u8> {
    argmax(values, k)
        .into_iter()
        .map(|i| i.and_then(|i| legend.get(i)).map_or(NODATA_U8, |l| l.id))
        .collect()
}

/// One plane of probabilities as stored: `round(p · 254)`, 255 where there is no data.
#[must_use]
pub fn probabilities_u8(plane: &[f32]) -> Vec<u8> {
    plane
        .iter()
        .map(|&p| {
            if p.is_nan() {
                NODATA_U8
            } else {
                (p.clamp(0.0, 1.0) * PROBABILITY_SCALE).round() as u8
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasting_keeps_what_is_there_and_fills_only_gaps_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let rect = Rect {
            x0: 100,
            y0: -200,
            x1: 104,
            y1: -198,
        };
        let mut m = DiskMosaic::create(&dir.path().join("m.tif"), rect, 2, 10.0, 32633).unwrap();
        // Nothing written reads back as no data.
        assert!(m.rows(0, 2).unwrap().iter().all(|v| v.is_nan()));
        // A 2×2 part at the left, one pixel without data.
        let left = Rect {
            x0: 100,
            y0: -200,
            x1: 102,
            y1: -198,
        };
        let nan = f32::NAN;
        m.paste(left, &[0.1, nan, 0.3, 0.4, 0.9, nan, 0.7, 0.6], false)
            .unwrap();
        // A part over the whole rectangle, only where there is no data yet.
        m.paste(rect, &[0.5; 16], true).unwrap();
        let v = m.rows(0, 2).unwrap();
        assert_eq!(&v[0..4], &[0.1, 0.5, 0.5, 0.5]);
        assert_eq!(&v[4..8], &[0.3, 0.4, 0.5, 0.5]);
        assert_eq!(&v[8..12], &[0.9, 0.5, 0.5, 0.5]);
        // A part partly outside is clipped.
        let outside = Rect {
            x0: 103,
            y0: -199,
            x1: 106,
            y1: -198,
        };
        m.paste(outside, &[0.0; 6], false).unwrap();
        assert_eq!(m.rows(1, 1).unwrap()[3], 0.0);
    }

    #[test]
    fn sums_added_from_overlapping_parts_blend_to_their_weighted_mean() {
        let dir = tempfile::tempdir().unwrap();
        let rect = Rect {
            x0: 0,
            y0: 0,
            x1: 5,
            y1: 1,
        };
        // One output plane and its weights.
        let mut sums =
            DiskMosaic::create(&dir.path().join("sums.tif"), rect, 2, 10.0, 32633).unwrap();
        let left = Rect {
            x0: 0,
            y0: 0,
            x1: 3,
            y1: 1,
        };
        let right = Rect {
            x0: 1,
            y0: 0,
            x1: 5,
            y1: 1,
        };
        // Left says 1.0 with weight 1; right says 3.0 with weight 3, and has no weight at its last pixel.
        sums.add(left, &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]).unwrap();
        sums.add(right, &[9.0, 9.0, 9.0, 9.0, 3.0, 3.0, 3.0, 0.0])
            .unwrap();
        let mut out =
            DiskMosaic::create(&dir.path().join("out.tif"), rect, 1, 10.0, 32633).unwrap();
        sums.blend_into(&mut out).unwrap();
        let v = out.rows(0, 1).unwrap();
        assert_eq!(v[0], 1.0);
        assert!(
            (v[1] - 2.5).abs() < 1e-6 && (v[2] - 2.5).abs() < 1e-6,
            "{v:?}"
        );
        assert_eq!(v[3], 3.0);
        assert!(v[4].is_nan(), "no weight: no data, {v:?}");
        assert!(sums.blend_into(&mut sums_copy(&dir)).is_err());
    }

    fn sums_copy(dir: &tempfile::TempDir) -> DiskMosaic {
        let rect = Rect {
            x0: 0,
            y0: 0,
            x1: 4,
            y1: 1,
        };
        DiskMosaic::create(&dir.path().join("other.tif"), rect, 2, 10.0, 32633).unwrap()
    }
}
