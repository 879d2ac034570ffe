//! Accuracy assessment and area estimation of published class maps, the way Olofsson et al. (2014)
//! recommend: a stratified random sample with the map classes as strata, reference labels given blind
//! by reviewers (viewers may label), and the error matrix in area proportions with overall, user's and
//! producer's accuracies and error-adjusted areas, each with a 95 % confidence interval. The
//! estimators are `groundwork_imagery::assessment`.

use super::outputs::legend;
use crate::api::AppState;
use crate::api::auth::{Actor, Role};
use crate::api::error::{ApiError, ApiResult, ErrorCode, FieldError};
use groundwork_imagery::assessment::{self as est, Estimates, Interval};
use groundwork_store::assessments::{self, Assessment, NewSample};
use groundwork_store::outputs;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Default target standard error of overall accuracy (Olofsson et al. 2014 use 0.01).
pub const DEFAULT_TARGET_SE: f64 = 0.01;
/// Default minimum of sample units per class (the paper's guidance: about 50).
pub const DEFAULT_MIN_PER_CLASS: u64 = 50;
/// Default conjectured user's accuracy of every class, for the sample size (eq. 13).
pub const DEFAULT_EXPECTED_USERS: f64 = 0.8;
/// The most sample units one assessment draws.
pub const MAX_SAMPLES: u64 = 20_000;

/// Body of `POST /api/v1/outputs/{id}/assessments`; every field is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAssessment {
    /// Target standard error of overall accuracy, 0.001–0.1 (default 0.01).
    pub target_se: Option<f64>,
    /// Sample units at least per class, 0–1,000 (default 50; a class with fewer pixels gets them all).
    pub min_per_class: Option<u64>,
    /// Expected user's accuracy of the classes, 0.5–1 (default 0.8), for the sample size.
    pub expected_users: Option<f64>,
    /// Seed of the random draw (default: random); the same seed draws the same sample.
    pub seed: Option<u64>,
}

/// An assessment with its labelling progress.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssessmentView {
    /// The assessment and its design.
    #[serde(flatten)]
    pub assessment: Assessment,
    /// Sample units.
    pub samples: usize,
    /// Units with a reference class.
    pub labelled: usize,
    /// Units labelled "unsure".
    pub unsure: usize,
}

/// A sample unit as a reviewer sees it: without its map class when blind.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SampleView {
    /// Number within the assessment.
    pub id: i32,
    /// Longitude of the pixel centre.
    pub lon: f64,
    /// Latitude of the pixel centre.
    pub lat: f64,
    /// The map class (its stratum); absent in blind mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_class: Option<i32>,
    /// Inclusion probability `n_h / N_h`; absent in blind mode (it would tell the stratum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inclusion_probability: Option<f64>,
    /// Reference class given.
    pub reference: Option<i32>,
    /// Labelled "unsure".
    pub unsure: bool,
}

/// `?blind=` of the sample list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SampleQuery {
    /// Hide each unit's map class (default `true`: reference labels are given without seeing it).
    pub blind: Option<bool>,
}

/// Body of `PUT /api/v1/assessments/{id}/samples/{n}`: a reference class, or `unsure`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferenceLabel {
    /// The reference class (a class id of the map's legend).
    pub reference: Option<i32>,
    /// The reviewer cannot tell: the unit counts in no estimate.
    #[serde(default)]
    pub unsure: bool,
}

/// One class of a report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClassReport {
    /// Class id.
    pub id: i32,
    /// Name.
    pub name: String,
    /// Mapped area, ha (pixel count × pixel area).
    pub mapped_ha: f64,
    /// Error-adjusted area, ha, with its 95 % CI half-width.
    #[schema(value_type = Object)]
    pub area_ha: Interval,
    /// User's accuracy (of the map class: how often a pixel mapped as it is it), with its CI.
    #[schema(value_type = Object)]
    pub users_accuracy: Option<Interval>,
    /// Producer's accuracy (of the reference class: how often it was mapped as it), with its CI.
    #[schema(value_type = Object)]
    pub producers_accuracy: Option<Interval>,
    /// Sample units of this stratum with a reference class.
    pub labelled: u64,
    /// Sample units drawn in this stratum.
    pub sample_size: u64,
}

/// The report of an assessment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// The assessment.
    pub assessment_id: Uuid,
    /// The class map.
    pub output_id: Uuid,
    /// How the numbers are made.
    pub method: String,
    /// Whether every unit has a reference label (or was marked unsure); until then the estimates use
    /// the units labelled so far.
    pub complete: bool,
    /// Units labelled, unsure, drawn.
    pub labelled: usize,
    /// Units marked unsure.
    pub unsure: usize,
    /// Units drawn.
    pub samples: usize,
    /// Overall accuracy with its 95 % CI half-width.
    #[schema(value_type = Object)]
    pub overall_accuracy: Interval,
    /// Per class.
    pub classes: Vec<ClassReport>,
    /// The error matrix in estimated area proportions: rows are map classes, columns reference
    /// classes, in the order of `classes`.
    pub error_matrix: Vec<Vec<f64>>,
    /// The sample counts in the same layout.
    pub sample_counts: Vec<Vec<u64>>,
}

/// A stratum of the design as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stratum {
    class_id: i32,
    name: String,
    mapped_pixels: u64,
    sample_size: u64,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

/// Draws the sample of a new assessment of a class map.
pub async fn create(
    state: &AppState,
    actor: &Actor,
    output_id: Uuid,
    body: CreateAssessment,
) -> ApiResult<AssessmentView> {
    actor.require(Role::Member)?;
    let target_se = body.target_se.unwrap_or(DEFAULT_TARGET_SE);
    if !(0.001..=0.1).contains(&target_se) {
        return Err(invalid("target_se", "must be 0.001–0.1"));
    }
    let min_per_class = body.min_per_class.unwrap_or(DEFAULT_MIN_PER_CLASS);
    if min_per_class > 1000 {
        return Err(invalid("min_per_class", "must be 0–1000"));
    }
    let expected = body.expected_users.unwrap_or(DEFAULT_EXPECTED_USERS);
    if !(0.5..=1.0).contains(&expected) {
        return Err(invalid("expected_users", "must be 0.5–1"));
    }
    let seed = body.seed.unwrap_or_else(|| Uuid::new_v4().as_u64_pair().0);
    let o = outputs::get(&state.pool, actor.org_id, output_id).await?;
    if o.kind != "class" {
        return Err(ApiError::new(
            ErrorCode::NotAClassMap,
            format!(
                "only class maps are assessed this way; this output holds {}",
                o.kind
            ),
        ));
    }
    let path = super::outputs::local_copy(state, &o.utm_key).await?;
    let counted = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || est::count_classes(&path))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_err(|e| ApiError::internal(&e))?
    };
    let names: BTreeMap<u8, String> = legend(&o).into_iter().map(|c| (c.id, c.name)).collect();
    let classes: Vec<u8> = counted.pixels.keys().copied().collect();
    if classes.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "the class map has no mapped pixels to sample",
        ));
    }
    let pixels: Vec<u64> = classes.iter().map(|c| counted.pixels[c]).collect();
    let all: f64 = pixels.iter().map(|&p| p as f64).sum();
    let weights: Vec<f64> = pixels.iter().map(|&p| p as f64 / all).collect();
    let n = est::sample_size(&weights, &vec![expected; classes.len()], target_se);
    let mut sizes = est::allocate(n, &pixels, min_per_class);
    // Never more than the cap: scale every stratum down alike.
    let drawn: u64 = sizes.iter().sum();
    if drawn > MAX_SAMPLES {
        let k = MAX_SAMPLES as f64 / drawn as f64;
        for s in &mut sizes {
            *s = ((*s as f64) * k).floor().max(1.0) as u64;
        }
    }
    let strata: Vec<Stratum> = classes
        .iter()
        .zip(&pixels)
        .zip(&sizes)
        .map(|((c, p), s)| Stratum {
            class_id: i32::from(*c),
            name: names
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("class {c}")),
            mapped_pixels: *p,
            sample_size: *s,
        })
        .collect();
    let by_class: BTreeMap<u8, u64> = classes.iter().copied().zip(sizes.iter().copied()).collect();
    // In random order: a unit's number tells nothing of its stratum.
    let drawn = tokio::task::spawn_blocking(move || est::sample_classes(&path, &by_class, seed))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?;
    let samples: Vec<NewSample> = drawn
        .iter()
        .map(|s| {
            let n_h = by_class_size(&strata, s.class);
            let big_n = counted.pixels.get(&s.class).copied().unwrap_or(1).max(1);
            NewSample {
                stratum: i32::from(s.class),
                inclusion_probability: n_h as f64 / big_n as f64,
                col: i32::try_from(s.col).unwrap_or(i32::MAX),
                row: i32::try_from(s.row).unwrap_or(i32::MAX),
                x: s.x,
                y: s.y,
                lon: s.lon,
                lat: s.lat,
            }
        })
        .collect();
    let design = json!({
        "target_se": target_se, "min_per_class": min_per_class, "expected_users": expected,
        "seed": seed.to_string(), "sample_size_eq13": n,
    });
    let a = assessments::create(
        &state.pool,
        actor.org_id,
        o.project_id,
        o.id,
        actor.user_id,
        &design,
        &serde_json::to_value(&strata).map_err(|e| ApiError::internal(&e))?,
        counted.pixel_area_m2,
        i32::try_from(counted.epsg).unwrap_or_default(),
        &samples,
    )
    .await?;
    actor
        .audit(
            state,
            "assessment.create",
            "assessment",
            a.id,
            json!({"output_id": o.id, "samples": samples.len()}),
        )
        .await;
    Ok(AssessmentView {
        assessment: a,
        samples: samples.len(),
        labelled: 0,
        unsure: 0,
    })
}

fn by_class_size(strata: &[Stratum], class: u8) -> u64 {
    strata
        .iter()
        .find(|s| s.class_id == i32::from(class))
        .map_or(0, |s| s.sample_size)
}

/// An assessment with its labelling progress (counted in the database).
async fn view(state: &AppState, a: Assessment) -> ApiResult<AssessmentView> {
    let (samples, labelled, unsure) = assessments::progress(&state.pool, a.id).await?;
    let count = |n: i64| usize::try_from(n).unwrap_or(0);
    Ok(AssessmentView {
        assessment: a,
        samples: count(samples),
        labelled: count(labelled),
        unsure: count(unsure),
    })
}

/// One assessment with its progress.
pub async fn get(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<AssessmentView> {
    let a = assessments::get(&state.pool, actor.org_id, id).await?;
    view(state, a).await
}

/// The assessments of a class map, newest first.
pub async fn list(
    state: &AppState,
    actor: &Actor,
    output_id: Uuid,
) -> ApiResult<Vec<AssessmentView>> {
    outputs::get(&state.pool, actor.org_id, output_id).await?;
    let mut out = Vec::new();
    for a in assessments::list_for_output(&state.pool, actor.org_id, output_id).await? {
        out.push(view(state, a).await?);
    }
    Ok(out)
}

/// The sample units; blind (without map classes) unless `blind=false`.
pub async fn samples(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    blind: bool,
) -> ApiResult<Vec<SampleView>> {
    // Reviewers label blind: the map classes are for the members who run the assessment.
    if !blind {
        actor.require(Role::Member)?;
    }
    let a = assessments::get(&state.pool, actor.org_id, id).await?;
    Ok(assessments::samples(&state.pool, a.id)
        .await?
        .into_iter()
        .map(|s| SampleView {
            id: s.id,
            lon: s.lon,
            lat: s.lat,
            map_class: (!blind).then_some(s.stratum),
            inclusion_probability: (!blind).then_some(s.inclusion_probability),
            reference: s.reference,
            unsure: s.unsure,
        })
        .collect())
}

/// Records a reviewer's reference label for one unit. Viewers may label: reviewers need no other right.
pub async fn label(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    sample: i32,
    body: ReferenceLabel,
) -> ApiResult<()> {
    actor.require(Role::Viewer)?;
    let a = assessments::get(&state.pool, actor.org_id, id).await?;
    let reference = match (body.reference, body.unsure) {
        (Some(_), true) => {
            return Err(invalid(
                "reference",
                "give a reference class or `unsure`, not both",
            ));
        }
        (None, false) => return Err(invalid("reference", "give a reference class or `unsure`")),
        (r, _) => r,
    };
    if let Some(r) = reference {
        let o = outputs::get(&state.pool, actor.org_id, a.output_id).await?;
        let strata: Vec<Stratum> = serde_json::from_value(a.strata.clone()).unwrap_or_default();
        let known = legend(&o).iter().any(|c| i32::from(c.id) == r)
            || strata.iter().any(|s| s.class_id == r);
        if !known {
            return Err(invalid(
                "reference",
                format!("{r} is not a class of this map"),
            ));
        }
    }
    assessments::label(
        &state.pool,
        actor.org_id,
        a.id,
        sample,
        reference,
        actor.user_id,
    )
    .await?;
    Ok(())
}

/// The estimates from the units labelled so far.
pub async fn report(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<Report> {
    let a = assessments::get(&state.pool, actor.org_id, id).await?;
    // A reviewer watching a partial error matrix change after each answer could read the map class of
    // the unit just labelled: below member, the report opens once every unit is answered.
    if actor.role < Role::Member {
        let (drawn, labelled, unsure) = assessments::progress(&state.pool, a.id).await?;
        if labelled + unsure < drawn {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "the report opens to reviewers once every unit is answered ({} of {drawn} so far)",
                    labelled + unsure
                ),
            ));
        }
    }
    let samples = assessments::samples(&state.pool, a.id).await?;
    let o = outputs::get(&state.pool, actor.org_id, a.output_id).await?;
    let mut strata: Vec<Stratum> = serde_json::from_value(a.strata.clone()).unwrap_or_default();
    // Reference classes may include legend classes the map never shows: they are strata of no area.
    for c in legend(&o) {
        if !strata.iter().any(|s| s.class_id == i32::from(c.id)) {
            strata.push(Stratum {
                class_id: i32::from(c.id),
                name: c.name,
                mapped_pixels: 0,
                sample_size: 0,
            });
        }
    }
    let index: BTreeMap<i32, usize> = strata
        .iter()
        .enumerate()
        .map(|(i, s)| (s.class_id, i))
        .collect();
    let q = strata.len();
    let mut counts = vec![vec![0u64; q]; q];
    for s in &samples {
        if let (Some(r), Some(&i)) = (s.reference, index.get(&s.stratum))
            && let Some(&j) = index.get(&r)
        {
            counts[i][j] += 1;
        }
    }
    let mapped: Vec<u64> = strata.iter().map(|s| s.mapped_pixels).collect();
    let e: Estimates = est::estimate(&mapped, &counts, a.pixel_area_m2)
        .map_err(|err| ApiError::new(ErrorCode::Conflict, err.to_string()))?;
    let labelled = samples.iter().filter(|s| s.reference.is_some()).count();
    let unsure = samples.iter().filter(|s| s.unsure).count();
    let classes = strata
        .iter()
        .enumerate()
        .map(|(i, s)| ClassReport {
            id: s.class_id,
            name: s.name.clone(),
            mapped_ha: e.mapped_ha[i],
            area_ha: e.area_ha[i],
            users_accuracy: e.users[i],
            producers_accuracy: e.producers[i],
            labelled: counts[i].iter().sum(),
            sample_size: s.sample_size,
        })
        .collect();
    Ok(Report {
        assessment_id: a.id,
        output_id: a.output_id,
        method: "stratified random sample with the map classes as strata; stratified estimators of \
                 Olofsson et al. (2014), Remote Sensing of Environment 148:42-57; intervals are 95 % \
                 (estimate ± 1.96 standard errors); units marked unsure count in no estimate"
            .into(),
        complete: labelled + unsure == samples.len(),
        labelled,
        unsure,
        samples: samples.len(),
        overall_accuracy: e.overall,
        classes,
        error_matrix: e.proportions,
        sample_counts: e.counts,
    })
}

/// The report as CSV: one row per class, then the overall accuracy.
pub async fn report_csv(state: &AppState, actor: &Actor, id: Uuid) -> ApiResult<String> {
    let r = report(state, actor, id).await?;
    let num = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v}"));
    let mut out = String::from(
        "class_id,class,mapped_ha,area_ha,area_ci95_ha,users_accuracy,users_ci95,producers_accuracy,producers_ci95,labelled,sample_size\n",
    );
    for c in &r.classes {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            c.id,
            crate::labels::formats::csv_text(&c.name),
            c.mapped_ha,
            c.area_ha.estimate,
            num(c.area_ha.half_width),
            num(c.users_accuracy.map(|u| u.estimate)),
            num(c.users_accuracy.and_then(|u| u.half_width)),
            num(c.producers_accuracy.map(|u| u.estimate)),
            num(c.producers_accuracy.and_then(|u| u.half_width)),
            c.labelled,
            c.sample_size,
        ));
    }
    out.push_str(&format!(
        ",overall accuracy,,,,{},{},,,{},{}\n",
        r.overall_accuracy.estimate,
        num(r.overall_accuracy.half_width),
        r.labelled,
        r.samples
    ));
    Ok(out)
}
