//! Change-map pages: the "Change map" section of a class map's page (`/outputs/{id}`) with its
//! "Compare with another map" form (`POST /outputs/{id}/changes`), and a change map's page
//! (`/changes/{id}`): the net change of each class and the from→to table in hectares, in the classes'
//! names and colours, with the change raster to download.
//!
//! The work is done by [`crate::service::changes`], the same functions as the API's.

use super::error::{PageError, PageResult};
use super::{Layout, Nav, form_pairs, form_uuid, form_value, when};
use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::extract::Path;
use crate::service::changes::{self as service, ChangeView, CreateChange};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use groundwork_store::changes;
use groundwork_store::outputs::{self, Output};
use groundwork_store::projects::{self, Project};
use uuid::Uuid;

/// Class maps of the project a map's page offers to compare with.
const OPTIONS_SHOWN: i64 = 50;
/// Change maps a map's page lists.
const CHANGES_SHOWN: i64 = 20;

/// Another class map of the project, as the form offers it.
pub struct MapOption {
    /// Output id.
    pub id: String,
    /// What the option says.
    pub label: String,
}

/// A change map the section lists.
pub struct ChangeRow {
    /// Its page.
    pub href: String,
    /// `from the map of … to this map`.
    pub label: String,
    /// When it was made.
    pub created: String,
    /// Changed area, formatted.
    pub changed: String,
}

/// The "Change map" section of a class map's page.
#[derive(Default)]
pub struct ChangeSection {
    /// Whether the page shows it (class maps only).
    pub shown: bool,
    /// Whether the actor may make a change map (member or higher).
    pub can_create: bool,
    /// Where the form posts.
    pub action: String,
    /// The project's other class maps.
    pub options: Vec<MapOption>,
    /// Change maps this map is part of, newest first.
    pub rows: Vec<ChangeRow>,
}

/// How a class map is named in a list: `class map of 2026-12-01 10:00 UTC (run …abcd1234)`.
fn map_label(o: &Output) -> String {
    let run = o.run_id.to_string();
    format!(
        "map of {} (run …{})",
        when(&o.created_at),
        &run[run.len().saturating_sub(8)..]
    )
}

/// Hectares with separators, signed when `signed`: `+1,234`, `-56.7`, `0`.
fn ha(v: f64, signed: bool) -> String {
    let a = v.abs();
    // As the map page writes areas: 12,400 ha, or one decimal below 100 ha.
    let s = super::assessments::fixed(a, if a >= 100.0 { 0 } else { 1 });
    if v < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0') {
        format!("−{s}")
    } else if signed && v > 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0') {
        format!("+{s}")
    } else {
        s
    }
}

/// The "Change map" section of `output`'s page; not shown for maps that are not class maps.
pub async fn section(
    state: &AppState,
    actor: &Actor,
    output: &Output,
) -> PageResult<ChangeSection> {
    if output.kind != "class" {
        return Ok(ChangeSection::default());
    }
    let others: Vec<Output> = outputs::list(
        &state.pool,
        actor.org_id,
        output.project_id,
        None,
        OPTIONS_SHOWN,
    )
    .await?
    .into_iter()
    .filter(|o| o.id != output.id && o.kind == "class")
    .collect();
    let options = others
        .iter()
        .map(|o| MapOption {
            id: o.id.to_string(),
            label: map_label(o),
        })
        .collect();
    let mut rows = Vec::new();
    for c in changes::list_for_output(&state.pool, actor.org_id, output.id, CHANGES_SHOWN).await? {
        let v = service::view(&c);
        let other = if c.from_output_id == output.id {
            c.to_output_id
        } else {
            c.from_output_id
        };
        let other = match outputs::get(&state.pool, actor.org_id, other).await {
            Ok(o) => map_label(&o),
            Err(_) => "another map".into(),
        };
        rows.push(ChangeRow {
            href: format!("/changes/{}", c.id),
            label: if c.from_output_id == output.id {
                format!("from this map to the {other}")
            } else {
                format!("from the {other} to this map")
            },
            created: when(&c.created_at),
            changed: ha(v.changed_ha, false),
        });
    }
    Ok(ChangeSection {
        shown: true,
        can_create: actor.role >= Role::Member,
        action: format!("/outputs/{}/changes", output.id),
        options,
        rows,
    })
}

/// `POST /outputs/{id}/changes`: compares this class map with another of the project (`other`; this
/// map is the later one unless `order` is `earlier`) through the service function of
/// `POST /api/v1/projects/{id}/changes`, then goes to the change map's page.
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> PageResult<Response> {
    actor.require(Role::Member)?;
    let pairs = form_pairs(&body);
    let this = outputs::get(&state.pool, actor.org_id, id).await?;
    let other = form_uuid(&pairs, "other", "map to compare with")?;
    let request = if form_value(&pairs, "order") == "earlier" {
        CreateChange {
            from: this.id,
            to: other,
        }
    } else {
        CreateChange {
            from: other,
            to: this.id,
        }
    };
    match service::create(&state, &actor, this.project_id, request).await {
        Ok(c) => Ok(Redirect::to(&format!("/changes/{}", c.id)).into_response()),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            Err(PageError {
                status: e.status,
                message: format!(
                    "No change map was made: {}. Go back to the map to choose another.",
                    super::error_text(&e)
                ),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// A row of the net-change table.
pub struct NetRow {
    /// Class name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
    /// Hectares in the earlier map.
    pub from: String,
    /// Hectares in the later map.
    pub to: String,
    /// Net change, signed.
    pub net: String,
    /// `gain`, `loss` or `same`.
    pub trend: &'static str,
}

/// A cell of the from→to table.
pub struct Cell {
    /// Hectares.
    pub value: String,
    /// Unchanged (the diagonal).
    pub diagonal: bool,
    /// Shading: the share of the largest change, 0–1.
    pub share: String,
    /// What it means.
    pub title: String,
}

/// A row of the from→to table: one class of the earlier map.
pub struct MatrixRow {
    /// Class name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
    /// One cell per class of the later map.
    pub cells: Vec<Cell>,
    /// Row total: the class's area in the earlier map.
    pub total: String,
}

/// A from→to pair with its code in the change raster.
pub struct PairRow {
    /// Pixel value in the change raster.
    pub code: u16,
    /// Earlier class.
    pub from: String,
    /// Its colour.
    pub from_color: String,
    /// Later class.
    pub to: String,
    /// Its colour.
    pub to_color: String,
    /// Hectares.
    pub area: String,
}

/// A class heading a column of the from→to table.
pub struct ClassHead {
    /// Name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
}

/// A term and its value.
pub struct Fact {
    /// What.
    pub term: String,
    /// Its value.
    pub value: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "change.html")]
struct ChangePage {
    layout: Layout,
    project: Project,
    created: String,
    from_href: String,
    from_label: String,
    to_href: String,
    to_label: String,
    facts: Vec<Fact>,
    net: Vec<NetRow>,
    columns: Vec<ClassHead>,
    matrix: Vec<MatrixRow>,
    column_totals: Vec<String>,
    pairs: Vec<PairRow>,
    resampled: bool,
    tif_url: String,
    json_url: String,
}

fn fact(term: &str, value: impl Into<String>) -> Fact {
    Fact {
        term: term.into(),
        value: value.into(),
    }
}

/// `GET /changes/{id}`: what changed between the two maps: the net change of each class, the from→to
/// table in hectares, the pairs of the change raster and its download.
pub async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> PageResult<impl IntoResponse> {
    let v: ChangeView = service::get(&state, &actor, id).await?;
    let project = projects::get(&state.pool, actor.org_id, v.project_id).await?;
    let label = |o: Result<Output, groundwork_store::Error>| match o {
        Ok(o) => map_label(&o),
        Err(_) => "a deleted map".into(),
    };
    let from_label = label(outputs::get(&state.pool, actor.org_id, v.from).await);
    let to_label = label(outputs::get(&state.pool, actor.org_id, v.to).await);
    let changed_share = if v.compared_ha > 0.0 {
        format!(
            " ({:.1} % of the area compared)",
            100.0 * v.changed_ha / v.compared_ha
        )
    } else {
        String::new()
    };
    let side = v.pixel_area_m2.sqrt();
    let nodata_ha = v.nodata_pixels as f64 * v.pixel_area_m2 / 10_000.0;
    let facts = vec![
        fact("Area compared", format!("{} ha", ha(v.compared_ha, false))),
        fact(
            "Area that changed class",
            format!("{} ha{changed_share}", ha(v.changed_ha, false)),
        ),
        fact(
            "Left out (no data in either map)",
            format!("{} ha", ha(nodata_ha, false)),
        ),
        fact("Pixel size", format!("{side:.0} m × {side:.0} m")),
        fact(
            "Grid",
            format!("EPSG:{}, {} × {} pixels", v.epsg, v.width, v.height),
        ),
    ];
    let net = v
        .net_change
        .iter()
        .map(|n| NetRow {
            name: n.name.clone(),
            color: n.color.clone(),
            from: ha(n.from_ha, false),
            to: ha(n.to_ha, false),
            net: ha(n.net_ha, true),
            trend: match n.net_pixels {
                p if p > 0 => "gain",
                p if p < 0 => "loss",
                _ => "same",
            },
        })
        .collect();
    let largest = v
        .matrix
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.iter().enumerate().filter(move |(j, _)| *j != i))
        .map(|(_, &p)| p)
        .max()
        .unwrap_or(0)
        .max(1);
    let matrix = v
        .classes
        .iter()
        .zip(&v.areas_ha)
        .zip(&v.matrix)
        .enumerate()
        .map(|(i, ((from, areas), pixels))| MatrixRow {
            name: from.name.clone(),
            color: from.color.clone(),
            cells: areas
                .iter()
                .zip(pixels)
                .zip(&v.classes)
                .enumerate()
                .map(|(j, ((a, &p), to))| Cell {
                    value: ha(*a, false),
                    diagonal: i == j,
                    share: if i == j {
                        "0".into()
                    } else {
                        format!("{:.3}", p as f64 / largest as f64)
                    },
                    title: if i == j {
                        format!("{} in both maps: {} ha", from.name, ha(*a, false))
                    } else {
                        format!("{} became {}: {} ha", from.name, to.name, ha(*a, false))
                    },
                })
                .collect(),
            total: ha(areas.iter().sum(), false),
        })
        .collect();
    let column_totals = (0..v.classes.len())
        .map(|j| ha(v.areas_ha.iter().filter_map(|r| r.get(j)).sum(), false))
        .collect();
    let class = |id: u8| {
        v.classes.iter().find(|c| c.id == id).map_or_else(
            || (format!("class {id}"), "#808080".to_owned()),
            |c| (c.name.clone(), c.color.clone()),
        )
    };
    let pairs = v
        .pairs
        .iter()
        .map(|p| {
            let (from, from_color) = class(p.from);
            let (to, to_color) = class(p.to);
            PairRow {
                code: p.code,
                from,
                from_color,
                to,
                to_color,
                area: ha(p.area_ha, false),
            }
        })
        .collect();
    Ok(ChangePage {
        layout: Layout::new(
            &state,
            &actor,
            format!("Change map · {}", project.name),
            Nav::Projects,
        )
        .await,
        project,
        created: when(&v.created_at),
        from_href: format!("/outputs/{}", v.from),
        from_label,
        to_href: format!("/outputs/{}", v.to),
        to_label,
        facts,
        net,
        columns: v
            .classes
            .iter()
            .map(|c| ClassHead {
                name: c.name.clone(),
                color: c.color.clone(),
            })
            .collect(),
        matrix,
        column_totals,
        pairs,
        resampled: v.resampled,
        tif_url: v.links.download_tif.clone(),
        json_url: v.links.self_.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::ha;

    #[test]
    fn net_changes_carry_their_sign() {
        assert_eq!(ha(1234.4, true), "+1,234");
        assert_eq!(ha(-56.72, true), "−56.7");
        assert_eq!(ha(0.0, true), "0.0");
        assert_eq!(ha(12.0, false), "12.0");
        assert_eq!(ha(-0.01, true), "0.0");
    }
}
