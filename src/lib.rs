//! Workspace root of fscache: owns the cross-crate `tests/` and `benches/`,
//! runs the root README's example as a doc test, and holds what the tests
//! share with their helper binary: the model tests' wire format and
//! handle ([`model`]).

#![forbid(unsafe_code)]

pub mod model;

/// The root `README.md`'s example, run as a doc test so it never goes
/// stale. It lives here, not in `fscache`, because a packaged crate carries
/// only its own folder: each crate tests its own `README.md`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
