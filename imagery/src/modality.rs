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
    /// Asset key of the scene classification layer (Sentinel-2 only).
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
            scl_asset: None,
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
            scl_asset: None,
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

#[cfg(test)]
mod tests {
    use super::*;

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
