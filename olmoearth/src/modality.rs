//! The three encoder input modalities of OlmoEarth v1, their band order and band sets (spec §2.1).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// An encoder input modality. Decode-only pretraining targets (WorldCover, SRTM, …) are not inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Modality {
    /// Sentinel-2 L2A surface reflectance, 12 bands in three band sets.
    Sentinel2L2a,
    /// Sentinel-1 GRD VV+VH in dB, one band set.
    Sentinel1,
    /// Landsat 8/9 Collection 2 Level-1, 11 bands in two band sets.
    Landsat,
}

impl Modality {
    /// All encoder modalities, in the order their tokens are concatenated.
    pub const ALL: [Modality; 3] = [
        Modality::Sentinel2L2a,
        Modality::Sentinel1,
        Modality::Landsat,
    ];

    /// The reference name (`sentinel2_l2a`, `sentinel1`, `landsat`), also used as checkpoint key segment.
    pub fn name(self) -> &'static str {
        match self {
            Modality::Sentinel2L2a => "sentinel2_l2a",
            Modality::Sentinel1 => "sentinel1",
            Modality::Landsat => "landsat",
        }
    }

    /// Band names in the order of the last input axis.
    pub fn bands(self) -> &'static [&'static str] {
        match self {
            Modality::Sentinel2L2a => &[
                "B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09",
            ],
            Modality::Sentinel1 => &["vv", "vh"],
            Modality::Landsat => &[
                "B8", "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11",
            ],
        }
    }

    /// Number of bands (channels).
    pub fn num_bands(self) -> usize {
        self.bands().len()
    }

    /// Band indices of each band set (token group).
    pub fn band_sets(self) -> &'static [&'static [usize]] {
        match self {
            Modality::Sentinel2L2a => &[&[0, 1, 2, 3], &[4, 5, 6, 7, 8, 9], &[10, 11]],
            Modality::Sentinel1 => &[&[0, 1]],
            Modality::Landsat => &[&[0], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]],
        }
    }

    /// Number of band sets S.
    pub fn num_band_sets(self) -> usize {
        self.band_sets().len()
    }
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Modality {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Modality::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::UnknownModality(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_sets_cover_every_band_once() {
        for m in Modality::ALL {
            let mut all: Vec<usize> = m
                .band_sets()
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            all.sort_unstable();
            assert_eq!(all, (0..m.num_bands()).collect::<Vec<_>>(), "{m}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for m in Modality::ALL {
            assert_eq!(m.name().parse::<Modality>().ok(), Some(m));
        }
        assert!(matches!(
            "worldcover".parse::<Modality>(),
            Err(Error::UnknownModality(_))
        ));
    }
}
