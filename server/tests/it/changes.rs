//! Change maps between two class maps of a project over the real API, database, object store and
//! GDAL: the from→to counts are the exact pixel counts of a constructed pair of maps, each class's net
//! change is the difference of the two maps' pixel counts times the pixel area, nodata in either map
//! is left out, the change raster holds each pixel's pair; a later map on another grid is resampled;
//! viewers read but do not create, another project's map or a map that is not a class map is
//! refused, and another organisation finds nothing. The pages (the map page's form, the change map's
//! page) are checked through the same router.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use groundwork_server::AppState;
use groundwork_server::testing::{member_token, with_bearer};
use groundwork_store::DEFAULT_ORG_ID;
use groundwork_store::accounts::{self, Role};
use groundwork_store::audit::Who;
use groundwork_store::outputs::{self, NewOutput, Output};
use groundwork_store::testing::TestDb;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Side of the maps, pixels of 10 m (0.01 ha).
const N: usize = 60;
const NODATA: u8 = 255;
const ORIGIN: [f64; 6] = [500_000.0, 10.0, 0.0, 5_000_000.0, 0.0, -10.0];

fn legend() -> Value {
    json!([{"id": 1, "name": "forest", "color": "#1b9e77"}, {"id": 2, "name": "cropland", "color": "#d95f02"},
           {"id": 3, "name": "water", "color": "#386cb0"}])
}

/// A class map of `project` (`data` is `width` pixels wide, on the grid `gt` of EPSG:32633, nodata
/// 255) written as a COG under `objects` and recorded as the publish step records it.
async fn class_map(
    pool: &groundwork_store::PgPool,
    objects: &std::path::Path,
    project: uuid::Uuid,
    data: &[u8],
    width: usize,
    gt: [f64; 6],
) -> Output {
    let run = crate::common::noop_run(pool, project).await;
    let key = format!(
        "orgs/{DEFAULT_ORG_ID}/projects/{project}/runs/{}/combine/s/class.tif",
        run.run.id
    );
    let path = objects.join(&key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let height = data.len() / width;
    groundwork_imagery::demo::write_cog::<u8>(
        &path,
        data,
        width,
        height,
        gt,
        32633,
        Some(f64::from(NODATA)),
    )
    .unwrap();
    outputs::upsert(
        pool,
        &NewOutput {
            org_id: DEFAULT_ORG_ID,
            project_id: project,
            run_id: run.run.id,
            kind: "class".into(),
            utm_key: key.clone(),
            web_key: key,
            epsg: 32633,
            width: i32::try_from(width).unwrap(),
            height: i32::try_from(height).unwrap(),
            bands: 1,
            bbox: [15.0, 45.1, 15.02, 45.11],
            bounds_3857: [0.0, 0.0, 1.0, 1.0],
            min_zoom: 0,
            max_zoom: 14,
            classes: legend(),
            stats: json!({}),
            lineage: json!({}),
            footprint: None,
        },
    )
    .await
    .unwrap()
}

/// Pixels per class (nodata left out), as the published `stats.areas_ha` counts them.
fn class_counts(path: &std::path::Path) -> BTreeMap<u8, u64> {
    groundwork_imagery::assessment::count_classes(path)
        .unwrap()
        .pixels
}

/// The earlier map: forest left of column 35, cropland right of it, water in a 10 × 10 block; the
/// first row is nodata.
fn earlier() -> Vec<u8> {
    (0..N * N)
        .map(|i| match (i / N, i % N) {
            (0, _) => NODATA,
            (r, c) if (20..30).contains(&r) && (40..50).contains(&c) => 3,
            (_, c) if c < 35 => 1,
            _ => 2,
        })
        .collect()
}

/// The later map: cropland spread to column 25, the water block dried out to cropland, a new pond
/// of 6 × 5 in the forest; the first row is nodata too.
fn later() -> Vec<u8> {
    (0..N * N)
        .map(|i| match (i / N, i % N) {
            (0, _) => NODATA,
            (r, c) if (5..11).contains(&r) && (3..8).contains(&c) => 3,
            (_, c) if c < 25 => 1,
            _ => 2,
        })
        .collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

#[tokio::test]
async fn two_class_maps_give_exact_from_to_counts_and_net_change() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let mut state = AppState::new(db.pool.clone());
    state.objects = Some(store);
    let project = crate::common::project(&db.pool, "p").await;
    let (a_data, b_data) = (earlier(), later());
    let a = class_map(&db.pool, dir.path(), project, &a_data, N, ORIGIN).await;
    let b = class_map(&db.pool, dir.path(), project, &b_data, N, ORIGIN).await;
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
    let uri = format!("/api/v1/projects/{project}/changes");

    // A viewer reads but does not make change maps.
    let (s, _) = crate::common::call(
        &viewer,
        "POST",
        &uri,
        Some(json!({"from": a.id, "to": b.id})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, c) = crate::common::call(
        &member,
        "POST",
        &uri,
        Some(json!({"from": a.id, "to": b.id})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["from"], json!(a.id));
    assert_eq!(c["to"], json!(b.id));
    assert_eq!(c["resampled"], false);
    assert_eq!(c["pixel_area_m2"], 100.0);
    let classes: Vec<u8> = c["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| u8::try_from(u(&k["id"])).unwrap())
        .collect();
    assert_eq!(classes, vec![1, 2, 3]);
    assert_eq!(c["classes"][2]["name"], "water");

    // The from→to counts are the exact pixel counts, by brute force.
    let mut expected = [[0u64; 3]; 3];
    for (&x, &y) in a_data.iter().zip(&b_data) {
        if x != NODATA && y != NODATA {
            expected[usize::from(x) - 1][usize::from(y) - 1] += 1;
        }
    }
    for (i, row) in expected.iter().enumerate() {
        for (j, &n) in row.iter().enumerate() {
            assert_eq!(u(&c["matrix"][i][j]), n, "{} → {}: {c}", i + 1, j + 1);
            let area = c["areas_ha"][i][j].as_f64().unwrap();
            assert!((area - n as f64 * 0.01).abs() < 1e-9, "{area}");
        }
    }
    assert_eq!(u(&c["matrix"][0][1]), 59 * 10, "forest → cropland");
    assert_eq!(u(&c["matrix"][2][1]), 10 * 10, "water → cropland");
    assert_eq!(u(&c["matrix"][0][2]), 6 * 5, "forest → water");
    assert_eq!(u(&c["nodata_pixels"]), N as u64);

    // Each class's net change is the difference of the two maps' pixel counts (as the published
    // areas count them) times the pixel area.
    let objects = dir.path();
    let before = class_counts(&objects.join(&a.utm_key));
    let after = class_counts(&objects.join(&b.utm_key));
    for (i, k) in classes.iter().enumerate() {
        let n = &c["net_change"][i];
        assert_eq!(n["class"], json!(k));
        let diff =
            after.get(k).copied().unwrap_or(0) as i64 - before.get(k).copied().unwrap_or(0) as i64;
        assert_eq!(n["net_pixels"].as_i64().unwrap(), diff, "class {k}: {n}");
        assert!(
            (n["net_ha"].as_f64().unwrap() - diff as f64 * 0.01).abs() < 1e-9,
            "{n}"
        );
        // …and the difference of the matrix's column and row totals.
        let column: u64 = (0..3).map(|r| expected[r][i]).sum();
        let row: u64 = expected[i].iter().sum();
        assert_eq!(diff, column as i64 - row as i64);
        assert!((n["from_ha"].as_f64().unwrap() - row as f64 * 0.01).abs() < 1e-9);
        assert!((n["to_ha"].as_f64().unwrap() - column as f64 * 0.01).abs() < 1e-9);
    }
    let total: u64 = expected.iter().flatten().sum();
    let same: u64 = (0..3).map(|i| expected[i][i]).sum();
    assert!((c["compared_ha"].as_f64().unwrap() - total as f64 * 0.01).abs() < 1e-9);
    assert!((c["changed_ha"].as_f64().unwrap() - (total - same) as f64 * 0.01).abs() < 1e-9);
    let pairs = c["pairs"].as_array().unwrap();
    let listed: Vec<(u64, u64, u64)> = pairs
        .iter()
        .map(|p| (u(&p["from"]), u(&p["to"]), u(&p["pixels"])))
        .collect();
    let mut want = Vec::new();
    for (i, row) in expected.iter().enumerate() {
        for (j, &n) in row.iter().enumerate() {
            if i != j && n > 0 {
                want.push((i as u64 + 1, j as u64 + 1, n));
            }
        }
    }
    assert_eq!(listed, want);

    // The change raster: each pixel's pair code, 0 unchanged, 65535 where either map has no data.
    let id = c["id"].as_str().unwrap().to_owned();
    let req = Request::builder()
        .uri(format!("/api/v1/changes/{id}/download.tif"))
        .body(Body::empty())
        .unwrap();
    let (s, headers, tif) = crate::common::send(&viewer, req).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        headers["content-type"].starts_with("image/tiff"),
        "{headers:?}"
    );
    assert!(headers["cache-control"].contains("private"), "{headers:?}");
    let local = dir.path().join("downloaded.tif");
    std::fs::write(&local, &tif).unwrap();
    let ds = gdal::Dataset::open(&local).unwrap();
    assert_eq!(ds.raster_size(), (N, N));
    assert_eq!(ds.geo_transform().unwrap(), ORIGIN);
    let codes = ds
        .rasterband(1)
        .unwrap()
        .read_as::<u16>((0, 0), (N, N), (N, N), None)
        .unwrap()
        .into_shape_and_vec()
        .1;
    let code_of: BTreeMap<(u8, u8), u16> = pairs
        .iter()
        .map(|p| {
            (
                (
                    u8::try_from(u(&p["from"])).unwrap(),
                    u8::try_from(u(&p["to"])).unwrap(),
                ),
                u16::try_from(u(&p["code"])).unwrap(),
            )
        })
        .collect();
    for (i, &code) in codes.iter().enumerate() {
        let (x, y) = (a_data[i], b_data[i]);
        let want = if x == NODATA || y == NODATA {
            u16::MAX
        } else if x == y {
            0
        } else {
            code_of[&(x, y)]
        };
        assert_eq!(code, want, "pixel {i}: {x} → {y}");
    }

    // Nodata of either map is left out: a later map whose last column is nodata.
    let mut c_data = b_data.clone();
    for r in 0..N {
        c_data[r * N + N - 1] = NODATA;
    }
    let c_map = class_map(&db.pool, dir.path(), project, &c_data, N, ORIGIN).await;
    let (s, c2) = crate::common::call(
        &member,
        "POST",
        &uri,
        Some(json!({"from": a.id, "to": c_map.id})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{c2}");
    assert_eq!(u(&c2["nodata_pixels"]), (N + N - 1) as u64);
    let compared: u64 = c2["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(u))
        .sum();
    assert_eq!(compared, total - (N as u64 - 1));
    assert_eq!(u(&c2["matrix"][1][1]), expected[1][1] - (N as u64 - 1));

    // A later map on another grid (3 pixels east, 2 south, larger) is resampled onto the earlier
    // map's grid, nearest neighbour: each earlier pixel meets the later pixel under its centre.
    let (dw, dh) = (N + 10, N + 10);
    let d_data: Vec<u8> = (0..dw * dh)
        .map(|i| if (i % dw) < 30 { 1 } else { 3 })
        .collect();
    let shifted = [500_030.0, 10.0, 0.0, 4_999_980.0, 0.0, -10.0];
    let d = class_map(&db.pool, dir.path(), project, &d_data, dw, shifted).await;
    let (s, c3) = crate::common::call(
        &member,
        "POST",
        &uri,
        Some(json!({"from": a.id, "to": d.id})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{c3}");
    assert_eq!(c3["resampled"], true);
    assert_eq!(
        (c3["width"].as_u64(), c3["height"].as_u64()),
        (Some(N as u64), Some(N as u64))
    );
    let mut resampled = [[0u64; 3]; 3];
    let mut nodata = 0;
    for r in 0..N {
        for col in 0..N {
            let x = a_data[r * N + col];
            let y = match (r.checked_sub(2), col.checked_sub(3)) {
                (Some(dr), Some(dc)) => d_data[dr * dw + dc],
                _ => NODATA,
            };
            if x == NODATA || y == NODATA {
                nodata += 1;
            } else {
                resampled[usize::from(x) - 1][usize::from(y) - 1] += 1;
            }
        }
    }
    for (i, row) in resampled.iter().enumerate() {
        for (j, &n) in row.iter().enumerate() {
            assert_eq!(u(&c3["matrix"][i][j]), n, "{} → {}", i + 1, j + 1);
        }
    }
    assert_eq!(u(&c3["nodata_pixels"]), nodata);

    // Reading: one, the project's list (newest first), by a viewer.
    let (s, one) =
        crate::common::call(&viewer, "GET", &format!("/api/v1/changes/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["matrix"], c["matrix"]);
    assert_eq!(one["net_change"], c["net_change"]);
    let (s, list) = crate::common::call(&viewer, "GET", &format!("{uri}?limit=2"), None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(list["items"][0]["id"], c3["id"]);
    assert!(list["next_cursor"].is_string());

    // Refused: the same map twice, a map of another project, a map that is not a class map, a map
    // too large to compare; each with its reason.
    let (s, e) = crate::common::call(
        &member,
        "POST",
        &uri,
        Some(json!({"from": a.id, "to": a.id})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let elsewhere = crate::common::project(&db.pool, "elsewhere").await;
    let foreign = class_map(&db.pool, dir.path(), elsewhere, &b_data, N, ORIGIN).await;
    let (s, e) = crate::common::call(
        &member,
        "POST",
        &uri,
        Some(json!({"from": a.id, "to": foreign.id})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["details"][0]["field"], "to");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another project"),
        "{e}"
    );
    let (s, _) = crate::common::call(
        &member,
        "POST",
        &format!("/api/v1/projects/{elsewhere}/changes"),
        Some(json!({"from": a.id, "to": b.id})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let run = crate::common::noop_run(&db.pool, project).await;
    let probability = outputs::upsert(
        &db.pool,
        &NewOutput {
            run_id: run.run.id,
            kind: "probability".into(),
            ..new_output_like(&b)
        },
    )
    .await
    .unwrap();
    let (s, e) = crate::common::call(
        &member,
        "POST",
        &uri,
        Some(json!({"from": a.id, "to": probability.id})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "not_a_class_map");
    let run = crate::common::noop_run(&db.pool, project).await;
    let huge = outputs::upsert(
        &db.pool,
        &NewOutput {
            run_id: run.run.id,
            width: 10_000,
            height: 10_000,
            ..new_output_like(&b)
        },
    )
    .await
    .unwrap();
    let (s, e) = crate::common::call(
        &member,
        "POST",
        &uri,
        Some(json!({"from": huge.id, "to": b.id})),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    assert_eq!(e["error"]["code"], "change_too_large");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("50000000"),
        "{e}"
    );
    let (s, _) = crate::common::call(
        &member,
        "POST",
        &uri,
        Some(json!({"from": a.id, "to": uuid::Uuid::now_v7()})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Every change map made is in the audit log.
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'change_map.create' and target_type = 'change_map'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 3);

    // Another organisation finds nothing, and cannot compare this organisation's maps.
    let other = accounts::create_org(&db.pool, &Who::cli(), "other", None)
        .await
        .unwrap();
    let stranger = with_bearer(
        groundwork_server::router(state.clone()),
        &member_token(&db.pool, other.id, Role::Owner).await.unwrap(),
    )
    .unwrap();
    for uri in [
        format!("/api/v1/changes/{id}"),
        format!("/api/v1/changes/{id}/download.tif"),
        format!("/api/v1/projects/{project}/changes"),
        format!("/changes/{id}"),
    ] {
        let (s, _) = crate::common::call(&stranger, "GET", &uri, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
    }
    let (s, _) = crate::common::call(
        &stranger,
        "POST",
        &uri,
        Some(json!({"from": a.id, "to": b.id})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The pages: the map page offers the project's other class maps and lists the change maps; the
    // form makes one and goes to its page, which shows the net change and the from→to table in
    // hectares with the classes' names and colours.
    let page = |app: axum::Router, uri: String| async move {
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let (s, _, body) = crate::common::send(&app, req).await;
        (s, String::from_utf8(body).unwrap())
    };
    let (s, html) = page(member.clone(), format!("/outputs/{}", b.id)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Compare with another map"), "{html}");
    assert!(html.contains(&format!("value=\"{}\"", a.id)));
    assert!(!html.contains(&format!("value=\"{}\"", probability.id)));
    assert!(html.contains(&format!("href=\"/changes/{id}\"")));
    let (_, html) = page(viewer.clone(), format!("/outputs/{}", b.id)).await;
    assert!(!html.contains("compare-maps-button") && html.contains(&format!("/changes/{id}")));
    let form = format!("other={}&order=earlier", c_map.id);
    let req = Request::builder()
        .method("POST")
        .uri(format!("/outputs/{}/changes", b.id))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    let (s, headers, _) = crate::common::send(&member, req).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let location = headers["location"].clone();
    assert!(location.starts_with("/changes/"), "{location}");
    let made: uuid::Uuid = location.trim_start_matches("/changes/").parse().unwrap();
    let (_, c4) =
        crate::common::call(&viewer, "GET", &format!("/api/v1/changes/{made}"), None).await;
    assert_eq!(
        (c4["from"].clone(), c4["to"].clone()),
        (json!(b.id), json!(c_map.id))
    );
    let (s, html) = page(viewer.clone(), format!("/changes/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Net change per class") && html.contains("From–to table (hectares)"));
    assert!(html.contains("#386cb0") && html.contains("water"));
    // Cropland gained 5.9 ha from forest and 1.0 ha from water.
    let cropland_gain = (c["net_change"][1]["net_ha"].as_f64().unwrap() * 10.0).round() / 10.0;
    assert!(cropland_gain > 0.0);
    assert!(html.contains(&format!("+{cropland_gain:.1}")), "{html}");
    assert!(html.contains(&format!("href=\"/api/v1/changes/{id}/download.tif\"")));
    // A refused form says why, in words.
    let req = Request::builder()
        .method("POST")
        .uri(format!("/outputs/{}/changes", b.id))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("other={}", foreign.id)))
        .unwrap();
    let (s, _, body) = crate::common::send(&member, req).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(String::from_utf8(body).unwrap().contains("another project"));
}

/// The fields of `o` as a new output row (its run and kind to be replaced).
fn new_output_like(o: &Output) -> NewOutput {
    NewOutput {
        org_id: o.org_id,
        project_id: o.project_id,
        run_id: o.run_id,
        kind: o.kind.clone(),
        utm_key: o.utm_key.clone(),
        web_key: o.web_key.clone(),
        epsg: o.epsg,
        width: o.width,
        height: o.height,
        bands: o.bands,
        bbox: o.bbox,
        bounds_3857: [0.0, 0.0, 1.0, 1.0],
        min_zoom: o.min_zoom,
        max_zoom: o.max_zoom,
        classes: o.classes.clone(),
        stats: o.stats.clone(),
        lineage: o.lineage.clone(),
        footprint: None,
    }
}
