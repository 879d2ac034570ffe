//! Hostile input costs little and never gives a 500: NUL characters, bodies that are not objects,
//! huge geometries, over-size bodies, out-of-range pages and tiles, slow clients and too many requests.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use groundwork_server::{AppState, router};
use groundwork_store::testing::TestDb;
use serde_json::{Value, json};

use crate::common::{call, owner_token, send};

async fn api(db: &TestDb) -> axum::Router {
    let token = owner_token(&db.pool).await;
    groundwork_server::testing::with_bearer(router(AppState::new(db.pool.clone())), &token).unwrap()
}

/// A request with a raw body and content type: the status and the body as JSON.
async fn raw(
    app: &axum::Router,
    method: &str,
    uri: &str,
    ct: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap();
    let (s, _, b) = send(app, req).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn project(name: &str, aoi: Value) -> Value {
    json!({
        "name": name,
        "aoi": aoi,
        "start": "2024-01-01",
        "end": "2024-12-31",
        "task": "classification",
        "classes": [{"id": 0, "name": "maize", "color": "#ffcc00"}, {"id": 1, "name": "tea", "color": "#00aa44"}],
        "modalities": ["sentinel2_l2a"],
        "model_size": "nano",
        "patch_size": 4,
        "window_size": 64
    })
}

fn square() -> Value {
    json!({"type": "Polygon", "coordinates": [[[36.0, -1.0], [36.1, -1.0], [36.1, -0.9], [36.0, -0.9], [36.0, -1.0]]]})
}

/// A closed ring of `n` distinct vertices around (36.05, -0.95), short enough to write compactly.
fn circle(n: usize) -> Value {
    let mut ring: Vec<Value> = (0..n)
        .map(|i| {
            #[expect(clippy::cast_precision_loss, reason = "a test's small counts")]
            let t = i as f64 / n as f64 * std::f64::consts::TAU;
            let r = |v: f64| (v * 1e5).round() / 1e5;
            json!([r(36.05 + 0.04 * t.cos()), r(-0.95 + 0.04 * t.sin())])
        })
        .collect();
    ring.push(ring[0].clone());
    json!({"type": "Polygon", "coordinates": [ring]})
}

fn assert_nul_refused(status: StatusCode, body: &Value, field: &str) {
    assert!(status.is_client_error(), "{status} {body:#}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("NUL"), "{body:#}");
    assert!(message.contains(field), "{field}: {body:#}");
}

#[tokio::test]
async fn a_nul_in_the_sign_in_email_is_a_422_naming_the_field() {
    let db = TestDb::new().await.unwrap();
    let app = router(AppState::new(db.pool.clone()));
    let (s, body) = call(
        &app,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"email": "owner\u{0}@example.org", "password": "a long password"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body:#}");
    assert_nul_refused(s, &body, "email");
    assert_eq!(body["error"]["details"][0]["field"], "email", "{body:#}");
}

#[tokio::test]
async fn a_nul_in_a_project_or_class_name_is_a_422_naming_the_field() {
    let db = TestDb::new().await.unwrap();
    let app = api(&db).await;
    let (s, body) = call(
        &app,
        "POST",
        "/api/v1/projects",
        Some(project("Nandi\u{0}", square())),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body:#}");
    assert_nul_refused(s, &body, "name");

    let mut p = project("Nandi", square());
    p["classes"][1]["name"] = json!("t\u{0}a");
    let (s, body) = call(&app, "POST", "/api/v1/projects", Some(p)).await;
    assert_nul_refused(s, &body, "classes[1].name");

    let (s, created) = call(
        &app,
        "POST",
        "/api/v1/projects",
        Some(project("Nandi", square())),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created:#}");
    let id = created["id"].as_str().unwrap();
    let (s, body) = call(
        &app,
        "PATCH",
        &format!("/api/v1/projects/{id}"),
        Some(json!({"description": "\u{0}"})),
    )
    .await;
    assert_nul_refused(s, &body, "description");
    // A JSON key holding a NUL is refused too (not a 500 from the database).
    let (s, body) = raw(
        &app,
        "POST",
        "/api/v1/worker-tokens",
        "application/json",
        br#"{"na\u0000me": "x"}"#.to_vec(),
    )
    .await;
    assert_nul_refused(s, &body, "na");
}

#[tokio::test]
async fn label_files_with_a_nul_are_refused_as_a_whole() {
    let db = TestDb::new().await.unwrap();
    let app = api(&db).await;
    let (s, created) = call(
        &app,
        "POST",
        "/api/v1/projects",
        Some(project("Nandi", square())),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created:#}");
    let uri = format!(
        "/api/v1/projects/{}/labels/import",
        created["id"].as_str().unwrap()
    );

    let csv = b"lon,lat,class\n36.05,-0.95,mai\0ze\n36.06,-0.95,tea\n".to_vec();
    let (s, body) = raw(&app, "POST", &uri, "text/csv", csv).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body:#}");
    assert_eq!(body["error"]["code"], "invalid_file", "{body:#}");
    assert_nul_refused(s, &body, "text may not contain NUL characters");

    // A NUL in a label's geometry member would reach a jsonb column.
    let geojson = br#"{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"class": "tea"},
        "geometry": {"type": "Point", "coordinates": [36.05, -0.95], "note": "\u0000"}}]}"#
        .to_vec();
    let (s, body) = raw(&app, "POST", &uri, "application/geo+json", geojson).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body:#}");
    assert_nul_refused(s, &body, "text may not contain NUL characters");
}

#[tokio::test]
async fn a_nul_in_a_form_is_a_400_before_any_page_handler() {
    let db = TestDb::new().await.unwrap();
    let app = router(AppState::new(db.pool.clone()));
    let (s, body) = raw(
        &app,
        "POST",
        "/login",
        "application/x-www-form-urlencoded",
        b"email=owner%00%40example.org&password=a+long+password".to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body:#}");
    assert_nul_refused(s, &body, "email");
}

#[tokio::test]
async fn json_bodies_that_are_not_objects_are_4xx() {
    let db = TestDb::new().await.unwrap();
    let app = api(&db).await;
    for uri in [
        "/api/v1/worker-tokens",
        "/api/v1/tokens",
        "/api/v1/projects",
        "/api/v1/auth/login",
    ] {
        for body in ["[]", "[null]", "[\"x\"]", "\"x\"", "3", "null", "true"] {
            let (s, v) = raw(
                &app,
                "POST",
                uri,
                "application/json",
                body.as_bytes().to_vec(),
            )
            .await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{uri} {body}: {v:#}");
            assert_eq!(
                v["error"]["code"], "validation_failed",
                "{uri} {body}: {v:#}"
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_huge_aoi_is_refused_quickly_while_the_server_keeps_answering() {
    let db = TestDb::new().await.unwrap();
    let app = api(&db).await;
    let body = project("Huge", circle(50_000)).to_string().into_bytes();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = tokio::spawn({
        let (app, stop) = (app.clone(), stop.clone());
        async move {
            let mut worst = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let (s, _) = call(&app, "GET", "/healthz", None).await;
                assert_eq!(s, StatusCode::OK);
                worst = worst.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            worst
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let (s, v) = raw(&app, "POST", "/api/v1/projects", "application/json", body).await;
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst = probe.await.unwrap();
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v:#}");
    assert_eq!(
        v["error"]["details"][0]["field"], "aoi.coordinates",
        "{v:#}"
    );
    assert!(took < Duration::from_secs(1), "refusing took {took:?}");
    assert!(
        worst < Duration::from_millis(100),
        "/healthz took {worst:?}"
    );
}

#[tokio::test]
async fn label_features_with_too_many_vertices_are_rejected_rows() {
    let db = TestDb::new().await.unwrap();
    let app = api(&db).await;
    let (s, created) = call(
        &app,
        "POST",
        "/api/v1/projects",
        Some(project("Nandi", square())),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created:#}");
    let uri = format!(
        "/api/v1/projects/{}/labels/import",
        created["id"].as_str().unwrap()
    );
    let small = circle(20);
    let file = json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"class": "tea"}, "geometry": circle(3_000)},
        {"type": "Feature", "properties": {"class": "maize"}, "geometry": small},
    ]});
    let (s, body) = raw(
        &app,
        "POST",
        &uri,
        "application/geo+json",
        file.to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body:#}");
    assert_eq!(body["imported"], 1, "{body:#}");
    assert_eq!(body["errors"][0]["row"], 0, "{body:#}");
    assert!(
        body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("2000 vertices"),
        "{body:#}"
    );

    // More rows than one import may hold: the file is refused as a whole.
    let mut csv = String::from("lon,lat,class\n");
    for _ in 0..100_001 {
        csv.push_str("36.05,-0.95,tea\n");
    }
    let (s, body) = raw(&app, "POST", &uri, "text/csv", csv.into_bytes()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body:#}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 100000 labels"),
        "{body:#}"
    );
}

#[tokio::test]
async fn an_over_size_json_body_is_a_413_with_the_error_shape_and_label_files_keep_their_cap() {
    let db = TestDb::new().await.unwrap();
    let app = api(&db).await;
    let mut p = project("Big", square());
    p["description"] = json!("x".repeat(3 * 1024 * 1024));
    let (s, body) = call(&app, "POST", "/api/v1/projects", Some(p)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{body:#}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body:#}");

    // A label file over the JSON cap is still read (and judged on its content).
    let (s, created) = call(
        &app,
        "POST",
        "/api/v1/projects",
        Some(project("Nandi", square())),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created:#}");
    let uri = format!(
        "/api/v1/projects/{}/labels/import",
        created["id"].as_str().unwrap()
    );
    let csv = format!(
        "lon,lat,class,note\n36.05,-0.95,tea,{}\n",
        "x".repeat(3 * 1024 * 1024)
    );
    let (s, body) = raw(&app, "POST", &uri, "text/csv", csv.into_bytes()).await;
    assert_eq!(s, StatusCode::CREATED, "{body:#}");
}

#[tokio::test]
async fn pages_and_tiles_out_of_range_are_4xx() {
    let db = TestDb::new().await.unwrap();
    let app = api(&db).await;
    for limit in ["0", "201", "-1", "99999999999999999999"] {
        let (s, body) = call(
            &app,
            "GET",
            &format!("/api/v1/projects?limit={limit}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "limit={limit}: {body:#}");
    }
    let id = uuid::Uuid::new_v4();
    for (z, x, y) in [
        ("25", "0", "0"),
        ("3", "8", "0"),
        ("3", "0", "8"),
        ("0", "1", "0"),
        ("300", "0", "0"),
    ] {
        let (s, body) = call(
            &app,
            "GET",
            &format!("/api/v1/outputs/{id}/tiles/{z}/{x}/{y}.png"),
            None,
        )
        .await;
        assert!(s.is_client_error(), "{z}/{x}/{y}: {s} {body:#}");
    }
}

/// A request body that never arrives.
fn stalled_body() -> Body {
    Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>())
}

#[tokio::test]
async fn a_stalled_request_times_out_with_the_error_shape_and_excess_requests_wait_for_a_slot() {
    let db = TestDb::new().await.unwrap();
    let mut state = AppState::new(db.pool.clone());
    state.request_timeout = Duration::from_secs(1);
    state.max_concurrent_requests = 1;
    let app = router(state);

    let stalled = || {
        Request::builder()
            .method("POST")
            .uri("/api/v1/auth/login")
            .header("content-type", "application/json")
            .body(stalled_body())
            .unwrap()
    };
    let started = Instant::now();
    let (s, _, b) = send(&app, stalled()).await;
    let body: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body:#}");
    assert_eq!(body["error"]["code"], "timeout", "{body:#}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // While the one slot is taken, another request waits; when the slot frees, it is served.
    let holder = tokio::spawn({
        let app = app.clone();
        async move { send(&app, stalled()).await.0 }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waited = Instant::now();
    let (s, _) = call(&app, "GET", "/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        waited.elapsed() >= Duration::from_millis(400),
        "{:?}",
        waited.elapsed()
    );
    assert_eq!(holder.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    // With the slot free, a request is served at once.
    let (s, _) = call(&app, "GET", "/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn text_the_database_refuses_converts_to_a_422_not_a_500() {
    use groundwork_store::{accounts, audit::Who};
    let db = TestDb::new().await.unwrap();
    let e = accounts::create_user(
        &db.pool,
        &Who::cli(),
        "nul\u{0}@example.org",
        "a long password",
    )
    .await
    .unwrap_err();
    let api = groundwork_server::api::error::ApiError::from(e);
    assert_eq!(api.status, StatusCode::UNPROCESSABLE_ENTITY, "{api:?}");
    assert!(api.message.contains("NUL"), "{api:?}");
}
