//! Change maps: two class maps of the same place, an earlier one (`from`) and a later one (`to`),
//! compared pixel by pixel on the earlier map's grid.
//!
//! [`change_map`] reads both class rasters (band 1, `u8` class ids) in strips of [`ROWS_PER_READ`]
//! rows, so memory stays bounded whatever their size. When the later map lies on another grid (another
//! CRS, origin, pixel size or extent), it is first resampled onto the earlier map's grid with
//! nearest-neighbour resampling (GDAL's warper, into a temporary GeoTIFF beside the output). A pixel
//! that is nodata in either map (or outside the later map) is nodata in the change map and counts in
//! no class.
//!
//! It counts every from→to pair of classes ([`Transitions`]: the exact pixel counts), then writes the
//! change raster as a COG on the earlier map's grid, `UInt16`:
//!
//! - `0` ([`UNCHANGED`]): the pixel has the same class in both maps;
//! - `k ≥ 1`: the pixel changed, from→to pair `k` of [`ChangeSummary::pairs`] (the pairs that occur,
//!   numbered in the order of the class list: by the earlier class, then the later one);
//! - `65535` ([`CHANGE_NODATA`]): nodata in either map.
//!
//! The COG carries a colour table (unchanged pale grey; each change in the colour of the class it
//! became), the band description says the encoding, and the metadata item
//! `GROUNDWORK_CHANGE_PAIRS` holds the pairs as JSON (`[{code, from, to}]`), so the file explains
//! itself in QGIS or `gdalinfo`.

use std::path::{Path, PathBuf};

use gdal::raster::{Buffer, ColorEntry, ColorTable, PaletteInterpretation, RasterCreationOptions};
use gdal::{Dataset, DriverManager, Metadata};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::publish::LegendClass;

/// Code of a pixel whose class did not change.
pub const UNCHANGED: u16 = 0;
/// Nodata of the change raster: nodata in either map.
pub const CHANGE_NODATA: u16 = u16::MAX;
/// Rows read (and written) at a time.
pub const ROWS_PER_READ: usize = 256;
/// Colour of unchanged pixels in the change raster's colour table.
pub const UNCHANGED_RGB: [u8; 3] = [217, 217, 217];
/// Colour of a class no legend names.
const GREY: [u8; 3] = [128, 128, 128];

/// The exact from→to pixel counts of two class rasters on one grid (a 256 × 256 table of counts,
/// indexed by the earlier class, then the later one), and the pixels that are nodata in either.
#[derive(Clone, PartialEq, Eq)]
pub struct Transitions {
    counts: Vec<u64>,
    nodata: u64,
}

impl std::fmt::Debug for Transitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<(u8, u8, u64)> = self.pairs().collect();
        f.debug_struct("Transitions")
            .field("pairs", &pairs)
            .field("nodata", &self.nodata)
            .finish()
    }
}

impl Default for Transitions {
    fn default() -> Self {
        Self::new()
    }
}

impl Transitions {
    /// No pixel counted yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            counts: vec![0; 256 * 256],
            nodata: 0,
        }
    }

    /// Counts the pixels of one strip: `from[i]` → `to[i]`; a pixel equal to its map's nodata in
    /// either counts as nodata only.
    pub fn add(&mut self, from: &[u8], to: &[u8], nodata_from: Option<u8>, nodata_to: Option<u8>) {
        for (&a, &b) in from.iter().zip(to) {
            if Some(a) == nodata_from || Some(b) == nodata_to {
                self.nodata += 1;
            } else {
                self.counts[usize::from(a) * 256 + usize::from(b)] += 1;
            }
        }
    }

    /// Pixels of class `from` in the earlier map and `to` in the later one.
    #[must_use]
    pub fn count(&self, from: u8, to: u8) -> u64 {
        self.counts[usize::from(from) * 256 + usize::from(to)]
    }

    /// Pixels that are nodata in either map.
    #[must_use]
    pub fn nodata(&self) -> u64 {
        self.nodata
    }

    /// Pixels with a class in both maps.
    #[must_use]
    pub fn valid(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Every pair with pixels: `(from, to, pixels)`, by `from` then `to`.
    pub fn pairs(&self) -> impl Iterator<Item = (u8, u8, u64)> + '_ {
        self.counts.iter().enumerate().filter_map(|(i, &n)| {
            let from = u8::try_from(i / 256).ok()?;
            let to = u8::try_from(i % 256).ok()?;
            (n > 0).then_some((from, to, n))
        })
    }

    /// The classes of `order` followed by every other class with pixels in either map, ascending.
    #[must_use]
    pub fn classes(&self, order: &[u8]) -> Vec<u8> {
        let mut classes: Vec<u8> = Vec::new();
        for &c in order {
            if !classes.contains(&c) {
                classes.push(c);
            }
        }
        let mut seen: Vec<u8> = self.pairs().flat_map(|(a, b, _)| [a, b]).collect();
        seen.sort_unstable();
        seen.dedup();
        for c in seen {
            if !classes.contains(&c) {
                classes.push(c);
            }
        }
        classes
    }

    /// The count matrix over `classes`: `matrix[i][j]` pixels went from `classes[i]` to `classes[j]`.
    #[must_use]
    pub fn matrix(&self, classes: &[u8]) -> Vec<Vec<u64>> {
        classes
            .iter()
            .map(|&a| classes.iter().map(|&b| self.count(a, b)).collect())
            .collect()
    }

    /// The pairs that changed class and have pixels, numbered from 1 in the order of `classes` (by the
    /// earlier class, then the later one): the codes of the change raster.
    #[must_use]
    pub fn changed_pairs(&self, classes: &[u8]) -> Vec<ChangePair> {
        let mut pairs = Vec::new();
        for &from in classes {
            for &to in classes {
                let pixels = self.count(from, to);
                if from != to && pixels > 0 {
                    pairs.push(ChangePair {
                        code: u16::try_from(pairs.len() + 1).unwrap_or(CHANGE_NODATA - 1),
                        from,
                        to,
                        pixels,
                    });
                }
            }
        }
        pairs
    }
}

/// A from→to pair of classes that occurs in a change map, with its code in the change raster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangePair {
    /// Pixel value of the pair in the change raster (1, 2, …).
    pub code: u16,
    /// Class in the earlier map.
    pub from: u8,
    /// Class in the later map.
    pub to: u8,
    /// Pixels that changed this way.
    pub pixels: u64,
}

/// The table from a pixel's `(from, to)` (index `from · 256 + to`) to its code in the change raster:
/// [`UNCHANGED`] on the diagonal, the pair's code where it changed.
#[must_use]
pub fn code_table(pairs: &[ChangePair]) -> Vec<u16> {
    let mut table = vec![UNCHANGED; 256 * 256];
    for p in pairs {
        table[usize::from(p.from) * 256 + usize::from(p.to)] = p.code;
    }
    table
}

/// Encodes one strip of the change raster from the two maps' pixels.
pub fn encode(
    from: &[u8],
    to: &[u8],
    (nodata_from, nodata_to): (Option<u8>, Option<u8>),
    table: &[u16],
    out: &mut [u16],
) {
    for ((o, &a), &b) in out.iter_mut().zip(from).zip(to) {
        *o = if Some(a) == nodata_from || Some(b) == nodata_to {
            CHANGE_NODATA
        } else {
            table[usize::from(a) * 256 + usize::from(b)]
        };
    }
}

/// What [`change_map`] found and wrote.
#[derive(Debug, Clone)]
pub struct ChangeSummary {
    /// The classes of the matrix's rows and columns: the legend's order, then any other class seen.
    pub classes: Vec<u8>,
    /// `matrix[i][j]`: pixels of `classes[i]` in the earlier map and `classes[j]` in the later one.
    pub matrix: Vec<Vec<u64>>,
    /// The pairs that changed, with their codes in the change raster.
    pub pairs: Vec<ChangePair>,
    /// Pixels of the grid that are nodata in either map.
    pub nodata_pixels: u64,
    /// Area of one pixel of the earlier map's grid, m².
    pub pixel_area_m2: f64,
    /// CRS of the grid.
    pub epsg: u32,
    /// Width of the grid.
    pub width: usize,
    /// Height of the grid.
    pub height: usize,
    /// Whether the later map was resampled onto the earlier map's grid.
    pub resampled: bool,
}

/// Why a change map could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// A map has more pixels than a change map may compare; nothing was read.
    #[error("{0}")]
    TooLarge(String),
    /// Reading the rasters or writing the change map failed.
    #[error(transparent)]
    Imagery(#[from] Error),
}

/// A class raster opened for reading.
struct ClassBand {
    ds: Dataset,
    gt: [f64; 6],
    size: (usize, usize),
    nodata: Option<u8>,
    epsg: u32,
}

impl ClassBand {
    fn open(path: &Path) -> Result<Self> {
        let ds = Dataset::open(path).map_err(Error::gdal(format!("opening {}", path.display())))?;
        let gt = ds.geo_transform().map_err(Error::gdal(format!(
            "reading the geotransform of {}",
            path.display()
        )))?;
        let size = ds.raster_size();
        let nodata = ds
            .rasterband(1)
            .map_err(Error::gdal("opening the class band"))?
            .no_data_value()
            .and_then(|v| (0.0..=255.0).contains(&v).then_some(v as u8));
        let epsg = ds
            .spatial_ref()
            .ok()
            .and_then(|s| s.auth_code().ok())
            .and_then(|c| u32::try_from(c).ok())
            .ok_or_else(|| Error::InvalidRequest(format!("{} has no EPSG code", path.display())))?;
        Ok(Self {
            ds,
            gt,
            size,
            nodata,
            epsg,
        })
    }

    fn pixels(&self) -> u64 {
        self.size.0 as u64 * self.size.1 as u64
    }

    /// Whether `other` lies on exactly this grid.
    fn same_grid(&self, other: &Self) -> bool {
        self.epsg == other.epsg
            && self.size == other.size
            && self
                .gt
                .iter()
                .zip(&other.gt)
                .all(|(a, b)| (a - b).abs() <= 1e-6 * a.abs().max(1.0))
    }

    /// Rows `row..row + rows` of band 1.
    fn strip(&self, row: usize, rows: usize) -> Result<Vec<u8>> {
        let w = self.size.0;
        let band = self
            .ds
            .rasterband(1)
            .map_err(Error::gdal("opening the class band"))?;
        let buf = band
            .read_as::<u8>(
                (0, isize::try_from(row).unwrap_or(isize::MAX)),
                (w, rows),
                (w, rows),
                None,
            )
            .map_err(Error::gdal("reading a class raster"))?;
        Ok(buf.into_shape_and_vec().1)
    }
}

/// A file removed when dropped (the temporary rasters).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `dst` with `suffix` appended to its name.
fn beside(dst: &Path, suffix: &str) -> PathBuf {
    let mut name = dst.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dst.with_file_name(name)
}

/// An empty tiled GeoTIFF on `grid`'s grid with one band of `T`, `nodata` set and every pixel nodata.
fn blank_like<T: gdal::raster::GdalType>(
    path: &Path,
    grid: &ClassBand,
    nodata: f64,
) -> Result<Dataset> {
    let op = |what: &str| Error::gdal(format!("{what} {}", path.display()));
    let gtiff = DriverManager::get_driver_by_name("GTiff").map_err(op("loading GTiff for"))?;
    let opts = RasterCreationOptions::from_iter([
        "TILED=YES",
        "BLOCKXSIZE=256",
        "BLOCKYSIZE=256",
        "COMPRESS=DEFLATE",
        "BIGTIFF=IF_SAFER",
    ]);
    let (w, h) = grid.size;
    let mut ds = gtiff
        .create_with_band_type_with_options::<T, _>(path, w, h, 1, &opts)
        .map_err(op("creating"))?;
    ds.set_geo_transform(&grid.gt)
        .map_err(op("setting the geotransform of"))?;
    ds.set_spatial_ref(&crate::grid::srs(grid.epsg)?)
        .map_err(op("setting the CRS of"))?;
    {
        let mut band = ds.rasterband(1).map_err(op("opening the band of"))?;
        band.set_no_data_value(Some(nodata))
            .map_err(op("setting nodata of"))?;
        band.fill(nodata, None).map_err(op("filling"))?;
    }
    Ok(ds)
}

/// `src` resampled onto `grid`'s grid (nearest neighbour, GDAL's warper), written to `path`; pixels
/// outside `src` are `src`'s nodata (255 when it declares none).
fn resample_onto(src: &ClassBand, grid: &ClassBand, path: &Path) -> Result<ClassBand> {
    let nodata = src.nodata.unwrap_or(crate::publish::NODATA_U8);
    let dst = blank_like::<u8>(path, grid, f64::from(nodata))?;
    #[expect(
        unsafe_code,
        reason = "the gdal crate's reproject() is bilinear only; class ids need nearest neighbour"
    )]
    // SAFETY: both handles are open datasets that outlive the call; null WKTs take each dataset's own
    // CRS; no progress callback and no warp options are passed (GDAL then reads the source and
    // destination nodata values from the bands).
    let rc = unsafe {
        gdal_sys::GDALReprojectImage(
            src.ds.c_dataset(),
            std::ptr::null(),
            dst.c_dataset(),
            std::ptr::null(),
            gdal_sys::GDALResampleAlg::GRA_NearestNeighbour,
            0.0,
            0.0,
            None,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if rc != gdal_sys::CPLErr::CE_None {
        return Err(Error::InvalidRequest(
            "GDAL could not resample the later map onto the earlier map's grid".into(),
        ));
    }
    drop(dst);
    let mut band = ClassBand::open(path)?;
    band.nodata = Some(nodata);
    Ok(band)
}

/// Compares the class map `from` (earlier) with `to` (later) on `from`'s grid and writes the change
/// raster as a COG at `dst` (see the module documentation for its encoding). `legend` gives the order
/// of the classes (other classes seen follow, ascending) and the colours of the changes. Refuses
/// ([`ChangeError::TooLarge`]) a map of more than `max_pixels` pixels before reading any pixel.
/// Temporary rasters are written beside `dst` and removed.
pub fn change_map(
    from: &Path,
    to: &Path,
    dst: &Path,
    legend: &[LegendClass],
    max_pixels: u64,
) -> Result<ChangeSummary, ChangeError> {
    let a = ClassBand::open(from)?;
    let b = ClassBand::open(to)?;
    for (map, band) in [("earlier", &a), ("later", &b)] {
        if band.pixels() > max_pixels {
            return Err(ChangeError::TooLarge(format!(
                "the {map} map has {} pixels, more than a change map compares ({max_pixels})",
                band.pixels()
            )));
        }
    }
    let resampled = !a.same_grid(&b);
    let resampled_path = TempFile(beside(dst, ".later-on-grid.tif"));
    let b = if resampled {
        resample_onto(&b, &a, &resampled_path.0)?
    } else {
        b
    };
    let (w, h) = a.size;
    let nodata = (a.nodata, b.nodata);

    // First pass: the exact counts of every pair.
    let mut t = Transitions::new();
    let mut row = 0;
    while row < h {
        let rows = ROWS_PER_READ.min(h - row);
        t.add(
            &a.strip(row, rows)?,
            &b.strip(row, rows)?,
            nodata.0,
            nodata.1,
        );
        row += rows;
    }
    let order: Vec<u8> = legend.iter().map(|c| c.id).collect();
    let classes = t.classes(&order);
    let pairs = t.changed_pairs(&classes);
    let table = code_table(&pairs);

    // Second pass: the codes, into a tiled GeoTIFF, then copied as a COG.
    let codes_path = TempFile(beside(dst, ".codes.tif"));
    {
        let mut ds = blank_like::<u16>(&codes_path.0, &a, f64::from(CHANGE_NODATA))?;
        let encoded = serde_json::to_string(
            &pairs
                .iter()
                .map(|p| serde_json::json!({"code": p.code, "from": p.from, "to": p.to}))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| Error::Encode {
            what: "the change pairs".into(),
            reason: e.to_string(),
        })?;
        ds.set_metadata_item("GROUNDWORK_CHANGE_PAIRS", &encoded, "")
            .map_err(Error::gdal("writing the change pairs"))?;
        let mut band = ds
            .rasterband(1)
            .map_err(Error::gdal("opening the change band"))?;
        band.set_description(
            "change: 0 unchanged, k = the k-th from-to pair of GROUNDWORK_CHANGE_PAIRS, 65535 nodata",
        )
        .map_err(Error::gdal("describing the change band"))?;
        band.set_color_table(&palette(&pairs, legend));
        band.set_color_interpretation(gdal::raster::ColorInterpretation::PaletteIndex)
            .map_err(Error::gdal("marking the change band as paletted"))?;
        let mut out = Vec::new();
        let mut row = 0;
        while row < h {
            let rows = ROWS_PER_READ.min(h - row);
            out.resize(w * rows, CHANGE_NODATA);
            encode(
                &a.strip(row, rows)?,
                &b.strip(row, rows)?,
                nodata,
                &table,
                &mut out,
            );
            let mut buf = Buffer::new((w, rows), std::mem::take(&mut out));
            band.write(
                (0, isize::try_from(row).unwrap_or(isize::MAX)),
                (w, rows),
                &mut buf,
            )
            .map_err(Error::gdal("writing the change raster"))?;
            out = buf.into_shape_and_vec().1;
            row += rows;
        }
    }
    let codes = Dataset::open(&codes_path.0).map_err(Error::gdal("reopening the change raster"))?;
    crate::publish::cog_copy(&codes, dst, &["OVERVIEW_RESAMPLING=NEAREST"])?;
    Ok(ChangeSummary {
        matrix: t.matrix(&classes),
        classes,
        pairs,
        nodata_pixels: t.nodata(),
        pixel_area_m2: (a.gt[1] * a.gt[5] - a.gt[2] * a.gt[4]).abs(),
        epsg: a.epsg,
        width: w,
        height: h,
        resampled,
    })
}

/// The change raster's colours: unchanged pale grey, each change the colour of the class it became.
fn palette(pairs: &[ChangePair], legend: &[LegendClass]) -> ColorTable<'static> {
    let mut ct = ColorTable::new(PaletteInterpretation::Rgba);
    let rgba = |[r, g, b]: [u8; 3]| ColorEntry::rgba(i16::from(r), i16::from(g), i16::from(b), 255);
    ct.set_color_entry(UNCHANGED, &rgba(UNCHANGED_RGB));
    for p in pairs {
        let color = legend
            .iter()
            .find(|c| c.id == p.to)
            .map_or(GREY, LegendClass::rgb);
        ct.set_color_entry(p.code, &rgba(color));
    }
    ct
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODATA: u8 = 255;

    fn legend() -> Vec<LegendClass> {
        [
            (1, "forest", "#00aa00"),
            (2, "cropland", "#ffcc00"),
            (3, "water", "#0000ff"),
        ]
        .into_iter()
        .map(|(id, name, color)| LegendClass {
            id,
            name: name.into(),
            color: color.into(),
        })
        .collect()
    }

    #[test]
    fn transitions_count_every_pair_and_leave_out_nodata_of_either_map() {
        let from = [1, 1, 1, 2, 2, NODATA, 3, 1];
        let to = [1, 2, 2, 2, 1, 1, NODATA, 3];
        let mut t = Transitions::new();
        t.add(&from, &to, Some(NODATA), Some(NODATA));
        assert_eq!(t.count(1, 1), 1);
        assert_eq!(t.count(1, 2), 2);
        assert_eq!(t.count(2, 2), 1);
        assert_eq!(t.count(2, 1), 1);
        assert_eq!(t.count(1, 3), 1);
        assert_eq!(t.nodata(), 2);
        assert_eq!(t.valid(), 6);
        // The legend's order first (class 3 has pixels only in a nodata pair of the later map, and
        // as the later class of 1 → 3); then classes no legend names, ascending.
        assert_eq!(t.classes(&[2, 1]), vec![2, 1, 3]);
        let m = t.matrix(&[1, 2, 3]);
        assert_eq!(m, vec![vec![1, 2, 1], vec![1, 1, 0], vec![0, 0, 0]]);
        // Each class's net change is its column total minus its row total.
        let net =
            |i: usize| m.iter().map(|r| r[i]).sum::<u64>() as i64 - m[i].iter().sum::<u64>() as i64;
        assert_eq!((net(0), net(1), net(2)), (-2, 1, 1));
        let pairs = t.changed_pairs(&[1, 2, 3]);
        let listed: Vec<(u16, u8, u8, u64)> = pairs
            .iter()
            .map(|p| (p.code, p.from, p.to, p.pixels))
            .collect();
        assert_eq!(listed, vec![(1, 1, 2, 2), (2, 1, 3, 1), (3, 2, 1, 1)]);
        let table = code_table(&pairs);
        let mut out = [0u16; 8];
        encode(&from, &to, (Some(NODATA), Some(NODATA)), &table, &mut out);
        assert_eq!(out, [0, 1, 1, 0, 3, CHANGE_NODATA, CHANGE_NODATA, 2]);
    }

    #[test]
    fn a_map_without_nodata_counts_every_pixel() {
        let mut t = Transitions::new();
        t.add(&[255, 0], &[255, 7], None, None);
        assert_eq!((t.count(255, 255), t.count(0, 7), t.nodata()), (1, 1, 0));
    }

    fn write(dir: &Path, name: &str, data: &[u8], w: usize, gt: [f64; 6], epsg: u32) -> PathBuf {
        let path = dir.join(name);
        crate::demo::write_cog::<u8>(
            &path,
            data,
            w,
            data.len() / w,
            gt,
            epsg,
            Some(f64::from(NODATA)),
        )
        .expect("a COG");
        path
    }

    /// Reads the whole change raster back.
    fn codes(path: &Path) -> (Vec<u16>, (usize, usize), Dataset) {
        let ds = Dataset::open(path).expect("the change COG");
        let size = ds.raster_size();
        let data = ds
            .rasterband(1)
            .and_then(|b| b.read_as::<u16>((0, 0), size, size, None))
            .expect("pixels")
            .into_shape_and_vec()
            .1;
        (data, size, ds)
    }

    #[test]
    fn a_change_map_counts_exact_pixels_and_writes_the_codes_on_the_earlier_grid() {
        let dir = tempfile::tempdir().expect("a folder");
        // 300 × 300 (more than one strip): the earlier map is forest left of column 200, cropland
        // right of it; the later map is cropland from column 150, water in rows 0–9; the first row of
        // the earlier map and the last column of the later one are nodata.
        let n = 300;
        let gt = [500_000.0, 10.0, 0.0, 5_000_000.0, 0.0, -10.0];
        let earlier: Vec<u8> = (0..n * n)
            .map(|i| match (i / n, i % n) {
                (0, _) => NODATA,
                (_, c) if c < 200 => 1,
                _ => 2,
            })
            .collect();
        let later: Vec<u8> = (0..n * n)
            .map(|i| match (i / n, i % n) {
                (_, c) if c == n - 1 => NODATA,
                (r, _) if r < 10 => 3,
                (_, c) if c < 150 => 1,
                _ => 2,
            })
            .collect();
        let a = write(dir.path(), "a.tif", &earlier, n, gt, 32633);
        let b = write(dir.path(), "b.tif", &later, n, gt, 32633);
        let dst = dir.path().join("change.tif");
        let s = change_map(&a, &b, &dst, &legend(), 1_000_000).expect("a change map");
        assert!(!s.resampled);
        assert_eq!(s.classes, vec![1, 2, 3]);
        assert!((s.pixel_area_m2 - 100.0).abs() < 1e-9);
        assert_eq!((s.width, s.height, s.epsg), (n, n, 32633));
        // The exact counts, by brute force.
        let mut expected = Transitions::new();
        expected.add(&earlier, &later, Some(NODATA), Some(NODATA));
        assert_eq!(s.matrix, expected.matrix(&[1, 2, 3]));
        assert_eq!(s.nodata_pixels, (n + n - 1) as u64);
        assert_eq!(
            s.matrix[0][1],
            290 * 50,
            "forest → cropland: rows 10–299, columns 150–199"
        );
        // The raster holds each pixel's code; nodata where either map has none.
        let (data, size, ds) = codes(&dst);
        assert_eq!(size, (n, n));
        assert_eq!(ds.geo_transform().expect("a geotransform"), gt);
        let table = code_table(&s.pairs);
        let mut want = vec![0u16; n * n];
        encode(
            &earlier,
            &later,
            (Some(NODATA), Some(NODATA)),
            &table,
            &mut want,
        );
        assert_eq!(data, want);
        let code = |from: u8, to: u8| {
            s.pairs
                .iter()
                .find(|p| p.from == from && p.to == to)
                .map(|p| p.code)
        };
        assert_eq!(data[5 * n + 250], code(2, 3).expect("cropland → water"));
        assert_eq!(data[100 * n + 170], code(1, 2).expect("forest → cropland"));
        assert_eq!(data[100 * n + 10], UNCHANGED);
        assert_eq!(data[10], CHANGE_NODATA);
        let band = ds.rasterband(1).expect("the band");
        assert_eq!(band.no_data_value(), Some(f64::from(CHANGE_NODATA)));
        let ct = band.color_table().expect("a colour table");
        let c = ct
            .entry_as_rgb(usize::from(code(1, 2).expect("a code")))
            .expect("an entry");
        assert_eq!((c.r, c.g, c.b), (255, 204, 0), "the colour of cropland");
        let pairs = ds
            .metadata_item("GROUNDWORK_CHANGE_PAIRS", "")
            .expect("the pairs in the metadata");
        assert!(pairs.contains("\"from\":1,\"to\":2"), "{pairs}");
        // No temporary raster is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("the folder")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
    }

    #[test]
    fn a_later_map_on_another_grid_is_resampled_onto_the_earlier_one() {
        let dir = tempfile::tempdir().expect("a folder");
        // The earlier map: 40 × 30 pixels of 10 m, class = 1 + column / 20. The later map lies 5
        // pixels east and 3 south of it and is 50 × 50: class 2 everywhere but a class-3 block.
        let (w, h) = (40, 30);
        let gt_a = [500_000.0, 10.0, 0.0, 5_000_000.0, 0.0, -10.0];
        let earlier: Vec<u8> = (0..w * h).map(|i| 1 + u8::from(i % w >= 20)).collect();
        let (bw, bh) = (50, 50);
        let gt_b = [500_050.0, 10.0, 0.0, 4_999_970.0, 0.0, -10.0];
        let later: Vec<u8> = (0..bw * bh)
            .map(|i| if i / bw < 10 && i % bw < 10 { 3 } else { 2 })
            .collect();
        let a = write(dir.path(), "a.tif", &earlier, w, gt_a, 32633);
        let b = write(dir.path(), "b.tif", &later, bw, gt_b, 32633);
        let dst = dir.path().join("change.tif");
        let s = change_map(&a, &b, &dst, &legend(), 1_000_000).expect("a change map");
        assert!(s.resampled);
        assert_eq!((s.width, s.height), (w, h));
        // What nearest neighbour gives: the later pixel whose cell holds the earlier pixel's centre.
        let mut on_grid = vec![NODATA; w * h];
        for r in 0..h {
            for c in 0..w {
                if let (Some(br), Some(bc)) = (r.checked_sub(3), c.checked_sub(5)) {
                    on_grid[r * w + c] = later[br * bw + bc];
                }
            }
        }
        let mut expected = Transitions::new();
        expected.add(&earlier, &on_grid, Some(NODATA), Some(NODATA));
        assert_eq!(s.matrix, expected.matrix(&s.classes));
        assert_eq!(s.nodata_pixels, (w * h - (w - 5) * (h - 3)) as u64);
        assert_eq!(s.matrix[0][2], 10 * 10, "forest → water");
        // Too many pixels: refused before any is read.
        let refused = change_map(&a, &b, &dst, &legend(), 2000);
        assert!(
            matches!(refused, Err(ChangeError::TooLarge(_))),
            "{refused:?}"
        );
    }
}
