//! Prediction outputs as rasters: UTM COGs (class map with a colour table, per-class probabilities,
//! values), their web-mercator (`GoogleMapsCompatible`) copies, and the class map as polygons.
//!
//! Conventions: class rasters are `u8` holding each class's raster id with 255 as nodata; probability
//! rasters are `u8`, one band per class, `round(p · 254)` with 255 as nodata (STAC `raster:scale`
//! = 1/254); value rasters are `f32` with NaN as nodata.

use std::path::Path;

use gdal::raster::{
    ColorEntry, ColorTable, GdalType, PaletteInterpretation, RasterCreationOptions,
};
use gdal::vector::LayerAccess;
use gdal::{Dataset, DriverManager};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Nodata of class and probability rasters.
pub const NODATA_U8: u8 = 255;
/// Probability `p` is stored as `round(p · PROBABILITY_SCALE)`.
pub const PROBABILITY_SCALE: f32 = 254.0;

/// A class of the legend: raster value, name and colour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegendClass {
    /// Raster value (0–254).
    pub id: u8,
    /// Name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
}

impl LegendClass {
    /// The colour as RGB; grey when it is not `#rrggbb`.
    #[must_use]
    pub fn rgb(&self) -> [u8; 3] {
        parse_hex(&self.color).unwrap_or([128, 128, 128])
    }
}

/// `#rrggbb` as RGB.
#[must_use]
pub fn parse_hex(s: &str) -> Option<[u8; 3]> {
    let h = s.strip_prefix('#')?;
    if h.len() != 6 || !h.is_ascii() {
        return None;
    }
    let c = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).ok();
    Some([c(0)?, c(2)?, c(4)?])
}

/// What a raster in EPSG:3857 covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebMercatorInfo {
    /// `[west, south, east, north]` in EPSG:4326.
    pub bounds_wgs84: [f64; 4],
    /// `[minx, miny, maxx, maxy]` in EPSG:3857.
    pub bounds_3857: [f64; 4],
    /// Coarsest zoom with its own overview.
    pub min_zoom: u8,
    /// Zoom of the full-resolution level.
    pub max_zoom: u8,
    /// Width × height of the full-resolution level.
    pub size: [usize; 2],
}

fn mem_dataset<T: GdalType + Copy>(
    bands: &[&[T]],
    width: usize,
    height: usize,
    geotransform: [f64; 6],
    epsg: u32,
    nodata: Option<f64>,
) -> Result<Dataset> {
    let op = |what: &str| Error::gdal(format!("{what} an in-memory raster"));
    let mem = DriverManager::get_driver_by_name("MEM").map_err(op("loading the MEM driver for"))?;
    let mut ds = mem
        .create_with_band_type::<T, _>("", width, height, bands.len())
        .map_err(op("creating"))?;
    ds.set_geo_transform(&geotransform)
        .map_err(op("setting the geotransform of"))?;
    ds.set_spatial_ref(&crate::grid::srs(epsg)?)
        .map_err(op("setting the CRS of"))?;
    for (i, data) in bands.iter().enumerate() {
        if data.len() != width * height {
            return Err(Error::InvalidRequest(format!(
                "band {} has {} values for a {width} × {height} raster",
                i + 1,
                data.len()
            )));
        }
        let mut band = ds.rasterband(i + 1).map_err(op("opening a band of"))?;
        band.set_no_data_value(nodata)
            .map_err(op("setting nodata of"))?;
        let mut buf = gdal::raster::Buffer::new((width, height), data.to_vec());
        band.write((0, 0), (width, height), &mut buf)
            .map_err(op("writing"))?;
    }
    Ok(ds)
}

pub(crate) fn cog_copy(ds: &Dataset, path: &Path, extra: &[&str]) -> Result<()> {
    let cog =
        DriverManager::get_driver_by_name("COG").map_err(Error::gdal("loading the COG driver"))?;
    let mut opts = vec!["COMPRESS=DEFLATE", "BLOCKSIZE=256", "NUM_THREADS=1"];
    opts.extend_from_slice(extra);
    let opts = RasterCreationOptions::from_iter(opts);
    ds.create_copy(&cog, path, &opts)
        .map_err(Error::gdal(format!("writing the COG {}", path.display())))?;
    Ok(())
}

/// Writes a class map COG: `u8` raster ids (255 nodata) with a colour table from the legend.
pub fn write_class_cog(
    path: &Path,
    classes: &[u8],
    width: usize,
    height: usize,
    geotransform: [f64; 6],
    epsg: u32,
    legend: &[LegendClass],
) -> Result<()> {
    let ds = mem_dataset(
        &[classes],
        width,
        height,
        geotransform,
        epsg,
        Some(f64::from(NODATA_U8)),
    )?;
    {
        let mut band = ds
            .rasterband(1)
            .map_err(Error::gdal("opening the class band"))?;
        band.set_color_table(&class_palette(legend));
        band.set_color_interpretation(gdal::raster::ColorInterpretation::PaletteIndex)
            .map_err(Error::gdal("marking the class band as paletted"))?;
    }
    cog_copy(&ds, path, &["OVERVIEW_RESAMPLING=NEAREST"])
}

/// The colour table of a class map: each legend class opaque in its colour, every other value
/// transparent.
pub(crate) fn class_palette(legend: &[LegendClass]) -> ColorTable<'static> {
    let mut ct = ColorTable::new(PaletteInterpretation::Rgba);
    for v in 0..=255u16 {
        ct.set_color_entry(v, &ColorEntry::rgba(0, 0, 0, 0));
    }
    for c in legend {
        let [r, g, b] = c.rgb();
        ct.set_color_entry(
            u16::from(c.id),
            &ColorEntry::rgba(i16::from(r), i16::from(g), i16::from(b), 255),
        );
    }
    ct
}

/// Writes a multi-band `u8` COG (probabilities) with 255 as nodata.
pub fn write_u8_cog(
    path: &Path,
    bands: &[Vec<u8>],
    width: usize,
    height: usize,
    geotransform: [f64; 6],
    epsg: u32,
) -> Result<()> {
    let refs: Vec<&[u8]> = bands.iter().map(Vec::as_slice).collect();
    let ds = mem_dataset(
        &refs,
        width,
        height,
        geotransform,
        epsg,
        Some(f64::from(NODATA_U8)),
    )?;
    cog_copy(&ds, path, &["OVERVIEW_RESAMPLING=AVERAGE"])
}

/// Writes a multi-band `f32` COG (values) with NaN as nodata.
pub fn write_f32_cog(
    path: &Path,
    bands: &[Vec<f32>],
    width: usize,
    height: usize,
    geotransform: [f64; 6],
    epsg: u32,
) -> Result<()> {
    let refs: Vec<&[f32]> = bands.iter().map(Vec::as_slice).collect();
    let ds = mem_dataset(&refs, width, height, geotransform, epsg, Some(f64::NAN))?;
    cog_copy(&ds, path, &["OVERVIEW_RESAMPLING=AVERAGE", "PREDICTOR=YES"])
}

/// Half the side of the web-mercator square, metres.
pub const MERCATOR_ORIGIN: f64 = 20_037_508.342_789_244;

/// Metres per pixel of a 256-pixel tile at zoom `z`.
#[must_use]
pub fn zoom_resolution(z: u8) -> f64 {
    2.0 * MERCATOR_ORIGIN / 256.0 / f64::from(1u32 << z.min(30))
}

/// Warps a COG to EPSG:3857 as a `GoogleMapsCompatible` COG (256² tiles aligned with z/x/y, one
/// overview per zoom level). `categorical` uses nearest-neighbour resampling (class maps).
pub fn warp_to_web_mercator(src: &Path, dst: &Path, categorical: bool) -> Result<WebMercatorInfo> {
    let ds = Dataset::open(src).map_err(Error::gdal(format!("opening {}", src.display())))?;
    let resampling = if categorical {
        "RESAMPLING=NEAREST"
    } else {
        "RESAMPLING=BILINEAR"
    };
    let overview = if categorical {
        "OVERVIEW_RESAMPLING=NEAREST"
    } else {
        "OVERVIEW_RESAMPLING=AVERAGE"
    };
    cog_copy(
        &ds,
        dst,
        &[
            "TILING_SCHEME=GoogleMapsCompatible",
            resampling,
            overview,
            "ADD_ALPHA=NO",
            "ZOOM_LEVEL_STRATEGY=UPPER",
        ],
    )?;
    web_mercator_info(dst)
}

/// Bounds and zoom range of a `GoogleMapsCompatible` COG.
pub fn web_mercator_info(path: &Path) -> Result<WebMercatorInfo> {
    let ds = Dataset::open(path).map_err(Error::gdal(format!("opening {}", path.display())))?;
    let gt = ds
        .geo_transform()
        .map_err(Error::gdal("reading the geotransform"))?;
    let (w, h) = ds.raster_size();
    let b3857 = [
        gt[0],
        gt[3] + gt[5] * h as f64,
        gt[0] + gt[1] * w as f64,
        gt[3],
    ];
    let max_zoom = (2.0 * MERCATOR_ORIGIN / 256.0 / gt[1]).log2().round();
    let max_zoom = max_zoom.clamp(0.0, 30.0) as u8;
    let overviews = ds
        .rasterband(1)
        .and_then(|b| b.overview_count())
        .map_err(Error::gdal("counting overviews"))?;
    let min_zoom = max_zoom.saturating_sub(u8::try_from(overviews.max(0)).unwrap_or(0));
    let ct = crate::grid::transform(3857, 4326)?;
    let mut xs = [b3857[0], b3857[2]];
    let mut ys = [b3857[1], b3857[3]];
    ct.transform_coords(&mut xs, &mut ys, &mut [])
        .map_err(Error::gdal("transforming bounds to EPSG:4326"))?;
    Ok(WebMercatorInfo {
        bounds_wgs84: [xs[0], ys[0], xs[1], ys[1]],
        bounds_3857: b3857,
        min_zoom,
        max_zoom,
        size: [w, h],
    })
}

/// A GeoJSON Polygon or MultiPolygon with its rings oriented as RFC 7946 (section 3.1.6) asks:
/// exterior rings counter-clockwise, holes clockwise (geo's `Orient`, the rule the API applies to
/// AOIs). Other geometries are returned as they are.
fn orient_rfc7946(geometry: serde_json::Value) -> Result<serde_json::Value> {
    use geo::orient::{Direction, Orient};
    let encode = |e: &dyn std::fmt::Display| Error::Encode {
        what: "polygon GeoJSON".into(),
        reason: e.to_string(),
    };
    let parsed: geojson::Geometry = serde_json::from_value(geometry).map_err(|e| encode(&e))?;
    let oriented = match geo::Geometry::<f64>::try_from(parsed).map_err(|e| encode(&e))? {
        geo::Geometry::Polygon(p) => geo::Geometry::Polygon(p.orient(Direction::Default)),
        geo::Geometry::MultiPolygon(m) => geo::Geometry::MultiPolygon(m.orient(Direction::Default)),
        other => other,
    };
    serde_json::to_value(geojson::Geometry::from(&oriented)).map_err(|e| encode(&e))
}

/// GDAL's polygonize: one feature per connected region of equal values of `band` where `mask` is not
/// zero, appended to `layer` with the value in its first field.
pub(crate) fn polygonize(
    band: &gdal::raster::RasterBand<'_>,
    mask: &gdal::raster::RasterBand<'_>,
    layer: &gdal::vector::Layer<'_>,
) -> std::result::Result<(), ()> {
    // SAFETY: the band, mask and layer handles are valid for the duration of the call; GDAL only
    // reads the bands and appends features to the layer.
    #[expect(unsafe_code, reason = "GDALPolygonize has no safe wrapper")]
    let rc = unsafe {
        gdal_sys::GDALPolygonize(
            band.c_rasterband(),
            mask.c_rasterband(),
            layer.c_layer(),
            0,
            std::ptr::null_mut(),
            None,
            std::ptr::null_mut(),
        )
    };
    if rc == gdal_sys::CPLErr::CE_None {
        Ok(())
    } else {
        Err(())
    }
}

/// The class map as a GeoJSON FeatureCollection in EPSG:4326: one polygon feature per connected
/// region of one class (GDAL Polygonize), with properties `class` (raster id) and `name`; rings are
/// oriented as RFC 7946 asks (exterior counter-clockwise, holes clockwise).
pub fn polygonize_classes(path: &Path, legend: &[LegendClass]) -> Result<serde_json::Value> {
    let ds = Dataset::open(path).map_err(Error::gdal(format!("opening {}", path.display())))?;
    let band = ds
        .rasterband(1)
        .map_err(Error::gdal("opening the class band"))?;
    let srs = ds.spatial_ref().map_err(Error::gdal("reading the CRS"))?;
    let mem = DriverManager::get_driver_by_name("Memory")
        .map_err(Error::gdal("loading the Memory vector driver"))?;
    let mut vds = mem
        .create_vector_only("")
        .map_err(Error::gdal("creating an in-memory vector dataset"))?;
    let mut layer = vds
        .create_layer(gdal::vector::LayerOptions {
            name: "classes",
            srs: Some(&srs),
            ty: gdal_sys::OGRwkbGeometryType::wkbPolygon,
            options: None,
        })
        .map_err(Error::gdal("creating the polygon layer"))?;
    gdal::vector::FieldDefn::new("class", gdal_sys::OGRFieldType::OFTInteger)
        .and_then(|f| f.add_to_layer(&layer))
        .map_err(Error::gdal("adding the class field"))?;
    let mask = band
        .open_mask_band()
        .map_err(Error::gdal("opening the nodata mask"))?;
    polygonize(&band, &mask, &layer).map_err(|_| {
        Error::InvalidRequest(format!("GDAL could not polygonize {}", path.display()))
    })?;
    let wgs84 = crate::grid::srs(4326)?;
    let mut features = Vec::new();
    for feature in layer.features() {
        let class = feature
            .field_as_integer(0)
            .map_err(Error::gdal("reading a polygon's class"))?
            .unwrap_or_default();
        let Some(geom) = feature.geometry() else {
            continue;
        };
        let geom = geom
            .transform_to(&wgs84)
            .map_err(Error::gdal("transforming a polygon to EPSG:4326"))?;
        let json = geom
            .json()
            .map_err(Error::gdal("writing a polygon as GeoJSON"))?;
        let geometry: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| Error::Encode {
                what: "polygon GeoJSON".into(),
                reason: e.to_string(),
            })?;
        let geometry = orient_rfc7946(geometry)?;
        let name = legend
            .iter()
            .find(|c| i32::from(c.id) == class)
            .map(|c| c.name.clone());
        features.push(serde_json::json!({
            "type": "Feature",
            "properties": {"class": class, "name": name},
            "geometry": geometry,
        }));
    }
    Ok(serde_json::json!({"type": "FeatureCollection", "features": features}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::Winding;

    #[test]
    fn polygons_follow_rfc_7946_ring_orientation() {
        // A 12 × 12 map: class 1 everywhere but a 4 × 4 class-2 island, so class 1's polygon has a hole.
        let dir = tempfile::tempdir().expect("a folder");
        let path = dir.path().join("class.tif");
        let n = 12usize;
        let data: Vec<u8> = (0..n * n)
            .map(|i| {
                let (r, c) = (i / n, i % n);
                if (4..8).contains(&r) && (4..8).contains(&c) {
                    2
                } else {
                    1
                }
            })
            .collect();
        crate::demo::write_cog::<u8>(
            &path,
            &data,
            n,
            n,
            [500_000.0, 10.0, 0.0, 5_000_000.0, 0.0, -10.0],
            32633,
            Some(f64::from(NODATA_U8)),
        )
        .expect("a COG");
        let fc = polygonize_classes(&path, &[]).expect("polygons");
        let polygon = |g: &serde_json::Value| -> geo::Polygon<f64> {
            let g: geojson::Geometry = serde_json::from_value(g.clone()).expect("GeoJSON");
            geo::Polygon::try_from(g).expect("a polygon")
        };
        let mut holes = 0;
        for f in fc["features"].as_array().expect("features") {
            let p = polygon(&f["geometry"]);
            assert!(p.exterior().is_ccw(), "an exterior ring is clockwise: {f}");
            for hole in p.interiors() {
                holes += 1;
                assert!(hole.is_cw(), "a hole is counter-clockwise: {f}");
            }
        }
        assert_eq!(holes, 1);
        // A clockwise exterior and a counter-clockwise hole are turned around; a MultiPolygon too.
        let g = orient_rfc7946(serde_json::json!({"type": "MultiPolygon", "coordinates": [[
            [[0.0, 0.0], [0.0, 4.0], [4.0, 4.0], [4.0, 0.0], [0.0, 0.0]],
            [[1.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0], [1.0, 1.0]]
        ]]}))
        .expect("oriented");
        let p =
            polygon(&serde_json::json!({"type": "Polygon", "coordinates": g["coordinates"][0]}));
        assert!(p.exterior().is_ccw());
        assert!(p.interiors()[0].is_cw());
    }
}
