//! Browsing acquired imagery over HTTP: the listing of a project's layers (modality, renderings,
//! months, bounds), z/x/y PNG tiles drawn from window tensors in the object store (the colours of
//! the synthetic band values where a window lies, transparent elsewhere, ETag and private caching),
//! 4xx for addresses that name nothing, and 404 for another organisation.
#![expect(clippy::unwrap_used, reason = "tests")]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use groundwork_imagery::WindowSpec;
use groundwork_imagery::preview::{self, Rendering};
use groundwork_imagery::tiles::{TILE_SIZE, tile_of};
use groundwork_server::AppState;
use groundwork_store::testing::TestDb;
use groundwork_store::{DEFAULT_ORG_ID, projects};
use groundwork_types::Modality;
use groundwork_types::keys::ProjectKeys;
use serde_json::json;
use std::collections::HashMap;
use uuid::Uuid;

use crate::common::{call, s2_window_file, send};

const WATER: [f32; 12] = [
    600., 500., 350., 200., 300., 250., 220., 200., 100., 80., 700., 150.,
];
const CROP: [f32; 12] = [
    400., 750., 380., 3900., 950., 2700., 3400., 3600., 1800., 850., 450., 1050.,
];

/// A Sentinel-2 project over about 0.7 × 1.1 km near 10° E, 50° N.
async fn small_project(pool: &groundwork_store::PgPool) -> Uuid {
    use groundwork_store::projects::ProjectFields;
    use groundwork_types::{ModelSize, Task};
    let f = ProjectFields {
        name: "fields".into(),
        description: String::new(),
        aoi: json!({"type": "Polygon", "coordinates": [[[10.0, 50.0], [10.01, 50.0], [10.01, 50.01], [10.0, 50.01], [10.0, 50.0]]]}),
        bbox: [10.0, 50.0, 10.01, 50.01],
        area_km2: 0.8,
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
    projects::create(pool, DEFAULT_ORG_ID, &f).await.unwrap().id
}

/// GET `uri` with extra headers: status, headers, body.
async fn get(
    app: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HashMap<String, String>, Vec<u8>) {
    let mut req = Request::builder().method("GET").uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(app, req.body(Body::empty()).unwrap()).await
}

/// The RGBA pixels of a 256² PNG.
fn decode(bytes: &[u8]) -> Vec<[u8; 4]> {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba);
    assert_eq!(
        (info.width, info.height),
        (TILE_SIZE as u32, TILE_SIZE as u32)
    );
    buf.truncate(info.buffer_size());
    buf.chunks_exact(4)
        .map(|p| [p[0], p[1], p[2], p[3]])
        .collect()
}

/// The z/x/y of the tile holding a window's centre at zoom `z`.
fn tile_over(w: &WindowSpec, z: u8) -> (u8, u32, u32) {
    let [x0, y0, x1, y1] = w.utm_bounds;
    let c = groundwork_imagery::grid::to_lonlat(w.epsg, &[((x0 + x1) / 2.0, (y0 + y1) / 2.0)])
        .unwrap()[0];
    let (x, y) = tile_of(c.0, c.1, z);
    (z, x, y)
}

/// The colour `rendering` gives a pixel of `bands`.
fn colour(rendering: Rendering, bands: &[f32; 12]) -> [u8; 4] {
    let channels = preview::channels(Modality::Sentinel2L2a, rendering).unwrap();
    let [r, g, b] = preview::pixel_colour(&channels, bands).unwrap();
    [r, g, b, 255]
}

#[tokio::test]
async fn acquired_imagery_is_listed_and_drawn_as_tiles_in_its_organisation_only() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut state = AppState::new(db.pool.clone());
    state.objects = Some(std::sync::Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
    ));
    let app = groundwork_server::testing::owner_router(state)
        .await
        .unwrap();
    let p = small_project(&db.pool).await;
    let base = format!("/api/v1/projects/{p}/imagery");
    let tile = |modality: &str, time: &str, rendering: &str, (z, x, y): (u8, u32, u32)| {
        format!("{base}/{modality}/{time}/{rendering}/{z}/{x}/{y}.png")
    };

    // Before acquisition: nothing to browse, and no time step to draw.
    let (s, r) = call(&app, "GET", &base, None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r, json!({"bounds": null, "min_zoom": null, "layers": []}));
    let (s, _, b) = get(
        &app,
        &tile("sentinel2_l2a", "0", "true_color", (14, 8647, 5556)),
        &[],
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );

    // Acquired windows: the first one's tensor under the key its acquisition recorded (water), the
    // second's under the fixed window key of older acquisitions (crop); the others have none.
    let project = projects::get(&db.pool, DEFAULT_ORG_ID, p).await.unwrap();
    let specs = groundwork_worker::steps::plan_windows(&db.pool, &project)
        .await
        .unwrap();
    assert!(specs.len() >= 3, "{}", specs.len());
    sqlx::query("update project_window set status = 'acquired' where project_id = $1")
        .bind(p)
        .execute(&db.pool)
        .await
        .unwrap();
    let keys = ProjectKeys::new(DEFAULT_ORG_ID, p);
    let (water, crop, empty) = (&specs[0], &specs[1], &specs[2]);
    let recorded = format!(
        "{}/windows/{}/sentinel2_l2a.safetensors",
        keys.acquisition(Uuid::new_v4()),
        water.id
    );
    sqlx::query("update project_window set objects = $3 where project_id = $1 and id = $2")
        .bind(p)
        .bind(&water.id)
        .bind(vec![recorded.clone()])
        .execute(&db.pool)
        .await
        .unwrap();
    let fixed = keys.window(&crop.id, Modality::Sentinel2L2a);
    for (key, spec, bands) in [(&recorded, water, WATER), (&fixed, crop, CROP)] {
        let path = dir.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, s2_window_file(spec, |_, _| bands, &[5, 6])).unwrap();
    }

    // The listing: the months of the first window's tensor, the renderings, the windows' bounds.
    let (s, r) = call(&app, "GET", &base, None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        r["layers"],
        json!([{"modality": "sentinel2_l2a", "renderings": ["true_color", "false_color"],
                "times": [{"index": 0, "label": "2024-05"}, {"index": 1, "label": "2024-06"}]}])
    );
    let expected = [
        specs
            .iter()
            .map(|w| w.wgs84_bounds[0])
            .fold(f64::INFINITY, f64::min),
        specs
            .iter()
            .map(|w| w.wgs84_bounds[1])
            .fold(f64::INFINITY, f64::min),
        specs
            .iter()
            .map(|w| w.wgs84_bounds[2])
            .fold(f64::NEG_INFINITY, f64::max),
        specs
            .iter()
            .map(|w| w.wgs84_bounds[3])
            .fold(f64::NEG_INFINITY, f64::max),
    ];
    let bounds: Vec<f64> = r["bounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (got, want) in bounds.iter().zip(expected) {
        assert!((got - want).abs() < 1e-9, "{bounds:?} vs {expected:?}");
    }
    assert!(expected[0] < 10.0 && expected[2] > 10.01, "{expected:?}");
    let min_zoom = r["min_zoom"].as_u64().unwrap();
    assert!((8..=16).contains(&min_zoom), "{min_zoom}");

    // A tile inside each window has its colour everywhere: in false colour, crop (NIR high) is red
    // and water dark.
    for (spec, bands) in [(water, WATER), (crop, CROP)] {
        for rendering in [Rendering::TrueColor, Rendering::FalseColor] {
            for time in ["0", "1"] {
                let uri = tile("sentinel2_l2a", time, rendering.name(), tile_over(spec, 18));
                let (s, h, b) = get(&app, &uri, &[]).await;
                assert_eq!(s, StatusCode::OK, "{uri}: {}", String::from_utf8_lossy(&b));
                assert_eq!(h["content-type"], "image/png");
                assert!(h["cache-control"].starts_with("private"), "{h:?}");
                let want = colour(rendering, &bands);
                assert!(
                    decode(&b).iter().all(|p| *p == want),
                    "{uri}: expected {want:?}"
                );
            }
        }
    }
    let (w, c) = (
        colour(Rendering::FalseColor, &WATER),
        colour(Rendering::FalseColor, &CROP),
    );
    assert!(c[0] > 200 && w[0] < 100 && c[0] > c[1], "{w:?} {c:?}");

    // Zoomed out to a tile holding both windows: both are drawn, the rest is transparent.
    let both = (10..=16u8)
        .rev()
        .map(|z| tile_over(water, z))
        .find(|&t| t == tile_over(crop, t.0))
        .unwrap();
    let uri = tile("sentinel2_l2a", "0", "false_color", both);
    let (s, h, b) = get(&app, &uri, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let pixels = decode(&b);
    let count = |want: [u8; 4]| pixels.iter().filter(|p| **p == want).count();
    assert!(
        count(w) > 100 && count(c) > 100,
        "{} {}",
        count(w),
        count(c)
    );
    assert_eq!(
        count(w) + count(c) + pixels.iter().filter(|p| p[3] == 0).count(),
        pixels.len()
    );
    // Unchanged: 304 to its ETag.
    let etag = h["etag"].clone();
    let (s, _, _) = get(&app, &uri, &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);

    // A window without a tensor, and a tile far away: fully transparent.
    for t in [tile_over(empty, 18), {
        let (x, y) = tile_of(-60.0, -20.0, 18);
        (18, x, y)
    }] {
        let uri = tile("sentinel2_l2a", "1", "true_color", t);
        let (s, _, b) = get(&app, &uri, &[]).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
        assert!(decode(&b).iter().all(|p| p[3] == 0), "{uri}");
    }

    // Addresses that name nothing.
    let at = tile_over(water, 18);
    for (uri, status) in [
        (tile("worldcover", "0", "true_color", at), 400),
        (tile("sentinel1", "0", "vv_vh", at), 400),
        (tile("sentinel2_l2a", "0", "vv_vh", at), 400),
        (tile("sentinel2_l2a", "0", "ndvi", at), 400),
        (tile("sentinel2_l2a", "2", "true_color", at), 400),
        (tile("sentinel2_l2a", "-1", "true_color", at), 400),
        (tile("sentinel2_l2a", "0", "true_color", (25, 0, 0)), 400),
        (tile("sentinel2_l2a", "0", "true_color", (3, 8, 0)), 400),
        (tile("sentinel2_l2a", "0", "true_color", (3, 0, 8)), 400),
        (format!("{base}/sentinel2_l2a/0/true_color/3/0/0.jpg"), 400),
        (
            format!("{base}/sentinel2_l2a/0/true_color/300/0/0.png"),
            400,
        ),
        (format!("{base}/sentinel2_l2a/0/true_color/3/x/0.png"), 400),
    ] {
        let (s, r) = call(&app, "GET", &uri, None).await;
        assert_eq!(s.as_u16(), status, "{uri}: {r}");
        assert!(r["error"]["code"].is_string(), "{uri}: {r}");
    }

    // Both routes are documented.
    let (_, doc) = call(&app, "GET", "/api/openapi.json", None).await;
    for path in [
        "/api/v1/projects/{id}/imagery",
        "/api/v1/projects/{id}/imagery/{modality}/{time}/{rendering}/{z}/{x}/{y}.png",
    ] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} missing from OpenAPI"
        );
    }

    // Another organisation's project: 404.
    crate::common::move_to_another_org(&db.pool, p).await;
    for uri in [
        base.clone(),
        tile("sentinel2_l2a", "0", "true_color", tile_over(water, 18)),
    ] {
        let (s, r) = call(&app, "GET", &uri, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}: {r}");
    }
}
