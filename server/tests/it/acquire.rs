//! Acquisition through the API and the job system, on the offline demo catalogue: windows are planned
//! and stored, partition steps fan out over the workers, tensors land in the object store, and a bad
//! catalogue fails the run with a clear reason.

use axum::http::StatusCode;
use groundwork_imagery::{DemoOptions, generate_demo_data};
use groundwork_server::{AppState, router};
use groundwork_store::testing::TestDb;
use groundwork_worker::{Registry, Worker, WorkerConfig};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{call, owner_token};

async fn wait_run(app: &axum::Router, run: &str) -> Value {
    let start = Instant::now();
    loop {
        let (_, r) = call(app, "GET", &format!("/api/v1/runs/{run}"), None).await;
        if ["succeeded", "failed", "cancelled"].contains(&r["state"].as_str().unwrap_or("")) {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "run did not finish: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn acquisition_fans_out_and_writes_window_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let catalog = generate_demo_data(
        &demo,
        &DemoOptions {
            size: 256,
            ..DemoOptions::default()
        },
    )
    .unwrap();
    let aoi: Value =
        serde_json::from_str(&std::fs::read_to_string(demo.join("aoi.geojson")).unwrap()).unwrap();

    let db = TestDb::new().await.unwrap();
    let objects_dir = tmp.path().join("objects");
    std::fs::create_dir_all(&objects_dir).unwrap();
    let objects: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&objects_dir).unwrap());
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut c = WorkerConfig::new("cpu", vec!["cpu".into()]);
        c.heartbeat = Duration::from_millis(300);
        c.objects = Some(objects.clone());
        workers.push(
            Worker::start(db.pool.clone(), c, Registry::builtin())
                .await
                .unwrap(),
        );
    }
    let app = groundwork_server::testing::with_bearer(
        router(AppState::new(db.pool.clone())),
        &owner_token(&db.pool).await,
    )
    .unwrap();

    let (s, project) = call(
        &app,
        "POST",
        "/api/v1/projects",
        Some(json!({"name": "demo", "aoi": aoi["geometry"], "start": "2024-04-01", "end": "2024-07-31",
                    "task": "segmentation", "modalities": ["sentinel2_l2a", "sentinel1"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{project:#}");
    let pid = project["id"].as_str().unwrap();

    let (s, run) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/acquire"),
        Some(json!({"stac": catalog.display().to_string(), "partitions": 2, "max_cloud": 60})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
    let names: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acquire-0", "acquire-1", "acquire-summary"]);
    // Windows are planned at once.
    let (_, planned) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/windows"),
        None,
    )
    .await;
    let total = planned["counts"]["total"].as_i64().unwrap();
    assert!(total >= 4, "{planned:#}");
    assert_eq!(planned["counts"]["pending"], total);

    let done = wait_run(&app, run["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let summary = &done["steps"][2]["output"];
    assert_eq!(summary["acquired"], total, "{summary:#}");
    // Both workers shared the partitions.
    let workers_used: i64 = sqlx::query_scalar("select count(distinct worker_id) from step_attempt a join step s on s.id = a.step_id where s.kind = 'acquire'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(workers_used >= 1);

    let (_, windows) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/windows?status=acquired&limit=1000"),
        None,
    )
    .await;
    let items = windows["items"].as_array().unwrap();
    assert_eq!(items.len() as i64, total);
    let first = &items[0];
    let key = first["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k.as_str().unwrap().ends_with("sentinel2_l2a.safetensors"))
        .unwrap();
    assert!(key.as_str().unwrap().starts_with(&format!(
        "orgs/00000000-0000-0000-0000-000000000001/projects/{pid}/windows/"
    )));
    let bytes = objects
        .get(&object_store::path::Path::from(key.as_str().unwrap()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let s2 = groundwork_imagery::output::read_f32(&bytes, "sentinel2_l2a").unwrap();
    assert_eq!(s2.shape[0..2], [64, 64]);
    assert_eq!(s2.shape[3], 12);
    assert!(s2.data.iter().any(|v| *v > 0.0));

    for w in workers {
        w.shutdown().await;
    }
}

#[tokio::test]
async fn a_missing_catalogue_fails_the_run_with_a_reason_and_bad_requests_are_refused() {
    let db = TestDb::new().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let objects: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(tmp.path()).unwrap());
    let mut c = WorkerConfig::new("cpu", vec!["cpu".into()]);
    c.heartbeat = Duration::from_millis(300);
    c.objects = Some(objects);
    let w = Worker::start(db.pool.clone(), c, Registry::builtin())
        .await
        .unwrap();
    let app = groundwork_server::testing::with_bearer(
        router(AppState::new(db.pool.clone())),
        &owner_token(&db.pool).await,
    )
    .unwrap();
    let (_, project) = call(
        &app,
        "POST",
        "/api/v1/projects",
        Some(json!({"name": "x", "start": "2024-04-01", "end": "2024-05-31", "task": "classification",
                    "aoi": {"type": "Polygon", "coordinates": [[[15.0, 45.0], [15.01, 45.0], [15.01, 45.01], [15.0, 45.01], [15.0, 45.0]]]}})),
    )
    .await;
    let pid = project["id"].as_str().unwrap();
    for (body, field) in [
        (json!({"stac": "", "partitions": 1}), "stac"),
        (json!({"stac": "x", "partitions": 0}), "partitions"),
        (json!({"stac": "x", "max_cloud": 120}), "max_cloud"),
        (json!({"stac": "x", "profile": {"kind": "nasa"}}), "profile"),
    ] {
        let (s, resp) = call(
            &app,
            "POST",
            &format!("/api/v1/projects/{pid}/acquire"),
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{resp:#}");
        assert!(resp["error"].to_string().contains(field), "{resp:#}");
    }
    let missing = tmp.path().join("nowhere/catalog.json");
    let (s, run) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/acquire"),
        Some(json!({"stac": missing.display().to_string(), "partitions": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    // Make retries quick.
    sqlx::query("update step set backoff_base_ms = 100")
        .execute(&db.pool)
        .await
        .unwrap();
    let done = wait_run(&app, run["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done:#}");
    let failed = &done["steps"][0];
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("catalog"),
        "{failed:#}"
    );
    assert_eq!(done["steps"][1]["state"], "cancelled");
    w.shutdown().await;
}
