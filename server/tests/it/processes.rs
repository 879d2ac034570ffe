//! Real `groundwork` processes against a real PostgreSQL: a worker killed with SIGKILL in the middle of
//! a step loses nothing (the step finishes exactly once on another worker), and `serve` is a whole
//! installation on its own.
//!
//! Cargo builds the binary before the test binary and hands its path over in `CARGO_BIN_EXE_groundwork`.

use groundwork_store::testing::TestDb;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::common::owner_token;

fn groundwork_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_groundwork"))
}

pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `groundwork worker` with a short lease and heartbeat, one slot, quiet.
fn worker_command(bin: &PathBuf, db_url: &str, name: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "worker",
        "--concurrency",
        "1",
        "--lease-secs",
        "3",
        "--heartbeat-ms",
        "300",
        "--name",
        name,
    ])
    .env("DATABASE_URL", db_url)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

fn worker(bin: &PathBuf, db: &TestDb, name: &str) -> Proc {
    Proc(
        worker_command(bin, &db.url, name)
            .spawn()
            .expect("start worker"),
    )
}

pub(crate) async fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the step runs with some progress; the name of the worker holding it.
pub(crate) async fn running_on(pool: &groundwork_store::PgPool, step_id: Uuid) -> String {
    wait_for(Duration::from_secs(30), "the step to run", async || {
        let row: Option<(String, f32)> = sqlx::query_as(
            "select w.name, s.progress from step s join worker w on w.id = s.lease_owner where s.id = $1 and s.state = 'running'",
        )
        .bind(step_id)
        .fetch_optional(pool)
        .await
        .ok()?;
        row.filter(|(_, p)| *p > 0.1).map(|(n, _)| n)
    })
    .await
}

/// Waits for the step to end, and checks that it succeeded; its (attempt, worker, outcome) rows.
#[expect(clippy::unwrap_used, reason = "tests")]
pub(crate) async fn finished(
    pool: &groundwork_store::PgPool,
    step_id: Uuid,
) -> Vec<(i32, String, String)> {
    let done = wait_for(Duration::from_secs(60), "the step to finish", async || {
        let s = groundwork_store::jobs::get_step(pool, groundwork_store::DEFAULT_ORG_ID, step_id)
            .await
            .ok()?;
        ["succeeded", "failed"]
            .contains(&s.state.as_str())
            .then_some(s)
    })
    .await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    sqlx::query_as(
        "select a.attempt, w.name, coalesce(a.outcome, '') from step_attempt a join worker w on w.id = a.worker_id \
         where a.step_id = $1 order by a.attempt",
    )
    .bind(step_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_worker_killed_mid_step_loses_nothing_and_the_step_finishes_exactly_once() {
    let bin = groundwork_bin();
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let a = worker(&bin, &db, "worker-a");
    let b = worker(&bin, &db, "worker-b");
    wait_for(Duration::from_secs(30), "two workers", async || {
        let n: i64 = sqlx::query_scalar("select count(*) from worker")
            .fetch_one(pool)
            .await
            .ok()?;
        (n == 2).then_some(())
    })
    .await;

    let project: Uuid = sqlx::query_scalar(
        "insert into project (id, org_id, name, aoi, bbox_west, bbox_south, bbox_east, bbox_north, area_km2, start_date, end_date, \
             task, modalities, model_size, patch_size, window_size) \
         values (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 'p', '{}', 0, 0, 1, 1, 1, '2024-01-01', '2024-02-01', \
             'segmentation', '{sentinel2_l2a}', 'nano', 4, 64) returning id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let mut step = groundwork_store::jobs::NewStep::new(
        "long",
        "sleep".parse().unwrap(),
        json!({"seconds": 4.0}),
        "cpu",
    );
    step.backoff_base_ms = 0;
    let run = groundwork_store::jobs::create_run(
        pool,
        groundwork_store::DEFAULT_ORG_ID,
        project,
        &[step],
        None,
    )
    .await
    .unwrap();
    let step_id = run.steps[0].id;

    // Wait until it runs and has made progress, then SIGKILL whichever worker holds it.
    let owner = running_on(pool, step_id).await;
    let (mut victim, survivor) = if owner == "worker-a" { (a, b) } else { (b, a) };
    victim.0.kill().unwrap(); // SIGKILL
    victim.0.wait().unwrap();

    let attempts = finished(pool, step_id).await;
    let done = groundwork_store::jobs::get_step(pool, groundwork_store::DEFAULT_ORG_ID, step_id)
        .await
        .unwrap();
    assert_eq!(done.attempt, 2, "one lost attempt, one successful one");
    let survivor_name = if owner == "worker-a" {
        "worker-b"
    } else {
        "worker-a"
    };
    assert_eq!(
        attempts,
        vec![
            (1, owner.clone(), "lost".into()),
            (2, survivor_name.into(), "succeeded".into())
        ]
    );
    let artifacts: i64 =
        sqlx::query_scalar("select count(*) from step_artifact where step_id = $1")
            .bind(step_id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(artifacts, 1, "the result is recorded exactly once");
    // The killed worker shows as offline after its heartbeat goes stale; the survivor stays active.
    let states: Vec<(String, String)> = sqlx::query_as(
        "select name, case when last_heartbeat_at < now() - interval '2 seconds' then 'stale' else 'fresh' end from worker order by name",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        states.contains(&(survivor_name.to_owned(), "fresh".to_owned())),
        "{states:?}"
    );
    drop(survivor);
}

#[tokio::test]
async fn serve_is_a_whole_installation() {
    let bin = groundwork_bin();
    let db = TestDb::new().await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let objects = std::env::temp_dir().join(format!("gw-e2e-objects-{}", Uuid::new_v4()));
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--heartbeat-ms",
            "300",
        ])
        .env("DATABASE_URL", &db.url)
        .env(
            "GROUNDWORK_OBJECT_STORE",
            format!("file://{}", objects.display()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It prints its URL when ready.
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let _guard = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    assert!(line.contains(&base), "{line}");

    let token = owner_token(&db.pool).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let project: Value = http
        .post(format!("{base}/api/v1/projects"))
        .json(&json!({
            "name": "e2e", "task": "classification", "start": "2024-01-01", "end": "2024-06-30",
            "aoi": {"type": "Polygon", "coordinates": [[[10.0, 50.0], [10.05, 50.0], [10.05, 50.05], [10.0, 50.05], [10.0, 50.0]]]}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = project["id"].as_str().expect("project id");
    let run: Value = http
        .post(format!("{base}/api/v1/projects/{pid}/runs"))
        .json(&json!({"steps": [{"name": "nap", "kind": "sleep", "args": {"seconds": 0.5}}, {"name": "after", "kind": "noop", "depends_on": ["nap"]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["id"].as_str().expect("run id").to_owned();
    // The in-process worker runs it.
    let done = wait_for(Duration::from_secs(30), "the run", async || {
        let r: Value = http
            .get(format!("{base}/api/v1/runs/{run_id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (r["state"] == "succeeded").then_some(r)
    })
    .await;
    assert_eq!(done["steps"][1]["state"], "succeeded");
    let workers: Value = http
        .get(format!("{base}/api/v1/workers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(workers["items"][0]["state"], "active");
    assert_eq!(workers["items"][0]["pool"], "cpu");
    let pools: Value = http
        .get(format!("{base}/api/v1/pools"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pools["items"][0]["name"], "cpu");
    assert!(pools["items"][0]["busy_fraction"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(objects);
}

#[tokio::test]
async fn admin_commands_set_up_accounts_and_a_worker_needs_a_valid_token() {
    let bin = groundwork_bin();
    let db = TestDb::new().await.unwrap();
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(&bin)
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run(
        &[
            "admin",
            "create-user",
            "--email",
            "ops@example.org",
            "--password-stdin",
        ],
        "a long password\n",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &[
            "admin",
            "create-user",
            "--email",
            "weak@example.org",
            "--password-stdin",
        ],
        "short\n",
    );
    assert!(!ok && err.contains("at least 8 characters"), "{err}");
    assert!(run(&["admin", "create-org", "--name", "field-team"], "").0);
    let (ok, _, err) = run(
        &[
            "admin",
            "add-member",
            "--org",
            "field-team",
            "--email",
            "ops@example.org",
            "--role",
            "boss",
        ],
        "",
    );
    assert!(!ok && err.contains("unknown role"), "{err}");
    let (ok, out, err) = run(
        &[
            "admin",
            "add-member",
            "--org",
            "field-team",
            "--email",
            "ops@example.org",
            "--role",
            "admin",
        ],
        "",
    );
    assert!(ok && out.contains("admin"), "{out} {err}");
    let (ok, token, err) = run(
        &[
            "admin",
            "create-token",
            "--org",
            "field-team",
            "--email",
            "ops@example.org",
            "--scope",
            "write",
        ],
        "",
    );
    assert!(ok && token.starts_with("gw_"), "{token} {err}");
    let p = groundwork_store::accounts::authenticate_api_token(&db.pool, &token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.role, groundwork_store::accounts::Role::Admin);
    let (ok, worker_token, err) = run(&["admin", "create-worker-token", "--org", "field-team"], "");
    assert!(
        ok && worker_token.starts_with("gwk_"),
        "{worker_token} {err}"
    );

    // Once a worker token exists, a worker needs a valid one and says why it stops.
    let (ok, _, err) = run(&["worker", "--token", "gwk_wrong"], "");
    assert!(!ok && err.contains("worker token was refused"), "{err}");
    let (ok, _, err) = run(&["worker"], "");
    assert!(!ok && err.contains("requires a worker token"), "{err}");
    let mut good = Command::new(&bin)
        .args(["worker", "--name", "team-box"])
        .env("GROUNDWORK_WORKER_TOKEN", &worker_token)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let org = groundwork_store::accounts::org_by_name(&db.pool, "field-team")
        .await
        .unwrap()
        .unwrap();
    let listed = wait_for(
        Duration::from_secs(30),
        "the worker to register",
        async || {
            let w = groundwork_store::workers::list_in_org(&db.pool, org.id)
                .await
                .ok()?;
            (!w.is_empty()).then_some(w)
        },
    )
    .await;
    assert_eq!(listed[0].name, "team-box");
    let _ = good.kill();
    let _ = good.wait();
}

/// A reduced `groundwork demo` (a 384 px scene, few labels and epochs): every stage runs through the
/// API on in-process workers, the last line is the JSON summary, and the published map beats the
/// majority class on the test windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reduced_demo_publishes_a_map_that_beats_the_majority_class() {
    let bin = groundwork_bin();
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let (bin, url, dir) = (bin.clone(), db.url.clone(), dir.path().to_path_buf());
        move || {
            Command::new(&bin)
                .args([
                    "demo",
                    "--exit",
                    "--bind",
                    "127.0.0.1:0",
                    "--scene-px",
                    "384",
                    "--epochs",
                    "4",
                    "--labels-per-class",
                    "150",
                    "--patch-size",
                    "8",
                ])
                .env("DATABASE_URL", url)
                .env("GROUNDWORK_DEMO_DIR", dir.join("demo"))
                .env("GROUNDWORK_MODEL_DIR", dir.join("no-models"))
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let summary: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    let acc = summary["accuracy"].as_f64().unwrap();
    let majority = summary["majority_accuracy"].as_f64().unwrap();
    assert!(
        acc > majority,
        "map accuracy {acc} does not beat the majority class {majority}: {stderr}"
    );
    assert!(summary["baseline_accuracy"].as_f64().is_some(), "{last}");
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
    let map_url = summary["map_url"].as_str().unwrap();
    let output_id: Uuid = map_url.rsplit('/').next().unwrap().parse().unwrap();
    // Stages ran through the job system and the published output carries the model's lineage.
    let (kind, lineage): (String, Value) =
        sqlx::query_as("select kind, lineage from output where id = $1")
            .bind(output_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(kind, "class");
    assert_eq!(lineage["model"]["kind"], "trained", "{lineage}");
    assert!(lineage["checkpoint_sha256"].is_string(), "{lineage}");
    assert!(lineage["label_set_version"].as_i64().is_some(), "{lineage}");
    let kinds: Vec<String> = sqlx::query_scalar(
        "select distinct kind from step s join pipeline_run r on r.id = s.run_id \
         where r.project_id = (select project_id from output where id = $1) and s.state = 'succeeded'",
    )
    .bind(output_id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    // The model records the acquisition whose imagery it learnt from.
    let (read, acquired): (Value, Uuid) = sqlx::query_as(
        "select t.output->'acquisition_runs', (select a.run_id from step a where a.kind = 'acquire' \
             and a.state = 'succeeded' limit 1) \
         from step t where t.kind = 'train' and t.state = 'succeeded' limit 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(read, json!([acquired]), "{read}");
    for k in [
        "acquire", "train", "evaluate", "predict", "combine", "publish",
    ] {
        assert!(
            kinds.iter().any(|x| x == k),
            "no succeeded {k} step: {kinds:?}"
        );
    }
}

/// `groundwork worker` for the soak test: reads the demo's objects and its STAC API.
fn soak_worker(
    bin: &PathBuf,
    db_url: &str,
    demo_dir: &std::path::Path,
    port: u16,
    name: &str,
) -> Proc {
    Proc(
        worker_command(bin, db_url, name)
            .args([
                "--object-store",
                &format!("file://{}", demo_dir.join("objects").display()),
                "--allow-host",
                &format!("127.0.0.1:{port}"),
            ])
            .env("GROUNDWORK_MODEL_DIR", demo_dir.join("no-models"))
            .spawn()
            .expect("start worker"),
    )
}

/// The whole pipeline (acquire, labels, train, evaluate, predict, combine, publish) on the demo
/// catalogue, run by two `groundwork worker` processes while one of them (mostly the one running a
/// step) is SIGKILLed and restarted every three seconds: every run succeeds, nothing is left queued or running,
/// nothing is recorded twice, and the map serves. `GROUNDWORK_SOAK_KILLS` sets the number of kills
/// (8 here; `scripts/soak.sh` runs 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_finishes_while_workers_are_killed_again_and_again() {
    let kills_wanted: usize = std::env::var("GROUNDWORK_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let bin = groundwork_bin();
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stderr_path = dir.path().join("demo.log");
    let started = Instant::now();
    let mut demo = Proc(
        Command::new(&bin)
            .args([
                "demo",
                "--exit",
                "--local-workers",
                "0",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--scene-px",
                "384",
                "--epochs",
                "4",
                "--labels-per-class",
                "150",
                "--patch-size",
                "8",
            ])
            .env("DATABASE_URL", &db.url)
            .env("GROUNDWORK_DEMO_DIR", &demo_dir)
            .env("GROUNDWORK_MODEL_DIR", demo_dir.join("no-models"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let stdout = demo.0.stdout.take().unwrap();
    let summary_line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .last()
            .unwrap_or_default()
    });
    let names = ["soak-a", "soak-b"];
    let mut workers: Vec<Proc> = names
        .iter()
        .map(|n| soak_worker(&bin, &db.url, &demo_dir, port, &format!("{n}-0")))
        .collect();
    // A small xorshift: which worker dies is random, but reproducible from the printed seed.
    let mut seed = u64::from(started.elapsed().subsec_nanos()) | 1;
    let seed0 = seed;
    let mut kills = 0;
    let status = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the demo did not finish in 15 minutes ({kills} kills): {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        if kills < kills_wanted && started.elapsed() > Duration::from_secs(3) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Three kills in four hit the worker running a step, when one does; the others a
            // worker at random.
            let busy: Option<String> = sqlx::query_scalar(
                "select w.name from step s join worker w on w.id = s.lease_owner where s.state = 'running' limit 1",
            )
            .fetch_optional(&db.pool)
            .await
            .unwrap();
            let busy = busy.and_then(|n| names.iter().position(|p| n.starts_with(p)));
            let i = match busy {
                Some(i) if seed % 4 != 0 => i,
                _ => usize::from((seed >> 8) % 2 == 1),
            };
            let victim = &mut workers[i].0;
            victim.kill().unwrap(); // SIGKILL
            victim.wait().unwrap();
            kills += 1;
            workers[i] = soak_worker(
                &bin,
                &db.url,
                &demo_dir,
                port,
                &format!("{}-{kills}", names[i]),
            );
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "the demo failed (seed {seed0}): {stderr}");
    let last = summary_line.await.unwrap();
    let summary: Value = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"));
    drop(workers);

    let pool = &db.pool;
    let runs: Vec<(String, i64)> =
        sqlx::query_as("select state, count(*) from pipeline_run group by state order by state")
            .fetch_all(pool)
            .await
            .unwrap();
    let open: i64 =
        sqlx::query_scalar("select count(*) from step where state in ('queued', 'running')")
            .fetch_one(pool)
            .await
            .unwrap();
    let (outputs, distinct_outputs): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct (run_id, kind)) from output")
            .fetch_one(pool)
            .await
            .unwrap();
    let (epochs, distinct_epochs): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct (step_id, epoch)) from training_epoch")
            .fetch_one(pool)
            .await
            .unwrap();
    let (lost, claims): (i64, i64) = sqlx::query_as(
        "select (select coalesce(sum(lost_leases), 0) from step)::int8, (select count(*) from step_attempt)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    println!(
        "soak: {kills} kills (seed {seed0}) in {elapsed:.0} s; {claims} claims, {lost} lost leases; runs {runs:?}; \
         {outputs} outputs; map accuracy {}",
        summary["accuracy"]
    );
    assert_eq!(kills, kills_wanted, "the demo finished before every kill");
    assert!(
        runs.iter().all(|(s, _)| s == "succeeded"),
        "{runs:?}: {stderr}"
    );
    assert_eq!(open, 0);
    assert_eq!(outputs, distinct_outputs);
    assert!(outputs > 0);
    assert_eq!(epochs, distinct_epochs);
    // The map serves.
    let map_url = summary["map_url"].as_str().unwrap();
    let output_id: Uuid = map_url.rsplit('/').next().unwrap().parse().unwrap();
    let kind: String = sqlx::query_scalar("select kind from output where id = $1")
        .bind(output_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(kind, "class");
}
