//! Devices on a real database: a step goes only to a worker with the memory it needs; attempts are
//! counted by device kind and month, quotas count the installation's workers only, a run over its
//! quota is refused or held until an installation administrator approves it (through the real
//! `groundwork admin` commands), and finished steps teach the estimates their rate.
#![expect(clippy::unwrap_used, reason = "tests")]

use axum::http::StatusCode;
use groundwork_server::AppState;
use groundwork_store::jobs::{self, Claimed};
use groundwork_store::testing::TestDb;
use groundwork_store::usage::{self, Month};
use groundwork_store::windows;
use groundwork_store::workers::{self, Registration};
use groundwork_types::DeviceKind;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

use crate::common::call;

fn project() -> Value {
    json!({
        "name": "forests",
        "aoi": {"type": "Polygon", "coordinates": [[[15.0, 45.0], [15.05, 45.0], [15.05, 45.05], [15.0, 45.05], [15.0, 45.0]]]},
        "start": "2024-04-01",
        "end": "2024-07-31",
        "task": "segmentation",
        "classes": [{"id": 1, "name": "water", "color": "#0000ff"}, {"id": 2, "name": "forest", "color": "#00aa00"}],
        "modalities": ["sentinel2_l2a"],
        "model_size": "nano",
        "patch_size": 4,
        "window_size": 64
    })
}

async fn worker(pool: &sqlx::PgPool, device: &str, queues: &[&str]) -> Uuid {
    worker_with(pool, queues, json!({"candle_device": device})).await
}

async fn worker_with(pool: &sqlx::PgPool, queues: &[&str], capabilities: Value) -> Uuid {
    workers::register(
        pool,
        &Registration {
            name: "box".into(),
            pool: queues[0].into(),
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            concurrency: 1,
            capabilities,
            version: "test".into(),
        },
    )
    .await
    .unwrap()
}

/// Claims `step` for `worker`, moves the attempt's start `hours` into the past and completes it with
/// `output`.
async fn spend(pool: &sqlx::PgPool, step: Uuid, worker: Uuid, hours: f64, output: Value) {
    let c: Claimed = jobs::claim(pool, step, worker, Duration::from_secs(600), None)
        .await
        .unwrap()
        .expect("the step is claimed");
    sqlx::query(
        "update step_attempt set started_at = now() - $2 * interval '1 hour' where claim_id = $1",
    )
    .bind(c.claim_id)
    .bind(hours)
    .execute(pool)
    .await
    .unwrap();
    jobs::complete(pool, &c, &output, &[]).await.unwrap();
}

fn noop_steps(n: usize, queue: &str) -> Vec<jobs::NewStep> {
    (0..n)
        .map(|i| jobs::NewStep::new(format!("s{i}"), "noop".parse().unwrap(), json!({}), queue))
        .collect()
}

/// A database, an owner's router and a project of the default organisation.
async fn setup() -> (TestDb, axum::Router, Uuid) {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let (status, p) = call(&app, "POST", "/api/v1/projects", Some(project())).await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_str().unwrap().parse().unwrap();
    (db, app, pid)
}

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.01
}

#[tokio::test]
async fn device_time_is_counted_by_kind_and_month_and_quotas_count_the_installations_workers() {
    let (db, app, pid) = setup().await;
    let pool = &db.pool;
    let org = groundwork_store::DEFAULT_ORG_ID;

    let gpu = worker(pool, "cuda:0", &["gpu"]).await;
    let cpu = worker(pool, "cpu", &["cpu"]).await;
    // A GPU box the organisation attached with its own worker token: its time is counted, but the
    // installation does not pay for it.
    let own_gpu = worker(pool, "cuda:0", &["gpu"]).await;
    let (_, token) = groundwork_store::accounts::create_worker_token(
        pool,
        &groundwork_store::audit::Who::cli(),
        org,
        "our box",
    )
    .await
    .unwrap();
    sqlx::query("update worker set worker_token_id = $2 where id = $1")
        .bind(own_gpu)
        .bind(token.id)
        .execute(pool)
        .await
        .unwrap();

    let run = jobs::create_run(pool, org, pid, &noop_steps(4, "cpu"), None)
        .await
        .unwrap();
    let step = |i: usize| run.steps[i].id;
    spend(pool, step(0), gpu, 2.0, json!({})).await;
    spend(pool, step(1), cpu, 0.5, json!({})).await;
    spend(pool, step(2), own_gpu, 1.0, json!({})).await;

    let now = usage::month_usage(pool, org, Month::now()).await.unwrap();
    let of = |kind: DeviceKind| now.iter().find(|u| u.device_kind == kind).unwrap().clone();
    assert!(near(of(DeviceKind::Gpu).hours, 3.0), "{now:?}");
    assert!(near(of(DeviceKind::Gpu).installation_hours, 2.0), "{now:?}");
    assert!(near(of(DeviceKind::Cpu).hours, 0.5), "{now:?}");
    assert!(of(DeviceKind::Gpu).quota_hours.is_none());

    // The run shows its device time by kind.
    let (status, got) = call(&app, "GET", &format!("/api/v1/runs/{}", run.run.id), None).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let times = got["device_time"].as_array().unwrap();
    let gpu_time = times.iter().find(|t| t["device_kind"] == "gpu").unwrap();
    assert!(
        near(gpu_time["seconds"].as_f64().unwrap() / 3600.0, 3.0),
        "{got}"
    );
    assert!(
        near(
            gpu_time["installation_seconds"].as_f64().unwrap() / 3600.0,
            2.0
        ),
        "{got}"
    );

    // An attempt across a month's start counts in each month for its part there.
    let this_month = Month::now();
    let (start, _) = this_month.range();
    let last_month = Month::of(start - chrono::Duration::days(1));
    let (last_start, _) = last_month.range();
    let c = jobs::claim(pool, step(3), gpu, Duration::from_secs(600), None)
        .await
        .unwrap()
        .unwrap();
    jobs::complete(pool, &c, &json!({}), &[]).await.unwrap();
    sqlx::query(
        "update step_attempt set started_at = $2 - interval '1 hour', finished_at = $2 + interval '3 hours' \
         where claim_id = $1",
    )
    .bind(c.claim_id)
    .bind(last_start)
    .execute(pool)
    .await
    .unwrap();
    let before = Month::of(last_start - chrono::Duration::days(1));
    let gpu_in = |rows: Vec<usage::DeviceUsage>| {
        rows.into_iter()
            .find(|u| u.device_kind == DeviceKind::Gpu)
            .unwrap()
            .hours
    };
    assert!(near(
        gpu_in(usage::month_usage(pool, org, last_month).await.unwrap()),
        3.0
    ));
    assert!(near(
        gpu_in(usage::month_usage(pool, org, before).await.unwrap()),
        1.0
    ));

    // A quota and a price: what is left and the cost follow the installation's hours.
    usage::set_quota(
        pool,
        &groundwork_store::audit::Who::cli(),
        org,
        DeviceKind::Gpu,
        Some(5.0),
    )
    .await
    .unwrap();
    usage::set_price(pool, DeviceKind::Gpu, Some((1.5, "EUR")))
        .await
        .unwrap();
    let (status, u) = call(&app, "GET", "/api/v1/usage", None).await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(u["month"], this_month.to_string());
    let g = u["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_kind"] == "gpu")
        .unwrap();
    assert!(near(g["installation_hours"].as_f64().unwrap(), 2.0), "{u}");
    assert!(near(g["remaining_hours"].as_f64().unwrap(), 3.0), "{u}");
    assert!(near(g["cost"].as_f64().unwrap(), 3.0), "{u}");
    assert_eq!(g["currency"], "EUR");
    let (status, u) = call(
        &app,
        "GET",
        &format!("/api/v1/usage?month={last_month}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    let (status, err) = call(&app, "GET", "/api/v1/usage?month=2026-13", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");

    // Another organisation sees none of it; a member who is not an admin sees nothing.
    let other = Uuid::now_v7();
    sqlx::query("insert into org (id, name) values ($1, 'elsewhere')")
        .bind(other)
        .execute(pool)
        .await
        .unwrap();
    let theirs = usage::month_usage(pool, other, Month::now()).await.unwrap();
    assert!(theirs.iter().all(|u| u.hours == 0.0), "{theirs:?}");
    let member = groundwork_server::testing::member_token(
        pool,
        org,
        groundwork_store::accounts::Role::Member,
    )
    .await
    .unwrap();
    let member_app = groundwork_server::testing::with_bearer(
        groundwork_server::router(AppState::new(pool.clone())),
        &member,
    )
    .unwrap();
    let (status, _) = call(&member_app, "GET", "/api/v1/usage", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// `groundwork admin …` against the test database.
fn admin(db: &TestDb, args: &[&str]) -> String {
    let out = std::process::Command::new(PathBuf::from(env!("CARGO_BIN_EXE_groundwork")))
        .arg("admin")
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_run_over_its_quota_is_refused_or_held_until_an_administrator_approves_it() {
    let (db, app, pid) = setup().await;
    let pool = &db.pool;
    let org = groundwork_store::DEFAULT_ORG_ID;
    let org_name: String = sqlx::query_scalar("select name from org where id = $1")
        .bind(org)
        .fetch_one(pool)
        .await
        .unwrap();

    // Twelve acquired windows and a finished training run.
    let marker = jobs::create_run(pool, org, pid, &noop_steps(1, "cpu"), None)
        .await
        .unwrap();
    let mut rows = Vec::new();
    let mut outcomes = Vec::new();
    for column in 780..784_i64 {
        for row in 7780..7783_i64 {
            let id = format!("32633_10m_64px_{column}_{row}");
            let (x0, y1) = (column as f64 * 640.0, (row + 1) as f64 * 640.0);
            let (lon, lat) = (
                15.0 + (column - 780) as f64 * 0.008,
                45.0 + (row - 7780) as f64 * 0.006,
            );
            rows.push(windows::NewWindow {
                id: id.clone(),
                epsg: 32633,
                crs: "EPSG:32633".into(),
                size: 64,
                resolution: 10.0,
                column,
                row,
                geotransform: json!([x0, 10.0, 0.0, y1, 0.0, -10.0]),
                utm_bounds: json!([x0, y1 - 640.0, x0 + 640.0, y1]),
                bbox: [lon, lat, lon + 0.008, lat + 0.006],
                geometry: json!({"type": "Point", "coordinates": [lon + 0.004, lat + 0.003]}),
            });
            outcomes.push(windows::Outcome {
                id,
                status: "acquired".into(),
                reason: None,
                scenes: json!({}),
                objects: vec![],
            });
        }
    }
    windows::upsert(pool, pid, &rows).await.unwrap();
    windows::record_outcomes(pool, pid, marker.steps[0].id, &outcomes)
        .await
        .unwrap();
    let (status, trained) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/train"),
        Some(json!({"label_set_version": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{trained}");
    assert_eq!(trained["awaiting_approval"], false);
    assert_eq!(trained["estimate"]["step_kind"], "train");
    sqlx::query(
        "update step set state = 'succeeded', attempt = 1, started_at = now(), finished_at = now(), \
         output = $2 where id = $1",
    )
    .bind(trained["steps"][0]["id"].as_str().unwrap().parse::<Uuid>().unwrap())
    .bind(json!({"weights_sha256": "ab", "label_set_version": 1}))
    .execute(pool)
    .await
    .unwrap();

    // An installation GPU worker is live: predictions go to it. A finished prediction teaches the
    // rate: 90 s for 12 windows on the GPU.
    let gpu = worker(pool, "cuda:0", &["gpu"]).await;
    let predict = format!("/api/v1/projects/{pid}/predict");
    let (status, est) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/estimate"),
        Some(json!({"kind": "predict"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{est}");
    assert_eq!(est["device_kind"], "gpu");
    assert_eq!(est["units"], 12.0);
    assert_eq!(est["measured"], false, "{est}");
    let learn = jobs::create_run(
        pool,
        org,
        pid,
        &[jobs::NewStep::new(
            "p",
            "predict".parse().unwrap(),
            json!({}),
            "gpu",
        )],
        None,
    )
    .await
    .unwrap();
    spend(
        pool,
        learn.steps[0].id,
        gpu,
        90.0 / 3600.0,
        json!({"windows": 12, "model": {"model_size": "nano"}}),
    )
    .await;
    let (status, est) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/estimate"),
        Some(json!({"kind": "predict"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{est}");
    assert_eq!(est["measured"], true, "{est}");
    assert_eq!(est["samples"], 1);
    assert!(
        (est["seconds_per_unit"].as_f64().unwrap() - 7.5).abs() < 0.1,
        "{est}"
    );
    assert!(
        (est["device_hours"].as_f64().unwrap() - 0.025).abs() < 0.001,
        "{est}"
    );
    assert_eq!(est["within_quota"], true);

    // A quota of 0.01 GPU-hours, set through the command line, and a price.
    let out = admin(
        &db,
        &[
            "set-quota",
            "--org",
            &org_name,
            "--device",
            "gpu",
            "--hours",
            "0.01",
        ],
    );
    assert!(out.contains("0.01 gpu-hours a month"), "{out}");
    admin(
        &db,
        &[
            "set-price",
            "--device",
            "gpu",
            "--per-hour",
            "2",
            "--currency",
            "usd",
        ],
    );
    let runs_before: i64 =
        sqlx::query_scalar("select count(*) from pipeline_run where project_id = $1")
            .bind(pid)
            .fetch_one(pool)
            .await
            .unwrap();
    let (status, err) = call(&app, "POST", &predict, Some(json!({}))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{err}");
    assert_eq!(err["error"]["code"], "quota_exceeded");
    let details = &err["error"]["details"];
    assert_eq!(details["quota_hours"], 0.01, "{err}");
    assert_eq!(details["currency"], "USD");
    assert!(details["remaining_hours"].as_f64().unwrap() < 0.01, "{err}");
    assert!(details["device_hours"].as_f64().unwrap() > 0.02, "{err}");

    // Asked to wait for approval: the run is created, held, and its steps are not claimed.
    let (status, held) = call(
        &app,
        "POST",
        &predict,
        Some(json!({"request_approval": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    assert_eq!(held["awaiting_approval"], true);
    assert_eq!(held["estimate"]["within_quota"], false);
    let run_id: Uuid = held["id"].as_str().unwrap().parse().unwrap();
    let runs_after: i64 =
        sqlx::query_scalar("select count(*) from pipeline_run where project_id = $1")
            .bind(pid)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(runs_after, runs_before + 1, "the refusal created nothing");
    let first = held["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "predict")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    assert!(
        jobs::claim(pool, first, gpu, Duration::from_secs(60), None)
            .await
            .unwrap()
            .is_none(),
        "a held step is not claimed"
    );
    let messages: i64 = sqlx::query_scalar(
        "select count(*) from apalis.jobs j join step s on j.id in (s.dispatch_id, s.own_dispatch_id) \
         where s.run_id = $1 and j.status in ('Pending', 'Queued')",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(messages, 0, "nothing is dispatched before approval");

    // The administrator sees it and approves it: its steps are dispatched and claimed.
    let pending = admin(&db, &["pending-runs"]);
    assert!(pending.contains(&run_id.to_string()), "{pending}");
    assert!(pending.contains("gpu-hours"), "{pending}");
    let out = admin(&db, &["approve-run", &run_id.to_string()]);
    assert!(out.contains("approved"), "{out}");
    let (status, got) = call(&app, "GET", &format!("/api/v1/runs/{run_id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["awaiting_approval"], false);
    assert!(got["approved_at"].is_string(), "{got}");
    let messages: i64 = sqlx::query_scalar(
        "select count(*) from apalis.jobs j join step s on j.id in (s.dispatch_id, s.own_dispatch_id) \
         where s.run_id = $1 and j.status = 'Pending'",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(messages > 0, "approval dispatches the ready steps");
    assert!(
        jobs::claim(pool, first, gpu, Duration::from_secs(60), None)
            .await
            .unwrap()
            .is_some()
    );
    // Approving twice is a conflict; the pending list is empty.
    assert!(jobs::approve_run(pool, run_id, "again").await.is_err());
    assert!(admin(&db, &["pending-runs"]).contains("no run is waiting"));
    // The usage report names the organisation with its quota and cost.
    let report = admin(&db, &["usage"]);
    assert!(
        report.contains(&org_name) && report.contains("quota 0.01 h"),
        "{report}"
    );
    assert!(report.contains("USD"), "{report}");

    // By hand, an administrator cannot pass the quota by: a predict step on the GPU queue is refused.
    let (status, err) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/runs"),
        Some(
            json!({"steps": [{"name": "p", "kind": "predict", "queue": "gpu",
            "args": {"epsg": 32633, "block": 4, "block_column": 195, "block_row": 1945,
                     "model": {"kind": "constant", "values": [0.5, 0.5]}}}]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(
        err["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("quota"),
        "{err}"
    );

    // Without a quota, the same run starts at once.
    admin(&db, &["set-quota", "--org", &org_name, "--device", "gpu"]);
    let (status, run) = call(&app, "POST", &predict, Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["awaiting_approval"], false);

    // Runs not yet finished hold their estimates: a quota that fits one more run fits one, not two.
    admin(
        &db,
        &[
            "set-quota",
            "--org",
            &org_name,
            "--device",
            "gpu",
            "--hours",
            "1000",
        ],
    );
    let (status, est) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/estimate"),
        Some(json!({"kind": "predict"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{est}");
    let one = est["device_hours"].as_f64().unwrap();
    let held = est["committed_hours"].as_f64().unwrap();
    assert!(
        held >= one * 0.99,
        "the unfinished run above is counted: {est}"
    );
    let quota = est["used_hours"].as_f64().unwrap() + held + 1.5 * one;
    admin(
        &db,
        &[
            "set-quota",
            "--org",
            &org_name,
            "--device",
            "gpu",
            "--hours",
            &format!("{quota:.4}"),
        ],
    );
    let (status, run) = call(&app, "POST", &predict, Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let (status, err) = call(&app, "POST", &predict, Some(json!({}))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{err}");
    assert!(
        err["error"]["details"]["committed_hours"].as_f64().unwrap() >= held + one * 0.99,
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("held by runs not yet finished"),
        "{err}"
    );
}

#[tokio::test]
async fn two_runs_started_at_once_cannot_both_spend_what_is_left_of_the_quota() {
    let (db, _app, pid) = setup().await;
    let pool = &db.pool;
    let org = groundwork_store::DEFAULT_ORG_ID;
    // One GPU-hour left; each run is estimated at 0.6 of one: only one fits.
    let extras = |request_approval| jobs::RunExtras {
        estimate: Some(json!({"device_hours": 0.6, "device_kind": "gpu"})),
        awaiting_approval: false,
        quota: Some(jobs::QuotaCheck {
            device_kind: DeviceKind::Gpu,
            quota_hours: 1.0,
            used_hours: 0.0,
            device_hours: 0.6,
            request_approval,
        }),
    };
    let (steps_a, steps_b) = (noop_steps(1, "gpu"), noop_steps(1, "gpu"));
    let (extras_a, extras_b) = (extras(false), extras(false));
    let (a, b) = tokio::join!(
        jobs::create_run_with(pool, org, pid, &steps_a, None, &extras_a),
        jobs::create_run_with(pool, org, pid, &steps_b, None, &extras_b),
    );
    let (created, refused) = match (a, b) {
        (Ok(run), Err(e)) | (Err(e), Ok(run)) => (run, e),
        (a, b) => panic!("exactly one run fits the quota: {a:?} and {b:?}"),
    };
    assert!(!created.run.awaiting_approval);
    match refused {
        groundwork_store::Error::QuotaExceeded { committed_hours } => {
            assert!(near(committed_hours, 0.6), "{committed_hours}");
        }
        e => panic!("refused for another reason: {e}"),
    }
    let runs: i64 = sqlx::query_scalar("select count(*) from pipeline_run where project_id = $1")
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(runs, 1, "the refused run left nothing behind");

    // Asked to wait for approval, a run that no longer fits is created and held.
    let held = jobs::create_run_with(pool, org, pid, &noop_steps(1, "gpu"), None, &extras(true))
        .await
        .unwrap();
    assert!(held.run.awaiting_approval);
    // Without a quota check the store creates what it is given (a quota of another kind is not this
    // run's business).
    let free = jobs::create_run_with(
        pool,
        org,
        pid,
        &noop_steps(1, "gpu"),
        None,
        &jobs::RunExtras::default(),
    )
    .await
    .unwrap();
    assert!(!free.run.awaiting_approval);
}

#[tokio::test]
async fn a_step_needing_12_gb_goes_only_to_a_worker_that_has_them_and_the_page_says_why_it_waits() {
    let (db, app, pid) = setup().await;
    let pool = &db.pool;
    let org = groundwork_store::DEFAULT_ORG_ID;

    // Training and evaluation steps say what they need; fine-tuning the encoder needs far more than
    // training a head on the frozen encoder.
    let (status, run) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/train"),
        Some(json!({"label_set_version": 1, "epochs": 4, "freeze_epochs": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let train_needs = run["steps"][0]["needs"]["memory_mib"].as_f64().unwrap();
    let eval_needs = run["steps"][1]["needs"]["memory_mib"].as_f64().unwrap();
    assert!(train_needs > eval_needs && eval_needs > 512.0, "{run}");
    assert_eq!(run["steps"][0]["needs"]["model_size"], "nano", "{run}");
    assert_eq!(run["steps"][0]["needs"]["dtype"], "f32", "{run}");
    let (status, frozen) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/train"),
        Some(json!({"label_set_version": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{frozen}");
    let frozen_needs = frozen["steps"][0]["needs"]["memory_mib"].as_f64().unwrap();
    assert!(frozen_needs < train_needs, "{frozen}");

    let small = worker_with(
        pool,
        &["gpu"],
        json!({"candle_device": "cuda:0", "gpu_name": "small", "gpu_memory_mib": 8192}),
    )
    .await;
    let mut step = jobs::NewStep::new("big", "noop".parse().unwrap(), json!({}), "gpu");
    step.needs = json!({"memory_mib": 12288});
    let big_run = jobs::create_run(pool, org, pid, &[step], None)
        .await
        .unwrap();
    let id = big_run.steps[0].id;
    // The worker came with the step's dispatch message, which the refused claim retires.
    let message: String = sqlx::query_scalar("select dispatch_id from step where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(
        jobs::claim(pool, id, small, Duration::from_secs(60), Some(&message))
            .await
            .unwrap()
            .is_none(),
        "an 8 GB worker does not get a 12 GB step"
    );
    let state: String = sqlx::query_scalar("select state from step where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(state, "queued");
    // The refusal retired the message. No live worker of the queue is large enough: the step is not
    // offered to the same small workers again (the sweep will).
    assert!(!jobs::redispatch_refused(pool, id, small).await.unwrap());

    // The project page says why the step waits.
    let req = axum::http::Request::get(format!("/projects/{pid}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, _, body) = crate::common::send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8_lossy(&body);
    assert!(
        page.contains(
            "Waiting for a larger worker: 1 step on the `gpu` queue needs about 12.0 GiB"
        ) && page.contains("has 8.0 GiB"),
        "{page}"
    );

    // A 16 GB worker takes it; a worker that did not say how much memory it has is not held back.
    let large = worker_with(
        pool,
        &["gpu"],
        json!({"candle_device": "cuda:0", "gpu_name": "large", "gpu_memory_mib": 16384}),
    )
    .await;
    // Now one is: a refused step is dispatched again in 2 s (not at the 20 s sweep), once.
    assert!(
        jobs::redispatch_refused(pool, id, small).await.unwrap(),
        "a step refused for memory is dispatched again"
    );
    let due: Vec<f64> = sqlx::query_scalar(
        "select extract(epoch from j.run_at - now())::float8 from apalis.jobs j join step s \
         on j.id in (s.dispatch_id, s.own_dispatch_id) where s.id = $1 and j.status = 'Pending'",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        !due.is_empty() && due.iter().all(|d| (0.5..=3.0).contains(d)),
        "{due:?}"
    );
    assert!(
        !jobs::redispatch_refused(pool, id, small).await.unwrap(),
        "not twice while a message waits"
    );
    assert!(
        jobs::claim(pool, id, large, Duration::from_secs(60), None)
            .await
            .unwrap()
            .is_some()
    );
    let mut step = jobs::NewStep::new("any", "noop".parse().unwrap(), json!({}), "gpu");
    step.needs = json!({"memory_mib": 12288});
    let other = jobs::create_run(pool, org, pid, &[step], None)
        .await
        .unwrap();
    let unknown = worker(pool, "cuda:0", &["gpu"]).await;
    assert!(
        jobs::claim(
            pool,
            other.steps[0].id,
            unknown,
            Duration::from_secs(60),
            None
        )
        .await
        .unwrap()
        .is_some()
    );
    // On a CPU worker the memory is its RAM.
    let mut step = jobs::NewStep::new("cpu", "noop".parse().unwrap(), json!({}), "cpu");
    step.needs = json!({"memory_mib": 12288});
    let cpu_run = jobs::create_run(pool, org, pid, &[step], None)
        .await
        .unwrap();
    let laptop = worker_with(
        pool,
        &["cpu"],
        json!({"candle_device": "cpu", "memory_bytes": 8_u64 << 30}),
    )
    .await;
    assert!(
        jobs::claim(
            pool,
            cpu_run.steps[0].id,
            laptop,
            Duration::from_secs(60),
            None
        )
        .await
        .unwrap()
        .is_none()
    );
}

#[tokio::test]
async fn gpu_steps_move_to_the_cpu_only_where_the_organisation_allows_it_and_no_gpu_worker_is_live()
{
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let org = groundwork_store::DEFAULT_ORG_ID;
    let pid = crate::common::project(pool, "fallback").await;
    // A GPU worker that stopped answering an hour ago.
    let gone = worker(pool, "cuda:0", &["gpu"]).await;
    sqlx::query("update worker set last_heartbeat_at = now() - interval '1 hour' where id = $1")
        .bind(gone)
        .execute(pool)
        .await
        .unwrap();
    let mut steps = noop_steps(2, "gpu");
    steps[1].depends_on = vec!["s0".into()];
    let run = jobs::create_run(pool, org, pid, &steps, None)
        .await
        .unwrap();
    sqlx::query("update step set created_at = now() - interval '10 minutes' where run_id = $1")
        .bind(run.run.id)
        .execute(pool)
        .await
        .unwrap();
    let queues = || async {
        sqlx::query_scalar::<_, String>("select queue from step where run_id = $1 order by name")
            .bind(run.run.id)
            .fetch_all(pool)
            .await
            .unwrap()
    };

    // Without a policy the steps wait for a GPU.
    let reaped = jobs::reap(pool).await.unwrap();
    assert_eq!(reaped.moved_to_cpu, 0);
    assert_eq!(queues().await, ["gpu", "gpu"]);

    // With a 5-minute fallback they move, and the ready one is dispatched on the CPU queue.
    usage::set_cpu_fallback(pool, &groundwork_store::audit::Who::cli(), org, Some(300))
        .await
        .unwrap();
    // A GPU worker live a minute ago still holds them.
    let recent = worker(pool, "cuda:0", &["gpu"]).await;
    sqlx::query("update worker set last_heartbeat_at = now() - interval '1 minute' where id = $1")
        .bind(recent)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(jobs::reap(pool).await.unwrap().moved_to_cpu, 0);
    sqlx::query("update worker set last_heartbeat_at = now() - interval '1 hour' where id = $1")
        .bind(recent)
        .execute(pool)
        .await
        .unwrap();
    let reaped = jobs::reap(pool).await.unwrap();
    assert_eq!(reaped.moved_to_cpu, 2);
    assert_eq!(queues().await, ["cpu", "cpu"]);
    let on_cpu: i64 = sqlx::query_scalar(
        "select count(*) from apalis.jobs j join step s on j.id = s.dispatch_id \
         where s.run_id = $1 and j.job_type = 'cpu' and j.status = 'Pending'",
    )
    .bind(run.run.id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        on_cpu, 1,
        "the ready step is dispatched on the CPU queue, its dependent waits"
    );
    let message: String =
        sqlx::query_scalar("select message from step where run_id = $1 and name = 's0'")
            .bind(run.run.id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(message.contains("moved to the CPU queue"), "{message}");
}
