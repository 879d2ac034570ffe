//! The integration tests of `groundwork-worker`, one test binary: the job system on a real PostgreSQL,
//! stitching predictions into a map, and training with evaluation.
//!
//! Run one module with a filter, e.g. `cargo test -p groundwork-worker --test it job_system::`.

mod common;
mod job_system;
mod ownership;
mod pools;
mod pretrained;
mod stitch;
mod suggest;
mod train;
