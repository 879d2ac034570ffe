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
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::grid::transform;
use crate::source::resolve_href;

/// What a demo class looks like from orbit: its spectra through the year, its radar backscatter and
/// the scene classification (SCL) class Sentinel-2 gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Surface {
    /// Open water.
    Water,
    /// Tree cover.
    Forest,
    /// Shrubland: sparse, evergreen vegetation.
    Shrubland,
    /// Grassland, greening up in spring (peak in May).
    Grassland,
    /// Cropland, bare until the green-up that peaks in July.
    Cropland,
    /// Built-up and bare ground.
    Built,
}

impl Surface {
    /// Whether the surface is farmland that [`FieldLayout::Parcels`] cuts into fields.
    #[must_use]
    pub fn is_field(self) -> bool {
        matches!(
            self,
            Surface::Cropland | Surface::Grassland | Surface::Shrubland
        )
    }

    /// A map colour for the class.
    #[must_use]
    pub fn color(self) -> &'static str {
        match self {
            Surface::Water => "#2166ac",
            Surface::Forest => "#1b7837",
            Surface::Shrubland => "#9acd32",
            Surface::Grassland => "#d9ef8b",
            Surface::Cropland => "#e6ab02",
            Surface::Built => "#8c510a",
        }
    }
}

/// One class of a demo scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoClass {
    /// Class id in the ground truth and the labels (1–255; 0 is the ground truth's nodata).
    pub id: u8,
    /// Class name.
    pub name: String,
    /// What it looks like.
    pub surface: Surface,
    /// Its share: for the first water class, of the scene; for every other class, of the land (the land
    /// classes' shares are relative to each other).
    pub share: f32,
}

impl DemoClass {
    /// A class.
    #[must_use]
    pub fn new(id: u8, name: &str, surface: Surface, share: f32) -> Self {
        DemoClass {
            id,
            name: name.to_owned(),
            surface,
            share,
        }
    }
}

/// How the classes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FieldLayout {
    /// Spatially coherent blobs of smooth value noise (the default).
    Blobs,
    /// Blobs, with the farmland ([`Surface::is_field`]) cut into rectangular parcels of `width × length`
    /// pixels turned by `angle_deg`, each parcel one farmland class (drawn by the classes' shares).
    Parcels {
        /// Short side, pixels.
        width: usize,
        /// Long side, pixels.
        length: usize,
        /// Rotation of the parcel grid, degrees.
        angle_deg: f32,
    },
}

/// Clouds of the Sentinel-2 passes, and what the scene classification misses of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CloudOptions {
    /// Cloud cover of each month's two passes, 0–1 (default 4 % and 35 %).
    pub cover: [f32; 2],
    /// Share of each pass under faint haze that the SCL calls clear (default 0).
    pub haze: f32,
    /// Peak opacity of the haze, 0–1 (default 0.15).
    pub haze_opacity: f32,
    /// Share of each cloud's area, at its thin edge, that the SCL calls clear (default 0).
    pub unmasked_edge: f32,
}

impl Default for CloudOptions {
    fn default() -> Self {
        CloudOptions {
            cover: [0.04, 0.35],
            haze: 0.0,
            haze_opacity: 0.15,
            unmasked_edge: 0.0,
        }
    }
}

/// How much pixels and fields of one class differ from each other (the classic scene: not at all beyond a
/// brightness texture).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Variation {
    /// Relative noise of every pixel and band (standard deviation, 0–0.5): sensor noise, independent from
    /// pixel to pixel, band to band and pass to pass.
    pub pixel_noise: f32,
    /// Mixed pixels (0–1): each pixel holds a share of another class of the scene (trees in a field, bare
    /// patches, a hedge), `|N(0, pixel_mix)|` capped at 0.9, the same on every date, so no band or
    /// month tells it apart while its neighbours do.
    #[serde(default)]
    pub pixel_mix: f32,
    /// Fields of one class differ by up to this many months in their seasonal cycle (cropland,
    /// grassland), and other surfaces mix with a similar one by up to `0.4 × field_shift` (0–3).
    pub field_shift: f32,
}

/// Demo dataset options. The defaults are the classic demo scene; [`DemoOptions::scene`] names a family of
/// others (regions, class sets, field shapes, clouds the mask misses, season lengths, and fields and
/// pixels of one class that differ as real ones do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Months (1–12) of `year` with scenes (default April–July).
    pub months: Vec<u32>,
    /// Year of the scenes (default 2024). The same seed gives the same land cover in every year, so
    /// catalogues of two years stand for one place seen twice.
    #[serde(default = "default_year")]
    pub year: i32,
    /// Classes (default [`CLASSES`]: water, forest, cropland, bare/built).
    pub classes: Vec<DemoClass>,
    /// Layout of the classes (default blobs).
    pub fields: FieldLayout,
    /// Clouds.
    pub clouds: CloudOptions,
    /// Within-class variation.
    #[serde(default)]
    pub variation: Variation,
    /// Also write Landsat 8/9 Collection 2 Level-2 scenes (`landsat-c2-l2`, one a month, 30 m,
    /// `QA_PIXEL` from the month's clear Sentinel-2 pass). Off by default: the scene's other bytes
    /// are the same either way.
    #[serde(default)]
    pub landsat: bool,
}

fn default_year() -> i32 {
    2024
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 42,
            size: 512,
            epsg: 32633,
            origin: (499_840.0, 5_000_320.0),
            months: vec![4, 5, 6, 7],
            year: default_year(),
            classes: vec![
                DemoClass::new(1, "water", Surface::Water, 0.15),
                DemoClass::new(2, "forest", Surface::Forest, 0.32),
                DemoClass::new(3, "cropland", Surface::Cropland, 0.48),
                DemoClass::new(4, "bare_built", Surface::Built, 0.20),
            ],
            fields: FieldLayout::Blobs,
            clouds: CloudOptions::default(),
            variation: Variation::default(),
            landsat: false,
        }
    }
}

/// The named scenes of the demo family: name and a line about it.
pub const SCENES: [(&str, &str); 6] = [
    (
        "classic",
        "the default demo: temperate, UTM 33N, water/forest/cropland/built blobs, April–July",
    ),
    (
        "tropical-haze",
        "East Africa, UTM 37S: WorldCover tree/shrub/grass/crop/water, faint haze and cloud edges the SCL misses, 3 months",
    ),
    (
        "us-cropland",
        "US Mid-Atlantic, UTM 18N: elongated crop parcels, grass, trees, rare built-up (3 %), water, 6 months",
    ),
    (
        "smallholder",
        "Uganda, UTM 36N: small 60 m fields of crop/grass/shrub, trees, rare built-up, unmasked cloud edges, 8 months",
    ),
    (
        "boreal-lakes",
        "Finland, UTM 35N: forest and lakes, grassland, rare built-up, light haze, May–August",
    ),
    (
        "dryland",
        "Sahel, UTM 31N: shrubland, grassland, cropland, rare water (2 %), tilted parcels, heavy haze, 5 months",
    ),
];

impl DemoOptions {
    /// A named scene of the family ([`SCENES`]) with a seed; `classic` with seed 42 is the default demo.
    pub fn scene(name: &str, seed: u64) -> Result<Self> {
        use Surface::{Built, Cropland, Forest, Grassland, Shrubland, Water};
        let c = DemoClass::new;
        let base = DemoOptions {
            seed,
            ..DemoOptions::default()
        };
        Ok(match name {
            "classic" => base,
            "tropical-haze" => DemoOptions {
                // 6.1° S 39° E (zone 37S: false northing 10 000 km).
                epsg: 32737,
                origin: (499_840.0, 9_336_320.0),
                months: vec![6, 7, 8],
                classes: vec![
                    c(80, "water", Water, 0.08),
                    c(10, "tree_cover", Forest, 0.40),
                    c(20, "shrubland", Shrubland, 0.20),
                    c(30, "grassland", Grassland, 0.20),
                    c(40, "cropland", Cropland, 0.20),
                ],
                clouds: CloudOptions {
                    cover: [0.10, 0.40],
                    haze: 0.35,
                    haze_opacity: 0.2,
                    unmasked_edge: 0.3,
                },
                variation: Variation {
                    pixel_noise: 0.03,
                    pixel_mix: 0.45,
                    field_shift: 1.0,
                },
                ..base
            },
            "us-cropland" => DemoOptions {
                // 40.0° N 75° W.
                epsg: 32618,
                origin: (499_840.0, 4_428_160.0),
                months: vec![4, 5, 6, 7, 8, 9],
                classes: vec![
                    c(80, "water", Water, 0.05),
                    c(10, "tree_cover", Forest, 0.22),
                    c(30, "grassland", Grassland, 0.20),
                    c(40, "cropland", Cropland, 0.55),
                    c(50, "built_up", Built, 0.03),
                ],
                fields: FieldLayout::Parcels {
                    width: 8,
                    length: 30,
                    angle_deg: 0.0,
                },
                variation: Variation {
                    pixel_noise: 0.03,
                    pixel_mix: 0.4,
                    field_shift: 1.5,
                },
                ..base
            },
            "smallholder" => DemoOptions {
                // 1.0° N 33° E.
                epsg: 32636,
                origin: (499_840.0, 110_080.0),
                months: vec![3, 4, 5, 6, 7, 8, 9, 10],
                classes: vec![
                    c(10, "tree_cover", Forest, 0.25),
                    c(20, "shrubland", Shrubland, 0.17),
                    c(30, "grassland", Grassland, 0.20),
                    c(40, "cropland", Cropland, 0.35),
                    c(50, "built_up", Built, 0.03),
                ],
                fields: FieldLayout::Parcels {
                    width: 6,
                    length: 6,
                    angle_deg: 20.0,
                },
                clouds: CloudOptions {
                    cover: [0.15, 0.40],
                    unmasked_edge: 0.4,
                    ..CloudOptions::default()
                },
                variation: Variation {
                    pixel_noise: 0.03,
                    pixel_mix: 0.5,
                    field_shift: 1.0,
                },
                ..base
            },
            "boreal-lakes" => DemoOptions {
                // 62.0° N 27° E.
                epsg: 32635,
                origin: (499_840.0, 6_876_160.0),
                months: vec![5, 6, 7, 8],
                classes: vec![
                    c(80, "water", Water, 0.25),
                    c(10, "tree_cover", Forest, 0.67),
                    c(30, "grassland", Grassland, 0.30),
                    c(50, "built_up", Built, 0.03),
                ],
                clouds: CloudOptions {
                    haze: 0.2,
                    ..CloudOptions::default()
                },
                variation: Variation {
                    pixel_noise: 0.03,
                    pixel_mix: 0.4,
                    field_shift: 0.8,
                },
                ..base
            },
            "dryland" => DemoOptions {
                // 14.0° N 3° E.
                epsg: 32631,
                origin: (499_840.0, 1_548_160.0),
                months: vec![6, 7, 8, 9, 10],
                classes: vec![
                    c(80, "water", Water, 0.02),
                    c(20, "shrubland", Shrubland, 0.40),
                    c(30, "grassland", Grassland, 0.35),
                    c(40, "cropland", Cropland, 0.25),
                ],
                fields: FieldLayout::Parcels {
                    width: 10,
                    length: 20,
                    angle_deg: -35.0,
                },
                clouds: CloudOptions {
                    cover: [0.05, 0.30],
                    haze: 0.5,
                    haze_opacity: 0.25,
                    unmasked_edge: 0.2,
                },
                variation: Variation {
                    pixel_noise: 0.03,
                    pixel_mix: 0.5,
                    field_shift: 1.0,
                },
                ..base
            },
            other => {
                let names: Vec<&str> = SCENES.iter().map(|s| s.0).collect();
                return Err(Error::InvalidRequest(format!(
                    "unknown demo scene {other:?}; the scenes are {}",
                    names.join(", ")
                )));
            }
        })
    }

    /// Checks the options: 1–6 classes with distinct ids 1–255 and positive shares, months 1–12, a size
    /// of at least 64 pixels, cloud settings in 0–1.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRequest(m));
        if self.classes.is_empty() || self.classes.len() > 6 {
            return bad(format!(
                "a demo scene has 1–6 classes, not {}",
                self.classes.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.classes {
            if c.id == 0 || !seen.insert(c.id) {
                return bad(format!("class id {} is 0 or repeated", c.id));
            }
            if !(c.share.is_finite() && c.share > 0.0) {
                return bad(format!("class {} has share {}", c.id, c.share));
            }
        }
        if self.months.is_empty() || self.months.iter().any(|m| !(1..=12).contains(m)) {
            return bad(format!("demo months must be 1–12: {:?}", self.months));
        }
        if self.size < 64 {
            return bad(format!(
                "a demo scene has at least 64 pixels a side, not {}",
                self.size
            ));
        }
        let cl = &self.clouds;
        if [
            cl.cover[0],
            cl.cover[1],
            cl.haze,
            cl.haze_opacity,
            cl.unmasked_edge,
        ]
        .iter()
        .any(|v| !(0.0..=1.0).contains(v))
        {
            return bad(format!("cloud settings must lie in 0–1: {cl:?}"));
        }
        if let FieldLayout::Parcels { width, length, .. } = self.fields
            && (width == 0 || length == 0)
        {
            return bad("parcels need a width and a length".into());
        }
        let v = &self.variation;
        if !(0.0..=0.5).contains(&v.pixel_noise)
            || !(0.0..=1.0).contains(&v.pixel_mix)
            || !(0.0..=3.0).contains(&v.field_shift)
        {
            return bad(format!(
                "pixel noise must lie in 0–0.5, pixel mix in 0–1 and field shift in 0–3 months: {v:?}"
            ));
        }
        Ok(())
    }

    /// The class with an id.
    #[must_use]
    pub fn class(&self, id: u8) -> Option<&DemoClass> {
        self.classes.iter().find(|c| c.id == id)
    }

    /// The surface of each class id, indexed by id (ids of no class: built-up).
    fn surfaces(&self) -> [Surface; 256] {
        let mut surface_of = [Surface::Built; 256];
        for c in &self.classes {
            surface_of[usize::from(c.id)] = c.surface;
        }
        surface_of
    }
}

/// Class names by id of the default scene.
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

/// Landsat Collection 2 Level-2 surface reflectance files written per scene: (Earth Search asset
/// key, band, the `S2_ASSETS` index whose reflectance it takes).
const LANDSAT_ASSETS: [(&str, &str, usize); 7] = [
    ("coastal", "SR_B1", 10),
    ("blue", "SR_B2", 0),
    ("green", "SR_B3", 1),
    ("red", "SR_B4", 2),
    ("nir08", "SR_B5", 7),
    ("swir16", "SR_B6", 8),
    ("swir22", "SR_B7", 9),
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
const SHRUB: [f32; 12] = [
    450., 700., 650., 2500., 1100., 1900., 2250., 2400., 2300., 1400., 500., 800.,
];
const GRASS_GREEN: [f32; 12] = [
    350., 700., 400., 3300., 900., 2400., 2900., 3100., 2000., 1000., 420., 950.,
];
const GRASS_DRY: [f32; 12] = [
    800., 1000., 1150., 2200., 1400., 1900., 2050., 2200., 2900., 2200., 850., 750.,
];
/// Top-of-haze reflectance: bright, strongest in the blue.
const HAZE: [f32; 12] = [
    6000., 5600., 5300., 5000., 5200., 5100., 5050., 5000., 4300., 3500., 6300., 2500.,
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

/// The land-cover map of the default classes (ids 1–4), `size × size`.
pub fn land_cover(seed: u64, size: usize) -> Vec<u8> {
    land_cover_of(&DemoOptions {
        seed,
        size,
        ..DemoOptions::default()
    })
}

/// The ground truth of the scene `opts` describes (class ids, row-major, `size × size`).
///
/// The first water class takes the lowest `share` of one noise field; the land classes take bands of a
/// second one, from the top down in their order, by their relative shares; with
/// [`FieldLayout::Parcels`] the farmland is then cut into parcels.
pub fn land_cover_of(opts: &DemoOptions) -> Vec<u8> {
    let size = opts.size;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let n1 = value_noise(&mut rng, size, size, 128, 3);
    let n2 = value_noise(&mut rng, size, size, 96, 3);
    let water = opts.classes.iter().find(|c| c.surface == Surface::Water);
    let land: Vec<&DemoClass> = opts
        .classes
        .iter()
        .filter(|c| water.is_none_or(|w| w.id != c.id))
        .collect();
    let wq = water.map(|w| quantile(&n1, w.share));
    let total: f32 = land.iter().map(|c| c.share).sum();
    // Thresholds between land class i and i + 1 (top down).
    // (The last cut is taken from the bottom, the others from the top: the same quantiles, to the
    // last float bit, as the classic scene's.)
    let mut cum = 0f32;
    let k = land.len();
    let cuts: Vec<f32> = land
        .iter()
        .take(k.saturating_sub(1))
        .enumerate()
        .map(|(i, c)| {
            cum += c.share;
            if i + 2 == k {
                quantile(&n2, land[k - 1].share / total)
            } else {
                quantile(&n2, 1.0 - cum / total)
            }
        })
        .collect();
    let mut out: Vec<u8> = n1
        .iter()
        .zip(&n2)
        .map(|(&a, &b)| {
            if let (Some(w), Some(wq)) = (water, wq)
                && a < wq
            {
                return w.id;
            }
            let k = land.len();
            if k == 0 {
                return water.map_or(0, |w| w.id);
            }
            if k == 1 || b > cuts[0] {
                return land[0].id;
            }
            if b < cuts[k - 2] {
                return land[k - 1].id;
            }
            (1..k - 1)
                .find(|&i| b >= cuts[i])
                .map_or(land[k - 1].id, |i| land[i].id)
        })
        .collect();
    if let FieldLayout::Parcels {
        width,
        length,
        angle_deg,
    } = opts.fields
    {
        let fields: Vec<&DemoClass> = opts
            .classes
            .iter()
            .filter(|c| c.surface.is_field())
            .collect();
        let total: f32 = fields.iter().map(|c| c.share).sum();
        let is_field = |id: u8| fields.iter().any(|c| c.id == id);
        let (sin, cos) = angle_deg.to_radians().sin_cos();
        for y in 0..size {
            for x in 0..size {
                let p = y * size + x;
                if !is_field(out[p]) {
                    continue;
                }
                let (u, v) = parcel_of(x, y, (sin, cos), width, length);
                let r = unit_hash(opts.seed, u, v) * total;
                let mut acc = 0f32;
                out[p] = fields
                    .iter()
                    .find(|c| {
                        acc += c.share;
                        r < acc
                    })
                    .or(fields.last())
                    .map_or(out[p], |c| c.id);
            }
        }
    }
    out
}

/// The parcel (along, across) holding pixel `(x, y)` on a grid of `width × length` parcels turned by the
/// angle whose (sin, cos) is given.
fn parcel_of(
    x: usize,
    y: usize,
    (sin, cos): (f32, f32),
    width: usize,
    length: usize,
) -> (i64, i64) {
    let (fx, fy) = (x as f32, y as f32);
    let u = ((fx * cos + fy * sin) / length.max(1) as f32).floor() as i64;
    let v = ((-fx * sin + fy * cos) / width.max(1) as f32).floor() as i64;
    (u, v)
}

/// A uniform number in [0, 1) from a seed and a parcel (splitmix64).
fn unit_hash(seed: u64, u: i64, v: i64) -> f32 {
    let mut z = seed
        ^ (u as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (v as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// A point label sampled from the demo ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoLabel {
    /// Longitude, EPSG:4326.
    pub lon: f64,
    /// Latitude, EPSG:4326.
    pub lat: f64,
    /// Class id (one of the scene's classes).
    pub class_id: u8,
    /// The labelled pixel of the ground truth, `(row, column)`.
    pub pixel: (usize, usize),
}

/// A small square polygon label sampled from the demo ground truth: every pixel inside is of its class.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoPolygon {
    /// The closed ring, `[lon, lat]` in EPSG:4326 (five corners, the first repeated).
    pub ring: Vec<[f64; 2]>,
    /// Class id.
    pub class_id: u8,
    /// Its pixels in the ground truth: top-left `(row, column)` and side.
    pub pixels: (usize, usize, usize),
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
    let truth = land_cover_of(opts);
    let margin = (inset / 10.0).ceil() as usize;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<(usize, usize)>> = vec![Vec::new(); 256];
    for r in margin..n.saturating_sub(margin) {
        for c in margin..n.saturating_sub(margin) {
            by_class[usize::from(truth[r * n + c])].push((r, c));
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
            pixel: (p.0, p.1),
        })
        .collect())
}

/// Samples up to `per_class` square polygons of `side` pixels per class whose pixels are all of the
/// class, `inset` metres inside the scene's edges, like the few hand-drawn areas of a real label file.
/// Same options and seed, same polygons.
pub fn sample_label_polygons(
    opts: &DemoOptions,
    per_class: usize,
    side: usize,
    inset: f64,
    seed: u64,
) -> Result<Vec<DemoPolygon>> {
    let n = opts.size;
    let truth = land_cover_of(opts);
    let margin = (inset / 10.0).ceil() as usize;
    let side = side.max(1);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9017_9017);
    let hi = n.saturating_sub(margin + side);
    let mut found: Vec<(usize, usize, u8)> = Vec::new();
    if hi > margin {
        let mut ids: Vec<u8> = opts.classes.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        for id in ids {
            let mut mine: Vec<(usize, usize)> = Vec::new();
            for _ in 0..per_class * 200 {
                if mine.len() >= per_class {
                    break;
                }
                let (r, c) = (rng.random_range(margin..hi), rng.random_range(margin..hi));
                let pure = (r..r + side).all(|y| (c..c + side).all(|x| truth[y * n + x] == id));
                let apart = mine
                    .iter()
                    .all(|&(r2, c2)| r.abs_diff(r2) > side || c.abs_diff(c2) > side);
                if pure && apart {
                    mine.push((r, c));
                }
            }
            found.extend(mine.into_iter().map(|(r, c)| (r, c, id)));
        }
    }
    let (x0, y0) = opts.origin;
    let to_wgs = transform(opts.epsg, 4326)?;
    found
        .into_iter()
        .map(|(r, c, id)| {
            let corners = [(0, 0), (side, 0), (side, side), (0, side), (0, 0)];
            let mut xs: Vec<f64> = corners
                .iter()
                .map(|&(dc, _)| x0 + (c + dc) as f64 * 10.0)
                .collect();
            let mut ys: Vec<f64> = corners
                .iter()
                .map(|&(_, dr)| y0 - (r + dr) as f64 * 10.0)
                .collect();
            to_wgs
                .transform_coords(&mut xs, &mut ys, &mut [])
                .map_err(Error::gdal("projecting the demo polygons"))?;
            Ok(DemoPolygon {
                ring: xs.iter().zip(&ys).map(|(&x, &y)| [x, y]).collect(),
                class_id: id,
                pixels: (r, c, side),
            })
        })
        .collect()
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
    /// Compared pixels within [`EDGE_PX`] pixels (30 m) of a pixel of another true class.
    pub edge_pixels: usize,
    /// Of those, pixels where the map names the true class.
    pub edge_correct: usize,
}

/// How near (pixels, in a square neighbourhood) a pixel of another class makes a pixel an edge pixel.
pub const EDGE_PX: usize = 3;

impl MapScore {
    /// Pixel accuracy of the map.
    #[must_use]
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.pixels.max(1) as f64
    }

    /// Pixel accuracy of the map within 30 m of a class edge of the ground truth (`None` without edges).
    #[must_use]
    pub fn edge_accuracy(&self) -> Option<f64> {
        (self.edge_pixels > 0).then(|| self.edge_correct as f64 / self.edge_pixels as f64)
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

/// A window to score: the EPSG code of its UTM zone and its GDAL geotransform.
pub type ScoredWindow = (u32, [f64; 6]);

/// Scores a class map (a 10 m GeoTIFF in a UTM zone, e.g. a `combine` output) against the ground
/// truth of the dataset `opts` describes, over the windows (`window_px` pixels a side) with the given
/// zones and geotransforms; windows of another zone than the map's are looked up through a
/// reprojection of their pixel centres. A map pixel without data counts as wrong.
pub fn score_class_map(
    map: &Path,
    opts: &DemoOptions,
    windows: &[ScoredWindow],
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
    let map_epsg = ds
        .spatial_ref()
        .ok()
        .and_then(|s| s.auth_code().ok())
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(opts.epsg);
    let (w, h) = ds.raster_size();
    let values: Vec<u8> = ds
        .rasterband(1)
        .and_then(|b| b.read_band_as::<u8>())
        .map_err(Error::gdal("reading the class map"))?
        .into_shape_and_vec()
        .1;
    let to_map = zone_transforms(windows, map_epsg)?;
    score_with(opts, windows, window_px, |i, x, y| {
        let (mut xs, mut ys) = ([x], [y]);
        if let Some(t) = to_map.get(&windows[i].0) {
            t.transform_coords(&mut xs, &mut ys, &mut []).ok()?;
        }
        let mc = ((xs[0] - gt[0]) / gt[1]).floor();
        let mr = ((ys[0] - gt[3]) / gt[5]).floor();
        (mc >= 0.0 && mr >= 0.0 && (mc as usize) < w && (mr as usize) < h)
            .then(|| values[mr as usize * w + mc as usize])
    })
}

/// Scores per-window class maps (row-major, `window_px` a side, class ids) against the ground truth;
/// each window is `(EPSG, geotransform)` and its map.
pub fn score_window_maps(
    opts: &DemoOptions,
    windows: &[(ScoredWindow, Vec<u8>)],
    window_px: usize,
) -> Result<MapScore> {
    let grids: Vec<ScoredWindow> = windows.iter().map(|w| w.0).collect();
    score_with(opts, &grids, window_px, |i, x, y| {
        let ((_, gt), map) = &windows[i];
        let c = ((x - gt[0]) / gt[1]).floor();
        let r = ((y - gt[3]) / gt[5]).floor();
        if c < 0.0 || r < 0.0 || c >= window_px as f64 || r >= window_px as f64 {
            return None;
        }
        map.get(r as usize * window_px + c as usize).copied()
    })
}

/// A transform into EPSG `to` from each other zone the windows lie in.
fn zone_transforms(
    windows: &[ScoredWindow],
    to: u32,
) -> Result<std::collections::HashMap<u32, gdal::spatial_ref::CoordTransform>> {
    let mut out = std::collections::HashMap::new();
    for &(epsg, _) in windows {
        if epsg != to && !out.contains_key(&epsg) {
            out.insert(epsg, transform(epsg, to)?);
        }
    }
    Ok(out)
}

/// Compares `map_at(window index, x, y)` (a pixel centre in the window's own CRS) with the ground
/// truth over the windows; ground-truth pixels covered twice count once. A window in the demo's
/// zone is walked on the demo's 10 m grid; one in another zone on its own grid, each pixel centre
/// reprojected to find its ground-truth pixel.
fn score_with(
    opts: &DemoOptions,
    windows: &[ScoredWindow],
    window_px: usize,
    map_at: impl Fn(usize, f64, f64) -> Option<u8>,
) -> Result<MapScore> {
    let truth = land_cover_of(opts);
    let edges = edge_mask(&truth, opts.size, EDGE_PX);
    let n = opts.size as i64;
    let mut score = MapScore {
        truth_counts: vec![0; 256],
        ..MapScore::default()
    };
    let mut seen = std::collections::HashSet::new();
    let mut count = |score: &mut MapScore, r: i64, c: i64, right: &dyn Fn(u8) -> bool| {
        if !(0..n).contains(&r) || !(0..n).contains(&c) || !seen.insert((r, c)) {
            return;
        }
        let p = (r * n + c) as usize;
        let t = truth[p];
        score.pixels += 1;
        score.truth_counts[usize::from(t)] += 1;
        let ok = right(t);
        score.correct += usize::from(ok);
        if edges[p] {
            score.edge_pixels += 1;
            score.edge_correct += usize::from(ok);
        }
    };
    let to_demo = zone_transforms(windows, opts.epsg)?;
    for (i, &(epsg, wgt)) in windows.iter().enumerate() {
        if epsg == opts.epsg {
            // The window's pixels, on the demo's 10 m grid.
            let c0 = ((wgt[0] - opts.origin.0) / 10.0).round() as i64;
            let r0 = ((opts.origin.1 - wgt[3]) / 10.0).round() as i64;
            let side = ((wgt[1] * window_px as f64) / 10.0).round() as i64;
            for r in r0..r0 + side {
                for c in c0..c0 + side {
                    let x = opts.origin.0 + (c as f64 + 0.5) * 10.0;
                    let y = opts.origin.1 - (r as f64 + 0.5) * 10.0;
                    count(&mut score, r, c, &|t| map_at(i, x, y) == Some(t));
                }
            }
            continue;
        }
        let Some(to) = to_demo.get(&epsg) else {
            continue;
        };
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for r in 0..window_px {
            for c in 0..window_px {
                xs.push(wgt[0] + (c as f64 + 0.5) * wgt[1]);
                ys.push(wgt[3] + (r as f64 + 0.5) * wgt[5]);
            }
        }
        let (own_x, own_y) = (xs.clone(), ys.clone());
        to.transform_coords(&mut xs, &mut ys, &mut [])
            .map_err(Error::gdal(format!(
                "reprojecting window pixels of EPSG:{epsg} to EPSG:{}",
                opts.epsg
            )))?;
        for q in 0..xs.len() {
            let c = ((xs[q] - opts.origin.0) / 10.0).floor() as i64;
            let r = ((opts.origin.1 - ys[q]) / 10.0).floor() as i64;
            let (x, y) = (own_x[q], own_y[q]);
            count(&mut score, r, c, &|t| map_at(i, x, y) == Some(t));
        }
    }
    Ok(score)
}

/// Whether each pixel of a `size²` class map has a pixel of another class within `radius` pixels (square
/// neighbourhood): the class's minimum and maximum there differ.
pub fn edge_mask(classes: &[u8], size: usize, radius: usize) -> Vec<bool> {
    let filter = |v: &[u8], horizontal: bool, take_max: bool| -> Vec<u8> {
        let mut out = vec![0u8; v.len()];
        for y in 0..size {
            for x in 0..size {
                let (lo, hi, at) = if horizontal {
                    (x.saturating_sub(radius), (x + radius).min(size - 1), y)
                } else {
                    (y.saturating_sub(radius), (y + radius).min(size - 1), x)
                };
                let vals = (lo..=hi).map(|i| {
                    if horizontal {
                        v[at * size + i]
                    } else {
                        v[i * size + at]
                    }
                });
                out[y * size + x] = if take_max {
                    vals.max().unwrap_or(0)
                } else {
                    vals.min().unwrap_or(0)
                };
            }
        }
        out
    };
    let max = filter(&filter(classes, true, true), false, true);
    let min = filter(&filter(classes, true, false), false, false);
    max.iter().zip(&min).map(|(a, b)| a != b).collect()
}

/// Cropland greenness (0 bare … 1 full canopy) by month, peaking in July.
pub fn crop_greenness(month: u32) -> f32 {
    crop_greenness_at(month as f32)
}

fn crop_greenness_at(month: f32) -> f32 {
    let d = (month - 7.0) / 2.5;
    (-d * d).exp()
}

/// Grassland greenness by month, peaking in May.
fn grass_greenness(month: u32) -> f32 {
    grass_greenness_at(month as f32)
}

fn grass_greenness_at(month: f32) -> f32 {
    let d = (month - 5.0) / 2.0;
    0.2 + 0.8 * (-d * d).exp()
}

/// The spectrum of a field of `surface` whose variation draw is `u` (0–1) in `month`: its seasonal
/// cycle shifted by `(u − ½)·2·shift` months, or mixed with a similar surface by up to `0.4·shift`.
fn varied_spectrum(surface: Surface, month: u32, u: f32, shift: f32) -> [f32; 12] {
    let offset = (u - 0.5) * 2.0 * shift;
    let m = month as f32 + offset;
    let a = 0.4 * shift.min(2.5) * u;
    match surface {
        Surface::Water => WATER,
        Surface::Forest => mix(&SHRUB, &FOREST, a),
        Surface::Shrubland => mix(&GRASS_DRY, &SHRUB, a),
        Surface::Grassland => mix(&GRASS_GREEN, &GRASS_DRY, grass_greenness_at(m)),
        Surface::Cropland => mix(&CROP_GREEN, &CROP_BARE, crop_greenness_at(m)),
        Surface::Built => mix(&CROP_BARE, &BUILT, a),
    }
}

fn mix(a: &[f32; 12], b: &[f32; 12], g: f32) -> [f32; 12] {
    let mut s = [0f32; 12];
    for i in 0..12 {
        s[i] = a[i] * g + b[i] * (1.0 - g);
    }
    s
}

fn spectrum(surface: Surface, month: u32) -> [f32; 12] {
    match surface {
        Surface::Water => WATER,
        Surface::Forest => FOREST,
        Surface::Shrubland => SHRUB,
        Surface::Grassland => mix(&GRASS_GREEN, &GRASS_DRY, grass_greenness(month)),
        Surface::Cropland => mix(&CROP_GREEN, &CROP_BARE, crop_greenness(month)),
        Surface::Built => BUILT,
    }
}

/// Sentinel-1 (VV, VH) linear backscatter per surface.
fn backscatter(surface: Surface, month: u32) -> [f32; 2] {
    match surface {
        Surface::Water => [0.003, 0.0005],
        Surface::Forest => [0.08, 0.02],
        Surface::Shrubland => [0.05, 0.012],
        Surface::Grassland => {
            let g = grass_greenness(month);
            [0.03 + 0.02 * g, 0.004 + 0.006 * g]
        }
        Surface::Cropland => {
            let g = crop_greenness(month);
            [0.04 + 0.04 * g, 0.006 + 0.014 * g]
        }
        Surface::Built => [0.3, 0.04],
    }
}

/// Surface temperature of a clear pixel, kelvin: warmest in mid-year, water coolest, built-up warmest.
fn surface_kelvin(surface: Surface, month: u32) -> f32 {
    let season = 8.0 * (std::f32::consts::PI * (month as f32 - 1.0) / 11.0).sin();
    let base = match surface {
        Surface::Water => 283.0,
        Surface::Forest => 287.0,
        Surface::Cropland => 290.0 - 3.0 * crop_greenness(month),
        Surface::Grassland => 290.0 - 2.0 * grass_greenness(month),
        Surface::Shrubland => 292.0,
        Surface::Built => 296.0,
    };
    base + season
}

/// The scene classification class of a clear pixel of the surface.
fn clear_scl(surface: Surface) -> f32 {
    match surface {
        Surface::Water => 6.0,
        Surface::Built => 5.0,
        _ => 4.0,
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

/// One Sentinel-2 pass of a demo scene, at 10 m.
#[derive(Debug, Clone)]
pub struct DemoPass {
    /// Month (1–12) of the scene year.
    pub month: u32,
    /// Day of the month.
    pub day: u32,
    /// Pass of the month (0: mostly clear, 1: cloudy).
    pub index: usize,
    /// The 12 bands in Sentinel-2 model order (blue, green, red, nir, …), DN, `size²` each.
    pub bands: Vec<Vec<f32>>,
    /// Scene classification at 10 m (before the 20 m product's dilation).
    pub scl: Vec<f32>,
    /// The same bands without clouds, cloud shadows or haze (empty unless asked for).
    pub clean: Vec<Vec<f32>>,
    /// Cloud cover, percent.
    pub cloud_pct: f64,
}

/// The Sentinel-2 passes of the scene `opts` describes, in time order, with their clean surface
/// reflectance: the same pixels [`generate_demo_data`] writes, before resampling to 20/60 m.
pub fn demo_passes(opts: &DemoOptions) -> Result<Vec<DemoPass>> {
    opts.validate()?;
    let classes = land_cover_of(opts);
    let mut passes = Vec::new();
    synthesize(
        opts,
        &classes,
        true,
        &mut |p| {
            passes.push(p);
            Ok(())
        },
        &mut |_, _| Ok(()),
    )?;
    Ok(passes)
}

/// Draws the scene's passes month by month (two Sentinel-2 passes, then one Sentinel-1 pass) from one
/// random stream, handing each to its callback.
fn synthesize(
    opts: &DemoOptions,
    classes: &[u8],
    keep_clean: bool,
    on_s2: &mut dyn FnMut(DemoPass) -> Result<()>,
    on_s1: &mut dyn FnMut(u32, [Vec<f32>; 2]) -> Result<()>,
) -> Result<()> {
    let n = opts.size;
    let surface_of = opts.surfaces();
    let cl = opts.clouds;
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed);
    let texture = value_noise(&mut rng, n, n, 8, 2);
    // Within-class variation, from random streams of its own (without it the scene is unchanged).
    let var = opts.variation;
    let field_u = if var.field_shift > 0.0 {
        field_draws(opts, classes)
    } else {
        Vec::new()
    };
    // Sum of four uniforms: mean 2, variance 1/3.
    let gauss = |rng: &mut StdRng| -> f32 {
        let s: f32 = (0..4).map(|_| rng.random::<f32>()).sum();
        (s - 2.0) * 3f32.sqrt()
    };
    let mixed = mixed_pixels(opts, classes, &surface_of, gauss);
    let mut nrng = StdRng::seed_from_u64(opts.seed ^ 0x0153_7e11);
    for &month in &opts.months {
        let spectra: Vec<[f32; 12]> = surface_of.iter().map(|&s| spectrum(s, month)).collect();
        let pixel_spectra: Vec<[f32; 12]> = if field_u.is_empty() && mixed.is_empty() {
            Vec::new()
        } else {
            (0..n * n)
                .map(|p| {
                    let surface = surface_of[usize::from(classes[p])];
                    let own = match field_u.get(p) {
                        Some(&u) => varied_spectrum(surface, month, u, var.field_shift),
                        None => spectrum(surface, month),
                    };
                    match mixed.get(p) {
                        Some(&(a, other)) if a > 0.0 => mix(&spectrum(other, month), &own, a),
                        _ => own,
                    }
                })
                .collect()
        };
        // Two Sentinel-2 passes a month: one mostly clear, one cloudy.
        for (k, (day, cover)) in [(6u32, cl.cover[0]), (21, cl.cover[1])]
            .into_iter()
            .enumerate()
        {
            let clouds = value_noise(&mut rng, n, n, 64, 3);
            let thr = quantile(&clouds, 1.0 - cover);
            let core = quantile(&clouds, 1.0 - cover * 0.5);
            // Cloud edges between `thr` and `mask_thr` are thin, and the SCL calls them clear.
            let mask_thr = if cl.unmasked_edge > 0.0 {
                quantile(&clouds, 1.0 - cover * (1.0 - cl.unmasked_edge))
            } else {
                thr
            };
            // Haze the SCL misses, from its own random stream (the scene's other pixels stay the same).
            let haze: Vec<f32> = if cl.haze > 0.0 && cl.haze_opacity > 0.0 {
                let mut hrng = StdRng::seed_from_u64(
                    opts.seed ^ 0x4a2e_0000 ^ (u64::from(month) << 8) ^ k as u64,
                );
                let h = value_noise(&mut hrng, n, n, 96, 2);
                let hq = quantile(&h, 1.0 - cl.haze);
                h.iter()
                    .map(|&v| {
                        let t = ((v - hq) / (1.0 - hq).max(1e-3) * 4.0).clamp(0.0, 1.0);
                        cl.haze_opacity * t * t * (3.0 - 2.0 * t)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let shift = 12usize;
            let mut scl = vec![0f32; n * n];
            let mut bands: Vec<Vec<f32>> = vec![vec![0f32; n * n]; 12];
            let mut clean: Vec<Vec<f32>> = if keep_clean {
                vec![vec![0f32; n * n]; 12]
            } else {
                Vec::new()
            };
            for y in 0..n {
                for x in 0..n {
                    let p = y * n + x;
                    let c = classes[p];
                    let sp = pixel_spectra.get(p).unwrap_or(&spectra[usize::from(c)]);
                    let tex = 0.9 + 0.2 * texture[p] + rng.random_range(-0.02..0.02);
                    let cloud = clouds[p];
                    let shadow =
                        y >= shift && x >= shift && clouds[(y - shift) * n + x - shift] > thr;
                    let edge = cloud > thr && cloud <= mask_thr;
                    let hz = haze.get(p).copied().unwrap_or(0.0);
                    let mut class_scl = clear_scl(surface_of[usize::from(c)]);
                    for b in 0..12 {
                        let mut v = sp[b] * tex;
                        if var.pixel_noise > 0.0 {
                            v *= (1.0 + var.pixel_noise * gauss(&mut nrng)).max(0.05);
                        }
                        if keep_clean {
                            clean[b][p] = v;
                        }
                        if edge {
                            let t = (cloud - thr) / (mask_thr - thr).max(1e-6);
                            let a = 0.1 + 0.4 * t;
                            v = v * (1.0 - a) + a * 6500.0;
                        } else if cloud > thr {
                            v = 6500.0 + 2500.0 * (cloud - thr) / (1.0 - thr).max(1e-3);
                        } else if shadow {
                            v *= 0.35;
                        }
                        if hz > 0.0 && cloud <= thr {
                            v = v * (1.0 - hz) + hz * HAZE[b];
                        }
                        bands[b][p] = v;
                    }
                    if edge {
                        // Missed by the mask.
                    } else if cloud > core {
                        class_scl = 9.0;
                    } else if cloud > thr {
                        class_scl = 8.0;
                    } else if shadow {
                        class_scl = 3.0;
                    }
                    scl[p] = class_scl;
                }
            }
            let cloud_pct = (clouds.iter().filter(|&&c| c > thr).count() as f64 / (n * n) as f64
                * 100.0
                * 100.0)
                .round()
                / 100.0;
            on_s2(DemoPass {
                month,
                day,
                index: k,
                bands,
                scl,
                clean,
                cloud_pct,
            })?;
        }
        let mut img: [Vec<f32>; 2] = [Vec::new(), Vec::new()];
        for (b, out) in img.iter_mut().enumerate() {
            *out = (0..n * n)
                .map(|p| {
                    let speckle: f32 = (0..4).map(|_| rng.random::<f32>()).sum::<f32>() / 2.0;
                    let own = backscatter(surface_of[usize::from(classes[p])], month)[b];
                    // A mixed pixel scatters as its parts do, in linear power.
                    let sigma0 = match mixed.get(p) {
                        Some(&(a, other)) => own * (1.0 - a) + backscatter(other, month)[b] * a,
                        None => own,
                    };
                    sigma0 * speckle.max(0.05)
                })
                .collect();
        }
        on_s1(month, img)?;
    }
    Ok(())
}

/// Each pixel's share of another class and that class's surface (empty without `pixel_mix`).
fn mixed_pixels(
    opts: &DemoOptions,
    classes: &[u8],
    surface_of: &[Surface; 256],
    gauss: impl Fn(&mut StdRng) -> f32,
) -> Vec<(f32, Surface)> {
    let sigma = opts.variation.pixel_mix;
    if sigma <= 0.0 || opts.classes.len() < 2 {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x0000_0317_c5ed);
    classes
        .iter()
        .map(|&c| {
            let a = (sigma * gauss(&mut rng)).abs().min(0.9);
            // One of the other classes, evenly.
            let own = opts.classes.iter().position(|o| o.id == c);
            let mut pick = rng.random_range(0..opts.classes.len() - 1);
            if own.is_some_and(|i| pick >= i) {
                pick += 1;
            }
            let other = opts
                .classes
                .get(pick)
                .map_or(surface_of[usize::from(c)], |o| o.surface);
            (a, other)
        })
        .collect()
}

/// Each pixel's variation draw (0–1): one per parcel of farmland with [`FieldLayout::Parcels`], else a
/// smooth field about 200 m across.
fn field_draws(opts: &DemoOptions, classes: &[u8]) -> Vec<f32> {
    let n = opts.size;
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x00f1_e1d5);
    let smooth = value_noise(&mut rng, n, n, 20, 2);
    let FieldLayout::Parcels {
        width,
        length,
        angle_deg,
    } = opts.fields
    else {
        return smooth;
    };
    let is_field = |id: u8| opts.class(id).is_some_and(|c| c.surface.is_field());
    let (sin, cos) = angle_deg.to_radians().sin_cos();
    (0..n * n)
        .map(|p| {
            if !is_field(classes[p]) {
                return smooth[p];
            }
            let (u, v) = parcel_of(p % n, p / n, (sin, cos), width, length);
            unit_hash(opts.seed ^ 0x00f1_e1d5, u, v)
        })
        .collect()
}

/// Generates the demo catalogue under `dir`: `catalog.json`, collections, items, COGs, `ground_truth.tif`,
/// `classes.json` and `aoi.geojson`. Returns the path of `catalog.json`.
pub fn generate_demo_data(dir: &Path, opts: &DemoOptions) -> Result<PathBuf> {
    opts.validate()?;
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let n = opts.size;
    let (x0, y0) = opts.origin;
    let gt = |res: f64| [x0, res, 0.0, y0, 0.0, -res];
    let classes = land_cover_of(opts);
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
        "classes": opts.classes.iter().map(|c| json!({"id": c.id, "name": c.name})).collect::<Vec<_>>(),
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

    let mut s2_items = Vec::new();
    let mut s1_items = Vec::new();
    let mut landsat_items = Vec::new();
    let zone = opts.epsg % 100;
    let mut on_s2 = |pass: DemoPass| -> Result<()> {
        let (month, day, k) = (pass.month, pass.day, pass.index);
        let date = NaiveDate::from_ymd_opt(opts.year, month, day)
            .ok_or_else(|| Error::InvalidRequest(format!("bad demo month {month}")))?;
        let id = format!("S2B_{zone:02}TWL_{}_0_L2A", date.format("%Y%m%d"));
        let item_dir = dir.join("sentinel-2-l2a").join(&id);
        std::fs::create_dir_all(&item_dir).map_err(io(&item_dir))?;
        let (bands, scl) = (&pass.bands, &pass.scl);
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
            .with_ymd_and_hms(opts.year, month, day, 10, 0, k as u32)
            .single()
            .ok_or_else(|| Error::InvalidRequest("bad demo date".into()))?;
        let item = item_json(
            &id,
            "sentinel-2-l2a",
            &footprint,
            dt,
            json!({
                "platform": "sentinel-2b", "constellation": "sentinel-2", "instruments": ["msi"],
                "eo:cloud_cover": pass.cloud_pct, "s2:processing_baseline": "05.10",
                "earthsearch:boa_offset_applied": true, "proj:code": format!("EPSG:{}", opts.epsg),
                "mgrs:utm_zone": zone,
            }),
            assets,
        );
        write_json(&item_dir.join(format!("{id}.json")), &item)?;
        s2_items.push(id);
        if opts.landsat && pass.index == 0 {
            landsat_items.push(write_landsat_scene(dir, opts, &classes, &pass, &footprint)?);
        }
        Ok(())
    };
    let mut on_s1 = |month: u32, img: [Vec<f32>; 2]| -> Result<()> {
        // One Sentinel-1 pass a month, linear power with speckle.
        let date = NaiveDate::from_ymd_opt(opts.year, month, 12)
            .ok_or_else(|| Error::InvalidRequest(format!("bad demo month {month}")))?;
        let id = format!("S1A_IW_GRDH_1SDV_{}T050000", date.format("%Y%m%d"));
        let item_dir = dir.join("sentinel-1-grd").join(&id);
        std::fs::create_dir_all(&item_dir).map_err(io(&item_dir))?;
        let mut assets = serde_json::Map::new();
        for (b, key) in ["vv", "vh"].iter().enumerate() {
            write_cog(
                &item_dir.join(format!("{key}.tif")),
                &img[b],
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
            .with_ymd_and_hms(opts.year, month, 12, 5, 0, 0)
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
        Ok(())
    };
    synthesize(opts, &classes, false, &mut on_s2, &mut on_s1)?;
    let mut children = Vec::new();
    for (coll, items, title) in [
        ("sentinel-2-l2a", &s2_items, "Sentinel-2 L2A (demo)"),
        ("sentinel-1-grd", &s1_items, "Sentinel-1 GRD (demo)"),
        (
            "landsat-c2-l2",
            &landsat_items,
            "Landsat Collection 2 Level-2 (demo)",
        ),
    ] {
        if items.is_empty() {
            continue;
        }
        children.push(json!({"rel": "child", "href": format!("./{coll}/collection.json"), "type": "application/json"}));
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
                       "temporal": {"interval": [[format!("{}-01-01T00:00:00Z", opts.year), format!("{}-12-31T23:59:59Z", opts.year)]]}},
            "links": links,
        });
        write_json(&dir.join(coll).join("collection.json"), &c)?;
    }
    let mut links =
        vec![json!({"rel": "root", "href": "./catalog.json", "type": "application/json"})];
    links.extend(children);
    let catalog = json!({
        "type": "Catalog", "stac_version": "1.1.0", "id": "groundwork-demo",
        "description": format!("Groundwork offline demo catalogue (seed {})", opts.seed),
        "links": links,
    });
    let path = dir.join("catalog.json");
    write_json(&path, &catalog)?;
    Ok(path)
}

/// Writes one Landsat 9 Collection 2 Level-2 scene drawn from a Sentinel-2 pass: its reflectance
/// (clouds, shadows and haze included) at 30 m as Level-2 DN (ρ = DN · 2.75e-5 − 0.2), the surface
/// temperature (`lwir11`, K = DN · 0.00341802 + 149; clouds are cold) and `QA_PIXEL` from the pass's
/// scene classification (cloud and dilated cloud, shadow, clear, water). Returns the item id.
fn write_landsat_scene(
    dir: &Path,
    opts: &DemoOptions,
    classes: &[u8],
    pass: &DemoPass,
    footprint: &geojson::Geometry,
) -> Result<String> {
    let n = opts.size;
    let (x0, y0) = opts.origin;
    let day = (pass.day + 3).min(28);
    let date = NaiveDate::from_ymd_opt(opts.year, pass.month, day)
        .ok_or_else(|| Error::InvalidRequest(format!("bad demo month {}", pass.month)))?;
    let stamp = date.format("%Y%m%d");
    let id = format!("LC09_L2SP_190028_{stamp}_{stamp}_02_T1");
    let item_dir = dir.join("landsat-c2-l2").join(&id);
    std::fs::create_dir_all(&item_dir).map_err(|source| Error::Io {
        path: item_dir.display().to_string(),
        source,
    })?;
    let gt = [x0, 30.0, 0.0, y0, 0.0, -30.0];
    let (rs, ro) = crate::modality::landsat_l2::REFLECTANCE;
    let (ts, to) = crate::modality::landsat_l2::TEMPERATURE;
    let cog = "image/tiff; application=geotiff; profile=cloud-optimized";
    let mut assets = serde_json::Map::new();
    let mut m = 0;
    for (key, band, s2) in LANDSAT_ASSETS {
        let (img, side) = downsample(&pass.bands[s2], n, 3);
        m = side;
        let dn: Vec<u16> = img
            .iter()
            .map(|v| ((f64::from(*v) / 10_000.0 - ro) / rs).clamp(1.0, 65_535.0) as u16)
            .collect();
        write_cog(
            &item_dir.join(format!("{key}.tif")),
            &dn,
            m,
            m,
            gt,
            opts.epsg,
            Some(0.0),
        )?;
        assets.insert(
            key.to_string(),
            json!({"href": format!("./{key}.tif"), "type": cog, "roles": ["data", "reflectance"],
                   "eo:bands": [{"name": band}], "gsd": 30,
                   "raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": rs, "offset": ro}]}),
        );
    }
    let surface_of = opts.surfaces();
    let cloudy = |c: f32| c == 8.0 || c == 9.0;
    let kelvin: Vec<f32> = (0..n * n)
        .map(|p| {
            if cloudy(pass.scl[p]) {
                262.0
            } else {
                let k = surface_kelvin(surface_of[usize::from(classes[p])], pass.month);
                if pass.scl[p] == 3.0 { k - 4.0 } else { k }
            }
        })
        .collect();
    let (k30, _) = downsample(&kelvin, n, 3);
    let st: Vec<u16> = k30
        .iter()
        .map(|k| ((f64::from(*k) - to) / ts).clamp(1.0, 65_535.0) as u16)
        .collect();
    write_cog(
        &item_dir.join("lwir11.tif"),
        &st,
        m,
        m,
        gt,
        opts.epsg,
        Some(0.0),
    )?;
    assets.insert(
        "lwir11".into(),
        json!({"href": "./lwir11.tif", "type": cog, "roles": ["data", "temperature"],
               "eo:bands": [{"name": "ST_B10"}], "gsd": 100,
               "raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": ts, "offset": to, "unit": "kelvin"}]}),
    );
    // QA_PIXEL: a 30 m pixel is cloud if any of its 10 m pixels is, shadow likewise; cloud is
    // dilated by one 30 m pixel (bit 1), as in the real product.
    let (cloud_bit, dilated, shadow_bit, clear_bit, water_bit) =
        (1u16 << 3, 1u16 << 1, 1u16 << 4, 1u16 << 6, 1u16 << 7);
    let mut qa = vec![0u16; m * m];
    let mut clouds = vec![false; m * m];
    for j in 0..m {
        for i in 0..m {
            let (mut c, mut s, mut w, mut k) = (false, false, 0usize, 0usize);
            for y in j * 3..(j * 3 + 3).min(n) {
                for x in i * 3..(i * 3 + 3).min(n) {
                    let p = y * n + x;
                    c |= cloudy(pass.scl[p]);
                    s |= pass.scl[p] == 3.0;
                    w += usize::from(surface_of[usize::from(classes[p])] == Surface::Water);
                    k += 1;
                }
            }
            clouds[j * m + i] = c;
            qa[j * m + i] = if c {
                cloud_bit | dilated
            } else if s {
                shadow_bit
            } else if 2 * w > k {
                clear_bit | water_bit
            } else {
                clear_bit
            };
        }
    }
    for j in 0..m {
        for i in 0..m {
            let near = (j.saturating_sub(1)..(j + 2).min(m))
                .any(|y| (i.saturating_sub(1)..(i + 2).min(m)).any(|x| clouds[y * m + x]));
            if near && !clouds[j * m + i] {
                qa[j * m + i] = (qa[j * m + i] & !clear_bit) | dilated;
            }
        }
    }
    write_cog(
        &item_dir.join("qa_pixel.tif"),
        &qa,
        m,
        m,
        gt,
        opts.epsg,
        Some(1.0),
    )?;
    assets.insert(
        "qa_pixel".into(),
        json!({"href": "./qa_pixel.tif", "type": cog, "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
               "gsd": 30, "raster:bands": [{"nodata": 1, "data_type": "uint16", "unit": "bit index"}]}),
    );
    let cloud_pct =
        (clouds.iter().filter(|c| **c).count() as f64 / (m * m) as f64 * 10_000.0).round() / 100.0;
    let dt = Utc
        .with_ymd_and_hms(opts.year, pass.month, day, 9, 50, 0)
        .single()
        .ok_or_else(|| Error::InvalidRequest("bad demo date".into()))?;
    let item = item_json(
        &id,
        "landsat-c2-l2",
        footprint,
        dt,
        json!({
            "platform": "landsat-9", "constellation": "landsat", "instruments": ["oli", "tirs"],
            "eo:cloud_cover": cloud_pct, "landsat:wrs_path": "190", "landsat:wrs_row": "028",
            "landsat:collection_category": "T1", "proj:code": format!("EPSG:{}", opts.epsg),
        }),
        assets,
    );
    write_json(&item_dir.join(format!("{id}.json")), &item)?;
    Ok(id)
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

    #[test]
    fn variation_spreads_one_class_across_fields_and_pixels_and_the_classic_scene_has_none() {
        let scene = DemoOptions {
            size: 96,
            ..DemoOptions::scene("us-cropland", 3).unwrap()
        };
        assert!(scene.variation.pixel_noise > 0.0 && scene.variation.field_shift > 0.0);
        let plain = DemoOptions {
            variation: Variation::default(),
            ..scene.clone()
        };
        let truth = land_cover_of(&scene);
        let crop = scene
            .classes
            .iter()
            .find(|c| c.surface == Surface::Cropland)
            .unwrap()
            .id;
        // Relative spread of the red band over the cropland of the first, mostly clear pass (its clean
        // surface: clouds aside).
        let spread = |opts: &DemoOptions| -> f32 {
            let pass = &demo_passes(opts).unwrap()[0];
            let v: Vec<f32> = (0..truth.len())
                .filter(|&p| truth[p] == crop)
                .map(|p| pass.clean[2][p])
                .collect();
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
            var.sqrt() / mean
        };
        let (varied, flat) = (spread(&scene), spread(&plain));
        assert!(varied > 2.0 * flat, "varied {varied}, plain {flat}");
        assert_eq!(DemoOptions::default().variation, Variation::default());
        assert!(
            DemoOptions {
                variation: Variation {
                    pixel_noise: 0.0,
                    pixel_mix: 1.5,
                    field_shift: 0.0
                },
                ..DemoOptions::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn the_classic_scene_is_the_default_and_every_named_scene_is_valid_and_different() {
        assert_eq!(
            DemoOptions::scene("classic", 42).unwrap(),
            DemoOptions::default()
        );
        assert!(DemoOptions::scene("nowhere", 1).is_err());
        let scenes: Vec<DemoOptions> = SCENES
            .iter()
            .map(|(name, _)| DemoOptions::scene(name, 5).unwrap())
            .collect();
        for s in &scenes {
            s.validate().unwrap();
            assert_eq!(s.seed, 5);
        }
        let zones: std::collections::HashSet<u32> = scenes.iter().map(|s| s.epsg).collect();
        assert!(zones.len() >= 5 && zones.contains(&32737) && zones.contains(&32618));
        assert!(
            scenes
                .iter()
                .any(|s| s.classes.iter().any(|c| c.share <= 0.03))
        );
        assert!(scenes.iter().any(|s| s.clouds.haze > 0.0));
        assert!(scenes.iter().any(|s| s.clouds.unmasked_edge > 0.0));
        let months: std::collections::HashSet<usize> =
            scenes.iter().map(|s| s.months.len()).collect();
        assert!(months.contains(&3) && months.contains(&8));
        let bad = DemoOptions {
            classes: vec![DemoClass::new(7, "a", Surface::Water, 0.5); 2],
            ..DemoOptions::default()
        };
        assert!(bad.validate().is_err(), "repeated class ids are refused");
    }

    #[test]
    fn a_scenes_ground_truth_holds_exactly_its_class_ids_with_the_rare_class_near_its_share() {
        let opts = DemoOptions {
            size: 256,
            ..DemoOptions::scene("us-cropland", 9).unwrap()
        };
        let truth = land_cover_of(&opts);
        let share = |id: u8| truth.iter().filter(|&&c| c == id).count() as f64 / truth.len() as f64;
        for c in &opts.classes {
            assert!(share(c.id) > 0.005, "class {} is missing", c.id);
        }
        let known: f64 = opts.classes.iter().map(|c| share(c.id)).sum();
        assert!(
            (known - 1.0).abs() < 1e-9,
            "every pixel is one of the classes"
        );
        let built = share(50);
        assert!((0.015..0.05).contains(&built), "built-up {built}");
        assert!((0.04..0.06).contains(&share(80)), "water {}", share(80));
    }

    #[test]
    fn parcels_cut_the_farmland_into_many_more_class_edges_than_blobs() {
        let parcels = DemoOptions {
            size: 256,
            ..DemoOptions::scene("smallholder", 4).unwrap()
        };
        let blobs = DemoOptions {
            fields: FieldLayout::Blobs,
            ..parcels.clone()
        };
        let edge_share = |o: &DemoOptions| {
            let e = edge_mask(&land_cover_of(o), o.size, 1);
            e.iter().filter(|&&b| b).count() as f64 / e.len() as f64
        };
        let (p, b) = (edge_share(&parcels), edge_share(&blobs));
        assert!(p > 3.0 * b, "parcels {p:.3}, blobs {b:.3}");
    }

    #[test]
    fn edge_pixels_are_those_within_three_pixels_of_another_class() {
        // Left half class 1, right half class 2, 16 px wide.
        let size = 16;
        let map: Vec<u8> = (0..size * size)
            .map(|p| if p % size < 8 { 1 } else { 2 })
            .collect();
        let e = edge_mask(&map, size, EDGE_PX);
        let row: Vec<bool> = (0..size).map(|x| e[5 * size + x]).collect();
        let expect: Vec<bool> = (0..size).map(|x| (5..11).contains(&x)).collect();
        assert_eq!(row, expect);
    }

    #[test]
    fn scoring_counts_mistakes_at_class_edges_separately() {
        let opts = DemoOptions {
            size: 128,
            ..DemoOptions::scene("smallholder", 2).unwrap()
        };
        let truth = land_cover_of(&opts);
        let edges = edge_mask(&truth, opts.size, EDGE_PX);
        let (x0, y0) = opts.origin;
        let windows: Vec<(ScoredWindow, Vec<u8>)> = (0..2)
            .flat_map(|r| (0..2).map(move |c| (r, c)))
            .map(|(r, c)| {
                let gt = [
                    x0 + c as f64 * 640.0,
                    10.0,
                    0.0,
                    y0 - r as f64 * 640.0,
                    0.0,
                    -10.0,
                ];
                // Right away from edges, wrong on them.
                let map = (0..64 * 64)
                    .map(|q| {
                        let p = (r * 64 + q / 64) * opts.size + c * 64 + q % 64;
                        if edges[p] { 0 } else { truth[p] }
                    })
                    .collect();
                ((opts.epsg, gt), map)
            })
            .collect();
        let score = score_window_maps(&opts, &windows, 64).unwrap();
        assert_eq!(score.pixels, 128 * 128);
        let n_edges = edges.iter().filter(|&&e| e).count();
        assert_eq!(score.edge_pixels, n_edges);
        assert_eq!(score.edge_accuracy(), Some(0.0));
        assert_eq!(score.correct, 128 * 128 - n_edges);
    }

    #[test]
    fn windows_of_another_utm_zone_are_scored_through_their_reprojected_pixels() {
        // A scene of zone 33 whose western part lies west of 12° E, in zone 32, and one window of
        // zone 32 over that part: its map is the ground truth looked up at its own pixel centres.
        let opts = DemoOptions {
            size: 192,
            origin: (263_040.0, 5_000_320.0),
            ..DemoOptions::default()
        };
        let truth = land_cover_of(&opts);
        let (mut cx, mut cy) = (vec![opts.origin.0 + 300.0], vec![opts.origin.1 - 900.0]);
        transform(32633, 32632)
            .unwrap()
            .transform_coords(&mut cx, &mut cy, &mut [])
            .unwrap();
        let gt = [
            (cx[0] / 10.0).round() * 10.0,
            10.0,
            0.0,
            (cy[0] / 10.0).round() * 10.0,
            0.0,
            -10.0,
        ];
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for r in 0..64 {
            for c in 0..64 {
                xs.push(gt[0] + (f64::from(c) + 0.5) * 10.0);
                ys.push(gt[3] - (f64::from(r) + 0.5) * 10.0);
            }
        }
        transform(32632, 32633)
            .unwrap()
            .transform_coords(&mut xs, &mut ys, &mut [])
            .unwrap();
        let map: Vec<u8> = xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| {
                let c = ((x - opts.origin.0) / 10.0).floor() as usize;
                let r = ((opts.origin.1 - y) / 10.0).floor() as usize;
                truth[r * opts.size + c]
            })
            .collect();
        let right = score_window_maps(&opts, &[((32632, gt), map.clone())], 64).unwrap();
        assert!(right.pixels > 3_900, "{} pixels scored", right.pixels);
        assert_eq!(right.correct, right.pixels);
        // Shifted by one window pixel the map is wrong at class edges.
        let shifted: Vec<u8> = (0..64 * 64usize)
            .map(|q| map[(q / 64) * 64 + (q % 64).saturating_sub(1)])
            .collect();
        let wrong = score_window_maps(&opts, &[((32632, gt), shifted)], 64).unwrap();
        assert!(wrong.correct < wrong.pixels);
        assert!(wrong.edge_accuracy().unwrap() < 1.0);
    }

    #[test]
    fn sampled_labels_and_polygons_carry_the_scenes_class_ids_and_lie_on_their_class() {
        let opts = DemoOptions {
            size: 192,
            ..DemoOptions::scene("tropical-haze", 3).unwrap()
        };
        let truth = land_cover_of(&opts);
        let ids: Vec<u8> = opts.classes.iter().map(|c| c.id).collect();
        let labels = sample_labels(&opts, 10, 320.0, 1).unwrap();
        assert_eq!(labels.len(), 10 * ids.len());
        for l in &labels {
            assert!(ids.contains(&l.class_id));
            assert_eq!(truth[l.pixel.0 * opts.size + l.pixel.1], l.class_id);
        }
        let polygons = sample_label_polygons(&opts, 2, 3, 320.0, 1).unwrap();
        assert!(polygons.len() >= ids.len(), "{} polygons", polygons.len());
        assert_eq!(
            polygons,
            sample_label_polygons(&opts, 2, 3, 320.0, 1).unwrap()
        );
        let to_utm = transform(4326, opts.epsg).unwrap();
        for p in &polygons {
            let (r, c, side) = p.pixels;
            assert!(r >= 32 && c >= 32 && r + side <= opts.size - 32 && c + side <= opts.size - 32);
            for y in r..r + side {
                for x in c..c + side {
                    assert_eq!(truth[y * opts.size + x], p.class_id);
                }
            }
            assert_eq!(p.ring.len(), 5);
            let (mut xs, mut ys) = (vec![p.ring[0][0]], vec![p.ring[0][1]]);
            to_utm.transform_coords(&mut xs, &mut ys, &mut []).unwrap();
            assert!((xs[0] - (opts.origin.0 + c as f64 * 10.0)).abs() < 0.01);
            assert!((ys[0] - (opts.origin.1 - r as f64 * 10.0)).abs() < 0.01);
        }
    }

    #[test]
    fn the_mask_misses_haze_and_cloud_edges_in_hazy_scenes_and_nothing_in_the_classic_one() {
        // Share of SCL-clear, unshadowed pixels whose blue is >10 % above the clean surface.
        let missed = |opts: &DemoOptions| {
            let passes = demo_passes(opts).unwrap();
            let (mut bad, mut clear) = (0usize, 0usize);
            for p in &passes {
                for i in 0..p.scl[..].len() {
                    if [4.0, 5.0, 6.0].contains(&p.scl[i]) {
                        clear += 1;
                        bad += usize::from(p.bands[0][i] > 1.1 * p.clean[0][i]);
                    }
                }
            }
            bad as f64 / clear as f64
        };
        let small = |name: &str| DemoOptions {
            size: 96,
            months: vec![6, 7],
            ..DemoOptions::scene(name, 8).unwrap()
        };
        assert_eq!(missed(&small("classic")), 0.0);
        let hazy = missed(&small("tropical-haze"));
        assert!(hazy > 0.1, "{hazy}");
    }
}
