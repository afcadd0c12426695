//! Workspace root of fscache: owns the cross-crate `tests/` and `benches/`.
