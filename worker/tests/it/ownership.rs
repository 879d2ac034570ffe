//! Steps take their project and organisation from their run, never from their arguments: a step of one
//! organisation that names another organisation's project or run reaches nothing of it.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use crate::common::project;
use groundwork_store::accounts;
use groundwork_store::audit::Who;
use groundwork_store::jobs::{self, NewStep, RunWithSteps};
use groundwork_store::testing::TestDb;
use groundwork_store::{DEFAULT_ORG_ID, PgPool};
use groundwork_types::StepKind;
use groundwork_types::keys::ProjectKeys;
use groundwork_worker::{Registry, StepArgs, Worker, WorkerConfig, check_args, steps};
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn wait_run(pool: &PgPool, org: Uuid, run: Uuid) -> RunWithSteps {
    let start = Instant::now();
    loop {
        let r = jobs::get_run(pool, org, run).await.unwrap();
        if r.run.state.is_terminal() {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{r:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn no_step_kind_accepts_a_project_in_its_arguments() {
    let other = Uuid::new_v4();
    for &kind in StepKind::ALL {
        // The smallest valid arguments of each kind, then the same with a project id added.
        let minimal = match kind {
            StepKind::Acquire => json!({"stac": "https://example.org/stac"}),
            StepKind::Predict => {
                json!({"epsg": 32633, "block": 1, "block_column": 0, "block_row": 0,
                                        "model": {"kind": "trained", "run_id": other}})
            }
            StepKind::Sleep => json!({"seconds": 0}),
            StepKind::Fail => json!({"times": 0}),
            _ => json!({}),
        };
        assert!(
            check_args(kind, &minimal).is_ok(),
            "{kind}: {:?}",
            check_args(kind, &minimal)
        );
        if kind == StepKind::Noop {
            continue; // takes no arguments and ignores whatever it is given
        }
        let mut naming = minimal.clone();
        naming["project_id"] = json!(other);
        let e = check_args(kind, &naming).unwrap_err().to_string();
        assert!(e.contains("project_id"), "{kind}: {e}");
    }
}

#[test]
fn no_argument_names_a_file_on_the_worker() {
    let path = json!({"epsg": 32633, "block": 1, "block_column": 0, "block_row": 0,
                      "model": {"kind": "checkpoint", "path": "/etc", "outputs": 2}});
    assert!(check_args(StepKind::Predict, &path).is_err());
    let released = json!({"epsg": 32633, "block": 1, "block_column": 0, "block_row": 0,
                          "model": {"kind": "released", "size": "nano", "outputs": 2}});
    check_args(StepKind::Predict, &released).unwrap();
}

#[test]
fn arguments_keep_the_limits_of_the_dedicated_endpoints() {
    for (kind, args) in [
        (StepKind::Train, json!({"epochs": 100_000})),
        (StepKind::Train, json!({"batch_size": 0})),
        (StepKind::Sleep, json!({"seconds": 1e9})),
        (StepKind::Acquire, json!({"stac": "x", "partition": [3, 2]})),
        (
            StepKind::Predict,
            json!({"epsg": 32633, "block": 1000, "block_column": 0, "block_row": 0,
                                   "model": {"kind": "constant", "values": [1.0]}}),
        ),
    ] {
        assert!(check_args(kind, &args).is_err(), "{kind} {args}");
    }
}

#[tokio::test]
async fn an_evaluation_naming_another_organisations_run_reaches_nothing_of_it() {
    let db = TestDb::new().await.unwrap();
    let pool = &db.pool;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    // Organisation A has a trained model (its manifest is all that matters here).
    let project_a = project(pool, DEFAULT_ORG_ID, "a").await;
    let run_a = Uuid::new_v4();
    let manifest_a = ProjectKeys::new(DEFAULT_ORG_ID, project_a)
        .model(run_a)
        .manifest;
    store
        .put(&manifest_a.as_str().into(), b"{}".to_vec().into())
        .await
        .unwrap();
    // Organisation B evaluates "A's run" from a run of its own project.
    let org_b = accounts::create_org(pool, &Who::cli(), "b", None)
        .await
        .unwrap()
        .id;
    let project_b = project(pool, org_b, "b").await;
    let args = steps::EvaluateArgs {
        train_run_id: Some(run_a),
        device: Some("cpu".into()),
    };
    let mut step: NewStep = args.to_step("evaluate", "cpu");
    step.max_attempts = 1;
    let run = jobs::create_run(pool, org_b, project_b, &[step], None)
        .await
        .unwrap();
    let mut config = WorkerConfig::new("cpu", vec!["cpu".into()]);
    config.objects = Some(store.clone());
    config.heartbeat = Duration::from_millis(300);
    let w = Worker::start(pool.clone(), config, Registry::builtin())
        .await
        .unwrap();
    let done = wait_run(pool, org_b, run.run.id).await;
    w.shutdown().await;
    let s = &done.steps[0];
    assert_eq!(s.state, "failed", "{s:#?}");
    let error = s.error.as_deref().unwrap_or_default();
    let b_prefix = ProjectKeys::new(org_b, project_b).prefix().to_owned();
    assert!(
        error.contains("no trained model") && error.contains(&b_prefix),
        "looked under its own project only: {error}"
    );
    assert!(!error.contains(&project_a.to_string()), "{error}");
    // Nothing was recorded against A's run.
    let evaluations: i64 = sqlx::query_scalar("select count(*) from evaluation where run_id = $1")
        .bind(run_a)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(evaluations, 0);
}
