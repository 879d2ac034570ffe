//! Offline packages of class maps for field teams: one GeoPackage file (OGC GeoPackage, an SQLite
//! database) that QGIS, QField, Mergin Maps and ArcGIS open without a network.
//!
//! # Layout
//!
//! - [`CLASS_MAP_TABLE`] (`class_map`): a tile table in web mercator (EPSG:3857, the
//!   `GoogleMapsCompatible` tile matrix set, so zoom levels and tile columns/rows are those of z/x/y
//!   web maps), 256² RGBA PNG tiles: each class in its legend colour, nodata (and values without a
//!   legend entry) transparent, drawn as the map's tiles are ([`crate::tiles::render_tile_rgba`]) at
//!   the maximum zoom, the coarser zooms down to the minimum one built by GDAL (nearest neighbour).
//!   Tiles without any data are not stored.
//! - [`IMAGERY_TABLE`] (`imagery`), when the caller gives imagery: the same tiling and zoom levels
//!   over the same tiles, true colour (JPEG where a tile is fully opaque, PNG where part of it is
//!   transparent; coarser zooms averaged).
//! - [`POLYGON_LAYER`] (`class_polygons`): a polygon layer in EPSG:4326, one feature per connected
//!   region (4-connected pixels) of one class of the UTM class raster (GDAL Polygonize, as
//!   [`crate::publish::polygonize_classes`]), with the fields `class` (raster value), `name` and
//!   `color` (`#rrggbb`) from the legend (null for a value the legend lacks) and `area_ha` (the area
//!   on the UTM grid, hectares: pixel count × pixel area).
//!
//! # Limits
//!
//! A package holds at most [`MAX_PACKAGE_TILES`] tiles at its maximum zoom per tile table (the
//! coarser zooms add at most a third more) and at most [`MAX_PACKAGE_POLYGONS`] class regions;
//! [`build_package`] refuses a larger output ([`PackageError::TooLarge`]) before writing anything:
//! the tiles are counted before any work ([`tile_count`] tells a caller beforehand), the regions
//! while polygonising (which stops at the limit).

use std::path::{Path, PathBuf};

use gdal::raster::{Buffer, RasterCreationOptions};
use gdal::vector::{Feature, FieldDefn, LayerAccess, LayerOptions};
use gdal::{Dataset, DatasetOptions, DriverManager, GdalOpenFlags};

use crate::error::{Error, Result};
use crate::preview::{WindowImage, render_tile, tile_lonlat_bounds};
use crate::publish::{LegendClass, MERCATOR_ORIGIN, web_mercator_info, zoom_resolution};
use crate::tiles::{TILE_SIZE, TileStyle, render_tile_rgba, tile_bounds};

/// The class map's tile table.
pub const CLASS_MAP_TABLE: &str = "class_map";
/// The imagery preview's tile table.
pub const IMAGERY_TABLE: &str = "imagery";
/// The class polygons' feature table.
pub const POLYGON_LAYER: &str = "class_polygons";
/// The media type of a GeoPackage (OGC 12-128r18; IANA `application/geopackage+sqlite3`).
pub const MEDIA_TYPE: &str = "application/geopackage+sqlite3";
/// Most tiles a tile table of a package may hold at its maximum zoom (1024 tiles of 256², about
/// 67 million pixels: an output of about 78 × 78 km at zoom 14 on the equator, 55 × 55 km at 45°).
pub const MAX_PACKAGE_TILES: u64 = 1024;
/// Most class regions (polygons) a package may hold: a speckled map has millions, which would take
/// minutes to write and make a file of gigabytes no field device could use.
pub const MAX_PACKAGE_POLYGONS: u64 = 250_000;

/// A rectangle of tiles at one zoom, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRange {
    /// Zoom level.
    pub zoom: u8,
    /// Westernmost tile column.
    pub x0: u32,
    /// Northernmost tile row.
    pub y0: u32,
    /// Easternmost tile column.
    pub x1: u32,
    /// Southernmost tile row.
    pub y1: u32,
}

impl TileRange {
    /// The tiles at `zoom` that cover `[minx, miny, maxx, maxy]` (EPSG:3857 metres); `None` for an
    /// empty or invalid rectangle or a zoom above 30. A bound on a tile edge (within a millimetre)
    /// does not add the neighbouring tile.
    #[must_use]
    pub fn covering(bounds_3857: [f64; 4], zoom: u8) -> Option<Self> {
        let [minx, miny, maxx, maxy] = bounds_3857;
        if zoom > 30 || !(minx < maxx && miny < maxy) || !bounds_3857.iter().all(|v| v.is_finite())
        {
            return None;
        }
        let n = f64::from(1u32 << zoom);
        let size = 2.0 * MERCATOR_ORIGIN / n;
        // A bound within a millimetre of a tile edge is on it.
        let snap = |v: f64| {
            if (v - v.round()).abs() * size < 1e-3 {
                v.round()
            } else {
                v
            }
        };
        let clamp = |v: f64| v.clamp(0.0, n - 1.0) as u32;
        let x0 = clamp(snap((minx + MERCATOR_ORIGIN) / size).floor());
        let x1 = clamp(snap((maxx + MERCATOR_ORIGIN) / size).ceil() - 1.0);
        let y0 = clamp(snap((MERCATOR_ORIGIN - maxy) / size).floor());
        let y1 = clamp(snap((MERCATOR_ORIGIN - miny) / size).ceil() - 1.0);
        (x0 <= x1 && y0 <= y1).then_some(Self {
            zoom,
            x0,
            y0,
            x1,
            y1,
        })
    }

    /// Tile columns.
    #[must_use]
    pub fn columns(&self) -> u32 {
        self.x1 - self.x0 + 1
    }

    /// Tile rows.
    #[must_use]
    pub fn rows(&self) -> u32 {
        self.y1 - self.y0 + 1
    }

    /// Tiles in the rectangle.
    #[must_use]
    pub fn count(&self) -> u64 {
        u64::from(self.columns()) * u64::from(self.rows())
    }
}

/// Tiles at `max_zoom` that a package of a raster covering `bounds_3857` holds per tile table
/// (0 for empty bounds): what [`MAX_PACKAGE_TILES`] bounds.
#[must_use]
pub fn tile_count(bounds_3857: [f64; 4], max_zoom: u8) -> u64 {
    TileRange::covering(bounds_3857, max_zoom).map_or(0, |r| r.count())
}

/// A source of RGBA tiles (256 × 256 × 4 bytes) by z/x/y; `None` where it has nothing.
pub type TileFn<'a> = Box<dyn FnMut(u8, u32, u32) -> Result<Option<Vec<u8>>> + 'a>;

/// The imagery preview of a package.
pub struct ImageryTiles<'a> {
    /// What the imagery is (the table's description), e.g. `Sentinel-2 true colour, 2024-06`.
    pub description: String,
    /// The tiles, asked for at the package's maximum zoom only.
    pub tiles: TileFn<'a>,
}

impl std::fmt::Debug for ImageryTiles<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageryTiles")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// Imagery tiles drawn from coloured windows (see [`crate::preview::render_tile`]): each tile from the
/// windows whose bounds meet it.
pub fn window_tiles(images: &[WindowImage]) -> TileFn<'_> {
    Box::new(move |z, x, y| {
        let Some(b) = tile_lonlat_bounds(z, x, y) else {
            return Ok(None);
        };
        let touching: Vec<&WindowImage> = images
            .iter()
            .filter(|w| {
                let wb = w.placement.bbox;
                wb[0] <= b[2] && wb[2] >= b[0] && wb[1] <= b[3] && wb[3] >= b[1]
            })
            .collect();
        if touching.is_empty() {
            return Ok(None);
        }
        render_tile(z, x, y, &touching)
    })
}

/// What a package is made from.
#[derive(Debug, Clone, Copy)]
pub struct PackageSpec<'a> {
    /// The class raster in its UTM CRS (`u8`, 255 nodata): polygons and their areas.
    pub utm_cog: &'a Path,
    /// Its `GoogleMapsCompatible` web-mercator copy (what the map's tiles are drawn from); when it is
    /// missing or not in EPSG:3857, the UTM raster is warped to one beside `dst`.
    pub web_cog: Option<&'a Path>,
    /// The legend: colours of the tiles, names and colours of the polygons.
    pub legend: &'a [LegendClass],
    /// A title for the tables' descriptions (e.g. the project's name).
    pub title: &'a str,
    /// Most tiles per table at the maximum zoom (normally [`MAX_PACKAGE_TILES`]).
    pub max_tiles: u64,
    /// Most class regions (polygons) (normally [`MAX_PACKAGE_POLYGONS`]).
    pub max_polygons: u64,
}

/// What a package holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSummary {
    /// Coarsest zoom level of the tile tables.
    pub min_zoom: u8,
    /// Finest zoom level of the tile tables.
    pub max_zoom: u8,
    /// The tiles at the maximum zoom.
    pub range: TileRange,
    /// Tiles of the class map with data at the maximum zoom.
    pub class_tiles: u64,
    /// Tiles of the imagery with data at the maximum zoom; `None` without an imagery table.
    pub imagery_tiles: Option<u64>,
    /// Features of the polygon layer.
    pub polygons: usize,
}

/// Why a package could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The class map needs more than a package may hold (tiles or polygons); nothing was written.
    #[error("{0}")]
    TooLarge(String),
    /// Reading the rasters or writing the file failed.
    #[error(transparent)]
    Imagery(#[from] Error),
}

/// Builds the offline package of a class map at `dst` (replaced when it exists): the class map's
/// tile table, the imagery's when `imagery` is given, and the class polygons (see the module
/// documentation). Refuses ([`PackageError::TooLarge`]) a class map whose tile tables would hold
/// more than `spec.max_tiles` tiles at the maximum zoom (before any work) or which has more than
/// `spec.max_polygons` class regions (while polygonising, before anything is written).
pub fn build_package(
    dst: &Path,
    spec: &PackageSpec<'_>,
    imagery: Option<ImageryTiles<'_>>,
) -> Result<PackageSummary, PackageError> {
    let warped = WarpedCopy::of(dst, spec)?;
    let web = warped.path();
    let info = web_mercator_info(web)?;
    let (min_zoom, max_zoom) = (info.min_zoom.min(info.max_zoom), info.max_zoom);
    let range = TileRange::covering(info.bounds_3857, max_zoom)
        .ok_or_else(|| Error::InvalidRequest(format!("{} covers no map tile", web.display())))?;
    if range.count() > spec.max_tiles {
        return Err(PackageError::TooLarge(format!(
            "the map needs {} tiles at zoom {max_zoom}, more than an offline package may hold ({})",
            range.count(),
            spec.max_tiles
        )));
    }
    let regions = polygonize(spec)?;
    match std::fs::remove_file(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                path: dst.display().to_string(),
                source,
            }
            .into());
        }
    }
    let style = TileStyle::Classes(spec.legend.iter().map(|c| (c.id, c.rgb())).collect());
    let class_tiles = write_tile_table(
        dst,
        &TableSpec {
            name: CLASS_MAP_TABLE,
            description: &format!("{}: class map", spec.title),
            append: false,
            tile_format: "PNG",
            resampling: "NEAREST",
        },
        range,
        min_zoom,
        &mut |z, x, y| render_tile_rgba(web, z, x, y, &style),
    )?;
    drop(warped);
    let imagery_tiles = match imagery {
        Some(mut im) => Some(write_tile_table(
            dst,
            &TableSpec {
                name: IMAGERY_TABLE,
                description: &format!("{}: {}", spec.title, im.description),
                append: true,
                tile_format: "AUTO",
                resampling: "AVERAGE",
            },
            range,
            min_zoom,
            &mut im.tiles,
        )?),
        None => None,
    };
    let polygons = write_polygons(dst, spec, &regions)?;
    Ok(PackageSummary {
        min_zoom,
        max_zoom,
        range,
        class_tiles,
        imagery_tiles,
        polygons,
    })
}

/// The web-mercator raster a package is drawn from: the caller's, or a copy warped from the UTM
/// raster (removed when dropped).
struct WarpedCopy {
    path: PathBuf,
    temporary: bool,
}

impl WarpedCopy {
    fn of(dst: &Path, spec: &PackageSpec<'_>) -> Result<Self> {
        if let Some(web) = spec.web_cog
            && is_web_mercator(web)
        {
            return Ok(Self {
                path: web.to_path_buf(),
                temporary: false,
            });
        }
        let mut name = dst.file_name().unwrap_or_default().to_os_string();
        name.push(".3857.tif");
        let path = dst.with_file_name(name);
        let copy = Self {
            path,
            temporary: true,
        };
        crate::publish::warp_to_web_mercator(spec.utm_cog, &copy.path, true)?;
        Ok(copy)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WarpedCopy {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether the raster at `path` is in EPSG:3857.
fn is_web_mercator(path: &Path) -> bool {
    Dataset::open(path)
        .and_then(|ds| ds.spatial_ref())
        .and_then(|s| s.auth_code())
        .is_ok_and(|code| code == 3857)
}

/// How one tile table is written.
struct TableSpec<'a> {
    name: &'a str,
    description: &'a str,
    /// Add the table to an existing GeoPackage.
    append: bool,
    /// GDAL's `TILE_FORMAT`.
    tile_format: &'a str,
    /// Resampling of the coarser zoom levels.
    resampling: &'a str,
}

/// Writes a tile table of the tiles in `range` (from `tiles`) and its coarser zoom levels down to
/// `min_zoom`; returns how many tiles had data at the maximum zoom.
fn write_tile_table(
    dst: &Path,
    table: &TableSpec<'_>,
    range: TileRange,
    min_zoom: u8,
    tiles: &mut dyn FnMut(u8, u32, u32) -> Result<Option<Vec<u8>>>,
) -> Result<u64> {
    let op = |what: &str| Error::gdal(format!("{what} the tile table {}", table.name));
    let driver = DriverManager::get_driver_by_name("GPKG").map_err(op("loading GPKG for"))?;
    let mut options = vec![
        "TILING_SCHEME=GoogleMapsCompatible".to_owned(),
        format!("RASTER_TABLE={}", table.name),
        format!("RASTER_IDENTIFIER={}", table.name),
        format!("RASTER_DESCRIPTION={}", table.description),
        format!("TILE_FORMAT={}", table.tile_format),
        "QUALITY=85".to_owned(),
    ];
    if table.append {
        options.push("APPEND_SUBDATASET=YES".to_owned());
    }
    let options = RasterCreationOptions::from_iter(options);
    let side = TILE_SIZE as u32;
    let (width, height) = (
        (range.columns() * side) as usize,
        (range.rows() * side) as usize,
    );
    let mut ds = driver
        .create_with_band_type_with_options::<u8, _>(dst, width, height, 4, &options)
        .map_err(op("creating"))?;
    ds.set_spatial_ref(&crate::grid::srs(3857)?)
        .map_err(op("setting the CRS of"))?;
    let corner = tile_bounds(range.zoom, range.x0, range.y0)
        .ok_or_else(|| Error::InvalidRequest(format!("no tile {range:?}")))?;
    let res = zoom_resolution(range.zoom);
    ds.set_geo_transform(&[corner[0], res, 0.0, corner[3], 0.0, -res])
        .map_err(op("setting the geotransform of"))?;
    let n = TILE_SIZE * TILE_SIZE;
    let mut planes = vec![vec![0u8; n]; 4];
    let mut written = 0u64;
    for y in range.y0..=range.y1 {
        for x in range.x0..=range.x1 {
            let Some(rgba) = tiles(range.zoom, x, y)? else {
                continue;
            };
            if rgba.len() != n * 4 {
                return Err(Error::InvalidRequest(format!(
                    "tile {}/{x}/{y} of {} has {} bytes, not {}",
                    range.zoom,
                    table.name,
                    rgba.len(),
                    n * 4
                )));
            }
            if !rgba.chunks_exact(4).any(|p| p[3] != 0) {
                continue;
            }
            for (i, p) in rgba.chunks_exact(4).enumerate() {
                for (plane, v) in planes.iter_mut().zip(p) {
                    plane[i] = *v;
                }
            }
            let offset = (
                ((x - range.x0) * side) as isize,
                ((y - range.y0) * side) as isize,
            );
            for (b, plane) in planes.iter().enumerate() {
                let mut band = ds.rasterband(b + 1).map_err(op("opening a band of"))?;
                let mut buf = Buffer::new((TILE_SIZE, TILE_SIZE), plane.clone());
                band.write(offset, (TILE_SIZE, TILE_SIZE), &mut buf)
                    .map_err(op("writing a tile of"))?;
            }
            written += 1;
        }
    }
    let factors: Vec<i32> = (1..=range.zoom.saturating_sub(min_zoom))
        .map(|k| 1i32 << k)
        .collect();
    if !factors.is_empty() {
        ds.build_overviews(table.resampling, &factors, &[])
            .map_err(op("building the coarser zoom levels of"))?;
    }
    ds.close().map_err(op("closing"))?;
    Ok(written)
}

/// The class regions of the UTM raster: an in-memory polygon layer (field `class`) in its CRS.
struct Regions {
    layers: Dataset,
    srs: gdal::spatial_ref::SpatialRef,
}

/// What the polygonisation's progress callback checks.
struct RegionLimit {
    layer: gdal_sys::OGRLayerH,
    max: u64,
}

/// GDAL's progress callback of [`polygonize`]: stops it once the layer holds more than the limit.
#[expect(unsafe_code, reason = "a GDAL progress callback")]
unsafe extern "C" fn within_region_limit(
    _complete: f64,
    _message: *const std::ffi::c_char,
    arg: *mut std::ffi::c_void,
) -> std::ffi::c_int {
    // SAFETY: `arg` is the `RegionLimit` `polygonize` passes, alive for the whole GDALPolygonize
    // call, and its layer handle is valid meanwhile; counting a Memory layer's features is cheap and
    // only reads it.
    let limit = unsafe { &*arg.cast::<RegionLimit>() };
    let n = unsafe { gdal_sys::OGR_L_GetFeatureCount(limit.layer, 0) };
    std::ffi::c_int::from(u64::try_from(n).unwrap_or(0) <= limit.max)
}

/// Polygonises the UTM class raster (4-connected regions of one value, nodata left out), stopping
/// as soon as it has more than `spec.max_polygons` regions.
fn polygonize(spec: &PackageSpec<'_>) -> Result<Regions, PackageError> {
    let src = Dataset::open(spec.utm_cog)
        .map_err(Error::gdal(format!("opening {}", spec.utm_cog.display())))?;
    let band = src
        .rasterband(1)
        .map_err(Error::gdal("opening the class band"))?;
    let srs = src.spatial_ref().map_err(Error::gdal("reading the CRS"))?;
    let mem = DriverManager::get_driver_by_name("Memory")
        .map_err(Error::gdal("loading the Memory vector driver"))?;
    let mut layers = mem
        .create_vector_only("")
        .map_err(Error::gdal("creating an in-memory vector dataset"))?;
    let count = {
        let regions = layers
            .create_layer(LayerOptions {
                name: "regions",
                srs: Some(&srs),
                ty: gdal_sys::OGRwkbGeometryType::wkbPolygon,
                options: None,
            })
            .map_err(Error::gdal("creating the polygon layer"))?;
        FieldDefn::new("class", gdal_sys::OGRFieldType::OFTInteger)
            .and_then(|f| f.add_to_layer(&regions))
            .map_err(Error::gdal("adding the class field"))?;
        let mask = band
            .open_mask_band()
            .map_err(Error::gdal("opening the nodata mask"))?;
        // SAFETY: the band, mask and layer handles are valid for the duration of the call; GDAL only
        // reads the bands and appends features to the layer; the progress argument outlives the call.
        #[expect(unsafe_code, reason = "GDALPolygonize has no safe wrapper")]
        let rc = unsafe {
            let mut limit = RegionLimit {
                layer: regions.c_layer(),
                max: spec.max_polygons,
            };
            gdal_sys::GDALPolygonize(
                band.c_rasterband(),
                mask.c_rasterband(),
                regions.c_layer(),
                0,
                std::ptr::null_mut(),
                Some(within_region_limit),
                std::ptr::from_mut(&mut limit).cast(),
            )
        };
        let count = regions.feature_count();
        if count > spec.max_polygons {
            return Err(PackageError::TooLarge(format!(
                "the class map has more than {} separate class regions, more than an offline \
                 package may hold",
                spec.max_polygons
            )));
        }
        if rc != gdal_sys::CPLErr::CE_None {
            return Err(Error::InvalidRequest(format!(
                "GDAL could not polygonize {}",
                spec.utm_cog.display()
            ))
            .into());
        }
        count
    };
    tracing::debug!(regions = count, "polygonised the class map");
    Ok(Regions { layers, srs })
}

/// Writes the class regions into [`POLYGON_LAYER`] of the GeoPackage at `dst` (in EPSG:4326, with
/// the legend's names and colours and the areas in hectares); returns the number of polygons.
fn write_polygons(dst: &Path, spec: &PackageSpec<'_>, regions: &Regions) -> Result<usize> {
    let op = |what: &str| Error::gdal(format!("{what} the layer {POLYGON_LAYER}"));
    let mut source = regions
        .layers
        .layer(0)
        .map_err(Error::gdal("opening the class regions"))?;
    let mut gpkg = Dataset::open_ex(
        dst,
        DatasetOptions {
            open_flags: GdalOpenFlags::GDAL_OF_UPDATE | GdalOpenFlags::GDAL_OF_VECTOR,
            allowed_drivers: Some(&["GPKG"]),
            ..DatasetOptions::default()
        },
    )
    .map_err(Error::gdal(format!("opening {} for update", dst.display())))?;
    let wgs84 = crate::grid::srs(4326)?;
    // One transformation for every polygon (making one per polygon costs more than the rest).
    let to_wgs84 = gdal::spatial_ref::CoordTransform::new(&regions.srs, &wgs84)
        .map_err(Error::gdal("making the transformation to EPSG:4326"))?;
    let identifier = format!("IDENTIFIER={POLYGON_LAYER}");
    let description = format!(
        "DESCRIPTION={}: class polygons (class value, name, colour, area in hectares)",
        spec.title
    );
    let mut txn = gpkg
        .start_transaction()
        .map_err(op("starting a transaction for"))?;
    let mut count = 0usize;
    {
        let layer = txn
            .create_layer(LayerOptions {
                name: POLYGON_LAYER,
                srs: Some(&wgs84),
                ty: gdal_sys::OGRwkbGeometryType::wkbPolygon,
                options: Some(&[identifier.as_str(), description.as_str()]),
            })
            .map_err(op("creating"))?;
        for (name, ty) in [
            ("class", gdal_sys::OGRFieldType::OFTInteger),
            ("name", gdal_sys::OGRFieldType::OFTString),
            ("color", gdal_sys::OGRFieldType::OFTString),
            ("area_ha", gdal_sys::OGRFieldType::OFTReal),
        ] {
            FieldDefn::new(name, ty)
                .and_then(|f| f.add_to_layer(&layer))
                .map_err(op(&format!("adding the field {name} to")))?;
        }
        let defn = layer.defn();
        for region in source.features() {
            let class = region
                .field_as_integer(0)
                .map_err(Error::gdal("reading a polygon's class"))?
                .unwrap_or_default();
            let Some(geom) = region.geometry() else {
                continue;
            };
            let area_ha = geom.area() / 10_000.0;
            let geom = geom
                .transform(&to_wgs84)
                .map_err(Error::gdal("transforming a polygon to EPSG:4326"))?;
            let mut feature = Feature::new(defn).map_err(op("making a feature of"))?;
            feature
                .set_field_integer(0, class)
                .map_err(op("setting a class in"))?;
            if let Some(c) = spec.legend.iter().find(|c| i32::from(c.id) == class) {
                feature
                    .set_field_string(1, &c.name)
                    .and_then(|()| feature.set_field_string(2, &c.color))
                    .map_err(op("setting a name in"))?;
            }
            feature
                .set_field_double(3, area_ha)
                .map_err(op("setting an area in"))?;
            feature
                .set_geometry(geom)
                .map_err(op("setting a geometry in"))?;
            feature.create(&layer).map_err(op("adding a feature to"))?;
            count += 1;
        }
    }
    txn.commit().map_err(op("committing"))?;
    gpkg.close().map_err(op("closing the package with"))?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preview::Placement;
    use crate::publish::{NODATA_U8, warp_to_web_mercator, write_class_cog};

    /// 400 × 400 px of 10 m in EPSG:32633 from (500000, 5000000) (about 15° E, 45.1° N).
    const N: usize = 400;
    const GT: [f64; 6] = [500_000.0, 10.0, 0.0, 5_000_000.0, 0.0, -10.0];

    /// Rows 0–19 nodata; columns 0–199 class 1 with a 50 × 50 block of class 3 (rows 100–149,
    /// columns 50–99); columns 200–399 class 2.
    fn class_at(row: usize, col: usize) -> u8 {
        if row < 20 {
            NODATA_U8
        } else if (100..150).contains(&row) && (50..100).contains(&col) {
            3
        } else if col < 200 {
            1
        } else {
            2
        }
    }

    fn legend() -> Vec<LegendClass> {
        [
            (1, "forest", "#228b22"),
            (2, "water", "#1e90ff"),
            (3, "built", "#ff00ff"),
        ]
        .into_iter()
        .map(|(id, name, color)| LegendClass {
            id,
            name: name.into(),
            color: color.into(),
        })
        .collect()
    }

    /// The centre of UTM pixel (row, col) in EPSG:3857.
    fn mercator(row: usize, col: usize) -> (f64, f64) {
        let mut xs = [GT[0] + (col as f64 + 0.5) * GT[1]];
        let mut ys = [GT[3] + (row as f64 + 0.5) * GT[5]];
        crate::grid::transform(32633, 3857)
            .unwrap()
            .transform_coords(&mut xs, &mut ys, &mut [])
            .unwrap();
        (xs[0], ys[0])
    }

    /// The RGBA of a tile table at a point (EPSG:3857), read at `zoom` (the finest when `None`).
    fn rgba_at(path: &Path, table: &str, zoom: Option<u8>, (x, y): (f64, f64)) -> [u8; 4] {
        let zoom_option = zoom.map(|z| format!("ZOOM_LEVEL={z}"));
        let open_options: Vec<&str> = zoom_option.iter().map(String::as_str).collect();
        let ds = Dataset::open_ex(
            format!("GPKG:{}:{table}", path.display()),
            DatasetOptions {
                open_flags: GdalOpenFlags::GDAL_OF_RASTER,
                open_options: Some(&open_options),
                ..DatasetOptions::default()
            },
        )
        .unwrap();
        assert_eq!(ds.raster_count(), 4);
        let gt = ds.geo_transform().unwrap();
        if let Some(z) = zoom {
            assert!(
                (gt[1] - zoom_resolution(z)).abs() < 1e-6,
                "{gt:?} at zoom {z}"
            );
        }
        let col = ((x - gt[0]) / gt[1]).floor() as isize;
        let row = ((y - gt[3]) / gt[5]).floor() as isize;
        let mut out = [0u8; 4];
        for (b, o) in out.iter_mut().enumerate() {
            let band = ds.rasterband(b + 1).unwrap();
            *o = band
                .read_as::<u8>((col, row), (1, 1), (1, 1), None)
                .unwrap()
                .data()[0];
        }
        out
    }

    fn zoom_levels(ds: &Dataset, table: &str) -> Vec<u8> {
        let mut rs = ds
            .execute_sql(
                format!("SELECT DISTINCT zoom_level FROM {table} ORDER BY zoom_level"),
                None,
                gdal::vector::sql::Dialect::DEFAULT,
            )
            .unwrap()
            .unwrap();
        rs.features()
            .map(|f| u8::try_from(f.field_as_integer(0).unwrap().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn a_class_map_becomes_one_geopackage_with_tiles_imagery_and_polygons() {
        let dir = tempfile::tempdir().unwrap();
        let utm = dir.path().join("class.tif");
        let web = dir.path().join("class-3857.tif");
        let data: Vec<u8> = (0..N * N).map(|i| class_at(i / N, i % N)).collect();
        let legend = legend();
        write_class_cog(&utm, &data, N, N, GT, 32633, &legend).unwrap();
        let info = warp_to_web_mercator(&utm, &web, true).unwrap();
        assert!(info.min_zoom < info.max_zoom, "{info:?}");

        // The imagery: one window over the map, a single colour where it has data.
        let corners = crate::grid::to_lonlat(
            32633,
            &[
                (GT[0], GT[3]),
                (GT[0] + N as f64 * 10.0, GT[3] - N as f64 * 10.0),
            ],
        )
        .unwrap();
        let window = WindowImage {
            placement: Placement {
                epsg: 32633,
                geotransform: GT,
                bbox: [corners[0].0, corners[1].1, corners[1].0, corners[0].1],
            },
            width: N,
            height: N,
            rgba: [40u8, 90, 160, 255].repeat(N * N),
        };
        let images = [window];
        let pkg = dir.path().join("package.gpkg");
        let spec = PackageSpec {
            utm_cog: &utm,
            web_cog: Some(&web),
            legend: &legend,
            title: "test",
            max_tiles: MAX_PACKAGE_TILES,
            max_polygons: MAX_PACKAGE_POLYGONS,
        };
        let summary = build_package(
            &pkg,
            &spec,
            Some(ImageryTiles {
                description: "Sentinel-2 true colour".into(),
                tiles: window_tiles(&images),
            }),
        )
        .unwrap();
        assert_eq!(
            (summary.min_zoom, summary.max_zoom),
            (info.min_zoom, info.max_zoom)
        );
        assert_eq!(
            summary.range.count(),
            tile_count(info.bounds_3857, info.max_zoom)
        );
        assert!(summary.class_tiles > 0 && summary.class_tiles <= summary.range.count());
        assert_eq!(summary.imagery_tiles, Some(summary.class_tiles));
        assert_eq!(summary.polygons, 3);

        // One file: two tile tables and one feature table.
        let ds = Dataset::open(&pkg).unwrap();
        assert_eq!(ds.driver().short_name(), "GPKG");
        let mut contents = ds
            .execute_sql(
                "SELECT table_name, data_type, srs_id FROM gpkg_contents ORDER BY table_name",
                None,
                gdal::vector::sql::Dialect::DEFAULT,
            )
            .unwrap()
            .unwrap();
        let tables: Vec<(String, String, i32)> = contents
            .features()
            .map(|f| {
                (
                    f.field_as_string(0).unwrap().unwrap(),
                    f.field_as_string(1).unwrap().unwrap(),
                    f.field_as_integer(2).unwrap().unwrap(),
                )
            })
            .collect();
        drop(contents);
        assert_eq!(
            tables,
            [
                ("class_map".into(), "tiles".into(), 3857),
                ("class_polygons".into(), "features".into(), 4326),
                ("imagery".into(), "tiles".into(), 3857),
            ]
        );
        let zooms: Vec<u8> = (info.min_zoom..=info.max_zoom).collect();
        assert_eq!(zoom_levels(&ds, CLASS_MAP_TABLE), zooms);
        assert_eq!(zoom_levels(&ds, IMAGERY_TABLE), zooms);
        drop(ds);

        // Legend colours where the classes are, transparent where there is no data, at the finest
        // zoom and at the coarsest (deep inside a class, where nearest neighbour cannot stray).
        let opaque = |hex: &str| {
            let [r, g, b] = crate::publish::parse_hex(hex).unwrap();
            [r, g, b, 255]
        };
        let at = |row, col| mercator(row, col);
        assert_eq!(
            rgba_at(&pkg, CLASS_MAP_TABLE, None, at(125, 75)),
            opaque("#ff00ff")
        );
        assert_eq!(
            rgba_at(&pkg, CLASS_MAP_TABLE, None, at(300, 100)),
            opaque("#228b22")
        );
        assert_eq!(
            rgba_at(&pkg, CLASS_MAP_TABLE, None, at(300, 300)),
            opaque("#1e90ff")
        );
        assert_eq!(rgba_at(&pkg, CLASS_MAP_TABLE, None, at(5, 300))[3], 0);
        let coarsest = Some(info.min_zoom);
        assert_eq!(
            rgba_at(&pkg, CLASS_MAP_TABLE, coarsest, at(300, 320)),
            opaque("#1e90ff")
        );
        assert_eq!(rgba_at(&pkg, CLASS_MAP_TABLE, coarsest, at(5, 300))[3], 0);
        // The imagery's colour where the window is (JPEG may shift it slightly).
        let im = rgba_at(&pkg, IMAGERY_TABLE, None, at(300, 300));
        for (got, want) in im.iter().zip([40u8, 90, 160, 255]) {
            assert!(got.abs_diff(want) <= 3, "{im:?}");
        }

        // One polygon per class region, with the legend's names and colours and areas in hectares.
        let ds = Dataset::open_ex(
            &pkg,
            DatasetOptions {
                open_flags: GdalOpenFlags::GDAL_OF_VECTOR,
                ..DatasetOptions::default()
            },
        )
        .unwrap();
        let mut layer = ds.layer_by_name(POLYGON_LAYER).unwrap();
        assert_eq!(layer.spatial_ref().unwrap().auth_code().unwrap(), 4326);
        let mut rows: Vec<(i32, String, String, f64)> = layer
            .features()
            .map(|f| {
                let g = f.geometry().unwrap();
                let env = g.envelope();
                assert!(env.MinX > 14.9 && env.MaxX < 15.1, "{env:?}");
                assert!(env.MinY > 45.0 && env.MaxY < 45.2, "{env:?}");
                (
                    f.field_as_integer(0).unwrap().unwrap(),
                    f.field_as_string(1).unwrap().unwrap(),
                    f.field_as_string(2).unwrap().unwrap(),
                    f.field_as_double(3).unwrap().unwrap(),
                )
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        let expected = [
            (1, "forest", "#228b22", (200.0 * 380.0 - 2500.0) / 100.0),
            (2, "water", "#1e90ff", 200.0 * 380.0 / 100.0),
            (3, "built", "#ff00ff", 2500.0 / 100.0),
        ];
        assert_eq!(rows.len(), expected.len(), "{rows:?}");
        for (got, want) in rows.iter().zip(expected) {
            assert_eq!(
                (got.0, got.1.as_str(), got.2.as_str()),
                (want.0, want.1, want.2)
            );
            assert!((got.3 - want.3).abs() < 1e-6, "{got:?} ≠ {want:?}");
        }
    }

    #[test]
    fn a_package_over_its_limits_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let utm = dir.path().join("class.tif");
        let data: Vec<u8> = (0..N * N).map(|i| class_at(i / N, i % N)).collect();
        write_class_cog(&utm, &data, N, N, GT, 32633, &legend()).unwrap();
        let pkg = dir.path().join("package.gpkg");
        let spec = PackageSpec {
            utm_cog: &utm,
            web_cog: None,
            legend: &legend(),
            title: "test",
            max_tiles: 1,
            max_polygons: MAX_PACKAGE_POLYGONS,
        };
        let err = build_package(&pkg, &spec, None).unwrap_err();
        assert!(matches!(err, PackageError::TooLarge(_)), "{err}");
        assert!(
            err.to_string()
                .contains("more than an offline package may hold (1)"),
            "{err}"
        );
        assert!(!pkg.exists());
        // The temporary web-mercator copy is gone too.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // Three class regions where two are allowed: refused while polygonising, nothing written.
        let spec = PackageSpec {
            max_tiles: MAX_PACKAGE_TILES,
            max_polygons: 2,
            ..spec
        };
        let err = build_package(&pkg, &spec, None).unwrap_err();
        assert!(matches!(err, PackageError::TooLarge(_)), "{err}");
        assert!(
            err.to_string()
                .contains("more than 2 separate class regions"),
            "{err}"
        );
        assert!(!pkg.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn tile_ranges_cover_bounds_without_a_neighbour_on_an_edge() {
        let b = tile_bounds(14, 8960, 5800).unwrap();
        let r = TileRange::covering(b, 14).unwrap();
        assert_eq!(
            (r.x0, r.y0, r.x1, r.y1, r.count()),
            (8960, 5800, 8960, 5800, 1)
        );
        let r = TileRange::covering([b[0] + 1.0, b[1] - 1.0, b[2] + 1.0, b[3] - 1.0], 14).unwrap();
        assert_eq!((r.x0, r.y0, r.x1, r.y1), (8960, 5800, 8961, 5801));
        assert_eq!(tile_count([0.0, 0.0, 0.0, 0.0], 14), 0);
        assert_eq!(tile_count([-1.0, -1.0, 1.0, 1.0], 0), 1);
        assert_eq!(tile_count([-1.0, -1.0, 1.0, 1.0], 3), 4);
    }
}
