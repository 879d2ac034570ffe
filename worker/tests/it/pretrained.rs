//! Pretrained checkpoints shared through the object store, and training that refuses to start from
//! random weights unless the project allows it.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use crate::common::project;
use groundwork_store::DEFAULT_ORG_ID;
use groundwork_store::jobs;
use groundwork_store::testing::TestDb;
use groundwork_types::ModelSize;
use groundwork_worker::pretrained::{Local, ensure_local, upload};
use groundwork_worker::steps::TrainArgs;
use groundwork_worker::{Registry, StepArgs, StepError, Worker, WorkerConfig};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use olmoearth::fetch::{Checksums, FileChecksum, Verification, model_dir, sha256_file};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../olmoearth/tests/fixtures/olmoearth-nano")
        .join(name)
}

/// The checksums `groundwork model import` records for the Nano fixture (no published hash).
pub fn nano_checksums() -> Checksums {
    let files = ["config.json", "weights.pth"]
        .into_iter()
        .map(|name| {
            let (sha256, bytes) = sha256_file(&fixture(name)).unwrap();
            FileChecksum {
                name: name.into(),
                sha256,
                bytes,
                verification: Verification::NoPublishedHash,
            }
        })
        .collect();
    Checksums {
        model: "OlmoEarth-v1-Nano".into(),
        size: ModelSize::Nano,
        source: "import".into(),
        files,
    }
}

/// Shares the Nano fixture through `store` as `model import` does.
pub async fn share_fixture(store: &dyn ObjectStore) -> Checksums {
    let checksums = nano_checksums();
    upload(store, &fixture(""), &checksums).await.unwrap();
    checksums
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_worker_with_an_empty_model_folder_copies_the_shared_checkpoint_once() {
    let objects = tempfile::tempdir().unwrap();
    let store = LocalFileSystem::new_with_prefix(objects.path()).unwrap();
    let root = tempfile::tempdir().unwrap();
    // Nothing shared yet: nothing to copy.
    assert_eq!(
        ensure_local(Some(&store), Some(root.path()), ModelSize::Nano)
            .await
            .unwrap(),
        Local::Absent
    );
    let checksums = share_fixture(&store).await;
    let dir = model_dir(root.path(), ModelSize::Nano);
    assert_eq!(
        ensure_local(Some(&store), Some(root.path()), ModelSize::Nano)
            .await
            .unwrap(),
        Local::Downloaded(dir.clone())
    );
    assert_eq!(
        listing(&dir),
        ["checksums.json", "config.json", "weights.pth"]
    );
    for f in ["config.json", "weights.pth"] {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(fixture(f)).unwrap(),
            "{f}"
        );
    }
    let local =
        Checksums::from_json(&std::fs::read(dir.join("checksums.json")).unwrap(), &dir).unwrap();
    assert_eq!(local, checksums);
    // The next step finds it in place; another size is still absent.
    assert_eq!(
        ensure_local(Some(&store), Some(root.path()), ModelSize::Nano)
            .await
            .unwrap(),
        Local::Present
    );
    assert_eq!(
        ensure_local(Some(&store), Some(root.path()), ModelSize::Tiny)
            .await
            .unwrap(),
        Local::Absent
    );
}

#[tokio::test]
async fn a_shared_checkpoint_that_does_not_match_its_checksums_is_refused_and_leaves_nothing() {
    let objects = tempfile::tempdir().unwrap();
    let store = LocalFileSystem::new_with_prefix(objects.path()).unwrap();
    share_fixture(&store).await;
    // The stored weights are cut short (an interrupted copy, a damaged bucket).
    let key = ObjectPath::from("models/OlmoEarth-v1-Nano/weights.pth");
    let bytes = store.get(&key).await.unwrap().bytes().await.unwrap();
    store
        .put(&key, bytes.slice(..bytes.len() / 2).into())
        .await
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let e = ensure_local(Some(&store), Some(root.path()), ModelSize::Nano)
        .await
        .unwrap_err();
    assert!(matches!(e, StepError::Permanent(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("does not match the shared checkpoint's checksums.json")
            && msg.contains("groundwork model import"),
        "{msg}"
    );
    assert!(
        listing(&model_dir(root.path(), ModelSize::Nano)).is_empty(),
        "{:?}",
        listing(&model_dir(root.path(), ModelSize::Nano))
    );
    // A checksums.json naming a path outside the model folder is refused before anything is read.
    let mut bad = nano_checksums();
    bad.files[1].name = "../../escape.pth".into();
    store
        .put(
            &ObjectPath::from("models/OlmoEarth-v1-Nano/checksums.json"),
            serde_json::to_vec(&bad).unwrap().into(),
        )
        .await
        .unwrap();
    let e = ensure_local(Some(&store), Some(root.path()), ModelSize::Nano)
        .await
        .unwrap_err();
    assert!(matches!(e, StepError::Permanent(_)), "{e}");
    assert!(!root.path().join("escape.pth").exists());
}

#[tokio::test]
async fn a_train_step_without_a_checkpoint_or_permission_fails_at_once_with_the_reason() {
    let db = TestDb::new().await.unwrap();
    let p = project(&db.pool, DEFAULT_ORG_ID, "no weights").await;
    let models = tempfile::tempdir().unwrap();
    let objects = tempfile::tempdir().unwrap();
    let mut c = WorkerConfig::new("cpu", vec!["cpu".into()]);
    c.heartbeat = Duration::from_millis(300);
    c.model_dir = Some(models.path().to_path_buf());
    c.objects = Some(Arc::new(
        LocalFileSystem::new_with_prefix(objects.path()).unwrap(),
    ));
    let w = Worker::start(db.pool.clone(), c, Registry::builtin())
        .await
        .unwrap();
    let mut step = TrainArgs::default().to_step("train", "cpu");
    step.max_attempts = 5;
    step.backoff_base_ms = 0;
    let run = jobs::create_run(&db.pool, DEFAULT_ORG_ID, p, &[step], None)
        .await
        .unwrap();
    let id = run.steps[0].id;
    let start = Instant::now();
    let s = loop {
        let s = jobs::get_step(&db.pool, DEFAULT_ORG_ID, id).await.unwrap();
        if s.state == "failed" || s.state == "succeeded" {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the step did not end: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    w.shutdown().await;
    assert_eq!(s.state, "failed", "{s:#?}");
    // Permanent: not retried, although four more attempts were allowed.
    assert_eq!(s.attempt, 1, "{s:#?}");
    let error = s.error.unwrap_or_default();
    assert!(
        error.contains("no pretrained OlmoEarth-v1-Nano checkpoint is available to this worker")
            && error.contains("`groundwork model import")
            && error.contains("`groundwork model fetch nano`")
            && error.contains("allow random initialisation in the project's settings"),
        "{error}"
    );
}
