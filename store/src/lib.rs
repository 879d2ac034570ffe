//! PostgreSQL access for Groundwork.
