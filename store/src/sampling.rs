//! Window sampling and the spatial train/val/test split, as pure functions over grid cells.
//!
//! Neighbouring windows look alike, so a random per-window split leaks: the model is scored on windows
//! next to ones it trained on. Windows are therefore grouped into blocks of `B × B` grid cells and whole
//! blocks go to one split. Blocks are ordered by a seeded hash and dealt to the split furthest below its
//! target share of windows, so the split is reproducible from the seed and no block straddles two splits.

use crate::labels::Split;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A window as sampling sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GridCell {
    /// Window id.
    pub id: String,
    /// EPSG code of its UTM zone (columns and rows are per zone).
    pub epsg: i32,
    /// Grid column.
    pub column: i64,
    /// Grid row.
    pub row: i64,
    /// The window's majority label class, when it has class labels.
    pub class_id: Option<i32>,
}

/// Which windows to sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "strategy", rename_all = "lowercase", deny_unknown_fields)]
pub enum Sampling {
    /// Every window.
    All,
    /// Every `step`-th window along both grid axes (cells whose column and row are multiples of `step`).
    Grid {
        /// Spacing in grid cells (≥ 1).
        step: u32,
    },
    /// `count` windows drawn at random (seeded).
    Random {
        /// Windows to draw (all when there are fewer).
        count: usize,
    },
    /// The same number of windows of each majority class (seeded); windows without class labels are
    /// left out.
    Stratified {
        /// Windows per class (default: as many as the rarest class has).
        #[serde(default)]
        per_class: Option<usize>,
    },
}

/// Sampling and split options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SplitOptions {
    /// Which windows to sample (default: all).
    #[serde(default = "default_sampling")]
    pub sampling: Sampling,
    /// Block side in grid cells (default 4).
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    /// Target shares of train, val and test windows (default 0.7, 0.15, 0.15); normalised to sum 1.
    #[serde(default = "default_fractions")]
    pub fractions: [f64; 3],
    /// Seed of the random draw and of the block order (default 0).
    #[serde(default)]
    pub seed: u64,
}

fn default_sampling() -> Sampling {
    Sampling::All
}
fn default_block_size() -> u32 {
    4
}
fn default_fractions() -> [f64; 3] {
    [0.7, 0.15, 0.15]
}

impl Default for SplitOptions {
    fn default() -> Self {
        Self {
            sampling: Sampling::All,
            block_size: default_block_size(),
            fractions: default_fractions(),
            seed: 0,
        }
    }
}

/// Options that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOptions(pub String);

/// Where one sampled window goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Window id.
    pub window_id: String,
    /// Its split.
    pub split: Split,
    /// Its block, `{epsg}_{bx}_{by}`.
    pub block: String,
}

impl SplitOptions {
    /// Checks the options; returns the fractions normalised to sum 1.
    pub fn validate(&self) -> Result<[f64; 3], InvalidOptions> {
        if self.block_size == 0 {
            return Err(InvalidOptions("block_size must be at least 1".into()));
        }
        if let Sampling::Grid { step: 0 } = self.sampling {
            return Err(InvalidOptions("grid step must be at least 1".into()));
        }
        if let Sampling::Stratified { per_class: Some(0) } = self.sampling {
            return Err(InvalidOptions("per_class must be at least 1".into()));
        }
        if self.fractions.iter().any(|f| !f.is_finite() || *f < 0.0) {
            return Err(InvalidOptions(
                "fractions must be finite and not negative".into(),
            ));
        }
        let sum: f64 = self.fractions.iter().sum();
        if sum <= 0.0 {
            return Err(InvalidOptions("fractions must not all be zero".into()));
        }
        Ok(self.fractions.map(|f| f / sum))
    }
}

/// A stable 64-bit hash of `key` under `seed` (FNV-1a, then the splitmix64 finaliser). Unlike std's
/// hasher it never changes between Rust releases, so a seed reproduces the same split forever.
fn seeded_hash(seed: u64, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = h
        .wrapping_add(seed.rotate_left(32))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The windows `sampling` picks, in id order.
pub fn sample<'a>(
    cells: &'a [GridCell],
    sampling: &Sampling,
    seed: u64,
) -> Result<Vec<&'a GridCell>, InvalidOptions> {
    let by_hash = |mut v: Vec<&'a GridCell>| {
        v.sort_by_key(|c| (seeded_hash(seed, &c.id), c.id.as_str()));
        v
    };
    let mut picked: Vec<&GridCell> = match sampling {
        Sampling::All => cells.iter().collect(),
        Sampling::Grid { step } => {
            let step = i64::from((*step).max(1));
            cells
                .iter()
                .filter(|c| c.column.rem_euclid(step) == 0 && c.row.rem_euclid(step) == 0)
                .collect()
        }
        Sampling::Random { count } => {
            let mut v = by_hash(cells.iter().collect());
            v.truncate(*count);
            v
        }
        Sampling::Stratified { per_class } => {
            let mut classes: BTreeMap<i32, Vec<&GridCell>> = BTreeMap::new();
            for c in cells {
                if let Some(k) = c.class_id {
                    classes.entry(k).or_default().push(c);
                }
            }
            if classes.is_empty() {
                return Err(InvalidOptions(
                    "stratified sampling needs windows with class labels; import labels first"
                        .into(),
                ));
            }
            let n = per_class.unwrap_or_else(|| classes.values().map(Vec::len).min().unwrap_or(0));
            classes
                .into_values()
                .flat_map(|v| {
                    let mut v = by_hash(v);
                    v.truncate(n);
                    v
                })
                .collect()
        }
    };
    picked.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(picked)
}

/// Assigns whole blocks of `block_size × block_size` cells to splits. With at least as many blocks as
/// splits of positive share, every such split gets at least one block.
pub fn split(
    cells: &[&GridCell],
    block_size: u32,
    fractions: [f64; 3],
    seed: u64,
) -> Vec<Assignment> {
    let b = i64::from(block_size.max(1));
    let mut blocks: HashMap<String, Vec<&GridCell>> = HashMap::new();
    for c in cells {
        let key = format!(
            "{}_{}_{}",
            c.epsg,
            c.column.div_euclid(b),
            c.row.div_euclid(b)
        );
        blocks.entry(key).or_default().push(c);
    }
    let mut order: Vec<(String, Vec<&GridCell>)> = blocks.into_iter().collect();
    order.sort_by(|a, b| (seeded_hash(seed, &a.0), &a.0).cmp(&(seeded_hash(seed, &b.0), &b.0)));

    let splits = [Split::Train, Split::Val, Split::Test];
    let wanted: Vec<usize> = (0..3).filter(|&i| fractions[i] > 0.0).collect();
    let mut counts = [0_usize; 3];
    let mut total = 0_usize;
    let mut out = Vec::with_capacity(cells.len());
    for (n, (key, members)) in order.into_iter().enumerate() {
        let size = members.len();
        // The first blocks seed each wanted split; then each block goes where the share is furthest
        // below target once the block is counted.
        let pick = if n < wanted.len() {
            wanted[n]
        } else {
            let after = (total + size) as f64;
            let mut best = wanted[0];
            let mut best_deficit = f64::NEG_INFINITY;
            for &i in &wanted {
                let deficit = fractions[i] * after - counts[i] as f64;
                if deficit > best_deficit {
                    best = i;
                    best_deficit = deficit;
                }
            }
            best
        };
        counts[pick] += size;
        total += size;
        for c in members {
            out.push(Assignment {
                window_id: c.id.clone(),
                split: splits[pick],
                block: key.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.window_id.cmp(&b.window_id));
    out
}

/// Samples the windows and splits the sample.
pub fn sample_and_split(
    cells: &[GridCell],
    options: &SplitOptions,
) -> Result<Vec<Assignment>, InvalidOptions> {
    let fractions = options.validate()?;
    let picked = sample(cells, &options.sampling, options.seed)?;
    Ok(split(&picked, options.block_size, fractions, options.seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A tiny deterministic generator for the property tests.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            seeded_hash(self.0, "gen")
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn cell(epsg: i32, column: i64, row: i64, class_id: Option<i32>) -> GridCell {
        GridCell {
            id: format!("{epsg}_10m_64px_{column}_{row}"),
            epsg,
            column,
            row,
            class_id,
        }
    }

    /// A random AOI: a rectangle of cells, some missing, possibly in two zones, at any grid offset.
    fn random_cells(g: &mut Gen) -> Vec<GridCell> {
        let (w, h) = (1 + g.below(30) as i64, 1 + g.below(30) as i64);
        let (x0, y0) = (g.below(2000) as i64 - 1000, g.below(2000) as i64 - 1000);
        let zones = 1 + g.below(2) as i32;
        let mut cells = Vec::new();
        for z in 0..zones {
            for c in 0..w {
                for r in 0..h {
                    if g.below(10) > 0 {
                        cells.push(cell(32630 + z, x0 + c, y0 + r, Some(g.below(4) as i32)));
                    }
                }
            }
        }
        cells
    }

    #[test]
    fn no_window_is_in_two_splits_and_blocks_never_straddle() {
        let mut g = Gen(7);
        for case in 0..300 {
            let cells = random_cells(&mut g);
            let options = SplitOptions {
                block_size: 1 + g.below(6) as u32,
                seed: g.next(),
                ..SplitOptions::default()
            };
            let out = sample_and_split(&cells, &options).unwrap();
            // Every window once.
            let ids: HashSet<&str> = out.iter().map(|a| a.window_id.as_str()).collect();
            assert_eq!(ids.len(), out.len(), "case {case}: a window appears twice");
            assert_eq!(out.len(), cells.len(), "case {case}: windows lost");
            // Cells of one block share a split, and the block is the B×B neighbourhood.
            let b = i64::from(options.block_size);
            let mut block_split: HashMap<(i32, i64, i64), Split> = HashMap::new();
            let by_id: HashMap<&str, &GridCell> =
                cells.iter().map(|c| (c.id.as_str(), c)).collect();
            for a in &out {
                let c = by_id[a.window_id.as_str()];
                let key = (c.epsg, c.column.div_euclid(b), c.row.div_euclid(b));
                assert_eq!(a.block, format!("{}_{}_{}", key.0, key.1, key.2));
                let prev = *block_split.entry(key).or_insert(a.split);
                assert_eq!(prev, a.split, "case {case}: block {key:?} straddles splits");
            }
            // With three or more blocks, no split is empty.
            if block_split.len() >= 3 {
                for s in [Split::Train, Split::Val, Split::Test] {
                    assert!(
                        out.iter().any(|a| a.split == s),
                        "case {case}: {s:?} is empty"
                    );
                }
            }
        }
    }

    #[test]
    fn the_split_is_reproducible_from_the_seed_and_changes_with_it() {
        let cells: Vec<GridCell> = (0..40)
            .flat_map(|c| (0..40).map(move |r| cell(32631, c, r, None)))
            .collect();
        let opts = SplitOptions::default();
        let a = sample_and_split(&cells, &opts).unwrap();
        let b = sample_and_split(&cells, &opts).unwrap();
        assert_eq!(a, b);
        let c = sample_and_split(&cells, &SplitOptions { seed: 1, ..opts }).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn window_shares_come_close_to_the_targets() {
        // 100 blocks of 16 windows: shares land within one block of the target.
        let cells: Vec<GridCell> = (0..40)
            .flat_map(|c| (0..40).map(move |r| cell(32631, c, r, None)))
            .collect();
        let out = sample_and_split(&cells, &SplitOptions::default()).unwrap();
        let share = |s: Split| out.iter().filter(|a| a.split == s).count() as f64 / 1600.0;
        assert!((share(Split::Train) - 0.7).abs() <= 0.01 + 16.0 / 1600.0);
        assert!((share(Split::Val) - 0.15).abs() <= 0.01 + 16.0 / 1600.0);
        assert!((share(Split::Test) - 0.15).abs() <= 0.01 + 16.0 / 1600.0);
    }

    #[test]
    fn a_zero_fraction_leaves_that_split_empty() {
        let cells: Vec<GridCell> = (0..20)
            .flat_map(|c| (0..20).map(move |r| cell(32631, c, r, None)))
            .collect();
        let opts = SplitOptions {
            fractions: [0.8, 0.2, 0.0],
            ..SplitOptions::default()
        };
        let out = sample_and_split(&cells, &opts).unwrap();
        assert!(out.iter().all(|a| a.split != Split::Test));
        assert!(out.iter().any(|a| a.split == Split::Val));
    }

    #[test]
    fn grid_sampling_takes_every_kth_cell_on_both_axes() {
        let cells: Vec<GridCell> = (-5..5)
            .flat_map(|c| (0..10).map(move |r| cell(32631, c, r, None)))
            .collect();
        let picked = sample(&cells, &Sampling::Grid { step: 3 }, 0).unwrap();
        let mut got: Vec<(i64, i64)> = picked.iter().map(|c| (c.column, c.row)).collect();
        got.sort_unstable();
        let mut want = Vec::new();
        for c in [-3, 0, 3] {
            for r in [0, 3, 6, 9] {
                want.push((c, r));
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn random_sampling_draws_the_count_reproducibly() {
        let cells: Vec<GridCell> = (0..10)
            .flat_map(|c| (0..10).map(move |r| cell(32631, c, r, None)))
            .collect();
        let a = sample(&cells, &Sampling::Random { count: 17 }, 5).unwrap();
        let b = sample(&cells, &Sampling::Random { count: 17 }, 5).unwrap();
        let c = sample(&cells, &Sampling::Random { count: 17 }, 6).unwrap();
        assert_eq!(a.len(), 17);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            sample(&cells, &Sampling::Random { count: 1000 }, 5)
                .unwrap()
                .len(),
            100
        );
    }

    #[test]
    fn stratified_sampling_balances_classes_and_skips_unlabelled_windows() {
        // 50 windows of class 0, 10 of class 1, 20 unlabelled.
        let mut cells = Vec::new();
        for i in 0..80 {
            let class = match i {
                0..50 => Some(0),
                50..60 => Some(1),
                _ => None,
            };
            cells.push(cell(32631, i, 0, class));
        }
        let picked = sample(&cells, &Sampling::Stratified { per_class: None }, 3).unwrap();
        assert_eq!(picked.iter().filter(|c| c.class_id == Some(0)).count(), 10);
        assert_eq!(picked.iter().filter(|c| c.class_id == Some(1)).count(), 10);
        assert!(picked.iter().all(|c| c.class_id.is_some()));
        let picked = sample(
            &cells,
            &Sampling::Stratified {
                per_class: Some(30),
            },
            3,
        )
        .unwrap();
        assert_eq!(picked.iter().filter(|c| c.class_id == Some(0)).count(), 30);
        assert_eq!(picked.iter().filter(|c| c.class_id == Some(1)).count(), 10);

        let unlabelled: Vec<GridCell> =
            cells.into_iter().filter(|c| c.class_id.is_none()).collect();
        assert!(sample(&unlabelled, &Sampling::Stratified { per_class: None }, 3).is_err());
    }

    #[test]
    fn bad_options_are_refused() {
        let bad = [
            SplitOptions {
                block_size: 0,
                ..SplitOptions::default()
            },
            SplitOptions {
                fractions: [0.0, 0.0, 0.0],
                ..SplitOptions::default()
            },
            SplitOptions {
                fractions: [0.5, -0.1, 0.6],
                ..SplitOptions::default()
            },
            SplitOptions {
                fractions: [f64::NAN, 0.1, 0.1],
                ..SplitOptions::default()
            },
            SplitOptions {
                sampling: Sampling::Grid { step: 0 },
                ..SplitOptions::default()
            },
        ];
        for o in bad {
            assert!(o.validate().is_err(), "{o:?}");
        }
    }
}
