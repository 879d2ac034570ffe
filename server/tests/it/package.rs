//! The offline package of a class map over a real socket: `GET /api/v1/outputs/{id}/package.gpkg`
//! gives one GeoPackage that GDAL opens (as QGIS, QField and ArcGIS would) with the class map's
//! tiles in the legend's colours, the true-colour imagery of the acquired windows and the class
//! polygons with their areas; it answers range requests, so GDAL also reads it by URL; outputs that
//! are not class maps, or too large, are refused; another organisation gets 404.
#![expect(clippy::unwrap_used, reason = "tests")]

use gdal::vector::LayerAccess;
use gdal::{Dataset, DatasetOptions, GdalOpenFlags};
use groundwork_imagery::WindowSpec;
use groundwork_imagery::preview::{self, Rendering};
use groundwork_imagery::publish::{
    LegendClass, NODATA_U8, WebMercatorInfo, warp_to_web_mercator, write_class_cog,
};
use groundwork_server::AppState;
use groundwork_server::testing::member_token;
use groundwork_store::accounts::Role;
use groundwork_store::outputs::{self, NewOutput, Output};
use groundwork_store::testing::TestDb;
use groundwork_store::{DEFAULT_ORG_ID, PgPool, projects};
use groundwork_types::Modality;
use groundwork_types::keys::ProjectKeys;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

/// Band values (model order) of every imagery pixel.
const CROP: [f32; 12] = [
    400., 750., 380., 3900., 950., 2700., 3400., 3600., 1800., 850., 450., 1050.,
];

/// A Sentinel-2 project over about 2 × 2 km near 10° E, 50° N.
async fn project(pool: &PgPool) -> projects::Project {
    use groundwork_store::projects::ProjectFields;
    use groundwork_types::{ModelSize, Task};
    let f = ProjectFields {
        name: "field survey".into(),
        description: String::new(),
        aoi: json!({"type": "Polygon", "coordinates": [[[10.0, 50.0], [10.025, 50.0], [10.025, 50.018], [10.0, 50.018], [10.0, 50.0]]]}),
        bbox: [10.0, 50.0, 10.025, 50.018],
        area_km2: 3.6,
        start: "2024-05-01".parse().unwrap(),
        end: "2024-06-30".parse().unwrap(),
        task: Task::Segmentation,
        classes: Vec::new(),
        modalities: vec![Modality::Sentinel2L2a],
        model_size: ModelSize::Nano,
        patch_size: 4,
        window_size: 64,
        license: "CC-BY-4.0".into(),
        license_url: None,
        allow_random_init: false,
    };
    projects::create(pool, DEFAULT_ORG_ID, &f).await.unwrap()
}

fn legend() -> Vec<LegendClass> {
    vec![
        LegendClass {
            id: 1,
            name: "cropland".into(),
            color: "#e0c060".into(),
        },
        LegendClass {
            id: 2,
            name: "water".into(),
            color: "#1e64c8".into(),
        },
    ]
}

/// The class map over the windows: its first row nodata, the western half cropland, the eastern
/// half water.
struct ClassMap {
    epsg: u32,
    geotransform: [f64; 6],
    width: usize,
    height: usize,
}

impl ClassMap {
    fn class(&self, row: usize, col: usize) -> u8 {
        if row == 0 {
            NODATA_U8
        } else if col < self.width / 2 {
            1
        } else {
            2
        }
    }

    /// The centre of pixel (row, col) in EPSG:3857.
    fn mercator(&self, row: usize, col: usize) -> (f64, f64) {
        let gt = self.geotransform;
        let p = (
            gt[0] + (col as f64 + 0.5) * gt[1],
            gt[3] + (row as f64 + 0.5) * gt[5],
        );
        let (lon, lat) = groundwork_imagery::grid::to_lonlat(self.epsg, &[p]).unwrap()[0];
        let x = lon.to_radians() * 6_378_137.0;
        let y = (std::f64::consts::FRAC_PI_4 + lat.to_radians() / 2.0)
            .tan()
            .ln()
            * 6_378_137.0;
        (x, y)
    }
}

/// Writes the class map over `windows` under `objects` (UTM and web-mercator COGs) and records it as
/// a class output of a run of `project`.
async fn publish(
    pool: &PgPool,
    objects: &Path,
    project: Uuid,
    windows: &[WindowSpec],
) -> (ClassMap, WebMercatorInfo, Output) {
    let [mut x0, mut y0, mut x1, mut y1] = windows[0].utm_bounds;
    for w in windows {
        x0 = x0.min(w.utm_bounds[0]);
        y0 = y0.min(w.utm_bounds[1]);
        x1 = x1.max(w.utm_bounds[2]);
        y1 = y1.max(w.utm_bounds[3]);
    }
    let map = ClassMap {
        epsg: windows[0].epsg,
        geotransform: [x0, 10.0, 0.0, y1, 0.0, -10.0],
        width: ((x1 - x0) / 10.0).round() as usize,
        height: ((y1 - y0) / 10.0).round() as usize,
    };
    let data: Vec<u8> = (0..map.width * map.height)
        .map(|i| map.class(i / map.width, i % map.width))
        .collect();
    let run = crate::common::noop_run(pool, project).await.run.id;
    let prefix = format!("orgs/{DEFAULT_ORG_ID}/projects/{project}/runs/{run}");
    let (utm_key, web_key) = (
        format!("{prefix}/combine/s/class.tif"),
        format!("{prefix}/publish/s/class-3857.tif"),
    );
    let (utm, web) = (objects.join(&utm_key), objects.join(&web_key));
    std::fs::create_dir_all(utm.parent().unwrap()).unwrap();
    std::fs::create_dir_all(web.parent().unwrap()).unwrap();
    write_class_cog(
        &utm,
        &data,
        map.width,
        map.height,
        map.geotransform,
        map.epsg,
        &legend(),
    )
    .unwrap();
    let info = warp_to_web_mercator(&utm, &web, true).unwrap();
    let output = outputs::upsert(
        pool,
        &NewOutput {
            org_id: DEFAULT_ORG_ID,
            project_id: project,
            run_id: run,
            kind: "class".into(),
            utm_key,
            web_key,
            epsg: i32::try_from(map.epsg).unwrap(),
            width: i32::try_from(map.width).unwrap(),
            height: i32::try_from(map.height).unwrap(),
            bands: 1,
            bbox: info.bounds_wgs84,
            bounds_3857: info.bounds_3857,
            min_zoom: i16::from(info.min_zoom),
            max_zoom: i16::from(info.max_zoom),
            classes: serde_json::to_value(legend()).unwrap(),
            stats: json!({}),
            lineage: json!({}),
            footprint: None,
        },
    )
    .await
    .unwrap();
    (map, info, output)
}

/// Another output row of `project` (its own run) pointing at `like`'s files.
async fn other_output(pool: &PgPool, like: &Output, kind: &str, bounds_3857: [f64; 4]) -> Output {
    let run = crate::common::noop_run(pool, like.project_id).await.run.id;
    outputs::upsert(
        pool,
        &NewOutput {
            org_id: DEFAULT_ORG_ID,
            project_id: like.project_id,
            run_id: run,
            kind: kind.into(),
            utm_key: like.utm_key.clone(),
            web_key: like.web_key.clone(),
            epsg: like.epsg,
            width: like.width,
            height: like.height,
            bands: 1,
            bbox: like.bbox,
            bounds_3857,
            min_zoom: like.min_zoom,
            max_zoom: like.max_zoom,
            classes: like.classes.clone(),
            stats: json!({}),
            lineage: json!({}),
            footprint: None,
        },
    )
    .await
    .unwrap()
}

/// The RGBA of a tile table at a point (EPSG:3857), at its finest zoom.
fn rgba_at(path: &Path, table: &str, (x, y): (f64, f64)) -> [u8; 4] {
    let ds = Dataset::open(format!("GPKG:{}:{table}", path.display())).unwrap();
    assert_eq!(ds.raster_count(), 4);
    let gt = ds.geo_transform().unwrap();
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

/// The rows of an SQL query on a GeoPackage, each field as text.
fn rows(ds: &Dataset, sql: &str) -> Vec<Vec<String>> {
    let mut rs = ds
        .execute_sql(sql, None, gdal::vector::sql::Dialect::DEFAULT)
        .unwrap()
        .unwrap();
    rs.features()
        .map(|f| {
            (0..f.field_count())
                .map(|i| f.field_as_string(i).unwrap().unwrap_or_default())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_map_downloads_as_one_geopackage_with_tiles_imagery_and_polygons() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut state = AppState::new(db.pool.clone());
    state.objects = Some(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
    ));
    let project = project(&db.pool).await;

    // Acquired windows, each with a Sentinel-2 tensor of two months under the fixed window key.
    let windows = groundwork_worker::steps::plan_windows(&db.pool, &project)
        .await
        .unwrap();
    assert!(windows.len() >= 4, "{}", windows.len());
    sqlx::query("update project_window set status = 'acquired' where project_id = $1")
        .bind(project.id)
        .execute(&db.pool)
        .await
        .unwrap();
    let keys = ProjectKeys::new(DEFAULT_ORG_ID, project.id);
    for w in &windows {
        let path = dir.path().join(keys.window(&w.id, Modality::Sentinel2L2a));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, crate::common::s2_window_file(w, |_, _| CROP, &[5, 6])).unwrap();
    }
    let (map, info, output) = publish(&db.pool, dir.path(), project.id, &windows).await;
    assert!(info.min_zoom < info.max_zoom, "{info:?}");

    let token = member_token(&db.pool, DEFAULT_ORG_ID, Role::Viewer)
        .await
        .unwrap();
    let app = groundwork_server::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let base = format!("http://{addr}/api/v1/outputs");
    let url = format!("{base}/{}/package.gpkg", output.id);
    let client = |token: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    };
    let http = client(&token);

    // The download: a GeoPackage attachment, the same file the second time (built once).
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/geopackage+sqlite3"
    );
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(
        r.headers()["content-disposition"].to_str().unwrap(),
        format!("attachment; filename=\"package-{}.gpkg\"", output.id)
    );
    let body = r.bytes().await.unwrap();
    assert!(body.starts_with(b"SQLite format 3\0"));
    let again = http.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(again, body);
    let part = http
        .get(&url)
        .header("range", "bytes=0-15")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), b"SQLite format 3\0");

    let file = dir.path().join("downloaded.gpkg");
    std::fs::write(&file, &body).unwrap();
    let ds = Dataset::open(&file).unwrap();
    assert_eq!(ds.driver().short_name(), "GPKG");
    let contents = rows(
        &ds,
        "SELECT table_name, data_type, srs_id, description FROM gpkg_contents ORDER BY table_name",
    );
    let names: Vec<[&str; 3]> = contents
        .iter()
        .map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str()])
        .collect();
    assert_eq!(
        names,
        [
            ["class_map", "tiles", "3857"],
            ["class_polygons", "features", "4326"],
            ["imagery", "tiles", "3857"],
        ]
    );
    // Both months are complete: the later one is shown.
    assert_eq!(
        contents[2][3],
        "field survey: Sentinel-2 true colour, 2024-06"
    );
    let zooms: Vec<String> = (info.min_zoom..=info.max_zoom)
        .map(|z| z.to_string())
        .collect();
    for table in ["class_map", "imagery"] {
        let levels: Vec<String> = rows(
            &ds,
            &format!("SELECT DISTINCT zoom_level FROM {table} ORDER BY zoom_level"),
        )
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
        assert_eq!(levels, zooms, "{table}");
    }
    drop(ds);

    // The legend's colours, nodata transparent, the imagery's true colour.
    let (w, h) = (map.width, map.height);
    assert_eq!(
        rgba_at(&file, "class_map", map.mercator(h / 2, w / 4)),
        [0xe0, 0xc0, 0x60, 255]
    );
    assert_eq!(
        rgba_at(&file, "class_map", map.mercator(h / 2, 3 * w / 4)),
        [0x1e, 0x64, 0xc8, 255]
    );
    assert_eq!(rgba_at(&file, "class_map", map.mercator(0, w / 4))[3], 0);
    let channels = preview::channels(Modality::Sentinel2L2a, Rendering::TrueColor).unwrap();
    let [r, g, b] = preview::pixel_colour(&channels, &CROP).unwrap();
    let im = rgba_at(&file, "imagery", map.mercator(h / 2, w / 2));
    for (got, want) in im.iter().zip([r, g, b, 255]) {
        assert!(got.abs_diff(want) <= 3, "{im:?} vs {:?}", [r, g, b]);
    }

    // One polygon per class region, named, with its area in hectares.
    let ds = Dataset::open_ex(
        &file,
        DatasetOptions {
            open_flags: GdalOpenFlags::GDAL_OF_VECTOR,
            ..DatasetOptions::default()
        },
    )
    .unwrap();
    let polygons = rows(
        &ds,
        "SELECT class, name, color, area_ha FROM class_polygons ORDER BY class",
    );
    let half = (w / 2) as f64;
    let expected = [
        ("1", "cropland", "#e0c060", half * (h - 1) as f64 / 100.0),
        (
            "2",
            "water",
            "#1e64c8",
            (w as f64 - half) * (h - 1) as f64 / 100.0,
        ),
    ];
    assert_eq!(polygons.len(), 2, "{polygons:?}");
    for (got, want) in polygons.iter().zip(expected) {
        assert_eq!([&got[0], &got[1], &got[2]], [want.0, want.1, want.2]);
        let area: f64 = got[3].parse().unwrap();
        assert!((area - want.3).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    drop(ds);

    // GDAL reads it by URL too, through range requests.
    let by_url = url.clone();
    let bearer = token.clone();
    let layers = tokio::task::spawn_blocking(move || {
        gdal::config::set_thread_local_config_option(
            "GDAL_HTTP_HEADERS",
            &format!("Authorization: Bearer {bearer}"),
        )
        .unwrap();
        gdal::config::set_thread_local_config_option("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
            .unwrap();
        let ds = Dataset::open_ex(
            format!("/vsicurl/{by_url}"),
            DatasetOptions {
                open_flags: GdalOpenFlags::GDAL_OF_VECTOR,
                ..DatasetOptions::default()
            },
        )
        .unwrap();
        let layer = ds.layer_by_name("class_polygons").unwrap();
        layer.feature_count()
    })
    .await
    .unwrap();
    assert_eq!(layers, 2);

    // Refusals: not a class map (409), too many tiles (413), before any work.
    let bounds: [f64; 4] = serde_json::from_value(output.bounds_3857.clone()).unwrap();
    let probability = other_output(&db.pool, &output, "probability", bounds).await;
    let r = http
        .get(format!("{base}/{}/package.gpkg", probability.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "not_a_class_map"
    );
    let [x0, y0, _, _] = bounds;
    let wide = other_output(&db.pool, &output, "class", [x0, y0, x0 + 2e5, y0 + 2e5]).await;
    let r = http
        .get(format!("{base}/{}/package.gpkg", wide.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let err = r.json::<Value>().await.unwrap();
    assert_eq!(err["error"]["code"], "package_too_large", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than an offline package may hold (1024)"),
        "{err}"
    );

    // A member of another organisation does not find it.
    let other = Uuid::new_v4();
    sqlx::query("insert into org (id, name) values ($1, 'elsewhere')")
        .bind(other)
        .execute(&db.pool)
        .await
        .unwrap();
    let outsider = client(&member_token(&db.pool, other, Role::Owner).await.unwrap());
    let r = outsider.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    // Nor without a token.
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 401);
}
