//! The crate's error type.

/// Errors of the imagery crate. Each variant says what was being done and on which input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The area of interest is not a usable (multi)polygon in EPSG:4326.
    #[error("invalid area of interest: {0}")]
    InvalidAoi(String),

    /// A request parameter is out of range or inconsistent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// A GDAL call failed.
    #[error("GDAL error while {op}: {source}")]
    Gdal {
        /// What was being done.
        op: String,
        /// The GDAL error.
        #[source]
        source: gdal::errors::GdalError,
    },

    /// Reading a raster asset failed (after retries, where the failure looked transient).
    #[error("reading {href}: {reason}")]
    Read {
        /// The asset href (signing tokens stripped).
        href: String,
        /// Why it failed.
        reason: String,
    },

    /// A STAC search or catalogue walk failed.
    #[error("STAC {op} at {url}: {reason}")]
    Stac {
        /// What was being done (search, catalogue, item).
        op: &'static str,
        /// The endpoint or file.
        url: String,
        /// Why it failed.
        reason: String,
    },

    /// An HTTP request failed.
    #[error("HTTP request to {url}: {reason}")]
    Http {
        /// The URL (tokens stripped).
        url: String,
        /// Why it failed.
        reason: String,
    },

    /// Writing to the object store failed.
    #[error("writing {path} to the object store: {source}")]
    Store {
        /// The object path.
        path: String,
        /// The object-store error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// Encoding the output tensors failed.
    #[error("encoding {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// Why it failed.
        reason: String,
    },

    /// The run was cancelled through its cancellation token.
    #[error("acquisition cancelled after {done} of {total} windows")]
    Cancelled {
        /// Windows finished before the cancellation was seen.
        done: usize,
        /// Windows requested.
        total: usize,
    },

    /// A local file could not be read or written.
    #[error("I/O on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn gdal(op: impl Into<String>) -> impl FnOnce(gdal::errors::GdalError) -> Error {
        let op = op.into();
        move |source| Error::Gdal { op, source }
    }
}

/// Strips a query string (which may hold a signing token) from an href for messages.
pub(crate) fn redact(href: &str) -> String {
    match href.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => href.to_string(),
    }
}
