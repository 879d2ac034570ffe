//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // === Configuration ===
    /// The config file could not be read.
    #[error("cannot read config {path}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid JSON or lacks a required field.
    #[error("invalid config {path}: {reason}")]
    ConfigInvalid {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The config describes a model family this crate does not implement (v1.1 and later).
    #[error(
        "unsupported model version in {path}: {reason}; only OlmoEarth v1 (Nano, Tiny, Base, Large) is supported"
    )]
    UnsupportedVersion {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// Which setting marks it as a later version.
        reason: String,
    },

    // === Checkpoints ===
    /// A checkpoint file could not be read.
    #[error("cannot read checkpoint {path}: {reason}")]
    CheckpointRead {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A tensor the encoder needs is absent from the checkpoint.
    #[error("checkpoint is missing key {key} (expected shape {expected:?})")]
    MissingKey {
        /// The state-dict key.
        key: String,
        /// The shape the encoder needs.
        expected: Vec<usize>,
    },
    /// A checkpoint tensor has the wrong shape.
    #[error("checkpoint key {key} has shape {got:?}, expected {expected:?}")]
    KeyShape {
        /// The state-dict key.
        key: String,
        /// The shape the encoder needs.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },

    /// A file's SHA-256 differs from the hash its publisher gives.
    #[error(
        "{what}: its SHA-256 {got} differs from the published {expected}; the file is corrupt, truncated or not the release"
    )]
    HashMismatch {
        /// Which file (`OlmoEarth-v1-Large weights.pth`).
        what: String,
        /// The published hash.
        expected: String,
        /// The file's hash.
        got: String,
    },

    // === Inputs ===
    /// A tensor has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which tensor.
        what: String,
        /// The expected shape, in words where parts are free.
        expected: String,
        /// The shape received.
        got: Vec<usize>,
    },
    /// A tensor has the wrong element type.
    #[error("{what}: expected dtype {expected}, got {got}")]
    DType {
        /// Which tensor.
        what: String,
        /// The expected dtype(s).
        expected: String,
        /// The dtype received.
        got: String,
    },
    /// A modality name that is not an encoder input.
    #[error("unknown modality {0:?}; the encoder accepts sentinel2_l2a, sentinel1, landsat")]
    UnknownModality(String),
    /// An input that breaks a rule of the model (patch size, time steps, months, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The caller's cancellation token fired; the work stopped early.
    #[error("cancelled")]
    Cancelled,

    /// A caller-supplied sink (e.g. the trainer's checkpoint writer) failed; the work stopped.
    #[error("{what}: {reason}")]
    Sink {
        /// What the sink was doing.
        what: String,
        /// Why it failed.
        reason: String,
    },

    // === Runtime ===
    /// A device string that cannot be parsed or a device that is unavailable.
    #[error("device {spec:?}: {reason}")]
    Device {
        /// What the user asked for.
        spec: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// File I/O with the path that failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP download failed.
    #[error("download {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] Box<candle_core::Error>),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(Box::new(e))
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
