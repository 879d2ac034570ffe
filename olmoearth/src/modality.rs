//! The three encoder input modalities of OlmoEarth v1, their band order and band sets (spec §2.1): the
//! shared [`Modality`] of `groundwork-types`.

pub use groundwork_types::Modality;

use crate::error::Error;

impl From<groundwork_types::UnknownName> for Error {
    fn from(e: groundwork_types::UnknownName) -> Self {
        match e.what {
            "model size" => Error::UnknownSize(e.value),
            _ => Error::UnknownModality(e.value),
        }
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
    fn names_round_trip_and_unknown_names_are_refused() {
        for &m in Modality::ALL {
            assert_eq!(m.name().parse::<Modality>().ok(), Some(m));
        }
        let e: Error = "worldcover".parse::<Modality>().unwrap_err().into();
        assert!(matches!(e, Error::UnknownModality(_)));
    }
}
