//! z/x/y map tiles (256², PNG) rendered from a `GoogleMapsCompatible` COG in EPSG:3857.
//!
//! A tile's square in web-mercator metres is mapped onto the COG's pixel grid; GDAL reads the window
//! (from the overview that matches the zoom when zoomed out), and each pixel is coloured: class rasters
//! through the legend, probabilities and values through a colour ramp. Nodata and pixels outside the
//! raster are transparent.

use std::path::Path;

use gdal::Dataset;
use gdal::raster::ResampleAlg;

use crate::error::{Error, Result};
use crate::publish::{MERCATOR_ORIGIN, NODATA_U8};

/// Tile side in pixels.
pub const TILE_SIZE: usize = 256;

/// How raster values become colours.
#[derive(Debug, Clone, PartialEq)]
pub enum TileStyle {
    /// Raster value → RGB; values without an entry are transparent.
    Classes(Vec<(u8, [u8; 3])>),
    /// A colour ramp from `min` to `max` over one band (1-based); `nodata` values are transparent.
    Ramp {
        /// Band to show.
        band: usize,
        /// Value shown at the low end.
        min: f32,
        /// Value shown at the high end.
        max: f32,
        /// Transparent value (NaN is always transparent).
        nodata: Option<f32>,
    },
}

/// `[minx, miny, maxx, maxy]` of tile z/x/y in EPSG:3857 metres; `None` for an invalid tile address.
#[must_use]
pub fn tile_bounds(z: u8, x: u32, y: u32) -> Option<[f64; 4]> {
    if z > 30 {
        return None;
    }
    let n = 1u64 << z;
    if u64::from(x) >= n || u64::from(y) >= n {
        return None;
    }
    let size = 2.0 * MERCATOR_ORIGIN / n as f64;
    let minx = -MERCATOR_ORIGIN + f64::from(x) * size;
    let maxy = MERCATOR_ORIGIN - f64::from(y) * size;
    Some([minx, maxy - size, minx + size, maxy])
}

/// The tile containing a lon/lat point at zoom `z`.
#[must_use]
pub fn tile_of(lon: f64, lat: f64, z: u8) -> (u32, u32) {
    let n = f64::from(1u32 << z.min(30));
    let x = ((lon + 180.0) / 360.0 * n).floor();
    let lat_r = lat.to_radians();
    let y =
        ((1.0 - (lat_r.tan() + 1.0 / lat_r.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor();
    (x.clamp(0.0, n - 1.0) as u32, y.clamp(0.0, n - 1.0) as u32)
}

/// Viridis at 9 stops, interpolated linearly.
const RAMP: [[u8; 3]; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];

/// The ramp colour at `t` in [0, 1].
#[must_use]
pub fn ramp(t: f32) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let f = t * (RAMP.len() - 1) as f32;
    let i = (f.floor() as usize).min(RAMP.len() - 2);
    let w = f - i as f32;
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let a = f32::from(RAMP[i][c]);
        let b = f32::from(RAMP[i + 1][c]);
        *o = (a + (b - a) * w).round() as u8;
    }
    out
}

/// Renders tile z/x/y as RGBA (256 × 256 × 4); `None` when the tile misses the raster entirely.
pub fn render_tile_rgba(
    path: &Path,
    z: u8,
    x: u32,
    y: u32,
    style: &TileStyle,
) -> Result<Option<Vec<u8>>> {
    let Some(b) = tile_bounds(z, x, y) else {
        return Err(Error::InvalidRequest(format!(
            "tile {z}/{x}/{y} does not exist"
        )));
    };
    let ds = Dataset::open(path).map_err(Error::gdal(format!("opening {}", path.display())))?;
    let gt = ds
        .geo_transform()
        .map_err(Error::gdal("reading the geotransform"))?;
    let (w, h) = ds.raster_size();
    let band_index = match style {
        TileStyle::Classes(_) => 1,
        TileStyle::Ramp { band, .. } => *band,
    };
    if band_index == 0 || band_index > ds.raster_count() {
        return Err(Error::InvalidRequest(format!(
            "band {band_index} does not exist (the raster has {})",
            ds.raster_count()
        )));
    }
    let band = ds
        .rasterband(band_index)
        .map_err(Error::gdal("opening a band"))?;
    let nodata = band.no_data_value();
    // The tile's square in (fractional) source pixels. A raster on the tile grid gives whole numbers
    // up to floating-point error; snapped, its 256 pixels are read as 256, not 257 squeezed into 256.
    let snap = |v: f64| {
        if (v - v.round()).abs() < 1e-6 {
            v.round()
        } else {
            v
        }
    };
    let px0 = snap((b[0] - gt[0]) / gt[1]);
    let py0 = snap((b[3] - gt[3]) / gt[5]);
    let pw = snap((b[2] - gt[0]) / gt[1]) - px0;
    let ph = snap((b[1] - gt[3]) / gt[5]) - py0;
    let sx0 = px0.max(0.0);
    let sy0 = py0.max(0.0);
    let sx1 = (px0 + pw).min(w as f64);
    let sy1 = (py0 + ph).min(h as f64);
    if sx1 <= sx0 || sy1 <= sy0 {
        return Ok(None);
    }
    let t = TILE_SIZE as f64;
    let ox0 = ((sx0 - px0) / pw * t).floor().max(0.0) as usize;
    let oy0 = ((sy0 - py0) / ph * t).floor().max(0.0) as usize;
    let ox1 = (((sx1 - px0) / pw * t).ceil() as usize).min(TILE_SIZE);
    let oy1 = (((sy1 - py0) / ph * t).ceil() as usize).min(TILE_SIZE);
    let (ix0, iy0) = (sx0.floor() as usize, sy0.floor() as usize);
    let (ix1, iy1) = ((sx1.ceil() as usize).min(w), (sy1.ceil() as usize).min(h));
    let (iw, ih) = (ix1 - ix0, iy1 - iy0);
    if iw == 0 || ih == 0 || ox1 <= ox0 || oy1 <= oy0 {
        return Ok(None);
    }
    // Zoomed out by 2× or more: let GDAL decimate (it reads the matching overview); otherwise read
    // native pixels and sample their centres, so each tile pixel is one source pixel.
    let decimate = |n: usize, out: usize| if n >= 2 * out { out.max(1) } else { n.max(1) };
    let (bw, bh) = (decimate(iw, ox1 - ox0), decimate(ih, oy1 - oy0));
    let buf = band
        .read_as::<f32>(
            (ix0 as isize, iy0 as isize),
            (iw, ih),
            (bw, bh),
            Some(ResampleAlg::NearestNeighbour),
        )
        .map_err(Error::gdal(format!("reading tile {z}/{x}/{y}")))?;
    let data = buf.data();
    let mut rgba = vec![0u8; TILE_SIZE * TILE_SIZE * 4];
    let nodata = nodata.map(|v| v as f32);
    for v in oy0..oy1 {
        let sy = py0 + (v as f64 + 0.5) / t * ph;
        if sy < iy0 as f64 || sy >= iy1 as f64 {
            continue;
        }
        let by = (((sy - iy0 as f64) / ih as f64 * bh as f64) as usize).min(bh - 1);
        for u in ox0..ox1 {
            let sx = px0 + (u as f64 + 0.5) / t * pw;
            if sx < ix0 as f64 || sx >= ix1 as f64 {
                continue;
            }
            let bx = (((sx - ix0 as f64) / iw as f64 * bw as f64) as usize).min(bw - 1);
            let value = data[by * bw + bx];
            if value.is_nan() || nodata.is_some_and(|n| n == value) {
                continue;
            }
            let colour = match style {
                TileStyle::Classes(table) => {
                    let id = value.round();
                    if !(0.0..255.0).contains(&id) || id as u8 == NODATA_U8 {
                        continue;
                    }
                    match table.iter().find(|(k, _)| *k == id as u8) {
                        Some((_, rgb)) => *rgb,
                        None => continue,
                    }
                }
                TileStyle::Ramp {
                    min,
                    max,
                    nodata: nd,
                    ..
                } => {
                    if nd.is_some_and(|n| n == value) {
                        continue;
                    }
                    let span = max - min;
                    let t = if span > 0.0 {
                        (value - min) / span
                    } else {
                        0.5
                    };
                    ramp(t)
                }
            };
            let o = (v * TILE_SIZE + u) * 4;
            rgba[o..o + 3].copy_from_slice(&colour);
            rgba[o + 3] = 255;
        }
    }
    Ok(Some(rgba))
}

/// Encodes RGBA pixels as a PNG.
pub fn encode_png(rgba: &[u8], width: usize, height: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let err = |e: png::EncodingError| Error::Encode {
        what: "a PNG tile".into(),
        reason: e.to_string(),
    };
    {
        let mut enc = png::Encoder::new(
            &mut out,
            u32::try_from(width).unwrap_or(0),
            u32::try_from(height).unwrap_or(0),
        );
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(rgba).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

/// A fully transparent 256² PNG.
pub fn transparent_png() -> Result<Vec<u8>> {
    encode_png(&vec![0u8; TILE_SIZE * TILE_SIZE * 4], TILE_SIZE, TILE_SIZE)
}

/// Renders tile z/x/y as PNG; a transparent tile when it misses the raster.
pub fn render_tile_png(path: &Path, z: u8, x: u32, y: u32, style: &TileStyle) -> Result<Vec<u8>> {
    match render_tile_rgba(path, z, x, y, style)? {
        Some(rgba) => encode_png(&rgba, TILE_SIZE, TILE_SIZE),
        None => transparent_png(),
    }
}
