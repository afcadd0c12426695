//! Capability handle of an fscache directory (placeholder, filled by issue 3).
