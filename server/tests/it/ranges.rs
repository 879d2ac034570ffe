//! Downloads answer HTTP range requests, so a COG opens by URL in GDAL (as in QGIS, rasterio or
//! TiTiler) over a real socket, reading only the byte ranges it needs.

use groundwork_server::AppState;
use groundwork_server::testing::{member_token, with_bearer};
use groundwork_store::DEFAULT_ORG_ID;
use groundwork_store::accounts::Role;
use groundwork_store::testing::TestDb;
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cog_larger_than_gdals_first_read_opens_by_url_through_range_requests() {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut state = AppState::new(db.pool.clone());
    state.objects = Some(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
    ));
    let project = crate::common::project(&db.pool, "p").await;
    // 512 × 512 pixels of varied classes: a COG far larger than GDAL's first 16 KB read.
    let n = 512usize;
    // Noise-like classes, so compression cannot make the file small.
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..n * n)
        .map(|_| {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            (noise % 250) as u8
        })
        .collect();
    let output = crate::common::class_map(&db.pool, dir.path(), project, &data, n, json!([])).await;
    let path = dir.path().join(&output.utm_key);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 64 * 1024, "{size}");
    let token = member_token(&db.pool, DEFAULT_ORG_ID, Role::Viewer)
        .await
        .unwrap();
    let app = with_bearer(groundwork_server::router(state), &token).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let url = format!("http://{addr}/api/v1/outputs/{}/download.tif", output.id);

    // The protocol, seen from an HTTP client.
    let http = reqwest::Client::new();
    let whole = http.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let file = std::fs::read(&path).unwrap();
    assert_eq!(whole.bytes().await.unwrap().as_ref(), file.as_slice());
    let part = http
        .get(&url)
        .header("range", "bytes=16384-16399")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        format!("bytes 16384-16399/{size}")
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), &file[16384..16400]);
    let beyond = http
        .get(&url)
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(
        beyond.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{size}")
    );

    // GDAL opens it by URL and reads the same pixels.
    let read = tokio::task::spawn_blocking(move || {
        gdal::config::set_thread_local_config_option(
            "GDAL_HTTP_HEADERS",
            &format!("Authorization: Bearer {token}"),
        )
        .unwrap();
        gdal::config::set_thread_local_config_option("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
            .unwrap();
        let ds = gdal::Dataset::open(format!("/vsicurl/{url}")).unwrap();
        assert_eq!(ds.raster_size(), (512, 512));
        let band = ds.rasterband(1).unwrap();
        band.read_as::<u8>((0, 0), (512, 512), (512, 512), None)
            .unwrap()
            .data()
            .to_vec()
    })
    .await
    .unwrap();
    assert_eq!(read, data);
}
