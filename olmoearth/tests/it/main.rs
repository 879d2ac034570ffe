//! The integration tests of `olmoearth`, one test binary: the encoder against the reference and the
//! Nano fixture (`tests/fixtures/olmoearth-nano`), the task model and fine-tuning, and the `model` library functions (info, embed).
//!
//! Run one module with a filter, e.g. `cargo test -p olmoearth --test it parity::`.

mod common;
mod embed_info;
mod fetch;
mod masks;
mod parity;
mod task;
mod train;
