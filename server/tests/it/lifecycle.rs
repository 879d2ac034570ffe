//! The data lifecycle: deleting a project deletes its objects (through the queued clean-up the
//! maintenance task works off) and the server's cached copies, never another project's; done
//! dispatch messages are pruned; imagery becomes stale when the project's settings change, and a
//! flaky acquisition never downgrades a good window.
#![expect(clippy::unwrap_used, reason = "tests")]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::TryStreamExt;
use groundwork_server::AppState;
use groundwork_server::maintenance;
use groundwork_store::projects;
use groundwork_store::testing::TestDb;
use groundwork_store::{DEFAULT_ORG_ID, jobs, windows};
use groundwork_types::Modality;
use groundwork_types::keys::ProjectKeys;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

async fn keys_under(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    store
        .list(Some(&ObjectPath::from(prefix)))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn deleting_a_project_deletes_its_objects_and_cached_copies_and_no_others() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let mut state = AppState::new(db.pool.clone());
    state.objects = Some(store.clone());
    let app = groundwork_server::testing::owner_router(state.clone())
        .await
        .unwrap();

    let gone = crate::common::project(&db.pool, "gone").await;
    let kept = crate::common::project(&db.pool, "kept").await;
    let (gone_keys, kept_keys) = (
        ProjectKeys::new(DEFAULT_ORG_ID, gone),
        ProjectKeys::new(DEFAULT_ORG_ID, kept),
    );
    let run = Uuid::now_v7();
    let mut cached = Vec::new();
    for keys in [&gone_keys, &kept_keys] {
        for key in [
            keys.window("32633_1_2", Modality::Sentinel2L2a),
            format!("{}/state.json", keys.checkpoints(run)),
            keys.model(run).weights,
            format!(
                "{}/runs/{run}/publish/s/claim-c/class-3857.tif",
                keys.prefix()
            ),
        ] {
            store
                .put(&ObjectPath::from(key.as_str()), vec![7u8; 16].into())
                .await
                .unwrap();
        }
        let key = format!(
            "{}/runs/{run}/publish/s/claim-c/class-3857.tif",
            keys.prefix()
        );
        cached.push(state.cache.put(&key, &[7u8; 16]).unwrap());
    }
    assert_eq!(
        keys_under(store.as_ref(), gone_keys.prefix()).await.len(),
        4
    );

    let req = Request::builder()
        .method("DELETE")
        .uri(format!("/api/v1/projects/{gone}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = crate::common::send(&app, req).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&body)
    );

    // The maintenance task works off the queued clean-up.
    let deleted = maintenance::objects::run_once(&state).await.unwrap();
    assert_eq!(deleted, 4);
    assert!(
        keys_under(store.as_ref(), gone_keys.prefix())
            .await
            .is_empty()
    );
    assert_eq!(
        keys_under(store.as_ref(), kept_keys.prefix()).await.len(),
        4
    );
    assert!(
        !cached[0].exists(),
        "the deleted project's cached copy stays"
    );
    assert!(cached[1].exists());
    let pending: i64 =
        sqlx::query_scalar("select count(*) from object_cleanup where done_at is null")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(pending, 0);
    // A second pass has nothing to do.
    assert_eq!(maintenance::objects::run_once(&state).await.unwrap(), 0);
}

#[tokio::test]
async fn done_dispatch_messages_are_pruned_and_pending_ones_kept() {
    let db = TestDb::new().await.unwrap();
    let state = AppState::new(db.pool.clone());
    let p = crate::common::project(&db.pool, "p").await;
    let steps = |n: &str| {
        [jobs::NewStep::new(
            n,
            "noop".parse().unwrap(),
            json!({}),
            "cpu",
        )]
    };
    let old = jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &steps("old"), None)
        .await
        .unwrap();
    jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &steps("pending"), None)
        .await
        .unwrap();
    sqlx::query(
        "update apalis.jobs set status = 'Done', done_at = now() - interval '2 days' \
         where id = (select dispatch_id from step where id = $1)",
    )
    .bind(old.steps[0].id)
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(maintenance::dispatch::run_once(&state).await.unwrap() >= 1);
    let left: Vec<String> = sqlx::query_scalar(
        "select s.name from step s join apalis.jobs j on j.id = s.dispatch_id order by s.name",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, ["pending"]);
}

#[tokio::test]
async fn changing_what_imagery_depends_on_makes_it_stale_until_acquired_again() {
    let db = TestDb::new().await.unwrap();
    let state = AppState::new(db.pool.clone());
    let app = groundwork_server::testing::owner_router(state)
        .await
        .unwrap();
    let id = crate::common::project(&db.pool, "p").await;
    let project = projects::get(&db.pool, DEFAULT_ORG_ID, id).await.unwrap();
    // Outcomes as an acquisition step records them (the step: any step of the project's runs).
    let record = async |ids: Vec<String>, status: &str, reason: Option<&str>| {
        let step = crate::common::noop_run(&db.pool, id).await.steps[0].id;
        let outcomes: Vec<windows::Outcome> = ids
            .into_iter()
            .map(|w| windows::Outcome {
                id: w,
                status: status.into(),
                reason: reason.map(Into::into),
                scenes: json!({}),
                objects: Vec::new(),
            })
            .collect();
        windows::record_outcomes(&db.pool, id, step, &outcomes)
            .await
            .unwrap();
    };
    let planned = async || -> Vec<String> {
        groundwork_worker::steps::plan_windows(&db.pool, &project)
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.id)
            .collect()
    };
    record(planned().await, "acquired", None).await;
    let call = async |method: &str, uri: String, body: serde_json::Value| {
        let (status, body) = crate::common::call(&app, method, &uri, Some(body)).await;
        (status, body.to_string())
    };
    let stale = async || windows::counts(&db.pool, id).await.unwrap().stale;
    let quarantined = async || {
        windows::list(&db.pool, id, Some("quarantined"), None, 10)
            .await
            .unwrap()
            .len()
    };

    // A new name changes no imagery.
    let (s, b) = call(
        "PATCH",
        format!("/api/v1/projects/{id}"),
        json!({"name": "renamed"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(stale().await, 0);
    // New dates do: training and prediction are refused, saying why.
    let (s, b) = call(
        "PATCH",
        format!("/api/v1/projects/{id}"),
        json!({"end": "2024-06-30"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(stale().await > 0);
    for route in ["train", "predict"] {
        let (s, b) = call("POST", format!("/api/v1/projects/{id}/{route}"), json!({})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{route}: {b}");
        assert!(b.contains("acquire imagery again"), "{route}: {b}");
    }
    // An acquisition that fails for a stale window quarantines it (its imagery is of the old dates),
    // one that succeeds makes it current: no window is stale any more.
    let w = windows::list(&db.pool, id, None, None, 10).await.unwrap();
    record(vec![w[0].id.clone()], "quarantined", Some("no scene")).await;
    assert_eq!(quarantined().await, 1);
    record(planned().await, "acquired", None).await;
    assert_eq!(stale().await, 0);
    // Training no longer names stale imagery: what it lacks now is labels.
    let (s, b) = call("POST", format!("/api/v1/projects/{id}/train"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(b.contains("Label the imagery first"), "{b}");
    assert!(!b.contains("acquire imagery again"), "{b}");
    // Without changes, a later failure never downgrades an acquired window.
    record(
        vec![w[0].id.clone()],
        "quarantined",
        Some("flaky catalogue"),
    )
    .await;
    assert_eq!(quarantined().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_database_outage_the_server_says_not_ready_quickly_and_recovers_after() {
    let db = TestDb::new().await.unwrap();
    let state = AppState::new(db.pool.clone());
    let app = groundwork_server::testing::owner_router(state)
        .await
        .unwrap();
    let get = async |uri: &str| {
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let started = std::time::Instant::now();
        let (status, _, body) = crate::common::send(&app, req).await;
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            started.elapsed(),
        )
    };
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
    let during = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (status, body, took) = get("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            took < std::time::Duration::from_secs(5),
            "/readyz took {took:?}"
        );
        // The API answers 503 `unavailable` without internal detail.
        let (status, body, _) = get("/api/v1/projects").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("\"unavailable\""), "{body}");
    };
    let (outage, ()) = tokio::join!(db.outage(std::time::Duration::from_secs(6)), during);
    outage.unwrap();
    // Back: the pool reconnects by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, _, _) = get("/api/v1/projects").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the API did not recover: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
}
