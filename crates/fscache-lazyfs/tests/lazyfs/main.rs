//! Integration tests of `fscache-lazyfs`, built as one test binary.
//!
//! A new test goes into the module of the behaviour it checks; a new
//! behaviour gets a module here, never a new `tests/*.rs`.

// What a power loss keeps and loses, on a real mount (needs root and
// `/dev/fuse`; skips with the reason).
mod loss;
