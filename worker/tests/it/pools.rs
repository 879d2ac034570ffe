//! Which workers run whose steps: a worker that joined an organisation with its worker token runs
//! that organisation's steps alone; the installation's workers run the steps of the organisations
//! allowed to use them; the GPU-or-CPU choice looks only at workers the organisation may use.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use crate::common::project;
use groundwork_store::audit::Who;
use groundwork_store::jobs::{self, NewStep};
use groundwork_store::testing::TestDb;
use groundwork_store::{DEFAULT_ORG_ID, PgPool, accounts, models, workers};
use groundwork_worker::{Registry, Worker, WorkerConfig};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn config(name: &str, token: Option<&str>) -> WorkerConfig {
    let mut c = WorkerConfig::new("cpu", vec!["cpu".into()]);
    c.name = name.into();
    c.heartbeat = Duration::from_millis(300);
    c.lease = Duration::from_secs(3);
    c.reap_every = Duration::from_millis(500);
    c.token = token.map(str::to_owned);
    // A worker without a token is the installation's (as `serve`'s own are).
    c.in_process = token.is_none();
    c
}

/// A second organisation beside the default one.
async fn org_b(pool: &PgPool) -> Uuid {
    accounts::create_org(pool, &Who::cli(), "b", None)
        .await
        .unwrap()
        .id
}

/// Starts a one-step run in `org`'s project and returns the step.
async fn one_step(pool: &PgPool, org: Uuid, project: Uuid) -> Uuid {
    let run = jobs::create_run(
        pool,
        org,
        project,
        &[NewStep::new("a", "noop".parse().unwrap(), json!({}), "cpu")],
        None,
    )
    .await
    .unwrap();
    run.steps[0].id
}

/// The worker that ran the step, once it succeeded.
async fn ran_on(pool: &PgPool, org: Uuid, step: Uuid) -> Uuid {
    let start = Instant::now();
    loop {
        let s = jobs::get_step(pool, org, step).await.unwrap();
        if s.state == "succeeded" {
            return sqlx::query_scalar("select worker_id from step_attempt where step_id = $1")
                .bind(step)
                .fetch_one(pool)
                .await
                .unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{s:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that the step stays queued for a while (no worker that may run it is there).
async fn stays_queued(pool: &PgPool, org: Uuid, step: Uuid) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = jobs::get_step(pool, org, step).await.unwrap();
    assert_eq!(s.state, "queued", "{s:#?}");
    assert_eq!(s.attempt, 0, "{s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_organisations_own_workers_run_its_steps_alone_and_installation_workers_only_where_allowed()
 {
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let a = DEFAULT_ORG_ID;
    let b = org_b(pool).await;
    let (pa, pb) = (project(pool, a, "a").await, project(pool, b, "b").await);
    let (secret, _) = accounts::create_worker_token(pool, &Who::cli(), b, "b-box")
        .await
        .unwrap();

    // B's own worker: it runs B's steps and never A's.
    let b_worker = Worker::start(
        pool.clone(),
        config("b-box", Some(&secret)),
        Registry::builtin(),
    )
    .await
    .unwrap();
    assert_eq!(
        workers::message_queues(pool, b_worker.id()).await.unwrap(),
        [format!("cpu@{b}")]
    );
    let a_step = one_step(pool, a, pa).await;
    let b_step = one_step(pool, b, pb).await;
    assert_eq!(ran_on(pool, b, b_step).await, b_worker.id());
    stays_queued(pool, a, a_step).await;

    // An installation worker runs A's step.
    let shared = Worker::start(pool.clone(), config("shared", None), Registry::builtin())
        .await
        .unwrap();
    assert_eq!(
        workers::message_queues(pool, shared.id()).await.unwrap(),
        ["cpu"]
    );
    assert_eq!(ran_on(pool, a, a_step).await, shared.id());

    // B stops using installation workers: with its own worker gone, its steps wait for it although
    // the installation worker is idle, and run when it is back.
    accounts::set_installation_workers(pool, &Who::cli(), b, false)
        .await
        .unwrap();
    b_worker.shutdown().await;
    let b_step = one_step(pool, b, pb).await;
    stays_queued(pool, b, b_step).await;
    let b_again = Worker::start(
        pool.clone(),
        config("b-box-2", Some(&secret)),
        Registry::builtin(),
    )
    .await
    .unwrap();
    assert_eq!(ran_on(pool, b, b_step).await, b_again.id());
    // Both pools' messages of a claimed step are retired: nothing is left pending for it.
    let pending: i64 = sqlx::query_scalar(
        "select count(*) from apalis.jobs where status = 'Pending' and job_type like 'cpu%'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(pending, 0);
    b_again.shutdown().await;
    shared.shutdown().await;
}

#[tokio::test]
async fn the_gpu_choice_looks_only_at_workers_the_organisation_may_use() {
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let a = DEFAULT_ORG_ID;
    let b = org_b(pool).await;
    let gpu = |name: &str| workers::Registration {
        name: name.into(),
        pool: "gpu".into(),
        queues: vec!["gpu".into(), "cpu".into()],
        concurrency: 1,
        capabilities: json!({}),
        version: "test".into(),
    };
    assert!(!models::gpu_worker_online(pool, a).await.unwrap());
    // B's own GPU box: B trains on the GPU, A does not see it.
    let (secret, _) = accounts::create_worker_token(pool, &Who::cli(), b, "b-gpu")
        .await
        .unwrap();
    workers::register_with_token(pool, &gpu("b-gpu"), Some(&secret))
        .await
        .unwrap();
    assert!(models::gpu_worker_online(pool, b).await.unwrap());
    assert!(!models::gpu_worker_online(pool, a).await.unwrap());
    // An installation GPU worker serves both, until A may no longer use installation workers.
    workers::register(pool, &gpu("shared-gpu")).await.unwrap();
    assert!(models::gpu_worker_online(pool, a).await.unwrap());
    accounts::set_installation_workers(pool, &Who::cli(), a, false)
        .await
        .unwrap();
    assert!(!models::gpu_worker_online(pool, a).await.unwrap());
    assert!(models::gpu_worker_online(pool, b).await.unwrap());
}

#[tokio::test]
async fn a_small_run_of_one_organisation_is_not_held_back_by_a_large_run_of_another() {
    let db = TestDb::new().await.unwrap();
    let b = org_b(&db.pool).await;
    let pa = project(&db.pool, DEFAULT_ORG_ID, "big").await;
    let pb = project(&db.pool, b, "small").await;
    // Organisation A queues 24 steps of 0.2 s, then B queues one; one worker, one slot.
    let big: Vec<NewStep> = (0..24)
        .map(|i| {
            NewStep::new(
                format!("s{i}"),
                "sleep".parse().unwrap(),
                json!({"seconds": 0.2}),
                "cpu",
            )
        })
        .collect();
    let big = jobs::create_run(&db.pool, DEFAULT_ORG_ID, pa, &big, None)
        .await
        .unwrap();
    let small = jobs::create_run(
        &db.pool,
        b,
        pb,
        &[NewStep::new(
            "only",
            "noop".parse().unwrap(),
            json!({}),
            "cpu",
        )],
        None,
    )
    .await
    .unwrap();
    let w = Worker::start(db.pool.clone(), config("shared", None), Registry::builtin())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (small_done, big_run) = loop {
        let s = jobs::get_run(&db.pool, b, small.run.id).await.unwrap();
        let g = jobs::get_run(&db.pool, DEFAULT_ORG_ID, big.run.id)
            .await
            .unwrap();
        if s.run.state == "succeeded" && g.run.state == "succeeded" {
            break (s, g);
        }
        assert!(
            Instant::now() < deadline,
            "runs did not finish: {s:#?} {g:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    w.shutdown().await;
    // B's step started before most of A's: it ranked with A's first steps, not after all of them.
    let b_started = small_done.steps[0].started_at.unwrap();
    let a_after = big_run
        .steps
        .iter()
        .filter(|s| s.started_at.unwrap() > b_started)
        .count();
    assert!(
        a_after >= 20,
        "only {a_after} of A's 24 steps started after B's"
    );
}

#[tokio::test]
async fn an_organisation_s_limits_on_queued_and_running_steps_hold() {
    let db = TestDb::new().await.unwrap();
    let b = org_b(&db.pool).await;
    let p = project(&db.pool, b, "limited").await;
    accounts::set_org_limits(&db.pool, &Who::cli(), b, Some(Some(3)), Some(Some(1)))
        .await
        .unwrap();
    let sleeps = |n: usize| -> Vec<NewStep> {
        (0..n)
            .map(|i| {
                NewStep::new(
                    format!("s{i}"),
                    "sleep".parse().unwrap(),
                    json!({"seconds": 0.5}),
                    "cpu",
                )
            })
            .collect()
    };
    // Four queued steps would pass the limit of three.
    let err = jobs::create_run(&db.pool, b, p, &sleeps(4), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, groundwork_store::Error::LimitReached(_)),
        "{err}"
    );
    assert!(err.to_string().contains("limit is 3"), "{err}");
    // Two steps are accepted; with two free worker slots they still run one at a time.
    let run = jobs::create_run(&db.pool, b, p, &sleeps(2), None)
        .await
        .unwrap();
    let mut c = config("two-slots", None);
    c.concurrency = 2;
    let w = Worker::start(db.pool.clone(), c, Registry::builtin())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    loop {
        let r = jobs::get_run(&db.pool, b, run.run.id).await.unwrap();
        most = most.max(r.steps.iter().filter(|s| s.state == "running").count());
        if r.run.state == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not finish: {r:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.shutdown().await;
    assert_eq!(most, 1);
}

#[tokio::test]
async fn the_running_steps_limit_is_hard_and_a_held_back_step_starts_when_a_slot_frees() {
    let db = TestDb::new().await.unwrap();
    let b = org_b(&db.pool).await;
    let p = project(&db.pool, b, "limited").await;
    accounts::set_org_limits(&db.pool, &Who::cli(), b, None, Some(Some(1)))
        .await
        .unwrap();
    let steps: Vec<NewStep> = (0..6)
        .map(|i| {
            NewStep::new(
                format!("s{i}"),
                "sleep".parse().unwrap(),
                json!({"seconds": 0.3}),
                "cpu",
            )
        })
        .collect();
    let run = jobs::create_run(&db.pool, b, p, &steps, None)
        .await
        .unwrap();
    // Four slots claim the six messages at once: the claims race for the one running slot.
    let mut c = config("four-slots", None);
    c.concurrency = 4;
    let w = Worker::start(db.pool.clone(), c, Registry::builtin())
        .await
        .unwrap();
    // Held-back steps are dispatched again as soon as a running step ends; the reaper's lost-dispatch
    // sweep (20 s) would make this run take minutes.
    let started = Instant::now();
    let done = loop {
        let r = jobs::get_run(&db.pool, b, run.run.id).await.unwrap();
        if r.run.state == "succeeded" {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the held-back steps waited: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    w.shutdown().await;
    // Never two at once: each step started after the one before it finished.
    let mut spans: Vec<_> = done
        .steps
        .iter()
        .map(|s| (s.started_at.unwrap(), s.finished_at.unwrap()))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "two steps overlapped: {spans:#?}");
    }
}
