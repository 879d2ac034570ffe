//! `groundwork serve`: the API server and web UI, with in-process workers.

use super::db::{Database, DbArgs};
use super::worker::{WorkerOptions, worker_config};
use anyhow::Context;
use clap::Args;
use groundwork_server::{AppState, router};
use groundwork_worker::{Registry, Worker};
use std::path::PathBuf;
use tracing::info;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on.
    #[arg(long, env = "GROUNDWORK_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// In-process workers (0 for a server that only serves).
    #[arg(long, env = "GROUNDWORK_LOCAL_WORKERS", default_value_t = 1)]
    local_workers: usize,
    /// Largest AOI accepted, km².
    #[arg(long, env = "GROUNDWORK_MAX_AOI_KM2", default_value_t = 10_000.0)]
    max_aoi_km2: f64,
    /// Serve this demo catalogue (made by `groundwork demo-data`) as a STAC API under /demo/stac.
    #[arg(long, env = "GROUNDWORK_DEMO_DATA")]
    demo_data: Option<PathBuf>,
    /// Mark the session cookie `Secure`, so browsers send it over HTTPS only: `true` or `false` (also
    /// `1`/`0`, `yes`/`no`, `on`/`off`). Unset, it is on when the server listens on an address other
    /// than loopback (users then arrive through HTTPS, e.g. a TLS-terminating proxy) and off on
    /// loopback, where plain `http://127.0.0.1` would never get a `Secure` cookie back. Set `false` to
    /// serve plain HTTP on another address.
    #[arg(long, env = "GROUNDWORK_SECURE_COOKIES", value_name = "BOOL",
        num_args = 0..=1, default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    secure_cookies: Option<bool>,
    #[command(flatten)]
    basemap: groundwork_server::basemap::BasemapArgs,
    /// Seconds a request may take to produce its response head (a download's body streams on
    /// untimed); later it is answered 503 `timeout`.
    #[arg(long, env = "GROUNDWORK_REQUEST_TIMEOUT_SECS", default_value_t = groundwork_server::api::DEFAULT_REQUEST_TIMEOUT_SECS)]
    request_timeout_secs: u64,
    /// Requests handled at once; others wait for a slot within the request timeout.
    #[arg(long, env = "GROUNDWORK_MAX_CONCURRENT_REQUESTS", default_value_t = groundwork_server::api::DEFAULT_MAX_CONCURRENT_REQUESTS)]
    max_concurrent_requests: usize,
    /// An origin (`https://host[:port]`) whose web pages may read STAC, tiles and downloads with CORS,
    /// sending an API token (never cookies); repeat, or comma-separate in the variable. None by default.
    #[arg(
        long = "cors-origin",
        env = "GROUNDWORK_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Size cap of the local cache of output rasters (under the data folder, `cache/`), MiB; the
    /// least recently used files are evicted first.
    #[arg(long, env = "GROUNDWORK_CACHE_MAX_MB", default_value_t = 2048)]
    cache_max_mb: u64,
    #[command(flatten)]
    worker: WorkerOptions,
}

/// `groundwork serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = worker_config(&args.worker)?;
    let db = Database::open(&args.db, 30).await?;
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let addr = listener.local_addr()?;
    if args.demo_data.is_some() {
        // The server's own demo catalogue stays readable by its workers (and only that part of it).
        config.outbound = config
            .outbound
            .with_allowed_prefix(format!("http://{addr}/demo/stac/"));
    }
    let mut workers = Vec::new();
    config.in_process = true;
    for _ in 0..args.local_workers {
        workers.push(Worker::start(db.pool.clone(), config.clone(), Registry::builtin()).await?);
    }
    let mut state = AppState::new(db.pool.clone()).with_basemap(args.basemap.basemap());
    state.max_aoi_km2 = args.max_aoi_km2;
    state.request_timeout = std::time::Duration::from_secs(args.request_timeout_secs.max(1));
    state.max_concurrent_requests = args.max_concurrent_requests.max(1);
    state.objects.clone_from(&config.objects);
    state.cors_origins = args
        .cors_origins
        .iter()
        .filter(|o| !o.trim().is_empty())
        .map(|o| {
            groundwork_server::hygiene::cors_origin(o).with_context(|| {
                format!("--cors-origin {o:?} is not an origin (scheme://host[:port])")
            })
        })
        .collect::<anyhow::Result<_>>()?;
    state.cache = std::sync::Arc::new(groundwork_server::cache::FileCache::new(
        args.db.data_dir.join("cache"),
        args.cache_max_mb.max(1).saturating_mul(1 << 20),
    ));
    state.outbound = std::sync::Arc::new(config.outbound.clone());
    // A fresh installation reachable from other machines: setup needs a code only the operator sees.
    if !addr.ip().is_loopback() && !groundwork_store::accounts::any_user(&db.pool).await? {
        state.setup_code = Some(groundwork_store::accounts::new_secret("")[..24].to_owned());
    }
    let setup_code = state.setup_code.clone();
    let stop_maintenance = tokio_util::sync::CancellationToken::new();
    let mut maintenance = groundwork_server::maintenance::spawn(&state, &stop_maintenance);
    if workers.is_empty() {
        // In-process workers run the reaper; without them (remote workers only), the server does.
        maintenance.push(tokio::spawn(groundwork_worker::run_reaper(
            db.pool.clone(),
            config.reap_every,
            config.lease,
            stop_maintenance.clone(),
        )));
    }
    state.secure_cookies =
        groundwork_server::hygiene::secure_cookies(args.secure_cookies, addr.ip());
    let mut app = router(state);
    if let Some(dir) = &args.demo_data {
        let demo = groundwork_server::demo_stac::demo_stac_router(
            dir,
            &format!("http://{addr}/demo/stac"),
        )
        .with_context(|| format!("serving the demo catalogue in {}", dir.display()))?;
        app = app.nest("/demo/stac", demo);
        println!("Demo STAC API at http://{addr}/demo/stac");
    }
    println!(
        "Groundwork is running at http://{addr}/ (API: http://{addr}/api/v1, OpenAPI: http://{addr}/api/openapi.json)"
    );
    if let Some(code) = setup_code {
        println!("Setup code (asked for once, by the first-run setup at /setup): {code}");
        info!("first-run setup needs the setup code printed on standard output");
    }
    // The peer address feeds the per-address sign-in limit and the audit log.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(super::shutdown_signal())
    .await?;
    info!("shutting down");
    stop_maintenance.cancel();
    for m in maintenance {
        let _ = m.await;
    }
    for w in workers {
        w.shutdown().await;
    }
    db.close().await;
    Ok(())
}
