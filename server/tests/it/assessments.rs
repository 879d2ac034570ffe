//! Accuracy assessment of a published class map over the real API, database, object store and GDAL:
//! a stratified sample is drawn from the class raster, a viewer labels it blind, and the report gives
//! mapped and error-adjusted areas with confidence intervals, as JSON and CSV; another organisation
//! sees none of it.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use groundwork_server::AppState;
use groundwork_server::testing::{member_token, with_bearer};
use groundwork_store::DEFAULT_ORG_ID;
use groundwork_store::accounts::{self, Role};
use groundwork_store::audit::Who;
use groundwork_store::testing::TestDb;
use serde_json::{Value, json};
use std::sync::Arc;

/// Map columns 0–69 are class 1 ("forest"), 70–99 class 2; the first row is nodata.
const W: usize = 100;
const SPLIT: usize = 70;

#[tokio::test]
async fn a_class_map_is_assessed_blind_and_reported_with_error_adjusted_areas() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let mut state = AppState::new(db.pool.clone());
    state.objects = Some(store);
    let project = crate::common::project(&db.pool, "p").await;
    let data: Vec<u8> = (0..W * W)
        .map(|i| {
            if i / W == 0 {
                255
            } else if i % W < SPLIT {
                1
            } else {
                2
            }
        })
        .collect();
    // A class name a spreadsheet would run as a formula.
    let output = crate::common::class_map(
        &db.pool,
        dir.path(),
        project,
        &data,
        W,
        json!([{"id": 1, "name": "forest", "color": "#00aa00"}, {"id": 2, "name": "=cleared", "color": "#aa0000"}]),
    )
    .await;
    let member = with_bearer(
        groundwork_server::router(state.clone()),
        &member_token(&db.pool, DEFAULT_ORG_ID, Role::Member)
            .await
            .unwrap(),
    )
    .unwrap();
    let viewer = with_bearer(
        groundwork_server::router(state.clone()),
        &member_token(&db.pool, DEFAULT_ORG_ID, Role::Viewer)
            .await
            .unwrap(),
    )
    .unwrap();

    // Bad designs are refused; a viewer cannot draw a sample.
    let uri = format!("/api/v1/outputs/{}/assessments", output.id);
    let (s, _) = crate::common::call(&member, "POST", &uri, Some(json!({"target_se": 0.5}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = crate::common::call(&viewer, "POST", &uri, Some(json!({}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, a) = crate::common::call(
        &member,
        "POST",
        &uri,
        Some(json!({"seed": 42, "min_per_class": 30, "target_se": 0.05})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    let strata = a["strata"].as_array().unwrap();
    assert_eq!(strata.len(), 2);
    assert_eq!(strata[0]["mapped_pixels"], 99 * SPLIT);
    assert_eq!(strata[1]["mapped_pixels"], 99 * (W - SPLIT));
    let sizes: Vec<u64> = strata
        .iter()
        .map(|s| s["sample_size"].as_u64().unwrap())
        .collect();
    assert!(sizes.iter().all(|&n| n >= 30), "{sizes:?}");
    assert_eq!(a["samples"].as_u64().unwrap(), sizes.iter().sum::<u64>());

    // Blind by default: no map class, no inclusion probability.
    let (s, blind) = crate::common::call(
        &viewer,
        "GET",
        &format!("/api/v1/assessments/{id}/samples"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let blind = blind.as_array().unwrap().clone();
    assert_eq!(blind.len() as u64, sizes.iter().sum::<u64>());
    assert!(
        blind
            .iter()
            .all(|u| u.get("map_class").is_none() && u.get("inclusion_probability").is_none())
    );
    // A reviewer cannot lift the blind, nor read a partial report (it would reveal map classes).
    let (s, _) = crate::common::call(
        &viewer,
        "GET",
        &format!("/api/v1/assessments/{id}/samples?blind=false"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, partial) = crate::common::call(
        &viewer,
        "GET",
        &format!("/api/v1/assessments/{id}/report"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{partial}");
    let (_, open) = crate::common::call(
        &member,
        "GET",
        &format!("/api/v1/assessments/{id}/samples?blind=false"),
        None,
    )
    .await;
    let open = open.as_array().unwrap().clone();
    // The units are in random order, not grouped by class.
    let classes: Vec<i64> = open
        .iter()
        .map(|u| u["map_class"].as_i64().unwrap())
        .collect();
    let switches = classes.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches > 2, "{classes:?}");

    // The reviewer (a viewer) labels: every fifth unit mapped as forest is really cleared land; the
    // rest agree with the map; one unit is unsure.
    let mut truth = Vec::new();
    for u in &open {
        let n = u["id"].as_i64().unwrap();
        let map = u["map_class"].as_i64().unwrap();
        let reference = if map == 1 && n % 5 == 0 { 2 } else { map };
        let body = if n == 1 {
            json!({"unsure": true})
        } else {
            truth.push((map, reference));
            json!({"reference": reference})
        };
        let (s, b) = crate::common::call(
            &viewer,
            "PUT",
            &format!("/api/v1/assessments/{id}/samples/{n}"),
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    }
    let (s, _) = crate::common::call(
        &viewer,
        "PUT",
        &format!("/api/v1/assessments/{id}/samples/2"),
        Some(json!({"reference": 9})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = crate::common::call(
        &viewer,
        "PUT",
        &format!("/api/v1/assessments/{id}/samples/99999"),
        Some(json!({"reference": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, r) = crate::common::call(
        &viewer,
        "GET",
        &format!("/api/v1/assessments/{id}/report"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["complete"], true);
    assert_eq!(r["unsure"], 1);
    let forest = &r["classes"][0];
    let cleared = &r["classes"][1];
    // Mapped areas: pixels × 0.01 ha.
    assert!((forest["mapped_ha"].as_f64().unwrap() - 69.3).abs() < 1e-9);
    assert!((cleared["mapped_ha"].as_f64().unwrap() - 29.7).abs() < 1e-9);
    // The map under-states cleared land: its error-adjusted area is larger, forest's smaller, the
    // total is kept, and each comes with an interval.
    let area = |c: &Value| c["area_ha"]["estimate"].as_f64().unwrap();
    assert!(area(cleared) > 29.7 && area(forest) < 69.3, "{r}");
    assert!((area(cleared) + area(forest) - 99.0).abs() < 1e-9);
    assert!(cleared["area_ha"]["half_width"].as_f64().unwrap() > 0.0);
    // User's accuracy of forest is the share of its units labelled forest; cleared is always right.
    let forest_units: Vec<_> = truth.iter().filter(|(m, _)| *m == 1).collect();
    let agree =
        forest_units.iter().filter(|(_, r)| *r == 1).count() as f64 / forest_units.len() as f64;
    assert!((forest["users_accuracy"]["estimate"].as_f64().unwrap() - agree).abs() < 1e-12);
    assert_eq!(cleared["users_accuracy"]["estimate"], 1.0);
    let oa = r["overall_accuracy"]["estimate"].as_f64().unwrap();
    assert!(oa > 0.7 && oa < 1.0, "{oa}");
    let matrix_total: f64 = r["error_matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .sum();
    assert!((matrix_total - 1.0).abs() < 1e-12);

    // CSV: a row per class and one overall; the formula-looking name is neutralised.
    let req = Request::builder()
        .uri(format!("/api/v1/assessments/{id}/report.csv"))
        .body(Body::empty())
        .unwrap();
    let (s, headers, csv) = crate::common::send(&viewer, req).await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers["cache-control"].contains("private"), "{headers:?}");
    assert!(headers["content-type"].starts_with("text/csv"));
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("class_id,class,mapped_ha,area_ha,area_ci95_ha"));
    assert!(lines[2].starts_with("2,'=cleared,29.7,"), "{csv}");
    assert!(lines[3].contains("overall accuracy"));

    // Another organisation sees none of it.
    let other = accounts::create_org(&db.pool, &Who::cli(), "other", None)
        .await
        .unwrap();
    let stranger = with_bearer(
        groundwork_server::router(state.clone()),
        &member_token(&db.pool, other.id, Role::Owner).await.unwrap(),
    )
    .unwrap();
    for uri in [
        format!("/api/v1/assessments/{id}"),
        format!("/api/v1/assessments/{id}/samples"),
        format!("/api/v1/assessments/{id}/report"),
        format!("/api/v1/outputs/{}/assessments", output.id),
    ] {
        let (s, _) = crate::common::call(&stranger, "GET", &uri, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
    }
    let (s, _) = crate::common::call(
        &stranger,
        "PUT",
        &format!("/api/v1/assessments/{id}/samples/2"),
        Some(json!({"reference": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = crate::common::call(
        &stranger,
        "POST",
        &format!("/api/v1/outputs/{}/assessments", output.id),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
