//! Imagery acquisition for Groundwork.
