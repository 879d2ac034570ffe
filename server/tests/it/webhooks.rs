//! Project webhooks over real HTTP: an administrator sets one (the URL through the outbound policy), a
//! finished run queues a delivery, the server's pass POSTs it signed to a listener on 127.0.0.1,
//! retries a failed attempt, and the deliveries are listed; other organisations and members see none.
#![expect(clippy::unwrap_used, reason = "tests")]

use axum::http::{HeaderMap, StatusCode};
use groundwork_server::AppState;
use groundwork_store::jobs;
use groundwork_store::testing::TestDb;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

use crate::common::call;

type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A listener that answers 500 to its first request and 204 to the others, keeping them all.
async fn listener() -> (String, Received) {
    let got: Received = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                let mut all = keep.lock().unwrap();
                all.push((headers, body.to_vec()));
                if all.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(socket, app).await });
    (format!("http://127.0.0.1:{port}/hook"), got)
}

#[tokio::test]
async fn a_finished_run_is_announced_signed_to_the_projects_webhook_and_retried_until_delivered() {
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let mut state = AppState::new(pool.clone());
    // The listener is on this machine: the policy allows 127.0.0.1 as an administrator would allow a
    // host with --allow-host.
    state.outbound = Arc::new(
        groundwork_imagery::OutboundPolicy::configured(&["127.0.0.1".into()], &[]).unwrap(),
    );
    let app = groundwork_server::testing::owner_router(state.clone())
        .await
        .unwrap();
    let pid = crate::common::project(pool, "hooked").await;
    let (url, got) = listener().await;
    let hook = format!("/api/v1/projects/{pid}/webhook");

    // Refused URLs; a member is not an administrator.
    for bad in [
        "ftp://127.0.0.1/hook",
        "not a url",
        "http://example.org/\u{0}",
    ] {
        let (status, err) = call(&app, "PUT", &hook, Some(json!({"url": bad}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
    }
    let member = groundwork_server::testing::member_token(
        pool,
        groundwork_store::DEFAULT_ORG_ID,
        groundwork_store::accounts::Role::Member,
    )
    .await
    .unwrap();
    let member_app =
        groundwork_server::testing::with_bearer(groundwork_server::router(state.clone()), &member)
            .unwrap();
    let (status, _) = call(&member_app, "PUT", &hook, Some(json!({"url": url}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&app, "GET", &hook, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no webhook yet");

    let (status, set) = call(&app, "PUT", &hook, Some(json!({"url": url}))).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let secret = set["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let (_, shown) = call(&app, "GET", &hook, None).await;
    assert_eq!(shown["url"], url);
    assert!(
        shown.get("secret").is_none(),
        "the secret is shown once: {shown}"
    );

    // A run finishes: one delivery is queued.
    let run = crate::common::noop_run(pool, pid).await;
    let worker = groundwork_store::workers::register(
        pool,
        &groundwork_store::workers::Registration {
            name: "w".into(),
            pool: "cpu".into(),
            queues: vec!["cpu".into()],
            concurrency: 1,
            capabilities: json!({}),
            version: "test".into(),
        },
    )
    .await
    .unwrap();
    let c = jobs::claim(pool, run.steps[0].id, worker, Duration::from_secs(60), None)
        .await
        .unwrap()
        .unwrap();
    jobs::complete(pool, &c, &json!({}), &[]).await.unwrap();

    // The first attempt gets a 500 and is retried later; the second is delivered.
    let pass = groundwork_server::maintenance::webhooks::run_once(&state)
        .await
        .unwrap();
    assert_eq!(pass, 0);
    let (_, shown) = call(&app, "GET", &hook, None).await;
    let d = &shown["deliveries"][0];
    assert_eq!(d["state"], "pending", "{shown}");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["last_status"], 500);
    assert_eq!(
        groundwork_server::maintenance::webhooks::run_once(&state)
            .await
            .unwrap(),
        0,
        "not before its backoff"
    );
    sqlx::query("update webhook_delivery set next_at = now()")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        groundwork_server::maintenance::webhooks::run_once(&state)
            .await
            .unwrap(),
        1
    );
    let (_, shown) = call(&app, "GET", &hook, None).await;
    let d = &shown["deliveries"][0];
    assert_eq!(d["state"], "delivered", "{shown}");
    assert_eq!(d["attempts"], 2);
    assert_eq!(shown["deliveries"].as_array().unwrap().len(), 1);

    let received = got.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    let (headers, body) = &received[1];
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["event"], "run.finished");
    assert_eq!(v["run_id"], run.run.id.to_string());
    assert_eq!(v["project_id"], pid.to_string());
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["steps"][0]["state"], "succeeded");
    assert_eq!(headers["x-groundwork-event"], "run.finished");
    assert_eq!(headers["x-groundwork-delivery"], d["id"].as_str().unwrap());
    assert_eq!(
        headers["x-groundwork-signature"].to_str().unwrap(),
        groundwork_server::maintenance::webhooks::signature(&secret, body)
    );
    assert_ne!(
        headers["x-groundwork-signature"].to_str().unwrap(),
        groundwork_server::maintenance::webhooks::signature("whsec_other", body)
    );

    // Another organisation's owner finds no such project.
    let other = Uuid::now_v7();
    sqlx::query("insert into org (id, name) values ($1, 'elsewhere')")
        .bind(other)
        .execute(pool)
        .await
        .unwrap();
    let token = groundwork_server::testing::member_token(
        pool,
        other,
        groundwork_store::accounts::Role::Owner,
    )
    .await
    .unwrap();
    let theirs =
        groundwork_server::testing::with_bearer(groundwork_server::router(state.clone()), &token)
            .unwrap();
    let (status, _) = call(&theirs, "GET", &hook, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&theirs, "PUT", &hook, Some(json!({"url": url}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Removed: later runs are not announced.
    let (status, _) = call(&app, "DELETE", &hook, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&app, "GET", &hook, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let run = crate::common::noop_run(pool, pid).await;
    let c = jobs::claim(pool, run.steps[0].id, worker, Duration::from_secs(60), None)
        .await
        .unwrap()
        .unwrap();
    jobs::complete(pool, &c, &json!({}), &[]).await.unwrap();
    let queued: i64 = sqlx::query_scalar("select count(*) from webhook_delivery where run_id = $1")
        .bind(run.run.id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(queued, 0);
}
