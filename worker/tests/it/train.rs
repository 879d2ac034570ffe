//! `train` and `evaluate` on real PostgreSQL and a real (local-folder) object store, with the Nano fixture
//! checkpoint as the model directory: a cancelled training attempt resumes after its last checkpointed
//! epoch with a continuous curve, and the evaluation of the trained model is stored.
#![expect(clippy::unwrap_used, reason = "tests")]

use candle_core::{DType, Device, Tensor};
use groundwork_store::jobs::{self, NewStep};
use groundwork_store::labels::{LabelTarget, Split, TrainingExample};
use groundwork_store::projects::{self, ProjectFields};
use groundwork_store::testing::TestDb;
use groundwork_types::{Modality, ModelSize, StepKind, Task};
use groundwork_worker::steps::{EvaluateArgs, TrainArgs, evaluate_model, train_on_examples};
use groundwork_worker::{Progress, StepContext, StepError};
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use olmoearth::task::to_safetensors;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SIZE: usize = 16;
const T: usize = 2;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../olmoearth/tests/fixtures/olmoearth-nano")
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Window tensors as acquisition writes them (S2 DN, mask, timestamps) with water (class 1) in the left
/// `split` columns and cropland (class 3) elsewhere; the label mask uses the class ids.
fn window(split: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let water = [
        600., 500., 350., 200., 300., 250., 220., 200., 100., 80., 700., 150.,
    ];
    let crop = [
        400., 750., 380., 3900., 950., 2700., 3400., 3600., 1800., 850., 450., 1050.,
    ];
    let n = noise(SIZE * SIZE * T * 12, seed);
    let mut data = Vec::with_capacity(n.len());
    let mut label = Vec::with_capacity(SIZE * SIZE);
    for _y in 0..SIZE {
        for x in 0..SIZE {
            let is_water = x < split;
            label.push(if is_water { 1u8 } else { 3 });
            for _ in 0..T {
                for b in 0..12 {
                    let base: f32 = if is_water { water[b] } else { crop[b] };
                    data.push(base * (1.0 + 0.1 * n[data.len()]));
                }
            }
        }
    }
    let dev = Device::Cpu;
    let tensors = vec![
        (
            "sentinel2_l2a".to_string(),
            Tensor::from_vec(data, (SIZE, SIZE, T, 12), &dev).unwrap(),
        ),
        (
            "sentinel2_l2a_mask".to_string(),
            Tensor::zeros((SIZE, SIZE, T, 3), DType::U8, &dev).unwrap(),
        ),
        (
            "timestamps".to_string(),
            Tensor::new(&[[1i32, 4, 2024], [1, 5, 2024]], &dev).unwrap(),
        ),
    ];
    (to_safetensors(tensors, None).unwrap(), label)
}

struct Setup {
    db: TestDb,
    _dir: tempfile::TempDir,
    store: Arc<dyn object_store::ObjectStore>,
    project_id: Uuid,
    org_id: Uuid,
    run_id: Uuid,
    train_step: Uuid,
    eval_step: Uuid,
    examples: Vec<TrainingExample>,
}

async fn setup() -> Setup {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let org_id = groundwork_store::DEFAULT_ORG_ID;
    let project = projects::create(
        &db.pool,
        org_id,
        &ProjectFields {
            name: "lakes".into(),
            description: String::new(),
            aoi: json!({"type": "Polygon", "coordinates": [[[15.0, 45.0], [15.1, 45.0], [15.1, 45.1], [15.0, 45.0]]]}),
            bbox: [15.0, 45.0, 15.1, 45.1],
            area_km2: 10.0,
            start: "2024-04-01".parse().unwrap(),
            end: "2024-05-31".parse().unwrap(),
            task: Task::Segmentation,
            classes: serde_json::from_value(json!([{"id": 1, "name": "water", "color": "#0000ff"}, {"id": 3, "name": "cropland", "color": "#ffcc00"}])).unwrap(),
            modalities: vec![Modality::Sentinel2L2a],
            model_size: ModelSize::Nano,
            patch_size: 4,
            window_size: i32::try_from(SIZE).unwrap(),
            license: "CC-BY-4.0".into(),
            license_url: None,
            allow_random_init: false,
        },
    )
    .await
    .unwrap();
    let mut examples = Vec::new();
    for i in 0..16u64 {
        let split = match i {
            0..=9 => Split::Train,
            10..=12 => Split::Val,
            _ => Split::Test,
        };
        // Water covers 2–9 of 16 columns: cropland is the majority.
        let (bytes, label) = window(2 + (i as usize * 3) % 8, i);
        let id = format!("32633_10m_{SIZE}px_{i}_0");
        store
            .put(
                &ObjectPath::from(format!(
                    "orgs/{org_id}/projects/{}/windows/{id}/sentinel2_l2a.safetensors",
                    project.id
                )),
                bytes.into(),
            )
            .await
            .unwrap();
        examples.push(TrainingExample {
            window_id: id,
            split,
            target: LabelTarget::Mask {
                size: u32::try_from(SIZE).unwrap(),
                pixels: label,
            },
        });
    }
    // A labelled window without imagery is skipped, not fatal.
    examples.push(TrainingExample {
        window_id: "missing".into(),
        split: Split::Train,
        target: LabelTarget::Mask {
            size: u32::try_from(SIZE).unwrap(),
            pixels: vec![1; SIZE * SIZE],
        },
    });
    let mut train = NewStep::new("train", StepKind::Train, json!({}), "cpu");
    train.max_attempts = 5;
    let mut eval = NewStep::new("evaluate", StepKind::Evaluate, json!({}), "cpu");
    eval.depends_on = vec!["train".into()];
    let run = jobs::create_run(&db.pool, org_id, project.id, &[train, eval], None)
        .await
        .unwrap();
    Setup {
        train_step: run.steps[0].id,
        eval_step: run.steps[1].id,
        run_id: run.run.id,
        db,
        _dir: dir,
        store,
        project_id: project.id,
        org_id,
        examples,
    }
}

impl Setup {
    /// The context of a fresh claim of `step_id`: the step is set `running` under a new claim id, as a
    /// worker's claim does, so the body's fenced writes commit (and an earlier claim's no longer do).
    async fn ctx(&self, step_id: Uuid, attempt: i32, cancel: CancellationToken) -> StepContext {
        self.ctx_in(step_id, attempt, cancel, Some(fixture_dir()))
            .await
    }

    /// [`Setup::ctx`] on a worker whose model folder is `model_dir`.
    async fn ctx_in(
        &self,
        step_id: Uuid,
        attempt: i32,
        cancel: CancellationToken,
        model_dir: Option<PathBuf>,
    ) -> StepContext {
        let claim_id = Uuid::now_v7();
        sqlx::query(
            "update step set state = 'running', attempt = $2, claim_id = $3, \
                 lease_expires_at = now() + interval '1 hour', started_at = coalesce(started_at, now()) \
             where id = $1",
        )
        .bind(step_id)
        .bind(attempt)
        .bind(claim_id)
        .execute(&self.db.pool)
        .await
        .unwrap();
        StepContext {
            step_id,
            run_id: self.run_id,
            project_id: self.project_id,
            org_id: self.org_id,
            attempt,
            claim_id,
            args: Value::Null,
            progress: Progress::default(),
            cancel,
            data: groundwork_worker::data::DataAccess::Local(self.db.pool.clone()),
            objects: Some(self.store.clone()),
            model_dir,
            outbound: groundwork_imagery::OutboundPolicy::default(),
        }
    }

    /// Commits a step's output with `succeeded`, as the runtime does after the body returns.
    async fn succeed(&self, step_id: Uuid, output: &Value) {
        sqlx::query(
            "update step set state = 'succeeded', output = $2, finished_at = now() where id = $1",
        )
        .bind(step_id)
        .bind(output)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    async fn state_epoch(&self) -> Option<u64> {
        let key = ObjectPath::from(format!(
            "orgs/{}/projects/{}/runs/{}/checkpoints/state.json",
            self.org_id, self.project_id, self.run_id
        ));
        let bytes = self.store.get(&key).await.ok()?.bytes().await.ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        v["fit"]["epoch"].as_u64()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_training_resumes_after_its_last_checkpoint_and_is_evaluated() {
    let s = setup().await;
    let args = TrainArgs {
        epochs: Some(7),
        freeze_epochs: Some(5),
        batch_size: Some(2),
        lr: Some(1e-2),
        patience: Some(10),
        device: Some("cpu".into()),
        ..TrainArgs::default()
    };

    // Attempt 1: cancelled once two epochs are checkpointed (frozen epochs are quick, unfrozen ones slow).
    let cancel = CancellationToken::new();
    let ctx = s.ctx(s.train_step, 1, cancel.clone()).await;
    let (a, ex) = (args.clone(), s.examples.clone());
    let first = tokio::spawn(async move { train_on_examples(&ctx, &a, 7, ex).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while s.state_epoch().await.unwrap_or(0) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 10 minutes"
        );
        assert!(
            !first.is_finished(),
            "training ended before it could be cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    let err = first.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    let saved = s.state_epoch().await.unwrap();
    assert!((2..7).contains(&saved), "checkpointed epoch {saved}");
    let curve_before: Vec<(i32, f64)> = sqlx::query_as(
        "select epoch, train_loss from training_epoch where step_id = $1 and epoch <= $2 order by epoch",
    )
    .bind(s.train_step)
    .bind(i32::try_from(saved).unwrap())
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(curve_before.len() as u64, saved);

    // Attempt 2 continues at the next epoch.
    let ctx = s.ctx(s.train_step, 2, CancellationToken::new()).await;
    let out = train_on_examples(&ctx, &args, 7, s.examples.clone())
        .await
        .unwrap()
        .output;
    assert_eq!(out["resumed_after_epoch"].as_u64(), Some(saved));
    assert_eq!(out["initialised_from"], "olmoearth-v1-nano");
    // Where it trained and the encoder's compute dtype (bf16 only on GPUs that have it).
    assert_eq!(out["device"], "cpu", "{out}");
    assert_eq!(out["compute_dtype"], "f32", "{out}");
    assert_eq!(out["examples"]["skipped"]["no_imagery"], 1);
    let epochs: Vec<u64> = out["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, (1..=7).collect::<Vec<_>>(), "{out}");
    assert_eq!(out["history"][0]["phase"], "frozen");
    assert_eq!(out["history"][6]["phase"], "unfrozen");
    // The resumed curve keeps the first attempt's epochs unchanged.
    for (i, (epoch, loss)) in curve_before.iter().enumerate() {
        assert_eq!(out["history"][i]["epoch"].as_i64(), Some(i64::from(*epoch)));
        assert!((out["history"][i]["train_loss"].as_f64().unwrap() - loss).abs() < 1e-12);
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from training_epoch where run_id = $1")
        .bind(s.run_id)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 7);

    // Each claim writes its own model folder, and the output (committed with `succeeded` under the
    // claim) names it: that is where evaluate and predict look.
    let folder = format!("/runs/{}/model/claim-{}/", s.run_id, ctx.claim_id);
    for key in ["model_json", "weights", "baseline"] {
        assert!(out[key].as_str().unwrap().contains(&folder), "{out}");
    }
    s.succeed(s.train_step, &out).await;

    // The model files named by the output exist, and the manifest's hash matches the weights.
    let manifest: Value = serde_json::from_slice(
        &s.store
            .get(&ObjectPath::from(out["model_json"].as_str().unwrap()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["label_set_version"], 7);
    assert_eq!(manifest["class_ids"], json!([1, 3]));
    assert_eq!(manifest["config"]["task"], "segmentation");
    assert_eq!(manifest["weights_sha256"], out["weights_sha256"]);

    // Evaluate on the test split: the model and the baseline beat the majority class.
    let ctx = s.ctx(s.eval_step, 1, CancellationToken::new()).await;
    let eval_args = EvaluateArgs {
        train_run_id: None,
        device: Some("cpu".into()),
    };
    let report = evaluate_model(&ctx, &eval_args, s.examples.clone())
        .await
        .unwrap()
        .output["report"]
        .clone();
    let test_pixels: Vec<u8> = s
        .examples
        .iter()
        .filter(|e| e.split == Split::Test)
        .flat_map(|e| match &e.target {
            LabelTarget::Mask { pixels, .. } => pixels.clone(),
            _ => Vec::new(),
        })
        .collect();
    let majority =
        test_pixels.iter().filter(|&&p| p == 3).count() as f64 / test_pixels.len() as f64;
    let acc = report["model"]["accuracy"].as_f64().unwrap();
    let base = report["baseline"]["accuracy"].as_f64().unwrap();
    assert!(
        acc > majority,
        "model {acc} vs majority {majority}: {report}"
    );
    assert!(base > majority, "baseline {base} vs majority {majority}");
    assert_eq!(report["windows"], 3);
    assert_eq!(
        report["model"]["samples"].as_u64(),
        Some(test_pixels.len() as u64)
    );
    assert!(report["model"]["miou"].as_f64().unwrap() > 0.0);
    let stored: Value = sqlx::query_scalar("select report from evaluation where run_id = $1")
        .bind(s.run_id)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    // jsonb keeps numbers to 15 significant digits.
    assert_eq!(
        stored["model"]["confusion_matrix"],
        report["model"]["confusion_matrix"]
    );
    assert!((stored["model"]["accuracy"].as_f64().unwrap() - acc).abs() < 1e-12);
    assert_eq!(stored["baseline"]["method"], report["baseline"]["method"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fine_tuned_model_worse_than_a_simpler_candidate_is_not_published_and_the_report_says_so()
{
    let s = setup().await;
    // A fresh UNet head barely trained (one epoch at a tiny learning rate) cannot beat a linear model of
    // pixels that separate water from cropland outright.
    let args = TrainArgs {
        epochs: Some(1),
        freeze_epochs: Some(1),
        lr: Some(1e-7),
        head: Some(groundwork_types::HeadKind::UNet),
        device: Some("cpu".into()),
        ..TrainArgs::default()
    };
    let ctx = s.ctx(s.train_step, 1, CancellationToken::new()).await;
    let out = train_on_examples(&ctx, &args, 1, s.examples.clone())
        .await
        .unwrap()
        .output;
    let metrics = &out["metrics"];
    assert_eq!(metrics["metric"], "macro_f1");
    assert_ne!(metrics["chosen"], "fine_tuned", "{metrics}");
    assert_eq!(metrics["fine_tuned_lost"], true);
    let scores: Vec<(String, f64)> = metrics["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                // The fine-tuned model is compared with any other on the judging half.
                c["judge_score"].as_f64().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = scores.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "raw_pixels",
            "pixel_context",
            "linear_probe",
            "knn_probe",
            "hybrid_linear",
            "fine_tuned"
        ]
    );
    let fine = scores[5].1;
    let chosen = scores
        .iter()
        .find(|(n, _)| n == metrics["chosen"].as_str().unwrap())
        .unwrap()
        .1;
    assert!(chosen > fine, "chosen {chosen} vs fine-tuned {fine}");
    assert!(
        metrics["selection_reason"]
            .as_str()
            .unwrap()
            .contains("fine-tuning did not help"),
        "{metrics}"
    );

    // The published model is the chosen linear one, as a hybrid head.
    let manifest: Value = serde_json::from_slice(
        &s.store
            .get(&ObjectPath::from(out["model_json"].as_str().unwrap()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["config"]["head"], "hybrid");
    // Two months of 12 bands, and their neighbourhood means at each radius.
    let radii = olmoearth::task::PIXEL_CONTEXT_RADII;
    assert_eq!(
        manifest["config"]["pixel_channels"],
        (1 + radii.len()) * 2 * 12
    );
    assert_eq!(
        manifest["config"]["pixel_context"],
        serde_json::json!(radii)
    );

    // The evaluation scores every candidate on test, marks the chosen one, and the model it loads from the
    // published weights predicts exactly what the chosen candidate predicted.
    s.succeed(s.train_step, &out).await;
    let ctx = s.ctx(s.eval_step, 1, CancellationToken::new()).await;
    let eval_args = EvaluateArgs {
        train_run_id: None,
        device: Some("cpu".into()),
    };
    let report = evaluate_model(&ctx, &eval_args, s.examples.clone())
        .await
        .unwrap()
        .output["report"]
        .clone();
    assert_eq!(report["selection"]["fine_tuned_lost"], true);
    assert_eq!(report["selection"]["chosen"], metrics["chosen"]);
    let candidates = report["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 6);
    let marked: Vec<&Value> = candidates.iter().filter(|c| c["chosen"] == true).collect();
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0]["name"], metrics["chosen"]);
    assert_eq!(
        marked[0]["test"]["confusion_matrix"],
        report["model"]["confusion_matrix"]
    );
    assert!(
        report["model"]["accuracy"].as_f64().unwrap() > 0.95,
        "{report}"
    );
    let knn = candidates
        .iter()
        .find(|c| c["name"] == "knn_probe")
        .unwrap();
    assert_eq!(knn["publishable"], false);
    // Edge accuracy is reported for the segmentation maps.
    assert!(
        report["model"]["edge_accuracy"].as_f64().is_some(),
        "{report}"
    );
}

/// Quick training settings for the tests that only look at where the encoder came from.
fn one_epoch() -> TrainArgs {
    TrainArgs {
        epochs: Some(1),
        freeze_epochs: Some(1),
        batch_size: Some(4),
        device: Some("cpu".into()),
        ..TrainArgs::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_checkpoint_training_refuses_unless_the_project_allows_random_weights() {
    let s = setup().await;
    let empty = tempfile::tempdir().unwrap();
    let ctx = s
        .ctx_in(
            s.train_step,
            1,
            CancellationToken::new(),
            Some(empty.path().to_path_buf()),
        )
        .await;
    let err = train_on_examples(&ctx, &one_epoch(), 1, s.examples.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StepError::Permanent(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no pretrained OlmoEarth-v1-Nano checkpoint is available to this worker")
            && msg.contains("`groundwork model fetch nano`")
            && msg.contains("allow random initialisation in the project's settings"),
        "{msg}"
    );
    let epochs: i64 = sqlx::query_scalar("select count(*) from training_epoch")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(epochs, 0, "nothing was trained");

    // The owner allows random initialisation: training starts from random weights and says so.
    sqlx::query("update project set allow_random_init = true where id = $1")
        .bind(s.project_id)
        .execute(&s.db.pool)
        .await
        .unwrap();
    let ctx = s
        .ctx_in(
            s.train_step,
            2,
            CancellationToken::new(),
            Some(empty.path().to_path_buf()),
        )
        .await;
    let out = train_on_examples(&ctx, &one_epoch(), 1, s.examples.clone())
        .await
        .unwrap()
        .output;
    assert_eq!(out["initialised_from"], "random", "{out}");
    assert_eq!(out["random_init_allowed_by_project"], true, "{out}");
    assert!(out["encoder_sha256"].is_null(), "{out}");
    let note = out["initialisation_note"].as_str().unwrap_or_default();
    assert!(
        note.contains("which the project's settings allow"),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_on_a_worker_without_the_checkpoint_copies_it_from_the_object_store() {
    let s = setup().await;
    let checksums = crate::pretrained::share_fixture(s.store.as_ref()).await;
    let empty = tempfile::tempdir().unwrap();
    let ctx = s
        .ctx_in(
            s.train_step,
            1,
            CancellationToken::new(),
            Some(empty.path().to_path_buf()),
        )
        .await;
    let out = train_on_examples(&ctx, &one_epoch(), 1, s.examples.clone())
        .await
        .unwrap()
        .output;
    assert_eq!(out["initialised_from"], "olmoearth-v1-nano", "{out}");
    assert_eq!(out["random_init_allowed_by_project"], false, "{out}");
    assert_eq!(
        out["encoder_sha256"].as_str(),
        checksums.weights().map(|w| w.sha256.as_str()),
        "{out}"
    );
    assert!(empty.path().join("OlmoEarth-v1-Nano/weights.pth").is_file());
}
