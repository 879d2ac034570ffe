//! A project's labels, their immutable versions, the windows each label covers, the spatial split of the
//! windows, and the training examples all of that yields.
//!
//! Every import, edit or split makes a new version (a `label_set` row). A label is valid from the version
//! that added it until the one that removed it, so any version can be read back as it was. Training
//! records the version it used.

use crate::sampling::{Assignment, GridCell};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use groundwork_types::Task;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// Pixel value of a segmentation mask where no label says anything.
pub const IGNORE: u8 = 255;

/// Which part of the data a window belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Fitted on.
    Train,
    /// Model selection.
    Val,
    /// Held out for the final report.
    Test,
}

impl Split {
    /// `train`, `val` or `test`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Parses `train`, `val` or `test`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "train" => Some(Split::Train),
            "val" => Some(Split::Val),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
}

/// What a model should predict for one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelTarget {
    /// Classification: the window's class id.
    Class(i32),
    /// Regression: the window's value.
    Value(f64),
    /// Segmentation: `size × size` class ids in row-major order, [`IGNORE`] where unlabelled.
    Mask {
        /// Pixels per side.
        size: u32,
        /// Class id per pixel.
        pixels: Vec<u8>,
    },
}

/// One labelled window of a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingExample {
    /// Window id.
    pub window_id: String,
    /// Its split.
    pub split: Split,
    /// What to predict.
    pub target: LabelTarget,
}

/// The pixels of a window a label covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// Window id.
    pub window_id: String,
    /// Row-major bitmask (bit `i % 8` of byte `i / 8`); `None` when the label covers the whole window.
    pub pixels: Option<Vec<u8>>,
    /// Covered pixels (≥ 1).
    pub pixel_count: i32,
}

/// A label to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLabel {
    /// GeoJSON Point, Polygon or MultiPolygon in EPSG:4326 (or `None` with `window_id`).
    pub geometry: Option<Value>,
    /// The window the label is given for (it then covers the whole window).
    pub window_id: Option<String>,
    /// Class id (exactly one of `class_id` and `value`).
    pub class_id: Option<i32>,
    /// Numeric value.
    pub value: Option<f64>,
    /// The windows it covers, when known (`None`: windows not planned yet, assign later).
    pub coverage: Option<Vec<Coverage>>,
}

/// A stored label.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Label {
    /// Id.
    pub id: i64,
    /// GeoJSON geometry in EPSG:4326.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub geometry: Option<Value>,
    /// The window it was given for.
    pub window_id: Option<String>,
    /// Class id.
    pub class_id: Option<i32>,
    /// Value.
    pub value: Option<f64>,
    /// Version that added it.
    pub added_in: i32,
}

/// One version of a project's label set.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LabelSet {
    /// Version number (1, 2, …).
    pub version: i32,
    /// `import`, `edit` or `split`.
    pub kind: String,
    /// File name of an import, or empty.
    pub source: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Labels valid in this version.
    pub labels: i32,
    /// Labels this version added.
    pub added: i32,
    /// Labels this version removed.
    pub removed: i32,
    /// Options of a split.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub options: Option<Value>,
}

/// A window with what label assignment and rasterisation need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct WindowGrid {
    /// Window id.
    pub id: String,
    /// EPSG code of its UTM zone.
    pub epsg: i32,
    /// Pixels per side.
    pub size: i32,
    /// Grid column.
    pub grid_column: i64,
    /// Grid row.
    pub grid_row: i64,
    /// GDAL geotransform `[x_left, res, 0, y_top, 0, -res]`.
    pub geotransform: Value,
    /// West bound (EPSG:4326).
    pub bbox_west: f64,
    /// South bound.
    pub bbox_south: f64,
    /// East bound.
    pub bbox_east: f64,
    /// North bound.
    pub bbox_north: f64,
    /// `pending | acquired | quarantined`.
    pub status: String,
}

const LABEL_SET_COLUMNS: &str =
    "version, kind, source, created_at, labels, added, removed, options";

/// Locks the project's label history for a new version and returns its number.
async fn next_version(tx: &mut Transaction<'_, Postgres>, project_id: Uuid) -> Result<i32> {
    let locked: Option<Uuid> =
        sqlx::query_scalar("select id from project where id = $1 for update")
            .bind(project_id)
            .fetch_optional(&mut **tx)
            .await?;
    if locked.is_none() {
        return Err(Error::NotFound {
            what: "project",
            id: project_id,
        });
    }
    let last: Option<i32> =
        sqlx::query_scalar("select max(version) from label_set where project_id = $1")
            .bind(project_id)
            .fetch_one(&mut **tx)
            .await?;
    Ok(last.unwrap_or(0) + 1)
}

async fn insert_label_set(
    tx: &mut Transaction<'_, Postgres>,
    project_id: Uuid,
    version: i32,
    kind: &str,
    source: &str,
    created_by: Option<Uuid>,
    options: Option<&Value>,
) -> Result<()> {
    sqlx::query(
        "insert into label_set (project_id, version, kind, source, created_by, options) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(project_id)
    .bind(version)
    .bind(kind)
    .bind(source)
    .bind(created_by)
    .bind(options)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Fills in the counts of a new version and returns it.
async fn finish_label_set(
    tx: &mut Transaction<'_, Postgres>,
    project_id: Uuid,
    version: i32,
    added: i64,
    removed: i64,
) -> Result<LabelSet> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update label_set set added = $3, removed = $4, labels = (select count(*) from label \
             where project_id = $1 and added_in <= $2 and (removed_in is null or removed_in > $2)) \
         where project_id = $1 and version = $2 returning {LABEL_SET_COLUMNS}"
    )))
    .bind(project_id)
    .bind(version)
    .bind(i32::try_from(added).unwrap_or(i32::MAX))
    .bind(i32::try_from(removed).unwrap_or(i32::MAX))
    .fetch_one(&mut **tx)
    .await?)
}

async fn insert_coverage(
    tx: &mut Transaction<'_, Postgres>,
    project_id: Uuid,
    rows: &[(i64, &Coverage)],
) -> Result<()> {
    for chunk in rows.chunks(5000) {
        sqlx::query(
            "insert into label_window (label_id, project_id, window_id, pixels, pixel_count) \
             select u.label_id, $1, u.window_id, u.pixels, u.pixel_count \
             from unnest($2::int8[], $3::text[], $4::bytea[], $5::int4[]) as u(label_id, window_id, pixels, pixel_count) \
             on conflict do nothing",
        )
        .bind(project_id)
        .bind(chunk.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, c)| c.window_id.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, c)| c.pixels.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, c)| c.pixel_count).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Inserts `labels` as added in `version`, with the windows they cover; returns how many.
async fn insert_labels(
    tx: &mut Transaction<'_, Postgres>,
    project_id: Uuid,
    version: i32,
    labels: &[NewLabel],
) -> Result<i64> {
    let n = i64::try_from(labels.len()).unwrap_or(i64::MAX);
    let ids: Vec<i64> = sqlx::query_scalar(
        "select nextval(pg_get_serial_sequence('label', 'id')) from generate_series(1, $1)",
    )
    .bind(n)
    .fetch_all(&mut **tx)
    .await?;
    for (chunk_ids, chunk) in ids.chunks(5000).zip(labels.chunks(5000)) {
        sqlx::query(
            "insert into label (id, project_id, added_in, geometry, window_id, class_id, value, assigned) \
             select u.id, $1, $2, u.geometry, u.window_id, u.class_id, u.value, u.assigned \
             from unnest($3::int8[], $4::jsonb[], $5::text[], $6::int4[], $7::float8[], $8::bool[]) \
                 as u(id, geometry, window_id, class_id, value, assigned)",
        )
        .bind(project_id)
        .bind(version)
        .bind(chunk_ids)
        .bind(chunk.iter().map(|l| l.geometry.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|l| l.window_id.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|l| l.class_id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|l| l.value).collect::<Vec<_>>())
        .bind(chunk.iter().map(|l| l.coverage.is_some()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    let coverage: Vec<(i64, &Coverage)> = ids
        .iter()
        .zip(labels)
        .flat_map(|(id, l)| l.coverage.iter().flatten().map(move |c| (*id, c)))
        .collect();
    insert_coverage(tx, project_id, &coverage).await?;
    Ok(n)
}

/// Adds `labels` as a new version (`replace`: the new version holds only these labels). One transaction:
/// a failed import leaves no trace.
pub async fn import(
    pool: &PgPool,
    project_id: Uuid,
    labels: &[NewLabel],
    replace: bool,
    source: &str,
    created_by: Option<Uuid>,
) -> Result<LabelSet> {
    let mut tx = pool.begin().await?;
    let version = next_version(&mut tx, project_id).await?;
    insert_label_set(
        &mut tx, project_id, version, "import", source, created_by, None,
    )
    .await?;
    let removed = if replace {
        sqlx::query("update label set removed_in = $2 where project_id = $1 and removed_in is null")
            .bind(project_id)
            .bind(version)
            .execute(&mut *tx)
            .await?
            .rows_affected()
    } else {
        0
    };
    let n = insert_labels(&mut tx, project_id, version, labels).await?;
    let set = finish_label_set(
        &mut tx,
        project_id,
        version,
        n,
        i64::try_from(removed).unwrap_or(i64::MAX),
    )
    .await?;
    tx.commit().await?;
    Ok(set)
}

/// Removes labels (an edit): a new version without them. Ids that are not valid labels of the project
/// are reported as [`Error::Conflict`] and nothing changes.
pub async fn remove(
    pool: &PgPool,
    project_id: Uuid,
    label_ids: &[i64],
    created_by: Option<Uuid>,
) -> Result<LabelSet> {
    edit(pool, project_id, &[], label_ids, None, created_by).await
}

/// One edit as one new version: `remove` these labels and `add` those. With `base_version`, the edit
/// applies only while the latest version is still that one (optimistic concurrency: two people
/// labelling one project never overwrite each other; the second is told to reload), else
/// [`Error::Conflict`]. Ids that are not current labels of the project are a conflict too; nothing
/// changes then.
pub async fn edit(
    pool: &PgPool,
    project_id: Uuid,
    add: &[NewLabel],
    remove: &[i64],
    base_version: Option<i32>,
    created_by: Option<Uuid>,
) -> Result<LabelSet> {
    let mut tx = pool.begin().await?;
    let version = next_version(&mut tx, project_id).await?;
    if let Some(base) = base_version
        && base != version - 1
    {
        return Err(Error::Conflict(format!(
            "the labels changed since version {base} (they are at version {} now): reload them to see \
             the other changes, then edit again",
            version - 1
        )));
    }
    insert_label_set(&mut tx, project_id, version, "edit", "", created_by, None).await?;
    let removed = sqlx::query(
        "update label set removed_in = $2 where project_id = $1 and removed_in is null and id = any($3)",
    )
    .bind(project_id)
    .bind(version)
    .bind(remove)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let mut unique = remove.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if removed != unique.len() as u64 {
        return Err(Error::Conflict(
            "some of these labels do not exist or were already removed".into(),
        ));
    }
    let added = insert_labels(&mut tx, project_id, version, add).await?;
    let set = finish_label_set(
        &mut tx,
        project_id,
        version,
        added,
        i64::try_from(removed).unwrap_or(0),
    )
    .await?;
    tx.commit().await?;
    Ok(set)
}

/// All versions, oldest first.
pub async fn versions(pool: &PgPool, project_id: Uuid) -> Result<Vec<LabelSet>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {LABEL_SET_COLUMNS} from label_set where project_id = $1 order by version"
    )))
    .bind(project_id)
    .fetch_all(pool)
    .await?)
}

/// The version to read: `version` when it exists, else the latest; `None` when there are no versions
/// and none was asked for. Asking for a version that does not exist is [`Error::NotFound`].
pub async fn resolve_version(
    pool: &PgPool,
    project_id: Uuid,
    version: Option<i32>,
) -> Result<Option<i32>> {
    match version {
        Some(v) => {
            let found: Option<i32> = sqlx::query_scalar(
                "select version from label_set where project_id = $1 and version = $2",
            )
            .bind(project_id)
            .bind(v)
            .fetch_optional(pool)
            .await?;
            found.map(Some).ok_or(Error::NotFound {
                what: "label set version",
                id: project_id,
            })
        }
        None => Ok(
            sqlx::query_scalar("select max(version) from label_set where project_id = $1")
                .bind(project_id)
                .fetch_one(pool)
                .await?,
        ),
    }
}

/// The labels valid in `version`, in id order.
pub async fn labels_at(pool: &PgPool, project_id: Uuid, version: i32) -> Result<Vec<Label>> {
    Ok(sqlx::query_as(
        "select id, geometry, window_id, class_id, value, added_in from label \
         where project_id = $1 and added_in <= $2 and (removed_in is null or removed_in > $2) order by id",
    )
    .bind(project_id)
    .bind(version)
    .fetch_all(pool)
    .await?)
}

/// Current labels whose windows have not been worked out yet (imported before the windows were planned).
pub async fn unassigned(pool: &PgPool, project_id: Uuid) -> Result<Vec<Label>> {
    Ok(sqlx::query_as(
        "select id, geometry, window_id, class_id, value, added_in from label \
         where project_id = $1 and not assigned and removed_in is null order by id",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?)
}

/// Records the windows of labels that had none yet.
pub async fn assign(
    pool: &PgPool,
    project_id: Uuid,
    coverage: &[(i64, Vec<Coverage>)],
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(i64, &Coverage)> = coverage
        .iter()
        .flat_map(|(id, cs)| cs.iter().map(move |c| (*id, c)))
        .collect();
    insert_coverage(&mut tx, project_id, &rows).await?;
    sqlx::query("update label set assigned = true where project_id = $1 and id = any($2)")
        .bind(project_id)
        .bind(coverage.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The project's windows with their grid and bounds, in id order.
pub async fn window_grids(pool: &PgPool, project_id: Uuid) -> Result<Vec<WindowGrid>> {
    Ok(sqlx::query_as(
        "select id, epsg, size, grid_column, grid_row, geotransform, bbox_west, bbox_south, bbox_east, bbox_north, status \
         from project_window where project_id = $1 order by id",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?)
}

/// Labelled pixels per class of each window in `version`.
async fn class_pixels(
    pool: &PgPool,
    project_id: Uuid,
    version: i32,
) -> Result<HashMap<String, BTreeMap<i32, i64>>> {
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "select lw.window_id, l.class_id, sum(lw.pixel_count)::int8 from label l \
         join label_window lw on lw.label_id = l.id \
         where l.project_id = $1 and l.added_in <= $2 and (l.removed_in is null or l.removed_in > $2) \
             and l.class_id is not null \
         group by 1, 2",
    )
    .bind(project_id)
    .bind(version)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<String, BTreeMap<i32, i64>> = HashMap::new();
    for (window, class, pixels) in rows {
        out.entry(window).or_default().insert(class, pixels);
    }
    Ok(out)
}

/// The class covering most of a window's labelled pixels (ties go to the lower id).
fn majority(pixels: &BTreeMap<i32, i64>) -> Option<i32> {
    // Ascending class order with a strict `>` keeps the lower id on ties.
    let mut best: Option<(i32, i64)> = None;
    for (c, n) in pixels {
        if best.is_none_or(|(_, m)| *n > m) {
            best = Some((*c, *n));
        }
    }
    best.map(|(c, _)| c)
}

/// The class covering most of each window in `version` (by labelled pixels; ties go to the lower id).
pub async fn majority_classes(
    pool: &PgPool,
    project_id: Uuid,
    version: i32,
) -> Result<HashMap<String, i32>> {
    Ok(class_pixels(pool, project_id, version)
        .await?
        .into_iter()
        .filter_map(|(w, p)| majority(&p).map(|c| (w, c)))
        .collect())
}

/// The windows sampling may pick (all but quarantined and empty ones), with their majority class and every class
/// labelled in them in the latest version.
pub async fn split_cells(pool: &PgPool, project_id: Uuid) -> Result<Vec<GridCell>> {
    let mut classes = match resolve_version(pool, project_id, None).await? {
        Some(v) => class_pixels(pool, project_id, v).await?,
        None => HashMap::new(),
    };
    let rows: Vec<(String, i32, i64, i64)> = sqlx::query_as(
        "select id, epsg, grid_column, grid_row from project_window \
         where project_id = $1 and status not in ('quarantined', 'empty') order by id",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, epsg, column, row)| {
            let pixels = classes.remove(&id).unwrap_or_default();
            GridCell {
                class_id: majority(&pixels),
                classes: pixels.into_keys().collect(),
                id,
                epsg,
                column,
                row,
            }
        })
        .collect())
}

/// Records a sampling and split as a new version (its labels are those of the previous version).
pub async fn record_split(
    pool: &PgPool,
    project_id: Uuid,
    assignments: &[Assignment],
    options: &Value,
    created_by: Option<Uuid>,
) -> Result<LabelSet> {
    let mut tx = pool.begin().await?;
    let version = next_version(&mut tx, project_id).await?;
    insert_label_set(
        &mut tx,
        project_id,
        version,
        "split",
        "",
        created_by,
        Some(options),
    )
    .await?;
    for chunk in assignments.chunks(5000) {
        sqlx::query(
            "insert into window_split (project_id, version, window_id, split, block) \
             select $1, $2, u.* from unnest($3::text[], $4::text[], $5::text[]) as u",
        )
        .bind(project_id)
        .bind(version)
        .bind(
            chunk
                .iter()
                .map(|a| a.window_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|a| a.split.as_str()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|a| a.block.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    let set = finish_label_set(&mut tx, project_id, version, 0, 0).await?;
    tx.commit().await?;
    Ok(set)
}

/// The split version in force at `version`: the latest `split` version at or before it.
async fn split_version(pool: &PgPool, project_id: Uuid, version: i32) -> Result<Option<i32>> {
    Ok(sqlx::query_scalar(
        "select max(version) from label_set where project_id = $1 and kind = 'split' and version <= $2",
    )
    .bind(project_id)
    .bind(version)
    .fetch_one(pool)
    .await?)
}

/// The split of each window at `version` (windows the split in force did not sample are absent).
pub async fn window_splits(
    pool: &PgPool,
    project_id: Uuid,
    version: i32,
) -> Result<HashMap<String, Split>> {
    let Some(s) = split_version(pool, project_id, version).await? else {
        return Ok(HashMap::new());
    };
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select window_id, split from window_split where project_id = $1 and version = $2",
    )
    .bind(project_id)
    .bind(s)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(w, s)| Split::parse(&s).map(|s| (w, s)))
        .collect())
}

#[derive(sqlx::FromRow)]
struct ExampleRow {
    window_id: String,
    split: String,
    size: i32,
    class_id: Option<i32>,
    value: Option<f64>,
    pixels: Option<Vec<u8>>,
    pixel_count: i32,
}

/// The training examples of `version` (latest when `None`): acquired windows with at least one label
/// and a split. The target follows the project's task: the majority class (by labelled pixels) for
/// classification, the mean value for regression, and for segmentation a mask where later labels paint
/// over earlier ones and unlabelled pixels are [`IGNORE`]. Returns the version used.
pub async fn training_examples(
    pool: &PgPool,
    project_id: Uuid,
    version: Option<i32>,
) -> Result<(i32, Vec<TrainingExample>)> {
    let task: Option<String> = sqlx::query_scalar("select task from project where id = $1")
        .bind(project_id)
        .fetch_optional(pool)
        .await?;
    let task: Task = task
        .ok_or(Error::NotFound {
            what: "project",
            id: project_id,
        })?
        .parse()?;
    let version = resolve_version(pool, project_id, version)
        .await?
        .ok_or(Error::NotFound {
            what: "label set",
            id: project_id,
        })?;
    let Some(split_version) = split_version(pool, project_id, version).await? else {
        return Ok((version, Vec::new()));
    };
    let rows: Vec<ExampleRow> = sqlx::query_as(
        "select lw.window_id, ws.split, w.size, l.class_id, l.value, lw.pixels, lw.pixel_count \
         from label l \
         join label_window lw on lw.label_id = l.id \
         join window_split ws on ws.project_id = l.project_id and ws.version = $3 and ws.window_id = lw.window_id \
         join project_window w on w.project_id = l.project_id and w.id = lw.window_id \
         where l.project_id = $1 and l.added_in <= $2 and (l.removed_in is null or l.removed_in > $2) \
             and w.status = 'acquired' \
         order by lw.window_id, l.id",
    )
    .bind(project_id)
    .bind(version)
    .bind(split_version)
    .fetch_all(pool)
    .await?;
    let mut by_window: BTreeMap<String, Vec<ExampleRow>> = BTreeMap::new();
    for r in rows {
        by_window.entry(r.window_id.clone()).or_default().push(r);
    }
    let mut out = Vec::with_capacity(by_window.len());
    for (window_id, rows) in by_window {
        let Some(split) = rows.first().and_then(|r| Split::parse(&r.split)) else {
            continue;
        };
        let target = match task {
            Task::Regression => window_value(&rows),
            Task::Segmentation => window_mask(&rows),
            Task::Classification => window_class(&rows),
        };
        if let Some(target) = target {
            out.push(TrainingExample {
                window_id,
                split,
                target,
            });
        }
    }
    Ok((version, out))
}

/// Every labelled acquired window of `version` (latest when `None`) as a class mask, whatever its split
/// (or none): what the labelling page and label suggestions need. `None` when there are no labels.
/// Values (regression labels) are left out.
pub async fn label_masks(
    pool: &PgPool,
    project_id: Uuid,
    version: Option<i32>,
) -> Result<Option<(i32, Vec<(String, LabelTarget)>)>> {
    let Some(version) = resolve_version(pool, project_id, version).await? else {
        return Ok(None);
    };
    let rows: Vec<ExampleRow> = sqlx::query_as(
        "select lw.window_id, '' as split, w.size, l.class_id, l.value, lw.pixels, lw.pixel_count \
         from label l \
         join label_window lw on lw.label_id = l.id \
         join project_window w on w.project_id = l.project_id and w.id = lw.window_id \
         where l.project_id = $1 and l.added_in <= $2 and (l.removed_in is null or l.removed_in > $2) \
             and w.status = 'acquired' and l.class_id is not null \
         order by lw.window_id, l.id",
    )
    .bind(project_id)
    .bind(version)
    .fetch_all(pool)
    .await?;
    let mut by_window: BTreeMap<String, Vec<ExampleRow>> = BTreeMap::new();
    for r in rows {
        by_window.entry(r.window_id.clone()).or_default().push(r);
    }
    Ok(Some((
        version,
        by_window
            .into_iter()
            .filter_map(|(id, rows)| window_mask(&rows).map(|m| (id, m)))
            .collect(),
    )))
}

fn window_class(rows: &[ExampleRow]) -> Option<LabelTarget> {
    let mut pixels: BTreeMap<i32, i64> = BTreeMap::new();
    for r in rows {
        if let Some(c) = r.class_id {
            *pixels.entry(c).or_default() += i64::from(r.pixel_count);
        }
    }
    majority(&pixels).map(LabelTarget::Class)
}

fn window_value(rows: &[ExampleRow]) -> Option<LabelTarget> {
    let values: Vec<f64> = rows.iter().filter_map(|r| r.value).collect();
    if values.is_empty() {
        return None;
    }
    Some(LabelTarget::Value(
        values.iter().sum::<f64>() / values.len() as f64,
    ))
}

fn window_mask(rows: &[ExampleRow]) -> Option<LabelTarget> {
    let size = u32::try_from(rows.first()?.size).ok()?;
    let n = (size as usize) * (size as usize);
    let mut pixels = vec![IGNORE; n];
    let mut any = false;
    for r in rows {
        let Some(class) = r.class_id.and_then(|c| u8::try_from(c).ok()) else {
            continue;
        };
        any = true;
        match &r.pixels {
            None => pixels.fill(class),
            Some(bits) => {
                for (i, p) in pixels.iter_mut().enumerate() {
                    if bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0) {
                        *p = class;
                    }
                }
            }
        }
    }
    any.then_some(LabelTarget::Mask { size, pixels })
}

/// Windows per split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SplitCounts {
    /// Train windows.
    pub train: i64,
    /// Validation windows.
    pub val: i64,
    /// Test windows.
    pub test: i64,
    /// Windows in no split.
    pub none: i64,
}

impl SplitCounts {
    fn add(&mut self, split: Option<Split>, n: i64) {
        match split {
            Some(Split::Train) => self.train += n,
            Some(Split::Val) => self.val += n,
            Some(Split::Test) => self.test += n,
            None => self.none += n,
        }
    }
}

/// Counts of one class in a version.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClassSummary {
    /// Class id.
    pub class_id: i32,
    /// Its name in the project's legend, when there.
    pub name: Option<String>,
    /// Labels of this class.
    pub labels: i64,
    /// Windows with at least one label of this class, per split.
    pub windows: SplitCounts,
}

/// Statistics of numeric labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValueSummary {
    /// Labels with a value.
    pub labels: i64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub mean: f64,
    /// Windows with at least one value, per split.
    pub windows: SplitCounts,
}

/// A class labelled in the project that has no window in some split of positive share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MissingClass {
    /// Class id.
    pub class_id: i32,
    /// Its name in the project's legend, when there.
    pub class_name: Option<String>,
    /// The splits without a window of it.
    pub splits: Vec<Split>,
}

/// What a version of the label set holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Summary {
    /// The version summarised (null when there are no labels yet).
    pub version: Option<i32>,
    /// The split version in force at it.
    pub split_version: Option<i32>,
    /// Labels in the version.
    pub labels: i64,
    /// Labels whose windows are not known yet.
    pub unassigned: i64,
    /// Windows the split sampled, per split (`none`: the project's other windows).
    pub windows: SplitCounts,
    /// Windows with at least one label, per split.
    pub labelled_windows: SplitCounts,
    /// Per class.
    pub classes: Vec<ClassSummary>,
    /// Numeric labels, if any.
    pub values: Option<ValueSummary>,
    /// Classes with labelled windows that the split in force leaves out of a split (of positive share):
    /// a model cannot learn or be scored on them there. Empty without a split.
    pub missing: Vec<MissingClass>,
    /// Every version, oldest first.
    pub versions: Vec<LabelSet>,
}

/// Counts per class and split for `version` (latest when `None`).
pub async fn summary(pool: &PgPool, project_id: Uuid, version: Option<i32>) -> Result<Summary> {
    let versions = versions(pool, project_id).await?;
    let Some(version) = resolve_version(pool, project_id, version).await? else {
        let total: i64 =
            sqlx::query_scalar("select count(*) from project_window where project_id = $1")
                .bind(project_id)
                .fetch_one(pool)
                .await?;
        return Ok(Summary {
            version: None,
            split_version: None,
            labels: 0,
            unassigned: 0,
            windows: SplitCounts {
                none: total,
                ..SplitCounts::default()
            },
            labelled_windows: SplitCounts::default(),
            classes: Vec::new(),
            values: None,
            missing: Vec::new(),
            versions,
        });
    };
    let splits = window_splits(pool, project_id, version).await?;
    let window_ids: Vec<String> =
        sqlx::query_scalar("select id from project_window where project_id = $1")
            .bind(project_id)
            .fetch_all(pool)
            .await?;
    let mut windows = SplitCounts::default();
    for w in &window_ids {
        windows.add(splits.get(w).copied(), 1);
    }
    let valid =
        "l.project_id = $1 and l.added_in <= $2 and (l.removed_in is null or l.removed_in > $2)";
    let (labels, unassigned): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select count(*), count(*) filter (where not l.assigned) from label l where {valid}"
    )))
    .bind(project_id)
    .bind(version)
    .fetch_one(pool)
    .await?;
    // (class or null for values, window) pairs of the version.
    let pairs: Vec<(Option<i32>, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select distinct l.class_id, lw.window_id from label l join label_window lw on lw.label_id = l.id where {valid}"
    )))
    .bind(project_id)
    .bind(version)
    .fetch_all(pool)
    .await?;
    let mut labelled: HashMap<&str, ()> = HashMap::new();
    let mut class_windows: BTreeMap<i32, SplitCounts> = BTreeMap::new();
    let mut value_windows: HashMap<&str, ()> = HashMap::new();
    for (class, window) in &pairs {
        labelled.insert(window, ());
        match class {
            Some(c) => class_windows
                .entry(*c)
                .or_default()
                .add(splits.get(window).copied(), 1),
            None => {
                value_windows.insert(window, ());
            }
        }
    }
    let mut labelled_windows = SplitCounts::default();
    for w in labelled.keys() {
        labelled_windows.add(splits.get(*w).copied(), 1);
    }
    let class_labels: Vec<(i32, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select l.class_id, count(*) from label l where {valid} and l.class_id is not null group by 1 order by 1"
    )))
    .bind(project_id)
    .bind(version)
    .fetch_all(pool)
    .await?;
    let legend: Value = sqlx::query_scalar("select classes from project where id = $1")
        .bind(project_id)
        .fetch_one(pool)
        .await?;
    let name_of = |id: i32| {
        legend.as_array().and_then(|a| {
            a.iter()
                .find(|c| c["id"].as_i64() == Some(i64::from(id)))
                .and_then(|c| c["name"].as_str().map(str::to_owned))
        })
    };
    let classes: Vec<ClassSummary> = class_labels
        .into_iter()
        .map(|(class_id, labels)| ClassSummary {
            class_id,
            name: name_of(class_id),
            labels,
            windows: class_windows.remove(&class_id).unwrap_or_default(),
        })
        .collect();
    let split_version = split_version(pool, project_id, version).await?;
    let mut missing = Vec::new();
    if let Some(s) = split_version {
        let fractions = split_fractions(&versions, s);
        for c in &classes {
            let w = &c.windows;
            if w.train + w.val + w.test + w.none == 0 {
                continue;
            }
            let splits: Vec<Split> = [
                (Split::Train, w.train),
                (Split::Val, w.val),
                (Split::Test, w.test),
            ]
            .into_iter()
            .zip(fractions)
            .filter(|((_, n), f)| *n == 0 && *f > 0.0)
            .map(|((s, _), _)| s)
            .collect();
            if !splits.is_empty() {
                missing.push(MissingClass {
                    class_id: c.class_id,
                    class_name: c.name.clone(),
                    splits,
                });
            }
        }
    }
    let stats: (i64, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select count(l.value), min(l.value), max(l.value), avg(l.value) from label l where {valid}"
    )))
    .bind(project_id)
    .bind(version)
    .fetch_one(pool)
    .await?;
    let values = match stats {
        (n, Some(min), Some(max), Some(mean)) if n > 0 => {
            let mut w = SplitCounts::default();
            for v in value_windows.keys() {
                w.add(splits.get(*v).copied(), 1);
            }
            Some(ValueSummary {
                labels: n,
                min,
                max,
                mean,
                windows: w,
            })
        }
        _ => None,
    };
    Ok(Summary {
        version: Some(version),
        split_version,
        labels,
        unassigned,
        windows,
        labelled_windows,
        classes,
        values,
        missing,
        versions,
    })
}

/// The target fractions of split `version`, as recorded in its options (the defaults when absent).
fn split_fractions(versions: &[LabelSet], version: i32) -> [f64; 3] {
    versions
        .iter()
        .find(|v| v.version == version)
        .and_then(|v| v.options.as_ref())
        .and_then(|o| serde_json::from_value::<[f64; 3]>(o.get("fractions")?.clone()).ok())
        .unwrap_or_else(|| crate::sampling::SplitOptions::default().fractions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        class_id: Option<i32>,
        value: Option<f64>,
        pixels: Option<Vec<u8>>,
        n: i32,
    ) -> ExampleRow {
        ExampleRow {
            window_id: "w".into(),
            split: "train".into(),
            size: 4,
            class_id,
            value,
            pixels,
            pixel_count: n,
        }
    }

    #[test]
    fn the_class_covering_most_pixels_wins_and_ties_go_to_the_lower_id() {
        let rows = [
            row(Some(3), None, None, 16),
            row(Some(1), None, None, 4),
            row(Some(1), None, None, 4),
        ];
        assert_eq!(window_class(&rows), Some(LabelTarget::Class(3)));
        let rows = [row(Some(5), None, None, 8), row(Some(2), None, None, 8)];
        assert_eq!(window_class(&rows), Some(LabelTarget::Class(2)));
        assert_eq!(window_class(&[row(None, Some(1.0), None, 1)]), None);
    }

    #[test]
    fn masks_paint_later_labels_over_earlier_ones_and_ignore_the_rest() {
        // First label: the whole window is class 1; second: pixels 0 and 9 are class 2.
        let rows = [
            row(Some(1), None, None, 16),
            row(Some(2), None, Some(vec![0b0000_0001, 0b0000_0010]), 2),
        ];
        let Some(LabelTarget::Mask { size, pixels }) = window_mask(&rows) else {
            panic!("no mask");
        };
        assert_eq!(size, 4);
        let mut want = vec![1_u8; 16];
        want[0] = 2;
        want[9] = 2;
        assert_eq!(pixels, want);

        let rows = [row(Some(7), None, Some(vec![0, 0b1000_0000]), 1)];
        let Some(LabelTarget::Mask { pixels, .. }) = window_mask(&rows) else {
            panic!("no mask");
        };
        assert_eq!(pixels.iter().filter(|p| **p == 7).count(), 1);
        assert_eq!(pixels[15], 7);
        assert_eq!(pixels.iter().filter(|p| **p == IGNORE).count(), 15);
    }

    #[test]
    fn window_values_are_the_mean_of_its_labels() {
        let rows = [row(None, Some(1.0), None, 1), row(None, Some(4.0), None, 1)];
        assert_eq!(window_value(&rows), Some(LabelTarget::Value(2.5)));
    }

    #[test]
    fn splits_serialise_lowercase() {
        assert_eq!(serde_json::to_string(&Split::Val).unwrap(), "\"val\"");
        assert_eq!(Split::parse("test"), Some(Split::Test));
        assert_eq!(Split::parse("Test"), None);
    }
}
