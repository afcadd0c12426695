//! Capability handle of an fscache directory (being written).
#![forbid(unsafe_code)]
pub mod copy;
