//! `groundwork demo`: the whole pipeline on an offline demo scene of the family, served until interrupted.

mod pipeline;

use super::db::{Database, DbArgs};
use super::worker::{WorkerOptions, worker_config};
use anyhow::Context;
use clap::Args;
use groundwork_server::{AppState, objects};
use groundwork_worker::{Registry, Worker};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// PostgreSQL URL. Without it, a private cluster is started in `<demo-dir>/pg`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Folder of the demo's own state: catalogue, database cluster, objects.
    #[arg(long, env = "GROUNDWORK_DEMO_DIR", default_value = ".groundwork/demo")]
    demo_dir: PathBuf,
    /// Address to serve the API, the web UI and the demo STAC API on.
    #[arg(long, env = "GROUNDWORK_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Stop when the demo is done instead of serving the map until interrupted.
    #[arg(long)]
    exit: bool,
    /// In-process workers (0: the pipeline waits for `groundwork worker` processes started with
    /// `--object-store file://<demo-dir>/objects` and `--allow-host` for this address).
    #[arg(long, default_value_t = 1)]
    local_workers: usize,
    #[command(flatten)]
    basemap: groundwork_server::basemap::BasemapArgs,
    /// Training epochs.
    #[arg(long, default_value_t = pipeline::DemoRun::default().epochs)]
    epochs: usize,
    /// Point labels sampled per class from the ground truth.
    #[arg(long, default_value_t = pipeline::DemoRun::default().labels_per_class)]
    labels_per_class: usize,
    /// Side of the demo scene in 10 m pixels (a multiple of 64; 512 = 64 windows; 3200 ≈ 1,000 km²,
    /// whose generation holds about 1 GB).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(128..=4096))]
    scene_px: u32,
    /// Scene of the demo family: classic, tropical-haze, us-cropland, smallholder, boreal-lakes,
    /// dryland (`classic` is the original demo).
    #[arg(long, default_value = "classic")]
    scene: String,
    /// Seed of the scene's pixels (default: the scene's default seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Small polygon labels sampled per class, imported with the points (default: none for `classic`,
    /// 2 for the other scenes).
    #[arg(long)]
    polygons_per_class: Option<usize>,
    /// Write the run's numbers (scene, seed, candidates, map accuracy, edge accuracy, seconds, and
    /// `phases`: each phase's wall time and steps, windows, predicted km², database size) as JSON to
    /// this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Modalities of the project, comma-separated: `sentinel2_l2a` (always), `sentinel1`, `landsat`.
    /// With `landsat` the scene also gets Landsat 9 Collection 2 Level-2 scenes, one a month.
    #[arg(long, value_delimiter = ',', default_value = "sentinel2_l2a")]
    modalities: Vec<groundwork_types::Modality>,
    /// Upper-left corner of the scene in metres of its UTM zone, `EASTING,NORTHING` (default: the
    /// scene's own). `247040,5000320` puts the classic scene (EPSG:32633) across 12° E, the boundary
    /// of UTM zones 32 and 33, so the area is processed in both.
    #[arg(long, value_delimiter = ',', value_name = "EASTING,NORTHING")]
    origin: Option<Vec<f64>>,
    /// Encoder patch size (1–8).
    #[arg(long, default_value_t = pipeline::DemoRun::default().patch_size)]
    patch_size: i32,
    /// Root of OlmoEarth checkpoints (`model fetch`, `model import`); without one, training starts
    /// from random weights, which the demo's project allows (`allow_random_init`), and says so.
    #[arg(
        long,
        env = "GROUNDWORK_MODEL_DIR",
        default_value = "./.groundwork/models"
    )]
    model_dir: PathBuf,
}

/// `groundwork demo`.
pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    use pipeline as d;
    let started = std::time::Instant::now();
    let seed = args
        .seed
        .unwrap_or(groundwork_imagery::DemoOptions::default().seed);
    let scene = groundwork_imagery::DemoOptions::scene(&args.scene, seed)
        .with_context(|| format!("--scene {}", args.scene))?;
    let classic = args.scene == "classic";
    let mut modalities = vec![groundwork_types::Modality::Sentinel2L2a];
    for m in &args.modalities {
        if !modalities.contains(m) {
            modalities.push(*m);
        }
    }
    let origin = match args.origin.as_deref() {
        Some(&[e, n]) if e.is_finite() && n.is_finite() => (e, n),
        Some(other) => anyhow::bail!("--origin takes EASTING,NORTHING, not {other:?}"),
        None => scene.origin,
    };
    let opts = d::DemoRun {
        scene: args.scene.clone(),
        epochs: args.epochs.clamp(1, 500),
        labels_per_class: args.labels_per_class.max(1),
        polygons_per_class: args
            .polygons_per_class
            .unwrap_or(if classic { 0 } else { 2 })
            .min(50),
        patch_size: args.patch_size,
        data: groundwork_imagery::DemoOptions {
            size: usize::try_from(args.scene_px / 64 * 64).unwrap_or(512),
            origin,
            landsat: modalities.contains(&groundwork_types::Modality::Landsat),
            ..scene
        },
        modalities,
        ..d::DemoRun::default()
    };
    opts.data
        .validate()
        .with_context(|| format!("demo scene {}", args.scene))?;
    std::fs::create_dir_all(&args.demo_dir)
        .with_context(|| format!("creating {}", args.demo_dir.display()))?;
    let data_dir = args.demo_dir.join("data");
    eprintln!(
        "generating the demo scene {} (seed {seed}, {} px) in {}",
        opts.scene,
        opts.data.size,
        data_dir.display()
    );
    d::prepare_data(&data_dir, &opts.data).await?;
    let db = Database::open(
        &DbArgs {
            database_url: args.database_url.clone(),
            data_dir: args.demo_dir.clone(),
        },
        20,
    )
    .await?;
    let objects_dir = std::path::absolute(args.demo_dir.join("objects"))?;
    std::fs::create_dir_all(&objects_dir)?;
    let objects = objects::open(&format!("file://{}", objects_dir.display()))?;
    let mut config = worker_config(&WorkerOptions {
        pool: None,
        queues: Vec::new(),
        concurrency: 2,
        prefetch: groundwork_worker::WorkerConfig::DEFAULT_PREFETCH,
        lease_secs: 20,
        heartbeat_ms: 1000,
        name: Some("demo".into()),
        object_store: Some(format!("file://{}", objects_dir.display())),
        model_dir: args.model_dir.clone(),
        outbound: super::outbound::OutboundOptions::default(),
    })?;
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (choose another with --bind)",
                args.bind
            )
        })?;
    let base = format!("http://{}", listener.local_addr()?);
    config.in_process = true;
    // The demo catalogue is served by this process; its workers may read it, and nothing else local.
    config.outbound = config
        .outbound
        .with_allowed_prefix(format!("{base}/demo/stac/"));
    let mut workers = Vec::new();
    for _ in 0..args.local_workers {
        workers.push(Worker::start(db.pool.clone(), config.clone(), Registry::builtin()).await?);
    }
    let mut state = AppState::new(db.pool.clone()).with_basemap(args.basemap.basemap());
    state.objects = Some(objects.clone());
    state.outbound = std::sync::Arc::new(
        state
            .outbound
            .as_ref()
            .clone()
            .with_allowed_prefix(format!("{base}/demo/stac/")),
    );
    let app = d::app(state, &data_dir, &base)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            tokio::select! {
                _ = stop_rx => {}
                () = super::shutdown_signal() => {}
            }
        })
        .await
    });
    eprintln!("Groundwork is running at {base}/");
    let result = d::run(
        &db.pool,
        objects,
        &base,
        &data_dir,
        &opts,
        &mut |line: &str| eprintln!("{line}"),
    )
    .await;
    let outcome = match result {
        Ok((summary, login)) => {
            let seconds = started.elapsed().as_secs_f64();
            let fmt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
            eprintln!();
            eprintln!(
                "scene {} seed {seed}: {} labels; candidates on the labelled test pixels and (map) on every test-window pixel:",
                opts.scene, summary.labels
            );
            eprintln!(
                "  {:<14} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "candidate",
                "chosen",
                "val_score",
                "accuracy",
                "macro_f1",
                "edge_acc",
                "map",
                "map_edge"
            );
            for c in &summary.candidates {
                eprintln!(
                    "  {:<14} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    c.name,
                    if c.chosen { "*" } else { "" },
                    fmt(c.val_score),
                    fmt(c.accuracy),
                    fmt(c.macro_f1),
                    fmt(c.edge_accuracy),
                    fmt(c.map_accuracy),
                    fmt(c.map_edge_accuracy)
                );
            }
            if let Some(reason) = &summary.selection_reason {
                eprintln!("  {reason}");
            }
            eprintln!(
                "published map on the test windows: accuracy {:.3}, within 30 m of a class edge {} ({seconds:.0} s in all)",
                summary.accuracy,
                fmt(summary.edge_accuracy)
            );
            eprintln!(
                "test-split pixel accuracy of the map: {:.3} (majority class everywhere: {:.3})",
                summary.accuracy, summary.majority_accuracy
            );
            eprintln!(
                "frozen-encoder baseline on the same pixels: {}",
                fmt(summary.baseline_accuracy)
            );
            eprintln!(
                "on the labelled test pixels (evaluation report): fine-tuned model {}, baseline {}",
                fmt(summary.model_label_accuracy),
                fmt(summary.baseline_label_accuracy)
            );
            let p = &summary.phases;
            eprintln!(
                "phases: acquisition {} windows in {:.0} s ({:.2} windows/s); training {:.0} s; \
                 prediction {:.1} km² in {:.0} s ({:.1} km²/h)",
                p.windows_acquired.unwrap_or(0),
                p.acquire.seconds,
                p.windows_acquired.unwrap_or(0) as f64 / p.acquire.seconds.max(1e-9),
                p.train.seconds,
                p.predicted_km2,
                p.predict.seconds,
                p.predicted_km2 / p.predict.seconds.max(1e-9) * 3600.0
            );
            eprintln!("map: {}", summary.map_url);
            if !args.exit {
                eprintln!(
                    "sign in as {} with the password {} (new on every demo run); Ctrl-C stops the server",
                    login.email, login.password
                );
            }
            let json = serde_json::json!({
                "scene": opts.scene,
                "seed": seed,
                "scene_px": opts.data.size,
                "modalities": opts.modalities,
                "epsg": opts.data.epsg,
                "origin": [opts.data.origin.0, opts.data.origin.1],
                "labels": summary.labels,
                "accuracy": summary.accuracy,
                "edge_accuracy": summary.edge_accuracy,
                "baseline_accuracy": summary.baseline_accuracy,
                "majority_accuracy": summary.majority_accuracy,
                "chosen": summary.chosen,
                "selection_reason": summary.selection_reason,
                "candidates": summary.candidates,
                "test_windows": summary.test_windows,
                "map_url": summary.map_url,
                "seconds": seconds,
                "project_id": summary.project_id,
                "phases": summary.phases,
            });
            println!("{json}");
            match &args.summary_json {
                Some(path) => serde_json::to_vec_pretty(&json)
                    .map_err(anyhow::Error::from)
                    .and_then(|bytes| {
                        std::fs::write(path, bytes)
                            .with_context(|| format!("writing the summary to {}", path.display()))
                    }),
                None => Ok(()),
            }
        }
        Err(e) => Err(e),
    };
    if outcome.is_ok() && !args.exit {
        super::shutdown_signal().await;
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    for worker in workers {
        worker.shutdown().await;
    }
    db.close().await;
    outcome
}
