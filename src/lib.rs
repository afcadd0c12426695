//! Workspace root of fscache: owns the cross-crate `tests/` and `benches/`,
//! and runs the README examples as doc tests.

#![forbid(unsafe_code)]

/// The root `README.md`'s example, run as a doc test so it never goes
/// stale. It lives here, not in `fscache`, because a packaged crate carries
/// only its own folder: `fscache` tests its own `crates/fscache/README.md`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The example of `crates/fscache-lock/README.md`. Of the crates, only
/// `fscache` includes its README in its own doc tests; the examples of the
/// lower layers' READMEs are tested here.
#[cfg(doctest)]
#[doc = include_str!("../crates/fscache-lock/README.md")]
pub struct LockReadmeDoctests;

/// The example of `crates/fscache-dir/README.md`.
#[cfg(doctest)]
#[doc = include_str!("../crates/fscache-dir/README.md")]
pub struct DirReadmeDoctests;

/// The example of `crates/fscache-quota/README.md`.
#[cfg(doctest)]
#[doc = include_str!("../crates/fscache-quota/README.md")]
pub struct QuotaReadmeDoctests;
