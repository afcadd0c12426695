//! Helpers of this test binary alone: the `fscache-test-helper` binary.
//! The helpers every test shares (timing bounds, [`Reporter`], python3)
//! live in the `fscache-testkit` crate and are re-exported here.

use std::path::Path;
use std::process::Command;

pub use fscache_testkit::{have_python3, Reporter};

/// The helper binary of this package (`CARGO_BIN_EXE_*` exists only in the
/// package's own tests, so this cannot move to the test kit).
pub const HELPER: &str = env!("CARGO_BIN_EXE_fscache-test-helper");

/// Run `fscache-test-helper lock PATH KIND MODE`.
pub fn helper_lock(path: &Path, kind: &str, mode: &str) -> Reporter {
    let mut command = Command::new(HELPER);
    command.arg("lock").arg(path).arg(kind).arg(mode);
    Reporter::spawn(command)
}
