//! Label suggestions over HTTP: a `suggest` run needs acquired imagery, its points are read back in rank
//! order with what the user made of each, and another organisation's project is a 404 throughout.

use axum::http::StatusCode;
use groundwork_server::AppState;
use groundwork_store::suggestions::{self, NewSuggestion, Reason};
use groundwork_store::testing::TestDb;
use serde_json::json;
use uuid::Uuid;

use crate::common::{call, project};

#[tokio::test]
async fn suggestions_need_imagery_are_read_in_rank_order_and_stay_in_their_organisation() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let p = project(&db.pool, "shore").await;
    let base = format!("/api/v1/projects/{p}/suggestions");

    // Nothing yet; bad settings are field errors; no imagery is a 409 that says what to do.
    let (s, r) = call(&app, "GET", &base, None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r, json!({"latest": null, "pending_run_id": null}));
    let (s, r) = call(
        &app,
        "POST",
        &base,
        Some(json!({"count": 0, "max_windows": 20_000})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    let fields: Vec<&str> = r["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["count", "max_windows"]);
    let (s, r) = call(&app, "POST", &base, Some(json!({"colour": "red"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    let (s, r) = call(&app, "POST", &base, Some(json!({}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("acquire imagery first"),
        "{r}"
    );

    // With an acquired window, a run of one `suggest` step starts and shows as pending.
    sqlx::query(
        "insert into project_window (project_id, id, epsg, crs, size, resolution, grid_column, grid_row, \
             geotransform, utm_bounds, bbox_west, bbox_south, bbox_east, bbox_north, geometry, status) \
         values ($1, '32631_10m_64px_0_0', 32631, 'EPSG:32631', 64, 10, 0, 0, '[0, 10, 0, 0, 0, -10]', \
                 '[0, -640, 640, 0]', 0, 0, 0.01, 0.01, '{\"type\": \"Point\", \"coordinates\": [0, 0]}', 'acquired')",
    )
    .bind(p)
    .execute(&db.pool)
    .await
    .unwrap();
    let (s, run) = call(&app, "POST", &base, Some(json!({"count": 5}))).await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    assert_eq!(run["steps"][0]["kind"], "suggest");
    assert_eq!(run["steps"][0]["args"]["count"], 5);
    let run_id: Uuid = run["id"].as_str().unwrap().parse().unwrap();
    let (_, r) = call(&app, "GET", &base, None).await;
    assert_eq!(r["pending_run_id"], run["id"], "{r}");
    assert_eq!(r["latest"], json!(null));

    // The step's points (as it records them under its claim), once it has succeeded.
    let point = |n: i32| NewSuggestion {
        window_id: "32631_10m_64px_0_0".into(),
        pixel_row: n,
        pixel_col: 2 * n,
        lon: 0.001 * f64::from(n),
        lat: 0.002,
        reason: Reason::Uncertain,
        predicted_class: Some(10),
        margin: Some(0.1 * f64::from(n)),
    };
    let mut tx = db.pool.begin().await.unwrap();
    suggestions::record(&mut tx, run_id, p, &[point(1), point(2), point(3)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("update step set state = 'succeeded', finished_at = now() where run_id = $1")
        .bind(run_id)
        .execute(&db.pool)
        .await
        .unwrap();
    let (_, r) = call(&app, "GET", &base, None).await;
    assert_eq!(r["pending_run_id"], json!(null), "{r}");
    assert_eq!(r["latest"]["run_id"], run["id"]);
    let items = r["latest"]["items"].as_array().unwrap();
    assert_eq!(
        items
            .iter()
            .map(|i| i["rank"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(items[1]["pixel_col"], 4);
    assert_eq!(items[1]["reason"], "uncertain");
    assert!(items.iter().all(|i| i["status"] == "open"));

    // The user skips the second point; an unknown rank or status is refused.
    let (s, r) = call(
        &app,
        "PATCH",
        &format!("{base}/{run_id}/2"),
        Some(json!({"status": "skipped"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "skipped");
    let (s, _) = call(
        &app,
        "PATCH",
        &format!("{base}/{run_id}/9"),
        Some(json!({"status": "skipped"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &app,
        "PATCH",
        &format!("{base}/{run_id}/1"),
        Some(json!({"status": "maybe"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, r) = call(&app, "GET", &base, None).await;
    assert_eq!(r["latest"]["items"][1]["status"], "skipped");

    // Another organisation's project: 404 for every route, and nothing changes.
    crate::common::move_to_another_org(&db.pool, p).await;
    for (method, uri, body) in [
        ("GET", base.clone(), None),
        ("POST", base.clone(), Some(json!({}))),
        (
            "PATCH",
            format!("{base}/{run_id}/1"),
            Some(json!({"status": "unsure"})),
        ),
    ] {
        let (s, r) = call(&app, method, &uri, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {uri}: {r}");
    }
    let (_, doc) = call(&app, "GET", "/api/openapi.json", None).await;
    for path in [
        "/api/v1/projects/{id}/suggestions",
        "/api/v1/projects/{id}/suggestions/{run}/{rank}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
}
