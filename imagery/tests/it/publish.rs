//! Output rasters: a class map COG keeps its colour table and nodata through the warp to a
//! `GoogleMapsCompatible` web-mercator COG, tiles show the right colour at the right place and are
//! transparent elsewhere, and polygonising gives the class regions in lon/lat.
#![expect(clippy::unwrap_used, reason = "tests")]

use gdal::{Dataset, Metadata};
use groundwork_imagery::publish::{
    LegendClass, polygonize_classes, warp_to_web_mercator, write_class_cog,
};
use groundwork_imagery::tiles::{TileStyle, render_tile_rgba, tile_of};

fn legend() -> Vec<LegendClass> {
    vec![
        LegendClass {
            id: 1,
            name: "water".into(),
            color: "#0000ff".into(),
        },
        LegendClass {
            id: 7,
            name: "forest".into(),
            color: "#00aa00".into(),
        },
    ]
}

/// 200 × 100 px at 10 m in EPSG:32633 near 15° E 45° N: west half water, east half forest, with a
/// nodata square in the middle of the forest.
fn class_map(dir: &std::path::Path) -> std::path::PathBuf {
    let (w, h) = (200usize, 100usize);
    let mut v = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            v[y * w + x] = if x < 100 {
                1
            } else if (140..160).contains(&x) && (40..60).contains(&y) {
                255
            } else {
                7
            };
        }
    }
    let path = dir.join("class.tif");
    write_class_cog(
        &path,
        &v,
        w,
        h,
        [500_000.0, 10.0, 0.0, 4_985_000.0, 0.0, -10.0],
        32633,
        &legend(),
    )
    .unwrap();
    path
}

fn lonlat(x: f64, y: f64) -> (f64, f64) {
    use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
    let mut a = SpatialRef::from_epsg(32633).unwrap();
    a.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let mut b = SpatialRef::from_epsg(4326).unwrap();
    b.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let (mut xs, mut ys) = ([x], [y]);
    CoordTransform::new(&a, &b)
        .unwrap()
        .transform_coords(&mut xs, &mut ys, &mut [])
        .unwrap();
    (xs[0], ys[0])
}

fn pixel_in_tile(lon: f64, lat: f64, z: u8) -> (usize, usize) {
    let n = f64::from(1u32 << z);
    let fx = (lon + 180.0) / 360.0 * n;
    let r = lat.to_radians();
    let fy = (1.0 - (r.tan() + 1.0 / r.cos()).ln() / std::f64::consts::PI) / 2.0 * n;
    ((fx.fract() * 256.0) as usize, (fy.fract() * 256.0) as usize)
}

#[test]
fn class_cog_warps_to_web_mercator_and_renders_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let utm = class_map(dir.path());
    let ds = Dataset::open(&utm).unwrap();
    assert_eq!(
        ds.metadata_item("LAYOUT", "IMAGE_STRUCTURE").as_deref(),
        Some("COG")
    );
    let band = ds.rasterband(1).unwrap();
    assert_eq!(band.no_data_value(), Some(255.0));
    let forest = band.color_table().unwrap().entry_as_rgb(7).unwrap();
    assert_eq!((forest.r, forest.g, forest.b, forest.a), (0, 170, 0, 255));

    let web = dir.path().join("class-3857.tif");
    let info = warp_to_web_mercator(&utm, &web, true).unwrap();
    assert_eq!(info.max_zoom, 14, "10 m pixels land on zoom 14 (9.55 m)");
    assert!(info.min_zoom < info.max_zoom);
    assert!(
        info.bounds_wgs84[0] > 14.9 && info.bounds_wgs84[2] < 15.1,
        "{info:?}"
    );
    let wds = Dataset::open(&web).unwrap();
    assert_eq!(wds.spatial_ref().unwrap().auth_code().unwrap(), 3857);
    assert_eq!(wds.rasterband(1).unwrap().no_data_value(), Some(255.0));
    assert_eq!(wds.raster_count(), 1, "no alpha band");

    let style = TileStyle::Classes(legend().iter().map(|c| (c.id, c.rgb())).collect());
    let z = info.max_zoom;
    for (x, y, want) in [
        (500_250.0, 4_984_500.0, [0, 0, 255, 255]), // water
        (501_800.0, 4_984_200.0, [0, 170, 0, 255]), // forest
        (501_500.0, 4_984_500.0, [0, 0, 0, 0]),     // the nodata square
    ] {
        let (lon, lat) = lonlat(x, y);
        let (tx, ty) = tile_of(lon, lat, z);
        let (px, py) = pixel_in_tile(lon, lat, z);
        let rgba = render_tile_rgba(&web, z, tx, ty, &style).unwrap().unwrap();
        let o = (py * 256 + px) * 4;
        assert_eq!(rgba[o..o + 4], want, "at ({x}, {y})");
        // The same place on a coarser zoom (an overview) keeps its class.
        if want[3] == 255 {
            let (tx, ty) = tile_of(lon, lat, z - 2);
            let (px, py) = pixel_in_tile(lon, lat, z - 2);
            let rgba = render_tile_rgba(&web, z - 2, tx, ty, &style)
                .unwrap()
                .unwrap();
            let o = (py * 256 + px) * 4;
            assert_eq!(rgba[o..o + 4], want, "zoom {} at ({x}, {y})", z - 2);
        }
    }
    // Far away: no tile.
    assert!(render_tile_rgba(&web, z, 0, 0, &style).unwrap().is_none());
    assert!(
        render_tile_rgba(&web, 2, 9, 0, &style).is_err(),
        "x out of range at zoom 2"
    );

    let fc = polygonize_classes(&utm, &legend()).unwrap();
    let features = fc["features"].as_array().unwrap();
    let classes: std::collections::BTreeSet<i64> = features
        .iter()
        .map(|f| f["properties"]["class"].as_i64().unwrap())
        .collect();
    assert_eq!(classes.into_iter().collect::<Vec<_>>(), [1, 7]);
    let forest = features
        .iter()
        .find(|f| f["properties"]["name"] == "forest")
        .unwrap();
    // The forest polygon has the nodata square as a hole, in lon/lat.
    assert_eq!(forest["geometry"]["type"], "Polygon");
    assert_eq!(
        forest["geometry"]["coordinates"].as_array().unwrap().len(),
        2
    );
    let lon = forest["geometry"]["coordinates"][0][0][0].as_f64().unwrap();
    assert!((14.9..15.1).contains(&lon));
}

/// A raster on the web-mercator tile grid of zoom 14 (3 × 3 tiles, one source pixel per tile pixel):
/// every tile pixel must be exactly its source pixel. A floating-point error in the tile's pixel
/// window used to read 257 source rows or columns into 256, repeating or shifting one.
#[test]
fn a_raster_on_the_tile_grid_renders_pixel_for_pixel() {
    use gdal::DriverManager;
    use gdal::spatial_ref::SpatialRef;
    use groundwork_imagery::tiles::tile_bounds;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grid.tif");
    let (z, tx0, ty0) = (14u8, 8_839u32, 5_858u32);
    let first = tile_bounds(z, tx0, ty0).unwrap();
    let res = (first[2] - first[0]) / 256.0;
    let n = 3 * 256;
    // Each pixel's value names its row and column modulo 16.
    let value = |row: usize, col: usize| ((row % 16) * 16 + col % 16) as u8;
    let data: Vec<u8> = (0..n * n).map(|i| value(i / n, i % n)).collect();
    {
        let drv = DriverManager::get_driver_by_name("GTiff").unwrap();
        let mut ds = drv.create_with_band_type::<u8, _>(&path, n, n, 1).unwrap();
        ds.set_geo_transform(&[first[0], res, 0.0, first[3], 0.0, -res])
            .unwrap();
        ds.set_spatial_ref(&SpatialRef::from_epsg(3857).unwrap())
            .unwrap();
        let mut band = ds.rasterband(1).unwrap();
        let mut buf = gdal::raster::Buffer::new((n, n), data);
        band.write((0, 0), (n, n), &mut buf).unwrap();
    }
    let style = TileStyle::Ramp {
        band: 1,
        min: 0.0,
        max: 255.0,
        nodata: None,
    };
    for ty in 0..3u32 {
        for tx in 0..3u32 {
            let rgba = render_tile_rgba(&path, z, tx0 + tx, ty0 + ty, &style)
                .unwrap()
                .unwrap();
            for v in 0..256usize {
                for u in 0..256usize {
                    let want = groundwork_imagery::tiles::ramp(
                        f32::from(value(ty as usize * 256 + v, tx as usize * 256 + u)) / 255.0,
                    );
                    let o = (v * 256 + u) * 4;
                    assert_eq!(rgba[o..o + 3], want, "tile +{tx}+{ty}, pixel ({u}, {v})");
                }
            }
        }
    }
}
