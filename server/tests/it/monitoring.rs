//! Monitoring over time through the API, the job system and a worker: a model trained on one year maps
//! another year's period and a smaller area as runs with windows of their own (the project's windows
//! keep the imagery the model learnt from), and a schedule fires, maps the latest full period,
//! compares its map with the one before and announces a change over its threshold to the webhook.
#![expect(clippy::unwrap_used, reason = "tests")]

use axum::http::{HeaderMap, StatusCode};
use groundwork_imagery::{DemoOptions, OutboundPolicy, generate_demo_data};
use groundwork_server::{AppState, router};
use groundwork_store::testing::TestDb;
use groundwork_worker::{Registry, Worker, WorkerConfig};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{call, owner_token, wait_run};

fn scene(year: i32, seed: u64) -> DemoOptions {
    DemoOptions {
        size: 256,
        months: vec![4, 5],
        year,
        seed,
        ..DemoOptions::default()
    }
}

type Received = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

async fn listener() -> (String, Received) {
    let got: Received = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                keep.lock().unwrap().push((headers, v));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(socket, app).await });
    (format!("http://127.0.0.1:{port}/hook"), got)
}

async fn predict(app: &axum::Router, pid: &str, body: Value) -> (StatusCode, Value) {
    call(
        app,
        "POST",
        &format!("/api/v1/projects/{pid}/predict"),
        Some(body),
    )
    .await
}

fn catalogue(root: &Path, year: i32) -> String {
    root.join(format!("y{year}"))
        .join("catalog.json")
        .display()
        .to_string()
}

/// A project of `first`'s area over April–May of its year, acquired from `catalog` (under the
/// catalogue root `cats`), labelled from the ground truth, split and trained briefly, with one worker.
struct Trained {
    _db: TestDb,
    state: AppState,
    app: axum::Router,
    worker: Worker,
    project: Value,
    pid: String,
}

async fn trained(cats: &Path, objects_dir: &Path, first: &DemoOptions, catalog: &str) -> Trained {
    let aoi: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(catalog).with_file_name("aoi.geojson")).unwrap(),
    )
    .unwrap();
    let db = TestDb::new().await.unwrap();
    std::fs::create_dir_all(objects_dir).unwrap();
    let objects: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(objects_dir).unwrap());
    // The webhook listener is on this machine: the policy allows 127.0.0.1 as an administrator
    // would allow a host; the catalogues' folder is a catalogue root.
    let policy = OutboundPolicy::configured(&["127.0.0.1".into()], &[])
        .unwrap()
        .with_catalog_root(cats)
        .unwrap();
    let mut c = WorkerConfig::new("cpu", vec!["cpu".into()]);
    c.heartbeat = Duration::from_millis(300);
    c.objects = Some(objects.clone());
    c.outbound = policy.clone();
    let worker = Worker::start(db.pool.clone(), c, Registry::builtin())
        .await
        .unwrap();
    let mut state = AppState::new(db.pool.clone());
    state.outbound = Arc::new(policy);
    state.objects = Some(objects.clone());
    let app = groundwork_server::testing::with_bearer(
        router(state.clone()),
        &owner_token(&db.pool).await,
    )
    .unwrap();

    let classes: Vec<Value> = first
        .classes
        .iter()
        .map(|c| json!({"id": c.id, "name": c.name, "color": c.surface.color()}))
        .collect();
    let y = first.year;
    let (s, project) = call(
        &app,
        "POST",
        "/api/v1/projects",
        Some(
            json!({"name": "monitored", "aoi": aoi["geometry"], "start": format!("{y}-04-01"),
                    "end": format!("{y}-05-31"), "task": "segmentation", "allow_random_init": true,
                    "patch_size": 8, "classes": classes, "modalities": ["sentinel2_l2a"]}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{project:#}");
    let pid = project["id"].as_str().unwrap().to_owned();
    let (s, run) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/acquire"),
        Some(json!({"stac": catalog, "max_cloud": 60})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
    let done = wait_run(&app, run["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");

    // Labels from the ground truth, a split, a short training run.
    let labels = groundwork_imagery::demo::sample_labels(first, 60, 320.0, 5).unwrap();
    let mut csv = String::from("lon,lat,class\n");
    for p in &labels {
        csv.push_str(&format!("{:.8},{:.8},{}\n", p.lon, p.lat, p.class_id));
    }
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(format!("/api/v1/projects/{pid}/labels/import?format=csv"))
        .header("content-type", "text/csv")
        .body(axum::body::Body::from(csv))
        .unwrap();
    let (status, _, body) = crate::common::send(&app, req).await;
    assert!(status.is_success(), "{}", String::from_utf8_lossy(&body));
    let (s, split) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/labels/split"),
        Some(json!({"block_size": 1, "seed": 3})),
    )
    .await;
    assert!(s.is_success(), "{split:#}");
    let (s, run) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/train"),
        Some(json!({"epochs": 2, "freeze_epochs": 2, "batch_size": 4})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
    let done = wait_run(&app, run["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    Trained {
        _db: db,
        state,
        app,
        worker,
        project,
        pid,
    }
}

#[tokio::test]
async fn a_model_maps_another_year_and_a_smaller_area_and_a_schedule_compares_and_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let cats = tmp.path().join("catalogues");
    // One place seen in 2024 and, with other land cover, in 2025.
    let first = scene(2024, 42);
    generate_demo_data(&cats.join("y2024"), &first).unwrap();
    generate_demo_data(&cats.join("y2025"), &scene(2025, 7)).unwrap();
    let Trained {
        _db,
        state,
        app,
        worker,
        project,
        pid,
    } = trained(
        &cats,
        &tmp.path().join("objects"),
        &first,
        &catalogue(&cats, 2024),
    )
    .await;
    let project_windows = |app: axum::Router, pid: String| async move {
        let (_, w) = call(
            &app,
            "GET",
            &format!("/api/v1/projects/{pid}/windows?limit=1000"),
            None,
        )
        .await;
        w["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w["id"].clone(), w["objects"].clone(), w["scenes"].clone()))
            .collect::<Vec<_>>()
    };
    let windows_before = project_windows(app.clone(), pid.clone()).await;

    // Requests a monitoring prediction refuses, each with the field to fix.
    for (body, field) in [
        // Three months for a model of two monthly steps.
        (json!({"start": "2025-04-01", "end": "2025-06-30"}), "end"),
        (json!({"start": "2025-04-01"}), "end"),
        (json!({"end": "2025-05-31"}), "start"),
        // Catalogue options without another period or area.
        (json!({"stac": catalogue(&cats, 2025)}), "stac"),
        (
            json!({"area": {"type": "Point", "coordinates": [15.0, 45.1]}}),
            "area",
        ),
        // A catalogue the policy refuses.
        (
            json!({"start": "2025-04-01", "end": "2025-05-31", "stac": "http://10.0.0.8/stac"}),
            "stac",
        ),
    ] {
        let (s, err) = predict(&app, &pid, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err:#}");
        assert_eq!(
            err["error"]["details"][0]["field"], field,
            "{body}: {err:#}"
        );
    }

    // The project's own map (2024).
    let (s, run) = predict(&app, &pid, json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
    let base_run = run["id"].as_str().unwrap().to_owned();
    let done = wait_run(&app, &base_run).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");

    // 2025 over the western half of the area, from the 2025 catalogue.
    let [w, so, e, n] = [0, 1, 2, 3].map(|i| project["bbox"][i].as_f64().unwrap());
    let mid = (w + e) / 2.0;
    // Clockwise, as some tools write it.
    let half = json!({"type": "Polygon", "coordinates": [[[w, so], [w, n], [mid, n], [mid, so], [w, so]]]});
    let (s, run) = predict(
        &app,
        &pid,
        json!({"start": "2025-04-01", "end": "2025-05-31", "area": half, "stac": catalogue(&cats, 2025)}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
    let names: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.starts_with(&["acquire-0", "acquire-summary"])
            && names.ends_with(&["combine", "publish"]),
        "{names:?}"
    );
    let half_run = run["id"].as_str().unwrap().to_owned();
    let done = wait_run(&app, &half_run).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let summary = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "acquire-summary")
        .unwrap()["output"]
        .clone();
    assert_eq!(
        summary["months"],
        json!(["2025-04", "2025-05"]),
        "{summary:#}"
    );
    assert!(summary["acquired"].as_i64().unwrap() >= 1, "{summary:#}");
    // The run's own windows, their tensors under its own acquisition folder.
    let (s, own) = call(
        &app,
        "GET",
        &format!("/api/v1/runs/{half_run}/windows?limit=1000"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{own:#}");
    assert_eq!(own["counts"]["acquired"], summary["acquired"], "{own:#}");
    assert_eq!(own["counts"]["total"], summary["windows"], "{own:#}");
    let items = own["items"].as_array().unwrap();
    assert!(items.len() < windows_before.len(), "half the area: {own:#}");
    assert!(
        items
            .iter()
            .all(|w| w["objects"].as_array().unwrap().iter().all(|k| k
                .as_str()
                .unwrap()
                .contains(&format!("/acquisitions/{half_run}/")))),
        "{own:#}"
    );

    let (base, half_map) = (
        class_of_run(&app, &pid, &base_run).await,
        class_of_run(&app, &pid, &half_run).await,
    );
    assert_eq!(base["lineage"]["period"]["start"], "2024-04-01", "{base:#}");
    assert_eq!(base["lineage"]["period"]["monitoring"], false);
    assert_eq!(
        half_map["lineage"]["period"]["start"], "2025-04-01",
        "{half_map:#}"
    );
    assert_eq!(half_map["lineage"]["period"]["end"], "2025-05-31");
    assert_eq!(half_map["lineage"]["period"]["area"], "given");
    // Made from 2025 scenes only.
    let scenes: Vec<&str> = half_map["lineage"]["input_scenes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!scenes.is_empty(), "{half_map:#}");
    assert!(scenes.iter().all(|s| s.contains("_2025")), "{scenes:?}");
    // The western half: about half the width of the whole map.
    let (bw, hw) = (
        base["width"].as_f64().unwrap(),
        half_map["width"].as_f64().unwrap(),
    );
    assert!(hw < bw && hw > bw * 0.25, "{hw} of {bw} px");
    // The project's windows still hold the 2024 imagery the model learnt from.
    assert_eq!(
        project_windows(app.clone(), pid.clone()).await,
        windows_before
    );

    // A schedule: refused with a cadence the server does not know; then monthly, first due on the
    // 5th of June 2025 (so it maps April–May 2025) from the 2025 catalogue, alerting the webhook on
    // any change from one class to another over 0.01 km².
    let (url, got) = listener().await;
    let (s, hook) = call(
        &app,
        "PUT",
        &format!("/api/v1/projects/{pid}/webhook"),
        Some(json!({"url": url})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{hook:#}");
    let schedule = format!("/api/v1/projects/{pid}/schedule");
    let (s, err) = call(&app, "PUT", &schedule, Some(json!({"cadence": "hourly"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err:#}");
    let (s, set) = call(
        &app,
        "PUT",
        &schedule,
        Some(
            json!({"cadence": "monthly", "stac": catalogue(&cats, 2025), "change_alert_km2": 0.01,
                    "first_run": "2025-06-05T00:00:00Z"}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{set:#}");
    assert_eq!(
        set["next_period"],
        json!({"start": "2025-04-01", "end": "2025-05-31"})
    );
    // With no CPU hours left this month, the firing is put off for an hour, not passed over.
    let org = groundwork_store::DEFAULT_ORG_ID;
    let quota = |hours: Option<f64>| {
        let pool = state.pool.clone();
        async move {
            groundwork_store::usage::set_quota(
                &pool,
                &groundwork_store::audit::Who::cli(),
                org,
                groundwork_types::DeviceKind::Cpu,
                hours,
            )
            .await
            .unwrap();
        }
    };
    quota(Some(0.0)).await;
    assert_eq!(
        groundwork_server::maintenance::schedules::run_once(&state)
            .await
            .unwrap(),
        0
    );
    let (_, put_off) = call(&app, "GET", &schedule, None).await;
    assert!(
        put_off["last_error"]
            .as_str()
            .unwrap()
            .contains("device-hours"),
        "{put_off:#}"
    );
    assert_eq!(put_off["next_at"], "2025-06-05T00:00:00Z", "{put_off:#}");
    assert!(put_off["last_run_id"].is_null(), "{put_off:#}");
    let retry: chrono::DateTime<chrono::Utc> =
        put_off["retry_at"].as_str().unwrap().parse().unwrap();
    assert!(
        retry > chrono::Utc::now() + chrono::Duration::minutes(50),
        "{put_off:#}"
    );
    // An hour later, with hours again, the same firing starts.
    quota(None).await;
    sqlx::query("update project_schedule set retry_at = now() - interval '1 second'")
        .execute(&state.pool)
        .await
        .unwrap();
    // The server's pass fires it, and compares the map once the run has finished.
    assert!(
        groundwork_server::maintenance::schedules::run_once(&state)
            .await
            .unwrap()
            >= 1
    );
    let (_, fired) = call(&app, "GET", &schedule, None).await;
    assert_eq!(fired["last_period_end"], "2025-05-31", "{fired:#}");
    // Then on the 5th of each month, from the next one to come (no run for every month missed).
    let next: chrono::DateTime<chrono::Utc> = fired["next_at"].as_str().unwrap().parse().unwrap();
    let now = chrono::Utc::now();
    assert!(
        next > now && next < now + chrono::Duration::days(32),
        "{fired:#}"
    );
    assert_eq!(chrono::Datelike::day(&next), 5, "{fired:#}");
    let scheduled_run = fired["last_run_id"].as_str().unwrap().to_owned();
    let done = wait_run(&app, &scheduled_run).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    groundwork_server::maintenance::schedules::run_once(&state)
        .await
        .unwrap();
    let (_, compared) = call(&app, "GET", &schedule, None).await;
    assert!(compared["last_error"].is_null(), "{compared:#}");
    let new_map = class_of_run(&app, &pid, &scheduled_run).await;
    assert_eq!(compared["last_output_id"], new_map["id"], "{compared:#}");
    let change_id = compared["last_change_map_id"].as_str().unwrap().to_owned();
    let (s, change) = call(&app, "GET", &format!("/api/v1/changes/{change_id}"), None).await;
    assert_eq!(s, StatusCode::OK, "{change:#}");
    // Compared with the map made before it: the project's own (2024) map.
    assert_eq!(change["from"], base["id"], "{change:#}");
    assert_eq!(change["to"], new_map["id"]);
    // The land cover differs between the two years: changes over the threshold are announced.
    let over: Vec<&Value> = change["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["from"] != p["to"] && p["area_ha"].as_f64().unwrap() > 1.0)
        .collect();
    assert!(!over.is_empty(), "{change:#}");
    let start = Instant::now();
    loop {
        groundwork_server::maintenance::webhooks::run_once(&state)
            .await
            .unwrap();
        let alerts: Vec<Value> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _)| h["x-groundwork-event"] == "change.alert")
            .map(|(_, b)| b.clone())
            .collect();
        if let Some(alert) = alerts.first() {
            assert_eq!(alerts.len(), 1);
            assert_eq!(alert["event"], "change.alert");
            assert_eq!(alert["run_id"], scheduled_run.as_str());
            assert_eq!(alert["change"]["change_map_id"], change_id.as_str());
            assert_eq!(alert["change"]["threshold_km2"], 0.01);
            let pairs = alert["change"]["pairs"].as_array().unwrap();
            assert_eq!(pairs.len(), over.len(), "{alert:#}");
            assert!(pairs.iter().all(|p| p["km2"].as_f64().unwrap() > 0.01));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no change alert");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Until next month, nothing more fires; removing the schedule stops it.
    assert_eq!(
        groundwork_server::maintenance::schedules::run_once(&state)
            .await
            .unwrap(),
        0
    );
    let (s, _) = call(&app, "DELETE", &schedule, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // A monitoring run acquires only its own windows: the project's own acquisition may run beside it.
    let (s, monitoring) = predict(
        &app,
        &pid,
        json!({"start": "2025-04-01", "end": "2025-05-31", "stac": catalogue(&cats, 2025)}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{monitoring:#}");
    let (s, acquisition) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/acquire"),
        Some(json!({"stac": catalogue(&cats, 2024), "max_cloud": 60})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{acquisition:#}");
    for run in [&monitoring, &acquisition] {
        let done = wait_run(&app, run["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "succeeded", "{done:#}");
    }
    let (s, _) = call(&app, "GET", &schedule, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    worker.shutdown().await;
}

async fn class_of_run(app: &axum::Router, pid: &str, run: &str) -> Value {
    let (_, outputs) = call(app, "GET", &format!("/api/v1/projects/{pid}/outputs"), None).await;
    outputs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["run_id"] == run && o["kind"] == "class")
        .unwrap_or_else(|| panic!("no class map of run {run}: {outputs:#}"))
        .clone()
}

/// A GeoTIFF's EPSG code, size and the fraction of its pixels inside `lonlat_box` that hold data.
fn raster_facts(path: &Path, lonlat_box: [f64; 4]) -> (u32, (usize, usize), f64) {
    let ds = gdal::Dataset::open(path).unwrap();
    let epsg = ds.spatial_ref().unwrap().auth_code().unwrap();
    let (w, h) = ds.raster_size();
    let gt = ds.geo_transform().unwrap();
    let band = ds.rasterband(1).unwrap();
    let nodata = band.no_data_value().unwrap();
    let data = band
        .read_as::<f64>((0, 0), (w, h), (w, h), None)
        .unwrap()
        .data()
        .to_vec();
    let mut centres = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            centres.push((
                gt[0] + (x as f64 + 0.5) * gt[1],
                gt[3] + (y as f64 + 0.5) * gt[5],
            ));
        }
    }
    let lonlat = groundwork_imagery::grid::to_lonlat(epsg as u32, &centres).unwrap();
    let [west, south, east, north] = lonlat_box;
    let (mut inside, mut with_data) = (0usize, 0usize);
    for (p, (lon, lat)) in lonlat.iter().enumerate() {
        if *lon > west && *lon < east && *lat > south && *lat < north {
            inside += 1;
            if data[p] != nodata {
                with_data += 1;
            }
        }
    }
    assert!(inside > 0, "no pixel inside {lonlat_box:?}");
    (epsg as u32, (w, h), with_data as f64 / inside as f64)
}

#[tokio::test]
async fn an_area_across_a_utm_zone_boundary_is_one_seamless_map_and_a_map_per_zone() {
    let tmp = tempfile::tempdir().unwrap();
    let cats = tmp.path().join("catalogues");
    // A scene of zone 33 whose western part lies west of 12° E, in zone 32.
    let first = DemoOptions {
        origin: (263_040.0, 5_000_320.0),
        ..scene(2024, 42)
    };
    generate_demo_data(&cats.join("y2024"), &first).unwrap();
    let t = trained(
        &cats,
        &tmp.path().join("objects"),
        &first,
        &catalogue(&cats, 2024),
    )
    .await;
    let (_, windows) = call(
        &t.app,
        "GET",
        &format!("/api/v1/projects/{}/windows?limit=1000", t.pid),
        None,
    )
    .await;
    let zones: std::collections::BTreeSet<u64> = windows["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["epsg"].as_u64().unwrap())
        .collect();
    assert_eq!(
        zones.into_iter().collect::<Vec<_>>(),
        [32632, 32633],
        "{windows:#}"
    );
    assert_eq!(windows["counts"]["acquired"], windows["counts"]["total"]);

    let (s, run) = predict(&t.app, &t.pid, json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let done = wait_run(&t.app, &run_id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let map = class_of_run(&t.app, &t.pid, &run_id).await;
    let (s, map) = call(
        &t.app,
        "GET",
        &format!("/api/v1/outputs/{}", map["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{map:#}");
    let per_zone = map["links"]["download_zones"].as_array().unwrap();
    assert_eq!(
        per_zone
            .iter()
            .map(|z| z["epsg"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [32632, 32633],
        "{map:#}"
    );
    // The AOI less a 30 m rim, on both sides of the boundary.
    let [w, s_, e, n] = [0, 1, 2, 3].map(|i| t.project["bbox"][i].as_f64().unwrap());
    let rim = 0.0004;
    let inner = [w + rim, s_ + rim, e - rim, n - rim];
    assert!(inner[0] < 12.0 && inner[2] > 12.0, "{inner:?}");
    let fetch = |uri: String| {
        let app = t.app.clone();
        let dir = tmp.path().to_path_buf();
        async move {
            let req = axum::http::Request::get(&uri)
                .body(axum::body::Body::empty())
                .unwrap();
            let (status, _, body) = crate::common::send(&app, req).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            let path = dir.join(format!("{}.tif", uri.len() + body.len()));
            std::fs::write(&path, &body).unwrap();
            path
        }
    };
    // One seamless map: every pixel of the area holds a class, across the boundary.
    let whole = fetch(map["links"]["download_tif"].as_str().unwrap().to_owned()).await;
    let (epsg, _, filled) = raster_facts(&whole, inner);
    assert_eq!(epsg, 32633);
    assert!(filled > 0.999, "{filled} of the area holds data");
    // Each zone's own map, in its own CRS, covering its side of the boundary.
    for (zone, side) in [
        (32632u32, [inner[0], inner[1], 11.9995, inner[3]]),
        (32633, [12.0005, inner[1], inner[2], inner[3]]),
    ] {
        let href = per_zone.iter().find(|z| z["epsg"] == zone).unwrap()["href"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = fetch(href).await;
        let (epsg, _, filled) = raster_facts(&path, side);
        assert_eq!(epsg, zone);
        assert!(
            filled > 0.999,
            "EPSG:{zone}: {filled} of its side holds data"
        );
    }
    // A zone the map does not cross is a 404.
    let req = axum::http::Request::get(format!(
        "/api/v1/outputs/{}/download.tif?zone=32634",
        map["id"].as_str().unwrap()
    ))
    .body(axum::body::Body::empty())
    .unwrap();
    let (status, _, _) = crate::common::send(&t.app, req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t.worker.shutdown().await;
}
