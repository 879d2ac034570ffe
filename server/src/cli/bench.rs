//! `groundwork bench queue`: steps claimed + completed per second through the job system (apalis
//! dispatch + our step table) against a raw `FOR UPDATE SKIP LOCKED` loop on the same database, in the
//! same run; and the time to enqueue a 10,000-step fan-out.

use futures::future::BoxFuture;
use groundwork_store::jobs::{self, NewStep};
use groundwork_store::{DEFAULT_ORG_ID, PgPool, projects};
use groundwork_worker::steps::NoopArgs;
use groundwork_worker::{
    Registry, Step, StepArgs, StepContext, StepError, StepOutput, Worker, WorkerConfig,
};
use serde_json::json;
use std::time::{Duration, Instant};

use super::db::{Database, DbArgs};

/// `groundwork bench …`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Job-system throughput against a raw SKIP LOCKED loop, and fan-out enqueue time.
    Queue(QueueBench),
}

/// Runs a benchmark in a scratch database of its own, dropped afterwards.
pub async fn bench(command: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Queue(b) = command;
    let db = Database::open(&b.db, 60).await?;
    let scratch = format!("gw_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {scratch}")))
        .execute(&db.pool)
        .await?;
    let url = (*db.pool.connect_options()).clone().database(&scratch);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(80)
        .connect_with(url)
        .await?;
    groundwork_store::migrate(&pool).await?;
    let result = run(&pool, &b).await;
    pool.close().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database {scratch} with (force)"
    )))
    .execute(&db.pool)
    .await;
    db.close().await;
    result
}

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueBench {
    /// Where the scratch database is created (`DATABASE_URL`, or the local cluster).
    #[command(flatten)]
    pub db: DbArgs,
    /// Workers (each with its own apalis poller), and raw-loop clients.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Steps each worker runs at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Dispatch messages each worker slot fetches per poll (`groundwork worker --prefetch`).
    #[arg(long, default_value_t = groundwork_worker::WorkerConfig::DEFAULT_PREFETCH)]
    pub prefetch: usize,
    /// Steps to process in each measurement.
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Alternating rounds of the two sides.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Size of the fan-out whose enqueueing is timed.
    #[arg(long, default_value_t = 10_000)]
    pub fan_out: usize,
}

async fn project(pool: &PgPool) -> anyhow::Result<uuid::Uuid> {
    let f = projects::ProjectFields {
        name: "bench".into(),
        description: String::new(),
        aoi: json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [0.1, 0.0], [0.1, 0.1], [0.0, 0.0]]]}),
        bbox: [0.0, 0.0, 0.1, 0.1],
        area_km2: 61.0,
        start: chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default(),
        end: chrono::NaiveDate::from_ymd_opt(2024, 12, 31).unwrap_or_default(),
        task: groundwork_types::Task::Segmentation,
        classes: Vec::new(),
        modalities: vec![groundwork_types::Modality::Sentinel2L2a],
        model_size: groundwork_types::ModelSize::Nano,
        patch_size: 4,
        window_size: 64,
        license: "CC-BY-4.0".into(),
        license_url: None,
        allow_random_init: false,
    };
    Ok(projects::create(pool, DEFAULT_ORG_ID, &f).await?.id)
}

async fn raw_loop(pool: &PgPool, clients: usize, steps: usize) -> anyhow::Result<f64> {
    sqlx::query("create table if not exists bench_raw_job (id bigserial primary key, state text not null, payload jsonb)")
        .execute(pool)
        .await?;
    sqlx::query("truncate bench_raw_job").execute(pool).await?;
    sqlx::query("insert into bench_raw_job (state, payload) select 'queued', '{}' from generate_series(1, $1)")
        .bind(i64::try_from(steps)?)
        .execute(pool)
        .await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let id: Option<i64> = sqlx::query_scalar(
                    "with c as (select id from bench_raw_job where state = 'queued' order by id limit 1 for update skip locked) \
                     update bench_raw_job j set state = 'running' from c where j.id = c.id returning j.id",
                )
                .fetch_optional(&pool)
                .await?;
                let Some(id) = id else { return Ok::<(), sqlx::Error>(()) };
                sqlx::query("update bench_raw_job set state = 'done' where id = $1").bind(id).execute(&pool).await?;
            }
        }));
    }
    let all = async {
        for t in tasks {
            t.await??;
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(600), all)
        .await
        .map_err(|_| anyhow::anyhow!("the raw loop did not finish in 10 minutes"))??;
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

async fn job_system(pool: &PgPool, b: &QueueBench, project: uuid::Uuid) -> anyhow::Result<f64> {
    let steps: Vec<NewStep> = (0..b.steps)
        .map(|i| NoopArgs {}.to_step(format!("s{i}"), "bench"))
        .collect();
    let mut workers = Vec::new();
    for _ in 0..b.workers {
        let mut c = WorkerConfig::new("bench", vec!["bench".into()]);
        c.concurrency = b.concurrency;
        c.prefetch = b.prefetch;
        workers.push(Worker::start(pool.clone(), c, bench_registry()).await?);
    }
    // Let the workers register and listen before the burst arrives.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Timed from the commit, as the raw loop is timed from its rows being there.
    jobs::create_run(pool, DEFAULT_ORG_ID, project, &steps, None).await?;
    let start = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar(
            "select count(*) from step where queue = 'bench' and state <> 'succeeded'",
        )
        .fetch_one(pool)
        .await?;
        if left == 0 {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "the benchmark did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = b.steps as f64 / start.elapsed().as_secs_f64();
    for w in workers {
        w.shutdown().await;
    }
    Ok(rate)
}

/// Runs the benchmark on `pool` (a scratch database) and prints both sides and the ratio.
pub async fn run(pool: &PgPool, b: &QueueBench) -> anyhow::Result<()> {
    let project = project(pool).await?;
    let clients = b.workers * b.concurrency;

    let mut fan = vec![NoopArgs {}.to_step("split", "bench-fan")];
    for i in 0..b.fan_out {
        let mut s = NoopArgs {}.to_step(format!("part-{i}"), "bench-fan");
        s.depends_on = vec!["split".into()];
        fan.push(s);
    }
    let mut combine = NoopArgs {}.to_step("combine", "bench-fan");
    combine.depends_on = (0..b.fan_out).map(|i| format!("part-{i}")).collect();
    fan.push(combine);
    let start = Instant::now();
    jobs::create_run(pool, DEFAULT_ORG_ID, project, &fan, None).await?;
    let enqueue = start.elapsed();
    println!(
        "enqueue a {}-step fan-out (+ split and combine): {:.2} s",
        b.fan_out,
        enqueue.as_secs_f64()
    );

    // Alternate the two sides so that load from elsewhere on the machine falls on both alike; the
    // median of the per-round ratios is the result.
    let mut ratios = Vec::with_capacity(b.rounds);
    for round in 1..=b.rounds.max(1) {
        let raw = raw_loop(pool, clients, b.steps).await?;
        let ours = job_system(pool, b, project).await?;
        println!(
            "round {round}: raw FOR UPDATE SKIP LOCKED loop ({clients} clients) {raw:.0} steps/s; \
             groundwork job system ({} workers x {} concurrency, prefetch {}) {ours:.0} steps/s; ratio {:.2}x",
            b.workers,
            b.concurrency,
            b.prefetch,
            ours / raw
        );
        ratios.push(ours / raw);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio (job system / raw loop), median of {} rounds: {:.2}x",
        ratios.len(),
        ratios[ratios.len() / 2]
    );
    Ok(())
}

/// The benchmark's `noop` kind: does nothing, so the measurement is the job system's own overhead. (The
/// worker's `noop` is a test-only kind, absent from release builds.)
struct Noop;

impl Step for Noop {
    type Args = NoopArgs;

    fn run(
        &self,
        _ctx: StepContext,
        _args: NoopArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async { Ok(StepOutput::default()) })
    }
}

fn bench_registry() -> Registry {
    let mut r = Registry::builtin();
    r.insert(Noop);
    r
}
