//! The REST API on a real database: every bad input is a 4xx JSON error, never a 500.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use groundwork_server::{AppState, router};
use groundwork_store::testing::TestDb;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::owner_token;

struct Api {
    app: axum::Router,
    _db: TestDb,
}

impl Api {
    async fn new() -> Self {
        let db = TestDb::new().await.unwrap();
        let mut state = AppState::new(db.pool.clone());
        state.max_aoi_km2 = 10_000.0;
        let token = owner_token(&db.pool).await;
        Self {
            app: groundwork_server::testing::with_bearer(router(state), &token).unwrap(),
            _db: db,
        }
    }

    async fn raw(
        &self,
        method: &str,
        uri: &str,
        body: Option<&str>,
        content_type: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let text = body.map(|b| b.to_string());
        self.raw(method, uri, text.as_deref(), Some("application/json"))
            .await
    }
}

fn square(size: f64) -> Value {
    json!({"type": "Polygon", "coordinates": [[[36.0, -1.0], [36.0 + size, -1.0], [36.0 + size, -1.0 + size], [36.0, -1.0 + size], [36.0, -1.0]]]})
}

fn project(aoi: Value) -> Value {
    json!({
        "name": "Nandi crops",
        "aoi": aoi,
        "start": "2024-01-01",
        "end": "2024-12-31",
        "task": "segmentation",
        "classes": [{"id": 0, "name": "maize", "color": "#ffcc00"}, {"id": 1, "name": "tea", "color": "#00aa44"}],
        "modalities": ["sentinel2_l2a", "sentinel1"],
        "model_size": "nano",
        "patch_size": 4,
        "window_size": 64
    })
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body:#}");
    assert_eq!(body["error"]["code"], code, "{body:#}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body:#}"
    );
}

#[tokio::test]
async fn projects_can_be_created_read_listed_updated_and_deleted() {
    let api = Api::new().await;
    let (s, created) = api
        .call("POST", "/api/v1/projects", Some(project(square(0.1))))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created:#}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["org_id"], "00000000-0000-0000-0000-000000000001");
    assert!((created["area_km2"].as_f64().unwrap() - 123.0).abs() < 2.0);
    assert_eq!(created["bbox"], json!([36.0, -1.0, 36.1, -0.9]));

    let (s, got) = api
        .call("GET", &format!("/api/v1/projects/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["name"], "Nandi crops");

    let (s, patched) = api
        .call(
            "PATCH",
            &format!("/api/v1/projects/{id}"),
            Some(json!({"name": "Renamed", "patch_size": 8})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{patched:#}");
    assert_eq!(
        (patched["name"].as_str(), patched["patch_size"].as_i64()),
        (Some("Renamed"), Some(8))
    );
    assert_eq!(patched["modalities"], json!(["sentinel2_l2a", "sentinel1"]));

    // Invalid patches are refused and change nothing.
    let (s, body) = api
        .call(
            "PATCH",
            &format!("/api/v1/projects/{id}"),
            Some(json!({"end": "2023-01-01"})),
        )
        .await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // A period longer than the model's 12 monthly time steps is refused when the project is edited
    // (and created), not later at acquisition.
    let (s, body) = api
        .call(
            "PATCH",
            &format!("/api/v1/projects/{id}"),
            Some(json!({"start": "2023-06-01", "end": "2024-06-30"})),
        )
        .await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["error"]["details"][0]["field"], "end", "{body:#}");
    assert!(
        body["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("spans 13 months"),
        "{body:#}"
    );
    let mut long = project(square(0.05));
    long["end"] = json!("2025-01-01");
    let (s, body) = api.call("POST", "/api/v1/projects", Some(long)).await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // The maps' licence: CC-BY-4.0 unless chosen; an SPDX identifier, or `other` with a link.
    assert_eq!(created["license"], "CC-BY-4.0");
    assert_eq!(created["license_url"], Value::Null);
    for bad in [
        json!({"license": "other"}),
        json!({"license": "not a licence"}),
        json!({"license": "CC0-1.0", "license_url": "javascript:alert(1)"}),
    ] {
        let (s, body) = api
            .call(
                "PATCH",
                &format!("/api/v1/projects/{id}"),
                Some(bad.clone()),
            )
            .await;
        assert_error(
            s,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        let field = body["error"]["details"][0]["field"].as_str().unwrap();
        assert!(field.starts_with("license"), "{bad}: {body:#}");
    }
    let (s, patched) = api
        .call(
            "PATCH",
            &format!("/api/v1/projects/{id}"),
            Some(json!({"license": "other", "license_url": "https://example.org/terms"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{patched:#}");
    assert_eq!(
        (patched["license"].as_str(), patched["license_url"].as_str()),
        (Some("other"), Some("https://example.org/terms"))
    );

    // Training from random weights: refused unless the owner allows it; the choice is kept and
    // shown, and a change is audited.
    assert_eq!(created["allow_random_init"], false, "{created:#}");
    let (s, patched) = api
        .call(
            "PATCH",
            &format!("/api/v1/projects/{id}"),
            Some(json!({"allow_random_init": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{patched:#}");
    assert_eq!(patched["allow_random_init"], true);
    assert_eq!(patched["license"], "other", "other fields are kept");
    let (_, got) = api
        .call("GET", &format!("/api/v1/projects/{id}"), None)
        .await;
    assert_eq!(got["allow_random_init"], true);
    let (_, audit) = api.call("GET", "/api/v1/audit?limit=200", None).await;
    assert!(
        audit["items"].as_array().unwrap().iter().any(|e| {
            e["action"] == "project.update" && e["details"]["allow_random_init"] == true
        }),
        "{audit:#}"
    );
    let (s, body) = api
        .call(
            "PATCH",
            &format!("/api/v1/projects/{id}"),
            Some(json!({"allow_random_init": "yes"})),
        )
        .await;
    assert!(s.is_client_error(), "{s}: {body:#}");
    // The project page's settings form: an unchecked box (the form says it showed one) turns it off,
    // a checked one on, and a form without the box leaves it as it is.
    let settings = format!("/projects/{id}/settings");
    let base = "name=Renamed&description=&start=2024-01-01&end=2024-12-31&license=other\
                &license_url=https%3A%2F%2Fexample.org%2Fterms";
    for (extra, want) in [
        ("&allow_random_init_shown=1", false),
        ("&allow_random_init_shown=1&allow_random_init=true", true),
        ("", true),
    ] {
        let body = format!("{base}{extra}");
        let (s, page) = api
            .raw(
                "POST",
                &settings,
                Some(&body),
                Some("application/x-www-form-urlencoded"),
            )
            .await;
        assert!(s.is_redirection(), "{extra}: {s} {page}");
        let (_, got) = api
            .call("GET", &format!("/api/v1/projects/{id}"), None)
            .await;
        assert_eq!(got["allow_random_init"], want, "{extra}");
    }
    let mut allowed = project(square(0.05));
    allowed["allow_random_init"] = json!(true);
    let (s, body) = api.call("POST", "/api/v1/projects", Some(allowed)).await;
    assert_eq!(s, StatusCode::CREATED, "{body:#}");
    assert_eq!(body["allow_random_init"], true);
    let (s, _) = api
        .call(
            "DELETE",
            &format!("/api/v1/projects/{}", body["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert!(s.is_success(), "{s}");

    // Cursor pagination.
    for i in 0..4 {
        let mut p = project(square(0.05));
        p["name"] = json!(format!("p{i}"));
        assert_eq!(
            api.call("POST", "/api/v1/projects", Some(p)).await.0,
            StatusCode::CREATED
        );
    }
    let (_, page1) = api.call("GET", "/api/v1/projects?limit=2", None).await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
    let (_, page2) = api
        .call(
            "GET",
            &format!("/api/v1/projects?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    let (_, page3) = api
        .call(
            "GET",
            &format!(
                "/api/v1/projects?limit=2&cursor={}",
                page2["next_cursor"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(page3["items"].as_array().unwrap().len(), 1);
    assert!(page3["next_cursor"].is_null());
    let mut names: Vec<String> = [&page1, &page2, &page3]
        .iter()
        .flat_map(|p| {
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_owned())
        })
        .collect();
    names.sort();
    assert_eq!(names, ["Renamed", "p0", "p1", "p2", "p3"]);

    let (s, _) = api
        .call("DELETE", &format!("/api/v1/projects/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = api
        .call("GET", &format!("/api/v1/projects/{id}"), None)
        .await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "not_found");
}

/// A ring of the square of side `size` degrees with its south-west corner at (`west`, `south`),
/// counter-clockwise unless `clockwise`.
fn ring(west: f64, south: f64, size: f64, clockwise: bool) -> Value {
    let (e, n) = (west + size, south + size);
    let mut r = vec![[west, south], [e, south], [e, n], [west, n], [west, south]];
    if clockwise {
        r.reverse();
    }
    json!(r)
}

#[tokio::test]
async fn a_clockwise_aoi_is_accepted_with_the_area_of_its_counter_clockwise_twin_and_stored_counter_clockwise()
 {
    let api = Api::new().await;
    // 0.1° × 0.1° at the equator: about 123 km² either way round.
    let mut areas = Vec::new();
    for clockwise in [false, true] {
        let aoi = json!({"type": "Polygon", "coordinates": [ring(0.0, 0.0, 0.1, clockwise)]});
        let (s, p) = api
            .call("POST", "/api/v1/projects", Some(project(aoi)))
            .await;
        assert_eq!(s, StatusCode::CREATED, "clockwise {clockwise}: {p:#}");
        let area = p["area_km2"].as_f64().unwrap();
        assert!((area - 123.6).abs() < 1.0, "clockwise {clockwise}: {area}");
        assert_eq!(p["bbox"], json!([0.0, 0.0, 0.1, 0.1]));
        // Stored with its exterior ring counter-clockwise.
        assert_eq!(
            p["aoi"],
            json!({"type": "Polygon", "coordinates": [ring(0.0, 0.0, 0.1, false)]}),
            "clockwise {clockwise}"
        );
        let (_, got) = api
            .call(
                "GET",
                &format!("/api/v1/projects/{}", p["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(got["aoi"], p["aoi"]);
        areas.push(area);
    }
    assert!((areas[0] - areas[1]).abs() < 1e-6, "{areas:?}");

    // A MultiPolygon with one part each way round measures both parts, as does a Feature wrapping a
    // clockwise polygon (stored as the bare geometry).
    let aoi = json!({"type": "MultiPolygon", "coordinates": [
        [ring(0.0, 0.0, 0.1, true)], [ring(1.0, 0.0, 0.1, false)]]});
    let (s, p) = api
        .call("POST", "/api/v1/projects", Some(project(aoi)))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p:#}");
    assert!(
        (p["area_km2"].as_f64().unwrap() - 2.0 * areas[0]).abs() < 0.1,
        "{p:#}"
    );
    assert_eq!(
        p["aoi"]["coordinates"][0],
        json!([ring(0.0, 0.0, 0.1, false)])
    );
    let aoi = json!({"type": "Feature", "properties": {"name": "field"},
        "geometry": {"type": "Polygon", "coordinates": [ring(0.0, 0.0, 0.1, true)]}});
    let (s, p) = api
        .call("POST", "/api/v1/projects", Some(project(aoi)))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p:#}");
    assert_eq!(
        p["aoi"],
        json!({"type": "Polygon", "coordinates": [ring(0.0, 0.0, 0.1, false)]})
    );
}

#[tokio::test]
async fn an_aoi_with_a_hole_has_the_holes_area_subtracted_in_either_orientation() {
    let api = Api::new().await;
    let area = |aoi: Value| {
        let api = &api;
        async move {
            let (s, p) = api
                .call("POST", "/api/v1/projects", Some(project(aoi)))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{p:#}");
            p
        }
    };
    let outer = area(json!({"type": "Polygon", "coordinates": [ring(0.0, 0.0, 0.1, false)]})).await;
    let hole =
        area(json!({"type": "Polygon", "coordinates": [ring(0.02, 0.02, 0.05, false)]})).await;
    let want = outer["area_km2"].as_f64().unwrap() - hole["area_km2"].as_f64().unwrap();
    // About 123.6 - 30.9 km².
    assert!((want - 92.7).abs() < 1.0, "{want}");
    for (outer_cw, hole_cw) in [(false, true), (false, false), (true, false), (true, true)] {
        let p = area(json!({"type": "Polygon", "coordinates": [
            ring(0.0, 0.0, 0.1, outer_cw), ring(0.02, 0.02, 0.05, hole_cw)]}))
        .await;
        let got = p["area_km2"].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-3,
            "outer cw {outer_cw}, hole cw {hole_cw}: {got} vs {want}"
        );
        // Stored exterior counter-clockwise, hole clockwise.
        assert_eq!(
            p["aoi"]["coordinates"],
            json!([ring(0.0, 0.0, 0.1, false), ring(0.02, 0.02, 0.05, true)])
        );
    }
}

#[tokio::test]
async fn bad_project_input_gets_a_clear_4xx() {
    let api = Api::new().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown field",
            {
                let mut p = project(square(0.1));
                p["colour"] = json!("red");
                p
            },
            "colour",
        ),
        (
            "wrong type",
            {
                let mut p = project(square(0.1));
                p["patch_size"] = json!("four");
                p
            },
            "patch_size",
        ),
        (
            "unknown task",
            {
                let mut p = project(square(0.1));
                p["task"] = json!("detection");
                p
            },
            "task",
        ),
        (
            "unknown modality",
            {
                let mut p = project(square(0.1));
                p["modalities"] = json!(["modis"]);
                p
            },
            "modalities",
        ),
        (
            "unknown size",
            {
                let mut p = project(square(0.1));
                p["model_size"] = json!("huge");
                p
            },
            "model_size",
        ),
        (
            "end before start",
            {
                let mut p = project(square(0.1));
                p["end"] = json!("2023-06-01");
                p
            },
            "end",
        ),
        (
            "bad date",
            {
                let mut p = project(square(0.1));
                p["start"] = json!("2024-13-01");
                p
            },
            "start",
        ),
        (
            "unclosed ring",
            project(
                json!({"type": "Polygon", "coordinates": [[[36, -1], [36.1, -1], [36.1, -0.9], [36, -0.9]]]}),
            ),
            "aoi",
        ),
        (
            "too few positions",
            project(json!({"type": "Polygon", "coordinates": [[[36, -1], [36.1, -1], [36, -1]]]})),
            "aoi",
        ),
        (
            "self-intersecting",
            project(
                json!({"type": "Polygon", "coordinates": [[[36, -1], [36.1, -0.9], [36.1, -1], [36, -0.9], [36, -1]]]}),
            ),
            "aoi",
        ),
        (
            "not a polygon",
            project(json!({"type": "LineString", "coordinates": [[36, -1], [36.1, -1]]})),
            "aoi",
        ),
        ("too large", project(square(2.0)), "aoi"),
        (
            "out of range",
            project(
                json!({"type": "Polygon", "coordinates": [[[36, -1], [190, -1], [36.1, -0.9], [36, -1]]]}),
            ),
            "aoi",
        ),
        (
            "patch size",
            {
                let mut p = project(square(0.1));
                p["patch_size"] = json!(9);
                p
            },
            "patch_size",
        ),
        (
            "window not divisible",
            {
                let mut p = project(square(0.1));
                p["patch_size"] = json!(3);
                p
            },
            "window_size",
        ),
        (
            "bad colour",
            {
                let mut p = project(square(0.1));
                p["classes"][0]["color"] = json!("yellow");
                p
            },
            "classes[0].color",
        ),
        (
            "duplicate class",
            {
                let mut p = project(square(0.1));
                p["classes"][1]["id"] = json!(0);
                p
            },
            "classes[1].id",
        ),
        (
            "missing name",
            {
                let mut p = project(square(0.1));
                p.as_object_mut().unwrap().remove("name");
                p
            },
            "name",
        ),
    ];
    for (what, body, field) in cases {
        let (s, resp) = api.call("POST", "/api/v1/projects", Some(body)).await;
        assert_error(
            s,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        let text = resp["error"].to_string();
        assert!(
            text.contains(field),
            "{what}: expected the error to name {field}: {resp:#}"
        );
    }
    // Syntax errors and content types.
    let (s, resp) = api
        .raw(
            "POST",
            "/api/v1/projects",
            Some("{\"name\": "),
            Some("application/json"),
        )
        .await;
    assert_error(s, &resp, StatusCode::BAD_REQUEST, "invalid_json");
    let (s, resp) = api
        .raw("POST", "/api/v1/projects", Some("{}"), Some("text/plain"))
        .await;
    assert_error(
        s,
        &resp,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // Missing resources, malformed ids, unknown routes and methods.
    let (s, resp) = api
        .call(
            "GET",
            "/api/v1/projects/00000000-0000-0000-0000-00000000dead",
            None,
        )
        .await;
    assert_error(s, &resp, StatusCode::NOT_FOUND, "not_found");
    let (s, resp) = api.call("GET", "/api/v1/projects/not-a-uuid", None).await;
    assert_error(s, &resp, StatusCode::NOT_FOUND, "not_found");
    let (s, resp) = api.call("GET", "/api/v1/nothing-here", None).await;
    assert_error(s, &resp, StatusCode::NOT_FOUND, "not_found");
    let (s, resp) = api.call("PUT", "/api/v1/projects", None).await;
    assert_error(
        s,
        &resp,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (s, resp) = api.call("GET", "/api/v1/projects?limit=0", None).await;
    assert_error(s, &resp, StatusCode::BAD_REQUEST, "invalid_query");
    let (s, resp) = api.call("GET", "/api/v1/projects?cursor=zzz", None).await;
    assert_error(s, &resp, StatusCode::BAD_REQUEST, "invalid_query");
    // Nothing was stored.
    let (_, list) = api.call("GET", "/api/v1/projects", None).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn runs_steps_and_workers_over_http() {
    let api = Api::new().await;
    let (_, p) = api
        .call("POST", "/api/v1/projects", Some(project(square(0.1))))
        .await;
    let pid = p["id"].as_str().unwrap();
    let run_body = json!({"steps": [
        {"name": "a", "kind": "sleep", "args": {"seconds": 30}},
        {"name": "b", "kind": "noop", "depends_on": ["a"]}
    ]});
    let (s, run) = api
        .call(
            "POST",
            &format!("/api/v1/projects/{pid}/runs"),
            Some(run_body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
    assert_eq!(run["state"], "queued");
    assert_eq!(run["steps"][1]["depends_on"], json!(["a"]));
    let run_id = run["id"].as_str().unwrap();
    let (s, got) = api
        .call("GET", &format!("/api/v1/runs/{run_id}"), None)
        .await;
    assert_eq!(
        (s, got["steps"].as_array().unwrap().len()),
        (StatusCode::OK, 2)
    );
    let (_, runs) = api
        .call("GET", &format!("/api/v1/projects/{pid}/runs"), None)
        .await;
    assert_eq!(runs["items"][0]["id"], run["id"]);

    // Cancel the queued first step: the second is cancelled with it; both can be retried.
    let a = run["steps"][0]["id"].as_str().unwrap();
    let (s, cancelled) = api
        .call("POST", &format!("/api/v1/steps/{a}/cancel"), None)
        .await;
    assert_eq!(
        (s, cancelled["state"].as_str()),
        (StatusCode::ACCEPTED, Some("cancelled"))
    );
    let (s, again) = api
        .call("POST", &format!("/api/v1/steps/{a}/cancel"), None)
        .await;
    assert_error(s, &again, StatusCode::CONFLICT, "conflict");
    let (_, got) = api
        .call("GET", &format!("/api/v1/runs/{run_id}"), None)
        .await;
    assert_eq!(got["state"], "cancelled");
    assert_eq!(got["steps"][1]["state"], "cancelled");
    let (s, retried) = api
        .call("POST", &format!("/api/v1/steps/{a}/retry"), None)
        .await;
    assert_eq!(
        (s, retried["state"].as_str()),
        (StatusCode::ACCEPTED, Some("queued"))
    );

    // Idempotency keys.
    let req = |key: &str| {
        Request::builder()
            .method("POST")
            .uri(format!("/api/v1/projects/{pid}/runs"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(run_body.to_string()))
            .unwrap()
    };
    let one = api
        .app
        .clone()
        .oneshot(req("k"))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let two = api
        .app
        .clone()
        .oneshot(req("k"))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let one: Value = serde_json::from_slice(&one).unwrap();
    let two: Value = serde_json::from_slice(&two).unwrap();
    assert_eq!(one["id"], two["id"]);

    // Bad run requests.
    for (body, field) in [
        (
            json!({"steps": [{"name": "a", "kind": "teleport"}]}),
            "steps[0].kind",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "noop", "queue": "tpu"}]}),
            "steps[0].queue",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "noop", "depends_on": ["zz"]}]}),
            "steps",
        ),
        (
            json!({"steps": [{"name": "a", "kind": "noop", "depends_on": ["a"]}]}),
            "steps",
        ),
        (json!({"steps": []}), "steps"),
    ] {
        let (s, resp) = api
            .call("POST", &format!("/api/v1/projects/{pid}/runs"), Some(body))
            .await;
        assert_error(
            s,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert!(resp["error"].to_string().contains(field), "{resp:#}");
    }
    let (s, resp) = api
        .call(
            "POST",
            "/api/v1/projects/00000000-0000-0000-0000-00000000dead/runs",
            Some(run_body),
        )
        .await;
    assert_error(s, &resp, StatusCode::NOT_FOUND, "not_found");
    let (s, resp) = api
        .call(
            "POST",
            "/api/v1/steps/00000000-0000-0000-0000-00000000dead/cancel",
            None,
        )
        .await;
    assert_error(s, &resp, StatusCode::NOT_FOUND, "not_found");

    // Workers and pools.
    let (s, resp) = api
        .call(
            "POST",
            "/api/v1/workers/00000000-0000-0000-0000-00000000dead/drain",
            None,
        )
        .await;
    assert_error(s, &resp, StatusCode::NOT_FOUND, "not_found");
    let (s, workers) = api.call("GET", "/api/v1/workers", None).await;
    assert_eq!((s, workers["items"].clone()), (StatusCode::OK, json!([])));
    let (s, _) = api.call("GET", "/api/v1/pools", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn health_readiness_and_openapi() {
    let api = Api::new().await;
    assert_eq!(api.call("GET", "/healthz", None).await.0, StatusCode::OK);
    let (s, ready) = api.call("GET", "/readyz", None).await;
    assert_eq!(
        (s, ready["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    let (s, doc) = api.call("GET", "/api/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/api/v1/projects",
        "/api/v1/projects/{id}/runs",
        "/api/v1/steps/{id}/cancel",
        "/api/v1/pools",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
}

#[tokio::test]
async fn the_generic_run_endpoint_gives_pipeline_kinds_to_administrators_only_with_checked_arguments()
 {
    let api = Api::new().await;
    let (_, p) = api
        .call("POST", "/api/v1/projects", Some(project(square(0.1))))
        .await;
    let pid = p["id"].as_str().unwrap();
    let runs = format!("/api/v1/projects/{pid}/runs");
    // A member of the same organisation may start test kinds, not pipeline kinds.
    let member = groundwork_server::testing::member_token(
        &api._db.pool,
        groundwork_store::DEFAULT_ORG_ID,
        groundwork_store::accounts::Role::Member,
    )
    .await
    .unwrap();
    let as_member = Api {
        app: groundwork_server::testing::with_bearer(
            router(AppState::new(api._db.pool.clone())),
            &member,
        )
        .unwrap(),
        _db: TestDb::new().await.unwrap(),
    };
    let train = json!({"steps": [{"name": "t", "kind": "train", "args": {}}]});
    let (s, resp) = as_member.call("POST", &runs, Some(train.clone())).await;
    assert_error(s, &resp, StatusCode::FORBIDDEN, "forbidden");
    let (s, _) = as_member
        .call(
            "POST",
            &runs,
            Some(json!({"steps": [{"name": "n", "kind": "noop"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // An administrator's arguments are checked with the kind's typed struct and limits: no project,
    // no file on a worker, no out-of-range setting.
    let other_project = uuid::Uuid::new_v4();
    for (kind, args) in [
        ("train", json!({"project_id": other_project})),
        ("evaluate", json!({"project_id": other_project})),
        ("acquire_summary", json!({"project_id": other_project})),
        ("combine", json!({"project_id": other_project})),
        ("publish", json!({"project_id": other_project})),
        (
            "acquire",
            json!({"stac": "https://example.org", "project_id": other_project}),
        ),
        (
            "predict",
            json!({"epsg": 32633, "block": 1, "block_column": 0, "block_row": 0,
                           "model": {"kind": "checkpoint", "path": "/etc", "outputs": 2}}),
        ),
        ("train", json!({"epochs": 100_000})),
        ("sleep", json!({"seconds": 1e9})),
    ] {
        let body = json!({"steps": [{"name": "x", "kind": kind, "args": args}]});
        let (s, resp) = api.call("POST", &runs, Some(body)).await;
        assert_error(
            s,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(
            resp["error"]["details"][0]["field"], "steps[0].args",
            "{kind}: {resp:#}"
        );
    }
    let (s, resp) = api.call("POST", &runs, Some(train)).await;
    assert_eq!(s, StatusCode::CREATED, "{resp:#}");
}
