//! Browsable previews of acquired imagery: web-mercator z/x/y map tiles (256², RGBA) drawn from window
//! tensors.
//!
//! A window's tensor holds raw values `(H, W, T, C)` on its UTM grid (see [`crate::output`]). A preview
//! first colours one time step of one window with a [`Rendering`] ([`window_image`],
//! [`window_image_from_safetensors`]: a [`WindowImage`], RGBA on the window's grid, small enough to
//! keep in memory), then a tile is drawn from the images of the windows it touches ([`render_tile`]):
//! each tile pixel's centre is taken to longitude/latitude (inverse spherical mercator), projected into
//! each window's UTM zone with GDAL (one batch per zone) and given the colour of the window pixel it
//! falls in (nearest neighbour). Pixels no window covers, and window pixels without data, are
//! transparent.
//!
//! # Colour
//!
//! Each output channel is one band (or, for radar, a difference of two bands in dB) stretched linearly
//! from a fixed `min` to a fixed `max` and then brightened with a gamma: `255 · t^(1/gamma)` where
//! `t = clamp((v − min) / (max − min), 0, 1)`. Fixed ranges (not per-tile statistics) keep neighbouring
//! tiles and time steps comparable.
//!
//! - Sentinel-2 L2A (digital numbers, reflectance × 10 000): `true_color` = B04, B03, B02 over
//!   0–[`S2_VISIBLE_MAX`]; `false_color` = B08 (NIR) over 0–[`S2_NIR_MAX`], B04, B03 over
//!   0–[`S2_VISIBLE_MAX`]; gamma [`REFLECTANCE_GAMMA`]. Vegetation is red in false colour, water dark.
//! - Landsat 8/9 (Collection 2 Level-2 digital numbers, reflectance = DN × 0.0000275 − 0.2):
//!   `true_color` = B4, B3, B2 and `false_color` = B5 (NIR), B4, B3, over reflectance 0–0.3
//!   (visible, DN [`LANDSAT_DN_MIN`]–[`LANDSAT_VISIBLE_MAX`]) and 0–0.5 (NIR, to
//!   [`LANDSAT_NIR_MAX`]); gamma [`REFLECTANCE_GAMMA`].
//! - Sentinel-1 (backscatter in dB, as the acquisition writes it): `vv_vh` = VV over −25–0 dB, VH over
//!   −30 to −5 dB, and VV/VH (VV − VH in dB) over 0–15 dB; no gamma (dB is already logarithmic).
//!
//! A pixel is transparent when the mask marks a band set it uses missing, when a band it uses is not
//! finite, or when every band it uses is exactly 0 (what the composite writes where it had no
//! observation).

use std::collections::BTreeMap;

use safetensors::tensor::Dtype;

use crate::composite::MASK_PRESENT;
use crate::error::{Error, Result};
use crate::modality::Modality;
use crate::publish::MERCATOR_ORIGIN;
use crate::tiles::{TILE_SIZE, encode_png, tile_bounds};

/// Upper end of the Sentinel-2 visible stretch (DN; reflectance 0.3).
pub const S2_VISIBLE_MAX: f32 = 3000.0;
/// Upper end of the Sentinel-2 near-infrared stretch (DN; reflectance 0.5).
pub const S2_NIR_MAX: f32 = 5000.0;
/// Landsat Collection 2 Level-2 DN of reflectance 0 (`0.2 / 0.0000275`).
pub const LANDSAT_DN_MIN: f32 = 7273.0;
/// Upper end of the Landsat visible stretch (DN of reflectance 0.3).
pub const LANDSAT_VISIBLE_MAX: f32 = 18182.0;
/// Upper end of the Landsat near-infrared stretch (DN of reflectance 0.5).
pub const LANDSAT_NIR_MAX: f32 = 25455.0;
/// Gamma of the reflectance renderings (brightens the dark end, where most land and water lie).
pub const REFLECTANCE_GAMMA: f32 = 1.5;

/// How a window's bands become colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rendering {
    /// Red, green, blue: what the eye would see.
    TrueColor,
    /// Near-infrared, red, green: vegetation red, water dark.
    FalseColor,
    /// Sentinel-1 VV, VH and VV/VH as red, green, blue.
    VvVh,
}

impl Rendering {
    /// Every rendering.
    pub const ALL: &'static [Rendering] =
        &[Rendering::TrueColor, Rendering::FalseColor, Rendering::VvVh];

    /// The rendering's name in URLs (`true_color`, `false_color`, `vv_vh`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Rendering::TrueColor => "true_color",
            Rendering::FalseColor => "false_color",
            Rendering::VvVh => "vv_vh",
        }
    }

    /// The rendering of a name; `None` for an unknown one.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Rendering> {
        Rendering::ALL.iter().copied().find(|r| r.name() == name)
    }

    /// The renderings a modality has, the first being the default.
    #[must_use]
    pub const fn for_modality(m: Modality) -> &'static [Rendering] {
        match m {
            Modality::Sentinel2L2a | Modality::Landsat => {
                &[Rendering::TrueColor, Rendering::FalseColor]
            }
            Modality::Sentinel1 => &[Rendering::VvVh],
        }
    }
}

impl std::fmt::Display for Rendering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an output channel's value comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// One band (index into [`Modality::bands`]).
    Band(usize),
    /// The first band minus the second (a ratio, for bands in dB).
    Difference(usize, usize),
}

/// One output channel: a source, its stretch and gamma.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Channel {
    /// The value shown.
    pub source: Source,
    /// Value shown as 0.
    pub min: f32,
    /// Value shown as 255.
    pub max: f32,
    /// Gamma (1 for a linear stretch).
    pub gamma: f32,
}

impl Channel {
    /// The channel's 8-bit value of `v` (see the module documentation); NaN gives 0.
    #[must_use]
    pub fn stretch(&self, v: f32) -> u8 {
        stretch(v, self.min, self.max, self.gamma)
    }

    /// The bands the channel reads.
    fn bands(&self) -> impl Iterator<Item = usize> {
        let (a, b) = match self.source {
            Source::Band(a) => (a, None),
            Source::Difference(a, b) => (a, Some(b)),
        };
        std::iter::once(a).chain(b)
    }
}

/// `255 · clamp((v − min) / (max − min), 0, 1)^(1/gamma)`, rounded; NaN and an empty range give 0.
#[must_use]
pub fn stretch(v: f32, min: f32, max: f32, gamma: f32) -> u8 {
    let span = max - min;
    if v.is_nan() || span.is_nan() || span <= 0.0 {
        return 0;
    }
    let t = ((v - min) / span).clamp(0.0, 1.0);
    let t = if gamma > 0.0 && gamma != 1.0 {
        t.powf(1.0 / gamma)
    } else {
        t
    };
    (t * 255.0).round() as u8
}

/// The index of a band of `m` by name.
fn band(m: Modality, name: &str) -> Option<usize> {
    m.bands().iter().position(|b| *b == name)
}

/// The red, green and blue channels of `rendering` for `m`; `None` when the modality has no such
/// rendering.
#[must_use]
pub fn channels(m: Modality, rendering: Rendering) -> Option<[Channel; 3]> {
    let refl = |name: &str, min: f32, max: f32| {
        band(m, name).map(|b| Channel {
            source: Source::Band(b),
            min,
            max,
            gamma: REFLECTANCE_GAMMA,
        })
    };
    match (m, rendering) {
        (Modality::Sentinel2L2a, Rendering::TrueColor) => Some([
            refl("B04", 0.0, S2_VISIBLE_MAX)?,
            refl("B03", 0.0, S2_VISIBLE_MAX)?,
            refl("B02", 0.0, S2_VISIBLE_MAX)?,
        ]),
        (Modality::Sentinel2L2a, Rendering::FalseColor) => Some([
            refl("B08", 0.0, S2_NIR_MAX)?,
            refl("B04", 0.0, S2_VISIBLE_MAX)?,
            refl("B03", 0.0, S2_VISIBLE_MAX)?,
        ]),
        (Modality::Landsat, Rendering::TrueColor) => Some([
            refl("B4", LANDSAT_DN_MIN, LANDSAT_VISIBLE_MAX)?,
            refl("B3", LANDSAT_DN_MIN, LANDSAT_VISIBLE_MAX)?,
            refl("B2", LANDSAT_DN_MIN, LANDSAT_VISIBLE_MAX)?,
        ]),
        (Modality::Landsat, Rendering::FalseColor) => Some([
            refl("B5", LANDSAT_DN_MIN, LANDSAT_NIR_MAX)?,
            refl("B4", LANDSAT_DN_MIN, LANDSAT_VISIBLE_MAX)?,
            refl("B3", LANDSAT_DN_MIN, LANDSAT_VISIBLE_MAX)?,
        ]),
        (Modality::Sentinel1, Rendering::VvVh) => {
            let (vv, vh) = (band(m, "vv")?, band(m, "vh")?);
            let db = |source, min, max| Channel {
                source,
                min,
                max,
                gamma: 1.0,
            };
            Some([
                db(Source::Band(vv), -25.0, 0.0),
                db(Source::Band(vh), -30.0, -5.0),
                db(Source::Difference(vv, vh), 0.0, 15.0),
            ])
        }
        _ => None,
    }
}

/// The colour of one pixel from its band values (`values[c]`, in [`Modality::bands`] order);
/// `None` for no data (a band used is not finite, or every band used is 0).
#[must_use]
pub fn pixel_colour(channels: &[Channel; 3], values: &[f32]) -> Option<[u8; 3]> {
    let mut all_zero = true;
    for c in channels {
        for b in c.bands() {
            let v = *values.get(b)?;
            if !v.is_finite() {
                return None;
            }
            all_zero &= v == 0.0;
        }
    }
    if all_zero {
        return None;
    }
    let value = |c: &Channel| match c.source {
        Source::Band(a) => values[a],
        Source::Difference(a, b) => values[a] - values[b],
    };
    Some([
        channels[0].stretch(value(&channels[0])),
        channels[1].stretch(value(&channels[1])),
        channels[2].stretch(value(&channels[2])),
    ])
}

/// Where a window lies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// EPSG code of its UTM zone.
    pub epsg: u32,
    /// GDAL geotransform `[x_left, res, 0, y_top, 0, -res]`.
    pub geotransform: [f64; 6],
    /// `[west, south, east, north]` in EPSG:4326 (tile pixels outside it are not projected).
    pub bbox: [f64; 4],
}

/// One time step of one window, coloured: RGBA rows on the window's grid (alpha 0 where no data).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowImage {
    /// Where the window lies.
    pub placement: Placement,
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width × height × 4` bytes.
    pub rgba: Vec<u8>,
}

impl WindowImage {
    /// Whether any pixel has data.
    #[must_use]
    pub fn has_data(&self) -> bool {
        self.rgba.chunks_exact(4).any(|p| p[3] != 0)
    }

    /// Bytes held.
    #[must_use]
    pub fn size_bytes(&self) -> usize {
        self.rgba.len() + std::mem::size_of::<Self>()
    }
}

/// A window's raw values: `data` f32 `(H, W, T, C)`, row-major, and the optional mask u8
/// `(H, W, T, S)` (S band sets; [`MASK_PRESENT`] means present).
#[derive(Debug, Clone, Copy)]
pub struct RawWindow<'a> {
    /// `[H, W, T, C]`.
    pub shape: [usize; 4],
    /// The values.
    pub data: &'a [f32],
    /// The mask, when the file has one.
    pub mask: Option<&'a [u8]>,
}

/// Colours time step `time` of a window with `rendering`.
pub fn window_image(
    raw: RawWindow<'_>,
    modality: Modality,
    time: usize,
    rendering: Rendering,
    placement: Placement,
) -> Result<WindowImage> {
    let [h, w, t_n, c_n] = raw.shape;
    if raw.data.len() != h * w * t_n * c_n {
        return Err(decode_error(
            modality.name(),
            format!(
                "{} values for shape {:?}",
                raw.data.len(),
                raw.shape.as_slice()
            ),
        ));
    }
    let data = raw.data;
    render_grid(
        Grid {
            shape: raw.shape,
            mask: raw.mask,
        },
        |i| data[i],
        modality,
        time,
        rendering,
        placement,
    )
}

/// Colours time step `time` of the `modality` tensor in a window's safetensors file (the tensor
/// `{modality}` f32 `(H, W, T, C)` and, when present, `{modality}_mask` u8 `(H, W, T, S)`).
pub fn window_image_from_safetensors(
    bytes: &[u8],
    modality: Modality,
    time: usize,
    rendering: Rendering,
    placement: Placement,
) -> Result<WindowImage> {
    let name = modality.name();
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| decode_error("the window file", e.to_string()))?;
    let t = st
        .tensor(name)
        .map_err(|e| decode_error(name, e.to_string()))?;
    if t.dtype() != Dtype::F32 {
        return Err(decode_error(
            name,
            format!("dtype {:?}, expected F32", t.dtype()),
        ));
    }
    let shape: [usize; 4] = t.shape().try_into().map_err(|_| {
        decode_error(
            name,
            format!("shape {:?}, expected (H, W, T, C)", t.shape()),
        )
    })?;
    let values = t.data();
    if values.len() != shape.iter().product::<usize>() * 4 {
        return Err(decode_error(name, "data and shape disagree".into()));
    }
    let mask_name = format!("{name}_mask");
    let mask = match st.tensor(&mask_name) {
        Ok(m) if m.dtype() == Dtype::U8 => Some(m),
        Ok(m) => {
            return Err(decode_error(
                &mask_name,
                format!("dtype {:?}, expected U8", m.dtype()),
            ));
        }
        Err(_) => None,
    };
    if let Some(m) = &mask {
        let s = m.shape();
        if s.len() != 4 || s[..3] != shape[..3] || m.data().len() != s.iter().product::<usize>() {
            return Err(decode_error(
                &mask_name,
                format!("shape {s:?} does not match {:?}", shape.as_slice()),
            ));
        }
    }
    render_grid(
        Grid {
            shape,
            mask: mask.as_ref().map(safetensors::tensor::TensorView::data),
        },
        |i| {
            let b = &values[i * 4..i * 4 + 4];
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        },
        modality,
        time,
        rendering,
        placement,
    )
}

/// The time steps of a window's safetensors file: `timestamps` i32 `(T, 3)` as `[day, month 0–11,
/// year]` (OlmoEarth's convention: each bin's first day).
pub fn window_times(bytes: &[u8]) -> Result<Vec<[i32; 3]>> {
    let t = crate::output::read_i32(bytes, "timestamps")?;
    if t.shape.len() != 2 || t.shape[1] != 3 || t.data.len() != t.shape[0] * 3 {
        return Err(decode_error(
            "timestamps",
            format!("shape {:?}, expected (T, 3)", t.shape),
        ));
    }
    Ok(t.data.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect())
}

/// `YYYY-MM` of a `[day, month 0–11, year]` timestamp.
#[must_use]
pub fn time_label(ts: [i32; 3]) -> String {
    format!("{:04}-{:02}", ts[2], ts[1] + 1)
}

fn decode_error(what: &str, reason: String) -> Error {
    Error::Encode {
        what: format!("reading tensor {what}"),
        reason,
    }
}

/// A window's shape and mask, whatever holds the values.
struct Grid<'a> {
    shape: [usize; 4],
    mask: Option<&'a [u8]>,
}

fn render_grid(
    grid: Grid<'_>,
    value: impl Fn(usize) -> f32,
    modality: Modality,
    time: usize,
    rendering: Rendering,
    placement: Placement,
) -> Result<WindowImage> {
    let [h, w, t_n, c_n] = grid.shape;
    let Some(channels) = channels(modality, rendering) else {
        return Err(Error::InvalidRequest(format!(
            "{modality} has no rendering {rendering}"
        )));
    };
    if time >= t_n {
        return Err(Error::InvalidRequest(format!(
            "time step {time} does not exist (the window has {t_n})"
        )));
    }
    if c_n != modality.num_bands() {
        return Err(decode_error(
            modality.name(),
            format!("{c_n} bands, expected {}", modality.num_bands()),
        ));
    }
    // The band sets the rendering reads: a pixel whose mask marks any of them missing has no data.
    let sets: Vec<usize> = modality
        .band_sets()
        .iter()
        .enumerate()
        .filter(|(_, set)| {
            channels
                .iter()
                .flat_map(Channel::bands)
                .any(|b| set.contains(&b))
        })
        .map(|(s, _)| s)
        .collect();
    let s_n = match grid.mask {
        Some(m) if h * w * t_n > 0 => m.len() / (h * w * t_n),
        _ => 0,
    };
    let mut rgba = vec![0u8; h * w * 4];
    let mut values = vec![0f32; c_n];
    for p in 0..h * w {
        if let Some(mask) = grid.mask {
            let base = (p * t_n + time) * s_n;
            if sets
                .iter()
                .any(|&s| s >= s_n || mask[base + s] != MASK_PRESENT)
            {
                continue;
            }
        }
        let base = (p * t_n + time) * c_n;
        for (c, v) in values.iter_mut().enumerate() {
            *v = value(base + c);
        }
        if let Some(rgb) = pixel_colour(&channels, &values) {
            rgba[p * 4..p * 4 + 3].copy_from_slice(&rgb);
            rgba[p * 4 + 3] = 255;
        }
    }
    Ok(WindowImage {
        placement,
        width: w,
        height: h,
        rgba,
    })
}

/// Longitude of a web-mercator x (metres).
fn mercator_lon(x: f64) -> f64 {
    x / MERCATOR_ORIGIN * 180.0
}

/// Latitude of a web-mercator y (metres).
fn mercator_lat(y: f64) -> f64 {
    (y / MERCATOR_ORIGIN * std::f64::consts::PI)
        .sinh()
        .atan()
        .to_degrees()
}

/// `[west, south, east, north]` (EPSG:4326) of tile z/x/y; `None` for a tile that does not exist.
#[must_use]
pub fn tile_lonlat_bounds(z: u8, x: u32, y: u32) -> Option<[f64; 4]> {
    let b = tile_bounds(z, x, y)?;
    Some([
        mercator_lon(b[0]),
        mercator_lat(b[1]),
        mercator_lon(b[2]),
        mercator_lat(b[3]),
    ])
}

/// Draws tile z/x/y (RGBA, 256 × 256 × 4) from window images: each tile pixel takes the colour of
/// the window pixel under its centre (the first window, in the order given, with data there);
/// transparent where none has. `None` when no pixel has data.
pub fn render_tile(z: u8, x: u32, y: u32, windows: &[&WindowImage]) -> Result<Option<Vec<u8>>> {
    let Some(b) = tile_bounds(z, x, y) else {
        return Err(Error::InvalidRequest(format!(
            "tile {z}/{x}/{y} does not exist"
        )));
    };
    let n = TILE_SIZE;
    let step = (b[2] - b[0]) / n as f64;
    let lons: Vec<f64> = (0..n)
        .map(|u| mercator_lon(b[0] + (u as f64 + 0.5) * step))
        .collect();
    let lats: Vec<f64> = (0..n)
        .map(|v| mercator_lat(b[3] - (v as f64 + 0.5) * step))
        .collect();
    let mut rgba = vec![0u8; n * n * 4];
    let mut by_zone: BTreeMap<u32, Vec<&WindowImage>> = BTreeMap::new();
    for w in windows {
        by_zone.entry(w.placement.epsg).or_default().push(w);
    }
    for (epsg, group) in by_zone {
        // Tile pixels inside (a margin around) the zone's windows, projected in one batch.
        let margin = 1e-3;
        let inside = |lon: f64, lat: f64| {
            group.iter().any(|w| {
                let bb = w.placement.bbox;
                lon >= bb[0] - margin
                    && lon <= bb[2] + margin
                    && lat >= bb[1] - margin
                    && lat <= bb[3] + margin
            })
        };
        let mut pixels = Vec::new();
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (v, &lat) in lats.iter().enumerate() {
            for (u, &lon) in lons.iter().enumerate() {
                let p = v * n + u;
                if rgba[p * 4 + 3] == 0 && inside(lon, lat) {
                    pixels.push(p);
                    xs.push(lon);
                    ys.push(lat);
                }
            }
        }
        if pixels.is_empty() {
            continue;
        }
        let ct = crate::grid::transform(4326, epsg)?;
        // A point GDAL cannot project comes back as infinity (and the call reports a failure): such
        // points fall in no window, the others are projected.
        if let Err(e) = ct.transform_coords(&mut xs, &mut ys, &mut []) {
            tracing::debug!(epsg, error = %e, "some tile pixels did not project");
        }
        for ((&p, &ex), &ny) in pixels.iter().zip(&xs).zip(&ys) {
            if !ex.is_finite() || !ny.is_finite() {
                continue;
            }
            for w in &group {
                let gt = w.placement.geotransform;
                let col = (ex - gt[0]) / gt[1];
                let row = (ny - gt[3]) / gt[5];
                if !(col >= 0.0 && row >= 0.0) {
                    continue;
                }
                let (col, row) = (col.floor() as usize, row.floor() as usize);
                if col >= w.width || row >= w.height {
                    continue;
                }
                let q = (row * w.width + col) * 4;
                if w.rgba[q + 3] == 0 {
                    continue;
                }
                rgba[p * 4..p * 4 + 4].copy_from_slice(&w.rgba[q..q + 4]);
                break;
            }
        }
    }
    Ok(rgba.chunks_exact(4).any(|p| p[3] != 0).then_some(rgba))
}

/// [`render_tile`] as a PNG (fully transparent where no window has data).
pub fn render_tile_png(z: u8, x: u32, y: u32, windows: &[&WindowImage]) -> Result<Vec<u8>> {
    match render_tile(z, x, y, windows)? {
        Some(rgba) => encode_png(&rgba, TILE_SIZE, TILE_SIZE),
        None => crate::tiles::transparent_png(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::WindowSpec;
    use crate::tiles::tile_of;

    #[test]
    fn stretch_is_linear_then_gamma_and_clamped() {
        assert_eq!(stretch(0.0, 0.0, 3000.0, 1.0), 0);
        assert_eq!(stretch(1500.0, 0.0, 3000.0, 1.0), 128);
        assert_eq!(stretch(3000.0, 0.0, 3000.0, 1.0), 255);
        assert_eq!(stretch(9000.0, 0.0, 3000.0, 1.0), 255);
        assert_eq!(stretch(-5.0, 0.0, 3000.0, 1.0), 0);
        assert_eq!(stretch(f32::NAN, 0.0, 3000.0, 1.0), 0);
        assert_eq!(stretch(1.0, 2.0, 2.0, 1.0), 0);
        // Gamma brightens the middle and keeps the ends.
        let g = stretch(750.0, 0.0, 3000.0, 1.5);
        assert_eq!(g, (0.25f32.powf(1.0 / 1.5) * 255.0).round() as u8);
        assert!(g > stretch(750.0, 0.0, 3000.0, 1.0));
        assert_eq!(stretch(3000.0, 0.0, 3000.0, 1.5), 255);
        // Radar: dB ranges.
        assert_eq!(stretch(-12.5, -25.0, 0.0, 1.0), 128);
    }

    #[test]
    fn every_modality_has_its_renderings_and_names_round_trip() {
        for &m in Modality::ALL {
            assert!(!Rendering::for_modality(m).is_empty());
            for &r in Rendering::ALL {
                assert_eq!(
                    channels(m, r).is_some(),
                    Rendering::for_modality(m).contains(&r),
                    "{m} {r}"
                );
            }
        }
        for &r in Rendering::ALL {
            assert_eq!(Rendering::from_name(r.name()), Some(r));
        }
        assert_eq!(Rendering::from_name("ndvi"), None);
        assert_eq!(time_label([1, 4, 2024]), "2024-05");
        assert_eq!(time_label([1, 11, 2023]), "2023-12");
    }

    const WATER: [f32; 12] = [
        600., 500., 350., 200., 300., 250., 220., 200., 100., 80., 700., 150.,
    ];
    const CROP: [f32; 12] = [
        400., 750., 380., 3900., 950., 2700., 3400., 3600., 1800., 850., 450., 1050.,
    ];

    #[test]
    fn pixels_get_the_rendering_colours_and_no_data_is_none() {
        let fc = channels(Modality::Sentinel2L2a, Rendering::FalseColor).unwrap();
        let water = pixel_colour(&fc, &WATER).unwrap();
        let crop = pixel_colour(&fc, &CROP).unwrap();
        assert_eq!(crop[0], stretch(3900.0, 0.0, S2_NIR_MAX, REFLECTANCE_GAMMA));
        assert!(crop[0] > 200 && water[0] < 120, "{crop:?} {water:?}");
        let tc = channels(Modality::Sentinel2L2a, Rendering::TrueColor).unwrap();
        assert_eq!(
            pixel_colour(&tc, &WATER).unwrap(),
            [
                stretch(350.0, 0.0, 3000.0, 1.5),
                stretch(500.0, 0.0, 3000.0, 1.5),
                stretch(600.0, 0.0, 3000.0, 1.5)
            ]
        );
        assert_eq!(pixel_colour(&tc, &[0.0; 12]), None);
        let mut nan = CROP;
        nan[2] = f32::NAN;
        assert_eq!(pixel_colour(&tc, &nan), None);
        // Radar: VV/VH is the difference in dB.
        let s1 = channels(Modality::Sentinel1, Rendering::VvVh).unwrap();
        assert_eq!(pixel_colour(&s1, &[-10.0, -17.5]).unwrap(), [153, 128, 128]);
        // Landsat reads its own band names.
        let l = channels(Modality::Landsat, Rendering::FalseColor).unwrap();
        assert_eq!(l[0].source, Source::Band(5));
        assert_eq!(l[0].min, LANDSAT_DN_MIN);
    }

    /// A 64 px Sentinel-2 window with two time steps: water in the left half, crop in the right, and
    /// the second time step's mask missing in the top rows.
    fn synthetic(spec: &WindowSpec) -> (Vec<f32>, Vec<u8>) {
        let n = spec.size as usize;
        let mut data = Vec::new();
        let mut mask = Vec::new();
        for row in 0..n {
            for col in 0..n {
                for t in 0..2 {
                    data.extend(if col < n / 2 { WATER } else { CROP });
                    let missing = t == 1 && row < 8;
                    mask.extend([if missing { 3 } else { MASK_PRESENT }; 3]);
                }
            }
        }
        (data, mask)
    }

    #[test]
    fn a_window_is_drawn_where_it_lies_and_nowhere_else() {
        let spec = WindowSpec::from_cell(32632, 1000, 7800, 64, 10.0).unwrap();
        let (data, mask) = synthetic(&spec);
        let placement = Placement {
            epsg: spec.epsg,
            geotransform: spec.geotransform,
            bbox: spec.wgs84_bounds,
        };
        let raw = RawWindow {
            shape: [64, 64, 2, 12],
            data: &data,
            mask: Some(&mask),
        };
        let img = window_image(
            raw,
            Modality::Sentinel2L2a,
            0,
            Rendering::FalseColor,
            placement,
        )
        .unwrap();
        assert!(img.rgba.chunks_exact(4).all(|p| p[3] == 255));
        let fc = channels(Modality::Sentinel2L2a, Rendering::FalseColor).unwrap();
        let (water, crop) = (
            pixel_colour(&fc, &WATER).unwrap(),
            pixel_colour(&fc, &CROP).unwrap(),
        );

        // A tile around the window's centre at zoom 18 (about 100 m at this latitude): inside it.
        let lon_of = |x: f64, y: f64| crate::grid::to_lonlat(spec.epsg, &[(x, y)]).unwrap()[0];
        let [x0, y0, x1, y1] = spec.utm_bounds;
        let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
        let centre = lon_of(cx, cy);
        let (tx, ty) = tile_of(centre.0, centre.1, 18);
        let tile = render_tile(18, tx, ty, &[&img]).unwrap().unwrap();
        assert!(tile.chunks_exact(4).all(|p| p[3] == 255));
        let pixels: Vec<[u8; 3]> = tile.chunks_exact(4).map(|p| [p[0], p[1], p[2]]).collect();
        assert!(pixels.iter().all(|p| *p == water || *p == crop));

        // A quarter into the window: all water; three quarters: all crop.
        for (fx, colour) in [(0.25, water), (0.75, crop)] {
            let p = lon_of(x0 + (x1 - x0) * fx, cy);
            let (tx, ty) = tile_of(p.0, p.1, 19);
            let tile = render_tile(19, tx, ty, &[&img]).unwrap().unwrap();
            assert!(
                tile.chunks_exact(4)
                    .all(|p| p[3] == 255 && [p[0], p[1], p[2]] == colour)
            );
        }

        // A zoom-15 tile (about 780 m) holding the window: colour on the window, transparent around it.
        let (tx, ty) = tile_of(centre.0, centre.1, 15);
        let tile = render_tile(15, tx, ty, &[&img]).unwrap().unwrap();
        let opaque = tile.chunks_exact(4).filter(|p| p[3] == 255).count();
        let transparent = tile.chunks_exact(4).filter(|p| p[3] == 0).count();
        assert_eq!(opaque + transparent, TILE_SIZE * TILE_SIZE);
        assert!(
            opaque > 1000 && transparent > 1000,
            "{opaque} {transparent}"
        );

        // Far away: nothing.
        let (tx, ty) = tile_of(-60.0, -20.0, 15);
        assert_eq!(render_tile(15, tx, ty, &[&img]).unwrap(), None);
        let png = render_tile_png(15, tx, ty, &[&img]).unwrap();
        assert_eq!(png, crate::tiles::transparent_png().unwrap());
        assert!(render_tile(3, 9, 0, &[&img]).is_err());

        // The second time step has no data in its top rows: transparent there.
        let img1 = window_image(
            raw,
            Modality::Sentinel2L2a,
            1,
            Rendering::TrueColor,
            placement,
        )
        .unwrap();
        assert!(img1.rgba[..8 * 64 * 4].chunks_exact(4).all(|p| p[3] == 0));
        assert!(img1.rgba[8 * 64 * 4..].chunks_exact(4).all(|p| p[3] == 255));
        assert!(
            window_image(
                raw,
                Modality::Sentinel2L2a,
                2,
                Rendering::TrueColor,
                placement
            )
            .is_err()
        );
        assert!(window_image(raw, Modality::Sentinel2L2a, 0, Rendering::VvVh, placement).is_err());
    }

    #[test]
    fn safetensors_files_decode_like_raw_values() {
        use crate::composite::{Composited, TimeBin};
        use crate::output::{ModalityTensor, WindowTensors, encode_safetensors};
        let spec = WindowSpec::from_cell(32632, 1000, 7800, 64, 10.0).unwrap();
        let (data, mask) = synthetic(&spec);
        let day = |m: u32| chrono::NaiveDate::from_ymd_opt(2024, m, 1).unwrap();
        let file = encode_safetensors(
            &WindowTensors {
                window: spec.clone(),
                bins: vec![
                    TimeBin {
                        start: day(5),
                        end: day(6),
                    },
                    TimeBin {
                        start: day(6),
                        end: day(7),
                    },
                ],
                modalities: vec![ModalityTensor {
                    modality: Modality::Sentinel2L2a,
                    composite: Composited {
                        data: data.clone(),
                        mask: mask.clone(),
                    },
                    scenes: vec![Vec::new(), Vec::new()],
                }],
            },
            None,
        )
        .unwrap();
        let times = window_times(&file).unwrap();
        assert_eq!(times, vec![[1, 4, 2024], [1, 5, 2024]]);
        assert_eq!(time_label(times[0]), "2024-05");
        let placement = Placement {
            epsg: spec.epsg,
            geotransform: spec.geotransform,
            bbox: spec.wgs84_bounds,
        };
        let raw = RawWindow {
            shape: [64, 64, 2, 12],
            data: &data,
            mask: Some(&mask),
        };
        for t in 0..2 {
            let a = window_image_from_safetensors(
                &file,
                Modality::Sentinel2L2a,
                t,
                Rendering::TrueColor,
                placement,
            )
            .unwrap();
            let b = window_image(
                raw,
                Modality::Sentinel2L2a,
                t,
                Rendering::TrueColor,
                placement,
            )
            .unwrap();
            assert_eq!(a, b);
        }
        assert!(
            window_image_from_safetensors(
                &file,
                Modality::Sentinel1,
                0,
                Rendering::VvVh,
                placement
            )
            .is_err()
        );
        assert!(window_times(b"not safetensors").is_err());
    }
}
