//! Labels end to end on a real database: imports with good and bad rows (GeoJSON and CSV, through the
//! API and the CLI), export round trips, versions, the summary, the spatial split, rasterisation onto
//! the window grid, and the training examples other code trains on.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use groundwork_imagery::WindowSpec;
use groundwork_server::AppState;
use groundwork_store::labels::{LabelTarget, Split, training_examples};
use groundwork_store::testing::TestDb;
use groundwork_store::{DEFAULT_ORG_ID, projects};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

use crate::common::{call, send};

/// An AOI of about 2.4 × 2.2 km in UTM zone 31N.
fn aoi() -> Value {
    json!({"type": "Polygon", "coordinates": [[[3.0, 45.0], [3.03, 45.0], [3.03, 45.02], [3.0, 45.02], [3.0, 45.0]]]})
}

fn classes() -> Value {
    json!([{"id": 0, "name": "water", "color": "#0000ff"}, {"id": 1, "name": "forest", "color": "#00ff00"},
           {"id": 2, "name": "crops", "color": "#ffff00"}])
}

async fn upload(
    app: &axum::Router,
    uri: &str,
    content_type: &str,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap();
    let (s, _, b) = send(app, req).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn download(app: &axum::Router, uri: &str) -> (StatusCode, HashMap<String, String>, String) {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let (s, h, b) = send(app, req).await;
    (s, h, String::from_utf8(b).unwrap())
}

async fn create_project(app: &axum::Router, task: &str) -> String {
    create_project_with(app, task, classes()).await
}

async fn create_project_with(app: &axum::Router, task: &str, classes: Value) -> String {
    let (s, p) = call(
        app,
        "POST",
        "/api/v1/projects",
        Some(
            json!({"name": "labels", "aoi": aoi(), "start": "2024-04-01", "end": "2024-07-31",
                    "task": task, "classes": classes}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p:#}");
    p["id"].as_str().unwrap().to_owned()
}

/// Plans the project's windows (as acquisition does) and marks them all acquired.
async fn plan_and_acquire(pool: &groundwork_store::PgPool, pid: &str) -> Vec<WindowSpec> {
    let id: Uuid = pid.parse().unwrap();
    let project = projects::get(pool, DEFAULT_ORG_ID, id).await.unwrap();
    let specs = groundwork_worker::steps::plan_windows(pool, &project)
        .await
        .unwrap();
    sqlx::query("update project_window set status = 'acquired' where project_id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    specs
}

/// A window of the plan whose footprint lies inside the AOI.
fn inner_window(specs: &[WindowSpec]) -> &WindowSpec {
    specs
        .iter()
        .find(|w| {
            let b = w.wgs84_bounds;
            b[0] > 3.0 && b[1] > 45.0 && b[2] < 3.03 && b[3] < 45.02
        })
        .unwrap()
}

fn point(lon: f64, lat: f64, props: Value) -> Value {
    json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]}, "properties": props})
}

fn square(w: f64, s: f64, e: f64, n: f64, props: Value) -> Value {
    json!({"type": "Feature", "properties": props,
           "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}})
}

fn collection(features: Vec<Value>) -> String {
    json!({"type": "FeatureCollection", "features": features}).to_string()
}

#[tokio::test]
async fn geojson_import_keeps_the_good_features_and_reports_each_bad_one() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let pid = create_project(&app, "classification").await;
    plan_and_acquire(&db.pool, &pid).await;

    let file = collection(vec![
        point(3.01, 45.01, json!({"class": "forest"})),
        square(3.002, 45.002, 3.004, 45.004, json!({"class": 2})),
        json!({"type": "Feature", "properties": {"class": 1},
               "geometry": {"type": "LineString", "coordinates": [[3.01, 45.01], [3.02, 45.01]]}}),
        point(3.01, 45.01, json!({"class": "swamp"})),
        point(4.5, 45.01, json!({"class": "water"})),
        json!({"type": "Feature", "properties": {"class": 0},
               "geometry": {"type": "Polygon", "coordinates": [[[3.01, 45.01], [3.02, 45.015], [3.02, 45.01], [3.01, 45.015], [3.01, 45.01]]]}}),
        point(3.01, 45.01, json!({"class": 7})),
    ]);
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "application/geo+json",
        file,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["version"], 1);
    assert_eq!(r["imported"], 2);
    assert_eq!(r["unassigned"], 0);
    let errors: Vec<(u64, String)> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors.iter().map(|e| e.0).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6],
        "{errors:?}"
    );
    assert!(errors[0].1.starts_with("bad geometry"), "{errors:?}");
    assert!(
        errors[1].1.contains("unknown class \"swamp\""),
        "{errors:?}"
    );
    assert_eq!(errors[2].1, "outside the AOI");
    assert!(
        errors[3].1.starts_with("bad geometry"),
        "self-intersecting: {errors:?}"
    );
    assert_eq!(errors[4].1, "unknown class 7");

    // A file with no usable row stores nothing and says why.
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "application/json",
        collection(vec![point(4.5, 45.01, json!({"class": "water"}))]),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{r:#}");
    assert_eq!(r["error"]["code"], "no_valid_labels");
    assert_eq!(r["error"]["details"][0]["row"], 0);
    // Not a FeatureCollection, not JSON, wrong content type.
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "application/json",
        "{\"type\": \"Point\"}",
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{r:#}");
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "application/json",
        "{oops",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{r:#}");
    assert_eq!(r["error"]["code"], "invalid_json");
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "application/xml",
        "<x/>",
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{r:#}");
    // None of the refused files made a version.
    let (_, summary) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/labels/summary"),
        None,
    )
    .await;
    assert_eq!(
        summary["versions"].as_array().unwrap().len(),
        1,
        "{summary:#}"
    );
}

#[tokio::test]
async fn csv_import_reports_bad_rows_by_line_and_versions_increment() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let pid = create_project(&app, "regression").await;
    plan_and_acquire(&db.pool, &pid).await;

    let csv = "lon,lat,value\n3.01,45.01,12.5\n3.011,45.011,abc\n3.012,45.012\n3.013,45.013,-4\n9.0,45.0,1\n";
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "text/csv",
        csv,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["version"], 1);
    assert_eq!(r["imported"], 2);
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{r:#}");
    assert_eq!(errors[0]["row"], 3);
    assert!(errors[0]["reason"].as_str().unwrap().contains("bad number"));
    assert_eq!(errors[1]["row"], 4);
    assert!(errors[1]["reason"].as_str().unwrap().contains("bad number"));
    assert_eq!(errors[2]["row"], 6);
    assert_eq!(errors[2]["reason"], "outside the AOI");

    // Each import is a new version; `replace` makes one with only the new labels; old versions stay.
    let (_, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "text/csv",
        "lon,lat,value\n3.02,45.01,1\n",
    )
    .await;
    assert_eq!(r["version"], 2);
    // A replace whose rows are all bad would wipe the labels: refused, no version.
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import?mode=replace"),
        "text/csv",
        "lon,lat,value\n3.02,45.015,seven\n",
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{r:#}");
    let (_, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import?mode=replace"),
        "text/csv",
        "lon,lat,value\n3.02,45.015,7\n",
    )
    .await;
    assert_eq!(r["version"], 3);
    let (_, summary) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/labels/summary"),
        None,
    )
    .await;
    let versions: Vec<(i64, i64, i64, i64)> = summary["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["labels"].as_i64().unwrap(),
                v["added"].as_i64().unwrap(),
                v["removed"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, [(1, 2, 2, 0), (2, 3, 1, 0), (3, 1, 1, 3)]);
    let (s, h, body) = download(
        &app,
        &format!("/api/v1/projects/{pid}/labels?format=csv&version=1"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-label-set-version"], "1");
    assert_eq!(
        body,
        "lon,lat,value,window_id\n3.01,45.01,12.5,\n3.013,45.013,-4,\n"
    );
    let (_, _, body) = download(&app, &format!("/api/v1/projects/{pid}/labels?format=csv")).await;
    assert_eq!(body, "lon,lat,value,window_id\n3.02,45.015,7,\n");

    // Removing a label is an edit: a new version without it; the old version still has it.
    let (_, _, latest) = download(&app, &format!("/api/v1/projects/{pid}/labels")).await;
    let latest: Value = serde_json::from_str(&latest).unwrap();
    let label_id = latest["features"][0]["id"].as_i64().unwrap();
    let uri = format!("/api/v1/projects/{pid}/labels/{label_id}");
    let (s, r) = call(&app, "DELETE", &uri, None).await;
    assert_eq!(s, StatusCode::OK, "{r:#}");
    assert_eq!(
        (&r["version"], &r["kind"], &r["labels"], &r["removed"]),
        (&json!(4), &json!("edit"), &json!(0), &json!(1))
    );
    let (s, r) = call(&app, "DELETE", &uri, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{r:#}");
    let (s, _) = call(
        &app,
        "DELETE",
        &format!("/api/v1/projects/{pid}/labels/nope"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, _, body) = download(&app, &format!("/api/v1/projects/{pid}/labels?format=csv")).await;
    assert_eq!(body, "lon,lat,value,window_id\n");
    let (_, _, body) = download(
        &app,
        &format!("/api/v1/projects/{pid}/labels?format=csv&version=3"),
    )
    .await;
    assert_eq!(body, "lon,lat,value,window_id\n3.02,45.015,7,\n");
    let (s, r) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/labels?version=9"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{r:#}");
    let (s, _) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/labels?format=kml"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn exports_round_trip_through_import() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let first = create_project(&app, "classification").await;
    let specs = plan_and_acquire(&db.pool, &first).await;
    let window = inner_window(&specs).id.clone();
    let file = collection(vec![
        point(3.01, 45.01, json!({"class": "forest"})),
        square(3.002, 45.002, 3.004, 45.004, json!({"class": "crops"})),
        json!({"type": "Feature", "geometry": null, "properties": {"class": "water", "window_id": window}}),
    ]);
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{first}/labels/import"),
        "application/geo+json",
        file,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["imported"], 3);

    let (s, h, exported) = download(&app, &format!("/api/v1/projects/{first}/labels")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/geo+json");
    let second = create_project(&app, "classification").await;
    plan_and_acquire(&db.pool, &second).await;
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{second}/labels/import"),
        "application/geo+json",
        exported.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["imported"], 3);
    assert_eq!(r["errors"], json!([]));
    let (_, _, again) = download(&app, &format!("/api/v1/projects/{second}/labels")).await;
    let strip = |s: &str| -> Vec<Value> {
        let v: Value = serde_json::from_str(s).unwrap();
        v["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| json!({"geometry": f["geometry"], "properties": f["properties"]}))
            .collect()
    };
    assert_eq!(strip(&exported), strip(&again));
    assert_eq!(
        strip(&exported)[2]["properties"],
        json!({"class": "water", "class_id": 0, "window_id": window})
    );

    // CSV keeps points and window labels; polygons are counted as left out.
    let (_, h, csv) = download(&app, &format!("/api/v1/projects/{first}/labels?format=csv")).await;
    assert_eq!(h["x-labels-skipped"], "1");
    assert_eq!(
        csv,
        format!("lon,lat,class,window_id\n3.01,45.01,forest,\n,,water,{window}\n")
    );
    let third = create_project(&app, "classification").await;
    plan_and_acquire(&db.pool, &third).await;
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{third}/labels/import"),
        "text/csv",
        csv.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["imported"], 2);
    let (_, _, csv_again) =
        download(&app, &format!("/api/v1/projects/{third}/labels?format=csv")).await;
    assert_eq!(csv, csv_again);
}

#[tokio::test]
async fn the_cli_imports_and_exports_files_against_the_database() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let pid = create_project(&app, "classification").await;
    plan_and_acquire(&db.pool, &pid).await;
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("points.csv");
    std::fs::write(
        &csv,
        "lon,lat,class\n3.01,45.01,forest\n3.011,45.011,swamp\n3.012,oops,water\n3.013,45.013,0\n",
    )
    .unwrap();

    let bin = env!("CARGO_BIN_EXE_groundwork");
    let out = std::process::Command::new(bin)
        .args(["labels", "import", "--project", &pid])
        .arg(&csv)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["version"], 1);
    assert_eq!(report["imported"], 2);
    assert_eq!(
        report["errors"][0],
        json!({"row": 3, "reason": "unknown class \"swamp\""})
    );
    assert_eq!(report["errors"][1]["row"], 4);
    assert!(stderr.contains("row 3: unknown class"), "{stderr}");

    let exported = tmp.path().join("out.geojson");
    let out = std::process::Command::new(bin)
        .args(["labels", "export", "--project", &pid, "--out"])
        .arg(&exported)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&exported).unwrap()).unwrap();
    let classes: Vec<&str> = doc["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["forest", "water"]);

    // Importing the export again through the CLI is a new version with the same labels.
    let out = std::process::Command::new(bin)
        .args(["labels", "import", "--project", &pid, "--format", "geojson"])
        .arg(&exported)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["version"].as_i64(), report["imported"].as_i64()),
        (Some(2), Some(2))
    );

    // A file with no good row fails the command; an unknown project too.
    std::fs::write(&csv, "lon,lat,class\n3.012,oops,water\n").unwrap();
    let out = std::process::Command::new(bin)
        .args(["labels", "import", "--project", &pid])
        .arg(&csv)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("row 2: bad number"));
    let out = std::process::Command::new(bin)
        .args(["labels", "export", "--project", &Uuid::new_v4().to_string()])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("project not found"));
}

#[tokio::test]
async fn the_split_keeps_blocks_together_and_the_summary_counts_per_class_and_split() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let pid = create_project(&app, "classification").await;
    let id: Uuid = pid.parse().unwrap();

    // Labels imported before the windows exist wait for them.
    let mut features = Vec::new();
    for i in 0..12 {
        for j in 0..8 {
            let class = ["water", "forest", "crops"][(i + j) % 3];
            features.push(point(
                3.001 + 0.0025 * i as f64,
                45.001 + 0.0025 * j as f64,
                json!({"class": class}),
            ));
        }
    }
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "application/geo+json",
        collection(features),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["unassigned"], 96);
    let (s, r) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/labels/split"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{r:#}");

    let specs = plan_and_acquire(&db.pool, &pid).await;
    // One window stays pending: it is split but yields no training example.
    let pending = inner_window(&specs).id.clone();
    sqlx::query("update project_window set status = 'pending' where project_id = $1 and id = $2")
        .bind(id)
        .bind(&pending)
        .execute(&db.pool)
        .await
        .unwrap();
    for bad in [
        json!({"block_size": 0}),
        json!({"fractions": [0, 0, 0]}),
        json!({"sampling": {"strategy": "grid", "step": 0}}),
        json!({"colour": 1}),
    ] {
        let (s, r) = call(
            &app,
            "POST",
            &format!("/api/v1/projects/{pid}/labels/split"),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {r:#}");
    }
    let (s, r) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/labels/split"),
        Some(json!({"block_size": 2, "seed": 42})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["version"], 2);
    assert!(r["blocks"].as_u64().unwrap() >= 3, "{r:#}");
    // Every class is labelled in many blocks, so every class is in every split.
    assert_eq!(r["missing"], json!([]), "{r:#}");
    for split in ["train", "val", "test"] {
        assert!(r["windows"][split].as_i64().unwrap() > 0, "{r:#}");
    }
    assert_eq!(
        r["windows"]["train"].as_i64().unwrap()
            + r["windows"]["val"].as_i64().unwrap()
            + r["windows"]["test"].as_i64().unwrap(),
        specs.len() as i64
    );

    // No window in two splits; windows of one 2×2 block share a split.
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "select s.window_id, s.split, w.grid_column, w.grid_row from window_split s \
         join project_window w on w.project_id = s.project_id and w.id = s.window_id where s.project_id = $1 and s.version = 2",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let ids: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), rows.len());
    let mut blocks: HashMap<(i64, i64), &str> = HashMap::new();
    for (_, split, c, r) in &rows {
        let prev = blocks
            .entry((c.div_euclid(2), r.div_euclid(2)))
            .or_insert(split);
        assert_eq!(prev, split, "block straddles splits");
    }

    // Training examples: acquired windows with labels and a split, majority class per window.
    let (version, examples) = training_examples(&db.pool, id, None).await.unwrap();
    assert_eq!(version, 2);
    let splits: HashMap<&str, &str> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert!(!examples.is_empty());
    assert!(examples.iter().all(|e| e.window_id != pending));
    for e in &examples {
        assert_eq!(
            serde_json::to_value(e.split).unwrap(),
            splits[e.window_id.as_str()]
        );
        assert!(matches!(e.target, LabelTarget::Class(0..=2)));
    }
    let labelled: i64 = sqlx::query_scalar(
        "select count(distinct lw.window_id) from label_window lw join project_window w on w.project_id = lw.project_id and w.id = lw.window_id \
         where lw.project_id = $1 and w.status = 'acquired'",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(examples.len() as i64, labelled);
    // The version before the split has no split yet, so no examples.
    assert!(
        training_examples(&db.pool, id, Some(1))
            .await
            .unwrap()
            .1
            .is_empty()
    );

    // A later import carries the split forward.
    let (_, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "text/csv",
        "lon,lat,class\n3.0011,45.0011,crops\n",
    )
    .await;
    assert_eq!(r["version"], 3);
    let (_, summary) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/labels/summary"),
        None,
    )
    .await;
    assert_eq!(summary["version"], 3);
    assert_eq!(summary["split_version"], 2);
    assert_eq!(summary["labels"], 97);
    assert_eq!(summary["unassigned"], 0);
    let classes = summary["classes"].as_array().unwrap();
    let label_counts: Vec<(i64, &str, i64)> = classes
        .iter()
        .map(|c| {
            (
                c["class_id"].as_i64().unwrap(),
                c["name"].as_str().unwrap(),
                c["labels"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        label_counts,
        [(0, "water", 32), (1, "forest", 32), (2, "crops", 33)]
    );
    // Per class and split: the windows holding a label of that class, checked against the database.
    for c in classes {
        for split in ["train", "val", "test"] {
            let n: i64 = sqlx::query_scalar(
                "select count(distinct lw.window_id) from label l join label_window lw on lw.label_id = l.id \
                 join window_split s on s.project_id = l.project_id and s.version = 2 and s.window_id = lw.window_id \
                 where l.project_id = $1 and l.class_id = $2 and s.split = $3",
            )
            .bind(id)
            .bind(c["class_id"].as_i64().unwrap() as i32)
            .bind(split)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!(c["windows"][split].as_i64().unwrap(), n, "{c:#}");
        }
    }
    assert_eq!(summary["windows"]["none"], 0);
    let (_, old) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/labels/summary?version=1"),
        None,
    )
    .await;
    assert_eq!(old["labels"], 96);
    assert_eq!(old["split_version"], Value::Null);

    // Stratified sampling draws as many windows of each majority class (here one label per window:
    // 10 windows of water, 6 of forest, 4 of crops).
    let mut csv = String::from("window_id,class\n");
    for (i, w) in specs.iter().enumerate() {
        let class = match i {
            0..10 => "water",
            10..16 => "forest",
            _ => "crops",
        };
        csv.push_str(&format!("{},{class}\n", w.id));
    }
    assert_eq!(specs.len(), 20);
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import?mode=replace"),
        "text/csv",
        csv,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    for (per_class, want) in [(json!(2), 6), (Value::Null, 12)] {
        let (s, r) = call(&app, "POST", &format!("/api/v1/projects/{pid}/labels/split"),
            Some(json!({"sampling": {"strategy": "stratified", "per_class": per_class}, "block_size": 1}))).await;
        assert_eq!(s, StatusCode::CREATED, "{r:#}");
        let total = r["windows"]["train"].as_i64().unwrap()
            + r["windows"]["val"].as_i64().unwrap()
            + r["windows"]["test"].as_i64().unwrap();
        assert_eq!(total, want, "{r:#}");
        let (_, summary) = call(
            &app,
            "GET",
            &format!("/api/v1/projects/{pid}/labels/summary"),
            None,
        )
        .await;
        let sampled: Vec<i64> = summary["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["windows"]["train"].as_i64().unwrap()
                    + c["windows"]["val"].as_i64().unwrap()
                    + c["windows"]["test"].as_i64().unwrap()
            })
            .collect();
        assert_eq!(sampled, vec![want / 3; 3], "{summary:#}");
    }

    // Deleting the project takes its labels, versions and splits with it.
    let (s, r) = call(&app, "DELETE", &format!("/api/v1/projects/{pid}"), None).await;
    assert!(s.is_success(), "{r:#}");
    for table in ["label", "label_window", "label_set", "window_split"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

#[tokio::test]
async fn polygons_and_points_are_rasterised_onto_the_window_grid() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let pid = create_project(&app, "segmentation").await;
    let id: Uuid = pid.parse().unwrap();
    let specs = plan_and_acquire(&db.pool, &pid).await;
    let w = inner_window(&specs).clone();
    // The window's left half, from the outlines of the two 32 × 32 cells that make it up.
    let lower = WindowSpec::from_cell(w.epsg, 2 * w.column, 2 * w.row, 32, 10.0).unwrap();
    let upper = WindowSpec::from_cell(w.epsg, 2 * w.column, 2 * w.row + 1, 32, 10.0).unwrap();
    // Densified rings start at (xmin, ymin) with 4 points per edge: 4 = (xmax, ymin), 8 = (xmax, ymax), 12 = (xmin, ymax).
    let corner = |s: &WindowSpec, i: usize| -> Value {
        serde_json::to_value(&s.wgs84_polygon).unwrap()["coordinates"][0][i].clone()
    };
    let left_half = json!({"type": "Polygon", "coordinates": [[
        corner(&lower, 0), corner(&lower, 4), corner(&upper, 8), corner(&upper, 12), corner(&lower, 0)
    ]]});
    // A point at the centre of one pixel of another window: the 10 m cell (column 3, row 5 from the top).
    let other = specs
        .iter()
        .find(|s| {
            let b = s.wgs84_bounds;
            s.id != w.id && b[0] > 3.0 && b[1] > 45.0 && b[2] < 3.03 && b[3] < 45.02
        })
        .unwrap();
    let px = WindowSpec::from_cell(
        other.epsg,
        64 * other.column + 3,
        64 * other.row + 63 - 5,
        1,
        10.0,
    )
    .unwrap();
    let (a, c) = (corner(&px, 0), corner(&px, 8));
    let centre = [
        (a[0].as_f64().unwrap() + c[0].as_f64().unwrap()) / 2.0,
        (a[1].as_f64().unwrap() + c[1].as_f64().unwrap()) / 2.0,
    ];

    let file = collection(vec![
        json!({"type": "Feature", "geometry": left_half, "properties": {"class": "forest"}}),
        point(centre[0], centre[1], json!({"class": "crops"})),
    ]);
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "application/geo+json",
        file,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["imported"], 2, "{r:#}");
    let (s, r) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/labels/split"),
        Some(json!({"block_size": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");

    let (_, examples) = training_examples(&db.pool, id, None).await.unwrap();
    assert_eq!(examples.len(), 2, "{examples:?}");
    let mask_of = |wid: &str| match &examples.iter().find(|e| e.window_id == wid).unwrap().target {
        LabelTarget::Mask { size, pixels } => (*size, pixels.clone()),
        t => panic!("not a mask: {t:?}"),
    };
    let (size, pixels) = mask_of(&w.id);
    assert_eq!(size, 64);
    for (i, p) in pixels.iter().enumerate() {
        let want = if i % 64 < 32 { 1 } else { 255 };
        assert_eq!(*p, want, "pixel row {} column {}", i / 64, i % 64);
    }
    let (_, pixels) = mask_of(&other.id);
    let labelled: Vec<usize> = pixels
        .iter()
        .enumerate()
        .filter(|(_, p)| **p != 255)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(labelled, [5 * 64 + 3]);
    assert_eq!(pixels[5 * 64 + 3], 2);
    assert!(
        examples
            .iter()
            .all(|e| matches!(e.split, Split::Train | Split::Val | Split::Test))
    );
}

#[tokio::test]
async fn another_organisations_project_is_not_found() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let other_org = Uuid::new_v4();
    sqlx::query("insert into org (id, name) values ($1, 'other')")
        .bind(other_org)
        .execute(&db.pool)
        .await
        .unwrap();
    let fields = projects::ProjectFields {
        name: "theirs".into(),
        description: String::new(),
        aoi: aoi(),
        bbox: [3.0, 45.0, 3.03, 45.02],
        area_km2: 5.3,
        start: "2024-04-01".parse().unwrap(),
        end: "2024-07-31".parse().unwrap(),
        task: "classification".parse().unwrap(),
        classes: serde_json::from_value(classes()).unwrap(),
        modalities: vec!["sentinel2_l2a".parse().unwrap()],
        model_size: "nano".parse().unwrap(),
        patch_size: 4,
        window_size: 64,
        license: "CC-BY-4.0".into(),
        license_url: None,
        allow_random_init: false,
    };
    let theirs = projects::create(&db.pool, other_org, &fields)
        .await
        .unwrap()
        .id;
    let file = collection(vec![point(3.01, 45.01, json!({"class": "forest"}))]);
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{theirs}/labels/import"),
        "application/geo+json",
        file,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{r:#}");
    assert_eq!(r["error"]["code"], "not_found");
    for uri in [
        format!("/api/v1/projects/{theirs}/labels"),
        format!("/api/v1/projects/{theirs}/labels/summary"),
    ] {
        let (s, r) = call(&app, "GET", &uri, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}: {r:#}");
    }
    let (s, _) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{theirs}/labels/split"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The endpoints are in the OpenAPI document.
    let (_, doc) = call(&app, "GET", "/api/openapi.json", None).await;
    for path in [
        "/api/v1/projects/{id}/labels",
        "/api/v1/projects/{id}/labels/import",
        "/api/v1/projects/{id}/labels/summary",
        "/api/v1/projects/{id}/labels/split",
        "/api/v1/projects/{id}/labels/{label_id}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    let n: i64 = sqlx::query_scalar("select count(*) from label_set")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

/// ESA WorldCover's class ids (and 0): ids that are neither 0, 1, 2… nor contiguous.
fn worldcover() -> Value {
    json!([{"id": 0, "name": "no data", "color": "#000000"},
           {"id": 10, "name": "tree cover", "color": "#006400"},
           {"id": 20, "name": "shrubland", "color": "#ffbb22"},
           {"id": 30, "name": "grassland", "color": "#ffff4c"},
           {"id": 40, "name": "cropland", "color": "#f096ff"},
           {"id": 50, "name": "built-up", "color": "#fa0000"},
           {"id": 60, "name": "bare", "color": "#b4b4b4"},
           {"id": 70, "name": "snow and ice", "color": "#f0f0f0"},
           {"id": 80, "name": "water", "color": "#0064c8"},
           {"id": 90, "name": "wetland", "color": "#0096a0"}])
}

/// Labels per class id of the latest version, from the summary.
async fn labels_per_class(app: &axum::Router, pid: &str) -> Vec<(i64, i64)> {
    let (s, summary) = call(
        app,
        "GET",
        &format!("/api/v1/projects/{pid}/labels/summary"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{summary:#}");
    summary["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["class_id"].as_i64().unwrap(),
                c["labels"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn row_errors(r: &Value) -> Vec<(u64, String)> {
    r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn geojson_with_worldcover_class_ids_written_as_numbers_floats_or_text_and_extra_members_imports()
 {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let pid = create_project_with(&app, "classification", worldcover()).await;
    plan_and_acquire(&db.pool, &pid).await;

    // As GDAL, QGIS or geopandas write it: a `name` and `crs` on the collection, feature ids and
    // bboxes, 3D positions, attribute columns beside the class, and ids kept as floats or text.
    let file = json!({
        "type": "FeatureCollection",
        "name": "worldcover_samples",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": [
            {"type": "Feature", "id": 1, "bbox": [3.01, 45.01, 3.01, 45.01],
             "geometry": {"type": "Point", "coordinates": [3.01, 45.01]},
             "properties": {"class": 10, "source": "worldcover", "confidence": 0.9,
                            "tags": {"checked": true}, "notes": null, "date": "2024-05-01"}},
            point(3.011, 45.011, json!({"fid": 2, "class": 20.0, "area_m2": 12.5})),
            point(3.012, 45.012, json!({"class": "30", "label": "grassland?"})),
            point(3.013, 45.013, json!({"class": "Water"})),
            point(3.014, 45.014, json!({"class_id": 0, "class": null})),
            {"type": "Feature", "properties": {"class": 50},
             "geometry": {"type": "Point", "coordinates": [3.015, 45.015, 312.5]}},
            point(3.016, 45.016, json!({"class": -1})),
            point(3.017, 45.017, json!({"class": 45})),
            point(3.018, 45.018, json!({"class": 10.5})),
        ]
    });
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "application/geo+json",
        file.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["imported"], 6, "{r:#}");
    let errors = row_errors(&r);
    assert_eq!(
        errors.iter().map(|e| e.0).collect::<Vec<_>>(),
        [6, 7, 8],
        "{r:#}"
    );
    assert!(
        errors.iter().all(|e| e.1.contains("unknown class")),
        "{errors:?}"
    );
    assert!(errors[0].1.contains("-1"), "{errors:?}");
    assert_eq!(
        labels_per_class(&app, &pid).await,
        [(0, 1), (10, 1), (20, 1), (30, 1), (50, 1), (80, 1)]
    );
}

#[tokio::test]
async fn csv_with_worldcover_class_ids_and_extra_columns_imports_and_reports_ids_outside_the_legend()
 {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let pid = create_project_with(&app, "classification", worldcover()).await;
    plan_and_acquire(&db.pool, &pid).await;

    let csv = "fid,Longitude,Latitude,class,confidence,source\n\
               1,3.01,45.01,10,0.9,worldcover\n\
               2,3.011,45.011,80,0.7,\"field, visit\"\n\
               3,3.012,45.012,50.0,,worldcover\n\
               4,3.013,45.013,0,1,\n\
               5,3.014,45.014,-3,1,\n\
               6,3.015,45.015,built-up,1,\n";
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "text/csv",
        csv,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["imported"], 5, "{r:#}");
    let errors = row_errors(&r);
    assert_eq!(errors.len(), 1, "{r:#}");
    assert_eq!(errors[0].0, 6);
    assert!(errors[0].1.contains("unknown class -3"), "{errors:?}");
    assert_eq!(
        labels_per_class(&app, &pid).await,
        [(0, 1), (10, 1), (50, 2), (80, 1)]
    );
}

/// The labelled pixels of each label of class `class`, per window: (window, pixel count, bitmask).
async fn pixels_of_class(
    pool: &groundwork_store::PgPool,
    id: Uuid,
    class: i32,
) -> Vec<(String, i32, Option<Vec<u8>>)> {
    sqlx::query_as(
        "select lw.window_id, lw.pixel_count, lw.pixels from label l join label_window lw on lw.label_id = l.id \
         where l.project_id = $1 and l.class_id = $2 order by lw.window_id",
    )
    .bind(id)
    .bind(class)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn ring(w: f64, s: f64, e: f64, n: f64, clockwise: bool) -> Value {
    let mut r = vec![
        json!([w, s]),
        json!([e, s]),
        json!([e, n]),
        json!([w, n]),
        json!([w, s]),
    ];
    if clockwise {
        r.reverse();
    }
    Value::Array(r)
}

fn feature(geometry: Value, class: i64) -> Value {
    json!({"type": "Feature", "geometry": geometry, "properties": {"class": class}})
}

#[tokio::test]
async fn label_polygons_in_either_ring_orientation_multipolygons_holes_and_points_rasterise_alike()
{
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let pid = create_project_with(&app, "segmentation", worldcover()).await;
    let id: Uuid = pid.parse().unwrap();
    let specs = plan_and_acquire(&db.pool, &pid).await;
    let w = inner_window(&specs).clone();
    // The window's left half, traced counter-clockwise (as in the rasterisation test above).
    let lower = WindowSpec::from_cell(w.epsg, 2 * w.column, 2 * w.row, 32, 10.0).unwrap();
    let upper = WindowSpec::from_cell(w.epsg, 2 * w.column, 2 * w.row + 1, 32, 10.0).unwrap();
    let corner = |s: &WindowSpec, i: usize| -> Value {
        serde_json::to_value(&s.wgs84_polygon).unwrap()["coordinates"][0][i].clone()
    };
    let ccw = vec![
        corner(&lower, 0),
        corner(&lower, 4),
        corner(&upper, 8),
        corner(&upper, 12),
        corner(&lower, 0),
    ];
    let mut cw = ccw.clone();
    cw.reverse();
    // A square with a square hole, each ring either way round.
    let (outer, hole) = (
        (3.004, 45.004, 3.009, 45.008),
        (3.005, 45.005, 3.007, 45.007),
    );
    let rect = |r: (f64, f64, f64, f64), clockwise: bool| ring(r.0, r.1, r.2, r.3, clockwise);
    let file = collection(vec![
        feature(json!({"type": "Polygon", "coordinates": [ccw]}), 10),
        feature(json!({"type": "Polygon", "coordinates": [cw]}), 20),
        feature(
            json!({"type": "MultiPolygon", "coordinates": [
                [ring(3.002, 45.002, 3.003, 45.003, false)],
                [ring(3.026, 45.016, 3.027, 45.017, true)]]}),
            30,
        ),
        feature(
            json!({"type": "Polygon", "coordinates": [rect(outer, false)]}),
            40,
        ),
        feature(
            json!({"type": "Polygon", "coordinates": [rect(hole, true)]}),
            50,
        ),
        feature(
            json!({"type": "Polygon", "coordinates": [rect(outer, true), rect(hole, false)]}),
            60,
        ),
        feature(
            json!({"type": "Polygon", "coordinates": [rect(outer, false), rect(hole, true)]}),
            70,
        ),
        point(3.02, 45.01, json!({"class": 80})),
    ]);
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import"),
        "application/geo+json",
        file,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    assert_eq!(r["imported"], 8, "{r:#}");
    assert_eq!(r["errors"], json!([]), "{r:#}");

    // Clockwise and counter-clockwise: the same windows, the same pixels (the left half).
    let ccw_pixels = pixels_of_class(&db.pool, id, 10).await;
    assert_eq!(ccw_pixels.len(), 1, "{ccw_pixels:?}");
    assert_eq!(ccw_pixels[0].0, w.id);
    assert_eq!(ccw_pixels[0].1, 64 * 32);
    assert_eq!(pixels_of_class(&db.pool, id, 20).await, ccw_pixels);
    // The MultiPolygon covers pixels in both of its parts' windows.
    let multi = pixels_of_class(&db.pool, id, 30).await;
    assert!(multi.len() >= 2, "{multi:?}");
    assert!(multi.iter().all(|(_, n, _)| *n > 0));
    // A hole leaves its pixels out, whichever way its rings run.
    let total = |rows: &[(String, i32, Option<Vec<u8>>)]| rows.iter().map(|r| r.1).sum::<i32>();
    let (outer_n, hole_n) = (
        total(&pixels_of_class(&db.pool, id, 40).await),
        total(&pixels_of_class(&db.pool, id, 50).await),
    );
    assert!(hole_n > 100 && outer_n > 3 * hole_n, "{outer_n} {hole_n}");
    for class in [60, 70] {
        assert_eq!(
            total(&pixels_of_class(&db.pool, id, class).await),
            outer_n - hole_n,
            "class {class}"
        );
    }
    // A point covers one pixel.
    let point_pixels = pixels_of_class(&db.pool, id, 80).await;
    assert_eq!(point_pixels.len(), 1);
    assert_eq!(point_pixels[0].1, 1);
}

#[tokio::test]
async fn the_split_names_a_class_labelled_in_too_few_blocks_in_its_response_the_summary_and_the_project_page()
 {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let pid = create_project(&app, "classification").await;
    let id: Uuid = pid.parse().unwrap();
    let specs = plan_and_acquire(&db.pool, &pid).await;
    assert_eq!(specs.len(), 20);

    // Water in one window only; forest and crops alternate over the other 19.
    let import = |water: usize| {
        let mut csv = String::from("window_id,class\n");
        for (i, w) in specs.iter().enumerate() {
            let class = if i < water {
                "water"
            } else {
                ["forest", "crops"][i % 2]
            };
            csv.push_str(&format!("{},{class}\n", w.id));
        }
        csv
    };
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import?mode=replace"),
        "text/csv",
        import(1),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    let (s, r) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/labels/split"),
        Some(json!({"block_size": 1, "seed": 3})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    // The water window's split is the only one that has water.
    let water_split: String = sqlx::query_scalar(
        "select split from window_split where project_id = $1 and version = $2 and window_id = $3",
    )
    .bind(id)
    .bind(r["version"].as_i64().unwrap() as i32)
    .bind(&specs[0].id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let lacking: Vec<&str> = ["train", "val", "test"]
        .into_iter()
        .filter(|s| *s != water_split)
        .collect();
    assert_eq!(
        r["missing"],
        json!([{"class_id": 0, "class_name": "water", "splits": lacking}]),
        "{r:#}"
    );
    let (_, summary) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/labels/summary"),
        None,
    )
    .await;
    assert_eq!(summary["missing"], r["missing"], "{summary:#}");
    let names: HashMap<&str, &str> = HashMap::from([
        ("train", "training"),
        ("val", "validation"),
        ("test", "test"),
    ]);
    let (s, _, page) = download(&app, &format!("/projects/{pid}")).await;
    assert_eq!(s, StatusCode::OK);
    let sentence = format!(
        "Class 0 (water) has no window in the {} and {} splits",
        names[lacking[0]], names[lacking[1]]
    );
    assert!(page.contains(&sentence), "no {sentence:?} in the page");
    assert!(page.contains("Labels and split"));

    // Water in three windows (three blocks): every class reaches every split, whatever the seed.
    let (s, r) = upload(
        &app,
        &format!("/api/v1/projects/{pid}/labels/import?mode=replace"),
        "text/csv",
        import(3),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r:#}");
    for seed in 0..5 {
        let (s, r) = call(
            &app,
            "POST",
            &format!("/api/v1/projects/{pid}/labels/split"),
            Some(json!({"block_size": 1, "seed": seed})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{r:#}");
        assert_eq!(r["missing"], json!([]), "seed {seed}: {r:#}");
    }
    let (_, summary) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/labels/summary"),
        None,
    )
    .await;
    assert_eq!(summary["missing"], json!([]), "{summary:#}");
    for c in summary["classes"].as_array().unwrap() {
        for split in ["train", "val", "test"] {
            assert!(c["windows"][split].as_i64().unwrap() > 0, "{c:#}");
        }
    }
    let (_, _, page) = download(&app, &format!("/projects/{pid}")).await;
    assert!(!page.contains("has no window in"));
    assert!(
        page.contains("Split (version"),
        "the split counts are shown"
    );

    // The OpenAPI document describes the report.
    let (_, doc) = call(&app, "GET", "/api/openapi.json", None).await;
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [("SplitReport", "missing"), ("Summary", "missing")] {
        assert!(
            schemas[schema]["properties"][field].is_object(),
            "{schema}.{field} missing from OpenAPI"
        );
    }
    for field in ["class_id", "class_name", "splits"] {
        assert!(
            schemas["MissingClass"]["properties"][field].is_object(),
            "{field}"
        );
    }
}

#[tokio::test]
async fn edits_are_versions_that_refuse_a_stale_base_and_bad_features_as_a_whole() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let pid = create_project(&app, "segmentation").await;
    let specs = plan_and_acquire(&db.pool, &pid).await;
    let w = inner_window(&specs).wgs84_bounds;
    let (cx, cy) = ((w[0] + w[2]) / 2.0, (w[1] + w[3]) / 2.0);
    let uri = format!("/api/v1/projects/{pid}/labels/edit");
    let fc = |features: Vec<Value>| json!({"type": "FeatureCollection", "features": features});

    // The first edit starts from version 0 (no labels yet).
    let (s, set) = call(
        &app,
        "POST",
        &uri,
        Some(json!({"base_version": 0, "add": fc(vec![point(cx, cy, json!({"class_id": 1}))])})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{set}");
    assert_eq!(set["version"], 1);
    assert_eq!(set["added"], 1);

    // A second editor who still sees version 0 is refused, and nothing changes.
    let (s, r) = call(
        &app,
        "POST",
        &uri,
        Some(json!({"base_version": 0, "add": fc(vec![point(cx, cy, json!({"class_id": 2}))])})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    assert_eq!(r["error"]["code"], "conflict");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("version 1"),
        "{r}"
    );

    // One edit removes the point and adds a polygon: one version, both changes.
    let (_, export) = call(&app, "GET", &format!("/api/v1/projects/{pid}/labels"), None).await;
    let point_id = export["features"][0]["id"].as_i64().unwrap();
    let d = (w[2] - w[0]) / 8.0;
    let (s, set) = call(
        &app,
        "POST",
        &uri,
        Some(json!({"base_version": 1, "remove": [point_id],
                    "add": fc(vec![square(cx - d, cy - d, cx + d, cy + d, json!({"class_id": 2}))])})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{set}");
    assert_eq!(
        (
            set["version"].as_i64(),
            set["added"].as_i64(),
            set["removed"].as_i64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(set["labels"], 1);
    let (_, export) = call(&app, "GET", &format!("/api/v1/projects/{pid}/labels"), None).await;
    assert_eq!(export["label_set_version"], 2);
    assert_eq!(export["features"][0]["geometry"]["type"], "Polygon");
    assert_eq!(export["features"][0]["properties"]["class_id"], 2);

    // A feature with a problem refuses the whole edit; so does an edit that changes nothing, or a
    // label that is not there.
    for body in [
        json!({"base_version": 2, "add": fc(vec![point(cx, cy, json!({"class_id": 1})), point(cx, cy, json!({"class_id": 9}))])}),
        json!({"base_version": 2}),
        json!({"base_version": 2, "remove": [point_id]}),
    ] {
        let (s, r) = call(&app, "POST", &uri, Some(body.clone())).await;
        assert!(
            s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::CONFLICT,
            "{body}: {s} {r}"
        );
    }
    let (_, export) = call(&app, "GET", &format!("/api/v1/projects/{pid}/labels"), None).await;
    assert_eq!(
        export["label_set_version"], 2,
        "a refused edit made a version"
    );
    let (_, doc) = call(&app, "GET", "/api/openapi.json", None).await;
    assert!(doc["paths"]["/api/v1/projects/{id}/labels/edit"].is_object());
}
