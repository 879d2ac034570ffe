//! An offline demo catalogue: a deterministic, physically plausible land-cover scene with Sentinel-2 L2A and
//! Sentinel-1 COGs in UTM, described as a static STAC catalogue in the Earth Search profile (the
//! `groundwork` server can serve it as a STAC API, see its `demo_stac` module).
//!
//! Classes (ground truth `ground_truth.tif`, u8): 1 water, 2 forest, 3 cropland (green-up peaking in
//! July), 4 bare/built. Classes form spatially coherent blobs (smooth value noise), so a model can learn
//! them from the imagery.

use std::path::{Path, PathBuf};

use chrono::{NaiveDate, TimeZone, Utc};
use gdal::DriverManager;
use gdal::raster::{GdalType, RasterCreationOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::error::{Error, Result};
use crate::grid::transform;
use crate::source::resolve_href;

/// Demo dataset options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Random seed (same seed, same bytes of pixels).
    pub seed: u64,
    /// Side in 10 m pixels (default 512, i.e. 5.12 km).
    pub size: usize,
    /// EPSG code of the UTM zone (default 32633).
    pub epsg: u32,
    /// Upper-left corner easting/northing (default 499 840 / 5 000 320, near 15.0° E 45.1° N, on the
    /// 640 m grid of 64-pixel windows).
    pub origin: (f64, f64),
    /// Months (1–12) of 2024 with scenes (default April–July).
    pub months: Vec<u32>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 42,
            size: 512,
            epsg: 32633,
            origin: (499_840.0, 5_000_320.0),
            months: vec![4, 5, 6, 7],
        }
    }
}

/// Class names by id.
pub const CLASSES: [(u8, &str); 4] = [
    (1, "water"),
    (2, "forest"),
    (3, "cropland"),
    (4, "bare_built"),
];

/// Sentinel-2 band files written per scene: (Earth Search asset key, band, resolution in m).
const S2_ASSETS: [(&str, &str, u32); 12] = [
    ("blue", "B02", 10),
    ("green", "B03", 10),
    ("red", "B04", 10),
    ("nir", "B08", 10),
    ("rededge1", "B05", 20),
    ("rededge2", "B06", 20),
    ("rededge3", "B07", 20),
    ("nir08", "B8A", 20),
    ("swir16", "B11", 20),
    ("swir22", "B12", 20),
    ("coastal", "B01", 60),
    ("nir09", "B09", 60),
];

/// Surface reflectance (DN, ×10⁴) per class in `S2_ASSETS` order.
const WATER: [f32; 12] = [
    600., 500., 350., 200., 300., 250., 220., 200., 100., 80., 700., 150.,
];
const FOREST: [f32; 12] = [
    300., 550., 300., 3200., 800., 2200., 2800., 3000., 1500., 700., 350., 900.,
];
const CROP_GREEN: [f32; 12] = [
    400., 750., 380., 3900., 950., 2700., 3400., 3600., 1800., 850., 450., 1050.,
];
const CROP_BARE: [f32; 12] = [
    900., 1100., 1300., 2000., 1500., 1800., 1900., 2050., 2600., 2000., 950., 700.,
];
const BUILT: [f32; 12] = [
    1300., 1400., 1600., 2200., 1650., 1900., 2050., 2250., 2900., 2500., 1250., 800.,
];

/// Writes a single-band COG (DEFLATE, 256² tiles) in an EPSG CRS.
pub fn write_cog<T: GdalType + Copy>(
    path: &Path,
    data: &[T],
    width: usize,
    height: usize,
    geotransform: [f64; 6],
    epsg: u32,
    nodata: Option<f64>,
) -> Result<()> {
    let op = |what: &str| Error::gdal(format!("{what} {}", path.display()));
    let mem = DriverManager::get_driver_by_name("MEM").map_err(op("MEM driver for"))?;
    let mut ds = mem
        .create_with_band_type::<T, _>("", width, height, 1)
        .map_err(op("creating"))?;
    ds.set_geo_transform(&geotransform)
        .map_err(op("geotransform of"))?;
    ds.set_spatial_ref(&crate::grid::srs(epsg)?)
        .map_err(op("CRS of"))?;
    {
        let mut band = ds.rasterband(1).map_err(op("band of"))?;
        if let Some(nd) = nodata {
            band.set_no_data_value(Some(nd)).map_err(op("nodata of"))?;
        }
        let mut buf = gdal::raster::Buffer::new((width, height), data.to_vec());
        band.write((0, 0), (width, height), &mut buf)
            .map_err(op("writing"))?;
    }
    let cog = DriverManager::get_driver_by_name("COG").map_err(op("COG driver for"))?;
    let opts =
        RasterCreationOptions::from_iter(["COMPRESS=DEFLATE", "BLOCKSIZE=256", "NUM_THREADS=1"]);
    ds.create_copy(&cog, path, &opts)
        .map_err(op("writing COG"))?;
    Ok(())
}

/// Smooth value noise in [0, 1]: random lattice values at `cell`-pixel spacing, bilinearly interpolated
/// with a smoothstep, summed over octaves.
fn value_noise(rng: &mut StdRng, w: usize, h: usize, cell: usize, octaves: u32) -> Vec<f32> {
    let mut out = vec![0f32; w * h];
    let mut total = 0f32;
    for o in 0..octaves {
        let c = (cell >> o).max(2);
        let amp = 0.5f32.powi(o as i32);
        let (gw, gh) = (w / c + 2, h / c + 2);
        let lattice: Vec<f32> = (0..gw * gh).map(|_| rng.random::<f32>()).collect();
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f32 / c as f32, y as f32 / c as f32);
                let (ix, iy) = (fx as usize, fy as usize);
                let s = |t: f32| t * t * (3.0 - 2.0 * t);
                let (tx, ty) = (s(fx - ix as f32), s(fy - iy as f32));
                let l = |i: usize, j: usize| lattice[j * gw + i];
                let top = l(ix, iy) * (1.0 - tx) + l(ix + 1, iy) * tx;
                let bot = l(ix, iy + 1) * (1.0 - tx) + l(ix + 1, iy + 1) * tx;
                out[y * w + x] += amp * (top * (1.0 - ty) + bot * ty);
            }
        }
        total += amp;
    }
    for v in &mut out {
        *v /= total;
    }
    out
}

fn quantile(v: &[f32], q: f32) -> f32 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() - 1) as f32 * q) as usize]
}

/// The land-cover map (class ids 1–4), `size × size`.
pub fn land_cover(seed: u64, size: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n1 = value_noise(&mut rng, size, size, 128, 3);
    let n2 = value_noise(&mut rng, size, size, 96, 3);
    let (wq, fq, bq) = (quantile(&n1, 0.15), quantile(&n2, 0.68), quantile(&n2, 0.2));
    n1.iter()
        .zip(&n2)
        .map(|(&a, &b)| {
            if a < wq {
                1
            } else if b > fq {
                2
            } else if b < bq {
                4
            } else {
                3
            }
        })
        .collect()
}

/// A point label sampled from the demo ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoLabel {
    /// Longitude, EPSG:4326.
    pub lon: f64,
    /// Latitude, EPSG:4326.
    pub lat: f64,
    /// Class id (1–4, see [`CLASSES`]).
    pub class_id: u8,
}

/// Samples up to `per_class` pixel-centre point labels per class from the ground truth of the dataset
/// `opts` describes, keeping `inset` metres away from its edges (the AOI is inset from the footprint).
/// Same options and seed, same labels.
pub fn sample_labels(
    opts: &DemoOptions,
    per_class: usize,
    inset: f64,
    seed: u64,
) -> Result<Vec<DemoLabel>> {
    let n = opts.size;
    let truth = land_cover(opts.seed, n);
    let margin = (inset / 10.0).ceil() as usize;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<(usize, usize)>> = vec![Vec::new(); CLASSES.len() + 1];
    for r in margin..n.saturating_sub(margin) {
        for c in margin..n.saturating_sub(margin) {
            let k = usize::from(truth[r * n + c]);
            if let Some(v) = by_class.get_mut(k) {
                v.push((r, c));
            }
        }
    }
    let mut picked = Vec::new();
    for (k, pixels) in by_class.iter_mut().enumerate().skip(1) {
        // Partial Fisher–Yates: the first `per_class` entries become a uniform sample.
        let take = per_class.min(pixels.len());
        for i in 0..take {
            let j = rng.random_range(i..pixels.len());
            pixels.swap(i, j);
        }
        picked.extend(pixels[..take].iter().map(|&(r, c)| (r, c, k as u8)));
    }
    let (x0, y0) = opts.origin;
    let mut xs: Vec<f64> = picked
        .iter()
        .map(|p| x0 + (p.1 as f64 + 0.5) * 10.0)
        .collect();
    let mut ys: Vec<f64> = picked
        .iter()
        .map(|p| y0 - (p.0 as f64 + 0.5) * 10.0)
        .collect();
    if !picked.is_empty() {
        transform(opts.epsg, 4326)?
            .transform_coords(&mut xs, &mut ys, &mut [])
            .map_err(Error::gdal("projecting the demo labels"))?;
    }
    Ok(picked
        .iter()
        .zip(xs.iter().zip(&ys))
        .map(|(p, (&lon, &lat))| DemoLabel {
            lon,
            lat,
            class_id: p.2,
        })
        .collect())
}

/// How a class map agrees with the demo ground truth over some windows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapScore {
    /// Ground-truth pixels compared (inside the windows and the demo footprint).
    pub pixels: usize,
    /// Of those, pixels where the map names the true class.
    pub correct: usize,
    /// Pixels of each class id in the ground truth (index = class id).
    pub truth_counts: Vec<usize>,
}

impl MapScore {
    /// Pixel accuracy of the map.
    #[must_use]
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.pixels.max(1) as f64
    }

    /// Pixel accuracy of a map that is `class` everywhere.
    #[must_use]
    pub fn constant_accuracy(&self, class: u8) -> f64 {
        self.truth_counts
            .get(usize::from(class))
            .copied()
            .unwrap_or(0) as f64
            / self.pixels.max(1) as f64
    }
}

/// Scores a class map (a GeoTIFF in the demo's UTM zone at 10 m, e.g. a `combine` output) against the
/// ground truth of the dataset `opts` describes, over the windows (`window_px` pixels a side) with the
/// given geotransforms. A map pixel without data counts as wrong.
pub fn score_class_map(
    map: &Path,
    opts: &DemoOptions,
    windows: &[[f64; 6]],
    window_px: usize,
) -> Result<MapScore> {
    let ds = gdal::Dataset::open(map).map_err(Error::gdal(format!("opening {}", map.display())))?;
    let gt = ds
        .geo_transform()
        .map_err(Error::gdal("reading the geotransform"))?;
    if (gt[1] - 10.0).abs() > 1e-6 || (gt[5] + 10.0).abs() > 1e-6 {
        return Err(Error::InvalidRequest(format!(
            "the class map has {}×{} m pixels; the demo ground truth has 10 m",
            gt[1], -gt[5]
        )));
    }
    let (w, h) = ds.raster_size();
    let values: Vec<u8> = ds
        .rasterband(1)
        .and_then(|b| b.read_band_as::<u8>())
        .map_err(Error::gdal("reading the class map"))?
        .into_shape_and_vec()
        .1;
    Ok(score_with(opts, windows, window_px, |_, x, y| {
        let mc = ((x - gt[0]) / gt[1]).floor();
        let mr = ((y - gt[3]) / gt[5]).floor();
        (mc >= 0.0 && mr >= 0.0 && (mc as usize) < w && (mr as usize) < h)
            .then(|| values[mr as usize * w + mc as usize])
    }))
}

/// Scores per-window class maps (row-major, `window_px` a side, class ids) against the ground truth.
pub fn score_window_maps(
    opts: &DemoOptions,
    windows: &[([f64; 6], Vec<u8>)],
    window_px: usize,
) -> MapScore {
    let gts: Vec<[f64; 6]> = windows.iter().map(|w| w.0).collect();
    score_with(opts, &gts, window_px, |i, x, y| {
        let (gt, map) = &windows[i];
        let c = ((x - gt[0]) / gt[1]).floor() as usize;
        let r = ((y - gt[3]) / gt[5]).floor() as usize;
        map.get(r * window_px + c).copied()
    })
}

/// Compares `map_at(window index, x, y)` (UTM pixel centres) with the ground truth over the windows;
/// pixels covered twice count once.
fn score_with(
    opts: &DemoOptions,
    windows: &[[f64; 6]],
    window_px: usize,
    map_at: impl Fn(usize, f64, f64) -> Option<u8>,
) -> MapScore {
    let truth = land_cover(opts.seed, opts.size);
    let n = opts.size as i64;
    let mut score = MapScore {
        truth_counts: vec![0; CLASSES.len() + 1],
        ..MapScore::default()
    };
    let mut seen = std::collections::HashSet::new();
    for (i, wgt) in windows.iter().enumerate() {
        // The window's pixels, on the demo's 10 m grid.
        let c0 = ((wgt[0] - opts.origin.0) / 10.0).round() as i64;
        let r0 = ((opts.origin.1 - wgt[3]) / 10.0).round() as i64;
        let side = ((wgt[1] * window_px as f64) / 10.0).round() as i64;
        for r in r0..r0 + side {
            for c in c0..c0 + side {
                if !(0..n).contains(&r) || !(0..n).contains(&c) || !seen.insert((r, c)) {
                    continue;
                }
                let t = truth[(r * n + c) as usize];
                score.pixels += 1;
                if let Some(k) = score.truth_counts.get_mut(usize::from(t)) {
                    *k += 1;
                }
                let x = opts.origin.0 + (c as f64 + 0.5) * 10.0;
                let y = opts.origin.1 - (r as f64 + 0.5) * 10.0;
                if map_at(i, x, y) == Some(t) {
                    score.correct += 1;
                }
            }
        }
    }
    score
}

/// Cropland greenness (0 bare … 1 full canopy) by month, peaking in July.
pub fn crop_greenness(month: u32) -> f32 {
    let d = (month as f32 - 7.0) / 2.5;
    (-d * d).exp()
}

fn spectrum(class: u8, month: u32) -> [f32; 12] {
    match class {
        1 => WATER,
        2 => FOREST,
        3 => {
            let g = crop_greenness(month);
            let mut s = [0f32; 12];
            for i in 0..12 {
                s[i] = CROP_GREEN[i] * g + CROP_BARE[i] * (1.0 - g);
            }
            s
        }
        _ => BUILT,
    }
}

/// Sentinel-1 (VV, VH) linear backscatter per class.
fn backscatter(class: u8, month: u32) -> [f32; 2] {
    match class {
        1 => [0.003, 0.0005],
        2 => [0.08, 0.02],
        3 => {
            let g = crop_greenness(month);
            [0.04 + 0.04 * g, 0.006 + 0.014 * g]
        }
        _ => [0.3, 0.04],
    }
}

/// Block-averages a `size²` image to `ceil(size/f)²`.
fn downsample(v: &[f32], size: usize, f: usize) -> (Vec<f32>, usize) {
    let n = size.div_ceil(f);
    let mut out = vec![0f32; n * n];
    for j in 0..n {
        for i in 0..n {
            let (mut s, mut k) = (0f32, 0f32);
            for y in j * f..((j + 1) * f).min(size) {
                for x in i * f..((i + 1) * f).min(size) {
                    s += v[y * size + x];
                    k += 1.0;
                }
            }
            out[j * n + i] = s / k.max(1.0);
        }
    }
    (out, n)
}

/// Generates the demo catalogue under `dir`: `catalog.json`, collections, items, COGs, `ground_truth.tif`,
/// `classes.json` and `aoi.geojson`. Returns the path of `catalog.json`.
pub fn generate_demo_data(dir: &Path, opts: &DemoOptions) -> Result<PathBuf> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let n = opts.size;
    let (x0, y0) = opts.origin;
    let gt = |res: f64| [x0, res, 0.0, y0, 0.0, -res];
    let classes = land_cover(opts.seed, n);
    write_cog(
        &dir.join("ground_truth.tif"),
        &classes,
        n,
        n,
        gt(10.0),
        opts.epsg,
        Some(0.0),
    )?;
    let class_json = json!({
        "classes": CLASSES.iter().map(|(id, name)| json!({"id": id, "name": name})).collect::<Vec<_>>(),
        "raster": "ground_truth.tif",
        "nodata": 0
    });
    write_json(&dir.join("classes.json"), &class_json)?;

    // Footprint in EPSG:4326 (densified square), and the AOI slightly inside it.
    let side = n as f64 * 10.0;
    let to_wgs = transform(opts.epsg, 4326)?;
    let ring = |inset: f64| -> Result<Vec<Vec<f64>>> {
        let (a, b) = (inset, side - inset);
        let pts = [(a, a), (b, a), (b, b), (a, b), (a, a)];
        let mut xs: Vec<f64> = pts.iter().map(|p| x0 + p.0).collect();
        let mut ys: Vec<f64> = pts.iter().map(|p| y0 - side + p.1).collect();
        to_wgs
            .transform_coords(&mut xs, &mut ys, &mut [])
            .map_err(Error::gdal("projecting the demo footprint"))?;
        Ok(xs.iter().zip(&ys).map(|(x, y)| vec![*x, *y]).collect())
    };
    let footprint = geojson::Geometry::new_polygon(vec![ring(0.0)?]);
    let aoi = geojson::Geometry::new_polygon(vec![ring(320.0)?]);
    write_json(
        &dir.join("aoi.geojson"),
        &json!({"type": "Feature", "properties": {"name": "groundwork demo"}, "geometry": aoi}),
    )?;

    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed);
    let texture = value_noise(&mut rng, n, n, 8, 2);
    let mut s2_items = Vec::new();
    let mut s1_items = Vec::new();
    for &month in &opts.months {
        // Two Sentinel-2 passes a month: one mostly clear, one cloudy.
        for (k, (day, cover)) in [(6u32, 0.04f32), (21, 0.35)].into_iter().enumerate() {
            let date = NaiveDate::from_ymd_opt(2024, month, day)
                .ok_or_else(|| Error::InvalidRequest(format!("bad demo month {month}")))?;
            let id = format!("S2B_33TWL_{}_0_L2A", date.format("%Y%m%d"));
            let item_dir = dir.join("sentinel-2-l2a").join(&id);
            std::fs::create_dir_all(&item_dir).map_err(io(&item_dir))?;
            let clouds = value_noise(&mut rng, n, n, 64, 3);
            let thr = quantile(&clouds, 1.0 - cover);
            let core = quantile(&clouds, 1.0 - cover * 0.5);
            let shift = 12usize;
            let mut scl = vec![0f32; n * n];
            let mut bands: Vec<Vec<f32>> = vec![vec![0f32; n * n]; 12];
            for y in 0..n {
                for x in 0..n {
                    let p = y * n + x;
                    let c = classes[p];
                    let sp = spectrum(c, month);
                    let tex = 0.9 + 0.2 * texture[p] + rng.random_range(-0.02..0.02);
                    let cloud = clouds[p];
                    let shadow =
                        y >= shift && x >= shift && clouds[(y - shift) * n + x - shift] > thr;
                    let mut class_scl = match c {
                        1 => 6.0,
                        4 => 5.0,
                        _ => 4.0,
                    };
                    for b in 0..12 {
                        let mut v = sp[b] * tex;
                        if cloud > thr {
                            v = 6500.0 + 2500.0 * (cloud - thr) / (1.0 - thr).max(1e-3);
                        } else if shadow {
                            v *= 0.35;
                        }
                        bands[b][p] = v;
                    }
                    if cloud > core {
                        class_scl = 9.0;
                    } else if cloud > thr {
                        class_scl = 8.0;
                    } else if shadow {
                        class_scl = 3.0;
                    }
                    scl[p] = class_scl;
                }
            }
            let mut assets = serde_json::Map::new();
            for (b, (key, band, res)) in S2_ASSETS.iter().enumerate() {
                let f = (*res / 10) as usize;
                let (img, m) = downsample(&bands[b], n, f);
                // Like Earth Search's COGs, DN are already on the pre-2022 scale (offset applied).
                let dn: Vec<u16> = img.iter().map(|v| v.clamp(1.0, 65535.0) as u16).collect();
                write_cog(
                    &item_dir.join(format!("{key}.tif")),
                    &dn,
                    m,
                    m,
                    gt(f64::from(*res)),
                    opts.epsg,
                    Some(0.0),
                )?;
                assets.insert(
                    (*key).to_string(),
                    json!({"href": format!("./{key}.tif"), "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                           "roles": ["data", "reflectance"], "eo:bands": [{"name": band}], "gsd": res}),
                );
            }
            // SCL at 20 m: the most severe class in a 40 m neighbourhood of each 20 m pixel (cloud and
            // shadow masks are dilated, as in the real product).
            let m = n.div_ceil(2);
            let severity = |c: f32| match c as u8 {
                9 => 4,
                8 => 3,
                3 => 2,
                _ => 0,
            };
            let scl20: Vec<u8> = (0..m * m)
                .map(|q| {
                    let (i, j) = (q % m, q / m);
                    let mut best = scl[(j * 2).min(n - 1) * n + (i * 2).min(n - 1)];
                    for y in (j * 2).saturating_sub(1)..(j * 2 + 3).min(n) {
                        for x in (i * 2).saturating_sub(1)..(i * 2 + 3).min(n) {
                            if severity(scl[y * n + x]) > severity(best) {
                                best = scl[y * n + x];
                            }
                        }
                    }
                    best as u8
                })
                .collect();
            write_cog(
                &item_dir.join("scl.tif"),
                &scl20,
                m,
                m,
                gt(20.0),
                opts.epsg,
                Some(0.0),
            )?;
            assets.insert(
                "scl".into(),
                json!({"href": "./scl.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}),
            );
            let dt = Utc
                .with_ymd_and_hms(2024, month, day, 10, 0, k as u32)
                .single()
                .ok_or_else(|| Error::InvalidRequest("bad demo date".into()))?;
            let cloud_pct = (clouds.iter().filter(|&&c| c > thr).count() as f64 / (n * n) as f64
                * 100.0
                * 100.0)
                .round()
                / 100.0;
            let item = item_json(
                &id,
                "sentinel-2-l2a",
                &footprint,
                dt,
                json!({
                    "platform": "sentinel-2b", "constellation": "sentinel-2", "instruments": ["msi"],
                    "eo:cloud_cover": cloud_pct, "s2:processing_baseline": "05.10",
                    "earthsearch:boa_offset_applied": true, "proj:code": format!("EPSG:{}", opts.epsg),
                    "mgrs:utm_zone": opts.epsg % 100,
                }),
                assets,
            );
            write_json(&item_dir.join(format!("{id}.json")), &item)?;
            s2_items.push(id);
        }
        // One Sentinel-1 pass a month, linear power with speckle.
        let date = NaiveDate::from_ymd_opt(2024, month, 12)
            .ok_or_else(|| Error::InvalidRequest(format!("bad demo month {month}")))?;
        let id = format!("S1A_IW_GRDH_1SDV_{}T050000", date.format("%Y%m%d"));
        let item_dir = dir.join("sentinel-1-grd").join(&id);
        std::fs::create_dir_all(&item_dir).map_err(io(&item_dir))?;
        let mut assets = serde_json::Map::new();
        for (b, key) in ["vv", "vh"].iter().enumerate() {
            let img: Vec<f32> = (0..n * n)
                .map(|p| {
                    let speckle: f32 = (0..4).map(|_| rng.random::<f32>()).sum::<f32>() / 2.0;
                    backscatter(classes[p], month)[b] * speckle.max(0.05)
                })
                .collect();
            write_cog(
                &item_dir.join(format!("{key}.tif")),
                &img,
                n,
                n,
                gt(10.0),
                opts.epsg,
                None,
            )?;
            assets.insert(
                (*key).to_string(),
                json!({"href": format!("./{key}.tif"), "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                       "roles": ["data"], "raster:bands": [{"unit": "linear", "data_type": "float32"}]}),
            );
        }
        let dt = Utc
            .with_ymd_and_hms(2024, month, 12, 5, 0, 0)
            .single()
            .ok_or_else(|| Error::InvalidRequest("bad demo date".into()))?;
        let item = item_json(
            &id,
            "sentinel-1-grd",
            &footprint,
            dt,
            json!({"platform": "sentinel-1a", "constellation": "sentinel-1", "sar:instrument_mode": "IW",
                   "sar:polarizations": ["VV", "VH"], "proj:code": format!("EPSG:{}", opts.epsg)}),
            assets,
        );
        write_json(&item_dir.join(format!("{id}.json")), &item)?;
        s1_items.push(id);
    }
    for (coll, items, title) in [
        ("sentinel-2-l2a", &s2_items, "Sentinel-2 L2A (demo)"),
        ("sentinel-1-grd", &s1_items, "Sentinel-1 GRD (demo)"),
    ] {
        let mut links = vec![
            json!({"rel": "root", "href": "../catalog.json", "type": "application/json"}),
            json!({"rel": "parent", "href": "../catalog.json", "type": "application/json"}),
        ];
        links.extend(items.iter().map(|id| {
            json!({"rel": "item", "href": format!("./{id}/{id}.json"), "type": "application/geo+json"})
        }));
        let c = json!({
            "type": "Collection", "stac_version": "1.1.0", "id": coll, "title": title,
            "description": format!("{title}: synthetic scenes generated by `groundwork demo-data`"),
            "license": "CC0-1.0",
            "extent": {"spatial": {"bbox": [bbox_of(&footprint)]},
                       "temporal": {"interval": [["2024-01-01T00:00:00Z", "2024-12-31T23:59:59Z"]]}},
            "links": links,
        });
        write_json(&dir.join(coll).join("collection.json"), &c)?;
    }
    let catalog = json!({
        "type": "Catalog", "stac_version": "1.1.0", "id": "groundwork-demo",
        "description": format!("Groundwork offline demo catalogue (seed {})", opts.seed),
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
            {"rel": "child", "href": "./sentinel-2-l2a/collection.json", "type": "application/json"},
            {"rel": "child", "href": "./sentinel-1-grd/collection.json", "type": "application/json"},
        ],
    });
    let path = dir.join("catalog.json");
    write_json(&path, &catalog)?;
    Ok(path)
}

fn bbox_of(g: &geojson::Geometry) -> Vec<f64> {
    let mut b = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    if let geojson::GeometryValue::Polygon { coordinates } = &g.value {
        for p in coordinates.iter().flatten() {
            b = [
                b[0].min(p[0]),
                b[1].min(p[1]),
                b[2].max(p[0]),
                b[3].max(p[1]),
            ];
        }
    }
    b.to_vec()
}

fn item_json(
    id: &str,
    collection: &str,
    footprint: &geojson::Geometry,
    dt: chrono::DateTime<Utc>,
    extra: serde_json::Value,
    assets: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut props = json!({"datetime": dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    json!({
        "type": "Feature", "stac_version": "1.1.0", "id": id, "collection": collection,
        "geometry": footprint, "bbox": bbox_of(footprint), "properties": props,
        "links": [
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
        ],
        "assets": assets,
    })
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            path: parent.display().to_string(),
            source,
        })?;
    }
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::Encode {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads every collection and item of a local static catalogue (hrefs resolved to absolute paths).
pub fn read_static_catalog(catalog: &Path) -> Result<(Vec<stac::Collection>, Vec<stac::Item>)> {
    fn walk(
        href: &str,
        depth: usize,
        cols: &mut Vec<stac::Collection>,
        items: &mut Vec<stac::Item>,
    ) -> Result<()> {
        let bytes = std::fs::read(href).map_err(|source| Error::Io {
            path: href.to_string(),
            source,
        })?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Stac {
            op: "catalogue",
            url: href.to_string(),
            reason: e.to_string(),
        })?;
        let bad = |e: serde_json::Error| Error::Stac {
            op: "catalogue",
            url: href.to_string(),
            reason: e.to_string(),
        };
        match v.get("type").and_then(|t| t.as_str()) {
            Some("Feature") => {
                let mut item: stac::Item = serde_json::from_value(v).map_err(bad)?;
                for a in item.assets.values_mut() {
                    a.href = resolve_href(href, &a.href);
                }
                items.push(item);
                return Ok(());
            }
            Some("Collection") => {
                let mut c: stac::Collection = serde_json::from_value(v.clone()).map_err(bad)?;
                c.links.clear();
                cols.push(c);
            }
            _ => {}
        }
        if depth > 8 {
            return Ok(());
        }
        for l in v
            .get("links")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
        {
            let rel = l.get("rel").and_then(|r| r.as_str()).unwrap_or_default();
            if let (true, Some(h)) = (
                rel == "child" || rel == "item",
                l.get("href").and_then(|h| h.as_str()),
            ) {
                walk(&resolve_href(href, h), depth + 1, cols, items)?;
            }
        }
        Ok(())
    }
    let (mut cols, mut items) = (Vec::new(), Vec::new());
    walk(&catalog.to_string_lossy(), 0, &mut cols, &mut items)?;
    Ok((cols, items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_labels_lie_on_pixels_of_their_class_inside_the_inset() {
        let opts = DemoOptions {
            size: 128,
            ..DemoOptions::default()
        };
        let labels = sample_labels(&opts, 20, 320.0, 7).unwrap();
        assert_eq!(labels, sample_labels(&opts, 20, 320.0, 7).unwrap());
        assert_ne!(labels, sample_labels(&opts, 20, 320.0, 8).unwrap());
        let truth = land_cover(opts.seed, opts.size);
        let mut xs: Vec<f64> = labels.iter().map(|l| l.lon).collect();
        let mut ys: Vec<f64> = labels.iter().map(|l| l.lat).collect();
        transform(4326, opts.epsg)
            .unwrap()
            .transform_coords(&mut xs, &mut ys, &mut [])
            .unwrap();
        let (x0, y0) = opts.origin;
        for (l, (x, y)) in labels.iter().zip(xs.iter().zip(&ys)) {
            let c = ((x - x0) / 10.0).floor() as usize;
            let r = ((y0 - y) / 10.0).floor() as usize;
            assert!((32..96).contains(&c) && (32..96).contains(&r), "{c},{r}");
            assert_eq!(truth[r * opts.size + c], l.class_id);
        }
        for (k, _) in CLASSES {
            let inner = (32..96)
                .flat_map(|r| (32..96).map(move |c| (r, c)))
                .filter(|&(r, c)| truth[r * opts.size + c] == k)
                .count();
            let n = labels.iter().filter(|l| l.class_id == k).count();
            assert_eq!(n, inner.min(20), "class {k}");
        }
    }
}
