//! Benchmark (not a test): materialise ≥ 200 windows of a Sentinel-2 scene (12 bands + SCL) from local
//! COGs served over HTTP with range support, and compare with a Python/rasterio baseline doing the same
//! reads and reprojection (run when `BENCH_PYTHON` names a Python with rasterio; see
//! `scripts/bench-imagery.sh`).
//!
//! Both sides read every asset of the scene onto each 64×64 window grid at 10 m (bilinear for the bands,
//! nearest for SCL) through GDAL `/vsicurl/`; bytes are counted by the file server.
#![expect(clippy::unwrap_used, reason = "benchmark")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use groundwork_imagery::demo::write_cog;
use groundwork_imagery::{
    AcquireRequest, CancellationToken, Modality, Source, TimeBinning, WindowSpec, acquire,
};
use serde_json::json;
use stac::api::TransactionClient;

const KEYS: [(&str, u32); 13] = [
    ("blue", 10),
    ("green", 10),
    ("red", 10),
    ("nir", 10),
    ("rededge1", 20),
    ("rededge2", 20),
    ("rededge3", 20),
    ("nir08", 20),
    ("swir16", 20),
    ("swir22", 20),
    ("coastal", 60),
    ("nir09", 60),
    ("scl", 20),
];

async fn count_bytes(State(bytes): State<Arc<AtomicU64>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if let Some(n) = resp
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        bytes.fetch_add(n, Ordering::Relaxed);
    }
    resp
}

#[tokio::main]
async fn main() {
    let side_windows: i64 = std::env::var("BENCH_SIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let dir = tempfile::tempdir().unwrap();
    let (c0, r0) = (781i64, 7797i64);
    let n = (side_windows * 64) as usize;
    let (x0, y0) = (c0 as f64 * 640.0, (r0 + side_windows) as f64 * 640.0);
    let t = Instant::now();
    let mut assets = serde_json::Map::new();
    for (b, (key, res)) in KEYS.iter().enumerate() {
        let m = (n * 10).div_ceil(*res as usize);
        let gt = [x0, f64::from(*res), 0.0, y0, 0.0, -f64::from(*res)];
        if *key == "scl" {
            let data: Vec<u8> = (0..m * m)
                .map(|p| {
                    if (p / m + p % m).is_multiple_of(17) {
                        9
                    } else {
                        4
                    }
                })
                .collect();
            write_cog(
                &dir.path().join("scl.tif"),
                &data,
                m,
                m,
                gt,
                32633,
                Some(0.0),
            )
            .unwrap();
        } else {
            // A smooth field plus per-pixel noise, so the COGs compress like real imagery does.
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ b as u64;
            let data: Vec<u16> = (0..m * m)
                .map(|p| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (1000
                        + b * 100
                        + (p % m) * 7 % 900
                        + (p / m) * 3 % 500
                        + (state % 400) as usize) as u16
                })
                .collect();
            write_cog(
                &dir.path().join(format!("{key}.tif")),
                &data,
                m,
                m,
                gt,
                32633,
                Some(0.0),
            )
            .unwrap();
        }
        assets.insert((*key).into(), json!({"href": format!("{key}.tif")}));
    }
    let total_file_bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!(
        "generated {n}x{n} px scene, {:.1} MB of COGs, in {:.1} s",
        total_file_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    // STAC API + range-capable file server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let root = format!("http://{}", listener.local_addr().unwrap());
    let mut backend = stac_server::MemoryBackend::new();
    backend
        .add_collection(stac::Collection::new("sentinel-2-l2a", "bench"))
        .await
        .unwrap();
    let mut abs_assets = assets.clone();
    for a in abs_assets.values_mut() {
        a["href"] = json!(format!("{root}/files/{}", a["href"].as_str().unwrap()));
    }
    let w_first = WindowSpec::from_cell(32633, c0, r0, 64, 10.0).unwrap();
    let w_last = WindowSpec::from_cell(
        32633,
        c0 + side_windows - 1,
        r0 + side_windows - 1,
        64,
        10.0,
    )
    .unwrap();
    let (w, s, e, nn) = (
        w_first.wgs84_bounds[0].min(w_last.wgs84_bounds[0]) - 0.01,
        w_first.wgs84_bounds[1] - 0.01,
        w_last.wgs84_bounds[2] + 0.01,
        w_last.wgs84_bounds[3] + 0.01,
    );
    let item = json!({"type": "Feature", "stac_version": "1.1.0", "id": "BENCH", "collection": "sentinel-2-l2a",
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, nn], [w, nn], [w, s]]]},
        "properties": {"datetime": "2024-06-01T10:00:00Z", "eo:cloud_cover": 1.0}, "links": [], "assets": abs_assets});
    backend
        .add_item(serde_json::from_value(item).unwrap())
        .await
        .unwrap();
    let api = stac_server::Api::new(backend, &format!("{root}/")).unwrap();
    let bytes = Arc::new(AtomicU64::new(0));
    let files = Router::new()
        .fallback_service(tower_http::services::ServeDir::new(dir.path()))
        .layer(axum::middleware::from_fn_with_state(
            bytes.clone(),
            count_bytes,
        ));
    let app = stac_server::routes::from_api(api).nest("/files", files);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut windows = Vec::new();
    for c in c0..c0 + side_windows {
        for r in r0..r0 + side_windows {
            windows.push(WindowSpec::from_cell(32633, c, r, 64, 10.0).unwrap());
        }
    }
    let count = windows.len();
    let workers: usize = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);

    // Rust, twice on the same catalogue: as a worker runs it (the outbound-request policy allows the
    // loopback host; every asset URL is preflighted and GDAL's requests go through the policy's
    // proxy), and as the trusted command line runs it (direct). GDAL's HTTP cache is emptied before
    // each run and the runs alternate, best of two each.
    let policy = groundwork_imagery::OutboundPolicy::default()
        .with_allowed_host("127.0.0.1".parse().unwrap());
    let runs = [
        ("policy", policy.clone()),
        ("direct", groundwork_imagery::OutboundPolicy::trusted()),
        ("policy", policy),
        ("direct", groundwork_imagery::OutboundPolicy::trusted()),
    ];
    let mut best: std::collections::BTreeMap<&str, (f64, u64)> = std::collections::BTreeMap::new();
    // The policy run's windows, compared with Python's below.
    let mut policy_store = None;
    for (name, outbound) in runs {
        let mut req = AcquireRequest::new(
            Source::Api(root.clone()),
            vec![Modality::Sentinel2L2a],
            "2024-06-01".parse().unwrap(),
            "2024-06-30".parse().unwrap(),
        );
        req.binning = TimeBinning::Whole;
        req.outbound = outbound;
        req.window_concurrency = workers;
        req.read_concurrency = 4;
        req.read_threads = workers;
        groundwork_imagery::read::clear_http_cache();
        let store = object_store::memory::InMemory::new();
        bytes.store(0, Ordering::SeqCst);
        let t = Instant::now();
        let report = acquire(
            &windows,
            &req,
            &store,
            &object_store::path::Path::default(),
            &|_| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        let s = t.elapsed().as_secs_f64();
        assert_eq!(
            report.succeeded,
            count,
            "{:?}",
            report.windows.iter().find(|w| w.reason.is_some())
        );
        let b = bytes.load(Ordering::SeqCst);
        let e = best.entry(name).or_insert((f64::INFINITY, 0));
        if s < e.0 {
            *e = (s, b);
        }
        if name == "policy" {
            policy_store = Some(store);
        }
    }
    let store = policy_store.unwrap();
    for (name, (s, b)) in &best {
        println!(
            "rust ({name}): {count} windows x 13 assets in {s:.2} s = {:.1} windows/s, {:.1} MB over HTTP = {:.1} MB/s ({} workers)",
            count as f64 / s,
            *b as f64 / 1e6,
            *b as f64 / 1e6 / s,
            workers
        );
    }
    let rust_s = best["policy"].0;
    println!("policy / direct time: {:.2}x", rust_s / best["direct"].0);
    let rust_wps = count as f64 / rust_s;

    // Python baseline.
    let Ok(python) = std::env::var("BENCH_PYTHON") else {
        println!(
            "python: skipped (set BENCH_PYTHON to a Python with rasterio; scripts/bench-imagery.sh does)"
        );
        return;
    };
    let spec = json!({
        "windows": windows.iter().map(|w| json!({"id": w.id, "transform": w.geotransform, "size": w.size})).collect::<Vec<_>>(),
        "crs": "EPSG:32633",
        "assets": KEYS.iter().map(|(k, _)| json!({"href": format!("{root}/files/{k}.tif"), "nearest": *k == "scl"})).collect::<Vec<_>>(),
        "workers": workers,
        "dump": dir.path().join("python.f32"),
    });
    let spec_path = dir.path().join("bench-spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/bench_imagery_baseline.py"
    );
    bytes.store(0, Ordering::SeqCst);
    let py = tokio::process::Command::new(&python)
        .arg(script)
        .arg(&spec_path)
        .output()
        .await
        .unwrap();
    let py_bytes = bytes.load(Ordering::SeqCst);
    if !py.status.success() {
        println!("python: failed: {}", String::from_utf8_lossy(&py.stderr));
        return;
    }
    let out: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let py_s = out["seconds"].as_f64().unwrap();
    let py_wps = count as f64 / py_s;
    println!(
        "python: {count} windows x 13 assets in {py_s:.2} s = {py_wps:.1} windows/s, {:.1} MB over HTTP = {:.1} MB/s ({} threads, rasterio {})",
        py_bytes as f64 / 1e6,
        py_bytes as f64 / 1e6 / py_s,
        workers,
        out["rasterio"].as_str().unwrap_or("?")
    );
    println!(
        "ratio:  {:.2}x windows/s (rust / python)",
        rust_wps / py_wps
    );

    // Parity: the same pixels from both sides (Rust where SCL says clear), per band.
    let dump = std::fs::read(dir.path().join("python.f32")).unwrap();
    let py_vals: Vec<f32> = dump
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let bands = Modality::Sentinel2L2a.bands();
    let sets = Modality::Sentinel2L2a.band_sets();
    let mut max_diff = [0f32; 12];
    let mut sum_diff = [0f64; 12];
    let mut n_cmp = [0u64; 12];
    for (i, w) in windows.iter().enumerate() {
        use object_store::ObjectStoreExt;
        let path =
            object_store::path::Path::from(format!("windows/{}/sentinel2_l2a.safetensors", w.id));
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        let t = groundwork_imagery::output::read_f32(&bytes, "sentinel2_l2a").unwrap();
        let m = groundwork_imagery::output::read_u8(&bytes, "sentinel2_l2a_mask").unwrap();
        for c in 0..12 {
            let s = sets.iter().position(|s| s.contains(&c)).unwrap();
            for p in 0..64 * 64 {
                let py = py_vals[(i * 12 + c) * 4096 + p];
                if m.data[p * 3 + s] != 0 || py.is_nan() {
                    continue;
                }
                let d = (t.data[p * 12 + c] - py).abs();
                max_diff[c] = max_diff[c].max(d);
                sum_diff[c] += f64::from(d);
                n_cmp[c] += 1;
            }
        }
    }
    println!("parity (|rust - rasterio| over clear pixels, DN):");
    for c in 0..12 {
        println!(
            "  {:>3}: mean {:.4}, max {:.4} over {} px",
            bands[c],
            sum_diff[c] / n_cmp[c].max(1) as f64,
            max_diff[c],
            n_cmp[c]
        );
    }
}
