//! The integration tests of `groundwork-store`, one test binary, on a real PostgreSQL.
//!
//! Run one module with a filter, e.g. `cargo test -p groundwork-store --test it accounts::`.

mod accounts;
mod devdb;
