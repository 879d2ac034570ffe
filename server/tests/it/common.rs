//! Helpers shared by the server's integration tests: an owner's API token, and requests to the
//! in-process router.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use groundwork_store::PgPool;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A user who owns the default organisation, and a write token of theirs.
pub async fn owner_token(pool: &PgPool) -> String {
    use groundwork_store::{DEFAULT_ORG_ID, accounts, audit::Who};
    let who = Who::cli();
    let user = accounts::create_user(pool, &who, "owner@example.org", "a long password")
        .await
        .unwrap();
    accounts::add_member(pool, &who, DEFAULT_ORG_ID, user.id, accounts::Role::Owner)
        .await
        .unwrap();
    accounts::create_api_token(
        pool,
        &who,
        user.id,
        DEFAULT_ORG_ID,
        "tests",
        accounts::Scope::Write,
        None,
    )
    .await
    .unwrap()
    .0
}

/// Sends `req` to `app`: the status, the headers (a value that is not text reads as empty) and the body.
pub async fn send(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, HashMap<String, String>, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, bytes)
}

/// A JSON request to `app`: the status and the body as JSON (`Null` when it is empty or not JSON).
pub async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let (s, _, b) = send(app, req).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// A small Sentinel-2 segmentation project of the default organisation.
pub async fn project(pool: &PgPool, name: &str) -> uuid::Uuid {
    use groundwork_store::projects::{self, ProjectFields};
    use groundwork_types::{Modality, ModelSize, Task};
    let f = ProjectFields {
        name: name.into(),
        description: String::new(),
        aoi: serde_json::json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [0.1, 0.0], [0.1, 0.1], [0.0, 0.0]]]}),
        bbox: [0.0, 0.0, 0.1, 0.1],
        area_km2: 61.0,
        start: "2024-01-01".parse().unwrap(),
        end: "2024-12-31".parse().unwrap(),
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
    projects::create(pool, groundwork_store::DEFAULT_ORG_ID, &f)
        .await
        .unwrap()
        .id
}

/// A run of one `noop` step in `project` (something for rows to belong to); returns the run.
pub async fn noop_run(pool: &PgPool, project: uuid::Uuid) -> groundwork_store::jobs::RunWithSteps {
    use groundwork_store::jobs;
    jobs::create_run(
        pool,
        groundwork_store::DEFAULT_ORG_ID,
        project,
        &[jobs::NewStep::new(
            "s",
            "noop".parse().unwrap(),
            serde_json::json!({}),
            "cpu",
        )],
        None,
    )
    .await
    .unwrap()
}

/// A published class map of `project`: `data` (`size` × `size` pixels of 10 m in EPSG:32633 from
/// (500000, 5000000), nodata 255) written as a COG under `objects` (a local object store's folder)
/// and recorded with `legend`.
pub async fn class_map(
    pool: &PgPool,
    objects: &std::path::Path,
    project: uuid::Uuid,
    data: &[u8],
    size: usize,
    legend: Value,
) -> groundwork_store::outputs::Output {
    use groundwork_store::DEFAULT_ORG_ID;
    use groundwork_store::outputs::{self, NewOutput};
    let run = noop_run(pool, project).await;
    let key = format!(
        "orgs/{DEFAULT_ORG_ID}/projects/{project}/runs/{}/combine/s/class.tif",
        run.run.id
    );
    let path = objects.join(&key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    groundwork_imagery::demo::write_cog::<u8>(
        &path,
        data,
        size,
        size,
        [500_000.0, 10.0, 0.0, 5_000_000.0, 0.0, -10.0],
        32633,
        Some(255.0),
    )
    .unwrap();
    let side = i32::try_from(size).unwrap();
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
            width: side,
            height: side,
            bands: 1,
            bbox: [15.0, 45.1, 15.02, 45.11],
            bounds_3857: [0.0, 0.0, 1.0, 1.0],
            min_zoom: 0,
            max_zoom: 14,
            classes: legend,
            stats: serde_json::json!({}),
            lineage: serde_json::json!({}),
            footprint: None,
        },
    )
    .await
    .unwrap()
}

/// A Sentinel-2 window tensor file as the acquisition writes it: `bands(row, column)` per pixel (the
/// 12 bands in model order) at every time step, one monthly time step starting at each of `months`
/// (1–12) of 2024, the mask saying present everywhere.
pub fn s2_window_file(
    spec: &groundwork_imagery::WindowSpec,
    bands: impl Fn(usize, usize) -> [f32; 12],
    months: &[u32],
) -> Vec<u8> {
    use groundwork_imagery::composite::{Composited, MASK_PRESENT, TimeBin};
    use groundwork_imagery::output::{ModalityTensor, WindowTensors, encode_safetensors};
    let n = spec.size as usize;
    let t = months.len();
    let mut data = Vec::with_capacity(n * n * t * 12);
    for row in 0..n {
        for col in 0..n {
            for _ in 0..t {
                data.extend(bands(row, col));
            }
        }
    }
    let day = |m: u32| chrono::NaiveDate::from_ymd_opt(2024, m, 1).unwrap();
    encode_safetensors(
        &WindowTensors {
            window: spec.clone(),
            bins: months
                .iter()
                .map(|&m| TimeBin {
                    start: day(m),
                    end: day(m) + chrono::Days::new(27),
                })
                .collect(),
            modalities: vec![ModalityTensor {
                modality: groundwork_types::Modality::Sentinel2L2a,
                composite: Composited {
                    data,
                    mask: vec![MASK_PRESENT; n * n * t * 3],
                },
                scenes: vec![Vec::new(); t],
            }],
        },
        None,
    )
    .unwrap()
}

/// Moves `project` to a new organisation (the caller's organisation then no longer owns it); returns
/// the new organisation's id.
pub async fn move_to_another_org(pool: &PgPool, project: uuid::Uuid) -> uuid::Uuid {
    let other = uuid::Uuid::new_v4();
    sqlx::query("insert into org (id, name) values ($1, 'other')")
        .bind(other)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("update project set org_id = $1 where id = $2")
        .bind(other)
        .bind(project)
        .execute(pool)
        .await
        .unwrap();
    other
}

/// Waits (up to 5 minutes) until run `run` has finished; returns it with its steps.
pub async fn wait_run(app: &axum::Router, run: &str) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let (_, r) = call(app, "GET", &format!("/api/v1/runs/{run}"), None).await;
        if ["succeeded", "failed", "cancelled"].contains(&r["state"].as_str().unwrap_or("")) {
            return r;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "the run did not finish: {r:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
