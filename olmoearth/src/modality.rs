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
    fn an_unknown_modality_name_is_this_crates_error() {
        let e: Error = "worldcover".parse::<Modality>().unwrap_err().into();
        assert!(matches!(e, Error::UnknownModality(_)));
    }
}
