//! `fetch_model` against a local HTTP server that serves the fixture files in the hub's URL layout.

use std::net::SocketAddr;

use crate::common::fixture;
use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::routing::get;
use olmoearth::fetch::{CHECKSUMS_FILE, Checksums, Verification, fetch_model, model_dir};
use olmoearth::model_info;
use olmoearth::{Error, ModelSize};

async fn serve_file(
    UrlPath((repo, file)): UrlPath<(String, String)>,
) -> Result<Vec<u8>, StatusCode> {
    // The Large "release" is the Nano fixture too: its weights do not match the published hash.
    if !["OlmoEarth-v1-Nano", "OlmoEarth-v1-Large"].contains(&repo.as_str())
        || !["config.json", "weights.pth"].contains(&file.as_str())
    {
        return Err(StatusCode::NOT_FOUND);
    }
    std::fs::read(fixture(&file)).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

async fn spawn_hub() -> SocketAddr {
    let app = Router::new().route("/allenai/{repo}/resolve/main/{file}", get(serve_file));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

#[tokio::test]
async fn fetch_downloads_config_and_weights_into_a_loadable_model_dir() {
    let addr = spawn_hub().await;
    let root = tempfile::tempdir().expect("tempdir");
    let fetched = fetch_model(
        &reqwest::Client::new(),
        ModelSize::Nano,
        root.path(),
        &format!("http://{addr}/"),
    )
    .await
    .expect("fetch");
    let dir = fetched.dir.clone();
    assert_eq!(dir, model_dir(root.path(), ModelSize::Nano));
    // No hash is published for Nano: checksums.json records the files' hashes and says so.
    let recorded = Checksums::from_json(
        &std::fs::read(dir.join(CHECKSUMS_FILE)).expect("checksums.json"),
        &dir,
    )
    .expect("valid checksums");
    assert_eq!(recorded, fetched.checksums);
    assert_eq!(recorded.source, "fetch");
    assert!(!recorded.verified());
    for f in &recorded.files {
        assert_eq!(f.verification, Verification::NoPublishedHash, "{f:?}");
        let (sha, bytes) = olmoearth::fetch::sha256_file(&fixture(&f.name)).expect("hash");
        assert_eq!((f.sha256.as_str(), f.bytes), (sha.as_str(), bytes), "{f:?}");
    }
    for f in ["config.json", "weights.pth"] {
        let got = std::fs::read(dir.join(f)).expect("read");
        assert_eq!(got, std::fs::read(fixture(f)).expect("fixture"), "{f}");
    }
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".part")), "{names:?}");
    assert!(names.contains(&CHECKSUMS_FILE.to_owned()), "{names:?}");
    let info = tokio::task::spawn_blocking(move || model_info(&dir))
        .await
        .expect("join")
        .expect("info");
    assert_eq!(info.config.size(), Some(ModelSize::Nano));
}

#[tokio::test]
async fn a_missing_file_is_an_error_naming_the_url_and_leaves_no_partial_file() {
    let addr = spawn_hub().await;
    let root = tempfile::tempdir().expect("tempdir");
    let e = fetch_model(
        &reqwest::Client::new(),
        ModelSize::Tiny,
        root.path(),
        &format!("http://{addr}"),
    )
    .await
    .expect_err("404");
    assert!(matches!(e, Error::Download { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("/allenai/OlmoEarth-v1-Tiny/resolve/main/config.json") && msg.contains("404"),
        "{msg}"
    );
    let dir = model_dir(root.path(), ModelSize::Tiny);
    assert_eq!(std::fs::read_dir(&dir).expect("ls").count(), 0);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_an_error() {
    // Bind and drop a listener to get a closed local port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let root = tempfile::tempdir().expect("tempdir");
    let e = fetch_model(
        &reqwest::Client::new(),
        ModelSize::Nano,
        root.path(),
        &format!("http://127.0.0.1:{port}"),
    )
    .await
    .expect_err("refused");
    assert!(matches!(e, Error::Download { .. }), "{e}");
}

#[tokio::test]
async fn weights_that_differ_from_the_published_hash_are_refused_and_nothing_is_installed() {
    let addr = spawn_hub().await;
    let root = tempfile::tempdir().expect("tempdir");
    let e = fetch_model(
        &reqwest::Client::new(),
        ModelSize::Large,
        root.path(),
        &format!("http://{addr}"),
    )
    .await
    .expect_err("the fixture is not the Large release");
    assert!(matches!(e, Error::HashMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("OlmoEarth-v1-Large weights.pth")
            && msg.contains("1adb5026bd520c54bc415a1282386954927623bab81d01be2f5b6379cc039035"),
        "{msg}"
    );
    let dir = model_dir(root.path(), ModelSize::Large);
    let left: Vec<String> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
