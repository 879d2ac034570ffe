//! Accuracy assessment and area estimation of a class map, following Olofsson et al. (2014), "Good
//! practices for estimating area and assessing accuracy of land change", Remote Sensing of
//! Environment 148, 42–57 (and Olofsson et al., 2013, for the estimators).
//!
//! The design is a stratified random sample with the map classes as strata: [`sample_size`] (eq. 13)
//! gives the sample size for a target standard error of overall accuracy, [`allocate`] spreads it over
//! the strata with a minimum per stratum, [`count_classes`] and [`sample_classes`] read the class
//! raster, and [`estimate`] turns the reference labels of the sample into the error matrix in area
//! proportions, overall, user's and producer's accuracies and the error-adjusted area of each class,
//! each with a 95 % confidence interval (eqs. 2–12 of the 2014 paper).

use crate::{Error, Result};
use gdal::Dataset;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The normal quantile of a two-sided 95 % confidence interval.
pub const Z95: f64 = 1.96;

/// An estimate with the half-width of its 95 % confidence interval (`estimate ± half_width`);
/// `half_width` is `None` where the variance is undefined (a stratum with fewer than two sample units).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// The estimate.
    pub estimate: f64,
    /// Half the width of the 95 % confidence interval.
    pub half_width: Option<f64>,
}

impl Interval {
    fn new(estimate: f64, variance: Option<f64>) -> Self {
        Self {
            estimate,
            half_width: variance.map(|v| Z95 * v.max(0.0).sqrt()),
        }
    }

    fn scaled(self, k: f64) -> Self {
        Self {
            estimate: self.estimate * k,
            half_width: self.half_width.map(|h| h * k),
        }
    }
}

/// Sample size for a stratified random sample (Olofsson et al. 2014, eq. 13): `(Σ W_i S_i / S(Ô))²`,
/// where `W_i` is the mapped area proportion of stratum `i`, `S_i = sqrt(U_i (1 − U_i))` with `U_i`
/// its expected user's accuracy, and `S(Ô)` the target standard error of overall accuracy.
#[must_use]
pub fn sample_size(weights: &[f64], expected_users: &[f64], target_se: f64) -> u64 {
    let s: f64 = weights
        .iter()
        .zip(expected_users)
        .map(|(w, u)| w * (u * (1.0 - u)).max(0.0).sqrt())
        .sum();
    if target_se <= 0.0 {
        return 0;
    }
    ((s / target_se).powi(2)).ceil() as u64
}

/// Spreads `total` sample units over strata of `pixels` mapped pixels: each stratum first gets
/// `min_per_stratum` (the paper's advice, so rare classes get enough units for their user's accuracy),
/// and what is left of `total` is shared in proportion to area; no stratum gets more units than it has
/// pixels, and empty strata get none. The total is `total`, or the sum of the minima when that is more.
#[must_use]
pub fn allocate(total: u64, pixels: &[u64], min_per_stratum: u64) -> Vec<u64> {
    let all: u64 = pixels.iter().sum();
    if all == 0 {
        return vec![0; pixels.len()];
    }
    let minima: Vec<u64> = pixels.iter().map(|&p| min_per_stratum.min(p)).collect();
    let rest = total.saturating_sub(minima.iter().sum());
    pixels
        .iter()
        .zip(&minima)
        .map(|(&p, &m)| {
            let share = (rest as f64 * p as f64 / all as f64).round() as u64;
            (m + share).min(p)
        })
        .collect()
}

/// The mapped pixels of each class of a class raster (band 1, nodata excluded), the pixel area in m²
/// and the raster's EPSG code.
#[derive(Debug, Clone)]
pub struct ClassCounts {
    /// Pixels per class value.
    pub pixels: BTreeMap<u8, u64>,
    /// Area of one pixel, m².
    pub pixel_area_m2: f64,
    /// CRS of the raster.
    pub epsg: u32,
}

/// One sampled pixel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SamplePixel {
    /// The map class (the stratum).
    pub class: u8,
    /// Column and row in the raster.
    pub col: u32,
    /// Row.
    pub row: u32,
    /// Pixel centre in the raster's CRS.
    pub x: f64,
    /// Pixel centre in the raster's CRS.
    pub y: f64,
    /// Pixel centre, EPSG:4326.
    pub lon: f64,
    /// Pixel centre, EPSG:4326.
    pub lat: f64,
}

/// Rows read at a time.
const ROWS_PER_READ: usize = 256;

/// A class raster opened for reading: the dataset, its geotransform, size, nodata value and EPSG code.
struct ClassRaster {
    ds: Dataset,
    gt: [f64; 6],
    size: (usize, usize),
    nodata: Option<u8>,
    epsg: u32,
}

fn open_class_band(path: &Path) -> Result<ClassRaster> {
    let ds = Dataset::open(path).map_err(Error::gdal(format!("opening {}", path.display())))?;
    let gt = ds
        .geo_transform()
        .map_err(Error::gdal("reading the geotransform"))?;
    let size = ds.raster_size();
    let band = ds
        .rasterband(1)
        .map_err(Error::gdal("opening the class band"))?;
    let nodata = band
        .no_data_value()
        .and_then(|v| (0.0..=255.0).contains(&v).then_some(v as u8));
    let epsg = ds
        .spatial_ref()
        .ok()
        .and_then(|s| s.auth_code().ok())
        .and_then(|c| u32::try_from(c).ok())
        .ok_or_else(|| Error::InvalidRequest("the class raster has no EPSG code".into()))?;
    Ok(ClassRaster {
        ds,
        gt,
        size,
        nodata,
        epsg,
    })
}

/// Visits every valid pixel of band 1 in raster order.
fn for_each_pixel(
    ds: &Dataset,
    (w, h): (usize, usize),
    nodata: Option<u8>,
    mut f: impl FnMut(u8, usize, usize),
) -> Result<()> {
    let band = ds
        .rasterband(1)
        .map_err(Error::gdal("opening the class band"))?;
    let mut row = 0;
    while row < h {
        let rows = ROWS_PER_READ.min(h - row);
        let buf = band
            .read_as::<u8>(
                (0, isize::try_from(row).unwrap_or(isize::MAX)),
                (w, rows),
                (w, rows),
                None,
            )
            .map_err(Error::gdal("reading the class raster"))?;
        for (i, &v) in buf.data().iter().enumerate() {
            if Some(v) != nodata {
                f(v, i % w, row + i / w);
            }
        }
        row += rows;
    }
    Ok(())
}

/// Counts the mapped pixels of each class.
pub fn count_classes(path: &Path) -> Result<ClassCounts> {
    let ClassRaster {
        ds,
        gt,
        size,
        nodata,
        epsg,
    } = open_class_band(path)?;
    let mut pixels = BTreeMap::new();
    for_each_pixel(&ds, size, nodata, |v, _, _| {
        *pixels.entry(v).or_insert(0u64) += 1;
    })?;
    Ok(ClassCounts {
        pixels,
        pixel_area_m2: (gt[1] * gt[5] - gt[2] * gt[4]).abs(),
        epsg,
    })
}

/// Draws `sizes[class]` pixels of each class uniformly at random without replacement (reservoir
/// sampling, reproducible from `seed`), returned in random order (so a unit's place in the list says
/// nothing of its class).
pub fn sample_classes(
    path: &Path,
    sizes: &BTreeMap<u8, u64>,
    seed: u64,
) -> Result<Vec<SamplePixel>> {
    let ClassRaster {
        ds,
        gt,
        size,
        nodata,
        epsg,
    } = open_class_band(path)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut seen: BTreeMap<u8, u64> = BTreeMap::new();
    let mut picked: BTreeMap<u8, Vec<(usize, usize)>> = BTreeMap::new();
    for_each_pixel(&ds, size, nodata, |v, col, row| {
        let Some(&k) = sizes.get(&v) else { return };
        if k == 0 {
            return;
        }
        let n = seen.entry(v).or_insert(0);
        *n += 1;
        let chosen = picked.entry(v).or_default();
        if (chosen.len() as u64) < k {
            chosen.push((col, row));
        } else {
            let j = rng.random_range(0..*n);
            if j < k {
                chosen[usize::try_from(j).unwrap_or(0)] = (col, row);
            }
        }
    })?;
    let ct = crate::grid::transform(epsg, 4326)?;
    let mut out = Vec::new();
    for (class, mut cells) in picked {
        cells.sort_by_key(|&(c, r)| (r, c));
        for (col, row) in cells {
            let (cx, cy) = (col as f64 + 0.5, row as f64 + 0.5);
            let x = gt[0] + cx * gt[1] + cy * gt[2];
            let y = gt[3] + cx * gt[4] + cy * gt[5];
            let (mut xs, mut ys) = ([x], [y]);
            ct.transform_coords(&mut xs, &mut ys, &mut [])
                .map_err(Error::gdal("transforming a sample point to EPSG:4326"))?;
            out.push(SamplePixel {
                class,
                col: u32::try_from(col).unwrap_or(u32::MAX),
                row: u32::try_from(row).unwrap_or(u32::MAX),
                x,
                y,
                lon: xs[0],
                lat: ys[0],
            });
        }
    }
    out.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_5eed));
    Ok(out)
}

/// What [`estimate`] reports, classes in the order given (index `i` is stratum and reference class `i`).
#[derive(Debug, Clone, Serialize)]
pub struct Estimates {
    /// Sample counts: `counts[i][j]` units mapped as `i` whose reference class is `j`.
    pub counts: Vec<Vec<u64>>,
    /// The error matrix in estimated area proportions, `p̂_ij = W_i n_ij / n_i·` (eq. 2).
    pub proportions: Vec<Vec<f64>>,
    /// Mapped area proportion of each stratum, `W_i`.
    pub weights: Vec<f64>,
    /// Overall accuracy (eq. 1, with its variance from eq. 5).
    pub overall: Interval,
    /// User's accuracy of each class (eq. 2/6); `None` for a stratum without sample units.
    pub users: Vec<Option<Interval>>,
    /// Producer's accuracy of each class (eq. 3/7); `None` when no unit's reference is the class.
    pub producers: Vec<Option<Interval>>,
    /// Estimated area proportion of each class, `p̂_·j` (eq. 9/10).
    pub area_proportion: Vec<Interval>,
    /// Error-adjusted area of each class, ha (eq. 11/12).
    pub area_ha: Vec<Interval>,
    /// Mapped area of each class, ha.
    pub mapped_ha: Vec<f64>,
}

/// Stratified estimators of accuracy and area (Olofsson et al. 2014, section 5): `mapped_pixels[i]`
/// pixels are mapped as class `i` (the strata), `counts[i][j]` sample units of stratum `i` have
/// reference class `j`, and a pixel covers `pixel_area_m2`. Confidence intervals are `± 1.96 SE`.
pub fn estimate(
    mapped_pixels: &[u64],
    counts: &[Vec<u64>],
    pixel_area_m2: f64,
) -> Result<Estimates> {
    let q = mapped_pixels.len();
    if counts.len() != q || counts.iter().any(|r| r.len() != q) {
        return Err(Error::InvalidRequest(format!(
            "the sample counts must be a {q} × {q} matrix"
        )));
    }
    let total: f64 = mapped_pixels.iter().map(|&p| p as f64).sum();
    if total <= 0.0 {
        return Err(Error::InvalidRequest("the map has no mapped pixels".into()));
    }
    let a: Vec<f64> = mapped_pixels.iter().map(|&p| p as f64).collect();
    let w: Vec<f64> = a.iter().map(|p| p / total).collect();
    let n: Vec<f64> = counts
        .iter()
        .map(|r| r.iter().map(|&c| c as f64).sum())
        .collect();
    let nij = |i: usize, j: usize| counts[i][j] as f64;
    // p̂_ij = W_i n_ij / n_i· (a stratum without units contributes nothing).
    let p: Vec<Vec<f64>> = (0..q)
        .map(|i| {
            (0..q)
                .map(|j| {
                    if n[i] > 0.0 {
                        w[i] * nij(i, j) / n[i]
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let col: Vec<f64> = (0..q).map(|j| (0..q).map(|i| p[i][j]).sum()).collect();
    // Variances need at least two units in a stratum.
    let defined = |i: usize| n[i] > 1.0;
    let users_acc: Vec<Option<f64>> = (0..q)
        .map(|i| (n[i] > 0.0).then(|| nij(i, i) / n[i]))
        .collect();

    let overall_est: f64 = (0..q).map(|i| p[i][i]).sum();
    let overall_var = (0..q).all(|i| n[i] == 0.0 || defined(i)).then(|| {
        (0..q)
            .filter(|&i| n[i] > 0.0)
            .map(|i| {
                let u = users_acc[i].unwrap_or(0.0);
                w[i] * w[i] * u * (1.0 - u) / (n[i] - 1.0)
            })
            .sum::<f64>()
    });

    let users = (0..q)
        .map(|i| {
            users_acc[i].map(|u| Interval::new(u, defined(i).then(|| u * (1.0 - u) / (n[i] - 1.0))))
        })
        .collect();

    // Estimated pixel count of reference class j: N̂_·j = Σ_i (N_i / n_i·) n_ij.
    let producers = (0..q)
        .map(|j| {
            if col[j] <= 0.0 {
                return None;
            }
            let pa = p[j][j] / col[j];
            let nj: f64 = (0..q)
                .filter(|&i| n[i] > 0.0)
                .map(|i| a[i] / n[i] * nij(i, j))
                .sum();
            let var = (0..q).all(|i| n[i] == 0.0 || defined(i)).then(|| {
                let uj = users_acc[j].unwrap_or(0.0);
                let first = if n[j] > 1.0 {
                    a[j] * a[j] * (1.0 - pa).powi(2) * uj * (1.0 - uj) / (n[j] - 1.0)
                } else {
                    0.0
                };
                let second: f64 = (0..q)
                    .filter(|&i| i != j && n[i] > 1.0)
                    .map(|i| {
                        let f = nij(i, j) / n[i];
                        a[i] * a[i] * f * (1.0 - f) / (n[i] - 1.0)
                    })
                    .sum();
                (first + pa * pa * second) / (nj * nj)
            });
            Some(Interval::new(pa, var))
        })
        .collect();

    let area_proportion: Vec<Interval> = (0..q)
        .map(|j| {
            let var = (0..q).all(|i| n[i] == 0.0 || defined(i)).then(|| {
                (0..q)
                    .filter(|&i| n[i] > 1.0)
                    .map(|i| {
                        let f = nij(i, j) / n[i];
                        w[i] * w[i] * f * (1.0 - f) / (n[i] - 1.0)
                    })
                    .sum::<f64>()
            });
            Interval::new(col[j], var)
        })
        .collect();
    let total_ha = total * pixel_area_m2 / 10_000.0;
    Ok(Estimates {
        counts: counts.to_vec(),
        proportions: p,
        weights: w,
        overall: Interval::new(overall_est, overall_var),
        users,
        producers,
        area_ha: area_proportion.iter().map(|i| i.scaled(total_ha)).collect(),
        area_proportion,
        mapped_ha: a.iter().map(|p| p * pixel_area_m2 / 10_000.0).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Olofsson et al. (2014), section 5 (Table 8): four strata of a Landsat
    /// change map (30 m pixels) and 640 sample units.
    fn paper() -> Estimates {
        let mapped = [200_000, 150_000, 3_200_000, 6_450_000];
        let counts = vec![
            vec![66, 0, 5, 4],
            vec![0, 55, 8, 12],
            vec![1, 0, 153, 11],
            vec![2, 1, 9, 313],
        ];
        estimate(&mapped, &counts, 900.0).expect("estimates")
    }

    fn round(v: f64, digits: i32) -> f64 {
        let k = 10f64.powi(digits);
        (v * k).round() / k
    }

    #[test]
    fn the_worked_example_of_olofsson_2014_is_reproduced_to_the_printed_digits() {
        let e = paper();
        // Error-adjusted areas (ha) and their 95 % confidence intervals, as printed (p. 54).
        let areas: Vec<(f64, f64)> = e
            .area_ha
            .iter()
            .map(|i| (i.estimate.round(), i.half_width.expect("a CI").round()))
            .collect();
        assert_eq!(
            areas,
            [
                (21_158.0, 6_158.0),
                (11_686.0, 3_756.0),
                (285_770.0, 15_510.0),
                (581_386.0, 16_282.0)
            ]
        );
        // Mapped areas: 18,000, 13,500, 288,000 and 580,500 ha.
        assert_eq!(e.mapped_ha, [18_000.0, 13_500.0, 288_000.0, 580_500.0]);
        // Accuracies with their 95 % confidence intervals, to two decimals.
        let two = |i: Option<Interval>| {
            let i = i.expect("an estimate");
            (round(i.estimate, 2), round(i.half_width.expect("a CI"), 2))
        };
        assert_eq!(
            e.users.iter().map(|u| two(*u)).collect::<Vec<_>>(),
            [(0.88, 0.07), (0.73, 0.10), (0.93, 0.04), (0.96, 0.02)]
        );
        assert_eq!(
            e.producers.iter().map(|p| two(*p)).collect::<Vec<_>>(),
            [(0.75, 0.21), (0.85, 0.25), (0.93, 0.03), (0.96, 0.02)]
        );
        assert_eq!(two(Some(e.overall)), (0.95, 0.02));
        // The error matrix in area proportions: rows sum to the strata's weights.
        for (row, w) in e.proportions.iter().zip(&e.weights) {
            assert!((row.iter().sum::<f64>() - w).abs() < 1e-12);
        }
        assert!((round(e.proportions[0][0], 4) - 0.0176).abs() < 1e-12);
    }

    #[test]
    fn sample_size_and_allocation_follow_the_papers_guidance() {
        // Eq. 13 with the paper's conjectured user's accuracies and S(Ô) = 0.01: n ≈ 641.
        let w = [0.02, 0.015, 0.32, 0.645];
        let n = sample_size(&w, &[0.7, 0.6, 0.9, 0.95], 0.01);
        assert!((635..=645).contains(&n), "{n}");
        // Every stratum gets its minimum, the rest follows area; the total is kept.
        let sizes = allocate(n, &[200_000, 150_000, 3_200_000, 6_450_000], 50);
        assert!(sizes[0] >= 50 && sizes[1] >= 50, "{sizes:?}");
        assert!(sizes[0] < 70 && sizes[3] > sizes[2], "{sizes:?}");
        assert!(
            sizes.iter().sum::<u64>().abs_diff(n) <= 2,
            "{sizes:?} vs {n}"
        );
        // No stratum gets more units than pixels; minima win over a smaller total.
        assert_eq!(allocate(100, &[3, 1000], 50), [3, 97]);
        assert_eq!(allocate(10, &[100, 100], 50), [50, 50]);
        assert_eq!(allocate(10, &[0, 100], 5), [0, 10]);
    }

    #[test]
    fn a_stratum_without_units_leaves_its_intervals_undefined_not_wrong() {
        let e = estimate(&[100, 100], &[vec![10, 0], vec![0, 0]], 100.0).expect("estimates");
        assert_eq!(e.users[1], None);
        assert!(e.producers[1].is_none());
        // A perfect sample of one stratum: accuracy 1 with a zero-width interval.
        assert_eq!(e.users[0].map(|u| u.estimate), Some(1.0));
        assert!(estimate(&[1, 2], &[vec![1]], 1.0).is_err());
    }

    #[test]
    fn a_class_raster_is_counted_and_sampled_without_replacement_reproducibly() {
        let dir = tempfile::tempdir().expect("a folder");
        let path = dir.path().join("class.tif");
        // 40 × 40 pixels of 10 m: class 1 on the left half, class 2 on the right, a nodata row.
        let (w, h) = (40usize, 40usize);
        let data: Vec<u8> = (0..w * h)
            .map(|i| {
                if i / w == 0 {
                    crate::publish::NODATA_U8
                } else if i % w < 20 {
                    1
                } else {
                    2
                }
            })
            .collect();
        crate::demo::write_cog::<u8>(
            &path,
            &data,
            w,
            h,
            [500_000.0, 10.0, 0.0, 5_000_000.0, 0.0, -10.0],
            32633,
            Some(f64::from(crate::publish::NODATA_U8)),
        )
        .expect("a COG");
        let counts = count_classes(&path).expect("counts");
        assert_eq!(counts.pixels, BTreeMap::from([(1, 780), (2, 780)]));
        assert_eq!(counts.pixel_area_m2, 100.0);
        assert_eq!(counts.epsg, 32633);
        let sizes = BTreeMap::from([(1, 30), (2, 5)]);
        let a = sample_classes(&path, &sizes, 7).expect("a sample");
        let b = sample_classes(&path, &sizes, 7).expect("a sample");
        assert_eq!(a, b);
        assert_eq!(a.iter().filter(|s| s.class == 1).count(), 30);
        assert_eq!(a.iter().filter(|s| s.class == 2).count(), 5);
        let mut cells: Vec<(u32, u32)> = a.iter().map(|s| (s.col, s.row)).collect();
        cells.sort_unstable();
        cells.dedup();
        assert_eq!(cells.len(), 35, "drawn without replacement");
        for s in &a {
            assert!(s.row >= 1, "nodata is never drawn");
            assert_eq!(s.class, if s.col < 20 { 1 } else { 2 });
            assert!((s.x - (500_000.0 + (f64::from(s.col) + 0.5) * 10.0)).abs() < 1e-6);
            assert!(
                (14.9..15.1).contains(&s.lon) && (45.0..45.2).contains(&s.lat),
                "{s:?}"
            );
        }
        assert_ne!(a, sample_classes(&path, &sizes, 8).expect("a sample"));
    }
}
