//! Accuracy-assessment pages: the "Accuracy assessment" section of a class map's page (`/outputs/{id}`)
//! with its "Draw a sample" form (`POST /outputs/{id}/assessments`), an assessment's page with its
//! design, labelling progress and report (`/assessments/{id}`), and the blind labelling page
//! (`/assessments/{id}/label`), whose script (`web/src/assess.js`) shows one sample unit at a time on
//! the project's imagery, without the map's class, and saves each answer through the JSON API.
//!
//! The work is done by [`crate::service::assessments`], the same functions as the API's
//! (Olofsson et al. 2014: a stratified random sample, blind reference labels, estimates in area
//! proportions with 95 % confidence intervals).

use super::error::{PageError, PageResult};
use super::{Layout, Nav, form_pairs, form_value, when};
use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::ApiError;
use crate::api::extract::Path;
use crate::service::assessments::{self as service, AssessmentView, CreateAssessment, Report};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use groundwork_imagery::assessment::Interval;
use groundwork_store::assessments::Assessment;
use groundwork_store::outputs::{self, Output};
use groundwork_store::projects::{self, Project};
use serde::Deserialize;
use std::str::FromStr;
use uuid::Uuid;

#[cfg(test)]
mod tests;

/// Colour of a class the map's legend does not name.
const GREY: &str = "#8a99a3";

/// One assessment as a class map's page lists it.
pub struct AssessmentRow {
    /// Its page.
    pub href: String,
    /// When the sample was drawn.
    pub created: String,
    /// Units drawn.
    pub samples: usize,
    /// Units answered: a reference class, or "unsure".
    pub done: usize,
    /// Units marked unsure.
    pub unsure: usize,
}

impl AssessmentRow {
    /// Whether every unit is answered.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.done >= self.samples
    }
}

/// The "Accuracy assessment" section of a class map's page.
#[derive(Default)]
pub struct AssessmentSection {
    /// Whether the page shows it (class maps only).
    pub shown: bool,
    /// The map's assessments, newest first.
    pub rows: Vec<AssessmentRow>,
    /// Whether the actor may draw a sample (member or higher).
    pub can_draw: bool,
    /// Where the "Draw a sample" form posts.
    pub action: String,
    /// The default target standard error of overall accuracy, as the form shows it.
    pub default_target_se: String,
    /// The default minimum of sample units per class.
    pub default_min_per_class: String,
}

/// The "Accuracy assessment" section of `output`'s page: its assessments with their progress and, for
/// editors, the form that draws a new sample. Empty (not shown) for maps that are not class maps.
pub async fn section(
    state: &AppState,
    actor: &Actor,
    output: &Output,
) -> PageResult<AssessmentSection> {
    if output.kind != "class" {
        return Ok(AssessmentSection::default());
    }
    let rows = service::list(state, actor, output.id)
        .await?
        .iter()
        .map(|v| AssessmentRow {
            href: format!("/assessments/{}", v.assessment.id),
            created: when(&v.assessment.created_at),
            samples: v.samples,
            done: v.labelled + v.unsure,
            unsure: v.unsure,
        })
        .collect();
    Ok(AssessmentSection {
        shown: true,
        rows,
        can_draw: actor.role >= Role::Member,
        action: format!("/outputs/{}/assessments", output.id),
        default_target_se: service::DEFAULT_TARGET_SE.to_string(),
        default_min_per_class: service::DEFAULT_MIN_PER_CLASS.to_string(),
    })
}

/// What a refused draw says: each field's message with the field's name as the form shows it.
fn refusal(e: &ApiError) -> String {
    let label = |field: &str| match field {
        "target_se" => "the target standard error",
        "min_per_class" => "the minimum of units per class",
        "expected_users" => "the expected user's accuracy",
        _ => "a setting",
    };
    let fields: Vec<String> = e
        .details
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|d| {
                    Some(format!(
                        "{} {}",
                        label(d["field"].as_str()?),
                        d["message"].as_str()?
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if fields.is_empty() {
        e.message.clone()
    } else {
        fields.join("; ")
    }
}

/// The page that answers a refused draw.
fn not_drawn(status: StatusCode, why: &str) -> PageError {
    PageError {
        status,
        message: format!(
            "No sample was drawn: {why}. Go back to the map to change the settings under \"More settings\"."
        ),
    }
}

/// An optional number of the form: `None` when the field is empty or absent.
fn form_number<T: FromStr>(
    pairs: &[(String, String)],
    key: &str,
    what: &str,
) -> Result<Option<T>, PageError> {
    let value = form_value(pairs, key);
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        not_drawn(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("{what} must be a number, not \"{value}\""),
        )
    })
}

/// `POST /outputs/{id}/assessments`: draws a stratified random sample of the class map (the service
/// function of `POST /api/v1/outputs/{id}/assessments`) and goes to the new assessment's page. The
/// form's "More settings" are the target standard error and the minimum of units per class; empty
/// fields take the defaults.
pub async fn draw(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> PageResult<Response> {
    actor.require(Role::Member)?;
    let pairs = form_pairs(&body);
    let request = CreateAssessment {
        target_se: form_number(&pairs, "target_se", "the target standard error")?,
        min_per_class: form_number(&pairs, "min_per_class", "the minimum of units per class")?,
        ..CreateAssessment::default()
    };
    match service::create(&state, &actor, id, request).await {
        Ok(a) => Ok(Redirect::to(&format!("/assessments/{}", a.assessment.id)).into_response()),
        // A setting out of range (422) or a map without pixels to sample (409): said in words.
        Err(e)
            if e.status == StatusCode::UNPROCESSABLE_ENTITY || e.status == StatusCode::CONFLICT =>
        {
            Err(not_drawn(e.status, &refusal(&e)))
        }
        Err(e) => Err(e.into()),
    }
}

/// A stratum of the design as the service stores it (`assessment.strata`).
#[derive(Debug, Deserialize)]
struct Stratum {
    class_id: i32,
    name: String,
    mapped_pixels: u64,
    sample_size: u64,
}

fn strata_of(a: &Assessment) -> Vec<Stratum> {
    serde_json::from_value(a.strata.clone()).unwrap_or_default()
}

/// The colour of class `id` in the map's legend (grey when it has none).
fn colour_of(output: &Output, id: i32) -> String {
    crate::service::outputs::legend(output)
        .into_iter()
        .find(|c| i32::from(c.id) == id)
        .map_or_else(|| GREY.to_owned(), |c| c.color)
}

/// `12,345` for a whole number's digits.
fn grouped(digits: &str) -> String {
    let n = digits.len();
    let mut out = String::with_capacity(n + n / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (n - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `v` with `decimals` decimals and thousands grouped: `12,345.6`.
pub(crate) fn fixed(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let sign = if v < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0') {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{}", grouped(int))
    } else {
        format!("{sign}{}.{frac}", grouped(int))
    }
}

/// Decimals that suit an area of `v` hectares: none from 100 ha, one from 10 ha, else two.
fn area_decimals(v: f64) -> usize {
    match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        _ => 2,
    }
}

/// An area in hectares: `1,234`, `56.7`, `0.25`.
fn hectares(v: f64) -> String {
    if v.is_finite() {
        fixed(v, area_decimals(v))
    } else {
        "–".into()
    }
}

/// An area with its 95 % interval: `1,234 ± 56`; without one, says why.
fn hectares_ci(i: Interval) -> String {
    if !i.estimate.is_finite() {
        return "–".into();
    }
    let d = area_decimals(i.estimate);
    match i.half_width {
        Some(h) if h.is_finite() => format!("{} ± {}", fixed(i.estimate, d), fixed(h, d)),
        _ => format!("{} (no interval)", fixed(i.estimate, d)),
    }
}

/// A proportion as a percentage with its 95 % interval: `87.3 ± 4.1 %`; `–` when there is none.
fn percent_ci(i: Option<Interval>) -> String {
    match i {
        Some(i) if i.estimate.is_finite() => match i.half_width {
            Some(h) if h.is_finite() => format!("{:.1} ± {:.1} %", i.estimate * 100.0, h * 100.0),
            _ => format!("{:.1} % (no interval)", i.estimate * 100.0),
        },
        _ => "–".into(),
    }
}

/// A term of the design and its value.
pub struct Fact {
    /// What.
    pub term: String,
    /// Its value.
    pub value: String,
}

fn fact(term: &str, value: impl Into<String>) -> Fact {
    Fact {
        term: term.into(),
        value: value.into(),
    }
}

/// A stratum (the pixels mapped as one class) of the design.
pub struct StratumRow {
    /// Class name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
    /// Mapped area, ha.
    pub mapped_ha: String,
    /// Share of the mapped area, percent.
    pub share: String,
    /// Sample units drawn in it.
    pub sample_size: u64,
}

/// A class of the report.
pub struct ClassRow {
    /// Name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
    /// Mapped area, ha.
    pub mapped: String,
    /// Error-adjusted area, ha, `± ` its 95 % interval.
    pub area: String,
    /// User's accuracy with its interval.
    pub users: String,
    /// Producer's accuracy with its interval.
    pub producers: String,
    /// Units of the stratum with a reference class, of those drawn: `12 of 13`.
    pub units: String,
}

/// A cell of the error matrix.
pub struct MatrixCell {
    /// The estimated area proportion, four decimals.
    pub value: String,
    /// Map class and reference class agree.
    pub diagonal: bool,
    /// What it means, for the cell's title.
    pub title: String,
}

/// A row (one map class) of the error matrix.
pub struct MatrixRow {
    /// Map class.
    pub name: String,
    /// One cell per reference class.
    pub cells: Vec<MatrixCell>,
    /// Row total: the class's share of the map.
    pub total: String,
}

/// The report as the page shows it.
pub struct ReportView {
    /// Every unit is answered.
    pub complete: bool,
    /// Overall accuracy with its interval.
    pub overall: String,
    /// Per class.
    pub classes: Vec<ClassRow>,
    /// Total mapped area, ha.
    pub total_mapped: String,
    /// Reference classes: the matrix's columns.
    pub columns: Vec<String>,
    /// The error matrix in estimated area proportions.
    pub matrix: Vec<MatrixRow>,
    /// Column totals: each class's estimated true share of the area.
    pub column_totals: Vec<String>,
}

impl ReportView {
    fn new(r: &Report, output: &Output) -> Self {
        let classes = r
            .classes
            .iter()
            .map(|c| ClassRow {
                name: c.name.clone(),
                color: colour_of(output, c.id),
                mapped: hectares(c.mapped_ha),
                area: hectares_ci(c.area_ha),
                users: percent_ci(c.users_accuracy),
                producers: percent_ci(c.producers_accuracy),
                units: format!("{} of {}", c.labelled, c.sample_size),
            })
            .collect();
        let names: Vec<String> = r.classes.iter().map(|c| c.name.clone()).collect();
        let matrix = r
            .error_matrix
            .iter()
            .zip(&names)
            .enumerate()
            .map(|(i, (row, name))| MatrixRow {
                name: name.clone(),
                cells: row
                    .iter()
                    .zip(&names)
                    .enumerate()
                    .map(|(j, (p, reference))| MatrixCell {
                        value: format!("{p:.4}"),
                        diagonal: i == j,
                        title: format!(
                            "mapped as {name}, really {reference}: {:.2} % of the area",
                            p * 100.0
                        ),
                    })
                    .collect(),
                total: format!("{:.4}", row.iter().sum::<f64>()),
            })
            .collect();
        let column_totals = (0..names.len())
            .map(|j| {
                let sum: f64 = r.error_matrix.iter().filter_map(|row| row.get(j)).sum();
                format!("{sum:.4}")
            })
            .collect();
        Self {
            complete: r.complete,
            overall: percent_ci(Some(r.overall_accuracy)),
            classes,
            total_mapped: hectares(r.classes.iter().map(|c| c.mapped_ha).sum()),
            columns: names,
            matrix,
            column_totals,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "assessment.html")]
struct AssessmentPage {
    layout: Layout,
    project: Project,
    output_id: Uuid,
    id: Uuid,
    created: String,
    design: Vec<Fact>,
    strata: Vec<StratumRow>,
    samples: usize,
    done: usize,
    unsure: usize,
    complete: bool,
    /// The report, when there is one to show.
    report: Option<ReportView>,
    /// The report is kept from a viewer until every unit is answered: watching it change after each
    /// answer would tell the map's class of the unit just labelled.
    report_withheld: bool,
    json_url: String,
    csv_url: String,
}

/// `GET /assessments/{id}`: the design (sample size, units per class, seed), the labelling progress, the
/// "Label the sample" button and, once units are answered, the report: overall, user's and producer's
/// accuracy and the error-adjusted areas with their 95 % intervals, and the error matrix in area
/// proportions.
pub async fn show(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> PageResult<impl IntoResponse> {
    let AssessmentView {
        assessment: a,
        samples,
        labelled,
        unsure,
    } = service::get(&state, &actor, id).await?;
    let output = outputs::get(&state.pool, actor.org_id, a.output_id).await?;
    let project = projects::get(&state.pool, actor.org_id, a.project_id).await?;
    let strata = strata_of(&a);
    let ha_per_pixel = a.pixel_area_m2 / 10_000.0;
    let all_pixels: u64 = strata.iter().map(|s| s.mapped_pixels).sum();
    let strata_rows = strata
        .iter()
        .map(|s| StratumRow {
            name: s.name.clone(),
            color: colour_of(&output, s.class_id),
            mapped_ha: hectares(s.mapped_pixels as f64 * ha_per_pixel),
            share: if all_pixels > 0 {
                format!("{:.1}", s.mapped_pixels as f64 * 100.0 / all_pixels as f64)
            } else {
                "–".into()
            },
            sample_size: s.sample_size,
        })
        .collect();
    let d = &a.design;
    let mut design = vec![fact("Sample units", samples.to_string())];
    if let Some(se) = d["target_se"].as_f64() {
        design.push(fact(
            "Target standard error of overall accuracy",
            format!(
                "{se} (overall accuracy to within about ± {:.1} percentage points)",
                se * 196.0
            ),
        ));
    }
    if let Some(u) = d["expected_users"].as_f64() {
        design.push(fact("Expected user's accuracy", format!("{u}")));
    }
    if let Some(n) = d["sample_size_eq13"].as_u64() {
        design.push(fact("Sample size from the formula", n.to_string()));
    }
    if let Some(m) = d["min_per_class"].as_u64() {
        design.push(fact("Minimum units per class", m.to_string()));
    }
    let side = a.pixel_area_m2.sqrt();
    design.push(fact(
        "Pixel (sample unit) size",
        format!("{side:.0} m × {side:.0} m"),
    ));
    if let Some(seed) = d["seed"].as_str() {
        design.push(fact("Seed of the random draw", seed));
    }
    let done = labelled + unsure;
    let complete = samples > 0 && done >= samples;
    // Editors see the estimates from the units answered so far; viewers (the reviewers who label) only
    // once every unit is answered.
    let report_withheld = !complete && actor.role < Role::Member;
    let report = if labelled > 0 && !report_withheld {
        let r = service::report(&state, &actor, id).await?;
        Some(ReportView::new(&r, &output))
    } else {
        None
    };
    Ok(AssessmentPage {
        layout: Layout::new(
            &state,
            &actor,
            format!("Accuracy assessment · {}", project.name),
            Nav::Projects,
        )
        .await,
        project,
        output_id: a.output_id,
        id: a.id,
        created: when(&a.created_at),
        design,
        strata: strata_rows,
        samples,
        done,
        unsure,
        complete,
        report,
        report_withheld,
        json_url: format!("/api/v1/assessments/{}/report", a.id),
        csv_url: format!("/api/v1/assessments/{}/report.csv", a.id),
    })
}

/// A class button of the labelling page.
pub struct ClassButton {
    /// Class id (the reference class saved).
    pub id: i32,
    /// Name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
    /// Its number key, `1`–`9` (empty for the tenth class on).
    pub key: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "assessment_label.html")]
struct LabelPage {
    layout: Layout,
    project: Project,
    id: Uuid,
    classes: Vec<ClassButton>,
    bounds_json: String,
    pixel_m: String,
    samples: usize,
    done: usize,
    imagery_url: String,
}

/// `GET /assessments/{id}/label`: the blind labelling page, for viewers and above. It names every class
/// of the map but never a unit's map class, and loads no layer of the class map: the units come from
/// the blind sample list of the API.
pub async fn label(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> PageResult<impl IntoResponse> {
    actor.require(Role::Viewer)?;
    let view = service::get(&state, &actor, id).await?;
    let a = &view.assessment;
    let output = outputs::get(&state.pool, actor.org_id, a.output_id).await?;
    let project = projects::get(&state.pool, actor.org_id, a.project_id).await?;
    // The legend's classes, then any mapped class it does not name: the reference classes a unit may get.
    let mut classes: Vec<(i32, String, String)> = crate::service::outputs::legend(&output)
        .into_iter()
        .map(|c| (i32::from(c.id), c.name, c.color))
        .collect();
    for s in strata_of(a) {
        if !classes.iter().any(|(id, _, _)| *id == s.class_id) {
            classes.push((s.class_id, s.name, GREY.to_owned()));
        }
    }
    let classes = classes
        .into_iter()
        .enumerate()
        .map(|(i, (id, name, color))| ClassButton {
            id,
            name,
            color,
            key: if i < 9 {
                (i + 1).to_string()
            } else {
                String::new()
            },
        })
        .collect();
    let [w, s, e, n] = output.bbox;
    Ok(LabelPage {
        layout: Layout::new(
            &state,
            &actor,
            format!("Label the sample · {}", project.name),
            Nav::Projects,
        )
        .await,
        id: a.id,
        classes,
        bounds_json: serde_json::json!([w, s, e, n]).to_string(),
        pixel_m: format!("{}", a.pixel_area_m2.sqrt()),
        samples: view.samples,
        done: view.labelled + view.unsure,
        imagery_url: format!("/api/v1/projects/{}/imagery", project.id),
        project,
    })
}
