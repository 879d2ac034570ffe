//! Training runs, curves and evaluation reports over HTTP on a real database; another organisation's run
//! or project is a 404.

use axum::http::StatusCode;
use groundwork_server::AppState;
use groundwork_store::models::{self, NewEvaluation, TrainingEpoch};
use groundwork_store::testing::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::call;

fn project() -> Value {
    json!({
        "name": "lakes",
        "aoi": {"type": "Polygon", "coordinates": [[[15.0, 45.0], [15.05, 45.0], [15.05, 45.05], [15.0, 45.05], [15.0, 45.0]]]},
        "start": "2024-04-01",
        "end": "2024-07-31",
        "task": "segmentation",
        "classes": [{"id": 1, "name": "water", "color": "#0000ff"}, {"id": 2, "name": "forest", "color": "#00aa00"}],
        "modalities": ["sentinel2_l2a"],
        "model_size": "nano",
        "patch_size": 4,
        "window_size": 64
    })
}

#[tokio::test]
async fn training_runs_curves_and_evaluations_are_served_to_their_organisation_only() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let (status, p) = call(&app, "POST", "/api/v1/projects", Some(project())).await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();

    // Bad settings are field errors; nothing is created.
    let (status, err) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/train"),
        Some(json!({"epochs": 0, "head": "pooling", "lr": 5.0})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let fields: Vec<&str> = err["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["epochs", "lr", "head"]);
    let (status, err) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/train"),
        Some(json!({"epoch": 3})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");

    // A training run: train then evaluate, on the cpu queue when no GPU worker is online.
    let (status, run) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/train"),
        Some(json!({"epochs": 12, "freeze_epochs": 10, "label_set_version": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run_id: Uuid = run["id"].as_str().unwrap().parse().unwrap();
    let steps = run["steps"].as_array().unwrap();
    assert_eq!(steps[0]["kind"], "train");
    assert_eq!(steps[0]["queue"], "cpu");
    assert_eq!(steps[0]["args"]["epochs"], 12);
    assert_eq!(steps[0]["args"]["label_set_version"], 2);
    assert_eq!(steps[1]["kind"], "evaluate");
    assert_eq!(steps[1]["depends_on"], json!(["train"]));
    let train_step: Uuid = steps[0]["id"].as_str().unwrap().parse().unwrap();

    // No evaluation yet: 404; the curve is empty.
    let (status, _) = call(
        &app,
        "GET",
        &format!("/api/v1/runs/{run_id}/evaluation"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, curve) = call(
        &app,
        "GET",
        &format!("/api/v1/runs/{run_id}/training"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(curve["epochs"], json!([]));

    // What the steps record shows up.
    for epoch in 1..=2 {
        models::record_epoch(
            &db.pool,
            run_id,
            &TrainingEpoch {
                step_id: train_step,
                epoch,
                phase: "frozen".into(),
                train_loss: 1.0 / f64::from(epoch),
                val_loss: Some(0.9),
                val_metric: Some(0.5 + 0.1 * f64::from(epoch)),
                metric: "accuracy".into(),
                seconds: 1.5,
            },
        )
        .await
        .unwrap();
    }
    let report = json!({"task": "segmentation", "model": {"accuracy": 0.91, "miou": 0.8}, "baseline": {"accuracy": 0.85}});
    models::record_evaluation(
        &db.pool,
        &NewEvaluation {
            run_id,
            step_id: Some(steps[1]["id"].as_str().unwrap().parse().unwrap()),
            label_set_version: Some(2),
            model_key: "orgs/x/model.json".into(),
            report: report.clone(),
        },
    )
    .await
    .unwrap();
    let (status, curve) = call(
        &app,
        "GET",
        &format!("/api/v1/runs/{run_id}/training"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(curve["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(curve["epochs"][1]["val_metric"], 0.7);
    let (status, eval) = call(
        &app,
        "GET",
        &format!("/api/v1/runs/{run_id}/evaluation"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{eval}");
    assert_eq!(eval["report"], report);
    assert_eq!(eval["label_set_version"], 2);
    assert_eq!(eval["project_id"].as_str(), Some(pid.as_str()));
    let (status, list) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/evaluations"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], eval["id"]);

    // Another organisation's project and run.
    let other_org = Uuid::now_v7();
    sqlx::query("insert into org (id, name) values ($1, 'other')")
        .bind(other_org)
        .execute(&db.pool)
        .await
        .unwrap();
    let fields = groundwork_store::projects::ProjectFields {
        name: "theirs".into(),
        description: String::new(),
        aoi: project()["aoi"].clone(),
        bbox: [15.0, 45.0, 15.05, 45.05],
        area_km2: 20.0,
        start: "2024-04-01".parse().unwrap(),
        end: "2024-07-31".parse().unwrap(),
        task: "segmentation".parse().unwrap(),
        classes: Vec::new(),
        modalities: vec!["sentinel2_l2a".parse().unwrap()],
        model_size: "nano".parse().unwrap(),
        patch_size: 4,
        window_size: 64,
        license: "CC-BY-4.0".into(),
        license_url: None,
        allow_random_init: false,
    };
    let theirs = groundwork_store::projects::create(&db.pool, other_org, &fields)
        .await
        .unwrap();
    let their_run = groundwork_store::jobs::create_run(
        &db.pool,
        other_org,
        theirs.id,
        &[groundwork_store::jobs::NewStep::new(
            "train",
            "train".parse().unwrap(),
            json!({}),
            "cpu",
        )],
        None,
    )
    .await
    .unwrap();
    let their_run_id = their_run.run.id;
    models::record_evaluation(
        &db.pool,
        &NewEvaluation {
            run_id: their_run_id,
            step_id: None,
            label_set_version: Some(1),
            model_key: "k".into(),
            report: json!({"secret": true}),
        },
    )
    .await
    .unwrap();
    for uri in [
        format!("/api/v1/runs/{their_run_id}/evaluation"),
        format!("/api/v1/runs/{their_run_id}/training"),
        format!("/api/v1/projects/{}/evaluations", theirs.id),
    ] {
        let (status, body) = call(&app, "GET", &uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, _) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{}/train", theirs.id),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Our listing never shows their report.
    let (_, list) = call(
        &app,
        "GET",
        &format!("/api/v1/projects/{pid}/evaluations"),
        None,
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn prediction_takes_a_trained_model_of_the_project_and_says_what_is_missing() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let (status, p) = call(&app, "POST", "/api/v1/projects", Some(project())).await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    let predict = format!("/api/v1/projects/{pid}/predict");

    // Nothing trained yet: a field error that says so; bad settings are field errors too.
    let (status, err) = call(&app, "POST", &predict, Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["field"], "run_id", "{err}");
    let (status, err) = call(
        &app,
        "POST",
        &predict,
        Some(json!({"block": 0, "overlap": 64})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let fields: Vec<&str> = err["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["block", "overlap"]);
    // A run that is not a training run of this project is not found.
    let (status, _) = call(
        &app,
        "POST",
        &predict,
        Some(json!({"run_id": Uuid::now_v7()})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Training a project without acquired imagery is refused with what to do first.
    let (status, err) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/train"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Acquire imagery first"),
        "{err}"
    );
    // A finished training run (its step's output as a worker commits it) is found by default; the
    // project has no acquired windows yet, which is the next thing the answer names. (Naming a
    // label-set version leaves its checks to the step.)
    let (status, run) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/train"),
        Some(json!({"label_set_version": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let (status, err) = call(&app, "POST", &predict, Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(
        err["error"]["details"][0]["field"], "run_id",
        "a queued training is not a model"
    );
    let train_step: Uuid = run["steps"][0]["id"].as_str().unwrap().parse().unwrap();
    sqlx::query(
        "update step set state = 'succeeded', attempt = 1, started_at = now(), finished_at = now(), \
         output = $2 where id = $1",
    )
    .bind(train_step)
    .bind(json!({"weights_sha256": "ab", "label_set_version": 1}))
    .execute(&db.pool)
    .await
    .unwrap();
    let (status, err) = call(&app, "POST", &predict, Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["field"], "project", "{err}");
    assert!(
        err["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("acquire imagery first"),
        "{err}"
    );

    // Another organisation's member cannot start a prediction of this project.
    let other_org = Uuid::now_v7();
    sqlx::query("insert into org (id, name) values ($1, 'elsewhere')")
        .bind(other_org)
        .execute(&db.pool)
        .await
        .unwrap();
    let token = groundwork_server::testing::member_token(
        &db.pool,
        other_org,
        groundwork_store::accounts::Role::Owner,
    )
    .await
    .unwrap();
    let theirs = groundwork_server::testing::with_bearer(
        groundwork_server::router(AppState::new(db.pool.clone())),
        &token,
    )
    .unwrap();
    let (status, _) = call(&theirs, "POST", &predict, Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_best_trained_model_by_validation_score_is_the_default_and_the_list_says_so() {
    let db = TestDb::new().await.unwrap();
    let app = groundwork_server::testing::owner_router(AppState::new(db.pool.clone()))
        .await
        .unwrap();
    let (status, p) = call(&app, "POST", "/api/v1/projects", Some(project())).await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    let models_uri = format!("/api/v1/projects/{pid}/models");
    let (status, list) = call(&app, "GET", &models_uri, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list, json!([]));
    // Three finished trainings, oldest first; the middle one scores best on validation, the newest
    // has no score at all.
    let mut runs = Vec::new();
    for score in [Some(0.61), Some(0.83), None] {
        let (status, run) = call(
            &app,
            "POST",
            &format!("/api/v1/projects/{pid}/train"),
            Some(json!({"label_set_version": 1})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        let step: Uuid = run["steps"][0]["id"].as_str().unwrap().parse().unwrap();
        sqlx::query(
            "update step set state = 'succeeded', attempt = 1, started_at = now(), finished_at = now(), \
             output = $2 where id = $1",
        )
        .bind(step)
        .bind(json!({"label_set_version": 1, "initialised_from": "random",
                     "metrics": {"metric": "macro_f1", "val_metric": score, "chosen_description": "fine-tuned head"}}))
        .execute(&db.pool)
        .await
        .unwrap();
        runs.push(run["id"].as_str().unwrap().to_owned());
    }
    let (status, list) = call(&app, "GET", &models_uri, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let list = list.as_array().unwrap();
    let ids: Vec<&str> = list.iter().map(|m| m["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![&runs[2], &runs[1], &runs[0]], "newest first");
    let best: Vec<&str> = list
        .iter()
        .filter(|m| m["best"] == true)
        .map(|m| m["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        best,
        vec![runs[1].as_str()],
        "the best validation score, not the newest"
    );
    assert_eq!(list[1]["val_metric"], 0.83);
    assert_eq!(list[1]["metric"], "macro_f1");
    assert_eq!(list[1]["initialised_from"], "random");
    // A named model is taken (the project then lacks imagery, which is the next thing said).
    let (status, err) = call(
        &app,
        "POST",
        &format!("/api/v1/projects/{pid}/predict"),
        Some(json!({"run_id": runs[0]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["field"], "project", "{err}");
    // Another organisation sees no list.
    let other_org = Uuid::now_v7();
    sqlx::query("insert into org (id, name) values ($1, 'elsewhere')")
        .bind(other_org)
        .execute(&db.pool)
        .await
        .unwrap();
    let token = groundwork_server::testing::member_token(
        &db.pool,
        other_org,
        groundwork_store::accounts::Role::Owner,
    )
    .await
    .unwrap();
    let theirs = groundwork_server::testing::with_bearer(
        groundwork_server::router(AppState::new(db.pool.clone())),
        &token,
    )
    .unwrap();
    let (status, _) = call(&theirs, "GET", &models_uri, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
