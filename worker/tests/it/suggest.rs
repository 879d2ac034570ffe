//! `suggest` on real PostgreSQL, a local-folder object store and the Nano fixture encoder: a cold start
//! spreads its points over both land covers, and once two classes are labelled the points go where the
//! frozen-embedding baseline is unsure (pixels whose token straddles a class edge), never onto a label.
#![expect(clippy::unwrap_used, reason = "tests")]

use candle_core::{DType, Device, Tensor};
use groundwork_store::jobs::{self, NewStep};
use groundwork_store::labels::{self, Coverage, NewLabel, WindowGrid};
use groundwork_store::projects::{self, ProjectFields};
use groundwork_store::testing::TestDb;
use groundwork_types::keys::ProjectKeys;
use groundwork_types::{Modality, ModelSize, StepKind, Task};
use groundwork_worker::steps::{Suggest, SuggestArgs};
use groundwork_worker::{Progress, Step, StepContext};
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use olmoearth::task::to_safetensors;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SIZE: usize = 16;
/// Mixed windows are water left of this column: the token of columns 4–7 straddles the edge.
const EDGE: usize = 6;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Cover {
    Water,
    Crop,
    Mixed,
}

fn cover_of(i: usize) -> Cover {
    [Cover::Water, Cover::Crop, Cover::Mixed][i % 3]
}

fn is_water(cover: Cover, col: usize) -> bool {
    match cover {
        Cover::Water => true,
        Cover::Crop => false,
        Cover::Mixed => col < EDGE,
    }
}

/// Window tensors as acquisition writes them (S2 DN, mask, timestamps).
fn tensors(cover: Cover, seed: u64) -> Vec<u8> {
    let water = [
        600., 500., 350., 200., 300., 250., 220., 200., 100., 80., 700., 150.,
    ];
    let crop = [
        400., 750., 380., 3900., 950., 2700., 3400., 3600., 1800., 850., 450., 1050.,
    ];
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut noise = || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut data = Vec::with_capacity(SIZE * SIZE * 2 * 12);
    for _y in 0..SIZE {
        for x in 0..SIZE {
            for _t in 0..2 {
                for b in 0..12 {
                    let base: f32 = if is_water(cover, x) {
                        water[b]
                    } else {
                        crop[b]
                    };
                    data.push(base * (1.0 + 0.05 * noise()));
                }
            }
        }
    }
    let dev = Device::Cpu;
    to_safetensors(
        vec![
            (
                "sentinel2_l2a".to_string(),
                Tensor::from_vec(data, (SIZE, SIZE, 2, 12), &dev).unwrap(),
            ),
            (
                "sentinel2_l2a_mask".to_string(),
                Tensor::zeros((SIZE, SIZE, 2, 3), DType::U8, &dev).unwrap(),
            ),
            (
                "timestamps".to_string(),
                Tensor::new(&[[1i32, 4, 2024], [1, 5, 2024]], &dev).unwrap(),
            ),
        ],
        None,
    )
    .unwrap()
}

struct Scene {
    db: TestDb,
    _dir: tempfile::TempDir,
    store: Arc<dyn object_store::ObjectStore>,
    project: Uuid,
    windows: Vec<WindowGrid>,
    cover: HashMap<String, Cover>,
}

async fn scene() -> Scene {
    let db = TestDb::new().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let org = groundwork_store::DEFAULT_ORG_ID;
    let project = projects::create(
        &db.pool,
        org,
        &ProjectFields {
            name: "shore".into(),
            description: String::new(),
            aoi: json!({"type": "Polygon", "coordinates": [[[15.0, 45.0], [15.008, 45.0], [15.008, 45.006], [15.0, 45.006], [15.0, 45.0]]]}),
            bbox: [15.0, 45.0, 15.008, 45.006],
            area_km2: 0.4,
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
    groundwork_worker::steps::plan_windows(&db.pool, &project)
        .await
        .unwrap();
    sqlx::query("update project_window set status = 'acquired' where project_id = $1")
        .bind(project.id)
        .execute(&db.pool)
        .await
        .unwrap();
    let windows = labels::window_grids(&db.pool, project.id).await.unwrap();
    assert!(windows.len() >= 9, "{} windows", windows.len());
    let keys = ProjectKeys::new(org, project.id);
    let mut cover = HashMap::new();
    for (i, w) in windows.iter().enumerate() {
        store
            .put(
                &ObjectPath::from(keys.window(&w.id, Modality::Sentinel2L2a)),
                tensors(cover_of(i), i as u64).into(),
            )
            .await
            .unwrap();
        cover.insert(w.id.clone(), cover_of(i));
    }
    Scene {
        db,
        _dir: dir,
        store,
        project: project.id,
        windows,
        cover,
    }
}

impl Scene {
    /// Runs a `suggest` step of a new run under a claim, as a worker would, and returns its output and
    /// the stored suggestions.
    async fn suggest(&self, count: u32) -> (Value, Vec<Value>) {
        let org = groundwork_store::DEFAULT_ORG_ID;
        let step = NewStep::new("suggest", StepKind::Suggest, json!({}), "cpu");
        let run = jobs::create_run(&self.db.pool, org, self.project, &[step], None)
            .await
            .unwrap();
        let claim_id = Uuid::now_v7();
        sqlx::query(
            "update step set state = 'running', attempt = 1, claim_id = $2, lease_expires_at = now() + interval '1 hour' \
             where id = $1",
        )
        .bind(run.steps[0].id)
        .bind(claim_id)
        .execute(&self.db.pool)
        .await
        .unwrap();
        let ctx = StepContext {
            step_id: run.steps[0].id,
            run_id: run.run.id,
            project_id: self.project,
            org_id: org,
            attempt: 1,
            claim_id,
            args: Value::Null,
            progress: Progress::default(),
            cancel: CancellationToken::new(),
            data: groundwork_worker::data::DataAccess::Local(self.db.pool.clone()),
            objects: Some(self.store.clone()),
            model_dir: Some(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../olmoearth/tests/fixtures/olmoearth-nano"),
            ),
            outbound: groundwork_imagery::OutboundPolicy::default(),
        };
        let args = SuggestArgs {
            count: Some(count),
            max_windows: None,
            device: Some("cpu".into()),
        };
        let out = Suggest.run(ctx, args).await.unwrap().output;
        sqlx::query(
            "update step set state = 'succeeded', output = $2, finished_at = now() where id = $1",
        )
        .bind(run.steps[0].id)
        .bind(&out)
        .execute(&self.db.pool)
        .await
        .unwrap();
        let set = groundwork_store::suggestions::latest(&self.db.pool, org, self.project)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(set.run_id, run.run.id);
        let items = set
            .items
            .iter()
            .map(|s| serde_json::to_value(s).unwrap())
            .collect();
        (out, items)
    }

    fn window(&self, id: &str) -> &WindowGrid {
        self.windows.iter().find(|w| w.id == id).unwrap()
    }

    /// Ground position (UTM metres) of a suggestion's pixel.
    fn ground(&self, s: &Value) -> (f64, f64) {
        let w = self.window(s["window_id"].as_str().unwrap());
        let gt: Vec<f64> = serde_json::from_value(w.geotransform.clone()).unwrap();
        let (r, c) = (
            s["pixel_row"].as_f64().unwrap() + 0.5,
            s["pixel_col"].as_f64().unwrap() + 0.5,
        );
        (gt[0] + c * gt[1], gt[3] + r * gt[5])
    }
}

/// Checks what every suggestion must keep: inside its window (on the ground too), and no two closer
/// than two token widths (80 m).
fn check_placement(s: &Scene, items: &[Value]) {
    for it in items {
        let w = s.window(it["window_id"].as_str().unwrap());
        let (lon, lat) = (it["lon"].as_f64().unwrap(), it["lat"].as_f64().unwrap());
        assert!(
            lon >= w.bbox_west - 1e-6 && lon <= w.bbox_east + 1e-6,
            "{it} outside {}",
            w.id
        );
        assert!(
            lat >= w.bbox_south - 1e-6 && lat <= w.bbox_north + 1e-6,
            "{it} outside {}",
            w.id
        );
        // Inside the project's area too (a label outside it is refused): the scene's AOI box.
        assert!(
            (15.0..=15.008).contains(&lon) && (45.0..=45.006).contains(&lat),
            "{it} is outside the area"
        );
    }
    for (i, a) in items.iter().enumerate() {
        for b in &items[i + 1..] {
            let (pa, pb) = (s.ground(a), s.ground(b));
            let d = (pa.0 - pb.0).hypot(pa.1 - pb.1);
            assert!(d >= 80.0 - 1e-6, "{a} and {b} are {d} m apart");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggestions_start_diverse_then_go_where_the_baseline_is_unsure() {
    let s = scene().await;

    // Cold start: no labels, so the points cover the embedding space: both land covers.
    let (out, items) = s.suggest(6).await;
    assert_eq!(out["mode"], "cold_start", "{out}");
    assert_eq!(out["suggestions"], 6);
    assert_eq!(items.len(), 6);
    assert!(items.iter().all(|i| i["reason"] == "diverse"), "{items:#?}");
    assert_eq!(
        items
            .iter()
            .map(|i| i["rank"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    check_placement(&s, &items);
    let water = items
        .iter()
        .filter(|i| {
            let cover = s.cover[i["window_id"].as_str().unwrap()];
            is_water(cover, i["pixel_col"].as_u64().unwrap() as usize)
        })
        .count();
    assert!(
        (1..6).contains(&water),
        "a cold start must cover both land covers: {water} of 6 on water"
    );

    // Label one pure window of each class, in full.
    let pure = |c: Cover| s.windows.iter().find(|w| s.cover[&w.id] == c).unwrap();
    let labelled: Vec<NewLabel> = [(pure(Cover::Water), 1), (pure(Cover::Crop), 3)]
        .into_iter()
        .map(|(w, class)| NewLabel {
            geometry: None,
            window_id: Some(w.id.clone()),
            class_id: Some(class),
            value: None,
            coverage: Some(vec![Coverage {
                window_id: w.id.clone(),
                pixels: None,
                pixel_count: i32::try_from(SIZE * SIZE).unwrap(),
            }]),
        })
        .collect();
    labels::import(&s.db.pool, s.project, &labelled, false, "test", None)
        .await
        .unwrap();
    let labelled_ids = [pure(Cover::Water).id.clone(), pure(Cover::Crop).id.clone()];

    // Now the probe of the frozen embeddings ranks the points by its uncertainty.
    let (out, items) = s.suggest(4).await;
    assert_eq!(out["mode"], "uncertainty", "{out}");
    assert_eq!(out["labelled_classes"], 2);
    assert_eq!(items.len(), 4);
    check_placement(&s, &items);
    for it in &items {
        assert_eq!(it["reason"], "uncertain");
        assert!(
            [1, 3].contains(&it["predicted_class"].as_i64().unwrap()),
            "{it}"
        );
        let m = it["margin"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&m), "{it}");
        // Never on (or next to) what is labelled.
        assert!(
            !labelled_ids.contains(&it["window_id"].as_str().unwrap().to_owned()),
            "{it}"
        );
    }
    // The tokens straddling the water's edge (a quarter of the mixed windows' tokens, a twelfth of
    // all) are where the baseline is unsure: most picks are there.
    let straddling = items
        .iter()
        .filter(|i| {
            s.cover[i["window_id"].as_str().unwrap()] == Cover::Mixed
                && (4..8).contains(&(i["pixel_col"].as_u64().unwrap() as usize))
        })
        .count();
    assert!(straddling >= 2, "{straddling} of 4 on the edge: {items:#?}");
}
