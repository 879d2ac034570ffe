//! Window sampling and the spatial train/val/test split, as pure functions over grid cells.
//!
//! Neighbouring windows look alike, so a random per-window split leaks: the model is scored on windows
//! next to ones it trained on. Windows are therefore grouped into blocks of `B × B` grid cells and whole
//! blocks go to one split, so no block straddles two splits.
//!
//! The split is stratified by class (a window counts for every class labelled in it, not only its
//! majority class). Blocks are ordered by a seeded hash, so the split is reproducible from the seed.
//! Then, rarest class first (by the number of blocks holding it; classes in too few blocks to reach
//! every split come after the others), each block holding the class that is not dealt yet goes to a
//! split with no window of that class yet, else to the split furthest below its target share of that
//! class's windows. Blocks without labels are dealt last, to the split furthest below its target share
//! of windows. A last pass moves or swaps blocks to fill a class's remaining gaps where that opens no
//! other (greedy, not an exhaustive search).
//! A class labelled in at least as many blocks as there are splits of positive share thus normally lands
//! in every split; one in fewer blocks cannot. [`missing_classes`] names any class missing from a split.

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
    /// Every class labelled in the window (the majority one included), ascending and distinct.
    pub classes: Vec<i32>,
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

/// One block of the split: its key, its cells and how many of them hold each class.
struct Block<'a> {
    key: String,
    members: Vec<&'a GridCell>,
    classes: BTreeMap<i32, usize>,
}

/// Running window counts of a split in progress.
struct Tally {
    /// Windows per split.
    windows: [usize; 3],
    /// Windows dealt so far.
    total: usize,
    /// Windows holding each class, per split.
    class_windows: HashMap<i32, [usize; 3]>,
}

impl Tally {
    fn add(&mut self, block: &Block<'_>, split: usize) {
        self.windows[split] += block.members.len();
        self.total += block.members.len();
        for (class, n) in &block.classes {
            self.class_windows.entry(*class).or_default()[split] += n;
        }
    }
}

/// The split (index into train, val, test) that block `block` should go to. Among the `wanted` splits
/// it prefers, in order: one with no window of `class` yet, one lacking the most of the block's other
/// classes, one with no window at all, and then the one furthest below its target share (of `class`'s
/// windows when a class is given, else of all windows) once the block is counted. Ties go to the
/// earlier split.
fn choose(
    block: &Block<'_>,
    class: Option<i32>,
    wanted: &[usize],
    fractions: [f64; 3],
    tally: &Tally,
) -> usize {
    let per_class = class.map(|c| {
        let have = tally.class_windows.get(&c).copied().unwrap_or_default();
        let size = block.classes.get(&c).copied().unwrap_or(0);
        (have, (have.iter().sum::<usize>() + size) as f64)
    });
    let mut best = wanted[0];
    let mut best_key = (false, 0, false, f64::NEG_INFINITY);
    for (n, &i) in wanted.iter().enumerate() {
        let (lacks, deficit) = match per_class {
            Some((have, after)) => (have[i] == 0, fractions[i] * after - have[i] as f64),
            None => (
                false,
                fractions[i] * (tally.total + block.members.len()) as f64 - tally.windows[i] as f64,
            ),
        };
        // The block's other classes that the split lacks too: placing them there fills those gaps.
        let gaps = block
            .classes
            .keys()
            .filter(|&&k| Some(k) != class)
            .filter(|k| tally.class_windows.get(k).is_none_or(|w| w[i] == 0))
            .count();
        let key = (lacks, gaps, tally.windows[i] == 0, deficit);
        let better = n == 0
            || (key.0, key.1, key.2) > (best_key.0, best_key.1, best_key.2)
            || ((key.0, key.1, key.2) == (best_key.0, best_key.1, best_key.2)
                && key.3 > best_key.3);
        if better {
            best = i;
            best_key = key;
        }
    }
    best
}

/// Whether every class of `classes` that was in a wanted split under `before` is still there under
/// `after`.
fn keeps_classes(
    classes: &[i32],
    holding: &BTreeMap<i32, Vec<usize>>,
    wanted: &[usize],
    before: &[usize],
    after: &[usize],
) -> bool {
    classes.iter().all(|k| {
        let blocks = holding.get(k).map_or(&[][..], Vec::as_slice);
        wanted.iter().all(|&s| {
            !blocks.iter().any(|&b| before[b] == s) || blocks.iter().any(|&b| after[b] == s)
        })
    })
}

/// Fills the gaps dealing left (a class missing from a wanted split although it is held by enough
/// blocks, because its blocks were placed for rarer classes first) by moving one block of the class
/// into the split, or by swapping it with a block of that split, whenever that takes no class out of
/// any split. Every change fills a gap and opens none, so the passes end.
fn repair(
    blocks: &[Block<'_>],
    holding: &BTreeMap<i32, Vec<usize>>,
    rarest_first: &[(bool, usize, i32)],
    wanted: &[usize],
    dealt: &mut [usize],
) {
    for &(_, _, class) in rarest_first {
        let mine = holding.get(&class).map_or(&[][..], Vec::as_slice);
        for &to in wanted {
            if mine.iter().any(|&b| dealt[b] == to) {
                continue;
            }
            let mut fixed = false;
            for &b in mine {
                // Move `b` alone, else swap it with a block of `to` that lacks the class.
                let before = dealt.to_vec();
                let partners: Vec<Option<usize>> = std::iter::once(None)
                    .chain(
                        (0..blocks.len())
                            .filter(|&o| before[o] == to && !blocks[o].classes.contains_key(&class))
                            .map(Some),
                    )
                    .collect();
                for partner in partners {
                    dealt[b] = to;
                    let mut touched: Vec<i32> = blocks[b].classes.keys().copied().collect();
                    if let Some(o) = partner {
                        dealt[o] = before[b];
                        touched.extend(blocks[o].classes.keys());
                    }
                    if keeps_classes(&touched, holding, wanted, &before, dealt) {
                        fixed = true;
                        break;
                    }
                    dealt[b] = before[b];
                    if let Some(o) = partner {
                        dealt[o] = before[o];
                    }
                }
                if fixed {
                    break;
                }
            }
        }
    }
}

/// Assigns whole blocks of `block_size × block_size` cells to splits, stratified by the cells' classes
/// (see the module documentation). With at least as many blocks as splits of positive share, every
/// such split gets at least one block; a class held by at least that many blocks normally gets a window
/// in every such split ([`missing_classes`] tells when not).
pub fn split(
    cells: &[&GridCell],
    block_size: u32,
    fractions: [f64; 3],
    seed: u64,
) -> Vec<Assignment> {
    let b = i64::from(block_size.max(1));
    let mut by_key: HashMap<String, Vec<&GridCell>> = HashMap::new();
    for c in cells {
        let key = format!(
            "{}_{}_{}",
            c.epsg,
            c.column.div_euclid(b),
            c.row.div_euclid(b)
        );
        by_key.entry(key).or_default().push(c);
    }
    let mut blocks: Vec<Block<'_>> = by_key
        .into_iter()
        .map(|(key, members)| {
            let mut classes: BTreeMap<i32, usize> = BTreeMap::new();
            for c in &members {
                for class in &c.classes {
                    *classes.entry(*class).or_default() += 1;
                }
            }
            Block {
                key,
                members,
                classes,
            }
        })
        .collect();
    blocks.sort_by(|a, b| {
        (seeded_hash(seed, &a.key), &a.key).cmp(&(seeded_hash(seed, &b.key), &b.key))
    });

    // The blocks holding each class, in block order; classes rarest first (fewest blocks, then id).
    let mut holding: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, block) in blocks.iter().enumerate() {
        for class in block.classes.keys() {
            holding.entry(*class).or_default().push(i);
        }
    }
    let mut wanted: Vec<usize> = (0..3).filter(|&i| fractions[i] > 0.0).collect();
    if wanted.is_empty() {
        wanted.push(0);
    }
    // Classes that can reach every wanted split are dealt first, rarest first (fewest blocks, then
    // id); those that cannot follow, so their blocks do not crowd out the others'.
    let mut rarest_first: Vec<(bool, usize, i32)> = holding
        .iter()
        .map(|(c, bs)| (bs.len() < wanted.len(), bs.len(), *c))
        .collect();
    rarest_first.sort_unstable();

    let mut tally = Tally {
        windows: [0; 3],
        total: 0,
        class_windows: HashMap::new(),
    };
    let mut dealt: Vec<usize> = vec![usize::MAX; blocks.len()];
    for &(_, _, class) in &rarest_first {
        for &i in holding.get(&class).into_iter().flatten() {
            if dealt[i] == usize::MAX {
                let pick = choose(&blocks[i], Some(class), &wanted, fractions, &tally);
                tally.add(&blocks[i], pick);
                dealt[i] = pick;
            }
        }
    }
    for (block, d) in blocks.iter().zip(dealt.iter_mut()) {
        if *d == usize::MAX {
            let pick = choose(block, None, &wanted, fractions, &tally);
            tally.add(block, pick);
            *d = pick;
        }
    }
    repair(&blocks, &holding, &rarest_first, &wanted, &mut dealt);

    let splits = [Split::Train, Split::Val, Split::Test];
    let mut out = Vec::with_capacity(cells.len());
    for (block, pick) in blocks.iter().zip(dealt) {
        let split = splits[pick.min(2)];
        for c in &block.members {
            out.push(Assignment {
                window_id: c.id.clone(),
                split,
                block: block.key.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.window_id.cmp(&b.window_id));
    out
}

fn split_index(s: Split) -> usize {
    match s {
        Split::Train => 0,
        Split::Val => 1,
        Split::Test => 2,
    }
}

/// The classes labelled in `cells` that have no window in some split of positive share in
/// `assignments` (windows not assigned count for no split), each with those splits, by class id. A class
/// held by fewer blocks than there are such splits always ends up here.
#[must_use]
pub fn missing_classes(
    cells: &[GridCell],
    assignments: &[Assignment],
    fractions: [f64; 3],
) -> Vec<(i32, Vec<Split>)> {
    let split_of: HashMap<&str, Split> = assignments
        .iter()
        .map(|a| (a.window_id.as_str(), a.split))
        .collect();
    let mut present: BTreeMap<i32, [bool; 3]> = BTreeMap::new();
    for c in cells {
        let split = split_of.get(c.id.as_str());
        for class in &c.classes {
            let p = present.entry(*class).or_default();
            if let Some(s) = split {
                p[split_index(*s)] = true;
            }
        }
    }
    let splits = [Split::Train, Split::Val, Split::Test];
    present
        .into_iter()
        .filter_map(|(class, p)| {
            let lacking: Vec<Split> = (0..3)
                .filter(|&i| fractions[i] > 0.0 && !p[i])
                .map(|i| splits[i])
                .collect();
            (!lacking.is_empty()).then_some((class, lacking))
        })
        .collect()
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
            classes: class_id.into_iter().collect(),
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

    /// Windows of `classes` (every class labelled in it; the first is the majority).
    fn labelled(epsg: i32, column: i64, row: i64, classes: &[i32]) -> GridCell {
        let mut c = cell(epsg, column, row, classes.first().copied());
        c.classes = classes.to_vec();
        c.classes.sort_unstable();
        c.classes.dedup();
        c
    }

    /// Which splits hold a window of each class.
    fn splits_of_classes(cells: &[GridCell], out: &[Assignment]) -> BTreeMap<i32, HashSet<Split>> {
        let split_of: HashMap<&str, Split> = out
            .iter()
            .map(|a| (a.window_id.as_str(), a.split))
            .collect();
        let mut got: BTreeMap<i32, HashSet<Split>> = BTreeMap::new();
        for c in cells {
            for class in &c.classes {
                got.entry(*class)
                    .or_default()
                    .extend(split_of.get(c.id.as_str()));
            }
        }
        got
    }

    /// A scene like the one that went wrong: one class almost everywhere, others in patches, and rare
    /// classes (water) in only a few blocks, sometimes as the minority class of a window; every class is
    /// labelled in at least `min_blocks` blocks of `block × block` cells.
    fn skewed_scene(g: &mut Gen, block: i64, min_blocks: usize) -> Vec<GridCell> {
        let (bw, bh) = (4 + g.below(6) as i64, 4 + g.below(6) as i64);
        let blocks: Vec<(i64, i64)> = (0..bw).flat_map(|x| (0..bh).map(move |y| (x, y))).collect();
        // Classes 1..=4 are each put in `min_blocks` + a few random blocks; class 0 is everywhere.
        let mut extra: HashMap<(i64, i64), Vec<i32>> = HashMap::new();
        for class in 1..=4 {
            let n = min_blocks + g.below(3) as usize * (class as usize - 1);
            let mut picked = HashSet::new();
            while picked.len() < n.min(blocks.len()) {
                picked.insert(blocks[g.below(blocks.len() as u64) as usize]);
            }
            for b in picked {
                extra.entry(b).or_default().push(class);
            }
        }
        let mut cells = Vec::new();
        for &(bx, by) in &blocks {
            let classes = extra.get(&(bx, by)).cloned().unwrap_or_default();
            for dx in 0..block {
                for dy in 0..block {
                    let (c, r) = (bx * block + dx, by * block + dy);
                    // The rare classes sit in one window of their block, beside the common class
                    // (which keeps the majority); the other windows hold the common class alone.
                    let here: Vec<i32> = if dx == 0 && dy == 0 {
                        std::iter::once(0).chain(classes.iter().copied()).collect()
                    } else {
                        vec![0]
                    };
                    cells.push(labelled(32631, c, r, &here));
                }
            }
        }
        cells
    }

    #[test]
    /// 200 generated scenes and seeds. (The dealing and repair are greedy: about one scene in 3,000 of
    /// this generator still leaves a gap that only a chain of three moves would fill; the split then
    /// reports it through `missing_classes`.)
    fn every_class_labelled_in_three_blocks_lands_in_every_split_on_generated_scenes() {
        let mut g = Gen(11);
        for case in 0..200 {
            let block = 1 + g.below(4) as i64;
            let cells = skewed_scene(&mut g, block, 3);
            let options = SplitOptions {
                block_size: block as u32,
                seed: g.next(),
                ..SplitOptions::default()
            };
            let out = sample_and_split(&cells, &options).unwrap();
            for (class, splits) in splits_of_classes(&cells, &out) {
                assert_eq!(
                    splits.len(),
                    3,
                    "case {case}: class {class} is only in {splits:?}"
                );
            }
            let fractions = options.validate().unwrap();
            assert_eq!(missing_classes(&cells, &out, fractions), []);
            // The window shares still follow the targets roughly (within a few blocks).
            let share =
                |s: Split| out.iter().filter(|a| a.split == s).count() as f64 / cells.len() as f64;
            let slack = 5.0 * (block * block) as f64 / cells.len() as f64 + 0.1;
            assert!(
                (share(Split::Train) - 0.7).abs() <= slack,
                "case {case}: train share {}",
                share(Split::Train)
            );
        }
    }

    #[test]
    fn a_class_in_fewer_blocks_than_splits_is_reported_missing_from_the_splits_it_lacks() {
        // 36 blocks of class 0; class 4 (water) in one block only, class 5 in two.
        let mut cells = Vec::new();
        for c in 0..12 {
            for r in 0..12 {
                let classes: &[i32] = match (c / 2, r / 2) {
                    (0, 0) => &[4],
                    (5, 5) | (3, 1) => &[0, 5],
                    _ => &[0],
                };
                cells.push(labelled(32631, c, r, classes));
            }
        }
        for seed in 0..20 {
            let options = SplitOptions {
                block_size: 2,
                seed,
                ..SplitOptions::default()
            };
            let out = sample_and_split(&cells, &options).unwrap();
            let got = splits_of_classes(&cells, &out);
            let missing = missing_classes(&cells, &out, options.validate().unwrap());
            assert_eq!(missing.len(), 2, "seed {seed}: {missing:?}");
            let (class, lacking) = &missing[0];
            assert_eq!(*class, 4);
            assert_eq!(lacking.len(), 2, "seed {seed}: {missing:?}");
            assert!(lacking.iter().all(|s| !got[&4].contains(s)));
            // Class 5's two blocks go to two different splits; it lacks only the third.
            assert_eq!(missing[1].0, 5);
            assert_eq!(missing[1].1.len(), 1, "seed {seed}: {missing:?}");
            assert_eq!(got[&5].len(), 2);
            assert_eq!(got[&0].len(), 3);
        }
        // A split of zero share needs no class: with only train and val, class 5 is complete.
        let options = SplitOptions {
            block_size: 2,
            fractions: [0.8, 0.2, 0.0],
            ..SplitOptions::default()
        };
        let out = sample_and_split(&cells, &options).unwrap();
        let missing = missing_classes(&cells, &out, options.validate().unwrap());
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].0, 4);
        assert_eq!(missing[0].1.len(), 1);
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
        // And with classes, which change the order blocks are dealt in.
        let mut g = Gen(3);
        let cells = skewed_scene(&mut g, 2, 3);
        let opts = SplitOptions {
            block_size: 2,
            seed: 9,
            ..SplitOptions::default()
        };
        let a = sample_and_split(&cells, &opts).unwrap();
        assert_eq!(a, sample_and_split(&cells, &opts).unwrap());
        assert_ne!(
            a,
            sample_and_split(&cells, &SplitOptions { seed: 10, ..opts }).unwrap()
        );
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
