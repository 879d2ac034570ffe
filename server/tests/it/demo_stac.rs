//! The demo catalogue served as a STAC API (`serve --demo-data`, `demo`): acquisition through the API
//! and through the same files as a static catalogue over HTTP.
#![expect(clippy::unwrap_used, reason = "test helpers")]

use std::path::PathBuf;

use axum::Router;
use chrono::NaiveDate;
use groundwork_imagery::{
    AcquireReport, AcquireRequest, CancellationToken, Modality, OutboundPolicy, Source, WindowSpec,
    acquire,
};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn demo_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let opts = groundwork_imagery::DemoOptions {
        size: 256,
        months: vec![5, 7],
        ..Default::default()
    };
    let cat = groundwork_imagery::generate_demo_data(dir.path(), &opts).unwrap();
    (dir, cat)
}

async fn run(windows: &[WindowSpec], req: &AcquireRequest) -> (AcquireReport, InMemory) {
    let store = InMemory::new();
    let report = acquire(
        windows,
        req,
        &store,
        &ObjectPath::from("orgs/o/projects/p"),
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    (report, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_router_serves_the_catalogue_as_a_stac_api() {
    let (dir, _) = demo_dir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let root = format!("http://{}/demo/stac", listener.local_addr().unwrap());
    let router = groundwork_server::demo_stac::demo_stac_router(dir.path(), &root).unwrap();
    let app = Router::new().nest("/demo/stac", router);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let w = WindowSpec::from_cell(32633, 782, 7810, 64, 10.0).unwrap();
    let mut req = AcquireRequest::new(
        Source::Api(root.clone()),
        vec![Modality::Sentinel2L2a, Modality::Sentinel1],
        d("2024-05-01"),
        d("2024-05-31"),
    );
    // The server's own demo catalogue, as `serve --demo-data` allows it.
    req.outbound = OutboundPolicy::default().with_allowed_prefix(format!("{root}/"));
    let (report, _) = run(std::slice::from_ref(&w), &req).await;
    assert_eq!(report.scenes_found["sentinel2_l2a"], 2);
    assert_eq!(report.scenes_found["sentinel1"], 1);
    assert_eq!(report.succeeded, 1, "{report:#?}");

    // The same files are a static catalogue over HTTP, with relative links.
    let mut req = AcquireRequest::new(
        Source::parse(&format!("{root}/files/catalog.json")),
        vec![Modality::Sentinel2L2a],
        d("2024-07-01"),
        d("2024-07-31"),
    );
    // The server's own demo catalogue, as `serve --demo-data` allows it.
    req.outbound = OutboundPolicy::default().with_allowed_prefix(format!("{root}/"));
    let (report, _) = run(std::slice::from_ref(&w), &req).await;
    assert_eq!(report.scenes_found["sentinel2_l2a"], 2);
    assert_eq!(report.succeeded, 1, "{report:#?}");
}
