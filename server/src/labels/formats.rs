//! Label files: reading GeoJSON and CSV rows (each row's problem reported, not fatal) and the file
//! formats' shared types.

use crate::api::error::{ApiError, ApiResult, ErrorCode};
use groundwork_imagery::rasterize::parse_label_geometry;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A file format of labels.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A GeoJSON FeatureCollection; properties `class` (name or id) or `value`, optionally `window_id`.
    Geojson,
    /// CSV with a header: `lon,lat,class` or `lon,lat,value`, optionally `window_id`.
    Csv,
}

/// One rejected row of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RowError {
    /// GeoJSON: the feature's index (from 0). CSV: the line number (from 1; the header is line 1).
    pub row: usize,
    /// Why it was rejected.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// The new label-set version.
    pub version: i32,
    /// Labels imported.
    pub imported: usize,
    /// Labels whose windows are not known yet (imported before the windows were planned).
    pub unassigned: usize,
    /// Rows rejected (the others were imported).
    pub errors: Vec<RowError>,
}

/// A class as a file names it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClassRef {
    /// By id.
    Id(i64),
    /// By name.
    Name(String),
}

/// A row as read from the file, before it is checked against the project.
#[derive(Debug, Clone)]
pub(crate) struct RawLabel {
    /// Feature index or CSV line.
    pub(crate) row: usize,
    /// The geometry as written and as parsed.
    pub(crate) geometry: Option<(Value, geo::Geometry<f64>)>,
    /// `window_id`, when given.
    pub(crate) window_id: Option<String>,
    /// `class`, when given.
    pub(crate) class: Option<ClassRef>,
    /// `value`, when given.
    pub(crate) value: Option<f64>,
}

/// Most features (GeoJSON) or rows (CSV) one import may hold.
pub const MAX_IMPORT_FEATURES: usize = 100_000;

/// Most vertices one label feature's geometry may have.
pub const MAX_LABEL_VERTICES: usize = 2_000;

/// An error of the whole file (not of one row).
fn file_error(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidFile, message)
}

fn too_many(n: usize) -> ApiError {
    file_error(format!(
        "the file holds more than {MAX_IMPORT_FEATURES} labels ({n} read); split it"
    ))
}

fn class_from_json(v: &Value) -> Result<Option<ClassRef>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(ClassRef::Name(s.trim().to_owned()))),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().and_then(integral))
            .map(|i| Some(ClassRef::Id(i)))
            .ok_or_else(|| format!("unknown class {n}")),
        other => Err(format!("unknown class {other}")),
    }
}

/// `f` as an integer when it is one (`10.0`, as tools that keep every number as a float write class
/// ids).
pub(crate) fn integral(f: f64) -> Option<i64> {
    // Bounds of i64 that f64 represents exactly; the cast is exact within them.
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn value_from_json(v: &Value) -> Result<Option<f64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| format!("bad number {n}")),
        Value::String(s) => number(s).map(Some),
        other => Err(format!("bad number {other}")),
    }
}

fn number(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("bad number {:?}", s.trim()))
}

/// Reads a GeoJSON FeatureCollection (or one Feature).
pub(crate) fn parse_geojson(body: &[u8]) -> ApiResult<(Vec<RawLabel>, Vec<RowError>)> {
    if crate::api::extract::json_has_nul(body) {
        return Err(file_error(crate::api::extract::NUL_MESSAGE));
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the file is not valid JSON: {e}"),
        )
    })?;
    let features: Vec<Value> = match doc.get("type").and_then(Value::as_str) {
        Some("FeatureCollection") => match doc.get("features") {
            Some(Value::Array(f)) => f.clone(),
            _ => return Err(file_error("a FeatureCollection needs a `features` array")),
        },
        Some("Feature") => vec![doc.clone()],
        _ => return Err(file_error("expected a GeoJSON FeatureCollection")),
    };
    if features.len() > MAX_IMPORT_FEATURES {
        return Err(too_many(features.len()));
    }
    let mut rows = Vec::with_capacity(features.len());
    let mut errors = Vec::new();
    for (i, f) in features.iter().enumerate() {
        match geojson_feature(i, f) {
            Ok(r) => rows.push(r),
            Err(reason) => errors.push(RowError { row: i, reason }),
        }
    }
    Ok((rows, errors))
}

fn geojson_feature(row: usize, f: &Value) -> Result<RawLabel, String> {
    if f.get("type").and_then(Value::as_str) != Some("Feature") {
        return Err("not a GeoJSON Feature".into());
    }
    let empty = Map::new();
    let props = match f.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err("properties must be an object".into()),
    };
    let window_id = match props.get("window_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(_) => return Err("window_id must be a window id string".into()),
    };
    let geometry = match f.get("geometry") {
        None | Some(Value::Null) => None,
        Some(g) => {
            let coords = g.get("coordinates").unwrap_or(&Value::Null);
            if crate::geometry::count_positions(coords, MAX_LABEL_VERTICES) > MAX_LABEL_VERTICES {
                return Err(format!(
                    "bad geometry: more than {MAX_LABEL_VERTICES} vertices; simplify it"
                ));
            }
            let parsed = parse_label_geometry(g).map_err(|e| format!("bad geometry: {e}"))?;
            Some((g.clone(), parsed))
        }
    };
    let class = match props.get("class") {
        Some(v) if !v.is_null() => class_from_json(v)?,
        _ => class_from_json(props.get("class_id").unwrap_or(&Value::Null))?,
    };
    let value = value_from_json(props.get("value").unwrap_or(&Value::Null))?;
    Ok(RawLabel {
        row,
        geometry,
        window_id,
        class,
        value,
    })
}

/// Splits one CSV line into fields (RFC 4180 quoting; a quoted field may not span lines).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() && !was_quoted => {
                field.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                out.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(field);
    Ok(out)
}

pub(crate) fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.trim() != s {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The characters that make a spreadsheet read a cell as a formula.
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A text cell (a class name, a window id) as CSV: one that a spreadsheet would run as a formula
/// (it starts with `=`, `+`, `-`, `@`, a tab or a carriage return) is prefixed with `'`, then quoted as
/// needed. Numeric cells are written as numbers and never pass here. [`parse_csv`] drops the prefix.
pub(crate) fn csv_text(s: &str) -> String {
    if s.starts_with(FORMULA_START) {
        csv_quote(&format!("'{s}"))
    } else {
        csv_quote(s)
    }
}

/// A text cell as [`csv_text`] wrote it: the `'` put before a formula character is dropped.
fn csv_text_cell(s: &str) -> &str {
    match s.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_START) => rest,
        _ => s,
    }
}

/// Reads CSV with a header naming `lon`, `lat`, `class` or `value`, and optionally `window_id`.
pub(crate) fn parse_csv(body: &[u8]) -> ApiResult<(Vec<RawLabel>, Vec<RowError>)> {
    if body.contains(&0) {
        return Err(file_error(crate::api::extract::NUL_MESSAGE));
    }
    let text =
        std::str::from_utf8(body).map_err(|_| file_error("the CSV file is not UTF-8 text"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(file_error("the CSV file is empty"));
    };
    let header: Vec<String> = csv_fields(header)
        .map_err(|e| file_error(format!("header: {e}")))?
        .iter()
        .map(|h| h.trim().to_lowercase())
        .collect();
    let col = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
    let lon = col(&["lon", "lng", "longitude"]);
    let lat = col(&["lat", "latitude"]);
    let class = col(&["class", "class_id"]);
    let value = col(&["value"]);
    let window = col(&["window_id", "window"]);
    if (lon.is_none() || lat.is_none()) && window.is_none() {
        return Err(file_error(
            "the CSV header needs `lon` and `lat` columns (or `window_id`)",
        ));
    }
    if class.is_none() && value.is_none() {
        return Err(file_error(
            "the CSV header needs a `class` or a `value` column",
        ));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (n, (i, line)) in lines.enumerate() {
        if n >= MAX_IMPORT_FEATURES {
            return Err(too_many(n + 1));
        }
        let row = i + 1;
        match csv_row(row, line, lon, lat, class, value, window) {
            Ok(r) => rows.push(r),
            Err(reason) => errors.push(RowError { row, reason }),
        }
    }
    Ok((rows, errors))
}

fn csv_row(
    row: usize,
    line: &str,
    lon: Option<usize>,
    lat: Option<usize>,
    class: Option<usize>,
    value: Option<usize>,
    window: Option<usize>,
) -> Result<RawLabel, String> {
    let fields = csv_fields(line)?;
    let get = |i: Option<usize>| {
        i.and_then(|i| fields.get(i))
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    };
    let window_id = get(window).map(|s| csv_text_cell(s).to_owned());
    let geometry = match (get(lon), get(lat)) {
        (Some(x), Some(y)) => {
            let (x, y) = (number(x)?, number(y)?);
            let g = json!({"type": "Point", "coordinates": [x, y]});
            let parsed = parse_label_geometry(&g).map_err(|e| format!("bad geometry: {e}"))?;
            Some((g, parsed))
        }
        (None, None) => None,
        _ => return Err("bad geometry: give both lon and lat".into()),
    };
    let class = get(class).map(|s| match s.parse::<i64>() {
        Ok(i) => ClassRef::Id(i),
        Err(_) => ClassRef::Name(csv_text_cell(s).to_owned()),
    });
    let value = get(value).map(number).transpose()?;
    Ok(RawLabel {
        row,
        geometry,
        window_id,
        class,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_fields_follow_rfc_4180_quoting() {
        assert_eq!(csv_fields("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            csv_fields(r#"1,"x, y","say ""hi""""#).unwrap(),
            ["1", "x, y", r#"say "hi""#]
        );
        assert!(csv_fields(r#"1,"open"#).is_err());
        assert_eq!(csv_fields(&csv_quote("a,\"b\"")).unwrap(), ["a,\"b\""]);
    }

    #[test]
    fn csv_rows_report_their_line_and_reason() {
        let body = b"lon,lat,class\n3.0,45.0,forest\n\nabc,45.0,forest\n3.0,45.0\n4.0,,water\n";
        let (rows, errors) = parse_csv(body).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].row, 2);
        assert_eq!(rows[0].class, Some(ClassRef::Name("forest".into())));
        // Line 5 has no class: a row without a target is caught later, against the project.
        assert_eq!(rows[1].row, 5);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].row, 4);
        assert!(errors[0].reason.contains("bad number"), "{errors:?}");
        assert_eq!(errors[1].row, 6);
        assert!(errors[1].reason.contains("bad geometry"), "{errors:?}");
        assert!(parse_csv(b"x,y\n1,2\n").is_err());
        assert!(parse_csv(b"").is_err());
    }

    #[test]
    fn geojson_features_are_read_one_by_one() {
        let doc = json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 45]}, "properties": {"class": 2}},
            {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[3, 45], [4, 46]]}, "properties": {"class": 2}},
            {"type": "Feature", "geometry": null, "properties": {"window_id": "w1", "value": "1.5"}},
            {"type": "Feature", "geometry": null, "properties": {"value": "x"}},
            {"type": "Thing"}
        ]});
        let (rows, errors) = parse_geojson(doc.to_string().as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].class, Some(ClassRef::Id(2)));
        assert_eq!(rows[1].value, Some(1.5));
        let rows_with_errors: Vec<usize> = errors.iter().map(|e| e.row).collect();
        assert_eq!(rows_with_errors, [1, 3, 4]);
        assert!(parse_geojson(b"{\"type\": \"Point\"}").is_err());
        assert!(parse_geojson(b"not json").is_err());
    }
}
