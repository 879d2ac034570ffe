//! Prediction through publication on real services: acquired windows (tensors in the object store)
//! are predicted in partitions, combined into UTM COGs and published as web-mercator COGs; the API
//! serves tiles (with ETag/304), downloads, metadata and STAC that validates against the STAC 1.1
//! schemas; another organisation sees none of it.
#![expect(clippy::unwrap_used, reason = "tests")]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::{Dataset, Metadata};
use groundwork_server::{AppState, router};
use groundwork_store::jobs::{self, NewStep};
use groundwork_store::testing::TestDb;
use groundwork_store::windows;
use groundwork_worker::steps::predict::{ModelSpec, PredictOptions};
use groundwork_worker::{Registry, Worker, WorkerConfig};
use http_body_util::BodyExt;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use uuid::Uuid;

const EPSG: u32 = 32633;
const N: usize = 64;
const RES: f64 = 10.0;
/// The window left out of the acquired set (its area must stay transparent).
const HOLE: (i64, i64) = (781, 7781);

async fn get(
    app: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    // 503 means "try again later" (the database did not answer in time): on a machine starved by the
    // other tests' pipelines it has been seen once in a while, so it is retried, and said.
    let mut tries = 0;
    loop {
        let mut req = Request::builder().method("GET").uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let h = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        if status.is_server_error() {
            eprintln!("{uri}: {status} {}", String::from_utf8_lossy(&bytes));
        }
        tries += 1;
        if status != StatusCode::SERVICE_UNAVAILABLE || tries == 5 {
            return (status, h, bytes);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn get_json(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let (s, _, b) = get(app, uri, &[]).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn window_file(months: &[i32]) -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let t = months.len();
    let (c, s) = (12, 3);
    let data: Vec<u8> = (0..N * N * t * c)
        .flat_map(|i| (500.0 + (i % 97) as f32).to_le_bytes())
        .collect();
    let mask = vec![0u8; N * N * t * s];
    let ts: Vec<u8> = months
        .iter()
        .flat_map(|m| [1, *m, 2024])
        .flat_map(i32::to_le_bytes)
        .collect();
    let views = vec![
        (
            "sentinel2_l2a".to_string(),
            TensorView::new(Dtype::F32, vec![N, N, t, c], &data).unwrap(),
        ),
        (
            "sentinel2_l2a_mask".to_string(),
            TensorView::new(Dtype::U8, vec![N, N, t, s], &mask).unwrap(),
        ),
        (
            "timestamps".to_string(),
            TensorView::new(Dtype::I32, vec![t, 3], &ts).unwrap(),
        ),
    ];
    safetensors::serialize(views, None).unwrap()
}

fn utm_to_wgs84() -> CoordTransform {
    let mut a = SpatialRef::from_epsg(EPSG).unwrap();
    a.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let mut b = SpatialRef::from_epsg(4326).unwrap();
    b.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    CoordTransform::new(&a, &b).unwrap()
}

/// Lon/lat of the centre of a window.
fn centre(column: i64, row: i64) -> (f64, f64) {
    let side = N as f64 * RES;
    let mut xs = [(column as f64 + 0.5) * side];
    let mut ys = [(row as f64 + 0.5) * side];
    utm_to_wgs84()
        .transform_coords(&mut xs, &mut ys, &mut [])
        .unwrap();
    (xs[0], ys[0])
}

struct Published {
    app: axum::Router,
    foreign: axum::Router,
    project_id: String,
    class_id: String,
    probability_id: String,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

async fn publish() -> Published {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new().await.unwrap();
    let objects: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let mut state = AppState::new(db.pool.clone());
    state.objects = Some(objects.clone());
    let app = groundwork_server::testing::owner_router(state.clone())
        .await
        .unwrap();
    // An owner of another organisation.
    let other = Uuid::from_u128(0xf0f0);
    sqlx::query("insert into org (id, name) values ($1, 'other')")
        .bind(other)
        .execute(&db.pool)
        .await
        .unwrap();
    let token = groundwork_server::testing::member_token(
        &db.pool,
        other,
        groundwork_store::accounts::Role::Owner,
    )
    .await
    .unwrap();
    let foreign = groundwork_server::testing::with_bearer(router(state.clone()), &token).unwrap();

    let (w, s) = centre(780, 7780);
    let (e, n) = centre(783, 7782);
    let aoi = json!({"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]});
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/projects")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"name": "mangroves", "aoi": aoi, "start": "2024-04-01", "end": "2024-07-31",
                   "task": "segmentation", "modalities": ["sentinel2_l2a"], "window_size": 64, "patch_size": 4,
                   "classes": [{"id": 1, "name": "water", "color": "#0000ff"},
                               {"id": 2, "name": "mangrove", "color": "#00ff00"},
                               {"id": 3, "name": "urban", "color": "#ff0000"}]})
            .to_string(),
        ))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body:#}");
    let project_id = body["id"].as_str().unwrap().to_string();
    let pid: Uuid = project_id.parse().unwrap();
    let org = groundwork_store::DEFAULT_ORG_ID;

    // Acquired windows: a 4 × 3 block with one hole.
    let marker = jobs::create_run(
        &db.pool,
        org,
        pid,
        &[NewStep::new(
            "mark",
            "noop".parse().unwrap(),
            json!({}),
            "none",
        )],
        None,
    )
    .await
    .unwrap();
    let mut rows = Vec::new();
    let mut outcomes = Vec::new();
    for column in 780..784 {
        for row in 7780..7783 {
            if (column, row) == HOLE {
                continue;
            }
            let id = format!("{EPSG}_10m_64px_{column}_{row}");
            let side = N as f64 * RES;
            let (x0, y1) = (column as f64 * side, (row + 1) as f64 * side);
            let (lon, lat) = centre(column, row);
            rows.push(windows::NewWindow {
                id: id.clone(),
                epsg: EPSG as i32,
                crs: format!("EPSG:{EPSG}"),
                size: N as i32,
                resolution: RES,
                column,
                row,
                geotransform: json!([x0, RES, 0.0, y1, 0.0, -RES]),
                utm_bounds: json!([x0, y1 - side, x0 + side, y1]),
                bbox: [lon - 0.004, lat - 0.003, lon + 0.004, lat + 0.003],
                geometry: json!({"type": "Point", "coordinates": [lon, lat]}),
            });
            let key = format!("orgs/{org}/projects/{pid}/windows/{id}/sentinel2_l2a.safetensors");
            objects
                .put(
                    &object_store::path::Path::from(key.as_str()),
                    window_file(&[4, 5]).into(),
                )
                .await
                .unwrap();
            outcomes.push(windows::Outcome {
                id,
                status: "acquired".into(),
                reason: None,
                scenes: json!({"sentinel2_l2a": [[format!("S2A_{column}_{row}")], ["S2B_T33TWL_20240601"]]}),
                objects: vec![key],
            });
        }
    }
    windows::upsert(&db.pool, pid, &rows).await.unwrap();
    windows::record_outcomes(&db.pool, pid, marker.steps[0].id, &outcomes)
        .await
        .unwrap();

    let project = groundwork_store::projects::get(&db.pool, org, pid)
        .await
        .unwrap();
    let opts = PredictOptions {
        model: ModelSpec::Constant {
            values: vec![0.1, 0.7, 0.2],
            regression: false,
        },
        block: Some(2),
        overlap: Some(16),
        lineage: json!({"label_set_version": "labels-v3", "metrics": {"miou": 0.61, "accuracy": 0.83}}),
        acquire: None,
    };
    let steps = groundwork_worker::steps::plan_prediction(&db.pool, &project, &opts)
        .await
        .map(|p| p.steps)
        .unwrap();
    assert_eq!(
        steps.iter().filter(|s| s.kind == "predict").count(),
        4,
        "2 × 2 blocks over 4 × 3 windows"
    );
    let run = jobs::create_run(&db.pool, org, pid, &steps, None)
        .await
        .unwrap();

    let mut c = WorkerConfig::new("cpu", vec!["cpu".into()]);
    c.heartbeat = Duration::from_millis(300);
    c.concurrency = 2;
    c.objects = Some(objects.clone());
    let worker = Worker::start(db.pool.clone(), c, Registry::builtin())
        .await
        .unwrap();
    let start = Instant::now();
    let done = loop {
        let r = jobs::get_run(&db.pool, org, run.run.id).await.unwrap();
        if ["succeeded", "failed", "cancelled"].contains(&r.run.state.as_str()) {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "run did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    worker.shutdown().await;
    assert_eq!(
        done.run.state,
        "succeeded",
        "{:#?}",
        done.steps
            .iter()
            .map(|s| (&s.name, &s.error))
            .collect::<Vec<_>>()
    );
    // Each prediction says where the encoder would run and in what: the CPU, in f32.
    for s in done.steps.iter().filter(|s| s.kind == "predict") {
        let out = s.output.as_ref().unwrap();
        assert_eq!(out["device"], "cpu", "{out:#}");
        assert_eq!(out["compute_dtype"], "f32", "{out:#}");
    }
    let published = done
        .steps
        .iter()
        .find(|s| s.kind == "publish")
        .unwrap()
        .output
        .clone()
        .unwrap();
    let id_of = |kind: &str| {
        published["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == kind)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    Published {
        app,
        foreign,
        project_id,
        class_id: id_of("class"),
        probability_id: id_of("probability"),
        _db: db,
        _dir: dir,
    }
}

fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Tile and pixel of a lon/lat at zoom z.
fn tile_pixel(lon: f64, lat: f64, z: u8) -> (u32, u32, usize, usize) {
    let n = f64::from(1u32 << z);
    let fx = (lon + 180.0) / 360.0 * n;
    let lat_r = lat.to_radians();
    let fy = (1.0 - (lat_r.tan() + 1.0 / lat_r.cos()).ln() / std::f64::consts::PI) / 2.0 * n;
    (
        fx as u32,
        fy as u32,
        (fx.fract() * 256.0) as usize,
        (fy.fract() * 256.0) as usize,
    )
}

fn rgba_at(rgba: &[u8], px: usize, py: usize) -> [u8; 4] {
    let o = (py * 256 + px) * 4;
    [rgba[o], rgba[o + 1], rgba[o + 2], rgba[o + 3]]
}

#[tokio::test]
async fn published_outputs_serve_tiles_downloads_and_stac() {
    let p = publish().await;
    let app = &p.app;

    // Metadata and the project's list.
    let (s, meta) = get_json(app, &format!("/api/v1/outputs/{}", p.class_id)).await;
    assert_eq!(s, StatusCode::OK, "{meta:#}");
    assert_eq!(meta["kind"], "class");
    assert_eq!(meta["epsg"], EPSG);
    assert_eq!(
        meta["legend"][1],
        json!({"value": 2, "name": "mangrove", "color": "#00ff00"})
    );
    let max_zoom = u8::try_from(meta["max_zoom"].as_i64().unwrap()).unwrap();
    assert!(
        max_zoom >= 13,
        "10 m pixels need zoom 13 or more, got {max_zoom}"
    );
    let (s, list) = get_json(app, &format!("/api/v1/projects/{}/outputs", p.project_id)).await;
    assert_eq!(s, StatusCode::OK);
    let mut kinds: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["class", "probability"]);

    // A tile over a predicted window is the class colour; over the hole it is transparent.
    let (lon, lat) = centre(782, 7780);
    let (tx, ty, px, py) = tile_pixel(lon, lat, max_zoom);
    let uri = format!(
        "/api/v1/outputs/{}/tiles/{max_zoom}/{tx}/{ty}.png",
        p.class_id
    );
    let (s, h, body) = get(app, &uri, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "image/png");
    // Only the browser that asked may keep a tile: it is behind authentication.
    assert_eq!(h[header::CACHE_CONTROL], "private, max-age=3600");
    assert_eq!(h[header::VARY], "Authorization, Cookie");
    let (w, hgt, rgba) = decode_png(&body);
    assert_eq!((w, hgt), (256, 256));
    assert_eq!(
        rgba_at(&rgba, px, py),
        [0, 255, 0, 255],
        "mangrove green at the window centre"
    );
    let (hx, hy) = centre(HOLE.0, HOLE.1);
    let (htx, hty, hpx, hpy) = tile_pixel(hx, hy, max_zoom);
    let (s, _, body) = get(
        app,
        &format!(
            "/api/v1/outputs/{}/tiles/{max_zoom}/{htx}/{hty}.png",
            p.class_id
        ),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        rgba_at(&decode_png(&body).2, hpx, hpy)[3],
        0,
        "no prediction where no window was acquired"
    );

    // ETag and If-None-Match.
    let tag = h[header::ETAG].to_str().unwrap().to_string();
    assert!(
        tag.starts_with('"') && tag.ends_with('"'),
        "a strong ETag: {tag}"
    );
    let (s, h304, body) = get(app, &uri, &[("if-none-match", &tag)]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(h304[header::ETAG].to_str().unwrap(), tag);
    assert_eq!(h304[header::CACHE_CONTROL], "private, max-age=3600");
    let (s, _, _) = get(app, &uri, &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(s, StatusCode::OK);

    // Zoomed out: an overview tile still shows the class.
    let (tx5, ty5, px5, py5) = tile_pixel(lon, lat, max_zoom - 3);
    let (s, _, body) = get(
        app,
        &format!(
            "/api/v1/outputs/{}/tiles/{}/{tx5}/{ty5}.png",
            p.class_id,
            max_zoom - 3
        ),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(rgba_at(&decode_png(&body).2, px5, py5), [0, 255, 0, 255]);

    // Outside the extent: a transparent tile.
    let (s, _, body) = get(
        app,
        &format!("/api/v1/outputs/{}/tiles/{max_zoom}/0/0.png", p.class_id),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(decode_png(&body).2.chunks(4).all(|px| px[3] == 0));

    // Probability tiles: band 2 (mangrove, p = 0.7) on the ramp; an unknown band is a 400.
    let (s, _, body) = get(
        app,
        &format!(
            "/api/v1/outputs/{}/tiles/{max_zoom}/{tx}/{ty}.png?band=2",
            p.probability_id
        ),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let expected = groundwork_imagery::tiles::ramp((0.7f32 * 254.0).round() / 254.0);
    let got = rgba_at(&decode_png(&body).2, px, py);
    assert_eq!(&got[..3], &expected[..], "ramp colour of p = 0.7");
    let (s, _, _) = get(
        app,
        &format!(
            "/api/v1/outputs/{}/tiles/{max_zoom}/{tx}/{ty}.png?band=9",
            p.probability_id
        ),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Bad addresses and unknown outputs.
    let (s, err) = get_json(
        app,
        &format!("/api/v1/outputs/{}/tiles/3/9/1.png", p.class_id),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err:#}");
    assert_eq!(err["error"]["code"], "invalid_tile");
    let (s, err) = get_json(
        app,
        &format!("/api/v1/outputs/{}/tiles/3/1/1.jpg", p.class_id),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err:#}");
    let unknown = Uuid::new_v4();
    let (s, err) = get_json(app, &format!("/api/v1/outputs/{unknown}/tiles/3/1/1.png")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "not_found");
    let (s, _) = get_json(app, &format!("/api/v1/outputs/{unknown}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The UTM COG: tiled, overviews, EPSG of the windows, colour table from the classes, nodata 255.
    let (s, h, tif) = get(
        app,
        &format!("/api/v1/outputs/{}/download.tif", p.class_id),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("image/tiff")
    );
    assert_eq!(h[header::CACHE_CONTROL], "private");
    assert_eq!(h[header::VARY], "Authorization, Cookie");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("class.tif");
    std::fs::write(&path, &tif).unwrap();
    let ds = Dataset::open(&path).unwrap();
    assert_eq!(
        ds.metadata_item("LAYOUT", "IMAGE_STRUCTURE").as_deref(),
        Some("COG")
    );
    assert_eq!(ds.spatial_ref().unwrap().auth_code().unwrap(), EPSG as i32);
    assert_eq!(ds.raster_size(), (4 * N, 3 * N));
    let band = ds.rasterband(1).unwrap();
    assert_eq!(band.no_data_value(), Some(255.0));
    let ct = band.color_table().unwrap();
    let green = ct.entry_as_rgb(2).unwrap();
    assert_eq!((green.r, green.g, green.b), (0, 255, 0));
    let blue = ct.entry_as_rgb(1).unwrap();
    assert_eq!((blue.r, blue.g, blue.b), (0, 0, 255));
    let px = band
        .read_as::<u8>((0, 0), (4 * N, 3 * N), (4 * N, 3 * N), None)
        .unwrap();
    let values = px.data();
    // Mangrove everywhere but the hole (column 781 → x 64..128, row 7781 → y 64..128).
    assert_eq!(values[10 * 4 * N + 10], 2);
    assert_eq!(values[100 * 4 * N + 100], 255);
    assert_eq!(values.iter().filter(|&&v| v == 2).count(), 11 * N * N);

    // GeoJSON polygons of the class map, in lon/lat.
    let (s, fc) = get_json(
        app,
        &format!("/api/v1/outputs/{}/download.geojson", p.class_id),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fc["type"], "FeatureCollection");
    let features = fc["features"].as_array().unwrap();
    assert!(!features.is_empty());
    assert!(
        features
            .iter()
            .all(|f| f["properties"]["class"] == 2 && f["properties"]["name"] == "mangrove")
    );
    let first = &features[0]["geometry"]["coordinates"][0][0];
    assert!(
        (first[0].as_f64().unwrap() - lon).abs() < 0.1
            && (first[1].as_f64().unwrap() - lat).abs() < 0.1
    );
    let (s, _) = get_json(
        app,
        &format!("/api/v1/outputs/{}/download.geojson", p.probability_id),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // STAC: the collection and items validate against the STAC 1.1 schemas and their extensions.
    let (s, collection) = get_json(app, &format!("/api/v1/projects/{}/stac", p.project_id)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, items) = get_json(
        app,
        &format!("/api/v1/projects/{}/stac/items", p.project_id),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, item) = get_json(
        app,
        &format!(
            "/api/v1/projects/{}/stac/items/{}",
            p.project_id, p.class_id
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(items["features"].as_array().unwrap().len(), 2);
    assert!(
        items["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["rel"] == "root")
    );
    // Each probability band says which class it is the probability of.
    let probability = items["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["properties"]["groundwork:kind"] == "probability")
        .unwrap();
    let bands = probability["assets"]["data"]["bands"].as_array().unwrap();
    assert!(
        bands.iter().any(|b| b["description"]
            .as_str()
            .unwrap()
            .starts_with("probability of mangrove")),
        "{bands:?}"
    );
    stac_schema::validate(&collection);
    for f in items["features"].as_array().unwrap() {
        stac_schema::validate(f);
    }
    let typed: stac::Item = serde_json::from_value(item.clone()).unwrap();
    assert_eq!(typed.id, p.class_id);
    let _: stac::Collection = serde_json::from_value(collection.clone()).unwrap();
    let props = &item["properties"];
    assert_eq!(props["proj:epsg"], EPSG);
    // The Item's geometry is the data's outline: a 4 × 3-window rectangle with the empty window as a
    // hole, not the web-mercator tile grid's extent.
    let footprint: geojson::Geometry = serde_json::from_value(item["geometry"].clone()).unwrap();
    let footprint = geo::Geometry::<f64>::try_from(footprint).unwrap();
    let geo::Geometry::Polygon(outline) = &footprint else {
        panic!("a polygon footprint: {}", item["geometry"]);
    };
    assert_eq!(outline.interiors().len(), 1, "the empty window is a hole");
    {
        use geo::Winding;
        assert!(outline.exterior().is_ccw() && outline.interiors()[0].is_cw());
    }
    let bbox: Vec<f64> = serde_json::from_value(item["bbox"].clone()).unwrap();
    let (_, out) = get_json(app, &format!("/api/v1/outputs/{}", p.class_id)).await;
    let grid: Vec<f64> = {
        let b: Vec<f64> = serde_json::from_value(out["bounds_3857"].clone()).unwrap();
        let ct = CoordTransform::new(
            &{
                let mut s = SpatialRef::from_epsg(3857).unwrap();
                s.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
                s
            },
            &{
                let mut s = SpatialRef::from_epsg(4326).unwrap();
                s.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
                s
            },
        )
        .unwrap();
        let (mut xs, mut ys) = (vec![b[0], b[2]], vec![b[1], b[3]]);
        ct.transform_coords(&mut xs, &mut ys, &mut []).unwrap();
        vec![xs[0], ys[0], xs[1], ys[1]]
    };
    let (bbox_area, grid_area) = (
        (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]),
        (grid[2] - grid[0]) * (grid[3] - grid[1]),
    );
    assert!(
        bbox_area < grid_area,
        "bbox {bbox:?} within the grid's {grid:?}"
    );
    {
        use geo::Area;
        // 11 of the 12 windows hold data (lon/lat degrees², so compare with the bbox's ratio).
        let ratio = footprint.unsigned_area() / bbox_area;
        assert!((0.90..0.94).contains(&ratio), "footprint / bbox = {ratio}");
    }
    // Hectares per class, from the data: 11 windows of N × N pixels of RES m.
    let ha = out["stats"]["areas_ha"]["2"].as_f64().unwrap();
    let expected = 11.0 * (N * N) as f64 * RES * RES / 10_000.0;
    assert!((ha - expected).abs() < 1e-6, "{ha} ha against {expected}");
    // Licence and credit: the project's SPDX licence with a link to its terms, the imagery's producer.
    assert_eq!(props["license"], "CC-BY-4.0");
    assert_eq!(collection["license"], "CC-BY-4.0");
    let link = |v: &Value, rel: &str| -> Option<String> {
        v["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == rel)
            .and_then(|l| l["href"].as_str().map(str::to_owned))
    };
    assert_eq!(
        link(&item, "license").as_deref(),
        Some("https://creativecommons.org/licenses/by/4.0/")
    );
    assert!(link(&collection, "license").is_some());
    assert!(props["providers"].as_array().unwrap().iter().any(|p| {
        p["name"]
            .as_str()
            .unwrap()
            .contains("Copernicus Sentinel data")
    }));
    assert_eq!(
        item["assets"]["package"]["type"],
        "application/geopackage+sqlite3"
    );
    // An XYZ link (web-map-links) to the tiles, as map clients and STAC Browser read it.
    assert!(link(&item, "xyz").unwrap().ends_with(&format!(
        "/api/v1/outputs/{}/tiles/{{z}}/{{x}}/{{y}}.png",
        p.class_id
    )));
    // The Item links the tiles' TileJSON, which map clients read.
    let tilejson = item["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "tilejson")
        .unwrap()["href"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = &tilejson[tilejson.find("/api/").unwrap()..];
    let (s, tj) = get_json(app, path).await;
    assert_eq!(s, StatusCode::OK, "{tj}");
    assert_eq!(tj["tilejson"], "3.0.0");
    assert!(
        tj["tiles"][0].as_str().unwrap().ends_with(&format!(
            "/api/v1/outputs/{}/tiles/{{z}}/{{x}}/{{y}}.png",
            p.class_id
        )),
        "{tj}"
    );
    assert!(tj["minzoom"].as_i64().unwrap() <= tj["maxzoom"].as_i64().unwrap());
    assert_eq!(tj["bounds"], item["bbox"]);
    // The imagery period, not the publication time.
    assert_eq!(props["datetime"], Value::Null);
    assert!(
        props["start_datetime"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00Z")
    );
    assert_eq!(props["groundwork:label_set_version"], "labels-v3");
    assert_eq!(props["groundwork:metrics"]["miou"], 0.61);
    assert_eq!(props["groundwork:model"]["kind"], "constant");
    assert!(
        props["groundwork:input_scenes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "S2B_T33TWL_20240601")
    );
    assert_eq!(
        item["assets"]["data"]["classification:classes"][1]["color_hint"],
        "00FF00"
    );
    // A broken item is caught by the same validation.
    let mut broken = item.clone();
    broken["assets"]["data"]["raster:bands"][0]["data_type"] = json!("uint9");
    assert!(!stac_schema::is_valid(&broken));

    // Another organisation sees nothing.
    let f = &p.foreign;
    for uri in [
        format!("/api/v1/outputs/{}", p.class_id),
        format!(
            "/api/v1/outputs/{}/tiles/{max_zoom}/{tx}/{ty}.png",
            p.class_id
        ),
        format!("/api/v1/outputs/{}/download.tif", p.class_id),
        format!("/api/v1/outputs/{}/download.geojson", p.class_id),
        format!("/api/v1/projects/{}/outputs", p.project_id),
        format!("/api/v1/projects/{}/stac", p.project_id),
        format!(
            "/api/v1/projects/{}/stac/items/{}",
            p.project_id, p.class_id
        ),
    ] {
        let (s, body) = get_json(f, &uri).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}: {body:#}");
        assert_eq!(body["error"]["code"], "not_found");
    }
}

/// STAC JSON-schema validation with the schemas vendored under `tests/fixtures/stac-schemas` (the
/// STAC 1.1.0 core schemas as `stac-validate` bundles them, and the projection v1.0.0, raster v1.1.0
/// and classification v1.1.0 extension schemas), so it runs offline.
mod stac_schema {
    use serde_json::Value;
    use std::path::PathBuf;

    struct Vendored;

    fn file_for(uri: &str) -> Option<PathBuf> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stac-schemas");
        let name = uri.rsplit('/').next()?.trim_end_matches('#');
        if uri.starts_with("https://schemas.stacspec.org/v1.1.0/") {
            return Some(root.join("v1.1.0").join(name));
        }
        if uri.starts_with("https://geojson.org/schema/") {
            return Some(root.join("geojson").join(name));
        }
        if uri.starts_with("http://json-schema.org/draft-07/schema") {
            return Some(root.join("draft-07.json"));
        }
        for (ext, version) in [
            ("projection", "v1.0.0"),
            ("raster", "v1.1.0"),
            ("classification", "v1.1.0"),
        ] {
            if uri.starts_with(&format!(
                "https://stac-extensions.github.io/{ext}/{version}/"
            )) {
                return Some(root.join("extensions").join(format!("{ext}.json")));
            }
        }
        None
    }

    impl jsonschema::Retrieve for Vendored {
        fn retrieve(
            &self,
            uri: &jsonschema::Uri<String>,
        ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
            // PROJJSON is only referenced by `proj:projjson`, which the items do not use.
            if uri.as_str().starts_with("https://proj.org/schemas/") {
                return Ok(serde_json::json!({}));
            }
            let path =
                file_for(uri.as_str()).ok_or_else(|| format!("no vendored schema for {uri}"))?;
            Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?)
        }
    }

    /// `iri-reference`, with the RFC 6570 variables of tile URL templates (`{z}`, `{x}`, `{y}`) that
    /// the web-map-links extension's `xyz` links carry standing for numbers; anything else that
    /// no IRI reference may hold (spaces, controls, other braces, `<>"\^`|`) is refused.
    fn templated_iri_reference(s: &str) -> bool {
        let t = s
            .replace("{z}", "0")
            .replace("{x}", "0")
            .replace("{y}", "0");
        !t.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '{' | '}' | '<' | '>' | '"' | '\\' | '^' | '`' | '|')
        }) && (!t.contains("://") || reqwest::Url::parse(&t).is_ok())
    }

    fn schemas_for(v: &Value) -> Vec<String> {
        let core = match v["type"].as_str() {
            Some("Feature") => {
                "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"
            }
            Some("Collection") => {
                "https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json"
            }
            other => panic!("not a STAC object: {other:?}"),
        };
        assert_eq!(v["stac_version"], "1.1.0");
        let mut out = vec![core.to_string()];
        out.extend(
            v["stac_extensions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                // No offline copy of web-map-links: `scripts/validate-outputs.sh` checks it against
                // the published schema where one is at hand.
                .filter(|u| !u.contains("/web-map-links/"))
                .map(str::to_string),
        );
        out
    }

    fn errors(v: &Value) -> Vec<String> {
        let mut all = Vec::new();
        for uri in schemas_for(v) {
            let schema: Value = Vendored
                .retrieve_str(&uri)
                .unwrap_or_else(|e| panic!("schema {uri}: {e}"));
            let validator = jsonschema::options()
                .with_retriever(Vendored)
                .with_format("iri-reference", templated_iri_reference)
                .build(&schema)
                .unwrap_or_else(|e| panic!("compiling {uri}: {e}"));
            all.extend(
                validator
                    .iter_errors(v)
                    .map(|e| format!("{uri}: {e} at {}", e.instance_path)),
            );
        }
        all
    }

    impl Vendored {
        fn retrieve_str(
            &self,
            uri: &str,
        ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
            let path = file_for(uri).ok_or_else(|| format!("no vendored schema for {uri}"))?;
            Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?)
        }
    }

    pub fn validate(v: &Value) {
        let e = errors(v);
        assert!(e.is_empty(), "STAC validation failed:\n{}", e.join("\n"));
    }

    pub fn is_valid(v: &Value) -> bool {
        errors(v).is_empty()
    }
}
