//! The job system on a real PostgreSQL: lifecycle, dependencies, retries with backoff, cancel, drain
//! and pause, lease expiry.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use crate::common::project;
use groundwork_store::jobs::{self, NewStep, RunWithSteps};
use groundwork_store::testing::TestDb;
use groundwork_store::{DEFAULT_ORG_ID, PgPool, workers};
use groundwork_worker::{Registry, Worker, WorkerConfig};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn config(concurrency: usize) -> WorkerConfig {
    let mut c = WorkerConfig::new("cpu", vec!["cpu".into()]);
    c.concurrency = concurrency;
    c.heartbeat = Duration::from_millis(300);
    c.lease = Duration::from_secs(3);
    c.reap_every = Duration::from_millis(500);
    c
}

fn step(name: &str, kind: &str, args: serde_json::Value, deps: &[&str]) -> NewStep {
    let mut s = NewStep::new(name, kind.parse().unwrap(), args, "cpu");
    s.depends_on = deps.iter().map(|d| (*d).to_owned()).collect();
    s.backoff_base_ms = 500;
    s
}

async fn wait_run(pool: &PgPool, run: Uuid, timeout: Duration) -> RunWithSteps {
    let start = Instant::now();
    loop {
        let r = jobs::get_run(pool, DEFAULT_ORG_ID, run).await.unwrap();
        if ["succeeded", "failed", "cancelled"].contains(&r.run.state.as_str()) {
            return r;
        }
        assert!(
            start.elapsed() < timeout,
            "run did not finish in time: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_step(pool: &PgPool, step: Uuid, state: &str, timeout: Duration) -> jobs::Step {
    let start = Instant::now();
    loop {
        let s = jobs::get_step(pool, DEFAULT_ORG_ID, step).await.unwrap();
        if s.state == state {
            return s;
        }
        assert!(
            start.elapsed() < timeout,
            "step never reached {state}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn by_name<'a>(r: &'a RunWithSteps, name: &str) -> &'a jobs::Step {
    r.steps.iter().find(|s| s.name == name).unwrap()
}

#[tokio::test]
async fn a_step_runs_reports_progress_and_commits_its_output() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let run = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("s", "sleep", json!({"seconds": 1.5}), &[])],
        None,
    )
    .await
    .unwrap();
    assert_eq!(run.run.state, "queued");
    assert_eq!(run.steps[0].state, "queued");
    let w = Worker::start(db.pool.clone(), config(1), Registry::builtin())
        .await
        .unwrap();

    let running = wait_step(
        &db.pool,
        run.steps[0].id,
        "running",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(running.lease_owner, Some(w.id()));
    // Progress arrives with heartbeats.
    let start = Instant::now();
    loop {
        let s = jobs::get_step(&db.pool, DEFAULT_ORG_ID, run.steps[0].id)
            .await
            .unwrap();
        if s.progress > 0.0 && s.progress < 1.0 && s.message.starts_with("slept") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no progress reported: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = wait_run(&db.pool, run.run.id, Duration::from_secs(15)).await;
    assert_eq!(done.run.state, "succeeded");
    let s = &done.steps[0];
    assert_eq!(
        (s.state.as_str(), s.attempt, s.progress),
        ("succeeded", 1, 1.0)
    );
    assert_eq!(s.output.as_ref().unwrap()["slept_seconds"], 1.5);
    assert!(s.lease_owner.is_none());
    let artifacts: i64 =
        sqlx::query_scalar("select count(*) from step_artifact where step_id = $1")
            .bind(s.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(artifacts, 1);
    w.shutdown().await;
}

#[tokio::test]
async fn fan_out_and_fan_in_respect_dependencies() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let mut steps = vec![step("split", "sleep", json!({"seconds": 0.2}), &[])];
    for i in 0..6 {
        steps.push(step(
            &format!("part-{i}"),
            "sleep",
            json!({"seconds": 0.3}),
            &["split"],
        ));
    }
    let parts: Vec<String> = (0..6).map(|i| format!("part-{i}")).collect();
    let part_refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    steps.push(step(
        "combine",
        "sleep",
        json!({"seconds": 0.1}),
        &part_refs,
    ));
    let run = jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &steps, None)
        .await
        .unwrap();
    assert_eq!(by_name(&run, "combine").depends_on.len(), 6);

    // One message per slot: the first worker's three slots cannot hold all six parts at once, so the
    // second worker gets some whichever polls first.
    let mut c = config(3);
    c.prefetch = 1;
    let w1 = Worker::start(db.pool.clone(), c.clone(), Registry::builtin())
        .await
        .unwrap();
    let w2 = Worker::start(db.pool.clone(), c, Registry::builtin())
        .await
        .unwrap();
    let done = wait_run(&db.pool, run.run.id, Duration::from_secs(30)).await;
    assert_eq!(done.run.state, "succeeded", "{done:#?}");
    let split = by_name(&done, "split");
    let combine = by_name(&done, "combine");
    for part in &parts {
        let s = by_name(&done, part);
        assert_eq!(s.attempt, 1);
        assert!(
            s.started_at.unwrap() >= split.finished_at.unwrap(),
            "{part} started before split finished"
        );
        assert!(
            combine.started_at.unwrap() >= s.finished_at.unwrap(),
            "combine started before {part} finished"
        );
    }
    // Both workers took part.
    let used: i64 = sqlx::query_scalar("select count(distinct worker_id) from step_attempt")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(used, 2);
    w1.shutdown().await;
    w2.shutdown().await;
}

#[tokio::test]
async fn failed_attempts_retry_with_exponential_backoff_then_fail_for_good() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let mut flaky = step("flaky", "fail", json!({"times": 2}), &[]);
    flaky.max_attempts = 3;
    flaky.backoff_base_ms = 1000;
    let mut hopeless = step("hopeless", "fail", json!({"times": 5}), &[]);
    hopeless.max_attempts = 2;
    hopeless.backoff_base_ms = 200;
    let after = step("after-hopeless", "noop", json!({}), &["hopeless"]);
    let started = Instant::now();
    let run = jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &[flaky, hopeless, after], None)
        .await
        .unwrap();
    let w = Worker::start(db.pool.clone(), config(2), Registry::builtin())
        .await
        .unwrap();
    let done = wait_run(&db.pool, run.run.id, Duration::from_secs(30)).await;

    let flaky = by_name(&done, "flaky");
    assert_eq!((flaky.state.as_str(), flaky.attempt), ("succeeded", 3));
    assert_eq!(flaky.output.as_ref().unwrap()["succeeded_on_attempt"], 3);
    assert_eq!(flaky.errors.as_array().unwrap().len(), 2);
    // Backoff 1 s then 2 s.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "backoff not honoured: {:?}",
        started.elapsed()
    );

    let hopeless = by_name(&done, "hopeless");
    assert_eq!((hopeless.state.as_str(), hopeless.attempt), ("failed", 2));
    assert_eq!(hopeless.error.as_deref(), Some("planned failure 2 of 5"));
    let after = by_name(&done, "after-hopeless");
    assert_eq!((after.state.as_str(), after.attempt), ("cancelled", 0));
    assert_eq!(done.run.state, "failed");

    // A manual retry re-queues the failed step and what its failure cancelled.
    let retried = jobs::retry(&db.pool, DEFAULT_ORG_ID, hopeless.id)
        .await
        .unwrap();
    assert_eq!((retried.state.as_str(), retried.attempt), ("queued", 0));
    let after_retry = jobs::get_step(&db.pool, DEFAULT_ORG_ID, after.id)
        .await
        .unwrap();
    assert_eq!(after_retry.state, "queued");
    // Retrying a succeeded step is refused.
    assert!(matches!(
        jobs::retry(&db.pool, DEFAULT_ORG_ID, flaky.id).await,
        Err(groundwork_store::Error::Conflict(_))
    ));
    w.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_queued_step_never_starts() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let run = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[
            step("first", "sleep", json!({"seconds": 1.0}), &[]),
            step("second", "sleep", json!({"seconds": 0.1}), &["first"]),
            step("third", "sleep", json!({"seconds": 0.1}), &["second"]),
            step("lonely", "sleep", json!({"seconds": 0.1}), &[]),
        ],
        None,
    )
    .await
    .unwrap();
    // Cancel before any worker exists: a dispatched queued step and a waiting one.
    let lonely = jobs::request_cancel(&db.pool, DEFAULT_ORG_ID, by_name(&run, "lonely").id)
        .await
        .unwrap();
    assert_eq!(lonely.state, "cancelled");
    let second = jobs::request_cancel(&db.pool, DEFAULT_ORG_ID, by_name(&run, "second").id)
        .await
        .unwrap();
    assert_eq!(second.state, "cancelled");

    let w = Worker::start(db.pool.clone(), config(2), Registry::builtin())
        .await
        .unwrap();
    let done = wait_run(&db.pool, run.run.id, Duration::from_secs(20)).await;
    assert_eq!(by_name(&done, "first").state, "succeeded");
    for name in ["second", "third", "lonely"] {
        let s = by_name(&done, name);
        assert_eq!((s.state.as_str(), s.attempt), ("cancelled", 0), "{name}");
        assert!(s.started_at.is_none(), "{name} started");
    }
    assert_eq!(done.run.state, "cancelled");
    // Cancelling a finished step is a conflict.
    assert!(matches!(
        jobs::request_cancel(&db.pool, DEFAULT_ORG_ID, by_name(&done, "first").id).await,
        Err(groundwork_store::Error::Conflict(_))
    ));
    w.shutdown().await;
}

#[tokio::test]
async fn a_running_step_stops_within_seconds_of_a_cancel() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let run = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("long", "sleep", json!({"seconds": 60.0}), &[])],
        None,
    )
    .await
    .unwrap();
    let w = Worker::start(db.pool.clone(), config(1), Registry::builtin())
        .await
        .unwrap();
    let id = run.steps[0].id;
    wait_step(&db.pool, id, "running", Duration::from_secs(10)).await;
    let asked = Instant::now();
    let flagged = jobs::request_cancel(&db.pool, DEFAULT_ORG_ID, id)
        .await
        .unwrap();
    assert!(flagged.cancel_requested);
    let s = wait_step(&db.pool, id, "cancelled", Duration::from_secs(10)).await;
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert!(s.output.is_none());
    assert!(s.lease_owner.is_none());
    // The slot is free again: new work runs.
    let next = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("next", "noop", json!({}), &[])],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        wait_run(&db.pool, next.run.id, Duration::from_secs(10))
            .await
            .run
            .state,
        "succeeded"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn paused_and_draining_workers_take_no_new_steps() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let w = Worker::start(db.pool.clone(), config(2), Registry::builtin())
        .await
        .unwrap();
    // Drain while a step runs: it finishes, nothing new starts.
    let first = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("a", "sleep", json!({"seconds": 2.0}), &[])],
        None,
    )
    .await
    .unwrap();
    wait_step(
        &db.pool,
        first.steps[0].id,
        "running",
        Duration::from_secs(10),
    )
    .await;
    let drained = workers::set_admin_state(&db.pool, w.id(), "draining")
        .await
        .unwrap();
    assert_eq!(drained.state, "draining");
    tokio::time::sleep(Duration::from_millis(800)).await; // a heartbeat sees the state
    let second = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("b", "noop", json!({}), &[])],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        wait_run(&db.pool, first.run.id, Duration::from_secs(10))
            .await
            .run
            .state,
        "succeeded"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        jobs::get_step(&db.pool, DEFAULT_ORG_ID, second.steps[0].id)
            .await
            .unwrap()
            .state,
        "queued"
    );

    workers::set_admin_state(&db.pool, w.id(), "paused")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        jobs::get_step(&db.pool, DEFAULT_ORG_ID, second.steps[0].id)
            .await
            .unwrap()
            .state,
        "queued"
    );

    workers::set_admin_state(&db.pool, w.id(), "active")
        .await
        .unwrap();
    assert_eq!(
        wait_run(&db.pool, second.run.id, Duration::from_secs(10))
            .await
            .run
            .state,
        "succeeded"
    );
    let id = w.id();
    w.shutdown().await;
    let gone = workers::get(&db.pool, id).await.unwrap();
    assert_eq!(gone.state, "offline");
}

#[tokio::test]
async fn an_expired_lease_requeues_the_step_and_the_old_holder_cannot_commit() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let mut s = step("s", "noop", json!({}), &[]);
    s.backoff_base_ms = 0;
    let run = jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &[s], None)
        .await
        .unwrap();
    let id = run.steps[0].id;
    // A worker that claims and then goes silent.
    let ghost = workers::register(
        &db.pool,
        &workers::Registration {
            name: "ghost".into(),
            pool: "cpu".into(),
            queues: vec!["cpu".into()],
            concurrency: 1,
            capabilities: json!({}),
            version: "0".into(),
        },
    )
    .await
    .unwrap();
    let claimed = jobs::claim(&db.pool, id, ghost, Duration::from_millis(300), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.attempt, 1);
    // A second claim of the same step is refused while the lease is held.
    assert!(
        jobs::claim(&db.pool, id, ghost, Duration::from_secs(1), None)
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reaped = jobs::reap(&db.pool).await.unwrap();
    assert_eq!(reaped.requeued, 1);
    let s = jobs::get_step(&db.pool, DEFAULT_ORG_ID, id).await.unwrap();
    assert_eq!((s.state.as_str(), s.attempt), ("queued", 1));
    // The ghost comes back: its writes are refused.
    assert_eq!(
        jobs::complete(&db.pool, &claimed, &json!({"ghost": true}), &[])
            .await
            .unwrap(),
        jobs::Completion::LeaseLost
    );
    assert_eq!(
        jobs::heartbeat(&db.pool, &claimed, Duration::from_secs(1), 0.5, "")
            .await
            .unwrap(),
        jobs::Beat::LeaseLost
    );
    // A live worker finishes it, exactly once.
    let w = Worker::start(db.pool.clone(), config(1), Registry::builtin())
        .await
        .unwrap();
    let done = wait_run(&db.pool, run.run.id, Duration::from_secs(15)).await;
    assert_eq!(
        (done.steps[0].state.as_str(), done.steps[0].attempt),
        ("succeeded", 2)
    );
    assert_eq!(done.steps[0].output, Some(json!(null)));
    w.shutdown().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_run() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let steps = [step("s", "noop", json!({}), &[])];
    let a = jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &steps, Some("k1"))
        .await
        .unwrap();
    let b = jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &steps, Some("k1"))
        .await
        .unwrap();
    let c = jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &steps, Some("k2"))
        .await
        .unwrap();
    assert_eq!(a.run.id, b.run.id);
    assert_ne!(a.run.id, c.run.id);
    let n: i64 = sqlx::query_scalar("select count(*) from step")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_kind_the_worker_lacks_fails_with_a_clear_error() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    // The database refuses names outside the vocabulary.
    jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("x", "noop", json!({}), &[])],
        None,
    )
    .await
    .unwrap();
    let bad = sqlx::query("update step set kind = 'teleport' where name = 'x'")
        .execute(&db.pool)
        .await;
    assert!(
        bad.is_err(),
        "the step_kind_valid check refuses unknown kinds"
    );
    // A worker whose registry lacks a kind (e.g. a release build facing a test kind) fails the step
    // with a reason instead of leaving it queued.
    let run = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("y", "sleep", json!({"seconds": 0.1}), &[])],
        None,
    )
    .await
    .unwrap();
    let mut registry = Registry::default();
    registry.insert(groundwork_worker::steps::Noop);
    let w = Worker::start(db.pool.clone(), config(1), registry)
        .await
        .unwrap();
    let done = wait_run(&db.pool, run.run.id, Duration::from_secs(10)).await;
    let s = &done.steps[0];
    assert_eq!(s.state, "failed");
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .contains("unknown step kind `sleep`"),
        "{s:#?}"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn a_message_held_but_not_reached_is_redispatched_and_a_claim_retires_its_message() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let run = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("s", "noop", json!({}), &[])],
        None,
    )
    .await
    .unwrap();
    let id = run.steps[0].id;
    let first: String = sqlx::query_scalar("select dispatch_id from step where id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // A busy worker fetched the message in a batch 30 s ago and has not reached it; the step has been
    // due for as long.
    sqlx::query(
        "insert into apalis.workers (id, worker_type, storage_name, layers, last_seen) \
         values ('busy', 'cpu', 'PostgresStorage', '', now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "update apalis.jobs set status = 'Queued', lock_by = 'busy', lock_at = now() - interval '30 seconds' \
         where id = $1",
    )
    .bind(&first)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("update step set run_at = now() - interval '30 seconds' where id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
    let reaped = jobs::reap(&db.pool).await.unwrap();
    assert_eq!(reaped.redispatched, 1);
    let second: String = sqlx::query_scalar("select dispatch_id from step where id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_ne!(first, second);
    // A message fetched a moment ago is live: nothing more is dispatched.
    assert_eq!(jobs::reap(&db.pool).await.unwrap().redispatched, 0);

    // The claim retires the message it came with, in the same statement.
    let me = workers::register(
        &db.pool,
        &workers::Registration {
            name: "w".into(),
            pool: "cpu".into(),
            queues: vec!["cpu".into()],
            concurrency: 1,
            capabilities: json!({}),
            version: "0".into(),
        },
    )
    .await
    .unwrap();
    let claimed = jobs::claim(&db.pool, id, me, Duration::from_secs(5), Some(&second))
        .await
        .unwrap();
    assert!(claimed.is_some());
    let status: String = sqlx::query_scalar("select status from apalis.jobs where id = $1")
        .bind(&second)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "Done");
    // The late claim through the old message finds nothing to run, and retires that message too.
    assert!(
        jobs::claim(&db.pool, id, me, Duration::from_secs(5), Some(&first))
            .await
            .unwrap()
            .is_none()
    );
    let status: String = sqlx::query_scalar("select status from apalis.jobs where id = $1")
        .bind(&first)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "Done");
}

/// A worker row for claims made by the test itself.
async fn test_worker(pool: &PgPool, name: &str) -> Uuid {
    workers::register(
        pool,
        &workers::Registration {
            name: name.into(),
            pool: "cpu".into(),
            queues: vec!["cpu".into()],
            concurrency: 1,
            capabilities: json!({}),
            version: "0".into(),
        },
    )
    .await
    .expect("registering a worker")
}

#[tokio::test]
async fn a_stale_execution_cannot_use_the_claim_that_follows_a_retry() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let mut s = step("s", "noop", json!({}), &[]);
    s.max_attempts = 1;
    let run = jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &[s], None)
        .await
        .unwrap();
    let id = run.steps[0].id;
    let me = test_worker(&db.pool, "me").await;
    // The first execution is cut off; its cancel is recorded by the reaper, and a user retries.
    let stale = jobs::claim(&db.pool, id, me, Duration::from_millis(200), None)
        .await
        .unwrap()
        .unwrap();
    jobs::request_cancel(&db.pool, DEFAULT_ORG_ID, id)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(jobs::reap(&db.pool).await.unwrap().cancelled, 1);
    jobs::retry(&db.pool, DEFAULT_ORG_ID, id).await.unwrap();
    // The same worker claims it again: the same attempt number, another claim.
    let fresh = jobs::claim(&db.pool, id, me, Duration::from_secs(30), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (fresh.attempt, fresh.lease_owner),
        (stale.attempt, stale.lease_owner)
    );
    assert_ne!(fresh.claim_id, stale.claim_id);

    // The stale execution changes nothing: no heartbeat, no output rows, no outcome.
    assert_eq!(
        jobs::heartbeat(&db.pool, &stale, Duration::from_secs(30), 0.9, "stale")
            .await
            .unwrap(),
        jobs::Beat::LeaseLost
    );
    assert!(matches!(
        jobs::fenced(&db.pool, id, stale.claim_id).await,
        Err(groundwork_store::Error::LeaseLost)
    ));
    assert_eq!(
        jobs::complete(&db.pool, &stale, &json!({"stale": true}), &[])
            .await
            .unwrap(),
        jobs::Completion::LeaseLost
    );
    assert_eq!(
        jobs::fail(&db.pool, &stale, "stale", false).await.unwrap(),
        jobs::FailOutcome::LeaseLost
    );
    let now = jobs::get_step(&db.pool, DEFAULT_ORG_ID, id).await.unwrap();
    assert_eq!((now.state.as_str(), now.message.as_str()), ("running", ""));

    // The fresh claim's writes go through.
    jobs::fenced(&db.pool, id, fresh.claim_id)
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    assert_eq!(
        jobs::complete(&db.pool, &fresh, &json!({"fresh": true}), &[])
            .await
            .unwrap(),
        jobs::Completion::Succeeded
    );
    let done = jobs::get_step(&db.pool, DEFAULT_ORG_ID, id).await.unwrap();
    assert_eq!(
        (done.state.as_str(), done.output),
        ("succeeded", Some(json!({"fresh": true})))
    );
    // Both claims keep their history rows.
    let outcomes: Vec<Option<String>> = sqlx::query_scalar(
        "select outcome from step_attempt where step_id = $1 order by started_at",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        [Some("lost".to_owned()), Some("succeeded".to_owned())]
    );
}

#[tokio::test]
async fn a_cancel_wins_over_a_retryable_failure_and_over_a_late_success() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let me = test_worker(&db.pool, "me").await;
    let run = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[
            step("first", "noop", json!({}), &[]),
            step("second", "noop", json!({}), &["first"]),
        ],
        None,
    )
    .await
    .unwrap();
    let first = by_name(&run, "first").id;
    let c = jobs::claim(&db.pool, first, me, Duration::from_secs(30), None)
        .await
        .unwrap()
        .unwrap();
    jobs::request_cancel(&db.pool, DEFAULT_ORG_ID, first)
        .await
        .unwrap();
    // The body then fails with an error worth retrying: the step is cancelled all the same.
    assert_eq!(
        jobs::fail(&db.pool, &c, "connection reset", true)
            .await
            .unwrap(),
        jobs::FailOutcome::Cancelled
    );
    let r = jobs::get_run(&db.pool, DEFAULT_ORG_ID, run.run.id)
        .await
        .unwrap();
    assert_eq!(r.run.state, "cancelled");
    assert_eq!(by_name(&r, "first").state, "cancelled");
    assert_eq!(by_name(&r, "second").state, "cancelled");

    // Retry works on it afterwards, and the run finishes.
    jobs::retry(&db.pool, DEFAULT_ORG_ID, first).await.unwrap();
    let w = Worker::start(db.pool.clone(), config(1), Registry::builtin())
        .await
        .unwrap();
    let done = wait_run(&db.pool, run.run.id, Duration::from_secs(15)).await;
    assert_eq!(done.run.state, "succeeded", "{done:#?}");
    w.shutdown().await;

    // A body that succeeds after its cancel was requested: the result is discarded.
    let run = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("late", "noop", json!({}), &[])],
        None,
    )
    .await
    .unwrap();
    let late = run.steps[0].id;
    let c = jobs::claim(&db.pool, late, me, Duration::from_secs(30), None)
        .await
        .unwrap()
        .unwrap();
    jobs::request_cancel(&db.pool, DEFAULT_ORG_ID, late)
        .await
        .unwrap();
    assert_eq!(
        jobs::complete(&db.pool, &c, &json!({"late": true}), &[])
            .await
            .unwrap(),
        jobs::Completion::Cancelled
    );
    let s = jobs::get_step(&db.pool, DEFAULT_ORG_ID, late)
        .await
        .unwrap();
    assert_eq!((s.state.as_str(), s.output), ("cancelled", None));
}

#[tokio::test]
async fn a_lost_lease_uses_up_no_attempt_and_has_its_own_cap() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let mut s = step("s", "noop", json!({}), &[]);
    s.max_attempts = 1;
    s.backoff_base_ms = 0;
    let run = jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &[s], None)
        .await
        .unwrap();
    let id = run.steps[0].id;
    let me = test_worker(&db.pool, "killed-every-time").await;
    for lost in 1..=jobs::MAX_LOST_LEASES {
        jobs::claim(&db.pool, id, me, Duration::from_millis(100), None)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        jobs::reap(&db.pool).await.unwrap();
        let now = jobs::get_step(&db.pool, DEFAULT_ORG_ID, id).await.unwrap();
        if lost < jobs::MAX_LOST_LEASES {
            // The one attempt allowed is still there.
            assert_eq!(now.state, "queued", "after {lost} lost lease(s): {now:#?}");
            // The re-queue's backoff (zero here) must pass before the next claim.
            sqlx::query("update step set run_at = now() where id = $1")
                .bind(id)
                .execute(&db.pool)
                .await
                .unwrap();
        } else {
            assert_eq!(now.state, "failed");
            assert!(
                now.error.as_deref().unwrap().contains("lost its worker"),
                "{now:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_neither_stops_the_workers_nor_fails_the_work() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let w = Worker::start(db.pool.clone(), config(1), Registry::builtin())
        .await
        .unwrap();
    // One attempt only: a step marked failed because of the outage would fail the run.
    let mut long = step("long", "sleep", json!({"seconds": 1.5}), &[]);
    long.max_attempts = 1;
    let mut then = step("then", "noop", json!({}), &["long"]);
    then.max_attempts = 1;
    let run = jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &[long, then], None)
        .await
        .unwrap();
    wait_step(
        &db.pool,
        by_name(&run, "long").id,
        "running",
        Duration::from_secs(10),
    )
    .await;
    // Longer than the lease (3 s): the worker fences itself, and the step is re-queued, not failed.
    db.outage(Duration::from_secs(5)).await.unwrap();
    let done = wait_run(&db.pool, run.run.id, Duration::from_secs(40)).await;
    assert_eq!(done.run.state, "succeeded", "{done:#?}");

    // The worker's pollers came back: new work is taken.
    let after = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("after", "noop", json!({}), &[])],
        None,
    )
    .await
    .unwrap();
    let done = wait_run(&db.pool, after.run.id, Duration::from_secs(20)).await;
    assert_eq!(done.run.state, "succeeded", "{done:#?}");
    w.shutdown().await;
}

#[tokio::test]
async fn two_acquisitions_of_one_project_cannot_run_at_once() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let other = project(&db.pool, DEFAULT_ORG_ID, "q").await;
    let acquisition = || [step("acquire-0", "acquire", json!({}), &[])];
    // Concurrent requests: exactly one wins, the others name its run.
    let steps = acquisition();
    let attempts = futures::future::join_all(
        (0..4).map(|_| jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &steps, None)),
    )
    .await;
    let won: Vec<_> = attempts.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1);
    let open = won[0].run.id;
    for r in &attempts {
        if let Err(e) = r {
            assert!(matches!(e, groundwork_store::Error::Conflict(_)), "{e}");
            assert!(e.to_string().contains(&open.to_string()), "{e}");
        }
    }
    // Another project is not affected, nor is other work on this one.
    jobs::create_run(&db.pool, DEFAULT_ORG_ID, other, &acquisition(), None)
        .await
        .unwrap();
    jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("n", "noop", json!({}), &[])],
        None,
    )
    .await
    .unwrap();
    // Once the open one ends, a new acquisition starts.
    jobs::request_cancel(&db.pool, DEFAULT_ORG_ID, won[0].steps[0].id)
        .await
        .unwrap();
    jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &acquisition(), None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_the_database_cluster_during_a_run_fails_no_step() {
    // A private cluster of our own, so stopping it touches no other test.
    let root = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // As root, the cluster runs as `postgres`, which must reach the folder.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let dir = root.path().join("pg");
    let cluster = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || groundwork_store::devdb::LocalDb::start_for_tests(&dir))
            .await
            .unwrap()
            .unwrap()
    };
    let pool = groundwork_store::connect(&cluster.url("postgres"), 10)
        .await
        .unwrap();
    groundwork_store::migrate(&pool).await.unwrap();
    let p = project(&pool, DEFAULT_ORG_ID, "p").await;
    let w = Worker::start(pool.clone(), config(1), Registry::builtin())
        .await
        .unwrap();
    // Two long steps, one for each restart, and one after them; one attempt each, so a step marked
    // failed because of an outage would fail the run.
    let mut first = step("first", "sleep", json!({"seconds": 1.5}), &[]);
    first.max_attempts = 1;
    let mut second = step("second", "sleep", json!({"seconds": 1.5}), &["first"]);
    second.max_attempts = 1;
    let mut then = step("then", "noop", json!({}), &["second"]);
    then.max_attempts = 1;
    let run = jobs::create_run(&pool, DEFAULT_ORG_ID, p, &[first, second, then], None)
        .await
        .unwrap();
    // The cluster is stopped while `name` runs, kept down for `down`, and started again.
    let restart = async |cluster: groundwork_store::devdb::LocalDb, name: &str, down: Duration| {
        wait_step(
            &pool,
            by_name(&run, name).id,
            "running",
            Duration::from_secs(60),
        )
        .await;
        tokio::task::spawn_blocking(move || {
            cluster.stop().unwrap();
            std::thread::sleep(down);
            assert!(cluster.ensure_running().unwrap(), "it was stopped");
            cluster
        })
        .await
        .unwrap()
    };
    // 5 s (longer than the 3 s lease), then 40 s (many leases, and longer than the default lease).
    let cluster = restart(cluster, "first", Duration::from_secs(5)).await;
    let cluster = restart(cluster, "second", Duration::from_secs(40)).await;
    let done = wait_run(&pool, run.run.id, Duration::from_secs(90)).await;
    assert_eq!(done.run.state, "succeeded", "{done:#?}");
    for name in ["first", "second"] {
        let lost: i32 = sqlx::query_scalar("select lost_leases from step where id = $1")
            .bind(by_name(&run, name).id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(lost <= 1, "{name}: {lost}");
    }
    w.shutdown().await;
    pool.close().await;
    cluster.stop().unwrap();
}

#[tokio::test]
async fn a_succeeded_step_shows_its_last_word_not_a_stale_progress_line() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "p").await;
    let w = Worker::start(db.pool.clone(), config(1), Registry::builtin())
        .await
        .unwrap();
    // Heartbeats every 300 ms carry "slept … s of 1.0 s"; the body's final word comes after the last.
    let run = jobs::create_run(
        &db.pool,
        DEFAULT_ORG_ID,
        p,
        &[step("s", "sleep", json!({"seconds": 1.0}), &[])],
        None,
    )
    .await
    .unwrap();
    let done = wait_run(&db.pool, run.run.id, Duration::from_secs(20)).await;
    assert_eq!(done.run.state, "succeeded");
    assert_eq!(done.steps[0].message, "slept 1.0 s");
    assert!((done.steps[0].progress - 1.0).abs() < 1e-6);
    w.shutdown().await;
}
