//! Test helpers of the fscache workspace, in one place: the timing bounds
//! every timing-dependent test shares, child processes that report on stdout
//! line by line, and small file helpers.
//!
//! Use this from the workspace root's `tests/` and `benches/` (it is a
//! dev-dependency of `fscache-workspace`). Do not use it from a member
//! crate's own `tests/`: the crate is `publish = false`, so the packaged
//! crate could not build those tests (`cargo xtask package` checks this).
//!
//! ```
//! use fscache_testkit::{names, open_rw, temp_file};
//!
//! let file = temp_file();
//! std::fs::write(file.path(), b"x").unwrap();
//! assert_eq!(std::fs::read(file.path()).unwrap(), b"x");
//! let _second_open = open_rw(file.path()); // its own open file description
//!
//! let dir = file.path().parent().unwrap();
//! let name = file.path().file_name().unwrap().to_str().unwrap();
//! assert!(names(dir).iter().any(|n| n == name));
//! ```
//!
//! # Design
//!
//! Tests never assert on speed. Something that must happen is awaited for
//! [`EVENTUALLY`], a bound so generous that only a hang reaches it; something
//! that must *not* happen (a blocked waiter getting through) is watched for
//! [`QUIET`]. Both are defined here once, so every test means the same by
//! them. A [`Reporter`] reads a child's stdout on a thread, so a test can
//! wait for a line with a timeout instead of hanging on a blocking read.
//!
//! # Limitations
//!
//! * [`QUIET`] proves nothing happened *within the window*: a bug that lets
//!   a waiter through later is not caught. On a heavily loaded machine a
//!   correct child may also be slower than the window to print, which only
//!   makes the check weaker, never flaky.
//! * A test process killed with `SIGKILL` leaves its children running:
//!   [`Reporter`]'s `Drop` kills them only on an ordinary exit or panic.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

/// A very generous bound for "it happened": tests never assert on speed.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// How long to watch for something that must *not* happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// A new temporary directory on tmpfs (`/dev/shm`) when there is one,
/// else in the system temp directory: fast, and with nanosecond atimes.
/// Removed when the returned handle drops.
pub fn tmpfs_dir() -> tempfile::TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("fscache-test-");
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder.tempdir().expect("create a temporary directory")
}

/// A new temporary file, removed when the returned handle drops.
pub fn temp_file() -> tempfile::NamedTempFile {
    tempfile::NamedTempFile::new().expect("create temp file")
}

/// A new, separate read-write open of `path`: its own open file
/// description, so its OFD locks conflict with those of any other open,
/// as another process's would.
pub fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// The names in `dir`, sorted (panics if it cannot be read).
pub fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}

/// A running child process whose stdout is read line by line in the
/// background; closing its stdin tells it to finish.
///
/// Dropping it kills the child, so a failing test leaves no process behind.
pub struct Reporter {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Reporter {
    /// Spawn `command` with piped stdin and stdout.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {command:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// The next line of output, waiting [`EVENTUALLY`] at most.
    pub fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(EVENTUALLY) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no output within {EVENTUALLY:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait();
                panic!("child ended its output early: {status:?}")
            }
        }
    }

    /// Write `line` and a newline to the child's stdin, and flush it.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the child's stdin is open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("failed to write to the child: {e}"));
    }

    /// Send `request` and return the child's answer line.
    pub fn ask(&mut self, request: &str) -> String {
        self.send_line(request);
        self.next_line()
    }

    /// Assert the next line is `expected`.
    pub fn expect_line(&mut self, expected: &str) {
        assert_eq!(self.next_line(), expected);
    }

    /// Assert the child prints nothing for [`QUIET`] (it is blocked).
    pub fn expect_silence(&mut self) {
        match self.lines.recv_timeout(QUIET) {
            Err(RecvTimeoutError::Timeout) => {}
            other => panic!("expected the child to be blocked, got {other:?}"),
        }
    }

    /// Close the child's stdin (it releases what it holds) and wait for it
    /// to exit successfully.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for child");
        assert!(status.success(), "child failed: {status}");
    }

    /// Kill the child without letting it clean up, and reap it.
    pub fn kill(mut self) -> ExitStatus {
        self.child.kill().expect("kill child");
        self.child.wait().expect("wait for child")
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether `python3` can be run; prints why `test` skips when not.
pub fn have_python3(test: &str) -> bool {
    match Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => true,
        Ok(status) => {
            eprintln!("skipping {test}: `python3 --version` failed: {status}");
            false
        }
        Err(e) => {
            eprintln!("skipping {test}: python3 is not available: {e}");
            false
        }
    }
}
