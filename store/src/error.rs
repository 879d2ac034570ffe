use thiserror::Error;

/// Errors of the store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The database URL could not be parsed (the URL itself is not repeated: it may hold a password).
    #[error("the database URL is not a valid PostgreSQL connection string")]
    InvalidDatabaseUrl,
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(String),
    /// A query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database did not answer in time.
    #[error("the database did not answer in time")]
    Unavailable,
    /// The row does not exist (or belongs to another organisation).
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of resource.
        what: &'static str,
        /// Its id.
        id: uuid::Uuid,
    },
    /// The requested transition is not allowed from the current state.
    #[error("{0}")]
    Conflict(String),
    /// Dispatching a step through apalis failed.
    #[error("dispatch failed: {0}")]
    Dispatch(String),
    /// The local PostgreSQL cluster could not be started.
    #[error("{0}")]
    LocalDatabase(String),
    /// Credentials were refused (an unknown or revoked token, a missing worker token).
    #[error("{0}")]
    Unauthorized(String),
    /// An organisation's limit was reached (queued steps); the message says which and how to go on.
    #[error("{0}")]
    LimitReached(String),
    /// A run does not fit what is left of its organisation's device-time quota, counted again under the
    /// organisation's lock ([`crate::jobs::QuotaCheck`]).
    #[error("the run needs more device time than is left of the organisation's quota")]
    QuotaExceeded {
        /// What the organisation's unfinished runs hold, counted under the lock.
        committed_hours: f64,
    },
    /// A step's write was refused: its claim no longer holds the lease (it expired and the step was
    /// re-queued, cancelled or claimed again).
    #[error("the step's lease was lost: its work is discarded")]
    LeaseLost,
    /// A stored name (task, modality, step kind, state, …) is none of the vocabulary's.
    #[error("stored value out of the vocabulary: {0}")]
    Vocabulary(#[from] groundwork_types::UnknownName),
    /// A JSON value could not be (de)serialised.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result with the store's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
