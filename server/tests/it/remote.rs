//! Remote workers: `groundwork worker --server http://… --token gwk_…` processes that hold no
//! database or object-store credentials run an acquisition and a training run through the worker
//! API; another organisation's worker never claims them; a worker killed with SIGKILL, or cut off from
//! the server, loses its step to another worker, which finishes it exactly once.
#![expect(clippy::unwrap_used, reason = "tests")]

use axum::http::StatusCode;
use groundwork_imagery::{DemoOptions, OutboundPolicy, generate_demo_data};
use groundwork_server::{AppState, router};
use groundwork_store::accounts;
use groundwork_store::audit::Who;
use groundwork_store::testing::TestDb;
use groundwork_store::{DEFAULT_ORG_ID, PgPool, jobs};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::common::{call, owner_token, wait_run};
use crate::processes::{Proc, finished, running_on, wait_for};

/// A server on a loopback port with a local object store, the reaper running beside it (as
/// `groundwork serve --local-workers 0` runs it).
struct Server {
    url: String,
    app: axum::Router,
    objects: Arc<dyn object_store::ObjectStore>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn server(db: &TestDb, objects_dir: &Path, catalog_root: Option<&Path>) -> Server {
    let objects: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(objects_dir).unwrap());
    let mut state = AppState::new(db.pool.clone());
    state.objects = Some(objects.clone());
    if let Some(root) = catalog_root {
        state.outbound = Arc::new(OutboundPolicy::default().with_catalog_root(root).unwrap());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let served = router(state.clone());
    let s = stop.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            served.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { s.cancelled().await })
        .await
        .unwrap();
    });
    tokio::spawn(groundwork_worker::run_reaper(
        db.pool.clone(),
        Duration::from_millis(500),
        Duration::from_secs(3),
        stop.clone(),
    ));
    let app = groundwork_server::testing::with_bearer(router(state), &owner_token(&db.pool).await)
        .unwrap();
    Server {
        url: format!("http://{addr}"),
        app,
        objects,
        stop,
    }
}

async fn worker_token(pool: &PgPool, org: Uuid) -> String {
    accounts::create_worker_token(pool, &Who::cli(), org, "remote")
        .await
        .unwrap()
        .0
}

/// `groundwork worker --server … --token …` with a short lease, in its own empty folder, with no
/// database URL and no object store in its environment.
fn remote_worker(server: &str, token: &str, name: &str, dir: &Path, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(PathBuf::from(env!("CARGO_BIN_EXE_groundwork")));
    cmd.args([
        "worker",
        "--server",
        server,
        "--token",
        token,
        "--queues",
        "cpu",
        "--concurrency",
        "1",
        "--lease-secs",
        "3",
        "--heartbeat-ms",
        "300",
        "--name",
        name,
    ])
    .args(extra)
    .current_dir(dir)
    .env_remove("DATABASE_URL")
    .env_remove("GROUNDWORK_OBJECT_STORE")
    .env_remove("AWS_ACCESS_KEY_ID")
    .env_remove("AWS_SECRET_ACCESS_KEY")
    .stdout(Stdio::null());
    // Quiet unless asked (`REMOTE_WORKER_LOG=info`): the cut-off test's warnings are expected.
    match std::env::var("REMOTE_WORKER_LOG") {
        Ok(level) => cmd.env("RUST_LOG", level).stderr(Stdio::inherit()),
        Err(_) => cmd.env("RUST_LOG", "error").stderr(Stdio::null()),
    };
    Proc(cmd.spawn().expect("start the remote worker"))
}

async fn live_workers(pool: &PgPool, n: i64) {
    wait_for(Duration::from_secs(30), "the workers to register", async || {
        let live: i64 = sqlx::query_scalar(
            "select count(*) from worker where stopped_at is null and last_heartbeat_at > now() - interval '2 seconds'",
        )
        .fetch_one(pool)
        .await
        .ok()?;
        (live >= n).then_some(())
    })
    .await;
}

/// Who ran a run's steps: (step name, worker name, outcome) per attempt.
async fn attempts(pool: &PgPool, run: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "select s.name, w.name, coalesce(a.outcome, '') from step_attempt a join step s on s.id = a.step_id \
         join worker w on w.id = a.worker_id where s.run_id = $1::uuid order by s.name, a.attempt",
    )
    .bind(run)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_worker_with_only_a_token_acquires_and_trains_and_another_organisation_s_does_not()
{
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
    let pool = &db.pool;
    let objects_dir = tmp.path().join("objects");
    std::fs::create_dir_all(&objects_dir).unwrap();
    let srv = server(&db, &objects_dir, Some(&demo)).await;

    // Another organisation's worker is up first: it must never take this organisation's steps.
    let other_org = accounts::create_org(pool, &Who::cli(), "other", None)
        .await
        .unwrap()
        .id;
    let other_dir = tempfile::tempdir().unwrap();
    let _other = remote_worker(
        &srv.url,
        &worker_token(pool, other_org).await,
        "other-org",
        other_dir.path(),
        &["--catalog-root", demo.to_str().unwrap()],
    );
    live_workers(pool, 1).await;

    let (s, project) = call(
        &srv.app,
        "POST",
        "/api/v1/projects",
        Some(json!({"name": "remote", "aoi": aoi["geometry"], "start": "2024-04-01", "end": "2024-05-31",
                    "task": "segmentation", "allow_random_init": true, "patch_size": 8,
                    "classes": [{"id": 1, "name": "west", "color": "#0000ff"}, {"id": 2, "name": "east", "color": "#00aa00"}],
                    "modalities": ["sentinel2_l2a"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{project:#}");
    let pid = project["id"].as_str().unwrap().to_owned();
    let (s, run) = call(
        &srv.app,
        "POST",
        &format!("/api/v1/projects/{pid}/acquire"),
        Some(json!({"stac": catalog.display().to_string(), "max_cloud": 60})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
    let acquire_run = run["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let taken: i64 = sqlx::query_scalar(
        "select count(*) from step_attempt a join step s on s.id = a.step_id where s.run_id = $1::uuid",
    )
    .bind(&acquire_run)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(taken, 0, "another organisation's worker claimed a step");

    // This organisation's worker: only the server's URL and a token.
    let own_dir = tempfile::tempdir().unwrap();
    let _own = remote_worker(
        &srv.url,
        &worker_token(pool, DEFAULT_ORG_ID).await,
        "own",
        own_dir.path(),
        &["--catalog-root", demo.to_str().unwrap()],
    );
    let done = wait_run(&srv.app, &acquire_run).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let by = attempts(pool, &acquire_run).await;
    assert!(!by.is_empty());
    assert!(
        by.iter().all(|(_, w, o)| w == "own" && o == "succeeded"),
        "{by:?}"
    );
    let shared: i64 = sqlx::query_scalar(
        "select count(*) from step_attempt a join step s on s.id = a.step_id where s.run_id = $1::uuid and a.installation",
    )
    .bind(&acquire_run)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        shared, 0,
        "the attempts count as the organisation's own worker's"
    );
    // The window tensors went through the worker API into the server's store.
    let (_, windows) = call(
        &srv.app,
        "GET",
        &format!("/api/v1/projects/{pid}/windows"),
        None,
    )
    .await;
    let acquired = windows["counts"]["acquired"].as_i64().unwrap();
    assert!(acquired >= 4, "{windows:#}");
    let stored = std::fs::read_dir(&objects_dir).unwrap().count();
    assert!(
        stored > 0,
        "nothing was written to the server's object store"
    );
    // The worker's own folder holds no object store of its own.
    assert!(!own_dir.path().join(".groundwork/objects").exists());

    // Labels (west and east halves of the area), a split, and a short training run.
    let [w, s_, e, n] = [0, 1, 2, 3].map(|i| project["bbox"][i].as_f64().unwrap());
    let mut features = Vec::new();
    for i in 0..12 {
        for j in 0..12 {
            let lon = w + (e - w) * (f64::from(i) + 0.5) / 12.0;
            let lat = s_ + (n - s_) * (f64::from(j) + 0.5) / 12.0;
            let class = if i < 6 { 1 } else { 2 };
            features.push(json!({"type": "Feature", "properties": {"class": class},
                                  "geometry": {"type": "Point", "coordinates": [lon, lat]}}));
        }
    }
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(format!(
            "/api/v1/projects/{pid}/labels/import?format=geojson"
        ))
        .header("content-type", "application/geo+json")
        .body(axum::body::Body::from(
            serde_json::to_vec(&json!({"type": "FeatureCollection", "features": features}))
                .unwrap(),
        ))
        .unwrap();
    let (status, _, body) = crate::common::send(&srv.app, req).await;
    assert!(status.is_success(), "{}", String::from_utf8_lossy(&body));
    let (s, split) = call(
        &srv.app,
        "POST",
        &format!("/api/v1/projects/{pid}/labels/split"),
        Some(json!({"block_size": 1, "seed": 3})),
    )
    .await;
    assert!(s.is_success(), "{split:#}");
    let (s, run) = call(
        &srv.app,
        "POST",
        &format!("/api/v1/projects/{pid}/train"),
        // A frozen encoder and small batches: light enough for a debug build on two cores.
        Some(json!({"epochs": 2, "freeze_epochs": 2, "batch_size": 4})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{run:#}");
    let train_run = run["id"].as_str().unwrap().to_owned();
    let done = wait_run(&srv.app, &train_run).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let by = attempts(pool, &train_run).await;
    let names: Vec<&str> = by.iter().map(|(s, _, _)| s.as_str()).collect();
    assert!(
        names.contains(&"train") && names.contains(&"evaluate"),
        "{by:?}"
    );
    assert!(by.iter().all(|(_, w, _)| w == "own"), "{by:?}");
    // Epochs recorded through the fenced writes, the model and its report in the server's store.
    let epochs: i64 =
        sqlx::query_scalar("select count(*) from training_epoch where run_id = $1::uuid")
            .bind(&train_run)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(epochs >= 2, "{epochs} epochs recorded");
    let (s, eval) = call(
        &srv.app,
        "GET",
        &format!("/api/v1/runs/{train_run}/evaluation"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{eval:#}");
    let key = eval["model_key"]
        .as_str()
        .or_else(|| eval["report"]["model_key"].as_str());
    if let Some(key) = key {
        use object_store::ObjectStoreExt;
        srv.objects
            .head(&object_store::path::Path::from(key))
            .await
            .expect("the model manifest is in the server's store");
    }
    let other_attempts: i64 = sqlx::query_scalar(
        "select count(*) from step_attempt a join worker w on w.id = a.worker_id where w.name = 'other-org'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(other_attempts, 0);
}

/// A `sleep` step of the default organisation on `cpu`.
async fn sleep_run(pool: &PgPool, seconds: f64) -> Uuid {
    let project = crate::common::project(pool, "p").await;
    let mut step = jobs::NewStep::new(
        "long",
        "sleep".parse().unwrap(),
        json!({"seconds": seconds}),
        "cpu",
    );
    step.backoff_base_ms = 0;
    let run = jobs::create_run(pool, DEFAULT_ORG_ID, project, &[step], None)
        .await
        .unwrap();
    run.steps[0].id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_worker_killed_mid_step_loses_it_to_another_which_finishes_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let srv = server(&db, tmp.path(), None).await;
    let token = worker_token(pool, DEFAULT_ORG_ID).await;
    let a = remote_worker(&srv.url, &token, "remote-a", tmp.path(), &[]);
    let b = remote_worker(&srv.url, &token, "remote-b", tmp.path(), &[]);
    live_workers(pool, 2).await;
    let step_id = sleep_run(pool, 4.0).await;
    let owner = running_on(pool, step_id).await;
    let (mut victim, survivor) = if owner == "remote-a" { (a, b) } else { (b, a) };
    victim.0.kill().unwrap(); // SIGKILL
    victim.0.wait().unwrap();
    let rows = finished(pool, step_id).await;
    let other = if owner == "remote-a" {
        "remote-b"
    } else {
        "remote-a"
    };
    assert_eq!(
        rows,
        vec![
            (1, owner.clone(), "lost".into()),
            (2, other.into(), "succeeded".into())
        ]
    );
    let artifacts: i64 =
        sqlx::query_scalar("select count(*) from step_artifact where step_id = $1")
            .bind(step_id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(artifacts, 1, "the result is recorded exactly once");
    drop(survivor);
}

/// A TCP relay to `target` that can be cut: every connection through it is dropped and new ones
/// are refused.
struct Relay {
    url: String,
    cut: CancellationToken,
}

async fn relay(target: &str) -> Relay {
    let target = target.trim_start_matches("http://").to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = CancellationToken::new();
    let c = cut.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = c.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((mut inbound, _)) = accepted else {
                continue;
            };
            let target = target.clone();
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    () = c.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    });
    Relay {
        url: format!("http://{addr}"),
        cut,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_worker_cut_off_from_the_server_stops_and_another_finishes_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let srv = server(&db, tmp.path(), None).await;
    let token = worker_token(pool, DEFAULT_ORG_ID).await;
    let link = relay(&srv.url).await;
    let _cut_off = remote_worker(&link.url, &token, "behind-relay", tmp.path(), &[]);
    live_workers(pool, 1).await;
    let step_id = sleep_run(pool, 4.0).await;
    assert_eq!(running_on(pool, step_id).await, "behind-relay");
    // The connection drops and stays down; a second worker joins directly.
    link.cut.cancel();
    let _direct = remote_worker(&srv.url, &token, "direct", tmp.path(), &[]);
    let rows = finished(pool, step_id).await;
    assert_eq!(
        rows,
        vec![
            (1, "behind-relay".into(), "lost".into()),
            (2, "direct".into(), "succeeded".into())
        ]
    );
}

#[tokio::test]
async fn the_worker_api_refuses_wrong_tokens_and_other_organisations_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let srv = server(&db, tmp.path(), None).await;
    let http = reqwest::Client::new();
    let reg = json!({"name": "w", "pool": "cpu", "queues": ["cpu"], "concurrency": 1,
                     "capabilities": {}, "version": "test"});
    // No token, an API token, an unknown worker token: 401, nothing registered.
    for auth in [
        None,
        Some("Bearer gw_not-a-worker-token"),
        Some("Bearer gwk_unknown"),
    ] {
        let mut rb = http
            .post(format!("{}/api/v1/worker/register", srv.url))
            .json(&reg);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        let res = rb.send().await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
    }
    let token = worker_token(pool, DEFAULT_ORG_ID).await;
    let res = http
        .post(format!("{}/api/v1/worker/register", srv.url))
        .bearer_auth(&token)
        .json(&reg)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    let worker = me["worker_id"].as_str().unwrap().to_owned();
    assert_eq!(me["org_id"], json!(DEFAULT_ORG_ID));
    // Another organisation's token with this worker's id is refused.
    let other_org = accounts::create_org(pool, &Who::cli(), "other", None)
        .await
        .unwrap()
        .id;
    let other = worker_token(pool, other_org).await;
    let res = http
        .post(format!("{}/api/v1/worker/heartbeat", srv.url))
        .bearer_auth(&other)
        .header("x-groundwork-worker", &worker)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Objects: its own organisation's keys (with ranges), not another's, not outside `orgs/`.
    let own_key = format!("orgs/{DEFAULT_ORG_ID}/projects/p/x.bin");
    let put = http
        .put(format!("{}/api/v1/worker/objects/{own_key}", srv.url))
        .bearer_auth(&token)
        .header("x-groundwork-worker", &worker)
        .body((0u8..100).collect::<Vec<u8>>())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let part = http
        .get(format!("{}/api/v1/worker/objects/{own_key}", srv.url))
        .bearer_auth(&token)
        .header("x-groundwork-worker", &worker)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.bytes().await.unwrap().to_vec(),
        (10u8..20).collect::<Vec<u8>>()
    );
    // Larger than any JSON body, and larger than one put: streamed into the store either way.
    for mib in [3usize, 9] {
        let body: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
        let key = format!("orgs/{DEFAULT_ORG_ID}/projects/p/big-{mib}.bin");
        let put = http
            .put(format!("{}/api/v1/worker/objects/{key}", srv.url))
            .bearer_auth(&token)
            .header("x-groundwork-worker", &worker)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "{mib} MiB");
        use object_store::ObjectStoreExt;
        let stored = srv
            .objects
            .get(&object_store::path::Path::from(key.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(stored.to_vec() == body, "{mib} MiB stored intact");
    }
    for key in [
        format!("orgs/{other_org}/projects/p/x.bin"),
        "secrets/x".to_owned(),
        format!("orgs/{DEFAULT_ORG_ID}/../{other_org}/x"),
    ] {
        let res = http
            .put(format!("{}/api/v1/worker/objects/{key}", srv.url))
            .bearer_auth(&token)
            .header("x-groundwork-worker", &worker)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{key}");
    }
    // Shared checkpoints are readable, not writable.
    let res = http
        .put(format!(
            "{}/api/v1/worker/objects/models/OlmoEarth-v1-Nano/x",
            srv.url
        ))
        .bearer_auth(&token)
        .header("x-groundwork-worker", &worker)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // A claim of a step it does not hold is unknown.
    let res = http
        .post(format!(
            "{}/api/v1/worker/steps/{}/claims/{}/data",
            srv.url,
            Uuid::now_v7(),
            Uuid::now_v7()
        ))
        .bearer_auth(&token)
        .header("x-groundwork-worker", &worker)
        .json(&json!({"op": "project"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // The worker's own object store: a multipart upload spooled and streamed, ranged reads, deletes;
    // another organisation's keys are not found.
    let client = Arc::new(groundwork_worker::remote::Client::new(&srv.url, &token).unwrap());
    client
        .register(&serde_json::from_value(reg.clone()).unwrap())
        .await
        .unwrap();
    let remote = client.objects().unwrap();
    let key = object_store::path::Path::from(format!("orgs/{DEFAULT_ORG_ID}/projects/p/parts.bin"));
    let body: Vec<u8> = (0..12usize << 20).map(|i| (i % 253) as u8).collect();
    let upload = remote.put_multipart(&key).await.unwrap();
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, 5 << 20);
    writer.write(&body);
    writer.finish().await.unwrap();
    use object_store::ObjectStoreExt;
    let stored = srv.objects.get(&key).await.unwrap().bytes().await.unwrap();
    assert!(
        stored.to_vec() == body,
        "the multipart upload arrived intact"
    );
    let range = remote.get_range(&key, 7_000_000..7_000_100).await.unwrap();
    assert_eq!(range.to_vec(), body[7_000_000..7_000_100].to_vec());
    assert_eq!(remote.head(&key).await.unwrap().size, body.len() as u64);
    remote.delete(&key).await.unwrap();
    assert!(matches!(
        srv.objects.head(&key).await,
        Err(object_store::Error::NotFound { .. })
    ));
    let foreign = object_store::path::Path::from(format!("orgs/{other_org}/projects/p/x.bin"));
    assert!(matches!(
        remote.get(&foreign).await,
        Err(object_store::Error::NotFound { .. })
    ));

    // Plain HTTP to another machine is refused by the worker before it sends the token.
    let err = groundwork_worker::remote::Client::new("http://192.0.2.1:8080", &token).unwrap_err();
    assert!(err.to_string().contains("https"), "{err}");
    assert!(
        groundwork_worker::remote::Client::new("https://groundwork.example.org", &token).is_ok()
    );
}
