//! The `groundwork model` commands on the built binary: `fetch` against a local HTTP server that serves
//! the Nano fixture files in the Hugging Face hub's URL layout, then `info` on what it downloaded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::routing::get;
use olmoearth::ModelSize;
use olmoearth::fetch::model_dir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../olmoearth/tests/fixtures/olmoearth-nano")
        .join(name)
}

async fn serve_file(
    UrlPath((repo, file)): UrlPath<(String, String)>,
) -> Result<Vec<u8>, StatusCode> {
    if repo != "OlmoEarth-v1-Nano" || !["config.json", "weights.pth"].contains(&file.as_str()) {
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

/// Runs the binary with `args`; returns its standard output, or panics with its standard error.
async fn groundwork(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_groundwork"))
        .args(args)
        .env_remove("GROUNDWORK_MODEL_DIR")
        .env_remove("GROUNDWORK_HF_ENDPOINT")
        .env_remove("GROUNDWORK_OBJECT_STORE")
        .output()
        .await
        .expect("run groundwork");
    assert!(
        out.status.success(),
        "groundwork {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn model_fetch_downloads_from_the_endpoint_and_model_info_reads_it() {
    let addr = spawn_hub().await;
    let root = tempfile::tempdir().expect("tempdir");
    let root_arg = root.path().to_string_lossy().into_owned();
    let endpoint = format!("http://{addr}");
    let out = groundwork(&[
        "model",
        "fetch",
        "nano",
        "--dir",
        &root_arg,
        "--endpoint",
        &endpoint,
        "--allow-host",
        &addr.to_string(),
    ])
    .await;
    let dir = model_dir(root.path(), ModelSize::Nano);
    assert!(out.contains(&dir.display().to_string()), "{out}");
    let out = groundwork(&["model", "info", &dir.to_string_lossy()]).await;
    assert!(out.contains("OlmoEarth v1 nano"), "{out}");
}

#[tokio::test]
async fn model_import_installs_a_file_says_it_has_no_published_hash_and_shares_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let objects = tempfile::tempdir().expect("tempdir");
    let out = groundwork(&[
        "model",
        "import",
        &fixture("weights.pth").to_string_lossy(),
        "--dir",
        &root.path().to_string_lossy(),
        "--object-store",
        &format!("file://{}", objects.path().display()),
    ])
    .await;
    assert!(
        out.contains(
            "no published hash for OlmoEarth-v1-Nano weights.pth; structure checked; sha256 "
        ),
        "{out}"
    );
    assert!(out.contains("models/OlmoEarth-v1-Nano/"), "{out}");
    let dir = model_dir(root.path(), ModelSize::Nano);
    for f in ["config.json", "weights.pth", "checksums.json"] {
        assert!(dir.join(f).is_file(), "{f} installed");
        assert!(
            objects
                .path()
                .join("models/OlmoEarth-v1-Nano")
                .join(f)
                .is_file(),
            "{f} shared"
        );
    }
    let fetched = model_dir(root.path(), ModelSize::Nano);
    let out = groundwork(&["model", "info", &fetched.to_string_lossy()]).await;
    assert!(out.contains("OlmoEarth v1 nano"), "{out}");

    // Large weights that are not the release are refused, and nothing is installed.
    let fake = root.path().join("fake-large.pth");
    std::fs::write(&fake, vec![1u8; 1024]).expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_groundwork"))
        .args([
            "model",
            "import",
            &fake.to_string_lossy(),
            "--size",
            "large",
        ])
        .env("GROUNDWORK_MODEL_DIR", root.path())
        .env_remove("GROUNDWORK_OBJECT_STORE")
        .output()
        .await
        .expect("run groundwork");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("differs from the published") && stderr.contains("--allow-unverified"),
        "{stderr}"
    );
    assert!(
        !model_dir(root.path(), ModelSize::Large)
            .join("weights.pth")
            .exists()
    );
}

#[tokio::test]
async fn model_fetch_reads_the_endpoint_from_the_environment() {
    let addr = spawn_hub().await;
    let root = tempfile::tempdir().expect("tempdir");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_groundwork"))
        .args(["model", "fetch", "nano"])
        .env("GROUNDWORK_MODEL_DIR", root.path())
        .env("GROUNDWORK_HF_ENDPOINT", format!("http://{addr}"))
        .env("GROUNDWORK_ALLOW_HOSTS", format!("example.org,{addr}"))
        .output()
        .await
        .expect("run groundwork");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        model_dir(root.path(), ModelSize::Nano)
            .join("weights.pth")
            .exists()
    );
}

#[tokio::test]
async fn model_fetch_refuses_an_internal_endpoint_the_administrator_did_not_allow() {
    let addr = spawn_hub().await;
    let root = tempfile::tempdir().expect("tempdir");
    for allow in [None, Some(format!("127.0.0.1:{}", addr.port() + 1))] {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_groundwork"));
        cmd.args([
            "model",
            "fetch",
            "nano",
            "--endpoint",
            &format!("http://{addr}"),
        ])
        .env("GROUNDWORK_MODEL_DIR", root.path())
        .env_remove("GROUNDWORK_ALLOW_HOSTS");
        if let Some(a) = &allow {
            cmd.args(["--allow-host", a]);
        }
        let out = cmd.output().await.expect("run groundwork");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{allow:?}");
        assert!(
            stderr.contains("refused by the outbound-request policy"),
            "{allow:?}: {stderr}"
        );
        assert!(
            !model_dir(root.path(), ModelSize::Nano)
                .join("config.json")
                .exists()
        );
    }
}

#[tokio::test]
async fn the_binary_drops_no_proxy_so_gdal_cannot_bypass_the_outbound_policy() {
    // libcurl inside GDAL would connect directly to the hosts `no_proxy` lists, around the proxy that
    // applies the outbound-request policy; the binary removes the variable before anything runs.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_groundwork"))
        .args(["--help"])
        .env("no_proxy", "127.0.0.1,169.254.169.254")
        .env("NO_PROXY", "10.0.0.0/8")
        .output()
        .await
        .expect("run groundwork");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no_proxy is ignored"), "{stderr}");
    assert!(stderr.contains("NO_PROXY is ignored"), "{stderr}");
    let quiet = tokio::process::Command::new(env!("CARGO_BIN_EXE_groundwork"))
        .args(["--help"])
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .await
        .expect("run groundwork");
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("ignored"));
}
