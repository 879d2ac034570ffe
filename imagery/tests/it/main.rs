//! The integration tests of `groundwork-imagery`, one test binary: acquisition over real HTTP and
//! output rasters (publishing, tiles, polygons).
//!
//! Run one module with a filter, e.g. `cargo test -p groundwork-imagery --test it publish::`.

mod acquire;
mod publish;
