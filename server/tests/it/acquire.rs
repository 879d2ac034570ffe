//! Acquisition through the API and the job system, on the offline demo catalogue: windows are planned
//! and stored, partition steps fan out over the workers, tensors land in the object store, and a bad
//! catalogue fails the run with a clear reason.

use axum::http::StatusCode;
use groundwork_imagery::{DemoOptions, OutboundPolicy, generate_demo_data};
use groundwork_server::{AppState, router};
use groundwork_store::testing::TestDb;
use groundwork_worker::{Registry, Worker, WorkerConfig};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{call, owner_token, wait_run};

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
    // The administrator named the demo folder a catalogue root (`--catalog-root`), for the API and
    // the workers alike.
    let policy = OutboundPolicy::default().with_catalog_root(&demo).unwrap();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut c = WorkerConfig::new("cpu", vec!["cpu".into()]);
        c.heartbeat = Duration::from_millis(300);
        c.objects = Some(objects.clone());
        c.outbound = policy.clone();
        workers.push(
            Worker::start(db.pool.clone(), c, Registry::builtin())
                .await
                .unwrap(),
        );
    }
    let mut state = AppState::new(db.pool.clone());
    state.outbound = Arc::new(policy);
    let app = groundwork_server::testing::with_bearer(router(state), &owner_token(&db.pool).await)
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
    assert_eq!(summary["empty"], 0, "{summary:#}");
    // Month by month: the scenes the windows used and the fraction of clear pixels, per modality.
    assert_eq!(
        summary["months"],
        json!(["2024-04", "2024-05", "2024-06", "2024-07"]),
        "{summary:#}"
    );
    for m in ["sentinel2_l2a", "sentinel1"] {
        let scenes = summary["scenes_per_month"][m].as_array().unwrap();
        assert_eq!(scenes.len(), 4, "{summary:#}");
        assert!(
            scenes.iter().all(|n| n.as_u64().unwrap() >= 1),
            "{summary:#}"
        );
        let clear = summary["clear_fraction"][m].as_array().unwrap();
        assert!(
            clear
                .iter()
                .all(|f| (0.0..=1.0).contains(&f.as_f64().unwrap())),
            "{summary:#}"
        );
    }
    assert!(
        summary["scenes_found"]["sentinel2_l2a"].as_u64().unwrap() >= 4,
        "{summary:#}"
    );
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
    // Under this acquisition's own folder.
    assert!(key.as_str().unwrap().starts_with(&format!(
        "orgs/00000000-0000-0000-0000-000000000001/projects/{pid}/acquisitions/{}/windows/",
        run["id"].as_str().unwrap()
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

/// A worker whose objects go to `objects` under `worker_policy`, the API under `api_policy` (called
/// with an owner's token) and a small project in it (its id).
async fn installation(
    db: &TestDb,
    objects: &std::path::Path,
    worker_policy: OutboundPolicy,
    api_policy: OutboundPolicy,
) -> (Worker, axum::Router, String) {
    let objects: Arc<dyn object_store::ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(objects).expect("an object folder"),
    );
    let mut c = WorkerConfig::new("cpu", vec!["cpu".into()]);
    c.heartbeat = Duration::from_millis(300);
    c.objects = Some(objects);
    c.outbound = worker_policy;
    let w = Worker::start(db.pool.clone(), c, Registry::builtin())
        .await
        .expect("the worker starts");
    let mut state = AppState::new(db.pool.clone());
    state.outbound = Arc::new(api_policy);
    let app = groundwork_server::testing::with_bearer(router(state), &owner_token(&db.pool).await)
        .expect("a router with the owner's token");
    let (_, project) = call(
        &app,
        "POST",
        "/api/v1/projects",
        Some(json!({"name": "x", "start": "2024-04-01", "end": "2024-05-31", "task": "classification",
                    "aoi": {"type": "Polygon", "coordinates": [[[15.0, 45.0], [15.01, 45.0], [15.01, 45.01], [15.0, 45.01], [15.0, 45.0]]]}})),
    )
    .await;
    (
        w,
        app,
        project["id"].as_str().expect("the project's id").to_owned(),
    )
}

#[tokio::test]
async fn a_broken_catalogue_fails_the_run_with_a_reason_and_bad_requests_are_refused() {
    let db = TestDb::new().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let catalogues = tempfile::tempdir().unwrap();
    let policy = OutboundPolicy::default()
        .with_catalog_root(catalogues.path())
        .unwrap();
    let (w, app, pid) = installation(&db, tmp.path(), policy.clone(), policy).await;
    let pid = pid.as_str();
    let outside = tmp.path().join("catalog.json");
    std::fs::write(&outside, "{}").unwrap();
    let missing = catalogues.path().join("nowhere/catalog.json");
    for (body, field, says) in [
        (json!({"stac": "", "partitions": 1}), "stac", ""),
        (
            json!({"stac": "https://stac.example.org", "partitions": 0}),
            "partitions",
            "",
        ),
        (
            json!({"stac": "https://stac.example.org", "max_cloud": 120}),
            "max_cloud",
            "",
        ),
        (
            json!({"stac": "https://stac.example.org", "profile": {"kind": "nasa"}}),
            "profile",
            "",
        ),
        // The outbound-request policy: no internal addresses, no other schemes, local files only
        // under a catalogue root (and the answer does not tell whether a file exists).
        (
            json!({"stac": "http://127.0.0.1:5432/"}),
            "stac",
            "loopback",
        ),
        (
            json!({"stac": "http://169.254.169.254/latest/meta-data/"}),
            "stac",
            "link-local",
        ),
        (
            json!({"stac": "http://[::ffff:10.0.0.1]/stac"}),
            "stac",
            "private",
        ),
        (
            json!({"stac": "http://localhost:8080/stac"}),
            "stac",
            "loopback",
        ),
        (
            json!({"stac": "ftp://stac.example.org/catalog.json"}),
            "stac",
            "only http and https",
        ),
        (json!({"stac": "/etc/passwd"}), "stac", "--catalog-root"),
        (
            json!({"stac": format!("file://{}", outside.display())}),
            "stac",
            "--catalog-root",
        ),
        (
            json!({"stac": format!("{}/../{}", catalogues.path().display(), outside.display())}),
            "stac",
            "--catalog-root",
        ),
        (
            json!({"stac": missing.display().to_string()}),
            "stac",
            "--catalog-root",
        ),
        (
            json!({"stac": "/vsicurl/http://stac.example.org/x.json"}),
            "stac",
            "/vsi",
        ),
        (
            json!({"stac": "https://stac.example.org", "profile": {"kind": "planetary-computer", "sas_endpoint": "http://169.254.169.254"}}),
            "profile",
            "link-local",
        ),
    ] {
        let (s, resp) = call(
            &app,
            "POST",
            &format!("/api/v1/projects/{pid}/acquire"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {resp:#}");
        let error = resp["error"].to_string();
        assert!(
            error.contains(field) && error.contains(says),
            "{body}: {resp:#}"
        );
    }
    // Nothing was started.
    let (_, runs) = call(&app, "GET", &format!("/api/v1/projects/{pid}/runs"), None).await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(0), "{runs:#}");

    // A catalogue under the root that is not a catalogue fails the run with the reason.
    std::fs::create_dir_all(catalogues.path().join("broken")).unwrap();
    std::fs::write(catalogues.path().join("broken/catalog.json"), "not json").unwrap();
    let (s, run) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/acquire"),
        Some(json!({"stac": catalogues.path().join("broken").display().to_string(), "partitions": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
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

#[tokio::test]
async fn a_worker_refuses_a_catalogue_its_policy_does_not_allow_even_when_the_api_did() {
    // The API's policy allows 127.0.0.1:9 but this worker's does not (policies are per process):
    // the step fails at once with the refusal, and nothing is retried.
    let db = TestDb::new().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (w, app, pid) = installation(
        &db,
        tmp.path(),
        OutboundPolicy::default(),
        OutboundPolicy::default().with_allowed_host("127.0.0.1:9".parse().unwrap()),
    )
    .await;
    let pid = pid.as_str();
    let (s, run) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/acquire"),
        Some(json!({"stac": "http://127.0.0.1:9/stac", "partitions": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
    let done = wait_run(&app, run["id"].as_str().unwrap()).await;
    let failed = &done["steps"][0];
    assert_eq!(failed["state"], "failed", "{done:#}");
    assert_eq!(failed["attempt"], 1, "{failed:#}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("refused by the outbound-request policy") && error.contains("loopback"),
        "{error}"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn an_area_outside_the_catalogue_s_coverage_is_empty_not_acquired_and_the_run_says_why() {
    // The demo catalogue covers about 5 km² near 15.0° E, 45.15° N; the project lies 15 km south.
    let db = TestDb::new().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let catalogues = tempfile::tempdir().unwrap();
    let demo = catalogues.path().join("demo");
    let catalog = generate_demo_data(
        &demo,
        &DemoOptions {
            size: 128,
            ..DemoOptions::default()
        },
    )
    .unwrap();
    let policy = OutboundPolicy::default()
        .with_catalog_root(catalogues.path())
        .unwrap();
    let (w, app, pid) = installation(&db, tmp.path(), policy.clone(), policy).await;
    let (s, run) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/acquire"),
        Some(json!({"stac": catalog.display().to_string(), "partitions": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
    let done = wait_run(&app, run["id"].as_str().unwrap()).await;
    // Not a green run of "acquired" windows holding nothing: the step fails and says why.
    assert_eq!(done["state"], "failed", "{done:#}");
    let error = done["steps"][0]["error"].as_str().unwrap();
    assert!(error.contains("only 0 of"), "{error}");
    assert!(error.contains("hold no imagery"), "{error}");
    assert!(
        error.contains("no sentinel2_l2a scene for the area and dates"),
        "{error}"
    );
    let (_, windows) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/windows?limit=1000"),
        None,
    )
    .await;
    let counts = &windows["counts"];
    assert!(counts["total"].as_i64().unwrap() >= 1, "{windows:#}");
    assert_eq!(counts["empty"], counts["total"], "{counts:#}");
    assert_eq!(counts["acquired"], 0, "{counts:#}");
    for item in windows["items"].as_array().unwrap() {
        assert_eq!(item["status"], "empty");
        assert!(
            item["reason"].as_str().unwrap().starts_with(
                "no sentinel2_l2a scene covers this window between 2024-04-01 and 2024-05-31"
            ),
            "{item:#}"
        );
        assert_eq!(
            item["objects"],
            json!([]),
            "nothing is written for an empty window"
        );
    }
    // Training is refused: nothing was acquired.
    let (s, err) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/train"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{err:#}");
    w.shutdown().await;
}
