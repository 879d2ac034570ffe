//! Groundwork step runtime.
