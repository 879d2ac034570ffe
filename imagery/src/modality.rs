//! Modalities (band order, band sets, units) and catalogue profiles (collection names, asset keys).
//!
//! Band order and band sets follow OlmoEarth v1 (`olmoearth_pretrain/data/constants.py`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;

pub use groundwork_types::Modality;

impl From<groundwork_types::UnknownName> for Error {
    fn from(e: groundwork_types::UnknownName) -> Self {
        Error::InvalidRequest(e.to_string())
    }
}

/// Which catalogue conventions to expect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Profile {
    /// Element 84 Earth Search v1 (`sentinel-2-l2a` with asset keys `blue`, `red`, `scl`, …).
    ///
    /// Its `sentinel-1-grd` holds uncalibrated GRD amplitude in radar geometry (read through GCPs);
    /// the Planetary Computer's `sentinel-1-rtc` is the better Sentinel-1 input for the model. Its
    /// `landsat-c2-l2` lacks the pan, cirrus and second thermal bands: those come out NaN, and the pan
    /// band set is marked missing.
    EarthSearch,
    /// Microsoft Planetary Computer (asset keys `B02`, `SCL`, …; assets signed with a SAS token).
    PlanetaryComputer {
        /// Base of the token endpoint; `{endpoint}/api/sas/v1/token/{collection}` is called.
        sas_endpoint: String,
    },
    /// A user-defined mapping.
    Custom(CustomProfile),
}

/// The default Planetary Computer endpoint hosting the SAS token API.
pub const PLANETARY_COMPUTER: &str = "https://planetarycomputer.microsoft.com";

impl Profile {
    /// The Planetary Computer profile with the public token endpoint.
    pub fn planetary_computer() -> Profile {
        Profile::PlanetaryComputer {
            sas_endpoint: PLANETARY_COMPUTER.to_string(),
        }
    }

    /// The profile's conventions for one modality.
    pub fn spec(&self, m: Modality) -> ModalitySpec {
        match self {
            Profile::EarthSearch => earth_search(m),
            Profile::PlanetaryComputer { .. } => planetary_computer(m),
            Profile::Custom(c) => c
                .modalities
                .get(&m)
                .cloned()
                .unwrap_or_else(|| earth_search(m)),
        }
    }
}

/// A custom profile: per modality, the collection and the asset key of each band.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CustomProfile {
    /// Conventions per modality; modalities not listed fall back to Earth Search's.
    pub modalities: BTreeMap<Modality, ModalitySpec>,
}

/// How one modality appears in a catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModalitySpec {
    /// The STAC collection id.
    pub collection: String,
    /// Asset key per band, in [`Modality::bands`] order.
    pub assets: Vec<String>,
    /// Asset key of the per-pixel quality layer: the scene classification (Sentinel-2) or
    /// `QA_PIXEL` (Landsat Collection 2; optional in an item).
    #[serde(default)]
    pub scl_asset: Option<String>,
    /// Whether S1 assets hold linear backscatter (converted to dB) rather than dB.
    #[serde(default = "yes")]
    pub s1_linear: bool,
    /// How Sentinel-2 DN are brought to the pre-2022 (baseline < 04.00) scale.
    #[serde(default)]
    pub harmonize: Harmonize,
}

/// Sentinel-2 harmonisation policy. Processing baseline 04.00 (2022-01-25) added `BOA_ADD_OFFSET = -1000`
/// to L2A DN; OlmoEarth was trained on harmonised values (Planetary Computer `harmonize: true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Harmonize {
    /// Subtract 1000 (clipping at 0) from scenes with `s2:processing_baseline` ≥ 04.00, unless the item
    /// says `earthsearch:boa_offset_applied: true` (what the reference does for Planetary Computer).
    #[default]
    ByBaseline,
    /// Never subtract: the catalogue's COGs are already harmonised. This is the case for Earth Search's
    /// `sentinel-2-l2a` (`s3://sentinel-cogs`), whose `boa_offset_applied` flag is known to be unreliable;
    /// rslearn also reads those COGs as they are.
    Never,
}

fn yes() -> bool {
    true
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

fn earth_search(m: Modality) -> ModalitySpec {
    match m {
        Modality::Sentinel2L2a => ModalitySpec {
            collection: "sentinel-2-l2a".into(),
            assets: strings(&[
                "blue", "green", "red", "nir", "rededge1", "rededge2", "rededge3", "nir08",
                "swir16", "swir22", "coastal", "nir09",
            ]),
            scl_asset: Some("scl".into()),
            s1_linear: true,
            harmonize: Harmonize::Never,
        },
        Modality::Sentinel1 => ModalitySpec {
            collection: "sentinel-1-grd".into(),
            assets: strings(&["vv", "vh"]),
            scl_asset: None,
            s1_linear: true,
            harmonize: Harmonize::ByBaseline,
        },
        Modality::Landsat => ModalitySpec {
            collection: "landsat-c2-l2".into(),
            assets: strings(&[
                "pan", "coastal", "blue", "green", "red", "nir08", "swir16", "swir22", "cirrus",
                "lwir11", "lwir12",
            ]),
            scl_asset: Some("qa_pixel".into()),
            s1_linear: true,
            harmonize: Harmonize::ByBaseline,
        },
    }
}

fn planetary_computer(m: Modality) -> ModalitySpec {
    match m {
        Modality::Sentinel2L2a => ModalitySpec {
            collection: "sentinel-2-l2a".into(),
            assets: strings(Modality::Sentinel2L2a.bands()),
            scl_asset: Some("SCL".into()),
            s1_linear: true,
            harmonize: Harmonize::ByBaseline,
        },
        Modality::Sentinel1 => ModalitySpec {
            collection: "sentinel-1-rtc".into(),
            assets: strings(&["vv", "vh"]),
            scl_asset: None,
            s1_linear: true,
            harmonize: Harmonize::ByBaseline,
        },
        Modality::Landsat => ModalitySpec {
            collection: "landsat-c2-l2".into(),
            assets: strings(&[
                "pan", "coastal", "blue", "green", "red", "nir08", "swir16", "swir22", "cirrus",
                "lwir11", "lwir12",
            ]),
            scl_asset: Some("qa_pixel".into()),
            s1_linear: true,
            harmonize: Harmonize::ByBaseline,
        },
    }
}

/// Sentinel-2 scene classification classes that are not clear ground: no data, saturated/defective,
/// cloud shadow, unclassified-cloud medium/high probability, thin cirrus, snow/ice.
pub const SCL_INVALID: [u8; 7] = [0, 1, 3, 8, 9, 10, 11];

/// Whether an SCL class counts as a clear observation.
pub fn scl_is_clear(class: u8) -> bool {
    !SCL_INVALID.contains(&class)
}

/// Landsat Collection 2 `QA_PIXEL` bits that make a pixel unusable: fill (0), dilated cloud (1),
/// cirrus (2), cloud (3), cloud shadow (4) and snow (5), the same kinds of pixel Sentinel-2's
/// [`SCL_INVALID`] leaves out.
pub const LANDSAT_QA_INVALID: u16 = 0b11_1111;

/// Whether a Landsat `QA_PIXEL` value is a clear observation.
pub fn landsat_qa_is_clear(qa: u16) -> bool {
    qa & LANDSAT_QA_INVALID == 0
}

/// Landsat 8 OLI/TIRS Level-1 rescaling, the units OlmoEarth's Landsat input was trained in
/// (Collection 2 Level-1 DN): reflectance = DN · 2.0e-5 − 0.1 for the reflective bands; radiance =
/// DN · 3.342e-4 + 0.1 for the thermal bands, with brightness temperature `K2 / ln(K1 / L + 1)`.
pub mod landsat_l1 {
    /// `REFLECTANCE_MULT_BAND_n`.
    pub const REFLECTANCE_MULT: f64 = 2.0e-5;
    /// `REFLECTANCE_ADD_BAND_n`.
    pub const REFLECTANCE_ADD: f64 = -0.1;
    /// `RADIANCE_MULT_BAND_10/11`.
    pub const RADIANCE_MULT: f64 = 3.342e-4;
    /// `RADIANCE_ADD_BAND_10/11`.
    pub const RADIANCE_ADD: f64 = 0.1;
    /// `K1_CONSTANT_BAND_10`, `K2_CONSTANT_BAND_10`.
    pub const B10: (f64, f64) = (774.8853, 1321.0789);
    /// `K1_CONSTANT_BAND_11`, `K2_CONSTANT_BAND_11`.
    pub const B11: (f64, f64) = (480.8883, 1201.1442);
}

/// Landsat Collection 2 Level-2 scale factors (used when an asset's `raster:bands` gives none):
/// surface reflectance = DN · 2.75e-5 − 0.2; surface temperature (K) = DN · 0.00341802 + 149.
pub mod landsat_l2 {
    /// Surface reflectance `(scale, offset)`.
    pub const REFLECTANCE: (f64, f64) = (2.75e-5, -0.2);
    /// Surface temperature `(scale, offset)`, kelvin.
    pub const TEMPERATURE: (f64, f64) = (0.003_418_02, 149.0);
}

/// How one band's stored values become the units the model expects.
///
/// OlmoEarth's Landsat input is Collection 2 Level-1 DN, while the public catalogues serve Level-2
/// (surface reflectance and surface temperature). A Level-2 value is brought to physical units with
/// its scale and offset, then to the Level-1 DN that would hold the same physical value. This puts
/// Level-2 values on the scale and in the ranges of the model's normalisation statistics (reflectance
/// 0.1 → about 10,000; 282 K → about 21,300); what remains is the difference between surface and
/// top-of-atmosphere values, which atmospheric correction removed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Rescale {
    /// Level-2 surface reflectance to Level-1 reflective DN.
    Reflectance {
        /// Scale of the stored value.
        scale: f64,
        /// Offset of the stored value.
        offset: f64,
    },
    /// Level-2 surface temperature (kelvin) to Level-1 thermal DN of the band with Planck constants
    /// `k1`, `k2`.
    Temperature {
        /// Scale of the stored value.
        scale: f64,
        /// Offset of the stored value.
        offset: f64,
        /// `K1_CONSTANT`.
        k1: f64,
        /// `K2_CONSTANT`.
        k2: f64,
    },
}

impl Rescale {
    /// The value in the model's units; at least 1 (Level-1 DN 0 is fill).
    #[must_use]
    pub fn apply(self, v: f32) -> f32 {
        let dn = match self {
            Rescale::Reflectance { scale, offset } => {
                let reflectance = f64::from(v) * scale + offset;
                (reflectance - landsat_l1::REFLECTANCE_ADD) / landsat_l1::REFLECTANCE_MULT
            }
            Rescale::Temperature {
                scale,
                offset,
                k1,
                k2,
            } => {
                let kelvin = (f64::from(v) * scale + offset).max(1.0);
                let radiance = k1 / ((k2 / kelvin).exp() - 1.0);
                (radiance - landsat_l1::RADIANCE_ADD) / landsat_l1::RADIANCE_MULT
            }
        };
        dn.clamp(1.0, 65_535.0) as f32
    }

    /// The rescaling of Landsat band `index` (in [`Modality::bands`] order) for a Level-2 asset with
    /// the given `raster:bands` scale and offset (the Collection 2 defaults when absent).
    #[must_use]
    pub fn landsat_level2(index: usize, scale_offset: Option<(f64, f64)>) -> Rescale {
        let thermal = match Modality::Landsat.bands().get(index).copied() {
            Some("B10") => Some(landsat_l1::B10),
            Some("B11") => Some(landsat_l1::B11),
            _ => None,
        };
        match thermal {
            Some((k1, k2)) => {
                let (scale, offset) = scale_offset.unwrap_or(landsat_l2::TEMPERATURE);
                Rescale::Temperature {
                    scale,
                    offset,
                    k1,
                    k2,
                }
            }
            None => {
                let (scale, offset) = scale_offset.unwrap_or(landsat_l2::REFLECTANCE);
                Rescale::Reflectance { scale, offset }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landsat_level2_values_land_in_the_level1_ranges_the_model_was_normalised_with() {
        // Reflectance 0.1 stored as Level-2 DN (0.1 + 0.2) / 2.75e-5 ≈ 10909 is Level-1 DN 10000.
        let blue = Rescale::landsat_level2(2, None);
        assert!((blue.apply(10_909.09) - 10_000.0).abs() < 0.5);
        // A bright surface (0.3) and a dark one (0.02).
        assert!((blue.apply(18_181.82) - 20_000.0).abs() < 0.5);
        assert!((blue.apply(8_000.0) - 6_000.0).abs() < 0.5);
        // Negative reflectance (over-corrected water) stays a valid DN.
        assert_eq!(blue.apply(1.0), 1.0);
        // B10 at 282 K: (282 − 149) / 0.00341802 ≈ 38912 stored; Level-1 DN about 21,300, the mean
        // of the model's B10 statistics (21,347).
        let b10 = Rescale::landsat_level2(9, None);
        assert!(
            (b10.apply(38_912.0) - 21_300.0).abs() < 150.0,
            "{}",
            b10.apply(38_912.0)
        );
        // Warmer is brighter.
        assert!(b10.apply(40_000.0) > b10.apply(38_912.0));
        // An asset's own scale and offset win over the defaults.
        let r = Rescale::landsat_level2(4, Some((1e-4, 0.0)));
        assert!((r.apply(1000.0) - 10_000.0).abs() < 0.5);
        assert!(landsat_qa_is_clear(0b0100_0000)); // clear bit only
        assert!(landsat_qa_is_clear(0b1000_0000)); // water
        assert!(!landsat_qa_is_clear(1)); // fill
        assert!(!landsat_qa_is_clear(0b1000)); // cloud
        assert!(!landsat_qa_is_clear(0b1_0000)); // shadow
        assert!(!landsat_qa_is_clear(0b10)); // dilated cloud
    }

    #[test]
    fn every_profile_maps_every_band() {
        for p in [Profile::EarthSearch, Profile::planetary_computer()] {
            for &m in Modality::ALL {
                assert_eq!(p.spec(m).assets.len(), m.bands().len(), "{p:?} {m}");
            }
        }
        assert_eq!(Modality::Sentinel2L2a.band_sets().len(), 3);
        assert_eq!(Modality::Landsat.band_sets().len(), 2);
        assert_eq!(
            "sentinel2_l2a".parse::<Modality>().unwrap(),
            Modality::Sentinel2L2a
        );
    }
}
