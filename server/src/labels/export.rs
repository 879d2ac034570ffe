//! Rendering a version of a project's labels as a GeoJSON or CSV file.

use super::check::Legend;
use super::formats::{Format, csv_text};
use crate::api::error::{ApiError, ApiResult};
use groundwork_store::PgPool;
use groundwork_store::labels;
use groundwork_store::projects;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// A version of a project's labels rendered as a file; also what the CLI writes.
#[derive(Debug, Clone)]
pub struct Export {
    /// Version exported.
    pub version: i32,
    /// File contents.
    pub body: String,
    /// Labels left out (polygons have no CSV form).
    pub skipped: usize,
}

/// Renders version `version` (latest when `None`) of a project of `org_id`'s labels.
pub async fn export_file(
    pool: &PgPool,
    org_id: Uuid,
    project_id: Uuid,
    format: Format,
    version: Option<i32>,
) -> ApiResult<Export> {
    let project = projects::get(pool, org_id, project_id).await?;
    let Some(version) = labels::resolve_version(pool, project_id, version).await? else {
        return Err(ApiError::not_found("label set"));
    };
    let rows = labels::labels_at(pool, project_id, version).await?;
    let legend = Legend::of(&project);
    let class_text = |id: i32| {
        legend
            .name(id)
            .map_or_else(|| id.to_string(), str::to_owned)
    };
    let regression = project.task == "regression";
    match format {
        Format::Geojson => {
            let features: Vec<Value> = rows
                .iter()
                .map(|l| {
                    let mut p = Map::new();
                    if let Some(c) = l.class_id {
                        p.insert("class".into(), json!(class_text(c)));
                        p.insert("class_id".into(), json!(c));
                    }
                    if let Some(v) = l.value {
                        p.insert("value".into(), json!(v));
                    }
                    if let Some(w) = &l.window_id {
                        p.insert("window_id".into(), json!(w));
                    }
                    json!({"type": "Feature", "id": l.id, "geometry": l.geometry, "properties": p})
                })
                .collect();
            let doc = json!({"type": "FeatureCollection", "label_set_version": version, "features": features});
            Ok(Export {
                version,
                body: doc.to_string(),
                skipped: 0,
            })
        }
        Format::Csv => {
            let mut body = String::from(if regression {
                "lon,lat,value,window_id\n"
            } else {
                "lon,lat,class,window_id\n"
            });
            let mut skipped = 0;
            for l in &rows {
                let (lon, lat) = match &l.geometry {
                    Some(g) if g["type"] == "Point" => (
                        g["coordinates"][0]
                            .as_f64()
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                        g["coordinates"][1]
                            .as_f64()
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                    ),
                    Some(_) => {
                        skipped += 1;
                        continue;
                    }
                    None => (String::new(), String::new()),
                };
                let target = match (l.class_id, l.value) {
                    (Some(c), _) => csv_text(&class_text(c)),
                    (None, Some(v)) => v.to_string(),
                    (None, None) => String::new(),
                };
                let window = csv_text(l.window_id.as_deref().unwrap_or(""));
                body.push_str(&format!("{lon},{lat},{target},{window}\n"));
            }
            Ok(Export {
                version,
                body,
                skipped,
            })
        }
    }
}
