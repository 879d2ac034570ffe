//! What several modules of these tests build the same way.

use groundwork_store::{PgPool, projects};
use groundwork_types::{Modality, ModelSize, Task};
use serde_json::json;
use uuid::Uuid;

/// A small Sentinel-2 segmentation project named `name` in `org`.
pub async fn project(pool: &PgPool, org: Uuid, name: &str) -> Uuid {
    let f = projects::ProjectFields {
        name: name.into(),
        description: String::new(),
        aoi: json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [0.1, 0.0], [0.1, 0.1], [0.0, 0.0]]]}),
        bbox: [0.0, 0.0, 0.1, 0.1],
        area_km2: 61.0,
        start: "2024-01-01".parse().expect("a date"),
        end: "2024-12-31".parse().expect("a date"),
        task: Task::Segmentation,
        classes: Vec::new(),
        modalities: vec![Modality::Sentinel2L2a],
        model_size: ModelSize::Nano,
        patch_size: 4,
        window_size: 64,
        license: "CC-BY-4.0".into(),
        license_url: None,
        allow_random_init: false,
    };
    projects::create(pool, org, &f)
        .await
        .expect("the project is created")
        .id
}
