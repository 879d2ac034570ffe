//! The three encoder input modalities of OlmoEarth v1, their band order and band sets (spec §2.1): the
//! shared [`Modality`] of `groundwork-types`.

pub use groundwork_types::Modality;

use crate::error::Error;

/// Parses a modality name as the encoder's inputs name them.
///
/// # Errors
/// [`Error::UnknownModality`] for a name that is no encoder input modality.
pub fn parse_modality(name: &str) -> Result<Modality, Error> {
    name.parse()
        .map_err(|e: groundwork_types::UnknownName| Error::UnknownModality(e.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_modality_name_is_this_crates_error() {
        let e = parse_modality("worldcover").unwrap_err();
        assert!(matches!(e, Error::UnknownModality(_)));
    }
}
