//! What an output's map page shows beside the map itself: where the model's weights came from, the
//! hectares mapped per class, the project's outline, and the other outputs it can be compared with.

use super::Provenance;
use crate::api::AppState;
use crate::api::auth::Actor;
use crate::web::error::PageResult;
use crate::web::when;
use groundwork_store::outputs::{self, Output};
use groundwork_store::projects::Project;
use serde_json::Value;

/// Outputs of the project offered for comparison.
const COMPARED_SHOWN: i64 = 50;

/// A class's mapped area.
pub struct AreaRow {
    /// Class name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
    /// Hectares, formatted.
    pub hectares: String,
    /// Share of the mapped area, formatted.
    pub share: String,
}

/// Another output of the project, as the comparison's choice offers it.
pub struct CompareOption {
    /// Its tile URL template.
    pub tiles: String,
    /// Coarsest zoom.
    pub min_zoom: i16,
    /// Finest zoom.
    pub max_zoom: i16,
    /// `[w, s, e, n]` as JSON.
    pub bounds_json: String,
    /// What the option says.
    pub label: String,
}

/// The map page's provenance, areas, outline and comparison choices.
pub struct MapExtras {
    /// Encoder weights and imagery of the model that made the map.
    pub provenance: Provenance,
    /// Why this model made the map (the best validation score, or the user's choice).
    pub model_choice: String,
    /// Hectares per class (class maps published with areas).
    pub areas: Vec<AreaRow>,
    /// The total, formatted.
    pub total_hectares: String,
    /// The project's area of interest as GeoJSON, drawn as an outline.
    pub outline_json: String,
    /// Other outputs of the same kind in the project.
    pub compare: Vec<CompareOption>,
}

/// Hectares with separators: 12,400 ha, or one decimal below 100 ha.
pub fn hectares(ha: f64) -> String {
    crate::web::assessments::fixed(ha, if ha >= 100.0 { 0 } else { 1 })
}

fn areas(output: &Output) -> (Vec<AreaRow>, String) {
    let Some(by_class) = output.stats.get("areas_ha").and_then(Value::as_object) else {
        return (Vec::new(), String::new());
    };
    let legend = crate::service::outputs::legend(output);
    let total: f64 = by_class.values().filter_map(Value::as_f64).sum();
    let rows = legend
        .iter()
        .filter_map(|c| {
            let ha = by_class.get(&c.id.to_string())?.as_f64()?;
            Some(AreaRow {
                name: c.name.clone(),
                color: c.color.clone(),
                hectares: hectares(ha),
                share: if total > 0.0 {
                    format!("{:.1} %", 100.0 * ha / total)
                } else {
                    "–".into()
                },
            })
        })
        .collect();
    (rows, hectares(total))
}

/// The extras of `output`'s map page.
pub async fn map_extras(
    state: &AppState,
    actor: &Actor,
    output: &Output,
    project: &Project,
) -> PageResult<MapExtras> {
    let (areas, total_hectares) = areas(output);
    let compare = outputs::list(&state.pool, actor.org_id, project.id, None, COMPARED_SHOWN)
        .await?
        .into_iter()
        .filter(|o| o.id != output.id && o.kind == output.kind)
        .map(|o| {
            let run = o.run_id.to_string();
            let model = o.lineage["training_run_id"]
                .as_str()
                .map(|r| format!(", model of run {}…", &r[r.len().saturating_sub(8)..]))
                .unwrap_or_default();
            CompareOption {
                tiles: format!("/api/v1/outputs/{}/tiles/{{z}}/{{x}}/{{y}}.png", o.id),
                min_zoom: o.min_zoom,
                max_zoom: o.max_zoom,
                bounds_json: serde_json::json!(o.bbox).to_string(),
                label: format!(
                    "{} map of {} (run {}…{model})",
                    o.kind,
                    when(&o.created_at),
                    &run[run.len().saturating_sub(8)..]
                ),
            }
        })
        .collect();
    Ok(MapExtras {
        provenance: Provenance::of_training(output.lineage.as_object()),
        model_choice: output.lineage["model_choice"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        areas,
        total_hectares,
        outline_json: project.aoi.to_string(),
        compare,
    })
}

#[cfg(test)]
mod tests {
    use super::hectares;

    #[test]
    fn hectares_read_as_people_write_them() {
        assert_eq!(hectares(12_400.4), "12,400");
        assert_eq!(hectares(1_234_567.0), "1,234,567");
        assert_eq!(hectares(100.0), "100");
        assert_eq!(hectares(42.26), "42.3");
    }
}
