//! The encoder input modalities of OlmoEarth v1, their band order and band sets
//! (`docs/olmoearth-v1.md` §2.1; the reference is `olmoearth_pretrain/data/constants.py`).

use crate::names::named_enum;

/// An encoder input modality. Decode-only pretraining targets (WorldCover, SRTM, …) are not inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Modality {
    /// Sentinel-2 L2A surface reflectance, 12 bands in three band sets, DN on the pre-2022 scale.
    Sentinel2L2a,
    /// Sentinel-1 GRD/RTC backscatter VV, VH in dB, one band set.
    Sentinel1,
    /// Landsat 8/9, 11 bands in two band sets, DN.
    Landsat,
}

named_enum!(Modality, "modality", [
    Sentinel2L2a => "sentinel2_l2a" | "sentinel2" | "s2",
    Sentinel1 => "sentinel1" | "s1",
    Landsat => "landsat",
]);

impl Modality {
    /// Band names in the order of the last input axis (the model's channel order).
    #[must_use]
    pub const fn bands(self) -> &'static [&'static str] {
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
    #[must_use]
    pub const fn num_bands(self) -> usize {
        self.bands().len()
    }

    /// Band sets (token groups) as index lists into [`Modality::bands`].
    #[must_use]
    pub const fn band_sets(self) -> &'static [&'static [usize]] {
        match self {
            Modality::Sentinel2L2a => &[&[0, 1, 2, 3], &[4, 5, 6, 7, 8, 9], &[10, 11]],
            Modality::Sentinel1 => &[&[0, 1]],
            Modality::Landsat => &[&[0], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]],
        }
    }

    /// Number of band sets S.
    #[must_use]
    pub const fn num_band_sets(self) -> usize {
        self.band_sets().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_sets_cover_every_band_once() {
        for &m in Modality::ALL {
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
    fn names_round_trip_aliases_parse_and_unknown_names_are_refused() {
        for &m in Modality::ALL {
            assert_eq!(m.name().parse::<Modality>(), Ok(m));
            let json = serde_json::to_string(&m).expect("serialise");
            assert_eq!(json, format!("\"{}\"", m.name()));
            assert_eq!(serde_json::from_str::<Modality>(&json).ok(), Some(m));
        }
        assert_eq!(" S2 ".parse::<Modality>(), Ok(Modality::Sentinel2L2a));
        let e = "worldcover".parse::<Modality>().unwrap_err();
        assert_eq!(e.what, "modality");
        assert!(
            e.to_string().contains("sentinel2_l2a, sentinel1, landsat"),
            "{e}"
        );
    }
}
